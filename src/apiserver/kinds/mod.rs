//! What the API server knows about each built-in kind: its defaulting, what its create strategy
//! sets, its validation, and what may change on update. `admission` calls in here; each kind's
//! rules live in the module of its API group.

pub mod apps;
pub mod batch;
pub mod cluster;
pub mod convert;
pub mod core;
pub mod field;
pub mod json;
pub mod limitrange;
pub mod masterleases;
pub mod meta;
pub mod names;
pub mod network;
pub mod pod;
pub mod quantity;
pub mod quota;
pub mod service;
pub mod storage;

use anyhow::{Context, Result};
use serde_json::{Value, json as j};

use super::certificates;
use super::object;
use super::resources::{self, ResourceDef};
use crate::store::{Store, StoreError};
use field::Errors;

fn id(def: &ResourceDef) -> (&'static str, &'static str) {
    (def.group, def.plural)
}

/// Kubernetes' defaulting of a decoded object (also applied to every incoming update, so a field
/// a client dropped comes back as its default).
/// How long an Event lives after its last write: kube-apiserver's `--event-ttl`, an hour
/// unless the process was started with another. Kept per process, as the flag is.
static EVENT_TTL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(3_600_000);

pub fn set_event_ttl(ttl: std::time::Duration) {
    EVENT_TTL_MS.store(
        ttl.as_millis().max(1000) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The time to live of objects of `def` (Events only, as in Kubernetes), which the store
/// keeps under a lease.
pub fn time_to_live(def: &ResourceDef) -> Option<std::time::Duration> {
    (def.group.is_empty() && def.plural == "events").then(|| {
        std::time::Duration::from_millis(EVENT_TTL_MS.load(std::sync::atomic::Ordering::Relaxed))
    })
}

pub fn default(def: &ResourceDef, obj: &mut Value) {
    if let Some(schema) = def.custom.and_then(|c| c.schema.as_ref()) {
        super::crd::schema::apply_defaults(schema, obj);
    }
    match id(def) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            super::crd::definition::default(obj)
        }
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            super::webhooks::config::default(obj, true)
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            super::webhooks::config::default(obj, false)
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            super::webhooks::policy::default_policy(obj)
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            super::webhooks::policy::default_binding(obj)
        }
        ("", "namespaces") => {
            let name = obj
                .pointer("/metadata/name")
                .cloned()
                .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()));
            if let Some(name) = name {
                // Every namespace is labelled with its own name so selectors can target it.
                json::obj(json::obj(obj, "metadata"), "labels")["kubernetes.io/metadata.name"] =
                    name;
            }
            let spec = json::obj(obj, "spec");
            if spec.get("finalizers").is_none() {
                spec["finalizers"] = j!(["kubernetes"]);
            }
            json::default(json::obj(obj, "status"), "phase", j!("Active"));
        }
        ("", "pods") => pod::default_pod(obj),
        ("", "podtemplates") => apps::default_pod_template(obj),
        ("", "replicationcontrollers") => apps::default_replication_controller(obj),
        ("", "services") => service::default_service(obj),
        ("", "secrets") => core::default_secret(obj),
        ("", "endpoints") => network::default_endpoints(obj),
        ("", "persistentvolumes") => storage::default_pv(obj),
        ("", "persistentvolumeclaims") => storage::default_pvc(obj),
        ("", "nodes") => core::default_node(obj),
        ("", "limitranges") => core::default_limit_range(obj),
        ("", "resourcequotas") => core::default_resource_quota(obj),
        ("", "events") => {
            // Go always writes these fields of a core/v1 Event.
            for key in ["eventTime", "firstTimestamp", "lastTimestamp"] {
                if obj.get(key).is_none() {
                    obj[key] = serde_json::Value::Null;
                }
            }
            json::default(obj, "reportingComponent", j!(""));
            json::default(obj, "reportingInstance", j!(""));
            json::obj(obj, "involvedObject");
            json::obj(obj, "source");
        }
        ("apps", "deployments") => apps::default_deployment(obj),
        ("apps", "replicasets") => apps::default_replica_set(obj),
        ("apps", "statefulsets") => apps::default_stateful_set(obj),
        ("apps", "daemonsets") => apps::default_daemon_set(obj),
        ("batch", "jobs") => batch::default_job(obj),
        ("batch", "cronjobs") => batch::default_cron_job(obj),
        ("networking.k8s.io", "networkpolicies") => network::default_network_policy(obj),
        ("discovery.k8s.io", "endpointslices") => network::default_endpoint_slice(obj),
        ("autoscaling", "horizontalpodautoscalers") => cluster::default_hpa(obj),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            cluster::default_binding(obj)
        }
        ("storage.k8s.io", "storageclasses") => storage::default_storage_class(obj),
        ("storage.k8s.io", "csidrivers") => storage::default_csi_driver(obj),
        ("scheduling.k8s.io", "priorityclasses") => cluster::default_priority_class(obj),
        _ => {}
    }
}

