//! The core's guarantees where production breaks them: no save reverts a newer one, new
//! credentials beat an old refresh, a failure does not stick once the store is fixed, a refresh
//! that hangs or whose runtime is gone does not wedge the cache, and settings that cannot work are
//! refused when built.
//!
//! Against the simulator on loopback, in real time: a paused clock would race the sockets.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use zoho_auth::sim::{Fault, Simulator};
use zoho_auth::store::{MemoryStore, StoreLock, TokenSet, TokenStore};
use zoho_auth::{Error, Seed, TokenCache};

use common::{accounts_client, cache_on, wait_until};

/// A generous bound for "within a few seconds" on a loaded 2-core machine.
const RECOVERY: Duration = Duration::from_secs(20);

fn memory() -> Arc<dyn TokenStore> {
    Arc::new(MemoryStore::new())
}

async fn stored(store: &Arc<dyn TokenStore>) -> TokenSet {
    store.load().await.unwrap().expect("a stored set")
}

/// Calls `token()` until it succeeds, within `limit`; the last error otherwise.
async fn token_within(cache: &TokenCache, limit: Duration) -> Result<zoho_auth::Token, Error> {
    let deadline = Instant::now() + limit;
    loop {
        match cache.token().await {
            Ok(token) => return Ok(token),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Starts `cache.token()` with Zoho's next token answer held back 2 s, and returns once the token
/// request reached Zoho: a refresh in flight.
async fn refresh_in_flight(
    zoho: &Simulator,
    cache: &TokenCache,
) -> tokio::task::JoinHandle<Result<zoho_auth::Token, Error>> {
    let before = zoho.counters().token_requests;
    zoho.inject(Fault::Slow(Duration::from_secs(2)), 1);
    let refresh = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    wait_until(Duration::from_secs(10), "the refresh reached Zoho", || {
        zoho.counters().token_requests == before + 1
    })
    .await;
    refresh
}

/// A re-consent that lands while a refresh waits for Zoho: the refresh's save must keep the new
/// refresh token, not write back the set it read, nor store its token beside the new grant.
#[tokio::test]
async fn a_refresh_in_flight_never_reverts_a_new_consent() {
    let zoho = Simulator::start().await.unwrap();
    let old = zoho.mint_refresh_token(&[]);
    let store = memory();
    let cache = cache_on(&zoho, &old, store.clone());
    let refresh = refresh_in_flight(&zoho, &cache).await;

    // Meanwhile a consent elsewhere (another process, `zoho-auth login`) stores a new grant.
    let new = zoho.mint_refresh_token(&["ZohoCRM.modules.ALL", "ZohoBooks.fullaccess.all"]);
    store
        .update(None, |set| {
            set.refresh_token = Some(new.clone());
            set.accounts_url = Some(zoho.url());
            Ok(())
        })
        .await
        .unwrap();

    let minted = refresh.await.unwrap().expect("the refresh still succeeds");
    let set = stored(&store).await;
    assert_eq!(
        set.refresh_token.as_ref(),
        Some(&new),
        "the refresh's save reverted the new refresh token"
    );
    assert_eq!(set.accounts_url, Some(zoho.url()));
    // The refresh's token came from the old grant, perhaps another Zoho account: it is not put
    // beside the new one, where other processes would adopt it.
    assert!(
        set.access.is_none(),
        "the old grant's access token was stored with the new refresh token"
    );
    // The cache uses the new refresh token from its next refresh on.
    cache.invalidate(&minted);
    cache.token().await.unwrap();
    assert_eq!(cache.refresh_token().as_ref(), Some(&new));
}

/// The store's newer access token (from a consent that landed mid-refresh) is kept too.
#[tokio::test]
async fn a_refresh_keeps_a_newer_stored_access_token() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store = memory();
    let cache = cache_on(&zoho, &refresh_token, store.clone());
    let refresh = refresh_in_flight(&zoho, &cache).await;
    // Another process mints and saves a token after this refresh was sent.
    let other = accounts_client(&zoho)
        .refresh(&refresh_token)
        .await
        .unwrap();
    let now = std::time::SystemTime::now();
    store
        .update(None, |set| {
            set.access = Some(zoho_auth::store::StoredAccess::new(
                other.access_token.clone(),
                now,
                now + other.expires_in,
                other.api_domain.clone(),
                Vec::new(),
            ));
            Ok(())
        })
        .await
        .unwrap();
    refresh.await.unwrap().unwrap();
    let set = stored(&store).await;
    assert_eq!(
        set.access.unwrap().access_token.expose(),
        other.access_token.expose(),
        "an older access token replaced a newer one"
    );
}

/// `set_refresh_token` while a refresh with the old, revoked refresh token is in flight: the old
/// refresh's `invalid_code` must not become the new token's permanent failure.
#[tokio::test]
async fn new_credentials_beat_an_old_flight_that_fails() {
    let zoho = Simulator::start().await.unwrap();
    let old = zoho.mint_refresh_token(&[]);
    zoho.revoke_refresh_token(&old);
    let cache = TokenCache::builder(accounts_client(&zoho), old)
        .build()
        .unwrap();
    let doomed = refresh_in_flight(&zoho, &cache).await;
    cache.set_refresh_token(zoho.mint_refresh_token(&[]));
    let old_outcome = doomed.await.unwrap().unwrap_err();
    assert!(old_outcome.is_invalid_grant(), "{old_outcome:?}");

    let token = cache.token().await;
    assert!(
        token.is_ok(),
        "the old refresh's failure stuck to the new refresh token: {:?}",
        token.unwrap_err()
    );
}

/// A service started before `zoho-auth login` filled its store recovers by itself, without a
/// restart, within seconds of the store being filled.
#[tokio::test]
async fn a_cache_started_on_an_empty_store_recovers_once_it_is_filled() {
    let zoho = Simulator::start().await.unwrap();
    let store = memory();
    let cache = TokenCache::from_store(accounts_client(&zoho), store.clone())
        .store_recheck(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = cache.token().await.unwrap_err();
    assert!(
        error.is_not_connected() && !error.is_permanent(),
        "{error:?}"
    );
    // Asked again at once: the held failure, without reading the store every time.
    assert!(cache.token().await.unwrap_err().is_not_connected());

    // The login.
    let refresh_token = zoho.mint_refresh_token(&[]);
    common::put(&*store, &TokenSet::new(refresh_token.clone()))
        .await
        .unwrap();
    let token = token_within(&cache, RECOVERY)
        .await
        .expect("the cache recovered once the store was filled");
    assert!(!token.access_token().expose().is_empty());
    assert_eq!(cache.refresh_token(), Some(refresh_token));
    assert_eq!(zoho.counters().token_requests, 1);
}

/// With a revoked refresh token the cache stops calling Zoho, re-reads the store slowly, and
/// recovers as soon as the store holds new credentials.
#[tokio::test]
async fn a_revoked_refresh_token_is_not_retried_and_a_new_one_in_the_store_cures_it() {
    let zoho = Simulator::start().await.unwrap();
    let revoked = zoho.mint_refresh_token(&[]);
    zoho.revoke_refresh_token(&revoked);
    let store = memory();
    let cache = TokenCache::builder(accounts_client(&zoho), revoked.clone())
        .store(store.clone())
        .store_recheck(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(cache.token().await.unwrap_err().is_invalid_grant());
    assert_eq!(zoho.counters().token_requests, 1);
    // Several recheck intervals: the store is read again, Zoho is not called.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..20 {
        assert!(cache.token().await.unwrap_err().is_invalid_grant());
    }
    assert_eq!(
        zoho.counters().token_requests,
        1,
        "Zoho was called again with the revoked refresh token"
    );

    // A new consent fills the store.
    let fresh = zoho.mint_refresh_token(&[]);
    store
        .update(None, |set| {
            set.refresh_token = Some(fresh.clone());
            set.failure = None;
            Ok(())
        })
        .await
        .unwrap();
    token_within(&cache, RECOVERY)
        .await
        .expect("recovered from the new refresh token in the store");
    assert_eq!(cache.refresh_token(), Some(fresh));
    assert_eq!(zoho.counters().token_requests, 2);
}

/// A store whose calls never answer.
#[derive(Debug)]
struct Hanging;

impl TokenStore for Hanging {
    fn load(&self) -> zoho_auth::store::StoreFuture<'_, Option<TokenSet>> {
        Box::pin(std::future::pending())
    }
    fn save<'a>(
        &'a self,
        _: &'a TokenSet,
        _: Option<&'a dyn StoreLock>,
    ) -> zoho_auth::store::StoreFuture<'a, zoho_auth::store::Saved> {
        Box::pin(std::future::pending())
    }
    fn try_lock(
        &self,
        _: Duration,
    ) -> zoho_auth::store::StoreFuture<'_, Option<Box<dyn StoreLock>>> {
        Box::pin(std::future::pending())
    }
}

