//! OpenAPI v3: the index at /openapi/v3 and one document per group-version the resource table
//! serves, with the operations kubectl looks for (a PATCH per kind carrying
//! `x-kubernetes-group-version-kind`, the `fieldValidation` parameter and the patch content types)
//! and the full schemas of the schema registry, which `kubectl explain` prints and client-side
//! apply computes its strategic merge patches from.
//!
//! The documents are built on the first request and kept: the table and the schemas never change
//! while the server runs. Each document's URL carries the hash of its bytes, so clients may cache
//! it forever (`Cache-Control: public, immutable`) and a changed document gets a new URL.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use super::discovery::git_version;
use super::resources::{RESOURCES, ResourceDef};
use super::schema::{REF_PREFIX, registry};
use std::sync::{Arc, RwLock};

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";

/// The patch formats every built-in kind accepts; kubectl computes a strategic merge patch for a
/// kind only when its PATCH operation lists that one.
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// Kinds without a schema (custom ones) cannot be strategically merged.
const PATCH_TYPES_WITHOUT_SMP: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
];

const RESPONSE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

struct Doc {
    body: Bytes,
    hash: String,
}

struct Docs {
    /// The index's entries, which the custom resources' index extends.
    index_paths: Map<String, Value>,
    /// By the group-version's path: "api/v1", "apis/apps/v1".
    by_path: HashMap<String, Doc>,
}

static DOCS: OnceLock<Docs> = OnceLock::new();

fn docs() -> &'static Docs {
    DOCS.get_or_init(build)
}

/// Starts building the documents on a thread of their own, once per process, so that the first
/// client to ask (kubectl's first apply) finds them built instead of waiting tens of milliseconds.
pub fn warm_in_background() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("openapi-warm".into())
            .spawn(|| {
                docs();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the OpenAPI warm-up thread; documents build on first use");
        }
    });
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn doc(value: &Value) -> Doc {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    // Kubernetes uses the upper-case hex SHA-512 of the document.
    let hash = hex::encode_upper(Sha512::digest(&body));
    Doc { body, hash }
}

fn build() -> Docs {
    let mut by_path = HashMap::new();
    let mut index = Map::new();
    let mut built_in: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !built_in.contains(&(r.group, r.version)) {
            built_in.push((r.group, r.version));
        }
    }
    for (group, version) in built_in {
        let defs: Vec<&ResourceDef> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect();
        let path = gv_path(group, version);
        let document = doc(&document(&defs));
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", document.hash)}),
        );
        by_path.insert(path, document);
    }
    // Groups of reviews have no stored kinds: only create, answered at once.
    for g in super::reviews::GROUPS {
        let path = gv_path(g.group, g.version);
        let document = doc(&create_only_document(g.group, g.version, g.reviews));
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", document.hash)}),
        );
        by_path.insert(path, document);
    }
    Docs {
        index_paths: index,
        by_path,
    }
}

/// The documents of the custom resources' group-versions and the index with them, rebuilt
/// when the served custom resources change (`crd::epoch`).
struct Overlay {
    epoch: u64,
    index: Doc,
    by_path: HashMap<String, Doc>,
}

static OVERLAY: RwLock<Option<Arc<Overlay>>> = RwLock::new(None);

fn overlay(base: &Docs) -> Arc<Overlay> {
    let epoch = super::crd::epoch();
    if let Ok(g) = OVERLAY.read()
        && let Some(o) = g.as_ref()
        && o.epoch == epoch
    {
        return o.clone();
    }
    let served = super::crd::served();
    let mut index = base.index_paths.clone();
    let mut by_path = HashMap::new();
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for r in served.iter() {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    for (group, version) in gvs {
        let defs: Vec<&ResourceDef> = served
            .iter()
            .copied()
            .filter(|r| r.group == group && r.version == version)
            .collect();
        let path = gv_path(group, version);
        let document = doc(&document(&defs));
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", document.hash)}),
        );
        by_path.insert(path, document);
    }
    let built = Arc::new(Overlay {
        epoch,
        index: doc(&json!({ "paths": index })),
        by_path,
    });
    if let Ok(mut g) = OVERLAY.write() {
        *g = Some(built.clone());
    }
    built
}

