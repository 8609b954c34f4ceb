//! DELETE and deletecollection with Kubernetes' rules: preconditions, graceful deletion of pods
//! bound to a node, propagation policies as finalizers (the garbage collector finishes them), and
//! namespaces that are finalized by the namespace controller.

use bytes::Bytes;
use serde_json::{Value, json};

use super::handlers::{Reply, Request, Selectors, ok, select};
use super::object::{self, meta_str};
use super::request::{ResourceRequest, Verb};
use super::status::ApiError;

/// Namespaces that may never be deleted, as in Kubernetes.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub propagation_policy: Option<String>,
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
    #[serde(default)]
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Option<Vec<String>>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// From the body, with query parameters (gracePeriodSeconds, propagationPolicy, dryRun) as fallbacks.
    fn from_request(req: &Request<'_>) -> Result<Self, ApiError> {
        let mut options: DeleteOptions = if req.body.is_empty() {
            DeleteOptions::default()
        } else {
            serde_json::from_value(req.decode_body()?)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if options.grace_period_seconds.is_none()
            && let Some(g) = req.query.get("gracePeriodSeconds")
        {
            options.grace_period_seconds = Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds must be a number, not {g:?}"))
            })?);
        }
        if options.propagation_policy.is_none() {
            options.propagation_policy = req.query.get("propagationPolicy").map(str::to_string);
        }
        if req.query.dry_run() {
            options.dry_run = Some(vec!["All".into()]);
        }
        match options.propagation_policy.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => Ok(options),
            Some(other) => Err(ApiError::bad_request(format!(
                "propagationPolicy must be one of Background, Foreground or Orphan, not {other:?}"
            ))),
        }
    }

    fn dry_run(&self) -> bool {
        self.dry_run
            .as_ref()
            .is_some_and(|d| d.iter().any(|v| v == "All"))
    }

    /// The finalizer the propagation policy asks for, if any.
    fn finalizer(&self) -> Option<&'static str> {
        match (self.propagation_policy.as_deref(), self.orphan_dependents) {
            (Some("Foreground"), _) => Some("foregroundDeletion"),
            (Some("Orphan"), _) | (None, Some(true)) => Some("orphan"),
            _ => None,
        }
    }
}

