//! The `zoho-auth` command line as a process: a clean environment to run it in, its finished
//! runs, and a `login` waiting for its callback.
//!
//! Include it with `#[path = "common/cli.rs"] mod cli_runner;` beside `mod common;`, in a test
//! binary of this package (`CARGO_BIN_EXE_zoho-auth` is set only there).
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{self, ConnectionStore, FileStore, TokenSet, TokenStore};
use zoho_auth::{ConnectionId, RefreshToken};

use crate::common::{self, TempDir};

pub const BIN: &str = env!("CARGO_BIN_EXE_zoho-auth");
/// No run of the command should come near this; it only keeps a hung run from hanging the suite.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);
pub const URL_LINE: &str = "Open this URL to sign in: ";

/// One finished run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }

    /// Asserts that stderr contains every phrase: what happened, and what to do.
    pub fn assert_says(&self, phrases: &[&str]) -> &Self {
        for phrase in phrases {
            assert!(
                self.stderr.contains(phrase),
                "stderr lacks {phrase:?}: {self:#?}"
            );
        }
        assert!(
            self.stderr.contains("error: ") && self.stderr.contains("help: "),
            "{self:#?}"
        );
        self
    }

    /// Asserts that no secret appears in stdout or stderr.
    pub fn assert_hides(&self, secrets: &[String]) -> &Self {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !self.stdout.contains(secret.as_str()) && !self.stderr.contains(secret.as_str()),
                "a secret was printed: {self:#?}"
            );
        }
        self
    }
}

/// A clean environment for the command (no `ZOHO_*` from the parent), with a home, a config
/// directory and a token file of its own.
pub struct Env {
    pub dir: TempDir,
    pub vars: BTreeMap<String, String>,
}

impl Env {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let mut vars = BTreeMap::new();
        vars.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        vars.insert("HOME".into(), dir.path().display().to_string());
        vars.insert(
            "XDG_CONFIG_HOME".into(),
            dir.join("config").display().to_string(),
        );
        Self { dir, vars }
    }

    /// Settings for `sim`: its client, its URL as the accounts server, and a token file.
    pub fn for_sim(tag: &str, sim: &Simulator) -> Self {
        let mut env = Self::new(tag);
        env.set("ZOHO_CLIENT_ID", sim.client_id().as_str())
            .set("ZOHO_CLIENT_SECRET", sim.client_secret().expose())
            .set("ZOHO_ACCOUNTS_URL", &sim.url());
        let store = format!("file:{}", env.store_path().display());
        env.set("ZOHO_TOKEN_STORE", &store);
        env
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    pub fn unset(&mut self, name: &str) -> &mut Self {
        self.vars.remove(name);
        self
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    pub fn store(&self) -> FileStore {
        FileStore::new(self.store_path())
    }

    pub async fn stored(&self) -> TokenSet {
        self.store().load().await.unwrap().unwrap_or_default()
    }

    /// The connections of the store the command is set to use (`ZOHO_TOKEN_STORE`).
    pub fn connections(&self) -> Arc<dyn ConnectionStore> {
        store::open_connections(&self.vars["ZOHO_TOKEN_STORE"]).unwrap()
    }

    /// The record of connection `id` (empty when none).
    pub async fn stored_connection(&self, id: &str) -> TokenSet {
        let id = ConnectionId::new(id).unwrap();
        let record = self.connections().connection(&id);
        record.load().await.unwrap().unwrap_or_default()
    }

    /// Seeds the store with a refresh token only, as a login on another machine would.
    pub async fn seed(&self, refresh_token: &RefreshToken, accounts_url: Option<&str>) {
        let mut set = TokenSet::new(refresh_token.clone());
        set.accounts_url = accounts_url.map(str::to_owned);
        common::put(&self.store(), &set).await.unwrap();
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .envs(&self.vars)
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "").await
    }

    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zoho-auth");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .expect("zoho-auth finished in time")
            .unwrap();
        Run::from(output)
    }
}

pub async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

pub fn http() -> reqwest::Client {
    zoho_auth::accounts::http_client_builder()
        .unwrap()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// A `login` in progress: its process, and the URL it printed.
pub struct Login {
    pub child: tokio::process::Child,
    pub url: String,
    pub stdout: BufReader<tokio::process::ChildStdout>,
}

impl Login {
    pub async fn start(env: &Env, args: &[&str]) -> Self {
        let mut child = env
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zoho-auth login");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            let read = tokio::time::timeout(RUN_LIMIT, stdout.read_line(&mut line))
                .await
                .expect("the URL line in time")
                .unwrap();
            assert!(read > 0, "login ended without printing the URL");
            if let Some(url) = line.trim().strip_prefix(URL_LINE) {
                break url.to_owned();
            }
        };
        Self { child, url, stdout }
    }

    pub async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(RUN_LIMIT, self.child.wait())
            .await
            .expect("login finished in time")
            .unwrap();
        let mut stdout = String::new();
        self.stdout.read_to_string(&mut stdout).await.unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        Run {
            code: status.code(),
            stdout: format!("{URL_LINE}{}\n{stdout}", self.url),
            stderr,
        }
    }
}