/// The response for a GET under /openapi/, or None when the path is not an OpenAPI document.
pub fn serve(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<http::Response<bytes::Bytes>> {
    if path.trim_end_matches('/') == "/openapi/v2" {
        return Some(serve_v2(headers));
    }
    let rest = path.strip_prefix("/openapi/v3")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let rest = rest.trim_matches('/');
    let docs = docs();
    let custom = overlay(docs);
    if rest.is_empty() {
        return Some(respond(&custom.index, headers, false));
    }
    let doc = docs
        .by_path
        .get(rest)
        .or_else(|| custom.by_path.get(rest))?;
    let requested = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "hash")
        .map(|(_, v)| v.into_owned());
    Some(respond(
        doc,
        headers,
        requested.as_deref() == Some(&doc.hash),
    ))
}

/// OpenAPI v2 in both forms, rebuilt when the custom resources change.
struct V2 {
    epoch: u64,
    json: Doc,
    protobuf: Doc,
}

static V2_DOCS: RwLock<Option<Arc<V2>>> = RwLock::new(None);

fn v2_docs() -> Arc<V2> {
    let epoch = super::crd::epoch();
    if let Ok(g) = V2_DOCS.read()
        && let Some(d) = g.as_ref()
        && d.epoch == epoch
    {
        return d.clone();
    }
    let base = docs();
    let custom = overlay(base);
    let mut paths: Vec<(&String, &Doc)> =
        base.by_path.iter().chain(custom.by_path.iter()).collect();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    let v3: Vec<Value> = paths
        .iter()
        .filter_map(|(_, d)| serde_json::from_slice(&d.body).ok())
        .collect();
    let document = super::openapi_v2::document(&v3, &git_version());
    let protobuf = Bytes::from(super::openapi_v2::protobuf(&document));
    let built = Arc::new(V2 {
        epoch,
        json: doc(&document),
        protobuf: Doc {
            hash: hex::encode_upper(Sha512::digest(&protobuf)),
            body: protobuf,
        },
    });
    if let Ok(mut g) = V2_DOCS.write() {
        *g = Some(built.clone());
    }
    built
}

fn serve_v2(headers: &HeaderMap) -> Response<Bytes> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let docs = v2_docs();
    if super::openapi_v2::wants_protobuf(accept) {
        respond_as(
            &docs.protobuf,
            headers,
            false,
            super::openapi_v2::PROTOBUF_OLD,
        )
    } else {
        respond(&docs.json, headers, false)
    }
}

/// The document with its ETag; a hash in the URL that matches lets clients keep it forever.
fn respond(doc: &Doc, headers: &HeaderMap, immutable: bool) -> Response<Bytes> {
    respond_as(doc, headers, immutable, "application/json")
}

