//! The accounts server: `/oauth/v2/token` and `/oauth/v2/token/revoke` (zoho-wire.md §1–§4).

use std::collections::HashMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::state::{new_token, Config, Issued, Refusal, State};
use super::{delay, respond, zgs, Answer, BoxError, Fault, Language, Shared, HTML};

const THROTTLE_ENGLISH: &str = r#"{"error_description":"You have made too many requests continuously. Please try again after some time.","error":"Access Denied","status":"failure"}"#;
const THROTTLE_CHINESE: &str = r#"{"error_description":"您已连续提出过多请求，请稍后再试。","error":"拒绝访问","status":"failure"}"#;

const PROXY_PAGE: &str = "<!DOCTYPE html><html><head><title>Service Unavailable</title></head>\
    <body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>";
/// Almost JSON: a comma is missing.
const MALFORMED_JSON: &str = r#"{"access_token":"1000.malformed" "expires_in":3600}"#;

const REVOKED: &str = r#"{"status":"success"}"#;
/// Zoho's answer for an unknown token is unconfirmed (zoho-wire.md §4); this shape is a guess that
/// keeps to the one known rule, "anything but `status: success` is a failure".
const NOT_REVOKED: &str = r#"{"status":"failure","error":"invalid_token"}"#;

/// Request parameters, from the query string and the body (body wins).
pub(super) type Params = HashMap<String, String>;

/// `/oauth/v2/token` at data centre `dc`.
pub(super) async fn token(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let _in_flight = shared.token_request_started();
    let (fault, config, api_domain) = {
        let mut state = shared.lock();
        state.counters(dc).token_requests += 1;
        let fault = state.next_fault();
        if fault.is_some() {
            state.counters(dc).faults += 1;
        }
        (fault, state.config.clone(), state.url(dc).to_owned())
    };
    let params = read_params(request).await?;
    delay(config.token_latency).await;

    let legacy = match fault {
        None => config.legacy_expires,
        Some(Fault::Slow(duration)) => {
            delay(duration).await;
            config.legacy_expires
        }
        Some(Fault::LegacyExpires) => true,
        Some(Fault::Close) => return Err("injected fault: connection dropped".into()),
        Some(Fault::Status(status)) => {
            let page = format!(
                "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
            );
            return Ok(respond(status, HTML, page));
        }
        Some(Fault::Html) => return Ok(respond(StatusCode::OK, HTML, PROXY_PAGE)),
        Some(Fault::Empty) => return Ok(zgs(StatusCode::OK, Bytes::new())),
        Some(Fault::MalformedJson) => return Ok(zgs(StatusCode::OK, MALFORMED_JSON)),
        Some(Fault::TruncatedJson) => {
            let unminted = Issued {
                access_token: new_token(),
                refresh_token: None,
                scopes: vec!["ZohoCRM.modules.ALL".to_owned()],
                lifetime: config.token_lifetime,
            };
            let mut body = success_body(&unminted, &api_domain, config.legacy_expires);
            // The body is ASCII, so any length is a character boundary.
            body.truncate(body.len() / 2);
            return Ok(zgs(StatusCode::OK, body));
        }
        Some(Fault::Throttle) => {
            shared.lock().counters(dc).throttled += 1;
            return Ok(throttled(&config));
        }
        Some(Fault::Error(code)) => return Ok(error(&code)),
    };

    let mut state = shared.lock();
    Ok(match grant(&mut state, dc, &params) {
        // Tokens are minted by this DC only, so its URL is their `api_domain`.
        Ok(issued) => zgs(StatusCode::OK, success_body(&issued, &api_domain, legacy)),
        Err(Refusal::Error(code)) => error(code),
        Err(Refusal::Throttled) => {
            state.counters(dc).throttled += 1;
            throttled(&state.config)
        }
    })
}

/// `/oauth/v2/token/revoke` with `token=<refresh token>` at data centre `dc`, which revokes only
/// its own users' tokens.
pub(super) async fn revoke(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let params = read_params(request).await?;
    let latency = shared.lock().config.token_latency;
    delay(latency).await;

    let mut state = shared.lock();
    let revoked = params
        .get("token")
        .is_some_and(|token| state.revoke(Some(dc), token));
    if revoked {
        state.counters(dc).revocations += 1;
    }
    Ok(zgs(
        StatusCode::OK,
        if revoked { REVOKED } else { NOT_REVOKED },
    ))
}

enum GrantType {
    RefreshToken,
    AuthorizationCode,
    ClientCredentials,
}