/// The create strategy: status starts over (as Go writes an empty status) and generated fields
/// are filled in. Pods are handled in admission, which needs the store.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    let status = match id(def) {
        ("apps", "deployments") | ("batch", "jobs" | "cronjobs") | ("", "resourcequotas") => {
            Some(j!({}))
        }
        ("apps", "replicasets") | ("", "replicationcontrollers") => Some(j!({"replicas": 0})),
        ("apps", "statefulsets") => Some(j!({"availableReplicas": 0, "replicas": 0})),
        ("apps", "daemonsets") => Some(j!({"currentNumberScheduled": 0,
            "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0})),
        ("", "persistentvolumeclaims") => Some(j!({"phase": "Pending"})),
        ("", "persistentvolumes") => Some(j!({"phase": "Pending",
            "lastPhaseTransitionTime": object::now_rfc3339()})),
        ("storage.k8s.io", "volumeattachments") => Some(j!({"attached": false})),
        _ => None,
    };
    if let Some(status) = status {
        obj["status"] = status;
    }
    // A custom resource's status is written only through /status when it has one.
    if def.custom.is_some()
        && def.has_status()
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    match id(def) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            super::crd::definition::prepare_create(obj)
        }
        ("", "namespaces") => obj["status"] = j!({"phase": "Active"}),
        ("", "services") => service::prepare_create(obj),
        ("networking.k8s.io", "ingresses") => network::prepare_ingress(obj),
        ("autoscaling", "horizontalpodautoscalers") => cluster::prepare_hpa(obj),
        ("policy", "poddisruptionbudgets") => cluster::prepare_pdb(obj),
        ("batch", "jobs") => batch::generate_selector(obj),
        (certificates::GROUP, certificates::PLURAL) => certificates::prepare_create(obj),
        _ => {}
    }
}

/// The update strategy: what an incoming update inherits from the stored object.
pub fn prepare_update(def: &ResourceDef, old: &Value, new: &mut Value) {
    match id(def) {
        ("", "services") => service::prepare_update(old, new),
        (certificates::GROUP, certificates::PLURAL) => certificates::prepare_update(old, new),
        _ => {}
    }
}

/// The messages for a bad `metadata.name`: most kinds need a DNS subdomain, namespaces a DNS
/// label, Services a DNS-1035 label, and some (RBAC, HPAs, volumes) only a path segment.
pub fn name_problems(def: &ResourceDef, name: &str) -> Vec<String> {
    match id(def) {
        ("", "namespaces") => names::dns1123_label(name),
        ("", "services") => names::dns1035_label(name),
        ("rbac.authorization.k8s.io", _)
        | ("autoscaling", "horizontalpodautoscalers")
        | ("", "persistentvolumes" | "persistentvolumeclaims")
        | (certificates::GROUP, certificates::PLURAL) => names::path_segment_name(name),
        _ => names::dns1123_subdomain(name),
    }
}

