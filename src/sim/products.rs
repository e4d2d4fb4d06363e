//! The product APIs and `/oauth/user/info` (zoho-wire.md §7). Each product says "dead token",
//! "no token" and "wrong scope" in its own dialect; requests that get through are echoed.

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::state::Verdict;
use super::{body_sha, delay, json, Answer, Shared};

const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

/// A product's answers for a dead token, a missing token and a scope mismatch.
struct Answers {
    dead: (StatusCode, &'static str),
    no_token: (StatusCode, &'static str),
    scope: (StatusCode, &'static str),
}

/// CRM and Bigin, on `www.zohoapis.<tld>`; also the answer on unknown paths.
const ZOHOAPIS: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#,
    ),
    no_token: (
        UNAUTHORIZED,
        r#"{"code":"AUTHENTICATION_FAILURE","details":{},"message":"Authentication failed","status":"error"}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"code":"OAUTH_SCOPE_MISMATCH","details":{},"message":"invalid oauth scope to access this URL","status":"error"}"#,
    ),
};

const DESK: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"errorCode":"INVALID_OAUTH","message":"The OAuth Token you provided is invalid."}"#,
    ),
    no_token: (
        UNAUTHORIZED,
        r#"{"errorCode":"UNAUTHORIZED","message":"You are not authenticated to perform this operation."}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"errorCode":"SCOPE_MISMATCH","message":"The OAuth scope of the token does not permit this operation."}"#,
    ),
};

/// Books, Invoice and Inventory say code 57 for a dead token and for a missing scope alike:
/// Zoho is ambiguous there.
const CODE_57: (StatusCode, &str) = (
    UNAUTHORIZED,
    r#"{"code":57,"message":"You are not authorized to perform this operation"}"#,
);

const FINANCE: Answers = Answers {
    dead: CODE_57,
    no_token: (
        UNAUTHORIZED,
        r#"{"code":14,"message":"Invalid value passed for authtoken."}"#,
    ),
    scope: CODE_57,
};

const MAIL: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"data":{"errorCode":"INVALID_OAUTHTOKEN"},"status":{"code":401,"description":"Invalid Access"}}"#,
    ),
    no_token: (
        StatusCode::BAD_REQUEST,
        r#"{"data":{"errorCode":"INVALID_TICKET"},"status":{"code":400,"description":"Invalid Input"}}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"data":{"errorCode":"INVALID_OAUTHSCOPE"},"status":{"code":401,"description":"Invalid Access"}}"#,
    ),
};

const PROJECTS: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"error":{"status_code":"401","title":"INVALID_OAUTHTOKEN","details":[]}}"#,
    ),
    no_token: (
        UNAUTHORIZED,
        r#"{"error":{"status_code":"401","title":"INVALID_TICKET","details":[]}}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"error":{"status_code":"401","title":"INVALID_OAUTHSCOPE","details":[]}}"#,
    ),
};

const PEOPLE: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"response":{"errors":{"code":7213,"message":"Invalid OAuthtoken"},"status":1,"message":"Error occurred"}}"#,
    ),
    no_token: (
        StatusCode::BAD_REQUEST,
        r#"{"response":{"errors":{"code":7202,"message":"Invalid ticket"},"status":1,"message":"Error occurred"}}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"response":{"errors":{"code":7218,"message":"Invalid OAuthScope"},"status":1,"message":"Error occurred"}}"#,
    ),
};

/// The dead-token status is 401 only on file endpoints; see [`Dialect::dead`].
const WORKDRIVE: Answers = Answers {
    dead: (
        UNAUTHORIZED,
        r#"{"errors":[{"id":"F7003","title":"Invalid OAuth token."}]}"#,
    ),
    no_token: (
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"errors":[{"id":"INVALID_TICKET","title":"Invalid ticket"}]}"#,
    ),
    scope: (
        UNAUTHORIZED,
        r#"{"errors":[{"id":"F7004","title":"Invalid OAuth scope."}]}"#,
    ),
};

const ACCOUNTS_DEAD: (StatusCode, &str) = (
    UNAUTHORIZED,
    r#"{"response":"error","cause":"INVALID_OAUTHTOKEN"}"#,
);

/// `/oauth/user/info`. The no-token answer is unconfirmed; it reuses the dead-token one.
const ACCOUNTS: Answers = Answers {
    dead: ACCOUNTS_DEAD,
    no_token: ACCOUNTS_DEAD,
    scope: (
        UNAUTHORIZED,
        r#"{"response":"error","cause":"INVALID_OAUTHSCOPE"}"#,
    ),
};

const USER_INFO: &str = r#"{"First_Name":"Simulated","Last_Name":"User","Display_Name":"Simulated User","Email":"user@example.com","ZUID":700000001}"#;
const CRM_USERS: &str = r#"{"users":[{"id":"5725767000000411001","full_name":"Simulated User","email":"user@example.com"}]}"#;
const NOT_FOUND: &str = r#"{"code":"INVALID_URL_PATTERN","details":{},"message":"Please check if the URL trying to access is a correct one","status":"error"}"#;

