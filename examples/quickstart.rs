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
//! `--connections N` drives many Zoho accounts through one `ZohoAuthLayer::connections` instead:
//! the simulator gets `min(N, 3)` data centres and N users spread over them, each one connection
//! whose record (refresh token, accounts server) lands in the `ZOHO_TOKEN_STORE` connection store,
//! and the requests go round-robin over the connections, each to its own `api_domain`. With
//! `ZOHO_CLIENT_ID` and `ZOHO_CLIENT_SECRET` set, `--connections all` uses every connection that
//! store lists (no `ZOHO_REFRESH_TOKEN`): a fleet of such processes on one store, against Zoho or
//! an external simulator (`cargo run --example simulator`), refreshes each connection once.
//! Under `--connections` it logs warnings only (`RUST_LOG=zoho_auth=info` shows every refresh).
//!
//! The last line is machine-readable:
//! `summary: requests=N ok=N failed=N token_requests=N replays=N p50_ms=X p99_ms=Y`, with
//! ` connections=N` after it under `--connections`.

mod common;
#[path = "common/connections.rs"]
mod stored;

use std::collections::BTreeMap;
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
use zoho_auth::reqwest::{ZohoAuthMiddleware, ZohoReqwest};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{open_connections, ConnectionStore};
use zoho_auth::{
    Accounts, ClientId, ClientSecret, ConnectionId, Connections, DataCenter, Environment,
    RefreshToken, RequestBody, Seed, Token, TokenCache, TokenCacheBuilder, ZohoAuth, ZohoAuthLayer,
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
    /// Many accounts, requests round-robin over them: N users of the embedded simulator, or
    /// `all` (with ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET): every connection in ZOHO_TOKEN_STORE.
    #[arg(long, value_name = "N|all", value_parser = parse_connections)]
    connections: Option<ConnectionsArg>,
    /// Which front end of the layer the requests go through: the tower layer over hyper-util,
    /// `ZohoReqwest` (a tower service of reqwest requests) or `ZohoAuthMiddleware` (in a
    /// reqwest-middleware chain).
    #[arg(long, value_enum, default_value_t = ClientArg::Hyper)]
    client: ClientArg,
}

/// What `--connections` asks for.
#[derive(Clone, Copy, Debug)]
enum ConnectionsArg {
    Simulated(usize),
    All,
}

fn parse_connections(value: &str) -> Result<ConnectionsArg, String> {
    match value {
        "all" => Ok(ConnectionsArg::All),
        n => match n.parse() {
            Ok(n) if n > 0 => Ok(ConnectionsArg::Simulated(n)),
            _ => Err("expected a number of connections (at least 1) or `all`".into()),
        },
    }
}

/// How much one phase sends.
#[derive(Clone, Copy)]
enum Amount {
    Requests(usize),
    For(Duration),
}

impl Amount {
    /// Against Zoho: `--duration`, else `--requests`.
    fn of(args: &Args) -> Self {
        match args.duration {
            Some(seconds) => Amount::For(Duration::from_secs_f64(seconds)),
            None => Amount::Requests(args.requests),
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The requests' way through the layer, as `--client` chose.
#[derive(Clone)]
enum Api {
    Hyper(ZohoAuth<Client<Https, RequestBody<Full<Bytes>>>>),
    Reqwest(ZohoReqwest, reqwest::Client),
    Middleware(reqwest_middleware::ClientWithMiddleware),
}

/// Which front end of the layer the requests go through.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum ClientArg {
    /// `ZohoAuthLayer` over hyper-util's client.
    #[default]
    Hyper,
    /// `ZohoReqwest`, the layer as a tower service of reqwest requests.
    Reqwest,
    /// `ZohoAuthMiddleware` in a `reqwest_middleware` chain.
    ReqwestMiddleware,
}

/// The path of CRM's "who am I" endpoint, below an `api_domain`.
const CURRENT_USER: &str = "/crm/v8/users?type=CurrentUser";

/// The most data centres `--connections N` spreads its simulated users over: enough to show each
/// connection refreshing at its own accounts server and calling its own API host.
const SIMULATED_DATA_CENTRES: usize = 3;

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    // A line for every refresh of every connection would bury the output; the summary counts them.
    common::init_logging(match args.connections {
        None => "zoho_auth=info",
        Some(_) => "zoho_auth=warn",
    });
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }

    let client = client_credentials();
    let refresh_token = env_var("ZOHO_REFRESH_TOKEN").map(RefreshToken::new);
    match (args.connections, client, refresh_token) {
        (None, Some((client_id, client_secret)), Some(refresh_token)) => {
            one_account_at_zoho(client_id, client_secret, refresh_token, &args).await
        }
        (None, _, _) => one_account_in_the_simulator(&args).await,
        (Some(ConnectionsArg::Simulated(count)), None, _) => {
            simulated_connections(count, &args).await
        }
        (Some(ConnectionsArg::Simulated(_)), Some(_), _) => Err(
            "--connections N mints N users in the embedded simulator, which ZOHO_CLIENT_ID and \
             ZOHO_CLIENT_SECRET turn off: unset them, or use --connections all for the \
             connections in ZOHO_TOKEN_STORE"
                .into(),
        ),
        (Some(ConnectionsArg::All), Some((client_id, client_secret)), _) => {
            all_stored_connections(client_id, client_secret, &args).await
        }
        (Some(ConnectionsArg::All), None, _) => Err(
            "--connections all needs ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET (and ZOHO_DC or \
             ZOHO_ACCOUNTS_URL), and uses the connections stored in ZOHO_TOKEN_STORE"
                .into(),
        ),
    }
}

async fn one_account_at_zoho(
    client_id: ClientId,
    client_secret: ClientSecret,
    refresh_token: RefreshToken,
    args: &Args,
) -> Result<(), BoxError> {
    let (dc, accounts) = zoho_accounts()?;
    let cache = cache(
        AccountsClient::new(accounts, client_id, client_secret)?,
        refresh_token,
        // A store filled by a later consent or `zoho-auth login` holds the newer one.
        Seed::IfEmpty,
        args,
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
    let load = Load::one(&cache, url, args)?;
    load.phase("requests", Amount::of(args)).await;
    load.summarise(None);
    Ok(())
}

/// Every connection the store lists, each request to its own `api_domain`.
async fn all_stored_connections(
    client_id: ClientId,
    client_secret: ClientSecret,
    args: &Args,
) -> Result<(), BoxError> {
    let (_, accounts) = zoho_accounts()?;
    let store = connection_store()?;
    let ids = stored::list_all(&*store).await?;
    if ids.is_empty() {
        return Err(
            "--connections all found no connections in ZOHO_TOKEN_STORE: set it to the file: or \
             redis:// store your application's consents write to"
                .into(),
        );
    }
    println!("{} connections in the store", ids.len());
    let connections = connections(
        AccountsClient::new(accounts, client_id, client_secret)?,
        store,
        args,
    )?;
    let url = args.url.clone().unwrap_or(CURRENT_USER.to_owned());
    let load = Load::many(&connections, ids, url, args)?;
    load.phase("requests", Amount::of(args)).await;
    load.summarise(None);
    Ok(())
}

async fn one_account_in_the_simulator(args: &Args) -> Result<(), BoxError> {
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
        args,
    )?;
    let url = args
        .url
        .clone()
        .unwrap_or(format!("{}{CURRENT_USER}", zoho.url()));
    let load = Load::one(&cache, url, args)?;
    simulated_phases(&zoho, &load, args.requests).await;
    load.summarise(Some(&zoho));
    Ok(())
}

/// `count` simulated users spread over the data centres, each a connection in the store.
async fn simulated_connections(count: usize, args: &Args) -> Result<(), BoxError> {
    if args.requests / 3 < count {
        return Err(format!(
            "--requests {} is too few for {count} connections: each of the three phases must \
             reach every connection, so at least {}",
            args.requests,
            3 * count
        )
        .into());
    }
    let data_centres = count.min(SIMULATED_DATA_CENTRES);
    let zoho = Simulator::builder()
        .token_lifetime(Duration::from_secs(3))
        .data_centers(data_centres)
        .start()
        .await?;
    println!(
        "No ZOHO_CLIENT_ID/ZOHO_CLIENT_SECRET set: using the embedded Zoho simulator with \
         {data_centres} data centres (the first at {}) and {count} users",
        zoho.url()
    );
    let store = connection_store()?;
    let mut users = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let dc = n % data_centres;
        let refresh_token = zoho.mint_refresh_token_in(dc, &[])?;
        let id = ConnectionId::new(format!("user-{n}"))?;
        stored::connect(&*store, &id, &refresh_token, zoho.data_center_url(dc)?).await?;
        users.push(refresh_token);
        ids.push(id);
    }
    let connections = connections(zoho.accounts_client()?, store, args)?;
    let url = args.url.clone().unwrap_or(CURRENT_USER.to_owned());
    let load = Load::many(&connections, ids, url, args)?;
    simulated_phases(&zoho, &load, args.requests).await;

    // The simulator's own count, to check the caches' against.
    let seen: Vec<_> = users
        .iter()
        .filter_map(|refresh_token| zoho.counters_for(refresh_token))
        .collect();
    println!(
        "simulator: tokens issued per user: {}; API requests sent to another data centre's host: {}",
        per_connection(seen.iter().map(|user| user.tokens_issued)),
        seen.iter()
            .map(|user| user.wrong_dc_api_requests)
            .sum::<u64>()
    );
    load.summarise(Some(&zoho));
    Ok(())
}

