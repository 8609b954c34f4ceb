//! CustomResourceDefinitions (apiextensions.k8s.io/v1): the definitions are stored like any
//! other kind (their entry is in `resources::RESOURCES`); what they define is served by the same
//! handlers as the built-in kinds, through entries this module adds to the served-resources table.
//!
//! - `served()`: the dynamic part of the resources table, one `ResourceDef` per served version of
//!   every Established definition, rebuilt by `sync` from the stored definitions.
//! - `definition`: defaulting and validation of a CustomResourceDefinition, with Kubernetes'
//!   field errors.
//! - `controller`: what kube-apiextensions-server's controllers do — names accepted or in
//!   conflict, Established, storedVersions, and the `customresourcecleanup` finalizer that
//!   removes every object of a deleted definition.
//! - `schema`: a custom resource checked against its version's structural schema: defaults,
//!   pruning of unknown fields, types, formats and the value constraints.
//! - `cel`: the schema's `x-kubernetes-validations` rules.
//! - `conversion`: the conversion webhook of a definition with `strategy: Webhook`.
//! - `printer`: additionalPrinterColumns (JSONPath cells) for Tables.
//! - `scale`: the `/scale` subresource through specReplicasPath/statusReplicasPath/labelSelectorPath.
//! - `versions`: writes at a non-storage version judged at the client's version, and moving
//!   objects between versions (conversion, then pruning by the target version's schema).

pub mod cel;
pub mod controller;
pub mod conversion;
pub mod definition;
pub mod jsonpath;
pub mod printer;
pub mod schema;
pub mod versions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use super::resources::{ResourceDef, Scope};
use super::table::Printer;
use crate::apiserver::kinds::json as j;

