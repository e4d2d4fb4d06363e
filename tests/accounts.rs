//! The accounts client (`zoho_auth::accounts::AccountsClient`) against the simulator and against
//! small recording servers: every grant, revoke, Zoho's error dialect (errors at HTTP 200,
//! localized throttling at 200 and 400), transient failures, timeouts, and how secrets travel.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use zoho_auth::accounts::{AccountsClient, TokenResponse};
use zoho_auth::sim::{Fault, Language, Simulator, SimulatorBuilder};
use zoho_auth::{Accounts, ClientId, ClientSecret, Error, GrantCode, RefreshToken};

use common::accounts_client;

const REDIRECT_URI: &str = "https://app.example.com/zoho/callback";
const CRM_SCOPES: &[&str] = &["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"];
const SOID: &str = "ZohoCRM.600012345";

/// A bound on calls that must fail fast, at once or at a 300 ms timeout: generous, so a loaded
/// machine cannot miss it, and still well below the default 20 s timeout or a slow answer, so a
/// missing bound cannot pass.
const FAST: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn start(builder: SimulatorBuilder) -> Simulator {
    builder.start().await.expect("simulator starts")
}

async fn sim() -> Simulator {
    start(Simulator::builder()).await
}

/// Runs `call` and returns its error, failing the test if it succeeded.
fn expect_err<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) -> Error {
    match result {
        Ok(value) => panic!("{what}: expected an error, got {value:?}"),
        Err(err) => err,
    }
}

/// Runs every call of `client` once, with throwaway credentials.
async fn every_call(client: &AccountsClient) -> [(&'static str, Result<(), Error>); 4] {
    let refresh = RefreshToken::new("1000.every.refresh");
    let code = GrantCode::new("1000.every.code");
    [
        ("refresh", client.refresh(&refresh).await.map(drop)),
        (
            "exchange_code",
            client.exchange_code(&code, None).await.map(drop),
        ),
        (
            "client_credentials",
            client.client_credentials(CRM_SCOPES, SOID).await.map(drop),
        ),
        ("revoke", client.revoke(&refresh).await),
    ]
}

fn assert_transient(err: &Error, what: &str) {
    assert!(
        err.is_transient(),
        "{what}: expected a transient error, got {err:?}"
    );
    assert!(
        !err.is_permanent(),
        "{what}: transient must not be permanent: {err:?}"
    );
    assert!(!err.is_rate_limited(), "{what}: {err:?}");
    assert!(
        !err.is_invalid_grant() && !err.is_invalid_client(),
        "{what}: {err:?}"
    );
}

fn assert_throttled(err: &Error, status: StatusCode, language: Language, what: &str) {
    assert!(
        err.is_throttled(),
        "{what}: expected throttled, got {err:?}"
    );
    assert!(
        err.is_rate_limited(),
        "{what}: throttled is rate limited: {err:?}"
    );
    assert!(
        !err.is_permanent(),
        "{what}: throttling is not permanent: {err:?}"
    );
    assert!(!err.is_transient(), "{what}: {err:?}");
    assert!(
        !err.is_invalid_grant() && !err.is_invalid_client(),
        "{what}: {err:?}"
    );
    assert_eq!(err.status(), Some(status), "{what}: {err:?}");
    let code = match language {
        Language::Chinese => "拒绝访问",
        _ => "Access Denied",
    };
    assert_eq!(err.zoho_code(), Some(code), "{what}: {err:?}");
}

// ---------------------------------------------------------------------------------------------
// A tiny recording HTTP server
// ---------------------------------------------------------------------------------------------

/// One request as the recording server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    content_length: Option<String>,
    user_agent: Option<String>,
    /// The `x-app` header an application's own client adds.
    x_app: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn params(&self) -> HashMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// What the recording server answers.
#[derive(Clone, Debug)]
enum Reply {
    /// A fixed successful token answer on `/oauth/v2/token`, `{"status":"success"}` on revoke.
    Success,
    /// A redirect with this status to this URL.
    Redirect(StatusCode, String),
    /// A valid token answer padded with whitespace to this many bytes, with a `Content-Length`.
    Padded(usize),
    /// A chunked body that never ends.
    Endless,
}

const FIXED_TOKEN: &str = r#"{"access_token":"1000.fixedaccess.token","refresh_token":"1000.fixedrefresh.token","scope":"ZohoCRM.modules.ALL ZohoCRM.users.READ","api_domain":"https://www.zohoapis.com","token_type":"Bearer","expires_in":3600}"#;

/// A body that yields 8 KiB of spaces forever.
struct EndlessBody;

impl Body for EndlessBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 8 * 1024])))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::clone(&record);
                let reply = reply.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    let reply = reply.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes().to_vec();
                        let path = parts.uri.path().to_owned();
                        record.lock().unwrap().push(Seen {
                            method: parts.method.clone(),
                            path: path.clone(),
                            query: parts.uri.query().map(str::to_owned),
                            content_type: header(&parts.headers, http::header::CONTENT_TYPE),
                            content_length: header(&parts.headers, http::header::CONTENT_LENGTH),
                            user_agent: header(&parts.headers, http::header::USER_AGENT),
                            x_app: header(&parts.headers, "x-app"),
                            body,
                        });
                        Ok::<_, hyper::Error>(answer(&reply, &path))
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self) -> AccountsClient {
        AccountsClient::new(
            Accounts::custom(&self.url).unwrap(),
            ClientId::new("1000.RECORDED"),
            ClientSecret::new(RECORDED_SECRET),
        )
        .unwrap()
    }

    /// A client sending through the application's own `http`.
    fn client_with(&self, http: reqwest::Client) -> AccountsClient {
        AccountsClient::builder(
            Accounts::custom(&self.url).unwrap(),
            ClientId::new("1000.RECORDED"),
            ClientSecret::new(RECORDED_SECRET),
        )
        .http_client(http)
        .build()
        .unwrap()
    }
}

