//! Many connections in one process (issue 11): `Connections` builds one cache per connection,
//! once; the layer picks the connection per request; eviction loses nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use tower::{Layer, ServiceExt};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections};
use zoho_auth::{ConnectionId, Connections, RefreshToken, ZohoAuthLayer};

use common::{body_text, Recorder};

fn id(name: &str) -> ConnectionId {
    name.parse().unwrap()
}

/// What a consent does: stores the connection's refresh token (and the accounts server that
/// issued it) in its record.
async fn connect(
    store: &dyn ConnectionStore,
    id: &ConnectionId,
    refresh: &RefreshToken,
    accounts: Option<String>,
) {
    store
        .connection(id)
        .update(None, |set| {
            set.refresh_token = Some(refresh.clone());
            set.accounts_url = accounts.clone();
            Ok(())
        })
        .await
        .unwrap();
}

/// A simulator and a store in which alice is connected: `(zoho, store, alice, her refresh
/// token)`.
async fn alice_connected() -> (
    Simulator,
    Arc<dyn ConnectionStore>,
    ConnectionId,
    RefreshToken,
) {
    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let alice = id("alice");
    let refresh = zoho.mint_refresh_token(&[]);
    connect(&*store, &alice, &refresh, None).await;
    (zoho, store, alice, refresh)
}

/// `count` users spread over the simulator's data centres, each connected in `store` with its
/// DC's accounts server: `(id, refresh token, DC)`.
async fn users_in_data_centres(
    zoho: &Simulator,
    store: &dyn ConnectionStore,
    count: usize,
) -> Vec<(ConnectionId, RefreshToken, usize)> {
    let mut users = Vec::new();
    for n in 0..count {
        let dc = n % zoho.data_center_count();
        let refresh = zoho.mint_refresh_token_in(dc, &[]).unwrap();
        let id = id(&format!("user-{n:04}"));
        connect(
            store,
            &id,
            &refresh,
            Some(zoho.data_center_url(dc).unwrap()),
        )
        .await;
        users.push((id, refresh, dc));
    }
    users
}

/// A real hyper-util client behind a layer over `connections`, as an application sends through.
fn over_http(connections: &Connections) -> zoho_auth::ZohoAuth<common::HttpClient<Empty<Bytes>>> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    ZohoAuthLayer::connections(connections.clone()).layer(client)
}

fn request(path: &str, connection: Option<&ConnectionId>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(path).body(Empty::new()).unwrap();
    if let Some(id) = connection {
        request.extensions_mut().insert(id.clone());
    }
    request
}