/// Checks the client and runs the requested grant at data centre `dc`.
fn grant(state: &mut State, dc: usize, params: &Params) -> Result<Issued, Refusal> {
    let param = |name: &str| params.get(name).map(String::as_str);
    let grant_type = match param("grant_type") {
        Some("refresh_token") => {
            state.count_refresh_grant(dc, param("refresh_token"));
            GrantType::RefreshToken
        }
        Some("authorization_code") => {
            state.counters(dc).code_grants += 1;
            GrantType::AuthorizationCode
        }
        Some("client_credentials") => {
            state.counters(dc).client_credentials_grants += 1;
            GrantType::ClientCredentials
        }
        _ => return Err(Refusal::Error("unsupported_grant_type")),
    };
    if param("client_id") != Some(state.client_id.as_str()) {
        return Err(Refusal::Error("invalid_client"));
    }
    let secret = param("client_secret");
    match state.data_center_secrets.get(&dc) {
        Some(own) if secret == Some(own.as_str()) => {}
        // The client's secret of another data centre.
        Some(_) if secret == Some(state.client_secret.as_str()) => {
            return Err(Refusal::Error("invalid_client"))
        }
        None if secret == Some(state.client_secret.as_str()) => {}
        _ => return Err(Refusal::Error("invalid_client_secret")),
    }

    match grant_type {
        // Zoho's refresh answer names no scope (zoho-wire.md §1).
        GrantType::RefreshToken => state
            .grant_refresh(dc, param("refresh_token").unwrap_or_default())
            .map(|issued| Issued {
                scopes: Vec::new(),
                ..issued
            }),
        GrantType::AuthorizationCode => state.grant_code(
            dc,
            param("code").unwrap_or_default(),
            param("redirect_uri"),
            param("code_verifier"),
        ),
        GrantType::ClientCredentials => {
            // Zoho's answer to a malformed soid is unconfirmed; treat it as a missing one.
            let soid = param("soid")
                .filter(|soid| is_soid(soid))
                .ok_or(Refusal::Error("missing_org_info"))?;
            let scopes: Vec<String> = param("scope")
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect();
            if scopes.is_empty() {
                return Err(Refusal::Error("invalid_scope"));
            }
            state.grant_org(dc, soid, scopes)
        }
    }
}

/// `<Service>.<digits>`, e.g. `ZohoCRM.600123456`.
fn is_soid(soid: &str) -> bool {
    soid.split_once('.').is_some_and(|(service, org)| {
        !service.is_empty()
            && service.chars().all(|c| c.is_ascii_alphanumeric())
            && !org.is_empty()
            && org.chars().all(|c| c.is_ascii_digit())
    })
}

/// A success in today's shape (`expires_in` in seconds) or the legacy one (`expires_in_sec`
/// in seconds, `expires_in` in milliseconds).
fn success_body(issued: &Issued, api_domain: &str, legacy: bool) -> String {
    let mut body = Map::new();
    body.insert("access_token".into(), issued.access_token.clone().into());
    if let Some(refresh) = &issued.refresh_token {
        body.insert("refresh_token".into(), refresh.clone().into());
    }
    // Zoho answers with the scopes space-separated, however they were requested.
    if !issued.scopes.is_empty() {
        body.insert("scope".into(), issued.scopes.join(" ").into());
    }
    body.insert("api_domain".into(), api_domain.into());
    body.insert("token_type".into(), "Bearer".into());
    let seconds = issued.lifetime.as_secs();
    if legacy {
        body.insert("expires_in_sec".into(), seconds.into());
        body.insert("expires_in".into(), (seconds * 1000).into());
    } else {
        body.insert("expires_in".into(), seconds.into());
    }
    Value::Object(body).to_string()
}

fn error(code: &str) -> Response<Full<Bytes>> {
    zgs(StatusCode::OK, json!({ "error": code }).to_string())
}

fn throttled(config: &Config) -> Response<Full<Bytes>> {
    let body = match config.throttle_language {
        Language::English => THROTTLE_ENGLISH,
        Language::Chinese => THROTTLE_CHINESE,
    };
    zgs(config.throttle_status, body)
}

/// Reads the parameters from the query string, then from a urlencoded or multipart body.
pub(super) async fn read_params(request: Request<Incoming>) -> Result<Params, BoxError> {
    let mut params: Params = request
        .uri()
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request.into_body();

    if let Ok(boundary) = multer::parse_boundary(&content_type) {
        let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
        while let Some(field) = form.next_field().await? {
            let name = field.name().map(str::to_owned);
            let value = field.text().await?;
            if let Some(name) = name {
                params.insert(name, value);
            }
        }
    } else {
        // Read the body whatever its type, so the connection stays usable for keep-alive.
        let body = body.collect().await?.to_bytes();
        let is_form = content_type.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
        if is_form {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
    }
    Ok(params)
}
