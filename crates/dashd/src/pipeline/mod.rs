//! The message pipeline inside dashd: inbound messages → per-conversation tasks → the
//! flow engine (in supervised worker processes) → the outbox → the dispatcher →
//! providers; plus durable flow timers.
//!
//! Invariants, and where they hold:
//! - an inbound message is stored (deduplicated by provider message id) before it is
//!   acknowledged, and stays `received` until a worker commits its step ([`Pipeline::ingest`]);
//! - one contact's messages are handled strictly in arrival order: a conversation with
//!   work has exactly one task, which handles its pending messages by sequence and ends
//!   when it has nothing left; tasks exist only for conversations with work, whose number
//!   the backlog bounds (state lives in the database);
//! - one tenant cannot hold up another: conversations run at most `pipeline.workers` at
//!   once and one tenant's at most half of them ([`conversations`]); a tenant waiting
//!   for its share (or for a flow worker) waits alone;
//! - a step's new state, its outbound messages and its timers are one transaction;
//! - outbound messages are written first and sent after ([`dispatcher`]); an entry being
//!   sent is `processing` under a lease held by this dashd ([`Inner::owner`]); every state
//!   change is one conditional statement, and expired leases are taken back periodically
//!   ([`leases`]), so a crash or a failed "mark sent" never freezes a contact's outbox;
//! - timers are rows; the [`scheduler`] fires due ones, also those due while dashd was down;
//! - a step that fails (an error, a panic, a flow over its bounds) is retried with
//!   backoff `pipeline.max_attempts` times, then its message is `failed` and skipped: no
//!   input can stop a conversation or crash-loop dashd;
//! - the backlog of accepted, unhandled messages is bounded ([`Backlog`]): past it intake
//!   answers "busy, retry later" and nothing accepted is ever dropped;
//! - on shutdown intake stops, and sends in flight finish and are recorded before the
//!   pool closes (a real provider takes no idempotency key: a stop must not send twice).

mod backlog;
mod conversations;
pub mod dispatcher;
mod group;
pub mod http;
mod leases;
mod probes;
pub mod scheduler;
mod sessions;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dash_core::Bot;
use dash_core::api::SandboxEvent;
use dash_core::config::{Config, FlowIsolation};
use dash_core::flow::engine::HttpOutcome;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use backlog::Backlog;

use crate::adapter::registry::Registry;
use crate::adapter::sandbox::{Sandbox, SandboxHub};
use crate::adapter::{DeliveryStatus, ProviderEvent, SessionState};
use crate::clock::{Clock, SystemClock};
use crate::flow_runner::{FlowKey, FlowRunner, FlowSource, RunnerConfig};
use crate::store::contacts::ContactIdentity;
use crate::store::conversations::{ConversationRow, StepCommit};
use crate::store::inbound::{Ingested, NewInbound};
use crate::store::outbox::SentMark;
use crate::store::sessions::SessionReport;
use crate::store::{Store, StoreError};
use dash_core::api::SessionView;
use dash_core::api::{MessageBody, MessageState};
use dash_core::provider::ProviderKind;
use std::sync::atomic::Ordering;

/// Work for a conversation worker. Each names a (bot, contact) conversation.
#[derive(Debug)]
pub enum Work {
    /// Handle the contact's pending inbound messages.
    Inbound { bot_id: Uuid, contact: String },
    /// A flow timer is due (claimed by the scheduler).
    Timer {
        bot_id: Uuid,
        contact: String,
        timer_id: u64,
    },
    /// An HTTP request made for a flow finished. `attempt` counts failed steps applying it.
    Http {
        bot_id: Uuid,
        contact: String,
        request_id: u64,
        outcome: HttpOutcome,
        attempt: u32,
    },
    /// An operator resumes the bot after a handoff.
    Resume {
        bot_id: Uuid,
        contact: String,
        done: oneshot::Sender<Result<bool, OperatorError>>,
    },
    /// A person takes the conversation over (the bot stays silent until resumed).
    Takeover {
        bot_id: Uuid,
        contact: String,
        done: oneshot::Sender<Result<bool, OperatorError>>,
    },
    /// An operator clears the conversation's state.
    Reset {
        bot_id: Uuid,
        contact: String,
        done: oneshot::Sender<Result<bool, OperatorError>>,
    },
}

impl Work {
    fn conversation(&self) -> (Uuid, &str) {
        match self {
            Work::Inbound { bot_id, contact }
            | Work::Timer {
                bot_id, contact, ..
            }
            | Work::Http {
                bot_id, contact, ..
            }
            | Work::Resume {
                bot_id, contact, ..
            }
            | Work::Takeover {
                bot_id, contact, ..
            }
            | Work::Reset {
                bot_id, contact, ..
            } => (*bot_id, contact),
        }
    }
}

