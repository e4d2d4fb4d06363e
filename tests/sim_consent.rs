//! The simulator's consent flow behaves as zoho-wire.md §5 says Zoho's does.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use zoho_auth::sim::{Counters, Simulator, SimulatorBuilder};

use common::{Reply, Zoho};

const CALLBACK: &str = "https://app.example.com/callback";
const SCOPES: &str = "ZohoCRM.modules.ALL,ZohoCRM.users.READ";
/// 43 unreserved characters: the shortest verifier RFC 7636 allows.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// Changes to a valid authorization request: a `None` value removes the parameter.
type Changes<'a> = &'a [(&'a str, Option<&'a str>)];

impl Reply {
    /// Asserts Zoho's HTML error page with `message`: no redirect.
    fn assert_error_page(&self, message: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{self:?}");
        assert!(self.content_type.starts_with("text/html"), "{self:?}");
        assert_eq!(self.location, None, "{self:?}");
        assert!(self.text.contains(message), "{message}: {self:?}");
    }

    /// Asserts a `302 Found` and returns its `Location`'s query parameters.
    fn callback(&self) -> HashMap<String, String> {
        assert_eq!(self.status, StatusCode::FOUND, "{self:?}");
        callback_params(self.location.as_deref().expect("a Location"))
    }
}

/// The query of a callback URL at [`CALLBACK`], decoded; a repeated parameter fails.
fn callback_params(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        CALLBACK
    );
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let params: HashMap<String, String> = pairs.iter().cloned().collect();
    assert_eq!(params.len(), pairs.len(), "{location}");
    params
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier))
}

/// A simulator with [`CALLBACK`] registered.
async fn with_callback(builder: SimulatorBuilder) -> Zoho {
    Zoho::with(builder.redirect_uri(CALLBACK)).await
}

impl Zoho {
    /// A valid authorization request (offline, with `state`), changed by `changes`.
    fn authorize_url(&self, changes: Changes<'_>) -> String {
        let client_id = self.sim.client_id().to_string();
        let mut params = vec![
            ("client_id", Some(client_id.as_str())),
            ("response_type", Some("code")),
            ("redirect_uri", Some(CALLBACK)),
            ("scope", Some(SCOPES)),
            ("access_type", Some("offline")),
            ("state", Some("st&te=1 é")),
        ];
        for &(name, value) in changes {
            params.retain(|&(existing, _)| existing != name);
            params.push((name, value));
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().filter_map(|&(k, v)| Some((k, v?))))
            .finish();
        format!("{}?{query}", self.sim.authorize_url())
    }

    async fn get(&self, url: &str) -> Reply {
        Reply::read(self.http.get(url).send().await.unwrap()).await
    }

