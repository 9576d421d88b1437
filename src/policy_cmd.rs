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

/// `7d`, `24h`, `90m`, `30s` before now, a date or an RFC 3339 time.
fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    let split = s.len().saturating_sub(1);
    if let (Ok(n), Some(unit)) = (s[..split].parse::<i64>(), s.get(split..)) {
        let d = match unit {
            "d" => chrono::Duration::try_days(n),
            "h" => chrono::Duration::try_hours(n),
            "m" => chrono::Duration::try_minutes(n),
            "s" => chrono::Duration::try_seconds(n),
            _ => None,
        };
        if let Some(d) = d.filter(|_| n >= 0) {
            return Ok(chrono::Utc::now() - d);
        }
    }
    crate::audit_export::parse_time(s)
        .map_err(|_| anyhow::anyhow!("`--since {s}`: use 7d, 24h, 90m, a date or an RFC 3339 time"))
}

/// The request a recorded decision answered, rebuilt from its audit row.
fn recorded_request(row: &aegis_store::PolicyAuditRow) -> Option<aegis_policy::Request> {
    let policy_type = match row.policy_type.as_str() {
        "self_healing" => aegis_policy::PolicyType::SelfHealing,
        "api_access" => aegis_policy::PolicyType::ApiAccess,
        _ => return None,
    };
    let metadata = row.context["metadata"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let time = row.context["time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    // The question was about the subject (rows since the actor and the subject were told
    // apart carry it in `context.subject`); older rows name only one, as the user.
    let subject = &row.context["subject"];
    let (user_id, role) = if subject.is_object() {
        (
            subject["user_id"].as_str().map(str::to_owned),
            subject["role"].as_str().map(str::to_owned),
        )
    } else {
        (row.user_id.clone(), row.role.clone())
    };
    Some(aegis_policy::Request {
        action: row.action.clone(),
        resource: row.resource.clone(),
        policy_type,
        context: aegis_policy::Context {
            user_id,
            role: None,
            roles: role
                .as_deref()
                .map(|r| r.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            metadata,
            time,
        },
    })
}

/// `aegis policy replay --policies PATH --since 7d`: every recorded decision of the type
/// since then, evaluated against the candidate set at the time it was made (the request's
/// own time when it asked "what if", else when it was recorded); prints those the
/// candidate decides differently: what it would have blocked, and what it would have
/// allowed that the live set denied.
pub async fn replay(
    config: &crate::config::Config,
    policies: &Path,
    since: &str,
    policy_type: &str,
) -> anyhow::Result<ExitCode> {
    use aegis_store::PolicyStore;
    let since = parse_since(since)?;
    if !["self_healing", "api_access"].contains(&policy_type) {
        anyhow::bail!("`--type {policy_type}`: use self_healing or api_access");
    }
    let set = load_policies(policies).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let snapshot = Arc::new(Snapshot::compile(&set.policies, 1)?);
    let store = crate::cli::open_store(config).await?;
    let mut rows = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_policy_audit(&aegis_store::PolicyAuditQuery {
                policy_type: Some(policy_type.to_owned()),
                from: Some(since),
                before_id,
                limit: 1_000,
                ..Default::default()
            })
            .await?;
        let done = page.len() < 1_000;
        before_id = page.last().map(|r| r.id);
        rows.extend(page);
        if done || before_id.is_none() {
            break;
        }
    }
    store.close().await;
    rows.sort_by_key(|r| r.id);
    let (mut blocked, mut opened, mut same, mut skipped) = (0usize, 0usize, 0usize, 0usize);
    println!(
        "replaying {} {policy_type} decisions since {} against {} ({} policies)",
        rows.len(),
        since.to_rfc3339(),
        policies.display(),
        set.policies.len()
    );
    for row in &rows {
        let Some(req) = recorded_request(row) else {
            skipped += 1;
            continue;
        };
        // Administrative rows (the emergency stop's) are not decisions about an action.
        if matches!(row.action.as_str(), "emergency_stop" | "emergency_resume")
            && row.resource == "*"
        {
            skipped += 1;
            continue;
        }
        let at = req.context.time.unwrap_or(row.created_at);
        let candidate = snapshot.evaluate(&req, at, false);
        let live_allowed = row.decision == "ALLOW";
        if candidate.allowed() == live_allowed {
            same += 1;
            continue;
        }
        let verdict = if live_allowed {
            blocked += 1;
            "would block"
        } else {
            opened += 1;
            "would allow"
        };
        println!(
            "{verdict}  #{} {} {} {} — live: {} by {}; candidate: {}",
            row.id,
            row.created_at.to_rfc3339(),
            row.action,
            row.resource,
            row.decision,
            row.policy_name.as_deref().unwrap_or("(no policy)"),
            candidate.reason()
        );
    }
    println!(
        "{blocked} would be blocked, {opened} would be allowed that were denied, {same} unchanged{}",
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
