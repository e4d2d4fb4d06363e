//! `zoho-auth connections`: the store's connections, one line each, from their records alone (no
//! call to Zoho). It reads tokens to describe them and prints none.

use std::time::{Duration, SystemTime};

use zoho_auth::store::TokenSet;
use zoho_auth::{ConnectionId, DataCenter};

use crate::advice::{explain, redact, Context, Problem, Step};
use crate::settings::{hide_password, Settings};
use crate::{lifetime, print_table};

/// How many ids one `list` call asks for: few round trips, and a page's ids fit in memory.
const PAGE: usize = 500;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object a line instead, for scripts:
    /// {"id","data_centre","accounts_url","scopes","status","expires_in"}; expires_in is the
    /// access token's seconds left (negative once expired, null without one); an empty store
    /// prints nothing
    #[arg(long)]
    json: bool,
}

/// One connection, as listed.
struct Row {
    id: ConnectionId,
    /// The data centre's location (`eu`), else the accounts server's URL, else `unknown`.
    data_centre: String,
    accounts_url: Option<String>,
    scopes: Vec<String>,
    status: String,
    /// Seconds the access token has left, negative once expired.
    expires_in: Option<i64>,
}

impl Row {
    fn new(id: ConnectionId, set: &TokenSet, now: SystemTime) -> Self {
        // A custom accounts server's URL could carry credentials (a proxy's).
        let accounts_url = set.accounts_url.as_deref().map(hide_password);
        let data_centre = match (&set.accounts_url, &accounts_url) {
            (Some(url), Some(shown)) => DataCenter::from_accounts_url(url)
                .map_or_else(|| shown.clone(), |dc| dc.location().to_owned()),
            _ => "unknown".to_owned(),
        };
        let expires_in =
            set.access
                .as_ref()
                .map(|access| match access.expires_at.duration_since(now) {
                    Ok(left) => secs(left),
                    Err(past) => -secs(past.duration()),
                });
        Self {
            id,
            data_centre,
            accounts_url,
            scopes: set
                .access
                .as_ref()
                .map(|access| access.scopes.clone())
                .unwrap_or_default(),
            status: status(set),
            expires_in,
        }
    }

    fn cells(&self) -> [String; 5] {
        let scopes = if self.scopes.is_empty() {
            "-".to_owned()
        } else {
            self.scopes.join(",")
        };
        let expiry = match self.expires_in {
            None => "no access token".to_owned(),
            Some(left) if left <= 0 => "expired".to_owned(),
            Some(left) => format!(
                "expires in {}",
                lifetime(Duration::from_secs(left.unsigned_abs()))
            ),
        };
        [
            self.id.to_string(),
            self.data_centre.clone(),
            scopes,
            self.status.clone(),
            expiry,
        ]
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.as_str(),
            "data_centre": self.data_centre,
            "accounts_url": self.accounts_url,
            "scopes": self.scopes,
            "status": self.status,
            "expires_in": self.expires_in,
        })
    }
}

/// A connection's status, from its record alone. The one place to extend when records say more
/// about a connection's health.
fn status(set: &TokenSet) -> String {
    match (&set.failure, &set.refresh_token) {
        (Some(failure), _) if failure.code.is_empty() => "needs re-consent".to_owned(),
        (Some(failure), _) => format!("needs re-consent ({})", failure.code),
        (None, Some(_)) => "connected".to_owned(),
        (None, None) => "not connected".to_owned(),
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

pub async fn list(settings: &Settings, args: Args) -> Result<(), Problem> {
    let connections = settings.connections()?;
    let ctx = Context {
        step: Step::Connections,
        accounts: String::new(),
        client_id: String::new(),
        store: connections.name.clone(),
        redirect_uri: None,
    };
    let now = SystemTime::now();
    let mut rows = Vec::new();
    // Records that could not be read: listed as such, and the run then fails.
    let mut unreadable = Vec::new();
    let mut after = None;
    loop {
        let page = connections
            .store
            .list(after.as_ref(), PAGE)
            .await
            .map_err(|error| explain(&error, &ctx))?;
        for id in &page {
            match connections.store.connection(id).load().await {
                Ok(Some(set)) => rows.push(Row::new(id.clone(), &set, now)),
                // Removed since the page was read.
                Ok(None) => {}
                Err(error) => unreadable.push((id.clone(), redact(&error.to_string()))),
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.clone()),
            _ => break,
        }
    }

    if args.json {
        for row in &rows {
            println!("{}", row.json());
        }
    } else if rows.is_empty() && unreadable.is_empty() {
        println!("No connections in {}.", connections.name);
    } else if !rows.is_empty() {
        let cells: Vec<[String; 5]> = rows.iter().map(Row::cells).collect();
        print_table(
            ["CONNECTION", "DC", "SCOPES", "STATUS", "ACCESS TOKEN"],
            &cells,
        );
    }
    match unreadable.as_slice() {
        [] => Ok(()),
        [(id, error), ..] => Err(Problem::failure(
            format!(
                "{} of the connections in {} could not be read, first {:?}: {error}.",
                unreadable.len(),
                connections.name,
                id.as_str()
            ),
            "Check the store (a corrupt record breaks only its own connection), then run \
             `zoho-auth connections` again.",
        )),
    }
}
