//! Relative URLs: a request for `/crm/v8/Leads` goes to the account's own API host.
//!
//! Zoho tells each token where its account's APIs live (`api_domain`), and an account lives in
//! one data centre. Resolving relative URLs against the token is what lets one piece of code call
//! accounts in any data centre; a few products (Desk, Mail, People) live on their own hosts, which
//! the application names per path prefix.

use http::uri::PathAndQuery;
use http::Uri;

use crate::dc::{DataCenter, Environment};
use crate::error::Error;
use crate::hosts::{self, Origin, Place};

/// The host that stands for the account's `api_domain` in a URL that must be absolute (reqwest's
/// are): under the reserved `.invalid` domain, so that nothing could ever be sent there.
pub(crate) const API_DOMAIN_HOST: &str = "api-domain.invalid";

/// Whether `uri` names no scheme and no host — a path (and query) only — or names the stand-in
/// for the account's `api_domain`.
#[inline]
pub(super) fn is_relative(address: &impl Place) -> bool {
    match address.authority_str() {
        None => address.scheme_str().is_none(),
        // Most authorities are told apart by their length, the rest by their start (without user
        // info the host starts the authority).
        Some(authority) => {
            authority.len() >= API_DOMAIN_HOST.len()
                && (authority.starts_with(API_DOMAIN_HOST) || authority.contains('@'))
                && hosts::split_authority(authority).0 == API_DOMAIN_HOST
        }
    }
}

/// Where relative requests go, by path prefix; the token's `api_domain` for the rest.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes(Vec<Route>);

#[derive(Clone, Debug)]
struct Route {
    prefix: String,
    to: Destination,
}

#[derive(Clone, Debug)]
enum Destination {
    /// A product's host in the account's data centre: `desk` is `desk.zoho.eu` for an EU token.
    Product(String),
    /// A base URL, used as given.
    Fixed(Origin),
}