    async fn decide(&self, request_id: &str, decision: &str) -> Reply {
        let response = self
            .http
            .post(self.url("/oauth/v2/auth/decision"))
            .form(&[("request_id", request_id), ("decision", decision)])
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    /// Opens the consent page for `changes` and clicks `decision`; returns the callback params.
    async fn consent(&self, changes: Changes<'_>, decision: &str) -> HashMap<String, String> {
        let page = self.get(&self.authorize_url(changes)).await;
        self.decide(&page.request_id(), decision).await.callback()
    }

    /// `POST /oauth/v2/token` with `grant_type=authorization_code` plus `extra`; the JSON answer.
    async fn exchange(&self, code: &str, extra: &[(&str, &str)]) -> Value {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
        form.extend_from_slice(extra);
        self.token(&self.params(&form)).await.json()
    }

    /// Exchanges `code` naming [`CALLBACK`] (plus `extra`); the JSON answer.
    async fn redeem(&self, code: &str, extra: &[(&str, &str)]) -> Value {
        let mut form = vec![("redirect_uri", CALLBACK)];
        form.extend_from_slice(extra);
        self.exchange(code, &form).await
    }
}

fn assert_invalid_code(answer: &Value) {
    assert_eq!(answer, &serde_json::json!({"error": "invalid_code"}));
}

#[tokio::test]
async fn consent_page_for_a_valid_request() {
    let zoho = with_callback(Simulator::builder()).await;
    let page = zoho.get(&zoho.authorize_url(&[])).await;
    let request_id = page.request_id();
    assert!(!request_id.is_empty());
    for needle in [
        "<title>Zoho Simulator – Consent</title>",
        "<li>ZohoCRM.modules.ALL</li>",
        "<li>ZohoCRM.users.READ</li>",
        zoho.sim.client_id().as_str(),
        r#"action="/oauth/v2/auth/decision""#,
        r#"id="accept" name="decision" value="accept""#,
        r#"id="deny" name="decision" value="deny""#,
    ] {
        assert!(page.text.contains(needle), "{needle}: {page:?}");
    }
    // The state stays on the server, not in the page.
    assert!(!page.text.contains("st&amp;te"), "{page:?}");
    let counters = zoho.sim.counters();
    assert_eq!((counters.consents_shown, counters.auth_errors), (1, 0));
}

#[tokio::test]
async fn bad_requests_get_an_html_error_page_not_a_redirect() {
    let zoho = with_callback(Simulator::builder()).await;
    let cases: &[(Changes, &str)] = &[
        (&[("client_id", Some("1000.WRONG"))], "Invalid Client ID"),
        (&[("client_id", None)], "Invalid Client ID"),
        (
            &[("redirect_uri", Some("https://evil.example.com/callback"))],
            "Invalid Redirect Uri",
        ),
        // Exact match: a trailing slash or an extra query is another URI.
        (
            &[("redirect_uri", Some("https://app.example.com/callback/"))],
            "Invalid Redirect Uri",
        ),
        (
            &[("redirect_uri", Some("https://app.example.com/callback?x=1"))],
            "Invalid Redirect Uri",
        ),
        (&[("redirect_uri", None)], "Invalid Redirect Uri"),
        (&[("response_type", None)], "Invalid Response Type"),
        (&[("response_type", Some("token"))], "Invalid Response Type"),
        (&[("scope", None)], "Invalid OAuth Scope"),
        (&[("scope", Some(""))], "Invalid OAuth Scope"),
        (
            &[("scope", Some("ZohoCRM.modules.ALL ZohoCRM.users.READ"))],
            "Invalid OAuth Scope",
        ),
        (
            &[("scope", Some("ZohoCRM.modules.ALL,"))],
            "Invalid OAuth Scope",
        ),
        (&[("access_type", Some("forever"))], "Invalid Access Type"),
        (
            &[
                ("code_challenge", Some(VERIFIER)),
                ("code_challenge_method", Some("S512")),
            ],
            "Invalid Code Challenge Method",
        ),
        (
            &[("code_challenge", Some("too-short"))],
            "Invalid Code Challenge",
        ),
        (
            &[("code_challenge_method", Some("S256"))],
            "Invalid Code Challenge",
        ),
    ];
    for (changes, message) in cases {
        zoho.get(&zoho.authorize_url(changes))
            .await
            .assert_error_page(message);
    }
    let counters = zoho.sim.counters();
    assert_eq!(counters.auth_errors, cases.len() as u64);
    assert_eq!(counters.consents_shown, 0);
}

#[tokio::test]
async fn accept_redirects_with_a_one_time_code_for_a_refresh_token() {
    let zoho = with_callback(Simulator::builder()).await;
    let page = zoho.get(&zoho.authorize_url(&[])).await;
    let reply = zoho.decide(&page.request_id(), "accept").await;
    // Zoho's order: state, code, location, accounts-server, the URL percent-encoded.
    let location = reply.location.clone().unwrap();
    let encoded_sim =
        form_urlencoded::byte_serialize(zoho.sim.url().as_bytes()).collect::<String>();
    assert!(
        location.starts_with(&format!("{CALLBACK}?state=")),
        "{location}"
    );
    assert!(
        location.ends_with(&format!("&location=us&accounts-server={encoded_sim}")),
        "{location}"
    );
    let params = reply.callback();
    assert_eq!(params["state"], "st&te=1 é");
    assert_eq!(params["location"], "us");
    assert_eq!(params["accounts-server"], zoho.sim.url());
    let code = &params["code"];

    // Bound to the redirect URI; a wrong one does not spend it.
    let wrong = zoho
        .exchange(code, &[("redirect_uri", "https://evil.example.com/cb")])
        .await;
    assert_eq!(wrong["error"], "invalid_redirect_uri");
    let answer = zoho.redeem(code, &[]).await;
    assert_eq!(answer["scope"], "ZohoCRM.modules.ALL ZohoCRM.users.READ");
    let access = answer["access_token"].as_str().unwrap();
    assert!(zoho.sim.is_access_token_live(access));
    let refresh = zoho_auth::RefreshToken::new(answer["refresh_token"].as_str().unwrap());
    assert_eq!(zoho.sim.live_tokens(&refresh), 1);
    assert_invalid_code(&zoho.redeem(code, &[]).await);

    let counters = zoho.sim.counters();
    assert_eq!(
        (counters.consents_shown, counters.consents_accepted),
        (1, 1)
    );
    assert_eq!((counters.consents_denied, counters.auth_errors), (0, 0));
}

#[tokio::test]
async fn online_consent_gives_no_refresh_token_and_keeps_the_callback_query() {
    let with_query = "https://app.example.com/callback?tenant=a%20b";
    let zoho = with_callback(Simulator::builder().redirect_uri(with_query)).await;
    let page = zoho
        .get(&zoho.authorize_url(&[
            ("access_type", None),
            ("state", None),
            ("redirect_uri", Some(with_query)),
        ]))
        .await;
    let reply = zoho.decide(&page.request_id(), "accept").await;
    let location = reply.location.clone().unwrap();
    assert!(
        location.starts_with(&format!("{with_query}&code=")),
        "{location}"
    );
    let params = reply.callback();
    assert_eq!(params["tenant"], "a b");
    assert!(
        !params.contains_key("state"),
        "no state was sent: {location}"
    );

    let answer = zoho
        .exchange(&params["code"], &[("redirect_uri", with_query)])
        .await;
    assert!(answer["access_token"].is_string(), "{answer}");
    assert!(answer.get("refresh_token").is_none(), "{answer}");
}

#[tokio::test]
async fn repeat_offline_consent_gives_a_refresh_token_only_with_prompt_consent() {
    let zoho = with_callback(Simulator::builder()).await;
    let first = zoho.consent(&[], "accept").await;
    assert!(zoho.redeem(&first["code"], &[]).await["refresh_token"].is_string());
    let repeat = zoho.consent(&[], "accept").await;
    let answer = zoho.redeem(&repeat["code"], &[]).await;
    assert!(answer["access_token"].is_string(), "{answer}");
    assert!(answer.get("refresh_token").is_none(), "{answer}");
    let prompted = zoho.consent(&[("prompt", Some("consent"))], "accept").await;
    assert!(zoho.redeem(&prompted["code"], &[]).await["refresh_token"].is_string());
}

#[tokio::test]
async fn deny_redirects_with_access_denied_and_state() {
    let zoho = with_callback(Simulator::builder()).await;
    let params = zoho.consent(&[], "deny").await;
    let expected: HashMap<String, String> = [("error", "access_denied"), ("state", "st&te=1 é")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(params, expected);
    let counters = zoho.sim.counters();
    assert_eq!(
        (counters.consents_accepted, counters.consents_denied),
        (0, 1)
    );
}

#[tokio::test]
async fn a_request_id_is_answered_once() {
    let zoho = with_callback(Simulator::builder()).await;
    for first in ["accept", "deny"] {
        let request_id = zoho.get(&zoho.authorize_url(&[])).await.request_id();
        zoho.decide(&request_id, first).await.callback();
        for again in ["accept", "deny"] {
            zoho.decide(&request_id, again)
                .await
                .assert_error_page("Invalid or expired request");
        }
    }
    zoho.decide("0123456789abcdef", "accept")
        .await
        .assert_error_page("Invalid or expired request");
    // Neither button: the page is spent as well.
    let request_id = zoho.get(&zoho.authorize_url(&[])).await.request_id();
    zoho.decide(&request_id, "maybe")
        .await
        .assert_error_page("Invalid decision");
    zoho.decide(&request_id, "accept")
        .await
        .assert_error_page("Invalid or expired request");

    let counters = zoho.sim.counters();
    assert_eq!(counters.auth_errors, 7);
    assert_eq!(
        (counters.consents_accepted, counters.consents_denied),
        (1, 1)
    );
}

#[tokio::test]
async fn pkce_code_needs_the_matching_verifier() {
    let zoho = with_callback(Simulator::builder()).await;
    let s256 = s256(VERIFIER);
    let wrong = "x".repeat(43);
    let methods: [(&str, Option<&str>); 3] = [
        (s256.as_str(), Some("S256")),
        (VERIFIER, Some("plain")),
        // RFC 7636: no method means plain.
        (VERIFIER, None),
    ];
    for (challenge, method) in methods {
        let changes = [
            ("code_challenge", Some(challenge)),
            ("code_challenge_method", method),
        ];
        let code = |params: HashMap<String, String>| params["code"].clone();

        let good = code(zoho.consent(&changes, "accept").await);
        let answer = zoho.redeem(&good, &[("code_verifier", VERIFIER)]).await;
        assert!(answer["access_token"].is_string(), "{method:?}: {answer}");

        // A wrong, malformed or missing verifier fails, and spends the code: the right verifier
        // cannot follow.
        for bad in [Some(wrong.as_str()), Some("short"), Some(challenge), None] {
            if bad == Some(VERIFIER) {
                continue; // plain: the challenge is the verifier.
            }
            let code = code(zoho.consent(&changes, "accept").await);
            let extra: Vec<(&str, &str)> = bad.map(|v| ("code_verifier", v)).into_iter().collect();
            assert_invalid_code(&zoho.redeem(&code, &extra).await);
            assert_invalid_code(&zoho.redeem(&code, &[("code_verifier", VERIFIER)]).await);
        }
    }
    // A verifier for a code issued without a challenge: the authorization URL lost its PKCE.
    let plain_code = zoho.consent(&[], "accept").await["code"].clone();
    assert_invalid_code(
        &zoho
            .redeem(&plain_code, &[("code_verifier", VERIFIER)])
            .await,
    );
}

#[tokio::test]
async fn location_and_accounts_server_can_be_overridden() {
    let forged = "https://accounts.zoho.evil.example";
    let zoho = with_callback(Simulator::builder().location("eu").accounts_server(forged)).await;
    let reply = {
        let page = zoho.get(&zoho.authorize_url(&[])).await;
        zoho.decide(&page.request_id(), "accept").await
    };
    let location = reply.location.clone().unwrap();
    assert!(
        location.ends_with("&location=eu&accounts-server=https%3A%2F%2Faccounts.zoho.evil.example"),
        "{location}"
    );
    let params = reply.callback();
    assert_eq!(
        (
            params["location"].as_str(),
            params["accounts-server"].as_str()
        ),
        ("eu", forged)
    );
}

#[tokio::test]
async fn redirect_uri_registered_after_start() {
    let zoho = with_callback(Simulator::builder()).await;
    let late = "http://127.0.0.1:1/late";
    let changes = [("redirect_uri", Some(late))];
    zoho.get(&zoho.authorize_url(&changes))
        .await
        .assert_error_page("Invalid Redirect Uri");
    zoho.sim.register_redirect_uri(late);
    zoho.get(&zoho.authorize_url(&changes)).await.request_id();
}

#[tokio::test]
async fn consent_code_expires() {
    let zoho =
        with_callback(Simulator::builder().grant_code_lifetime(Duration::from_millis(50))).await;
    let params = zoho.consent(&[], "accept").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_invalid_code(&zoho.redeem(&params["code"], &[]).await);
}

#[tokio::test]
async fn accept_and_deny_consent_helpers_click_through() {
    let zoho = with_callback(Simulator::builder()).await;
    let url = zoho.authorize_url(&[]);
    let accepted = callback_params(&zoho.sim.accept_consent(&url).unwrap());
    assert_eq!(accepted["state"], "st&te=1 é");
    assert_eq!(accepted["accounts-server"], zoho.sim.url());
    assert!(zoho.redeem(&accepted["code"], &[]).await["refresh_token"].is_string());
    let denied = callback_params(&zoho.sim.deny_consent(&url).unwrap());
    assert_eq!(denied["error"], "access_denied");

    let bad = zoho.authorize_url(&[("client_id", Some("1000.WRONG"))]);
    assert_eq!(
        zoho.sim.accept_consent(&bad).unwrap_err(),
        "Invalid Client ID"
    );
    // A URL for another host (here: real Zoho) would never reach the simulator.
    let elsewhere = url.replace(&zoho.sim.url(), "https://accounts.zoho.com");
    let err = zoho.sim.accept_consent(&elsewhere).unwrap_err();
    assert!(err.contains("is not"), "{err}");

    // Every other counter stays at zero.
    let mut expected = Counters::default();
    expected.consents_shown = 2;
    expected.consents_accepted = 1;
    expected.consents_denied = 1;
    expected.auth_errors = 1;
    expected.token_requests = 1;
    expected.code_grants = 1;
    expected.tokens_issued = 1;
    assert_eq!(zoho.sim.counters(), expected);
}
