//! ObjectMeta rules shared by every kind (labels, annotations, finalizers, owner references) and
//! label selectors: their validation, matching, and Go's rendering of them in messages.

use serde_json::Value;

use super::field::{Bad, Errors, Path, go_quote, go_string_map, go_string_slice};
use super::json;
use super::names;

const TOTAL_ANNOTATION_BYTES: usize = 256 * 1024;
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

pub fn validate_labels(labels: Option<&Value>, path: &Path, errs: &mut Errors) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for msg in names::qualified_name(k) {
            errs.invalid(path, Bad::str(k), msg);
        }
        match v.as_str() {
            Some(v) => {
                for msg in names::label_value(v) {
                    errs.invalid(path, Bad::str(v), msg);
                }
            }
            None => errs.invalid(path, Bad::json(v), "label values must be strings"),
        }
    }
}

pub fn validate_annotations(annotations: Option<&Value>, path: &Path, errs: &mut Errors) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.invalid(path, Bad::str(k), msg);
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > TOTAL_ANNOTATION_BYTES {
        errs.too_long(path, TOTAL_ANNOTATION_BYTES);
    }
}

/// Labels, annotations, finalizers and owner references of `obj.metadata`.
pub fn validate_object_meta(obj: &Value, errs: &mut Errors) {
    validate_meta_at(json::at(obj, "metadata"), &Path::root("metadata"), errs);
}

pub fn validate_meta_at(meta: &Value, path: &Path, errs: &mut Errors) {
    validate_labels(meta.get("labels"), &path.child("labels"), errs);
    validate_annotations(meta.get("annotations"), &path.child("annotations"), errs);
    for (i, f) in json::items(meta, "finalizers").enumerate() {
        let fpath = path.child("finalizers").index(i);
        let Some(name) = f.as_str() else {
            continue;
        };
        let msgs = names::qualified_name(name);
        if !msgs.is_empty() {
            for m in msgs {
                errs.invalid(&fpath, Bad::str(name), m);
            }
        } else if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
            errs.invalid(
                &path.child("finalizers"),
                Bad::str(name),
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
    for (i, r) in json::items(meta, "ownerReferences").enumerate() {
        let rpath = path.child("ownerReferences").index(i);
        for (key, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if json::str_or(r, key).is_empty() {
                errs.invalid(
                    &rpath.child(key),
                    Bad::str(""),
                    format!("{what} must not be empty"),
                );
            }
        }
    }
    let controllers = json::items(meta, "ownerReferences")
        .filter(|r| json::bool_at(r, "controller") == Some(true))
        .count();
    if controllers > 1 {
        errs.invalid(
            &path.child("ownerReferences"),
            Bad::None,
            "Only one reference can have Controller set to true",
        );
    }
}

pub fn validate_label_selector(sel: &Value, path: &Path, errs: &mut Errors) {
    validate_labels(sel.get("matchLabels"), &path.child("matchLabels"), errs);
    for (i, req) in json::items(sel, "matchExpressions").enumerate() {
        let rpath = path.child("matchExpressions").index(i);
        let op = json::str_or(req, "operator");
        let has_values = json::len_of(req, "values") > 0;
        match op {
            "In" | "NotIn" if !has_values => errs.required(
                &rpath.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if has_values => errs.forbidden(
                &rpath.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.invalid(
                &rpath.child("operator"),
                Bad::str(other),
                "not a valid selector operator",
            ),
        }
        let key = json::str_or(req, "key");
        for msg in names::qualified_name(key) {
            errs.invalid(&rpath.child("key"), Bad::str(key), msg);
        }
    }
}

/// Whether `labels` satisfy a LabelSelector. A selector with no requirements matches everything.
pub fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    for req in json::items(sel, "matchExpressions") {
        let key = json::str_or(req, "key");
        let values: Vec<&str> = json::items(req, "values")
            .filter_map(Value::as_str)
            .collect();
        let ok = match json::str_or(req, "operator") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub fn selector_is_empty(sel: &Value) -> bool {
    json::len_of(sel, "matchLabels") == 0 && json::len_of(sel, "matchExpressions") == 0
}

/// metav1.FormatLabelSelector: `app=web,tier in (a,b)`, `<none>` for an empty one.
pub fn format_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut kv: Vec<(String, String)> = ml
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        kv.sort();
        for (k, v) in kv {
            parts.push(format!("{k}={v}"));
        }
    }
    let mut exprs: Vec<String> = Vec::new();
    for req in json::items(sel, "matchExpressions") {
        let key = json::str_or(req, "key");
        let mut values: Vec<&str> = json::items(req, "values")
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        exprs.push(match json::str_or(req, "operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    parts.extend(exprs);
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// labels.FormatLabels for a map selector or label set: sorted `k=v` joined by commas.
pub fn format_labels(labels: Option<&Value>) -> String {
    let mut kv: Vec<String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    kv.sort();
    if kv.is_empty() {
        "<none>".into()
    } else {
        kv.join(",")
    }
}

/// Go's `%#v` of a metav1.LabelSelector, as immutability messages show it.
pub fn go_label_selector(sel: &Value) -> String {
    let labels = go_string_map(sel.get("matchLabels").and_then(Value::as_object));
    let exprs: Vec<String> = json::items(sel, "matchExpressions")
        .map(|r| {
            let values: Vec<String> = json::items(r, "values")
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let values = if r.get("values").is_some() {
                go_string_slice(&values)
            } else {
                "[]string(nil)".into()
            };
            format!(
                "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                go_quote(json::str_or(r, "key")),
                go_quote(json::str_or(r, "operator"))
            )
        })
        .collect();
    let exprs = if sel.get("matchExpressions").is_some() {
        format!("[]v1.LabelSelectorRequirement{{{}}}", exprs.join(", "))
    } else {
        "[]v1.LabelSelectorRequirement(nil)".into()
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_and_print() {
        let sel = json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]});
        assert!(selector_matches(
            &sel,
            Some(&json!({"app": "web", "tier": "a"}))
        ));
        assert!(!selector_matches(&sel, Some(&json!({"app": "web"}))));
        assert_eq!(format_label_selector(Some(&sel)), "app=web,tier in (a,b)");
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "b"}})),
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
    }

    #[test]
    fn bad_labels_and_finalizers_are_reported() {
        let obj = json!({"metadata": {"labels": {"bad key": "ok", "k": "-bad"},
                                       "finalizers": ["custom"]}});
        let mut errs = Errors::new();
        validate_object_meta(&obj, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(
            msgs[0]
                .starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist")
        );
        assert!(msgs[2].contains("neither a standard finalizer"));
    }
}
