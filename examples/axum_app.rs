//! A small web app with a "Connect Zoho" button: `zoho_auth::axum`'s consent flow, then calls to
//! Zoho CRM through a `ZohoClient` (hyper-util behind `ZohoAuthLayer`) held in axum state.
//!
//! ```text
//! cargo run --example axum_app                  # against the embedded simulator: open the URL it prints
//! cargo run --example axum_app -- --listen 127.0.0.1:0
//! ```
//!
//! Without `ZOHO_CLIENT_ID` and `ZOHO_CLIENT_SECRET` it starts the embedded Zoho simulator, whose
//! consent page has Accept and Deny buttons, and registers the app's redirect URI there. With
//! them it talks to Zoho (or to `ZOHO_ACCOUNTS_URL`): register the redirect URI in Zoho's API
//! console first. Settings, all optional:
//!
//! | variable | default |
//! |---|---|
//! | `ZOHO_REDIRECT_URI` | `http://<listen address>/zoho/callback` |
//! | `ZOHO_SCOPES` (comma-separated) | `ZohoCRM.users.READ` |
//! | `ZOHO_DC` (where consent starts: `us`, `eu`, ... — the callback names the user's own) | `us` |
//! | `ZOHO_ACCOUNTS_URL` (a proxy, or a simulator) | Zoho's |
//! | `ZOHO_TOKEN_STORE` (`memory`, `file:PATH`, `redis://...`) | `memory` |
//! | `APP_LISTEN` or `--listen` (port 0: any free port) | `127.0.0.1:3000` |
//!
//! The page shows the connection (data centre, scopes, token expiry — never a token) read from
//! the token store, and a button that asks CRM who the connected user is. Open the app at the
//! address of its redirect URI: the sign-in cookie is set for that host only. The app has no
//! login of its own, so anyone who can open it can connect an account: keep it on loopback.
//!
//! It prints `listening on http://HOST:PORT` once it accepts connections.

mod common;

use html_escape::encode_quoted_attribute as escape;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::BoxError;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::authorize::{Connected, Connector};
use zoho_auth::axum::ConnectZoho;
use zoho_auth::client::ZohoClient;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{TokenSet, TokenStore};
use zoho_auth::{Accounts, ClientId, ClientSecret, DataCenter, TokenCache};

#[derive(Parser, Debug)]
#[command(about = "A web app that connects a Zoho account and calls Zoho CRM with it")]
struct Args {
    /// The address to listen on; port 0 picks a free one.
    #[arg(long, env = "APP_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

/// CRM's "who am I" endpoint: relative, so it goes to the connected account's `api_domain`.
const CURRENT_USER: &str = "/crm/v8/users?type=CurrentUser";

/// The axum state.
#[derive(Clone)]
struct App(Arc<Inner>);

struct Inner {
    store: Arc<dyn TokenStore>,
    client_id: ClientId,
    client_secret: ClientSecret,
    /// Where refreshes go when the store does not say which server issued its refresh token.
    accounts: Accounts,
    /// `None` until an account is connected; replaced on every new connection.
    zoho: RwLock<Option<ZohoClient>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_logging("zoho_auth=info");
    let args = Args::parse();

    // Bound first: with port 0 the redirect URI needs the port the system chose.
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let base = format!("http://{addr}");
    let redirect_uri = var("ZOHO_REDIRECT_URI").unwrap_or(format!("{base}/zoho/callback"));
    let scopes = var("ZOHO_SCOPES").unwrap_or("ZohoCRM.users.READ".into());
    let dc: DataCenter = var("ZOHO_DC").as_deref().unwrap_or("us").parse()?;

