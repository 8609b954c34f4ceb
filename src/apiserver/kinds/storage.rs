//! Storage kinds: PersistentVolumes, PersistentVolumeClaims, StorageClasses, CSIDrivers,
//! CSINodes and VolumeAttachments.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path};
use super::json::{self, default, obj};
use super::names;
use super::quantity::{self, Quantity};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

pub fn default_pvc_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "volumeMode", json!("Filesystem"));
    let resources = obj(spec, "resources");
    for list in ["requests", "limits"] {
        if let Some(l) = resources.get_mut(list) {
            quantity::canonicalize_list(l);
        }
    }
}

pub fn default_pvc(pvc: &mut Value) {
    default_pvc_spec(obj(pvc, "spec"));
}

pub fn default_pv(pv: &mut Value) {
    let spec = obj(pv, "spec");
    default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
    default(spec, "volumeMode", json!("Filesystem"));
    if let Some(c) = spec.get_mut("capacity") {
        quantity::canonicalize_list(c);
    }
    if let Some(h) = spec.get_mut("hostPath").filter(|h| h.is_object()) {
        default(h, "type", json!(""));
    }
}

fn validate_access_modes(spec: &Value, path: &Path, errs: &mut Errors, required_detail: &str) {
    let modes: Vec<&str> = json::items(spec, "accessModes")
        .filter_map(Value::as_str)
        .collect();
    if modes.is_empty() {
        errs.required(&path.child("accessModes"), required_detail);
    }
    for m in &modes {
        if !ACCESS_MODES.contains(m) {
            errs.not_supported(&path.child("accessModes"), m, ACCESS_MODES);
        }
    }
    if modes.contains(&"ReadWriteOncePod") && modes.len() > 1 {
        errs.forbidden(
            &path.child("accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        );
    }
}

pub fn validate_pvc_spec(spec: &Value, path: &Path, errs: &mut Errors) {
    validate_access_modes(spec, path, errs, "at least 1 access mode is required");
    let storage = spec.pointer("/resources/requests/storage");
    match storage {
        None => errs.required(&path.child("resources").key("storage"), ""),
        Some(v) => match Quantity::from_json(v) {
            None => errs.invalid(
                &path.child("resources").key("storage"),
                Bad::json(v),
                quantity::REGEX_MESSAGE,
            ),
            Some(q) if q.is_negative() || q.is_zero() => errs.invalid(
                &path.child("resources").key("storage"),
                Bad::str(&q.canonical()),
                "must be greater than zero",
            ),
            Some(_) => {}
        },
    }
    errs.check_enum(spec, "volumeMode", path, &["Block", "Filesystem"]);
    if let Some(sc) = json::str_at(spec, "storageClassName").filter(|s| !s.is_empty()) {
        for msg in names::dns1123_subdomain(sc) {
            errs.invalid(&path.child("storageClassName"), Bad::str(sc), msg);
        }
    }
}

pub fn validate_pvc(pvc: &Value, errs: &mut Errors) {
    validate_pvc_spec(json::at(pvc, "spec"), &Path::root("spec"), errs);
}

/// A claim's spec is fixed but for its storage request, its volume attributes class, and the
/// volume it gets bound to.
pub fn validate_pvc_update(old: &Value, new: &Value, errs: &mut Errors) {
    let strip = |v: &Value| {
        let mut spec = json::at(v, "spec").clone();
        if let Some(r) = spec.get_mut("resources") {
            json::remove(r, "requests");
        }
        json::remove(&mut spec, "volumeAttributesClassName");
        if json::str_or(json::at(v, "spec"), "volumeName").is_empty()
            || json::str_or(json::at(old, "spec"), "volumeName").is_empty()
        {
            json::remove(&mut spec, "volumeName");
        }
        spec
    };
    if strip(old) != strip(new) {
        errs.forbidden(
            &Path::root("spec"),
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        );
    }
}

const PV_SOURCES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "nfs",
    "rbd",
    "iscsi",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

pub fn validate_pv(pv: &Value, errs: &mut Errors) {
    let spec = json::at(pv, "spec");
    let path = Path::root("spec");
    match spec.get("capacity").and_then(Value::as_object) {
        None => errs.required(&path.child("capacity"), ""),
        Some(c) if c.is_empty() => errs.required(&path.child("capacity"), ""),
        Some(c) => {
            if !c.contains_key("storage") || c.len() > 1 {
                let keys: Vec<&str> = c.keys().map(String::as_str).collect();
                errs.not_supported(&path.child("capacity"), &keys.join(","), &["storage"]);
            }
            for (k, v) in c {
                if Quantity::from_json(v).is_none() {
                    errs.invalid(
                        &path.child("capacity").key(k),
                        Bad::json(v),
                        quantity::REGEX_MESSAGE,
                    );
                }
            }
        }
    }
    validate_access_modes(spec, &path, errs, "");
    errs.check_enum(
        spec,
        "persistentVolumeReclaimPolicy",
        &path,
        &["Delete", "Recycle", "Retain"],
    );
    errs.check_enum(spec, "volumeMode", &path, &["Block", "Filesystem"]);
    let sources: Vec<&&str> = PV_SOURCES
        .iter()
        .filter(|s| json::is_set(spec, s))
        .collect();
    if sources.is_empty() {
        errs.required(&path, "must specify a volume type");
    } else if sources.len() > 1 {
        errs.forbidden(&path, "may not specify more than 1 volume type");
    }
    if let Some(h) = spec.get("hostPath")
        && json::str_or(h, "path").is_empty()
    {
        errs.required(&path.child("hostPath").child("path"), "");
    }
    if json::is_set(spec, "local") && !json::is_set(spec, "nodeAffinity") {
        errs.required(
            &path.child("nodeAffinity"),
            "Local volume requires node affinity",
        );
    }
}

pub fn default_storage_class(sc: &mut Value) {
    default(sc, "reclaimPolicy", json!("Delete"));
    default(sc, "volumeBindingMode", json!("Immediate"));
}

pub fn validate_storage_class(sc: &Value, errs: &mut Errors) {
    match json::str_at(sc, "provisioner").filter(|p| !p.is_empty()) {
        None => errs.required(&Path::root("provisioner"), ""),
        Some(p) if p.len() > 63 => errs.too_long(&Path::root("provisioner"), 63),
        Some(_) => {}
    }
    errs.check_enum(sc, "reclaimPolicy", &Path::default(), &["Delete", "Retain"]);
    errs.check_enum(
        sc,
        "volumeBindingMode",
        &Path::default(),
        &["Immediate", "WaitForFirstConsumer"],
    );
}

pub fn validate_storage_class_update(old: &Value, new: &Value, errs: &mut Errors) {
    for key in ["parameters", "provisioner", "reclaimPolicy"] {
        if old.get(key) != new.get(key) {
            errs.forbidden(&Path::root(key), format!("updates to {key} are forbidden."));
        }
    }
    if old.get("volumeBindingMode") != new.get("volumeBindingMode") {
        errs.invalid(
            &Path::root("volumeBindingMode"),
            Bad::json(json::at(new, "volumeBindingMode")),
            "field is immutable",
        );
    }
}

pub fn default_csi_driver(d: &mut Value) {
    let spec = obj(d, "spec");
    default(spec, "attachRequired", json!(true));
    default(spec, "podInfoOnMount", json!(false));
    default(spec, "storageCapacity", json!(false));
    default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    default(spec, "volumeLifecycleModes", json!(["Persistent"]));
    default(spec, "requiresRepublish", json!(false));
    default(spec, "seLinuxMount", json!(false));
}

pub fn validate_csi_driver(d: &Value, errs: &mut Errors) {
    let spec = json::at(d, "spec");
    let path = Path::root("spec");
    errs.check_enum(
        spec,
        "fsGroupPolicy",
        &path,
        &["File", "None", "ReadWriteOnceWithFSType"],
    );
    for (i, m) in json::items(spec, "volumeLifecycleModes").enumerate() {
        let m = m.as_str().unwrap_or_default();
        if m != "Persistent" && m != "Ephemeral" {
            errs.not_supported(
                &path.child("volumeLifecycleModes").index(i),
                m,
                &["Ephemeral", "Persistent"],
            );
        }
    }
}

pub fn validate_csi_node(n: &Value, errs: &mut Errors) {
    for (i, d) in json::items(json::at(n, "spec"), "drivers").enumerate() {
        let p = Path::root("spec").child("drivers").index(i);
        if json::str_or(d, "name").is_empty() {
            errs.required(&p.child("name"), "");
        }
        if json::str_or(d, "nodeID").is_empty() {
            errs.required(&p.child("nodeID"), "");
        }
    }
}

pub fn validate_volume_attachment(va: &Value, errs: &mut Errors) {
    let spec = json::at(va, "spec");
    let path = Path::root("spec");
    if json::str_or(spec, "attacher").is_empty() {
        errs.required(&path.child("attacher"), "");
    }
    if json::str_or(spec, "nodeName").is_empty() {
        errs.required(&path.child("nodeName"), "");
    }
    let source = json::at(spec, "source");
    let n = ["persistentVolumeName", "inlineVolumeSpec"]
        .iter()
        .filter(|k| json::is_set(source, k))
        .count();
    if n != 1 {
        errs.invalid(
            &path.child("source"),
            Bad::None,
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_volumes() {
        let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1024Mi"}}}});
        default_pvc(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
        let mut errs = Errors::new();
        validate_pvc(&pvc, &mut errs);
        assert!(errs.is_empty());
        validate_pvc(&json!({"spec": {}}), &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
        let mut pv = json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/tmp"}}});
        default_pv(&mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        let mut errs = Errors::new();
        validate_pv(&pv, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
