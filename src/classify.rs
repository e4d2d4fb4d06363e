//! Recognising "this access token is dead" in each Zoho product's dialect.
//!
//! Zoho's products disagree on how to say it (`zoho-wire.md` §7): CRM answers 401
//! `{"code":"INVALID_TOKEN"}`, Desk `{"errorCode":"INVALID_OAUTH"}`, Books code `57`, Mail and
//! Projects `INVALID_OAUTHTOKEN` in different places, People code `7213` (sometimes inside a 2xx),
//! WorkDrive `F7003` with a 401 on some endpoints and a 500 on others. A status code alone says
//! nothing — a 401 may be a scope or org mismatch that no refresh cures — so the classifier reads
//! the body of small error responses and matches each product's code.
//!
//! Only responses whose status some rule names are read, and only up to a size bound
//! ([`ZohoAuthLayer::max_error_body`](crate::ZohoAuthLayer::max_error_body)); everything else
//! streams through untouched.
//!
//! ```
//! use http::StatusCode;
//! use zoho_auth::classify::{Classifier, Rule};
//!
//! let classifier = Classifier::zoho()
//!     // A gateway in front of Zoho that has its own way of saying it.
//!     .with_rule(Rule::json(StatusCode::UNAUTHORIZED, "/error/reason", "token_expired"))?;
//!
//! let crm = br#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#;
//! assert!(classifier.is_token_error(StatusCode::UNAUTHORIZED, None, crm));
//! let scope = br#"{"code":"OAUTH_SCOPE_MISMATCH","details":{},"message":"invalid oauth scope","status":"error"}"#;
//! assert!(!classifier.is_token_error(StatusCode::UNAUTHORIZED, None, scope));
//! let gateway = br#"{"error":{"reason":"token_expired"}}"#;
//! assert!(classifier.is_token_error(StatusCode::UNAUTHORIZED, None, gateway));
//! # Ok::<(), zoho_auth::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;

use crate::error::Error;

type Predicate = dyn Fn(StatusCode, &[u8]) -> bool + Send + Sync;

#[derive(Clone)]
enum Matcher {
    /// The JSON value at a pointer equals a string, or a number with that decimal form.
    Json {
        pointer: String,
        value: String,
    },
    Custom(Arc<Predicate>),
}

/// One way of saying "this token is dead": the statuses it comes with, an optional host
/// restriction, and what the body holds.
#[derive(Clone)]
pub struct Rule {
    statuses: Vec<StatusCode>,
    host_prefix: Option<String>,
    matcher: Matcher,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rule");
        d.field("statuses", &self.statuses)
            .field("host_prefix", &self.host_prefix);
        match &self.matcher {
            Matcher::Json { pointer, value } => d.field("pointer", pointer).field("value", value),
            Matcher::Custom(_) => d.field("matcher", &"custom"),
        };
        d.finish()
    }
}

impl Rule {
    /// Matches when the response has `status` and its JSON body holds `value` at `pointer`
    /// (RFC 6901, e.g. `/data/errorCode`). Numbers match their decimal form, so `"57"` matches
    /// Books' `{"code":57}`.
    #[must_use]
    pub fn json(status: StatusCode, pointer: &str, value: impl Into<String>) -> Self {
        Self {
            statuses: vec![status],
            host_prefix: None,
            matcher: Matcher::Json {
                pointer: pointer.to_owned(),
                value: value.into(),
            },
        }
    }

    /// Matches when the response has `status` and `predicate` accepts the status and the body.
    #[must_use]
    pub fn custom(
        status: StatusCode,
        predicate: impl Fn(StatusCode, &[u8]) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            statuses: vec![status],
            host_prefix: None,
            matcher: Matcher::Custom(Arc::new(predicate)),
        }
    }

    /// Also applies to responses with `status`.
    #[must_use]
    pub fn or_status(mut self, status: StatusCode) -> Self {
        if !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    /// Applies only to requests whose host starts with `prefix` (e.g. `people.`), so that a rule
    /// for a success status does not make every product's responses be read.
    #[must_use]
    pub fn for_host_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.host_prefix = Some(prefix.into());
        self
    }

    fn matches(&self, status: StatusCode, body: &[u8], json: &mut Option<Option<Value>>) -> bool {
        if !self.statuses.contains(&status) {
            return false;
        }
        match &self.matcher {
            Matcher::Custom(predicate) => predicate(status, body),
            Matcher::Json { pointer, value } => {
                // Parse at most once per response, however many rules look at it.
                let parsed = json.get_or_insert_with(|| serde_json::from_slice(body).ok());
                match parsed.as_ref().and_then(|v| v.pointer(pointer)) {
                    Some(Value::String(s)) => s == value,
                    Some(Value::Number(n)) => n.to_string() == *value,
                    _ => false,
                }
            }
        }
    }
}

