//! [`Connections`]: one token cache per connection, resident while in use.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;
use moka::notification::RemovalCause;
use tokio::sync::Semaphore;

use std::time::SystemTime;

use tokio::sync::broadcast;

use super::events::{ConnectionEvent, Events};
use super::ConnectionId;
use crate::accounts::AccountsClient;
use crate::cache::{Observer, Status, Token, TokenCache, TokenCacheBuilder, WeakTokenCache};
use crate::error::Error;
use crate::store::{ConnectionStore, TokenStore};

/// Default of [`ConnectionsBuilder::time_to_idle`].
pub const DEFAULT_TIME_TO_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default of [`ConnectionsBuilder::max_resident`].
pub const DEFAULT_MAX_RESIDENT: u64 = 100_000;
/// Default of [`ConnectionsBuilder::max_token_requests_in_flight`].
pub const DEFAULT_MAX_TOKEN_REQUESTS_IN_FLIGHT: usize = 32;

type Configure = dyn Fn(TokenCacheBuilder) -> TokenCacheBuilder + Send + Sync;

/// Many Zoho accounts in one service: a [`TokenCache`] per [`ConnectionId`], built on first use
/// from the connection's record in a [`ConnectionStore`] and evicted when idle.
///
/// Every connection is refreshed as a single cache is — one flight, its own budget, fenced saves
/// into its own record — and they share one [`AccountsClient`] (its HTTP client and the OAuth
/// client's id and secret). A refresh goes to the accounts server the connection's record names
/// (its data centre's), else to the client's. Token requests in flight across all connections
/// are capped ([`max_token_requests_in_flight`](ConnectionsBuilder::max_token_requests_in_flight)),
/// so ten thousand connections expiring together do not open ten thousand calls at once, while
/// requests for connections with a valid token go on being served.
///
/// Cheap to clone; clones share the registry.
///
/// ```
/// use std::sync::Arc;
/// use zoho_auth::{sim::Simulator, store::{ConnectionStore, MemoryConnections}, ConnectionId, Connections};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let zoho = Simulator::start().await?;
/// let store = Arc::new(MemoryConnections::new());
/// let connections = Connections::builder(zoho.accounts_client()?, store.clone()).build()?;
///
/// // What a consent does for a user of your application: store their refresh token.
/// let alice: ConnectionId = "alice".parse()?;
/// store.connection(&alice).update(None, |set| {
///     set.refresh_token = Some(zoho.mint_refresh_token(&[]));
///     Ok(())
/// }).await?;
/// assert!(connections.token(&alice).await.is_ok());
///
/// // Nobody connected this one.
/// let bob: ConnectionId = "bob".parse()?;
/// assert!(connections.token(&bob).await.unwrap_err().is_not_connected());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Registry>,
}

struct Registry {
    /// The policy: which connections stay resident (idle time, size), and one build per id.
    resident: moka::sync::Cache<ConnectionId, TokenCache>,
    /// The same caches, for the lookup every request makes: a read of `moka` records the read
    /// for its policies and costs about a microsecond with 100,000 entries, so requests read
    /// this index and tell `moka` they used a connection only every `touch_every`.
    front: Arc<FrontIndex>,
    /// Ticks of [`coarse_now`] between two uses of a connection that `moka` is told of.
    touch_every: u64,
    /// Caches evicted while a request or a refresh still held them, reused on the next lookup: a
    /// connection never has two caches, and so two refreshes, in one process.
    evicted: Arc<Mutex<Evicted>>,
    store: Arc<dyn ConnectionStore>,
    accounts: AccountsClient,
    configure: Arc<Configure>,
    request_limit: Arc<Semaphore>,
    events: Arc<Events>,
}

/// The lookup index, hashed with foldhash rather than SipHash: ids are short, so hashing one was
/// a tenth of a lookup. foldhash is randomly seeded per map, which is enough here: the ids are
/// the application's own (its users, its tenants), the map is never iterated where a caller
/// could watch, and it holds at most `max_resident` entries.
type FrontIndex = DashMap<ConnectionId, Front, foldhash::fast::RandomState>;

/// A resident connection's cache, and when (in ticks of [`coarse_now`]) `moka` was last told it
/// is in use.
struct Front {
    cache: TokenCache,
    touched: AtomicU64,
}

