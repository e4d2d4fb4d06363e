//! Zoho's data centres: where a user's accounts server and data live.
//!
//! A Zoho account lives in exactly one data centre. Tokens must be minted by that DC's accounts
//! server and used against that DC's API hosts; a token sent to another DC is answered with
//! `INVALID_TOKEN`, and a client registered elsewhere gets `invalid_client`
//! (`zoho-wire.md` §2, §6). The table follows Zoho's official SDKs (`dc/*`) and, for UK, Zoho's
//! multi-DC page.
//!
//! ```
//! use zoho_auth::{DataCenter, Environment};
//!
//! let dc: DataCenter = "ca".parse().unwrap();
//! assert_eq!(dc.accounts_url(), "https://accounts.zohocloud.ca");
//! assert_eq!(dc.api_domain(Environment::Sandbox), "https://sandbox.zohoapis.ca");
//! assert_eq!(DataCenter::from_accounts_url("https://accounts.zoho.eu/"), Some(DataCenter::Eu));
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// One of Zoho's data centres.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataCenter {
    /// United States (`zoho.com`).
    Us,
    /// Europe (`zoho.eu`).
    Eu,
    /// India (`zoho.in`).
    In,
    /// Australia (`zoho.com.au`).
    Au,
    /// China (`zoho.com.cn`).
    Cn,
    /// Japan (`zoho.jp`).
    Jp,
    /// Canada (`zohocloud.ca`; `zoho.ca` does not resolve).
    Ca,
    /// Saudi Arabia (`zoho.sa`).
    Sa,
    /// United Kingdom (`zoho.uk`).
    Uk,
}

/// Which of a data centre's API environments a token is used against. Zoho may add more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Environment {
    /// Live data: `https://www.zohoapis.<tld>`.
    #[default]
    Production,
    /// Sandbox: `https://sandbox.zohoapis.<tld>`.
    Sandbox,
    /// Developer edition: `https://developer.zohoapis.<tld>`.
    Developer,
}

struct Info {
    location: &'static str,
    accounts: &'static str,
    production: &'static str,
    sandbox: &'static str,
    developer: &'static str,
    /// The registrable domains whose subdomains serve this DC's products
    /// (`www.zohoapis.eu`, `desk.zoho.eu`, `mail.zoho.eu`, ...).
    domains: &'static [&'static str],
}

macro_rules! dc_info {
    ($location:literal, $accounts:literal, $apis:literal, [$($domain:literal),+]) => {
        Info {
            location: $location,
            accounts: $accounts,
            production: concat!("https://www.", $apis),
            sandbox: concat!("https://sandbox.", $apis),
            developer: concat!("https://developer.", $apis),
            domains: &[$apis, $($domain),+],
        }
    };
}

impl DataCenter {
    /// Every data centre, in the order of Zoho's documentation.
    pub const ALL: [DataCenter; 9] = [
        DataCenter::Us,
        DataCenter::Eu,
        DataCenter::In,
        DataCenter::Au,
        DataCenter::Cn,
        DataCenter::Jp,
        DataCenter::Ca,
        DataCenter::Sa,
        DataCenter::Uk,
    ];

    fn info(self) -> Info {
        match self {
            DataCenter::Us => dc_info!(
                "us",
                "https://accounts.zoho.com",
                "zohoapis.com",
                ["zoho.com"]
            ),
            DataCenter::Eu => {
                dc_info!("eu", "https://accounts.zoho.eu", "zohoapis.eu", ["zoho.eu"])
            }
            DataCenter::In => {
                dc_info!("in", "https://accounts.zoho.in", "zohoapis.in", ["zoho.in"])
            }
            DataCenter::Au => {
                dc_info!(
                    "au",
                    "https://accounts.zoho.com.au",
                    "zohoapis.com.au",
                    ["zoho.com.au"]
                )
            }
            DataCenter::Cn => {
                dc_info!(
                    "cn",
                    "https://accounts.zoho.com.cn",
                    "zohoapis.com.cn",
                    ["zoho.com.cn"]
                )
            }
            DataCenter::Jp => {
                dc_info!("jp", "https://accounts.zoho.jp", "zohoapis.jp", ["zoho.jp"])
            }
            DataCenter::Ca => {
                dc_info!(
                    "ca",
                    "https://accounts.zohocloud.ca",
                    "zohoapis.ca",
                    ["zohocloud.ca"]
                )
            }
            DataCenter::Sa => {
                dc_info!("sa", "https://accounts.zoho.sa", "zohoapis.sa", ["zoho.sa"])
            }
            DataCenter::Uk => {
                dc_info!("uk", "https://accounts.zoho.uk", "zohoapis.uk", ["zoho.uk"])
            }
        }
    }

