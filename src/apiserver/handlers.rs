//! The REST verbs over the store, shared by every resource in the table.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::object::{self, meta_str};
use super::pagination::{self, ContinueToken};
use super::request::{ResourceRequest, Verb};
use super::resources::ResourceDef;
use super::selector::{FieldSelector, LabelSelector, labels_of};
use super::status::ApiError;
use super::table::{self, IncludeObject};
use crate::store::{KeyValue, Store, StoreError};

/// The patch types a custom resource accepts, in the order Kubernetes lists them.
pub const CUSTOM_PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// Kubernetes refuses request bodies over 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Kubernetes reads the first of repeated parameters.
    pub fn parse(query: Option<&str>) -> Self {
        let mut params = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            params
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        Query(params)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter, decoded as Kubernetes does (`watch=True` is a watch).
    pub fn flag(&self, key: &str) -> bool {
        super::params::bool_param(self.0.get(key).map(String::as_str))
    }

    pub(super) fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// What a handler answers: a JSON document with a status code.
pub struct Reply {
    pub code: u16,
    pub body: Value,
    /// `body` already encoded as JSON, sent instead of it (`body` is then null): a list is
    /// written straight from the stored bytes rather than built as one large tree first.
    pub encoded: Option<Bytes>,
    /// Sent as `Warning: 299 - "…"` headers, which kubectl prints.
    pub warnings: Vec<String>,
}

pub(super) fn ok(body: Value) -> Result<Reply, ApiError> {
    Ok(Reply {
        code: 200,
        body,
        encoded: None,
        warnings: Vec::new(),
    })
}

impl Reply {
    /// The body as a JSON value, decoding it if it was sent encoded.
    pub fn into_json(self) -> Result<(Value, Vec<String>), ApiError> {
        let body = match self.encoded {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal(format!("cannot decode a reply: {e}")))?,
            None => self.body,
        };
        Ok((body, self.warnings))
    }
}

pub struct Request<'a> {
    pub store: &'a Store,
    pub target: &'a ResourceRequest,
    pub query: &'a Query,
    pub accept: &'a str,
    pub content_type: &'a str,
    /// The client's User-Agent: what names a write's manager when it gives no fieldManager.
    pub user_agent: &'a str,
    pub body: Bytes,
}

impl Request<'_> {
    pub(super) fn def(&self) -> &'static ResourceDef {
        self.target.def
    }

    pub(super) fn name(&self) -> Result<&str, ApiError> {
        self.target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("a resource name is required"))
    }

    pub(super) fn key(&self, name: &str) -> String {
        self.def().key(self.target.namespace.as_deref(), name)
    }

    /// The store lease a write of this kind goes under: Events live for `--event-ttl` after
    /// their last write, as kube-apiserver keeps them; other kinds live until deleted.
    pub(super) async fn lease(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::LeaseId>, ApiError> {
        match super::kinds::time_to_live(self.def()) {
            Some(ttl) => self
                .store
                .lease_for(ttl)
                .await
                .map(Some)
                .map_err(self.store_err(name)),
            None => Ok(None),
        }
    }

    pub(super) fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(self.def().group, self.def().plural, name)
    }

    pub(super) fn store_err(&self, name: &str) -> impl Fn(StoreError) -> ApiError + '_ {
        let name = name.to_string();
        move |e| ApiError::from_store(e, self.def().group, self.def().plural, &name)
    }

    fn wants_table(&self) -> bool {
        self.accept.split(',').any(|part| {
            let p: Vec<&str> = part.split(';').map(str::trim).collect();
            p.contains(&"as=Table") && p.contains(&"g=meta.k8s.io")
        })
    }

    fn include_object(&self) -> IncludeObject {
        match self.query.get("includeObject") {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }

    /// Unknown and duplicate fields, per the request's fieldValidation; drops unknown fields.
    fn check_fields(&self, obj: &mut Value) -> Result<Vec<String>, ApiError> {
        // A custom resource written at another version was checked at that version; its
        // stored form is pruned to the storage version after validation (`admission`).
        if self.target.served_as.is_some_and(|d| d.custom.is_some()) {
            return Ok(Vec::new());
        }
        let mode = super::schema::FieldValidation::from_query(self.query.get("fieldValidation"))?;
        super::schema::check_fields(self.def(), &self.body, self.content_type, obj, mode)
    }

    pub(super) fn decode_body(&self) -> Result<Value, ApiError> {
        decode(self.content_type, &self.body)
    }

    pub(super) async fn load(&self, name: &str) -> Result<KeyValue, ApiError> {
        self.store
            .get(&self.key(name))
            .map_err(self.store_err(name))?
            .ok_or_else(|| self.not_found(name))
    }
}

pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::request_entity_too_large(format!(
            "the request body is {} bytes; the limit is {MAX_BODY_BYTES}",
            body.len()
        )));
    }
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = match media {
        "application/json"
        | ""
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?,
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(value)
}

pub async fn dispatch(req: Request<'_>) -> Result<Reply, ApiError> {
    // A CSR's /approval is written like /status, with its own strategy.
    if let Some(sub) = req.target.subresource.as_deref()
        && sub != "status"
        && sub != "approval"
    {
        return super::subresources::dispatch(&req, sub).await;
    }
    match req.target.verb {
        Verb::Get => get(&req).await,
        Verb::List => list(&req).await,
        Verb::Create => create(&req).await,
        Verb::Update => update(&req).await,
        Verb::Patch => patch(&req).await,
        Verb::Delete => super::delete::delete(&req).await,
        Verb::DeleteCollection => super::delete::delete_collection(&req).await,
        Verb::Watch => Err(ApiError::internal("watch is served as a stream")),
    }
}

/// GET and LIST without a resourceVersion are quorum reads in Kubernetes: on etcd the mirror
/// is first brought up to what etcd's quorum has committed (and without a quorum the read
/// fails rather than answer with what may be stale). "0" or a revision read what is here.
async fn quorum_read(req: &Request<'_>) -> Result<(), ApiError> {
    if req
        .query
        .get("resourceVersion")
        .is_some_and(|rv| !rv.is_empty())
        || req.query.get("continue").is_some()
    {
        return Ok(());
    }
    req.store
        .consistent()
        .await
        .map_err(|e| ApiError::from_store(e, req.def().group, req.def().plural, ""))
}

async fn get(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?;
    quorum_read(req).await?;
    let obj = object::from_stored_as(req.def(), &req.load(name).await?)?;
    if req.wants_table() {
        let meta = json!({"resourceVersion": meta_str(&obj, "resourceVersion")});
        return ok(table::table(
            req.def().printer,
            &[obj],
            req.include_object(),
            meta,
            true,
        ));
    }
    ok(obj)
}

pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(query: &Query, def: &ResourceDef) -> Result<Self, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), def)?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels_of(obj)) && self.fields.matches(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// The current objects under the request's prefix that pass its selectors, and the revision read.
pub fn select(
    store: &Store,
    target: &ResourceRequest,
    selectors: &Selectors,
) -> Result<(Vec<Value>, i64), ApiError> {
    let def = target.def;
    let prefix = def.list_prefix(target.namespace.as_deref());
    let (kvs, revision) = store
        .list(&prefix)
        .map_err(|e| ApiError::from_store(e, def.group, def.plural, ""))?;
    let mut items = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        let obj = object::from_stored_as(def, kv)?;
        if selectors.matches(&obj) {
            items.push(obj);
        }
    }
    Ok((items, revision))
}

