//! [`PolicyEngine`]: the current snapshot behind an atomic pointer, plus the emergency stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::request::Request;
use crate::snapshot::{CompileError, Decision, Policy, Snapshot};

/// The policies the engine combines: those from the database and those from files.
#[derive(Debug, Default)]
struct Sources {
    database: Vec<Policy>,
    files: Vec<Policy>,
}

/// Evaluates requests against the current snapshot. `evaluate` never blocks: it loads the
/// snapshot pointer and reads an atomic flag; updates compile a new snapshot off to the side
/// and swap it in, so a reader sees either the old set or the new one, never a mix.
#[derive(Debug)]
pub struct PolicyEngine {
    current: ArcSwap<Snapshot>,
    emergency_stop: AtomicBool,
    generation: AtomicU64,
    /// Held only while installing a new set, never while evaluating.
    sources: Mutex<Sources>,
}

impl Default for PolicyEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyEngine {
    /// An engine with no policies: everything is denied until policies are installed.
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            emergency_stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            sources: Mutex::new(Sources::default()),
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Decides `req` now (the request's `context.time` is ignored: enforcement uses the clock).
    pub fn evaluate(&self, req: &Request) -> Decision {
        self.evaluate_at(req, Utc::now())
    }

    /// Decides `req` as if it were `at` (what-if questions, tests).
    pub fn evaluate_at(&self, req: &Request, at: DateTime<Utc>) -> Decision {
        let snapshot = self.current.load();
        Snapshot::evaluate(
            &snapshot,
            req,
            at,
            self.emergency_stop.load(Ordering::Acquire),
        )
    }

    /// Replaces the policies that come from the database and swaps in a new snapshot.
    /// On error the snapshot in force stays.
    pub fn set_database_policies(
        &self,
        policies: Vec<Policy>,
    ) -> Result<Arc<Snapshot>, CompileError> {
        self.rebuild(|s| s.database = policies)
    }

    /// Replaces the policies that come from files and swaps in a new snapshot.
    /// On error the snapshot in force stays.
    pub fn set_file_policies(&self, policies: Vec<Policy>) -> Result<Arc<Snapshot>, CompileError> {
        self.rebuild(|s| s.files = policies)
    }

    /// The policies in force by source: `(database, files)`.
    pub fn sources(&self) -> (Vec<Policy>, Vec<Policy>) {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        (sources.database.clone(), sources.files.clone())
    }

    fn rebuild(&self, change: impl FnOnce(&mut Sources)) -> Result<Arc<Snapshot>, CompileError> {
        // A poisoned lock only means another installer panicked; the sources are whole.
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Sources {
            database: sources.database.clone(),
            files: sources.files.clone(),
        };
        change(&mut next);
        let all: Vec<Policy> = next.database.iter().chain(&next.files).cloned().collect();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let snapshot = Arc::new(Snapshot::compile(&all, generation)?);
        *sources = next;
        self.current.store(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Turns the emergency stop on: every self-healing ALLOW becomes DENY at once.
    pub fn emergency_stop(&self) {
        self.emergency_stop.store(true, Ordering::Release);
    }

    /// Turns the emergency stop off.
    pub fn resume(&self) {
        self.emergency_stop.store(false, Ordering::Release);
    }

    /// True while the emergency stop is on.
    pub fn is_stopped(&self) -> bool {
        self.emergency_stop.load(Ordering::Acquire)
    }
}
