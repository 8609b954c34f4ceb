//! Service accounts in the API server: the `serviceaccounts/<name>/token` subresource
//! (TokenRequest), bearer-token authentication of the tokens it issues, and the ServiceAccount
//! admission plugin's projected `kube-api-access-*` volume.

pub mod jwt;

use serde_json::{Value, json};

use super::object::meta_str;
use super::resources;
use super::status::ApiError;
use crate::pki::ClientIdentity;
use crate::store::Store;
pub use jwt::Signer;

const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// What the admission plugin asks for; kubelet renews at 80% of it.
const POD_TOKEN_SECONDS: i64 = 3607;
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";

fn stored(
    store: &Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let def = resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let Some(kv) = store
        .get(&def.key(namespace, name))
        .map_err(|e| ApiError::from_store(e, "", plural, name))?
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&kv.value).ok())
}

fn uid_of(obj: &Value) -> String {
    meta_str(obj, "uid").unwrap_or_default().to_string()
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![(field.to_string(), message)],
    )
}

/// POST `.../serviceaccounts/<name>/token`: a signed token for the account, optionally bound to
/// a Pod, Secret or Node so that it dies with that object.
pub fn token_request(
    store: &Store,
    signer: &Signer,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let account = stored(store, "serviceaccounts", Some(namespace), name)?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let mut audiences = crate::apiserver::kinds::json::strings(&spec, "audiences");
    if audiences.is_empty() {
        audiences.push(jwt::ISSUER.to_string());
    }

    let now = jiff::Timestamp::now().as_second();
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": uid_of(&account)},
    });
    let bound = spec.get("boundObjectRef").filter(|b| b.is_object());
    if let Some(bound) = bound {
        let kind = bound
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bound_name = bound
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (plural, ns, claim) = match kind {
            "Pod" => ("pods", Some(namespace), "pod"),
            "Secret" => ("secrets", Some(namespace), "secret"),
            "Node" => ("nodes", None, "node"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for object of kind {other:?}; only Pod, Secret and Node are allowed"
                )));
            }
        };
        if bound_name.is_empty() {
            return Err(invalid(
                name,
                "spec.boundObjectRef.name",
                "Required value".into(),
            ));
        }
        let object = stored(store, plural, ns, bound_name)?
            .ok_or_else(|| ApiError::not_found("", plural, bound_name))?;
        let uid = uid_of(&object);
        if let Some(want) = bound
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                "",
                plural,
                bound_name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        private[claim] = json!({"name": bound_name, "uid": uid});
        if claim == "pod"
            && let Some(node) = object.pointer("/spec/nodeName").and_then(Value::as_str)
            && let Some(node_obj) = stored(store, "nodes", None, node)?
        {
            private["node"] = json!({"name": node, "uid": uid_of(&node_obj)});
        }
    }
    let claims = json!({
        "iss": jwt::ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": audiences,
        "iat": now,
        "nbf": now,
        "exp": now + expiration,
        "jti": super::object::new_uid(),
        "kubernetes.io": private,
    });
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    out_spec["boundObjectRef"] = bound.cloned().unwrap_or(Value::Null);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// Who a bearer token says the caller is, when it is one of ours and everything it is bound
/// to still exists. Err is the reason, for the log only.
pub fn authenticate(store: &Store, signer: &Signer, token: &str) -> Result<ClientIdentity, String> {
    let claims = signer.verify(token, jiff::Timestamp::now().as_second())?;
    let private = claims
        .get("kubernetes.io")
        .ok_or("no kubernetes.io claims")?;
    let namespace = private
        .get("namespace")
        .and_then(Value::as_str)
        .ok_or("no namespace claim")?;
    let account = private
        .pointer("/serviceaccount/name")
        .and_then(Value::as_str)
        .ok_or("no service account claim")?;
    let check = |plural: &str, ns: Option<&str>, claim: &Value| -> Result<(), String> {
        let name = claim
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let want = claim.get("uid").and_then(Value::as_str).unwrap_or_default();
        let obj = stored(store, plural, ns, name)
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("{plural} {name:?} has been deleted"))?;
        if uid_of(&obj) != want {
            return Err(format!(
                "{plural} {name:?} was recreated (uid {want} is gone)"
            ));
        }
        if plural != "serviceaccounts" && obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(format!("{plural} {name:?} is being deleted"));
        }
        Ok(())
    };
    check(
        "serviceaccounts",
        Some(namespace),
        private.get("serviceaccount").unwrap_or(&Value::Null),
    )?;
    if let Some(pod) = private.get("pod") {
        check("pods", Some(namespace), pod)?;
    }
    if let Some(secret) = private.get("secret") {
        check("secrets", Some(namespace), secret)?;
    }
    Ok(ClientIdentity {
        user: format!("system:serviceaccount:{namespace}:{account}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    })
}

/// Kubernetes' random-name alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The ServiceAccount admission plugin on a new pod (after `serviceAccountName` is defaulted):
/// unless the pod or its account opts out, every container mounts a projected volume with a
/// bound token, the cluster CA and the namespace.
/// A pod that names no image pull secrets gets its service account's, as the ServiceAccount
/// admission plugin gives them, so a registry secret attached to `default` serves every pod.
fn copy_pull_secrets(sa: Option<&Value>, pod: &mut Value) {
    let Some(secrets) = sa
        .and_then(|sa| sa.get("imagePullSecrets"))
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let has_own = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !has_own {
        let names: Vec<Value> = secrets
            .iter()
            .filter_map(|s| s.get("name"))
            .map(|name| json!({ "name": name }))
            .collect();
        spec.insert("imagePullSecrets".into(), Value::Array(names));
    }
}

pub fn mount_api_access(store: &Store, pod: &mut Value) -> Result<(), ApiError> {
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    if mirror {
        return Ok(());
    }
    let namespace = meta_str(pod, "namespace").unwrap_or("default").to_string();
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let sa = stored(store, "serviceaccounts", Some(&namespace), &account)?;
    copy_pull_secrets(sa.as_ref(), pod);
    let automount = match pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
    {
        Some(b) => b,
        None => sa
            .and_then(|sa| {
                sa.get("automountServiceAccountToken")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true),
    };
    if !automount {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(str::to_string)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = container.as_object_mut() else {
                continue;
            };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({
                "name": volume_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": POD_TOKEN_SECONDS, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
