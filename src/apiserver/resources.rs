//! The table of served resources. Discovery, routing, storage keys and printing all read it, so
//! serving a new kind starts with one entry here.

use super::table::Printer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

#[derive(Debug)]
pub struct ResourceDef {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub scope: Scope,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<name>/`: "status" (writes to the main resource then keep status,
    /// and vice versa), "scale", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy".
    pub subresources: &'static [&'static str],
    /// Whether a change of anything but metadata and status bumps metadata.generation.
    pub has_generation: bool,
    pub printer: Printer,
    /// Field selector labels accepted beyond metadata.name and metadata.namespace, with the JSON path each reads.
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// (group, version) of the entry whose form objects of this kind are stored in, when this
    /// entry serves another version of them. Both share one storage prefix; `kinds::convert`
    /// converts between them.
    pub stored_as: Option<(&'static str, &'static str)>,
    /// What a CustomResourceDefinition says of this resource (schema, printer columns, scale
    /// paths); None for the built-in kinds.
    pub custom: Option<&'static super::crd::Custom>,
}

/// A subresource as discovery advertises it: the kind its requests and answers carry, and the
/// verbs it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

const GET_UPDATE: &[&str] = &["get", "patch", "update"];
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceDef {
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// What discovery says of one of this resource's subresources, as Kubernetes serves it:
    /// `deployments/scale` answers with an autoscaling/v1 Scale, `pods/eviction` takes a
    /// policy/v1 Eviction, and so on.
    pub fn subresource(&self, name: &str) -> Option<Subresource> {
        let name: &'static str = self.subresources.iter().find(|s| **s == name)?;
        let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match name {
            "status" => (self.group, self.version, self.kind, GET_UPDATE),
            "scale" => ("autoscaling", "v1", "Scale", GET_UPDATE),
            "binding" => ("", "v1", "Binding", &["create"]),
            "eviction" => ("policy", "v1", "Eviction", &["create"]),
            "log" => ("", "v1", "Pod", &["get"]),
            "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
            "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
            "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
            "proxy" => {
                let kind = match self.kind {
                    "Pod" => "PodProxyOptions",
                    "Node" => "NodeProxyOptions",
                    _ => "ServiceProxyOptions",
                };
                ("", "v1", kind, PROXY_VERBS)
            }
            "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
            "finalize" => (self.group, self.version, self.kind, &["update"]),
            _ => (self.group, self.version, self.kind, GET_UPDATE),
        };
        Some(Subresource {
            name,
            group,
            version,
            kind,
            verbs,
        })
    }

    /// Storage key prefix for every object of this resource (all namespaces), shared by every
    /// version it is served at.
    pub fn key_prefix(&self) -> String {
        let group = self.stored_as.map(|(g, _)| g).unwrap_or(self.group);
        let group = if group.is_empty() { "core" } else { group };
        format!("/registry/{group}/{}/", self.plural)
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// Prefix for a list: one namespace, or all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }
}

const NO_FIELDS: &[(&str, &[&str])] = &[];

const POD_FIELDS: &[(&str, &[&str])] = &[
    ("spec.nodeName", &["spec", "nodeName"]),
    ("spec.restartPolicy", &["spec", "restartPolicy"]),
    ("spec.schedulerName", &["spec", "schedulerName"]),
    ("spec.serviceAccountName", &["spec", "serviceAccountName"]),
    ("spec.hostNetwork", &["spec", "hostNetwork"]),
    ("status.phase", &["status", "phase"]),
    ("status.podIP", &["status", "podIP"]),
    ("status.nominatedNodeName", &["status", "nominatedNodeName"]),
];

const EVENT_FIELDS: &[(&str, &[&str])] = &[
    ("involvedObject.kind", &["involvedObject", "kind"]),
    ("involvedObject.namespace", &["involvedObject", "namespace"]),
    ("involvedObject.name", &["involvedObject", "name"]),
    ("involvedObject.uid", &["involvedObject", "uid"]),
    (
        "involvedObject.apiVersion",
        &["involvedObject", "apiVersion"],
    ),
    (
        "involvedObject.resourceVersion",
        &["involvedObject", "resourceVersion"],
    ),
    ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
    ("reason", &["reason"]),
    ("reportingComponent", &["reportingComponent"]),
    ("source", &["source", "component"]),
    ("type", &["type"]),
];

const REPLICAS_FIELDS: &[(&str, &[&str])] = &[("status.replicas", &["status", "replicas"])];

macro_rules! resource {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $scope:ident,
     short: [$($short:expr),*], categories: [$($cat:expr),*], subresources: [$($sub:expr),*], generation: $generation:expr,
     printer: $printer:ident, fields: $fields:expr $(, stored_as: $stored:expr)?) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            scope: Scope::$scope,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            has_generation: $generation,
            printer: Printer::$printer,
            fields: $fields,
            stored_as: resource!(@stored $($stored)?),
            custom: None,
        }
    };
    (@stored) => { None };
    (@stored $stored:expr) => { Some($stored) };
}

/// Subresources of pods that stream or act rather than read and write the pod.
const POD_SUBRESOURCES: &[&str] = &[
    "status",
    "binding",
    "eviction",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
];

/// Every served resource. Within a group the preferred version comes first; an entry with
/// `stored_as` shares the storage of that version's entry and is converted on the way through.
pub static RESOURCES: &[ResourceDef] = &[
    // core/v1
    resource!("", "v1", "configmaps", "configmap", "ConfigMap", Namespaced,
        short: ["cm"], categories: [], subresources: [], generation: false,
        printer: ConfigMap, fields: NO_FIELDS),
    resource!("", "v1", "endpoints", "endpoints", "Endpoints", Namespaced,
        short: ["ep"], categories: [], subresources: [], generation: false,
        printer: Endpoints, fields: NO_FIELDS),
    resource!("", "v1", "events", "event", "Event", Namespaced,
        short: ["ev"], categories: [], subresources: [], generation: false,
        printer: Event, fields: EVENT_FIELDS),
    resource!("", "v1", "limitranges", "limitrange", "LimitRange", Namespaced,
        short: ["limits"], categories: [], subresources: [], generation: false,
        printer: Default, fields: NO_FIELDS),
    resource!("", "v1", "namespaces", "namespace", "Namespace", Cluster,
        short: ["ns"], categories: [], subresources: ["status", "finalize"], generation: false,
        printer: Namespace, fields: &[("status.phase", &["status", "phase"])]),
    resource!("", "v1", "nodes", "node", "Node", Cluster,
        short: ["no"], categories: [], subresources: ["status", "proxy"], generation: false,
        printer: Node, fields: &[("spec.unschedulable", &["spec", "unschedulable"])]),
    resource!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", Namespaced,
        short: ["pvc"], categories: [], subresources: ["status"], generation: false,
        printer: PersistentVolumeClaim, fields: NO_FIELDS),
    resource!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", Cluster,
        short: ["pv"], categories: [], subresources: ["status"], generation: false,
        printer: PersistentVolume, fields: NO_FIELDS),
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        scope: Scope::Namespaced,
        short_names: &["po"],
        categories: &["all"],
        subresources: POD_SUBRESOURCES,
        has_generation: false,
        printer: Printer::Pod,
        fields: POD_FIELDS,
        stored_as: None,
        custom: None,
    },
    resource!("", "v1", "podtemplates", "podtemplate", "PodTemplate", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: PodTemplate, fields: NO_FIELDS),
    resource!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", Namespaced,
        short: ["rc"], categories: ["all"], subresources: ["status", "scale"], generation: true,
        printer: ReplicationController, fields: REPLICAS_FIELDS),
    resource!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", Namespaced,
        short: ["quota"], categories: [], subresources: ["status"], generation: false,
        printer: ResourceQuota, fields: NO_FIELDS),
    resource!("", "v1", "secrets", "secret", "Secret", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: Secret, fields: &[("type", &["type"])]),
    resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", Namespaced,
        short: ["sa"], categories: [], subresources: ["token"], generation: false,
        printer: ServiceAccount, fields: NO_FIELDS),
    resource!("", "v1", "services", "service", "Service", Namespaced,
        short: ["svc"], categories: ["all"], subresources: ["status", "proxy"], generation: false,
        printer: Service, fields: &[("spec.clusterIP", &["spec", "clusterIP"]), ("spec.type", &["spec", "type"])]),
    // apiregistration.k8s.io/v1: one APIService per served group version (kept by
    // `kinds::bootstrap`), and those users register.
    resource!("apiregistration.k8s.io", "v1", "apiservices", "apiservice", "APIService", Cluster,
        short: [], categories: ["api-extensions"], subresources: ["status"], generation: false,
        printer: APIService, fields: NO_FIELDS),
    // admissionregistration.k8s.io/v1: the admission webhooks and policies (`webhooks`).
    resource!("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", "MutatingWebhookConfiguration", Cluster,
        short: [], categories: ["api-extensions"], subresources: [], generation: true,
        printer: WebhookConfiguration, fields: NO_FIELDS),
    resource!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "validatingadmissionpolicy", "ValidatingAdmissionPolicy", Cluster,
        short: [], categories: ["api-extensions"], subresources: ["status"], generation: true,
        printer: ValidatingAdmissionPolicy, fields: NO_FIELDS),
    resource!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", Cluster,
        short: [], categories: ["api-extensions"], subresources: [], generation: true,
        printer: ValidatingAdmissionPolicyBinding, fields: NO_FIELDS),
    resource!("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "validatingwebhookconfiguration", "ValidatingWebhookConfiguration", Cluster,
        short: [], categories: ["api-extensions"], subresources: [], generation: true,
        printer: WebhookConfiguration, fields: NO_FIELDS),
    // apiextensions.k8s.io/v1: the definitions of custom resources (`crd`).
    resource!("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", Cluster,
        short: ["crd", "crds"], categories: ["api-extensions"], subresources: ["status"], generation: true,
        printer: Default, fields: NO_FIELDS),
    // apps/v1
    resource!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: ControllerRevision, fields: NO_FIELDS),
    resource!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", Namespaced,
        short: ["ds"], categories: ["all"], subresources: ["status"], generation: true,
        printer: DaemonSet, fields: NO_FIELDS),
    resource!("apps", "v1", "deployments", "deployment", "Deployment", Namespaced,
        short: ["deploy"], categories: ["all"], subresources: ["status", "scale"], generation: true,
        printer: Deployment, fields: NO_FIELDS),
    resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", Namespaced,
        short: ["rs"], categories: ["all"], subresources: ["status", "scale"], generation: true,
        printer: ReplicaSet, fields: REPLICAS_FIELDS),
    resource!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", Namespaced,
        short: ["sts"], categories: ["all"], subresources: ["status", "scale"], generation: true,
        printer: StatefulSet, fields: NO_FIELDS),
    // autoscaling: v2 is stored and preferred; v1 is converted.
    resource!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", Namespaced,
        short: ["hpa"], categories: ["all"], subresources: ["status"], generation: true,
        printer: HorizontalPodAutoscaler, fields: NO_FIELDS),
    resource!("autoscaling", "v1", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", Namespaced,
        short: ["hpa"], categories: ["all"], subresources: ["status"], generation: true,
        printer: HorizontalPodAutoscaler, fields: NO_FIELDS, stored_as: ("autoscaling", "v2")),
    // batch/v1
    resource!("batch", "v1", "cronjobs", "cronjob", "CronJob", Namespaced,
        short: ["cj"], categories: ["all"], subresources: ["status"], generation: true,
        printer: CronJob, fields: NO_FIELDS),
    resource!("batch", "v1", "jobs", "job", "Job", Namespaced,
        short: [], categories: ["all"], subresources: ["status"], generation: true,
        printer: Job, fields: &[("status.successful", &["status", "succeeded"])]),
    // certificates.k8s.io/v1: requests for certificates, approved through /approval and
    // signed through /status (`certificates`, `controllers::csrsigning`).
    resource!("certificates.k8s.io", "v1", "certificatesigningrequests", "certificatesigningrequest", "CertificateSigningRequest", Cluster,
        short: ["csr"], categories: [], subresources: ["status", "approval"], generation: false,
        printer: CertificateSigningRequest, fields: &[("spec.signerName", &["spec", "signerName"])]),
    // coordination.k8s.io/v1
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: Lease, fields: NO_FIELDS),
    // discovery.k8s.io/v1
    resource!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", Namespaced,
        short: [], categories: [], subresources: [], generation: true,
        printer: EndpointSlice, fields: NO_FIELDS),
    // events.k8s.io/v1: the core Events, renamed.
    resource!("events.k8s.io", "v1", "events", "event", "Event", Namespaced,
        short: ["ev"], categories: [], subresources: [], generation: false,
        printer: Event, fields: EVENT_FIELDS, stored_as: ("", "v1")),
    // networking.k8s.io/v1
    resource!("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", Cluster,
        short: [], categories: [], subresources: [], generation: true,
        printer: IngressClass, fields: NO_FIELDS),
    resource!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", Namespaced,
        short: ["ing"], categories: [], subresources: ["status"], generation: true,
        printer: Ingress, fields: NO_FIELDS),
    resource!("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", Namespaced,
        short: ["netpol"], categories: [], subresources: [], generation: true,
        printer: NetworkPolicy, fields: NO_FIELDS),
    // policy/v1
    resource!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", Namespaced,
        short: ["pdb"], categories: [], subresources: ["status"], generation: true,
        printer: PodDisruptionBudget, fields: NO_FIELDS),
    // rbac.authorization.k8s.io/v1
    resource!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", Cluster,
        short: [], categories: [], subresources: [], generation: false,
        printer: ClusterRoleBinding, fields: NO_FIELDS),
    resource!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", Cluster,
        short: [], categories: [], subresources: [], generation: false,
        printer: Default, fields: NO_FIELDS),
    resource!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: RoleBinding, fields: NO_FIELDS),
    resource!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: Default, fields: NO_FIELDS),
    // scheduling.k8s.io/v1
    resource!("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", Cluster,
        short: ["pc"], categories: [], subresources: [], generation: false,
        printer: PriorityClass, fields: NO_FIELDS),
    // storage.k8s.io/v1
    resource!("storage.k8s.io", "v1", "csidrivers", "csidriver", "CSIDriver", Cluster,
        short: [], categories: [], subresources: [], generation: false,
        printer: CSIDriver, fields: NO_FIELDS),
    resource!("storage.k8s.io", "v1", "csinodes", "csinode", "CSINode", Cluster,
        short: [], categories: [], subresources: [], generation: false,
        printer: CSINode, fields: NO_FIELDS),
    resource!("storage.k8s.io", "v1", "csistoragecapacities", "csistoragecapacity", "CSIStorageCapacity", Namespaced,
        short: [], categories: [], subresources: [], generation: false,
        printer: CSIStorageCapacity, fields: NO_FIELDS),
    resource!("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", Cluster,
        short: ["sc"], categories: [], subresources: [], generation: false,
        printer: StorageClass, fields: NO_FIELDS),
    resource!("storage.k8s.io", "v1", "volumeattachments", "volumeattachment", "VolumeAttachment", Cluster,
        short: [], categories: [], subresources: ["status"], generation: false,
        printer: VolumeAttachment, fields: NO_FIELDS),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| {
            super::crd::served()
                .iter()
                .copied()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
        })
}

/// Every served resource: the built-in table, then the custom resources of established
/// CustomResourceDefinitions.
pub fn all() -> Vec<&'static ResourceDef> {
    RESOURCES
        .iter()
        .chain(super::crd::served().iter().copied())
        .collect()
}

/// Versions of `group`, preferred first.
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in all().into_iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

/// Groups in the order discovery lists them (core first).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in all() {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Group-versions in the order discovery lists them (core first), for the OpenAPI index.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_one_kind_share_storage() {
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert_eq!(v1.key(Some("ns"), "a"), v2.key(Some("ns"), "a"));
        let core = find("", "v1", "events").unwrap();
        let new = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(core.list_prefix(None), new.list_prefix(None));
        assert_eq!(versions_of("autoscaling"), vec!["v2", "v1"]);
    }

    #[test]
    fn subresources_name_their_kinds() {
        let d = find("apps", "v1", "deployments").unwrap();
        let scale = d.subresource("scale").unwrap();
        assert_eq!(
            (scale.group, scale.version, scale.kind),
            ("autoscaling", "v1", "Scale")
        );
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.subresource("eviction").unwrap().group, "policy");
        assert!(pods.subresource("scale").is_none());
        for r in RESOURCES {
            for s in r.subresources {
                assert!(r.subresource(s).is_some(), "{}/{s}", r.plural);
            }
        }
    }

    #[test]
    fn the_all_category_is_where_kubernetes_has_it() {
        let mut all: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| r.categories.contains(&"all") && r.stored_as.is_none())
            .map(|r| r.plural)
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                "cronjobs",
                "daemonsets",
                "deployments",
                "horizontalpodautoscalers",
                "jobs",
                "pods",
                "replicasets",
                "replicationcontrollers",
                "services",
                "statefulsets"
            ]
        );
    }
}