/// Handles of the running pipeline, shared by the API handlers.
#[derive(Debug)]
pub struct Pipeline {
    inner: Arc<Inner>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// The committers of steps and sent marks, stopped last (see `join`).
    committers: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long a bot read for the message path is trusted (a change made through this
/// dashd is seen at once; one made through another dashd on the same database after
/// this long at most).
pub(crate) const BOT_CACHE_TTL: Duration = Duration::from_secs(2);
/// Bots kept in that cache, at most (it is emptied past this).
const BOT_CACHE_MAX: usize = 100_000;

/// A bot as [`Inner::cached_bot`] keeps it.
#[derive(Debug)]
pub(crate) struct CachedBot {
    bot: Bot,
    tenant_active: bool,
    /// `bots_epoch` when it was read.
    epoch: u64,
    read_at: std::time::Instant,
}

/// What every pipeline task shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    /// Conversations with work, one task each, and the share of them a tenant may run.
    pub(crate) conversations: conversations::Conversations,
    /// Wakes the dispatcher: new outbox entries, or a send finished.
    pub(crate) dispatch: Notify,
    /// Wakes the scheduler: a timer was added.
    pub(crate) timers: Notify,
    pub(crate) hub: SandboxHub,
    pub(crate) providers: Arc<Registry>,
    pub(crate) flows: FlowCache,
    /// Runs flow steps in supervised worker processes (or threads, if so configured).
    pub(crate) runner: FlowRunner,
    pub(crate) http: reqwest::Client,
    pub(crate) shutdown: CancellationToken,
    /// Raised when any bot's settings or status change: the dispatcher drops its cache.
    pub(crate) bots_epoch: std::sync::atomic::AtomicU64,
    /// Where "now" comes from.
    pub(crate) clock: Arc<dyn Clock>,
    /// This dashd's name (host, pid, random part); each claim of an outbox entry adds a
    /// token of its own.
    pub(crate) owner: String,
    /// Sends and flow HTTP requests in flight: shutdown waits for them.
    pub(crate) in_flight: TaskTracker,
    /// Accepted inbound messages not handled yet.
    pub(crate) backlog: Backlog,
    /// Webhook events acknowledged without effect.
    pub(crate) ignored_events: std::sync::atomic::AtomicU64,
    /// Session state changes, for watchers.
    pub(crate) session_hub: broadcast::Sender<SessionView>,
    /// Wakes the session supervisor: a bot, its chain or its provider settings changed.
    pub(crate) sessions_wake: Notify,
    /// Bots (with their tenant's status) as the message path reads them.
    pub(crate) bot_cache: Mutex<HashMap<Uuid, CachedBot>>,
    /// Inbound messages on their way to a shared commit.
    pub(crate) ingest: group::GroupCommit<NewInbound, Ingested>,
    /// Successful sends on their way to a shared commit of their sent marks.
    pub(crate) sent_marks: group::GroupCommit<SentMark, bool>,
    /// Conversation steps on their way to a shared commit; each answer is the step's
    /// own (a step refused by its guards, or failed alone, does not fail the others).
    pub(crate) steps: group::GroupCommit<StepCommit, StepResult>,
    /// Stops the committers of steps and sent marks, once the steps and sends under way
    /// are done (see `join`).
    pub(crate) committers_stop: CancellationToken,
    /// Restarts of failed sessions by the supervisor, per (bot, provider).
    pub(crate) session_restarts: Mutex<HashMap<(Uuid, String), sessions::Restarts>>,
    /// Conversations as this dashd last committed them (see [`ConversationCache`]).
    pub(crate) conversation_rows: ConversationCache,
}

/// Conversations as this dashd last committed them, so that a conversation's next step
/// does not read back the state its previous step wrote. Only on SQLite, whose file one
/// dashd holds: every write to a conversation goes through this process, and a step
/// whose cached row is stale anyway (reset by an operator meanwhile) is refused by its
/// version guard and run again on a fresh read. With PostgreSQL several dashd may share
/// the database, and a reset and re-created conversation could come back to a version
/// a cache still holds, so the row is read for each step. The least recently used rows
/// beyond [`ConversationCache::CAPACITY`] are dropped.
#[derive(Debug)]
pub(crate) struct ConversationCache {
    rows: Option<Mutex<lru::LruCache<(Uuid, String), ConversationRow>>>,
}

impl ConversationCache {
    /// Conversations kept, at most.
    const CAPACITY: usize = 1024;

    fn new(backend: dash_core::config::Backend) -> Self {
        let rows = (backend == dash_core::config::Backend::Sqlite)
            .then_some(std::num::NonZeroUsize::new(Self::CAPACITY))
            .flatten()
            .map(|capacity| Mutex::new(lru::LruCache::new(capacity)));
        Self { rows }
    }

