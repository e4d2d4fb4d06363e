//! Zoho OAuth 2.0 for tower.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod dc;
mod error;
mod hosts;
pub mod secret;
#[cfg(feature = "simulator")]
pub mod sim;

pub use dc::{Accounts, DataCenter, Environment};
pub use error::Error;
pub use secret::{AccessToken, ClientId, ClientSecret, GrantCode, RefreshToken};
