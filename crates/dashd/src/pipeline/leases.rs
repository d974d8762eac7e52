//! Periodic upkeep of owned work: outbox entries whose lease expired (their dispatcher
//! died, or could not record the outcome) are taken back and sent again, and the
//! backlog's counts are re-read from the database so they can never drift for long.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;

/// Runs until shutdown, every quarter of the lease.
pub(crate) async fn run(inner: Arc<Inner>) {
    let every = Duration::from_millis((inner.config.dispatcher.lease_ms / 4).max(250));
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        match inner.store.reclaim_leases(false, inner.clock.now()).await {
            Ok(0) => {}
            Ok(taken) => {
                tracing::warn!(
                    messages = taken,
                    "outbox entries whose lease expired are sent again"
                );
                inner.dispatch.notify_one();
            }
            Err(err) => tracing::error!(error = %err, "cannot look for expired leases"),
        }
        match inner.store.inbound_backlog().await {
            Ok(counts) => inner.backlog.resync(counts),
            Err(err) => tracing::warn!(error = %err, "cannot count the inbound backlog"),
        }
    }
}
