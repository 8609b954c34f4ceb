//! Admission: what happens to an object between decoding and storing it — defaulting, the
//! admission plugins every cluster runs (ServiceAccount, Priority, DefaultTolerationSeconds),
//! validation, and allocations (ClusterIPs, NodePorts). Every create and update goes through here.

use serde_json::Value;

use super::crd::versions;
use super::defaults;
use super::kinds::{self, cluster, field::Errors, limitrange, pod, quantity, quota, service};
use super::object::{self, meta_str};
use super::resources::{self, ResourceDef};
use super::status::ApiError;
use super::webhooks::{self, Operation};
use crate::store::Store;

fn name_of(obj: &Value) -> String {
    meta_str(obj, "name").unwrap_or_default().to_string()
}

/// Kubernetes rejects some bad values while decoding, before validation: that is a 400 naming the
/// kind, not a 422 listing fields.
fn decode_error(def: &ResourceDef, message: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: {message}",
        kind = def.kind,
        version = def.version
    ))
}

fn check_decodable(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if (def.group, def.plural) == ("", "secrets")
        && let Some(msg) = kinds::core::secret_decode_error(obj)
    {
        return Err(decode_error(def, &msg));
    }
    if (def.group, def.plural) == (super::certificates::GROUP, super::certificates::PLURAL)
        && let Some(msg) = super::certificates::decode_error(obj)
    {
        return Err(decode_error(def, &msg));
    }
    Ok(())
}

/// Validation errors as the 422 Kubernetes answers, or the 400 for a malformed quantity (which
/// Kubernetes cannot even decode).
fn finish(def: &ResourceDef, obj: &Value, errs: Errors) -> Result<(), ApiError> {
    if errs.0.iter().any(|e| e.detail == quantity::REGEX_MESSAGE) {
        return Err(decode_error(def, quantity::REGEX_MESSAGE));
    }
    errs.into_result(def, &name_of(obj))
}

/// The Priority admission plugin: the pod's PriorityClass (or the global default) gives its
/// priority and preemption policy.
fn resolve_priority(store: &Store, pod: &Value) -> Result<Option<(i64, String)>, ApiError> {
    let name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let forbidden =
        |msg: String| ApiError::forbidden(format!("pods \"{}\" is forbidden: {msg}", name_of(pod)));
    let def = resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::internal("priorityclasses are not served"))?;
    let read = |pc: &Value| {
        (
            pc.get("value").and_then(Value::as_i64).unwrap_or(0),
            pc.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        )
    };
    let resolved = if !name.is_empty() {
        match store
            .get(&def.key(None, name))
            .map_err(|e| ApiError::from_store(e, def.group, def.plural, name))?
        {
            Some(kv) => {
                let pc: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                Some(read(&pc))
            }
            None => match cluster::SYSTEM_PRIORITY_CLASSES
                .iter()
                .find(|(n, _, _)| *n == name)
            {
                Some((_, v, _)) => Some((*v, "PreemptLowerPriority".to_string())),
                None => return Err(forbidden(pod::missing_priority_class(name))),
            },
        }
    } else {
        let (kvs, _) = store
            .list(&def.key_prefix())
            .map_err(|e| ApiError::from_store(e, def.group, def.plural, ""))?;
        kvs.iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .find(|pc| pc.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .map(|pc| read(&pc))
    };
    let computed = resolved.as_ref().map(|(v, _)| *v).unwrap_or(0);
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != computed
    {
        return Err(forbidden(pod::priority_mismatch(given, computed)));
    }
    Ok(resolved)
}

/// The newest object of `plural` (a class kind) that one of `markers` (annotations) marks as
/// the cluster's default.
fn default_class(
    store: &Store,
    group: &str,
    plural: &str,
    markers: &[&str],
) -> Result<Option<String>, ApiError> {
    let def = resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let (kvs, _) = store
        .list(&def.key_prefix())
        .map_err(|e| ApiError::from_store(e, def.group, def.plural, ""))?;
    let is_default = |class: &Value| {
        markers.iter().any(|k| {
            class
                .pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
                == Some("true")
        })
    };
    let newest = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(is_default)
        .max_by(|a, b| {
            let created = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            created(a)
                .cmp(&created(b))
                .then_with(|| meta_str(b, "name").cmp(&meta_str(a, "name")))
        });
    Ok(newest.and_then(|c| meta_str(&c, "name").map(str::to_string)))
}

