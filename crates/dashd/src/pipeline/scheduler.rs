//! The scheduler: fires flow timers (idle reminders, conversation expiry) when they are
//! due, including timers that fell due while dashd was not running. Timers are rows; a
//! worker deletes a timer's row in the same transaction as the step it causes.
//!
//! Taking a due timer is a claim: its due time moves one lease ahead
//! (`dispatcher.lease_ms`) in the same statement, so it is handed out once, and comes
//! back by itself if its step never finishes (dashd died). The scheduler never waits for
//! the steps it starts: each runs in its conversation's task within its tenant's share,
//! so one tenant's slow timers never delay another's. A timer whose step fails is moved
//! to a later time by its worker (backoff), then dropped after `pipeline.max_attempts`.

use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Work};

/// Timers taken per round.
const BATCH: u32 = 256;

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let lease = i64::try_from(inner.config.dispatcher.lease_ms).unwrap_or(i64::MAX);
    loop {
        if inner.shutdown.is_cancelled() {
            break;
        }
        let now_ms = inner.clock.now_ms();
        let due = match inner
            .store
            .claim_due_timers(now_ms, now_ms.saturating_add(lease), BATCH)
            .await
        {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "cannot read flow timers; retrying in 1 s");
                wait(&inner, Duration::from_secs(1)).await;
                continue;
            }
        };
        if !due.is_empty() {
            for timer in due {
                inner.submit(Work::Timer {
                    bot_id: timer.bot_id,
                    contact: timer.contact,
                    timer_id: timer.timer_id,
                });
            }
            continue;
        }
        let next = inner.store.next_timer_due().await.ok().flatten();
        let sleep = next.map_or(60_000, |at| at.saturating_sub(now_ms).clamp(1, 60_000));
        wait(
            &inner,
            Duration::from_millis(u64::try_from(sleep).unwrap_or(60_000)),
        )
        .await;
    }
}

async fn wait(inner: &Inner, duration: Duration) {
    tokio::select! {
        () = inner.shutdown.cancelled() => {}
        () = inner.timers.notified() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
