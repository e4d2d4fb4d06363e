//! Fleets of real processes — quickstart processes sharing one simulator and one token store —
//! refresh once per expiry between them, one connection or many, and survive a lock holder killed
//! mid-refresh; a single quickstart against "real Zoho" survives a transient failure at start.
//!
//! The multi-process runs are heavy for a 2-core machine, so they take turns.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use zoho_auth::accounts::{AccountsClient, TokenResponse};
use zoho_auth::sim::{Fault, Simulator};
use zoho_auth::store::{ConnectionStore, StoredAccess, TokenSet, TokenStore};
use zoho_auth::{Accounts, ConnectionId, RefreshToken};

use common::{accounts_client, TempDir};
use redis_server::RedisServer;

/// One multi-process run at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// A file store in `dir`, in `ZOHO_TOKEN_STORE` syntax.
fn file_store(dir: &TempDir) -> String {
    format!("file:{}", dir.join("tokens.json").display())
}

/// A quickstart process using `store`, talking to `zoho` as if it were Zoho, not yet spawned.
fn quickstart(zoho: &Simulator, store: &str) -> Command {
    let mut command = Command::new(common::example("quickstart"));
    command
        .env("ZOHO_CLIENT_ID", zoho.client_id().as_str())
        .env("ZOHO_CLIENT_SECRET", zoho.client_secret().expose())
        .env("ZOHO_ACCOUNTS_URL", zoho.url())
        .env("ZOHO_TOKEN_STORE", store)
        .env("RUST_LOG", "zoho_auth=warn")
        .env_remove("ZOHO_DC")
        .env_remove("ZOHO_REFRESH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A quickstart process using `store` and `refresh_token`.
fn spawn_quickstart(
    zoho: &Simulator,
    refresh_token: &RefreshToken,
    store: &str,
    args: &[&str],
) -> Child {
    quickstart(zoho, store)
        .args(["--url", &format!("{}/crm/v8/Leads", zoho.url())])
        .args(args)
        .env("ZOHO_REFRESH_TOKEN", refresh_token.expose())
        .spawn()
        .unwrap()
}

/// A store holding a refresh token and a token minted just now, as a running fleet leaves it.
async fn seed(zoho: &Simulator, store: &str) -> RefreshToken {
    let refresh_token = zoho.mint_refresh_token(&[]);
    let minted = accounts_client(zoho).refresh(&refresh_token).await.unwrap();
    common::put(
        &*zoho_auth::store::open(store).unwrap(),
        &running(refresh_token.clone(), minted),
    )
    .await
    .unwrap();
    refresh_token
}

/// The set a running fleet leaves: the refresh token, and `minted` from it just now.
fn running(refresh_token: RefreshToken, minted: TokenResponse) -> TokenSet {
    let now = SystemTime::now();
    let mut set = TokenSet::new(refresh_token);
    set.access = Some(StoredAccess::new(
        minted.access_token,
        now,
        now + minted.expires_in,
        minted.api_domain,
        minted.scopes,
    ));
    set.token_requests.push(now);
    set
}

/// 8 processes × 200 concurrent requests for as long as three tokens last.
async fn eight_processes_refresh_once_per_expiry(store: &str) {
    let _turn = TURN.lock().await;
    // 8 s tokens, refreshed only at expiry (less a 0.8 s margin): expiries at about 7.2 s, 14.4 s
    // and 21.6 s after the seed. Every process sends until 24.5 s after the seed (its duration is
    // what is left of that when it is spawned, so a machine slow to spawn eight does not push the
    // last one on): it is still sending 2.9 s after the third expiry, and all have stopped (their
    // last 1 s requests answered) 3.3 s before a fourth at 28.8 s, less however long a process
    // takes to start sending once spawned.
    let zoho = Simulator::builder()
        .token_lifetime(Duration::from_secs(8))
        .api_latency(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let refresh_token = seed(&zoho, store).await;
    let until = std::time::Instant::now() + Duration::from_secs_f64(24.5);
    let before = zoho.counters().token_requests;
    let fleet: Vec<_> = (0..8)
        .map(|_| {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let duration = format!("{:.3}", left.as_secs_f64());
            let args = [
                "--concurrency",
                "200",
                "--duration",
                &duration,
                "--refresh-ahead",
                "0",
            ];
            spawn_quickstart(&zoho, &refresh_token, store, &args)
        })
        .collect();
    let mut served = 0;
    for child in fleet {
        let summary = common::finish_quickstart(child).await;
        assert_eq!(summary.failed, 0, "{summary:?}");
        assert!(summary.ok > 0, "{summary:?}");
        served += summary.requests;
    }
    assert_eq!(
        zoho.counters().token_requests - before,
        3,
        "one token request per expiry for the whole fleet ({served} requests)"
    );
    assert_eq!(zoho.counters().throttled, 0);
}

/// `count` connections spread over the simulator's data centres, each holding a refresh token, its
/// accounts server and a token minted just now, as a running fleet leaves them; their refresh
/// tokens, in order.
async fn seed_connections(
    zoho: &Simulator,
    store: &Arc<dyn ConnectionStore>,
    count: usize,
) -> Vec<RefreshToken> {
    let data_centres: Vec<_> = (0..zoho.data_center_count())
        .map(|dc| {
            let url = zoho.data_center_url(dc).unwrap();
            let accounts = Accounts::custom(&url).unwrap();
            let client =
                AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret()).unwrap();
            (url, client)
        })
        .collect();
    // All at once, so that the seeds' expiries lie close together.
    let seeds: Vec<_> = (0..count)
        .map(|n| {
            let dc = n % data_centres.len();
            let (url, client) = data_centres[dc].clone();
            let refresh_token = zoho.mint_refresh_token_in(dc, &[]).unwrap();
            let record = store.connection(&ConnectionId::new(format!("user-{n}")).unwrap());
            tokio::spawn(async move {
                let minted = client.refresh(&refresh_token).await.unwrap();
                let mut set = running(refresh_token.clone(), minted);
                set.accounts_url = Some(url);
                common::put(&*record, &set).await.unwrap();
                refresh_token
            })
        })
        .collect();
    let mut users = Vec::with_capacity(count);
    for seed in seeds {
        users.push(seed.await.unwrap());
    }
    users
}

/// 4 processes, each sending round-robin over the same 250 connections of two data centres,
/// across two expiries of every connection's token.
async fn four_processes_refresh_each_connection_once_per_expiry(store: &str) {
    const CONNECTIONS: usize = 250;
    const LIFETIME: Duration = Duration::from_secs(10);
    // What a cache uses of a token: its lifetime less the safety margin, a tenth of it.
    const USABLE: Duration = Duration::from_secs(9);
    // From a quickstart's spawn to its first request (the process starts and lists the store),
    // and from a request's check of `--duration` to its token on a loaded machine.
    const STARTUP: Duration = Duration::from_secs(4);
    // How often each process sends to each connection: 250 in flight, 1 s API latency.
    const ROUND: Duration = Duration::from_secs(1);
    // From a connection's expiry to its refresh request: until a request finds it expired (a
    // round), then a permit (32 token requests in flight per process) and the connection's lock.
    const LATE: Duration = Duration::from_millis(1500);
    let _turn = TURN.lock().await;
    let zoho = Simulator::builder()
        .token_lifetime(LIFETIME)
        .api_latency(Duration::from_secs(1))
        .data_centers(2)
        .start()
        .await
        .unwrap();
    let connections = zoho_auth::store::open_connections(store).unwrap();
    let seeding = Instant::now();
    let users = seed_connections(&zoho, &connections, CONNECTIONS).await;
    let seeded = seeding.elapsed();
    // A connection's first refresh is due USABLE after its seed, its second USABLE after that
    // refresh was sent, a third USABLE later still: 3 × USABLE after `seeding` at the earliest.
    // Every process has stopped sending by then, however long it took to start, if it sends for
    // `stop` after `seeding` less its start...
    let stop = USABLE * 3 - STARTUP;
    // ...and every process, even one that started at once, is still sending a round after the
    // second expiry of the last one seeded: at most USABLE + LATE + USABLE after its seed.
    assert!(
        seeded + USABLE * 2 + LATE + ROUND < stop,
        "seeding {CONNECTIONS} connections took {seeded:?}: too long for this timeline"
    );
    let duration = (stop - seeding.elapsed()).as_secs_f64().to_string();
    let args = [
        "--connections",
        "all",
        "--concurrency",
        "250",
        "--duration",
        &duration,
        "--refresh-ahead",
        "0",
    ];
    let fleet: Vec<_> = (0..4)
        .map(|_| quickstart(&zoho, store).args(args).spawn().unwrap())
        .collect();
    let mut served = 0;
    for child in fleet {
        let summary = common::finish_quickstart(child).await;
        assert_eq!(summary.failed, 0, "{summary:?}");
        assert!(summary.ok > 0, "{summary:?}");
        assert_eq!(summary.connections, Some(CONNECTIONS as u64), "{summary:?}");
        served += summary.requests;
    }
    // How many connections had each count, for a message that shows them all.
    let mut tokens = std::collections::BTreeMap::<u64, usize>::new();
    for (n, refresh_token) in users.iter().enumerate() {
        let seen = zoho.counters_for(refresh_token).unwrap();
        *tokens.entry(seen.tokens_issued).or_default() += 1;
        assert!(seen.api_ok > 0, "user-{n} was never served: {seen:?}");
        assert_eq!(
            (seen.wrong_dc_refresh_grants, seen.wrong_dc_api_requests),
            (0, 0),
            "user-{n} went to another data centre: {seen:?}"
        );
    }
    assert_eq!(
        tokens,
        [(3, CONNECTIONS)].into(),
        "tokens issued per connection (count: connections): the seed's, then one per expiry for \
         the whole fleet ({served} requests)"
    );
    assert_eq!(zoho.counters().throttled, 0);
}

/// A process killed while it holds the refresh lock and waits for Zoho does not strand the rest.
async fn a_lock_holder_killed_mid_refresh_is_replaced(store: &str, lock_ttl: Duration) {
    let _turn = TURN.lock().await;
    let zoho = Simulator::start().await.unwrap();
    let refresh_token = zoho.mint_refresh_token(&[]);
    common::put(
        &*zoho_auth::store::open(store).unwrap(),
        &TokenSet::new(refresh_token.clone()),
    )
    .await
    .unwrap();
    // The first token request hangs; its sender is killed while it waits.
    zoho.inject(Fault::Slow(Duration::from_secs(60)), 1);
    let holder = spawn_quickstart(
        &zoho,
        &refresh_token,
        store,
        &["--requests", "1", "--concurrency", "1"],
    );
    common::wait_until(
        Duration::from_secs(30),
        "the holder asked Zoho for a token",
        || zoho.counters().token_requests == 1,
    )
    .await;
    let killed_at = tokio::time::Instant::now();
    drop(holder); // kill_on_drop: SIGKILL

    let others: Vec<_> = (0..3)
        .map(|_| {
            spawn_quickstart(
                &zoho,
                &refresh_token,
                store,
                &["--requests", "20", "--concurrency", "5"],
            )
        })
        .collect();
    for child in others {
        let summary = common::finish_quickstart(child).await;
        assert_eq!((summary.ok, summary.failed), (20, 0), "{summary:?}");
    }
    let took = killed_at.elapsed();
    assert!(
        took < lock_ttl + Duration::from_secs(15),
        "everyone had a token {took:?} after the kill (lock TTL {lock_ttl:?})"
    );
    assert_eq!(
        zoho.counters().token_requests,
        2,
        "one hung, one replaced it for everyone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_sharing_a_file_store_make_one_token_request_per_expiry() {
    let dir = TempDir::new("expiry");
    eight_processes_refresh_once_per_expiry(&file_store(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_sharing_a_redis_store_make_one_token_request_per_expiry() {
    let redis = RedisServer::start();
    eight_processes_refresh_once_per_expiry(&format!("{}?prefix=fleet-expiry", redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_sharing_a_file_store_refresh_each_of_250_connections_once_per_expiry() {
    let dir = TempDir::new("connections");
    four_processes_refresh_each_connection_once_per_expiry(&file_store(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_sharing_a_redis_store_refresh_each_of_250_connections_once_per_expiry() {
    let redis = RedisServer::start();
    let store = format!("{}?prefix=fleet-connections", redis.url());
    four_processes_refresh_each_connection_once_per_expiry(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_lock_holder_killed_mid_refresh_frees_the_lock_at_once() {
    let dir = TempDir::new("kill");
    // The kernel frees an OS lock the moment its holder dies.
    a_lock_holder_killed_mid_refresh_is_replaced(&file_store(&dir), Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_lock_holder_killed_mid_refresh_loses_the_lock_at_its_ttl() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(3);
    let store = format!(
        "{}?prefix=fleet-kill&lock_ttl_ms={}",
        redis.url(),
        ttl.as_millis()
    );
    a_lock_holder_killed_mid_refresh_is_replaced(&store, ttl).await;
}

#[tokio::test]
async fn a_quickstart_against_zoho_waits_out_a_502_and_an_html_page_at_start() {
    let _turn = TURN.lock().await;
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("first-token");
    zoho.inject(Fault::Status(http::StatusCode::BAD_GATEWAY), 1);
    zoho.inject(Fault::Html, 1);
    let child = spawn_quickstart(
        &zoho,
        &zoho.mint_refresh_token(&[]),
        &file_store(&dir),
        &["--requests", "40", "--concurrency", "4"],
    );
    let summary = common::finish_quickstart(child).await;
    assert_eq!(
        (summary.requests, summary.ok, summary.failed),
        (40, 40, 0),
        "{summary:?}"
    );
    let retries: Vec<_> = summary
        .stdout
        .lines()
        .filter(|line| line.starts_with("The first token request failed"))
        .collect();
    assert_eq!(retries.len(), 2, "said what happened, twice: {summary:?}");
    assert!(retries[0].contains("502"), "{retries:?}");
    assert!(retries[1].contains("HTML"), "{retries:?}");
    assert_eq!(zoho.counters().faults, 2);
}

#[tokio::test]
async fn the_seed_lands_where_the_quickstarts_look() {
    // Sanity for the harness above: the seed lands where the quickstarts will look.
    let zoho = Simulator::start().await.unwrap();
    let dir = TempDir::new("seed");
    let store = file_store(&dir);
    let refresh_token = seed(&zoho, &store).await;
    let loaded: Arc<dyn TokenStore> = zoho_auth::store::open(&store).unwrap();
    let set = loaded.load().await.unwrap().unwrap();
    assert_eq!(set.refresh_token, Some(refresh_token));
    assert!(zoho.is_access_token_live(set.access.unwrap().access_token.expose()));
}