    fn lock(
        &self,
    ) -> Option<std::sync::MutexGuard<'_, lru::LruCache<(Uuid, String), ConversationRow>>> {
        // The cache stays consistent even if a holder panicked (no await inside).
        self.rows.as_ref().map(|rows| {
            rows.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    pub(crate) fn get(&self, bot_id: Uuid, contact: &str) -> Option<ConversationRow> {
        self.lock()?.get(&(bot_id, contact.to_owned())).cloned()
    }

    pub(crate) fn put(&self, bot_id: Uuid, contact: &str, row: ConversationRow) {
        if let Some(mut rows) = self.lock() {
            rows.put((bot_id, contact.to_owned()), row);
        }
    }

    pub(crate) fn forget(&self, bot_id: Uuid, contact: &str) {
        if let Some(mut rows) = self.lock() {
            rows.pop(&(bot_id, contact.to_owned()));
        }
    }
}

/// Why an operator's resume or reset did not happen, as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// The bot was deleted meanwhile.
    #[error("the bot no longer exists")]
    BotGone,
    /// The step failed `pipeline.max_attempts` times (retried with backoff); the text
    /// says why (a database error, the flow over its bounds).
    #[error("{0}")]
    Failed(String),
    /// dashd is stopping: nothing was done.
    #[error("dashd is shutting down: nothing was done")]
    Stopping,
}

/// Why an inbound message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backlog is full: the sender should retry after `retry_after_s`.
    #[error("{reason}; retry in {retry_after_s} s")]
    Busy { reason: String, retry_after_s: u64 },
    /// dashd is stopping: it accepts nothing more.
    #[error("dashd is shutting down")]
    Stopping,
}

impl Pipeline {
    /// Recovers what a crash left and starts workers, dispatcher and scheduler.
    pub async fn start(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Pipeline> {
        Self::start_with_clock(store, config, Arc::new(SystemClock), shutdown).await
    }

    /// [`Pipeline::start`] with a given clock (tests move time on by hand).
    pub async fn start_with_clock(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Pipeline> {
        let (hub, _) = broadcast::channel(4096);
        let key =
            crate::secrets::load_key(config.secrets.master_key_file.as_deref(), &config.data_dir)?;
        if key.generated {
            tracing::warn!(
                path = %key.path.display(),
                "generated a master key for provider secrets; in production keep it outside the data directory (secrets.master_key_file, e.g. a systemd credential) and back it up separately: without it the stored secrets cannot be read"
            );
        }
        crate::secrets::check_key(store.as_ref(), &key.key).await?;
        let sandbox = Arc::new(Sandbox::new(
            store.clone(),
            SandboxHub::clone(&hub),
            Duration::from_millis(config.sandbox.send_delay_ms),
        ));
        let providers = Arc::new(Registry::new(
            store.clone(),
            key.key,
            sandbox,
            config.dispatcher.provider_concurrency as usize,
        ));
        let conversations = conversations::Conversations::new(config.pipeline.workers);
        let backlog = Backlog::new(
            config.pipeline.max_backlog,
            config.pipeline.max_backlog_per_bot,
        );
        let flow_cache_bytes = usize::try_from(config.pipeline.flow_cache_mb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20);
        let http = http::client(config.pipeline.allow_private_http)?;
        let runner_config = RunnerConfig {
            executable: config.pipeline.flow_worker_exe.clone(),
            processes: config.pipeline.flow_workers as usize,
            memory_limit_mb: config.pipeline.flow_memory_mb,
            step_timeout: Duration::from_millis(config.pipeline.flow_step_timeout_ms),
            cache_mb: config.pipeline.flow_cache_mb.into(),
        };
        let runner = match config.pipeline.flow_isolation {
            FlowIsolation::Process => FlowRunner::start(runner_config).await?,
            FlowIsolation::Thread => {
                tracing::warn!(
                    "pipeline.flow_isolation = \"thread\": flow steps run inside dashd; a hostile template can exhaust its memory"
                );
                FlowRunner::in_process(&runner_config)
            }
        };
        let conversation_rows = ConversationCache::new(store.backend());
        let inner = Arc::new(Inner {
            store,
            config,
            conversations,
            dispatch: Notify::new(),
            timers: Notify::new(),
            hub,
            providers,
            flows: FlowCache::new(flow_cache_bytes),
            conversation_rows,
            runner,
            http,
            shutdown,
            bots_epoch: std::sync::atomic::AtomicU64::new(0),
            clock,
            owner: owner_name(),
            in_flight: TaskTracker::new(),
            backlog,
            ignored_events: std::sync::atomic::AtomicU64::new(0),
            session_hub: broadcast::channel(1024).0,
            sessions_wake: Notify::new(),
            bot_cache: Mutex::default(),
            ingest: group::GroupCommit::new(),
            sent_marks: group::GroupCommit::new(),
            steps: group::GroupCommit::new(),
            committers_stop: CancellationToken::new(),
            session_restarts: Mutex::default(),
        });
        inner.backlog.resync(inner.store.inbound_backlog().await?);
        let mut tasks = JoinSet::new();
        // SQLite has one dashd per file (locked), so whatever is `processing` at start-up
        // was this file's previous dashd's; on PostgreSQL other dashd may be sending, so
        // only expired leases are taken back.
        let single = inner.store.backend() == dash_core::config::Backend::Sqlite;
        let recovered = inner
            .store
            .reclaim_leases(single, inner.clock.now())
            .await?;
        // Only on SQLite, where this dashd is the only one: on a shared database the
        // message a conversation is at may be another dashd's work in progress.
        if single {
            let interrupted = inner
                .store
                .count_interrupted_attempts(inner.clock.now())
                .await?;
            if interrupted > 0 {
                tracing::info!(
                    conversations = interrupted,
                    "messages that may have been in progress at the last stop count an attempt"
                );
            }
        }
        if recovered > 0 {
            tracing::info!(
                messages = recovered,
                "outbox entries interrupted by a restart will be sent again"
            );
        }
        tasks.spawn({
            let inner = inner.clone();
            async move {
                let store = inner.store.clone();
                inner
                    .ingest
                    .run(inner.shutdown.clone(), |batch: Vec<NewInbound>| {
                        let store = store.clone();
                        async move { store.ingest_batch(&batch).await }
                    })
                    .await;
            }
        });
        let marks = tokio::spawn({
            let inner = inner.clone();
            async move {
                let store = inner.store.clone();
                inner
                    .sent_marks
                    .run(inner.committers_stop.clone(), |batch: Vec<SentMark>| {
                        let store = store.clone();
                        async move { store.mark_sent_batch(&batch).await }
                    })
                    .await;
            }
        });
        let steps = tokio::spawn({
            let inner = inner.clone();
            async move {
                let store = inner.store.clone();
                inner
                    .steps
                    .run(inner.committers_stop.clone(), |batch: Vec<StepCommit>| {
                        let store = store.clone();
                        async move { Ok(commit_steps(store.as_ref(), batch).await) }
                    })
                    .await;
            }
        });
        tasks.spawn(dispatcher::run(inner.clone()));
        tasks.spawn(scheduler::run(inner.clone()));
        tasks.spawn(leases::run(inner.clone()));
        tasks.spawn(probes::run(inner.clone()));
        tasks.spawn(sessions::run(inner.clone()));
        let pipeline = Pipeline {
            inner: inner.clone(),
            tasks: tokio::sync::Mutex::new(tasks),
            committers: tokio::sync::Mutex::new(vec![marks, steps]),
        };
        // Messages stored but not handled before a stop or a crash, and HTTP requests
        // whose result will never come, are handed to the workers in the background:
        // a large backlog must not hold up start-up.
        let recovery = inner.clone();
        pipeline.tasks.lock().await.spawn(async move {
            if let Err(err) = recover(&recovery).await {
                tracing::error!(error = %err, "cannot resume unfinished work; it is retried at the next start");
            }
        });
        Ok(pipeline)
    }

    /// Stores an inbound message and hands it to its conversation's worker. Returns once
    /// the message is durable: the caller may acknowledge it.
    /// Past the backlog bound, or while stopping, nothing is stored and the caller is
    /// told to retry later.
    pub async fn ingest(&self, message: NewInbound) -> Result<Ingested, IngestError> {
        let reservation = self.reserve(message.bot_id)?;
        self.ingest_reserved(message, reservation).await
    }

    /// A place in the backlog for one message of `bot_id`, taken before any other work
    /// on the message, so that refusing under overload costs no database round trip.
    fn reserve(&self, bot_id: Uuid) -> Result<backlog::Reservation<'_>, IngestError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(IngestError::Stopping);
        }
        self.inner.backlog.reserve(bot_id)
    }

