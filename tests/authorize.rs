//! The authorization-code flow against the simulator's consent page: consent, callback checks,
//! exchange at the right server, and what lands in the store.

mod common;

use std::sync::Arc;

use zoho_auth::authorize::{AccessType, Callback, Connector, PendingAuthorization};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{FileStore, TokenStore};
use zoho_auth::{Accounts, TokenCache};

use common::{accounts_client, Logs, TempDir};

const REDIRECT: &str = "http://127.0.0.1:9/zoho/callback";
const SCOPES: [&str; 2] = ["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"];

fn connector(zoho: &Simulator, store: Arc<dyn TokenStore>) -> Connector {
    Connector::new(zoho.client_id(), zoho.client_secret(), REDIRECT)
        .scopes(SCOPES)
        .accounts(Accounts::custom(&zoho.url()).unwrap())
        .store(store)
}

/// Consents in the simulator (as a user clicking Accept) and returns the callback query.
fn consent(zoho: &Simulator, connector: &Connector) -> (PendingAuthorization, String) {
    let (url, pending) = connector.authorize().unwrap();
    let location = zoho.accept_consent(url.as_str()).unwrap();
    let query = location
        .split_once('?')
        .expect("a callback with a query")
        .1
        .to_owned();
    (pending, query)
}

async fn simulator() -> Simulator {
    Simulator::builder()
        .redirect_uri(REDIRECT)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn consent_end_to_end_stores_tokens_a_cache_then_uses() {
    let zoho = simulator().await;
    let dir = TempDir::new("consent");
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("t.json")));
    let connector = connector(&zoho, store.clone());
    let (pending, query) = consent(&zoho, &connector);

    let connected = connector
        .complete(&pending, &Callback::parse(&query))
        .await
        .unwrap();
    assert!(connected.refresh_token_received);
    assert_eq!(connected.scopes, SCOPES);
    assert_eq!(connected.api_domain.as_deref(), Some(zoho.url().as_str()));
    assert_eq!(zoho.counters().code_grants, 1);

    let set = store.load().await.unwrap().unwrap();
    assert!(set.refresh_token.is_some());
    assert_eq!(
        set.accounts_url.as_deref().map(|u| u.trim_end_matches('/')),
        Some(zoho.url().as_str())
    );
    // A cache on the store uses the stored token without another request.
    let cache = TokenCache::from_store(accounts_client(&zoho), store)
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    assert_eq!(token.access_token(), &set.access.unwrap().access_token);
    assert_eq!(token.scopes(), SCOPES);
    assert_eq!(zoho.counters().token_requests, 1);
}

