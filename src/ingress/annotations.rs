//! ingress-nginx's annotations (`nginx.ingress.kubernetes.io/…`) read into per-Ingress options.
//! Every key under the prefix is either understood here or reported back as unsupported, so
//! the controller can name it in a Warning event: nothing is ignored silently.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cluster::cidr::Ipv4Cidr;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Keys understood (without the prefix).
const SUPPORTED: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "app-root",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "backend-protocol",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "x-forwarded-prefix",
    "upstream-vhost",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-allow-credentials",
    "cors-expose-headers",
    "cors-max-age",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "service-upstream",
    "from-to-www-redirect",
    "server-alias",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    Http,
    /// HTTP/2 without TLS to the pod (gRPC's usual plain form).
    Grpc,
    /// HTTP/1.1 over TLS to the pod; its certificate is not verified, as ingress-nginx does
    /// unless `proxy-ssl-verify` is on.
    Https,
    /// HTTP/2 over TLS (ALPN h2), unverified likewise.
    Grpcs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origin: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub allow_credentials: bool,
    pub expose_headers: Option<String>,
    pub max_age: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canary {
    pub weight: u32,
    pub weight_total: u32,
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub header_pattern: Option<String>,
    pub cookie: Option<String>,
}

/// `auth-type: basic`: the users come from a secret, resolved by `translate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// `namespace/name` or just `name` (the Ingress's namespace).
    pub secret: String,
    /// `auth-file` (key `auth` holds an htpasswd file) or `auth-map` (user → hash keys).
    pub map: bool,
    pub realm: String,
    /// user → htpasswd hash, filled in from the secret.
    pub users: std::collections::HashMap<String, String>,
}

/// `affinity: cookie`: the same client goes to the same endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    pub path: Option<String>,
    pub max_age: Option<u64>,
    pub expires: Option<u64>,
    pub samesite: Option<String>,
}

/// Everything the annotations of one Ingress ask for.
#[derive(Debug, Clone)]
pub struct Options {
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    /// None: the default (redirect when the host has TLS).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    /// None: unlimited.
    pub body_limit: Option<u64>,
    pub app_root: Option<String>,
    pub permanent_redirect: Option<(String, u16)>,
    pub temporal_redirect: Option<(String, u16)>,
    pub backend_protocol: BackendProtocol,
    pub allow: Vec<Ipv4Cidr>,
    pub deny: Vec<Ipv4Cidr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub x_forwarded_prefix: Option<String>,
    pub upstream_vhost: Option<String>,
    pub cors: Option<Cors>,
    pub canary: Option<Canary>,
    pub service_upstream: bool,
    pub from_to_www: bool,
    pub server_alias: Vec<String>,
    pub auth: Option<BasicAuth>,
    pub affinity: Option<Affinity>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rewrite_target: None,
            use_regex: false,
            ssl_redirect: None,
            force_ssl_redirect: false,
            // ingress-nginx's client_max_body_size default.
            body_limit: Some(1024 * 1024),
            app_root: None,
            permanent_redirect: None,
            temporal_redirect: None,
            backend_protocol: BackendProtocol::Http,
            allow: Vec::new(),
            deny: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            x_forwarded_prefix: None,
            upstream_vhost: None,
            cors: None,
            canary: None,
            service_upstream: false,
            from_to_www: false,
            server_alias: Vec::new(),
            auth: None,
            affinity: None,
        }
    }
}

/// What reading the annotations found wrong: keys we do not implement, and values we could
/// not read (the option then keeps its default).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    pub unsupported: Vec<String>,
    pub invalid: Vec<String>,
}

pub(super) fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// nginx sizes: a number with an optional k/m/g suffix (either case); 0 = unlimited.
pub fn size(v: &str) -> Option<Option<u64>> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()?.to_ascii_lowercase() {
        'k' => (&v[..v.len() - 1], 1024u64),
        'm' => (&v[..v.len() - 1], 1024 * 1024),
        'g' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(if n == 0 {
        None
    } else {
        Some(n.checked_mul(mult)?)
    })
}

/// nginx time values in the annotations are seconds (a bare number; `s` accepted).
fn seconds(v: &str) -> Option<Duration> {
    let v = v.trim().trim_end_matches('s');
    let n: u64 = v.parse().ok()?;
    Some(Duration::from_secs(n))
}

pub(super) fn cidrs(v: &str) -> Result<Vec<Ipv4Cidr>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = if part.contains('/') {
            part.parse::<Ipv4Cidr>().ok().or_else(|| {
                // As nginx, a host address with a prefix names its network.
                let (ip, len) = part.split_once('/')?;
                let ip: Ipv4Addr = ip.parse().ok()?;
                let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Ipv4Cidr::new(Ipv4Addr::from(u32::from(ip) & mask), len).ok()
            })
        } else {
            part.parse::<Ipv4Addr>()
                .ok()
                .and_then(|ip| Ipv4Cidr::new(ip, 32).ok())
        };
        out.push(parsed.ok_or_else(|| format!("{part:?} is not an IPv4 address or CIDR"))?);
    }
    Ok(out)
}

