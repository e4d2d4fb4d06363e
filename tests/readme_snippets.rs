//! Every README snippet says what it needs: each Rust snippet of README.md is built in a fresh
//! crate whose dependencies are exactly the ones the README names before it.
//!
//! The doc tests (`#![doc = include_str!("../README.md")]`) compile the same snippets, but they
//! see every dev-dependency of this repository, so a snippet that uses a crate the README never
//! asks for still passes there, and fails in the reader's crate.
//!
//! The convention this test holds the README to:
//!
//! - A fenced ```` ```toml ```` block with a `[dependencies]` table sets the dependencies of the
//!   Rust snippets that follow it, up to the next such block. Its `[dev-dependencies]` count
//!   too (a test snippet uses them): both tables go into the scratch crate's `[dependencies]`,
//!   and a crate may be named in only one of them. A toml block without `[dependencies]` (a
//!   `[dev-dependencies]` one for the simulator) changes nothing.
//! - Every Rust block is checked: an info string whose first word is `rust` (`rust`,
//!   `rust,no_run`) or an empty one, which rustdoc also compiles. `ignore` and `compile_fail`
//!   blocks are skipped, as rustdoc does not expect them to build; `sh`, `text`, `toml` and the
//!   rest are not Rust. A Rust block before any dependency block is an error.
//! - `zoho-auth` is built from this repository: its entry keeps its other keys (`features`,
//!   `default-features`) and trades `version` for `path`. Every other entry is used as written.
//!   Every `zoho-auth` entry of any toml block must name version `MAJOR.MINOR` of Cargo.toml
//!   (`"0.1"`), so the README's version cannot drift.
//! - Hidden lines (`# code`, or `#` alone) are kept without their `# `, as rustdoc does. A
//!   snippet with `fn main(` is built as `src/main.rs`, any other as `src/lib.rs`: README snippets
//!   are items, so bare statements fail. Only `#![allow(dead_code)]` is added (nothing calls the
//!   snippets' functions).
//!
//! A snippet can also be *run*: an HTML comment `<!-- exercised by tests/readme/NAME.rs -->` on
//! the line before its fence names a harness, which is appended to the snippet's crate as
//! `#[cfg(test)] mod exercise` (so it calls the snippet's own items, private ones too) and run
//! with `cargo test` after the check passed, with the dev-dependencies in [`HARNESS_DEV_DEPS`]
//! (the simulator among them). The snippet's code is the README's, byte for byte; the harness
//! uses it the way an application would: held in state, spawned, called concurrently.
//!
//! A feature that zoho-auth's own dependencies turn on is on in the reader's crate too (reqwest
//! turns on hyper-util's `client-legacy`, hyper-rustls's `ring` and tower's `util`), so a snippet
//! that forgets to name it builds here as it does there: name the features a snippet uses anyway.
//!
//! Each snippet's crate is `<target>/tmp/readme-snippets/<readme's folder>/snippet-<line>`, with
//! the repository's Cargo.lock copied in (the versions this repository is tested with; cargo
//! adds what is new), and `cargo check` runs for one snippet at a time into one shared target
//! directory, `<target>/tmp/readme-snippets/target`, so common dependencies build once. Cargo
//! runs online: a crate the README names that this repository does not use has to be
//! downloaded; `CARGO_NET_OFFLINE` still applies if set.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use toml::{Table, Value};

/// A Rust snippet of the README and the dependencies in force where it stands.
#[derive(Debug)]
struct Snippet {
    /// The line of its opening fence, from 1.
    line: usize,
    /// Its code, hidden lines included.
    code: String,
    /// The line of the toml block that named its dependencies.
    deps_line: usize,
    /// The `[dependencies]` and `[dev-dependencies]` of that block, in one table.
    deps: Table,
    /// The harness that runs it, relative to the repository: `tests/readme/NAME.rs`.
    exercise: Option<String>,
}

/// What a harness may use beyond the snippet's dependencies. `zoho-auth`'s entry only adds the
/// simulator: its path and the snippet's features come from the snippet's own entry.
const HARNESS_DEV_DEPS: &str = r#"[dev-dependencies]
zoho-auth = { path = "ZOHO_AUTH", features = ["simulator"] }
tokio = { version = "1", features = ["full"] }
tower = { version = "0.5", features = ["util"] }
http = "1"
"#;

