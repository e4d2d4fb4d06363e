//! The fault matrix: one row per way Zoho's token endpoint, the network or Zoho's APIs can fail.
//!
//! The test prints its outcome as a Markdown table — the README's "What happens when ..." table
//! is copied from it. See it with:
//!
//! ```sh
//! cargo test --test fault_matrix -- --nocapture
//! ```
//!
//! Each row runs against its own simulator, twice:
//!
//! - **no valid token yet**: a fresh cache meets the fault on its first token request, through
//!   the layer; then a second request shows what the cache does next (back-off, no retry, or a
//!   long throttling pause), and for one-off transient faults a request after the back-off
//!   shows the recovery;
//! - **with a valid token**: the cache holds a live token in its stale window, so the next request
//!   starts a background refresh that meets the fault. The token is made stale without waiting:
//!   the token store holds a live simulator token whose stated expiry is 5 minutes away (as after
//!   a restart with a file or Redis store), which the cache adopts and, since its refresh-ahead
//!   window (≥ 5 minutes) has begun, refreshes in the background on the next request while still
//!   serving it. Rows whose fault is on the API side (invalidation, eviction, revocation) start
//!   from a freshly minted token instead.
//!
//! Each run goes through every front end — the tower layer, `ZohoReqwest` and
//! `ZohoAuthMiddleware` — with a simulator of its own: a row whose outcome differs between them
//! fails, and the table says in a last column that all three agreed.
//!
//! Every row asserts: no panic anywhere in the process (a panic hook counts them, including in
//! spawned tasks); no request waits past its bound (`COLD_BOUND` without a token, `WARM_BOUND`
//! with one); the cache's token requests equal the expected number, which is within the budget,
//! and the simulator saw the same; the right typed error, or success; and, where a valid token
//! existed, that every request was still served with it.
//!
//! Error codes meaningless for a refresh are not rows: `invalid_redirect_uri` (code grant only),
//! `invalid_scope` and `missing_org_info` (code and client-credentials grants), `access_denied`
//! (consent) and `invalid_token` (revoke). The cache treats them like `unsupported_grant_type`
//! (`is_permanent()`); `tests/accounts.rs` checks each code's kind.

mod common;
#[path = "common/front.rs"]
mod front;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use tower::BoxError;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{Fault, Language, Simulator, SimulatorBuilder};
use zoho_auth::store::{MemoryStore, StoredAccess, TokenSet};
use zoho_auth::{Accounts, Error, RefreshToken, TokenCache, ZohoAuthLayer};

use common::{accounts_client, fast_forward, header_for, refused_port};
use front::{Built, Front, Seen, FRONTS};

// The bounds sit far from both what the cache should do and what a broken one would, so that a
// loaded machine cannot cross them: a request with a valid token takes microseconds, one that
// waited for the slow row's refresh would take `ACCOUNTS_TIMEOUT`; without a token a request takes
// at most `ACCOUNTS_TIMEOUT`, one that outlived it would take `MAX_WAIT`.

/// The bound on every call to the accounts server in these caches.
const ACCOUNTS_TIMEOUT: Duration = Duration::from_secs(8);
/// Longer than `ACCOUNTS_TIMEOUT`, so a slow endpoint is cut by the accounts client's timeout.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// No request without a token waits longer than the accounts timeout plus generous slack.
const COLD_BOUND: Duration = Duration::from_secs(15);
/// A request with a valid token never waits for a refresh.
const WARM_BOUND: Duration = Duration::from_secs(3);
/// The first back-off of the rows without a token is 30–60 s: long enough that the request right
/// after the failure is certainly inside it; the clock is moved past it with [`fast_forward`].
const COLD_BACKOFF: Duration = Duration::from_secs(60);
/// Zoho's limit and the cache's default budget: 10 token requests per 10 minutes.
const BUDGET: u64 = 10;

