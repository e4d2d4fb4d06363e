//! The Redis token store against a real `redis-server`: what it writes under which keys and
//! TTLs, how it refuses what it cannot read, how its lock behaves under contention and expiry,
//! and how it behaves when Redis dies, comes back, or is not there at start.
//!
//! Each test starts its own server (see `common/redis.rs`); `redis-server` must be installed.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use redis_server::RedisServer;
use zoho_auth::store::{RedisStore, Saved, StoreLock, TokenSet, TokenStore};
use zoho_auth::{AccessToken, Error, RefreshToken};

/// What a store may take to fail when Redis is down: the store bounds each operation by a few
/// seconds; this adds slack for a loaded machine and still catches an unbounded wait.
const DOWN_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A plain connection to look at the keys behind the store's back.
async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Now, to the millisecond (the store keeps milliseconds).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::open(&server.url()).unwrap().prefix(prefix)
}

/// A set with every field filled in, its access token valid for `lifetime` from now.
///
/// `StoredAccess` and `StoredFailure` have no public constructor, so this writes the documented
/// JSON under a scratch prefix, loads it (checking each field), and deletes it again.
async fn full_set(server: &RedisServer, lifetime: Duration) -> TokenSet {
    let mut con = raw(server).await;
    let expires = now_ms() + lifetime.as_millis() as u64;
    let durable = r#"{"refresh_token":"1000.seed.refresh","token_requests_ms":[1700000000000,1700000001234],"failure":{"code":"invalid_code","message":"the refresh token was revoked"}}"#;
    let access = format!(
        r#"{{"access_token":"1000.seed.access","issued_at_ms":1700000000000,"expires_at_ms":{expires},"api_domain":"https://www.zohoapis.eu","scopes":["ZohoCRM.modules.ALL","ZohoCRM.settings.READ"]}}"#
    );
    let _: () = con.set("seed:refresh", durable).await.unwrap();
    let _: () = con.set("seed:access", access).await.unwrap();
    let set = store(server, "seed")
        .load()
        .await
        .expect("the documented JSON loads")
        .expect("the keys exist");
    let _: () = con.del(&["seed:refresh", "seed:access"]).await.unwrap();

    assert_eq!(
        set.refresh_token.as_ref().map(|t| t.expose()),
        Some("1000.seed.refresh")
    );
    assert_eq!(
        set.token_requests,
        [ms(1_700_000_000_000), ms(1_700_000_001_234)]
    );
    let failure = set.failure.as_ref().expect("failure decoded");
    assert_eq!(
        (&*failure.code, &*failure.message),
        ("invalid_code", "the refresh token was revoked")
    );
    let stored = set.access.as_ref().expect("access decoded");
    assert_eq!(stored.access_token.expose(), "1000.seed.access");
    assert_eq!(stored.issued_at, ms(1_700_000_000_000));
    assert_eq!(stored.expires_at, ms(expires));
    assert_eq!(
        stored.api_domain.as_deref(),
        Some("https://www.zohoapis.eu")
    );
    assert_eq!(
        stored.scopes,
        ["ZohoCRM.modules.ALL", "ZohoCRM.settings.READ"]
    );
    set
}

async fn pttl(con: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(con).await.unwrap()
}

async fn exists(con: &mut MultiplexedConnection, key: &str) -> bool {
    con.exists(key).await.unwrap()
}

