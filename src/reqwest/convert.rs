//! Between reqwest's requests and responses and `http`'s, which the layer works on.
//!
//! Each goes through the layer with the reqwest value it came from kept in its body: the request
//! (its parsed URL, its timeout) is sent again with the layer's method, URI and headers, and the
//! response comes back whole unless the layer read its body. reqwest's own conversions would
//! format and parse the URL again and box each body once more.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::{Body, Frame, SizeHint};
use reqwest::ResponseBuilderExt;
use tower::BoxError;
use url::{Position, Url};

use crate::layer::{RequestBody, ResponseBody};

/// A `reqwest::Request`'s body on its way through the layer, with the request it came from.
///
/// The body [`Transport`](super::Transport) takes from the layer; of use only inside
/// [`ZohoReqwest`](super::ZohoReqwest) and the middleware.
#[derive(Debug)]
pub struct OutgoingBody {
    body: Option<reqwest::Body>,
    /// The request, its method, headers and body moved into the `http` request: reused to send
    /// it, so that its URL is not parsed again.
    request: Option<Box<reqwest::Request>>,
}

/// A per-request timeout, kept in the extensions so that a replay, whose body the layer
/// buffered, keeps it too.
#[derive(Clone, Copy)]
struct Timeout(Duration);

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        match &mut self.get_mut().body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl From<OutgoingBody> for reqwest::Body {
    fn from(outgoing: OutgoingBody) -> Self {
        outgoing
            .body
            .unwrap_or_else(|| reqwest::Body::from(Bytes::new()))
    }
}

/// A reqwest request as the layer takes it.
pub(super) fn to_http(
    mut request: reqwest::Request,
) -> Result<http::Request<OutgoingBody>, BoxError> {
    let uri = Uri::try_from(request.url().as_str())?;
    let mut http = http::Request::new(OutgoingBody {
        body: request.body_mut().take(),
        request: None,
    });
    *http.method_mut() = std::mem::take(request.method_mut());
    *http.uri_mut() = uri;
    *http.version_mut() = request.version();
    *http.headers_mut() = std::mem::take(request.headers_mut());
    if let Some(&timeout) = request.timeout() {
        http.extensions_mut().insert(Timeout(timeout));
    }
    http.body_mut().request = Some(Box::new(request));
    Ok(http)
}

/// A request the layer prepared, as reqwest sends it.
pub(super) fn to_reqwest(
    request: http::Request<RequestBody<OutgoingBody>>,
) -> Result<reqwest::Request, BoxError> {
    let (parts, body) = request.into_parts();
    let (body, kept) = match body.into_stream() {
        Ok(OutgoingBody { body, request }) => (body, request),
        Err(buffered) => (Some(reqwest::Body::from(buffered)), None),
    };
    let url = || Url::parse(&parts.uri.to_string());
    let mut request = match kept {
        // The layer rewrites a URI only to resolve the `API_DOMAIN` stand-in, which changes its
        // authority: with that unchanged, the URL reqwest parsed is still the request's. (The
        // URI was parsed from the URL's text, so an unchanged authority is the same text.)
        Some(request) if same_authority(request.url(), &parts.uri) => *request,
        Some(mut request) => {
            *request.url_mut() = url()?;
            *request
        }
        // A replay, its body buffered: reqwest 0.13 keeps nothing in a request's own extensions
        // but the timeout, which the replay carries in the `http` extensions.
        None => reqwest::Request::new(http::Method::GET, url()?),
    };
    *request.method_mut() = parts.method;
    *request.headers_mut() = parts.headers;
    *request.version_mut() = parts.version;
    *request.body_mut() = body;
    if let Some(Timeout(timeout)) = parts.extensions.get::<Timeout>() {
        *request.timeout_mut() = Some(*timeout);
    }
    Ok(request)
}

/// Whether `uri` names the authority (user info, host and port) that `url` does, compared as
/// text: `Uri::host` would search it with `char` patterns.
fn same_authority(url: &Url, uri: &Uri) -> bool {
    let authority = &url[Position::BeforeUsername..Position::AfterPort];
    uri.authority().map(|a| a.as_str()) == Some(authority)
}

/// A `reqwest::Response` on its way back through the layer: its status, headers and extensions
/// in the `http` response, and the rest of it here, whole unless the layer reads the body.
///
/// The body [`Transport`](super::Transport) answers with; of use only inside
/// [`ZohoReqwest`](super::ZohoReqwest) and the middleware.
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

