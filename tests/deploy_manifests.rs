//! The Kubernetes manifests configure Aegis with settings it accepts: every variable of
//! the ConfigMap and the Secret template passes `aegis config print` (an unknown or bad
//! one would stop start-up in the cluster).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

/// `AEGIS_…: "value"` lines of a manifest.
fn variables(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap();
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("AEGIS_"))
        .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

#[test]
fn configmap_and_secret_template_hold_valid_settings() {
    let mut vars = variables("deploy/k8s/configmap.yaml");
    vars.extend(variables("deploy/k8s/secret.template.yaml"));
    assert!(vars.len() >= 10, "{vars:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = common::aegis(dir.path())
        .args(["config", "print"])
        .envs(vars.clone())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every variable names a setting: each shows up in the effective configuration.
    for (k, _) in &vars {
        let key = k.trim_start_matches("AEGIS_").to_ascii_lowercase();
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{k} is not a setting:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("executor_mode = \"kubernetes\""),
        "{stdout}"
    );
    // Secrets are redacted in the printout.
    assert!(!stdout.contains("CHANGE-ME-at-least"), "{stdout}");
}
