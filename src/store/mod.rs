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
//! ## Fenced saves
//!
//! Every stored set carries a [`revision`](TokenSet::revision), and every save is a
//! compare-and-set against the revision that was read: [`TokenStore::save`] writes only if the
//! store still holds that revision, and a save made under the refresh lock also checks that the
//! lock is still held. Every writer — the cache, [`Connector`](crate::authorize::Connector), the
//! command line — goes through `update` (on `dyn TokenStore`), which re-reads and re-applies its
//! edit when it lost the race. So a refresh that lands after a re-consent keeps the new refresh
//! token (and takes its own access token only if the stored one is older), and no save ever
//! reverts a newer one, in this process or anywhere in the fleet.
//!
//! | store | shared by | refresh lock | fenced save |
//! |---|---|---|---|
//! | [`MemoryStore`] (default) | the caches in one process that hold it | a Tokio mutex | under its mutex |
//! | [`FileStore`] | processes on one host | an OS file lock | under a second OS lock, re-read before the rename |
//! | `RedisStore` (feature `redis`) | a fleet | `SET NX PX` with an owner value | one Lua script that checks the revision and the lock owner |
//!
//! [`open`] reads the `ZOHO_TOKEN_STORE` syntax the quickstart and the command line use.
//!
//! An application with many connected accounts keeps their records in a [`ConnectionStore`]
//! ([`open_connections`] reads the same syntax): one `TokenStore` per
//! [`ConnectionId`](crate::ConnectionId), listed page by page; its docs show each store's layout.
//!
//! The JSON form the file and Redis stores write is public ([`TokenSet::to_json`],
//! [`TokenSet::from_json`]), for stores kept in an application's own database.

mod codec;
mod connections;
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[cfg(any(feature = "axum", feature = "connections"))]
pub(crate) use self::connections::remove_holding;
#[cfg(feature = "redis")]
pub use self::connections::RedisConnections;
pub use self::connections::{
    open_connections, ConnectionStore, FileConnections, MemoryConnections,
};
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
    /// How many times this set was saved: `0` for a set never stored. [`TokenStore::load`] fills
    /// it in; [`TokenStore::save`] stores a set only if the store still holds this revision, and
    /// then holds `revision + 1`.
    pub revision: u64,
    /// The refresh token; `None` for client-credentials caches.
    pub refresh_token: Option<RefreshToken>,
    /// The accounts server that issued the refresh token (its data centre's); refreshes must go
    /// there. Recorded by [`Connector`](crate::authorize::Connector); `None` when unknown.
    pub accounts_url: Option<String>,
    /// The current access token, if one was minted and not yet expired.
    pub access: Option<StoredAccess>,
    /// When token requests were made recently, for the fleet-wide budget.
    pub token_requests: Vec<SystemTime>,
    /// A permanent failure of [`refresh_token`](Self::refresh_token) — revoked, or refused to the
    /// OAuth client — recorded so that no process keeps calling Zoho with credentials that
    /// cannot work.
    pub failure: Option<StoredFailure>,
    /// The last refresh failed in a way that passes (the network, a 5xx, throttling): since
    /// when, and when the next attempt may be made. Cleared by the next token minted. Every
    /// process of a fleet reports it ([`Connections::status`](crate::Connections::status)).
    pub retry: Option<StoredRetry>,
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

/// Refreshes failing for now, as recorded in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRetry {
    /// When the failures in a row began.
    pub since: SystemTime,
    /// When the next refresh may start.
    pub next_attempt: SystemTime,
    /// Whether Zoho throttled the last one.
    pub throttled: bool,
    /// The last failure's message.
    pub message: String,
}

/// A refresh token's permanent failure, as recorded in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredFailure {
    /// Zoho's error code, e.g. `invalid_code`.
    pub code: String,
    /// The error's message.
    pub message: String,
    /// For a failure of the OAuth client rather than the refresh token (`invalid_client`,
    /// `invalid_client_secret`): a digest of the client id and secret it was seen with. It holds
    /// only for processes with those credentials; one with a fixed secret refreshes, and clears
    /// it. `None`: the refresh token itself failed, and only a new one cures it.
    pub client: Option<String>,
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

impl TokenSet {
    /// The set in the JSON form the file and Redis stores write, for a [`TokenStore`] kept in an
    /// application's own database. It holds the refresh token in clear: keep it where only the
    /// application can read it.
    ///
    /// ```
    /// use zoho_auth::store::TokenSet;
    /// use zoho_auth::RefreshToken;
    ///
    /// let json = TokenSet::new(RefreshToken::new("1000.r.t")).to_json();
    /// assert_eq!(json, r#"{"version":1,"revision":0,"refresh_token":"1000.r.t","token_requests_ms":[]}"#);
    /// let back = TokenSet::from_json(json.as_bytes()).unwrap();
    /// assert_eq!(back.refresh_token.unwrap().expose(), "1000.r.t");
    /// ```
    ///
    /// Its fields: `version` (this form's version, `1`; a reader refuses another), `revision`, and when present
    /// `refresh_token`, `accounts_url`, `token_requests_ms` (milliseconds since the Unix epoch),
    /// `failure` (`{"code", "message", "client"}`), `retry` (`{"since_ms", "next_attempt_ms",
    /// "throttled", "message"}`) and `access` (`{"access_token", "issued_at_ms",
    /// "expires_at_ms", "api_domain", "scopes"}`). Readers ignore fields they do not know.
    pub fn to_json(&self) -> String {
        codec::to_json(self)
    }

