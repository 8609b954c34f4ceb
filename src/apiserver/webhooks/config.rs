//! Mutating- and ValidatingWebhookConfiguration as the API stores them: the defaults
//! kube-apiserver fills in and the validation it applies, in its words.

use serde_json::{Value, json};

use crate::apiserver::kinds::field::{Bad, Errors, Path};
use crate::apiserver::kinds::{json as j, meta, names};

const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
/// v1 refuses the side-effect classes of v1beta1 (`Some`, `Unknown`): a webhook must be safe to
/// call on a dry run, or say it is not called then.
const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const REINVOCATION_POLICIES: &[&str] = &["IfNeeded", "Never"];
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha1"];
const MAX_MATCH_CONDITIONS: usize = 64;

/// The defaults of admissionregistration/v1 (`SetDefaults_*Webhook`, `SetDefaults_Rule`,
/// `SetDefaults_ServiceReference`).
pub fn default(obj: &mut Value, mutating: bool) {
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return;
    };
    for hook in hooks {
        let Some(h) = hook.as_object_mut() else {
            continue;
        };
        h.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        h.entry("matchPolicy")
            .or_insert_with(|| json!("Equivalent"));
        h.entry("namespaceSelector").or_insert_with(|| json!({}));
        h.entry("objectSelector").or_insert_with(|| json!({}));
        h.entry("timeoutSeconds").or_insert_with(|| json!(10));
        if mutating {
            h.entry("reinvocationPolicy")
                .or_insert_with(|| json!("Never"));
        }
        if let Some(rules) = h.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                rule.entry("scope").or_insert_with(|| json!("*"));
            }
        }
        if let Some(svc) = h
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            svc.entry("port").or_insert_with(|| json!(443));
        }
    }
}

fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    j::items(v, key).filter_map(Value::as_str).collect()
}

fn go_list(items: &[&str]) -> Bad {
    Bad::json(&json!(items))
}

/// Both kinds of configuration, as `ValidateValidatingWebhookConfiguration` and its mutating
/// twin check them on create and update.
pub fn validate(obj: &Value, mutating: bool, errs: &mut Errors) {
    let mut seen = std::collections::HashSet::new();
    for (i, hook) in j::items(obj, "webhooks").enumerate() {
        let path = Path::root("webhooks").index(i);
        validate_hook(hook, mutating, &path, errs);
        validate_review_versions(hook, &path.child("admissionReviewVersions"), errs);
        let name = j::str_or(hook, "name");
        if !name.is_empty() && !seen.insert(name) {
            errs.duplicate(&path.child("name"), Bad::str(name));
        }
    }
}

fn validate_hook(hook: &Value, mutating: bool, path: &Path, errs: &mut Errors) {
    let name = j::str_or(hook, "name");
    fully_qualified(name, &path.child("name"), errs);
    for (i, rule) in j::items(hook, "rules").enumerate() {
        validate_rule_at(rule, &path.child("rules").index(i), errs);
    }
    let check = |errs: &mut Errors, key: &str, allowed: &[&str]| {
        if let Some(v) = hook.get(key).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            errs.not_supported(&path.child(key), v, allowed);
        }
    };
    check(errs, "failurePolicy", FAILURE_POLICIES);
    check(errs, "matchPolicy", MATCH_POLICIES);
    match hook.get("sideEffects").and_then(Value::as_str) {
        None => errs.required(
            &path.child("sideEffects"),
            format!("must specify one of {}", SIDE_EFFECTS.join(", ")),
        ),
        Some(v) if !SIDE_EFFECTS.contains(&v) => {
            errs.not_supported(&path.child("sideEffects"), v, SIDE_EFFECTS)
        }
        Some(_) => {}
    }
    if let Some(t) = hook.get("timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&t)
    {
        errs.invalid(
            &path.child("timeoutSeconds"),
            Bad::json(&json!(t)),
            "the timeout value must be between 1 and 30 seconds",
        );
    }
    for key in ["namespaceSelector", "objectSelector"] {
        if let Some(sel) = hook.get(key).filter(|s| s.is_object()) {
            meta::validate_label_selector(sel, &path.child(key), errs);
        }
    }
    if mutating {
        check(errs, "reinvocationPolicy", REINVOCATION_POLICIES);
    }
    validate_match_conditions(hook, &path.child("matchConditions"), errs);
    let cc = hook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let cc_path = path.child("clientConfig");
    match (cc.get("url"), cc.get("service")) {
        (Some(url), None) => validate_url(
            url.as_str().unwrap_or_default(),
            &cc_path.child("url"),
            errs,
        ),
        (None, Some(svc)) => validate_service(svc, &cc_path.child("service"), errs),
        _ => errs.required(&cc_path, "exactly one of url or service is required"),
    }
}