    // Kept alive until the server stops.
    let mut simulator = None;
    let (client_id, client_secret, custom_accounts) =
        match (var("ZOHO_CLIENT_ID"), var("ZOHO_CLIENT_SECRET")) {
            (Some(id), Some(secret)) => (
                ClientId::new(id),
                ClientSecret::new(secret),
                var("ZOHO_ACCOUNTS_URL")
                    .map(|url| Accounts::custom(&url))
                    .transpose()?,
            ),
            _ => {
                let zoho = Simulator::start().await?;
                zoho.register_redirect_uri(&redirect_uri);
                println!(
                    "No ZOHO_CLIENT_ID/ZOHO_CLIENT_SECRET set: using the embedded Zoho simulator \
                     at {} (redirect URI {redirect_uri} registered)",
                    zoho.url()
                );
                let settings = (
                    zoho.client_id(),
                    zoho.client_secret(),
                    Some(Accounts::custom(&zoho.url())?),
                );
                simulator = Some(zoho);
                settings
            }
        };
    let store = zoho_auth::store::open(var("ZOHO_TOKEN_STORE").as_deref().unwrap_or("memory"))?;
    println!("Token store: {store:?}");

    let mut connector = Connector::new(client_id.clone(), client_secret.clone(), &redirect_uri)
        .scopes(scopes.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .data_center(dc)
        .store(store.clone());
    if let Some(accounts) = &custom_accounts {
        connector = connector.accounts(accounts.clone());
    }
    let app = App(Arc::new(Inner {
        store,
        client_id,
        client_secret,
        accounts: custom_accounts.unwrap_or(Accounts::dc(dc)),
        zoho: RwLock::new(None),
    }));
    app.use_stored_account().await?;

    let on_connected = app.clone();
    let connect = ConnectZoho::new(connector).on_connected(move |connected: &Connected| {
        on_connected.use_accounts(connected.accounts.clone());
    });
    let router = Router::new()
        .route("/", get(home))
        .route("/me", get(me))
        .nest("/zoho", connect.into_router())
        .with_state(app);

    println!("Open {base}/ and click \"Connect Zoho\".");
    println!("listening on {base}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(simulator);
    Ok(())
}

/// A non-empty environment variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl App {
    /// Builds the Zoho client for the account a previous run connected, if any.
    async fn use_stored_account(&self) -> Result<(), BoxError> {
        let Some(set) = self.0.store.load().await? else {
            return Ok(());
        };
        if set.refresh_token.is_some() {
            let accounts = match &set.accounts_url {
                Some(url) => Accounts::custom(url)?,
                None => self.0.accounts.clone(),
            };
            self.use_accounts(accounts);
        }
        Ok(())
    }

    /// (Re)builds the Zoho client for tokens from `accounts`, which refreshes must go to. The
    /// refresh token itself is read from the store, where the consent flow saved it.
    fn use_accounts(&self, accounts: Accounts) {
        let inner = &self.0;
        let client = match AccountsClient::new(
            accounts,
            inner.client_id.clone(),
            inner.client_secret.clone(),
        ) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the Zoho accounts client");
                return;
            }
        };
        let cache = match TokenCache::from_store(client, inner.store.clone()).build() {
            Ok(cache) => cache,
            Err(error) => {
                tracing::error!(%error, "cannot build the Zoho token cache");
                return;
            }
        };
        // Plain http only to loopback (the simulator): the layer refuses it anywhere else.
        let zoho = match ZohoClient::new(cache) {
            Ok(zoho) => zoho,
            Err(error) => {
                tracing::error!(%error, "cannot build the Zoho client");
                return;
            }
        };
        *inner.zoho.write().unwrap_or_else(PoisonError::into_inner) = Some(zoho);
    }

