//! Runs README's "Your own stack" snippet: the boxed stack serves relative requests from many
//! spawned tasks through one token.

use super::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use zoho_auth::sim::Simulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boxed_stack_serves_spawned_concurrent_calls() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let client = zoho_client(cache.clone()).unwrap();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = Request::get("/crm/v8/Leads")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                client.request(request).await.unwrap().status()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(cache.stats().token_requests, 1);
}
