//! Many connections: what choosing a request's connection costs, and a cold start of many.
//!
//! - `selection`: one request at a time on a current-thread runtime through a no-op inner
//!   service: `ZohoAuthLayer::new(cache)` (one account, the hot path of `hot_path`) beside
//!   `ZohoAuthLayer::connections(..)` with 100,000 resident connections, each holding a valid
//!   token, the requests naming them in turn by a `ConnectionId` in their extensions. The
//!   requests are built outside the timed part, extension included, so the difference is the
//!   lookup of the connection's cache, what carrying it costs, and freeing the request's
//!   extension map. `one_connection_with_id` sends requests carrying an id through the single
//!   layer, which ignores it: that last part alone. `among_100000` names a different connection
//!   each time, whose state is then cold in the CPU's caches; `one_of_100000` names the same one,
//!   as a burst from one tenant does.
//! - `cold_start`: 10,000 connections without a token get one request each at once; the token
//!   endpoint (the simulator) takes 50 ms; at most 32 token requests are in flight
//!   (`max_token_requests_in_flight`, the default). The time is from the first spawn to the last
//!   request served; each run prints the most token requests the simulator saw in flight at
//!   once and asserts every request was served. About 16 s a run: 10 samples.
//!
//! `cargo bench --bench connections`; `ZOHO_BENCH_COUNT=<selection variant>:<n>` counts instead
//! (`common::count_mode`, `benches/README.md`).

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::runtime::Runtime;
use tower::{service_fn, Layer, Service, ServiceExt};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections, StoredAccess};
use zoho_auth::{
    AccessToken, ConnectionId, Connections, RefreshToken, RequestBody, ResponseBody, ZohoAuthLayer,
};

const RESIDENT: usize = 100_000;
const COLD: usize = 10_000;
const URL: &str = "https://www.zohoapis.eu/crm/v8/Leads";

async fn no_op<B>(request: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let mut response = Response::new(Empty::new());
    if !request.headers().contains_key(http::header::AUTHORIZATION) {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    }
    Ok(response)
}

fn ids(count: usize) -> Vec<ConnectionId> {
    (0..count)
        .map(|n| ConnectionId::new(format!("tenant-{n:06}")).unwrap())
        .collect()
}

/// A store whose connections each hold a refresh token and, with `access`, a valid token.
async fn store(
    ids: &[ConnectionId],
    refresh: impl Fn(usize) -> RefreshToken,
    access: bool,
) -> Arc<MemoryConnections> {
    let store = Arc::new(MemoryConnections::new());
    let now = SystemTime::now();
    for (n, id) in ids.iter().enumerate() {
        store
            .connection(id)
            .update(None, |set| {
                set.refresh_token = Some(refresh(n));
                set.access = access.then(|| {
                    StoredAccess::new(
                        AccessToken::new(format!("1000.{n:032x}.access")),
                        now,
                        now + Duration::from_secs(3600),
                        Some("https://www.zohoapis.eu".to_owned()),
                        vec!["ZohoCRM.modules.ALL".to_owned()],
                    )
                });
                Ok(())
            })
            .await
            .unwrap();
    }
    store
}

/// A request to the product API, naming `connection` in its extensions if given.
fn request(connection: Option<ConnectionId>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(URL).body(Empty::<Bytes>::new()).unwrap();
    if let Some(id) = connection {
        request.extensions_mut().insert(id);
    }
    request
}

async fn send<S>(service: &S, request: Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<ResponseBody<Empty<Bytes>>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Requests through `service`, each built (outside the timed part) for the connection
/// `connection` names, if any.
fn bench_requests<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    service: &S,
    connection: &mut dyn FnMut() -> Option<ConnectionId>,
) where
    S: Service<Request<Empty<Bytes>>, Response = Response<ResponseBody<Empty<Bytes>>>> + Clone,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.to_async(runtime).iter_batched(
            || request(connection()),
            |request| send(service, request),
            BatchSize::SmallInput,
        )
    });
}

/// The counting mode's `n` requests, in a function of their own so that callgrind can count them
/// alone (`--toggle-collect='*count_requests*'`): the set-up of 100,000 connections before them
/// varies between runs (random hash seeds) by more than a request costs.
#[inline(never)]
fn count_requests<S>(
    runtime: &Runtime,
    service: &S,
    connection: &mut dyn FnMut() -> Option<ConnectionId>,
    n: u64,
) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<ResponseBody<Empty<Bytes>>>> + Clone,
    S::Error: std::fmt::Debug,
{
    send_requests(runtime, service, connection, n)
}

