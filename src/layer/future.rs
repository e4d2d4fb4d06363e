use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::attempt::{Attempt, Tower};
use super::body::{RequestBody, ResponseBody};
use super::service::Replica;
use super::withheld::{self, Withheld};
use crate::error::Error;

type BoxFuture<R> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<R>>, BoxError>> + Send>>;

pin_project! {
    /// The future of [`ZohoAuth`](super::ZohoAuth). With a cached token it is the inner service's
    /// future plus a status check, neither boxed nor allocating. Waiting for a token, buffering a
    /// body and handling a token error run in a boxed continuation.
    pub struct ResponseFuture<F, S, B, R> {
        #[pin]
        state: State<F, S, R>,
        // The request body: what a replay sends through `S`.
        _body: PhantomData<fn(B)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, R> {
        Direct {
            #[pin]
            future: F,
            attempt: Option<(Attempt, Replica<S>)>,
        },
        // Sent without the token.
        Passed {
            #[pin]
            future: F,
            withheld: Option<Withheld>,
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
    pub(super) fn direct(future: F, attempt: Option<(Attempt, Replica<S>)>) -> Self {
        Self {
            state: State::Direct { future, attempt },
            _body: PhantomData,
        }
    }

    pub(super) fn passed(future: F, withheld: Option<Withheld>) -> Self {
        Self {
            state: State::Passed { future, withheld },
            _body: PhantomData,
        }
    }

    pub(super) fn slow(future: BoxFuture<R>) -> Self {
        Self {
            state: State::Slow { future },
            _body: PhantomData,
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            _body: PhantomData,
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
                        Some((inspect, _)) if inspect.should_inspect(&response) => {
                            let (attempt, replica) = attempt.take().expect("matched Some");
                            let mut sender = Tower {
                                ready: None,
                                replica,
                            };
                            State::Slow {
                                future: Box::pin(async move {
                                    attempt.finish(response, &mut sender).await
                                }),
                            }
                        }
                        _ => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                    }
                }
                StateProj::Passed { future, withheld } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(withheld::returned(response, withheld.take())));
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