async fn list(req: &Request<'_>) -> Result<Reply, ApiError> {
    let def = req.def();
    quorum_read(req).await?;
    let selectors = Selectors::from_query(req.query, def)?;
    let limit = match req.query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit must be a number, not {l:?}")))?,
        None => 0,
    };
    let token = req
        .query
        .get("continue")
        .map(ContinueToken::decode)
        .transpose()?;
    let prefix = def.list_prefix(req.target.namespace.as_deref());
    let store_err = |e: StoreError| ApiError::from_store(e, def.group, def.plural, "");
    let exact = req.query.get("resourceVersionMatch") == Some("Exact");
    let (kvs, revision) = match (&token, req.query.get("resourceVersion")) {
        (Some(t), _) => match req.store.list_at(&prefix, t.rv) {
            Ok(kvs) => (kvs, t.rv),
            Err(StoreError::Compacted { .. }) => return Err(pagination::expired()),
            Err(e) => return Err(store_err(e)),
        },
        (None, Some(rv)) if exact => {
            let rv: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
            (req.store.list_at(&prefix, rv).map_err(store_err)?, rv)
        }
        (None, _) => req.store.list(&prefix).map_err(store_err)?,
    };
    let start = token.as_ref().map(|t| t.start.as_str()).unwrap_or_default();
    // Objects are decoded only where something needs to look inside them (selectors, tables).
    let mut items: Vec<(&KeyValue, Option<Value>)> = Vec::new();
    let mut next = None;
    let mut remaining = 0u64;
    for kv in kvs.iter().filter(|kv| kv.key.as_str() > start) {
        let obj = if selectors.is_empty() {
            None
        } else {
            let obj = object::from_stored_as(def, kv)?;
            if !selectors.matches(&obj) {
                continue;
            }
            Some(obj)
        };
        if limit > 0 && items.len() == limit {
            remaining += 1;
            continue;
        }
        if limit > 0 && items.len() + 1 == limit {
            next = Some(kv.key.clone());
        }
        items.push((kv, obj));
    }
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if remaining > 0
        && let Some(last) = next
    {
        meta["continue"] = json!(
            ContinueToken {
                rv: revision,
                start: last
            }
            .encode()
        );
        meta["remainingItemCount"] = json!(remaining);
    }
    if req.wants_table() {
        let items = items
            .into_iter()
            .map(|(kv, obj)| obj.map_or_else(|| object::from_stored_as(def, kv), Ok))
            .collect::<Result<Vec<_>, _>>()?;
        return ok(table::table(
            def.printer,
            &items,
            req.include_object(),
            meta,
            true,
        ));
    }
    let list = object::encode_list(def, &items, &meta)?;
    Ok(Reply {
        code: 200,
        body: Value::Null,
        encoded: Some(list),
        warnings: Vec::new(),
    })
}

async fn ensure_namespace_open(req: &Request<'_>) -> Result<(), ApiError> {
    let Some(ns) = req.target.namespace.as_deref() else {
        return Ok(());
    };
    let ns_def = super::resources::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not served"))?;
    let kv = req
        .store
        .get(&ns_def.key(None, ns))
        .map_err(|e| ApiError::from_store(e, "", "namespaces", ns))?
        .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    let obj = object::from_stored(&kv)?;
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            req.def().plural,
            obj.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )));
    }
    Ok(())
}

async fn create(req: &Request<'_>) -> Result<Reply, ApiError> {
    super::fieldmanager::validate_options(req, false)?;
    let mut obj = req.decode_body()?;
    object::check_type(&mut obj, req.def())?;
    let warnings = req.check_fields(&mut obj)?;
    create_object(req, obj, warnings, true).await
}

