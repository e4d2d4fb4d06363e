//! `cargo run --example simulator` serves the `zoho-auth` command line end to end, as a new user
//! without a Zoho account runs them: the real example binary in one process, the real CLI in
//! others, run with the exports and the commands the example prints, over loopback.
//!
//! The example binary comes from `cargo test` (or `cargo build --examples`, before
//! `cargo test --test simulator_example`).

#[path = "common/cli.rs"]
mod cli_runner;
mod common;

use std::collections::HashMap;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use cli_runner::{free_port, http, Env, Login, RUN_LIMIT};
use common::Reply;

/// How the example's commands start; the tests run the CLI binary `cargo test` built instead.
const CARGO_RUN: &str = "cargo run --features cli --bin zoho-auth -- ";

/// The example, running, and what it printed before its first status line.
struct Example {
    /// Killed on drop.
    _child: Child,
    /// `NAME=value` of its `export NAME=value` and `NAME=value` lines.
    values: HashMap<String, String>,
    /// The `zoho-auth` commands it suggests, without [`CARGO_RUN`].
    commands: Vec<String>,
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
        let (mut values, mut commands) = (HashMap::new(), Vec::new());
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

    // The printed way to another code, fetched as its `curl -s` would.
    let code_url = example.value("GRANT_CODE_URL");
    let fetch = example.command(&env, "exchange --code \"$(curl");
    let (args, curl) = fetch.split_at(fetch.len() - 3);
    assert_eq!(curl, ["\"$(curl", "-s", &format!("{code_url})\"")]);
    let another = http().get(code_url).send().await.unwrap();
    assert_eq!(another.status(), 200);
    let another = another.text().await.unwrap();
    let mut args = args.to_vec();
    args.push(another.trim().to_owned());
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
