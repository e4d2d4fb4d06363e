//! A real browser through the "Connect Zoho" flow: headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), uses the example app (`examples/axum_app.rs`, run as its own
//! process) against a simulator started here.
//!
//! Scenarios, each after signing in to the app: consent accepted, then an API call through the
//! app's layered client, then a disconnection; consent denied; a callback with a tampered
//! `state`; a callback naming a forged `accounts-server`; and two users in two browsers
//! connecting accounts in two data centres. Every refusal must show a clear error page and store
//! nothing.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the tests fail (never skip).
//! A failed scenario leaves a screenshot, the page's HTML and the app's log in
//! `target/browser-screenshots/<test>.{png,html,log}`.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Deref;
use std::os::unix::process::CommandExt as _; // process_group
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use zoho_auth::sim::{Simulator, SimulatorBuilder};
use zoho_auth::store::{open_connections, TokenSet};
use zoho_auth::ConnectionId;

use common::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const INSTALL: &str =
    "install chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run does";
/// The sign-in cookie of the example app, which mounts the flow at `/zoho` on plain http.
const PENDING_COOKIE: &str = "zoho_auth_pending-zoho";
const FORGED_ACCOUNTS_SERVER: &str = "https://accounts.zoho.eu.evil.test";

/// How long a page may take to show an element.
const WAIT: Duration = Duration::from_secs(20);
/// How long chromedriver and the app may take to start.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one scenario may take in all.
const SCENARIO: Duration = Duration::from_secs(120);

