//! The layer as a tower citizen: the header it adds, where it adds it, and how it composes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;
use zoho_auth::sim::Simulator;
use zoho_auth::{ZohoAuth, ZohoAuthLayer};

use common::{get, start, Recorder};

#[tokio::test]
async fn the_header_is_zoho_oauthtoken_and_marked_sensitive() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let inner = Recorder::ok();
    let service = ZohoAuth::new(inner.clone(), cache.clone());
    service
        .oneshot(get(&format!("{}/crm/v8/Leads", zoho.url())))
        .await
        .unwrap();
    let header = inner.seen()[0].authorization.clone().unwrap();
    let token = cache.cached().unwrap();
    assert_eq!(
        header,
        format!("Zoho-oauthtoken {}", token.access_token().expose()).as_str()
    );
    assert!(header.is_sensitive());
    assert_eq!(format!("{header:?}"), "Sensitive");
}

#[tokio::test]
async fn it_composes_with_other_tower_layers_around_a_hyper_client() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_secs(10))
        .concurrency_limit(4)
        .layer(
            tower_http::auth::AddAuthorizationLayer::basic("unused", "unused").as_sensitive(true),
        )
        .layer(ZohoAuthLayer::new(cache.clone()))
        .service(client);
    for _ in 0..3 {
        let request = get(&format!("{}/crm/v8/users?type=CurrentUser", zoho.url()));
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "the Zoho token replaced the outer Basic header"
        );
    }
    assert_eq!(cache.stats().token_requests, 1);
}

#[tokio::test]
async fn clones_of_the_layer_and_service_share_one_token() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let layer = ZohoAuthLayer::new(cache.clone());
    let a = tower::Layer::layer(&layer.clone(), Recorder::ok());
    let b = tower::Layer::layer(&layer, Recorder::ok());
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let (ra, rb) = tokio::join!(a.clone().oneshot(get(&url)), b.clone().oneshot(get(&url)));
    ra.unwrap();
    rb.unwrap();
    a.oneshot(get(&url)).await.unwrap();
    assert_eq!(zoho.counters().token_requests, 1);
}

/// An inner service that is not ready until told so.
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
    inner: Recorder,
}

impl<B> Service<Request<B>> for Gate
where
    Recorder: Service<Request<B>>,
{
    type Response = <Recorder as Service<Request<B>>>::Response;
    type Error = <Recorder as Service<Request<B>>>::Error;
    type Future = <Recorder as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        assert!(self.open.load(Ordering::SeqCst), "called before ready");
        self.inner.call(request)
    }
}

#[tokio::test]
async fn poll_ready_waits_for_the_inner_service() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let open = Arc::new(AtomicBool::new(false));
    let gate = Gate {
        open: open.clone(),
        inner: Recorder::ok(),
    };
    let mut service = ZohoAuth::new(gate, cache);
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let not_ready = tokio::time::timeout(
        Duration::from_millis(200),
        ServiceExt::<Request<http_body_util::Empty<bytes::Bytes>>>::ready(&mut service),
    )
    .await;
    assert!(
        not_ready.is_err(),
        "the layer reported ready while its inner service was not"
    );
    open.store(true, Ordering::SeqCst);
    let response = service.oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn only_the_tokens_own_hosts_get_it() {
    let (zoho, cache) = start(Simulator::builder()).await;
    cache.token().await.unwrap();
    let inner = Recorder::ok();
    let layer = ZohoAuthLayer::new(cache.clone())
        .allow_host("https://gateway.example.com:8443")
        .unwrap();
    let service = tower::Layer::layer(&layer, inner.clone());
    let port = zoho.addr().port();
    let urls = [
        (format!("http://127.0.0.1:{port}/crm/v8/Leads"), true),
        ("https://gateway.example.com:8443/crm".to_owned(), true),
        (
            format!(
                "http://127.0.0.1:{}/crm/v8/Leads",
                port.wrapping_add(1).max(1)
            ),
            false,
        ),
        ("https://cdn.example.com/file.pdf".to_owned(), false),
        ("https://gateway.example.com/other-port".to_owned(), false),
        ("https://www.zohoapis.eu/crm/v8/Leads".to_owned(), false),
    ];
    for (url, _) in &urls {
        service.clone().oneshot(get(url)).await.unwrap();
    }
    for ((url, expected), seen) in urls.iter().zip(inner.seen()) {
        assert_eq!(seen.authorization.is_some(), *expected, "{url}");
    }
}

#[tokio::test]
async fn plain_http_to_a_zoho_host_is_refused_before_sending() {
    let (_zoho, cache) = start(Simulator::builder()).await;
    let inner = Recorder::ok();
    let layer = ZohoAuthLayer::new(cache)
        .allow_host("www.zohoapis.com")
        .unwrap();
    let service = tower::Layer::layer(&layer, inner.clone());
    let error = service
        .oneshot(get("http://www.zohoapis.com/crm/v8/Leads"))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<zoho_auth::Error>().unwrap();
    assert!(error.is_insecure() && error.is_config(), "{error:?}");
    assert!(inner.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn below_a_redirect_layer_a_redirect_to_another_host_loses_the_token() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let elsewhere = "http://127.0.0.2:9/landing";
    let inner = Recorder::new(move |index, _| match index {
        0 => (StatusCode::FOUND, String::new()),
        _ => (StatusCode::OK, "{}".to_owned()),
    });
    // The recorder cannot set Location, so wrap it to add one to the first answer.
    let with_location = ServiceBuilder::new()
        .map_response(move |mut response: Response<_>| {
            if response.status() == StatusCode::FOUND {
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, elsewhere.parse().unwrap());
            }
            response
        })
        .service(inner.clone());
    let service = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(ZohoAuthLayer::new(cache))
        .service(with_location);
    let response = service
        .oneshot(
            Request::get(format!("{}/crm/v8/Leads", zoho.url()))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = inner.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].authorization.is_some());
    assert_eq!(seen[1].uri, elsewhere);
    assert!(
        seen[1].authorization.is_none(),
        "the token did not follow the redirect"
    );
}

/// Before the first token, a request to a host that can never get it (not a host of the cache's
/// data centre, not allowed) goes out at once: it neither waits for Zoho nor fails when Zoho is
/// down, nor spends the token budget.
#[tokio::test]
async fn a_request_that_never_gets_the_token_does_not_wait_for_one() {
    // The US accounts server: unreachable from here, so a token would never come.
    let client = zoho_auth::accounts::AccountsClient::new(
        zoho_auth::DataCenter::Us,
        zoho_auth::ClientId::new("1000.client"),
        zoho_auth::ClientSecret::new("secret"),
    )
    .unwrap();
    let cache = zoho_auth::TokenCache::new(client, zoho_auth::RefreshToken::new("1000.r.t"));
    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        service.oneshot(get("https://cdn.example.com/file.pdf")),
    )
    .await
    .expect("the request waited for a token it would never carry")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(inner.seen()[0].authorization.is_none());
    assert_eq!(
        cache.stats().token_requests,
        0,
        "Zoho was asked for a token"
    );
}
