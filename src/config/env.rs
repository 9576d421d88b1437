//! The only place that reads `AEGIS_*` environment variables.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::{Config, ConfigError, Origin, Secret};

/// Prefix of every Aegis environment variable.
pub const PREFIX: &str = "AEGIS_";

/// Every configuration key; `AEGIS_` + the key in upper case is its variable.
pub const KEYS: &[&str] = &[
    "listen",
    "database_url",
    "database_max_connections",
    "jwt_secret",
    "jwt_previous_secrets",
    "audit_key",
    "audit_previous_keys",
    "audit_keyed_only",
    "audit_spool_dir",
    "jwt_issuer",
    "jwt_audience",
    "rate_limit_per_minute",
    "login_limit_per_account_per_minute",
    "login_limit_per_ip_per_minute",
    "cors_allowed_origins",
    "redis_url",
    "prometheus_url",
    "loki_url",
    "object_store_url",
    "retention_predictions_days",
    "retention_audit_days",
    "audit_export_url",
    "prometheus_queries",
    "loki_queries",
    "pull_interval_secs",
    "anomaly_threshold",
    "kubeconfig_path",
    "allowed_namespaces",
    "require_action_signature",
    "allow_unsigned_actions",
    "action_secret",
    "executor_mode",
    "executor_min_replicas",
    "executor_max_replicas",
    "executor_max_scale_step",
    "executor_cooldown_secs",
    "executor_blast_radius",
    "executor_blast_window_secs",
    "approval_timeout_secs",
    "approval_four_eyes",
    "executor_rate_limit_per_minute",
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
    "alert_actions",
    "alertmanager_url",
    "notify_webhook_url",
    "notify_webhook_secret",
    "notify_events",
    "notify_resend_secs",
    "kafka_brokers",
    "kafka_topics",
    "kafka_group",
    "ingest_token",
    "ingest_open",
    "signup_enabled",
    "policy_dir",
    "shadow_policy_dir",
    "admin_email",
    "admin_password",
    "log_format",
    "log_level",
    "otlp_endpoint",
    "max_body_bytes",
    "max_sample_age_secs",
    "future_grace_secs",
    "max_log_line_bytes",
    "series_idle_secs",
    "query_memory_mib",
    "query_memory_total_mib",
    "shutdown_timeout_secs",
    "header_read_timeout_secs",
    "body_read_timeout_secs",
];

/// Variables with the prefix that are not settings but are read elsewhere on purpose.
const NOT_SETTINGS: &[&str] = &["AEGIS_CONFIG", "AEGIS_TEST_POSTGRES_URL"];

/// The environment variable of `key`.
pub fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.to_ascii_uppercase())
}

fn parse<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    raw.trim().parse::<T>().map_err(|e| format!("`{raw}`: {e}"))
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "`{raw}` is not a boolean; expected `true` or `false`"
        )),
    }
}

/// A comma-separated list; blanks around items and empty items are dropped.
fn parse_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An optional value: empty means unset.
fn optional(raw: &str) -> Option<String> {
    let raw = raw.trim();
    (!raw.is_empty()).then(|| raw.to_owned())
}