/// The harness named by an `<!-- exercised by PATH -->` line.
fn exercise_marker(line: &str) -> Option<String> {
    let path = line
        .trim()
        .strip_prefix("<!-- exercised by ")?
        .strip_suffix("-->")?;
    Some(path.trim().to_owned())
}

/// What the README asks to be checked, and how it breaks the convention.
#[derive(Debug, Default)]
struct Plan {
    snippets: Vec<Snippet>,
    errors: Vec<String>,
}

/// A fenced block: the line of its opening fence, its info string, its lines, and the line
/// just before it.
struct Fence<'a> {
    line: usize,
    info: &'a str,
    body: Vec<&'a str>,
    before: &'a str,
}

/// The fenced blocks of a markdown text: a fence is a run of three or more backticks at the
/// start of a line, closed by a line of at least as many backticks and nothing else.
fn fences(markdown: &str) -> Result<Vec<Fence<'_>>, String> {
    let mut fences = Vec::new();
    let mut open: Option<(usize, Fence)> = None;
    let mut previous = "";
    for (index, line) in markdown.lines().enumerate() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match &mut open {
            None if ticks >= 3 => {
                let fence = Fence {
                    line: index + 1,
                    info: line[ticks..].trim(),
                    body: Vec::new(),
                    before: previous,
                };
                open = Some((ticks, fence));
            }
            None => previous = line,
            Some((opened, _)) if ticks >= *opened && line.trim_end().len() == ticks => {
                fences.extend(open.take().map(|(_, fence)| fence));
            }
            Some((_, fence)) => fence.body.push(line),
        }
    }
    match open {
        Some((_, fence)) => Err(format!("the fence at line {} is never closed", fence.line)),
        None => Ok(fences),
    }
}

/// A line of a snippet as rustdoc compiles it: a hidden line without its `# `.
fn unhide(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed == "#" {
        ""
    } else {
        trimmed.strip_prefix("# ").unwrap_or(line)
    }
}

/// The `zoho-auth` version that README dependency entries must name: Cargo.toml's `MAJOR.MINOR`.
fn expected_version() -> String {
    format!(
        "{}.{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    )
}

/// Reads the README's fenced blocks into the snippets to build, with their dependencies.
fn plan(readme: &str) -> Plan {
    let mut plan = Plan::default();
    let blocks = match fences(readme) {
        Ok(blocks) => blocks,
        Err(error) => {
            plan.errors.push(error);
            return plan;
        }
    };
    let mut in_force: Option<(usize, Table)> = None;
    for Fence {
        line,
        info,
        body,
        before,
    } in blocks
    {
        let mut words = info
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty());
        match words.next() {
            Some("toml") => match body.join("\n").parse::<Table>() {
                Err(error) => plan.errors.push(format!(
                    "the toml block at line {line} does not parse: {error}"
                )),
                Ok(manifest) => {
                    plan.errors.extend(version_drift(line, &manifest));
                    if manifest.contains_key("dependencies") {
                        in_force = Some((line, dependencies(line, &manifest, &mut plan.errors)));
                    }
                }
            },
            None | Some("rust") if !words.any(|w| w == "ignore" || w == "compile_fail") => {
                let Some((deps_line, deps)) = &in_force else {
                    plan.errors.push(format!(
                        "the snippet at line {line} names no dependencies: put a ```toml block with a \
                         [dependencies] table before it"
                    ));
                    continue;
                };
                plan.snippets.push(Snippet {
                    line,
                    code: body
                        .into_iter()
                        .map(|l| format!("{}\n", unhide(l)))
                        .collect(),
                    deps_line: *deps_line,
                    deps: deps.clone(),
                    exercise: exercise_marker(before),
                });
            }
            _ => {}
        }
    }
    plan
}

