//! The consent flow (zoho-wire.md §5): `/oauth/v2/auth` shows a consent page, whose Accept and
//! Deny buttons post to `/oauth/v2/auth/decision`, which redirects to the client's callback.
//! Also the scripted "user" that clicks through it in-process, for tests and CLIs without a
//! browser.
//!
//! Every data centre serves the flow. The page lets the user pick the DC their account lives in
//! (default: the DC serving the page), as multi-DC Zoho sends a user who starts at
//! `accounts.zoho.com` to their own DC; the callback names that DC and its code works there only.

use bytes::Bytes;
use html_escape::encode_quoted_attribute as escape;
use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::accounts::{read_params, Params};
use super::state::{is_pkce_string, new_token, Challenge, ChallengeMethod, Consent, State};
use super::{delay, respond, Answer, Shared, HTML};

pub(super) const AUTHORIZE_PATH: &str = "/oauth/v2/auth";
pub(super) const DECISION_PATH: &str = "/oauth/v2/auth/decision";

/// The status of every HTML error page. Zoho's own is unconfirmed; a browser user never sees it,
/// but a scripted client that only checks the status then cannot mistake the page for a consent
/// page, so 400 is the stricter choice.
const ERROR_STATUS: StatusCode = StatusCode::BAD_REQUEST;

/// `/oauth/v2/auth` at data centre `dc`: the consent page, or an error page when the request
/// cannot be trusted with a redirect.
pub(super) async fn authorize(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let params = read_params(request).await?;
    let latency = shared.lock().config.token_latency;
    delay(latency).await;

    Ok(match open(&mut shared.lock(), dc, &params) {
        Ok((_, page)) => respond(StatusCode::OK, HTML, page),
        Err(message) => error_page(message),
    })
}

/// `/oauth/v2/auth/decision` at data centre `dc`: Accept or Deny from the consent page, with the
/// user's data centre, answered with the callback.
pub(super) async fn decide(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let params = read_params(request).await?;
    let latency = shared.lock().config.token_latency;
    delay(latency).await;

    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let answer = answer(
        &mut shared.lock(),
        dc,
        param("request_id"),
        param("decision"),
        params.get("dc").map(String::as_str),
    );
    Ok(match answer {
        Ok(location) => {
            let mut response = respond(StatusCode::FOUND, HTML, Bytes::new());
            // The redirect URI was checked to be printable ASCII, and the rest is
            // percent-encoded.
            let location = HeaderValue::try_from(location)?;
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Err(message) => error_page(message),
    })
}

/// What a user does in a browser, without the browser: opens `authorize_url` (which must be
/// one of this simulator's authorization endpoints), picks data centre `chosen` (default: the
/// page's own) and clicks the button for `decision` (`accept` or `deny`). Returns the redirect's
/// `Location`, or the error page's message.
///
/// It runs in-process rather than over loopback HTTP so that it can be a plain function: a
/// blocking HTTP call would starve the server on a current-thread runtime. The routes above run
/// the same [`open`] and [`answer`], so only the HTML round trip is skipped.
pub(super) fn click(
    shared: &Shared,
    authorize_url: &str,
    decision: &str,
    chosen: Option<usize>,
) -> Result<String, String> {
    let url = url::Url::parse(authorize_url).map_err(|err| format!("{authorize_url}: {err}"))?;
    let mut state = shared.lock();
    // A client that built its URL for another host would never reach this simulator.
    let endpoint = |dc| format!("{}{AUTHORIZE_PATH}", state.url(dc));
    let serving = (0..state.data_center_count())
        .find(|&dc| url[..url::Position::AfterPath] == endpoint(dc))
        .ok_or_else(|| format!("{authorize_url} is not {}", endpoint(0)))?;
    let params: Params = url.query_pairs().into_owned().collect();
    let (request_id, _) = open(&mut state, serving, &params)?;
    let chosen = chosen.map(|dc| dc.to_string());
    answer(
        &mut state,
        serving,
        &request_id,
        decision,
        chosen.as_deref(),
    )
    .map_err(str::to_owned)
}

/// Shows data centre `dc`'s consent page for an authorization request: its one-time
/// `request_id` and the page, or the error page's message.
fn open(state: &mut State, dc: usize, params: &Params) -> Result<(String, String), &'static str> {
    match consent_request(state, params) {
        Ok(consent) => {
            let request_id = new_token();
            let page = consent_page(state, dc, &consent, &request_id);
            state.add_consent(request_id.clone(), consent);
            state.counters(dc).consents_shown += 1;
            Ok((request_id, page))
        }
        Err(message) => {
            state.counters(dc).auth_errors += 1;
            Err(message)
        }
    }
}

