//! The enums of k8s.io/api (v0.33): every `+enum` string type with its values and their doc
//! comments, and the fields of that type. k8s-openapi drops them from its schemas; Kubernetes
//! serves them as `enum` and as a "Possible enum values" paragraph of the field's description,
//! which `kubectl explain` prints.

/// Enum types by Kubernetes name: each value with its line of the "Possible enum values" list.
#[rustfmt::skip]
pub static TYPES: &[(&str, &[(&str, &str)])] = &[
    ("io.k8s.api.admissionregistration.v1.FailurePolicyType", &[
        ("Fail", " - `\"Fail\"` means that an error calling the webhook causes the admission to fail."),
        ("Ignore", " - `\"Ignore\"` means that an error calling the webhook is ignored."),
    ]),
    ("io.k8s.api.admissionregistration.v1.MatchPolicyType", &[
        ("Equivalent", " - `\"Equivalent\"` means requests should be sent to the webhook if they modify a resource listed in rules via another API group or version."),
        ("Exact", " - `\"Exact\"` means requests should only be sent to the webhook if they exactly match a given rule."),
    ]),
    ("io.k8s.api.admissionregistration.v1.ReinvocationPolicyType", &[
        ("IfNeeded", " - `\"IfNeeded\"` indicates that the webhook may be called at least one additional time as part of the admission evaluation if the object being admitted is modified by other admission plugins after the initial webhook call."),
        ("Never", " - `\"Never\"` indicates that the webhook must not be called more than once in a single admission evaluation."),
    ]),
    ("io.k8s.api.admissionregistration.v1.ScopeType", &[
        ("*", " - `\"*\"` means that all scopes are included."),
        ("Cluster", " - `\"Cluster\"` means that scope is limited to cluster-scoped objects. Namespace objects are cluster-scoped."),
        ("Namespaced", " - `\"Namespaced\"` means that scope is limited to namespaced objects."),
    ]),
    ("io.k8s.api.admissionregistration.v1.SideEffectClass", &[
        ("None", " - `\"None\"` means that calling the webhook will have no side effects."),
        ("NoneOnDryRun", " - `\"NoneOnDryRun\"` means that calling the webhook will possibly have side effects, but if the request being reviewed has the dry-run attribute, the side effects will be suppressed."),
        ("Some", " - `\"Some\"` means that calling the webhook will possibly have side effects. If a request with the dry-run attribute would trigger a call to this webhook, the request will instead fail."),
        ("Unknown", " - `\"Unknown\"` means that no information is known about the side effects of calling the webhook. If a request with the dry-run attribute would trigger a call to this webhook, the request will instead fail."),
    ]),
    ("io.k8s.api.admissionregistration.v1alpha1.FailurePolicyType", &[
        ("Fail", " - `\"Fail\"` means that an error calling the admission webhook or admission policy causes resource admission to fail."),
        ("Ignore", " - `\"Ignore\"` means that an error calling the admission webhook or admission policy is ignored."),
    ]),
    ("io.k8s.api.admissionregistration.v1alpha1.MatchPolicyType", &[
        ("Equivalent", " - `\"Equivalent\"` means requests should be sent to the admission webhook or admission policy if they modify a resource listed in rules via an equivalent API group or version. For example, `autoscaling/v1` and `autoscaling/v2` HorizontalPodAutoscalers are equivalent: the same set of resources appear via both APIs."),
        ("Exact", " - `\"Exact\"` means requests should only be sent to the admission webhook or admission policy if they exactly match a given rule."),
    ]),
    ("io.k8s.api.admissionregistration.v1alpha1.ParameterNotFoundActionType", &[
        ("Allow", " - `\"Allow\"` Ignore means that an error finding params for a binding is ignored"),
        ("Deny", " - `\"Deny\"` Fail means that an error finding params for a binding is ignored"),
    ]),
    ("io.k8s.api.admissionregistration.v1alpha1.PatchType", &[
        ("ApplyConfiguration", " - `\"ApplyConfiguration\"` ApplyConfiguration indicates that the mutation is using apply configuration to mutate the object."),
        ("JSONPatch", " - `\"JSONPatch\"` JSONPatch indicates that the object is mutated through JSON Patch."),
    ]),
    ("io.k8s.api.apps.v1.DaemonSetUpdateStrategyType", &[
        ("OnDelete", " - `\"OnDelete\"` Replace the old daemons only when it's killed"),
        ("RollingUpdate", " - `\"RollingUpdate\"` Replace the old daemons by new ones using rolling update i.e replace them on each node one after the other."),
    ]),
    ("io.k8s.api.apps.v1.DeploymentStrategyType", &[
        ("Recreate", " - `\"Recreate\"` Kill all existing pods before creating new ones."),
        ("RollingUpdate", " - `\"RollingUpdate\"` Replace the old ReplicaSets by new one using rolling update i.e gradually scale down the old ReplicaSets and scale up the new one."),
    ]),
    ("io.k8s.api.apps.v1.PodManagementPolicyType", &[
        ("OrderedReady", " - `\"OrderedReady\"` will create pods in strictly increasing order on scale up and strictly decreasing order on scale down, progressing only when the previous pod is ready or terminated. At most one pod will be changed at any time."),
        ("Parallel", " - `\"Parallel\"` will create and delete pods as soon as the stateful set replica count is changed, and will not wait for pods to be ready or complete termination."),
    ]),
    ("io.k8s.api.apps.v1.StatefulSetUpdateStrategyType", &[
        ("OnDelete", " - `\"OnDelete\"` triggers the legacy behavior. Version tracking and ordered rolling restarts are disabled. Pods are recreated from the StatefulSetSpec when they are manually deleted. When a scale operation is performed with this strategy,specification version indicated by the StatefulSet's currentRevision."),
        ("RollingUpdate", " - `\"RollingUpdate\"` indicates that update will be applied to all Pods in the StatefulSet with respect to the StatefulSet ordering constraints. When a scale operation is performed with this strategy, new Pods will be created from the specification version indicated by the StatefulSet's updateRevision."),
    ]),
    ("io.k8s.api.batch.v1.CompletionMode", &[
        ("Indexed", " - `\"Indexed\"` is a Job completion mode. In this mode, the Pods of a Job get an associated completion index from 0 to (.spec.completions - 1). The Job is considered complete when a Pod completes for each completion index."),
        ("NonIndexed", " - `\"NonIndexed\"` is a Job completion mode. In this mode, the Job is considered complete when there have been .spec.completions successfully completed Pods. Pod completions are homologous to each other."),
    ]),
    ("io.k8s.api.batch.v1.ConcurrencyPolicy", &[
        ("Allow", " - `\"Allow\"` allows CronJobs to run concurrently."),
        ("Forbid", " - `\"Forbid\"` forbids concurrent runs, skipping next run if previous hasn't finished yet."),
        ("Replace", " - `\"Replace\"` cancels currently running job and replaces it with a new one."),
    ]),
    ("io.k8s.api.batch.v1.PodFailurePolicyAction", &[
        ("Count", " - `\"Count\"` This is an action which might be taken on a pod failure - the pod failure is handled in the default way - the counter towards .backoffLimit, represented by the job's .status.failed field, is incremented."),
        ("FailIndex", " - `\"FailIndex\"` This is an action which might be taken on a pod failure - mark the Job's index as failed to avoid restarts within this index. This action can only be used when backoffLimitPerIndex is set."),
        ("FailJob", " - `\"FailJob\"` This is an action which might be taken on a pod failure - mark the pod's job as Failed and terminate all running pods."),
        ("Ignore", " - `\"Ignore\"` This is an action which might be taken on a pod failure - the counter towards .backoffLimit, represented by the job's .status.failed field, is not incremented and a replacement pod is created."),
    ]),
    ("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesOperator", &[
        ("In", " - `\"In\"` "),
        ("NotIn", " - `\"NotIn\"` "),
    ]),
    ("io.k8s.api.batch.v1.PodReplacementPolicy", &[
        ("Failed", " - `\"Failed\"` means to wait until a previously created Pod is fully terminated (has phase Failed or Succeeded) before creating a replacement Pod."),
        ("TerminatingOrFailed", " - `\"TerminatingOrFailed\"` means that we recreate pods when they are terminating (has a metadata.deletionTimestamp) or failed."),
    ]),
    ("io.k8s.api.core.v1.AppArmorProfileType", &[
        ("Localhost", " - `\"Localhost\"` indicates that a profile pre-loaded on the node should be used."),
        ("RuntimeDefault", " - `\"RuntimeDefault\"` indicates that the container runtime's default AppArmor profile should be used."),
        ("Unconfined", " - `\"Unconfined\"` indicates that no AppArmor profile should be enforced."),
    ]),
    ("io.k8s.api.core.v1.AzureDataDiskCachingMode", &[
        ("None", " - `\"None\"` "),
        ("ReadOnly", " - `\"ReadOnly\"` "),
        ("ReadWrite", " - `\"ReadWrite\"` "),
    ]),
    ("io.k8s.api.core.v1.AzureDataDiskKind", &[
        ("Dedicated", " - `\"Dedicated\"` "),
        ("Managed", " - `\"Managed\"` "),
        ("Shared", " - `\"Shared\"` "),
    ]),
    ("io.k8s.api.core.v1.DNSPolicy", &[
        ("ClusterFirst", " - `\"ClusterFirst\"` indicates that the pod should use cluster DNS first unless hostNetwork is true, if it is available, then fall back on the default (as determined by kubelet) DNS settings."),
        ("ClusterFirstWithHostNet", " - `\"ClusterFirstWithHostNet\"` indicates that the pod should use cluster DNS first, if it is available, then fall back on the default (as determined by kubelet) DNS settings."),
        ("Default", " - `\"Default\"` indicates that the pod should use the default (as determined by kubelet) DNS settings."),
        ("None", " - `\"None\"` indicates that the pod should use empty DNS settings. DNS parameters such as nameservers and search paths should be defined via DNSConfig."),
    ]),
    ("io.k8s.api.core.v1.HostPathType", &[
        ("", " - `\"\"` For backwards compatible, leave it empty if unset"),
        ("BlockDevice", " - `\"BlockDevice\"` A block device must exist at the given path"),
        ("CharDevice", " - `\"CharDevice\"` A character device must exist at the given path"),
        ("Directory", " - `\"Directory\"` A directory must exist at the given path"),
        ("DirectoryOrCreate", " - `\"DirectoryOrCreate\"` If nothing exists at the given path, an empty directory will be created there as needed with file mode 0755, having the same group and ownership with Kubelet."),
        ("File", " - `\"File\"` A file must exist at the given path"),
        ("FileOrCreate", " - `\"FileOrCreate\"` If nothing exists at the given path, an empty file will be created there as needed with file mode 0644, having the same group and ownership with Kubelet."),
        ("Socket", " - `\"Socket\"` A UNIX socket must exist at the given path"),
    ]),
    ("io.k8s.api.core.v1.IPFamilyPolicy", &[
        ("PreferDualStack", " - `\"PreferDualStack\"` indicates that this service prefers dual-stack when the cluster is configured for dual-stack. If the cluster is not configured for dual-stack the service will be assigned a single IPFamily. If the IPFamily is not set in service.spec.ipFamilies then the service will be assigned the default IPFamily configured on the cluster"),
        ("RequireDualStack", " - `\"RequireDualStack\"` indicates that this service requires dual-stack. Using IPFamilyPolicyRequireDualStack on a single stack cluster will result in validation errors. The IPFamilies (and their order) assigned to this service is based on service.spec.ipFamilies. If service.spec.ipFamilies was not provided then it will be assigned according to how they are configured on the cluster. If service.spec.ipFamilies has only one entry then the alternative IPFamily will be added by apiserver"),
        ("SingleStack", " - `\"SingleStack\"` indicates that this service is required to have a single IPFamily. The IPFamily assigned is based on the default IPFamily used by the cluster or as identified by service.spec.ipFamilies field"),
    ]),
    ("io.k8s.api.core.v1.MountPropagationMode", &[
        ("Bidirectional", " - `\"Bidirectional\"` means that the volume in a container will receive new mounts from the host or other containers, and its own mounts will be propagated from the container to the host or other containers. Note that this mode is recursively applied to all mounts in the volume (\"rshared\" in Linux terminology)."),
        ("HostToContainer", " - `\"HostToContainer\"` means that the volume in a container will receive new mounts from the host or other containers, but filesystems mounted inside the container won't be propagated to the host or other containers. Note that this mode is recursively applied to all mounts in the volume (\"rslave\" in Linux terminology)."),
        ("None", " - `\"None\"` means that the volume in a container will not receive new mounts from the host or other containers, and filesystems mounted inside the container won't be propagated to the host or other containers. Note that this mode corresponds to \"private\" in Linux terminology."),
    ]),
    ("io.k8s.api.core.v1.NamespacePhase", &[
        ("Active", " - `\"Active\"` means the namespace is available for use in the system"),
        ("Terminating", " - `\"Terminating\"` means the namespace is undergoing graceful termination"),
    ]),
    ("io.k8s.api.core.v1.NodeInclusionPolicy", &[
        ("Honor", " - `\"Honor\"` means use this scheduling directive when calculating pod topology spread skew."),
        ("Ignore", " - `\"Ignore\"` means ignore this scheduling directive when calculating pod topology spread skew."),
    ]),
    ("io.k8s.api.core.v1.NodePhase", &[
        ("Pending", " - `\"Pending\"` means the node has been created/added by the system, but not configured."),
        ("Running", " - `\"Running\"` means the node has been configured and has Kubernetes components running."),
        ("Terminated", " - `\"Terminated\"` means the node has been removed from the cluster."),
    ]),
    ("io.k8s.api.core.v1.NodeSelectorOperator", &[
        ("DoesNotExist", " - `\"DoesNotExist\"` "),
        ("Exists", " - `\"Exists\"` "),
        ("Gt", " - `\"Gt\"` "),
        ("In", " - `\"In\"` "),
        ("Lt", " - `\"Lt\"` "),
        ("NotIn", " - `\"NotIn\"` "),
    ]),
    ("io.k8s.api.core.v1.PersistentVolumeClaimModifyVolumeStatus", &[
        ("InProgress", " - `\"InProgress\"` InProgress indicates that the volume is being modified"),
        ("Infeasible", " - `\"Infeasible\"` Infeasible indicates that the request has been rejected as invalid by the CSI driver. To resolve the error, a valid VolumeAttributesClass needs to be specified"),
        ("Pending", " - `\"Pending\"` Pending indicates that the PersistentVolumeClaim cannot be modified due to unmet requirements, such as the specified VolumeAttributesClass not existing"),
    ]),
    ("io.k8s.api.core.v1.PersistentVolumeClaimPhase", &[
        ("Bound", " - `\"Bound\"` used for PersistentVolumeClaims that are bound"),
        ("Lost", " - `\"Lost\"` used for PersistentVolumeClaims that lost their underlying PersistentVolume. The claim was bound to a PersistentVolume and this volume does not exist any longer and all data on it was lost."),
        ("Pending", " - `\"Pending\"` used for PersistentVolumeClaims that are not yet bound"),
    ]),
    ("io.k8s.api.core.v1.PersistentVolumeMode", &[
        ("Block", " - `\"Block\"` means the volume will not be formatted with a filesystem and will remain a raw block device."),
        ("Filesystem", " - `\"Filesystem\"` means the volume will be or is formatted with a filesystem."),
    ]),
    ("io.k8s.api.core.v1.PersistentVolumePhase", &[
        ("Available", " - `\"Available\"` used for PersistentVolumes that are not yet bound Available volumes are held by the binder and matched to PersistentVolumeClaims"),
        ("Bound", " - `\"Bound\"` used for PersistentVolumes that are bound"),
        ("Failed", " - `\"Failed\"` used for PersistentVolumes that failed to be correctly recycled or deleted after being released from a claim"),
        ("Pending", " - `\"Pending\"` used for PersistentVolumes that are not available"),
        ("Released", " - `\"Released\"` used for PersistentVolumes where the bound PersistentVolumeClaim was deleted released volumes must be recycled before becoming available again this phase is used by the persistent volume claim binder to signal to another process to reclaim the resource"),
    ]),
    ("io.k8s.api.core.v1.PersistentVolumeReclaimPolicy", &[
        ("Delete", " - `\"Delete\"` means the volume will be deleted from Kubernetes on release from its claim. The volume plugin must support Deletion."),
        ("Recycle", " - `\"Recycle\"` means the volume will be recycled back into the pool of unbound persistent volumes on release from its claim. The volume plugin must support Recycling."),
        ("Retain", " - `\"Retain\"` means the volume will be left in its current phase (Released) for manual reclamation by the administrator. The default policy is Retain."),
    ]),
    ("io.k8s.api.core.v1.PodFSGroupChangePolicy", &[
        ("Always", " - `\"Always\"` indicates that volume's ownership and permissions should always be changed whenever volume is mounted inside a Pod. This the default behavior."),
        ("OnRootMismatch", " - `\"OnRootMismatch\"` indicates that volume's ownership and permissions will be changed only when permission and ownership of root directory does not match with expected permissions on the volume. This can help shorten the time it takes to change ownership and permissions of a volume."),
    ]),
    ("io.k8s.api.core.v1.PodPhase", &[
        ("Failed", " - `\"Failed\"` means that all containers in the pod have terminated, and at least one container has terminated in a failure (exited with a non-zero exit code or was stopped by the system)."),
        ("Pending", " - `\"Pending\"` means the pod has been accepted by the system, but one or more of the containers has not been started. This includes time before being bound to a node, as well as time spent pulling images onto the host."),
        ("Running", " - `\"Running\"` means the pod has been bound to a node and all of the containers have been started. At least one container is still running or is in the process of being restarted."),
        ("Succeeded", " - `\"Succeeded\"` means that all containers in the pod have voluntarily terminated with a container exit code of 0, and the system is not going to restart any of these containers."),
        ("Unknown", " - `\"Unknown\"` means that for some reason the state of the pod could not be obtained, typically due to an error in communicating with the host of the pod. Deprecated: It isn't being set since 2015 (74da3b14b0c0f658b3bb8d2def5094686d0e9095)"),
    ]),
    ("io.k8s.api.core.v1.PodQOSClass", &[
        ("BestEffort", " - `\"BestEffort\"` is the BestEffort qos class."),
        ("Burstable", " - `\"Burstable\"` is the Burstable qos class."),
        ("Guaranteed", " - `\"Guaranteed\"` is the Guaranteed qos class."),
    ]),
    ("io.k8s.api.core.v1.PreemptionPolicy", &[
        ("Never", " - `\"Never\"` means that pod never preempts other pods with lower priority."),
        ("PreemptLowerPriority", " - `\"PreemptLowerPriority\"` means that pod can preempt other pods with lower priority."),
    ]),
    ("io.k8s.api.core.v1.ProcMountType", &[
        ("Default", " - `\"Default\"` uses the container runtime defaults for readonly and masked paths for /proc. Most container runtimes mask certain paths in /proc to avoid accidental security exposure of special devices or information."),
        ("Unmasked", " - `\"Unmasked\"` bypasses the default masking behavior of the container runtime and ensures the newly created /proc the container stays in tact with no modifications."),
    ]),
    ("io.k8s.api.core.v1.Protocol", &[
        ("SCTP", " - `\"SCTP\"` is the SCTP protocol."),
        ("TCP", " - `\"TCP\"` is the TCP protocol."),
        ("UDP", " - `\"UDP\"` is the UDP protocol."),
    ]),
    ("io.k8s.api.core.v1.PullPolicy", &[
        ("Always", " - `\"Always\"` means that kubelet always attempts to pull the latest image. Container will fail If the pull fails."),
        ("IfNotPresent", " - `\"IfNotPresent\"` means that kubelet pulls if the image isn't present on disk. Container will fail if the image isn't present and the pull fails."),
        ("Never", " - `\"Never\"` means that kubelet never pulls an image, but only uses a local image. Container will fail if the image isn't present"),
    ]),
    ("io.k8s.api.core.v1.ResourceQuotaScope", &[
        ("BestEffort", " - `\"BestEffort\"` Match all pod objects that have best effort quality of service"),
        ("CrossNamespacePodAffinity", " - `\"CrossNamespacePodAffinity\"` Match all pod objects that have cross-namespace pod (anti)affinity mentioned."),
        ("NotBestEffort", " - `\"NotBestEffort\"` Match all pod objects that do not have best effort quality of service"),
        ("NotTerminating", " - `\"NotTerminating\"` Match all pod objects where spec.activeDeadlineSeconds is nil"),
        ("PriorityClass", " - `\"PriorityClass\"` Match all pod objects that have priority class mentioned"),
        ("Terminating", " - `\"Terminating\"` Match all pod objects where spec.activeDeadlineSeconds >=0"),
        ("VolumeAttributesClass", " - `\"VolumeAttributesClass\"` Match all pvc objects that have volume attributes class mentioned."),
    ]),
    ("io.k8s.api.core.v1.RestartPolicy", &[
        ("Always", " - `\"Always\"` "),
        ("Never", " - `\"Never\"` "),
        ("OnFailure", " - `\"OnFailure\"` "),
    ]),
    ("io.k8s.api.core.v1.ScopeSelectorOperator", &[
        ("DoesNotExist", " - `\"DoesNotExist\"` "),
        ("Exists", " - `\"Exists\"` "),
        ("In", " - `\"In\"` "),
        ("NotIn", " - `\"NotIn\"` "),
    ]),
    ("io.k8s.api.core.v1.SeccompProfileType", &[
        ("Localhost", " - `\"Localhost\"` indicates a profile defined in a file on the node should be used. The file's location relative to <kubelet-root-dir>/seccomp."),
        ("RuntimeDefault", " - `\"RuntimeDefault\"` represents the default container runtime seccomp profile."),
        ("Unconfined", " - `\"Unconfined\"` indicates no seccomp profile is applied (A.K.A. unconfined)."),
    ]),
    ("io.k8s.api.core.v1.ServiceAffinity", &[
        ("ClientIP", " - `\"ClientIP\"` is the Client IP based."),
        ("None", " - `\"None\"` - no session affinity."),
    ]),
    ("io.k8s.api.core.v1.ServiceExternalTrafficPolicy", &[
        ("Cluster", " - `\"Cluster\"` routes traffic to all endpoints."),
        ("Local", " - `\"Local\"` preserves the source IP of the traffic by routing only to endpoints on the same node as the traffic was received on (dropping the traffic if there are no local endpoints)."),
    ]),
    ("io.k8s.api.core.v1.ServiceInternalTrafficPolicy", &[
        ("Cluster", " - `\"Cluster\"` routes traffic to all endpoints."),
        ("Local", " - `\"Local\"` routes traffic only to endpoints on the same node as the client pod (dropping the traffic if there are no local endpoints)."),
    ]),
    ("io.k8s.api.core.v1.ServiceType", &[
        ("ClusterIP", " - `\"ClusterIP\"` means a service will only be accessible inside the cluster, via the cluster IP."),
        ("ExternalName", " - `\"ExternalName\"` means a service consists of only a reference to an external name that kubedns or equivalent will return as a CNAME record, with no exposing or proxying of any pods involved."),
        ("LoadBalancer", " - `\"LoadBalancer\"` means a service will be exposed via an external load balancer (if the cloud provider supports it), in addition to 'NodePort' type."),
        ("NodePort", " - `\"NodePort\"` means a service will be exposed on one port of every node, in addition to 'ClusterIP' type."),
    ]),
    ("io.k8s.api.core.v1.Signal", &[
        ("SIGABRT", " - `\"SIGABRT\"` "),
        ("SIGALRM", " - `\"SIGALRM\"` "),
        ("SIGBUS", " - `\"SIGBUS\"` "),
        ("SIGCHLD", " - `\"SIGCHLD\"` "),
        ("SIGCLD", " - `\"SIGCLD\"` "),
        ("SIGCONT", " - `\"SIGCONT\"` "),
        ("SIGFPE", " - `\"SIGFPE\"` "),
        ("SIGHUP", " - `\"SIGHUP\"` "),
        ("SIGILL", " - `\"SIGILL\"` "),
        ("SIGINT", " - `\"SIGINT\"` "),
        ("SIGIO", " - `\"SIGIO\"` "),
        ("SIGIOT", " - `\"SIGIOT\"` "),
        ("SIGKILL", " - `\"SIGKILL\"` "),
        ("SIGPIPE", " - `\"SIGPIPE\"` "),
        ("SIGPOLL", " - `\"SIGPOLL\"` "),
        ("SIGPROF", " - `\"SIGPROF\"` "),
        ("SIGPWR", " - `\"SIGPWR\"` "),
        ("SIGQUIT", " - `\"SIGQUIT\"` "),
        ("SIGRTMAX", " - `\"SIGRTMAX\"` "),
        ("SIGRTMAX-1", " - `\"SIGRTMAX-1\"` "),
        ("SIGRTMAX-10", " - `\"SIGRTMAX-10\"` "),
        ("SIGRTMAX-11", " - `\"SIGRTMAX-11\"` "),
        ("SIGRTMAX-12", " - `\"SIGRTMAX-12\"` "),
        ("SIGRTMAX-13", " - `\"SIGRTMAX-13\"` "),
        ("SIGRTMAX-14", " - `\"SIGRTMAX-14\"` "),
        ("SIGRTMAX-2", " - `\"SIGRTMAX-2\"` "),
        ("SIGRTMAX-3", " - `\"SIGRTMAX-3\"` "),
        ("SIGRTMAX-4", " - `\"SIGRTMAX-4\"` "),
        ("SIGRTMAX-5", " - `\"SIGRTMAX-5\"` "),
        ("SIGRTMAX-6", " - `\"SIGRTMAX-6\"` "),
        ("SIGRTMAX-7", " - `\"SIGRTMAX-7\"` "),
        ("SIGRTMAX-8", " - `\"SIGRTMAX-8\"` "),
        ("SIGRTMAX-9", " - `\"SIGRTMAX-9\"` "),
        ("SIGRTMIN", " - `\"SIGRTMIN\"` "),
        ("SIGRTMIN+1", " - `\"SIGRTMIN+1\"` "),
        ("SIGRTMIN+10", " - `\"SIGRTMIN+10\"` "),
        ("SIGRTMIN+11", " - `\"SIGRTMIN+11\"` "),
        ("SIGRTMIN+12", " - `\"SIGRTMIN+12\"` "),
        ("SIGRTMIN+13", " - `\"SIGRTMIN+13\"` "),
        ("SIGRTMIN+14", " - `\"SIGRTMIN+14\"` "),
        ("SIGRTMIN+15", " - `\"SIGRTMIN+15\"` "),
        ("SIGRTMIN+2", " - `\"SIGRTMIN+2\"` "),
        ("SIGRTMIN+3", " - `\"SIGRTMIN+3\"` "),
        ("SIGRTMIN+4", " - `\"SIGRTMIN+4\"` "),
        ("SIGRTMIN+5", " - `\"SIGRTMIN+5\"` "),
        ("SIGRTMIN+6", " - `\"SIGRTMIN+6\"` "),
        ("SIGRTMIN+7", " - `\"SIGRTMIN+7\"` "),
        ("SIGRTMIN+8", " - `\"SIGRTMIN+8\"` "),
        ("SIGRTMIN+9", " - `\"SIGRTMIN+9\"` "),
        ("SIGSEGV", " - `\"SIGSEGV\"` "),
        ("SIGSTKFLT", " - `\"SIGSTKFLT\"` "),
        ("SIGSTOP", " - `\"SIGSTOP\"` "),
        ("SIGSYS", " - `\"SIGSYS\"` "),
        ("SIGTERM", " - `\"SIGTERM\"` "),
        ("SIGTRAP", " - `\"SIGTRAP\"` "),
        ("SIGTSTP", " - `\"SIGTSTP\"` "),
        ("SIGTTIN", " - `\"SIGTTIN\"` "),
        ("SIGTTOU", " - `\"SIGTTOU\"` "),
        ("SIGURG", " - `\"SIGURG\"` "),
        ("SIGUSR1", " - `\"SIGUSR1\"` "),
        ("SIGUSR2", " - `\"SIGUSR2\"` "),
        ("SIGVTALRM", " - `\"SIGVTALRM\"` "),
        ("SIGWINCH", " - `\"SIGWINCH\"` "),
        ("SIGXCPU", " - `\"SIGXCPU\"` "),
        ("SIGXFSZ", " - `\"SIGXFSZ\"` "),
    ]),
    ("io.k8s.api.core.v1.SupplementalGroupsPolicy", &[
        ("Merge", " - `\"Merge\"` means that the container's provided SupplementalGroups and FsGroup (specified in SecurityContext) will be merged with the primary user's groups as defined in the container image (in /etc/group)."),
        ("Strict", " - `\"Strict\"` means that the container's provided SupplementalGroups and FsGroup (specified in SecurityContext) will be used instead of any groups defined in the container image."),
    ]),
    ("io.k8s.api.core.v1.TaintEffect", &[
        ("NoExecute", " - `\"NoExecute\"` Evict any already-running pods that do not tolerate the taint. Currently enforced by NodeController."),
        ("NoSchedule", " - `\"NoSchedule\"` Do not allow new pods to schedule onto the node unless they tolerate the taint, but allow all pods submitted to Kubelet without going through the scheduler to start, and allow all already-running pods to continue running. Enforced by the scheduler."),
        ("PreferNoSchedule", " - `\"PreferNoSchedule\"` Like TaintEffectNoSchedule, but the scheduler tries not to schedule new pods onto the node, rather than prohibiting new pods from scheduling onto the node entirely. Enforced by the scheduler."),
    ]),
    ("io.k8s.api.core.v1.TerminationMessagePolicy", &[
        ("FallbackToLogsOnError", " - `\"FallbackToLogsOnError\"` will read the most recent contents of the container logs for the container status message when the container exits with an error and the terminationMessagePath has no contents."),
        ("File", " - `\"File\"` is the default behavior and will set the container status message to the contents of the container's terminationMessagePath when the container exits."),
    ]),
    ("io.k8s.api.core.v1.TolerationOperator", &[
        ("Equal", " - `\"Equal\"` "),
        ("Exists", " - `\"Exists\"` "),
    ]),
    ("io.k8s.api.core.v1.URIScheme", &[
        ("HTTP", " - `\"HTTP\"` means that the scheme used will be http://"),
        ("HTTPS", " - `\"HTTPS\"` means that the scheme used will be https://"),
    ]),
    ("io.k8s.api.core.v1.UnsatisfiableConstraintAction", &[
        ("DoNotSchedule", " - `\"DoNotSchedule\"` instructs the scheduler not to schedule the pod when constraints are not satisfied."),
        ("ScheduleAnyway", " - `\"ScheduleAnyway\"` instructs the scheduler to schedule the pod even if constraints are not satisfied."),
    ]),
    ("io.k8s.api.policy.v1.UnhealthyPodEvictionPolicyType", &[
        ("AlwaysAllow", " - `\"AlwaysAllow\"` policy means that all running pods (status.phase=\"Running\"), but not yet healthy are considered disrupted and can be evicted regardless of whether the criteria in a PDB is met. This means perspective running pods of a disrupted application might not get a chance to become healthy. Healthy pods will be subject to the PDB for eviction."),
        ("IfHealthyBudget", " - `\"IfHealthyBudget\"` policy means that running pods (status.phase=\"Running\"), but not yet healthy can be evicted only if the guarded application is not disrupted (status.currentHealthy is at least equal to status.desiredHealthy). Healthy pods will be subject to the PDB for eviction."),
    ]),
    ("io.k8s.api.resource.v1alpha3.DeviceTaintEffect", &[
        ("NoExecute", " - `\"NoExecute\"` Evict any already-running pods that do not tolerate the device taint."),
        ("NoSchedule", " - `\"NoSchedule\"` Do not allow new pods to schedule which use a tainted device unless they tolerate the taint, but allow all pods submitted to Kubelet without going through the scheduler to start, and allow all already-running pods to continue running."),
    ]),
    ("io.k8s.api.resource.v1alpha3.DeviceTolerationOperator", &[
        ("Equal", " - `\"Equal\"` "),
        ("Exists", " - `\"Exists\"` "),
    ]),
    ("io.k8s.api.resource.v1beta1.DeviceTaintEffect", &[
        ("NoExecute", " - `\"NoExecute\"` Evict any already-running pods that do not tolerate the device taint."),
        ("NoSchedule", " - `\"NoSchedule\"` Do not allow new pods to schedule which use a tainted device unless they tolerate the taint, but allow all pods submitted to Kubelet without going through the scheduler to start, and allow all already-running pods to continue running."),
    ]),
    ("io.k8s.api.resource.v1beta1.DeviceTolerationOperator", &[
        ("Equal", " - `\"Equal\"` "),
        ("Exists", " - `\"Exists\"` "),
    ]),
    ("io.k8s.api.resource.v1beta2.DeviceTaintEffect", &[
        ("NoExecute", " - `\"NoExecute\"` Evict any already-running pods that do not tolerate the device taint."),
        ("NoSchedule", " - `\"NoSchedule\"` Do not allow new pods to schedule which use a tainted device unless they tolerate the taint, but allow all pods submitted to Kubelet without going through the scheduler to start, and allow all already-running pods to continue running."),
    ]),
    ("io.k8s.api.resource.v1beta2.DeviceTolerationOperator", &[
        ("Equal", " - `\"Equal\"` "),
        ("Exists", " - `\"Exists\"` "),
    ]),
    ("io.k8s.api.storage.v1.VolumeBindingMode", &[
        ("Immediate", " - `\"Immediate\"` indicates that PersistentVolumeClaims should be immediately provisioned and bound. This is the default mode."),
        ("WaitForFirstConsumer", " - `\"WaitForFirstConsumer\"` indicates that PersistentVolumeClaims should not be provisioned and bound until the first Pod is created that references the PeristentVolumeClaim. The volume provisioning and binding will occur during Pod scheduing."),
    ]),
];

