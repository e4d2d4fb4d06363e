//! Getting a new token for the cache's one flight: adopt one another process minted, or take the
//! store's refresh lock and mint one within the fleet's budget.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{jitter, CachedToken, Grant, TokenCache};
use crate::accounts::TokenResponse;
use crate::error::{Error, Kind};
use crate::stats::Counters;
use crate::store::{StoredAccess, StoredFailure, TokenSet};

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

impl TokenCache {
    /// A token for the flight that replaces `current`: through the store when it answers, on this
    /// process's own when it does not.
    pub(super) async fn obtain(&self, current: Option<&CachedToken>) -> Result<Obtained, Error> {
        match self.obtain_shared(current).await {
            Err(error) if error.is_store_unavailable() => {
                tracing::warn!(
                    error = %error,
                    "token store unavailable: refreshing without it (this process only)"
                );
                let grant = self.lock().grant.clone();
                let (mut response, sent_at) = self.mint(&grant).await?;
                inherit_scopes(&mut response, current.map(|c| &c.scopes[..]));
                Ok(Obtained::Minted { response, sent_at })
            }
            other => other,
        }
    }

    async fn obtain_shared(&self, current: Option<&CachedToken>) -> Result<Obtained, Error> {
        let store = &self.shared.store;
        if let Some(access) = self.adoptable(store.load().await?.as_ref(), current) {
            return Ok(Obtained::Adopted(access));
        }
        let deadline = Instant::now() + self.shared.config.max_wait;
        let lock = loop {
            if let Some(lock) = store.try_lock().await? {
                break lock;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    Kind::Timeout,
                    "another process held the token store's refresh lock for too long",
                ));
            }
            tokio::time::sleep(jitter(LOCK_POLL, 0.5, 1.5)).await;
            if let Some(access) = self.adoptable(store.load().await?.as_ref(), current) {
                return Ok(Obtained::Adopted(access));
            }
        };
        let result = self.refresh_locked(current).await;
        if let Err(error) = lock.release().await {
            tracing::warn!(error = %error, "could not release the token store's refresh lock; it expires by itself");
        }
        result
    }

    /// Under the store's lock: adopt, or check the fleet budget and a recorded failure, record the
    /// request, mint, and save — never dropping the refresh token.
    async fn refresh_locked(&self, current: Option<&CachedToken>) -> Result<Obtained, Error> {
        let store = &self.shared.store;
        let mut set = store.load().await?.unwrap_or_default();
        if let Some(access) = self.adoptable(Some(&set), current) {
            return Ok(Obtained::Adopted(access));
        }
        let grant = self.reconcile(&mut set)?;
        if let Some(failure) = &set.failure {
            return Err(failure.to_error());
        }
        let now = SystemTime::now();
        let config = &self.shared.config;
        set.prune_requests(now, config.budget_window);
        if set.token_requests.len() >= config.budget_max.max(1) as usize {
            let oldest = set.token_requests.iter().min().copied().unwrap_or(now);
            let free_at = oldest + config.budget_window;
            return Err(
                self.budget_spent(free_at.duration_since(now).unwrap_or_default(), "the fleet")
            );
        }
        set.token_requests.push(now);
        // Recorded before the call, so a process that dies mid-refresh still counts it.
        store.save(&set).await?;
        match self.mint(&grant).await {
            Ok((mut response, sent_at)) => {
                let previous = set
                    .access
                    .as_ref()
                    .map(|a| &a.scopes[..])
                    .or(current.map(|c| &c.scopes[..]));
                inherit_scopes(&mut response, previous);
                if let Some(new) = &response.refresh_token {
                    set.refresh_token = Some(new.clone());
                }
                set.access = Some(StoredAccess {
                    access_token: response.access_token.clone(),
                    issued_at: now,
                    expires_at: now + response.expires_in,
                    api_domain: response.api_domain.clone(),
                    scopes: response.scopes.clone(),
                });
                if let Err(error) = store.save(&set).await {
                    // The refresh token did not change, so nothing is lost; others will refresh.
                    tracing::warn!(error = %error, "minted a Zoho token but could not save it to the token store");
                }
                Ok(Obtained::Minted { response, sent_at })
            }
            Err(error) if error.is_invalid_grant() && set.refresh_token.is_some() => {
                set.failure = Some(StoredFailure::from_error(&error));
                if let Err(save) = store.save(&set).await {
                    tracing::warn!(error = %save, "could not record the revoked refresh token in the token store");
                }
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Decides which refresh token to use — the store's, unless this process was given a newer
    /// one (by [`set_refresh_token`](TokenCache::set_refresh_token), or to replace one the store
    /// records as revoked) or the store has none — and puts it in `set`.
    fn reconcile(&self, set: &mut TokenSet) -> Result<Grant, Error> {
        let mut state = self.lock();
        if let Grant::RefreshToken { token, prefer } = &mut state.grant {
            let replace = match (&set.refresh_token, &*token) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(stored), Some(local)) => {
                    stored != local && (*prefer || set.failure.is_some())
                }
            };
            if replace {
                set.refresh_token = token.clone();
                set.failure = None;
                set.access = None;
            } else if set.refresh_token.is_some() {
                *token = set.refresh_token.clone();
            }
            *prefer = false;
            if set.refresh_token.is_none() {
                return Err(Error::config(
                    "no refresh token: none was configured and the token store holds none",
                ));
            }
        }
        Ok(state.grant.clone())
    }

    /// A usable token in `set` that is not the one being replaced — unless this process was given
    /// a refresh token to use instead of the store's, whose tokens then belong to another grant.
    /// Adopting a token also adopts the store's refresh token.
    fn adoptable(
        &self,
        set: Option<&TokenSet>,
        current: Option<&CachedToken>,
    ) -> Option<StoredAccess> {
        let set = set?;
        let access = set.access.as_ref()?;
        let remaining = access.expires_at.duration_since(SystemTime::now()).ok()?;
        let lifetime = access
            .expires_at
            .duration_since(access.issued_at)
            .unwrap_or(remaining);
        let usable = remaining > self.shared.config.expiry_margin.min(lifetime / 10);
        let replacing = current.is_some_and(|c| c.access_token == access.access_token);
        if !usable || replacing {
            return None;
        }
        match &mut self.lock().grant {
            Grant::RefreshToken { prefer: true, .. } => return None,
            Grant::RefreshToken { token, .. } if set.refresh_token.is_some() => {
                token.clone_from(&set.refresh_token);
            }
            _ => {}
        }
        Some(access.clone())
    }

    /// One call to Zoho's token endpoint, within this process's own budget.
    async fn mint(&self, grant: &Grant) -> Result<(TokenResponse, Instant), Error> {
        let now = Instant::now();
        if let Err(wait) = self.lock().budget.try_take(now) {
            return Err(self.budget_spent(wait, "this process"));
        }
        Counters::bump(&self.shared.counters.token_requests);
        tracing::debug!("requesting a Zoho access token");
        let client = &self.shared.client;
        let response = match grant {
            Grant::RefreshToken {
                token: Some(token), ..
            } => client.refresh(token).await,
            Grant::RefreshToken { token: None, .. } => Err(Error::config(
                "no refresh token: none was configured and the token store cannot be read",
            )),
            Grant::ClientCredentials { scopes, soid } => {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                client.client_credentials(&scopes, soid).await
            }
        }?;
        Ok((response, now))
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

/// Refresh answers name no scope; the grant's scopes have not changed since the last answer that
/// did.
fn inherit_scopes(response: &mut TokenResponse, previous: Option<&[String]>) {
    if response.scopes.is_empty() {
        response.scopes = previous.unwrap_or_default().to_vec();
    }
}
