//! Which token cache a request uses: the layer's one, or — for a layer over
//! [`Connections`](crate::Connections) — the cache of the connection the request names.

#[cfg(feature = "connections")]
use std::sync::Arc;

#[cfg(feature = "connections")]
use http::{Extensions, HeaderMap, Method, Uri};

use crate::cache::{CachedToken, TokenCache};
#[cfg(feature = "connections")]
use crate::connections::{ConnectionId, Connections};
use crate::dc::DataCenter;
use crate::error::Error;
#[cfg(feature = "connections")]
use crate::error::Kind;

/// Where a layer's tokens come from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// One cache for every request.
    One(TokenCache),
    /// A cache per connection, chosen per request.
    #[cfg(feature = "connections")]
    Many(Many),
}

/// What a connection selector sees of a request.
#[cfg(feature = "connections")]
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI, as the caller wrote it (perhaps relative).
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

#[cfg(feature = "connections")]
pub(crate) type Select = dyn Fn(&RequestHead<'_>) -> Option<ConnectionId> + Send + Sync;

/// A registry and how to choose among it.
#[cfg(feature = "connections")]
#[derive(Clone)]
pub(crate) struct Many {
    pub(crate) connections: Connections,
    pub(crate) select: Option<Arc<Select>>,
}

#[cfg(feature = "connections")]
impl std::fmt::Debug for Many {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Many")
            .field("connections", &self.connections)
            .field("select", &self.select.is_some())
            .finish()
    }
}

/// The cache a request picked: `None` for the layer's one (nothing to clone), or the
/// connection's.
pub(crate) type Picked = Option<TokenCache>;

impl Source {
    /// The cache a request picked.
    #[inline]
    pub(crate) fn cache<'a>(&'a self, picked: &'a Picked) -> Result<&'a TokenCache, Error> {
        match (self, picked) {
            (_, Some(cache)) => Ok(cache),
            (Source::One(cache), None) => Ok(cache),
            #[cfg(feature = "connections")]
            (Source::Many(_), None) => Err(no_connection()),
        }
    }

    /// The data centre whose hosts get `token`: the layer's, from its accounts server, or else —
    /// behind a proxy, or for connections, each in its own — the one the token's `api_domain`
    /// names.
    #[inline]
    pub(crate) fn dc(
        &self,
        layer_dc: Option<DataCenter>,
        token: Option<&CachedToken>,
    ) -> Option<DataCenter> {
        layer_dc.or_else(|| token.and_then(CachedToken::api_dc))
    }

    /// The single cache, if the layer has one.
    pub(crate) fn single(&self) -> Option<&TokenCache> {
        match self {
            Source::One(cache) => Some(cache),
            #[cfg(feature = "connections")]
            Source::Many(_) => None,
        }
    }
}

#[cfg(feature = "connections")]
impl Many {
    /// The cache of connection `id` (the one a request names), else of the one the selector
    /// finds (`select_by` calls it with the request's head). Without one the request fails
    /// before anything is sent.
    pub(crate) fn pick(
        &self,
        id: Option<&ConnectionId>,
        select_by: impl FnOnce(&Select) -> Option<ConnectionId>,
    ) -> Result<TokenCache, Error> {
        if let Some(id) = id {
            return self.connections.get(id);
        }
        let id = self
            .select
            .as_deref()
            .and_then(select_by)
            .ok_or_else(no_connection)?;
        self.connections.get(&id)
    }
}

#[cfg(feature = "connections")]
fn no_connection() -> Error {
    Error::new(
        Kind::NotConnected,
        "the request names no Zoho connection: put a ConnectionId in its extensions (or give the \
         layer a selector that finds one)",
    )
}
