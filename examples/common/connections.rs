//! What the quickstart and the simulator example share about a connection store: writing a
//! connection's record as a consent leaves it, and listing every connection.
//!
//! Include it with `#[path = "common/connections.rs"] mod stored;`: it is apart from `mod.rs`,
//! which the axum example includes without needing these.

use tower::BoxError;
use zoho_auth::store::ConnectionStore;
use zoho_auth::{ConnectionId, RefreshToken};

/// A connection's record as a consent leaves it: its refresh token and the accounts server that
/// issued it. Whatever an earlier run stored for it (a token, the token budget, a failure)
/// belongs to an earlier run's simulator.
pub async fn connect(
    store: &dyn ConnectionStore,
    id: &ConnectionId,
    refresh_token: &RefreshToken,
    accounts_url: String,
) -> Result<(), BoxError> {
    store
        .connection(id)
        .update(None, |set| {
            set.refresh_token = Some(refresh_token.clone());
            set.accounts_url = Some(accounts_url.clone());
            set.access = None;
            set.token_requests.clear();
            set.failure = None;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Every connection `store` lists, a page at a time.
pub async fn list_all(store: &dyn ConnectionStore) -> Result<Vec<ConnectionId>, BoxError> {
    const PAGE: usize = 500;
    let mut all: Vec<ConnectionId> = Vec::new();
    loop {
        let page = store.list(all.last(), PAGE).await?;
        let last_page = page.len() < PAGE;
        all.extend(page);
        if last_page {
            return Ok(all);
        }
    }
}