    async fn ingest_reserved(
        &self,
        message: NewInbound,
        reservation: backlog::Reservation<'_>,
    ) -> Result<Ingested, IngestError> {
        let bot_id = message.bot_id;
        let contact = message.contact.clone();
        let ingested = self.inner.ingest.submit(message).await?;
        if ingested.duplicate {
            drop(reservation);
        } else {
            reservation.keep();
        }
        // Also for a duplicate: if the first delivery's hand-over was lost (its request
        // cut off after the commit), the provider's retry gets the message handled; if
        // it was handled, the worker finds nothing to do.
        self.inner.submit(Work::Inbound { bot_id, contact });
        Ok(ingested)
    }

    /// Applies what a provider's webhook reported: an inbound message goes through
    /// [`Pipeline::ingest`] under the contact its identifiers resolve to; a delivery
    /// status moves its outbox entry forward; a session event feeds the provider's
    /// breaker; a new BSUID moves to its contact. Messages the business sent from its own
    /// phone are logged, never answered.
    pub async fn provider_event(
        &self,
        bot: &Bot,
        provider: ProviderKind,
        event: ProviderEvent,
    ) -> Result<(), IngestError> {
        let store = &self.inner.store;
        match event {
            ProviderEvent::Inbound {
                from,
                provider_message_id,
                body,
                at,
                from_me,
            } => {
                if from.is_empty() {
                    self.inner.ignored_events.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(bot = %bot.id, %provider, "inbound message without a sender; ignored");
                    return Ok(());
                }
                // Past the backlog bound, the message is refused before any database work.
                let reservation = if from_me {
                    None
                } else {
                    Some(self.reserve(bot.id)?)
                };
                let identity = ContactIdentity {
                    contact: String::new(),
                    phone: from.phone,
                    bsuid: from.bsuid,
                    parent_bsuid: from.parent_bsuid,
                    lid: from.lid,
                    username: from.username,
                    name: from.name.clone(),
                };
                let contact = store
                    .resolve_contact(bot.id, &identity, self.inner.clock.now())
                    .await?;
                let from_name = from.name;
                let body = MessageBody {
                    name: body.name.or(from_name),
                    ..body
                };
                let message = NewInbound {
                    bot_id: bot.id,
                    tenant_id: bot.tenant_id,
                    contact,
                    provider: provider.as_str().to_owned(),
                    provider_message_id: Some(provider_message_id),
                    body,
                    received_at: at,
                };
                let Some(reservation) = reservation else {
                    // From the business's own phone: in the conversation's log as sent;
                    // never answered.
                    let logged = store.log_from_me(&message).await?;
                    tracing::debug!(bot = %bot.id, %provider, logged, "message from the business's own phone");
                    return Ok(());
                };
                self.ingest_reserved(message, reservation).await.map(|_| ())
            }
            ProviderEvent::Status {
                provider_message_id,
                status,
                error,
                at,
                ..
            } => {
                match status {
                    DeliveryStatus::Sent => {}
                    DeliveryStatus::Delivered | DeliveryStatus::Read => {
                        let state = if status == DeliveryStatus::Read {
                            MessageState::Read
                        } else {
                            MessageState::Delivered
                        };
                        store
                            .apply_status(
                                bot.id,
                                provider.as_str(),
                                &provider_message_id,
                                state,
                                at,
                            )
                            .await?;
                    }
                    DeliveryStatus::Failed => {
                        let reason = match error {
                            Some((code, text)) => format!("{provider}: ({code}) {text}"),
                            None => format!("{provider}: delivery failed"),
                        };
                        store
                            .status_failed(
                                bot.id,
                                provider.as_str(),
                                &provider_message_id,
                                &reason,
                                at,
                            )
                            .await?;
                    }
                }
                Ok(())
            }
            ProviderEvent::Session {
                session,
                state,
                qr,
                qr_expires_at,
                pairing_code,
                phone,
                reason,
                at,
            } => {
                self.record_session(&SessionReport {
                    bot_id: bot.id,
                    provider: provider.as_str().to_owned(),
                    session: session.clone(),
                    state: session_state_name(state).to_owned(),
                    reason: reason.clone(),
                    phone,
                    qr,
                    qr_expires_at,
                    pairing_code,
                    at,
                })
                .await?;
                let policy = self.inner.fallback_policy(bot);
                if state.is_broken() {
                    let why = format!(
                        "session {session} {state:?}{}",
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    );
                    self.inner
                        .providers
                        .trip(bot.id, provider, policy, &why, at);
                } else if state == SessionState::Ready {
                    self.inner
                        .providers
                        .report(bot.id, provider, policy, Ok(Duration::ZERO), at);
                    self.inner.dispatch.notify_one();
                }
                Ok(())
            }
            ProviderEvent::ContactLinked { ids, at } => {
                if ids.phone.is_none() || ids.lid.is_none() {
                    return Ok(());
                }
                let identity = ContactIdentity {
                    contact: String::new(),
                    phone: ids.phone,
                    bsuid: ids.bsuid,
                    parent_bsuid: ids.parent_bsuid,
                    lid: ids.lid,
                    username: ids.username,
                    name: ids.name,
                };
                store.resolve_contact(bot.id, &identity, at).await?;
                Ok(())
            }
            ProviderEvent::ContactIdChanged {
                old_bsuid,
                new_bsuid,
                at,
            } => {
                store
                    .change_bsuid(bot.id, &old_bsuid, &new_bsuid, at)
                    .await?;
                Ok(())
            }
            ProviderEvent::Ignored { kind } => {
                self.inner.ignored_events.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(bot = %bot.id, %provider, kind, "webhook event not acted on");
                Ok(())
            }
        }
    }

