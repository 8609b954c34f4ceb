//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (admissionregistration/v1):
//! CEL validations evaluated in the API server, between the mutating and the validating
//! webhooks as kube-apiserver orders its plugins. A binding puts a policy in force for what both
//! select, with its validationActions (Deny, Warn; Audit is accepted and has no audit log to
//! go to). A policy with a paramKind is evaluated once per parameter object its binding's
//! paramRef names (by name, or by selector), bound as `params`.

use serde_json::{Value, json};

use super::matching::{self, Target};
use crate::apiserver::kinds::field::{Bad, ErrorType, Errors, Path};
use crate::apiserver::kinds::{json as j, meta, names};

const ACTIONS: &[&str] = &["Audit", "Deny", "Warn"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
/// The reasons a validation may give, with the codes kube-apiserver answers them with.
const REASONS: &[(&str, u16)] = &[
    ("Unauthorized", 401),
    ("Forbidden", 403),
    ("Invalid", 422),
    ("RequestEntityTooLarge", 413),
];

pub fn default_policy(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("failurePolicy").or_insert_with(|| json!("Fail"));
    if let Some(mc) = spec
        .get_mut("matchConstraints")
        .and_then(Value::as_object_mut)
    {
        default_match_resources(mc);
    }
}

pub fn default_binding(obj: &mut Value) {
    if let Some(mr) = obj
        .pointer_mut("/spec/matchResources")
        .and_then(Value::as_object_mut)
    {
        default_match_resources(mr);
    }
}

fn default_match_resources(mr: &mut serde_json::Map<String, Value>) {
    mr.entry("matchPolicy")
        .or_insert_with(|| json!("Equivalent"));
    mr.entry("namespaceSelector").or_insert_with(|| json!({}));
    mr.entry("objectSelector").or_insert_with(|| json!({}));
    for key in ["resourceRules", "excludeResourceRules"] {
        if let Some(rules) = mr.get_mut(key).and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                rule.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

fn compiles(expr: &str, path: &Path, errs: &mut Errors) {
    if let Err(e) = matching::compile(expr) {
        errs.invalid(path, Bad::str(expr), format!("compilation failed: {e}"));
    }
}

pub fn validate_policy(obj: &Value, errs: &mut Errors) {
    let spec = j::at(obj, "spec");
    let sp = Path::root("spec");
    if let Some(fp) = spec.get("failurePolicy").and_then(Value::as_str)
        && !FAILURE_POLICIES.contains(&fp)
    {
        errs.not_supported(&sp.child("failurePolicy"), fp, FAILURE_POLICIES);
    }
    match spec.get("matchConstraints").filter(|m| m.is_object()) {
        None => errs.required(&sp.child("matchConstraints"), ""),
        Some(mc) => {
            let mp = sp.child("matchConstraints");
            if j::items(mc, "resourceRules").next().is_none() {
                errs.required(&mp.child("resourceRules"), "");
            }
            validate_match_resources(mc, &mp, errs);
        }
    }
    let validations: Vec<&Value> = j::items(spec, "validations").collect();
    if validations.is_empty() {
        errs.required(
            &sp.child("validations"),
            "validations or auditAnnotations must contain at least one item",
        );
    }
    for (i, v) in validations.iter().enumerate() {
        let vp = sp.child("validations").index(i);
        let expr = j::str_or(v, "expression");
        if expr.trim().is_empty() {
            errs.required(&vp.child("expression"), "expression is not specified");
        } else {
            compiles(expr, &vp.child("expression"), errs);
        }
        let message = j::str_or(v, "message");
        if !message.is_empty() && message.trim().is_empty() {
            errs.invalid(
                &vp.child("message"),
                Bad::str(message),
                "message must be non-empty if specified",
            );
        } else if message.contains(['\n', '\r']) {
            errs.invalid(
                &vp.child("message"),
                Bad::str(message),
                "message must not contain line breaks",
            );
        }
        let mexpr = j::str_or(v, "messageExpression");
        if !mexpr.is_empty() {
            compiles(mexpr, &vp.child("messageExpression"), errs);
        }
        if let Some(reason) = v.get("reason").and_then(Value::as_str)
            && !REASONS.iter().any(|(r, _)| *r == reason)
        {
            let allowed: Vec<&str> = REASONS.iter().map(|(r, _)| *r).collect();
            errs.not_supported(&vp.child("reason"), reason, &allowed);
        }
    }
    for (i, v) in j::items(spec, "variables").enumerate() {
        let vp = sp.child("variables").index(i);
        if j::str_or(v, "name").is_empty() {
            errs.required(&vp.child("name"), "name is not specified");
        }
        let expr = j::str_or(v, "expression");
        if expr.trim().is_empty() {
            errs.required(&vp.child("expression"), "expression is not specified");
        } else {
            compiles(expr, &vp.child("expression"), errs);
        }
    }
    for (i, c) in j::items(spec, "matchConditions").enumerate() {
        let cp = sp.child("matchConditions").index(i);
        if j::str_or(c, "name").is_empty() {
            errs.required(&cp.child("name"), "");
        }
        let expr = j::str_or(c, "expression");
        if expr.trim().is_empty() {
            errs.required(&cp.child("expression"), "");
        } else {
            compiles(expr, &cp.child("expression"), errs);
        }
    }
}

pub fn validate_binding(obj: &Value, errs: &mut Errors) {
    let spec = j::at(obj, "spec");
    let sp = Path::root("spec");
    let policy = j::str_or(spec, "policyName");
    if policy.is_empty() {
        errs.required(&sp.child("policyName"), "");
    } else {
        for p in names::dns1123_subdomain(policy) {
            errs.invalid(&sp.child("policyName"), Bad::str(policy), p);
        }
    }
    let actions: Vec<&str> = j::items(spec, "validationActions")
        .filter_map(Value::as_str)
        .collect();
    if actions.is_empty() {
        errs.required(
            &sp.child("validationActions"),
            "at least one validation action is required",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, a) in actions.iter().enumerate() {
        let ap = sp.child("validationActions").index(i);
        if !ACTIONS.contains(a) {
            errs.not_supported(&ap, a, ACTIONS);
        }
        if !seen.insert(*a) {
            errs.duplicate(&ap, Bad::str(a));
        }
    }
    if actions.contains(&"Deny") && actions.contains(&"Warn") {
        errs.invalid(
            &sp.child("validationActions"),
            Bad::json(&json!(actions)),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        );
    }
    if let Some(mr) = spec.get("matchResources").filter(|m| m.is_object()) {
        validate_match_resources(mr, &sp.child("matchResources"), errs);
    }
    if let Some(pr) = spec.get("paramRef").filter(|p| p.is_object()) {
        let pp = sp.child("paramRef");
        let has_name = !j::str_or(pr, "name").is_empty();
        let has_selector = pr.get("selector").is_some_and(Value::is_object);
        if has_name == has_selector {
            errs.push(
                ErrorType::Forbidden,
                &pp.child("name"),
                Bad::None,
                "one of name or selector must be specified",
            );
        }
        match pr.get("parameterNotFoundAction").and_then(Value::as_str) {
            None => errs.required(&pp.child("parameterNotFoundAction"), ""),
            Some(a) if !["Allow", "Deny"].contains(&a) => {
                errs.not_supported(&pp.child("parameterNotFoundAction"), a, &["Allow", "Deny"])
            }
            Some(_) => {}
        }
    }
}

fn validate_match_resources(mr: &Value, path: &Path, errs: &mut Errors) {
    if let Some(mp) = mr.get("matchPolicy").and_then(Value::as_str)
        && !MATCH_POLICIES.contains(&mp)
    {
        errs.not_supported(&path.child("matchPolicy"), mp, MATCH_POLICIES);
    }
    for key in ["namespaceSelector", "objectSelector"] {
        if let Some(sel) = mr.get(key).filter(|s| s.is_object()) {
            meta::validate_label_selector(sel, &path.child(key), errs);
        }
    }
    for key in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in j::items(mr, key).enumerate() {
            super::config::validate_rule_at(rule, &path.child(key).index(i), errs);
        }
    }
}

/// Whether a policy's or binding's matchResources take the request (`None` = absent = all).
pub fn resources_match(
    mr: Option<&Value>,
    t: &Target,
    equivalent: &[(&str, &str)],
    name: &str,
    obj: Option<&Value>,
    old: Option<&Value>,
    namespace_labels: Option<&Value>,
) -> bool {
    let Some(mr) = mr.filter(|m| m.is_object()) else {
        return true;
    };
    let named = |rule: &Value| {
        let names: Vec<&str> = j::items(rule, "resourceNames")
            .filter_map(Value::as_str)
            .collect();
        names.is_empty() || names.contains(&name)
    };
    let rules_of = |key: &str| -> Value {
        json!({
            "rules": j::items(mr, key).filter(|r| named(r)).cloned().collect::<Vec<_>>(),
            "matchPolicy": mr.get("matchPolicy").cloned().unwrap_or(json!("Equivalent")),
        })
    };
    if j::items(mr, "resourceRules").next().is_some()
        && matching::rules_match(&rules_of("resourceRules"), t, equivalent).is_none()
    {
        return false;
    }
    if matching::rules_match(&rules_of("excludeResourceRules"), t, equivalent).is_some() {
        return false;
    }
    matching::namespace_selector_matches(mr, namespace_labels)
        && matching::object_selector_matches(mr, obj, old)
}

/// What one policy decided under one binding.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Deny {
        code: u16,
        reason: String,
        message: String,
    },
    Warn(String),
}

/// Evaluates `policy` for a request that its binding selected. `vars` are `object`,
/// `oldObject`, `request` and `namespaceObject`.
pub fn evaluate(policy: &Value, binding: &Value, vars: &[(&str, &Value)]) -> Vec<Decision> {
    let pname = meta_name(policy);
    let bname = meta_name(binding);
    let spec = j::at(policy, "spec");
    let actions: Vec<&str> = j::items(j::at(binding, "spec"), "validationActions")
        .filter_map(Value::as_str)
        .collect();
    let ignore = j::str_or(spec, "failurePolicy") == "Ignore";
    let mut failures: Vec<(Option<&str>, String)> = Vec::new();
    let mut bound: Vec<(&str, &Value)> = vars.to_vec();
    // Conditions first: a false one means the policy does not apply.
    for c in j::items(spec, "matchConditions") {
        match run_bool(j::str_or(c, "expression"), &bound) {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(_) if ignore => return Vec::new(),
            Err(e) => failures.push((None, e)),
        }
    }
    let mut variables = serde_json::Map::new();
    for v in j::items(spec, "variables") {
        let mut with_vars = bound.clone();
        let current = Value::Object(variables.clone());
        with_vars.push(("variables", &current));
        let value = match run(j::str_or(v, "expression"), &with_vars) {
            Ok(value) => value.json().unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        variables.insert(j::str_or(v, "name").to_string(), value);
    }
    let variables = Value::Object(variables);
    bound.push(("variables", &variables));
    if failures.is_empty() {
        for v in j::items(spec, "validations") {
            let expr = j::str_or(v, "expression");
            match run_bool(expr, &bound) {
                Ok(true) => {}
                Ok(false) => {
                    failures.push((v.get("reason").and_then(Value::as_str), message(v, &bound)))
                }
                Err(_) if ignore => {}
                Err(e) => failures.push((None, e)),
            }
        }
    }
    let mut out = Vec::new();
    for (reason, why) in failures {
        if actions.contains(&"Deny") {
            let reason = reason.unwrap_or("Invalid");
            let code = REASONS
                .iter()
                .find(|(r, _)| *r == reason)
                .map(|(_, c)| *c)
                .unwrap_or(422);
            out.push(Decision::Deny {
                code,
                reason: reason.to_string(),
                message: format!(
                    "ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {why}"
                ),
            });
        }
        if actions.contains(&"Warn") {
            out.push(Decision::Warn(format!(
                "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {why}"
            )));
        }
    }
    out
}

/// A binding that cannot be applied (its parameters missing or unusable), decided as a
/// failed validation under the binding's actions.
pub fn configuration_failure(policy: &Value, binding: &Value, why: &str) -> Vec<Decision> {
    let pname = meta_name(policy);
    let bname = meta_name(binding);
    let why = format!("failed to configure binding: {why}");
    let actions: Vec<&str> = j::items(j::at(binding, "spec"), "validationActions")
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    if actions.contains(&"Deny") {
        out.push(Decision::Deny {
            code: 422,
            reason: "Invalid".into(),
            message: format!(
                "ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {why}"
            ),
        });
    }
    if actions.contains(&"Warn") {
        out.push(Decision::Warn(format!(
            "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {why}"
        )));
    }
    out
}

fn meta_name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn run(expr: &str, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
    let program = matching::compile(expr)
        .map_err(|e| format!("expression '{expr}' resulted in error: compilation failed: {e}"))?;
    crate::apiserver::crd::cel::run_with(&program, vars)
        .map_err(|e| format!("expression '{expr}' resulted in error: {e}"))
}

fn run_bool(expr: &str, vars: &[(&str, &Value)]) -> Result<bool, String> {
    match run(expr, vars)? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!(
            "expression '{expr}' resulted in error: it returned {other:?}, not a bool"
        )),
    }
}

