//! One refresh in progress, and the hand-over of its result to everyone waiting for it.

use std::pin::pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use super::Outcome;

/// A refresh in progress. Clones share it; its outcome is set once.
#[derive(Clone)]
pub(super) struct Flight(Arc<Inner>);

struct Inner {
    outcome: OnceLock<Outcome>,
    landed: Notify,
}

impl Flight {
    pub(super) fn new() -> Self {
        Self(Arc::new(Inner {
            outcome: OnceLock::new(),
            landed: Notify::new(),
        }))
    }

    /// Sets the outcome (the first one set stays) and starts waking the waiters.
    pub(super) fn land(&self, outcome: Outcome) {
        let _ = self.0.outcome.set(outcome);
        self.0.landed.notify_one();
    }

    /// Waits for the outcome.
    ///
    /// Each waiter woken wakes two more, so the wake-up spreads through the waiters as a binary
    /// tree: each is woken by a task on a worker thread and runs next there, while its sibling
    /// can be stolen by another worker. Waking all of them from one thread at once
    /// (`Notify::notify_waiters`, as `tokio::sync::watch` does) floods one run queue and took
    /// twice as long to serve 10,000 waiters (`benches/refresh_storm.rs`). A waiter dropped
    /// after being woken passes its wake-up on (`Notify::notify_one`'s guarantee).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Error;

    /// Every waiter gets the outcome, including when the first one woken is dropped before it
    /// could wake the next ones.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn every_waiter_is_woken_even_if_one_woken_is_dropped() {
        let flight = Flight::new();
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

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_late_waiter_gets_the_outcome_at_once() {
        let flight = Flight::new();
        flight.land(Err(Error::transient("first")));
        flight.land(Err(Error::transient("second")));
        let outcome = tokio::time::timeout(Duration::from_secs(1), flight.outcome())
            .await
            .expect("no wait after landing");
        assert!(outcome.unwrap_err().to_string().contains("first"));
    }
}