/// A store that hangs does not hang the cache: its calls are bounded and the cache refreshes on
/// its own meanwhile.
#[tokio::test]
async fn a_hanging_store_does_not_wedge_the_cache() {
    let zoho = Simulator::start().await.unwrap();
    let cache = TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]))
        .store(Arc::new(Hanging))
        .store_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let token = tokio::time::timeout(Duration::from_secs(20), cache.token())
        .await
        .expect("the cache answered")
        .expect("a token minted without the store");
    assert!(!token.access_token().expose().is_empty());
}

/// A refresh started on a runtime that then blocks must not make callers on another runtime time
/// out forever: past its deadline it is abandoned and a new one starts.
#[test]
fn a_flight_on_a_blocked_runtime_is_abandoned_after_its_deadline() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let zoho = main.block_on(Simulator::start()).unwrap();
    let client = zoho_auth::accounts::AccountsClient::with_timeout(
        zoho_auth::Accounts::custom(&zoho.url()).unwrap(),
        zoho.client_id(),
        zoho.client_secret(),
        Duration::from_millis(500),
    )
    .unwrap();
    let cache = TokenCache::builder(client, zoho.mint_refresh_token(&[]))
        .max_wait(Duration::from_millis(300))
        .store_timeout(Duration::from_millis(100))
        .build()
        .unwrap();

    // A runtime whose only thread starts the refresh and then blocks forever (until released).
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let blocker = std::thread::spawn({
        let (cache, started) = (cache.clone(), started.clone());
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                // Starts the flight on this runtime, then blocks the runtime's only thread.
                let mut token = std::pin::pin!(cache.token());
                let _ = futures_poll_once(token.as_mut()).await;
                started.wait();
                let _ = blocked.recv();
            });
        }
    });
    started.wait();

    let recovered = main.block_on(async {
        // max_wait + accounts timeout + 6 store timeouts: the flight's deadline is 1.4 s.
        token_within(&cache, RECOVERY).await
    });
    let _ = release.send(());
    blocker.join().unwrap();
    assert!(
        recovered.is_ok(),
        "callers kept waiting on the blocked runtime's flight: {:?}",
        recovered.unwrap_err()
    );
}

