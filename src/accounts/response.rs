//! Reading the token endpoint's answers.
//!
//! Zoho reports errors with HTTP 200 and a JSON `error` field, throttles with a localized message
//! at 200 or 400, and has used two units for `expires_in` (`zoho-wire.md` §1, §2). So an answer is
//! a success only when it carries an `access_token`, whatever the status says.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::error::{Error, Kind};
use crate::secret::{AccessToken, RefreshToken};

/// Zoho's documented lifetime of an access token, used when an answer states none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// No access token lives longer than a day; a larger `expires_in` without `expires_in_sec` is the
/// legacy millisecond form, never a 41-day token.
const MAX_SECONDS: u64 = 86_400;

/// Longest error text from Zoho kept in an [`Error`]'s message.
const MAX_DESCRIPTION: usize = 200;

/// Error codes with a documented meaning; anything else with `"status":"failure"` is throttling.
const KNOWN_CODES: &[&str] = &[
    "invalid_client",
    "invalid_client_secret",
    "invalid_code",
    "invalid_redirect_uri",
    "invalid_scope",
    "invalid_token",
    "invalid_request",
    "unsupported_grant_type",
    "missing_org_info",
    "access_denied",
];

/// A successful answer from Zoho's token endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: AccessToken,
    /// A refresh token: present for authorization-code grants with `access_type=offline`, absent
    /// on refresh (keep the one you have).
    pub refresh_token: Option<RefreshToken>,
    /// How long the access token lives, in seconds whatever unit Zoho used.
    pub expires_in: Duration,
    /// Where the user's data lives, e.g. `https://www.zohoapis.eu`.
    pub api_domain: Option<String>,
    /// The granted scopes (Zoho answers space-separated).
    pub scopes: Vec<String>,
    /// The token type Zoho reports (`Bearer`); requests still use the `Zoho-oauthtoken` scheme.
    pub token_type: Option<String>,
}

