//! Periodic health probes: every `providers.probe_interval_s`, each provider in each
//! bot's chain is asked whether it can send (Graph phone-number lookup, Twilio account
//! fetch, Evolution connection state, bridge session status). The outcome feeds the
//! (bot, provider) breaker: a broken provider opens it at once, a good probe after the
//! cooldown closes it, so traffic returns without waiting for a customer's message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dash_core::provider::{ErrorClass, ProviderKind, chain_of};

use super::Inner;

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let interval = inner.config.providers.probe_interval_s;
    if interval == 0 {
        return;
    }
    let period = Duration::from_secs(interval);
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if let Err(err) = probe_all(&inner).await {
            tracing::warn!(error = %err, "cannot run provider health probes");
        }
    }
}

/// Probes every configured provider of every bot's chain once.
pub(crate) async fn probe_all(inner: &Inner) -> anyhow::Result<()> {
    for bot in inner.store.list_bots(None).await? {
        let policy = inner.fallback_policy(&bot);
        for kind in chain_of(&bot.settings) {
            if kind == ProviderKind::Sandbox || inner.shutdown.is_cancelled() {
                continue;
            }
            let Ok(client) = inner.providers.client(bot.id, kind).await else {
                continue;
            };
            let started = Instant::now();
            let outcome = client.probe().await;
            let now = inner.clock.now();
            match outcome {
                Ok(_) => {
                    if inner
                        .providers
                        .probe_succeeded(bot.id, kind, policy, started.elapsed(), now)
                    {
                        tracing::info!(bot = %bot.path(), provider = %kind, "provider healthy again");
                        inner.dispatch.notify_one();
                    }
                }
                Err(err) if err.class == ErrorClass::ProviderBroken => {
                    inner
                        .providers
                        .trip(bot.id, kind, policy, &err.message, now);
                }
                Err(err) => inner.providers.report(bot.id, kind, policy, Err(&err), now),
            }
        }
    }
    Ok(())
}