/// The coarsest tick of [`coarse_now`]'s clock: Windows' 15.6 ms (Linux's is 1 to 10 ms).
const COARSE_TICK: Duration = Duration::from_millis(16);

/// Now, on the system's coarse monotonic clock: a few ns where `Instant::now` costs ~25 on a VM,
/// read by every lookup. Without the update of `coarsetime`'s shared "recent" instant, a store
/// to one cache line from every core.
fn coarse_now() -> u64 {
    coarsetime::Instant::now_without_cache_update().as_ticks()
}

#[derive(Default)]
struct Evicted {
    caches: HashMap<ConnectionId, WeakTokenCache>,
    /// The size at which dead entries are next swept out.
    sweep_at: usize,
}

impl Evicted {
    fn remember(&mut self, id: ConnectionId, cache: WeakTokenCache) {
        if cache.is_dead() {
            return;
        }
        self.caches.insert(id, cache);
        if self.caches.len() >= self.sweep_at {
            self.caches.retain(|_, cache| !cache.is_dead());
            self.sweep_at = (self.caches.len() * 2).max(64);
        }
    }
}

impl Connections {
    /// A registry of the connections in `store`, refreshing with `accounts` (whose accounts
    /// server is used for records that name none).
    pub fn builder(
        accounts: AccountsClient,
        store: Arc<dyn ConnectionStore>,
    ) -> ConnectionsBuilder {
        ConnectionsBuilder {
            accounts,
            store,
            configure: Arc::new(|builder| builder),
            time_to_idle: DEFAULT_TIME_TO_IDLE,
            max_resident: DEFAULT_MAX_RESIDENT,
            max_in_flight: DEFAULT_MAX_TOKEN_REQUESTS_IN_FLIGHT,
        }
    }

    /// The connection's token cache: the resident one, or one built from its record now (once,
    /// however many callers ask at the same moment). A connection with no record gets a cache too,
    /// whose requests fail with [`Error::is_not_connected`] until a consent stores a refresh token.
    pub fn get(&self, id: &ConnectionId) -> Result<TokenCache, Error> {
        let registry = &self.registry;
        let now = coarse_now();
        if let Some(front) = registry.front.get(id) {
            let cache = front.cache.clone();
            let touch = now.saturating_sub(front.touched.load(Relaxed)) >= registry.touch_every;
            if touch {
                front.touched.store(now, Relaxed);
            }
            // Released before `moka` is asked: its eviction listener takes this shard's lock.
            drop(front);
            if touch {
                registry.resident.get(id);
            }
            return Ok(cache);
        }
        let cache = registry
            .resident
            .try_get_with_by_ref(id, || registry.revive_or_build(id))
            .map_err(|error| (*error).clone())?;
        registry.front.insert(
            id.clone(),
            Front {
                cache: cache.clone(),
                touched: AtomicU64::new(now),
            },
        );
        // Evicted between the build and the insert: the listener found nothing to remove.
        if !registry.resident.contains_key(id) {
            registry
                .front
                .remove_if(id, |_, front| front.cache.same(&cache));
        }
        Ok(cache)
    }

    /// A usable token of the connection; see [`TokenCache::token`].
    pub async fn token(&self, id: &ConnectionId) -> Result<Token, Error> {
        self.get(id)?.token().await
    }

    /// The store of every connection's record.
    pub fn store(&self) -> &Arc<dyn ConnectionStore> {
        &self.registry.store
    }

