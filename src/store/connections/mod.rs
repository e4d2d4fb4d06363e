//! Many connections' records: [`ConnectionStore`] and its memory, file and Redis stores. The
//! layouts are documented on the trait.

mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use self::file::FileConnections;
pub use self::memory::MemoryConnections;
#[cfg(feature = "redis")]
pub use self::redis::RedisConnections;
use super::{Spec, StoreFuture, TokenStore};
use crate::connections::ConnectionId;
use crate::error::Error;

/// Many connections' records, each its own [`TokenStore`] (its own record, refresh lock and
/// fenced save): a refresh of one connection never locks or rewrites another's.
///
/// A connection exists — is listed — once a set has been saved for it, and until it is
/// [removed](Self::remove).
///
/// | store | one connection's record | its refresh lock | the listing |
/// |---|---|---|---|
/// | [`MemoryConnections`] | a [`MemoryStore`](super::MemoryStore) in a map | its Tokio mutex | the map, in order |
/// | [`FileConnections`] | a [`FileStore`](super::FileStore) at `DIR/{name}.json` | `DIR/{name}.json.lock` | the directory's names, decoded and sorted |
/// | `RedisConnections` (feature `redis`) | a `RedisStore` with the prefix `{P}:conn:{name}` | `{P}:conn:{name}:lock` | the sorted set `{P}:connections`, added to by the save script |
///
/// `{name}` is the id with every byte other than `a`–`z`, `0`–`9`, `-` and `_` written as `%`
/// and two lowercase hex digits (`Alice/2` is `%41lice%2f2`): no name holds a `.`, `/`, `:` or
/// an upper-case letter, so no id's name is another's on a case-insensitive filesystem, none is
/// `.` or `..`, and no id's keys run into another's or into a single store's `{P}:refresh`.
/// Files add two rules (see [`FileConnections`]): Windows' device names are escaped, and a name
/// over 200 characters is split into directories.
///
/// [`open_connections`] reads the same syntax as [`open`](super::open).
pub trait ConnectionStore: Send + Sync + fmt::Debug + 'static {
    /// The store of one connection's record. Cheap, synchronous, and touches nothing: a
    /// connection exists (is listed) once a set has been saved for it.
    fn connection(&self, id: &ConnectionId) -> Arc<dyn TokenStore>;

    /// A page of the connections that have a record, in ascending order of id (of their UTF-8
    /// bytes, as [`ConnectionId`]'s `Ord`): at most `limit`, all after `after` (exclusive) when
    /// given. Pass the last id of a page as `after` for the next; a page shorter than `limit` is
    /// the last.
    ///
    /// ```
    /// use zoho_auth::store::{ConnectionStore, MemoryConnections};
    /// use zoho_auth::{ConnectionId, RefreshToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), zoho_auth::Error> {
    /// let store = MemoryConnections::new();
    /// for id in ["tenant-1", "tenant-2", "tenant-3"] {
    ///     let id = ConnectionId::new(id)?;
    ///     store.connection(&id).update(None, |set| {
    ///         set.refresh_token = Some(RefreshToken::new("1000.r.t"));
    ///         Ok(())
    ///     }).await?;
    /// }
    /// let mut all = Vec::new();
    /// let mut after = None;
    /// loop {
    ///     let page = store.list(after.as_ref(), 2).await?;
    ///     all.extend(page.iter().cloned());
    ///     match page.last() {
    ///         Some(last) if page.len() == 2 => after = Some(last.clone()),
    ///         _ => break,
    ///     }
    /// }
    /// assert_eq!(all.len(), 3);
    /// # Ok(()) }
    /// ```
    fn list<'a>(
        &'a self,
        after: Option<&'a ConnectionId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConnectionId>>;

    /// Deletes a connection's record (refresh token, access token, and its refresh lock if
    /// free); `true` if there was one. Afterwards `list` does not show it and
    /// `connection(id).load()` is `None`. A save in progress lands first and is deleted too; a
    /// later save made from a set read before is refused as a conflict, so `update` re-applies
    /// its edit to an empty record (which is then listed again).
    fn remove<'a>(&'a self, id: &'a ConnectionId) -> StoreFuture<'a, bool>;

    /// [`remove`](Self::remove), only while the record is at `revision` (its
    /// [`TokenSet::revision`](super::TokenSet::revision) as `load` read it): a record saved since
    /// — by a refresh, a new consent — stays. `true` if it was removed. A disconnect uses it, so
    /// that it never deletes a consent that landed after it read the record.
    fn remove_if<'a>(&'a self, id: &'a ConnectionId, revision: u64) -> StoreFuture<'a, bool>;
}

