//! A custom resource written at a version other than its storage version is decoded, defaulted
//! and validated at the version the client wrote (kube-apiserver's hub for custom resources is
//! the request's own version), then pruned to the storage version's schema. The write path
//! itself works on the stored form (`kinds::convert` turns the request into one at the storage
//! version); `View`, in force while that write is served, tells admission to judge the object
//! at the client's version.

use std::cell::RefCell;
use std::future::Future;

use serde_json::{Value, json};

use super::schema;
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::status::ApiError;
use crate::store::Store;

/// The write being served came at another version than the storage version.
#[derive(Debug, Clone)]
pub struct View {
    /// The resource at the version the client asked for.
    pub def: &'static ResourceDef,
    /// The object before the write, at the client's version, when the request already had it.
    pub old: Option<Value>,
}

tokio::task_local! {
    static VIEW: RefCell<Option<View>>;
}

/// Runs `serve` (a write at the storage version) with `view` in force.
pub async fn scope<F: Future>(view: View, serve: F) -> F::Output {
    VIEW.scope(RefCell::new(Some(view)), serve).await
}

/// The view of the write being served, if it came at another version and is of `def`'s kind
/// (`def` being the storage version's entry).
pub fn current(def: &ResourceDef) -> Option<View> {
    VIEW.try_with(|v| v.borrow().clone())
        .ok()
        .flatten()
        .filter(|v| v.def.group == def.group && v.def.plural == def.plural)
}

/// `obj` at `target`'s version: through the definition's conversion webhook, or (strategy
/// None) with apiVersion rewritten; then pruned by `target`'s schema, as kube-apiserver's
/// schema-coercing converter prunes whatever a conversion gives.
pub async fn to_version(
    store: &Store,
    target: &ResourceDef,
    obj: Value,
) -> Result<Value, ApiError> {
    let mut out = convert(store, target, obj).await?;
    prune_to(target, &mut out);
    Ok(out)
}

/// `obj` converted to `target`'s version, not pruned (the stored form of a write in progress
/// keeps what the client's version declares until admission has validated it).
pub async fn convert(store: &Store, target: &ResourceDef, obj: Value) -> Result<Value, ApiError> {
    let Some(custom) = target.custom else {
        return Ok(obj);
    };
    let api_version = target.api_version();
    match &custom.webhook {
        Some(hook) => super::conversion::convert_one(store, hook, obj, &api_version).await,
        None => Ok(rewrite(obj, &api_version)),
    }
}

/// Strategy None: only apiVersion changes.
pub fn rewrite(mut obj: Value, api_version: &str) -> Value {
    if obj.is_object() {
        obj["apiVersion"] = json!(api_version);
    }
    obj
}

/// `obj` (stored form, after mutating admission) at the client's version, defaulted there:
/// what admission validates. The stored form still holds what only the client's version
/// declares (the storage version's pruning comes after validation), so strategy None loses
/// nothing on the way back.
pub async fn as_written(store: &Store, view: &View, obj: &Value) -> Result<Value, ApiError> {
    let mut out = to_version(store, view.def, obj.clone()).await?;
    if let Some(s) = view.def.custom.and_then(|c| c.schema.as_ref()) {
        schema::apply_defaults(s, &mut out);
    }
    Ok(out)
}

/// The object before a write at the client's version.
pub async fn old_as_written(store: &Store, view: &View, old: &Value) -> Result<Value, ApiError> {
    match &view.old {
        Some(o) => Ok(o.clone()),
        None => to_version(store, view.def, old.clone()).await,
    }
}

/// `obj` pruned to `def`'s schema, silently: what another version declares but this one does
/// not is dropped when an object moves to it.
pub fn prune_to(def: &ResourceDef, obj: &mut Value) {
    if let Some(s) = def.custom.and_then(|c| c.schema.as_ref()) {
        schema::prune(s, obj, "", true, &mut Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_none_rewrites_only_api_version() {
        let a = json!({"apiVersion": "g/v1", "metadata": {"uid": "1"}, "spec": {"x": 1}});
        let b = rewrite(a.clone(), "g/v3");
        assert_eq!(b["apiVersion"], "g/v3");
        assert_eq!(b["spec"], a["spec"]);
        assert_eq!(rewrite(json!(null), "g/v3"), json!(null));
    }
}
