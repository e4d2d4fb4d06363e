//! A faithful Zoho accounts server and product APIs on loopback, for tests and demos.
//!
//! ```
//! use zoho_auth::sim::Simulator;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::start().await?;
//! let refresh = sim.mint_refresh_token(&["ZohoCRM.modules.ALL"]);
//!
//! // Exchange the refresh token for an access token, as Zoho's SDKs do: a urlencoded body.
//! let answer = zoho_auth::accounts::http_client_builder()?.build()?
//!     .post(format!("{}/oauth/v2/token", sim.url()))
//!     .form(&[
//!         ("grant_type", "refresh_token"),
//!         ("client_id", sim.client_id().as_str()),
//!         ("client_secret", sim.client_secret().expose()),
//!         ("refresh_token", refresh.expose()),
//!     ])
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! let answer: serde_json::Value = serde_json::from_str(&answer)?;
//! let access = answer["access_token"].as_str().expect("a token");
//! assert!(sim.is_access_token_live(access));
//! assert_eq!(answer["expires_in"], 3600);
//!
//! // The same server answers as the product APIs (it is its own `api_domain`).
//! let leads = zoho_auth::accounts::http_client_builder()?.build()?
//!     .get(format!("{}/crm/v8/Leads", sim.url()))
//!     .header("Authorization", format!("Zoho-oauthtoken {access}"))
//!     .send()
//!     .await?;
//! assert_eq!(leads.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! [`Simulator`] serves, on `http://127.0.0.1:<random port>` (and, with more than one data
//! centre, on each further DC's own address, see below):
//!
//! - `/oauth/v2/token` (any method): the `refresh_token`, `authorization_code` and
//!   `client_credentials` grants, with parameters read from the query string, an
//!   `application/x-www-form-urlencoded` body or a `multipart/form-data` body. Every error is an
//!   HTTP 200 with `Server: ZGS` and `{"error":"<code>"}`, as Zoho answers. Zoho's limits apply:
//!   a rate limit per grant (10 tokens per 10 minutes, then the localized throttling body), at most
//!   15 live access tokens per refresh token (the 16th silently kills the oldest), one-time grant
//!   codes that expire, and access tokens that expire. A refresh token or grant code of another
//!   data centre gets `invalid_code`, as an unknown one does.
//! - `/oauth/v2/token/revoke`: revokes a refresh token of this data centre and its access tokens.
//! - `/oauth/v2/auth`: the authorization request. A bad `client_id` or a `redirect_uri` that was
//!   not registered ([`SimulatorBuilder::redirect_uri`], [`Simulator::register_redirect_uri`],
//!   exact match), or a bad `response_type`, `scope`, `access_type` or PKCE challenge, gets an
//!   HTML error page (HTTP 400), never a redirect. A good one gets an HTML consent page whose
//!   Accept (`id="accept"`) and Deny (`id="deny"`) buttons post a one-time `request_id`, and the
//!   user's data centre from a list (`<select id="dc" name="dc">`, the page's own DC
//!   preselected), to `/oauth/v2/auth/decision`, which answers `302 Found` to the redirect URI
//!   with `state`, `code`, `location` and `accounts-server` of the chosen DC (Accept) or
//!   `error=access_denied` and `state` (Deny). The code is a one-time grant code of the chosen DC
//!   as from [`Simulator::issue_grant_code_in`];
//!   with `code_challenge` its exchange needs the matching `code_verifier` (`S256` or `plain`).
//!   [`Simulator::accept_consent`] clicks through it in-process, without a browser.
//! - `/oauth/user/info` and the product APIs under `/crm/`, `/bigin/`, `/desk/`, `/books/`,
//!   `/invoice/`, `/inventory/`, `/mail/`, `/projects/`, `/people/` and `/workdrive/`, each
//!   answering a dead token (or another data centre's), a missing token and a scope mismatch in
//!   its own dialect. A request with a working token gets a JSON echo (`product`, `method`, `path`, `body_bytes`, and
//!   `body_sha` = [`body_sha`] of the body), so a test can check what reached the API.
//! - `/sim/grant-code` (simulator-only, not Zoho's): a fresh one-time offline grant code as
//!   `text/plain`, for `scope` (comma-separated; default [`DEFAULT_SCOPES`]) and without a
//!   redirect URI, as a Self Client's "Generate Code" makes one, so that a simulator running in
//!   another process (`cargo run --example simulator`) can hand codes to a script or the CLI:
//!   `zoho-auth exchange --code "$(curl -s <url>/sim/grant-code)"`. The in-process equivalent
//!   is [`Simulator::issue_grant_code`]. The code is of the data centre it is asked at.
//! - `/sim/user-counters` (simulator-only, not Zoho's): given `refresh_token` (query or form),
//!   what the simulator has seen of that user as JSON, the fields of [`UserCounters`]
//!   ([`Simulator::counters_for`] in-process), or 404 for a token it never issued; any data
//!   centre answers for every user. It lets a test see which users another process served.
//!
//! Tests drive the server from outside: [`Simulator::inject`] queues [`Fault`]s for the token
//! endpoint, [`Simulator::invalidate_all_tokens`] kills every access token, and
//! [`Simulator::counters`] tells what happened. Server-side time is [`tokio::time::Instant`], so it
//! follows a paused tokio clock.
//!
//! # Many users in many data centres
//!
//! A Zoho account lives in one data centre, and each DC has its own accounts server and API
//! hosts: a refresh token works only at its DC's token endpoint, and an access token only at its
//! DC's APIs (another DC answers `INVALID_TOKEN`, zoho-wire.md §7). With
//! [`SimulatorBuilder::data_centers`]`(n)` the simulator has `n` of them, so that a test can see a
//! token sent to the wrong user's host. Data centre 0 is the one on `127.0.0.1`, callback
//! `location` `us` ([`SimulatorBuilder::location`]); DC `k` ≥ 1 listens on `127.0.0.<k+1>` on a
//! random port (all of `127.0.0.0/8` is loopback on Linux; macOS needs aliases for it), callback
//! `location` `sim<k>`, which no real DC uses, so that a client cannot mistake it for real Zoho.
//! Each DC's URL ([`Simulator::data_center_url`]) is both its accounts server and the
//! `api_domain` of its tokens. Consent starts at DC 0, as multi-DC consent starts at
//! `accounts.zoho.com`, and the user picks their DC on the page ([`Simulator::accept_consent_in`]
//! in-process). Limits are per refresh token, whatever its DC; [`Simulator::inject`]'s faults go
//! to whichever DC's token endpoint is called next. [`Simulator::counters_in`] tells what one DC
//! saw, and [`Simulator::counters_for`] what one user did, including requests that went to the
//! wrong DC; both cost O(1) per request, however many users there are.
//!
//! ```
//! use zoho_auth::sim::Simulator;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::builder().data_centers(2).start().await?;
//! let http = zoho_auth::accounts::http_client_builder()?.build()?;
//! for dc in 0..2 {
//!     let refresh = sim.mint_refresh_token_in(dc, &[])?;
//!     let home = sim.data_center_url(dc)?;
//!     let answer = http
//!         .post(format!("{home}/oauth/v2/token"))
//!         .form(&[
//!             ("grant_type", "refresh_token"),
//!             ("client_id", sim.client_id().as_str()),
//!             ("client_secret", sim.client_secret().expose()),
//!             ("refresh_token", refresh.expose()),
//!         ])
//!         .send()
//!         .await?
//!         .text()
//!         .await?;
//!     let answer: serde_json::Value = serde_json::from_str(&answer)?;
//!     assert_eq!(answer["api_domain"], home.as_str());
//!     let access = answer["access_token"].as_str().expect("a token");
//!
//!     // Accepted at the user's own DC only.
//!     for api in 0..2 {
//!         let leads = http
//!             .get(format!("{}/crm/v8/Leads", sim.data_center_url(api)?))
//!             .header("Authorization", format!("Zoho-oauthtoken {access}"))
//!             .send()
//!             .await?;
//!         assert_eq!(leads.status() == 200, api == dc);
//!     }
//!     let user = sim.counters_for(&refresh).expect("minted here");
//!     assert_eq!((user.api_ok, user.wrong_dc_api_requests), (1, 1));
//! }
//! assert_eq!(sim.counters_in(1)?.api_token_errors, 1);
//! # Ok(())
//! # }
//! ```