impl Routes {
    /// Sends relative requests whose path starts with `prefix` to `to`: a product's host name
    /// (`desk`) or a base URL. A prefix given again replaces its route.
    pub(crate) fn add(&mut self, prefix: &str, to: &str) -> Result<(), Error> {
        if !prefix.starts_with('/') {
            return Err(Error::config(format!(
                "a route's path prefix starts with `/`, as in \"/api/v1/\"; got {prefix:?}"
            )));
        }
        let to = if to.contains("://") {
            Destination::Fixed(Origin::parse(to).ok_or_else(|| {
                Error::config(format!(
                    "a route's URL is `https://host[:port]` without a path; got {to:?}"
                ))
            })?)
        } else if !to.is_empty()
            && to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Destination::Product(to.to_ascii_lowercase())
        } else {
            return Err(Error::config(format!(
                "a route goes to a Zoho product's host name (\"desk\", \"mail\", \"people\") or \
                 a URL; got {to:?}"
            )));
        };
        self.0.retain(|route| route.prefix != prefix);
        self.0.push(Route {
            prefix: prefix.to_owned(),
            to,
        });
        // The longest prefix decides.
        self.0
            .sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Ok(())
    }

    /// The absolute URI for the relative `uri`, given the token's `api_domain` and the data
    /// centre the layer knows from its accounts server.
    pub(super) fn resolve(
        &self,
        uri: &Uri,
        api_domain: Option<&Origin>,
        dc: Option<DataCenter>,
    ) -> Result<Uri, Error> {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if !path.as_str().starts_with('/') {
            return Err(Error::config(format!(
                "a relative request's path starts with `/`; got {:?}",
                uri.path()
            )));
        }
        // The token's own data centre first: it is the account's, whatever the layer was built for.
        let account_dc = || {
            api_domain
                .and_then(|origin| DataCenter::from_host(origin.host()))
                .or(dc)
        };
        let route = self.0.iter().find(|r| path.as_str().starts_with(&r.prefix));
        let origin = match route.map(|r| &r.to) {
            Some(Destination::Fixed(origin)) => origin.clone(),
            Some(Destination::Product(product)) => account_dc()
                .and_then(|dc| Origin::https(&dc.product_host(product)))
                .ok_or_else(|| {
                    Error::config(format!(
                        "a relative request for {} is routed to Zoho's {product} host, but the \
                         account's data centre is unknown (the accounts server and the token's \
                         api_domain are not Zoho's): route the prefix to a URL instead",
                        uri.path()
                    ))
                })?,
            None => match api_domain {
                Some(origin) => origin.clone(),
                None => account_dc()
                    .and_then(|dc| Origin::parse(dc.api_domain(Environment::Production)))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "a relative request for {} needs a host: the token came without an \
                             api_domain and the accounts server is not Zoho's; use an absolute URL",
                            uri.path()
                        ))
                    })?,
            },
        };
        origin
            .join(path)
            .map_err(|e| Error::config(format!("cannot resolve {}: {e}", uri.path())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(routes: &Routes, path: &str, api: Option<&str>, dc: Option<DataCenter>) -> String {
        let api = api.map(|a| Origin::parse(a).unwrap());
        routes
            .resolve(&path.parse().unwrap(), api.as_ref(), dc)
            .map_or_else(|e| format!("error: {e}"), |uri| uri.to_string())
    }

    #[test]
    fn the_api_domain_stand_in_is_relative_and_the_public_constant_names_it() {
        assert_eq!(
            crate::reqwest::API_DOMAIN,
            format!("https://{API_DOMAIN_HOST}")
        );
        for relative in ["/crm/v8/Leads", "https://api-domain.invalid/crm/v8/Leads"] {
            assert!(is_relative(&relative.parse::<Uri>().unwrap()), "{relative}");
        }
        for absolute in [
            "https://www.zohoapis.eu/crm",
            "https://api-domain.invalid.example/x",
        ] {
            assert!(
                !is_relative(&absolute.parse::<Uri>().unwrap()),
                "{absolute}"
            );
        }
    }

    #[test]
    fn relative_paths_go_to_the_api_domain_with_their_query() {
        let routes = Routes::default();
        assert_eq!(
            resolve(
                &routes,
                "/crm/v8/users?type=CurrentUser",
                Some("https://www.zohoapis.eu"),
                None
            ),
            "https://www.zohoapis.eu/crm/v8/users?type=CurrentUser"
        );
        assert_eq!(
            resolve(
                &routes,
                "/crm/v8/Leads",
                Some("http://127.0.0.1:8080"),
                None
            ),
            "http://127.0.0.1:8080/crm/v8/Leads"
        );
        // No api_domain: the data centre's API domain.
        assert_eq!(
            resolve(&routes, "/books/v3/invoices", None, Some(DataCenter::In)),
            "https://www.zohoapis.in/books/v3/invoices"
        );
        assert!(resolve(&routes, "/crm/v8/Leads", None, None).starts_with("error: "));
    }

    #[test]
    fn products_on_their_own_hosts_follow_the_account_data_centre() {
        let mut routes = Routes::default();
        routes.add("/api/v1/", "desk").unwrap();
        routes
            .add("/api/v1/mail/", "https://gateway.example.com:8443")
            .unwrap();
        // The token's api_domain names the account's DC, whatever the layer was built for.
        assert_eq!(
            resolve(
                &routes,
                "/api/v1/tickets",
                Some("https://www.zohoapis.com.au"),
                Some(DataCenter::Us)
            ),
            "https://desk.zoho.com.au/api/v1/tickets"
        );
        assert_eq!(
            resolve(&routes, "/api/v1/tickets", None, Some(DataCenter::Ca)),
            "https://desk.zohocloud.ca/api/v1/tickets"
        );
        // The longest prefix wins.
        assert_eq!(
            resolve(
                &routes,
                "/api/v1/mail/x",
                Some("https://www.zohoapis.eu"),
                None
            ),
            "https://gateway.example.com:8443/api/v1/mail/x"
        );
        assert_eq!(
            resolve(
                &routes,
                "/crm/v8/Leads",
                Some("https://www.zohoapis.eu"),
                None
            ),
            "https://www.zohoapis.eu/crm/v8/Leads"
        );
        // A product host needs a known data centre.
        assert!(
            resolve(&routes, "/api/v1/tickets", Some("http://127.0.0.1:1"), None)
                .contains("data centre is unknown")
        );
    }

    #[test]
    fn bad_routes_are_refused() {
        let mut routes = Routes::default();
        assert!(routes.add("api/v1", "desk").unwrap_err().is_config());
        assert!(routes
            .add("/api/", "https://x.example.com/path")
            .unwrap_err()
            .is_config());
        assert!(routes.add("/api/", "desk zoho").unwrap_err().is_config());
        assert!(routes.add("/api/", "").unwrap_err().is_config());
    }
}