#[tokio::test]
async fn a_request_names_its_connection_or_fails_before_anything_is_sent() {
    let (zoho, store, alice, _) = alice_connected().await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let recorder = Recorder::ok();
    let layer = ZohoAuthLayer::connections(connections.clone());

    let response = layer
        .layer(recorder.clone())
        .oneshot(request("/crm/v8/Leads", Some(&alice)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = recorder.seen();
    assert_eq!(
        seen[0].uri,
        format!("{}/crm/v8/Leads", zoho.url()),
        "relative to alice's api_domain"
    );
    let token = connections.token(&alice).await.unwrap();
    assert_eq!(
        seen[0].authorization.as_ref().unwrap(),
        &common::header_for(token.access_token())
    );

    for (name, connection) in [
        ("no connection", None),
        ("an unknown one", Some(id("nobody"))),
    ] {
        let error = layer
            .layer(recorder.clone())
            .oneshot(request("/crm/v8/Leads", connection.as_ref()))
            .await
            .unwrap_err();
        let error = error
            .downcast_ref::<zoho_auth::Error>()
            .expect("a zoho_auth::Error");
        assert!(error.is_not_connected(), "{name}: {error}");
    }
    assert_eq!(recorder.seen().len(), 1, "nothing else was sent");
    assert_eq!(zoho.counters().token_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_is_built_once_and_refreshed_once_however_many_ask() {
    let zoho = Simulator::start().await.unwrap();
    let store = Arc::new(MemoryConnections::new());
    let users: Vec<_> = (0..20)
        .map(|n| (id(&format!("user-{n}")), zoho.mint_refresh_token(&[])))
        .collect();
    for (id, refresh) in &users {
        connect(&*store, id, refresh, None).await;
    }
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let service = over_http(&connections);
    let calls: Vec<_> = (0..400)
        .map(|n| {
            let service = service.clone();
            let (id, _) = users[n % users.len()].clone();
            tokio::spawn(async move {
                let response = service
                    .oneshot(request("/crm/v8/users?type=CurrentUser", Some(&id)))
                    .await
                    .unwrap();
                (response.status(), body_text(response).await)
            })
        })
        .collect();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (id, refresh) in &users {
        let seen = zoho
            .counters_for(refresh)
            .expect("the simulator knows the user");
        assert_eq!(seen.tokens_issued, 1, "{id}: one token for its 20 requests");
        assert_eq!(seen.api_ok, 20, "{id}: its requests carried its own token");
        assert_eq!(connections.get(id).unwrap().stats().token_requests, 1);
    }
}

#[tokio::test]
async fn round_robin_over_more_connections_than_resident_mints_one_token_each() {
    let zoho = Simulator::start().await.unwrap();
    let store = Arc::new(MemoryConnections::new());
    let users: Vec<_> = (0..1000)
        .map(|n| (id(&format!("tenant-{n}")), zoho.mint_refresh_token(&[])))
        .collect();
    for (id, refresh) in &users {
        connect(&*store, id, refresh, None).await;
    }
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .max_resident(100)
        .build()
        .unwrap();
    let recorder = Recorder::ok();
    let service = ZohoAuthLayer::connections(connections.clone()).layer(recorder.clone());
    for round in 0..3 {
        for (id, _) in &users {
            let response = service
                .clone()
                .oneshot(request("/crm/v8/Leads", Some(id)))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "round {round}, {id}");
        }
        connections.run_pending_tasks();
        assert!(
            connections.resident() <= 100,
            "{} resident",
            connections.resident()
        );
    }
    for (id, refresh) in &users {
        let seen = zoho.counters_for(refresh).unwrap();
        assert_eq!(
            seen.tokens_issued, 1,
            "{id} minted again after it was evicted"
        );
    }
    assert_eq!(recorder.seen().len(), 3000);
}

#[tokio::test]
async fn an_idle_connection_is_evicted_and_never_mints_again_when_used_again() {
    let (zoho, store, alice, refresh) = alice_connected().await;
    // moka keeps its own clock, not tokio's: a short idle time, and a wait for the eviction
    // itself rather than for a duration.
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .time_to_idle(Duration::from_millis(50))
        .build()
        .unwrap();
    let first = connections.token(&alice).await.unwrap();
    drop(first);
    common::wait_until(Duration::from_secs(30), "alice evicted", || {
        connections.run_pending_tasks();
        connections.resident() == 0
    })
    .await;

    let again = connections.token(&alice).await.unwrap();
    assert_eq!(zoho.counters_for(&refresh).unwrap().tokens_issued, 1);
    assert!(zoho.is_access_token_live(again.access_token().expose()));

    // Rebuilt from the record — here by a registry of a second process on the same store — a
    // connection adopts the token stored there.
    let elsewhere =
        Connections::builder(zoho.accounts_client().unwrap(), connections.store().clone())
            .build()
            .unwrap();
    let adopted = elsewhere.token(&alice).await.unwrap();
    assert_eq!(adopted.access_token(), again.access_token());
    let stats = elsewhere.get(&alice).unwrap().stats();
    assert_eq!((stats.refreshes, stats.adopted), (0, 1));
    assert_eq!(zoho.counters_for(&refresh).unwrap().tokens_issued, 1);
}

#[tokio::test]
async fn a_connection_evicted_while_in_use_keeps_its_one_cache() {
    let (zoho, store, alice, _) = alice_connected().await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .time_to_idle(Duration::from_millis(50))
        .build()
        .unwrap();
    // Held, as a request waiting for its token holds it, while the registry evicts it.
    let held = connections.get(&alice).unwrap();
    let token = held.token().await.unwrap();
    common::wait_until(Duration::from_secs(30), "alice evicted", || {
        connections.run_pending_tasks();
        connections.resident() == 0
    })
    .await;

    let looked_up = connections.get(&alice).unwrap();
    assert_eq!(
        looked_up.stats().token_requests,
        1,
        "the cache in use, not a second one"
    );
    held.invalidate(&token);
    looked_up.token().await.unwrap();
    assert_eq!(held.stats().token_requests, 2, "one cache, so one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_s_token_goes_only_to_its_own_data_centre() {
    let zoho = Simulator::builder().data_centers(3).start().await.unwrap();
    let store = Arc::new(MemoryConnections::new());
    let users = users_in_data_centres(&zoho, &*store, 30).await;
    // The default accounts server is DC 0's; each record names its own.
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let service = over_http(&connections);

    let calls: Vec<_> = users
        .iter()
        .flat_map(|(id, _, dc)| {
            // Four relative requests, and one to another data centre's host by name.
            let other = zoho.data_center_url((dc + 1) % 3).unwrap();
            let mut paths = vec!["/crm/v8/users?type=CurrentUser".to_owned(); 4];
            paths.push(format!("{other}/crm/v8/Leads"));
            paths.into_iter().map(move |path| (id.clone(), path))
        })
        .map(|(id, path)| {
            let service = service.clone();
            tokio::spawn(async move {
                let response = service.oneshot(request(&path, Some(&id))).await.unwrap();
                (path, response.status(), body_text(response).await)
            })
        })
        .collect();
    for call in calls {
        let (path, status, body) = call.await.unwrap();
        if path.starts_with("http") {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path}: sent without a token"
            );
            assert!(body.contains("AUTHENTICATION_FAILURE"), "{body}");
        } else {
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
    for (id, refresh, dc) in &users {
        let seen = zoho.counters_for(refresh).unwrap();
        assert_eq!(seen.tokens_issued, 1, "{id}");
        assert_eq!(
            seen.wrong_dc_refresh_grants, 0,
            "{id} refreshed at its own DC {dc}"
        );
        assert_eq!(seen.api_ok, 4, "{id}");
        assert_eq!(
            seen.wrong_dc_api_requests, 0,
            "{id}'s token went to another DC"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_in_flight_across_connections_never_exceed_the_cap() {
    let zoho = Simulator::builder()
        .token_latency(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let store = Arc::new(MemoryConnections::new());
    let users: Vec<_> = (0..200).map(|n| id(&format!("user-{n}"))).collect();
    for id in &users {
        connect(&*store, id, &zoho.mint_refresh_token(&[]), None).await;
    }
    let warm = id("warm");
    connect(&*store, &warm, &zoho.mint_refresh_token(&[]), None).await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .max_token_requests_in_flight(8)
        .build()
        .unwrap();
    connections.token(&warm).await.unwrap();

    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let storm: Vec<_> = users
        .iter()
        .map(|id| {
            let (connections, id, done) = (connections.clone(), id.clone(), done.clone());
            tokio::spawn(async move {
                let token = connections.token(&id).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                token
            })
        })
        .collect();
    // 200 token requests 8 at a time take 25 rounds of 50 ms; a connection with a valid token
    // is served meanwhile.
    connections.token(&warm).await.unwrap();
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst) < users.len(),
        "served during the storm"
    );
    for task in storm {
        task.await.unwrap().unwrap();
    }
    let max = zoho.max_token_requests_in_flight();
    assert!(max <= 8, "{max} token requests in flight at once");
    assert!(
        max >= 2,
        "the cap, not a lack of concurrency, bounded them: {max}"
    );
    assert_eq!(zoho.counters().token_requests, 201);
}

#[tokio::test]
async fn a_revoked_connection_needs_reconsent_in_every_process_and_the_others_go_on() {
    let zoho = Simulator::start().await.unwrap();
    // One store, two registries: two processes of a fleet.
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let users: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| (id(name), zoho.mint_refresh_token(&[])))
        .collect();
    for (id, refresh) in &users {
        connect(&*store, id, refresh, None).await;
    }
    let processes: Vec<_> = (0..2)
        .map(|_| {
            Connections::builder(zoho.accounts_client().unwrap(), store.clone())
                .build()
                .unwrap()
        })
        .collect();
    let mut events: Vec<_> = processes.iter().map(Connections::subscribe).collect();
    let zoho_url = zoho.url();
    let send = |process: &Connections, id: &ConnectionId| {
        let service = over_http(process);
        let request = request(&format!("{zoho_url}/crm/v8/Leads"), Some(id));
        async move { service.oneshot(request).await }
    };
    for process in &processes {
        for (id, _) in &users {
            assert_eq!(send(process, id).await.unwrap().status(), StatusCode::OK);
        }
    }
    let (bob, bob_refresh) = &users[1];
    zoho.revoke_refresh_token(bob_refresh);
    let grants_before = zoho.counters_for(bob_refresh).unwrap().refresh_grants;

    for (n, process) in processes.iter().enumerate() {
        // The dead token's answer, its refresh refused: the caller sees Zoho's answer, then a
        // typed error, never a call to Zoho from the second process.
        let _ = send(process, bob).await;
        let error = process.token(bob).await.unwrap_err();
        assert!(error.is_invalid_grant(), "process {n}: {error}");
        let status = process.status(bob).await.unwrap();
        assert!(
            matches!(&status, zoho_auth::Status::NeedsReconsent { code } if code == "invalid_code"),
            "process {n}: {status:?}"
        );
        for (other, _) in [&users[0], &users[2]] {
            assert_eq!(
                send(process, other).await.unwrap().status(),
                StatusCode::OK,
                "{other} untouched"
            );
        }
    }
    assert_eq!(
        zoho.counters_for(bob_refresh).unwrap().refresh_grants,
        grants_before + 1,
        "one process asked Zoho, once"
    );

    for (n, received) in events.iter_mut().enumerate() {
        let kinds: Vec<_> = std::iter::from_fn(|| received.try_recv().ok()).collect();
        assert_eq!(kinds.len(), 1, "process {n}: one event: {kinds:?}");
        assert_eq!(kinds[0].id, *bob);
        assert_eq!(
            kinds[0].kind,
            zoho_auth::connections::EventKind::NeedsReconsent {
                code: "invalid_code".into()
            }
        );
    }
}

#[tokio::test]
async fn a_new_consent_cures_a_connection_and_disconnect_removes_it() {
    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let alice = id("alice");
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store.clone())
        .caches(|cache| cache.store_recheck(Duration::from_millis(20)))
        .build()
        .unwrap();
    let mut events = connections.subscribe();
    assert!(matches!(
        connections.status(&alice).await.unwrap(),
        zoho_auth::Status::NotConnected
    ));
    assert!(connections
        .token(&alice)
        .await
        .unwrap_err()
        .is_not_connected());

    let refresh = zoho.mint_refresh_token(&[]);
    connect(&*store, &alice, &refresh, None).await;
    // The cache held "not connected" and reads the store again every 20 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(error) = connections.token(&alice).await {
        assert!(error.is_not_connected(), "{error}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connections.status(&alice).await.unwrap().is_connected());
    assert_eq!(
        events.try_recv().unwrap().kind,
        zoho_auth::connections::EventKind::Connected
    );

    connections.disconnect(&alice).await.unwrap();
    assert_eq!(
        events.try_recv().unwrap().kind,
        zoho_auth::connections::EventKind::Disconnected
    );
    assert!(matches!(
        connections.status(&alice).await.unwrap(),
        zoho_auth::Status::NotConnected
    ));
    assert!(store.list(None, 10).await.unwrap().is_empty());
    assert_eq!(zoho.counters().revocations, 1);
}

#[tokio::test]
async fn a_disconnect_in_one_process_is_not_undone_by_another_that_held_the_connection() {
    let (zoho, store, alice, refresh) = alice_connected().await;
    let [here, there] = [(); 2].map(|_| {
        Connections::builder(zoho.accounts_client().unwrap(), store.clone())
            .build()
            .unwrap()
    });
    let mut events = there.subscribe();
    let zoho_url = zoho.url();
    let send = |process: &Connections| {
        let service = over_http(process);
        let request = request(&format!("{zoho_url}/crm/v8/Leads"), Some(&alice));
        async move { service.oneshot(request).await }
    };
    // Both processes hold alice's cache and token; the second minted nothing.
    assert_eq!(send(&here).await.unwrap().status(), StatusCode::OK);
    assert_eq!(send(&there).await.unwrap().status(), StatusCode::OK);
    let grants = zoho.counters_for(&refresh).unwrap().refresh_grants;

    here.disconnect(&alice).await.unwrap();
    // The revocation killed the token the other process holds: Zoho refuses it, and the refresh
    // finds no record. It must not write its refresh token back, nor call Zoho with it.
    let error = send(&there).await.unwrap_err();
    assert!(
        error
            .downcast_ref::<zoho_auth::Error>()
            .is_some_and(zoho_auth::Error::is_not_connected),
        "{error}"
    );
    assert!(there.token(&alice).await.unwrap_err().is_not_connected());
    assert!(
        store.list(None, 10).await.unwrap().is_empty(),
        "listed again"
    );
    assert!(store.connection(&alice).load().await.unwrap().is_none());
    assert_eq!(zoho.counters_for(&refresh).unwrap().refresh_grants, grants);
    assert!(matches!(
        there.status(&alice).await.unwrap(),
        zoho_auth::Status::NotConnected
    ));
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|event| event.kind)
        .collect();
    assert_eq!(kinds, [zoho_auth::connections::EventKind::Disconnected]);

    // A new consent connects alice again in both.
    let again = zoho.mint_refresh_token(&[]);
    connect(&*store, &alice, &again, None).await;
    for process in [&here, &there] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !send(process)
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
        {
            assert!(tokio::time::Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_client_refused_in_one_data_centre_is_recorded_for_every_process_until_its_secret_is_fixed(
) {
    // Data centre 1 knows the client by a secret of its own.
    let zoho = Simulator::builder()
        .data_centers(2)
        .data_center_secret(1, "dc1-own-secret")
        .start()
        .await
        .unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let users = users_in_data_centres(&zoho, &*store, 2).await;
    let [(alice, _, 0), (bob, bob_refresh, 1)] = &users[..] else {
        panic!("one user in each data centre: {users:?}");
    };
    let registry = |accounts: zoho_auth::accounts::AccountsClient| {
        Connections::builder(accounts, store.clone())
            .build()
            .unwrap()
    };
    let processes = [(); 2].map(|_| registry(zoho.accounts_client().unwrap()));
    for (n, process) in processes.iter().enumerate() {
        assert!(process.token(alice).await.is_ok(), "process {n}");
        let error = process.token(bob).await.unwrap_err();
        assert!(error.is_invalid_client(), "process {n}: {error}");
        let status = process.status(bob).await.unwrap();
        assert!(
            matches!(&status, zoho_auth::Status::NeedsReconsent { code } if code == "invalid_client"),
            "process {n}: {status:?}"
        );
    }
    assert_eq!(
        zoho.counters_for(bob_refresh).unwrap().refresh_grants,
        1,
        "the second process read the failure from the store and did not ask Zoho"
    );

    // A process deployed with the data centre's secret is not bound by the failure, and clears it.
    let dc = |k| zoho_auth::Accounts::custom(&zoho.data_center_url(k).unwrap()).unwrap();
    let fixed = registry(
        zoho_auth::accounts::AccountsClient::builder(dc(0), zoho.client_id(), zoho.client_secret())
            .secret_for(dc(1), zoho_auth::ClientSecret::new("dc1-own-secret"))
            .build()
            .unwrap(),
    );
    assert!(
        matches!(fixed.status(bob).await.unwrap(), zoho_auth::Status::Idle),
        "the failure is not this client's"
    );
    fixed.token(bob).await.unwrap();
    assert!(fixed.status(bob).await.unwrap().is_connected());
    let record = store.connection(bob).load().await.unwrap().unwrap();
    assert!(record.failure.is_none(), "{:?}", record.failure);
    assert_eq!(zoho.counters_for(bob_refresh).unwrap().refresh_grants, 2);
}

#[tokio::test]
async fn every_process_reports_a_connection_failing_or_throttled_in_another_until_it_recovers() {
    use std::time::SystemTime;
    use zoho_auth::sim::Fault;
    use zoho_auth::Status;

    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    let (alice, bob) = (id("alice"), id("bob"));
    for user in [&alice, &bob] {
        connect(&*store, user, &zoho.mint_refresh_token(&[]), None).await;
    }
    let registry = || {
        Connections::builder(zoho.accounts_client().unwrap(), store.clone())
            .caches(|cache| {
                cache
                    .backoff(Duration::from_millis(50), Duration::from_millis(50))
                    .throttle_backoff(Duration::from_secs(60))
            })
            .build()
            .unwrap()
    };
    let (failing, watching) = (registry(), registry());
    let started = SystemTime::now();

    zoho.inject(Fault::Status(StatusCode::BAD_GATEWAY), 1);
    assert!(failing.token(&alice).await.is_err());
    zoho.inject(Fault::Throttle, 1);
    assert!(failing.token(&bob).await.unwrap_err().is_throttled());

    // The failures are recorded after the callers have them: wait for the record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store
        .connection(&bob)
        .load()
        .await
        .unwrap()
        .unwrap()
        .retry
        .is_none()
        || store
            .connection(&alice)
            .load()
            .await
            .unwrap()
            .unwrap()
            .retry
            .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A process that never touched either connection reports what the other saw.
    match watching.status(&alice).await.unwrap() {
        Status::Failing {
            since,
            next_attempt,
            error,
        } => {
            assert!(
                since >= started && next_attempt > since,
                "{since:?} {next_attempt:?}"
            );
            assert!(error.to_string().contains("502"), "{error}");
        }
        status => panic!("alice: {status:?}"),
    }
    match watching.status(&bob).await.unwrap() {
        Status::Throttled { until } => {
            assert!(
                until > SystemTime::now() + Duration::from_secs(30),
                "{until:?}"
            )
        }
        status => panic!("bob: {status:?}"),
    }

    // Its next attempt succeeds, in the other process: every process reports it connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watching.token(&alice).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store
        .connection(&alice)
        .load()
        .await
        .unwrap()
        .unwrap()
        .retry
        .is_none());
    let fresh = registry();
    assert!(fresh.status(&alice).await.unwrap().is_connected());
}

#[tokio::test]
async fn a_connection_consented_again_in_this_process_works_from_its_next_request() {
    use zoho_auth::connections::EventKind;

    let (zoho, store, alice, first) = alice_connected().await;
    // A recheck of the store an hour away: only `recheck_store` can make it sooner.
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store.clone())
        .caches(|cache| cache.store_recheck(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let mut events = connections.subscribe();
    let token = connections.token(&alice).await.unwrap();
    zoho.revoke_refresh_token(&first);
    connections.get(&alice).unwrap().invalidate(&token);
    assert!(connections
        .token(&alice)
        .await
        .unwrap_err()
        .is_invalid_grant());

    // The user consents again: the callback saves the new refresh token.
    connect(&*store, &alice, &zoho.mint_refresh_token(&[]), None).await;
    assert!(
        connections.token(&alice).await.is_err(),
        "the failure is held until the store is read again"
    );
    connections.recheck_store(&alice);
    connections.token(&alice).await.unwrap();
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|event| event.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::NeedsReconsent {
                code: "invalid_code".into()
            },
            EventKind::Recovered
        ]
    );
}

#[tokio::test]
async fn a_connection_first_used_when_the_registry_is_full_becomes_resident() {
    let zoho = Simulator::start().await.unwrap();
    let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
    for n in 0..11 {
        connect(
            &*store,
            &id(&format!("u{n}")),
            &zoho.mint_refresh_token(&[]),
            None,
        )
        .await;
    }
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store.clone())
        .max_resident(10)
        .build()
        .unwrap();
    // Ten connections in steady use fill the registry.
    for _ in 0..20 {
        for n in 0..10 {
            connections.token(&id(&format!("u{n}"))).await.unwrap();
        }
        connections.run_pending_tasks();
    }
    // A new one is used: it takes a place (the least recently used goes) and keeps it, rather
    // than a cache of its own being built at each request.
    let newcomer = id("u10");
    connections.token(&newcomer).await.unwrap();
    connections.run_pending_tasks();
    let again = connections.get(&newcomer).unwrap();
    assert_eq!(
        again.stats().refreshes + again.stats().adopted,
        1,
        "the newcomer's cache was built anew: {:?}",
        again.stats()
    );
}

/// A store in which a new consent lands just before the first removal: the window between a
/// disconnect's read of the record and its removal.
#[derive(Debug)]
struct ConsentDuringRemoval {
    inner: MemoryConnections,
    consent: std::sync::Mutex<Option<(ConnectionId, RefreshToken)>>,
}

impl ConnectionStore for ConsentDuringRemoval {
    fn connection(&self, id: &ConnectionId) -> Arc<dyn zoho_auth::store::TokenStore> {
        self.inner.connection(id)
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ConnectionId>,
        limit: usize,
    ) -> zoho_auth::store::StoreFuture<'a, Vec<ConnectionId>> {
        self.inner.list(after, limit)
    }

    fn remove<'a>(&'a self, id: &'a ConnectionId) -> zoho_auth::store::StoreFuture<'a, bool> {
        Box::pin(async move {
            self.consent_lands().await;
            self.inner.remove(id).await
        })
    }

    fn remove_if<'a>(
        &'a self,
        id: &'a ConnectionId,
        revision: u64,
    ) -> zoho_auth::store::StoreFuture<'a, bool> {
        Box::pin(async move {
            self.consent_lands().await;
            self.inner.remove_if(id, revision).await
        })
    }
}

impl ConsentDuringRemoval {
    async fn consent_lands(&self) {
        let consent = self.consent.lock().unwrap().take();
        if let Some((id, refresh)) = consent {
            connect(&self.inner, &id, &refresh, None).await;
        }
    }
}

#[tokio::test]
async fn a_consent_that_lands_during_a_disconnect_stays_connected() {
    let zoho = Simulator::start().await.unwrap();
    let alice = id("alice");
    let (old, new) = (zoho.mint_refresh_token(&[]), zoho.mint_refresh_token(&[]));
    let store = Arc::new(ConsentDuringRemoval {
        inner: MemoryConnections::new(),
        consent: std::sync::Mutex::new(Some((alice.clone(), new.clone()))),
    });
    connect(&store.inner, &alice, &old, None).await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store.clone())
        .build()
        .unwrap();
    let mut events = connections.subscribe();
    connections.token(&alice).await.unwrap();

    connections.disconnect(&alice).await.unwrap();
    let record = store.connection(&alice).load().await.unwrap().unwrap();
    assert_eq!(
        record.refresh_token.as_ref(),
        Some(&new),
        "the new consent was deleted"
    );
    assert_eq!(
        store.list(None, 10).await.unwrap(),
        std::slice::from_ref(&alice)
    );
    assert!(events.try_recv().is_err(), "no disconnect to report");
    // The old grant was revoked, and its token dropped: the next one comes from the new grant.
    assert_eq!(zoho.counters().revocations, 1);
    connections.token(&alice).await.unwrap();
    assert_eq!(zoho.counters_for(&new).unwrap().refresh_grants, 1);
}

