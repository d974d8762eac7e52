//! Storage of the message pipeline: inbound messages (deduplicated), conversation state,
//! the outbox, status history, flow timers and the sandbox's sent messages.
//!
//! The SQL is the same for both backends (both accept `$N` placeholders, `ON CONFLICT`
//! and `RETURNING`); only ids are bound differently (text in SQLite, UUID in
//! PostgreSQL). [`pipeline_store!`] writes the implementation once for each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{
    ConversationDetail, ConversationSummary, MessageBody, MessageRecord, MessageState, QueueEntry,
};
use uuid::Uuid;

use super::{StoreError, StoreResult};

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

/// A conversation's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    pub state: serde_json::Value,
    pub contact_name: Option<String>,
    /// Raised by every write; a step commits only over the version it read.
    pub version: i64,
}

/// A message the engine wants sent, with its pause before sending.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbound {
    pub body: MessageBody,
    pub delay_ms: u64,
}

/// A flow timer to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRow {
    pub timer_id: u64,
    pub kind: String,
    pub due_ms: i64,
}

/// Everything one engine step changes, written in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCommit {
    pub bot_id: Uuid,
    pub tenant_id: Uuid,
    pub contact: String,
    pub contact_name: Option<String>,
    pub state: serde_json::Value,
    /// `idle`, `active`, `handoff` or `waiting_http`.
    pub status: &'static str,
    pub flow: Option<String>,
    pub step: Option<String>,
    pub flow_version: Option<u32>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// The conversation version the step read (`None`: there was no conversation row).
    /// The commit is refused when the row changed meanwhile.
    pub expected_version: Option<i64>,
    /// The inbound message this step handled: `received` → `processed`, refused if it is
    /// not `received` any more.
    pub processed_inbound: Option<Uuid>,
    /// The timer this step fired: its row is deleted, refused if it is gone.
    pub fired_timer: Option<u64>,
    pub outbound: Vec<NewOutbound>,
    pub timers_add: Vec<TimerRow>,
    pub timers_remove: Vec<u64>,
    pub now: DateTime<Utc>,
}

/// An outbox entry ready to go.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: Uuid,
    pub bot_id: Uuid,
    pub tenant_id: Uuid,
    pub contact: String,
    pub body: MessageBody,
    pub attempts: u32,
}

/// A flow timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub bot_id: Uuid,
    pub contact: String,
    pub timer_id: u64,
}

/// Query of the outbox listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueQuery {
    pub bot_id: Option<Uuid>,
    pub state: Option<MessageState>,
    pub limit: u32,
}

/// What the sandbox provider received.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSent {
    pub idempotency_key: String,
    pub contact: String,
    pub body: MessageBody,
    pub provider_message_id: String,
    /// Send calls made with this idempotency key (more than 1: sent again).
    pub calls: u32,
}

/// Who holds an outbox entry being sent, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease<'a> {
    /// The dashd process that claimed it.
    pub owner: &'a str,
    /// Unix ms after which another dispatcher may take it back.
    pub until_ms: i64,
}