const RECORDED_SECRET: &str = "recorded-client-secret/+&=?";

fn header(headers: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
}

fn answer(reply: &Reply, path: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let json = |body: String| {
        Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json;charset=UTF-8")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    match reply {
        Reply::Success if path.ends_with("/revoke") => json(r#"{"status":"success"}"#.to_owned()),
        Reply::Success => json(FIXED_TOKEN.to_owned()),
        Reply::Redirect(status, location) => Response::builder()
            .status(*status)
            .header(http::header::LOCATION, location.as_str())
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
        Reply::Padded(size) => {
            let mut body = FIXED_TOKEN.to_owned();
            body.push_str(&" ".repeat(size.saturating_sub(body.len())));
            json(body)
        }
        Reply::Endless => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json;charset=UTF-8")
            .body(EndlessBody.boxed())
            .unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Refresh grant
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_returns_a_live_token_without_refresh_token_at_the_simulators_api_domain() {
    let lifetime = Duration::from_secs(1800);
    let sim = start(Simulator::builder().token_lifetime(lifetime)).await;
    let client = accounts_client(&sim);
    let refresh = sim.mint_refresh_token(CRM_SCOPES);

    let token = client.refresh(&refresh).await.expect("refresh succeeds");

    assert!(
        token.refresh_token.is_none(),
        "a refresh answer carries no refresh token"
    );
    assert!(sim.is_access_token_live(token.access_token.expose()));
    assert_eq!(token.api_domain.as_deref(), Some(sim.url().as_str()));
    assert!(
        token.scopes.is_empty(),
        "Zoho's refresh answer names no scope (zoho-wire.md §1)"
    );
    assert_eq!(token.expires_in, lifetime);
    assert_eq!(token.token_type.as_deref(), Some("Bearer"));
    assert_eq!(sim.counters().refresh_grants, 1);

    // The refresh token keeps working: a second refresh mints a different, also live, token.
    let second = client
        .refresh(&refresh)
        .await
        .expect("second refresh succeeds");
    assert_ne!(second.access_token, token.access_token);
    assert_eq!(sim.live_tokens(&refresh), 2);
}

#[tokio::test]
async fn default_lifetime_is_reported_as_3600_seconds() {
    let sim = sim().await;
    let token = accounts_client(&sim)
        .refresh(&sim.mint_refresh_token(&[]))
        .await
        .expect("refresh succeeds");
    assert_eq!(token.expires_in, Duration::from_secs(3600));
}

#[tokio::test]
async fn legacy_answer_shape_means_seconds_never_milliseconds() {
    // Every answer in the legacy shape (`expires_in_sec` + `expires_in` in ms).
    let sim = start(Simulator::builder().legacy_expires(true)).await;
    let client = accounts_client(&sim);
    let token = client
        .refresh(&sim.mint_refresh_token(&[]))
        .await
        .expect("refresh");
    assert_eq!(
        token.expires_in,
        Duration::from_secs(3600),
        "never 3600000 s"
    );

    // With a non-default lifetime too, so the value is read and not assumed.
    let sim = start(
        Simulator::builder()
            .legacy_expires(true)
            .token_lifetime(Duration::from_secs(1200)),
    )
    .await;
    let token = accounts_client(&sim)
        .refresh(&sim.mint_refresh_token(&[]))
        .await
        .expect("refresh");
    assert_eq!(token.expires_in, Duration::from_secs(1200));

    // One answer in the legacy shape, by fault injection.
    let sim = sim_with_fault(Fault::LegacyExpires).await;
    let client = accounts_client(&sim);
    let token = client
        .refresh(&sim.mint_refresh_token(&[]))
        .await
        .expect("refresh");
    assert_eq!(
        token.expires_in,
        Duration::from_secs(3600),
        "never 3600000 s"
    );
    assert_eq!(sim.counters().faults, 1);
    let code = sim.issue_grant_code(&[], true, None);
    let exchanged = client.exchange_code(&code, None).await.expect("exchange");
    assert_eq!(exchanged.expires_in, Duration::from_secs(3600));
}

async fn sim_with_fault(fault: Fault) -> Simulator {
    let sim = sim().await;
    sim.inject(fault, 1);
    sim
}

// ---------------------------------------------------------------------------------------------
// Authorization-code exchange
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn offline_code_yields_a_refresh_token_that_then_refreshes() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let code = sim.issue_grant_code(CRM_SCOPES, true, Some(REDIRECT_URI));

    let exchanged = client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .expect("exchange succeeds");

    let refresh = exchanged
        .refresh_token
        .clone()
        .expect("offline code gives a refresh token");
    assert!(sim.is_access_token_live(exchanged.access_token.expose()));
    assert_eq!(exchanged.scopes, CRM_SCOPES);
    assert_eq!(exchanged.api_domain.as_deref(), Some(sim.url().as_str()));
    assert_eq!(exchanged.expires_in, Duration::from_secs(3600));

    let refreshed = client
        .refresh(&refresh)
        .await
        .expect("the new refresh token works");
    assert!(refreshed.refresh_token.is_none());
    assert!(sim.is_access_token_live(refreshed.access_token.expose()));
    assert_ne!(refreshed.access_token, exchanged.access_token);
    assert_eq!(sim.live_tokens(&refresh), 2);
}

#[tokio::test]
async fn self_client_code_without_redirect_uri_exchanges() {
    let sim = sim().await;
    let code = sim.issue_grant_code(&[], true, None);
    let exchanged = accounts_client(&sim)
        .exchange_code(&code, None)
        .await
        .expect("exchange");
    assert!(exchanged.refresh_token.is_some());
}

#[tokio::test]
async fn online_code_yields_no_refresh_token() {
    let sim = sim().await;
    let code = sim.issue_grant_code(CRM_SCOPES, false, Some(REDIRECT_URI));
    let exchanged = accounts_client(&sim)
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .expect("exchange succeeds");
    assert!(
        exchanged.refresh_token.is_none(),
        "online access gives no refresh token"
    );
    assert!(sim.is_access_token_live(exchanged.access_token.expose()));
}

#[tokio::test]
async fn a_grant_code_is_one_time() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let code = sim.issue_grant_code(&[], true, Some(REDIRECT_URI));
    client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .expect("first use works");

    let err = expect_err(
        client.exchange_code(&code, Some(REDIRECT_URI)).await,
        "second use",
    );
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.zoho_code(), Some("invalid_code"));
    assert_eq!(err.status(), Some(StatusCode::OK));

    let err = expect_err(
        client
            .exchange_code(&GrantCode::new("1000.never.issued"), None)
            .await,
        "unknown code",
    );
    assert!(err.is_invalid_grant(), "{err:?}");
}

