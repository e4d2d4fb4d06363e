//! What went wrong and what to do about it, in the manner of Zoho's OAuth FAQ: every failure the
//! command line reports is a [`Problem`], and [`explain`] is the one place that turns a
//! [`zoho_auth::Error`] into one.

use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use zoho_auth::Error;

/// Exit status of a failure: Zoho, the network or the store said no.
const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error: a missing or invalid setting (as clap's own errors).
const EXIT_USAGE: u8 = 2;

/// A failure as the user sees it: what happened, and what to do.
#[derive(Debug)]
pub struct Problem {
    pub what: String,
    pub todo: String,
    exit: u8,
}

impl Problem {
    /// A missing or invalid setting (exit status 2).
    pub fn usage(what: impl Into<String>, todo: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            todo: todo.into(),
            exit: EXIT_USAGE,
        }
    }

    /// Anything else (exit status 1).
    pub fn failure(what: impl Into<String>, todo: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            todo: todo.into(),
            exit: EXIT_FAILURE,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.exit
    }

    /// Prints the problem on stderr, with every known secret blanked out.
    pub fn report(&self) {
        eprintln!("error: {}", redact(&self.what));
        eprintln!("help: {}", redact(&self.todo));
    }
}

/// The subcommand that failed: `invalid_code` means a different thing for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Login,
    Exchange,
    Token,
    Revoke,
    Connections,
}

/// What a message may name besides the error itself. No secrets.
#[derive(Clone, Debug)]
pub struct Context {
    pub step: Step,
    /// The accounts server the request went to.
    pub accounts: String,
    pub client_id: String,
    /// The token store, as [`crate::settings::Store::name`].
    pub store: String,
    /// The redirect URI of a `login`.
    pub redirect_uri: Option<String>,
}

/// Turns an error from the library into what happened and what to do.
pub fn explain(error: &Error, ctx: &Context) -> Problem {
    let (server, client, store) = (&ctx.accounts, &ctx.client_id, &ctx.store);
    if error.is_authorization() {
        return match error.zoho_code() {
            Some("access_denied") => Problem::failure(
                "Access was denied on Zoho's consent page (access_denied), so Zoho issued no tokens.",
                "Run `zoho-auth login` again and choose Accept. If the page never showed, check that \
                 this Zoho account may use the client.",
            ),
            Some(code) => Problem::failure(
                format!("Zoho's consent page returned an error instead of a code ({code})."),
                "Check the scopes (--scopes) and the client's settings in Zoho's API console, then \
                 run `zoho-auth login` again.",
            ),
            None => Problem::failure(
                format!("The sign-in callback was refused: {error}."),
                "Run `zoho-auth login` again. If this repeats, something other than Zoho is \
                 answering or rewriting the redirect to this machine.",
            ),
        };
    }
    if error.is_throttled() {
        let wait = error
            .retry_after()
            .unwrap_or(Duration::from_secs(300))
            .max(Duration::from_secs(60));
        return Problem::failure(
            format!(
                "Zoho is throttling token requests for client {client} at {server} (it allows about \
                 10 per 10 minutes per refresh token, and locks out clients that keep asking)."
            ),
            format!(
                "Wait {} before trying again: every attempt meanwhile can extend the lockout. If \
                 several programs use this login, give them one token store so that they refresh \
                 once between them.",
                minutes(wait)
            ),
        );
    }
    if error.is_rate_limited() {
        let wait = error.retry_after().unwrap_or(Duration::from_secs(60));
        return Problem::failure(
            format!(
                "No valid access token, and {store} already records the token requests Zoho allows \
                 (10 per 10 minutes per refresh token); zoho-auth held back rather than get the \
                 client throttled."
            ),
            format!("Wait {} and try again.", minutes(wait)),
        );
    }
    match error.zoho_code() {
        Some("invalid_client") => return Problem::failure(
            format!("Zoho does not know the client id {client} at {server} (invalid_client)."),
            "Check the client id (--client-id, ZOHO_CLIENT_ID or the profile's client_id), and \
                 that the Zoho account lives in this data centre (--dc or ZOHO_DC; `zoho-auth dcs` \
                 lists them) — or enable multi-DC for the client in Zoho's API console (Settings > \
                 Multi-DC).",
        ),
        Some("invalid_client_secret") => return Problem::failure(
            format!(
                "Zoho rejected the client secret of client {client} at {server} \
                     (invalid_client_secret)."
            ),
            "Copy the secret again from the client's Client Secret tab in Zoho's API console into \
                 ZOHO_CLIENT_SECRET, the profile's client_secret_file or --client-secret-stdin. A \
                 multi-DC client has a secret per data centre: use this one's.",
        ),
        Some("invalid_code") => return invalid_code(ctx),
        Some("invalid_redirect_uri") => {
            let uri = ctx.redirect_uri.as_deref().unwrap_or("the redirect URI");
            return Problem::failure(
                format!("Zoho rejected the redirect URI {uri} (invalid_redirect_uri)."),
                format!(
                    "Add exactly {uri} to the client's Authorized Redirect URIs in Zoho's API \
                     console (or pass --port with the port of one that is registered), then run \
                     `zoho-auth login` again."
                ),
            );
        }
        Some("invalid_scope") => {
            return Problem::failure(
                "Zoho rejected the requested scopes (invalid_scope).",
                "Pass --scopes as comma-separated Service.scope.OPERATION names the client may \
                 request, e.g. ZohoCRM.modules.ALL,ZohoCRM.users.READ.",
            )
        }
        _ => {}
    }
    if error.is_store() {
        return Problem::failure(
            format!("The token store {store} failed: {error}."),
            "Check the file's permissions and content, or that the Redis server is up (nothing in \
             the store was overwritten), or point --store / ZOHO_TOKEN_STORE elsewhere.",
        );
    }
    if error.is_transient() {
        return Problem::failure(
            format!(
                "Could not get a usable answer from Zoho's accounts server {server}: {error}{}.",
                root_cause(error)
            ),
            "Check the network connection, any proxy, and the accounts server setting (--dc or \
             --accounts-url), then try again in a moment.",
        );
    }
    if error.is_timeout() {
        return Problem::failure(
            format!("Gave up waiting: {error}."),
            "Try again. If another program holds the token store's refresh lock, let it finish.",
        );
    }
    if error.zoho_code().is_some() {
        return Problem::failure(
            format!("Zoho refused the request at {server}: {error}."),
            "Look the error code up in Zoho's OAuth documentation. If it is not about the request \
             itself, wait a few minutes before trying again.",
        );
    }
    Problem::failure(
        format!("{error}."),
        "Check the settings (`zoho-auth --help` lists them) and try again.",
    )
}

