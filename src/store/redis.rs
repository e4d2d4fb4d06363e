//! The Redis token store (feature `redis`): one token set shared by a fleet of processes.
//!
//! Everything a user needs to know is on [`RedisStore`], which `store` re-exports (this module is
//! private). In short: two token keys written together by one Lua script that checks the set's
//! revision and the lock's owner first, an access key that expires with its token, a `SET NX PX`
//! lock with an owner value freed by a Lua compare-and-delete, a lazily created
//! `ConnectionManager`, and a time bound on every operation.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};

use super::codec::{self, Access, Durable};
use super::{Saved, StoreFuture, StoreLock, TokenSet, TokenStore};
use crate::error::Error;

/// The key prefix when none is given.
const DEFAULT_PREFIX: &str = "zoho-auth";

/// The lock's default lifetime. It is renewed while held, so it only bounds how long a holder that
/// died keeps the fleet from refreshing.
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);

/// How long one connection attempt may take. Short, because a request may be waiting behind it;
/// the cache refreshes without the store when it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long Redis may take to answer one command once connected.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound on a whole operation, retries included, whatever the `redis` crate does inside.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// Deletes the lock only if it still holds the caller's owner value. A script, so that the check
/// and the delete cannot be split by another client's `SET` in between.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0"#,
    )
});

/// Extends the lock's TTL (ARGV[2] ms) only if it still holds the caller's owner value (ARGV[1]).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0"#,
    )
});

/// The fenced save. KEYS: the refresh key, the access key, the lock key, and for a connection of a
/// [`RedisConnections`](super::RedisConnections) its index. ARGV: the revision the set was read at,
/// the lock's owner value (empty: saved without the lock), the durable JSON, the access JSON
/// (empty: none) and its TTL in milliseconds, and the connection's member in the index. Returns 1
/// when stored, 0 on a revision conflict, -1 when the lock is not held by that owner, -2 when the
/// refresh key holds something that is not a token set. One script, so no other client's write
/// can come between the checks and the writes (nor between a record and its index entry).
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local raw = redis.call("GET", KEYS[1])
local revision = 0
if raw then
    local ok, stored = pcall(cjson.decode, raw)
    if not ok or type(stored) ~= "table" then
        return -2
    end
    revision = tonumber(stored["revision"]) or 0
end
if ARGV[2] ~= "" and redis.call("GET", KEYS[3]) ~= ARGV[2] then
    return -1
end
if revision ~= tonumber(ARGV[1]) then
    return 0
end
redis.call("SET", KEYS[1], ARGV[3])
if ARGV[4] ~= "" then
    redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[5])
else
    redis.call("DEL", KEYS[2])
end
if KEYS[4] then
    redis.call("ZADD", KEYS[4], 0, ARGV[6])
end
return 1"#,
    )
});

