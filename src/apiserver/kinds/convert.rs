//! Kinds served at more than one version keep one stored form (the storage version) and are
//! converted on the way in and out, as Kubernetes does: HorizontalPodAutoscalers are stored as
//! autoscaling/v2 and also served as autoscaling/v1; Events are stored as core/v1 and also served
//! as events.k8s.io/v1.
//!
//! `dispatch` and `watch` wrap the handlers: a request at a non-storage version is turned into
//! one at the storage version (bodies converted, patches applied to the converted object) and
//! the answer is converted back. Custom resources convert by their definition's strategy: None
//! rewrites apiVersion, Webhook asks the definition's conversion webhook (`crd::conversion`).

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::super::crd::conversion::{self, Webhook};
use super::super::crd::versions::{self, View};
use super::super::handlers::{self, Reply, Request};
use super::super::object;
use super::super::request::{ResourceRequest, Verb};
use super::super::resources::{self, ResourceDef};
use super::super::status::ApiError;
use super::super::table::{self, IncludeObject};
use super::super::watch;
use super::json as j;
use crate::store::Store;

/// The entry objects of `def`'s kind are stored as, when that is not `def` itself.
pub fn storage_def(def: &ResourceDef) -> Option<&'static ResourceDef> {
    let (group, version) = def.stored_as?;
    resources::find(group, version, def.plural)
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscaler autoscaling/v1 <-> autoscaling/v2

const HPA_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const HPA_CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const HPA_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const HPA_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    j::str_at(m, "type") == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization")
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let anns = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)?;
    let v = anns.remove(key)?;
    if anns.is_empty()
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("annotations");
    }
    v.as_str().and_then(|s| serde_json::from_str(s).ok())
}

fn put_annotation(obj: &mut Value, key: &str, value: &Value) {
    let text = serde_json::to_string(value).unwrap_or_default();
    let meta = j::obj(obj, "metadata");
    j::obj(meta, "annotations")[key] = json!(text);
}

pub fn hpa_v1_to_v2(mut v1: Value) -> Value {
    let mut metrics: Vec<Value> = take_annotation(&mut v1, HPA_METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let current: Vec<Value> = take_annotation(&mut v1, HPA_CURRENT_METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let conditions = take_annotation(&mut v1, HPA_CONDITIONS);
    let behavior = take_annotation(&mut v1, HPA_BEHAVIOR);
    let spec = j::at(&v1, "spec").clone();
    let status = j::at(&v1, "status").clone();
    if let Some(cpu) = j::int_at(&spec, "targetCPUUtilizationPercentage") {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}),
        );
    }
    let mut new_spec = Map::new();
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            new_spec.insert(key.into(), v.clone());
        }
    }
    if !metrics.is_empty() {
        new_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = behavior {
        new_spec.insert("behavior".into(), b);
    }
    let mut v2 = v1.clone();
    v2["apiVersion"] = json!("autoscaling/v2");
    v2["spec"] = Value::Object(new_spec);
    if status.is_object() {
        let mut new_status = Map::new();
        for key in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(key) {
                new_status.insert(key.into(), v.clone());
            }
        }
        let mut current = current;
        if let Some(cpu) = j::int_at(&status, "currentCPUUtilizationPercentage") {
            current.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": cpu}}}),
            );
        }
        new_status.insert(
            "currentMetrics".into(),
            if current.is_empty() {
                Value::Null
            } else {
                Value::Array(current)
            },
        );
        if let Some(c) = conditions {
            new_status.insert("conditions".into(), c);
        }
        new_status
            .entry("desiredReplicas")
            .or_insert_with(|| json!(0));
        v2["status"] = Value::Object(new_status);
    }
    v2
}

