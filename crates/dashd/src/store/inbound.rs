//! Inbound messages: stored once each (deduplicated on the provider's message id,
//! many at a time under group commit), then handed to the conversation workers until
//! processed, retried or given up; and the messages a business sent from its own phone.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::MessageBody;
use sqlx::types::Json;
use uuid::Uuid;

use super::outbox::{add_event, add_events};
use super::sql::{MAX_ROWS, Row, sql, sql_rows};
use super::{SqlStore, StoreError, StoreResult};

/// A message from a contact, normalised by its provider.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    pub bot_id: Uuid,
    pub tenant_id: Uuid,
    pub contact: String,
    pub provider: String,
    /// The provider's id for the message; deliveries with the same id are one message.
    pub provider_message_id: Option<String>,
    pub body: MessageBody,
    pub received_at: DateTime<Utc>,
}

/// Whether an inbound message was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub id: Uuid,
    pub duplicate: bool,
}

/// An inbound message still to be handled.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundWork {
    pub id: Uuid,
    pub bot_id: Uuid,
    pub contact: String,
    pub body: MessageBody,
    pub received_at: DateTime<Utc>,
    /// Failed attempts at handling it so far (and starts of dashd it was in progress at).
    pub attempts: u32,
    /// Not before this time (Unix ms): set after a failed attempt.
    pub next_attempt_ms: Option<i64>,
}

