//! The sections of the configuration file: `[server]`, `[storage]`, `[auth]`, `[engine]`,
//! `[executor]`, `[ingest]`, `[telemetry]`.
//!
//! A file may group its keys under these tables, and inside a section a key may drop the
//! section's prefix (`[engine] tick_ms` is `engine_tick_ms`); the flat keys of earlier
//! files, and every `AEGIS_*` variable, keep working unchanged. The file is turned back into
//! flat keys before it is read, so there is one set of names behind both forms.

use toml::Table;

/// The sections, in the order the reference lists them.
pub const SECTIONS: [&str; 8] = [
    "server",
    "storage",
    "auth",
    "engine",
    "executor",
    "ingest",
    "telemetry",
    "notify",
];

/// The section a flat key belongs to; `None` for a key no rule places (a new key must be
/// given a section here: a test checks every key has one).
pub fn section_of(key: &str) -> Option<&'static str> {
    let p = |prefix: &str| key.starts_with(prefix);
    Some(match key {
        "anomaly_threshold" | "policy_dir" | "shadow_policy_dir" | "alert_actions" => "engine",
        _ if p("engine_") => "engine",
        "kubeconfig_path"
        | "allowed_namespaces"
        | "require_action_signature"
        | "allow_unsigned_actions"
        | "action_secret" => "executor",
        _ if p("executor_") || p("approval_") => "executor",
        "rate_limit_per_minute"
        | "redis_url"
        | "signup_enabled"
        | "admin_email"
        | "admin_password" => "auth",
        _ if p("jwt_") || p("login_limit_") => "auth",
        "object_store_url" => "storage",
        _ if p("database_") || p("retention_") || p("audit_") => "storage",
        "ingest_token"
        | "ingest_open"
        | "max_sample_age_secs"
        | "future_grace_secs"
        | "max_log_line_bytes"
        | "series_idle_secs"
        | "pull_interval_secs" => "ingest",
        _ if p("kafka_") || p("prometheus_") || p("loki_") => "ingest",
        "alertmanager_url" => "notify",
        _ if p("notify_") => "notify",
        "otlp_endpoint" => "telemetry",
        _ if p("log_") => "telemetry",
        "listen"
        | "cors_allowed_origins"
        | "max_body_bytes"
        | "header_read_timeout_secs"
        | "body_read_timeout_secs"
        | "shutdown_timeout_secs"
        | "query_memory_mib"
        | "query_memory_total_mib" => "server",
        _ => return None,
    })
}

/// The flat key `name` stands for inside `section`: the key itself, or the key with the
/// section's prefix (`tick_ms` in `[engine]`); `None` when it is not one of the section's.
fn key_in(section: &str, name: &str) -> Option<&'static str> {
    super::env::KEYS.iter().copied().find(|k| {
        section_of(k) == Some(section)
            && (*k == name
                || k.strip_prefix(section)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|short| short == name))
    })
}

/// `table` with its sections lifted into flat keys. A key given twice (flat and in its
/// section, or in both of its forms), a key in a section that does not hold it, and a
/// section that is not a table are errors naming the key.
pub fn flatten(table: Table) -> Result<Table, String> {
    let mut flat = Table::new();
    let mut sectioned = Vec::new();
    for (name, value) in table {
        match SECTIONS.iter().find(|s| **s == name) {
            Some(section) => {
                let toml::Value::Table(inner) = value else {
                    return Err(format!(
                        "`{name}` is a section: write `[{name}]` and its keys below it"
                    ));
                };
                sectioned.push((*section, inner));
            }
            // Unknown flat keys are left for the reader, which names them.
            None => {
                flat.insert(name, value);
            }
        }
    }
    for (section, inner) in sectioned {
        for (name, value) in inner {
            let Some(key) = key_in(section, &name) else {
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
