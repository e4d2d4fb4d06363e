//! [`ZohoClient`]: an HTTPS client for Zoho's APIs with the layer built in, as one type to name.
//!
//! `ZohoClient::new(cache)` is hyper-util's pooled client over rustls (the `ring` provider and
//! the webpki roots, so nothing needs a C toolchain or the system's certificates), HTTP/1.1,
//! behind a [`ZohoAuthLayer`], boxed into a cloneable `Send + Sync` service. Hold it in axum
//! `State` or a struct, clone it into tasks, call it from many at once; every clone shares the
//! token cache and the connection pool.
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use zoho_auth::{accounts::AccountsClient, client::ZohoClient, sim::Simulator, Accounts, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let zoho_sim = Simulator::start().await?; // with real Zoho: `AccountsClient::new(DataCenter::Eu, ..)`
//! let accounts = AccountsClient::new(Accounts::custom(&zoho_sim.url())?, zoho_sim.client_id(), zoho_sim.client_secret())?;
//! let zoho = ZohoClient::new(TokenCache::new(accounts, zoho_sim.mint_refresh_token(&[])))?;
//!
//! // A relative URL goes to the account's own API host (the token's api_domain).
//! let request = Request::get("/crm/v8/users?type=CurrentUser").body(Full::new(Bytes::new()))?;
//! let response = zoho.request(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert!(body.starts_with(b"{\"users\""));
//! # Ok(()) }
//! ```
//!
//! Plain `http` is allowed by the connector, but the layer never sends the token over it except
//! to loopback (the simulator, a local proxy): a Zoho host over `http` is refused before
//! anything is sent.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{BoxError, Layer, ServiceExt};
use tower_service::Service;

use crate::cache::TokenCache;
use crate::error::Error;
use crate::layer::{RequestBody, ResponseBody, ZohoAuthLayer};

/// What a [`ZohoClient`] answers: the status, headers and a streaming body.
pub type ZohoResponse = Response<ResponseBody<Incoming>>;

/// The pooled hyper-util client under a [`ZohoClient`], typed for the bodies the layer sends. It
/// also sends requests that bypass the layer: `request.map(RequestBody::from)`.
pub type HttpsClient<B = Full<Bytes>> = Client<HttpsConnector<HttpConnector>, RequestBody<B>>;

/// A pooled HTTPS client: hyper-util over rustls with the `ring` provider and the webpki roots,
/// HTTP/1.1. What [`ZohoClient::new`] wraps; use it to build your own stack around the layer.
pub fn https<B>() -> Result<HttpsClient<B>, Error>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config()?)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// An HTTP client for Zoho's APIs: requests go through a [`ZohoAuthLayer`], so they carry the
/// token, relative URLs go to the account's `api_domain`, and a dead token is refreshed once and
/// the request replayed.
///
/// A boxed [`tower::Service`]: cheap to clone, `Send + Sync`, with a `Send` future and a named
/// response type, [`ZohoResponse`]. `B` is the request body, `Full<Bytes>` unless you choose.
pub struct ZohoClient<B = Full<Bytes>> {
    service: BoxCloneSyncService<Request<B>, ZohoResponse, BoxError>,
}

impl<B> ZohoClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The layer's defaults over [`https()`]: the token goes to the cache's data centre and
    /// the token's `api_domain`.
    pub fn new(cache: TokenCache) -> Result<Self, Error> {
        Self::with_layer(ZohoAuthLayer::new(cache))
    }

    /// A layer you configured ([`allow_host`](ZohoAuthLayer::allow_host),
    /// [`route`](ZohoAuthLayer::route), ...) over [`https()`].
    pub fn with_layer(layer: ZohoAuthLayer) -> Result<Self, Error> {
        Ok(Self::from_service(layer.layer(https::<B>()?)))
    }
}

impl<B> ZohoClient<B> {
    /// Boxes a stack of your own — say a `ServiceBuilder` with a redirect policy, a timeout and
    /// a concurrency limit around the layer and [`https()`] — into the same type.
    pub fn from_service<S>(service: S) -> Self
    where
        S: Service<Request<B>, Response = ZohoResponse> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
    {
        Self {
            service: BoxCloneSyncService::new(service.map_err(Into::into)),
        }
    }

    /// Sends `request` on a clone of this client, as hyper-util's `Client::request` does: no
    /// `&mut`, no `ready()` first.
    pub fn request(
        &self,
        request: Request<B>,
    ) -> Oneshot<BoxCloneSyncService<Request<B>, ZohoResponse, BoxError>, Request<B>> {
        self.service.clone().oneshot(request)
    }
}

impl<B> Clone for ZohoClient<B> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
        }
    }
}

impl<B> fmt::Debug for ZohoClient<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZohoClient").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for ZohoClient<B> {
    type Response = ZohoResponse;
    type Error = BoxError;
    type Future =
        <BoxCloneSyncService<Request<B>, ZohoResponse, BoxError> as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.service.call(request)
    }
}
