//! "Connect Zoho" for axum apps (feature `axum`): a router with the two routes of Zoho's
//! authorization-code flow, built on a [`Connector`], and two to disconnect and to see the
//! connection. [`ConnectZoho::new`] keeps one Zoho account for the whole app, in the connector's
//! store; [`ConnectZoho::for_connections`] one per user of the app, each in its own record of a
//! [`ConnectionStore`] (see [Many users](#many-users)).
//!
//! - **`GET /connect`** answers `303 See Other` to Zoho's consent page. The `state` and PKCE
//!   verifier it sent ride in a cookie: `HttpOnly`, `SameSite=Lax` (Zoho's redirect back is a
//!   top-level navigation, which carries it), ten minutes. Its name is [`PENDING_COOKIE`] followed
//!   by the router's mount point as the redirect URI shows it (`zoho_auth_pending-zoho` for
//!   `.../zoho/callback`), so that two routers on one host keep their sign-ins apart. With an
//!   `https` redirect URI it is `Secure` and named with the `__Host-` prefix
//!   (`__Host-zoho_auth_pending-zoho`), which browsers accept only from this very host, over
//!   `https`, with `Path=/` and no `Domain`: a sibling subdomain, which may set cookies for the
//!   whole parent domain, cannot plant a sign-in of its own making. Only on plain `http` to a
//!   loopback host (a development machine) does it go without both. `Path=/` either way: the
//!   prefix requires it, and the name already keeps each router to its own cookie.
//! - **`GET /callback`** — the connector's redirect URI must point at it — checks Zoho's answer
//!   against that cookie, exchanges the code at the accounts server the callback names (only if it
//!   is Zoho's, or one of the connector's custom ones: a forged `accounts-server` never receives
//!   the client secret), saves the tokens in the connector's [`TokenStore`] (or the request's
//!   connection's record) and shows the outcome as a small HTML page. A success shows the data centre, the API domain,
//!   the scopes and the access token's expiry — never a token — and warns when Zoho sent no
//!   refresh token. A failure explains what happened (access denied, a `state` that does not
//!   match, an untrusted accounts server, an expired code, Zoho unreachable, ...) with status 400
//!   for a callback that cannot be used, 502 when Zoho failed, 500 when the store did; nothing is
//!   stored then. Either way the cookie is cleared: a `state` is good for one callback.
//! - **`POST /disconnect`** revokes the refresh token at the accounts server that issued it and
//!   forgets the account, then answers `303 See Other` to [`home`](ConnectZoho::home). Zoho
//!   refusing the revocation (a token it no longer knows) still forgets it; Zoho unreachable keeps
//!   it (`502`), to try again. Only `POST`, and only from the app's own pages: the request must
//!   carry `Sec-Fetch-Site: same-origin`, or — from browsers that send no `Sec-Fetch-Site` —
//!   an `Origin` equal to the redirect URI's; anything else (another site's form, a sibling
//!   subdomain's script, a request with neither header) is `403`. The session cookie alone is no
//!   defence: it is the app's, may well be `SameSite=None`, and even `Lax` ones ride along on a
//!   `POST` from a sibling subdomain (same-site). A token in the form would need the app to put
//!   it in its pages; these headers the browser sets, and no page can.
//! - **`GET /status`** answers JSON, never a token: `{"connection": "alice", "status":
//!   "connected", "data_center": "eu", "accounts_server": "https://accounts.zoho.eu",
//!   "api_domain": "https://www.zohoapis.eu", "scopes": [...], "access_token_expires_at":
//!   1767225600, "renewable": true}` (`data_center` is `null` for a custom accounts server,
//!   `access_token_expires_at` — Unix seconds — when no access token is live, `connection` for
//!   the single store). `status` is `connected`, `needs re-consent` (with Zoho's error `code`,
//!   e.g. `invalid_code`: the refresh token was revoked), or `not connected` (with no other
//!   field).
//!
//! For scripts and browser tests, the pages' `<main id="outcome">` carries
//! `data-outcome="connected"` or `data-outcome="error"` with a `data-reason`: `denied`,
//! `state-mismatch`, `untrusted-accounts-server`, `code-rejected`, `no-cookie`, `bad-cookie`,
//! `no-code`, `zoho-error`, `client-rejected`, `zoho-refused`, `zoho-unavailable`,
//! `store-failed`, `start-failed`, and for the routes below `not-signed-in`, `other-connection`,
//! `cross-site` and `revoke-failed`.
//!
//! ```no_run
//! use zoho_auth::authorize::Connector;
//! use zoho_auth::axum::ConnectZoho;
//! use zoho_auth::{store, ClientId, ClientSecret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connector = Connector::new(
//!     ClientId::new("1000.ABC"),
//!     ClientSecret::new(std::env::var("ZOHO_CLIENT_SECRET")?),
//!     "https://app.example.com/zoho/callback",
//! )
//! .scopes(["ZohoCRM.users.READ"])
//! .store(store::open("file:/var/lib/app/zoho-tokens.json")?);
//!
//! let connect = ConnectZoho::new(connector)
//!     .home("/")
//!     .on_connected(|connected| println!("Zoho connected with scopes {:?}", connected.scopes));
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "open /zoho/connect" }))
//!     .nest("/zoho", connect.into_router());
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
//! # Ok(()) }
//! ```
//!
//! **Who may connect.** With [`ConnectZoho::new`], whoever reaches `/connect` and consents
//! replaces the account the store holds, which the whole app then acts as (and whoever reaches
//! `/disconnect` removes it). Mount the router behind the app's own authentication, so that only
//! its administrators can — or give each user their own connection, below.
//!
//! **Binding a sign-in to the app's session.** [`ConnectZoho::for_connections`] does this
//! itself. With [`ConnectZoho::new`], the cookie ties a callback to the browser that
//! started the sign-in, not to the person signed in to the app in it. To tie it to the app's own
//! session (so that a callback completes only in the session that started it, and not after a
//! sign-out or a change of user), wrap the router in a middleware that marks the session when
//! `/connect` answers and requires, then clears, that mark on `/callback`:
//!
//! ```no_run
//! use axum::extract::Request;
//! use axum::middleware::{self, Next};
//! use axum::response::{IntoResponse, Response};
//! use http::StatusCode;
//! # use zoho_auth::axum::ConnectZoho;
//! # #[derive(Clone)]
//! # struct Session;
//! # impl Session {
//! #     fn set(&self, _: &str) {}
//! #     fn take(&self, _: &str) -> bool { true }
//! # }
//! // `Session` stands for the app's own sessions (tower-sessions, a signed cookie, ...), put in the
//! // request's extensions by the app's authentication layer, which only lets administrators by.
//!
//! async fn bound_to_session(request: Request, next: Next) -> Response {
//!     let Some(session) = request.extensions().get::<Session>().cloned() else {
//!         return StatusCode::UNAUTHORIZED.into_response();
//!     };
//!     let path = request.uri().path().to_owned();
//!     if path.ends_with("/callback") && !session.take("zoho-connect-started") {
//!         return StatusCode::FORBIDDEN.into_response();
//!     }
//!     let response = next.run(request).await;
//!     if path.ends_with("/connect") && response.status() == StatusCode::SEE_OTHER {
//!         session.set("zoho-connect-started");
//!     }
//!     response
//! }
//!
//! # fn app(connect: ConnectZoho) -> axum::Router {
//! axum::Router::new().nest(
//!     "/zoho",
//!     connect.into_router().layer(middleware::from_fn(bound_to_session)),
//! )
//! # }
//! ```
//!
//! One sign-in per browser at a time: a second `/connect` (another tab) replaces the cookie, and
//! the first tab's callback is then refused as not matching.
//!
//! # Many users
//!
//! [`ConnectZoho::for_connections`] gives every user of the app a Zoho account of their own: it
//! takes a function that names the request's [`ConnectionId`] — typically read from an
//! extension the app's authentication layer set — and every route works on that connection's
//! record only. A request it names none for gets `401` (`not-signed-in`) and starts, completes
//! or removes nothing.
//!
//! The sign-in cookie is bound to the connection: besides the `state` and verifier it holds a
//! SHA-256 of the state and the connection id (so the id itself, an email address say, is not in
//! the cookie), and a callback completes only if the request's connection hashes to the same,
//! compared in constant time — checked before the code is exchanged. A sign-in started by Alice
//! and replayed in Bob's session (a shared computer, a copied cookie, a sign-out between) is
//! refused with `403` (`other-connection`): it lands in neither account. A sign-in started for
//! the single store completes in no connection, nor the other way round.
//!
//! Zoho's callback names the user's data centre. The connector accepts Zoho's own accounts
//! servers, and custom ones only by name: [`Connector::accounts`] and
//! [`Connector::also_accept`] (a simulator's other data centres, say). Requests then use each
//! user's tokens through [`ZohoAuthLayer::connections`](crate::ZohoAuthLayer::connections) with
//! the user's `ConnectionId` in the request's extensions, refreshing at, and calling, that
//! user's own data centre.
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::body::Body;
//! use axum::extract::Request;
//! use axum::middleware::{self, Next};
//! use axum::response::Response;
//! use axum::Router;
//! use http::StatusCode;
//! use tower::ServiceExt;
//! use zoho_auth::authorize::Connector;
//! use zoho_auth::axum::ConnectZoho;
//! use zoho_auth::store::{ConnectionStore, MemoryConnections};
//! use zoho_auth::{ClientId, ClientSecret, ConnectionId};
//!
//! /// Stands for the app's authentication layer: puts the signed-in user's id in the request.
//! async fn signed_in(mut request: Request, next: Next) -> Response {
//!     let user = request.headers().get("x-demo-user").and_then(|v| v.to_str().ok());
//!     if let Some(id) = user.and_then(|user| ConnectionId::new(user).ok()) {
//!         request.extensions_mut().insert(id);
//!     }
//!     next.run(request).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let connector = Connector::new(
//!     ClientId::new("1000.ABC"),
//!     ClientSecret::new("secret"),
//!     "https://app.example.com/zoho/callback",
//! )
//! .scopes(["ZohoCRM.users.READ"]);
//! // Or `store::open_connections("file:/var/lib/app/zoho-tokens.json")?`.
//! let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
//! let connect = ConnectZoho::for_connections(connector, store.clone(), |parts| {
//!     parts.extensions.get::<ConnectionId>().cloned()
//! });
//! let app: Router = Router::new()
//!     .nest("/zoho", connect.into_router())
//!     .layer(middleware::from_fn(signed_in));
//!
//! let alice = Request::get("/zoho/connect").header("x-demo-user", "alice");
//! let response = app.clone().oneshot(alice.body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::SEE_OTHER, "off to Zoho's consent page");
//!
//! let anonymous = Request::get("/zoho/connect").body(Body::empty())?;
//! let response = app.clone().oneshot(anonymous).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//!
//! let status = Request::get("/zoho/status").header("x-demo-user", "alice");
//! let response = app.oneshot(status.body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK); // {"connection":"alice","status":"not connected"}
//!
//! // The app's calls to Zoho, each with the user's id in the request's extensions:
//! // `ZohoAuthLayer::connections(Connections::builder(accounts_client, store).build()?)`.
//! # Ok(()) }
//! ```

