//! The authorization-code flow: send a person to Zoho's consent page, check what comes back, and
//! exchange the grant code for tokens kept in a [`TokenStore`].
//!
//! Zoho's flow (`zoho-wire.md` §5): `GET {accounts}/oauth/v2/auth` with the scopes (comma-joined),
//! `access_type=offline` (without it there is no refresh token), `prompt=consent` (without it a
//! repeat consent gives no refresh token either), a random `state` and optionally PKCE. Zoho
//! redirects back with `code`, `state`, `location` and `accounts-server`: the code must be
//! exchanged, within about two minutes, at the accounts server of the user's data centre. That
//! server comes from the callback, so it is checked against Zoho's own accounts hosts first — a
//! forged `accounts-server` would otherwise receive the client secret.
//!
//! An app with many users, each connecting an account of their own, starts with
//! [`Connector::authorize_for`] and completes with [`Connector::complete_for`]: the pending
//! authorization is bound to the user's [`ConnectionId`], and completes into that connection's
//! record of a [`ConnectionStore`] only.
//!
//! ```
//! use zoho_auth::authorize::{Callback, Connector};
//! use zoho_auth::{ClientId, ClientSecret};
//!
//! let connector = Connector::new(
//!     ClientId::new("1000.ABC"),
//!     ClientSecret::new("secret"),
//!     "https://app.example.com/zoho/callback",
//! )
//! .scopes(["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"]);
//! let (url, pending) = connector.authorize().unwrap();
//! assert!(url.as_str().starts_with("https://accounts.zoho.com/oauth/v2/auth?"));
//! assert!(url.as_str().contains("access_type=offline") && url.as_str().contains("prompt=consent"));
//!
//! // Zoho redirects the browser back; a callback whose state differs is refused.
//! let forged = Callback::parse("code=1000.x&state=not-ours&location=eu");
//! assert!(pending.verify(&forged).is_err());
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::accounts::{AccountsClient, TokenResponse, DEFAULT_TIMEOUT};
use crate::connections::ConnectionId;
use crate::dc::{Accounts, DataCenter};
use crate::error::{Error, Kind};
use crate::secret::{constant_time_eq, ClientId, ClientSecret, GrantCode};
use crate::store::{ConnectionStore, MemoryStore, StoredAccess, TokenStore};

/// Whether Zoho issues a refresh token with the code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessType {
    /// A refresh token too: the app can act while the user is away. The default.
    #[default]
    Offline,
    /// An access token only: valid for an hour, then the user must consent again.
    Online,
}

