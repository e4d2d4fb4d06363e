//! Per-request cost of the layer with a cached token, beside a bare service and the floor that
//! `tower_http::auth::AddAuthorization` (a static header) sets.
//!
//! `cargo bench --bench hot_path`

use std::convert::Infallible;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Empty;
use tower::{service_fn, Service};
use tower_http::auth::AddAuthorizationLayer;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::Simulator;
use zoho_auth::{Accounts, TokenCache, ZohoAuthLayer};

const URL: &str = "https://www.zohoapis.com/crm/v8/Leads";

async fn no_op<B>(_: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    Ok(Response::new(Empty::new()))
}

fn request() -> Request<Empty<Bytes>> {
    Request::get(http::Uri::from_static(URL))
        .body(Empty::new())
        .unwrap()
}

/// `poll_ready` then `call`, as tower requires. Every service here is always ready, so one poll
/// with a no-op waker suffices and keeps executor overhead out of the measurement.
fn ready_call<S: Service<R>, R>(service: &mut S, request: R) -> S::Future {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))),
        "always ready"
    );
    service.call(request)
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_zoho, cache) = runtime.block_on(async {
        let zoho = Simulator::start().await.unwrap();
        let accounts = Accounts::custom(&zoho.url()).unwrap();
        let client = AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret()).unwrap();
        let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
        cache.token().await.unwrap();
        (zoho, cache)
    });

    let mut group = c.benchmark_group("hot_path");
    group.measurement_time(Duration::from_secs(3));

    let mut bare = service_fn(no_op::<Empty<Bytes>>);
    group.bench_function("bare service_fn", |b| {
        b.to_async(&runtime).iter(|| {
            let call = ready_call(&mut bare, request());
            async move { call.await.unwrap() }
        })
    });

    let mut floor = tower::ServiceBuilder::new()
        .layer(AddAuthorizationLayer::bearer("static-token").as_sensitive(true))
        .service(service_fn(no_op::<Empty<Bytes>>));
    group.bench_function("tower-http AddAuthorization", |b| {
        b.to_async(&runtime).iter(|| {
            let call = ready_call(&mut floor, request());
            async move { call.await.unwrap() }
        })
    });

    // The token's DC is the simulator's loopback address; allow the benchmark's Zoho host.
    let layer = ZohoAuthLayer::new(cache)
        .allow_host("www.zohoapis.com")
        .unwrap();
    let mut zoho_auth = tower::Layer::layer(
        &layer,
        service_fn(no_op::<zoho_auth::RequestBody<Empty<Bytes>>>),
    );
    group.bench_function("ZohoAuthLayer (cached token)", |b| {
        b.to_async(&runtime).iter(|| {
            let call = ready_call(&mut zoho_auth, request());
            async move { call.await.unwrap() }
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
