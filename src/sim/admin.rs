//! Routes of the simulator's own, which Zoho does not have, for people and scripts driving a
//! simulator in another process (where [`super::Simulator`]'s methods are out of reach). They live
//! under `/sim/`, a path no Zoho client ever calls.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::accounts::read_params;
use super::{consent, respond, Answer, Shared};

pub(super) const GRANT_CODE_PATH: &str = "/sim/grant-code";

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
