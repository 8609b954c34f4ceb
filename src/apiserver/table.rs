//! Server-side printing: the `meta.k8s.io/v1` Table that kubectl asks for in human output,
//! with the columns a real cluster prints for each kind. The server always fills the `-o wide`
//! cells too; kubectl shows the priority-1 columns only when asked.

pub(crate) mod cells;

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    /// NAME, CREATED AT: what Kubernetes prints for a kind without printer columns.
    Default,
    /// A custom resource: NAME and its definition's additionalPrinterColumns (`crd::printer`).
    Custom(&'static crate::apiserver::crd::Custom),
    APIService,
    ClusterRoleBinding,
    ConfigMap,
    ControllerRevision,
    CronJob,
    CSIDriver,
    CSINode,
    CertificateSigningRequest,
    CSIStorageCapacity,
    DaemonSet,
    Deployment,
    Endpoints,
    EndpointSlice,
    Event,
    HorizontalPodAutoscaler,
    Ingress,
    IngressClass,
    Job,
    Lease,
    Namespace,
    NetworkPolicy,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    PodTemplate,
    PriorityClass,
    ReplicaSet,
    ReplicationController,
    ResourceQuota,
    RoleBinding,
    Secret,
    Service,
    ServiceAccount,
    StatefulSet,
    StorageClass,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    VolumeAttachment,
    /// Mutating- and ValidatingWebhookConfigurations.
    WebhookConfiguration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
}

const fn col(
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format,
        priority,
        description,
    }
}

const fn s(name: &'static str, description: &'static str) -> Column {
    col(name, "string", "", 0, description)
}

const fn int(name: &'static str, description: &'static str) -> Column {
    col(name, "integer", "", 0, description)
}

const fn wide(name: &'static str, description: &'static str) -> Column {
    col(name, "string", "", 1, description)
}

