//! Per-caller request quotas (`RATE_LIMITED`, SPEC §3.6): one user's script or runaway
//! client cannot take the API's database connections from everyone else.
//!
//! A user's requests to `/api/v1` are counted by authenticated identity (never by address or
//! a forwarded header: behind a load balancer every request would share one key), with a
//! sustained rate and a burst (GCRA, `governor`). Past it the request is refused before any
//! work with 429 and a `Retry-After` of the seconds until one more would be allowed.
//! Controllers are not limited: they are CLS's own system identities, and their status
//! reports are the designed hot path (SPEC §4.4). The state is per gateway replica, so N
//! replicas behind a load balancer allow a caller up to N times the quota.

use std::num::NonZeroU32;
use std::time::Duration;

use cls_domain::ErrorCode;
use cls_domain::identity::Caller;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;

/// `RATE_LIMIT_PER_CALLER` and `RATE_LIMIT_BURST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per second a user may sustain.
    pub per_second: NonZeroU32,
    /// Requests a user may make at once after being idle.
    pub burst: NonZeroU32,
}

/// The quotas of every user seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimiter {
    /// `None`: no limit.
    pub fn new(settings: Option<RateLimitSettings>) -> RateLimiter {
        RateLimiter {
            limiter: settings.map(|s| {
                governor::RateLimiter::keyed(Quota::per_second(s.per_second).allow_burst(s.burst))
            }),
        }
    }

    /// Counts one request of `caller`; 429 when its quota is used up.
    pub fn check(&self, caller: &Caller) -> Result<(), ApiError> {
        let (Some(limiter), Caller::User(email)) = (&self.limiter, caller) else {
            return Ok(());
        };
        limiter.check_key(email).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let seconds = retry_after_seconds(wait);
            ApiError {
                retry_after: Some(seconds),
                ..ApiError::new(
                    ErrorCode::RateLimited,
                    format!("too many requests from this caller; retry after {seconds} s"),
                )
            }
        })
    }

    /// Forgets the users whose quota is full again (they would start from a full burst
    /// anyway), so the state holds only recently active users.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many users have state (tests).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// Whole seconds, rounded up and at least 1: `Retry-After` has no fractions, and a client
/// that retries after 0 s is refused again.
fn retry_after_seconds(wait: Duration) -> u32 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(Some(RateLimitSettings {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }))
    }

    #[test]
    fn a_user_gets_its_burst_then_429_with_retry_after() {
        let limiter = limiter(1, 3);
        let alice = Caller::User("alice@example.com".into());
        for _ in 0..3 {
            assert!(limiter.check(&alice).is_ok());
        }
        let refused = limiter.check(&alice).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after, Some(1));
        // Another user has a quota of its own; controllers have none.
        assert!(
            limiter
                .check(&Caller::User("bob@example.com".into()))
                .is_ok()
        );
        let controller = Caller::Controller("controller@system.local".into());
        for _ in 0..10 {
            assert!(limiter.check(&controller).is_ok());
        }
        assert_eq!(limiter.tracked(), 2);
    }

    #[test]
    fn only_users_with_their_burst_back_are_forgotten() {
        let limiter = limiter(1000, 1);
        let alice = Caller::User("alice@example.com".into());
        assert!(limiter.check(&alice).is_ok());
        std::thread::sleep(Duration::from_millis(20));
        let slow = self::limiter(1, 1);
        assert!(slow.check(&alice).is_ok());
        limiter.forget_idle();
        slow.forget_idle();
        assert_eq!(limiter.tracked(), 0, "a full quota is the same as no state");
        assert_eq!(
            slow.tracked(),
            1,
            "a used quota is kept, or forgetting would reset it"
        );
        assert!(slow.check(&alice).is_err());
    }

    #[test]
    fn no_settings_means_no_limit() {
        let limiter = RateLimiter::new(None);
        let alice = Caller::User("alice@example.com".into());
        for _ in 0..1000 {
            assert!(limiter.check(&alice).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
