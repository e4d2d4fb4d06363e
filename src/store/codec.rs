//! The JSON form of a [`TokenSet`], shared by the file and Redis stores.
//!
//! Two parts: the durable one (refresh token, recent token requests, a recorded failure) and the
//! access token, which Redis keeps under its own key with the token's TTL. A file holds both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{StoredAccess, StoredFailure, StoredRetry, TokenSet};
use crate::secret::{AccessToken, RefreshToken};

/// Bumped when the format changes incompatibly; older readers then refuse instead of guessing.
pub(crate) const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Durable {
    /// The set's revision, for fenced saves; sets written before revisions existed read as 0.
    #[serde(default)]
    pub(crate) revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accounts_url: Option<String>,
    #[serde(default)]
    token_requests_ms: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<Retry>,
}

#[derive(Serialize, Deserialize)]
struct Retry {
    since_ms: u64,
    next_attempt_ms: u64,
    #[serde(default)]
    throttled: bool,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Failure {
    code: String,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Access {
    access_token: String,
    issued_at_ms: u64,
    expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_domain: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// A whole set in one document, as the file store writes it.
#[derive(Serialize, Deserialize)]
pub(crate) struct Document {
    version: u32,
    #[serde(flatten)]
    durable: Durable,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<Access>,
}

fn to_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn durable(set: &TokenSet) -> Durable {
    Durable {
        revision: set.revision,
        refresh_token: set.refresh_token.as_ref().map(|t| t.expose().to_owned()),
        accounts_url: set.accounts_url.clone(),
        token_requests_ms: set.token_requests.iter().copied().map(to_ms).collect(),
        failure: set.failure.as_ref().map(|f| Failure {
            code: f.code.clone(),
            message: f.message.clone(),
            client: f.client.clone(),
        }),
        retry: set.retry.as_ref().map(|r| Retry {
            since_ms: to_ms(r.since),
            next_attempt_ms: to_ms(r.next_attempt),
            throttled: r.throttled,
            message: r.message.clone(),
        }),
    }
}

pub(crate) fn access(set: &TokenSet) -> Option<Access> {
    set.access.as_ref().map(|a| Access {
        access_token: a.access_token.expose().to_owned(),
        issued_at_ms: to_ms(a.issued_at),
        expires_at_ms: to_ms(a.expires_at),
        api_domain: a.api_domain.clone(),
        scopes: a.scopes.clone(),
    })
}

pub(crate) fn document(set: &TokenSet) -> Document {
    Document {
        version: VERSION,
        durable: durable(set),
        access: access(set),
    }
}

/// Rebuilds a set from its parts.
pub(crate) fn set_from(durable: Durable, access: Option<Access>) -> TokenSet {
    TokenSet {
        revision: durable.revision,
        refresh_token: durable.refresh_token.map(RefreshToken::new),
        accounts_url: durable.accounts_url,
        access: access.map(|a| StoredAccess {
            access_token: AccessToken::new(a.access_token),
            issued_at: from_ms(a.issued_at_ms),
            expires_at: from_ms(a.expires_at_ms),
            api_domain: a.api_domain,
            scopes: a.scopes,
        }),
        token_requests: durable.token_requests_ms.into_iter().map(from_ms).collect(),
        failure: durable.failure.map(|f| StoredFailure {
            code: f.code,
            message: f.message,
            client: f.client,
        }),
        retry: durable.retry.map(|r| StoredRetry {
            since: from_ms(r.since_ms),
            next_attempt: from_ms(r.next_attempt_ms),
            throttled: r.throttled,
            message: r.message,
        }),
    }
}

/// The public JSON form ([`TokenSet::to_json`]): the file store's document.
pub(crate) fn to_json(set: &TokenSet) -> String {
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&document(set)).unwrap_or_default()
}

pub(crate) fn from_json(json: &[u8]) -> Result<TokenSet, String> {
    serde_json::from_slice::<Document>(json)
        .map_err(|e| describe(&e))?
        .into_set()
}

/// A JSON error without serde's message, which can quote the offending value (a token).
pub(crate) fn describe(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

impl Document {
    /// The set, or why this document cannot be read as one.
    pub(crate) fn into_set(self) -> Result<TokenSet, String> {
        if self.version != VERSION {
            return Err(format!(
                "format version {} (this zoho-auth reads version {VERSION})",
                self.version
            ));
        }
        Ok(set_from(self.durable, self.access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_round_trips_through_json() {
        let set = TokenSet {
            revision: 7,
            refresh_token: Some(RefreshToken::new("1000.r.t")),
            accounts_url: Some("https://accounts.zoho.eu".into()),
            access: Some(StoredAccess {
                access_token: AccessToken::new("1000.a.t"),
                issued_at: from_ms(1_700_000_000_000),
                expires_at: from_ms(1_700_003_600_000),
                api_domain: Some("https://www.zohoapis.eu".into()),
                scopes: vec!["ZohoCRM.modules.ALL".into()],
            }),
            token_requests: vec![from_ms(1_700_000_000_000)],
            failure: Some(StoredFailure {
                code: "invalid_client".into(),
                message: "unknown client".into(),
                client: Some("0123456789abcdef".into()),
            }),
            retry: Some(StoredRetry {
                since: from_ms(1_700_000_000_000),
                next_attempt: from_ms(1_700_000_030_000),
                throttled: true,
                message: "throttled".into(),
            }),
        };
        let json = serde_json::to_string(&document(&set)).unwrap();
        let back: Document = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_set().unwrap(), set);
    }

    #[test]
    fn a_json_error_quotes_no_value() {
        let error = from_json(br#"{"version":1,"refresh_token":1000.secret}"#).unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn another_version_is_refused() {
        let doc: Document = serde_json::from_str(r#"{"version":99}"#).unwrap();
        assert!(doc.into_set().unwrap_err().contains("99"));
    }
}
