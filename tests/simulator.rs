//! The simulator behaves as zoho-wire.md says Zoho does.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use zoho_auth::sim::{self, Fault, Language, Simulator};
use zoho_auth::RefreshToken;

use common::{fast_forward, Reply, Zoho};

const JSON: &str = "application/json;charset=UTF-8";

impl Reply {
    /// Asserts Zoho's accounts-server error shape: HTTP 200, `Server: ZGS`, `{"error":code}`.
    fn assert_error(&self, code: &str) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.content_type, JSON, "{self:?}");
        assert_eq!(self.server.as_deref(), Some("ZGS"), "{self:?}");
        assert_eq!(self.json(), json!({ "error": code }), "{self:?}");
    }

    /// Asserts a token success and returns its access token.
    fn access_token(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        let token = self.json()["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {self:?}"))
            .to_owned();
        assert_zoho_token(&token);
        token
    }

    fn assert_throttled(&self, status: StatusCode, language: Language) {
        let (description, error) = match language {
            Language::English => (
                "You have made too many requests continuously. Please try again after some time.",
                "Access Denied",
            ),
            _ => ("您已连续提出过多请求，请稍后再试。", "拒绝访问"),
        };
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.json(),
            json!({"error_description": description, "error": error, "status": "failure"})
        );
    }
}

/// `1000.<32 hex>.<32 hex>`.
fn assert_zoho_token(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert_eq!(parts[0], "1000", "{token}");
    for part in &parts[1..] {
        assert_eq!(part.len(), 32, "{token}");
        assert!(part.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    }
}

impl Zoho {
    async fn refresh(&self, refresh: &RefreshToken) -> Reply {
        let params = self.params(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ]);
        self.token(&params).await
    }

    async fn access(&self, refresh: &RefreshToken) -> String {
        self.refresh(refresh).await.access_token()
    }

    async fn exchange(&self, code: &str, redirect_uri: Option<&str>) -> Reply {
        let mut extra = vec![("grant_type", "authorization_code"), ("code", code)];
        extra.extend(redirect_uri.map(|uri| ("redirect_uri", uri)));
        self.token(&self.params(&extra)).await
    }

    async fn revoke(&self, token: &str) -> Reply {
        let response = self
            .http
            .post(self.url("/oauth/v2/token/revoke"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    /// A product API call with `Authorization: Zoho-oauthtoken <token>`.
    async fn api(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.header("authorization", format!("Zoho-oauthtoken {token}"));
        }
        Reply::read(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.api(Method::GET, path, token, "").await
    }
}

#[tokio::test]
async fn refresh_grant_via_urlencoded_body() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let reply = zoho.refresh(&refresh).await;

    assert_eq!(reply.content_type, JSON);
    assert_eq!(reply.server.as_deref(), Some("ZGS"));
    let access = reply.access_token();
    let body = reply.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("expires_in_sec").is_none(), "{body}");
    assert!(
        body.get("scope").is_none(),
        "a refresh answer names no scope: {body}"
    );
    assert_eq!(body["api_domain"], zoho.sim.url());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(zoho.sim.is_access_token_live(&access));
    assert_eq!(zoho.sim.live_tokens(&refresh), 1);
    let counters = zoho.sim.counters();
    assert_eq!(
        (
            counters.token_requests,
            counters.refresh_grants,
            counters.tokens_issued
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn parameters_in_the_query_string_are_accepted() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let params = zoho.params(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.expose()),
    ]);
    for method in [Method::POST, Method::GET] {
        let response = zoho
            .http
            .request(method, zoho.url("/oauth/v2/token"))
            .query(&params)
            .send()
            .await
            .unwrap();
        Reply::read(response).await.access_token();
    }
    assert_eq!(zoho.sim.live_tokens(&refresh), 2);
}

#[tokio::test]
async fn parameters_in_a_multipart_body_are_accepted() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let boundary = "----zoho-sim-test-boundary";
    let mut body = String::new();
    for (name, value) in zoho.params(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.expose()),
    ]) {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
        .unwrap();
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    let response = zoho
        .http
        .post(zoho.url("/oauth/v2/token"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let access = Reply::read(response).await.access_token();
    assert!(zoho.sim.is_access_token_live(&access));
}

#[tokio::test]
async fn errors_are_http_200_with_an_error_code() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let revoked = zoho.sim.mint_refresh_token(&[]);
    zoho.sim.revoke_refresh_token(&revoked);
    let secret = zoho.sim.client_secret();
    let good_refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.expose()),
    ];

    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (
            vec![
                ("client_id".into(), "1000.UNKNOWN".into()),
                ("client_secret".into(), secret.expose().into()),
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), refresh.expose().into()),
            ],
            "invalid_client",
        ),
        (
            vec![
                ("client_id".into(), zoho.sim.client_id().to_string()),
                ("client_secret".into(), "wrong".into()),
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), refresh.expose().into()),
            ],
            "invalid_client_secret",
        ),
        (
            zoho.params(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "1000.unknown.unknown"),
            ]),
            "invalid_code",
        ),
        (
            zoho.params(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", revoked.expose()),
            ]),
            "invalid_code",
        ),
        (
            zoho.params(&[("grant_type", "authorization_code"), ("code", "1000.x.y")]),
            "invalid_code",
        ),
        (
            zoho.params(&[("grant_type", "password")]),
            "unsupported_grant_type",
        ),
        (zoho.params(&good_refresh[1..]), "unsupported_grant_type"),
        (
            zoho.params(&[
                ("grant_type", "client_credentials"),
                ("scope", "ZohoCRM.modules.ALL"),
            ]),
            "missing_org_info",
        ),
        (
            zoho.params(&[
                ("grant_type", "client_credentials"),
                ("scope", "ZohoCRM.modules.ALL"),
                ("soid", "ZohoCRM"),
            ]),
            "missing_org_info",
        ),
        (
            zoho.params(&[
                ("grant_type", "client_credentials"),
                ("soid", "ZohoCRM.600123"),
            ]),
            "invalid_scope",
        ),
    ];
    for (params, code) in cases {
        zoho.token(&params).await.assert_error(code);
    }
    assert_eq!(zoho.sim.counters().tokens_issued, 0);
    // None of that hurt the good refresh token.
    zoho.token(&zoho.params(&good_refresh)).await.access_token();
}

