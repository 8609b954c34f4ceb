//! Ingresses (of our class) + Services + EndpointSlices → the route table, as ingress-nginx
//! would configure nginx: Ingresses of one host merged into one server, the oldest Ingress
//! winning a path both name, regex mode for a whole host once any of its Ingresses asks for
//! `use-regex` or `rewrite-target`, canaries attached to the path they shadow. What cannot be
//! served comes back as problems for Warning events; the rest is served.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use regex::Regex;

use super::annotations::{self, Options};
use super::config::Global;
use super::routes::{CanaryBackend, PathMatch, Route, Server, Table, Upstream};

pub const CLASS_NAME: &str = "nginx";
pub const CONTROLLER: &str = "k8s.io/ingress-nginx";
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// A Warning event to write about an Ingress.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `namespace/name`.
    pub ingress: String,
    pub reason: &'static str,
    pub message: String,
}

/// A TLS section: the hosts it covers and the secret (`namespace/name`, or None when the
/// section names none and so gets the default certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEntry {
    pub ingress: String,
    pub hosts: Vec<String>,
    pub secret: Option<String>,
}

/// The cluster objects a table is built from.
#[derive(Default)]
pub struct Snapshot {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
    /// The controller ConfigMap's settings.
    pub global: Arc<Global>,
}

pub struct Built {
    pub table: Table,
    pub tls: Vec<TlsEntry>,
    pub problems: Vec<Problem>,
    /// The Ingresses served (for status), `namespace/name`.
    pub served: Vec<Arc<Ingress>>,
}

pub fn key(ing: &Ingress) -> String {
    format!(
        "{}/{}",
        ing.metadata.namespace.as_deref().unwrap_or("default"),
        ing.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether this controller serves the Ingress: its class is one of ours (controller
/// `k8s.io/ingress-nginx`, or the name `nginx` before the class exists), or it names no class
/// and its legacy annotation, if any, says `nginx`.
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>]) -> bool {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    match class {
        Some(name) => match classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
        {
            Some(c) => c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER),
            None => name == CLASS_NAME,
        },
        None => ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .is_none_or(|c| c == CLASS_NAME),
    }
}

struct Lookup<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Lookup<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        let mut services = HashMap::new();
        for s in &snap.services {
            if let (Some(ns), Some(n)) =
                (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
            {
                services.insert((ns, n), s.as_ref());
            }
        }
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &snap.slices {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.as_deref(), svc) {
                slices
                    .entry((ns, svc.as_str()))
                    .or_default()
                    .push(s.as_ref());
            }
        }
        Lookup { services, slices }
    }

    /// The backend's ready endpoints, or why there are none.
    fn upstream(
        &self,
        ns: &str,
        backend: &IngressBackend,
        service_upstream: bool,
    ) -> Result<Upstream, String> {
        let Some(sb) = backend.service.as_ref() else {
            return Err(
                "resource backends are not supported; only Service backends are served".into(),
            );
        };
        let name = sb.name.as_str();
        let label = format!("{ns}/{name}");
        let svc = self
            .services
            .get(&(ns, name))
            .ok_or_else(|| format!("service {label} not found"))?;
        let spec = svc
            .spec
            .as_ref()
            .ok_or_else(|| format!("service {label} has no spec"))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(format!(
                "service {label} is of type ExternalName, which this controller does not proxy to"
            ));
        }
        let want = sb.port.as_ref();
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match want {
                Some(w) => match (&w.number, &w.name) {
                    (Some(n), _) => p.port == *n,
                    (None, Some(n)) => p.name.as_deref() == Some(n.as_str()),
                    (None, None) => false,
                },
                None => false,
            })
            .ok_or_else(|| {
                let asked = want
                    .map(|w| {
                        w.number
                            .map(|n| n.to_string())
                            .or_else(|| w.name.clone())
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                format!("service {label} has no port {asked}")
            })?;
        if service_upstream {
            let ip: IpAddr = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| format!("service {label} has no cluster IP (service-upstream)"))?;
            return Ok(Upstream::addrs(
                label,
                vec![SocketAddr::new(ip, port.port as u16)],
            ));
        }
        let port_name = port.name.clone().unwrap_or_default();
        let mut addrs = Vec::new();
        for slice in self.slices.get(&(ns, name)).into_iter().flatten() {
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        addrs.push(SocketAddr::new(ip, target as u16));
                    }
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        Ok(Upstream::addrs(label, addrs))
    }
}

