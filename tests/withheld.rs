//! A request the layer sends without the token says why: once per host at `debug`, and on a
//! `401` in the response's extensions and a `warn` once per host.
//!
//! Alone in its binary: `tracing` caches whether a log statement is enabled per call site, and a
//! test on another thread reaching the same statement while this one installs its subscriber can
//! leave it cached as disabled.

mod common;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use zoho_auth::sim::Simulator;
use zoho_auth::TokenWithheld;

use common::{body_text, get, http_service, send, start, Logs};

#[tokio::test]
async fn a_request_to_a_host_without_the_token_says_why() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let (zoho, cache) = start(Simulator::builder()).await;
    let mut crm = http_service::<Empty<Bytes>>(&cache);
    let response = send(&mut crm, get(&format!("{}/crm/v8/Leads", zoho.url()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<TokenWithheld>().is_none());

    // `localhost` where the token's api_domain says `127.0.0.1`.
    let localhost = zoho.url().replace("127.0.0.1", "localhost");
    for _ in 0..3 {
        let response = send(&mut crm, get(&format!("{localhost}/crm/v8/Leads"))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let withheld = response
            .extensions()
            .get::<TokenWithheld>()
            .expect("the reason, in the extensions")
            .clone();
        assert_eq!(withheld.host(), "localhost");
        assert!(withheld.reason().contains("`127.0.0.1`"), "{withheld}");
        assert!(body_text(response).await.contains("AUTHENTICATION_FAILURE"));
    }
    // An answer that is not 401 carries no note.
    let response = send(&mut crm, get(&format!("{localhost}/oauth/v2/token"))).await;
    assert!(response.extensions().get::<TokenWithheld>().is_none());

    let text = logs.text();
    assert_eq!(
        text.matches("sending a request without the Zoho token")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("was answered 401 Unauthorized").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("WARN") && text.contains("host=\"localhost\""),
        "{text}"
    );
}