/// The simulator's three phases: the first token, after an invalidation of every live token,
/// after the expiry.
async fn simulated_phases(zoho: &Simulator, load: &Load, requests: usize) {
    let third = requests / 3;
    load.phase("phase 1: first token", Amount::Requests(third))
        .await;

    println!("The simulator now invalidates every live access token (as Zoho does when a 16th is minted).");
    zoho.invalidate_all_tokens();
    load.phase("phase 2: after invalidation", Amount::Requests(third))
        .await;

    println!("Waiting for the access token to expire...");
    while load.caches.iter().any(|cache| cache.cached().is_some()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = requests - 2 * third;
    load.phase("phase 3: after expiry", Amount::Requests(rest))
        .await;
}

/// Zoho's accounts server from `ZOHO_DC` (default us) or `ZOHO_ACCOUNTS_URL`.
fn zoho_accounts() -> Result<(DataCenter, Accounts), BoxError> {
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
    Ok((dc, accounts))
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
    Ok(refresh_ahead(builder, args.refresh_ahead).build()?)
}

/// The connections in `store`, each cache with the same settings as a single one.
fn connections(
    client: AccountsClient,
    store: Arc<dyn ConnectionStore>,
    args: &Args,
) -> Result<Connections, BoxError> {
    let ahead = args.refresh_ahead;
    Ok(Connections::builder(client, store)
        .caches(move |builder| refresh_ahead(builder, ahead))
        .build()?)
}

fn refresh_ahead(builder: TokenCacheBuilder, seconds: Option<u64>) -> TokenCacheBuilder {
    match seconds {
        Some(seconds) => builder.refresh_ahead(Duration::from_secs(seconds)),
        None => builder,
    }
}

/// The connection store `ZOHO_TOKEN_STORE` names, in the same syntax (unset: memory).
fn connection_store() -> Result<Arc<dyn ConnectionStore>, BoxError> {
    let store = open_connections(&std::env::var("ZOHO_TOKEN_STORE").unwrap_or_default())?;
    println!("Connection store: {store:?}");
    Ok(store)
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

/// An environment variable that is set and not blank.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OAuth client from the environment, when both are set.
fn client_credentials() -> Option<(ClientId, ClientSecret)> {
    Some((
        ClientId::new(env_var("ZOHO_CLIENT_ID")?),
        ClientSecret::new(env_var("ZOHO_CLIENT_SECRET")?),
    ))
}

/// A JSON document of exactly `bytes` bytes (at least 11: `{"data":""}`).
fn json_body(bytes: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"data\":\"{}\"}}",
        "x".repeat(bytes.saturating_sub(11))
    ))
}

/// The client `--client` names (https, or http for the loopback simulator), through `layer`.
fn api(layer: ZohoAuthLayer, client: ClientArg) -> Result<Api, BoxError> {
    let reqwest = || {
        zoho_auth::accounts::http_client_builder()
            .map(|builder| builder.pool_max_idle_per_host(1024))
    };
    Ok(match client {
        ClientArg::Hyper => {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .build();
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(https);
            Api::Hyper(ServiceBuilder::new().layer(layer).service(client))
        }
        ClientArg::Reqwest => {
            let http = reqwest()?.build()?;
            Api::Reqwest(ZohoReqwest::new(http.clone(), &layer), http)
        }
        ClientArg::ReqwestMiddleware => Api::Middleware(
            reqwest_middleware::ClientBuilder::new(reqwest()?.build()?)
                .with(ZohoAuthMiddleware::new(&layer))
                .build(),
        ),
    })
}

