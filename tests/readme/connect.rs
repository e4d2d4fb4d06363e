//! Runs README's "Connect Zoho" snippet: its router, mounted as written, sends a browser to Zoho's
//! consent page with state and a PKCE challenge.

use super::*;
use tower::ServiceExt;

#[tokio::test]
async fn connect_redirects_to_zoho_consent() {
    let request = axum::http::Request::get("/zoho/connect")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = zoho_routes().unwrap().oneshot(request).await.unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://accounts.zoho.com/oauth/v2/auth?"),
        "{location}"
    );
    for param in [
        "state=",
        "code_challenge=",
        "access_type=offline",
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fzoho%2Fcallback",
    ] {
        assert!(location.contains(param), "{param} in {location}");
    }
}
