//! Shared set-up for the integration tests: a simulator, a token cache on it, and inner services
//! that record what the layer sent.
#![allow(dead_code)] // each test binary uses a different part

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{Simulator, SimulatorBuilder};
use zoho_auth::{RequestBody, TokenCache, TokenCacheBuilder, ZohoAuth, ZohoAuthLayer};

/// A hyper-util client of the kind users wrap, for bodies of type `B`.
pub type HttpClient<B> = Client<HttpConnector, RequestBody<B>>;

/// The layer around that client, for GETs.
pub type HttpService = ZohoAuth<HttpClient<Empty<Bytes>>>;

pub fn accounts_client(zoho: &Simulator) -> AccountsClient {
    zoho.accounts_client().unwrap()
}

/// A cache builder minting from a fresh refresh token with all the simulator's scopes.
pub fn cache_builder(zoho: &Simulator) -> TokenCacheBuilder {
    TokenCache::builder(accounts_client(zoho), zoho.mint_refresh_token(&[]))
}

/// A cache minting from `refresh_token`, keeping its tokens in `store`.
pub fn cache_on(
    zoho: &Simulator,
    refresh_token: &zoho_auth::RefreshToken,
    store: Arc<dyn zoho_auth::store::TokenStore>,
) -> TokenCache {
    TokenCache::builder(accounts_client(zoho), refresh_token.clone())
        .store(store)
        .build()
        .unwrap()
}

pub async fn start(builder: SimulatorBuilder) -> (Simulator, TokenCache) {
    let zoho = builder.start().await.unwrap();
    let cache = cache_builder(&zoho).build().unwrap();
    (zoho, cache)
}

/// The layer around a real hyper-util client talking to the simulator over loopback.
pub fn http_service<B>(cache: &TokenCache) -> ZohoAuth<HttpClient<B>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new()).build_http();
    tower::Layer::layer(&ZohoAuthLayer::new(cache.clone()), client)
}

/// Readies `service` and sends `request` through it, for a test that expects an answer.
pub async fn send<S, B>(service: &mut S, request: Request<B>) -> S::Response
where
    S: tower::Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    service.ready().await.unwrap().call(request).await.unwrap()
}

pub fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

pub async fn body_text<B>(response: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// What an inner service saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub uri: String,
    pub authorization: Option<HeaderValue>,
    pub body: Bytes,
}

/// Picks the answer to the `n`th request.
type Answer = dyn Fn(usize, &Seen) -> (StatusCode, String) + Send + Sync;

/// An inner service that records every request and answers with `answer(call_index, seen)`.
#[derive(Clone)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Answer>,
}

impl Recorder {
    pub fn new(
        answer: impl Fn(usize, &Seen) -> (StatusCode, String) + Send + Sync + 'static,
    ) -> Self {
        Self {
            seen: Arc::default(),
            answer: Arc::new(answer),
        }
    }

    pub fn ok() -> Self {
        Self::new(|_, _| (StatusCode::OK, "{}".to_owned()))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl<B> tower::Service<Request<B>> for Recorder
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let seen = Seen {
                uri: parts.uri.to_string(),
                authorization: parts.headers.get(http::header::AUTHORIZATION).cloned(),
                body,
            };
            let index = {
                let mut all = this.seen.lock().unwrap();
                all.push(seen.clone());
                all.len() - 1
            };
            let (status, body) = (this.answer)(index, &seen);
            Ok(Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        })
    }
}

/// Lets `duration` pass at once on tokio's clock, which the token cache and the simulator read
/// (a current-thread runtime only). Call it only while nothing is in flight: the clock is paused
/// just for the sleep because a paused clock also jumps to its next timer while the runtime waits
/// for a socket, so a request over loopback could meet its own timeout. The stores' `SystemTime`
/// does not move.
pub async fn fast_forward(duration: Duration) {
    tokio::time::pause();
    tokio::time::sleep(duration).await;
    tokio::time::resume();
}

/// Polls `condition` every 20 ms until it holds, failing the test after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const CRM_INVALID_TOKEN: &str =
    r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#;

/// The example binary `name` that `cargo test` (or `cargo build --examples`) built beside this
/// test's binary; `cargo test --test X` alone builds no examples.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with `cargo test`, or `cargo build --examples` first",
        path.display()
    );
    path
}

/// The counts on a quickstart's last line.
#[derive(Debug)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Under `--connections`.
    pub connections: Option<u64>,
    pub stdout: String,
}

/// Waits for a quickstart process (stdout and stderr piped) to succeed, two minutes at most, and
/// reads its summary line.
pub async fn finish_quickstart(child: tokio::process::Child) -> Summary {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the quickstart finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart failed: {stdout}\n{stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    let optional = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .map(|value| value.parse().unwrap())
    };
    let field = |name: &str| -> u64 {
        optional(name).unwrap_or_else(|| panic!("no {name} in {line:?}\n{stderr}"))
    };
    Summary {
        requests: field("requests"),
        ok: field("ok"),
        failed: field("failed"),
        connections: optional("connections"),
        stdout: stdout.into_owned(),
    }
}