pub fn hpa_v2_to_v1(v2: Value) -> Value {
    let spec = j::at(&v2, "spec").clone();
    let status = j::at(&v2, "status").clone();
    let mut v1 = v2.clone();
    v1["apiVersion"] = json!("autoscaling/v1");
    let mut new_spec = Map::new();
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            new_spec.insert(key.into(), v.clone());
        }
    }
    let mut others = Vec::new();
    for m in j::items(&spec, "metrics") {
        if is_cpu_utilization(m) && !new_spec.contains_key("targetCPUUtilizationPercentage") {
            if let Some(u) = m.pointer("/resource/target/averageUtilization") {
                new_spec.insert("targetCPUUtilizationPercentage".into(), u.clone());
            }
        } else {
            others.push(m.clone());
        }
    }
    if !others.is_empty() {
        put_annotation(&mut v1, HPA_METRICS, &Value::Array(others));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        put_annotation(&mut v1, HPA_BEHAVIOR, b);
    }
    v1["spec"] = Value::Object(new_spec);
    if status.is_object() {
        let mut new_status = Map::new();
        for key in ["observedGeneration", "lastScaleTime"] {
            if let Some(v) = status.get(key) {
                new_status.insert(key.into(), v.clone());
            }
        }
        // Both counts are always present in autoscaling/v1.
        for key in ["currentReplicas", "desiredReplicas"] {
            new_status.insert(key.into(), status.get(key).cloned().unwrap_or(json!(0)));
        }
        let mut others = Vec::new();
        for m in j::items(&status, "currentMetrics") {
            let cpu = j::str_at(m, "type") == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu");
            match m.pointer("/resource/current/averageUtilization") {
                Some(u) if cpu && !new_status.contains_key("currentCPUUtilizationPercentage") => {
                    new_status.insert("currentCPUUtilizationPercentage".into(), u.clone());
                }
                _ => others.push(m.clone()),
            }
        }
        if !others.is_empty() {
            put_annotation(&mut v1, HPA_CURRENT_METRICS, &Value::Array(others));
        }
        if let Some(c) = status.get("conditions").filter(|c| !j::is_empty(Some(c))) {
            put_annotation(&mut v1, HPA_CONDITIONS, c);
        }
        v1["status"] = Value::Object(new_status);
    }
    v1
}

// ---------------------------------------------------------------------------------------------
// Event events.k8s.io/v1 <-> core/v1

/// (events.k8s.io/v1 name, core/v1 name) of the fields that were renamed.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(mut obj: Value, api_version: &str, to_core: bool) -> Value {
    if let Some(map) = obj.as_object_mut() {
        for (new, old) in EVENT_RENAMES {
            let (from, to) = if to_core { (new, old) } else { (old, new) };
            if let Some(v) = map.remove(*from) {
                map.insert((*to).to_string(), v);
            }
        }
        map.insert("apiVersion".into(), json!(api_version));
    }
    obj
}

pub fn event_to_core(ev: Value) -> Value {
    rename(ev, "v1", true)
}

pub fn event_from_core(ev: Value) -> Value {
    let mut ev = rename(ev, "events.k8s.io/v1", false);
    // events.k8s.io/v1 always carries eventTime.
    j::default(&mut ev, "eventTime", Value::Null);
    ev
}

// ---------------------------------------------------------------------------------------------

/// `obj` (of `def`'s kind, at `def`'s version) in its storage version.
pub fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    // Custom resources convert with strategy None: only apiVersion changes.
    if def.custom.is_some() {
        return match def.stored_as {
            Some((group, version)) => versions::rewrite(obj, &format!("{group}/{version}")),
            None => obj,
        };
    }
    match (def.group, def.version, def.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") => hpa_v1_to_v2(obj),
        ("events.k8s.io", "v1", "events") => event_to_core(obj),
        _ => obj,
    }
}

/// A stored object as `def`'s version shows it (custom resources: strategy None, then pruned
/// by that version's schema).
pub fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if def.custom.is_some() {
        let mut obj = versions::rewrite(obj, &def.api_version());
        versions::prune_to(def, &mut obj);
        return obj;
    }
    match (def.group, def.version, def.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") => hpa_v2_to_v1(obj),
        ("events.k8s.io", "v1", "events") => event_from_core(obj),
        _ => obj,
    }
}

