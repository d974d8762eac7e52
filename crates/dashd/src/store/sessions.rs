//! Paired WhatsApp Web sessions: each bot's latest session state per provider (with
//! the QR code while pairing and the paired phone) and the history of its state changes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{SessionChange, SessionView};
use uuid::Uuid;

use super::sql::{Row, sql};
use super::{SqlStore, StoreResult};

/// What a session report (webhook event or status check) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub bot_id: Uuid,
    pub provider: String,
    pub session: String,
    pub state: String,
    pub reason: Option<String>,
    /// The paired phone, when the report gives one (kept otherwise).
    pub phone: Option<String>,
    /// A new QR code (kept while the state stays `qr`, dropped otherwise).
    pub qr: Option<String>,
    /// When that QR code expires.
    pub qr_expires_at: Option<DateTime<Utc>>,
    /// A pairing code (kept like the QR code).
    pub pairing_code: Option<String>,
    pub at: DateTime<Utc>,
}

/// Storage of paired sessions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a report; a change of state is added to the history. Returns the
    /// session as stored and whether its state or its paired phone changed (what
    /// watchers are told about).
    async fn record_session(&self, report: &SessionReport) -> StoreResult<(SessionView, bool)>;
    /// Sessions of every bot, or of one tenant's bots.
    async fn sessions(&self, tenant: Option<Uuid>) -> StoreResult<Vec<SessionView>>;
    /// A bot's sessions; with a provider, that one, with its latest `history` changes.
    async fn bot_sessions(
        &self,
        bot_id: Uuid,
        provider: Option<&str>,
        history: u32,
    ) -> StoreResult<Vec<SessionView>>;
}

fn session_from_row(row: &Row) -> StoreResult<SessionView> {
    let tenant: String = row.try_get("tenant")?;
    let name: String = row.try_get("name")?;
    Ok(SessionView {
        bot: format!("{tenant}/{name}"),
        bot_id: row.try_get::<Uuid>("bot_id")?,
        provider: row.try_get("provider")?,
        session: row.try_get("session")?,
        state: row.try_get("state")?,
        reason: row.try_get("reason")?,
        phone: row.try_get("phone")?,
        qr: row.try_get("qr")?,
        qr_at: row.try_get("qr_at")?,
        qr_expires_at: row.try_get("qr_expires_at")?,
        pairing_code: row.try_get("pairing_code")?,
        since: row.try_get("since")?,
        updated_at: row.try_get("updated_at")?,
        history: Vec::new(),
    })
}