/// ingress-nginx ≥ 1.12 (strict-validate-path-type) refuses Exact/Prefix paths with other
/// characters than these.
fn strict_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

struct Pending<'a> {
    ingress: &'a Ingress,
    key: String,
    host: String,
    path: String,
    path_type: String,
    backend: &'a IngressBackend,
    options: Arc<Options>,
}

pub fn build(snap: &Snapshot) -> Built {
    let lookup = Lookup::new(snap);
    let base = Arc::new(snap.global.defaults.clone());
    let mut problems = Vec::new();
    let mut ours: Vec<Arc<Ingress>> = snap
        .ingresses
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && is_ours(i, &snap.classes))
        .cloned()
        .collect();
    // Oldest first: it wins a path that several Ingresses name.
    ours.sort_by(|a, b| {
        let t = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| key(a).cmp(&key(b)))
    });

    let mut options: HashMap<String, Arc<Options>> = HashMap::new();
    let mut pending = Vec::new();
    let mut tls = Vec::new();
    for ing in &ours {
        let k = key(ing);
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let empty = BTreeMap::new();
        let (opts, findings) =
            annotations::parse(ing.metadata.annotations.as_ref().unwrap_or(&empty), &base);
        for u in findings.unsupported {
            problems.push(Problem {
                ingress: k.clone(),
                reason: "UnsupportedAnnotation",
                message: format!(
                    "annotation {u} is not supported by kcluster's ingress and is ignored"
                ),
            });
        }
        for i in findings.invalid {
            problems.push(Problem {
                ingress: k.clone(),
                reason: "InvalidAnnotation",
                message: format!("annotation {i}; its default is used"),
            });
        }
        let mut opts = opts;
        if let Some(a) = opts.auth.as_mut()
            && let Err(msg) = fill_users(a, ns, &snap.secrets)
        {
            problems.push(Problem {
                ingress: k.clone(),
                reason: "AuthSecret",
                message: format!("{msg}; every request is refused with 401"),
            });
        }
        let opts = Arc::new(opts);
        options.insert(k.clone(), opts.clone());
        let Some(spec) = ing.spec.as_ref() else {
            continue;
        };
        for t in spec.tls.iter().flatten() {
            tls.push(TlsEntry {
                ingress: k.clone(),
                hosts: t
                    .hosts
                    .iter()
                    .flatten()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                secret: t
                    .secret_name
                    .as_ref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("{ns}/{s}")),
            });
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                pending.push(Pending {
                    ingress: ing,
                    key: k.clone(),
                    host: host.clone(),
                    path: p
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into()),
                    path_type: p.path_type.clone(),
                    backend: &p.backend,
                    options: opts.clone(),
                });
            }
        }
    }

    // Regex mode is per host: any Ingress of the host asking for it turns it on for all.
    let mut regex_hosts: HashMap<&str, bool> = HashMap::new();
    for p in &pending {
        let on = p.options.use_regex || p.options.rewrite_target.is_some();
        *regex_hosts.entry(p.host.as_str()).or_default() |= on;
    }

    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    let mut canaries = Vec::new();
    for p in &pending {
        let regex_mode = regex_hosts.get(p.host.as_str()).copied().unwrap_or(false);
        if p.path_type != "ImplementationSpecific" && !strict_path(&p.path) {
            problems.push(Problem {
                ingress: p.key.clone(),
                reason: "PathNotStrict",
                message: format!(
                    "path {} with pathType {} holds characters ingress-nginx 1.12 and later refuse \
                     (use pathType ImplementationSpecific for regular expressions); kcluster serves it{}",
                    p.path,
                    p.path_type,
                    if regex_mode { " as a regular expression" } else { " literally" }
                ),
            });
        }
        let matcher = if regex_mode {
            match Regex::new(&format!("(?i)^{}", p.path)) {
                Ok(r) => PathMatch::Regex(r),
                Err(e) => {
                    problems.push(Problem {
                        ingress: p.key.clone(),
                        reason: "InvalidPath",
                        message: format!(
                            "path {} of host {} is not a valid regular expression (RE2 syntax), \
                             so it is not served: {e}",
                            p.path,
                            display_host(&p.host)
                        ),
                    });
                    continue;
                }
            }
        } else {
            match p.path_type.as_str() {
                "Exact" => PathMatch::Exact(p.path.clone()),
                "Prefix" => PathMatch::Prefix(p.path.clone()),
                _ => PathMatch::Plain(p.path.clone()),
            }
        };
        let rewrite = match &p.options.rewrite_target {
            Some(_) => Regex::new(&format!("(?i){}", p.path)).ok(),
            None => None,
        };
        let ns = p.ingress.metadata.namespace.as_deref().unwrap_or("default");
        let upstream = match lookup.upstream(ns, p.backend, p.options.service_upstream) {
            Ok(u) => u,
            Err(e) => {
                problems.push(Problem {
                    ingress: p.key.clone(),
                    reason: "BackendNotFound",
                    message: format!(
                        "path {} of host {}: {e}; it answers 503",
                        p.path,
                        display_host(&p.host)
                    ),
                });
                Upstream::Fixed {
                    status: 503,
                    reason: e,
                }
            }
        };
        if p.options.canary.is_some() {
            canaries.push((p, upstream));
            continue;
        }
        let server = servers
            .entry(p.host.clone())
            .or_insert_with(|| Server::new(&p.host, base.clone()));
        if let Some(other) = server.routes.iter().find(|r| r.path == p.path) {
            if other.ingress != p.key {
                problems.push(Problem {
                    ingress: p.key.clone(),
                    reason: "PathConflict",
                    message: format!(
                        "path {} of host {} is already served by the older Ingress {}",
                        p.path,
                        display_host(&p.host),
                        other.ingress
                    ),
                });
            }
            continue;
        }
        server.routes.push(Route {
            ingress: p.key.clone(),
            path: p.path.clone(),
            exact: p.path_type == "Exact",
            matcher,
            upstream: Arc::new(upstream),
            options: p.options.clone(),
            rewrite,
            canary: None,
        });
    }
    for (p, upstream) in canaries {
        let Some(route) = servers
            .get_mut(&p.host)
            .and_then(|s| s.routes.iter_mut().find(|r| r.path == p.path))
        else {
            problems.push(Problem {
                ingress: p.key.clone(),
                reason: "CanaryWithoutMain",
                message: format!(
                    "canary path {} of host {} has no main Ingress serving the same host and path",
                    p.path,
                    display_host(&p.host)
                ),
            });
            continue;
        };
        let Some(rule) = p.options.canary.clone() else {
            continue;
        };
        let header_pattern = match rule.header_pattern.as_deref().map(Regex::new) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                problems.push(Problem {
                    ingress: p.key.clone(),
                    reason: "InvalidAnnotation",
                    message: format!(
                        "canary-by-header-pattern is not a valid regular expression: {e}"
                    ),
                });
                None
            }
            None => None,
        };
        if route.canary.is_some() {
            problems.push(Problem {
                ingress: p.key.clone(),
                reason: "CanaryConflict",
                message: format!(
                    "path {} of host {} already has a canary; only one is used",
                    p.path,
                    display_host(&p.host)
                ),
            });
            continue;
        }
        route.canary = Some(CanaryBackend {
            rule,
            header_pattern,
            upstream: Arc::new(upstream),
        });
    }

    // Default backends: the host's unmatched paths, and the catch-all's for the oldest.
    let mut catch_all: Option<(Upstream, Arc<Options>)> = None;
    for ing in &ours {
        let Some(b) = ing.spec.as_ref().and_then(|s| s.default_backend.as_ref()) else {
            continue;
        };
        let k = key(ing);
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let opts = options.get(&k).cloned().unwrap_or_else(|| base.clone());
        let make = || match lookup.upstream(ns, b, opts.service_upstream) {
            Ok(u) => u,
            Err(e) => Upstream::Fixed {
                status: 503,
                reason: e,
            },
        };
        if let Err(e) = lookup.upstream(ns, b, opts.service_upstream) {
            problems.push(Problem {
                ingress: k.clone(),
                reason: "BackendNotFound",
                message: format!("default backend: {e}; it answers 503"),
            });
        }
        for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            if let Some(s) = servers.get_mut(&host)
                && matches!(*s.fallback, Upstream::Fixed { status: 404, .. })
            {
                s.fallback = Arc::new(make());
                s.fallback_options = opts.clone();
            }
        }
        if catch_all.is_none() {
            catch_all = Some((make(), opts.clone()));
        }
    }

    for t in &tls {
        for h in &t.hosts {
            servers
                .entry(h.clone())
                .or_insert_with(|| Server::new(h, base.clone()))
                .tls = true;
        }
    }

    let mut table = Table {
        global: snap.global.clone(),
        ..Table::default()
    };
    let mut aliases = Vec::new();
    for ing in &ours {
        let Some(opts) = options.get(&key(ing)) else {
            continue;
        };
        for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            let Some(host) = rule.host.as_deref().map(str::to_ascii_lowercase) else {
                continue;
            };
            for a in &opts.server_alias {
                aliases.push((a.clone(), host.clone()));
            }
            if opts.from_to_www && !host.starts_with("*.") {
                match host.strip_prefix("www.") {
                    Some(bare) => table.www_redirects.insert(bare.to_string(), host.clone()),
                    None => table
                        .www_redirects
                        .insert(format!("www.{host}"), host.clone()),
                };
            }
        }
    }
    let mut default_server = servers
        .remove("")
        .unwrap_or_else(|| Server::new("_", base.clone()));
    if let Some((u, o)) = catch_all {
        default_server.fallback = Arc::new(u);
        default_server.fallback_options = o;
    }
    default_server.sort();
    table.default = Arc::new(default_server);
    for (host, mut s) in servers {
        s.sort();
        let s = Arc::new(s);
        match host.strip_prefix("*.") {
            Some(parent) => table.wildcard.insert(parent.to_string(), s),
            None => table.exact.insert(host, s),
        };
    }
    for (alias, host) in aliases {
        if let Some(s) = table.exact.get(&host).cloned() {
            table.exact.entry(alias).or_insert(s);
        }
    }
    // A host served by its own rules is never redirected away.
    table
        .www_redirects
        .retain(|from, _| !table.exact.contains_key(from));
    problems.sort();
    problems.dedup();
    Built {
        table,
        tls,
        problems,
        served: ours,
    }
}

