//! The outbox: outbound messages from `pending` to `sent` (or `dead`), claimed under a
//! lease, every try recorded as a send attempt, every change in the status history
//! (`message_events`), then delivery reports forward only.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{
    Direction, MessageBody, MessageEvent, MessageRecord, MessageState, QueueEntry,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{Exec, MAX_ROWS, Row, Sql, Tx, sql, sql_rows};
use super::{SqlStore, StoreError, StoreResult, parse_status};

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

/// Query of the outbox listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueQuery {
    pub bot_id: Option<Uuid>,
    pub state: Option<MessageState>,
    pub limit: u32,
}

/// Who holds an outbox entry being sent, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease<'a> {
    /// The dashd process that claimed it.
    pub owner: &'a str,
    /// Unix ms after which another dispatcher may take it back.
    pub until_ms: i64,
}

/// One try at sending an outbox entry through one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    pub provider: String,
    /// `sent`, `retryable`, `permanent`, `provider_broken` or `skipped` (breaker open).
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// A successful send to record: its attempt, and the entry `owner` holds marked `sent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMark {
    pub id: Uuid,
    pub owner: String,
    pub provider_message_id: String,
    /// The attempt that succeeded (its provider and time go on the entry).
    pub attempt: SendAttempt,
}

/// The columns of a message record, in every query that returns one.
macro_rules! message_columns {
    () => {
        "id, bot_id, contact, direction, body, state, provider, provider_message_id, attempts, \
         next_attempt_ms, last_error, created_at, updated_at, sent_at"
    };
}

pub(super) use message_columns;

/// A message to queue.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub bot_id: Uuid,
    pub tenant_id: Uuid,
    pub contact: &'a str,
    pub body: &'a MessageBody,
    pub now: DateTime<Utc>,
}

/// Writes an outbound message (`pending`) and its first history row.
async fn insert_outbound(tx: &mut Tx, message: &Outbound<'_>) -> StoreResult<Row> {
    let id = Uuid::now_v7();
    let row = sql(concat!(
        "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, next_attempt_ms, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'out', $5, 'pending', $6, $7, $7) RETURNING ",
        message_columns!()
    ))
    .bind(id)
    .bind(message.bot_id)
    .bind(message.tenant_id)
    .bind(message.contact)
    .bind(Json(message.body))
    .bind(message.now.timestamp_millis())
    .bind(message.now)
    .fetch_one(&mut *tx)
    .await?;
    add_event(
        &mut *tx,
        id,
        "pending",
        Some("queued by an operator or the API"),
        message.now,
    )
    .await?;
    Ok(row)
}

