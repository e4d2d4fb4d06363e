//! Sends many concurrent requests through `ZohoAuthLayer` and shows how few token requests they
//! cost.
//!
//! Without credentials it starts the embedded Zoho simulator with 3-second tokens and drives the
//! requests across a server-side invalidation of every live token and a token expiry:
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- --requests 10000 --concurrency 500 --body-bytes 2048
//! ```
//!
//! With `ZOHO_CLIENT_ID`, `ZOHO_CLIENT_SECRET` and `ZOHO_REFRESH_TOKEN` set it talks to that Zoho
//! account instead: `ZOHO_DC` (us, eu, in, au, cn, jp, ca, sa, uk; default us) picks the data
//! centre, `ZOHO_ACCOUNTS_URL` overrides its accounts server, and `--url` names the API URL
//! (default: the CRM current-user endpoint on the token's `api_domain`). A passing failure of the
//! first token request (a 502, a proxy's HTML page) is reported and retried when the cache's
//! back-off ends, a few times at most.
//!
//! The last line is machine-readable:
//! `summary: requests=N ok=N failed=N token_requests=N replays=N p50_ms=X p99_ms=Y`

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::Simulator;
use zoho_auth::{
    Accounts, ClientId, ClientSecret, DataCenter, Environment, RefreshToken, RequestBody, Seed,
    Token, TokenCache, ZohoAuth, ZohoAuthLayer,
};

#[derive(Parser, Debug)]
#[command(
    about = "Drive concurrent requests through ZohoAuthLayer (simulator or a real Zoho account)"
)]
struct Args {
    /// How many requests to send in total.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// How many requests are in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// The API URL to call (default: the CRM current-user endpoint on the token's api_domain).
    #[arg(long)]
    url: Option<String>,
    /// Send POSTs carrying a JSON body of this many bytes (at least 11) instead of GETs.
    #[arg(long)]
    body_bytes: Option<usize>,
    /// With Zoho credentials: keep sending for this many seconds instead of --requests.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds before expiry to refresh in the background (default 300, at most a quarter of
    /// the token's lifetime; 0 refreshes only at expiry).
    #[arg(long)]
    refresh_ahead: Option<u64>,
}

/// How much one phase sends.
#[derive(Clone, Copy)]
enum Amount {
    Requests(usize),
    For(Duration),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;
type Api = ZohoAuth<Client<Https, RequestBody<Full<Bytes>>>>;

/// The path of CRM's "who am I" endpoint, below an `api_domain`.
const CURRENT_USER: &str = "/crm/v8/users?type=CurrentUser";

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_logging();
    let args = Args::parse();
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }

    match real_zoho_credentials() {
        Some((client_id, client_secret, refresh_token)) => {
            let dc: DataCenter = std::env::var("ZOHO_DC")
                .as_deref()
                .unwrap_or("us")
                .parse()?;
            let accounts = match std::env::var("ZOHO_ACCOUNTS_URL") {
                Ok(url) => Accounts::custom(&url)?,
                Err(_) => Accounts::dc(dc),
            };
            println!(
                "Talking to Zoho: data centre {dc}, accounts server {}",
                accounts.url()
            );
            let cache = cache(
                AccountsClient::new(accounts, client_id, client_secret)?,
                refresh_token,
                // A store filled by a later consent or `zoho-auth login` holds the newer one.
                Seed::IfEmpty,
                &args,
            )?;
            let api_domain = first_token(&cache)
                .await?
                .api_domain()
                .unwrap_or(dc.api_domain(Environment::Production))
                .to_owned();
            let url = args
                .url
                .clone()
                .unwrap_or(format!("{api_domain}{CURRENT_USER}"));
            let load = Load::new(&cache, url, &args);
            let amount = match args.duration {
                Some(seconds) => Amount::For(Duration::from_secs_f64(seconds)),
                None => Amount::Requests(args.requests),
            };
            load.phase("requests", amount).await;
            load.summarise(&cache, None);
        }
        None => {
            let zoho = Simulator::builder()
                .token_lifetime(Duration::from_secs(3))
                .start()
                .await?;
            println!("No ZOHO_CLIENT_ID/ZOHO_CLIENT_SECRET/ZOHO_REFRESH_TOKEN set: using the embedded Zoho simulator at {}", zoho.url());
            let accounts = Accounts::custom(&zoho.url())?;
            let cache = cache(
                AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret())?,
                zoho.mint_refresh_token(&[]),
                // A stored refresh token belongs to an earlier run's simulator: use this one's.
                Seed::Replace,
                &args,
            )?;
            let url = args
                .url
                .clone()
                .unwrap_or(format!("{}{CURRENT_USER}", zoho.url()));
            let load = Load::new(&cache, url, &args);
            let third = args.requests / 3;

            load.phase("phase 1: first token", Amount::Requests(third))
                .await;

            println!("The simulator now invalidates every live access token (as Zoho does when a 16th is minted).");
            zoho.invalidate_all_tokens();
            load.phase("phase 2: after invalidation", Amount::Requests(third))
                .await;

            println!("Waiting for the access token to expire...");
            while cache.cached().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let rest = args.requests - 2 * third;
            load.phase("phase 3: after expiry", Amount::Requests(rest))
                .await;

            load.summarise(&cache, Some(&zoho));
        }
    }
    Ok(())
}

