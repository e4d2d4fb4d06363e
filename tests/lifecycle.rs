//! Cancellation and shutdown: callers that give up, handles that go away, runtimes that stop.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tower::ServiceExt;
use zoho_auth::sim::{Fault, Simulator};
use zoho_auth::store::MemoryStore;
use zoho_auth::ZohoAuthLayer;

use common::{cache_builder, get, header_for, start, wait_until, Recorder};

/// How long the simulator holds the token requests that must still be in flight while a test
/// aborts its callers: those steps take milliseconds, so even a loaded machine does them in time.
const HELD: Duration = Duration::from_secs(5);

/// Polls `future` once — for a request through the layer, that is when it joins the refresh —
/// counts that in `joined`, then runs it to the end.
async fn join_then_finish<F: Future>(future: F, joined: &AtomicUsize) -> F::Output {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    joined.fetch_add(1, Ordering::SeqCst);
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => future.await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_half_the_waiters_mid_refresh_neither_cancels_it_nor_wedges_the_cache() {
    const WAITERS: usize = 200;
    let (zoho, cache) = start(Simulator::builder().token_latency(HELD)).await;
    let inner = Recorder::ok();
    let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
    let url = format!("{}/crm/v8/Leads", zoho.url());

    let joined = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let request = service.clone().oneshot(get(&url));
            let joined = joined.clone();
            tokio::spawn(async move { join_then_finish(request, &joined).await })
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "every request joined the refresh",
        || joined.load(Ordering::SeqCst) == WAITERS,
    )
    .await;
    assert!(cache.cached().is_none(), "the refresh is still in flight");
    assert_eq!(zoho.counters().tokens_issued, 0);

    let (aborted, kept): (Vec<_>, Vec<_>) = waiters
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    for (_, waiter) in &aborted {
        waiter.abort();
    }
    for (_, waiter) in aborted {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    for (_, waiter) in kept {
        assert_eq!(waiter.await.unwrap().unwrap().status(), 200);
    }

    let token = cache.cached().expect("the refresh landed");
    let header = header_for(token.access_token());
    let seen = inner.seen();
    assert_eq!(seen.len(), WAITERS / 2, "aborted requests were never sent");
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_ref().unwrap() == header.as_str()));
    assert_eq!(zoho.counters().token_requests, 1);

    // Not wedged: a later request goes through at once on the same token (a wedged cache would
    // hold it for `max_wait`, 30 s).
    let started = Instant::now();
    assert_eq!(service.oneshot(get(&url)).await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        inner.seen().last().unwrap().authorization.as_ref().unwrap(),
        header.as_str()
    );
    assert_eq!(cache.stats().token_requests, 1, "exactly one token request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_waiter_gives_up_the_refresh_still_lands_for_the_next_caller() {
    let (zoho, cache) = start(Simulator::builder().token_latency(HELD)).await;
    let joined = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let joined = joined.clone();
            tokio::spawn(async move { join_then_finish(cache.token(), &joined).await })
        })
        .collect();
    wait_until(Duration::from_secs(10), "every caller joined", || {
        joined.load(Ordering::SeqCst) == 50
    })
    .await;
    assert!(cache.cached().is_none(), "the refresh is still in flight");
    for waiter in &waiters {
        waiter.abort();
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    // Nobody waits any more, yet the refresh finishes and its token lands in the cache.
    wait_until(HELD + Duration::from_secs(20), "the token landed", || {
        cache.cached().is_some()
    })
    .await;
    let token = cache.token().await.unwrap();
    assert!(zoho.is_access_token_live(token.access_token().expose()));
    assert_eq!(zoho.counters().token_requests, 1);
    assert_eq!(cache.stats().token_requests, 1);
}

/// A runtime for the simulator alone, so that its tasks never count in the runtime under test.
fn simulator_runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn the_refresh_task_ends_and_frees_the_cache_once_the_last_handle_is_gone() {
    let simulator_runtime = simulator_runtime();
    let zoho = simulator_runtime
        .block_on(Simulator::builder().token_latency(HELD).start())
        .unwrap();
    let runtime = current_thread();
    let alive = || runtime.metrics().num_alive_tasks();
    let baseline = alive();

    // The cache's state owns its store: when the store is freed, so is every part of the cache
    // (its accounts client and connection pool included).
    let store = Arc::new(MemoryStore::new());
    let store_alive = Arc::downgrade(&store);
    runtime.block_on(async {
        let cache = cache_builder(&zoho).store(store).build().unwrap();
        let layer = ZohoAuthLayer::new(cache.clone());
        let service = tower::Layer::layer(&layer, Recorder::ok());
        let url = format!("{}/crm/v8/Leads", zoho.url());
        let request = tokio::spawn(service.clone().oneshot(get(&url)));
        wait_until(Duration::from_secs(5), "the refresh reached Zoho", || {
            zoho.counters().token_requests == 1
        })
        .await;

        // Every handle goes: the request waiting for the token, the service, the layer, the cache.
        request.abort();
        drop((service, layer, cache));
        tokio::task::yield_now().await;
        assert!(
            alive() > baseline,
            "the refresh in flight is not cancelled: it ends when Zoho answers (bounded by the \
             accounts client's timeout)"
        );
        assert!(store_alive.upgrade().is_some());

        wait_until(
            HELD + Duration::from_secs(20),
            "every task of the cache ended",
            || alive() == baseline,
        )
        .await;
        wait_until(Duration::from_secs(1), "the cache was freed", || {
            store_alive.upgrade().is_none()
        })
        .await;
        // Nothing starts again: no timer, no retry, no second refresh.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(alive(), baseline);
    });
    assert_eq!(zoho.counters().token_requests, 1);
}

#[test]
fn dropping_the_runtime_mid_refresh_leaves_the_cache_usable_from_another_runtime() {
    let simulator_runtime = simulator_runtime();
    let zoho = simulator_runtime.block_on(Simulator::start()).unwrap();
    let cache = cache_builder(&zoho)
        .max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{}/crm/v8/Leads", zoho.url());

    let first = current_thread();
    let old = first.block_on(async {
        // A first token, whose connection the accounts client pools on this runtime.
        let old = cache.token().await.unwrap();
        cache.invalidate(&old);
        // The next refresh hangs at Zoho; the runtime goes away under it.
        zoho.inject(Fault::Slow(Duration::from_secs(60)), 1);
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.token().await }
        });
        wait_until(
            Duration::from_secs(5),
            "the second refresh reached Zoho",
            || zoho.counters().token_requests == 2,
        )
        .await;
        drop(waiter);
        old
    });
    drop(first);

    let second = current_thread();
    second.block_on(async {
        let started = Instant::now();
        let token = cache
            .token()
            .await
            .expect("a new runtime refreshes instead of waiting on the dead runtime's flight");
        // Waiting on the dead flight would last until `max_wait` or the accounts timeout (20 s).
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_ne!(token.access_token(), old.access_token());
        assert!(zoho.is_access_token_live(token.access_token().expose()));

        let inner = Recorder::ok();
        let service = tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), inner.clone());
        assert_eq!(service.oneshot(get(&url)).await.unwrap().status(), 200);
        assert_eq!(
            inner.seen()[0].authorization.as_ref().unwrap(),
            header_for(token.access_token()).as_str()
        );
    });
    assert_eq!(zoho.counters().token_requests, 3);
    assert_eq!(cache.stats().token_requests, 3);
}