    /// Stores a session's report and tells whoever watches sessions when its state (or
    /// its QR code) changed.
    pub async fn record_session(&self, report: &SessionReport) -> Result<SessionView, StoreError> {
        self.inner.record_session(report).await
    }

    /// Commits of inbound messages and messages so committed since start (their ratio is
    /// the mean group-commit batch).
    pub fn ingest_commits(&self) -> (u64, u64) {
        self.inner.ingest.counts()
    }

    /// A bot as the message path reads it (cached briefly; see [`BOT_CACHE_TTL`]).
    pub async fn bot(&self, bot_id: Uuid) -> Result<Option<Bot>, StoreError> {
        Ok(self.inner.cached_bot(bot_id).await?.map(|(bot, _)| bot))
    }

    /// An operator restarted or paired a session: the supervisor's restart count of a
    /// failed one starts again.
    pub fn session_restarted(&self, bot_id: Uuid, provider: &str) {
        sessions::forget_restarts(&self.inner, bot_id, provider);
    }

    /// Session changes, live (`dashctl session watch`, `pair`).
    pub fn subscribe_sessions(&self) -> broadcast::Receiver<SessionView> {
        self.inner.session_hub.subscribe()
    }

    /// Webhook events acknowledged without effect since start (unknown types, group
    /// messages, ...).
    pub fn ignored_events(&self) -> u64 {
        self.inner.ignored_events.load(Ordering::Relaxed)
    }

    /// The provider registry (clients, breakers).
    pub fn providers(&self) -> &Arc<Registry> {
        &self.inner.providers
    }

