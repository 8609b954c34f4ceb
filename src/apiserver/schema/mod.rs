//! The built-in kinds' schemas (from k8s-openapi) with Kubernetes' patch metadata: what OpenAPI,
//! field validation and strategic merge patch read.
//!
//! - `registry()`: every built-in kind's schema, navigable from a kind's root (`Registry::kind`)
//!   through fields (`Schema::field`), list elements (`Schema::items`) and map values
//!   (`Schema::values`), each field with its patch/list metadata (`FieldMeta`).
//! - `check_fields`: unknown and duplicate fields per `fieldValidation`.
//! - `strategic_merge`: `application/strategic-merge-patch+json`.

mod enums;
pub(crate) mod gofmt;
mod kinds;
mod patchmeta;
mod registry;
mod smp;

pub(crate) use smp::go_type;
mod validate;

use serde_json::Value;

use super::resources::ResourceDef;
use super::status::ApiError;

pub use registry::{FieldMeta, REF_PREFIX, Schema, Shape, registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// The root schema of a served resource's kind, when it is a built-in one.
pub fn kind_schema(def: &ResourceDef) -> Option<Schema<'static>> {
    registry().kind(def.group, def.version, def.kind)
}

/// The schema of `obj`: the kind it names when that is a built-in one (a subresource such as
/// `scale` or `eviction` carries its own kind), else the resource's.
fn object_schema(def: &ResourceDef, obj: &Value) -> Option<Schema<'static>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    let kind = obj.get("kind").and_then(Value::as_str);
    if let (Some(api_version), Some(kind)) = (api_version, kind)
        && kind != def.kind
    {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if let Some(schema) = registry().kind(group, version, kind) {
            return Some(schema);
        }
    }
    kind_schema(def)
}

/// Checks `body` (the raw request bytes, for duplicate fields) and `obj` (the object about to be
/// stored) against the kind's schema, then drops the fields the schema does not declare, as
/// Kubernetes' typed decoding does whatever the mode. Strict: unknown or duplicate fields are an
/// error worded as Kubernetes words it (400 for a created or replaced object, 422 for a patch).
/// Warn: they come back as warnings. Kinds without a schema (custom ones) pass untouched.
pub fn check_fields(
    def: &ResourceDef,
    body: &[u8],
    content_type: &str,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if let Some(custom) = def.custom {
        return super::crd::check_fields(custom, obj, mode);
    }
    let Some(root) = object_schema(def, obj) else {
        return Ok(Vec::new());
    };
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media == "application/apply-patch+yaml" {
        return check_apply(def, root, body, obj);
    }
    let errors = if mode == FieldValidation::Ignore {
        Vec::new()
    } else {
        match media {
            "application/json" | "" => {
                validate::walk_body(body, false, validate::BodyKind::Object(root))
            }
            "application/yaml" => validate::walk_body(body, true, validate::BodyKind::Object(root)),
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let mut errors = validate::walk_body(body, false, validate::BodyKind::Untyped);
                errors.extend(validate::unknown_fields(root, obj));
                errors
            }
            "application/json-patch+json" => {
                let mut errors: Vec<String> =
                    validate::walk_body(body, false, validate::BodyKind::JsonPatch)
                        .into_iter()
                        .map(|e| format!("json patch {e}"))
                        .collect();
                errors.extend(validate::unknown_fields(root, obj));
                errors
            }
            // Protobuf bodies are decoded by their typed schema: nothing unknown survives.
            _ => Vec::new(),
        }
    };
    let failure = (!errors.is_empty() && mode == FieldValidation::Strict)
        .then(|| strict_error(def, root, media, body, obj, &errors));
    validate::prune(root, obj);
    match failure {
        Some(err) => Err(err),
        None => Ok(errors),
    }
}