/// A session with its bot's path; every session query starts with this.
macro_rules! select_session {
    () => {
        "SELECT s.bot_id, t.slug AS tenant, b.name, s.provider, s.session, s.state, s.reason, \
         s.phone, s.qr, s.qr_at, s.qr_expires_at, s.pairing_code, s.since, s.updated_at \
         FROM bot_sessions s JOIN bots b ON b.id = s.bot_id JOIN tenants t ON t.id = b.tenant_id "
    };
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn record_session(&self, r: &SessionReport) -> StoreResult<(SessionView, bool)> {
        let mut tx = self.write().await?;
        let previous: Option<(String, Option<String>)> =
            sql("SELECT state, phone FROM bot_sessions WHERE bot_id = $1 AND provider = $2")
                .bind(r.bot_id)
                .bind(&r.provider)
                .fetch_optional(&mut tx)
                .await?
                .map(|row| Ok::<_, sqlx::Error>((row.try_get("state")?, row.try_get("phone")?)))
                .transpose()?;
        let changed = previous.as_ref().map(|(state, _)| state.as_str()) != Some(r.state.as_str());
        let new_phone = r.phone.is_some()
            && previous.as_ref().and_then(|(_, phone)| phone.as_ref()) != r.phone.as_ref();
        // The QR is kept only while the session waits for pairing.
        let qr_kept = r.state == "qr";
        sql(
            "INSERT INTO bot_sessions (bot_id, provider, session, state, reason, phone, qr, qr_at, qr_expires_at, pairing_code, since, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7 IS NULL THEN NULL ELSE $8 END, $10, $11, $8, $8) \
             ON CONFLICT (bot_id, provider) DO UPDATE SET \
               session = excluded.session, \
               state = excluded.state, \
               reason = excluded.reason, \
               phone = COALESCE(excluded.phone, bot_sessions.phone), \
               qr = CASE WHEN $9 THEN COALESCE(excluded.qr, bot_sessions.qr) ELSE NULL END, \
               qr_at = CASE WHEN $9 THEN COALESCE(excluded.qr_at, bot_sessions.qr_at) ELSE NULL END, \
               qr_expires_at = CASE WHEN NOT $9 THEN NULL WHEN excluded.qr IS NOT NULL THEN excluded.qr_expires_at ELSE bot_sessions.qr_expires_at END, \
               pairing_code = CASE WHEN $9 THEN COALESCE(excluded.pairing_code, bot_sessions.pairing_code) ELSE NULL END, \
               since = CASE WHEN bot_sessions.state = excluded.state THEN bot_sessions.since ELSE excluded.since END, \
               updated_at = excluded.updated_at",
        )
        .bind(r.bot_id)
        .bind(&r.provider)
        .bind(&r.session)
        .bind(&r.state)
        .bind(&r.reason)
        .bind(&r.phone)
        .bind(&r.qr)
        .bind(r.at)
        .bind(qr_kept)
        .bind(r.qr_expires_at)
        .bind(&r.pairing_code)
        .execute(&mut tx)
        .await?;
        if changed {
            sql("INSERT INTO session_events (bot_id, provider, state, reason, at) VALUES ($1, $2, $3, $4, $5)")
                .bind(r.bot_id)
                .bind(&r.provider)
                .bind(&r.state)
                .bind(&r.reason)
                .bind(r.at)
                .execute(&mut tx)
                .await?;
        }
        let row = sql(concat!(
            select_session!(),
            "WHERE s.bot_id = $1 AND s.provider = $2"
        ))
        .bind(r.bot_id)
        .bind(&r.provider)
        .fetch_one(&mut tx)
        .await?;
        let view = session_from_row(&row)?;
        tx.commit().await?;
        Ok((view, changed || new_phone))
    }

    async fn sessions(&self, tenant: Option<Uuid>) -> StoreResult<Vec<SessionView>> {
        let rows = match tenant {
            Some(tenant) => {
                sql(concat!(
                    select_session!(),
                    "WHERE b.tenant_id = $1 ORDER BY t.slug, b.name, s.provider"
                ))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sql(concat!(
                    select_session!(),
                    "ORDER BY t.slug, b.name, s.provider"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(session_from_row).collect()
    }

    async fn bot_sessions(
        &self,
        bot_id: Uuid,
        provider: Option<&str>,
        history: u32,
    ) -> StoreResult<Vec<SessionView>> {
        let rows = match provider {
            Some(provider) => {
                sql(concat!(
                    select_session!(),
                    "WHERE s.bot_id = $1 AND s.provider = $2"
                ))
                .bind(bot_id)
                .bind(provider)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sql(concat!(
                    select_session!(),
                    "WHERE s.bot_id = $1 ORDER BY s.provider"
                ))
                .bind(bot_id)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut views: Vec<SessionView> = rows
            .iter()
            .map(session_from_row)
            .collect::<StoreResult<_>>()?;
        if history > 0 {
            for view in &mut views {
                let rows = sql(
                    "SELECT state, reason, at FROM session_events WHERE bot_id = $1 AND provider = $2 ORDER BY seq DESC LIMIT $3",
                )
                .bind(bot_id)
                .bind(&view.provider)
                .bind(i64::from(history))
                .fetch_all(&self.pool)
                .await?;
                let mut changes = rows
                    .iter()
                    .map(|row| {
                        Ok(SessionChange {
                            state: row.try_get("state")?,
                            reason: row.try_get("reason")?,
                            at: row.try_get("at")?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                changes.reverse();
                view.history = changes;
            }
        }
        Ok(views)
    }
}
