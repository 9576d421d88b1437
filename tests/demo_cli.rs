//! `aegis demo` runs the real pipeline over generated telemetry and reports all three
//! injected scenarios: the CPU spike scaled, the crash loop rolled back, the restart in
//! peak hours denied — with scores, explanations, the deciding policies and the audit rows.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

#[test]
fn the_demo_reports_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = common::run(dir.path(), "sqlite::memory:", &["demo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The CPU spike: detected with a score and explanation, allowed, dry-run scaled.
    assert!(out.contains("production/api at 13:10"), "{out}");
    assert!(out.contains("driven by cpu_usage_zscore"), "{out}");
    assert!(out.contains("ALLOW by Allow Auto-Scale"), "{out}");
    assert!(
        out.contains("would kubectl scale deployment/api -n production"),
        "{out}"
    );
    // The crash loop: rolled back (dry run).
    assert!(
        out.contains("would kubectl rollout undo deployment/worker -n production"),
        "{out}"
    );
    // The destructive action at peak hours: denied, nothing executed.
    assert!(
        out.contains("DENY by Deny Destructive Actions During Peak Hours"),
        "{out}"
    );
    assert!(!out.contains("deployment/checkout -n production"), "{out}");
    // kube-system: detected, denied by default.
    assert!(
        out.contains("DENY  scale_up             cluster:kube-system/deployment/coredns"),
        "{out}"
    );
    // The audit rows, and the chains verified.
    assert!(out.contains("result scale_deployment"), "{out}");
    // One approval: the crash loop's rollback waits for the operator, then runs.
    assert!(out.contains("Approvals (1):"), "{out}");
    assert!(
        out.contains("rollback_deployment production/deployment/worker — held by `Rollbacks Need Approval`; the approver saw: dry run: would kubectl rollout undo deployment/worker -n production"),
        "{out}"
    );
    assert!(
        out.contains("approved by demo-operator, then carried out through the guards: dry_run"),
        "{out}"
    );
    // "Why not": the remediation policy that would have allowed the peak-hours restart.
    assert!(
        out.contains("why not          Allow Service Remediation (ALLOW 20): matched, but `Deny Destructive Actions During Peak Hours` decided first"),
        "{out}"
    );
    assert!(out.contains("Audit chains verified: intact."), "{out}");
    // `--scenario` narrows it; an unknown one is an error.
    let (code, _, err) = common::run(
        dir.path(),
        "sqlite::memory:",
        &["demo", "--scenario", "nope"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no scenario named `nope`"), "{err}");
}
