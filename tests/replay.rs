//! Recognising dead tokens in each product's dialect, refreshing once and replaying once.

mod common;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{Empty, Full};
use tokio::sync::Notify;
use tower::Layer;
use tower::{Service, ServiceExt};
use zoho_auth::classify::{Classifier, Rule};
use zoho_auth::sim::{body_sha, Simulator};
use zoho_auth::{ConnectionId, TokenCache, ZohoAuthLayer};

use common::{body_text, cache_builder, get, http_service, start, Recorder, CRM_INVALID_TOKEN};

#[tokio::test]
async fn a_server_side_invalidation_is_refreshed_and_replayed_once() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let service = http_service(&cache);
    let url = format!("{}/crm/v8/users?type=CurrentUser", zoho.url());
    assert_eq!(
        service.clone().oneshot(get(&url)).await.unwrap().status(),
        200
    );

    zoho.invalidate_all_tokens();
    let response = service.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(body_text(response).await.contains("\"users\""));

    let stats = cache.stats();
    assert_eq!(
        (stats.token_requests, stats.replays, stats.invalidations),
        (2, 1, 1)
    );
    assert_eq!(zoho.counters().api_token_errors, 1);
}

#[tokio::test]
async fn every_products_dead_token_dialect_is_recognised() {
    let zoho = Simulator::builder()
        .rate_limit(100, Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let cache = cache_builder(&zoho)
        .budget(100, Duration::from_secs(600))
        .build()
        .unwrap();
    let service = http_service(&cache);
    cache.token().await.unwrap();
    let paths = [
        "/crm/v8/Leads",
        "/bigin/v2/Contacts",
        "/desk/api/v1/tickets",
        "/books/v3/invoices",
        "/invoice/v3/invoices",
        "/inventory/v1/items",
        "/mail/api/accounts",
        "/projects/api/v3/portals",
        "/people/api/forms",
        "/workdrive/api/v1/files/abc",
        "/workdrive/api/v1/teams",
        "/oauth/user/info",
    ];
    for (i, path) in paths.iter().enumerate() {
        zoho.invalidate_all_tokens();
        let response = service
            .clone()
            .oneshot(get(&format!("{}{path}", zoho.url())))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let stats = cache.stats();
        assert_eq!(stats.replays, i as u64 + 1, "{path} was replayed");
    }
    assert_eq!(zoho.counters().api_token_errors, paths.len() as u64);
}

#[tokio::test]
async fn a_scope_mismatch_is_handed_back_without_a_refresh() {
    let zoho = Simulator::start().await.unwrap();
    let cache = TokenCache::new(
        common::accounts_client(&zoho),
        zoho.mint_refresh_token(&["ZohoCRM.modules.ALL"]),
    );
    let service = http_service(&cache);
    for path in [
        "/desk/api/v1/tickets",
        "/people/api/forms",
        "/workdrive/api/v1/files/x",
        "/bigin/v2/Contacts",
    ] {
        let response = service
            .clone()
            .oneshot(get(&format!("{}{path}", zoho.url())))
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.token_requests, stats.replays, stats.invalidations),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn a_post_body_is_replayed_byte_for_byte() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let service = http_service(&cache);
    cache.token().await.unwrap();
    zoho.invalidate_all_tokens();

    let body = Bytes::from(format!(
        "{{\"data\":[{{\"Last_Name\":\"{}\"}}]}}",
        "x".repeat(2048)
    ));
    let request = Request::post(format!("{}/crm/v8/Leads", zoho.url()))
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(echo["body_bytes"], body.len());
    assert_eq!(echo["body_sha"], body_sha(&body));
    assert_eq!(cache.stats().replays, 1);
}

#[tokio::test]
async fn a_streaming_body_is_not_replayed_and_the_error_comes_back_unchanged() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let service = http_service(&cache);
    cache.token().await.unwrap();
    zoho.invalidate_all_tokens();

    let request = Request::post(format!("{}/crm/v8/Leads", zoho.url()))
        .body(Chunks::new(vec![
            Bytes::from_static(b"{\"data\":"),
            Bytes::from_static(b"[]}"),
        ]))
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    let text = body_text(response).await;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "INVALID_TOKEN", "{text}");
    let stats = cache.stats();
    assert_eq!((stats.replays, stats.invalidations), (0, 1));

    // The dead token was dropped all the same: the next request gets a fresh one, no replay.
    let next = Request::get(format!("{}/crm/v8/Leads", zoho.url()))
        .body(Chunks::new(VecDeque::new()))
        .unwrap();
    let response = service.oneshot(next).await.unwrap();
    assert_eq!(response.status(), 200);
    let stats = cache.stats();
    assert_eq!((stats.token_requests, stats.replays), (2, 0));
}