    fn zoho(&self) -> Option<ZohoClient> {
        self.0
            .zoho
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks CRM who the connected user is. The text is for people; it holds no token.
    async fn who_am_i(&self) -> Result<String, String> {
        let zoho = self.zoho().ok_or("No Zoho account is connected.")?;
        let url = CURRENT_USER;
        let request = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|error| format!("Bad URL {url}: {error}"))?;
        let response = zoho
            .request(request)
            .await
            .map_err(|error| format!("Calling {url} failed: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("Reading the answer of {url} failed: {error}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!(
                "Zoho answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| format!("Zoho's answer is not JSON: {error}"))?;
        let user = &json["users"][0];
        let field = |name: &str| user[name].as_str().unwrap_or("?").to_owned();
        Ok(format!(
            "Zoho CRM says you are {} ({}).",
            field("full_name"),
            field("email")
        ))
    }

    /// The page: the connection as the store records it, and an API call's outcome if any.
    async fn page(&self, api_result: Option<Result<String, String>>) -> Html<String> {
        let mut body = String::from("<h1>Zoho demo app</h1>\n");
        match self.0.store.load().await {
            Err(error) => {
                body += &format!(
                    "<p id=\"store-error\">The token store failed: {}</p>\n",
                    escape(&error.to_string())
                )
            }
            Ok(Some(set)) if set.refresh_token.is_some() => body += &connected(&set),
            Ok(set) => {
                let failure = set.and_then(|set| set.failure);
                if let Some(failure) = failure {
                    body += &format!(
                        "<p id=\"failure\">Zoho refused the stored refresh token ({}): connect \
                         again.</p>\n",
                        escape(&failure.code)
                    );
                }
                body += "<p id=\"not-connected\">No Zoho account is connected.</p>\n\
                         <p><a id=\"connect\" class=\"button\" href=\"/zoho/connect\">Connect \
                         Zoho</a></p>\n";
            }
        }
        if let Some(result) = api_result {
            let (ok, text) = match &result {
                Ok(text) => (true, text),
                Err(text) => (false, text),
            };
            body += &format!(
                "<p id=\"api-result\" data-ok=\"{ok}\">{}</p>\n",
                escape(text)
            );
        }
        Html(format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Zoho demo app</title><style>body{{font-family:sans-serif;max-width:40em;\
             margin:2em auto;padding:0 1em}}.button,button{{font-size:1.1em}}</style></head>\n\
             <body>\n{body}</body></html>\n"
        ))
    }
}

/// The connected account, from the store: never a token.
fn connected(set: &TokenSet) -> String {
    let data_center = match set.accounts_url.as_deref() {
        Some(url) => match DataCenter::from_accounts_url(url) {
            Some(dc) => format!("{} ({url})", dc.location().to_uppercase()),
            None => format!("custom accounts server {url}"),
        },
        None => "unknown".to_owned(),
    };
    let (api_domain, scopes, expiry) = match &set.access {
        Some(access) => {
            let expiry = match access.expires_at.duration_since(SystemTime::now()) {
                Ok(left) => format!("expires in {} minutes", left.as_secs() / 60),
                Err(_) => "expired; the next call gets a new one".to_owned(),
            };
            let scopes = access
                .scopes
                .iter()
                .map(|scope| format!("<li>{}</li>", escape(scope)))
                .collect();
            (access.api_domain.as_deref(), scopes, expiry)
        }
        None => (None, String::new(), "none yet".to_owned()),
    };
    format!(
        "<p id=\"connected\">A Zoho account is connected.</p>\n<dl>\n\
         <dt>Data centre</dt><dd id=\"data-center\">{}</dd>\n\
         <dt>API domain</dt><dd id=\"api-domain\">{}</dd>\n\
         <dt>Scopes</dt><dd><ul id=\"scopes\">{scopes}</ul></dd>\n\
         <dt>Access token</dt><dd id=\"expires\">{expiry}</dd>\n</dl>\n\
         <form method=\"get\" action=\"/me\"><button id=\"call-api\" type=\"submit\">Ask Zoho CRM \
         who I am</button></form>\n\
         <p><a id=\"reconnect\" href=\"/zoho/connect\">Connect another account</a></p>\n",
        escape(&data_center),
        escape(api_domain.unwrap_or("unknown")),
    )
}

/// `GET /`.
async fn home(State(app): State<App>) -> Html<String> {
    app.page(None).await
}

/// `GET /me`: the "call the API" button.
async fn me(State(app): State<App>) -> Html<String> {
    let result = app.who_am_i().await;
    if let Err(error) = &result {
        tracing::warn!(%error, "the CRM call failed");
    }
    app.page(Some(result)).await
}
