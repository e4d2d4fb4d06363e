//! [`ZohoAuthLayer`]: attach, refresh and guard Zoho access tokens around any HTTP service.
//!
//! The layer wraps a `tower::Service<http::Request<_>>` — a hyper-util client, a reqwest-backed
//! service, anything below other tower layers — and for each request to one of the token's Zoho
//! hosts:
//!
//! 1. adds `Authorization: Zoho-oauthtoken <token>` from the shared [`TokenCache`] (a lock-free
//!    load of a pre-built, sensitive header value; no boxing, no allocation);
//! 2. when the response is a small error response, reads it and asks the [`Classifier`] whether
//!    it says "this token is dead" in the dialect of the product that sent it;
//! 3. if so, invalidates exactly that token, gets a fresh one through the cache's single refresh,
//!    and resends the request **once** when its body can be replayed (an empty body, or one of at
//!    most [`max_replay_body`](ZohoAuthLayer::max_replay_body) bytes with a known size, which the
//!    layer buffers). A response that cannot be replayed goes back to the caller unchanged.
//!    Buffering counts the bytes the body yields, not the size it announced: a body that yields
//!    more than the limit fails the request with an error for which
//!    [`is_body`](crate::Error::is_body) holds, before anything is sent.
//!
//! A relative URI (`/crm/v8/Leads`, no scheme or host) is first made absolute against the token's
//! `api_domain`, or against the product host or URL [`route`](ZohoAuthLayer::route) names for its
//! path; an absolute URI is used as given.
//!
//! Requests to any other host pass through without the token; the first to each host is logged
//! at `debug` with the reason, and a `401 Unauthorized` answer to one carries a
//! [`TokenWithheld`] extension saying why (and is logged at `warn`, once per host). Plain
//! `http://` to a Zoho host is refused (except loopback, for tests and the simulator).
//!
//! The service's error type is [`tower::BoxError`]: the inner service's errors pass through, and
//! the crate's own are a [`crate::Error`] (downcast to read it).
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use zoho_auth::{accounts::AccountsClient, sim::Simulator, Accounts, TokenCache, ZohoAuthLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A local stand-in for Zoho; with real Zoho use `DataCenter::Eu` etc. instead.
//! let zoho = Simulator::start().await?;
//! let accounts = Accounts::custom(&zoho.url())?;
//! let client = AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret())?;
//! let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
//!
//! let mut crm = ServiceBuilder::new()
//!     .layer(ZohoAuthLayer::new(cache.clone()))
//!     .service(Client::builder(TokioExecutor::new()).build_http());
//!
//! let request = Request::get(format!("{}/crm/v8/users?type=CurrentUser", zoho.url()))
//!     .body(Empty::<bytes::Bytes>::new())?;
//! let response = crm.ready().await?.call(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert!(body.starts_with(b"{\"users\""));
//! assert_eq!(cache.stats().token_requests, 1);
//! # Ok(()) }
//! ```
//!
//! # Placement
//!
//! Put the layer **below** (closer to the network than) any redirect-following layer, so that
//! every hop is checked against the host policy again and a redirect to another host never
//! carries the token. Put timeouts above it if they should include the wait for a token, below
//! it if they should bound only the call to Zoho.

mod attempt;
mod body;
mod convert;
mod future;
mod memo;
pub(crate) mod outgoing;
mod relative;
pub(crate) mod reply;
mod service;
pub(crate) mod source;
mod withheld;

use std::sync::Arc;

#[cfg(feature = "reqwest-middleware")]
pub(crate) use self::attempt::{later, passed, sent, Sender};
pub(crate) use self::body::BufferedBody;
pub use self::body::{RequestBody, ResponseBody};
pub use self::convert::ConvertBody;
pub use self::future::ResponseFuture;
pub use self::outgoing::HttpHead;
use self::relative::Routes;
#[cfg(feature = "reqwest-middleware")]
pub(crate) use self::service::Now;
pub use self::service::ZohoAuth;
#[cfg(feature = "connections")]
pub use self::source::RequestHead;
use self::source::Source;
use self::withheld::Reported;
pub use self::withheld::TokenWithheld;
use crate::cache::TokenCache;
use crate::classify::Classifier;
use crate::error::Error;
use crate::hosts::{HostPattern, HostPolicy};

/// Default largest request body buffered so it can be replayed (64 KiB, as linkerd2-proxy).
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

/// Default largest error response read to classify it. Zoho's error bodies are under 1 KiB.
pub const DEFAULT_MAX_ERROR_BODY: usize = 16 * 1024;

/// Everything a request needs besides the inner service, behind one `Arc` so that a request
/// takes one reference count, not several.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) source: Source,
    pub(crate) hosts: HostPolicy,
    pub(crate) classifier: Classifier,
    pub(crate) max_replay_body: usize,
    pub(crate) max_error_body: usize,
    pub(crate) routes: Routes,
    pub(crate) reported: Arc<Reported>,
}

/// A [`tower::Layer`] that authenticates requests to Zoho with tokens from a [`TokenCache`].
///
/// Cheap to clone; every clone and every service it builds share the cache.
#[derive(Clone, Debug)]
pub struct ZohoAuthLayer {
    config: Arc<Config>,
}

