//! What the cache does after a failed refresh: hold the failure until new credentials appear, or
//! wait before the next attempt, and how long.

use std::time::Duration;

use super::builder::Config;
use crate::error::{Error, Kind};

/// The cache's answer to one failed refresh.
#[derive(Debug, PartialEq)]
pub(super) enum After {
    /// Only new credentials cure it (no refresh token yet, a revoked one, a wrong client): hold
    /// the failure, never call Zoho with these credentials again, and read the store every
    /// `store_recheck` for new ones.
    Hold,
    /// Try again after this long.
    Wait(Duration),
}

/// How the cache answers `error`, the `failures`-th transient failure in a row (counting this one).
pub(super) fn after(error: &Error, failures: u32, config: &Config) -> After {
    if error.is_permanent() || error.is_not_connected() {
        return After::Hold;
    }
    let wait = match error.kind() {
        Kind::RateLimited => error.retry_after().unwrap_or(config.backoff_max),
        Kind::Throttled | Kind::Unrecognised => jitter(config.throttle_backoff, 0.8, 1.2),
        kind => {
            let exponent = failures.saturating_sub(1).min(16);
            let base = config
                .backoff_min
                .saturating_mul(1 << exponent)
                .min(config.backoff_max);
            let wait = jitter(base, 0.5, 1.0);
            // A store that is down comes back by itself: look again within seconds, not minutes.
            if kind == Kind::StoreUnavailable {
                wait.min(config.store_recheck)
            } else {
                wait
            }
        }
    };
    After::Wait(wait)
}

/// `base` scaled by a random factor in `[low, high)`.
pub(super) fn jitter(base: Duration, low: f64, high: f64) -> Duration {
    base.mul_f64(low + fastrand::f64() * (high - low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_within_bounds() {
        let config = Config::default();
        for failures in 1..20 {
            let After::Wait(wait) = after(&Error::transient("x"), failures, &config) else {
                panic!("a transient failure is retried");
            };
            let base = config
                .backoff_min
                .saturating_mul(1 << (failures - 1).min(16))
                .min(config.backoff_max);
            assert!(wait >= base / 2 && wait <= base, "{failures}: {wait:?}");
        }
    }

    #[test]
    fn a_store_that_is_down_is_looked_at_again_within_the_recheck_interval() {
        let config = Config::default();
        let down = Error::store_unavailable("redis is down");
        let After::Wait(wait) = after(&down, 12, &config) else {
            panic!("retried");
        };
        assert!(wait <= config.store_recheck, "{wait:?}");
    }

    #[test]
    fn only_new_credentials_cure_a_revoked_token_or_no_token() {
        let config = Config::default();
        let revoked = Error::new(Kind::InvalidGrant, "revoked");
        let none = Error::new(Kind::NotConnected, "no refresh token yet");
        assert_eq!(after(&revoked, 1, &config), After::Hold);
        assert_eq!(after(&none, 1, &config), After::Hold);
    }
}
