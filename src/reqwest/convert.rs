//! Between reqwest's requests and responses and what the layer's decisions read.
//!
//! A reqwest request goes through the layer as it is: the layer reads its URL in place, attaches
//! the token to its headers and, for a replay, keeps a copy of its head — it is never turned into
//! an `http` request, whose `Uri` would be parsed again from the URL. The response is read in
//! place too (its status and length) and goes back as it came; only a response whose body the
//! layer reads becomes an `http` one for the while, its status, headers and extensions in the
//! `http` response and the rest in [`IncomingBody`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, HeaderMap, Method, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use reqwest::ResponseBuilderExt;
use tower::BoxError;
use url::{Position, Url};

use crate::error::Error;
use crate::hosts::{Address, Kept, Place};
use crate::layer::outgoing::{kept_headers, Authorizable, Head, Outgoing, Replayable};
use crate::layer::reply::Reply;
use crate::layer::{BufferedBody, RequestBody, ResponseBody};
#[cfg(feature = "connections")]
use {crate::cache::TokenCache, crate::connections::ConnectionId, crate::layer::source::Many};

impl Place for Url {
    fn scheme_str(&self) -> Option<&str> {
        Some(self.scheme())
    }

    fn authority_str(&self) -> Option<&str> {
        // As `Uri` would read it from the URL's text: user info, host and port.
        self.has_authority().then(|| self.authority())
    }

    /// The text before the path: `scheme://authority` when there is an authority; otherwise
    /// `scheme:`, which no such text equals.
    #[inline]
    fn origin_str(&self) -> Option<&str> {
        Some(&self[..Position::BeforePath])
    }
}

impl Address for Url {
    fn resolve_with(
        &mut self,
        resolve: impl FnOnce(&Uri) -> Result<Uri, Error>,
    ) -> Result<(), Error> {
        let unusable = |what: &str| Error::config(format!("{what} is not a usable URL"));
        let relative = Uri::try_from(&self[Position::BeforePath..Position::AfterQuery])
            .map_err(|_| unusable("the request's path"))?;
        let absolute = resolve(&relative)?;
        *self = Url::parse(&absolute.to_string()).map_err(|_| unusable("the resolved URI"))?;
        Ok(())
    }

    fn keep(&self) -> Kept {
        Kept::Url(self.clone())
    }
}

impl Outgoing for reqwest::Request {
    type Address = Url;
    type Sent = reqwest::Request;
    type Head = ReqwestHead;

    #[inline]
    fn address(&self) -> &Url {
        self.url()
    }

    #[inline]
    fn address_mut(&mut self) -> &mut Url {
        self.url_mut()
    }

    #[inline]
    fn replayable(&self, limit: usize) -> Replayable {
        Replayable::of(self.body(), limit)
    }

    #[inline(always)]
    fn head(&self) -> ReqwestHead {
        ReqwestHead {
            method: self.method().clone(),
            url: KeptUrl::of(self.url()),
            version: self.version(),
            headers: kept_headers(self.headers()).map(Box::new),
            timeout: self.timeout().copied(),
            body: self.body().is_some(),
        }
    }

    #[inline]
    fn stream(self) -> Self {
        self
    }

    async fn buffer(mut self, limit: usize) -> Result<(Self, BufferedBody), BoxError> {
        let body = match self.body_mut().take() {
            Some(body) => BufferedBody::read(body, limit).await?,
            None => BufferedBody::default(),
        };
        *self.body_mut() = Some(buffered(&body));
        Ok((self, body))
    }

    #[cfg(feature = "connections")]
    fn select(&self, many: &Many, connection: Option<&ConnectionId>) -> Result<TokenCache, Error> {
        many.pick(connection, |select| {
            // Only a selector reads a reqwest request's URL as a `Uri`.
            let uri = Uri::try_from(self.url().as_str()).ok()?;
            select(&crate::layer::RequestHead {
                method: self.method(),
                uri: &uri,
                headers: self.headers(),
                extensions: &http::Extensions::new(),
            })
        })
    }
}

/// A buffered copy as a reqwest body: bytes in memory, which reqwest (and a retry middleware
/// below) can clone.
fn buffered(body: &BufferedBody) -> reqwest::Body {
    RequestBody::<reqwest::Body>::buffered(body).into()
}

impl Authorizable for reqwest::Request {
    #[inline]
    fn headers_mut(&mut self) -> &mut HeaderMap {
        reqwest::Request::headers_mut(self)
    }
}

