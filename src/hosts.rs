//! Which requests may carry the token.
//!
//! A token is a bearer credential: whoever receives it can act as the user. The layer therefore
//! attaches it only to hosts of the token's own data centre — the `api_domain` Zoho returned with
//! the token, and the DC's product hosts (`*.zohoapis.<tld>`, `*.zoho.<tld>`) — plus hosts the
//! user allows explicitly. Requests elsewhere (a redirect to a CDN, a webhook, another DC) pass
//! through without it, the lesson of golang/oauth2 #500. Plain `http` is refused for a host that
//! would get the token unless it is a loopback address, as Azure's SDK refuses non-https.

use std::net::IpAddr;

use http::uri::{Authority, InvalidUriParts, Parts, PathAndQuery, Scheme};
use http::Uri;

use crate::dc::DataCenter;

/// Where a request goes, as the layer reads it: the `Uri` of an `http` request, or the `Url` of
/// a reqwest one, read in place (a reqwest URL is never turned into a `Uri` on the way).
pub(crate) trait Address: Place {
    /// Replaces a relative address (or the `API_DOMAIN` stand-in) by `resolve`'s absolute URI
    /// for it; `resolve` reads only the path and query.
    fn resolve_with(
        &mut self,
        resolve: impl FnOnce(&Uri) -> Result<Uri, crate::Error>,
    ) -> Result<(), crate::Error>;
    /// A copy kept past the request (to explain a `401` later), as the front end gave it.
    fn keep(&self) -> Kept;
}

/// An address kept past its request: a `Uri` (a reference count to copy), or a reqwest `Url`
/// (one string), never one turned into the other.
pub(crate) enum Kept {
    Uri(Uri),
    Url(url::Url),
}

impl Place for Kept {
    fn scheme_str(&self) -> Option<&str> {
        match self {
            Kept::Uri(uri) => Place::scheme_str(uri),
            Kept::Url(url) => url.scheme_str(),
        }
    }

    fn authority_str(&self) -> Option<&str> {
        match self {
            Kept::Uri(uri) => uri.authority_str(),
            Kept::Url(url) => url.authority_str(),
        }
    }
}

/// What the host policy reads of an address: its scheme and authority as written.
pub(crate) trait Place {
    /// The scheme, if the address names one.
    fn scheme_str(&self) -> Option<&str>;
    /// The authority as written (user info, host, port), if the address names one.
    fn authority_str(&self) -> Option<&str>;
    /// `scheme://authority` as written, for an address that keeps it in one piece.
    fn origin_str(&self) -> Option<&str> {
        None
    }
}

/// An address's scheme and authority, read once for all the decisions about one request.
#[derive(Clone, Copy)]
pub(crate) struct Written<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
}

impl<'a> Written<'a> {
    #[inline]
    pub(crate) fn of(place: &'a impl Place) -> Self {
        Self {
            scheme: place.scheme_str(),
            authority: place.authority_str(),
        }
    }
}

impl Place for Written<'_> {
    #[inline]
    fn scheme_str(&self) -> Option<&str> {
        self.scheme
    }

    #[inline]
    fn authority_str(&self) -> Option<&str> {
        self.authority
    }
}

impl Place for Uri {
    fn scheme_str(&self) -> Option<&str> {
        Uri::scheme_str(self)
    }

    fn authority_str(&self) -> Option<&str> {
        self.authority().map(Authority::as_str)
    }
}

impl Address for Uri {
    fn resolve_with(
        &mut self,
        resolve: impl FnOnce(&Uri) -> Result<Uri, crate::Error>,
    ) -> Result<(), crate::Error> {
        *self = resolve(self)?;
        Ok(())
    }

    fn keep(&self) -> Kept {
        Kept::Uri(self.clone())
    }
}

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
    /// `host:port` when a port is named: how a request's authority spells it.
    host_port: Option<String>,
    /// Plain `http` may carry the token here.
    loopback: bool,
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
        Some(Self {
            host_port: port.map(|port| format!("{host}:{port}")),
            loopback: is_loopback_host(&host),
            host,
            port,
        })
    }

    /// Whether a request to `authority` goes to this host and port, spelt exactly as the pattern
    /// is: a comparison of bytes, for the common case.
    fn is_authority(&self, authority: &str, secure: bool) -> bool {
        let default_port = if secure { 443 } else { 80 };
        (authority.as_bytes() == self.host.as_bytes()
            && self.port.is_none_or(|port| port == default_port))
            || self
                .host_port
                .as_ref()
                .is_some_and(|spelt| spelt.as_bytes() == authority.as_bytes())
    }

    /// Whether `target` is this host, and on this port when the pattern names one.
    fn matches(&self, target: &Target<'_>) -> bool {
        target.host.eq_ignore_ascii_case(&self.host)
            && self.port.is_none_or(|port| target.port() == Some(port))
    }
}

/// Where a request goes, read once from its URI: the host as [`Uri::host`] gives it (IPv6 in
/// brackets) without a trailing dot, the port as written, and whether the scheme is `https`.
///
/// Reading the authority's bytes directly, rather than through `Uri::host` and `Uri::port_u16`,
/// is most of what keeps the layer's per-request cost near a static header's: those searched
/// the authority four times with `char` patterns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    host: &'a str,
    port: Option<&'a str>,
    secure: bool,
}