fn respond_as(
    doc: &Doc,
    headers: &HeaderMap,
    immutable: bool,
    content_type: &str,
) -> Response<Bytes> {
    let etag = format!("\"{}\"", doc.hash);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, etag.as_str())
        .header(header::VARY, "Accept");
    if immutable {
        builder = builder.header(header::CACHE_CONTROL, "public, immutable");
        // Caches that ignore `immutable` still keep the document for a year.
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 365))
            .ok()
            .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string());
        if let Some(value) = expires.and_then(|e| HeaderValue::from_str(&e).ok()) {
            builder = builder.header(header::EXPIRES, value);
        }
    } else {
        builder = builder.header(header::CACHE_CONTROL, "no-cache, private");
    }
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, doc.body.clone())
    };
    builder
        .status(status)
        .body(body)
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// One group-version's document: the operations of each served resource and every schema they
/// reach.
fn document(defs: &[&ResourceDef]) -> Value {
    let reg = registry();
    let mut paths = Map::new();
    let mut roots: Vec<&str> = vec![STATUS, DELETE_OPTIONS, PATCH, WATCH_EVENT];
    let mut custom_schemas = Map::new();
    for def in defs {
        let names = Names::of(def);
        if let Some(custom) = def.custom {
            let (kind, list) = custom_schemas_of(def, custom);
            if let (Some(k), Some(l)) = (&names.kind, &names.list) {
                custom_schemas.insert(k.clone(), kind);
                custom_schemas.insert(l.clone(), list);
            }
            roots.extend([OBJECT_META, LIST_META]);
        } else {
            roots.extend(reg.kind_schema_name(def.group, def.version, def.kind));
            roots.extend(reg.list_schema_name(def.group, def.version, def.kind));
        }
        if def.has_subresource("scale")
            && let Some(scale) = names.scale
        {
            roots.push(scale);
        }
        resource_paths(&mut paths, def, &names);
    }
    let mut schemas: Map<String, Value> = reg
        .closure(roots)
        .into_iter()
        .filter_map(|name| Some((name.to_string(), reg.schemas().get(name)?.clone())))
        .collect();
    schemas.extend(custom_schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": git_version()},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The document of a group-version whose resources only take create (reviews): one POST path
/// per (plural, kind), answering with the same kind.
fn create_only_document(group: &str, version: &str, kinds: &[super::reviews::Review]) -> Value {
    let reg = registry();
    let camel: String = group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect();
    let naming = OpNaming {
        prefix: format!("{camel}{}", capitalize(version)),
        tag: format!(
            "{}_{version}",
            group.trim_end_matches(".k8s.io").replace('.', "")
        ),
    };
    let mut paths = Map::new();
    let mut roots: Vec<&str> = vec![STATUS];
    for review in kinds {
        let (plural, kind) = (review.plural, review.kind);
        let schema_name = reg.kind_schema_name(group, version, kind);
        roots.extend(schema_name);
        let one = schema_ref(schema_name);
        let gvk = json!({"group": group, "kind": kind, "version": version});
        let post = operation(
            &naming,
            naming.id("create", false, kind, ""),
            "post",
            format!("create a {kind}"),
            &gvk,
            write_params(false),
            Some(json!({"content": content(&["*/*"], &one), "required": true})),
            responses(
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                &one,
            ),
        );
        let namespace = if review.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        paths.insert(
            format!("/{}{namespace}/{plural}", gv_path(group, version)),
            json!({"post": post}),
        );
    }
    let schemas: Map<String, Value> = reg
        .closure(roots)
        .into_iter()
        .filter_map(|name| Some((name.to_string(), reg.schemas().get(name)?.clone())))
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": git_version()},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The schema names a resource's operations refer to.
struct Names {
    kind: Option<String>,
    list: Option<String>,
    scale: Option<&'static str>,
}

impl Names {
    fn of(def: &ResourceDef) -> Self {
        let reg = registry();
        let scale = reg.kind_schema_name("autoscaling", "v1", "Scale");
        if def.custom.is_some() {
            // Kubernetes names a custom kind's schema by its reversed group: com.example.v1.Widget.
            let mut group: Vec<&str> = def.group.split('.').collect();
            group.reverse();
            let base = format!("{}.{}.{}", group.join("."), def.version, def.kind);
            return Names {
                list: Some(format!("{base}List")),
                kind: Some(base),
                scale,
            };
        }
        Names {
            kind: reg
                .kind_schema_name(def.group, def.version, def.kind)
                .map(str::to_string),
            list: reg
                .list_schema_name(def.group, def.version, def.kind)
                .map(str::to_string),
            scale,
        }
    }
}

/// A custom kind's schema (its definition's, with the metadata every object has) and its list's.
fn custom_schemas_of(def: &ResourceDef, custom: &super::crd::Custom) -> (Value, Value) {
    let gvk = |kind: &str| json!([{"group": def.group, "kind": kind, "version": def.version}]);
    let mut kind = custom
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let props = super::kinds::json::obj(&mut kind, "properties");
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    props["metadata"] = json!({"allOf": [{"$ref": format!("{REF_PREFIX}{OBJECT_META}")}],
        "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
    kind["x-kubernetes-group-version-kind"] = gvk(def.kind);
    let names = Names::of(def);
    let list = json!({
        "type": "object",
        "description": format!("{}List is a list of {}", def.kind, def.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("{REF_PREFIX}{}", names.kind.unwrap_or_default())}},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": format!("{REF_PREFIX}{LIST_META}")}]},
        },
        "x-kubernetes-group-version-kind": gvk(&format!("{}List", def.kind)),
    });
    (kind, list)
}

fn schema_ref(name: Option<&str>) -> Value {
    match name {
        Some(name) => json!({"$ref": format!("{REF_PREFIX}{name}")}),
        None => json!({"type": "object"}),
    }
}

fn content(types: &[&str], schema: &Value) -> Value {
    types
        .iter()
        .map(|t| (t.to_string(), json!({ "schema": schema })))
        .collect::<Map<String, Value>>()
        .into()
}

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut out: Map<String, Value> = codes
        .iter()
        .map(|(code, text)| {
            (
                code.to_string(),
                json!({"description": text, "content": content(RESPONSE_TYPES, schema)}),
            )
        })
        .collect();
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    out.into()
}

fn query_param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description,
           "schema": {"type": kind, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty() -> Value {
    query_param(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    )
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "string",
            "When present, modifications are not persisted. The only valid value is All: every stage of the request runs but the storing one.",
        ),
        query_param(
            "fieldManager",
            "string",
            "The name of the actor or entity making these changes, recorded in managedFields.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "How the server treats fields the schema does not declare and duplicate fields: Ignore drops them silently, Warn (the default) drops them and answers with a warning for each, Strict fails the request.",
        ),
    ];
    if patch {
        params.push(query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests: the request takes over fields other managers own. Only for apply patches.",
        ));
    }
    params
}