#[tokio::test]
async fn offline_code_grant_returns_a_working_refresh_token() {
    let zoho = Zoho::start().await;
    let code = zoho.sim.issue_grant_code(
        &["ZohoCRM.modules.ALL", "ZohoCRM.users.READ"],
        true,
        Some("https://app.example.com/callback"),
    );
    let reply = zoho
        .exchange(code.expose(), Some("https://app.example.com/callback"))
        .await;
    let first = reply.access_token();
    let body = reply.json();
    assert_eq!(body["scope"], "ZohoCRM.modules.ALL ZohoCRM.users.READ");
    assert_eq!(body["expires_in"], 3600);
    let refresh = RefreshToken::new(body["refresh_token"].as_str().expect("refresh token"));
    assert_zoho_token(refresh.expose());

    let second = zoho.access(&refresh).await;
    assert_ne!(first, second);
    assert_eq!(zoho.sim.live_tokens(&refresh), 2);
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&second)).await.status, 200);
    let counters = zoho.sim.counters();
    assert_eq!((counters.code_grants, counters.refresh_grants), (1, 1));
}

#[tokio::test]
async fn online_code_grant_has_no_refresh_token() {
    let zoho = Zoho::start().await;
    let code = zoho
        .sim
        .issue_grant_code(&["Desk.tickets.ALL"], false, None);
    let reply = zoho.exchange(code.expose(), None).await;
    let access = reply.access_token();
    assert!(reply.json().get("refresh_token").is_none(), "{reply:?}");
    assert_eq!(
        zoho.get("/desk/api/v1/tickets", Some(&access)).await.status,
        200
    );
}

#[tokio::test]
async fn grant_code_is_single_use_and_bound_to_its_redirect_uri() {
    let zoho = Zoho::start().await;
    let code = zoho
        .sim
        .issue_grant_code(&[], true, Some("https://app.example.com/cb"));
    let code = code.expose();
    zoho.exchange(code, None)
        .await
        .assert_error("invalid_redirect_uri");
    zoho.exchange(code, Some("https://evil.example.com/cb"))
        .await
        .assert_error("invalid_redirect_uri");
    zoho.exchange(code, Some("https://app.example.com/cb"))
        .await
        .access_token();
    zoho.exchange(code, Some("https://app.example.com/cb"))
        .await
        .assert_error("invalid_code");
}