/// Keeps the token set in Redis, so that a fleet of processes sharing one refresh token refreshes
/// it once between them.
///
/// Open it from a `redis://` URL; the query parameters `prefix` (default `zoho-auth`) and
/// `lock_ttl_ms` (default 30000) are the store's own and are not passed to Redis.
/// [`prefix`](Self::prefix) and [`lock_ttl`](Self::lock_ttl) set the same in code.
///
/// Three keys under the prefix:
///
/// | key | holds | expiry |
/// |---|---|---|
/// | `{prefix}:refresh` | the refresh token, the recent token requests and a recorded permanent failure (JSON) | none: the refresh token must never be lost |
/// | `{prefix}:access` | the current access token with its expiry, API domain and scopes (JSON) | the token's remaining lifetime |
/// | `{prefix}:lock` | the refresh lock: a random owner value | the lock's TTL |
///
/// [`save`](TokenStore::save) is one Lua script: it checks that the refresh key still holds the
/// revision the set was read at (and, for a save under the refresh lock, that the lock key still
/// holds this holder's owner value), then writes both token keys, so a reader never pairs a new
/// refresh token with an old access token and no save reverts a newer one; an access token already
/// expired is not written (and an older one is deleted). [`load`](TokenStore::load) reads both keys at once; a key that
/// holds something else than the JSON this store writes is an [`Error::is_store`] error naming the
/// key, and is left as it is. The lock is `SET NX PX` with a random owner value; releasing it
/// deletes the key only if it still holds that value, so a holder whose lock expired never frees
/// the lock a later holder took. A holder that dies loses the lock when its TTL runs out.
///
/// Opening does not connect, so a process starts while Redis is down; the first operation
/// connects. Every operation is bounded — one second to connect, two for Redis to answer, three
/// in all — and a Redis that cannot be reached gives [`Error::is_store_unavailable`] errors: the
/// cache then refreshes on its own, and the store reconnects by itself once Redis answers. Keys
/// of one store must live on one Redis node (no Redis Cluster).
///
/// `rediss://` (TLS) URLs need one of the `redis` crate's TLS features, which zoho-auth does not
/// enable; an application turns one on by depending on `redis` itself, e.g.
/// `redis = { version = "1", features = ["tokio-rustls-comp", "tls-rustls-webpki-roots"] }`.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use zoho_auth::store::{RedisStore, TokenSet, TokenStore};
/// use zoho_auth::RefreshToken;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), zoho_auth::Error> {
/// // Does not connect: Redis may still be starting.
/// let store = RedisStore::open("redis://:password@redis.internal:6379/0?prefix=crm-sync")?
///     .lock_ttl(Duration::from_secs(45));
/// let store: Arc<dyn TokenStore> = Arc::new(store);
/// store.update(None, |set| {
///     set.refresh_token = Some(RefreshToken::new("1000.r.t"));
///     Ok(())
/// }).await?;
/// if let Some(lock) = store.try_lock(Duration::from_secs(60)).await? {
///     // ... refresh, save ...
///     lock.release().await?;
/// }
/// # Ok(()) }
/// ```
pub struct RedisStore {
    shared: Arc<Shared>,
    pub(super) prefix: String,
    pub(super) keys: Keys,
    lock_ttl: Duration,
}

/// What the stores opened from one URL share: one client and one connection, whatever their
/// prefixes (the per-connection stores of a [`RedisConnections`](super::RedisConnections)).
struct Shared {
    client: redis::Client,
    /// The connection, created on first use.
    connection: Mutex<Slot>,
    /// The URL without its password and without our own parameters, for messages.
    shown_url: String,
}

/// The connection manager, created on first use: creating it spawns a task, which needs the Tokio
/// runtime that `open` may not run in. It reconnects by itself after I/O errors; after other
/// failures it is dropped (see [`Failure::poisons_connection`]) and the next operation makes a new
/// one. `generation` tells a failed operation whether the manager it used is still the current one.
#[derive(Default)]
struct Slot {
    generation: u64,
    manager: Option<ConnectionManager>,
}

#[derive(Debug)]
pub(super) struct Keys {
    pub(super) refresh: String,
    pub(super) access: String,
    pub(super) lock: String,
    /// A connection store's index and this connection's member in it, which every save adds.
    pub(super) index: Option<(String, String)>,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            refresh: format!("{prefix}:refresh"),
            access: format!("{prefix}:access"),
            lock: format!("{prefix}:lock"),
            index: None,
        }
    }
}

impl RedisStore {
    /// A store at a `redis://` or `rediss://` URL (`redis://[user][:password@]host[:port][/db]`),
    /// with the optional query parameters `prefix=NAME` (the key prefix, default `zoho-auth`) and
    /// `lock_ttl_ms=N` (how long the refresh lock outlives a holder that died, default 30000).
    ///
    /// Does not connect: the first operation does, and a failed connection is tried again by the
    /// next one. Fails only on a URL that cannot be used (a configuration error).
    pub fn open(url: &str) -> Result<Self, Error> {
        let mut parsed = url::Url::parse(url.trim())
            .map_err(|e| Error::config(format!("invalid Redis URL: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(Error::config(format!(
                "a Redis token store needs a redis:// or rediss:// URL, not {}://",
                parsed.scheme()
            )));
        }

