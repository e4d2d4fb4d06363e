//! Token caches sharing a store: adoption, the fleet budget, recorded revocation, and what a
//! broken store does. Several caches in one test stand for several processes here; the
//! multi-process proofs are in `tests/fleet.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower::ServiceExt;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{FileStore, MemoryStore, TokenSet, TokenStore};
use zoho_auth::TokenCache;

use common::{accounts_client, cache_on, TempDir};

#[tokio::test]
async fn a_second_process_adopts_the_token_the_first_saved() {
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("adopt");
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("tokens.json")));
    let first = cache_on(&zoho, &refresh_token, store.clone());
    let token = first.token().await.unwrap();

    // Another process: its own cache and its own handle on the same file.
    let second = cache_on(
        &zoho,
        &refresh_token,
        Arc::new(FileStore::new(dir.join("tokens.json"))),
    );
    let adopted = second.token().await.unwrap();
    assert_eq!(adopted.access_token(), token.access_token());
    assert_eq!(adopted.api_domain(), Some(zoho.url().as_str()));
    assert_eq!(zoho.counters().token_requests, 1);
    assert_eq!(second.stats().token_requests, 0);

    // Zoho kills it: the first to notice refreshes, the other adopts the replacement.
    first.invalidate(&token);
    let fresh = first.token().await.unwrap();
    second.invalidate(&adopted);
    assert_eq!(
        second.token().await.unwrap().access_token(),
        fresh.access_token()
    );
    assert_eq!(zoho.counters().token_requests, 2);
}

#[tokio::test]
async fn the_budget_counts_token_requests_fleet_wide() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let caches: Vec<_> = (0..3)
        .map(|_| cache_on(&zoho, &refresh_token, store.clone()))
        .collect();
    // Each cache on its own could make 10; together they may make 10.
    let mut refused = None;
    for round in 0..60 {
        let cache = &caches[round % caches.len()];
        match cache.token().await {
            Ok(token) => {
                for cache in &caches {
                    cache.invalidate(&token);
                }
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("the shared budget ran out");
    assert!(
        error.is_rate_limited() && !error.is_throttled(),
        "{error:?}"
    );
    assert!(error.to_string().contains("the fleet"), "{error}");
    assert!(error.retry_after().unwrap() > Duration::from_secs(590));
    assert_eq!(zoho.counters().token_requests, 10);
    let recorded = store.load().await.unwrap().unwrap().token_requests.len();
    assert_eq!(recorded, 10);
}

#[tokio::test]
async fn a_revoked_refresh_token_is_recorded_so_no_process_keeps_calling() {
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("revoked");
    let refresh_token = zoho.mint_refresh_token(&[]);
    zoho.revoke_refresh_token(&refresh_token);
    let first = cache_on(
        &zoho,
        &refresh_token,
        Arc::new(FileStore::new(dir.join("t.json"))),
    );
    assert!(first.token().await.unwrap_err().is_invalid_grant());
    assert_eq!(zoho.counters().token_requests, 1);

    let second = cache_on(
        &zoho,
        &refresh_token,
        Arc::new(FileStore::new(dir.join("t.json"))),
    );
    let error = second.token().await.unwrap_err();
    assert!(
        error.is_invalid_grant() && error.is_permanent(),
        "{error:?}"
    );
    assert_eq!(error.zoho_code(), Some("invalid_code"));
    assert_eq!(
        zoho.counters().token_requests,
        1,
        "the second process did not call Zoho"
    );

    // A new consent replaces it, for everyone sharing the store.
    let renewed = zoho.mint_refresh_token(&[]);
    second.set_refresh_token(renewed.clone());
    second.token().await.unwrap();
    let third = cache_on(
        &zoho,
        &refresh_token,
        Arc::new(FileStore::new(dir.join("t.json"))),
    );
    third.token().await.unwrap();
    assert_eq!(third.refresh_token(), Some(renewed));
    assert_eq!(zoho.counters().token_requests, 2);
}

#[tokio::test]
async fn saves_never_drop_the_refresh_token() {
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("keep");
    let refresh_token = zoho.mint_refresh_token(&[]);
    let store = Arc::new(FileStore::new(dir.join("t.json")));
    let cache = cache_on(&zoho, &refresh_token, store.clone());
    for _ in 0..3 {
        let token = cache.token().await.unwrap();
        cache.invalidate(&token);
    }
    cache.token().await.unwrap();
    let set = store.load().await.unwrap().unwrap();
    assert_eq!(
        set.refresh_token,
        Some(refresh_token),
        "Zoho's refresh answers carry none"
    );
    let access = set.access.unwrap();
    assert_eq!(access.access_token, *cache.cached().unwrap().access_token());
    assert!(access.expires_at > SystemTime::now() + Duration::from_secs(3500));
    assert_eq!(set.token_requests.len(), 4);
}

#[tokio::test]
async fn a_cache_can_start_from_a_store_alone() {
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("from-store");
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("t.json")));
    common::put(&*store, &TokenSet::new(zoho.mint_refresh_token(&[])))
        .await
        .unwrap();
    let cache = TokenCache::from_store(accounts_client(&zoho), store)
        .build()
        .unwrap();
    cache.token().await.unwrap();

    let empty: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("empty.json")));
    let error = TokenCache::from_store(accounts_client(&zoho), empty)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(
        error.is_not_connected() && !error.is_permanent(),
        "{error:?}"
    );
    assert!(error.to_string().contains("no refresh token"), "{error}");
}

