//! Failure semantics of the token cache: what a failed refresh does to callers, to the token
//! they already have, and to Zoho's limits.

mod common;

use std::time::{Duration, Instant};

use http::StatusCode;
use tower::ServiceExt;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{Fault, Language, Simulator};
use zoho_auth::{Accounts, ClientId, RefreshToken, TokenCache, ZohoAuthLayer};

use common::{
    accounts_client, cache_builder, fast_forward, get, start, wait_until, Logs, Recorder,
};

#[tokio::test]
async fn a_failed_background_refresh_keeps_serving_the_still_valid_token() {
    let zoho = Simulator::builder()
        .token_lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let cache = cache_builder(&zoho)
        .expiry_margin(Duration::ZERO)
        .refresh_ahead(Duration::from_secs(200))
        .backoff(Duration::from_secs(300), Duration::from_secs(600))
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    // The stale window is capped at a quarter of the lifetime (150 s, plus up to 50 % jitter), so
    // it starts between 375 s and 450 s; the token is usable until 600 s, which leaves the rest of
    // the test 140 s of real time.
    fast_forward(Duration::from_secs(460)).await;
    zoho.inject(Fault::Status(StatusCode::BAD_GATEWAY), 1);

    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let url = format!("{}/crm/v8/Leads", zoho.url());
    assert_eq!(
        service.clone().oneshot(get(&url)).await.unwrap().status(),
        200
    );
    wait_until(
        Duration::from_secs(5),
        "the background refresh failed",
        || cache.stats().failures == 1,
    )
    .await;
    for _ in 0..20 {
        assert_eq!(
            service.clone().oneshot(get(&url)).await.unwrap().status(),
            200
        );
    }
    let header = format!("Zoho-oauthtoken {}", token.access_token().expose());
    assert!(inner
        .seen()
        .iter()
        .all(|s| s.authorization.as_ref().unwrap() == header.as_str()));
    assert_eq!(cache.cached().unwrap().access_token(), token.access_token());
    assert_eq!(
        zoho.counters().token_requests,
        2,
        "the back-off holds further attempts"
    );
}

#[tokio::test]
async fn transient_failures_back_off_then_recover() {
    let zoho = Simulator::start().await.unwrap();
    // A back-off of at least 30 s: the call "during" it cannot come too late on a loaded machine.
    let cache = cache_builder(&zoho)
        .backoff(Duration::from_secs(60), Duration::from_secs(600))
        .build()
        .unwrap();
    zoho.inject(Fault::Status(StatusCode::INTERNAL_SERVER_ERROR), 1);
    let first = cache.token().await.unwrap_err();
    assert!(first.is_transient(), "{first:?}");
    let wait = first.retry_after().expect("a back-off");
    assert!(
        wait >= Duration::from_secs(30) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );

    let during = cache.token().await.unwrap_err();
    assert!(during.is_transient() && during.retry_after().unwrap() <= wait);
    assert_eq!(
        zoho.counters().token_requests,
        1,
        "no call during the back-off"
    );

    fast_forward(wait + Duration::from_secs(1)).await;
    cache.token().await.unwrap();
    assert_eq!(zoho.counters().token_requests, 2);
    assert_eq!(cache.stats().failures, 1);
}

#[tokio::test]
async fn consecutive_transient_failures_back_off_longer() {
    let zoho = Simulator::start().await.unwrap();
    let cache = cache_builder(&zoho)
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .build()
        .unwrap();
    zoho.inject(Fault::Html, 3);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let error = cache.token().await.unwrap_err();
        let wait = error.retry_after().unwrap();
        waits.push(wait);
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
    }
    // 100 ms, 200 ms, 400 ms, each with jitter into [50 %, 100 %].
    assert!(waits[2] >= Duration::from_millis(200), "{waits:?}");
    assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
    cache.token().await.unwrap();
}

#[tokio::test]
async fn a_revoked_refresh_token_is_a_permanent_error_and_is_not_retried() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    zoho.revoke_refresh_token(&refresh_token);
    let cache = TokenCache::new(accounts_client(&zoho), refresh_token);
    for _ in 0..5 {
        let error = cache.token().await.unwrap_err();
        assert!(
            error.is_permanent() && error.is_invalid_grant(),
            "{error:?}"
        );
        assert_eq!(error.zoho_code(), Some("invalid_code"));
    }
    assert_eq!(zoho.counters().token_requests, 1);

    // New consent, new refresh token: the cache recovers without a restart.
    cache.set_refresh_token(zoho.mint_refresh_token(&[]));
    cache.token().await.unwrap();
    assert_eq!(zoho.counters().token_requests, 2);
}

#[tokio::test]
async fn a_wrong_client_is_a_permanent_typed_error() {
    let zoho = Simulator::start().await.unwrap();
    let accounts = Accounts::custom(&zoho.url()).unwrap();
    let client = AccountsClient::new(
        accounts,
        ClientId::new("1000.UNKNOWN"),
        zoho.client_secret(),
    )
    .unwrap();
    let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
    let error = cache.token().await.unwrap_err();
    assert!(
        error.is_invalid_client() && error.is_permanent(),
        "{error:?}"
    );
    cache.token().await.unwrap_err();
    assert_eq!(zoho.counters().token_requests, 1);
}

