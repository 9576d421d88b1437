//! [`PolicyAuditWriter`]: records policy decisions without making the decider wait for the
//! database.
//!
//! Decisions go into a bounded queue; one task takes up to `batch` at a time and appends them
//! to the chain in one transaction (a group commit). [`PolicyAuditSender::record`] returns
//! once its decision's transaction has committed, so a decision answered to a caller is on
//! disk and survives `kill -9`; [`PolicyAuditSender::record_queued`] returns at once (for
//! deciders nobody waits on). When the queue is full, both wait for room: callers slow
//! down, decisions are never dropped. A failed write is retried
//! (with backoff) with the same batch, so a database hiccup delays rows but loses none.
//! [`PolicyAuditWriter::shutdown`] stops intake and flushes everything queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditLog, NewPolicyAudit};
use crate::Store;

/// Queue and batch sizes.
#[derive(Debug, Clone, Copy)]
pub struct AuditWriterOptions {
    /// Decisions the queue holds before callers wait.
    pub capacity: usize,
    /// Decisions written per transaction, at most.
    pub batch: usize,
}

impl Default for AuditWriterOptions {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            batch: 1_000,
        }
    }
}

/// Counters of what the writer did.
#[derive(Debug, Default)]
pub struct AuditWriterStats {
    /// Decisions written.
    pub written: AtomicU64,
    /// Write attempts that failed (and were retried).
    pub failed_attempts: AtomicU64,
}

/// The writer could not take the decision: it has shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the decision audit writer has shut down")]
pub struct WriterClosed;

/// Hands decisions to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicyAuditSender {
    queue: mpsc::Sender<Queued>,
}

/// A decision and, when its sender waits, whom to tell once it is committed.
type Queued = (NewPolicyAudit, Option<oneshot::Sender<()>>);

impl PolicyAuditSender {
    /// Writes a decision: returns once the transaction holding it has committed (waiting
    /// for room first when the queue is full).
    pub async fn record(&self, entry: NewPolicyAudit) -> Result<(), WriterClosed> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send((entry, Some(done)))
            .await
            .map_err(|_| WriterClosed)?;
        committed.await.map_err(|_| WriterClosed)
    }

    /// Queues a decision without waiting for its commit (waiting only for room).
    pub async fn record_queued(&self, entry: NewPolicyAudit) -> Result<(), WriterClosed> {
        self.queue
            .send((entry, None))
            .await
            .map_err(|_| WriterClosed)
    }

    /// Decisions waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The background task that writes queued decisions.
#[derive(Debug)]
pub struct PolicyAuditWriter {
    sender: PolicyAuditSender,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: Arc<AuditWriterStats>,
}

impl PolicyAuditWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn(store: Store, options: AuditWriterOptions) -> Self {
        let (queue, rx) = mpsc::channel(options.capacity.max(1));
        let (stop, stop_rx) = oneshot::channel();
        let stats = Arc::new(AuditWriterStats::default());
        let task = tokio::spawn(run(
            store,
            rx,
            stop_rx,
            options.batch.max(1),
            Arc::clone(&stats),
        ));
        Self {
            sender: PolicyAuditSender { queue },
            stop,
            task,
            stats,
        }
    }

    /// A handle for callers.
    pub fn sender(&self) -> PolicyAuditSender {
        self.sender.clone()
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> &AuditWriterStats {
        &self.stats
    }

    /// Stops taking decisions and writes everything queued; returns how many were written in
    /// total. Waits at most `deadline` (then gives up, logging what was not written).
    pub async fn shutdown(self, deadline: Duration) -> u64 {
        let _ = self.stop.send(());
        drop(self.sender);
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::error!(
                deadline_secs = deadline.as_secs_f64(),
                "decision audit writer did not finish flushing before the deadline"
            );
        }
        self.stats.written.load(Ordering::Relaxed)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Queued>,
    mut stop: oneshot::Receiver<()>,
    batch: usize,
    stats: Arc<AuditWriterStats>,
) {
    let mut buffer = Vec::with_capacity(batch);
    let mut stopping = false;
    loop {
        let received = if stopping {
            rx.recv_many(&mut buffer, batch).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut buffer, batch) => n,
                _ = &mut stop => {
                    // No new decisions from here on; whatever is queued still gets written.
                    stopping = true;
                    rx.close();
                    rx.recv_many(&mut buffer, batch).await
                }
            }
        };
        if received == 0 && buffer.is_empty() {
            break;
        }
        let (rows, waiting): (Vec<NewPolicyAudit>, Vec<Option<oneshot::Sender<()>>>) =
            buffer.drain(..).unzip();
        write_with_retry(&store, &rows, &stats).await;
        for done in waiting.into_iter().flatten() {
            // A caller that gave up waiting is gone; its row is written all the same.
            let _ = done.send(());
        }
    }
}

async fn write_with_retry(store: &Store, batch: &[NewPolicyAudit], stats: &AuditWriterStats) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.append_policy_audit(batch).await {
            Ok(_) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, rows = batch.len(), retry_in_ms = backoff.as_millis() as u64,
                    "writing policy decisions failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
