//! Runs README's `ZohoReqwest` snippet: the leads come back through reqwest, and after Zoho kills
//! every token the layer refreshes once and replays the request.

use super::*;
use zoho_auth::sim::Simulator;

#[tokio::test]
async fn leads_come_back_and_a_dead_token_is_refreshed_and_the_request_replayed() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let answer = leads(cache.clone()).await.unwrap();
    assert_eq!(answer["path"], "/crm/v8/Leads", "{answer}");
    assert_eq!(answer["method"], "GET");

    zoho.invalidate_all_tokens();
    let answer = leads(cache.clone()).await.unwrap();
    assert_eq!(answer["path"], "/crm/v8/Leads", "{answer}");
    let stats = cache.stats();
    assert_eq!((stats.token_requests, stats.replays), (2, 1), "{stats:?}");
}
