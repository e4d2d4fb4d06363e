//! Issue requirement: the client secret, refresh tokens, access tokens and grant codes never
//! appear in errors, panics or tracing output at any level.
//!
//! The binary installs one global TRACE subscriber for all targets (which also bridges the `log`
//! crate, so reqwest's records are captured) writing into [`GLOBAL`]. The full-run test adds a
//! thread-scoped TRACE subscriber of its own on a hand-built current-thread runtime, so every
//! task of that run (the cache's refresh tasks, the HTTP clients, the simulator) logs into the
//! run's own buffer; anything that escapes to another thread lands in [`GLOBAL`], and both are
//! searched.

mod common;

use std::error::Error as StdError;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::LogWriter;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Layer, Service, ServiceExt};
use tracing::Level;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{body_sha, Fault, Language, Simulator};
use zoho_auth::{
    Accounts, ClientId, ClientSecret, Error, GrantCode, RefreshToken, RequestBody, TokenCache,
    ZohoAuthLayer,
};

const REDIRECT_URI: &str = "https://app.example.com/zoho/callback";
const SOID: &str = "ZohoCRM.600012345";
const LEAD: &str = r#"{"data":[{"Last_Name":"Lovelace","Company":"Analytical Engines"}]}"#;

// ---------------------------------------------------------------------------------------------
// Capturing tracing output
// ---------------------------------------------------------------------------------------------

type Buffer = Arc<Mutex<Vec<u8>>>;

/// The body type the layer hands to the hyper-util client.
type SentBody = RequestBody<Full<Bytes>>;

/// What every thread of this binary logs, at TRACE, for all targets (and the `log` crate).
static GLOBAL: OnceLock<Buffer> = OnceLock::new();

fn global_capture() -> Buffer {
    GLOBAL
        .get_or_init(|| {
            let buffer = Buffer::default();
            let writer = Arc::clone(&buffer);
            tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .with_ansi(false)
                .with_writer(move || LogWriter(Arc::clone(&writer)))
                .try_init()
                .expect("this binary installs the only global subscriber");
            buffer
        })
        .clone()
}

fn text(buffer: &Buffer) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

/// The shortest piece of a secret searched for.
const WINDOW: usize = 16;

/// A named secret value to search for.
#[derive(Clone)]
struct Secret {
    what: String,
    value: String,
}

impl Secret {
    fn new(what: impl Into<String>, value: &str) -> Self {
        Self {
            what: what.into(),
            value: value.to_owned(),
        }
    }

    /// The value and every 16-character window of each part of it (`1000.<hex>.<hex>` has two
    /// random parts), so a secret printed truncated or split is caught too. 16 random hex digits
    /// are 64 bits: no false positives.
    fn needles(&self) -> Vec<&str> {
        let mut needles = vec![self.value.as_str()];
        for part in self.value.split('.').filter(|part| part.len() >= WINDOW) {
            needles.extend((0..=part.len() - WINDOW).filter_map(|i| part.get(i..i + WINDOW)));
        }
        needles
    }

    /// Panics (naming the secret, not its value) if `haystack` contains it.
    fn assert_absent(&self, haystack: &str, place: &str) {
        for needle in self.needles() {
            assert!(
                !haystack.contains(needle),
                "the {} appears in {place}",
                self.what
            );
        }
    }
}

fn assert_no_secret(secrets: &[Secret], haystack: &str, place: &str) {
    for secret in secrets {
        secret.assert_absent(haystack, place);
    }
}

// ---------------------------------------------------------------------------------------------
// The full run
// ---------------------------------------------------------------------------------------------

/// Sends one request through `service` and reads the whole answer.
async fn send<S, B>(
    service: &mut S,
    method: Method,
    url: &str,
    body: &'static str,
) -> Result<(StatusCode, Bytes), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let response = service.ready().await?.call(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(Into::into)?;
    Ok((status, body.to_bytes()))
}

/// The crate's error inside a service error.
fn zoho_error(error: BoxError) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => panic!("expected a zoho_auth::Error, got {other:?}"),
    }
}

