//! The client for Zoho's accounts server: code exchange, refresh, client credentials, revoke.
//!
//! Every call sends its parameters in an `application/x-www-form-urlencoded` body, never the query
//! string, so the client secret and tokens stay out of proxy and access logs; every call has a
//! timeout; redirects are not followed, so a secret-carrying body is never re-sent to another
//! host. Answers are read by [`TokenResponse::from_http`].
//!
//! The client builds its own `reqwest::Client` unless it is given the application's (for a
//! corporate proxy, custom root certificates or a shared connection pool) through
//! [`AccountsClient::builder`]. The guarantees above hold for either: the timeout bounds the whole
//! call whatever the `reqwest::Client`'s own settings, the answer is read only up to a size cap,
//! and a redirect is refused even by a client that follows redirects — the form is sent as a body
//! that reqwest cannot replay, and an answer from any other URL than the one posted to is an
//! error.
//!
//! ```no_run
//! use zoho_auth::{accounts::AccountsClient, ClientId, ClientSecret, DataCenter, RefreshToken};
//!
//! # async fn run() -> Result<(), zoho_auth::Error> {
//! let client = AccountsClient::new(
//!     DataCenter::Eu,
//!     ClientId::new("1000.ABC"),
//!     ClientSecret::new(std::env::var("ZOHO_CLIENT_SECRET").unwrap()),
//! )?;
//! let token = client.refresh(&RefreshToken::new(std::env::var("ZOHO_REFRESH_TOKEN").unwrap())).await?;
//! println!("token valid for {:?}, data at {:?}", token.expires_in, token.api_domain);
//! # Ok(()) }
//! ```
//!
//! With the application's own HTTP client:
//!
//! ```no_run
//! use std::time::Duration;
//! use zoho_auth::{accounts::AccountsClient, ClientId, ClientSecret, DataCenter};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // This crate's TLS and no redirects, plus a proxy.
//! let http = zoho_auth::accounts::http_client_builder()?
//!     .proxy(reqwest::Proxy::https("http://proxy.corp.example:3128")?)
//!     .build()?;
//! let client = AccountsClient::builder(
//!     DataCenter::Eu,
//!     ClientId::new("1000.ABC"),
//!     ClientSecret::new(std::env::var("ZOHO_CLIENT_SECRET")?),
//! )
//! .http_client(http)
//! .timeout(Duration::from_secs(10))
//! .build()?;
//! # Ok(()) }
//! ```

mod response;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;

pub use self::response::TokenResponse;
use crate::dc::Accounts;
use crate::error::Error;
use crate::secret::{ClientId, ClientSecret, GrantCode, RefreshToken};

/// Default bound on one call to the accounts server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Token answers are a few hundred bytes; anything much larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// A `reqwest::ClientBuilder` set up as the accounts client's own: this crate's TLS (rustls with
/// the `ring` provider and the webpki roots), no redirects, and this crate as the user agent.
/// Start from it for a client of your own — a proxy, a shared pool — without choosing a TLS
/// provider for reqwest (reqwest's own `rustls` feature brings aws-lc-rs, which needs cmake and
/// a C compiler to build).
///
/// ```
/// let http = zoho_auth::accounts::http_client_builder()?
///     .pool_max_idle_per_host(4)
///     .build()
///     .expect("a client");
/// # let _ = http;
/// # Ok::<(), zoho_auth::Error>(())
/// ```
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, Error> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::client_config()?)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("zoho-auth/", env!("CARGO_PKG_VERSION"))))
}

/// Builds an [`AccountsClient`]; from [`AccountsClient::builder`].
#[must_use]
#[derive(Debug)]
pub struct AccountsClientBuilder {
    accounts: Accounts,
    client_id: ClientId,
    secrets: Secrets,
    http: Option<reqwest::Client>,
    timeout: Duration,
}

impl AccountsClientBuilder {
    /// The bound on each call, from connecting to reading the whole answer; default
    /// [`DEFAULT_TIMEOUT`]. It applies to an [`http_client`](Self::http_client) too, whatever that
    /// client's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client's secret at another accounts server: a multi-DC client may have its own secret
    /// in each data centre (Zoho answers `invalid_client` to another DC's), and the client uses
    /// this one wherever it talks to that server — its refreshes, revocations and exchanges of
    /// connections in that DC. A data centre matches its accounts server whatever URL names it;
    /// a custom server (the simulator, a proxy) matches by URL.
    ///
    /// ```
    /// use zoho_auth::{accounts::AccountsClient, ClientId, ClientSecret, DataCenter};
    ///
    /// let client = AccountsClient::builder(DataCenter::Us, ClientId::new("1000.ABC"), ClientSecret::new("us-secret"))
    ///     .secret_for(DataCenter::Eu, ClientSecret::new("eu-secret"))
    ///     .build()?;
    /// # Ok::<(), zoho_auth::Error>(())
    /// ```
    pub fn secret_for(mut self, accounts: impl Into<Accounts>, secret: ClientSecret) -> Self {
        let accounts = accounts.into();
        self.secrets
            .by_server
            .retain(|(known, _)| !same_server(known, &accounts));
        self.secrets.by_server.push((accounts, secret));
        self
    }