const NAME: Column = col(
    "Name",
    "string",
    "name",
    0,
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
);
const AGE: Column = s(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);
const CONTAINERS: Column = wide("Containers", "Names of each container in the template.");
const IMAGES: Column = wide(
    "Images",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide(
    "Selector",
    "A label query over pods that should match the replica count.",
);

fn columns(printer: Printer) -> Vec<Column> {
    use Printer::*;
    match printer {
        // Built per definition in `table`.
        Custom(_) => vec![NAME],
        APIService => vec![
            NAME,
            s(
                "Service",
                "The reference to the service that hosts this API endpoint.",
            ),
            s("Available", "Whether this service is available."),
            AGE,
        ],
        Default => vec![
            NAME,
            col(
                "Created At",
                "date",
                "",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
        Namespace => vec![NAME, s("Status", "The status of the namespace"), AGE],
        Node => vec![
            NAME,
            s("Status", "The status of the node"),
            s("Roles", "The roles of the node"),
            AGE,
            s("Version", "Kubelet Version reported by the node."),
            wide("Internal-IP", "List of internal IPs for the node."),
            wide("External-IP", "List of external IPs for the node."),
            wide(
                "OS-Image",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            wide(
                "Kernel-Version",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            wide(
                "Container-Runtime",
                "Container Runtime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Lease => vec![
            NAME,
            s(
                "Holder",
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        Pod => vec![
            NAME,
            s(
                "Ready",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            s(
                "Status",
                "The aggregate status of the containers in this pod.",
            ),
            s(
                "Restarts",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            wide("IP", "podIP address allocated to the pod."),
            wide(
                "Node",
                "NodeName indicates in which node this pod is scheduled.",
            ),
            wide(
                "Nominated Node",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            wide(
                "Readiness Gates",
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        PodTemplate => vec![
            NAME,
            s("Containers", "Names of each container in the template."),
            s(
                "Images",
                "Images referenced by each container in the template.",
            ),
            s("Pod Labels", "The labels for the pod template."),
        ],
        PodDisruptionBudget => vec![
            NAME,
            s(
                "Min Available",
                "The minimum number of pods that must be available.",
            ),
            s(
                "Max Unavailable",
                "The maximum number of pods that may be unavailable.",
            ),
            int(
                "Allowed Disruptions",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            AGE,
        ],
        ReplicationController | ReplicaSet => vec![
            NAME,
            int("Desired", "Replicas is the number of desired replicas."),
            int(
                "Current",
                "Replicas is the most recently observed number of replicas.",
            ),
            int(
                "Ready",
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        DaemonSet => vec![
            NAME,
            int(
                "Desired",
                "The total number of nodes that should be running the daemon pod.",
            ),
            int(
                "Current",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            int(
                "Ready",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            int(
                "Up-to-date",
                "The total number of nodes that are running updated daemon pod",
            ),
            int(
                "Available",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            s(
                "Node Selector",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Job => vec![
            NAME,
            s("Status", "Status of the job."),
            s(
                "Completions",
                "The number of pods which reached phase Succeeded.",
            ),
            s("Duration", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        CronJob => vec![
            NAME,
            s(
                "Schedule",
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            s(
                "Timezone",
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
            ),
            col(
                "Suspend",
                "boolean",
                "",
                0,
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
            ),
            int("Active", "A list of pointers to currently running jobs."),
            s(
                "Last Schedule",
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Service => vec![
            NAME,
            s("Type", "type determines how the Service is exposed."),
            s(
                "Cluster-IP",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            s(
                "External-IP",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            s(
                "Port(s)",
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            wide(
                "Selector",
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Ingress => vec![
            NAME,
            s(
                "Class",
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            s(
                "Hosts",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            s(
                "Address",
                "Address is a list containing ingress points for the load-balancer",
            ),
            s("Ports", "Ports of TLS configurations that open"),
            AGE,
        ],
        IngressClass => vec![
            NAME,
            s(
                "Controller",
                "Controller that is responsible for handling this class",
            ),
            s(
                "Parameters",
                "A reference to a resource with additional parameters",
            ),
            AGE,
        ],
        StatefulSet => vec![
            NAME,
            s("Ready", "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        Endpoints => vec![
            NAME,
            s(
                "Endpoints",
                "The set of all endpoints is the union of all subsets.",
            ),
            AGE,
        ],
        Event => vec![
            s(
                "Last Seen",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            s(
                "Type",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            s(
                "Reason",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            s("Object", "The object that this event is about."),
            wide(
                "Subobject",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            wide("Source", "The component reporting this event."),
            s(
                "Message",
                "A human-readable description of the status of this operation.",
            ),
            wide(
                "First Seen",
                "The time at which the event was first recorded.",
            ),
            wide("Count", "The number of times this event has occurred."),
            col("Name", "string", "name", 1, NAME.description),
        ],
        Secret => vec![
            NAME,
            s(
                "Type",
                "Used to facilitate programmatic handling of secret data.",
            ),
            s("Data", "Data contains the secret data."),
            AGE,
        ],
        ServiceAccount => vec![
            NAME,
            s(
                "Secrets",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        PersistentVolume => vec![
            NAME,
            s(
                "Capacity",
                "capacity is the description of the persistent volume's resources and capacity.",
            ),
            s(
                "Access Modes",
                "accessModes contains all ways the volume can be mounted.",
            ),
            s(
                "Reclaim Policy",
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            ),
            s(
                "Status",
                "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            s(
                "Claim",
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            s("StorageClass", "StorageClass of the pv"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
            s(
                "Reason",
                "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
            ),
            AGE,
            wide(
                "VolumeMode",
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        PersistentVolumeClaim => vec![
            NAME,
            s(
                "Status",
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            s(
                "Volume",
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            s(
                "Capacity",
                "capacity represents the actual resources of the underlying volume.",
            ),
            s(
                "Access Modes",
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            s("StorageClass", "StorageClass of the pvc"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
            AGE,
            wide(
                "VolumeMode",
                "volumeMode defines what type of volume is required by the claim.",
            ),
        ],
        Deployment => vec![
            NAME,
            s("Ready", "Number of the pod with ready state"),
            s(
                "Up-to-date",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            s(
                "Available",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            wide(
                "Selector",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        HorizontalPodAutoscaler => vec![
            NAME,
            s(
                "Reference",
                "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
            ),
            s(
                "Targets",
                "metrics contains the specifications for which to use to calculate the desired replica count.",
            ),
            s(
                "MinPods",
                "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
            ),
            s(
                "MaxPods",
                "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
            ),
            s(
                "Replicas",
                "currentReplicas is current number of replicas of pods managed by this autoscaler.",
            ),
            AGE,
        ],
        ConfigMap => vec![
            NAME,
            s("Data", "Data contains the configuration data."),
            AGE,
        ],
        NetworkPolicy => vec![
            NAME,
            s(
                "Pod-Selector",
                "Selects the pods to which this NetworkPolicy object applies.",
            ),
            AGE,
        ],
        RoleBinding | ClusterRoleBinding => vec![
            NAME,
            s(
                "Role",
                "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
            ),
            AGE,
            wide("Users", "Users in the roleBinding"),
            wide("Groups", "Groups in the roleBinding"),
            wide("ServiceAccounts", "ServiceAccounts in the roleBinding"),
        ],
        StorageClass => vec![
            NAME,
            s(
                "Provisioner",
                "provisioner indicates the type of the provisioner.",
            ),
            s(
                "ReclaimPolicy",
                "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
            ),
            s(
                "VolumeBindingMode",
                "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
            ),
            s(
                "AllowVolumeExpansion",
                "allowVolumeExpansion shows whether the storage class allow volume expand.",
            ),
            AGE,
        ],
        ControllerRevision => vec![
            NAME,
            s("Controller", "Controller of the object"),
            s(
                "Revision",
                "Revision indicates the revision of the state represented by Data.",
            ),
            AGE,
        ],
        ResourceQuota => vec![
            NAME,
            s(
                "Request",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            s(
                "Limit",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            AGE,
        ],
        PriorityClass => vec![
            NAME,
            int(
                "Value",
                "value represents the integer value of this priority class.",
            ),
            col(
                "Global-Default",
                "boolean",
                "",
                0,
                "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
            ),
            AGE,
            s(
                "PreemptionPolicy",
                "preemptionPolicy is the Policy for preempting pods with lower priority.",
            ),
        ],
        ValidatingAdmissionPolicy => vec![
            NAME,
            int(
                "Validations",
                "Validations indicates the number of validation rules defined in this configuration",
            ),
            s(
                "ParamKind",
                "ParamKind specifies the kind of resources used to parameterize this policy",
            ),
            AGE,
        ],
        ValidatingAdmissionPolicyBinding => vec![
            NAME,
            s(
                "PolicyName",
                "PolicyName indicates the policy definition which the policy binding binded to",
            ),
            s(
                "ParamRef",
                "ParamRef indicates the param resource which sets the configration param",
            ),
            AGE,
        ],
        WebhookConfiguration => vec![
            NAME,
            int(
                "Webhooks",
                "Webhooks indicates the number of webhooks in the configuration",
            ),
            AGE,
        ],
        VolumeAttachment => vec![
            NAME,
            col(
                "Attacher",
                "string",
                "name",
                0,
                "attacher indicates the name of the volume driver that MUST handle this request.",
            ),
            s(
                "PV",
                "persistentVolumeName represents the name of the persistent volume to attach.",
            ),
            s(
                "Node",
                "nodeName represents the node that the volume should be attached to.",
            ),
            col(
                "Attached",
                "boolean",
                "",
                0,
                "attached indicates the volume is successfully attached.",
            ),
            AGE,
        ],
        EndpointSlice => vec![
            NAME,
            s(
                "AddressType",
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            s(
                "Ports",
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            s(
                "Endpoints",
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        CertificateSigningRequest => vec![
            NAME,
            AGE,
            s(
                "SignerName",
                "signerName indicates the requested signer, and is a qualified name.",
            ),
            s(
                "Requestor",
                "username contains the name of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable.",
            ),
            s(
                "RequestedDuration",
                "expirationSeconds is the requested duration of validity of the issued certificate.",
            ),
            s(
                "Condition",
                "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
            ),
        ],
        CSINode => vec![
            NAME,
            int(
                "Drivers",
                "Drivers indicates the number of CSI drivers registered on the node",
            ),
            AGE,
        ],
        CSIDriver => vec![
            NAME,
            col(
                "AttachRequired",
                "boolean",
                "",
                0,
                "attachRequired indicates this CSI volume driver requires an attach operation.",
            ),
            col(
                "PodInfoOnMount",
                "boolean",
                "",
                0,
                "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations.",
            ),
            col(
                "StorageCapacity",
                "boolean",
                "",
                0,
                "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity.",
            ),
            s(
                "TokenRequests",
                "tokenRequests indicates the CSI driver needs pods' service account tokens.",
            ),
            col(
                "RequiresRepublish",
                "boolean",
                "",
                0,
                "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called.",
            ),
            s(
                "Modes",
                "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
            ),
            AGE,
        ],
        CSIStorageCapacity => vec![
            NAME,
            s(
                "StorageClassName",
                "storageClassName represents the name of the StorageClass that the reported capacity applies to.",
            ),
            s(
                "Capacity",
                "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.",
            ),
        ],
    }
}

fn row(printer: Printer, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let mut row = json!({ "cells": cells::cells(printer, obj, now) });
    if printer == Printer::Pod {
        let phase = obj.pointer("/status/phase").and_then(Value::as_str);
        let (reason, message) = match phase {
            Some("Succeeded") => ("Succeeded", "The pod has completed successfully."),
            Some("Failed") => ("Failed", "The pod failed."),
            _ => ("", ""),
        };
        if !reason.is_empty() {
            row["conditions"] = json!([{"type": "Completed", "status": "True",
                                        "reason": reason, "message": message}]);
        }
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
            });
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table of `objects`; `with_columns` is false for the watch events after the first, as Kubernetes does.
pub fn table(
    printer: Printer,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let column_defs: Vec<Value> = if with_columns && let Printer::Custom(custom) = printer {
        std::iter::once(
            json!({"name": NAME.name, "type": NAME.kind, "format": NAME.format,
                               "description": NAME.description, "priority": NAME.priority}),
        )
        .chain(
            crate::apiserver::crd::printer::columns(custom)
                .iter()
                .map(|c| {
                    json!({"name": c.name, "type": c.kind, "format": c.format,
                       "description": c.description, "priority": c.priority})
                }),
        )
        .collect()
    } else if with_columns {
        columns(printer)
            .iter()
            .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_defs,
        "rows": objects.iter().map(|o| row(printer, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::RESOURCES;

    #[test]
    fn every_printer_fills_every_column() {
        let now = jiff::Timestamp::now();
        let empty = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        for r in RESOURCES {
            let n = columns(r.printer).len();
            let c = cells::cells(r.printer, &empty, now);
            assert_eq!(c.len(), n, "{:?}", r.printer);
        }
    }

    #[test]
    fn node_rows_show_status_and_roles() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2020-01-01T00:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0"}}
        });
        let t = table(
            Printer::Node,
            &[node],
            IncludeObject::Metadata,
            json!({}),
            true,
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "NotReady,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[5], "172.18.0.2");
        assert_eq!(cells[6], "<none>");
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(10));
    }
}
