//! Subresources other than status: scale, pods/binding, pods/eviction and namespaces/finalize.
//! The connecting ones (log, exec, attach, portforward, proxy) are in `connect`.

use serde_json::{Value, json};

use super::handlers::{Reply, Request, ok, write_update};
use super::object::{self, meta_str};
use super::request::Verb;
use super::resources;
use super::selector::{label_selector_matches, label_selector_to_string, labels_of};
use super::status::ApiError;
use super::webhooks::{self, Operation};

pub async fn dispatch(req: &Request<'_>, sub: &str) -> Result<Reply, ApiError> {
    match (sub, req.target.verb) {
        ("scale", Verb::Get) => scale_get(req).await,
        ("scale", Verb::Update | Verb::Patch) => scale_write(req).await,
        ("binding", Verb::Create) => binding(req).await,
        ("eviction", Verb::Create) => eviction(req).await,
        ("finalize", Verb::Update) => finalize(req).await,
        (_, verb) => Err(ApiError::method_not_allowed(format!(
            "{verb:?} is not supported on {}/{sub}",
            req.def().plural
        ))),
    }
}

/// The paths a custom resource's definition gives for its scale at the version the client
/// asked for (None for built-in kinds).
fn custom_scale(req: &Request<'_>) -> Option<&'static super::crd::ScalePaths> {
    req.target
        .served_def()
        .custom
        .and_then(|c| c.scale.as_ref())
}

/// A custom resource's scale asked for at another version than its storage version is read
/// and written on the object at that version, whose paths may differ (kube-apiserver serves
/// `/scale` per version, converting the object).
fn scale_version(req: &Request<'_>) -> Option<&'static resources::ResourceDef> {
    req.target
        .served_as
        .filter(|d| d.custom.is_some() && !std::ptr::eq(*d, req.def()))
}

/// A stored object at the version `/scale` was asked at.
async fn scaled_view(req: &Request<'_>, stored: Value) -> Result<Value, ApiError> {
    match scale_version(req) {
        Some(served) => super::crd::versions::to_version(req.store, served, stored).await,
        None => Ok(stored),
    }
}

fn scale_of(paths: Option<&super::crd::ScalePaths>, obj: &Value) -> Value {
    use super::crd::jsonpath;
    let (replicas, current, selector) = match paths {
        Some(p) => (
            jsonpath::first(obj, &p.spec_replicas)
                .and_then(Value::as_i64)
                .unwrap_or(0),
            jsonpath::first(obj, &p.status_replicas)
                .and_then(Value::as_i64)
                .unwrap_or(0),
            p.label_selector
                .as_deref()
                .and_then(|l| jsonpath::first(obj, l))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        None => (
            obj.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            obj.pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            obj.pointer("/spec/selector")
                .and_then(label_selector_to_string)
                .unwrap_or_default(),
        ),
    };
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {
            "replicas": current,
            "selector": selector,
        },
    })
}

async fn scale_get(req: &Request<'_>) -> Result<Reply, ApiError> {
    let obj = object::from_stored_as(req.def(), &req.load(req.name()?).await?)?;
    ok(scale_of(custom_scale(req), &scaled_view(req, obj).await?))
}

async fn scale_write(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let media = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let body = req.decode_body()?;
    for _attempt in 0..8 {
        let current = req.load(&name).await?;
        let stored_old = object::from_stored_as(req.def(), &current)?;
        let old = scaled_view(req, stored_old.clone()).await?;
        let mut scale = scale_of(custom_scale(req), &old);
        match (req.target.verb, media) {
            (Verb::Update, _) => scale = body.clone(),
            // A Scale has no lists, so a strategic merge patch is a JSON merge patch here.
            (_, "application/merge-patch+json" | "application/strategic-merge-patch+json") => {
                json_patch::merge(&mut scale, &body)
            }
            (_, "application/json-patch+json") => {
                let ops: json_patch::Patch = serde_json::from_value(body.clone()).map_err(|e| {
                    ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                })?;
                json_patch::patch(&mut scale, &ops).map_err(|e| {
                    ApiError::invalid(
                        "autoscaling",
                        "Scale",
                        &name,
                        vec![("".into(), e.to_string())],
                    )
                })?;
            }
            (_, other) => return Err(ApiError::unsupported_media_type(other)),
        }
        if let Some(rv) = meta_str(&scale, "resourceVersion")
            && !rv.is_empty()
            && rv != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                req.def().group,
                req.def().plural,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let namespace = req.target.namespace.as_deref().unwrap_or_default();
        let before = scale_of(custom_scale(req), &old);
        webhooks::admit_subresource(
            req.store,
            req.def(),
            Operation::Update,
            webhooks::SCALE,
            namespace,
            &name,
            &mut scale,
            Some(&before),
        )
        .await?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let mut new = old.clone();
        match custom_scale(req) {
            Some(p) => super::crd::jsonpath::set(&mut new, &p.spec_replicas, replicas.into())
                .map_err(ApiError::internal)?,
            None => new["spec"]["replicas"] = replicas.into(),
        }
        if new != old {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                + 1;
            new["metadata"]["generation"] = generation.into();
        }
        if scale_version(req).is_some() {
            new = super::crd::versions::to_version(req.store, req.def(), new).await?;
        }
        super::fieldmanager::on_scale(req, &stored_old, &mut new);
        match write_update(req, &name, &current, new).await {
            Ok(written) => {
                return ok(scale_of(
                    custom_scale(req),
                    &scaled_view(req, written).await?,
                ));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        req.def().group,
        req.def().plural,
        &name,
        "too many concurrent writes; try again",
    ))
}

fn success() -> Result<Reply, ApiError> {
    Ok(Reply {
        code: 201,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        encoded: None,
        warnings: Vec::new(),
    })
}

/// pods/binding: what the scheduler posts to place a pod on a node.
async fn binding(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let mut body = req.decode_body()?;
    let namespace = req.target.namespace.as_deref().unwrap_or_default();
    webhooks::admit_subresource(
        req.store,
        req.def(),
        Operation::Create,
        webhooks::BINDING,
        namespace,
        &name,
        &mut body,
        None,
    )
    .await?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            vec![("target.name".into(), "Required value".into())],
        ));
    }
    for _attempt in 0..8 {
        let current = req.load(&name).await?;
        let mut pod = object::from_stored(&current)?;
        let conflict = |why: String| ApiError::conflict("", "pods/binding", &name, &why);
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        if let Some(existing) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(conflict(format!(
                "pod {name} is already assigned to node \"{existing}\""
            )));
        }
        pod["spec"]["nodeName"] = node.clone().into();
        let now = object::now_rfc3339();
        let mut conditions: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        pod["status"]["conditions"] = Value::Array(conditions);
        match write_update(req, &name, &current, pod).await {
            Ok(_) => return success(),
            Err(e) if e.reason == "Conflict" && e.message.contains("modified") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "",
        "pods",
        &name,
        "too many concurrent writes; try again",
    ))
}

