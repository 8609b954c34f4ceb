//! Field management: who owns which fields of an object (`metadata.managedFields`), kept up to
//! date on every write and used by server-side apply to merge, prune and detect conflicts.
//!
//! This follows Kubernetes' field manager (k8s.io/apimachinery managedfields and
//! structured-merge-diff):
//! - an update (create, PUT, any non-apply patch, status and scale writes) gives its manager the
//!   fields it added or changed, taking them from whoever owned them, and takes removed fields
//!   from everyone; the entry's time moves only when it changed something;
//! - an apply makes its manager own exactly what it applied, merges that into the object, removes
//!   what it applied last time and no longer does (unless someone else owns it), and fails with
//!   a conflict when it would change a value another manager owns, unless forced.
//!
//! Objects are compared as Go's typed objects compare (`gofields`), after defaulting, with the
//! fields the write may not change (status on the main resource, everything but status on
//! `/status`) left out.

mod gofields;
mod managed;
mod path;
mod set;
mod typed;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

use super::handlers::Request;
use super::object;
use super::resources::ResourceDef;
use super::status::ApiError;
pub use managed::{Managed, ManagerId, Operation};
use path::PathElement;
use set::FieldSet;
use typed::Ty;

/// Kubernetes keeps at most this many update entries, folding older ones together.
const MAX_UPDATE_MANAGERS: usize = 10;
/// Kubernetes refuses longer manager names; a User-Agent is cut to this.
const FIELD_MANAGER_MAX_LENGTH: usize = 128;
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What one write is: the kind's schema, the version and subresource it goes through.
pub struct Context {
    def: &'static ResourceDef,
    ty: Ty<'static>,
    api_version: String,
    subresource: String,
}

impl Context {
    pub fn new(def: &'static ResourceDef, subresource: Option<&str>) -> Self {
        // A custom resource merges by its version's structural schema (list and map types).
        let schema = match def.custom {
            Some(custom) => custom
                .schema
                .as_ref()
                .map(|s| super::schema::registry().inline(s)),
            None => super::schema::kind_schema(def),
        };
        let ty = schema.map(Ty::root).unwrap_or_else(Ty::untyped);
        Context {
            def,
            ty,
            api_version: def.api_version(),
            subresource: subresource.unwrap_or_default().to_string(),
        }
    }

    fn of(req: &Request<'_>) -> Self {
        Context::new(write_def(req.target), req.target.subresource.as_deref())
    }

    /// A CSR's `/approval` writes status conditions, as `/status` does.
    fn on_status(&self) -> bool {
        matches!(self.subresource.as_str(), "status" | "approval")
    }

    /// `obj` as the comparison sees it (see the module comment).
    fn view(&self, obj: &Value) -> Value {
        let mut v = obj.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        if let Some(map) = v.as_object_mut() {
            if self.on_status() {
                map.retain(|k, _| k == "status");
            } else if self.def.has_status() {
                map.remove("status");
            }
        }
        // Custom resources are compared as Kubernetes compares unstructured objects: as sent.
        if self.def.custom.is_some() {
            return v;
        }
        gofields::normalize(self.ty, &v)
    }

    /// Only the fields this write may own.
    fn filter(&self, set: FieldSet) -> FieldSet {
        let status = PathElement::field("status");
        if self.on_status() {
            set.only(&status)
        } else if self.def.has_status() {
            let mut drop = FieldSet::new();
            drop.insert(&[status]);
            set.recursive_difference(&drop)
        } else {
            set
        }
    }

    fn id(&self, manager: &str, operation: Operation) -> ManagerId {
        ManagerId::new(manager, operation, &self.api_version, &self.subresource)
    }
}

/// The resource a write's managed fields are kept at: for a custom resource the version the
/// client wrote through (its versions convert with strategy None, so objects and field sets
/// are the same at every version and only the recorded apiVersion differs); for a built-in
/// kind the storage version, which the objects compared are in.
pub fn write_def(target: &super::request::ResourceRequest) -> &'static ResourceDef {
    let served = target.served_def();
    if served.custom.is_some() {
        served
    } else {
        target.def
    }
}

/// Fields no manager ever owns: type and server-owned metadata.
fn stripped() -> FieldSet {
    let mut s = FieldSet::new();
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        let p: Vec<PathElement> = path.iter().map(|f| PathElement::field(f)).collect();
        s.insert(&p);
    }
    s
}