        // Our parameters come out; any others (e.g. `protocol=resp3`) stay for the redis crate.
        let mut prefix = DEFAULT_PREFIX.to_owned();
        let mut lock_ttl = DEFAULT_LOCK_TTL;
        let mut rest = Vec::new();
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "prefix" if value.is_empty() => {
                    return Err(Error::config("Redis URL: `prefix` must not be empty"));
                }
                "prefix" => prefix = value.into_owned(),
                "lock_ttl_ms" => {
                    lock_ttl = value
                        .parse::<u64>()
                        .ok()
                        .filter(|&ms| ms > 0)
                        .map(Duration::from_millis)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "Redis URL: `lock_ttl_ms` must be a positive number of \
                                 milliseconds, not {value:?}"
                            ))
                        })?;
                }
                _ => rest.push((name.into_owned(), value.into_owned())),
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }

        let shown_url = redacted(&parsed);
        let client = redis::Client::open(parsed.as_str())
            .map_err(|e| Error::config(format!("Redis URL {shown_url}: {e}")).with_source(e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                connection: Mutex::default(),
                shown_url,
            }),
            keys: Keys::new(&prefix),
            prefix,
            lock_ttl,
        })
    }

    /// Sets the key prefix: the store uses `{prefix}:refresh`, `{prefix}:access` and
    /// `{prefix}:lock`. Stores with different prefixes on one Redis do not see each other.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self.keys = Keys::new(&self.prefix);
        self
    }

    /// Sets how long the refresh lock lives if its holder never releases it (it died); default
    /// 30 s. A live holder renews it every third of this, so it outlives any refresh. Durations
    /// under a millisecond count as one millisecond.
    #[must_use]
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// A store with other keys on the same client and connection, e.g. one connection's of a
    /// [`RedisConnections`](super::RedisConnections).
    pub(super) fn with_keys(&self, prefix: String, keys: Keys) -> Self {
        Self {
            shared: self.shared.clone(),
            prefix,
            keys,
            lock_ttl: self.lock_ttl,
        }
    }

    /// The current connection manager and its generation, created if there is none.
    fn manager(&self) -> Result<(u64, ConnectionManager), Error> {
        let mut slot = self
            .shared
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = &slot.manager {
            return Ok((slot.generation, manager.clone()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // No retry loop inside one operation: its backoff would hold a request for seconds.
            // Every operation that finds the connection broken starts a new attempt instead.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.shared.client.clone(), config)
            .map_err(|e| redis_error(self.describe("cannot set up the connection"), e))?;
        slot.manager = Some(manager.clone());
        Ok((slot.generation, manager))
    }

    /// Runs one operation on the current connection (see [`bounded`]), and drops the connection
    /// if the failure may have poisoned it.
    pub(super) async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, manager) = self.manager()?;
        bounded(&manager, op).await.map_err(|failure| {
            if failure.poisons_connection() {
                let mut slot = self
                    .shared
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // Another operation may have replaced it already; keep that one.
                if slot.generation == generation {
                    slot.generation += 1;
                    slot.manager = None;
                }
            }
            failure.into_error(self.describe(what))
        })
    }

    /// What a message says about this store: no password, no token.
    pub(super) fn describe(&self, what: &str) -> String {
        format!(
            "Redis token store {} (prefix {:?}): {what}",
            self.shared.shown_url, self.prefix
        )
    }

    fn malformed(&self, key: &str, e: &serde_json::Error) -> Error {
        Error::store(self.describe(&format!(
            "key {key:?} does not hold a zoho-auth token set (left untouched): {}",
            codec::describe(e)
        )))
    }

    fn encoding_error(&self, e: serde_json::Error) -> Error {
        Error::store(self.describe(&format!("cannot encode the tokens: {e}")))
    }

    async fn load_set(&self) -> Result<Option<TokenSet>, Error> {
        let mut mget = redis::cmd("MGET");
        mget.arg(&self.keys.refresh).arg(&self.keys.access);
        let (durable, access): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .run("cannot load", |mut con| {
                let mget = &mget;
                async move { mget.query_async(&mut con).await }
            })
            .await?;
        if durable.is_none() && access.is_none() {
            return Ok(None);
        }
        let durable = match durable {
            Some(json) => serde_json::from_slice::<Durable>(&json)
                .map_err(|e| self.malformed(&self.keys.refresh, &e))?,
            // Only the access key: the refresh key was deleted by hand. The access token is still
            // good until it expires, and the cache reports the missing refresh token after that.
            None => Durable::default(),
        };
        let access = access
            .map(|json| serde_json::from_slice::<Access>(&json))
            .transpose()
            .map_err(|e| self.malformed(&self.keys.access, &e))?;
        Ok(Some(codec::set_from(durable, access)))
    }

    async fn save_set(&self, set: &TokenSet, lock: Option<&dyn StoreLock>) -> Result<Saved, Error> {
        // The stored set is the next revision.
        let mut durable = codec::durable(set);
        durable.revision = set.revision + 1;
        let durable = serde_json::to_vec(&durable).map_err(|e| self.encoding_error(e))?;
        // The access key lives as long as the token, so Redis drops a dead token by itself; one
        // already expired is not stored at all (and an older one must not linger for another
        // process to adopt).
        let now = SystemTime::now();
        let (access, ttl_ms) = match (codec::access(set), &set.access) {
            (Some(json), Some(stored)) => {
                let ttl_ms = stored
                    .expires_at
                    .duration_since(now)
                    .map_or(0, |left| left.as_millis());
                if ttl_ms > 0 {
                    let json = serde_json::to_vec(&json).map_err(|e| self.encoding_error(e))?;
                    (json, u64::try_from(ttl_ms).unwrap_or(u64::MAX))
                } else {
                    (Vec::new(), 0)
                }
            }
            _ => (Vec::new(), 0),
        };
        let owner = lock.and_then(|lock| lock.fence()).unwrap_or("");

        let answer: i64 = self
            .run("cannot save", |mut con| {
                let (durable, access, keys) = (&durable, &access, &self.keys);
                async move {
                    let mut save = SAVE.key(&keys.refresh);
                    save.key(&keys.access)
                        .key(&keys.lock)
                        .arg(set.revision)
                        .arg(owner)
                        .arg(durable)
                        .arg(access)
                        .arg(ttl_ms);
                    if let Some((index, member)) = &keys.index {
                        save.key(index).arg(member);
                    }
                    save.invoke_async(&mut con).await
                }
            })
            .await?;
        match answer {
            1 => Ok(Saved::Stored),
            0 => Ok(Saved::Conflict),
            -1 => Ok(Saved::LockLost),
            _ => Err(Error::store(self.describe(&format!(
                "key {:?} does not hold a zoho-auth token set (left untouched)",
                self.keys.refresh
            )))),
        }
    }

    async fn lock(&self) -> Result<Option<Box<dyn StoreLock>>, Error> {
        // Only uniqueness matters, not secrecy: the value tells our lock from a later holder's.
        // 128 random bits make a collision between two holders practically impossible.
        let owner = format!("{:032x}", fastrand::u128(..));
        let ttl_ms = u64::try_from(self.lock_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(&self.keys.lock)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);

        // `OK` when we took it, nil when another holder has it.
        let taken: Option<String> = self
            .run("cannot take the refresh lock", |mut con| {
                let set = &set;
                async move { set.query_async(&mut con).await }
            })
            .await?;
        if taken.is_none() {
            return Ok(None);
        }
        // The lock keeps its own handle on the connection: `release` returns a `'static` future.
        let (_, manager) = self.manager()?;
        let renewal = tokio::spawn(renew(
            manager.clone(),
            self.keys.lock.clone(),
            owner.clone(),
            ttl_ms,
        ))
        .abort_handle();
        Ok(Some(Box::new(RedisLock {
            manager,
            key: self.keys.lock.clone(),
            owner,
            context: self.describe("cannot release the refresh lock"),
            renewal,
        })))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.shown_url)
            .field("prefix", &self.prefix)
            .field("lock_ttl", &self.lock_ttl)
            .finish()
    }
}

