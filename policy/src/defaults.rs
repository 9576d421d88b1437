//! The policies installed on first start: the original design's examples.

use std::path::Path;

use crate::files::{Diagnostic, parse_items};
use crate::model::PolicySpec;

/// The default policies, as YAML (also an example of the file format).
pub const DEFAULT_POLICIES_YAML: &str = include_str!("../defaults/default-policies.yaml");

/// Test cases for the default policies: the original design's scenarios.
pub const DEFAULT_POLICY_TESTS_YAML: &str = include_str!("../defaults/default-policies_test.yaml");

/// The default policies, parsed.
pub fn default_policies() -> Result<Vec<PolicySpec>, Diagnostic> {
    parse_items(
        Path::new("default-policies.yaml"),
        DEFAULT_POLICIES_YAML,
        "policies",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::snapshot::{Origin, Policy, Snapshot};
    use crate::testing::{TestCase, run};

    #[test]
    fn defaults_parse_and_pass_their_scenarios() {
        let specs = default_policies().unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Allow Auto-Scale",
                "Deny Destructive Actions During Peak Hours",
                "Deny User Delete Operations",
                "Admin Full Access",
                "Everyone Manages Themselves",
                "Users Read Detections",
                "Services Send Telemetry",
                "Auditors Read Audit Trails",
                "Allow Service Remediation",
            ]
        );
        let policies: Vec<Policy> = specs
            .into_iter()
            .map(|spec| Policy {
                id: spec.name.clone(),
                spec,
                origin: Origin::Builtin,
            })
            .collect();
        let snapshot = Arc::new(Snapshot::compile(&policies, 1).unwrap());
        let cases: Vec<TestCase> =
            parse_items(Path::new("t.yaml"), DEFAULT_POLICY_TESTS_YAML, "tests").unwrap();
        assert!(cases.len() >= 6);
        let report = run(&snapshot, &[("t.yaml".into(), cases)], Utc::now());
        for r in &report.results {
            assert!(r.failure.is_none(), "{r}");
        }
        assert!(crate::check::shadowed(&policies).is_empty());
    }
}
