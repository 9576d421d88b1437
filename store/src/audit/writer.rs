//! [`PolicyAuditWriter`]: records policy decisions without making the decider wait for the
//! database.
//!
//! Decisions go into a bounded queue; one task takes up to `batch` at a time and appends them
//! to the chain in one transaction (a group commit). [`PolicyAuditSender::record`] returns
//! once its decision's transaction has committed, so a decision answered to a caller is on
//! disk and survives `kill -9`; [`PolicyAuditSender::record_queued`] returns at once (for
//! deciders nobody waits on). When the queue is full, both wait for room: callers slow
//! down, decisions are never dropped. A write the database cannot take right now (it is
//! down, a connection broke) is retried with backoff, so a hiccup delays rows but loses
//! none. A write the database refuses because of what a row holds (PostgreSQL takes no
//! NUL character in text) can never succeed as it is: the batch is split until the row is
//! found, the rest is written, and that row is stored with its text made storable and a
//! note of the refusal in its reason — one row can never wedge the queue behind it.
//! [`PolicyAuditSender::health`] says when the queue is not draining.
//! [`PolicyAuditWriter::shutdown`] stops intake and flushes everything queued; when the
//! database cannot take it before the deadline, what is left is spooled to a file in
//! `spool_dir` (JSON Lines, fsynced) and written first at the next start, so a shutdown
//! during an outage loses no decision.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditLog, NewPolicyAudit};
use crate::Store;

/// Queue and batch sizes.
#[derive(Debug, Clone)]
pub struct AuditWriterOptions {
    /// Decisions the queue holds before callers wait.
    pub capacity: usize,
    /// Decisions written per transaction, at most.
    pub batch: usize,
    /// Where decisions the database could not take by the shutdown deadline are spooled
    /// (and read back from at start); without one they are logged as lost.
    pub spool_dir: Option<PathBuf>,
}

impl Default for AuditWriterOptions {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            batch: 1_000,
            spool_dir: None,
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
    /// Rows the database refused as given (stored made storable, with a note).
    pub refused: AtomicU64,
    /// Unix milliseconds since when writes have been failing (0: writes succeed).
    pub stalled_since_ms: AtomicI64,
    /// Decisions spooled to disk at shutdown (the database could not take them in time).
    pub spooled: AtomicU64,
    /// Spooled decisions written at start.
    pub recovered: AtomicU64,
}

/// How the writer is doing, for `/health`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditWriterHealth {
    /// `ok`, or `stalled` while writes keep failing (decisions wait in the queue).
    pub status: &'static str,
    /// Decisions waiting to be written.
    pub queued: usize,
    /// Rows the database refused as given since start.
    pub refused: u64,
    /// Seconds the writes have been failing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_for_secs: Option<u64>,
}

/// The writer could not take the decision: it has shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the decision audit writer has shut down")]
pub struct WriterClosed;

