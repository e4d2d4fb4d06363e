//! Settings: flags, `ZOHO_*` environment variables and a TOML profile, in that order of
//! precedence. clap merges a flag with its environment variable; the profile fills what both
//! leave unset. Secrets never come from flags: the client secret comes from `ZOHO_CLIENT_SECRET`,
//! the profile's `client_secret_file` or standard input.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;
use zoho_auth::store::{self, ConnectionStore, TokenStore};
use zoho_auth::{Accounts, ClientId, ClientSecret, ConnectionId, DataCenter, Error};

use crate::advice::{keep_secret, redact, Problem};

/// The port of the loopback redirect URI when none is configured.
pub const DEFAULT_PORT: u16 = 8765;

/// The settings every subcommand shares (each may come before or after the subcommand).
#[derive(Args, Debug)]
pub struct Flags {
    /// TOML profile with the same settings as keys [default: <config dir>/zoho-auth/profile.toml
    /// when it exists]
    #[arg(
        long,
        global = true,
        env = "ZOHO_AUTH_PROFILE",
        hide_env_values = true,
        value_name = "PATH"
    )]
    profile: Option<PathBuf>,

    /// OAuth client id from Zoho's API console [profile: client_id]
    #[arg(
        long,
        global = true,
        env = "ZOHO_CLIENT_ID",
        hide_env_values = true,
        value_name = "ID"
    )]
    client_id: Option<String>,

    /// Read the client secret from the first line of standard input, not echoed when typed at a
    /// terminal (else ZOHO_CLIENT_SECRET, or the file named by the profile's client_secret_file)
    #[arg(long, global = true)]
    client_secret_stdin: bool,

    /// Data centre of the Zoho account: us, eu, in, au, cn, jp, ca, sa or uk [default: us;
    /// profile: dc]
    #[arg(
        long,
        global = true,
        env = "ZOHO_DC",
        hide_env_values = true,
        value_name = "DC"
    )]
    dc: Option<String>,

    /// Custom accounts server (a proxy, a simulator) instead of the data centre's [profile:
    /// accounts_url]
    #[arg(
        long,
        global = true,
        env = "ZOHO_ACCOUNTS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    accounts_url: Option<String>,

    /// Token store: file:PATH or a redis:// URL [default: file:<config dir>/zoho-auth/tokens.json;
    /// profile: store]
    #[arg(
        long,
        global = true,
        env = "ZOHO_TOKEN_STORE",
        hide_env_values = true,
        value_name = "STORE"
    )]
    store: Option<String>,

    /// Refused with an explanation rather than as an unknown argument: a secret in the arguments
    /// shows in the process list and the shell history.
    #[arg(
        long = "client-secret",
        global = true,
        hide = true,
        num_args = 0..=1,
        value_name = "REFUSED"
    )]
    client_secret_refused: Option<Option<String>>,
}

/// `--connection`, on the subcommands that work on one record (not global: `dcs` and
/// `connections` have no use for it).
#[derive(Args, Debug)]
pub struct ConnectionFlag {
    /// Work on this connection's record (one Zoho account among the store's many, by the
    /// application's id for it) instead of the store's single record [profile: connection]
    #[arg(
        long,
        env = "ZOHO_CONNECTION",
        hide_env_values = true,
        value_name = "ID"
    )]
    connection: Option<String>,
}

/// The profile file: the same settings as the flags, by key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    dc: Option<String>,
    accounts_url: Option<String>,
    store: Option<String>,
    scopes: Option<Scopes>,
    redirect_port: Option<u16>,
    connection: Option<String>,
    /// Only so that a profile holding the secret itself gets a clear refusal instead of an
    /// "unknown field" error; its value is never read.
    client_secret: Option<serde::de::IgnoredAny>,
}

/// `scopes = "A,B"` or `scopes = ["A", "B"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Joined(String),
}

/// Where a setting can come from, to name all three when it is missing or wrong.
struct Source {
    what: &'static str,
    flag: &'static str,
    env: &'static str,
    key: &'static str,
}

impl Source {
    fn names(&self) -> String {
        format!(
            "{} (or {}, or `{}` in the profile)",
            self.flag, self.env, self.key
        )
    }

    fn missing(&self, example: &str) -> Problem {
        Problem::usage(
            format!("{} is not set.", capitalise(self.what)),
            format!("Set it with {}, e.g. {example}.", self.names()),
        )
    }

    fn invalid(&self, detail: impl std::fmt::Display, hint: &str) -> Problem {
        Problem::usage(
            format!("Invalid {}: {detail}.", self.what),
            format!("{hint} Set it with {}.", self.names()),
        )
    }
}

