//! Runs the Zoho simulator on its own, so that several processes can share it — a fleet of
//! quickstarts sharing one token store, or the `zoho-auth` command line:
//!
//! ```text
//! cargo run --example simulator -- --token-lifetime 20
//! # then, in other shells, with the exports it prints:
//! ZOHO_TOKEN_STORE=file:/tmp/zoho-tokens.json cargo run --example quickstart -- --url <URL> --duration 60
//! ```
//!
//! It prints the simulator's throw-away credentials as `export` lines, a product API `URL=`, a
//! one-time `GRANT_CODE=` and the `GRANT_CODE_URL=` that mints another (the simulator-only
//! `/sim/grant-code` route), then the `zoho-auth` commands to try against it: `exchange` with
//! such a code, and `login`, whose consent URL opens the simulator's consent page, where
//! Accept redirects to the CLI. For `login` it registers `http://127.0.0.1:8765/callback`, the
//! CLI's default redirect URI (`--redirect-uri` registers others instead).
//!
//! It also prints the `zoho-auth exchange --connection ID` command that adds a connection (one
//! simulated Zoho account, among the many a store can hold), and the quickstart command that
//! sends requests round-robin over every connection in the store, each refreshed at its own
//! accounts server and sent to its own API host: its environment and
//! `cargo run --example quickstart -- --connections all`. `--connections N` seeds N connections
//! at once (`user-0001`, `user-0002`, ...), each a simulated user with a refresh token of its own
//! and its data centre's accounts server in its record, spread over the simulated data centres
//! of `--data-centres K` (default 1), DC `k` on `127.0.0.<k+1>` (Linux routes all of
//! `127.0.0.0/8` to loopback; macOS needs aliases beyond `127.0.0.1`):
//!
//! ```text
//! cargo run --example simulator -- --connections 40 --data-centres 3
//! # then, in another shell, the command it prints:
//! ZOHO_CLIENT_ID=... ZOHO_CLIENT_SECRET=... ZOHO_ACCOUNTS_URL=... ZOHO_TOKEN_STORE=file:/tmp/zoho-sim-tokens.json cargo run --example quickstart -- --connections all
//! ```
//!
//! Every printed command uses one token store: `--token-store SPEC` (`file:PATH` or
//! `redis://...`, as `ZOHO_TOKEN_STORE`), else a file of its own in the temp directory, whose
//! connections it removes at start (their simulator is gone: `--connections all` would fail on
//! them). It seeds only a store that holds no connections, so that it never overwrites real ones.
//!
//! Then it prints the token and API requests it sees whenever they change, until stopped.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tower::BoxError;
use zoho_auth::sim::Simulator;
use zoho_auth::store::{open_connections, ConnectionStore};
use zoho_auth::ConnectionId;

#[path = "common/connections.rs"]
mod stored;

/// The redirect URI of `zoho-auth login` without `--port` (src/bin/zoho-auth/settings.rs).
const CLI_REDIRECT_URI: &str = "http://127.0.0.1:8765/callback";

/// The scopes of the printed `login` command: what `URL` (CRM's current user) needs, and more.
const LOGIN_SCOPES: &str = "ZohoCRM.modules.ALL,ZohoCRM.users.READ";

/// How many requests the quickstart sends by default (its `--requests`).
const QUICKSTART_REQUESTS: u32 = 2000;

