//! Rate limits per caller and route, and for login attempts per account and per client IP.
//!
//! In memory (governor, GCRA) by default; with Redis, a fixed one-minute window per key
//! (`INCR` + `EXPIRE` in one Lua script) that every replica shares. When Redis fails, the
//! limiter falls back to memory for that request and logs it: a limiter outage must not
//! take the API down.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// What is being limited; each class has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// API requests per caller and route.
    Api,
    /// Login attempts per account.
    LoginAccount,
    /// Login attempts per client IP.
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
    /// Login attempts per client IP.
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

/// The rate limiter shared by every request.
#[derive(Clone)]
pub struct Limiter {
    limits: Limits,
    memory: Arc<Memory>,
    redis: Option<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .field("redis", &self.redis.is_some())
            .finish()
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

    /// A limiter that shares its budgets through Redis at `url`.
    pub async fn with_redis(limits: Limits, url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let manager = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| format!("cannot connect to redis: {e}"))?;
        let mut limiter = Self::in_memory(limits);
        limiter.redis = Some(manager);
        Ok(limiter)
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
        if let Some(redis) = &self.redis {
            match self.check_redis(redis.clone(), class, key).await {
                Ok(result) => return result,
                Err(error) => {
                    tracing::warn!(%error, "redis rate limit check failed; using the in-memory limiter");
                }
            }
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
}
