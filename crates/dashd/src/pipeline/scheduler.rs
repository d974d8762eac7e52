//! The scheduler: fires flow timers (idle reminders, conversation expiry) when they are
//! due, including timers that fell due while dashd was not running. Timers are rows; a
//! worker deletes a timer's row in the same transaction as the step it causes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Inner, Work};

/// Timers handed to workers per round.
const BATCH: u32 = 256;

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    loop {
        if inner.shutdown.is_cancelled() {
            break;
        }
        let now_ms = inner.clock.now_ms();
        let due = match inner.store.due_timers(now_ms, BATCH).await {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "cannot read flow timers; retrying in 1 s");
                wait(&inner, Duration::from_secs(1)).await;
                continue;
            }
        };
        if !due.is_empty() {
            // Wait for this round to be handled before reading again, so no timer is
            // handed out twice.
            let mut handled = Vec::with_capacity(due.len());
            for timer in due {
                let (done, rx) = oneshot::channel();
                inner
                    .submit(Work::Timer {
                        bot_id: timer.bot_id,
                        contact: timer.contact,
                        timer_id: timer.timer_id,
                        done: Some(done),
                    })
                    .await;
                handled.push(rx);
            }
            let mut failed = 0;
            for rx in handled {
                match tokio::time::timeout(Duration::from_secs(30), rx).await {
                    Ok(Ok(true)) => {}
                    _ => failed += 1,
                }
            }
            // A failed timer was moved to a later due time by its worker; should that
            // too have failed, do not pick it again at once.
            if failed > 0 {
                wait(&inner, Duration::from_secs(1)).await;
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
