//! Many Zoho accounts in one service: [`ConnectionId`] names one, and stores keep each
//! connection's record apart.

#[cfg(feature = "connections")]
mod events;
mod id;
#[cfg(feature = "follow-redirect")]
mod redirect;
#[cfg(feature = "connections")]
mod registry;

#[cfg(feature = "connections")]
pub use self::events::{ConnectionEvent, EventKind};
pub use self::id::ConnectionId;
#[cfg(feature = "follow-redirect")]
#[cfg_attr(docsrs, doc(cfg(feature = "follow-redirect")))]
pub use self::redirect::KeepConnection;
#[cfg(feature = "connections")]
pub use self::registry::{
    Connections, ConnectionsBuilder, DEFAULT_MAX_RESIDENT, DEFAULT_MAX_TOKEN_REQUESTS_IN_FLIGHT,
    DEFAULT_TIME_TO_IDLE,
};
#[cfg(feature = "connections")]
pub use crate::layer::RequestHead;