#[tokio::test]
async fn redirect_uri_mismatch_is_a_permanent_invalid_redirect_uri() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let code = sim.issue_grant_code(&[], true, Some(REDIRECT_URI));

    for (wrong, what) in [
        (
            Some("https://evil.example.com/callback"),
            "another redirect_uri",
        ),
        (None, "no redirect_uri"),
    ] {
        let err = expect_err(client.exchange_code(&code, wrong).await, what);
        assert!(err.is_permanent(), "{what}: {err:?}");
        assert!(
            !err.is_invalid_grant() && !err.is_transient(),
            "{what}: {err:?}"
        );
        assert_eq!(
            err.zoho_code(),
            Some("invalid_redirect_uri"),
            "{what}: {err:?}"
        );
        assert_eq!(err.status(), Some(StatusCode::OK), "{what}");
    }
    assert_eq!(sim.counters().tokens_issued, 0);
}

#[tokio::test]
async fn an_expired_grant_code_is_an_invalid_grant() {
    let sim = start(Simulator::builder().grant_code_lifetime(Duration::from_millis(100))).await;
    let code = sim.issue_grant_code(&[], true, None);
    // Ten times the code's lifetime: it has certainly expired.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let err = expect_err(
        accounts_client(&sim).exchange_code(&code, None).await,
        "expired code",
    );
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(sim.counters().tokens_issued, 0);
}

