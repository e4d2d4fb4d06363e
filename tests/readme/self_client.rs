//! Runs README's self-client snippet against the simulator's client-credentials grant.

use super::*;
use zoho_auth::sim::Simulator;

#[tokio::test]
async fn the_self_client_cache_gets_a_token_without_a_refresh_token() {
    let zoho = Simulator::start().await.unwrap();
    let cache = self_client_cache(zoho.accounts_client().unwrap()).unwrap();
    let token = cache.token().await.unwrap();
    assert!(zoho.is_access_token_live(token.access_token().expose()));
    assert_eq!(zoho.counters().client_credentials_grants, 1);
}