/// What a replay keeps of a reqwest request: all that reqwest 0.13 lets a request carry but its
/// body. Only a type parameter of the layer's [`ResponseFuture`](crate::ResponseFuture) inside
/// [`ZohoReqwest`](super::ZohoReqwest)'s.
///
/// Small, since it moves with the request's future, and allocating nothing for most requests:
/// the URL's text inline when it is at most 94 bytes (else in one allocation of its
/// length; a `Url` clone would be 88 bytes and an allocation too), the headers boxed and only
/// when there are any. Boxing all of it instead made the box's allocation (400 bytes) and its
/// initialisation cost more than the moves it saved.
pub struct ReqwestHead {
    method: Method,
    url: KeptUrl,
    version: Version,
    headers: Option<Box<HeaderMap>>,
    timeout: Option<Duration>,
    /// Whether it had a body at all: a GET goes again without one.
    body: bool,
}

impl std::fmt::Debug for ReqwestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestHead").finish_non_exhaustive()
    }
}

impl Head for ReqwestHead {
    type Address = Url;
    type Sent = reqwest::Request;

    fn address_mut(&mut self) -> Option<&mut Url> {
        self.url.parsed()
    }

    fn into_request(self, body: &BufferedBody) -> Option<reqwest::Request> {
        let mut request = reqwest::Request::new(self.method, self.url.into_url()?);
        *request.version_mut() = self.version;
        if let Some(headers) = self.headers {
            *request.headers_mut() = *headers;
        }
        *request.timeout_mut() = self.timeout;
        *request.body_mut() = self.body.then(|| buffered(body));
        Some(request)
    }
}

/// How long a URL a replay keeps without allocating: most API URLs are shorter
/// (`https://www.zohoapis.com/crm/v8/Leads/5725767000000524157` is 57 bytes).
const INLINE_URL: usize = 94;
// `KeptUrl::Inline` counts the text's length in a `u8`.
const _: () = assert!(INLINE_URL <= u8::MAX as usize);

/// A request's URL as a replay keeps it: its text, read back into a `Url` only if the request
/// is resent.
enum KeptUrl {
    /// The text in place: the first `len` bytes.
    Inline {
        len: u8,
        text: [u8; INLINE_URL],
    },
    Text(Box<str>),
    Parsed(Box<Url>),
}

impl KeptUrl {
    #[inline(always)]
    fn of(url: &Url) -> Self {
        let text = url.as_str();
        if text.len() > INLINE_URL {
            return Self::Text(text.into());
        }
        let mut inline = [0; INLINE_URL];
        inline[..text.len()].copy_from_slice(text.as_bytes());
        Self::Inline {
            len: text.len() as u8,
            text: inline,
        }
    }

    /// The text, unless it has been parsed already.
    fn text(&self) -> Option<&str> {
        match self {
            // Copied from a `str` at a char boundary: always UTF-8.
            Self::Inline { len, text } => std::str::from_utf8(&text[..usize::from(*len)]).ok(),
            Self::Text(text) => Some(text),
            Self::Parsed(_) => None,
        }
    }

    /// The URL again, to change it. Parsing a URL's serialization gives back the same URL (the
    /// `url` crate's normalisation is idempotent), so `None` is for what cannot happen.
    fn parsed(&mut self) -> Option<&mut Url> {
        if let Some(text) = self.text() {
            *self = Self::Parsed(Box::new(parse(text)?));
        }
        match self {
            Self::Parsed(url) => Some(url),
            Self::Inline { .. } | Self::Text(_) => None,
        }
    }

    fn into_url(self) -> Option<Url> {
        match self {
            Self::Parsed(url) => Some(*url),
            text => parse(text.text()?),
        }
    }
}

fn parse(text: &str) -> Option<Url> {
    Url::parse(text).ok()
}

/// A `reqwest::Response` whose body the layer reads: its status, headers and extensions in the
/// `http` response, and the rest of it here, whole until the body is polled.
///
/// `pub` only to be the body of a [`Reply`], which cannot be named outside the crate.
#[derive(Debug)]
pub struct IncomingBody(Incoming);

#[derive(Debug)]
enum Incoming {
    Whole(reqwest::Response),
    /// The layer is reading the body; the final URL is kept for the response handed back.
    Read {
        body: reqwest::Body,
        url: Url,
    },
    /// Only while turning `Whole` into `Read`.
    Moved,
}

