//! How a token cache is doing — what [`TokenCache::status`](super::TokenCache::status) reports,
//! and the coarse health a registry of connections turns into events.

use std::time::{Duration, SystemTime};

use crate::error::Error;

/// What a cache (a connection) can do for its callers now.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Status {
    /// A usable token is cached.
    Connected {
        /// When the token stops being used (its expiry, less the safety margin).
        usable_for: Duration,
    },
    /// No usable token, and a refresh is in flight.
    Refreshing,
    /// The last refresh failed with an error that may pass (the network, a 5xx, the store); no
    /// new attempt before `next_attempt`.
    Failing {
        /// The last failure.
        error: Error,
        /// When the failures in a row began.
        since: SystemTime,
        /// When the next refresh may start (past: the next request starts one).
        next_attempt: SystemTime,
    },
    /// Zoho throttled the last refresh; no new attempt before `until`.
    Throttled {
        /// When the next refresh may start.
        until: SystemTime,
    },
    /// Only new credentials cure it: the refresh token was revoked (`invalid_code`), or Zoho
    /// does not know the client (`invalid_client`). Zoho is not called with these credentials
    /// again; a new consent (or `zoho-auth login`) fixes it.
    NeedsReconsent {
        /// Zoho's error code.
        code: String,
    },
    /// No refresh token: nobody has connected a Zoho account yet, or it was disconnected.
    NotConnected,
    /// Nothing tried yet: no token was asked for.
    Idle,
}

impl Status {
    /// Whether requests get a token now.
    pub fn is_connected(&self) -> bool {
        matches!(self, Status::Connected { .. })
    }
}

/// The health classes transitions are reported between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    Failing,
    NeedsReconsent(String),
    NotConnected,
}

impl Health {
    /// The class a failed refresh leaves the cache in; `held`: only new credentials cure it.
    pub(crate) fn of_failure(error: &Error, held: bool) -> Self {
        if error.is_not_connected() {
            Health::NotConnected
        } else if held {
            Health::NeedsReconsent(error.zoho_code().unwrap_or("unknown").to_owned())
        } else {
            Health::Failing
        }
    }
}