fn list_params(watch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "allowWatchBookmarks",
            "boolean",
            "Ask for BOOKMARK watch events.",
        ),
        query_param(
            "continue",
            "string",
            "The continue token of a previous, limited list call, to get the next chunk.",
        ),
        query_param(
            "fieldSelector",
            "string",
            "Restricts the list to objects whose fields match. Defaults to everything.",
        ),
        query_param(
            "labelSelector",
            "string",
            "Restricts the list to objects whose labels match. Defaults to everything.",
        ),
        query_param(
            "limit",
            "integer",
            "The maximum number of objects to return in one chunk.",
        ),
        query_param(
            "resourceVersion",
            "string",
            "Which resource versions the request may be served from.",
        ),
        query_param(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to list calls.",
        ),
        query_param(
            "sendInitialEvents",
            "boolean",
            "Whether a watch starts with synthetic events for the current state.",
        ),
        query_param(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call, whatever the activity.",
        ),
    ];
    if watch {
        params.push(query_param(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ));
    }
    params
}

fn delete_params() -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "string",
            "When present, modifications are not persisted. The only valid value is All.",
        ),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        query_param(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
        ),
    ]
}

/// Kubernetes' operation ids and tags: `readAppsV1NamespacedDeployment`, tag `apps_v1`.
struct OpNaming {
    prefix: String,
    tag: String,
}

impl OpNaming {
    fn of(def: &ResourceDef) -> Self {
        let group = if def.group.is_empty() {
            "core".to_string()
        } else {
            def.group.trim_end_matches(".k8s.io").to_string()
        };
        let parts: Vec<String> = group.split('.').map(capitalize).collect();
        let camel = parts.concat();
        let mut lower = camel.clone();
        if let Some(first) = lower.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        OpNaming {
            prefix: format!("{camel}{}", capitalize(def.version)),
            tag: format!("{lower}_{}", def.version),
        }
    }