/// Calls `cache.token()` until it succeeds (a back-off is running), for at most 5 s.
async fn token_after_backoff(cache: &TokenCache) -> zoho_auth::Token {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cache.token().await {
            Ok(token) => return token,
            Err(error) if Instant::now() < deadline => {
                tracing::info!(?error, "still backing off: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("no token within 5 s: {error:?}"),
        }
    }
}

/// What a full run handled: every secret, and the simulator's URL (unique to the run).
struct Run {
    secrets: Vec<Secret>,
    sim_url: String,
}

async fn full_run() -> Run {
    let sim = Simulator::builder().start().await.expect("simulator");
    let sim_url = sim.url();
    let mut secrets = vec![Secret::new("client secret", sim.client_secret().expose())];
    let mut access_tokens: Vec<String> = Vec::new();
    let mut record_access = |label: &str, value: &str, secrets: &mut Vec<Secret>| {
        if !access_tokens.iter().any(|t| t == value) {
            access_tokens.push(value.to_owned());
            secrets.push(Secret::new(format!("access token ({label})"), value));
        }
    };

    let client = AccountsClient::new(
        Accounts::custom(&sim_url).unwrap(),
        sim.client_id(),
        sim.client_secret(),
    )
    .unwrap();
    tracing::info!(?client, "accounts client: {client:?}");

    // Consent: exchange a grant code for a refresh token.
    let code = sim.issue_grant_code(&[], true, Some(REDIRECT_URI));
    secrets.push(Secret::new("grant code", code.expose()));
    tracing::debug!(?code, "grant code {code} / {code:?}");
    let exchanged = client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .expect("code exchange");
    tracing::info!(?exchanged, "exchanged: {exchanged:?}");
    let refresh = exchanged.refresh_token.clone().expect("offline code");
    secrets.push(Secret::new("refresh token", refresh.expose()));
    record_access(
        "code exchange",
        exchanged.access_token.expose(),
        &mut secrets,
    );
    let reused = client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .unwrap_err();
    tracing::warn!(error = ?reused, "reusing the code: {reused}");

    // The cache and the layer around a hyper-util client.
    let cache = TokenCache::builder(client.clone(), refresh.clone())
        .budget(100, Duration::from_secs(600))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .throttle_backoff(Duration::from_millis(100))
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let layer = ZohoAuthLayer::new(cache.clone());
    tracing::info!(?cache, ?layer, "built the cache and the layer");
    let mut crm = layer.layer(Client::builder(TokioExecutor::new()).build_http::<SentBody>());
    tracing::trace!(?crm, "the service: {crm:?}");
    let users = format!("{sim_url}/crm/v8/users?type=CurrentUser");
    let leads = format!("{sim_url}/crm/v8/Leads");

    let (status, body) = send(&mut crm, Method::GET, &users, "").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, body) = send(&mut crm, Method::POST, &leads, LEAD).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains(&body_sha(LEAD.as_bytes())));
    let token = cache.token().await.unwrap();
    tracing::info!(?token, "first token: {token:?}");
    record_access("first", token.access_token().expose(), &mut secrets);

    // Zoho kills every token: the layer refreshes and replays the POST.
    sim.invalidate_all_tokens();
    let (status, body) = send(&mut crm, Method::POST, &leads, LEAD).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains(&body_sha(LEAD.as_bytes())));
    assert_eq!(cache.stats().replays, 1, "{:?}", cache.stats());
    let refreshed = cache.token().await.unwrap();
    assert_ne!(refreshed.access_token(), token.access_token());
    tracing::info!(token = ?refreshed, "after the replay");
    record_access(
        "after the replay",
        refreshed.access_token().expose(),
        &mut secrets,
    );

    // Refreshes that fail (transient, throttled, permanent) are logged; the cache recovers.
    for fault in [
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Html,
        Fault::Throttle,
        Fault::Error("invalid_client_secret".to_owned()),
    ] {
        sim.inject(fault.clone(), 1);
        sim.invalidate_all_tokens();
        let error = zoho_error(send(&mut crm, Method::GET, &users, "").await.unwrap_err());
        tracing::error!(?error, ?fault, "the request failed: {error}");
        if error.is_permanent() {
            cache.set_refresh_token(refresh.clone());
        }
        let token = token_after_backoff(&cache).await;
        tracing::info!(?token, "recovered: {token:?}");
        record_access(
            &format!("after {fault:?}"),
            token.access_token().expose(),
            &mut secrets,
        );
        let (status, _) = send(&mut crm, Method::GET, &users, "").await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    // A client-credentials cache, for its token too.
    let org = TokenCache::client_credentials(client.clone(), &["ZohoCRM.modules.ALL"], SOID)
        .build()
        .unwrap();
    let org_token = org.token().await.unwrap();
    tracing::info!(cache = ?org, token = ?org_token, "client credentials");
    record_access(
        "client credentials",
        org_token.access_token().expose(),
        &mut secrets,
    );

    // The user revokes the app: the next request's refresh fails for good.
    client.revoke(&refresh).await.expect("revoke");
    let error = zoho_error(send(&mut crm, Method::GET, &users, "").await.unwrap_err());
    assert!(error.is_invalid_grant(), "{error:?}");
    tracing::error!(?error, "after revoke: {error}");
    let error = cache.token().await.unwrap_err();
    tracing::error!(?error, ?cache, stats = ?cache.stats(), "the cache after revoke: {error}");
    tracing::info!(?client, ?refresh, refresh_from_cache = ?cache.refresh_token(), "done");

    assert_eq!(
        sim.counters().tokens_issued,
        access_tokens.len() as u64,
        "every access token the simulator issued was collected"
    );
    Run { secrets, sim_url }
}

