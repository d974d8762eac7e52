//! The message pipeline inside dashd: inbound messages → per-conversation workers → the
//! flow engine → the outbox → the dispatcher → providers; plus durable flow timers.
//!
//! Invariants, and where they hold:
//! - an inbound message is stored (deduplicated by provider message id) before it is
//!   acknowledged, and stays `received` until a worker commits its step ([`Pipeline::ingest`]);
//! - one contact's messages are handled strictly in arrival order: a contact always maps
//!   to the same worker, which handles all of the contact's pending messages by sequence;
//! - memory is bounded by the number of workers and their queues, not by the number of
//!   conversations (state lives in the database);
//! - a step's new state, its outbound messages and its timers are one transaction;
//! - outbound messages are written first and sent after ([`dispatcher`]); `processing`
//!   entries left by a crash go back to `pending` at start-up;
//! - timers are rows; the [`scheduler`] fires due ones, also those due while dashd was down.

pub mod dispatcher;
pub mod http;
pub mod provider;
pub mod sandbox;
pub mod scheduler;
mod worker;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dash_core::api::SandboxEvent;
use dash_core::config::Config;
use dash_core::flow::Bundle;
use dash_core::flow::engine::HttpOutcome;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;
use crate::store::pipeline::{Ingested, NewInbound};
use provider::Registry;
use sandbox::{Sandbox, SandboxHub};

/// Work for a conversation worker. Each names a (bot, contact) conversation.
#[derive(Debug)]
pub enum Work {
    /// Handle the contact's pending inbound messages.
    Inbound { bot_id: Uuid, contact: String },
    /// A flow timer is due; `done` is told when it has been handled.
    Timer {
        bot_id: Uuid,
        contact: String,
        timer_id: u64,
        done: Option<oneshot::Sender<()>>,
    },
    /// An HTTP request made for a flow finished.
    Http {
        bot_id: Uuid,
        contact: String,
        request_id: u64,
        outcome: HttpOutcome,
    },
    /// An operator resumes the bot after a handoff.
    Resume {
        bot_id: Uuid,
        contact: String,
        done: oneshot::Sender<Result<bool, String>>,
    },
    /// An operator clears the conversation's state.
    Reset {
        bot_id: Uuid,
        contact: String,
        done: oneshot::Sender<Result<bool, String>>,
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
}

/// What every pipeline task shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    workers: Vec<mpsc::Sender<Work>>,
    /// Wakes the dispatcher: new outbox entries, or a send finished.
    pub(crate) dispatch: Notify,
    /// Wakes the scheduler: a timer was added.
    pub(crate) timers: Notify,
    pub(crate) hub: SandboxHub,
    pub(crate) providers: Registry,
    pub(crate) flows: FlowCache,
    pub(crate) http: reqwest::Client,
    pub(crate) shutdown: CancellationToken,
    /// Raised when any bot's settings or status change: the dispatcher drops its cache.
    pub(crate) bots_epoch: std::sync::atomic::AtomicU64,
}

/// Capacity of each worker's queue; a full queue makes the caller wait (backpressure),
/// while the message itself is already stored.
const WORKER_QUEUE: usize = 1024;

