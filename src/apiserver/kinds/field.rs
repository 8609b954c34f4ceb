//! Field errors as Kubernetes' `field.Error` prints them, and their 422 Invalid Status.
//!
//! kubectl prints a 422's `details.causes` as a bullet list and users paste the messages into
//! searches, so the wording follows Kubernetes exactly: `<path>: <Type>: <value>: <detail>`.

use serde_json::{Value, json};

use super::super::resources::ResourceDef;
use super::super::status::ApiError;

/// A path into an object, printed as `spec.containers[0].name` or `data[key]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root(name: &str) -> Self {
        Path(name.to_string())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{k}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A value shown in a message the way Go's `%v`/`%q`/`%#v` would show it.
#[derive(Debug, Clone)]
pub enum Bad {
    /// Omitted: the message has no value part (`Required value`, `Forbidden`).
    None,
    Str(String),
    Int(i64),
    Bool(bool),
    /// Already formatted as Go would (`[]string{"a"}`, `map[string]string{...}`).
    Raw(String),
}

impl Bad {
    pub fn str(s: &str) -> Self {
        Bad::Str(s.to_string())
    }

    /// A JSON value shown as Go shows the typed field it came from.
    pub fn json(v: &Value) -> Self {
        match v {
            Value::String(s) => Bad::Str(s.clone()),
            Value::Bool(b) => Bad::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Bad::Int(i),
                None => Bad::Raw(n.to_string()),
            },
            Value::Null => Bad::Raw("null".into()),
            other => Bad::Raw(other.to_string()),
        }
    }

    fn render(&self) -> Option<String> {
        match self {
            Bad::None => None,
            Bad::Str(s) => Some(go_quote(s)),
            Bad::Int(i) => Some(i.to_string()),
            Bad::Bool(b) => Some(b.to_string()),
            Bad::Raw(s) => Some(s.clone()),
        }
    }
}

/// Go's `%q`: a double-quoted string with Go escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `[]string`.
pub fn go_string_slice(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", parts.join(", "))
}

/// Go's `%#v` of a `map[string]string` (Go prints maps with sorted keys).
pub fn go_string_map(map: Option<&serde_json::Map<String, Value>>) -> String {
    let Some(map) = map else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, String)> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl ErrorType {
    fn text(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    pub value: Bad,
    pub detail: String,
}

impl FieldError {
    /// The part after `field: `, as Kubernetes' ErrorBody.
    pub fn body(&self) -> String {
        let mut s = self.kind.text().to_string();
        let shows_value = !matches!(
            self.kind,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::TooMany
        );
        if shows_value && let Some(v) = self.value.render() {
            s = format!("{s}: {v}");
        }
        if !self.detail.is_empty() {
            s = format!("{s}: {}", self.detail);
        }
        s
    }

    pub fn message(&self) -> String {
        if self.field.is_empty() {
            self.body()
        } else {
            format!("{}: {}", self.field, self.body())
        }
    }
}

/// Errors collected while validating one object.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn new() -> Self {
        Errors(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, kind: ErrorType, path: &Path, value: Bad, detail: impl Into<String>) {
        self.0.push(FieldError {
            kind,
            field: path.as_str().to_string(),
            value,
            detail: detail.into(),
        });
    }

    pub fn required(&mut self, path: &Path, detail: impl Into<String>) {
        self.push(ErrorType::Required, path, Bad::None, detail);
    }

    pub fn invalid(&mut self, path: &Path, value: Bad, detail: impl Into<String>) {
        self.push(ErrorType::Invalid, path, value, detail);
    }

    pub fn duplicate(&mut self, path: &Path, value: Bad) {
        self.push(ErrorType::Duplicate, path, value, "");
    }

    pub fn not_found(&mut self, path: &Path, value: Bad) {
        self.push(ErrorType::NotFound, path, value, "");
    }

    pub fn forbidden(&mut self, path: &Path, detail: impl Into<String>) {
        self.push(ErrorType::Forbidden, path, Bad::None, detail);
    }

    pub fn too_long(&mut self, path: &Path, max: usize) {
        self.push(
            ErrorType::TooLong,
            path,
            Bad::None,
            format!("must have at most {max} bytes"),
        );
    }

    pub fn too_many(&mut self, path: &Path, actual: usize, max: usize) {
        let _ = actual;
        self.push(
            ErrorType::TooMany,
            path,
            Bad::None,
            format!("must have at most {max} items"),
        );
    }

    /// `Unsupported value: "X": supported values: "A", "B"`.
    pub fn not_supported(&mut self, path: &Path, value: &str, allowed: &[&str]) {
        let list: Vec<String> = allowed.iter().map(|a| go_quote(a)).collect();
        self.push(
            ErrorType::NotSupported,
            path,
            Bad::str(value),
            format!("supported values: {}", list.join(", ")),
        );
    }

    /// Checks an optional string field against an enum.
    pub fn check_enum(&mut self, obj: &Value, key: &str, path: &Path, allowed: &[&str]) {
        if let Some(v) = obj.get(key).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            self.not_supported(&path.child(key), v, allowed);
        }
    }

    /// The 422 Kubernetes answers: `<Kind> "<name>" is invalid: <errors>`, one error bare,
    /// several in brackets, each also a cause kubectl lists.
    pub fn into_api_error(self, def: &ResourceDef, name: &str) -> ApiError {
        invalid_error(def.group, def.kind, name, &self.0)
    }

    pub fn into_result(self, def: &ResourceDef, name: &str) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into_api_error(def, name))
        }
    }
}

pub fn invalid_error(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
    let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
    let summary = if messages.len() == 1 {
        messages[0].clone()
    } else {
        format!("[{}]", messages.join(", "))
    };
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("{group_kind} {} is invalid: {summary}", go_quote(name)),
        details: Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_kubernetes() {
        let mut errs = Errors::new();
        let spec = Path::root("spec");
        errs.required(&spec.child("containers").index(0).child("image"), "");
        errs.not_supported(
            &spec.child("restartPolicy"),
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        );
        errs.invalid(
            &spec.child("replicas"),
            Bad::Int(-1),
            "must be greater than or equal to 0",
        );
        let m: Vec<String> = errs.0.iter().map(FieldError::message).collect();
        assert_eq!(m[0], "spec.containers[0].image: Required value");
        assert_eq!(
            m[1],
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            m[2],
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let err = invalid_error("apps", "Deployment", "web", &errs.0);
        assert!(
            err.message
                .starts_with("Deployment.apps \"web\" is invalid: [spec.containers[0].image")
        );
        assert_eq!(
            err.details.unwrap()["causes"][1]["reason"],
            "FieldValueNotSupported"
        );
    }

    #[test]
    fn go_formats() {
        assert_eq!(
            go_string_slice(&["10.96.0.5".to_string()]),
            "[]string{\"10.96.0.5\"}"
        );
        let m = json!({"b": "2", "a": "1"});
        assert_eq!(
            go_string_map(m.as_object()),
            "map[string]string{\"a\":\"1\", \"b\":\"2\"}"
        );
    }
}
