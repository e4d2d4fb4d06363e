//! The request as the layer's decisions see it, whichever front end it came through: an `http`
//! request (the tower layer) or a reqwest one (`ZohoReqwest`, the middleware), read and changed
//! in place, so that no front end converts its requests to another's types on the way.

use std::future::Future;
use std::marker::PhantomData;

use http::{Extensions, HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

use super::body::{BufferedBody, RequestBody};
use super::reply::Reply;
use crate::connections::ConnectionId;
use crate::hosts::Address;
#[cfg(feature = "connections")]
use {super::source::Many, crate::cache::TokenCache, crate::error::Error};

/// A request a front end hands to the layer. The layer decides on it in place and moves it only
/// to send it: a front end's request can be large (a reqwest request is 264 bytes).
pub(crate) trait Outgoing: Authorizable + Send + 'static {
    /// Where it goes.
    type Address: Address;
    /// The request as it is sent on.
    type Sent: Authorizable + Send;
    /// What a replay keeps of it.
    type Head: Head<Sent = Self::Sent>;

    /// Where it goes.
    fn address(&self) -> &Self::Address;

    /// Where it goes, to resolve a relative address.
    fn address_mut(&mut self) -> &mut Self::Address;

    /// Whether it can be sent again after a token error, read from its body's size.
    fn replayable(&self, limit: usize) -> Replayable;

    /// A copy of all of it but the body, for a replay.
    fn head(&self) -> Self::Head;

    /// The request to send, its body streamed through.
    fn stream(self) -> Self::Sent;

    /// The request to send with its body read into memory (at most `limit` bytes), and that copy
    /// of the body for a replay.
    fn buffer(
        self,
        limit: usize,
    ) -> impl Future<Output = Result<(Self::Sent, BufferedBody), BoxError>> + Send;

    /// Its connection, over [`Connections`](crate::Connections): `connection` if the front end
    /// names one, else the one the request names or the layer's selector finds.
    #[cfg(feature = "connections")]
    fn select(&self, many: &Many, connection: Option<&ConnectionId>) -> Result<TokenCache, Error>;
}

/// A request the token can be put on: as the front end gave it, as it is sent on, as a replay.
pub(crate) trait Authorizable: Sized {
    /// Its headers, to attach the token to.
    fn headers_mut(&mut self) -> &mut HeaderMap;
}

/// What a replay keeps of a front end's request.
pub(crate) type HeadOf<Q> = <Q as Outgoing>::Head;

/// What a replay keeps of a request: everything but its body.
pub(crate) trait Head: Sized + Send + 'static {
    /// Where it goes.
    type Address: Address;
    /// The request it becomes again.
    type Sent: Authorizable + Send;

    /// Where it goes, to resolve it again against a fresh token; `None` if the copy cannot be
    /// read back (then the request is not resent).
    fn address_mut(&mut self) -> Option<&mut Self::Address>;

    /// The request again, with `body` (the caller attaches the fresh token); `None` as for
    /// [`address_mut`](Self::address_mut).
    fn into_request(self, body: &BufferedBody) -> Option<Self::Sent>;
}

/// The service below the layer, as carrying a plan out needs it: it answers `Q` with `R`, and
/// can be cloned for a replay and moved into the boxed slow path.
pub(crate) trait Below<Q, R: Reply>:
    Service<Q, Response = R, Future: Send + 'static, Error: Into<BoxError>> + Clone + Send + 'static
{
}

impl<T, Q, R> Below<Q, R> for T
where
    R: Reply,
    T: Service<Q, Response = R> + Clone + Send + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
{
}

/// Whether a request can be sent again after a token error, read once from its body's size.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replayable {
    /// The body has ended: resent with no copy of it.
    Empty,
    /// A known size within the replay limit: buffered first to be resent. The size is only a
    /// hint, so buffering stops at the limit whatever it said.
    AfterBuffering,
    /// Unknown or too large: streamed once, never resent.
    No,
}

impl Replayable {
    /// For a request with `body` (`None`: none at all).
    pub(crate) fn of<B: Body>(body: Option<&B>, limit: usize) -> Self {
        let Some(body) = body else {
            return Self::Empty;
        };
        match body.size_hint().exact() {
            // Only the end of the stream proves there is nothing to copy: a body whose hint says
            // 0 may still yield data (or trailers), which a replay must not drop.
            _ if body.is_end_stream() => Self::Empty,
            Some(size) if size <= limit as u64 => Self::AfterBuffering,
            _ => Self::No,
        }
    }
}

