//! The provider registry: one client per (bot, provider), built from the bot's stored
//! chain entry (settings plus secrets opened with the master key), cached until the entry
//! changes; one HTTP connection pool per provider host, shared by every bot's client on
//! it; and one circuit breaker per (bot, provider), so one bot's revoked token never
//! silences another bot on the same provider.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_core::api::ProviderStatus;
use dash_core::breaker::{Admission, BreakerState, CircuitBreaker};
use dash_core::provider::{ErrorClass, ProviderKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::sandbox::Sandbox;
use super::{ConfigError, ProviderConfig, SEND_TIMEOUT, SendError, WhatsAppProvider};
use crate::secrets::{MasterKey, provider_context};
use crate::store::Store;
use crate::store::providers::StoredProvider;

/// Latencies kept per (bot, provider) for the median.
const LATENCY_SAMPLES: usize = 64;

/// Builds, caches and guards provider clients.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    key: MasterKey,
    sandbox: Arc<Sandbox>,
    clients: Mutex<HashMap<(Uuid, ProviderKind), CachedClient>>,
    /// Raised per bot by every change of its entries: a client built from settings read
    /// before a change is not cached.
    generations: Mutex<HashMap<Uuid, u64>>,
    pools: Mutex<HashMap<String, reqwest::Client>>,
    breakers: Mutex<HashMap<(Uuid, ProviderKind), Guard>>,
    /// Sends in flight per (bot, provider), at most `dispatcher.provider_concurrency`.
    send_slots: Mutex<HashMap<(Uuid, ProviderKind), Arc<Semaphore>>>,
    provider_concurrency: usize,
}

/// How long a cached client is trusted before its entry is read again (another dashd on
/// the same database may have changed it).
const CLIENT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct CachedClient {
    client: Arc<dyn WhatsAppProvider>,
    built: std::time::Instant,
}

