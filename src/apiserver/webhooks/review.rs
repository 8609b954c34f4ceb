//! AdmissionReview v1: the request a webhook gets and what its answer may say, checked as
//! kube-apiserver checks it (`VerifyAdmissionResponse`), with its error texts.

use base64::Engine;
use serde_json::{Value, json};

/// What a webhook answered, once checked.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    /// The denial's Status (code, reason, message, details), as the webhook wrote it.
    pub status: Option<Value>,
    /// A JSONPatch (RFC 6902) for a mutating webhook.
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
}

/// Checks `body` as the answer to the review with `uid`. Errors are the reason kube-apiserver
/// gives for a webhook it could not use.
pub fn parse_answer(body: &[u8], uid: &str, mutating: bool) -> Result<Answer, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        format!("failed to call webhook: couldn't get version/kind; json parse error: {e}")
    })?;
    let invalid = |why: String| format!("received invalid webhook response: {why}");
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = review
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if (api_version, kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        return Err(invalid(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {group}/{version}, Kind={kind}"
        )));
    }
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err(invalid("webhook response was absent".into()));
    };
    let got_uid = response
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got_uid != uid {
        return Err(invalid(format!(
            "expected response.uid={uid:?}, got {got_uid:?}"
        )));
    }
    let patch_type = response.get("patchType").and_then(Value::as_str);
    let patch = response.get("patch").and_then(Value::as_str);
    let patch = match (patch_type, patch) {
        (None, None) => None,
        _ if !mutating => {
            return Err(invalid(
                "validating webhook may not return response.patch or response.patchType".into(),
            ));
        }
        (Some(_), None) => {
            return Err(invalid(
                "webhook returned response.patchType but not response.patch".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "webhook returned response.patch but not response.patchType".into(),
            ));
        }
        (Some("JSONPatch"), Some(encoded)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| invalid(format!("response.patch is not base64: {e}")))?;
            let ops: json_patch::Patch = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("response.patch is not a JSON patch: {e}")))?;
            Some(ops)
        }
        (Some(other), Some(_)) => {
            return Err(invalid(format!(
                "webhook returned invalid response.patchType of {other:?}"
            )));
        }
    };
    let allowed = response
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Answer {
        allowed,
        status: response.get("status").filter(|s| s.is_object()).cloned(),
        patch,
        warnings: response
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A denial as kube-apiserver reports it (`webhookerrors.ToStatusErr`): the webhook's code
/// (at least 400), reason and details, its message after `admission webhook "x" denied the
/// request`.
pub fn denial(webhook: &str, status: Option<&Value>) -> (u16, String, String, Option<Value>) {
    let empty = json!({});
    let status = status.unwrap_or(&empty);
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .unwrap_or(400) as u16;
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let denied = format!("admission webhook {webhook:?} denied the request");
    let message = if !message.is_empty() {
        format!("{denied}: {message}")
    } else if !reason.is_empty() {
        format!("{denied}: {reason}")
    } else {
        format!("{denied} without explanation")
    };
    (
        code,
        reason,
        message,
        status.get("details").filter(|d| d.is_object()).cloned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(response: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }))
        .unwrap()
    }

    #[test]
    fn a_json_patch_answer_decodes_to_operations() {
        let ops = json!([{"op": "add", "path": "/metadata/labels", "value": {"added": "yes"}}]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
        let got = parse_answer(
            &answer(json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch", "patch": encoded, "warnings": ["careful"]})),
            "u1",
            true,
        )
        .unwrap();
        assert!(got.allowed);
        assert_eq!(got.warnings, vec!["careful".to_string()]);
        let mut obj = json!({"metadata": {"name": "a"}});
        json_patch::patch(&mut obj, &got.patch.unwrap()).unwrap();
        assert_eq!(obj["metadata"]["labels"]["added"], "yes");
    }

    #[test]
    fn bad_answers_are_refused_with_kubernetes_reasons() {
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (
                b"garbage".to_vec(),
                true,
                "failed to call webhook: couldn't get version/kind; json parse error",
            ),
            (
                serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Status"})).unwrap(),
                true,
                "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got /v1, Kind=Status",
            ),
            (
                serde_json::to_vec(
                    &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
                )
                .unwrap(),
                true,
                "received invalid webhook response: webhook response was absent",
            ),
            (
                answer(json!({"uid": "other", "allowed": true})),
                true,
                "received invalid webhook response: expected response.uid=\"u1\", got \"other\"",
            ),
            (
                answer(json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch"})),
                true,
                "received invalid webhook response: webhook returned response.patchType but not response.patch",
            ),
            (
                answer(
                    json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch", "patch": "W10="}),
                ),
                false,
                "received invalid webhook response: validating webhook may not return",
            ),
            (
                answer(
                    json!({"uid": "u1", "allowed": true, "patchType": "Merge", "patch": "W10="}),
                ),
                true,
                "received invalid webhook response: webhook returned invalid response.patchType of \"Merge\"",
            ),
        ];
        for (body, mutating, want) in cases {
            let got = parse_answer(&body, "u1", mutating).unwrap_err();
            assert!(got.starts_with(want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn denials_keep_the_webhooks_status_in_kubernetes_words() {
        let status = json!({"code": 403, "reason": "Forbidden", "message": "name is reserved"});
        let (code, reason, message, _) = denial("deny.example.com", Some(&status));
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            message,
            "admission webhook \"deny.example.com\" denied the request: name is reserved"
        );
        let (code, _, message, _) = denial("deny.example.com", None);
        assert_eq!(code, 400);
        assert_eq!(
            message,
            "admission webhook \"deny.example.com\" denied the request without explanation"
        );
    }
}