impl ZohoAuthLayer {
    /// A layer using `cache`, attaching the token to hosts of the cache's data centre and of the
    /// token's `api_domain`.
    #[must_use]
    pub fn new(cache: TokenCache) -> Self {
        let dc = cache.data_center();
        Self::with_source(Source::One(cache), dc)
    }

    /// A layer over many Zoho accounts: each request uses the token of the connection a
    /// [`ConnectionId`](crate::ConnectionId) in its extensions names (or
    /// [`select_connection`](Self::select_connection) finds), and a request that names none fails
    /// with [`Error::is_not_connected`] before anything is sent. Each connection's token goes only
    /// to its own `api_domain`, its own data centre's Zoho hosts and the allowed hosts, and its
    /// relative URLs resolve against its own `api_domain`.
    #[cfg(feature = "connections")]
    #[cfg_attr(docsrs, doc(cfg(feature = "connections")))]
    #[must_use]
    pub fn connections(connections: crate::Connections) -> Self {
        Self::with_source(
            Source::Many(source::Many {
                connections,
                select: None,
            }),
            None,
        )
    }

    /// For a layer over connections, how to find a request's connection when its extensions hold
    /// no [`ConnectionId`](crate::ConnectionId): from its headers, its URI, an extension of your
    /// own. An extension set on the request still wins.
    #[cfg(feature = "connections")]
    #[cfg_attr(docsrs, doc(cfg(feature = "connections")))]
    #[must_use]
    pub fn select_connection(
        mut self,
        select: impl Fn(&RequestHead<'_>) -> Option<crate::ConnectionId> + Send + Sync + 'static,
    ) -> Self {
        if let Source::Many(many) = &mut Arc::make_mut(&mut self.config).source {
            many.select = Some(Arc::new(select));
        }
        self
    }

    fn with_source(source: Source, dc: Option<crate::dc::DataCenter>) -> Self {
        let hosts = HostPolicy {
            dc,
            allow: Vec::new(),
        };
        Self {
            config: Arc::new(Config {
                source,
                hosts,
                classifier: Classifier::zoho(),
                max_replay_body: DEFAULT_MAX_REPLAY_BODY,
                max_error_body: DEFAULT_MAX_ERROR_BODY,
                routes: Routes::default(),
                reported: Arc::default(),
            }),
        }
    }

    /// Also attaches the token to `host`: a host name (`api.example.com`), `host:port`, or a URL
    /// (`https://gateway.example.com:8443`). For proxies and gateways in front of Zoho.
    pub fn allow_host(mut self, host: &str) -> Result<Self, Error> {
        let pattern = HostPattern::parse(host).ok_or_else(|| {
            Error::config(format!("cannot read {host:?} as a host, host:port or URL"))
        })?;
        Arc::make_mut(&mut self.config).hosts.allow.push(pattern);
        Ok(self)
    }

    /// Sends relative requests (a URI without a host, such as `/api/v1/tickets`) whose path
    /// starts with `path_prefix` somewhere other than the token's `api_domain`, where all other
    /// relative requests go: `to` is the host name of a Zoho product that lives on its own
    /// domain — `"desk"`, `"mail"`, `"people"` — in the account's data centre (`desk.zoho.eu`
    /// for an account in the EU), or a base URL used as given (`https://gateway.example.com`).
    /// The longest matching prefix wins.
    ///
    /// Routing only decides where a request goes: the token is attached by the usual rule, so a
    /// URL that is neither a host of the account's data centre nor passed to
    /// [`allow_host`](Self::allow_host) gets none.
    ///
    /// ```
    /// # fn layer(cache: zoho_auth::TokenCache) -> Result<zoho_auth::ZohoAuthLayer, zoho_auth::Error> {
    /// // `/crm/v8/Leads` → the token's api_domain; `/api/v1/tickets` → desk.zoho.<the account's DC>
    /// let layer = zoho_auth::ZohoAuthLayer::new(cache).route("/api/v1/", "desk")?;
    /// # Ok(layer) }
    /// ```
    pub fn route(mut self, path_prefix: &str, to: &str) -> Result<Self, Error> {
        Arc::make_mut(&mut self.config)
            .routes
            .add(path_prefix, to)?;
        Ok(self)
    }

    /// Replaces the classifier that recognises dead-token responses (default:
    /// [`Classifier::zoho`]). Add rules to it rather than starting from empty.
    #[must_use]
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        Arc::make_mut(&mut self.config).classifier = classifier;
        self
    }

    /// The largest request body (of known size) buffered so the request can be resent after a
    /// token error; default 64 KiB. `0` replays only requests with empty bodies. A body whose
    /// size hint promised no more but that yields more fails with [`Error::is_body`].
    #[must_use]
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_replay_body = bytes;
        self
    }

    /// The largest error response read to classify it; default 16 KiB. Larger or streaming
    /// responses pass through unread once they exceed it.
    #[must_use]
    pub fn max_error_body(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_error_body = bytes;
        self
    }

    /// The token cache this layer uses; `None` for a layer over connections.
    pub fn cache(&self) -> Option<&TokenCache> {
        self.config.source.single()
    }

    /// The settings every front end built from this layer shares.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }
}

// `Clone`: the service keeps a copy of `inner` to replay from, as every tower service that sends
// a request twice must.
impl<S: Clone> tower_layer::Layer<S> for ZohoAuthLayer {
    type Service = ZohoAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ZohoAuth::from_parts(inner, self.config.clone())
    }
}