/// A fresh directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "zoho-auth-{tag}-{}-{}-{:016x}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, relative: &str) -> std::path::PathBuf {
        self.0.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tracing` output collected in memory.
#[derive(Clone, Default)]
pub struct Logs(pub Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Collects what is logged at `level` or above on this thread (the cache's refresh tasks run
    /// on it too with a current-thread runtime) until the guard drops.
    pub fn capture(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        // tracing caches each callsite's interest process-wide, computed by the first thread to
        // reach it: a sibling test's thread with no subscriber would fix it at "never", and this
        // thread would see nothing from that line (a `warn!` missed once in CI). A global
        // subscriber that records nothing makes every thread's answer "interested".
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry())
                .expect("the tests that capture logs install the only global subscriber");
        });
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(logs.writer())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// A writer factory for a `tracing_subscriber` that appends here.
    pub fn writer(&self) -> impl Fn() -> LogWriter + Send + Sync + 'static {
        let buffer = self.0.clone();
        move || LogWriter(buffer.clone())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Appends everything written to a shared buffer.
pub struct LogWriter(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A port on 127.0.0.1 that nobody listens on (it was free a moment ago): connecting to it is
/// refused.
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// An inner service that records the `Authorization` header of every request, then sends it
/// over loopback with a hyper-util client: the simulator's product APIs judge the token.
#[derive(Clone)]
pub struct Spy {
    client: HttpClient<Empty<Bytes>>,
    pub seen: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

impl Default for Spy {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            seen: Arc::default(),
        }
    }
}

impl Spy {
    /// The `Authorization` headers sent so far, oldest first.
    pub fn headers(&self) -> Vec<Option<HeaderValue>> {
        self.seen.lock().unwrap().clone()
    }
}

impl tower::Service<Request<RequestBody<Empty<Bytes>>>> for Spy {
    type Response = Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody<Empty<Bytes>>>) -> Self::Future {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        self.seen.lock().unwrap().push(header);
        self.client.request(request)
    }
}

/// `Zoho-oauthtoken <token>`, as the layer sends it.
pub fn header_for(token: &zoho_auth::AccessToken) -> String {
    format!("Zoho-oauthtoken {}", token.expose())
}

/// One simulator plus an HTTP client for talking to it directly, as Zoho's clients do. The client
/// follows no redirect, so a test sees each `302` itself.
pub struct Zoho {
    pub sim: Simulator,
    pub http: reqwest::Client,
}

impl Zoho {
    pub async fn start() -> Self {
        Self::with(Simulator::builder()).await
    }

    pub async fn with(builder: SimulatorBuilder) -> Self {
        Self {
            sim: builder.start().await.unwrap(),
            http: zoho_auth::accounts::http_client_builder()
                .unwrap()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.url())
    }

    /// The client's credentials plus `extra`: the parameters of a token request.
    pub fn params(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params = vec![
            ("client_id".to_owned(), self.sim.client_id().to_string()),
            (
                "client_secret".to_owned(),
                self.sim.client_secret().expose().to_owned(),
            ),
        ];
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        params
    }

    /// `POST /oauth/v2/token` with a urlencoded body.
    pub async fn token(&self, params: &[(String, String)]) -> Reply {
        let response = self
            .http
            .post(self.url("/oauth/v2/token"))
            .form(params)
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub location: Option<String>,
    pub server: Option<String>,
    pub content_length: Option<usize>,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|value: &HeaderValue| value.to_str().unwrap().to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let location = header("location");
        let server = header("server");
        let content_length = header("content-length").map(|len| len.parse().unwrap());
        let status = response.status();
        let text = response.text().await.unwrap();
        Self {
            status,
            content_type,
            location,
            server,
            content_length,
            text,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|err| panic!("{err}: {self:?}"))
    }

    /// Asserts a consent page and returns its one-time `request_id`.
    pub fn request_id(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert!(self.content_type.starts_with("text/html"), "{self:?}");
        self.value_after(r#"name="request_id" value=""#)
    }

    /// The text from after `marker` up to the next `"`: an HTML attribute's value, when `marker`
    /// ends with its opening quote.
    pub fn value_after(&self, marker: &str) -> String {
        let start = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker}: {self:?}"))
            + marker.len();
        let len = self.text[start..].find('"').unwrap();
        self.text[start..start + len].to_owned()
    }
}

/// Writes `set` over whatever `store` holds, through the fenced path every writer takes, and
/// returns it as stored (with its new revision).
pub async fn put(
    store: &dyn zoho_auth::store::TokenStore,
    set: &zoho_auth::store::TokenSet,
) -> Result<zoho_auth::store::TokenSet, zoho_auth::Error> {
    let ((), stored) = store
        .update(None, |stored| {
            *stored = set.clone();
            Ok(())
        })
        .await?;
    Ok(stored)
}
