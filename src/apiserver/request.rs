//! Turns a request path and method into what is being asked of which resource, the way the
//! Kubernetes API server's request-info parser does.

use super::resources::{self, ResourceDef};
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

#[derive(Debug)]
pub struct ResourceRequest {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
    /// The version the client asked for, when `def` is the storage version it was turned into:
    /// field managers record the version they wrote through.
    pub served_as: Option<&'static ResourceDef>,
}

impl ResourceRequest {
    /// The resource at the version the client asked for.
    pub fn served_def(&self) -> &'static ResourceDef {
        self.served_as.unwrap_or(self.def)
    }
}

/// Splits `/api/v1/...` or `/apis/<group>/<version>/...` into (group, version, rest).
pub fn split_api_path(path: &str) -> Option<(&str, &str, Vec<&str>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", version, rest @ ..] => Some(("", version, rest.to_vec())),
        ["apis", group, version, rest @ ..] => Some((group, version, rest.to_vec())),
        _ => None,
    }
}

pub fn parse(
    method: &http::Method,
    path: &str,
    watch_param: bool,
) -> Result<ResourceRequest, ApiError> {
    let Some((group, version, rest)) = split_api_path(path) else {
        return Err(ApiError::path_not_found(path));
    };
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Err(ApiError::path_not_found(path));
    }
    // `namespaces/<ns>/<resource>…` addresses a namespaced resource; `namespaces/<name>[/status|/finalize]`
    // the namespace itself, as in Kubernetes' request-info parser.
    let namespace_itself = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (namespace, parts): (Option<String>, &[&str]) =
        if rest[0] == "namespaces" && rest.len() >= 3 && !namespace_itself {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, &rest[..])
        };
    let plural = parts[0];
    let def =
        resources::find(group, version, plural).ok_or_else(|| ApiError::path_not_found(path))?;
    if namespace.is_some() && !def.namespaced() {
        return Err(ApiError::path_not_found(path));
    }
    let name = parts.get(1).map(|s| s.to_string());
    let subresource = parts.get(2).map(|s| s.to_string());
    // Only a proxy subresource carries a path of its own (…/pods/p/proxy/some/path).
    if parts.len() > 3 && subresource.as_deref() != Some("proxy") {
        return Err(ApiError::path_not_found(path));
    }
    if let Some(sub) = &subresource
        && !def.has_subresource(sub)
    {
        return Err(ApiError::path_not_found(path));
    }
    // A proxy passes any method through to its backend.
    let proxied = subresource.as_deref() == Some("proxy") && name.is_some();
    let verb = match (method.as_str(), name.is_some(), subresource.is_some()) {
        _ if proxied => Verb::Get,
        ("GET", _, false) if watch_param => Verb::Watch,
        ("GET", true, _) => Verb::Get,
        ("GET", false, _) => Verb::List,
        ("POST", false, false) | ("POST", true, true) => Verb::Create,
        ("PUT", true, _) => Verb::Update,
        ("PATCH", true, _) => Verb::Patch,
        ("DELETE", true, false) => Verb::Delete,
        ("DELETE", false, false) => Verb::DeleteCollection,
        (m, _, _) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m} {path})"
            )));
        }
    };
    Ok(ResourceRequest {
        def,
        namespace,
        name,
        subresource,
        verb,
        served_as: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let r = parse(
            &http::Method::GET,
            "/api/v1/namespaces/default/pods/p1",
            false,
        )
        .unwrap();
        assert_eq!(r.def.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("p1"));
        assert_eq!(r.verb, Verb::Get);

        let r = parse(&http::Method::GET, "/api/v1/namespaces/kube-system", false).unwrap();
        assert_eq!(r.def.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));

        let r = parse(&http::Method::PUT, "/api/v1/namespaces/ns1/finalize", false).unwrap();
        assert_eq!(
            (r.def.plural, r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("ns1"), Some("finalize"))
        );

        let r = parse(&http::Method::PUT, "/api/v1/nodes/n1/status", false).unwrap();
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(r.verb, Verb::Update);

        let r = parse(
            &http::Method::GET,
            "/apis/coordination.k8s.io/v1/leases",
            true,
        )
        .unwrap();
        assert_eq!(r.verb, Verb::Watch);
        assert!(r.namespace.is_none());
    }

    #[test]
    fn rejects_unknown_and_misplaced() {
        assert_eq!(
            parse(&http::Method::GET, "/api/v1/widgets", false)
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(
            parse(&http::Method::GET, "/api/v1/namespaces/x/nodes", false)
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(
            parse(&http::Method::POST, "/api/v1/nodes/n1", false)
                .unwrap_err()
                .code,
            405
        );
        assert_eq!(
            parse(&http::Method::DELETE, "/api/v1/nodes/n1/status", false)
                .unwrap_err()
                .code,
            405
        );
        assert_eq!(
            parse(&http::Method::GET, "/api/v1/nodes/n1/log", false)
                .unwrap_err()
                .code,
            404
        );
    }
}
