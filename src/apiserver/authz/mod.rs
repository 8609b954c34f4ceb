//! Authorization: who may do what. Every authenticated request is described as Kubernetes'
//! authorizer attributes and decided by RBAC over the stored roles and bindings;
//! `system:masters` is always allowed. Also here: the bootstrap policy, ClusterRole
//! aggregation, impersonation, the escalation checks on RBAC writes and the
//! authorization.k8s.io reviews.

pub mod aggregation;
pub mod bootstrap;
pub mod controller_roles;
pub mod escalation;
pub mod impersonation;
pub mod node;
pub mod rbac;
pub mod reviews;
pub mod signers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::json;
use tracing::{debug, warn};

use super::status::ApiError;
use crate::pki::ClientIdentity;
use crate::store::Store;

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user as the authorizer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    /// Set only by impersonation (`Impersonate-Uid`); the authenticator's own uid, if any, is
    /// read from the credentials when something asks (`authentication::requester`).
    pub uid: Option<String>,
    /// Impersonated `user.extra` (`Impersonate-Extra-<key>`), keys lower-cased and unescaped.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl User {
    /// Every authenticated user is in `system:authenticated`, as Kubernetes' authenticators add.
    pub fn authenticated(identity: &ClientIdentity) -> User {
        let mut groups = identity.groups.clone();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        User {
            name: identity.user.clone(),
            groups,
            ..User::default()
        }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The user as admission webhooks and reviews see it (after impersonation).
    pub fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            user: self.name.clone(),
            groups: self.groups.clone(),
        }
    }
}

tokio::task_local! {
    /// The user a request acts as, for checks deep in the write path (RBAC escalation).
    pub static REQUESTER: User;
}

/// Kubernetes' authorizer attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Attributes {
    /// The attributes of an HTTP request, as Kubernetes' request-info parser derives them:
    /// `/api/v1/…` and `/apis/<group>/<version>/…` with a resource are resource requests; every
    /// other path (discovery, /openapi, /metrics, …) is a non-resource one whose verb is the
    /// lower-cased method.
    pub fn of_request(user: &User, method: &http::Method, path: &str, query: &str) -> Attributes {
        let mut a = Attributes {
            user: user.name.clone(),
            groups: user.groups.clone(),
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_string(),
            ..Attributes::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                a.api_version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                a.api_group = group.to_string();
                a.api_version = version.to_string();
                rest
            }
            _ => return a,
        };
        a.resource_request = true;
        a.verb = match method.as_str() {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        let mut rest = rest;
        if rest[0] == "namespaces" && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            // namespaces/<ns>/status and /finalize address the namespace itself.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        a.resource = rest[0].to_string();
        if let Some(name) = rest.get(1) {
            a.name = name.to_string();
        }
        if let Some(sub) = rest.get(2) {
            a.subresource = sub.to_string();
        }
        let query = super::handlers::Query::parse(Some(query));
        if a.name.is_empty() && a.verb == "get" {
            a.verb = if query.flag("watch") { "watch" } else { "list" }.to_string();
            // A list or watch of one object by field selector is a request for that name.
            if let Some(selector) = query.get("fieldSelector") {
                for term in selector.split(',') {
                    if let Some(name) = term
                        .strip_prefix("metadata.name=")
                        .or_else(|| term.strip_prefix("metadata.name=="))
                    {
                        a.name = name.to_string();
                    }
                }
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".to_string();
        }
        a
    }

    /// The 403 Kubernetes writes when this request is not allowed (`reason` from the
    /// authorizers, empty when they give none).
    pub fn forbidden(&self, reason: &str) -> ApiError {
        let mut msg = if !self.resource_request {
            format!(
                "User {} cannot {} path {}",
                rbac::go_quote(&self.user),
                self.verb,
                rbac::go_quote(&self.path)
            )
        } else {
            let mut resource = self.resource.clone();
            if !self.subresource.is_empty() {
                resource = format!("{resource}/{}", self.subresource);
            }
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {}", rbac::go_quote(&self.namespace))
            };
            format!(
                "User {} cannot {} resource {} in API group {} {scope}",
                rbac::go_quote(&self.user),
                self.verb,
                rbac::go_quote(&resource),
                rbac::go_quote(&self.api_group),
            )
        };
        if !reason.is_empty() {
            msg = format!("{msg}: {reason}");
        }
        forbidden_status(&self.api_group, &self.resource, &self.name, &msg)
    }
}

/// apierrors.NewForbidden: `pods "p" is forbidden: …`, `forbidden: …` without a resource.
pub fn forbidden_status(group: &str, resource: &str, name: &str, err: &str) -> ApiError {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {err}")
    } else if name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {} is forbidden: {err}", rbac::go_quote(name))
    };
    let mut e = ApiError::forbidden(message);
    e.details = Some(json!({"name": name, "group": group, "kind": resource}));
    e
}

/// An authorization decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// The RBAC authorizer with its index. The index is rebuilt lazily after any change of RBAC
/// objects: writes through this server mark it stale before they answer, and a watch of the
/// store catches every other writer. A reader that finds the index older than the last change
/// it could have seen waits for the rebuild (never answers from the older index), so a change
/// is in force for every request that starts after it, and no request is ever decided by the
/// empty index the server starts with.
pub struct Authorizer {
    store: Store,
    index: RwLock<Arc<rbac::Index>>,
    /// Counts changes of RBAC objects (starts at 1: the store has not been read yet).
    changes: AtomicU64,
    /// The value of `changes` the index was built after.
    built: AtomicU64,
    rebuilding: Mutex<()>,
}

