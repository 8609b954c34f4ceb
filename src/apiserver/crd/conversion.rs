//! Webhook conversion (`spec.conversion.strategy: Webhook`): objects of one version are sent in
//! a ConversionReview to the definition's webhook and come back in another, checked as
//! kube-apiserver's webhook converter checks them and with its error texts. Only labels and
//! annotations of what comes back are kept; the rest of metadata is restored from the original.

use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::debug;

use crate::apiserver::kinds::field::{Errors, Path};
use crate::apiserver::kinds::json as j;
use crate::apiserver::kinds::meta;
use crate::apiserver::status::ApiError;
use crate::apiserver::webhooks::client;
use crate::store::Store;

/// kube-apiserver gives a conversion webhook 30 seconds.
const TIMEOUT_SECONDS: u64 = 30;

/// The ConversionReview versions this server speaks, most preferred first.
pub const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// A definition's conversion webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `spec.conversion.webhook.clientConfig`: url, or service plus caBundle.
    pub client_config: Value,
    /// The ConversionReview version sent: the first of ours the definition lists.
    pub review_version: &'static str,
}

impl Webhook {
    /// The webhook of a definition whose conversion strategy is Webhook.
    pub fn of(crd_spec: &Value) -> Option<Webhook> {
        let conversion = j::at(crd_spec, "conversion");
        if j::str_at(conversion, "strategy") != Some("Webhook") {
            return None;
        }
        let webhook = j::at(conversion, "webhook");
        let listed: Vec<&str> = j::items(webhook, "conversionReviewVersions")
            .filter_map(Value::as_str)
            .collect();
        let review_version = REVIEW_VERSIONS
            .iter()
            .copied()
            .find(|v| listed.contains(v))
            .unwrap_or("v1");
        Some(Webhook {
            client_config: j::at(webhook, "clientConfig").clone(),
            review_version,
        })
    }
}

/// Connections kept open to conversion webhooks, shared by every definition.
static POOL: LazyLock<client::Pool> = LazyLock::new(client::Pool::default);

/// `group/version, Kind=kind` as Go prints a GroupVersionKind.
fn gvk(obj: &Value) -> String {
    format!(
        "{}, Kind={}",
        j::str_or(obj, "apiVersion"),
        j::str_or(obj, "kind")
    )
}

/// Errors that are not Status errors reach clients as a 500 without a reason.
fn failure(message: String) -> ApiError {
    ApiError::unknown(500, message)
}

/// Converts `objects` to `desired` (`group/version`). `whole` is what kube-apiserver converts
/// (an object, or the list holding `objects`); its kind names the conversion in errors. Objects
/// already at `desired` are not sent; a list goes in one review.
pub async fn convert(
    store: &Store,
    hook: &Webhook,
    whole: &Value,
    mut objects: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let is_list = whole.get("items").is_some();
    let send: Vec<usize> = (0..objects.len())
        .filter(|&i| j::str_at(&objects[i], "apiVersion") != Some(desired))
        .collect();
    if send.is_empty() {
        return Ok(objects);
    }
    let name = gvk(whole);
    let failed = |why: String| failure(format!("conversion webhook for {name} failed: {why}"));
    let uid = uuid::Uuid::new_v4().to_string();
    let review_api = format!("apiextensions.k8s.io/{}", hook.review_version);
    let body = json!({
        "kind": "ConversionReview",
        "apiVersion": review_api,
        "request": {
            "uid": uid,
            "desiredAPIVersion": desired,
            "objects": send.iter().map(|&i| &objects[i]).collect::<Vec<_>>(),
        },
    });
    let endpoint =
        client::endpoint(store, &hook.client_config, TIMEOUT_SECONDS).map_err(&failed)?;
    let ca = hook.client_config.get("caBundle").and_then(Value::as_str);
    let tls =
        client::tls_config(ca).map_err(|e| failed(format!("Post {:?}: {e}", endpoint.url)))?;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(TIMEOUT_SECONDS),
        client::post(
            &POOL,
            tls,
            &endpoint,
            serde_json::to_vec(&body).unwrap_or_default(),
        ),
    )
    .await;
    debug!(
        webhook = %endpoint.url,
        objects = send.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "conversion webhook called"
    );
    let bytes = match answer {
        Err(_) => {
            return Err(failed(format!(
                "Post {:?}: context deadline exceeded",
                endpoint.url
            )));
        }
        Ok(result) => result.map_err(&failed)?,
    };
    let converted = converted_objects(&bytes, &review_api, &uid).map_err(|e| match e {
        Answer::Failed(why) => failed(why),
        Answer::Invalid(why) => failure(format!(
            "conversion webhook for {name} returned invalid response: {why}"
        )),
    })?;
    if converted.len() != send.len() {
        return Err(failure(format!(
            "conversion webhook for {name} returned {} objects, expected {}",
            converted.len(),
            send.len()
        )));
    }
    for (index, (slot, out)) in send.into_iter().zip(converted).enumerate() {
        let original = &objects[slot];
        let (what, at) = if is_list {
            (
                format!("returned invalid converted object at index {}", index + 1),
                format!("returned invalid metadata in object at index {}", index + 1),
            )
        } else {
            (
                "returned invalid object".to_string(),
                "returned invalid metadata".to_string(),
            )
        };
        let bad = |what: &str, why: String| {
            failure(format!("conversion webhook for {name} {what}: {why}"))
        };
        if !out.is_object() {
            let what = if is_list {
                format!("returned invalid converted object at index {index}")
            } else {
                "returned invalid object".to_string()
            };
            return Err(bad(&what, "Object 'Kind' is missing".into()));
        }
        let got = j::str_or(&out, "apiVersion");
        if got != desired {
            return Err(bad(
                &what,
                format!("invalid groupVersion (expected {desired}, received {got})"),
            ));
        }
        let (want_kind, got_kind) = (j::str_or(original, "kind"), j::str_or(&out, "kind"));
        if want_kind != got_kind {
            return Err(bad(
                &what,
                format!("invalid kind (expected {want_kind}, received {got_kind})"),
            ));
        }
        same_identity(original, &out).map_err(|why| bad(&what, why))?;
        let restored = restore_metadata(original, out).map_err(|why| bad(&at, why))?;
        objects[slot] = restored;
    }
    Ok(objects)
}