impl TokenResponse {
    /// Interprets one answer of `POST /oauth/v2/token`. Never panics, whatever the input.
    ///
    /// ```
    /// use http::StatusCode;
    /// use zoho_auth::accounts::TokenResponse;
    ///
    /// let ok = TokenResponse::from_http(
    ///     StatusCode::OK,
    ///     br#"{"access_token":"1000.a.b","api_domain":"https://www.zohoapis.eu","expires_in":3600,"scope":"ZohoCRM.modules.ALL ZohoCRM.users.READ"}"#,
    /// )
    /// .unwrap();
    /// assert_eq!(ok.expires_in.as_secs(), 3600);
    /// assert_eq!(ok.scopes, ["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"]);
    ///
    /// let err = TokenResponse::from_http(StatusCode::OK, br#"{"error":"invalid_code"}"#).unwrap_err();
    /// assert!(err.is_invalid_grant() && err.is_permanent());
    /// ```
    pub fn from_http(status: StatusCode, body: &[u8]) -> Result<Self, Error> {
        let object = json_object(status, body)?;
        if let Some(token) = non_empty_str(&object, "access_token") {
            return Ok(Self {
                access_token: AccessToken::new(token),
                refresh_token: non_empty_str(&object, "refresh_token").map(RefreshToken::new),
                expires_in: lifetime(&object).map_err(|e| e.with_status(status))?,
                api_domain: non_empty_str(&object, "api_domain").map(str::to_owned),
                scopes: non_empty_str(&object, "scope")
                    .map(|s| {
                        s.split([' ', ','])
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                token_type: non_empty_str(&object, "token_type").map(str::to_owned),
            });
        }
        Err(error_from(status, &object))
    }
}

/// Interprets the answer of `POST /oauth/v2/token/revoke`: `{"status":"success"}` or an error.
pub(crate) fn revoke_from_http(status: StatusCode, body: &[u8]) -> Result<(), Error> {
    let object = json_object(status, body)?;
    if status.is_success() && object.get("status").and_then(Value::as_str) == Some("success") {
        return Ok(());
    }
    Err(error_from(status, &object))
}

/// The body as a JSON object, or the transient error that a proxy page, an empty body, a 5xx or
/// broken JSON is.
fn json_object(status: StatusCode, body: &[u8]) -> Result<Map<String, Value>, Error> {
    let transient = |what: &str| {
        Error::transient(format!(
            "Zoho's accounts server answered HTTP {status} with {what}"
        ))
        .with_status(status)
    };
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(transient("an empty body"));
    }
    let parsed = serde_json::from_slice::<Value>(text);
    if status.is_server_error() {
        return Err(transient("a server error"));
    }
    match parsed {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(transient("JSON that is not an object")),
        Err(_) if text.starts_with(b"<") => Err(transient("an HTML page instead of JSON")),
        Err(e) if e.is_eof() => Err(transient("truncated JSON")),
        Err(_) => Err(transient("a body that is not JSON")),
    }
}

fn non_empty_str<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A number, or a string holding one (some proxies stringify numbers).
fn number(object: &Map<String, Value>, key: &str) -> Option<f64> {
    match object.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The SDKs' rule: with `expires_in_sec` present, `expires_in` is milliseconds; otherwise it is
/// seconds — unless it only makes sense as milliseconds.
fn lifetime(object: &Map<String, Value>) -> Result<Duration, Error> {
    let seconds = match (
        number(object, "expires_in_sec"),
        number(object, "expires_in"),
    ) {
        (Some(seconds), _) => seconds,
        (None, Some(value)) if value > MAX_SECONDS as f64 => value / 1000.0,
        (None, Some(seconds)) => seconds,
        (None, None) => return Ok(DEFAULT_LIFETIME),
    };
    if !seconds.is_finite() || seconds < 1.0 {
        return Err(Error::transient(
            "Zoho's token answer has an unusable expires_in",
        ));
    }
    Ok(Duration::from_secs(seconds.min(MAX_SECONDS as f64) as u64))
}

fn error_from(status: StatusCode, object: &Map<String, Value>) -> Error {
    let Some(code) = non_empty_str(object, "error") else {
        return Error::transient(format!(
            "Zoho's accounts server answered HTTP {status} with neither an access token nor an error"
        ))
        .with_status(status);
    };
    let description = non_empty_str(object, "error_description")
        .map(|d| format!(": {}", truncate(d, MAX_DESCRIPTION)))
        .unwrap_or_default();
    let known = KNOWN_CODES.contains(&code);
    let failure = object.get("status").and_then(Value::as_str) == Some("failure");
    let (kind, message) = match code {
        "invalid_client" => (
            Kind::InvalidClient,
            "Zoho does not know this client id here (invalid_client): check the client id, and that the \
             account lives in this data centre or the client has multi-DC enabled"
                .to_owned(),
        ),
        "invalid_client_secret" => (
            Kind::InvalidClientSecret,
            "Zoho rejected the client secret (invalid_client_secret): multi-DC clients may have a different \
             secret per data centre"
                .to_owned(),
        ),
        "invalid_code" => (
            Kind::InvalidGrant,
            "Zoho rejected the grant (invalid_code): a grant code that expired or was already used, or a \
             refresh token that is wrong or revoked; the user must consent again"
                .to_owned(),
        ),
        _ if known => (Kind::Rejected, format!("Zoho rejected the token request ({code}){description}")),
        _ if failure => (
            Kind::Throttled,
            format!("Zoho is throttling token requests for this client{description}"),
        ),
        _ => (Kind::Unrecognised, format!("Zoho answered with an unrecognised error ({code}){description}")),
    };
    Error::new(kind, message)
        .with_code(code)
        .with_status(status)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(status: u16, body: &str) -> Result<TokenResponse, Error> {
        TokenResponse::from_http(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn legacy_milliseconds_never_become_a_41_day_token() {
        let legacy = parse(
            200,
            r#"{"access_token":"a","expires_in_sec":3600,"expires_in":3600000}"#,
        )
        .unwrap();
        assert_eq!(legacy.expires_in, Duration::from_secs(3600));
        let bare_ms = parse(200, r#"{"access_token":"a","expires_in":3600000}"#).unwrap();
        assert_eq!(bare_ms.expires_in, Duration::from_secs(3600));
        let seconds = parse(200, r#"{"access_token":"a","expires_in":"1800"}"#).unwrap();
        assert_eq!(seconds.expires_in, Duration::from_secs(1800));
        assert!(parse(200, r#"{"access_token":"a","expires_in":0}"#)
            .unwrap_err()
            .is_transient());
    }

    #[test]
    fn refresh_answer_without_refresh_token_and_space_separated_scope() {
        let ok = parse(
            200,
            r#"{"access_token":"1000.x","api_domain":"https://www.zohoapis.com","token_type":"Bearer","expires_in":3600,"scope":"A.b C.d"}"#,
        )
        .unwrap();
        assert!(ok.refresh_token.is_none());
        assert_eq!(ok.scopes, ["A.b", "C.d"]);
        assert_eq!(ok.api_domain.as_deref(), Some("https://www.zohoapis.com"));
    }

    #[test]
    fn errors_at_200_are_errors() {
        let e = parse(200, r#"{"error":"invalid_client"}"#).unwrap_err();
        assert!(e.is_invalid_client() && e.is_permanent());
        assert_eq!(e.zoho_code(), Some("invalid_client"));
        assert!(parse(200, r#"{"error":"invalid_client_secret"}"#)
            .unwrap_err()
            .is_invalid_client());
        assert!(parse(200, r#"{"error":"missing_org_info"}"#)
            .unwrap_err()
            .is_permanent());
        let unknown = parse(200, r#"{"error":"brand_new_code"}"#).unwrap_err();
        assert!(!unknown.is_permanent() && !unknown.is_transient() && !unknown.is_rate_limited());
    }

    #[test]
    fn throttling_is_recognised_by_shape_in_any_language() {
        for status in [200, 400] {
            let en = parse(status, r#"{"error_description":"You have made too many requests continuously. Please try again after some time.","error":"Access Denied","status":"failure"}"#).unwrap_err();
            assert!(en.is_throttled(), "{status}");
            let zh = parse(status, r#"{"error_description":"您已连续提出过多请求，请稍后再试。","error":"拒绝访问","status":"failure"}"#).unwrap_err();
            assert!(zh.is_throttled(), "{status}");
            assert_eq!(zh.zoho_code(), Some("拒绝访问"));
        }
    }

    #[test]
    fn junk_is_transient() {
        for (status, body) in [
            (200, ""),
            (200, "<html><body>Bad gateway</body></html>"),
            (200, r#"{"access_token":"1000.x","expires_in":36"#),
            (200, "[1,2]"),
            (502, r#"{"error":"invalid_client"}"#),
            (200, r#"{"status":"success"}"#),
        ] {
            assert!(
                parse(status, body).unwrap_err().is_transient(),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn revoke_needs_status_success() {
        assert!(revoke_from_http(StatusCode::OK, br#"{"status":"success"}"#).is_ok());
        assert!(revoke_from_http(
            StatusCode::OK,
            br#"{"status":"failure","error":"invalid_token"}"#
        )
        .is_err());
        assert!(revoke_from_http(StatusCode::OK, b"<html>")
            .unwrap_err()
            .is_transient());
    }
}
