//! The roles and bindings Kubernetes creates at start (its bootstrap policy), plus the ones
//! this cluster's own components run under, reconciled each time the API server starts: missing
//! objects are created; existing ones gain missing rules, subjects, labels and annotations
//! unless annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::controller_roles;
use super::rbac::Rule;
use crate::apiserver::{kinds, object, resources};
use crate::store::{Store, StoreError};

pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];

pub(super) fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Rule {
        verbs: own(verbs),
        api_groups: own(groups),
        resources: own(resources),
        ..Rule::default()
    }
}

pub(super) fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Rule {
    Rule {
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..r(verbs, groups, resources)
    }
}

fn urls(verbs: &[&str], paths: &[&str]) -> Rule {
    Rule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        non_resource_urls: paths.iter().map(|s| s.to_string()).collect(),
        ..Rule::default()
    }
}

pub(super) struct ClusterRole {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    /// Label selectors (one label each) for an aggregated role; its rules are the aggregation
    /// controller's to write.
    aggregate: &'static [&'static str],
    rules: Vec<Rule>,
}

pub(super) fn role(name: &'static str, rules: Vec<Rule>) -> ClusterRole {
    ClusterRole {
        name,
        labels: &[],
        aggregate: &[],
        rules,
    }
}

/// The read rules of the `view` role, from Kubernetes' bootstrap policy.
fn view_rules() -> Vec<Rule> {
    vec![
        r(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        r(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        r(READ, &[""], &["namespaces"]),
        r(READ, &["discovery.k8s.io"], &["endpointslices"]),
        r(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
        ),
        r(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        r(
            READ,
            &["batch"],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        r(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        r(
            READ,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

fn edit_rules() -> Vec<Rule> {
    vec![
        r(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        r(&["impersonate"], &[""], &["serviceaccounts"]),
        r(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        r(&["create"], &[""], &["pods/eviction"]),
        r(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        r(&["create"], &[""], &["serviceaccounts/token"]),
        r(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        r(WRITE, &["batch"], &["jobs", "cronjobs"]),
        r(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(WRITE, &["policy"], &["poddisruptionbudgets"]),
        r(
            WRITE,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses"],
        ),
        r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

fn node_rules() -> Vec<Rule> {
    vec![
        r(
            &["create", "delete"],
            &["authentication.k8s.io"],
            &["tokenreviews"],
        ),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        r(READ, &[""], &["services"]),
        r(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        r(&["patch", "update"], &[""], &["nodes/status"]),
        r(&["patch", "update"], &[""], &["nodes"]),
        r(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        r(READ, &[""], &["pods"]),
        r(&["create", "delete"], &[""], &["pods"]),
        r(&["patch", "update"], &[""], &["pods/status"]),
        r(&["create"], &[""], &["pods/eviction"]),
        r(READ, &[""], &["configmaps", "secrets"]),
        r(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["get"], &[""], &["endpoints"]),
        r(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        r(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        r(&["create"], &[""], &["serviceaccounts/token"]),
        r(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        r(READ, &["storage.k8s.io"], &["csidrivers"]),
        r(READ_WRITE, &["storage.k8s.io"], &["csinodes"]),
        r(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

fn cluster_roles() -> Vec<ClusterRole> {
    let all = &["*"];
    vec![
        role("cluster-admin", vec![r(all, all, all), urls(all, all)]),
        role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
            ],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        ClusterRole {
            name: "admin",
            labels: &[],
            aggregate: &["rbac.authorization.k8s.io/aggregate-to-admin"],
            rules: vec![],
        },
        ClusterRole {
            name: "edit",
            labels: &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            aggregate: &["rbac.authorization.k8s.io/aggregate-to-edit"],
            rules: vec![],
        },
        ClusterRole {
            name: "view",
            labels: &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            aggregate: &["rbac.authorization.k8s.io/aggregate-to-view"],
            rules: vec![],
        },
        ClusterRole {
            name: "system:aggregate-to-admin",
            labels: &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            aggregate: &[],
            rules: vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        },
        ClusterRole {
            name: "system:aggregate-to-edit",
            labels: &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            aggregate: &[],
            rules: edit_rules(),
        },
        ClusterRole {
            name: "system:aggregate-to-view",
            labels: &[("rbac.authorization.k8s.io/aggregate-to-view", "true")],
            aggregate: &[],
            rules: view_rules(),
        },
        role(
            "system:heapster",
            vec![
                r(READ, &[""], &["events", "pods", "nodes", "namespaces"]),
                r(READ, &["extensions"], &["deployments"]),
            ],
        ),
        role("system:node", node_rules()),
        role(
            "system:node-proxier",
            vec![
                r(&["list", "watch"], &[""], &["services", "endpoints"]),
                r(&["get", "list", "watch"], &[""], &["nodes"]),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:auth-delegator",
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:kube-aggregator",
            vec![r(READ, &[""], &["endpoints", "services"])],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                r(&["create"], &[""], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[""], &["secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                r(&["update"], &[""], &["secrets", "serviceaccounts"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            vec![
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                r(READ, &[""], &["nodes"]),
                // Preemption deletes the victims.
                r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                r(&["create"], &[""], &["pods/binding", "bindings"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(
                    READ,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "services",
                        "namespaces",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                ),
                r(
                    READ,
                    &["apps", "extensions"],
                    &["replicasets", "statefulsets"],
                ),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "storageclasses",
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                    ],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:volume-scheduler",
            vec![
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
            ],
        ),
        role(
            "system:kube-dns",
            vec![r(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        // The built-in Ingress controller: it reads what routes need and its ConfigMap, writes
        // Ingress status, creates the default IngressClass, its own LoadBalancer Service,
        // Endpoints and ConfigMap.
        role(
            "system:kcluster:ingress",
            vec![
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                ),
                r(
                    &["patch", "update"],
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                ),
                r(&["create"], &["networking.k8s.io"], &["ingressclasses"]),
                r(READ, &[""], &["secrets"]),
                // Its settings, `kube-system/ingress-nginx-controller`, created empty.
                r(&["get", "list", "watch", "create"], &[""], &["configmaps"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    &["get", "list", "watch", "create", "patch", "update"],
                    &[""],
                    &["services", "endpoints"],
                ),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
        // The cluster DNS settings: the kube-system/kube-dns Service and its Endpoints and
        // EndpointSlice, listing the Nodes that serve DNS.
        role(
            "system:kcluster:dns",
            vec![
                r(READ, &[""], &["nodes"]),
                r(&["get", "create"], &[""], &["services"]),
                r(&["get", "create", "update"], &[""], &["endpoints"]),
                r(
                    &["get", "create", "update"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        // What the node agent runs beside its kubelet: the Service proxy, the cluster DNS
        // server, the NetworkPolicy enforcer and the local-path volume cleaner.
        role(
            "system:kcluster:node-services",
            vec![
                r(
                    READ,
                    &[""],
                    &["services", "endpoints", "namespaces", "pods", "nodes"],
                ),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(READ, &["networking.k8s.io"], &["networkpolicies"]),
                r(READ, &[""], &["persistentvolumes"]),
            ],
        ),
        // The host-port publisher: it watches Services and writes their load-balancer status
        // and its host-ports annotation; it reads Nodes to know where to forward.
        role(
            "system:kcluster:ports",
            vec![
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["services"],
                ),
                r(&["patch", "update"], &[""], &["services/status"]),
                r(READ, &[""], &["nodes"]),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
    ]
}

/// (name, role, users, groups) of the ClusterRoleBindings.
const CLUSTER_ROLE_BINDINGS: &[(&str, &str, &[&str], &[&str])] = &[
    ("cluster-admin", "cluster-admin", &[], &["system:masters"]),
    (
        "system:discovery",
        "system:discovery",
        &[],
        &["system:authenticated"],
    ),
    (
        "system:basic-user",
        "system:basic-user",
        &[],
        &["system:authenticated"],
    ),
    (
        "system:public-info-viewer",
        "system:public-info-viewer",
        &[],
        &["system:authenticated", "system:unauthenticated"],
    ),
    (
        "system:monitoring",
        "system:monitoring",
        &[],
        &["system:monitoring"],
    ),
    (
        "system:node-proxier",
        "system:node-proxier",
        &["system:kube-proxy"],
        &[],
    ),
    (
        "system:kube-controller-manager",
        "system:kube-controller-manager",
        &["system:kube-controller-manager"],
        &[],
    ),
    (
        "system:kube-scheduler",
        "system:kube-scheduler",
        &["system:kube-scheduler"],
        &[],
    ),
    (
        "system:volume-scheduler",
        "system:volume-scheduler",
        &["system:kube-scheduler"],
        &[],
    ),
    (
        "system:kcluster:ingress",
        "system:kcluster:ingress",
        &["system:kcluster-ingress"],
        &[],
    ),
    (
        "system:kcluster:dns",
        "system:kcluster:dns",
        &["system:kcluster-dns"],
        &[],
    ),
    // Nodes hold the node role through the Node authorizer, limited to their own objects; the
    // binding stays empty, as Kubernetes leaves it.
    ("system:node", "system:node", &[], &[]),
    (
        "system:kcluster:node-proxier",
        "system:node-proxier",
        &[],
        &["system:nodes"],
    ),
    (
        "system:kcluster:node-services",
        "system:kcluster:node-services",
        &[],
        &["system:nodes"],
    ),
    (
        "system:kcluster:ports",
        "system:kcluster:ports",
        &["system:kcluster-ports"],
        &[],
    ),
];

fn cluster_role_object(role: &ClusterRole) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert(BOOTSTRAPPING.into(), "rbac-defaults".into());
    for (k, v) in role.labels {
        labels.insert((*k).into(), (*v).into());
    }
    let mut obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": role.name, "labels": labels,
                     "annotations": {AUTOUPDATE: "true"}},
        "rules": role.rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });
    if !role.aggregate.is_empty() {
        obj["aggregationRule"] = json!({"clusterRoleSelectors": role.aggregate.iter()
            .map(|l| json!({"matchLabels": {*l: "true"}})).collect::<Vec<_>>()});
    }
    obj
}

fn binding_object(name: &str, role: &str, users: &[&str], groups: &[&str]) -> Value {
    let subjects: Vec<Value> =
        users
            .iter()
            .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
            .chain(groups.iter().map(
                |g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}),
            ))
            .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {BOOTSTRAPPING: "rbac-defaults"},
                     "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Adds what `want` has and `current` lacks: labels, annotations, and the elements of the
/// list `field` (rules or subjects). None when nothing is missing.
fn reconciled(current: &Value, want: &Value, field: &str) -> Option<Value> {
    let mut next = current.clone();
    let mut changed = false;
    for map in ["labels", "annotations"] {
        if let Some(wanted) = want
            .pointer(&format!("/metadata/{map}"))
            .and_then(Value::as_object)
        {
            let target = next["metadata"]
                .as_object_mut()?
                .entry(map)
                .or_insert_with(|| json!({}));
            let Some(target) = target.as_object_mut() else {
                continue;
            };
            for (k, v) in wanted {
                if !target.contains_key(k) {
                    target.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    if let Some(wanted) = want.get(field).and_then(Value::as_array) {
        let list = next
            .as_object_mut()?
            .entry(field)
            .or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            for item in wanted {
                let present = if field == "rules" {
                    let rule = Rule::from_json(item);
                    list.iter().any(|have| Rule::from_json(have) == rule)
                } else {
                    list.contains(item)
                };
                if !present {
                    list.push(item.clone());
                    changed = true;
                }
            }
        }
    }
    if want.get("aggregationRule").is_some() && current.get("aggregationRule").is_none() {
        next["aggregationRule"] = want["aggregationRule"].clone();
        changed = true;
    }
    changed.then_some(next)
}

async fn ensure(store: &Store, plural: &str, want: Value, field: &str) -> Result<()> {
    let def = resources::find("rbac.authorization.k8s.io", "v1", plural)
        .with_context(|| format!("{plural} are not served"))?;
    let name = want
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let key = def.key(None, &name);
    for _ in 0..5 {
        match store.get(&key).context("cannot read the store")? {
            Some(kv) => {
                let current: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let autoupdate = current
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(AUTOUPDATE))
                    .and_then(Value::as_str);
                if autoupdate == Some("false") {
                    return Ok(());
                }
                let Some(mut next) = reconciled(&current, &want, field) else {
                    return Ok(());
                };
                kinds::default(def, &mut next);
                let bytes = object::to_stored(&next).map_err(|e| anyhow::anyhow!(e.message))?;
                match store.update(&key, bytes, Some(kv.mod_revision)).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e).with_context(|| format!("cannot update {key}")),
                }
            }
            None => {
                let mut obj = want.clone();
                obj["metadata"]["uid"] = json!(object::new_uid());
                obj["metadata"]["creationTimestamp"] = json!(object::now_rfc3339());
                kinds::default(def, &mut obj);
                let bytes = object::to_stored(&obj).map_err(|e| anyhow::anyhow!(e.message))?;
                match store.create(&key, bytes).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e).with_context(|| format!("cannot create {key}")),
                }
            }
        }
    }
    Ok(())
}

/// Clusters made before the Node authorizer bound the node role to the whole `system:nodes`
/// group, which lets any node read every Secret: that subject is taken out again.
async fn unbind_node_group(store: &Store) -> Result<()> {
    let def = resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .context("clusterrolebindings are not served")?;
    let key = def.key(None, "system:node");
    for _ in 0..5 {
        let Some(kv) = store.get(&key).context("cannot read the store")? else {
            return Ok(());
        };
        let mut binding: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        let Some(subjects) = binding.get_mut("subjects").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let before = subjects.len();
        subjects.retain(|s| !(s["kind"] == "Group" && s["name"] == super::node::NODES_GROUP));
        if subjects.len() == before {
            return Ok(());
        }
        let bytes = object::to_stored(&binding).map_err(|e| anyhow::anyhow!(e.message))?;
        match store.update(&key, bytes, Some(kv.mod_revision)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot update {key}")),
        }
    }
    Ok(())
}

/// Creates or completes the bootstrap ClusterRoles and ClusterRoleBindings.
pub async fn reconcile(store: &Store) -> Result<()> {
    unbind_node_group(store).await?;
    for role in cluster_roles() {
        ensure(store, "clusterroles", cluster_role_object(&role), "rules").await?;
    }
    for (name, role, users, groups) in CLUSTER_ROLE_BINDINGS {
        ensure(
            store,
            "clusterrolebindings",
            binding_object(name, role, users, groups),
            "subjects",
        )
        .await?;
    }
    for role in controller_roles::controller_roles() {
        ensure(store, "clusterroles", cluster_role_object(&role), "rules").await?;
        if let Some(account) = controller_roles::account_of(role.name) {
            let mut binding = binding_object(role.name, role.name, &[], &[]);
            binding["subjects"] = json!([{"kind": "ServiceAccount", "name": account,
                                          "namespace": controller_roles::NAMESPACE}]);
            ensure(store, "clusterrolebindings", binding, "subjects").await?;
        }
    }
    retire(store, "clusterrolebindings", RETIRED).await?;
    retire(store, "clusterroles", RETIRED).await?;
    Ok(())
}

/// Before each controller wrote as its own service account, one role of every resource verb
/// was bound to `system:kube-controller-manager`; a cluster made then loses it at start, so
/// that identity holds only Kubernetes' role again.
const RETIRED: &str = "system:kcluster:controllers";

async fn retire(store: &Store, plural: &str, name: &str) -> Result<()> {
    let def = resources::find("rbac.authorization.k8s.io", "v1", plural)
        .with_context(|| format!("{plural} are not served"))?;
    let key = def.key(None, name);
    if store.get(&key).context("cannot read the store")?.is_some() {
        match store.delete(&key, None).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {key}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_the_rest() {
        let role = cluster_roles()
            .into_iter()
            .find(|r| r.name == "system:basic-user")
            .expect("a bootstrap role");
        let want = cluster_role_object(&role);
        assert_eq!(reconciled(&want, &want, "rules"), None);
        // A user's extra rule and label stay; the missing bootstrap rule comes back.
        let mut current = want.clone();
        current["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                                  want["rules"][0].clone()]);
        current["metadata"]["labels"]["team"] = json!("a");
        let next = reconciled(&current, &want, "rules").expect("a missing rule");
        assert_eq!(next["rules"].as_array().map(Vec::len), Some(3));
        assert_eq!(next["rules"][0]["resources"], json!(["pods"]));
        assert_eq!(next["metadata"]["labels"]["team"], "a");
    }

    #[test]
    fn aggregated_roles_start_empty_with_their_selectors() {
        let view = cluster_roles()
            .into_iter()
            .find(|r| r.name == "view")
            .expect("view");
        let obj = cluster_role_object(&view);
        assert_eq!(obj["rules"], json!([]));
        assert_eq!(
            obj["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        assert_eq!(
            obj["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
    }
}
