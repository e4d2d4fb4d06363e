//! The file token store: what it writes, with which permissions, how it replaces the file, how it
//! refuses a file it cannot read, and how its OS lock behaves across processes — including
//! processes killed while holding the lock or in the middle of a save.
//!
//! Child processes re-run this test binary on one test,
//! [`child_entry_try_lock_on_a_fresh_path_succeeds`], with `ZOHO_AUTH_FILE_STORE_CHILD` set to
//! `<role>:<path>`; without the variable that test is an ordinary test of its own.
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zoho_auth::store::{FileStore, TokenSet, TokenStore};

use common::TempDir;
use zoho_auth::{AccessToken, Error, RefreshToken};

/// `<role>:<path>` for a child process; unset in the parent.
const CHILD_ENV: &str = "ZOHO_AUTH_FILE_STORE_CHILD";
/// The test a child process runs (see [`child_entry_try_lock_on_a_fresh_path_succeeds`]).
const CHILD_TEST: &str = "child_entry_try_lock_on_a_fresh_path_succeeds";
/// What a child prints once it holds the lock, or has started saving.
const READY: &str = "ZOHO-AUTH-CHILD-READY";
/// How long a child may take to start and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the kernel may take to free a dead child's lock.
const LOCK_FREED_TIMEOUT: Duration = Duration::from_secs(5);
/// The refresh token the killed writers save over and over.
const KEEP: &str = "1000.keep.me";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether `name` is one of the store's temporary files for the token file `file_name`.
fn is_temp_of(name: &str, file_name: &str) -> bool {
    name.starts_with(&format!(".{file_name}.")) && name.ends_with(".tmp")
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Asserts a "store answered with something unusable" error that names the file.
fn assert_store_error(err: &Error, path: &Path, what: &str) {
    let message = err.to_string();
    assert!(err.is_store(), "{what}: not a store error: {err:?}");
    assert!(
        !err.is_store_unavailable(),
        "{what}: reported as unavailable (the cache would ignore it): {err:?}"
    );
    assert!(
        message.contains(&path.display().to_string()),
        "{what}: the message does not name {}: {message}",
        path.display()
    );
}

/// A version-1 token file written by hand, with every field set.
const SEED: &str = r#"{
  "version": 1,
  "refresh_token": "1000.seed.refresh",
  "token_requests_ms": [1700000000000, 1700000001234],
  "failure": { "code": "invalid_code", "message": "the refresh token was revoked" },
  "access": {
    "access_token": "1000.seed.access",
    "issued_at_ms": 1700000000000,
    "expires_at_ms": 1700003600000,
    "api_domain": "https://www.zohoapis.eu",
    "scopes": ["ZohoCRM.modules.ALL", "ZohoCRM.settings.READ"]
  }
}"#;

/// A set with every field filled in.
///
/// `StoredAccess` and `StoredFailure` are `#[non_exhaustive]` and have no public constructor, so a
/// test outside the crate can only get one by loading a file: this loads [`SEED`] (checking each
/// field against it) and returns the set, for [`variant`] to edit.
async fn template(dir: &TempDir) -> TokenSet {
    let path = dir.join("template.json");
    fs::write(&path, SEED).unwrap();
    let set = FileStore::new(&path)
        .load()
        .await
        .expect("a hand-written version-1 file loads")
        .expect("the file exists");
    fs::remove_file(&path).unwrap();

    assert_eq!(
        set.refresh_token.as_ref().map(|t| t.expose()),
        Some("1000.seed.refresh")
    );
    assert_eq!(
        set.token_requests,
        vec![ms(1_700_000_000_000), ms(1_700_000_001_234)]
    );
    let failure = set.failure.as_ref().expect("failure decoded");
    assert_eq!(failure.code, "invalid_code");
    assert_eq!(failure.message, "the refresh token was revoked");
    let access = set.access.as_ref().expect("access decoded");
    assert_eq!(access.access_token.expose(), "1000.seed.access");
    assert_eq!(access.issued_at, ms(1_700_000_000_000));
    assert_eq!(access.expires_at, ms(1_700_003_600_000));
    assert_eq!(
        access.api_domain.as_deref(),
        Some("https://www.zohoapis.eu")
    );
    assert_eq!(
        access.scopes,
        ["ZohoCRM.modules.ALL", "ZohoCRM.settings.READ"]
    );
    set
}