/// Kubernetes' wording: a create or update body fails to decode ("… cannot be handled as a …");
/// a patch yields an invalid object, reported against the field `patch` with the patch (SMP) or
/// the patched object (JSON and merge patches) as the invalid value.
fn strict_error(
    def: &ResourceDef,
    root: Schema<'_>,
    media: &str,
    body: &[u8],
    obj: &Value,
    errors: &[String],
) -> ApiError {
    let detail = format!("strict decoding error: {}", errors.join(", "));
    let patched_value = match media {
        "application/strategic-merge-patch+json" => Some(
            serde_json::from_slice::<Value>(body)
                .map(|mut patch| {
                    as_merged(&mut patch);
                    gofmt::value(&patch)
                })
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned()),
        ),
        "application/merge-patch+json" | "application/json-patch+json" => {
            Some(serde_json::to_string(obj).unwrap_or_default())
        }
        _ => None,
    };
    match patched_value {
        Some(value) => ApiError::invalid(
            "",
            "",
            "",
            vec![(
                "patch".into(),
                format!("Invalid value: {}: {detail}", gofmt::quote(&value)),
            )],
        ),
        None => {
            let kind = obj
                .get("kind")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .unwrap_or(def.kind);
            let version = obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .map(|v| v.rsplit('/').next().unwrap_or(v))
                .filter(|v| !v.is_empty())
                .unwrap_or(def.version);
            let expected = root
                .node()
                .pointer("/x-kubernetes-group-version-kind/0/kind")
                .and_then(Value::as_str)
                .unwrap_or(def.kind);
            ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {expected}: {detail}"
            ))
        }
    }
}

/// Kubernetes prints the patch after merging it, which consumed some of its directives in place:
/// `$retainKeys`, `$setElementOrder/<list>` with the list it ordered, `$patch: replace`.
fn as_merged(patch: &mut Value) {
    match patch {
        Value::Object(map) => {
            map.remove("$retainKeys");
            let ordered: Vec<String> = map
                .keys()
                .filter_map(|k| k.strip_prefix("$setElementOrder/"))
                .map(str::to_string)
                .collect();
            for list in ordered {
                map.remove(&format!("$setElementOrder/{list}"));
                map.remove(&list);
            }
            if map.get("$patch").and_then(Value::as_str) == Some("replace") {
                map.remove("$patch");
            }
            map.values_mut().for_each(as_merged);
        }
        Value::Array(items) => items.iter_mut().for_each(as_merged),
        _ => {}
    }
}

/// Server-side apply converts the applied configuration to a typed object, which fails on any
/// undeclared field whatever fieldValidation says.
fn check_apply(
    def: &ResourceDef,
    root: Schema<'_>,
    body: &[u8],
    obj: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let applied: Value = serde_yaml::from_slice(body).unwrap_or_else(|_| obj.clone());
    let errors = validate::undeclared_fields(root, &applied);
    validate::prune(root, obj);
    if errors.is_empty() {
        return Ok(Vec::new());
    }
    let meta = |f: &str| {
        applied
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let name = match meta("namespace") {
        ns if ns.is_empty() => meta("name"),
        ns => format!("{ns}/{}", meta("name")),
    };
    let gv = if def.group.is_empty() {
        format!("/{}", def.version)
    } else {
        format!("{}/{}", def.group, def.version)
    };
    let detail = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Err(ApiError::bad_request(format!(
        "failed to create typed patch object ({name}; {gv}, Kind={}): {detail}",
        def.kind
    )))
}

/// Applies a strategic merge patch to `original` using the kind's merge keys and strategies.
/// Kinds without a schema cannot be strategically merged, as in Kubernetes (415).
pub fn strategic_merge(
    def: &ResourceDef,
    original: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let Some(root) = object_schema(def, original) else {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
        ));
    };
    smp::apply(root, original, patch).map_err(|e| match e {
        smp::SmpError::BadRequest(msg) => ApiError::bad_request(msg),
        smp::SmpError::Unprocessable(msg) => ApiError {
            code: 422,
            reason: "Invalid",
            message: msg,
            details: None,
        },
        // Kubernetes answers these with a bare 500 (reason Unknown, empty) that carries the
        // merge error's text; kubectl prints "Error from server: <text>".
        smp::SmpError::Other(msg) => ApiError {
            code: 500,
            reason: "",
            message: msg,
            details: None,
        },
    })
}

#[cfg(test)]
mod tests;