#[tokio::test]
async fn a_forged_accounts_server_never_receives_the_client_secret() {
    let zoho = simulator().await;
    let forged = Simulator::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(zoho_auth::store::MemoryStore::new());
    let connector = connector(&zoho, store.clone());
    let (pending, query) = consent(&zoho, &connector);
    let mut callback = Callback::parse(&query);
    callback.accounts_server = Some(forged.url());

    let error = connector.complete(&pending, &callback).await.unwrap_err();
    assert!(error.is_authorization(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("refusing to send the client secret"),
        "{error}"
    );
    assert_eq!(
        forged.counters().token_requests,
        0,
        "the forged server got nothing"
    );
    assert_eq!(zoho.counters().token_requests, 0);
    assert!(store.load().await.unwrap().is_none(), "nothing stored");

    for lookalike in [
        "https://accounts.zoho.eu.evil.test",
        "http://accounts.zoho.eu",
    ] {
        callback.accounts_server = Some(lookalike.to_owned());
        assert!(connector
            .complete(&pending, &callback)
            .await
            .unwrap_err()
            .is_authorization());
    }
}

#[tokio::test]
async fn a_tampered_state_is_refused_and_nothing_is_stored() {
    let zoho = simulator().await;
    let store: Arc<dyn TokenStore> = Arc::new(zoho_auth::store::MemoryStore::new());
    let connector = connector(&zoho, store.clone());
    let (pending, query) = consent(&zoho, &connector);
    let mut callback = Callback::parse(&query);
    callback.state = Some(format!("{}x", pending.state()));
    let error = connector.complete(&pending, &callback).await.unwrap_err();
    assert!(
        error.is_authorization() && error.to_string().contains("state"),
        "{error}"
    );
    assert_eq!(zoho.counters().token_requests, 0);
    assert!(store.load().await.unwrap().is_none());
}

#[tokio::test]
async fn a_wrong_pkce_verifier_makes_the_code_useless() {
    let zoho = simulator().await;
    let connector = connector(&zoho, Arc::new(zoho_auth::store::MemoryStore::new()));
    let (pending, query) = consent(&zoho, &connector);
    let (_, other) = connector.authorize().unwrap();
    let cookie = pending.to_cookie_value();
    let state = cookie.split('.').next().unwrap();
    let verifier = other
        .to_cookie_value()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let wrong = PendingAuthorization::from_cookie_value(&format!("{state}.{verifier}")).unwrap();
    let error = connector
        .complete(&wrong, &Callback::parse(&query))
        .await
        .unwrap_err();
    assert!(error.is_invalid_grant(), "{error:?}");
}

#[tokio::test]
async fn online_access_brings_no_refresh_token_and_says_so() {
    let zoho = simulator().await;
    let store: Arc<dyn TokenStore> = Arc::new(zoho_auth::store::MemoryStore::new());
    let connector = connector(&zoho, store.clone()).access_type(AccessType::Online);
    let (pending, query) = consent(&zoho, &connector);
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let connected = connector
        .complete(&pending, &Callback::parse(&query))
        .await
        .unwrap();
    assert!(!connected.refresh_token_received);
    assert!(logs.text().contains("no refresh token"), "{}", logs.text());
    let set = store.load().await.unwrap().unwrap();
    assert!(set.refresh_token.is_none() && set.access.is_some());
}

#[tokio::test]
async fn a_denial_comes_back_as_access_denied() {
    let zoho = simulator().await;
    let connector = connector(&zoho, Arc::new(zoho_auth::store::MemoryStore::new()));
    let (_, pending) = connector.authorize().unwrap();
    let callback = Callback::parse(&format!("error=access_denied&state={}", pending.state()));
    let error = connector.complete(&pending, &callback).await.unwrap_err();
    assert!(error.is_authorization(), "{error:?}");
    assert_eq!(error.zoho_code(), Some("access_denied"));
}

#[tokio::test]
async fn a_self_client_code_is_exchanged_and_stored() {
    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(zoho_auth::store::MemoryStore::new());
    let connector = connector(&zoho, store.clone());
    let code = zoho.issue_grant_code(&SCOPES, true, None);
    let connected = connector
        .exchange_self_client(&code, Accounts::custom(&zoho.url()).unwrap())
        .await
        .unwrap();
    assert!(connected.refresh_token_received);
    assert!(store.load().await.unwrap().unwrap().refresh_token.is_some());
    let again = connector
        .exchange_self_client(&code, Accounts::custom(&zoho.url()).unwrap())
        .await
        .unwrap_err();
    assert!(again.is_invalid_grant(), "codes are one-time: {again:?}");
}

/// A re-consent completed while the cache's refresh waits for Zoho: the refresh lands after it
/// and must keep the consent's refresh token and its newer access token (the save is fenced),
/// not write back the set the refresh read.
#[tokio::test]
async fn a_consent_that_lands_during_a_refresh_is_not_reverted() {
    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(zoho_auth::store::MemoryStore::new());
    let cache = common::cache_on(&zoho, &zoho.mint_refresh_token(&[]), store.clone());
    zoho.inject(
        zoho_auth::sim::Fault::Slow(std::time::Duration::from_secs(2)),
        1,
    );
    let refresh = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the refresh reached Zoho",
        || zoho.counters().token_requests == 1,
    )
    .await;

    let code = zoho.issue_grant_code(&SCOPES, true, None);
    connector(&zoho, store.clone())
        .exchange_self_client(&code, Accounts::custom(&zoho.url()).unwrap())
        .await
        .unwrap();
    let consented = store.load().await.unwrap().unwrap();

    refresh.await.unwrap().unwrap();
    let after = store.load().await.unwrap().unwrap();
    assert_eq!(
        after.refresh_token, consented.refresh_token,
        "the refresh reverted the new consent's refresh token"
    );
    assert_eq!(
        after.access, consented.access,
        "the newer access token stays"
    );
    assert_eq!(after.accounts_url, consented.accounts_url);
}
