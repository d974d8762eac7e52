//! Group commit of inbound messages. Webhook handlers hand their message to one task,
//! which stores every message waiting at that moment in one transaction and answers each
//! handler once it has committed: a webhook is still acknowledged only after its message
//! is durable, but concurrent webhooks share a commit (and SQLite's single writer). No
//! timer: a lone message is committed at once, so an idle dashd adds no latency; under
//! load, batches grow by themselves while the previous commit runs (up to [`MAX_BATCH`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::Inner;
use crate::store::StoreError;
use crate::store::inbound::{Ingested, NewInbound};

/// Messages committed together, at most.
pub(crate) const MAX_BATCH: usize = 256;
/// Messages waiting for the committer, at most (the backlog bound limits them first).
const QUEUE: usize = 4096;

/// One handler's message and where its answer goes.
struct Waiting {
    message: NewInbound,
    done: oneshot::Sender<Result<Ingested, String>>,
}

/// The handlers' side: [`IngestQueue::store`] returns once the message is committed.
#[derive(Debug)]
pub(crate) struct IngestQueue {
    sender: mpsc::Sender<Waiting>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Waiting>>>,
    /// Commits and messages committed so far (`rows / commits` is the mean batch).
    commits: AtomicU64,
    rows: AtomicU64,
}

impl IngestQueue {
    pub(crate) fn new() -> IngestQueue {
        let (sender, receiver) = mpsc::channel(QUEUE);
        IngestQueue {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            commits: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Stores the message with whatever else is waiting; the answer once committed.
    pub(crate) async fn store(&self, message: NewInbound) -> Result<Ingested, StoreError> {
        let (done, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("dashd is shutting down".into());
        self.sender
            .send(Waiting { message, done })
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(ingested)) => Ok(ingested),
            Ok(Err(message)) => Err(StoreError::Unavailable(message)),
            Err(_) => Err(stopped()),
        }
    }

    /// (commits, messages) since start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }
}

/// The committer: runs until shutdown, then commits what was already handed over.
pub(crate) async fn run(inner: Arc<Inner>) {
    let Some(mut receiver) = super::conversations::lock(&inner.ingest.receiver).take() else {
        return;
    };
    let mut batch: Vec<Waiting> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            () = inner.shutdown.cancelled() => None,
            first = receiver.recv() => first,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit(&inner, &mut batch).await;
    }
    // Stopping: what handlers already handed over is committed and answered.
    receiver.close();
    while let Ok(next) = receiver.try_recv() {
        batch.push(next);
        if batch.len() == MAX_BATCH {
            commit(&inner, &mut batch).await;
        }
    }
    if !batch.is_empty() {
        commit(&inner, &mut batch).await;
    }
}

async fn commit(inner: &Inner, batch: &mut Vec<Waiting>) {
    let messages: Vec<NewInbound> = batch.iter().map(|w| w.message.clone()).collect();
    let result = inner.store.ingest_batch(&messages).await;
    inner.ingest.commits.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(stored) => {
            inner
                .ingest
                .rows
                .fetch_add(stored.len() as u64, Ordering::Relaxed);
            for (waiting, ingested) in batch.drain(..).zip(stored) {
                // A handler that went away (its client hung up) finds its message
                // stored all the same; the provider's retry is a duplicate.
                let _ = waiting.done.send(Ok(ingested));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, messages = batch.len(), "cannot store inbound messages");
            let message = err.to_string();
            for waiting in batch.drain(..) {
                let _ = waiting.done.send(Err(message.clone()));
            }
        }
    }
}
