//! The layer's front ends side by side, for tests that run one table through each (issue 12):
//! the tower layer over hyper-util, `ZohoReqwest` over `reqwest::Client`, and
//! `ZohoAuthMiddleware` in a `reqwest_middleware` chain, each recording the `Authorization`
//! header of every request it sends below the front end.
#![allow(dead_code)] // each test binary uses a different part

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Layer, Service, ServiceExt};
use zoho_auth::reqwest::{ZohoAuthMiddleware, ZohoReqwest};
use zoho_auth::{ConnectionId, RequestBody, TokenWithheld, ZohoAuthLayer};

/// The front ends, a column each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Tower,
    Reqwest,
    Middleware,
}

pub const FRONTS: [Front; 3] = [Front::Tower, Front::Reqwest, Front::Middleware];

/// A request body, as each front end's caller would build it.
#[derive(Clone, Copy, Debug)]
pub enum Sent {
    Empty,
    /// In memory: `Full` for tower, `reqwest::Body::from(bytes)` for reqwest.
    Bytes(&'static [u8]),
    /// A stream whose size is known (an exact size hint).
    Sized(&'static [u8]),
    /// A stream of unknown size: never buffered, so never resent.
    Stream(&'static [u8]),
}

/// A stream of one chunk with no size hint.
struct Unsized(Option<Bytes>);

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

pub type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

/// The request's headers, for a recorder of what was sent.
trait Headers {
    fn headers(&self) -> &HeaderMap;
}

impl<B> Headers for Request<B> {
    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
    }
}

impl Headers for reqwest::Request {
    fn headers(&self) -> &HeaderMap {
        reqwest::Request::headers(self)
    }
}

/// Records the `Authorization` header of every request sent through it.
#[derive(Clone)]
pub struct Recording<S> {
    inner: S,
    seen: Seen,
}

impl<S, R: Headers> Service<R> for Recording<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        self.seen.lock().unwrap().push(header);
        self.inner.call(request)
    }
}

/// The same, as a middleware after `ZohoAuthMiddleware` in a chain.
struct RecordingMiddleware(Seen);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for RecordingMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        self.0.lock().unwrap().push(header);
        next.run(request, extensions).await
    }
}

/// One request of a row.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub url: String,
    pub body: Sent,
    pub connection: Option<ConnectionId>,
}

/// What a request came to, the same way for every front end: the status, body and whether a
/// `TokenWithheld` said why the token stayed home; or the error's predicates.
pub type Answer = Result<(u16, String, bool), String>;

pub fn predicates(error: &zoho_auth::Error) -> String {
    let all = [
        ("transient", error.is_transient()),
        ("permanent", error.is_permanent()),
        ("invalid_grant", error.is_invalid_grant()),
        ("insecure", error.is_insecure()),
        ("body", error.is_body()),
        ("config", error.is_config()),
        ("not_connected", error.is_not_connected()),
    ];
    let held: Vec<_> = all
        .iter()
        .filter(|(_, held)| *held)
        .map(|(name, _)| *name)
        .collect();
    held.join("+")
}

/// The predicates of the `zoho_auth::Error` in `error`, or what else it is.
pub fn described(error: &BoxError) -> String {
    match error.downcast_ref::<zoho_auth::Error>() {
        Some(error) => predicates(error),
        None => format!("not a zoho_auth::Error: {error}"),
    }
}

// Infallible: a boxed error type here trips rustc's check that the test's spawned futures are
// `Send` ("not general enough").
fn tower_body(sent: Sent) -> BoxBody<Bytes, Infallible> {
    match sent {
        Sent::Empty => Empty::new().boxed(),
        Sent::Bytes(data) | Sent::Sized(data) => Full::new(Bytes::from_static(data)).boxed(),
        Sent::Stream(data) => Unsized(Some(Bytes::from_static(data))).boxed(),
    }
}

fn reqwest_body(sent: Sent) -> reqwest::Body {
    match sent {
        Sent::Empty => reqwest::Body::from(Bytes::new()),
        Sent::Bytes(data) => reqwest::Body::from(Bytes::from_static(data)),
        Sent::Sized(data) => reqwest::Body::wrap(Full::new(Bytes::from_static(data))),
        Sent::Stream(data) => reqwest::Body::wrap(Unsized(Some(Bytes::from_static(data)))),
    }
}