    /// The `location` code Zoho puts in the authorization callback (`us`, `eu`, ...).
    pub fn location(self) -> &'static str {
        self.info().location
    }

    /// The DC's accounts server, which mints and revokes tokens.
    pub fn accounts_url(self) -> &'static str {
        self.info().accounts
    }

    /// The accounts server where a user starts consent. Multi-DC clients start at
    /// `accounts.zoho.com` for every DC except China, which has its own
    /// (`zoho-wire.md` §5).
    pub fn consent_accounts_url(self) -> &'static str {
        match self {
            DataCenter::Cn => DataCenter::Cn.accounts_url(),
            _ => DataCenter::Us.accounts_url(),
        }
    }

    /// The API domain for an environment, e.g. `https://www.zohoapis.eu`.
    pub fn api_domain(self, environment: Environment) -> &'static str {
        let info = self.info();
        match environment {
            Environment::Production => info.production,
            Environment::Sandbox => info.sandbox,
            Environment::Developer => info.developer,
        }
    }

    /// Parses a callback `location` code, case-insensitively.
    pub fn from_location(location: &str) -> Option<Self> {
        let location = location.trim();
        Self::ALL
            .into_iter()
            .find(|dc| dc.location().eq_ignore_ascii_case(location))
    }

    /// Recognises a DC from its accounts server URL (as in the callback's `accounts-server`),
    /// accepting only `https` and exactly that host: a look-alike host yields `None`.
    pub fn from_accounts_url(url: &str) -> Option<Self> {
        let parsed = url::Url::parse(url.trim()).ok()?;
        if parsed.scheme() != "https" || parsed.port().is_some_and(|port| port != 443) {
            return None;
        }
        let host = parsed.host_str()?;
        Self::ALL.into_iter().find(|dc| {
            let accounts = dc.accounts_url().trim_start_matches("https://");
            host.eq_ignore_ascii_case(accounts)
        })
    }

    /// The DC whose products `host` serves (see [`owns_host`](Self::owns_host)), if any.
    pub fn from_host(host: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dc| dc.owns_host(host))
    }

    /// The host of a Zoho product that lives on its own domain rather than the API domain, in
    /// this DC: `DataCenter::Eu.product_host("desk")` is `desk.zoho.eu`, and Canada's is under
    /// `zohocloud.ca`.
    pub fn product_host(self, product: &str) -> String {
        format!("{product}.{}", self.info().domains[1])
    }

    /// Whether `host` serves this DC's products: any subdomain of its `zohoapis` domain or its
    /// Zoho product domain (`desk.zoho.eu`, `mail.zoho.eu`, `www.zohoapis.eu`, ...).
    pub fn owns_host(self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.info()
            .domains
            .iter()
            .any(|domain| is_subdomain_of(host, domain))
    }
}

/// `host` equals `domain` or ends with `.domain`, ignoring ASCII case.
pub(crate) fn is_subdomain_of(host: &str, domain: &str) -> bool {
    if host.len() == domain.len() {
        return host.eq_ignore_ascii_case(domain);
    }
    host.len() > domain.len()
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.location())
    }
}

impl FromStr for DataCenter {
    type Err = Error;

    /// Parses a `location` code (`us`, `eu`, `in`, `au`, `cn`, `jp`, `ca`, `sa`, `uk`) or an
    /// accounts server URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_location(s)
            .or_else(|| Self::from_accounts_url(s))
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown Zoho data centre {s:?}: expected one of us, eu, in, au, cn, jp, ca, sa, uk"
                ))
            })
    }
}

/// Where tokens are minted: a data centre's accounts server, or a custom URL for tests
/// (the simulator) and corporate proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounts {
    base: url::Url,
    dc: Option<DataCenter>,
}

impl Accounts {
    /// The accounts server of a data centre.
    pub fn dc(dc: DataCenter) -> Self {
        Self {
            base: url::Url::parse(dc.accounts_url()).expect("the DC table holds valid URLs"),
            dc: Some(dc),
        }
    }