#[tokio::test]
async fn grant_code_expires() {
    let zoho = Zoho::with(Simulator::builder().grant_code_lifetime(Duration::from_secs(60))).await;
    let fresh = zoho.sim.issue_grant_code(&[], false, None);
    let stale = zoho.sim.issue_grant_code(&[], false, None);
    zoho.exchange(fresh.expose(), None).await.access_token();
    fast_forward(Duration::from_secs(61)).await;
    zoho.exchange(stale.expose(), None)
        .await
        .assert_error("invalid_code");
}

#[tokio::test]
async fn sim_grant_code_endpoint_mints_self_client_codes() {
    let zoho = Zoho::with(Simulator::builder().grant_code_lifetime(Duration::from_secs(60))).await;
    let get = |query: &'static str| {
        let url = zoho.url(&format!("/sim/grant-code{query}"));
        async { Reply::read(zoho.http.get(url).send().await.unwrap()).await }
    };

    // Scoped, offline, bound to no redirect URI: the exchange needs none and gets a refresh token.
    let reply = get("?scope=ZohoCRM.modules.ALL,ZohoCRM.users.READ").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");
    let code = reply.text.strip_suffix('\n').expect("a line");
    assert_zoho_token(code);
    let exchanged = zoho.exchange(code, None).await;
    exchanged.access_token();
    assert_eq!(
        exchanged.json()["scope"],
        "ZohoCRM.modules.ALL ZohoCRM.users.READ"
    );
    let refresh = RefreshToken::new(exchanged.json()["refresh_token"].as_str().unwrap());
    assert_eq!(zoho.sim.live_tokens(&refresh), 1);
    zoho.exchange(code, None).await.assert_error("invalid_code");

    // Without a scope: every simulated product's; each request a new code, which expires.
    let all = get("").await.text;
    let other = get("").await.text;
    assert_ne!(all, other);
    let scopes = zoho.exchange(all.trim(), None).await.json()["scope"].clone();
    assert_eq!(scopes, sim::DEFAULT_SCOPES.join(" "));
    fast_forward(Duration::from_secs(61)).await;
    zoho.exchange(other.trim(), None)
        .await
        .assert_error("invalid_code");

    let bad = get("?scope=ZohoCRM.modules.ALL%20ZohoCRM.users.READ").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
    assert!(bad.text.contains("Invalid OAuth Scope"), "{bad:?}");
}

#[tokio::test]
async fn sim_user_counters_endpoint_tells_what_one_user_did_at_any_data_centre() {
    let zoho = Zoho::with(Simulator::builder().data_centers(2)).await;
    let counters_at = |dc: usize, refresh_token: Option<&str>| {
        let url = format!(
            "{}/sim/user-counters",
            zoho.sim.data_center_url(dc).unwrap()
        );
        let form: Vec<_> = refresh_token
            .map(|token| ("refresh_token", token))
            .into_iter()
            .collect();
        let request = zoho.http.post(url).form(&form);
        async { Reply::read(request.send().await.unwrap()).await }
    };
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let access = zoho.refresh(&refresh).await.access_token();
    for _ in 0..2 {
        assert_eq!(zoho.get("/crm/v8/Leads", Some(&access)).await.status, 200);
    }

    // DC 1 answers for DC 0's user, with what `counters_for` tells in-process.
    let reply = counters_at(1, Some(refresh.expose())).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply.content_type.starts_with("application/json"),
        "{reply:?}"
    );
    let seen = zoho.sim.counters_for(&refresh).unwrap();
    assert_eq!((seen.tokens_issued, seen.api_ok), (1, 2));
    assert_eq!(
        reply.json(),
        json!({
            "refresh_grants": seen.refresh_grants,
            "wrong_dc_refresh_grants": seen.wrong_dc_refresh_grants,
            "tokens_issued": seen.tokens_issued,
            "api_requests": seen.api_requests,
            "api_ok": seen.api_ok,
            "wrong_dc_api_requests": seen.wrong_dc_api_requests,
        })
    );
    // The simulator's own route: no Zoho API request, no token request.
    assert_eq!(zoho.sim.counters().api_requests, 2);

    let unknown = counters_at(0, Some("1000.0000.0000")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    let missing = counters_at(0, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{missing:?}");
    assert!(missing.text.contains("refresh_token"), "{missing:?}");
}

#[tokio::test]
async fn client_credentials_grant() {
    let zoho = Zoho::start().await;
    let params = zoho.params(&[
        ("grant_type", "client_credentials"),
        ("soid", "ZohoCRM.600123456"),
        ("scope", "ZohoCRM.modules.ALL,ZohoCRM.users.READ"),
    ]);
    let reply = zoho.token(&params).await;
    let access = reply.access_token();
    let body = reply.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "ZohoCRM.modules.ALL ZohoCRM.users.READ");
    assert_eq!(body["api_domain"], zoho.sim.url());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&access)).await.status, 200);
    assert_eq!(
        zoho.get("/desk/api/v1/tickets", Some(&access)).await.json()["errorCode"],
        "SCOPE_MISMATCH"
    );
    assert_eq!(zoho.sim.counters().client_credentials_grants, 1);
}

