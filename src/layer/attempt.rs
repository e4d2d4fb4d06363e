//! What a request that carries a token needs beyond the hot path: waiting for the token,
//! buffering a body, reading an error response, and the one replay after a token error — for
//! every front end ([`later`]), through the [`Sender`] each gives.

use std::future::{poll_fn, Future};
use std::sync::{Arc, PoisonError};

use http::header::AUTHORIZATION;
use http::HeaderValue;
use tower::BoxError;
use tower_service::Service;

use super::body::{BufferedBody, ResponseBody};
use super::outgoing::{Authorizable, Head, Outgoing};
use super::reply::Reply;
use super::service::{Now, Plan, Replica};
use super::source::Picked;
use super::withheld::{self, Withheld};
use super::Config;
use crate::cache::CachedToken;
use crate::classify::RuleMask;
use crate::error::{Error, Kind};
use crate::hosts::{Address, Target, Verdict};
use crate::stats::Counters;

/// The error for a request that would have sent the token over plain `http`.
pub(super) fn insecure(target: Option<&Target<'_>>) -> Error {
    let host = target.map(Target::host);
    Error::new(
        Kind::Insecure,
        format!(
            "refusing to send a Zoho token over plain http to {}; use https",
            host.unwrap_or("<no host>")
        ),
    )
}

/// What is needed to send a request again.
struct Replay<H> {
    head: H,
    /// The caller's URI was relative, and the head's address its resolution against the token
    /// then.
    resolved: bool,
    body: BufferedBody,
}

/// What is needed to classify the response to a request that carried token `generation`.
struct Inspector {
    config: Arc<Config>,
    /// The connection's cache, for a layer over connections.
    picked: Picked,
    generation: u64,
    rules: RuleMask,
}

impl Inspector {
    /// Whether the response may be a token error worth reading: a status some rule names, and a
    /// body not known to exceed the read limit. Everything else streams through.
    fn should_inspect(&self, response: &impl Reply) -> bool {
        self.config
            .classifier
            .inspects(self.rules, response.status())
            && response
                .body_upper()
                .is_none_or(|upper| upper <= self.config.max_error_body as u64)
    }

    /// Reads the response (up to the limit) and says whether it declares the token dead.
    async fn classify<R: Reply>(&self, response: R) -> (R::Out, bool) {
        if !self.should_inspect(&response) {
            return (response.pass(), false);
        }
        let (parts, body) = response.into_http().into_parts();
        let body = ResponseBody::read_prefix(body, self.config.max_error_body).await;
        let dead = body.complete_bytes().is_some_and(|bytes| {
            self.config
                .classifier
                .matches(self.rules, parts.status, bytes)
        });
        (R::read(http::Response::from_parts(parts, body)), dead)
    }
}

/// The token a request is to carry, and which token-error rules apply to the answer.
pub(crate) struct Credential {
    header: HeaderValue,
    pub(super) generation: u64,
    pub(super) rules: RuleMask,
    /// The request's URI was relative and has been resolved against this token.
    pub(super) resolved: bool,
}

impl Credential {
    #[inline(always)]
    pub(super) fn new(token: &CachedToken, rules: RuleMask, resolved: bool) -> Self {
        Self {
            header: token.header().clone(),
            generation: token.generation(),
            rules,
            resolved,
        }
    }
}

impl<H: Head> Replay<H> {
    /// Where the replay goes with `fresh`, if it may carry it there: a URI resolved from a
    /// relative one is resolved again against the fresh token (a reconnected account may live in
    /// another data centre), and the host policy is asked again — the first token's host is not
    /// necessarily the fresh one's.
    fn retarget(&mut self, fresh: &CachedToken, config: &Config) -> bool {
        let dc = config.source.dc(config.hosts.dc, Some(fresh));
        let Some(address) = self.head.address_mut() else {
            tracing::debug!("the request's address could not be read back: not resending");
            return false;
        };
        if self.resolved
            && address
                .resolve_with(|uri| config.routes.resolve(uri, fresh.api_origin(), dc))
                .is_err()
        {
            return false;
        }
        config.hosts.route(address, fresh.api_host(), dc).0 == Verdict::Attach
    }
}