mod accounts;
mod admin;
mod consent;
mod products;
mod state;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, SERVER};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::accounts::AccountsClient;
use crate::{Accounts, ClientId, ClientSecret, GrantCode, RefreshToken, TokenCache};
use state::{Config, Registration, State};

/// The scopes [`Simulator::mint_refresh_token`] grants when given none: one per simulated product.
pub const DEFAULT_SCOPES: &[&str] = &[
    "ZohoCRM.modules.ALL",
    "ZohoCRM.users.READ",
    "ZohoBigin.modules.ALL",
    "Desk.tickets.ALL",
    "ZohoBooks.fullaccess.all",
    "ZohoInvoice.fullaccess.all",
    "ZohoInventory.fullaccess.all",
    "ZohoMail.accounts.READ",
    "ZohoProjects.portals.READ",
    "ZOHOPEOPLE.forms.ALL",
    "WorkDrive.files.ALL",
];

/// The hash the product APIs report as `body_sha`: FNV-1a 64 of the request body, as 16 lowercase
/// hex digits. Cheap and stable, so a test can check that a replayed request carried the same body.
pub fn body_sha(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A misbehaviour of the token endpoint, queued with [`Simulator::inject`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// This status (e.g. 500, 502, 503) with a short HTML body, as a load balancer answers.
    Status(StatusCode),
    /// HTTP 200 with a `text/html` page, as a captive proxy answers.
    Html,
    /// HTTP 200 with an empty body.
    Empty,
    /// HTTP 200 `application/json` that is not JSON.
    MalformedJson,
    /// A success body cut in the middle. No token is minted.
    TruncatedJson,
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// The throttling body, at the configured status and language. Counts as throttled too.
    Throttle,
    /// HTTP 200 `{"error":"<code>"}` with this code.
    Error(String),
    /// Answers normally, but a success comes in the legacy shape
    /// (`"expires_in_sec":3600,"expires_in":3600000`).
    LegacyExpires,
    /// Drops the connection without answering.
    Close,
}

/// The language of Zoho's throttling body, which is localized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Language {
    /// `"error":"Access Denied"`.
    #[default]
    English,
    /// `"error":"拒绝访问"`.
    Chinese,
}

