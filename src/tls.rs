//! The one TLS configuration every client of the crate uses — the accounts client's reqwest and
//! [`ZohoClient`](crate::client::ZohoClient)'s hyper-util: rustls with an explicit `ring` provider
//! (no C toolchain or cmake to build, and no process-wide default a second provider in the
//! application could make ambiguous) and the webpki roots (no system certificates needed).

use std::sync::Arc;

use crate::error::Error;

/// A client configuration with the `ring` provider, rustls' safe default protocol versions and
/// the webpki roots.
pub(crate) fn client_config() -> Result<rustls::ClientConfig, Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::config(format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}
