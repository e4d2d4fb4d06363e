//! The crate's one error type.
//!
//! Like hyper's, [`Error`] is opaque: ask it questions through predicates
//! ([`is_transient`](Error::is_transient), [`is_permanent`](Error::is_permanent),
//! [`is_rate_limited`](Error::is_rate_limited), ...) and read Zoho's own error code through
//! [`zoho_code`](Error::zoho_code). It is cheap to clone, because one failed refresh is handed to
//! every request that waited for it. Its messages never contain a secret.
//!
//! The [`ZohoAuth`](crate::ZohoAuth) service returns [`tower::BoxError`]; errors this crate made
//! downcast to [`Error`]:
//!
//! ```
//! # fn handle(err: tower::BoxError) {
//! if let Some(err) = err.downcast_ref::<zoho_auth::Error>() {
//!     if let Some(wait) = err.retry_after() {
//!         eprintln!("Zoho token unavailable, retry in {wait:?}: {err}");
//!     }
//! }
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// What went wrong, in the terms a caller acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Network failure, timeout, 5xx, HTML or empty body, unparseable JSON: try again later.
    Transient,
    /// Zoho's "too many requests" answer (`"status":"failure"`, in any language).
    Throttled,
    /// This process's own token budget is spent; no request was sent to Zoho.
    RateLimited,
    /// `invalid_client`: unknown client, or a client used at the wrong data centre.
    InvalidClient,
    /// `invalid_client_secret`.
    InvalidClientSecret,
    /// `invalid_code`: grant code expired or used, or refresh token wrong or revoked.
    InvalidGrant,
    /// Another documented Zoho error code (`invalid_scope`, `missing_org_info`, ...).
    Rejected,
    /// An error code this crate does not know; retried only after a long back-off.
    Unrecognised,
    /// Waited longer than the configured bound for a token.
    Timeout,
    /// Invalid configuration: a URL, a header value, a data centre name.
    Config,
    /// A request would have carried the token over plain `http` to a non-loopback host.
    Insecure,
    /// The request body could not be read.
    Body,
    /// The token store answered with something unusable (a corrupt file).
    Store,
    /// The token store cannot be reached; the cache refreshes without it meanwhile.
    StoreUnavailable,
    /// A consent callback that cannot be used: denied, forged, stale or incomplete.
    Authorization,
    /// No refresh token yet: nobody has connected a Zoho account (the store holds none).
    NotConnected,
}

#[derive(Clone)]
struct Inner {
    kind: Kind,
    message: String,
    code: Option<String>,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// An error from talking to Zoho's accounts server or from the token cache.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                code: None,
                status: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self::new(Kind::Transient, message)
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    pub(crate) fn with_code(self, code: impl Into<String>) -> Self {
        let code = code.into();
        self.edit(|inner| inner.code = Some(code))
    }

    pub(crate) fn with_status(self, status: StatusCode) -> Self {
        self.edit(|inner| inner.status = Some(status))
    }

    pub(crate) fn with_retry_after(self, retry_after: Duration) -> Self {
        self.edit(|inner| inner.retry_after = Some(retry_after))
    }

    /// Attaches the underlying error, reported by [`source`](StdError::source). Its messages must
    /// not contain secrets.
    #[must_use]
    pub fn with_source(self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.edit(|inner| inner.source = Some(Arc::new(source)))
    }

    pub(crate) fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// A failure that may go away by itself: network errors, timeouts talking to Zoho, 5xx,
    /// HTML or empty bodies, malformed JSON. The token cache retries these with back-off.
    pub fn is_transient(&self) -> bool {
        matches!(self.inner.kind, Kind::Transient | Kind::StoreUnavailable)
    }

