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
use dash_core::breaker::Admission;
use dash_core::provider::{ErrorClass, ProviderKind, chain_of, rate_limit_of};
use dash_core::ratelimit::{SlidingWindow, backoff};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Inner;
use crate::adapter::{Content, OutboundMessage, Recipient, SendError, e164};
use crate::store::outbox::SendAttempt;
use crate::store::outbox::{Lease, OutboxItem, SentMark};

/// Entries fetched per round.
const BATCH: u32 = 256;
/// How long a bot's chain and limit are trusted before being read again.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// What the dispatcher needs of a bot.
#[derive(Debug, Clone)]
struct BotSend {
    chain: Vec<ProviderKind>,
    /// Breaker threshold and cooldown (ms).
    policy: (u32, i64),
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
        // A batch smaller than asked for holds everything due now: once it is dealt
        // with, the dispatcher waits for a wake (new work, a finished send) or for the
        // next deferred entry, instead of asking again at once.
        let whole = due.len() < BATCH as usize;
        let mut started = 0;
        let mut ready: Vec<Ready> = Vec::new();
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
            // Every provider of the chain behind an open breaker: the message waits (not an
            // attempt) until the first one may be probed.
            if let Some(reopen_ms) = all_open(&inner, item.bot_id, &settings, inner.clock.now()) {
                if let Err(err) = inner.store.defer(item.id, reopen_ms).await {
                    tracing::error!(error = %err, "cannot hold a message while its providers are down");
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
            // a stop meanwhile must not start a send. With no place free, what is ready
            // is claimed and started first (it frees places as it finishes).
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    started += launch(&inner, &mut ready, &config).await;
                    tokio::select! {
                        () = inner.shutdown.cancelled() => break,
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                    }
                }
            };
            // Counted against the limits now, so the next entries of this round see it
            // (a claim lost to another dashd counts too: the limit errs on the safe side).
            if settings.limit > 0 {
                bot_window.record(elapsed);
            }
            if let Some(window) = tenant_window {
                window.record(elapsed);
            }
            ready.push(Ready {
                item,
                settings: settings.clone(),
                slot,
            });
        }
        started += launch(&inner, &mut ready, &config).await;
        if started == 0 || whole {
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

/// An entry that passed the limits and holds a place to be sent from.
struct Ready {
    item: OutboxItem,
    settings: BotSend,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// Claims the ready entries in one transaction, each under a lease of its own, and starts
/// the sends of those claimed; returns how many started.
async fn launch(
    inner: &Arc<Inner>,
    ready: &mut Vec<Ready>,
    config: &dash_core::config::DispatcherConfig,
) -> usize {
    // Stopping: no new send starts; the entries stay due for the next start.
    if ready.is_empty() || inner.shutdown.is_cancelled() {
        ready.clear();
        return 0;
    }
    // Each claim has its own token: an outcome recorded late (after the lease ran out
    // and the entry was claimed again) can never pass for the new claim's.
    let tokens: Vec<String> = ready
        .iter()
        .map(|_| format!("{}/{}", inner.owner, Uuid::new_v4().simple()))
        .collect();
    let until_ms = inner
        .clock
        .now_ms()
        .saturating_add(i64::try_from(config.lease_ms).unwrap_or(i64::MAX));
    let claims: Vec<(Uuid, Lease<'_>)> = ready
        .iter()
        .zip(&tokens)
        .map(|(r, token)| {
            (
                r.item.id,
                Lease {
                    owner: token,
                    until_ms,
                },
            )
        })
        .collect();
    let taken = match inner.store.claim_batch(&claims, inner.clock.now()).await {
        Ok(taken) => taken,
        Err(err) => {
            tracing::error!(error = %err, entries = ready.len(), "cannot claim outbox entries");
            ready.clear();
            return 0;
        }
    };
    let mut started = 0;
    for ((entry, claim), taken) in ready.drain(..).zip(tokens).zip(taken) {
        if !taken {
            continue;
        }
        let task = inner.clone();
        let Ready {
            item,
            settings,
            slot,
        } = entry;
        // Tracked, and not cancelled by shutdown: a send that started finishes and its
        // outcome is recorded.
        inner.in_flight.spawn(async move {
            send(&task, item, &settings, &claim).await;
            drop(slot);
            task.dispatch.notify_one();
        });
        started += 1;
    }
    started
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
        policy: inner.fallback_policy(&bot),
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

/// When every provider of the bot's chain is behind an open breaker (or one whose probe
/// is under way), the time (Unix ms) the first lets a send through; None when one is
/// available now.
fn all_open(
    inner: &Inner,
    bot_id: Uuid,
    settings: &BotSend,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<i64> {
    let mut earliest: Option<i64> = None;
    for kind in &settings.chain {
        let until = inner.providers.blocked_until(bot_id, *kind, now)?;
        earliest = Some(earliest.map_or(until, |e| e.min(until)));
    }
    earliest
}

/// Who an outbox entry goes to: the contact's identifiers from the contacts table, or
/// what its key is (a phone number, a BSUID, a LID) for contacts known by one.
async fn recipient(inner: &Inner, bot_id: Uuid, contact: &str) -> Recipient {
    if let Ok(Some(identity)) = inner.store.contact_by_key(bot_id, contact).await {
        return Recipient {
            phone: identity.phone,
            bsuid: identity.bsuid,
            lid: identity.lid,
        };
    }
    if contact.ends_with("@lid") {
        return Recipient {
            lid: Some(contact.to_owned()),
            ..Recipient::default()
        };
    }
    match e164(contact) {
        Some(phone) => Recipient {
            phone: Some(phone),
            ..Recipient::default()
        },
        // A BSUID (`US.1349...`) or the sandbox's free-form contact names.
        None => Recipient {
            bsuid: contact.contains('.').then(|| contact.to_owned()),
            phone: (!contact.contains('.')).then(|| contact.to_owned()),
            lid: None,
        },
    }
}

/// Tries the chain in order, skipping providers whose breaker is open: the first success
/// wins; a retryable failure or a broken provider moves on to the next provider at once;
/// a permanent failure stops (the message is wrong, not the provider). Every attempt is
/// recorded with its provider, outcome, error code and latency.
async fn send(inner: &Inner, item: OutboxItem, settings: &BotSend, claim: &str) {
    let message = OutboundMessage {
        bot_id: item.bot_id,
        message_id: item.id,
        to: recipient(inner, item.bot_id, &item.contact).await,
        content: Content::from_body(&item.body),
    };
    let mut failures = Vec::new();
    let mut tried = false;
    for kind in &settings.chain {
        let kind = *kind;
        let now = inner.clock.now();
        if inner
            .providers
            .admit(item.bot_id, kind, settings.policy, now)
            == Admission::Refused
        {
            failures.push(format!("{kind}: circuit open"));
            attempt(inner, &item, kind, "skipped", None, Duration::ZERO).await;
            continue;
        }
        tried = true;
        let slot = inner.providers.send_slot(item.bot_id, kind).await;
        let started = Instant::now();
        let result = match inner.providers.client(item.bot_id, kind).await {
            Ok(client) => client.send(&message).await,
            Err(err) => Err(err),
        };
        let latency = started.elapsed();
        drop(slot);
        let now = inner.clock.now();
        match result {
            Ok(receipt) => {
                inner
                    .providers
                    .report(item.bot_id, kind, settings.policy, Ok(latency), now);
                // The attempt and the sent mark in one transaction.
                let sent = attempt_of(inner, kind, "sent", None, latency);
                let mark = SentMark {
                    id: item.id,
                    owner: claim.to_owned(),
                    provider_message_id: receipt.provider_message_id.clone(),
                    attempt: sent,
                };
                record(inner, &item, "sent", true, || {
                    inner.sent_marks.submit(mark.clone())
                })
                .await;
                inner.announce_if_idle(item.bot_id, &item.contact).await;
                return;
            }
            Err(err) => {
                inner
                    .providers
                    .report(item.bot_id, kind, settings.policy, Err(&err), now);
                let outcome = match err.class {
                    ErrorClass::Retryable => "retryable",
                    ErrorClass::Permanent => "permanent",
                    ErrorClass::ProviderBroken => "provider_broken",
                };
                attempt(inner, &item, kind, outcome, Some(&err), latency).await;
                let text = match &err.code {
                    Some(code) => format!("{kind}: ({code}) {}", err.message),
                    None => format!("{kind}: {}", err.message),
                };
                if err.class == ErrorClass::Permanent {
                    tracing::warn!(message = %item.id, error = text, "message refused for good");
                    record(inner, &item, "refused", true, || {
                        inner
                            .store
                            .mark_refused(item.id, claim, &text, inner.clock.now())
                    })
                    .await;
                    inner.announce_if_idle(item.bot_id, &item.contact).await;
                    return;
                }
                tracing::info!(message = %item.id, provider = %kind, error = text, "send failed; trying the next provider");
                failures.push(text);
            }
        }
    }
    if !tried {
        // Every breaker closed to it between the claim and now (another send took the
        // probe): it waits for the first to let a send through, without an attempt.
        let now = inner.clock.now();
        let at = all_open(inner, item.bot_id, settings, now)
            .unwrap_or_else(|| now.timestamp_millis().saturating_add(1000));
        record(inner, &item, "held", false, || {
            inner.store.release(item.id, claim, at)
        })
        .await;
        return;
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

/// Records one attempt (best effort: the outcome itself is what must be stored).
async fn attempt(
    inner: &Inner,
    item: &OutboxItem,
    kind: ProviderKind,
    outcome: &str,
    error: Option<&SendError>,
    latency: Duration,
) {
    let attempt = attempt_of(inner, kind, outcome, error, latency);
    if let Err(err) = inner.store.record_attempt(item.id, &attempt).await {
        tracing::warn!(message = %item.id, error = %err, "cannot record a send attempt");
    }
}

fn attempt_of(
    inner: &Inner,
    kind: ProviderKind,
    outcome: &str,
    error: Option<&SendError>,
    latency: Duration,
) -> SendAttempt {
    SendAttempt {
        provider: kind.as_str().to_owned(),
        outcome: outcome.to_owned(),
        error_code: error.and_then(|e| e.code.clone()),
        error: error.map(|e| e.message.clone()),
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        at: inner.clock.now(),
    }
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
