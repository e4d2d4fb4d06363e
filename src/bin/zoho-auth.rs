//! `zoho-auth`: sign in to Zoho, keep the tokens in a token store, print access tokens.
//!
//! ```text
//! zoho-auth login [--scopes S,S] [--port 8765] [--no-browser] [--timeout 300]
//! zoho-auth exchange --code CODE        # a Self Client code from Zoho's API console; `-` reads stdin
//! zoho-auth token [--json]              # a valid access token, refreshed when needed
//! zoho-auth revoke                      # revoke the stored refresh token, empty the store
//! zoho-auth connections [--json]        # the store's connections, their status; never a token
//! zoho-auth dcs                         # Zoho's data centres
//! ```
//!
//! `login`, `exchange`, `token` and `revoke` take `--connection ID`: they then work on that
//! connection's record among the store's many (`zoho_auth::store::open_connections`) instead of
//! its single record, and `revoke` removes the record.
//!
//! Settings, flag > environment > profile (`--profile PATH` or `ZOHO_AUTH_PROFILE`, TOML; default
//! `<config dir>/zoho-auth/profile.toml` when it exists):
//!
//! | flag | environment | profile key | default |
//! |---|---|---|---|
//! | `--client-id` | `ZOHO_CLIENT_ID` | `client_id` | |
//! | `--client-secret-stdin` | `ZOHO_CLIENT_SECRET` | `client_secret_file` | |
//! | `--dc` | `ZOHO_DC` | `dc` | `us` |
//! | `--accounts-url` | `ZOHO_ACCOUNTS_URL` | `accounts_url` | the DC's |
//! | `--store` | `ZOHO_TOKEN_STORE` | `store` | `file:<config dir>/zoho-auth/tokens.json` |
//! | `--connection` (`login`, `exchange`, `token`, `revoke`) | `ZOHO_CONNECTION` | `connection` | the single record |
//! | `login --scopes` | `ZOHO_SCOPES` | `scopes` | |
//! | `login --port` | `ZOHO_REDIRECT_PORT` | `redirect_port` | `8765` |
//!
//! The client secret is never accepted as an argument (arguments show in the process list). A
//! secret or grant code typed at a terminal (`--client-secret-stdin`, `--code -`) is not echoed;
//! piped in, it is read as a line.
//! Exit status: 0 success; 1 when Zoho, the network or the store fails (stderr says what happened
//! and what to do); 2 for a missing or invalid setting.

#![forbid(unsafe_code)]
// The doc comments of clap's commands and arguments are help text for a terminal, where a bare
// URL or `<config dir>` is what reads best; rustdoc's markup rules do not apply to them.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

// The modules live in `src/bin/zoho-auth/`; a crate root in `src/bin/` would otherwise look for
// them in `src/bin/`, where cargo takes every file for a binary of its own.
#[path = "zoho-auth/advice.rs"]
mod advice;
#[path = "zoho-auth/connections.rs"]
mod connections;
#[path = "zoho-auth/login.rs"]
mod login;
#[path = "zoho-auth/settings.rs"]
mod settings;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use zoho_auth::accounts::AccountsClient;
use zoho_auth::authorize::{Connected, Connector};
use zoho_auth::store::TokenSet;
use zoho_auth::{Accounts, ClientId, ClientSecret, DataCenter, Environment, GrantCode, TokenCache};

use advice::{explain, keep_secret, Context, Problem, Step};
use settings::{ConnectionFlag, Settings, Store};

/// How long a printed access token stays valid at least: it is used after this command exits,
/// so one about to expire is refreshed first (capped by the library at a tenth of its lifetime).
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(300);

const SETTINGS_HELP: &str = "\
Settings (flag > environment > profile key):
  --client-id            ZOHO_CLIENT_ID       client_id
  --client-secret-stdin  ZOHO_CLIENT_SECRET   client_secret_file   (never an argument)
  --dc                   ZOHO_DC              dc                   (default us)
  --accounts-url         ZOHO_ACCOUNTS_URL    accounts_url
  --store                ZOHO_TOKEN_STORE     store                (default file:<config dir>/zoho-auth/tokens.json)
  --connection           ZOHO_CONNECTION      connection           (login, exchange, token, revoke)
  login --scopes         ZOHO_SCOPES          scopes
  login --port           ZOHO_REDIRECT_PORT   redirect_port        (default 8765)