/// The token cache, in the store `ZOHO_TOKEN_STORE` names (`file:PATH`, a `redis://` URL;
/// unset: memory). `seed` says whether `refresh_token` replaces one the store already holds.
fn cache(
    client: AccountsClient,
    refresh_token: RefreshToken,
    seed: Seed,
    args: &Args,
) -> Result<TokenCache, BoxError> {
    let mut builder = TokenCache::builder(client, refresh_token).seed(seed);
    if let Ok(spec) = std::env::var("ZOHO_TOKEN_STORE") {
        let store = zoho_auth::store::open(&spec)?;
        println!("Token store: {store:?}");
        builder = builder.store(store);
    }
    if let Some(seconds) = args.refresh_ahead {
        builder = builder.refresh_ahead(Duration::from_secs(seconds));
    }
    Ok(builder.build()?)
}

/// The first token, waiting out failures that go away by themselves (a 502 or a proxy's HTML page
/// from the accounts server): a first run should show the layer at work, not exit on a blip. The
/// waits are the cache's own back-off (`retry_after`), and bounded: a few tries, none longer than
/// `LONGEST_WAIT` (Zoho's throttling asks for minutes; that ends the run with its error).
async fn first_token(cache: &TokenCache) -> Result<Token, BoxError> {
    const TRIES: u32 = 5;
    const LONGEST_WAIT: Duration = Duration::from_secs(30);
    let mut attempt = 1;
    loop {
        let error = match cache.token().await {
            Ok(token) => return Ok(token),
            Err(error) => error,
        };
        let wait = error.retry_after().unwrap_or(Duration::from_secs(1));
        if error.is_permanent() || attempt == TRIES || wait > LONGEST_WAIT {
            return Err(error.into());
        }
        attempt += 1;
        println!(
            "The first token request failed: {error}. Trying again (try {attempt} of {TRIES}) when the cache's back-off ends."
        );
        tokio::time::sleep(wait).await;
    }
}

/// Credentials from the environment, when all three are set.
fn real_zoho_credentials() -> Option<(ClientId, ClientSecret, RefreshToken)> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    Some((
        ClientId::new(var("ZOHO_CLIENT_ID")?),
        ClientSecret::new(var("ZOHO_CLIENT_SECRET")?),
        RefreshToken::new(var("ZOHO_REFRESH_TOKEN")?),
    ))
}

/// A JSON document of exactly `bytes` bytes (at least 11: `{"data":""}`).
fn json_body(bytes: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"data\":\"{}\"}}",
        "x".repeat(bytes.saturating_sub(11))
    ))
}

/// A hyper-util client (https, or http for the loopback simulator) wrapped by the layer.
fn api(cache: &TokenCache) -> Api {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(https);
    ServiceBuilder::new()
        .layer(ZohoAuthLayer::new(cache.clone()))
        .service(client)
}

/// What every phase of the run shares.
struct Load {
    api: Api,
    url: String,
    body: Option<Bytes>,
    concurrency: usize,
    tally: Arc<Tally>,
    started: Instant,
}

impl Load {
    fn new(cache: &TokenCache, url: String, args: &Args) -> Self {
        Self {
            api: api(cache),
            url,
            body: args.body_bytes.map(json_body),
            concurrency: args.concurrency,
            tally: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Sends `count` requests, `concurrency` at a time.
    async fn phase(&self, name: &str, amount: Amount) {
        let (count, deadline) = match amount {
            Amount::Requests(count) => (count, None),
            Amount::For(duration) => (usize::MAX, Some(Instant::now() + duration)),
        };
        let (service, url, body, concurrency, tally) = (
            &self.api,
            &self.url,
            &self.body,
            self.concurrency,
            &self.tally,
        );
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..concurrency.min(count).max(1))
            .map(|_| {
                let (mut api, url, body, next, tally) = (
                    service.clone(),
                    url.to_owned(),
                    body.clone(),
                    next.clone(),
                    tally.clone(),
                );
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count
                        && deadline.is_none_or(|deadline| Instant::now() < deadline)
                    {
                        let started = Instant::now();
                        let outcome = send(&mut api, &url, body.clone()).await;
                        tally.latencies.lock().unwrap().push(started.elapsed());
                        match outcome {
                            Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                            Err(error) => {
                                tally
                                    .first_error
                                    .lock()
                                    .unwrap()
                                    .get_or_insert(error.to_string());
                                tally.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        let done =
                            tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
                        if done % 500 == 0 {
                            println!("  {done} requests done");
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("request worker panicked");
        }
        println!(
            "{name}: done, {} ok / {} failed so far",
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
    }

    fn summarise(&self, cache: &TokenCache, zoho: Option<&Simulator>) {
        let (tally, started) = (&self.tally, self.started);
        let requests = tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
        let mut latencies = tally.latencies.lock().unwrap().clone();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let stats = cache.stats();
        if let Some(error) = tally.first_error.lock().unwrap().as_ref() {
            println!("first failure: {error}");
        }
        if let Some(zoho) = zoho {
            let seen = zoho.counters();
            println!(
            "simulator saw {} token requests and {} API requests ({} answered with a dead-token error)",
            seen.token_requests, seen.api_requests, seen.api_token_errors
        );
        }
        println!("finished in {:.2}s", started.elapsed().as_secs_f64());
        println!(
        "summary: requests={requests} ok={} failed={} token_requests={} replays={} p50_ms={:.2} p99_ms={:.2}",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        stats.token_requests,
        stats.replays,
        percentile(0.50),
        percentile(0.99),
    );
    }
}

async fn send(api: &mut Api, url: &str, body: Option<Bytes>) -> Result<(), BoxError> {
    let request = match body {
        Some(body) => Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?,
        None => Request::get(url).body(Full::new(Bytes::new()))?,
    };
    let response = api.ready().await?.call(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}").into())
    }
}