/// An app's side of the authorization-code flow: its client, its redirect URI, the scopes it
/// asks for, and the store the tokens go to. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    client_id: ClientId,
    secret: ClientSecret,
    dc_secrets: Vec<(DataCenter, ClientSecret)>,
    redirect_uri: String,
    scopes: Vec<String>,
    access_type: AccessType,
    prompt_consent: bool,
    pkce: bool,
    data_center: DataCenter,
    accounts: Option<Accounts>,
    /// Custom accounts servers accepted in a callback besides `accounts` (a simulator's other
    /// data centres): the callback picks one, so each must be named here to get the secret.
    also_accepted: Vec<Accounts>,
    store: Arc<dyn TokenStore>,
    timeout: Duration,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("access_type", &self.access_type)
            .field("data_center", &self.data_center)
            .field(
                "accounts",
                &self.accounts.as_ref().map(|a| a.url().as_str()),
            )
            .field(
                "also_accepted",
                &self
                    .also_accepted
                    .iter()
                    .map(|a| a.url().as_str())
                    .collect::<Vec<_>>(),
            )
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for a client and the redirect URI registered for it in Zoho's API console.
    /// Defaults: offline access, `prompt=consent`, PKCE S256, consent starting at
    /// `accounts.zoho.com`, tokens kept in a [`MemoryStore`].
    #[must_use]
    pub fn new(
        client_id: ClientId,
        client_secret: ClientSecret,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            client_id,
            secret: client_secret,
            dc_secrets: Vec::new(),
            redirect_uri: redirect_uri.into(),
            scopes: Vec::new(),
            access_type: AccessType::Offline,
            prompt_consent: true,
            pkce: true,
            data_center: DataCenter::Us,
            accounts: None,
            also_accepted: Vec::new(),
            store: Arc::new(MemoryStore::new()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The scopes to ask for, e.g. `ZohoCRM.modules.ALL`.
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Offline (default) or online access.
    #[must_use]
    pub fn access_type(mut self, access_type: AccessType) -> Self {
        self.access_type = access_type;
        self
    }

    /// Whether to send `prompt=consent` (default on): without it, a user who consented before
    /// gets no new refresh token.
    #[must_use]
    pub fn prompt_consent(mut self, prompt: bool) -> Self {
        self.prompt_consent = prompt;
        self
    }

    /// Whether to use PKCE with S256 (default on).
    #[must_use]
    pub fn pkce(mut self, pkce: bool) -> Self {
        self.pkce = pkce;
        self
    }

    /// The data centre whose consent page to start at (default US, which serves every DC but
    /// China for multi-DC clients). The DC that tokens come from is the one the callback names.
    #[must_use]
    pub fn data_center(mut self, dc: DataCenter) -> Self {
        self.data_center = dc;
        self
    }

    /// A custom accounts server — the simulator, or a proxy — used for consent and accepted as
    /// the callback's `accounts-server` in addition to Zoho's own.
    #[must_use]
    pub fn accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Further custom accounts servers to accept as the callback's `accounts-server`, besides
    /// [`accounts`](Self::accounts): a simulator's other data centres, say. Each is matched
    /// exactly (scheme, host, port, path); any other non-Zoho server is still refused.
    #[must_use]
    pub fn also_accept<I>(mut self, accounts: I) -> Self
    where
        I: IntoIterator<Item = Accounts>,
    {
        self.also_accepted.extend(accounts);
        self
    }

    /// The client secret for one data centre, for multi-DC clients whose secrets differ.
    #[must_use]
    pub fn secret_for(mut self, dc: DataCenter, secret: ClientSecret) -> Self {
        self.dc_secrets.retain(|(known, _)| *known != dc);
        self.dc_secrets.push((dc, secret));
        self
    }

    /// Where the tokens go (default: a [`MemoryStore`] of this connector's own).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = store;
        self
    }

    /// The bound on the code exchange (default 20 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The store the tokens go to.
    pub fn token_store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The redirect URI.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The consent URL to send the user to, and what to keep (in a cookie, say) to check the
    /// callback: a fresh random `state` and PKCE verifier each time. It completes with
    /// [`complete`](Self::complete), into this connector's store.
    pub fn authorize(&self) -> Result<(url::Url, PendingAuthorization), Error> {
        self.start(None)
    }

    /// As [`authorize`](Self::authorize), for one connection of many: the pending authorization
    /// is bound to `id`, and completes only with [`complete_for`](Self::complete_for) and the
    /// same `id` — a callback can never land in another connection.
    pub fn authorize_for(
        &self,
        id: &ConnectionId,
    ) -> Result<(url::Url, PendingAuthorization), Error> {
        self.start(Some(id))
    }

    fn start(&self, id: Option<&ConnectionId>) -> Result<(url::Url, PendingAuthorization), Error> {
        let base = match &self.accounts {
            Some(accounts) => accounts.clone(),
            None => Accounts::custom(self.data_center.consent_accounts_url())?,
        };
        let state = random_token()?;
        let pending = PendingAuthorization {
            binding: id.map(|id| binding(&state, id)),
            state,
            verifier: if self.pkce {
                Some(random_token()?)
            } else {
                None
            },
        };
        let mut url = base.endpoint("oauth/v2/auth");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", self.client_id.as_str())
                .append_pair("scope", &self.scopes.join(","))
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair(
                    "access_type",
                    match self.access_type {
                        AccessType::Offline => "offline",
                        AccessType::Online => "online",
                    },
                )
                .append_pair("state", &pending.state);
            if self.prompt_consent {
                query.append_pair("prompt", "consent");
            }
            if let Some(verifier) = &pending.verifier {
                query
                    .append_pair("code_challenge", &challenge(verifier))
                    .append_pair("code_challenge_method", "S256");
            }
        }
        Ok((url, pending))
    }

    /// Checks a callback against `pending` (from [`authorize`](Self::authorize)), exchanges its
    /// code at the accounts server it names (only if that is Zoho's, or a configured custom
    /// server), and saves the tokens in this connector's store.
    pub async fn complete(
        &self,
        pending: &PendingAuthorization,
        callback: &Callback,
    ) -> Result<Connected, Error> {
        self.complete_in(&*self.store, None, pending, callback)
            .await
    }

    /// As [`complete`](Self::complete), for a `pending` from [`authorize_for`](Self::authorize_for)
    /// with this very `id`, saving into the connection's record in `store`. Refuses, before any
    /// exchange, a pending authorization bound to another connection or to none.
    pub async fn complete_for(
        &self,
        store: &dyn ConnectionStore,
        id: &ConnectionId,
        pending: &PendingAuthorization,
        callback: &Callback,
    ) -> Result<Connected, Error> {
        self.complete_in(&*store.connection(id), Some(id), pending, callback)
            .await
    }

    async fn complete_in(
        &self,
        store: &dyn TokenStore,
        id: Option<&ConnectionId>,
        pending: &PendingAuthorization,
        callback: &Callback,
    ) -> Result<Connected, Error> {
        if !pending.is_for(id) {
            return Err(Error::new(
                Kind::Authorization,
                "this sign-in was started for another connection: refusing its callback here",
            ));
        }
        let code = pending.verify(callback)?;
        let accounts = self.callback_accounts(callback)?;
        let client = self.client_for(&accounts)?;
        let response = client
            .exchange_code_with_verifier(
                code,
                Some(&self.redirect_uri),
                pending.verifier.as_deref(),
            )
            .await?;
        self.save(store, id, accounts, response).await
    }

    /// Exchanges a self-client grant code, pasted from Zoho's API console, at `accounts` (the
    /// console's data centre), and saves the tokens. Such codes carry no redirect URI.
    pub async fn exchange_self_client(
        &self,
        code: &GrantCode,
        accounts: Accounts,
    ) -> Result<Connected, Error> {
        let client = self.client_for(&accounts)?;
        let response = client.exchange_code(code, None).await?;
        self.save(&*self.store, None, accounts, response).await
    }

    /// The accounts server to exchange the code at: the callback's, if it is a Zoho accounts
    /// host or a configured custom one; else its `location`'s; else where consent started.
    fn callback_accounts(&self, callback: &Callback) -> Result<Accounts, Error> {
        if let Some(server) = callback.accounts_server.as_deref() {
            if let Some(custom) = self
                .accounts
                .iter()
                .chain(&self.also_accepted)
                .find(|custom| same_url(custom.url(), server))
            {
                return Ok(custom.clone());
            }
            return DataCenter::from_accounts_url(server)
                .map(Accounts::dc)
                .ok_or_else(|| {
                    Error::new(
                        Kind::Authorization,
                        format!(
                        "the callback names {server:?} as its accounts server, which is not one of \
                         Zoho's: refusing to send the client secret there"
                    ),
                    )
                });
        }
        if let Some(custom) = &self.accounts {
            return Ok(custom.clone());
        }
        match callback.location.as_deref() {
            Some(location) => DataCenter::from_location(location)
                .map(Accounts::dc)
                .ok_or_else(|| {
                    Error::new(
                        Kind::Authorization,
                        format!("the callback names an unknown data centre {location:?}"),
                    )
                }),
            None => Ok(Accounts::dc(self.data_center)),
        }
    }

    /// Where tokens come from when nothing says otherwise: the custom server, else where consent
    /// starts.
    #[cfg(feature = "axum")]
    pub(crate) fn home_accounts(&self) -> Accounts {
        self.accounts
            .clone()
            .unwrap_or_else(|| Accounts::dc(self.data_center))
    }

    /// An accounts client for `accounts` with this connector's client (and the DC's secret).
    pub(crate) fn client_for(&self, accounts: &Accounts) -> Result<AccountsClient, Error> {
        self.dc_secrets
            .iter()
            .fold(
                AccountsClient::builder(
                    accounts.clone(),
                    self.client_id.clone(),
                    self.secret.clone(),
                ),
                |builder, (dc, secret)| builder.secret_for(*dc, secret.clone()),
            )
            .timeout(self.timeout)
            .build()
    }

    /// Saves an exchange's tokens, keeping a stored refresh token when Zoho sent none. The save
    /// is fenced: a refresh that lands meanwhile merges into these tokens instead of reverting
    /// them.
    async fn save(
        &self,
        store: &dyn TokenStore,
        id: Option<&ConnectionId>,
        accounts: Accounts,
        response: TokenResponse,
    ) -> Result<Connected, Error> {
        let now = SystemTime::now();
        let refresh_token_received = response.refresh_token.is_some();
        if !refresh_token_received {
            tracing::warn!(
                "Zoho sent no refresh token: the consent asked for online access, or repeated an \
                 earlier consent without prompt=consent; the app can act only for an hour"
            );
        }
        let access = StoredAccess::from_response(&response, now);
        store
            .update(None, |set| {
                if let Some(refresh_token) = &response.refresh_token {
                    set.refresh_token = Some(refresh_token.clone());
                    set.accounts_url = Some(accounts.url().to_string());
                    set.failure = None;
                }
                set.access = Some(access.clone());
                Ok(())
            })
            .await?;
        tracing::info!(
            accounts = accounts.url().as_str(),
            refresh_token_received,
            "connected a Zoho account"
        );
        Ok(Connected {
            connection: id.cloned(),
            data_center: accounts.data_center(),
            accounts,
            api_domain: response.api_domain,
            scopes: response.scopes,
            expires_in: response.expires_in,
            refresh_token_received,
        })
    }
}