/// Storage of the message pipeline.
#[async_trait]
pub trait PipelineStore: Send + Sync {
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
    /// Outbound messages of a bot not finished yet (pending, processing or failed).
    async fn unfinished_outbound(&self, bot_id: Uuid) -> StoreResult<u64>;
    /// Makes a bot's waiting messages due now (after it is resumed).
    async fn release_held(&self, bot_id: Uuid, now_ms: i64) -> StoreResult<()>;
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
    async fn conversation_row(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationRow>>;
    /// Writes a step's new state, outbound messages and timers atomically; returns the
    /// new outbox ids, or `None` (nothing written) when the conversation, the inbound
    /// message or the fired timer changed since the step read them.
    async fn commit_step(&self, commit: &StepCommit) -> StoreResult<Option<Vec<Uuid>>>;
    /// Forgets a conversation's state and timers; true if there was one.
    async fn reset_conversation(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool>;
    async fn list_conversations(&self, bot_id: Uuid) -> StoreResult<Vec<ConversationSummary>>;
    async fn conversation(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationDetail>>;
    /// Conversations still running on a flow version.
    async fn conversations_on_version(&self, bot_id: Uuid, version: u32) -> StoreResult<u64>;
    /// Conversations waiting for an HTTP result (after a restart those are lost).
    async fn waiting_http(&self) -> StoreResult<Vec<(Uuid, String)>>;

    /// Writes an outbound message to the outbox (`pending`).
    async fn enqueue(
        &self,
        bot_id: Uuid,
        tenant_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<MessageRecord>;
    /// Entries due by `now_ms` whose contact has no earlier unfinished entry.
    async fn due_outbound(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<OutboxItem>>;
    /// The earliest due time after `now_ms` among pending and failed entries.
    async fn next_outbound_due(&self, now_ms: i64) -> StoreResult<Option<i64>>;
    /// `pending`/`failed` → `processing` under `lease`; false if someone else took it.
    async fn claim(&self, id: Uuid, lease: &Lease<'_>, now: DateTime<Utc>) -> StoreResult<bool> {
        let claimed = self.claim_batch(&[(id, lease.clone())], now).await?;
        Ok(claimed.first().copied().unwrap_or(false))
    }
    /// Claims several entries, each under its own lease, in one transaction: for each,
    /// whether it was ours to take (as [`PipelineStore::claim`]).
    async fn claim_batch(
        &self,
        claims: &[(Uuid, Lease<'_>)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>>;
    /// Postpones a pending entry (rate limit) without counting an attempt.
    async fn defer(&self, id: Uuid, until_ms: i64) -> StoreResult<()>;
    /// `processing` (held by `owner`) → `sent`; false when the entry is not ours any more
    /// (its lease was reclaimed, or it was never claimed).
    async fn mark_sent(
        &self,
        id: Uuid,
        owner: &str,
        provider: &str,
        provider_message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A failed attempt of an entry `owner` holds: retry at `retry_at_ms`, or `dead` when
    /// `None`. False when the entry is not ours any more.
    async fn mark_failed(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A provider's delivery report: `sent` → `delivered` → `read`, forward only (a late
    /// "delivered" never undoes "read"). False when nothing changed.
    async fn apply_status(
        &self,
        bot_id: Uuid,
        provider: &str,
        provider_message_id: &str,
        state: MessageState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// `processing` entries whose lease expired (their dispatcher died or lost track)
    /// back to `pending`; with `all`, every `processing` entry (start-up of the only
    /// dashd on a database). Returns how many.
    async fn reclaim_leases(&self, all: bool, now: DateTime<Utc>) -> StoreResult<u64>;
    async fn queue(&self, query: &QueueQuery) -> StoreResult<Vec<MessageRecord>>;
    async fn queue_entry(&self, id: Uuid) -> StoreResult<QueueEntry>;
    /// `failed`/`dead` → `pending`, due now.
    async fn requeue(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord>;
    /// `pending`/`failed` → `cancelled`.
    async fn cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord>;
    /// No inbound message left to handle and no outbound message left to send.
    async fn contact_idle(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool>;

    async fn due_timers(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<DueTimer>>;
    /// Takes up to `limit` due timers: each is moved to `until_ms` (where it is due again
    /// should its step never finish) and returned. One conditional statement: two
    /// schedulers never take the same timer.
    async fn claim_due_timers(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueTimer>>;
    /// Whether a conversation's timer is still set.
    async fn timer_exists(&self, bot_id: Uuid, contact: &str, timer_id: u64) -> StoreResult<bool>;
    /// A timer whose step failed: `retry_at` is given the attempts so far (this one
    /// included) and says when it is due again, or `None` to drop it. Returns the
    /// attempts so far (0 when the timer is gone).
    async fn timer_failed(
        &self,
        bot_id: Uuid,
        contact: &str,
        timer_id: u64,
        retry_at: &(dyn Fn(u32) -> Option<i64> + Send + Sync),
    ) -> StoreResult<u32>;
    async fn next_timer_due(&self) -> StoreResult<Option<i64>>;

    /// The sandbox provider's "send": idempotent on the key; returns the message id.
    async fn sandbox_record(
        &self,
        key: &str,
        bot_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<String>;
    async fn sandbox_sent(&self, bot_id: Uuid) -> StoreResult<Vec<SandboxSent>>;
}

/// The columns of a message record, in every query that returns one.
macro_rules! message_columns {
    () => {
        "id, bot_id, contact, direction, body, state, provider, provider_message_id, attempts, \
         next_attempt_ms, last_error, created_at, updated_at, sent_at"
    };
}

pub(crate) use message_columns;

/// Implements [`PipelineStore`] for a backend. `$id` turns a `Uuid` into the bind type,
/// `$get_id` reads one back from a row.
macro_rules! pipeline_store {
    ($store:ty, $id:expr, $get_id:path) => {
        fn message_from_row(row: &<<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Row) -> StoreResult<dash_core::api::MessageRecord> {
            use sqlx::Row;
            let direction = match row.try_get::<String, _>("direction")?.as_str() {
                "in" => dash_core::api::Direction::In,
                _ => dash_core::api::Direction::Out,
            };
            let state: String = row.try_get("state")?;
            Ok(dash_core::api::MessageRecord {
                id: $get_id(row, "id")?,
                bot_id: $get_id(row, "bot_id")?,
                contact: row.try_get("contact")?,
                direction,
                body: row.try_get::<sqlx::types::Json<dash_core::api::MessageBody>, _>("body")?.0,
                state: super::parse_status(&state)?,
                provider: row.try_get("provider")?,
                provider_message_id: row.try_get("provider_message_id")?,
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                next_attempt_at: row
                    .try_get::<Option<i64>, _>("next_attempt_ms")?
                    .and_then(chrono::DateTime::from_timestamp_millis),
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                sent_at: row.try_get("sent_at")?,
            })
        }

        fn summary_from_row(row: &<<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Row) -> StoreResult<dash_core::api::ConversationSummary> {
            use sqlx::Row;
            Ok(dash_core::api::ConversationSummary {
                contact: row.try_get("contact")?,
                contact_name: row.try_get("contact_name")?,
                status: row.try_get("status")?,
                flow: row.try_get("flow")?,
                step: row.try_get("step")?,
                flow_version: row.try_get::<Option<i64>, _>("flow_version")?.and_then(|v| u32::try_from(v).ok()),
                last_message_at: row.try_get("last_message_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        /// `processing` (held by `owner`) → `sent`, with its event, in the caller's
        /// transaction; false when the entry is not ours any more.
        async fn set_sent(
            conn: &mut <<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Connection,
            id: uuid::Uuid,
            owner: &str,
            provider: &str,
            provider_message_id: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> StoreResult<bool> {
            let changed = sqlx::query(
                "UPDATE messages SET state = 'sent', provider = $2, provider_message_id = $3, attempts = attempts + 1, \
                 next_attempt_ms = NULL, last_error = NULL, sent_at = $4, updated_at = $4, lease_owner = NULL, lease_until_ms = NULL \
                 WHERE id = $1 AND state = 'processing' AND lease_owner = $5",
            )
            .bind(($id)(id))
            .bind(provider)
            .bind(provider_message_id)
            .bind(now)
            .bind(owner)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                > 0;
            if changed {
                add_event(&mut *conn, id, "sent", Some(&format!("via {provider}")), now).await?;
            }
            Ok(changed)
        }

        async fn add_event<'c, E>(exec: E, id: uuid::Uuid, state: &str, detail: Option<&str>, at: chrono::DateTime<chrono::Utc>) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = <$store as $crate::store::pipeline::Backend>::Db>,
        {
            sqlx::query("INSERT INTO message_events (message_id, state, detail, at) VALUES ($1, $2, $3, $4)")
                .bind(($id)(id))
                .bind(state)
                .bind(detail)
                .bind(at)
                .execute(exec)
                .await?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::pipeline::PipelineStore for $store {
            async fn ingest_batch(&self, msgs: &[$crate::store::pipeline::NewInbound]) -> StoreResult<Vec<$crate::store::pipeline::Ingested>> {
                let mut tx = self.write().await?;
                let mut stored = Vec::with_capacity(msgs.len());
                for msg in msgs {
                    let id = uuid::Uuid::now_v7();
                    let inserted = sqlx::query(
                        "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, provider, provider_message_id, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'in', $5, 'received', $6, $7, $8, $8) \
                         ON CONFLICT (bot_id, provider, provider_message_id) WHERE direction = 'in' AND provider_message_id IS NOT NULL DO NOTHING \
                         RETURNING id",
                    )
                    .bind(($id)(id))
                    .bind(($id)(msg.bot_id))
                    .bind(($id)(msg.tenant_id))
                    .bind(&msg.contact)
                    .bind(sqlx::types::Json(&msg.body))
                    .bind(&msg.provider)
                    .bind(&msg.provider_message_id)
                    .bind(msg.received_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if inserted.is_none() {
                        let existing = sqlx::query("SELECT id FROM messages WHERE bot_id = $1 AND provider = $2 AND provider_message_id = $3 AND direction = 'in'")
                            .bind(($id)(msg.bot_id))
                            .bind(&msg.provider)
                            .bind(&msg.provider_message_id)
                            .fetch_one(&mut *tx)
                            .await?;
                        stored.push($crate::store::pipeline::Ingested { id: $get_id(&existing, "id")?, duplicate: true });
                        continue;
                    }
                    add_event(&mut *tx, id, "received", None, msg.received_at).await?;
                    stored.push($crate::store::pipeline::Ingested { id, duplicate: false });
                }
                tx.commit().await?;
                Ok(stored)
            }

            async fn unprocessed_inbound(&self) -> StoreResult<Vec<$crate::store::pipeline::InboundWork>> {
                let rows = sqlx::query("SELECT id, bot_id, contact, body, created_at, attempts, next_attempt_ms FROM messages WHERE direction = 'in' AND state = 'received' ORDER BY seq")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(inbound_from_row).collect()
            }

            async fn inbound_backlog(&self) -> StoreResult<Vec<(uuid::Uuid, u64)>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT bot_id, COUNT(*) AS waiting FROM messages \
                     WHERE (direction = 'in' AND state = 'received') OR (direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))) \
                     GROUP BY bot_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok(($get_id(row, "bot_id")?, u64::try_from(row.try_get::<i64, _>("waiting")?).unwrap_or(0))))
                    .collect()
            }

            async fn pending_contacts(&self) -> StoreResult<Vec<(uuid::Uuid, String)>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT bot_id, contact, MIN(seq) AS first FROM messages WHERE direction = 'in' AND state = 'received' \
                     GROUP BY bot_id, contact ORDER BY first",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| Ok(($get_id(row, "bot_id")?, row.try_get("contact")?))).collect()
            }

            async fn unfinished_outbound(&self, bot_id: uuid::Uuid) -> StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM messages WHERE bot_id = $1 AND direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))",
                )
                .bind(($id)(bot_id))
                .fetch_one(&self.pool)
                .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn release_held(&self, bot_id: uuid::Uuid, now_ms: i64) -> StoreResult<()> {
                let mut tx = self.write().await?;
                sqlx::query("UPDATE messages SET next_attempt_ms = $2 WHERE bot_id = $1 AND direction = 'out' AND state = 'pending' AND next_attempt_ms > $2")
                    .bind(($id)(bot_id))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn unprocessed_for(&self, bot_id: uuid::Uuid, contact: &str) -> StoreResult<Vec<$crate::store::pipeline::InboundWork>> {
                let rows = sqlx::query(
                    "SELECT id, bot_id, contact, body, created_at, attempts, next_attempt_ms FROM messages \
                     WHERE bot_id = $1 AND contact = $2 AND direction = 'in' AND state = 'received' ORDER BY seq",
                )
                .bind(($id)(bot_id))
                .bind(contact)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(inbound_from_row).collect()
            }

            async fn count_interrupted_attempts(&self, now: chrono::DateTime<chrono::Utc>) -> StoreResult<u64> {
                let mut tx = self.write().await?;
                let counted = sqlx::query(
                    "UPDATE messages SET attempts = attempts + 1, updated_at = $1 \
                     WHERE seq IN (SELECT MIN(seq) FROM messages WHERE direction = 'in' AND state = 'received' GROUP BY bot_id, contact)",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(counted)
            }

            async fn inbound_postponed(&self, id: uuid::Uuid, error: &str, retry_at_ms: i64, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let changed = sqlx::query(
                    "UPDATE messages SET next_attempt_ms = $2, last_error = $3, updated_at = $4 \
                     WHERE id = $1 AND direction = 'in' AND state = 'received'",
                )
                .bind(($id)(id))
                .bind(retry_at_ms)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(changed)
            }

            async fn inbound_failed(&self, id: uuid::Uuid, error: &str, retry_at_ms: Option<i64>, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let state = if retry_at_ms.is_some() { "received" } else { "failed" };
                let changed = sqlx::query(
                    "UPDATE messages SET state = $2, next_attempt_ms = $3, last_error = $4, updated_at = $5, attempts = attempts + 1 \
                     WHERE id = $1 AND direction = 'in' AND state = 'received'",
                )
                .bind(($id)(id))
                .bind(state)
                .bind(retry_at_ms)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    let detail = match retry_at_ms {
                        Some(_) => format!("will retry: {error}"),
                        None => format!("skipped: {error}"),
                    };
                    add_event(&mut *tx, id, state, Some(&detail), now).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn conversation_row(&self, bot_id: uuid::Uuid, contact: &str) -> StoreResult<Option<$crate::store::pipeline::ConversationRow>> {
                use sqlx::Row;
                let row = sqlx::query("SELECT state, contact_name, version FROM conversations WHERE bot_id = $1 AND contact = $2")
                    .bind(($id)(bot_id))
                    .bind(contact)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| {
                    Ok($crate::store::pipeline::ConversationRow {
                        state: row.try_get::<sqlx::types::Json<serde_json::Value>, _>("state")?.0,
                        contact_name: row.try_get("contact_name")?,
                        version: row.try_get("version")?,
                    })
                })
                .transpose()
            }

            async fn commit_step(&self, c: &$crate::store::pipeline::StepCommit) -> StoreResult<Option<Vec<uuid::Uuid>>> {
                let mut tx = self.write().await?;
                // Each guard is one conditional statement; when one matches nothing, the
                // transaction is dropped (rolled back) and the caller runs the step again
                // on fresh state.
                let written = match c.expected_version {
                    None => sqlx::query(
                        "INSERT INTO conversations (bot_id, contact, contact_name, state, status, flow, step, flow_version, last_message_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 + 1) ON CONFLICT (bot_id, contact) DO NOTHING",
                    ),
                    Some(_) => sqlx::query(
                        "UPDATE conversations SET contact_name = COALESCE($3, contact_name), state = $4, status = $5, flow = $6, \
                           step = $7, flow_version = $8, last_message_at = COALESCE($9, last_message_at), updated_at = $10, \
                           version = version + 1 \
                         WHERE bot_id = $1 AND contact = $2 AND version = $11",
                    ),
                }
                .bind(($id)(c.bot_id))
                .bind(&c.contact)
                .bind(&c.contact_name)
                .bind(sqlx::types::Json(&c.state))
                .bind(c.status)
                .bind(&c.flow)
                .bind(&c.step)
                .bind(c.flow_version.map(i64::from))
                .bind(c.last_message_at)
                .bind(c.now)
                .bind(c.expected_version.unwrap_or(0))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if written == 0 {
                    return Ok(None);
                }
                if let Some(inbound) = c.processed_inbound {
                    let processed = sqlx::query("UPDATE messages SET state = 'processed', updated_at = $2 WHERE id = $1 AND state = 'received'")
                        .bind(($id)(inbound))
                        .bind(c.now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if processed == 0 {
                        return Ok(None);
                    }
                    add_event(&mut *tx, inbound, "processed", None, c.now).await?;
                }
                if let Some(timer) = c.fired_timer {
                    let fired = sqlx::query("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3")
                        .bind(($id)(c.bot_id))
                        .bind(&c.contact)
                        .bind(i64::try_from(timer).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if fired == 0 {
                        return Ok(None);
                    }
                }
                let now_ms = c.now.timestamp_millis();
                let mut ids = Vec::with_capacity(c.outbound.len());
                for out in &c.outbound {
                    let id = uuid::Uuid::now_v7();
                    let due = now_ms.saturating_add(i64::try_from(out.delay_ms).unwrap_or(i64::MAX));
                    sqlx::query(
                        "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, next_attempt_ms, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'out', $5, 'pending', $6, $7, $7)",
                    )
                    .bind(($id)(id))
                    .bind(($id)(c.bot_id))
                    .bind(($id)(c.tenant_id))
                    .bind(&c.contact)
                    .bind(sqlx::types::Json(&out.body))
                    .bind(due)
                    .bind(c.now)
                    .execute(&mut *tx)
                    .await?;
                    add_event(&mut *tx, id, "pending", None, c.now).await?;
                    ids.push(id);
                }
                for timer in &c.timers_remove {
                    sqlx::query("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3")
                        .bind(($id)(c.bot_id))
                        .bind(&c.contact)
                        .bind(i64::try_from(*timer).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?;
                }
                for timer in &c.timers_add {
                    sqlx::query(
                        "INSERT INTO flow_timers (bot_id, contact, timer_id, kind, due_ms) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (bot_id, contact, timer_id) DO UPDATE SET kind = excluded.kind, due_ms = excluded.due_ms",
                    )
                    .bind(($id)(c.bot_id))
                    .bind(&c.contact)
                    .bind(i64::try_from(timer.timer_id).unwrap_or(i64::MAX))
                    .bind(&timer.kind)
                    .bind(timer.due_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Some(ids))
            }

            async fn reset_conversation(&self, bot_id: uuid::Uuid, contact: &str) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                sqlx::query("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2")
                    .bind(($id)(bot_id))
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM conversations WHERE bot_id = $1 AND contact = $2")
                    .bind(($id)(bot_id))
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(deleted > 0)
            }

            async fn list_conversations(&self, bot_id: uuid::Uuid) -> StoreResult<Vec<dash_core::api::ConversationSummary>> {
                let rows = sqlx::query(
                    "SELECT contact, contact_name, status, flow, step, flow_version, last_message_at, updated_at \
                     FROM conversations WHERE bot_id = $1 ORDER BY updated_at DESC, contact",
                )
                .bind(($id)(bot_id))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(summary_from_row).collect()
            }

            async fn conversation(&self, bot_id: uuid::Uuid, contact: &str) -> StoreResult<Option<dash_core::api::ConversationDetail>> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT contact, contact_name, status, flow, step, flow_version, last_message_at, updated_at, state \
                     FROM conversations WHERE bot_id = $1 AND contact = $2",
                )
                .bind(($id)(bot_id))
                .bind(contact)
                .fetch_optional(&self.pool)
                .await?;
                let messages = sqlx::query(concat!("SELECT ", $crate::store::pipeline::message_columns!(), " FROM messages WHERE bot_id = $1 AND contact = $2 ORDER BY seq"))
                    .bind(($id)(bot_id))
                    .bind(contact)
                    .fetch_all(&self.pool)
                    .await?;
                let transcript = messages.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
                let (summary, state) = match row {
                    Some(row) => (summary_from_row(&row)?, row.try_get::<sqlx::types::Json<serde_json::Value>, _>("state")?.0),
                    None if transcript.is_empty() => return Ok(None),
                    None => (
                        dash_core::api::ConversationSummary {
                            contact: contact.to_owned(),
                            contact_name: None,
                            status: "idle".into(),
                            flow: None,
                            step: None,
                            flow_version: None,
                            last_message_at: None,
                            updated_at: transcript.last().map_or_else(chrono::Utc::now, |m| m.updated_at),
                        },
                        serde_json::Value::Null,
                    ),
                };
                Ok(Some(dash_core::api::ConversationDetail { summary, state, transcript }))
            }

            async fn conversations_on_version(&self, bot_id: uuid::Uuid, version: u32) -> StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM conversations WHERE bot_id = $1 AND flow_version = $2 AND status <> 'idle'",
                )
                .bind(($id)(bot_id))
                .bind(i64::from(version))
                .fetch_one(&self.pool)
                .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn waiting_http(&self) -> StoreResult<Vec<(uuid::Uuid, String)>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT bot_id, contact FROM conversations WHERE status = 'waiting_http'")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|row| Ok(($get_id(row, "bot_id")?, row.try_get("contact")?))).collect()
            }

            async fn enqueue(&self, bot_id: uuid::Uuid, tenant_id: uuid::Uuid, contact: &str, body: &dash_core::api::MessageBody, now: chrono::DateTime<chrono::Utc>) -> StoreResult<dash_core::api::MessageRecord> {
                let mut tx = self.write().await?;
                let id = uuid::Uuid::now_v7();
                let row = sqlx::query(concat!(
                    "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, next_attempt_ms, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'out', $5, 'pending', $6, $7, $7) RETURNING ",
                    $crate::store::pipeline::message_columns!()
                ))
                .bind(($id)(id))
                .bind(($id)(bot_id))
                .bind(($id)(tenant_id))
                .bind(contact)
                .bind(sqlx::types::Json(body))
                .bind(now.timestamp_millis())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                add_event(&mut *tx, id, "pending", Some("queued by an operator or the API"), now).await?;
                tx.commit().await?;
                message_from_row(&row)
            }

            async fn due_outbound(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<$crate::store::pipeline::OutboxItem>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT m.id, m.bot_id, m.tenant_id, m.contact, m.body, m.attempts FROM messages m \
                     WHERE m.direction = 'out' AND m.state IN ('pending', 'failed') AND m.next_attempt_ms <= $1 \
                       AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.bot_id = m.bot_id AND e.contact = m.contact \
                         AND e.direction = 'out' AND e.seq < m.seq AND (e.state IN ('pending', 'processing') OR (e.state = 'failed' AND e.next_attempt_ms IS NOT NULL))) \
                     ORDER BY m.next_attempt_ms, m.seq LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::pipeline::OutboxItem {
                            id: $get_id(row, "id")?,
                            bot_id: $get_id(row, "bot_id")?,
                            tenant_id: $get_id(row, "tenant_id")?,
                            contact: row.try_get("contact")?,
                            body: row.try_get::<sqlx::types::Json<dash_core::api::MessageBody>, _>("body")?.0,
                            attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                        })
                    })
                    .collect()
            }

            async fn next_outbound_due(&self, now_ms: i64) -> StoreResult<Option<i64>> {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(next_attempt_ms) FROM messages WHERE state IN ('pending', 'failed') AND next_attempt_ms > $1",
                )
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
                Ok(next)
            }

            async fn claim_batch(
                &self,
                claims: &[(uuid::Uuid, $crate::store::pipeline::Lease<'_>)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> StoreResult<Vec<bool>> {
                let mut tx = self.write().await?;
                let mut taken = Vec::with_capacity(claims.len());
                for (id, lease) in claims {
                    let claimed = sqlx::query(
                        "UPDATE messages SET state = 'processing', lease_owner = $3, lease_until_ms = $4, updated_at = $2 \
                         WHERE id = $1 AND direction = 'out' AND state IN ('pending', 'failed')",
                    )
                    .bind(($id)(*id))
                    .bind(now)
                    .bind(lease.owner)
                    .bind(lease.until_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        > 0;
                    if claimed {
                        add_event(&mut *tx, *id, "processing", None, now).await?;
                    }
                    taken.push(claimed);
                }
                tx.commit().await?;
                Ok(taken)
            }

            async fn defer(&self, id: uuid::Uuid, until_ms: i64) -> StoreResult<()> {
                let mut tx = self.write().await?;
                sqlx::query("UPDATE messages SET next_attempt_ms = $2 WHERE id = $1 AND (state = 'pending' OR (state = 'failed' AND next_attempt_ms IS NOT NULL))")
                    .bind(($id)(id))
                    .bind(until_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn mark_sent(&self, id: uuid::Uuid, owner: &str, provider: &str, provider_message_id: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let changed = set_sent(&mut *tx, id, owner, provider, provider_message_id, now).await?;
                tx.commit().await?;
                Ok(changed)
            }

            async fn mark_failed(&self, id: uuid::Uuid, owner: &str, error: &str, retry_at_ms: Option<i64>, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let state = if retry_at_ms.is_some() { "failed" } else { "dead" };
                let changed = sqlx::query(
                    "UPDATE messages SET state = $2, attempts = attempts + 1, next_attempt_ms = $3, last_error = $4, updated_at = $5, \
                     lease_owner = NULL, lease_until_ms = NULL \
                     WHERE id = $1 AND state = 'processing' AND lease_owner = $6",
                )
                .bind(($id)(id))
                .bind(state)
                .bind(retry_at_ms)
                .bind(error)
                .bind(now)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    add_event(&mut *tx, id, state, Some(error), now).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn apply_status(&self, bot_id: uuid::Uuid, provider: &str, provider_message_id: &str, state: dash_core::api::MessageState, at: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                use dash_core::api::MessageState;
                if !matches!(state, MessageState::Delivered | MessageState::Read) {
                    return Ok(false);
                }
                let mut tx = self.write().await?;
                let updated = sqlx::query(
                    "UPDATE messages SET state = $3, updated_at = $4 \
                     WHERE provider = $1 AND provider_message_id = $2 AND direction = 'out' AND bot_id = $5 \
                       AND (state = 'sent' OR ($3 = 'read' AND state = 'delivered')) RETURNING id",
                )
                .bind(provider)
                .bind(provider_message_id)
                .bind(state.as_str())
                .bind(at)
                .bind(($id)(bot_id))
                .fetch_optional(&mut *tx)
                .await?;
                let changed = match updated {
                    Some(row) => {
                        add_event(&mut *tx, $get_id(&row, "id")?, state.as_str(), Some(&format!("reported by {provider}")), at).await?;
                        true
                    }
                    None => false,
                };
                tx.commit().await?;
                Ok(changed)
            }

            async fn reclaim_leases(&self, all: bool, now: chrono::DateTime<chrono::Utc>) -> StoreResult<u64> {
                let mut tx = self.write().await?;
                let rows = sqlx::query(
                    "UPDATE messages SET state = 'pending', next_attempt_ms = $1, updated_at = $2, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE state = 'processing' AND ($3 OR lease_until_ms IS NULL OR lease_until_ms < $1) RETURNING id",
                )
                .bind(now.timestamp_millis())
                .bind(now)
                .bind(all)
                .fetch_all(&mut *tx)
                .await?;
                let detail = if all { "recovered after a restart" } else { "lease expired: taken back" };
                for row in &rows {
                    add_event(&mut *tx, $get_id(row, "id")?, "pending", Some(detail), now).await?;
                }
                tx.commit().await?;
                Ok(rows.len() as u64)
            }

            async fn queue(&self, q: &$crate::store::pipeline::QueueQuery) -> StoreResult<Vec<dash_core::api::MessageRecord>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::pipeline::message_columns!(),
                    " FROM messages WHERE direction = 'out' \
                     AND ($1 IS NULL OR bot_id = $1) AND ($2 IS NULL OR state = $2) ORDER BY seq DESC LIMIT $3"
                ))
                .bind(q.bot_id.map($id))
                .bind(q.state.map(|s| s.as_str()))
                .bind(i64::from(q.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(message_from_row).collect()
            }

            async fn queue_entry(&self, id: uuid::Uuid) -> StoreResult<dash_core::api::QueueEntry> {
                use sqlx::Row;
                let row = sqlx::query(concat!("SELECT ", $crate::store::pipeline::message_columns!(), " FROM messages WHERE id = $1"))
                    .bind(($id)(id))
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| super::StoreError::NotFound { what: format!("message {id}") })?;
                let events = sqlx::query("SELECT state, detail, at FROM message_events WHERE message_id = $1 ORDER BY seq")
                    .bind(($id)(id))
                    .fetch_all(&self.pool)
                    .await?;
                let history = events
                    .iter()
                    .map(|row| {
                        let state: String = row.try_get("state")?;
                        Ok(dash_core::api::MessageEvent {
                            state: super::parse_status(&state)?,
                            detail: row.try_get("detail")?,
                            at: row.try_get("at")?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(dash_core::api::QueueEntry { message: message_from_row(&row)?, history, send_attempts: Vec::new() })
            }

            async fn requeue(&self, id: uuid::Uuid, now: chrono::DateTime<chrono::Utc>) -> StoreResult<dash_core::api::MessageRecord> {
                self.transition(id, &["failed", "dead"], "pending", Some(now.timestamp_millis()), "retried by an operator", now).await
            }

            async fn cancel(&self, id: uuid::Uuid, now: chrono::DateTime<chrono::Utc>) -> StoreResult<dash_core::api::MessageRecord> {
                self.transition(id, &["pending", "failed"], "cancelled", None, "cancelled by an operator", now).await
            }

            async fn contact_idle(&self, bot_id: uuid::Uuid, contact: &str) -> StoreResult<bool> {
                let busy: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM messages WHERE bot_id = $1 AND contact = $2 \
                     AND ((direction = 'in' AND state = 'received') OR (direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))))",
                )
                .bind(($id)(bot_id))
                .bind(contact)
                .fetch_one(&self.pool)
                .await?;
                Ok(busy == 0)
            }

            async fn due_timers(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<$crate::store::pipeline::DueTimer>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT bot_id, contact, timer_id FROM flow_timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2")
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::pipeline::DueTimer {
                            bot_id: $get_id(row, "bot_id")?,
                            contact: row.try_get("contact")?,
                            timer_id: u64::try_from(row.try_get::<i64, _>("timer_id")?).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn claim_due_timers(&self, now_ms: i64, until_ms: i64, limit: u32) -> StoreResult<Vec<$crate::store::pipeline::DueTimer>> {
                use sqlx::Row;
                let mut tx = self.write().await?;
                // The outer `due_ms <= $1` is checked again on the locked row (PostgreSQL
                // re-reads it after a concurrent update), so a timer is taken once.
                let rows = sqlx::query(
                    "UPDATE flow_timers SET due_ms = $2 \
                     WHERE due_ms <= $1 AND (bot_id, contact, timer_id) IN \
                       (SELECT bot_id, contact, timer_id FROM flow_timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $3) \
                     RETURNING bot_id, contact, timer_id",
                )
                .bind(now_ms)
                .bind(until_ms)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::pipeline::DueTimer {
                            bot_id: $get_id(row, "bot_id")?,
                            contact: row.try_get("contact")?,
                            timer_id: u64::try_from(row.try_get::<i64, _>("timer_id")?).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn timer_exists(&self, bot_id: uuid::Uuid, contact: &str, timer_id: u64) -> StoreResult<bool> {
                let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3")
                    .bind(($id)(bot_id))
                    .bind(contact)
                    .bind(i64::try_from(timer_id).unwrap_or(i64::MAX))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(found > 0)
            }

            async fn timer_failed(&self, bot_id: uuid::Uuid, contact: &str, timer_id: u64, retry_at: &(dyn Fn(u32) -> Option<i64> + Send + Sync)) -> StoreResult<u32> {
                let mut tx = self.write().await?;
                let timer = i64::try_from(timer_id).unwrap_or(i64::MAX);
                let attempts: Option<i64> = sqlx::query_scalar(
                    "UPDATE flow_timers SET attempts = attempts + 1 WHERE bot_id = $1 AND contact = $2 AND timer_id = $3 RETURNING attempts",
                )
                .bind(($id)(bot_id))
                .bind(contact)
                .bind(timer)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(attempts) = attempts.map(|n| u32::try_from(n).unwrap_or(u32::MAX)) else {
                    tx.commit().await?;
                    return Ok(0);
                };
                let at = retry_at(attempts);
                match at {
                    Some(_) => sqlx::query("UPDATE flow_timers SET due_ms = $4 WHERE bot_id = $1 AND contact = $2 AND timer_id = $3"),
                    None => sqlx::query("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3 AND $4 = $4"),
                }
                .bind(($id)(bot_id))
                .bind(contact)
                .bind(timer)
                .bind(at.unwrap_or(0))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(attempts)
            }

            async fn next_timer_due(&self) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT MIN(due_ms) FROM flow_timers").fetch_one(&self.pool).await?)
            }

            async fn sandbox_record(&self, key: &str, bot_id: uuid::Uuid, contact: &str, body: &dash_core::api::MessageBody, now: chrono::DateTime<chrono::Utc>) -> StoreResult<String> {
                let provider_id = format!("sandbox-{key}");
                let mut tx = self.write().await?;
                sqlx::query(
                    "INSERT INTO sandbox_messages (idempotency_key, bot_id, contact, body, provider_message_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO UPDATE SET calls = sandbox_messages.calls + 1",
                )
                .bind(key)
                .bind(($id)(bot_id))
                .bind(contact)
                .bind(sqlx::types::Json(body))
                .bind(&provider_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(provider_id)
            }

            async fn sandbox_sent(&self, bot_id: uuid::Uuid) -> StoreResult<Vec<$crate::store::pipeline::SandboxSent>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT idempotency_key, contact, body, provider_message_id, calls FROM sandbox_messages WHERE bot_id = $1 ORDER BY created_at, idempotency_key",
                )
                .bind(($id)(bot_id))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::pipeline::SandboxSent {
                            idempotency_key: row.try_get("idempotency_key")?,
                            contact: row.try_get("contact")?,
                            body: row.try_get::<sqlx::types::Json<dash_core::api::MessageBody>, _>("body")?.0,
                            provider_message_id: row.try_get("provider_message_id")?,
                            calls: u32::try_from(row.try_get::<i64, _>("calls")?).unwrap_or(u32::MAX),
                        })
                    })
                    .collect()
            }
        }

        fn inbound_from_row(row: &<<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Row) -> StoreResult<$crate::store::pipeline::InboundWork> {
            use sqlx::Row;
            Ok($crate::store::pipeline::InboundWork {
                id: $get_id(row, "id")?,
                bot_id: $get_id(row, "bot_id")?,
                contact: row.try_get("contact")?,
                body: row.try_get::<sqlx::types::Json<dash_core::api::MessageBody>, _>("body")?.0,
                received_at: row.try_get("created_at")?,
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                next_attempt_ms: row.try_get("next_attempt_ms")?,
            })
        }

        impl $store {
            /// Moves an outbox entry between states in one conditional statement, so it
            /// can never race the dispatcher; refuses from any other state.
            async fn transition(&self, id: uuid::Uuid, from: &[&str], to: &str, next_ms: Option<i64>, detail: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<dash_core::api::MessageRecord> {
                use sqlx::Row;
                let mut tx = self.write().await?;
                // Sent again by an operator: a full set of attempts.
                let updated = sqlx::query(concat!(
                    "UPDATE messages SET state = $2, next_attempt_ms = $3, updated_at = $4, \
                     attempts = CASE WHEN $2 = 'pending' THEN 0 ELSE attempts END \
                     WHERE id = $1 AND direction = 'out' AND state IN ($5, $6) RETURNING ",
                    $crate::store::pipeline::message_columns!()
                ))
                .bind(($id)(id))
                .bind(to)
                .bind(next_ms)
                .bind(now)
                .bind(from.first().copied().unwrap_or(""))
                .bind(from.get(1).copied().unwrap_or(""))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = updated else {
                    drop(tx);
                    let current = sqlx::query("SELECT state FROM messages WHERE id = $1 AND direction = 'out'")
                        .bind(($id)(id))
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or_else(|| super::StoreError::NotFound { what: format!("outbox entry {id}") })?;
                    let state: String = current.try_get("state")?;
                    return Err(super::StoreError::Conflict {
                        message: format!("message {id} is {state}: only {} messages can be {to}", from.join(" or ")),
                        field: Some("state"),
                    });
                };
                add_event(&mut *tx, id, to, Some(detail), now).await?;
                tx.commit().await?;
                message_from_row(&row)
            }
        }
    };
}

pub(crate) use pipeline_store;

/// Ties a store to its sqlx database type, for the macro above.
pub trait Backend {
    type Db: sqlx::Database;
}