/// Runs `op`, checks it failed as "unavailable" within [`DOWN_BOUND`], and returns the error.
async fn fails_unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, Error>>,
) -> Error {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    let error = result.expect_err(&format!("{what} succeeded with Redis down"));
    assert!(
        error.is_store_unavailable(),
        "{what}: expected an unavailable store, got {error:?}"
    );
    assert!(elapsed < DOWN_BOUND, "{what} took {elapsed:?} to fail");
    error
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_saved_set_loads_back_with_every_field() {
    let server = RedisServer::start();
    let template = full_set(&server, Duration::from_secs(3600)).await;
    let store = store(&server, "app");

    let mut set = template.clone();
    set.refresh_token = Some(RefreshToken::new("1000.refresh.one"));
    let access = set.access.as_mut().unwrap();
    access.access_token = AccessToken::new("1000.access.one");
    access.issued_at = ms(now_ms());
    access.expires_at = ms(now_ms() + 3_600_000);
    access.api_domain = Some("https://www.zohoapis.in".into());
    access.scopes = vec!["ZohoBooks.fullaccess.all".into()];
    set.token_requests = vec![ms(now_ms() - 5_000), ms(now_ms())];
    let stored = common::put(&store, &set).await.unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(store.load().await.unwrap(), Some(stored));

    // A save replaces everything: no access token, no failure, no refresh token
    // (client credentials) — and the old access token is gone from Redis.
    let mut bare = TokenSet::default();
    bare.token_requests = vec![ms(now_ms())];
    let bare = common::put(&store, &bare).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(bare));
    let mut con = raw(&server).await;
    assert!(!exists(&mut con, "app:access").await);
    assert!(exists(&mut con, "app:refresh").await);

    // The refresh token survives a save that only swaps the access token.
    common::put(&store, &set).await.unwrap();
    let mut next = set.clone();
    next.access.as_mut().unwrap().access_token = AccessToken::new("1000.access.two");
    common::put(&store, &next).await.unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.unwrap().expose(), "1000.refresh.one");
    assert_eq!(
        loaded.access.unwrap().access_token.expose(),
        "1000.access.two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_half_a_save() {
    let server = RedisServer::start();
    let template = full_set(&server, Duration::from_secs(3600)).await;
    let writer = store(&server, "torn");
    let reader = store(&server, "torn");
    let numbered = |i: usize| {
        let mut set = template.clone();
        set.refresh_token = Some(RefreshToken::new(format!("1000.refresh.{i}")));
        set.access.as_mut().unwrap().access_token = AccessToken::new(format!("1000.access.{i}"));
        set
    };
    common::put(&writer, &numbered(0)).await.unwrap();

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = tokio::spawn({
        let done = done.clone();
        async move {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let set = reader.load().await.unwrap().unwrap();
                let refresh = set.refresh_token.unwrap().expose().replace("refresh", "");
                let access = set
                    .access
                    .unwrap()
                    .access_token
                    .expose()
                    .replace("access", "");
                assert_eq!(refresh, access, "a load mixed two saves");
                reads += 1;
            }
            reads
        }
    });
    for i in 1..=300 {
        common::put(&writer, &numbered(i)).await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reading.await.unwrap() > 0);
}

#[tokio::test]
async fn an_empty_prefix_loads_none() {
    let server = RedisServer::start();
    assert_eq!(store(&server, "nothing-here").load().await.unwrap(), None);
    assert_eq!(
        RedisStore::open(&server.url())
            .unwrap()
            .load()
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_access_key_lives_as_long_as_the_token_and_the_refresh_key_forever() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    // Someone put a TTL on the refresh key; a save must take it off again.
    let _: () = con.set("ttl:refresh", "{}").await.unwrap();
    let _: () = con.pexpire("ttl:refresh", 60_000).await.unwrap();

    let set = full_set(&server, Duration::from_secs(600)).await;
    let saved_at = now_ms();
    let store = store(&server, "ttl");
    common::put(&store, &set).await.unwrap();

    let expires_at = set.access.as_ref().unwrap().expires_at;
    let lifetime = expires_at.duration_since(ms(saved_at)).unwrap().as_millis() as i64;
    let access_ttl = pttl(&mut con, "ttl:access").await;
    assert!(
        access_ttl <= lifetime && access_ttl > lifetime - 5_000,
        "access key PTTL {access_ttl} ms, token has {lifetime} ms left"
    );
    assert_eq!(
        pttl(&mut con, "ttl:refresh").await,
        -1,
        "the refresh key must not expire"
    );
    assert!(!exists(&mut con, "ttl:lock").await, "saving takes no lock");
}

#[tokio::test]
async fn an_expired_access_token_is_not_stored() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    let live = full_set(&server, Duration::from_secs(3600)).await;
    let store = store(&server, "expired");
    common::put(&store, &live).await.unwrap();
    assert!(exists(&mut con, "expired:access").await);

    let mut dead = live.clone();
    dead.access.as_mut().unwrap().expires_at = SystemTime::now() - Duration::from_secs(1);
    common::put(&store, &dead).await.unwrap();
    assert!(
        !exists(&mut con, "expired:access").await,
        "the expired token was written, or the live one left behind"
    );
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.access, None);
    assert_eq!(loaded.refresh_token, dead.refresh_token);
    assert_eq!(loaded.failure, dead.failure);
}

