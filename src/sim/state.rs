//! The simulator's world: its data centres, the registered client, grants, access tokens, grant
//! codes, queued faults and counters. Pure bookkeeping: no I/O, so every rule here is plain
//! synchronous code run under the simulator's mutex.
//!
//! Every grant, code and token belongs to one data centre, identified by its index (0 is the
//! first listener); a server passes the index of the DC it serves, and the rules here refuse
//! what belongs to another, as Zoho's DCs know nothing of each other's users.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::{Counters, Fault, Language, UserCounters};

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
    /// The callback's `location` when the user picks data centre 0.
    pub(super) location: String,
    /// Every callback's `accounts-server`; `None`: the URL of the DC the user picked.
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
    /// `client_credentials` for one organisation (`soid`) at one data centre. The simulator has
    /// one client, so the soid alone identifies the (client, soid) pair within a DC.
    Org(usize, String),
    /// An online authorization code (no refresh token), keyed by the code it was exchanged from.
    Online(String),
}

/// Per-grant bookkeeping. A revoked grant stays, marked, so that its counters survive and a
/// request with its dead tokens is still attributed to it.
struct Owner {
    /// The data centre whose accounts server issued the grant.
    dc: usize,
    scopes: Vec<String>,
    /// When each token inside the current rate-limit window was minted, oldest first.
    minted: VecDeque<Instant>,
    /// The access tokens minted from this grant that may still work, oldest first; dead ones
    /// leave at the next mint.
    live: VecDeque<String>,
    revoked: bool,
    counters: UserCounters,
}

impl Owner {
    fn new(dc: usize, scopes: Vec<String>) -> Self {
        Self {
            dc,
            scopes,
            minted: VecDeque::new(),
            live: VecDeque::new(),
            revoked: false,
            counters: UserCounters::default(),
        }
    }
}

/// An access token. Kept after it dies (only its scopes are dropped), so that a request carrying
/// it is still attributed to its grant and DC, whenever the token died.
struct Access {
    /// `None` once evicted, revoked or invalidated.
    scopes: Option<Vec<String>>,
    expires: Instant,
    grant: Grant,
}

impl Access {
    fn live_scopes(&self, now: Instant) -> Option<&[String]> {
        self.scopes.as_deref().filter(|_| self.expires > now)
    }
}

struct Code {
    dc: usize,
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

/// How a product API judges a request's token.
#[derive(Clone, Copy)]
pub(super) enum Verdict {
    Pass,
    NoToken,
    Dead,
    Scope,
}

/// The whole mutable state. No `Debug`: it holds every secret the simulator knows.
pub(super) struct State {
    pub(super) config: Config,
    pub(super) registration: Registration,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    /// The data centres whose client secret is their own, by index.
    pub(super) data_center_secrets: HashMap<usize, String>,
    /// Each data centre's URL (accounts server and `api_domain`), by index.
    urls: Vec<String>,
    /// What each data centre's server saw, by index.
    counters: Vec<Counters>,
    owners: HashMap<Grant, Owner>,
    /// Every access token ever minted, dead ones included.
    access: HashMap<String, Access>,
    codes: HashMap<String, Code>,
    /// Consent pages showing, by their one-time `request_id`.
    consents: HashMap<String, Consent>,
    /// Per data centre, whether its user has accepted a consent page before: a repeat consent
    /// yields a refresh token only with `prompt=consent`.
    consented: Vec<bool>,
    /// Shared by every DC's token endpoint: the next request at any of them takes the next one.
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
        urls: Vec<String>,
    ) -> Self {
        Self {
            config,
            registration,
            client_id,
            client_secret,
            data_center_secrets: HashMap::new(),
            counters: vec![Counters::default(); urls.len()],
            consented: vec![false; urls.len()],
            urls,
            owners: HashMap::new(),
            access: HashMap::new(),
            codes: HashMap::new(),
            consents: HashMap::new(),
            faults: VecDeque::new(),
        }
    }

    pub(super) fn data_center_count(&self) -> usize {
        self.urls.len()
    }

    /// DC `dc`'s URL: its accounts server and `api_domain`. Callers pass indexes below
    /// [`State::data_center_count`].
    pub(super) fn url(&self, dc: usize) -> &str {
        &self.urls[dc]
    }

    /// The `location` a consent callback names for DC `dc`: DC 0's is configurable (default
    /// `us`, where multi-DC consent starts), the others' are `sim<k>`, which no real DC uses, so
    /// that they never map to a real Zoho host.
    pub(super) fn location(&self, dc: usize) -> String {
        match dc {
            0 => self.registration.location.clone(),
            _ => format!("sim{dc}"),
        }
    }

