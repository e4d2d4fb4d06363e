use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

use super::attempt::{self, Attempt, Credential, Tower};
use super::body::{BufferedBody, RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::memo;
use super::outgoing::{Below, HeadOf, HttpHead, Outgoing, Replayable};
use super::relative;
use super::reply::Reply;
use super::source::{Picked, Source};
use super::withheld::Withheld;
use super::{Config, ZohoAuthLayer};
use crate::cache::{CachedToken, TokenCache};
use crate::connections::ConnectionId;
use crate::error::Error;
use crate::hosts::{Address, Target, Verdict, Written};

/// The service [`ZohoAuthLayer`] builds: the inner service plus Zoho authentication.
///
/// # What the inner service receives
///
/// For a caller's `Request<B>` the inner service receives a `Request<RequestBody<B>>`: the
/// caller's body streamed through, or a buffered copy the layer can send a second time after a
/// token error. So `ZohoAuth<S>` is a `Service<Request<B>>` only when
/// `S: Service<Request<RequestBody<B>>>`. A service typed for the caller's own body — a
/// hyper-util `Client<_, Full<Bytes>>` — does not fit, and the compiler says only *"the method
/// `oneshot` exists for struct `ZohoAuth<Client<…, Full<Bytes>>>`, but its trait bounds were
/// not satisfied"*. Two fixes:
///
/// - wrap the client: `ZohoAuth::new(ConvertBody::new(client.clone()), cache)` (see
///   [`ConvertBody`](crate::ConvertBody)); the client keeps its connection pool and its other
///   callers;
/// - or type the client for `RequestBody<Full<Bytes>>` and send requests that skip the layer
///   through it with `request.map(RequestBody::from)`.
///
/// Relative URIs (`/crm/v8/Leads`) are made absolute against the token's `api_domain` (or a
/// [`route`](ZohoAuthLayer::route)) before the inner service sees them.
#[derive(Clone, Debug)]
pub struct ZohoAuth<S> {
    inner: S,
    /// A copy of `inner` that attempts share to replay from: holding it costs a request one
    /// reference count, where a clone of `inner` each (as tower's `Retry` takes) costs whatever
    /// cloning `S` does — several reference counts for a hyper-util client, an allocation for a
    /// `BoxCloneService`. The mutex, taken only to clone it for a replay, makes it shareable
    /// across threads for services that are `Send` but not `Sync`. `None` after `get_mut`,
    /// until the next call copies `inner` again.
    replica: Option<Replica<S>>,
    config: Arc<Config>,
}

/// What to do with one request, decided from the cached token without waiting.
pub(crate) enum Plan {
    /// Not a host of the token: forward untouched.
    Pass,
    /// Refuse before sending: a Zoho host over plain `http`, a relative URL with nowhere to go.
    Fail(Error),
    /// A usable token for a Zoho host.
    Attach(Credential),
    /// No usable token yet: wait for one, then decide.
    Wait,
}

impl Plan {
    /// Decides for a request to `uri` given the current token, if any, and whether it is usable.
    /// A relative `uri` is made absolute against the token first.
    #[inline]
    pub(crate) fn new(
        token: Option<&CachedToken>,
        usable: bool,
        uri: &mut impl Address,
        config: &Config,
    ) -> Self {
        let dc = config.source.dc(config.hosts.dc, token);
        let mut written = Written::of(uri);
        let resolved = relative::is_relative(&written);
        if resolved {
            let Some(token) = token.filter(|_| usable) else {
                return Plan::Wait;
            };
            let absolute =
                uri.resolve_with(|uri| config.routes.resolve(uri, token.api_origin(), dc));
            if let Err(error) = absolute {
                return Plan::Fail(error);
            }
            written = Written::of(uri);
        }
        let (verdict, target) = config
            .hosts
            .route(&written, token.and_then(|t| t.api_host()), dc);
        match (token, verdict, usable) {
            (_, Verdict::Refuse, _) => Plan::Fail(attempt::insecure(target.as_ref())),
            (Some(_), Verdict::PassThrough, _) => Plan::Pass,
            // With the data centre known, the api_domain still to come is one of its hosts: a
            // request elsewhere never gets the token, so it does not wait for one.
            (None, Verdict::PassThrough, _) if dc.is_some() => Plan::Pass,
            (Some(token), Verdict::Attach, true) => {
                let rules = config
                    .classifier
                    .mask_for(target.as_ref().map(Target::host));
                Plan::Attach(Credential::new(token, rules, resolved))
            }
            // Before the first token its api_domain is unknown, so the request waits to decide.
            _ => Plan::Wait,
        }
    }

    /// What can be done with the request without waiting: attach the token to it, send it
    /// untouched, or refuse it — or, when there is no token yet or the body must be buffered
    /// first, hand it to the slow path ([`Now::Later`]). Every front end starts here, on the
    /// request in place; it moves the request only to send it.
    #[inline(always)]
    pub(crate) fn now<Q: Outgoing>(
        self,
        request: &mut Q,
        config: &Arc<Config>,
        picked: Picked,
    ) -> Now<HeadOf<Q>> {
        match self {
            Plan::Pass => Now::Passed(Withheld::new(request.address(), config, picked)),
            Plan::Fail(error) => Now::Failed(error),
            Plan::Attach(credential) => {
                let replay_body = match request.replayable(config.max_replay_body) {
                    Replayable::AfterBuffering => {
                        return Now::Later(Plan::Attach(credential), picked)
                    }
                    Replayable::Empty => Some(BufferedBody::default()),
                    Replayable::No => None,
                };
                Now::Attached(attempt::attach(
                    request,
                    replay_body,
                    credential,
                    config,
                    picked,
                ))
            }
            Plan::Wait => Now::Later(Plan::Wait, picked),
        }
    }
}

/// A plan carried out as far as it goes without waiting (see [`Plan::now`]); the request stays
/// with the caller.
pub(crate) enum Now<H> {
    /// The token is on the request: send it; the attempt reads the answer.
    Attached(Attempt<H>),
    /// Send it without the token.
    Passed(Option<Withheld>),
    /// Refused before sending.
    Failed(Error),
    /// For the slow path ([`attempt::later`]), with the request: no token yet, or a body to
    /// buffer first.
    Later(Plan, Picked),
}

/// The boxed slow path: the driver every front end shares, through this service.
fn slow<S, Q, R>(
    plan: Plan,
    request: Q,
    inner: &mut S,
    replica: &Replica<S>,
    config: &Arc<Config>,
    picked: Picked,
) -> ResponseFuture<S::Future, S, HeadOf<Q>, R>
where
    Q: Outgoing,
    S: Below<Q::Sent, R>,
    R: Reply,
{
    let config = config.clone();
    let sender = Tower {
        ready: Some(take_ready(inner)),
        replica: replica.clone(),
    };
    ResponseFuture::slow(Box::pin(async move {
        attempt::later(&config, picked, plan, request, sender).await
    }))
}

impl Config {
    /// The first decision every front end makes for a request: its connection's cache (for a
    /// layer over connections) and the plan for it with the token that cache holds now.
    // `connection` names the connection of a layer over connections; a single cache needs none.
    #[cfg_attr(not(feature = "connections"), allow(unused_variables))]
    #[inline]
    pub(crate) fn plan<Q: Outgoing>(
        self: &Arc<Self>,
        request: &mut Q,
        connection: Option<&ConnectionId>,
    ) -> Result<(Plan, Picked), Error> {
        let plan = |cache: &TokenCache, address: &mut Q::Address| {
            cache.lookup(|token, usable| self.decide(token, usable, address))
        };
        Ok(match &self.source {
            Source::One(cache) => (plan(cache, request.address_mut()), None),
            #[cfg(feature = "connections")]
            Source::Many(many) => {
                let cache = request.select(many, connection)?;
                (plan(&cache, request.address_mut()), Some(cache))
            }
        })
    }
}

impl Config {
    /// [`Plan::new`], with the host policy's answer for the token and the request's origin
    /// recalled when it was given before on this thread ([`memo`]).
    #[inline]
    pub(super) fn decide(
        self: &Arc<Self>,
        token: Option<&Arc<CachedToken>>,
        usable: bool,
        address: &mut impl Address,
    ) -> Plan {
        if let Some(token) = token.filter(|_| usable) {
            if let Some(rules) = memo::recall(self, token, address) {
                return Plan::Attach(Credential::new(token, rules, false));
            }
        }
        let plan = Plan::new(token.map(Arc::as_ref), usable, address, self);
        if let (Plan::Attach(credential), Some(token)) = (&plan, token) {
            if !credential.resolved {
                memo::remember(self, token, address, credential.rules);
            }
        }
        plan
    }
}

/// For a request sent later: the readied service goes with it, and a fresh clone stays behind
/// for the next `poll_ready`.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The shared copy of the inner service that replays are sent from.
pub(super) type Replica<S> = Arc<Mutex<S>>;

fn replica<S: Clone>(inner: &S) -> Replica<S> {
    Arc::new(Mutex::new(inner.clone()))
}

impl<S> ZohoAuth<S> {
    /// Wraps `inner` with authentication from `cache` and default settings; the same as
    /// `ZohoAuthLayer::new(cache).layer(inner)`.
    pub fn new(inner: S, cache: TokenCache) -> Self
    where
        S: Clone,
    {
        tower_layer::Layer::layer(&ZohoAuthLayer::new(cache), inner)
    }

    pub(crate) fn from_parts(inner: S, config: Arc<Config>) -> Self
    where
        S: Clone,
    {
        Self {
            replica: Some(replica(&inner)),
            inner,
            config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably. Replays use the service as changed here from the next call on.
    pub fn get_mut(&mut self) -> &mut S {
        self.replica = None;
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The shared token cache; `None` for a layer over connections.
    pub fn cache(&self) -> Option<&TokenCache> {
        self.config.source.single()
    }
}

impl<S> ZohoAuth<S> {
    /// `poll_ready` of every front end that is a tower service: the inner service's.
    #[inline]
    pub(crate) fn poll_inner_ready<Q>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Q>,
        S::Error: Into<BoxError>,
    {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    /// The call of every front end that is a tower service: the plan for `request` (of
    /// `connection`, if the front end names one), carried out through `inner`.
    #[inline]
    pub(crate) fn start<Q, R>(
        &mut self,
        mut request: Q,
        connection: Option<&ConnectionId>,
    ) -> ResponseFuture<S::Future, S, HeadOf<Q>, R>
    where
        Q: Outgoing,
        S: Below<Q::Sent, R>,
        R: Reply,
    {
        let (plan, picked) = match self.config.plan(&mut request, connection) {
            Ok(planned) => planned,
            Err(error) => return ResponseFuture::failed(error),
        };
        let replica = self.replica.get_or_insert_with(|| replica(&self.inner));
        // Carried out here, in the one frame that owns the request: it is moved only to be sent.
        match plan.now(&mut request, &self.config, picked) {
            // Sent now, through the service `poll_ready` readied.
            Now::Attached(attempt) => ResponseFuture::direct(
                self.inner.call(request.stream()),
                Some((attempt, replica.clone())),
            ),
            Now::Passed(withheld) => {
                ResponseFuture::passed(self.inner.call(request.stream()), withheld)
            }
            Now::Failed(error) => ResponseFuture::failed(error),
            Now::Later(plan, picked) => slow(
                plan,
                request,
                &mut self.inner,
                replica,
                &self.config,
                picked,
            ),
        }
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
    type Future = ResponseFuture<S::Future, S, HttpHead<ReqBody>, Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_inner_ready::<Request<RequestBody<ReqBody>>>(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.start(request, None)
    }
}