#[tokio::test]
async fn a_body_over_the_replay_limit_is_not_buffered_or_replayed() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let service = tower::Layer::layer(
        &ZohoAuthLayer::new(cache.clone()).max_replay_body(100),
        client,
    );
    cache.token().await.unwrap();
    zoho.invalidate_all_tokens();
    let request = Request::post(format!("{}/crm/v8/Leads", zoho.url()))
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(cache.stats().replays, 0);
}

#[tokio::test]
async fn a_request_is_replayed_at_most_once_and_a_fresh_token_error_stops_the_refreshing() {
    let (zoho, cache) = start(Simulator::builder()).await;
    // A service that calls every token dead, as a token used against the wrong DC would be.
    let inner = Recorder::new(|_, _| (StatusCode::UNAUTHORIZED, CRM_INVALID_TOKEN.to_owned()));
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let url = format!("{}/crm/v8/Leads", zoho.url());

    let response = service.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(inner.seen().len(), 2, "the original and one replay");
    assert_ne!(inner.seen()[0].authorization, inner.seen()[1].authorization);
    assert_eq!(zoho.counters().token_requests, 2);

    for _ in 0..5 {
        let response = service.clone().oneshot(get(&url)).await.unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(
        inner.seen().len(),
        7,
        "no more replays once a fresh token failed the same way"
    );
    assert_eq!(zoho.counters().token_requests, 2, "no refresh loop");
}

#[tokio::test]
async fn a_late_error_for_an_old_token_uses_the_newer_token_instead_of_refreshing() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let old = cache.token().await.unwrap();
    let old_header = format!("Zoho-oauthtoken {}", old.access_token().expose());
    let release = Arc::new(Notify::new());
    let inner = {
        let old_header = old_header.clone();
        Recorder::new(move |_, seen| {
            if seen.authorization.as_ref().unwrap() == old_header.as_str() {
                (StatusCode::UNAUTHORIZED, CRM_INVALID_TOKEN.to_owned())
            } else {
                (StatusCode::OK, "{}".to_owned())
            }
        })
    };
    // Hold the first request's answer until another caller has refreshed.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gate = {
        let release = release.clone();
        tower::ServiceBuilder::new()
            .then(move |result| {
                let (release, first) = (release.clone(), first.clone());
                async move {
                    if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        release.notified().await;
                    }
                    result
                }
            })
            .service(inner.clone())
    };
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), gate);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let pending = tokio::spawn(service.clone().oneshot(get(&url)));
    common::wait_until(Duration::from_secs(5), "the first request was sent", || {
        inner.seen().len() == 1
    })
    .await;

    cache.invalidate(&old);
    let newer = cache.token().await.unwrap();
    release.notify_one();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let seen = inner.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].authorization.as_ref().unwrap(),
        format!("Zoho-oauthtoken {}", newer.access_token().expose()).as_str()
    );
    assert_eq!(
        zoho.counters().token_requests,
        2,
        "the late 401 did not throw away the newer token"
    );
    assert_eq!(cache.cached().unwrap().access_token(), newer.access_token());
}