enum Answer {
    /// The answer could not be read, or the webhook said the conversion failed.
    Failed(String),
    /// The answer was read but breaks the protocol.
    Invalid(String),
}

/// The `convertedObjects` of a successful answer to the review `uid`.
fn converted_objects(body: &[u8], review_api: &str, uid: &str) -> Result<Vec<Value>, Answer> {
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| Answer::Failed(format!("couldn't get version/kind; json parse error: {e}")))?;
    let (api, kind) = (j::str_or(&review, "apiVersion"), j::str_or(&review, "kind"));
    if (api, kind) != (review_api, "ConversionReview") {
        return Err(Answer::Failed(format!(
            "expected webhook response of {review_api}, Kind=ConversionReview, got {api}, Kind={kind}"
        )));
    }
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err(Answer::Invalid("no response provided".into()));
    };
    let got_uid = j::str_or(response, "uid");
    if got_uid != uid {
        return Err(Answer::Invalid(format!(
            "expected response.uid={uid:?}, got {got_uid:?}"
        )));
    }
    let result = j::at(response, "result");
    let status = j::str_or(result, "status");
    if status != "Success" {
        // kube-apiserver passes the webhook's own message on as the reason.
        return Err(Answer::Failed(match j::str_or(result, "message") {
            "" => format!("response.result.status was '{status}', not 'Success'"),
            message => message.to_string(),
        }));
    }
    Ok(j::items(response, "convertedObjects").cloned().collect())
}

/// A converted object is the same object: kind, name, namespace and uid unchanged.
fn same_identity(original: &Value, converted: &Value) -> Result<(), String> {
    if j::str_or(original, "kind") != j::str_or(converted, "kind") {
        return Err(format!(
            "must have the same kind: {} != {}",
            j::str_or(original, "kind"),
            j::str_or(converted, "kind")
        ));
    }
    for (key, word) in [("name", "name"), ("namespace", "namespace"), ("uid", "UID")] {
        let a = j::str_or(j::at(original, "metadata"), key);
        let b = j::str_or(j::at(converted, "metadata"), key);
        if a != b {
            return Err(format!("must have the same {word}: {a} != {b}"));
        }
    }
    Ok(())
}