/// `utilvalidation.IsFullyQualifiedName`: a DNS subdomain of at least three labels.
fn fully_qualified(name: &str, path: &Path, errs: &mut Errors) {
    if name.is_empty() {
        errs.required(path, "");
        return;
    }
    let problems = names::dns1123_subdomain(name);
    if !problems.is_empty() {
        for p in problems {
            errs.invalid(path, Bad::str(name), p);
        }
        return;
    }
    if name.split('.').count() < 3 {
        errs.invalid(
            path,
            Bad::str(name),
            "should be a domain with at least three segments separated by dots",
        );
    }
}

/// One RuleWithOperations (also a policy's NamedRuleWithOperations).
pub fn validate_rule_at(rule: &Value, path: &Path, errs: &mut Errors) {
    let ops = strings(rule, "operations");
    if ops.is_empty() {
        errs.required(&path.child("operations"), "");
    }
    if ops.len() > 1 && ops.contains(&"*") {
        errs.invalid(
            &path.child("operations"),
            go_list(&ops),
            "if '*' is present, must not specify other operations",
        );
    }
    for (i, op) in ops.iter().enumerate() {
        if !OPERATIONS.contains(op) {
            errs.not_supported(&path.child("operations").index(i), op, OPERATIONS);
        }
    }
    let groups = strings(rule, "apiGroups");
    if groups.is_empty() {
        errs.required(&path.child("apiGroups"), "");
    }
    if groups.len() > 1 && groups.contains(&"*") {
        errs.invalid(
            &path.child("apiGroups"),
            go_list(&groups),
            "if '*' is present, must not specify other API groups",
        );
    }
    let versions = strings(rule, "apiVersions");
    if versions.is_empty() {
        errs.required(&path.child("apiVersions"), "");
    }
    if versions.len() > 1 && versions.contains(&"*") {
        errs.invalid(
            &path.child("apiVersions"),
            go_list(&versions),
            "if '*' is present, must not specify other API versions",
        );
    }
    for (i, v) in versions.iter().enumerate() {
        if v.is_empty() {
            errs.required(&path.child("apiVersions").index(i), "");
        }
    }
    validate_resources(&strings(rule, "resources"), &path.child("resources"), errs);
    if let Some(scope) = rule.get("scope").and_then(Value::as_str)
        && !SCOPES.contains(&scope)
    {
        errs.not_supported(&path.child("scope"), scope, SCOPES);
    }
}

fn validate_resources(resources: &[&str], path: &Path, errs: &mut Errors) {
    if resources.is_empty() {
        errs.required(path, "");
    }
    let mut wild_sub = std::collections::HashSet::new();
    let mut wild_res = std::collections::HashSet::new();
    let mut single = false;
    let mut plain = false;
    for (i, rs) in resources.iter().enumerate() {
        if rs.is_empty() {
            errs.required(&path.index(i), "");
            continue;
        }
        if *rs == "*" {
            single = true;
        }
        let Some((res, sub)) = rs.split_once('/') else {
            plain = *rs != "*";
            continue;
        };
        if wild_sub.contains(res) {
            errs.invalid(
                &path.index(i),
                Bad::str(rs),
                format!("if '{res}/*' is present, must not specify {rs}"),
            );
        }
        if wild_res.contains(sub) {
            errs.invalid(
                &path.index(i),
                Bad::str(rs),
                format!("if '*/{sub}' is present, must not specify {rs}"),
            );
        }
        if sub == "*" {
            wild_sub.insert(res);
        }
        if res == "*" {
            wild_res.insert(sub);
        }
    }
    if resources.len() > 1 && resources.contains(&"*/*") {
        errs.invalid(
            path,
            go_list(resources),
            "if '*/*' is present, must not specify other resources",
        );
    }
    if single && plain {
        errs.invalid(
            path,
            go_list(resources),
            "if '*' is present, must not specify other resources without subresources",
        );
    }
}