/// The block's `[dependencies]` and `[dev-dependencies]`, in one table.
fn dependencies(line: usize, manifest: &Table, errors: &mut Vec<String>) -> Table {
    let mut deps = Table::new();
    for table in ["dependencies", "dev-dependencies"] {
        for (name, entry) in manifest
            .get(table)
            .and_then(Value::as_table)
            .into_iter()
            .flatten()
        {
            if deps.insert(name.clone(), entry.clone()).is_some() {
                errors.push(format!(
                    "the toml block at line {line} names `{name}` in both [dependencies] and \
                     [dev-dependencies]: name it once, with every feature its snippets need"
                ));
            }
        }
    }
    deps
}

/// Errors for each `zoho-auth` entry of a toml block that does not name Cargo.toml's version.
fn version_drift(line: usize, manifest: &Table) -> Vec<String> {
    let expected = expected_version();
    ["dependencies", "dev-dependencies"]
        .iter()
        .filter_map(|table| manifest.get(*table)?.get("zoho-auth"))
        .filter_map(|entry| {
            let version = entry.as_str().or_else(|| entry.get("version")?.as_str());
            (version != Some(expected.as_str())).then(|| {
                format!("the toml block at line {line} names zoho-auth {version:?}; Cargo.toml makes it {expected:?}")
            })
        })
        .collect()
}

/// The repository this test belongs to.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `[dependencies]` section of a snippet's crate: the README's, with `zoho-auth` from here.
fn dependencies_section(deps: &Table) -> String {
    let mut deps = deps.clone();
    if let Some(entry) = deps.get_mut("zoho-auth") {
        let mut local = entry.as_table().cloned().unwrap_or_default();
        local.remove("version");
        local.insert("path".into(), repo().display().to_string().into());
        *entry = local.into();
    }
    toml::to_string(&Table::from_iter([(
        "dependencies".to_owned(),
        Value::from(deps),
    )]))
    .expect("a table serializes")
}

/// Whether an environment variable describes the `cargo test` that runs this test rather than
/// the user's setup. The nested cargo must describe its own package, use the target directory
/// given to it, and build as a fresh crate would, without this build's rustc flags; the
/// toolchain (`RUSTUP_TOOLCHAIN`, `RUSTC`), `CARGO_HOME` and network settings stay.
fn from_outer_build(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
        ]
        .contains(&name.as_ref())
}

/// Builds one snippet in its own crate under `scratch`; the error says what a README author
/// needs: where the snippet is, the dependencies it was given and what cargo said.
fn build(readme: &str, snippet: &Snippet, scratch: &Path) -> Result<(), String> {
    let dir = scratch.join(format!("snippet-{}", snippet.line));
    let src = dir.join("src");
    // A snippet that gained or lost its `fn main` since the last run must not keep the old file.
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).expect("create the snippet's crate");
    let binary = snippet.code.contains("fn main(");
    let root = src.join(if binary { "main.rs" } else { "lib.rs" });
    fs::write(&root, format!("#![allow(dead_code)]\n{}", snippet.code)).expect("write the snippet");
    let section = dependencies_section(&snippet.deps);
    let manifest = format!(
        "[package]\nname = \"readme-snippet-{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         # Not a member of the repository's workspace, though it may lie inside the repository.\n\
         [workspace]\n\n{section}",
        snippet.line
    );
    fs::write(dir.join("Cargo.toml"), &manifest).expect("write the snippet's Cargo.toml");
    fs::copy(repo().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");

    let target = scratch
        .parent()
        .expect("scratch lies in readme-snippets")
        .join("target");
    let said = match cargo(&dir, "check", &target) {
        Ok(()) => return exercise(readme, snippet, &dir, &root, &manifest, &target),
        Err(said) => said,
    };
    let kind = if binary {
        "as src/main.rs, since it has `fn main`"
    } else {
        "as src/lib.rs, since it has no `fn main`: a snippet must be items, such as functions, or define `fn main`"
    };
    Err(format!(
        "{readme}: the snippet at line {} does not build with the dependencies of the toml block at line {} \
         (built {kind}; crate in {}):\n{section}\ncargo check says:\n{}",
        snippet.line,
        snippet.deps_line,
        dir.display(),
        said
    ))
}

