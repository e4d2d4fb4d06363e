//! Credentials as types that cannot leak by accident.
//!
//! Zoho hands out four kinds of secrets: the client secret, grant codes, refresh tokens and access
//! tokens. Each has its own type here (as oauth2-rs does), so one cannot be passed where another is
//! expected, and every one of them prints as `[redacted]` through both `Debug` and `Display`. The
//! value is only reachable through [`expose`](ClientSecret::expose), which makes each place that
//! reads a secret easy to find. The memory is zeroed on drop (via [`secrecy`]).
//!
//! ```
//! use zoho_auth::RefreshToken;
//!
//! let token = RefreshToken::new("1000.0123456789abcdef.fedcba9876543210");
//! assert_eq!(format!("{token:?}"), "RefreshToken([redacted])");
//! assert_eq!(token.to_string(), "[redacted]");
//! assert!(token.expose().starts_with("1000."));
//! ```

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A Zoho OAuth client id, as shown in Zoho's API console. Not a secret: it appears in
/// authorization URLs, so it prints normally.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The client id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientId").field(&self.0).finish()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The secret value. Every call site is a place where the secret leaves its wrapper:
            /// keep them few and never log what they return.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[redacted]")
            }
        }

        impl PartialEq for $name {
            /// Constant-time comparison, so comparing secrets does not leak them through timing.
            fn eq(&self, other: &Self) -> bool {
                constant_time_eq(self.expose().as_bytes(), other.expose().as_bytes())
            }
        }

        impl Eq for $name {}
    };
}

secret_type!(
    /// The client secret issued with a [`ClientId`]. With multi-DC clients, each data centre may
    /// have its own secret.
    ClientSecret
);
secret_type!(
    /// A long-lived Zoho refresh token (`1000.xxx.yyy`). It never expires by itself but can be
    /// revoked; Zoho keeps at most 20 per user and client.
    RefreshToken
);
secret_type!(
    /// A Zoho access token, valid for about an hour, sent as `Authorization: Zoho-oauthtoken ...`.
    AccessToken
);
secret_type!(
    /// A one-time authorization (grant) code, valid for about two minutes.
    GrantCode
);

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_type_redacts_debug_and_display() {
        let value = "1000.secret-value.do-not-print";
        let printed = [
            format!(
                "{:?} {}",
                ClientSecret::new(value),
                ClientSecret::new(value)
            ),
            format!(
                "{:?} {}",
                RefreshToken::new(value),
                RefreshToken::new(value)
            ),
            format!("{:?} {}", AccessToken::new(value), AccessToken::new(value)),
            format!("{:?} {}", GrantCode::new(value), GrantCode::new(value)),
        ];
        for line in printed {
            assert!(!line.contains("secret-value"), "{line}");
            assert!(line.contains("[redacted]"), "{line}");
        }
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(AccessToken::new("a"), AccessToken::new("a"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("b"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("ab"));
    }
}
