//! Conversations with work: one task per (bot, contact), started when work arrives and
//! ended when its queue is empty, so one contact's work is handled strictly in order
//! while different contacts run in parallel, and no conversation waits behind another's.
//!
//! Fairness between tenants: at most `pipeline.workers` conversations are handled at
//! once, and one tenant's at most half of them (at least one). A task takes its tenant's
//! permit before the global one, so a tenant flooding dashd (or whose flows are slow)
//! queues behind its own share and never holds the places other tenants need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{Inner, Work};

/// The running conversation tasks and the permits they take.
#[derive(Debug)]
pub(crate) struct Conversations {
    queues: Mutex<HashMap<(Uuid, String), mpsc::UnboundedSender<Work>>>,
    global: Arc<Semaphore>,
    /// Permits per tenant: half the global ones, at least one.
    share: usize,
    tenants: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    /// Tenant of each bot seen (a bot never changes tenant).
    owners: Mutex<HashMap<Uuid, Uuid>>,
    /// Conversations with a wake-up planned (a message waiting for its next attempt).
    wakes: Mutex<std::collections::HashSet<(Uuid, String)>>,
    /// The conversation tasks: shutdown waits for the steps under way.
    pub(crate) tasks: TaskTracker,
}

/// Tenants whose semaphores are kept before idle ones are dropped.
const TENANTS_KEPT: usize = 1024;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked (no await inside).
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Conversations {
    /// At most `workers` conversations handled at once.
    pub(crate) fn new(workers: u32) -> Self {
        let workers = usize::try_from(workers.max(1)).unwrap_or(1);
        Self {
            queues: Mutex::new(HashMap::new()),
            global: Arc::new(Semaphore::new(workers)),
            share: (workers / 2).max(1),
            tenants: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            wakes: Mutex::new(std::collections::HashSet::new()),
            tasks: TaskTracker::new(),
        }
    }

    /// Plans a wake-up for a conversation; false when one is already planned.
    pub(crate) fn plan_wake(&self, bot_id: Uuid, contact: &str) -> bool {
        lock(&self.wakes).insert((bot_id, contact.to_owned()))
    }

    /// The planned wake-up happened.
    pub(crate) fn woken(&self, bot_id: Uuid, contact: &str) {
        lock(&self.wakes).remove(&(bot_id, contact.to_owned()));
    }

    /// Waits for a place for one unit of `tenant`'s work: the tenant's permit first,
    /// then a global one.
    async fn permits(
        &self,
        tenant: Option<Uuid>,
    ) -> Option<(Option<OwnedSemaphorePermit>, OwnedSemaphorePermit)> {
        let own = match tenant {
            Some(tenant) => {
                let semaphore = {
                    let mut tenants = lock(&self.tenants);
                    if tenants.len() > TENANTS_KEPT {
                        // Drop the semaphores nobody holds or waits on.
                        tenants.retain(|_, s| Arc::strong_count(s) > 1);
                    }
                    tenants
                        .entry(tenant)
                        .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                        .clone()
                };
                Some(semaphore.acquire_owned().await.ok()?)
            }
            None => None,
        };
        let global = self.global.clone().acquire_owned().await.ok()?;
        Some((own, global))
    }
}

/// Queues `work` on its conversation's task, starting the task if there is none.
pub(crate) fn submit(inner: &Arc<Inner>, work: Work) {
    let key = {
        let (bot_id, contact) = work.conversation();
        (bot_id, contact.to_owned())
    };
    let mut queues = lock(&inner.conversations.queues);
    let work = match queues.get(&key) {
        Some(queue) => match queue.send(work) {
            Ok(()) => return,
            // The task has ended without leaving the map (it panicked): start another.
            Err(mpsc::error::SendError(work)) => work,
        },
        None => work,
    };
    if inner.shutdown.is_cancelled() {
        // Stopping: what the work stands for is in the database for the next start.
        return;
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    if sender.send(work).is_err() {
        return;
    }
    queues.insert(key.clone(), sender);
    drop(queues);
    let task = run(inner.clone(), key, receiver);
    inner.conversations.tasks.spawn(task);
}

/// Handles a conversation's work in order, then leaves.
async fn run(inner: Arc<Inner>, key: (Uuid, String), mut queue: mpsc::UnboundedReceiver<Work>) {
    let tenant = tenant_of(&inner, key.0).await;
    loop {
        let work = match queue.try_recv() {
            Ok(work) => work,
            Err(_) => {
                // Leave only when nothing more can arrive: `submit` sends under this lock.
                let mut queues = lock(&inner.conversations.queues);
                match queue.try_recv() {
                    Ok(work) => work,
                    Err(_) => {
                        queues.remove(&key);
                        return;
                    }
                }
            }
        };
        if inner.shutdown.is_cancelled() {
            // Queued work is in the database (messages, timers) or told it was not done
            // (resume, reset: their callers hear that dashd is stopping).
            lock(&inner.conversations.queues).remove(&key);
            return;
        }
        let permits = tokio::select! {
            () = inner.shutdown.cancelled() => None,
            permits = inner.conversations.permits(tenant) => permits,
        };
        let Some(_permits) = permits else {
            // Stopping (or the semaphores closed): no new step starts.
            lock(&inner.conversations.queues).remove(&key);
            return;
        };
        super::worker::handle_guarded(&inner, work).await;
    }
}

/// The tenant that owns `bot_id` (None if the bot is gone or unreadable: its work
/// then runs without a tenant share and finds nothing to do).
async fn tenant_of(inner: &Inner, bot_id: Uuid) -> Option<Uuid> {
    if let Some(tenant) = lock(&inner.conversations.owners).get(&bot_id) {
        return Some(*tenant);
    }
    let bot = inner.store.bot(&dash_core::BotRef::Id(bot_id)).await.ok()?;
    let mut owners = lock(&inner.conversations.owners);
    if owners.len() > 100_000 {
        owners.clear();
    }
    owners.insert(bot_id, bot.tenant_id);
    Some(bot.tenant_id)
}