/// The DefaultStorageClass and DefaultIngressClass admission plugins: a claim or Ingress that
/// names no class (not even "") gets the cluster's default one, the newest if several say so.
fn default_class_name(store: &Store, def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let (class_group, class_plural, field, legacy_annotation, markers): (_, _, _, _, &[&str]) =
        match (def.group, def.plural) {
            ("", "persistentvolumeclaims") => (
                "storage.k8s.io",
                "storageclasses",
                "storageClassName",
                "volume.beta.kubernetes.io~1storage-class",
                &[
                    "storageclass.kubernetes.io/is-default-class",
                    "storageclass.beta.kubernetes.io/is-default-class",
                ],
            ),
            ("networking.k8s.io", "ingresses") => (
                "networking.k8s.io",
                "ingressclasses",
                "ingressClassName",
                "kubernetes.io~1ingress.class",
                &["ingressclass.kubernetes.io/is-default-class"],
            ),
            _ => return Ok(()),
        };
    let named = obj
        .pointer(&format!("/spec/{field}"))
        .is_some_and(|v| !v.is_null())
        || obj
            .pointer(&format!("/metadata/annotations/{legacy_annotation}"))
            .is_some();
    if named {
        return Ok(());
    }
    if let Some(name) = default_class(store, class_group, class_plural, markers)?
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert(field.into(), name.into());
    }
    Ok(())
}

/// Every stored object of a core or other kind in one namespace.
fn namespace_objects(
    store: &Store,
    group: &str,
    plural: &str,
    namespace: &str,
) -> Result<Vec<Value>, ApiError> {
    let def = resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    list_objects(store, def, namespace)
}

fn list_objects(store: &Store, def: &ResourceDef, namespace: &str) -> Result<Vec<Value>, ApiError> {
    let (kvs, _) = store
        .list(&def.list_prefix(Some(namespace)))
        .map_err(|e| ApiError::from_store(e, def.group, def.plural, ""))?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .collect())
}

/// The name admission errors show: a generated name is not known yet in Kubernetes, so its
/// prefix stands in for it.
fn admission_name(obj: &Value) -> String {
    let name = name_of(obj);
    match meta_str(obj, "generateName") {
        Some(prefix)
            if !prefix.is_empty()
                && name.starts_with(prefix)
                && name.len() == prefix.len() + object::GENERATED_SUFFIX_LEN =>
        {
            prefix.to_string()
        }
        _ => name,
    }
}

fn forbidden(def: &ResourceDef, obj: &Value, message: &str) -> ApiError {
    let resource = if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    };
    ApiError::forbidden(format!(
        "{resource} \"{}\" is forbidden: {message}",
        admission_name(obj)
    ))
}

/// The LimitRanger (validation half) and ResourceQuota admission plugins on a new object.
fn admit_limits_and_quota(
    store: &Store,
    def: &ResourceDef,
    obj: &Value,
    ranges: &[Value],
) -> Result<(), ApiError> {
    admit_limits(store, def, obj, ranges)?;
    admit_quota(store, def, obj, None)
}

/// The ResourceQuota admission plugin: a new object, or an update (`old`) of a kind whose usage
/// an update can raise.
fn admit_quota(
    store: &Store,
    def: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(ns) = meta_str(obj, "namespace").filter(|_| def.namespaced()) else {
        return Ok(());
    };
    let quotas = namespace_objects(store, "", "resourcequotas", ns)?;
    if quotas.is_empty() {
        return Ok(());
    }
    let existing = list_objects(store, def, ns)?;
    quota::admit(def.group, def.plural, obj, old, &quotas, &existing)
        .map_err(|message| forbidden(def, obj, &message))
}

/// LimitRanger's validation half: min, max and ratios of pods' containers and claims.
fn admit_limits(
    store: &Store,
    def: &ResourceDef,
    obj: &Value,
    ranges: &[Value],
) -> Result<(), ApiError> {
    let Some(ns) = meta_str(obj, "namespace").filter(|_| def.namespaced()) else {
        return Ok(());
    };
    let violations = match (def.group, def.plural) {
        ("", "pods") => limitrange::validate_pod(ranges, obj),
        ("", "persistentvolumeclaims") => {
            limitrange::validate_claim(&namespace_objects(store, "", "limitranges", ns)?, obj)
        }
        _ => Vec::new(),
    };
    if !violations.is_empty() {
        return Err(forbidden(def, obj, &limitrange::aggregate(&violations)));
    }
    Ok(())
}

