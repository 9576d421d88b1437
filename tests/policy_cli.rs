//! `aegis policy check` and `aegis policy test` as users run them.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_aegis");

fn aegis(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn example_policy_tests_pass() {
    let out = aegis(&["policy", "test", "examples/policies"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.trim_end().ends_with("22 passed, 0 failed"),
        "{stdout}"
    );

    let out = aegis(&["policy", "check", "examples/policies"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn a_failing_case_is_reported_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies/default-policies.yaml"),
        dir.path().join("policies.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wrong_test.yaml"),
        "tests:\n  - name: users may delete users (wrong on purpose)\n    request: {type: api_access, action: delete_user, resource: 'users:1', context: {role: user}}\n    expect: ALLOW\n  - name: admins may\n    request: {type: api_access, action: delete_user, resource: 'users:1', context: {role: admin}}\n    expect: allow\n",
    )
    .unwrap();
    let out = aegis(&["policy", "test", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("expected ALLOW, got DENY (denied by policy `Deny User Delete Operations`"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn a_broken_policy_file_exits_1_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "name: a\ntype: self_healing\neffect: allow\nactions: [scale_up]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "name: b\ntype: self_healing\neffect: allow\nactions: [restart_pod]\nconditions:\n  time: {start: \"09:00\", end: \"17:00\", timezone: Europe/Berlinn}\n",
    )
    .unwrap();
    let out = aegis(&["policy", "check", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = format!("{}:6:", dir.path().join("broken.yaml").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("unknown timezone `Europe/Berlinn`"),
        "{stderr}"
    );
}

#[test]
fn shadowed_policies_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "- {name: freeze, type: self_healing, effect: deny, priority: 100, actions: ['*']}\n\
         - {name: scale, type: self_healing, effect: allow, priority: 10, actions: [scale_up]}\n",
    )
    .unwrap();
    let out = aegis(&["policy", "check", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: policy `scale` (priority 10) can never decide"),
        "{stderr}"
    );
    assert!(stdout.contains("1 warnings"), "{stdout}");
}

#[test]
fn an_invariant_broken_by_a_new_policy_exits_1_naming_it_and_a_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("healing.yaml"),
        r#"policies:
  - name: Allow Scaling
    type: self_healing
    effect: allow
    priority: 10
    actions: [scale_up, restart_pod]
    resources: ["cluster:*/deployment/*"]
    conditions:
      roles: [service]
  - name: Protect kube-system
    type: self_healing
    effect: deny
    priority: 100
    actions: ["*"]
    resources: ["cluster:kube-system/*"]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("guardrails_invariants.yaml"),
        r#"invariants:
  - name: nothing in kube-system
    description: no policy allows any self-healing action in kube-system
    never_allow:
      type: self_healing
      resources: ["cluster:kube-system/*"]
"#,
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let out = aegis(&["policy", "check", path]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("invariant `nothing in kube-system`: holds"),
        "{stdout}"
    );

    // A change that opens kube-system: refused, with the policy and a request.
    std::fs::write(
        dir.path().join("coredns.yaml"),
        r#"name: Restart CoreDNS
type: self_healing
effect: allow
priority: 200
actions: [restart_pod]
resources: ["cluster:kube-system/deployment/coredns"]
"#,
    )
    .unwrap();
    let out = aegis(&["policy", "check", path]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("guardrails_invariants.yaml: error: invariant `nothing in kube-system` is broken by policy `Restart CoreDNS`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            r#""action":"restart_pod","resource":"cluster:kube-system/deployment/coredns""#
        ),
        "{stderr}"
    );
}
