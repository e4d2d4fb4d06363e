//! Many connections' records in this process's memory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ConnectionStore;
use crate::connections::ConnectionId;
use crate::store::{MemoryStore, StoreFuture, TokenStore};

/// How many entries the map may hold before the first sweep.
const FIRST_SWEEP: usize = 1024;

/// Keeps each connection's record in a [`MemoryStore`] of its own, in this process's memory.
/// Nothing survives a restart.
///
/// [`connection`](ConnectionStore::connection) gives the same `Arc` for one id while anyone holds
/// it or while it has a record or a held lock, so the caches of one id share one record and one
/// refresh lock. A store looked up and dropped unused is forgotten: the map is swept each time it
/// doubles, so looking up a million random ids does not keep a million entries — at most twice
/// as many as are held, saved or locked (and at least a thousand).
///
/// ```
/// use std::sync::Arc;
/// use zoho_auth::store::{ConnectionStore, MemoryConnections};
/// use zoho_auth::ConnectionId;
///
/// let store = MemoryConnections::new();
/// let id = ConnectionId::new("tenant-42").unwrap();
/// assert!(Arc::ptr_eq(&store.connection(&id), &store.connection(&id)));
/// ```
#[derive(Default)]
pub struct MemoryConnections {
    stores: Mutex<Stores>,
}

#[derive(Default)]
struct Stores {
    map: BTreeMap<ConnectionId, Arc<MemoryStore>>,
    /// The size at which the next lookup of a new id sweeps the map.
    sweep_at: usize,
}

impl MemoryConnections {
    /// No connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `id`'s record (at `revision`, if given). The entry stays for whoever holds it (the
    /// next sweep drops it if no one does).
    fn remove_at(&self, id: &ConnectionId, revision: Option<u64>) -> bool {
        self.stores()
            .map
            .get(id)
            .is_some_and(|store| store.remove(revision))
    }

    fn stores(&self) -> MutexGuard<'_, Stores> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Stores {
    /// Drops the stores that only the map holds, with no record and no held lock: a new store is
    /// the same as one of those. Under the map's mutex, a store only the map holds cannot be
    /// cloned meanwhile, nor saved to. Sweeping when the map has doubled keeps lookups amortised
    /// O(log n).
    fn sweep(&mut self) {
        self.map
            .retain(|_, store| Arc::strong_count(store) > 1 || store.in_use());
        self.sweep_at = (2 * self.map.len()).max(FIRST_SWEEP);
    }
}

impl fmt::Debug for MemoryConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConnections")
            .field("entries", &self.stores().map.len())
            .finish()
    }
}

impl ConnectionStore for MemoryConnections {
    fn connection(&self, id: &ConnectionId) -> Arc<dyn TokenStore> {
        let mut stores = self.stores();
        if let Some(store) = stores.map.get(id) {
            return store.clone();
        }
        if stores.map.len() >= stores.sweep_at {
            stores.sweep();
        }
        let store = Arc::new(MemoryStore::new());
        stores.map.insert(id.clone(), store.clone());
        store
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ConnectionId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConnectionId>> {
        let stores = self.stores();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let page = stores
            .map
            .range::<ConnectionId, _>((start, Bound::Unbounded))
            .filter(|(_, store)| store.has_record())
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn remove<'a>(&'a self, id: &'a ConnectionId) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.remove_at(id, None))))
    }

    fn remove_if<'a>(&'a self, id: &'a ConnectionId, revision: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.remove_at(id, Some(revision)))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::RefreshToken;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new(format!("random-{n}")).unwrap()
    }

    /// A million lookups of ids never saved leave a bounded map; what is held, saved or locked
    /// keeps its store through every sweep.
    #[tokio::test]
    async fn lookups_of_unknown_ids_do_not_accumulate() {
        let store = MemoryConnections::new();
        let held = store.connection(&id(0));
        let saved = ConnectionId::new("saved").unwrap();
        store
            .connection(&saved)
            .update(None, |set| {
                set.refresh_token = Some(RefreshToken::new("1000.r"));
                Ok(())
            })
            .await
            .unwrap();
        let locked = ConnectionId::new("locked").unwrap();
        // The lock outlives the handle it came from.
        let lock = store
            .connection(&locked)
            .try_lock(Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();

        for n in 1..1_000_000 {
            drop(store.connection(&id(n)));
            assert!(store.stores().map.len() <= 2 * FIRST_SWEEP);
        }
        assert!(Arc::ptr_eq(&held, &store.connection(&id(0))));
        assert!(store.connection(&saved).load().await.unwrap().is_some());
        assert!(store
            .connection(&locked)
            .try_lock(Duration::from_secs(30))
            .await
            .unwrap()
            .is_none());
        lock.release().await.unwrap();
        assert_eq!(store.list(None, 10).await.unwrap(), [saved]);
    }
}
