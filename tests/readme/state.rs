//! Runs README's "Build the client, hold it in state" snippet as an application would: its own
//! `token_cache()` from the environment, then its router serving 64 requests at once from spawned
//! tasks, each calling CRM through the `ZohoClient` in its state, against the simulator.

use super::*;
use tower::ServiceExt;
use zoho_auth::sim::Simulator;

#[test]
fn token_cache_reads_the_credentials_from_the_environment() {
    std::env::set_var("ZOHO_CLIENT_ID", "1000.README");
    std::env::set_var("ZOHO_CLIENT_SECRET", "readme-secret");
    std::env::set_var("ZOHO_REFRESH_TOKEN", "1000.readme.refresh");
    let cache = token_cache().unwrap();
    assert_eq!(cache.data_center(), Some(DataCenter::Eu));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_in_state_serves_concurrent_requests() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let router = app(cache.clone()).unwrap();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let request = Request::get("/me").body(axum::body::Body::empty()).unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        })
        .collect();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.starts_with("{\"users\""), "{body}");
    }
    assert_eq!(cache.stats().token_requests, 1);
    assert_eq!(zoho.counters().api_requests, 64);
}
