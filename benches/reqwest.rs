//! End to end through reqwest: requests per second to the minimal hyper server on loopback (the
//! same as `end_to_end`'s), through `ZohoReqwest` (the layer as a tower service of reqwest
//! requests) and through `ZohoAuthMiddleware` in a `reqwest_middleware` chain, each beside the
//! same reqwest stack with a static `Authorization` header: `reqwest::Client` with it as a
//! default header, and a `ClientWithMiddleware` whose one middleware sets it.
//!
//! 16 tasks on a current-thread runtime, each with its own clone of the client (or service, or
//! chain), send requests one after another and read each response to the end. Criterion
//! measures each variant, then `e2e::interleaved` runs each front end in back-to-back pairs with
//! its floor and prints the ratios. A second, identical static-header client
//! (`reqwest_static_header_control`) is paired with the floor too: its ratio shows what the
//! harness itself reads as a difference. `tower_static_header` (a tower service that sets the
//! header, called as `ZohoReqwest` is: `ready`, then `call`) shows what calling the client as a
//! tower service costs by itself.
//!
//! For counting instructions without the network, four more variants send one request at a
//! time to a stub that answers at once: a client stub (`ZOHO_BENCH_COUNT=stub_static_header:<n>`
//! and `stub_zoho_reqwest:<n>`) and a chain ending in a middleware that answers
//! (`stub_middleware_static_header:<n>` and `stub_zoho_auth_middleware:<n>`): the front end's
//! own cost, which end to end is hidden in the interleaving of 16 connections and the server
//! thread (`benches/README.md`, §7). With the prefix `stub16_` instead of `stub_`, 16 tasks
//! do the same and each stub answer waits until the other tasks have sent theirs, so that 16
//! requests are in flight as end to end (what the allocator sees then differs), and the count
//! is still exactly repeatable.
//!
//! `cargo bench --bench reqwest`

mod common;
#[path = "common/e2e.rs"]
mod e2e;

use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, HeaderValue};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tower::{Service, ServiceExt};
use zoho_auth::reqwest::{ZohoAuthMiddleware, ZohoReqwest};
use zoho_auth::ZohoAuthLayer;

use e2e::{start_server, AUTHORIZED};

const CONNECTIONS: u64 = 16;

/// The floor for the middleware: a chain whose one middleware sets the header.
struct StaticHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticHeader {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        request.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(request, extensions).await
    }
}

/// A client that answers every request, as the stub variants' transport: at once, or after
/// letting the other tasks run first (the `stub16_` variants).
type Stub = tower::util::ServiceFn<fn(reqwest::Request) -> Answer>;

fn stub() -> Stub {
    tower::service_fn(|_| Answer { yielded: true })
}

fn stub_yielding() -> Stub {
    tower::service_fn(|_| Answer { yielded: false })
}

/// The stub's answer: an empty `200`, once it has yielded if it is to.
struct Answer {
    yielded: bool,
}

impl Future for Answer {
    type Output = Result<reqwest::Response, std::convert::Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if !std::mem::replace(&mut self.yielded, true) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(reqwest::Response::from(http::Response::new(
            reqwest::Body::from(""),
        ))))
    }
}

/// The end of the stub variants' chains: answers every request as `stub` (or, `true`,
/// `stub_yielding`) does.
struct StubAnswer(bool);

#[async_trait::async_trait]
impl Middleware for StubAnswer {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(Answer { yielded: !self.0 }
            .await
            .unwrap_or_else(|never| match never {}))
    }
}

/// `n` requests one at a time through the chain `client` ends in `StubAnswer`.
async fn stub_chain_requests(client: ClientWithMiddleware, url: String, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let response = client.get(&url).send().await.unwrap();
        std::hint::black_box(response);
    }
    start.elapsed()
}

/// `n` requests shared by `tasks` tasks on a `LocalSet`, each running `task`.
async fn in_tasks<F>(tasks: u64, n: u64, task: impl Fn(u64) -> F) -> Duration
where
    F: Future<Output = Duration> + 'static,
{
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..tasks {
        local.spawn_local(task(n.div_ceil(tasks)));
    }
    local.await;
    start.elapsed()
}

