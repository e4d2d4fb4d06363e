//! Soak: at least 1,000,000 requests from 64 tasks through the layer, with 2-second tokens and a
//! server-side invalidation of every live token due every 100,000 requests: zero failed
//! requests, and exactly one token request per cause — the first token, each expiry, each
//! invalidation.
//!
//! The requests go to an in-process inner service, not over HTTP: through hyper over loopback a
//! debug build on this 2-core machine manages about 4,800 requests per second (measured with
//! `common::http_service` and 64 tasks), so a million would take some 3.5 minutes measuring
//! hyper, not the layer; in-process the run takes about 10 s. The inner service plays Zoho's CRM API faithfully where it
//! matters: it asks the simulator whether the token it received is live (the simulator expires
//! tokens after 2 s and kills them on `invalidate_all_tokens`) and answers CRM's `INVALID_TOKEN`
//! 401 when it is not, so the layer's classifier, invalidation, single refresh and replay run
//! for real. Token requests go over HTTP to the simulator's token endpoint.
//!
//! What is asserted, precisely:
//!
//! - every request is answered 200 (`failed == 0`), and at least 1,000,000 were sent;
//! - every token request minted a token and every minted token served requests
//!   (cache token requests = simulator token requests = tokens issued = distinct tokens seen);
//! - ordering the distinct tokens by first use, every change of token has exactly one cause:
//!   either the previous token is one an injected invalidation killed (the injector records the
//!   cache's current token just before invalidating), or the previous token lived out its life —
//!   its successor was first used no sooner than 50 % of its lifetime after the token request
//!   that minted it (the refresh-ahead window opens at 52.5 % at the earliest: expiry margin
//!   10 %, stale window at most 25 % + 50 % jitter; the request time is the token's stated
//!   expiry, read from the cache at the token's first use, minus its lifetime);
//! - the cache recorded exactly one invalidation per injected invalidation;
//! - hence token requests = 1 (the first token) + expiries + invalidations, with 9 invalidations.
//!
//! To keep the causes separable, an invalidation falls due at every 100,000th request but is
//! injected only once the current token has served requests, has more than half its life left
//! (no lifetime refresh is then running or due) and was minted by a lifetime refresh, not by the
//! previous invalidation (so at least one expiry separates consecutive invalidations, whatever
//! the machine's speed: expiries ≥ 8). The injecting task waits for that, and then for the
//! refresh the invalidation causes; the other tasks keep sending meanwhile, and nobody stops
//! before all 9 invalidations were injected and recovered from — so a run sends somewhat more
//! than 1,000,000 requests. A refresh-ahead that starts as the last requests go out mints a token
//! none of them carries, so the run ends only once the current token is young and has served a
//! request.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Empty, Full};
use tower::{Service, ServiceExt};
use zoho_auth::sim::Simulator;
use zoho_auth::{RequestBody, TokenCache, ZohoAuthLayer};

use common::{cache_builder, CRM_INVALID_TOKEN};

const REQUESTS: u64 = 1_000_000;
const INVALIDATE_EVERY: u64 = 100_000;
const INVALIDATIONS: u64 = (REQUESTS - 1) / INVALIDATE_EVERY;
const TASKS: usize = 64;
const LIFETIME: Duration = Duration::from_secs(2);
/// Far beyond the run's normal length (see the assertion on `sent`).
const GIVE_UP: Duration = Duration::from_secs(300);

/// When each distinct token was first used, and when the cache had asked Zoho for it.
#[derive(Default)]
struct FirstUse(Mutex<HashMap<String, Use>>);

#[derive(Clone, Copy)]
struct Use {
    first: Instant,
    /// When the token request that minted it was sent: its stated expiry minus its lifetime,
    /// read from the cache at first use.
    requested: Option<Instant>,
}

impl FirstUse {
    fn has_seen(&self, token: &str) -> bool {
        self.0.lock().unwrap().contains_key(token)
    }

    fn saw(&self, token: &str, cache: &TokenCache) {
        let mut seen = self.0.lock().unwrap();
        if !seen.contains_key(token) {
            let first = Instant::now();
            let requested = cache
                .cached()
                .filter(|current| current.access_token().expose() == token)
                .map(|current| first + current.expires_in() - LIFETIME);
            seen.insert(token.to_owned(), Use { first, requested });
        }
    }

    /// The tokens in order of first use.
    fn sequence(&self) -> Vec<(String, Use)> {
        let mut tokens: Vec<_> = self.0.lock().unwrap().clone().into_iter().collect();
        tokens.sort_by_key(|(_, used)| used.first);
        tokens
    }
}

