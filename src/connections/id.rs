//! [`ConnectionId`]: the application's name for one connected Zoho account.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::Error;

/// The application's name for one connected Zoho account: its user id, tenant id or
/// organisation id. It keys the account's record in a
/// connection store, its token cache in the connection registry,
/// and chooses the account for a request when put in the
/// request's extensions.
///
/// Any text of 1 to [`MAX_LEN`](Self::MAX_LEN) bytes without control characters. Not a secret:
/// it is shown in logs, errors and listings. Cheap to clone.
///
/// ```
/// use zoho_auth::ConnectionId;
///
/// let id: ConnectionId = "tenant-42".parse()?;
/// assert_eq!(id.as_str(), "tenant-42");
/// assert!(ConnectionId::new("").is_err());
/// # Ok::<(), zoho_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// The longest id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps `id`.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(Error::config(format!(
                "a connection id has 1 to {} bytes; got {}",
                Self::MAX_LEN,
                id.len()
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::config(format!(
                "a connection id has no control characters; got {id:?}"
            )));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnectionId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self, Error> {
        Self::new(id)
    }
}

impl TryFrom<&str> for ConnectionId {
    type Error = Error;

    fn try_from(id: &str) -> Result<Self, Error> {
        Self::new(id)
    }
}

impl TryFrom<String> for ConnectionId {
    type Error = Error;

    fn try_from(id: String) -> Result<Self, Error> {
        Self::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(ConnectionId::new("user@example.com").is_ok());
        assert!(ConnectionId::new("ünïcode / spaces ok").is_ok());
        assert!(ConnectionId::new("").unwrap_err().is_config());
        assert!(ConnectionId::new("a\nb").unwrap_err().is_config());
        assert!(ConnectionId::new("x".repeat(ConnectionId::MAX_LEN)).is_ok());
        assert!(ConnectionId::new("x".repeat(ConnectionId::MAX_LEN + 1)).is_err());
    }
}