/// Validation of a whole object (create, and every update).
pub fn validate(def: &ResourceDef, obj: &Value, errs: &mut Errors) {
    meta::validate_object_meta(obj, errs);
    if let Some(schema) = def.custom.and_then(|c| c.schema.as_ref()) {
        super::crd::schema::validate(schema, obj, &field::Path::default(), errs);
        super::crd::cel::validate(schema, obj, None, false, &field::Path::default(), errs);
    }
    match id(def) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            super::crd::definition::validate(obj, errs)
        }
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            super::webhooks::config::validate(obj, true, errs)
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            super::webhooks::config::validate(obj, false, errs)
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            super::webhooks::policy::validate_policy(obj, errs)
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            super::webhooks::policy::validate_binding(obj, errs)
        }
        ("", "namespaces") => core::validate_namespace(obj, errs),
        ("", "nodes") => core::validate_node(obj, errs),
        ("", "pods") => pod::validate_pod(obj, errs),
        ("", "podtemplates") => apps::validate_pod_template(obj, errs),
        ("", "replicationcontrollers") => apps::validate_replication_controller(obj, errs),
        ("", "services") => service::validate_service(obj, errs),
        ("", "endpoints") => network::validate_endpoints(obj, errs),
        ("", "configmaps") => core::validate_config_map(obj, errs),
        ("", "secrets") => core::validate_secret(obj, errs),
        ("", "persistentvolumes") => storage::validate_pv(obj, errs),
        ("", "persistentvolumeclaims") => storage::validate_pvc(obj, errs),
        ("", "limitranges") => core::validate_limit_range(obj, errs),
        ("", "resourcequotas") => core::validate_resource_quota(obj, errs),
        ("apps", "deployments") => apps::validate_deployment(obj, errs),
        ("apps", "replicasets") => apps::validate_replica_set(obj, errs),
        ("apps", "statefulsets") => apps::validate_stateful_set(obj, errs),
        ("apps", "daemonsets") => apps::validate_daemon_set(obj, errs),
        ("apps", "controllerrevisions") => apps::validate_controller_revision(obj, errs),
        ("batch", "jobs") => batch::validate_job(obj, errs),
        ("batch", "cronjobs") => batch::validate_cron_job(obj, errs),
        ("networking.k8s.io", "ingresses") => network::validate_ingress(obj, errs),
        ("networking.k8s.io", "ingressclasses") => network::validate_ingress_class(obj, errs),
        ("networking.k8s.io", "networkpolicies") => network::validate_network_policy(obj, errs),
        ("discovery.k8s.io", "endpointslices") => network::validate_endpoint_slice(obj, errs),
        ("coordination.k8s.io", "leases") => core::validate_lease(obj, errs),
        ("autoscaling", "horizontalpodautoscalers") => cluster::validate_hpa(obj, errs),
        ("policy", "poddisruptionbudgets") => cluster::validate_pdb(obj, errs),
        ("rbac.authorization.k8s.io", "roles") => cluster::validate_role(obj, true, errs),
        ("rbac.authorization.k8s.io", "clusterroles") => cluster::validate_role(obj, false, errs),
        ("rbac.authorization.k8s.io", "rolebindings") => cluster::validate_binding(obj, true, errs),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            cluster::validate_binding(obj, false, errs)
        }
        ("storage.k8s.io", "storageclasses") => storage::validate_storage_class(obj, errs),
        ("storage.k8s.io", "csidrivers") => storage::validate_csi_driver(obj, errs),
        ("storage.k8s.io", "csinodes") => storage::validate_csi_node(obj, errs),
        ("storage.k8s.io", "volumeattachments") => storage::validate_volume_attachment(obj, errs),
        ("scheduling.k8s.io", "priorityclasses") => cluster::validate_priority_class(obj, errs),
        ("apiregistration.k8s.io", "apiservices") => cluster::validate_api_service(obj, errs),
        (certificates::GROUP, certificates::PLURAL) => certificates::validate(obj, errs),
        _ => {}
    }
}

/// What may not change between `old` and `new` (both defaulted).
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value, errs: &mut Errors) {
    if let Some(schema) = def.custom.and_then(|c| c.schema.as_ref()) {
        super::crd::cel::validate(schema, new, Some(old), true, &field::Path::default(), errs);
    }
    match id(def) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            super::crd::definition::validate_update(old, new, errs)
        }
        ("", "pods") => pod::validate_pod_update(old, new, errs),
        ("", "services") => service::validate_service_update(old, new, errs),
        ("", "secrets") => core::validate_secret_update(old, new, errs),
        ("", "configmaps") => {
            core::validate_immutable_data(old, new, &["data", "binaryData"], errs)
        }
        ("", "persistentvolumeclaims") => storage::validate_pvc_update(old, new, errs),
        ("apps", "deployments" | "replicasets" | "daemonsets") => {
            apps::validate_selector_unchanged(old, new, errs)
        }
        ("apps", "statefulsets") => apps::validate_stateful_set_update(old, new, errs),
        ("apps", "controllerrevisions") => {
            apps::validate_controller_revision_update(old, new, errs)
        }
        ("batch", "jobs") => batch::validate_job_update(old, new, errs),
        ("networking.k8s.io", "ingressclasses") => {
            network::validate_ingress_class_update(old, new, errs)
        }
        ("discovery.k8s.io", "endpointslices") => {
            network::validate_endpoint_slice_update(old, new, errs)
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            cluster::validate_binding_update(old, new, errs)
        }
        ("storage.k8s.io", "storageclasses") => {
            storage::validate_storage_class_update(old, new, errs)
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            cluster::validate_priority_class_update(old, new, errs)
        }
        (certificates::GROUP, certificates::PLURAL) => {
            certificates::validate_update(old, new, errs)
        }
        _ => {}
    }
}

fn def_of(group: &str, plural: &str) -> Result<&'static ResourceDef> {
    resources::RESOURCES
        .iter()
        .find(|d| d.group == group && d.plural == plural && d.stored_as.is_none())
        .with_context(|| format!("{plural} are not served"))
}

/// Whether a stored object no longer says what it should.
type Stale<'a> = &'a (dyn Fn(&Value, &Value) -> bool + Sync);