    /// A failure that retrying cannot fix: a bad client id or secret, a revoked refresh token,
    /// a used grant code, a scope or org problem, or invalid configuration. The token cache
    /// does not retry these; a person has to act.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::InvalidClient
                | Kind::InvalidClientSecret
                | Kind::InvalidGrant
                | Kind::Rejected
                | Kind::Config
                | Kind::Insecure
        )
    }

    /// Zoho throttled token requests, or this process held back to stay within Zoho's limit
    /// (10 token requests per 10 minutes per refresh token). [`retry_after`](Self::retry_after)
    /// says when to try again.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.inner.kind, Kind::RateLimited | Kind::Throttled)
    }

    /// Zoho itself answered with its throttling message (as opposed to the local budget).
    pub fn is_throttled(&self) -> bool {
        self.inner.kind == Kind::Throttled
    }

    /// `invalid_client`: the client id is unknown at this data centre. Usually the account
    /// lives in another DC, or the client is not enabled for multi-DC use.
    pub fn is_invalid_client(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::InvalidClient | Kind::InvalidClientSecret
        )
    }

    /// `invalid_code`: the grant code was used or expired, or — on refresh — the refresh token is
    /// wrong or revoked and the user must consent again.
    pub fn is_invalid_grant(&self) -> bool {
        self.inner.kind == Kind::InvalidGrant
    }

    /// Waiting for a token took longer than the configured bound.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// The configuration is invalid (a URL, a data centre name, an insecure scheme).
    pub fn is_config(&self) -> bool {
        matches!(self.inner.kind, Kind::Config | Kind::Insecure)
    }

    /// The request was refused because it would have sent the token over plain `http` to a
    /// host that is not a loopback address.
    pub fn is_insecure(&self) -> bool {
        self.inner.kind == Kind::Insecure
    }

    /// Reading the request body failed.
    pub fn is_body(&self) -> bool {
        self.inner.kind == Kind::Body
    }

    /// The token store failed: unreachable, or holding something unusable.
    pub fn is_store(&self) -> bool {
        matches!(self.inner.kind, Kind::Store | Kind::StoreUnavailable)
    }

    /// No Zoho account is connected yet: no refresh token was configured and the token store
    /// holds none. Not permanent: the cache looks at the store again and recovers as soon as a
    /// consent or `zoho-auth login` fills it.
    pub fn is_not_connected(&self) -> bool {
        self.inner.kind == Kind::NotConnected
    }

    /// The token store cannot be reached right now.
    pub fn is_store_unavailable(&self) -> bool {
        self.inner.kind == Kind::StoreUnavailable
    }

    /// A consent callback was refused: the user denied access, the `state` did not match, the
    /// `accounts-server` was not Zoho's, or the code was missing.
    pub fn is_authorization(&self) -> bool {
        self.inner.kind == Kind::Authorization
    }

    /// Zoho's error code (`invalid_client`, `invalid_code`, the localized throttling `error`, ...),
    /// when Zoho sent one.
    pub fn zoho_code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The HTTP status of Zoho's answer, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// How long to wait before a new attempt can succeed, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("zoho_auth::Error");
        d.field("kind", &self.inner.kind);
        if let Some(code) = &self.inner.code {
            d.field("code", code);
        }
        if let Some(status) = &self.inner.status {
            d.field("status", status);
        }
        if let Some(retry_after) = &self.inner.retry_after {
            d.field("retry_after", retry_after);
        }
        d.field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(retry_after) = self.inner.retry_after {
            write!(f, " (retry in {}s)", retry_after.as_secs().max(1))?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_kind() {
        let revoked = Error::new(Kind::InvalidGrant, "revoked").with_code("invalid_code");
        assert!(revoked.is_permanent() && revoked.is_invalid_grant() && !revoked.is_transient());
        assert_eq!(revoked.zoho_code(), Some("invalid_code"));

        let throttled =
            Error::new(Kind::Throttled, "slow down").with_retry_after(Duration::from_secs(300));
        assert!(
            throttled.is_rate_limited() && throttled.is_throttled() && !throttled.is_permanent()
        );
        assert_eq!(throttled.to_string(), "slow down (retry in 300s)");

        let local = Error::new(Kind::RateLimited, "budget");
        assert!(local.is_rate_limited() && !local.is_throttled());
        assert!(Error::transient("x").is_transient());
    }

    #[test]
    fn clones_share_and_edits_do_not_leak_back() {
        let a = Error::transient("x");
        let b = a.clone().with_retry_after(Duration::from_secs(1));
        assert_eq!(a.retry_after(), None);
        assert_eq!(b.retry_after(), Some(Duration::from_secs(1)));
    }
}
