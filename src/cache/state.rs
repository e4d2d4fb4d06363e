//! The cache's state machine: which credentials it uses, the one flight, and the failure it holds
//! or waits out. Every change of state happens here, under the state lock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use std::time::SystemTime;
use tokio::runtime::Handle;

use tokio::time::Instant;

use super::budget::Budget;
use super::flight::{Flight, FlightGuard, Launch};
use super::health::{Health, Status};
use super::policy::{self, After};
use super::refresh::{Obtained, Work};
use super::token::{CachedToken, Token};
use super::{Outcome, TokenCache};
use crate::error::Error;
use crate::secret::RefreshToken;
use crate::stats::Counters;
use crate::store::StoredRetry;

/// How the cache mints tokens.
#[derive(Clone)]
pub(super) enum Grant {
    /// From a refresh token: the one this process knows (given, or last read from the store),
    /// whether it should replace the store's, and whether this cache was given one (by its
    /// builder or `set_refresh_token`): only then does it refill a record that has none, so a
    /// cache that only ever read its token from the store never undoes a disconnect.
    RefreshToken {
        token: Option<RefreshToken>,
        prefer: bool,
        given: bool,
    },
    ClientCredentials {
        scopes: Vec<String>,
        soid: String,
    },
}

impl Grant {
    pub(super) fn refresh_token(&self) -> Option<&RefreshToken> {
        match self {
            Grant::RefreshToken { token, .. } => token.as_ref(),
            Grant::ClientCredentials { .. } => None,
        }
    }
}

/// A failure only new credentials cure, held until the store shows new ones.
struct Held {
    error: Error,
    /// The refresh token that failed (`None`: there was none).
    credentials: Option<RefreshToken>,
    /// When the store is read again.
    recheck_at: Instant,
}

pub(super) struct State {
    pub(super) grant: Grant,
    pub(super) flight: Option<Flight>,
    pub(super) budget: Budget,
    /// Consecutive transient failures, for the exponential back-off.
    failures: u32,
    /// The last transient failure and the time before which no new attempt is made.
    blocked: Option<(Error, Instant)>,
    /// When the transient failures in a row began.
    failing_since: Option<SystemTime>,
    held: Option<Held>,
    generation: u64,
    /// Bumped when new credentials are set from outside a flight: a flight started before carries
    /// an older one, and its outcome is not recorded.
    pub(super) epoch: u64,
}

impl State {
    pub(super) fn new(grant: Grant, budget: Budget) -> Self {
        Self {
            grant,
            flight: None,
            budget,
            failures: 0,
            blocked: None,
            failing_since: None,
            held: None,
            generation: 0,
            epoch: 0,
        }
    }

    /// The flight in progress, unless it is overdue: then it is abandoned (its outcome will not
    /// be recorded) so the caller can start a new one.
    fn live_flight(&mut self, now: Instant) -> Option<&Flight> {
        if self.flight.as_ref().is_some_and(|f| f.overdue(now)) {
            tracing::warn!(
                "a Zoho token refresh passed its deadline (it hangs, or its runtime is blocked \
                 or gone): starting a new one"
            );
            self.flight = None;
        }
        self.flight.as_ref()
    }

    /// Forgets every failure: new credentials were set.
    pub(super) fn renew(&mut self) {
        self.epoch += 1;
        self.flight = None;
        self.held = None;
        self.blocked = None;
        self.failing_since = None;
        self.failures = 0;
    }
}

/// What a flight does.
#[derive(Clone)]
pub(super) enum Mode {
    /// Get a new token.
    Refresh,
    /// Read the store; get a new token only if it holds other credentials than the ones that
    /// failed.
    Recheck(Option<RefreshToken>),
}

/// One flight's orders, fixed when it starts.
pub(super) struct Job {
    pub(super) epoch: u64,
    pub(super) mode: Mode,
    /// The token the flight replaces, if any.
    pub(super) current: Option<Arc<CachedToken>>,
    /// Whether that token had been declared dead when the flight started.
    pub(super) after_rejection: bool,
}

/// What a flight's recorded result leaves for it to do once its waiters have it.
pub(super) struct Settled {
    pub(super) outcome: Outcome,
    /// When to read the store again for a held failure.
    pub(super) recheck_at: Option<Instant>,
    /// A transient failure to record in the store for the fleet to see, with the refresh token
    /// that failed.
    pub(super) retry: Option<(StoredRetry, Option<RefreshToken>)>,
}

impl Settled {
    fn outcome(outcome: Outcome) -> Self {
        Self {
            outcome,
            recheck_at: None,
            retry: None,
        }
    }
}

/// What a caller of [`TokenCache::token`] does next.
pub(super) enum Join {
    Ready(Token),
    Wait(Flight),
}