/// `n` requests one at a time through `service`, each built as `client` builds it and given
/// the static header when `header` is set.
async fn stub_requests<S>(
    mut service: S,
    client: reqwest::Client,
    url: String,
    header: Option<HeaderValue>,
    n: u64,
) -> Duration
where
    S: Service<reqwest::Request, Response = reqwest::Response>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..n {
        let mut request = client.get(&url).build().unwrap();
        if let Some(header) = &header {
            request.headers_mut().insert(AUTHORIZATION, header.clone());
        }
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        std::hint::black_box(response);
    }
    start.elapsed()
}

/// A tower service over a `reqwest::Client` that sets the header, called as `ZohoReqwest` is:
/// what the tower calling pattern itself costs beside `Client::send`.
#[derive(Clone)]
struct HeaderService(reqwest::Client, HeaderValue);

impl Service<reqwest::Request> for HeaderService {
    type Response = reqwest::Response;
    type Error = reqwest::Error;
    type Future = <reqwest::Client as Service<reqwest::Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), reqwest::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: reqwest::Request) -> Self::Future {
        request.headers_mut().insert(AUTHORIZATION, self.1.clone());
        self.0.call(request)
    }
}

/// A request built by `client`, sent through `service` once it is ready.
async fn through<S>(service: &mut S, client: &reqwest::Client, url: &str) -> reqwest::Response
where
    S: Service<reqwest::Request, Response = reqwest::Response>,
    S::Error: std::fmt::Debug,
{
    let request = client.get(url).build().unwrap();
    service.ready().await.unwrap().call(request).await.unwrap()
}

/// The variants, a row each in the printed table.
#[derive(Clone)]
enum Variant {
    /// `reqwest::Client` with the header as a default header.
    Static(reqwest::Client),
    /// `ZohoReqwest` over a `reqwest::Client`.
    Service(ZohoReqwest, reqwest::Client),
    /// `HeaderService` over a `reqwest::Client`.
    Tower(HeaderService, reqwest::Client),
    /// A chain with `StaticHeader`, or with `ZohoAuthMiddleware`.
    Chain(ClientWithMiddleware),
}

impl Variant {
    /// One GET of `url`, read to the end; whether the server saw a token.
    async fn get(&mut self, url: &str) -> bool {
        let response = match self {
            Variant::Static(client) => client.get(url).send().await.unwrap(),
            Variant::Service(service, client) => through(service, client, url).await,
            Variant::Tower(service, client) => through(service, client, url).await,
            Variant::Chain(client) => client.get(url).send().await.unwrap(),
        };
        assert!(response.status().is_success());
        let carried = response.headers().contains_key(AUTHORIZED);
        response.bytes().await.unwrap();
        carried
    }
}

/// `CONNECTIONS` tasks share `iters` requests, each through a clone of `variant` of its own (a
/// client, a service or a chain per task, as a worker holds one); the wall time is scaled to
/// exactly `iters`.
async fn drive(variant: &Variant, url: &str, iters: u64) -> Duration {
    let per_task = iters.div_ceil(CONNECTIONS);
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..CONNECTIONS {
        let (mut variant, url) = (variant.clone(), url.to_owned());
        local.spawn_local(async move {
            for _ in 0..per_task {
                variant.get(&url).await;
            }
        });
    }
    local.await;
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * CONNECTIONS) as f64)
}