/// The manager of a write: `fieldManager`, else the User-Agent up to its first `/` (printable
/// characters, at most 128 bytes), else "unknown".
pub fn manager_of(req: &Request<'_>) -> String {
    if let Some(m) = req.query.get("fieldManager") {
        return m.to_string();
    }
    let mut out = String::new();
    for c in req.user_agent.split('/').next().unwrap_or_default().chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

/// Kubernetes' checks of the `fieldManager` and `force` options of a write.
pub fn validate_options(req: &Request<'_>, apply: bool) -> Result<(), ApiError> {
    let invalid = |field: &str, reason: &str, message: String| {
        ApiError::options_invalid(
            if req.target.verb == super::request::Verb::Patch {
                "PatchOptions"
            } else if req.target.verb == super::request::Verb::Create {
                "CreateOptions"
            } else {
                "UpdateOptions"
            },
            field,
            reason,
            message,
        )
    };
    let manager = req.query.get("fieldManager").unwrap_or_default();
    if apply && manager.is_empty() {
        return Err(invalid(
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch".into(),
        ));
    }
    if !apply && req.target.verb == super::request::Verb::Patch && req.query.get("force").is_some()
    {
        return Err(invalid(
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch".into(),
        ));
    }
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        return Err(invalid(
            "fieldManager",
            "FieldValueTooLong",
            format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
        ));
    }
    if manager.chars().any(char::is_control) {
        return Err(invalid(
            "fieldManager",
            "FieldValueInvalid",
            format!("Invalid value: {manager:?}: must only contain printable characters"),
        ));
    }
    Ok(())
}

fn managed_fields_of(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/managedFields")
}

fn set_managed_fields(obj: &mut Value, managed: &Managed) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        match managed.encode() {
            Some(list) => meta.insert("managedFields".into(), list),
            None => meta.remove("managedFields"),
        };
    }
}

/// `[]` or `[{}]`: a client asking for the managed fields to be cleared.
fn is_reset(list: Option<&Value>) -> bool {
    match list {
        Some(Value::Array(items)) => {
            items.is_empty()
                || (items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty))
        }
        _ => false,
    }
}

/// What the write starts from: the managed fields the client sent when they are usable (so a
/// client can rewrite them, as kubectl does when migrating to server-side apply), else the live
/// object's. Subresource writes always keep the live ones.
fn starting_point(live: Option<&Value>, new: &Value, on_subresource: bool) -> Managed {
    let live_managed = || {
        live.and_then(managed_fields_of)
            .map(|l| Managed::decode(l).unwrap_or_default())
            .unwrap_or_default()
    };
    if on_subresource {
        return live_managed();
    }
    let sent = managed_fields_of(new);
    if is_reset(sent) {
        return Managed::default();
    }
    match sent.map(Managed::decode) {
        Some(Ok(m)) if !m.is_empty() => m,
        _ => live_managed(),
    }
}

/// An update by `id`: it owns what it added or changed (taking it from everyone else), and
/// removed fields leave everyone's sets.
fn record_update(managed: &mut Managed, ctx: &Context, id: ManagerId, old: &Value, new: &Value) {
    let cmp = typed::compare(ctx.ty, old, new);
    let changed = cmp.changed();
    for entry in managed.entries.values_mut() {
        entry.set = entry.set.difference(&changed).difference(&cmp.removed);
    }
    managed.prune_empty();
    let owned = ctx.filter(changed).difference(&stripped());
    if !owned.is_empty() {
        let entry = managed.entries.entry(id).or_insert_with(|| managed::Entry {
            api_version: ctx.api_version.clone(),
            set: FieldSet::new(),
            time: None,
        });
        entry.set = entry.set.union(&owned);
        entry.api_version = ctx.api_version.clone();
        entry.time = Some(object::now_rfc3339());
    }
    managed.cap_updates(MAX_UPDATE_MANAGERS);
}

/// Defaults as the API server's decoder applies them to what a client sent.
fn defaulted(def: &ResourceDef, obj: &Value) -> Value {
    let mut v = obj.clone();
    super::defaults::on_update(def, &mut v);
    // Kubernetes gives a namespace its finalizer in the create strategy, after the field
    // manager has run, so its creator does not own it.
    if (def.group, def.plural) == ("", "namespaces")
        && obj.pointer("/spec/finalizers").is_none()
        && let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("finalizers");
        if spec.is_empty()
            && let Some(map) = v.as_object_mut()
        {
            map.remove("spec");
        }
    }
    v
}

