//! The shared token cache: one access token, one refresh at a time, however many callers.
//!
//! Every clone of a [`TokenCache`] (and every [`ZohoAuthLayer`](crate::ZohoAuthLayer) built from
//! it) shares one token. Readers load it from an [`arc_swap::ArcSwapOption`] — no lock, no
//! allocation — together with a pre-built, sensitive `Authorization` header value.
//!
//! When the token is missing, expired or declared dead by Zoho, the first caller starts a refresh
//! in a spawned task and every caller, then and until it finishes, awaits that same result, so
//! ten thousand concurrent requests make one call to Zoho; when it lands they are woken in a
//! cascade, each woken waiter waking two more. A refresh cannot be cancelled by a caller giving
//! up, and every wait is bounded ([`TokenCacheBuilder::max_wait`]).
//!
//! Timing follows what peers learned (see the design notes in the repository):
//!
//! - a token counts as expired a **safety margin** before Zoho's stated expiry (60 s, at most a
//!   tenth of the lifetime);
//! - in the **stale window** before that (5 minutes plus 0–50 % jitter, at most a quarter of the
//!   lifetime plus jitter, so short-lived tokens never refresh in a loop) the current token is
//!   still served while one background refresh runs;
//! - a failed refresh never discards a still-valid token. Transient failures back off
//!   exponentially with jitter (1 s doubling up to 60 s; a store that is down is looked at again
//!   within seconds); Zoho's throttling backs off for minutes;
//! - failures only new credentials cure — no refresh token yet, a revoked one (`invalid_code`),
//!   `invalid_client` — are held: Zoho is not called with those credentials again, and the cache
//!   reads the store every few seconds ([`TokenCacheBuilder::store_recheck`]) and recovers as soon
//!   as a consent or `zoho-auth login` puts new ones there, or
//!   [`TokenCache::set_refresh_token`] supplies them;
//! - every refresh has a deadline (the wait for another process's lock, one accounts call and the
//!   store calls, each bounded): a refresh that hangs, or whose runtime is blocked or gone, is
//!   abandoned and the next caller starts a new one;
//! - a **budget** (default 10 token requests per 10 minutes, Zoho's limit) is never exceeded: with
//!   the budget spent and no valid token, callers fail fast with a rate-limited [`Error`] whose
//!   [`retry_after`](Error::retry_after) says when to try again.
//!
//! ```no_run
//! use zoho_auth::{accounts::AccountsClient, ClientId, ClientSecret, DataCenter, RefreshToken, TokenCache};
//!
//! # async fn run() -> Result<(), zoho_auth::Error> {
//! let client = AccountsClient::new(DataCenter::Us, ClientId::new("1000.ABC"), ClientSecret::new("..."))?;
//! let cache = TokenCache::new(client, RefreshToken::new("1000.refresh.token"));
//! let token = cache.token().await?;
//! println!("valid for {:?}, scopes {:?}", token.expires_in(), token.scopes());
//! # Ok(()) }
//! ```

mod budget;
mod builder;
mod flight;
mod health;
mod policy;
mod refresh;
mod state;
mod token;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use self::builder::Config;
pub use self::builder::{Seed, TokenCacheBuilder};
pub(crate) use self::health::Health;
pub use self::health::Status;
use self::state::{Grant, Join, State};
pub(crate) use self::token::CachedToken;
pub use self::token::Token;
use crate::accounts::AccountsClient;
use crate::dc::DataCenter;
use crate::error::{Error, Kind};
use crate::secret::RefreshToken;
use crate::stats::{Counters, Stats};
use crate::store::TokenStore;

/// After a replay with a fresh token met a token error too, that token is not invalidated again
/// for this long: the error is not one a refresh cures (wrong DC, Books' code 57 for a scope).
const SUSPECT_COOLDOWN: Duration = Duration::from_secs(120);

/// What a registry of connections learns of one cache's health.
#[cfg_attr(not(feature = "connections"), allow(dead_code))]
pub(crate) type Observer = Arc<dyn Fn(Health) + Send + Sync>;

/// The result every waiter of one refresh receives.
type Outcome = Result<Token, Error>;

