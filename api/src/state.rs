//! What handlers share.

use std::sync::Arc;
use std::time::Instant;

use aegis_core::ExecutorMode;
use aegis_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Auth;
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::ratelimit::{Limiter, Limits};

/// Shared state of the API. axum clones it for every extractor and middleware of every
/// request, so it is one `Arc` (one atomic increment per clone): cloning the fields one by one
/// cost 5 % of the server's CPU under load (BENCHMARKS.md, HTTP front door).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Fields>);

/// What [`AppState`] shares; every field is a cheap handle.
#[derive(Debug, Clone)]
struct Fields {
    store: Store,
    executor_mode: ExecutorMode,
    metrics: Option<PrometheusHandle>,
    started: Instant,
    max_body_bytes: usize,
    body_read_timeout: std::time::Duration,
    policies: Arc<PolicyService>,
    auth: Arc<Auth>,
    limiter: Limiter,
    cors_origins: Vec<String>,
    executor: Arc<ExecutorService>,
    ingest: Option<aegis_ingest::Ingest>,
    token_cache: Arc<crate::auth::TokenCache>,
    latest: Arc<std::sync::Mutex<aegis_ingest::LatestSamples>>,
    detectors: Option<Arc<aegis_runtime::detector_service::DetectorService>>,
    healing: Option<Arc<aegis_runtime::healing::HealingLoop>>,
    /// Permits for `POST /api/v1/query`'s blocking threads (at most `MAX_RUNNING_QUERIES`).
    queries: Arc<tokio::sync::Semaphore>,
    /// Memory each query may take, in bytes (DataFusion's pool; no spilling to disk).
    query_memory_bytes: usize,
}

impl AppState {
    /// Default limit on request bodies: 4 MiB, above any sane JSON call and remote-write
    /// batch (Prometheus sends at most a few hundred KiB compressed).
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
    /// Default memory of one SQL query: 256 MiB (four at once: 1 GiB in all).
    pub const DEFAULT_QUERY_MEMORY_BYTES: usize = 256 << 20;
    /// Default time a client has to send a whole request body once its headers are in.
    pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    /// State over `store`, with the executor in `executor_mode`.
    pub fn new(store: Store, executor_mode: ExecutorMode) -> Self {
        Self(Arc::new(Fields {
            policies: Arc::new(PolicyService::new(store.clone())),
            auth: Arc::new(Auth::ephemeral()),
            limiter: Limiter::in_memory(Limits::default()),
            cors_origins: Vec::new(),
            ingest: None,
            token_cache: Arc::default(),
            latest: Arc::default(),
            detectors: None,
            healing: None,
            queries: Arc::new(tokio::sync::Semaphore::new(
                crate::routes::MAX_RUNNING_QUERIES,
            )),
            query_memory_bytes: Self::DEFAULT_QUERY_MEMORY_BYTES,
            executor: Arc::new(ExecutorService::new(
                aegis_executor::Executor::DryRun,
                ExecutorSettings::default(),
                Limiter::in_memory(Limits::default()),
            )),
            store,
            executor_mode,
            metrics: None,
            started: Instant::now(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
        }))
    }

    /// The fields, for the `with_*` builders: those run while the state is being set up and
    /// has one owner, so this does not copy.
    fn fields_mut(&mut self) -> &mut Fields {
        Arc::make_mut(&mut self.0)
    }

    /// Serves `/metrics` from this Prometheus recorder handle.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.fields_mut().metrics = Some(handle);
        self
    }

    /// Uses `policies` (with its sources and decision audit) instead of an empty engine.
    #[must_use]
    pub fn with_policies(mut self, policies: Arc<PolicyService>) -> Self {
        self.fields_mut().policies = policies;
        self
    }

    /// Serves the detector endpoints with `detectors`.
    #[must_use]
    pub fn with_detectors(
        mut self,
        detectors: Arc<aegis_runtime::detector_service::DetectorService>,
    ) -> Self {
        self.fields_mut().detectors = Some(detectors);
        self
    }