use html_escape::encode_quoted_attribute as escape;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::axum::body::Body;
use ::axum::extract::State;
use ::axum::response::Response;
use ::axum::routing::{get, post};
use ::axum::Router;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN,
    REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::authorize::{Callback, Connected, Connector, PendingAuthorization};
use crate::connections::ConnectionId;
use crate::dc::{Accounts, DataCenter};
use crate::error::Error;
use crate::hosts::is_loopback_host;
use crate::store::{ConnectionStore, TokenSet, TokenStore};

/// The start of the name of the cookie that carries a pending sign-in's `state` and PKCE verifier
/// from `/connect` to `/callback`; the [module docs](self) say how the rest is made.
pub const PENDING_COOKIE: &str = "zoho_auth_pending";

/// How long a sign-in may take, consent page included.
const PENDING_MAX_AGE: Duration = Duration::from_secs(600);

type ConnectedHook = Arc<dyn Fn(&Connected) + Send + Sync>;

/// How the app names a request's connection.
type Identify = dyn Fn(&Parts) -> Option<ConnectionId> + Send + Sync;

/// Where the routes keep tokens.
#[derive(Clone)]
enum Records {
    /// The connector's own store: one account for the whole app.
    Single,
    /// One record per connection; `identify` names the request's.
    Many {
        store: Arc<dyn ConnectionStore>,
        identify: Arc<Identify>,
    },
}

/// Configures the "Connect Zoho" router; [`into_router`](Self::into_router) builds it.
#[derive(Clone)]
#[must_use = "a builder does nothing until `into_router` is called"]
pub struct ConnectZoho {
    connector: Connector,
    records: Records,
    home: String,
    on_connected: Option<ConnectedHook>,
}

impl fmt::Debug for ConnectZoho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &self.records {
            Records::Single => None,
            Records::Many { store, .. } => Some(store),
        };
        f.debug_struct("ConnectZoho")
            .field("connector", &self.connector)
            .field("connections", &store)
            .field("home", &self.home)
            .field("on_connected", &self.on_connected.is_some())
            .finish()
    }
}

impl ConnectZoho {
    /// The flow for `connector`, whose redirect URI must be where the router's `/callback` is
    /// served (`https://app.example.com/zoho/callback` for a router nested at `/zoho`). Tokens
    /// go to the connector's store: one Zoho account for the whole app.
    pub fn new(connector: Connector) -> Self {
        Self {
            connector,
            records: Records::Single,
            home: "/".to_owned(),
            on_connected: None,
        }
    }

    /// The flow for many users, each connecting a Zoho account of their own: every route works
    /// on the record in `store` of the connection `connection` names for the request — from the
    /// app's session, typically an extension its authentication layer put in `parts`. A request
    /// it names none for is answered `401 Unauthorized`, and starts nothing. The connector's own
    /// store is not used.
    ///
    /// The sign-in cookie is bound to the connection (see the [module docs](self)): a callback
    /// completes only in a request for the connection that started it.
    pub fn for_connections(
        connector: Connector,
        store: Arc<dyn ConnectionStore>,
        connection: impl Fn(&Parts) -> Option<ConnectionId> + Send + Sync + 'static,
    ) -> Self {
        Self {
            records: Records::Many {
                store,
                identify: Arc::new(connection),
            },
            ..Self::new(connector)
        }
    }

