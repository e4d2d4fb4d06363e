//! Why a request went without the token, said where the user will look.
//!
//! A request to a host that does not get the token (`localhost` where the token's api_domain is
//! `127.0.0.1`, a gateway never passed to `allow_host`) goes out untouched, and all the user sees
//! is Zoho's `401 AUTHENTICATION_FAILURE`. So the layer logs the reason once per host at `debug`
//! when it sends such a request and, when one comes back `401 Unauthorized`, puts a
//! [`TokenWithheld`] in the response's extensions and warns once per host.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use http::StatusCode;

use super::reply::Reply;
use super::source::Picked;
use super::Config;
use crate::cache::CachedToken;
use crate::hosts::{Address, Kept, Target};

/// How many hosts each "once per host" set remembers; past it the set starts over, so a service
/// calling endless hosts keeps bounded memory and at worst repeats a message.
const REMEMBERED_HOSTS: usize = 1024;

/// In the extensions of a `401 Unauthorized` response to a request the layer sent **without** the
/// token, because its host is not one the token goes to: which host, and why.
///
/// ```
/// # fn check<B>(response: &http::Response<B>) {
/// if let Some(withheld) = response.extensions().get::<zoho_auth::TokenWithheld>() {
///     eprintln!("{withheld}"); // "the Zoho token was not sent to localhost: ..."
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenWithheld {
    host: String,
    reason: String,
}

impl TokenWithheld {
    /// The host the request went to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Why that host does not get the token, and what would make it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for TokenWithheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Zoho token was not sent to {}: {}",
            self.host, self.reason
        )
    }
}

/// Which hosts were already reported, shared by every clone of a layer.
#[derive(Debug, Default)]
pub(crate) struct Reported {
    debugged: Mutex<HashSet<String>>,
    warned: Mutex<HashSet<String>>,
}

/// Whether `host` is new to `set`, remembering it.
fn first_time(set: &Mutex<HashSet<String>>, host: &str) -> bool {
    let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
    if set.contains(host) {
        return false;
    }
    if set.len() >= REMEMBERED_HOSTS {
        set.clear();
    }
    set.insert(host.to_owned())
}

/// A request sent without the token to an `http(s)` host: what explaining it needs later.
pub(crate) struct Withheld {
    address: Kept,
    config: Arc<Config>,
    picked: Picked,
}

impl Withheld {
    /// Notes a request to `uri` that goes without the token; `None` when it names no host.
    pub(super) fn new(
        address: &impl Address,
        config: &Arc<Config>,
        picked: Picked,
    ) -> Option<Self> {
        let target = Target::of(address)?;
        if tracing::enabled!(tracing::Level::DEBUG)
            && first_time(&config.reported.debugged, target.host())
        {
            tracing::debug!(
                host = target.host(),
                reason = %reason(&target, config, &picked),
                "sending a request without the Zoho token"
            );
        }
        Some(Self {
            address: address.keep(),
            config: config.clone(),
            picked,
        })
    }

    /// Marks a `401 Unauthorized` answer with why the token was not sent.
    fn inspect(self, response: &mut impl Reply) {
        if response.status() != StatusCode::UNAUTHORIZED {
            return;
        }
        let Some(target) = Target::of(&self.address) else {
            return;
        };
        let withheld = TokenWithheld {
            host: target.host().to_owned(),
            reason: reason(&target, &self.config, &self.picked),
        };
        if first_time(&self.config.reported.warned, target.host()) {
            tracing::warn!(
                host = target.host(),
                reason = withheld.reason(),
                "a request sent without the Zoho token was answered 401 Unauthorized"
            );
        }
        response.extensions_mut().insert(withheld);
    }
}

/// The answer to a request sent without the token, as the caller receives it: marked when it
/// is a `401` that the token's absence explains.
pub(super) fn returned<R: Reply>(mut response: R, withheld: Option<Withheld>) -> R::Out {
    if let Some(withheld) = withheld {
        withheld.inspect(&mut response);
    }
    response.pass()
}

fn reason(target: &Target<'_>, config: &Config, picked: &Picked) -> String {
    let peek = |token: Option<&CachedToken>| {
        let dc = config.source.dc(config.hosts.dc, token);
        config
            .hosts
            .why_not(target, token.and_then(|t| t.api_host()), dc)
    };
    match config.source.cache(picked) {
        Ok(cache) => cache.peek(peek),
        Err(_) => peek(None),
    }
}
