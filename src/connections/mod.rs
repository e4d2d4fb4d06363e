//! Many Zoho accounts in one service: [`ConnectionId`] names one, and stores keep each
//! connection's record apart.

mod id;

pub use self::id::ConnectionId;