impl Pipeline {
    /// Recovers what a crash left and starts workers, dispatcher and scheduler.
    pub async fn start(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Pipeline> {
        let (hub, _) = broadcast::channel(4096);
        let mut providers = Registry::default();
        providers.register(Arc::new(Sandbox::new(
            store.clone(),
            SandboxHub::clone(&hub),
            Duration::from_millis(config.sandbox.send_delay_ms),
        )));
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.pipeline.workers.max(1) {
            let (tx, rx) = mpsc::channel(WORKER_QUEUE);
            senders.push(tx);
            receivers.push(rx);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("dashd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let inner = Arc::new(Inner {
            store,
            config,
            workers: senders,
            dispatch: Notify::new(),
            timers: Notify::new(),
            hub,
            providers,
            flows: FlowCache::default(),
            http,
            shutdown,
            bots_epoch: std::sync::atomic::AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        for rx in receivers {
            tasks.spawn(worker::run(inner.clone(), rx));
        }
        let recovered = inner.store.recover_processing(chrono::Utc::now()).await?;
        if recovered > 0 {
            tracing::info!(
                messages = recovered,
                "outbox entries interrupted by a restart will be sent again"
            );
        }
        tasks.spawn(dispatcher::run(inner.clone()));
        tasks.spawn(scheduler::run(inner.clone()));
        let pipeline = Pipeline {
            inner: inner.clone(),
            tasks: tokio::sync::Mutex::new(tasks),
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
    pub async fn ingest(&self, message: NewInbound) -> Result<Ingested, crate::store::StoreError> {
        let bot_id = message.bot_id;
        let contact = message.contact.clone();
        let ingested = self.inner.store.ingest(&message).await?;
        if !ingested.duplicate {
            self.inner.submit(Work::Inbound { bot_id, contact }).await;
        }
        Ok(ingested)
    }

    /// Applies what a provider's webhook reported: an inbound message goes through
    /// [`Pipeline::ingest`], a delivery status moves its outbox entry forward.
    pub async fn provider_event(
        &self,
        bot: &dash_core::Bot,
        provider: dash_core::provider::ProviderKind,
        event: provider::ProviderEvent,
    ) -> Result<(), crate::store::StoreError> {
        match event {
            provider::ProviderEvent::Inbound {
                contact,
                provider_message_id,
                body,
                at,
                ..
            } => {
                let message = NewInbound {
                    bot_id: bot.id,
                    tenant_id: bot.tenant_id,
                    contact,
                    provider: provider.as_str().to_owned(),
                    provider_message_id: Some(provider_message_id),
                    body,
                    received_at: at,
                };
                self.ingest(message).await.map(|_| ())
            }
            provider::ProviderEvent::Status {
                provider_message_id,
                status,
                at,
            } => self
                .inner
                .store
                .apply_status(provider.as_str(), &provider_message_id, status, at)
                .await
                .map(|_| ()),
        }
    }

    /// Wakes the dispatcher (a message was queued outside a flow).
    pub fn outbox_changed(&self) {
        self.inner.dispatch.notify_one();
    }

    /// Resumes a conversation after a handoff; false when it was not handed off.
    pub async fn resume(&self, bot_id: Uuid, contact: &str) -> Result<bool, String> {
        let (done, rx) = oneshot::channel();
        self.inner
            .submit(Work::Resume {
                bot_id,
                contact: contact.to_owned(),
                done,
            })
            .await;
        rx.await.map_err(|_| "dashd is shutting down".to_owned())?
    }

    /// Clears a conversation's state and timers; false when there was none.
    pub async fn reset(&self, bot_id: Uuid, contact: &str) -> Result<bool, String> {
        let (done, rx) = oneshot::channel();
        self.inner
            .submit(Work::Reset {
                bot_id,
                contact: contact.to_owned(),
                done,
            })
            .await;
        rx.await.map_err(|_| "dashd is shutting down".to_owned())?
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
        self.inner
            .bots_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.dispatch.notify_one();
    }

    /// Forgets cached compiled flows of a bot (after an activation or deletion).
    pub fn flows_changed(&self, bot_id: Uuid) {
        self.inner.flows.forget(bot_id);
    }

    /// Waits for every pipeline task to stop (after the shutdown token is cancelled).
    pub async fn join(&self, bound: Duration) {
        let mut tasks = self.tasks.lock().await;
        if tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("pipeline tasks did not stop in time; aborting them");
            tasks.shutdown().await;
        }
    }
}

/// Hands unfinished inbound work and interrupted HTTP requests to the workers.
async fn recover(inner: &Arc<Inner>) -> Result<(), crate::store::StoreError> {
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
        inner.submit(Work::Inbound { bot_id, contact }).await;
    }
    for (bot_id, contact) in inner.store.waiting_http().await? {
        if let Some(request_id) = worker::pending_request(inner, bot_id, &contact).await {
            let outcome = HttpOutcome::Failed {
                error: "interrupted by a restart of dashd".into(),
            };
            inner
                .submit(Work::Http {
                    bot_id,
                    contact,
                    request_id,
                    outcome,
                })
                .await;
        }
    }
    Ok(())
}

impl Inner {
    /// Queues work on the worker that owns the conversation.
    pub(crate) async fn submit(&self, work: Work) {
        let (bot_id, contact) = work.conversation();
        let mut hasher = DefaultHasher::new();
        (bot_id, contact).hash(&mut hasher);
        let index = (hasher.finish() % self.workers.len() as u64) as usize;
        // A closed queue means dashd is stopping; stored messages are handled next start.
        let _ = self.workers[index].send(work).await;
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

/// Compiled flow versions, by bot and version: each is compiled once, not per message,
/// and bots running the same document (same source, same version number) share one.
#[derive(Debug, Default)]
pub(crate) struct FlowCache {
    inner: Mutex<FlowCacheMaps>,
}

#[derive(Debug, Default)]
struct FlowCacheMaps {
    by_bot: HashMap<(Uuid, u32), Arc<Bundle>>,
    /// By (source, version); the source is kept to rule out hash collisions.
    by_source: HashMap<(u64, u32), (String, Arc<Bundle>)>,
}

/// Entries kept before the cache starts over (a crude bound on memory).
const FLOW_CACHE_LIMIT: usize = 100_000;

fn source_hash(source: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    hasher.finish()
}

impl FlowCache {
    pub(crate) fn get(&self, bot_id: Uuid, version: u32) -> Option<Arc<Bundle>> {
        self.inner
            .lock()
            .ok()?
            .by_bot
            .get(&(bot_id, version))
            .cloned()
    }

    /// A bundle already compiled from the same source and version, for another bot.
    pub(crate) fn shared(&self, source: &str, version: u32) -> Option<Arc<Bundle>> {
        let maps = self.inner.lock().ok()?;
        match maps.by_source.get(&(source_hash(source), version)) {
            Some((known, bundle)) if known == source => Some(bundle.clone()),
            _ => None,
        }
    }

    pub(crate) fn put(&self, bot_id: Uuid, source: &str, bundle: Arc<Bundle>) {
        if let Ok(mut maps) = self.inner.lock() {
            if maps.by_bot.len() >= FLOW_CACHE_LIMIT {
                maps.by_bot.clear();
                maps.by_source.clear();
            }
            let version = bundle.version;
            maps.by_source
                .entry((source_hash(source), version))
                .or_insert_with(|| (source.to_owned(), bundle.clone()));
            maps.by_bot.insert((bot_id, version), bundle);
        }
    }

    fn forget(&self, bot_id: Uuid) {
        if let Ok(mut maps) = self.inner.lock() {
            maps.by_bot.retain(|(bot, _), _| *bot != bot_id);
        }
    }
}
