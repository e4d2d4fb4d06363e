//! Per-request cost of attaching a cached token, through a no-op inner service.
//!
//! Two groups:
//!
//! - `hot_path`: one request at a time on a current-thread runtime. The bare `service_fn` is the
//!   baseline; `tower_http::auth::AddAuthorization` (a static header) is the floor nothing can
//!   beat; `ZohoAuthLayer` with a cached token is what we ship; and two peer designs, written
//!   below as small tower layers attaching the same header: a `std::sync::Mutex` held around the
//!   cached token on every request (golang/oauth2) and a `tokio::sync::RwLock` read on every
//!   request (gcp_auth). `boxed_static` is the async-lock design's boxed future alone (a static
//!   header inside a boxed `async` block), so its cost can be told apart from the lock's.
//! - `contention`: the same variants on a multi-threaded runtime with 1, 2, ... worker threads
//!   (`ZOHO_BENCH_THREADS`, default `1,2`), 64 tasks hammering clones of one service that share
//!   one token. Criterion reports wall time per request and requests/s.
//!
//! Every variant is driven the same way: `poll_ready` with a no-op waker (all services here are
//! always ready), then `call`, then the future is awaited. See `benches/README.md` for figures.
//!
//! `cargo bench --bench hot_path`

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use criterion::{SamplingMode, Throughput};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use tokio::runtime::Runtime;
use tower::{service_fn, Layer, Service};
use tower_http::auth::AddAuthorizationLayer;
use zoho_auth::{RequestBody, TokenCache, ZohoAuthLayer};

const URL: &str = "https://www.zohoapis.com/crm/v8/Leads";

/// Tasks sharing one service in the contention group.
const TASKS: u64 = 64;

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

/// `Zoho-oauthtoken <token>`, sensitive, with its bytes already in shared storage so that every
/// clone is a reference-count increment (what the token cache does for its own header).
fn zoho_header(token: &str) -> HeaderValue {
    let mut header = HeaderValue::try_from(format!("Zoho-oauthtoken {token}")).unwrap();
    header.set_sensitive(true);
    drop(header.clone());
    header
}

// ---------------------------------------------------------------------------------------------
// Peer design 1: a mutex held around the cached token on every request.
//
// Follows golang/oauth2 `oauth2.go`: `reuseTokenSource.Token()` takes `s.mu.Lock()` (released by
// `defer s.mu.Unlock()`), returns `s.t` if `s.t.Valid()`, and otherwise calls `s.new.Token()` —
// the network refresh — while still holding the lock; `Transport.RoundTrip` calls it for every
// request and then sets the header. `Token.Valid` compares the expiry, less `expiryDelta`
// (10 s), with the current time. Two simplifications, both in Go's favour: the header value is
// built once per token (Go formats `"Bearer " + token` and clones the request every time), and
// the refresh is a local function that cannot fail (it never runs here: the token stays valid).
// ---------------------------------------------------------------------------------------------

/// golang/oauth2's `expiryDelta`.
const GO_EXPIRY_DELTA: Duration = Duration::from_secs(10);

struct GoToken {
    header: HeaderValue,
    expiry: Instant,
}

impl GoToken {
    /// `Token.Valid`: not expired, counting `expiryDelta` early.
    fn valid(&self) -> bool {
        self.expiry
            .checked_sub(GO_EXPIRY_DELTA)
            .is_some_and(|at| Instant::now() < at)
    }
}

/// `reuseTokenSource`: `mu` guards `t`; `new` mints a token.
struct ReuseTokenSource {
    t: Mutex<Option<GoToken>>,
    new: Box<dyn Fn() -> GoToken + Send + Sync>,
}

impl ReuseTokenSource {
    /// `reuseTokenSource.Token`: the whole method runs under the lock.
    fn token(&self) -> HeaderValue {
        let mut t = self.t.lock().unwrap();
        if let Some(t) = t.as_ref().filter(|t| t.valid()) {
            return t.header.clone();
        }
        let fresh = (self.new)();
        let header = fresh.header.clone();
        *t = Some(fresh);
        header
    }
}