#[tokio::test]
async fn throttles_after_ten_tokens_in_the_window() {
    for (status, language) in [
        (StatusCode::OK, Language::English),
        (StatusCode::OK, Language::Chinese),
        (StatusCode::BAD_REQUEST, Language::English),
        (StatusCode::BAD_REQUEST, Language::Chinese),
    ] {
        let zoho = Zoho::with(
            Simulator::builder()
                .throttle_status(status)
                .throttle_language(language),
        )
        .await;
        let refresh = zoho.sim.mint_refresh_token(&[]);
        for _ in 0..10 {
            zoho.access(&refresh).await;
        }
        zoho.refresh(&refresh)
            .await
            .assert_throttled(status, language);
        // The limit is per refresh token.
        zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
        let counters = zoho.sim.counters();
        assert_eq!((counters.throttled, counters.tokens_issued), (1, 11));
        assert_eq!(zoho.sim.live_tokens(&refresh), 10);
    }
}

#[tokio::test]
async fn rate_limit_window_slides() {
    let zoho = Zoho::with(Simulator::builder().rate_limit(2, Duration::from_secs(60))).await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    zoho.access(&refresh).await;
    zoho.access(&refresh).await;
    zoho.refresh(&refresh)
        .await
        .assert_throttled(StatusCode::OK, Language::English);
    fast_forward(Duration::from_secs(61)).await;
    zoho.access(&refresh).await;
}

#[tokio::test]
async fn sixteenth_token_evicts_the_oldest() {
    let zoho = Zoho::with(Simulator::builder().rate_limit(100, Duration::from_secs(600))).await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let mut tokens = Vec::new();
    for _ in 0..15 {
        tokens.push(zoho.access(&refresh).await);
    }
    assert_eq!(zoho.sim.live_tokens(&refresh), 15);
    assert_eq!(
        zoho.get("/crm/v8/Leads", Some(&tokens[0])).await.status,
        200
    );

    tokens.push(zoho.access(&refresh).await);
    assert_eq!(zoho.sim.live_tokens(&refresh), 15);
    assert!(!zoho.sim.is_access_token_live(&tokens[0]));
    let reply = zoho.get("/crm/v8/Leads", Some(&tokens[0])).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["code"], "INVALID_TOKEN");
    for token in &tokens[1..] {
        assert_eq!(zoho.get("/crm/v8/Leads", Some(token)).await.status, 200);
    }
}

