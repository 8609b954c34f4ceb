//! Server-side apply: `PATCH` with `Content-Type: application/apply-patch+yaml`. The body is the
//! manager's whole intent for the object (YAML or JSON); the field manager merges it into the
//! live object (or creates the object from it), and the result goes through the same defaulting,
//! admission and validation as any write.

use serde_json::{Value, json};

use super::crd::versions;
use super::fieldmanager::{self, Context};
use super::handlers::{
    Reply, Request, check_body_identity, check_precondition, create_object, prepare_update,
    write_update,
};
use super::object;
use super::status::ApiError;

/// The applied configuration, checked as Kubernetes checks it before merging.
fn read_config(req: &Request<'_>) -> Result<Value, ApiError> {
    let def = through_webhook(req).unwrap_or(req.def());
    let config = req.decode_body()?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = config
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != def.api_version() || kind != def.kind {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        return Err(ApiError::bad_request(format!(
            "invalid object type: {group}/{version}, Kind={kind}"
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    // An undeclared field fails the typed conversion whatever fieldValidation says.
    // A custom resource applied at another version is checked by that version's schema.
    let mut checked = config.clone();
    let mode = super::schema::FieldValidation::from_query(req.query.get("fieldValidation"))?;
    let fields_of = match req.target.served_as {
        Some(served) if served.custom.is_some() => served,
        _ => def,
    };
    super::schema::check_fields(fields_of, &req.body, req.content_type, &mut checked, mode)?;
    Ok(config)
}

/// The version a custom resource is applied at, when it is not the storage version and only
/// the definition's conversion webhook can convert between them: the configuration is then
/// merged into the live object converted to that version, and the result converted back
/// before admission and storage (strategy None applies at the storage version instead).
fn through_webhook(req: &Request<'_>) -> Option<&'static super::resources::ResourceDef> {
    req.target
        .served_as
        .filter(|d| d.custom.is_some_and(|c| c.webhook.is_some()))
        .filter(|d| !std::ptr::eq(*d, req.def()))
}

pub async fn apply(req: &Request<'_>) -> Result<Reply, ApiError> {
    fieldmanager::validate_options(req, true)?;
    let manager = req
        .query
        .get("fieldManager")
        .unwrap_or_default()
        .to_string();
    let force = req.query.flag("force");
    let name = req.name()?.to_string();
    let config = read_config(req)?;
    let subresource = req.target.subresource.as_deref();
    // Managed fields record the version the configuration was applied at.
    let ctx = Context::new(fieldmanager::write_def(req.target), subresource);
    for _attempt in 0..8 {
        let current = req
            .store
            .get(&req.key(&name))
            .map_err(req.store_err(&name))?;
        let Some(current) = current else {
            if subresource.is_some() {
                return Err(req.not_found(&name));
            }
            // A missing object is created from the configuration, as an apply onto the empty
            // object of its kind.
            let mut created =
                fieldmanager::apply(&ctx, &json!({}), false, &config, &manager, force)?;
            if through_webhook(req).is_some() {
                created = versions::convert(req.store, req.def(), created).await?;
            }
            check_body_identity(req, &name, &mut created)?;
            match create_object(req, created, Vec::new(), false).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                other => return other,
            }
        };
        let stored = object::from_stored_as(req.def(), &current)?;
        let old = match through_webhook(req) {
            Some(version) => versions::to_version(req.store, version, stored.clone()).await?,
            None => stored.clone(),
        };
        let mut applied = fieldmanager::apply(&ctx, &old, true, &config, &manager, force)?;
        if through_webhook(req).is_some() {
            applied = versions::convert(req.store, req.def(), applied).await?;
        }
        check_body_identity(req, &name, &mut applied)?;
        check_precondition(req, &name, &applied, &current)?;
        // A status write keeps nothing of the object but its status; the managed fields the
        // apply computed go with it.
        let managed = applied.pointer("/metadata/managedFields").cloned();
        let mut merged = prepare_update(req.def(), &stored, applied, subresource)?;
        if let Some(meta) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            match managed {
                Some(m) => meta.insert("managedFields".into(), m),
                None => meta.remove("managedFields"),
            };
        }
        super::admission::on_update(req.store, req.def(), &stored, &mut merged).await?;
        match write_update(req, &name, &current, merged).await {
            Err(e) if e.reason == "Conflict" => continue,
            other => {
                return Ok(Reply {
                    code: 200,
                    body: other?,
                    encoded: None,
                    warnings: Vec::new(),
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
