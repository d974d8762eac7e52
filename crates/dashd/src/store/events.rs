//! The event log the REST API streams to dashboards (`GET /api/v1/events`): one row per
//! event, numbered across tenants, read back per tenant after a given number (a client's
//! `Last-Event-ID`), and trimmed to the newest events of each tenant.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{Tx, sql};
use super::{SqlStore, StoreResult};

/// One event of a tenant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ApiEvent {
    /// Its number: increasing, the SSE `id`.
    pub seq: i64,
    /// `order.created`, `order.updated`, `message.in`, ...
    pub kind: String,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Reading and trimming the event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// A tenant's events after `after` (oldest first), at most `limit`.
    async fn events_after(
        &self,
        tenant: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ApiEvent>>;
    /// The newest event number of a tenant (0 when none).
    async fn last_event(&self, tenant: Uuid) -> StoreResult<i64>;
    /// Writes an event of its own (events of records are written with them).
    async fn record_event(
        &self,
        tenant: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> StoreResult<()>;
    /// Deletes all but the newest `keep` events of each tenant; returns how many went.
    async fn trim_events(&self, keep: u32) -> StoreResult<u64>;
    /// The newest positions of a tenant's stream (a stream starting here sees what
    /// happens next).
    async fn stream_position(&self, tenant: Uuid) -> StoreResult<StreamCursor>;
    /// A tenant's stream after `cursor`: the event log (orders, handoffs), messages in
    /// and out with their delivery states, and session states, in time order (at most
    /// `limit` of each).
    async fn stream_after(
        &self,
        tenant: Uuid,
        cursor: StreamCursor,
        limit: u32,
    ) -> StoreResult<Vec<StreamEvent>>;
}

/// Appends an event in the caller's transaction, so it exists exactly when the change
/// it reports does.
pub(crate) async fn append_event(
    tx: &mut Tx,
    tenant: Uuid,
    kind: &str,
    data: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sql("INSERT INTO api_events (tenant_id, kind, data, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(kind)
        .bind(Json(data))
        .bind(at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl EventStore for SqlStore {
    async fn events_after(
        &self,
        tenant: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ApiEvent>> {
        let rows = sql("SELECT seq, kind, data, created_at FROM api_events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .bind(tenant)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiEvent {
                    seq: row.try_get("seq")?,
                    kind: row.try_get("kind")?,
                    data: row.try_get::<Json<serde_json::Value>>("data")?.0,
                    at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn last_event(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(
            sql("SELECT COALESCE(MAX(seq), 0) FROM api_events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_scalar(&self.pool)
                .await?,
        )
    }

    async fn record_event(
        &self,
        tenant: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        append_event(&mut tx, tenant, kind, data, super::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn stream_position(&self, tenant: Uuid) -> StoreResult<StreamCursor> {
        self.position_of(tenant).await
    }

    async fn stream_after(
        &self,
        tenant: Uuid,
        cursor: StreamCursor,
        limit: u32,
    ) -> StoreResult<Vec<StreamEvent>> {
        self.stream_of(tenant, cursor, limit).await
    }

    async fn trim_events(&self, keep: u32) -> StoreResult<u64> {
        sql("DELETE FROM api_events WHERE seq IN (SELECT seq FROM (SELECT seq, \
             row_number() OVER (PARTITION BY tenant_id ORDER BY seq DESC) AS n FROM api_events) AS r \
             WHERE r.n > $1)")
        .bind(i64::from(keep))
        .write(&self.pool)
        .await
    }
}

/// Where a client is in its tenant's stream: a position in each record the stream is
/// made of (the event log, the messages' history, the sessions' history). It is the
/// SSE `id` of every event, `a-m-s`, so `Last-Event-ID` resumes in all three at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCursor {
    pub api: i64,
    pub message: i64,
    pub session: i64,
}

impl StreamCursor {
    /// Reads an id as written by [`Display`](std::fmt::Display); a single number is a
    /// position in the event log alone (the ids of earlier releases).
    pub fn parse(text: &str) -> Option<StreamCursor> {
        let mut parts = text.trim().split('-').map(|p| p.parse::<i64>().ok());
        match (parts.next()?, parts.next(), parts.next(), parts.next()) {
            (Some(api), None, None, None) => Some(StreamCursor {
                api,
                ..StreamCursor::default()
            }),
            (Some(api), Some(Some(message)), Some(Some(session)), None) => Some(StreamCursor {
                api,
                message,
                session,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.api, self.message, self.session)
    }
}

/// One event of a tenant's stream, with the cursor just after it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub cursor: StreamCursor,
    pub kind: String,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl SqlStore {
    /// The newest positions: a stream that starts here sees what happens next.
    async fn position_of(&self, tenant: Uuid) -> StoreResult<StreamCursor> {
        let api = self.last_event(tenant).await?;
        let message: i64 = sql("SELECT COALESCE(MAX(seq), 0) FROM message_events")
            .fetch_scalar(&self.pool)
            .await?;
        let session: i64 = sql("SELECT COALESCE(MAX(seq), 0) FROM session_events")
            .fetch_scalar(&self.pool)
            .await?;
        Ok(StreamCursor {
            api,
            message,
            session,
        })
    }

    /// A tenant's events after `cursor`, from the three records, in time order (at most
    /// `limit` from each).
    async fn stream_of(
        &self,
        tenant: Uuid,
        cursor: StreamCursor,
        limit: u32,
    ) -> StoreResult<Vec<StreamEvent>> {
        // (source, seq, kind, data, at); source 0 api, 1 message, 2 session.
        let mut found: Vec<(u8, i64, String, serde_json::Value, DateTime<Utc>)> = Vec::new();
        for event in self.events_after(tenant, cursor.api, limit).await? {
            found.push((0, event.seq, event.kind, event.data, event.at));
        }
        // The messages' history: a customer's message received, a message queued to
        // send, and what became of it. Claims are internal and left out.
        let rows = sql(
            "SELECT e.seq, e.state, e.detail, e.at, m.id, m.bot_id, m.contact, m.direction, m.body \
             FROM message_events e JOIN messages m ON m.id = e.message_id \
             WHERE e.seq > $1 AND m.tenant_id = $2 \
             AND ((m.direction = 'in' AND e.state = 'received') \
                  OR (m.direction = 'out' AND e.state <> 'processing')) \
             ORDER BY e.seq LIMIT $3",
        )
        .bind(cursor.message)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let state: String = row.try_get("state")?;
            let direction: String = row.try_get("direction")?;
            let body = row.try_get::<Json<serde_json::Value>>("body")?.0;
            let mut data = serde_json::json!({
                "message_id": row.try_get::<Uuid>("id")?,
                "bot_id": row.try_get::<Uuid>("bot_id")?,
                "contact": row.try_get::<String>("contact")?,
            });
            let kind = match (direction.as_str(), state.as_str()) {
                ("in", _) => {
                    data["text"] = body["text"].clone();
                    "message.in"
                }
                (_, "pending") => {
                    data["text"] = body["text"].clone();
                    "message.out"
                }
                _ => {
                    data["state"] = serde_json::json!(state);
                    data["detail"] = serde_json::json!(row.try_get::<Option<String>>("detail")?);
                    "message.status"
                }
            };
            found.push((
                1,
                row.try_get("seq")?,
                kind.to_owned(),
                data,
                row.try_get("at")?,
            ));
        }
        let rows = sql(
            "SELECT e.seq, e.bot_id, e.provider, e.state, e.reason, e.at, s.qr \
             FROM session_events e JOIN bots b ON b.id = e.bot_id \
             LEFT JOIN bot_sessions s ON s.bot_id = e.bot_id AND s.provider = e.provider \
             WHERE e.seq > $1 AND b.tenant_id = $2 ORDER BY e.seq LIMIT $3",
        )
        .bind(cursor.session)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let state: String = row.try_get("state")?;
            let mut data = serde_json::json!({
                "bot_id": row.try_get::<Uuid>("bot_id")?,
                "provider": row.try_get::<String>("provider")?,
                "state": state,
                "reason": row.try_get::<Option<String>>("reason")?,
            });
            if state == "qr" {
                // The code to scan now (it rotates; a newer one replaces it).
                data["qr"] = serde_json::json!(row.try_get::<Option<String>>("qr")?);
            }
            found.push((
                2,
                row.try_get("seq")?,
                "session.state".to_owned(),
                data,
                row.try_get("at")?,
            ));
        }
        found.sort_by(|a, b| a.4.cmp(&b.4).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        let mut position = cursor;
        Ok(found
            .into_iter()
            .map(|(source, seq, kind, data, at)| {
                // Never backwards: a record's times may not follow its numbers exactly.
                match source {
                    0 => position.api = position.api.max(seq),
                    1 => position.message = position.message.max(seq),
                    _ => position.session = position.session.max(seq),
                }
                StreamEvent {
                    cursor: position,
                    kind,
                    data,
                    at,
                }
            })
            .collect())
    }
}
