//! Between reqwest's request and response types and `http`'s, which the layer works on, keeping
//! what reqwest keeps beside them: the parsed URL (not parsed again when the layer did not change
//! it), a per-request timeout (in the extensions), and a response's final URL.

use http::{Extensions, Uri};
use reqwest::ResponseBuilderExt;
use url::Url;

use crate::layer::{RequestBody, ResponseBody};

/// A request's URL as reqwest parsed it, and the `Uri` it was turned into: while the request
/// still has that `Uri`, the URL is reused instead of parsed again.
#[derive(Clone)]
struct Parsed {
    uri: Uri,
    url: Url,
}

/// A reqwest request as the layer takes it.
pub(super) fn to_http(
    request: reqwest::Request,
) -> Result<http::Request<reqwest::Body>, reqwest::Error> {
    let url = request.url().clone();
    let mut request = http::Request::try_from(request)?;
    let uri = request.uri().clone();
    request.extensions_mut().insert(Parsed { uri, url });
    Ok(request)
}

/// A request the layer prepared, as reqwest sends it.
pub(super) fn to_reqwest(
    request: http::Request<RequestBody<reqwest::Body>>,
) -> Result<reqwest::Request, reqwest::Error> {
    let (mut parts, body) = request.into_parts();
    let parsed = parts.extensions.remove::<Parsed>();
    let Some(Parsed { url, .. }) = parsed.filter(|parsed| parsed.uri == parts.uri) else {
        return reqwest::Request::try_from(http::Request::from_parts(
            parts,
            reqwest::Body::from(body),
        ));
    };
    let mut request = http::Request::from_parts(parts, reqwest::Body::from(body));
    // The conversion parses the URI; this request's was parsed once already.
    *request.uri_mut() = Uri::from_static("http://parsed.once/");
    let mut request = reqwest::Request::try_from(request)?;
    *request.url_mut() = url;
    Ok(request)
}

/// A reqwest response as the layer reads it, with its final URL.
pub(super) fn from_reqwest(response: reqwest::Response) -> http::Response<reqwest::Body> {
    let url = response.url().clone();
    let mut response = http::Response::from(response);
    // reqwest's conversion drops the URL; its response builder's extension carries it back.
    let carrier = http::Response::builder()
        .url(url)
        .body(())
        .map(|carrier| carrier.into_parts().0.extensions)
        .unwrap_or_else(|_| Extensions::new());
    response.extensions_mut().extend(carrier);
    response
}

/// The layer's response as the caller's reqwest response, with the URL reqwest reported.
pub(super) fn to_response(
    response: http::Response<ResponseBody<reqwest::Body>>,
) -> reqwest::Response {
    reqwest::Response::from(response.map(reqwest::Body::from))
}
