//! `aegis serve`: wiring, the listener and graceful shutdown.
//!
//! Long because it is the wiring of every part of a running server in start order, and the
//! shutdown in reverse; reading it top to bottom is the point.

use std::sync::Arc;
use std::time::Duration;

use aegis_api::auth::{Auth, AuthSettings, JwtKey, JwtKeys, PasswordHasher, derived_kid};
use aegis_api::{AppState, app};
use aegis_core::metric_names as m;
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::ratelimit::{Limiter, Limits};
use aegis_store::{AuditWriterOptions, PolicyAuditWriter};
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::cli::open_store;
use crate::config::Config;

/// Latency buckets (seconds) for every `*_seconds` histogram: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide metrics recorder and describes the contract's metrics.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics::describe_counter!(
        m::HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by route template and status"
    );
    metrics::describe_histogram!(
        m::HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency by route template"
    );
    Ok(handle)
}

/// Exports every CONTRACT.md family at zero from the first scrape, for the label sets known
/// in advance (Prometheus's instrumentation guidance), so a dashboard or an alert on them
/// starts from 0, not from "no data": sources, decisions, detectors × severities, actions ×
/// allowed namespaces × statuses, auth results, the rejection reasons.
fn export_known_series(config: &Config) {
    use aegis_core::Severity;
    for source in ["remote_write", "kafka", "prometheus_pull"] {
        metrics::counter!(m::INGEST_SAMPLES_TOTAL, "source" => source).absolute(0);
    }
    for source in ["loki", "kafka", "loki_pull"] {
        metrics::counter!(m::INGEST_LOG_LINES_TOTAL, "source" => source).absolute(0);
    }
    let reasons: [(&str, &[&str]); 5] = [
        (
            "remote_write",
            &[
                "too_old",
                "too_new",
                "overloaded",
                "too_large",
                "invalid",
                "malformed",
                "limit",
            ],
        ),
        (
            "loki",
            &[
                "too_old",
                "too_new",
                "too_long",
                "overloaded",
                "too_large",
                "invalid",
                "malformed",
                "limit",
            ],
        ),
        ("kafka", &["too_old", "too_new", "too_long"]),
        ("prometheus_pull", &["too_old", "too_new"]),
        ("loki_pull", &["too_old", "too_new", "too_long"]),
    ];
    for (source, reasons) in reasons {
        for reason in reasons {
            metrics::counter!(m::INGEST_REJECTED_TOTAL, "source" => source, "reason" => *reason)
                .absolute(0);
        }
    }
    for route in [
        "/health",
        "/metrics",
        "/api/v1/write",
        "/loki/api/v1/push",
        "/api/v1/alerts",
    ] {
        metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route, "status" => "200").absolute(0);
        let _ = metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "route" => route);
    }
    for result in [
        "success",
        "failure",
        "rate_limited",
        "invalid_token",
        "refresh",
        "refresh_reuse",
        "logout",
        "signup",
    ] {
        metrics::counter!(m::AUTH_ATTEMPTS_TOTAL, "result" => result).absolute(0);
    }
    for kind in ["self_healing", "api_access"] {
        for decision in ["ALLOW", "DENY"] {
            metrics::counter!(m::POLICY_EVALUATIONS_TOTAL, "type" => kind, "decision" => decision)
                .absolute(0);
        }
    }
    let _ = metrics::histogram!(m::POLICY_EVALUATION_DURATION_SECONDS);
    for detector in [
        "engine",
        "alertmanager",
        "isolation_forest",
        "failure_classifier",
    ] {
        for severity in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            metrics::counter!(m::DETECTIONS_TOTAL, "detector" => detector, "severity" => severity.as_str())
                .absolute(0);
        }
    }
    for detector in ["isolation_forest", "failure_classifier"] {
        let _ = metrics::histogram!(m::INFERENCE_DURATION_SECONDS, "detector" => detector);
    }
    let namespaces = config
        .allowed_namespaces
        .iter()
        .map(String::as_str)
        .chain(["other"]);
    for namespace in namespaces {
        for action in ["restart_pod", "scale_deployment", "rollback_deployment"] {
            for status in [
                "succeeded",
                "failed",
                "dry_run",
                "denied",
                "awaiting_approval",
            ] {
                metrics::counter!(m::ACTIONS_TOTAL, "action" => action,
                    "namespace" => namespace.to_owned(), "status" => status)
                .absolute(0);
            }
        }
    }
    for action in ["restart_pod", "scale_deployment", "rollback_deployment"] {
        let _ = metrics::histogram!(m::ACTION_DURATION_SECONDS, "action" => action);
    }
    for result in ["effective", "ineffective", "unknown"] {
        metrics::counter!(m::ACTION_VERIFICATIONS_TOTAL, "result" => result).absolute(0);
    }
    metrics::counter!(m::BREAKER_TRIPS_TOTAL).absolute(0);
    for result in aegis_runtime::healing::ALERT_RESULTS {
        metrics::counter!(m::ALERTS_TOTAL, "result" => result).absolute(0);
    }
    for sink in ["alertmanager", "webhook"] {
        for result in ["delivered", "retried"] {
            metrics::counter!(m::NOTIFICATIONS_TOTAL, "sink" => sink, "result" => result)
                .absolute(0);
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

/// Refuses to start when the newest row of an audit chain was signed by a key that is not
/// configured: rows appended now would break the chain (unkeyed after keyed, or under
/// another key with no way to verify the old one).
async fn check_audit_keys(store: &aegis_store::Store) -> anyhow::Result<()> {
    use aegis_store::AuditTable;
    let keys = store.audit_keys();
    for table in AuditTable::ALL {
        let tail = store
            .audit_tail_key(table)
            .await
            .with_context(|| format!("reading the newest row of {}", table.table_name()))?;
        match (tail, keys) {
            (Some(Some(id)), None) => anyhow::bail!(
                "the newest row of {} is signed with audit key `{id}`, but audit_key is not set: set AEGIS_AUDIT_KEY to that key (new rows would break the keyed chain)",
                table.table_name()
            ),
            (Some(Some(id)), Some(k)) if k.get(&id).is_none() => anyhow::bail!(
                "the newest row of {} is signed with audit key `{id}`, which is not configured (configured: {}); keep it in audit_previous_keys while its rows are kept",
                table.table_name(),
                k.ids().join(", ")
            ),
            (Some(None), Some(k)) => tracing::info!(
                table = table.table_name(),
                key = k.signing().id(),
                "the audit chain is keyed from its next row; the rows before it keep their SHA-256 links"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Runs the server until SIGINT/SIGTERM, then stops accepting, lets in-flight requests
/// finish (up to `shutdown_timeout_secs`), flushes and closes the database.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    check_audit_keys(&store).await?;
    // With Loki configured, every action audit row is also queued for it, in the same
    // transaction as the row.
    let store = if config.loki_url.is_some() {
        store.with_audit_outbox()
    } else {
        store
    };
    let schema_version = store
        .schema_version()
        .await
        .context("reading the schema version")?;
    if !config.require_action_signature
        && config.executor_mode == aegis_core::ExecutorMode::Kubernetes
    {
        tracing::warn!(
            "require_action_signature = false in kubernetes mode (allow_unsigned_actions = true): anonymous callers can restart, scale and roll back workloads in the allowed namespaces"
        );
    }
    if config.require_action_signature && config.action_secret.is_none() {
        tracing::warn!("AEGIS_ACTION_SECRET is not set: signed executor requests will be refused");
    }
    let handle = install_metrics()?;
    export_known_series(&config);
    let spool_dir = config.audit_spool_dir.clone().unwrap_or_else(|| {
        aegis_store::sqlite_path(&config.database_url)
            .ok()
            .and_then(|db| db.parent().map(|d| d.join("audit-spool")))
            .unwrap_or_else(|| std::path::PathBuf::from("audit-spool"))
    });
    let audit_writer = PolicyAuditWriter::spawn(
        store.clone(),
        AuditWriterOptions {
            spool_dir: Some(spool_dir),
            ..AuditWriterOptions::default()
        },
    );
    let policies = Arc::new(
        PolicyService::new(store.clone())
            .with_audit(audit_writer.sender())
            .with_policy_dir(config.policy_dir.clone())
            .with_shadow_dir(config.shadow_policy_dir.clone()),
    );
    policies
        .install_defaults_if_new()
        .await
        .map_err(|e| anyhow::anyhow!("installing the default policies: {e}"))?;
    policies
        .reload_database()
        .await
        .map_err(|e| anyhow::anyhow!("loading policies from the database: {e}"))?;
    policies
        .restore_emergency_stop()
        .await
        .map_err(|e| anyhow::anyhow!("reading the emergency stop state: {e}"))?;
    if let Some(dir) = &config.policy_dir {
        // A broken folder at start-up is reported, not fatal: the database policies serve.
        let service = Arc::clone(&policies);
        let dir = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || service.reload_files(true)).await;
        if !matches!(loaded, Ok(Ok(_))) {
            tracing::error!(dir = %dir.display(), "AEGIS_POLICY_DIR did not load; see /health");
        }
    }
    if let Some(dir) = &config.shadow_policy_dir {
        let service = Arc::clone(&policies);
        let dir = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || service.reload_shadow(true)).await;
        if !matches!(loaded, Ok(Ok(_))) {
            tracing::error!(dir = %dir.display(), "AEGIS_SHADOW_POLICY_DIR did not load; see /health");
        }
    }
    let auth = build_auth(&config)?;
    bootstrap_admin(&config, &store, &auth).await?;
    let limits = Limits {
        api_per_minute: config.rate_limit_per_minute,
        login_account_per_minute: config.login_limit_per_account_per_minute,
        login_ip_per_minute: config.login_limit_per_ip_per_minute,
        action_per_minute: config.executor_rate_limit_per_minute,
    };
    let limiter = match &config.redis_url {
        Some(url) => Limiter::with_redis(limits, url).await.map_err(|e| {
            anyhow::anyhow!("AEGIS_REDIS_URL {}: {e}", aegis_store::redact_url(url))
        })?,
        None => Limiter::in_memory(limits),
    };
    let executor = build_executor(&config, limiter.clone()).await?;
    // Ingest hands Arrow batches to the engine through a bounded queue; until the engine
    // lands, a consumer keeps the latest sample of every series.
    let (ingest, batches) = aegis_ingest::Ingest::new(
        INGEST_QUEUE_BATCHES,
        aegis_ingest::IngestLimits {
            max_decompressed: config.max_body_bytes.saturating_mul(16),
            admission: aegis_ingest::Admission {
                max_sample_age: Duration::from_secs(config.max_sample_age_secs),
                future_grace: Duration::from_secs(config.future_grace_secs),
                max_line_bytes: config.max_log_line_bytes,
            },
            ..aegis_ingest::IngestLimits::default()
        },
    );
    let latest: Arc<std::sync::Mutex<aegis_ingest::LatestSamples>> = Arc::default();
    let ingest_for_kafka = ingest.clone();
    let interrupted = executor
        .reconcile(&store)
        .await
        .context("reconciling interrupted actions")?;
    if !interrupted.is_empty() {
        tracing::warn!(
            count = interrupted.len(),
            "actions interrupted by the last stop are marked unknown in the audit trail"
        );
    }
    let object_store_url = config.object_store_url.clone().or_else(|| {
        // SQLite: a folder beside the database file; PostgreSQL: the models table alone.
        aegis_store::sqlite_path(&config.database_url)
            .ok()
            .filter(|_| {
                config.database_url.starts_with("sqlite:")
                    && !config.database_url.contains(":memory:")
            })
            .map(|p| {
                p.parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("objects")
                    .display()
                    .to_string()
            })
    });
    let objects = object_store_url
        .map(|url| aegis_store::objects::Objects::open(&url))
        .transpose()
        .map_err(|e| anyhow::anyhow!("opening the object store (AEGIS_OBJECT_STORE_URL): {e}"))?;
    let detectors = aegis_runtime::detector_service::DetectorService::start_with(
        store.clone(),
        objects,
        aegis_runtime::detector_service::BATCH_THRESHOLD,
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading the detectors: {e}"))?;
    {
        // Refit the anomaly model on recent normal rows every ten minutes.
        let detectors = Arc::clone(&detectors);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(error) = detectors.retrain().await {
                    tracing::warn!(%error, "retraining the anomaly model failed; the current one stays");
                }
                if let Err(error) = detectors.save_templates().await {
                    tracing::warn!(%error, "saving the log templates failed");
                }
            }
        });
    }
    let executor = Arc::new(executor);
    let healing = aegis_runtime::healing::HealingLoop::new(
        healing_settings(&config),
        Arc::clone(&detectors),
        Arc::clone(&policies),
        Arc::clone(&executor),
        store.clone(),
    );
    {
        // Approvals past their timeout are rejections: swept every 5 s (and on every read
        // of the queue), each with an audit row.
        let (executor, store) = (Arc::clone(&executor), store.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                match executor.expire_approvals(&store).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "approvals timed out: rejected"),
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            "sweeping expired approvals failed"
                        );
                    }
                }
            }
        });
    }
    // Retention and the scheduled audit export, hourly (the first pass at start).
    tokio::spawn(crate::retention::run_forever(config.clone(), store.clone()));
    let state = AppState::new(store.clone(), config.executor_mode)
        .with_detectors(detectors)
        .with_metrics(handle)
        .with_max_body_bytes(config.max_body_bytes)
        .with_query_memory(
            config.query_memory_mib.saturating_mul(1 << 20),
            config.query_memory_total_mib.saturating_mul(1 << 20),
        )
        .with_body_read_timeout(Duration::from_secs(config.body_read_timeout_secs))
        .with_policies(Arc::clone(&policies))
        .with_auth(auth)
        .with_limiter(limiter)
        .with_cors_origins(config.cors_allowed_origins.clone())
        .with_executor_arc(Arc::clone(&executor))
        .with_healing(Arc::clone(&healing))
        .with_ingest(ingest.clone(), Arc::clone(&latest));

    let addr = config.listen.0;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (AEGIS_LISTEN)"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        listen = %bound,
        database = %store.url(),
        backend = store.backend().as_str(),
        schema_version,
        executor_mode = %config.executor_mode,
        version = env!("CARGO_PKG_VERSION"),
        "aegis is serving",
    );

    let (stop_tx, mut stop_rx) = watch::channel(false);
    // The self-healing loop: ingest queue → windows → ticks → decisions → executor.
    let consumer = {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(Arc::clone(&healing).run(
            ingest.clone(),
            batches,
            Arc::clone(&latest),
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
        ))
    };
    // With PostgreSQL, replicas elect one leader to execute actions; the others ingest and
    // score. SQLite is one process: it always leads.
    let leadership = if store.backend() == aegis_store::Backend::Postgres {
        let flag = Arc::clone(healing.leader_flag());
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut stop_rx = stop_rx.clone();
        Some(tokio::spawn(aegis_store::leader::campaign(
            store.clone(),
            aegis_store::leader::ENGINE_LOCK,
            flag,
            Duration::from_secs(5),
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
        )))
    } else {
        None
    };
    let loki = match &config.loki_url {
        Some(url) => {
            let pusher = aegis_store::loki_outbox::LokiPusher::new(store.clone(), url)
                .map_err(|e| anyhow::anyhow!("AEGIS_LOKI_URL: {e}"))?;
            let mut stop_rx = stop_rx.clone();
            Some(tokio::spawn(pusher.run(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })))
        }
        None => None,
    };
    // Notifications out, from the audit trails (the leader sends them).
    let notifier = match config.notify_settings() {
        Some(settings) => {
            let notifier = aegis_runtime::notify::Notifier::new(
                store.clone(),
                settings,
                Arc::clone(healing.leader_flag()),
            )
            .map_err(|e| anyhow::anyhow!("notifications: {e}"))?;
            let mut stop_rx = stop_rx.clone();
            Some(tokio::spawn(Arc::new(notifier).run(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })))
        }
        None => None,
    };
    let kafka = if config.kafka_topics.is_empty() {
        None
    } else {
        let settings = aegis_ingest::kafka::KafkaSettings {
            brokers: config.kafka_brokers.join(","),
            topics: config.kafka_topics.clone(),
            group: config.kafka_group.clone(),
            batch_max: 1_000,
            batch_wait: Duration::from_millis(200),
        };
        let stats = Arc::new(aegis_ingest::kafka::KafkaStats::default());
        let mut stop_rx = stop_rx.clone();
        let consumer =
            aegis_ingest::kafka::run(settings, ingest_for_kafka.clone(), stats, async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            });
        Some(tokio::spawn(async move {
            if let Err(error) = consumer.await {
                tracing::error!(%error, "the Kafka consumer could not start");
            }
        }))
    };
    let pull = {
        let settings = aegis_ingest::pull::PullSettings {
            prometheus: config
                .prometheus_url
                .clone()
                .filter(|_| !config.prometheus_queries.is_empty())
                .map(|u| (u, config.prometheus_queries.clone())),
            loki: config
                .loki_url
                .clone()
                .filter(|_| !config.loki_queries.is_empty())
                .map(|u| (u, config.loki_queries.clone())),
            interval: Duration::from_secs(config.pull_interval_secs),
        };
        if settings.prometheus.is_some() || settings.loki.is_some() {
            let puller = aegis_ingest::pull::Puller::new(settings, ingest_for_kafka.clone())
                .map_err(|e| anyhow::anyhow!("pull mode: {e}"))?;
            let mut stop_rx = stop_rx.clone();
            Some(tokio::spawn(puller.run(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })))
        } else {
            None
        }
    };
    let watcher = {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(Arc::clone(&policies).watch(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }))
    };
    let graceful = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    // Our own accept loop (not `axum::serve`): it adds the header read timeout.
    let server = aegis_api::server::serve(
        listener,
        app(state),
        Duration::from_secs(config.header_read_timeout_secs),
        graceful,
    );
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    let signals = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        // Keep the sender alive while the server drains.
        std::future::pending::<()>().await;
    };
    let deadline = async {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        () = signals => {}
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; closing them"),
    }
    watcher.abort();
    if let Some(pull) = pull {
        pull.abort();
    }
    if let Some(kafka) = kafka {
        // It stops at its next batch boundary; uncommitted messages are read again later.
        let _ = tokio::time::timeout(Duration::from_secs(5), kafka).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), consumer).await;
    if let Some(leadership) = leadership {
        // Dropping the connection releases the lock; another replica takes over.
        let _ = tokio::time::timeout(Duration::from_secs(2), leadership).await;
    }
    if let Some(notifier) = notifier {
        // Messages not yet delivered stay queued for the next start.
        let _ = tokio::time::timeout(Duration::from_secs(5), notifier).await;
    }
    if let Some(loki) = loki {
        // The pusher stops at its next pause; rows not yet accepted stay queued for the next
        // start.
        let _ = tokio::time::timeout(Duration::from_secs(5), loki).await;
    }
    // Every decision made before the listener closed reaches the audit trail.
    drop(policies);
    let written = audit_writer.shutdown(grace).await;
    tracing::info!(decisions_recorded = written, "decision audit flushed");
    store.close().await;
    tracing::info!("aegis stopped");
    Ok(())
}

