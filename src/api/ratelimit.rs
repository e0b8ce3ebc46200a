//! The rate limit on authentication failures, per source address and per token: after
//! [`LimitSettings::max_failures`] failures (401 or 403) within
//! [`LimitSettings::window`], the key is locked for [`LimitSettings::lockout`] and every
//! request it makes is answered 429 with `Retry-After`, before its token is even looked at.
//!
//! Keys: the client's IP address; the SHA-256 of a presented token that is not ours (a
//! revoked or guessed token retried from many addresses); the id of a valid token that
//! keeps calling routes its role may not (a misconfigured or probing client). Time is
//! passed in, so the logic is tested without waiting. The table is bounded: past
//! [`LimitSettings::max_entries`] keys, expired entries are dropped first, then the
//! oldest, so an attacker with many addresses cannot grow memory without bound.
//!
//! A 429 is not a failure: it neither extends the lockout nor counts again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the limiter counts failures of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client address.
    Source(IpAddr),
    /// A presented token that is not ours, by its SHA-256.
    UnknownToken([u8; 32]),
    /// A valid token, by its id (failures: 403).
    Token(String),
}

/// Limits. `Default` is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Failures within `window` that lock the key.
    pub max_failures: u32,
    /// The counting window.
    pub window: Duration,
    /// How long a locked key is refused.
    pub lockout: Duration,
    /// Keys kept at most.
    pub max_entries: usize,
    /// Deadline of one request, body included (503 `timeout` past it). Not a rate limit,
    /// but set with them: tests shorten it.
    pub request_timeout: Duration,
}

impl Default for LimitSettings {
    /// 10 failures within 60 s lock the key for 5 minutes; at most 10 000 keys; a request
    /// has [`super::REQUEST_TIMEOUT`].
    fn default() -> Self {
        LimitSettings {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_entries: 10_000,
            request_timeout: super::REQUEST_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant, settings: &LimitSettings) -> bool {
        match self.locked_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(self.window_start) >= settings.window,
        }
    }
}

/// The failure table. Shared by every request; the lock is held for a map operation.
#[derive(Debug)]
pub struct FailureLimiter {
    settings: LimitSettings,
    table: Mutex<HashMap<LimitKey, Entry>>,
}

/// Whole seconds of `d`, rounded up, at least 1 (a `Retry-After` of 0 invites a retry
/// storm).
pub fn retry_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl FailureLimiter {
    /// An empty table.
    pub fn new(settings: LimitSettings) -> FailureLimiter {
        FailureLimiter {
            settings,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// How long `key` is still locked at `now`, if it is.
    pub fn locked(&self, key: &LimitKey, now: Instant) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let until = table.get(key)?.locked_until?;
        (now < until).then(|| until - now)
    }

    /// Counts a failure of `key` at `now`; returns the lockout when this failure locked it.
    pub fn fail(&self, key: LimitKey, now: Instant) -> Option<Duration> {
        let s = self.settings;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= s.max_entries {
            table.retain(|_, e| !e.expired(now, &s));
            if table.len() >= s.max_entries
                && let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, e)| e.window_start)
                    .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if entry.expired(now, &s) {
            *entry = Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        if entry.locked_until.is_some() {
            return None;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= s.max_failures {
            entry.locked_until = Some(now + s.lockout);
            return Some(s.lockout);
        }
        None
    }

    /// Keys in the table (tests, metrics).
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_entries: 4,
            ..LimitSettings::default()
        }
    }

    /// The third failure within the window locks the key for the lockout; it unlocks on
    /// time, and failures spread wider than the window never lock.
    #[test]
    fn locks_after_max_failures_within_the_window() {
        let limiter = FailureLimiter::new(settings());
        let t0 = Instant::now();
        let key = LimitKey::Source("192.0.2.7".parse().unwrap());
        assert_eq!(limiter.fail(key.clone(), t0), None);
        assert_eq!(
            limiter.fail(key.clone(), t0 + Duration::from_secs(10)),
            None
        );
        assert_eq!(limiter.locked(&key, t0 + Duration::from_secs(10)), None);
        let locked_at = t0 + Duration::from_secs(20);
        assert_eq!(
            limiter.fail(key.clone(), locked_at),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            limiter.locked(&key, locked_at + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
        // A failure while locked does not extend the lockout.
        assert_eq!(
            limiter.fail(key.clone(), locked_at + Duration::from_secs(299)),
            None
        );
        assert_eq!(
            limiter.locked(&key, locked_at + Duration::from_secs(300)),
            None
        );
        // Other keys are untouched.
        let other = LimitKey::Token("ops-1".into());
        assert_eq!(limiter.locked(&other, locked_at), None);

        // Slow failures: the window restarts, no lock.
        let slow = LimitKey::UnknownToken([7; 32]);
        for i in 0..10u64 {
            assert_eq!(
                limiter.fail(slow.clone(), t0 + Duration::from_secs(61 * i)),
                None
            );
        }
    }

    /// The table never holds more than `max_entries` keys.
    #[test]
    fn the_table_is_bounded() {
        let limiter = FailureLimiter::new(settings());
        let t0 = Instant::now();
        for i in 0..100u8 {
            limiter.fail(
                LimitKey::Source(IpAddr::from([198, 51, 100, i])),
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(limiter.len() <= 4);
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_secs(300)), 300);
    }
}
