//! The one typed configuration of `aegis`: a TOML file (`--config`) under `AEGIS_*`
//! environment variables, which win.
//!
//! Defaults live in [`Config::default`], the environment is read in [`env`], and
//! [`Config::validate`] checks every value at start-up with a message that names the key
//! the way the user set it (`AEGIS_LISTEN`, or `listen` in the file).
//!
//! Long because every setting is declared once here with its default, its check and its
//! documentation, which the configuration reference test reads.

mod env;
pub mod reference;
mod sections;
mod types;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use aegis_core::ExecutorMode;
use serde::{Deserialize, Serialize};

pub use types::{ListenAddr, LogFormat, Secret};

/// Where a key's value came from, for error messages (no entry means the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file at this path.
    File(PathBuf),
    /// An `AEGIS_*` environment variable.
    Env,
}

/// A configuration value that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file `{path}`: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The key as the user wrote it: `AEGIS_LISTEN`, or `listen` in FILE.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// Every setting of an `aegis` process. Each field is also an environment variable: the
/// field name in upper case with an `AEGIS_` prefix (`listen` → `AEGIS_LISTEN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the one HTTP listener (`IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`).
    pub listen: ListenAddr,
    /// `sqlite://PATH` or `postgres://USER[:PASS]@HOST:PORT/DB`.
    pub database_url: String,
    /// Most database connections in the pool.
    pub database_max_connections: u32,
    /// HS256 key that signs access tokens, at least 32 bytes (secret); its `kid` is derived
    /// from it, so replicas with the same secret agree. Unset: a random key per process
    /// (tokens die on restart; logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// Former secrets that still verify (not sign) tokens: rotate by moving `jwt_secret`
    /// here and setting a new one (secret).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_previous_secrets: Vec<Secret>,
    /// `ID:SECRET` (a bare secret is key `k1`; at least 32 bytes): audit rows and archive
    /// records and manifests are HMAC-SHA256-signed with it, so rewriting them needs the
    /// key, which never enters the database; `aegis audit verify` and `verify-archive` need
    /// it; `serve` refuses to start when the newest audit row was signed by a key it does
    /// not have (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<Secret>,
    /// Former audit keys (`ID:SECRET`) that still verify the rows they signed: rotate by
    /// putting the new key in `audit_key` and the old one here for as long as its rows are
    /// kept (secret).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_previous_keys: Vec<Secret>,
    /// Every audit row must be keyed: set it for chains keyed from their first row, or once
    /// the rows from before `audit_key` are archived and pruned; then even a rewrite of a
    /// whole chain as plain SHA-256 is caught.
    pub audit_keyed_only: bool,
    /// Where policy decisions the database cannot take before the shutdown deadline are
    /// spooled (JSON Lines, fsynced); the next start writes them first and removes the
    /// file. Put it on a persistent volume. Default: beside the SQLite file, else
    /// `./audit-spool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_spool_dir: Option<PathBuf>,
    /// `iss` written to and required on access tokens.
    pub jwt_issuer: String,
    /// `aud` written to and required on access tokens.
    pub jwt_audience: String,
    /// Requests per minute per caller (user, service token, or client IP when anonymous)
    /// and route; 429 with `Retry-After` above it.
    pub rate_limit_per_minute: u32,
    /// Login attempts per account.
    pub login_limit_per_account_per_minute: u32,
    /// Login attempts, signups and failed authentications per client IP.
    pub login_limit_per_ip_per_minute: u32,
    /// Origins allowed by CORS (`https://ui.example.com`, or `*`); no cross-origin access
    /// when empty.
    pub cors_allowed_origins: Vec<String>,
    /// `redis://` or `rediss://`: rate-limit budgets shared by every replica (fixed
    /// one-minute windows); start-up fails when it cannot connect, a later outage falls
    /// back to per-process limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prometheus to pull from (`http(s)://`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// Pull mode: PromQL polled from `prometheus_url` with `query_range`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prometheus_queries: Vec<String>,
    /// Pull mode: LogQL polled from `loki_url` with `query_range`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loki_queries: Vec<String>,
    /// Pull-mode poll interval (and Prometheus step); each poll reads the window since the
    /// last.
    pub pull_interval_secs: u64,
    /// Loki (`http(s)://HOST:3100`): every action audit row is also pushed there, from an
    /// outbox table written in the audit transaction, retried until Loki accepts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loki_url: Option<String>,
    /// Stream-detector score at or above which a point is an alarm, in (0, 1): what the
    /// live loop acts on, on the scale of `aegis backtest --threshold` (0.45 is a tail of
    /// about 3e-5 against the series' own score history; [detection.md](detection.md)).
    pub anomaly_threshold: f64,
    /// Where models are kept and shared by replicas: a folder (`file:///abs` too) or
    /// `s3://bucket/prefix` (region, credentials and endpoint from `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).
    /// Default: folder `objects` beside an SQLite database; none with PostgreSQL (the
    /// `models` table is shared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_url: Option<String>,
    /// Days of prediction history kept (0 keeps all).
    pub retention_predictions_days: u32,
    /// Days of audit rows kept in the database; older rows go only once a verified archive
    /// holds them. Default `0`: keep.
    pub retention_audit_days: u32,
    /// Scheduled hourly export of audit rows created before today to this folder or `s3://`
    /// URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_export_url: Option<String>,
    /// Kubeconfig for `executor_mode = "kubernetes"`; in-cluster account when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<PathBuf>,
    /// Exact namespace names the executor may act in.
    pub allowed_namespaces: Vec<String>,
    /// Require `X-Aegis-Signature` on `/executor/execute`.
    pub require_action_signature: bool,
    /// With `executor_mode = "kubernetes"`, `require_action_signature = false` is refused
    /// at start unless this is `true` (then a warning is logged at every start).
    pub allow_unsigned_actions: bool,
    /// HMAC key for signed executor requests, at least 32 bytes; required in `kubernetes`
    /// mode while signatures are required (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_secret: Option<Secret>,
    /// `dry-run` (every guard runs, nothing is sent) or `kubernetes`.
    pub executor_mode: ExecutorMode,
    /// Fewest replicas `scale_deployment` may leave.
    pub executor_min_replicas: i32,
    /// Most replicas `scale_deployment` may set.
    pub executor_max_replicas: i32,
    /// Largest replica change in one action.
    pub executor_max_scale_step: i32,
    /// No second action on the same target within this window.
    pub executor_cooldown_secs: u64,
    /// At most this many actions per namespace per window.
    pub executor_blast_radius: u32,
    /// The blast-radius window.
    pub executor_blast_window_secs: u64,
    /// How long an action held for approval waits; past it, it is rejected (`expired`,
    /// audited).
    pub approval_timeout_secs: u64,
    /// The caller whose action was held cannot approve it (403, audited as `refused`);
    /// someone else must. Rejecting one's own request stays open.
    pub approval_four_eyes: bool,
    /// Actions per minute per action and namespace (shared through Redis when set).
    pub executor_rate_limit_per_minute: u32,
    /// Metric names (`__name__`) the engine turns into features, in order; the first five
    /// are read as CPU and memory (fractions of the limit), p99 latency (ms), error rate
    /// (fraction) and a restart counter by the failure classifier.
    pub engine_metrics: Vec<String>,
    /// Interval of the loop's ticks (10–60000).
    pub engine_tick_ms: u64,
    /// Slot width of each series' short window.
    pub engine_resolution_secs: u64,
    /// Span of each series' short window.
    pub engine_window_secs: u64,
    /// The baseline its z-scores are taken against (sixty slots); also how long an idle
    /// entity is kept.
    pub engine_baseline_secs: u64,
    /// Data a workload needs before it is scored.
    pub engine_warmup_secs: u64,
    /// Points each workload metric is watched before the stream detector scores it, and
    /// rows a metric's pooled forest needs before its first fit (`/api/v1/metrics/stats`
    /// shows `warming_up` until a forest is fitted).
    pub engine_warmup_rows: usize,
    /// Most workloads held; samples of others are counted (`over_limit`) and dropped;
    /// workloads silent for a baseline span are evicted.
    pub engine_max_entities: usize,
    /// Ticks in a row at high severity (an alarm four deviations off its baseline, or a
    /// diagnosed failure) that open an incident (an alert's `for:`; the detector's
    /// likelihood already asks that a change last).
    pub engine_open_ticks: u32,
    /// Calm ticks in a row that close it.
    pub engine_calm_ticks: u32,
    /// Replicas a scale-up adds (relative to the count at the moment of the action).
    pub engine_scale_step: i32,
    /// Post-action verification: this long after an action its target's severity is read
    /// again — below the calm threshold `effective`, else `ineffective` (an audit row
    /// `verification`).
    pub engine_verify_after_secs: u64,
    /// Ineffective actions in a row that open the target's circuit breaker.
    pub engine_breaker_threshold: u32,
    /// Which Alertmanager alerts (`POST /api/v1/alerts`) ask for which action, first match
    /// wins: `ALERTNAME{label="value",…}=ACTION` in Prometheus selector syntax (`=`, `!=`,
    /// `=~`, `!~`; `*` for any alert name), ACTION one of `scale_up`, `scale_down`,
    /// `restart_pod`, `rollback_deployment`, `none`. An alert no rule matches may name its
    /// action in an `aegis_action` label; else it is recorded and acts on nothing. The
    /// policy engine still decides. Separated by `;` in the environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alert_actions: Vec<String>,
    /// Alertmanager to tell what Aegis did (`http(s)://HOST:9093`): each event is an alert
    /// (`POST /api/v2/alerts`) labelled `alertname` (`AegisActionSucceeded`, …),
    /// `aegis_event`, `namespace`, `workload`, `severity`, `action`, so the team's own
    /// routes carry it to chat, mail and paging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager_url: Option<String>,
    /// A webhook to tell what Aegis did (`https://…`): one JSON event per POST, signed in
    /// `X-Aegis-Signature` (`sha256=` HMAC-SHA256 of `TIMESTAMP.BODY` with
    /// `notify_webhook_secret`, the timestamp in `X-Aegis-Timestamp`); retried with backoff
    /// from an outbox until it answers 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_webhook_url: Option<String>,
    /// The webhook's HMAC key, at least 32 bytes; required with `notify_webhook_url`
    /// (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_webhook_secret: Option<Secret>,
    /// Events to send (empty: all): `action_succeeded`, `action_failed`, `action_refused`,
    /// `approval_requested`, `approval_decided`, `approval_expired`, `breaker_opened`,
    /// `breaker_reset`, `emergency_stop_on`, `emergency_stop_off`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify_events: Vec<String>,
    /// A pending approval is announced again this often until someone decides it (0: only
    /// once).
    pub notify_resend_secs: u64,
    /// Bootstrap servers; required when `kafka_topics` is set.
    pub kafka_brokers: Vec<String>,
    /// Topics to consume.
    pub kafka_topics: Vec<String>,
    /// Consumer group.
    pub kafka_group: String,
    /// Accept remote write and Loki push without any token (a trusted network only; logged
    /// at start).
    pub ingest_open: bool,
    /// Anyone who reaches the API may create a `user` account; `false` answers signup 403
    /// and leaves accounts to admins. A signup for a taken email answers like a new account
    /// (nothing changes), costs the client IP's login budget, and hashes in a pool of its
    /// own so a flood cannot slow logins.
    pub signup_enabled: bool,
    /// Static bearer token accepted on the ingest endpoints (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_token: Option<Secret>,
    /// Folder of YAML/JSON policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    /// A candidate policy folder evaluated in shadow beside the live set; its answers are
    /// recorded, never acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_policy_dir: Option<PathBuf>,
    /// Admin created on first start (with `admin_password`; both or neither).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    /// That admin's password (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<Secret>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `tracing` filter; `RUST_LOG` overrides it.
    pub log_level: String,
    /// OpenTelemetry collector for traces over OTLP/HTTP (`http://HOST:4318`; plain HTTP, a
    /// collector beside Aegis): a span per request (named by route, child of the caller's
    /// W3C `traceparent`) and per engine tick (with its scoring phases and decisions); log
    /// lines inside a span carry its `trace_id`. The standard `OTEL_BSP_*` and
    /// `OTEL_RESOURCE_ATTRIBUTES` variables apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Largest request body (413 above it).
    pub max_body_bytes: usize,
    /// Samples and log lines older than this (a week, Loki's `reject_old_samples_max_age`)
    /// are refused at ingest, counted `aegis_ingest_rejected_total{reason="too_old"}`; the
    /// rest of the request is taken, the answer is 400 naming the first refused entry
    /// (remote write, Loki push), Kafka and pull mode skip and log.
    pub max_sample_age_secs: u64,
    /// Samples and lines stamped further ahead than this (Loki's `creation_grace_period`,
    /// Prometheus's ten minutes) are refused the same way (`too_new`): a skewed clock must
    /// not store data from the future or drag a series' window ahead.
    pub future_grace_secs: u64,
    /// Longest log line taken (Loki's `max_line_size`); longer lines are refused
    /// (`too_long`).
    pub max_log_line_bytes: usize,
    /// Series and log streams nothing arrived for in this long are forgotten by ingest
    /// (labels, caches, interned strings) and the engine (routes, latest sample), checked
    /// once a minute; one that comes back is registered again. A burst of cardinality (or a
    /// label with a request id in it) is not kept for ever.
    pub series_idle_secs: u64,
    /// Memory one `POST /api/v1/query` may take: sorts, joins and aggregates that need more
    /// are a 400 (nothing spills to disk); functions that make data from nothing (`repeat`,
    /// `lpad`, table functions such as `range`) are not offered, and an answer over 32 MiB
    /// of Arrow data is a 400; the answer is encoded inside the query's permit and
    /// deadline.
    pub query_memory_mib: usize,
    /// Memory all queries running at once may take (four run at once; each gets at most a
    /// quarter).
    pub query_memory_total_mib: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Time a client has to send request headers (and to start the next request on a
    /// kept-alive connection); then the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Time a client has to send a request body once its headers are in; then 408 and the
    /// connection is closed.
    pub body_read_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenAddr(SocketAddr::from((Ipv4Addr::LOCALHOST, 3000))),
            database_url: "sqlite://./aegis-data/aegis.db".to_owned(),
            database_max_connections: 10,
            jwt_secret: None,
            jwt_previous_secrets: Vec::new(),
            audit_key: None,
            audit_previous_keys: Vec::new(),
            audit_keyed_only: false,
            audit_spool_dir: None,
            jwt_issuer: "aegis".to_owned(),
            jwt_audience: "aegis-api".to_owned(),
            rate_limit_per_minute: 600,
            login_limit_per_account_per_minute: 10,
            login_limit_per_ip_per_minute: 60,
            cors_allowed_origins: Vec::new(),
            redis_url: None,
            prometheus_url: None,
            loki_url: None,
            prometheus_queries: Vec::new(),
            loki_queries: Vec::new(),
            pull_interval_secs: 15,
            anomaly_threshold: aegis_engine::StreamConfig::default().threshold,
            object_store_url: None,
            retention_predictions_days: 30,
            retention_audit_days: 0,
            audit_export_url: None,
            kubeconfig_path: None,
            allowed_namespaces: vec!["default".to_owned(), "production".to_owned()],
            require_action_signature: true,
            allow_unsigned_actions: false,
            action_secret: None,
            executor_mode: ExecutorMode::DryRun,
            executor_min_replicas: 1,
            executor_max_replicas: 50,
            executor_max_scale_step: 10,
            executor_cooldown_secs: 300,
            executor_blast_radius: 5,
            executor_blast_window_secs: 600,
            approval_timeout_secs: 900,
            approval_four_eyes: true,
            executor_rate_limit_per_minute: 10,
            engine_metrics: aegis_engine::DEFAULT_METRICS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            engine_tick_ms: 1_000,
            engine_resolution_secs: 15,
            engine_window_secs: 300,
            engine_baseline_secs: 3_600,
            engine_warmup_secs: 600,
            engine_warmup_rows: aegis_engine::StreamConfig::default().warmup_points,
            engine_max_entities: 100_000,
            engine_open_ticks: 1,
            engine_calm_ticks: 30,
            engine_scale_step: 1,
            engine_verify_after_secs: 300,
            engine_breaker_threshold: 3,
            alert_actions: Vec::new(),
            alertmanager_url: None,
            notify_webhook_url: None,
            notify_webhook_secret: None,
            notify_events: Vec::new(),
            notify_resend_secs: 900,
            kafka_brokers: Vec::new(),
            kafka_topics: Vec::new(),
            kafka_group: "aegis".to_owned(),
            ingest_open: false,
            signup_enabled: true,
            ingest_token: None,
            policy_dir: None,
            shadow_policy_dir: None,
            admin_email: None,
            admin_password: None,
            log_format: LogFormat::Text,
            log_level: "info,sqlx=warn".to_owned(),
            otlp_endpoint: None,
            max_body_bytes: 4 << 20,
            max_sample_age_secs: 7 * 24 * 3600,
            future_grace_secs: 600,
            max_log_line_bytes: 256 * 1024,
            series_idle_secs: 3_600,
            query_memory_mib: 256,
            query_memory_total_mib: 1024,
            shutdown_timeout_secs: 25,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
        }
    }
}

