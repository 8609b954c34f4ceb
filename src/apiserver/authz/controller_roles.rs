//! Kubernetes' `system:controller:<name>` ClusterRoles, each bound to the service account
//! `kube-system/<name>` that kube-controller-manager's controller of that name writes as
//! (`--use-service-account-credentials`). Kubernetes creates the whole set at start whether or
//! not a controller runs, and so does this API server; the controllers this cluster runs use
//! the accounts of the same names (see `controllers::credentials`).

use super::bootstrap::{ClusterRole, named, r, role};
use super::rbac::Rule;

const READ: &[&str] = &["get", "list", "watch"];
const LIST_WATCH: &[&str] = &["list", "watch"];
const UPDATE: &[&str] = &["update"];
const PATCH_UPDATE: &[&str] = &["patch", "update"];
const CORE: &[&str] = &[""];
const APPS: &[&str] = &["apps", "extensions"];

/// The events rule every controller role ends with.
fn events() -> Rule {
    r(
        &["create", "patch", "update"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

/// The namespace every controller's account lives in.
pub const NAMESPACE: &str = "kube-system";

pub(super) fn controller_roles() -> Vec<ClusterRole> {
    let any = &["*"];
    vec![
        role(
            "system:controller:attachdetach-controller",
            vec![
                r(
                    LIST_WATCH,
                    CORE,
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(READ, CORE, &["nodes"]),
                r(PATCH_UPDATE, CORE, &["nodes/status"]),
                r(LIST_WATCH, CORE, &["pods"]),
                events(),
                r(
                    &["create", "delete", "get", "list", "watch"],
                    &["storage.k8s.io"],
                    &["volumeattachments"],
                ),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(READ, &["storage.k8s.io"], &["csinodes"]),
            ],
        ),
        role(
            "system:controller:certificate-controller",
            vec![
                r(
                    &["delete", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                r(
                    UPDATE,
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
                named(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    &["sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:clusterrole-aggregation-controller",
            vec![r(
                &["escalate", "get", "list", "patch", "update", "watch"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            )],
        ),
        role(
            "system:controller:cronjob-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    &["batch"],
                    &["cronjobs"],
                ),
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["batch"],
                    &["jobs"],
                ),
                r(UPDATE, &["batch"], &["cronjobs/status"]),
                r(UPDATE, &["batch"], &["cronjobs/finalizers"]),
                r(&["delete", "list", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        role(
            "system:controller:daemon-set-controller",
            vec![
                r(READ, APPS, &["daemonsets"]),
                r(UPDATE, APPS, &["daemonsets/status"]),
                r(UPDATE, APPS, &["daemonsets/finalizers"]),
                r(LIST_WATCH, CORE, &["nodes"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                r(&["create"], CORE, &["pods/binding"]),
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:deployment-controller",
            vec![
                r(&["get", "list", "update", "watch"], APPS, &["deployments"]),
                r(UPDATE, APPS, &["deployments/status"]),
                r(UPDATE, APPS, &["deployments/finalizers"]),
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    APPS,
                    &["replicasets"],
                ),
                r(&["get", "list", "update", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        role(
            "system:controller:device-taint-eviction-controller",
            vec![
                r(&["delete", "get", "list", "watch"], CORE, &["pods"]),
                r(PATCH_UPDATE, CORE, &["pods/status"]),
                r(READ, &["resource.k8s.io"], &["resourceclaims"]),
                r(READ, &["resource.k8s.io"], &["resourceslices"]),
                r(READ, &["resource.k8s.io"], &["deviceclasses"]),
                events(),
            ],
        ),
        role(
            "system:controller:disruption-controller",
            vec![
                r(READ, APPS, &["deployments"]),
                r(READ, APPS, &["replicasets"]),
                r(READ, CORE, &["replicationcontrollers"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(UPDATE, &["policy"], &["poddisruptionbudgets/status"]),
                r(PATCH_UPDATE, CORE, &["pods/status"]),
                r(&["get"], any, &["*/scale"]),
                events(),
            ],
        ),
        role(
            "system:controller:endpoint-controller",
            vec![
                r(READ, CORE, &["pods", "services"]),
                r(
                    &["create", "delete", "get", "list", "update", "watch"],
                    CORE,
                    &["endpoints"],
                ),
                r(&["create"], CORE, &["endpoints/restricted"]),
                events(),
            ],
        ),
        role(
            "system:controller:endpointslice-controller",
            vec![
                r(READ, CORE, &["nodes", "pods", "services"]),
                r(UPDATE, CORE, &["services/finalizers"]),
                r(
                    &["create", "delete", "get", "list", "update", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:endpointslicemirroring-controller",
            vec![
                r(READ, CORE, &["endpoints", "services"]),
                r(UPDATE, CORE, &["services/finalizers"]),
                r(UPDATE, CORE, &["endpoints/finalizers"]),
                r(
                    &["create", "delete", "get", "list", "update", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:ephemeral-volume-controller",
            vec![
                r(READ, CORE, &["pods"]),
                r(UPDATE, CORE, &["pods/finalizers"]),
                r(
                    &["create", "get", "list", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:expand-controller",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                r(PATCH_UPDATE, CORE, &["persistentvolumeclaims/status"]),
                r(READ, CORE, &["persistentvolumeclaims"]),
                events(),
            ],
        ),
        role(
            "system:controller:generic-garbage-collector",
            vec![
                r(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    any,
                    any,
                ),
                events(),
            ],
        ),
        role(
            "system:controller:horizontal-pod-autoscaler",
            vec![
                r(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(
                    UPDATE,
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                r(&["get", "update"], any, &["*/scale"]),
                r(LIST_WATCH, CORE, &["pods"]),
                r(LIST_WATCH, &["metrics.k8s.io"], &["pods"]),
                r(READ, &["custom.metrics.k8s.io"], any),
                r(READ, &["external.metrics.k8s.io"], any),
                events(),
            ],
        ),
        role(
            "system:controller:job-controller",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &["batch"],
                    &["jobs"],
                ),
                r(UPDATE, &["batch"], &["jobs/status"]),
                r(UPDATE, &["batch"], &["jobs/finalizers"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:legacy-service-account-token-cleaner",
            vec![
                named(
                    &["get"],
                    CORE,
                    &["configmaps"],
                    &["kube-apiserver-legacy-service-account-token-tracking"],
                ),
                r(&["delete", "patch"], CORE, &["secrets"]),
            ],
        ),
        role(
            "system:controller:namespace-controller",
            vec![
                r(&["delete", "get", "list", "watch"], CORE, &["namespaces"]),
                r(UPDATE, CORE, &["namespaces/finalize", "namespaces/status"]),
                r(
                    &["delete", "deletecollection", "get", "list", "watch"],
                    any,
                    any,
                ),
            ],
        ),
        role(
            "system:controller:node-controller",
            vec![
                r(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    CORE,
                    &["nodes"],
                ),
                r(PATCH_UPDATE, CORE, &["nodes/status"]),
                r(PATCH_UPDATE, CORE, &["pods/status"]),
                r(&["delete", "get", "list", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        role(
            "system:controller:persistent-volume-binder",
            vec![
                r(
                    &["create", "delete", "get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                r(UPDATE, CORE, &["persistentvolumes/status"]),
                r(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(UPDATE, CORE, &["persistentvolumeclaims/status"]),
                r(
                    &["create", "delete", "get", "list", "watch"],
                    CORE,
                    &["pods"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(LIST_WATCH, CORE, &["nodes"]),
                events(),
                r(&["watch"], CORE, &["events"]),
            ],
        ),
        role(
            "system:controller:pod-garbage-collector",
            vec![
                r(&["delete", "list", "watch"], CORE, &["pods"]),
                r(READ, CORE, &["nodes"]),
                r(&["patch"], CORE, &["pods/status"]),
            ],
        ),
        role(
            "system:controller:pv-protection-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:pvc-protection-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(UPDATE, CORE, &["persistentvolumeclaims/status"]),
                r(READ, CORE, &["pods"]),
                events(),
            ],
        ),
        role(
            "system:controller:replicaset-controller",
            vec![
                r(&["get", "list", "update", "watch"], APPS, &["replicasets"]),
                r(UPDATE, APPS, &["replicasets/status"]),
                r(UPDATE, APPS, &["replicasets/finalizers"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:replication-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["replicationcontrollers"],
                ),
                r(UPDATE, CORE, &["replicationcontrollers/status"]),
                r(UPDATE, CORE, &["replicationcontrollers/finalizers"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:resource-claim-controller",
            vec![
                r(READ, CORE, &["pods"]),
                r(UPDATE, CORE, &["pods/finalizers"]),
                r(
                    &["create", "delete", "get", "list", "watch"],
                    &["resource.k8s.io"],
                    &["resourceclaims"],
                ),
                r(
                    PATCH_UPDATE,
                    &["resource.k8s.io"],
                    &["resourceclaims", "resourceclaims/status"],
                ),
                r(PATCH_UPDATE, CORE, &["pods/status"]),
                events(),
                r(
                    PATCH_UPDATE,
                    &["resource.k8s.io"],
                    &["resourceclaims/binding"],
                ),
            ],
        ),
        role(
            "system:controller:resourcequota-controller",
            vec![
                r(LIST_WATCH, any, any),
                r(UPDATE, CORE, &["resourcequotas/status"]),
                events(),
            ],
        ),
        role(
            "system:controller:root-ca-cert-publisher",
            vec![r(&["create", "update"], CORE, &["configmaps"]), events()],
        ),
        role(
            "system:controller:route-controller",
            vec![
                r(LIST_WATCH, CORE, &["nodes"]),
                r(&["patch"], CORE, &["nodes/status"]),
                events(),
            ],
        ),
        role(
            "system:controller:selinux-warning-controller",
            vec![
                events(),
                r(READ, CORE, &["persistentvolumes"]),
                r(READ, CORE, &["persistentvolumeclaims"]),
                r(READ, CORE, &["pods"]),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
            ],
        ),
        role(
            "system:controller:service-account-controller",
            vec![r(&["create"], CORE, &["serviceaccounts"]), events()],
        ),
        role(
            "system:controller:service-cidrs-controller",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &["networking.k8s.io"],
                    &["servicecidrs"],
                ),
                r(
                    PATCH_UPDATE,
                    &["networking.k8s.io"],
                    &["servicecidrs/finalizers"],
                ),
                r(
                    PATCH_UPDATE,
                    &["networking.k8s.io"],
                    &["servicecidrs/status"],
                ),
                r(READ, &["networking.k8s.io"], &["ipaddresses"]),
                events(),
            ],
        ),
        role(
            "system:controller:service-controller",
            vec![
                r(READ, CORE, &["services"]),
                r(PATCH_UPDATE, CORE, &["services/status"]),
                r(LIST_WATCH, CORE, &["nodes"]),
                events(),
            ],
        ),
        role(
            "system:controller:statefulset-controller",
            vec![
                r(LIST_WATCH, CORE, &["pods"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(UPDATE, &["apps"], &["statefulsets/status"]),
                r(UPDATE, &["apps"], &["statefulsets/finalizers"]),
                r(
                    &["create", "delete", "get", "patch", "update"],
                    CORE,
                    &["pods"],
                ),
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                r(
                    &["create", "get", "list", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(&["delete", "update"], CORE, &["persistentvolumeclaims"]),
                r(UPDATE, CORE, &["pods/finalizers"]),
                events(),
            ],
        ),
        role(
            "system:controller:ttl-after-finished-controller",
            vec![
                r(&["delete", "get", "list", "watch"], &["batch"], &["jobs"]),
                events(),
            ],
        ),
        role(
            "system:controller:ttl-controller",
            vec![
                r(&["list", "patch", "update", "watch"], CORE, &["nodes"]),
                events(),
            ],
        ),
        role(
            "system:controller:validatingadmissionpolicy-status-controller",
            vec![
                r(
                    READ,
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies"],
                ),
                r(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                events(),
            ],
        ),
        role(
            "system:controller:volumeattributesclass-protection-controller",
            vec![
                r(READ, CORE, &["persistentvolumeclaims"]),
                r(READ, CORE, &["persistentvolumes"]),
                r(
                    &["get", "list", "update", "watch"],
                    &["storage.k8s.io"],
                    &["volumeattributesclasses"],
                ),
                events(),
            ],
        ),
        // Not Kubernetes': the local-path provisioner, which k3s also runs under an account
        // and role of its own. It creates the default StorageClass, provisions and releases
        // PersistentVolumes, and binds the claims it provisions.
        role(
            "system:kcluster:local-path-provisioner",
            vec![
                r(
                    &["create", "get", "list", "watch"],
                    &["storage.k8s.io"],
                    &["storageclasses"],
                ),
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    CORE,
                    &["persistentvolumes"],
                ),
                r(PATCH_UPDATE, CORE, &["persistentvolumes/status"]),
                r(
                    &["get", "list", "patch", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(PATCH_UPDATE, CORE, &["persistentvolumeclaims/status"]),
                r(READ, CORE, &["nodes"]),
                events(),
            ],
        ),
    ]
}

/// The account of a controller role: `system:controller:<name>` belongs to `kube-system/<name>`;
/// the local-path provisioner's to `kube-system/local-path-provisioner-service-account`, k3s'
/// name for it.
pub fn account_of(role: &str) -> Option<&str> {
    if let Some(name) = role.strip_prefix("system:controller:") {
        return Some(name);
    }
    (role == LOCAL_PATH_ROLE).then_some(LOCAL_PATH_ACCOUNT)
}

pub const LOCAL_PATH_ROLE: &str = "system:kcluster:local-path-provisioner";
pub const LOCAL_PATH_ACCOUNT: &str = "local-path-provisioner-service-account";