/// What goes wrong.
#[derive(Clone, Debug)]
enum Trigger {
    /// The token endpoint answers the next token request with this fault.
    Endpoint(Fault),
    /// Nothing listens where the accounts server should be.
    Refused,
    /// The user revoked the refresh token (which kills its access tokens too).
    Revoked,
    /// Zoho invalidated every live access token server-side.
    Invalidated,
    /// Another client minted 15 more tokens from the same refresh token: the 16th evicts ours.
    Evicted,
}

/// What the caller should see.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A token (and, through the layer, a successful request).
    Token,
    /// `is_transient()`, retried after the back-off.
    Transient,
    /// `is_permanent()` plus a sharper predicate, never retried.
    Permanent(fn(&Error) -> bool, &'static str),
    /// `is_throttled()`, no call for minutes.
    Throttled,
    /// An unknown code: neither transient nor permanent, no call for minutes.
    Unrecognised(&'static str),
}

struct Row {
    situation: &'static str,
    trigger: Trigger,
    simulator: Box<dyn Fn(SimulatorBuilder) -> SimulatorBuilder + Send + Sync>,
    expect: Expect,
}

fn same(builder: SimulatorBuilder) -> SimulatorBuilder {
    builder
}

fn rows() -> Vec<Row> {
    let endpoint = |situation, fault, expect| Row {
        situation,
        trigger: Trigger::Endpoint(fault),
        simulator: Box::new(same),
        expect,
    };
    let throttled = |situation, status: StatusCode, language: Language| Row {
        situation,
        trigger: Trigger::Endpoint(Fault::Throttle),
        simulator: Box::new(move |b| b.throttle_status(status).throttle_language(language)),
        expect: Expect::Throttled,
    };
    let error = |code: &str| Fault::Error(code.to_owned());
    let invalid_client: fn(&Error) -> bool = Error::is_invalid_client;
    let invalid_grant: fn(&Error) -> bool = Error::is_invalid_grant;
    let rejected: fn(&Error) -> bool = |e| e.zoho_code() == Some("unsupported_grant_type");
    vec![
        endpoint(
            "token endpoint times out (answers long after the accounts timeout)",
            Fault::Slow(Duration::from_secs(600)),
            Expect::Transient,
        ),
        Row {
            situation: "token endpoint refuses connections",
            trigger: Trigger::Refused,
            simulator: Box::new(same),
            expect: Expect::Transient,
        },
        endpoint(
            "token endpoint drops the connection",
            Fault::Close,
            Expect::Transient,
        ),
        endpoint(
            "token endpoint answers 500",
            Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Expect::Transient,
        ),
        endpoint(
            "token endpoint answers 502",
            Fault::Status(StatusCode::BAD_GATEWAY),
            Expect::Transient,
        ),
        endpoint(
            "token endpoint answers 503",
            Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
            Expect::Transient,
        ),
        endpoint(
            "an HTML page at 200 (captive proxy)",
            Fault::Html,
            Expect::Transient,
        ),
        endpoint("an empty body at 200", Fault::Empty, Expect::Transient),
        endpoint("truncated JSON", Fault::TruncatedJson, Expect::Transient),
        endpoint("malformed JSON", Fault::MalformedJson, Expect::Transient),
        endpoint(
            "200 `{\"error\":\"invalid_client\"}`",
            error("invalid_client"),
            Expect::Permanent(invalid_client, "is_invalid_client()"),
        ),
        endpoint(
            "200 `{\"error\":\"invalid_client_secret\"}`",
            error("invalid_client_secret"),
            Expect::Permanent(invalid_client, "is_invalid_client()"),
        ),
        endpoint(
            "200 `{\"error\":\"invalid_code\"}`",
            error("invalid_code"),
            Expect::Permanent(invalid_grant, "is_invalid_grant()"),
        ),
        endpoint(
            "200 `{\"error\":\"unsupported_grant_type\"}`",
            error("unsupported_grant_type"),
            Expect::Permanent(rejected, "zoho_code() = unsupported_grant_type"),
        ),
        endpoint(
            "200 with an unknown error code",
            error("brand_new_error"),
            Expect::Unrecognised("brand_new_error"),
        ),
        throttled(
            "throttled at 200, in English",
            StatusCode::OK,
            Language::English,
        ),
        throttled(
            "throttled at 400, in English",
            StatusCode::BAD_REQUEST,
            Language::English,
        ),
        throttled(
            "throttled at 200, in Chinese",
            StatusCode::OK,
            Language::Chinese,
        ),
        throttled(
            "throttled at 400, in Chinese",
            StatusCode::BAD_REQUEST,
            Language::Chinese,
        ),
        endpoint(
            "legacy `\"expires_in_sec\":3600,\"expires_in\":3600000`",
            Fault::LegacyExpires,
            Expect::Token,
        ),
        Row {
            situation: "the refresh token is revoked",
            trigger: Trigger::Revoked,
            simulator: Box::new(same),
            expect: Expect::Permanent(invalid_grant, "is_invalid_grant()"),
        },
        Row {
            situation: "Zoho invalidates every live access token",
            trigger: Trigger::Invalidated,
            simulator: Box::new(same),
            expect: Expect::Token,
        },
        Row {
            situation: "a 16th token, minted elsewhere, evicts ours",
            trigger: Trigger::Evicted,
            // Zoho's 10-per-10-minutes limit would throttle the 16 mints first.
            simulator: Box::new(|b| b.rate_limit(100, Duration::from_secs(600))),
            expect: Expect::Token,
        },
    ]
}

/// `front` over a layer of `cache`, and the `Authorization` headers it sends below it.
fn layer(cache: &TokenCache, front: Front) -> (Built, Spy) {
    let spy = Spy::default();
    let service = front::build(front, &ZohoAuthLayer::new(cache.clone()), &spy.0);
    (service, spy)
}

/// What a front end sent below it.
#[derive(Default)]
struct Spy(Seen);

impl Spy {
    /// The `Authorization` headers sent so far, oldest first.
    fn headers(&self) -> Vec<Option<http::HeaderValue>> {
        self.0.lock().unwrap().clone()
    }
}

/// Sends one GET through the front end and reads the answer: its status or the error, and how
/// long the caller waited.
async fn send(service: &Built, url: &str) -> (Result<StatusCode, BoxError>, Duration) {
    let started = Instant::now();
    let result = service
        .get(url)
        .await
        .map(|(status, _, _)| StatusCode::from_u16(status).unwrap());
    (result, started.elapsed())
}

fn zoho_error(error: &BoxError) -> &Error {
    error
        .downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("not a zoho_auth::Error: {error:?}"))
}