    /// A bot's provider entries changed: its clients are rebuilt on next use.
    pub fn providers_changed(&self, bot_id: Uuid) {
        self.inner.providers.invalidate(bot_id);
        self.bots_changed();
    }

    /// The breaker threshold and cooldown (ms) of a bot.
    pub fn fallback_policy(&self, bot: &Bot) -> (u32, i64) {
        self.inner.fallback_policy(bot)
    }

    /// Wakes the dispatcher (a message was queued outside a flow).
    pub fn outbox_changed(&self) {
        self.inner.dispatch.notify_one();
    }

    /// Resumes a conversation after a handoff; false when it was not handed off.
    pub async fn resume(&self, bot_id: Uuid, contact: &str) -> Result<bool, OperatorError> {
        let (done, rx) = oneshot::channel();
        self.inner.submit(Work::Resume {
            bot_id,
            contact: contact.to_owned(),
            done,
        });
        rx.await.map_err(|_| OperatorError::Stopping)?
    }

    /// Hands a conversation to a person: the bot stays silent for the contact until
    /// [`resume`](Self::resume). True when it is handed off now (also when it already
    /// was); false when the bot has no active flow to silence.
    pub async fn take_over(&self, bot_id: Uuid, contact: &str) -> Result<bool, OperatorError> {
        let (done, rx) = oneshot::channel();
        self.inner.submit(Work::Takeover {
            bot_id,
            contact: contact.to_owned(),
            done,
        });
        rx.await.map_err(|_| OperatorError::Stopping)?
    }

    /// Clears a conversation's state and timers; false when there was none.
    pub async fn reset(&self, bot_id: Uuid, contact: &str) -> Result<bool, OperatorError> {
        let (done, rx) = oneshot::channel();
        self.inner.submit(Work::Reset {
            bot_id,
            contact: contact.to_owned(),
            done,
        });
        rx.await.map_err(|_| OperatorError::Stopping)?
    }

    /// The clock jumped (a manual clock in tests, or the system clock set): the
    /// scheduler and the dispatcher look at what is due now instead of sleeping on.
    pub fn clock_moved(&self) {
        self.inner.timers.notify_one();
        self.inner.dispatch.notify_one();
    }

    /// Accepted inbound messages not handled yet: (all bots, the fullest bot).
    pub fn backlog(&self) -> (u32, u32) {
        self.inner.backlog.depth()
    }

    /// Cancelled when dashd shuts down (long-lived streams end with it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Sandbox events, for the stream endpoint.
    pub fn subscribe(&self) -> broadcast::Receiver<(Uuid, SandboxEvent)> {
        self.inner.hub.subscribe()
    }

    /// A bot's settings or status changed: the dispatcher reads them again.
    pub fn bots_changed(&self) {
        self.inner.bots_epoch.fetch_add(1, Ordering::Relaxed);
        self.inner.dispatch.notify_one();
        // A chain that gained a bridge gets its session started now, not at the next check.
        self.inner.sessions_wake.notify_one();
    }

    /// Validates a flow document for import in a flow worker, within its memory and time
    /// bounds (compiling renders every template once), against the configured caps.
    pub async fn validate_flow(
        &self,
        tenant: Uuid,
        document: &dash_core::flow::Document,
    ) -> Result<Result<(), Vec<dash_core::flow::FlowError>>, crate::flow_runner::StepError> {
        let limits = self.inner.config.pipeline.flow_limits();
        self.inner.runner.validate(tenant, document, &limits).await
    }

    /// Forgets cached compiled flows of a bot (after an activation or deletion).
    pub fn flows_changed(&self, bot_id: Uuid) {
        self.inner.flows.forget(bot_id);
    }

    /// Waits for every pipeline task to stop (after the shutdown token is cancelled),
    /// then for sends and HTTP requests in flight to finish and be recorded, all within
    /// `bound`. What is still running then is abandoned: its entries stay `processing`
    /// and are sent again after their lease (the only case where a stop can send twice).
    pub async fn join(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        let mut tasks = self.tasks.lock().await;
        if tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("pipeline tasks did not stop in time; aborting them");
            tasks.shutdown().await;
        }
        // Conversation steps under way finish (their work is in the database either way).
        self.inner.conversations.tasks.close();
        if tokio::time::timeout_at(deadline, self.inner.conversations.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("conversation steps did not finish in time");
        }
        self.inner.in_flight.close();
        // The committers outlive the steps and sends, which hand them their writes.
        let committers = std::mem::take(&mut *self.committers.lock().await);
        let in_flight = self.inner.in_flight.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for sends in flight to finish");
        }
        if tokio::time::timeout_at(deadline, self.inner.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.inner.in_flight.len(),
                "sends still in flight at the end of the shutdown bound; they are sent again after their lease"
            );
        }
        self.inner.committers_stop.cancel();
        for committer in committers {
            if tokio::time::timeout_at(deadline, committer).await.is_err() {
                tracing::warn!("steps or sent marks not all recorded within the shutdown bound");
            }
        }
    }
}

/// What a conversation step's commit answers: the new outbox ids, or `None` when its
/// guards refused it (see `ConversationStore::commit_step`).
pub(crate) type StepResult = Result<Option<Vec<Uuid>>, StoreError>;