impl Authorizer {
    pub fn new(store: Store) -> Arc<Authorizer> {
        Arc::new(Authorizer {
            store,
            index: RwLock::new(Arc::new(rbac::Index::default())),
            changes: AtomicU64::new(1),
            built: AtomicU64::new(0),
            rebuilding: Mutex::new(()),
        })
    }

    pub fn invalidate(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// The current index, rebuilt first if RBAC objects changed since it was built.
    pub fn index(&self) -> Arc<rbac::Index> {
        if self.built.load(Ordering::SeqCst) != self.changes.load(Ordering::SeqCst) {
            let _one = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            // Another reader may have rebuilt it while this one waited.
            let changes = self.changes.load(Ordering::SeqCst);
            if self.built.load(Ordering::SeqCst) != changes {
                match rbac::Index::build(&self.store) {
                    Ok(index) => {
                        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
                        // Changes counted during the build are read by the next reader.
                        self.built.store(changes, Ordering::SeqCst);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read the RBAC objects; using the last index")
                    }
                }
            }
        }
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the index stale on every change of an RBAC object in the store.
    pub async fn watch(self: Arc<Self>) {
        loop {
            let after = self.store.current_revision();
            self.invalidate();
            let mut watch = match self.store.watch(rbac::PREFIX, after) {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "authorization: cannot watch RBAC objects");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                match watch.next_event().await {
                    Some(Ok(_)) => self.invalidate(),
                    Some(Err(_)) => break,
                    None => return,
                }
            }
        }
    }

    /// Decides a request as kube-apiserver's authorizer chain does for it: the privileged
    /// group first, then RBAC.
    pub fn authorize(&self, a: &Attributes) -> Decision {
        if a.groups.iter().any(|g| g == MASTERS) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let index = self.index();
        // Nodes are decided by the Node authorizer first; what it has no opinion on goes to RBAC.
        let mut node_reason = None;
        if let Some(node) = node::node_of(&a.user, &a.groups) {
            match node::authorize(&self.store, &index, node, a) {
                node::NodeDecision::Allow(by) => {
                    return Decision {
                        allowed: true,
                        reason: by,
                    };
                }
                node::NodeDecision::NoOpinion(why) => {
                    node_reason = Some(why).filter(|w| !w.is_empty())
                }
            }
        }
        let evaluation = index.evaluate(a);
        match evaluation.allowed_by {
            Some(by) => Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {by}"),
            },
            None => {
                let reason = match (node_reason, evaluation.errors.as_slice()) {
                    (Some(why), _) => why,
                    (None, []) => String::new(),
                    (None, [one]) => format!("RBAC: {one}"),
                    (None, many) => format!("RBAC: [{}]", many.join(", ")),
                };
                debug!(user = %a.user, verb = %a.verb, resource = %a.resource,
                       subresource = %a.subresource, namespace = %a.namespace, path = %a.path,
                       "RBAC: denied");
                Decision {
                    allowed: false,
                    reason,
                }
            }
        }
    }

    /// Authorizes or returns the 403 kube-apiserver writes.
    pub fn check(&self, a: &Attributes) -> Result<(), ApiError> {
        let d = self.authorize(a);
        if d.allowed {
            Ok(())
        } else {
            tracing::info!(user = %a.user, groups = ?a.groups, verb = %a.verb, group = %a.api_group,
                           resource = %a.resource, subresource = %a.subresource,
                           namespace = %a.namespace, name = %a.name, path = %a.path,
                           "request forbidden");
            Err(a.forbidden(&d.reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "jane".into(),
            groups: vec![AUTHENTICATED.into()],
            ..User::default()
        }
    }

    #[test]
    fn request_attributes_follow_kubernetes_request_info() {
        let get = http::Method::GET;
        let a = Attributes::of_request(&user(), &get, "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "pods", "default")
        );
        let a = Attributes::of_request(&user(), &get, "/api/v1/pods", "watch=true");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = Attributes::of_request(
            &user(),
            &get,
            "/api/v1/namespaces/ns/pods",
            "fieldSelector=metadata.name%3Dp&watch=1",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = Attributes::of_request(&user(), &get, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let a = Attributes::of_request(
            &user(),
            &http::Method::DELETE,
            "/apis/apps/v1/namespaces/ns/deployments",
            "",
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = Attributes::of_request(&user(), &get, "/api/v1/namespaces/ns/pods/p/log", "");
        assert_eq!((a.verb.as_str(), a.subresource.as_str()), ("get", "log"));
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v3",
            "/metrics",
        ] {
            let a = Attributes::of_request(&user(), &get, path, "");
            assert!(!a.resource_request, "{path}");
            assert_eq!(a.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages_are_kubernetes_own() {
        let get = http::Method::GET;
        let a = Attributes::of_request(&user(), &get, "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            a.forbidden("").message,
            r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let a = Attributes::of_request(&user(), &get, "/apis/apps/v1/deployments", "");
        assert_eq!(
            a.forbidden("").message,
            r#"deployments.apps is forbidden: User "jane" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        let a = Attributes::of_request(&user(), &get, "/api/v1/namespaces/ns/pods/p/log", "");
        assert_eq!(
            a.forbidden("").message,
            r#"pods "p" is forbidden: User "jane" cannot get resource "pods/log" in API group "" in the namespace "ns""#
        );
        let a = Attributes::of_request(&user(), &http::Method::POST, "/metrics", "");
        let e = a.forbidden("");
        assert_eq!(
            e.message,
            r#"forbidden: User "jane" cannot post path "/metrics""#
        );
        assert_eq!(
            String::from_utf8(e.encode_status()).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"jane\\\" cannot post path \\\"/metrics\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n"
        );
    }
}