/// What the simulator has seen, as a snapshot from [`Simulator::counters`]. Non-exhaustive: the
/// simulator may count more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Every hit on `/oauth/v2/token`, faults included.
    pub token_requests: u64,
    /// Access tokens minted by the token endpoint.
    pub tokens_issued: u64,
    /// Token requests with `grant_type=refresh_token` that were not answered by a fault,
    /// whatever their outcome.
    pub refresh_grants: u64,
    /// Token requests with `grant_type=authorization_code` that were not answered by a fault.
    pub code_grants: u64,
    /// Token requests with `grant_type=client_credentials` that were not answered by a fault.
    pub client_credentials_grants: u64,
    /// Throttling answers, including those from [`Fault::Throttle`].
    pub throttled: u64,
    /// Token requests answered (or delayed) by an injected [`Fault`].
    pub faults: u64,
    /// Refresh tokens revoked through `/oauth/v2/token/revoke`.
    pub revocations: u64,
    /// Every hit on `/oauth/user/info` or a product API, whatever the answer.
    pub api_requests: u64,
    /// API requests answered with the working-token answer (including 404 for an unknown path).
    pub api_ok: u64,
    /// API requests whose token was dead, expired, evicted, revoked or unknown.
    pub api_token_errors: u64,
    /// API requests without a usable `Authorization` header.
    pub api_no_token: u64,
    /// API requests whose live token lacked a scope for the product.
    pub api_scope_errors: u64,
    /// Consent pages shown by `/oauth/v2/auth`.
    pub consents_shown: u64,
    /// Consent pages answered with Accept.
    pub consents_accepted: u64,
    /// Consent pages answered with Deny.
    pub consents_denied: u64,
    /// HTML error pages from `/oauth/v2/auth` and `/oauth/v2/auth/decision`.
    pub auth_errors: u64,
}

impl Counters {
    /// The field-wise sum. Destructured, so that a new counter cannot be left out.
    fn plus(self, other: Counters) -> Counters {
        let Counters {
            token_requests,
            tokens_issued,
            refresh_grants,
            code_grants,
            client_credentials_grants,
            throttled,
            faults,
            revocations,
            api_requests,
            api_ok,
            api_token_errors,
            api_no_token,
            api_scope_errors,
            consents_shown,
            consents_accepted,
            consents_denied,
            auth_errors,
        } = other;
        Counters {
            token_requests: self.token_requests + token_requests,
            tokens_issued: self.tokens_issued + tokens_issued,
            refresh_grants: self.refresh_grants + refresh_grants,
            code_grants: self.code_grants + code_grants,
            client_credentials_grants: self.client_credentials_grants + client_credentials_grants,
            throttled: self.throttled + throttled,
            faults: self.faults + faults,
            revocations: self.revocations + revocations,
            api_requests: self.api_requests + api_requests,
            api_ok: self.api_ok + api_ok,
            api_token_errors: self.api_token_errors + api_token_errors,
            api_no_token: self.api_no_token + api_no_token,
            api_scope_errors: self.api_scope_errors + api_scope_errors,
            consents_shown: self.consents_shown + consents_shown,
            consents_accepted: self.consents_accepted + consents_accepted,
            consents_denied: self.consents_denied + consents_denied,
            auth_errors: self.auth_errors + auth_errors,
        }
    }
}