/// The rest of the stack below the layer, as a front end sends through it: the request the
/// layer prepared, the first time or once more.
pub(crate) trait Sender<Q> {
    /// The response.
    type Reply: Reply;
    /// The front end's error, which the layer's own errors become as well: typed from the start,
    /// so that no answer is wrapped on its way out only to have its error converted.
    type Error;

    /// Sends `request`.
    fn send(&mut self, request: Q)
        -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send;

    /// The layer's own error (or a request body's) as the front end's.
    fn error(error: BoxError) -> Self::Error;
}

/// The tower front end's sender: the inner service `poll_ready` readied, for the first send, and
/// the shared copy that replays are sent from.
pub(super) struct Tower<S> {
    pub(super) ready: Option<S>,
    pub(super) replica: Replica<S>,
}

impl<S, Q> Sender<Q> for Tower<S>
where
    S: Service<Q> + Clone + Send,
    S::Response: Reply,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Q: Send,
{
    type Reply = S::Response;
    type Error = BoxError;

    fn error(error: BoxError) -> BoxError {
        error
    }

    async fn send(&mut self, request: Q) -> Result<S::Response, BoxError> {
        let mut inner = match self.ready.take() {
            Some(ready) => ready,
            None => {
                let mut inner = self
                    .replica
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                inner
            }
        };
        inner.call(request).await.map_err(Into::into)
    }
}

/// One request that carried a token: enough to classify its response and, if the body allows,
/// send it once more.
pub(crate) struct Attempt<H> {
    inspector: Inspector,
    replay: Option<Replay<H>>,
}

impl<H> Attempt<H> {
    #[inline(always)]
    fn new(
        config: &Arc<Config>,
        picked: Picked,
        generation: u64,
        rules: RuleMask,
        replay: Option<Replay<H>>,
    ) -> Self {
        Self {
            inspector: Inspector {
                config: config.clone(),
                picked,
                generation,
                rules,
            },
            replay,
        }
    }

    /// See [`Inspector::should_inspect`]; the hot path's only extra work on a response.
    pub(super) fn should_inspect(&self, response: &impl Reply) -> bool {
        self.inspector.should_inspect(response)
    }

    /// The same attempt, its replay sending `body`: for a body buffered after the token was
    /// attached.
    fn replaying(mut self, body: BufferedBody) -> Self {
        if let Some(replay) = &mut self.replay {
            replay.body = body;
        }
        self
    }
}

impl<H: Head> Attempt<H> {
    /// Handles the response to the first send: on a token error, invalidate that token and, when
    /// the request can be replayed, resend it once with a fresh one through `sender`.
    pub(super) async fn finish<T>(
        self,
        response: T::Reply,
        sender: &mut T,
    ) -> Result<<T::Reply as Reply>::Out, T::Error>
    where
        T: Sender<H::Sent>,
    {
        let Self { inspector, replay } = self;
        let (original, dead) = inspector.classify(response).await;
        if !dead {
            return Ok(original);
        }
        let Ok(cache) = inspector.config.source.cache(&inspector.picked) else {
            return Ok(original);
        };
        cache.invalidate_generation(inspector.generation);
        let Some(mut replay) = replay else {
            return Ok(original);
        };
        let token = cache
            .token()
            .await
            .map_err(|error| T::error(error.into()))?;
        let fresh = token.cached();
        if fresh.generation() == inspector.generation {
            // The cache stopped trusting this error for this token (a refresh did not cure it).
            return Ok(original);
        }
        if !replay.retarget(fresh, &inspector.config) {
            tracing::debug!(
                "the fresh Zoho token does not go to this request's host: not resending"
            );
            return Ok(original);
        }
        let Some(mut request) = replay.head.into_request(&replay.body) else {
            return Ok(original);
        };
        drop(original);
        Counters::bump(&cache.counters().replays);
        tracing::debug!(
            generation = fresh.generation(),
            "resending a request with a fresh Zoho token"
        );
        authorize(&mut request, fresh.header().clone());
        let response = sender.send(request).await?;
        let (response, dead) = Inspector {
            generation: fresh.generation(),
            config: inspector.config.clone(),
            picked: None,
            rules: inspector.rules,
        }
        .classify(response)
        .await;
        if dead {
            cache.replay_failed(fresh.generation());
        }
        Ok(response)
    }
}

