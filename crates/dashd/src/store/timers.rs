//! Flow timers: one row per (bot, contact, timer), taken by one scheduler at a time.

use async_trait::async_trait;
use uuid::Uuid;

use super::sql::{Row, sql};
use super::{SqlStore, StoreResult};

/// A flow timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub bot_id: Uuid,
    pub contact: String,
    pub timer_id: u64,
}

/// Storage of flow timers.
#[async_trait]
pub trait TimerStore: Send + Sync {
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
}

fn due_timer_from_row(row: &Row) -> StoreResult<DueTimer> {
    Ok(DueTimer {
        bot_id: row.try_get("bot_id")?,
        contact: row.try_get("contact")?,
        timer_id: u64::try_from(row.try_get::<i64>("timer_id")?).unwrap_or(0),
    })
}

#[async_trait]
impl TimerStore for SqlStore {
    async fn due_timers(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<DueTimer>> {
        let rows = sql("SELECT bot_id, contact, timer_id FROM flow_timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2")
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(due_timer_from_row).collect()
    }

    async fn claim_due_timers(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueTimer>> {
        let mut tx = self.write().await?;
        // The outer `due_ms <= $1` is checked again on the locked row (PostgreSQL
        // re-reads it after a concurrent update), so a timer is taken once.
        let rows = sql(
            "UPDATE flow_timers SET due_ms = $2 \
             WHERE due_ms <= $1 AND (bot_id, contact, timer_id) IN \
               (SELECT bot_id, contact, timer_id FROM flow_timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $3) \
             RETURNING bot_id, contact, timer_id",
        )
        .bind(now_ms)
        .bind(until_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(due_timer_from_row).collect()
    }

    async fn timer_exists(&self, bot_id: Uuid, contact: &str, timer_id: u64) -> StoreResult<bool> {
        let found: i64 = sql(
            "SELECT COUNT(*) FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3",
        )
        .bind(bot_id)
        .bind(contact)
        .bind(i64::try_from(timer_id).unwrap_or(i64::MAX))
        .fetch_scalar(&self.pool)
        .await?;
        Ok(found > 0)
    }

    async fn timer_failed(
        &self,
        bot_id: Uuid,
        contact: &str,
        timer_id: u64,
        retry_at: &(dyn Fn(u32) -> Option<i64> + Send + Sync),
    ) -> StoreResult<u32> {
        let mut tx = self.write().await?;
        let timer = i64::try_from(timer_id).unwrap_or(i64::MAX);
        let attempts: Option<i64> = sql(
            "UPDATE flow_timers SET attempts = attempts + 1 WHERE bot_id = $1 AND contact = $2 AND timer_id = $3 RETURNING attempts",
        )
        .bind(bot_id)
        .bind(contact)
        .bind(timer)
        .fetch_optional_scalar(&mut tx)
        .await?;
        let Some(attempts) = attempts.map(|n| u32::try_from(n).unwrap_or(u32::MAX)) else {
            tx.commit().await?;
            return Ok(0);
        };
        let at = retry_at(attempts);
        match at {
            Some(_) => sql("UPDATE flow_timers SET due_ms = $4 WHERE bot_id = $1 AND contact = $2 AND timer_id = $3"),
            None => sql("DELETE FROM flow_timers WHERE bot_id = $1 AND contact = $2 AND timer_id = $3 AND $4 = $4"),
        }
        .bind(bot_id)
        .bind(contact)
        .bind(timer)
        .bind(at.unwrap_or(0))
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(attempts)
    }

    async fn next_timer_due(&self) -> StoreResult<Option<i64>> {
        Ok(sql("SELECT MIN(due_ms) FROM flow_timers")
            .fetch_scalar(&self.pool)
            .await?)
    }
}