/// Storage of inbound messages.
#[async_trait]
pub trait InboundStore: Send + Sync {
    /// Stores an inbound message unless the same provider message was stored before.
    async fn ingest(&self, msg: &NewInbound) -> StoreResult<Ingested> {
        let mut stored = self.ingest_batch(std::slice::from_ref(msg)).await?;
        stored
            .pop()
            .ok_or_else(|| StoreError::Unavailable("the store answered no row".into()))
    }
    /// Stores inbound messages in one transaction (group commit), each unless the same
    /// provider message was stored before (in an earlier batch or earlier in this one).
    /// One answer per message, in order; an error stores none of them.
    async fn ingest_batch(&self, msgs: &[NewInbound]) -> StoreResult<Vec<Ingested>>;
    /// Inbound messages not handled yet (after a restart), oldest first.
    async fn unprocessed_inbound(&self) -> StoreResult<Vec<InboundWork>>;
    /// Work in the pipeline per bot: inbound messages not handled yet plus outbound ones
    /// not sent yet (pending, being sent, or waiting to retry).
    async fn inbound_backlog(&self) -> StoreResult<Vec<(Uuid, u64)>>;
    /// The (bot, contact) pairs with inbound messages not handled yet, without bodies.
    async fn pending_contacts(&self) -> StoreResult<Vec<(Uuid, String)>>;
    /// One contact's inbound messages still to handle, in arrival order.
    async fn unprocessed_for(&self, bot_id: Uuid, contact: &str) -> StoreResult<Vec<InboundWork>>;
    /// At start-up: counts an attempt for the message each conversation was at (the
    /// one that may have been in progress when dashd stopped or crashed), so a message
    /// that keeps crashing dashd is given up after `max_attempts` starts. Returns how many.
    async fn count_interrupted_attempts(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// An attempt that could not run because something dashd depends on was unavailable
    /// (the database, the flow workers): not the message's fault, so it is not counted,
    /// and the message is tried again at `retry_at_ms`.
    async fn inbound_postponed(
        &self,
        id: Uuid,
        error: &str,
        retry_at_ms: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A failed attempt at an inbound message (counted): retried at `retry_at_ms`, or
    /// `failed` for good (with the reason) when `None`. False when it was not `received`.
    async fn inbound_failed(
        &self,
        id: Uuid,
        error: &str,
        retry_at_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A message the business sent from its own phone (or an echo of one dashd sent):
    /// kept in the conversation's log as sent, never answered, never sent again. False
    /// when a message with that provider id is already there.
    async fn log_from_me(&self, message: &NewInbound) -> StoreResult<bool>;
}

fn inbound_from_row(row: &Row) -> StoreResult<InboundWork> {
    Ok(InboundWork {
        id: row.try_get::<Uuid>("id")?,
        bot_id: row.try_get::<Uuid>("bot_id")?,
        contact: row.try_get("contact")?,
        body: row.try_get::<Json<MessageBody>>("body")?.0,
        received_at: row.try_get("created_at")?,
        attempts: u32::try_from(row.try_get::<i64>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_ms: row.try_get("next_attempt_ms")?,
    })
}

#[async_trait]
impl InboundStore for SqlStore {
    async fn ingest_batch(&self, msgs: &[NewInbound]) -> StoreResult<Vec<Ingested>> {
        let mut tx = self.write().await?;
        let ids: Vec<Uuid> = msgs.iter().map(|_| Uuid::now_v7()).collect();
        // One multi-row INSERT per slice; a message already stored (or twice in this
        // batch) is left out by ON CONFLICT, and RETURNING names those that went in.
        let mut inserted = HashSet::with_capacity(msgs.len());
        let rows: Vec<(&NewInbound, &Uuid)> = msgs.iter().zip(&ids).collect();
        for slice in rows.chunks(MAX_ROWS) {
            let mut insert = sql_rows(
                "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, provider, \
                 provider_message_id, created_at, updated_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, 'in', v.column5, 'received', v.column6, \
                 v.column7, v.column8, v.column8 FROM (VALUES ",
                "($1, $2, $3, $4, $5, $6, $7, $8)",
                slice.len(),
                ") AS v WHERE v.column1 IS NOT NULL ON CONFLICT (bot_id, provider, provider_message_id) \
                 WHERE direction = 'in' AND provider_message_id IS NOT NULL DO NOTHING RETURNING id",
            );
            for (msg, id) in slice {
                insert = insert
                    .bind(**id)
                    .bind(msg.bot_id)
                    .bind(msg.tenant_id)
                    .bind(&msg.contact)
                    .bind(Json(&msg.body))
                    .bind(&msg.provider)
                    .bind(&msg.provider_message_id)
                    .bind(msg.received_at);
            }
            for row in insert.fetch_all(&mut tx).await? {
                inserted.insert(row.try_get::<Uuid>("id")?);
            }
        }
        let received: Vec<(Uuid, &str, Option<String>, DateTime<Utc>)> = rows
            .iter()
            .filter(|(_, id)| inserted.contains(*id))
            .map(|(msg, id)| (**id, "received", None, msg.received_at))
            .collect();
        add_events(&mut tx, &received).await?;
        let mut stored = Vec::with_capacity(msgs.len());
        for (msg, id) in rows {
            if inserted.contains(id) {
                stored.push(Ingested {
                    id: *id,
                    duplicate: false,
                });
                continue;
            }
            let existing: Uuid = sql(
                "SELECT id FROM messages WHERE bot_id = $1 AND provider = $2 \
                 AND provider_message_id = $3 AND direction = 'in'",
            )
            .bind(msg.bot_id)
            .bind(&msg.provider)
            .bind(&msg.provider_message_id)
            .fetch_scalar(&mut tx)
            .await?;
            stored.push(Ingested {
                id: existing,
                duplicate: true,
            });
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn unprocessed_inbound(&self) -> StoreResult<Vec<InboundWork>> {
        let rows = sql("SELECT id, bot_id, contact, body, created_at, attempts, next_attempt_ms FROM messages WHERE direction = 'in' AND state = 'received' ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(inbound_from_row).collect()
    }

    async fn inbound_backlog(&self) -> StoreResult<Vec<(Uuid, u64)>> {
        let rows = sql(
            "SELECT bot_id, COUNT(*) AS waiting FROM messages \
             WHERE (direction = 'in' AND state = 'received') OR (direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))) \
             GROUP BY bot_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<Uuid>("bot_id")?,
                    u64::try_from(row.try_get::<i64>("waiting")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn pending_contacts(&self) -> StoreResult<Vec<(Uuid, String)>> {
        let rows = sql(
            "SELECT bot_id, contact, MIN(seq) AS first FROM messages WHERE direction = 'in' AND state = 'received' \
             GROUP BY bot_id, contact ORDER BY first",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<Uuid>("bot_id")?, row.try_get("contact")?)))
            .collect()
    }

    async fn unprocessed_for(&self, bot_id: Uuid, contact: &str) -> StoreResult<Vec<InboundWork>> {
        let rows = sql(
            "SELECT id, bot_id, contact, body, created_at, attempts, next_attempt_ms FROM messages \
             WHERE bot_id = $1 AND contact = $2 AND direction = 'in' AND state = 'received' ORDER BY seq",
        )
        .bind(bot_id)
        .bind(contact)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(inbound_from_row).collect()
    }

    async fn count_interrupted_attempts(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let counted = sql(
            "UPDATE messages SET attempts = attempts + 1, updated_at = $1 \
             WHERE seq IN (SELECT MIN(seq) FROM messages WHERE direction = 'in' AND state = 'received' GROUP BY bot_id, contact)",
        )
        .bind(now)
            .write(&self.pool)
            .await?;
        Ok(counted)
    }

    async fn inbound_postponed(
        &self,
        id: Uuid,
        error: &str,
        retry_at_ms: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = sql(
            "UPDATE messages SET next_attempt_ms = $2, last_error = $3, updated_at = $4 \
             WHERE id = $1 AND direction = 'in' AND state = 'received'",
        )
        .bind(id)
        .bind(retry_at_ms)
        .bind(error)
        .bind(now)
        .write(&self.pool)
        .await?
            > 0;
        Ok(changed)
    }

    async fn inbound_failed(
        &self,
        id: Uuid,
        error: &str,
        retry_at_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let state = if retry_at_ms.is_some() {
            "received"
        } else {
            "failed"
        };
        let change = sql(
            "UPDATE messages SET state = $2, next_attempt_ms = $3, last_error = $4, updated_at = $5, attempts = attempts + 1 \
             WHERE id = $1 AND direction = 'in' AND state = 'received' RETURNING id",
        )
        .bind(id)
        .bind(state)
        .bind(retry_at_ms)
        .bind(error)
        .bind(now);
        let detail = match retry_at_ms {
            Some(_) => format!("will retry: {error}"),
            None => format!("skipped: {error}"),
        };
        Ok(self
            .change_with_history(change, state, Some(&detail), now)
            .await?
            > 0)
    }

    async fn log_from_me(&self, m: &NewInbound) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let known = sql("SELECT id FROM messages WHERE provider = $1 AND provider_message_id = $2 AND direction = 'out' AND bot_id = $3")
            .bind(&m.provider)
            .bind(&m.provider_message_id)
            .bind(m.bot_id)
            .fetch_optional(&mut tx)
            .await?;
        if known.is_some() {
            tx.commit().await?;
            return Ok(false);
        }
        let id = Uuid::now_v7();
        sql(
            "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, provider, provider_message_id, created_at, updated_at, sent_at) \
             VALUES ($1, $2, $3, $4, 'out', $5, 'sent', $6, $7, $8, $8, $8)",
        )
        .bind(id)
        .bind(m.bot_id)
        .bind(m.tenant_id)
        .bind(&m.contact)
        .bind(Json(&m.body))
        .bind(&m.provider)
        .bind(&m.provider_message_id)
        .bind(m.received_at)
        .execute(&mut tx)
        .await?;
        add_event(
            &mut tx,
            id,
            "sent",
            Some("sent from the business phone"),
            m.received_at,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
