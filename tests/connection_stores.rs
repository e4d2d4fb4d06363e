//! Connection stores: many connections' records, each its own `TokenStore`, in memory, in a
//! directory of token files, and in a real `redis-server` (see `common/redis.rs`). The same
//! checks run on every store — isolation of one connection from another, paging through
//! thousands, ids that filesystems and key names trip on, removal racing saves — and then what
//! each store lays out and how it fails.
#![cfg(unix)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis_server::RedisServer;
use tokio::task::JoinSet;
use zoho_auth::store::{
    open_connections, ConnectionStore, FileConnections, MemoryConnections, RedisStore, Saved,
    TokenSet, TokenStore,
};
use zoho_auth::{ConnectionId, RefreshToken};

use common::TempDir;

/// What a store may take to fail when Redis is down: the store bounds each operation by a few
/// seconds; this adds slack for a loaded machine and still catches an unbounded wait.
const DOWN_BOUND: Duration = Duration::from_secs(10);

/// The page size the paging tests use.
const PAGE: usize = 1000;

fn id(id: &str) -> ConnectionId {
    ConnectionId::new(id).unwrap()
}

/// Ids that collide under a careless encoding: case variants, path syntax, a single store's key
/// names, text that looks encoded, device names, unicode and the longest id.
fn awkward_ids() -> Vec<ConnectionId> {
    let mut ids: Vec<ConnectionId> = [
        "Alice",
        "alice",
        "ALICE",
        "%41lice",
        "/",
        "a/b",
        "a%2fb",
        ".",
        "..",
        "../escape",
        " ",
        "with space",
        "x:refresh",
        "refresh",
        "conn",
        "con",
        "CON",
        "lpt1",
        "a.json",
        "a.json.lock",
        "ünïcödé",
        "ÜNÏCÖDÉ",
        "日本語",
    ]
    .into_iter()
    .map(id)
    .collect();
    ids.push(id(&"é".repeat(ConnectionId::MAX_LEN / 2)));
    ids.push(id(&"Z".repeat(ConnectionId::MAX_LEN)));
    ids
}

