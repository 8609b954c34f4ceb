//! Defaulting and validation of a CustomResourceDefinition, with apiextensions' field errors.

use serde_json::{Value, json};

use crate::apiserver::kinds::field::{Bad, Errors, Path, go_string_slice};
use crate::apiserver::kinds::json as j;
use crate::apiserver::kinds::names;
use crate::apiserver::webhooks::config as webhook_config;

use super::conversion::REVIEW_VERSIONS;

const COLUMN_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

/// v1 defaulting: singular and listKind from kind, conversion None.
pub fn default(crd: &mut Value) {
    let spec = j::obj(crd, "spec");
    let kind = j::str_or(j::at(spec, "names"), "kind").to_string();
    if !kind.is_empty() {
        let names = j::obj(spec, "names");
        j::default(names, "singular", json!(kind.to_lowercase()));
        j::default(names, "listKind", json!(format!("{kind}List")));
    }
    j::default(spec, "conversion", json!({"strategy": "None"}));
}

/// What the create strategy sets: the status starts with the storage version stored.
pub fn prepare_create(crd: &mut Value) {
    let storage: Vec<Value> = j::items(j::at(crd, "spec"), "versions")
        .filter(|v| j::bool_at(v, "storage") == Some(true))
        .map(|v| json!(j::str_or(v, "name")))
        .collect();
    crd["status"] = json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": [],
                           "storedVersions": storage});
}

fn label_errors(errs: &mut Errors, path: &Path, value: &str, problems: Vec<String>) {
    if !problems.is_empty() {
        errs.invalid(path, Bad::str(value), problems.join(","));
    }
}

pub fn validate(crd: &Value, errs: &mut Errors) {
    let spec = j::at(crd, "spec");
    let sp = Path::root("spec");
    let group = j::str_or(spec, "group");
    let names = j::at(spec, "names");
    let plural = j::str_or(names, "plural");
    let name = j::str_or(j::at(crd, "metadata"), "name");
    if name != format!("{plural}.{group}") {
        errs.invalid(
            &Path::root("metadata").child("name"),
            Bad::str(name),
            "must be spec.names.plural+\".\"+spec.group",
        );
    }
    if group.is_empty() {
        errs.required(&sp.child("group"), "");
    } else {
        label_errors(
            errs,
            &sp.child("group"),
            group,
            names::dns1123_subdomain(group),
        );
        if !group.contains('.') {
            errs.invalid(
                &sp.child("group"),
                Bad::str(group),
                "should be a domain with at least one dot",
            );
        }
    }
    match j::str_at(spec, "scope") {
        None | Some("") => errs.required(&sp.child("scope"), ""),
        Some("Cluster" | "Namespaced") => {}
        Some(other) => errs.not_supported(&sp.child("scope"), other, &["Cluster", "Namespaced"]),
    }
    validate_names(names, &sp.child("names"), errs);
    validate_versions(spec, &sp, errs);
    validate_conversion(j::at(spec, "conversion"), &sp.child("conversion"), errs);
}

/// `validateCustomResourceConversion`. Kubernetes validates its internal form, where v1's
/// `webhook.clientConfig` and `webhook.conversionReviewVersions` sit on `conversion` itself:
/// the paths in its messages are those.
fn validate_conversion(conversion: &Value, path: &Path, errs: &mut Errors) {
    let strategy = j::str_or(conversion, "strategy");
    if !["None", "Webhook"].contains(&strategy) {
        errs.not_supported(&path.child("strategy"), strategy, &["None", "Webhook"]);
    }
    let webhook = j::at(conversion, "webhook");
    let client = webhook.get("clientConfig").filter(|c| c.is_object());
    let versions: Vec<&str> = j::items(webhook, "conversionReviewVersions")
        .filter_map(Value::as_str)
        .collect();
    let cp = path.child("webhookClientConfig");
    let vp = path.child("conversionReviewVersions");
    if strategy != "Webhook" {
        if client.is_some() {
            errs.forbidden(&cp, "should not be set when strategy is not set to Webhook");
        }
        if !versions.is_empty() {
            errs.forbidden(&vp, "should not be set when strategy is not set to Webhook");
        }
        return;
    }
    match client {
        None => errs.required(&cp, "required when strategy is set to Webhook"),
        Some(cc) => {
            let url = cc.get("url").and_then(Value::as_str);
            let service = cc.get("service").filter(|s| s.is_object());
            match (url, service) {
                (Some(_), Some(_)) | (None, None) => {
                    errs.required(&cp, "exactly one of url or service is required")
                }
                (Some(url), None) => webhook_config::validate_url(url, &cp.child("url"), errs),
                (None, Some(svc)) => {
                    webhook_config::validate_service(svc, &cp.child("service"), errs)
                }
            }
        }
    }
    if versions.is_empty() {
        errs.required(&vp, "");
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        if !seen.insert(*v) {
            errs.invalid(&vp.index(i), Bad::str(v), "duplicate version");
            continue;
        }
        for p in names::dns1035_label(v) {
            errs.invalid(&vp.index(i), Bad::str(v), p);
        }
    }
    if !versions.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
        errs.invalid(
            &vp,
            Bad::Raw(go_string_slice(
                &versions.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            )),
            format!(
                "must include at least one of {}",
                REVIEW_VERSIONS.join(", ")
            ),
        );
    }
}