#[derive(Parser, Debug)]
#[command(about = "Run the Zoho simulator until stopped")]
struct Args {
    /// Lifetime of the access tokens it mints, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Delay of every product API answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    api_latency_ms: u64,
    /// A redirect URI to register for the consent flow; repeat it for several. `zoho-auth login
    /// --port P` needs http://127.0.0.1:P/callback.
    #[arg(long = "redirect-uri", value_name = "URI", default_value = CLI_REDIRECT_URI)]
    redirect_uris: Vec<String>,
    /// How long a grant code can be exchanged, in seconds. Longer than Zoho's two minutes by
    /// default, so that the printed code survives a first build of the CLI.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    grant_code_lifetime: u64,
    /// Seed this many connections (user-0001, ...) into the token store, each a simulated user
    /// with a refresh token of its own, for `quickstart -- --connections all`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// How many simulated data centres the seeded connections are spread over, DC k listening
    /// on 127.0.0.<k+1>.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "connections")]
    data_centres: usize,
    /// The token store of every printed command, as ZOHO_TOKEN_STORE: file:PATH or redis://...
    /// [default: file:<temp dir>/zoho-sim-tokens.json, its own, emptied of connections at start]
    #[arg(long, value_name = "SPEC")]
    token_store: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let (spec, store) = token_store(args.token_store.as_deref()).await?;
    if args.connections.is_some() {
        ensure_empty(&*store, &spec).await?;
    }
    let builder = Simulator::builder()
        .data_centers(args.data_centres)
        .token_lifetime(Duration::from_secs(args.token_lifetime))
        .api_latency(Duration::from_millis(args.api_latency_ms))
        .grant_code_lifetime(Duration::from_secs(args.grant_code_lifetime));
    let zoho = args
        .redirect_uris
        .iter()
        .fold(builder, |builder, uri| builder.redirect_uri(uri))
        .start()
        .await?;
    let url = zoho.url();
    // These are the simulator's own throw-away credentials, printed so other processes can use it.
    println!("Zoho simulator at {url}");
    println!("export ZOHO_ACCOUNTS_URL={url}");
    println!("export ZOHO_CLIENT_ID={}", zoho.client_id());
    println!(
        "export ZOHO_CLIENT_SECRET={}",
        zoho.client_secret().expose()
    );
    println!(
        "export ZOHO_REFRESH_TOKEN={}",
        zoho.mint_refresh_token(&[]).expose()
    );
    let api_url = format!("{url}/crm/v8/users?type=CurrentUser");
    println!("URL={api_url}");
    // A Self Client code, as `zoho-auth exchange` sends it: without a redirect URI.
    let code = zoho.issue_grant_code(&[], true, None);
    println!("GRANT_CODE={}", code.expose());
    let code_url = format!("{url}/sim/grant-code");
    println!("GRANT_CODE_URL={code_url}");
    if let Some(count) = args.connections {
        seed(&zoho, &*store, &spec, count).await?;
    }

    let store_word = shell_word(&spec);
    let cli = format!(
        "cargo run --features cli --bin zoho-auth -- --accounts-url {url} --store {store_word}"
    );
    println!();
    println!(
        "# Try the zoho-auth command line: in another shell, paste the export lines above, then"
    );
    println!(
        "# exchange the grant code (one-time; it lives {} s, and each GET of GRANT_CODE_URL mints another)",
        args.grant_code_lifetime
    );
    println!("{cli} exchange --code {}", code.expose());
    println!("{cli} exchange --code \"$(curl -s {code_url})\"");
    match args.redirect_uris.iter().find_map(|uri| cli_port(uri)) {
        Some(port) => {
            println!(
                "# or sign in: open the URL login prints (this simulator's consent page) and click Accept"
            );
            println!("{cli} login --port {port} --scopes {LOGIN_SCOPES}");
        }
        None => println!(
            "# (for login, register http://127.0.0.1:PORT/callback with --redirect-uri and pass --port PORT)"
        ),
    }
    println!("# then print an access token, and call the simulated CRM with it");
    println!("{cli} token");
    println!("curl -H \"Authorization: Zoho-oauthtoken $({cli} token)\" \"{api_url}\"");
    println!("# Add connections, one simulated Zoho account each (any IDs: alice, bob, ...)");
    println!("{cli} exchange --connection ID --code \"$(curl -s {code_url})\"");
    println!(
        "# then send requests round-robin over every connection in the store, each to its own data centre"
    );
    // Round-robin reaches every connection only with at least as many requests as connections.
    let requests = match args.connections {
        Some(count) if count > QUICKSTART_REQUESTS => format!(" --requests {count}"),
        _ => String::new(),
    };
    println!(
        "ZOHO_CLIENT_ID={} ZOHO_CLIENT_SECRET={} ZOHO_ACCOUNTS_URL={url} ZOHO_TOKEN_STORE={store_word} \
         cargo run --example quickstart -- --connections all{requests}",
        zoho.client_id(),
        zoho.client_secret().expose()
    );

