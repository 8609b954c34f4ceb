//! RBAC's escalation and bind checks: a user may write a Role or ClusterRole only with rules
//! they hold themselves (or with the `escalate` verb on it), and may bind a role only if they
//! hold its rules (or the `bind` verb on it). Run from admission for every RBAC write, with
//! the requesting user from `REQUESTER`; the server's own writes carry no requester.

use serde_json::Value;

use super::rbac::{self, Index, Rule};
use super::{Attributes, REQUESTER, User, forbidden_status};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::status::ApiError;
use crate::store::Store;

fn meta<'a>(v: &'a Value, key: &str) -> &'a str {
    v.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Checks a create (`old` None) or update of an RBAC object.
pub fn check(
    store: &Store,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    if def.group != rbac::GROUP {
        return Ok(());
    }
    let Ok(user) = REQUESTER.try_with(User::clone) else {
        return Ok(());
    };
    if user.is_master() {
        return Ok(());
    }
    match def.plural {
        "roles" | "clusterroles" => check_role(store, def.plural, &user, old, new),
        "rolebindings" | "clusterrolebindings" => check_binding(store, def.plural, &user, old, new),
        _ => Ok(()),
    }
}

fn index(store: &Store) -> Result<Index, ApiError> {
    Index::build(store).map_err(|e| ApiError::internal(format!("cannot read RBAC objects: {e}")))
}

fn allowed(index: &Index, user: &User, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    let a = Attributes {
        user: user.name.clone(),
        groups: user.groups.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: rbac::GROUP.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    };
    index.evaluate(&a).allowed_by.is_some()
}

/// ConfirmNoEscalation: the user's rules in `namespace` must cover `wanted`.
fn confirm_no_escalation(
    index: &Index,
    user: &User,
    namespace: &str,
    wanted: &[Rule],
) -> Result<(), String> {
    let (owned, errors) = index.rules_for(&user.name, &user.groups, namespace);
    let missing = rbac::uncovered(&owned, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = missing.iter().map(Rule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let groups: Vec<String> = user.groups.iter().map(|g| rbac::go_quote(g)).collect();
    let mut msg = format!(
        "user {} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        rbac::go_quote(&user.name),
        groups.join(" "),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

fn check_role(
    store: &Store,
    plural: &str,
    user: &User,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let rules = Rule::rules_of(new);
    let aggregation = new.get("aggregationRule").filter(|v| !v.is_null());
    if let Some(old) = old
        && Rule::rules_of(old) == rules
        && old.get("aggregationRule").filter(|v| !v.is_null()) == aggregation
    {
        return Ok(());
    }
    let name = meta(new, "name");
    let namespace = if plural == "roles" {
        meta(new, "namespace")
    } else {
        ""
    };
    let index = index(store)?;
    if allowed(&index, user, "escalate", plural, namespace, name) {
        return Ok(());
    }
    if let Err(msg) = confirm_no_escalation(&index, user, namespace, &rules) {
        return Err(forbidden_status(rbac::GROUP, plural, name, &msg));
    }
    if plural == "clusterroles" && aggregation.is_some() {
        let all = vec!["*".to_string()];
        let full = [
            Rule {
                verbs: all.clone(),
                api_groups: all.clone(),
                resources: all.clone(),
                ..Rule::default()
            },
            Rule {
                verbs: all.clone(),
                non_resource_urls: all,
                ..Rule::default()
            },
        ];
        if confirm_no_escalation(&index, user, "", &full).is_err() {
            return Err(forbidden_status(
                rbac::GROUP,
                plural,
                name,
                "must have cluster-admin privileges to use the aggregationRule",
            ));
        }
    }
    Ok(())
}

fn check_binding(
    store: &Store,
    plural: &str,
    user: &User,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    if let Some(old) = old
        && old.get("roleRef") == new.get("roleRef")
        && old.get("subjects") == new.get("subjects")
    {
        return Ok(());
    }
    let name = meta(new, "name");
    let namespace = if plural == "rolebindings" {
        meta(new, "namespace")
    } else {
        ""
    };
    let role_ref = new.get("roleRef").unwrap_or(&Value::Null);
    let role_kind = role_ref
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_plural = if role_kind == "Role" {
        "roles"
    } else {
        "clusterroles"
    };
    let index = index(store)?;
    if allowed(&index, user, "bind", role_plural, namespace, role_name) {
        return Ok(());
    }
    let rules = match role_kind {
        "Role" => index.role(namespace, role_name),
        _ => index.cluster_role(role_name),
    }
    .ok_or_else(|| ApiError::not_found(rbac::GROUP, role_plural, role_name))?;
    if let Err(msg) = confirm_no_escalation(&index, user, namespace, rules) {
        return Err(forbidden_status(rbac::GROUP, plural, name, &msg));
    }
    Ok(())
}
