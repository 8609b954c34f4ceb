//! API errors as Kubernetes `Status` objects, with the reasons and codes kubectl knows.

use serde_json::{Value, json};

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `kind` is the resource's plural for group-qualified messages, as Kubernetes prints them: `nodes "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 422 with one cause per invalid field, printed by kubectl as a bullet list.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|(field, msg)| format!("{field}: {msg}"))
            .collect();
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
            .collect();
        let group_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{group_kind} \"{name}\" is invalid: {}", summary.join(", ")),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 422 for bad request options (`PatchOptions.meta.k8s.io "" is invalid: fieldManager: …`).
    pub fn options_invalid(kind: &str, field: &str, reason: &str, message: String) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {message}"),
        )
        .with_details(json!({"group": "meta.k8s.io", "kind": kind,
            "causes": [{"reason": reason, "message": message, "field": field}]}))
    }

    /// 409 for server-side apply conflicts: the details carry only the causes, one per field.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; this server was sent {content_type:?}"
            ),
        )
    }

    /// A patch type the resource does not take (strategic merge on a custom resource).
    pub fn unsupported_patch_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn request_entity_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn too_many_requests(message: impl Into<String>, details: Value) -> Self {
        Self::new(429, "TooManyRequests", message).with_details(details)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// An error kube-apiserver got as a plain Go error: no reason, only the code and message.
    pub fn unknown(code: u16, message: impl Into<String>) -> Self {
        Self::new(code, "", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            map.remove("reason");
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    /// The Status as kube-apiserver writes it: fields in Go's struct order, empty optional
    /// fields left out, a newline at the end. Clients compare these bodies as text (the Python
    /// client's `create_from_yaml` reports them verbatim).
    pub fn encode_status(&self) -> Vec<u8> {
        let mut out =
            String::from(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure""#);
        if !self.message.is_empty() {
            push_field(&mut out, "message", &Value::from(self.message.as_str()));
        }
        if !self.reason.is_empty() {
            push_field(&mut out, "reason", &Value::from(self.reason));
        }
        if let Some(details) = self.details.as_ref().and_then(Value::as_object) {
            out.push_str(r#","details":{"#);
            let mut first = true;
            for key in ["name", "group", "kind", "uid"] {
                if let Some(v) = details.get(key).filter(|v| !is_empty(v)) {
                    push_entry(&mut out, &mut first, key, v);
                }
            }
            if let Some(causes) = details
                .get("causes")
                .and_then(Value::as_array)
                .filter(|c| !c.is_empty())
            {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(r#""causes":["#);
                for (i, cause) in causes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('{');
                    let mut first_in_cause = true;
                    for key in ["reason", "message", "field"] {
                        if let Some(v) = cause.get(key).filter(|v| !is_empty(v)) {
                            push_entry(&mut out, &mut first_in_cause, key, v);
                        }
                    }
                    out.push('}');
                }
                out.push(']');
            }
            if let Some(v) = details.get("retryAfterSeconds").filter(|v| !is_empty(v)) {
                push_entry(&mut out, &mut first, "retryAfterSeconds", v);
            }
            out.push('}');
        }
        push_field(&mut out, "code", &Value::from(self.code));
        out.push_str("}\n");
        out.into_bytes()
    }

    pub fn from_store(err: StoreError, group: &str, plural: &str, name: &str) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::not_found(group, plural, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(group, plural, name),
            StoreError::Conflict { .. } => Self::conflict(
                group,
                plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            StoreError::Compacted {
                requested,
                compacted,
            } => Self::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::FutureRevision { requested, current } => Self::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            StoreError::Backend(msg) => Self::internal(msg),
            StoreError::LeaseNotFound { .. } => Self::internal(err.to_string()),
        }
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// Go's `omitempty`: empty strings, zero numbers and nulls are not written.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn push_field(out: &mut String, key: &str, v: &Value) {
    out.push(',');
    out.push_str(&Value::from(key).to_string());
    out.push(':');
    out.push_str(&v.to_string());
}

fn push_entry(out: &mut String, first: &mut bool, key: &str, v: &Value) {
    if !*first {
        out.push(',');
    }
    *first = false;
    out.push_str(&Value::from(key).to_string());
    out.push(':');
    out.push_str(&v.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_encode_as_kube_apiserver_writes_them() {
        assert_eq!(
            String::from_utf8(ApiError::already_exists("", "services", "mock-2").encode_status())
                .unwrap(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"services \"mock-2\" already exists","reason":"AlreadyExists","#,
                r#""details":{"name":"mock-2","kind":"services"},"code":409}"#,
                "\n"
            )
        );
        let apps = ApiError::already_exists("apps", "deployments", "nginx").encode_status();
        assert!(String::from_utf8(apps).unwrap().contains(
            r#""details":{"name":"nginx","group":"apps","kind":"deployments"},"code":409}"#
        ));
        let invalid = ApiError::invalid(
            "",
            "Pod",
            "p",
            vec![("spec.containers".into(), "Required value".into())],
        )
        .encode_status();
        let text = String::from_utf8(invalid).unwrap();
        assert!(
            text.contains(r#""causes":[{"reason":"FieldValueInvalid","message":"Required value","field":"spec.containers"}]},"code":422}"#),
            "{text}"
        );
        let plain = String::from_utf8(ApiError::bad_request("nope").encode_status()).unwrap();
        assert!(
            plain.ends_with("\"message\":\"nope\",\"reason\":\"BadRequest\",\"code\":400}\n"),
            "{plain}"
        );
        let decoded: Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(decoded, ApiError::bad_request("nope").to_status());
    }
}