/// Set number `i`: every field differs from the other numbers', and sizes vary.
fn variant(template: &TokenSet, i: usize) -> TokenSet {
    let mut set = template.clone();
    set.refresh_token = Some(RefreshToken::new(format!("1000.refresh.{i}")));
    let access = set.access.as_mut().unwrap();
    access.access_token = AccessToken::new(format!("1000.access.{i}.{}", "x".repeat(i % 97)));
    access.issued_at = ms(1_700_000_000_000 + i as u64 * 1_000);
    access.expires_at = ms(1_700_003_600_000 + i as u64 * 1_000);
    access.api_domain = match i % 3 {
        0 => None,
        1 => Some(format!("https://www.zohoapis.com/{i}")),
        _ => Some(format!("https://www.zohoapis.in/{i}")),
    };
    access.scopes = (0..i % 5)
        .map(|k| format!("ZohoCRM.scope{k}.{i}"))
        .collect();
    set.token_requests = (0..i % 40)
        .map(|k| ms(1_700_000_000_000 + (i * 100 + k) as u64))
        .collect();
    if i.is_multiple_of(2) {
        set.failure = None;
    } else if let Some(failure) = set.failure.as_mut() {
        failure.message = format!("revoked #{i}");
    }
    set
}

/// The number in a [`variant`]'s access token.
fn variant_index(set: &TokenSet) -> Option<usize> {
    let token = set.access.as_ref()?.access_token.expose();
    token
        .strip_prefix("1000.access.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process running one role; killed (SIGKILL) and reaped on drop, also on panic.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    role: String,
}

impl ChildProcess {
    /// Spawns the child and waits (bounded) until its role is under way.
    fn start(role: &str, path: &Path) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{role}:{}", path.display()))
            // The child exits when this pipe closes, so a parent that dies cannot leave it behind.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {role} child: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let child = Self {
            child,
            lines,
            role: role.to_owned(),
        };
        child.wait_ready();
        child
    }

    /// Waits (bounded) for the child's ready line.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // The harness may print "test NAME ... " on the same line before the output.
                Ok(line) if line.contains(READY) => return,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the {} child did not get ready within {READY_TIMEOUT:?}; it printed {seen:?}",
                    self.role
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the {} child exited before it was ready; it printed {seen:?}",
                    self.role
                ),
            }
        }
    }

    /// SIGKILLs the child and reaps it; asserts that the signal, not an error, ended it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status: ExitStatus = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the {} child ended by itself before it was killed: {status}",
            self.role
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes and releases `store`'s lock, which a child `who` held until it was killed: the kernel
/// frees it within [`LOCK_FREED_TIMEOUT`].
fn assert_lock_freed(rt: &tokio::runtime::Runtime, store: &FileStore, who: &str) {
    let deadline = Instant::now() + LOCK_FREED_TIMEOUT;
    let lock = loop {
        if let Some(lock) = rt
            .block_on(store.try_lock(Duration::ZERO))
            .expect("try_lock")
        {
            break lock;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: the killed child's lock was not freed within {LOCK_FREED_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(5));
    };
    rt.block_on(lock.release()).expect("release");
}

/// The child side: runs `role` on `path` until killed.
fn run_child(spec: &str) -> ! {
    let (role, path) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("{CHILD_ENV}={spec:?}: expected <role>:<path>"));
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(3);
    });
    let store = FileStore::new(path);
    let rt = runtime();
    match role {
        // Take the lock, say so, and hold it until killed.
        "lock" => {
            let _lock = rt
                .block_on(store.try_lock(Duration::ZERO))
                .expect("try_lock")
                .expect("the child gets the free lock");
            println!("{READY}");
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        // Under the lock, as the cache saves, save sets of varying size as fast as possible.
        "save" => rt.block_on(async {
            let _lock = store
                .try_lock(Duration::ZERO)
                .await
                .expect("try_lock")
                .expect("the saving child gets the free lock");
            // The parent's seed: `StoredAccess` can only be had by loading one.
            let seed = store
                .load()
                .await
                .expect("load in the child")
                .expect("the parent seeded the file");
            let mut saves = 0u64;
            loop {
                let mut set = TokenSet::new(RefreshToken::new(KEEP));
                set.token_requests = (0..fastrand::usize(0..500))
                    .map(|k| ms(1_700_000_000_000 + k as u64))
                    .collect();
                set.access = seed.access.clone();
                if let Some(access) = set.access.as_mut() {
                    access.access_token = AccessToken::new(format!(
                        "1000.kill.{:016x}{}",
                        fastrand::u64(..),
                        "z".repeat(fastrand::usize(0..2_000))
                    ));
                }
                common::put(&store, &set).await.expect("save in the child");
                saves += 1;
                if saves == 1 {
                    println!("{READY}");
                }
            }
        }),
        other => panic!("unknown child role {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The entry point of the child processes when `ZOHO_AUTH_FILE_STORE_CHILD` is set; otherwise a
/// test of its own: the lock on a path nobody used is free, taking it creates only the lock file
/// (and its directories), and after `release` it can be taken again.
#[test]
fn child_entry_try_lock_on_a_fresh_path_succeeds() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let dir = TempDir::new("fresh-lock");
    let path = dir.join("not/yet/tokens.json");
    runtime().block_on(async {
        let store = FileStore::new(&path);
        let lock = store
            .try_lock(Duration::ZERO)
            .await
            .expect("try_lock on a fresh path")
            .expect("a fresh path's lock is free");
        assert!(lock_path(&path).is_file(), "the lock file was created");
        assert!(
            !path.exists(),
            "taking the lock does not create the token file"
        );
        lock.release().await.expect("release");
        let again = store
            .try_lock(Duration::ZERO)
            .await
            .expect("try_lock after release")
            .expect("a released lock is free");
        again.release().await.expect("release again");
        assert_eq!(store.load().await.expect("load"), None);
    });
}

#[tokio::test]
async fn round_trip_keeps_every_field_and_creates_missing_directories() {
    let dir = TempDir::new("round-trip");
    let template = template(&dir).await;
    let path = dir.join("a/b/c/tokens.json");
    let store = FileStore::new(&path);
    assert_eq!(store.path(), path);

    // Nothing there yet: no set, and loading creates nothing.
    assert_eq!(store.load().await.expect("load of a missing file"), None);
    assert!(!dir.join("a").exists(), "load created directories");

    // Every field, including the access token and the failure.
    let full = variant(&template, 7);
    assert!(full.access.as_ref().unwrap().api_domain.is_some());
    assert!(!full.access.as_ref().unwrap().scopes.is_empty());
    assert!(full.failure.is_some() && !full.token_requests.is_empty());
    let full = common::put(&store, &full)
        .await
        .expect("save creates the directories");
    assert_eq!(full.revision, 1);
    assert!(path.is_file());
    assert_eq!(store.load().await.expect("load"), Some(full.clone()));
    // Another instance (as another process would) reads the same from the file.
    assert_eq!(
        FileStore::new(&path).load().await.expect("load"),
        Some(full)
    );

    // A smaller set replaces the whole file: nothing of the previous set survives.
    let bare = TokenSet::new(RefreshToken::new("1000.only.refresh"));
    let bare = common::put(&store, &bare).await.expect("save");
    assert_eq!(store.load().await.expect("load"), Some(bare));

    // A client-credentials set has no refresh token at all.
    let mut no_refresh = variant(&template, 4);
    no_refresh.refresh_token = None;
    let no_refresh = common::put(&store, &no_refresh).await.expect("save");
    assert_eq!(store.load().await.expect("load"), Some(no_refresh));
    let empty = common::put(&store, &TokenSet::default())
        .await
        .expect("save");
    assert_eq!(store.load().await.expect("load"), Some(empty));

    // A file directly in an existing directory.
    let flat = FileStore::new(dir.join("flat.json"));
    let set = variant(&template, 11);
    let set = common::put(&flat, &set).await.expect("save");
    assert_eq!(flat.load().await.expect("load"), Some(set));
}

#[tokio::test]
async fn token_file_and_lock_file_are_0600_and_created_directories_0700() {
    let dir = TempDir::new("perms");
    let template = template(&dir).await;
    let path = dir.join("private/nested/tokens.json");
    let store = FileStore::new(&path);

    for i in 0..5 {
        common::put(&store, &variant(&template, i))
            .await
            .expect("save");
        assert_eq!(mode(&path), 0o600, "token file mode after save #{i}");
    }
    assert_eq!(mode(&dir.join("private")), 0o700, "created directory");
    assert_eq!(
        mode(&dir.join("private/nested")),
        0o700,
        "created directory"
    );

    let lock = store
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("lock is free");
    assert_eq!(mode(&lock_path(&path)), 0o600, "lock file mode");
    common::put(&store, &variant(&template, 9))
        .await
        .expect("save");
    assert_eq!(
        mode(&path),
        0o600,
        "token file mode after a save under lock"
    );
    lock.release().await.expect("release");

    // A lock taken before any save creates the directories (0700) and the lock file (0600).
    let lock_first = dir.join("lock-first/sub/tokens.json");
    let lock = FileStore::new(&lock_first)
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("lock is free");
    assert_eq!(mode(&dir.join("lock-first")), 0o700, "created directory");
    assert_eq!(
        mode(&dir.join("lock-first/sub")),
        0o700,
        "created directory"
    );
    assert_eq!(mode(&lock_path(&lock_first)), 0o600, "lock file mode");
    lock.release().await.expect("release");

    // A token file someone left world-readable is replaced by a private one.
    let loose = dir.join("loose.json");
    fs::write(&loose, SEED).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    common::put(&FileStore::new(&loose), &variant(&template, 3))
        .await
        .expect("save");
    assert_eq!(mode(&loose), 0o600, "a 0644 token file after a save");
}

#[tokio::test]
async fn saves_leave_no_temporary_files() {
    let dir = TempDir::new("no-temp");
    let template = template(&dir).await;
    let store = FileStore::new(dir.join("tokens.json"));
    for i in 0..50 {
        common::put(&store, &variant(&template, i))
            .await
            .expect("save");
    }
    assert_eq!(
        entries(dir.path()),
        BTreeSet::from(["tokens.json".into(), "tokens.json.save.lock".into()])
    );

    let lock = store
        .try_lock(Duration::ZERO)
        .await
        .unwrap()
        .expect("lock is free");
    for i in 50..60 {
        common::put(&store, &variant(&template, i))
            .await
            .expect("save");
    }
    lock.release().await.unwrap();
    assert_eq!(
        entries(dir.path()),
        BTreeSet::from([
            "tokens.json".into(),
            "tokens.json.lock".into(),
            "tokens.json.save.lock".into()
        ])
    );
    let mut last = variant(&template, 59);
    last.revision = 60;
    assert_eq!(
        store.load().await.unwrap(),
        Some(last),
        "the last save wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_sees_only_whole_saved_sets() {
    const SAVES: usize = 500;
    let dir = TempDir::new("concurrent");
    let template = template(&dir).await;
    let path = dir.join("tokens.json");
    let store = FileStore::new(&path);
    let sets: Arc<Vec<TokenSet>> = Arc::new((0..=SAVES).map(|i| variant(&template, i)).collect());
    common::put(&store, &sets[0]).await.expect("seed");

    let stop = Arc::new(AtomicBool::new(false));
    let (started, reader_started) = tokio::sync::oneshot::channel();
    let reader = {
        let (stop, sets, path) = (stop.clone(), sets.clone(), path.clone());
        thread::spawn(move || {
            let store = FileStore::new(path);
            let rt = runtime();
            let mut started = Some(started);
            let mut loads = 0usize;
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Acquire) {
                let set = match rt.block_on(store.load()) {
                    Ok(Some(set)) => set,
                    Ok(None) => return Err(format!("load #{loads}: the file was missing")),
                    Err(e) => return Err(format!("load #{loads}: {e}")),
                };
                let Some(i) = variant_index(&set).filter(|&i| i <= SAVES) else {
                    return Err(format!("load #{loads}: a set nobody saved: {set:?}"));
                };
                // Set i is the (i + 1)th save.
                let mut saved = sets[i].clone();
                saved.revision = i as u64 + 1;
                if set != saved {
                    return Err(format!(
                        "load #{loads}: set #{i} differs from the one saved: {set:?} != {:?}",
                        sets[i]
                    ));
                }
                seen.insert(i);
                loads += 1;
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
            Ok((loads, seen))
        })
    };

    reader_started.await.expect("the reader loaded once");
    for set in &sets[1..] {
        common::put(&store, set).await.expect("save");
    }
    stop.store(true, Ordering::Release);
    let (loads, seen) = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("the reader saw a broken state: {e}"));
    assert!(
        seen.len() >= 2,
        "the reader never overlapped the saves ({loads} loads, saw {seen:?})"
    );
    eprintln!(
        "concurrent reader: {loads} loads saw {} distinct sets",
        seen.len()
    );
    let mut last = sets[SAVES].clone();
    last.revision = SAVES as u64 + 1;
    assert_eq!(store.load().await.unwrap(), Some(last));
    assert_eq!(
        entries(dir.path()),
        BTreeSet::from(["tokens.json".into(), "tokens.json.save.lock".into()])
    );
}

#[tokio::test]
async fn an_unusable_file_is_a_store_error_naming_it_and_is_left_untouched() {
    let dir = TempDir::new("corrupt");
    let template = template(&dir).await;

    // A valid document, cut in half (what truncate-then-write leaves behind).
    let valid = dir.join("valid.json");
    common::put(&FileStore::new(&valid), &variant(&template, 33))
        .await
        .unwrap();
    let whole = fs::read(&valid).unwrap();
    let truncated = whole[..whole.len() / 2].to_vec();
    fs::remove_file(&valid).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffthis is not JSON {{{".to_vec()),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("other-version", br#"{"version":99}"#.to_vec()),
        (
            "other-version-full",
            SEED.replace("\"version\": 1", "\"version\": 2")
                .into_bytes(),
        ),
        ("not-an-object", b"[1, 2, 3]".to_vec()),
        (
            "wrong-types",
            br#"{"version":1,"refresh_token":42}"#.to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.join(&format!("{name}.json"));
        fs::write(&path, &bytes).unwrap();
        let before = entries(dir.path());
        let store = FileStore::new(&path);
        for attempt in 0..2 {
            let err = store
                .load()
                .await
                .expect_err(&format!("{name}: load #{attempt} accepted the file"));
            assert_store_error(&err, &path, name);
            if name.starts_with("other-version") {
                let found = if name == "other-version" { "99" } else { "2" };
                assert!(
                    err.to_string().contains(found),
                    "{name}: the message does not say which version: {err}"
                );
            }
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "{name}: the file changed");
        assert_eq!(entries(dir.path()), before, "{name}: the directory changed");
    }

    // A directory where the file should be: neither load nor save can use it.
    let path = dir.join("is-a-dir.json");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"keep").unwrap();
    let store = FileStore::new(&path);
    let err = store.load().await.expect_err("load of a directory");
    assert_store_error(&err, &path, "directory, load");
    let before = entries(dir.path());
    let err = common::put(&store, &variant(&template, 1))
        .await
        .expect_err("save over a directory");
    assert_store_error(&err, &path, "directory, save");
    assert_eq!(
        entries(dir.path()),
        before,
        "a failed save left its temporary file behind"
    );
    assert_eq!(fs::read(path.join("inside")).unwrap(), b"keep");

    // A file this process may not read. Root reads it anyway; then this case proves nothing.
    let path = dir.join("unreadable.json");
    fs::write(&path, SEED).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&path).is_ok() {
        eprintln!("skipping the unreadable-file case: this process reads mode-000 files (root)");
    } else {
        let err = FileStore::new(&path)
            .load()
            .await
            .expect_err("load of an unreadable file");
        assert_store_error(&err, &path, "unreadable");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), SEED.as_bytes());
    }
}

#[tokio::test]
async fn the_lock_is_exclusive_between_stores_on_one_path_until_released() {
    let dir = TempDir::new("lock");
    let path = dir.join("tokens.json");
    let (first, second) = (FileStore::new(&path), FileStore::new(&path));

    let held = first
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("a free lock");
    for _ in 0..3 {
        assert!(
            second
                .try_lock(Duration::ZERO)
                .await
                .expect("try_lock")
                .is_none(),
            "a second store got a held lock"
        );
        assert!(
            first
                .try_lock(Duration::ZERO)
                .await
                .expect("try_lock")
                .is_none(),
            "the same store got its own held lock twice"
        );
    }
    // A different path has its own lock.
    let other = FileStore::new(dir.join("other.json"))
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("another path's lock is free");

    held.release().await.expect("release");
    let held = second
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("the released lock is free");
    assert!(first
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .is_none());

    // Dropping a held lock without release (a cancelled refresh) frees it as well.
    drop(held);
    let held = first
        .try_lock(Duration::ZERO)
        .await
        .expect("try_lock")
        .expect("a dropped lock is free");
    held.release().await.expect("release");
    other.release().await.expect("release");
}

#[test]
fn a_lock_held_by_a_killed_process_is_freed_by_the_kernel() {
    let dir = TempDir::new("lock-kill");
    let path = dir.join("tokens.json");
    let store = FileStore::new(&path);
    let rt = runtime();

    let child = ChildProcess::start("lock", &path);
    for _ in 0..3 {
        assert!(
            rt.block_on(store.try_lock(Duration::ZERO))
                .expect("try_lock")
                .is_none(),
            "got the lock while another process holds it"
        );
    }
    child.kill();
    assert_lock_freed(&rt, &store, "the lock holder");
}

#[test]
fn killing_a_writer_mid_save_never_loses_the_refresh_token() {
    const ROUNDS: usize = 50;
    let dir = TempDir::new("kill-writer");
    let path = dir.join("tokens.json");
    let store = FileStore::new(&path);
    let rt = runtime();
    let template = rt.block_on(template(&dir));
    let mut seed = variant(&template, 1);
    seed.refresh_token = Some(RefreshToken::new(KEEP));
    rt.block_on(common::put(&store, &seed)).expect("seed");

    let started = Instant::now();
    let mut previous_token = String::new();
    let mut changed = 0;
    for round in 0..ROUNDS {
        let child = ChildProcess::start("save", &path);
        thread::sleep(Duration::from_micros(fastrand::u64(0..=30_000)));
        child.kill();

        let set = match rt.block_on(store.load()) {
            Ok(Some(set)) => set,
            Ok(None) => panic!("round {round}: the token file is gone"),
            Err(e) => panic!("round {round}: the token file is broken: {e}"),
        };
        assert_eq!(
            set.refresh_token.as_ref().map(|t| t.expose()),
            Some(KEEP),
            "round {round}: the refresh token was lost"
        );
        let access = set.access.as_ref().expect("the access token survives");
        let token = access.access_token.expose();
        assert!(
            token.starts_with("1000.kill."),
            "round {round}: not a token the writer saved"
        );
        assert!(set.token_requests.len() < 500, "round {round}");
        if token != previous_token {
            changed += 1;
        }
        previous_token = token.to_owned();
        assert_lock_freed(&rt, &store, &format!("round {round}: the writer"));
    }
    assert!(changed >= 2, "the writers' saves never landed ({changed})");

    // Only the token file, its lock, and temporary files of killed writers remain.
    let names = entries(dir.path());
    let leftovers: Vec<_> = names
        .iter()
        .filter(|n| {
            !["tokens.json", "tokens.json.lock", "tokens.json.save.lock"].contains(&n.as_str())
        })
        .collect();
    for name in &leftovers {
        assert!(
            is_temp_of(name, "tokens.json"),
            "unexpected file {name:?} in {names:?}"
        );
    }
    assert!(names.contains("tokens.json") && names.contains("tokens.json.lock"));
    eprintln!(
        "{ROUNDS} killed writers in {:?}: {} temporary files left behind",
        started.elapsed(),
        leftovers.len()
    );

    // And the store is still fully usable.
    let after = rt
        .block_on(common::put(&store, &variant(&template, 2)))
        .expect("save after the kills");
    assert_eq!(rt.block_on(store.load()).expect("load"), Some(after));
}

/// Two writers that read, edit and save the same file at once lose none of each other's edits:
/// every save is a compare-and-set under the file's save lock, and `update` re-applies an edit
/// that lost the race. Unfenced read-modify-write loses some.
#[test]
fn concurrent_updates_from_two_stores_lose_nothing() {
    const EACH: u64 = 40;
    let dir = TempDir::new("fenced");
    let path = dir.join("tokens.json");
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let path = path.clone();
            thread::spawn(move || {
                let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(path));
                runtime().block_on(async {
                    for i in 0..EACH {
                        let at = ms(1_700_000_000_000 + writer * 1_000_000 + i);
                        store
                            .update(None, |set| {
                                set.token_requests.push(at);
                                Ok(())
                            })
                            .await
                            .expect("update");
                    }
                });
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let set = runtime()
        .block_on(FileStore::new(&path).load())
        .unwrap()
        .unwrap();
    assert_eq!(
        set.token_requests.len() as u64,
        2 * EACH,
        "edits were lost between the writers"
    );
    assert_eq!(set.revision, 2 * EACH);
}