#[tokio::test]
async fn prefixes_isolate_stores_on_one_server() {
    let server = RedisServer::start();
    let a = store(&server, "tenant-a");
    let b = store(&server, "tenant-b");
    common::put(&a, &TokenSet::new(RefreshToken::new("1000.a")))
        .await
        .unwrap();
    assert_eq!(b.load().await.unwrap(), None);
    common::put(&b, &TokenSet::new(RefreshToken::new("1000.b")))
        .await
        .unwrap();
    let loaded_a = a.load().await.unwrap().unwrap();
    let loaded_b = b.load().await.unwrap().unwrap();
    assert_eq!(loaded_a.refresh_token.unwrap().expose(), "1000.a");
    assert_eq!(loaded_b.refresh_token.unwrap().expose(), "1000.b");

    // Each prefix has its own lock.
    let lock_a = a
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("a's lock is free");
    let lock_b = b
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("b's lock is free");
    lock_a.release().await.unwrap();
    lock_b.release().await.unwrap();

    let mut con = raw(&server).await;
    let mut keys: Vec<String> = con.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["tenant-a:refresh", "tenant-b:refresh"]);
}

// ---------------------------------------------------------------------------------------------
// Malformed data
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_a_store_error_and_is_left_untouched() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    let store = store(&server, "bad");

    let _: () = con.set("bad:refresh", "not json {").await.unwrap();
    let error = store.load().await.unwrap_err();
    assert!(
        error.is_store() && !error.is_store_unavailable(),
        "{error:?}"
    );
    assert!(error.to_string().contains("bad:refresh"), "{error}");
    let kept: String = con.get("bad:refresh").await.unwrap();
    assert_eq!(kept, "not json {");

    // A well-formed refresh key and a broken access key: the error names the access key and
    // quotes neither token.
    let _: () = con
        .set(
            "bad:refresh",
            r#"{"refresh_token":"1000.secret.refresh","token_requests_ms":[]}"#,
        )
        .await
        .unwrap();
    let broken_access = r#"{"access_token":"1000.secret.access","issued_at_ms":"soon"}"#;
    let _: () = con.set("bad:access", broken_access).await.unwrap();
    let error = store.load().await.unwrap_err();
    assert!(
        error.is_store() && !error.is_store_unavailable(),
        "{error:?}"
    );
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("bad:access"), "{shown}");
    assert!(
        !shown.contains("secret") && !shown.contains("soon"),
        "the error quotes the stored value: {shown}"
    );
    let kept: String = con.get("bad:access").await.unwrap();
    assert_eq!(kept, broken_access);
}

// ---------------------------------------------------------------------------------------------
// The lock
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_many_contenders_gets_the_lock() {
    let server = RedisServer::start();
    // Two store instances, as two processes would have.
    let stores = [
        Arc::new(store(&server, "race")),
        Arc::new(store(&server, "race")),
    ];
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.try_lock(Duration::ZERO).await.unwrap()
                })
            })
            .collect();
        let mut held: Vec<Box<dyn StoreLock>> = Vec::new();
        for task in tasks {
            held.extend(task.await.unwrap());
        }
        assert_eq!(held.len(), 1, "round {round}: {} holders", held.len());

        // While held, nobody else gets it; released, the next contender does.
        assert!(stores[0].try_lock(Duration::ZERO).await.unwrap().is_none());
        assert!(stores[1].try_lock(Duration::ZERO).await.unwrap().is_none());
        held.pop().unwrap().release().await.unwrap();
        let next = stores[round % 2]
            .try_lock(Duration::ZERO)
            .await
            .unwrap()
            .expect("free after release");
        next.release().await.unwrap();
    }
    let mut con = raw(&server).await;
    assert!(!exists(&mut con, "race:lock").await);
}