/// An object of the storage entry's kind, at the storage version or (custom resources
/// stored before their definition's storage version changed) another version of its group.
fn is_stored_object(storage: &ResourceDef, v: &Value) -> bool {
    let api_version = j::str_or(v, "apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    j::str_at(v, "kind") == Some(storage.kind)
        && (api_version == storage.api_version()
            || storage.custom.is_some() && group == storage.group)
}

/// Reads at the storage version of a definition converted by a webhook still go through
/// conversion: objects stored before the storage version changed keep their old version
/// until they are written again, and only the webhook can convert them.
fn reads_through_webhook(target: &ResourceRequest) -> bool {
    webhook_of(target.def).is_some()
        && matches!(target.verb, Verb::Get | Verb::List | Verb::Watch)
        && target.subresource.is_none()
}

/// Converts whatever a handler answered (an object, a list, a Table with objects) back.
fn convert_reply(def: &ResourceDef, storage: &ResourceDef, body: Value) -> Value {
    if is_stored_object(storage, &body) {
        return from_storage(def, body);
    }
    let kind = j::str_or(&body, "kind").to_string();
    if kind == format!("{}List", storage.kind) {
        let mut body = body;
        if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                *item = from_storage(def, std::mem::take(item));
            }
        }
        body["kind"] = json!(format!("{}List", def.kind));
        body["apiVersion"] = json!(def.api_version());
        return body;
    }
    if kind == "Table" {
        let mut body = body;
        for row in j::items_mut(&mut body, "rows") {
            if let Some(o) = row.get_mut("object")
                && is_stored_object(storage, o)
            {
                *o = from_storage(def, std::mem::take(o));
            }
        }
        return body;
    }
    body
}

/// The conversion webhook of `def`'s definition, when it has one.
fn webhook_of(def: &ResourceDef) -> Option<&'static Webhook> {
    def.custom.and_then(|c| c.webhook.as_ref())
}

/// `obj` (at `def`'s version) in the storage version, through the webhook where there is one.
async fn into_storage(
    store: &Store,
    def: &ResourceDef,
    storage: &ResourceDef,
    obj: Value,
) -> Result<Value, ApiError> {
    match webhook_of(def) {
        Some(hook) => conversion::convert_one(store, hook, obj, &storage.api_version()).await,
        None => Ok(to_storage(def, obj)),
    }
}

/// A stored object at `def`'s version, through the webhook where there is one.
pub async fn out_of_storage(
    store: &Store,
    def: &ResourceDef,
    obj: Value,
) -> Result<Value, ApiError> {
    if def.custom.is_some() {
        return versions::to_version(store, def, obj).await;
    }
    Ok(from_storage(def, obj))
}

/// `convert_reply` through the webhook where there is one: a list's objects go in one review.
async fn convert_reply_via(
    store: &Store,
    def: &ResourceDef,
    storage: &ResourceDef,
    body: Value,
) -> Result<Value, ApiError> {
    let Some(hook) = webhook_of(def) else {
        return Ok(convert_reply(def, storage, body));
    };
    if is_stored_object(storage, &body) {
        return versions::to_version(store, def, body).await;
    }
    if j::str_or(&body, "kind") == format!("{}List", storage.kind) {
        let mut list = conversion::convert_list(store, hook, body, &def.api_version()).await?;
        for item in j::items_mut(&mut list, "items") {
            versions::prune_to(def, item);
        }
        list["kind"] = json!(format!("{}List", def.kind));
        return Ok(list);
    }
    Ok(body)
}

