//! Counters for what the token cache and the layer did, cheap enough to read on every scrape.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`TokenCache`](crate::TokenCache)'s counters, shared by every layer using it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls made to Zoho's token endpoint, successful or not.
    pub token_requests: u64,
    /// Calls this process made that produced a new access token.
    pub refreshes: u64,
    /// Access tokens taken from the token store, minted by another process (or an earlier run,
    /// or a consent) — no call to Zoho.
    pub adopted: u64,
    /// Calls that failed (network, throttling, rejected credentials, ...).
    pub failures: u64,
    /// Requests resent once with a fresh token after Zoho called their token dead.
    pub replays: u64,
    /// Tokens dropped because Zoho called them dead.
    pub invalidations: u64,
    /// Requests refused without calling Zoho because the local token budget was spent.
    pub rate_limited: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) token_requests: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            token_requests: self.token_requests.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            adopted: self.adopted.load(Relaxed),
            failures: self.failures.load(Relaxed),
            replays: self.replays.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
        }
    }
}