/// Commits a batch of steps together; when the shared transaction fails, each step is
/// tried alone, so one step that cannot be written fails only itself.
async fn commit_steps(store: &dyn Store, batch: Vec<StepCommit>) -> Vec<StepResult> {
    match store.commit_steps(&batch).await {
        Ok(written) => written.into_iter().map(Ok).collect(),
        Err(err) if batch.len() == 1 => vec![Err(err)],
        Err(err) => {
            tracing::debug!(error = %err, steps = batch.len(), "a batch of steps failed; writing each alone");
            let mut results = Vec::with_capacity(batch.len());
            for step in &batch {
                results.push(store.commit_step(step).await);
            }
            results
        }
    }
}

/// Hands unfinished inbound work and interrupted HTTP requests to the workers.
async fn recover(inner: &Arc<Inner>) -> Result<(), StoreError> {
    let contacts = inner.store.pending_contacts().await?;
    if !contacts.is_empty() {
        tracing::info!(
            conversations = contacts.len(),
            "resuming messages received before the restart"
        );
    }
    for (bot_id, contact) in contacts {
        if inner.shutdown.is_cancelled() {
            return Ok(());
        }
        inner.submit(Work::Inbound { bot_id, contact });
    }
    for (bot_id, contact) in inner.store.waiting_http().await? {
        if let Some(request_id) = worker::pending_request(inner, bot_id, &contact).await {
            let outcome = HttpOutcome::Failed {
                error: "interrupted by a restart of dashd".into(),
            };
            inner.submit(Work::Http {
                bot_id,
                contact,
                request_id,
                outcome,
                attempt: 0,
            });
        }
    }
    Ok(())
}

/// A name for this dashd on the outbox entries it claims.
fn owner_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "dashd".to_owned());
    let random = Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

impl Inner {
    /// See [`Pipeline::record_session`].
    /// A bot and whether its tenant is active, as the message path needs them for every
    /// message: read from the store at most every [`BOT_CACHE_TTL`] (another dashd on the
    /// same database may change them), and at once after a change made here. None when
    /// the bot does not exist.
    pub(crate) async fn cached_bot(&self, bot_id: Uuid) -> Result<Option<(Bot, bool)>, StoreError> {
        let epoch = self.bots_epoch.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        if let Some(cached) = conversations::lock(&self.bot_cache).get(&bot_id)
            && cached.epoch == epoch
            && now.duration_since(cached.read_at) < BOT_CACHE_TTL
        {
            return Ok(Some((cached.bot.clone(), cached.tenant_active)));
        }
        let bot = match self.store.bot(&dash_core::BotRef::Id(bot_id)).await {
            Ok(bot) => bot,
            Err(StoreError::NotFound { .. }) => {
                conversations::lock(&self.bot_cache).remove(&bot_id);
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let tenant_active = match self
            .store
            .tenant(&crate::store::TenantRef::Id(bot.tenant_id))
            .await
        {
            Ok(tenant) => tenant.status == dash_core::TenantStatus::Active,
            Err(StoreError::NotFound { .. }) => false,
            Err(err) => return Err(err),
        };
        let mut cache = conversations::lock(&self.bot_cache);
        if cache.len() >= BOT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            bot_id,
            CachedBot {
                bot: bot.clone(),
                tenant_active,
                epoch,
                read_at: now,
            },
        );
        Ok(Some((bot, tenant_active)))
    }

    pub(crate) async fn record_session(
        &self,
        report: &SessionReport,
    ) -> Result<SessionView, StoreError> {
        let (view, changed) = self.store.record_session(report).await?;
        if changed || report.qr.is_some() || report.pairing_code.is_some() {
            // Nobody watching is fine.
            let _ = self.session_hub.send(view.clone());
        }
        Ok(view)
    }

    /// The breaker threshold and cooldown (ms) a bot's settings give.
    pub(crate) fn fallback_policy(&self, bot: &Bot) -> (u32, i64) {
        let (threshold, cooldown_s) = dash_core::provider::fallback_of(&bot.settings);
        (
            threshold,
            i64::try_from(cooldown_s.saturating_mul(1000)).unwrap_or(i64::MAX),
        )
    }

    /// Queues work on the conversation's task, starting one if it has none.
    pub(crate) fn submit(self: &Arc<Self>, work: Work) {
        conversations::submit(self, work);
    }

    /// Tells sandbox watchers when a contact has nothing pending any more.
    pub(crate) async fn announce_if_idle(&self, bot_id: Uuid, contact: &str) {
        if self.hub.receiver_count() == 0 {
            return;
        }
        if let Ok(true) = self.store.contact_idle(bot_id, contact).await {
            let _ = self.hub.send((
                bot_id,
                SandboxEvent::Idle {
                    contact: contact.to_owned(),
                    at: chrono::Utc::now(),
                },
            ));
        }
    }
}

/// Flow versions as the flow runner needs them (document and content key), by bot and
/// version, so a step does not read the database for its flow. Bots running the same
/// document share one entry. The cache is bounded by memory, not by a count: the least
/// recently used are dropped past the budget (`pipeline.flow_cache_mb`) and read again
/// when needed. Compiled flows live in the flow workers, each under the same budget.
#[derive(Debug)]
pub(crate) struct FlowCache {
    budget: usize,
    inner: Mutex<FlowCacheMaps>,
}

#[derive(Debug, Default)]
struct FlowCacheMaps {
    /// (bot, version) → the key of its entry in `sources`.
    by_bot: HashMap<(Uuid, u32), FlowKey>,
    sources: HashMap<FlowKey, CachedSource>,
    /// Sum of the entries' weights.
    bytes: usize,
    /// Use counter: larger is more recent.
    tick: u64,
}

#[derive(Debug)]
struct CachedSource {
    source: Arc<FlowSource>,
    bytes: usize,
    used: u64,
}

impl FlowCache {
    /// A cache holding about `budget` bytes of flow documents.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(FlowCacheMaps::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlowCacheMaps> {
        // The maps stay consistent even if a holder panicked (no await inside).
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn get(&self, bot_id: Uuid, version: u32) -> Option<Arc<FlowSource>> {
        let mut maps = self.lock();
        let key = maps.by_bot.get(&(bot_id, version))?.clone();
        maps.tick += 1;
        let tick = maps.tick;
        let cached = maps.sources.get_mut(&key)?;
        cached.used = tick;
        Some(cached.source.clone())
    }

