//! One shared token source: however many callers, one call to Zoho's token endpoint.

mod common;

use std::time::Duration;

use tower::ServiceExt;
use zoho_auth::sim::{Fault, Simulator};
use zoho_auth::ZohoAuthLayer;

use common::{cache_builder, fast_forward, get, start, wait_until, Recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_across_an_expiry_make_one_token_call() {
    let (zoho, cache) = start(Simulator::builder().token_lifetime(Duration::from_secs(2))).await;
    let first = cache.token().await.unwrap();
    // The replacement lives long: the storm must not outlast it, however slow the machine.
    zoho.set_token_lifetime(Duration::from_secs(3600));
    wait_until(Duration::from_secs(10), "the first token expired", || {
        cache.cached().is_none()
    })
    .await;

    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let tasks: Vec<_> = (0..10_000)
        .map(|_| tokio::spawn(service.clone().oneshot(get(&url))))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), 200);
    }

    assert_eq!(
        zoho.counters().token_requests,
        2,
        "one for the first token, one across the expiry"
    );
    assert_eq!(cache.stats().token_requests, 2);
    let second = cache.cached().expect("a fresh token");
    assert_ne!(second.access_token(), first.access_token());
    let expected = format!("Zoho-oauthtoken {}", second.access_token().expose());
    let seen = inner.seen();
    assert_eq!(seen.len(), 10_000);
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_ref().unwrap() == expected.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_gets_the_one_failure_and_no_retry_storm_follows() {
    let zoho = Simulator::start().await.unwrap();
    // A waiter that first runs after the failure landed meets the back-off, which must not be
    // over by then: at least 30 s.
    let cache = cache_builder(&zoho)
        .backoff(Duration::from_secs(60), Duration::from_secs(600))
        .build()
        .unwrap();
    zoho.inject(Fault::Status(http::StatusCode::SERVICE_UNAVAILABLE), 1);
    let waiters: Vec<_> = (0..1_000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(error.retry_after().is_some());
    }
    assert_eq!(zoho.counters().token_requests, 1);
}

// Current-thread, for `fast_forward`.
#[tokio::test]
async fn the_stale_window_serves_the_current_token_while_one_background_refresh_runs() {
    let zoho = Simulator::builder()
        .token_lifetime(Duration::from_secs(800))
        .start()
        .await
        .unwrap();
    // No margin, a 200 s stale window (+0–50 % jitter): the refresh starts between 500 s and
    // 600 s, and the old token stays usable until 800 s, which leaves the burst 190 s.
    let cache = cache_builder(&zoho)
        .expiry_margin(Duration::ZERO)
        .refresh_ahead(Duration::from_secs(200))
        .build()
        .unwrap();
    let old = cache.token().await.unwrap();
    let old_header = format!("Zoho-oauthtoken {}", old.access_token().expose());
    fast_forward(Duration::from_secs(610)).await;

    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let burst: Vec<_> = (0..500)
        .map(|_| tokio::spawn(service.clone().oneshot(get(&url))))
        .collect();
    for response in burst {
        assert_eq!(response.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        inner.seen()[0].authorization.as_ref().unwrap(),
        old_header.as_str(),
        "the first request in the stale window does not wait: it carries the current token"
    );
    wait_until(
        Duration::from_secs(5),
        "the background refresh landed",
        || {
            cache
                .cached()
                .is_some_and(|t| t.access_token() != old.access_token())
        },
    )
    .await;
    assert_eq!(
        zoho.counters().token_requests,
        2,
        "exactly one background refresh"
    );
    assert!(zoho.is_access_token_live(old.access_token().expose()));
}

#[tokio::test]
async fn a_token_counts_as_expired_a_margin_before_zoho_says() {
    let (zoho, cache) = start(Simulator::builder().token_lifetime(Duration::from_secs(5))).await;
    let token = cache.token().await.unwrap();
    // The margin is a tenth of a 5 s lifetime: the cache gives the token up at 4.5 s. The clock is
    // paused while nothing is in flight, so it moves only by the 20 ms polls below, whatever the
    // machine's load: the check sees Zoho's side at 4.52 s at the latest.
    tokio::time::pause();
    wait_until(
        Duration::from_secs(10),
        "the cache gave the token up",
        || cache.cached().is_none(),
    )
    .await;
    assert!(
        zoho.is_access_token_live(token.access_token().expose()),
        "Zoho would still accept it: the cache stopped using it early"
    );
    tokio::time::resume();
    let next = cache.token().await.unwrap();
    assert_ne!(next.access_token(), token.access_token());
}

#[tokio::test]
async fn a_short_lived_token_does_not_refresh_in_a_loop() {
    let (zoho, cache) = start(Simulator::builder().token_lifetime(Duration::from_secs(2))).await;
    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    // Requests for 3 s against 2 s tokens: each token is refreshed ahead once, never more.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let response = service.clone().oneshot(get(&url)).await.unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let made = zoho.counters().token_requests;
    assert!(
        (2..=3).contains(&made),
        "{made} token requests for 3 s of 2 s tokens"
    );
}

#[tokio::test]
async fn dropping_a_waiting_caller_does_not_cancel_the_refresh_for_others() {
    // Zoho holds the refresh for 5 s: aborting and joining take milliseconds, so they certainly
    // happen while it is in flight.
    let (zoho, cache) = start(Simulator::builder().token_latency(Duration::from_secs(5))).await;
    let impatient = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    wait_until(Duration::from_secs(5), "the refresh reached Zoho", || {
        zoho.counters().token_requests == 1
    })
    .await;
    impatient.abort();
    assert!(cache.cached().is_none(), "the refresh is still in flight");
    let token = cache.token().await.unwrap();
    assert!(zoho.is_access_token_live(token.access_token().expose()));
    assert_eq!(
        zoho.counters().token_requests,
        1,
        "the second caller joined the first refresh"
    );
}