    /// Where the outcome pages' "Continue" and "Back to the app" links lead (default `/`).
    pub fn home(mut self, href: impl Into<String>) -> Self {
        self.home = href.into();
        self
    }

    /// Called after the tokens of a new connection were saved, before the success page is sent:
    /// the place to (re)build the app's Zoho clients, which may now need another accounts server.
    /// It runs in the callback's request: spawn a task for anything slow.
    pub fn on_connected(mut self, hook: impl Fn(&Connected) + Send + Sync + 'static) -> Self {
        self.on_connected = Some(Arc::new(hook));
        self
    }

    /// The router with `GET /connect`, `GET /callback`, `POST /disconnect` and `GET /status`,
    /// to [`nest`](Router::nest) in the app's router (or [`merge`](Router::merge) at its root).
    pub fn into_router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let redirect_uri = self.connector.redirect_uri();
        let cookie = PendingCookie::new(redirect_uri);
        // Only a tuple origin: an opaque one serializes as `null`, which is what a sandboxed
        // frame sends as its `Origin`.
        let origin = url::Url::parse(redirect_uri)
            .ok()
            .map(|url| url.origin())
            .filter(url::Origin::is_tuple)
            .map(|origin| origin.ascii_serialization());
        let flow = Arc::new(Flow {
            connector: self.connector,
            records: self.records,
            home: self.home,
            on_connected: self.on_connected,
            cookie,
            origin,
        });
        Router::new()
            .route("/connect", get(connect))
            .route("/callback", get(callback))
            .route("/disconnect", post(disconnect))
            .route("/status", get(status))
            .with_state(flow)
    }
}

/// `ConnectZoho::new(connector).into_router()`: the router with the default settings.
pub fn router<S>(connector: Connector) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    ConnectZoho::new(connector).into_router()
}

/// What the routes share.
struct Flow {
    connector: Connector,
    records: Records,
    home: String,
    on_connected: Option<ConnectedHook>,
    cookie: PendingCookie,
    /// The app's origin as browsers send it, from the redirect URI.
    origin: Option<String>,
}

/// The record a request works on.
enum Target {
    Single(Arc<dyn TokenStore>),
    Connection {
        store: Arc<dyn ConnectionStore>,
        id: ConnectionId,
    },
}

impl Target {
    fn id(&self) -> Option<&ConnectionId> {
        match self {
            Target::Single(_) => None,
            Target::Connection { id, .. } => Some(id),
        }
    }

    fn record(&self) -> Arc<dyn TokenStore> {
        match self {
            Target::Single(store) => store.clone(),
            Target::Connection { store, id } => store.connection(id),
        }
    }

    /// Forgets the account that held `revoked`: the connection's record goes; the single store
    /// keeps only its token-request history, which the fleet-wide budget counts. A record that
    /// holds another refresh token by now (a consent that landed meanwhile) stays.
    async fn forget(&self, revoked: Option<&crate::RefreshToken>) -> Result<(), Error> {
        match self {
            Target::Single(store) => {
                store
                    .update(None, |set| {
                        if set.refresh_token.as_ref() == revoked {
                            set.refresh_token = None;
                            set.accounts_url = None;
                            set.access = None;
                            set.failure = None;
                            set.retry = None;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Target::Connection { store, id } => {
                crate::store::remove_holding(&**store, id, revoked).await?;
            }
        }
        Ok(())
    }
}

/// The pending cookie's name and attributes, fixed by the connector's redirect URI.
struct PendingCookie {
    name: String,
    secure: bool,
}

impl PendingCookie {
    fn new(redirect_uri: &str) -> Self {
        let secure = !is_plain_http_on_loopback(redirect_uri);
        // `__Host-` (which keeps sibling subdomains from planting the cookie) requires `Path=/`,
        // so the name carries the mount point instead: routers mounted apart do not overwrite
        // each other's cookie. The callback's directory is the mount point as the browser sees
        // it, behind a proxy that rewrites paths too.
        let suffix: String = url::Url::parse(redirect_uri)
            .ok()
            .and_then(|url| {
                let (mount, _) = url.path().rsplit_once('/')?;
                Some(
                    mount
                        .trim_matches('/')
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect(),
                )
            })
            .unwrap_or_default();
        let mut name = if secure { "__Host-" } else { "" }.to_owned();
        name.push_str(PENDING_COOKIE);
        if !suffix.is_empty() {
            name.push('-');
            name.push_str(&suffix);
        }
        Self { name, secure }
    }

    /// `Set-Cookie` for the cookie; an empty `value` with zero `max_age` clears it.
    fn set(&self, value: &str, max_age: Duration) -> HeaderValue {
        let Self { name, secure } = self;
        let secure = if *secure { "; Secure" } else { "" };
        let cookie = format!(
            "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            max_age.as_secs()
        );
        HeaderValue::try_from(cookie)
            .expect("the cookie's name is ASCII letters, digits and `-_`; its value URL-safe ASCII")
    }

    /// The cookie's value from the request's `Cookie` headers. Only the exact name counts: with
    /// `__Host-` the browser vouches that this host set it.
    fn find<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value.trim().trim_matches('"'))
    }
}

impl Flow {
    /// The record the request works on; refused when the app names no connection for it.
    fn target(&self, parts: &Parts) -> Result<Target, Failure> {
        match &self.records {
            Records::Single => Ok(Target::Single(self.connector.token_store().clone())),
            Records::Many { store, identify } => match identify(parts) {
                Some(id) => Ok(Target::Connection {
                    store: store.clone(),
                    id,
                }),
                None => Err(Failure::new(Reason::NotSignedIn)),
            },
        }
    }

    /// Whether a state-changing request comes from the app's own pages. Browsers send
    /// `Sec-Fetch-Site` (which no page can set or forge) with every request, and `Origin` with
    /// every `POST`; a request with neither is refused, as no browser made it with the user's
    /// cookies.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        if let Some(site) = headers.get("sec-fetch-site") {
            return site.as_bytes() == b"same-origin";
        }
        match (headers.get(ORIGIN), &self.origin) {
            (Some(origin), Some(ours)) => origin.as_bytes() == ours.as_bytes(),
            _ => false,
        }
    }

    /// Checks a callback against the browser's cookie, exchanges and saves.
    async fn complete(&self, parts: &Parts, callback: &Callback) -> Result<Connected, Failure> {
        let target = self.target(parts)?;
        let value = self.cookie.find(&parts.headers).ok_or_else(|| {
            let redirect_uri = self.connector.redirect_uri();
            Failure::new(Reason::NoCookie).detail(format!("The app's redirect URI: {redirect_uri}"))
        })?;
        let pending = PendingAuthorization::from_cookie_value(value)
            .map_err(|_| Failure::new(Reason::BadCookie))?;
        // `complete_for` checks it too; checking first tells the user what went wrong.
        if !pending.is_for(target.id()) {
            return Err(Failure::new(Reason::OtherConnection));
        }
        // `complete` runs the same check; running it first tells which part failed.
        if pending.verify(callback).is_err() {
            return Err(match &callback.error {
                Some(code) if code == "access_denied" => Failure::new(Reason::Denied),
                Some(code) => Failure::new(Reason::ZohoError).detail(format!("error={code}")),
                // Checked before the state so that the page is no oracle for a state guess.
                None if callback.code.is_none() => Failure::new(Reason::NoCode),
                None => Failure::new(Reason::StateMismatch),
            });
        }
        let completed = match &target {
            Target::Single(_) => self.connector.complete(&pending, callback).await,
            Target::Connection { store, id } => {
                self.connector
                    .complete_for(&**store, id, &pending, callback)
                    .await
            }
        };
        let connected = completed.map_err(Failure::from_exchange)?;
        if let Some(hook) = &self.on_connected {
            hook(&connected);
        }
        Ok(connected)
    }