    /// Shows the self-healing loop's state in `/api/v1/metrics/stats`.
    #[must_use]
    pub fn with_healing(mut self, healing: Arc<aegis_runtime::healing::HealingLoop>) -> Self {
        self.fields_mut().healing = Some(healing);
        self
    }

    /// The self-healing loop, when it runs.
    pub fn healing(&self) -> Option<&Arc<aegis_runtime::healing::HealingLoop>> {
        self.0.healing.as_ref()
    }

    /// The detectors, once loaded.
    pub fn detectors(&self) -> Option<&Arc<aegis_runtime::detector_service::DetectorService>> {
        self.0.detectors.as_ref()
    }

    /// The policy engine and its sources.
    pub fn policies(&self) -> &Arc<PolicyService> {
        &self.0.policies
    }

    /// Uses `auth` (keys, lifetimes, password hashing).
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.fields_mut().auth = Arc::new(auth);
        self
    }

    /// Authentication settings.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// Uses `limiter` for rate limits.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.fields_mut().limiter = limiter;
        self
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.0.limiter
    }

    /// Allows CORS from these origins (`*` for any).
    #[must_use]
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.fields_mut().cors_origins = origins;
        self
    }

    /// Origins allowed by CORS.
    pub fn cors_origins(&self) -> &[String] {
        &self.0.cors_origins
    }

    /// Uses `executor` (mode, guards) for `/executor/*`.
    #[must_use]
    pub fn with_executor(mut self, executor: ExecutorService) -> Self {
        self.fields_mut().executor = Arc::new(executor);
        self
    }

    /// Uses a shared `executor` (the self-healing loop holds it too).
    #[must_use]
    pub fn with_executor_arc(mut self, executor: Arc<ExecutorService>) -> Self {
        self.fields_mut().executor = executor;
        self
    }

    /// The executor and its guards.
    pub fn executor(&self) -> &ExecutorService {
        &self.0.executor
    }

    /// Takes remote write into `ingest`; `latest` is what its consumer has seen.
    #[must_use]
    pub fn with_ingest(
        mut self,
        ingest: aegis_ingest::Ingest,
        latest: Arc<std::sync::Mutex<aegis_ingest::LatestSamples>>,
    ) -> Self {
        self.fields_mut().ingest = Some(ingest);
        self.fields_mut().latest = latest;
        self
    }

    /// Recently verified service tokens.
    pub fn token_cache(&self) -> &crate::auth::TokenCache {
        &self.0.token_cache
    }

    /// The ingest front, when enabled.
    pub fn ingest(&self) -> Option<&aegis_ingest::Ingest> {
        self.0.ingest.as_ref()
    }

    /// The permits for `POST /api/v1/query`'s blocking threads.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn running_queries(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.0.queries
    }

    /// The latest sample of every ingested series.
    pub fn latest_samples(&self) -> &Arc<std::sync::Mutex<aegis_ingest::LatestSamples>> {
        &self.0.latest
    }

    /// Memory each SQL query may take: the per-query budget, and the total budget shared
    /// by the queries that may run at once.
    #[must_use]
    pub fn with_query_memory(mut self, per_query: usize, total: usize) -> Self {
        self.fields_mut().query_memory_bytes = per_query
            .min(total / crate::routes::MAX_RUNNING_QUERIES)
            .max(1 << 20);
        self
    }

    /// Memory each SQL query may take, in bytes.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn query_memory_bytes(&self) -> usize {
        self.0.query_memory_bytes
    }

    /// Sets the request body limit in bytes.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.fields_mut().max_body_bytes = bytes;
        self
    }

    /// Sets how long a client may take to send a request body (a slow sender gets a 408).
    #[must_use]
    pub fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.fields_mut().body_read_timeout = timeout;
        self
    }

    /// How long a client may take to send a request body.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        self.0.body_read_timeout
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The executor's mode.
    pub fn executor_mode(&self) -> ExecutorMode {
        self.0.executor_mode
    }

    /// The metrics handle, when a recorder is installed.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// When the state was built (process start, in practice).
    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// The request body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.0.max_body_bytes
    }
}
