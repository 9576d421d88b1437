//! The sections of the configuration file: `[server]`, `[storage]`, `[auth]`, `[engine]`,
//! `[executor]`, `[ingest]`, `[telemetry]`.
//!
//! A file may group its keys under these tables, and inside a section a key may drop the
//! section's prefix (`[engine] tick_ms` is `engine_tick_ms`); the flat keys of earlier
//! files, and every `AEGIS_*` variable, keep working unchanged. The file is turned back into
//! flat keys before it is read, so there is one set of names behind both forms.

use toml::Table;

/// Every section and the keys it holds; each key of [`super::env::KEYS`] is in exactly one.
pub const SECTIONS: [(&str, &[&str]); 7] = [
    (
        "server",
        &[
            "listen",
            "cors_allowed_origins",
            "max_body_bytes",
            "header_read_timeout_secs",
            "body_read_timeout_secs",
            "shutdown_timeout_secs",
            "query_memory_mib",
            "query_memory_total_mib",
        ],
    ),
    (
        "storage",
        &[
            "database_url",
            "database_max_connections",
            "object_store_url",
            "retention_predictions_days",
            "retention_audit_days",
            "audit_export_url",
            "audit_key",
            "audit_previous_keys",
            "audit_keyed_only",
            "audit_spool_dir",
        ],
    ),
    (
        "auth",
        &[
            "jwt_secret",
            "jwt_previous_secrets",
            "jwt_issuer",
            "jwt_audience",
            "rate_limit_per_minute",
            "login_limit_per_account_per_minute",
            "login_limit_per_ip_per_minute",
            "redis_url",
            "signup_enabled",
            "admin_email",
            "admin_password",
        ],
    ),
    (
        "engine",
        &[
            "anomaly_threshold",
            "engine_metrics",
            "engine_tick_ms",
            "engine_resolution_secs",
            "engine_window_secs",
            "engine_baseline_secs",
            "engine_warmup_secs",
            "engine_warmup_rows",
            "engine_max_entities",
            "engine_open_ticks",
            "engine_calm_ticks",
            "engine_scale_step",
            "engine_verify_after_secs",
            "engine_breaker_threshold",
            "policy_dir",
            "shadow_policy_dir",
        ],
    ),
    (
        "executor",
        &[
            "executor_mode",
            "kubeconfig_path",
            "allowed_namespaces",
            "require_action_signature",
            "allow_unsigned_actions",
            "action_secret",
            "executor_min_replicas",
            "executor_max_replicas",
            "executor_max_scale_step",
            "executor_cooldown_secs",
            "executor_blast_radius",
            "executor_blast_window_secs",
            "executor_rate_limit_per_minute",
            "approval_timeout_secs",
            "approval_four_eyes",
        ],
    ),
    (
        "ingest",
        &[
            "ingest_token",
            "ingest_open",
            "max_sample_age_secs",
            "future_grace_secs",
            "max_log_line_bytes",
            "series_idle_secs",
            "prometheus_url",
            "prometheus_queries",
            "loki_url",
            "loki_queries",
            "pull_interval_secs",
            "kafka_brokers",
            "kafka_topics",
            "kafka_group",
        ],
    ),
    ("telemetry", &["log_format", "log_level", "otlp_endpoint"]),
];

/// The flat key `name` stands for inside `section`: the key itself, or the key with the
/// section's prefix (`tick_ms` in `[engine]`); `None` when it is not one of the section's.
fn key_in(section: &str, keys: &[&'static str], name: &str) -> Option<&'static str> {
    keys.iter().copied().find(|k| {
        *k == name
            || k.strip_prefix(section)
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|short| short == name)
    })
}

/// The section a flat key belongs to.
pub fn section_of(key: &str) -> Option<&'static str> {
    SECTIONS
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(name, _)| *name)
}

/// `table` with its sections lifted into flat keys. A key given twice (flat and in its
/// section, or in both of its forms), a key in a section that does not hold it, and a
/// section that is not a table are errors naming the key.
pub fn flatten(table: Table) -> Result<Table, String> {
    let mut flat = Table::new();
    let mut sectioned = Vec::new();
    for (name, value) in table {
        match SECTIONS.iter().find(|(s, _)| *s == name) {
            Some((section, keys)) => {
                let toml::Value::Table(inner) = value else {
                    return Err(format!(
                        "`{name}` is a section: write `[{name}]` and its keys below it"
                    ));
                };
                sectioned.push((*section, *keys, inner));
            }
            // Unknown flat keys are left for the reader, which names them.
            None => {
                flat.insert(name, value);
            }
        }
    }
    for (section, keys, inner) in sectioned {
        for (name, value) in inner {
            let Some(key) = key_in(section, keys, &name) else {
                return Err(match section_of(&name) {
                    Some(home) => format!("`{name}` belongs in [{home}], not in [{section}]"),
                    None => format!("unknown key `{name}` in [{section}]"),
                });
            };
            if flat.contains_key(key) {
                return Err(format!(
                    "`{key}` is set twice: [{section}] {name} and another `{key}`"
                ));
            }
            flat.insert(key.to_owned(), value);
        }
    }
    Ok(flat)
}