/// One browser at a time: the machine has two cores.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_accept_and_call_the_api() {
    browse(
        "connect_accept_and_call_the_api",
        Simulator::builder(),
        accept_and_call,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_shows_an_error_and_stores_nothing() {
    browse(
        "denied_consent_shows_an_error_and_stores_nothing",
        Simulator::builder(),
        deny,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_state_is_refused() {
    browse(
        "tampered_state_is_refused",
        Simulator::builder(),
        tampered_state,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_accounts_server_gets_no_secret() {
    browse(
        "forged_accounts_server_gets_no_secret",
        Simulator::builder().accounts_server(FORGED_ACCOUNTS_SERVER),
        forged_accounts_server,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_connect_accounts_in_two_data_centres() {
    browse(
        "two_users_connect_accounts_in_two_data_centres",
        Simulator::builder().data_centers(2),
        two_users,
    )
    .await;
}

/// The user every single-browser scenario signs in as.
const USER: &str = "alice";

/// Connect, Accept, land back connected, go home, call the API, disconnect.
async fn accept_and_call(h: Arc<Harness>) {
    h.sign_in(USER).await;
    h.click("#connect").await;
    h.find("#accept").await;
    // The consent page is on another port of the same host, and cookies ignore ports.
    let cookie = h
        .browser
        .get_named_cookie(PENDING_COOKIE)
        .await
        .expect("the sign-in cookie is set while the consent page shows");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "{cookie}"
    );
    assert_eq!(cookie.path(), Some("/"), "{cookie}");
    assert_ne!(
        cookie.secure(),
        Some(true),
        "plain http on loopback: {cookie}"
    );

    h.click("#accept").await;
    h.find("[data-outcome='connected']").await;
    let data_center = h.text("#data-center").await;
    assert!(data_center.contains(&h.zoho.url()), "{data_center}");
    assert!(h.text("#scopes").await.contains("ZohoCRM.users.READ"));
    let expires = h.text("#expires").await;
    assert!(expires.contains("expires in"), "{expires}");
    assert!(h.find_all("#no-refresh-token").await.is_empty());
    assert!(
        h.pending_cookie().await.is_none(),
        "the callback spends the cookie"
    );
    let code = h
        .browser
        .current_url()
        .await
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, code)| code.into_owned())
        .expect("the callback URL carries the code");
    h.assert_no_secrets(&[&code]).await;

    let stored = h
        .stored(USER)
        .await
        .expect("the consent's tokens are stored");
    assert!(stored.refresh_token.is_some(), "a refresh token is stored");
    assert!(stored
        .accounts_url
        .as_deref()
        .is_some_and(|url| url.starts_with(&h.zoho.url())));

    h.click("#continue").await;
    h.find("#connected").await;
    assert!(h.text("#data-center").await.contains(&h.zoho.url()));
    assert!(h.text("#scopes").await.contains("ZohoCRM.users.READ"));
    assert!(h.text("#expires").await.contains("expires in"));
    h.assert_no_secrets(&[]).await;

    let text = h.call_api().await;
    assert!(
        text.contains("Simulated User") && text.contains("user@example.com"),
        "{text}"
    );
    h.assert_no_secrets(&[]).await;

    let seen = h.zoho.counters();
    assert_eq!(
        (seen.consents_accepted, seen.code_grants),
        (1, 1),
        "{seen:?}"
    );
    // The app's token cache adopted the access token the consent stored: no refresh needed.
    assert_eq!(seen.token_requests, 1, "{seen:?}");
    assert_eq!(seen.api_ok, 1, "{seen:?}");

    // Disconnect: a POST from the app's own page, which revokes the token and forgets it.
    h.click("#disconnect").await;
    h.find("#not-connected").await;
    assert_eq!(h.zoho.counters().revocations, 1);
    assert!(h.stored(USER).await.is_none(), "the record is gone");
}

/// Alice and Bob, each in a browser of their own, sign in, start connecting at the same time,
/// pick data centres 0 and 1 on the consent page, and accept; each one's CRM call then goes to
/// their own data centre only.
async fn two_users(h: Arc<Harness>) {
    let bob = h.new_tab("bob").await;
    h.sign_in("alice").await;
    bob.sign_in("bob").await;
    // Both sign-ins pending at once, each cookie in its own browser.
    h.click("#connect").await;
    bob.click("#connect").await;
    for (tab, dc) in [(&h.tab, 0), (&bob, 1)] {
        tab.find("#accept").await;
        let option = format!("#dc option[value='{dc}']");
        tab.browser
            .find(Locator::Css(&option))
            .await
            .unwrap_or_else(|e| panic!("no {option} on the consent page: {e}"))
            .click()
            .await
            .unwrap();
    }
    for tab in [&h.tab, &bob] {
        tab.click("#accept").await;
        tab.find("[data-outcome='connected']").await;
    }
    for (tab, dc) in [(&h.tab, 0), (&bob, 1)] {
        let data_center = tab.text("#data-center").await;
        let url = h.zoho.data_center_url(dc).unwrap();
        assert!(data_center.contains(&url), "{data_center} is not {url}");
        tab.click("#continue").await;
        tab.call_api().await;
    }
    for (user, dc) in [("alice", 0), ("bob", 1)] {
        let stored = h.stored(user).await.expect("each user's record");
        let url = h.zoho.data_center_url(dc).unwrap();
        assert!(
            stored
                .accounts_url
                .as_deref()
                .is_some_and(|u| u.starts_with(&url)),
            "{user}: {:?}",
            stored.accounts_url
        );
        let refresh = stored.refresh_token.expect("a refresh token");
        let seen = h.zoho.counters_for(&refresh).expect("a simulator user");
        assert_eq!(seen.wrong_dc_api_requests, 0, "{user}: {seen:?}");
        assert!(seen.api_ok >= 1, "{user}: {seen:?}");
    }
    let _ = bob.browser.clone().close().await;
}

/// Connect, Deny: an error page, nothing stored, still "Connect Zoho" at home.
async fn deny(h: Arc<Harness>) {
    h.sign_in(USER).await;
    h.click("#connect").await;
    h.click("#deny").await;
    h.find("[data-reason='denied']").await;
    assert!(h.text("h1").await.contains("denied"));
    h.assert_nothing_stored().await;
    assert_eq!(h.zoho.counters().consents_denied, 1);
    assert!(h.pending_cookie().await.is_none());

    h.click("#home").await;
    h.find("#connect").await;
}

/// A real callback with its `state` changed is refused; the untouched callback afterwards is
/// refused too, because the first one spent the cookie.
async fn tampered_state(h: Arc<Harness>) {
    h.sign_in(USER).await;
    h.click("#connect").await;
    h.find("#accept").await;
    let consent = h.browser.current_url().await.unwrap();
    // Where Accept would redirect to, read without following it.
    let callback = h
        .zoho
        .accept_consent(consent.as_str())
        .expect("the simulator accepts the consent request");
    let callback = url::Url::parse(&callback).unwrap();
    let mut tampered = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(name, value)| {
            let value = if name == "state" {
                flip_first(&value)
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    assert_ne!(tampered, callback);

    h.browser.goto(tampered.as_str()).await.unwrap();
    h.find("[data-reason='state-mismatch']").await;
    assert!(h.text("#explanation").await.contains("does not match"));
    h.assert_nothing_stored().await;

    h.browser.goto(callback.as_str()).await.unwrap();
    h.find("[data-reason='no-cookie']").await;
    h.assert_nothing_stored().await;
}

/// The simulator's callback names a look-alike accounts server: the app must not send its
/// client secret (with the code) there.
async fn forged_accounts_server(h: Arc<Harness>) {
    h.sign_in(USER).await;
    h.click("#connect").await;
    h.click("#accept").await;
    h.find("[data-reason='untrusted-accounts-server']").await;
    let explanation = h.text("#explanation").await;
    assert!(
        explanation.contains("refused to send its client secret"),
        "{explanation}"
    );
    let detail = h.text("#detail").await;
    assert!(detail.contains("accounts.zoho.eu.evil.test"), "{detail}");
    h.assert_nothing_stored().await;
    assert_eq!(h.zoho.counters().consents_accepted, 1);
}

/// `value` with its first character changed, within the base64url alphabet.
fn flip_first(value: &str) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Runs `scenario` with a fresh simulator, app, chromedriver and browser profile. A failure —
/// a panic or the time limit — saves a screenshot, the page and the app's log, then fails the
/// test naming them.
async fn browse<F, Fut>(name: &str, zoho: SimulatorBuilder, scenario: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _turn = TURN.lock().await;
    let harness = Arc::new(Harness::start(zoho).await);
    let mut run = tokio::spawn(scenario(Arc::clone(&harness)));
    let failure = match tokio::time::timeout(SCENARIO, &mut run).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(match error.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()),
            Err(error) => error.to_string(),
        }),
        Err(_) => {
            run.abort();
            Some(format!("did not finish within {SCENARIO:?}"))
        }
    };
    let saved = match &failure {
        Some(_) => Some(harness.save_evidence(name).await),
        None => None,
    };
    // Ends the session, which quits Chromium; the guards kill whatever is left.
    let _ = harness.browser.clone().close().await;
    drop(harness);
    if let (Some(failure), Some(saved)) = (failure, saved) {
        panic!("{name} failed: {failure}\n{saved}");
    }
}

/// Everything one scenario uses. Fields drop in order: the browser session, the simulator,
/// the app, chromedriver (with Chromium), then the directory with the profiles and the store.
struct Harness {
    tab: Tab,
    zoho: Simulator,
    app: App,
    store: PathBuf,
    driver: Driver,
    dir: TempDir,
}

/// One browser session on the app.
struct Tab {
    browser: Client,
    base: String,
}

impl Deref for Harness {
    type Target = Tab;

    fn deref(&self) -> &Tab {
        &self.tab
    }
}

impl Harness {
    async fn start(zoho: SimulatorBuilder) -> Self {
        let zoho = zoho.start().await.expect("the simulator starts");
        let dir = TempDir::new("browser");
        let store = dir.join("tokens.json");
        // Waiting for the app's first line blocks; the simulator keeps running on another worker.
        let app = tokio::task::block_in_place(|| App::start(&zoho, &store, &dir.join("app.log")));
        // Known only now that the app has bound its port.
        zoho.register_redirect_uri(format!("{}/zoho/callback", app.base));
        let driver = Driver::start(&dir.join("chromedriver.log")).await;
        let tab = Tab {
            browser: driver.session(&dir.join("profile")).await,
            base: app.base.clone(),
        };
        Self {
            tab,
            zoho,
            app,
            store,
            driver,
            dir,
        }
    }

    /// Another browser, with a profile (and so cookies) of its own, named `name`.
    async fn new_tab(&self, name: &str) -> Tab {
        let profile = self.dir.join(&format!("profile-{name}"));
        Tab {
            browser: self.driver.session(&profile).await,
            base: self.app.base.clone(),
        }
    }

    /// The record of `user`'s connection in the app's store.
    async fn stored(&self, user: &str) -> Option<TokenSet> {
        let store = open_connections(&format!("file:{}", self.store.display())).unwrap();
        let id = ConnectionId::new(user).unwrap();
        store
            .connection(&id)
            .load()
            .await
            .expect("the token file is readable")
    }
}

impl Tab {
    async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.browser
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Signs in to the app as `user`.
    async fn sign_in(&self, user: &str) {
        self.open("/").await;
        self.find("#name").await.send_keys(user).await.unwrap();
        self.click("#sign-in-button").await;
        let shown = self.text("#signed-in-as").await;
        assert_eq!(shown, user);
    }

    /// Clicks the "call the API" button; the call must succeed. Returns what the page says.
    async fn call_api(&self) -> String {
        self.click("#call-api").await;
        let result = self.find("#api-result").await;
        let text = result.text().await.unwrap();
        assert_eq!(
            result.attr("data-ok").await.unwrap().as_deref(),
            Some("true"),
            "{text}"
        );
        text
    }

    /// Waits for the element `css` selects.
    async fn find(&self, css: &str) -> Element {
        match self
            .browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => {
                let url = self.browser.current_url().await.map(|u| u.to_string());
                panic!("no {css} on {url:?} within {WAIT:?}: {error}")
            }
        }
    }

    async fn find_all(&self, css: &str) -> Vec<Element> {
        self.browser.find_all(Locator::Css(css)).await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn pending_cookie(&self) -> Option<String> {
        let cookies = self.browser.get_all_cookies().await.unwrap();
        cookies
            .iter()
            .find(|cookie| cookie.name() == PENDING_COOKIE)
            .map(|cookie| cookie.value().to_owned())
    }
}

impl Harness {
    /// Neither the store nor the simulator's token endpoint saw anything.
    async fn assert_nothing_stored(&self) {
        if let Some(set) = self.stored(USER).await {
            assert!(
                set.refresh_token.is_none() && set.access.is_none(),
                "tokens were stored"
            );
        }
        let seen = self.zoho.counters();
        assert_eq!(
            seen.token_requests, 0,
            "the token endpoint was called: {seen:?}"
        );
    }

    /// The page holds neither the client secret, nor any stored token, nor `others`.
    async fn assert_no_secrets(&self, others: &[&str]) {
        let page = self.browser.source().await.unwrap();
        let secret = self.zoho.client_secret();
        let stored = self.stored(USER).await.unwrap_or_default();
        let refresh = stored.refresh_token.as_ref().map(|t| t.expose());
        let access = stored.access.as_ref().map(|a| a.access_token.expose());
        let secrets = [Some(secret.expose()), refresh, access]
            .into_iter()
            .flatten()
            .chain(others.iter().copied());
        for (index, secret) in secrets.enumerate() {
            assert!(
                !page.contains(secret),
                "secret #{index} appears in the page"
            );
        }
    }

    /// Saves a screenshot, the page and the app's log; says where.
    async fn save_evidence(&self, name: &str) -> String {
        let dir = evidence_dir();
        if let Err(error) = std::fs::create_dir_all(&dir) {
            return format!("could not create {}: {error}", dir.display());
        }
        let mut report = Vec::new();
        let png = dir.join(format!("{name}.png"));
        match self.browser.screenshot().await {
            Ok(bytes) => match std::fs::write(&png, bytes) {
                Ok(()) => report.push(format!("screenshot: {}", png.display())),
                Err(error) => report.push(format!("writing {}: {error}", png.display())),
            },
            Err(error) => report.push(format!("no screenshot: {error}")),
        }
        if let Ok(page) = self.browser.source().await {
            let html = dir.join(format!("{name}.html"));
            if std::fs::write(&html, page).is_ok() {
                report.push(format!("page: {}", html.display()));
            }
        }
        let log = dir.join(format!("{name}.log"));
        if std::fs::copy(&self.app.log, &log).is_ok() {
            report.push(format!("app log: {}", log.display()));
        }
        report.join("\n")
    }
}

/// `<target dir>/browser-screenshots`, beside the `debug` directory this test runs from.
fn evidence_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>");
    target.join("browser-screenshots")
}

/// The example app as a process, killed on drop.
struct App {
    child: Child,
    base: String,
    log: PathBuf,
}

impl App {
    /// Starts `examples/axum_app` against `zoho` with a file store, and waits until it listens.
    fn start(zoho: &Simulator, store: &Path, log: &Path) -> Self {
        let binary = example_binary();
        // The simulator's other data centres, which its consent page lets the user pick.
        let more_accounts: Vec<String> = (1..zoho.data_center_count())
            .map(|dc| zoho.data_center_url(dc).unwrap())
            .collect();
        let more_accounts = more_accounts.join(",");
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0"])
            .env("ZOHO_CLIENT_ID", zoho.client_id().as_str())
            .env("ZOHO_CLIENT_SECRET", zoho.client_secret().expose())
            .env("ZOHO_ACCOUNTS_URL", zoho.url())
            .env("ZOHO_MORE_ACCOUNTS_URLS", more_accounts)
            .env("ZOHO_TOKEN_STORE", format!("file:{}", store.display()))
            .env("RUST_LOG", "zoho_auth=debug")
            .env_remove("ZOHO_DC")
            .env_remove("ZOHO_SCOPES")
            .env_remove("ZOHO_REDIRECT_URI")
            .env_remove("APP_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads until the app exits, so that its stdout never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(base) = line.strip_prefix("listening on ") {
                    let _ = tx.send(base.trim().to_owned());
                }
            }
        });
        let mut app = Self {
            child,
            base: String::new(),
            log: log.to_owned(),
        };
        match rx.recv_timeout(STARTUP) {
            Ok(base) => app.base = base,
            Err(_) => {
                let status = app.child.try_wait().ok().flatten();
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("the app did not start listening (exit: {status:?}); its log:\n{log}");
            }
        }
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example app's binary, which `cargo test` builds; `cargo test --test browser` alone does
/// not, and would run a stale one.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.ancestors().nth(2).unwrap().join("examples/axum_app");
    let build = "run `cargo test` (which builds the examples) or `cargo build --example axum_app`";
    let built = std::fs::metadata(&binary)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| panic!("{} not built: {build}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("src"), root.join("examples/axum_app.rs")];
    while let Some(path) = sources.pop() {
        match std::fs::read_dir(&path) {
            Ok(entries) => sources.extend(entries.flatten().map(|entry| entry.path())),
            Err(_) => {
                let changed = std::fs::metadata(&path).and_then(|meta| meta.modified());
                assert!(
                    changed.map_or(true, |changed| changed <= built),
                    "{} is older than {}: {build}",
                    binary.display(),
                    path.display()
                );
            }
        }
    }
    binary
}

/// chromedriver in its own process group, so that the Chromium it starts dies with it.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    async fn start(log: &Path) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} not found: {INSTALL}"
        );
        // A port can be taken between the check and chromedriver's bind; then try another.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let child = match Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    panic!("{CHROMEDRIVER} not found: {INSTALL}")
                }
                Err(e) => panic!("cannot run {CHROMEDRIVER}: {e}"),
            };
            let mut driver = Self { child, port };
            match driver.ready().await {
                Ok(()) => return driver,
                Err(error) => last_error = error,
            }
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("chromedriver did not start: {last_error}\n{log}");
    }

    /// Polls `/status` until chromedriver says it is ready.
    async fn ready(&mut self) -> Result<(), String> {
        let http = zoho_auth::accounts::http_client_builder()
            .unwrap()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(format!("chromedriver exited with {status}"));
            }
            if let Ok(response) = http.get(&url).send().await {
                let body = response.text().await.unwrap_or_default();
                let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if status["value"]["ready"] == true {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {STARTUP:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless Chromium session with a fresh profile in `profile`.
    async fn session(&self, profile: &Path) -> Client {
        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-proxy-server",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("no Chromium session ({INSTALL} if missing): {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}