fn reqwest_front_ends(c: &mut Criterion) {
    let addr = start_server();
    let url = format!("http://{addr}/crm/v8/Leads");
    let runtime = common::current_thread();
    let (_zoho, cache, token) = common::cached_token(&runtime);
    let header = HeaderValue::from_str(&format!("Zoho-oauthtoken {token}")).unwrap();

    let http = || {
        zoho_auth::accounts::http_client_builder()
            .unwrap()
            .pool_max_idle_per_host(64)
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, header.clone());
    // The server is not the token's api_domain (the simulator is): allow it explicitly.
    let layer = ZohoAuthLayer::new(cache)
        .allow_host(&addr.to_string())
        .unwrap();
    let plain = http().build().unwrap();
    let variants = [
        (
            "reqwest_static_header",
            Variant::Static(http().default_headers(headers.clone()).build().unwrap()),
        ),
        (
            "reqwest_static_header_control",
            Variant::Static(http().default_headers(headers).build().unwrap()),
        ),
        (
            "zoho_reqwest",
            Variant::Service(ZohoReqwest::new(plain.clone(), &layer), plain.clone()),
        ),
        (
            "tower_static_header",
            Variant::Tower(HeaderService(plain.clone(), header.clone()), plain.clone()),
        ),
        (
            "middleware_static_header",
            Variant::Chain(
                ClientBuilder::new(http().build().unwrap())
                    .with(StaticHeader(header.clone()))
                    .build(),
            ),
        ),
        (
            "zoho_auth_middleware",
            Variant::Chain(
                ClientBuilder::new(http().build().unwrap())
                    .with(ZohoAuthMiddleware::new(&layer))
                    .build(),
            ),
        ),
    ];
    runtime.block_on(async {
        for (name, variant) in &variants {
            assert!(variant.clone().get(&url).await, "{name} sent the token");
        }
    });

    // `common::count_mode`: counts client and server together, for callgrind.
    if let Some((name, n)) = common::count_mode() {
        // `stub16_<stub variant>`: the same in `CONNECTIONS` tasks, each stub answer waiting
        // for the other tasks' requests, so that as many requests are in flight as end to end.
        let (stub_name, tasks) = match name.strip_prefix("stub16_") {
            Some(stub_name) => (format!("stub_{stub_name}"), CONNECTIONS),
            None => (name.clone(), 1),
        };
        let yielding = tasks > 1;
        let transport = if yielding { stub_yielding() } else { stub() };
        match stub_name.as_str() {
            "stub_static_header" => {
                let task = |n| {
                    stub_requests(
                        transport,
                        plain.clone(),
                        url.clone(),
                        Some(header.clone()),
                        n,
                    )
                };
                let time = |n| in_tasks(tasks, n, task);
                return runtime.block_on(e2e::count(&name, n, time));
            }
            "stub_zoho_reqwest" => {
                let stubbed = ZohoReqwest::new(transport, &layer);
                let task = |n| stub_requests(stubbed.clone(), plain.clone(), url.clone(), None, n);
                let time = |n| in_tasks(tasks, n, task);
                return runtime.block_on(e2e::count(&name, n, time));
            }
            "stub_middleware_static_header" | "stub_zoho_auth_middleware" => {
                let chain = ClientBuilder::new(plain.clone());
                let chain = if stub_name == "stub_middleware_static_header" {
                    chain.with(StaticHeader(header.clone()))
                } else {
                    chain.with(ZohoAuthMiddleware::new(&layer))
                };
                let chain = chain.with(StubAnswer(yielding)).build();
                let task = |n| stub_chain_requests(chain.clone(), url.clone(), n);
                let time = |n| in_tasks(tasks, n, task);
                return runtime.block_on(e2e::count(&name, n, time));
            }
            _ => {}
        }
        let (_, variant) = variants
            .iter()
            .find(|(variant, _)| *variant == name)
            .unwrap_or_else(|| panic!("ZOHO_BENCH_COUNT: no variant {name:?}"));
        runtime.block_on(e2e::count(&name, n, |n| drive(variant, &url, n)));
        return;
    }

    let mut group = c.benchmark_group("reqwest");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for (name, variant) in &variants {
        group.bench_function(BenchmarkId::new(*name, CONNECTIONS), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| drive(variant, &url, iters))
        });
    }
    group.finish();

    // Each front end beside its own floor: the plain client, or the chain.
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    runtime.block_on(e2e::interleaved(
        &format!("reqwest, {CONNECTIONS} connections"),
        &names,
        5_000,
        // The first four against the plain client's floor, the last two against the chain's.
        |i| if i < 4 { 0 } else { 4 },
        |i, n| drive(&variants[i].1, &url, n),
    ));
}

criterion_group!(benches, reqwest_front_ends);
criterion_main!(benches);
