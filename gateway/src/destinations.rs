//! Where the gateway sends alerts: a site-configured destination policy.
//!
//! An alert is a signed POST the gateway makes on an admin's say-so; pointed at the wrong
//! place it is a request forgery from inside the site. So, unless a host is allowed by name
//! in `ALERT_DESTINATIONS_ALLOWED`, an alert endpoint may not be:
//! - a loopback, unspecified, link-local (which holds the clouds' metadata services at
//!   169.254.169.254 and fd00:ec2::254), multicast or broadcast address, in any spelling the
//!   URL parser accepts (`0`, `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]` are all parsed to
//!   the address they mean before the check);
//! - `localhost`, a name under `.localhost`, or a metadata service name;
//! - a name that resolves only to such addresses (checked when the alert is sent, on the
//!   addresses the connection will use, so a name that changes its answer is caught too);
//! - the gateway's own listening address and port.
//!
//! No outbound client of the gateway follows redirects (`tls::client_builder`), so a receiver
//! cannot bounce a signed alert elsewhere either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Host names that are never an alert receiver unless allowed by name.
const FORBIDDEN_NAMES: &[&str] = &["localhost", "metadata.google.internal", "metadata"];

/// The destination policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Destinations {
    /// Hosts (names or addresses, lowercase) allowed whatever they are.
    allowed: Vec<String>,
    /// The gateway's own listening address, never a destination unless allowed.
    own: Option<SocketAddr>,
}

/// Why `ip` may not receive alerts, if it may not.
fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None if v6.is_loopback() => Some("a loopback address"),
            None if v6.is_unspecified() => Some("the unspecified address"),
            None if v6.is_multicast() => Some("a multicast address"),
            None if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
            None if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
                Some("a cloud metadata service")
            }
            None => None,
        },
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> Option<&'static str> {
    if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_unspecified() || v4.octets()[0] == 0 {
        Some("the unspecified address")
    } else if v4.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if v4.is_multicast() || v4.is_broadcast() {
        Some("a multicast or broadcast address")
    } else {
        None
    }
}

impl Destinations {
    /// `allowed`: `ALERT_DESTINATIONS_ALLOWED`, comma-separated hosts.
    pub(crate) fn new(allowed: &str, own: Option<SocketAddr>) -> Self {
        Self {
            allowed: allowed
                .split(',')
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            own,
        }
    }

    fn is_allowed(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.allowed.iter().any(|a| *a == host)
    }

    /// Checks an endpoint URL as the HTTP client will read it; says why it is refused.
    pub(crate) fn check_url(&self, endpoint: &str) -> Result<(), String> {
        let url =
            reqwest::Url::parse(endpoint).map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
        let refuse = |what: &str, host: &str| {
            Err(format!(
                "the endpoint's host {host} is {what}, where alerts are not sent; if this receiver is meant, allow it by name in ALERT_DESTINATIONS_ALLOWED"
            ))
        };
        let port = url.port_or_known_default().unwrap_or(0);
        let (shown, ip) = match url.host() {
            None => return Err(format!("{endpoint:?} has no host")),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if self.is_allowed(&name) {
                    return Ok(());
                }
                if FORBIDDEN_NAMES.contains(&name.as_str()) || name.ends_with(".localhost") {
                    return refuse("a local or metadata service name", &name);
                }
                return Ok(());
            }
            Some(url::Host::Ipv4(v4)) => (v4.to_string(), IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => (v6.to_string(), IpAddr::V6(v6)),
        };
        if self.is_allowed(&shown) {
            return Ok(());
        }
        if let Some(what) = forbidden_ip(ip) {
            return refuse(what, &shown);
        }
        if self
            .own
            .is_some_and(|own| own.ip() == ip && own.port() == port)
        {
            return refuse("this gateway's own address", &shown);
        }
        Ok(())
    }
}

/// A DNS resolver for the alert client that drops the addresses alerts may not go to, unless
/// the name is allowed; a name left with none is an error naming why.
#[derive(Debug)]
pub(crate) struct Resolver(pub(crate) Arc<Destinations>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.is_allowed(&host) {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| forbidden_ip(a.ip()).is_none())
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses alerts are not sent to ({}); allow it by name in ALERT_DESTINATIONS_ALLOWED if it is meant",
                    found
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_local_or_metadata_address_is_refused() {
        let own: SocketAddr = "10.0.0.5:3000".parse().unwrap();
        let d = Destinations::new("", Some(own));
        for bad in [
            "http://127.0.0.1:9000/x",
            "http://localhost/x",
            "http://LOCALHOST./x",
            "http://app.localhost/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://0/x",
            "http://0.0.0.0/x",
            "http://2130706433/x",
            "http://0x7f000001/x",
            "http://0177.0.0.1/x",
            "http://127.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/x",
            "http://224.0.0.1/x",
            "http://10.0.0.5:3000/admin/agents",
        ] {
            assert!(d.check_url(bad).is_err(), "{bad} must be refused");
        }
        for good in [
            "https://hooks.slack.com/services/x",
            "https://10.0.0.7/siem",
            "http://10.0.0.5:8080/other-service",
            "https://[2001:db8::1]/x",
        ] {
            assert!(d.check_url(good).is_ok(), "{good} must be allowed");
        }
        let allowing = Destinations::new("127.0.0.1, localhost", None);
        assert!(allowing.check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(allowing.check_url("http://localhost:9000/x").is_ok());
        assert!(allowing.check_url("http://169.254.169.254/x").is_err());
    }
}
