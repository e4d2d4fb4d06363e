use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::attempt::Attempt;
use super::body::{RequestBody, ResponseBody};
use super::service::{Plan, Replica};
use super::source::Picked;
use super::withheld::Withheld;
use super::Config;
use crate::cache::Token;
use crate::error::Error;

type BoxFuture<R> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<R>>, BoxError>> + Send>>;

type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send>>;

pin_project! {
    /// The future of [`ZohoAuth`](super::ZohoAuth). With a cached token it is the inner service's
    /// future plus a status check, neither boxed nor allocating. Without one it holds the request
    /// and a small boxed wait for the token, then goes on as with a cached token; buffering a body
    /// and handling a token error run in a boxed continuation.
    pub struct ResponseFuture<F, S, B, R> {
        #[pin]
        state: State<F, S, B, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B, R> {
        Direct {
            #[pin]
            future: F,
            attempt: Option<Attempt<S, B>>,
        },
        // Sent without the token.
        Passed {
            #[pin]
            future: F,
            withheld: Option<Withheld>,
        },
        Waiting {
            token: TokenFuture,
            parked: Option<(Request<B>, S, Replica<S>, Picked)>,
            config: Arc<Config>,
        },
        Slow {
            future: BoxFuture<R>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<F, S, B, R> ResponseFuture<F, S, B, R> {
    #[inline]
    pub(super) fn direct(future: F, attempt: Option<Attempt<S, B>>) -> Self {
        Self {
            state: State::Direct { future, attempt },
        }
    }

    pub(super) fn passed(future: F, withheld: Option<Withheld>) -> Self {
        Self {
            state: State::Passed { future, withheld },
        }
    }

    /// Waits for a token, then sends `request` through `inner` (readied by `poll_ready`).
    pub(super) fn waiting(
        request: Request<B>,
        inner: S,
        replica: Replica<S>,
        config: Arc<Config>,
        picked: Picked,
    ) -> Self {
        let cache = match config.source.cache(&picked) {
            Ok(cache) => cache.clone(),
            Err(error) => return Self::failed(error),
        };
        Self {
            state: State::Waiting {
                token: Box::pin(async move { cache.token().await }),
                parked: Some((request, inner, replica, picked)),
                config,
            },
        }
    }

    pub(super) fn slow(future: BoxFuture<R>) -> Self {
        Self {
            state: State::Slow { future },
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, S, B, R> fmt::Debug for ResponseFuture<F, S, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ResponseFuture<S::Future, S, B, R>
where
    S: Service<Request<RequestBody<B>>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    R: Body + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<R>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Direct { future, attempt } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    // Tested in place: the attempt is moved out only for the rare response read.
                    match attempt {
                        Some(inspect) if inspect.should_inspect(&response) => State::Slow {
                            future: Box::pin(
                                attempt.take().expect("matched Some").finish(response),
                            ),
                        },
                        _ => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                    }
                }
                StateProj::Passed { future, withheld } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(withheld) = withheld.take() {
                        withheld.inspect(&mut response);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Waiting {
                    token,
                    parked,
                    config,
                } => {
                    let token = ready!(token.as_mut().poll(cx))?;
                    let (mut request, mut inner, replica, picked) =
                        parked.take().expect("parked until the token came");
                    let plan = Plan::new(Some(token.cached()), true, request.uri_mut(), config);
                    plan.start(request, &mut inner, &replica, config, picked)
                        .state
                }
                StateProj::Slow { future } => return future.as_mut().poll(cx),
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}