#[tokio::test]
async fn throttling_in_any_language_at_200_or_400_backs_off_for_minutes() {
    for (status, language) in [
        (StatusCode::OK, Language::English),
        (StatusCode::BAD_REQUEST, Language::Chinese),
    ] {
        let (zoho, cache) = start(
            Simulator::builder()
                .throttle_status(status)
                .throttle_language(language),
        )
        .await;
        zoho.inject(Fault::Throttle, 1);
        let error = cache.token().await.unwrap_err();
        assert!(
            error.is_throttled() && error.is_rate_limited() && !error.is_permanent(),
            "{error:?}"
        );
        let wait = error.retry_after().unwrap();
        assert!(wait >= Duration::from_secs(240), "{wait:?}");
        let again = cache.token().await.unwrap_err();
        assert!(again.is_throttled());
        assert_eq!(
            zoho.counters().token_requests,
            1,
            "{status} {language:?}: no call while backing off"
        );
    }
}

#[tokio::test]
async fn the_local_budget_keeps_the_process_under_zohos_limit() {
    let (zoho, cache) = start(Simulator::builder()).await;
    // Zoho allows 10 token requests per 10 minutes; force 15 refreshes' worth of invalidations.
    let mut refused = None;
    for _ in 0..15 {
        match cache.token().await {
            Ok(token) => cache.invalidate(&token),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("the budget ran out");
    assert!(
        error.is_rate_limited() && !error.is_throttled(),
        "{error:?}"
    );
    let wait = error.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(590) && wait <= Duration::from_secs(600),
        "{wait:?}"
    );
    assert_eq!(zoho.counters().token_requests, 10);
    assert_eq!(
        zoho.counters().throttled,
        0,
        "Zoho never had to throttle us"
    );
    assert_eq!(cache.stats().rate_limited, 1);
}

#[tokio::test]
async fn the_budget_is_configurable_and_fails_fast() {
    let zoho = Simulator::start().await.unwrap();
    let cache = cache_builder(&zoho)
        .budget(2, Duration::from_secs(60))
        .build()
        .unwrap();
    for _ in 0..2 {
        let token = cache.token().await.unwrap();
        cache.invalidate(&token);
    }
    let started = Instant::now();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
    assert!(error.retry_after().unwrap() <= Duration::from_secs(60));
    // Waiting for the slot would take `max_wait` (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast, without waiting"
    );
    assert_eq!(zoho.counters().token_requests, 2);
}

#[tokio::test]
async fn no_caller_waits_past_max_wait() {
    let zoho = Simulator::start().await.unwrap();
    let cache = cache_builder(&zoho)
        .max_wait(Duration::from_millis(300))
        .build()
        .unwrap();
    // Unbounded, the wait would last until the accounts client's timeout (20 s).
    zoho.inject(Fault::Slow(Duration::from_secs(60)), 1);
    let started = Instant::now();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by max_wait, not the slow server"
    );
}

#[tokio::test]
async fn the_accounts_call_itself_has_a_timeout() {
    let zoho = Simulator::start().await.unwrap();
    let accounts = Accounts::custom(&zoho.url()).unwrap();
    let client = AccountsClient::with_timeout(
        accounts,
        zoho.client_id(),
        zoho.client_secret(),
        Duration::from_millis(300),
    )
    .unwrap();
    let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
    // Without its timeout, the call would last until the cache's `max_wait` (30 s).
    zoho.inject(Fault::Slow(Duration::from_secs(60)), 1);
    let started = Instant::now();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_refresh_answer_without_refresh_token_keeps_the_old_one() {
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    let cache = TokenCache::new(accounts_client(&zoho), refresh_token.clone());
    let token = cache.token().await.unwrap();
    cache.invalidate(&token);
    cache.token().await.unwrap();
    assert_eq!(cache.refresh_token(), Some(refresh_token));
    assert_eq!(zoho.counters().token_requests, 2);
}

#[tokio::test]
async fn a_legacy_millisecond_expiry_is_an_hour_not_41_days() {
    let (zoho, cache) = start(Simulator::builder().legacy_expires(true)).await;
    let token = cache.token().await.unwrap();
    assert!(
        token.expires_in() <= Duration::from_secs(3600),
        "{:?}",
        token.expires_in()
    );
    assert!(token.expires_in() > Duration::from_secs(3500));
    drop(zoho);
}

#[tokio::test]
async fn a_revoked_token_mid_run_surfaces_as_a_typed_error_through_the_layer() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let service = common::http_service(&cache);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    assert_eq!(
        service.clone().oneshot(get(&url)).await.unwrap().status(),
        200
    );
    zoho.revoke_refresh_token(&cache.refresh_token().unwrap());
    let error = service.clone().oneshot(get(&url)).await.unwrap_err();
    let error = error
        .downcast_ref::<zoho_auth::Error>()
        .expect("a zoho_auth::Error");
    assert!(error.is_invalid_grant(), "{error:?}");
}

#[tokio::test]
async fn refresh_failures_are_traced_without_their_secrets() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    zoho.inject(Fault::Error("invalid_client".into()), 1);
    cache.token().await.unwrap_err();
    let text = logs.text();
    assert!(text.contains("requesting a Zoho access token"), "{text}");
    assert!(text.contains("Zoho token refresh failed"), "{text}");
    assert!(text.contains("invalid_client"), "{text}");
    let refresh_token: RefreshToken = cache.refresh_token().unwrap();
    assert!(!text.contains(refresh_token.expose()));
    assert!(!text.contains(zoho.client_secret().expose()));
}