/// Answers the consent page `request_id` at data centre `serving` with `decision`, for a user of
/// data centre `chosen` (the page's `dc` field; default `serving`): the callback URL, or the
/// error page's message. The page is spent whatever the decision, so it cannot be answered twice.
fn answer(
    state: &mut State,
    serving: usize,
    request_id: &str,
    decision: &str,
    chosen: Option<&str>,
) -> Result<String, &'static str> {
    let chosen = match chosen {
        None => Some(serving),
        Some(dc) => dc.parse().ok().filter(|&dc| dc < state.data_center_count()),
    };
    let result = match (state.take_consent(request_id), decision, chosen) {
        (None, _, _) => Err("Invalid or expired request"),
        (Some(_), "accept", None) => Err("Invalid data centre"),
        (Some(consent), "accept", Some(dc)) => {
            state.counters(serving).consents_accepted += 1;
            let code = state.accept(&consent, dc);
            let location = state.location(dc);
            let accounts_server = state
                .registration
                .accounts_server
                .as_deref()
                .unwrap_or(state.url(dc));
            let params = state_param(&consent).into_iter().chain([
                ("code", code.as_str()),
                ("location", location.as_str()),
                ("accounts-server", accounts_server),
            ]);
            Ok(callback(&consent.redirect_uri, params))
        }
        (Some(consent), "deny", _) => {
            state.counters(serving).consents_denied += 1;
            // Zoho's exact denial parameters are unconfirmed; `error=access_denied` is the OAuth
            // norm (RFC 6749 §4.1.2.1).
            let params = [("error", "access_denied")]
                .into_iter()
                .chain(state_param(&consent));
            Ok(callback(&consent.redirect_uri, params))
        }
        (Some(_), _, _) => Err("Invalid decision"),
    };
    if result.is_err() {
        state.counters(serving).auth_errors += 1;
    }
    result
}

/// The client's `state`, round-tripped verbatim when it sent one.
fn state_param(consent: &Consent) -> Option<(&'static str, &str)> {
    consent.state.as_deref().map(|value| ("state", value))
}

/// Checks an authorization request. Zoho answers a bad client or redirect URI with an HTML page
/// rather than a redirect, since the redirect target cannot be trusted. OAuth would redirect the
/// other errors (bad scope, response type, ...) with an `error` parameter; the simulator shows
/// the page for those too, which is what Zoho is documented to do for the first two and keeps a
/// bad request from ever reaching the client's callback.
fn consent_request(state: &State, params: &Params) -> Result<Consent, &'static str> {
    let param = |name: &str| params.get(name).map(String::as_str);
    if param("client_id") != Some(state.client_id.as_str()) {
        return Err("Invalid Client ID");
    }
    let redirect_uri = param("redirect_uri")
        .filter(|uri| state.is_registered(uri) && is_redirectable(uri))
        .ok_or("Invalid Redirect Uri")?;
    if param("response_type") != Some("code") {
        return Err("Invalid Response Type");
    }
    let scopes = param("scope")
        .and_then(scope_list)
        .ok_or("Invalid OAuth Scope")?;
    let offline = match param("access_type") {
        None | Some("online") => false,
        Some("offline") => true,
        Some(_) => return Err("Invalid Access Type"),
    };
    let challenge = match (param("code_challenge"), param("code_challenge_method")) {
        (None, None) => None,
        (Some(value), method) => {
            let method = match method {
                // RFC 7636 §4.3: without a method the challenge is plain.
                None | Some("plain") => ChallengeMethod::Plain,
                Some("S256") => ChallengeMethod::S256,
                Some(_) => return Err("Invalid Code Challenge Method"),
            };
            if !is_pkce_string(value) {
                return Err("Invalid Code Challenge");
            }
            Some(Challenge {
                method,
                value: value.to_owned(),
            })
        }
        (None, Some(_)) => return Err("Invalid Code Challenge"),
    };
    Ok(Consent {
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        offline,
        prompt_consent: param("prompt") == Some("consent"),
        state: param("state").map(str::to_owned),
        challenge,
    })
}

