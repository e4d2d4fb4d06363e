//! The host policy's last answers, per thread: which token-error rules apply to a request that
//! carries token `T` to origin `O` under layer settings `C`.
//!
//! A service sends most of its requests to one or two hosts with the same token for an hour, and
//! deciding again each time — the host policy's patterns, the classifier's rules for the host —
//! was a fifth of what the layer costs a request. The answer is a function of the settings, the
//! token (its `api_domain` and data centre) and the URL's scheme and authority only, so it is
//! kept keyed by exactly those: the settings and the token by identity (a [`Weak`] of each, so
//! that neither address can be reused by another while it is a key, and neither value — the
//! token's secret included — is kept alive by it), the origin by its text. Only requests the
//! policy lets the token go to are remembered, never one whose URL carries user info.
//!
//! Per thread, direct-mapped by token: no lock and no reference count on the way to an answer,
//! and requests of a few connections interleaved on one thread each keep theirs.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::Config;
use crate::cache::CachedToken;
use crate::classify::RuleMask;
use crate::hosts::Place;

/// Tokens remembered per thread.
const SLOTS: usize = 8;

struct Answer {
    config: Weak<Config>,
    token: Weak<CachedToken>,
    /// `scheme://authority`.
    origin: String,
    /// Where the scheme ends in `origin`.
    scheme: usize,
    rules: RuleMask,
}

impl Answer {
    fn is_for(&self, config: &Arc<Config>, token: &Arc<CachedToken>, place: &impl Place) -> bool {
        Weak::as_ptr(&self.token) == Arc::as_ptr(token)
            && Weak::as_ptr(&self.config) == Arc::as_ptr(config)
            && match place.origin_str() {
                Some(origin) => origin == self.origin,
                None => {
                    let (scheme, rest) = self.origin.split_at(self.scheme);
                    place.scheme_str() == Some(scheme)
                        && place.authority_str() == rest.strip_prefix("://")
                }
            }
    }
}

