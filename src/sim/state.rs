//! The simulator's world: the registered client, grants, live access tokens, grant codes, queued
//! faults and counters. Pure bookkeeping: no I/O, so every rule here is plain synchronous code run
//! under the simulator's mutex.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::{Counters, Fault, Language};

/// Settings a test may change while the simulator runs.
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) token_lifetime: Duration,
    pub(super) token_latency: Duration,
    pub(super) api_latency: Duration,
    pub(super) rate_limit: usize,
    pub(super) rate_window: Duration,
    pub(super) max_live_tokens: usize,
    pub(super) grant_code_lifetime: Duration,
    pub(super) throttle_status: StatusCode,
    pub(super) throttle_language: Language,
    pub(super) legacy_expires: bool,
}

impl Default for Config {
    /// Zoho's documented limits (zoho-wire.md §3).
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            token_latency: Duration::ZERO,
            api_latency: Duration::ZERO,
            rate_limit: 10,
            rate_window: Duration::from_secs(600),
            max_live_tokens: 15,
            grant_code_lifetime: Duration::from_secs(120),
            throttle_status: StatusCode::OK,
            throttle_language: Language::English,
            legacy_expires: false,
        }
    }
}

/// What the consent flow needs beyond [`Config`]: where it may send the user back, and what the
/// callback says about the data centre.
#[derive(Clone, Debug)]
pub(super) struct Registration {
    /// The client's registered redirect URIs, matched exactly as Zoho does.
    pub(super) redirect_uris: Vec<String>,
    /// The callback's `location` (the user's data centre).
    pub(super) location: String,
    /// The callback's `accounts-server`; `None`: the simulator's own URL.
    pub(super) accounts_server: Option<String>,
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            redirect_uris: Vec::new(),
            location: "us".to_owned(),
            accounts_server: None,
        }
    }
}

/// How a PKCE `code_challenge` was derived from its verifier (RFC 7636 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChallengeMethod {
    /// `base64url-no-pad(SHA-256(verifier))`.
    S256,
    /// The verifier itself.
    Plain,
}

/// A PKCE challenge from the authorization request, checked when its code is exchanged.
#[derive(Clone, Debug)]
pub(super) struct Challenge {
    pub(super) method: ChallengeMethod,
    pub(super) value: String,
}

impl Challenge {
    fn verifies(&self, verifier: &str) -> bool {
        if !is_pkce_string(verifier) {
            return false;
        }
        match self.method {
            ChallengeMethod::S256 => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)) == self.value,
            ChallengeMethod::Plain => verifier == self.value,
        }
    }
}

/// RFC 7636 §4.1: a verifier (and so a plain challenge) is 43 to 128 unreserved characters. An
/// S256 challenge, 43 base64url characters, fits the same rule.
pub(super) fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An authorization request whose consent page is showing, waiting for Accept or Deny.
pub(super) struct Consent {
    pub(super) redirect_uri: String,
    pub(super) scopes: Vec<String>,
    /// `access_type=offline`.
    pub(super) offline: bool,
    /// `prompt=consent`.
    pub(super) prompt_consent: bool,
    /// The client's `state`, round-tripped verbatim.
    pub(super) state: Option<String>,
    pub(super) challenge: Option<Challenge>,
}

/// What access tokens are minted from; limits are counted per grant. No `Debug`: it holds tokens.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Grant {
    /// A refresh token.
    Refresh(String),
    /// `client_credentials` for one organisation (`soid`). The simulator has one client, so the
    /// soid alone identifies the (client, soid) pair.
    Org(String),
    /// An online authorization code (no refresh token), keyed by the code it was exchanged from.
    Online(String),
}

/// Per-grant bookkeeping.
#[derive(Default)]
struct Owner {
    scopes: Vec<String>,
    /// When each token inside the current rate-limit window was minted, oldest first.
    minted: VecDeque<Instant>,
    /// Every access token minted from this grant that `access` still holds, oldest first; dead
    /// ones leave both at the next mint.
    live: VecDeque<String>,
}

struct Access {
    scopes: Vec<String>,
    expires: Instant,
}

struct Code {
    scopes: Vec<String>,
    offline: bool,
    redirect_uri: Option<String>,
    challenge: Option<Challenge>,
    expires: Instant,
}

/// A successful grant, ready to be rendered.
pub(super) struct Issued {
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) scopes: Vec<String>,
    pub(super) lifetime: Duration,
}