/// One product's expected answers: (path, dead, no token, scope mismatch), each (status, body).
type Dialect = (
    &'static str,
    (u16, &'static str),
    (u16, &'static str),
    (u16, &'static str),
);

#[tokio::test]
async fn each_product_speaks_its_own_dialect() {
    let crm_dead =
        r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#;
    let crm_none = r#"{"code":"AUTHENTICATION_FAILURE","details":{},"message":"Authentication failed","status":"error"}"#;
    let crm_scope = r#"{"code":"OAUTH_SCOPE_MISMATCH","details":{},"message":"invalid oauth scope to access this URL","status":"error"}"#;
    let books_dead = r#"{"code":57,"message":"You are not authorized to perform this operation"}"#;
    let books_none = r#"{"code":14,"message":"Invalid value passed for authtoken."}"#;
    let workdrive_dead = r#"{"errors":[{"id":"F7003","title":"Invalid OAuth token."}]}"#;
    let workdrive_none = r#"{"errors":[{"id":"INVALID_TICKET","title":"Invalid ticket"}]}"#;
    let workdrive_scope = r#"{"errors":[{"id":"F7004","title":"Invalid OAuth scope."}]}"#;
    let dialects: &[Dialect] = &[
        (
            "/crm/v8/Leads",
            (401, crm_dead),
            (401, crm_none),
            (401, crm_scope),
        ),
        (
            "/bigin/v2/Contacts",
            (401, crm_dead),
            (401, crm_none),
            (401, crm_scope),
        ),
        (
            "/desk/api/v1/tickets",
            (
                401,
                r#"{"errorCode":"INVALID_OAUTH","message":"The OAuth Token you provided is invalid."}"#,
            ),
            (
                401,
                r#"{"errorCode":"UNAUTHORIZED","message":"You are not authenticated to perform this operation."}"#,
            ),
            (
                401,
                r#"{"errorCode":"SCOPE_MISMATCH","message":"The OAuth scope of the token does not permit this operation."}"#,
            ),
        ),
        (
            "/books/v3/invoices",
            (401, books_dead),
            (401, books_none),
            (401, books_dead),
        ),
        (
            "/invoice/v3/invoices",
            (401, books_dead),
            (401, books_none),
            (401, books_dead),
        ),
        (
            "/inventory/v1/items",
            (401, books_dead),
            (401, books_none),
            (401, books_dead),
        ),
        (
            "/mail/api/accounts",
            (
                401,
                r#"{"data":{"errorCode":"INVALID_OAUTHTOKEN"},"status":{"code":401,"description":"Invalid Access"}}"#,
            ),
            (
                400,
                r#"{"data":{"errorCode":"INVALID_TICKET"},"status":{"code":400,"description":"Invalid Input"}}"#,
            ),
            (
                401,
                r#"{"data":{"errorCode":"INVALID_OAUTHSCOPE"},"status":{"code":401,"description":"Invalid Access"}}"#,
            ),
        ),
        (
            "/projects/api/v3/portals",
            (
                401,
                r#"{"error":{"status_code":"401","title":"INVALID_OAUTHTOKEN","details":[]}}"#,
            ),
            (
                401,
                r#"{"error":{"status_code":"401","title":"INVALID_TICKET","details":[]}}"#,
            ),
            (
                401,
                r#"{"error":{"status_code":"401","title":"INVALID_OAUTHSCOPE","details":[]}}"#,
            ),
        ),
        (
            "/people/api/forms",
            (
                401,
                r#"{"response":{"errors":{"code":7213,"message":"Invalid OAuthtoken"},"status":1,"message":"Error occurred"}}"#,
            ),
            (
                400,
                r#"{"response":{"errors":{"code":7202,"message":"Invalid ticket"},"status":1,"message":"Error occurred"}}"#,
            ),
            (
                401,
                r#"{"response":{"errors":{"code":7218,"message":"Invalid OAuthScope"},"status":1,"message":"Error occurred"}}"#,
            ),
        ),
        // WorkDrive: 401 on file endpoints, 500 elsewhere.
        (
            "/workdrive/api/v1/files/abc",
            (401, workdrive_dead),
            (500, workdrive_none),
            (401, workdrive_scope),
        ),
        (
            "/workdrive/api/v1/users/me",
            (500, workdrive_dead),
            (500, workdrive_none),
            (401, workdrive_scope),
        ),
    ];

    let zoho = Zoho::start().await;
    let everything = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    let unrelated = zoho
        .access(&zoho.sim.mint_refresh_token(&["ZohoSheet.dataAPI.READ"]))
        .await;
    let dead = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    zoho.sim.invalidate_all_tokens();
    let everything_again = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    let unrelated_again = zoho
        .access(&zoho.sim.mint_refresh_token(&["ZohoSheet.dataAPI.READ"]))
        .await;
    assert!(!zoho.sim.is_access_token_live(&everything));
    assert!(!zoho.sim.is_access_token_live(&unrelated));

    for &(path, dead_answer, none_answer, scope_answer) in dialects {
        for (token, (status, body)) in [
            (Some(dead.as_str()), dead_answer),
            (Some("1000.never.issued"), dead_answer),
            (None, none_answer),
            (Some(unrelated_again.as_str()), scope_answer),
        ] {
            let reply = zoho.get(path, token).await;
            assert_eq!(reply.status, status, "{path} {reply:?}");
            assert_eq!(reply.content_type, JSON, "{path}");
            let expected: Value = serde_json::from_str(body).unwrap();
            assert_eq!(reply.json(), expected, "{path}");
        }
        let reply = zoho.get(path, Some(&everything_again)).await;
        assert_eq!(reply.status, 200, "{path} {reply:?}");
        assert_eq!(reply.json()["path"], path);
    }
    let counters = zoho.sim.counters();
    let n = dialects.len() as u64;
    assert_eq!(counters.api_requests, 5 * n);
    assert_eq!(counters.api_token_errors, 2 * n);
    assert_eq!(counters.api_no_token, n);
    assert_eq!(counters.api_scope_errors, n);
    assert_eq!(counters.api_ok, n);
}

#[tokio::test]
async fn scope_check_matches_the_service_prefix_ignoring_case() {
    let zoho = Zoho::start().await;
    let token = zoho
        .access(
            &zoho
                .sim
                .mint_refresh_token(&["zohocrm.modules.all", "ZohoPeople.forms.ALL"]),
        )
        .await;
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&token)).await.status, 200);
    assert_eq!(
        zoho.get("/people/api/forms", Some(&token)).await.status,
        200
    );
    assert_eq!(
        zoho.get("/bigin/v2/Contacts", Some(&token)).await.status,
        401
    );
}

