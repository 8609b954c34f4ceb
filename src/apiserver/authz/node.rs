//! The Node authorizer and NodeRestriction, as kube-apiserver runs them for kubelets: a node's
//! credentials (`system:node:<name>` in `system:nodes`) reach only what its own pods need.
//! - Secrets, ConfigMaps, PersistentVolumeClaims, PersistentVolumes and service-account tokens
//!   only by name and only when a pod bound to the node refers to them (volumes, env, envFrom,
//!   image pull secrets, its service account; a PV through a claim such a pod uses).
//! - Its own Node and Lease only; pods' status, deletion and eviction only for pods bound to it;
//!   no pods created (a kubelet may create only mirror pods, and there are none here).
//! - Anything else as the `system:node` ClusterRole says.
//!
//! Like Kubernetes' Node authorizer this one never denies: without a relationship it has no
//! opinion and RBAC decides (the cluster's own node-services role, bound to `system:nodes`,
//! lets agents read PersistentVolumes to clean up after them). NodeRestriction's checks of an
//! object's name on create are admission (`admit`), with kube-apiserver's messages.

use serde_json::Value;

use super::Attributes;
use super::rbac::Index;
use crate::apiserver::status::ApiError;
use crate::store::Store;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";
/// The ClusterRole whose rules a node holds besides the graph.
pub const NODE_ROLE: &str = "system:node";
const PODS: &str = "/registry/core/pods/";
const CLAIMS: &str = "/registry/core/persistentvolumeclaims/";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const MIRROR: &str = "kubernetes.io/config.mirror";

/// The node a request comes from, if its user is a node's.
pub fn node_of<'a>(user: &'a str, groups: &[String]) -> Option<&'a str> {
    let node = user.strip_prefix(NODE_USER_PREFIX)?;
    (!node.is_empty() && groups.iter().any(|g| g == NODES_GROUP)).then_some(node)
}

pub enum NodeDecision {
    Allow(String),
    /// Left to RBAC, with the reason to give if RBAC refuses too.
    NoOpinion(String),
}