/// pods/eviction: a delete that respects PodDisruptionBudgets (what `kubectl drain` uses).
async fn eviction(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let mut body = req.decode_body()?;
    let namespace = req.target.namespace.as_deref().unwrap_or_default();
    webhooks::admit_subresource(
        req.store,
        req.def(),
        Operation::Create,
        webhooks::EVICTION,
        namespace,
        &name,
        &mut body,
        None,
    )
    .await?;
    let pod = object::from_stored(&req.load(&name).await?)?;
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !terminal && pod.pointer("/metadata/deletionTimestamp").is_none() {
        // Two evictions racing for the last allowed disruption: the budget's compare-and-swap
        // lets one through and makes the other look again, as Kubernetes' eviction does.
        let mut attempts = 0;
        while !take_disruption(req, &pod, &name).await? {
            attempts += 1;
            if attempts >= EVICTION_RETRIES {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget: too many concurrent evictions, try again.",
                    json!({}),
                ));
            }
        }
    }
    let options: super::delete::DeleteOptions = body
        .get("deleteOptions")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("invalid deleteOptions: {e}")))?
        .unwrap_or_default();
    super::delete::delete_one(req, &name, &options).await?;
    success()
}

const EVICTION_RETRIES: usize = 20;

/// Checks the budget covering `pod` (if any) and, when it allows a disruption, records one in its
/// status (disruptionsAllowed - 1, the pod in disruptedPods) so the next eviction sees it before the
/// disruption controller recounts. Ok(false): the budget changed under us, look again.
async fn take_disruption(req: &Request<'_>, pod: &Value, pod_name: &str) -> Result<bool, ApiError> {
    let Some(pdb_def) = resources::find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(true);
    };
    let namespace = meta_str(pod, "namespace").unwrap_or_default().to_string();
    let labels = labels_of(pod);
    let (pdbs, _) = req
        .store
        .list(&pdb_def.list_prefix(Some(&namespace)))
        .map_err(|e| ApiError::from_store(e, "policy", "poddisruptionbudgets", ""))?;
    let mut matching = Vec::new();
    for kv in &pdbs {
        let pdb = object::from_stored(kv)?;
        if pdb
            .pointer("/spec/selector")
            .is_some_and(|s| label_selector_matches(s, &labels))
        {
            matching.push((kv, pdb));
        }
    }
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some((kv, mut pdb)) = matching.pop() else {
        return Ok(true);
    };
    let pdb_name = meta_str(&pdb, "name").unwrap_or_default().to_string();
    let refuse = |message: String| {
        ApiError::too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            json!({"causes": [{"reason": "DisruptionBudget", "message": message}]}),
        )
    };
    let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = pdb
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if observed < generation {
        return Err(refuse(format!(
            "The disruption budget {pdb_name} is still being processed by the server."
        )));
    }
    let allowed = pdb
        .pointer("/status/disruptionsAllowed")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if allowed < 1 {
        let healthy = pdb
            .pointer("/status/currentHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let desired = pdb
            .pointer("/status/desiredHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        return Err(refuse(format!(
            "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
        )));
    }
    if req.query.dry_run() {
        return Ok(true);
    }
    pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !pdb["status"]["disruptedPods"].is_object() {
        pdb["status"]["disruptedPods"] = json!({});
    }
    pdb["status"]["disruptedPods"][pod_name] = json!(object::now_rfc3339());
    match req
        .store
        .update(&kv.key, object::to_stored(&pdb)?, Some(kv.mod_revision))
        .await
    {
        Ok(_) => Ok(true),
        Err(
            crate::store::StoreError::Conflict { .. } | crate::store::StoreError::NotFound { .. },
        ) => Ok(false),
        Err(e) => Err(ApiError::from_store(
            e,
            "policy",
            "poddisruptionbudgets",
            &pdb_name,
        )),
    }
}

/// namespaces/finalize: the namespace controller clears spec.finalizers once the namespace is
/// empty, and a terminating namespace without finalizers is gone.
async fn finalize(req: &Request<'_>) -> Result<Reply, ApiError> {
    let name = req.name()?.to_string();
    let body = req.decode_body()?;
    let current = req.load(&name).await?;
    let mut ns = object::from_stored(&current)?;
    ns["spec"]["finalizers"] = body
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let no_finalizers = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        && ns
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if ns.pointer("/metadata/deletionTimestamp").is_some() && no_finalizers {
        req.store
            .delete(&req.key(&name), Some(current.mod_revision))
            .await
            .map_err(req.store_err(&name))?;
        return ok(ns);
    }
    ok(write_update(req, &name, &current, ns).await?)
}
