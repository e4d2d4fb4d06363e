//! Many connections' records in Redis (feature `redis`).

use std::fmt;
use std::sync::{Arc, LazyLock};

use redis::Script;

use super::{encode, ConnectionStore};
use crate::connections::ConnectionId;
use crate::error::Error;
use crate::store::redis::Keys;
use crate::store::{RedisStore, StoreFuture, TokenStore};

/// Deletes a connection's token keys and its index entry together. KEYS: the refresh key, the
/// access key, the index. ARGV: the connection's member, and the revision the record must be at
/// (empty: any). Returns how many token keys there were (0 when the record is at another
/// revision, or is not a token set: then nothing is deleted). The lock key is left alone: a free
/// lock has no key, and a held one belongs to a refresh whose save is then refused (the record's
/// revision is gone).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if ARGV[2] ~= "" then
    local raw = redis.call("GET", KEYS[1])
    if not raw then
        return 0
    end
    local ok, stored = pcall(cjson.decode, raw)
    if not ok or type(stored) ~= "table" or (tonumber(stored["revision"]) or 0) ~= tonumber(ARGV[2]) then
        return 0
    end
end
local removed = redis.call("DEL", KEYS[1], KEYS[2])
redis.call("ZREM", KEYS[3], ARGV[1])
return removed"#,
    )
});

/// Keeps each connection's record in Redis, so that a fleet shares every connection's record and
/// refresh lock: made by [`RedisStore::connections`], or [`open_connections`](super::open_connections)
/// with a `redis://` URL.
///
/// Connection `id` is a [`RedisStore`] of its own with the prefix `{P}:conn:{name}` (`{name}` the
/// id encoded as the [`ConnectionStore`] docs say), so it has the same three keys, lock and fenced
/// save script as a single store; all of them share one Redis connection. One more key lists them:
///
/// | key | holds |
/// |---|---|
/// | `{P}:conn:{name}:refresh`, `:access`, `:lock` | the connection's record and refresh lock, as [`RedisStore`] keeps them |
/// | `{P}:connections` | a sorted set of the ids with a record, all with score 0, so `ZRANGEBYLEX` pages through them in order |
///
/// The save script adds the id to the index in the same script that writes the record, and
/// [`remove`](ConnectionStore::remove) deletes the record and the index entry in one script, so the
/// index never lists a connection without a record or misses one that has a record.
pub struct RedisConnections {
    /// The store the connections' stores are made from: its client, connection, prefix and lock
    /// TTL.
    base: RedisStore,
    index: String,
}

impl RedisStore {
    /// Many connections' records under this store's prefix, instead of one record (see
    /// [`RedisConnections`]); each connection's store has this store's lock TTL.
    ///
    /// ```no_run
    /// use zoho_auth::store::RedisStore;
    ///
    /// let connections = RedisStore::open("redis://redis.internal:6379/0?prefix=crm-sync")?.connections();
    /// # Ok::<(), zoho_auth::Error>(())
    /// ```
    pub fn connections(self) -> RedisConnections {
        RedisConnections {
            index: format!("{}:connections", self.prefix),
            base: self,
        }
    }
}

impl RedisConnections {
    fn store(&self, id: &ConnectionId) -> RedisStore {
        let prefix = format!("{}:conn:{}", self.base.prefix, encode(id));
        let mut keys = Keys::new(&prefix);
        keys.index = Some((self.index.clone(), id.as_str().to_owned()));
        self.base.with_keys(prefix, keys)
    }

    async fn page(
        &self,
        after: Option<&ConnectionId>,
        limit: usize,
    ) -> Result<Vec<ConnectionId>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let min = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut range = redis::cmd("ZRANGEBYLEX");
        range
            .arg(&self.index)
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let members: Vec<String> = self
            .base
            .run("cannot list the connections", |mut con| {
                let range = &range;
                async move { range.query_async(&mut con).await }
            })
            .await?;
        members
            .into_iter()
            .map(|member| {
                ConnectionId::new(&member).map_err(|e| {
                    Error::store(self.base.describe(&format!(
                        "key {:?} holds a member that is not a connection id (left untouched): {e}",
                        self.index
                    )))
                })
            })
            .collect()
    }

    async fn delete(&self, id: &ConnectionId, revision: Option<u64>) -> Result<bool, Error> {
        let store = self.store(id);
        let keys = &store.keys;
        let removed: i64 = self
            .base
            .run("cannot remove a connection", |mut con| async move {
                REMOVE
                    .key(&keys.refresh)
                    .key(&keys.access)
                    .key(&self.index)
                    .arg(id.as_str())
                    .arg(revision.map_or_else(String::new, |revision| revision.to_string()))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(removed > 0)
    }
}

impl fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisConnections").field(&self.base).finish()
    }
}

impl ConnectionStore for RedisConnections {
    fn connection(&self, id: &ConnectionId) -> Arc<dyn TokenStore> {
        Arc::new(self.store(id))
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ConnectionId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConnectionId>> {
        Box::pin(self.page(after, limit))
    }

    fn remove<'a>(&'a self, id: &'a ConnectionId) -> StoreFuture<'a, bool> {
        Box::pin(self.delete(id, None))
    }

    fn remove_if<'a>(&'a self, id: &'a ConnectionId, revision: u64) -> StoreFuture<'a, bool> {
        Box::pin(self.delete(id, Some(revision)))
    }
}