    /// Revokes the account's refresh token at the accounts server that issued it, then forgets
    /// the account. Zoho refusing the revocation (an unknown or already revoked token) still
    /// forgets it: the token is of no use then. Zoho unreachable keeps it, to try again.
    async fn disconnect(&self, parts: &Parts) -> Result<(), Failure> {
        if !self.same_origin(&parts.headers) {
            return Err(Failure::new(Reason::CrossSite));
        }
        let target = self.target(parts)?;
        let set = target
            .record()
            .load()
            .await
            .map_err(|error| Failure::new(Reason::StoreUnavailable).error(&error))?;
        let revoked = set.as_ref().and_then(|set| set.refresh_token.clone());
        if let Some(TokenSet {
            refresh_token: Some(refresh_token),
            accounts_url,
            ..
        }) = set
        {
            let accounts = match accounts_url.as_deref() {
                Some(url) => Accounts::custom(url),
                None => Ok(self.connector.home_accounts()),
            };
            let client = accounts
                .and_then(|accounts| self.connector.client_for(&accounts))
                .map_err(|error| Failure::new(Reason::RevokeFailed).error(&error))?;
            client
                .revoke_or_gone(&refresh_token)
                .await
                .map_err(|error| Failure::new(Reason::RevokeFailed).error(&error))?;
        }
        target
            .forget(revoked.as_ref())
            .await
            .map_err(|error| Failure::new(Reason::StoreUnavailable).error(&error))?;
        tracing::info!(connection = ?target.id(), "disconnected a Zoho account");
        Ok(())
    }
}

