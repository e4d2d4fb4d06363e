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
//! Then it prints the token and API requests it sees whenever they change, until stopped.

use std::time::Duration;

use clap::Parser;
use zoho_auth::sim::Simulator;

/// The redirect URI of `zoho-auth login` without `--port` (src/bin/zoho-auth/settings.rs).
const CLI_REDIRECT_URI: &str = "http://127.0.0.1:8765/callback";

/// The scopes of the printed `login` command: what `URL` (CRM's current user) needs, and more.
const LOGIN_SCOPES: &str = "ZohoCRM.modules.ALL,ZohoCRM.users.READ";

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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let builder = Simulator::builder()
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

    // Its own store, so that trying the CLI leaves the user's real tokens alone.
    let store = std::env::temp_dir().join("zoho-sim-tokens.json");
    let cli = format!(
        "cargo run --features cli --bin zoho-auth -- --accounts-url {url} --store file:{}",
        store.display()
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

/// The `--port` of `zoho-auth login` whose redirect URI is `uri`, if it is one the CLI sends.
fn cli_port(uri: &str) -> Option<u16> {
    uri.strip_prefix("http://127.0.0.1:")?
        .strip_suffix("/callback")?
        .parse()
        .ok()
}
