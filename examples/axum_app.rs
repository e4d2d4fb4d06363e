//! A small web app where each user connects a Zoho account of their own: a sign-in (a user name,
//! no password), `zoho_auth::axum`'s "Connect Zoho" flow for many connections, then calls to
//! Zoho CRM through one `ZohoClient` over `ZohoAuthLayer::connections`, which picks the
//! signed-in user's connection for every request.
//!
//! ```text
//! cargo run --example axum_app                  # against the embedded simulator: open the URL it prints
//! cargo run --example axum_app -- --listen 127.0.0.1:0
//! ```
//!
//! Without `ZOHO_CLIENT_ID` and `ZOHO_CLIENT_SECRET` it starts the embedded Zoho simulator with
//! two data centres, whose consent page lets the user pick one and has Accept and Deny buttons,
//! and registers the app's redirect URI there. With them it talks to Zoho (or to
//! `ZOHO_ACCOUNTS_URL`): register the redirect URI in Zoho's API console first. Settings, all
//! optional:
//!
//! | variable | default |
//! |---|---|
//! | `ZOHO_REDIRECT_URI` | `http://<listen address>/zoho/callback` |
//! | `ZOHO_SCOPES` (comma-separated) | `ZohoCRM.users.READ` |
//! | `ZOHO_DC` (where consent starts: `us`, `eu`, ... — the callback names the user's own) | `us` |
//! | `ZOHO_ACCOUNTS_URL` (a proxy, or a simulator) | Zoho's |
//! | `ZOHO_MORE_ACCOUNTS_URLS` (comma-separated: further custom accounts servers a callback may name, e.g. a simulator's other data centres) | none |
//! | `ZOHO_TOKEN_STORE` (`memory`, `file:PATH` — one file per user in `PATH.connections` —, `redis://...`) | `memory` |
//! | `APP_LISTEN` or `--listen` (port 0: any free port) | `127.0.0.1:3000` |
//!
//! Signing in picks a user name; a random session cookie (`HttpOnly`, `SameSite=Lax`) maps to it
//! in memory, and the name is the user's `ConnectionId`. There are no passwords — anyone can
//! sign in as anyone — so this shows how accounts are kept apart, not how to authenticate: keep
//! it on loopback. The page shows the user's connection (data centre, scopes, token expiry —
//! never a token) read from their record, a button that asks CRM who they are, and one that
//! disconnects (revokes the refresh token at Zoho). Open the app at the address of its redirect
//! URI: the cookies are set for that host only.
//!
//! It prints `listening on http://HOST:PORT` once it accepts connections.

mod common;

use html_escape::encode_quoted_attribute as escape;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use clap::Parser;
use http::header::{COOKIE, SET_COOKIE};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use tower::BoxError;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::authorize::Connector;
use zoho_auth::axum::ConnectZoho;
use zoho_auth::client::ZohoClient;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, TokenSet};
use zoho_auth::{
    Accounts, ClientId, ClientSecret, ConnectionId, Connections, DataCenter, ZohoAuthLayer,
};

