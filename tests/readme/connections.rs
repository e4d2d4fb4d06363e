//! Runs README's "Many Zoho accounts" snippet: tenants in two data centres, each request through
//! the one client carrying its own tenant's token to its own data centre.

use super::*;
use tower::ServiceExt;
use zoho_auth::sim::Simulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_calls_its_own_account() {
    let zoho = Simulator::builder().data_centers(2).start().await.unwrap();
    let (connections, client) =
        zoho_for_everyone(zoho.accounts_client().unwrap(), "memory").unwrap();
    let mut tenants = Vec::new();
    for (name, dc) in [("acme", 0), ("globex", 1)] {
        let refresh = zoho.mint_refresh_token_in(dc, &[]).unwrap();
        let accounts = zoho.data_center_url(dc).unwrap();
        connections
            .store()
            .connection(&ConnectionId::new(name).unwrap())
            .update(None, |set| {
                set.refresh_token = Some(refresh.clone());
                set.accounts_url = Some(accounts.clone());
                Ok(())
            })
            .await
            .unwrap();
        tenants.push((name, refresh));
    }
    let router = app(client);
    let calls: Vec<_> = (0..40)
        .map(|n| {
            let router = router.clone();
            let name = tenants[n % 2].0;
            tokio::spawn(async move {
                let request = http::Request::get(format!("/tenants/{name}/me"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                router.oneshot(request).await.unwrap().status()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    for (name, refresh) in &tenants {
        let seen = zoho.counters_for(refresh).unwrap();
        assert_eq!(
            (seen.tokens_issued, seen.api_ok, seen.wrong_dc_api_requests),
            (1, 20, 0),
            "{name}"
        );
    }
    let request = http::Request::get("/tenants/nobody/me")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        router.oneshot(request).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}
