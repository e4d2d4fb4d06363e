//! Runs README's fleet snippet where its Redis host does not resolve: the cache still gets its
//! token, on its own single flight, as "When the store fails" promises.

use super::*;
use zoho_auth::sim::Simulator;

#[tokio::test]
async fn the_fleet_cache_serves_a_token_while_its_redis_is_unreachable() {
    let zoho = Simulator::start().await.unwrap();
    let cache = fleet_cache(
        zoho.accounts_client().unwrap(),
        zoho.mint_refresh_token(&[]),
    )
    .unwrap();
    let token = cache.token().await.unwrap();
    assert!(zoho.is_access_token_live(token.access_token().expose()));
}