struct Shared {
    current: ArcSwapOption<CachedToken>,
    state: Mutex<State>,
    client: AccountsClient,
    store: Arc<dyn TokenStore>,
    config: Config,
    /// The bound on one whole flight ([`Config::flight_deadline`]).
    deadline: Duration,
    /// Where flights run, if not on the runtime of the caller that starts them.
    runtime: Option<Handle>,
    /// Token requests in flight, shared with other caches (those of one `Connections`).
    request_limit: Option<Arc<Semaphore>>,
    /// Told the cache's health after every refresh that is recorded (a registry's events).
    observer: Option<Observer>,
    counters: Counters,
    /// The origin of the millisecond clock the atomics below use.
    origin: Instant,
    /// Earliest moment (ms after `origin`) a refresh-ahead may start, so requests in the stale
    /// window do not all take the state lock.
    next_ahead_ms: AtomicU64,
}

/// A [`TokenCache`] that does not keep it alive: the registry of connections remembers caches it
/// evicted while something still used them.
#[cfg(feature = "connections")]
#[derive(Clone)]
pub(crate) struct WeakTokenCache(std::sync::Weak<Shared>);

#[cfg(feature = "connections")]
impl WeakTokenCache {
    pub(crate) fn upgrade(&self) -> Option<TokenCache> {
        self.0.upgrade().map(|shared| TokenCache { shared })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// The token source every request shares. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("client", &self.shared.client)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache that mints tokens from a refresh token, with default settings and a store of its
    /// own.
    pub fn new(client: AccountsClient, refresh_token: RefreshToken) -> Self {
        Self::builder(client, refresh_token)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for a cache that mints tokens from a refresh token.
    ///
    /// With a [store](TokenCacheBuilder::store), [`seed`](TokenCacheBuilder::seed) says which
    /// refresh token wins when the store already holds another: by default the given one only
    /// fills an empty store.
    pub fn builder(client: AccountsClient, refresh_token: RefreshToken) -> TokenCacheBuilder {
        TokenCacheBuilder::new(
            client,
            Grant::RefreshToken {
                token: Some(refresh_token),
                prefer: false,
                given: true,
            },
        )
    }

    /// A builder for a cache whose refresh token lives only in `store` (saved there by a login,
    /// for example). A store that holds none yet is not an error for good: requests fail with
    /// [`Error::is_not_connected`] until a consent or `zoho-auth login` fills it, and the cache
    /// picks the new refresh token up within [`store_recheck`](TokenCacheBuilder::store_recheck).
    pub fn from_store(client: AccountsClient, store: Arc<dyn TokenStore>) -> TokenCacheBuilder {
        TokenCacheBuilder::new(
            client,
            Grant::RefreshToken {
                token: None,
                prefer: false,
                given: false,
            },
        )
        .store(store)
    }

    /// A builder for a cache that mints tokens with the self client's client-credentials grant
    /// (`soid` such as `ZohoCRM.600012345`), for server-to-server use without a refresh token.
    pub fn client_credentials(
        client: AccountsClient,
        scopes: &[&str],
        soid: &str,
    ) -> TokenCacheBuilder {
        TokenCacheBuilder::new(
            client,
            Grant::ClientCredentials {
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                soid: soid.to_owned(),
            },
        )
    }

    /// A valid token: the cached one, or the result of the one refresh in progress (starting it
    /// if needed). Waits at most the configured `max_wait`.
    pub async fn token(&self) -> Result<Token, Error> {
        let flight = match self.join(Instant::now())? {
            Join::Ready(token) => return Ok(token),
            Join::Wait(flight) => flight,
        };
        let max_wait = self.shared.config.max_wait;
        match tokio::time::timeout(max_wait, flight.outcome()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::new(
                Kind::Timeout,
                format!("waited {}s for a Zoho access token", max_wait.as_secs_f32()),
            )),
        }
    }

    /// The cached token if it is usable now, without any I/O.
    pub fn cached(&self) -> Option<Token> {
        let now = Instant::now();
        self.shared
            .current
            .load_full()
            .filter(|token| token.usable(now))
            .map(Token)
    }

    /// Tells the cache its store has new credentials: a consent or `zoho-auth login` saved a
    /// refresh token there. If it holds a failure only new credentials cure (no refresh token, a
    /// revoked one, `invalid_client`), its next request reads the store at once instead of
    /// within [`store_recheck`](TokenCacheBuilder::store_recheck). Otherwise nothing changes: the
    /// cached token stays in use.
    pub fn recheck_store(&self) {
        self.recheck_due();
    }

    /// Declares `token` dead, as when Zoho rejected it. The next caller starts a refresh. If the
    /// cache already holds a newer token, nothing happens.
    pub fn invalidate(&self, token: &Token) {
        // Compared by value: the token may come from another cache sharing the store.
        let current = self.shared.current.load();
        if let Some(current) = current.as_deref() {
            if current.access_token == token.0.access_token {
                self.invalidate_generation(current.generation);
            }
        }
    }

    /// What the cache and its layers did so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The refresh token in use, if the cache mints tokens from one.
    ///
    /// With a shared store this is the one last read from (or written to) the store.
    pub fn refresh_token(&self) -> Option<RefreshToken> {
        self.lock().grant.refresh_token().cloned()
    }

    /// Replaces the refresh token (after a new consent) and forgets past failures, including a
    /// held one. The current access token stays in use until it expires. The next refresh
    /// writes the new refresh token to the token store (fenced, like every save), replacing the
    /// store's. A refresh already in progress with the old one is left to finish, and its
    /// outcome — a token, or a failure of the old refresh token — is not recorded.
    pub fn set_refresh_token(&self, refresh_token: RefreshToken) {
        let mut state = self.lock();
        state.grant = Grant::RefreshToken {
            token: Some(refresh_token),
            prefer: true,
            given: true,
        };
        state.renew();
        self.shared.next_ahead_ms.store(0, Relaxed);
    }

    /// The data centre of the accounts server, if it is one of Zoho's.
    pub fn data_center(&self) -> Option<DataCenter> {
        self.shared.client.accounts().data_center()
    }

    /// Runs `f` on the current token, if any, without side effects.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&CachedToken>) -> R) -> R {
        f(self.shared.current.load().as_deref())
    }