fn validate_review_versions(hook: &Value, path: &Path, errs: &mut Errors) {
    let versions = strings(hook, "admissionReviewVersions");
    if versions.is_empty() {
        errs.required(
            path,
            format!("must specify one of {}", REVIEW_VERSIONS.join(", ")),
        );
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        if !seen.insert(*v) {
            errs.invalid(&path.index(i), Bad::str(v), "duplicate version");
            continue;
        }
        for p in names::dns1035_label(v) {
            errs.invalid(&path.index(i), Bad::str(v), p);
        }
    }
    if !versions.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
        errs.invalid(
            path,
            go_list(&versions),
            format!(
                "must include at least one of {}",
                REVIEW_VERSIONS.join(", ")
            ),
        );
    }
}

fn validate_match_conditions(hook: &Value, path: &Path, errs: &mut Errors) {
    let conditions: Vec<&Value> = j::items(hook, "matchConditions").collect();
    if conditions.len() > MAX_MATCH_CONDITIONS {
        errs.too_many(path, conditions.len(), MAX_MATCH_CONDITIONS);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in conditions.iter().enumerate() {
        let cp = path.index(i);
        let name = j::str_or(c, "name");
        if name.is_empty() {
            errs.required(&cp.child("name"), "");
        } else {
            for p in names::qualified_name(name) {
                errs.invalid(&cp.child("name"), Bad::str(name), p);
            }
            if !seen.insert(name) {
                errs.duplicate(&cp.child("name"), Bad::str(name));
            }
        }
        let expr = j::str_or(c, "expression");
        if expr.trim().is_empty() {
            errs.required(&cp.child("expression"), "");
        } else if let Err(e) = super::matching::compile(expr) {
            errs.invalid(
                &cp.child("expression"),
                Bad::str(expr),
                format!("compilation failed: {e}"),
            );
        }
    }
}

/// `webhook.ValidateWebhookURL` with https required.
pub fn validate_url(text: &str, path: &Path, errs: &mut Errors) {
    // A fragment is not part of a request URI, so it is looked for before parsing.
    let (text, fragment) = match text.split_once('#') {
        Some((t, f)) => (t, Some(f)),
        None => (text, None),
    };
    let uri: hyper::Uri = match text.parse() {
        Ok(u) => u,
        Err(_) if text.is_empty() => {
            errs.invalid(path, Bad::str(text), "host must be specified");
            return;
        }
        Err(e) => {
            errs.invalid(path, Bad::str(text), e.to_string());
            return;
        }
    };
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "https" {
        errs.invalid(
            path,
            Bad::str(scheme),
            "'https' is the only allowed URL scheme",
        );
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if uri.host().unwrap_or_default().is_empty() {
        errs.invalid(path, Bad::str(""), "host must be specified");
    }
    if let Some((user, _)) = authority.split_once('@') {
        errs.invalid(
            path,
            Bad::str(user),
            "user information is not permitted in the URL",
        );
    }
    if let Some(f) = fragment {
        errs.invalid(path, Bad::str(f), "fragments are not permitted in the URL");
    }
    if let Some(q) = uri.query() {
        errs.invalid(
            path,
            Bad::str(q),
            "query parameters are not permitted in the URL",
        );
    }
}

/// `webhook.ValidateWebhookService`.
pub fn validate_service(svc: &Value, path: &Path, errs: &mut Errors) {
    if j::str_or(svc, "name").is_empty() {
        errs.required(&path.child("name"), "service name is required");
    }
    if j::str_or(svc, "namespace").is_empty() {
        errs.required(&path.child("namespace"), "service namespace is required");
    }
    if let Some(port) = svc.get("port").and_then(Value::as_i64) {
        for p in names::port_number(port) {
            errs.invalid(
                &path.child("port"),
                Bad::json(&json!(port)),
                format!("port is not valid: {p}"),
            );
        }
    }
    let Some(url_path) = svc.get("path").and_then(Value::as_str) else {
        return;
    };
    if url_path == "/" {
        return;
    }
    if !url_path.starts_with('/') {
        errs.invalid(
            &path.child("path"),
            Bad::str(url_path),
            "must start with a '/'",
        );
    }
    let trimmed = url_path.trim_start_matches('/').trim_end_matches('/');
    for (i, step) in trimmed.split('/').enumerate() {
        if step.is_empty() {
            errs.invalid(
                &path.child("path"),
                Bad::str(url_path),
                format!("segment[{i}] may not be empty"),
            );
            continue;
        }
        for p in names::dns1123_subdomain(step) {
            errs.invalid(
                &path.child("path"),
                Bad::str(url_path),
                format!("segment[{i}]: {p}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: Value, mutating: bool) -> Vec<String> {
        let mut errs = Errors::new();
        validate(&obj, mutating, &mut errs);
        errs.0.iter().map(|e| e.message()).collect()
    }

    fn hook(extra: Value) -> Value {
        let mut h = json!({
            "name": "deny.example.com",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:8443/validate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        });
        if let (Some(h), Some(e)) = (h.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                h.insert(k.clone(), v.clone());
            }
        }
        json!({"metadata": {"name": "c"}, "webhooks": [h]})
    }

    #[test]
    fn a_good_configuration_passes_and_gets_kubernetes_defaults() {
        let mut obj = hook(json!({}));
        default(&mut obj, true);
        assert!(errors(obj.clone(), true).is_empty());
        let h = &obj["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["reinvocationPolicy"], "Never");
        assert_eq!(h["rules"][0]["scope"], "*");
    }

    #[test]
    fn bad_configurations_are_refused_in_kubernetes_words() {
        let cases = [
            (
                json!({"name": "short.name"}),
                "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
            ),
            (
                json!({"sideEffects": "Some"}),
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
            ),
            (
                json!({"timeoutSeconds": 31}),
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            ),
            (
                json!({"clientConfig": {}}),
                "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
            ),
            (
                json!({"clientConfig": {"url": "http://a.b/c"}}),
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme",
            ),
            (
                json!({"clientConfig": {"service": {"name": "s", "namespace": "n", "path": "x"}}}),
                "webhooks[0].clientConfig.service.path: Invalid value: \"x\": must start with a '/'",
            ),
            (
                json!({"admissionReviewVersions": []}),
                "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1, v1alpha1",
            ),
            (
                json!({"rules": [{"operations": ["*", "CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
                "webhooks[0].rules[0].operations: Invalid value: [\"*\",\"CREATE\"]: if '*' is present, must not specify other operations",
            ),
            (
                json!({"matchConditions": [{"name": "a", "expression": "object.("}]}),
                "webhooks[0].matchConditions[0].expression: Invalid value: \"object.(\": compilation failed",
            ),
        ];
        for (extra, want) in cases {
            let got = errors(hook(extra.clone()), false);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{extra}: want {want:?}, got {got:?}"
            );
        }
        let mut two = hook(json!({}));
        let first = two["webhooks"][0].clone();
        two["webhooks"].as_array_mut().unwrap().push(first);
        assert_eq!(
            errors(two, false),
            vec!["webhooks[1].name: Duplicate value: \"deny.example.com\"".to_string()]
        );
    }
}