/// "3 for all 50", or "2 for 10, 3 for 40": how many connections had each count.
fn per_connection(counts: impl IntoIterator<Item = u64>) -> String {
    let mut connections = BTreeMap::<u64, usize>::new();
    for count in counts {
        *connections.entry(count).or_default() += 1;
    }
    match connections.len() {
        1 => connections
            .iter()
            .map(|(count, n)| format!("{count} for all {n}"))
            .collect(),
        _ => connections
            .iter()
            .map(|(count, n)| format!("{count} for {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// What every phase of the run shares.
struct Load {
    api: Api,
    url: String,
    /// The connection of each request in turn, round-robin; empty for a single cache.
    connections: Arc<[ConnectionId]>,
    /// Every cache the requests use, for the summary and the wait for the expiry.
    caches: Vec<TokenCache>,
    body: Option<Bytes>,
    concurrency: usize,
    tally: Arc<Tally>,
    started: Instant,
}

impl Load {
    fn one(cache: &TokenCache, url: String, args: &Args) -> Result<Self, BoxError> {
        let layer = ZohoAuthLayer::new(cache.clone());
        Self::new(layer, vec![cache.clone()], Vec::new(), url, args)
    }

    fn many(
        connections: &Connections,
        ids: Vec<ConnectionId>,
        url: String,
        args: &Args,
    ) -> Result<Self, BoxError> {
        let caches = ids
            .iter()
            .map(|id| connections.get(id))
            .collect::<Result<_, _>>()?;
        let layer = ZohoAuthLayer::connections(connections.clone());
        Self::new(layer, caches, ids, url, args)
    }

    fn new(
        layer: ZohoAuthLayer,
        caches: Vec<TokenCache>,
        connections: Vec<ConnectionId>,
        url: String,
        args: &Args,
    ) -> Result<Self, BoxError> {
        // reqwest's URLs are absolute: a relative one goes to the account's api_domain through
        // the layer's stand-in host.
        let url = match args.client {
            ClientArg::Reqwest | ClientArg::ReqwestMiddleware if url.starts_with('/') => {
                format!("{}{url}", zoho_auth::reqwest::API_DOMAIN)
            }
            _ => url,
        };
        Ok(Self {
            api: api(layer, args.client)?,
            url,
            connections: connections.into(),
            caches,
            body: args.body_bytes.map(json_body),
            concurrency: args.concurrency,
            tally: Arc::default(),
            started: Instant::now(),
        })
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
                let (mut api, url, body, next, tally, connections) = (
                    service.clone(),
                    url.to_owned(),
                    body.clone(),
                    next.clone(),
                    tally.clone(),
                    self.connections.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count || deadline.is_some_and(|deadline| Instant::now() >= deadline)
                        {
                            break;
                        }
                        let connection = match connections.len() {
                            0 => None,
                            len => Some(&connections[n % len]),
                        };
                        let started = Instant::now();
                        let outcome = send(&mut api, &url, body.clone(), connection).await;
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

    fn summarise(&self, zoho: Option<&Simulator>) {
        let (tally, started) = (&self.tally, self.started);
        let requests = tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
        let mut latencies = tally.latencies.lock().unwrap().clone();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let stats: Vec<_> = self.caches.iter().map(TokenCache::stats).collect();
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
        // A single cache's summary keeps the fields it always had.
        let connections = match self.connections.len() {
            0 => String::new(),
            count => {
                println!(
                    "token requests per connection: {}",
                    per_connection(stats.iter().map(|stats| stats.token_requests))
                );
                format!(" connections={count}")
            }
        };
        println!("finished in {:.2}s", started.elapsed().as_secs_f64());
        println!(
        "summary: requests={requests} ok={} failed={} token_requests={} replays={} p50_ms={:.2} p99_ms={:.2}{connections}",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        stats.iter().map(|stats| stats.token_requests).sum::<u64>(),
        stats.iter().map(|stats| stats.replays).sum::<u64>(),
        percentile(0.50),
        percentile(0.99),
    );
    }
}

/// Sends one request, naming its connection when the layer serves many, each front end the way
/// its users would.
async fn send(
    api: &mut Api,
    url: &str,
    body: Option<Bytes>,
    connection: Option<&ConnectionId>,
) -> Result<(), BoxError> {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let status = match api {
        Api::Hyper(api) => {
            let mut request = Request::builder().method(method).uri(url);
            if body.is_some() {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
            }
            let mut request = request.body(Full::new(body.unwrap_or_default()))?;
            if let Some(connection) = connection {
                request.extensions_mut().insert(connection.clone());
            }
            let response = api.ready().await?.call(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            status
        }
        Api::Reqwest(api, http) => {
            let mut request = http.request(method, url);
            if let Some(body) = body {
                request = request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            let mut api = match connection {
                Some(connection) => api.for_connection(connection.clone()),
                None => api.clone(),
            };
            let response = api.ready().await?.call(request.build()?).await?;
            let status = response.status();
            response.bytes().await?;
            status
        }
        Api::Middleware(client) => {
            let mut request = client.request(method, url);
            if let Some(body) = body {
                request = request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            if let Some(connection) = connection {
                request = request.with_extension(connection.clone());
            }
            let response = request.send().await?;
            let status = response.status();
            response.bytes().await?;
            status
        }
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}").into())
    }
}
