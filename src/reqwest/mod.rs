//! The layer for reqwest users: [`ZohoReqwest`], a tower service of `reqwest::Request`, and
//! (feature `reqwest-middleware`) [`ZohoAuthMiddleware`] for `reqwest_middleware` chains.
//!
//! Both are front ends of the one layer: what a request gets — the host check, the token, the
//! reading of a dead-token answer, the refresh, the replay and its limits, the counters — is
//! decided by the same code as for a tower stack, from the same [`ZohoAuthLayer`](crate::ZohoAuthLayer) settings and
//! the same token source.
//!
//! ```
//! use tower::{Service, ServiceExt};
//! use zoho_auth::{reqwest::ZohoReqwest, sim::Simulator, ZohoAuthLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let zoho = Simulator::start().await?;
//! let cache = zoho.token_cache()?;
//! let http = zoho_auth::accounts::http_client_builder()?.build()?;
//! let mut crm = ZohoReqwest::new(http.clone(), &ZohoAuthLayer::new(cache));
//!
//! let request = http.get(format!("{}/crm/v8/Leads", zoho.url())).query(&[("per_page", "5")]).build()?;
//! let response = crm.ready().await?.call(request).await?.error_for_status()?;
//! assert_eq!(response.url().path(), "/crm/v8/Leads");
//! # Ok(()) }
//! ```

/// The account's own API host, for a reqwest URL, which must be absolute: a request for
/// `{API_DOMAIN}/crm/v8/Leads` goes where a relative `/crm/v8/Leads` goes through the layer — the
/// token's `api_domain` (each connection's own, over [`Connections`](crate::Connections)), or the
/// host a [`route`](crate::ZohoAuthLayer::route) names for the path. The host is under the
/// reserved `.invalid` domain: without the layer, nothing is sent.
///
/// ```
/// assert_eq!(zoho_auth::reqwest::API_DOMAIN, "https://api-domain.invalid");
/// ```
pub const API_DOMAIN: &str = "https://api-domain.invalid";

mod convert;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod service;

pub use self::convert::ReqwestHead;
#[cfg(feature = "reqwest-middleware")]
pub use self::middleware::ZohoAuthMiddleware;
pub use self::service::ZohoReqwest;