/// Stores a new object decoded from a create (or built by a server-side apply, which has already
/// set its managed fields: `track` is then false).
pub(super) async fn create_object(
    req: &Request<'_>,
    mut obj: Value,
    warnings: Vec<String>,
    track: bool,
) -> Result<Reply, ApiError> {
    let def = req.def();
    if let Some(custom) = def.custom
        && super::crd::terminating(custom)
    {
        return Err(ApiError::method_not_allowed(
            "create not allowed while custom resource definition is terminating",
        ));
    }
    let url_ns = req.target.namespace.clone();
    let meta = object::metadata_mut(&mut obj)?;
    if def.namespaced() {
        match (
            meta.get("namespace").and_then(Value::as_str),
            url_ns.as_deref(),
        ) {
            (Some(body_ns), Some(url)) if !body_ns.is_empty() && body_ns != url => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (_, Some(url)) => {
                meta.insert("namespace".into(), url.into());
            }
            (_, None) => {
                return Err(ApiError::bad_request(
                    "a namespace is required to create this resource",
                ));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => object::generate_name(prefix),
        _ => {
            return Err(ApiError::invalid(
                def.group,
                def.kind,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
    };
    if let Some(problem) = object::validate_name(&name, def) {
        return Err(ApiError::invalid(
            def.group,
            def.kind,
            &name,
            vec![(
                "metadata.name".into(),
                format!("Invalid value: {name:?}: {problem}"),
            )],
        ));
    }
    meta.insert("name".into(), name.clone().into());
    meta.insert("uid".into(), object::new_uid().into());
    meta.insert("creationTimestamp".into(), object::now_rfc3339().into());
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    if def.has_generation {
        meta.insert("generation".into(), 1.into());
    } else {
        meta.remove("generation");
    }
    // As in Kubernetes, the manager owns what it sent (and what decoding defaulted), not what
    // admission adds afterwards.
    if track {
        super::fieldmanager::on_create(req, &mut obj);
    }
    // Namespace lifecycle is the first admission step in kube-apiserver: nothing else, not
    // even a webhook, hears of a create into a missing or terminating namespace.
    ensure_namespace_open(req).await?;
    super::admission::on_create(req.store, def, &mut obj).await?;
    if req.query.dry_run() {
        if req
            .store
            .get(&req.key(&name))
            .map_err(req.store_err(&name))?
            .is_some()
        {
            return Err(ApiError::already_exists(def.group, def.plural, &name));
        }
        return Ok(Reply {
            code: 201,
            body: obj,
            encoded: None,
            warnings,
        });
    }
    let lease = req.lease(&name).await?;
    let kv = req
        .store
        .create_leased(&req.key(&name), object::to_stored(&obj)?, lease)
        .await
        .map_err(req.store_err(&name))?;
    object::set_resource_version(&mut obj, kv.mod_revision);
    Ok(Reply {
        code: 201,
        body: obj,
        encoded: None,
        warnings,
    })
}

/// Merges an incoming full object into the stored one the way Kubernetes' update strategies do:
/// the main resource never changes status, `/status` never changes anything else.
pub(super) fn prepare_update(
    def: &ResourceDef,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> Result<Value, ApiError> {
    if let Some(subresource) = subresource {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null()
            && let Some(map) = merged.as_object_mut()
        {
            map.remove("status");
        }
        if (def.group, def.plural) == (super::certificates::GROUP, super::certificates::PLURAL) {
            super::certificates::prepare_subresource(subresource, old, &mut merged);
        }
        return Ok(merged);
    }
    if def.has_status() {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = object::metadata_mut(&mut new)?;
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match old_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    if def.has_generation && object::spec_of(old) != object::spec_of(&new) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            + 1;
        object::metadata_mut(&mut new)?.insert("generation".into(), generation.into());
    }
    Ok(new)
}

/// Writes `new` over `old` with compare-and-swap on the old revision; finishes a pending deletion
/// once the last finalizer is gone.
pub(super) async fn write_update(
    req: &Request<'_>,
    name: &str,
    old: &KeyValue,
    new: Value,
) -> Result<Value, ApiError> {
    let key = req.key(name);
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if req.query.dry_run() {
        let mut new = new;
        object::set_resource_version(&mut new, old.mod_revision);
        return Ok(new);
    }
    // Kubernetes removes an object on update once it is being deleted, has no finalizers left and
    // no grace period to wait out (a terminating pod waits for its kubelet).
    let grace_over = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        == 0;
    if deleting && !finalizers_left && grace_over && req.def().plural != "namespaces" {
        let (prev, _) = req
            .store
            .delete(&key, Some(old.mod_revision))
            .await
            .map_err(req.store_err(name))?;
        return object::from_stored(&prev).map(|_| new);
    }
    let lease = req.lease(name).await?;
    let kv = req
        .store
        .update_leased(
            &key,
            object::to_stored(&new)?,
            Some(old.mod_revision),
            lease,
        )
        .await
        .map_err(req.store_err(name))?;
    object::from_stored(&kv)
}

pub(super) fn check_body_identity(
    req: &Request<'_>,
    name: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    object::check_type(obj, req.def())?;
    match meta_str(obj, "name") {
        Some(n) if n == name => Ok(()),
        None | Some("") => {
            object::metadata_mut(obj)?.insert("name".into(), name.into());
            Ok(())
        }
        Some(n) => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
    }
}

pub(super) fn check_precondition(
    req: &Request<'_>,
    name: &str,
    obj: &Value,
    current: &KeyValue,
) -> Result<(), ApiError> {
    match meta_str(obj, "resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != current.mod_revision.to_string() => {
            Err(ApiError::conflict(
                req.def().group,
                req.def().plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ))
        }
        _ => Ok(()),
    }
}

async fn update(req: &Request<'_>) -> Result<Reply, ApiError> {
    super::fieldmanager::validate_options(req, false)?;
    let name = req.name()?.to_string();
    let mut new = req.decode_body()?;
    check_body_identity(req, &name, &mut new)?;
    let warnings = req.check_fields(&mut new)?;
    let current = req.load(&name).await?;
    check_precondition(req, &name, &new, &current)?;
    let old = object::from_stored_as(req.def(), &current)?;
    let mut merged = prepare_update(req.def(), &old, new, req.target.subresource.as_deref())?;
    super::fieldmanager::on_update(req, &old, &mut merged);
    super::admission::on_update(req.store, req.def(), &old, &mut merged).await?;
    let body = write_update(req, &name, &current, merged).await?;
    Ok(Reply {
        code: 200,
        body,
        encoded: None,
        warnings,
    })
}

/// A patch is applied to the latest object and written with compare-and-swap; a concurrent write
/// makes it start again from the new latest object, as Kubernetes' GuaranteedUpdate does.
async fn patch(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let media = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media == "application/apply-patch+yaml" {
        return super::apply::apply(req).await;
    }
    // Custom resources have no patch strategies: Kubernetes refuses the media type.
    if req.def().custom.is_some() && media == "application/strategic-merge-patch+json" {
        return Err(ApiError::unsupported_patch_type(CUSTOM_PATCH_TYPES));
    }
    super::fieldmanager::validate_options(req, false)?;
    let patch_doc = req.decode_body()?;
    for _attempt in 0..8 {
        let current = req.load(&name).await?;
        let old = object::from_stored_as(req.def(), &current)?;
        let mut patched = old.clone();
        match media {
            "application/merge-patch+json" => json_patch::merge(&mut patched, &patch_doc),
            "application/strategic-merge-patch+json" => {
                patched = super::schema::strategic_merge(req.def(), &old, &patch_doc)?;
            }
            "application/json-patch+json" => {
                let ops: json_patch::Patch =
                    serde_json::from_value(patch_doc.clone()).map_err(|e| {
                        ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                    })?;
                json_patch::patch(&mut patched, &ops).map_err(|e| {
                    ApiError::invalid(
                        req.def().group,
                        req.def().kind,
                        &name,
                        vec![(
                            "".into(),
                            format!("the JSON patch could not be applied: {e}"),
                        )],
                    )
                })?;
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        check_body_identity(req, &name, &mut patched)?;
        let warnings = req.check_fields(&mut patched)?;
        check_precondition(req, &name, &patched, &current)?;
        let mut merged =
            prepare_update(req.def(), &old, patched, req.target.subresource.as_deref())?;
        super::fieldmanager::on_update(req, &old, &mut merged);
        super::admission::on_update(req.store, req.def(), &old, &mut merged).await?;
        match write_update(req, &name, &current, merged).await {
            Err(e) if e.reason == "Conflict" => continue,
            other => {
                return Ok(Reply {
                    code: 200,
                    body: other?,
                    encoded: None,
                    warnings,
                });
            }
        }
    }
    Err(ApiError::conflict(
        req.def().group,
        req.def().plural,
        &name,
        "too many concurrent writes; try again",
    ))
}
