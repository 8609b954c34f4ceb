//! Kubernetes' patch and list metadata, which the schemas k8s-openapi generates do not carry: the
//! `patchStrategy` / `patchMergeKey` struct tags and the `+listType`, `+listMapKey`, `+mapType`
//! and `+structType` markers of k8s.io/api (v0.33) and apimachinery's meta/v1. Strategic merge
//! patch, kubectl's client-side apply and `kubectl explain` read them as the `x-kubernetes-*`
//! extensions this module writes into the registry.

use serde_json::{Map, Value};

/// One row: a field of a type (or the type itself when `field` is empty) and its metadata.
/// Empty strings mean "not set".
pub struct Row {
    pub ty: &'static str,
    pub field: &'static str,
    pub strategy: &'static str,
    pub merge_key: &'static str,
    pub list_type: &'static str,
    pub map_keys: &'static [&'static str],
    pub map_type: &'static str,
}

/// Where k8s-openapi's `required` lists differ from k8s.io/api's: k8s-openapi requires every
/// field its Rust type does not wrap in an Option, which includes defaulted `+optional` ones
/// (`kubectl explain` would print them `-required-`), and leaves a few required ones optional.
/// The registry also drops `metadata` from every kind's list before these apply.
pub static REQUIRED: &[(&str, &str, bool)] = &[
    ("io.k8s.api.core.v1.ConfigMapEnvSource", "name", false),
    ("io.k8s.api.core.v1.ConfigMapKeySelector", "name", false),
    ("io.k8s.api.core.v1.ConfigMapProjection", "name", false),
    ("io.k8s.api.core.v1.ConfigMapVolumeSource", "name", false),
    ("io.k8s.api.core.v1.LocalObjectReference", "name", false),
    ("io.k8s.api.core.v1.SecretEnvSource", "name", false),
    ("io.k8s.api.core.v1.SecretKeySelector", "name", false),
    ("io.k8s.api.core.v1.SecretProjection", "name", false),
    ("io.k8s.api.core.v1.Event", "metadata", true),
    ("io.k8s.api.events.v1.Event", "eventTime", true),
    (
        "io.k8s.api.networking.v1.NetworkPolicySpec",
        "podSelector",
        true,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "metadata",
        false,
    ),
];

/// Corrects `required` lists per `REQUIRED`.
pub fn fix_required(schemas: &mut Map<String, Value>) {
    for (ty, field, required) in REQUIRED {
        let Some(schema) = schemas.get_mut(*ty).and_then(Value::as_object_mut) else {
            continue;
        };
        let list = schema
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.retain(|f| f != field);
            if *required {
                list.push(Value::from(*field));
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            if list.is_empty() {
                schema.remove("required");
            }
        }
    }
}

/// Writes every row's extensions into `schemas`; rows whose type or field k8s-openapi lacks are
/// skipped (the table test makes sure there are none).
pub fn apply(schemas: &mut Map<String, Value>) {
    for package in TABLE {
        for row in package.1 {
            let name = format!("{}.{}", package.0, row.ty);
            let Some(schema) = schemas.get_mut(&name).and_then(Value::as_object_mut) else {
                continue;
            };
            let target = if row.field.is_empty() {
                schema
            } else {
                match schema
                    .get_mut("properties")
                    .and_then(|p| p.get_mut(row.field))
                    .and_then(Value::as_object_mut)
                {
                    Some(prop) => prop,
                    None => continue,
                }
            };
            let mut set = |key: &str, value: &str| {
                if !value.is_empty() {
                    target.insert(key.into(), value.into());
                }
            };
            set("x-kubernetes-patch-strategy", row.strategy);
            set("x-kubernetes-patch-merge-key", row.merge_key);
            set("x-kubernetes-list-type", row.list_type);
            set("x-kubernetes-map-type", row.map_type);
            if !row.map_keys.is_empty() {
                target.insert(
                    "x-kubernetes-list-map-keys".into(),
                    row.map_keys.iter().map(|k| Value::from(*k)).collect(),
                );
            }
        }
    }
}

const fn row(
    ty: &'static str,
    field: &'static str,
    strategy: &'static str,
    merge_key: &'static str,
    list_type: &'static str,
    map_keys: &'static [&'static str],
    map_type: &'static str,
) -> Row {
    Row {
        ty,
        field,
        strategy,
        merge_key,
        list_type,
        map_keys,
        map_type,
    }
}

