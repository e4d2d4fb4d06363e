//! The local token budget: at most N token requests per sliding window.
//!
//! Zoho throttles a refresh token after 10 access tokens in 10 minutes (`zoho-wire.md` §3), and
//! the throttle outlasts the burst that caused it. Counting our own requests and stopping at the
//! limit keeps a misbehaving process (or a storm of token errors) from ever reaching it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    window: Duration,
    sent: VecDeque<Instant>,
}

impl Budget {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            // A budget of millions is legal ("no local limit"); its slots are not allocated ahead.
            sent: VecDeque::with_capacity(max.clamp(1, 16) as usize),
        }
    }

    /// Spends one request, or says how long until one is free.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.check(now)?;
        self.sent.push_back(now);
        Ok(())
    }

    /// Whether a request could be spent now, or how long until one is free; spends nothing.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .sent
            .front()
            .is_some_and(|&sent| now.saturating_duration_since(sent) >= self.window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.max {
            return Ok(());
        }
        let oldest = self.sent.front().copied().unwrap_or(now);
        Err((oldest + self.window).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let start = Instant::now();
        let mut budget = Budget::new(2, Duration::from_secs(600));
        assert!(budget.try_take(start).is_ok());
        assert!(budget.try_take(start + Duration::from_secs(100)).is_ok());
        assert_eq!(
            budget.try_take(start + Duration::from_secs(200)),
            Err(Duration::from_secs(400))
        );
        assert!(budget.try_take(start + Duration::from_secs(600)).is_ok());
        assert!(budget.try_take(start + Duration::from_secs(650)).is_err());
    }

    #[test]
    fn a_check_spends_nothing() {
        let start = Instant::now();
        let mut budget = Budget::new(1, Duration::from_secs(600));
        assert!(budget.check(start).is_ok());
        assert!(budget.try_take(start).is_ok());
        assert!(budget.check(start).is_err());
    }

    #[test]
    fn a_huge_budget_allocates_nothing_ahead() {
        let budget = Budget::new(u32::MAX, Duration::from_secs(600));
        assert!(budget.sent.capacity() < 1024);
    }
}