    /// Reads a set from [its JSON form](Self::to_json). The error names what is wrong without
    /// quoting the input, which may hold a token.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        codec::from_json(json).map_err(|e| Error::store(format!("not a zoho-auth token set: {e}")))
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

impl StoredAccess {
    /// The access token of a token answer whose request was sent at `issued_at`.
    pub(crate) fn from_response(
        response: &crate::accounts::TokenResponse,
        issued_at: SystemTime,
    ) -> Self {
        Self::new(
            response.access_token.clone(),
            issued_at,
            issued_at + response.expires_in,
            response.api_domain.clone(),
            response.scopes.clone(),
        )
    }
}

impl StoredFailure {
    /// A failure of the refresh token with Zoho's error `code` (e.g. `invalid_code`) and a
    /// message for people.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            client: None,
        }
    }

    /// The failure `error` of a refresh by the client whose digest is `client`: recorded for
    /// that client if the client failed, for the refresh token otherwise.
    pub(crate) fn from_error(error: &Error, client: String) -> Self {
        Self {
            client: error.is_invalid_client().then_some(client),
            ..Self::new(error.zoho_code().unwrap_or_default(), error.to_string())
        }
    }

    /// Whether it holds for `client` refreshing the set's refresh token at its accounts
    /// server, `issuer`.
    pub(crate) fn holds_for(
        &self,
        client: &crate::accounts::AccountsClient,
        issuer: Option<&str>,
    ) -> bool {
        match &self.client {
            None => true,
            Some(failed) => client
                .for_issuer(issuer)
                .is_ok_and(|client| client.fingerprint() == *failed),
        }
    }

    pub(crate) fn to_error(&self) -> Error {
        let kind = match self.code.as_str() {
            "invalid_client" => Kind::InvalidClient,
            "invalid_client_secret" => Kind::InvalidClientSecret,
            _ => Kind::InvalidGrant,
        };
        Error::new(
            kind,
            format!("{} (recorded in the token store)", self.message),
        )
        .with_code(self.code.clone())
    }
}

/// A place to keep a [`TokenSet`] and a lock that one process at a time holds while refreshing.
///
/// Implement it to keep tokens in your own database (the [JSON form](TokenSet::to_json) is there
/// for that): `load` returns the set with its revision, `save` is a compare-and-set on it (in SQL,
/// `UPDATE … SET data = ?, revision = revision + 1 WHERE revision = ?`, or an `INSERT` that fails
/// when a row exists for revision 0), and `try_lock` must give the lock to at most one caller at a
/// time across every process sharing the store, and must free it by itself if its holder dies (a
/// TTL, or an OS lock). Errors that mean "unreachable" should be [`Error::store_unavailable`] so
/// the cache falls back to refreshing on its own; other errors (a corrupt file) surface to callers
/// and nothing is overwritten.
///
/// Write through `update` (on `dyn TokenStore`), never `save` alone: it re-reads and re-applies an edit
/// that lost the race.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// Reads the token set, with its [`revision`](TokenSet::revision); `None` when nothing has
    /// been saved.
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>>;

    /// Stores `set` if the store still holds revision `set.revision` (`0`: nothing stored), and,
    /// when `lock` is given, only while that lock is still held; the stored set then has revision
    /// `set.revision + 1`. Atomic: a reader sees the old set or the new one.
    fn save<'a>(
        &'a self,
        set: &'a TokenSet,
        lock: Option<&'a dyn StoreLock>,
    ) -> StoreFuture<'a, Saved>;

    /// Takes the refresh lock if it is free; `None` when another holder has it. `ttl` is how long
    /// the holder may need it (the cache's whole refresh deadline): a lock that expires by itself
    /// must live at least that long, or be renewed while held (as the Redis store's is).
    fn try_lock(&self, ttl: Duration) -> StoreFuture<'_, Option<Box<dyn StoreLock>>>;
}

/// What a fenced [`TokenStore::save`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Saved {
    /// The set was stored.
    Stored,
    /// The store holds another revision than the one the set was read at: nothing was written.
    Conflict,
    /// The save was made under a refresh lock that is no longer held (it expired): nothing was
    /// written.
    LockLost,
}