#[tokio::test]
async fn large_error_responses_stream_through_unread() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let big = format!(
        "{{\"code\":\"INVALID_TOKEN\",\"pad\":\"{}\"}}",
        "p".repeat(100_000)
    );
    let inner = Recorder::new({
        let big = big.clone();
        move |_, _| (StatusCode::UNAUTHORIZED, big.clone())
    });
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let response = service
        .oneshot(get(&format!("{}/crm/v8/Leads", zoho.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(body_text(response).await, big, "delivered intact");
    assert_eq!(inner.seen().len(), 1);
    assert_eq!(
        cache.stats().invalidations,
        0,
        "too large to be a Zoho token error; not read"
    );
}

#[tokio::test]
async fn a_user_rule_teaches_the_classifier_a_new_dialect() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let inner = Recorder::new(move |index, _| match index {
        0 => (
            StatusCode::FORBIDDEN,
            r#"{"error":{"reason":"token_expired"}}"#.to_owned(),
        ),
        _ => (StatusCode::OK, "{}".to_owned()),
    });
    let classifier = Classifier::zoho()
        .with_rule(Rule::json(
            StatusCode::FORBIDDEN,
            "/error/reason",
            "token_expired",
        ))
        .unwrap();
    let layer = ZohoAuthLayer::new(cache.clone()).classifier(classifier);
    let service = tower::Layer::layer(&layer, inner.clone());
    let response = service
        .oneshot(get(&format!("{}/crm/v8/Leads", zoho.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(inner.seen().len(), 2);
    assert_eq!(cache.stats().replays, 1);
}

#[tokio::test]
async fn a_body_longer_than_its_size_hint_fails_once_the_replay_buffer_is_full() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    cache.token().await.unwrap();

    // Promises 16 bytes, would yield 4 MiB.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let body = Chunks::lying(16, chunk.clone(), 64);
    let pulled = body.pulled.clone();
    let request = Request::post(format!("{}/crm/v8/Leads", zoho.url()))
        .body(body)
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    let error = error
        .downcast_ref::<zoho_auth::Error>()
        .unwrap_or_else(|| panic!("a zoho_auth::Error, not {error:?}"));
    assert!(error.is_body(), "{error:?}");
    assert!(error.to_string().contains("size hint"), "{error}");
    let pulled = pulled.load(Ordering::SeqCst);
    assert!(
        pulled <= zoho_auth::DEFAULT_MAX_REPLAY_BODY + chunk.len(),
        "read {pulled} bytes: buffering stops at the replay limit"
    );
    assert!(inner.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_body_whose_size_hint_says_empty_is_replayed_with_what_it_yielded() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let inner = Recorder::new(|index, _| match index {
        0 => (StatusCode::UNAUTHORIZED, CRM_INVALID_TOKEN.to_owned()),
        _ => (StatusCode::OK, "{}".to_owned()),
    });
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let request = Request::post(format!("{}/crm/v8/Leads", zoho.url()))
        .body(Chunks::lying(0, Bytes::from_static(b"{\"data\":[]}"), 1))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = inner.seen();
    assert_eq!(seen.len(), 2, "sent and replayed");
    assert_eq!(seen[0].body, &b"{\"data\":[]}"[..]);
    assert_eq!(
        seen[1].body, seen[0].body,
        "the replay carried the same body"
    );
}

/// A streaming body yielding `queue`, of unknown size (like a file or a channel: it cannot be
/// buffered ahead) or, for a body that lies, of the size `hint` says, whatever it yields.
struct Chunks {
    queue: VecDeque<Bytes>,
    hint: Option<u64>,
    /// Bytes yielded so far.
    pulled: Arc<AtomicUsize>,
}

impl Chunks {
    fn new(queue: impl Into<VecDeque<Bytes>>) -> Self {
        Self {
            queue: queue.into(),
            hint: None,
            pulled: Arc::default(),
        }
    }

    /// `chunks` copies of `chunk`, under a size hint of exactly `hint` bytes.
    fn lying(hint: u64, chunk: Bytes, chunks: usize) -> Self {
        Self {
            hint: Some(hint),
            ..Self::new(vec![chunk; chunks])
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let chunk = self.queue.pop_front();
        if let Some(chunk) = &chunk {
            self.pulled.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint.map_or_else(
            http_body::SizeHint::default,
            http_body::SizeHint::with_exact,
        )
    }
}

/// An in-process inner service that rejects the first token it sees as CRM does and answers
/// every other one with 200 and its label.
#[derive(Clone)]
struct Labelled {
    label: &'static str,
    first_token: Arc<std::sync::Mutex<Option<http::HeaderValue>>>,
}

impl<B> tower::Service<Request<B>> for Labelled {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let token = request.headers()[http::header::AUTHORIZATION].clone();
        let mut first = self.first_token.lock().unwrap();
        let response = if *first.get_or_insert_with(|| token.clone()) == token {
            http::Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Full::from(CRM_INVALID_TOKEN))
        } else {
            http::Response::builder()
                .header("x-label", self.label)
                .body(Full::default())
        };
        std::future::ready(Ok(response.unwrap()))
    }
}

#[tokio::test]
async fn a_replay_goes_through_the_inner_service_as_changed_by_get_mut() {
    let (_zoho, cache) = start(Simulator::builder()).await;
    let layer = ZohoAuthLayer::new(cache.clone())
        .allow_host("www.zohoapis.com")
        .unwrap();
    let mut service = tower::Layer::layer(
        &layer,
        Labelled {
            label: "as built",
            first_token: Arc::default(),
        },
    );
    service.get_mut().label = "changed";

    let response = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut service)
        .await
        .unwrap()
        .call(get("https://www.zohoapis.com/crm/v8/Leads"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-label"], "changed");
    assert_eq!(
        (cache.stats().replays, cache.stats().token_requests),
        (1, 2)
    );
}

/// A late dead-token answer is replayed with the token that had already replaced the dead one
/// (minted ahead of any rejection). If Zoho killed that one too — every live token invalidated at
/// once — its rejection is news, not a sign that refreshing cannot help: it is invalidated and
/// the next request gets a new token, instead of 401s for the next two minutes.
#[tokio::test]
async fn a_replacement_killed_too_is_refreshed_not_distrusted() {
    let zoho = Arc::new(
        Simulator::builder()
            .token_lifetime(Duration::from_secs(1))
            .start()
            .await
            .unwrap(),
    );
    let cache = cache_builder(&zoho).build().unwrap();
    let first = cache.token().await.unwrap();

    // CRM as far as tokens go; the first request is held until `release`.
    let release = Arc::new(Notify::new());
    let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let api = tower::service_fn({
        let (zoho, release, held) = (zoho.clone(), release.clone(), held.clone());
        move |request: Request<zoho_auth::RequestBody<Empty<Bytes>>>| {
            let (zoho, release, held) = (zoho.clone(), release.clone(), held.clone());
            async move {
                if held.swap(false, Ordering::SeqCst) {
                    release.notified().await;
                }
                let token = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
                    .unwrap_or_default()
                    .to_owned();
                let (status, body) = if zoho.is_access_token_live(&token) {
                    (StatusCode::OK, "{}")
                } else {
                    (StatusCode::UNAUTHORIZED, CRM_INVALID_TOKEN)
                };
                let response = http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        }
    });
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), api);
    let url = format!("{}/crm/v8/Leads", zoho.url());

    // A request goes out with the first token and waits at the server.
    let late = tokio::spawn(service.clone().oneshot(get(&url)));
    while held.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // The first token expires and is replaced ahead of any rejection, by a long-lived one.
    zoho.set_token_lifetime(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replacement = cache.token().await.unwrap();
    assert_ne!(replacement.access_token(), first.access_token());
    // Zoho kills every live token; the late request's 401 arrives now.
    zoho.invalidate_all_tokens();
    release.notify_one();
    let response = late.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        401,
        "replayed with the replacement, dead too"
    );

    // The next request gets a new, live token.
    let response = service.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the killed replacement was distrusted instead of refreshed"
    );
    assert_eq!(zoho.counters().token_requests, 3);
}

/// An in-process inner service that rejects the first token it sees as CRM does, answers every
/// other one with 200, and records what each request's extensions held.
#[derive(Clone, Default)]
struct Extended {
    first_token: Arc<std::sync::Mutex<Option<http::HeaderValue>>>,
    seen: Arc<std::sync::Mutex<Vec<Carried>>>,
}

/// How many extensions a request carried, and its connection and tag among them.
type Carried = (usize, Option<ConnectionId>, Option<Tag>);

#[derive(Clone, Copy, Debug, PartialEq)]
struct Tag(u32);

impl<B> tower::Service<Request<B>> for Extended {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let extensions = request.extensions();
        self.seen.lock().unwrap().push((
            extensions.len(),
            extensions.get::<ConnectionId>().cloned(),
            extensions.get::<Tag>().copied(),
        ));
        let token = request.headers()[http::header::AUTHORIZATION].clone();
        let mut first = self.first_token.lock().unwrap();
        let status = if *first.get_or_insert_with(|| token.clone()) == token {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        let body = Full::from(if status == StatusCode::OK {
            ""
        } else {
            CRM_INVALID_TOKEN
        });
        let response = http::Response::builder().status(status).body(body);
        std::future::ready(Ok(response.unwrap()))
    }
}

/// The replay's request carries the caller's extensions, whether a connection alone (kept
/// without copying the map) or with others.
#[tokio::test]
async fn a_replay_carries_the_requests_extensions() {
    let alice: ConnectionId = "alice".parse().unwrap();
    let tagged = (Some(alice.clone()), Some(Tag(7)));
    for (connection, tag) in [(Some(alice.clone()), None), tagged, (None, Some(Tag(7)))] {
        let (_zoho, cache) = start(Simulator::builder()).await;
        let inner = Extended::default();
        let service = ZohoAuthLayer::new(cache.clone())
            .allow_host("www.zohoapis.com")
            .unwrap()
            .layer(inner.clone());
        let mut request = get("https://www.zohoapis.com/crm/v8/Leads");
        if let Some(connection) = &connection {
            request.extensions_mut().insert(connection.clone());
        }
        if let Some(tag) = tag {
            request.extensions_mut().insert(tag);
        }
        let len = request.extensions().len();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(cache.stats().replays, 1);
        let sent = (len, connection, tag);
        assert_eq!(*inner.seen.lock().unwrap(), [sent.clone(), sent]);
    }
}