/// What the simulator has seen of one user (one refresh token), as a snapshot from
/// [`Simulator::counters_for`]. Non-exhaustive: the simulator may count more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserCounters {
    /// Token requests with `grant_type=refresh_token` naming this refresh token, at any data
    /// centre and whatever their outcome (faults excepted).
    pub refresh_grants: u64,
    /// Those of [`UserCounters::refresh_grants`] made at another data centre than the user's,
    /// which answers `invalid_code`.
    pub wrong_dc_refresh_grants: u64,
    /// Access tokens minted for this user, including the one its code exchange gave.
    pub tokens_issued: u64,
    /// API requests presenting one of this user's access tokens, live or dead, at any data
    /// centre, whatever the answer.
    pub api_requests: u64,
    /// Those of [`UserCounters::api_requests`] that got the working-token answer.
    pub api_ok: u64,
    /// Those of [`UserCounters::api_requests`] sent to another data centre's host than the
    /// user's, which answers as for a dead token (CRM: `INVALID_TOKEN`).
    pub wrong_dc_api_requests: u64,
}

/// A data centre index that the [`Simulator`] does not have: it has
/// [`Simulator::data_center_count`] of them, numbered from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownDataCenter {
    /// The index asked for.
    pub index: usize,
    /// How many data centres the simulator has.
    pub count: usize,
}

impl fmt::Display for UnknownDataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the simulator has no data centre {} (it has {}, numbered from 0)",
            self.index, self.count
        )
    }
}

impl std::error::Error for UnknownDataCenter {}

/// The most data centres a simulator can have: DC `k` listens on `127.0.0.<k+1>`.
pub const MAX_DATA_CENTERS: usize = 254;

/// Configures a [`Simulator`]; every setting defaults to Zoho's documented behaviour.
#[must_use = "a builder does nothing until started"]
pub struct SimulatorBuilder {
    config: Config,
    registration: Registration,
    client_id: String,
    client_secret: String,
    data_centers: usize,
    data_center_secrets: Vec<(usize, String)>,
}

impl fmt::Debug for SimulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorBuilder")
            .field("config", &self.config)
            .field("registration", &self.registration)
            .field("client_id", &self.client_id)
            .field("data_centers", &self.data_centers)
            .finish_non_exhaustive()
    }
}