/// `n` requests built and sent one after another; their time.
fn send_requests<S>(
    runtime: &Runtime,
    service: &S,
    connection: &mut dyn FnMut() -> Option<ConnectionId>,
    n: u64,
) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<ResponseBody<Empty<Bytes>>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..n {
            send(service, request(connection())).await;
        }
    });
    started.elapsed()
}

fn selection(c: &mut Criterion) {
    let runtime = common::current_thread();
    let (zoho, cache, _) = common::cached_token(&runtime);
    let ids = ids(RESIDENT);
    let connections = runtime.block_on(async {
        let store = store(
            &ids,
            |n| RefreshToken::new(format!("1000.{n}.refresh")),
            true,
        )
        .await;
        let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
            .build()
            .unwrap();
        for id in &ids {
            connections.token(id).await.unwrap();
        }
        connections
    });
    let one = ZohoAuthLayer::new(cache)
        .allow_host("www.zohoapis.eu")
        .unwrap()
        .layer(service_fn(no_op::<RequestBody<Empty<Bytes>>>));
    let many = ZohoAuthLayer::connections(connections)
        .layer(service_fn(no_op::<RequestBody<Empty<Bytes>>>));

    let hot = &ids[RESIDENT / 2];
    let mut next = 0;
    type Connection<'a> = Box<dyn FnMut() -> Option<ConnectionId> + 'a>;
    let mut variants: [(&str, _, Connection<'_>); 4] = [
        ("one_connection", &one, Box::new(|| None)),
        // The single layer ignores the id: what a request that names its connection in its
        // extensions costs before any selection (the map's allocation is freed in the timed part).
        (
            "one_connection_with_id",
            &one,
            Box::new(|| Some(hot.clone())),
        ),
        (
            "among_100000",
            &many,
            Box::new(|| {
                next = (next + 7919) % RESIDENT;
                Some(ids[next].clone())
            }),
        ),
        // The same lookups with one connection's state hot in the CPU's caches, as for a tenant
        // sending a burst: what the lookup itself costs, without the cache misses of reaching a
        // different connection's state in memory each time.
        ("one_of_100000", &many, Box::new(|| Some(hot.clone()))),
    ];

    if let Some((name, n)) = common::count_mode() {
        let (_, service, connection) = variants
            .iter_mut()
            .find(|(variant, ..)| *variant == name)
            .unwrap_or_else(|| panic!("ZOHO_BENCH_COUNT: no variant {name:?}"));
        send_requests(&runtime, *service, connection, common::COUNT_WARM_UP);
        let time = count_requests(&runtime, *service, connection, n);
        eprintln!("{name}: {n} requests in {time:?}");
        return;
    }
    let mut group = c.benchmark_group("selection");
    for (name, service, connection) in &mut variants {
        bench_requests(&mut group, &runtime, name, *service, connection);
    }
    group.finish();
}

fn cold_start(c: &mut Criterion) {
    if common::count_mode().is_some() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = ids(COLD);
    let zoho = runtime.block_on(async {
        Simulator::builder()
            .token_latency(Duration::from_millis(50))
            .rate_limit(1_000_000, Duration::from_secs(600))
            .start()
            .await
            .unwrap()
    });
    let refresh: Vec<_> = (0..COLD).map(|_| zoho.mint_refresh_token(&[])).collect();
    let mut group = c.benchmark_group("cold_start");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(60));
    group.bench_function("10000_connections", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                total += runtime.block_on(async {
                    let store = store(&ids, |n| refresh[n].clone(), false).await;
                    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
                        .build()
                        .unwrap();
                    let service = ZohoAuthLayer::connections(connections)
                        .layer(service_fn(no_op::<RequestBody<Empty<Bytes>>>));
                    let url = format!("{}/crm/v8/Leads", zoho.url());
                    let started = Instant::now();
                    let calls: Vec<_> = ids
                        .iter()
                        .map(|id| {
                            let service = service.clone();
                            let mut request = Request::get(&url).body(Empty::<Bytes>::new()).unwrap();
                            request.extensions_mut().insert(id.clone());
                            tokio::spawn(async move { service.oneshot(request).await.unwrap().status() })
                        })
                        .collect();
                    for call in calls {
                        assert_eq!(call.await.unwrap(), StatusCode::OK);
                    }
                    let elapsed = started.elapsed();
                    eprintln!(
                        "cold start: {COLD} connections served in {:.2} s; at most {} token requests in flight",
                        elapsed.as_secs_f64(),
                        zoho.max_token_requests_in_flight()
                    );
                    elapsed
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(connections, selection, cold_start);
criterion_main!(connections);
