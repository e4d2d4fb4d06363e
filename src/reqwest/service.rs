//! [`ZohoReqwest`]: the layer over reqwest, as a tower service of reqwest's own requests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::convert::{self, IncomingBody, ReqwestHead};
use crate::connections::ConnectionId;
use crate::layer::{ResponseBody, ZohoAuth};
use crate::ZohoAuthLayer;

/// What [`ZohoReqwest`] sends through: a reqwest client (or a `ClientWithMiddleware`), its
/// answers read by the layer as `http` responses.
#[derive(Clone, Debug)]
pub struct Transport<C> {
    client: C,
}

impl<C> Service<reqwest::Request> for Transport<C>
where
    C: Service<reqwest::Request, Response = reqwest::Response>,
    C::Error: Into<BoxError>,
{
    type Response = http::Response<IncomingBody>;
    type Error = BoxError;
    type Future = TransportFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.client.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        TransportFuture {
            future: self.client.call(request),
        }
    }
}

pin_project! {
    /// The future of [`Transport`]: reqwest's own, its response as the layer reads it.
    pub struct TransportFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F, E> Future for TransportFuture<F>
where
    F: Future<Output = Result<reqwest::Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<IncomingBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().future.poll(cx)).map_err(Into::into)?;
        Poll::Ready(Ok(convert::from_reqwest(response)))
    }
}

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
    inner: ZohoAuth<Transport<C>>,
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
            inner: tower_layer::Layer::layer(layer, Transport { client }),
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
    type Future = ResponseFuture<LayerFuture<C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_inner_ready(cx)
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        ResponseFuture {
            future: self.inner.start(request, self.connection.as_ref()),
        }
    }
}

type LayerFuture<C> = crate::layer::ResponseFuture<
    TransportFuture<<C as Service<reqwest::Request>>::Future>,
    Transport<C>,
    ReqwestHead,
    IncomingBody,
>;

pin_project! {
    /// The future of [`ZohoReqwest`]: the layer's, its response a reqwest one again.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody<IncomingBody>>, BoxError>>,
{
    type Output = Result<reqwest::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().future.poll(cx))?;
        Poll::Ready(Ok(convert::to_response(response)))
    }
}