impl SimulatorBuilder {
    /// The one registered client. Default: a random `1000.<30 hex>` id and a random secret, so a
    /// request meant for another simulator gets `invalid_client`, as at the wrong data centre.
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// How long access tokens live (default 1 hour). `expires_in` reports it in whole seconds.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.token_lifetime = lifetime;
        self
    }

    /// A delay before every answer from the accounts server (default none).
    pub fn token_latency(mut self, latency: Duration) -> Self {
        self.config.token_latency = latency;
        self
    }

    /// A delay before every product API answer (default none).
    pub fn api_latency(mut self, latency: Duration) -> Self {
        self.config.api_latency = latency;
        self
    }

    /// At most `count` access tokens per grant within any sliding `window` (default 10 per
    /// 600 s); the next request gets the throttling body.
    pub fn rate_limit(mut self, count: usize, window: Duration) -> Self {
        self.config.rate_limit = count;
        self.config.rate_window = window;
        self
    }

    /// At most this many live access tokens per grant (default 15); minting one more silently
    /// kills the oldest.
    pub fn max_live_tokens(mut self, max: usize) -> Self {
        self.config.max_live_tokens = max;
        self
    }

    /// How long a grant code can be exchanged (default 120 s).
    pub fn grant_code_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.grant_code_lifetime = lifetime;
        self
    }

    /// The HTTP status of the throttling body (default 200; Zoho has also been seen using 400).
    pub fn throttle_status(mut self, status: StatusCode) -> Self {
        self.config.throttle_status = status;
        self
    }

    /// The language of the throttling body (default English).
    pub fn throttle_language(mut self, language: Language) -> Self {
        self.config.throttle_language = language;
        self
    }

    /// Answer every success in the legacy shape, `"expires_in_sec":3600,"expires_in":3600000`
    /// (default off: today's `"expires_in":3600`).
    pub fn legacy_expires(mut self, legacy: bool) -> Self {
        self.config.legacy_expires = legacy;
        self
    }

    /// Registers a redirect URI for the consent flow; call it once per URI. Zoho matches the
    /// `redirect_uri` of an authorization request exactly, so `https://app/cb/` is not
    /// `https://app/cb`. Default: none, so every authorization request gets the error page.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.registration.redirect_uris.push(uri.into());
        self
    }

    /// The `location` the consent callback names when the user picks data centre 0 (default
    /// `us`). The other data centres' are `sim1`, `sim2`, ...
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.registration.location = location.into();
        self
    }

    /// The `accounts-server` every consent callback names (default: the URL of the data centre
    /// the user picked), e.g. a forged one, to test that a client refuses to send its secret
    /// there.
    pub fn accounts_server(mut self, url: impl Into<String>) -> Self {
        self.registration.accounts_server = Some(url.into());
        self
    }

    /// Gives data centre `dc` a client secret of its own, as a multi-DC client may have in each of
    /// Zoho's: its token endpoint then answers `invalid_client` to the client's other secret, as
    /// Zoho does to a client using another data centre's (`zoho-wire.md` §2), and
    /// `invalid_client_secret` to any other. A `dc` the simulator does not have is ignored.
    pub fn data_center_secret(mut self, dc: usize, secret: impl Into<String>) -> Self {
        self.data_center_secrets.retain(|(known, _)| *known != dc);
        self.data_center_secrets.push((dc, secret.into()));
        self
    }

    /// How many data centres to simulate (default 1), each with its own users, accounts server
    /// and API host; see "Many users in many data centres" in the [module docs](self). At most
    /// [`MAX_DATA_CENTERS`].
    pub fn data_centers(mut self, count: usize) -> Self {
        self.data_centers = count;
        self
    }

    /// Binds `127.0.0.1` on a random port, and `127.0.0.<k+1>` on another for each further data
    /// centre `k`, and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when [`SimulatorBuilder::data_centers`] is 0 or above
    /// [`MAX_DATA_CENTERS`]; otherwise when an address cannot be bound (e.g. no loopback
    /// interface, `127.0.0.2` not loopback as on macOS by default, no file descriptors left),
    /// with the address in the message.
    pub async fn start(self) -> std::io::Result<Simulator> {
        if !(1..=MAX_DATA_CENTERS).contains(&self.data_centers) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "a simulator has 1 to {MAX_DATA_CENTERS} data centres, not {}",
                    self.data_centers
                ),
            ));
        }
        let mut listeners = Vec::with_capacity(self.data_centers);
        for dc in 0..self.data_centers {
            // Fits a `u8`: `dc` < MAX_DATA_CENTERS = 254.
            let ip = Ipv4Addr::new(127, 0, 0, (dc + 1) as u8);
            let listener = listen(ip).map_err(|err| {
                std::io::Error::new(
                    err.kind(),
                    format!("simulated data centre {dc}: cannot bind {ip}: {err}"),
                )
            })?;
            listeners.push(listener);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut state = State::new(
            self.config,
            self.registration,
            self.client_id,
            self.client_secret,
            addrs.iter().copied().map(url_of).collect(),
        );
        state.data_center_secrets = self.data_center_secrets.into_iter().collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        });
        let servers = listeners
            .into_iter()
            .enumerate()
            .map(|(dc, listener)| tokio::spawn(serve(listener, Arc::clone(&shared), dc)))
            .collect();
        Ok(Simulator {
            shared,
            addrs,
            servers,
        })
    }
}

/// A running Zoho simulator. Dropping it stops the servers and closes their connections.
pub struct Simulator {
    shared: Arc<Shared>,
    /// Each data centre's listening address, by index.
    addrs: Vec<SocketAddr>,
    /// Each data centre's accept loop, by index.
    servers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.addrs.iter().copied().map(url_of).collect();
        f.debug_struct("Simulator")
            .field("urls", &urls)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Aborting an accept loop drops its `JoinSet`, which aborts every connection too.
        for server in &self.servers {
            server.abort();
        }
    }
}