/// Signing keys from the configuration: `jwt_secret` signs, `jwt_previous_secrets` still
/// verify. Without a secret, a random key: tokens then die with the process (fine for a
/// laptop, wrong for replicas, so it is logged).
pub(crate) fn build_auth(config: &Config) -> anyhow::Result<Auth> {
    let mut keys = Vec::new();
    match &config.jwt_secret {
        Some(secret) => {
            let bytes = secret.expose().as_bytes();
            keys.push(JwtKey::new(derived_kid(bytes), bytes.to_vec()).map_err(anyhow::Error::msg)?);
            for old in &config.jwt_previous_secrets {
                let bytes = old.expose().as_bytes();
                keys.push(
                    JwtKey::new(derived_kid(bytes), bytes.to_vec()).map_err(anyhow::Error::msg)?,
                );
            }
        }
        None => {
            tracing::warn!(
                "AEGIS_JWT_SECRET is not set: using a random signing key; tokens stop working when aegis restarts and are not accepted by other replicas"
            );
            keys.push(JwtKey::random("ephemeral"));
        }
    }
    let keys =
        JwtKeys::new(keys, &config.jwt_issuer, &config.jwt_audience).map_err(anyhow::Error::msg)?;
    let mut settings = AuthSettings::new(keys);
    settings.ingest_token = config.ingest_token.as_ref().map(|t| t.expose().to_owned());
    settings.ingest_open = config.ingest_open;
    settings.signup_enabled = config.signup_enabled;
    if config.ingest_open {
        tracing::warn!(
            "AEGIS_INGEST_OPEN: remote write and Loki push accept requests without a token"
        );
    }
    Ok(Auth {
        settings,
        hasher: PasswordHasher::owasp(),
    })
}

