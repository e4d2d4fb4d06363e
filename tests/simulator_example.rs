//! `cargo run --example simulator` serves the `zoho-auth` command line and the quickstart's
//! `--connections all` end to end, as a new user without a Zoho account runs them: the real
//! example binary in one process, the real CLI and quickstart in others, run with the exports and
//! the commands the example prints, over loopback.
//!
//! The example binary comes from `cargo test` (or `cargo build --examples`, before
//! `cargo test --test simulator_example`).

#[path = "common/cli.rs"]
mod cli_runner;
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zoho_auth::store::TokenSet;
use zoho_auth::{ConnectionId, RefreshToken};

use cli_runner::{free_port, http, Env, Login, RUN_LIMIT};
use common::{Reply, Summary, TempDir};

/// How the example's commands start; the tests run the CLI binary `cargo test` built instead.
const CARGO_RUN: &str = "cargo run --features cli --bin zoho-auth -- ";

/// What separates the environment of the printed quickstart command from its arguments; the
/// tests run the quickstart binary `cargo test` built instead.
const QUICKSTART_RUN: &str = " cargo run --example quickstart -- ";

/// The example, running, and what it printed before its first status line.
struct Example {
    /// Killed on drop.
    _child: Child,
    /// `NAME=value` of its `export NAME=value` and `NAME=value` lines.
    values: HashMap<String, String>,
    /// The `zoho-auth` commands it suggests, without [`CARGO_RUN`].
    commands: Vec<String>,
    /// The quickstart command it suggests: its environment, then its arguments.
    quickstart: Option<(String, String)>,
}

