use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::attempt::{Attempt, Tower};
use super::outgoing::{Below, Head};
use super::reply::Reply;
use super::service::Replica;
use super::withheld::{self, Withheld};
use crate::error::Error;

type BoxFuture<O> = Pin<Box<dyn Future<Output = Result<O, BoxError>> + Send>>;

/// Reads a response that may declare the token dead, and replays: boxed, and reached through a
/// function made where the request's type is known, so that polling needs no bound on it.
type Finish<H, S, R> = fn(Attempt<H>, R, Replica<S>) -> BoxFuture<<R as Reply>::Out>;

pin_project! {
    /// The future of [`ZohoAuth`](super::ZohoAuth). With a cached token it is the inner service's
    /// future plus a status check, neither boxed nor allocating. Waiting for a token, buffering a
    /// body and handling a token error run in a boxed continuation.
    ///
    /// `H` is what a replay keeps of the request and `R` the response of the service below:
    /// `HttpHead<B>` and `Response<B>` for a tower stack, `ReqwestHead` and `reqwest::Response`
    /// for [`ZohoReqwest`](crate::reqwest::ZohoReqwest).
    pub struct ResponseFuture<F, S, H, R: Reply> {
        #[pin]
        state: State<F, S, H, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, H, R: Reply> {
        Direct {
            #[pin]
            future: F,
            attempt: Option<(Attempt<H>, Replica<S>)>,
            finish: Finish<H, S, R>,
        },
        // Sent without the token.
        Passed {
            #[pin]
            future: F,
            withheld: Option<Withheld>,
        },
        Slow {
            future: BoxFuture<R::Out>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<F, S, H, R: Reply> ResponseFuture<F, S, H, R> {
    #[inline(always)]
    pub(super) fn direct(future: F, attempt: Option<(Attempt<H>, Replica<S>)>) -> Self
    where
        H: Head,
        S: Below<H::Sent, R>,
    {
        Self {
            state: State::Direct {
                future,
                attempt,
                finish: finish::<H, S, R>,
            },
        }
    }

    pub(super) fn passed(future: F, withheld: Option<Withheld>) -> Self {
        Self {
            state: State::Passed { future, withheld },
        }
    }

    pub(super) fn slow(future: BoxFuture<R::Out>) -> Self {
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

impl<F, S, H, R: Reply> fmt::Debug for ResponseFuture<F, S, H, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E, S, H, R> Future for ResponseFuture<F, S, H, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    R: Reply,
{
    type Output = Result<R::Out, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Direct {
                    future,
                    attempt,
                    finish,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    // Tested in place: the attempt is moved out only for the rare response read.
                    match attempt {
                        Some((inspect, _)) if inspect.should_inspect(&response) => {
                            let (attempt, replica) = attempt.take().expect("matched Some");
                            State::Slow {
                                future: finish(attempt, response, replica),
                            }
                        }
                        _ => return Poll::Ready(Ok(response.pass())),
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

fn finish<H, S, R>(attempt: Attempt<H>, response: R, replica: Replica<S>) -> BoxFuture<R::Out>
where
    H: Head,
    S: Below<H::Sent, R>,
    R: Reply,
{
    let mut sender = Tower {
        ready: None,
        replica,
    };
    Box::pin(async move { attempt.finish(response, &mut sender).await })
}