/// A reqwest response as the layer reads it.
pub(super) fn from_reqwest(mut response: reqwest::Response) -> http::Response<IncomingBody> {
    let mut http = http::Response::new(());
    *http.status_mut() = response.status();
    *http.version_mut() = response.version();
    *http.headers_mut() = std::mem::take(response.headers_mut());
    *http.extensions_mut() = std::mem::take(response.extensions_mut());
    http.map(|()| IncomingBody(Incoming::Whole(response)))
}

/// The layer's response as the caller's reqwest response, with the URL reqwest reported.
pub(super) fn to_response(
    response: http::Response<ResponseBody<IncomingBody>>,
) -> reqwest::Response {
    let (parts, body) = response.into_parts();
    let body = match body.into_inner() {
        Ok(IncomingBody(Incoming::Whole(mut response))) => {
            // The layer changes a response's headers and extensions, never its status.
            *response.headers_mut() = parts.headers;
            *response.extensions_mut() = parts.extensions;
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

    use http::header::{HeaderValue, AUTHORIZATION};

    use super::*;

    fn request(url: &str) -> reqwest::Request {
        let mut request = reqwest::Request::new(http::Method::POST, url.parse().unwrap());
        *request.body_mut() = Some(reqwest::Body::from("{}"));
        *request.timeout_mut() = Some(Duration::from_secs(7));
        request
    }

    #[test]
    fn a_request_comes_back_as_it_went_with_the_layer_s_header() {
        let mut http = to_http(request("https://www.zohoapis.com/crm/v8/Leads?page=2")).unwrap();
        assert_eq!(http.uri(), "https://www.zohoapis.com/crm/v8/Leads?page=2");
        assert_eq!(http.method(), http::Method::POST);
        http.headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_static("Zoho-oauthtoken t"));
        let sent = to_reqwest(http.map(RequestBody::from)).unwrap();
        assert_eq!(sent.method(), http::Method::POST);
        assert_eq!(
            sent.url().as_str(),
            "https://www.zohoapis.com/crm/v8/Leads?page=2"
        );
        assert_eq!(sent.headers()[AUTHORIZATION], "Zoho-oauthtoken t");
        assert_eq!(sent.timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(
            sent.body().and_then(reqwest::Body::as_bytes),
            Some(&b"{}"[..])
        );
    }

    #[test]
    fn a_uri_the_layer_resolved_is_the_url_sent() {
        let mut http = to_http(request("https://api-domain.invalid/crm/v8/Leads")).unwrap();
        *http.uri_mut() = Uri::from_static("https://www.zohoapis.eu/crm/v8/Leads");
        let sent = to_reqwest(http.map(RequestBody::from)).unwrap();
        assert_eq!(sent.url().as_str(), "https://www.zohoapis.eu/crm/v8/Leads");
        assert_eq!(sent.timeout(), Some(&Duration::from_secs(7)));
    }

    #[test]
    fn the_url_is_reused_exactly_when_the_layer_left_the_authority_as_it_was() {
        for url in [
            "https://www.zohoapis.com/crm/v8/Leads",
            "http://user:secret@127.0.0.1:8080/x?y=1",
            "https://[::1]:9000/",
            "https://www.zohoapis.com:443/crm",
        ] {
            let url: Url = url.parse().unwrap();
            let uri = Uri::try_from(url.as_str()).unwrap();
            assert!(same_authority(&url, &uri), "{url}");
        }
        let url: Url = "https://api-domain.invalid/crm".parse().unwrap();
        for other in [
            "https://www.zohoapis.com/crm",
            "https://api-domain.invalid:8443/crm",
            "/crm",
        ] {
            assert!(!same_authority(&url, &other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn a_replay_keeps_the_method_url_and_timeout_without_the_original_request() {
        let http = to_http(request("https://www.zohoapis.com/crm/v8/Leads")).unwrap();
        // What a replay sends: the same head, its body a buffered copy.
        let sent = to_reqwest(http.map(|_| RequestBody::default())).unwrap();
        assert_eq!(sent.method(), http::Method::POST);
        assert_eq!(sent.url().as_str(), "https://www.zohoapis.com/crm/v8/Leads");
        assert_eq!(sent.timeout(), Some(&Duration::from_secs(7)));
    }
}
