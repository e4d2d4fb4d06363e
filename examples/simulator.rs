//! Runs the Zoho simulator on its own, so that several processes can share it — for example a
//! fleet of quickstarts sharing one token store:
//!
//! ```text
//! cargo run --example simulator -- --token-lifetime 20
//! # then, in other shells, with the exports it prints:
//! ZOHO_TOKEN_STORE=file:/tmp/zoho-tokens.json cargo run --example quickstart -- --url <URL> --duration 60
//! ```
//!
//! It prints the token and API requests it sees whenever they change, until stopped.

use std::time::Duration;

use clap::Parser;
use zoho_auth::sim::Simulator;

#[derive(Parser, Debug)]
#[command(about = "Run the Zoho simulator until stopped")]
struct Args {
    /// Lifetime of the access tokens it mints, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Delay of every product API answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    api_latency_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let zoho = Simulator::builder()
        .token_lifetime(Duration::from_secs(args.token_lifetime))
        .api_latency(Duration::from_millis(args.api_latency_ms))
        .start()
        .await?;
    // These are the simulator's own throw-away credentials, printed so other processes can use it.
    println!("Zoho simulator at {}", zoho.url());
    println!("export ZOHO_ACCOUNTS_URL={}", zoho.url());
    println!("export ZOHO_CLIENT_ID={}", zoho.client_id());
    println!(
        "export ZOHO_CLIENT_SECRET={}",
        zoho.client_secret().expose()
    );
    println!(
        "export ZOHO_REFRESH_TOKEN={}",
        zoho.mint_refresh_token(&[]).expose()
    );
    println!("URL={}/crm/v8/users?type=CurrentUser", zoho.url());

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