/// An API that redirects: `/same` to `/crm/v8/Leads` on its own host, `/away` to another host;
/// it records what each request carried.
#[derive(Clone, Default)]
struct Redirecting(Arc<std::sync::Mutex<Vec<Hop>>>);

/// A request's URI and `Authorization` header.
type Hop = (String, Option<String>);

impl Redirecting {
    fn service(
        &self,
    ) -> impl tower::Service<
        Request<zoho_auth::RequestBody<Empty<Bytes>>>,
        Response = http::Response<http_body_util::Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone {
        let seen = self.0.clone();
        tower::service_fn(
            move |request: Request<zoho_auth::RequestBody<Empty<Bytes>>>| {
                let seen = seen.clone();
                async move {
                    let authorization = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock()
                        .unwrap()
                        .push((request.uri().to_string(), authorization));
                    let base = format!(
                        "{}://{}",
                        request.uri().scheme_str().unwrap(),
                        request.uri().authority().unwrap()
                    );
                    let location = match request.uri().path() {
                        "/same" => Some(format!("{base}/crm/v8/Leads")),
                        "/away" => Some("https://cdn.example.com/file".to_owned()),
                        _ => None,
                    };
                    let mut response =
                        http::Response::new(http_body_util::Full::new(Bytes::from_static(b"{}")));
                    if let Some(location) = location {
                        *response.status_mut() = StatusCode::FOUND;
                        response
                            .headers_mut()
                            .insert(http::header::LOCATION, location.parse().unwrap());
                    }
                    Ok(response)
                }
            },
        )
    }
}

