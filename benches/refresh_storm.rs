//! Refresh storm: 10,000 concurrent requests arrive just as the cached token expires, and the
//! token endpoint (the simulator) takes 50 ms to answer.
//!
//! Three designs, each behind a tower service in front of a no-op inner service (which answers
//! 401 if the request came without a token), plus a reference:
//!
//! - `cached_reference`: `ZohoAuthLayer` with a token that is still valid — no refresh at all.
//!   What spawning and serving 10,000 concurrent requests costs on this machine by itself.
//! - `single_flight`: `ZohoAuthLayer`. The first request that finds the token expired starts one
//!   refresh; every other request awaits that same refresh.
//! - `lock_across_refresh`: one async mutex held across the check and the refresh, so requests
//!   queue behind it one at a time (golang/oauth2 `reuseTokenSource`; the Zoho CRM Python SDK's
//!   `OAuthToken.authenticate` under `with OAuthToken.lock:`).
//! - `no_single_flight`: no coordination at all. Every request that finds the stored token within
//!   the margin of its expiry calls the token endpoint itself (here with
//!   `AccountsClient::refresh`) and stores what it gets: the check-and-refresh of the Zoho CRM
//!   Python SDK's `OAuthToken.authenticate` (`zcrmsdk/src/com/zoho/api/authenticator/
//!   oauth_token.py`) without the class-wide lock the released SDK takes around it (copies of
//!   that code without the lock exist too).
//!
//! Each storm uses a fresh refresh token (the simulator rate-limits per refresh token) and a fresh
//! cache: one token request warms it, the benchmark sleeps (untimed) until Zoho's stated expiry
//! of that token, then spawns the 10,000 requests. The time criterion records is from the first
//! spawn to the moment the last request was served. Each storm also prints to stderr the token
//! requests the simulator saw, the requests served and failed, and when the first, median and
//! last were served.
//!
//! `single_flight` and `lock_across_refresh` run against Zoho's real rate limit (10 tokens per 10
//! minutes per refresh token). `no_single_flight` would be throttled after 10 token requests, so
//! its simulator's limit is raised to 1,000,000 per 10 minutes: the figures show what it costs
//! when Zoho does not say no. (With the real limit, all but 10 of its token requests would get the
//! throttling answer.)
//!
//! `cargo bench --bench refresh_storm`

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use tokio::runtime::Runtime;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::Simulator;
use zoho_auth::{Accounts, RefreshToken, RequestBody, TokenCache, ZohoAuthLayer};

/// Concurrent requests per storm.
const STORM: usize = 10_000;
/// The token endpoint's latency.
const TOKEN_LATENCY: Duration = Duration::from_millis(50);
/// Token lifetime: the shortest `expires_in` Zoho's answer can state (whole seconds).
const LIFETIME: Duration = Duration::from_secs(1);

