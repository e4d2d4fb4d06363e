//! One refresh in progress: the task that runs it, its deadline, and the hand-over of its result
//! to everyone waiting for it.

use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::Job;
use super::{Outcome, TokenCache};
use crate::error::{Error, Kind};

/// How long after landing a flight wakes every waiter the cascade has not reached yet: a waiter
/// woken by the cascade whose task is busy elsewhere does not pass the wake-up on until it runs.
const BACKSTOP: Duration = Duration::from_millis(2);

/// A refresh in progress. Clones share it; its outcome is set once.
#[derive(Clone)]
pub(super) struct Flight(Arc<Inner>);

struct Inner {
    outcome: OnceLock<Outcome>,
    landed: Notify,
    /// After this the flight is abandoned: the next caller starts a new one.
    deadline: Instant,
}

impl Flight {
    pub(super) fn new(deadline: Instant) -> Self {
        Self(Arc::new(Inner {
            outcome: OnceLock::new(),
            landed: Notify::new(),
            deadline,
        }))
    }

    /// Whether the flight should have ended by `now`: its task hangs, or is parked on a runtime
    /// that is blocked or gone.
    pub(super) fn overdue(&self, now: Instant) -> bool {
        now >= self.0.deadline
    }

    /// Sets the outcome (the first one set stays) and starts waking the waiters.
    pub(super) fn land(&self, outcome: Outcome) {
        let _ = self.0.outcome.set(outcome);
        self.0.landed.notify_one();
    }

    /// Wakes every waiter still registered: the backstop behind the cascade.
    fn wake_all(&self) {
        self.0.landed.notify_waiters();
    }

    /// Wakes, [`BACKSTOP`] after landing, every waiter the cascade has not reached.
    async fn backstop(&self) {
        tokio::time::sleep(BACKSTOP).await;
        self.wake_all();
    }

    /// Waits for the outcome.
    ///
    /// Each waiter woken wakes two more, so the wake-up spreads through the waiters as a binary
    /// tree: each is woken by a task on a worker thread and runs next there, while its sibling
    /// can be stolen by another worker. Waking all of them from one thread at once
    /// (`Notify::notify_waiters`, as `tokio::sync::watch` does) floods one run queue and took
    /// twice as long to serve 10,000 waiters (`benches/refresh_storm.rs`). A waiter dropped
    /// after being woken passes its wake-up on (`Notify::notify_one`'s guarantee); one woken but
    /// not polled (its task is busy) holds the cascade up until the backstop, [`BACKSTOP`] after
    /// landing, wakes everyone left.
    pub(super) async fn outcome(&self) -> Outcome {
        loop {
            let mut notified = pin!(self.0.landed.notified());
            notified.as_mut().enable();
            if let Some(outcome) = self.0.outcome.get() {
                self.0.landed.notify_one();
                self.0.landed.notify_one();
                return outcome.clone();
            }
            notified.await;
        }
    }

    /// Whether `other` is this very flight.
    pub(super) fn same(&self, other: &Flight) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A flight recorded in the cache's state and ready to be spawned — after the state lock is
/// released: a runtime that is shutting down drops the task inside `spawn`, and the guard's drop
/// takes the state lock.
pub(super) struct Launch {
    pub(super) guard: FlightGuard,
    pub(super) runtime: Handle,
}

impl Launch {
    pub(super) fn go(self) {
        drop(self.runtime.spawn(self.guard.fly()));
    }
}

/// Owns one refresh. Dropped without settling (the runtime shut down mid-refresh), it clears the
/// flight so the cache is not left waiting on it forever, and tells its waiters.
pub(super) struct FlightGuard {
    pub(super) cache: TokenCache,
    pub(super) own: Flight,
    pub(super) job: Job,
}

impl FlightGuard {
    async fn fly(self) {
        let deadline = self.own.0.deadline;
        let work = match tokio::time::timeout_at(deadline, self.cache.work(&self.job)).await {
            Ok(work) => work,
            Err(_) => super::refresh::Work::Failed(Error::new(
                Kind::Timeout,
                "the Zoho token refresh did not finish in time (a token store or accounts \
                 server that does not answer); the next request starts a new one",
            )),
        };
        let settled = self.cache.settle(&self.job, &self.own, work);
        self.own.land(settled.outcome);
        let own = self.own.clone();
        let recheck_at = settled.recheck_at;
        let recorder = settled.retry.map(|retry| (self.cache.clone(), retry));
        let cache = Arc::downgrade(&self.cache.shared);
        // The cache must not be kept alive by a timer.
        drop(self);
        // The waiters have the outcome; the fleet learns of the failure after, within the store's
        // bound.
        if let Some((cache, (retry, failed))) = recorder {
            cache.record_retry(retry, failed).await;
        }
        own.backstop().await;
        if let Some(at) = recheck_at {
            tokio::time::sleep_until(at).await;
            if let Some(shared) = cache.upgrade() {
                TokenCache { shared }.recheck();
            }
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if state.flight.as_ref().is_some_and(|f| f.same(&self.own)) {
            state.flight = None;
        }
        drop(state);
        // No-op after `fly` landed the flight.
        self.own.land(Err(Error::transient(
            "the Zoho token refresh was cancelled (runtime shutting down?)",
        )));
        self.own.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// Every waiter gets the outcome, including when the first one woken is dropped before it
    /// could wake the next ones.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn every_waiter_is_woken_even_if_one_woken_is_dropped() {
        let flight = Flight::new(far());
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let flight = flight.clone();
                tokio::spawn(async move { flight.outcome().await })
            })
            .collect();
        tokio::task::yield_now().await;
        flight.land(Err(Error::transient("the outcome")));
        // The first waiter is woken but has not run yet on this thread: drop it now.
        waiters[0].abort();
        for waiter in waiters.into_iter().skip(1) {
            let outcome = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("a waiter was never woken")
                .unwrap();
            assert!(outcome.unwrap_err().to_string().contains("the outcome"));
        }
    }

    /// A waiter first in line that is woken but never polled again (its task is busy with
    /// something else) must not stall the waiters behind it for more than the backstop.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_woken_waiter_that_is_not_polled_does_not_stall_the_others() {
        let flight = Flight::new(far());
        // Registers first, then its task only ever polls something else.
        let stuck = {
            let flight = flight.clone();
            tokio::spawn(async move {
                let mut outcome = pin!(flight.outcome());
                std::future::poll_fn(|cx: &mut Context<'_>| {
                    assert!(outcome.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
        };
        tokio::task::yield_now().await;
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let flight = flight.clone();
                tokio::spawn(async move { flight.outcome().await })
            })
            .collect();
        tokio::task::yield_now().await;

        // What `FlightGuard::fly` does: land, then the backstop.
        let landed = Instant::now();
        flight.land(Err(Error::transient("the outcome")));
        let backstop = tokio::spawn({
            let flight = flight.clone();
            async move { flight.backstop().await }
        });
        for waiter in waiters {
            let outcome = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("a waiter behind a busy one was never woken")
                .unwrap();
            assert!(outcome.is_err());
        }
        assert!(
            landed.elapsed() <= BACKSTOP * 2,
            "woken {:?} after landing",
            landed.elapsed()
        );
        backstop.await.unwrap();
        stuck.abort();
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_late_waiter_gets_the_outcome_at_once() {
        let flight = Flight::new(far());
        flight.land(Err(Error::transient("first")));
        flight.land(Err(Error::transient("second")));
        let outcome = tokio::time::timeout(Duration::from_secs(1), flight.outcome())
            .await
            .expect("no wait after landing");
        assert!(outcome.unwrap_err().to_string().contains("first"));
    }
}
