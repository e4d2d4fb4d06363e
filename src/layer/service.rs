use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

use super::attempt;
use super::body::{BufferedBody, RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::{Config, ZohoAuthLayer};
use crate::cache::TokenCache;
use crate::hosts::Verdict;

/// The service [`ZohoAuthLayer`] builds: the inner service plus Zoho authentication.
#[derive(Clone, Debug)]
pub struct ZohoAuth<S> {
    inner: S,
    config: Arc<Config>,
}

/// What to do with one request, decided from the cached token without waiting.
enum Plan {
    /// Not a host of the token: forward untouched.
    Pass,
    /// A Zoho host over plain `http`: refuse.
    Refuse,
    /// A usable token for a Zoho host.
    Attach {
        header: HeaderValue,
        generation: u64,
    },
    /// No usable token yet (or a body to buffer): take the slow path.
    Wait,
}

impl<S> ZohoAuth<S> {
    /// Wraps `inner` with authentication from `cache` and default settings; the same as
    /// `ZohoAuthLayer::new(cache).layer(inner)`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        tower_layer::Layer::layer(&ZohoAuthLayer::new(cache), inner)
    }

    pub(crate) fn from_parts(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The shared token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.config.cache
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ZohoAuth<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The ready service goes with this request; a fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = &self.config;
        let plan = config.cache.lookup(|token, usable| {
            let verdict = config
                .hosts
                .verdict(request.uri(), token.and_then(|t| t.api_host()));
            match (token, verdict, usable) {
                (_, Verdict::Refuse, _) => Plan::Refuse,
                (Some(_), Verdict::PassThrough, _) => Plan::Pass,
                (Some(token), Verdict::Attach, true) => Plan::Attach {
                    header: token.header().clone(),
                    generation: token.generation(),
                },
                // Before the first token its api_domain is unknown, so the slow path decides.
                _ => Plan::Wait,
            }
        });
        match plan {
            Plan::Pass => {
                ResponseFuture::direct(inner.call(request.map(RequestBody::stream)), None)
            }
            Plan::Refuse => ResponseFuture::failed(attempt::insecure(request.uri())),
            Plan::Attach { header, generation }
                if !needs_buffering(&request, config.max_replay_body) =>
            {
                let replay_body = is_empty(&request).then(BufferedBody::default);
                let mut request = request.map(RequestBody::stream);
                let attempt = attempt::attach(
                    &mut request,
                    replay_body,
                    header,
                    generation,
                    &inner,
                    config,
                );
                ResponseFuture::direct(inner.call(request), Some(attempt))
            }
            Plan::Attach { .. } | Plan::Wait => {
                ResponseFuture::slow(Box::pin(attempt::send(inner, config.clone(), request)))
            }
        }
    }
}

/// The body is known to be empty: the request can be resent with no copy of it.
pub(super) fn is_empty<B: Body>(request: &Request<B>) -> bool {
    request.body().is_end_stream() || request.body().size_hint().exact() == Some(0)
}

/// The body has a known, non-zero size within the replay limit: buffer it to make it replayable.
pub(super) fn needs_buffering<B: Body>(request: &Request<B>, limit: usize) -> bool {
    !is_empty(request)
        && request
            .body()
            .size_hint()
            .exact()
            .is_some_and(|size| size <= limit as u64)
}
