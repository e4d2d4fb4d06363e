use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::attempt::Attempt;
use super::body::{RequestBody, ResponseBody};
use crate::error::Error;

type BoxFuture<R> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<R>>, BoxError>> + Send>>;

pin_project! {
    /// The future of [`ZohoAuth`](super::ZohoAuth). With a cached token it is the inner service's
    /// future plus a status check, neither boxed nor allocating; waiting for a token, buffering a
    /// body and handling a token error run in a boxed continuation.
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
        Slow {
            future: BoxFuture<R>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<F, S, B, R> ResponseFuture<F, S, B, R> {
    pub(super) fn direct(future: F, attempt: Option<Attempt<S, B>>) -> Self {
        Self {
            state: State::Direct { future, attempt },
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

impl<F, E, S, B, R> Future for ResponseFuture<F, S, B, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    S: Service<Request<RequestBody<B>>, Response = Response<R>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    R: Body + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<R>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Direct { future, attempt } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    match attempt.take() {
                        Some(attempt) if attempt.should_inspect(&response) => State::Slow {
                            future: Box::pin(attempt.finish(response)),
                        },
                        _ => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                    }
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
