//! Conversations: each contact's engine state, written with its step's outbound
//! messages and timers in one transaction guarded by the version the step read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{ConversationDetail, ConversationSummary, MessageBody};
use sqlx::types::Json;
use uuid::Uuid;

use super::outbox::{add_events, message_columns, message_from_row};
use super::sql::{MAX_ROWS, Row, Sql, Tx, sql, sql_rows};
use super::{SqlStore, StoreResult};

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
    /// Orders the step's `create_order` actions asked for, with the conversation's
    /// variables for the customer record. One that the catalogue refuses (an unknown
    /// SKU, short stock) is left out with a warning; the step still commits.
    pub orders: Vec<(
        dash_core::commerce::NewOrder,
        serde_json::Map<String, serde_json::Value>,
    )>,
    /// Events for the tenant's stream (`handoff.requested`...), written with the step.
    pub events: Vec<(&'static str, serde_json::Value)>,
    pub now: DateTime<Utc>,
}

/// What a conversation search matches: every field given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationFilter {
    /// `idle`, `active`, `handoff` or `waiting_http`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub flow: Option<String>,
    /// Contacts starting with this (e.g. a number's first digits).
    #[serde(default)]
    pub contact: Option<String>,
    /// Changed at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Changed before this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// Storage of conversations and the results of their steps.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    async fn conversation_row(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationRow>>;
    /// Writes a step's new state, outbound messages and timers atomically; returns the
    /// new outbox ids, or `None` (nothing written) when the conversation, the inbound
    /// message or the fired timer changed since the step read them.
    async fn commit_step(&self, commit: &StepCommit) -> StoreResult<Option<Vec<Uuid>>>;
    /// Several steps of different conversations in one transaction (group commit), each
    /// as [`ConversationStore::commit_step`]. When a guard refuses one, the batch is
    /// rolled back and each step committed alone, so only that one is answered `None`.
    async fn commit_steps(&self, commits: &[StepCommit]) -> StoreResult<Vec<Option<Vec<Uuid>>>>;
    /// Forgets a conversation's state and timers; true if there was one.
    async fn reset_conversation(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool>;
    async fn list_conversations(&self, bot_id: Uuid) -> StoreResult<Vec<ConversationSummary>>;
    /// A bot's conversations matching `filter`, by contact, after the contact `after`.
    async fn conversations_page(
        &self,
        bot_id: Uuid,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>>;
    async fn conversation(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationDetail>>;
    /// Conversations still running on a flow version.
    async fn conversations_on_version(&self, bot_id: Uuid, version: u32) -> StoreResult<u64>;
    /// Conversations waiting for an HTTP result (after a restart those are lost).
    async fn waiting_http(&self) -> StoreResult<Vec<(Uuid, String)>>;
    /// No inbound message left to handle and no outbound message left to send.
    async fn contact_idle(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool>;
}

fn summary_from_row(row: &Row) -> StoreResult<ConversationSummary> {
    Ok(ConversationSummary {
        contact: row.try_get("contact")?,
        contact_name: row.try_get("contact_name")?,
        status: row.try_get("status")?,
        flow: row.try_get("flow")?,
        step: row.try_get("step")?,
        flow_version: row
            .try_get::<Option<i64>>("flow_version")?
            .and_then(|v| u32::try_from(v).ok()),
        last_message_at: row.try_get("last_message_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Writes steps' changes in the caller's transaction, each kind of change for the
/// whole batch in one multi-row statement: the conversations over the versions the
/// steps read, the inbound messages `processed`, the fired timers gone, the new outbox
/// entries, timers and history. Each guard is a conditional statement whose changed
/// rows are counted; `None` when one matched fewer rows than it guards, and then the
/// caller must roll back what was written. The new outbox ids, per step.
async fn write_steps(tx: &mut Tx, commits: &[StepCommit]) -> StoreResult<Option<Vec<Vec<Uuid>>>> {
    let updates: Vec<&StepCommit> = commits
        .iter()
        .filter(|c| c.expected_version.is_some())
        .collect();
    let inserts: Vec<&StepCommit> = commits
        .iter()
        .filter(|c| c.expected_version.is_none())
        .collect();
    for slice in updates.chunks(MAX_ROWS) {
        let update = bind_conversations(
            sql_rows(
                "UPDATE conversations SET contact_name = COALESCE(v.column3, contact_name), state = v.column4, \
                 status = v.column5, flow = v.column6, step = v.column7, flow_version = v.column8, \
                 last_message_at = COALESCE(v.column9, last_message_at), updated_at = v.column10, \
                 version = version + 1 FROM (VALUES ",
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                slice.len(),
                ") AS v WHERE conversations.bot_id = v.column1 AND conversations.contact = v.column2 \
                 AND conversations.version = v.column11",
            ),
            slice,
        );
        if update.execute(&mut *tx).await? != slice.len() as u64 {
            return Ok(None);
        }
    }
    for slice in inserts.chunks(MAX_ROWS) {
        let insert = bind_conversations(
            sql_rows(
                "INSERT INTO conversations (bot_id, contact, contact_name, state, status, flow, step, \
                 flow_version, last_message_at, updated_at, version) SELECT v.column1, v.column2, v.column3, \
                 v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, v.column11 + 1 \
                 FROM (VALUES ",
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                slice.len(),
                ") AS v WHERE v.column1 IS NOT NULL ON CONFLICT (bot_id, contact) DO NOTHING",
            ),
            slice,
        );
        if insert.execute(&mut *tx).await? != slice.len() as u64 {
            return Ok(None);
        }
    }
    let processed: Vec<(Uuid, DateTime<Utc>)> = commits
        .iter()
        .filter_map(|c| c.processed_inbound.map(|id| (id, c.now)))
        .collect();
    for slice in processed.chunks(MAX_ROWS) {
        let mut update = sql_rows(
            "UPDATE messages SET state = 'processed', updated_at = v.column2 FROM (VALUES ",
            "($1, $2)",
            slice.len(),
            ") AS v WHERE messages.id = v.column1 AND messages.state = 'received'",
        );
        for (id, at) in slice {
            update = update.bind(*id).bind(*at);
        }
        if update.execute(&mut *tx).await? != slice.len() as u64 {
            return Ok(None);
        }
    }
    // Timers are rare on the message path: a statement each.
    for c in commits {
        if let Some(timer) = c.fired_timer
            && delete_timer(tx, c, timer).await? == 0
        {
            return Ok(None);
        }
    }
    for c in commits {
        for timer in &c.timers_remove {
            delete_timer(tx, c, *timer).await?;
        }
        for timer in &c.timers_add {
            sql(
                "INSERT INTO flow_timers (bot_id, contact, timer_id, kind, due_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (bot_id, contact, timer_id) DO UPDATE SET kind = excluded.kind, due_ms = excluded.due_ms",
            )
            .bind(c.bot_id)
            .bind(&c.contact)
            .bind(i64::try_from(timer.timer_id).unwrap_or(i64::MAX))
            .bind(&timer.kind)
            .bind(timer.due_ms)
            .execute(&mut *tx)
            .await?;
        }
    }
    let ids: Vec<Vec<Uuid>> = commits
        .iter()
        .map(|c| c.outbound.iter().map(|_| Uuid::now_v7()).collect())
        .collect();
    let outbound: Vec<(&StepCommit, &NewOutbound, Uuid)> = commits
        .iter()
        .zip(&ids)
        .flat_map(|(c, ids)| {
            c.outbound
                .iter()
                .zip(ids)
                .map(move |(out, id)| (c, out, *id))
        })
        .collect();
    for slice in outbound.chunks(MAX_ROWS) {
        let mut insert = sql_rows(
            "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, next_attempt_ms, \
             created_at, updated_at) SELECT v.column1, v.column2, v.column3, v.column4, 'out', v.column5, \
             'pending', v.column6, v.column7, v.column7 FROM (VALUES ",
            "($1, $2, $3, $4, $5, $6, $7)",
            slice.len(),
            ") AS v WHERE v.column1 IS NOT NULL",
        );
        for (c, out, id) in slice {
            let due = c
                .now
                .timestamp_millis()
                .saturating_add(i64::try_from(out.delay_ms).unwrap_or(i64::MAX));
            insert = insert
                .bind(*id)
                .bind(c.bot_id)
                .bind(c.tenant_id)
                .bind(&c.contact)
                .bind(Json(&out.body))
                .bind(due)
                .bind(c.now);
        }
        insert.execute(&mut *tx).await?;
    }
    // The history: each inbound message processed, each new entry pending.
    let events: Vec<(Uuid, &str, Option<String>, DateTime<Utc>)> = commits
        .iter()
        .filter_map(|c| c.processed_inbound.map(|id| (id, "processed", None, c.now)))
        .chain(
            outbound
                .iter()
                .map(|(c, _, id)| (*id, "pending", None, c.now)),
        )
        .collect();
    add_events(tx, &events).await?;
    for c in commits {
        for (kind, data) in &c.events {
            super::events::append_event(tx, c.tenant_id, kind, data, c.now).await?;
        }
        for (order, vars) in &c.orders {
            write_flow_order(tx, c, order, vars).await?;
        }
    }
    Ok(Some(ids))
}

/// Binds each step's conversation row: the eleven values both conversation statements
/// of [`write_steps`] take.
fn bind_conversations(mut statement: Sql, commits: &[&StepCommit]) -> Sql {
    for c in commits {
        statement = statement
            .bind(c.bot_id)
            .bind(&c.contact)
            .bind(&c.contact_name)
            .bind(Json(&c.state))
            .bind(c.status)
            .bind(&c.flow)
            .bind(&c.step)
            .bind(c.flow_version.map(i64::from))
            .bind(c.last_message_at)
            .bind(c.now)
            .bind(c.expected_version.unwrap_or(0));
    }
    statement
}

async fn delete_timer(tx: &mut Tx, c: &StepCommit, timer: u64) -> StoreResult<u64> {
    Ok(
        sql("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3")
            .bind(c.bot_id)
            .bind(&c.contact)
            .bind(i64::try_from(timer).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?,
    )
}

#[async_trait]
impl ConversationStore for SqlStore {
    async fn conversation_row(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationRow>> {
        let row = sql("SELECT state, contact_name, version FROM conversations WHERE bot_id = $1 AND contact = $2")
            .bind(bot_id)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(ConversationRow {
                state: row.try_get::<Json<serde_json::Value>>("state")?.0,
                contact_name: row.try_get("contact_name")?,
                version: row.try_get("version")?,
            })
        })
        .transpose()
    }

    async fn commit_step(&self, c: &StepCommit) -> StoreResult<Option<Vec<Uuid>>> {
        let mut tx = self.write().await?;
        // A refused guard drops the transaction (rolled back): the caller runs the step
        // again on fresh state.
        let Some(mut ids) = write_steps(&mut tx, std::slice::from_ref(c)).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok(ids.pop())
    }

    async fn commit_steps(&self, commits: &[StepCommit]) -> StoreResult<Vec<Option<Vec<Uuid>>>> {
        if let [one] = commits {
            return Ok(vec![self.commit_step(one).await?]);
        }
        let mut tx = self.write().await?;
        if let Some(ids) = write_steps(&mut tx, commits).await? {
            tx.commit().await?;
            return Ok(ids.into_iter().map(Some).collect());
        }
        // A guard refused a step (rare: its conversation or message changed meanwhile).
        // The batch is rolled back and each step written alone, so that the others are
        // not held up and no savepoints cost the common case.
        drop(tx);
        let mut alone = Vec::with_capacity(commits.len());
        for c in commits {
            alone.push(self.commit_step(c).await?);
        }
        Ok(alone)
    }

    async fn reset_conversation(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        sql("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2")
            .bind(bot_id)
            .bind(contact)
            .execute(&mut tx)
            .await?;
        let deleted = sql("DELETE FROM conversations WHERE bot_id = $1 AND contact = $2")
            .bind(bot_id)
            .bind(contact)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn conversations_page(
        &self,
        bot_id: Uuid,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>> {
        let rows = sql(
            "SELECT contact, contact_name, status, flow, step, flow_version, last_message_at, updated_at \
             FROM conversations WHERE bot_id = $1 AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR flow = $3) AND ($4 IS NULL OR substr(contact, 1, length($4)) = $4) \
             AND ($5 IS NULL OR updated_at >= $5) AND ($6 IS NULL OR updated_at < $6) \
             AND ($7 IS NULL OR contact > $7) ORDER BY contact LIMIT $8",
        )
        .bind(bot_id)
        .bind(filter.status.as_deref())
        .bind(filter.flow.as_deref())
        .bind(filter.contact.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn list_conversations(&self, bot_id: Uuid) -> StoreResult<Vec<ConversationSummary>> {
        let rows = sql(
            "SELECT contact, contact_name, status, flow, step, flow_version, last_message_at, updated_at \
             FROM conversations WHERE bot_id = $1 ORDER BY updated_at DESC, contact",
        )
        .bind(bot_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn conversation(
        &self,
        bot_id: Uuid,
        contact: &str,
    ) -> StoreResult<Option<ConversationDetail>> {
        let row = sql(
            "SELECT contact, contact_name, status, flow, step, flow_version, last_message_at, updated_at, state \
             FROM conversations WHERE bot_id = $1 AND contact = $2",
        )
        .bind(bot_id)
        .bind(contact)
        .fetch_optional(&self.pool)
        .await?;
        let messages = sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE bot_id = $1 AND contact = $2 ORDER BY seq"
        ))
        .bind(bot_id)
        .bind(contact)
        .fetch_all(&self.pool)
        .await?;
        let transcript = messages
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let (summary, state) = match row {
            Some(row) => (
                summary_from_row(&row)?,
                row.try_get::<Json<serde_json::Value>>("state")?.0,
            ),
            None if transcript.is_empty() => return Ok(None),
            None => (
                ConversationSummary {
                    contact: contact.to_owned(),
                    contact_name: None,
                    status: "idle".into(),
                    flow: None,
                    step: None,
                    flow_version: None,
                    last_message_at: None,
                    updated_at: transcript.last().map_or_else(Utc::now, |m| m.updated_at),
                },
                serde_json::Value::Null,
            ),
        };
        Ok(Some(ConversationDetail {
            summary,
            state,
            transcript,
        }))
    }

    async fn conversations_on_version(&self, bot_id: Uuid, version: u32) -> StoreResult<u64> {
        let count: i64 = sql(
            "SELECT COUNT(*) FROM conversations WHERE bot_id = $1 AND flow_version = $2 AND status <> 'idle'",
        )
        .bind(bot_id)
        .bind(i64::from(version))
        .fetch_scalar(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn waiting_http(&self) -> StoreResult<Vec<(Uuid, String)>> {
        let rows = sql("SELECT bot_id, contact FROM conversations WHERE status = 'waiting_http'")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<Uuid>("bot_id")?, row.try_get("contact")?)))
            .collect()
    }

    async fn contact_idle(&self, bot_id: Uuid, contact: &str) -> StoreResult<bool> {
        let busy: i64 = sql(
            "SELECT COUNT(*) FROM messages WHERE bot_id = $1 AND contact = $2 \
             AND ((direction = 'in' AND state = 'received') OR (direction = 'out' AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL))))",
        )
        .bind(bot_id)
        .bind(contact)
        .fetch_scalar(&self.pool)
        .await?;
        Ok(busy == 0)
    }
}

/// Writes an order a step asked for, inside a savepoint: a refusal by the catalogue
/// (unknown SKU, short stock) undoes only the order, and the step commits without it.
async fn write_flow_order(
    tx: &mut Tx,
    c: &StepCommit,
    order: &dash_core::commerce::NewOrder,
    vars: &serde_json::Map<String, serde_json::Value>,
) -> StoreResult<()> {
    sql("SAVEPOINT flow_order").execute(&mut *tx).await?;
    match super::commerce::insert_order(tx, c.tenant_id, Some(c.bot_id), "flow", order, vars, c.now)
        .await
    {
        Ok(written) => {
            sql("RELEASE SAVEPOINT flow_order")
                .execute(&mut *tx)
                .await?;
            tracing::info!(bot_id = %c.bot_id, order = %written.id, "order created by a flow");
            Ok(())
        }
        Err(super::StoreError::Conflict { message, .. }) => {
            sql("ROLLBACK TO SAVEPOINT flow_order")
                .execute(&mut *tx)
                .await?;
            sql("RELEASE SAVEPOINT flow_order")
                .execute(&mut *tx)
                .await?;
            tracing::warn!(bot_id = %c.bot_id, reason = message, "a flow's order was refused");
            Ok(())
        }
        Err(err) => Err(err),
    }
}