/// Polls `future` once (so a `token()` call starts its flight) and returns.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut future).poll(cx).is_ready())
    })
    .await
}

/// Refreshes run on the runtime the builder names. One that is shut down drops the flight inside
/// `spawn`; that must neither deadlock (the flight's guard takes the state lock, so the spawn must
/// come after the lock is released) nor leave the cache waiting.
#[test]
fn a_flight_spawned_on_a_dead_runtime_fails_at_once_without_deadlock() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let zoho = main.block_on(Simulator::start()).unwrap();
    let dead = tokio::runtime::Runtime::new().unwrap();
    let handle = dead.handle().clone();
    dead.shutdown_background();
    let cache = TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]))
        .runtime(handle)
        .build()
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn({
        let cache = cache.clone();
        move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let _ = done.send(runtime.block_on(cache.token()).map(drop));
        }
    });
    let outcome = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("token() deadlocked on a dead runtime");
    let error = outcome.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

/// Settings that cannot work are refused when built, with a clear configuration error, instead of
/// allocating gigabytes or overflowing the clock later.
#[tokio::test]
async fn settings_are_validated_when_built() {
    let zoho = Simulator::start().await.unwrap();
    let builder = || TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]));
    // A huge budget is legal ("no local limit") and allocates nothing ahead.
    let cache = builder()
        .budget(u32::MAX, Duration::from_secs(600))
        .build()
        .unwrap();
    cache.token().await.unwrap();
    for (what, result) in [
        ("max_wait MAX", builder().max_wait(Duration::MAX).build()),
        ("max_wait 0", builder().max_wait(Duration::ZERO).build()),
        (
            "budget 0",
            builder().budget(0, Duration::from_secs(600)).build(),
        ),
        ("window 0", builder().budget(10, Duration::ZERO).build()),
        (
            "backoff reversed",
            builder()
                .backoff(Duration::from_secs(10), Duration::from_secs(1))
                .build(),
        ),
        (
            "store_recheck 0",
            builder().store_recheck(Duration::ZERO).build(),
        ),
        (
            "throttle MAX",
            builder().throttle_backoff(Duration::MAX).build(),
        ),
    ] {
        let error = result.expect_err(what);
        assert!(error.is_config(), "{what}: {error:?}");
    }
    // Expiry margin and refresh-ahead may be zero, and are clamped by the token's lifetime.
    builder()
        .expiry_margin(Duration::ZERO)
        .refresh_ahead(Duration::ZERO)
        .build()
        .unwrap();
}