#[tokio::test]
async fn a_redirect_keeps_its_connection_and_its_token_only_on_the_account_s_hosts() {
    use tower_http::follow_redirect::{policy::Standard, FollowRedirectLayer};
    use zoho_auth::connections::KeepConnection;

    let (zoho, store, alice, _) = alice_connected().await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let token = connections.token(&alice).await.unwrap();
    let header = common::header_for(token.access_token());
    let api = Redirecting::default();
    let stack = |keep: bool| {
        let layer = ZohoAuthLayer::connections(connections.clone());
        let inner = layer.layer(api.service());
        tower::ServiceBuilder::new()
            .option_layer(keep.then(|| {
                FollowRedirectLayer::with_policy(KeepConnection::new(Standard::default()))
            }))
            .option_layer((!keep).then(FollowRedirectLayer::new))
            .service(inner)
    };

    let url = zoho.url();
    let response = stack(true)
        .oneshot(request(&format!("{url}/same"), Some(&alice)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = stack(true)
        .oneshot(request(&format!("{url}/away"), Some(&alice)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = api.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (format!("{url}/same"), Some(header.clone())),
            (format!("{url}/crm/v8/Leads"), Some(header.clone())),
            (format!("{url}/away"), Some(header.clone())),
            ("https://cdn.example.com/file".to_owned(), None),
        ]
    );

    // Without the policy the second hop has lost its connection, and fails before it is sent.
    let error = stack(false)
        .oneshot(request(&format!("{url}/same"), Some(&alice)))
        .await
        .unwrap_err();
    let error = error
        .downcast_ref::<zoho_auth::Error>()
        .expect("a zoho_auth::Error");
    assert!(error.is_not_connected(), "{error}");
    assert_eq!(
        api.0.lock().unwrap().len(),
        5,
        "the second hop was not sent"
    );
}

#[tokio::test]
async fn a_thousand_connections_refresh_once_per_event_each_to_its_own_host() {
    let zoho = Simulator::builder().data_centers(3).start().await.unwrap();
    let store = Arc::new(MemoryConnections::new());
    let users = users_in_data_centres(&zoho, &*store, 1000).await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
        .build()
        .unwrap();
    let service = over_http(&connections);
    let round = |service: zoho_auth::ZohoAuth<_>| {
        let calls: Vec<_> = users
            .iter()
            .flat_map(|(id, _, _)| [id.clone(), id.clone()])
            .map(|id| {
                let service = service.clone();
                tokio::spawn(async move {
                    let response = service
                        .oneshot(request("/crm/v8/users?type=CurrentUser", Some(&id)))
                        .await
                        .unwrap();
                    (id, response.status())
                })
            })
            .collect::<Vec<_>>();
        async move {
            for call in calls {
                let (id, status) = call.await.unwrap();
                assert_eq!(status, StatusCode::OK, "{id}");
            }
        }
    };

    round(service.clone()).await;
    // Zoho kills the tokens of a tenth of them (a 16th token minted elsewhere, say).
    for (_, refresh, _) in &users[..100] {
        zoho.invalidate_tokens_of(refresh);
    }
    round(service.clone()).await;
    // Every token expires.
    common::fast_forward(Duration::from_secs(3600)).await;
    round(service.clone()).await;

    for (n, (id, refresh, _)) in users.iter().enumerate() {
        let seen = zoho.counters_for(refresh).unwrap();
        let events = if n < 100 { 3 } else { 2 };
        assert_eq!(seen.tokens_issued, events, "{id}: one token per event");
        assert_eq!(seen.wrong_dc_api_requests, 0, "{id}");
        assert_eq!(seen.wrong_dc_refresh_grants, 0, "{id}");
        assert!(seen.api_ok >= 6, "{id}: {seen:?}");
    }
}

#[tokio::test]
async fn after_a_reconnect_in_another_data_centre_the_replay_follows_the_fresh_token() {
    let zoho = Simulator::builder().data_centers(2).start().await.unwrap();
    let store = Arc::new(MemoryConnections::new());
    let alice = id("alice");
    let first = zoho.mint_refresh_token_in(0, &[]).unwrap();
    connect(
        &*store,
        &alice,
        &first,
        Some(zoho.data_center_url(0).unwrap()),
    )
    .await;
    let connections = Connections::builder(zoho.accounts_client().unwrap(), store.clone())
        .build()
        .unwrap();
    let service = over_http(&connections);
    let get = |path: String| service.clone().oneshot(request(&path, Some(&alice)));
    assert_eq!(
        get("/crm/v8/Leads".into()).await.unwrap().status(),
        StatusCode::OK
    );

    // Alice reconnects her account, which now lives in DC 1; her DC 0 grant is revoked.
    let second = zoho.mint_refresh_token_in(1, &[]).unwrap();
    connect(
        &*store,
        &alice,
        &second,
        Some(zoho.data_center_url(1).unwrap()),
    )
    .await;
    zoho.revoke_refresh_token(&first);

    // The relative request went to DC 0 with the dead token; its replay goes to DC 1.
    let response = get("/crm/v8/Leads".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = zoho.counters_for(&second).unwrap();
    assert_eq!((seen.api_ok, seen.wrong_dc_api_requests), (1, 0));

    // An absolute URL on DC 0's host is not DC 1's token's: its dead-token answer comes back
    // as it is, and the fresh token is never sent there.
    let dc0 = zoho.data_center_url(0).unwrap();
    let response = get(format!("{dc0}/crm/v8/Leads")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(zoho.counters_for(&second).unwrap().wrong_dc_api_requests, 0);
}