    /// Transitions of every connection's health in this process, each delivered once:
    /// [`NeedsReconsent`](super::EventKind::NeedsReconsent) when a refresh token is found revoked,
    /// [`Connected`](super::EventKind::Connected) when a consent lands,
    /// [`Recovered`](super::EventKind::Recovered) and
    /// [`Disconnected`](super::EventKind::Disconnected).
    pub fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.registry.events.subscribe()
    }

    /// The connection's status, as every process of a fleet sharing the store sees it: from its
    /// record (not connected, needs re-consent, the stored token's life, refreshes failing or
    /// throttled in whichever process made them), and from its cache in this process when it has
    /// one (refreshing, and the failure it holds with its error).
    pub async fn status(&self, id: &ConnectionId) -> Result<Status, Error> {
        let set = self.registry.store.connection(id).load().await?;
        let Some(set) = set.filter(|set| set.refresh_token.is_some()) else {
            return Ok(Status::NotConnected);
        };
        if let Some(failure) = &set.failure {
            if failure.holds_for(&self.registry.accounts, set.accounts_url.as_deref()) {
                return Ok(Status::NeedsReconsent {
                    code: failure.code.clone(),
                });
            }
        }
        if let Some(cache) = self.registry.resident.get(id) {
            match cache.status() {
                Status::Idle => {}
                status => return Ok(status),
            }
        }
        let now = SystemTime::now();
        if let Some(usable_for) = set
            .access
            .and_then(|access| access.expires_at.duration_since(now).ok())
        {
            return Ok(Status::Connected { usable_for });
        }
        Ok(match set.retry {
            Some(retry) if retry.throttled => Status::Throttled {
                until: retry.next_attempt,
            },
            Some(retry) => Status::Failing {
                error: Error::transient(format!("{} (recorded in the token store)", retry.message)),
                since: retry.since,
                next_attempt: retry.next_attempt,
            },
            None => Status::Idle,
        })
    }

    /// Disconnects the connection: revokes its refresh token at the accounts server that
    /// issued it, deletes its record and forgets its cache, then reports
    /// [`Disconnected`](super::EventKind::Disconnected). Zoho refusing the revocation (the token
    /// is unknown or revoked already there) still disconnects; if Zoho cannot be reached the
    /// record stays, and the error says why. A connection with no record is disconnected
    /// already. The record is deleted only while it holds the revoked token
    /// ([`ConnectionStore::remove_if`]): a consent that lands meanwhile stays, connected, and no
    /// event is reported.
    pub async fn disconnect(&self, id: &ConnectionId) -> Result<(), Error> {
        let registry = &self.registry;
        let set = registry.store.connection(id).load().await?;
        if let Some(set) = set {
            if let Some(refresh_token) = &set.refresh_token {
                registry
                    .accounts
                    .for_issuer(set.accounts_url.as_deref())?
                    .revoke_or_gone(refresh_token)
                    .await?;
            }
            let removed =
                crate::store::remove_holding(&*registry.store, id, set.refresh_token.as_ref())
                    .await?;
            let reconnected = !removed
                && registry
                    .store
                    .connection(id)
                    .load()
                    .await?
                    .is_some_and(|set| set.refresh_token.is_some());
            if reconnected {
                tracing::info!(connection = %id, "a new consent landed during the disconnect; it stays");
                // The token in memory is the revoked grant's, dead at Zoho: the next request
                // refreshes with the new one.
                let cache = registry.front.get(id).map(|front| front.cache.clone());
                if let Some((cache, token)) = cache.and_then(|c| c.cached().map(|t| (c, t))) {
                    cache.invalidate(&token);
                }
                return Ok(());
            }
        }
        registry.resident.invalidate(id);
        registry.front.remove(id);
        registry
            .evicted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .caches
            .remove(id);
        registry.events.disconnected(id);
        Ok(())
    }

    /// Tells the connection's cache, if it is resident, that its record has new credentials (see
    /// [`TokenCache::recheck_store`]): call it where a consent was saved in this process — Connect
    /// Zoho's `on_connected` hook (feature `axum`) — so a connection
    /// that needed re-consent, or was never connected, works from its next request on. Other
    /// processes find the new credentials within their
    /// [`store_recheck`](crate::TokenCacheBuilder::store_recheck).
    pub fn recheck_store(&self, id: &ConnectionId) {
        let front = self.registry.front.get(id).map(|front| front.cache.clone());
        if let Some(cache) = front.or_else(|| self.registry.resident.get(id)) {
            cache.recheck_store();
        }
    }

    /// How many connections have a cache in memory now (an estimate: evictions are applied
    /// lazily).
    pub fn resident(&self) -> u64 {
        self.registry.resident.entry_count()
    }

    /// Applies pending evictions now, as the registry otherwise does along with its lookups; for
    /// tests and for an accurate [`resident`](Self::resident).
    pub fn run_pending_tasks(&self) {
        self.registry.resident.run_pending_tasks();
    }
}

impl Registry {
    fn revive_or_build(&self, id: &ConnectionId) -> Result<TokenCache, Error> {
        let revived = self
            .evicted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .caches
            .remove(id)
            .and_then(|cache| cache.upgrade());
        match revived {
            Some(cache) => Ok(cache),
            None => self.build(
                self.store.connection(id),
                Some(self.events.observer(id.clone())),
            ),
        }
    }