/// `oauth2.Transport` as a tower layer.
#[derive(Clone)]
struct MutexLayer {
    source: Arc<ReuseTokenSource>,
}

#[derive(Clone)]
struct MutexAuth<S> {
    inner: S,
    source: Arc<ReuseTokenSource>,
}

impl<S> Layer<S> for MutexLayer {
    type Service = MutexAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MutexAuth {
            inner,
            source: self.source.clone(),
        }
    }
}

impl<S, B> Service<Request<B>> for MutexAuth<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let header = self.source.token();
        request.headers_mut().insert(AUTHORIZATION, header);
        self.inner.call(request)
    }
}

// ---------------------------------------------------------------------------------------------
// Peer design 2: an async read-write lock read on every request.
//
// Follows gcp_auth `src/metadata_service_account.rs`: the provider keeps
// `token: tokio::sync::RwLock<Arc<Token>>`, and `TokenProvider::token` does
// `self.token.read().await.clone()`, returns it unless `has_expired()`, and otherwise takes
// `self.token.write().await` and fetches a new one while holding it. The lock is awaited, so
// the middleware's future is an `async` block the `Service` cannot name: it is boxed, as every
// tower middleware around an `async fn` provider must (gcp_auth's `#[async_trait]` boxes the
// `token()` future a second time; we box once, in its favour, and build the header once per
// token instead of `format!("Bearer {}", token.as_str())` per request).
// ---------------------------------------------------------------------------------------------

/// gcp_auth's early-expiry margin.
const GCP_EXPIRY_MARGIN: Duration = Duration::from_secs(20);

struct GcpToken {
    header: HeaderValue,
    expires_at: Instant,
}

impl GcpToken {
    fn has_expired(&self) -> bool {
        self.expires_at
            .checked_sub(GCP_EXPIRY_MARGIN)
            .is_none_or(|at| at <= Instant::now())
    }
}

struct GcpProvider {
    token: tokio::sync::RwLock<Arc<GcpToken>>,
    fetch: Box<dyn Fn() -> Arc<GcpToken> + Send + Sync>,
}

impl GcpProvider {
    /// `TokenProvider::token` of `MetadataServiceAccount`.
    async fn token(&self) -> Arc<GcpToken> {
        let token = self.token.read().await.clone();
        if !token.has_expired() {
            return token;
        }
        let mut locked = self.token.write().await;
        let token = (self.fetch)();
        *locked = token.clone();
        token
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a boxed-future middleware gets the header from, awaited inside its box.
trait HeaderSource: Clone + Send + 'static {
    fn header(self) -> impl Future<Output = HeaderValue> + Send;
}

/// The gcp_auth design: an async `RwLock` read per request.
impl HeaderSource for Arc<GcpProvider> {
    async fn header(self) -> HeaderValue {
        self.token().await.header.clone()
    }
}

/// Reference for the async-lock design: the same boxed `async` block with a static header and
/// no lock, so the `RwLock` variant's cost splits into "boxed future" and "lock".
impl HeaderSource for HeaderValue {
    fn header(self) -> impl Future<Output = HeaderValue> + Send {
        std::future::ready(self)
    }
}

/// A middleware whose future is a boxed `async` block that awaits the header, then calls the
/// inner service: what tower middleware around an `async fn` provider must be.
#[derive(Clone)]
struct BoxedAuth<S, H> {
    inner: S,
    source: H,
}

impl<S, B, H> Service<Request<B>> for BoxedAuth<S, H>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    H: HeaderSource,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes into the future; a clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        Box::pin(async move {
            request
                .headers_mut()
                .insert(AUTHORIZATION, source.header().await);
            inner.call(request).await
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmarks.
// ---------------------------------------------------------------------------------------------

/// What the variants are built from: the cache holding the token, and the token itself for the
/// designs that hold their own copy.
struct Variants {
    cache: TokenCache,
    token: String,
}

/// One service under test, type-erased so that both groups run the same list. Every clone of a
/// service shares its token state.
trait Variant {
    fn name(&self) -> &'static str;
    /// Sends `n` requests one after another on `runtime`, as `bench_single` does; their time.
    fn time_sequential(&self, runtime: &Runtime, n: u64) -> Duration;
    fn bench_single(&self, group: &mut BenchmarkGroup<'_, WallTime>, runtime: &Runtime);
    fn bench_contended(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        runtime: &Runtime,
        threads: usize,
    );
}

struct Named<S> {
    name: &'static str,
    service: S,
}

impl<S> Variant for Named<S>
where
    S: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug + Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn time_sequential(&self, runtime: &Runtime, n: u64) -> Duration {
        let mut service = self.service.clone();
        runtime.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let call = ready_call(&mut service, request());
                black_box(call.await.unwrap());
            }
            start.elapsed()
        })
    }