impl<'a> Target<'a> {
    /// The target of an absolute `http` or `https` URI; `None` for anything else, which never
    /// carries the token.
    pub(crate) fn of(address: &'a (impl Place + ?Sized)) -> Option<Self> {
        let secure = match address.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let (host, port) = split_authority(address.authority_str()?);
        Some(Self {
            host: host.strip_suffix('.').unwrap_or(host),
            port,
            secure,
        })
    }

    /// The host, for rules that apply to some hosts only.
    pub(crate) fn host(&self) -> &'a str {
        self.host
    }

    /// The port: as written, else the scheme's. `None` if what is written is not a port.
    fn port(&self) -> Option<u16> {
        match self.port {
            Some(port) => port.parse().ok(),
            None => Some(if self.secure { 443 } else { 80 }),
        }
    }
}

/// An authority's host (as [`Uri::host`] gives it: IPv6 in brackets) and the port written after
/// it, if any, found in one backward scan of its bytes: `Uri::host` searched the authority with
/// `char` patterns, which cost a request a few hundred instructions each time.
pub(crate) fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let bytes = authority.as_bytes();
    // Most authorities are a bare host: one scan finds none of `:`, `]` (IPv6) and `@`
    // (userinfo). A port is the text after a last `:`; the host starts after any `@`.
    let after_at = |end: usize| {
        bytes[..end]
            .iter()
            .rposition(|&b| b == b'@')
            .map_or(0, |at| at + 1)
    };
    let (start, end) = match bytes.iter().rposition(|b| matches!(b, b':' | b']' | b'@')) {
        None => (0, bytes.len()),
        Some(at) if bytes[at] == b'@' => (at + 1, bytes.len()),
        Some(colon) if bytes[colon] == b':' => (after_at(colon), colon),
        Some(_) => (after_at(bytes.len()), bytes.len()),
    };
    let port = authority.get(end + 1..).filter(|port| !port.is_empty());
    (&authority[start..end], port)
}

/// The hosts that receive the token: the DC's own, the token's `api_domain`, and an allowlist.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPolicy {
    /// The layer's data centre, from its cache's accounts server; `None` for a registry of
    /// connections, whose tokens each name their own (see `Config::dc`).
    pub(crate) dc: Option<DataCenter>,
    pub(crate) allow: Vec<HostPattern>,
}

impl HostPolicy {
    /// Decides for a request to `uri`, and says where it goes. `api_domain` is the token's, if
    /// Zoho sent one, and `dc` its data centre, if known.
    pub(crate) fn route<'u>(
        &self,
        uri: &'u (impl Place + ?Sized),
        api_domain: Option<&HostPattern>,
        dc: Option<DataCenter>,
    ) -> (Verdict, Option<Target<'u>>) {
        // The common case: a request to exactly the api_domain's host or an allowed one,
        // decided without taking the authority apart.
        if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority_str()) {
            let secure = scheme == "https";
            if let Some(pattern) = api_domain.into_iter().chain(&self.allow).find(|pattern| {
                (secure || scheme == "http") && pattern.is_authority(authority, secure)
            }) {
                // The authority is the host, or the host, a colon and the port.
                let (host, port) = authority.split_at(pattern.host.len());
                let port = port.get(1..);
                let verdict = if secure || pattern.loopback {
                    Verdict::Attach
                } else {
                    Verdict::Refuse
                };
                return (verdict, Some(Target { host, port, secure }));
            }
        }
        let target = Target::of(uri);
        (self.verdict(target.as_ref(), api_domain, dc), target)
    }

    fn verdict(
        &self,
        target: Option<&Target<'_>>,
        api_domain: Option<&HostPattern>,
        dc: Option<DataCenter>,
    ) -> Verdict {
        let Some(target) = target else {
            return Verdict::PassThrough;
        };
        let ours = api_domain.is_some_and(|p| p.matches(target))
            || dc.is_some_and(|dc| dc.owns_host(target.host))
            || self.allow.iter().any(|p| p.matches(target));
        if !ours {
            Verdict::PassThrough
        } else if target.secure || is_loopback_host(target.host) {
            Verdict::Attach
        } else {
            Verdict::Refuse
        }
    }
}

