//! The dispatcher: sends outbox entries through each bot's provider chain, in order per
//! contact, within per-bot and per-tenant rate limits, retrying retryable failures with
//! exponential backoff and jitter until `max_attempts`, then `dead`. It sleeps until the
//! next entry is due or something changes; it never polls in a tight loop.
//!
//! An entry is claimed under a lease naming this dashd; the outcome is recorded only if
//! the entry is still ours (an operator cannot cancel a `processing` entry, and a lease
//! taken back is not ours). Sends are tracked tasks: on shutdown no new entry is
//! claimed, and the sends in flight finish and are recorded before the pool closes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dash_core::BotRef;
use dash_core::provider::{ProviderKind, chain_of, rate_limit_of};
use dash_core::ratelimit::{SlidingWindow, backoff};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Inner;
use super::provider::{Content, SendError, SendRequest};
use crate::store::pipeline::{Lease, OutboxItem};

/// Entries fetched per round.
const BATCH: u32 = 256;
/// How long a bot's chain and limit are trusted before being read again.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// What the dispatcher needs of a bot.
#[derive(Debug, Clone)]
struct BotSend {
    chain: Vec<ProviderKind>,
    limit: u32,
    /// False while the bot is paused or its tenant suspended: its messages wait.
    active: bool,
    read_at: Instant,
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let config = inner.config.dispatcher.clone();
    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    let origin = Instant::now();
    let mut per_bot: HashMap<Uuid, SlidingWindow> = HashMap::new();
    let mut per_tenant: HashMap<Uuid, SlidingWindow> = HashMap::new();
    let mut bots: HashMap<Uuid, BotSend> = HashMap::new();
    let mut epoch = 0;
    loop {
        if inner.shutdown.is_cancelled() {
            break;
        }
        let current = inner.bots_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if current != epoch {
            bots.clear();
            epoch = current;
        }
        let now_ms = inner.clock.now_ms();
        let due = match inner.store.due_outbound(now_ms, BATCH).await {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the outbox; retrying in 1 s");
                sleep_or_wake(&inner, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut started = 0;
        for item in due {
            if inner.shutdown.is_cancelled() {
                break;
            }
            let Some(settings) =
                bot_settings(&inner, &mut bots, item.bot_id, config.bot_rate_per_minute).await
            else {
                continue;
            };
            if !settings.active {
                // Held, not dropped: looked at again in a minute.
                if let Err(err) = inner
                    .store
                    .defer(item.id, now_ms.saturating_add(60_000))
                    .await
                {
                    tracing::error!(error = %err, "cannot hold a message of a paused bot");
                }
                continue;
            }
            let elapsed = origin.elapsed();
            let bot_window = per_bot
                .entry(item.bot_id)
                .or_insert_with(|| SlidingWindow::new(settings.limit, Duration::from_secs(60)));
            bot_window.set_limit(settings.limit);
            let mut tenant_window = (config.tenant_rate_per_minute > 0).then(|| {
                per_tenant.entry(item.tenant_id).or_insert_with(|| {
                    SlidingWindow::new(config.tenant_rate_per_minute, Duration::from_secs(60))
                })
            });
            // A limit of 0 means no limit.
            let bot_at = if settings.limit == 0 {
                Some(elapsed)
            } else {
                bot_window.next_allowed(elapsed)
            };
            let tenant_at = match tenant_window.as_mut() {
                Some(window) => window.next_allowed(elapsed),
                None => Some(elapsed),
            };
            let allowed_at = bot_at.zip(tenant_at).map(|(a, b)| a.max(b));
            match allowed_at {
                Some(at) if at <= elapsed => {}
                Some(at) => {
                    let wait = i64::try_from((at - elapsed).as_millis()).unwrap_or(i64::MAX);
                    if let Err(err) = inner
                        .store
                        .defer(item.id, now_ms.saturating_add(wait))
                        .await
                    {
                        tracing::error!(error = %err, "cannot postpone a rate-limited message");
                    }
                    continue;
                }
                None => continue,
            }
            // A place for the send first: waiting for one must not eat into the lease, and
            // a stop meanwhile must not start a send.
            let slot = tokio::select! {
                () = inner.shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            // Each claim has its own token: an outcome recorded late (after the lease
            // ran out and the entry was claimed again) can never pass for the new claim's.
            let claim = format!("{}/{}", inner.owner, Uuid::new_v4().simple());
            let lease = Lease {
                owner: &claim,
                until_ms: inner
                    .clock
                    .now_ms()
                    .saturating_add(i64::try_from(config.lease_ms).unwrap_or(i64::MAX)),
            };
            match inner.store.claim(item.id, &lease, inner.clock.now()).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot claim an outbox entry");
                    continue;
                }
            }
            if settings.limit > 0 {
                bot_window.record(elapsed);
            }
            if let Some(window) = tenant_window {
                window.record(elapsed);
            }
            let task = inner.clone();
            let chain = settings.chain.clone();
            // Tracked, and not cancelled by shutdown: a send that started finishes and
            // its outcome is recorded.
            inner.in_flight.spawn(async move {
                send(&task, item, &chain, &claim).await;
                drop(slot);
                task.dispatch.notify_one();
            });
            started += 1;
        }
        if started == 0 {
            let next = inner.store.next_outbound_due(now_ms).await.ok().flatten();
            let wait = next.map_or(60_000, |at| at.saturating_sub(now_ms).clamp(1, 60_000));
            sleep_or_wake(
                &inner,
                Duration::from_millis(u64::try_from(wait).unwrap_or(60_000)),
            )
            .await;
        }
    }
}

async fn sleep_or_wake(inner: &Inner, wait: Duration) {
    tokio::select! {
        () = inner.shutdown.cancelled() => {}
        () = inner.dispatch.notified() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

async fn bot_settings(
    inner: &Inner,
    cache: &mut HashMap<Uuid, BotSend>,
    bot_id: Uuid,
    default_limit: u32,
) -> Option<BotSend> {
    if let Some(cached) = cache
        .get(&bot_id)
        .filter(|c| c.read_at.elapsed() < SETTINGS_TTL)
    {
        return Some(cached.clone());
    }
    let bot = inner.store.bot(&BotRef::Id(bot_id)).await.ok()?;
    let tenant_active = inner
        .store
        .tenant(&crate::store::TenantRef::Id(bot.tenant_id))
        .await
        .is_ok_and(|t| t.status == dash_core::TenantStatus::Active);
    let settings = BotSend {
        chain: chain_of(&bot.settings),
        limit: rate_limit_of(&bot.settings).unwrap_or(default_limit),
        active: tenant_active && bot.status == dash_core::BotStatus::Active,
        read_at: Instant::now(),
    };
    // A paused bot is read again each time, so resuming it takes effect at once.
    if settings.active {
        cache.insert(bot_id, settings.clone());
    }
    Some(settings)
}

/// Tries the chain in order: the first success wins; a retryable failure moves on to the
/// next provider; a permanent one stops (the message is wrong, not the provider).
async fn send(inner: &Inner, item: OutboxItem, chain: &[ProviderKind], claim: &str) {
    let request = SendRequest {
        bot_id: item.bot_id,
        to: item.contact.clone(),
        content: Content::Message(item.body.clone()),
        idempotency_key: item.id.to_string(),
    };
    let mut failures = Vec::new();
    for kind in chain {
        let Some(provider) = inner.providers.get(*kind) else {
            failures.push(format!("{kind}: not available in this dashd"));
            continue;
        };
        match provider.send(&request).await {
            Ok(receipt) => {
                record(inner, &item, "sent", true, || {
                    inner.store.mark_sent(
                        item.id,
                        claim,
                        kind.as_str(),
                        &receipt.provider_message_id,
                        inner.clock.now(),
                    )
                })
                .await;
                inner.announce_if_idle(item.bot_id, &item.contact).await;
                return;
            }
            Err(SendError::Permanent(error)) => {
                let error = format!("{kind}: {error}");
                tracing::warn!(message = %item.id, error, "message refused for good");
                record(inner, &item, "refused", true, || {
                    inner
                        .store
                        .mark_failed(item.id, claim, &error, None, inner.clock.now())
                })
                .await;
                inner.announce_if_idle(item.bot_id, &item.contact).await;
                return;
            }
            Err(SendError::Retryable(error)) => failures.push(format!("{kind}: {error}")),
        }
    }
    let config = &inner.config.dispatcher;
    let attempts = item.attempts + 1;
    let error = failures.join("; ");
    let now = inner.clock.now();
    let retry_at = (attempts < config.max_attempts).then(|| {
        let random = Uuid::new_v4().as_u64_pair().0;
        let delay = backoff(
            attempts,
            Duration::from_millis(config.retry_base_ms),
            Duration::from_millis(config.retry_max_ms),
            random,
        );
        now.timestamp_millis()
            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    });
    tracing::warn!(message = %item.id, attempts, error, dead = retry_at.is_none(), "send failed");
    record(inner, &item, "failed", retry_at.is_none(), || {
        inner
            .store
            .mark_failed(item.id, claim, &error, retry_at, now)
    })
    .await;
    inner.announce_if_idle(item.bot_id, &item.contact).await;
}

/// Records a send's outcome, trying a few times over a few seconds when the database
/// fails. If it still cannot, the entry stays `processing` under its lease and is sent
/// again when the lease expires (the only way a message can go twice).
async fn record<F, Fut>(
    inner: &Inner,
    item: &OutboxItem,
    outcome: &str,
    finished: bool,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::store::StoreResult<bool>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match write().await {
            Ok(true) => {
                if finished {
                    inner.backlog.release(item.bot_id);
                }
                return;
            }
            Ok(false) => {
                tracing::warn!(message = %item.id, outcome, "outbox entry no longer ours (its lease was taken back); outcome not recorded");
                return;
            }
            Err(err) if attempt < 5 => {
                tracing::warn!(message = %item.id, outcome, attempt, error = %err, "cannot record a send's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Err(err) => {
                tracing::error!(message = %item.id, outcome, error = %err, "cannot record a send's outcome; the entry is taken back when its lease expires");
            }
        }
    }
}