/// A held refresh lock.
pub trait StoreLock: Send + Sync + fmt::Debug {
    /// The value a store checks, on a save made under this lock, to tell that the lock is still
    /// held (Redis: the owner value in the lock key). `None` for locks that cannot be lost while
    /// held (an OS lock, a mutex).
    fn fence(&self) -> Option<&str> {
        None
    }

    /// Frees the lock (only if this holder still owns it).
    fn release(self: Box<Self>) -> StoreFuture<'static, ()>;
}

/// How often `update` (on `dyn TokenStore`) re-reads and re-applies an edit that lost the race
/// before it gives up: the store is being rewritten faster than it can be read.
const UPDATE_ATTEMPTS: u64 = 16;

impl dyn TokenStore {
    /// Reads the set (empty if none), applies `edit` to it and saves it fenced; when another
    /// writer saved in between, reads the newer set and applies `edit` to that instead, so the
    /// edit always lands on the latest set and never reverts another writer's. `edit` may run
    /// several times and returns an error to write nothing; an edit that changes nothing writes
    /// nothing either. Returns what the last `edit` returned and the set as stored (with its new
    /// revision).
    ///
    /// An edit that changes the refresh token also drops what was recorded of the old one's
    /// refreshes (`failure`, `retry`) unless it sets them itself: a new consent is not held to a
    /// revoked token's failure.
    ///
    /// With `lock`, the save is also refused if the refresh lock was lost meanwhile: an
    /// [`Error::is_store`] error, and nothing is written.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use zoho_auth::store::{MemoryStore, TokenStore};
    /// use zoho_auth::RefreshToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), zoho_auth::Error> {
    /// let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    /// let (_, set) = store
    ///     .update(None, |set| {
    ///         set.refresh_token = Some(RefreshToken::new("1000.r.t"));
    ///         Ok(())
    ///     })
    ///     .await?;
    /// assert_eq!(set.revision, 1);
    /// # Ok(()) }
    /// ```
    pub async fn update<T>(
        &self,
        lock: Option<&dyn StoreLock>,
        edit: impl FnMut(&mut TokenSet) -> Result<T, Error>,
    ) -> Result<(T, TokenSet), Error> {
        self.try_update(lock, edit).await?.ok_or_else(|| {
            Error::store(
                "the token store's refresh lock expired before the save (it could not be renewed \
                 in time); nothing was written",
            )
        })
    }

    /// `update` (on `dyn TokenStore`), with `None` when the refresh lock was lost.
    pub(crate) async fn try_update<T>(
        &self,
        lock: Option<&dyn StoreLock>,
        mut edit: impl FnMut(&mut TokenSet) -> Result<T, Error>,
    ) -> Result<Option<(T, TokenSet)>, Error> {
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                // Writers that keep colliding back off at random, so one of them gets through.
                let wait = fastrand::u64(1..=2 * attempt);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let read = self.load().await?.unwrap_or_default();
            let mut set = read.clone();
            let value = edit(&mut set)?;
            set.revision = read.revision;
            // What is recorded of a refresh token's refreshes is not the next one's (unless the
            // edit records it anew).
            if set.refresh_token != read.refresh_token {
                if set.failure == read.failure {
                    set.failure = None;
                }
                if set.retry == read.retry {
                    set.retry = None;
                }
            }
            if set == read {
                return Ok(Some((value, set)));
            }
            match self.save(&set, lock).await? {
                Saved::Stored => {
                    set.revision += 1;
                    return Ok(Some((value, set)));
                }
                Saved::Conflict => continue,
                Saved::LockLost => return Ok(None),
            }
        }
        Err(Error::store(format!(
            "the token store changed {UPDATE_ATTEMPTS} times while one save was being made; \
             nothing was written"
        )))
    }
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
    Ok(match Spec::parse(spec)? {
        Spec::Memory => Arc::new(MemoryStore::new()),
        Spec::File(path) => Arc::new(FileStore::new(path)),
        #[cfg(feature = "redis")]
        Spec::Redis(url) => Arc::new(RedisStore::open(url)?),
    })
}

/// A store spec, as [`open`] and [`open_connections`] read it.
enum Spec<'a> {
    Memory,
    File(&'a str),
    #[cfg(feature = "redis")]
    Redis(&'a str),
}

impl<'a> Spec<'a> {
    fn parse(spec: &'a str) -> Result<Self, Error> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "memory" {
            return Ok(Spec::Memory);
        }
        if let Some(path) = spec.strip_prefix("file:") {
            return Ok(Spec::File(path));
        }
        if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            #[cfg(feature = "redis")]
            return Ok(Spec::Redis(spec));
            #[cfg(not(feature = "redis"))]
            return Err(Error::config(
                "a redis:// token store needs zoho-auth's `redis` feature",
            ));
        }
        Err(Error::config(format!(
            "unknown token store {spec:?}: expected `memory`, `file:PATH` or a redis:// URL"
        )))
    }
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