    /// A custom accounts server, e.g. the simulator's `http://127.0.0.1:PORT` or a proxy. Plain
    /// `http` is accepted only for loopback hosts, since the client secret travels to it.
    pub fn custom(url: &str) -> Result<Self, Error> {
        let base = url::Url::parse(url)
            .map_err(|e| Error::config(format!("invalid accounts URL {url:?}: {e}")))?;
        match base.scheme() {
            "https" => {}
            "http"
                if base
                    .host()
                    .is_some_and(|h| crate::hosts::is_loopback_host(&h.to_string())) => {}
            _ => {
                return Err(Error::config(format!(
                    "accounts URL {url:?} must use https (plain http only on loopback)"
                )))
            }
        }
        if base.host_str().is_none() {
            return Err(Error::config(format!("accounts URL {url:?} has no host")));
        }
        let dc = DataCenter::from_accounts_url(url);
        Ok(Self { base, dc })
    }

    /// The data centre this server belongs to, if it is one of Zoho's own.
    pub fn data_center(&self) -> Option<DataCenter> {
        self.dc
    }

    /// The base URL, e.g. `https://accounts.zoho.eu/`.
    pub fn url(&self) -> &url::Url {
        &self.base
    }

    /// The URL of an endpoint below the base, e.g. `oauth/v2/token`.
    pub(crate) fn endpoint(&self, path: &str) -> url::Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url.set_query(None);
        url
    }
}

impl From<DataCenter> for Accounts {
    fn from(dc: DataCenter) -> Self {
        Self::dc(dc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dc_round_trips_through_location_and_accounts_url() {
        for dc in DataCenter::ALL {
            assert_eq!(DataCenter::from_location(dc.location()), Some(dc));
            assert_eq!(DataCenter::from_accounts_url(dc.accounts_url()), Some(dc));
            assert_eq!(dc.to_string().parse::<DataCenter>().unwrap(), dc);
            let api = dc.api_domain(Environment::Production);
            assert!(dc.owns_host(api.trim_start_matches("https://")), "{dc}");
        }
    }

    #[test]
    fn canada_uses_zohocloud() {
        assert_eq!(
            DataCenter::Ca.accounts_url(),
            "https://accounts.zohocloud.ca"
        );
        assert!(DataCenter::Ca.owns_host("desk.zohocloud.ca"));
        assert!(!DataCenter::Ca.owns_host("desk.zoho.ca"));
    }

    #[test]
    fn look_alike_hosts_are_not_zoho() {
        assert_eq!(
            DataCenter::from_accounts_url("https://accounts.zoho.eu.evil.test"),
            None
        );
        assert_eq!(
            DataCenter::from_accounts_url("http://accounts.zoho.eu"),
            None
        );
        assert_eq!(
            DataCenter::from_accounts_url("https://accounts.zoho.eu:8443"),
            None
        );
        assert!(!DataCenter::Us.owns_host("www.zohoapis.com.evil.test"));
        assert!(!DataCenter::Us.owns_host("evilzohoapis.com"));
        assert!(!DataCenter::Us.owns_host("www.zohoapis.eu"));
        assert!(DataCenter::Us.owns_host("WWW.ZohoApis.Com."));
        assert!(!DataCenter::Au.owns_host("www.zohoapis.com"));
    }

    #[test]
    fn consent_starts_at_the_us_server_except_in_china() {
        assert_eq!(
            DataCenter::Eu.consent_accounts_url(),
            "https://accounts.zoho.com"
        );
        assert_eq!(
            DataCenter::Cn.consent_accounts_url(),
            "https://accounts.zoho.com.cn"
        );
    }

    #[test]
    fn custom_accounts_refuse_plain_http_off_loopback() {
        assert!(Accounts::custom("http://127.0.0.1:8080").is_ok());
        assert!(Accounts::custom("http://localhost:8080").is_ok());
        assert!(Accounts::custom("http://proxy.example.com").is_err());
        assert!(Accounts::custom("https://proxy.example.com/zoho/").is_ok());
        let accounts = Accounts::custom("https://proxy.example.com/zoho/").unwrap();
        assert_eq!(
            accounts.endpoint("oauth/v2/token").as_str(),
            "https://proxy.example.com/zoho/oauth/v2/token"
        );
    }
}
