//! Rate limits per caller and route, and for login attempts per account and per client IP.
//!
//! In memory (governor, GCRA) by default; with Redis, a fixed one-minute window per key
//! (`INCR` + `EXPIRE` in one Lua script) that every replica shares. When Redis fails (an
//! error, or no answer within [`REDIS_TIMEOUT`]), the limiter falls back to memory for that
//! request, and the next requests for [`SKIP_AFTER_FAILURE`] do not try Redis at all: a
//! limiter outage must not take the API down, nor slow it. The fallback is
//! logged when it starts, at most every [`FALLBACK_LOG_EVERY`] while it lasts, and when
//! Redis answers again; `aegis_ratelimit_fallbacks_total` counts the requests. A Redis
//! that is down when Aegis starts is retried in the background.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// What is being limited; each class has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// API requests per caller and route.
    Api,
    /// Login attempts per account.
    LoginAccount,
    /// Login attempts and failed authentications per client IP.
    LoginIp,
    /// Executor actions per action and namespace.
    Action,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::LoginAccount => "login_account",
            Self::LoginIp => "login_ip",
            Self::Action => "action",
        }
    }
}

/// Budgets per minute.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per caller and route.
    pub api_per_minute: u32,
    /// Login attempts per account.
    pub login_account_per_minute: u32,
    /// Login attempts and failed authentications (a bad or expired token) per client IP.
    pub login_ip_per_minute: u32,
    /// Executor actions per action and namespace.
    pub action_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            api_per_minute: 600,
            login_account_per_minute: 10,
            login_ip_per_minute: 60,
            action_per_minute: 10,
        }
    }
}

struct Memory {
    api: DefaultKeyedRateLimiter<String>,
    login_account: DefaultKeyedRateLimiter<String>,
    login_ip: DefaultKeyedRateLimiter<String>,
    action: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

/// Longest a Redis check may take before the request falls back to memory.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// While Redis keeps failing, the fallback is logged at most this often.
pub const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(30);
/// After a failed Redis check, how long requests skip Redis and use memory directly.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// How often a Redis that was down at start is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// The shared side: the connection (once made) and the fallback's bookkeeping.
struct Shared {
    conn: OnceLock<redis::aio::ConnectionManager>,
    failing: AtomicBool,
    /// When the last check failed: for [`SKIP_AFTER_FAILURE`] after it, requests go
    /// straight to memory instead of each waiting on a Redis that is down.
    failed_at: Mutex<Option<Instant>>,
    fallbacks: AtomicU64,
    log: crate::throttle::Throttle,
}

/// The rate limiter shared by every request.
#[derive(Clone)]
pub struct Limiter {
    limits: Limits,
    memory: Arc<Memory>,
    redis: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

/// Longest a connection attempt (handshake included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(client: redis::Client) -> Result<redis::aio::ConnectionManager, crate::Error> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(REDIS_TIMEOUT)
        .set_number_of_retries(1);
    // The whole attempt is bounded too: a server that accepts and never answers would
    // otherwise hold the start through every retry of the handshake.
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(error)) => Err(crate::Error::Setup(error.to_string())),
        Err(_) => Err(crate::Error::Setup(format!(
            "no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

impl Limiter {
    /// An in-memory limiter.
    pub fn in_memory(limits: Limits) -> Self {
        Self {
            limits,
            memory: Arc::new(Memory {
                api: RateLimiter::keyed(quota(limits.api_per_minute)),
                login_account: RateLimiter::keyed(quota(limits.login_account_per_minute)),
                login_ip: RateLimiter::keyed(quota(limits.login_ip_per_minute)),
                action: RateLimiter::keyed(quota(limits.action_per_minute)),
                checks: AtomicU64::new(0),
            }),
            redis: None,
        }
    }

    /// A limiter that shares its budgets through Redis at `url`. A Redis that cannot be
    /// reached now is logged and tried again every few seconds; until then, and whenever it
    /// fails later, budgets are kept in memory. Only a malformed URL is an error.
    pub async fn with_redis(limits: Limits, url: &str) -> Result<Self, crate::Error> {
        let client =
            redis::Client::open(url).map_err(|e| crate::Error::Setup(format!("redis url: {e}")))?;
        let shared = Arc::new(Shared {
            conn: OnceLock::new(),
            failing: AtomicBool::new(false),
            failed_at: Mutex::new(None),
            fallbacks: AtomicU64::new(0),
            log: crate::throttle::Throttle::new(),
        });
        match connect(client.clone()).await {
            Ok(manager) => {
                let _ = shared.conn.set(manager);
            }
            Err(error) => {
                tracing::warn!(%error, "redis is unreachable; rate limits are kept in memory (per process) until it answers");
                shared.failing.store(true, Ordering::Relaxed);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(RECONNECT_EVERY).await;
                        if let Ok(manager) = connect(client.clone()).await {
                            let _ = shared.conn.set(manager);
                            tracing::info!("redis answers; rate limits are shared again");
                            shared.failing.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                });
            }
        }
        let mut limiter = Self::in_memory(limits);
        limiter.redis = Some(shared);
        Ok(limiter)
    }

    /// Requests whose limit was checked in memory because Redis failed.
    pub fn fallbacks(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.fallbacks.load(Ordering::Relaxed))
    }

    /// Actions allowed per minute per action and namespace.
    pub fn action_budget(&self) -> u32 {
        self.limits.action_per_minute
    }

    /// True when budgets are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    fn budget(&self, class: Class) -> u32 {
        match class {
            Class::Api => self.limits.api_per_minute,
            Class::LoginAccount => self.limits.login_account_per_minute,
            Class::LoginIp => self.limits.login_ip_per_minute,
            Class::Action => self.limits.action_per_minute,
        }
    }

    /// Takes one unit of `key`'s budget in `class`; `Err(seconds)` says when to retry.
    pub async fn check(&self, class: Class, key: &str) -> Result<(), u64> {
        if let Some(shared) = &self.redis {
            let recently_failed = shared
                .failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < SKIP_AFTER_FAILURE);
            let error = match shared.conn.get() {
                Some(_) if recently_failed => "failed moments ago".to_owned(),
                Some(conn) => {
                    match tokio::time::timeout(
                        REDIS_TIMEOUT,
                        self.check_redis(conn.clone(), class, key),
                    )
                    .await
                    {
                        Ok(Ok(result)) => {
                            if shared.failing.swap(false, Ordering::Relaxed) {
                                tracing::info!("redis answers again; rate limits are shared again");
                            }
                            return result;
                        }
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
                    }
                }
                None => "not connected".to_owned(),
            };
            if !recently_failed {
                *shared.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            fallback(shared, &error);
        }
        self.check_memory(class, key)
    }

    fn check_memory(&self, class: Class, key: &str) -> Result<(), u64> {
        let m = &self.memory;
        let limiter = match class {
            Class::Api => &m.api,
            Class::LoginAccount => &m.login_account,
            Class::LoginIp => &m.login_ip,
            Class::Action => &m.action,
        };
        // Forget idle keys now and then, so memory follows active callers, not all callers.
        if m.checks.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            m.api.retain_recent();
            m.login_account.retain_recent();
            m.login_ip.retain_recent();
            m.action.retain_recent();
        }
        let owned = key.to_owned();
        limiter.check_key(&owned).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    async fn check_redis(
        &self,
        mut conn: redis::aio::ConnectionManager,
        class: Class,
        key: &str,
    ) -> Result<Result<(), u64>, redis::RedisError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let window = now / 60;
        let redis_key = format!("aegis:rl:{}:{window}:{key}", class.as_str());
        let count: u64 = redis::Script::new(SCRIPT)
            .key(&redis_key)
            .arg(61)
            .invoke_async(&mut conn)
            .await?;
        if count > u64::from(self.budget(class)) {
            Ok(Err((60 - now % 60).max(1)))
        } else {
            Ok(Ok(()))
        }
    }
}

