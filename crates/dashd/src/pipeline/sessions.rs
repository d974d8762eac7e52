//! Session supervision for the bridge providers: for every bot whose chain has a bridge
//! (with settings), the session is started on its bridge and its state is checked
//! periodically (besides the bridge's own events, which arrive as webhooks). Each state
//! and QR code is stored and streamed ([`super::Pipeline::record_session`]); a session
//! that is not ready is a broken provider for its bot, so its messages fail over; a
//! failed session is restarted with backoff and given up after a limit, with its reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_core::provider::chain_of;
use uuid::Uuid;

use super::{Inner, session_state_name};
use crate::adapter::SessionState;
use crate::store::sessions::SessionReport;

/// Between two checks of every session.
const CHECK_EVERY: Duration = Duration::from_secs(15);
/// Restarts of a failed session before it is left failed for an operator.
const MAX_RESTARTS: u32 = 5;

/// Restart bookkeeping of one (bot, provider).
#[derive(Debug, Clone, Copy)]
struct Restarts {
    count: u32,
    next_at: DateTime<Utc>,
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut restarts: HashMap<(Uuid, String), Restarts> = HashMap::new();
    let mut first = true;
    loop {
        let wait = if first {
            Duration::from_millis(500)
        } else {
            CHECK_EVERY
        };
        first = false;
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(err) = check_all(&inner, &mut restarts).await {
            tracing::warn!(error = %err, "cannot check bridge sessions");
        }
    }
}

async fn check_all(
    inner: &Inner,
    restarts: &mut HashMap<(Uuid, String), Restarts>,
) -> anyhow::Result<()> {
    for bot in inner.store.list_bots(None).await? {
        for kind in chain_of(&bot.settings)
            .into_iter()
            .filter(|k| k.is_bridge())
        {
            if inner.shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(bridge) = inner.providers.bridge(bot.id, kind).await.ok().flatten() else {
                continue;
            };
            let now = inner.clock.now();
            let key = (bot.id, kind.as_str().to_owned());
            let policy = inner.fallback_policy(&bot);
            let status = match bridge.status().await {
                Ok(status) => Some(status),
                // The bridge does not know the session (first start, or it restarted
                // without its data): start it, unless it was logged out on purpose (an
                // operator pairs it again with `dashctl session pair`).
                Err(err)
                    if err.code.as_deref() == Some("session_not_found")
                        || err.code.as_deref() == Some("404") =>
                {
                    let stored = inner
                        .store
                        .bot_sessions(bot.id, Some(kind.as_str()), 0)
                        .await
                        .ok()
                        .and_then(|sessions| sessions.into_iter().next());
                    if stored.is_some_and(|s| s.state == "logged_out") {
                        continue;
                    }
                    bridge.start_session().await.ok()
                }
                Err(err) => {
                    let reason = format!("bridge unreachable: {}", err.message);
                    record(
                        inner,
                        bot.id,
                        kind.as_str(),
                        bridge.session(),
                        SessionState::Disconnected,
                        Some(reason.clone()),
                        None,
                        None,
                        now,
                    )
                    .await;
                    inner.providers.trip(bot.id, kind, policy, &reason, now);
                    None
                }
            };
            let Some(status) = status else { continue };
            let mut state = status.state;
            let mut reason = status.reason.clone();
            if state == SessionState::Failed {
                let entry = restarts.entry(key.clone()).or_insert(Restarts {
                    count: 0,
                    next_at: now,
                });
                if entry.count >= MAX_RESTARTS {
                    reason = Some(format!(
                        "gave up after {MAX_RESTARTS} restarts ({}); dashctl session restart tries again",
                        reason.unwrap_or_else(|| "failed".into())
                    ));
                } else if now >= entry.next_at {
                    entry.count += 1;
                    let backoff = chrono::Duration::seconds(15i64 << entry.count.min(6));
                    entry.next_at = now + backoff;
                    tracing::info!(bot = %bot.path(), provider = %kind, attempt = entry.count, "restarting a failed session");
                    if let Ok(restarted) = bridge.start_session().await {
                        state = restarted.state;
                        reason = restarted.reason;
                    }
                }
            } else if state == SessionState::Ready {
                restarts.remove(&key);
            }
            let qr = if state == SessionState::Qr {
                bridge.qr().await.ok().flatten().map(|qr| qr.qr)
            } else {
                None
            };
            record(
                inner,
                bot.id,
                kind.as_str(),
                bridge.session(),
                state,
                reason.clone(),
                status.phone.clone(),
                qr,
                now,
            )
            .await;
            if state.is_broken() || state == SessionState::Qr || state == SessionState::Initializing
            {
                let why = format!("session {} {}", bridge.session(), session_state_name(state));
                inner.providers.trip(bot.id, kind, policy, &why, now);
            } else if state == SessionState::Ready
                && inner
                    .providers
                    .probe_succeeded(bot.id, kind, policy, Duration::ZERO, now)
            {
                inner.dispatch.notify_one();
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one report's fields
async fn record(
    inner: &Inner,
    bot_id: Uuid,
    provider: &str,
    session: &str,
    state: SessionState,
    reason: Option<String>,
    phone: Option<String>,
    qr: Option<String>,
    at: DateTime<Utc>,
) {
    let report = SessionReport {
        bot_id,
        provider: provider.to_owned(),
        session: session.to_owned(),
        state: session_state_name(state).to_owned(),
        reason,
        phone,
        qr,
        at,
    };
    if let Err(err) = inner.record_session(&report).await {
        tracing::warn!(error = %err, "cannot record a session's state");
    }
}
