//! [`ConvertBody`]: puts the layer on top of a service that takes the caller's own body type.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower_service::Service;

use super::body::RequestBody;

/// Adapts an inner service that takes `Request<T>` — such as a hyper-util
/// `Client<_, Full<Bytes>>` the application already has, and its connection pool — to the
/// `Request<RequestBody<B>>` that [`ZohoAuth`](crate::ZohoAuth) sends: each body becomes a `T`
/// through `T: From<RequestBody<B>>`, which `Full<Bytes>` (the default) implements without
/// copying.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower::Layer;
/// use zoho_auth::{ConvertBody, TokenCache, ZohoAuthLayer};
///
/// fn authenticated(cache: TokenCache) {
///     // The application's client, pool and all; it keeps serving unauthenticated calls.
///     let plain: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
///     let zoho = ZohoAuthLayer::new(cache).layer(ConvertBody::new(plain.clone()));
///     # let _ = zoho;
/// }
/// ```
pub struct ConvertBody<S, T = Full<Bytes>> {
    inner: S,
    _body: PhantomData<fn(T)>,
}

impl<S> ConvertBody<S> {
    /// Wraps `inner`, which takes `Request<Full<Bytes>>`.
    pub fn new(inner: S) -> Self {
        Self::for_body(inner)
    }
}

impl<S, T> ConvertBody<S, T> {
    /// Wraps `inner`, which takes `Request<T>`: `ConvertBody::<_, MyBody>::for_body(inner)`.
    pub fn for_body(inner: S) -> Self {
        Self {
            inner,
            _body: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

// By hand: a derive would require `T: Clone` and `T: Debug`, which only the marker mentions.
impl<S: Clone, T> Clone for ConvertBody<S, T> {
    fn clone(&self) -> Self {
        Self::for_body(self.inner.clone())
    }
}

impl<S: fmt::Debug, T> fmt::Debug for ConvertBody<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvertBody")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B, T> Service<Request<RequestBody<B>>> for ConvertBody<S, T>
where
    S: Service<Request<T>>,
    T: From<RequestBody<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody<B>>) -> Self::Future {
        self.inner.call(request.map(T::from))
    }
}