    /// What DC `dc`'s server has seen.
    pub(super) fn counters(&mut self, dc: usize) -> &mut Counters {
        &mut self.counters[dc]
    }

    /// What every DC's server has seen, summed.
    pub(super) fn total_counters(&self) -> Counters {
        self.counters
            .iter()
            .fold(Counters::default(), |total, &dc| total.plus(dc))
    }

    /// The counters of the user behind a refresh token; `None` for a token never issued here.
    pub(super) fn user_counters(&self, refresh: &str) -> Option<UserCounters> {
        self.owners
            .get(&Grant::Refresh(refresh.to_owned()))
            .map(|owner| owner.counters)
    }

    /// Registers a refresh token in DC `dc`, as if its user had consented with
    /// `access_type=offline`.
    pub(super) fn add_refresh_token(&mut self, dc: usize, scopes: Vec<String>) -> String {
        let token = new_token();
        self.owners
            .insert(Grant::Refresh(token.clone()), Owner::new(dc, scopes));
        token
    }

    pub(super) fn add_code(
        &mut self,
        dc: usize,
        scopes: Vec<String>,
        offline: bool,
        redirect_uri: Option<String>,
        challenge: Option<Challenge>,
    ) -> String {
        let code = new_token();
        let expires = Instant::now() + self.config.grant_code_lifetime;
        let entry = Code {
            dc,
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

    /// The user of DC `dc` clicked Accept: a grant code of that DC, bound to the request's
    /// redirect URI and challenge.
    pub(super) fn accept(&mut self, consent: &Consent, dc: usize) -> String {
        // Zoho issues a refresh token at the first consent, and on a repeat one only with
        // `prompt=consent` (zoho-wire.md §1); without it the code exchanges like an online one.
        // Whether an earlier *online* consent counts as "first" is unconfirmed; it does here.
        let offline = consent.offline && (consent.prompt_consent || !self.consented[dc]);
        self.consented[dc] = true;
        self.add_code(
            dc,
            consent.scopes.clone(),
            offline,
            Some(consent.redirect_uri.clone()),
            consent.challenge.clone(),
        )
    }

    /// Counts a `grant_type=refresh_token` request at DC `dc`, for the DC and for the user its
    /// `refresh_token` names, whatever its outcome.
    pub(super) fn count_refresh_grant(&mut self, dc: usize, token: Option<&str>) {
        self.counters[dc].refresh_grants += 1;
        let owner = token.and_then(|token| self.owners.get_mut(&Grant::Refresh(token.to_owned())));
        if let Some(owner) = owner {
            owner.counters.refresh_grants += 1;
            if owner.dc != dc {
                owner.counters.wrong_dc_refresh_grants += 1;
            }
        }
    }

    /// `grant_type=refresh_token` at DC `dc`: a new access token, no new refresh token.
    pub(super) fn grant_refresh(&mut self, dc: usize, token: &str) -> Result<Issued, Refusal> {
        let grant = Grant::Refresh(token.to_owned());
        let scopes = match self.owners.get(&grant) {
            Some(owner) if owner.dc == dc && !owner.revoked => owner.scopes.clone(),
            // Zoho answers a wrong or revoked refresh token with `invalid_code`; another DC does
            // not know the token at all, so it is just as wrong there.
            _ => return Err(Refusal::Error("invalid_code")),
        };
        self.mint(&grant, scopes, None)
    }

    /// `grant_type=authorization_code` at DC `dc`. A wrong `redirect_uri` leaves the code
    /// unspent, so a client that fixes it can still use the code; so does presenting it at
    /// another DC, which does not know it; a failed PKCE check spends it (see below).
    pub(super) fn grant_code(
        &mut self,
        dc: usize,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<Issued, Refusal> {
        if self.codes.get(code).is_none_or(|entry| entry.dc != dc) {
            return Err(Refusal::Error("invalid_code"));
        }
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
            let refresh = self.add_refresh_token(dc, entry.scopes.clone());
            let grant = Grant::Refresh(refresh.clone());
            self.mint(&grant, entry.scopes, Some(refresh))
        } else {
            let grant = Grant::Online(code.to_owned());
            self.owners
                .insert(grant.clone(), Owner::new(dc, Vec::new()));
            self.mint(&grant, entry.scopes, None)
        }
    }

    /// `grant_type=client_credentials` at DC `dc` for its organisation `soid`.
    pub(super) fn grant_org(
        &mut self,
        dc: usize,
        soid: &str,
        scopes: Vec<String>,
    ) -> Result<Issued, Refusal> {
        let grant = Grant::Org(dc, soid.to_owned());
        self.owners
            .entry(grant.clone())
            .or_insert_with(|| Owner::new(dc, Vec::new()));
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
            let alive = access
                .get(token)
                .is_some_and(|a| a.live_scopes(now).is_some());
            if !alive {
                kill(access, token);
            }
            alive
        });
        while owner.live.len() >= max_live_tokens {
            // Zoho gives no notice: the evicted token just stops working.
            let Some(oldest) = owner.live.pop_front() else {
                break;
            };
            kill(access, &oldest);
        }

        let token = new_token();
        owner.live.push_back(token.clone());
        access.insert(
            token.clone(),
            Access {
                scopes: Some(scopes.clone()),
                expires: now + token_lifetime,
                grant: grant.clone(),
            },
        );
        owner.counters.tokens_issued += 1;
        self.counters[owner.dc].tokens_issued += 1;
        Ok(Issued {
            access_token: token,
            refresh_token,
            scopes,
            lifetime: token_lifetime,
        })
    }

