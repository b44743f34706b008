//! Who is logged in to the console: operators' passwords (argon2id), sessions, the CSRF token
//! of each session, and the limit on failed logins. No I/O here but the clock the callers pass.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use crate::config::ConsoleOperator;

/// Sessions and login records kept at most; past it the oldest go first.
pub const MAX_SESSIONS: usize = 10_000;
const MAX_LOGIN_RECORDS: usize = 10_000;

/// An argon2id PHC string for `password`, with a fresh salt and the crate's default cost
/// (OWASP's minimum: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

pub fn is_argon2id_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok_and(|hash| hash.algorithm.as_str() == "argon2id")
}

/// A well-formed hash no password matches, checked when the name is unknown so that a wrong
/// name costs as long as a wrong password.
const NOBODY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Tz8G6XpDcxYb8SbXxnU/M1wbNLyD4Sc0hxLTnRj8Yak";

/// The operator `name` and `password` log in as, if any. Slow on purpose (argon2id): call it
/// off the async threads.
pub fn verify<'a>(
    operators: &'a [ConsoleOperator],
    name: &str,
    password: &str,
) -> Option<&'a ConsoleOperator> {
    let operator = operators.iter().find(|o| o.name == name);
    let stored = operator.map_or(NOBODY_HASH, |o| o.password_hash.as_str());
    let matches = PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    });
    operator.filter(|_| matches)
}

/// 256 random bits, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    hex::encode(bytes)
}

/// Compares a submitted token with the expected one in constant time.
pub fn tokens_match(expected: &str, submitted: Option<&str>) -> bool {
    match submitted {
        Some(submitted) if !expected.is_empty() =>
        {
            #[allow(deprecated)]
            aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                submitted.as_bytes(),
            )
            .is_ok()
        }
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub operator: String,
    pub user_id: i64,
    /// Every form of this session carries it; a request without it changes nothing.
    pub csrf: String,
}

struct Entry {
    session: Session,
    last_seen: Instant,
}