/// Injects the invalidations, one at a time, as the module comment describes.
struct Chaos {
    zoho: Arc<Simulator>,
    cache: TokenCache,
    first_use: Arc<FirstUse>,
    /// Held while one invalidation is being injected.
    turn: tokio::sync::Mutex<()>,
    /// The tokens that were current when each invalidation was injected.
    killed: Mutex<Vec<String>>,
    /// The cache's token requests when the last invalidation was injected.
    last_injection: AtomicU64,
    /// Invalidations injected and recovered from (the cache refreshed after it).
    done: AtomicU64,
    /// Why an invalidation could not be injected, which stops the run.
    broken: Mutex<Option<String>>,
}

impl Chaos {
    /// Injects one invalidation and waits for the refresh it causes; an `Err` says why it could
    /// not (and stops the run).
    async fn invalidate(&self) -> Result<(), String> {
        let _turn = self.turn.lock().await;
        let after_previous = self.last_injection.load(Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        let killed = loop {
            if Instant::now() > deadline {
                return Err("no token to invalidate for 30 s".to_owned());
            }
            // A token minted after the previous invalidation's refresh (so by a lifetime
            // refresh), with more than half its life left, that requests already used. The
            // token is read first: once a young token is current, no refresh runs or is due, so
            // the count read after it is the one that minted it.
            let current = self.cache.cached();
            let requests = self.cache.stats().token_requests;
            if let Some(token) = &current {
                let value = token.access_token().expose();
                if (after_previous == 0 || requests >= after_previous + 2)
                    && token.expires_in() > LIFETIME / 2
                    && self.first_use.has_seen(value)
                {
                    // Checked before invalidating, not after: the invalidation's own refresh
                    // may start at once, before this task runs again (under load it did, and
                    // was mistaken for a refresh racing the injection).
                    if self.cache.stats().token_requests != requests {
                        return Err("a refresh ran while invalidating".to_owned());
                    }
                    let value = value.to_owned();
                    self.zoho.invalidate_all_tokens();
                    self.last_injection.store(requests, Relaxed);
                    break value;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.killed.lock().unwrap().push(killed);
        let injected_at = self.last_injection.load(Relaxed);
        while self.cache.stats().token_requests == injected_at {
            if Instant::now() > deadline {
                return Err("no refresh after an invalidation".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.done.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Sends one GET to `uri`, counting it in `sent` and, unless it is answered 200, in `failed`.
async fn send<S, B>(service: &mut S, uri: &Uri, sent: &AtomicU64, failed: &AtomicU64)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(uri.clone()).body(Empty::new()).unwrap();
    let response = service.ready().await.unwrap().call(request).await;
    sent.fetch_add(1, Relaxed);
    if !response.is_ok_and(|response| response.status() == StatusCode::OK) {
        failed.fetch_add(1, Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_requests_across_expiries_and_invalidations_fail_none_and_refresh_once_per_cause()
{
    let zoho = Arc::new(
        Simulator::builder()
            .token_lifetime(LIFETIME)
            // Room for every refresh the run needs: the counts below are the assertion, not
            // Zoho's limits.
            .rate_limit(1000, Duration::from_secs(600))
            .start()
            .await
            .unwrap(),
    );
    let cache = cache_builder(&zoho)
        .budget(1000, Duration::from_secs(600))
        .build()
        .unwrap();
    let first_use = Arc::new(FirstUse::default());

    // CRM as far as tokens go: 200 for a live token, 401 INVALID_TOKEN for a dead one.
    let api = tower::service_fn({
        let zoho = zoho.clone();
        let first_use = first_use.clone();
        let cache = cache.clone();
        move |request: Request<RequestBody<Empty<Bytes>>>| {
            let token = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Zoho-oauthtoken "));
            let (status, body) = match token {
                Some(token) => {
                    first_use.saw(token, &cache);
                    if zoho.is_access_token_live(token) {
                        (StatusCode::OK, "{}")
                    } else {
                        (StatusCode::UNAUTHORIZED, CRM_INVALID_TOKEN)
                    }
                }
                None => (StatusCode::BAD_REQUEST, r#"{"code":"NO_TOKEN"}"#),
            };
            let response = Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            std::future::ready(Ok::<_, Infallible>(response))
        }
    });
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), api);
    let uri: Uri = format!("{}/crm/v8/Leads", zoho.url()).parse().unwrap();

    let chaos = Arc::new(Chaos {
        zoho: zoho.clone(),
        cache: cache.clone(),
        first_use: first_use.clone(),
        turn: tokio::sync::Mutex::new(()),
        killed: Mutex::default(),
        last_injection: AtomicU64::new(0),
        done: AtomicU64::new(0),
        broken: Mutex::default(),
    });
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut service = service.clone();
            let (uri, chaos, next, sent, failed) = (
                uri.clone(),
                chaos.clone(),
                next.clone(),
                sent.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Relaxed);
                    if n >= REQUESTS && chaos.done.load(Relaxed) == INVALIDATIONS {
                        break;
                    }
                    // A hard stop, so that a broken run fails instead of spinning.
                    if started.elapsed() > GIVE_UP || chaos.broken.lock().unwrap().is_some() {
                        break;
                    }
                    if n > 0 && n % INVALIDATE_EVERY == 0 && n / INVALIDATE_EVERY <= INVALIDATIONS {
                        if let Err(error) = chaos.invalidate().await {
                            *chaos.broken.lock().unwrap() = Some(error);
                            break;
                        }
                    }
                    send(&mut service, &uri, &sent, &failed).await;
                    // The inner service never waits, so without this a task would never yield
                    // and starve the refresh, the simulator and the other tasks: a network
                    // client yields on I/O.
                    tokio::task::coop::consume_budget().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // A refresh-ahead may have started as the last requests went out, and its token served none.
    // Send requests until the current token is young (then no refresh runs: one starts only for a
    // token that is dead or past its refresh-ahead point) and has served one, so that every token
    // minted is in the sequence below.
    let mut service = service;
    loop {
        let young = cache
            .cached()
            .filter(|token| token.expires_in() > LIFETIME / 2);
        if young.is_some_and(|token| first_use.has_seen(token.access_token().expose())) {
            break;
        }
        assert!(started.elapsed() < GIVE_UP, "no young token to end on");
        send(&mut service, &uri, &sent, &failed).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();

    let sent = sent.load(Relaxed);
    let failed = failed.load(Relaxed);
    let stats = cache.stats();
    let counters = zoho.counters();
    let killed = chaos.killed.lock().unwrap().clone();
    // A run that could not inject its invalidations says why, before its tokens are analysed.
    let broken = chaos.broken.lock().unwrap().clone();
    assert_eq!(broken, None, "the run could not inject its invalidations");
    let tokens = first_use.sequence();
    let invalidations = killed.len() as u64;
    let mut expiries = 0;
    let mut unknown_age = 0;
    for pair in tokens.windows(2) {
        let ((previous, used), (_, next)) = (&pair[0], &pair[1]);
        if killed.contains(previous) {
            continue;
        }
        expiries += 1;
        // Refresh-ahead starts 52.5 % of the lifetime after the token was requested at the
        // earliest (expiry margin 10 %, stale window at most 25 % + 50 % jitter).
        match used.requested {
            Some(requested) => {
                let lived = next.first.duration_since(requested);
                assert!(
                    lived >= LIFETIME.mul_f64(0.5),
                    "a token was replaced {lived:?} after it was requested, without an invalidation"
                );
            }
            None => unknown_age += 1,
        }
    }
    assert!(unknown_age <= 1, "{unknown_age} tokens' ages were unknown");
    println!(
        "soak: {sent} requests in {:.1} s ({:.0}/s) on {TASKS} tasks; failed={failed}; \
         token requests={} = 1 + {expiries} expiries + {invalidations} invalidations; \
         replays={}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        stats.token_requests,
        stats.replays,
    );

    assert_eq!(failed, 0, "every request succeeded");
    assert!(sent >= REQUESTS, "{sent} requests");
    assert_eq!(invalidations, INVALIDATIONS);
    assert!(
        killed.iter().all(|k| tokens.iter().any(|(t, _)| t == k)),
        "every token killed had served requests"
    );
    assert_eq!(
        stats.invalidations, invalidations,
        "one invalidation in the cache per injected invalidation: {stats:?}"
    );
    assert_eq!(
        (stats.failures, stats.rate_limited),
        (0, 0),
        "no refresh failed: {stats:?}"
    );
    assert_eq!(stats.refreshes, stats.token_requests);
    assert_eq!(counters.token_requests, stats.token_requests);
    assert_eq!(counters.tokens_issued, stats.token_requests);
    assert_eq!(
        tokens.len() as u64,
        stats.token_requests,
        "every token minted served requests"
    );
    assert_eq!(
        stats.token_requests,
        1 + expiries + invalidations,
        "one token request per cause"
    );
    assert!(
        expiries >= invalidations - 1,
        "every invalidation after the first followed an expiry"
    );
    assert!(
        stats.replays >= invalidations,
        "each invalidation was met and replayed"
    );
}