/// Adds the token to a request and keeps what classifying its response needs, plus — when the
/// body is known (`replay_body`) — what sending it again needs.
///
/// Works on the request in place: the hot path moves nothing it does not have to.
#[inline(always)]
pub(super) fn attach<Q: Outgoing>(
    request: &mut Q,
    replay_body: Option<BufferedBody>,
    credential: Credential,
    config: &Arc<Config>,
    picked: Picked,
) -> Attempt<Q::Head> {
    let replay = replay_body.map(|body| Replay {
        head: request.head(),
        resolved: credential.resolved,
        body,
    });
    authorize(request, credential.header);
    Attempt::new(
        config,
        picked,
        credential.generation,
        credential.rules,
        replay,
    )
}

/// Puts the token on a request, the first time or on the replay.
#[inline]
fn authorize(request: &mut impl Authorizable, header: HeaderValue) {
    request.headers_mut().insert(AUTHORIZATION, header);
}

/// The slow path of every front end: waits for the token when there is none yet (and decides
/// again with it), or buffers a body of known size so that the request can be resent; then sends.
pub(crate) async fn later<Q, T>(
    config: &Arc<Config>,
    picked: Picked,
    plan: Plan,
    mut request: Q,
    sender: T,
) -> Result<<T::Reply as Reply>::Out, T::Error>
where
    Q: Outgoing,
    T: Sender<Q::Sent>,
{
    let failed = |error: Error| T::error(error.into());
    let plan = match plan {
        Plan::Wait => {
            let cache = config.source.cache(&picked).map_err(failed)?;
            let token = cache.token().await.map_err(failed)?;
            Plan::new(Some(token.cached()), true, request.address_mut(), config)
        }
        plan => plan,
    };
    match plan.now(&mut request, config, picked) {
        Now::Attached(attempt) => sent(request.stream(), attempt, sender).await,
        Now::Passed(withheld) => passed(request.stream(), withheld, sender).await,
        Now::Failed(error) => Err(failed(error)),
        Now::Later(Plan::Attach(credential), picked) => {
            let empty = Some(BufferedBody::default());
            let attempt = attach(&mut request, empty, credential, config, picked);
            let buffered = request.buffer(config.max_replay_body).await;
            let (request, body) = buffered.map_err(T::error)?;
            sent(request, attempt.replaying(body), sender).await
        }
        // A usable token always decides.
        Now::Later(..) => Err(failed(Error::transient(
            "no decision with a usable Zoho token",
        ))),
    }
}

/// Sends a request that carries the token and hands back the answer, reading it (boxed) only
/// when it may declare the token dead.
pub(crate) async fn sent<H, T>(
    request: H::Sent,
    attempt: Attempt<H>,
    mut sender: T,
) -> Result<<T::Reply as Reply>::Out, T::Error>
where
    H: Head,
    T: Sender<H::Sent>,
{
    let response = sender.send(request).await?;
    if attempt.should_inspect(&response) {
        Box::pin(attempt.finish(response, &mut sender)).await
    } else {
        Ok(response.pass())
    }
}

/// Sends a request without the token and hands back the answer.
pub(crate) async fn passed<R, T>(
    request: R,
    withheld: Option<Withheld>,
    mut sender: T,
) -> Result<<T::Reply as Reply>::Out, T::Error>
where
    T: Sender<R>,
{
    let response = sender.send(request).await?;
    Ok(withheld::returned(response, withheld))
}
