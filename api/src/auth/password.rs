//! Password hashing (argon2id at OWASP parameters) and the password rules.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Hashes and verifies passwords; verifying for an unknown account costs the same as for a
/// known one (a dummy hash is verified), so timing does not reveal which emails exist.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// At most one hash per CPU at a time: more only adds queueing inside the CPU, and each
    /// hash holds 19 MiB, so a login flood must not be able to allocate without bound.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Signups hash in a pool of their own, one at a time: anyone may sign up, so a signup
    /// flood must never take the permits logins wait for.
    signup_permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Computed on first use: building a hasher stays cheap.
    dummy: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("p_cost", &self.params.p_cost())
            .finish()
    }
}

impl PasswordHasher {
    /// OWASP's argon2id recommendation: m = 19 MiB, t = 2, p = 1 (argon2's defaults).
    pub fn owasp() -> Self {
        Self {
            params: Params::default(),
            permits: cpu_permits(),
            signup_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            dummy: Default::default(),
        }
    }

    /// Custom costs (tests use cheap ones).
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, String> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        Ok(Self {
            params,
            permits: cpu_permits(),
            signup_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            dummy: Default::default(),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub fn hash(&self, password: &str) -> Result<String, String> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("random salt: {e}"))?;
        self.argon2()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| format!("hashing: {e}"))
    }

    /// True when `password` matches `phc`; with `None` (unknown account) verifies against a
    /// dummy hash and returns false, taking the same time.
    pub fn verify(&self, password: &str, phc: Option<&str>) -> bool {
        let dummy = self.dummy.get_or_init(|| {
            self.hash("dummy password for unknown accounts")
                .unwrap_or_default()
        });
        let target = phc.unwrap_or(dummy);
        let matches = PasswordHash::new(target)
            .map(|parsed| {
                self.argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        matches && phc.is_some()
    }
}

fn cpu_permits() -> std::sync::Arc<tokio::sync::Semaphore> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    std::sync::Arc::new(tokio::sync::Semaphore::new(cpus))
}

impl PasswordHasher {
    /// [`Self::hash`] on the blocking pool, at most one per CPU at a time.
    pub async fn hash_async(&self, password: String) -> Result<String, String> {
        self.hash_with(&self.permits, password).await
    }

    /// [`Self::hash`] on the blocking pool, holding a permit of `permits` meanwhile.
    async fn hash_with(
        &self,
        permits: &tokio::sync::Semaphore,
        password: String,
    ) -> Result<String, String> {
        let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| e.to_string())?
    }

    /// [`Self::hash`] for an anonymous signup: on the blocking pool, one signup at a time,
    /// never holding a permit a login needs.
    pub async fn hash_signup_async(&self, password: String) -> Result<String, String> {
        self.hash_with(&self.signup_permits, password).await
    }

    /// Holds every signup permit (a test's stand-in for a signup flood).
    #[cfg(test)]
    pub(crate) async fn hold_signup_permits(&self) -> tokio::sync::OwnedSemaphorePermit {
        #[allow(
            clippy::unwrap_used,
            reason = "test helper; the semaphore is never closed"
        )]
        self.signup_permits.clone().acquire_owned().await.unwrap()
    }

    /// [`Self::verify`] on the blocking pool, at most one per CPU at a time.
    pub async fn verify_async(&self, password: String, phc: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.verify(&password, phc.as_deref()))
            .await
            .unwrap_or(false)
    }
}

/// Lower-cased, trimmed email, or why it is not one.
pub fn normalise_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(format!("`{email}` is not an email address"))
    }
}

/// The password rules, with a message that says what to change.
pub fn check_password_rules(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters long (it has {chars}); a passphrase of a few words works well"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes long"
        ));
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err("password must use at least 4 different characters".to_owned());
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lower == email || (local.len() >= 4 && lower.contains(local)) {
        return Err("password must not contain your email address".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_accounts_never_match() {
        let h = PasswordHasher::with_params(1024, 1, 1).unwrap();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(h.verify("correct horse battery", Some(&phc)));
        assert!(!h.verify("wrong horse battery", Some(&phc)));
        assert!(!h.verify("dummy password for unknown accounts", None));
        assert!(!h.verify("x", Some("not a phc string")));
    }

    #[test]
    fn owasp_parameters() {
        let h = PasswordHasher::owasp();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn rules_and_emails() {
        assert_eq!(
            normalise_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "ada@.com",
            "a da@example.com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
        assert!(
            check_password_rules("short", "a@b.co")
                .unwrap_err()
                .contains("at least 12")
        );
        assert!(
            check_password_rules("aaaaaaaaaaaaaaa", "a@b.co")
                .unwrap_err()
                .contains("4 different")
        );
        assert!(
            check_password_rules("my-adalovelace-pw", "adalovelace@b.co")
                .unwrap_err()
                .contains("email")
        );
        assert!(check_password_rules("correct horse battery", "ada@b.co").is_ok());
    }
}