/// What a completed consent produced (no secrets: those are in the store).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Connected {
    /// The connection the tokens were saved for ([`Connector::complete_for`]); `None` for the
    /// connector's single store.
    pub connection: Option<ConnectionId>,
    /// The user's data centre, when the accounts server is one of Zoho's.
    pub data_center: Option<DataCenter>,
    /// The accounts server that minted the tokens; refreshes must go there too.
    pub accounts: Accounts,
    /// Where the user's data lives.
    pub api_domain: Option<String>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The access token's lifetime.
    pub expires_in: Duration,
    /// Whether Zoho sent a refresh token. Without one the app can act for an hour only.
    pub refresh_token_received: bool,
}

/// What an app keeps between sending the user to Zoho and the callback: the `state` it sent,
/// the PKCE verifier, and for [`Connector::authorize_for`] a binding to the connection. The
/// first two are random (256 bits); `Debug` prints none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    state: String,
    verifier: Option<String>,
    /// [`binding`] of the state and the connection id: names the connection without putting
    /// the id (an email address, say) in a cookie.
    binding: Option<String>,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingAuthorization([redacted])")
    }
}

impl PendingAuthorization {
    /// The `state` parameter sent to Zoho.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// A compact form for a cookie (URL-safe characters only): `state[.verifier][~binding]`.
    pub fn to_cookie_value(&self) -> String {
        let mut value = self.state.clone();
        if let Some(verifier) = &self.verifier {
            value.push('.');
            value.push_str(verifier);
        }
        if let Some(binding) = &self.binding {
            value.push('~');
            value.push_str(binding);
        }
        value
    }

