//! End to end: requests per second through a hyper-util client to a hyper server on loopback,
//! with no authentication, with `tower_http::auth::AddAuthorization` (the floor) and with
//! `ZohoAuthLayer` (cached token).
//!
//! The server is a minimal hyper HTTP/1.1 server written here, answering `200` with an empty
//! body, on its own thread and current-thread runtime, so that it costs as little as possible
//! and the client side — where the layer runs — is what the figures measure. (The simulator's
//! product API checks the token under a lock and writes a JSON echo per request: a slower server
//! would only dilute the layer's share, and `AddAuthorization` would need a live token.)
//!
//! The client runs on a current-thread runtime: `CONNECTIONS` tasks (1, then 16), each sending
//! requests one after another on its own keep-alive connection from the client's pool and reading
//! each response to the end. Criterion reports time per request and requests/s.
//!
//! `cargo bench --bench end_to_end`

mod common;
#[path = "common/e2e.rs"]
mod e2e;

use e2e::{start_server, AUTHORIZED};

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use zoho_auth::{RequestBody, ZohoAuthLayer};

/// Concurrent client tasks (and so keep-alive connections).
const CONNECTIONS: [u64; 2] = [1, 16];

fn client<B>() -> Client<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// `connections` tasks share `iters` requests through clones of `service`; the wall time is
/// scaled to exactly `iters` requests.
async fn drive<S, B>(service: &S, uri: &Uri, connections: u64, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + 'static,
    S::Error: std::fmt::Debug,
    B: Body + 'static,
    B::Error: std::fmt::Debug,
{
    let per_task = iters.div_ceil(connections);
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..connections {
        let mut service = service.clone();
        let uri = uri.clone();
        local.spawn_local(async move {
            for _ in 0..per_task {
                let request = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let response = service.ready().await.unwrap().call(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
            }
        });
    }
    local.await;
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * connections) as f64)
}

fn end_to_end(c: &mut Criterion) {
    let addr = start_server();
    let uri: Uri = format!("http://{addr}/crm/v8/Leads").parse().unwrap();

    let runtime = common::current_thread();
    let (_zoho, cache, token) = common::cached_token(&runtime);

    let bare = client::<Empty<Bytes>>();
    let floor = AddAuthorizationLayer::bearer(&token)
        .as_sensitive(true)
        .layer(client::<Empty<Bytes>>());
    // The server is not the token's api_domain (the simulator is): allow it explicitly. Plain
    // http is allowed on loopback.
    let zoho_auth = ZohoAuthLayer::new(cache)
        .allow_host(&addr.to_string())
        .unwrap()
        .layer(client::<RequestBody<Empty<Bytes>>>());

    runtime.block_on(async {
        let request = || Request::get(uri.clone()).body(Empty::new()).unwrap();
        let carried = |headers: &http::HeaderMap| headers.contains_key(AUTHORIZED);
        let response = bare.clone().oneshot(request()).await.unwrap();
        assert!(!carried(response.headers()));
        let response = floor.clone().oneshot(request()).await.unwrap();
        assert!(
            carried(response.headers()),
            "AddAuthorization attached the header"
        );
        let response = zoho_auth.clone().oneshot(request()).await.unwrap();
        assert!(
            carried(response.headers()),
            "ZohoAuthLayer attached the token"
        );
    });

    // `common::count_mode`, over 16 connections: counts client and server together.
    if let Some((name, n)) = common::count_mode() {
        let name = name.as_str();
        let (bare, floor, zoho_auth, uri) = (&bare, &floor, &zoho_auth, &uri);
        runtime.block_on(e2e::count(name, n, |n| async move {
            match name {
                "bare" => drive(bare, uri, 16, n).await,
                "add_authorization" => drive(floor, uri, 16, n).await,
                "zoho_auth" => drive(zoho_auth, uri, 16, n).await,
                _ => panic!("ZOHO_BENCH_COUNT: no variant {name:?}"),
            }
        }));
        return;
    }

    let mut group = c.benchmark_group("end_to_end");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for connections in CONNECTIONS {
        group.bench_function(BenchmarkId::new("bare", connections), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| drive(&bare, &uri, connections, iters))
        });
        group.bench_function(BenchmarkId::new("add_authorization", connections), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| drive(&floor, &uri, connections, iters))
        });
        group.bench_function(BenchmarkId::new("zoho_auth", connections), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| drive(&zoho_auth, &uri, connections, iters))
        });
    }
    group.finish();

    runtime.block_on(e2e::interleaved(
        "end_to_end, 16 connections",
        &["bare", "add_authorization", "zoho_auth"],
        5_000,
        |_| 1,
        |i, n| {
            let (bare, floor, zoho_auth, uri) = (&bare, &floor, &zoho_auth, &uri);
            async move {
                match i {
                    0 => drive(bare, uri, 16, n).await,
                    1 => drive(floor, uri, 16, n).await,
                    _ => drive(zoho_auth, uri, 16, n).await,
                }
            }
        },
    ));
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
