//! Getting a new token for the cache's one flight: adopt one another process minted, or take the
//! store's refresh lock and mint one within the fleet's budget — every store write fenced, every
//! store call bounded.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::builder::Config;
use super::policy::jitter;
use super::state::{Grant, Job, Mode};
use super::token::{still_usable, CachedToken};
use super::TokenCache;
use crate::accounts::TokenResponse;
use crate::error::{Error, Kind};
use crate::secret::RefreshToken;
use crate::stats::Counters;
use crate::store::{StoreLock, StoredAccess, StoredFailure, StoredRetry, TokenSet};

/// How often a process waiting for another's refresh looks for its token (±50 %).
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Where a flight's token came from.
pub(super) enum Obtained {
    /// Minted by another process (or an earlier run) and found in the store.
    Adopted(StoredAccess),
    /// Minted now, by this process.
    Minted {
        response: TokenResponse,
        sent_at: Instant,
    },
}

/// What a flight's work came to.
pub(super) enum Work {
    Obtained(Obtained),
    Failed(Error),
    /// A recheck found the same credentials that failed: the failure stays.
    StillHeld,
}

/// What the fenced update under the lock decided.
enum Step {
    Adopt(StoredAccess, Option<RefreshToken>),
    /// Mint with this refresh token, at the accounts server the store says issued it.
    Mint(Option<RefreshToken>, Option<String>),
}

impl TokenCache {
    /// A flight's work.
    pub(super) async fn work(&self, job: &Job) -> Work {
        if let Mode::Recheck(failed) = &job.mode {
            match self.bounded("read", self.shared.store.load()).await {
                Ok(set)
                    if set.as_ref().and_then(|s| s.refresh_token.as_ref()) != failed.as_ref() =>
                {
                    tracing::info!("the token store holds new credentials; refreshing with them");
                }
                Ok(_) => return Work::StillHeld,
                Err(error) => {
                    tracing::debug!(error = %error, "could not read the token store again");
                    return Work::StillHeld;
                }
            }
        }
        match self.obtain(job).await {
            Ok(obtained) => Work::Obtained(obtained),
            Err(error) => Work::Failed(error),
        }
    }

    /// A token for the flight: through the store when it answers, on this process's own when it
    /// does not.
    async fn obtain(&self, job: &Job) -> Result<Obtained, Error> {
        let current = job.current.as_deref();
        match self.obtain_shared(job).await {
            Err(error) if error.is_store_unavailable() => {
                let grant = self.lock().grant.clone();
                if matches!(grant, Grant::RefreshToken { token: None, .. }) {
                    // No refresh token to go on without the store: wait for it to come back.
                    return Err(error);
                }
                tracing::warn!(
                    error = %error,
                    "token store unavailable: refreshing without it (this process only)"
                );
                self.take_budget()?;
                let (mut response, sent_at) = self.mint(&grant, None).await?;
                inherit_scopes(&mut response, current.map(|c| &c.scopes[..]));
                Ok(Obtained::Minted { response, sent_at })
            }
            other => other,
        }
    }