impl<B> Outgoing for Request<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Address = Uri;
    type Sent = Request<RequestBody<B>>;
    type Head = HttpHead<B>;

    #[inline]
    fn address(&self) -> &Uri {
        self.uri()
    }

    #[inline]
    fn address_mut(&mut self) -> &mut Uri {
        self.uri_mut()
    }

    #[inline]
    fn replayable(&self, limit: usize) -> Replayable {
        Replayable::of(Some(self.body()), limit)
    }

    #[inline]
    fn head(&self) -> HttpHead<B> {
        HttpHead {
            method: self.method().clone(),
            uri: self.uri().clone(),
            version: self.version(),
            headers: kept_headers(self.headers()),
            extensions: KeptExtensions::of(self.extensions()),
            _body: PhantomData,
        }
    }

    #[inline]
    fn stream(self) -> Self::Sent {
        self.map(RequestBody::stream)
    }

    async fn buffer(self, limit: usize) -> Result<(Self::Sent, BufferedBody), BoxError> {
        let (parts, body) = self.into_parts();
        let body = BufferedBody::read(body, limit).await?;
        Ok((
            Request::from_parts(parts, RequestBody::buffered(&body)),
            body,
        ))
    }

    #[cfg(feature = "connections")]
    fn select(&self, many: &Many, connection: Option<&ConnectionId>) -> Result<TokenCache, Error> {
        let id = connection.or_else(|| self.extensions().get::<ConnectionId>());
        many.pick(id, |select| {
            select(&super::RequestHead {
                method: self.method(),
                uri: self.uri(),
                headers: self.headers(),
                extensions: self.extensions(),
            })
        })
    }
}

impl<B> Authorizable for Request<B> {
    #[inline]
    fn headers_mut(&mut self) -> &mut HeaderMap {
        Request::headers_mut(self)
    }
}

/// A request's headers, kept for a replay: `None` for none, which most requests have before the
/// token (no empty map to make and drop; an empty map with spare capacity would even clone its
/// allocation).
#[inline]
pub(crate) fn kept_headers(headers: &HeaderMap) -> Option<HeaderMap> {
    (!headers.is_empty()).then(|| headers.clone())
}

/// What a replay keeps of an `http` request: its method, URI, version, headers and extensions.
/// Only a type parameter of [`ResponseFuture`](super::ResponseFuture), so that the future of
/// `ZohoAuth<S>` can be named: `ResponseFuture<S::Future, S, HttpHead<B>, R>`.
pub struct HttpHead<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Option<HeaderMap>,
    extensions: KeptExtensions,
    _body: PhantomData<fn() -> B>,
}

impl<B> std::fmt::Debug for HttpHead<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHead").finish_non_exhaustive()
    }
}

impl<B: Send + 'static> Head for HttpHead<B> {
    type Address = Uri;
    type Sent = Request<RequestBody<B>>;

    fn address_mut(&mut self) -> Option<&mut Uri> {
        Some(&mut self.uri)
    }

    fn into_request(self, body: &BufferedBody) -> Option<Self::Sent> {
        let mut request = Request::new(RequestBody::buffered(body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        if let Some(headers) = self.headers {
            *request.headers_mut() = headers;
        }
        *request.extensions_mut() = self.extensions.into_extensions();
        Some(request)
    }
}

/// A request's extensions, kept for a replay.
enum KeptExtensions {
    /// Only the request's connection, as most requests through a layer over connections carry:
    /// kept without copying the map, which costs three allocations and their frees per request.
    Connection(ConnectionId),
    All(Extensions),
}

impl KeptExtensions {
    #[inline]
    fn of(extensions: &Extensions) -> Self {
        // The length first: no lookup for a request without extensions.
        let only = (extensions.len() == 1).then(|| extensions.get::<ConnectionId>());
        match only.flatten() {
            Some(id) => Self::Connection(id.clone()),
            None => Self::All(extensions.clone()),
        }
    }

    fn into_extensions(self) -> Extensions {
        match self {
            Self::Connection(id) => {
                let mut extensions = Extensions::new();
                extensions.insert(id);
                extensions
            }
            Self::All(extensions) => extensions,
        }
    }
}