/// Runs `cargo <command>` in the crate at `dir`; what cargo said (its first 60 lines) if it
/// failed.
fn cargo(dir: &Path, command: &str, target: &Path) -> Result<(), String> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(dir)
        .args([command, "--quiet", "--color", "never", "--target-dir"])
        .arg(target);
    for (name, _) in std::env::vars_os().filter(|(name, _)| from_outer_build(name)) {
        cargo.env_remove(name);
    }
    let output = cargo.output().expect("run cargo");
    if output.status.success() {
        return Ok(());
    }
    let both = [output.stderr, output.stdout].concat();
    Err(String::from_utf8_lossy(&both)
        .lines()
        .take(60)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Runs the snippet's harness, if it names one, against the snippet's own code.
fn exercise(
    readme: &str,
    snippet: &Snippet,
    dir: &Path,
    root: &Path,
    manifest: &str,
    target: &Path,
) -> Result<(), String> {
    let Some(harness) = &snippet.exercise else {
        return Ok(());
    };
    let path = repo().join(harness);
    if !path.is_file() {
        return Err(format!(
            "{readme}: the snippet at line {} is exercised by {harness}, which does not exist",
            snippet.line
        ));
    }
    let code = fs::read_to_string(root).expect("read the snippet back");
    fs::write(
        root,
        format!(
            "{code}\n#[cfg(test)]\n#[path = {:?}]\nmod exercise;\n",
            path.display()
        ),
    )
    .expect("append the harness");
    let dev = HARNESS_DEV_DEPS.replace("ZOHO_AUTH", &repo().display().to_string());
    fs::write(dir.join("Cargo.toml"), format!("{manifest}\n{dev}"))
        .expect("add the harness's dependencies");
    cargo(dir, "test", target).map_err(|said| {
        format!(
            "{readme}: the snippet at line {} builds, but {harness} fails on it (crate in {}):\n{said}",
            snippet.line,
            dir.display()
        )
    })
}

/// Checks every Rust snippet of a README; the number checked, or every failure.
fn check_readme(readme: &Path) -> Result<usize, String> {
    let text = fs::read_to_string(readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let name = readme
        .file_name()
        .map_or("README".into(), |n| n.to_string_lossy().into_owned());
    let Plan {
        snippets,
        mut errors,
    } = plan(&text);
    errors = errors.into_iter().map(|e| format!("{name}: {e}")).collect();
    if snippets.is_empty() {
        errors.push(format!(
            "{name}: no Rust snippet to check: the fence parser or the README broke"
        ));
    }
    let scratch = readme_scratch(readme);
    for snippet in &snippets {
        errors.extend(build(&name, snippet, &scratch).err());
    }
    if errors.is_empty() {
        Ok(snippets.len())
    } else {
        Err(errors.join("\n\n"))
    }
}

/// Where a README's snippet crates go: one folder per README, beside the shared target.
fn readme_scratch(readme: &Path) -> PathBuf {
    let parent = readme
        .parent()
        .and_then(Path::file_name)
        .map_or("readme".into(), |n| n.to_string_lossy().into_owned());
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("readme-snippets")
        .join(parent)
}

#[test]
fn readme_snippets_build_with_the_dependencies_they_name() {
    match check_readme(&repo().join("README.md")) {
        Ok(checked) => println!("{checked} README snippets build with the dependencies they name"),
        Err(errors) => panic!("{errors}"),
    }
}

/// The check itself, end to end: a snippet using a crate its block does not name fails, and so
/// do bare statements; naming the crate makes it build.
#[test]
fn a_snippet_fails_without_the_crates_it_uses() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-fixture");
    fs::create_dir_all(&dir).unwrap();
    let readme = dir.join("README.md");
    let fixture = |deps: &str| {
        format!(
            "```toml\n[dependencies]\nzoho-auth = \"0.1\"\n{deps}```\n\n\
             ```rust\nfn same(cache: zoho_auth::TokenCache) -> zoho_auth::TokenCache {{\n    cache\n}}\n```\n\n\
             ```rust,no_run\nfn request() -> http::Request<()> {{\n    http::Request::new(())\n}}\n```\n"
        )
    };

    fs::write(
        &readme,
        fixture("") + "\n```rust\nlet statement = 1;\n```\n",
    )
    .unwrap();
    let errors = check_readme(&readme).expect_err("`http` and a bare statement are not fine");
    assert!(
        !errors.contains("line 6 "),
        "the snippet using only zoho-auth builds: {errors}"
    );
    assert!(
        errors.contains("README.md: the snippet at line 12 does not build"),
        "{errors}"
    );
    assert!(
        errors.contains("`http`"),
        "cargo's error names the missing crate: {errors}"
    );
    assert!(errors.contains("line 18 does not build"), "{errors}");
    assert!(errors.contains("a snippet must be items"), "{errors}");

    fs::write(&readme, fixture("http = \"1\"\n")).unwrap();
    assert_eq!(check_readme(&readme), Ok(2));
}

/// Two dependency blocks, a dev-dependency-only block, a hidden line, an ignored snippet and
/// blocks that are not Rust.
const FIXTURE: &str = r#"# A readme

```toml
[dependencies]
zoho-auth = { version = "0.1", features = ["redis"], default-features = false }
http = "1"

[dev-dependencies]
tokio = { version = "1", features = ["macros"] }
```

```rust,no_run
# use zoho_auth::TokenCache;
fn cache(cache: TokenCache) -> TokenCache {
    cache
}
```

```sh
cargo test
```

```toml
[dev-dependencies]
zoho-auth = { version = "0.1", features = ["simulator"] }
```

```rust,ignore
this is not Rust
```

````toml
[dependencies]
zoho-auth = "0.1"
````

```rust
#
fn main() {}
```
"#;

#[test]
fn each_rust_snippet_gets_the_dependencies_of_the_block_before_it() {
    let Plan { snippets, errors } = plan(FIXTURE);
    assert_eq!(errors, Vec::<String>::new());
    let lines: Vec<_> = snippets.iter().map(|s| (s.line, s.deps_line)).collect();
    assert_eq!(lines, [(12, 3), (37, 32)]);
    let names: Vec<_> = snippets[0].deps.keys().map(String::as_str).collect();
    assert_eq!(names, ["http", "tokio", "zoho-auth"]);
    assert_eq!(
        snippets[0].code,
        "use zoho_auth::TokenCache;\nfn cache(cache: TokenCache) -> TokenCache {\n    cache\n}\n"
    );
    assert_eq!(snippets[1].code, "\nfn main() {}\n");
}

#[test]
fn zoho_auth_is_built_from_this_repository_with_its_features() {
    let deps = &plan(FIXTURE).snippets[0].deps;
    let section: Table = dependencies_section(deps).parse().unwrap();
    let zoho = &section["dependencies"]["zoho-auth"];
    assert_eq!(
        zoho.get("path").and_then(Value::as_str),
        Some(env!("CARGO_MANIFEST_DIR"))
    );
    assert_eq!(zoho.get("version"), None);
    assert_eq!(zoho["features"], Value::from(vec!["redis"]));
    assert_eq!(zoho["default-features"], Value::from(false));
    assert_eq!(section["dependencies"]["http"], Value::from("1"));
}

#[test]
fn the_readme_convention_is_enforced() {
    let readme = "```rust\nfn early() {}\n```\n\n```toml\n[dependencies]\nzoho-auth = \"0.2\"\nhttp = \"1\"\n\n\
                  [dev-dependencies]\nhttp = \"1\"\n```\n\n```\nfn untagged() {}\n```\n\n```rust\n";
    let Plan { snippets, errors } = plan(readme);
    assert!(
        snippets.is_empty(),
        "an unclosed fence yields nothing to build: {snippets:?}"
    );
    assert_eq!(errors, ["the fence at line 18 is never closed"]);

    let Plan { snippets, errors } = plan(readme.trim_end_matches("```rust\n"));
    assert_eq!(
        snippets.iter().map(|s| s.line).collect::<Vec<_>>(),
        [14],
        "an untagged block is Rust to rustdoc"
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("the snippet at line 1 names no dependencies"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        format!(
            "the toml block at line 5 names zoho-auth Some(\"0.2\"); Cargo.toml makes it {:?}",
            expected_version()
        )
    );
    assert!(errors[2].contains("names `http` in both"), "{errors:?}");
}