#[tokio::test]
async fn api_echo_identifies_the_request_and_its_body() {
    let zoho = Zoho::start().await;
    let token = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    let body = r#"{"data":[{"Last_Name":"Doe"}]}"#;
    let reply = zoho
        .api(
            Method::POST,
            "/crm/v8/Leads?trigger=workflow",
            Some(&token),
            body,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_length, Some(reply.text.len()));
    let echo = reply.json();
    assert_eq!(
        echo,
        json!({
            "product": "crm",
            "method": "POST",
            "path": "/crm/v8/Leads",
            "body_bytes": body.len(),
            "body_sha": sim::body_sha(body.as_bytes()),
        })
    );
    let other = zoho
        .api(Method::PUT, "/books/v3/items", Some(&token), "other")
        .await
        .json();
    assert_eq!(other["product"], "books");
    assert_eq!(other["method"], "PUT");
    assert_ne!(other["body_sha"], echo["body_sha"]);
    assert_eq!(sim::body_sha(b""), "cbf29ce484222325");
}

#[tokio::test]
async fn crm_current_user_and_accounts_user_info() {
    let zoho = Zoho::start().await;
    let token = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    let users = zoho
        .get("/crm/v8/users?type=CurrentUser", Some(&token))
        .await;
    assert_eq!(users.status, 200);
    assert_eq!(users.json()["users"][0]["email"], "user@example.com");

    // Any scope will do for user info.
    let narrow = zoho
        .access(&zoho.sim.mint_refresh_token(&["ZohoMail.accounts.READ"]))
        .await;
    let info = zoho.get("/oauth/user/info", Some(&narrow)).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["First_Name"], "Simulated");
    assert_eq!(info.json()["Email"], "user@example.com");

    zoho.sim.invalidate_all_tokens();
    let dead = zoho.get("/oauth/user/info", Some(&narrow)).await;
    assert_eq!(dead.status, 401);
    assert_eq!(
        dead.json(),
        json!({"response":"error","cause":"INVALID_OAUTHTOKEN"})
    );
}

#[tokio::test]
async fn unknown_path_is_404_with_a_live_token() {
    let zoho = Zoho::start().await;
    let token = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    let reply = zoho.get("/nowhere/v1/things", Some(&token)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["code"], "INVALID_URL_PATTERN");
    assert_eq!(zoho.get("/nowhere/v1/things", None).await.status, 401);
}

#[tokio::test]
async fn bearer_scheme_is_accepted_and_others_are_not() {
    let zoho = Zoho::start().await;
    let token = zoho.access(&zoho.sim.mint_refresh_token(&[])).await;
    for (scheme, status) in [("Bearer", 200), ("zoho-oauthtoken", 200), ("Basic", 401)] {
        let response = zoho
            .http
            .get(zoho.url("/crm/v8/Leads"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{scheme}");
    }
}

#[tokio::test]
async fn revoke_endpoint_kills_the_refresh_token_and_its_access_tokens() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let other = zoho.sim.mint_refresh_token(&[]);
    let access = zoho.access(&refresh).await;
    let other_access = zoho.access(&other).await;

    let reply = zoho.revoke(refresh.expose()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.server.as_deref(), Some("ZGS"));
    assert_eq!(reply.json(), json!({"status":"success"}));
    assert!(!zoho.sim.is_access_token_live(&access));
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&access)).await.status, 401);
    zoho.refresh(&refresh).await.assert_error("invalid_code");
    assert!(zoho.sim.is_access_token_live(&other_access));

    let again = zoho.revoke(refresh.expose()).await.json();
    assert_eq!(again["status"], "failure");
    assert_eq!(again["error"], "invalid_token");

    // The token may also come in the query string.
    let response = zoho
        .http
        .post(zoho.url("/oauth/v2/token/revoke"))
        .query(&[("token", other.expose())])
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.json()["status"], "success");
    assert!(!zoho.sim.is_access_token_live(&other_access));
    assert_eq!(zoho.sim.counters().revocations, 2);
}

