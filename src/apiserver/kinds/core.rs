//! The simpler core kinds: ConfigMaps, Secrets, Namespaces, Nodes, Leases, LimitRanges and
//! ResourceQuotas.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::field::{Bad, Errors, Path};
use super::json::{self, default, obj};
use super::names;
use super::quantity::{self, Quantity};

/// Kubernetes' limit on the data of one ConfigMap or Secret.
const MAX_DATA_BYTES: usize = 1024 * 1024;

fn validate_data_keys(obj: &Value, keys: &[&str], errs: &mut Errors) -> usize {
    let mut total = 0;
    let mut seen: Vec<&str> = Vec::new();
    for section in keys {
        let Some(map) = obj.get(*section).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let p = Path::root(section).key(k);
            for msg in names::config_key(k) {
                errs.invalid(&p, Bad::str(k), msg);
            }
            if seen.contains(&k.as_str()) {
                errs.invalid(
                    &p,
                    Bad::str(k),
                    format!("duplicate of key present in {}", keys[0]),
                );
            }
            seen.push(k);
            total += v.as_str().map(str::len).unwrap_or(0);
        }
    }
    total
}

pub fn validate_config_map(cm: &Value, errs: &mut Errors) {
    let total = validate_data_keys(cm, &["data", "binaryData"], errs);
    if total > MAX_DATA_BYTES {
        errs.too_long(&Path::default(), MAX_DATA_BYTES);
    }
}

/// Immutable ConfigMaps and Secrets keep their data; nobody turns immutability off.
pub fn validate_immutable_data(old: &Value, new: &Value, sections: &[&str], errs: &mut Errors) {
    if json::bool_at(old, "immutable") != Some(true) {
        return;
    }
    if json::bool_at(new, "immutable") != Some(true) {
        errs.forbidden(
            &Path::root("immutable"),
            "field is immutable when `immutable` is set",
        );
    }
    for s in sections {
        if old.get(*s) != new.get(*s) {
            errs.forbidden(&Path::root(s), "field is immutable when `immutable` is set");
        }
    }
}

/// The v1 conversion of a Secret: stringData entries replace data entries, base64-encoded.
pub fn default_secret(secret: &mut Value) {
    default(secret, "type", json!("Opaque"));
    let Some(string_data) = json::remove(secret, "stringData") else {
        return;
    };
    let Some(map) = string_data.as_object() else {
        return;
    };
    let data = obj(secret, "data");
    for (k, v) in map {
        let text = v.as_str().unwrap_or_default();
        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Secret data must be base64; Kubernetes refuses it while decoding, before validation.
pub fn secret_decode_error(secret: &Value) -> Option<String> {
    let map = secret.get("data").and_then(Value::as_object)?;
    for v in map.values() {
        let Some(s) = v.as_str() else {
            return Some("json: cannot unmarshal non-string into Go value of type []uint8".into());
        };
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode(s) {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _) => i,
                base64::DecodeError::InvalidLength(i) => i,
                base64::DecodeError::InvalidLastSymbol(i, _) => i,
                base64::DecodeError::InvalidPadding => s.len(),
            };
            return Some(format!("illegal base64 data at input byte {at}"));
        }
    }
    None
}

pub fn validate_secret(secret: &Value, errs: &mut Errors) {
    let total = validate_data_keys(secret, &["data"], errs);
    if total > MAX_DATA_BYTES {
        errs.too_long(&Path::root("data"), MAX_DATA_BYTES);
    }
    let data = json::at(secret, "data");
    let has = |k: &str| data.get(k).is_some();
    let dp = Path::root("data");
    match json::str_or(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name.is_empty() {
                errs.required(
                    &Path::root("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.required(&dp.key(".dockercfg"), "");
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.required(&dp.key(".dockerconfigjson"), "");
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.required(&dp.key("username"), "");
            errs.required(&dp.key("password"), "");
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.required(&dp.key("ssh-privatekey"), "");
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                errs.required(&dp.key("tls.crt"), "");
            }
            if !has("tls.key") {
                errs.required(&dp.key("tls.key"), "");
            }
        }
        _ => {}
    }
}

pub fn validate_secret_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.get("type") != new.get("type") {
        errs.invalid(
            &Path::root("type"),
            Bad::json(json::at(new, "type")),
            "field is immutable",
        );
    }
    validate_immutable_data(old, new, &["data"], errs);
}

