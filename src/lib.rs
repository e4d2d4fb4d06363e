#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accounts;
pub mod authorize;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod cache;
pub mod classify;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod connections;
pub mod dc;
mod error;
mod hosts;
mod layer;
pub mod reqwest;
pub mod secret;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod sim;
mod stats;
pub mod store;
mod tls;

pub use cache::{Seed, Status, Token, TokenCache, TokenCacheBuilder};
pub use connections::ConnectionId;
#[cfg(feature = "connections")]
#[cfg_attr(docsrs, doc(cfg(feature = "connections")))]
pub use connections::{Connections, ConnectionsBuilder};
pub use dc::{Accounts, DataCenter, Environment};
pub use error::Error;
pub use layer::{
    ConvertBody, HttpHead, RequestBody, ResponseBody, ResponseFuture, TokenWithheld, ZohoAuth,
    ZohoAuthLayer, DEFAULT_MAX_ERROR_BODY, DEFAULT_MAX_REPLAY_BODY,
};
pub use secret::{AccessToken, ClientId, ClientSecret, GrantCode, RefreshToken};
pub use stats::Stats;