    fn build(
        &self,
        store: Arc<dyn TokenStore>,
        observer: Option<Observer>,
    ) -> Result<TokenCache, Error> {
        let builder = TokenCache::from_store(self.accounts.clone(), store);
        let builder = (self.configure)(builder).request_limit(self.request_limit.clone());
        match observer {
            Some(observer) => builder.observer(observer),
            None => builder,
        }
        .build()
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("accounts", &self.registry.accounts)
            .field("store", &self.registry.store)
            .field("resident", &self.resident())
            .finish_non_exhaustive()
    }
}

/// Builds [`Connections`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConnectionsBuilder {
    accounts: AccountsClient,
    store: Arc<dyn ConnectionStore>,
    configure: Arc<Configure>,
    time_to_idle: Duration,
    max_resident: u64,
    max_in_flight: usize,
}

impl ConnectionsBuilder {
    /// Settings for every connection's cache, applied to its builder:
    /// `.caches(|cache| cache.refresh_ahead(Duration::from_secs(600)))`. Any
    /// [`TokenCacheBuilder`] setting but the store, which is the connection's record.
    pub fn caches(
        mut self,
        configure: impl Fn(TokenCacheBuilder) -> TokenCacheBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }

    /// How long a connection's cache stays in memory unused (default 30 minutes, counted from a
    /// use at most a sixteenth of it before the last: lookups note their use only that often); an
    /// evicted connection is rebuilt from its record on its next use and adopts the token stored
    /// there.
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.time_to_idle = idle;
        self
    }

    /// How many connections' caches stay in memory at most (default 100,000); past it the least
    /// recently used go first.
    pub fn max_resident(mut self, max: u64) -> Self {
        self.max_resident = max;
        self
    }

    /// How many token requests may be in flight at once across all connections (default 32).
    pub fn max_token_requests_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Builds the registry, or says which setting cannot work.
    pub fn build(self) -> Result<Connections, Error> {
        if self.max_in_flight == 0 || self.max_resident == 0 || self.time_to_idle.is_zero() {
            return Err(Error::config(
                "connections: max_token_requests_in_flight, max_resident and time_to_idle must be \
                 above zero",
            ));
        }
        let evicted = Arc::new(Mutex::new(Evicted::default()));
        let remember = evicted.clone();
        let front: Arc<FrontIndex> = Arc::default();
        let unlist = front.clone();
        let resident = moka::sync::Cache::builder()
            // Every connection asked for is a real one: TinyLFU, moka's default, may refuse to
            // admit a new one when full, and then it would be rebuilt at every request.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(self.max_resident)
            .time_to_idle(self.time_to_idle)
            .eviction_listener(move |id: Arc<ConnectionId>, cache: TokenCache, cause| {
                unlist.remove_if(&*id, |_, front| front.cache.same(&cache));
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    remember
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remember((*id).clone(), cache.downgrade());
                }
            })
            .build();
        // Told often enough that an idle time counts from close to the last use, less a tick so
        // that the coarse clock's rounding never makes it later than a sixteenth.
        let touch_every_ms = (self.time_to_idle / 16)
            .saturating_sub(COARSE_TICK)
            .as_millis();
        let touch_every =
            coarsetime::Duration::from_millis(u64::try_from(touch_every_ms).unwrap_or(u64::MAX))
                .as_ticks();
        let registry = Registry {
            resident,
            front,
            touch_every,
            evicted,
            store: self.store,
            accounts: self.accounts,
            configure: self.configure,
            request_limit: Arc::new(Semaphore::new(self.max_in_flight)),
            events: Arc::new(Events::new(
                usize::try_from(self.max_resident).unwrap_or(usize::MAX),
            )),
        };
        // Settings that cannot work fail here, not at a connection's first request.
        registry.build(Arc::new(crate::store::MemoryStore::new()), None)?;
        Ok(Connections {
            registry: Arc::new(registry),
        })
    }
}

impl fmt::Debug for ConnectionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionsBuilder")
            .field("accounts", &self.accounts)
            .field("store", &self.store)
            .field("time_to_idle", &self.time_to_idle)
            .field("max_resident", &self.max_resident)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}