type TowerClient = Client<HttpConnector, RequestBody<BoxBody<Bytes, Infallible>>>;

/// A front end over `layer`, sending below it through a recorder.
pub enum Built {
    Tower(zoho_auth::ZohoAuth<Recording<TowerClient>>),
    Reqwest(ZohoReqwest<Recording<reqwest::Client>>, reqwest::Client),
    Middleware(reqwest_middleware::ClientWithMiddleware),
}

pub fn build(front: Front, layer: &ZohoAuthLayer, seen: &Seen) -> Built {
    let http = zoho_auth::accounts::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    match front {
        Front::Tower => Built::Tower(layer.layer(Recording {
            inner: Client::builder(TokioExecutor::new()).build_http(),
            seen: seen.clone(),
        })),
        Front::Reqwest => Built::Reqwest(
            ZohoReqwest::new(
                Recording {
                    inner: http.clone(),
                    seen: seen.clone(),
                },
                layer,
            ),
            http,
        ),
        Front::Middleware => Built::Middleware(
            reqwest_middleware::ClientBuilder::new(http)
                .with(ZohoAuthMiddleware::new(layer))
                .with(RecordingMiddleware(seen.clone()))
                .build(),
        ),
    }
}

async fn text(
    body: impl Body<Data = Bytes, Error = impl Into<BoxError>>,
) -> Result<String, BoxError> {
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl Built {
    /// Sends `call`: its status, body and whether a `TokenWithheld` came with it, or the error
    /// as a `BoxError` whatever the front end (the middleware's `zoho_auth::Error` taken out of
    /// its `anyhow::Error`).
    pub async fn request(&self, call: &Call) -> Result<(u16, String, bool), BoxError> {
        match self {
            Built::Tower(service) => {
                let mut request = Request::builder()
                    .method(call.method.clone())
                    .uri(&call.url)
                    .body(tower_body(call.body))
                    .unwrap();
                if let Some(id) = &call.connection {
                    request.extensions_mut().insert(id.clone());
                }
                let response = service.clone().oneshot(request).await?;
                let status = response.status().as_u16();
                let withheld = response.extensions().get::<TokenWithheld>().is_some();
                Ok((status, text(response.into_body()).await?, withheld))
            }
            Built::Reqwest(service, http) => {
                let service = match &call.connection {
                    Some(id) => service.for_connection(id.clone()),
                    None => service.clone(),
                };
                let request = http
                    .request(call.method.clone(), &call.url)
                    .body(reqwest_body(call.body))
                    .build()?;
                let response = service.oneshot(request).await?;
                answer(response, call).await
            }
            Built::Middleware(client) => {
                let mut request = client
                    .request(call.method.clone(), &call.url)
                    .body(reqwest_body(call.body));
                if let Some(id) = &call.connection {
                    request = request.with_extension(id.clone());
                }
                match request.send().await {
                    Ok(response) => answer(response, call).await,
                    Err(reqwest_middleware::Error::Middleware(error)) => {
                        Err(match error.downcast_ref::<zoho_auth::Error>() {
                            Some(error) => Box::new(error.clone()),
                            None => error.into(),
                        })
                    }
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// A GET of `url` with no body and no connection.
    pub async fn get(&self, url: &str) -> Result<(u16, String, bool), BoxError> {
        self.request(&Call {
            method: Method::GET,
            url: url.to_owned(),
            body: Sent::Empty,
            connection: None,
        })
        .await
    }
}

/// A reqwest response as `Built::request` reports it; reqwest's `Response::url` must be the URL
/// asked for.
async fn answer(response: reqwest::Response, call: &Call) -> Result<(u16, String, bool), BoxError> {
    match call.url.strip_prefix(zoho_auth::reqwest::API_DOMAIN) {
        // Resolved against the account's api_domain: the URL the request went to.
        Some(path) => assert!(
            response.url().as_str().ends_with(path)
                && response.url().host_str() != Some("api-domain.invalid"),
            "{}",
            response.url()
        ),
        None => assert_eq!(response.url().as_str(), call.url, "Response::url kept"),
    }
    let status = response.status().as_u16();
    let withheld = response.extensions().get::<TokenWithheld>().is_some();
    Ok((status, response.text().await?, withheld))
}