/// NodeRestriction for the requester, if it is a node.
fn node_restriction(def: &ResourceDef, obj: &Value, creating: bool) -> Result<(), ApiError> {
    match super::authz::REQUESTER.try_with(Clone::clone) {
        Ok(user) => super::authz::node::admit(&user, def.plural, def.group, obj, creating),
        Err(_) => Ok(()),
    }
}

/// Before a create is stored: defaults, admission plugins, validation (422 Invalid with field
/// causes), limits and quota (403), then allocations.
pub async fn on_create(store: &Store, def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    check_decodable(def, obj)?;
    super::authz::escalation::check(store, def, None, obj)?;
    super::authz::signers::check(store, def, None, obj)?;
    node_restriction(def, obj, true)?;
    defaults::on_create(def, obj);
    let mut ranges = Vec::new();
    if (def.group, def.plural) == ("", "pods") {
        if let Some(ns) = meta_str(obj, "namespace") {
            ranges = namespace_objects(store, "", "limitranges", ns)?;
        }
        limitrange::default_pod(&ranges, obj);
        let priority = resolve_priority(store, obj)?;
        pod::admit_new_pod(obj, priority);
        super::serviceaccount::mount_api_access(store, obj)?;
    }
    default_class_name(store, def, obj)?;
    webhooks::mutate(store, def, Operation::Create, obj, None).await?;
    // What a webhook wrote is decoded with defaults, as kube-apiserver decodes its patch.
    kinds::default(def, obj);
    let mut errs = Errors::new();
    match versions::current(def) {
        Some(view) => {
            let written = versions::as_written(store, &view, obj).await?;
            kinds::validate(view.def, &written, &mut errs);
            finish(def, obj, errs)?;
            versions::prune_to(def, obj);
        }
        None => {
            kinds::validate(def, obj, &mut errs);
            finish(def, obj, errs)?;
        }
    }
    webhooks::validate(store, def, Operation::Create, Some(obj), None).await?;
    admit_limits_and_quota(store, def, obj, &ranges)?;
    if (def.group, def.plural) == ("", "services") {
        let name = name_of(obj);
        service::allocate(store, obj).map_err(|errs| errs.into_api_error(def, &name))?;
    }
    Ok(())
}

/// metadata.generation counts changes of the spec as Kubernetes sees them, after defaulting: a
/// client that leaves out defaulted fields has not changed anything.
fn settle_generation(def: &ResourceDef, old: &Value, new: &mut Value) {
    if !def.has_generation {
        return;
    }
    let mut old_defaulted = old.clone();
    defaults::on_update(def, &mut old_defaulted);
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if object::spec_of(&old_defaulted) == object::spec_of(new) {
        old_gen
    } else {
        old_gen + 1
    };
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), generation.into());
    }
}

/// Before an update (PUT, PATCH, or a status write) is stored; `new` already carries the
/// server-owned metadata of `old`.
pub async fn on_update(
    store: &Store,
    def: &ResourceDef,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    check_decodable(def, new)?;
    super::authz::escalation::check(store, def, Some(old), new)?;
    super::authz::signers::check(store, def, Some(old), new)?;
    node_restriction(def, new, false)?;
    defaults::on_update(def, new);
    kinds::prepare_update(def, old, new);
    webhooks::mutate(store, def, Operation::Update, new, Some(old)).await?;
    kinds::default(def, new);
    settle_generation(def, old, new);
    // Objects stored before a default existed are compared as if they had it.
    let mut old = old.clone();
    defaults::on_update(def, &mut old);
    // As in Kubernetes, what may not change is reported before what is wrong with the result.
    let mut errs = Errors::new();
    match versions::current(def) {
        Some(view) => {
            let written = versions::as_written(store, &view, new).await?;
            let before = versions::old_as_written(store, &view, &old).await?;
            kinds::validate_update(view.def, &before, &written, &mut errs);
            kinds::validate(view.def, &written, &mut errs);
            finish(def, new, errs)?;
            versions::prune_to(def, new);
        }
        None => {
            kinds::validate_update(def, &old, new, &mut errs);
            kinds::validate(def, new, &mut errs);
            finish(def, new, errs)?;
        }
    }
    webhooks::validate(store, def, Operation::Update, Some(new), Some(&old)).await?;
    if quota::checked_on_update(def.group, def.plural) {
        admit_quota(store, def, new, Some(&old))?;
    }
    if (def.group, def.plural) == ("", "services") {
        let name = name_of(new);
        service::allocate(store, new).map_err(|errs| errs.into_api_error(def, &name))?;
    }
    Ok(())
}