/// Storage of the outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes an outbound message to the outbox (`pending`).
    async fn enqueue(
        &self,
        bot_id: Uuid,
        tenant_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<MessageRecord>;
    /// [`enqueue`](Self::enqueue) under an idempotency key of the tenant: the first
    /// request with `key` writes the message and the key together; a repeat with the same
    /// `fingerprint` gets the first message back (`true`: replayed); a different
    /// fingerprint is a conflict.
    async fn enqueue_once(
        &self,
        outbound: &Outbound<'_>,
        key: &str,
        fingerprint: &str,
    ) -> StoreResult<(MessageRecord, bool)>;
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
    /// whether it was ours to take (as [`OutboxStore::claim`]).
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
    /// A successful send: its attempt recorded and the entry `owner` holds marked `sent`
    /// (with `provider_message_id`), in one transaction. False (the attempt still
    /// recorded) when the entry is not ours any more.
    async fn mark_sent_after(
        &self,
        id: Uuid,
        owner: &str,
        provider_message_id: &str,
        attempt: &SendAttempt,
    ) -> StoreResult<bool> {
        let mark = SentMark {
            id,
            owner: owner.to_owned(),
            provider_message_id: provider_message_id.to_owned(),
            attempt: attempt.clone(),
        };
        let mut marked = self.mark_sent_batch(std::slice::from_ref(&mark)).await?;
        marked
            .pop()
            .ok_or_else(|| StoreError::Unavailable("the store answered no row".into()))
    }
    /// Several successful sends (group commit), as [`OutboxStore::mark_sent_after`]
    /// each, in one transaction; for each, whether the entry was still ours.
    async fn mark_sent_batch(&self, marks: &[SentMark]) -> StoreResult<Vec<bool>>;
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
    /// An entry `owner` holds was refused for good by a provider (bad recipient, outside
    /// the 24-hour window): `failed`, never retried, with the provider's reason. False
    /// when the entry is not ours any more.
    async fn mark_refused(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Gives back an entry `owner` holds without sending it and without counting an
    /// attempt (every provider's breaker was open): `pending`, due at `at_ms`.
    async fn release(&self, id: Uuid, owner: &str, at_ms: i64) -> StoreResult<bool>;
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
    /// A delivery failure reported after the send (`sent`/`delivered` → `failed`, with
    /// the provider's code and reason; never retried: the provider gave up on it).
    async fn status_failed(
        &self,
        bot_id: Uuid,
        provider: &str,
        provider_message_id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// `processing` entries whose lease expired (their dispatcher died or lost track)
    /// back to `pending`; with `all`, every `processing` entry (start-up of the only
    /// dashd on a database). Returns how many.
    async fn reclaim_leases(&self, all: bool, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Outbound messages of a bot not finished yet (pending, processing or failed).
    async fn unfinished_outbound(&self, bot_id: Uuid) -> StoreResult<u64>;
    /// Makes a bot's waiting messages due now (after it is resumed).
    async fn release_held(&self, bot_id: Uuid, now_ms: i64) -> StoreResult<()>;
    async fn queue(&self, query: &QueueQuery) -> StoreResult<Vec<MessageRecord>>;
    async fn queue_entry(&self, id: Uuid) -> StoreResult<QueueEntry>;
    /// `failed`/`dead` → `pending`, due now.
    async fn requeue(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord>;
    /// `pending`/`failed` → `cancelled`.
    async fn cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord>;
    /// Records one send attempt of an outbox entry.
    async fn record_attempt(&self, message_id: Uuid, attempt: &SendAttempt) -> StoreResult<()>;
    /// An entry's attempts, oldest first.
    async fn attempts(&self, message_id: Uuid) -> StoreResult<Vec<SendAttempt>>;
}

pub(super) fn message_from_row(row: &Row) -> StoreResult<MessageRecord> {
    let direction = match row.try_get::<String>("direction")?.as_str() {
        "in" => Direction::In,
        _ => Direction::Out,
    };
    let state: String = row.try_get("state")?;
    Ok(MessageRecord {
        id: row.try_get::<Uuid>("id")?,
        bot_id: row.try_get::<Uuid>("bot_id")?,
        contact: row.try_get("contact")?,
        direction,
        body: row.try_get::<Json<MessageBody>>("body")?.0,
        state: parse_status(&state)?,
        provider: row.try_get("provider")?,
        provider_message_id: row.try_get("provider_message_id")?,
        attempts: u32::try_from(row.try_get::<i64>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row
            .try_get::<Option<i64>>("next_attempt_ms")?
            .and_then(DateTime::from_timestamp_millis),
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

/// `processing` (held by `owner`) → `sent`, with its event, in the caller's
/// transaction; false when the entry is not ours any more.
async fn set_sent(
    tx: &mut Tx,
    id: Uuid,
    owner: &str,
    provider: &str,
    provider_message_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let changed = sql(
        "UPDATE messages SET state = 'sent', provider = $2, provider_message_id = $3, attempts = attempts + 1, \
         next_attempt_ms = NULL, last_error = NULL, sent_at = $4, updated_at = $4, lease_owner = NULL, lease_until_ms = NULL \
         WHERE id = $1 AND state = 'processing' AND lease_owner = $5",
    )
    .bind(id)
    .bind(provider)
    .bind(provider_message_id)
    .bind(now)
    .bind(owner)
    .execute(&mut *tx)
    .await?
        > 0;
    if changed {
        add_event(&mut *tx, id, "sent", Some(&format!("via {provider}")), now).await?;
    }
    Ok(changed)
}

/// Adds a step to a message's status history.
pub(super) async fn add_event<'c>(
    exec: impl Into<Exec<'c>>,
    id: Uuid,
    state: &str,
    detail: Option<&str>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sql("INSERT INTO message_events (message_id, state, detail, at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(state)
        .bind(detail)
        .bind(at)
        .execute(exec)
        .await?;
    Ok(())
}

/// History rows, in the caller's transaction: (message, state, detail, at) each, one
/// statement per [`MAX_ROWS`].
pub(super) async fn add_events(
    tx: &mut Tx,
    events: &[(Uuid, &str, Option<String>, DateTime<Utc>)],
) -> StoreResult<()> {
    for slice in events.chunks(MAX_ROWS) {
        let mut insert = sql_rows(
            "INSERT INTO message_events (message_id, state, detail, at) \
             SELECT v.column1, v.column2, v.column3, v.column4 FROM (VALUES ",
            "($1, $2, $3, $4)",
            slice.len(),
            ") AS v WHERE v.column1 IS NOT NULL",
        );
        for (id, state, detail, at) in slice {
            insert = insert.bind(*id).bind(*state).bind(detail).bind(*at);
        }
        insert.execute(&mut *tx).await?;
    }
    Ok(())
}

/// One send attempt, in the caller's transaction.
async fn insert_attempt(tx: &mut Tx, message_id: Uuid, attempt: &SendAttempt) -> StoreResult<()> {
    sql(
        "INSERT INTO send_attempts (message_id, provider, outcome, error_code, error, latency_ms, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(message_id)
    .bind(&attempt.provider)
    .bind(&attempt.outcome)
    .bind(&attempt.error_code)
    .bind(&attempt.error)
    .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
    .bind(attempt.at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn enqueue(
        &self,
        bot_id: Uuid,
        tenant_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<MessageRecord> {
        let mut tx = self.write().await?;
        let outbound = Outbound {
            bot_id,
            tenant_id,
            contact,
            body,
            now,
        };
        let row = insert_outbound(&mut tx, &outbound).await?;
        tx.commit().await?;
        message_from_row(&row)
    }

    async fn enqueue_once(
        &self,
        outbound: &Outbound<'_>,
        key: &str,
        fingerprint: &str,
    ) -> StoreResult<(MessageRecord, bool)> {
        // Two tries: on PostgreSQL a concurrent first request may insert the key between
        // this transaction's read and its insert; the second try then finds it.
        for _ in 0..2 {
            let mut tx = self.write().await?;
            let seen = sql("SELECT fingerprint, message_id FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2")
            .bind(outbound.tenant_id)
            .bind(key)
            .fetch_optional(&mut tx)
            .await?;
            if let Some(seen) = seen {
                let first: String = seen.try_get("fingerprint")?;
                if first != fingerprint {
                    return Err(StoreError::Conflict {
                        message: "this Idempotency-Key was used with a different request: use a new key for a new message".into(),
                        field: Some("Idempotency-Key"),
                    });
                }
                let row = sql(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE id = $1"
                ))
                .bind(seen.try_get::<Uuid>("message_id")?)
                .fetch_one(&mut tx)
                .await?;
                return Ok((message_from_row(&row)?, true));
            }
            let row = insert_outbound(&mut tx, outbound).await?;
            let record = message_from_row(&row)?;
            let inserted = sql(
                "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, message_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(outbound.tenant_id)
            .bind(key)
            .bind(fingerprint)
            .bind(record.id)
            .bind(outbound.now)
            .execute(&mut tx)
            .await?;
            if inserted == 1 {
                tx.commit().await?;
                return Ok((record, false));
            }
            drop(tx); // rolls back: the message goes with it
        }
        Err(StoreError::Conflict {
            message: "a request with this Idempotency-Key is being handled: retry".into(),
            field: Some("Idempotency-Key"),
        })
    }

    async fn due_outbound(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<OutboxItem>> {
        let rows = sql(
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
                Ok(OutboxItem {
                    id: row.try_get::<Uuid>("id")?,
                    bot_id: row.try_get::<Uuid>("bot_id")?,
                    tenant_id: row.try_get::<Uuid>("tenant_id")?,
                    contact: row.try_get("contact")?,
                    body: row.try_get::<Json<MessageBody>>("body")?.0,
                    attempts: u32::try_from(row.try_get::<i64>("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn next_outbound_due(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        let next: Option<i64> = sql(
            "SELECT MIN(next_attempt_ms) FROM messages WHERE state IN ('pending', 'failed') AND next_attempt_ms > $1",
        )
        .bind(now_ms)
        .fetch_scalar(&self.pool)
        .await?;
        Ok(next)
    }

    async fn claim_batch(
        &self,
        claims: &[(Uuid, Lease<'_>)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let mut tx = self.write().await?;
        // One UPDATE per slice: each entry still `pending` or `failed` is taken under its
        // own lease; RETURNING names those taken (another dispatcher may have won some).
        // On PostgreSQL the entries are locked first, skipping those another transaction
        // holds (another dispatcher claiming them this instant), instead of waiting.
        let mut taken = HashSet::with_capacity(claims.len());
        for slice in claims.chunks(MAX_ROWS) {
            let mut update = sql_rows(
                "UPDATE messages SET state = 'processing', lease_owner = c.owner, \
                 lease_until_ms = c.until_ms, updated_at = $1 \
                 FROM (SELECT m.id, v.column2 AS owner, v.column3 AS until_ms FROM (VALUES ",
                "($1, $2, $3)",
                slice.len(),
                ") AS v JOIN messages m ON m.id = v.column1 WHERE m.direction = 'out' \
                 AND m.state IN ('pending', 'failed') /* lock */) AS c \
                 WHERE messages.id = c.id AND messages.state IN ('pending', 'failed') RETURNING messages.id",
            )
            .locking("FOR UPDATE OF m SKIP LOCKED")
            .bind(now);
            for (id, lease) in slice {
                update = update.bind(*id).bind(lease.owner).bind(lease.until_ms);
            }
            for row in update.fetch_all(&mut tx).await? {
                taken.insert(row.try_get::<Uuid>("id")?);
            }
        }
        let claimed: Vec<(Uuid, &str, Option<String>, DateTime<Utc>)> = claims
            .iter()
            .filter(|(id, _)| taken.contains(id))
            .map(|(id, _)| (*id, "processing", None, now))
            .collect();
        add_events(&mut tx, &claimed).await?;
        tx.commit().await?;
        Ok(claims.iter().map(|(id, _)| taken.contains(id)).collect())
    }

    async fn defer(&self, id: Uuid, until_ms: i64) -> StoreResult<()> {
        sql("UPDATE messages SET next_attempt_ms = $2 WHERE id = $1 AND (state = 'pending' OR (state = 'failed' AND next_attempt_ms IS NOT NULL))")
            .bind(id)
            .bind(until_ms)
            .write(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_sent(
        &self,
        id: Uuid,
        owner: &str,
        provider: &str,
        provider_message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let changed = set_sent(&mut tx, id, owner, provider, provider_message_id, now).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn mark_sent_batch(&self, marks: &[SentMark]) -> StoreResult<Vec<bool>> {
        let mut tx = self.write().await?;
        for slice in marks.chunks(MAX_ROWS) {
            let mut attempts = sql_rows(
                "INSERT INTO send_attempts (message_id, provider, outcome, error_code, error, latency_ms, at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7 FROM (VALUES ",
                "($1, $2, $3, $4, $5, $6, $7)",
                slice.len(),
                ") AS v WHERE v.column1 IS NOT NULL",
            );
            for mark in slice {
                let a = &mark.attempt;
                attempts = attempts
                    .bind(mark.id)
                    .bind(&a.provider)
                    .bind(&a.outcome)
                    .bind(&a.error_code)
                    .bind(&a.error)
                    .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
                    .bind(a.at);
            }
            attempts.execute(&mut tx).await?;
        }
        // `processing` (held by the mark's owner) → `sent`, one UPDATE per slice.
        let mut sent = HashSet::with_capacity(marks.len());
        for slice in marks.chunks(MAX_ROWS) {
            let mut update = sql_rows(
                "UPDATE messages SET state = 'sent', provider = v.column3, provider_message_id = v.column4, \
                 attempts = attempts + 1, next_attempt_ms = NULL, last_error = NULL, sent_at = v.column5, \
                 updated_at = v.column5, lease_owner = NULL, lease_until_ms = NULL FROM (VALUES ",
                "($1, $2, $3, $4, $5)",
                slice.len(),
                ") AS v WHERE messages.id = v.column1 AND messages.state = 'processing' \
                 AND messages.lease_owner = v.column2 RETURNING id",
            );
            for mark in slice {
                update = update
                    .bind(mark.id)
                    .bind(&mark.owner)
                    .bind(&mark.attempt.provider)
                    .bind(&mark.provider_message_id)
                    .bind(mark.attempt.at);
            }
            for row in update.fetch_all(&mut tx).await? {
                sent.insert(row.try_get::<Uuid>("id")?);
            }
        }
        let done: Vec<(Uuid, &str, Option<String>, DateTime<Utc>)> = marks
            .iter()
            .filter(|m| sent.contains(&m.id))
            .map(|m| {
                let detail = format!("via {}", m.attempt.provider);
                (m.id, "sent", Some(detail), m.attempt.at)
            })
            .collect();
        add_events(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(marks.iter().map(|m| sent.contains(&m.id)).collect())
    }

    async fn mark_failed(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let state = if retry_at_ms.is_some() {
            "failed"
        } else {
            "dead"
        };
        let change = sql(
            "UPDATE messages SET state = $2, attempts = attempts + 1, next_attempt_ms = $3, last_error = $4, updated_at = $5, \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND state = 'processing' AND lease_owner = $6 RETURNING id",
        )
        .bind(id)
        .bind(state)
        .bind(retry_at_ms)
        .bind(error)
        .bind(now)
        .bind(owner);
        Ok(self
            .change_with_history(change, state, Some(error), now)
            .await?
            > 0)
    }

    async fn mark_refused(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let change = sql(
            "UPDATE messages SET state = 'failed', attempts = attempts + 1, next_attempt_ms = NULL, last_error = $2, \
             updated_at = $3, lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND state = 'processing' AND lease_owner = $4 RETURNING id",
        )
        .bind(id)
        .bind(error)
        .bind(now)
        .bind(owner);
        Ok(self
            .change_with_history(change, "failed", Some(error), now)
            .await?
            > 0)
    }

    async fn release(&self, id: Uuid, owner: &str, at_ms: i64) -> StoreResult<bool> {
        let changed = sql(
            "UPDATE messages SET state = 'pending', next_attempt_ms = $3, lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND state = 'processing' AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(at_ms)
            .write(&self.pool)
            .await? > 0;
        Ok(changed)
    }

    async fn apply_status(
        &self,
        bot_id: Uuid,
        provider: &str,
        provider_message_id: &str,
        state: MessageState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        use MessageState;
        if !matches!(state, MessageState::Delivered | MessageState::Read) {
            return Ok(false);
        }
        let change = sql(
            "UPDATE messages SET state = $3, updated_at = $4 \
             WHERE provider = $1 AND provider_message_id = $2 AND direction = 'out' AND bot_id = $5 \
               AND (state = 'sent' OR ($3 = 'read' AND state = 'delivered')) RETURNING id",
        )
        .bind(provider)
        .bind(provider_message_id)
        .bind(state.as_str())
        .bind(at)
        .bind(bot_id);
        let detail = format!("reported by {provider}");
        Ok(self
            .change_with_history(change, state.as_str(), Some(&detail), at)
            .await?
            > 0)
    }

    async fn status_failed(
        &self,
        bot_id: Uuid,
        provider: &str,
        provider_message_id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let change = sql(
            "UPDATE messages SET state = 'failed', next_attempt_ms = NULL, last_error = $4, updated_at = $5 \
             WHERE provider = $2 AND provider_message_id = $3 AND direction = 'out' AND bot_id = $1 \
               AND state IN ('sent', 'delivered') RETURNING id",
        )
        .bind(bot_id)
        .bind(provider)
        .bind(provider_message_id)
        .bind(error)
        .bind(at);
        Ok(self
            .change_with_history(change, "failed", Some(error), at)
            .await?
            > 0)
    }

    async fn reclaim_leases(&self, all: bool, now: DateTime<Utc>) -> StoreResult<u64> {
        let change = sql(
            "UPDATE messages SET state = 'pending', next_attempt_ms = $1, updated_at = $2, lease_owner = NULL, lease_until_ms = NULL \
             WHERE state = 'processing' AND ($3 OR lease_until_ms IS NULL OR lease_until_ms < $1) RETURNING id",
        )
        .bind(now.timestamp_millis())
        .bind(now)
        .bind(all);
        let detail = if all {
            "recovered after a restart"
        } else {
            "lease expired: taken back"
        };
        let changed = self
            .change_with_history(change, "pending", Some(detail), now)
            .await?;
        Ok(changed as u64)
    }

    async fn unfinished_outbound(&self, bot_id: Uuid) -> StoreResult<u64> {
        let count: i64 = sql(
            "SELECT COUNT(*) FROM messages WHERE bot_id = $1 AND direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))",
        )
        .bind(bot_id)
        .fetch_scalar(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn release_held(&self, bot_id: Uuid, now_ms: i64) -> StoreResult<()> {
        sql("UPDATE messages SET next_attempt_ms = $2 WHERE bot_id = $1 AND direction = 'out' AND state = 'pending' AND next_attempt_ms > $2")
            .bind(bot_id)
            .bind(now_ms)
            .write(&self.pool)
            .await?;
        Ok(())
    }

    async fn queue(&self, q: &QueueQuery) -> StoreResult<Vec<MessageRecord>> {
        let rows = sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE direction = 'out' \
             AND ($1 IS NULL OR bot_id = $1) AND ($2 IS NULL OR state = $2) ORDER BY seq DESC LIMIT $3"
        ))
        .bind(q.bot_id)
        .bind(q.state.map(|s| s.as_str()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn queue_entry(&self, id: Uuid) -> StoreResult<QueueEntry> {
        let row = sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("message {id}"),
        })?;
        let events =
            sql("SELECT state, detail, at FROM message_events WHERE message_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        let history = events
            .iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(MessageEvent {
                    state: parse_status(&state)?,
                    detail: row.try_get("detail")?,
                    at: row.try_get("at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(QueueEntry {
            message: message_from_row(&row)?,
            history,
            send_attempts: Vec::new(),
        })
    }

    async fn requeue(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord> {
        self.transition(
            id,
            &["failed", "dead"],
            "pending",
            Some(now.timestamp_millis()),
            "retried by an operator",
            now,
        )
        .await
    }

    async fn cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MessageRecord> {
        self.transition(
            id,
            &["pending", "failed"],
            "cancelled",
            None,
            "cancelled by an operator",
            now,
        )
        .await
    }

    async fn record_attempt(&self, message_id: Uuid, attempt: &SendAttempt) -> StoreResult<()> {
        let mut tx = self.write().await?;
        insert_attempt(&mut tx, message_id, attempt).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn attempts(&self, message_id: Uuid) -> StoreResult<Vec<SendAttempt>> {
        let rows = sql("SELECT provider, outcome, error_code, error, latency_ms, at FROM send_attempts WHERE message_id = $1 ORDER BY seq")
            .bind(message_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SendAttempt {
                    provider: row.try_get("provider")?,
                    outcome: row.try_get("outcome")?,
                    error_code: row.try_get("error_code")?,
                    error: row.try_get("error")?,
                    latency_ms: u64::try_from(row.try_get::<i64>("latency_ms")?).unwrap_or(0),
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }
}

impl SqlStore {
    /// Runs `change`, a conditional `UPDATE messages ... RETURNING id`, in a write
    /// transaction, and adds `state` (with `detail`) to the history of each message it
    /// changed; returns how many it changed.
    pub(super) async fn change_with_history(
        &self,
        change: Sql,
        state: &str,
        detail: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut tx = self.write().await?;
        let rows = change.fetch_all(&mut tx).await?;
        for row in &rows {
            add_event(&mut tx, row.try_get::<Uuid>("id")?, state, detail, at).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Moves an outbox entry between states in one conditional statement, so it
    /// can never race the dispatcher; refuses from any other state.
    async fn transition(
        &self,
        id: Uuid,
        from: &[&str],
        to: &str,
        next_ms: Option<i64>,
        detail: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<MessageRecord> {
        let mut tx = self.write().await?;
        // Sent again by an operator: a full set of attempts.
        let updated = sql(concat!(
            "UPDATE messages SET state = $2, next_attempt_ms = $3, updated_at = $4, \
             attempts = CASE WHEN $2 = 'pending' THEN 0 ELSE attempts END \
             WHERE id = $1 AND direction = 'out' AND state IN ($5, $6) RETURNING ",
            message_columns!()
        ))
        .bind(id)
        .bind(to)
        .bind(next_ms)
        .bind(now)
        .bind(from.first().copied().unwrap_or(""))
        .bind(from.get(1).copied().unwrap_or(""))
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = updated else {
            drop(tx);
            let current = sql("SELECT state FROM messages WHERE id = $1 AND direction = 'out'")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("outbox entry {id}"),
                })?;
            let state: String = current.try_get("state")?;
            return Err(StoreError::Conflict {
                message: format!(
                    "message {id} is {state}: only {} messages can be {to}",
                    from.join(" or ")
                ),
                field: Some("state"),
            });
        };
        add_event(&mut tx, id, to, Some(detail), now).await?;
        tx.commit().await?;
        message_from_row(&row)
    }
}