// ---------------------------------------------------------------------------------------------
// Client credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_with_soid_mints_a_token() {
    let sim = sim().await;
    let token = accounts_client(&sim)
        .client_credentials(CRM_SCOPES, SOID)
        .await
        .expect("client credentials succeed");
    assert!(sim.is_access_token_live(token.access_token.expose()));
    assert!(token.refresh_token.is_none());
    assert_eq!(token.scopes, CRM_SCOPES);
    assert_eq!(token.api_domain.as_deref(), Some(sim.url().as_str()));
    assert_eq!(sim.counters().client_credentials_grants, 1);
}

#[tokio::test]
async fn client_credentials_without_a_valid_soid_is_missing_org_info() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    for soid in ["", "ZohoCRM", "ZohoCRM.", "600012345"] {
        let err = expect_err(client.client_credentials(CRM_SCOPES, soid).await, soid);
        assert!(err.is_permanent(), "soid {soid:?}: {err:?}");
        assert!(
            !err.is_transient() && !err.is_rate_limited(),
            "soid {soid:?}: {err:?}"
        );
        assert_eq!(err.zoho_code(), Some("missing_org_info"), "soid {soid:?}");
    }
    assert_eq!(sim.counters().tokens_issued, 0);
}

// ---------------------------------------------------------------------------------------------
// Revoke
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_kills_the_refresh_token_and_its_access_tokens() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let refresh = sim.mint_refresh_token(&[]);
    let first = client.refresh(&refresh).await.expect("refresh");
    let second = client.refresh(&refresh).await.expect("refresh");
    assert_eq!(sim.live_tokens(&refresh), 2);

    client.revoke(&refresh).await.expect("revoke succeeds");

    assert_eq!(sim.counters().revocations, 1);
    assert_eq!(sim.live_tokens(&refresh), 0);
    assert!(!sim.is_access_token_live(first.access_token.expose()));
    assert!(!sim.is_access_token_live(second.access_token.expose()));
    let err = expect_err(
        client.refresh(&refresh).await,
        "refresh with a revoked token",
    );
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");

    // Revoking again is not a success (the token is unknown now).
    let err = expect_err(client.revoke(&refresh).await, "second revoke");
    assert!(!err.is_transient(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Zoho's errors at HTTP 200
// ---------------------------------------------------------------------------------------------

/// A refresh at `home` by a client with `client_id` and `secret` is refused with Zoho's permanent
/// `code` at HTTP 200.
async fn assert_wrong_client(
    home: &Simulator,
    client_id: ClientId,
    secret: ClientSecret,
    code: &str,
) {
    let client =
        AccountsClient::new(Accounts::custom(&home.url()).unwrap(), client_id, secret).unwrap();
    let err = expect_err(client.refresh(&home.mint_refresh_token(&[])).await, code);
    assert!(err.is_invalid_client(), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.zoho_code(), Some(code));
    assert_eq!(err.status(), Some(StatusCode::OK));
}

#[tokio::test]
async fn wrong_client_id_is_invalid_client() {
    let sim = sim().await;
    let id = ClientId::new("1000.NOTREGISTERED");
    assert_wrong_client(&sim, id, sim.client_secret(), "invalid_client").await;
}

#[tokio::test]
async fn a_client_of_another_simulator_is_invalid_client_as_at_the_wrong_dc() {
    let home = sim().await;
    let elsewhere = sim().await;
    // Right URL, but the id and secret registered at another "data centre".
    let (id, secret) = (elsewhere.client_id(), elsewhere.client_secret());
    assert_wrong_client(&home, id, secret, "invalid_client").await;
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client_secret() {
    let sim = sim().await;
    let secret = ClientSecret::new("not-the-secret");
    assert_wrong_client(&sim, sim.client_id(), secret, "invalid_client_secret").await;
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant() {
    let sim = sim().await;
    let err = expect_err(
        accounts_client(&sim)
            .refresh(&RefreshToken::new("1000.unknown.refresh"))
            .await,
        "unknown refresh token",
    );
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");
    assert!(!err.is_invalid_client(), "{err:?}");
    assert_eq!(err.zoho_code(), Some("invalid_code"));
    assert_eq!(err.status(), Some(StatusCode::OK));
}

/// One of [`Error`]'s predicates.
type Predicate = fn(&Error) -> bool;

#[tokio::test]
async fn injected_error_codes_map_to_their_kinds() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let refresh = sim.mint_refresh_token(&[]);
    let cases: [(&str, Predicate); 5] = [
        ("invalid_client", Error::is_invalid_client),
        ("invalid_client_secret", Error::is_invalid_client),
        ("invalid_code", Error::is_invalid_grant),
        ("invalid_scope", Error::is_permanent),
        ("unsupported_grant_type", Error::is_permanent),
    ];
    for (code, predicate) in cases {
        sim.inject(Fault::Error(code.to_owned()), 1);
        let err = expect_err(client.refresh(&refresh).await, code);
        assert!(predicate(&err), "{code}: {err:?}");
        assert!(err.is_permanent(), "{code}: {err:?}");
        assert_eq!(err.zoho_code(), Some(code));
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling: at 200 and 400, in English and Chinese
// ---------------------------------------------------------------------------------------------

const THROTTLE_CASES: [(StatusCode, Language); 4] = [
    (StatusCode::OK, Language::English),
    (StatusCode::BAD_REQUEST, Language::English),
    (StatusCode::OK, Language::Chinese),
    (StatusCode::BAD_REQUEST, Language::Chinese),
];

#[tokio::test]
async fn exceeding_zohos_rate_limit_is_throttled_not_permanent() {
    for (status, language) in THROTTLE_CASES {
        let what = format!("rate limit, {status}, {language:?}");
        let sim = start(
            Simulator::builder()
                .rate_limit(2, Duration::from_secs(600))
                .throttle_status(status)
                .throttle_language(language),
        )
        .await;
        let client = accounts_client(&sim);
        let refresh = sim.mint_refresh_token(&[]);
        client
            .refresh(&refresh)
            .await
            .expect("first within the limit");
        client
            .refresh(&refresh)
            .await
            .expect("second within the limit");

        let err = expect_err(client.refresh(&refresh).await, &what);
        assert_throttled(&err, status, language, &what);
        assert_eq!(sim.counters().throttled, 1, "{what}");
        assert_eq!(sim.counters().tokens_issued, 2, "{what}");
    }
}

#[tokio::test]
async fn injected_throttling_is_throttled_not_permanent() {
    for (status, language) in THROTTLE_CASES {
        let what = format!("Fault::Throttle, {status}, {language:?}");
        let sim = start(
            Simulator::builder()
                .throttle_status(status)
                .throttle_language(language),
        )
        .await;
        let client = accounts_client(&sim);
        let refresh = sim.mint_refresh_token(&[]);
        sim.inject(Fault::Throttle, 3);

        let err = expect_err(client.refresh(&refresh).await, &what);
        assert_throttled(&err, status, language, &what);
        let code = sim.issue_grant_code(&[], true, None);
        let err = expect_err(client.exchange_code(&code, None).await, &what);
        assert_throttled(&err, status, language, &what);
        let err = expect_err(client.client_credentials(CRM_SCOPES, SOID).await, &what);
        assert_throttled(&err, status, language, &what);

        assert_eq!(sim.counters().throttled, 3, "{what}");
        // Once the throttling stops, the same refresh token works again.
        client.refresh(&refresh).await.expect("after throttling");
    }
}

// ---------------------------------------------------------------------------------------------
// Transient failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_proxy_pages_and_broken_bodies_are_transient() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    let refresh = sim.mint_refresh_token(&[]);
    let faults = [
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Html,
        Fault::Empty,
        Fault::MalformedJson,
        Fault::TruncatedJson,
        Fault::Close,
    ];
    for (i, fault) in faults.iter().enumerate() {
        let what = format!("{fault:?}");
        sim.inject(fault.clone(), 1);
        let err = expect_err(client.refresh(&refresh).await, &what);
        assert_transient(&err, &what);
        if let Fault::Status(status) = fault {
            assert_eq!(err.status(), Some(*status), "{what}");
        }
        assert_eq!(
            sim.counters().faults,
            i as u64 + 1,
            "{what} reached the simulator once"
        );
    }
    assert_eq!(sim.counters().tokens_issued, 0);
    // The faults were all consumed; the next refresh works.
    client
        .refresh(&refresh)
        .await
        .expect("refresh after the faults");
}

#[tokio::test]
async fn every_call_reports_faults_as_transient() {
    let sim = sim().await;
    let client = accounts_client(&sim);
    for fault in [
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::Html,
        Fault::Close,
    ] {
        let what = format!("{fault:?}");
        sim.inject(fault.clone(), 1);
        let code = sim.issue_grant_code(&[], true, None);
        assert_transient(
            &expect_err(client.exchange_code(&code, None).await, &what),
            &what,
        );
        sim.inject(fault.clone(), 1);
        assert_transient(
            &expect_err(client.client_credentials(CRM_SCOPES, SOID).await, &what),
            &what,
        );
    }
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let url = format!("http://127.0.0.1:{}", common::refused_port());
    let client = AccountsClient::new(
        Accounts::custom(&url).unwrap(),
        ClientId::new("1000.NOBODY"),
        ClientSecret::new("nobody-secret"),
    )
    .unwrap();
    let refresh = RefreshToken::new("1000.nobody.refresh");
    let started = Instant::now();
    assert_transient(
        &expect_err(client.refresh(&refresh).await, "refresh"),
        "refresh",
    );
    let code = GrantCode::new("1000.nobody.code");
    assert_transient(
        &expect_err(client.exchange_code(&code, None).await, "code"),
        "code",
    );
    assert_transient(
        &expect_err(client.client_credentials(CRM_SCOPES, SOID).await, "cc"),
        "client credentials",
    );
    assert_transient(
        &expect_err(client.revoke(&refresh).await, "revoke"),
        "revoke",
    );
    let err = expect_err(client.refresh(&refresh).await, "refresh");
    assert_eq!(err.status(), None, "no answer, no status: {err:?}");
    assert!(started.elapsed() < FAST, "refused connections fail fast");
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

fn quick_client(sim: &Simulator) -> AccountsClient {
    AccountsClient::with_timeout(
        Accounts::custom(&sim.url()).unwrap(),
        sim.client_id(),
        sim.client_secret(),
        Duration::from_millis(300),
    )
    .unwrap()
}

#[tokio::test]
async fn a_slow_token_endpoint_times_out_as_transient() {
    let sim = sim().await;
    let client = quick_client(&sim);
    let refresh = sim.mint_refresh_token(&[]);
    sim.inject(Fault::Slow(Duration::from_secs(60)), 1);

    let started = Instant::now();
    let err = expect_err(client.refresh(&refresh).await, "slow refresh");
    let elapsed = started.elapsed();

    assert_transient(&err, "slow refresh");
    assert!(
        elapsed < FAST,
        "the 300 ms timeout held: came back after {elapsed:?}"
    );
    assert_eq!(sim.counters().faults, 1);
}

#[tokio::test]
async fn every_call_is_bounded_by_the_timeout() {
    let sim = sim().await;
    let client = quick_client(&sim);
    // Every answer of the accounts server, revoke included, is now late.
    sim.set_token_latency(Duration::from_secs(30));

    let started = Instant::now();
    let results = every_call(&client).await;
    let elapsed = started.elapsed();
    for (what, result) in results {
        assert_transient(&expect_err(result, what), what);
    }
    assert!(
        elapsed < FAST,
        "four calls with a 300 ms timeout each took {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// How secrets travel: POST, urlencoded body, never the query string, never redirected
// ---------------------------------------------------------------------------------------------

fn assert_form_post(seen: &Seen, path: &str, expected: &[(&str, &str)]) {
    assert_eq!(seen.method, Method::POST, "{seen:?}");
    assert_eq!(seen.path, path, "{seen:?}");
    assert_eq!(
        seen.query, None,
        "nothing may travel in the query string: {seen:?}"
    );
    let content_type = seen.content_type.as_deref().unwrap_or_default();
    assert_eq!(
        content_type.split(';').next().unwrap().trim(),
        "application/x-www-form-urlencoded",
        "{seen:?}"
    );
    assert_eq!(
        seen.content_length,
        Some(seen.body.len().to_string()),
        "a length, not chunks: {seen:?}"
    );
    let params = seen.params();
    for (name, value) in expected {
        assert_eq!(
            params.get(*name).map(String::as_str),
            Some(*value),
            "body param {name}: {params:?}"
        );
    }
}

#[tokio::test]
async fn secrets_travel_in_a_urlencoded_post_body_never_the_query() {
    let server = Recorder::start(Reply::Success).await;
    let client = server.client();
    let secret = RECORDED_SECRET;
    let refresh = RefreshToken::new("1000.refresh+token/with=odd&chars");
    let code = GrantCode::new("1000.grant code.with%chars");

    let token = client.refresh(&refresh).await.expect("refresh");
    assert_eq!(token.access_token.expose(), "1000.fixedaccess.token");
    client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .expect("exchange");
    client
        .client_credentials(CRM_SCOPES, SOID)
        .await
        .expect("client credentials");
    client.revoke(&refresh).await.expect("revoke");

    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let id = "1000.RECORDED";
    assert_form_post(
        &seen[0],
        "/oauth/v2/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("client_secret", secret),
            ("refresh_token", refresh.expose()),
        ],
    );
    assert_form_post(
        &seen[1],
        "/oauth/v2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", id),
            ("client_secret", secret),
            ("code", code.expose()),
            ("redirect_uri", REDIRECT_URI),
        ],
    );
    assert_form_post(
        &seen[2],
        "/oauth/v2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("soid", SOID),
        ],
    );
    let scopes: Vec<String> = seen[2].params()["scope"]
        .split([',', ' '])
        .map(str::to_owned)
        .collect();
    assert_eq!(scopes, CRM_SCOPES);
    assert_form_post(
        &seen[3],
        "/oauth/v2/token/revoke",
        &[("token", refresh.expose())],
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    for status in [
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let elsewhere = Recorder::start(Reply::Success).await;
        let location = format!("{}/oauth/v2/token", elsewhere.url);
        let redirecting = Recorder::start(Reply::Redirect(status, location)).await;
        let client = redirecting.client();

        for (what, result) in every_call(&client).await {
            expect_err(result, &format!("{status} {what}"));
        }
        assert_eq!(redirecting.seen().len(), 4);
        assert!(
            elsewhere.seen().is_empty(),
            "{status}: the redirect target received {:?}",
            elsewhere.seen()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The application's own reqwest::Client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_applications_http_client_carries_every_call() {
    let server = Recorder::start(Reply::Success).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("x-app", http::HeaderValue::from_static("billing"));
    let http = zoho_auth::accounts::http_client_builder()
        .unwrap()
        .user_agent("billing/2.1")
        .default_headers(headers)
        .build()
        .unwrap();
    let client = server.client_with(http);

    for (what, result) in every_call(&client).await {
        result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for seen in &seen {
        assert_eq!(seen.user_agent.as_deref(), Some("billing/2.1"), "{seen:?}");
        assert_eq!(seen.x_app.as_deref(), Some("billing"), "{seen:?}");
    }
    // The form still travels as before.
    assert_form_post(
        &seen[0],
        "/oauth/v2/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_secret", RECORDED_SECRET),
        ],
    );

    // Built without one, the client names itself.
    server
        .client()
        .refresh(&RefreshToken::new("1000.a.b"))
        .await
        .unwrap();
    let own = server.seen().pop().unwrap();
    assert!(own.user_agent.unwrap().starts_with("zoho-auth/"));
    assert_eq!(own.x_app, None);
}

#[tokio::test]
async fn an_application_client_without_a_timeout_is_bounded_by_the_accounts_timeout() {
    let sim = sim().await;
    // No timeout of its own: only the accounts client's can end a hung call.
    let client = AccountsClient::builder(
        Accounts::custom(&sim.url()).unwrap(),
        sim.client_id(),
        sim.client_secret(),
    )
    .http_client(
        zoho_auth::accounts::http_client_builder()
            .unwrap()
            .build()
            .unwrap(),
    )
    .timeout(Duration::from_millis(300))
    .build()
    .unwrap();
    assert_eq!(client.timeout(), Duration::from_millis(300));
    sim.set_token_latency(Duration::from_secs(120));

    // Four calls of 300 ms each; the outer bound only keeps a failure from taking 8 minutes.
    let results = tokio::time::timeout(Duration::from_secs(30), every_call(&client))
        .await
        .expect("the calls were bounded by the accounts client's timeout");
    for (what, result) in results {
        let err = expect_err(result, what);
        assert_transient(&err, what);
        assert!(err.to_string().contains("timed out"), "{what}: {err}");
    }
}

#[tokio::test]
async fn an_application_client_that_follows_redirects_never_sends_the_secret_elsewhere() {
    for status in [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let elsewhere = Recorder::start(Reply::Success).await;
        let location = format!("{}/oauth/v2/token", elsewhere.url);
        let redirecting = Recorder::start(Reply::Redirect(status, location)).await;
        // reqwest's default policy follows up to 10 redirects.
        let follows = zoho_auth::accounts::http_client_builder()
            .unwrap()
            .redirect(reqwest::redirect::Policy::default())
            .build()
            .unwrap();
        let client = redirecting.client_with(follows);

        for (what, result) in every_call(&client).await {
            let err = expect_err(result, &format!("{status} {what}"));
            assert_transient(&err, what);
            assert!(
                err.to_string().contains("redirect"),
                "{status} {what}: {err}"
            );
        }
        assert_eq!(redirecting.seen().len(), 4);
        // A 301-303 may be followed as a GET without the form; nothing may carry a secret.
        for seen in elsewhere.seen() {
            assert_eq!(seen.method, Method::GET, "{status}: {seen:?}");
            assert!(
                seen.body.is_empty() && seen.query.is_none(),
                "{status}: the redirect target received {seen:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Oversized answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_answer_over_64_kib_is_transient() {
    let server = Recorder::start(Reply::Padded(64 * 1024 + 1)).await;
    let err = expect_err(
        server
            .client()
            .refresh(&RefreshToken::new("1000.a.b"))
            .await,
        "65 KiB answer",
    );
    assert_transient(&err, "65 KiB answer");

    let server = Recorder::start(Reply::Padded(8 * 1024 * 1024)).await;
    let err = expect_err(
        server
            .client()
            .refresh(&RefreshToken::new("1000.a.b"))
            .await,
        "8 MiB answer",
    );
    assert_transient(&err, "8 MiB answer");
}

#[tokio::test]
async fn an_answer_under_64_kib_is_read() {
    // The padded answer is the same JSON; only the size differs from the test above.
    let server = Recorder::start(Reply::Padded(60 * 1024)).await;
    let token: TokenResponse = server
        .client()
        .refresh(&RefreshToken::new("1000.a.b"))
        .await
        .expect("a 60 KiB answer is within the limit");
    assert_eq!(token.access_token.expose(), "1000.fixedaccess.token");
}

#[tokio::test]
async fn an_endless_answer_is_cut_off_as_transient() {
    let server = Recorder::start(Reply::Endless).await;
    let started = Instant::now();
    // Default timeout (20 s): only the size limit can end this early.
    let err = expect_err(
        server
            .client()
            .refresh(&RefreshToken::new("1000.a.b"))
            .await,
        "endless answer",
    );
    let elapsed = started.elapsed();
    assert_transient(&err, "endless answer");
    assert!(
        elapsed < Duration::from_secs(10),
        "cut off after {elapsed:?}"
    );
}