    /// One store call within the configured bound: a store that does not answer is unavailable.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let bound = self.shared.config.store_timeout;
        tokio::time::timeout(bound, call).await.unwrap_or_else(|_| {
            Err(Error::store_unavailable(format!(
                "the token store did not {what} within {}s",
                bound.as_secs_f32()
            )))
        })
    }

    async fn obtain_shared(&self, job: &Job) -> Result<Obtained, Error> {
        let store = &*self.shared.store;
        if let Some(obtained) = self.adopt(job, self.bounded("read", store.load()).await?) {
            return Ok(obtained);
        }
        let deadline = Instant::now() + self.shared.config.max_wait;
        // The lock must outlive the whole refresh.
        let ttl = self.shared.deadline;
        let lock = loop {
            if let Some(lock) = self.bounded("lock", store.try_lock(ttl)).await? {
                break lock;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    Kind::Timeout,
                    "another process held the token store's refresh lock for too long",
                ));
            }
            tokio::time::sleep(jitter(LOCK_POLL, 0.5, 1.5)).await;
            if let Some(obtained) = self.adopt(job, self.bounded("read", store.load()).await?) {
                return Ok(obtained);
            }
        };
        let result = self.refresh_locked(job, &*lock).await;
        let release = lock.release();
        if let Err(error) = self.bounded("release its lock", release).await {
            tracing::warn!(error = %error, "could not release the token store's refresh lock; it expires by itself");
        }
        result
    }

    /// Adopts the token in `set`, if [`adoptable`](Self::adoptable), with the set's refresh token.
    fn adopt(&self, job: &Job, set: Option<TokenSet>) -> Option<Obtained> {
        let set = set?;
        let grant = self.lock().grant.clone();
        let access = adoptable(&set, job.current.as_deref(), &grant, &self.shared.config)?;
        self.commit_refresh_token(job, set.refresh_token);
        Some(Obtained::Adopted(access))
    }

    /// Under the store's lock: in one fenced update, adopt, or check a recorded failure and the
    /// fleet budget and record the request; then mint, and save the result fenced — merged into
    /// whatever the store holds by then, so a newer refresh token is never reverted.
    async fn refresh_locked(&self, job: &Job, lock: &dyn StoreLock) -> Result<Obtained, Error> {
        let store = &*self.shared.store;
        let config = &self.shared.config;
        let current = job.current.as_deref();
        let grant = self.lock().grant.clone();
        let now = SystemTime::now();
        let mut previous_scopes = Vec::new();
        let decided = store.try_update(Some(lock), |set| {
            if let Some(access) = adoptable(set, current, &grant, config) {
                return Ok(Step::Adopt(access, set.refresh_token.clone()));
            }
            let token = choose(&grant, set)?;
            if let Some(failure) = &set.failure {
                if failure.holds_for(&self.shared.client, set.accounts_url.as_deref()) {
                    return Err(failure.to_error());
                }
            }
            set.prune_requests(now, config.budget_window);
            if set.token_requests.len() >= config.budget_max as usize {
                let oldest = set.token_requests.iter().min().copied().unwrap_or(now);
                let free_at = oldest + config.budget_window;
                let wait = free_at.duration_since(now).unwrap_or_default();
                return Err(self.budget_spent(wait, "the fleet"));
            }
            // A request this process's own budget refuses must not take a fleet slot.
            self.check_budget()?;
            previous_scopes = set
                .access
                .as_ref()
                .map(|a| a.scopes.clone())
                .unwrap_or_default();
            // Recorded before the call, so a process that dies mid-refresh still counts it.
            set.token_requests.push(now);
            Ok(Step::Mint(token, set.accounts_url.clone()))
        });
        let step = match self.bounded("save", decided).await {
            Err(error) if error.is_not_connected() => {
                self.commit_refresh_token(job, None);
                return Err(error);
            }
            decided => decided?,
        };
        let step = match step {
            Some((step, _)) => step,
            None => {
                return Err(Error::transient(
                    "lost the token store's refresh lock before calling Zoho; another process \
                     may be refreshing",
                ))
            }
        };
        let (used, issuer) = match step {
            Step::Adopt(access, refresh_token) => {
                self.commit_refresh_token(job, refresh_token);
                return Ok(Obtained::Adopted(access));
            }
            Step::Mint(token, issuer) => {
                self.commit_refresh_token(job, token.clone());
                // Checked just now; only a flight of this cache abandoned meanwhile can have
                // taken the slot, and the fleet slot is already recorded.
                let _ = self.take_budget();
                (token, issuer)
            }
        };
        let grant = match (&grant, &used) {
            (Grant::RefreshToken { given, .. }, Some(token)) => Grant::RefreshToken {
                token: Some(token.clone()),
                prefer: false,
                given: *given,
            },
            (grant, _) => grant.clone(),
        };
        match self.mint(&grant, issuer.as_deref()).await {
            Ok((mut response, sent_at)) => {
                let previous = (!previous_scopes.is_empty())
                    .then_some(&previous_scopes[..])
                    .or(current.map(|c| &c.scopes[..]));
                inherit_scopes(&mut response, previous);
                let access = StoredAccess::from_response(&response, now);
                let rotated = response.refresh_token.clone();
                self.save_merged(lock, "the new token", |set| {
                    // Another writer (a new consent, a login, a disconnect) may have replaced or
                    // removed the refresh token meanwhile: theirs stays, and our token, minted
                    // from the old grant, is not put beside it.
                    if set.refresh_token != used {
                        return;
                    }
                    if let Some(new) = &rotated {
                        set.refresh_token = Some(new.clone());
                    }
                    // A failure of another client's credentials: this client works.
                    if set.failure.as_ref().is_some_and(|f| f.client.is_some()) {
                        set.failure = None;
                    }
                    set.retry = None;
                    // Ours only if what is stored is older.
                    if set.access.as_ref().is_none_or(|a| a.issued_at < now) {
                        set.access = Some(access.clone());
                    }
                })
                .await;
                Ok(Obtained::Minted { response, sent_at })
            }
            Err(error)
                if (error.is_invalid_grant() || error.is_invalid_client()) && used.is_some() =>
            {
                let client = self
                    .shared
                    .client
                    .for_issuer(issuer.as_deref())?
                    .fingerprint();
                let failure = StoredFailure::from_error(&error, client);
                self.save_merged(lock, "the refresh token's failure", |set| {
                    // Only against the refresh token that failed, never a newer one.
                    if set.refresh_token == used {
                        set.failure = Some(failure.clone());
                        set.access = None;
                    }
                })
                .await;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Records a transient failure of `failed` in the store, for every process's status: merged
    /// into the latest set, keeping when the failures began, and only while the record still
    /// holds the refresh token that failed. Best effort: only the status depends on it.
    pub(super) async fn record_retry(&self, retry: StoredRetry, failed: Option<RefreshToken>) {
        let store = &*self.shared.store;
        let edit = |set: &mut TokenSet| {
            if set.refresh_token == failed {
                let since = set
                    .retry
                    .as_ref()
                    .map_or(retry.since, |r| r.since.min(retry.since));
                set.retry = Some(StoredRetry {
                    since,
                    ..retry.clone()
                });
            }
            Ok(())
        };
        if let Err(error) = self.bounded("save", store.try_update(None, edit)).await {
            tracing::debug!(error = %error, "could not record the refresh failure in the token store");
        }
    }

    /// Saves a flight's result fenced, merged by `merge` into the latest set. A lock lost
    /// meanwhile does not stop it — the merge never reverts another writer's save — but says so.
    async fn save_merged(
        &self,
        lock: &dyn StoreLock,
        what: &str,
        mut merge: impl FnMut(&mut TokenSet),
    ) {
        let store = &*self.shared.store;
        let mut edit = |set: &mut TokenSet| {
            merge(set);
            Ok(())
        };
        let saved = match self
            .bounded("save", store.try_update(Some(lock), &mut edit))
            .await
        {
            Ok(None) => {
                tracing::warn!(
                    "the token store's refresh lock expired during the refresh; merging {what} \
                     into what the store holds now"
                );
                self.bounded("save", store.try_update(None, &mut edit))
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        };
        if let Err(error) = saved {
            // Nothing stored is lost: the refresh token did not change, and others will refresh.
            tracing::warn!(error = %error, "could not save {what} to the token store");
        }
    }

    /// Makes `token` (read from or written to the store) the one this process uses, unless new
    /// credentials were set since `job` started.
    fn commit_refresh_token(&self, job: &Job, token: Option<RefreshToken>) {
        let mut state = self.lock();
        if state.epoch != job.epoch {
            return;
        }
        let Grant::RefreshToken {
            token: ours,
            prefer,
            given,
        } = &mut state.grant
        else {
            return;
        };
        match token {
            Some(token) => {
                *ours = Some(token);
                *prefer = false;
            }
            // The record lost its refresh token (a disconnect), and this cache was given none to
            // refill it with: it is not connected until a consent stores a new one.
            None if !*given => *ours = None,
            None => {}
        }
    }

    /// Takes a slot of this process's own budget.
    fn take_budget(&self) -> Result<(), Error> {
        let taken = self.lock().budget.try_take(Instant::now());
        taken.map_err(|wait| self.budget_spent(wait, "this process"))
    }

    /// Whether this process's own budget has a slot free; takes none.
    fn check_budget(&self) -> Result<(), Error> {
        let checked = self.lock().budget.check(Instant::now());
        checked.map_err(|wait| self.budget_spent(wait, "this process"))
    }

    /// One call to Zoho's token endpoint — at `issuer`, the accounts server a stored refresh
    /// token came from, when the store names one; the caller took a budget slot for it. Waits
    /// for a slot of the shared limit on token requests in flight, if there is one.
    async fn mint(
        &self,
        grant: &Grant,
        issuer: Option<&str>,
    ) -> Result<(TokenResponse, Instant), Error> {
        let client = self.shared.client.for_issuer(issuer)?;
        let _permit = self.in_flight_permit().await?;
        let now = Instant::now();
        Counters::bump(&self.shared.counters.token_requests);
        tracing::debug!("requesting a Zoho access token");
        let response = match grant {
            Grant::RefreshToken {
                token: Some(token), ..
            } => client.refresh(token).await,
            Grant::RefreshToken { token: None, .. } => Err(not_connected()),
            Grant::ClientCredentials { scopes, soid } => {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                client.client_credentials(&scopes, soid).await
            }
        }?;
        Ok((response, now))
    }

    /// A permit of the shared limit on token requests in flight, waited for at most `max_wait`.
    async fn in_flight_permit(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        let Some(limit) = &self.shared.request_limit else {
            return Ok(None);
        };
        let wait = self.shared.config.max_wait;
        match tokio::time::timeout(wait, limit.clone().acquire_owned()).await {
            Ok(permit) => Ok(permit.ok()),
            Err(_) => Err(Error::new(
                Kind::Timeout,
                format!(
                    "waited {}s for one of the token requests in flight for other connections to                      end",
                    wait.as_secs()
                ),
            )),
        }
    }

    fn budget_spent(&self, retry_after: Duration, whose: &str) -> Error {
        let config = &self.shared.config;
        tracing::warn!(
            retry_after_secs = retry_after.as_secs(),
            "Zoho token budget of {whose} spent; not calling Zoho"
        );
        Error::new(
            Kind::RateLimited,
            format!(
                "no valid Zoho token, and {whose} already made {} token requests in the last {}s \
                 (Zoho allows 10 per 10 minutes per refresh token)",
                config.budget_max,
                config.budget_window.as_secs()
            ),
        )
        .with_retry_after(retry_after)
    }
}

fn not_connected() -> Error {
    Error::new(
        Kind::NotConnected,
        "no refresh token yet: none was configured and the token store holds none (connect a \
         Zoho account, or run `zoho-auth login`)",
    )
}

/// Which refresh token to use — the store's, unless this process was given one to replace it
/// (by [`Seed::Replace`](super::Seed::Replace) or
/// [`set_refresh_token`](TokenCache::set_refresh_token), or to replace one the store records as
/// revoked) or the store has none — written into `set` when it replaces the store's.
fn choose(grant: &Grant, set: &mut TokenSet) -> Result<Option<RefreshToken>, Error> {
    let Grant::RefreshToken {
        token,
        prefer,
        given,
    } = grant
    else {
        return Ok(None);
    };
    let replace = match (&set.refresh_token, token) {
        (_, None) => false,
        // A record without a refresh token was disconnected, or lost by its store: only a cache
        // given its token refills it; one that read it from there must not undo a disconnect.
        (None, Some(_)) => *given,
        (Some(stored), Some(local)) => {
            let revoked = set.failure.as_ref().is_some_and(|f| f.client.is_none());
            stored != local && (*prefer || revoked)
        }
    };
    if replace {
        set.refresh_token.clone_from(token);
        set.failure = None;
        set.retry = None;
        set.access = None;
    } else if *prefer {
        // Set anew by the application: a recorded failure gets one more attempt.
        set.failure = None;
    }
    match &set.refresh_token {
        Some(token) => Ok(Some(token.clone())),
        None => Err(not_connected()),
    }
}

/// A usable token in `set` that is not the one being replaced — unless this process was given a
/// refresh token to use instead of the store's, whose tokens then belong to another grant.
fn adoptable(
    set: &TokenSet,
    current: Option<&CachedToken>,
    grant: &Grant,
    config: &Config,
) -> Option<StoredAccess> {
    let access = set.access.as_ref()?;
    let replacing = current.is_some_and(|c| c.access_token == access.access_token);
    let foreign = matches!(grant, Grant::RefreshToken { prefer: true, .. });
    if replacing || foreign || !still_usable(config, access.issued_at, access.expires_at) {
        return None;
    }
    Some(access.clone())
}

/// Refresh answers name no scope; the grant's scopes have not changed since the last answer that
/// did.
fn inherit_scopes(response: &mut TokenResponse, previous: Option<&[String]>) {
    if response.scopes.is_empty() {
        response.scopes = previous.unwrap_or_default().to_vec();
    }
}