impl TokenStore for RedisStore {
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>> {
        Box::pin(self.load_set())
    }

    fn save<'a>(
        &'a self,
        set: &'a TokenSet,
        lock: Option<&'a dyn StoreLock>,
    ) -> StoreFuture<'a, Saved> {
        Box::pin(self.save_set(set, lock))
    }

    // The lock is renewed while held, so its TTL can stay short and a dead holder's lock is
    // freed quickly, whatever the holder needs it for.
    fn try_lock(&self, _ttl: Duration) -> StoreFuture<'_, Option<Box<dyn StoreLock>>> {
        Box::pin(self.lock())
    }
}

/// A held Redis refresh lock: the key and the owner value we set in it.
struct RedisLock {
    manager: ConnectionManager,
    key: String,
    owner: String,
    context: String,
    /// The task that keeps the lock alive while it is held.
    renewal: tokio::task::AbortHandle,
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Extends the lock every third of its TTL while its holder lives, and stops once the lock is
/// no longer ours. A holder that dies stops renewing, and its lock expires within one TTL.
async fn renew(manager: ConnectionManager, key: String, owner: String, ttl_ms: u64) {
    let every = Duration::from_millis(ttl_ms / 3).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        let renewed: Result<i64, _> = bounded(&manager, |mut con| {
            let (key, owner) = (&key, &owner);
            async move {
                RENEW
                    .key(key)
                    .arg(owner)
                    .arg(ttl_ms)
                    .invoke_async(&mut con)
                    .await
            }
        })
        .await;
        // A failed renewal is tried again; a lock another holder has is not ours to renew.
        if let Ok(0) = renewed {
            return;
        }
    }
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The owner value is left out: whoever knows it can free the lock.
        f.debug_struct("RedisLock").field("key", &self.key).finish()
    }
}

