//! Group commit. Callers hand their write to one committer task, which writes every
//! request waiting at that moment in one transaction and answers each caller once it
//! has committed: a write is still acknowledged only once it is durable, but concurrent
//! writes share a commit (and SQLite's single writer) and, through the store's
//! multi-row statements, their round trips. No timer: a lone request is committed at
//! once, so an idle dashd adds no latency; under load, batches grow by themselves while
//! the previous commit runs (up to [`MAX_BATCH`]).
//!
//! Two queues use it: inbound messages (a webhook is answered 2xx only once its message
//! is stored) and the dispatcher's sent marks (each with its send attempt).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, StoreResult};

/// Requests committed together, at most.
pub(crate) const MAX_BATCH: usize = 256;
/// Requests waiting for the committer, at most (the backlog bound limits them first).
const QUEUE: usize = 4096;

/// One caller's request and where its answer goes.
struct Waiting<T, R> {
    request: T,
    done: oneshot::Sender<Result<R, String>>,
}

/// The callers' side: [`GroupCommit::submit`] returns once the request is committed.
#[derive(Debug)]
pub(crate) struct GroupCommit<T, R> {
    sender: mpsc::Sender<Waiting<T, R>>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Waiting<T, R>>>>,
    /// Commits and requests committed so far (`rows / commits` is the mean batch).
    commits: AtomicU64,
    rows: AtomicU64,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        GroupCommit {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            commits: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Commits the request with whatever else is waiting; its answer once committed.
    pub(crate) async fn submit(&self, request: T) -> Result<R, StoreError> {
        let (done, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("dashd is shutting down".into());
        self.sender
            .send(Waiting { request, done })
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => Err(StoreError::Unavailable(message)),
            Err(_) => Err(stopped()),
        }
    }

    /// (commits, requests) since start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }

    /// The committer: runs until `shutdown`, then commits what was already handed over.
    /// `commit` writes a batch in one transaction and answers each request, in order.
    pub(crate) async fn run<F, Fut>(&self, shutdown: CancellationToken, commit: F)
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = StoreResult<Vec<R>>>,
    {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut batch: Vec<Waiting<T, R>> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => None,
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
            self.commit(&mut batch, &commit).await;
        }
        // Stopping: what callers already handed over is committed and answered.
        receiver.close();
        while let Ok(next) = receiver.try_recv() {
            batch.push(next);
            if batch.len() == MAX_BATCH {
                self.commit(&mut batch, &commit).await;
            }
        }
        if !batch.is_empty() {
            self.commit(&mut batch, &commit).await;
        }
    }

    async fn commit<F, Fut>(&self, batch: &mut Vec<Waiting<T, R>>, commit: &F)
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = StoreResult<Vec<R>>>,
    {
        let (requests, answers): (Vec<T>, Vec<_>) =
            batch.drain(..).map(|w| (w.request, w.done)).unzip();
        let count = requests.len();
        let result = commit(requests).await;
        self.commits.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(done) if done.len() == count => {
                self.rows.fetch_add(count as u64, Ordering::Relaxed);
                for (answer, result) in answers.into_iter().zip(done) {
                    // A caller that went away (a webhook's client hung up) finds its
                    // write committed all the same.
                    let _ = answer.send(Ok(result));
                }
            }
            Ok(done) => {
                let message = format!("the store answered {} of {count} writes", done.len());
                tracing::error!(message, "group commit");
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, writes = count, "group commit failed");
                let message = err.to_string();
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Under any offered load a commit holds at most MAX_BATCH requests, and every
    /// request is answered with its own result.
    #[tokio::test]
    async fn batches_are_bounded_and_answers_go_to_their_callers() {
        let queue = Arc::new(GroupCommit::<usize, usize>::new());
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let committer = {
            let (queue, sizes, shutdown) = (queue.clone(), sizes.clone(), shutdown.clone());
            tokio::spawn(async move {
                queue
                    .run(shutdown, move |batch: Vec<usize>| {
                        let sizes = sizes.clone();
                        async move {
                            sizes.lock().unwrap().push(batch.len());
                            // A slow commit lets the queue fill behind it.
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            Ok(batch.into_iter().map(|n| n * 2).collect())
                        }
                    })
                    .await;
            })
        };
        let callers: Vec<_> = (0..1500)
            .map(|n| {
                let queue = queue.clone();
                tokio::spawn(async move { (n, queue.submit(n).await.unwrap()) })
            })
            .collect();
        for caller in callers {
            let (n, answer) = caller.await.unwrap();
            assert_eq!(answer, n * 2);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 1500);
        assert!(sizes.iter().all(|s| *s <= MAX_BATCH), "{sizes:?}");
        assert!(
            sizes.contains(&MAX_BATCH),
            "the queue never filled a batch: {sizes:?}"
        );
        assert_eq!(queue.counts(), (sizes.len() as u64, 1500));
        shutdown.cancel();
        committer.await.unwrap();
    }

    /// A failed commit answers every caller of that batch with the error.
    #[tokio::test]
    async fn a_failed_commit_fails_its_whole_batch() {
        let queue = Arc::new(GroupCommit::<u8, u8>::new());
        let shutdown = CancellationToken::new();
        let (runner, stop) = (queue.clone(), shutdown.clone());
        tokio::spawn(async move {
            runner
                .run(stop, |_batch: Vec<u8>| async {
                    Err(StoreError::Unavailable("disk full".into()))
                })
                .await;
        });
        let err = queue.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        shutdown.cancel();
    }
}