impl IncomingBody {
    fn url(&self) -> Option<&Url> {
        match &self.0 {
            Incoming::Whole(response) => Some(response.url()),
            Incoming::Read { url, .. } => Some(url),
            Incoming::Moved => None,
        }
    }

    fn into_body(self) -> reqwest::Body {
        match self.0 {
            Incoming::Whole(response) => http::Response::from(response).into_body(),
            Incoming::Read { body, .. } => body,
            Incoming::Moved => reqwest::Body::from(Bytes::new()),
        }
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let this = self.get_mut();
        if matches!(this.0, Incoming::Whole(_)) {
            if let Incoming::Whole(response) = std::mem::replace(&mut this.0, Incoming::Moved) {
                let url = response.url().clone();
                let body = http::Response::from(response).into_body();
                this.0 = Incoming::Read { body, url };
            }
        }
        match &mut this.0 {
            Incoming::Read { body, .. } => Pin::new(body).poll_frame(cx),
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Incoming::Whole(response) => response.content_length() == Some(0),
            Incoming::Read { body, .. } => body.is_end_stream(),
            Incoming::Moved => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Incoming::Whole(response) => response
                .content_length()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Incoming::Read { body, .. } => body.size_hint(),
            Incoming::Moved => SizeHint::with_exact(0),
        }
    }
}

impl From<IncomingBody> for reqwest::Body {
    fn from(incoming: IncomingBody) -> Self {
        incoming.into_body()
    }
}

/// A reqwest response as the layer reads it: in place, and as an `http` response only when it
/// reads the body.
impl Reply for reqwest::Response {
    type Body = IncomingBody;
    type Out = reqwest::Response;

    #[inline]
    fn status(&self) -> StatusCode {
        reqwest::Response::status(self)
    }

    #[inline]
    fn body_upper(&self) -> Option<u64> {
        self.content_length()
    }

    fn extensions_mut(&mut self) -> &mut Extensions {
        reqwest::Response::extensions_mut(self)
    }

    #[inline]
    fn pass(self) -> Self {
        self
    }

    fn into_http(self) -> http::Response<IncomingBody> {
        from_reqwest(self)
    }

    fn read(response: http::Response<ResponseBody<IncomingBody>>) -> Self {
        to_response(response)
    }
}

fn from_reqwest(mut response: reqwest::Response) -> http::Response<IncomingBody> {
    let mut http = http::Response::new(());
    *http.status_mut() = response.status();
    *http.version_mut() = response.version();
    // Swapped, not taken: no third empty map to make and drop.
    std::mem::swap(http.headers_mut(), response.headers_mut());
    std::mem::swap(http.extensions_mut(), response.extensions_mut());
    http.map(|()| IncomingBody(Incoming::Whole(response)))
}