/// How many times a removal is tried against a record that keeps being saved (refreshed).
#[cfg(any(feature = "axum", feature = "connections"))]
const REMOVE_ATTEMPTS: usize = 5;

/// Removes `id`'s record if it holds `refresh_token` (what a disconnect just revoked), whatever
/// saves of it — refreshes — come between the read and the removal; `false` if it holds another
/// (a consent that landed since: it stays) or is gone.
#[cfg(any(feature = "axum", feature = "connections"))]
pub(crate) async fn remove_holding(
    store: &dyn ConnectionStore,
    id: &ConnectionId,
    refresh_token: Option<&crate::secret::RefreshToken>,
) -> Result<bool, Error> {
    for _ in 0..REMOVE_ATTEMPTS {
        let Some(set) = store.connection(id).load().await? else {
            return Ok(false);
        };
        if set.refresh_token.as_ref() != refresh_token {
            return Ok(false);
        }
        if store.remove_if(id, set.revision).await? {
            return Ok(true);
        }
    }
    Err(Error::store(format!(
        "connection {id}'s record was saved {REMOVE_ATTEMPTS} times while it was being removed; \
         it stays"
    )))
}

/// Opens a [`ConnectionStore`] from the same syntax as [`open`](super::open): `memory` (or
/// empty), `file:PATH` (one file per connection in the directory `PATH.connections`, created on
/// the first save), or a `redis://` URL (feature `redis`; keys under `{prefix}:conn:`).
///
/// ```
/// let store = zoho_auth::store::open_connections("file:/tmp/zoho-tokens.json").unwrap();
/// assert!(format!("{store:?}").contains("zoho-tokens.json.connections"));
/// ```
pub fn open_connections(spec: &str) -> Result<Arc<dyn ConnectionStore>, Error> {
    Ok(match Spec::parse(spec)? {
        Spec::Memory => Arc::new(MemoryConnections::new()),
        Spec::File(path) => {
            let mut dir = OsString::from(path);
            dir.push(".connections");
            Arc::new(FileConnections::new(PathBuf::from(dir)))
        }
        #[cfg(feature = "redis")]
        Spec::Redis(url) => Arc::new(super::RedisStore::open(url)?.connections()),
    })
}

/// Whether `byte` stands for itself in an encoded id.
fn plain(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
}

/// The id as a name (see the [module docs](self)).
fn encode(id: &ConnectionId) -> String {
    let mut name = String::with_capacity(id.as_str().len());
    for &byte in id.as_str().as_bytes() {
        if plain(byte) {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02x}"));
        }
    }
    name
}

/// The id a name stands for, if it is one: escapes need lowercase hex digits. It accepts an
/// escape of a plain byte too (the file store escapes device names); callers check the name is
/// the one they would write.
fn decode(name: &str) -> Option<ConnectionId> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut rest = name.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            if !hex
                .iter()
                .all(|d| d.is_ascii_digit() || (b'a'..=b'f').contains(d))
            {
                return None;
            }
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else if plain(byte) {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    ConnectionId::new(String::from_utf8(bytes).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_and_reversible() {
        for (id, name) in [
            ("tenant-42_a", "tenant-42_a"),
            ("Alice", "%41lice"),
            ("a/../b c", "a%2f%2e%2e%2fb%20c"),
            ("x:refresh", "x%3arefresh"),
            ("é", "%c3%a9"),
        ] {
            let id = ConnectionId::new(id).unwrap();
            assert_eq!(encode(&id), name);
            assert_eq!(decode(name), Some(id));
        }
        for bad in ["%4", "%4A", "%zz", "A", "a.b", "%ff", ""] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
