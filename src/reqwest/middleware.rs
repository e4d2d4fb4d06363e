//! [`ZohoAuthMiddleware`]: the layer as a `reqwest_middleware` middleware (feature
//! `reqwest-middleware`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tower::BoxError;

use super::convert::ReqwestHead;
use crate::connections::ConnectionId;
use crate::layer::{self, Config, Now, Sender};
use crate::ZohoAuthLayer;

/// The layer for a `reqwest_middleware::ClientWithMiddleware`: built from a [`ZohoAuthLayer`]'s
/// settings and sharing its [`TokenCache`](crate::TokenCache) or
/// [`Connections`](crate::Connections), it does what the layer does — the token only to the
/// account's Zoho hosts and allowed hosts, plain `http` refused off loopback, every product's
/// dead-token answer recognised, one refresh, and one replay through the rest of the chain when
/// the body can be sent again.
///
/// Over connections, the connection is the `ConnectionId` given to the request builder with
/// `.with_extension(id)`, or what [`select_connection`](ZohoAuthLayer::select_connection) finds.
///
/// The crate's own errors come back as `reqwest_middleware::Error::Middleware` around a
/// [`crate::Error`] (`error.downcast_ref::<zoho_auth::Error>()` on the `anyhow::Error`); the
/// chain's own errors pass through unchanged.
///
/// Put it **last** — after `reqwest-retry`'s `RetryTransientMiddleware` and
/// `reqwest-tracing`'s `TracingMiddleware`: a retry then gets a fresh token and the host check
/// on each attempt, a token error is refreshed and replayed here once rather than retried blindly
/// above, and the tracing span covers the whole exchange, replay included. Middlewares after it
/// see (and a retry after it may resend) the request with its token.
#[derive(Clone)]
pub struct ZohoAuthMiddleware {
    config: Arc<Config>,
}

impl ZohoAuthMiddleware {
    /// A middleware with `layer`'s settings and token source.
    pub fn new(layer: &ZohoAuthLayer) -> Self {
        Self {
            config: layer.config().clone(),
        }
    }
}

impl fmt::Debug for ZohoAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZohoAuthMiddleware").finish_non_exhaustive()
    }
}

/// The rest of the chain, as the layer's driver sends through it.
struct Chain<'a> {
    next: Next<'a>,
    extensions: &'a mut Extensions,
}

impl Sender<reqwest::Request> for Chain<'_> {
    type Reply = reqwest::Response;
    type Error = reqwest_middleware::Error;

    fn send(
        &mut self,
        request: reqwest::Request,
    ) -> impl Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send {
        self.next.clone().run(request, self.extensions)
    }

    /// The crate's own error inside `Middleware`, typed, so that
    /// `downcast_ref::<zoho_auth::Error>()` finds it; a request body's as reqwest's.
    fn error(error: BoxError) -> reqwest_middleware::Error {
        let error = match error.downcast::<reqwest::Error>() {
            Ok(error) => return reqwest_middleware::Error::Reqwest(*error),
            Err(error) => error,
        };
        match error.downcast::<crate::Error>() {
            Ok(error) => reqwest_middleware::Error::middleware(*error),
            Err(error) => reqwest_middleware::Error::Middleware(anyhow::Error::from_boxed(error)),
        }
    }
}

impl ZohoAuthMiddleware {
    /// What is decided on the request in place before anything is awaited: its connection, the
    /// plan for it, and as much of the plan as can be carried out now.
    fn start(
        &self,
        request: &mut reqwest::Request,
        extensions: &Extensions,
    ) -> reqwest_middleware::Result<Now<ReqwestHead>> {
        let (plan, picked) = self
            .config
            .plan(request, extensions.get::<ConnectionId>())
            .map_err(reqwest_middleware::Error::middleware)?;
        Ok(plan.now(request, &self.config, picked))
    }
}

// Written out rather than with `#[async_trait]`, so that the plan is made before the future is
// boxed: the box then holds only what is awaited, not the request, the plan and the attempt
// over again in each nested `async fn`.
impl Middleware for ZohoAuthMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut request: reqwest::Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<
        Box<
            dyn Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let now = match self.start(&mut request, extensions) {
            Ok(now) => now,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        let chain = Chain { next, extensions };
        match now {
            Now::Attached(attempt) => Box::pin(layer::sent(request, attempt, chain)),
            Now::Passed(withheld) => Box::pin(layer::passed(request, withheld, chain)),
            Now::Failed(error) => Box::pin(std::future::ready(Err(
                reqwest_middleware::Error::middleware(error),
            ))),
            Now::Later(plan, picked) => {
                Box::pin(layer::later(&self.config, picked, plan, request, chain))
            }
        }
    }
}