#[tokio::test]
async fn a_live_holder_keeps_its_lock_past_the_ttl() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    // Renewed every third of a second-long TTL: a renewal late by more than half a second on a
    // loaded machine would still be in time.
    let holder = store(&server, "renew").lock_ttl(Duration::from_secs(1));
    let other = store(&server, "renew");
    let lock = holder
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("free");
    // Several TTLs: without renewal the lock would long be gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        other.try_lock(Duration::ZERO).await.unwrap().is_none(),
        "a live holder's lock expired"
    );
    lock.release().await.unwrap();
    assert!(!exists(&mut con, "renew:lock").await);

    // A holder that dies (its lock dropped without release, as a killed process's) stops
    // renewing, and the lock is free within about a TTL.
    let dead = holder
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("free");
    drop(dead);
    let dropped = Instant::now();
    while other.try_lock(Duration::ZERO).await.unwrap().is_none() {
        assert!(
            dropped.elapsed() < Duration::from_secs(15),
            "a dead holder's lock was still renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_late_release_does_not_free_the_next_holders_lock_nor_save_under_it() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    let slow = store(&server, "late");
    let other = store(&server, "late");

    let expired = slow.try_lock(Duration::ZERO).await.unwrap().expect("free");
    let read = slow.load().await.unwrap().unwrap_or_default();
    // The lock expires while its holder is cut off from Redis (it could not renew).
    let _: () = con.del("late:lock").await.unwrap();
    let current = other
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("the first lock expired");
    let owner: String = con.get("late:lock").await.unwrap();

    // The first holder's save is refused: it no longer holds the lock.
    assert_eq!(
        slow.save(&read, Some(&*expired)).await.unwrap(),
        Saved::LockLost
    );
    assert_eq!(slow.load().await.unwrap(), None, "nothing was written");
    // The holder of the lock saves; a save from a stale read is refused as a conflict.
    assert_eq!(
        other.save(&read, Some(&*current)).await.unwrap(),
        Saved::Stored
    );
    assert_eq!(other.save(&read, None).await.unwrap(), Saved::Conflict);

    // The first holder finally releases: the second one's lock must survive.
    expired.release().await.unwrap();
    let still: Option<String> = con.get("late:lock").await.unwrap();
    assert_eq!(still.as_deref(), Some(&*owner));
    assert!(slow.try_lock(Duration::ZERO).await.unwrap().is_none());

    current.release().await.unwrap();
    assert!(!exists(&mut con, "late:lock").await);
}

#[tokio::test]
async fn a_lock_whose_holder_died_expires_by_itself() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    // Seconds, so the checks that it is still held cannot come too late on a loaded machine.
    let ttl = Duration::from_secs(3);
    let store = store(&server, "dead").lock_ttl(ttl);

    // Read before the lock is taken: it cannot expire sooner than `ttl` after this.
    let taken = Instant::now();
    // Dropping the lock without releasing it is what a crashed holder leaves behind.
    drop(store.try_lock(Duration::ZERO).await.unwrap().expect("free"));
    let left = pttl(&mut con, "dead:lock").await;
    assert!(left > 0 && left <= 3000, "lock PTTL {left}");
    assert!(store.try_lock(Duration::ZERO).await.unwrap().is_none());

    let again = loop {
        if let Some(lock) = store.try_lock(Duration::ZERO).await.unwrap() {
            break lock;
        }
        assert!(
            taken.elapsed() < ttl + Duration::from_secs(10),
            "the lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // It expires `ttl` after `taken` by Redis's clock; half of it still catches an early expiry
    // (a unit mix-up) without depending on that clock agreeing with ours to the millisecond.
    assert!(
        taken.elapsed() >= ttl / 2,
        "free after {:?}",
        taken.elapsed()
    );
    again.release().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Redis down
// ---------------------------------------------------------------------------------------------

// Multi-threaded, as in production: the store's background reconnection runs while the test
// thread blocks in `restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_fast_as_unavailable_and_the_store_reconnects() {
    let mut server = RedisServer::start();
    let store = store(&server, "down");
    let set = TokenSet::new(RefreshToken::new("1000.down"));
    common::put(&store, &set).await.unwrap();
    let lock = store.try_lock(Duration::ZERO).await.unwrap().expect("free");

    server.kill();
    fails_unavailable("load", store.load()).await;
    fails_unavailable("save", common::put(&store, &set)).await;
    fails_unavailable("try_lock", store.try_lock(Duration::ZERO)).await;
    fails_unavailable("release", lock.release()).await;
    // Still down: the failures repeat, as fast.
    let error = fails_unavailable("load again", store.load()).await;
    assert!(error.is_transient(), "{error:?}");
    // Redis stays down a while: the reconnection attempts the failures started fail too.
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.restart();
    // The server kept nothing; the same store instance works again at once.
    assert_eq!(store.load().await.unwrap(), None);
    let set = common::put(&store, &set).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(set));
    let lock = store
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("free on the new server");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_does_not_stop_open_and_is_used_once_up() {
    let mut server = RedisServer::start();
    server.kill();
    let store = zoho_auth::store::open(&format!("{}?prefix=late-start", server.url()))
        .expect("opening does not connect");
    fails_unavailable("load", store.load()).await;
    fails_unavailable("try_lock", store.try_lock(Duration::ZERO)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.restart();
    let set = TokenSet::new(RefreshToken::new("1000.late"));
    let set = common::put(&*store, &set).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(set));
    let mut con = raw(&server).await;
    assert!(exists(&mut con, "late-start:refresh").await);
}

#[tokio::test]
async fn a_redis_that_never_answers_times_out_as_unavailable() {
    // Accepts connections (the kernel does, from the backlog) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let store = RedisStore::open(&url).unwrap();
    fails_unavailable("load", store.load()).await;
    fails_unavailable("save", common::put(&store, &TokenSet::default())).await;
    fails_unavailable("try_lock", store.try_lock(Duration::ZERO)).await;
}

#[test]
fn open_needs_no_runtime_and_no_server() {
    // Outside any Tokio runtime, on a port where nothing listens.
    let port = redis_server::free_port();
    let store = RedisStore::open(&format!("redis://127.0.0.1:{port}/")).unwrap();
    assert!(format!("{store:?}").contains(&port.to_string()));
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn store_open_honours_prefix_and_lock_ttl() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    let store =
        zoho_auth::store::open(&format!("{}?prefix=p&lock_ttl_ms=500", server.url())).unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains("\"p\""), "{shown}");
    assert!(
        !shown.contains("lock_ttl_ms") && !shown.contains("prefix="),
        "our parameters reached the redis URL: {shown}"
    );

    common::put(&*store, &TokenSet::new(RefreshToken::new("1000.p")))
        .await
        .unwrap();
    assert!(exists(&mut con, "p:refresh").await);
    assert!(!exists(&mut con, "zoho-auth:refresh").await);

    let _lock = store.try_lock(Duration::ZERO).await.unwrap().expect("free");
    let ttl = pttl(&mut con, "p:lock").await;
    assert!(ttl > 0 && ttl <= 500, "lock PTTL {ttl}, expected ≤ 500");

    // Defaults: prefix `zoho-auth`, a 30 s lock.
    let default = zoho_auth::store::open(&server.url()).unwrap();
    let _lock = default
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("free");
    let ttl = pttl(&mut con, "zoho-auth:lock").await;
    assert!(ttl > 29_000 && ttl <= 30_000, "default lock PTTL {ttl}");
}

#[test]
fn bad_parameters_are_config_errors() {
    for url in [
        "redis://127.0.0.1:1/?lock_ttl_ms=0",
        "redis://127.0.0.1:1/?lock_ttl_ms=soon",
        "redis://127.0.0.1:1/?prefix=",
        "redis://127.0.0.1:1/not-a-db-number",
        "http://127.0.0.1:1/",
    ] {
        let error = RedisStore::open(url).unwrap_err();
        assert!(error.is_config(), "{url}: {error:?}");
    }
}

#[tokio::test]
async fn debug_and_errors_never_show_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "hunter2"]);
    let port = server.port();
    for url in [
        format!("redis://:hunter2@127.0.0.1:{port}/"),
        format!("redis://default:hunter2@127.0.0.1:{port}/?prefix=pw"),
    ] {
        let store = RedisStore::open(&url).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
        // And the password works.
        common::put(&store, &TokenSet::new(RefreshToken::new("1000.pw")))
            .await
            .unwrap();
        assert!(store.load().await.unwrap().is_some());
    }

    // A wrong password: an error a person must fix, naming neither password.
    let wrong = RedisStore::open(&format!("redis://:wrong-pw@127.0.0.1:{port}/")).unwrap();
    let error = wrong.load().await.unwrap_err();
    assert!(error.is_store(), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("wrong-pw") && !shown.contains("hunter2"),
        "{shown}"
    );
    let shown = format!("{wrong:?}");
    assert!(!shown.contains("wrong-pw"), "{shown}");

    // Once the server takes that password, the same store works: a failed handshake does not
    // stick to it.
    let mut admin = redis::Client::open(format!("redis://:hunter2@127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong-pw")
        .query_async(&mut admin)
        .await
        .unwrap();
    let loaded = wrong
        .load()
        .await
        .expect("the store reconnects with the password");
    assert_eq!(loaded.unwrap().refresh_token.unwrap().expose(), "1000.pw");
}