/// Counts a fallback and logs it when it starts and then at most every
/// [`FALLBACK_LOG_EVERY`], so an outage under load is a few lines, not one per request.
fn fallback(shared: &Shared, error: &str) {
    let total = shared.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::counter!(aegis_core::metric_names::RATELIMIT_FALLBACKS_TOTAL).increment(1);
    let started = !shared.failing.swap(true, Ordering::Relaxed);
    if shared.log.ready(FALLBACK_LOG_EVERY) || started {
        tracing::warn!(
            error,
            fallbacks_so_far = total,
            "redis rate limit check failed; using the in-memory (per-process) limiter"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_budget_is_per_key_and_class() {
        let l = Limiter::in_memory(Limits {
            api_per_minute: 3,
            login_account_per_minute: 1,
            login_ip_per_minute: 2,
            action_per_minute: 1,
        });
        for _ in 0..3 {
            assert_eq!(l.check(Class::Api, "alice /x").await, Ok(()));
        }
        let retry = l.check(Class::Api, "alice /x").await.unwrap_err();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(l.check(Class::Api, "bob /x").await, Ok(()));
        assert_eq!(l.check(Class::LoginAccount, "alice").await, Ok(()));
        assert!(l.check(Class::LoginAccount, "alice").await.is_err());
    }

    #[tokio::test]
    async fn redis_budget_is_shared_between_limiters() {
        let limits = Limits {
            api_per_minute: 5,
            ..Limits::default()
        };
        let url = std::env::var("AEGIS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let a = Limiter::with_redis(limits, &url).await.unwrap();
        let b = Limiter::with_redis(limits, &url).await.unwrap();
        let key = format!("test-{}", uuid::Uuid::new_v4());
        // Stay clear of a window boundary, so the ten calls share one window.
        while chrono::Utc::now().timestamp() % 60 >= 58 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let mut allowed = 0;
        for i in 0..10 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            if limiter.check(Class::Api, &key).await.is_ok() {
                allowed += 1;
            }
        }
        // Two independent in-memory limiters would allow all ten (five each).
        assert_eq!(allowed, 5);
    }

    #[tokio::test]
    async fn a_redis_that_is_down_falls_back_to_memory_and_is_counted() {
        let limits = Limits {
            api_per_minute: 3,
            ..Limits::default()
        };
        // Nothing listens on port 1: refused at once, at start and at every check.
        let l = Limiter::with_redis(limits, "redis://127.0.0.1:1")
            .await
            .unwrap();
        assert!(l.is_shared());
        for _ in 0..3 {
            assert_eq!(l.check(Class::Api, "alice /x").await, Ok(()));
        }
        assert!(
            l.check(Class::Api, "alice /x").await.is_err(),
            "the in-memory budget still holds"
        );
        assert_eq!(l.fallbacks(), 4);
        assert!(Limiter::with_redis(limits, "not a url").await.is_err());
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_costs_at_most_the_timeout() {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let limits = Limits::default();
        let started = std::time::Instant::now();
        let l = Limiter::with_redis(limits, &format!("redis://{addr}"))
            .await
            .unwrap();
        let checked = std::time::Instant::now();
        assert_eq!(l.check(Class::Api, "bob /y").await, Ok(()));
        assert!(
            checked.elapsed() < REDIS_TIMEOUT * 3,
            "a check took {:?}",
            checked.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(l.fallbacks(), 1);
        held.abort();
    }
}