/// The users of `auth-type: basic` from its secret.
fn fill_users(
    a: &mut annotations::BasicAuth,
    ns: &str,
    secrets: &[Arc<Secret>],
) -> Result<(), String> {
    if a.secret.is_empty() {
        return Err("auth-type basic without auth-secret".into());
    }
    let (sns, sname) = a.secret.split_once('/').unwrap_or((ns, a.secret.as_str()));
    let secret = secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(sns)
                && s.metadata.name.as_deref() == Some(sname)
        })
        .ok_or_else(|| format!("auth secret {sns}/{sname} not found"))?;
    let data = secret.data.clone().unwrap_or_default();
    a.users = if a.map {
        data.iter()
            .filter_map(|(u, h)| {
                Some((
                    u.clone(),
                    String::from_utf8(h.0.clone()).ok()?.trim().to_string(),
                ))
            })
            .collect()
    } else {
        let file = data.get("auth").ok_or_else(|| {
            format!("auth secret {sns}/{sname} has no key \"auth\" (an htpasswd file)")
        })?;
        super::auth::parse_file(&String::from_utf8_lossy(&file.0))
    };
    if a.users.is_empty() {
        return Err(format!("auth secret {sns}/{sname} holds no users"));
    }
    Ok(())
}

fn display_host(h: &str) -> &str {
    if h.is_empty() { "*" } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ing(v: serde_json::Value) -> Arc<Ingress> {
        Arc::new(serde_json::from_value(v).expect("an Ingress"))
    }

    fn snapshot(ings: Vec<Arc<Ingress>>) -> Snapshot {
        let svc = |name: &str| -> Arc<Service> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 9080}]},
                }))
                .expect("a Service"),
            )
        };
        let slice = |name: &str, ip: &str| -> Arc<EndpointSlice> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-x"), "namespace": "default",
                                  "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": true}},
                                  {"addresses": ["10.244.9.9"], "conditions": {"ready": false}}],
                    "ports": [{"name": "http", "port": 9080}],
                }))
                .expect("a slice"),
            )
        };
        Snapshot {
            ingresses: ings,
            classes: vec![],
            services: vec![svc("reviews"), svc("details")],
            slices: vec![
                slice("reviews", "10.244.1.2"),
                slice("details", "10.244.1.3"),
            ],
            secrets: vec![],
            global: Arc::default(),
        }
    }

    fn path(p: &str, t: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 9080}}}})
    }

    #[test]
    fn the_seeds_rewrite_makes_the_host_regex() {
        let reviews = ing(json!({
            "metadata": {"name": "bookstore-reviews", "namespace": "default",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/reviews/$1"}},
            "spec": {"rules": [{"host": "bookstore.luffy.com", "http": {"paths": [path("/api/reviews/(.*)", "Prefix", "reviews")]}}]},
        }));
        let details = ing(json!({
            "metadata": {"name": "bookstore-details", "namespace": "default",
                         "creationTimestamp": "2026-01-01T00:00:01Z"},
            "spec": {"rules": [{"host": "bookstore.luffy.com", "http": {"paths": [path("/details", "Prefix", "details")]}}]},
        }));
        let built = build(&snapshot(vec![details, reviews]));
        let s = built.table.server("bookstore.luffy.com");
        let r = s.find("/API/Reviews/0").expect("case-insensitive regex");
        assert_eq!(r.ingress, "default/bookstore-reviews");
        assert_eq!(r.upstream.pick(), Some("10.244.1.2:9080".parse().unwrap()));
        // Regex mode: the details prefix is a regex too, unanchored at the end.
        assert_eq!(
            s.find("/detailsX/0").map(|r| r.ingress.as_str()),
            Some("default/bookstore-details")
        );
        assert!(built.problems.iter().any(|p| p.reason == "PathNotStrict"));
        assert!(s.find("/other").is_none());
        assert_eq!(built.table.server("other.luffy.com").host, "_");
    }

    #[test]
    fn oldest_wins_exact_beats_prefix_and_missing_backends_answer_503() {
        let old = ing(json!({
            "metadata": {"name": "a", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"rules": [{"host": "h.example", "http": {"paths": [
                path("/p", "Prefix", "reviews"), path("/p", "Exact", "details"), path("/gone", "Prefix", "nope")]}}]},
        }));
        let new = ing(json!({
            "metadata": {"name": "b", "namespace": "default", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"rules": [{"host": "h.example", "http": {"paths": [path("/p", "Prefix", "details")]}}]},
        }));
        let built = build(&snapshot(vec![new, old]));
        let s = built.table.server("h.example");
        assert_eq!(
            s.find("/p/x").map(|r| r.ingress.as_str()),
            Some("default/a")
        );
        assert!(
            built
                .problems
                .iter()
                .any(|p| p.reason == "PathConflict" && p.ingress == "default/b")
        );
        assert!(matches!(
            *s.find("/gone").expect("route").upstream,
            Upstream::Fixed { status: 503, .. }
        ));
        assert!(built.problems.iter().any(|p| p.reason == "BackendNotFound"));
    }

    #[test]
    fn bad_regex_refuses_only_that_path() {
        let i = ing(json!({
            "metadata": {"name": "r", "namespace": "default",
                         "annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}},
            "spec": {"rules": [{"host": "r.example", "http": {"paths": [
                path("/ok/.*", "ImplementationSpecific", "reviews"),
                path("/bad/(", "ImplementationSpecific", "reviews")]}}]},
        }));
        let built = build(&snapshot(vec![i]));
        let s = built.table.server("r.example");
        assert!(s.find("/ok/1").is_some());
        assert_eq!(s.routes.len(), 1);
        assert!(built.problems.iter().any(|p| p.reason == "InvalidPath"));
    }

    #[test]
    fn classes() {
        let mk = |class: Option<&str>, ann: Option<&str>| {
            let mut v = json!({"metadata": {"name": "x"}, "spec": {}});
            if let Some(c) = class {
                v["spec"]["ingressClassName"] = json!(c);
            }
            if let Some(a) = ann {
                v["metadata"]["annotations"] = json!({LEGACY_CLASS_ANNOTATION: a});
            }
            ing(v)
        };
        let other: Arc<IngressClass> = Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "traefik"}, "spec": {"controller": "traefik.io/ingress-controller"}}))
                .unwrap(),
        );
        let classes = vec![other];
        assert!(is_ours(&mk(Some("nginx"), None), &classes));
        assert!(is_ours(&mk(None, None), &classes));
        assert!(is_ours(&mk(None, Some("nginx")), &classes));
        assert!(!is_ours(&mk(None, Some("traefik")), &classes));
        assert!(!is_ours(&mk(Some("traefik"), None), &classes));
    }
}
