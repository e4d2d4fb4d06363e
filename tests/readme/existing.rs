//! Runs README's "An existing hyper-util client" snippet: the application's client keeps making
//! unauthenticated calls while the wrapped one, on the same pool, carries the token.

use super::*;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use zoho_auth::sim::Simulator;

#[tokio::test]
async fn the_wrapped_client_authenticates_and_the_original_does_not() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let existing: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let get = || {
        http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let response = authenticated(&existing, cache)
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(existing.request(get()).await.unwrap().status(), 401);
}