    /// Reads [`to_cookie_value`](Self::to_cookie_value)'s form back.
    pub fn from_cookie_value(value: &str) -> Result<Self, Error> {
        let (rest, binding) = match value.trim().split_once('~') {
            Some((rest, binding)) => (rest, Some(binding)),
            None => (value.trim(), None),
        };
        let mut parts = rest.splitn(2, '.');
        let state = parts.next().filter(|s| valid_token(s));
        let verifier = parts.next();
        let malformed = || {
            Error::new(
                Kind::Authorization,
                "the sign-in cookie is malformed; start again",
            )
        };
        if binding.is_some_and(|b| !valid_token(b)) || verifier.is_some_and(|v| !valid_token(v)) {
            return Err(malformed());
        }
        Ok(Self {
            state: state.ok_or_else(malformed)?.into(),
            verifier: verifier.map(Into::into),
            binding: binding.map(Into::into),
        })
    }

    /// Whether this was started for connection `id` (`None`: for a connector's single store).
    /// Compared in constant time, like the state.
    pub fn is_for(&self, id: Option<&ConnectionId>) -> bool {
        match (&self.binding, id) {
            (None, None) => true,
            (Some(bound), Some(id)) => {
                constant_time_eq(bound.as_bytes(), binding(&self.state, id).as_bytes())
            }
            _ => false,
        }
    }