/// Creates the admin of `admin_email`/`admin_password` when no account has that email.
async fn bootstrap_admin(
    config: &Config,
    store: &aegis_store::Store,
    auth: &Auth,
) -> anyhow::Result<()> {
    use aegis_store::UserStore;
    let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) else {
        return Ok(());
    };
    let email = aegis_api::auth::normalise_email(email)
        .map_err(|e| anyhow::anyhow!("AEGIS_ADMIN_EMAIL: {e}"))?;
    if store.user_by_email(&email).await?.is_some() {
        tracing::info!(%email, "the bootstrap admin exists already; AEGIS_ADMIN_PASSWORD is not applied again");
        return Ok(());
    }
    aegis_api::auth::check_password_rules(password.expose(), &email)
        .map_err(|e| anyhow::anyhow!("AEGIS_ADMIN_PASSWORD: {e}"))?;
    let hasher = auth.hasher.clone();
    let secret = password.expose().to_owned();
    let password_hash = tokio::task::spawn_blocking(move || hasher.hash(&secret))
        .await?
        .map_err(anyhow::Error::msg)?;
    store
        .create_user(
            &aegis_store::NewUser {
                email: email.clone(),
                name: Some("Administrator".to_owned()),
                password_hash,
                roles: vec!["admin".to_owned()],
            },
            Some("bootstrap"),
        )
        .await?;
    tracing::info!(%email, "created the bootstrap admin");
    Ok(())
}

