//! Admission: what happens to an object between decoding and storing it — defaulting, the
//! admission plugins every cluster runs (ServiceAccount, Priority, DefaultTolerationSeconds),
//! validation, and allocations (ClusterIPs, NodePorts). Every create and update goes through here.

use serde_json::Value;

use super::defaults;
use super::kinds::{self, cluster, field::Errors, pod, quantity, service};
use super::object::{self, meta_str};
use super::resources::{self, ResourceDef};
use super::status::ApiError;
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

/// Before a create is stored: defaults, admission plugins, validation (422 Invalid with field
/// causes), then allocations.
pub async fn on_create(store: &Store, def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    check_decodable(def, obj)?;
    defaults::on_create(def, obj);
    if (def.group, def.plural) == ("", "pods") {
        let priority = resolve_priority(store, obj)?;
        pod::admit_new_pod(obj, priority);
        super::serviceaccount::mount_api_access(store, obj)?;
    }
    default_class_name(store, def, obj)?;
    let mut errs = Errors::new();
    kinds::validate(def, obj, &mut errs);
    finish(def, obj, errs)?;
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
    defaults::on_update(def, new);
    kinds::prepare_update(def, old, new);
    settle_generation(def, old, new);
    // Objects stored before a default existed are compared as if they had it.
    let mut old = old.clone();
    defaults::on_update(def, &mut old);
    // As in Kubernetes, what may not change is reported before what is wrong with the result.
    let mut errs = Errors::new();
    kinds::validate_update(def, &old, new, &mut errs);
    kinds::validate(def, new, &mut errs);
    finish(def, new, errs)?;
    if (def.group, def.plural) == ("", "services") {
        let name = name_of(new);
        service::allocate(store, new).map_err(|errs| errs.into_api_error(def, &name))?;
    }
    Ok(())
}