#[tokio::test]
async fn handle_can_revoke_and_invalidate() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let kept = zoho.sim.mint_refresh_token(&[]);
    let access = zoho.access(&refresh).await;
    let kept_access = zoho.access(&kept).await;

    zoho.sim.revoke_refresh_token(&refresh);
    assert!(!zoho.sim.is_access_token_live(&access));
    assert!(zoho.sim.is_access_token_live(&kept_access));
    assert_eq!(zoho.sim.live_tokens(&refresh), 0);
    zoho.refresh(&refresh).await.assert_error("invalid_code");

    zoho.sim.invalidate_all_tokens();
    assert!(!zoho.sim.is_access_token_live(&kept_access));
    assert_eq!(zoho.sim.live_tokens(&kept), 0);
    // The refresh token survives and mints again.
    zoho.access(&kept).await;
    assert_eq!(zoho.sim.counters().revocations, 0);
}

#[tokio::test]
async fn access_tokens_expire() {
    let zoho = Zoho::with(Simulator::builder().token_lifetime(Duration::from_secs(60))).await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let reply = zoho.refresh(&refresh).await;
    let access = reply.access_token();
    assert_eq!(reply.json()["expires_in"], 60);
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&access)).await.status, 200);

    fast_forward(Duration::from_secs(61)).await;
    assert!(!zoho.sim.is_access_token_live(&access));
    assert_eq!(zoho.sim.live_tokens(&refresh), 0);
    let reply = zoho.get("/crm/v8/Leads", Some(&access)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["code"], "INVALID_TOKEN");
    assert_eq!(zoho.sim.counters().api_token_errors, 1);

    zoho.sim.set_token_lifetime(Duration::from_secs(7200));
    assert_eq!(zoho.refresh(&refresh).await.json()["expires_in"], 7200);
}

#[tokio::test]
async fn each_fault_then_recovery() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let faults = [
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::Html,
        Fault::Empty,
        Fault::MalformedJson,
        Fault::TruncatedJson,
        Fault::Throttle,
        Fault::Error("invalid_client".into()),
        Fault::LegacyExpires,
        Fault::Slow(Duration::from_millis(300)),
    ];
    for fault in &faults {
        zoho.sim.inject(fault.clone(), 1);
    }

    let reply = zoho.refresh(&refresh).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.content_type.starts_with("text/html"), "{reply:?}");
    assert!(reply.text.contains("502"), "{reply:?}");

    let reply = zoho.refresh(&refresh).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("text/html"), "{reply:?}");
    assert!(reply.text.starts_with("<!DOCTYPE html>"), "{reply:?}");

    let reply = zoho.refresh(&refresh).await;
    assert_eq!((reply.status, reply.text.as_str()), (StatusCode::OK, ""));

    let reply = zoho.refresh(&refresh).await;
    assert_eq!(reply.status, 200);
    assert!(
        serde_json::from_str::<Value>(&reply.text).is_err(),
        "{reply:?}"
    );

    let reply = zoho.refresh(&refresh).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text.starts_with(r#"{"access_token":"1000."#),
        "{reply:?}"
    );
    assert!(
        serde_json::from_str::<Value>(&reply.text).is_err(),
        "{reply:?}"
    );

    zoho.refresh(&refresh)
        .await
        .assert_throttled(StatusCode::OK, Language::English);

    zoho.refresh(&refresh).await.assert_error("invalid_client");

    let reply = zoho.refresh(&refresh).await;
    reply.access_token();
    assert_eq!(reply.json()["expires_in_sec"], 3600);
    assert_eq!(reply.json()["expires_in"], 3_600_000);

    let started = Instant::now();
    let reply = zoho.refresh(&refresh).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    reply.access_token();
    assert_eq!(reply.json()["expires_in"], 3600);

    // Close: a fresh client, so no pooled connection hides the drop.
    zoho.sim.inject(Fault::Close, 1);
    let err = zoho_auth::accounts::http_client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(zoho.url("/oauth/v2/token"))
        .form(&zoho.params(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ]))
        .send()
        .await
        .expect_err("the connection was dropped");
    assert!(!err.is_status(), "{err}");

    zoho.access(&refresh).await;
    let counters = zoho.sim.counters();
    assert_eq!(counters.token_requests, faults.len() as u64 + 2);
    assert_eq!(counters.faults, faults.len() as u64 + 1);
    assert_eq!(counters.throttled, 1);
    assert_eq!(counters.tokens_issued, 3);
    assert_eq!(counters.refresh_grants, 3);
}