/// Hands decisions to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicyAuditSender {
    queue: mpsc::Sender<Queued>,
    stats: Arc<AuditWriterStats>,
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

    /// Whether decisions are being written; `stalled` once writes have failed for longer
    /// than `grace` (a single retry is not worth a page).
    pub fn health(&self, grace: Duration) -> AuditWriterHealth {
        let since = self.stats.stalled_since_ms.load(Ordering::Relaxed);
        let stalled_for = (since > 0)
            .then(|| (now_ms() - since).max(0) as u64 / 1000)
            .filter(|s| *s >= grace.as_secs());
        AuditWriterHealth {
            status: if stalled_for.is_some() {
                "stalled"
            } else {
                "ok"
            },
            queued: self.queued(),
            refused: self.stats.refused.load(Ordering::Relaxed),
            stalled_for_secs: stalled_for,
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The background task that writes queued decisions.
#[derive(Debug)]
pub struct PolicyAuditWriter {
    sender: PolicyAuditSender,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: Arc<AuditWriterStats>,
    /// Set past the shutdown deadline: stop retrying, spool what is left.
    give_up: Arc<AtomicBool>,
    spool_dir: Option<PathBuf>,
}

impl PolicyAuditWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn(store: Store, options: AuditWriterOptions) -> Self {
        let (queue, rx) = mpsc::channel(options.capacity.max(1));
        let (stop, stop_rx) = oneshot::channel();
        let stats = Arc::new(AuditWriterStats::default());
        let give_up = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            store,
            rx,
            stop_rx,
            options.batch.max(1),
            Arc::clone(&stats),
            (Arc::clone(&give_up), options.spool_dir.clone()),
        ));
        Self {
            sender: PolicyAuditSender {
                queue,
                stats: Arc::clone(&stats),
            },
            stop,
            task,
            stats,
            give_up,
            spool_dir: options.spool_dir,
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
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            match &self.spool_dir {
                Some(dir) => {
                    // Stop retrying: what the database did not take goes to the spool.
                    self.give_up.store(true, Ordering::Relaxed);
                    if tokio::time::timeout(Duration::from_secs(10), &mut task)
                        .await
                        .is_err()
                    {
                        tracing::error!(dir = %dir.display(), "decision audit writer could not spool before exiting");
                    }
                }
                None => tracing::error!(
                    deadline_secs = deadline.as_secs_f64(),
                    "decision audit writer did not finish flushing before the deadline, and no spool_dir is set: queued decisions are lost"
                ),
            }
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
    (give_up, spool_dir): (Arc<AtomicBool>, Option<PathBuf>),
) {
    if let Some(dir) = &spool_dir {
        recover(&store, dir, &stats, &give_up).await;
    }
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
        if let Err(left) = write_with_retry(&store, &rows, &stats, &give_up).await {
            // Past the shutdown deadline with the database still refusing: this batch's
            // rest and everything queued go to the spool (waiting callers learn it was not
            // committed: their senders are dropped).
            let mut left = left;
            rx.close();
            while let Ok((row, _)) = rx.try_recv() {
                left.push(row);
            }
            if let Some(dir) = &spool_dir {
                spool(dir, left, &stats);
            }
            return;
        }
        for done in waiting.into_iter().flatten() {
            // A caller that gave up waiting is gone; its row is written all the same.
            let _ = done.send(());
        }
    }
}

/// Writes `rows` to a new spool file in `dir` (fsynced, then renamed into place, so a file
/// is whole or absent). Every decision gets its time now, if it had none, so it keeps it.
fn spool(dir: &Path, rows: Vec<NewPolicyAudit>, stats: &AuditWriterStats) {
    use std::io::Write;
    if rows.is_empty() {
        return;
    }
    let now = chrono::Utc::now();
    let name = format!(
        "policy-audit-{}-{}.jsonl",
        now.timestamp_millis(),
        std::process::id()
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::File::create(&tmp)?;
        for mut row in rows.iter().cloned() {
            row.created_at.get_or_insert(now);
            let line = serde_json::to_string(&row).map_err(std::io::Error::other)?;
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the folder is.
        std::fs::File::open(dir)?.sync_all()
    })();
    match written {
        Ok(()) => {
            stats
                .spooled
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            tracing::warn!(decisions = rows.len(), file = %path.display(),
                "the database could not take these policy decisions before shutdown: spooled; they are written at the next start");
        }
        Err(error) => {
            tracing::error!(%error, decisions = rows.len(), dir = %dir.display(),
                "spooling policy decisions failed: they are lost");
        }
    }
}

/// Writes the decisions of every spool file in `dir` (oldest first), removing each file
/// once its rows are committed. A file that does not parse is kept (renamed `.bad`) and
/// logged, never dropped.
async fn recover(store: &Store, dir: &Path, stats: &AuditWriterStats, give_up: &AtomicBool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("policy-audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for file in files {
        let rows: Result<Vec<NewPolicyAudit>, String> = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
                    .collect()
            });
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                let bad = file.with_extension("jsonl.bad");
                let _ = std::fs::rename(&file, &bad);
                tracing::error!(%error, file = %bad.display(), "a policy decision spool file does not parse: kept aside, not written");
                continue;
            }
        };
        if write_with_retry(store, &rows, stats, give_up)
            .await
            .is_err()
        {
            // Shut down again before the database came back: the file stays for next time.
            return;
        }
        stats
            .recovered
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        if let Err(error) = std::fs::remove_file(&file) {
            tracing::error!(%error, file = %file.display(), "a written spool file could not be removed: its decisions would be written again at the next start");
        } else {
            tracing::info!(decisions = rows.len(), file = %file.display(), "spooled policy decisions written");
        }
    }
}