/// `GET /connect`.
async fn connect(State(flow): State<Arc<Flow>>, parts: Parts) -> Response {
    let target = match flow.target(&parts) {
        Ok(target) => target,
        Err(failure) => return failure.page(&flow),
    };
    let started = match target.id() {
        Some(id) => flow.connector.authorize_for(id),
        None => flow.connector.authorize(),
    };
    let (url, pending) = match started {
        Ok(started) => started,
        Err(error) => return Failure::new(Reason::Start).error(&error).page(&flow),
    };
    let Ok(location) = HeaderValue::try_from(url.as_str()) else {
        let failure = Failure::new(Reason::Start).detail("the consent URL is not a valid header");
        return failure.page(&flow);
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(
        SET_COOKIE,
        flow.cookie.set(&pending.to_cookie_value(), PENDING_MAX_AGE),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /callback`.
async fn callback(State(flow): State<Arc<Flow>>, parts: Parts) -> Response {
    let callback = Callback::parse(parts.uri.query().unwrap_or_default());
    let mut response = match flow.complete(&parts, &callback).await {
        Ok(connected) => connected_page(&flow, &connected),
        Err(failure) => {
            tracing::warn!(
                reason = failure.reason.id(),
                // Debug-quoted: the detail may hold text from the query string.
                detail = ?failure.detail,
                "Zoho connect callback refused"
            );
            failure.page(&flow)
        }
    };
    response
        .headers_mut()
        .append(SET_COOKIE, flow.cookie.set("", Duration::ZERO));
    response
}

/// `POST /disconnect`: back to the app's home once done.
async fn disconnect(State(flow): State<Arc<Flow>>, parts: Parts) -> Response {
    match flow.disconnect(&parts).await {
        Ok(()) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SEE_OTHER;
            // `home` is the app's own setting, never from the request: no open redirect.
            if let Ok(home) = HeaderValue::try_from(&flow.home) {
                response.headers_mut().insert(LOCATION, home);
            }
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(failure) => {
            tracing::warn!(reason = failure.reason.id(), detail = ?failure.detail, "Zoho disconnect refused");
            failure.page(&flow)
        }
    }
}

/// `GET /status`: the connection as its record shows it, as JSON; never a token.
async fn status(State(flow): State<Arc<Flow>>, parts: Parts) -> Response {
    let target = match flow.target(&parts) {
        Ok(target) => target,
        Err(failure) => {
            let (id, status, ..) = failure.reason.describe();
            return json_response(status, &serde_json::json!({ "error": id }));
        }
    };
    match target.record().load().await {
        Ok(set) => json_response(
            StatusCode::OK,
            &status_json(target.id(), set.as_ref(), SystemTime::now()),
        ),
        Err(error) => {
            tracing::warn!(%error, "the Zoho connection status could not be read");
            let (id, status, ..) = Reason::StoreUnavailable.describe();
            json_response(status, &serde_json::json!({ "error": id }))
        }
    }
}

/// What `/status` says of a record: `connected`, `needs re-consent` (with Zoho's `code`) or
/// `not connected`, and for the first two where the account lives and what it may do.
fn status_json(
    id: Option<&ConnectionId>,
    set: Option<&TokenSet>,
    now: SystemTime,
) -> serde_json::Value {
    let mut status = serde_json::json!({ "connection": id.map(ConnectionId::as_str) });
    let live_access = set
        .and_then(|set| set.access.as_ref())
        .filter(|access| access.expires_at > now);
    let (state, set) = match set {
        Some(set) if set.failure.is_some() => ("needs re-consent", set),
        Some(set) if set.refresh_token.is_some() || live_access.is_some() => ("connected", set),
        _ => {
            status["status"] = "not connected".into();
            return status;
        }
    };
    status["status"] = state.into();
    if let Some(failure) = &set.failure {
        status["code"] = failure.code.clone().into();
    }
    let accounts = set.accounts_url.as_deref();
    status["accounts_server"] = accounts.into();
    status["data_center"] = accounts
        .and_then(DataCenter::from_accounts_url)
        .map(DataCenter::location)
        .into();
    status["renewable"] = set.refresh_token.is_some().into();
    let access = set.access.as_ref();
    status["api_domain"] = access.and_then(|a| a.api_domain.clone()).into();
    status["scopes"] = access.map(|a| a.scopes.clone()).unwrap_or_default().into();
    status["access_token_expires_at"] = live_access
        .and_then(|a| a.expires_at.duration_since(UNIX_EPOCH).ok())
        .map(|at| at.as_secs())
        .into();
    status
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        (CONTENT_TYPE, "application/json"),
        (CACHE_CONTROL, "no-store"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether a redirect URI is `http` to a loopback host, where browsers would not keep a
/// `Secure` cookie — the one case the cookie goes without it.
fn is_plain_http_on_loopback(redirect_uri: &str) -> bool {
    url::Url::parse(redirect_uri)
        .is_ok_and(|url| url.scheme() == "http" && url.host_str().is_some_and(is_loopback_host))
}

/// Why a sign-in did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    NotSignedIn,
    OtherConnection,
    CrossSite,
    RevokeFailed,
    StoreUnavailable,
    Start,
    NoCookie,
    BadCookie,
    Denied,
    ZohoError,
    NoCode,
    StateMismatch,
    UntrustedAccountsServer,
    CodeRejected,
    ClientRejected,
    ZohoRefused,
    ZohoUnavailable,
    Store,
}

impl Reason {
    /// The page's `data-reason`, for scripts and tests.
    fn id(self) -> &'static str {
        self.describe().0
    }

    /// `(id, status, title, explanation)`.
    fn describe(self) -> (&'static str, StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Reason::NotSignedIn => (
                "not-signed-in",
                S::UNAUTHORIZED,
                "Sign in to the app first",
                "Connecting a Zoho account needs you signed in to this app, so that the account \
                 is yours alone. Nothing was changed.",
            ),
            Reason::OtherConnection => (
                "other-connection",
                S::FORBIDDEN,
                "This Zoho sign-in belongs to someone else",
                "The sign-in was started by another user of this app (or before a sign-out), so \
                 it cannot complete for you. Nothing was exchanged or stored; start again.",
            ),
            Reason::CrossSite => (
                "cross-site",
                S::FORBIDDEN,
                "Refused: not sent from this app",
                "The request did not come from this app's own pages (another site may have sent \
                 it). Nothing was changed.",
            ),
            Reason::RevokeFailed => (
                "revoke-failed",
                S::BAD_GATEWAY,
                "Zoho did not confirm the disconnection",
                "The app could not reach Zoho to revoke its access, so the connection is kept. \
                 Try again in a few minutes.",
            ),
            Reason::StoreUnavailable => (
                "store-failed",
                S::INTERNAL_SERVER_ERROR,
                "The app's token store failed",
                "The app could not read or change the connection's record. Nothing was changed; \
                 try again.",
            ),
            Reason::Start => (
                "start-failed",
                S::INTERNAL_SERVER_ERROR,
                "Could not start the Zoho sign-in",
                "The app could not build the link to Zoho's consent page. Nothing was changed.",
            ),
            Reason::NoCookie => (
                "no-cookie",
                S::BAD_REQUEST,
                "This Zoho sign-in cannot be completed",
                "The browser did not send back the cookie this app set when the sign-in started: \
                 the sign-in was already completed, took longer than ten minutes, was started at \
                 another address than the app's redirect URI, or the browser blocks cookies. \
                 Nothing was stored; start again.",
            ),
            Reason::BadCookie => (
                "bad-cookie",
                S::BAD_REQUEST,
                "This Zoho sign-in cannot be completed",
                "The sign-in cookie is damaged. Nothing was stored; start again.",
            ),
            Reason::Denied => (
                "denied",
                S::BAD_REQUEST,
                "Access to Zoho was denied",
                "Zoho reports that access was denied on its consent page, so nothing was \
                 connected and nothing was stored.",
            ),
            Reason::ZohoError => (
                "zoho-error",
                S::BAD_REQUEST,
                "Zoho returned an error",
                "Zoho sent the browser back with an error instead of a grant code. Nothing was \
                 stored.",
            ),
            Reason::NoCode => (
                "no-code",
                S::BAD_REQUEST,
                "Zoho's answer is incomplete",
                "The callback carries no grant code. Nothing was stored.",
            ),
            Reason::StateMismatch => (
                "state-mismatch",
                S::BAD_REQUEST,
                "This Zoho sign-in was refused",
                "The callback's state does not match the sign-in this browser started: it is \
                 forged, replayed, or belongs to another sign-in (in another tab, say). Nothing \
                 was exchanged or stored.",
            ),
            Reason::UntrustedAccountsServer => (
                "untrusted-accounts-server",
                S::BAD_REQUEST,
                "Refused: not a Zoho accounts server",
                "The callback asks the app to exchange its grant code at an accounts server that \
                 is not one of Zoho's. The app refused to send its client secret there: nothing \
                 was exchanged or stored.",
            ),
            Reason::CodeRejected => (
                "code-rejected",
                S::BAD_REQUEST,
                "Zoho rejected the grant code",
                "The code expired (Zoho's last about two minutes) or was already used. Nothing \
                 was stored; start again.",
            ),
            Reason::ClientRejected => (
                "client-rejected",
                S::BAD_GATEWAY,
                "Zoho rejected this app's credentials",
                "Zoho did not accept the app's client id or secret: the secret is wrong, or the \
                 client is not enabled for the account's data centre. Nothing was stored.",
            ),
            Reason::ZohoRefused => (
                "zoho-refused",
                S::BAD_GATEWAY,
                "Zoho refused the code exchange",
                "Zoho answered the code exchange with an error. Nothing was stored.",
            ),
            Reason::ZohoUnavailable => (
                "zoho-unavailable",
                S::BAD_GATEWAY,
                "Zoho could not be reached",
                "Zoho's accounts server did not answer usefully (down, slow or throttling). \
                 Nothing was stored; try again in a few minutes.",
            ),
            Reason::Store => (
                "store-failed",
                S::INTERNAL_SERVER_ERROR,
                "The Zoho tokens could not be saved",
                "Zoho granted access, but the app could not save the tokens, so the connection \
                 cannot be used. Try again; if it keeps failing, check the app's token store.",
            ),
        }
    }
}

/// A sign-in that did not complete, and what to tell the user about it.
#[derive(Debug)]
struct Failure {
    reason: Reason,
    /// More detail: an error's message (which never holds a secret) or Zoho's error code.
    detail: Option<String>,
}

impl Failure {
    fn new(reason: Reason) -> Self {
        Self {
            reason,
            detail: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn error(self, error: &Error) -> Self {
        self.detail(error.to_string())
    }

    /// Classifies a failed [`Connector::complete`] whose callback passed the checks.
    fn from_exchange(error: Error) -> Self {
        let reason = if error.is_authorization() {
            // The state and code were fine, so the accounts server (or location) was not.
            Reason::UntrustedAccountsServer
        } else if error.is_invalid_grant() {
            Reason::CodeRejected
        } else if error.is_invalid_client() {
            Reason::ClientRejected
        } else if error.is_store() {
            Reason::Store
        } else if error.is_transient() || error.is_rate_limited() || error.is_timeout() {
            Reason::ZohoUnavailable
        } else {
            Reason::ZohoRefused
        };
        Self::new(reason).error(&error)
    }

    fn page(&self, flow: &Flow) -> Response {
        let (id, status, title, explanation) = self.reason.describe();
        let detail = self.detail.as_deref().map_or_else(String::new, |detail| {
            format!("<p id=\"detail\"><code>{}</code></p>\n", escape(detail))
        });
        // Relative: `connect` is this router's own route, wherever it is nested.
        let body = format!(
            "<main id=\"outcome\" data-outcome=\"error\" data-reason=\"{id}\">\n\
             <h1>{title}</h1>\n<p id=\"explanation\">{explanation}</p>\n{detail}\
             <p><a id=\"retry\" href=\"connect\">Start again</a> · \
             <a id=\"home\" href=\"{home}\">Back to the app</a></p>\n</main>",
            title = escape(title),
            explanation = escape(explanation),
            home = escape(&flow.home),
        );
        html_page(status, title, &body)
    }
}

fn connected_page(flow: &Flow, connected: &Connected) -> Response {
    let accounts = connected.accounts.url().as_str();
    let data_center = match connected.data_center {
        Some(dc) => format!("{} ({accounts})", dc.location().to_uppercase()),
        None => format!("custom accounts server {accounts}"),
    };
    let scopes: String = connected
        .scopes
        .iter()
        .map(|scope| format!("<li>{}</li>", escape(scope)))
        .collect();
    let (renewal, warning) = if connected.refresh_token_received {
        ("; renewed automatically", "")
    } else {
        (
            "",
            "<p id=\"no-refresh-token\" class=\"warning\">Zoho sent no refresh token, so the app \
             can act for this hour only. Zoho omits it when the consent asked for online access, \
             or repeated an earlier consent without <code>prompt=consent</code>; connect again \
             to get one.</p>\n",
        )
    };
    let body = format!(
        "<main id=\"outcome\" data-outcome=\"connected\">\n<h1>Zoho connected</h1>\n<dl>\n\
         <dt>Data centre</dt><dd id=\"data-center\">{data_center}</dd>\n\
         <dt>API domain</dt><dd id=\"api-domain\">{api_domain}</dd>\n\
         <dt>Scopes</dt><dd><ul id=\"scopes\">{scopes}</ul></dd>\n\
         <dt>Access token</dt><dd id=\"expires\">expires in {expires}{renewal}</dd>\n</dl>\n\
         {warning}<p><a id=\"continue\" href=\"{home}\">Continue</a></p>\n</main>",
        data_center = escape(&data_center),
        api_domain = escape(connected.api_domain.as_deref().unwrap_or("(not given)")),
        expires = human_duration(connected.expires_in),
        home = escape(&flow.home),
    );
    html_page(StatusCode::OK, "Zoho connected", &body)
}

/// A page with headers that keep it out of caches, and the callback URL (which holds the grant
/// code) out of `Referer` headers.
fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
         .warning{{color:#8a4b00}}</style></head>\n<body>\n{body}\n</body></html>\n",
        escape(title)
    );
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        (CACHE_CONTROL, "no-store"),
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// "59 minutes", "45 seconds", "2 hours".
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..120 => format!("{seconds} seconds"),
        120..7200 => format!("{} minutes", seconds / 60),
        _ => format!("{} hours", seconds / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::store::{MemoryStore, TokenStore};
    use crate::{Accounts, ClientId, ClientSecret};

    const REDIRECT: &str = "http://127.0.0.1:3000/zoho/callback";

    fn connector(redirect_uri: &str, store: Arc<MemoryStore>) -> Connector {
        Connector::new(
            ClientId::new("1000.ABC"),
            ClientSecret::new("s3cret"),
            redirect_uri,
        )
        .scopes(["ZohoCRM.users.READ"])
        .accounts(Accounts::custom("http://127.0.0.1:9").unwrap())
        .store(store)
    }

    fn app(connector: Connector) -> Router {
        Router::new().nest("/zoho", router(connector))
    }

    async fn send(
        app: &Router,
        request: http::request::Builder,
    ) -> (StatusCode, HeaderMap, String) {
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(app: &Router, uri: &str, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::get(uri);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        send(app, request).await
    }

    /// Starts a sign-in: the consent URL and the `name=value` of the cookie it set.
    async fn start(app: &Router) -> (url::Url, String, HeaderValue) {
        let (status, headers, _) = get(app, "/zoho/connect", None).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let location = url::Url::parse(headers[LOCATION].to_str().unwrap()).unwrap();
        let set_cookie = headers[SET_COOKIE].clone();
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        (location, pair.to_owned(), set_cookie)
    }

    fn reason(page: &str) -> &str {
        let start = page.find("data-reason=\"").expect("an error page") + 13;
        &page[start..start + page[start..].find('"').unwrap()]
    }

    #[tokio::test]
    async fn connect_sets_the_pending_cookie_and_redirects_to_consent() {
        let app = app(connector(REDIRECT, Arc::default()));
        let (location, pair, set_cookie) = start(&app).await;
        assert!(location
            .as_str()
            .starts_with("http://127.0.0.1:9/oauth/v2/auth?"));
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let value = pair.strip_prefix("zoho_auth_pending-zoho=").unwrap();
        assert_eq!(
            PendingAuthorization::from_cookie_value(value)
                .unwrap()
                .state(),
            state
        );
        let set_cookie = set_cookie.to_str().unwrap();
        for attribute in ["HttpOnly", "SameSite=Lax", "; Path=/;", "Max-Age=600"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "plain http on loopback");

        for redirect in [
            "https://app.example.com/zoho/callback",
            "http://app.example.com/zoho/callback",
            "https://127.0.0.1:3000/zoho/callback",
        ] {
            let (_, _, set_cookie) = start(&app_for(redirect)).await;
            let set_cookie = set_cookie.to_str().unwrap();
            assert!(set_cookie.ends_with("; Secure"), "{redirect}");
            // What browsers require of a `__Host-` cookie: Secure, `Path=/`, no `Domain`.
            assert!(
                set_cookie.starts_with("__Host-zoho_auth_pending-zoho="),
                "{set_cookie}"
            );
            assert!(set_cookie.contains("; Path=/;"), "{set_cookie}");
            assert!(
                !set_cookie.to_ascii_lowercase().contains("domain="),
                "{set_cookie}"
            );
        }
    }

    #[test]
    fn the_cookie_is_named_for_the_mount_point() {
        let cases = [
            (
                "https://a.example/zoho/callback",
                "__Host-zoho_auth_pending-zoho",
            ),
            ("https://a.example/callback", "__Host-zoho_auth_pending"),
            (
                "https://a.example/admin/zoho.eu/callback",
                "__Host-zoho_auth_pending-admin-zoho-eu",
            ),
            (
                "http://localhost:8080/zoho/callback",
                "zoho_auth_pending-zoho",
            ),
            ("http://127.0.0.1:3000/callback", "zoho_auth_pending"),
        ];
        for (redirect, name) in cases {
            assert_eq!(PendingCookie::new(redirect).name, name, "{redirect}");
        }
    }

    #[tokio::test]
    async fn a_cookie_planted_without_the_host_prefix_is_ignored() {
        // A sibling subdomain can set any cookie without `__Host-` for the whole domain: one
        // holding a sign-in it started itself, whose state it knows.
        let redirect = "https://app.example.com/zoho/callback";
        let (_, planted) = connector(redirect, Arc::default()).authorize().unwrap();
        let planted_value = planted.to_cookie_value();
        let store = Arc::new(MemoryStore::new());
        let app = app(connector(redirect, store.clone()));
        for name in [
            "zoho_auth_pending",
            "zoho_auth_pending-zoho",
            "__host-zoho_auth_pending-zoho",
        ] {
            let query = format!("state={}&code=1000.attacker", planted.state());
            let (status, _, page) = get(
                &app,
                &format!("/zoho/callback?{query}"),
                Some(&format!("{name}={planted_value}")),
            )
            .await;
            assert_eq!(
                (status, reason(&page)),
                (StatusCode::BAD_REQUEST, "no-cookie"),
                "{name}"
            );
        }
        assert!(store.load().await.unwrap().is_none(), "nothing stored");
    }

    #[tokio::test]
    async fn two_routers_on_one_host_keep_their_sign_ins_apart() {
        let app = Router::new()
            .nest(
                "/a",
                router(connector(
                    "https://app.example.com/a/callback",
                    Arc::default(),
                )),
            )
            .nest(
                "/b",
                router(connector(
                    "https://app.example.com/b/callback",
                    Arc::default(),
                )),
            );
        // A browser's cookie jar: a cookie replaces one of the same name (and path: all `/`).
        let mut jar = std::collections::BTreeMap::new();
        let mut states = Vec::new();
        for mount in ["/a", "/b"] {
            let (status, headers, _) = get(&app, &format!("{mount}/connect"), None).await;
            assert_eq!(status, StatusCode::SEE_OTHER);
            let location = url::Url::parse(headers[LOCATION].to_str().unwrap()).unwrap();
            states.push(
                location
                    .query_pairs()
                    .find(|(k, _)| k == "state")
                    .unwrap()
                    .1
                    .into_owned(),
            );
            let set_cookie = headers[SET_COOKIE].to_str().unwrap();
            let (name, value) = set_cookie
                .split(';')
                .next()
                .unwrap()
                .split_once('=')
                .unwrap();
            jar.insert(name.to_owned(), value.to_owned());
        }
        let cookies: Vec<String> = jar
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let cookies = cookies.join("; ");
        // The first sign-in's callback still matches: it gets as far as the (unreachable) Zoho.
        let (status, _, page) = get(
            &app,
            &format!("/a/callback?state={}&code=1000.c", states[0]),
            Some(&cookies),
        )
        .await;
        assert_eq!(
            (status, reason(&page)),
            (StatusCode::BAD_GATEWAY, "zoho-unavailable")
        );
    }

    fn app_for(redirect: &str) -> Router {
        app(connector(redirect, Arc::default()))
    }

    #[tokio::test]
    async fn unusable_callbacks_are_refused_and_clear_the_cookie() {
        let store = Arc::new(MemoryStore::new());
        let app = app(connector(REDIRECT, store.clone()));
        let (_, cookie, _) = start(&app).await;
        let state = PendingAuthorization::from_cookie_value(
            cookie.strip_prefix("zoho_auth_pending-zoho=").unwrap(),
        )
        .unwrap()
        .state()
        .to_owned();
        let forged = "https%3A%2F%2Faccounts.zoho.eu.evil.test";
        let cases = [
            (format!("state={state}&code=1000.c"), None, "no-cookie"),
            (
                format!("state={state}&code=1000.c"),
                Some("zoho_auth_pending-zoho=a.b.c"),
                "bad-cookie",
            ),
            (
                format!("state={state}&error=access_denied"),
                Some(&*cookie),
                "denied",
            ),
            (
                format!("state={state}&error=%3Cscript%3E"),
                Some(&*cookie),
                "zoho-error",
            ),
            (format!("state={state}"), Some(&*cookie), "no-code"),
            (
                "state=other&code=1000.c".to_owned(),
                Some(&*cookie),
                "state-mismatch",
            ),
            (
                format!("state={state}&code=1000.c&accounts-server={forged}"),
                Some(&*cookie),
                "untrusted-accounts-server",
            ),
        ];
        for (query, cookie, expected) in cases {
            let (status, headers, page) =
                get(&app, &format!("/zoho/callback?{query}"), cookie).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reason(&page), expected, "{query}");
            let cleared = headers[SET_COOKIE].to_str().unwrap();
            assert!(
                cleared.starts_with("zoho_auth_pending-zoho=; Path=/; Max-Age=0"),
                "{cleared}"
            );
            assert!(!page.contains("<script>"), "escaped: {page}");
            assert!(!page.contains("s3cret"));
        }
        assert!(store.load().await.unwrap().is_none(), "nothing stored");
    }

    #[test]
    fn the_pending_cookie_is_found_among_others() {
        let cookie = PendingCookie::new("https://app.example.com/zoho/callback");
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-zoho_auth_pending-zohox=2"),
        );
        assert_eq!(cookie.find(&headers), None);
        headers.append(
            COOKIE,
            HeaderValue::from_static("b=2;__Host-zoho_auth_pending-zoho=\"s.v\" ; c=3"),
        );
        assert_eq!(cookie.find(&headers), Some("s.v"));
    }

    #[cfg(feature = "simulator")]
    #[tokio::test]
    async fn an_accepted_consent_is_stored_and_shown_without_secrets() {
        use crate::sim::Fault;

        let zoho = crate::sim::Simulator::builder()
            .redirect_uri(REDIRECT)
            .start()
            .await
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        let connector = Connector::new(zoho.client_id(), zoho.client_secret(), REDIRECT)
            .scopes(["ZohoCRM.users.READ"])
            .accounts(Accounts::custom(&zoho.url()).unwrap())
            .store(store.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = Router::new().nest(
            "/zoho",
            ConnectZoho::new(connector)
                .home("/home")
                .on_connected(move |connected| {
                    assert!(connected.refresh_token_received);
                    seen.fetch_add(1, Ordering::SeqCst);
                })
                .into_router(),
        );
        let (consent, cookie, _) = start(&app).await;
        let back = zoho.accept_consent(consent.as_str()).unwrap();
        let query = url::Url::parse(&back).unwrap().query().unwrap().to_owned();
        let (status, headers, page) =
            get(&app, &format!("/zoho/callback?{query}"), Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("data-outcome=\"connected\""));
        assert!(page.contains("<li>ZohoCRM.users.READ</li>"));
        assert!(page.contains("href=\"/home\""));
        assert_eq!(headers[REFERRER_POLICY], "no-referrer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let set = store.load().await.unwrap().expect("tokens stored");
        let refresh = set.refresh_token.clone().expect("a refresh token");
        let access = set.access.clone().expect("an access token").access_token;
        for secret in [
            refresh.expose(),
            access.expose(),
            zoho.client_secret().expose(),
        ] {
            assert!(!page.contains(secret), "a secret in the page");
        }

        // The same callback again: its cookie is spent (the browser dropped it).
        let (status, _, page) = get(&app, &format!("/zoho/callback?{query}"), None).await;
        assert_eq!(
            (status, reason(&page)),
            (StatusCode::BAD_REQUEST, "no-cookie")
        );
        assert!(page.contains(REDIRECT), "the page names the redirect URI");
        // Replayed with a copy of the cookie: Zoho refuses the used code.
        let (status, _, page) = get(&app, &format!("/zoho/callback?{query}"), Some(&cookie)).await;
        assert_eq!(
            (status, reason(&page)),
            (StatusCode::BAD_REQUEST, "code-rejected")
        );

        // Zoho failing the exchange of a good callback.
        for (fault, expected) in [
            (
                Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
                "zoho-unavailable",
            ),
            (Fault::Throttle, "zoho-unavailable"),
            (Fault::Error("invalid_client".into()), "client-rejected"),
            (Fault::Error("invalid_redirect_uri".into()), "zoho-refused"),
        ] {
            let (consent, cookie, _) = start(&app).await;
            let back = zoho.accept_consent(consent.as_str()).unwrap();
            let query = url::Url::parse(&back).unwrap().query().unwrap().to_owned();
            zoho.inject(fault.clone(), 1);
            let (status, _, page) =
                get(&app, &format!("/zoho/callback?{query}"), Some(&cookie)).await;
            assert_eq!(
                (status, reason(&page)),
                (StatusCode::BAD_GATEWAY, expected),
                "{fault:?}"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "only the success is announced"
        );
        let after = store.load().await.unwrap().expect("the first tokens");
        assert_eq!(
            after.refresh_token.as_ref(),
            Some(&refresh),
            "failures change nothing"
        );
    }

    /// A multi-user app whose "session" is an `x-user` header (the app's authentication layer,
    /// in a real one).
    fn many(store: Arc<dyn ConnectionStore>, connector: Connector) -> Router {
        let connect = ConnectZoho::for_connections(connector, store, |parts: &Parts| {
            let user = parts.headers.get("x-user")?.to_str().ok()?;
            ConnectionId::new(user).ok()
        });
        Router::new().nest("/zoho", connect.into_router())
    }

    fn cookie_pair(headers: &HeaderMap) -> String {
        let set_cookie = headers[SET_COOKIE].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn without_a_connection_nothing_starts() {
        let store = Arc::new(crate::store::MemoryConnections::new());
        let app = many(store.clone(), connector(REDIRECT, Arc::default()));
        for uri in [
            "/zoho/connect",
            "/zoho/callback?state=s&code=1000.c",
            "/zoho/status",
        ] {
            let (status, headers, _) = send(&app, Request::get(uri)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(headers.get(LOCATION).is_none(), "{uri}: no redirect");
        }
        let (status, _, _) = send(
            &app,
            Request::post("/zoho/disconnect").header("sec-fetch-site", "same-origin"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, headers, _) = send(&app, Request::get("/zoho/connect")).await;
        assert!(headers.get(SET_COOKIE).is_none(), "no sign-in cookie");
    }

    #[tokio::test]
    async fn a_sign_in_cookie_completes_only_for_its_own_connection() {
        let store = Arc::new(crate::store::MemoryConnections::new());
        let app = many(store.clone(), connector(REDIRECT, Arc::default()));
        let (status, headers, _) = send(
            &app,
            Request::get("/zoho/connect").header("x-user", "alice"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let location = url::Url::parse(headers[LOCATION].to_str().unwrap()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let alices = cookie_pair(&headers);
        assert!(
            !alices.contains("alice"),
            "the id is not in the cookie: {alices}"
        );
        let callback_as = |user: &'static str| {
            let request = Request::get(format!("/zoho/callback?state={state}&code=1000.c"))
                .header("x-user", user)
                .header(COOKIE, &alices);
            send(&app, request)
        };
        // Alice's cookie and callback, replayed in Bob's session: refused before any exchange
        // (the connector's accounts server is unreachable, so an exchange would be a 502).
        let (status, headers, page) = callback_as("bob").await;
        assert_eq!(
            (status, reason(&page)),
            (StatusCode::FORBIDDEN, "other-connection")
        );
        assert!(
            headers[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"),
            "cleared"
        );
        assert!(
            store.list(None, 10).await.unwrap().is_empty(),
            "nothing stored"
        );
        // Alice's own session gets as far as Zoho.
        let (status, _, page) = callback_as("alice").await;
        assert_eq!(
            (status, reason(&page)),
            (StatusCode::BAD_GATEWAY, "zoho-unavailable")
        );
        // A single-store sign-in does not complete in a connection either.
        let (_, single, _) = start(&app_for(REDIRECT)).await;
        let (_, _, page) = send(
            &app,
            Request::get("/zoho/callback?state=x&code=1000.c")
                .header("x-user", "alice")
                .header(COOKIE, &single),
        )
        .await;
        assert_eq!(reason(&page), "other-connection");
    }

    #[tokio::test]
    async fn disconnect_needs_a_post_from_the_apps_own_pages() {
        use crate::store::MemoryConnections;
        let store = Arc::new(MemoryConnections::new());
        let alice = ConnectionId::new("alice").unwrap();
        seed(&store, &alice).await;
        let app = many(store.clone(), connector(REDIRECT, Arc::default()));
        let (status, _, _) = send(
            &app,
            Request::get("/zoho/disconnect").header("x-user", "alice"),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let refused = [
            vec![],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "http://127.0.0.1:3001")],
            vec![("origin", "null")],
            // `Sec-Fetch-Site` wins over an `Origin` that looks right.
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:3000"),
            ],
        ];
        for headers in refused {
            let mut request = Request::post("/zoho/disconnect").header("x-user", "alice");
            for (name, value) in &headers {
                request = request.header(*name, *value);
            }
            let (status, _, page) = send(&app, request).await;
            assert_eq!(
                (status, reason(&page)),
                (StatusCode::FORBIDDEN, "cross-site"),
                "{headers:?}"
            );
        }
        assert_eq!(
            store.list(None, 10).await.unwrap(),
            std::slice::from_ref(&alice),
            "kept"
        );
        for (name, value) in [
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:3000"),
        ] {
            let (status, headers, _) = send(
                &app,
                Request::post("/zoho/disconnect")
                    .header("x-user", "alice")
                    .header(name, value),
            )
            .await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{name}");
            assert_eq!(headers[LOCATION], "/");
            assert!(store.list(None, 10).await.unwrap().is_empty(), "removed");
            seed(&store, &alice).await;
        }
    }

    /// A record with a dead refresh token: nothing to revoke, so no Zoho is needed.
    async fn seed(store: &crate::store::MemoryConnections, id: &ConnectionId) {
        store
            .connection(id)
            .update(None, |set| {
                set.failure = Some(crate::store::StoredFailure::new("invalid_code", "revoked"));
                Ok(())
            })
            .await
            .unwrap();
    }

    #[test]
    fn the_status_says_what_the_record_does_and_no_token() {
        use crate::store::{StoredAccess, StoredFailure};
        use crate::{AccessToken, RefreshToken};
        let now = SystemTime::now();
        let id = ConnectionId::new("alice").unwrap();
        assert_eq!(
            status_json(Some(&id), None, now),
            serde_json::json!({ "connection": "alice", "status": "not connected" })
        );
        let mut set = TokenSet::new(RefreshToken::new("1000.refresh.secret"));
        set.accounts_url = Some("https://accounts.zoho.eu".into());
        set.access = Some(StoredAccess::new(
            AccessToken::new("1000.access.secret"),
            now,
            now + Duration::from_secs(3600),
            Some("https://www.zohoapis.eu".into()),
            vec!["ZohoCRM.users.READ".into()],
        ));
        let status = status_json(Some(&id), Some(&set), now);
        let expires = (now + Duration::from_secs(3600))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            status,
            serde_json::json!({
                "connection": "alice",
                "status": "connected",
                "accounts_server": "https://accounts.zoho.eu",
                "data_center": "eu",
                "renewable": true,
                "api_domain": "https://www.zohoapis.eu",
                "scopes": ["ZohoCRM.users.READ"],
                "access_token_expires_at": expires,
            })
        );
        assert!(!status.to_string().contains("secret"));
        set.failure = Some(StoredFailure::new("invalid_code", "m"));
        let status = status_json(None, Some(&set), now);
        assert_eq!(
            (status["status"].as_str(), status["code"].as_str()),
            (Some("needs re-consent"), Some("invalid_code"))
        );
        assert!(status["connection"].is_null());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(human_duration(Duration::from_secs(86400)), "24 hours");
    }
}
