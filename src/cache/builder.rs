//! The cache's settings, their validation, and the builder that takes them.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::budget::Budget;
use super::state::{Grant, State};
use super::{Observer, Shared, TokenCache};
use crate::accounts::AccountsClient;
use crate::error::Error;
use crate::stats::Counters;
use crate::store::{MemoryStore, TokenStore};

/// The longest any duration setting may be: long enough for every sane use, short enough that
/// adding it to the clock can never overflow.
const MAX_SETTING: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) budget_max: u32,
    pub(super) budget_window: Duration,
    pub(super) refresh_ahead: Duration,
    pub(super) expiry_margin: Duration,
    pub(super) max_wait: Duration,
    pub(super) throttle_backoff: Duration,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) store_timeout: Duration,
    pub(super) store_recheck: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            budget_max: 10,
            budget_window: Duration::from_secs(600),
            refresh_ahead: Duration::from_secs(300),
            expiry_margin: Duration::from_secs(60),
            max_wait: Duration::from_secs(30),
            throttle_backoff: Duration::from_secs(300),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            store_timeout: Duration::from_secs(5),
            store_recheck: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Refuses settings that could never work or could overflow the clock later.
    fn validate(&self) -> Result<(), Error> {
        if self.budget_max == 0 {
            return Err(Error::config(
                "token cache: a budget of 0 token requests could never mint a token",
            ));
        }
        let settings = [
            ("budget window", self.budget_window, false),
            ("refresh_ahead", self.refresh_ahead, true),
            ("expiry_margin", self.expiry_margin, true),
            ("max_wait", self.max_wait, false),
            ("throttle_backoff", self.throttle_backoff, false),
            ("backoff minimum", self.backoff_min, false),
            ("backoff maximum", self.backoff_max, false),
            ("store_timeout", self.store_timeout, false),
            ("store_recheck", self.store_recheck, false),
        ];
        for (name, value, zero_ok) in settings {
            if value.is_zero() && !zero_ok {
                return Err(Error::config(format!(
                    "token cache: {name} must be longer than zero"
                )));
            }
            if value > MAX_SETTING {
                return Err(Error::config(format!(
                    "token cache: {name} of {value:?} is longer than the limit of {} days",
                    MAX_SETTING.as_secs() / 86_400
                )));
            }
        }
        if self.backoff_max < self.backoff_min {
            return Err(Error::config(
                "token cache: the backoff maximum is shorter than its minimum",
            ));
        }
        Ok(())
    }

    /// The bound on one whole refresh: waiting for another process's lock, one call to Zoho, and
    /// the store calls around it (a load, and the fenced saves that record the token request and
    /// the result, each bounded by `store_timeout`). A flight older than this is abandoned, and
    /// the store's refresh lock is asked to live this long, so the lock outlives the work it
    /// guards.
    pub(super) fn flight_deadline(&self, accounts_timeout: Duration) -> Duration {
        self.max_wait + accounts_timeout + self.store_timeout * 6
    }
}

/// Which refresh token wins when the cache is given one and its store holds another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seed {
    /// The given refresh token fills an empty store; a store that holds one keeps its own (it may
    /// have been replaced by a newer consent since), unless the store records it as revoked.
    #[default]
    IfEmpty,
    /// The given refresh token replaces the store's at the first refresh (written through the
    /// store's fenced save), as after a new consent. Tokens the store holds for the old one are
    /// not adopted.
    Replace,
}

