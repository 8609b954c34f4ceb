//! The proxy's route table, shaped like Gateway API's HTTPRoute (hostnames → ordered path
//! matches → weighted backends with filters), so a Gateway/HTTPRoute front end can fill the
//! same table later. `translate` builds it from Ingresses; the proxy only reads it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use regex::Regex;

use super::annotations::{Canary, Options};
use super::config::Global;

#[derive(Debug, Clone)]
pub enum PathMatch {
    /// `Exact`: the whole path, case-sensitive.
    Exact(String),
    /// `Prefix`: whole `/`-separated elements (`/foo` matches `/foo`, `/foo/`, `/foo/bar`).
    Prefix(String),
    /// `ImplementationSpecific` as nginx's plain prefix location (`/foo` matches `/foobar`).
    Plain(String),
    /// A host in regex mode: `(?i)^<path>`, every path type alike.
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || path == p
                    || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathMatch::Plain(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// Where a route sends requests.
#[derive(Debug)]
pub enum Upstream {
    /// Ready endpoints (or the cluster IP with `service-upstream`), taken in turn.
    Addrs {
        service: String,
        addrs: Vec<SocketAddr>,
        next: AtomicUsize,
    },
    /// Answered by the proxy with this status and reason (503: no such Service, port or
    /// endpoints; 404: the default backend).
    Fixed { status: u16, reason: String },
}

impl Upstream {
    pub fn addrs(service: String, addrs: Vec<SocketAddr>) -> Upstream {
        if addrs.is_empty() {
            return Upstream::Fixed {
                status: 503,
                reason: format!("service {service} has no ready endpoints"),
            };
        }
        Upstream::Addrs {
            service,
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    pub fn not_found() -> Upstream {
        Upstream::Fixed {
            status: 404,
            reason: "default backend".into(),
        }
    }

    /// Round robin over the addresses.
    pub fn pick(&self) -> Option<SocketAddr> {
        match self {
            Upstream::Addrs { addrs, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                addrs.get(i % addrs.len()).copied()
            }
            Upstream::Fixed { .. } => None,
        }
    }
}

/// A canary's alternative backend for the same host and path.
#[derive(Debug)]
pub struct CanaryBackend {
    pub rule: Canary,
    pub header_pattern: Option<Regex>,
    pub upstream: Arc<Upstream>,
}

#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the Ingress that wrote it.
    pub ingress: String,
    pub path: String,
    pub matcher: PathMatch,
    /// Exact paths win ties against prefixes of the same length.
    pub exact: bool,
    pub upstream: Arc<Upstream>,
    pub options: Arc<Options>,
    /// The compiled `rewrite-target` pattern (the path, case-insensitive).
    pub rewrite: Option<Regex>,
    pub canary: Option<CanaryBackend>,
}

/// One server (virtual host) as nginx would have it.
#[derive(Debug)]
pub struct Server {
    pub host: String,
    pub routes: Vec<Route>,
    /// A TLS section of some Ingress names this host: plain HTTP is redirected (unless
    /// `ssl-redirect: "false"`).
    pub tls: bool,
    /// What unmatched paths of this host get: an Ingress's `spec.defaultBackend`, else 404.
    pub fallback: Arc<Upstream>,
    pub fallback_options: Arc<Options>,
}

impl Server {
    /// A server whose unmatched paths get `options` (the controller ConfigMap's defaults).
    pub fn new(host: &str, options: Arc<Options>) -> Server {
        Server {
            host: host.to_string(),
            routes: Vec::new(),
            tls: false,
            fallback: Arc::new(Upstream::not_found()),
            fallback_options: options,
        }
    }

    /// Longest path first, Exact before others on a tie (nginx's order for both plain and
    /// regex locations); then the first that matches.
    pub fn sort(&mut self) {
        self.routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| b.exact.cmp(&a.exact))
        });
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(path))
    }
}

/// The whole table, swapped as one value on every change.
#[derive(Debug)]
pub struct Table {
    pub exact: HashMap<String, Arc<Server>>,
    /// `*.example.com` servers keyed by `example.com`: one label only, as nginx.
    pub wildcard: HashMap<String, Arc<Server>>,
    /// Host-less rules and the catch-all default backend (nginx's `_` server).
    pub default: Arc<Server>,
    /// Hosts answered with a redirect to or from their `www.` form.
    pub www_redirects: HashMap<String, String>,
    /// The controller ConfigMap's settings the proxy reads per request.
    pub global: Arc<Global>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Arc::new(Server::new("_", Arc::new(Options::default()))),
            www_redirects: HashMap::new(),
            global: Arc::new(Global::default()),
        }
    }
}

impl Table {
    /// The server for a request's host (lower case, no port).
    pub fn server(&self, host: &str) -> &Arc<Server> {
        if let Some(s) = self.exact.get(host) {
            return s;
        }
        if let Some((_, parent)) = host.split_once('.')
            && let Some(s) = self.wildcard.get(parent)
        {
            return s;
        }
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise_and_plain_is_not() {
        let p = PathMatch::Prefix("/foo".into());
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        let p = PathMatch::Prefix("/foo/".into());
        assert!(p.matches("/foo"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        assert!(PathMatch::Plain("/foo".into()).matches("/foobar"));
        assert!(!PathMatch::Exact("/foo".into()).matches("/foo/"));
    }

    #[test]
    fn wildcard_hosts_cover_one_label() {
        let mut t = Table::default();
        t.wildcard.insert(
            "bar.com".into(),
            Arc::new(Server::new("*.bar.com", Arc::default())),
        );
        assert_eq!(t.server("foo.bar.com").host, "*.bar.com");
        assert_eq!(t.server("a.foo.bar.com").host, "_");
        assert_eq!(t.server("bar.com").host, "_");
    }
}