The profile is a TOML file (--profile or ZOHO_AUTH_PROFILE; default <config dir>/zoho-auth/profile.toml
when it exists); <config dir> is $XDG_CONFIG_HOME or ~/.config.

Exit status: 0 success, 1 failure (stderr says what happened and what to do), 2 usage.";

#[derive(Parser, Debug)]
#[command(
    name = "zoho-auth",
    version,
    about = "Sign in to Zoho, keep the OAuth tokens in a token store, and print access tokens",
    after_help = SETTINGS_HELP
)]
struct Cli {
    #[command(flatten)]
    settings: settings::Flags,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in through the browser and store the tokens
    ///
    /// Prints Zoho's consent URL (and opens it, if it can), waits for Zoho's redirect to
    /// http://127.0.0.1:PORT/callback, exchanges the code and stores the tokens. Zoho redirects
    /// only to a URI registered for the client: add exactly http://127.0.0.1:PORT/callback
    /// (default port 8765) to the client's Authorized Redirect URIs in Zoho's API console
    /// (https://api-console.zoho.com).
    Login(LoginArgs),
    /// Exchange a Self Client grant code from Zoho's API console and store the tokens
    ///
    /// In the API console: Self Client > Generate Code, pick the scopes, then run this within
    /// the code's lifetime (about 2-3 minutes), against the data centre of the console you used.
    Exchange(ExchangeArgs),
    /// Print a valid access token from the store, refreshing it when needed
    ///
    /// Prints only the token and a newline, for scripts:
    /// curl -H "Authorization: Zoho-oauthtoken $(zoho-auth token)" ...
    /// A stored token with more than 5 minutes left is printed without calling Zoho; processes
    /// sharing the store refresh once between them.
    Token(TokenArgs),
    /// Revoke the stored refresh token at Zoho and remove the tokens from the store
    ///
    /// With --connection, the connection's record is removed (and no longer listed).
    Revoke(ConnectionFlag),
    /// List the store's connections: id, data centre, scopes, status and access token expiry
    ///
    /// Never prints a token. Status: "connected" (a refresh token is stored), "not connected"
    /// (none), or "needs re-consent (CODE)" once Zoho refused the refresh token.
    Connections(connections::Args),
    /// List Zoho's data centres: accounts servers and API domains
    Dcs,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Scopes to ask for, comma-separated, e.g. ZohoCRM.modules.ALL,ZohoCRM.users.READ
    /// [profile: scopes]
    #[arg(
        long,
        env = "ZOHO_SCOPES",
        hide_env_values = true,
        value_name = "SCOPES"
    )]
    scopes: Option<String>,

    /// Port of the redirect URI http://127.0.0.1:PORT/callback, which must be registered for the
    /// client in Zoho's API console [default: 8765; profile: redirect_port]
    #[arg(
        long,
        env = "ZOHO_REDIRECT_PORT",
        hide_env_values = true,
        value_name = "PORT"
    )]
    port: Option<u16>,

    /// Print the URL without trying to open a browser
    #[arg(long)]
    no_browser: bool,

    /// How long to wait for the sign-in, in seconds
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    timeout: u64,

    #[command(flatten)]
    connection: ConnectionFlag,
}

#[derive(Args, Debug)]
struct ExchangeArgs {
    /// The grant code; `-` reads it from standard input (after the client secret, with
    /// --client-secret-stdin)
    #[arg(long, value_name = "CODE")]
    code: String,