/// The configuration together with where each key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Keys set by the file or the environment (absent means default).
    pub origins: BTreeMap<&'static str, Origin>,
    /// `AEGIS_*` variables that name no setting (probably typos), for a warning.
    pub unknown_env: Vec<String>,
}

impl Loaded {
    /// How to name `key` to the user: the variable or the file key that set it.
    pub fn key_name(&self, key: &str) -> String {
        match self.origins.get(key) {
            Some(Origin::Env) => format!("`{}`", env::var_name(key)),
            Some(Origin::File(path)) => format!("`{key}` in {}", path.display()),
            _ => format!("`{key}` ({})", env::var_name(key)),
        }
    }
}

impl Config {
    /// The audit keys (`audit_key` first, then `audit_previous_keys`), when configured.
    pub fn audit_keys(&self) -> Result<Option<aegis_store::AuditKeys>, aegis_store::Error> {
        let Some(signing) = &self.audit_key else {
            return Ok(None);
        };
        let mut keys = vec![aegis_store::AuditKey::parse(signing.expose())?];
        for k in &self.audit_previous_keys {
            keys.push(aegis_store::AuditKey::parse(k.expose())?);
        }
        aegis_store::AuditKeys::new(keys, self.audit_keyed_only).map(Some)
    }

    /// Where notifications go, when anywhere.
    pub fn notify_settings(&self) -> Option<aegis_runtime::notify::NotifySettings> {
        if self.alertmanager_url.is_none() && self.notify_webhook_url.is_none() {
            return None;
        }
        Some(aegis_runtime::notify::NotifySettings {
            alertmanager_url: self.alertmanager_url.clone(),
            webhook_url: self.notify_webhook_url.clone(),
            webhook_secret: self
                .notify_webhook_secret
                .as_ref()
                .map(|s| s.expose().as_bytes().to_vec()),
            events: self.notify_events.clone(),
            resend: std::time::Duration::from_secs(self.notify_resend_secs),
        })
    }