    /// Runs `f` on the current token (usable or not) and whether it is usable now, starting a
    /// background refresh when a usable token is in its stale window. The layer's hot path.
    pub(crate) fn lookup<R>(&self, f: impl FnOnce(Option<&Arc<CachedToken>>, bool) -> R) -> R {
        let now = Instant::now();
        let guard = self.shared.current.load();
        let token = guard.as_ref();
        let usable = token.is_some_and(|token| token.usable(now));
        if let (true, Some(token)) = (usable, token) {
            if now >= token.refresh_at {
                self.refresh_ahead(now);
            }
        }
        f(token, usable)
    }

    /// Called when a request that carried token `generation` was told it is dead.
    pub(crate) fn invalidate_generation(&self, generation: u64) {
        let guard = self.shared.current.load();
        let Some(token) = guard.as_deref() else {
            return;
        };
        if token.generation != generation
            || self.ms(Instant::now()) < token.suspect_until_ms.load(Relaxed)
        {
            return;
        }
        if !token.dead.swap(true, Relaxed) {
            Counters::bump(&self.shared.counters.invalidations);
            tracing::debug!(
                generation,
                "Zoho rejected the access token; it will be refreshed"
            );
        }
    }

    /// Called when a replay with the fresh token `generation` met a token error too. A token this
    /// process minted because the one before it was rejected is not cured by minting another (a
    /// wrong data centre, Books' code 57 for a scope), so its errors are not trusted for a while.
    /// Any other token — adopted from the store, or minted ahead of expiry before the rejection —
    /// may simply have died since (Zoho invalidated it too), so it is dropped like any dead token.
    pub(crate) fn replay_failed(&self, generation: u64) {
        let guard = self.shared.current.load();
        let Some(token) = guard.as_deref().filter(|t| t.generation == generation) else {
            return;
        };
        if !token.answers_rejection {
            self.invalidate_generation(generation);
            return;
        }
        let until = self.ms(Instant::now() + SUSPECT_COOLDOWN);
        token.suspect_until_ms.store(until, Relaxed);
        tracing::warn!(
            generation,
            "a fresh Zoho token was rejected too: not refreshing again for this error for {}s",
            SUSPECT_COOLDOWN.as_secs()
        );
    }

