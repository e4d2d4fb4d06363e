//! The bodies the layer hands on: a request body that can be sent twice, and a response body
//! that may start with bytes the layer already read to classify it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower::BoxError;

use crate::error::{Error, Kind};

pin_project! {
    /// The request body the inner service receives: the caller's body as it was, or its bytes
    /// when the layer buffered it to be able to resend it.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    #[derive(Debug)]
    enum RequestKind<B> {
        // The caller's body, streamed through.
        Stream {
            #[pin]
            body: B,
        },
        // A buffered copy, replayable at no cost. Boxed, so that a streamed request is no bigger
        // than its body: hyper-util moves requests many times on the way to the socket.
        Buffered {
            frames: Box<Frames>,
        },
    }
}

/// Buffered frames still to be yielded: the data, then the trailers.
#[derive(Debug, Default)]
struct Frames {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Frames {
    fn next(&mut self) -> Option<Frame<Bytes>> {
        self.data
            .take()
            .map(Frame::data)
            .or_else(|| self.trailers.take().map(Frame::trailers))
    }

    fn is_empty(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn len(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.len() as u64)
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn stream(body: B) -> Self {
        Self {
            kind: RequestKind::Stream { body },
        }
    }

    pub(crate) fn buffered(copy: &BufferedBody) -> Self {
        Self {
            kind: RequestKind::Buffered {
                frames: Box::new(Frames {
                    data: Some(copy.data.clone()).filter(|data| !data.is_empty()),
                    trailers: copy.trailers.as_deref().cloned(),
                }),
            },
        }
    }
}

/// The caller's body, streamed through: lets a service typed for `RequestBody<B>` — a hyper-util
/// `Client<_, RequestBody<Full<Bytes>>>` behind the layer — also send requests that bypass the
/// layer, `request.map(RequestBody::from)`, over the same connection pool.
impl<B> From<B> for RequestBody<B> {
    fn from(body: B) -> Self {
        Self::stream(body)
    }
}

/// Back to the caller's body type, for an inner service that takes `Full<Bytes>` (see
/// [`ConvertBody`](crate::ConvertBody)). Nothing is lost: a streamed `Full` is handed back as it
/// was, and a buffered copy of one holds only data, since a `Full` has no trailers.
impl From<RequestBody<Full<Bytes>>> for Full<Bytes> {
    fn from(body: RequestBody<Full<Bytes>>) -> Self {
        match body.kind {
            RequestKind::Stream { body } => body,
            RequestKind::Buffered { frames } => Full::new(frames.data.unwrap_or_default()),
        }
    }
}

/// Back to a `reqwest::Body`, for reqwest under the layer: a streamed body as it was, and a
/// buffered copy as bytes in memory, which reqwest (and a retry middleware below) can clone.
impl<B: Into<reqwest::Body>> From<RequestBody<B>> for reqwest::Body {
    fn from(body: RequestBody<B>) -> Self {
        match body.kind {
            RequestKind::Stream { body } => body.into(),
            RequestKind::Buffered { frames } if frames.trailers.is_none() => {
                reqwest::Body::from(frames.data.unwrap_or_default())
            }
            RequestKind::Buffered { frames } => reqwest::Body::wrap(RequestBody::<Full<Bytes>> {
                kind: RequestKind::Buffered { frames },
            }),
        }
    }
}

impl<B> Default for RequestBody<B> {
    /// An empty body.
    fn default() -> Self {
        Self::buffered(&BufferedBody::default())
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            RequestKindProj::Stream { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(frame_to_bytes))),
            RequestKindProj::Buffered { frames } => Poll::Ready(frames.next().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Stream { body } => body.is_end_stream(),
            RequestKind::Buffered { frames } => frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Stream { body } => body.size_hint(),
            RequestKind::Buffered { frames } => SizeHint::with_exact(frames.len()),
        }
    }
}

/// A whole request body in memory, kept to send it again.
#[derive(Clone, Debug, Default)]
pub(crate) struct BufferedBody {
    data: Bytes,
    // Boxed: trailers are rare, and every attempt on the hot path carries a `BufferedBody`.
    trailers: Option<Box<HeaderMap>>,
}

impl BufferedBody {
    /// Reads all of `body`, failing once it yields more than `limit` bytes: its size hint decided
    /// that it was worth buffering, but only counting what it yields bounds the memory.
    pub(crate) async fn read<B>(body: B, limit: usize) -> Result<Self, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let collected = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.is::<LengthLimitError>() {
                Error::new(
                    Kind::Body,
                    format!(
                        "the request body is longer than its size hint said: it went past the \
                         {limit}-byte replay buffer (max_replay_body)"
                    ),
                )
            } else {
                Error::new(Kind::Body, "reading the request body failed").with_source(BoxSource(e))
            }
        })?;
        let trailers = collected.trailers().cloned().map(Box::new);
        Ok(Self {
            data: collected.to_bytes(),
            trailers,
        })
    }
}

