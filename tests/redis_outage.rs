//! A Redis token store that is down — from the start, or killed mid-run — costs the fleet its
//! coordination, never its requests: the cache warns, keeps serving a valid token, refreshes on
//! its own, and uses Redis again once it answers.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use tower::ServiceExt;
use zoho_auth::sim::Simulator;
use zoho_auth::TokenCache;

use common::{accounts_client, get, http_service, Logs};
use redis_server::RedisServer;

type Service = zoho_auth::ZohoAuth<common::HttpClient<http_body_util::Empty<bytes::Bytes>>>;

async fn all_ok(service: &Service, url: &str, count: usize) {
    for _ in 0..count {
        let response = service.clone().oneshot(get(url)).await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn with_redis_down_from_the_start_requests_succeed_and_redis_is_used_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.kill();
    let zoho = Simulator::start().await.unwrap();
    let store = zoho_auth::store::open(&format!("{}?prefix=down-at-start", redis.url())).unwrap();
    let cache = TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]))
        .store(store.clone())
        .build()
        .unwrap();
    let service: Service = http_service(&cache);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);

    let started = Instant::now();
    all_ok(&service, &url, 20).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no request waited on the dead Redis for long"
    );
    assert_eq!(zoho.counters().token_requests, 1);
    let logs = logs.text();
    assert!(
        logs.contains("token store unavailable"),
        "a clear warning: {logs}"
    );

    // Redis comes up: the next refresh goes through it again.
    redis.restart();
    zoho.invalidate_all_tokens();
    all_ok(&service, &url, 1).await;
    let saved = store
        .load()
        .await
        .unwrap()
        .expect("the refresh was saved in Redis");
    assert_eq!(
        saved.access.unwrap().access_token,
        *cache.cached().unwrap().access_token()
    );
    assert_eq!(saved.refresh_token, cache.refresh_token());
}

#[tokio::test]
async fn with_redis_killed_mid_run_requests_keep_succeeding() {
    let mut redis = RedisServer::start();
    let zoho = Simulator::start().await.unwrap();
    let store = zoho_auth::store::open(&format!("{}?prefix=killed", redis.url())).unwrap();
    let cache = TokenCache::builder(accounts_client(&zoho), zoho.mint_refresh_token(&[]))
        .store(store.clone())
        .build()
        .unwrap();
    let service: Service = http_service(&cache);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    all_ok(&service, &url, 5).await;
    assert!(store.load().await.unwrap().is_some());

    redis.kill();
    // The valid token keeps flowing: nothing on the request path touches Redis.
    all_ok(&service, &url, 100).await;
    assert_eq!(zoho.counters().token_requests, 1);

    // The token dies while Redis is down: the cache refreshes on its own and the request is replayed.
    zoho.invalidate_all_tokens();
    let started = Instant::now();
    all_ok(&service, &url, 5).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(zoho.counters().token_requests, 2);
    assert_eq!(cache.stats().replays, 1);

    // Redis is back (empty: it saved nothing): the store is used again, and seeded.
    redis.restart();
    zoho.invalidate_all_tokens();
    all_ok(&service, &url, 1).await;
    let saved = store.load().await.unwrap().expect("reconnected and saved");
    assert_eq!(saved.refresh_token, cache.refresh_token());
    assert_eq!(zoho.counters().token_requests, 3);
}

/// A service whose refresh token lives only in Redis, started while Redis is down: requests fail
/// as unavailable, never as a permanent "no refresh token", and the service recovers by itself
/// within seconds of Redis coming back, without a restart.
#[tokio::test]
async fn a_store_only_cache_started_while_redis_is_down_recovers_once_it_is_up() {
    let mut redis = RedisServer::start();
    let zoho = Simulator::start().await.unwrap();
    let spec = format!("{}?prefix=store-only", redis.url());
    let refresh_token = zoho.mint_refresh_token(&[]);
    common::put(
        &*zoho_auth::store::open(&spec).unwrap(),
        &zoho_auth::store::TokenSet::new(refresh_token.clone()),
    )
    .await
    .unwrap();
    redis.kill();

    let cache = TokenCache::from_store(
        accounts_client(&zoho),
        zoho_auth::store::open(&spec).unwrap(),
    )
    .build()
    .unwrap();
    let error = cache.token().await.unwrap_err();
    assert!(
        error.is_store_unavailable() && !error.is_permanent(),
        "{error:?}"
    );

    redis.restart();
    // The restarted Redis kept nothing: fill it again, as a login would.
    common::put(
        &*zoho_auth::store::open(&spec).unwrap(),
        &zoho_auth::store::TokenSet::new(refresh_token.clone()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        match cache.token().await {
            Ok(token) => break token,
            Err(error) => {
                assert!(Instant::now() < deadline, "never recovered: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(zoho.is_access_token_live(token.access_token().expose()));
    assert_eq!(cache.refresh_token(), Some(refresh_token));
}
