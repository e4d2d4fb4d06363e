//! "Connect Zoho" for many users (issue 11): `ConnectZoho::for_connections` against a simulator
//! with two data centres, over HTTP with each user's own cookie jar. Each consent lands in its
//! own connection's record only, a sign-in cookie never completes in another user's session,
//! `/status` and `/disconnect` work on the request's connection, and each user's API calls go to
//! their own data centre.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::StatusCode;
use tower::{Layer, ServiceExt};
use zoho_auth::authorize::Connector;
use zoho_auth::axum::ConnectZoho;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections};
use zoho_auth::{Accounts, ConnectionId, Connections, RefreshToken, ZohoAuthLayer};

use common::body_text;

/// A user's browser: their own cookie jar (by name, as every cookie here has `Path=/`), signed
/// in to the app as `user` through an `x-user` header that stands for the app's session.
struct Browser {
    user: &'static str,
    jar: BTreeMap<String, String>,
}

struct App {
    base: String,
    http: reqwest::Client,
    zoho: Simulator,
    store: Arc<MemoryConnections>,
    _server: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let zoho = Simulator::builder().data_centers(2).start().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let redirect = format!("{base}/zoho/callback");
        zoho.register_redirect_uri(&redirect);
        let accounts = |dc| Accounts::custom(&zoho.data_center_url(dc).unwrap()).unwrap();
        let connector = Connector::new(zoho.client_id(), zoho.client_secret(), &redirect)
            .scopes(["ZohoCRM.users.READ"])
            .accounts(accounts(0))
            .also_accept([accounts(1)]);
        let store = Arc::new(MemoryConnections::new());
        let connect = ConnectZoho::for_connections(connector, store.clone(), |parts| {
            ConnectionId::new(parts.headers.get("x-user")?.to_str().ok()?).ok()
        });
        let router = Router::new().nest("/zoho", connect.into_router());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let http = zoho_auth::accounts::http_client_builder()
            .unwrap()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            http,
            zoho,
            store,
            _server: server,
        }
    }

    /// `GET`s `url` (a path of the app, or a full URL) as `browser`, keeping the cookies it sets.
    async fn get(&self, browser: &mut Browser, url: &str) -> (StatusCode, Option<String>, String) {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        };
        let request = self.http.get(url).header("x-user", browser.user);
        self.send(browser, request).await
    }

    async fn send(
        &self,
        browser: &mut Browser,
        mut request: reqwest::RequestBuilder,
    ) -> (StatusCode, Option<String>, String) {
        if !browser.jar.is_empty() {
            let cookies: Vec<String> = browser
                .jar
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header(COOKIE, cookies.join("; "));
        }
        let response = request.send().await.unwrap();
        for set_cookie in response.headers().get_all(SET_COOKIE) {
            let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                browser.jar.remove(name);
            } else {
                browser.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (response.status(), location, response.text().await.unwrap())
    }

    /// Starts a consent as `browser` and has the simulator's user accept it in data centre `dc`:
    /// the callback URL Zoho would send the browser to.
    async fn consent(&self, browser: &mut Browser, dc: usize) -> String {
        let (status, consent, _) = self.get(browser, "/zoho/connect").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        self.zoho
            .accept_consent_in(&consent.unwrap(), dc)
            .expect("the simulator accepts")
    }

    async fn refresh_token(&self, user: &str) -> Option<RefreshToken> {
        let record = self.store.connection(&user.parse().unwrap());
        record.load().await.unwrap()?.refresh_token
    }

    async fn status(&self, browser: &mut Browser) -> serde_json::Value {
        let (status, _, body) = self.get(browser, "/zoho/status").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn reason(page: &str) -> &str {
    let start = page.find("data-reason=\"").expect("an error page") + 13;
    &page[start..start + page[start..].find('"').unwrap()]
}

fn browser(user: &'static str) -> Browser {
    Browser {
        user,
        jar: BTreeMap::new(),
    }
}

#[tokio::test]
async fn two_users_connect_two_accounts_in_two_data_centres() {
    let app = App::start().await;
    let (mut alice, mut bob) = (browser("alice"), browser("bob"));
    for (user, dc) in [(&mut alice, 0), (&mut bob, 1)] {
        let callback = app.consent(user, dc).await;
        let (status, _, page) = app.get(user, &callback).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("data-outcome=\"connected\""), "{page}");
    }
    let alices = app.refresh_token("alice").await.expect("alice's record");
    let bobs = app.refresh_token("bob").await.expect("bob's record");
    assert_ne!(alices, bobs);

    for (user, dc) in [(&mut alice, 0), (&mut bob, 1)] {
        let status = app.status(user).await;
        assert_eq!(status["connection"], user.user);
        assert_eq!(status["status"], "connected");
        let accounts = status["accounts_server"].as_str().unwrap();
        assert_eq!(
            accounts.trim_end_matches('/'),
            app.zoho.data_center_url(dc).unwrap()
        );
        assert_eq!(status["scopes"], serde_json::json!(["ZohoCRM.users.READ"]));
        assert!(status["access_token_expires_at"].is_u64(), "{status}");
        for token in [&alices, &bobs] {
            assert!(!status.to_string().contains(token.expose()));
        }
    }

    // Each user's calls, with a relative URL, go to their own data centre only.
    let connections = Connections::builder(app.zoho.accounts_client().unwrap(), app.store.clone())
        .build()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let service = ZohoAuthLayer::connections(connections).layer(client);
    let call = |user: &str| {
        let mut request = http::Request::get("/crm/v8/users?type=CurrentUser")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(user.parse::<ConnectionId>().unwrap());
        let service = service.clone();
        async move {
            match service.oneshot(request).await {
                Ok(response) => Ok((response.status(), body_text(response).await)),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    for user in ["alice", "bob"] {
        let (status, body) = call(user).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{user}: {body}");
    }
    for token in [&alices, &bobs] {
        let seen = app
            .zoho
            .counters_for(token)
            .expect("a user of the simulator");
        assert_eq!(
            (seen.api_ok, seen.wrong_dc_api_requests),
            (1, 0),
            "{seen:?}"
        );
    }

    // Bob disconnects: his token is revoked at his data centre, his record goes, Alice's stays.
    let disconnect = app
        .http
        .post(format!("{}/zoho/disconnect", app.base))
        .header("x-user", "bob")
        .header("origin", &app.base);
    let (status, location, _) = app.send(&mut bob, disconnect).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/"))
    );
    assert_eq!(app.zoho.counters_in(1).unwrap().revocations, 1);
    assert_eq!(app.zoho.counters_in(0).unwrap().revocations, 0);
    assert_eq!(app.status(&mut bob).await["status"], "not connected");
    assert_eq!(app.status(&mut alice).await["status"], "connected");
    let listed = app.store.list(None, 10).await.unwrap();
    assert_eq!(listed, [ConnectionId::new("alice").unwrap()]);
    assert_eq!(
        app.zoho.live_tokens(&bobs),
        0,
        "revoked with his refresh token"
    );

    // Bob connects again: his next call, through the cache the registry kept with his revoked
    // access token, uses the new tokens.
    let callback = app.consent(&mut bob, 1).await;
    let (status, _, page) = app.get(&mut bob, &callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, body) = call("bob").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let bobs_new = app.refresh_token("bob").await.unwrap();
    let seen = app.zoho.counters_for(&bobs_new).unwrap();
    assert_eq!(
        (seen.api_ok, seen.wrong_dc_api_requests),
        (1, 0),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_sign_in_cookie_replayed_in_another_session_completes_nowhere() {
    let app = App::start().await;
    let (mut alice, mut bob) = (browser("alice"), browser("bob"));
    let callback = app.consent(&mut bob, 1).await;
    app.get(&mut bob, &callback).await;
    let bobs = app.refresh_token("bob").await.expect("bob connected");
    let grants = app.zoho.counters().code_grants;

    // Alice starts a consent and accepts it; her cookie and callback end up in Bob's browser.
    let callback = app.consent(&mut alice, 0).await;
    let mut replay = browser("bob");
    replay.jar = alice.jar.clone();
    replay.jar.extend(bob.jar.clone());
    let (status, _, page) = app.get(&mut replay, &callback).await;
    assert_eq!(
        (status, reason(&page)),
        (StatusCode::FORBIDDEN, "other-connection")
    );
    assert_eq!(app.zoho.counters().code_grants, grants, "no exchange");
    assert_eq!(
        app.refresh_token("bob").await,
        Some(bobs),
        "bob's untouched"
    );
    assert_eq!(app.refresh_token("alice").await, None, "nothing for alice");

    // The refused callback cleared the cookie in that browser; Alice's own still works.
    assert!(replay.jar.is_empty(), "{:?}", replay.jar);
    let (status, _, page) = app.get(&mut alice, &callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(app.refresh_token("alice").await.is_some());
}

#[tokio::test]
async fn another_data_centre_is_refused_unless_accepted() {
    let zoho = Simulator::builder().data_centers(2).start().await.unwrap();
    let redirect = "http://127.0.0.1:9/zoho/callback";
    zoho.register_redirect_uri(redirect);
    let store = Arc::new(MemoryConnections::new());
    // Only DC 0 named: DC 1's callback must not get the client secret.
    let connector = Connector::new(zoho.client_id(), zoho.client_secret(), redirect)
        .scopes(["ZohoCRM.users.READ"])
        .accounts(Accounts::custom(&zoho.url()).unwrap());
    let alice: ConnectionId = "alice".parse().unwrap();
    let (url, pending) = connector.authorize_for(&alice).unwrap();
    let callback = zoho.accept_consent_in(url.as_str(), 1).unwrap();
    let callback = zoho_auth::authorize::Callback::parse(callback.split_once('?').unwrap().1);
    let error = connector
        .complete_for(&*store, &alice, &pending, &callback)
        .await
        .unwrap_err();
    assert!(error.is_authorization(), "{error:?}");
    assert_eq!(zoho.counters().token_requests, 0);
    assert!(store.list(None, 10).await.unwrap().is_empty());
}