/// The loop's settings from the configuration.
pub(crate) fn healing_settings(config: &Config) -> aegis_runtime::healing::HealingSettings {
    let secs = |s: u64| i64::try_from(s.saturating_mul(1_000)).unwrap_or(i64::MAX);
    let resolution = secs(config.engine_resolution_secs);
    let defaults = aegis_runtime::healing::HealingSettings::default();
    aegis_runtime::healing::HealingSettings {
        engine: aegis_engine::EngineConfig {
            metrics: config.engine_metrics.clone(),
            window_ms: secs(config.engine_window_secs),
            resolution_ms: resolution,
            baseline_ms: secs(config.engine_baseline_secs),
            // Sixty baseline slots (a minute each for an hour): a baseline needs its mean and
            // spread, not every sample, and it is most of the memory per series.
            baseline_resolution_ms: resolution.max(secs(config.engine_baseline_secs) / 60),
            warmup_ms: secs(config.engine_warmup_secs),
            idle_ms: secs(config.engine_baseline_secs),
            max_entities: config.engine_max_entities,
            hysteresis: aegis_engine::Hysteresis {
                calm_ticks: config.engine_calm_ticks,
                open_ticks: config.engine_open_ticks,
                ..defaults.engine.hysteresis
            },
            stream: defaults.engine.stream.clone(),
        },
        tick: Duration::from_millis(config.engine_tick_ms),
        warmup_rows: config.engine_warmup_rows,
        threshold: config.anomaly_threshold,
        scale_step: config.engine_scale_step,
        verify_after: Duration::from_secs(config.engine_verify_after_secs),
        breaker_threshold: config.engine_breaker_threshold,
        series_idle: Duration::from_secs(config.series_idle_secs),
        alert_rules: config.alert_rules(),
    }
}