/// The layer's response as the caller's reqwest response, with the URL reqwest reported.
fn to_response(response: http::Response<ResponseBody<IncomingBody>>) -> reqwest::Response {
    let (mut parts, body) = response.into_parts();
    let body = match body.into_inner() {
        Ok(IncomingBody(Incoming::Whole(mut response))) => {
            // The layer changes a response's headers and extensions, never its status.
            std::mem::swap(response.headers_mut(), &mut parts.headers);
            std::mem::swap(response.extensions_mut(), &mut parts.extensions);
            return response;
        }
        Ok(incoming) => ResponseBody::inner(incoming),
        Err(read) => read,
    };
    let url = body.source().and_then(IncomingBody::url).cloned();
    let mut response = http::Response::from_parts(parts, ());
    if let Some(url) = url {
        // reqwest takes the final URL from its own extension, which only its builder sets.
        if let Ok(carrier) = http::Response::builder().url(url).body(()) {
            response
                .extensions_mut()
                .extend(carrier.into_parts().0.extensions);
        }
    }
    reqwest::Response::from(response.map(|()| reqwest::Body::from(body)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::hosts::Target;

    #[test]
    fn a_url_is_read_as_the_uri_parsed_from_it_would_be() {
        for url in [
            "https://www.zohoapis.com/crm/v8/Leads?page=2",
            "http://user:secret@127.0.0.1:8080/x?y=1",
            "https://[::1]:9000/",
            "https://www.zohoapis.com:443/crm",
            "https://api-domain.invalid/crm",
        ] {
            let url: Url = url.parse().unwrap();
            let uri = Uri::try_from(url.as_str()).unwrap();
            assert_eq!(Place::scheme_str(&url), Place::scheme_str(&uri), "{url}");
            assert_eq!(url.authority_str(), uri.authority_str(), "{url}");
            let (from_url, from_uri) = (Target::of(&url).unwrap(), Target::of(&uri).unwrap());
            assert_eq!(from_url.host(), from_uri.host(), "{url}");
        }
    }

    #[test]
    fn a_kept_url_reads_back_as_it_was() {
        let long = format!(
            "https://www.zohoapis.com/crm/v8/Leads?fields={}",
            "Last_Name,".repeat(40)
        );
        for url in [
            "https://www.zohoapis.com/crm/v8/Leads?page=2#top",
            "http://user:secret@127.0.0.1:8080/x?y=1",
            "https://[::1]:9000/a%20b/%E2%9C%93?q=%26&r",
            "https://desk.zoho.eu/api/v1/tickets/",
            long.as_str(),
        ] {
            let url: Url = url.parse().unwrap();
            let mut copy = KeptUrl::of(&url);
            assert_eq!(KeptUrl::of(&url).into_url(), Some(url.clone()), "{url}");
            assert_eq!(copy.parsed(), Some(&mut url.clone()), "{url}");
            assert_eq!(copy.into_url(), Some(url.clone()), "{url}");
        }
    }

    #[test]
    fn a_url_that_fits_is_kept_in_place_and_a_longer_one_reads_back_too() {
        let base = "https://www.zohoapis.com/crm/v8/Leads/";
        for len in [INLINE_URL - 1, INLINE_URL, INLINE_URL + 1, 256, 300] {
            let url: Url = format!("{base}{}", "7".repeat(len - base.len()))
                .parse()
                .unwrap();
            assert_eq!(url.as_str().len(), len);
            let copy = KeptUrl::of(&url);
            assert_eq!(
                matches!(copy, KeptUrl::Inline { .. }),
                len <= INLINE_URL,
                "{len}"
            );
            assert_eq!(copy.into_url(), Some(url), "{len}");
        }
    }

    proptest::proptest! {
        // Whatever a caller writes after the host — any characters, percent signs, dots — the
        // URL reqwest parsed from it reads back as that URL.
        #[test]
        fn any_parsed_url_reads_back_as_it_was(
            secure in proptest::bool::ANY,
            host in "[a-z0-9.-]{1,30}|\\[::[0-9]{1,4}\\]",
            rest in "\\PC{0,300}",
        ) {
            let scheme = if secure { "https" } else { "http" };
            if let Ok(url) = Url::parse(&format!("{scheme}://{host}/{rest}")) {
                proptest::prop_assert_eq!(KeptUrl::of(&url).into_url(), Some(url));
            }
        }
    }

    #[test]
    fn a_resolved_url_keeps_its_path_and_query_on_the_new_origin() {
        let mut url: Url = "https://api-domain.invalid/crm/v8/Leads?page=2#top"
            .parse()
            .unwrap();
        url.resolve_with(|relative| {
            assert_eq!(relative, "/crm/v8/Leads?page=2");
            Ok(format!("https://www.zohoapis.eu{relative}")
                .parse()
                .unwrap())
        })
        .unwrap();
        assert_eq!(url.as_str(), "https://www.zohoapis.eu/crm/v8/Leads?page=2");
    }

    #[test]
    fn a_replay_is_the_request_again_with_the_buffered_body() {
        let mut request = reqwest::Request::new(
            Method::POST,
            "https://www.zohoapis.com/crm".parse().unwrap(),
        );
        *request.body_mut() = Some(reqwest::Body::from("{}"));
        *request.timeout_mut() = Some(Duration::from_secs(7));
        request
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static("7"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (request, body) = runtime.block_on(request.buffer(1024)).unwrap();
        let sent = request.head().into_request(&body).unwrap();
        assert_eq!(sent.method(), Method::POST);
        assert_eq!(sent.url().as_str(), "https://www.zohoapis.com/crm");
        assert_eq!(sent.timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(sent.headers()["x-tenant"], "7");
        assert_eq!(
            sent.body().and_then(reqwest::Body::as_bytes),
            Some(&b"{}"[..])
        );
        // A GET goes again without a body, as it went.
        let get =
            reqwest::Request::new(Method::GET, "https://www.zohoapis.com/crm".parse().unwrap());
        let again = get.head().into_request(&BufferedBody::default()).unwrap();
        assert!(again.body().is_none());
    }
}
