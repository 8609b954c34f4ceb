//! authorization.k8s.io/v1: SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview (`kubectl auth can-i`) and SelfSubjectRulesReview (`can-i --list`).
//! They are created, never stored: the answer is the object with its status filled in.

use serde_json::{Value, json};

use super::rbac::Rule;
use super::{Attributes, Authorizer, MASTERS, User};
use crate::apiserver::status::ApiError;

pub const GROUP: &str = "authorization.k8s.io";

/// The review a path asks for: (plural, namespace of a local review).
pub fn target(path: &str) -> Option<(&'static str, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", GROUP, "v1", "selfsubjectaccessreviews"] => {
            Some(("selfsubjectaccessreviews", None))
        }
        ["apis", GROUP, "v1", "subjectaccessreviews"] => Some(("subjectaccessreviews", None)),
        ["apis", GROUP, "v1", "selfsubjectrulesreviews"] => Some(("selfsubjectrulesreviews", None)),
        [
            "apis",
            GROUP,
            "v1",
            "namespaces",
            ns,
            "localsubjectaccessreviews",
        ] => Some(("localsubjectaccessreviews", Some(ns.to_string()))),
        _ => None,
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "subjectaccessreviews" => "SubjectAccessReview",
        "localsubjectaccessreviews" => "LocalSubjectAccessReview",
        _ => "SelfSubjectRulesReview",
    }
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        GROUP,
        kind,
        "",
        vec![(
            field.to_string(),
            format!("Invalid value: \"null\": {message}"),
        )],
    )
}

/// Answers a review posted by `requester`; `body` is the decoded request.
pub fn answer(
    authz: &Authorizer,
    plural: &str,
    path_namespace: Option<&str>,
    requester: &User,
    mut body: Value,
) -> Result<Value, ApiError> {
    let kind = kind_of(plural);
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {kind} must be an object"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    if plural == "selfsubjectrulesreviews" {
        let namespace = s(&spec, "namespace");
        body["status"] = rules_review(authz, requester, &namespace);
        return Ok(finish(body, kind));
    }
    let subject = if plural == "selfsubjectaccessreviews" {
        requester.clone()
    } else {
        let groups = crate::apiserver::kinds::json::strings(&spec, "groups");
        let user = s(&spec, "user");
        if user.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                GROUP,
                kind,
                "",
                vec![(
                    "spec.user".into(),
                    "Invalid value: \"\": at least one of user or group must be specified".into(),
                )],
            ));
        }
        User {
            name: user,
            groups,
            ..User::default()
        }
    };
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let mut a = Attributes {
        user: subject.name.clone(),
        groups: subject.groups.clone(),
        ..Attributes::default()
    };
    match (resource, non_resource) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                GROUP,
                kind,
                "",
                vec![(
                    "spec.nonResourceAttributes".into(),
                    format!(
                        "Invalid value: {}: cannot be specified in combination with resourceAttributes",
                        serde_json::to_string(non_resource.unwrap_or(&Value::Null))
                            .unwrap_or_default()
                    ),
                )],
            ));
        }
        (None, None) => {
            return Err(invalid(
                kind,
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        (Some(r), None) => {
            a.resource_request = true;
            a.verb = s(r, "verb");
            a.api_group = s(r, "group");
            a.api_version = s(r, "version");
            a.resource = s(r, "resource");
            a.subresource = s(r, "subresource");
            a.name = s(r, "name");
            a.namespace = s(r, "namespace");
        }
        (None, Some(n)) => {
            if plural == "localsubjectaccessreviews" {
                return Err(ApiError::invalid(
                    GROUP,
                    kind,
                    "",
                    vec![(
                        "spec.nonResourceAttributes".into(),
                        "Invalid value: \"\": disallowed on this kind of request".into(),
                    )],
                ));
            }
            a.verb = s(n, "verb");
            a.path = s(n, "path");
        }
    }
    if let Some(ns) = path_namespace {
        let object_ns = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(ns);
        if object_ns != ns || a.namespace != ns {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {ns}"
            )));
        }
    }
    let decision = authz.authorize(&a);
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    body["status"] = status;
    Ok(finish(body, kind))
}

fn finish(mut body: Value, kind: &str) -> Value {
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["kind"] = json!(kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    if body["metadata"].get("creationTimestamp").is_none() {
        body["metadata"]["creationTimestamp"] = Value::Null;
    }
    body
}

fn rules_review(authz: &Authorizer, user: &User, namespace: &str) -> Value {
    let mut rules: Vec<Rule> = Vec::new();
    if user.groups.iter().any(|g| g == MASTERS) {
        let all = vec!["*".to_string()];
        rules.push(Rule {
            verbs: all.clone(),
            api_groups: all.clone(),
            resources: all.clone(),
            ..Rule::default()
        });
        rules.push(Rule {
            verbs: all.clone(),
            non_resource_urls: all,
            ..Rule::default()
        });
    }
    let (rbac_rules, errors) = authz.index().rules_for(&user.name, &user.groups, namespace);
    rules.extend(rbac_rules);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if !rule.resources.is_empty() {
            let mut r = json!({"verbs": rule.verbs});
            if !rule.api_groups.is_empty() {
                r["apiGroups"] = json!(rule.api_groups);
            }
            r["resources"] = json!(rule.resources);
            if !rule.resource_names.is_empty() {
                r["resourceNames"] = json!(rule.resource_names);
            }
            resource_rules.push(r);
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        // RBAC can always list everything it knows; missing roles are reported, not guessed.
        "incomplete": false,
    });
    if !errors.is_empty() {
        let joined = if errors.len() == 1 {
            errors[0].clone()
        } else {
            format!("[{}]", errors.join(", "))
        };
        status["evaluationError"] = json!(joined);
    }
    status
}
