//! [`ZohoAuthMiddleware`]: the layer as a `reqwest_middleware` middleware (feature
//! `reqwest-middleware`).

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tower::BoxError;

use super::convert::{self, IncomingBody, OutgoingBody};
use crate::connections::ConnectionId;
use crate::layer::{self, Config, RequestBody, Sender};
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

impl Sender<OutgoingBody> for Chain<'_> {
    type Body = IncomingBody;

    async fn send(
        &mut self,
        request: http::Request<RequestBody<OutgoingBody>>,
    ) -> Result<http::Response<IncomingBody>, BoxError> {
        let request = convert::to_reqwest(request)?;
        let response = self.next.clone().run(request, self.extensions).await?;
        Ok(convert::from_reqwest(response))
    }
}

/// The chain's own error as it was; the crate's inside `Middleware`, typed, so that
/// `downcast_ref::<zoho_auth::Error>()` finds it.
fn chain_error(error: BoxError) -> reqwest_middleware::Error {
    let error = match error.downcast::<reqwest_middleware::Error>() {
        Ok(error) => return *error,
        Err(error) => error,
    };
    let error = match error.downcast::<reqwest::Error>() {
        Ok(error) => return reqwest_middleware::Error::Reqwest(*error),
        Err(error) => error,
    };
    match error.downcast::<crate::Error>() {
        Ok(error) => reqwest_middleware::Error::middleware(*error),
        Err(error) => reqwest_middleware::Error::Middleware(anyhow::Error::from_boxed(error)),
    }
}

#[async_trait::async_trait]
impl Middleware for ZohoAuthMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut request = convert::to_http(request).map_err(chain_error)?;
        if let Some(id) = extensions.get::<ConnectionId>() {
            if request.extensions().get::<ConnectionId>().is_none() {
                request.extensions_mut().insert(id.clone());
            }
        }
        let (plan, picked) = self
            .config
            .plan(&mut request)
            .map_err(reqwest_middleware::Error::middleware)?;
        let mut chain = Chain { next, extensions };
        let response = layer::drive(&self.config, picked, plan, request, &mut chain)
            .await
            .map_err(chain_error)?;
        Ok(convert::to_response(response))
    }
}