    let mut last = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let seen = zoho.counters();
        let now = (seen.token_requests, seen.api_requests);
        if last != Some(now) {
            println!(
                "token requests: {} (throttled {}), API requests: {} (dead-token answers {})",
                seen.token_requests, seen.throttled, seen.api_requests, seen.api_token_errors
            );
            last = Some(now);
        }
    }
    Ok(())
}

/// The store every printed command uses, as its spec and opened: `spec`, else a file of the
/// example's own, so that trying the CLI leaves the user's real tokens alone. The connections in
/// its own store belong to an earlier run's simulator, which is gone: it removes them.
async fn token_store(spec: Option<&str>) -> Result<(String, Arc<dyn ConnectionStore>), BoxError> {
    if let Some(spec) = spec {
        if matches!(spec.trim(), "" | "memory") {
            return Err(
                "--token-store: the processes it prints commands for need a store they share: \
                 file:PATH or redis://..."
                    .into(),
            );
        }
        return Ok((spec.to_owned(), open_connections(spec)?));
    }
    let path = std::env::temp_dir().join("zoho-sim-tokens.json");
    let spec = format!("file:{}", path.display());
    let store = open_connections(&spec)?;
    for id in stored::list_all(&*store).await? {
        store.remove(&id).await?;
    }
    Ok((spec, store))
}

/// Refuses to seed a store that holds connections: among real ones, seeding could overwrite one
/// named `user-0001`, and would leave the rest to a quickstart that cannot refresh them here.
async fn ensure_empty(store: &dyn ConnectionStore, spec: &str) -> Result<(), BoxError> {
    match store.list(None, 1).await?.first() {
        Some(id) => Err(format!(
            "--token-store {spec} holds connections already ({id}, ...): name a store without \
             any to seed"
        )
        .into()),
        None => Ok(()),
    }
}

/// Writes `count` connections, `user-0001` on, into `store` (named `spec`): the nth a user of
/// data centre n mod K with a refresh token of its own and the accounts server of its DC in its
/// record, as a consent there leaves it.
async fn seed(
    zoho: &Simulator,
    store: &dyn ConnectionStore,
    spec: &str,
    count: u32,
) -> Result<(), BoxError> {
    let data_centres = zoho.data_center_count();
    for n in 0..count as usize {
        let dc = n % data_centres;
        let id = ConnectionId::new(format!("user-{:04}", n + 1))?;
        let refresh_token = zoho.mint_refresh_token_in(dc, &[])?;
        stored::connect(store, &id, &refresh_token, zoho.data_center_url(dc)?).await?;
    }
    let urls = (0..data_centres)
        .map(|dc| zoho.data_center_url(dc))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "Seeded {count} connections, user-0001 to user-{count:04}, into {spec}, over {data_centres} \
         data centre(s): {}",
        urls.join(" ")
    );
    Ok(())
}

/// `word` as a shell reads it back: as it is when the shell treats none of it specially, else in
/// single quotes (a `redis://` spec's `?` and `&`, a path's spaces).
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The `--port` of `zoho-auth login` whose redirect URI is `uri`, if it is one the CLI sends.
fn cli_port(uri: &str) -> Option<u16> {
    uri.strip_prefix("http://127.0.0.1:")?
        .strip_suffix("/callback")?
        .parse()
        .ok()
}
