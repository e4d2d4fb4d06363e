//! [`KeepConnection`]: the connection of a request, kept on every redirected hop.

use http::Request;
use tower_http::follow_redirect::policy::{Action, Attempt, Policy, Standard};

use super::ConnectionId;

/// A [tower-http redirect policy](tower_http::follow_redirect::policy::Policy) that puts the
/// first request's [`ConnectionId`] back on every redirected request, and otherwise does what
/// `inner` does.
///
/// tower-http's `FollowRedirect` builds each redirected request anew, without the original's
/// extensions, so below it a layer over [`Connections`](super::Connections) would not know the
/// connection of a second hop (and fail it as not connected). With this policy it does: a
/// redirect within the account's hosts carries that account's token, and one elsewhere none,
/// since the layer decides per hop.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_http::follow_redirect::{policy::Standard, FollowRedirectLayer};
/// use zoho_auth::{connections::KeepConnection, Connections, ZohoAuthLayer};
///
/// fn layers(connections: Connections) -> ServiceBuilder<impl Sized> {
///     ServiceBuilder::new()
///         .layer(FollowRedirectLayer::with_policy(KeepConnection::new(Standard::default())))
///         .layer(ZohoAuthLayer::connections(connections))
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeepConnection<P = Standard> {
    inner: P,
    connection: Option<ConnectionId>,
}

impl<P> KeepConnection<P> {
    /// Keeps the connection, and follows redirects as `inner` says.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            connection: None,
        }
    }
}

impl<P, B, E> Policy<B, E> for KeepConnection<P>
where
    P: Policy<B, E>,
{
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, E> {
        self.inner.redirect(attempt)
    }

    // `FollowRedirect` clones the policy for each request it is given and calls this for that
    // request first, then for every hop: the clone remembers its own request's connection.
    fn on_request(&mut self, request: &mut Request<B>) {
        match request.extensions().get::<ConnectionId>() {
            Some(id) => self.connection = Some(id.clone()),
            None => {
                if let Some(id) = &self.connection {
                    request.extensions_mut().insert(id.clone());
                }
            }
        }
        self.inner.on_request(request);
    }

    fn clone_body(&self, body: &B) -> Option<B> {
        self.inner.clone_body(body)
    }
}