    /// Remembers a bot's version; returns the shared entry when another bot already
    /// runs the same document.
    pub(crate) fn put(&self, bot_id: Uuid, source: Arc<FlowSource>) -> Arc<FlowSource> {
        let mut maps = self.lock();
        let key = source.key().clone();
        maps.tick += 1;
        let tick = maps.tick;
        let shared = match maps.sources.get_mut(&key) {
            Some(cached) => {
                cached.used = tick;
                cached.source.clone()
            }
            None => {
                let bytes = source.size_bytes();
                maps.sources.insert(
                    key.clone(),
                    CachedSource {
                        source: source.clone(),
                        bytes,
                        used: tick,
                    },
                );
                maps.bytes = maps.bytes.saturating_add(bytes);
                source
            }
        };
        maps.by_bot.insert((bot_id, key.version), key);
        self.evict(&mut maps);
        shared
    }

    /// Drops the least recently used entries until the cache fits its budget (the one
    /// just used stays even if it alone is larger).
    fn evict(&self, maps: &mut FlowCacheMaps) {
        if maps.bytes <= self.budget {
            return;
        }
        let mut by_age: Vec<(FlowKey, u64, usize)> = maps
            .sources
            .iter()
            .map(|(key, c)| (key.clone(), c.used, c.bytes))
            .collect();
        by_age.sort_by_key(|(_, used, _)| *used);
        let newest = by_age.last().map(|(key, ..)| key.clone());
        for (key, _, bytes) in by_age {
            if maps.bytes <= self.budget || Some(&key) == newest.as_ref() {
                break;
            }
            maps.sources.remove(&key);
            maps.bytes = maps.bytes.saturating_sub(bytes);
        }
        let FlowCacheMaps {
            by_bot, sources, ..
        } = maps;
        by_bot.retain(|_, key| sources.contains_key(key));
    }

    /// Bytes held.
    #[cfg(test)]
    fn weight(&self) -> usize {
        self.lock().bytes
    }

    fn forget(&self, bot_id: Uuid) {
        self.lock().by_bot.retain(|(bot, _), _| *bot != bot_id);
    }
}

/// The spelling of a session state in storage and the API.
pub fn session_state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Initializing => "initializing",
        SessionState::Qr => "qr",
        SessionState::Authenticated => "authenticated",
        SessionState::Ready => "ready",
        SessionState::Disconnected => "disconnected",
        SessionState::LoggedOut => "logged_out",
        SessionState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Arc<FlowSource> {
        let json = format!(
            r#"{{"flows":[{{"id":"f","steps":[{{"id":"s","kind":"end","text":"{text}"}}]}}]}}"#
        );
        Arc::new(FlowSource::new(1, json))
    }

    #[test]
    fn the_cache_is_bounded_by_weight_and_drops_the_least_recently_used() {
        let a = source("a");
        let weight = a.size_bytes();
        // Room for two entries, not three.
        let cache = FlowCache::new(weight * 2 + weight / 2);
        let (bot_a, bot_b, bot_c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(bot_a, a);
        cache.put(bot_b, source("b"));
        // `a` is used again, so `b` is the least recently used when `c` arrives.
        assert!(cache.get(bot_a, 1).is_some());
        cache.put(bot_c, source("c"));
        assert!(cache.get(bot_a, 1).is_some());
        assert!(
            cache.get(bot_b, 1).is_none(),
            "the least recently used stays"
        );
        assert!(cache.get(bot_c, 1).is_some());
        assert!(cache.weight() <= weight * 2 + weight / 2);
        // Two bots on one document share one entry, weighed once.
        let before = cache.weight();
        let other = Uuid::new_v4();
        let shared = cache.put(other, source("a"));
        assert_eq!(cache.weight(), before);
        assert!(Arc::ptr_eq(&shared, &cache.get(bot_a, 1).unwrap()));
    }
}