/// A token request this process's own budget refuses takes no slot of the fleet's budget.
#[tokio::test]
async fn a_locally_refused_request_uses_no_fleet_slot() {
    let zoho = Simulator::start().await.unwrap();
    let store = memory();
    let cache = TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]))
        .store(store.clone())
        .budget(1, Duration::from_secs(600))
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    assert_eq!(stored(&store).await.token_requests.len(), 1);
    // The token dies; the stored one is the same dead token, so a new one must be minted, which
    // the local budget refuses.
    cache.invalidate(&token);
    let error = cache.token().await.unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
    assert_eq!(
        stored(&store).await.token_requests.len(),
        1,
        "the refused request was recorded against the fleet"
    );
    assert_eq!(zoho.counters().token_requests, 1);
}

/// The seed is explicit: by default a store's own refresh token wins; `Seed::Replace` makes the
/// given one replace it (fenced) — no `set_refresh_token` workaround.
#[tokio::test]
async fn the_seed_says_which_refresh_token_wins() {
    let zoho = Simulator::start().await.unwrap();
    let in_store = zoho.mint_refresh_token(&[]);
    let given = zoho.mint_refresh_token(&[]);
    let store = memory();
    common::put(&*store, &TokenSet::new(in_store.clone()))
        .await
        .unwrap();

    let keep = cache_on(&zoho, &given, store.clone());
    keep.token().await.unwrap();
    assert_eq!(keep.refresh_token().as_ref(), Some(&in_store));
    assert_eq!(stored(&store).await.refresh_token.as_ref(), Some(&in_store));

    let replace = TokenCache::builder(accounts_client(&zoho), given.clone())
        .store(store.clone())
        .seed(Seed::Replace)
        .build()
        .unwrap();
    let token = replace.token().await.unwrap();
    assert_eq!(replace.refresh_token().as_ref(), Some(&given));
    assert_eq!(stored(&store).await.refresh_token.as_ref(), Some(&given));
    // Minted from the given grant, not adopted from the old one.
    assert_eq!(replace.stats().refreshes, 1);
    assert_eq!(replace.stats().adopted, 0);
    assert!(zoho.is_access_token_live(token.access_token().expose()));
}

/// `Stats` tells tokens this process minted apart from tokens it adopted from the store.
#[tokio::test]
async fn stats_tell_minted_from_adopted() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store = memory();
    let minter = cache_on(&zoho, &refresh_token, store.clone());
    let adopter = cache_on(&zoho, &refresh_token, store.clone());
    minter.token().await.unwrap();
    adopter.token().await.unwrap();
    assert_eq!((minter.stats().refreshes, minter.stats().adopted), (1, 0));
    assert_eq!((adopter.stats().refreshes, adopter.stats().adopted), (0, 1));
    assert_eq!(adopter.stats().token_requests, 0);
}

/// The refresh token goes through the same fenced path as every writer: a refresh whose store
/// changed under it re-reads, and the request record lands on the latest set.
#[tokio::test]
async fn a_refresh_records_its_request_on_the_latest_set() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store = memory();
    let mut seeded = TokenSet::new(refresh_token.clone());
    seeded.accounts_url = Some(zoho.url());
    let seeded = common::put(&*store, &seeded).await.unwrap();
    let cache = cache_on(&zoho, &refresh_token, store.clone());
    cache.token().await.unwrap();
    let set = stored(&store).await;
    assert_eq!(set.accounts_url, Some(zoho.url()), "a field was lost");
    assert!(set.revision > seeded.revision);
    assert_eq!(set.token_requests.len(), 1);
    assert!(set.access.is_some());
}