/// Stores `obj` under `def` as a create would (uid, timestamp, defaults), unless it exists;
/// with `stale`, the stored object is rewritten when the function says it no longer fits.
async fn ensure(
    store: &Store,
    def: &ResourceDef,
    mut obj: Value,
    stale: Option<Stale<'_>>,
) -> Result<()> {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let key = def.key(ns.as_deref(), &name);
    let existing = store.get(&key).context("cannot read the store")?;
    if let Some(kv) = &existing {
        let Some(stale) = stale else { return Ok(()) };
        let current: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if !stale(&current, &obj) {
            return Ok(());
        }
        for keep in ["uid", "creationTimestamp"] {
            if let Some(v) = current.pointer(&format!("/metadata/{keep}")) {
                obj["metadata"][keep] = v.clone();
            }
        }
        default(def, &mut obj);
        let bytes = object::to_stored(&obj).map_err(|e| anyhow::anyhow!(e.message))?;
        return match store.update(&key, bytes, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot update {key}")),
        };
    }
    obj["metadata"]["uid"] = j!(object::new_uid());
    obj["metadata"]["creationTimestamp"] = j!(object::now_rfc3339());
    default(def, &mut obj);
    let bytes = object::to_stored(&obj).map_err(|e| anyhow::anyhow!(e.message))?;
    match store.create(&key, bytes).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {key}")),
    }
}

/// What Kubernetes' API server itself keeps in every cluster: the service range record, the
/// `kubernetes` Service with its Endpoints and EndpointSlice pointing at this server, and the
/// two system PriorityClasses.
pub async fn bootstrap(store: &Store, advertise: &str, service_subnet: &str) -> Result<()> {
    let cidr: crate::cluster::cidr::Ipv4Cidr = service_subnet
        .parse()
        .with_context(|| format!("bad service subnet {service_subnet:?}"))?;
    if store.get(service::RANGE_KEY)?.is_none() {
        let record = j!({"kind": "RangeAllocation", "apiVersion": "v1", "metadata": {},
                         "range": cidr.to_string()});
        match store
            .create(service::RANGE_KEY, serde_json::to_vec(&record)?.into())
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).context("cannot record the service range"),
        }
    }
    let range = service::service_range(store);
    let (host, port) = advertise
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .unwrap_or_else(|| (String::new(), 6443));
    let svc = service::kubernetes_service(&range, port);
    ensure(store, def_of("", "services")?, svc, None).await?;
    // A server alone lists itself; one whose store other API servers may share (etcd) keeps
    // its record beside theirs and lists every live one (`masterleases`).
    if !host.is_empty() {
        if store.is_etcd() {
            masterleases::reconcile(store, &host, port, masterleases::now_secs()).await?;
            tokio::spawn(masterleases::run(store.clone(), host, port));
        } else {
            publish_kubernetes_endpoints(store, &[host], port).await?;
        }
    }
    for service in local_api_services() {
        ensure(
            store,
            def_of("apiregistration.k8s.io", "apiservices")?,
            service,
            None,
        )
        .await?;
    }
    for (name, value, description) in cluster::SYSTEM_PRIORITY_CLASSES {
        let pc = j!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        ensure(
            store,
            def_of("scheduling.k8s.io", "priorityclasses")?,
            pc,
            None,
        )
        .await?;
    }
    Ok(())
}

/// Points the `kubernetes` Service's Endpoints and EndpointSlice at `hosts` (the API servers'
/// addresses, which may change between restarts).
pub async fn publish_kubernetes_endpoints(
    store: &Store,
    hosts: &[String],
    port: u16,
) -> Result<()> {
    let (endpoints, slice) = service::kubernetes_endpoints(hosts, port);
    let moved = |cur: &Value, want: &Value| {
        cur.get("subsets") != want.get("subsets")
            || cur.get("endpoints") != want.get("endpoints")
            || cur.get("ports") != want.get("ports")
    };
    ensure(store, def_of("", "endpoints")?, endpoints, Some(&moved)).await?;
    ensure(
        store,
        def_of("discovery.k8s.io", "endpointslices")?,
        slice,
        Some(&moved),
    )
    .await
}

/// The APIServices kube-apiserver registers for the group versions it serves itself, named
/// `<version>.<group>` (`v1.` for the core group), with the Available condition of a local
/// service. metrics.k8s.io is served by this server too, so it is local here.
fn local_api_services() -> Vec<Value> {
    let mut versions = resources::group_versions();
    versions.extend(super::reviews::GROUPS.iter().map(|g| (g.group, g.version)));
    versions.push((super::metrics::GROUP, super::metrics::VERSION));
    versions
        .into_iter()
        .enumerate()
        .map(|(i, (group, version))| {
            j!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}"),
                             "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version,
                         // Earlier groups in discovery order rank higher, as kube's table does.
                         "groupPriorityMinimum": (18000 - 100 * i as i64).max(1),
                         "versionPriority": 15},
                "status": {"conditions": [{
                    "type": "Available", "status": "True",
                    "lastTransitionTime": object::now_rfc3339(),
                    "reason": "Local", "message": "Local APIServices are always available"}]},
            })
        })
        .collect()
}