    /// Checks a callback: no error from Zoho, the same `state` (compared in constant time), and a
    /// code. Returns the code.
    pub fn verify<'a>(&self, callback: &'a Callback) -> Result<&'a GrantCode, Error> {
        if let Some(error) = &callback.error {
            return Err(Error::new(
                Kind::Authorization,
                format!("Zoho returned an error instead of a code ({error}): the user denied access, or the request was invalid"),
            )
            .with_code(error.clone()));
        }
        let state_matches = callback
            .state
            .as_deref()
            .is_some_and(|state| constant_time_eq(state.as_bytes(), self.state.as_bytes()));
        if !state_matches {
            return Err(Error::new(
                Kind::Authorization,
                "the callback's state does not match the one sent: refusing it (a forged or stale callback)",
            ));
        }
        callback
            .code
            .as_ref()
            .ok_or_else(|| Error::new(Kind::Authorization, "the callback carries no code"))
    }
}

/// The parameters Zoho sends to the redirect URI.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Callback {
    /// The one-time grant code.
    pub code: Option<GrantCode>,
    /// The `state` sent with the consent request.
    pub state: Option<String>,
    /// The user's data centre (`us`, `eu`, ...).
    pub location: Option<String>,
    /// The accounts server to exchange the code at (URL-decoded).
    pub accounts_server: Option<String>,
    /// An error instead of a code, e.g. `access_denied`.
    pub error: Option<String>,
}

impl Callback {
    /// Reads a callback's query string (with or without a leading `?`). Never fails: missing
    /// parameters are `None`, and unknown ones are ignored.
    pub fn parse(query: &str) -> Self {
        let mut callback = Self::default();
        for (key, value) in form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
            let value = Some(value.into_owned()).filter(|v| !v.is_empty());
            match &*key {
                "code" => callback.code = value.map(GrantCode::new),
                "state" => callback.state = value,
                "location" => callback.location = value,
                "accounts-server" => callback.accounts_server = value,
                "error" => callback.error = value,
                _ => {}
            }
        }
        callback
    }
}