const CLIENT_ID: Source = Source {
    what: "the OAuth client id",
    flag: "--client-id",
    env: "ZOHO_CLIENT_ID",
    key: "client_id",
};
const DC: Source = Source {
    what: "data centre",
    flag: "--dc",
    env: "ZOHO_DC",
    key: "dc",
};
const ACCOUNTS_URL: Source = Source {
    what: "accounts server URL",
    flag: "--accounts-url",
    env: "ZOHO_ACCOUNTS_URL",
    key: "accounts_url",
};
const STORE: Source = Source {
    what: "token store",
    flag: "--store",
    env: "ZOHO_TOKEN_STORE",
    key: "store",
};
const CONNECTION: Source = Source {
    what: "connection id",
    flag: "--connection",
    env: "ZOHO_CONNECTION",
    key: "connection",
};
const SCOPES: Source = Source {
    what: "the scopes to ask for",
    flag: "--scopes",
    env: "ZOHO_SCOPES",
    key: "scopes",
};

/// A token store and how to name it in messages (a Redis password replaced).
pub struct Store {
    pub store: Arc<dyn TokenStore>,
    pub name: String,
    /// Set when `store` is one connection's record: what `revoke` removes.
    pub connection: Option<Connection>,
}

/// One connection's record in a [`ConnectionStore`].
pub struct Connection {
    pub connections: Arc<dyn ConnectionStore>,
    pub id: ConnectionId,
}

/// A connection store and how to name it in messages.
pub struct Connections {
    pub store: Arc<dyn ConnectionStore>,
    pub name: String,
}

/// Every setting, resolved on demand: a subcommand asks only for what it needs, so `dcs` works
/// with nothing configured and a missing client id is reported only where it matters.
pub struct Settings {
    flags: Flags,
    profile: Profile,
    /// The profile's directory, against which a relative `client_secret_file` is resolved.
    profile_dir: Option<PathBuf>,
}

impl Settings {
    /// Reads the profile (the one named, or the default one if it exists) and checks that no
    /// secret was passed as a flag.
    pub fn load(flags: Flags) -> Result<Self, Problem> {
        if flags.client_secret_refused.is_some() {
            return Err(Problem::usage(
                "--client-secret is not accepted: command-line arguments show in the process list \
                 and the shell history.",
                "Pass the client secret through ZOHO_CLIENT_SECRET, a file named by the profile's \
                 client_secret_file, or standard input with --client-secret-stdin.",
            ));
        }
        let named = flags.profile.clone().filter(|p| !p.as_os_str().is_empty());
        let path = named.or_else(|| {
            config_dir()
                .map(|dir| dir.join("profile.toml"))
                .filter(|p| p.is_file())
        });
        let profile = match &path {
            Some(path) => Profile::read(path)?,
            None => Profile::default(),
        };
        let profile_dir = path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        Ok(Self {
            flags,
            profile,
            profile_dir,
        })
    }

    pub fn client_id(&self) -> Result<ClientId, Problem> {
        resolve(
            self.flags.client_id.as_deref(),
            self.profile.client_id.as_deref(),
        )
        .map(ClientId::new)
        .ok_or_else(|| CLIENT_ID.missing("--client-id 1000.XXXXXXXXXXXXXXXX"))
    }

    /// The client secret: standard input when asked for, else `ZOHO_CLIENT_SECRET`, else the
    /// profile's `client_secret_file`.
    pub fn client_secret(&self) -> Result<ClientSecret, Problem> {
        let secret = if self.flags.client_secret_stdin {
            read_secret_line("Client secret (not shown as you type): ").map_err(|detail| {
                Problem::usage(
                    format!("--client-secret-stdin: no client secret on standard input ({detail})."),
                    "Pipe the secret in, e.g. `pass show zoho/secret | zoho-auth ... --client-secret-stdin`.",
                )
            })?
        } else if let Some(secret) = env_var("ZOHO_CLIENT_SECRET") {
            secret
        } else if let Some(file) = &self.profile.client_secret_file {
            let path = match &self.profile_dir {
                Some(dir) => dir.join(file),
                None => file.clone(),
            };
            read_secret_file(&path)?
        } else {
            return Err(Problem::usage(
                "The client secret is not set.",
                "Set ZOHO_CLIENT_SECRET, name a file holding it as `client_secret_file` in the \
                 profile, or pipe it in with --client-secret-stdin (never as an argument: arguments \
                 show in the process list).",
            ));
        };
        keep_secret(&secret);
        Ok(ClientSecret::new(secret))
    }