/// Fields whose type is one of `TYPES`: (type, field, enum type).
#[rustfmt::skip]
pub static FIELDS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.admissionregistration.v1.MatchResources", "matchPolicy", "io.k8s.api.admissionregistration.v1.MatchPolicyType"),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "failurePolicy", "io.k8s.api.admissionregistration.v1.FailurePolicyType"),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "matchPolicy", "io.k8s.api.admissionregistration.v1.MatchPolicyType"),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "reinvocationPolicy", "io.k8s.api.admissionregistration.v1.ReinvocationPolicyType"),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "sideEffects", "io.k8s.api.admissionregistration.v1.SideEffectClass"),
    ("io.k8s.api.admissionregistration.v1.NamedRuleWithOperations", "scope", "io.k8s.api.admissionregistration.v1.ScopeType"),
    ("io.k8s.api.admissionregistration.v1.RuleWithOperations", "scope", "io.k8s.api.admissionregistration.v1.ScopeType"),
    ("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "failurePolicy", "io.k8s.api.admissionregistration.v1.FailurePolicyType"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "failurePolicy", "io.k8s.api.admissionregistration.v1.FailurePolicyType"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "matchPolicy", "io.k8s.api.admissionregistration.v1.MatchPolicyType"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "sideEffects", "io.k8s.api.admissionregistration.v1.SideEffectClass"),
    ("io.k8s.api.admissionregistration.v1alpha1.MatchResources", "matchPolicy", "io.k8s.api.admissionregistration.v1alpha1.MatchPolicyType"),
    ("io.k8s.api.admissionregistration.v1alpha1.MutatingAdmissionPolicySpec", "failurePolicy", "io.k8s.api.admissionregistration.v1alpha1.FailurePolicyType"),
    ("io.k8s.api.admissionregistration.v1alpha1.Mutation", "patchType", "io.k8s.api.admissionregistration.v1alpha1.PatchType"),
    ("io.k8s.api.admissionregistration.v1alpha1.ParamRef", "parameterNotFoundAction", "io.k8s.api.admissionregistration.v1alpha1.ParameterNotFoundActionType"),
    ("io.k8s.api.apps.v1.DaemonSetUpdateStrategy", "type", "io.k8s.api.apps.v1.DaemonSetUpdateStrategyType"),
    ("io.k8s.api.apps.v1.DeploymentStrategy", "type", "io.k8s.api.apps.v1.DeploymentStrategyType"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "podManagementPolicy", "io.k8s.api.apps.v1.PodManagementPolicyType"),
    ("io.k8s.api.apps.v1.StatefulSetUpdateStrategy", "type", "io.k8s.api.apps.v1.StatefulSetUpdateStrategyType"),
    ("io.k8s.api.batch.v1.CronJobSpec", "concurrencyPolicy", "io.k8s.api.batch.v1.ConcurrencyPolicy"),
    ("io.k8s.api.batch.v1.JobSpec", "completionMode", "io.k8s.api.batch.v1.CompletionMode"),
    ("io.k8s.api.batch.v1.JobSpec", "podReplacementPolicy", "io.k8s.api.batch.v1.PodReplacementPolicy"),
    ("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", "operator", "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesOperator"),
    ("io.k8s.api.batch.v1.PodFailurePolicyRule", "action", "io.k8s.api.batch.v1.PodFailurePolicyAction"),
    ("io.k8s.api.core.v1.AppArmorProfile", "type", "io.k8s.api.core.v1.AppArmorProfileType"),
    ("io.k8s.api.core.v1.AzureDiskVolumeSource", "cachingMode", "io.k8s.api.core.v1.AzureDataDiskCachingMode"),
    ("io.k8s.api.core.v1.AzureDiskVolumeSource", "kind", "io.k8s.api.core.v1.AzureDataDiskKind"),
    ("io.k8s.api.core.v1.Container", "imagePullPolicy", "io.k8s.api.core.v1.PullPolicy"),
    ("io.k8s.api.core.v1.Container", "terminationMessagePolicy", "io.k8s.api.core.v1.TerminationMessagePolicy"),
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.core.v1.ContainerStatus", "stopSignal", "io.k8s.api.core.v1.Signal"),
    ("io.k8s.api.core.v1.EndpointPort", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.core.v1.EphemeralContainer", "imagePullPolicy", "io.k8s.api.core.v1.PullPolicy"),
    ("io.k8s.api.core.v1.EphemeralContainer", "terminationMessagePolicy", "io.k8s.api.core.v1.TerminationMessagePolicy"),
    ("io.k8s.api.core.v1.HTTPGetAction", "scheme", "io.k8s.api.core.v1.URIScheme"),
    ("io.k8s.api.core.v1.HostPathVolumeSource", "type", "io.k8s.api.core.v1.HostPathType"),
    ("io.k8s.api.core.v1.ImageVolumeSource", "pullPolicy", "io.k8s.api.core.v1.PullPolicy"),
    ("io.k8s.api.core.v1.Lifecycle", "stopSignal", "io.k8s.api.core.v1.Signal"),
    ("io.k8s.api.core.v1.ModifyVolumeStatus", "status", "io.k8s.api.core.v1.PersistentVolumeClaimModifyVolumeStatus"),
    ("io.k8s.api.core.v1.NamespaceStatus", "phase", "io.k8s.api.core.v1.NamespacePhase"),
    ("io.k8s.api.core.v1.NodeSelectorRequirement", "operator", "io.k8s.api.core.v1.NodeSelectorOperator"),
    ("io.k8s.api.core.v1.NodeStatus", "phase", "io.k8s.api.core.v1.NodePhase"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeMode", "io.k8s.api.core.v1.PersistentVolumeMode"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "phase", "io.k8s.api.core.v1.PersistentVolumeClaimPhase"),
    ("io.k8s.api.core.v1.PersistentVolumeSpec", "persistentVolumeReclaimPolicy", "io.k8s.api.core.v1.PersistentVolumeReclaimPolicy"),
    ("io.k8s.api.core.v1.PersistentVolumeSpec", "volumeMode", "io.k8s.api.core.v1.PersistentVolumeMode"),
    ("io.k8s.api.core.v1.PersistentVolumeStatus", "phase", "io.k8s.api.core.v1.PersistentVolumePhase"),
    ("io.k8s.api.core.v1.PodSecurityContext", "fsGroupChangePolicy", "io.k8s.api.core.v1.PodFSGroupChangePolicy"),
    ("io.k8s.api.core.v1.PodSecurityContext", "supplementalGroupsPolicy", "io.k8s.api.core.v1.SupplementalGroupsPolicy"),
    ("io.k8s.api.core.v1.PodSpec", "dnsPolicy", "io.k8s.api.core.v1.DNSPolicy"),
    ("io.k8s.api.core.v1.PodSpec", "preemptionPolicy", "io.k8s.api.core.v1.PreemptionPolicy"),
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy", "io.k8s.api.core.v1.RestartPolicy"),
    ("io.k8s.api.core.v1.PodStatus", "phase", "io.k8s.api.core.v1.PodPhase"),
    ("io.k8s.api.core.v1.PodStatus", "qosClass", "io.k8s.api.core.v1.PodQOSClass"),
    ("io.k8s.api.core.v1.PortStatus", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.core.v1.ScopedResourceSelectorRequirement", "operator", "io.k8s.api.core.v1.ScopeSelectorOperator"),
    ("io.k8s.api.core.v1.ScopedResourceSelectorRequirement", "scopeName", "io.k8s.api.core.v1.ResourceQuotaScope"),
    ("io.k8s.api.core.v1.SeccompProfile", "type", "io.k8s.api.core.v1.SeccompProfileType"),
    ("io.k8s.api.core.v1.SecurityContext", "procMount", "io.k8s.api.core.v1.ProcMountType"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.core.v1.ServiceSpec", "externalTrafficPolicy", "io.k8s.api.core.v1.ServiceExternalTrafficPolicy"),
    ("io.k8s.api.core.v1.ServiceSpec", "internalTrafficPolicy", "io.k8s.api.core.v1.ServiceInternalTrafficPolicy"),
    ("io.k8s.api.core.v1.ServiceSpec", "ipFamilyPolicy", "io.k8s.api.core.v1.IPFamilyPolicy"),
    ("io.k8s.api.core.v1.ServiceSpec", "sessionAffinity", "io.k8s.api.core.v1.ServiceAffinity"),
    ("io.k8s.api.core.v1.ServiceSpec", "type", "io.k8s.api.core.v1.ServiceType"),
    ("io.k8s.api.core.v1.Taint", "effect", "io.k8s.api.core.v1.TaintEffect"),
    ("io.k8s.api.core.v1.Toleration", "effect", "io.k8s.api.core.v1.TaintEffect"),
    ("io.k8s.api.core.v1.Toleration", "operator", "io.k8s.api.core.v1.TolerationOperator"),
    ("io.k8s.api.core.v1.TopologySpreadConstraint", "nodeAffinityPolicy", "io.k8s.api.core.v1.NodeInclusionPolicy"),
    ("io.k8s.api.core.v1.TopologySpreadConstraint", "nodeTaintsPolicy", "io.k8s.api.core.v1.NodeInclusionPolicy"),
    ("io.k8s.api.core.v1.TopologySpreadConstraint", "whenUnsatisfiable", "io.k8s.api.core.v1.UnsatisfiableConstraintAction"),
    ("io.k8s.api.core.v1.VolumeMount", "mountPropagation", "io.k8s.api.core.v1.MountPropagationMode"),
    ("io.k8s.api.discovery.v1.EndpointPort", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.networking.v1.IngressPortStatus", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.networking.v1.NetworkPolicyPort", "protocol", "io.k8s.api.core.v1.Protocol"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "unhealthyPodEvictionPolicy", "io.k8s.api.policy.v1.UnhealthyPodEvictionPolicyType"),
    ("io.k8s.api.resource.v1alpha3.DeviceTaint", "effect", "io.k8s.api.resource.v1alpha3.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1alpha3.DeviceToleration", "effect", "io.k8s.api.resource.v1alpha3.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1alpha3.DeviceToleration", "operator", "io.k8s.api.resource.v1alpha3.DeviceTolerationOperator"),
    ("io.k8s.api.resource.v1beta1.DeviceTaint", "effect", "io.k8s.api.resource.v1beta1.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1beta1.DeviceToleration", "effect", "io.k8s.api.resource.v1beta1.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1beta1.DeviceToleration", "operator", "io.k8s.api.resource.v1beta1.DeviceTolerationOperator"),
    ("io.k8s.api.resource.v1beta2.DeviceTaint", "effect", "io.k8s.api.resource.v1beta2.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1beta2.DeviceToleration", "effect", "io.k8s.api.resource.v1beta2.DeviceTaintEffect"),
    ("io.k8s.api.resource.v1beta2.DeviceToleration", "operator", "io.k8s.api.resource.v1beta2.DeviceTolerationOperator"),
    ("io.k8s.api.scheduling.v1.PriorityClass", "preemptionPolicy", "io.k8s.api.core.v1.PreemptionPolicy"),
    ("io.k8s.api.storage.v1.StorageClass", "reclaimPolicy", "io.k8s.api.core.v1.PersistentVolumeReclaimPolicy"),
    ("io.k8s.api.storage.v1.StorageClass", "volumeBindingMode", "io.k8s.api.storage.v1.VolumeBindingMode"),
];

/// Writes `enum` and the "Possible enum values" paragraph into each field, as Kubernetes' OpenAPI
/// generator does: values and lines sorted, the paragraph after a blank line.
pub fn apply(schemas: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    for (ty, field, enum_name) in FIELDS {
        let Some(values) = TYPES
            .iter()
            .find(|(name, _)| name == enum_name)
            .map(|(_, v)| *v)
        else {
            continue;
        };
        let Some(prop) = schemas
            .get_mut(*ty)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let mut names: Vec<&str> = values.iter().map(|(v, _)| *v).collect();
        names.sort_unstable();
        let mut lines: Vec<&str> = values.iter().map(|(_, line)| *line).collect();
        lines.sort_unstable();
        let description = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let description = format!(
            "{description}\n\nPossible enum values:\n{}",
            lines.join("\n")
        );
        prop.insert("description".into(), description.into());
        prop.insert("enum".into(), names.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::schema::registry;

    #[test]
    fn every_enum_field_resolves_and_reads_like_kubernetes() {
        for (ty, field, enum_name) in FIELDS {
            let schema = registry()
                .schema(ty)
                .unwrap_or_else(|| panic!("no schema {ty}"));
            let prop = schema
                .field(field)
                .unwrap_or_else(|| panic!("no field {ty}.{field}"));
            assert_eq!(prop.schema.node()["type"], "string", "{ty}.{field}");
            assert!(
                TYPES.iter().any(|(n, _)| n == enum_name),
                "no enum {enum_name}"
            );
        }
        let strategy = registry()
            .schema("io.k8s.api.apps.v1.DeploymentStrategy")
            .expect("schema");
        let node = strategy.node();
        assert_eq!(
            node["properties"]["type"]["enum"],
            serde_json::json!(["Recreate", "RollingUpdate"])
        );
        assert_eq!(
            node["properties"]["type"]["description"],
            "Type of deployment. Can be \"Recreate\" or \"RollingUpdate\". Default is RollingUpdate.\n\n\
             Possible enum values:\n - `\"Recreate\"` Kill all existing pods before creating new ones.\n - \
             `\"RollingUpdate\"` Replace the old ReplicaSets by new one using rolling update i.e gradually \
             scale down the old ReplicaSets and scale up the new one."
        );
    }
}