/// 256 random bits, base64url without padding (43 characters).
fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::config(format!("no randomness from the OS: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn valid_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Binds a pending authorization to a connection: a hash of its (secret, fixed-length) state
/// and the id. Without the state nobody can make one, and the cookie does not show the id.
fn binding(state: &str, id: &ConnectionId) -> String {
    let mut hash = Sha256::new();
    hash.update(b"zoho-auth pending connection\0");
    hash.update(state.as_bytes());
    hash.update(b"\0");
    hash.update(id.as_str().as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether a URL string names the same server as `url` (ignoring a trailing slash).
fn same_url(url: &url::Url, other: &str) -> bool {
    url::Url::parse(other).is_ok_and(|other| {
        other.scheme() == url.scheme()
            && other.host_str() == url.host_str()
            && other.port_or_known_default() == url.port_or_known_default()
            && other.path().trim_end_matches('/') == url.path().trim_end_matches('/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector() -> Connector {
        Connector::new(
            ClientId::new("1000.ABC"),
            ClientSecret::new("s"),
            "https://app.example.com/cb",
        )
        .scopes(["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"])
    }

    #[test]
    fn the_authorization_url_carries_every_parameter() {
        let (url, pending) = connector().data_center(DataCenter::Eu).authorize().unwrap();
        assert_eq!(
            url.host_str(),
            Some("accounts.zoho.com"),
            "multi-DC consent starts at the US server"
        );
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["scope"], "ZohoCRM.modules.ALL,ZohoCRM.users.READ");
        assert_eq!(query["access_type"], "offline");
        assert_eq!(query["prompt"], "consent");
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["redirect_uri"], "https://app.example.com/cb");
        assert_eq!(query["state"], pending.state());
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(
            query["code_challenge"],
            challenge(pending.verifier.as_deref().unwrap())
        );
        assert!(pending.state().len() >= 43, "at least 256 bits");
        let (_, other) = connector().authorize().unwrap();
        assert_ne!(other.state(), pending.state());
    }

    #[test]
    fn china_has_its_own_consent_server() {
        let (url, _) = connector().data_center(DataCenter::Cn).authorize().unwrap();
        assert_eq!(url.host_str(), Some("accounts.zoho.com.cn"));
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn callbacks_are_parsed_and_url_decoded() {
        let callback = Callback::parse(
            "?state=s&code=1000.c&location=eu&accounts-server=https%3A%2F%2Faccounts.zoho.eu",
        );
        assert_eq!(callback.code.unwrap().expose(), "1000.c");
        assert_eq!(
            callback.accounts_server.as_deref(),
            Some("https://accounts.zoho.eu")
        );
        assert_eq!(callback.location.as_deref(), Some("eu"));
        assert!(Callback::parse("").code.is_none());
    }

    #[test]
    fn only_zoho_or_the_configured_server_may_receive_the_secret() {
        let c = connector();
        let at = |server: &str| {
            c.callback_accounts(&Callback::parse(&format!("accounts-server={server}")))
        };
        assert_eq!(
            at("https%3A%2F%2Faccounts.zoho.eu").unwrap().data_center(),
            Some(DataCenter::Eu)
        );
        for forged in [
            "https%3A%2F%2Faccounts.zoho.eu.evil.test",
            "http%3A%2F%2Faccounts.zoho.eu",
            "https%3A%2F%2Fevil.test",
        ] {
            let error = at(forged).unwrap_err();
            assert!(error.is_authorization(), "{forged}: {error:?}");
        }
        let custom = c.accounts(Accounts::custom("http://127.0.0.1:9000").unwrap());
        let callback = Callback::parse("accounts-server=http%3A%2F%2F127.0.0.1%3A9000%2F");
        assert!(custom.callback_accounts(&callback).is_ok());
        let elsewhere = Callback::parse("accounts-server=http%3A%2F%2F127.0.0.1%3A9001");
        assert!(custom.callback_accounts(&elsewhere).is_err());
        // A simulator's second data centre, once named, and only that one.
        let both = custom.also_accept([Accounts::custom("http://127.0.0.2:9001").unwrap()]);
        let second = Callback::parse("accounts-server=http%3A%2F%2F127.0.0.2%3A9001");
        assert!(both.callback_accounts(&second).is_ok());
        assert!(both.callback_accounts(&elsewhere).is_err());
        let forged = Callback::parse("accounts-server=https%3A%2F%2Faccounts.zoho.eu.evil.test");
        assert!(both.callback_accounts(&forged).is_err());
    }

    #[test]
    fn state_is_checked_and_errors_surface() {
        let (_, pending) = connector().authorize().unwrap();
        let good = Callback::parse(&format!("state={}&code=1000.c", pending.state()));
        assert_eq!(pending.verify(&good).unwrap().expose(), "1000.c");
        assert!(pending
            .verify(&Callback::parse("state=other&code=1000.c"))
            .is_err());
        assert!(pending.verify(&Callback::parse("code=1000.c")).is_err());
        let denied = pending
            .verify(&Callback::parse(&format!(
                "state={}&error=access_denied",
                pending.state()
            )))
            .unwrap_err();
        assert_eq!(denied.zoho_code(), Some("access_denied"));
    }

    #[test]
    fn pending_round_trips_through_a_cookie() {
        let (_, pending) = connector().authorize().unwrap();
        let back = PendingAuthorization::from_cookie_value(&pending.to_cookie_value()).unwrap();
        assert_eq!(back, pending);
        assert!(PendingAuthorization::from_cookie_value("a.b.c").is_err());
        assert!(PendingAuthorization::from_cookie_value("").is_err());
        assert!(!format!("{pending:?}").contains(pending.state()));
        assert!(pending.is_for(None));
    }

    #[test]
    fn a_pending_authorization_is_bound_to_its_connection() {
        let alice = ConnectionId::new("alice@example.com").unwrap();
        let bob = ConnectionId::new("bob").unwrap();
        let (_, pending) = connector().authorize_for(&alice).unwrap();
        let cookie = pending.to_cookie_value();
        assert!(!cookie.contains("alice"), "{cookie}");
        let back = PendingAuthorization::from_cookie_value(&cookie).unwrap();
        assert_eq!(back, pending);
        assert!(back.is_for(Some(&alice)));
        assert!(!back.is_for(Some(&bob)));
        assert!(!back.is_for(None), "not for the single store either");
        // Another sign-in's binding does not carry over to this state.
        let (_, bobs) = connector().authorize_for(&bob).unwrap();
        let (state, _) = cookie.split_once('~').unwrap();
        let (_, bob_binding) = bobs
            .to_cookie_value()
            .split_once('~')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        let spliced =
            PendingAuthorization::from_cookie_value(&format!("{state}~{bob_binding}")).unwrap();
        assert!(!spliced.is_for(Some(&bob)) && !spliced.is_for(Some(&alice)));
        for bad in ["s~", "s~a.b", "s.v~b~c", "~b"] {
            assert!(
                PendingAuthorization::from_cookie_value(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_callback_completes_only_into_its_own_connection() {
        use crate::store::MemoryConnections;
        let store = MemoryConnections::new();
        let alice = ConnectionId::new("alice").unwrap();
        let bob = ConnectionId::new("bob").unwrap();
        let c = connector();
        let (_, pending) = c.authorize_for(&alice).unwrap();
        let callback = Callback::parse(&format!("state={}&code=1000.c", pending.state()));
        for result in [
            c.complete_for(&store, &bob, &pending, &callback).await,
            c.complete(&pending, &callback).await,
        ] {
            assert!(result.unwrap_err().is_authorization());
        }
        let (_, single) = c.authorize().unwrap();
        let callback = Callback::parse(&format!("state={}&code=1000.c", single.state()));
        let error = c
            .complete_for(&store, &alice, &single, &callback)
            .await
            .unwrap_err();
        assert!(error.is_authorization());
        assert!(
            store.list(None, 10).await.unwrap().is_empty(),
            "nothing stored"
        );
    }
}