    #[command(flatten)]
    connection: ConnectionFlag,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Print {"access_token","expires_in","api_domain","scopes"} as JSON instead
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    connection: ConnectionFlag,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            Problem::failure(
                format!("Cannot start the async runtime: {error}."),
                "Check the process limits.",
            )
            .report();
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            problem.report();
            ExitCode::from(problem.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Problem> {
    let settings = Settings::load(cli.settings)?;
    match cli.command {
        Command::Login(args) => login(&settings, args).await,
        Command::Exchange(args) => exchange(&settings, args).await,
        Command::Token(args) => token(&settings, args).await,
        Command::Revoke(connection) => revoke(&settings, &connection).await,
        Command::Connections(args) => connections::list(&settings, args).await,
        Command::Dcs => {
            dcs();
            Ok(())
        }
    }
}

async fn login(settings: &Settings, args: LoginArgs) -> Result<(), Problem> {
    let client_id = settings.client_id()?;
    let secret = settings.client_secret()?;
    let scopes = settings.scopes(args.scopes.as_deref())?;
    let store = settings.store(&args.connection)?;
    let custom = settings.custom_accounts()?;
    let accounts = settings.accounts()?;

    let listener = login::bind(settings.redirect_port(args.port)).await?;
    // The bound port, which differs from the requested one only for `--port 0`.
    let port = listener
        .local_addr()
        .map_err(|error| {
            Problem::failure(
                format!("Cannot read the callback address: {error}."),
                "Try again.",
            )
        })?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{}", login::CALLBACK_PATH);
    let connector = Connector::new(client_id.clone(), secret, redirect_uri.clone())
        .scopes(scopes)
        .store(store.store.clone());
    let connector = match custom {
        Some(custom) => connector.accounts(custom),
        None => connector.data_center(settings.data_center()?),
    };
    let ctx = Context {
        step: Step::Login,
        accounts: accounts.url().to_string(),
        client_id: client_id.to_string(),
        store: store.name.clone(),
        redirect_uri: Some(redirect_uri.clone()),
    };
    let (url, pending) = connector
        .authorize()
        .map_err(|error| explain(&error, &ctx))?;

    println!("Open this URL to sign in: {url}");
    eprintln!(
        "Waiting up to {}s for Zoho's redirect to {redirect_uri} (it must be registered for the \
         client in Zoho's API console); Ctrl-C cancels.",
        args.timeout
    );
    if !args.no_browser {
        login::open_browser(url.as_str());
    }
    let connected = login::wait(
        listener,
        connector,
        pending,
        ctx,
        Duration::from_secs(args.timeout),
    )
    .await?;
    report_connected("Signed in to Zoho.", &connected, &store).await;
    Ok(())
}

async fn exchange(settings: &Settings, args: ExchangeArgs) -> Result<(), Problem> {
    let client_id = settings.client_id()?;
    // Before the code: with --client-secret-stdin and --code -, the secret is the first line.
    let secret = settings.client_secret()?;
    let code = if args.code.trim() == "-" {
        settings::read_secret_line("Grant code (not shown as you type): ").map_err(|detail| {
            Problem::usage(
                format!("--code -: no grant code on standard input ({detail})."),
                "Pipe the code in, or pass it as --code CODE.",
            )
        })?
    } else {
        args.code.trim().to_owned()
    };
    keep_secret(&code);
    let store = settings.store(&args.connection)?;
    let accounts = settings.accounts()?;
    // A Self Client code carries no redirect URI.
    let connector = Connector::new(client_id.clone(), secret, "").store(store.store.clone());
    let ctx = Context {
        step: Step::Exchange,
        accounts: accounts.url().to_string(),
        client_id: client_id.to_string(),
        store: store.name.clone(),
        redirect_uri: None,
    };
    let connected = connector
        .exchange_self_client(&GrantCode::new(code), accounts)
        .await
        .map_err(|error| explain(&error, &ctx))?;
    report_connected("Exchanged the grant code.", &connected, &store).await;
    Ok(())
}

async fn token(settings: &Settings, args: TokenArgs) -> Result<(), Problem> {
    let store = settings.store(&args.connection)?;
    let client_id = settings.client_id()?;
    let secret = settings.client_secret()?;
    let mut ctx = Context {
        step: Step::Token,
        accounts: String::new(),
        client_id: client_id.to_string(),
        store: store.name.clone(),
        redirect_uri: None,
    };
    let set = load(&store, &ctx).await?;
    let Some(set) = set.filter(|set| set.refresh_token.is_some() || set.access.is_some()) else {
        return Err(not_signed_in(&store));
    };
    let accounts = stored_accounts(&set, settings)?;
    ctx.accounts = accounts.url().to_string();
    let client =
        AccountsClient::new(accounts, client_id, secret).map_err(|error| explain(&error, &ctx))?;
    // The single-flight, store-coordinated path every process sharing the store takes: a token
    // another process (or an earlier run) stored is adopted without calling Zoho.
    let cache = TokenCache::from_store(client, store.store.clone())
        // No background refresh: this process exits as soon as the token is printed.
        .refresh_ahead(Duration::ZERO)
        .expiry_margin(MIN_TOKEN_LIFE)
        .build()
        .map_err(|error| explain(&error, &ctx))?;
    let token = match cache.token().await {
        Ok(token) => token,
        Err(_) if set.refresh_token.is_none() => {
            return Err(Problem::failure(
                format!(
                    "The access token in {} expired, and there is no refresh token to renew it \
                     (the sign-in gave online access).",
                    store.name
                ),
                "Run `zoho-auth login` again.",
            ))
        }
        Err(error) => return Err(explain(&error, &ctx)),
    };
    let access_token = token.access_token().expose();
    if args.json {
        let json = serde_json::json!({
            "access_token": access_token,
            "expires_in": token.expires_in().as_secs(),
            "api_domain": token.api_domain(),
            "scopes": token.scopes(),
        });
        println!("{json}");
    } else {
        println!("{access_token}");
    }
    Ok(())
}

async fn revoke(settings: &Settings, connection: &ConnectionFlag) -> Result<(), Problem> {
    let store = settings.store(connection)?;
    let mut ctx = Context {
        step: Step::Revoke,
        accounts: String::new(),
        client_id: String::new(),
        store: store.name.clone(),
        redirect_uri: None,
    };
    let set = load(&store, &ctx).await?;
    let Some((set, refresh_token)) =
        set.and_then(|set| set.refresh_token.clone().map(|token| (set, token)))
    else {
        println!("Nothing to revoke: {} holds no refresh token.", store.name);
        return Ok(());
    };
    let accounts = stored_accounts(&set, settings)?;
    ctx.accounts = accounts.url().to_string();
    // Zoho's revoke endpoint takes the token alone, so revoking works without the client's
    // credentials (say, after the secret was rotated); the client is only the HTTP plumbing.
    let client_id = settings.client_id().unwrap_or_else(|_| ClientId::new(""));
    let secret = settings
        .client_secret()
        .unwrap_or_else(|_| ClientSecret::new(""));
    ctx.client_id = client_id.to_string();
    let client =
        AccountsClient::new(accounts, client_id, secret).map_err(|error| explain(&error, &ctx))?;
    let note = match client.revoke(&refresh_token).await {
        Ok(()) => format!(
            "Revoked the refresh token at {} (its access tokens died with it)",
            ctx.accounts
        ),
        // Zoho does not know the token: it is as dead as a revoked one, so forgetting it is
        // what the user asked for.
        Err(error) if error.zoho_code() == Some("invalid_token") => format!(
            "Zoho at {} no longer knew the refresh token (revoked already?)",
            ctx.accounts
        ),
        Err(error) => return Err(explain(&error, &ctx)),
    };
    let could_not = |error: zoho_auth::Error, what: &str| {
        let mut problem = explain(&error, &ctx);
        problem.what = format!("{note}, but could not {what}: {}", problem.what);
        problem
    };
    // Fenced: a login that stored a new refresh token meanwhile is kept.
    let (emptied, saved) = store
        .store
        .update(None, |set| {
            let revoked = set.refresh_token.as_ref() == Some(&refresh_token);
            if revoked {
                *set = TokenSet::default();
            }
            Ok(revoked)
        })
        .await
        .map_err(|error| could_not(error, "empty the store"))?;
    // The emptied record is removed only as it was emptied: a login landing meanwhile stays.
    if let (true, Some(connection)) = (emptied, &store.connection) {
        connection
            .connections
            .remove_if(&connection.id, saved.revision)
            .await
            .map_err(|error| could_not(error, "remove the emptied connection"))?;
    }
    if emptied {
        println!("{note}, and removed the tokens from {}.", store.name);
    } else {
        println!(
            "{note}; {} meanwhile got a new refresh token, which was kept.",
            store.name
        );
    }
    Ok(())
}

fn dcs() {
    let rows: Vec<[String; 6]> = DataCenter::ALL
        .into_iter()
        .map(|dc| {
            [
                dc.location().to_uppercase(),
                dc.location().to_owned(),
                dc.accounts_url().to_owned(),
                dc.api_domain(Environment::Production).to_owned(),
                dc.api_domain(Environment::Sandbox).to_owned(),
                dc.api_domain(Environment::Developer).to_owned(),
            ]
        })
        .collect();
    print_table(
        [
            "DC",
            "LOCATION",
            "ACCOUNTS SERVER",
            "API (PRODUCTION)",
            "SANDBOX",
            "DEVELOPER",
        ],
        &rows,
    );
    println!();
    println!(
        "Pick one with --dc LOCATION (or ZOHO_DC). Consent for multi-DC clients starts at {} for \
         every data centre but CN ({}).",
        DataCenter::Us.consent_accounts_url(),
        DataCenter::Cn.consent_accounts_url()
    );
}

/// Prints `rows` under `header`, each column as wide as its widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let header = header.map(str::to_owned);
    let widths: Vec<usize> = (0..N)
        .map(|column| {
            std::iter::once(&header)
                .chain(rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// The store's token set.
async fn load(store: &Store, ctx: &Context) -> Result<Option<TokenSet>, Problem> {
    store
        .store
        .load()
        .await
        .map_err(|error| explain(&error, ctx))
}

/// The accounts server that issued the stored refresh token (refreshes and revocations must go
/// there), else the configured one.
fn stored_accounts(set: &TokenSet, settings: &Settings) -> Result<Accounts, Problem> {
    match &set.accounts_url {
        Some(url) => Accounts::custom(url).map_err(|error| {
            Problem::failure(
                format!("The token store names an unusable accounts server: {error}."),
                "Run `zoho-auth login` again to store a new refresh token.",
            )
        }),
        None => settings.accounts(),
    }
}

fn not_signed_in(store: &Store) -> Problem {
    Problem::failure(
        format!("Not signed in: {} holds no Zoho tokens.", store.name),
        format!(
            "Run `zoho-auth login`, or `zoho-auth exchange --code CODE` with a Self Client code \
             from Zoho's API console (and the same --store{}).",
            if store.connection.is_some() {
                " and --connection"
            } else {
                ""
            }
        ),
    )
}

/// Prints what a login or exchange produced: never a token, only where it came from, what it
/// allows and how long it lasts.
async fn report_connected(headline: &str, connected: &Connected, store: &Store) {
    let dc = connected.data_center.map_or_else(
        || "(custom accounts server)".to_owned(),
        |dc| dc.location().to_owned(),
    );
    let scopes = if connected.scopes.is_empty() {
        "(not reported)".to_owned()
    } else {
        connected.scopes.join(", ")
    };
    let refresh = if connected.refresh_token_received {
        "stored".to_owned()
    } else {
        // Connector::save keeps a refresh token that is already stored.
        let kept = matches!(
            store.store.load().await,
            Ok(Some(TokenSet {
                refresh_token: Some(_),
                ..
            }))
        );
        eprintln!(
            "warning: Zoho sent no refresh token: online access, or a repeated consent without \
             prompt=consent. The access token works for about an hour{}.",
            if kept {
                "; the refresh token already in the store was kept"
            } else {
                "; then run `zoho-auth login` again"
            }
        );
        if kept {
            "none received (kept the stored one)"
        } else {
            "NONE"
        }
        .to_owned()
    };
    println!("{headline}");
    println!("  data centre:      {dc}");
    println!("  accounts server:  {}", connected.accounts.url());
    println!(
        "  API domain:       {}",
        connected.api_domain.as_deref().unwrap_or("(not reported)")
    );
    println!("  scopes:           {scopes}");
    println!(
        "  access token:     valid for {}",
        lifetime(connected.expires_in)
    );
    println!("  refresh token:    {refresh}");
    println!("  token store:      {}", store.name);
}

fn lifetime(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 120 {
        format!("{} minutes", secs / 60)
    } else {
        format!("{secs} seconds")
    }
}