/// What a request with a working token gets.
enum Success {
    /// The echo of the request.
    Echo,
    /// The echo, except that `GET .../users` answers the current user.
    Crm,
    UserInfo,
    NotFound,
}

struct Dialect {
    product: &'static str,
    prefix: &'static str,
    /// A token passes when one of its scopes starts with this, ignoring case; `None`: any token.
    service: Option<&'static str>,
    answers: &'static Answers,
    success: Success,
}

const fn product(
    product: &'static str,
    prefix: &'static str,
    service: &'static str,
    answers: &'static Answers,
) -> Dialect {
    Dialect {
        product,
        prefix,
        service: Some(service),
        answers,
        success: Success::Echo,
    }
}

const DIALECTS: &[Dialect] = &[
    Dialect {
        success: Success::Crm,
        ..product("crm", "/crm/", "ZohoCRM.", &ZOHOAPIS)
    },
    product("bigin", "/bigin/", "ZohoBigin.", &ZOHOAPIS),
    product("desk", "/desk/", "Desk.", &DESK),
    product("books", "/books/", "ZohoBooks.", &FINANCE),
    product("invoice", "/invoice/", "ZohoInvoice.", &FINANCE),
    product("inventory", "/inventory/", "ZohoInventory.", &FINANCE),
    product("mail", "/mail/", "ZohoMail.", &MAIL),
    product("projects", "/projects/", "ZohoProjects.", &PROJECTS),
    product("people", "/people/", "ZOHOPEOPLE.", &PEOPLE),
    product("workdrive", "/workdrive/", "WorkDrive.", &WORKDRIVE),
    Dialect {
        product: "accounts",
        prefix: "/oauth/user/info",
        service: None,
        answers: &ACCOUNTS,
        success: Success::UserInfo,
    },
];

/// Any other path: checks the token as `www.zohoapis.<tld>` does, then answers 404.
const UNKNOWN: Dialect = Dialect {
    product: "unknown",
    prefix: "/",
    service: None,
    answers: &ZOHOAPIS,
    success: Success::NotFound,
};

impl Dialect {
    fn allows(&self, scopes: &[String]) -> bool {
        self.service.is_none_or(|service| {
            scopes.iter().any(|scope| {
                scope
                    .as_bytes()
                    .get(..service.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(service.as_bytes()))
            })
        })
    }

    fn dead(&self, path: &str) -> (StatusCode, &'static str) {
        let (status, body) = self.answers.dead;
        // WorkDrive says 401 on file endpoints and 500 everywhere else.
        if self.product == "workdrive" && !path.contains("/files") {
            (StatusCode::INTERNAL_SERVER_ERROR, body)
        } else {
            (status, body)
        }
    }

    fn success(&self, parts: &Parts, body: &Bytes) -> Response<Full<Bytes>> {
        let path = parts.uri.path();
        match self.success {
            Success::NotFound => json(StatusCode::NOT_FOUND, NOT_FOUND),
            Success::UserInfo => json(StatusCode::OK, USER_INFO),
            Success::Crm if parts.method == Method::GET && path.ends_with("/users") => {
                json(StatusCode::OK, CRM_USERS)
            }
            Success::Crm | Success::Echo => {
                let echo = json!({
                    "product": self.product,
                    "method": parts.method.as_str(),
                    "path": path,
                    "body_bytes": body.len(),
                    "body_sha": body_sha(body),
                });
                json(StatusCode::OK, echo.to_string())
            }
        }
    }
}

/// Every path that is not the token endpoint, at data centre `dc`.
pub(super) async fn api(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let latency = {
        let mut state = shared.lock();
        state.counters(dc).api_requests += 1;
        state.config.api_latency
    };
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    delay(latency).await;

    let path = parts.uri.path();
    let dialect = DIALECTS
        .iter()
        .find(|dialect| path.starts_with(dialect.prefix))
        .unwrap_or(&UNKNOWN);
    let verdict = shared
        .lock()
        .authenticate(dc, presented_token(&parts.headers), |scopes| {
            dialect.allows(scopes)
        });

    let (status, body) = match verdict {
        Verdict::Pass => return Ok(dialect.success(&parts, &body)),
        Verdict::NoToken => dialect.answers.no_token,
        Verdict::Dead => dialect.dead(path),
        Verdict::Scope => dialect.answers.scope,
    };
    Ok(json(status, body))
}

/// The token from `Authorization: Zoho-oauthtoken <token>` (or `Bearer <token>`).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers.get(AUTHORIZATION)?.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    let known =
        scheme.eq_ignore_ascii_case("Zoho-oauthtoken") || scheme.eq_ignore_ascii_case("Bearer");
    (known && !token.is_empty()).then_some(token)
}
