//! One access token as the cache holds it, the [`Token`] handed to callers, and the one rule that
//! says how long a token is used and when its replacement is fetched.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio::time::Instant;

use super::builder::Config;
use super::refresh::Obtained;
use crate::dc::DataCenter;
use crate::error::Error;
use crate::hosts::{HostPattern, Origin};
use crate::secret::AccessToken;

/// How long before Zoho's stated expiry a token of `lifetime` stops being used: the configured
/// margin, at most a tenth of the lifetime (so a short-lived token is still used most of its life).
pub(super) fn safety_margin(config: &Config, lifetime: Duration) -> Duration {
    config.expiry_margin.min(lifetime / 10)
}

/// How long before it stops being used a token's replacement is fetched in the background: the
/// configured window, at most a quarter of the lifetime (short-lived tokens never refresh in a
/// loop), plus 0–50 % jitter so a fleet does not refresh in lockstep.
fn stale_window(config: &Config, lifetime: Duration) -> Duration {
    let stale = config.refresh_ahead.min(lifetime / 4);
    stale + stale.mul_f64(fastrand::f64() / 2.0)
}

/// Whether a stored token issued at `issued_at` and expiring at `expires_at` may still be used.
pub(super) fn still_usable(config: &Config, issued_at: SystemTime, expires_at: SystemTime) -> bool {
    let Ok(remaining) = expires_at.duration_since(SystemTime::now()) else {
        return false;
    };
    let lifetime = expires_at.duration_since(issued_at).unwrap_or(remaining);
    remaining > safety_margin(config, lifetime)
}

/// One access token as the cache holds it.
pub(crate) struct CachedToken {
    pub(super) access_token: AccessToken,
    /// `Zoho-oauthtoken <token>`, built once and marked sensitive.
    header: HeaderValue,
    pub(super) generation: u64,
    pub(super) expires_at: Instant,
    usable_until: Instant,
    pub(super) refresh_at: Instant,
    pub(super) api_domain: Option<String>,
    api_host: Option<HostPattern>,
    /// Where relative requests go.
    api_origin: Option<Origin>,
    /// The data centre whose hosts `api_domain` is one of, if Zoho's.
    api_dc: Option<DataCenter>,
    pub(super) scopes: Vec<String>,
    /// Zoho called this token dead.
    pub(super) dead: AtomicBool,
    /// Until when (ms after the cache's origin) token errors do not invalidate this token.
    pub(super) suspect_until_ms: AtomicU64,
    /// Minted by this process by a refresh that started because the token before it was declared
    /// dead — rather than adopted from the store, or minted ahead of expiry.
    pub(super) answers_rejection: bool,
}

impl CachedToken {
    /// `after_rejection`: the refresh started because the token before it was declared dead.
    pub(super) fn new(
        obtained: Obtained,
        generation: u64,
        after_rejection: bool,
        config: &Config,
    ) -> Result<Self, Error> {
        let answers_rejection = after_rejection && matches!(obtained, Obtained::Minted { .. });
        let (access_token, lifetime, expires_at, api_domain, scopes) = match obtained {
            Obtained::Minted { response, sent_at } => (
                response.access_token,
                response.expires_in,
                sent_at + response.expires_in,
                response.api_domain,
                response.scopes,
            ),
            Obtained::Adopted(access) => {
                // The store speaks wall-clock time; the cache, monotonic time.
                let remaining = access
                    .expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let lifetime = access
                    .expires_at
                    .duration_since(access.issued_at)
                    .unwrap_or(remaining);
                (
                    access.access_token,
                    lifetime,
                    Instant::now() + remaining,
                    access.api_domain,
                    access.scopes,
                )
            }
        };
        let margin = safety_margin(config, lifetime);
        let usable_until = expires_at.checked_sub(margin).unwrap_or(expires_at);
        let stale = stale_window(config, lifetime);
        let mut header = HeaderValue::try_from(format!(
            "Zoho-oauthtoken {}",
            access_token.expose()
        ))
        .map_err(|_| {
            Error::transient("Zoho returned an access token that cannot be sent in a header")
        })?;
        header.set_sensitive(true);
        // The first clone moves the value's bytes to shared storage; after it every per-request
        // clone is a reference-count increment, not an allocation.
        drop(header.clone());
        Ok(Self {
            access_token,
            header,
            generation,
            expires_at,
            usable_until,
            refresh_at: usable_until.checked_sub(stale).unwrap_or(usable_until),
            api_host: api_domain.as_deref().and_then(HostPattern::parse),
            api_origin: api_domain.as_deref().and_then(Origin::parse),
            api_dc: api_domain
                .as_deref()
                .and_then(Origin::parse)
                .and_then(|origin| DataCenter::from_host(origin.host())),
            api_domain,
            scopes,
            dead: AtomicBool::new(false),
            suspect_until_ms: AtomicU64::new(0),
            answers_rejection,
        })
    }

    pub(super) fn usable_until(&self) -> Instant {
        self.usable_until
    }

    pub(super) fn usable(&self, now: Instant) -> bool {
        now < self.usable_until && !self.dead.load(Relaxed)
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn api_host(&self) -> Option<&HostPattern> {
        self.api_host.as_ref()
    }

    pub(crate) fn api_origin(&self) -> Option<&Origin> {
        self.api_origin.as_ref()
    }

    pub(crate) fn api_dc(&self) -> Option<DataCenter> {
        self.api_dc
    }
}

/// An access token handed out by a [`TokenCache`](crate::TokenCache), with what Zoho said about
/// it.
#[derive(Clone)]
pub struct Token(pub(super) Arc<CachedToken>);

impl Token {
    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.0.access_token
    }

    /// Time left until Zoho's stated expiry (zero once passed).
    pub fn expires_in(&self) -> Duration {
        self.0.expires_at.saturating_duration_since(Instant::now())
    }

    /// Where the user's data lives, e.g. `https://www.zohoapis.eu`, if Zoho said.
    pub fn api_domain(&self) -> Option<&str> {
        self.0.api_domain.as_deref()
    }

    /// The granted scopes, as Zoho last reported them (refresh answers name none, so a cache
    /// that only ever refreshed has none to report).
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    pub(crate) fn cached(&self) -> &CachedToken {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.0.access_token)
            .field("expires_in", &self.expires_in())
            .field("api_domain", &self.0.api_domain)
            .field("scopes", &self.0.scopes)
            .finish()
    }
}