impl HostPolicy {
    /// Why a request to `target` does not get the token, in words that point at the fix: the
    /// near misses first (the right host spelt otherwise, on another port, in another DC).
    pub(crate) fn why_not(
        &self,
        target: &Target<'_>,
        api_domain: Option<&HostPattern>,
        dc: Option<DataCenter>,
    ) -> String {
        let host = target.host;
        if let Some(api) = api_domain {
            if is_loopback_host(host) && api.loopback && !host.eq_ignore_ascii_case(&api.host) {
                return format!(
                    "`{host}` is not `{}`, the host of the token's api_domain: the token goes \
                     only to hosts spelt as its api_domain spells them (or passed to allow_host)",
                    api.host
                );
            }
            if host.eq_ignore_ascii_case(&api.host) {
                return format!(
                    "the token's api_domain is on port {}, this request goes to port {}",
                    api.port
                        .map_or_else(|| "(default)".to_owned(), |p| p.to_string()),
                    target
                        .port()
                        .map_or_else(|| "(unreadable)".to_owned(), |p| p.to_string()),
                );
            }
        }
        if let (Some(other), Some(dc)) = (DataCenter::from_host(host), dc) {
            return format!(
                "{host} serves Zoho's {} data centre, but the token is from {}: a token works \
                 only in the data centre that minted it",
                other.location(),
                dc.location()
            );
        }
        let api = api_domain.map_or_else(
            || "none known".to_owned(),
            |api| api.host_port.clone().unwrap_or_else(|| api.host.clone()),
        );
        let dc = dc.map_or_else(
            || "the accounts server is not Zoho's".to_owned(),
            |dc| dc.location().to_owned(),
        );
        format!(
            "{host} is none of the hosts the token goes to: the token's api_domain ({api}), its \
             data centre's Zoho hosts ({dc}), or a host passed to ZohoAuthLayer::allow_host"
        )
    }
}

/// The scheme and authority of a base URL (an `api_domain`, a route's URL): where a relative
/// request goes.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl Origin {
    /// `http(s)://host[:port]`, with no path beyond `/`, no query and no user info.
    pub(crate) fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri
            .scheme()
            .filter(|s| matches!(s.as_str(), "http" | "https"))?;
        let authority = uri.authority().filter(|a| !a.as_str().contains('@'))?;
        let bare = uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/");
        bare.then(|| Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
    }

    /// `https://host`.
    pub(crate) fn https(host: &str) -> Option<Self> {
        Some(Self {
            scheme: Scheme::HTTPS,
            authority: host.parse().ok()?,
        })
    }

    pub(crate) fn host(&self) -> &str {
        self.authority.host()
    }

    /// This origin with `path` (a path and query from a relative URI).
    pub(crate) fn join(&self, path: PathAndQuery) -> Result<Uri, InvalidUriParts> {
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts)
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
        let uri: Uri = url.parse().unwrap();
        policy.route(&uri, api.as_ref(), policy.dc).0
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
    fn target_reads_host_and_port_like_uri_does() {
        for url in [
            "https://www.zohoapis.com/crm",
            "https://www.zohoapis.com:8443/crm",
            "http://user:secret@desk.zoho.eu:80/x",
            "https://user@[::1]:9000/",
            "https://[::1]/",
            "https://www.zohoapis.com./crm",
            "https://www.zohoapis.com:/crm",
        ] {
            let uri: Uri = url.parse().unwrap();
            let target = Target::of(&uri).unwrap();
            let host = uri.host().unwrap();
            assert_eq!(
                target.host(),
                host.strip_suffix('.').unwrap_or(host),
                "{url}"
            );
            let default = if url.starts_with("https") { 443 } else { 80 };
            assert_eq!(
                target.port(),
                Some(uri.port_u16().unwrap_or(default)),
                "{url}"
            );
        }
        for authority in [
            "api-domain.invalid",
            "api-domain.invalid.",
            "u:p@api-domain.invalid:8443",
            "api-domain.invalid@evil.example",
            "[::1]",
            "user@[::1]:9000",
        ] {
            let parsed: http::uri::Authority = authority.parse().unwrap();
            assert_eq!(split_authority(authority).0, parsed.host(), "{authority}");
        }
        assert!(Target::of(&"/relative".parse::<Uri>().unwrap()).is_none());
        assert!(Target::of(&"ftp://www.zohoapis.com/".parse::<Uri>().unwrap()).is_none());
    }

    #[test]
    fn the_exact_spelling_shortcut_agrees_with_the_general_path() {
        let policy = HostPolicy {
            dc: Some(DataCenter::Us),
            allow: [
                "proxy.internal",
                "https://gw.example.com:8443",
                "127.0.0.1:9000",
            ]
            .into_iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect(),
        };
        let api = HostPattern::parse("https://www.zohoapis.com").unwrap();
        for url in [
            "https://www.zohoapis.com/crm",
            "http://www.zohoapis.com/crm",
            "https://www.zohoapis.com:443/crm",
            "https://WWW.zohoapis.com/crm",
            "https://proxy.internal/x",
            "http://proxy.internal/x",
            "https://gw.example.com:8443/x",
            "https://gw.example.com/x",
            "http://127.0.0.1:9000/x",
            "http://127.0.0.1:9001/x",
            "https://cdn.example.com/x",
        ] {
            let uri: Uri = url.parse().unwrap();
            let (verdict, target) = policy.route(&uri, Some(&api), policy.dc);
            let general = Target::of(&uri);
            assert_eq!(
                verdict,
                policy.verdict(general.as_ref(), Some(&api), policy.dc),
                "{url}"
            );
            let parts =
                |t: Option<Target<'_>>| t.map(|t| (t.host().to_owned(), t.port(), t.secure));
            assert_eq!(parts(target), parts(general), "{url}");
        }
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