/// A breaker and what the operator sees of a (bot, provider).
#[derive(Debug, Clone)]
struct Guard {
    breaker: CircuitBreaker,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    last_success_at: Option<DateTime<Utc>>,
    latencies_ms: VecDeque<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent if a holder panicked: no await and no partial update
    // under these locks.
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Registry {
    /// `provider_concurrency`: sends in flight at once per (bot, provider).
    pub fn new(
        store: Arc<dyn Store>,
        key: MasterKey,
        sandbox: Arc<Sandbox>,
        provider_concurrency: usize,
    ) -> Self {
        Self {
            store,
            key,
            sandbox,
            clients: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            send_slots: Mutex::new(HashMap::new()),
            provider_concurrency: provider_concurrency.max(1),
        }
    }

    /// A slot for one send through `kind` for `bot_id`; waits while the bot has
    /// `provider_concurrency` sends in flight through that provider.
    pub async fn send_slot(&self, bot_id: Uuid, kind: ProviderKind) -> OwnedSemaphorePermit {
        let slots = lock(&self.send_slots)
            .entry((bot_id, kind))
            .or_insert_with(|| Arc::new(Semaphore::new(self.provider_concurrency)))
            .clone();
        // Invariant: the semaphore is never closed, so acquiring cannot fail.
        #[allow(clippy::expect_used)]
        slots
            .acquire_owned()
            .await
            .expect("send slots are never closed")
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.key
    }

    /// The client for a bot's provider, built from its stored entry when not cached.
    pub async fn client(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
    ) -> Result<Arc<dyn WhatsAppProvider>, SendError> {
        if kind == ProviderKind::Sandbox {
            return Ok(self.sandbox.clone());
        }
        if let Some(cached) = lock(&self.clients)
            .get(&(bot_id, kind))
            .filter(|cached| cached.built.elapsed() < CLIENT_TTL)
        {
            return Ok(cached.client.clone());
        }
        let generation = self.generation(bot_id);
        let config = self
            .config(bot_id, kind)
            .await
            .map_err(|err| SendError::retryable(format!("cannot read {kind} settings: {err}")))?
            .ok_or_else(|| {
                SendError::broken(format!(
                    "{kind} has no settings for this bot (dashctl provider set BOT {kind} ...)"
                ))
            })?;
        let client = self
            .build(&config)
            .map_err(|err| SendError::broken(err.to_string()))?;
        // Settings changed while this client was built: use it once, do not keep it.
        if self.generation(bot_id) == generation {
            lock(&self.clients).insert(
                (bot_id, kind),
                CachedClient {
                    client: client.clone(),
                    built: std::time::Instant::now(),
                },
            );
        }
        Ok(client)
    }

    /// A bot's entry for a provider, secrets opened; None when it has none.
    pub async fn config(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
    ) -> anyhow::Result<Option<ProviderConfig>> {
        let entries = self.store.providers_of(bot_id).await?;
        entries
            .into_iter()
            .find(|entry| entry.provider == kind.as_str())
            .map(|entry| self.open(&entry, kind))
            .transpose()
    }

    /// Opens a stored entry.
    pub fn open(
        &self,
        entry: &StoredProvider,
        kind: ProviderKind,
    ) -> anyhow::Result<ProviderConfig> {
        let secrets = match &entry.secrets {
            Some(sealed) => self
                .key
                .open_map(&provider_context(entry.bot_id, kind.as_str()), sealed)?,
            None => Default::default(),
        };
        Ok(ProviderConfig {
            bot_id: entry.bot_id,
            kind,
            settings: entry.settings.clone(),
            secrets,
        })
    }

    /// A client for these settings (not cached: `provider test` and webhooks of a
    /// just-changed entry use it too).
    pub fn build(&self, config: &ProviderConfig) -> Result<Arc<dyn WhatsAppProvider>, ConfigError> {
        let http = self.pool_for(config);
        Ok(match config.kind {
            ProviderKind::Sandbox => self.sandbox.clone(),
            ProviderKind::Meta | ProviderKind::Official => {
                Arc::new(super::meta::CloudApi::new(config, http)?)
            }
            ProviderKind::Twilio => Arc::new(super::twilio::Twilio::new(config, http)?),
            ProviderKind::Evolution => Arc::new(super::evolution::Evolution::new(config, http)?),
            ProviderKind::Venom | ProviderKind::Wwebjs | ProviderKind::Baileys => {
                Arc::new(super::bridge::Bridge::new(config, http)?)
            }
        })
    }

    /// A bot's session client (start, status, QR, logout) for a bridge or Evolution;
    /// None when the bot has no settings for that provider.
    pub async fn session_client(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
    ) -> anyhow::Result<Option<super::session::SessionClient>> {
        use super::session::SessionClient;
        let Some(config) = self.config(bot_id, kind).await? else {
            return Ok(None);
        };
        let http = self.pool_for(&config);
        Ok(Some(match kind {
            ProviderKind::Evolution => {
                SessionClient::Evolution(super::evolution::Evolution::new(&config, http)?)
            }
            _ => SessionClient::Bridge(super::bridge::Bridge::new(&config, http)?),
        }))
    }

    /// The shared connection pool for the host of the entry's `base_url`.
    fn pool_for(&self, config: &ProviderConfig) -> reqwest::Client {
        let host = config
            .setting("base_url")
            .and_then(|url| reqwest::Url::parse(url).ok())
            .map(|url| format!("{}://{}", url.scheme(), url.authority()))
            .unwrap_or_default();
        lock(&self.pools)
            .entry(host)
            .or_insert_with(|| {
                reqwest::Client::builder()
                    .user_agent(concat!("dashd/", env!("CARGO_PKG_VERSION")))
                    .timeout(SEND_TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .pool_idle_timeout(Duration::from_secs(90))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// A bot's entries changed: its clients are built again on next use.
    pub fn invalidate(&self, bot_id: Uuid) {
        *lock(&self.generations).entry(bot_id).or_default() += 1;
        lock(&self.clients).retain(|(bot, _), _| *bot != bot_id);
    }

    fn generation(&self, bot_id: Uuid) -> u64 {
        lock(&self.generations).get(&bot_id).copied().unwrap_or(0)
    }

    /// When a send through this provider may go for this bot: None when it may now,
    /// else the time (Unix ms) its breaker lets a probe through.
    pub fn blocked_until(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
        now: DateTime<Utc>,
    ) -> Option<i64> {
        let breakers = lock(&self.breakers);
        let guard = breakers.get(&(bot_id, kind))?;
        let now_ms = now.timestamp_millis();
        if guard.breaker.is_available(now_ms) {
            return None;
        }
        match guard.breaker.state {
            BreakerState::Open { until_ms } => Some(until_ms),
            BreakerState::HalfOpen { since_ms } => {
                Some(since_ms.saturating_add(guard.breaker.cooldown_ms.max(1)))
            }
            BreakerState::Closed { .. } => None,
        }
    }

    /// Whether a send may go through this provider for this bot now (taking the
    /// half-open probe if the cooldown is over).
    pub fn admit(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
        policy: (u32, i64),
        now: DateTime<Utc>,
    ) -> Admission {
        let mut breakers = lock(&self.breakers);
        let guard = breakers
            .entry((bot_id, kind))
            .or_insert_with(|| Guard::new(policy));
        guard.breaker.configure(policy.0, policy.1);
        guard.breaker.admit(now.timestamp_millis())
    }

    /// Records a send's (or a probe's) outcome.
    pub fn report(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
        policy: (u32, i64),
        outcome: Result<Duration, &SendError>,
        now: DateTime<Utc>,
    ) {
        let mut breakers = lock(&self.breakers);
        let guard = breakers
            .entry((bot_id, kind))
            .or_insert_with(|| Guard::new(policy));
        match outcome {
            Ok(latency) => {
                guard.breaker.on_success();
                guard.last_success_at = Some(now);
                if guard.latencies_ms.len() == LATENCY_SAMPLES {
                    guard.latencies_ms.pop_front();
                }
                guard
                    .latencies_ms
                    .push_back(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
            }
            Err(err) => {
                guard.breaker.on_failure(err.class, now.timestamp_millis());
                if err.class != ErrorClass::Permanent {
                    guard.last_error = Some(err.message.clone());
                    guard.last_error_at = Some(now);
                }
            }
        }
    }

    /// A health probe succeeded. An open breaker whose cooldown has not passed stays
    /// open (it reopens by the rules: cooldown, then a probe); otherwise it closes.
    /// Returns whether it was not closed before.
    pub fn probe_succeeded(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
        policy: (u32, i64),
        latency: Duration,
        now: DateTime<Utc>,
    ) -> bool {
        let mut breakers = lock(&self.breakers);
        let guard = breakers
            .entry((bot_id, kind))
            .or_insert_with(|| Guard::new(policy));
        let was_closed = matches!(guard.breaker.state, BreakerState::Closed { .. });
        if !guard.breaker.is_available(now.timestamp_millis()) {
            return false;
        }
        guard.breaker.on_success();
        guard.last_success_at = Some(now);
        if guard.latencies_ms.len() == LATENCY_SAMPLES {
            guard.latencies_ms.pop_front();
        }
        guard
            .latencies_ms
            .push_back(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
        !was_closed
    }

    /// Opens a provider's breaker for a bot now (a probe or a session event found it
    /// broken).
    pub fn trip(
        &self,
        bot_id: Uuid,
        kind: ProviderKind,
        policy: (u32, i64),
        reason: &str,
        now: DateTime<Utc>,
    ) {
        let mut breakers = lock(&self.breakers);
        let guard = breakers
            .entry((bot_id, kind))
            .or_insert_with(|| Guard::new(policy));
        guard.breaker.trip(now.timestamp_millis());
        guard.last_error = Some(reason.to_owned());
        guard.last_error_at = Some(now);
    }

    /// What the operator sees of a bot's provider.
    pub fn status(&self, bot_id: Uuid, kind: ProviderKind, now: DateTime<Utc>) -> ProviderStatus {
        let breakers = lock(&self.breakers);
        let guard = breakers.get(&(bot_id, kind));
        let (state, open_until) = match guard.map(|g| g.breaker.state) {
            None | Some(BreakerState::Closed { .. }) => ("closed", None),
            Some(BreakerState::Open { until_ms }) if until_ms > now.timestamp_millis() => {
                ("open", DateTime::from_timestamp_millis(until_ms))
            }
            Some(BreakerState::Open { .. }) | Some(BreakerState::HalfOpen { .. }) => {
                ("half_open", None)
            }
        };
        let failures = match guard.map(|g| g.breaker.state) {
            Some(BreakerState::Closed { failures }) => failures,
            _ => 0,
        };
        ProviderStatus {
            provider: kind.as_str().to_owned(),
            breaker: state.to_owned(),
            consecutive_failures: failures,
            open_until,
            last_error: guard.and_then(|g| g.last_error.clone()),
            last_error_at: guard.and_then(|g| g.last_error_at),
            last_success_at: guard.and_then(|g| g.last_success_at),
            p50_latency_ms: guard.and_then(|g| median(&g.latencies_ms)),
        }
    }
}

impl Guard {
    fn new((threshold, cooldown_ms): (u32, i64)) -> Self {
        Self {
            breaker: CircuitBreaker::new(threshold, cooldown_ms),
            last_error: None,
            last_error_at: None,
            last_success_at: None,
            latencies_ms: VecDeque::with_capacity(LATENCY_SAMPLES),
        }
    }
}

fn median(samples: &VecDeque<u64>) -> Option<u64> {
    let mut sorted: Vec<u64> = samples.iter().copied().collect();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}