fn code(v: Option<&String>, allowed: std::ops::RangeInclusive<u16>, default: u16) -> u16 {
    v.and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|c| allowed.contains(c))
        .unwrap_or(default)
}

/// Reads one Ingress's annotations over `base`, the controller ConfigMap's defaults.
pub fn parse(annotations: &BTreeMap<String, String>, base: &Options) -> (Options, Findings) {
    let mut o = base.clone();
    let mut f = Findings::default();
    let ours: BTreeMap<&str, &String> = annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v)))
        .collect();
    for k in ours.keys() {
        if !SUPPORTED.contains(k) {
            f.unsupported.push(format!("{PREFIX}{k}"));
        }
    }
    let get = |k: &str| ours.get(k).copied();
    let mut bad = |k: &str, why: &str| f.invalid.push(format!("{PREFIX}{k}: {why}"));
    let flag = |k: &str, bad: &mut dyn FnMut(&str, &str)| -> Option<bool> {
        let v = get(k)?;
        let b = boolean(v);
        if b.is_none() {
            bad(k, "not a boolean (\"true\" or \"false\")");
        }
        b
    };
    o.rewrite_target = get("rewrite-target").cloned();
    o.use_regex = flag("use-regex", &mut bad).unwrap_or(false);
    o.ssl_redirect = flag("ssl-redirect", &mut bad);
    o.force_ssl_redirect = flag("force-ssl-redirect", &mut bad).unwrap_or(false);
    if let Some(v) = get("proxy-body-size") {
        match size(v) {
            Some(limit) => o.body_limit = limit,
            None => bad("proxy-body-size", "not a size such as 8m, 512k or 0"),
        }
    }
    o.app_root = get("app-root").cloned();
    if let Some(url) = get("permanent-redirect") {
        o.permanent_redirect = Some((
            url.clone(),
            code(get("permanent-redirect-code"), 300..=308, 301),
        ));
    }
    if let Some(url) = get("temporal-redirect") {
        o.temporal_redirect = Some((
            url.clone(),
            code(get("temporal-redirect-code"), 300..=308, 302),
        ));
    }
    if let Some(v) = get("backend-protocol") {
        match v.trim().to_ascii_uppercase().as_str() {
            "HTTP" | "AUTO_HTTP" => {}
            "GRPC" => o.backend_protocol = BackendProtocol::Grpc,
            "HTTPS" => o.backend_protocol = BackendProtocol::Https,
            "GRPCS" => o.backend_protocol = BackendProtocol::Grpcs,
            other => f.unsupported.push(format!(
                "{PREFIX}backend-protocol: {other} (HTTP, HTTPS, GRPC and GRPCS are implemented; HTTP is used)"
            )),
        }
    }
    for k in ["whitelist-source-range", "allowlist-source-range"] {
        if let Some(v) = get(k) {
            match cidrs(v) {
                Ok(c) => o.allow.extend(c),
                Err(e) => {
                    bad(k, &e);
                    // Unreadable: let nobody through rather than everybody.
                    o.allow
                        .push(Ipv4Cidr::new(Ipv4Addr::BROADCAST, 32).expect("a /32"));
                }
            }
        }
    }
    if let Some(v) = get("denylist-source-range") {
        match cidrs(v) {
            Ok(c) => o.deny = c,
            Err(e) => bad("denylist-source-range", &e),
        }
    }
    for (k, slot) in [
        ("proxy-connect-timeout", &mut o.connect_timeout),
        ("proxy-read-timeout", &mut o.read_timeout),
        ("proxy-send-timeout", &mut o.send_timeout),
    ] {
        if let Some(v) = get(k) {
            match seconds(v) {
                Some(d) => *slot = d,
                None => bad(k, "not a number of seconds"),
            }
        }
    }
    o.x_forwarded_prefix = get("x-forwarded-prefix").cloned();
    o.upstream_vhost = get("upstream-vhost").cloned();
    if flag("enable-cors", &mut bad).unwrap_or(false) {
        o.cors = Some(Cors {
            allow_origin: get("cors-allow-origin")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| vec!["*".to_string()]),
            allow_methods: get("cors-allow-methods")
                .cloned()
                .unwrap_or_else(|| "GET, PUT, POST, DELETE, PATCH, OPTIONS".into()),
            allow_headers: get("cors-allow-headers").cloned().unwrap_or_else(|| {
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,\
                 Content-Type,Range,Authorization"
                    .into()
            }),
            allow_credentials: get("cors-allow-credentials")
                .and_then(|v| boolean(v))
                .unwrap_or(true),
            expose_headers: get("cors-expose-headers").cloned(),
            max_age: get("cors-max-age")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(1_728_000),
        });
    }
    if flag("canary", &mut bad).unwrap_or(false) {
        let num = |k: &str, default: u32| {
            get(k)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(default)
        };
        o.canary = Some(Canary {
            weight: num("canary-weight", 0),
            weight_total: num("canary-weight-total", 100).max(1),
            header: get("canary-by-header").cloned(),
            header_value: get("canary-by-header-value").cloned(),
            header_pattern: get("canary-by-header-pattern").cloned(),
            cookie: get("canary-by-cookie").cloned(),
        });
    }
    o.service_upstream = flag("service-upstream", &mut bad).unwrap_or(false);
    o.from_to_www = flag("from-to-www-redirect", &mut bad).unwrap_or(false);
    if let Some(v) = get("server-alias") {
        o.server_alias = v
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
    }
    match get("auth-type").map(|v| v.trim().to_ascii_lowercase()) {
        None => {}
        Some(t) if t == "basic" => match get("auth-secret") {
            Some(secret) => {
                o.auth = Some(BasicAuth {
                    secret: secret.trim().to_string(),
                    map: get("auth-secret-type").is_some_and(|t| t.trim() == "auth-map"),
                    realm: get("auth-realm")
                        .cloned()
                        .unwrap_or_else(|| "Authentication Required".into()),
                    users: Default::default(),
                })
            }
            None => {
                bad(
                    "auth-secret",
                    "required with auth-type basic; every request is refused",
                );
                o.auth = Some(BasicAuth {
                    secret: String::new(),
                    map: false,
                    realm: "Authentication Required".into(),
                    users: Default::default(),
                });
            }
        },
        Some(other) => f.unsupported.push(format!(
            "{PREFIX}auth-type: {other} (only basic is implemented; requests are not authenticated)"
        )),
    }
    match get("affinity").map(|v| v.trim().to_ascii_lowercase()) {
        None => {}
        Some(t) if t == "cookie" => {
            let num = |k: &str| get(k).and_then(|v| v.trim().parse::<u64>().ok());
            o.affinity = Some(Affinity {
                cookie: get("session-cookie-name")
                    .cloned()
                    .unwrap_or_else(|| "INGRESSCOOKIE".into()),
                path: get("session-cookie-path").cloned(),
                max_age: num("session-cookie-max-age"),
                expires: num("session-cookie-expires"),
                samesite: get("session-cookie-samesite").cloned(),
            });
        }
        Some(other) => f.unsupported.push(format!(
            "{PREFIX}affinity: {other} (only cookie is implemented)"
        )),
    }
    (o, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(a: &BTreeMap<String, String>) -> (Options, Findings) {
        parse(a, &Options::default())
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seeds_annotations() {
        let (o, f) = parse_default(&ann(&[
            ("force-ssl-redirect", "false"),
            ("proxy-body-size", "1000m"),
            ("ssl-redirect", "false"),
        ]));
        assert_eq!(f, Findings::default());
        assert_eq!(o.body_limit, Some(1000 * 1024 * 1024));
        assert_eq!(o.ssl_redirect, Some(false));
        assert!(!o.force_ssl_redirect);
        assert_eq!(Options::default().body_limit, Some(1 << 20));
    }

    #[test]
    fn unknown_keys_are_named() {
        let mut a = ann(&[("configuration-snippet", "x"), ("rewrite-target", "/$1")]);
        a.insert("nginx.org/client-max-body-size".into(), "1000m".into());
        let (o, f) = parse_default(&a);
        assert_eq!(
            f.unsupported,
            ["nginx.ingress.kubernetes.io/configuration-snippet"]
        );
        assert_eq!(o.rewrite_target.as_deref(), Some("/$1"));
    }

    #[test]
    fn sizes_ranges_and_codes() {
        assert_eq!(size("0"), Some(None));
        assert_eq!(size("8k"), Some(Some(8192)));
        assert_eq!(size("12"), Some(Some(12)));
        assert_eq!(size("x"), None);
        let (o, f) = parse_default(&ann(&[
            ("whitelist-source-range", "10.0.0.0/8, 192.168.1.7"),
            ("permanent-redirect", "https://e.example/"),
            ("permanent-redirect-code", "308"),
            ("proxy-read-timeout", "nope"),
        ]));
        assert_eq!(o.allow.len(), 2);
        assert_eq!(
            o.permanent_redirect,
            Some(("https://e.example/".into(), 308))
        );
        assert_eq!(f.invalid.len(), 1);
    }
}
