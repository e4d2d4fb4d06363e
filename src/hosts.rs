//! Which requests may carry the token.
//!
//! A token is a bearer credential: whoever receives it can act as the user. The layer therefore
//! attaches it only to hosts of the token's own data centre — the `api_domain` Zoho returned with
//! the token, and the DC's product hosts (`*.zohoapis.<tld>`, `*.zoho.<tld>`) — plus hosts the
//! user allows explicitly. Requests elsewhere (a redirect to a CDN, a webhook, another DC) pass
//! through without it, the lesson of golang/oauth2 #500. Plain `http` is refused for a host that
//! would get the token unless it is a loopback address, as Azure's SDK refuses non-https.

use std::net::IpAddr;

use http::Uri;

use crate::dc::DataCenter;

/// What the layer does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A Zoho host over a safe scheme: attach the token.
    Attach,
    /// Not a host of ours: forward untouched.
    PassThrough,
    /// A Zoho host over plain `http` off loopback: fail the request, never send the token.
    Refuse,
}

/// A host (and optionally a port) that may receive the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `host:port`, `[v6]:port` or a URL such as `https://api.example.com:8443`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let authority = match text.split_once("://") {
            Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
            None => text,
        };
        let uri: Uri = format!("http://{authority}").parse().ok()?;
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().or_else(|| match text.split_once("://") {
            Some(("https", _)) => Some(443),
            Some(("http", _)) => Some(80),
            _ => None,
        });
        Some(Self { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        host.eq_ignore_ascii_case(&self.host) && self.port.is_none_or(|p| p == port)
    }
}

/// The hosts that receive the token: the DC's own, the token's `api_domain`, and an allowlist.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPolicy {
    pub(crate) dc: Option<DataCenter>,
    pub(crate) allow: Vec<HostPattern>,
}

impl HostPolicy {
    /// Decides for one request. `api_domain` is the token's, if Zoho sent one.
    pub(crate) fn verdict(&self, uri: &Uri, api_domain: Option<&HostPattern>) -> Verdict {
        let Some(host) = uri.host() else {
            return Verdict::PassThrough;
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Verdict::PassThrough,
        };
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let ours = api_domain.is_some_and(|p| p.matches(host, port))
            || self.dc.is_some_and(|dc| dc.owns_host(host))
            || self.allow.iter().any(|p| p.matches(host, port));
        if !ours {
            Verdict::PassThrough
        } else if secure || is_loopback_host(host) {
            Verdict::Attach
        } else {
            Verdict::Refuse
        }
    }
}

/// `localhost`, `127.0.0.0/8` or `::1` (with or without brackets).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(policy: &HostPolicy, url: &str, api: Option<&str>) -> Verdict {
        let api = api.map(|a| HostPattern::parse(a).unwrap());
        policy.verdict(&url.parse().unwrap(), api.as_ref())
    }

    #[test]
    fn dc_hosts_get_the_token_others_do_not() {
        let policy = HostPolicy {
            dc: Some(DataCenter::Eu),
            allow: vec![],
        };
        assert_eq!(
            verdict(&policy, "https://www.zohoapis.eu/crm/v8/users", None),
            Verdict::Attach
        );
        assert_eq!(
            verdict(&policy, "https://desk.zoho.eu/api/v1/tickets", None),
            Verdict::Attach
        );
        assert_eq!(
            verdict(&policy, "https://www.zohoapis.com/crm", None),
            Verdict::PassThrough
        );
        assert_eq!(
            verdict(&policy, "https://cdn.example.com/x", None),
            Verdict::PassThrough
        );
        assert_eq!(
            verdict(&policy, "https://zohoapis.eu.example.com/", None),
            Verdict::PassThrough
        );
        assert_eq!(verdict(&policy, "/relative", None), Verdict::PassThrough);
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback() {
        let policy = HostPolicy {
            dc: Some(DataCenter::Us),
            allow: vec![],
        };
        assert_eq!(
            verdict(&policy, "http://www.zohoapis.com/crm", None),
            Verdict::Refuse
        );
        let api = Some("http://127.0.0.1:8080");
        assert_eq!(
            verdict(&policy, "http://127.0.0.1:8080/crm", api),
            Verdict::Attach
        );
        assert_eq!(
            verdict(&policy, "http://127.0.0.1:9090/crm", api),
            Verdict::PassThrough
        );
        assert_eq!(
            verdict(&policy, "http://[::1]:8080/crm", Some("http://[::1]:8080")),
            Verdict::Attach
        );
    }

    #[test]
    fn allowlist_matches_host_and_optional_port() {
        let policy = HostPolicy {
            dc: None,
            allow: vec![
                HostPattern::parse("proxy.internal").unwrap(),
                HostPattern::parse("https://gw.example.com:8443").unwrap(),
            ],
        };
        assert_eq!(
            verdict(&policy, "https://proxy.internal:9443/x", None),
            Verdict::Attach
        );
        assert_eq!(
            verdict(&policy, "https://gw.example.com:8443/x", None),
            Verdict::Attach
        );
        assert_eq!(
            verdict(&policy, "https://gw.example.com/x", None),
            Verdict::PassThrough
        );
        assert_eq!(
            verdict(&policy, "http://proxy.internal/x", None),
            Verdict::Refuse
        );
    }
}
