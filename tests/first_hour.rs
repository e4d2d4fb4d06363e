//! A new user's first hour (issue 10): an existing hyper-util client wrapped, and relative URLs.
//! The client type held in state and called from many tasks is proven on the README's own
//! snippets (`tests/readme/state.rs`, `stack.rs`, run by `tests/readme_snippets.rs`), and the
//! layer saying why a request went without the token in `tests/withheld.rs`.

mod common;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use zoho_auth::sim::{body_sha, Simulator};
use zoho_auth::{ConvertBody, RequestBody, ZohoAuthLayer};

use common::{body_text, get, http_service, send, start, Recorder};

#[tokio::test]
async fn an_existing_full_bytes_client_is_wrapped_and_keeps_serving_plain_calls() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let plain: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut authenticated =
        ZohoAuthLayer::new(cache.clone()).layer(ConvertBody::new(plain.clone()));

    let response = send(
        &mut authenticated,
        Request::get(&url).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // A body the layer buffers, replayed through the same client after Zoho kills the token.
    zoho.invalidate_all_tokens();
    let body = Bytes::from(vec![b'x'; 1000]);
    let post = Request::post(&url).body(Full::new(body.clone())).unwrap();
    let response = send(&mut authenticated, post).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(echo["body_sha"], body_sha(&body));
    assert_eq!(cache.stats().replays, 1);

    // The application's own calls through the same client go without a token.
    let response = plain
        .request(Request::get(&url).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // One client typed for the layer's body serves unauthenticated calls too.
    let shared: Client<HttpConnector, RequestBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let unauthenticated = Request::get(&url)
        .body(Full::default())
        .unwrap()
        .map(RequestBody::from);
    assert_eq!(
        shared.request(unauthenticated).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let response = ZohoAuthLayer::new(cache.clone())
        .layer(shared)
        .oneshot(Request::get(&url).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn relative_urls_go_to_the_token_api_domain() {
    let (zoho, cache) = start(Simulator::builder()).await;
    let mut crm = http_service::<Empty<Bytes>>(&cache);

    // Before the first token the request waits for it, then goes to its api_domain.
    let response = send(&mut crm, get("/crm/v8/users?type=CurrentUser")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.starts_with("{\"users\""));

    // With the token cached, and again after Zoho killed it: replayed to the same place.
    for round in 0..2 {
        if round == 1 {
            zoho.invalidate_all_tokens();
        }
        let response = send(&mut crm, get("/crm/v8/Leads?page=2")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let echo: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(echo["path"], "/crm/v8/Leads");
    }
    assert_eq!(cache.stats().replays, 1);
    assert_eq!(cache.stats().token_requests, 2);

    // An absolute URL is used as given.
    let response = send(
        &mut crm,
        get(&format!("{}/desk/api/v1/tickets", zoho.url())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_routed_prefix_goes_to_its_host_and_gets_the_token_only_there_if_allowed() {
    let (zoho, cache) = start(Simulator::builder()).await;
    cache.token().await.unwrap();
    let gateway = "https://gateway.example.com:8443";
    let recorder = Recorder::ok();
    let routed = ZohoAuthLayer::new(cache.clone())
        .route("/api/v1/", gateway)
        .unwrap();
    routed
        .clone()
        .layer(recorder.clone())
        .oneshot(get("/api/v1/tickets?from=1"))
        .await
        .unwrap();
    routed
        .allow_host(gateway)
        .unwrap()
        .layer(recorder.clone())
        .oneshot(get("/crm/v8/Leads"))
        .await
        .unwrap();
    let seen = recorder.seen();
    assert_eq!(
        seen[0].uri,
        "https://gateway.example.com:8443/api/v1/tickets?from=1"
    );
    assert!(
        seen[0].authorization.is_none(),
        "a route is not an allowance"
    );
    assert_eq!(seen[1].uri, format!("{}/crm/v8/Leads", zoho.url()));
    assert!(seen[1].authorization.is_some());

    // A product host needs the account's data centre, which the simulator's token cannot name.
    let error = ZohoAuthLayer::new(cache.clone())
        .route("/api/v1/", "desk")
        .unwrap()
        .layer(recorder.clone())
        .oneshot(get("/api/v1/tickets"))
        .await
        .unwrap_err();
    let error = error
        .downcast_ref::<zoho_auth::Error>()
        .expect("a zoho_auth::Error");
    assert!(error.is_config(), "{error}");
    assert_eq!(recorder.seen().len(), 2, "nothing was sent");
}
