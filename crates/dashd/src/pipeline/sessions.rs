//! Session supervision for the providers paired by QR code (the bridges and Evolution):
//! for every bot whose chain has one (with settings), the session is started on its
//! bridge or instance (at start, and as soon as a bot's chain or settings change) and its
//! state is checked periodically (besides the provider's own
//! events, which arrive as webhooks). Each state and QR code is stored and streamed
//! ([`super::Pipeline::record_session`]); a session that is not ready is a broken
//! provider for its bot, so its messages fail over; a failed session is restarted with
//! backoff and given up after a limit, with its reason.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_core::Bot;
use dash_core::provider::{ProviderKind, chain_of};
use uuid::Uuid;

use super::conversations::lock;
use super::{Inner, session_state_name};
use crate::adapter::SessionState;
use crate::adapter::session::{SessionClient, is_unknown_session};
use crate::store::sessions::SessionReport;

/// Between two checks of every session.
const CHECK_EVERY: Duration = Duration::from_secs(15);
/// Restarts of a failed session before it is left failed for an operator.
const MAX_RESTARTS: u32 = 5;

/// Restart bookkeeping of one (bot, provider).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restarts {
    count: u32,
    next_at: DateTime<Utc>,
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
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
            () = inner.sessions_wake.notified() => {
                // Settings often change in a burst (chain, then provider): let it settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if let Err(err) = check_all(&inner).await {
            tracing::warn!(error = %err, "cannot check paired sessions");
        }
    }
}

/// An operator acted on the session: a failed one gets its full count of restarts again.
pub(crate) fn forget_restarts(inner: &Inner, bot_id: Uuid, provider: &str) {
    lock(&inner.session_restarts).remove(&(bot_id, provider.to_owned()));
}

async fn check_all(inner: &Inner) -> anyhow::Result<()> {
    for bot in inner.store.list_bots(None).await? {
        for kind in chain_of(&bot.settings)
            .into_iter()
            .filter(|k| k.is_paired())
        {
            if inner.shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(client) = inner
                .providers
                .session_client(bot.id, kind)
                .await
                .ok()
                .flatten()
            else {
                continue;
            };
            check(inner, &bot, kind, &client).await;
        }
    }
    Ok(())
}

async fn check(inner: &Inner, bot: &Bot, kind: ProviderKind, client: &SessionClient) {
    let now = inner.clock.now();
    let key = (bot.id, kind.as_str().to_owned());
    let policy = inner.fallback_policy(bot);
    let mut status = match client.status().await {
        Ok(status) => status,
        // The bridge does not know the session (first start, or it restarted without
        // its data), or the Evolution instance does not exist: start it, unless it was
        // logged out on purpose (an operator pairs it again with `dashctl session pair`).
        Err(err) if is_unknown_session(&err) => {
            let stored = inner
                .store
                .bot_sessions(bot.id, Some(kind.as_str()), 0)
                .await
                .ok()
                .and_then(|sessions| sessions.into_iter().next());
            if stored.is_some_and(|s| s.state == "logged_out") {
                return;
            }
            match client.start(None).await {
                Ok(status) => status,
                Err(err) => {
                    unreachable(inner, bot, kind, client, &err.message, now).await;
                    return;
                }
            }
        }
        Err(err) => {
            unreachable(inner, bot, kind, client, &err.message, now).await;
            return;
        }
    };
    if status.state == SessionState::Failed {
        let restart = {
            let mut restarts = lock(&inner.session_restarts);
            let entry = restarts.entry(key.clone()).or_insert(Restarts {
                count: 0,
                next_at: now,
            });
            if entry.count >= MAX_RESTARTS {
                status.reason = Some(format!(
                    "gave up after {MAX_RESTARTS} restarts ({}); dashctl session restart tries again",
                    status.reason.take().unwrap_or_else(|| "failed".into())
                ));
                None
            } else if now >= entry.next_at {
                entry.count += 1;
                entry.next_at = now + chrono::Duration::seconds(15i64 << entry.count.min(6));
                Some(entry.count)
            } else {
                None
            }
        };
        if let Some(attempt) = restart {
            tracing::info!(bot = %bot.path(), provider = %kind, attempt, "restarting a failed session");
            if let Ok(restarted) = client.start(None).await {
                status = restarted;
            }
        }
    } else if status.state == SessionState::Ready {
        forget_restarts(inner, bot.id, kind.as_str());
    }
    let state = status.state;
    record(inner, client.report(bot.id, kind, status, now).await).await;
    if state == SessionState::Ready {
        if inner
            .providers
            .probe_succeeded(bot.id, kind, policy, Duration::ZERO, now)
        {
            inner.dispatch.notify_one();
        }
    } else if state != SessionState::Authenticated {
        let why = format!("session {} {}", client.session(), session_state_name(state));
        inner.providers.trip(bot.id, kind, policy, &why, now);
    }
}

/// The bridge or instance did not answer: the session counts as disconnected.
async fn unreachable(
    inner: &Inner,
    bot: &Bot,
    kind: ProviderKind,
    client: &SessionClient,
    message: &str,
    now: DateTime<Utc>,
) {
    let what = if kind.is_bridge() {
        "bridge"
    } else {
        "instance"
    };
    let reason = format!("{what} unreachable: {message}");
    record(
        inner,
        SessionReport {
            bot_id: bot.id,
            provider: kind.as_str().to_owned(),
            session: client.session().to_owned(),
            state: session_state_name(SessionState::Disconnected).to_owned(),
            reason: Some(reason.clone()),
            phone: None,
            qr: None,
            qr_expires_at: None,
            pairing_code: None,
            at: now,
        },
    )
    .await;
    let policy = inner.fallback_policy(bot);
    inner.providers.trip(bot.id, kind, policy, &reason, now);
}

async fn record(inner: &Inner, report: SessionReport) {
    if let Err(err) = inner.record_session(&report).await {
        tracing::warn!(error = %err, "cannot record a session's state");
    }
}