impl Simulator {
    /// A builder with Zoho's defaults.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder {
            config: Config::default(),
            registration: Registration::default(),
            client_id: format!("1000.{:030X}", fastrand::u128(..) >> 8),
            client_secret: format!(
                "{:032x}{:010x}",
                fastrand::u128(..),
                fastrand::u64(..) >> 24
            ),
            data_centers: 1,
            data_center_secrets: Vec::new(),
        }
    }

    /// Starts a simulator with Zoho's defaults.
    ///
    /// # Errors
    ///
    /// As [`SimulatorBuilder::start`].
    pub async fn start() -> std::io::Result<Simulator> {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:<port>`: both the accounts server URL and the `api_domain` of data
    /// centre 0.
    pub fn url(&self) -> String {
        self.shared.lock().url(0).to_owned()
    }

    /// How many data centres this simulator has ([`SimulatorBuilder::data_centers`]).
    pub fn data_center_count(&self) -> usize {
        self.addrs.len()
    }

    /// `http://127.0.0.<dc+1>:<port>`: both the accounts server URL and the `api_domain` of
    /// data centre `dc`. `data_center_url(0)` is [`Simulator::url`].
    ///
    /// # Errors
    ///
    /// When the simulator has no data centre `dc`.
    pub fn data_center_url(&self, dc: usize) -> Result<String, UnknownDataCenter> {
        let dc = self.data_center(dc)?;
        Ok(self.shared.lock().url(dc).to_owned())
    }

    /// The `location` a consent callback names for data centre `dc`: DC 0's
    /// ([`SimulatorBuilder::location`], default `us`), else `sim<dc>`.
    ///
    /// # Errors
    ///
    /// When the simulator has no data centre `dc`.
    pub fn data_center_location(&self, dc: usize) -> Result<String, UnknownDataCenter> {
        let dc = self.data_center(dc)?;
        Ok(self.shared.lock().location(dc))
    }

    /// `dc` if this simulator has that data centre.
    fn data_center(&self, dc: usize) -> Result<usize, UnknownDataCenter> {
        let count = self.data_center_count();
        if dc < count {
            Ok(dc)
        } else {
            Err(UnknownDataCenter { index: dc, count })
        }
    }

    /// An accounts client for this simulator with its registered client: what
    /// `AccountsClient::new(DataCenter::Eu, id, secret)` is for Zoho.
    pub fn accounts_client(&self) -> Result<AccountsClient, crate::Error> {
        AccountsClient::new(
            Accounts::custom(&self.url())?,
            self.client_id(),
            self.client_secret(),
        )
    }

    /// A token cache on this simulator, minting from a fresh refresh token with every scope: what
    /// a test of your own code hands to a `ZohoClient` or a `ZohoAuthLayer`.
    pub fn token_cache(&self) -> Result<TokenCache, crate::Error> {
        Ok(TokenCache::new(
            self.accounts_client()?,
            self.mint_refresh_token(&[]),
        ))
    }

    /// The address data centre 0 listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The registered client's id.
    pub fn client_id(&self) -> ClientId {
        ClientId::new(self.shared.lock().client_id.clone())
    }

    /// The registered client's secret.
    pub fn client_secret(&self) -> ClientSecret {
        ClientSecret::new(self.shared.lock().client_secret.clone())
    }

    /// A refresh token of data centre 0, as if its user had consented with
    /// `access_type=offline` to `scopes` (or to [`DEFAULT_SCOPES`] when empty).
    pub fn mint_refresh_token(&self, scopes: &[&str]) -> RefreshToken {
        self.mint_in(0, scopes)
    }

    /// As [`Simulator::mint_refresh_token`], for a user of data centre `dc`: the token works
    /// only at that DC's token endpoint, and its access tokens only at that DC's APIs.
    ///
    /// # Errors
    ///
    /// When the simulator has no data centre `dc`.
    pub fn mint_refresh_token_in(
        &self,
        dc: usize,
        scopes: &[&str],
    ) -> Result<RefreshToken, UnknownDataCenter> {
        Ok(self.mint_in(self.data_center(dc)?, scopes))
    }

    fn mint_in(&self, dc: usize, scopes: &[&str]) -> RefreshToken {
        RefreshToken::new(self.shared.lock().add_refresh_token(dc, scope_list(scopes)))
    }

    /// A one-time grant code of data centre 0 for `scopes` (or [`DEFAULT_SCOPES`] when empty),
    /// as the consent redirect would deliver it. Its exchange yields a refresh token only when
    /// `offline`, and must name the same `redirect_uri` when one is given here. It expires after
    /// the builder's `grant_code_lifetime`.
    pub fn issue_grant_code(
        &self,
        scopes: &[&str],
        offline: bool,
        redirect_uri: Option<&str>,
    ) -> GrantCode {
        self.issue_in(0, scopes, offline, redirect_uri)
    }

    /// As [`Simulator::issue_grant_code`], for a user of data centre `dc`: only that DC's token
    /// endpoint exchanges the code.
    ///
    /// # Errors
    ///
    /// When the simulator has no data centre `dc`.
    pub fn issue_grant_code_in(
        &self,
        dc: usize,
        scopes: &[&str],
        offline: bool,
        redirect_uri: Option<&str>,
    ) -> Result<GrantCode, UnknownDataCenter> {
        Ok(self.issue_in(self.data_center(dc)?, scopes, offline, redirect_uri))
    }

    fn issue_in(
        &self,
        dc: usize,
        scopes: &[&str],
        offline: bool,
        redirect_uri: Option<&str>,
    ) -> GrantCode {
        let code = self.shared.lock().add_code(
            dc,
            scope_list(scopes),
            offline,
            redirect_uri.map(str::to_owned),
            None,
        );
        GrantCode::new(code)
    }

    /// Registers one more redirect URI, as [`SimulatorBuilder::redirect_uri`] does; for a test
    /// whose callback server's port is known only after the simulator started.
    pub fn register_redirect_uri(&self, uri: impl Into<String>) {
        self.shared
            .lock()
            .registration
            .redirect_uris
            .push(uri.into());
    }

    /// The authorization endpoint of data centre 0, `{url}/oauth/v2/auth`, without parameters:
    /// where multi-DC consent starts, as at `accounts.zoho.com`.
    pub fn authorize_url(&self) -> String {
        format!("{}{}", self.url(), consent::AUTHORIZE_PATH)
    }

    /// Does what a user does in a browser: opens `authorize_url` (a full authorization request
    /// for this simulator's [`Simulator::authorize_url`], or another data centre's), clicks
    /// Accept, and returns the redirect's `Location` (the client's callback with `state`, `code`,
    /// `location` and `accounts-server`) without following it. For tests and CLIs that have no
    /// browser. The user is of the data centre whose page it is; see
    /// [`Simulator::accept_consent_in`] to pick another.
    ///
    /// It runs in-process, with the same checks and counters as the HTTP routes but without
    /// their latency, so it works from synchronous code and on a current-thread runtime, where
    /// a blocking HTTP request to this server could never be answered.
    ///
    /// # Errors
    ///
    /// When `authorize_url` is not this simulator's authorization endpoint, or the request
    /// would get the HTML error page (e.g. `Invalid Client ID`, `Invalid Redirect Uri`): the
    /// error is that page's message.
    pub fn accept_consent(&self, authorize_url: &str) -> Result<String, String> {
        consent::click(&self.shared, authorize_url, "accept", None)
    }

    /// As [`Simulator::accept_consent`], but the user picks data centre `dc` on the consent
    /// page: the callback names `dc`'s `location` and URL, and only `dc` exchanges the code.
    ///
    /// # Errors
    ///
    /// As [`Simulator::accept_consent`], and when the simulator has no data centre `dc`.
    pub fn accept_consent_in(&self, authorize_url: &str, dc: usize) -> Result<String, String> {
        let dc = self.data_center(dc).map_err(|err| err.to_string())?;
        consent::click(&self.shared, authorize_url, "accept", Some(dc))
    }

    /// As [`Simulator::accept_consent`], but clicks Deny: the `Location` carries
    /// `error=access_denied` and `state`.
    ///
    /// # Errors
    ///
    /// As [`Simulator::accept_consent`].
    pub fn deny_consent(&self, authorize_url: &str) -> Result<String, String> {
        consent::click(&self.shared, authorize_url, "deny", None)
    }

    /// Kills every live access token now, as a server-side invalidation would.
    pub fn invalidate_all_tokens(&self) {
        self.shared.lock().invalidate_all();
    }

    /// Kills the live access tokens of one user (one refresh token), as Zoho does to that user's
    /// tokens when, say, a 16th is minted elsewhere; the refresh token stays valid.
    pub fn invalidate_tokens_of(&self, refresh: &RefreshToken) {
        self.shared.lock().invalidate_tokens_of(refresh.expose());
    }

    /// Revokes a refresh token (of any data centre) and its access tokens, as the user removing
    /// the app would.
    pub fn revoke_refresh_token(&self, token: &RefreshToken) {
        self.shared.lock().revoke(None, token.expose());
    }

    /// The next `times` calls to `/oauth/v2/token`, at any data centre, get `fault`, after any
    /// faults already queued.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.shared.lock().inject(fault, times);
    }

    /// Forgets every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().clear_faults();
    }

    /// A snapshot of the counters, summed over every data centre.
    pub fn counters(&self) -> Counters {
        self.shared.lock().total_counters()
    }

    /// The most token requests that were being answered at once, across every data centre: what
    /// a cap on a client's token requests in flight must keep down.
    pub fn max_token_requests_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// A snapshot of what data centre `dc`'s server (its accounts server and APIs) has seen.
    ///
    /// # Errors
    ///
    /// When the simulator has no data centre `dc`.
    pub fn counters_in(&self, dc: usize) -> Result<Counters, UnknownDataCenter> {
        let dc = self.data_center(dc)?;
        Ok(*self.shared.lock().counters(dc))
    }

    /// A snapshot of what the simulator has seen of the user behind `refresh`, at every data
    /// centre; `None` for a refresh token it never issued. A revoked token keeps its counters.
    pub fn counters_for(&self, refresh: &RefreshToken) -> Option<UserCounters> {
        self.shared.lock().user_counters(refresh.expose())
    }

    /// How many access tokens minted from `refresh` still work.
    pub fn live_tokens(&self, refresh: &RefreshToken) -> usize {
        self.shared.lock().live_count(refresh.expose())
    }

    /// Whether the product APIs would accept this access token now.
    pub fn is_access_token_live(&self, token: &str) -> bool {
        self.shared.lock().live_scopes(token).is_some()
    }

    /// The lifetime of access tokens minted from now on; live ones keep theirs.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().config.token_lifetime = lifetime;
    }

    /// The delay before every product API answer from now on.
    pub fn set_api_latency(&self, latency: Duration) {
        self.shared.lock().config.api_latency = latency;
    }

    /// The delay before every accounts server answer from now on.
    pub fn set_token_latency(&self, latency: Duration) {
        self.shared.lock().config.token_latency = latency;
    }
}

