//! Policy tests, like `opa test`: files of requests with the decision each must get.
//!
//! ```yaml
//! tests:
//!   - name: service may scale up in production at high severity
//!     request:
//!       type: self_healing
//!       action: scale_up
//!       resource: cluster:production
//!       context: {role: service, metadata: {severity: high}, time: "2026-11-24T14:00:00Z"}
//!     expect: ALLOW
//!     policy: Allow Auto-Scale      # optional: the deciding policy's name
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::files::{Diagnostic, FileKind, discover, read_items};
use crate::model::Effect;
use crate::request::Request;
use crate::snapshot::Snapshot;

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case checks, in words.
    pub name: String,
    /// The request to evaluate.
    pub request: Request,
    /// The decision it must get: `ALLOW` or `DENY`.
    pub expect: Effect,
    /// The name of the policy that must decide, when given.
    #[serde(default)]
    pub policy: Option<String>,
    /// Evaluate with the emergency stop on.
    #[serde(default)]
    pub emergency_stop: bool,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The file the case is in.
    pub file: PathBuf,
    /// The case's name.
    pub name: String,
    /// `None` when it passed, else what went wrong.
    pub failure: Option<String>,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            None => write!(f, "PASS {}: {}", self.file.display(), self.name),
            Some(why) => write!(f, "FAIL {}: {}: {why}", self.file.display(), self.name),
        }
    }
}

/// Every case of a run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// Each case, in file order.
    pub results: Vec<CaseResult>,
}

impl TestReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Reads the test cases under `root` (a folder, or one test file).
pub fn load_tests(root: &Path) -> Result<Vec<(PathBuf, Vec<TestCase>)>, Vec<Diagnostic>> {
    let files = discover(root).map_err(|d| vec![d])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (path, kind) in files {
        if kind != FileKind::Tests {
            continue;
        }
        match read_items::<TestCase>(&path, "tests") {
            Ok(cases) => out.push((path, cases)),
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Runs `cases` against `snapshot`. A case without `context.time` is evaluated at `now`.
pub fn run(
    snapshot: &Arc<Snapshot>,
    cases: &[(PathBuf, Vec<TestCase>)],
    now: DateTime<Utc>,
) -> TestReport {
    let mut report = TestReport::default();
    for (file, file_cases) in cases {
        for case in file_cases {
            let at = case.request.context.time.unwrap_or(now);
            let decision = snapshot.evaluate(&case.request, at, case.emergency_stop);
            let mut failure = None;
            if decision.decision() != case.expect.as_decision() {
                failure = Some(format!(
                    "expected {}, got {} ({})",
                    case.expect.as_decision(),
                    decision.decision(),
                    decision.reason()
                ));
            } else if let Some(want) = &case.policy {
                let got = decision.policy().map(|p| p.name.as_str());
                if got != Some(want.as_str()) {
                    failure = Some(format!(
                        "expected policy `{want}` to decide, got {} ({})",
                        got.map_or_else(|| "no policy".to_owned(), |g| format!("`{g}`")),
                        decision.reason()
                    ));
                }
            }
            report.results.push(CaseResult {
                file: file.clone(),
                name: case.name.clone(),
                failure,
            });
        }
    }
    report
}
