//! The controller's ConfigMap, `kube-system/ingress-nginx-controller` (the name ingress-nginx's
//! chart gives it), read as ingress-nginx reads its own: cluster-wide defaults for the
//! annotations, and whom to believe about the client's address when the ingress sits behind
//! another proxy (`use-forwarded-headers`, `enable-real-ip`, `compute-full-forwarded-for`).
//! Keys we do not implement are reported, never ignored silently.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use http::header::HeaderName;

use super::annotations::{self, Options};
use crate::cluster::cidr::Ipv4Cidr;

pub const NAMESPACE: &str = super::SERVICE_NAMESPACE;
pub const NAME: &str = super::SERVICE_NAME;

/// Keys whose value is what kcluster always does: accepted in that value, reported otherwise.
const FIXED: &[(&str, &str, &str)] = &[
    (
        "allow-snippet-annotations",
        "false",
        "snippet annotations are never run by kcluster's ingress",
    ),
    (
        "hsts",
        "false",
        "HSTS is not sent: browsers would pin local development hosts to HTTPS",
    ),
];

/// What the ConfigMap asks for.
#[derive(Debug, Clone)]
pub struct Global {
    /// The options an Ingress without annotations gets.
    pub defaults: Options,
    /// Believe X-Forwarded-Proto/Host/Port from the client, and take its address from the
    /// forwarded-for header (ingress-nginx's `use-forwarded-headers`).
    pub use_forwarded_headers: bool,
    /// Take the client's address from the forwarded-for header, nothing else
    /// (`enable-real-ip`; implied by `use-forwarded-headers`).
    pub real_ip: bool,
    /// Send the client's X-Forwarded-For with the peer appended rather than replaced.
    pub compute_full_forwarded_for: bool,
    pub forwarded_for_header: HeaderName,
    /// Peers whose forwarded-for header is believed (`proxy-real-ip-cidr`).
    pub trusted: Vec<Ipv4Cidr>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            defaults: Options::default(),
            use_forwarded_headers: false,
            real_ip: false,
            compute_full_forwarded_for: false,
            forwarded_for_header: HeaderName::from_static("x-forwarded-for"),
            // ingress-nginx's default: every peer.
            trusted: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0)
                .into_iter()
                .collect(),
        }
    }
}

/// Keys of the ConfigMap that were not understood (`unsupported`) or whose value could not be
/// read (`invalid`: the setting keeps its default).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    pub unsupported: Vec<String>,
    pub invalid: Vec<String>,
}

/// Reads the ConfigMap's data.
pub fn parse(data: &BTreeMap<String, String>) -> (Global, Findings) {
    let mut g = Global::default();
    let mut f = Findings::default();
    // The per-Ingress annotations of the same names read the values the same way.
    let mut as_annotations = BTreeMap::new();
    for (key, value) in data {
        let k = key.as_str();
        let mut flag = |out: &mut bool| match annotations::boolean(value) {
            Some(b) => *out = b,
            None => f.invalid.push(format!(
                "{k}: {value:?} is not a boolean (\"true\" or \"false\")"
            )),
        };
        match k {
            "use-forwarded-headers" => flag(&mut g.use_forwarded_headers),
            "enable-real-ip" => flag(&mut g.real_ip),
            "compute-full-forwarded-for" => flag(&mut g.compute_full_forwarded_for),
            "forwarded-for-header" => match HeaderName::try_from(value.trim()) {
                Ok(h) => g.forwarded_for_header = h,
                Err(_) => f
                    .invalid
                    .push(format!("{k}: {value:?} is not an HTTP header name")),
            },
            "proxy-real-ip-cidr" => match annotations::cidrs(value) {
                Ok(c) if !c.is_empty() => g.trusted = c,
                Ok(_) => f.invalid.push(format!("{k}: empty")),
                Err(e) => f.invalid.push(format!("{k}: {e}")),
            },
            "proxy-body-size"
            | "proxy-connect-timeout"
            | "proxy-read-timeout"
            | "proxy-send-timeout"
            | "ssl-redirect"
            | "force-ssl-redirect"
            | "whitelist-source-range"
            | "denylist-source-range" => {
                as_annotations.insert(format!("{}{k}", annotations::PREFIX), value.clone());
            }
            _ => match FIXED.iter().find(|(key, _, _)| *key == k) {
                Some((_, fine, why)) => {
                    if annotations::boolean(value) != annotations::boolean(fine) {
                        f.unsupported.push(format!("{k}: {value:?} ({why})"));
                    }
                }
                None => f.unsupported.push(k.to_string()),
            },
        }
    }
    g.real_ip |= g.use_forwarded_headers;
    let (defaults, found) = annotations::parse(&as_annotations, &Options::default());
    g.defaults = defaults;
    f.invalid.extend(
        found
            .invalid
            .into_iter()
            .map(|i| i.trim_start_matches(annotations::PREFIX).to_string()),
    );
    (g, f)
}