#[test]
fn trace_output_of_a_full_run_contains_no_secret() {
    let global = global_capture();
    let local = Buffer::default();
    let writer = Arc::clone(&local);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .finish();
    let run = {
        let _guard = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = runtime.block_on(full_run());
        // Shut down inside the guard so the last tasks (connections closing) log here too.
        runtime.shutdown_timeout(Duration::from_secs(5));
        run
    };

    let local = text(&local);
    assert!(!local.is_empty(), "the run logged nothing");
    assert!(
        local
            .lines()
            .any(|line| line.contains("Zoho access token refreshed") && line.contains(&run.sim_url)),
        "the cache's refresh event of this run is in the output"
    );
    assert!(
        local.contains("Zoho token refresh failed"),
        "failed refreshes are logged"
    );
    assert!(
        local.contains("resending a request with a fresh Zoho token"),
        "debug events are captured"
    );
    assert!(local.contains("TRACE"), "trace events are captured");
    assert!(
        local.contains("[redacted]"),
        "the printed secrets show as redacted"
    );
    assert!(
        run.secrets.len() >= 10,
        "{} secrets collected",
        run.secrets.len()
    );
    assert_no_secret(&run.secrets, &local, "the run's TRACE output");
    assert_no_secret(&run.secrets, &text(&global), "the global TRACE output");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// `{}` and `{:?}` of the error and of every source below it, and the message of a panic on it.
fn printed(error: &Error) -> String {
    let mut out = format!("{error}\n{error:?}\n");
    let mut source = error.source();
    while let Some(inner) = source {
        out.push_str(&format!("{inner}\n{inner:?}\n"));
        source = inner.source();
    }
    let failed: Result<(), Error> = Err(error.clone());
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unwrap_call(failed)))
        .expect_err("unwrapping an error panics");
    let panic = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(!panic.is_empty());
    out.push_str(&panic);
    out
}

/// What a caller does with a failed call: `expect` it, panicking with the error's `Debug`.
fn unwrap_call(result: Result<(), Error>) {
    result.expect("the call failed")
}

/// Collects printed errors with what produced them.
#[derive(Default)]
struct Errors(Vec<(String, Error)>);

impl Errors {
    fn add<T: Debug>(&mut self, what: &str, result: Result<T, Error>) -> &Error {
        let error = match result {
            Ok(value) => panic!("{what}: expected an error, got {value:?}"),
            Err(error) => error,
        };
        self.0.push((what.to_owned(), error));
        &self.0.last().unwrap().1
    }