impl TokenCache {
    /// The cached token, or the refresh to wait for, or why there is neither.
    pub(super) fn join(&self, now: Instant) -> Result<Join, Error> {
        if let Some(token) = self.cached() {
            if now >= token.0.refresh_at {
                self.refresh_ahead(now);
            }
            return Ok(Join::Ready(token));
        }
        let mut state = self.lock();
        // Someone may have finished a refresh since the lock-free look.
        if let Some(token) = self.cached() {
            return Ok(Join::Ready(token));
        }
        if let Some(flight) = state.live_flight(now) {
            return Ok(Join::Wait(flight.clone()));
        }
        let mode = self.next_mode(&state, now).map_err(|(error, _)| error)?;
        let launch = self.begin(&mut state, now, mode)?;
        let flight = launch.guard.own.clone();
        drop(state);
        launch.go();
        Ok(Join::Wait(flight))
    }

    /// Starts one background refresh for a token in its stale window, unless one ran recently or
    /// a back-off or the budget says no. The current token keeps being served either way.
    pub(super) fn refresh_ahead(&self, now: Instant) {
        let shared = &*self.shared;
        let now_ms = self.ms(now);
        let next = shared.next_ahead_ms.load(Relaxed);
        let hold_off = self.ms(now + shared.config.max_wait);
        if now_ms < next
            || shared
                .next_ahead_ms
                .compare_exchange(next, hold_off, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let mut state = self.lock();
        if state.live_flight(now).is_some() {
            return;
        }
        // The stale token this caller saw may have been replaced since (a flight settled).
        if let Some(current) = shared.current.load().as_deref() {
            if current.usable(now) && now < current.refresh_at {
                shared
                    .next_ahead_ms
                    .store(self.ms(current.refresh_at), Relaxed);
                return;
            }
        }
        let mode = match self.next_mode(&state, now) {
            Ok(mode) => mode,
            Err((_, until)) => {
                shared.next_ahead_ms.store(self.ms(until), Relaxed);
                return;
            }
        };
        // Without a runtime there is no background; the token is still valid meanwhile.
        if let Ok(launch) = self.begin(&mut state, now, mode) {
            drop(state);
            launch.go();
        }
    }

    /// Makes a held failure's next look at the store due now: new credentials are known to have
    /// landed there.
    pub(super) fn recheck_due(&self) {
        let mut state = self.lock();
        if let Some(held) = state.held.as_mut() {
            held.recheck_at = Instant::now();
            self.shared.next_ahead_ms.store(0, Relaxed);
        }
    }

    /// Called by the timer a held failure sets: reads the store again if nothing else did.
    pub(super) fn recheck(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.live_flight(now).is_some() {
            return;
        }
        if let Ok(mode @ Mode::Recheck(_)) = self.next_mode(&state, now) {
            if let Ok(launch) = self.begin(&mut state, now, mode) {
                drop(state);
                launch.go();
            }
        }
    }

    /// What a new flight would do now, or the failure that forbids one and until when.
    fn next_mode(&self, state: &State, now: Instant) -> Result<Mode, (Error, Instant)> {
        if let Some(held) = &state.held {
            if now < held.recheck_at {
                return Err((held.error.clone(), held.recheck_at));
            }
            return Ok(Mode::Recheck(held.credentials.clone()));
        }
        match &state.blocked {
            Some((error, until)) if now < *until => {
                Err((error.clone().with_retry_after(*until - now), *until))
            }
            _ => Ok(Mode::Refresh),
        }
    }

    /// Records a new flight; the caller spawns it once the state lock is released.
    fn begin(&self, state: &mut State, now: Instant, mode: Mode) -> Result<Launch, Error> {
        let runtime = match &self.shared.runtime {
            Some(runtime) => runtime.clone(),
            None => Handle::try_current()
                .map_err(|_| Error::config("refreshing a Zoho token needs a Tokio runtime"))?,
        };
        let own = Flight::new(now + self.shared.deadline);
        state.flight = Some(own.clone());
        let current = self.shared.current.load_full();
        let job = Job {
            epoch: state.epoch,
            mode,
            after_rejection: current.as_ref().is_some_and(|c| c.dead.load(Relaxed)),
            current,
        };
        Ok(Launch {
            guard: FlightGuard {
                cache: self.clone(),
                own,
                job,
            },
            runtime,
        })
    }

    /// What the cache can do for its callers now.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        if let Some(token) = self.shared.current.load().as_deref() {
            if token.usable(now) {
                return Status::Connected {
                    usable_for: token.usable_until().saturating_duration_since(now),
                };
            }
        }
        let state = self.lock();
        if let Some(held) = &state.held {
            return match Health::of_failure(&held.error, true) {
                Health::NotConnected => Status::NotConnected,
                Health::NeedsReconsent(code) => Status::NeedsReconsent { code },
                Health::Healthy | Health::Failing => Status::Idle,
            };
        }
        if let Some((error, until)) = &state.blocked {
            let next = SystemTime::now() + until.saturating_duration_since(now);
            return if error.is_throttled() {
                Status::Throttled { until: next }
            } else {
                Status::Failing {
                    error: error.clone(),
                    since: state.failing_since.unwrap_or_else(SystemTime::now),
                    next_attempt: next,
                }
            };
        }
        if state.flight.is_some() {
            Status::Refreshing
        } else {
            Status::Idle
        }
    }

    /// Tells the observer, if any, the health a recorded refresh left the cache in.
    fn observe(&self, health: Health) {
        if let Some(observer) = &self.shared.observer {
            observer(health);
        }
    }

    /// Records a flight's result — the new token, or the failure and what follows it — unless
    /// the flight was abandoned or new credentials were set since it started: then its waiters
    /// get its outcome and the cache records nothing.
    pub(super) fn settle(&self, job: &Job, own: &Flight, work: Work) -> Settled {
        let shared = &*self.shared;
        let mut state = self.lock();
        let current = state.flight.as_ref().is_some_and(|f| f.same(own));
        if current {
            state.flight = None;
        }
        if !current || job.epoch != state.epoch {
            drop(state);
            tracing::debug!(
                "a Zoho token refresh ended after new credentials were set or after its \
                 deadline; its outcome is not recorded"
            );
            let outcome = match work {
                Work::Obtained(obtained) => {
                    CachedToken::new(obtained, 0, job.after_rejection, &shared.config)
                        .map(|t| Token(Arc::new(t)))
                }
                Work::Failed(error) => Err(error),
                Work::StillHeld => Err(Error::transient(
                    "the token store was read again while new credentials were being set",
                )),
            };
            return Settled::outcome(outcome);
        }
        let now = Instant::now();
        let result = match work {
            Work::StillHeld => {
                let recheck = now + shared.config.store_recheck;
                let Some(held) = state.held.as_mut() else {
                    return Settled::outcome(Err(Error::transient("no failure is held")));
                };
                held.recheck_at = recheck;
                shared.next_ahead_ms.store(self.ms(recheck), Relaxed);
                return Settled {
                    recheck_at: Some(recheck),
                    ..Settled::outcome(Err(held.error.clone()))
                };
            }
            Work::Obtained(obtained) => Ok(obtained),
            Work::Failed(error) => Err(error),
        };
        let adopted = matches!(result, Ok(Obtained::Adopted(_)));
        let result = result.and_then(|obtained| {
            if let (Obtained::Minted { response, .. }, Grant::RefreshToken { token, .. }) =
                (&obtained, &mut state.grant)
            {
                if let Some(new) = &response.refresh_token {
                    *token = Some(new.clone());
                }
            }
            CachedToken::new(
                obtained,
                state.generation + 1,
                job.after_rejection,
                &shared.config,
            )
        });
        match result {
            Ok(token) => {
                state.generation = token.generation;
                state.failures = 0;
                state.blocked = None;
                state.failing_since = None;
                state.held = None;
                let token = Arc::new(token);
                shared.current.store(Some(token.clone()));
                shared.next_ahead_ms.store(0, Relaxed);
                Counters::bump(if adopted {
                    &shared.counters.adopted
                } else {
                    &shared.counters.refreshes
                });
                tracing::info!(
                    generation = token.generation,
                    expires_in_secs = token.expires_at.saturating_duration_since(now).as_secs(),
                    api_domain = token.api_domain.as_deref().unwrap_or(""),
                    "{}",
                    if adopted {
                        "Zoho access token adopted from the token store"
                    } else {
                        "Zoho access token refreshed"
                    }
                );
                drop(state);
                self.observe(Health::Healthy);
                Settled::outcome(Ok(Token(token)))
            }
            Err(error) => {
                Counters::bump(if error.is_rate_limited() && !error.is_throttled() {
                    &shared.counters.rate_limited
                } else {
                    &shared.counters.failures
                });
                let failures = state.failures.saturating_add(1);
                let mut retry = None;
                let (error, recheck) = match policy::after(&error, failures, &shared.config) {
                    After::Hold => {
                        let recheck_at = now + shared.config.store_recheck;
                        state.held = Some(Held {
                            error: error.clone(),
                            credentials: state.grant.refresh_token().cloned(),
                            recheck_at,
                        });
                        shared.next_ahead_ms.store(self.ms(recheck_at), Relaxed);
                        (error, Some(recheck_at))
                    }
                    After::Wait(wait) => {
                        state.failures = failures;
                        state.blocked = Some((error.clone(), now + wait));
                        let wall = SystemTime::now();
                        let since = *state.failing_since.get_or_insert(wall);
                        shared.next_ahead_ms.store(self.ms(now + wait), Relaxed);
                        // A store that cannot be reached cannot record it either.
                        if !error.is_store_unavailable() {
                            let record = StoredRetry {
                                since,
                                next_attempt: wall + wait,
                                throttled: error.is_throttled(),
                                message: error.to_string(),
                            };
                            retry = Some((record, state.grant.refresh_token().cloned()));
                        }
                        (error.with_retry_after(wait), None)
                    }
                };
                tracing::warn!(
                    error = %error,
                    permanent = error.is_permanent(),
                    "Zoho token refresh failed"
                );
                drop(state);
                self.observe(Health::of_failure(&error, recheck.is_some()));
                Settled {
                    outcome: Err(error),
                    recheck_at: recheck,
                    retry,
                }
            }
        }
    }
}