impl Example {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(common::example("simulator"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the simulator example");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut values, mut commands, mut quickstart) = (HashMap::new(), Vec::new(), None);
        // Everything to use comes before the status line it prints once running.
        loop {
            let line = tokio::time::timeout(RUN_LIMIT, lines.next_line())
                .await
                .expect("the example's output in time")
                .unwrap()
                .expect("the example ended before its status line");
            if line.starts_with("token requests: ") {
                break;
            }
            if let Some(command) = line.strip_prefix(CARGO_RUN) {
                commands.push(command.to_owned());
            } else if let Some((env, args)) = line.split_once(QUICKSTART_RUN) {
                quickstart = Some((env.to_owned(), args.to_owned()));
            } else if let Some((name, value)) = line
                .strip_prefix("export ")
                .unwrap_or(&line)
                .split_once('=')
            {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
        // Keeps reading, so that its status lines never fill the pipe and stall it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            _child: child,
            values,
            commands,
            quickstart,
        }
    }

    fn value(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("the example printed no {name}=: {:?}", self.values))
    }

    /// The printed command whose subcommand and flags start with `start`, as the arguments the
    /// CLI gets, with the test's own store instead of the shared one the example names.
    fn command(&self, env: &Env, start: &str) -> Vec<String> {
        let mut args = self
            .commands
            .iter()
            .map(|command| command.split_whitespace().map(str::to_owned).collect())
            .find(|args: &Vec<String>| {
                let store = args.iter().position(|arg| arg == "--store");
                store.is_some_and(|store| args[store + 2..].join(" ").starts_with(start))
            })
            .unwrap_or_else(|| panic!("no `{start}` command: {:?}", self.commands));
        let accounts = args.iter().position(|arg| arg == "--accounts-url").unwrap() + 1;
        assert_eq!(args[accounts], self.value("ZOHO_ACCOUNTS_URL"), "{args:?}");
        let store = args.iter().position(|arg| arg == "--store").unwrap() + 1;
        assert!(args[store].starts_with("file:"), "{args:?}");
        args[store] = format!("file:{}", env.store_path().display());
        args
    }

    /// The printed command that runs `zoho-auth exchange` on a code fetched from `GRANT_CODE_URL`
    /// as its `curl -s` would, with `args` its arguments up to that code.
    async fn with_fetched_code(&self, args: Vec<String>) -> Vec<String> {
        let code_url = self.value("GRANT_CODE_URL");
        let (args, curl) = args.split_at(args.len() - 3);
        assert_eq!(curl, ["\"$(curl", "-s", &format!("{code_url})\"")]);
        let code = http().get(code_url).send().await.unwrap();
        assert_eq!(code.status(), 200);
        let code = code.text().await.unwrap();
        let mut args = args.to_vec();
        args.push(code.trim().to_owned());
        args
    }

    /// The printed quickstart command as the quickstart binary with only the environment it
    /// names, on `store` instead of the store it names, which the printed CLI commands use too.
    fn quickstart(&self, store: &str) -> Command {
        let (env, args) = self.quickstart.as_ref().expect("a quickstart command");
        let mut vars: BTreeMap<_, _> = env
            .split_whitespace()
            .map(|var| var.split_once('=').expect("NAME=value"))
            .collect();
        assert_eq!(
            vars.keys().copied().collect::<Vec<_>>(),
            [
                "ZOHO_ACCOUNTS_URL",
                "ZOHO_CLIENT_ID",
                "ZOHO_CLIENT_SECRET",
                "ZOHO_TOKEN_STORE"
            ]
        );
        for name in ["ZOHO_ACCOUNTS_URL", "ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET"] {
            assert_eq!(vars[name], self.value(name), "{env}");
        }
        let printed = format!("--store {} ", vars["ZOHO_TOKEN_STORE"]);
        assert!(
            self.commands
                .iter()
                .all(|command| command.contains(&printed)),
            "{env} {:?}",
            self.commands
        );
        vars.insert("ZOHO_TOKEN_STORE", store);
        let mut command = Command::new(common::example("quickstart"));
        command
            .args(args.split_whitespace())
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// What the example's simulator has seen of the user behind `refresh_token`, from its
    /// simulator-only `/sim/user-counters`.
    async fn user_counters(&self, refresh_token: &RefreshToken) -> UserCounters {
        let answer = http()
            .post(format!(
                "{}/sim/user-counters",
                self.value("ZOHO_ACCOUNTS_URL")
            ))
            .form(&[("refresh_token", refresh_token.expose())])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        serde_json::from_str(&answer.text().await.unwrap()).unwrap()
    }

    /// A CLI environment with the printed exports, as in the user's second shell.
    fn env(&self, tag: &str) -> Env {
        let mut env = Env::new(tag);
        for name in [
            "ZOHO_ACCOUNTS_URL",
            "ZOHO_CLIENT_ID",
            "ZOHO_CLIENT_SECRET",
            "ZOHO_REFRESH_TOKEN",
        ] {
            env.set(name, self.value(name));
        }
        env
    }

    /// Runs `zoho-auth token` as printed, and calls the printed `URL` with the token it prints.
    async fn assert_token_works(&self, env: &Env) {
        let run = env.run(&strs(&self.command(env, "token"))).await;
        run.assert_code(0);
        let answer = http()
            .get(self.value("URL"))
            .header(
                "Authorization",
                format!("Zoho-oauthtoken {}", run.stdout.trim()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{run:#?}");
    }
}

/// The fields of the simulator's `/sim/user-counters` answer that the tests read.
#[derive(Debug, serde::Deserialize)]
struct UserCounters {
    tokens_issued: u64,
    api_requests: u64,
    api_ok: u64,
    wrong_dc_refresh_grants: u64,
    wrong_dc_api_requests: u64,
}

/// Arguments as [`Env::run`] and [`Login::start`] take them.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_takes_the_printed_code_and_fetched_ones() {
    let example = Example::start(&[]).await;
    let env = example.env("sim-example-exchange");
    // By default it registers the CLI's default redirect URI, and says to log in on that port.
    assert!(
        example
            .commands
            .iter()
            .any(|command| command.contains(" login --port 8765 ")),
        "{:?}",
        example.commands
    );

    let code = example.value("GRANT_CODE");
    let args = example.command(&env, "exchange --code 1000.");
    assert_eq!(args.last().map(String::as_str), Some(code));
    env.run(&strs(&args)).await.assert_code(0);
    let first = env.stored().await.refresh_token.expect("a refresh token");
    example.assert_token_works(&env).await;
    // One-time: the printed code is spent.
    env.run(&strs(&args)).await.assert_code(1);

    // The printed way to another code.
    let fetch = example.command(&env, "exchange --code \"$(curl");
    let args = example.with_fetched_code(fetch).await;
    env.run(&strs(&args)).await.assert_code(0);
    let second = env.stored().await.refresh_token.expect("a refresh token");
    assert_ne!(first.expose(), second.expose());
    example.assert_token_works(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_its_consent_page() {
    let port = free_port().await;
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let example = Example::start(&["--redirect-uri", &redirect_uri]).await;
    let env = example.env("sim-example-login");
    let accounts = example.value("ZOHO_ACCOUNTS_URL");

    let mut args = example.command(&env, &format!("login --port {port} --scopes "));
    // A test has no one to look at a browser window.
    args.push("--no-browser".to_owned());
    let login = Login::start(&env, &strs(&args)).await;
    // Consent starts at the simulator, not at accounts.zoho.com.
    assert!(
        login.url.starts_with(&format!("{accounts}/oauth/v2/auth?")),
        "{}",
        login.url
    );

    // What a browser does: open the page, submit its form with the Accept button.
    let page = Reply::read(http().get(&login.url).send().await.unwrap()).await;
    let request_id = page.request_id();
    assert!(
        page.text
            .contains(r#"id="accept" name="decision" value="accept""#),
        "{page:?}"
    );
    let action = url::Url::parse(&login.url)
        .unwrap()
        .join(&page.value_after(r#"<form method="post" action=""#))
        .unwrap();
    let decided = http()
        .post(action)
        .form(&[("request_id", request_id.as_str()), ("decision", "accept")])
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 302);
    let location = decided.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location}"
    );
    let signed_in = http().get(&location).send().await.unwrap();
    assert_eq!(signed_in.status(), 200);
    assert!(signed_in.text().await.unwrap().contains("Signed in"));

    let run = login.finish().await;
    run.assert_code(0);
    assert!(run.stdout.contains("refresh token:    stored"), "{run:#?}");
    assert!(env.stored().await.refresh_token.is_some(), "{run:#?}");
    example.assert_token_works(&env).await;
}

/// Every connection of `store` (`file:` or `redis://`), in order, with its record.
async fn stored_connections(store: &str) -> Vec<(ConnectionId, TokenSet)> {
    let connections = zoho_auth::store::open_connections(store).unwrap();
    // One page: the tests store a few.
    let ids = connections.list(None, 1000).await.unwrap();
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        let record = connections.connection(&id).load().await.unwrap();
        records.push((id, record.expect("a listed connection has a record")));
    }
    records
}

/// Runs the printed quickstart on `store`, and checks what the simulator saw of each connection's
/// user against `before` (counters by refresh token, taken before the run): it served every
/// connection with that connection's own tokens, at its own data centre, and every request.
async fn assert_quickstart_serves_each(
    example: &Example,
    store: &str,
    before: &HashMap<String, UserCounters>,
    client: &str,
) -> Summary {
    let child = example
        .quickstart(store)
        .args(["--client", client])
        .spawn()
        .expect("start the quickstart");
    let summary = common::finish_quickstart(child).await;
    assert_eq!(
        summary.connections,
        Some(before.len() as u64),
        "{summary:?}"
    );
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(summary.ok, summary.requests, "{summary:?}");
    let mut api_requests = 0;
    for (id, record) in stored_connections(store).await {
        let refresh_token = record.refresh_token.expect("a refresh token");
        let seen = example.user_counters(&refresh_token).await;
        let earlier = &before[refresh_token.expose()];
        // A connection left out, or served with another's token, got no request of its own.
        assert!(
            seen.api_ok > earlier.api_ok,
            "{id} was never served: {seen:?}"
        );
        assert_eq!(
            (seen.wrong_dc_refresh_grants, seen.wrong_dc_api_requests),
            (0, 0),
            "{id} went to another data centre: {seen:?}"
        );
        api_requests += seen.api_requests - earlier.api_requests;
    }
    assert_eq!(
        api_requests, summary.requests,
        "each request carried one of the connections' own tokens: {summary:?}"
    );
    summary
}

/// The simulator's counters of every connection in `store`, by refresh token.
async fn counters_of(example: &Example, store: &str) -> HashMap<String, UserCounters> {
    let mut counters = HashMap::new();
    for (_, record) in stored_connections(store).await {
        let refresh_token = record.refresh_token.expect("a refresh token");
        let seen = example.user_counters(&refresh_token).await;
        counters.insert(refresh_token.expose().to_owned(), seen);
    }
    counters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_all_serves_every_seeded_connection_at_its_own_data_centre() {
    const CONNECTIONS: usize = 12;
    const DATA_CENTRES: usize = 3;
    let dir = TempDir::new("sim-example-seed");
    let store = format!("file:{}", dir.join("tokens.json").display());
    let example = Example::start(&[
        "--connections",
        &CONNECTIONS.to_string(),
        "--data-centres",
        &DATA_CENTRES.to_string(),
        "--token-store",
        &store,
    ])
    .await;
    // Every printed command uses the store it seeded.
    let flag = format!("--store {store} ");
    assert!(
        example
            .commands
            .iter()
            .all(|command| command.contains(&flag)),
        "{:?}",
        example.commands
    );

    // user-0001.. of their own, spread evenly over the data centres, each recording its own.
    let seeded = stored_connections(&store).await;
    let ids: Vec<_> = seeded.iter().map(|(id, _)| id.as_str()).collect();
    let expected: Vec<_> = (1..=CONNECTIONS).map(|n| format!("user-{n:04}")).collect();
    assert_eq!(ids, expected);
    let refresh_tokens: HashSet<_> = seeded
        .iter()
        .map(|(_, record)| record.refresh_token.as_ref().unwrap().expose())
        .collect();
    assert_eq!(refresh_tokens.len(), CONNECTIONS);
    let mut per_dc = BTreeMap::<&str, usize>::new();
    for (_, record) in &seeded {
        *per_dc
            .entry(record.accounts_url.as_deref().unwrap())
            .or_default() += 1;
        assert!(record.access.is_none(), "{record:?}");
    }
    assert_eq!(
        per_dc.values().copied().collect::<Vec<_>>(),
        [CONNECTIONS / DATA_CENTRES; DATA_CENTRES],
        "{per_dc:?}"
    );
    assert!(
        per_dc.contains_key(example.value("ZOHO_ACCOUNTS_URL")),
        "{per_dc:?}"
    );

    let before = counters_of(&example, &store).await;
    assert!(
        before.values().all(|seen| seen.api_requests == 0),
        "{before:?}"
    );
    assert_quickstart_serves_each(&example, &store, &before, "hyper").await;
    // One refresh per connection: its cache's, at its own accounts server.
    let after = counters_of(&example, &store).await;
    assert!(
        after.values().all(|seen| seen.tokens_issued == 1),
        "{after:?}"
    );
    // The same through each reqwest front end, which adopt the tokens the first run stored.
    for client in ["reqwest", "reqwest-middleware"] {
        let before = counters_of(&example, &store).await;
        assert_quickstart_serves_each(&example, &store, &before, client).await;
    }
    let after = counters_of(&example, &store).await;
    assert!(
        after.values().all(|seen| seen.tokens_issued == 1),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_all_serves_the_connections_the_cli_exchanged() {
    let example = Example::start(&[]).await;
    let mut env = example.env("sim-example-connections");
    let store = format!("file:{}", env.store_path().display());
    env.set("ZOHO_TOKEN_STORE", &store);

    let template = example.command(&env, "exchange --connection ID --code \"$(curl");
    for id in ["a", "b"] {
        let mut args = example.with_fetched_code(template.clone()).await;
        let at = args.iter().position(|arg| arg == "ID").unwrap();
        args[at] = id.to_owned();
        env.run(&strs(&args)).await.assert_code(0);
    }
    let mut refresh_tokens = HashSet::new();
    for id in ["a", "b"] {
        let record = env.stored_connection(id).await;
        refresh_tokens.insert(
            record
                .refresh_token
                .expect("a refresh token")
                .expose()
                .to_owned(),
        );
    }
    assert_eq!(refresh_tokens.len(), 2, "two accounts, two refresh tokens");

    let before = counters_of(&example, &store).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert_quickstart_serves_each(&example, &store, &before, "hyper").await;
}

/// The quickstart without credentials (its embedded simulator), through every front end, for one
/// account and for many: every request served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_serves_every_request_through_every_client() {
    for client in ["hyper", "reqwest", "reqwest-middleware"] {
        for connections in [None, Some("5")] {
            let mut command = Command::new(common::example("quickstart"));
            command
                .args(["--client", client, "--requests", "400"])
                .env_remove("ZOHO_CLIENT_ID")
                .env_remove("ZOHO_CLIENT_SECRET")
                .env_remove("ZOHO_REFRESH_TOKEN")
                .env_remove("ZOHO_TOKEN_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(n) = connections {
                command.args(["--connections", n]);
            }
            let summary = common::finish_quickstart(command.spawn().unwrap()).await;
            assert_eq!(
                (summary.requests, summary.ok, summary.failed),
                (400, 400, 0),
                "{client} {connections:?}: {summary:?}"
            );
            assert_eq!(
                summary.connections,
                connections.map(|n| n.parse().unwrap()),
                "{client}"
            );
        }
    }
}