#[tokio::test]
async fn a_corrupt_token_file_is_an_error_that_names_it_and_it_is_left_alone() {
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("corrupt");
    let path = dir.join("t.json");
    let garbage = br#"{"version":1,"refresh_token":"1000.half-writ"#;
    std::fs::write(&path, garbage).unwrap();
    let cache = cache_on(
        &zoho,
        &zoho.mint_refresh_token(&[]),
        Arc::new(FileStore::new(&path)),
    );
    let error = cache.token().await.unwrap_err();
    assert!(
        error.is_store() && !error.is_store_unavailable(),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "nothing was overwritten"
    );
    assert_eq!(zoho.counters().token_requests, 0);
}

#[tokio::test]
async fn an_adopted_token_that_died_is_dropped_not_trusted() {
    // Zoho kills T1, A refreshes to T2, Zoho kills T2 too. B adopts the dead T2 on its replay:
    // that must not make B distrust token errors for two minutes while A stores a live T3.
    let zoho = Simulator::start().await.unwrap();
    let refresh = zoho.mint_refresh_token(&[]);
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let a = TokenCache::builder(common::accounts_client(&zoho), refresh.clone())
        .store(store.clone())
        .build()
        .unwrap();
    let b = TokenCache::builder(common::accounts_client(&zoho), refresh.clone())
        .store(store.clone())
        .build()
        .unwrap();
    let t1 = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().access_token(), t1.access_token());
    zoho.invalidate_all_tokens();
    a.invalidate(&t1);
    let t2 = a.token().await.unwrap();
    // T2 dies too: another invalidation, or a 16th token minted elsewhere.
    zoho.invalidate_all_tokens();
    let service_a = common::http_service(&a);
    let service_b = common::http_service(&b);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let status = |service: &common::HttpService| {
        let request = service.clone().oneshot(common::get(&url));
        async move { request.await.unwrap().status() }
    };
    // B: T1 is dead, the store offers T2, the one replay with T2 is refused too.
    assert_eq!(status(&service_b).await, 401);
    // B dropped T2 instead of distrusting token errors for two minutes.
    assert_eq!(status(&service_b).await, 200);
    assert_ne!(b.cached().unwrap().access_token(), t2.access_token());
    assert_eq!(status(&service_a).await, 200);
    assert_eq!(
        a.cached().unwrap().access_token(),
        b.cached().unwrap().access_token()
    );
}