/// The managed fields of an object being created by `req`: its manager owns everything it set.
pub fn on_create(req: &Request<'_>, obj: &mut Value) {
    created_by(
        Context::of(req).def,
        req.target.subresource.as_deref(),
        obj,
        &manager_of(req),
    );
}

/// The managed fields of `obj`, created by `manager` (also what the API server's own objects,
/// such as the system namespaces, carry).
pub fn created_by(
    def: &'static ResourceDef,
    subresource: Option<&str>,
    obj: &mut Value,
    manager: &str,
) {
    let ctx = Context::new(def, subresource);
    let mut managed = starting_point(None, obj, false);
    let zero = json!({});
    record_update(
        &mut managed,
        &ctx,
        ctx.id(manager, Operation::Update),
        &ctx.view(&zero),
        &ctx.view(&defaulted(ctx.def, obj)),
    );
    set_managed_fields(obj, &managed);
}

/// The managed fields of `new` replacing `old` through `req` (PUT, a non-apply patch, status).
/// An object without managed fields is not tracked, as in Kubernetes.
pub fn on_update(req: &Request<'_>, old: &Value, new: &mut Value) {
    let ctx = Context::of(req);
    let mut managed = starting_point(Some(old), new, !ctx.subresource.is_empty());
    if managed.is_empty() {
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        return;
    }
    record_update(
        &mut managed,
        &ctx,
        ctx.id(&manager_of(req), Operation::Update),
        &ctx.view(old),
        &ctx.view(&defaulted(ctx.def, new)),
    );
    set_managed_fields(new, &managed);
}

/// A scale write on the parent object: whoever set a new `spec.replicas` owns it, as an update
/// through the `scale` subresource (without a time, as Kubernetes records it), and nobody else
/// does.
pub fn on_scale(req: &Request<'_>, old: &Value, new: &mut Value) {
    if old.pointer("/spec/replicas") == new.pointer("/spec/replicas") {
        return;
    }
    let Ok(mut managed) = Managed::decode(managed_fields_of(old).unwrap_or(&Value::Null)) else {
        return;
    };
    if managed.is_empty() {
        return;
    }
    let replicas = [PathElement::field("spec"), PathElement::field("replicas")];
    let mut set = FieldSet::new();
    set.insert(&replicas);
    for entry in managed.entries.values_mut() {
        entry.set = entry.set.difference(&set);
    }
    managed.prune_empty();
    let ctx = Context::new(write_def(req.target), Some("scale"));
    managed.entries.insert(
        ctx.id(&manager_of(req), Operation::Update),
        managed::Entry {
            api_version: ctx.api_version.clone(),
            set,
            time: None,
        },
    );
    set_managed_fields(new, &managed);
}

/// One manager's conflicting fields.
type Conflicts = Vec<(ManagerId, FieldSet)>;

/// Server-side apply of `config` by `manager` onto `live` (the stored object, or `{}` when the
/// object is being created).
pub fn apply(
    ctx: &Context,
    live: &Value,
    exists: bool,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let mut managed = Managed::decode(managed_fields_of(live).unwrap_or(&Value::Null))
        .map_err(|e| ApiError::internal(format!("failed to decode managed fields: {e}")))?;
    let mut live = live.clone();
    if let Some(meta) = live.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    // An object nobody tracked yet: what it holds belongs to "before-first-apply".
    if managed.is_empty() && exists {
        let zero = json!({});
        record_update(
            &mut managed,
            ctx,
            ctx.id("before-first-apply", Operation::Update),
            &ctx.view(&zero),
            &ctx.view(&live),
        );
    }
    let id = ctx.id(manager, Operation::Apply);
    let attempt = apply_once(ctx, managed.clone(), &live, config, &id, force);
    let (mut object, mut managed, changed) = match attempt {
        Ok(done) => done,
        // kubectl's own migration from client-side apply: fields whose value still matches
        // the last client-side applied configuration may be taken over without --force.
        Err(conflicts) if manager == "kubectl" => {
            let allowed = allowed_by_last_applied(ctx, &live);
            let remaining: Conflicts = conflicts
                .into_iter()
                .map(|(m, s)| (m, allowed.as_ref().map_or(s.clone(), |a| s.difference(a))))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            if !remaining.is_empty() {
                return Err(conflict_error(remaining));
            }
            apply_once(ctx, managed, &live, config, &id, true).map_err(conflict_error)?
        }
        Err(conflicts) => return Err(conflict_error(conflicts)),
    };
    if changed && let Some(entry) = managed.entries.get_mut(&id) {
        entry.time = Some(object::now_rfc3339());
    }
    // kubectl keeps the client-side apply annotation in step with what it applies.
    if manager == "kubectl"
        && let Some(annotations) = object
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        && annotations
            .get(LAST_APPLIED)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    {
        annotations.insert(LAST_APPLIED.into(), json!(last_applied_of(config)));
    }
    set_managed_fields(&mut object, &managed);
    Ok(object)
}