    fn bench_single(&self, group: &mut BenchmarkGroup<'_, WallTime>, runtime: &Runtime) {
        let mut service = self.service.clone();
        group.bench_function(self.name, |b| {
            b.to_async(runtime).iter(|| {
                let call = ready_call(&mut service, request());
                async move { call.await.unwrap() }
            })
        });
    }

    fn bench_contended(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        runtime: &Runtime,
        threads: usize,
    ) {
        group.bench_function(BenchmarkId::new(self.name, threads), |b| {
            b.iter_custom(|iters| hammer(runtime, &self.service, iters))
        });
    }
}

/// `TASKS` tasks, each with its own clone of `service`, share `iters` requests; the wall time is
/// scaled to exactly `iters` requests.
fn hammer<S>(runtime: &Runtime, service: &S, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug + Send,
{
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        let call = ready_call(&mut service, request());
                        black_box(call.await.unwrap());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

impl Variants {
    fn all(&self) -> Vec<Box<dyn Variant>> {
        let bare = service_fn(no_op::<Empty<Bytes>>);
        let header = zoho_header(&self.token);

        let floor = AddAuthorizationLayer::bearer(&self.token)
            .as_sensitive(true)
            .layer(bare);

        // The token's DC is the simulator's loopback address; allow the benchmark's Zoho host.
        let zoho_auth = ZohoAuthLayer::new(self.cache.clone())
            .allow_host("www.zohoapis.com")
            .unwrap()
            .layer(service_fn(no_op::<RequestBody<Empty<Bytes>>>));

        let go_header = header.clone();
        let mutex = MutexLayer {
            source: Arc::new(ReuseTokenSource {
                t: Mutex::new(Some(GoToken {
                    header: header.clone(),
                    expiry: Instant::now() + Duration::from_secs(3600),
                })),
                new: Box::new(move || GoToken {
                    header: go_header.clone(),
                    expiry: Instant::now() + Duration::from_secs(3600),
                }),
            }),
        }
        .layer(bare);

        let gcp_header = header.clone();
        let rwlock = BoxedAuth {
            inner: bare,
            source: Arc::new(GcpProvider {
                token: tokio::sync::RwLock::new(Arc::new(GcpToken {
                    header: header.clone(),
                    expires_at: Instant::now() + Duration::from_secs(3600),
                })),
                fetch: Box::new(move || {
                    Arc::new(GcpToken {
                        header: gcp_header.clone(),
                        expires_at: Instant::now() + Duration::from_secs(3600),
                    })
                }),
            }),
        };

        let boxed = BoxedAuth {
            inner: bare,
            source: header,
        };

        vec![
            Box::new(Named {
                name: "bare",
                service: bare,
            }),
            Box::new(Named {
                name: "add_authorization",
                service: floor,
            }),
            Box::new(Named {
                name: "zoho_auth",
                service: zoho_auth,
            }),
            Box::new(Named {
                name: "mutex_golang",
                service: mutex,
            }),
            Box::new(Named {
                name: "rwlock_gcp_auth",
                service: rwlock,
            }),
            Box::new(Named {
                name: "boxed_static",
                service: boxed,
            }),
        ]
    }
}

/// Criterion measures the variants one after another, and on a shared VM the machine's speed
/// drifts between them by more than the differences being measured. This summary interleaves
/// them instead: `ZOHO_BENCH_ROUNDS` rounds (default 21), each timing every variant for 100,000
/// sequential requests (in rotated order), then the median over rounds of each variant's time,
/// of its overhead over `bare` in that round, and of that overhead divided by
/// `add_authorization`'s in that round. Printed to stderr.
fn paired_summary(variants: &[Box<dyn Variant>], runtime: &Runtime) {
    const REQUESTS: u64 = 100_000;
    let rounds = common::rounds(21);
    if rounds == 0 {
        return;
    }
    let bare = variants.iter().position(|v| v.name() == "bare").unwrap();
    let floor = variants
        .iter()
        .position(|v| v.name() == "add_authorization")
        .unwrap();
    let mut ns = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let time = variants[i].time_sequential(runtime, REQUESTS);
            ns[i].push(time.as_nanos() as f64 / REQUESTS as f64);
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let per_round = |f: &dyn Fn(usize) -> f64| (0..rounds).map(f).collect::<Vec<_>>();
    eprintln!(
        "\nhot_path, interleaved ({rounds} rounds x {REQUESTS} requests per variant, medians):"
    );
    eprintln!("| variant | ns/request | overhead over bare | overhead / AddAuthorization's |");
    eprintln!("|---|---|---|---|");
    for (i, variant) in variants.iter().enumerate() {
        let time = median(ns[i].clone());
        let overhead = median(per_round(&|r| ns[i][r] - ns[bare][r]));
        let ratio = median(per_round(&|r| {
            (ns[i][r] - ns[bare][r]) / (ns[floor][r] - ns[bare][r])
        }));
        eprintln!(
            "| {} | {time:.0} | {overhead:.0} | {ratio:.2}x |",
            variant.name()
        );
    }
}

/// [`common::count_mode`]: `n` requests through the variant `name`, after the warm-up.
fn count_mode(variants: &[Box<dyn Variant>], runtime: &Runtime, name: &str, n: u64) {
    let variant = variants
        .iter()
        .find(|v| v.name() == name)
        .unwrap_or_else(|| panic!("ZOHO_BENCH_COUNT: no variant {name:?}"));
    variant.time_sequential(runtime, common::COUNT_WARM_UP);
    let time = variant.time_sequential(runtime, n);
    eprintln!("{name}: {n} requests in {time:?}");
}

/// Worker-thread counts for the contention group: `ZOHO_BENCH_THREADS="1,2,4"`, default `1,2`.
fn thread_counts() -> Vec<usize> {
    let spec = std::env::var("ZOHO_BENCH_THREADS").unwrap_or_else(|_| "1,2".to_owned());
    let counts: Vec<usize> = spec
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("ZOHO_BENCH_THREADS: {s:?} is not a thread count"))
        })
        .filter(|&n: &usize| n > 0)
        .collect();
    assert!(
        !counts.is_empty(),
        "ZOHO_BENCH_THREADS names no thread count"
    );
    counts
}

fn benches(c: &mut Criterion) {
    // The simulator's runtime stays idle while the benchmarks run on their own.
    let setup = common::current_thread();
    let (_zoho, cache, token) = common::cached_token(&setup);
    let variants = Variants { cache, token }.all();

    let runtime = common::current_thread();
    if let Some((name, n)) = common::count_mode() {
        count_mode(&variants, &runtime, &name, n);
        return;
    }
    let mut group = c.benchmark_group("hot_path");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for variant in &variants {
        variant.bench_single(&mut group, &runtime);
    }
    group.finish();
    paired_summary(&variants, &runtime);

    let mut group = c.benchmark_group("contention");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for threads in thread_counts() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap();
        for variant in &variants {
            variant.bench_contended(&mut group, &runtime, threads);
        }
    }
    group.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