fn no_relationship(node: &str) -> NodeDecision {
    NodeDecision::NoOpinion(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

pub fn authorize(store: &Store, index: &Index, node: &str, a: &Attributes) -> NodeDecision {
    if !a.resource_request {
        return rules(index, a);
    }
    match (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", "")
        | ("", "serviceaccounts", "token") => graph(store, node, a),
        ("", "nodes", _) if writes(a) && a.verb != "create" && a.name != node => {
            NodeDecision::NoOpinion(format!("node '{node}' cannot modify node '{}'", a.name))
        }
        ("coordination.k8s.io", "leases", "")
            if a.namespace == LEASE_NAMESPACE && a.verb != "create" && a.name != node =>
        {
            NodeDecision::NoOpinion(
                "can only access node lease with the same name as the requesting node".into(),
            )
        }
        ("", "pods", sub)
            if (sub.is_empty() && a.verb == "delete")
                || (sub == "status" && writes(a))
                || (sub == "eviction" && a.verb == "create") =>
        {
            match pod_node(store, &a.namespace, &a.name) {
                Some(bound) if bound == node => rules(index, a),
                _ => NodeDecision::NoOpinion(format!(
                    "node '{node}' can only change pods bound to it"
                )),
            }
        }
        _ => rules(index, a),
    }
}

fn writes(a: &Attributes) -> bool {
    matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete")
}

fn rules(index: &Index, a: &Attributes) -> NodeDecision {
    if index.cluster_role_allows(NODE_ROLE, a) {
        NodeDecision::Allow(format!("Node: ClusterRole {NODE_ROLE}"))
    } else {
        NodeDecision::NoOpinion(String::new())
    }
}

/// Secrets, ConfigMaps, claims, volumes and tokens: one object by name, related to a pod of
/// the node.
fn graph(store: &Store, node: &str, a: &Attributes) -> NodeDecision {
    let readable = if a.subresource == "token" {
        a.verb == "create"
    } else {
        matches!(a.verb.as_str(), "get" | "list" | "watch")
    };
    if !readable || a.name.is_empty() {
        return NodeDecision::NoOpinion(format!(
            "can only {} individual resources of this type",
            if a.subresource == "token" {
                "create tokens for"
            } else {
                "read"
            }
        ));
    }
    let pods = pods_of(
        store,
        node,
        (a.resource != "persistentvolumes").then_some(a.namespace.as_str()),
    );
    let related = match a.resource.as_str() {
        "secrets" => pods.iter().any(|p| refs(p).secrets.contains(&a.name)),
        "configmaps" => pods.iter().any(|p| refs(p).config_maps.contains(&a.name)),
        "persistentvolumeclaims" => pods.iter().any(|p| refs(p).claims.contains(&a.name)),
        "persistentvolumes" => pods.iter().any(|p| {
            let ns = str_at(p, "/metadata/namespace");
            refs(p)
                .claims
                .iter()
                .any(|c| claim_volume(store, ns, c).as_deref() == Some(a.name.as_str()))
        }),
        "serviceaccounts" => pods.iter().any(|p| {
            let account = str_at(p, "/spec/serviceAccountName");
            let account = if account.is_empty() {
                "default"
            } else {
                account
            };
            account == a.name
        }),
        _ => false,
    };
    if related {
        NodeDecision::Allow(format!("Node: a pod on node '{node}' refers to it"))
    } else {
        no_relationship(node)
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn read(store: &Store, key: &str) -> Option<Value> {
    let kv = store.get(key).ok()??;
    serde_json::from_slice(&kv.value).ok()
}

fn pod_node(store: &Store, namespace: &str, name: &str) -> Option<String> {
    let pod = read(store, &format!("{PODS}{namespace}/{name}"))?;
    Some(str_at(&pod, "/spec/nodeName").to_string())
}

fn claim_volume(store: &Store, namespace: &str, claim: &str) -> Option<String> {
    let pvc = read(store, &format!("{CLAIMS}{namespace}/{claim}"))?;
    Some(str_at(&pvc, "/spec/volumeName").to_string()).filter(|v| !v.is_empty())
}

/// The pods bound to `node`, in one namespace or all.
fn pods_of(store: &Store, node: &str, namespace: Option<&str>) -> Vec<Value> {
    let prefix = match namespace {
        Some(ns) => format!("{PODS}{ns}/"),
        None => PODS.to_string(),
    };
    let Ok((kvs, _)) = store.list(&prefix) else {
        return Vec::new();
    };
    kvs.iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|p| str_at(p, "/spec/nodeName") == node)
        .collect()
}

/// What one pod refers to by name in its own namespace.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: Vec<String>,
    pub config_maps: Vec<String>,
    pub claims: Vec<String>,
}

pub fn refs(pod: &Value) -> PodRefs {
    let mut r = PodRefs::default();
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let name = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let items = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for s in items(&spec, "imagePullSecrets") {
        r.secrets.extend(name(&s, "/name"));
    }
    for c in ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| items(&spec, k))
    {
        for e in items(&c, "env") {
            r.secrets.extend(name(&e, "/valueFrom/secretKeyRef/name"));
            r.config_maps
                .extend(name(&e, "/valueFrom/configMapKeyRef/name"));
        }
        for e in items(&c, "envFrom") {
            r.secrets.extend(name(&e, "/secretRef/name"));
            r.config_maps.extend(name(&e, "/configMapRef/name"));
        }
    }
    let pod_name = str_at(pod, "/metadata/name");
    for v in items(&spec, "volumes") {
        r.secrets.extend(name(&v, "/secret/secretName"));
        r.config_maps.extend(name(&v, "/configMap/name"));
        r.claims
            .extend(name(&v, "/persistentVolumeClaim/claimName"));
        r.secrets.extend(name(&v, "/csi/nodePublishSecretRef/name"));
        if v.get("ephemeral").is_some()
            && let Some(vol) = name(&v, "/name")
        {
            r.claims.push(format!("{pod_name}-{vol}"));
        }
        for source in items(&v.get("projected").cloned().unwrap_or_default(), "sources") {
            r.secrets.extend(name(&source, "/secret/name"));
            r.config_maps.extend(name(&source, "/configMap/name"));
        }
    }
    r
}

/// NodeRestriction on creates and updates: a node makes and changes only its own Node and
/// Lease, and creates only mirror pods bound to itself.
pub fn admit(
    user: &super::User,
    plural: &str,
    group: &str,
    obj: &Value,
    creating: bool,
) -> Result<(), ApiError> {
    let Some(node) = node_of(&user.name, &user.groups) else {
        return Ok(());
    };
    let name = str_at(obj, "/metadata/name");
    let refuse =
        |qualified: &str, why: String| Err(super::forbidden_status(group, qualified, name, &why));
    match (group, plural) {
        ("", "nodes") if name != node => refuse(
            "nodes",
            format!("node {node:?} is not allowed to modify node {name:?}"),
        ),
        ("coordination.k8s.io", "leases")
            if str_at(obj, "/metadata/namespace") == LEASE_NAMESPACE && name != node =>
        {
            refuse(
                "leases",
                "can only access node lease with the same name as the requesting node".into(),
            )
        }
        ("", "pods")
            if creating
                && obj
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(MIRROR))
                    .is_none() =>
        {
            refuse(
                "pods",
                format!(
                    "pod does not have {MIRROR:?} annotation, node {node:?} can only create mirror pods"
                ),
            )
        }
        ("", "pods") if creating && str_at(obj, "/spec/nodeName") != node => refuse(
            "pods",
            format!("node {node:?} can only create pods with spec.nodeName set to itself"),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pods_references_are_what_its_node_may_read() {
        let pod = json!({"metadata": {"name": "web", "namespace": "app"}, "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "configMap": {"name": "vol-cm"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}},
                                                         {"configMap": {"name": "proj-cm"}}]}}]}});
        let r = refs(&pod);
        assert_eq!(
            r.secrets,
            [
                "pull",
                "env-secret",
                "from-secret",
                "vol-secret",
                "proj-secret"
            ]
        );
        assert_eq!(
            r.config_maps,
            ["env-cm", "from-cm", "init-cm", "vol-cm", "proj-cm"]
        );
        assert_eq!(r.claims, ["data", "web-scratch"]);
    }

    #[test]
    fn only_node_users_in_the_nodes_group_are_nodes() {
        let nodes = vec![NODES_GROUP.to_string()];
        assert_eq!(node_of("system:node:w1", &nodes), Some("w1"));
        assert_eq!(node_of("system:node:w1", &[]), None);
        assert_eq!(node_of("system:node:", &nodes), None);
        assert_eq!(node_of("jane", &nodes), None);
    }

    #[test]
    fn nodes_create_only_their_own_node_and_lease_and_no_pods() {
        let user = super::super::User {
            name: "system:node:w1".into(),
            groups: vec![NODES_GROUP.into()],
            ..Default::default()
        };
        let own = json!({"metadata": {"name": "w1"}});
        let other = json!({"metadata": {"name": "w2"}});
        assert!(admit(&user, "nodes", "", &own, true).is_ok());
        let e = admit(&user, "nodes", "", &other, false).expect_err("another node");
        assert_eq!(
            e.message,
            r#"nodes "w2" is forbidden: node "w1" is not allowed to modify node "w2""#
        );
        let lease = json!({"metadata": {"name": "w2", "namespace": "kube-node-lease"}});
        assert!(admit(&user, "leases", "coordination.k8s.io", &lease, true).is_err());
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}});
        assert!(
            admit(&user, "pods", "", &pod, false).is_ok(),
            "status updates"
        );
        let e = admit(&user, "pods", "", &pod, true).expect_err("no pods");
        assert_eq!(
            e.message,
            r#"pods "p" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "w1" can only create mirror pods"#
        );
        let jane = super::super::User {
            name: "jane".into(),
            groups: vec![],
            ..Default::default()
        };
        assert!(admit(&jane, "nodes", "", &other, true).is_ok());
    }
}