/// The finalizer a definition being deleted carries until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One additionalPrinterColumn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// The `/scale` subresource's paths (JSON paths such as `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// What one served version of a definition says about its objects.
#[derive(Debug, PartialEq, Eq)]
pub struct Custom {
    /// The definition's name, `<plural>.<group>`.
    pub definition: String,
    /// The version's `schema.openAPIV3Schema`.
    pub schema: Option<Value>,
    /// Whether `schema` declares any default.
    pub has_defaults: bool,
    /// Printer columns; empty means NAME and AGE.
    pub columns: Vec<Column>,
    pub scale: Option<ScalePaths>,
    /// The `Warning` header every request of a deprecated version gets.
    pub deprecation: Option<String>,
    /// How other versions become this one: None (apiVersion rewritten) or a webhook.
    pub webhook: Option<conversion::Webhook>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(items: Vec<String>) -> &'static [&'static str] {
    Box::leak(
        items
            .iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

type Served = Arc<Vec<&'static ResourceDef>>;

static SERVED: RwLock<Option<Served>> = RwLock::new(None);

/// Entries are `'static` because the resources table hands out `&'static ResourceDef`; each
/// distinct definition (by uid and spec) is built once and kept, so a server leaks only one
/// set of entries per change of a definition.
static BUILT: Mutex<Option<HashMap<String, Vec<&'static ResourceDef>>>> = Mutex::new(None);

/// The schema of a version a definition lists but does not serve: objects stored at it are
/// still pruned and defaulted by it on read, as kube-apiserver's storage decoder does.
#[derive(Debug)]
struct UnservedSchema {
    group: String,
    plural: String,
    version: String,
    schema: Value,
    has_defaults: bool,
}

static UNSERVED: RwLock<Vec<Arc<UnservedSchema>>> = RwLock::new(Vec::new());

fn unserved(group: &str, plural: &str, version: &str) -> Option<Arc<UnservedSchema>> {
    let all = UNSERVED.read().ok()?;
    all.iter()
        .find(|u| u.group == group && u.plural == plural && u.version == version)
        .cloned()
}

/// The unserved versions' schemas of the Established definitions.
fn unserved_of(definitions: &[&Value]) -> Vec<Arc<UnservedSchema>> {
    let mut out = Vec::new();
    for crd in definitions {
        let spec = j::at(crd, "spec");
        let group = j::str_or(spec, "group");
        let plural = j::str_or(j::at(j::at(crd, "status"), "acceptedNames"), "plural");
        for v in j::items(spec, "versions").filter(|v| !j::bool_at(v, "served").unwrap_or(false)) {
            if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
                out.push(Arc::new(UnservedSchema {
                    group: group.to_string(),
                    plural: plural.to_string(),
                    version: j::str_or(v, "name").to_string(),
                    has_defaults: schema::has_defaults(schema),
                    schema: schema.clone(),
                }));
            }
        }
    }
    out
}

/// The custom resources served now.
pub fn served() -> Served {
    SERVED
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_default()
}

/// Bumped whenever the served custom resources change (discovery and OpenAPI documents rebuild).
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn epoch() -> u64 {
    EPOCH.load(std::sync::atomic::Ordering::Acquire)
}

fn publish(defs: Vec<&'static ResourceDef>) {
    let changed = {
        let current = served();
        current.len() != defs.len()
            || current
                .iter()
                .zip(defs.iter())
                .any(|(a, b)| !std::ptr::eq(*a, *b))
    };
    if !changed {
        return;
    }
    if let Ok(mut g) = SERVED.write() {
        *g = Some(Arc::new(defs));
    }
    EPOCH.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
pub fn version_rank(v: &str) -> (u8, i64, i64, String) {
    let parse = |s: &str| -> Option<(i64, u8, i64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 0, 0));
        }
        for (label, rank) in [("beta", 1u8), ("alpha", 2u8)] {
            if let Some(n) = tail.strip_prefix(label) {
                let minor: i64 = n.parse().ok()?;
                return Some((major, rank, minor));
            }
        }
        None
    };
    match parse(v) {
        Some((major, rank, minor)) => (rank, -major, -minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

fn condition_true(crd: &Value, ty: &str) -> bool {
    j::items(j::at(crd, "status"), "conditions")
        .any(|c| j::str_or(c, "type") == ty && j::str_or(c, "status") == "True")
}

/// The entries one definition serves (empty until it is Established).
fn build(crd: &Value) -> Vec<&'static ResourceDef> {
    if !condition_true(crd, "Established") {
        return Vec::new();
    }
    let spec = j::at(crd, "spec");
    let names = j::at(j::at(crd, "status"), "acceptedNames");
    let group = j::str_or(spec, "group");
    let plural = j::str_or(names, "plural");
    let kind = j::str_or(names, "kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let mut versions: Vec<&Value> = j::items(spec, "versions")
        .filter(|v| j::bool_at(v, "served").unwrap_or(false))
        .collect();
    versions.sort_by_key(|v| version_rank(j::str_or(v, "name")));
    let Some(storage) = j::items(spec, "versions")
        .find(|v| j::bool_at(v, "storage").unwrap_or(false))
        .map(|v| j::str_or(v, "name").to_string())
    else {
        return Vec::new();
    };
    let group = leak(group);
    let storage = leak(&storage);
    let strings = |v: &Value, key: &str| -> Vec<String> {
        j::items(v, key)
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let short_names = leak_list(strings(names, "shortNames"));
    let categories = leak_list(strings(names, "categories"));
    let plural = leak(plural);
    let singular = leak(&match j::str_or(names, "singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    });
    let kind = leak(kind);
    let scope = if j::str_or(spec, "scope") == "Cluster" {
        Scope::Cluster
    } else {
        Scope::Namespaced
    };
    let mut out = Vec::new();
    for v in versions {
        let version = leak(j::str_or(v, "name"));
        let subs = j::at(v, "subresources");
        let mut subresources = Vec::new();
        if subs.get("status").is_some_and(|s| !s.is_null()) {
            subresources.push("status".to_string());
        }
        let scale = subs
            .get("scale")
            .filter(|s| s.is_object())
            .map(|s| ScalePaths {
                spec_replicas: j::str_or(s, "specReplicasPath").to_string(),
                status_replicas: j::str_or(s, "statusReplicasPath").to_string(),
                label_selector: j::str_at(s, "labelSelectorPath").map(str::to_string),
            });
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        let columns = j::items(v, "additionalPrinterColumns")
            .map(|c| Column {
                name: j::str_or(c, "name").to_string(),
                kind: j::str_or(c, "type").to_string(),
                format: j::str_or(c, "format").to_string(),
                description: j::str_or(c, "description").to_string(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: j::str_or(c, "jsonPath").to_string(),
            })
            .collect();
        let deprecation = j::bool_at(v, "deprecated").unwrap_or(false).then(|| {
            match j::str_at(v, "deprecationWarning") {
                Some(w) => w.to_string(),
                None => format!("{group}/{version} {kind} is deprecated"),
            }
        });
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let custom: &'static Custom = Box::leak(Box::new(Custom {
            definition: j::str_or(j::at(crd, "metadata"), "name").to_string(),
            has_defaults: schema.as_ref().is_some_and(schema::has_defaults),
            schema,
            columns,
            scale,
            deprecation,
            webhook: conversion::Webhook::of(spec),
        }));
        let fields: Vec<(&'static str, &'static [&'static str])> = j::items(v, "selectableFields")
            .filter_map(|f| j::str_at(f, "jsonPath"))
            .map(|p| {
                let label = p.trim_start_matches('.');
                let parts: Vec<String> = label.split('.').map(str::to_string).collect();
                (leak(label), leak_list(parts))
            })
            .collect();
        let def: &'static ResourceDef = Box::leak(Box::new(ResourceDef {
            group,
            version,
            plural,
            singular,
            kind,
            scope,
            short_names,
            categories,
            subresources: leak_list(subresources),
            has_generation: true,
            printer: Printer::Custom(custom),
            fields: Box::leak(fields.into_boxed_slice()),
            stored_as: (version != storage).then_some((group, storage)),
            custom: Some(custom),
        }));
        out.push(def);
    }
    out
}

/// Rebuilds the served custom resources from the stored definitions.
pub fn rebuild(definitions: &[Value]) {
    let mut built = match BUILT.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let cache = built.get_or_insert_with(HashMap::new);
    let deleting: Vec<String> = definitions
        .iter()
        .filter(|c| c.pointer("/metadata/deletionTimestamp").is_some())
        .map(|c| j::str_or(j::at(c, "metadata"), "name").to_string())
        .collect();
    if let Ok(mut t) = TERMINATING.write() {
        *t = deleting;
    }
    let mut defs = Vec::new();
    let mut sorted: Vec<&Value> = definitions.iter().collect();
    sorted.sort_by_key(|c| j::str_or(j::at(c, "metadata"), "name").to_string());
    let established: Vec<&Value> = sorted
        .iter()
        .copied()
        .filter(|c| condition_true(c, "Established"))
        .collect();
    if let Ok(mut u) = UNSERVED.write() {
        *u = unserved_of(&established);
    }
    for crd in sorted {
        let key = format!(
            "{}/{}/{}",
            j::str_or(j::at(crd, "metadata"), "uid"),
            j::at(crd, "spec"),
            j::at(crd, "status")
                .get("acceptedNames")
                .unwrap_or(&Value::Null),
        );
        let key = if condition_true(crd, "Established") {
            key
        } else {
            continue;
        };
        let entries = cache.entry(key).or_insert_with(|| build(crd));
        defs.extend(entries.iter().copied());
    }
    publish(defs);
}

/// Prunes what the schema does not declare; the pruned fields are warnings (Warn), an error
/// (Strict) or nothing (Ignore), worded as Kubernetes words them for custom resources.
pub fn check_fields(
    custom: &Custom,
    obj: &mut Value,
    mode: super::schema::FieldValidation,
) -> Result<Vec<String>, super::status::ApiError> {
    use super::schema::FieldValidation;
    let Some(schema) = custom.schema.as_ref() else {
        return Ok(Vec::new());
    };
    let mut pruned = Vec::new();
    schema::prune(schema, obj, "", true, &mut pruned);
    let messages: Vec<String> = pruned
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    match mode {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(messages),
        FieldValidation::Strict if messages.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(super::status::ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
    }
}

/// Whether objects of `def`'s kind read from storage may change on the way out: some served
/// version of its definition has a schema, which prunes, or declares a default. Lists copy
/// stored bytes as they are otherwise.
pub fn decoded_on_read(def: &ResourceDef) -> bool {
    def.custom.is_some()
        && (served().iter().any(|r| {
            r.group == def.group
                && r.plural == def.plural
                && r.custom
                    .is_some_and(|c| c.has_defaults || c.schema.is_some())
        }) || UNSERVED.read().is_ok_and(|u| {
            u.iter()
                .any(|u| u.group == def.group && u.plural == def.plural)
        }))
}

/// An object read from storage, as kube-apiserver's storage decoder gives it: pruned of what
/// the schema of the version it was stored at no longer declares, then given that schema's
/// defaults, so an object stored before a field was dropped loses it and one stored before a
/// default was added gets it. Nothing is written back. The definition in force now decides,
/// not the one a long-running watch started under; a version no longer served still has its
/// schema in the definition, and that schema decides for objects stored at it.
pub fn normalize_stored(def: &ResourceDef, obj: &mut Value) {
    if def.custom.is_none() {
        return;
    }
    let version = j::str_or(obj, "apiVersion")
        .rsplit_once('/')
        .map(|(_, v)| v)
        .unwrap_or(def.version)
        .to_string();
    let current = served()
        .iter()
        .copied()
        .find(|r| r.group == def.group && r.plural == def.plural && r.version == version);
    if let Some(custom) = current.and_then(|r| r.custom) {
        if let Some(schema) = custom.schema.as_ref() {
            schema::prune(schema, obj, "", true, &mut Vec::new());
            if custom.has_defaults {
                schema::apply_defaults(schema, obj);
            }
        }
    } else if let Some(old) = unserved(def.group, def.plural, &version) {
        schema::prune(&old.schema, obj, "", true, &mut Vec::new());
        if old.has_defaults {
            schema::apply_defaults(&old.schema, obj);
        }
    }
    // Stored at another version (the storage version has changed since): strategy None
    // converts by rewriting apiVersion, then prunes by the version served. A conversion
    // webhook is asked on the way out of `kinds::convert` instead.
    if version != def.version
        && let Some(custom) = def.custom
        && custom.webhook.is_none()
    {
        *obj = versions::rewrite(std::mem::take(obj), &def.api_version());
        versions::prune_to(def, obj);
    }
}

/// Definitions being deleted (by name), as the last `rebuild` saw them.
static TERMINATING: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether the definition of a custom resource is being deleted: it then takes no new objects.
pub fn terminating(custom: &Custom) -> bool {
    TERMINATING
        .read()
        .map(|t| t.contains(&custom.definition))
        .unwrap_or(false)
}