/// A webhook-converted get or list asked for as a Table: the objects are read as JSON,
/// converted, and printed with the requested version's columns (another version's columns
/// may name fields this one does not have).
fn wants_converted_table(req: &Request<'_>) -> bool {
    webhook_of(req.target.def).is_some()
        && matches!(req.target.verb, Verb::Get | Verb::List)
        && req.target.subresource.is_none()
        && req.accept.contains("as=Table")
}

fn include_object(query: &handlers::Query) -> IncludeObject {
    match query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

fn tabulate(def: &ResourceDef, body: Value, include: IncludeObject) -> Value {
    let (objects, meta) = match body.get("items").and_then(Value::as_array) {
        Some(items) => (
            items.clone(),
            body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        ),
        None => {
            let rv = object::meta_str(&body, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            (vec![body], json!({"resourceVersion": rv}))
        }
    };
    table::table(def.printer, &objects, include, meta, true)
}

/// Serves `req`, converting between its version and the storage version where they differ.
pub async fn dispatch(req: Request<'_>) -> Result<Reply, ApiError> {
    let def = req.target.def;
    let storage = match storage_def(def) {
        Some(storage) => storage,
        None if reads_through_webhook(req.target) => def,
        None => return handlers::dispatch(req).await,
    };
    let target = ResourceRequest {
        def: storage,
        namespace: req.target.namespace.clone(),
        name: req.target.name.clone(),
        subresource: req.target.subresource.clone(),
        verb: req.target.verb,
        served_as: (!std::ptr::eq(storage, def)).then_some(def),
    };
    let mut body = req.body.clone();
    let mut content_type = req.content_type.to_string();
    let mut field_warnings = Vec::new();
    // A Scale is the same at every version: `subresources` reads and writes the object at
    // the version asked for.
    let scale = req.target.subresource.as_deref() == Some("scale");
    match req.target.verb {
        _ if scale => {}
        Verb::Create | Verb::Update => {
            let mut obj = handlers::decode(req.content_type, &req.body)?;
            object::check_type(&mut obj, def)?;
            if def.custom.is_some() {
                field_warnings = at_written_version(&req, def, &mut obj)?;
            }
            let stored = into_storage(req.store, def, storage, obj).await?;
            body = Bytes::from(serde_json::to_vec(&stored).unwrap_or_default());
            content_type = "application/json".into();
        }
        Verb::Patch => {
            return patch(&req, def, storage, target).await;
        }
        _ => {}
    }
    let table = wants_converted_table(&req);
    let served = handlers::dispatch(Request {
        store: req.store,
        target: &target,
        query: req.query,
        accept: if table {
            "application/json"
        } else {
            req.accept
        },
        content_type: &content_type,
        user_agent: req.user_agent,
        body,
    });
    let view = View { def, old: None };
    let reply = if def.custom.is_some() && matches!(req.target.verb, Verb::Create | Verb::Update) {
        versions::scope(view, served).await?
    } else {
        served.await?
    };
    let code = reply.code;
    let (body, mut warnings) = reply.into_json()?;
    field_warnings.append(&mut warnings);
    let warnings = field_warnings;
    let mut body = convert_reply_via(req.store, def, storage, body).await?;
    if table {
        body = tabulate(def, body, include_object(req.query));
    }
    Ok(Reply {
        code,
        body,
        encoded: None,
        warnings,
    })
}

/// A custom resource written at `def`'s version is decoded there: its unknown fields are
/// checked by that version's schema (per fieldValidation) and dropped, and its defaults
/// applied, before it is converted to the storage version.
fn at_written_version(
    req: &Request<'_>,
    def: &ResourceDef,
    obj: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let mode = super::super::schema::FieldValidation::from_query(req.query.get("fieldValidation"))?;
    let warnings = super::super::schema::check_fields(def, &req.body, req.content_type, obj, mode)?;
    super::default(def, obj);
    Ok(warnings)
}

/// A patch is written in the request's version: it is applied to the object converted to that
/// version, and the result stored as an update guarded by the revision it was read at.
async fn patch(
    req: &Request<'_>,
    def: &'static ResourceDef,
    storage: &'static ResourceDef,
    mut target: ResourceRequest,
) -> Result<Reply, ApiError> {
    let name = target
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))?;
    let media = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let patch_doc: Value = match media.as_str() {
        "application/apply-patch+yaml" if def.custom.is_some() => {
            return apply(req, def, storage, &target).await;
        }
        "application/strategic-merge-patch+json" if def.custom.is_some() => {
            return Err(ApiError::unsupported_patch_type(
                handlers::CUSTOM_PATCH_TYPES,
            ));
        }
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    target.verb = Verb::Update;
    let mut last = None;
    for _attempt in 0..5 {
        let key = storage.key(target.namespace.as_deref(), &name);
        let kv = req
            .store
            .get(&key)
            .map_err(|e| ApiError::from_store(e, def.group, def.plural, &name))?
            .ok_or_else(|| ApiError::not_found(def.group, def.plural, &name))?;
        let current = out_of_storage(req.store, def, object::from_stored_as(storage, &kv)?).await?;
        let mut patched = current.clone();
        match media.as_str() {
            "application/merge-patch+json" => json_patch::merge(&mut patched, &patch_doc),
            "application/json-patch+json" => {
                let ops: json_patch::Patch =
                    serde_json::from_value(patch_doc.clone()).map_err(|e| {
                        ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                    })?;
                json_patch::patch(&mut patched, &ops).map_err(|e| {
                    ApiError::invalid(
                        def.group,
                        def.kind,
                        &name,
                        vec![(
                            String::new(),
                            format!("the JSON patch could not be applied: {e}"),
                        )],
                    )
                })?;
            }
            _ => patched = super::super::schema::strategic_merge(def, &current, &patch_doc)?,
        }
        // The write is guarded by the revision read unless the patch asked for another.
        if object::meta_str(&patched, "resourceVersion").is_none() {
            object::set_resource_version(&mut patched, kv.mod_revision);
        }
        let mut field_warnings = Vec::new();
        if def.custom.is_some() {
            field_warnings = at_written_version(req, def, &mut patched)?;
        }
        let stored = into_storage(req.store, def, storage, patched).await?;
        let body = Bytes::from(serde_json::to_vec(&stored).unwrap_or_default());
        let served = handlers::dispatch(Request {
            store: req.store,
            target: &target,
            query: req.query,
            accept: req.accept,
            content_type: "application/json",
            user_agent: req.user_agent,
            body,
        });
        let result = if def.custom.is_some() {
            let view = View {
                def,
                old: Some(current.clone()),
            };
            versions::scope(view, served).await
        } else {
            served.await
        };
        match result {
            Ok(reply) => {
                let code = reply.code;
                let (body, mut warnings) = reply.into_json()?;
                field_warnings.append(&mut warnings);
                let warnings = field_warnings;
                return Ok(Reply {
                    code,
                    body: convert_reply_via(req.store, def, storage, body).await?,
                    encoded: None,
                    warnings,
                });
            }
            Err(e)
                if e.reason == "Conflict"
                    && object::meta_str(&patch_doc, "resourceVersion").is_none() =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::internal("patch retries exhausted")))
}

/// A server-side apply at another version of a custom resource, with the managed fields
/// recording the version it was applied at (`target.served_as`). Strategy None: the
/// configuration is applied at the storage version (only apiVersion differs). Strategy
/// Webhook: it is applied as it is, to the live object converted to its version, and the
/// result converted back (`apply::apply`).
async fn apply(
    req: &Request<'_>,
    def: &'static ResourceDef,
    storage: &'static ResourceDef,
    target: &ResourceRequest,
) -> Result<Reply, ApiError> {
    let mut config = handlers::decode(req.content_type, &req.body)?;
    // A configuration of another type is left as it is, for the apply to refuse in its words.
    if webhook_of(def).is_none()
        && j::str_at(&config, "apiVersion") == Some(def.api_version().as_str())
        && j::str_at(&config, "kind") == Some(def.kind)
    {
        config = to_storage(def, config);
    }
    let body = serde_json::to_vec(&config)
        .map_err(|e| ApiError::internal(format!("cannot encode the configuration: {e}")))?;
    let served = handlers::dispatch(Request {
        store: req.store,
        target,
        query: req.query,
        accept: req.accept,
        content_type: "application/apply-patch+yaml",
        user_agent: req.user_agent,
        body: Bytes::from(body),
    });
    let reply = versions::scope(View { def, old: None }, served).await?;
    let code = reply.code;
    let (body, warnings) = reply.into_json()?;
    Ok(Reply {
        code,
        body: convert_reply_via(req.store, def, storage, body).await?,
        encoded: None,
        warnings,
    })
}

/// A watch at a non-storage version: the storage version's events, converted.
pub fn watch(
    store: Store,
    target: &ResourceRequest,
    params: watch::WatchParams,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let def = target.def;
    let storage = match storage_def(def) {
        Some(storage) => storage,
        None if reads_through_webhook(target) => def,
        None => return watch::start(store, target, params),
    };
    let storage_target = ResourceRequest {
        def: storage,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource: target.subresource.clone(),
        verb: target.verb,
        served_as: (!std::ptr::eq(storage, def)).then_some(def),
    };
    // Webhook-converted events are printed after conversion, with this version's columns.
    let hook = webhook_of(def);
    let (table, include) = (params.table, params.include);
    let mut params = params;
    if hook.is_some() {
        params.table = false;
    }
    let mut inner = watch::start(store.clone(), &storage_target, params)?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut sent_columns = false;
        while let Some(chunk) = inner.recv().await {
            let out = match serde_json::from_slice::<Value>(&chunk) {
                Ok(mut ev) => {
                    let kind = j::str_or(&ev, "type").to_string();
                    if let Some(o) = ev.get_mut("object") {
                        let obj = std::mem::take(o);
                        match convert_reply_via(&store, def, storage, obj).await {
                            Ok(c)
                                if hook.is_some()
                                    && table
                                    && kind != "BOOKMARK"
                                    && kind != "ERROR" =>
                            {
                                let rv = object::meta_str(&c, "resourceVersion")
                                    .unwrap_or_default()
                                    .to_string();
                                *o = table::table(
                                    def.printer,
                                    &[c],
                                    include,
                                    json!({"resourceVersion": rv}),
                                    !sent_columns,
                                );
                                sent_columns = true;
                            }
                            Ok(c) => *o = c,
                            Err(e) => {
                                // The watch ends with the error, as kube-apiserver ends it.
                                let ev = json!({"type": "ERROR", "object": e.to_status()});
                                let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                                line.push(b'\n');
                                let _ = tx.send(Bytes::from(line)).await;
                                return;
                            }
                        }
                    }
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    Bytes::from(line)
                }
                Err(_) => chunk,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        let v2 = hpa_v1_to_v2(v1.clone());
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        assert_eq!(hpa_v2_to_v1(v2), v1);

        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "m"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "m"}, "maxReplicas": 3,
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]}});
        let v1 = hpa_v2_to_v1(v2.clone());
        assert!(v1["metadata"]["annotations"][HPA_METRICS].is_string());
        assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert_eq!(hpa_v1_to_v2(v1), v2);
    }

    #[test]
    fn events_rename_fields() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"kind": "Pod", "name": "p"},
            "message": "hi", "count": 2, "reportingComponent": "kubelet"});
        let new = event_from_core(core.clone());
        assert_eq!(new["apiVersion"], "events.k8s.io/v1");
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["note"], "hi");
        assert_eq!(new["deprecatedCount"], 2);
        assert_eq!(new["reportingController"], "kubelet");
        let mut back = event_to_core(new);
        j::remove(&mut back, "eventTime");
        assert_eq!(back, core);
    }
}
