//! Runs README's routing snippet: CRM's relative URLs reach the token's api_domain; the Desk
//! prefix needs the account's data centre, which the simulator's token cannot name, so it fails
//! with a typed error before anything is sent.

use super::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use zoho_auth::sim::Simulator;

#[tokio::test]
async fn crm_goes_to_the_api_domain_and_desk_to_its_own_host() {
    let zoho = Simulator::start().await.unwrap();
    let cache = zoho.token_cache().unwrap();
    let client = crm_and_desk(cache).unwrap();

    let crm = Request::get("/crm/v8/Leads")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.request(crm).await.unwrap().status(), 200);

    let desk = Request::get("/api/v1/tickets")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let error = client.request(desk).await.unwrap_err();
    let error = error
        .downcast_ref::<zoho_auth::Error>()
        .expect("a zoho_auth::Error");
    assert!(error.is_config(), "{error}");
    assert!(error.to_string().contains("desk"), "{error}");
    assert_eq!(zoho.counters().api_requests, 1);
}