    /// Sends every call through the application's own client (its proxy, root certificates,
    /// connection pool, default headers and user agent) instead of one built for this client.
    ///
    /// Redirects are refused even when `http` follows them; see the [module docs](self).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client. Without an [`http_client`](Self::http_client) it builds one that follows no
    /// redirects and names this crate as its user agent; that build is what can fail.
    pub fn build(self) -> Result<AccountsClient, Error> {
        // A day is far past any answer; the bound is added to the clock, so it must not overflow.
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(86_400) {
            return Err(Error::config(format!(
                "accounts client: a timeout of {:?} cannot work (more than zero, at most a day)",
                self.timeout
            )));
        }
        let http = match self.http {
            Some(http) => http,
            None => http_client_builder()?.build().map_err(|e| {
                Error::config("could not build the HTTP client for Zoho's accounts server")
                    .with_source(e)
            })?,
        };
        Ok(AccountsClient {
            accounts: self.accounts,
            client_id: self.client_id,
            secrets: Arc::new(self.secrets),
            http,
            timeout: self.timeout,
        })
    }
}

/// A client for one Zoho accounts server and one OAuth client. Cheap to clone.
#[derive(Clone)]
pub struct AccountsClient {
    accounts: Accounts,
    client_id: ClientId,
    secrets: Arc<Secrets>,
    http: reqwest::Client,
    timeout: Duration,
}

/// The client's secret, and the secrets it has at other accounts servers.
#[derive(Debug)]
struct Secrets {
    default: ClientSecret,
    by_server: Vec<(Accounts, ClientSecret)>,
}

/// Whether `a` and `b` are the same accounts server: the same data centre, or the same URL.
fn same_server(a: &Accounts, b: &Accounts) -> bool {
    match (a.data_center(), b.data_center()) {
        (Some(a), Some(b)) => a == b,
        _ => a.url() == b.url(),
    }
}

impl fmt::Debug for AccountsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountsClient")
            .field("accounts", &self.accounts.url().as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.secret())
            .finish()
    }
}

impl AccountsClient {
    /// A client for a data centre (or custom [`Accounts`] server) with the default timeout.
    pub fn new(
        accounts: impl Into<Accounts>,
        client_id: ClientId,
        client_secret: ClientSecret,
    ) -> Result<Self, Error> {
        Self::builder(accounts, client_id, client_secret).build()
    }

    /// Like [`new`](Self::new), with a bound on each call (connect, send and read).
    pub fn with_timeout(
        accounts: impl Into<Accounts>,
        client_id: ClientId,
        client_secret: ClientSecret,
        timeout: Duration,
    ) -> Result<Self, Error> {
        Self::builder(accounts, client_id, client_secret)
            .timeout(timeout)
            .build()
    }

    /// A builder, to set the timeout or bring the application's own `reqwest::Client`.
    pub fn builder(
        accounts: impl Into<Accounts>,
        client_id: ClientId,
        client_secret: ClientSecret,
    ) -> AccountsClientBuilder {
        AccountsClientBuilder {
            accounts: accounts.into(),
            client_id,
            secrets: Secrets {
                default: client_secret,
                by_server: Vec::new(),
            },
            http: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client (id, secrets, HTTP client, timeout) at another accounts server: the one
    /// that issued a stored refresh token, where its refreshes must go. It sends that server's
    /// [own secret](AccountsClientBuilder::secret_for) if it has one.
    pub fn with_accounts(&self, accounts: Accounts) -> Self {
        Self {
            accounts,
            ..self.clone()
        }
    }

    /// The client for `issuer`, the accounts server a stored refresh token came from (`None`,
    /// or this client's own: itself), with that server's secret.
    pub(crate) fn for_issuer(&self, issuer: Option<&str>) -> Result<Self, Error> {
        Ok(match issuer {
            Some(url) if url != self.accounts.url().as_str() => {
                self.with_accounts(Accounts::custom(url)?)
            }
            _ => self.clone(),
        })
    }

    /// The accounts server this client talks to.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The bound on one call to the accounts server. The token cache derives its flight deadline
    /// and the store's refresh-lock lifetime from it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The OAuth client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The secret sent to this client's accounts server.
    fn secret(&self) -> &ClientSecret {
        self.secrets
            .by_server
            .iter()
            .find(|(known, _)| same_server(known, &self.accounts))
            .map_or(&self.secrets.default, |(_, secret)| secret)
    }

    /// A digest of the client id and the secret this client sends, recorded with a failure of
    /// the client (`invalid_client`) so that the failure holds only for these credentials: a
    /// process with a fixed secret is not bound by it. 64 bits of SHA-256: it names the
    /// credentials without revealing the secret.
    pub(crate) fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"zoho-auth client\0")
            .chain_update(self.client_id.as_str())
            .chain_update(b"\0")
            .chain_update(self.secret().expose())
            .finalize();
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Mints an access token from a refresh token. Zoho's answer carries no new refresh token;
    /// the caller keeps the one it has.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenResponse, Error> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ])
        .await
    }