pin_project! {
    /// The response body the caller receives: the inner service's body untouched, or — for a
    /// small error response the layer read to classify — the bytes it read, followed by whatever
    /// the body still had.
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        // Streamed straight through.
        Inner {
            #[pin]
            body: B,
        },
        // Read (partly) by the layer; nothing is lost. Boxed like the request's copy: only error
        // responses are read.
        Buffered {
            read: Box<ReadAhead<B>>,
        },
    }
}

/// What the layer read of a response, and what it left.
struct ReadAhead<B> {
    frames: Frames,
    /// The error the body ended with, yielded after the data.
    error: Option<BoxError>,
    /// The unread rest of a body longer than the read limit.
    rest: Option<Pin<Box<B>>>,
    /// The body, read to its end: kept for what it carries besides its frames (a reqwest
    /// response's final URL).
    ended: Option<Pin<Box<B>>>,
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ResponseKind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            ResponseKind::Buffered { read } => f
                .debug_struct("ResponseBody::Buffered")
                .field("buffered_bytes", &read.frames.len())
                .finish_non_exhaustive(),
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: ResponseKind::Inner { body },
        }
    }

    /// The bytes read, when the layer read the whole body.
    pub(crate) fn complete_bytes(&self) -> Option<&[u8]> {
        match &self.kind {
            ResponseKind::Buffered { read } if read.error.is_none() && read.rest.is_none() => {
                Some(read.frames.data.as_deref().unwrap_or_default())
            }
            _ => None,
        }
    }
}

/// A `reqwest::Body` again, for a reqwest front end: the body as reqwest gave it, unless the
/// layer read some of it.
impl<B> From<ResponseBody<B>> for reqwest::Body
where
    B: Body + Into<reqwest::Body> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    fn from(body: ResponseBody<B>) -> Self {
        match body.kind {
            ResponseKind::Inner { body } => body.into(),
            kind => reqwest::Body::wrap(ResponseBody { kind }),
        }
    }
}

impl<B> ResponseBody<B> {
    /// The inner service's body, when the layer did not read it; else this body back.
    pub(crate) fn into_inner(self) -> Result<B, Self> {
        match self.kind {
            ResponseKind::Inner { body } => Ok(body),
            kind => Err(Self { kind }),
        }
    }

    /// The inner service's body, read or not: what it carries besides its frames.
    pub(crate) fn source(&self) -> Option<&B> {
        match &self.kind {
            ResponseKind::Inner { body } => Some(body),
            ResponseKind::Buffered { read } => read.rest.as_deref().or(read.ended.as_deref()),
        }
    }
}

impl<B> ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Reads `body` until it ends or holds more than `limit` bytes. Either way the result yields
    /// exactly what `body` would have.
    pub(crate) async fn read_prefix(body: B, limit: usize) -> Self {
        let mut body = Box::pin(body);
        let mut data = BytesMut::new();
        let (trailers, error, more) = loop {
            match body.frame().await {
                None => break (None, None, false),
                Some(Err(error)) => break (None, Some(error.into()), false),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut chunk) => {
                        data.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                        if data.len() > limit {
                            break (None, None, true);
                        }
                    }
                    Err(frame) => break (frame.into_trailers().ok(), None, false),
                },
            }
        };
        let (rest, ended) = if more {
            (Some(body), None)
        } else {
            (None, Some(body))
        };
        Self {
            kind: ResponseKind::Buffered {
                read: Box::new(ReadAhead {
                    frames: Frames {
                        data: Some(data.freeze()).filter(|data| !data.is_empty()),
                        trailers,
                    },
                    error,
                    rest,
                    ended,
                }),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ResponseKindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(frame_to_bytes).map_err(Into::into))),
            ResponseKindProj::Buffered { read } => {
                if let Some(data) = read.frames.data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(body) = &mut read.rest {
                    let frame = ready!(body.as_mut().poll_frame(cx));
                    if frame.is_none() {
                        read.rest = None;
                    }
                    return Poll::Ready(frame.map(|f| f.map(frame_to_bytes).map_err(Into::into)));
                }
                if let Some(error) = read.error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(read.frames.next().map(Ok))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Inner { body } => body.is_end_stream(),
            ResponseKind::Buffered { read } => {
                read.frames.is_empty()
                    && read.error.is_none()
                    && read.rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Buffered { read } => {
                let buffered = read.frames.len();
                let rest = read
                    .rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint.set_lower(rest.lower() + buffered);
                hint
            }
        }
    }
}

fn frame_to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

/// Lets a boxed error be an [`Error`]'s source.
#[derive(Debug)]
struct BoxSource(BoxError);

impl std::fmt::Display for BoxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