/// Sets `key` from its variable's text.
fn set(config: &mut Config, key: &str, raw: &str) -> Result<(), String> {
    match key {
        "listen" => config.listen = parse(raw)?,
        "database_url" => config.database_url = raw.trim().to_owned(),
        "database_max_connections" => config.database_max_connections = parse(raw)?,
        "jwt_secret" => config.jwt_secret = optional(raw).map(Secret::new),
        "audit_key" => config.audit_key = optional(raw).map(Secret::new),
        "audit_previous_keys" => {
            config.audit_previous_keys = parse_list(raw).into_iter().map(Secret::new).collect();
        }
        "audit_keyed_only" => config.audit_keyed_only = parse_bool(raw)?,
        "audit_spool_dir" => config.audit_spool_dir = optional(raw).map(Into::into),
        "jwt_previous_secrets" => {
            config.jwt_previous_secrets = parse_list(raw).into_iter().map(Secret::new).collect();
        }
        "jwt_issuer" => config.jwt_issuer = raw.trim().to_owned(),
        "jwt_audience" => config.jwt_audience = raw.trim().to_owned(),
        "rate_limit_per_minute" => config.rate_limit_per_minute = parse(raw)?,
        "login_limit_per_account_per_minute" => {
            config.login_limit_per_account_per_minute = parse(raw)?;
        }
        "login_limit_per_ip_per_minute" => config.login_limit_per_ip_per_minute = parse(raw)?,
        "cors_allowed_origins" => config.cors_allowed_origins = parse_list(raw),
        "redis_url" => config.redis_url = optional(raw),
        "prometheus_url" => config.prometheus_url = optional(raw),
        "loki_url" => config.loki_url = optional(raw),
        "object_store_url" => config.object_store_url = optional(raw),
        "retention_predictions_days" => config.retention_predictions_days = parse(raw)?,
        "retention_audit_days" => config.retention_audit_days = parse(raw)?,
        "audit_export_url" => config.audit_export_url = optional(raw),
        "prometheus_queries" => config.prometheus_queries = parse_list(raw),
        "loki_queries" => config.loki_queries = parse_list(raw),
        "pull_interval_secs" => config.pull_interval_secs = parse(raw)?,
        "anomaly_threshold" => config.anomaly_threshold = parse(raw)?,
        "kubeconfig_path" => config.kubeconfig_path = optional(raw).map(Into::into),
        "allowed_namespaces" => config.allowed_namespaces = parse_list(raw),
        "require_action_signature" => config.require_action_signature = parse_bool(raw)?,
        "allow_unsigned_actions" => config.allow_unsigned_actions = parse_bool(raw)?,
        "action_secret" => config.action_secret = optional(raw).map(Secret::new),
        "executor_mode" => config.executor_mode = parse(raw)?,
        "executor_min_replicas" => config.executor_min_replicas = parse(raw)?,
        "executor_max_replicas" => config.executor_max_replicas = parse(raw)?,
        "executor_max_scale_step" => config.executor_max_scale_step = parse(raw)?,
        "executor_cooldown_secs" => config.executor_cooldown_secs = parse(raw)?,
        "executor_blast_radius" => config.executor_blast_radius = parse(raw)?,
        "executor_blast_window_secs" => config.executor_blast_window_secs = parse(raw)?,
        "approval_timeout_secs" => config.approval_timeout_secs = parse(raw)?,
        "approval_four_eyes" => config.approval_four_eyes = parse_bool(raw)?,
        "executor_rate_limit_per_minute" => config.executor_rate_limit_per_minute = parse(raw)?,
        "engine_metrics" => config.engine_metrics = parse_list(raw),
        "engine_tick_ms" => config.engine_tick_ms = parse(raw)?,
        "engine_resolution_secs" => config.engine_resolution_secs = parse(raw)?,
        "engine_window_secs" => config.engine_window_secs = parse(raw)?,
        "engine_baseline_secs" => config.engine_baseline_secs = parse(raw)?,
        "engine_warmup_secs" => config.engine_warmup_secs = parse(raw)?,
        "engine_warmup_rows" => config.engine_warmup_rows = parse(raw)?,
        "engine_max_entities" => config.engine_max_entities = parse(raw)?,
        "engine_open_ticks" => config.engine_open_ticks = parse(raw)?,
        "engine_calm_ticks" => config.engine_calm_ticks = parse(raw)?,
        "engine_scale_step" => config.engine_scale_step = parse(raw)?,
        "engine_verify_after_secs" => config.engine_verify_after_secs = parse(raw)?,
        "engine_breaker_threshold" => config.engine_breaker_threshold = parse(raw)?,
        "alertmanager_url" => config.alertmanager_url = optional(raw),
        "notify_webhook_url" => config.notify_webhook_url = optional(raw),
        "notify_webhook_secret" => config.notify_webhook_secret = optional(raw).map(Secret::new),
        "notify_events" => config.notify_events = parse_list(raw),
        "notify_resend_secs" => config.notify_resend_secs = parse(raw)?,
        // Rules hold commas inside their braces: `;` separates them here.
        "alert_actions" => {
            config.alert_actions = raw
                .split(';')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
        }
        "kafka_brokers" => config.kafka_brokers = parse_list(raw),
        "kafka_topics" => config.kafka_topics = parse_list(raw),
        "kafka_group" => config.kafka_group = raw.trim().to_owned(),
        "ingest_token" => config.ingest_token = optional(raw).map(Secret::new),
        "ingest_open" => config.ingest_open = parse_bool(raw)?,
        "signup_enabled" => config.signup_enabled = parse_bool(raw)?,
        "policy_dir" => config.policy_dir = optional(raw).map(Into::into),
        "shadow_policy_dir" => config.shadow_policy_dir = optional(raw).map(Into::into),
        "admin_email" => config.admin_email = optional(raw),
        "admin_password" => config.admin_password = optional(raw).map(Secret::new),
        "log_format" => config.log_format = parse(raw)?,
        "log_level" => config.log_level = raw.trim().to_owned(),
        "otlp_endpoint" => config.otlp_endpoint = optional(raw),
        "max_body_bytes" => config.max_body_bytes = parse(raw)?,
        "max_sample_age_secs" => config.max_sample_age_secs = parse(raw)?,
        "future_grace_secs" => config.future_grace_secs = parse(raw)?,
        "max_log_line_bytes" => config.max_log_line_bytes = parse(raw)?,
        "series_idle_secs" => config.series_idle_secs = parse(raw)?,
        "query_memory_mib" => config.query_memory_mib = parse(raw)?,
        "query_memory_total_mib" => config.query_memory_total_mib = parse(raw)?,
        "shutdown_timeout_secs" => config.shutdown_timeout_secs = parse(raw)?,
        "header_read_timeout_secs" => config.header_read_timeout_secs = parse(raw)?,
        "body_read_timeout_secs" => config.body_read_timeout_secs = parse(raw)?,
        _ => return Err(format!("no setting named `{key}`")),
    }
    Ok(())
}

/// Applies every `AEGIS_*` variable to `config`; returns the variables that name no
/// setting so the caller can warn about likely typos.
pub fn apply(
    config: &mut Config,
    vars: impl IntoIterator<Item = (String, String)>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<Vec<String>, ConfigError> {
    let mut unknown = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        match KEYS.iter().find(|k| **k == lower) {
            Some(key) => {
                set(config, key, &raw).map_err(|message| ConfigError::Invalid {
                    key: format!("`{name}`"),
                    message,
                })?;
                origins.insert(key, Origin::Env);
            }
            None if NOT_SETTINGS.contains(&name.as_str()) => {}
            None => unknown.push(name),
        }
    }
    Ok(unknown)
}
