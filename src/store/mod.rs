//! Where tokens live between refreshes, and how processes that share them refresh once.
//!
//! A [`TokenCache`](crate::TokenCache) keeps its token in memory for the hot path, and keeps the
//! durable state — the refresh token, the current access token with its expiry, the recent token
//! requests that count against Zoho's limit, and a revoked refresh token's error — in a
//! [`TokenStore`]. When a token is needed the cache:
//!
//! 1. loads the store and **adopts** a token another process already minted, if it is newer than
//!    its own and still usable;
//! 2. otherwise takes the store's **refresh lock** (waiting, bounded, while another holder works,
//!    and adopting its token as soon as it appears);
//! 3. under the lock, loads again, checks the **fleet budget** (the token requests recorded in the
//!    store, default 10 per 10 minutes) and a recorded **permanent failure**, records the request,
//!    calls Zoho, and saves the result — never dropping the refresh token.
//!
//! If the store is unavailable (a Redis that is down), the cache warns and refreshes on its own
//! with its local single flight and local budget, and uses the store again once it answers.
//!
//! | store | shared by | lock |
//! |---|---|---|
//! | [`MemoryStore`] (default) | the caches in one process that hold it | none needed |
//! | [`FileStore`] | processes on one host | an OS file lock |
//! | `RedisStore` (feature `redis`) | a fleet | `SET NX PX` with an owner value |
//!
//! [`open`] reads the `ZOHO_TOKEN_STORE` syntax the quickstart and the command line use.

mod codec;
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use self::file::FileStore;
pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
use crate::error::{Error, Kind};
use crate::secret::{AccessToken, RefreshToken};

/// A boxed future, as the [`TokenStore`] methods return (the trait is used as `dyn TokenStore`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Durable token state, shared by every process that uses the same store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenSet {
    /// The refresh token; `None` for client-credentials caches.
    pub refresh_token: Option<RefreshToken>,
    /// The accounts server that issued the refresh token (its data centre's); refreshes must go
    /// there. Recorded by [`Connector`](crate::authorize::Connector); `None` when unknown.
    pub accounts_url: Option<String>,
    /// The current access token, if one was minted and not yet expired.
    pub access: Option<StoredAccess>,
    /// When token requests were made recently, for the fleet-wide budget.
    pub token_requests: Vec<SystemTime>,
    /// A permanent failure of [`refresh_token`](Self::refresh_token), recorded so that no process
    /// keeps calling Zoho with a revoked token.
    pub failure: Option<StoredFailure>,
}

/// An access token as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredAccess {
    /// The token.
    pub access_token: AccessToken,
    /// When the token request that minted it was sent.
    pub issued_at: SystemTime,
    /// Zoho's stated expiry.
    pub expires_at: SystemTime,
    /// Where the user's data lives.
    pub api_domain: Option<String>,
    /// The granted scopes, as last reported.
    pub scopes: Vec<String>,
}

/// A refresh token's permanent failure, as recorded in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredFailure {
    /// Zoho's error code, e.g. `invalid_code`.
    pub code: String,
    /// The error's message.
    pub message: String,
}

impl TokenSet {
    /// A set holding only a refresh token, e.g. right after consent.
    pub fn new(refresh_token: RefreshToken) -> Self {
        Self {
            refresh_token: Some(refresh_token),
            ..Self::default()
        }
    }

    /// Drops the token requests older than `window` before `now`.
    pub(crate) fn prune_requests(&mut self, now: SystemTime, window: Duration) {
        self.token_requests
            .retain(|&at| now.duration_since(at).map_or(true, |age| age < window));
    }
}

impl StoredAccess {
    /// An access token minted at `issued_at` that Zoho says expires at `expires_at`.
    pub fn new(
        access_token: AccessToken,
        issued_at: SystemTime,
        expires_at: SystemTime,
        api_domain: Option<String>,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            access_token,
            issued_at,
            expires_at,
            api_domain,
            scopes,
        }
    }
}

impl StoredFailure {
    /// A failure with Zoho's error `code` (e.g. `invalid_code`) and a message for people.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn from_error(error: &Error) -> Self {
        Self::new(error.zoho_code().unwrap_or_default(), error.to_string())
    }

    pub(crate) fn to_error(&self) -> Error {
        Error::new(
            Kind::InvalidGrant,
            format!("{} (recorded in the token store)", self.message),
        )
        .with_code(self.code.clone())
    }
}

/// A place to keep a [`TokenSet`] and a lock that one process at a time holds while refreshing.
///
/// Implement it to keep tokens in your own database: `load` and `save` move the whole set,
/// `try_lock` must give the lock to at most one caller at a time across every process sharing the
/// store, and must free it by itself if its holder dies (a TTL, or an OS lock). Errors that mean
/// "unreachable" should be [`Error::store_unavailable`] so the cache falls back to refreshing on
/// its own; other errors (a corrupt file) surface to callers and nothing is overwritten.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// Reads the token set; `None` when nothing has been saved.
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>>;

    /// Replaces the token set, atomically: a reader sees the old set or the new one.
    fn save<'a>(&'a self, set: &'a TokenSet) -> StoreFuture<'a, ()>;

    /// Takes the refresh lock if it is free; `None` when another holder has it.
    fn try_lock(&self) -> StoreFuture<'_, Option<Box<dyn StoreLock>>>;
}

/// A held refresh lock.
pub trait StoreLock: Send + fmt::Debug {
    /// Frees the lock (only if this holder still owns it).
    fn release(self: Box<Self>) -> StoreFuture<'static, ()>;
}

/// Opens a store from the `ZOHO_TOKEN_STORE` syntax: `memory` (or empty), `file:PATH`, or a
/// `redis://` URL (feature `redis`; `?prefix=NAME&lock_ttl_ms=N` set the key prefix and the lock's
/// lifetime; `rediss://` needs a TLS feature of the `redis` crate, see `RedisStore`).
///
/// ```
/// let store = zoho_auth::store::open("file:/tmp/zoho-tokens.json").unwrap();
/// assert!(format!("{store:?}").contains("zoho-tokens.json"));
/// assert!(zoho_auth::store::open("ftp://nope").is_err());
/// ```
pub fn open(spec: &str) -> Result<Arc<dyn TokenStore>, Error> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = spec.strip_prefix("file:") {
        return Ok(Arc::new(FileStore::new(path)));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(Arc::new(RedisStore::open(spec)?));
        #[cfg(not(feature = "redis"))]
        return Err(Error::config(
            "a redis:// token store needs zoho-auth's `redis` feature",
        ));
    }
    Err(Error::config(format!(
        "unknown token store {spec:?}: expected `memory`, `file:PATH` or a redis:// URL"
    )))
}

impl Error {
    /// A store that cannot be reached right now (connection refused, timeout). The cache warns and
    /// refreshes without it until it answers again.
    pub fn store_unavailable(message: impl Into<String>) -> Self {
        Error::new(Kind::StoreUnavailable, message)
    }

    /// A store that answered with something unusable (a corrupt file, a permission error). The
    /// cache surfaces it and never overwrites what is there.
    pub fn store(message: impl Into<String>) -> Self {
        Error::new(Kind::Store, message)
    }
}