/// Why a grant failed.
pub(super) enum Refusal {
    /// Zoho's `{"error":"<code>"}` answer.
    Error(&'static str),
    /// The rate limit for this grant is spent.
    Throttled,
}

/// The whole mutable state. No `Debug`: it holds every secret the simulator knows.
pub(super) struct State {
    pub(super) config: Config,
    pub(super) registration: Registration,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) counters: Counters,
    owners: HashMap<Grant, Owner>,
    access: HashMap<String, Access>,
    codes: HashMap<String, Code>,
    /// Consent pages showing, by their one-time `request_id`.
    consents: HashMap<String, Consent>,
    /// Whether the user has accepted a consent page before: a repeat consent yields a refresh
    /// token only with `prompt=consent`.
    consented: bool,
    faults: VecDeque<Fault>,
}

/// A fresh Zoho-looking token or code: `1000.<32 hex>.<32 hex>`.
pub(super) fn new_token() -> String {
    format!(
        "1000.{:032x}.{:032x}",
        fastrand::u128(..),
        fastrand::u128(..)
    )
}

impl State {
    pub(super) fn new(
        config: Config,
        registration: Registration,
        client_id: String,
        client_secret: String,
    ) -> Self {
        Self {
            config,
            registration,
            client_id,
            client_secret,
            counters: Counters::default(),
            owners: HashMap::new(),
            access: HashMap::new(),
            codes: HashMap::new(),
            consents: HashMap::new(),
            consented: false,
            faults: VecDeque::new(),
        }
    }

    /// Registers a refresh token, as if the user had consented with `access_type=offline`.
    pub(super) fn add_refresh_token(&mut self, scopes: Vec<String>) -> String {
        let token = new_token();
        let owner = Owner {
            scopes,
            ..Owner::default()
        };
        self.owners.insert(Grant::Refresh(token.clone()), owner);
        token
    }

    pub(super) fn add_code(
        &mut self,
        scopes: Vec<String>,
        offline: bool,
        redirect_uri: Option<String>,
        challenge: Option<Challenge>,
    ) -> String {
        let code = new_token();
        let expires = Instant::now() + self.config.grant_code_lifetime;
        let entry = Code {
            scopes,
            offline,
            redirect_uri,
            challenge,
            expires,
        };
        self.codes.insert(code.clone(), entry);
        code
    }

    pub(super) fn is_registered(&self, redirect_uri: &str) -> bool {
        self.registration
            .redirect_uris
            .iter()
            .any(|registered| registered == redirect_uri)
    }

    /// Keeps a consent request until its page, carrying the one-time `request_id`, is answered.
    pub(super) fn add_consent(&mut self, request_id: String, consent: Consent) {
        self.consents.insert(request_id, consent);
    }

    /// The consent request behind `request_id`, which is spent whatever the decision.
    pub(super) fn take_consent(&mut self, request_id: &str) -> Option<Consent> {
        self.consents.remove(request_id)
    }

    /// The user clicked Accept: a grant code bound to the request's redirect URI and challenge.
    pub(super) fn accept(&mut self, consent: &Consent) -> String {
        // Zoho issues a refresh token at the first consent, and on a repeat one only with
        // `prompt=consent` (zoho-wire.md §1); without it the code exchanges like an online one.
        // Whether an earlier *online* consent counts as "first" is unconfirmed; it does here.
        let offline = consent.offline && (consent.prompt_consent || !self.consented);
        self.consented = true;
        self.add_code(
            consent.scopes.clone(),
            offline,
            Some(consent.redirect_uri.clone()),
            consent.challenge.clone(),
        )
    }

    /// `grant_type=refresh_token`: a new access token, no new refresh token.
    pub(super) fn grant_refresh(&mut self, token: &str) -> Result<Issued, Refusal> {
        let grant = Grant::Refresh(token.to_owned());
        let scopes = match self.owners.get(&grant) {
            Some(owner) => owner.scopes.clone(),
            // Zoho answers a wrong or revoked refresh token with `invalid_code`.
            None => return Err(Refusal::Error("invalid_code")),
        };
        self.mint(&grant, scopes, None)
    }

