//! What a resident connection costs in memory (issue 11's goal: at most 2 KiB each with 100,000
//! resident): the heap grown by 100,000 connections, each built and holding a token it adopted
//! from its record, divided by their number. The records themselves belong to the store
//! (Redis, a file, a database) and are written before the measurement.
//!
//! One test in this binary, on a current-thread runtime, so the counting allocator sees only it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections, StoredAccess};
use zoho_auth::{AccessToken, ConnectionId, Connections, RefreshToken};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const CONNECTIONS: usize = 100_000;

#[test]
fn a_resident_connection_costs_at_most_2_kib() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let zoho = Simulator::start().await.unwrap();
        let store = Arc::new(MemoryConnections::new());
        let ids: Vec<ConnectionId> = (0..CONNECTIONS)
            .map(|n| ConnectionId::new(format!("tenant-{n:06}")).unwrap())
            .collect();
        let now = SystemTime::now();
        for (n, id) in ids.iter().enumerate() {
            store
                .connection(id)
                .update(None, |set| {
                    set.refresh_token = Some(RefreshToken::new(format!("1000.{n:032x}.{n:032x}")));
                    set.access = Some(StoredAccess::new(
                        AccessToken::new(format!("1000.{n:032x}.{:032x}", n + 1)),
                        now,
                        now + Duration::from_secs(3600),
                        Some("https://www.zohoapis.eu".to_owned()),
                        vec!["ZohoCRM.modules.ALL".to_owned()],
                    ));
                    Ok(())
                })
                .await
                .unwrap();
        }
        let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
            .build()
            .unwrap();

        let before = dhat::HeapStats::get().curr_bytes;
        for id in &ids {
            connections.token(id).await.unwrap();
        }
        connections.run_pending_tasks();
        let after = dhat::HeapStats::get().curr_bytes;
        assert_eq!(connections.resident(), CONNECTIONS as u64);
        assert_eq!(zoho.counters().token_requests, 0, "every token was adopted");
        let per_connection = (after - before) / CONNECTIONS;
        println!("{per_connection} bytes per resident connection with {CONNECTIONS} resident");
        assert!(
            per_connection <= 2048,
            "{per_connection} bytes per resident connection"
        );
    });
}