/// Who asked, as the backend is told (ingress-nginx's `$remote_addr`, `$pass_access_scheme`,
/// `$best_http_host` and `$pass_server_port` after its realip module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address: X-Real-IP, and what source ranges judge.
    pub ip: IpAddr,
    pub forwarded_for: String,
    pub proto: String,
    pub host: String,
    pub port: String,
    /// The X-Forwarded-For the client sent, passed on as X-Original-Forwarded-For.
    pub original_forwarded_for: Option<String>,
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The IPv4 address of a client, IPv4-mapped IPv6 included (source ranges are IPv4).
pub(super) fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(v) => v.to_ipv4_mapped(),
    }
}

impl Global {
    fn trusts(&self, ip: IpAddr) -> bool {
        v4(ip).is_some_and(|v| self.trusted.iter().any(|c| c.contains(v)))
    }

    /// nginx's realip module with `real_ip_recursive on`: from a trusted peer, the header's
    /// addresses are read right to left and the first untrusted one is the client (the
    /// leftmost when all are trusted); an unreadable entry ends the walk.
    fn real_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.real_ip || !self.trusts(peer) {
            return peer;
        }
        let Some(list) = joined(headers, &self.forwarded_for_header) else {
            return peer;
        };
        let mut found = peer;
        for entry in list.rsplit(',').map(str::trim) {
            let Ok(ip) = entry.parse::<IpAddr>() else {
                break;
            };
            found = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        found
    }