#[tokio::test]
async fn faults_queue_in_order_and_can_be_cleared() {
    let zoho = Zoho::start().await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    zoho.sim.inject(Fault::Empty, 2);
    zoho.sim
        .inject(Fault::Status(StatusCode::SERVICE_UNAVAILABLE), 1);
    assert_eq!(zoho.refresh(&refresh).await.text, "");
    assert_eq!(zoho.refresh(&refresh).await.text, "");
    assert_eq!(zoho.refresh(&refresh).await.status, 503);
    zoho.access(&refresh).await;

    zoho.sim.inject(Fault::Empty, 5);
    zoho.sim.clear_faults();
    zoho.access(&refresh).await;
    assert_eq!(zoho.sim.counters().faults, 3);
}

#[tokio::test]
async fn legacy_expires_shape() {
    let zoho = Zoho::with(Simulator::builder().legacy_expires(true)).await;
    let body = zoho.refresh(&zoho.sim.mint_refresh_token(&[])).await.json();
    assert_eq!(body["expires_in_sec"], 3600);
    assert_eq!(body["expires_in"], 3_600_000);
}

#[tokio::test]
async fn latencies_delay_answers() {
    let zoho = Zoho::with(Simulator::builder().token_latency(Duration::from_millis(200))).await;
    let refresh = zoho.sim.mint_refresh_token(&[]);
    let started = Instant::now();
    let token = zoho.access(&refresh).await;
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Long enough that a token request, which it must not delay, cannot take as long.
    let api_latency = Duration::from_secs(3);
    zoho.sim.set_token_latency(Duration::ZERO);
    zoho.sim.set_api_latency(api_latency);
    let started = Instant::now();
    zoho.access(&refresh).await;
    assert!(started.elapsed() < api_latency);
    let started = Instant::now();
    assert_eq!(zoho.get("/crm/v8/Leads", Some(&token)).await.status, 200);
    assert!(started.elapsed() >= api_latency);
}

#[tokio::test]
async fn configured_client_and_isolated_simulators() {
    let zoho = Zoho::with(Simulator::builder().client("1000.MYCLIENT", "my-secret")).await;
    assert_eq!(zoho.sim.client_id().as_str(), "1000.MYCLIENT");
    assert_eq!(zoho.sim.client_secret().expose(), "my-secret");
    zoho.access(&zoho.sim.mint_refresh_token(&[])).await;

    // Another simulator has its own random client: like the wrong data centre.
    let other = Simulator::start().await.unwrap();
    assert_ne!(other.client_id(), zoho.sim.client_id());
    assert_ne!(other.addr(), zoho.sim.addr());
    assert_eq!(other.url(), format!("http://{}", other.addr()));
    let refresh = other.mint_refresh_token(&[]);
    zoho.refresh(&refresh).await.assert_error("invalid_code");
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let builder = Simulator::builder().client("1000.VISIBLE", "hidden-secret");
    assert!(!format!("{builder:?}").contains("hidden-secret"));
    let sim = builder.start().await.unwrap();
    let printed = format!("{sim:?}");
    assert!(printed.contains(&sim.url()), "{printed}");
    assert!(!printed.contains("hidden-secret"), "{printed}");
}

#[tokio::test]
async fn dropping_the_simulator_stops_the_server() {
    let sim = Simulator::start().await.unwrap();
    let addr = sim.addr();
    // A kept-alive connection must die too.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    drop(sim);

    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf))
        .await
        .expect("the connection was closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