/// Batches the ingest queue holds before remote write answers 503.
const INGEST_QUEUE_BATCHES: usize = 1_024;

/// The executor of `executor_mode` with its guard settings.
async fn build_executor(config: &Config, limiter: Limiter) -> anyhow::Result<ExecutorService> {
    let executor = match config.executor_mode {
        aegis_core::ExecutorMode::DryRun => aegis_executor::Executor::DryRun,
        aegis_core::ExecutorMode::Kubernetes => {
            aegis_executor::Executor::connect(config.kubeconfig_path.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("AEGIS_EXECUTOR_MODE=kubernetes: {e}"))?
        }
    };
    let settings = ExecutorSettings {
        secret: config
            .action_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec()),
        require_signature: config.require_action_signature,
        allowed_namespaces: config.allowed_namespaces.clone(),
        scale: aegis_executor::ScaleLimits {
            min_replicas: config.executor_min_replicas,
            max_replicas: config.executor_max_replicas,
            max_step: config.executor_max_scale_step,
        },
        cooldown: Duration::from_secs(config.executor_cooldown_secs),
        blast_radius: i64::from(config.executor_blast_radius),
        blast_window: Duration::from_secs(config.executor_blast_window_secs),
        approval_timeout: Duration::from_secs(config.approval_timeout_secs.max(1)),
        four_eyes: config.approval_four_eyes,
    };
    Ok(ExecutorService::new(executor, settings, limiter))
}
