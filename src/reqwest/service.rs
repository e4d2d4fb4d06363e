//! [`ZohoReqwest`]: the layer over reqwest, as a tower service of reqwest's own requests.

use std::fmt;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use super::convert::ReqwestHead;
use crate::connections::ConnectionId;
use crate::layer::{ResponseFuture, ZohoAuth};
use crate::ZohoAuthLayer;

/// The layer over reqwest: a tower [`Service`] of `reqwest::Request` that answers
/// `reqwest::Response`, for reqwest users who stack tower layers (a timeout, a concurrency
/// limit, a retry) and keep reqwest's builder — `.json()`, `.query()`, `error_for_status()`,
/// `Response::url()`.
///
/// Every request goes through the same [`ZohoAuthLayer`] as a tower stack's: the token only to
/// the account's Zoho hosts, dead tokens recognised in every product's dialect, one refresh and
/// one replay. Over [`Connections`](crate::Connections), the connection is chosen per request by
/// [`select_connection`](ZohoAuthLayer::select_connection), or for every request of a handle
/// made by [`for_connection`](Self::for_connection) (reqwest keeps a request's extensions to
/// itself).
///
/// `C` is the client: a `reqwest::Client`, or a `reqwest_middleware::ClientWithMiddleware` whose
/// middlewares then run below the layer, on each send and on the replay. The error is a
/// [`BoxError`]: a `reqwest::Error` (or the middleware client's) from the client, a
/// [`crate::Error`] from the layer.
pub struct ZohoReqwest<C = reqwest::Client> {
    inner: ZohoAuth<C>,
    connection: Option<ConnectionId>,
}

impl<C: Clone> Clone for ZohoReqwest<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            connection: self.connection.clone(),
        }
    }
}

impl<C> fmt::Debug for ZohoReqwest<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZohoReqwest")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl<C: Clone> ZohoReqwest<C> {
    /// `client` under `layer`.
    pub fn new(client: C, layer: &ZohoAuthLayer) -> Self {
        Self {
            inner: tower_layer::Layer::layer(layer, client),
            connection: None,
        }
    }

    /// The same service, sending every request for connection `id` (a layer over
    /// [`Connections`](crate::Connections)). Cheap.
    #[must_use]
    pub fn for_connection(&self, id: ConnectionId) -> Self {
        Self {
            connection: Some(id),
            ..self.clone()
        }
    }
}

impl<C> Service<reqwest::Request> for ZohoReqwest<C>
where
    C: Service<reqwest::Request, Response = reqwest::Response> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = reqwest::Response;
    type Error = BoxError;
    type Future = ResponseFuture<C::Future, C, ReqwestHead, reqwest::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_inner_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        self.inner.start(request, self.connection.as_ref())
    }
}
