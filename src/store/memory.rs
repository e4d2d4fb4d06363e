//! The default store: a token set in this process's memory.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use std::time::Duration;

use super::{Saved, StoreFuture, StoreLock, TokenSet, TokenStore};

/// Keeps the token set in memory. Each [`TokenCache`](crate::TokenCache) has one unless given
/// another store; caches that share one `Arc<MemoryStore>` share its token. Nothing survives a
/// restart.
#[derive(Default)]
pub struct MemoryStore {
    set: Mutex<Option<TokenSet>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a set is stored or the refresh lock is held: what makes this store differ from a
    /// new one.
    pub(super) fn in_use(&self) -> bool {
        self.has_record() || self.refresh.try_lock().is_err()
    }

    pub(super) fn has_record(&self) -> bool {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Drops the stored set, if it is at `revision` when one is given; `true` if it did. A save
    /// from a set read before is then refused as a conflict (nothing is stored, so no revision
    /// matches but 0).
    pub(super) fn remove(&self, revision: Option<u64>) -> bool {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if set
            .as_ref()
            .is_some_and(|set| revision.is_none_or(|revision| set.revision == revision))
        {
            *set = None;
            return true;
        }
        false
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryStore")
    }
}

/// Serialises the refreshes of caches that share this store.
#[derive(Debug)]
struct Held {
    _guard: OwnedMutexGuard<()>,
}

impl StoreLock for Held {
    fn release(self: Box<Self>) -> StoreFuture<'static, ()> {
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>> {
        let set = self.set.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move { Ok(set) })
    }

    fn save<'a>(
        &'a self,
        set: &'a TokenSet,
        // A mutex guard cannot be lost while held.
        _lock: Option<&'a dyn StoreLock>,
    ) -> StoreFuture<'a, Saved> {
        let mut stored = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let current = stored.as_ref().map_or(0, |s| s.revision);
        let saved = if current == set.revision {
            let mut new = set.clone();
            new.revision += 1;
            *stored = Some(new);
            Saved::Stored
        } else {
            Saved::Conflict
        };
        Box::pin(async move { Ok(saved) })
    }

    fn try_lock(&self, _ttl: Duration) -> StoreFuture<'_, Option<Box<dyn StoreLock>>> {
        let held = self.refresh.clone().try_lock_owned().ok();
        Box::pin(async move {
            Ok(held.map(|guard| Box::new(Held { _guard: guard }) as Box<dyn StoreLock>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::RefreshToken;

    /// A save from a stale read is refused; `update` re-applies its edit on the newer set.
    #[tokio::test]
    async fn a_save_from_a_stale_read_is_refused_and_update_merges() {
        let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
        let read = store.load().await.unwrap().unwrap_or_default();
        let newer = TokenSet::new(RefreshToken::new("1000.newer"));
        assert_eq!(store.save(&newer, None).await.unwrap(), Saved::Stored);
        let mut stale = read.clone();
        stale.refresh_token = Some(RefreshToken::new("1000.older"));
        assert_eq!(store.save(&stale, None).await.unwrap(), Saved::Conflict);

        let (_, set) = store
            .update(None, |set| {
                set.accounts_url = Some("https://accounts.zoho.eu".into());
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(set.revision, 2);
        assert_eq!(set.refresh_token.unwrap().expose(), "1000.newer");
        assert_eq!(store.load().await.unwrap().unwrap().revision, 2);
    }
}