/// Rows grouped by the package prefix of their type names. Columns: type, field (empty for the
/// type's own `+structType`/`+mapType`), patch strategy, patch merge key, list type, list map
/// keys, map type.
#[rustfmt::skip]
pub static TABLE: &[(&str, &[Row])] = &[
    ("io.k8s.api.admissionregistration.v1", &[
        row("MatchResources", "", "", "", "", &[], "atomic"),
        row("MatchResources", "resourceRules", "", "", "atomic", &[], ""),
        row("MatchResources", "excludeResourceRules", "", "", "atomic", &[], ""),
        row("MutatingWebhook", "rules", "", "", "atomic", &[], ""),
        row("MutatingWebhook", "admissionReviewVersions", "", "", "atomic", &[], ""),
        row("MutatingWebhook", "matchConditions", "merge", "name", "map", &["name"], ""),
        row("MutatingWebhookConfiguration", "webhooks", "merge", "name", "map", &["name"], ""),
        row("NamedRuleWithOperations", "", "", "", "", &[], "atomic"),
        row("NamedRuleWithOperations", "resourceNames", "", "", "atomic", &[], ""),
        row("NamedRuleWithOperations", "operations", "", "", "atomic", &[], ""),
        row("NamedRuleWithOperations", "apiGroups", "", "", "atomic", &[], ""),
        row("NamedRuleWithOperations", "apiVersions", "", "", "atomic", &[], ""),
        row("NamedRuleWithOperations", "resources", "", "", "atomic", &[], ""),
        row("ParamKind", "", "", "", "", &[], "atomic"),
        row("ParamRef", "", "", "", "", &[], "atomic"),
        row("RuleWithOperations", "operations", "", "", "atomic", &[], ""),
        row("RuleWithOperations", "apiGroups", "", "", "atomic", &[], ""),
        row("RuleWithOperations", "apiVersions", "", "", "atomic", &[], ""),
        row("RuleWithOperations", "resources", "", "", "atomic", &[], ""),
        row("TypeChecking", "expressionWarnings", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicyBindingSpec", "validationActions", "", "", "set", &[], ""),
        row("ValidatingAdmissionPolicySpec", "validations", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicySpec", "auditAnnotations", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicySpec", "matchConditions", "merge", "name", "map", &["name"], ""),
        row("ValidatingAdmissionPolicySpec", "variables", "merge", "name", "map", &["name"], ""),
        row("ValidatingAdmissionPolicyStatus", "conditions", "", "", "map", &["type"], ""),
        row("ValidatingWebhook", "rules", "", "", "atomic", &[], ""),
        row("ValidatingWebhook", "admissionReviewVersions", "", "", "atomic", &[], ""),
        row("ValidatingWebhook", "matchConditions", "merge", "name", "map", &["name"], ""),
        row("ValidatingWebhookConfiguration", "webhooks", "merge", "name", "map", &["name"], ""),
        row("Variable", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.admissionregistration.v1alpha1", &[
        row("MatchResources", "", "", "", "", &[], "atomic"),
        row("MatchResources", "resourceRules", "", "", "atomic", &[], ""),
        row("MatchResources", "excludeResourceRules", "", "", "atomic", &[], ""),
        row("MutatingAdmissionPolicySpec", "variables", "", "", "atomic", &[], ""),
        row("MutatingAdmissionPolicySpec", "mutations", "", "", "atomic", &[], ""),
        row("MutatingAdmissionPolicySpec", "matchConditions", "merge", "name", "map", &["name"], ""),
        row("NamedRuleWithOperations", "", "", "", "", &[], "atomic"),
        row("NamedRuleWithOperations", "resourceNames", "", "", "atomic", &[], ""),
        row("ParamKind", "", "", "", "", &[], "atomic"),
        row("ParamRef", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.admissionregistration.v1beta1", &[
        row("MatchResources", "", "", "", "", &[], "atomic"),
        row("MatchResources", "resourceRules", "", "", "atomic", &[], ""),
        row("MatchResources", "excludeResourceRules", "", "", "atomic", &[], ""),
        row("NamedRuleWithOperations", "", "", "", "", &[], "atomic"),
        row("NamedRuleWithOperations", "resourceNames", "", "", "atomic", &[], ""),
        row("ParamKind", "", "", "", "", &[], "atomic"),
        row("ParamRef", "", "", "", "", &[], "atomic"),
        row("TypeChecking", "expressionWarnings", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicyBindingSpec", "validationActions", "", "", "set", &[], ""),
        row("ValidatingAdmissionPolicySpec", "validations", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicySpec", "auditAnnotations", "", "", "atomic", &[], ""),
        row("ValidatingAdmissionPolicySpec", "matchConditions", "merge", "name", "map", &["name"], ""),
        row("ValidatingAdmissionPolicySpec", "variables", "merge", "name", "map", &["name"], ""),
        row("ValidatingAdmissionPolicyStatus", "conditions", "", "", "map", &["type"], ""),
        row("Variable", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.apiserverinternal.v1alpha1", &[
        row("ServerStorageVersion", "decodableVersions", "", "", "set", &[], ""),
        row("ServerStorageVersion", "servedVersions", "", "", "set", &[], ""),
        row("StorageVersionStatus", "storageVersions", "", "", "map", &["apiServerID"], ""),
        row("StorageVersionStatus", "conditions", "", "", "map", &["type"], ""),
    ]),
    ("io.k8s.api.apps.v1", &[
        row("DaemonSetStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("DeploymentSpec", "strategy", "retainKeys", "", "", &[], ""),
        row("DeploymentStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("ReplicaSetStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("StatefulSetSpec", "volumeClaimTemplates", "", "", "atomic", &[], ""),
        row("StatefulSetStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.api.authentication.v1", &[
        row("TokenRequestSpec", "audiences", "", "", "atomic", &[], ""),
        row("TokenReviewSpec", "audiences", "", "", "atomic", &[], ""),
        row("TokenReviewStatus", "audiences", "", "", "atomic", &[], ""),
        row("UserInfo", "groups", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.authorization.v1", &[
        row("FieldSelectorAttributes", "requirements", "", "", "atomic", &[], ""),
        row("LabelSelectorAttributes", "requirements", "", "", "atomic", &[], ""),
        row("NonResourceRule", "verbs", "", "", "atomic", &[], ""),
        row("NonResourceRule", "nonResourceURLs", "", "", "atomic", &[], ""),
        row("ResourceRule", "verbs", "", "", "atomic", &[], ""),
        row("ResourceRule", "apiGroups", "", "", "atomic", &[], ""),
        row("ResourceRule", "resources", "", "", "atomic", &[], ""),
        row("ResourceRule", "resourceNames", "", "", "atomic", &[], ""),
        row("SubjectAccessReviewSpec", "groups", "", "", "atomic", &[], ""),
        row("SubjectRulesReviewStatus", "resourceRules", "", "", "atomic", &[], ""),
        row("SubjectRulesReviewStatus", "nonResourceRules", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.autoscaling.v1", &[
        row("CrossVersionObjectReference", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.autoscaling.v2", &[
        row("HPAScalingRules", "policies", "", "", "atomic", &[], ""),
        row("HorizontalPodAutoscalerSpec", "metrics", "", "", "atomic", &[], ""),
        row("HorizontalPodAutoscalerStatus", "currentMetrics", "", "", "atomic", &[], ""),
        row("HorizontalPodAutoscalerStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.api.batch.v1", &[
        row("CronJobStatus", "active", "", "", "atomic", &[], ""),
        row("JobStatus", "conditions", "merge", "type", "atomic", &[], ""),
        row("PodFailurePolicy", "rules", "", "", "atomic", &[], ""),
        row("PodFailurePolicyOnExitCodesRequirement", "values", "", "", "set", &[], ""),
        row("PodFailurePolicyRule", "onPodConditions", "", "", "atomic", &[], ""),
        row("SuccessPolicy", "rules", "", "", "atomic", &[], ""),
        row("UncountedTerminatedPods", "succeeded", "", "", "set", &[], ""),
        row("UncountedTerminatedPods", "failed", "", "", "set", &[], ""),
    ]),
    ("io.k8s.api.certificates.v1", &[
        row("CertificateSigningRequestSpec", "usages", "", "", "atomic", &[], ""),
        row("CertificateSigningRequestSpec", "groups", "", "", "atomic", &[], ""),
        row("CertificateSigningRequestStatus", "conditions", "", "", "map", &["type"], ""),
    ]),
    ("io.k8s.api.core.v1", &[
        row("Capabilities", "add", "", "", "atomic", &[], ""),
        row("Capabilities", "drop", "", "", "atomic", &[], ""),
        row("CephFSPersistentVolumeSource", "monitors", "", "", "atomic", &[], ""),
        row("CephFSVolumeSource", "monitors", "", "", "atomic", &[], ""),
        row("ComponentStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("ConfigMapKeySelector", "", "", "", "", &[], "atomic"),
        row("ConfigMapProjection", "items", "", "", "atomic", &[], ""),
        row("ConfigMapVolumeSource", "items", "", "", "atomic", &[], ""),
        row("Container", "command", "", "", "atomic", &[], ""),
        row("Container", "args", "", "", "atomic", &[], ""),
        row("Container", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"], ""),
        row("Container", "envFrom", "", "", "atomic", &[], ""),
        row("Container", "env", "merge", "name", "map", &["name"], ""),
        row("Container", "resizePolicy", "", "", "atomic", &[], ""),
        row("Container", "volumeMounts", "merge", "mountPath", "map", &["mountPath"], ""),
        row("Container", "volumeDevices", "merge", "devicePath", "map", &["devicePath"], ""),
        row("ContainerImage", "names", "", "", "atomic", &[], ""),
        row("ContainerStatus", "volumeMounts", "merge", "mountPath", "map", &["mountPath"], ""),
        row("ContainerStatus", "allocatedResourcesStatus", "merge", "name", "map", &["name"], ""),
        row("DownwardAPIProjection", "items", "", "", "atomic", &[], ""),
        row("DownwardAPIVolumeSource", "items", "", "", "atomic", &[], ""),
        row("EndpointAddress", "", "", "", "", &[], "atomic"),
        row("EndpointPort", "", "", "", "", &[], "atomic"),
        row("EndpointSubset", "addresses", "", "", "atomic", &[], ""),
        row("EndpointSubset", "notReadyAddresses", "", "", "atomic", &[], ""),
        row("EndpointSubset", "ports", "", "", "atomic", &[], ""),
        row("Endpoints", "subsets", "", "", "atomic", &[], ""),
        row("EphemeralContainer", "command", "", "", "atomic", &[], ""),
        row("EphemeralContainer", "args", "", "", "atomic", &[], ""),
        row("EphemeralContainer", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"], ""),
        row("EphemeralContainer", "envFrom", "", "", "atomic", &[], ""),
        row("EphemeralContainer", "env", "merge", "name", "map", &["name"], ""),
        row("EphemeralContainer", "resizePolicy", "", "", "atomic", &[], ""),
        row("EphemeralContainer", "volumeMounts", "merge", "mountPath", "map", &["mountPath"], ""),
        row("EphemeralContainer", "volumeDevices", "merge", "devicePath", "map", &["devicePath"], ""),
        row("ExecAction", "command", "", "", "atomic", &[], ""),
        row("FCVolumeSource", "targetWWNs", "", "", "atomic", &[], ""),
        row("FCVolumeSource", "wwids", "", "", "atomic", &[], ""),
        row("HTTPGetAction", "httpHeaders", "", "", "atomic", &[], ""),
        row("HostAlias", "hostnames", "", "", "atomic", &[], ""),
        row("ISCSIPersistentVolumeSource", "portals", "", "", "atomic", &[], ""),
        row("ISCSIVolumeSource", "portals", "", "", "atomic", &[], ""),
        row("LimitRangeSpec", "limits", "", "", "atomic", &[], ""),
        row("LinuxContainerUser", "supplementalGroups", "", "", "atomic", &[], ""),
        row("LoadBalancerIngress", "ports", "", "", "atomic", &[], ""),
        row("LoadBalancerStatus", "ingress", "", "", "atomic", &[], ""),
        row("LocalObjectReference", "", "", "", "", &[], "atomic"),
        row("NamespaceSpec", "finalizers", "", "", "atomic", &[], ""),
        row("NamespaceStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[], ""),
        row("NodeSelector", "", "", "", "", &[], "atomic"),
        row("NodeSelector", "nodeSelectorTerms", "", "", "atomic", &[], ""),
        row("NodeSelectorRequirement", "values", "", "", "atomic", &[], ""),
        row("NodeSelectorTerm", "", "", "", "", &[], "atomic"),
        row("NodeSelectorTerm", "matchExpressions", "", "", "atomic", &[], ""),
        row("NodeSelectorTerm", "matchFields", "", "", "atomic", &[], ""),
        row("NodeSpec", "podCIDRs", "merge", "", "set", &[], ""),
        row("NodeSpec", "taints", "", "", "atomic", &[], ""),
        row("NodeStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("NodeStatus", "addresses", "merge", "type", "map", &["type"], ""),
        row("NodeStatus", "images", "", "", "atomic", &[], ""),
        row("NodeStatus", "volumesInUse", "", "", "atomic", &[], ""),
        row("NodeStatus", "volumesAttached", "", "", "atomic", &[], ""),
        row("NodeStatus", "runtimeHandlers", "", "", "atomic", &[], ""),
        row("ObjectFieldSelector", "", "", "", "", &[], "atomic"),
        row("ObjectReference", "", "", "", "", &[], "atomic"),
        row("PersistentVolumeClaimSpec", "accessModes", "", "", "atomic", &[], ""),
        row("PersistentVolumeClaimStatus", "accessModes", "", "", "atomic", &[], ""),
        row("PersistentVolumeClaimStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("PersistentVolumeClaimStatus", "allocatedResourceStatuses", "", "", "", &[], "granular"),
        row("PersistentVolumeSpec", "accessModes", "", "", "atomic", &[], ""),
        row("PersistentVolumeSpec", "claimRef", "", "", "", &[], "granular"),
        row("PersistentVolumeSpec", "mountOptions", "", "", "atomic", &[], ""),
        row("PodAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[], ""),
        row("PodAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[], ""),
        row("PodAffinityTerm", "namespaces", "", "", "atomic", &[], ""),
        row("PodAffinityTerm", "matchLabelKeys", "", "", "atomic", &[], ""),
        row("PodAffinityTerm", "mismatchLabelKeys", "", "", "atomic", &[], ""),
        row("PodAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[], ""),
        row("PodAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[], ""),
        row("PodDNSConfig", "nameservers", "", "", "atomic", &[], ""),
        row("PodDNSConfig", "searches", "", "", "atomic", &[], ""),
        row("PodDNSConfig", "options", "", "", "atomic", &[], ""),
        row("PodSecurityContext", "supplementalGroups", "", "", "atomic", &[], ""),
        row("PodSecurityContext", "sysctls", "", "", "atomic", &[], ""),
        row("PodSpec", "volumes", "merge,retainKeys", "name", "map", &["name"], ""),
        row("PodSpec", "initContainers", "merge", "name", "map", &["name"], ""),
        row("PodSpec", "containers", "merge", "name", "map", &["name"], ""),
        row("PodSpec", "ephemeralContainers", "merge", "name", "map", &["name"], ""),
        row("PodSpec", "nodeSelector", "", "", "", &[], "atomic"),
        row("PodSpec", "imagePullSecrets", "merge", "name", "map", &["name"], ""),
        row("PodSpec", "tolerations", "", "", "atomic", &[], ""),
        row("PodSpec", "hostAliases", "merge", "ip", "map", &["ip"], ""),
        row("PodSpec", "readinessGates", "", "", "atomic", &[], ""),
        row("PodSpec", "topologySpreadConstraints", "merge", "topologyKey", "map", &["topologyKey", "whenUnsatisfiable"], ""),
        row("PodSpec", "schedulingGates", "merge", "name", "map", &["name"], ""),
        row("PodSpec", "resourceClaims", "merge,retainKeys", "name", "map", &["name"], ""),
        row("PodStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("PodStatus", "hostIPs", "merge", "ip", "atomic", &[], ""),
        row("PodStatus", "podIPs", "merge", "ip", "map", &["ip"], ""),
        row("PodStatus", "initContainerStatuses", "", "", "atomic", &[], ""),
        row("PodStatus", "containerStatuses", "", "", "atomic", &[], ""),
        row("PodStatus", "ephemeralContainerStatuses", "", "", "atomic", &[], ""),
        row("PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name", "map", &["name"], ""),
        row("ProjectedVolumeSource", "sources", "", "", "atomic", &[], ""),
        row("RBDPersistentVolumeSource", "monitors", "", "", "atomic", &[], ""),
        row("RBDVolumeSource", "monitors", "", "", "atomic", &[], ""),
        row("ReplicationControllerSpec", "selector", "", "", "", &[], "atomic"),
        row("ReplicationControllerStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("ResourceFieldSelector", "", "", "", "", &[], "atomic"),
        row("ResourceQuotaSpec", "scopes", "", "", "atomic", &[], ""),
        row("ResourceRequirements", "claims", "", "", "map", &["name"], ""),
        row("ResourceStatus", "resources", "", "", "map", &["resourceID"], ""),
        row("ScopeSelector", "", "", "", "", &[], "atomic"),
        row("ScopeSelector", "matchExpressions", "", "", "atomic", &[], ""),
        row("ScopedResourceSelectorRequirement", "values", "", "", "atomic", &[], ""),
        row("SecretKeySelector", "", "", "", "", &[], "atomic"),
        row("SecretProjection", "items", "", "", "atomic", &[], ""),
        row("SecretReference", "", "", "", "", &[], "atomic"),
        row("SecretVolumeSource", "items", "", "", "atomic", &[], ""),
        row("ServiceAccount", "secrets", "merge", "name", "map", &["name"], ""),
        row("ServiceAccount", "imagePullSecrets", "", "", "atomic", &[], ""),
        row("ServiceSpec", "ports", "merge", "port", "map", &["port", "protocol"], ""),
        row("ServiceSpec", "selector", "", "", "", &[], "atomic"),
        row("ServiceSpec", "clusterIPs", "", "", "atomic", &[], ""),
        row("ServiceSpec", "externalIPs", "", "", "atomic", &[], ""),
        row("ServiceSpec", "loadBalancerSourceRanges", "", "", "atomic", &[], ""),
        row("ServiceSpec", "ipFamilies", "", "", "atomic", &[], ""),
        row("ServiceStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("TopologySelectorLabelRequirement", "values", "", "", "atomic", &[], ""),
        row("TopologySelectorTerm", "", "", "", "", &[], "atomic"),
        row("TopologySelectorTerm", "matchLabelExpressions", "", "", "atomic", &[], ""),
        row("TopologySpreadConstraint", "matchLabelKeys", "", "", "atomic", &[], ""),
        row("TypedLocalObjectReference", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.discovery.v1", &[
        row("Endpoint", "addresses", "", "", "set", &[], ""),
        row("EndpointHints", "forZones", "", "", "atomic", &[], ""),
        row("EndpointHints", "forNodes", "", "", "atomic", &[], ""),
        row("EndpointPort", "", "", "", "", &[], "atomic"),
        row("EndpointSlice", "endpoints", "", "", "atomic", &[], ""),
        row("EndpointSlice", "ports", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.flowcontrol.v1", &[
        row("FlowSchemaSpec", "rules", "", "", "atomic", &[], ""),
        row("FlowSchemaStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("NonResourcePolicyRule", "verbs", "", "", "set", &[], ""),
        row("NonResourcePolicyRule", "nonResourceURLs", "", "", "set", &[], ""),
        row("PolicyRulesWithSubjects", "subjects", "", "", "atomic", &[], ""),
        row("PolicyRulesWithSubjects", "resourceRules", "", "", "atomic", &[], ""),
        row("PolicyRulesWithSubjects", "nonResourceRules", "", "", "atomic", &[], ""),
        row("PriorityLevelConfigurationStatus", "conditions", "merge", "type", "map", &["type"], ""),
        row("ResourcePolicyRule", "verbs", "", "", "set", &[], ""),
        row("ResourcePolicyRule", "apiGroups", "", "", "set", &[], ""),
        row("ResourcePolicyRule", "resources", "", "", "set", &[], ""),
        row("ResourcePolicyRule", "namespaces", "", "", "set", &[], ""),
    ]),
    ("io.k8s.api.networking.v1", &[
        row("HTTPIngressRuleValue", "paths", "", "", "atomic", &[], ""),
        row("IPBlock", "except", "", "", "atomic", &[], ""),
        row("IngressLoadBalancerIngress", "ports", "", "", "atomic", &[], ""),
        row("IngressLoadBalancerStatus", "ingress", "", "", "atomic", &[], ""),
        row("IngressSpec", "tls", "", "", "atomic", &[], ""),
        row("IngressSpec", "rules", "", "", "atomic", &[], ""),
        row("IngressTLS", "hosts", "", "", "atomic", &[], ""),
        row("NetworkPolicyEgressRule", "ports", "", "", "atomic", &[], ""),
        row("NetworkPolicyEgressRule", "to", "", "", "atomic", &[], ""),
        row("NetworkPolicyIngressRule", "ports", "", "", "atomic", &[], ""),
        row("NetworkPolicyIngressRule", "from", "", "", "atomic", &[], ""),
        row("NetworkPolicySpec", "ingress", "", "", "atomic", &[], ""),
        row("NetworkPolicySpec", "egress", "", "", "atomic", &[], ""),
        row("NetworkPolicySpec", "policyTypes", "", "", "atomic", &[], ""),
        row("ServiceBackendPort", "", "", "", "", &[], "atomic"),
        row("ServiceCIDRSpec", "cidrs", "", "", "atomic", &[], ""),
        row("ServiceCIDRStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.api.networking.v1beta1", &[
        row("ServiceCIDRSpec", "cidrs", "", "", "atomic", &[], ""),
        row("ServiceCIDRStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.api.node.v1", &[
        row("Scheduling", "nodeSelector", "", "", "", &[], "atomic"),
        row("Scheduling", "tolerations", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.policy.v1", &[
        row("PodDisruptionBudgetSpec", "selector", "replace", "", "", &[], ""),
        row("PodDisruptionBudgetStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.api.rbac.v1", &[
        row("AggregationRule", "clusterRoleSelectors", "", "", "atomic", &[], ""),
        row("ClusterRole", "rules", "", "", "atomic", &[], ""),
        row("ClusterRoleBinding", "subjects", "", "", "atomic", &[], ""),
        row("PolicyRule", "verbs", "", "", "atomic", &[], ""),
        row("PolicyRule", "apiGroups", "", "", "atomic", &[], ""),
        row("PolicyRule", "resources", "", "", "atomic", &[], ""),
        row("PolicyRule", "resourceNames", "", "", "atomic", &[], ""),
        row("PolicyRule", "nonResourceURLs", "", "", "atomic", &[], ""),
        row("Role", "rules", "", "", "atomic", &[], ""),
        row("RoleBinding", "subjects", "", "", "atomic", &[], ""),
        row("RoleRef", "", "", "", "", &[], "atomic"),
        row("Subject", "", "", "", "", &[], "atomic"),
    ]),
    ("io.k8s.api.resource.v1alpha3", &[
        row("AllocatedDeviceStatus", "conditions", "", "", "map", &["type"], ""),
        row("BasicDevice", "consumesCounters", "", "", "atomic", &[], ""),
        row("BasicDevice", "taints", "", "", "atomic", &[], ""),
        row("DeviceAllocationConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "results", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "config", "", "", "atomic", &[], ""),
        row("DeviceClaim", "requests", "", "", "atomic", &[], ""),
        row("DeviceClaim", "constraints", "", "", "atomic", &[], ""),
        row("DeviceClaim", "config", "", "", "atomic", &[], ""),
        row("DeviceClaimConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "selectors", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "config", "", "", "atomic", &[], ""),
        row("DeviceConstraint", "requests", "", "", "atomic", &[], ""),
        row("DeviceRequest", "selectors", "", "", "atomic", &[], ""),
        row("DeviceRequest", "firstAvailable", "", "", "atomic", &[], ""),
        row("DeviceRequest", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceRequestAllocationResult", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "selectors", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceTaintSelector", "selectors", "", "", "atomic", &[], ""),
        row("NetworkDeviceData", "ips", "", "", "atomic", &[], ""),
        row("ResourceClaimStatus", "reservedFor", "merge", "uid", "map", &["uid"], ""),
        row("ResourceClaimStatus", "devices", "", "", "map", &["driver", "device", "pool"], ""),
        row("ResourceSliceSpec", "devices", "", "", "atomic", &[], ""),
        row("ResourceSliceSpec", "sharedCounters", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.resource.v1beta1", &[
        row("AllocatedDeviceStatus", "conditions", "", "", "map", &["type"], ""),
        row("BasicDevice", "consumesCounters", "", "", "atomic", &[], ""),
        row("BasicDevice", "taints", "", "", "atomic", &[], ""),
        row("DeviceAllocationConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "results", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "config", "", "", "atomic", &[], ""),
        row("DeviceClaim", "requests", "", "", "atomic", &[], ""),
        row("DeviceClaim", "constraints", "", "", "atomic", &[], ""),
        row("DeviceClaim", "config", "", "", "atomic", &[], ""),
        row("DeviceClaimConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "selectors", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "config", "", "", "atomic", &[], ""),
        row("DeviceConstraint", "requests", "", "", "atomic", &[], ""),
        row("DeviceRequest", "selectors", "", "", "atomic", &[], ""),
        row("DeviceRequest", "firstAvailable", "", "", "atomic", &[], ""),
        row("DeviceRequest", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceRequestAllocationResult", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "selectors", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "tolerations", "", "", "atomic", &[], ""),
        row("NetworkDeviceData", "ips", "", "", "atomic", &[], ""),
        row("ResourceClaimStatus", "reservedFor", "merge", "uid", "map", &["uid"], ""),
        row("ResourceClaimStatus", "devices", "", "", "map", &["driver", "device", "pool"], ""),
        row("ResourceSliceSpec", "devices", "", "", "atomic", &[], ""),
        row("ResourceSliceSpec", "sharedCounters", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.resource.v1beta2", &[
        row("AllocatedDeviceStatus", "conditions", "", "", "map", &["type"], ""),
        row("Device", "consumesCounters", "", "", "atomic", &[], ""),
        row("Device", "taints", "", "", "atomic", &[], ""),
        row("DeviceAllocationConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "results", "", "", "atomic", &[], ""),
        row("DeviceAllocationResult", "config", "", "", "atomic", &[], ""),
        row("DeviceClaim", "requests", "", "", "atomic", &[], ""),
        row("DeviceClaim", "constraints", "", "", "atomic", &[], ""),
        row("DeviceClaim", "config", "", "", "atomic", &[], ""),
        row("DeviceClaimConfiguration", "requests", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "selectors", "", "", "atomic", &[], ""),
        row("DeviceClassSpec", "config", "", "", "atomic", &[], ""),
        row("DeviceConstraint", "requests", "", "", "atomic", &[], ""),
        row("DeviceRequest", "firstAvailable", "", "", "atomic", &[], ""),
        row("DeviceRequestAllocationResult", "tolerations", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "selectors", "", "", "atomic", &[], ""),
        row("DeviceSubRequest", "tolerations", "", "", "atomic", &[], ""),
        row("ExactDeviceRequest", "selectors", "", "", "atomic", &[], ""),
        row("ExactDeviceRequest", "tolerations", "", "", "atomic", &[], ""),
        row("NetworkDeviceData", "ips", "", "", "atomic", &[], ""),
        row("ResourceClaimStatus", "reservedFor", "merge", "uid", "map", &["uid"], ""),
        row("ResourceClaimStatus", "devices", "", "", "map", &["driver", "device", "pool"], ""),
        row("ResourceSliceSpec", "devices", "", "", "atomic", &[], ""),
        row("ResourceSliceSpec", "sharedCounters", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.storage.v1", &[
        row("CSIDriverSpec", "volumeLifecycleModes", "", "", "set", &[], ""),
        row("CSIDriverSpec", "tokenRequests", "", "", "atomic", &[], ""),
        row("CSINodeDriver", "topologyKeys", "", "", "atomic", &[], ""),
        row("CSINodeSpec", "drivers", "merge", "name", "map", &["name"], ""),
        row("StorageClass", "mountOptions", "", "", "atomic", &[], ""),
        row("StorageClass", "allowedTopologies", "", "", "atomic", &[], ""),
    ]),
    ("io.k8s.api.storagemigration.v1alpha1", &[
        row("StorageVersionMigrationList", "items", "merge", "type", "map", &["type"], ""),
        row("StorageVersionMigrationStatus", "conditions", "merge", "type", "map", &["type"], ""),
    ]),
    ("io.k8s.apimachinery.pkg.apis.meta.v1", &[
        row("DeleteOptions", "dryRun", "", "", "atomic", &[], ""),
        row("FieldSelectorRequirement", "values", "", "", "atomic", &[], ""),
        row("LabelSelector", "", "", "", "", &[], "atomic"),
        row("LabelSelector", "matchExpressions", "", "", "atomic", &[], ""),
        row("LabelSelectorRequirement", "values", "", "", "atomic", &[], ""),
        row("ObjectMeta", "ownerReferences", "merge", "uid", "map", &["uid"], ""),
        row("ObjectMeta", "finalizers", "merge", "", "set", &[], ""),
        row("ObjectMeta", "managedFields", "", "", "atomic", &[], ""),
        row("OwnerReference", "", "", "", "", &[], "atomic"),
        row("StatusDetails", "causes", "", "", "atomic", &[], ""),
    ]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::schema::registry;

    /// Every row names a type and field the registry has, and list metadata sits on lists: a
    /// typo here would silently leave a list atomic.
    #[test]
    fn required_fixes_apply() {
        let reg = registry();
        let required = |ty: &str| {
            reg.schema(ty)
                .map(|s| s.required().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(required("io.k8s.api.core.v1.ConfigMapKeySelector"), ["key"]);
        assert_eq!(
            required("io.k8s.api.core.v1.Event"),
            ["involvedObject", "metadata"]
        );
        assert!(required("io.k8s.api.core.v1.LocalObjectReference").is_empty());
        for (ty, field, _) in REQUIRED {
            let schema = reg.schema(ty).unwrap_or_else(|| panic!("no schema {ty}"));
            assert!(schema.field(field).is_some(), "no field {ty}.{field}");
        }
    }

    #[test]
    fn every_row_resolves() {
        let schemas = registry().schemas();
        for (package, rows) in TABLE {
            for row in *rows {
                let name = format!("{package}.{}", row.ty);
                let schema = schemas
                    .get(&name)
                    .unwrap_or_else(|| panic!("no schema {name}"));
                if row.field.is_empty() {
                    assert!(!row.map_type.is_empty(), "{name}: empty row");
                    continue;
                }
                let prop = schema
                    .pointer(&format!("/properties/{}", row.field))
                    .unwrap_or_else(|| panic!("no field {name}.{}", row.field));
                let is_list = prop.get("type").and_then(Value::as_str) == Some("array");
                if !row.list_type.is_empty() || !row.merge_key.is_empty() {
                    assert!(is_list, "{name}.{} is not a list", row.field);
                }
                assert_eq!(
                    row.list_type == "map",
                    !row.map_keys.is_empty(),
                    "{name}.{}",
                    row.field
                );
                if row.strategy.contains("merge") && is_list {
                    let items = prop.get("items").cloned().unwrap_or_default();
                    let of_objects = items.get("$ref").is_some();
                    assert_eq!(
                        of_objects,
                        !row.merge_key.is_empty(),
                        "{name}.{}",
                        row.field
                    );
                }
            }
        }
    }
}