#[derive(Parser, Debug)]
#[command(about = "A web app where each user connects a Zoho account and calls Zoho CRM with it")]
struct Args {
    /// The address to listen on; port 0 picks a free one.
    #[arg(long, env = "APP_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

/// CRM's "who am I" endpoint: relative, so it goes to the user's own `api_domain`.
const CURRENT_USER: &str = "/crm/v8/users?type=CurrentUser";

/// The session cookie: a random token, mapped to a user name in memory.
const SESSION_COOKIE: &str = "app_session";

/// The axum state.
#[derive(Clone)]
struct App(Arc<Inner>);

struct Inner {
    store: Arc<dyn ConnectionStore>,
    /// One client for every user: the layer picks each request's connection.
    zoho: ZohoClient,
    /// Session token → the signed-in user's connection.
    sessions: Mutex<HashMap<String, ConnectionId>>,
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
    let mut more_accounts = var("ZOHO_MORE_ACCOUNTS_URLS")
        .iter()
        .flat_map(|urls| urls.split(','))
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(Accounts::custom)
        .collect::<Result<Vec<_>, _>>()?;

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
                let zoho = Simulator::builder().data_centers(2).start().await?;
                zoho.register_redirect_uri(&redirect_uri);
                println!(
                    "No ZOHO_CLIENT_ID/ZOHO_CLIENT_SECRET set: using the embedded Zoho simulator \
                     at {} with 2 data centres (redirect URI {redirect_uri} registered)",
                    zoho.url()
                );
                // Its consent page lets the user pick a data centre; the callback then names
                // that one's accounts server, which must be accepted by name.
                for dc in 1..zoho.data_center_count() {
                    more_accounts.push(Accounts::custom(&zoho.data_center_url(dc)?)?);
                }
                let settings = (
                    zoho.client_id(),
                    zoho.client_secret(),
                    Some(Accounts::custom(&zoho.url())?),
                );
                simulator = Some(zoho);
                settings
            }
        };
    let store =
        zoho_auth::store::open_connections(var("ZOHO_TOKEN_STORE").as_deref().unwrap_or("memory"))?;
    println!("Token store: {store:?}");

    let mut connector = Connector::new(client_id.clone(), client_secret.clone(), &redirect_uri)
        .scopes(scopes.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .data_center(dc)
        .also_accept(more_accounts);
    if let Some(accounts) = &custom_accounts {
        connector = connector.accounts(accounts.clone());
    }
    // Refreshes go to the accounts server each record names; this one is for records that
    // name none.
    let accounts = AccountsClient::new(
        custom_accounts.unwrap_or(Accounts::dc(dc)),
        client_id,
        client_secret,
    )?;
    let connections = Connections::builder(accounts, store.clone()).build()?;
    // Plain http only to loopback (the simulator): the layer refuses it anywhere else.
    let zoho = ZohoClient::with_layer(ZohoAuthLayer::connections(connections.clone()))?;
    let app = App(Arc::new(Inner {
        store: store.clone(),
        zoho,
        sessions: Mutex::default(),
    }));

    // The session middleware below puts the signed-in user's id in the request's extensions.
    let connect = ConnectZoho::for_connections(connector, store, |parts| {
        parts.extensions.get::<ConnectionId>().cloned()
    })
    // A user who connects again (after a revocation) is served from their next request on.
    .on_connected(move |connected| {
        if let Some(id) = &connected.connection {
            connections.recheck_store(id);
        }
    });
    let router = Router::new()
        .route("/", get(home))
        .route("/me", get(me))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .nest("/zoho", connect.into_router())
        .layer(middleware::from_fn_with_state(app.clone(), session))
        .with_state(app);

    println!("Open {base}/, sign in and click \"Connect Zoho\".");
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

/// The session cookie's value, if the request has one.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    let cookies = headers.get_all(COOKIE).iter();
    cookies
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// Puts the signed-in user's `ConnectionId` in the request's extensions, for the routes and for
/// the "Connect Zoho" router.
async fn session(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let user =
        session_token(request.headers()).and_then(|token| app.sessions().get(token).cloned());
    if let Some(user) = user {
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

/// `POST /login` with a form field `name`: a new session for that user.
async fn login(State(app): State<App>, body: Bytes) -> Response {
    let name = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "name")
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    // Short and plain, so that any name is also a tidy file name in a file store.
    let plain = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let Some(user) = plain.then(|| ConnectionId::new(&name).ok()).flatten() else {
        return app
            .page(
                None,
                Some("A user name is 1 to 32 letters, digits, - or _.".into()),
                None,
            )
            .await
            .into_response();
    };
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    app.sessions().insert(token.clone(), user);
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
    ([(SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: ends the session.
async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        app.sessions().remove(token);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    ([(SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

impl App {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionId>> {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks CRM who `user`'s Zoho account is. The text is for people; it holds no token.
    async fn who_am_i(&self, user: &ConnectionId) -> Result<String, String> {
        let url = CURRENT_USER;
        let mut request = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|error| format!("Bad URL {url}: {error}"))?;
        // Which connection's token, data centre and `api_domain` the layer uses.
        request.extensions_mut().insert(user.clone());
        let response = self
            .0
            .zoho
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

    /// The page: the sign-in form, or the user's connection as their record shows it, and an
    /// API call's outcome if any.
    async fn page(
        &self,
        user: Option<&ConnectionId>,
        notice: Option<String>,
        api_result: Option<Result<String, String>>,
    ) -> Html<String> {
        let mut body = String::from("<h1>Zoho demo app</h1>\n");
        if let Some(notice) = notice {
            body += &format!("<p id=\"notice\">{}</p>\n", escape(&notice));
        }
        match user {
            None => {
                body += "<form id=\"sign-in\" method=\"post\" action=\"/login\">\
                         <label>User name <input id=\"name\" name=\"name\" required></label> \
                         <button id=\"sign-in-button\" type=\"submit\">Sign in</button></form>\n";
            }
            Some(user) => {
                body += &format!(
                    "<p>Signed in as <b id=\"signed-in-as\">{}</b>. <form method=\"post\" \
                     action=\"/logout\" style=\"display:inline\"><button id=\"sign-out\" \
                     type=\"submit\">Sign out</button></form></p>\n",
                    escape(user.as_str())
                );
                body += &self.connection(user).await;
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

    /// The user's connection, from their record.
    async fn connection(&self, user: &ConnectionId) -> String {
        match self.0.store.connection(user).load().await {
            Err(error) => format!(
                "<p id=\"store-error\">The token store failed: {}</p>\n",
                escape(&error.to_string())
            ),
            Ok(Some(set)) if set.refresh_token.is_some() && set.failure.is_none() => {
                connected(&set)
            }
            Ok(set) => {
                let mut html = String::new();
                if let Some(failure) = set.and_then(|set| set.failure) {
                    html += &format!(
                        "<p id=\"failure\">Zoho refused the stored refresh token ({}): connect \
                         again.</p>\n",
                        escape(&failure.code)
                    );
                }
                html += "<p id=\"not-connected\">No Zoho account is connected.</p>\n\
                         <p><a id=\"connect\" class=\"button\" href=\"/zoho/connect\">Connect \
                         Zoho</a></p>\n";
                html
            }
        }
    }
}

/// The connected account, from the record: never a token.
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
         <form method=\"post\" action=\"/zoho/disconnect\"><button id=\"disconnect\" \
         type=\"submit\">Disconnect Zoho</button></form>\n\
         <p><a id=\"reconnect\" href=\"/zoho/connect\">Connect another account</a></p>\n",
        escape(&data_center),
        escape(api_domain.unwrap_or("unknown")),
    )
}

/// `GET /`.
async fn home(State(app): State<App>, user: Option<Extension<ConnectionId>>) -> Html<String> {
    app.page(user.as_deref(), None, None).await
}

/// `GET /me`: the "call the API" button.
async fn me(State(app): State<App>, user: Option<Extension<ConnectionId>>) -> Html<String> {
    let Some(Extension(user)) = user else {
        return app.page(None, Some("Sign in first.".into()), None).await;
    };
    let result = app.who_am_i(&user).await;
    if let Err(error) = &result {
        tracing::warn!(%error, %user, "the CRM call failed");
    }
    app.page(Some(&user), None, Some(result)).await
}