    /// The data centre (default US).
    pub fn data_center(&self) -> Result<DataCenter, Problem> {
        match resolve(self.flags.dc.as_deref(), self.profile.dc.as_deref()) {
            None => Ok(DataCenter::Us),
            Some(dc) => dc.parse().map_err(|_| {
                DC.invalid(
                    format!("{dc:?}"),
                    "Use one of us, eu, in, au, cn, jp, ca, sa, uk (`zoho-auth dcs` lists them).",
                )
            }),
        }
    }

    /// The custom accounts server, when one is configured.
    pub fn custom_accounts(&self) -> Result<Option<Accounts>, Problem> {
        resolve(
            self.flags.accounts_url.as_deref(),
            self.profile.accounts_url.as_deref(),
        )
        .map(|url| {
            Accounts::custom(url).map_err(|error| {
                ACCOUNTS_URL.invalid(
                    redact(&error.to_string()),
                    "Give an https URL (plain http only on loopback).",
                )
            })
        })
        .transpose()
    }

    /// The accounts server to use: the custom one, else the data centre's.
    pub fn accounts(&self) -> Result<Accounts, Problem> {
        match self.custom_accounts()? {
            Some(accounts) => Ok(accounts),
            None => self.data_center().map(Accounts::dc),
        }
    }

    /// The token store: the single record of the configured store, or, with a connection id
    /// (`--connection`, `ZOHO_CONNECTION` or the profile's `connection`), that connection's record
    /// in the same store's connections.
    pub fn store(&self, connection: &ConnectionFlag) -> Result<Store, Problem> {
        let connection = resolve(
            connection.connection.as_deref(),
            self.profile.connection.as_deref(),
        )
        .map(|id| {
            ConnectionId::new(id).map_err(|error| {
                CONNECTION.invalid(
                    redact(&error.to_string()),
                    "Use the application's id for the Zoho account (`zoho-auth connections` \
                     lists the stored ones).",
                )
            })
        })
        .transpose()?;
        let (spec, name) = self.store_spec()?;
        let Some(id) = connection else {
            let store = open_spec(&spec, &name, store::open)?;
            return Ok(Store {
                store,
                name,
                connection: None,
            });
        };
        let connections = open_spec(&spec, &name, store::open_connections)?;
        Ok(Store {
            store: connections.connection(&id),
            name: format!("connection {:?} in {name}", id.as_str()),
            connection: Some(Connection { connections, id }),
        })
    }

    /// The configured store's connections, for `zoho-auth connections`.
    pub fn connections(&self) -> Result<Connections, Problem> {
        let (spec, name) = self.store_spec()?;
        let store = open_spec(&spec, &name, store::open_connections)?;
        Ok(Connections { store, name })
    }

    /// The store specification (default: a file in the user's configuration directory; never
    /// memory, which would forget the tokens when the command exits) and its name for messages.
    fn store_spec(&self) -> Result<(String, String), Problem> {
        let spec = match resolve(self.flags.store.as_deref(), self.profile.store.as_deref()) {
            Some(spec) => expand_home(spec),
            None => match config_dir() {
                Some(dir) => format!("file:{}", dir.join("tokens.json").display()),
                None => {
                    return Err(STORE.missing("--store file:/path/to/tokens.json"));
                }
            },
        };
        let name = hide_password(&spec);
        if spec.trim() == "memory" {
            return Err(STORE.invalid(
                "a memory store forgets the tokens when zoho-auth exits",
                "Use file:PATH or a redis:// URL.",
            ));
        }
        Ok((spec, name))
    }

    /// The scopes for `login`: the flag (or `ZOHO_SCOPES`), else the profile's.
    pub fn scopes(&self, flag: Option<&str>) -> Result<Vec<String>, Problem> {
        let joined = match &self.profile.scopes {
            Some(Scopes::List(list)) => Some(list.join(",")),
            Some(Scopes::Joined(joined)) => Some(joined.clone()),
            None => None,
        };
        let scopes: Vec<String> = resolve(flag, joined.as_deref())
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return Err(SCOPES.missing("--scopes ZohoCRM.modules.ALL,ZohoCRM.users.READ"));
        }
        Ok(scopes)
    }

    /// The port of the loopback redirect URI: the flag (or `ZOHO_REDIRECT_PORT`), else the
    /// profile's `redirect_port`, else [`DEFAULT_PORT`].
    pub fn redirect_port(&self, flag: Option<u16>) -> u16 {
        resolve(flag, self.profile.redirect_port).unwrap_or(DEFAULT_PORT)
    }
}

/// Opens the store `spec` (named `name`) with `open`, or says why it cannot.
fn open_spec<T>(spec: &str, name: &str, open: fn(&str) -> Result<T, Error>) -> Result<T, Problem> {
    open(spec).map_err(|error| {
        // The library's message may quote the specification, password included.
        let detail = redact(&error.to_string()).replace(spec, name);
        STORE.invalid(detail, "Use file:PATH or a redis:// URL.")
    })
}

