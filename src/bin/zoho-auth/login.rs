//! The loopback side of `login`: listen on `127.0.0.1:<port>`, take Zoho's redirect to
//! `/callback`, exchange its code, and tell the browser how it went.

use html_escape::encode_quoted_attribute as escape;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use zoho_auth::authorize::{Callback, Connected, Connector, PendingAuthorization};

use crate::advice::{explain, redact, Context, Problem};

/// The path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// The result of the one callback that counts.
type Outcome = Result<Connected, Problem>;

/// Listens on `127.0.0.1:port` (before the URL is printed, so a busy port fails at once).
pub async fn bind(port: u16) -> Result<TcpListener, Problem> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr).await.map_err(|error| {
        Problem::failure(
            format!("Cannot listen on {addr} for Zoho's redirect: {error}."),
            format!(
                "Another program (an earlier `zoho-auth login`?) uses port {port}: stop it, or pass \
                 --port with another port whose http://127.0.0.1:PORT{CALLBACK_PATH} is registered \
                 in Zoho's API console."
            ),
        )
    })
}

/// Opens `url` in the desktop's browser if there is one; the URL is printed either way, so a
/// failure here is not one.
pub fn open_browser(url: &str) {
    let (program, args): (&str, &[&str]) = if cfg!(target_os = "macos") {
        ("open", &[])
    } else if cfg!(windows) {
        // `cmd /c start` would interpret the `&`s of the URL.
        ("rundll32", &["url.dll,FileProtocolHandler"])
    } else {
        ("xdg-open", &[])
    };
    let child = std::process::Command::new(program)
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        // Reaped on a thread of its own: an opener may stay until the browser exits.
        std::thread::spawn(move || child.wait());
    }
}

/// What every connection's handler shares.
struct Shared {
    connector: Connector,
    pending: PendingAuthorization,
    ctx: Context,
    /// Set by the first callback with our `state`: a browser that retries must not spend the
    /// one-time code twice.
    claimed: AtomicBool,
}

/// Serves callbacks until one with this sign-in's `state` has been handled (and its page sent),
/// `timeout` passes, or Ctrl-C.
pub async fn wait(
    listener: TcpListener,
    connector: Connector,
    pending: PendingAuthorization,
    ctx: Context,
    timeout: Duration,
) -> Outcome {
    let redirect_uri = connector.redirect_uri().to_owned();
    let shared = Arc::new(Shared {
        connector,
        pending,
        ctx,
        claimed: AtomicBool::new(false),
    });
    let mut connections = JoinSet::new();
    let deadline = tokio::time::sleep(timeout);
    let cancel = tokio::signal::ctrl_c();
    tokio::pin!(deadline, cancel);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors, typically: give the browser's connections time to end.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(Some(outcome)) = joined {
                    return outcome;
                }
            }
            () = &mut deadline => {
                return Err(Problem::failure(
                    format!(
                        "No sign-in arrived at {redirect_uri} within {} seconds.",
                        timeout.as_secs()
                    ),
                    format!(
                        "Open the URL printed above in a browser on this machine and accept \
                         (raise --timeout if you need longer). If Zoho showed an error page \
                         instead, register {redirect_uri} as an Authorized Redirect URI of the \
                         client in Zoho's API console."
                    ),
                ));
            }
            _ = &mut cancel => {
                return Err(Problem::failure(
                    "Sign-in cancelled.",
                    "Run `zoho-auth login` again when ready.",
                ));
            }
        }
    }
}

/// One browser connection. Returns the outcome once its response has been written, so the
/// process never exits before the browser has its page.
async fn serve(stream: TcpStream, shared: Arc<Shared>) -> Option<Outcome> {
    let slot: Arc<Mutex<Option<Outcome>>> = Arc::default();
    let service = {
        let slot = Arc::clone(&slot);
        service_fn(move |request| {
            let (shared, slot) = (Arc::clone(&shared), Arc::clone(&slot));
            async move {
                let (response, outcome) = answer(&shared, request).await;
                if outcome.is_some() {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    // Without keep-alive the connection ends right after the response, which is what ends the
    // wait above.
    let _ = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    let outcome = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    outcome
}

/// The page for one request, and the sign-in's outcome if this request decided it.
async fn answer(
    shared: &Shared,
    request: Request<Incoming>,
) -> (Response<Full<Bytes>>, Option<Outcome>) {
    if request.method() != Method::GET || request.uri().path() != CALLBACK_PATH {
        return (
            page(
                StatusCode::NOT_FOUND,
                "Not found",
                "This is zoho-auth's sign-in callback; nothing else lives here.",
            ),
            None,
        );
    }
    let callback = Callback::parse(request.uri().query().unwrap_or_default());
    // A callback for another sign-in (a stale tab) or a forged one is refused without ending
    // this one: whoever can reach the port must not be able to abort the login.
    let ours = callback
        .state
        .as_deref()
        .is_some_and(|state| same(state.as_bytes(), shared.pending.state().as_bytes()));
    if !ours {
        eprintln!(
            "warning: refused a request to the callback whose state does not match this sign-in \
             (a stale browser tab, or not from Zoho); still waiting"
        );
        return (
            page(
                StatusCode::BAD_REQUEST,
                "Not this sign-in",
                "This link does not belong to the sign-in zoho-auth is waiting for (a stale tab, or \
                 not from Zoho). Open the URL zoho-auth printed to sign in.",
            ),
            None,
        );
    }
    if shared.claimed.swap(true, Ordering::SeqCst) {
        return (
            page(
                StatusCode::CONFLICT,
                "Already handled",
                "This sign-in was already handled; see the terminal.",
            ),
            None,
        );
    }
    let mut ctx = shared.ctx.clone();
    if let Some(server) = &callback.accounts_server {
        // The code is exchanged where the callback says (if that is Zoho's or the configured
        // server), so that is the server a failure is about.
        ctx.accounts.clone_from(server);
    }
    let outcome = shared
        .connector
        .complete(&shared.pending, &callback)
        .await
        .map_err(|error| explain(&error, &ctx));
    let response = match &outcome {
        Ok(_) => page(
            StatusCode::OK,
            "Signed in to Zoho",
            "zoho-auth has stored the tokens. You can close this tab and return to the terminal.",
        ),
        Err(problem) => page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            &format!("{} {}", problem.what, problem.todo),
        ),
    };
    (response, Some(outcome))
}

/// A small HTML page for the browser.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>zoho-auth: {title}</title></head>\n\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n",
        title = escape(title),
        text = escape(&redact(text)),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page follows a URL that carried a grant code: keep it out of caches and referrers.
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Compares in time that depends only on the lengths, as the library compares `state`.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
