//! `aegis policy check` and `aegis policy test`: GitOps checks for policy folders, no server
//! or database needed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use aegis_policy::files::load_invariants;
use aegis_policy::invariants::{Verdict, prove};
use aegis_policy::{Diagnostic, Level, Snapshot, load_policies, testing};

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// Validates policy files; exit 1 with `file:line:column` messages on error.
pub fn check(path: &Path) -> ExitCode {
    match load_policies(path) {
        Ok(set) => {
            print_diagnostics(&set.warnings);
            if let Err(e) = Snapshot::compile(&set.policies, 1) {
                eprintln!("{}: error: {e}", path.display());
                return ExitCode::FAILURE;
            }
            let warnings = set
                .warnings
                .iter()
                .filter(|w| w.level == Level::Warning)
                .count();
            println!(
                "{} policies in {} files: ok ({warnings} warnings)",
                set.policies.len(),
                set.files
            );
            check_invariants(path, &set.policies)
        }
        Err(errors) => {
            print_diagnostics(&errors);
            eprintln!("{} errors", errors.len());
            ExitCode::FAILURE
        }
    }
}

/// Proves every invariant under `path` over `policies`; exit 1 naming the policy and a
/// request that breaks one (or one the prover cannot decide).
fn check_invariants(path: &Path, policies: &[aegis_policy::Policy]) -> ExitCode {
    let invariants = match load_invariants(path) {
        Ok(i) => i,
        Err(errors) => {
            print_diagnostics(&errors);
            eprintln!("{} errors", errors.len());
            return ExitCode::FAILURE;
        }
    };
    if invariants.is_empty() {
        return ExitCode::SUCCESS;
    }
    let mut broken = 0;
    for (file, inv) in &invariants {
        match prove(inv, policies) {
            Verdict::Holds => println!("invariant `{}`: holds", inv.name),
            Verdict::Broken {
                policy,
                name,
                request,
                at,
            } => {
                broken += 1;
                let request = serde_json::to_string(&request).unwrap_or_default();
                eprintln!(
                    "{}: error: invariant `{}` is broken by policy `{name}` ({policy}): it allows {request} at {}",
                    file.display(),
                    inv.name,
                    at.to_rfc3339()
                );
            }
            Verdict::Undecided { policy, reason } => {
                broken += 1;
                eprintln!(
                    "{}: error: invariant `{}` cannot be proved for policy {policy}: {reason}",
                    file.display(),
                    inv.name
                );
            }
        }
    }
    if broken > 0 {
        eprintln!("{broken} of {} invariants broken", invariants.len());
        return ExitCode::FAILURE;
    }
    println!("{} invariants hold", invariants.len());
    ExitCode::SUCCESS
}

/// Runs the test cases under `path` against the policies under `policies` (default: the
/// folder of `path`); prints `N passed, M failed`, exit 1 on any failure.
pub fn test(path: &Path, policies: Option<&Path>, verbose: bool) -> ExitCode {
    let policy_root = match policies {
        Some(p) => p.to_path_buf(),
        None if path.is_file() => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        None => path.to_path_buf(),
    };
    let set = match load_policies(&policy_root) {
        Ok(set) => set,
        Err(errors) => {
            print_diagnostics(&errors);
            eprintln!("the policies do not load; no test ran");
            return ExitCode::FAILURE;
        }
    };
    let snapshot = match Snapshot::compile(&set.policies, 1) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{}: error: {e}", policy_root.display());
            return ExitCode::FAILURE;
        }
    };
    let cases = match testing::load_tests(path) {
        Ok(cases) => cases,
        Err(errors) => {
            print_diagnostics(&errors);
            eprintln!("the test files do not load; no test ran");
            return ExitCode::FAILURE;
        }
    };
    let report = testing::run(&snapshot, &cases, chrono::Utc::now());
    for result in &report.results {
        if result.failure.is_some() || verbose {
            println!("{result}");
        }
    }
    if report.results.is_empty() {
        eprintln!("no test cases found (test files end in _test.yaml, _test.yml or _test.json)");
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    if report.failed() == 0 && !report.results.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