/// The predicates that hold, as the table shows them.
fn describe(error: &Error) -> String {
    let mut parts: Vec<String> = [
        (error.is_transient(), "is_transient()"),
        (error.is_permanent(), "is_permanent()"),
        (error.is_invalid_client(), "is_invalid_client()"),
        (error.is_invalid_grant(), "is_invalid_grant()"),
        (error.is_throttled(), "is_throttled()"),
        (
            error.is_rate_limited() && !error.is_throttled(),
            "is_rate_limited()",
        ),
        (error.is_timeout(), "is_timeout()"),
    ]
    .into_iter()
    .filter(|(holds, _)| *holds)
    .map(|(_, name)| format!("`{name}`"))
    .collect();
    if parts.is_empty() {
        parts.push("neither transient nor permanent".to_owned());
    }
    if let Some(code) = error.zoho_code() {
        parts.push(format!("(`{code}`)"));
    }
    parts.join(" ")
}

fn check(expect: Expect, error: &Error) {
    match expect {
        Expect::Token => panic!("expected a token, got {error:?}"),
        Expect::Transient => assert!(
            error.is_transient() && !error.is_permanent() && !error.is_rate_limited(),
            "{error:?}"
        ),
        Expect::Permanent(predicate, name) => {
            assert!(error.is_permanent(), "{error:?}");
            assert!(predicate(error), "not {name}: {error:?}");
            assert!(!error.is_transient() && !error.is_rate_limited());
            assert_eq!(error.retry_after(), None, "{error:?}");
        }
        Expect::Throttled => {
            assert!(
                error.is_throttled() && error.is_rate_limited() && !error.is_permanent(),
                "{error:?}"
            );
            assert!(matches!(
                error.zoho_code(),
                Some("Access Denied" | "拒绝访问")
            ));
        }
        Expect::Unrecognised(code) => {
            assert!(
                !error.is_transient() && !error.is_permanent() && !error.is_rate_limited(),
                "{error:?}"
            );
            assert_eq!(error.zoho_code(), Some(code));
        }
    }
    if matches!(expect, Expect::Throttled | Expect::Unrecognised(_)) {
        // Zoho's lockout outlasts the burst: 5 minutes ± 20 %.
        let wait = error.retry_after().expect("a retry_after");
        assert!(
            wait >= Duration::from_secs(240) && wait <= Duration::from_secs(360),
            "{wait:?}"
        );
    }
}