/// Answers 200 when the request carries a token, 401 otherwise.
async fn inner<B>(request: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let mut response = Response::new(Empty::new());
    if !request.headers().contains_key(AUTHORIZATION) {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The Zoho-SDK-style designs: a token store checked on every request, refreshed by the request.
// ---------------------------------------------------------------------------------------------

/// The SDKs refresh a token that expires within 5 s; a 1 s token would never be usable with that,
/// so the margin is scaled as `TokenCache` scales its own: at most a tenth of the lifetime.
const SDK_MARGIN: Duration = Duration::from_secs(5);

struct Stored {
    header: HeaderValue,
    expires_at: Instant,
    margin: Duration,
}

impl Stored {
    fn usable(&self) -> bool {
        Instant::now() + self.margin < self.expires_at
    }
}

/// The SDK's `OAuthToken` with an in-memory token store.
struct SdkToken {
    client: AccountsClient,
    refresh_token: RefreshToken,
    store: RwLock<Option<Stored>>,
    /// `Some` for SDK releases that hold a lock across `authenticate` (and golang/oauth2).
    lock: Option<tokio::sync::Mutex<()>>,
}

impl SdkToken {
    fn new(client: AccountsClient, refresh_token: RefreshToken, locked: bool) -> Self {
        Self {
            client,
            refresh_token,
            store: RwLock::new(None),
            lock: locked.then(|| tokio::sync::Mutex::new(())),
        }
    }

    /// `OAuthToken.authenticate`: the stored token if it is not about to expire, else a refresh
    /// made by this request.
    async fn authenticate(&self) -> Result<HeaderValue, BoxError> {
        let _guard = match &self.lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        if let Some(stored) = self.store.read().unwrap().as_ref().filter(|s| s.usable()) {
            return Ok(stored.header.clone());
        }
        let response = self.client.refresh(&self.refresh_token).await?;
        let mut header = HeaderValue::try_from(format!(
            "Zoho-oauthtoken {}",
            response.access_token.expose()
        ))?;
        header.set_sensitive(true);
        *self.store.write().unwrap() = Some(Stored {
            header: header.clone(),
            expires_at: Instant::now() + response.expires_in,
            margin: SDK_MARGIN.min(response.expires_in / 10),
        });
        Ok(header)
    }

    /// When the stored token expires, as Zoho stated it.
    fn expires_at(&self) -> Instant {
        self.store.read().unwrap().as_ref().unwrap().expires_at
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone)]
struct SdkAuth<S> {
    inner: S,
    token: Arc<SdkToken>,
}

impl<S> SdkAuth<S> {
    fn new(token: Arc<SdkToken>, inner: S) -> Self {
        Self { inner, token }
    }
}

impl<S, B> Service<Request<B>> for SdkAuth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = self.token.clone();
        Box::pin(async move {
            let header = token.authenticate().await?;
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// One storm.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Design {
    /// Reference: the same 10,000 requests through `ZohoAuthLayer` with a token that is still
    /// valid: what serving them costs on this machine with no refresh at all.
    Cached,
    SingleFlight,
    LockAcrossRefresh,
    NoSingleFlight,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Design::Cached => "cached_reference",
            Design::SingleFlight => "single_flight",
            Design::LockAcrossRefresh => "lock_across_refresh",
            Design::NoSingleFlight => "no_single_flight",
        }
    }

    async fn simulator(self) -> Simulator {
        let builder = Simulator::builder()
            .token_latency(TOKEN_LATENCY)
            .token_lifetime(LIFETIME);
        let builder = match self {
            // Zoho's limit would throttle this design after 10 token requests.
            Design::NoSingleFlight => builder.rate_limit(1_000_000, Duration::from_secs(600)),
            Design::Cached | Design::SingleFlight | Design::LockAcrossRefresh => builder,
        };
        builder.start().await.unwrap()
    }

    /// Warms a fresh token source, waits until its token expires, and runs one storm.
    async fn storm(self, zoho: &Simulator) -> Outcome {
        let uri: Uri = format!("{}/crm/v8/Leads", zoho.url()).parse().unwrap();
        let accounts = Accounts::custom(&zoho.url()).unwrap();
        let client = AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret()).unwrap();
        let refresh_token = zoho.mint_refresh_token(&[]);
        match self {
            Design::Cached | Design::SingleFlight => {
                let cache = TokenCache::new(client, refresh_token);
                let token = cache.token().await.unwrap();
                if matches!(self, Design::SingleFlight) {
                    tokio::time::sleep(token.expires_in()).await;
                    assert!(cache.cached().is_none(), "the token has expired");
                }
                let service =
                    ZohoAuthLayer::new(cache).layer(service_fn(inner::<RequestBody<Empty<Bytes>>>));
                storm(zoho, service, uri).await
            }
            Design::LockAcrossRefresh | Design::NoSingleFlight => {
                let locked = matches!(self, Design::LockAcrossRefresh);
                let token = Arc::new(SdkToken::new(client, refresh_token, locked));
                token.authenticate().await.unwrap();
                tokio::time::sleep_until(token.expires_at().into()).await;
                let service = SdkAuth::new(token, service_fn(inner::<Empty<Bytes>>));
                storm(zoho, service, uri).await
            }
        }
    }
}

struct Outcome {
    token_requests: u64,
    /// When the last of the requests had been spawned.
    arrived: Duration,
    served: usize,
    failed: usize,
    first: Duration,
    median: Duration,
    last: Duration,
}

/// Spawns `STORM` requests through clones of `service` and waits for them all.
async fn storm<S, B>(zoho: &Simulator, service: S, uri: Uri) -> Outcome
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    let before = zoho.counters().token_requests;
    let start = Instant::now();
    let tasks: Vec<_> = (0..STORM)
        .map(|_| {
            let service = service.clone();
            let request = Request::get(uri.clone()).body(Empty::new()).unwrap();
            tokio::spawn(async move {
                let ok = match service.oneshot(request).await {
                    Ok(response) => response.status() == StatusCode::OK,
                    Err(_) => false,
                };
                (ok, Instant::now())
            })
        })
        .collect();
    let arrived = start.elapsed();
    let mut served_at = Vec::with_capacity(STORM);
    let mut failed = 0;
    for task in tasks {
        let (ok, at) = task.await.unwrap();
        if ok {
            served_at.push(at - start);
        } else {
            failed += 1;
        }
    }
    served_at.sort_unstable();
    let at = |index: usize| served_at.get(index).copied().unwrap_or_default();
    Outcome {
        token_requests: zoho.counters().token_requests - before,
        arrived,
        served: served_at.len(),
        failed,
        first: at(0),
        median: at(served_at.len() / 2),
        last: at(served_at.len().saturating_sub(1)),
    }
}

fn runtime() -> Runtime {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn refresh_storm(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("refresh_storm");
    // Each storm waits ~1 s (untimed) for its token to expire, so keep the sample count minimal.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(15));
    for design in [
        Design::Cached,
        Design::SingleFlight,
        Design::LockAcrossRefresh,
        Design::NoSingleFlight,
    ] {
        let zoho = runtime.block_on(design.simulator());
        group.bench_function(design.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let outcome = runtime.block_on(design.storm(&zoho));
                    eprintln!(
                        "  {}: {} token request(s); all arrived by {:.1} ms; {} served, \
                         {} failed; first served at {:.1} ms, median {:.1} ms, last {:.1} ms",
                        design.name(),
                        outcome.token_requests,
                        outcome.arrived.as_secs_f64() * 1e3,
                        outcome.served,
                        outcome.failed,
                        outcome.first.as_secs_f64() * 1e3,
                        outcome.median.as_secs_f64() * 1e3,
                        outcome.last.as_secs_f64() * 1e3,
                    );
                    total += outcome.last;
                }
                total
            })
        });
        drop(zoho);
    }
    group.finish();
}

criterion_group!(benches, refresh_storm);
criterion_main!(benches);