/// The original's metadata with the converted object's labels and annotations, which must be
/// valid; every other metadata change a webhook makes is dropped, as kube-apiserver drops it.
fn restore_metadata(original: &Value, mut converted: Value) -> Result<Value, String> {
    let answered = match converted.get("metadata") {
        None => return Err("missing metadata in converted object".into()),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "invalid metadata of type {} in converted object",
                crate::apiserver::schema::go_type(other)
            ));
        }
    };
    let mut metadata = original
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for field in ["labels", "annotations"] {
        let answer = match answered.get(field) {
            None | Some(Value::Null) => {
                metadata.remove(field);
                continue;
            }
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(format!(
                    "invalid metadata.{field} of type {} in converted object",
                    crate::apiserver::schema::go_type(other)
                ));
            }
        };
        if let Some((k, v)) = answer.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!(
                "metadata.{field}[{k}] must be a string, but is {} in converted object",
                crate::apiserver::schema::go_type(v)
            ));
        }
        let before = metadata.get(field).and_then(Value::as_object);
        if before != Some(answer) {
            let mut errs = Errors::new();
            let value = Value::Object(answer.clone());
            if field == "labels" {
                meta::validate_labels(
                    Some(&value),
                    &Path::root("metadata").child("labels"),
                    &mut errs,
                );
            } else {
                // kube-apiserver names this path in the singular.
                meta::validate_annotations(
                    Some(&value),
                    &Path::root("metadata").child("annotation"),
                    &mut errs,
                );
            }
            if !errs.is_empty() {
                let messages: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
                return Err(if messages.len() == 1 {
                    messages.join("")
                } else {
                    format!("[{}]", messages.join(", "))
                });
            }
        }
        metadata.insert(field.to_string(), Value::Object(answer.clone()));
    }
    converted["metadata"] = Value::Object(metadata);
    Ok(converted)
}

/// The objects of `list` (a `…List`) converted to `desired` in one review, and the list's
/// apiVersion set to it.
pub async fn convert_list(
    store: &Store,
    hook: &Webhook,
    mut list: Value,
    desired: &str,
) -> Result<Value, ApiError> {
    let items: Vec<Value> = match list.get_mut("items").and_then(Value::as_array_mut) {
        Some(items) => std::mem::take(items),
        None => Vec::new(),
    };
    let converted = convert(store, hook, &list, items, desired).await?;
    list["items"] = Value::Array(converted);
    list["apiVersion"] = json!(desired);
    Ok(list)
}

/// One object converted to `desired`.
pub async fn convert_one(
    store: &Store,
    hook: &Webhook,
    obj: Value,
    desired: &str,
) -> Result<Value, ApiError> {
    let whole = obj.clone();
    let mut out = convert(store, hook, &whole, vec![obj], desired).await?;
    out.pop().ok_or_else(|| {
        failure(format!(
            "conversion webhook for {} failed, no objects returned",
            gvk(&whole)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labels_and_annotations_come_back_from_a_webhook() {
        let original = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n",
            "uid": "u", "labels": {"a": "1"}, "resourceVersion": "5"}, "spec": {"x": 1}});
        let converted = json!({"apiVersion": "a/v2", "kind": "K", "metadata": {"name": "n",
            "uid": "u", "labels": {"a": "1", "b": "2"}, "resourceVersion": "99",
            "generation": 7}, "spec": {"y": 1}});
        let out = restore_metadata(&original, converted).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["metadata"]["resourceVersion"], "5");
        assert!(out["metadata"].get("generation").is_none());
        assert_eq!(out["spec"], json!({"y": 1}));

        let bad = json!({"metadata": {"labels": {"a": 1}}});
        assert_eq!(
            restore_metadata(&original, bad).unwrap_err(),
            "metadata.labels[a] must be a string, but is int64 in converted object"
        );
        let renamed = json!({"kind": "K", "metadata": {"name": "m", "uid": "u"}});
        assert_eq!(
            same_identity(&original, &renamed).unwrap_err(),
            "must have the same name: n != m"
        );
    }

    #[test]
    fn answers_are_checked_as_kube_apiserver_checks_them() {
        let api = "apiextensions.k8s.io/v1";
        let ok = json!({"apiVersion": api, "kind": "ConversionReview", "response": {"uid": "x",
            "result": {"status": "Success"}, "convertedObjects": [{"kind": "K"}]}});
        let got = converted_objects(&serde_json::to_vec(&ok).unwrap(), api, "x");
        assert!(matches!(got, Ok(v) if v.len() == 1));
        let wrong_uid = converted_objects(&serde_json::to_vec(&ok).unwrap(), api, "y");
        assert!(
            matches!(wrong_uid, Err(Answer::Invalid(m)) if m == "expected response.uid=\"y\", got \"x\"")
        );
        let refused = json!({"apiVersion": api, "kind": "ConversionReview", "response": {"uid": "x",
            "result": {"status": "Failure", "message": "no way"}}});
        let got = converted_objects(&serde_json::to_vec(&refused).unwrap(), api, "x");
        assert!(matches!(got, Err(Answer::Failed(m)) if m == "no way"));
    }
}