/// Merges, prunes and records one apply; the conflicts when there are some and `force` is off.
fn apply_once(
    ctx: &Context,
    mut managed: Managed,
    live: &Value,
    config: &Value,
    id: &ManagerId,
    force: bool,
) -> Result<(Value, Managed, bool), Conflicts> {
    let applied = ctx.filter(typed::to_field_set(ctx.ty, config));
    let mut merged = typed::merge(ctx.ty, live, config);
    let previous = managed.entries.get(id).cloned();
    managed.entries.insert(
        id.clone(),
        managed::Entry {
            api_version: ctx.api_version.clone(),
            set: applied,
            time: previous.as_ref().and_then(|p| p.time.clone()),
        },
    );
    // What this manager applied last time and no longer applies goes, unless someone owns it.
    if let Some(last) = previous.map(|p| p.set).filter(|s| !s.is_empty()) {
        let mut everyone = FieldSet::new();
        for entry in managed.entries.values() {
            everyone.union_with(&entry.set);
        }
        let drop =
            typed::ensure_named(ctx.ty, &last).difference(&typed::ensure_named(ctx.ty, &everyone));
        if !drop.is_empty() {
            merged = typed::remove(ctx.ty, &merged, &drop);
        }
    }
    let (live_view, merged_view) = (ctx.view(live), ctx.view(&merged));
    let cmp = typed::compare(ctx.ty, &live_view, &merged_view);
    let changed = cmp.changed();
    let mut conflicts: Conflicts = Vec::new();
    for (other, entry) in &managed.entries {
        if other == id {
            continue;
        }
        let clash = entry.set.intersection(&changed);
        if !clash.is_empty() {
            conflicts.push((other.clone(), clash));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (other, entry) in managed.entries.iter_mut() {
        if other != id {
            entry.set = entry.set.difference(&changed).difference(&cmp.removed);
        } else {
            entry.set = entry.set.difference(&stripped());
        }
    }
    managed.prune_empty();
    Ok((merged, managed, live_view != merged_view))
}

/// The fields of the last client-side applied configuration whose values the object still has.
fn allowed_by_last_applied(ctx: &Context, live: &Value) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(ctx.api_version.as_str()) {
        return None;
    }
    let set = typed::to_field_set(ctx.ty, &last);
    let cmp = typed::compare(ctx.ty, &last, &gofields::normalize(ctx.ty, live));
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// The annotation's value: the applied configuration without the annotation, as Go's JSON
/// encoder writes it (with its trailing newline).
fn last_applied_of(config: &Value) -> String {
    let mut c = config.clone();
    if let Some(a) = c
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED);
    }
    format!("{}\n", path::go_json(&c))
}

/// Kubernetes' 409 for apply conflicts: one cause per field, grouped by manager in the message.
fn conflict_error(mut conflicts: Conflicts) -> ApiError {
    conflicts.sort_by_key(|(id, _)| id.sort_key());
    let listed: Vec<(ManagerId, Vec<Vec<PathElement>>)> = conflicts
        .into_iter()
        .map(|(id, set)| (id, set.paths()))
        .collect();
    let total: usize = listed.iter().map(|(_, p)| p.len()).sum();
    let mut causes = Vec::new();
    for (id, paths) in &listed {
        for p in paths {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", id.describe()),
                "field": path::path_string(p),
            }));
        }
    }
    let single = listed.iter().find(|(_, p)| !p.is_empty());
    let message = if total == 1
        && let Some((id, paths)) = single
    {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            id.describe(),
            path::path_string(&paths[0])
        )
    } else {
        let mut lines = Vec::new();
        for (id, paths) in &listed {
            lines.push(format!("conflicts with {}:", id.describe()));
            lines.extend(paths.iter().map(|p| format!("- {}", path::path_string(p))));
        }
        format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}