/// Saves a set holding `token` for `id`; the set as stored.
async fn save(store: &dyn ConnectionStore, id: &ConnectionId, token: &str) -> TokenSet {
    let token = RefreshToken::new(token);
    store
        .connection(id)
        .update(None, |set| {
            set.refresh_token = Some(token.clone());
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("save {id:?}: {e}"))
        .1
}

async fn refresh_token(store: &dyn ConnectionStore, id: &ConnectionId) -> Option<String> {
    let set = store.connection(id).load().await.unwrap()?;
    Some(set.refresh_token?.expose().to_owned())
}

/// Every listed id, page by page; panics on a page out of order or overlapping the one before.
async fn list_all(store: &dyn ConnectionStore, limit: usize) -> (Vec<ConnectionId>, usize) {
    let mut all: Vec<ConnectionId> = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list(all.last(), limit).await.unwrap();
        assert!(page.len() <= limit);
        assert!(page.windows(2).all(|w| w[0] < w[1]), "a page out of order");
        if let (Some(last), Some(first)) = (all.last(), page.first()) {
            assert!(last < first, "pages overlap or go back");
        }
        let done = page.len() < limit;
        if !page.is_empty() {
            pages += 1;
        }
        all.extend(page);
        if done {
            return (all, pages);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The same behaviour on every store
// ---------------------------------------------------------------------------------------------

/// A's refresh lock and saves leave B alone; two handles of one id share its lock and record.
async fn connections_are_isolated(store: Arc<dyn ConnectionStore>) {
    let (a, b) = (id("tenant-a"), id("tenant-b"));
    save(&*store, &b, "1000.b").await;
    let b_revision = store.connection(&b).load().await.unwrap().unwrap().revision;

    let lock = store
        .connection(&a)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("A's lock is free");
    assert!(
        store
            .connection(&a)
            .try_lock(Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "another handle of A shares A's lock"
    );
    let b_lock = store
        .connection(&b)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("B's lock is free while A's is held");

    // A saves under its lock, three times; B's record does not move.
    for round in 0..3 {
        let token = RefreshToken::new(format!("1000.a.{round}"));
        store
            .connection(&a)
            .update(Some(&*lock), |set| {
                set.refresh_token = Some(token.clone());
                Ok(())
            })
            .await
            .unwrap();
    }
    let b_set = store.connection(&b).load().await.unwrap().unwrap();
    assert_eq!(b_set.revision, b_revision);
    assert_eq!(b_set.refresh_token.unwrap().expose(), "1000.b");
    assert_eq!(
        refresh_token(&*store, &a).await.as_deref(),
        Some("1000.a.2")
    );
    assert_eq!(
        store.connection(&a).load().await.unwrap().unwrap().revision,
        3
    );
    lock.release().await.unwrap();
    b_lock.release().await.unwrap();

    // Case variants are two connections, with two records and two locks.
    let (upper, lower) = (id("Alice"), id("alice"));
    save(&*store, &upper, "1000.upper").await;
    save(&*store, &lower, "1000.lower").await;
    assert_eq!(
        refresh_token(&*store, &upper).await.as_deref(),
        Some("1000.upper")
    );
    let held = store
        .connection(&upper)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .connection(&lower)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
    held.release().await.unwrap();
}

/// `n` connections (the awkward ids among them) list in order, page by page, each once; a store
/// looked up but never saved is not listed.
async fn connections_page_in_order(store: Arc<dyn ConnectionStore>, n: usize) {
    let mut ids = awkward_ids();
    ids.extend((ids.len()..n).map(|i| id(&format!("tenant-{i:05}"))));
    let mut saves = JoinSet::new();
    for (i, id) in ids.iter().cloned().enumerate() {
        let store = store.clone();
        saves.spawn(async move { save(&*store, &id, &format!("1000.{i}")).await });
    }
    while let Some(saved) = saves.join_next().await {
        assert_eq!(saved.unwrap().revision, 1);
    }
    // Looked up, even locked, but never saved: not a connection.
    let ghost = store.connection(&id("never-saved"));
    let _lock = ghost.try_lock(Duration::from_secs(30)).await.unwrap();
    assert!(ghost.load().await.unwrap().is_none());

    let (listed, pages) = list_all(&*store, PAGE).await;
    let expected: Vec<ConnectionId> = ids
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(expected.len(), n, "the ids are distinct");
    assert_eq!(listed, expected, "every id, once, in order");
    assert_eq!(pages, n.div_ceil(PAGE));

    // Every awkward id kept its own record.
    for (i, id) in ids.iter().enumerate().take(awkward_ids().len()) {
        assert_eq!(
            refresh_token(&*store, id).await,
            Some(format!("1000.{i}")),
            "{id:?}"
        );
    }
    assert_eq!(store.list(None, 0).await.unwrap(), []);
    assert_eq!(store.list(listed.last(), PAGE).await.unwrap(), []);
}

/// A removed connection is gone; a save from a set read before the removal is refused; a save
/// after it starts a new record.
async fn removal_deletes_and_fences(store: Arc<dyn ConnectionStore>) {
    let (gone, kept) = (id("gone"), id("kept"));
    save(&*store, &gone, "1000.gone").await;
    save(&*store, &kept, "1000.kept").await;
    let read = store.connection(&gone).load().await.unwrap().unwrap();

    assert!(store.remove(&gone).await.unwrap());
    assert!(store.connection(&gone).load().await.unwrap().is_none());
    assert_eq!(list_all(&*store, PAGE).await.0, std::slice::from_ref(&kept));
    assert!(
        !store.remove(&gone).await.unwrap(),
        "nothing left to remove"
    );
    assert!(!store.remove(&id("never")).await.unwrap());

    let mut stale = read.clone();
    stale.refresh_token = Some(RefreshToken::new("1000.stale"));
    assert_eq!(
        store.connection(&gone).save(&stale, None).await.unwrap(),
        Saved::Conflict,
        "a set read before the removal does not bring it back"
    );
    assert!(store.connection(&gone).load().await.unwrap().is_none());
    assert_eq!(list_all(&*store, PAGE).await.0, std::slice::from_ref(&kept));

    let again = save(&*store, &gone, "1000.again").await;
    assert_eq!(again.revision, 1);
    assert_eq!(
        list_all(&*store, PAGE).await.0,
        [gone.clone(), kept.clone()]
    );

    // A removal fenced on a revision read before a save (a new consent) keeps the record.
    let newer = save(&*store, &gone, "1000.newer").await;
    assert!(!store.remove_if(&gone, again.revision).await.unwrap());
    assert_eq!(
        refresh_token(&*store, &gone).await.as_deref(),
        Some("1000.newer")
    );
    assert!(!store.remove_if(&id("never"), 0).await.unwrap());
    assert!(store.remove_if(&gone, newer.revision).await.unwrap());
    assert!(store.connection(&gone).load().await.unwrap().is_none());
    assert_eq!(list_all(&*store, PAGE).await.0, [kept]);
}

/// Saves and removals of one connection racing: afterwards it is listed exactly when it has a
/// record, and that record is one a writer saved.
async fn removal_races_saves(store: Arc<dyn ConnectionStore>) {
    let contested = id("contested");
    for round in 0..20 {
        let mut tasks = JoinSet::new();
        for writer in 0..4 {
            let (store, contested) = (store.clone(), contested.clone());
            tasks.spawn(async move {
                for i in 0..5 {
                    save(&*store, &contested, &format!("1000.{writer}.{i}")).await;
                }
            });
        }
        let (remover, contested2) = (store.clone(), contested.clone());
        tasks.spawn(async move {
            for _ in 0..5 {
                remover.remove(&contested2).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let record = store.connection(&contested).load().await.unwrap();
        let listed = store.list(None, 10).await.unwrap().contains(&contested);
        assert_eq!(listed, record.is_some(), "round {round}: {record:?}");
        if let Some(set) = record {
            assert!(set.refresh_token.unwrap().expose().starts_with("1000."));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn memory_connections_are_isolated() {
    connections_are_isolated(Arc::new(MemoryConnections::new())).await;
}

#[tokio::test]
async fn memory_connections_page_in_order() {
    connections_page_in_order(Arc::new(MemoryConnections::new()), 2500).await;
}

#[tokio::test]
async fn memory_removal_deletes_and_fences() {
    removal_deletes_and_fences(Arc::new(MemoryConnections::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_removal_races_saves() {
    removal_races_saves(Arc::new(MemoryConnections::new())).await;
}

#[tokio::test]
async fn memory_gives_one_store_per_id() {
    let store = open_connections("memory").unwrap();
    let a = id("a");
    assert!(Arc::ptr_eq(&store.connection(&a), &store.connection(&a)));
    assert!(!Arc::ptr_eq(
        &store.connection(&a),
        &store.connection(&id("A"))
    ));
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn files(dir: &TempDir) -> Arc<dyn ConnectionStore> {
    Arc::new(FileConnections::new(dir.join("connections")))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn file_connections_are_isolated() {
    let dir = TempDir::new("conn-isolated");
    connections_are_isolated(files(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_connections_page_in_order() {
    let dir = TempDir::new("conn-pages");
    connections_page_in_order(files(&dir), 2500).await;
}

#[tokio::test]
async fn file_removal_deletes_and_fences() {
    let dir = TempDir::new("conn-remove");
    removal_deletes_and_fences(files(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_removal_races_saves() {
    let dir = TempDir::new("conn-race");
    let store = files(&dir);
    removal_races_saves(store).await;
    // No save was torn and no temporary file is left.
    for entry in fs::read_dir(dir.join("connections")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "{name}");
        if name.ends_with(".json") {
            let bytes = fs::read(dir.join("connections").join(&name)).unwrap();
            TokenSet::from_json(&bytes).unwrap();
        }
    }
}

/// `file:PATH` is PATH's directory `PATH.connections`, made on the first save (0700, files
/// 0600), one readable file per connection; PATH itself stays the single store's.
#[tokio::test]
async fn file_layout() {
    let dir = TempDir::new("conn-layout");
    let path = dir.join("tokens.json");
    let spec = format!("file:{}", path.display());
    let store = open_connections(&spec).unwrap();
    let connections = dir.join("tokens.json.connections");
    assert!(!connections.exists(), "nothing is made before a save");
    store.connection(&id("Tenant 1")).load().await.unwrap();
    assert!(!connections.exists(), "nor by a load");

    save(&*store, &id("Tenant 1"), "1000.t1").await;
    save(&*store, &id("con"), "1000.con").await;
    let long = id(&"é".repeat(128));
    save(&*store, &long, "1000.long").await;
    assert!(!path.exists());
    assert_eq!(mode(&connections), 0o700);
    let file = connections.join("%54enant%201.json");
    assert_eq!(mode(&file), 0o600);
    let set = TokenSet::from_json(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(set.refresh_token.unwrap().expose(), "1000.t1");
    assert!(
        connections.join("%63on.json").exists(),
        "a device name is escaped"
    );
    let encoded = "%c3%a9".repeat(128);
    let long_file = connections
        .join(&encoded[..200])
        .join(&encoded[200..400])
        .join(&encoded[400..600])
        .join(format!("{}.json", &encoded[600..]));
    assert!(long_file.exists(), "a long name is cut into directories");

    // The single store at PATH is another record.
    let single = zoho_auth::store::open(&spec).unwrap();
    assert!(
        single.load().await.unwrap().is_none(),
        "PATH was not written"
    );
    assert_eq!(list_all(&*store, PAGE).await.0.len(), 3);
}

/// Lock files, temporary files and names the store would not write are not connections; a
/// corrupt token file fails only its own load, with an error naming it.
#[tokio::test]
async fn file_listing_ignores_strangers_and_survives_corruption() {
    let dir = TempDir::new("conn-strangers");
    let store = files(&dir);
    let (good, bad) = (id("good"), id("bad"));
    save(&*store, &good, "1000.good").await;
    save(&*store, &bad, "1000.bad").await;
    let root = dir.join("connections");
    store
        .connection(&good)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(root.join("good.json.lock").exists());
    for stranger in [
        "README.txt",
        "Upper.json",
        "a.b.json",
        "%4A.json",
        "%zz.json",
        "%c3.json",
        ".good.json.1.abc.tmp",
        ".json",
        "%63on%.json",
    ] {
        fs::write(root.join(stranger), "{}").unwrap();
    }
    fs::create_dir(root.join("short-dir")).unwrap();
    fs::write(root.join("short-dir").join("x.json"), "{}").unwrap();
    fs::write(root.join("bad.json"), "{ not json").unwrap();

    assert_eq!(list_all(&*store, PAGE).await.0, [bad.clone(), good.clone()]);
    let error = store.connection(&bad).load().await.unwrap_err();
    assert!(error.is_store(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&*root.join("bad.json").to_string_lossy()),
        "{error}"
    );
    assert_eq!(
        refresh_token(&*store, &good).await.as_deref(),
        Some("1000.good")
    );
    // It is removed like any other.
    assert!(store.remove(&bad).await.unwrap());
    assert_eq!(list_all(&*store, PAGE).await.0, [good]);
}

/// `remove` waits for a save in progress (one holding the save lock) and deletes what it saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_removal_waits_for_a_save_in_progress() {
    let dir = TempDir::new("conn-remove-wait");
    let store = files(&dir);
    let target = id("target");
    save(&*store, &target, "1000.first").await;
    let root = dir.join("connections");

    // A save in progress, as another process makes it: under the save lock.
    let save_lock = fs::File::open(root.join("target.json.save.lock")).unwrap();
    save_lock.lock().unwrap();
    let removal = tokio::spawn({
        let (store, target) = (store.clone(), target.clone());
        async move { store.remove(&target).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !removal.is_finished(),
        "remove did not wait for the save lock"
    );
    assert!(root.join("target.json").exists());
    // The save lands, then frees its lock.
    let mut set = TokenSet::new(RefreshToken::new("1000.landed"));
    set.revision = 2;
    fs::write(root.join("target.json"), set.to_json()).unwrap();
    drop(save_lock);

    assert!(removal.await.unwrap());
    assert!(store.connection(&target).load().await.unwrap().is_none());
    assert!(!root.join("target.json.save.lock").exists());
}

/// A free refresh lock's files go with the record; a held one stays held through the removal.
#[tokio::test]
async fn file_removal_keeps_a_held_refresh_lock() {
    let dir = TempDir::new("conn-remove-lock");
    let store = files(&dir);
    let root = dir.join("connections");
    let (free, held) = (id("free"), id("held"));
    save(&*store, &free, "1000.free").await;
    save(&*store, &held, "1000.held").await;
    for id in [&free, &held] {
        store
            .connection(id)
            .try_lock(Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let lock = store
        .connection(&held)
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    assert!(store.remove(&free).await.unwrap());
    assert!(!root.join("free.json.lock").exists());
    assert!(!root.join("free.json.save.lock").exists());
    assert!(store.remove(&held).await.unwrap());
    assert!(root.join("held.json.lock").exists());
    assert!(
        store
            .connection(&held)
            .try_lock(Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "the refresh lock is still held"
    );
    lock.release().await.unwrap();

    // Lock files made again after a removal still exclude: one of two takers wins.
    let (one, two) = (store.connection(&free), store.connection(&free));
    let first = one.try_lock(Duration::from_secs(30)).await.unwrap();
    let second = two.try_lock(Duration::from_secs(30)).await.unwrap();
    assert!(first.is_some() && second.is_none());
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

fn on_redis(server: &RedisServer, prefix: &str) -> Arc<dyn ConnectionStore> {
    open_connections(&format!("{}?prefix={prefix}", server.url())).unwrap()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_connections_are_isolated() {
    let server = RedisServer::start();
    connections_are_isolated(on_redis(&server, "iso")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_connections_page_in_order() {
    let server = RedisServer::start();
    connections_page_in_order(on_redis(&server, "pages"), 500).await;
    // 500 with a page of 1000 is one page; 2,500 in pages of 1000 on Redis too, from the index.
    let mut con = raw(&server).await;
    let members: Vec<String> = (0..2500).map(|i| format!("m{i:04}")).collect();
    let entries: Vec<(i64, &str)> = members.iter().map(|m| (0, m.as_str())).collect();
    let _: () = con
        .zadd_multiple("bulk:connections", &entries)
        .await
        .unwrap();
    let bulk = on_redis(&server, "bulk");
    let (listed, pages) = list_all(&*bulk, PAGE).await;
    assert_eq!(pages, 3);
    assert_eq!(
        listed.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        members
    );
}

#[tokio::test]
async fn redis_removal_deletes_and_fences() {
    let server = RedisServer::start();
    removal_deletes_and_fences(on_redis(&server, "remove")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_removal_races_saves() {
    let server = RedisServer::start();
    removal_races_saves(on_redis(&server, "race")).await;
}

/// The keys: each connection's three under `{P}:conn:{name}`, the index `{P}:connections` written
/// by the save itself; the single store's `{P}:refresh` untouched, whatever the ids.
#[tokio::test]
async fn redis_layout() {
    let server = RedisServer::start();
    let store = on_redis(&server, "app");
    let single: Arc<dyn TokenStore> =
        Arc::new(RedisStore::open(&server.url()).unwrap().prefix("app"));
    let single_set = single
        .update(None, |set| {
            set.refresh_token = Some(RefreshToken::new("1000.single"));
            Ok(())
        })
        .await
        .unwrap()
        .1;
    for name in ["refresh", ":refresh", "Alice", "a/b"] {
        save(&*store, &id(name), &format!("1000.{name}")).await;
    }
    let lock = store
        .connection(&id("Alice"))
        .try_lock(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    let mut con = raw(&server).await;
    let mut keys: Vec<String> = con.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "app:conn:%3arefresh:refresh",
            "app:conn:%41lice:lock",
            "app:conn:%41lice:refresh",
            "app:conn:a%2fb:refresh",
            "app:conn:refresh:refresh",
            "app:connections",
            "app:refresh",
        ]
    );
    let index: Vec<(String, f64)> = con
        .zrange_withscores("app:connections", 0, -1)
        .await
        .unwrap();
    assert_eq!(
        index,
        [
            (":refresh".to_owned(), 0.0),
            ("Alice".to_owned(), 0.0),
            ("a/b".to_owned(), 0.0),
            ("refresh".to_owned(), 0.0),
        ]
    );
    let loaded = single.load().await.unwrap().unwrap();
    assert_eq!(loaded, single_set, "the single store is untouched");
    lock.release().await.unwrap();

    // Removal takes the record and the index entry; a held lock is its holder's until it ends.
    assert!(store.remove(&id("a/b")).await.unwrap());
    let gone: Vec<String> = con.keys("app:conn:a%2fb*").await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let score: Option<f64> = con.zscore("app:connections", "a/b").await.unwrap();
    assert_eq!(score, None);
}

/// A Redis that is not there: listing and removing fail as unavailable, within the bound.
#[tokio::test]
async fn redis_down_is_unavailable_and_bounded() {
    let store = open_connections(&format!(
        "redis://127.0.0.1:{}/?prefix=down",
        redis_server::free_port()
    ))
    .unwrap();
    let started = Instant::now();
    let error = store.list(None, 10).await.unwrap_err();
    assert!(error.is_store_unavailable(), "{error:?}");
    let error = store.remove(&id("x")).await.unwrap_err();
    assert!(error.is_store_unavailable(), "{error:?}");
    let error = store.connection(&id("x")).load().await.unwrap_err();
    assert!(error.is_store_unavailable(), "{error:?}");
    assert!(
        started.elapsed() < 3 * DOWN_BOUND,
        "{:?}",
        started.elapsed()
    );
}

/// A member of the index that is not an id (written by hand) is an error naming the key.
#[tokio::test]
async fn redis_index_with_a_stranger_is_a_store_error() {
    let server = RedisServer::start();
    let store = on_redis(&server, "odd");
    let mut con = raw(&server).await;
    let _: () = con.zadd("odd:connections", "bad\nid", 0).await.unwrap();
    let error = store.list(None, 10).await.unwrap_err();
    assert!(error.is_store(), "{error:?}");
    assert!(error.to_string().contains("odd:connections"), "{error}");
}