impl StoreLock for RedisLock {
    fn fence(&self) -> Option<&str> {
        Some(&self.owner)
    }

    fn release(self: Box<Self>) -> StoreFuture<'static, ()> {
        Box::pin(async move {
            self.renewal.abort();
            let Self {
                ref manager,
                ref key,
                ref owner,
                ref context,
                ..
            } = *self;
            let deleted: i64 = bounded(manager, |mut con| async move {
                RELEASE.key(key).arg(owner).invoke_async(&mut con).await
            })
            .await
            .map_err(|failure| failure.into_error(context.clone()))?;
            if deleted == 0 {
                tracing::warn!(
                    key = %key,
                    "the Redis refresh lock expired before it was released: it could not be \
                     renewed for a whole TTL (Redis unreachable?), so another process may have \
                     refreshed as well; its saves were fenced"
                );
            }
            Ok(())
        })
    }
}

/// Why an operation failed, before it becomes an [`Error`].
enum Failure {
    Redis(RedisError),
    /// [`OPERATION_TIMEOUT`] passed.
    Timeout,
}

impl Failure {
    /// Whether the connection manager may be stuck with this failure. It replaces its connection
    /// only after I/O errors; a connection attempt that failed otherwise (a wrong password, a
    /// Redis still loading its data) stays its answer to every later command, and a primary
    /// demoted by a failover keeps answering `READONLY`. Starting over with a new manager (and a
    /// new DNS lookup) is cheap next to staying broken until the process restarts.
    fn poisons_connection(&self) -> bool {
        matches!(self, Failure::Redis(e) if !e.is_io_error())
    }

    fn into_error(self, context: String) -> Error {
        match self {
            Failure::Redis(e) => redis_error(context, e),
            Failure::Timeout => Error::store_unavailable(format!(
                "{context}: no answer from Redis within {OPERATION_TIMEOUT:?}"
            )),
        }
    }
}

/// Runs one Redis operation within [`OPERATION_TIMEOUT`].
///
/// A connection refused is tried once more: the command was certainly not sent, and the manager
/// keeps a failed connection attempt until an operation sees it and starts a new one, so without
/// this the first operation after Redis comes back would fail.
async fn bounded<T, F, Fut>(manager: &ConnectionManager, mut op: F) -> Result<T, Failure>
where
    F: FnMut(ConnectionManager) -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let attempts = async {
        match op(manager.clone()).await {
            Err(e) if e.is_connection_refusal() => op(manager.clone()).await,
            result => result,
        }
    };
    match tokio::time::timeout(OPERATION_TIMEOUT, attempts).await {
        Ok(result) => result.map_err(Failure::Redis),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Unreachable (the cache goes on without the store) or a real answer that is wrong (surfaced).
fn redis_error(context: String, e: RedisError) -> Error {
    let unreachable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            // States a Redis passes through and leaves by itself: loading its data set, a
            // failover in progress (a demoted primary answers READONLY), a cluster re-forming.
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        );
    // Redis's messages name the failure, never a value or a password.
    let message = format!("{context}: {e}");
    let error = if unreachable {
        Error::store_unavailable(message)
    } else {
        Error::store(message)
    };
    error.with_source(e)
}

/// The URL as messages and `Debug` show it: the password replaced by `***`.
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Cannot fail: the URL has a host, since it has a password.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}