    /// Whether `other` is this cache (a clone of it), not merely another cache.
    #[cfg(feature = "connections")]
    pub(crate) fn same(&self, other: &TokenCache) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    #[cfg(feature = "connections")]
    pub(crate) fn downgrade(&self) -> WeakTokenCache {
        WeakTokenCache(Arc::downgrade(&self.shared))
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; a poisoned lock still holds consistent state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.shared.origin).as_millis() as u64
    }
}

/// Caches for unit tests that never call Zoho: their tokens are adopted from a store.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::dc::Accounts;
    use crate::secret::{ClientId, ClientSecret};
    use crate::store::{MemoryStore, TokenSet};

    /// Writes `set` over what `store` holds.
    pub(crate) async fn put(store: &dyn TokenStore, set: &TokenSet) {
        store
            .update(None, |stored| {
                *stored = set.clone();
                Ok(())
            })
            .await
            .unwrap();
    }

    /// A cache over `store` whose accounts server answers nothing.
    pub(crate) fn offline(store: Arc<MemoryStore>) -> TokenCache {
        let client = AccountsClient::new(
            Accounts::custom("http://127.0.0.1:9").unwrap(),
            ClientId::new("1000.client"),
            ClientSecret::new("secret"),
        )
        .unwrap();
        TokenCache::builder(client, RefreshToken::new("1000.refresh"))
            .store(store)
            .build()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::testing::{offline, put};
    use super::*;
    use crate::secret::AccessToken;
    use crate::store::{MemoryStore, StoredAccess, TokenSet};

    /// A token another process minted `age` ago that expires `left` from now; tokens are adopted
    /// from the store, so no test here calls Zoho.
    fn stored(token: &str, age: Duration, left: Duration) -> TokenSet {
        let now = SystemTime::now();
        TokenSet {
            refresh_token: Some(RefreshToken::new("1000.refresh")),
            access: Some(StoredAccess {
                access_token: AccessToken::new(token),
                issued_at: now - age,
                expires_at: now + left,
                api_domain: None,
                scopes: Vec::new(),
            }),
            ..TokenSet::default()
        }
    }

    /// A caller that found the token in its stale window but asks for the background refresh
    /// only after another caller's refresh landed must not start a second one. Under CPU load a
    /// caller is delayed that long now and then; the fresh token was then replaced at once (the
    /// soak test's "a token was replaced 56 ms after it was requested").
    #[tokio::test(start_paused = true)]
    async fn a_late_refresh_ahead_after_a_flight_landed_starts_no_second_flight() {
        let hour = Duration::from_secs(3600);
        let store = Arc::new(MemoryStore::new());
        // An hour-long token with three minutes left: past its refresh-ahead point, still usable.
        let minute = Duration::from_secs(60);
        put(&*store, &stored("stale", hour - 3 * minute, 3 * minute)).await;
        let cache = offline(store.clone());
        let stale = cache.token().await.unwrap();
        assert_eq!(stale.access_token().expose(), "stale");

        // Two callers see the stale token at the same moment; the first starts the refresh,
        // which adopts the fresh token another process stored meanwhile.
        let seen = Instant::now();
        assert!(seen >= stale.cached().refresh_at);
        put(&*store, &stored("fresh", Duration::ZERO, hour)).await;
        cache.refresh_ahead(seen);
        assert!(cache.lock().flight.is_some(), "the first caller refreshes");
        for _ in 0..1000 {
            if cache.lock().flight.is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let fresh = cache.cached().unwrap();
        assert_eq!(fresh.access_token().expose(), "fresh");

        // The second caller gets to ask only now.
        cache.refresh_ahead(seen);
        assert!(
            cache.lock().flight.is_none(),
            "no second refresh for a token that was already replaced"
        );
        assert_eq!(cache.stats().adopted, 2);
        assert_eq!(cache.stats().refreshes, 0);
        assert_eq!(cache.stats().token_requests, 0);
    }
}