/// A failed validation's message: messageExpression when it gives a non-empty string, else
/// message, else Kubernetes' `failed expression: …`.
fn message(v: &Value, vars: &[(&str, &Value)]) -> String {
    let mexpr = j::str_or(v, "messageExpression");
    if !mexpr.is_empty()
        && let Ok(cel::Value::String(s)) = run(mexpr, vars)
        && !s.trim().is_empty()
    {
        return s.to_string();
    }
    match j::str_or(v, "message") {
        "" => format!("failed expression: {}", j::str_or(v, "expression").trim()),
        m => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(validations: Value, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "replicas-limit"}, "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
            "validations": validations,
        }});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            p["spec"][k] = v;
        }
        p
    }

    fn binding(actions: &[&str]) -> Value {
        json!({"metadata": {"name": "replicas-binding"}, "spec": {"policyName": "replicas-limit", "validationActions": actions}})
    }

    #[test]
    fn a_false_validation_denies_or_warns_in_kubernetes_words() {
        let p = policy(
            json!([{"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"}]),
            json!({}),
        );
        let obj = json!({"spec": {"replicas": 7}});
        let vars = [("object", &obj)];
        assert_eq!(
            evaluate(&p, &binding(&["Deny"]), &vars),
            vec![Decision::Deny {
                code: 422,
                reason: "Invalid".into(),
                message: "ValidatingAdmissionPolicy 'replicas-limit' with binding 'replicas-binding' denied request: at most 5 replicas".into(),
            }]
        );
        assert_eq!(
            evaluate(&p, &binding(&["Warn"]), &vars),
            vec![Decision::Warn("Validation failed for ValidatingAdmissionPolicy 'replicas-limit' with binding 'replicas-binding': at most 5 replicas".into())]
        );
        let ok = json!({"spec": {"replicas": 3}});
        assert!(evaluate(&p, &binding(&["Deny"]), &[("object", &ok)]).is_empty());
    }

    #[test]
    fn message_expressions_variables_and_reasons() {
        let p = policy(
            json!([{"expression": "object.spec.replicas <= variables.max",
                    "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > ' + string(variables.max)",
                    "reason": "Forbidden"},
                   {"expression": "has(object.metadata.labels)"}]),
            json!({"variables": [{"name": "max", "expression": "5"}]}),
        );
        let obj = json!({"metadata": {}, "spec": {"replicas": 7}});
        let got = evaluate(&p, &binding(&["Deny"]), &[("object", &obj)]);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Decision::Deny {
                code: 403,
                reason: "Forbidden".into(),
                message: "ValidatingAdmissionPolicy 'replicas-limit' with binding 'replicas-binding' denied request: replicas 7 > 5".into(),
            }
        );
        match &got[1] {
            Decision::Deny { message, .. } => assert!(
                message.ends_with("denied request: failed expression: has(object.metadata.labels)"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_follow_the_failure_policy_and_conditions_gate() {
        let p = policy(
            json!([{"expression": "object.spec.missing > 1"}]),
            json!({}),
        );
        let obj = json!({"spec": {}});
        let got = evaluate(&p, &binding(&["Deny"]), &[("object", &obj)]);
        assert!(
            matches!(&got[..], [Decision::Deny { message, .. }] if message.contains("expression 'object.spec.missing > 1' resulted in error")),
            "{got:?}"
        );
        let mut ignoring = p.clone();
        ignoring["spec"]["failurePolicy"] = json!("Ignore");
        assert!(evaluate(&ignoring, &binding(&["Deny"]), &[("object", &obj)]).is_empty());
        let gated = policy(
            json!([{"expression": "false"}]),
            json!({"matchConditions": [{"name": "only-big", "expression": "object.spec.replicas > 100"}]}),
        );
        let small = json!({"spec": {"replicas": 1}});
        assert!(evaluate(&gated, &binding(&["Deny"]), &[("object", &small)]).is_empty());
    }

    #[test]
    fn bad_policies_and_bindings_are_refused() {
        let mut errs = Errors::new();
        validate_policy(
            &json!({"metadata": {"name": "p"}, "spec": {"validations": [{"expression": "object.("}]}}),
            &mut errs,
        );
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert!(
            msgs.iter()
                .any(|m| m == "spec.matchConstraints: Required value"),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with(
                "spec.validations[0].expression: Invalid value: \"object.(\": compilation failed"
            )),
            "{msgs:?}"
        );
        let mut errs = Errors::new();
        validate_binding(
            &json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny", "Warn"]}}),
            &mut errs,
        );
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("must not contain both Deny and Warn")),
            "{msgs:?}"
        );
    }

    #[test]
    fn match_resources_use_rules_exclusions_and_names() {
        let mr = json!({"resourceRules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "resourceNames": ["only"]}],
                        "excludeResourceRules": []});
        let t = Target {
            operation: "CREATE",
            group: "",
            version: "v1",
            resource: "configmaps",
            subresource: "",
            namespaced: true,
        };
        assert!(resources_match(
            Some(&mr),
            &t,
            &[],
            "only",
            None,
            None,
            None
        ));
        assert!(!resources_match(
            Some(&mr),
            &t,
            &[],
            "other",
            None,
            None,
            None
        ));
        let excluding = json!({"resourceRules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}],
                               "excludeResourceRules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]});
        assert!(!resources_match(
            Some(&excluding),
            &t,
            &[],
            "x",
            None,
            None,
            None
        ));
        assert!(resources_match(None, &t, &[], "x", None, None, None));
    }
}