pub fn validate_namespace(ns: &Value, errs: &mut Errors) {
    for (i, f) in json::items(json::at(ns, "spec"), "finalizers").enumerate() {
        let f = f.as_str().unwrap_or_default();
        let msgs = names::qualified_name(f);
        for m in msgs {
            errs.invalid(
                &Path::root("spec").child("finalizers").index(i),
                Bad::str(f),
                m,
            );
        }
    }
}

pub fn default_node(node: &mut Value) {
    let status = obj(node, "status");
    for list in ["capacity", "allocatable"] {
        if let Some(l) = status.get_mut(list) {
            quantity::canonicalize_list(l);
        }
    }
    if !json::is_set(status, "allocatable")
        && let Some(c) = status.get("capacity").cloned()
    {
        status["allocatable"] = c;
    }
    if status.as_object().is_some_and(Map::is_empty) {
        json::remove(node, "status");
    }
}

pub fn validate_node(node: &Value, errs: &mut Errors) {
    let spec = json::at(node, "spec");
    for (i, t) in json::items(spec, "taints").enumerate() {
        let tp = Path::root("spec").child("taints").index(i);
        let key = json::str_or(t, "key");
        if key.is_empty() {
            errs.required(&tp.child("key"), "");
        } else {
            for msg in names::qualified_name(key) {
                errs.invalid(&tp.child("key"), Bad::str(key), msg);
            }
        }
        match json::str_or(t, "effect") {
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            "" => errs.required(&tp.child("effect"), ""),
            other => errs.not_supported(
                &tp.child("effect"),
                other,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
        }
    }
}

pub fn validate_lease(lease: &Value, errs: &mut Errors) {
    let spec = json::at(lease, "spec");
    let path = Path::root("spec");
    if let Some(d) = json::int_at(spec, "leaseDurationSeconds")
        && d <= 0
    {
        errs.invalid(
            &path.child("leaseDurationSeconds"),
            Bad::Int(d),
            "must be greater than 0",
        );
    }
    if let Some(t) = json::int_at(spec, "leaseTransitions")
        && t < 0
    {
        errs.invalid(
            &path.child("leaseTransitions"),
            Bad::Int(t),
            "must be greater than or equal to 0",
        );
    }
}

const LIMIT_LISTS: [&str; 5] = [
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

/// SetDefaults_LimitRangeItem: a Container item's default limit falls back to its max, its
/// default request to its default limit, then to its min.
pub fn default_limit_range(lr: &mut Value) {
    for item in json::items_mut(obj(lr, "spec"), "limits") {
        for list in LIMIT_LISTS {
            if let Some(l) = item.get_mut(list) {
                quantity::canonicalize_list(l);
            }
        }
        if json::str_at(item, "type") != Some("Container") {
            continue;
        }
        let max = item.get("max").cloned().unwrap_or_default();
        let min = item.get("min").cloned().unwrap_or_default();
        let dflt = obj(item, "default");
        for (k, v) in max.as_object().into_iter().flatten() {
            if dflt.get(k).is_none() {
                dflt[k] = v.clone();
            }
        }
        let dflt = dflt.clone();
        let req = obj(item, "defaultRequest");
        for (k, v) in dflt.as_object().into_iter().flatten() {
            if req.get(k).is_none() {
                req[k] = v.clone();
            }
        }
        for (k, v) in min.as_object().into_iter().flatten() {
            if req.get(k).is_none() {
                req[k] = v.clone();
            }
        }
    }
}

pub fn validate_limit_range(lr: &Value, errs: &mut Errors) {
    for (i, item) in json::items(json::at(lr, "spec"), "limits").enumerate() {
        let ip = Path::root("spec").child("limits").index(i);
        let ty = json::str_or(item, "type");
        if !matches!(ty, "Container" | "Pod" | "PersistentVolumeClaim") {
            errs.not_supported(
                &ip.child("type"),
                ty,
                &["Container", "Pod", "PersistentVolumeClaim"],
            );
        }
        let q = |list: &str, k: &str| {
            item.pointer(&format!("/{list}/{k}"))
                .and_then(Quantity::from_json)
        };
        for list in LIMIT_LISTS {
            for (k, v) in item
                .get(list)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if Quantity::from_json(v).is_none() {
                    errs.invalid(
                        &ip.child(list).key(k),
                        Bad::json(v),
                        quantity::REGEX_MESSAGE,
                    );
                }
            }
        }
        let keys: Vec<String> = LIMIT_LISTS
            .iter()
            .flat_map(|l| {
                item.get(*l)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let (min, max, dflt, dreq) = (
                q("min", &k),
                q("max", &k),
                q("default", &k),
                q("defaultRequest", &k),
            );
            if let (Some(min), Some(max)) = (min, max)
                && min.cmp_value(&max).is_gt()
            {
                errs.invalid(
                    &ip.child("min").key(&k),
                    Bad::str(&min.canonical()),
                    format!(
                        "min value {} is greater than max value {}",
                        min.canonical(),
                        max.canonical()
                    ),
                );
            }
            if let (Some(d), Some(max)) = (dflt, max)
                && d.cmp_value(&max).is_gt()
            {
                errs.invalid(
                    &ip.child("default").key(&k),
                    Bad::str(&d.canonical()),
                    format!(
                        "default value {} is greater than max value {}",
                        d.canonical(),
                        max.canonical()
                    ),
                );
            }
            if let (Some(r), Some(d)) = (dreq, dflt)
                && r.cmp_value(&d).is_gt()
            {
                errs.invalid(
                    &ip.child("defaultRequest").key(&k),
                    Bad::str(&r.canonical()),
                    format!(
                        "default request value {} is greater than default limit value {}",
                        r.canonical(),
                        d.canonical()
                    ),
                );
            }
        }
    }
}

pub fn default_resource_quota(rq: &mut Value) {
    if let Some(h) = rq.pointer_mut("/spec/hard") {
        quantity::canonicalize_list(h);
    }
}

pub fn validate_resource_quota(rq: &Value, errs: &mut Errors) {
    let spec = json::at(rq, "spec");
    for (k, v) in spec
        .get("hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let p = Path::root("spec").child("hard").key(k);
        match Quantity::from_json(v) {
            None => errs.invalid(&p, Bad::json(v), quantity::REGEX_MESSAGE),
            Some(q) if q.is_negative() => errs.invalid(
                &p,
                Bad::str(&q.canonical()),
                "must be greater than or equal to 0",
            ),
            Some(_) => {}
        }
    }
    const SCOPES: &[&str] = &[
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
    ];
    for (i, s) in json::items(spec, "scopes").enumerate() {
        let s = s.as_str().unwrap_or_default();
        if !SCOPES.contains(&s) {
            errs.not_supported(&Path::root("spec").child("scopes").index(i), s, SCOPES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_merge_string_data_and_check_types() {
        let mut s = json!({"stringData": {"user": "admin"}, "data": {"x": "eA=="}});
        default_secret(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
        assert_eq!(
            secret_decode_error(&json!({"data": {"a": "not base64!"}})).unwrap(),
            "illegal base64 data at input byte 3"
        );
        let mut errs = Errors::new();
        validate_secret(&json!({"type": "kubernetes.io/tls", "data": {}}), &mut errs);
        assert_eq!(errs.0[0].message(), "data[tls.crt]: Required value");
    }

    #[test]
    fn config_map_keys() {
        let mut errs = Errors::new();
        validate_config_map(&json!({"data": {"ok.key": "1", "bad key": "2"}}), &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert!(
            errs.0[0]
                .message()
                .starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key")
        );
    }

    #[test]
    fn limit_ranges_default_from_max() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}}]}});
        default_limit_range(&mut lr);
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"]["cpu"], "1");
        assert_eq!(item["defaultRequest"]["cpu"], "1");
        assert_eq!(item["defaultRequest"]["memory"], "64Mi");
    }
}
