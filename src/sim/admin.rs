//! Routes of the simulator's own, which Zoho does not have, for people and scripts driving a
//! simulator in another process (where [`super::Simulator`]'s methods are out of reach). They live
//! under `/sim/`, a path no Zoho client ever calls.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::accounts::read_params;
use super::{consent, respond, Answer, Shared, JSON};

pub(super) const GRANT_CODE_PATH: &str = "/sim/grant-code";
pub(super) const USER_COUNTERS_PATH: &str = "/sim/user-counters";

const TEXT: &str = "text/plain;charset=UTF-8";

/// `/sim/grant-code[?scope=A,B]`: a fresh offline grant code for `scope` (default
/// [`super::DEFAULT_SCOPES`]), as a Self Client's "Generate Code" gives one, so it carries no redirect
/// URI. The body is the code and a newline, for `--code "$(curl -s ...)"`. The code is of data
/// centre `dc`, whose URL the request went to.
pub(super) async fn grant_code(shared: &Shared, dc: usize, request: Request<Incoming>) -> Answer {
    let params = read_params(request).await?;
    let scopes = match params.get("scope") {
        None => Some(super::scope_list(&[])),
        Some(scope) => consent::scope_list(scope),
    };
    Ok(match scopes {
        Some(scopes) => {
            let code = shared.lock().add_code(dc, scopes, true, None, None);
            respond(StatusCode::OK, TEXT, format!("{code}\n"))
        }
        None => respond(
            StatusCode::BAD_REQUEST,
            TEXT,
            "Invalid OAuth Scope: give comma-separated scopes, e.g. scope=ZohoCRM.modules.ALL\n",
        ),
    })
}

/// `/sim/user-counters` with `refresh_token` (query or form): what the simulator has seen of that
/// token's user, the JSON form of [`super::Simulator::counters_for`], so that a test driving a
/// simulator in another process can tell which users were served. Every data centre answers for
/// every user; 404 for a token the simulator never issued.
pub(super) async fn user_counters(shared: &Shared, request: Request<Incoming>) -> Answer {
    let params = read_params(request).await?;
    let Some(refresh_token) = params.get("refresh_token") else {
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            TEXT,
            "Give the user's refresh token: refresh_token=1000.xxxx\n",
        ));
    };
    let counters = shared.lock().user_counters(refresh_token);
    Ok(match counters {
        Some(seen) => {
            let body = serde_json::json!({
                "refresh_grants": seen.refresh_grants,
                "wrong_dc_refresh_grants": seen.wrong_dc_refresh_grants,
                "tokens_issued": seen.tokens_issued,
                "api_requests": seen.api_requests,
                "api_ok": seen.api_ok,
                "wrong_dc_api_requests": seen.wrong_dc_api_requests,
            });
            respond(StatusCode::OK, JSON, body.to_string())
        }
        None => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "This simulator never issued that refresh token.\n",
        ),
    })
}