fn accounts_for(trigger: &Trigger, zoho: &Simulator) -> AccountsClient {
    let url = match trigger {
        Trigger::Refused => format!("http://127.0.0.1:{}", refused_port()),
        _ => zoho.url(),
    };
    AccountsClient::with_timeout(
        Accounts::custom(&url).unwrap(),
        zoho.client_id(),
        zoho.client_secret(),
        ACCOUNTS_TIMEOUT,
    )
    .unwrap()
}

fn assert_budget(cache: &TokenCache, zoho: &Simulator, baseline: u64, trigger: &Trigger) {
    let stats = cache.stats();
    assert!(stats.token_requests <= BUDGET, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "the local budget was never needed");
    let seen = zoho.counters().token_requests - baseline;
    let expected = match trigger {
        Trigger::Refused => 0,
        _ => stats.token_requests,
    };
    assert_eq!(seen, expected, "the simulator saw every token request");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A fresh cache, no token: the fault meets the first token request.
async fn no_token_yet(row: &Row, front: Front) -> Option<(String, u64, Duration)> {
    if matches!(row.trigger, Trigger::Invalidated | Trigger::Evicted) {
        return None; // these need a token to act on
    }
    let zoho = (row.simulator)(Simulator::builder()).start().await.unwrap();
    let refresh = zoho.mint_refresh_token(&[]);
    let cache = TokenCache::builder(accounts_for(&row.trigger, &zoho), refresh.clone())
        .max_wait(MAX_WAIT)
        .backoff(COLD_BACKOFF, 2 * COLD_BACKOFF)
        .build()
        .unwrap();
    match &row.trigger {
        Trigger::Endpoint(fault) => zoho.inject(fault.clone(), 1),
        Trigger::Revoked => zoho.revoke_refresh_token(&refresh),
        _ => {}
    }
    let (service, spy) = layer(&cache, front);
    let url = format!("{}/crm/v8/Leads", zoho.url());

    let (first, waited) = send(&service, &url).await;
    assert!(waited < COLD_BOUND, "the first request waited {waited:?}");
    let mut longest = waited;
    let text = match (row.expect, first) {
        (Expect::Token, Ok(status)) => {
            assert_eq!(status, StatusCode::OK);
            let token = cache.cached().expect("a token");
            assert_eq!(
                spy.headers()[0].as_ref().unwrap(),
                header_for(token.access_token()).as_str()
            );
            assert!(token.expires_in() <= Duration::from_secs(3600));
            assert!(token.expires_in() > Duration::from_secs(3500));
            assert_eq!(cache.stats().token_requests, 1);
            format!(
                "a token valid for {} min, not 41 days",
                token.expires_in().as_secs().div_ceil(60)
            )
        }
        (expect, Ok(status)) => panic!("expected {expect:?}, the request got {status}"),
        (expect, Err(error)) => {
            let error = zoho_error(&error).clone();
            check(expect, &error);
            assert_eq!(cache.stats().token_requests, 1);
            assert!(spy.headers().is_empty(), "nothing was sent without a token");
            // Right away again: the cache does not call Zoho, it answers from what it learned.
            let (again, waited) = send(&service, &url).await;
            longest = longest.max(waited);
            let again = again.expect_err("still no token");
            let again = zoho_error(&again);
            check(expect, again);
            assert_eq!(
                cache.stats().token_requests,
                1,
                "no new token request at once after {error:?}"
            );
            let next = match expect {
                Expect::Transient => {
                    let wait = error.retry_after().expect("a back-off");
                    assert!(wait >= COLD_BACKOFF / 2 && wait <= COLD_BACKOFF, "{wait:?}");
                    fast_forward(wait + Duration::from_secs(1)).await;
                    let (after, waited) = send(&service, &url).await;
                    assert!(waited < COLD_BOUND, "waited {waited:?}");
                    longest = longest.max(waited);
                    assert_eq!(
                        cache.stats().token_requests,
                        2,
                        "one retry after the back-off"
                    );
                    match (&row.trigger, after) {
                        (Trigger::Refused, Err(error)) => {
                            assert!(zoho_error(&error).is_transient());
                            "retried after the back-off (still refused: back-off doubles)"
                                .to_owned()
                        }
                        (_, Ok(status)) => {
                            assert_eq!(status, StatusCode::OK);
                            "retried after the back-off → token".to_owned()
                        }
                        (_, Err(error)) => panic!("no recovery after the back-off: {error:?}"),
                    }
                }
                Expect::Throttled | Expect::Unrecognised(_) => {
                    "no call to Zoho for `retry_after` = 5 min ± 20 %".to_owned()
                }
                Expect::Permanent(..) => "never retried until `set_refresh_token`".to_owned(),
                Expect::Token => unreachable!(),
            };
            format!("{}; {next}", describe(&error))
        }
    };
    assert_budget(&cache, &zoho, 0, &row.trigger);
    Some((text, cache.stats().token_requests, longest))
}

/// A cache whose valid token is in its stale window: the next request starts a background
/// refresh (see the module comment).
async fn stale_cache(zoho: &Simulator, trigger: &Trigger) -> (TokenCache, RefreshToken, String) {
    let refresh = zoho.mint_refresh_token(&[]);
    let minted = accounts_client(zoho).refresh(&refresh).await.unwrap();
    let now = SystemTime::now();
    let mut set = TokenSet::new(refresh.clone());
    set.access = Some(StoredAccess::new(
        minted.access_token.clone(),
        now - Duration::from_secs(55 * 60),
        now + Duration::from_secs(5 * 60),
        minted.api_domain.clone(),
        Vec::new(),
    ));
    let store = Arc::new(MemoryStore::new());
    common::put(&*store, &set).await.unwrap();
    let cache = TokenCache::builder(accounts_for(trigger, zoho), refresh.clone())
        .store(store)
        .max_wait(MAX_WAIT)
        // Long enough that no second background attempt starts during the row.
        .backoff(Duration::from_secs(600), Duration::from_secs(1200))
        .build()
        .unwrap();
    (cache, refresh, header_for(&minted.access_token))
}

/// A cache with a valid token meets the fault: returns the table cell, the cache's token
/// requests and the longest wait.
async fn with_a_valid_token(row: &Row, front: Front) -> (String, u64, Duration) {
    let zoho = (row.simulator)(Simulator::builder()).start().await.unwrap();
    let url = format!("{}/crm/v8/Leads", zoho.url());
    match &row.trigger {
        Trigger::Endpoint(_) | Trigger::Refused => {
            let (cache, _refresh, old) = stale_cache(&zoho, &row.trigger).await;
            let baseline = zoho.counters().token_requests;
            if let Trigger::Endpoint(fault) = &row.trigger {
                zoho.inject(fault.clone(), 1);
            }
            let (service, spy) = layer(&cache, front);
            // Requests until the background refresh settled, then 20 more: none waits, each
            // succeeds. The adoption counts as one; the background attempt as a refresh or a
            // failure.
            let mut longest = Duration::ZERO;
            let deadline = Instant::now() + ACCOUNTS_TIMEOUT + Duration::from_secs(20);
            let mut sent = 0;
            loop {
                let stats = cache.stats();
                let settled = stats.adopted + stats.refreshes + stats.failures >= 2;
                if settled && sent >= 20 {
                    break;
                }
                let (result, waited) = send(&service, &url).await;
                assert_eq!(result.unwrap(), StatusCode::OK);
                assert!(
                    waited < WARM_BOUND,
                    "a request with a valid token waited {waited:?}"
                );
                longest = longest.max(waited);
                if settled {
                    sent += 1;
                } else {
                    assert!(
                        Instant::now() < deadline,
                        "the background refresh never settled"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let stats = cache.stats();
            assert_eq!(stats.token_requests, 1, "one background refresh: {stats:?}");
            assert_budget(&cache, &zoho, baseline, &row.trigger);
            let headers = spy.headers();
            let text = match row.expect {
                Expect::Token => {
                    let new = cache.cached().expect("the refreshed token");
                    let new_header = header_for(new.access_token());
                    assert_ne!(new_header, old);
                    assert!(new.expires_in() <= Duration::from_secs(3600));
                    assert!(new.expires_in() > Duration::from_secs(3500));
                    assert!(headers
                        .iter()
                        .rev()
                        .take(20)
                        .all(|h| h.as_ref().unwrap() == new_header.as_str()));
                    assert_eq!(stats.failures, 0);
                    "the background refresh brings a one-hour token".to_owned()
                }
                _ => {
                    assert_eq!(stats.failures, 1, "{stats:?}");
                    assert!(
                        headers.iter().all(|h| h.as_ref().unwrap() == old.as_str()),
                        "every request carried the still-valid token"
                    );
                    let token = cache.token().await.expect("the cache still has a token");
                    assert_eq!(header_for(token.access_token()), old);
                    "every request is served at once with the still-valid token; the one \
                     background refresh fails"
                        .to_owned()
                }
            };
            (text, stats.token_requests, longest)
        }
        Trigger::Revoked | Trigger::Invalidated | Trigger::Evicted => {
            let refresh = zoho.mint_refresh_token(&[]);
            let cache = TokenCache::builder(accounts_for(&row.trigger, &zoho), refresh.clone())
                .max_wait(MAX_WAIT)
                .build()
                .unwrap();
            let (service, spy) = layer(&cache, front);
            let (first, mut longest) = send(&service, &url).await;
            assert_eq!(first.unwrap(), StatusCode::OK);
            let old = cache.cached().unwrap();
            match &row.trigger {
                Trigger::Revoked => zoho.revoke_refresh_token(&refresh),
                Trigger::Invalidated => zoho.invalidate_all_tokens(),
                _ => {
                    let elsewhere = accounts_client(&zoho);
                    for _ in 0..15 {
                        elsewhere.refresh(&refresh).await.unwrap();
                    }
                    assert_eq!(zoho.live_tokens(&refresh), 15);
                }
            }
            assert!(!zoho.is_access_token_live(old.access_token().expose()));
            let (result, waited) = send(&service, &url).await;
            assert!(waited < COLD_BOUND, "waited {waited:?}");
            longest = longest.max(waited);
            let stats = cache.stats();
            let text = match (row.expect, result) {
                (Expect::Token, Ok(status)) => {
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(
                        (stats.token_requests, stats.invalidations, stats.replays),
                        (2, 1, 1),
                        "one refresh, one replay"
                    );
                    let headers = spy.headers();
                    let new = cache.cached().unwrap();
                    assert_eq!(
                        headers[headers.len() - 1].as_ref().unwrap(),
                        header_for(new.access_token()).as_str()
                    );
                    assert_eq!(
                        headers[headers.len() - 2].as_ref().unwrap(),
                        header_for(old.access_token()).as_str()
                    );
                    "the request gets `INVALID_TOKEN`, the token is refreshed once and the request replayed once: success".to_owned()
                }
                (expect, Err(error)) => {
                    let error = zoho_error(&error).clone();
                    check(expect, &error);
                    assert_eq!(stats.token_requests, 2, "{stats:?}");
                    let (again, waited) = send(&service, &url).await;
                    longest = longest.max(waited);
                    check(expect, zoho_error(&again.expect_err("still revoked")));
                    assert_eq!(cache.stats().token_requests, 2, "never retried");
                    format!(
                        "no valid token is left (revocation kills it too): {}, never retried",
                        describe(&error)
                    )
                }
                (expect, Ok(status)) => panic!("expected {expect:?}, the request got {status}"),
            };
            let baseline = if matches!(row.trigger, Trigger::Evicted) {
                15
            } else {
                0
            };
            assert_budget(&cache, &zoho, baseline, &row.trigger);
            (text, cache.stats().token_requests, longest)
        }
    }
}

/// One front end's run of a row: its texts, token requests and longest waits.
struct Outcome {
    front: Front,
    cold: Option<(String, u64, Duration)>,
    warm: (String, u64, Duration),
}

impl Outcome {
    /// What must agree between front ends: the texts and token counts (waits vary by run).
    fn seen(&self) -> (Option<(String, u64)>, (String, u64)) {
        (
            self.cold
                .as_ref()
                .map(|(text, requests, _)| (text.clone(), *requests)),
            (self.warm.0.clone(), self.warm.1),
        )
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

// Current-thread, for `fast_forward`.
#[tokio::test]
async fn every_fault_has_a_bounded_typed_outcome_and_a_valid_token_keeps_being_served() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let started = Instant::now();
    let mut table = vec![
        format!(
            "| what happens when ... | no valid token yet | with a valid token | token requests | longest wait (bounds {} / {}) | front ends |",
            secs(COLD_BOUND),
            secs(WARM_BOUND)
        ),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    let mut failed = Vec::new();
    for row in rows() {
        let row = Arc::new(row);
        let task = {
            let row = row.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for front in FRONTS {
                    let cold = no_token_yet(&row, front).await;
                    let warm = with_a_valid_token(&row, front).await;
                    outcomes.push(Outcome { front, cold, warm });
                }
                outcomes
            })
        };
        match task.await {
            Ok(outcomes) => {
                let first = outcomes[0].seen();
                let differing: Vec<String> = outcomes
                    .iter()
                    .filter(|outcome| outcome.seen() != first)
                    .map(|outcome| format!("{:?}: {:?}", outcome.front, outcome.seen()))
                    .collect();
                let agreement = if differing.is_empty() {
                    "the same in all 3".to_owned()
                } else {
                    failed.push(row.situation);
                    format!("DIFFER from tower's {first:?}: {}", differing.join("; "))
                };
                let cold_longest = outcomes
                    .iter()
                    .map(|o| o.cold.as_ref().map_or(Duration::ZERO, |cold| cold.2))
                    .max()
                    .unwrap_or_default();
                let warm_longest = outcomes.iter().map(|o| o.warm.2).max().unwrap_or_default();
                let Outcome {
                    cold,
                    warm: (warm, warm_requests, _),
                    ..
                } = outcomes.into_iter().next().expect("three front ends");
                let (cold_text, cold_requests) = match cold {
                    Some((text, requests, _)) => (text, requests.to_string()),
                    None => ("—".to_owned(), "—".to_owned()),
                };
                table.push(format!(
                    "| {} | {} | {} | {} / {} | {} / {} | {agreement} |",
                    row.situation,
                    cold_text,
                    warm,
                    cold_requests,
                    warm_requests,
                    if cold_text == "—" {
                        "—".to_owned()
                    } else {
                        secs(cold_longest)
                    },
                    secs(warm_longest),
                ));
            }
            Err(error) => {
                let message = error
                    .try_into_panic()
                    .ok()
                    .and_then(|payload| {
                        payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    })
                    .unwrap_or_default();
                table.push(format!("| {} | FAILED: {message} | | | | |", row.situation));
                failed.push(row.situation);
            }
        }
    }
    println!("\nWhat happens when ... (token requests and longest wait: no token yet / with a valid token)\n");
    println!("{}", table.join("\n"));
    println!(
        "\n{} rows in {:.1} s",
        table.len() - 2,
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "rows failed: {failed:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}