/// An absolute URL without a fragment (RFC 6749 §3.1.2), in printable ASCII so that it fits a
/// `Location` header as it is.
fn is_redirectable(uri: &str) -> bool {
    url::Url::parse(uri).is_ok() && !uri.contains('#') && uri.bytes().all(|b| b.is_ascii_graphic())
}

/// Zoho's comma-separated scopes, each `Service.scope.OPERATION`-like; `None` when empty or when
/// one is malformed (a space-separated list is one malformed scope, which is how a client that
/// joins with spaces finds out).
pub(super) fn scope_list(scope: &str) -> Option<Vec<String>> {
    let valid = |scope: &str| {
        !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let scopes: Vec<String> = scope.split(',').map(str::to_owned).collect();
    scopes.iter().all(|scope| valid(scope)).then_some(scopes)
}

/// `{redirect_uri}?<params>`, or `&<params>` when it already has a query.
fn callback<'a>(
    redirect_uri: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let separator = match redirect_uri.find('?') {
        None => "?",
        Some(_) if redirect_uri.ends_with(['?', '&']) => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{separator}{query}")
}

/// Data centre `dc`'s consent page, offering every DC with `dc` preselected.
fn consent_page(state: &State, dc: usize, consent: &Consent, request_id: &str) -> String {
    let data_centers: String = (0..state.data_center_count())
        .map(|option| {
            format!(
                r#"<option value="{option}"{selected}>{location} ({url})</option>"#,
                selected = if option == dc { " selected" } else { "" },
                location = escape(&state.location(option)),
                url = escape(state.url(option)),
            )
        })
        .collect();
    let scopes: String = consent
        .scopes
        .iter()
        .map(|scope| format!("<li>{}</li>", escape(scope)))
        .collect();
    let access = if consent.offline {
        "Offline: the application keeps access until you revoke it."
    } else {
        "Online: access ends when the session does."
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Zoho Simulator – Consent</title></head>
<body>
<h1>Allow access?</h1>
<p>The application <code id="client-id">{client_id}</code> asks for:</p>
<ul id="scopes">{scopes}</ul>
<p id="access-type">{access}</p>
<form method="post" action="{DECISION_PATH}">
<input type="hidden" name="request_id" value="{request_id}">
<label for="dc">Your account's data centre:</label>
<select id="dc" name="dc">{data_centers}</select>
<button type="submit" id="accept" name="decision" value="accept">Accept</button>
<button type="submit" id="deny" name="decision" value="deny">Deny</button>
</form>
</body></html>
"#,
        client_id = escape(&state.client_id),
        request_id = escape(request_id),
    )
}

/// Zoho's error page for an authorization request it will not redirect.
fn error_page(message: &str) -> Response<Full<Bytes>> {
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Zoho Simulator – Error</title></head>
<body><h1>Oops!</h1><p id="message">{}</p></body></html>
"#,
        escape(message)
    );
    respond(ERROR_STATUS, HTML, page)
}