/// `invalid_code`: a grant code or a refresh token Zoho no longer accepts.
fn invalid_code(ctx: &Context) -> Problem {
    match ctx.step {
        Step::Exchange => Problem::failure(
            "Zoho rejected the grant code (invalid_code): it expired — codes live about 2 minutes, \
             3 for a Self Client — or it was already used.",
            "Generate a new code in Zoho's API console (Self Client > Generate Code) and run \
             `zoho-auth exchange --code CODE` right away, against the data centre where you \
             generated it (--dc).",
        ),
        Step::Login => Problem::failure(
            "Zoho rejected the code from the consent page (invalid_code): it expired or was already \
             used.",
            "Run `zoho-auth login` again and finish the consent within 2 minutes.",
        ),
        Step::Token | Step::Revoke | Step::Connections => Problem::failure(
            format!(
                "Zoho rejected the refresh token in {} (invalid_code): it was revoked — under \
                 Connected Apps in Zoho Accounts, by `zoho-auth revoke`, or because 20 newer ones \
                 were issued to this user and client — or it belongs to another client.",
                ctx.store
            ),
            "Run `zoho-auth login` (or `zoho-auth exchange --code CODE`) to store a new refresh \
             token; until then every refresh from this store fails without calling Zoho.",
        ),
    }
}

/// The innermost cause of a network error (`: Connection refused (os error 111)`), which says
/// more than reqwest's outer layers.
fn root_cause(error: &Error) -> String {
    let mut cause = error.source();
    let mut last = None;
    while let Some(inner) = cause {
        last = Some(inner.to_string());
        cause = inner.source();
    }
    last.map(|text| format!(" ({text})")).unwrap_or_default()
}

/// A wait in whole minutes (at least 1), or seconds when shorter than a minute.
fn minutes(wait: Duration) -> String {
    let secs = wait.as_secs().max(1);
    if secs < 60 {
        format!("{secs} seconds")
    } else {
        let minutes = secs.div_ceil(60);
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    }
}

/// Secret values this run knows (client secret, grant code, store password): a last line of
/// defence, so that no message this command prints can repeat one, whatever it quotes.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers a secret value to blank out of every message.
pub fn keep_secret(value: &str) {
    // Very short values would blank out ordinary words; no real secret is that short.
    if value.len() >= 6 {
        let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
        secrets.push(value.to_owned());
    }
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, "[redacted]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(minutes(Duration::from_secs(5)), "5 seconds");
        assert_eq!(minutes(Duration::from_secs(60)), "1 minute");
        assert_eq!(minutes(Duration::from_secs(299)), "5 minutes");
    }

    #[test]
    fn registered_secrets_never_print() {
        keep_secret("s3cr3t-value");
        assert_eq!(redact("a s3cr3t-value b"), "a [redacted] b");
    }
}