/// Kinds whose Kubernetes storage answers a completed delete with the deleted object.
const RETURNS_DELETED_OBJECT: [(&str, &str); 4] = [
    ("", "pods"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("storage.k8s.io", "storageclasses"),
];

pub async fn delete(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let options = DeleteOptions::from_request(req)?;
    delete_one(req, &name, &options).await
}

/// How long a pod gets to stop: only a pod that a kubelet is running (bound, not finished) waits.
fn pod_grace(obj: &Value, requested: Option<i64>) -> i64 {
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
        .max(0)
}

pub async fn delete_one(
    req: &Request<'_>,
    name: &str,
    options: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let def = req.def();
    let is_pod = def.group.is_empty() && def.plural == "pods";
    let is_namespace = def.group.is_empty() && def.plural == "namespaces";
    for _attempt in 0..8 {
        let current = req.load(name).await?;
        let mut obj = object::from_stored_as(def, &current)?;
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        if let Some(pre) = &options.preconditions {
            if pre.uid.as_deref().is_some_and(|u| u != uid) {
                return Err(ApiError::conflict(
                    def.group,
                    def.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                        pre.uid.as_deref().unwrap_or_default()
                    ),
                ));
            }
            if pre
                .resource_version
                .as_deref()
                .is_some_and(|rv| rv != current.mod_revision.to_string())
            {
                return Err(ApiError::conflict(
                    def.group,
                    def.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        pre.resource_version.as_deref().unwrap_or_default(),
                        current.mod_revision
                    ),
                ));
            }
        }
        if is_namespace && IMMORTAL_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        super::webhooks::validate(
            req.store,
            def,
            super::webhooks::Operation::Delete,
            None,
            Some(&obj),
        )
        .await?;
        let grace = if is_pod {
            pod_grace(&obj, options.grace_period_seconds)
        } else {
            0
        };
        let mut finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(f) = options.finalizer()
            && !finalizers.iter().any(|x| x == f)
        {
            finalizers.push(f.into());
        }
        // A definition goes only after its objects (`crd::controller` removes them).
        if (def.group, def.plural) == ("apiextensions.k8s.io", "customresourcedefinitions")
            && !finalizers
                .iter()
                .any(|x| x == super::crd::CLEANUP_FINALIZER)
            && obj.pointer("/metadata/deletionTimestamp").is_none()
        {
            finalizers.push(super::crd::CLEANUP_FINALIZER.into());
        }
        let already_deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
        let old_grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        let must_wait = !finalizers.is_empty() || is_namespace || grace > 0;
        if !must_wait {
            if !options.dry_run() {
                match req
                    .store
                    .delete(&req.key(name), Some(current.mod_revision))
                    .await
                {
                    Err(crate::store::StoreError::Conflict { .. }) => continue,
                    other => {
                        other.map_err(req.store_err(name))?;
                    }
                }
            }
            // An object whose deletion was already under way is returned as it was, and so is
            // one of the kinds whose storage sets ReturnDeletedObject in Kubernetes (typed
            // clients decode a V1Service, not a Status); otherwise a Status.
            if already_deleting || RETURNS_DELETED_OBJECT.contains(&(def.group, def.plural)) {
                return ok(obj);
            }
            return ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": def.group, "kind": def.plural, "uid": uid},
            }));
        }
        // Graceful: mark the object; its kubelet, controller or finalizers finish the deletion.
        let shorter = old_grace.is_none_or(|g| grace < g);
        if already_deleting
            && !shorter
            && obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(Vec::len)
                == Some(finalizers.len())
        {
            return ok(obj);
        }
        let now = jiff::Timestamp::now();
        let meta = object::metadata_mut(&mut obj)?;
        if !already_deleting || shorter {
            let at = now
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(now);
            meta.insert(
                "deletionTimestamp".into(),
                at.round(jiff::Unit::Second)
                    .unwrap_or(at)
                    .to_string()
                    .into(),
            );
            meta.insert("deletionGracePeriodSeconds".into(), grace.into());
        }
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), Value::Array(finalizers));
        }
        if is_namespace {
            obj["status"]["phase"] = "Terminating".into();
        }
        if options.dry_run() {
            return ok(obj);
        }
        match req
            .store
            .update(
                &req.key(name),
                object::to_stored(&obj)?,
                Some(current.mod_revision),
            )
            .await
        {
            Ok(kv) => return ok(object::from_stored_as(def, &kv)?),
            Err(crate::store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(req.store_err(name)(e)),
        }
    }
    Err(ApiError::conflict(
        def.group,
        def.plural,
        name,
        "too many concurrent writes; try again",
    ))
}

pub async fn delete_collection(req: &Request<'_>) -> Result<Reply, ApiError> {
    let options = DeleteOptions::from_request(req)?;
    let selectors = Selectors::from_query(req.query, req.def())?;
    let (items, revision) = select(req.store, req.target, &selectors)?;
    let mut deleted = Vec::new();
    for item in items {
        let Some(name) = meta_str(&item, "name") else {
            continue;
        };
        let target = ResourceRequest {
            def: req.def(),
            namespace: meta_str(&item, "namespace").map(str::to_string),
            name: Some(name.to_string()),
            subresource: None,
            verb: Verb::Delete,
            served_as: req.target.served_as,
        };
        let one = Request {
            store: req.store,
            target: &target,
            query: req.query,
            accept: req.accept,
            content_type: req.content_type,
            user_agent: req.user_agent,
            body: Bytes::new(),
        };
        match delete_one(&one, name, &options).await {
            Ok(_) => deleted.push(item),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    ok(json!({
        "kind": format!("{}List", req.def().kind),
        "apiVersion": req.def().api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": deleted,
    }))
}
