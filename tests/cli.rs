//! The `zoho-auth` command line, run as a real process against the simulator: every subcommand,
//! and every Zoho error the issue lists, each answered with what happened and what to do — and
//! never with a secret.

#[path = "common/cli.rs"]
mod cli_runner;
mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, SystemTime};

use cli_runner::{free_port, http, query_param, Env, Login, Run, BIN, RUN_LIMIT};
use redis_server::RedisServer;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{Fault, Simulator};
use zoho_auth::store::{FileStore, StoredAccess, StoredFailure, TokenSet, TokenStore};
use zoho_auth::{AccessToken, Accounts, ConnectionId, DataCenter, Environment, RefreshToken};

const SCOPES: &str = "ZohoCRM.modules.ALL,ZohoCRM.users.READ";

/// The client secret and every token in `set`.
fn secrets(sim: &Simulator, set: &TokenSet) -> Vec<String> {
    let mut all = vec![sim.client_secret().expose().to_owned()];
    all.extend(set.refresh_token.as_ref().map(|t| t.expose().to_owned()));
    all.extend(
        set.access
            .as_ref()
            .map(|a| a.access_token.expose().to_owned()),
    );
    all
}

/// A loopback URL where nothing listens.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn dcs_lists_every_data_centre() {
    let env = Env::new("cli-dcs");
    let run = env.run(&["dcs"]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("https://accounts.zohocloud.ca"),
        "{run:#?}"
    );
    for dc in DataCenter::ALL {
        for text in [
            dc.accounts_url(),
            dc.api_domain(Environment::Production),
            dc.api_domain(Environment::Sandbox),
            dc.api_domain(Environment::Developer),
        ] {
            assert!(run.stdout.contains(text), "{text} missing: {run:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_stores_a_refresh_token_and_prints_the_outcome() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-exchange", &sim);
    let code = sim.issue_grant_code(&["ZohoCRM.modules.ALL"], true, None);

    let run = env.run(&["exchange", "--code", code.expose()]).await;
    run.assert_code(0);
    let set = env.stored().await;
    let refresh = set.refresh_token.clone().expect("a stored refresh token");
    assert_eq!(
        set.accounts_url.as_deref(),
        Some(&*format!("{}/", sim.url()))
    );
    let access = set.access.clone().expect("a stored access token");
    assert!(sim.is_access_token_live(access.access_token.expose()));
    assert_eq!(sim.live_tokens(&refresh), 1);
    for phrase in [
        "ZohoCRM.modules.ALL",
        "refresh token:    stored",
        &sim.url(),
    ] {
        assert!(run.stdout.contains(phrase), "{phrase}: {run:#?}");
    }
    let mut hidden = secrets(&sim, &set);
    hidden.push(code.expose().to_owned());
    run.assert_hides(&hidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_reads_the_secret_and_the_code_from_stdin() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-stdin", &sim);
    env.unset("ZOHO_CLIENT_SECRET");
    let code = sim.issue_grant_code(&[], true, None);
    let input = format!("{}\n{}\n", sim.client_secret().expose(), code.expose());

    let run = env
        .run_with_stdin(
            &["--client-secret-stdin", "exchange", "--code", "-"],
            &input,
        )
        .await;
    run.assert_code(0);
    let set = env.stored().await;
    assert!(set.refresh_token.is_some());
    let mut hidden = secrets(&sim, &set);
    hidden.push(code.expose().to_owned());
    run.assert_hides(&hidden);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_typed_at_a_terminal_are_not_echoed() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-tty", &sim);
    env.unset("ZOHO_CLIENT_SECRET");
    let code = sim.issue_grant_code(&[], true, None);
    let secret = sim.client_secret().expose().to_owned();

    // Blocking terminal I/O; the simulator goes on on the other worker.
    let (screen, success) = tokio::task::block_in_place(|| {
        terminal::run(
            &env,
            &["--client-secret-stdin", "exchange", "--code", "-"],
            &[("Client secret", &secret), ("Grant code", code.expose())],
        )
    });
    assert!(success, "{screen}");
    assert!(screen.contains("refresh token:    stored"), "{screen}");
    let set = env.stored().await;
    assert!(set.refresh_token.is_some());
    let mut hidden = secrets(&sim, &set);
    hidden.push(code.expose().to_owned());
    for value in &hidden {
        assert!(
            !screen.contains(value.as_str()),
            "shown on the terminal: {screen}"
        );
    }
}

/// A person at a terminal, typing into a pseudo-terminal.
#[cfg(unix)]
mod terminal {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use nix::sys::termios::LocalFlags;
    use portable_pty::{native_pty_system, CommandBuilder, PtySize};

    use super::{Env, BIN, RUN_LIMIT};

    /// How long a prompt may stand before the command turns echo off. Generous: a command that
    /// never does is typed at anyway, and its echo then shows.
    const ECHO_OFF_LIMIT: Duration = Duration::from_secs(10);

    /// Runs the command on a terminal and answers each `(prompt, answer)` in turn: after the
    /// prompt shows and the terminal's echo is off (a password prompt is printed before echo is
    /// turned off), as a person would. Returns everything the terminal showed, and whether the
    /// command succeeded.
    pub fn run(env: &Env, args: &[&str], answers: &[(&str, &str)]) -> (String, bool) {
        let pty = native_pty_system().openpty(PtySize::default()).unwrap();
        let mut command = CommandBuilder::new(BIN);
        command.args(args);
        command.env_clear();
        for (name, value) in &env.vars {
            command.env(name, value);
        }
        command.cwd(env.dir.path());
        let mut child = pty.slave.spawn_command(command).unwrap();
        drop(pty.slave);

        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = pty.master.try_clone_reader().unwrap();
        let reading = std::thread::spawn({
            let screen = screen.clone();
            move || {
                let mut buffer = [0; 4096];
                // Ends with an error (EIO) once the command has exited.
                while let Ok(read @ 1..) = reader.read(&mut buffer) {
                    screen.lock().unwrap().extend_from_slice(&buffer[..read]);
                }
            }
        });
        let shown = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
        let mut writer = pty.master.take_writer().unwrap();
        let mut seen = 0;
        for (prompt, answer) in answers {
            assert!(
                wait_for(RUN_LIMIT, || shown()[seen..].contains(prompt)),
                "no {prompt:?} prompt: {}",
                shown()
            );
            seen = shown().len();
            wait_for(ECHO_OFF_LIMIT, || {
                pty.master
                    .get_termios()
                    .is_some_and(|t| !t.local_flags.contains(LocalFlags::ECHO))
            });
            writer.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        let mut status = None;
        if !wait_for(RUN_LIMIT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }) {
            child.kill().unwrap();
            panic!("zoho-auth did not finish: {}", shown());
        }
        reading.join().unwrap();
        (shown(), status.is_some_and(|status| status.success()))
    }

    /// Polls `condition` until it holds (true) or `limit` passes (false).
    fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !condition() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_supplies_settings_and_the_secret_file() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::new("cli-profile");
    std::fs::write(
        env.dir.join("secret.txt"),
        format!("{}\n", sim.client_secret().expose()),
    )
    .unwrap();
    let profile = env.dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "client_id = {:?}\nclient_secret_file = \"secret.txt\"\naccounts_url = {:?}\n\
             store = {:?}\nscopes = [\"ZohoCRM.modules.ALL\"]\n",
            sim.client_id().as_str(),
            sim.url(),
            format!("file:{}", env.store_path().display()),
        ),
    )
    .unwrap();
    let code = sim.issue_grant_code(&[], true, None);

    let run = env
        .run(&[
            "--profile",
            &profile.display().to_string(),
            "exchange",
            "--code",
            code.expose(),
        ])
        .await;
    run.assert_code(0);
    let set = env.stored().await;
    assert!(set.refresh_token.is_some(), "{run:#?}");
    run.assert_hides(&secrets(&sim, &set));

    // The same profile through ZOHO_AUTH_PROFILE, with a flag overriding one of its keys.
    let mut env2 = Env::new("cli-profile-env");
    env2.set("ZOHO_AUTH_PROFILE", &profile.display().to_string());
    let other = closed_port_url().await;
    let run = env2.run(&["--accounts-url", &other, "revoke"]).await;
    // The store (from the profile) holds the refresh token issued by `sim`, and revocation goes
    // where the store says, not to the overriding URL.
    run.assert_code(0);
    assert!(run.stdout.contains("Revoked"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_store_is_a_file_in_the_config_directory() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-default-store", &sim);
    env.unset("ZOHO_TOKEN_STORE");
    let code = sim.issue_grant_code(&[], true, None);
    env.run(&["exchange", "--code", code.expose()])
        .await
        .assert_code(0);
    let file = env.dir.join("config/zoho-auth/tokens.json");
    let set = FileStore::new(&file)
        .load()
        .await
        .unwrap()
        .expect("tokens in the default file");
    assert!(set.refresh_token.is_some());
}

#[tokio::test]
async fn secrets_are_refused_as_arguments_and_in_the_profile() {
    let env = Env::new("cli-refuse");
    let secret = "do-not-take-this-secret";
    let run = env
        .run(&["exchange", "--client-secret", secret, "--code", "x"])
        .await;
    run.assert_code(2)
        .assert_says(&[
            "--client-secret is not accepted",
            "ZOHO_CLIENT_SECRET",
            "--client-secret-stdin",
        ])
        .assert_hides(&[secret.to_owned()]);
    let run = env
        .run(&["token", &format!("--client-secret={secret}")])
        .await;
    run.assert_code(2).assert_hides(&[secret.to_owned()]);

    let profile = env.dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!("client_id = \"1000.X\"\nclient_secret = \"{secret}\"\n"),
    )
    .unwrap();
    let run = env
        .run(&["--profile", &profile.display().to_string(), "token"])
        .await;
    run.assert_code(2)
        .assert_says(&["client_secret_file"])
        .assert_hides(&[secret.to_owned()]);

    // A syntax error on the secret's line must not quote the line.
    std::fs::write(&profile, format!("client_secret = \"{secret}\" oops\n")).unwrap();
    let run = env
        .run(&["--profile", &profile.display().to_string(), "token"])
        .await;
    run.assert_code(2)
        .assert_says(&["line 1"])
        .assert_hides(&[secret.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_token_and_a_second_run_reuses_it() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-token", &sim);
    env.seed(&sim.mint_refresh_token(&[]), None).await;

    let first = env.run(&["token"]).await;
    first.assert_code(0);
    let token = first
        .stdout
        .strip_suffix('\n')
        .expect("a token and a newline");
    assert!(!token.contains(char::is_whitespace), "{first:#?}");
    assert!(sim.is_access_token_live(token));
    assert_eq!(first.stderr, "");

    let second = env.run(&["token"]).await;
    second.assert_code(0);
    assert_eq!(
        second.stdout, first.stdout,
        "the stored token, not a new one"
    );

    let json = env.run(&["token", "--json"]).await;
    json.assert_code(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["access_token"], token);
    assert_eq!(json["api_domain"], sim.url());
    assert!(json["expires_in"].as_u64().unwrap() > 3000, "{json}");

    let counters = sim.counters();
    assert_eq!(counters.token_requests, 1, "{counters:?}");
    assert_eq!(counters.refresh_grants, 1, "{counters:?}");
    // The client secret and refresh token never show; the access token only as the output.
    let set = env.stored().await;
    let mut hidden = secrets(&sim, &set);
    hidden.retain(|secret| secret != token);
    first.assert_hides(&hidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refreshes_where_the_store_says_the_refresh_token_came_from() {
    let issuer = Simulator::start().await.unwrap();
    let elsewhere = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-token-recorded", &issuer);
    env.set("ZOHO_ACCOUNTS_URL", &elsewhere.url());
    env.seed(&issuer.mint_refresh_token(&[]), Some(&issuer.url()))
        .await;

    let run = env.run(&["token"]).await;
    run.assert_code(0);
    assert!(issuer.is_access_token_live(run.stdout.trim()));
    assert_eq!(issuer.counters().refresh_grants, 1);
    assert_eq!(elsewhere.counters().token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_revokes_at_zoho_and_empties_the_store() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-revoke", &sim);
    let code = sim.issue_grant_code(&[], true, None);
    env.run(&["exchange", "--code", code.expose()])
        .await
        .assert_code(0);
    let before = env.stored().await;
    let refresh = before.refresh_token.clone().unwrap();

    let run = env.run(&["revoke"]).await;
    run.assert_code(0).assert_hides(&secrets(&sim, &before));
    assert!(run.stdout.contains("Revoked"), "{run:#?}");
    assert_eq!(sim.counters().revocations, 1);
    let accounts = Accounts::custom(&sim.url()).unwrap();
    let client = AccountsClient::new(accounts, sim.client_id(), sim.client_secret()).unwrap();
    let refused = client.refresh(&refresh).await.unwrap_err();
    assert!(refused.is_invalid_grant(), "{refused:?}");
    let after = env.stored().await;
    assert!(
        after.refresh_token.is_none() && after.access.is_none(),
        "{after:?}"
    );

    let again = env.run(&["revoke"]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to revoke"), "{again:#?}");
    env.run(&["token"])
        .await
        .assert_code(1)
        .assert_says(&["Not signed in", "zoho-auth login"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_forgets_a_token_zoho_no_longer_knows() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-revoke-unknown", &sim);
    let refresh = sim.mint_refresh_token(&[]);
    env.seed(&refresh, Some(&sim.url())).await;
    sim.revoke_refresh_token(&refresh);

    let run = env.run(&["revoke"]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("no longer knew"), "{run:#?}");
    assert!(env.stored().await.refresh_token.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-login", &sim);
    let port = free_port().await;
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    sim.register_redirect_uri(&redirect_uri);

    let login = Login::start(
        &env,
        &[
            "login",
            "--no-browser",
            "--port",
            &port.to_string(),
            "--scopes",
            SCOPES,
        ],
    )
    .await;
    assert_eq!(query_param(&login.url, "redirect_uri"), redirect_uri);
    let location = sim.accept_consent(&login.url).expect("the consent page");
    let page = http().get(&location).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Signed in"), "{page}");

    let run = login.finish().await;
    run.assert_code(0);
    for phrase in [
        "Signed in to Zoho.",
        "ZohoCRM.users.READ",
        "refresh token:    stored",
    ] {
        assert!(run.stdout.contains(phrase), "{phrase}: {run:#?}");
    }
    let set = env.stored().await;
    assert!(set.refresh_token.is_some(), "{run:#?}");
    let mut hidden = secrets(&sim, &set);
    hidden.push(query_param(&location, "code"));
    run.assert_hides(&hidden);
    assert!(!page.contains(&query_param(&location, "code")));

    // The stored login serves `token` without another token request.
    let token = env.run(&["token"]).await;
    token.assert_code(0);
    assert_eq!(
        token.stdout.trim(),
        set.access.unwrap().access_token.expose()
    );
    assert_eq!(sim.counters().token_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_denied_explains_and_ignores_strangers() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-login-deny", &sim);
    // Port 0: the system picks one, and the URL names it.
    let login = Login::start(
        &env,
        &["login", "--no-browser", "--port", "0", "--scopes", SCOPES],
    )
    .await;
    let redirect_uri = query_param(&login.url, "redirect_uri");
    let state = query_param(&login.url, "state");

    // A callback with another state (a stale tab, a forged link) is refused; the login goes on.
    let stranger = http()
        .get(format!("{redirect_uri}?state=not-ours&code=1000.forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 400);

    let denied = http()
        .get(format!("{redirect_uri}?error=access_denied&state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 400);
    assert!(denied.text().await.unwrap().contains("denied"));

    let run = login.finish().await;
    run.assert_code(1)
        .assert_says(&["denied", "access_denied", "zoho-auth login", "Accept"])
        .assert_hides(&secrets(&sim, &TokenSet::default()));
    assert!(run.stderr.contains("refused a request"), "{run:#?}");
    assert!(env.stored().await.refresh_token.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gives_up_after_its_timeout() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-login-timeout", &sim);
    let login = Login::start(
        &env,
        &[
            "login",
            "--no-browser",
            "--port",
            "0",
            "--scopes",
            SCOPES,
            "--timeout",
            "1",
        ],
    )
    .await;
    login.finish().await.assert_code(1).assert_says(&[
        "No sign-in arrived",
        "Authorized Redirect URI",
        "--timeout",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_grant_code_is_invalid_code() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-used-code", &sim);
    let code = sim.issue_grant_code(&[], true, None);
    env.run(&["exchange", "--code", code.expose()])
        .await
        .assert_code(0);
    let set = env.stored().await;

    let run = env.run(&["exchange", "--code", code.expose()]).await;
    let mut hidden = secrets(&sim, &set);
    hidden.push(code.expose().to_owned());
    run.assert_code(1)
        .assert_says(&[
            "invalid_code",
            "expired",
            "already used",
            "Generate a new code",
        ])
        .assert_hides(&hidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_id_is_invalid_client() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-bad-client", &sim);
    env.set("ZOHO_CLIENT_ID", "1000.NOSUCHCLIENT");
    let code = sim.issue_grant_code(&[], true, None);

    let run = env.run(&["exchange", "--code", code.expose()]).await;
    run.assert_code(1)
        .assert_says(&[
            "invalid_client",
            "1000.NOSUCHCLIENT",
            &sim.url(),
            "--dc",
            "multi-DC",
        ])
        .assert_hides(&[
            sim.client_secret().expose().to_owned(),
            code.expose().to_owned(),
        ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_invalid_client_secret() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-bad-secret", &sim);
    let wrong = "0123456789abcdef-wrong-secret";
    env.set("ZOHO_CLIENT_SECRET", wrong);
    let code = sim.issue_grant_code(&[], true, None);

    let run = env.run(&["exchange", "--code", code.expose()]).await;
    run.assert_code(1)
        .assert_says(&[
            "invalid_client_secret",
            "Client Secret",
            "ZOHO_CLIENT_SECRET",
        ])
        .assert_hides(&[wrong.to_owned(), code.expose().to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_says_how_long_to_wait() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-throttled", &sim);
    let refresh = sim.mint_refresh_token(&[]);
    env.seed(&refresh, None).await;
    sim.inject(Fault::Throttle, 1);

    let run = env.run(&["token"]).await;
    run.assert_code(1)
        .assert_says(&["throttling", "Wait ", "minutes"])
        .assert_hides(&[
            sim.client_secret().expose().to_owned(),
            refresh.expose().to_owned(),
        ]);
    assert_eq!(run.stdout, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_data_centre_is_invalid_client() {
    let home = Simulator::start().await.unwrap();
    let other_dc = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-wrong-dc", &home);
    env.set("ZOHO_ACCOUNTS_URL", &other_dc.url());
    let code = home.issue_grant_code(&[], true, None);

    let run = env.run(&["exchange", "--code", code.expose()]).await;
    run.assert_code(1)
        .assert_says(&["invalid_client", &other_dc.url(), "data centre"])
        .assert_hides(&[
            home.client_secret().expose().to_owned(),
            code.expose().to_owned(),
        ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_accounts_server_says_so() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-unreachable", &sim);
    let closed = closed_port_url().await;
    env.set("ZOHO_ACCOUNTS_URL", &closed);

    let run = env
        .run(&["exchange", "--code", "1000.some-code-value"])
        .await;
    run.assert_code(1)
        .assert_says(&["Could not", &closed, "try again"])
        .assert_hides(&[
            sim.client_secret().expose().to_owned(),
            "1000.some-code-value".into(),
        ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_asks_for_a_new_login() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-revoked", &sim);
    let refresh = sim.mint_refresh_token(&[]);
    env.seed(&refresh, None).await;
    sim.revoke_refresh_token(&refresh);
    let hidden = [
        sim.client_secret().expose().to_owned(),
        refresh.expose().to_owned(),
    ];

    let run = env.run(&["token"]).await;
    run.assert_code(1)
        .assert_says(&["invalid_code", "revoked", "zoho-auth login"])
        .assert_hides(&hidden);
    // The store remembers the failure: the next run says the same without calling Zoho.
    let again = env.run(&["token"]).await;
    again
        .assert_code(1)
        .assert_says(&["revoked", "zoho-auth login"])
        .assert_hides(&hidden);
    assert_eq!(sim.counters().refresh_grants, 1);
}

#[tokio::test]
async fn missing_or_invalid_settings_name_where_to_set_them() {
    let env = Env::new("cli-missing");
    env.run(&["exchange", "--code", "x"])
        .await
        .assert_code(2)
        .assert_says(&["client id", "--client-id", "ZOHO_CLIENT_ID", "client_id"]);

    let mut env = Env::new("cli-missing-secret");
    env.set("ZOHO_CLIENT_ID", "1000.X");
    env.run(&["token"]).await.assert_code(2).assert_says(&[
        "ZOHO_CLIENT_SECRET",
        "client_secret_file",
        "--client-secret-stdin",
    ]);

    env.set("ZOHO_CLIENT_SECRET", "some-client-secret");
    env.run(&["login", "--no-browser", "--port", "0"])
        .await
        .assert_code(2)
        .assert_says(&["scopes", "--scopes", "ZOHO_SCOPES"]);
    env.run(&["--dc", "mars", "exchange", "--code", "x"])
        .await
        .assert_code(2)
        .assert_says(&["\"mars\"", "--dc", "ZOHO_DC", "zoho-auth dcs"]);
    env.run(&["--store", "memory", "token"])
        .await
        .assert_code(2)
        .assert_says(&["memory", "file:PATH", "ZOHO_TOKEN_STORE"]);
    env.run(&[
        "--accounts-url",
        "http://proxy.example.com",
        "exchange",
        "--code",
        "x",
    ])
    .await
    .assert_code(2)
    .assert_says(&["https", "--accounts-url", "ZOHO_ACCOUNTS_URL"]);
}

/// The line of `connections`' table for connection `id`.
fn row<'a>(run: &'a Run, id: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id}: {run:#?}"))
}

/// Two accounts in one store, by `--connection` and `ZOHO_CONNECTION`: each its own record,
/// token, listing and revocation, and the store's single record untouched throughout.
async fn two_connections_share_one_store(sim: &Simulator, env: &Env) {
    let alice_code = sim.issue_grant_code(&["ZohoCRM.modules.ALL"], true, None);
    let bob_code = sim.issue_grant_code(&["ZohoCRM.users.READ"], true, None);
    let run = env
        .run(&[
            "exchange",
            "--connection",
            "alice",
            "--code",
            alice_code.expose(),
        ])
        .await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("token store:      connection \"alice\" in "),
        "{run:#?}"
    );
    let run = env
        .run(&[
            "exchange",
            "--code",
            bob_code.expose(),
            "--connection",
            "bob",
        ])
        .await;
    run.assert_code(0);

    let alice = env.stored_connection("alice").await;
    let bob = env.stored_connection("bob").await;
    let (alice_refresh, bob_refresh) = (
        alice.refresh_token.clone().expect("alice's refresh token"),
        bob.refresh_token.clone().expect("bob's refresh token"),
    );
    assert_ne!(alice_refresh, bob_refresh);
    let single = zoho_auth::store::open(&env.vars["ZOHO_TOKEN_STORE"]).unwrap();
    assert_eq!(
        single.load().await.unwrap(),
        None,
        "the single record stays empty"
    );
    let mut hidden = secrets(sim, &alice);
    hidden.extend(secrets(sim, &bob));
    hidden.extend([alice_code.expose().to_owned(), bob_code.expose().to_owned()]);

    // `token` prints the connection's own token: the stored one, which the simulator accepts.
    let run = env.run(&["token", "--connection", "alice"]).await;
    run.assert_code(0);
    let alice_token = run.stdout.trim();
    assert_eq!(alice_token, alice.access.unwrap().access_token.expose());
    assert!(sim.is_access_token_live(alice_token));
    let mut by_env = Env::new("cli-connection-env");
    by_env.vars = env.vars.clone();
    by_env.set("ZOHO_CONNECTION", "bob");
    let run = by_env.run(&["token"]).await;
    run.assert_code(0);
    let bob_token = run.stdout.trim();
    assert_eq!(bob_token, bob.access.unwrap().access_token.expose());
    assert_ne!(alice_token, bob_token);
    assert_eq!(
        sim.counters().token_requests,
        2,
        "both printed from the store"
    );

    let run = env.run(&["connections"]).await;
    run.assert_code(0).assert_hides(&hidden);
    let location = format!("{}/", sim.url());
    for (id, scope) in [
        ("alice", "ZohoCRM.modules.ALL"),
        ("bob", "ZohoCRM.users.READ"),
    ] {
        let line = row(&run, id);
        for phrase in [
            location.as_str(),
            scope,
            "connected",
            "expires in ",
            " minutes",
        ] {
            assert!(line.contains(phrase), "{phrase:?} in {line:?}");
        }
    }
    let run = env.run(&["connections", "--json"]).await;
    run.assert_code(0).assert_hides(&hidden);
    let listed: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{run:#?}");
    assert_eq!(listed[0]["id"], "alice");
    assert_eq!(
        listed[0]["scopes"],
        serde_json::json!(["ZohoCRM.modules.ALL"])
    );
    assert_eq!(listed[1]["id"], "bob");
    assert_eq!(listed[1]["status"], "connected");
    assert_eq!(listed[1]["accounts_url"], location);
    assert!(listed[1]["expires_in"].as_i64().unwrap() > 3000, "{run:#?}");

    let run = env.run(&["revoke", "--connection", "bob"]).await;
    run.assert_code(0).assert_hides(&hidden);
    assert!(run.stdout.contains("Revoked"), "{run:#?}");
    assert_eq!(sim.counters().revocations, 1);
    assert!(sim.live_tokens(&bob_refresh) == 0 && sim.live_tokens(&alice_refresh) == 1);
    let ids = env.connections().list(None, 10).await.unwrap();
    assert_eq!(
        ids,
        [ConnectionId::new("alice").unwrap()],
        "bob's record is removed"
    );
    assert_eq!(
        env.stored_connection("alice").await.refresh_token,
        Some(alice_refresh)
    );

    let run = env.run(&["connections"]).await;
    run.assert_code(0).assert_hides(&hidden);
    row(&run, "alice");
    assert!(!run.stdout.contains("bob"), "{run:#?}");
    env.run(&["token"])
        .await
        .assert_code(1)
        .assert_says(&["Not signed in"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_a_file_store() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-connections-file", &sim);
    two_connections_share_one_store(&sim, &env).await;
    // One file per connection, beside the single record's file.
    let dir = env.dir.join("tokens.json.connections");
    assert!(dir.join("alice.json").is_file());
    assert!(!dir.join("bob.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_a_redis_store() {
    let server = RedisServer::start();
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-connections-redis", &sim);
    env.set("ZOHO_TOKEN_STORE", &format!("{}?prefix=cli", server.url()));
    two_connections_share_one_store(&sim, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_show_each_record_s_status_across_pages() {
    let mut env = Env::new("cli-connections-status");
    let store = format!("file:{}", env.store_path().display());
    env.set("ZOHO_TOKEN_STORE", &store);
    let empty = env.run(&["connections"]).await;
    empty.assert_code(0);
    assert_eq!(empty.stdout, format!("No connections in {store}.\n"));
    let empty = env.run(&["connections", "--json"]).await;
    assert_eq!((empty.code, empty.stdout.as_str()), (Some(0), ""));

    let now = SystemTime::now();
    let access = |token: &str, expires_at: SystemTime, scopes: &[&str]| {
        StoredAccess::new(
            AccessToken::new(token),
            now - Duration::from_secs(3600),
            expires_at,
            None,
            scopes.iter().map(|s| s.to_string()).collect(),
        )
    };
    let mut carol = TokenSet::new(RefreshToken::new("1000.carol-refresh-token"));
    carol.failure = Some(StoredFailure::new("invalid_code", "revoked"));
    let mut dave = TokenSet::new(RefreshToken::new("1000.dave-refresh-token"));
    dave.accounts_url = Some("https://accounts.zoho.eu".into());
    dave.access = Some(access(
        "1000.dave-access-token",
        now - Duration::from_secs(60),
        &["ZohoMail.accounts.READ"],
    ));
    let mut erin = TokenSet::default();
    erin.access = Some(access(
        "1000.erin-access-token",
        now + Duration::from_secs(1800),
        &["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"],
    ));
    let connections = env.connections();
    let records = [("carol", &carol), ("dave", &dave), ("erin", &erin)];
    for (id, set) in records {
        common::put(&*connections.connection(&id.parse().unwrap()), set)
            .await
            .unwrap();
    }
    // More than one page of the command's 500.
    let filler = TokenSet::new(RefreshToken::new("1000.filler-refresh-token"));
    for n in 0..500 {
        let id = ConnectionId::new(format!("n{n:03}")).unwrap();
        common::put(&*connections.connection(&id), &filler)
            .await
            .unwrap();
    }
    let hidden: Vec<String> = [
        "1000.carol-refresh-token",
        "1000.dave-refresh-token",
        "1000.dave-access-token",
        "1000.erin-access-token",
        "1000.filler-refresh-token",
    ]
    .map(str::to_owned)
    .into();

    let run = env.run(&["connections"]).await;
    run.assert_code(0).assert_hides(&hidden);
    let expected = [
        (
            "carol",
            [
                "unknown",
                "-",
                "needs re-consent (invalid_code)",
                "no access token",
            ],
        ),
        (
            "dave",
            ["eu", "ZohoMail.accounts.READ", "connected", "expired"],
        ),
        (
            "erin",
            [
                "unknown",
                "ZohoCRM.modules.ALL,ZohoCRM.users.READ",
                "not connected",
                "expires in ",
            ],
        ),
    ];
    for (id, cells) in expected {
        let line = row(&run, id);
        for cell in cells {
            assert!(line.contains(&format!("  {cell}")), "{cell:?} in {line:?}");
        }
    }
    row(&run, "n499");
    // Aligned: every row's status starts in the header's STATUS column.
    let column = run.stdout.lines().next().unwrap().find("STATUS").unwrap();
    assert_eq!(row(&run, "carol").find("needs"), Some(column), "{run:#?}");
    assert_eq!(
        row(&run, "n000").find("connected"),
        Some(column),
        "{run:#?}"
    );

    let run = env.run(&["connections", "--json"]).await;
    run.assert_code(0).assert_hides(&hidden);
    let listed: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 503);
    assert_eq!(listed[0]["status"], "needs re-consent (invalid_code)");
    assert_eq!(listed[0]["expires_in"], serde_json::Value::Null);
    assert_eq!(listed[1]["data_centre"], "eu");
    assert!(listed[1]["expires_in"].as_i64().unwrap() < 0);
    let erin_left = listed[2]["expires_in"].as_i64().unwrap();
    assert!(erin_left > 0 && erin_left <= 1800, "{erin_left}");
    assert_eq!(listed[502]["id"], "n499");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_names_a_connection_and_the_flag_overrides_it() {
    let sim = Simulator::start().await.unwrap();
    let mut env = Env::for_sim("cli-connection-profile", &sim);
    let refresh = sim.mint_refresh_token(&[]);
    let alice = ConnectionId::new("alice").unwrap();
    common::put(
        &*env.connections().connection(&alice),
        &TokenSet::new(refresh.clone()),
    )
    .await
    .unwrap();
    let profile = env.dir.join("profile.toml");
    std::fs::write(&profile, "connection = \"alice\"\n").unwrap();
    env.set("ZOHO_AUTH_PROFILE", &profile.display().to_string());

    let run = env.run(&["token"]).await;
    run.assert_code(0);
    assert!(sim.is_access_token_live(run.stdout.trim()), "{run:#?}");
    env.run(&["token", "--connection", "bob"])
        .await
        .assert_code(1)
        .assert_says(&["Not signed in", "connection \"bob\"", "--connection"])
        .assert_hides(&[refresh.expose().to_owned()]);
}

#[tokio::test]
async fn an_invalid_connection_id_is_a_usage_error() {
    let mut env = Env::new("cli-connection-invalid");
    env.set("ZOHO_CLIENT_ID", "1000.X")
        .set("ZOHO_CLIENT_SECRET", "some-client-secret");
    let names = [
        "connection id",
        "--connection",
        "ZOHO_CONNECTION",
        "`connection`",
    ];
    env.run(&["token", "--connection", "a\tb"])
        .await
        .assert_code(2)
        .assert_says(&names)
        .assert_says(&["control characters"]);
    env.run(&["revoke", "--connection", "\u{7f}"])
        .await
        .assert_code(2)
        .assert_says(&names);
    env.set("ZOHO_CONNECTION", &"x".repeat(ConnectionId::MAX_LEN + 1));
    env.run(&["exchange", "--code", "x"])
        .await
        .assert_code(2)
        .assert_says(&names)
        .assert_says(&["1 to 256 bytes"]);
    env.unset("ZOHO_CONNECTION");
    let profile = env.dir.join("profile.toml");
    std::fs::write(&profile, "connection = \"a\\u0000b\"\n").unwrap();
    env.run(&["--profile", &profile.display().to_string(), "token"])
        .await
        .assert_code(2)
        .assert_says(&names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_connection_s_record() {
    let sim = Simulator::start().await.unwrap();
    let env = Env::for_sim("cli-login-connection", &sim);
    let login = Login::start(
        &env,
        &[
            "login",
            "--no-browser",
            "--port",
            "0",
            "--scopes",
            SCOPES,
            "--connection",
            "carol",
        ],
    )
    .await;
    sim.register_redirect_uri(query_param(&login.url, "redirect_uri"));
    let location = sim.accept_consent(&login.url).expect("the consent page");
    assert_eq!(http().get(&location).send().await.unwrap().status(), 200);
    let run = login.finish().await;
    run.assert_code(0);
    assert!(run.stdout.contains("connection \"carol\""), "{run:#?}");
    let set = env.stored_connection("carol").await;
    assert!(set.refresh_token.is_some(), "{run:#?}");
    run.assert_hides(&secrets(&sim, &set));
    assert_eq!(env.stored().await, TokenSet::default());
}