thread_local! {
    static ANSWERS: RefCell<[Option<Answer>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

fn slot(token: &Arc<CachedToken>) -> usize {
    // Allocations are at least 16-byte aligned; the bits above tell tokens apart.
    (Arc::as_ptr(token) as usize >> 4) % SLOTS
}

/// The rules remembered for a request to `place` carrying `token` under `config`, if the policy
/// let such a request carry it before.
#[inline]
pub(super) fn recall(
    config: &Arc<Config>,
    token: &Arc<CachedToken>,
    place: &impl Place,
) -> Option<RuleMask> {
    ANSWERS
        .try_with(|answers| {
            answers.try_borrow().ok()?[slot(token)]
                .as_ref()
                .filter(|answer| answer.is_for(config, token, place))
                .map(|answer| answer.rules)
        })
        .ok()
        .flatten()
}

/// Remembers that a request to `place` may carry `token` under `config`, with `rules`.
pub(super) fn remember(
    config: &Arc<Config>,
    token: &Arc<CachedToken>,
    place: &impl Place,
    rules: RuleMask,
) {
    let (Some(scheme), Some(authority)) = (place.scheme_str(), place.authority_str()) else {
        return;
    };
    if authority.contains('@') {
        return;
    }
    let mut origin = String::with_capacity(scheme.len() + 3 + authority.len());
    origin.push_str(scheme);
    origin.push_str("://");
    origin.push_str(authority);
    let answer = Answer {
        config: Arc::downgrade(config),
        token: Arc::downgrade(token),
        origin,
        scheme: scheme.len(),
        rules,
    };
    // Not remembered while the thread's answers are being dropped.
    let _ = ANSWERS.try_with(|answers| {
        if let Ok(mut answers) = answers.try_borrow_mut() {
            answers[slot(token)] = Some(answer);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::cache::testing::{offline, put};
    use crate::hosts::Address;
    use crate::layer::service::Plan;
    use crate::secret::{AccessToken, RefreshToken};
    use crate::store::{MemoryStore, StoredAccess, TokenSet};
    use crate::{TokenCache, ZohoAuthLayer};

    /// A cache holding a usable token whose `api_domain` is `api_domain`, adopted from a store
    /// (no call to Zoho).
    async fn cache_with(api_domain: &str) -> TokenCache {
        let store = Arc::new(MemoryStore::new());
        let now = SystemTime::now();
        let set = TokenSet {
            refresh_token: Some(RefreshToken::new("1000.refresh")),
            access: Some(StoredAccess {
                access_token: AccessToken::new("1000.access"),
                issued_at: now,
                expires_at: now + Duration::from_secs(3600),
                api_domain: Some(api_domain.to_owned()),
                scopes: Vec::new(),
            }),
            ..TokenSet::default()
        };
        put(&*store, &set).await;
        let cache = offline(store);
        cache.token().await.unwrap();
        cache
    }

    /// What a plan says, for comparing two.
    fn said(plan: &Plan) -> String {
        match plan {
            Plan::Pass => "pass".to_owned(),
            Plan::Fail(error) => format!("fail {:?}", error.kind()),
            Plan::Wait => "wait".to_owned(),
            Plan::Attach(credential) => format!(
                "attach {} {:?} {}",
                credential.generation, credential.rules, credential.resolved
            ),
        }
    }

    /// The decision with the memo, and the one made afresh, for one request.
    fn both(
        config: &Arc<Config>,
        token: &Arc<CachedToken>,
        address: &(impl Address + Clone),
    ) -> (String, String) {
        let (mut remembered, mut fresh) = (address.clone(), address.clone());
        let decided = config.decide(Some(token), true, &mut remembered);
        let planned = Plan::new(Some(&**token), true, &mut fresh, config);
        (said(&decided), said(&planned))
    }

    /// Tokens of two data centres, some sharing a slot, under two settings, to origins the
    /// policy answers differently for (another data centre's host, an allowed host, plain http,
    /// another port, user info), each origin asked for by every token and settings in turn:
    /// every answer recalled is the one the policy gives, so an answer is never recalled for
    /// another token, other settings or another origin.
    #[tokio::test]
    async fn a_recalled_answer_is_the_answer_the_policy_gives() {
        let domains = ["https://www.zohoapis.com", "https://www.zohoapis.eu"];
        let (mut tokens, mut caches) = (Vec::new(), Vec::new());
        // Until a token of the second data centre follows one of the first in the same slot.
        let shared = |tokens: &[(Arc<CachedToken>, usize)]| {
            tokens.iter().enumerate().any(|(i, (first, dc))| {
                *dc == 0
                    && tokens[i + 1..]
                        .iter()
                        .any(|(later, dc)| *dc == 1 && slot(later) == slot(first))
            })
        };
        while !shared(&tokens) {
            let dc = tokens.len() % 2;
            let cache = cache_with(domains[dc]).await;
            tokens.push((cache.lookup(|token, _| token.cloned()).unwrap(), dc));
            caches.push(cache);
            assert!(tokens.len() < 100, "no two tokens share a slot");
        }
        let allowing = ZohoAuthLayer::new(caches[0].clone())
            .allow_host("allowed.example")
            .unwrap();
        let configs = [
            allowing.config().clone(),
            ZohoAuthLayer::new(caches[0].clone()).config().clone(),
        ];
        let urls = [
            "https://www.zohoapis.com/crm/v8/Leads",
            "https://www.zohoapis.eu/crm/v8/Leads",
            "https://desk.zoho.eu/api/v1/tickets",
            "https://allowed.example/x",
            "http://www.zohoapis.com/crm",
            "https://www.zohoapis.com:8443/crm",
            "https://user:secret@www.zohoapis.com/crm",
            "https://elsewhere.example/",
        ];
        let (mut attached, mut passed) = (0, 0);
        for url in urls {
            for _ in 0..2 {
                for (token, _) in &tokens {
                    for config in &configs {
                        let parsed: url::Url = url.parse().unwrap();
                        let (decided, planned) = both(config, token, &parsed);
                        assert_eq!(decided, planned, "{url} (as a reqwest Url)");
                        let uri: http::Uri = url.parse().unwrap();
                        let (decided, planned) = both(config, token, &uri);
                        assert_eq!(decided, planned, "{url} (as an http Uri)");
                        attached += usize::from(planned.starts_with("attach"));
                        passed += usize::from(planned == "pass");
                    }
                }
            }
        }
        assert!(
            attached > 0 && passed > 0,
            "{attached} attached, {passed} passed"
        );
    }
}