    /// The parsed `alert_actions` (validated at load; a rule that does not parse is left out).
    pub fn alert_rules(&self) -> Vec<aegis_runtime::healing::AlertRule> {
        self.alert_actions
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect()
    }

    /// Reads the file (when given), applies the process environment and validates.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut origins = BTreeMap::new();
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let file_error = |message: String| ConfigError::File {
                    path: path.to_owned(),
                    message: message.trim_end().to_owned(),
                };
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
                let sectioned = table
                    .keys()
                    .any(|k| sections::SECTIONS.contains(&k.as_str()));
                // A flat file is read from its text, so an error names its line; a file in
                // sections is read once its keys are flat again.
                let (config, table): (Config, toml::Table) = if sectioned {
                    let flat = sections::flatten(table).map_err(file_error)?;
                    let config = toml::Value::Table(flat.clone())
                        .try_into()
                        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
                    (config, flat)
                } else {
                    let config = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
                    (config, table)
                };
                for key in env::KEYS {
                    if table.contains_key(*key) {
                        origins.insert(*key, Origin::File(path.to_owned()));
                    }
                }
                config
            }
            None => Config::default(),
        };
        let unknown_env = env::apply(&mut config, vars, &mut origins)?;
        let loaded = Loaded {
            config,
            origins,
            unknown_env,
        };
        loaded.config.validate(&loaded)?;
        Ok(loaded)
    }

    /// Checks every value; the error names the key as the user set it.
    pub fn validate(&self, loaded: &Loaded) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: loaded.key_name(key),
            message,
        };

        let db = self.database_url.as_str();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                format!(
                    "`{}` must start with `sqlite://` or `postgres://`",
                    aegis_store::redact_url(db)
                ),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(invalid(
                "database_max_connections",
                "must be at least 1".into(),
            ));
        }
        check_url(&self.redis_url, &["redis", "rediss"]).map_err(|m| invalid("redis_url", m))?;
        check_url(&self.prometheus_url, &["http", "https"])
            .map_err(|m| invalid("prometheus_url", m))?;
        check_url(&self.loki_url, &["http", "https"]).map_err(|m| invalid("loki_url", m))?;
        // Plain HTTP only: the exporter is built without TLS; the collector runs beside
        // Aegis (a sidecar, a node agent or the compose stack's).
        check_url(&self.otlp_endpoint, &["http"]).map_err(|m| invalid("otlp_endpoint", m))?;
        if let Some(url) = &self.object_store_url
            && (url.is_empty()
                || (url.contains("://")
                    && !["file://", "s3://", "memory://"]
                        .iter()
                        .any(|p| url.starts_with(p))))
        {
            return Err(invalid(
                "object_store_url",
                format!("`{url}` is neither a folder nor a file://, s3:// or memory:// url"),
            ));
        }
        if !(self.anomaly_threshold > 0.0 && self.anomaly_threshold < 1.0) {
            return Err(invalid(
                "anomaly_threshold",
                format!(
                    "`{}` must be between 0 and 1 (exclusive)",
                    self.anomaly_threshold
                ),
            ));
        }
        if self.engine_metrics.is_empty() {
            return Err(invalid(
                "engine_metrics",
                "must name at least one metric".into(),
            ));
        }
        if !(10..=60_000).contains(&self.engine_tick_ms) {
            return Err(invalid(
                "engine_tick_ms",
                format!("`{}` must be between 10 and 60000", self.engine_tick_ms),
            ));
        }
        if self.engine_resolution_secs == 0
            || self.engine_window_secs < self.engine_resolution_secs
            || self.engine_baseline_secs < self.engine_window_secs
        {
            return Err(invalid(
                "engine_window_secs",
                "need 0 < engine_resolution_secs <= engine_window_secs <= engine_baseline_secs"
                    .into(),
            ));
        }
        if self.engine_window_secs / self.engine_resolution_secs > 10_000 {
            return Err(invalid(
                "engine_window_secs",
                "more than 10,000 slots per window: raise engine_resolution_secs".into(),
            ));
        }
        if !(1..=100).contains(&self.engine_open_ticks) {
            return Err(invalid("engine_open_ticks", "must be 1 to 100".into()));
        }
        if self.engine_max_entities == 0 {
            return Err(invalid("engine_max_entities", "must be at least 1".into()));
        }
        if !(1..=86_400).contains(&self.engine_verify_after_secs) {
            return Err(invalid(
                "engine_verify_after_secs",
                "must be 1 to 86400".into(),
            ));
        }
        if !(1..=100).contains(&self.engine_breaker_threshold) {
            return Err(invalid(
                "engine_breaker_threshold",
                "must be 1 to 100".into(),
            ));
        }
        check_url(&self.alertmanager_url, &["http", "https"])
            .map_err(|m| invalid("alertmanager_url", m))?;
        check_url(&self.notify_webhook_url, &["http", "https"])
            .map_err(|m| invalid("notify_webhook_url", m))?;
        match (&self.notify_webhook_url, &self.notify_webhook_secret) {
            (Some(_), None) => {
                return Err(invalid(
                    "notify_webhook_secret",
                    "is required with notify_webhook_url (the receiver checks the signature)"
                        .into(),
                ));
            }
            (_, Some(s)) if s.expose().len() < 32 => {
                return Err(invalid(
                    "notify_webhook_secret",
                    "must be at least 32 bytes".into(),
                ));
            }
            _ => {}
        }
        for event in &self.notify_events {
            if !aegis_runtime::notify::EVENTS.contains(&event.as_str()) {
                return Err(invalid(
                    "notify_events",
                    format!(
                        "unknown event `{event}`; one of {}",
                        aegis_runtime::notify::EVENTS.join(", ")
                    ),
                ));
            }
        }
        for rule in &self.alert_actions {
            if let Err(e) = rule.parse::<aegis_runtime::healing::AlertRule>() {
                return Err(invalid("alert_actions", e));
            }
        }
        if !(1..=10).contains(&self.engine_scale_step) {
            return Err(invalid("engine_scale_step", "must be 1 to 10".into()));
        }
        if self.allowed_namespaces.is_empty() {
            return Err(invalid(
                "allowed_namespaces",
                "must name at least one namespace".into(),
            ));
        }
        for ns in &self.allowed_namespaces {
            if !is_dns_label(ns) {
                return Err(invalid(
                    "allowed_namespaces",
                    format!(
                        "`{ns}` is not a Kubernetes namespace name (lowercase letters, digits and `-`, at most 63)"
                    ),
                ));
            }
        }
        for (key, secret) in [
            ("jwt_secret", &self.jwt_secret),
            ("action_secret", &self.action_secret),
        ] {
            if secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
                return Err(invalid(key, "must be at least 32 bytes long".into()));
            }
        }
        if self
            .jwt_previous_secrets
            .iter()
            .any(|s| s.expose().len() < 32)
        {
            return Err(invalid(
                "jwt_previous_secrets",
                "every secret must be at least 32 bytes long".into(),
            ));
        }
        if let Err(e) = self.audit_keys() {
            return Err(invalid("audit_key", e.to_string()));
        }
        if self.audit_key.is_none()
            && (!self.audit_previous_keys.is_empty() || self.audit_keyed_only)
        {
            return Err(invalid(
                "audit_key",
                "audit_previous_keys and audit_keyed_only need audit_key (the key that signs)"
                    .into(),
            ));
        }
        if !self.jwt_previous_secrets.is_empty() && self.jwt_secret.is_none() {
            return Err(invalid(
                "jwt_previous_secrets",
                "needs jwt_secret (the key that signs)".into(),
            ));
        }
        for (key, value) in [
            ("jwt_issuer", &self.jwt_issuer),
            ("jwt_audience", &self.jwt_audience),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        for (key, value) in [
            ("rate_limit_per_minute", self.rate_limit_per_minute),
            (
                "login_limit_per_account_per_minute",
                self.login_limit_per_account_per_minute,
            ),
            (
                "login_limit_per_ip_per_minute",
                self.login_limit_per_ip_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for origin in &self.cors_allowed_origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(invalid(
                    "cors_allowed_origins",
                    format!("`{origin}` is not an origin such as `https://ui.example.com`"),
                ));
            }
        }
        if self.executor_mode == ExecutorMode::Kubernetes
            && self.require_action_signature
            && self.action_secret.is_none()
        {
            return Err(invalid(
                "action_secret",
                "must be set when executor_mode is `kubernetes` and require_action_signature is true".into(),
            ));
        }
        if self.executor_mode == ExecutorMode::Kubernetes
            && !self.require_action_signature
            && !self.allow_unsigned_actions
        {
            return Err(invalid(
                "allow_unsigned_actions",
                "require_action_signature = false with executor_mode `kubernetes` lets anonymous callers restart, scale and roll back workloads; set allow_unsigned_actions = true to accept that, or keep signatures required".into(),
            ));
        }
        if self.executor_min_replicas < 0 || self.executor_max_replicas < self.executor_min_replicas
        {
            return Err(invalid(
                "executor_max_replicas",
                format!(
                    "must be at least executor_min_replicas ({}), which must not be negative",
                    self.executor_min_replicas
                ),
            ));
        }
        if self.executor_max_scale_step < 1 {
            return Err(invalid(
                "executor_max_scale_step",
                "must be at least 1".into(),
            ));
        }
        if self.executor_blast_radius < 1 || self.executor_rate_limit_per_minute < 1 {
            return Err(invalid(
                if self.executor_blast_radius < 1 {
                    "executor_blast_radius"
                } else {
                    "executor_rate_limit_per_minute"
                },
                "must be at least 1".into(),
            ));
        }
        if !self.prometheus_queries.is_empty() && self.prometheus_url.is_none() {
            return Err(invalid("prometheus_queries", "need prometheus_url".into()));
        }
        if !self.loki_queries.is_empty() && self.loki_url.is_none() {
            return Err(invalid("loki_queries", "need loki_url".into()));
        }
        if self.pull_interval_secs == 0 {
            return Err(invalid("pull_interval_secs", "must be at least 1".into()));
        }
        if !self.kafka_topics.is_empty() && self.kafka_brokers.is_empty() {
            return Err(invalid(
                "kafka_brokers",
                "must be set when kafka_topics is set".into(),
            ));
        }
        if self.kafka_group.trim().is_empty() {
            return Err(invalid("kafka_group", "must not be empty".into()));
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(_)) if !email.contains('@') => {
                return Err(invalid(
                    "admin_email",
                    format!("`{email}` is not an e-mail address"),
                ));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "admin_password",
                    "must be set together with admin_email".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "admin_email",
                    "must be set together with admin_password".into(),
                ));
            }
            _ => {}
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", format!("`{}`: {e}", self.log_level)));
        }
        if self.max_sample_age_secs == 0 {
            return Err(invalid("max_sample_age_secs", "must be at least 1".into()));
        }
        if self.query_memory_mib < 4 || self.query_memory_total_mib < 4 {
            return Err(invalid(
                "query_memory_mib",
                "query_memory_mib and query_memory_total_mib must be at least 4".into(),
            ));
        }
        if self.series_idle_secs < 60 {
            return Err(invalid("series_idle_secs", "must be at least 60".into()));
        }
        if self.max_log_line_bytes < 1024 {
            return Err(invalid(
                "max_log_line_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024".into()));
        }
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(invalid(key, "must be 1 to 3600".into()));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets and URL passwords redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = aegis_store::redact_url(&shown.database_url);
        shown.redis_url = shown.redis_url.as_deref().map(aegis_store::redact_url);
        shown.notify_webhook_url = shown
            .notify_webhook_url
            .as_deref()
            .map(aegis_store::redact_url);
        shown.alertmanager_url = shown
            .alertmanager_url
            .as_deref()
            .map(aegis_store::redact_url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

fn check_url(value: &Option<String>, schemes: &[&str]) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    let shown = aegis_store::redact_url(value);
    let parsed = url::Url::parse(value).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "`{shown}` must use {}",
            schemes
                .iter()
                .map(|s| format!("`{s}://`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// An RFC 1123 label, which is what Kubernetes accepts as a namespace name.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests;