    /// The scopes of a live access token; `None` when it is unknown, expired, evicted or revoked.
    pub(super) fn live_scopes(&self, token: &str) -> Option<&[String]> {
        self.access.get(token)?.live_scopes(Instant::now())
    }

    /// Judges and counts an API request at DC `dc` that presented `token`: live tokens pass
    /// at their own DC's APIs only when `allows` their scopes; another DC has never heard of
    /// them, so they are dead there.
    pub(super) fn authenticate(
        &mut self,
        dc: usize,
        token: Option<&str>,
        allows: impl FnOnce(&[String]) -> bool,
    ) -> Verdict {
        let now = Instant::now();
        let access = token.and_then(|token| self.access.get(token));
        let owner = access.and_then(|a| self.owners.get_mut(&a.grant));
        let verdict = match (access, &owner) {
            (None, _) if token.is_none() => Verdict::NoToken,
            (Some(a), Some(owner)) if owner.dc == dc => match a.live_scopes(now) {
                Some(scopes) if allows(scopes) => Verdict::Pass,
                Some(_) => Verdict::Scope,
                None => Verdict::Dead,
            },
            _ => Verdict::Dead,
        };
        if let Some(owner) = owner {
            owner.counters.api_requests += 1;
            if owner.dc != dc {
                owner.counters.wrong_dc_api_requests += 1;
            }
            if matches!(verdict, Verdict::Pass) {
                owner.counters.api_ok += 1;
            }
        }
        let counters = &mut self.counters[dc];
        *match verdict {
            Verdict::Pass => &mut counters.api_ok,
            Verdict::NoToken => &mut counters.api_no_token,
            Verdict::Dead => &mut counters.api_token_errors,
            Verdict::Scope => &mut counters.api_scope_errors,
        } += 1;
        verdict
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
        for owner in self.owners.values_mut() {
            for token in owner.live.drain(..) {
                kill(&mut self.access, &token);
            }
        }
    }

    /// Kills every live access token minted from `refresh`, which stays valid.
    pub(super) fn invalidate_tokens_of(&mut self, refresh: &str) {
        if let Some(owner) = self.owners.get_mut(&Grant::Refresh(refresh.to_owned())) {
            for token in owner.live.drain(..) {
                kill(&mut self.access, &token);
            }
        }
    }

    /// Revokes a refresh token of DC `dc` (`None`: of any DC) and every access token minted from
    /// it; `false` if that DC does not know it or it was revoked already.
    pub(super) fn revoke(&mut self, dc: Option<usize>, refresh: &str) -> bool {
        let Some(owner) = self
            .owners
            .get_mut(&Grant::Refresh(refresh.to_owned()))
            .filter(|owner| !owner.revoked && dc.is_none_or(|dc| dc == owner.dc))
        else {
            return false;
        };
        owner.revoked = true;
        owner.minted.clear();
        for token in owner.live.drain(..) {
            kill(&mut self.access, &token);
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

/// Kills an access token, keeping its entry for attribution and freeing its scopes.
fn kill(access: &mut HashMap<String, Access>, token: &str) {
    if let Some(entry) = access.get_mut(token) {
        entry.scopes = None;
    }
}