/// The rules of every Zoho product, plus any a user adds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Classifier {
    rules: Arc<[Rule]>,
    /// For each status some rule names, the rules that name it: the response path's test.
    by_status: Arc<[(StatusCode, u64)]>,
    /// The rules for every host, and the host prefixes of the others with their bits: the
    /// request path's test, which then compares only the few prefixes.
    any_host: u64,
    by_prefix: Arc<[(String, u64)]>,
}

/// Which rules apply to one request's host: bit `i` stands for rule `i`. Computed once per request
/// so the response path tests a bit instead of comparing hosts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuleMask(u64);

impl RuleMask {
    const BITS: usize = u64::BITS as usize;
}

impl Classifier {
    /// The most rules a classifier holds, [`zoho`](Self::zoho)'s own included: each rule is one bit
    /// of the per-request mask that lets the response path skip host comparisons.
    pub const MAX_RULES: usize = RuleMask::BITS;

    /// No rules: nothing is a token error.
    #[must_use]
    pub fn empty() -> Self {
        Self::from_rules(Vec::new())
    }

    fn from_rules(rules: Vec<Rule>) -> Self {
        // `with_rule` refuses more; past this, `1 << i` would overflow the mask.
        debug_assert!(rules.len() <= Self::MAX_RULES);
        let mut by_status: Vec<(StatusCode, u64)> = Vec::new();
        let mut any_host = 0;
        let mut by_prefix = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for &status in &rule.statuses {
                match by_status.iter_mut().find(|(named, _)| *named == status) {
                    Some((_, mask)) => *mask |= 1 << i,
                    None => by_status.push((status, 1 << i)),
                }
            }
            match &rule.host_prefix {
                None => any_host |= 1 << i,
                Some(prefix) => by_prefix.push((prefix.clone(), 1 << i)),
            }
        }
        Self {
            rules: rules.into(),
            by_status: by_status.into(),
            any_host,
            by_prefix: by_prefix.into(),
        }
    }

    /// The dialects of Zoho's products (`zoho-wire.md` §7). Scope and org mismatches
    /// (`OAUTH_SCOPE_MISMATCH`, `SCOPE_MISMATCH`, `OAUTH_ORG_MISMATCH`, People 7218, WorkDrive
    /// F7004) are deliberately absent: a new token does not cure them.
    #[must_use]
    pub fn zoho() -> Self {
        let unauthorized = StatusCode::UNAUTHORIZED;
        Self::from_rules(vec![
            // CRM and Bigin. AUTHENTICATION_FAILURE means "no token" when none was sent, but the
            // layer only classifies requests that carried one, where it means a bad token.
            Rule::json(unauthorized, "/code", "INVALID_TOKEN"),
            Rule::json(unauthorized, "/code", "AUTHENTICATION_FAILURE"),
            // Desk.
            Rule::json(unauthorized, "/errorCode", "INVALID_OAUTH"),
            // Books, Invoice, Inventory (also used for missing scopes: the layer refreshes at
            // most once per request, and stops trusting the code when a refresh did not help).
            Rule::json(unauthorized, "/code", "57"),
            // Mail.
            Rule::json(unauthorized, "/data/errorCode", "INVALID_OAUTHTOKEN"),
            // Projects V3.
            Rule::json(unauthorized, "/error/title", "INVALID_OAUTHTOKEN"),
            // Accounts `/oauth/user/info`.
            Rule::json(unauthorized, "/cause", "INVALID_OAUTHTOKEN"),
            // People, whose errors can also arrive inside a 2xx on its own hosts.
            Rule::json(unauthorized, "/response/errors/code", "7213"),
            Rule::json(StatusCode::OK, "/response/errors/code", "7213").for_host_prefix("people."),
            // WorkDrive: 401 on some endpoints, 500 on others.
            Rule::json(unauthorized, "/errors/0/id", "F7003")
                .or_status(StatusCode::INTERNAL_SERVER_ERROR),
        ])
    }

    /// Adds a rule, after the existing ones.
    ///
    /// # Errors
    ///
    /// An [`Error::is_config`] error when the classifier already holds
    /// [`MAX_RULES`](Self::MAX_RULES) rules ([`zoho`](Self::zoho) uses 10 of them).
    pub fn with_rule(self, rule: Rule) -> Result<Self, Error> {
        if self.rules.len() >= Self::MAX_RULES {
            return Err(Error::config(format!(
                "a Classifier holds at most {} rules",
                Self::MAX_RULES
            )));
        }
        let mut rules = self.rules.to_vec();
        rules.push(rule);
        Ok(Self::from_rules(rules))
    }

    /// Whether a response with this status and body, to a request for `host`, says the token it
    /// carried is dead. Never panics, whatever the body.
    pub fn is_token_error(&self, status: StatusCode, host: Option<&str>, body: &[u8]) -> bool {
        self.matches(self.mask_for(host), status, body)
    }

    /// The rules for a request to `host` (`None`: no host, so only the rules for every host).
    pub(crate) fn mask_for(&self, host: Option<&str>) -> RuleMask {
        RuleMask(
            self.by_prefix
                .iter()
                .filter(|(prefix, _)| {
                    host.and_then(|host| host.get(..prefix.len()))
                        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
                })
                .fold(self.any_host, |mask, (_, bit)| mask | bit),
        )
    }

    /// Whether some rule for this host looks at responses with `status`: the response path's
    /// cheap test before reading any body.
    pub(crate) fn inspects(&self, mask: RuleMask, status: StatusCode) -> bool {
        self.by_status
            .iter()
            .any(|&(named, rules)| named == status && rules & mask.0 != 0)
    }

    pub(crate) fn matches(&self, mask: RuleMask, status: StatusCode, body: &[u8]) -> bool {
        let mut json = None;
        self.applicable(mask)
            .any(|rule| rule.matches(status, body, &mut json))
    }

    fn applicable(&self, mask: RuleMask) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(i, _)| mask.0 & (1 << i) != 0)
            .map(|(_, rule)| rule)
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::zoho()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

    fn dead(status: StatusCode, host: &str, body: &str) -> bool {
        Classifier::zoho().is_token_error(status, Some(host), body.as_bytes())
    }

    #[test]
    fn every_products_dead_token_dialect() {
        let cases = [
            (
                UNAUTHORIZED,
                "www.zohoapis.com",
                r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#,
            ),
            (
                UNAUTHORIZED,
                "www.zohoapis.com",
                r#"{"code":"AUTHENTICATION_FAILURE","details":{},"message":"Authentication failed","status":"error"}"#,
            ),
            (
                UNAUTHORIZED,
                "desk.zoho.com",
                r#"{"errorCode":"INVALID_OAUTH","message":"The OAuth Token you provided is invalid."}"#,
            ),
            (
                UNAUTHORIZED,
                "www.zohoapis.com",
                r#"{"code":57,"message":"You are not authorized to perform this operation"}"#,
            ),
            (
                UNAUTHORIZED,
                "mail.zoho.com",
                r#"{"data":{"errorCode":"INVALID_OAUTHTOKEN"},"status":{"code":401,"description":"Invalid Access"}}"#,
            ),
            (
                UNAUTHORIZED,
                "projectsapi.zoho.com",
                r#"{"error":{"status_code":"401","title":"INVALID_OAUTHTOKEN"}}"#,
            ),
            (
                UNAUTHORIZED,
                "accounts.zoho.com",
                r#"{"response":"error","cause":"INVALID_OAUTHTOKEN"}"#,
            ),
            (
                UNAUTHORIZED,
                "people.zoho.com",
                r#"{"response":{"errors":{"code":7213,"message":"Invalid OAuthtoken"},"status":1}}"#,
            ),
            (
                StatusCode::OK,
                "people.zoho.com",
                r#"{"response":{"errors":{"code":7213,"message":"Invalid OAuthtoken"},"status":1}}"#,
            ),
            (
                UNAUTHORIZED,
                "www.zohoapis.com",
                r#"{"errors":[{"id":"F7003","title":"Invalid OAuth token."}]}"#,
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "www.zohoapis.com",
                r#"{"errors":[{"id":"F7003","title":"Invalid OAuth token."}]}"#,
            ),
        ];
        for (status, host, body) in cases {
            assert!(dead(status, host, body), "{status} {host} {body}");
        }
    }

    #[test]
    fn scope_org_and_unrelated_errors_are_not_token_errors() {
        let cases = [
            (
                UNAUTHORIZED,
                r#"{"code":"OAUTH_SCOPE_MISMATCH","details":{},"message":"invalid oauth scope","status":"error"}"#,
            ),
            (UNAUTHORIZED, r#"{"errorCode":"SCOPE_MISMATCH"}"#),
            (UNAUTHORIZED, r#"{"errorCode":"OAUTH_ORG_MISMATCH"}"#),
            (
                UNAUTHORIZED,
                r#"{"response":{"errors":{"code":7218},"status":1}}"#,
            ),
            (
                UNAUTHORIZED,
                r#"{"errors":[{"id":"F7004","title":"Invalid OAuth scope."}]}"#,
            ),
            (StatusCode::FORBIDDEN, r#"{"code":"INVALID_TOKEN"}"#),
            (StatusCode::OK, r#"{"code":"INVALID_TOKEN"}"#),
            (UNAUTHORIZED, "<html>401</html>"),
            (UNAUTHORIZED, ""),
        ];
        for (status, body) in cases {
            assert!(!dead(status, "www.zohoapis.com", body), "{status} {body}");
        }
        // People's 2xx rule is confined to People's hosts.
        let people = r#"{"response":{"errors":{"code":7213},"status":1}}"#;
        assert!(!dead(StatusCode::OK, "www.zohoapis.com", people));
    }

    #[test]
    fn masks_skip_host_restricted_rules() {
        let classifier = Classifier::zoho();
        let crm = classifier.mask_for(Some("www.zohoapis.com"));
        let people = classifier.mask_for(Some("People.zoho.com"));
        assert!(!classifier.inspects(crm, StatusCode::OK));
        assert!(classifier.inspects(people, StatusCode::OK));
        assert!(classifier.inspects(crm, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!classifier.inspects(crm, StatusCode::NOT_FOUND));
    }

    #[test]
    fn the_rule_limit_is_the_mask_width_and_every_rule_up_to_it_is_consulted() {
        let forbidden = StatusCode::FORBIDDEN;
        let body = |i: usize| format!(r#"{{"rule":"{i}"}}"#);
        let last = Classifier::MAX_RULES - 1;
        let mut classifier = Classifier::zoho();
        let first_added = classifier.rules.len();
        for i in first_added..=last {
            let rule = Rule::json(forbidden, "/rule", i.to_string());
            // The last one is host-restricted, so its bit also goes through the prefix masks.
            let rule = if i == last {
                rule.for_host_prefix("gateway.")
            } else {
                rule
            };
            classifier = classifier.with_rule(rule).unwrap();
        }
        let refused = classifier
            .clone()
            .with_rule(Rule::json(forbidden, "/rule", "one too many"))
            .unwrap_err();
        assert!(refused.is_config(), "{refused:?}");
        assert!(
            refused.to_string().contains("at most 64 rules"),
            "{refused}"
        );

        let crm = Some("www.zohoapis.com");
        for i in first_added..last {
            assert!(
                classifier.is_token_error(forbidden, crm, body(i).as_bytes()),
                "rule {i}"
            );
        }
        assert!(classifier.is_token_error(
            forbidden,
            Some("gateway.example.com"),
            body(last).as_bytes()
        ));
        assert!(!classifier.is_token_error(forbidden, crm, body(last).as_bytes()));
        assert!(classifier.is_token_error(UNAUTHORIZED, crm, br#"{"code":"INVALID_TOKEN"}"#));
    }

    #[test]
    fn custom_rules_are_consulted() {
        let classifier = Classifier::empty()
            .with_rule(Rule::custom(StatusCode::FORBIDDEN, |_, body| {
                body == b"expired"
            }))
            .unwrap();
        assert!(classifier.is_token_error(StatusCode::FORBIDDEN, None, b"expired"));
        assert!(!classifier.is_token_error(StatusCode::FORBIDDEN, None, b"other"));
        assert!(!Classifier::empty().is_token_error(
            UNAUTHORIZED,
            None,
            br#"{"code":"INVALID_TOKEN"}"#
        ));
    }
}
