//! The response as the layer's decisions see it, whichever front end it goes back through: an
//! `http` response (the tower layer) or a reqwest one (`ZohoReqwest`, the middleware). The layer
//! reads its status and announced size in place, and turns it into an `http` response only for
//! the rare body it reads — so a reqwest response the layer does not read goes back as it came.

use http::{Extensions, Response, StatusCode};
use http_body::Body;
use tower::BoxError;

use super::body::ResponseBody;

/// A response body from the service below, as the layer passes it on or reads it (`pub` as
/// [`Reply`] is).
pub trait Answer: Body<Error: Into<BoxError>> + Send + 'static {}

impl<R> Answer for R where R: Body<Error: Into<BoxError>> + Send + 'static {}

/// A response from the service below: the bound on [`ResponseFuture`](super::ResponseFuture)'s
/// last parameter. `pub` only for that bound; it cannot be named outside the crate (a sealed
/// trait), and its two implementations are `http::Response<B>` and `reqwest::Response`.
pub trait Reply: Send + 'static {
    /// Its body, as the layer reads it.
    type Body: Answer;
    /// What the front end's caller gets back.
    type Out: Send + 'static;

    /// Its status.
    fn status(&self) -> StatusCode;

    /// The most its body can be, if that is known.
    fn body_upper(&self) -> Option<u64>;

    /// Its extensions, to say why a token was withheld.
    fn extensions_mut(&mut self) -> &mut Extensions;

    /// The response for the caller, the layer not having read it.
    fn pass(self) -> Self::Out;

    /// The response as an `http` one, to read its body.
    fn into_http(self) -> Response<Self::Body>;

    /// A response the layer has read (as far as its limit), for the caller.
    fn read(response: Response<ResponseBody<Self::Body>>) -> Self::Out;
}

impl<B: Answer> Reply for Response<B> {
    type Body = B;
    type Out = Response<ResponseBody<B>>;

    #[inline]
    fn status(&self) -> StatusCode {
        Response::status(self)
    }

    #[inline]
    fn body_upper(&self) -> Option<u64> {
        self.body().size_hint().upper()
    }

    fn extensions_mut(&mut self) -> &mut Extensions {
        Response::extensions_mut(self)
    }

    #[inline]
    fn pass(self) -> Self::Out {
        self.map(ResponseBody::inner)
    }

    fn into_http(self) -> Self {
        self
    }

    fn read(response: Self::Out) -> Self::Out {
        response
    }
}
