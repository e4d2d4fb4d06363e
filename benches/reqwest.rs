//! End to end through reqwest: requests per second to the minimal hyper server on loopback (the
//! same as `end_to_end`'s), through `ZohoReqwest` (the layer as a tower service of reqwest
//! requests) and through `ZohoAuthMiddleware` in a `reqwest_middleware` chain, each beside the
//! same reqwest stack with a static `Authorization` header: `reqwest::Client` with it as a
//! default header, and a `ClientWithMiddleware` whose one middleware sets it.
//!
//! 16 tasks on a current-thread runtime each send requests one after another and read each
//! response to the end. Criterion measures each variant, then `e2e::interleaved` runs them
//! interleaved and prints each front end's ratio to its floor.
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

/// The variants, a row each in the printed table.
#[derive(Clone)]
enum Variant {
    /// `reqwest::Client` with the header as a default header.
    Static(reqwest::Client),
    /// `ZohoReqwest` over a `reqwest::Client`.
    Service(ZohoReqwest, reqwest::Client),
    /// A chain with `StaticHeader`, or with `ZohoAuthMiddleware`.
    Chain(ClientWithMiddleware),
}

impl Variant {
    /// One GET of `url`, read to the end; whether the server saw a token.
    fn get(&self, url: &str) -> impl Future<Output = bool> + 'static {
        let (this, url) = (self.clone(), url.to_owned());
        async move {
            let response = match this {
                Variant::Static(client) => client.get(&url).send().await.unwrap(),
                Variant::Service(mut service, client) => {
                    let request = client.get(&url).build().unwrap();
                    service.ready().await.unwrap().call(request).await.unwrap()
                }
                Variant::Chain(client) => client.get(&url).send().await.unwrap(),
            };
            assert!(response.status().is_success());
            let carried = response.headers().contains_key(AUTHORIZED);
            response.bytes().await.unwrap();
            carried
        }
    }
}

/// `CONNECTIONS` tasks share `iters` requests; the wall time is scaled to exactly `iters`.
async fn drive(variant: &Variant, url: &str, iters: u64) -> Duration {
    let per_task = iters.div_ceil(CONNECTIONS);
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..CONNECTIONS {
        let (variant, url) = (variant.clone(), url.to_owned());
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
            Variant::Static(http().default_headers(headers).build().unwrap()),
        ),
        (
            "zoho_reqwest",
            Variant::Service(ZohoReqwest::new(plain.clone(), &layer), plain),
        ),
        (
            "middleware_static_header",
            Variant::Chain(
                ClientBuilder::new(http().build().unwrap())
                    .with(StaticHeader(header))
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
            assert!(variant.get(&url).await, "{name} sent the token");
        }
    });

    // `common::count_mode`: counts client and server together, for callgrind.
    if let Some((name, n)) = common::count_mode() {
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
        |i| i - i % 2,
        |i, n| drive(&variants[i].1, &url, n),
    ));
}

criterion_group!(benches, reqwest_front_ends);
criterion_main!(benches);