fn validate_names(names: &Value, np: &Path, errs: &mut Errors) {
    let plural = j::str_or(names, "plural");
    if plural.is_empty() {
        errs.required(&np.child("plural"), "");
    } else {
        label_errors(
            errs,
            &np.child("plural"),
            plural,
            names::dns1035_label(plural),
        );
    }
    let singular = j::str_or(names, "singular");
    if !singular.is_empty() {
        label_errors(
            errs,
            &np.child("singular"),
            singular,
            names::dns1035_label(singular),
        );
    }
    let kind = j::str_or(names, "kind");
    if kind.is_empty() {
        errs.required(&np.child("kind"), "");
    } else {
        let problems = names::dns1035_label(&kind.to_lowercase());
        if !problems.is_empty() {
            errs.invalid(
                &np.child("kind"),
                Bad::str(kind),
                format!(
                    "may have mixed case, but should otherwise match: {}",
                    problems.join(",")
                ),
            );
        }
    }
    let list_kind = j::str_or(names, "listKind");
    if list_kind.is_empty() {
        errs.required(&np.child("listKind"), "");
    } else if list_kind == kind {
        errs.invalid(
            &np.child("listKind"),
            Bad::str(list_kind),
            "kind and listKind may not be the same or parsing become ambiguous",
        );
    }
    for (i, s) in j::items(names, "shortNames").enumerate() {
        let s = s.as_str().unwrap_or_default();
        label_errors(
            errs,
            &np.child("shortNames").index(i),
            s,
            names::dns1035_label(s),
        );
    }
    for (i, c) in j::items(names, "categories").enumerate() {
        let c = c.as_str().unwrap_or_default();
        label_errors(
            errs,
            &np.child("categories").index(i),
            c,
            names::dns1035_label(c),
        );
    }
}

