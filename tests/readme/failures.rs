//! Runs README's failure-handling snippet on each kind of outcome: success, a request that went
//! without the token (`localhost` for the simulator's `127.0.0.1`), and no account connected yet.

use super::*;
use std::sync::Arc;
use zoho_auth::sim::Simulator;
use zoho_auth::store::MemoryStore;
use zoho_auth::TokenCache;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn each_outcome_reads_as_the_snippet_says() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let client = ZohoClient::new(cache).unwrap();

    let response = call(&client, get("/crm/v8/Leads")).await.unwrap();
    assert_eq!(response.status(), 200);

    let localhost = zoho.url().replace("127.0.0.1", "localhost");
    let error = call(&client, get(&format!("{localhost}/crm/v8/Leads")))
        .await
        .unwrap_err();
    assert!(
        error.starts_with("the Zoho token was not sent to localhost"),
        "{error}"
    );

    let empty = TokenCache::from_store(
        zoho.accounts_client().unwrap(),
        Arc::new(MemoryStore::new()),
    )
    .build()
    .unwrap();
    let error = call(&ZohoClient::new(empty).unwrap(), get("/crm/v8/Leads"))
        .await
        .unwrap_err();
    assert_eq!(error, "nobody has connected a Zoho account yet");
}