    /// The origin of a request from `peer` (the TCP peer, or the address a PROXY header gave)
    /// that arrived over `scheme` for `host` (as sent, port kept) on host port `port`.
    pub fn origin(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        scheme: &str,
        host: &str,
        port: u16,
    ) -> Origin {
        let ip = self.real_ip(peer, headers);
        let forwarded_for = if self.use_forwarded_headers && self.compute_full_forwarded_for {
            match joined(headers, &HeaderName::from_static("x-forwarded-for")) {
                Some(x) => format!("{x}, {peer}"),
                None => peer.to_string(),
            }
        } else {
            ip.to_string()
        };
        let believed = |name: &'static str| {
            self.use_forwarded_headers
                .then(|| joined(headers, &HeaderName::from_static(name)))
                .flatten()
        };
        Origin {
            ip,
            forwarded_for,
            proto: believed("x-forwarded-proto").unwrap_or_else(|| scheme.to_string()),
            host: believed("x-forwarded-host").unwrap_or_else(|| host.to_string()),
            port: believed("x-forwarded-port").unwrap_or_else(|| port.to_string()),
            original_forwarded_for: joined(headers, &self.forwarded_for_header),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("a header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn by_default_the_peer_is_the_client_and_forwarded_headers_are_replaced() {
        let (g, f) = parse(&BTreeMap::new());
        assert_eq!(f, Findings::default());
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let c = g.origin(ip("127.0.0.1"), &h, "http", "app.test:8080", 8080);
        assert_eq!(c.ip, ip("127.0.0.1"));
        assert_eq!(c.forwarded_for, "127.0.0.1");
        assert_eq!(c.proto, "http");
        assert_eq!(c.host, "app.test:8080");
        assert_eq!(c.port, "8080");
        assert_eq!(c.original_forwarded_for.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn forwarded_headers_are_believed_when_asked() {
        let (g, _) = parse(&data(&[
            ("use-forwarded-headers", "true"),
            ("compute-full-forwarded-for", "true"),
        ]));
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ]);
        let c = g.origin(ip("127.0.0.1"), &h, "http", "app.test", 80);
        // Every address is trusted by default: the leftmost is the client.
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert_eq!(c.forwarded_for, "203.0.113.9, 10.0.0.1, 127.0.0.1");
        assert_eq!(c.proto, "https");
        assert_eq!(c.port, "443");
        assert_eq!(c.host, "app.test");
    }

    #[test]
    fn real_ip_walks_right_to_left_over_trusted_proxies() {
        let (g, f) = parse(&data(&[
            ("enable-real-ip", "true"),
            ("proxy-real-ip-cidr", "10.0.0.0/8, 127.0.0.1"),
        ]));
        assert_eq!(f, Findings::default());
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.2.3")]);
        let c = g.origin(ip("127.0.0.1"), &h, "http", "a", 80);
        assert_eq!(c.ip, ip("203.0.113.9"));
        // Without use-forwarded-headers the header is replaced by the real address.
        assert_eq!(c.forwarded_for, "203.0.113.9");
        assert_eq!(c.proto, "http");
        // An untrusted peer's header is not believed.
        assert_eq!(
            g.origin(ip("192.0.2.7"), &h, "http", "a", 80).ip,
            ip("192.0.2.7")
        );
        // An unreadable entry ends the walk at the last good one.
        let h = headers(&[("x-forwarded-for", "junk, 10.9.9.9")]);
        assert_eq!(
            g.origin(ip("127.0.0.1"), &h, "http", "a", 80).ip,
            ip("10.9.9.9")
        );
    }

    #[test]
    fn another_forwarded_for_header_can_be_named() {
        let (g, _) = parse(&data(&[
            ("enable-real-ip", "true"),
            ("forwarded-for-header", "CF-Connecting-IP"),
        ]));
        let h = headers(&[("cf-connecting-ip", "198.51.100.4")]);
        let c = g.origin(ip("127.0.0.1"), &h, "http", "a", 80);
        assert_eq!(c.ip, ip("198.51.100.4"));
        assert_eq!(c.original_forwarded_for.as_deref(), Some("198.51.100.4"));
    }

    #[test]
    fn annotation_defaults_come_from_the_configmap() {
        let (g, f) = parse(&data(&[
            ("proxy-body-size", "8m"),
            ("proxy-read-timeout", "120"),
            ("whitelist-source-range", "10.0.0.0/8"),
            ("ssl-redirect", "false"),
        ]));
        assert_eq!(f, Findings::default());
        assert_eq!(g.defaults.body_limit, Some(8 << 20));
        assert_eq!(g.defaults.read_timeout.as_secs(), 120);
        assert_eq!(g.defaults.allow.len(), 1);
        assert_eq!(g.defaults.ssl_redirect, Some(false));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let (g, f) = parse(&data(&[
            ("worker-processes", "4"),
            ("use-forwarded-headers", "maybe"),
            ("proxy-body-size", "lots"),
            ("allow-snippet-annotations", "false"),
            ("hsts", "true"),
        ]));
        assert_eq!(
            f.unsupported,
            vec![
                "hsts: \"true\" (HSTS is not sent: browsers would pin local development hosts to HTTPS)".to_string(),
                "worker-processes".to_string()
            ]
        );
        assert_eq!(f.invalid.len(), 2, "{:?}", f.invalid);
        assert!(f.invalid.iter().any(|i| i.starts_with("proxy-body-size:")));
        assert!(!g.use_forwarded_headers);
        assert_eq!(g.defaults.body_limit, Some(1 << 20));
    }
}