impl Profile {
    fn read(path: &Path) -> Result<Self, Problem> {
        let fix = "Fix the file, or name another with --profile (or ZOHO_AUTH_PROFILE).";
        let text = std::fs::read_to_string(path).map_err(|error| {
            Problem::usage(
                format!("Cannot read the profile {}: {error}.", path.display()),
                fix,
            )
        })?;
        // toml's Display quotes the offending line, which may hold a secret: report only the
        // message and the line number.
        let profile: Profile = toml::from_str(&text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let at = line
                .map(|line| format!(", line {line}"))
                .unwrap_or_default();
            Problem::usage(
                format!(
                    "The profile {}{at} is not valid: {}.",
                    path.display(),
                    error.message().trim_end_matches('\n')
                ),
                format!(
                    "{fix} Its keys are client_id, client_secret_file, dc, accounts_url, store, \
                     connection, scopes and redirect_port."
                ),
            )
        })?;
        if profile.client_secret.is_some() {
            return Err(Problem::usage(
                format!(
                    "The profile {} holds the client secret itself (`client_secret`).",
                    path.display()
                ),
                "Move the secret into its own file (mode 0600) and name that file as \
                 `client_secret_file`, so the profile can be shared and versioned without it.",
            ));
        }
        Ok(profile)
    }
}

/// The order of precedence of every setting, in one place: the flag (which clap fills from its
/// `ZOHO_*` variable when the flag is absent), else the profile's key; a blank value counts as
/// unset.
fn resolve<T: Given>(flag: Option<T>, profile: Option<T>) -> Option<T> {
    flag.and_then(Given::given)
        .or_else(|| profile.and_then(Given::given))
}

/// A setting's value, or `None` when it is given but blank.
trait Given: Sized {
    fn given(self) -> Option<Self>;
}

impl Given for &str {
    fn given(self) -> Option<Self> {
        Some(self.trim()).filter(|value| !value.is_empty())
    }
}

impl Given for u16 {
    fn given(self) -> Option<Self> {
        Some(self)
    }
}

fn env_var(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    value.as_str().given().map(str::to_owned)
}

/// A secret (the client secret, a grant code) from standard input, trimmed. Typed at a terminal,
/// it is read from the terminal with echo off, after a prompt, so that it never shows on screen,
/// in a scrollback buffer or a screen recording; piped in, it is the next line, for scripts.
pub fn read_secret_line(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        rpassword::prompt_password(prompt).map_err(|error| error.to_string())?
    } else {
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => return Err("end of input".to_owned()),
            Ok(_) => line,
            Err(error) => return Err(error.to_string()),
        }
    };
    match line.trim() {
        "" => Err("an empty line".to_owned()),
        secret => Ok(secret.to_owned()),
    }
}

fn read_secret_file(path: &Path) -> Result<String, Problem> {
    let fix = "Put the client secret, alone, in that file (mode 0600), or set ZOHO_CLIENT_SECRET.";
    let text = std::fs::read_to_string(path).map_err(|error| {
        Problem::usage(
            format!(
                "Cannot read the client secret file {} (the profile's client_secret_file): {error}.",
                path.display()
            ),
            fix,
        )
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Problem::usage(
            format!(
                "The client secret file {} (the profile's client_secret_file) is empty.",
                path.display()
            ),
            fix,
        ));
    }
    Ok(secret.to_owned())
}

/// `<config dir>/zoho-auth`: `$XDG_CONFIG_HOME`, else `~/.config` (`%APPDATA%` on Windows).
pub fn config_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let base = if cfg!(windows) {
        absolute("APPDATA")
    } else {
        absolute("XDG_CONFIG_HOME").or_else(|| absolute("HOME").map(|home| home.join(".config")))
    };
    base.map(|base| base.join("zoho-auth"))
}

/// `file:~/x` → `file:$HOME/x`: the shell does not expand a `~` after `file:`.
fn expand_home(spec: &str) -> String {
    match (spec.strip_prefix("file:~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => format!("file:{}", Path::new(&home).join(rest).display()),
        _ => spec.to_owned(),
    }
}

/// The store specification (or any URL) with a URL password replaced, for messages. The password
/// is also registered as a secret, so no message can repeat it.
pub fn hide_password(spec: &str) -> String {
    match url::Url::parse(spec) {
        Ok(mut url) if url.password().is_some() => {
            if let Some(password) = url.password() {
                keep_secret(password);
            }
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        _ => spec.to_owned(),
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