/// Builds a [`TokenCache`]; every setting has a default that suits Zoho's limits.
#[must_use = "a builder does nothing until `build` is called"]
pub struct TokenCacheBuilder {
    client: AccountsClient,
    grant: Grant,
    store: Option<Arc<dyn TokenStore>>,
    config: Config,
    runtime: Option<Handle>,
    request_limit: Option<Arc<Semaphore>>,
    observer: Option<Observer>,
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("client", &self.client)
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenCacheBuilder {
    pub(super) fn new(client: AccountsClient, grant: Grant) -> Self {
        Self {
            client,
            grant,
            store: None,
            config: Config::default(),
            runtime: None,
            request_limit: None,
            observer: None,
        }
    }

    /// At most `max` token requests per `window` from this cache (default 10 per 10 minutes,
    /// Zoho's limit per refresh token). `max` must be at least 1.
    pub fn budget(mut self, max: u32, window: Duration) -> Self {
        self.config.budget_max = max;
        self.config.budget_window = window;
        self
    }

    /// How long before expiry a background refresh starts while the current token is still served
    /// (default 5 minutes, plus up to 50 % jitter; at most a quarter of the token's lifetime).
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.config.refresh_ahead = window;
        self
    }

    /// How long before Zoho's stated expiry a token stops being used (default 60 s; at most a
    /// tenth of the token's lifetime), covering clock skew and requests in flight.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.config.expiry_margin = margin;
        self
    }

    /// The longest a caller waits for a refresh before getting a timeout error (default 30 s).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// How long to stay away after Zoho throttles token requests (default 5 minutes, ±20 %).
    pub fn throttle_backoff(mut self, backoff: Duration) -> Self {
        self.config.throttle_backoff = backoff;
        self
    }

    /// The exponential back-off after transient failures: starts at `min`, doubles, stops at
    /// `max` (defaults 1 s and 60 s); each wait gets jitter.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max;
        self
    }

    /// The bound on each call to the token store (default 5 s); a store that does not answer in
    /// time counts as unavailable.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// While the cache holds a failure only new credentials can cure — no refresh token yet, a
    /// revoked one, `invalid_client` — how often it reads the store again to see whether a
    /// consent or `zoho-auth login` put new ones there (default 5 s). It never calls Zoho with the
    /// credentials that failed.
    pub fn store_recheck(mut self, interval: Duration) -> Self {
        self.config.store_recheck = interval;
        self
    }

    /// Keeps the token set in `store` (default: a [`MemoryStore`] of this cache's own). Caches
    /// that share a store — in one process, or across processes through a file or Redis — adopt
    /// each other's tokens and refresh once between them. See [`crate::store`].
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Which refresh token wins when the store already holds another one than the one this
    /// builder was given (default [`Seed::IfEmpty`]). No effect on caches built with
    /// [`TokenCache::from_store`] or [`TokenCache::client_credentials`].
    pub fn seed(mut self, seed: Seed) -> Self {
        if let Grant::RefreshToken { token, prefer, .. } = &mut self.grant {
            *prefer = token.is_some() && seed == Seed::Replace;
        }
        self
    }

    /// Runs refreshes on `runtime` instead of the runtime of the caller that starts them: for an
    /// application whose callers live on runtimes that may be blocked or shut down (a
    /// `#[tokio::main]` and short-lived test runtimes, or a runtime per thread).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Shares `limit` on token requests in flight with other caches: each call to Zoho's token
    /// endpoint holds one of its permits, so many connections expiring together never open more
    /// calls at once than it has.
    #[cfg(feature = "connections")]
    pub(crate) fn request_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.request_limit = Some(limit);
        self
    }

    /// Tells `observer` the cache's health after every refresh whose outcome is recorded.
    #[cfg(feature = "connections")]
    pub(crate) fn observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the cache, or says which setting cannot work. No request is made until the first
    /// token is needed.
    pub fn build(self) -> Result<TokenCache, Error> {
        self.config.validate()?;
        let deadline = self.config.flight_deadline(self.client.timeout());
        let budget = Budget::new(self.config.budget_max, self.config.budget_window);
        Ok(TokenCache {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                state: Mutex::new(State::new(self.grant, budget)),
                client: self.client,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                config: self.config,
                deadline,
                runtime: self.runtime,
                request_limit: self.request_limit,
                observer: self.observer,
                counters: Counters::default(),
                origin: Instant::now(),
                next_ahead_ms: AtomicU64::new(0),
            }),
        })
    }
}