/// What the server tasks and the handle share.
struct Shared {
    state: Mutex<State>,
    /// Token requests being answered now, at every data centre, and the most there ever were.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// Counts one token request as in flight until dropped, whichever way its answer ends.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn token_request_started(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    /// Locks the state. Never held across an `.await`. A panic while it was held cannot leave
    /// it half-updated in a way that matters to a test double, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How many connections the kernel holds for each listener until it is accepted: a fleet test's
/// processes open 1,600 at once (the kernel caps it at `net.core.somaxconn`, 4,096 by default).
/// Beyond the backlog (tokio's `bind` asks for 1,024), Linux drops the handshake's last ACK; the
/// client believes it is connected and sends, and minutes later its request fails with a reset.
const BACKLOG: u32 = 4096;

/// A listener on a free port of `ip`, with [`BACKLOG`].
fn listen(ip: Ipv4Addr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.listen(BACKLOG)
}

/// A data centre's URL: its accounts server and `api_domain`.
fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn scope_list(scopes: &[&str]) -> Vec<String> {
    let scopes = if scopes.is_empty() {
        DEFAULT_SCOPES
    } else {
        scopes
    };
    scopes.iter().map(|&s| s.to_owned()).collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a route answers; an `Err` drops the connection without a response.
type Answer = Result<Response<Full<Bytes>>, BoxError>;

/// Data centre `dc`'s accept loop.
async fn serve(listener: TcpListener, shared: Arc<Shared>, dc: usize) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared), dc));
                }
                // Typically out of file descriptors: wait for some to be released.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, dc: usize) {
    // Answers are small and written at once; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| route(Arc::clone(&shared), dc, request));
    // The connection ends with an error when the client hangs up mid-request or a route drops
    // it on purpose (`Fault::Close`); either way there is nobody to tell.
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Every data centre serves every route; each handler is told which DC it serves.
async fn route(shared: Arc<Shared>, dc: usize, request: Request<Incoming>) -> Answer {
    match request.uri().path() {
        "/oauth/v2/token" => accounts::token(&shared, dc, request).await,
        "/oauth/v2/token/revoke" => accounts::revoke(&shared, dc, request).await,
        consent::AUTHORIZE_PATH => consent::authorize(&shared, dc, request).await,
        consent::DECISION_PATH => consent::decide(&shared, dc, request).await,
        admin::GRANT_CODE_PATH => admin::grant_code(&shared, dc, request).await,
        admin::USER_COUNTERS_PATH => admin::user_counters(&shared, request).await,
        _ => products::api(&shared, dc, request).await,
    }
}

/// Sleeps, skipping the timer entirely for the usual zero latency.
async fn delay(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const JSON: &str = "application/json;charset=UTF-8";
const HTML: &str = "text/html;charset=UTF-8";

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, JSON, body)
}

/// An accounts-server answer: JSON with Zoho's `Server: ZGS` header.
fn zgs(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = json(status, body);
    response
        .headers_mut()
        .insert(SERVER, HeaderValue::from_static("ZGS"));
    response
}
