//! Transitions of connections' health, delivered once per process: [`ConnectionEvent`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::ConnectionId;
use crate::cache::{Health, Observer};

/// How many events a slow subscriber may fall behind before it misses some (it then gets
/// `RecvError::Lagged` and goes on with the newest).
const CAPACITY: usize = 1024;

/// A connection changed in a way the application may act on: email a user, mark an account.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionEvent {
    /// The connection.
    pub id: ConnectionId,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// It got its first token after having none: a consent landed.
    Connected,
    /// Only new credentials cure it now: its refresh token was revoked (`invalid_code`) or Zoho
    /// does not know the client (`invalid_client`). Zoho is not called for it again until its
    /// record holds a new refresh token.
    NeedsReconsent {
        /// Zoho's error code.
        code: String,
    },
    /// It has a token again after failing (transiently, or until a new consent).
    Recovered,
    /// It was disconnected: by [`Connections::disconnect`](super::Connections::disconnect) in
    /// this process, or its record lost its refresh token in another (a disconnect there, or
    /// `zoho-auth revoke`), found at this process's next refresh.
    Disconnected,
}

/// The registry's side of events: the channel, and the last health of connections that are not
/// healthy, so that a connection rebuilt after an eviction does not report a transition again.
pub(super) struct Events {
    sender: broadcast::Sender<ConnectionEvent>,
    remembered: Mutex<HashMap<ConnectionId, Health>>,
    /// How many connections that were never connected are remembered at most: any id a request
    /// names is one, so they must not grow the map without bound (past it, such a connection
    /// rebuilt after an eviction reports no `Connected` when a consent lands).
    max_not_connected: usize,
}

impl Events {
    pub(super) fn new(max_not_connected: usize) -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            remembered: Mutex::default(),
            max_not_connected,
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.sender.subscribe()
    }

    /// The observer for a cache of connection `id`.
    pub(super) fn observer(self: &Arc<Self>, id: ConnectionId) -> Observer {
        let events = self.clone();
        let last = Mutex::new(self.remembered().get(&id).cloned());
        Arc::new(move |health| events.report(&id, &last, health))
    }

    /// Reports that `id` was disconnected here, and remembers it as not connected: a cache of it
    /// that a request still holds reports no second disconnect when it finds the record gone.
    pub(super) fn disconnected(&self, id: &ConnectionId) {
        self.remembered().insert(id.clone(), Health::NotConnected);
        self.send(id, EventKind::Disconnected);
    }

    fn report(&self, id: &ConnectionId, last: &Mutex<Option<Health>>, health: Health) {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        // What another cache of this connection reported since counts too.
        if let Some(remembered) = self.remembered().get(id) {
            *last = Some(remembered.clone());
        }
        if last.as_ref() == Some(&health) {
            return;
        }
        let kind = transition(last.as_ref(), &health);
        let mut remembered = self.remembered();
        if health == Health::Healthy {
            remembered.remove(id);
        } else if health != Health::NotConnected
            || remembered.contains_key(id)
            || remembered.len() < self.max_not_connected
        {
            remembered.insert(id.clone(), health.clone());
        }
        drop(remembered);
        *last = Some(health);
        drop(last);
        if let Some(kind) = kind {
            self.send(id, kind);
        }
    }

    fn send(&self, id: &ConnectionId, kind: EventKind) {
        tracing::info!(connection = %id, event = ?kind, "Zoho connection event");
        // No subscriber is no error.
        let _ = self.sender.send(ConnectionEvent {
            id: id.clone(),
            kind,
        });
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Health>> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The event, if any, for a connection going from `before` (`None`: unknown to this process) to
/// `after`. A process that meets a connection for the first time reports only a need for
/// re-consent: that it is healthy, or was never connected, is no news.
fn transition(before: Option<&Health>, after: &Health) -> Option<EventKind> {
    match (before, after) {
        (_, Health::NeedsReconsent(code)) => Some(EventKind::NeedsReconsent { code: code.clone() }),
        (Some(Health::NotConnected), Health::Healthy) => Some(EventKind::Connected),
        (Some(Health::Failing | Health::NeedsReconsent(_)), Health::Healthy) => {
            Some(EventKind::Recovered)
        }
        (
            Some(Health::Healthy | Health::Failing | Health::NeedsReconsent(_)),
            Health::NotConnected,
        ) => Some(EventKind::Disconnected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let reconsent = Health::NeedsReconsent("invalid_code".into());
        assert_eq!(transition(None, &Health::Healthy), None);
        assert_eq!(transition(None, &Health::NotConnected), None);
        assert_eq!(transition(None, &Health::Failing), None);
        assert_eq!(
            transition(None, &reconsent),
            Some(EventKind::NeedsReconsent {
                code: "invalid_code".into()
            })
        );
        assert_eq!(
            transition(Some(&Health::NotConnected), &Health::Healthy),
            Some(EventKind::Connected)
        );
        assert_eq!(
            transition(Some(&reconsent), &Health::Healthy),
            Some(EventKind::Recovered)
        );
        assert_eq!(
            transition(Some(&Health::Failing), &Health::Healthy),
            Some(EventKind::Recovered)
        );
        assert_eq!(transition(Some(&Health::Healthy), &Health::Failing), None);
        assert_eq!(
            transition(Some(&Health::Healthy), &Health::NotConnected),
            Some(EventKind::Disconnected)
        );
    }

    #[test]
    fn a_transition_is_reported_once_even_across_rebuilt_caches() {
        let events = Arc::new(Events::new(16));
        let mut received = events.subscribe();
        let id: ConnectionId = "alice".parse().unwrap();
        let reconsent = Health::NeedsReconsent("invalid_code".into());
        let first = events.observer(id.clone());
        first(Health::Healthy);
        first(reconsent.clone());
        first(reconsent.clone());
        // Evicted and rebuilt: the new cache starts from what was remembered.
        let rebuilt = events.observer(id.clone());
        rebuilt(reconsent.clone());
        rebuilt(Health::Healthy);
        let kinds: Vec<_> = std::iter::from_fn(|| received.try_recv().ok())
            .map(|event| event.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::NeedsReconsent {
                    code: "invalid_code".into()
                },
                EventKind::Recovered
            ]
        );
        assert!(
            events.remembered().is_empty(),
            "healthy connections are not remembered"
        );
    }

    #[test]
    fn connections_never_connected_are_remembered_within_a_bound() {
        let events = Arc::new(Events::new(16));
        for n in 0..1000 {
            let observer = events.observer(format!("stranger-{n}").parse().unwrap());
            observer(Health::NotConnected);
        }
        assert_eq!(events.remembered().len(), 16);
        // A connection that needs re-consent is always remembered.
        let revoked: ConnectionId = "revoked".parse().unwrap();
        events.observer(revoked.clone())(Health::NeedsReconsent("invalid_code".into()));
        assert!(events.remembered().contains_key(&revoked));
    }
}