fn validate_versions(spec: &Value, sp: &Path, errs: &mut Errors) {
    let versions: Vec<&Value> = j::items(spec, "versions").collect();
    let vp = sp.child("versions");
    if versions.is_empty() {
        errs.invalid(
            &vp,
            Bad::Raw("[]apiextensions.CustomResourceDefinitionVersion(nil)".into()),
            "must have exactly one version marked as storage version",
        );
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| j::bool_at(v, "storage") == Some(true))
        .count();
    if storage != 1 {
        errs.invalid(
            &vp,
            Bad::Raw(format!(
                "[]apiextensions.CustomResourceDefinitionVersion{{ /* {} versions */ }}",
                versions.len()
            )),
            "must have exactly one version marked as storage version",
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let p = vp.index(i);
        let name = j::str_or(v, "name");
        if name.is_empty() {
            errs.required(&p.child("name"), "");
        } else {
            label_errors(errs, &p.child("name"), name, names::dns1035_label(name));
            if seen.contains(&name) {
                errs.duplicate(&p.child("name"), Bad::str(name));
            }
            seen.push(name);
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => errs.required(
                &p.child("schema").child("openAPIV3Schema"),
                "schemas are required",
            ),
            Some(schema) => {
                let root = p.child("schema").child("openAPIV3Schema");
                match schema.get("type").and_then(Value::as_str) {
                    Some("object") => {}
                    None | Some("") => {
                        errs.required(&root.child("type"), "must not be empty at the root")
                    }
                    Some(other) => errs.invalid(
                        &root.child("type"),
                        Bad::str(other),
                        "must be object at the root",
                    ),
                }
                structural(schema, &root, errs);
                super::cel::compile_errors(schema, &root, errs);
            }
        }
        for (c, col) in j::items(v, "additionalPrinterColumns").enumerate() {
            let cp = p.child("additionalPrinterColumns").index(c);
            if j::str_or(col, "name").is_empty() {
                errs.required(&cp.child("name"), "");
            }
            match j::str_at(col, "type") {
                None | Some("") => errs.required(&cp.child("type"), ""),
                Some(t) if !COLUMN_TYPES.contains(&t) => {
                    errs.not_supported(&cp.child("type"), t, COLUMN_TYPES)
                }
                _ => {}
            }
            match j::str_at(col, "jsonPath") {
                None | Some("") => errs.required(&cp.child("jsonPath"), ""),
                Some(path) => {
                    if let Err(e) = super::jsonpath::parse(path) {
                        errs.invalid(
                            &cp.child("jsonPath"),
                            Bad::str(path),
                            format!("must be a simple json path: {e}"),
                        );
                    }
                }
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| s.is_object()) {
            let sc = p.child("subresources").child("scale");
            match j::str_at(scale, "specReplicasPath") {
                None | Some("") => errs.required(&sc.child("specReplicasPath"), ""),
                Some(path) if !path.starts_with(".spec.") => errs.invalid(
                    &sc.child("specReplicasPath"),
                    Bad::str(path),
                    "should be a json path under .spec",
                ),
                _ => {}
            }
            match j::str_at(scale, "statusReplicasPath") {
                None | Some("") => errs.required(&sc.child("statusReplicasPath"), ""),
                Some(path) if !path.starts_with(".status.") => errs.invalid(
                    &sc.child("statusReplicasPath"),
                    Bad::str(path),
                    "should be a json path under .status",
                ),
                _ => {}
            }
        }
    }
}

/// The structural rules every specified field must meet: a type (unless it may hold anything),
/// and no properties beside additionalProperties.
fn structural(schema: &Value, path: &Path, errs: &mut Errors) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        if schema
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
        {
            errs.forbidden(
                &path.child("additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            );
        }
        for (k, sub) in props {
            let p = path.child("properties").key(k);
            if untyped_ok(sub) {
                // int-or-string and preserve-unknown-fields may leave the type out.
            } else if sub
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                errs.required(
                    &p.child("type"),
                    "must not be empty for specified object fields",
                );
            }
            structural(sub, &p, errs);
        }
    }
    if let Some(items) = schema.get("items") {
        let p = path.child("items");
        if !untyped_ok(items)
            && items
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
        {
            errs.required(
                &p.child("type"),
                "must not be empty for specified array items",
            );
        }
        structural(items, &p, errs);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        let p = path.child("additionalProperties");
        if !untyped_ok(extra)
            && extra
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
        {
            errs.required(
                &p.child("type"),
                "must not be empty for specified object fields",
            );
        }
        structural(extra, &p, errs);
    }
}

fn untyped_ok(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
        || schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
}

/// What may not change.
pub fn validate_update(old: &Value, new: &Value, errs: &mut Errors) {
    let sp = Path::root("spec");
    for key in ["group", "scope"] {
        let (o, n) = (
            j::str_or(j::at(old, "spec"), key),
            j::str_or(j::at(new, "spec"), key),
        );
        if o != n {
            errs.invalid(&sp.child(key), Bad::str(n), "field is immutable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_kubernetes_field_errors() {
        let mut crd = json!({"metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example", "scope": "Galaxy",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                       "properties": {"spec": {"properties": {}}}}}}]}});
        default(&mut crd);
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        let mut errs = Errors::new();
        validate(&crd, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "metadata.name: Invalid value: \"widgets.example.com\": must be spec.names.plural+\".\"+spec.group",
                "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
                "spec.scope: Unsupported value: \"Galaxy\": supported values: \"Cluster\", \"Namespaced\"",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
            ]
        );
    }
}
