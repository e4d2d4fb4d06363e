//! Runs README's `ZohoAuthMiddleware` snippet: two tenants in two data centres, each request with
//! its own tenant's token at its own data centre; a tenant that never connected gets `None`.

use super::*;
use std::sync::Arc;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections};

#[tokio::test]
async fn each_tenant_s_leads_come_from_its_own_account() {
    let zoho = Simulator::builder().data_centers(2).start().await.unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let mut tenants = Vec::new();
    for (name, dc) in [("acme", 0), ("globex", 1)] {
        let refresh = zoho.mint_refresh_token_in(dc, &[]).unwrap();
        let accounts = zoho.data_center_url(dc).unwrap();
        store
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
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let client = zoho_client(connections).unwrap();
    for (name, refresh) in &tenants {
        let leads = tenant_leads(&client, name).await.unwrap().expect("connected");
        assert!(leads.contains("/crm/v8/Leads"), "{leads}");
        let seen = zoho.counters_for(refresh).unwrap();
        assert_eq!(
            (seen.tokens_issued, seen.api_ok, seen.wrong_dc_api_requests),
            (1, 1, 0),
            "{name}"
        );
    }
    assert!(tenant_leads(&client, "nobody").await.unwrap().is_none());
}