    /// Exchanges a grant code for tokens. `redirect_uri` must equal the one used in the
    /// authorization request; self-client codes from Zoho's API console have none.
    pub async fn exchange_code(
        &self,
        code: &GrantCode,
        redirect_uri: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        self.exchange_code_with_verifier(code, redirect_uri, None)
            .await
    }

    /// Like [`exchange_code`](Self::exchange_code), with the PKCE `code_verifier` for a code
    /// requested with a `code_challenge`.
    pub async fn exchange_code_with_verifier(
        &self,
        code: &GrantCode,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
        ];
        params.extend(redirect_uri.map(|uri| ("redirect_uri", uri)));
        params.extend(code_verifier.map(|verifier| ("code_verifier", verifier)));
        self.token(&params).await
    }

    /// Mints a token with the self client's client-credentials grant. `soid` names the service
    /// and organisation, e.g. `ZohoCRM.600012345`; without it Zoho answers `missing_org_info` for
    /// multi-org accounts.
    pub async fn client_credentials(
        &self,
        scopes: &[&str],
        soid: &str,
    ) -> Result<TokenResponse, Error> {
        let scope = scopes.join(",");
        self.token(&[
            ("grant_type", "client_credentials"),
            ("scope", &scope),
            ("soid", soid),
        ])
        .await
    }

    /// Revokes a refresh token for a disconnect: a refusal that will not pass (the token is
    /// unknown or revoked already there) is as good as a revocation, since the token is of no use
    /// either way; only a failure worth trying again (the network, a 5xx, throttling, a timeout)
    /// is an error.
    #[cfg(any(feature = "axum", feature = "connections"))]
    pub(crate) async fn revoke_or_gone(&self, refresh_token: &RefreshToken) -> Result<(), Error> {
        match self.revoke(refresh_token).await {
            Err(error) if error.is_transient() || error.is_rate_limited() || error.is_timeout() => {
                Err(error)
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "Zoho did not revoke the refresh token (unknown or already revoked there);                      forgetting it anyway"
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Revokes a refresh token and, with it, its access tokens.
    pub async fn revoke(&self, refresh_token: &RefreshToken) -> Result<(), Error> {
        let (status, body) = self
            .post(
                "oauth/v2/token/revoke",
                &[("token", refresh_token.expose())],
            )
            .await?;
        response::revoke_from_http(status, &body)
    }

    async fn token(&self, params: &[(&str, &str)]) -> Result<TokenResponse, Error> {
        let mut all = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret().expose()),
        ];
        all.extend_from_slice(params);
        let (status, body) = self.post("oauth/v2/token", &all).await?;
        TokenResponse::from_http(status, &body)
    }

    /// POSTs a urlencoded form and reads at most [`MAX_ANSWER`] bytes of the answer, all within
    /// the timeout: a client the application built may have none of its own.
    async fn post(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), Error> {
        tokio::time::timeout(self.timeout, self.post_unbounded(path, params))
            .await
            .unwrap_or_else(|_| {
                Err(Error::transient(format!(
                    "the request to Zoho's accounts server timed out after {:?}",
                    self.timeout
                )))
            })
    }

    async fn post_unbounded(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), Error> {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let url = self.accounts.endpoint(path);
        let mut response = self
            .http
            .post(url.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            // A body reqwest cannot clone, so a client that follows redirects does not resend it
            // on a 307/308 (and drops it on a 301-303); its exact size still sets Content-Length.
            .body(reqwest::Body::wrap(http_body_util::Full::new(Bytes::from(
                form,
            ))))
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        if status.is_redirection() || *response.url() != url {
            // Zoho answers token requests itself; a redirect is a wrong URL or a proxy's doing,
            // and its target is no place for the client secret, nor to take a token from.
            let error = Error::transient(format!(
                "the call to Zoho's accounts server was redirected (HTTP {status} from {}); calls \
                 that carry the client secret never follow a redirect",
                response.url().host_str().unwrap_or("an unnamed host")
            ));
            return Err(if status.is_redirection() {
                error.with_status(status)
            } else {
                error
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(network_error)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Error::transient(format!(
                    "Zoho's accounts server answered HTTP {status} with a body over {MAX_ANSWER} bytes"
                ))
                .with_status(status));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body.freeze()))
    }
}

fn network_error(e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    Error::transient(format!("the request to Zoho's accounts server {what}")).with_source(e)
}