/// Writes `batch`, retrying failures with backoff until it is written or `give_up` is set
/// (then the rows not written come back).
async fn write_with_retry(
    store: &Store,
    batch: &[NewPolicyAudit],
    stats: &AuditWriterStats,
    give_up: &AtomicBool,
) -> Result<(), Vec<NewPolicyAudit>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match store.append_policy_audit(batch).await {
            Ok(_) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.stalled_since_ms.store(0, Ordering::Relaxed);
                return Ok(());
            }
            Err(error) if error.is_refusal() => {
                if batch.len() > 1 {
                    // Find the row: each half on its own, in order.
                    let (a, b) = batch.split_at(batch.len() / 2);
                    if let Err(mut left) =
                        Box::pin(write_with_retry(store, a, stats, give_up)).await
                    {
                        left.extend_from_slice(b);
                        return Err(left);
                    }
                    return Box::pin(write_with_retry(store, b, stats, give_up)).await;
                }
                let Some(row) = batch.first() else {
                    return Ok(());
                };
                let fixed = storable(row, &error.to_string());
                match store
                    .append_policy_audit(std::slice::from_ref(&fixed))
                    .await
                {
                    Ok(_) => {
                        tracing::error!(%error, action = %fixed.action, user = ?fixed.user_id,
                            "the database refused a policy decision as given; stored it with its text made storable");
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        stats.stalled_since_ms.store(0, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(again) => again,
                }
            }
            Err(error) => error,
        };
        stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if give_up.load(Ordering::Relaxed) {
            return Err(batch.to_vec());
        }
        let _ = stats.stalled_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        tracing::warn!(%error, rows = batch.len(), retry_in_ms = backoff.as_millis() as u64,
            "writing policy decisions failed; retrying");
        // Sleep in short steps so a shutdown past its deadline is seen at once.
        let until = tokio::time::Instant::now() + backoff;
        while tokio::time::Instant::now() < until && !give_up.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50).min(backoff)).await;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Longest text field kept of a refused row (its characters beyond are cut, with a mark).
const REFUSED_TEXT_MAX: usize = 4_096;

/// A refused row made storable: NUL characters become U+FFFD, very long text is cut, and
/// the reason says so and why, so the audit trail shows the decision and that it was
/// altered to be kept.
fn storable(row: &NewPolicyAudit, error: &str) -> NewPolicyAudit {
    fn text(s: &str) -> String {
        let mut t: String = s.replace('\0', "\u{FFFD}");
        if t.len() > REFUSED_TEXT_MAX {
            let mut end = REFUSED_TEXT_MAX;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
            t.push_str("…[cut]");
        }
        t
    }
    fn json(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(text(s)),
            serde_json::Value::Array(a) => a.iter().map(json).collect(),
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (text(k), json(v))).collect(),
            other => other.clone(),
        }
    }
    let opt = |o: &Option<String>| o.as_deref().map(text);
    NewPolicyAudit {
        created_at: row.created_at,
        request_id: opt(&row.request_id),
        policy_type: text(&row.policy_type),
        action: text(&row.action),
        resource: text(&row.resource),
        user_id: opt(&row.user_id),
        role: opt(&row.role),
        decision: text(&row.decision),
        policy_id: opt(&row.policy_id),
        policy_name: opt(&row.policy_name),
        reason: format!(
            "{} [stored altered: the database refused the row as given ({}); NUL characters replaced by U+FFFD, text over {REFUSED_TEXT_MAX} bytes cut]",
            text(&row.reason),
            text(error)
        ),
        context: json(&row.context),
        evaluated_in_us: row.evaluated_in_us,
    }
}