/// Logged-in operators by session id, forgotten after `idle` without a request. Kept in
/// memory: a restart logs everyone out, which is the safe side for a console.
pub struct Sessions {
    idle: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Sessions {
            idle,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session; returns its id (the cookie's value).
    pub fn open(&self, operator: &ConsoleOperator, now: Instant) -> String {
        let id = random_token();
        let mut entries = self.entries.lock().expect("sessions lock");
        entries.retain(|_, e| now.saturating_duration_since(e.last_seen) < self.idle);
        if entries.len() >= MAX_SESSIONS {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(id, _)| id.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            id.clone(),
            Entry {
                session: Session {
                    operator: operator.name.clone(),
                    user_id: operator.user_id,
                    csrf: random_token(),
                },
                last_seen: now,
            },
        );
        id
    }

    /// The session of `id`, if it is open and was used within the idle time; using it renews it.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut entries = self.entries.lock().expect("sessions lock");
        let entry = entries.get_mut(id)?;
        if now.saturating_duration_since(entry.last_seen) >= self.idle {
            entries.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    pub fn close(&self, id: &str) {
        self.entries.lock().expect("sessions lock").remove(id);
    }
}

/// Logins per operator name and per client address within a window: each attempt counts from
/// the moment it begins (so that many tried at once cannot pass the limit together) and is
/// forgotten again if it succeeds. Past `attempts`, logins are refused before the password is
/// even checked, until the window has passed.
pub struct LoginLimiter {
    attempts: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Characters of a name that key the limiter: longer names are no operator's anyway.
const MAX_NAME_KEY_CHARS: usize = 64;

impl LoginLimiter {
    pub fn new(attempts: u32, window: Duration) -> Self {
        LoginLimiter {
            attempts: attempts as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(name: &str, client: &str) -> [String; 2] {
        let name: String = name.chars().take(MAX_NAME_KEY_CHARS).collect();
        [format!("name:{name}"), format!("addr:{client}")]
    }

    /// Counts a login of `name` from `client` beginning `now`, if the limit allows one.
    pub fn begin(&self, name: &str, client: &str, now: Instant) -> bool {
        let mut failures = self.failures.lock().expect("login limiter lock");
        let window = self.window;
        if failures.len() >= MAX_LOGIN_RECORDS {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
        let keys = Self::keys(name, client);
        let allowed = keys.iter().all(|key| {
            failures.get_mut(key).is_none_or(|times| {
                while times
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= window)
                {
                    times.pop_front();
                }
                times.len() < self.attempts
            })
        });
        if allowed {
            for key in keys {
                failures.entry(key).or_default().push_back(now);
            }
        }
        allowed
    }

    /// The login begun at `began` succeeded: the name's failures are forgotten, and this
    /// attempt no longer counts for the address.
    pub fn succeeded(&self, name: &str, client: &str, began: Instant) {
        let [name_key, addr_key] = Self::keys(name, client);
        let mut failures = self.failures.lock().expect("login limiter lock");
        failures.remove(&name_key);
        if let Some(times) = failures.get_mut(&addr_key) {
            if let Some(at) = times.iter().position(|t| *t == began) {
                times.remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str, user_id: i64, password: &str) -> ConsoleOperator {
        ConsoleOperator {
            name: name.into(),
            user_id,
            password_hash: hash_password(password).unwrap(),
        }
    }

    #[test]
    fn a_password_logs_in_as_its_operator_only() {
        let operators = vec![
            operator("li", 91, "correct horse"),
            operator("wang", 92, "battery"),
        ];
        assert!(operators.iter().all(|o| is_argon2id_hash(&o.password_hash)));
        assert_eq!(
            verify(&operators, "li", "correct horse").map(|o| o.user_id),
            Some(91)
        );
        assert_eq!(
            verify(&operators, "wang", "battery").map(|o| o.user_id),
            Some(92)
        );
        assert!(verify(&operators, "li", "battery").is_none());
        assert!(verify(&operators, "li", "").is_none());
        assert!(verify(&operators, "zhao", "correct horse").is_none());
        assert!(!is_argon2id_hash("correct horse"));
        assert!(is_argon2id_hash(NOBODY_HASH));
    }

    #[test]
    fn sessions_end_when_idle_or_closed_and_carry_their_own_csrf_token() {
        let li = operator("li", 91, "pw");
        let sessions = Sessions::new(Duration::from_secs(60));
        let start = Instant::now();
        let first = sessions.open(&li, start);
        let second = sessions.open(&li, start);
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
        let a = sessions.get(&first, start).unwrap();
        let b = sessions.get(&second, start).unwrap();
        assert_eq!((a.operator.as_str(), a.user_id), ("li", 91));
        assert_ne!(a.csrf, b.csrf);
        // Use renews a session; idleness ends it.
        assert!(sessions
            .get(&first, start + Duration::from_secs(50))
            .is_some());
        assert!(sessions
            .get(&first, start + Duration::from_secs(100))
            .is_some());
        assert!(sessions
            .get(&second, start + Duration::from_secs(100))
            .is_none());
        sessions.close(&first);
        assert!(sessions
            .get(&first, start + Duration::from_secs(101))
            .is_none());
        assert!(sessions.get("not-a-session", start).is_none());
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let token = random_token();
        assert!(tokens_match(&token, Some(&token)));
        assert!(!tokens_match(&token, None));
        assert!(!tokens_match(&token, Some("")));
        assert!(!tokens_match(&token, Some(&token[..63])));
        assert!(!tokens_match(&token, Some(&random_token())));
        assert!(!tokens_match("", Some("")));
    }

    #[test]
    fn logins_are_limited_by_name_and_by_address() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        // Attempts count as they begin: three at once use the whole allowance.
        for _ in 0..3 {
            assert!(limiter.begin("li", "10.0.0.1", t));
        }
        assert!(!limiter.begin("li", "10.0.0.1", t));
        // The name is limited from anywhere, the address for any name.
        assert!(!limiter.begin("li", "10.0.0.2", t));
        assert!(!limiter.begin("wang", "10.0.0.1", t));
        assert!(limiter.begin("wang", "10.0.0.2", t));
        // The window passes.
        assert!(limiter.begin("li", "10.0.0.3", t + Duration::from_secs(60)));
        // Success forgets the name's failures, and its own attempt at the address.
        let later = t + Duration::from_secs(120);
        for addr in ["10.0.0.4", "10.0.0.5", "10.0.0.6"] {
            assert!(limiter.begin("zhao", addr, later));
        }
        assert!(!limiter.begin("zhao", "10.0.0.7", later));
        let at = later + Duration::from_secs(1);
        assert!(limiter.begin("sun", "10.0.0.8", at));
        limiter.succeeded("sun", "10.0.0.8", at);
        limiter.succeeded("zhao", "10.0.0.4", later);
        assert!(limiter.begin("zhao", "10.0.0.7", at));
        // Very long names share one key, their first 64 characters.
        let long = "x".repeat(10_000);
        for addr in ["10.0.1.1", "10.0.1.2", "10.0.1.3"] {
            assert!(limiter.begin(&long, addr, at));
        }
        assert!(!limiter.begin(&format!("{long}y"), "10.0.1.4", at));
        assert_eq!(LoginLimiter::keys(&long, "a")[0].len(), "name:".len() + 64);
    }
}