    fn assert_clean(&self, secrets: &[Secret]) {
        assert!(!self.0.is_empty());
        for (what, error) in &self.0 {
            let printed = printed(error);
            assert!(!printed.trim().is_empty(), "{what}");
            assert_no_secret(secrets, &printed, &format!("the error of {what}"));
        }
    }
}

#[tokio::test]
async fn errors_of_failing_calls_print_no_secret() {
    global_capture();
    let sim = Simulator::builder()
        .rate_limit(2, Duration::from_secs(600))
        .throttle_language(Language::Chinese)
        .start()
        .await
        .unwrap();
    let url = sim.url();
    let client = AccountsClient::new(
        Accounts::custom(&url).unwrap(),
        sim.client_id(),
        sim.client_secret(),
    )
    .unwrap();
    let refresh = sim.mint_refresh_token(&[]);
    let wrong_secret = ClientSecret::new("8d1f0e2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f");
    let unknown_refresh =
        RefreshToken::new("1000.4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c.6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b");
    let code = sim.issue_grant_code(&[], true, Some(REDIRECT_URI));
    let mut secrets = vec![
        Secret::new("client secret", sim.client_secret().expose()),
        Secret::new("wrong client secret", wrong_secret.expose()),
        Secret::new("refresh token", refresh.expose()),
        Secret::new("unknown refresh token", unknown_refresh.expose()),
        Secret::new("grant code", code.expose()),
    ];
    let mut errors = Errors::default();

    // invalid_client, invalid_client_secret
    let wrong_id = AccountsClient::new(
        Accounts::custom(&url).unwrap(),
        ClientId::new("1000.NOTREGISTERED"),
        sim.client_secret(),
    )
    .unwrap();
    assert!(errors
        .add("wrong client id", wrong_id.refresh(&refresh).await)
        .is_invalid_client());
    let wrong = AccountsClient::new(
        Accounts::custom(&url).unwrap(),
        sim.client_id(),
        wrong_secret,
    )
    .unwrap();
    assert!(errors
        .add("wrong secret", wrong.refresh(&refresh).await)
        .is_invalid_client());
    errors.add(
        "wrong secret, code",
        wrong.exchange_code(&code, Some(REDIRECT_URI)).await,
    );

    // invalid_code: an unknown refresh token, a used code, a revoked refresh token
    let e = errors.add("unknown refresh", client.refresh(&unknown_refresh).await);
    assert!(e.is_invalid_grant());
    let e = errors.add("redirect mismatch", client.exchange_code(&code, None).await);
    assert_eq!(e.zoho_code(), Some("invalid_redirect_uri"));
    let exchanged = client
        .exchange_code(&code, Some(REDIRECT_URI))
        .await
        .unwrap();
    let second_refresh = exchanged.refresh_token.clone().unwrap();
    secrets.push(Secret::new(
        "exchanged refresh token",
        second_refresh.expose(),
    ));
    secrets.push(Secret::new(
        "exchanged access token",
        exchanged.access_token.expose(),
    ));
    let e = errors.add(
        "used code",
        client.exchange_code(&code, Some(REDIRECT_URI)).await,
    );
    assert!(e.is_invalid_grant());
    errors.add(
        "missing soid",
        client
            .client_credentials(&["ZohoCRM.modules.ALL"], "")
            .await,
    );

    // throttling: by the rate limit (2 per window) and injected, Chinese, at 200
    let first = client.refresh(&refresh).await.unwrap();
    let second = client.refresh(&refresh).await.unwrap();
    secrets.push(Secret::new("access token 1", first.access_token.expose()));
    secrets.push(Secret::new("access token 2", second.access_token.expose()));
    assert!(errors
        .add("rate limit", client.refresh(&refresh).await)
        .is_throttled());
    sim.inject(Fault::Throttle, 1);
    assert!(errors
        .add("throttle", client.refresh(&second_refresh).await)
        .is_throttled());

    // transient
    for fault in [
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::Html,
        Fault::Empty,
        Fault::MalformedJson,
        Fault::TruncatedJson,
        Fault::Close,
    ] {
        sim.inject(fault.clone(), 1);
        let e = errors.add(&format!("{fault:?}"), client.refresh(&second_refresh).await);
        assert!(e.is_transient(), "{fault:?}: {e:?}");
    }
    let quick = AccountsClient::with_timeout(
        Accounts::custom(&url).unwrap(),
        sim.client_id(),
        sim.client_secret(),
        Duration::from_millis(200),
    )
    .unwrap();
    sim.inject(Fault::Slow(Duration::from_secs(3)), 1);
    assert!(errors
        .add("timeout", quick.refresh(&second_refresh).await)
        .is_transient());
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nobody = AccountsClient::new(
        Accounts::custom(&format!("http://127.0.0.1:{port}")).unwrap(),
        sim.client_id(),
        sim.client_secret(),
    )
    .unwrap();
    assert!(errors
        .add("refused", nobody.refresh(&refresh).await)
        .is_transient());
    assert!(errors
        .add("refused revoke", nobody.revoke(&refresh).await)
        .is_transient());
    let code =
        GrantCode::new("1000.0a1b2c3d4e5f60718293a4b5c6d7e8f9.9f8e7d6c5b4a39281706f5e4d3c2b1a0");
    secrets.push(Secret::new("unsent grant code", code.expose()));
    errors.add(
        "refused code",
        nobody.exchange_code(&code, Some(REDIRECT_URI)).await,
    );

    // revoke, then use
    client.revoke(&second_refresh).await.unwrap();
    assert!(errors
        .add("revoked", client.refresh(&second_refresh).await)
        .is_invalid_grant());
    errors.add("revoke twice", client.revoke(&second_refresh).await);

    // The token cache's own errors: permanent, blocked with a retry-after, budget spent.
    let revoked = TokenCache::new(client.clone(), second_refresh.clone());
    assert!(errors
        .add("cache, revoked", revoked.token().await)
        .is_invalid_grant());
    assert!(errors
        .add("cache, revoked again", revoked.token().await)
        .is_invalid_grant());
    let fresh = sim.mint_refresh_token(&[]);
    secrets.push(Secret::new("cache refresh token", fresh.expose()));
    let budget = TokenCache::builder(client.clone(), fresh)
        .budget(1, Duration::from_secs(600))
        .build()
        .unwrap();
    sim.inject(Fault::Status(StatusCode::SERVICE_UNAVAILABLE), 1);
    assert!(errors
        .add("cache, 503", budget.token().await)
        .is_transient());
    let blocked = errors.add("cache, backing off", budget.token().await);
    assert!(
        blocked.retry_after().is_some() || blocked.is_rate_limited(),
        "{blocked:?}"
    );

    errors.assert_clean(&secrets);
    // Nothing this test logged (reqwest, hyper-util, the crate) holds a secret either.
    assert_no_secret(&secrets, &text(&global_capture()), "the TRACE output");
}

#[tokio::test]
async fn layer_errors_print_no_secret() {
    global_capture();
    let sim = Simulator::start().await.unwrap();
    let client = AccountsClient::new(
        Accounts::custom(&sim.url()).unwrap(),
        sim.client_id(),
        sim.client_secret(),
    )
    .unwrap();
    let refresh = sim.mint_refresh_token(&[]);
    let secrets = [
        Secret::new("client secret", sim.client_secret().expose()),
        Secret::new("refresh token", refresh.expose()),
    ];
    let cache = TokenCache::new(client, refresh.clone());
    let mut crm = ZohoAuthLayer::new(cache.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<SentBody>());
    let users = format!("{}/crm/v8/users?type=CurrentUser", sim.url());

    sim.revoke_refresh_token(&refresh);
    let error = zoho_error(send(&mut crm, Method::GET, &users, "").await.unwrap_err());
    assert!(error.is_invalid_grant(), "{error:?}");
    let mut printed = printed(&error);
    printed.push_str(&format!("{cache:?} {crm:?}"));
    assert_no_secret(&secrets, &printed, "a layer error");
}