    /// `grant_type=authorization_code`. A wrong `redirect_uri` leaves the code unspent, so a
    /// client that fixes it can still use the code; a failed PKCE check spends it (see below).
    pub(super) fn grant_code(
        &mut self,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<Issued, Refusal> {
        let entry = self
            .codes
            .remove(code)
            .filter(|entry| entry.expires > Instant::now())
            .ok_or(Refusal::Error("invalid_code"))?;
        if entry
            .redirect_uri
            .as_deref()
            .is_some_and(|expected| redirect_uri != Some(expected))
        {
            self.codes.insert(code.to_owned(), entry);
            return Err(Refusal::Error("invalid_redirect_uri"));
        }
        // Zoho's answer to a bad verifier is unconfirmed; `invalid_code` is its answer to every
        // other bad code. The code stays spent: whoever presents a stolen code gets one guess,
        // which is stricter than letting them retry. A verifier for a code issued without a
        // challenge fails too (OAuth 2.1's PKCE downgrade rule): it means the authorization URL
        // lost its `code_challenge`.
        let pkce_ok = match (&entry.challenge, code_verifier) {
            (None, None) => true,
            (Some(challenge), Some(verifier)) => challenge.verifies(verifier),
            (None, Some(_)) | (Some(_), None) => false,
        };
        if !pkce_ok {
            return Err(Refusal::Error("invalid_code"));
        }
        if entry.offline {
            let refresh = self.add_refresh_token(entry.scopes.clone());
            let grant = Grant::Refresh(refresh.clone());
            self.mint(&grant, entry.scopes, Some(refresh))
        } else {
            let grant = Grant::Online(code.to_owned());
            self.owners.insert(grant.clone(), Owner::default());
            self.mint(&grant, entry.scopes, None)
        }
    }

    /// `grant_type=client_credentials` for the organisation `soid`.
    pub(super) fn grant_org(&mut self, soid: &str, scopes: Vec<String>) -> Result<Issued, Refusal> {
        let grant = Grant::Org(soid.to_owned());
        self.owners.entry(grant.clone()).or_default();
        self.mint(&grant, scopes, None)
    }

    /// Mints an access token for an existing grant, enforcing the sliding-window rate limit and
    /// evicting the oldest live token beyond `max_live_tokens`.
    fn mint(
        &mut self,
        grant: &Grant,
        scopes: Vec<String>,
        refresh_token: Option<String>,
    ) -> Result<Issued, Refusal> {
        let now = Instant::now();
        let Config {
            rate_limit,
            rate_window,
            max_live_tokens,
            token_lifetime,
            ..
        } = self.config;
        let access = &mut self.access;
        let owner = self
            .owners
            .get_mut(grant)
            .expect("callers mint only for registered grants");

        while owner
            .minted
            .front()
            .is_some_and(|&at| now.duration_since(at) >= rate_window)
        {
            owner.minted.pop_front();
        }
        if owner.minted.len() >= rate_limit {
            return Err(Refusal::Throttled);
        }
        owner.minted.push_back(now);

        owner.live.retain(|token| {
            let alive = access.get(token).is_some_and(|a| a.expires > now);
            if !alive {
                access.remove(token);
            }
            alive
        });
        while owner.live.len() >= max_live_tokens {
            // Zoho gives no notice: the evicted token just stops working.
            let Some(oldest) = owner.live.pop_front() else {
                break;
            };
            access.remove(&oldest);
        }

        let token = new_token();
        owner.live.push_back(token.clone());
        access.insert(
            token.clone(),
            Access {
                scopes: scopes.clone(),
                expires: now + token_lifetime,
            },
        );
        self.counters.tokens_issued += 1;
        Ok(Issued {
            access_token: token,
            refresh_token,
            scopes,
            lifetime: token_lifetime,
        })
    }

    /// The scopes of a live access token; `None` when it is unknown, expired, evicted or revoked.
    pub(super) fn live_scopes(&self, token: &str) -> Option<&[String]> {
        self.access
            .get(token)
            .filter(|a| a.expires > Instant::now())
            .map(|a| a.scopes.as_slice())
    }

    /// How many access tokens minted from `refresh` still work.
    pub(super) fn live_count(&self, refresh: &str) -> usize {
        self.owners
            .get(&Grant::Refresh(refresh.to_owned()))
            .map_or(0, |owner| {
                owner
                    .live
                    .iter()
                    .filter(|t| self.live_scopes(t).is_some())
                    .count()
            })
    }

    pub(super) fn invalidate_all(&mut self) {
        self.access.clear();
        for owner in self.owners.values_mut() {
            owner.live.clear();
        }
    }

    /// Revokes a refresh token and every access token minted from it; `false` if it was unknown.
    pub(super) fn revoke(&mut self, refresh: &str) -> bool {
        let Some(owner) = self.owners.remove(&Grant::Refresh(refresh.to_owned())) else {
            return false;
        };
        for token in owner.live {
            self.access.remove(&token);
        }
        true
    }

    pub(super) fn inject(&mut self, fault: Fault, times: usize) {
        self.faults.extend(std::iter::repeat_n(fault, times));
    }

    pub(super) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub(super) fn next_fault(&mut self) -> Option<Fault> {
        self.faults.pop_front()
    }
}