    fn id(&self, verb: &str, namespaced: bool, kind: &str, suffix: &str) -> String {
        let ns = if namespaced { "Namespaced" } else { "" };
        format!("{verb}{}{ns}{kind}{suffix}", self.prefix)
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn operation(
    naming: &OpNaming,
    id: String,
    action: &str,
    description: String,
    gvk: &Value,
    parameters: Vec<Value>,
    request: Option<Value>,
    responses: Value,
) -> Value {
    let mut params = parameters;
    params.push(pretty());
    let mut op = json!({
        "tags": [naming.tag],
        "description": description,
        "operationId": id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(body) = request {
        op["requestBody"] = body;
    }
    op
}

fn resource_paths(paths: &mut Map<String, Value>, def: &ResourceDef, names: &Names) {
    let naming = OpNaming::of(def);
    let prefix = format!("/{}", gv_path(def.group, def.version));
    let ns = def.namespaced();
    let collection = if ns {
        format!("{prefix}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{prefix}/{}", def.plural)
    };
    let item = format!("{collection}/{{name}}");
    let gvk = json!({"group": def.group, "kind": def.kind, "version": def.version});
    let kind = def.kind;
    let one = schema_ref(names.kind.as_deref());
    let list = schema_ref(names.list.as_deref());
    let status = schema_ref(Some(STATUS));
    let patch_types = if names.kind.is_some() && def.custom.is_none() {
        PATCH_TYPES
    } else {
        PATCH_TYPES_WITHOUT_SMP
    };
    let body = |schema: &Value| json!({"content": content(&["*/*"], schema), "required": true});
    let patch_body =
        json!({"content": content(patch_types, &schema_ref(Some(PATCH))), "required": true});
    let delete_body = json!({"content": content(&["*/*"], &schema_ref(Some(DELETE_OPTIONS)))});
    let scope_params = |with_name: bool| {
        let mut params = Vec::new();
        if with_name {
            params.push(path_param("name", &format!("name of the {kind}")));
        }
        if ns {
            params.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        params
    };

    let mut collection_ops = Map::new();
    collection_ops.insert(
        "get".into(),
        operation(
            &naming,
            naming.id("list", ns, kind, ""),
            "list",
            format!("list or watch objects of kind {kind}"),
            &gvk,
            list_params(true),
            None,
            responses(&[("200", "OK")], &list),
        ),
    );
    collection_ops.insert(
        "post".into(),
        operation(
            &naming,
            naming.id("create", ns, kind, ""),
            "post",
            format!("create a {kind}"),
            &gvk,
            write_params(false),
            Some(body(&one)),
            responses(
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                &one,
            ),
        ),
    );
    let mut delete_collection = delete_params();
    delete_collection.extend(list_params(false));
    collection_ops.insert(
        "delete".into(),
        operation(
            &naming,
            naming.id("delete", ns, kind, "").replacen(
                &format!("delete{}", naming.prefix),
                &format!("delete{}Collection", naming.prefix),
                1,
            ),
            "deletecollection",
            format!("delete collection of {kind}"),
            &gvk,
            delete_collection,
            Some(delete_body.clone()),
            responses(&[("200", "OK")], &status),
        ),
    );
    collection_ops.insert("parameters".into(), scope_params(false).into());
    paths.insert(collection, collection_ops.into());

    let mut item_ops = Map::new();
    item_ops.insert(
        "get".into(),
        operation(
            &naming,
            naming.id("read", ns, kind, ""),
            "get",
            format!("read the specified {kind}"),
            &gvk,
            Vec::new(),
            None,
            responses(&[("200", "OK")], &one),
        ),
    );
    item_ops.insert(
        "put".into(),
        operation(
            &naming,
            naming.id("replace", ns, kind, ""),
            "put",
            format!("replace the specified {kind}"),
            &gvk,
            write_params(false),
            Some(body(&one)),
            responses(&[("200", "OK"), ("201", "Created")], &one),
        ),
    );
    item_ops.insert(
        "patch".into(),
        operation(
            &naming,
            naming.id("patch", ns, kind, ""),
            "patch",
            format!("partially update the specified {kind}"),
            &gvk,
            write_params(true),
            Some(patch_body.clone()),
            responses(&[("200", "OK"), ("201", "Created")], &one),
        ),
    );
    item_ops.insert(
        "delete".into(),
        operation(
            &naming,
            naming.id("delete", ns, kind, ""),
            "delete",
            format!("delete a {kind}"),
            &gvk,
            delete_params(),
            Some(delete_body),
            responses(&[("200", "OK"), ("202", "Accepted")], &status),
        ),
    );
    item_ops.insert("parameters".into(), scope_params(true).into());
    paths.insert(item.clone(), item_ops.into());

    if ns {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            operation(
                &naming,
                naming.id("list", false, kind, "ForAllNamespaces"),
                "list",
                format!("list or watch objects of kind {kind}"),
                &gvk,
                list_params(true),
                None,
                responses(&[("200", "OK")], &list),
            ),
        );
        paths.insert(format!("{prefix}/{}", def.plural), all.into());
    }

    // The subresources kubectl reads and writes through the same operations.
    let mut subresources: Vec<(&str, &str, Value, Value)> = Vec::new();
    if def.has_status() {
        subresources.push(("status", "Status", gvk.clone(), one.clone()));
    }
    if def.has_subresource("scale") && names.scale.is_some() {
        let scale_gvk = json!({"group": "autoscaling", "kind": "Scale", "version": "v1"});
        subresources.push(("scale", "Scale", scale_gvk, schema_ref(names.scale)));
    }
    for (sub, suffix, sub_gvk, schema) in subresources {
        let mut ops = Map::new();
        ops.insert(
            "get".into(),
            operation(
                &naming,
                naming.id("read", ns, kind, suffix),
                "get",
                format!("read {sub} of the specified {kind}"),
                &sub_gvk,
                Vec::new(),
                None,
                responses(&[("200", "OK")], &schema),
            ),
        );
        ops.insert(
            "put".into(),
            operation(
                &naming,
                naming.id("replace", ns, kind, suffix),
                "put",
                format!("replace {sub} of the specified {kind}"),
                &sub_gvk,
                write_params(false),
                Some(body(&schema)),
                responses(&[("200", "OK"), ("201", "Created")], &schema),
            ),
        );
        ops.insert(
            "patch".into(),
            operation(
                &naming,
                naming.id("patch", ns, kind, suffix),
                "patch",
                format!("partially update {sub} of the specified {kind}"),
                &sub_gvk,
                write_params(true),
                Some(patch_body.clone()),
                responses(&[("200", "OK"), ("201", "Created")], &schema),
            ),
        );
        ops.insert("parameters".into(), scope_params(true).into());
        paths.insert(format!("{item}/{sub}"), ops.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;

    fn get(path: &str, query: Option<&str>, headers: &HeaderMap) -> Response<Bytes> {
        serve(path, query, headers).expect("served")
    }

    fn json_of(r: &Response<Bytes>) -> Value {
        serde_json::from_slice(r.body()).expect("json")
    }

    #[test]
    fn index_lists_every_served_group_version() {
        let index = json_of(&get("/openapi/v3", None, &HeaderMap::new()));
        for (group, version) in resources::group_versions() {
            let url = index["paths"][gv_path(group, version)]["serverRelativeURL"]
                .as_str()
                .expect("url");
            assert!(url.starts_with(&format!("/openapi/v3/{}?hash=", gv_path(group, version))));
        }
        assert!(serve("/openapi/v3/apis/nope/v1", None, &HeaderMap::new()).is_none());
        assert!(serve("/openapi/v9", None, &HeaderMap::new()).is_none());
    }

    #[test]
    fn documents_are_cached_by_hash() {
        let index = json_of(&get("/openapi/v3/", None, &HeaderMap::new()));
        let url = index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url")
            .to_string();
        let (path, query) = url.split_once('?').expect("query");
        let fresh = get(path, Some(query), &HeaderMap::new());
        assert_eq!(fresh.status(), 200);
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], "public, immutable");
        assert_eq!(fresh.headers()[header::CONTENT_TYPE], "application/json");
        let hash = query.trim_start_matches("hash=");
        assert_eq!(hex::encode_upper(Sha512::digest(fresh.body())), hash);

        let stale = get(path, Some("hash=0123"), &HeaderMap::new());
        assert_eq!(stale.status(), 200);
        assert_eq!(stale.headers()[header::CACHE_CONTROL], "no-cache, private");

        let mut headers = HeaderMap::new();
        let etag = fresh.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(get(path, Some(query), &headers).status(), 304);
    }

    #[test]
    fn patch_operations_carry_what_kubectl_looks_for() {
        let doc = json_of(&get("/openapi/v3/api/v1", None, &HeaderMap::new()));
        assert_eq!(doc["openapi"], "3.0.0");
        let op = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "ConfigMap", "version": "v1"})
        );
        assert_eq!(op["operationId"], "patchCoreV1NamespacedConfigMap");
        let params = op["parameters"].as_array().expect("params");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        let content = op["requestBody"]["content"].as_object().expect("content");
        for t in PATCH_TYPES {
            assert!(content.contains_key(*t), "{t}");
        }
        // explain finds a kind by the GET of its all-namespaces list path.
        assert_eq!(
            doc["paths"]["/api/v1/pods"]["get"]["x-kubernetes-group-version-kind"]["kind"],
            "Pod"
        );
        assert_eq!(
            doc["paths"]["/api/v1/nodes/{name}/status"]["patch"]["operationId"],
            "patchCoreV1NodeStatus"
        );
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        // Every reference resolves inside the document.
        let text = serde_json::to_string(&doc).expect("json");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
    }
}
