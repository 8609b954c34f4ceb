//! Label selectors (equality- and set-based) and field selectors, as the list and watch
//! query parameters carry them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::resources::ResourceDef;
use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector term {term:?}"
                ))
            })?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|req| match req {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vals) => labels.get(k).is_some_and(|v| vals.contains(v)),
            // Kubernetes: `notin` and `!=` also match objects that lack the key.
            Requirement::NotIn(k, vals) => labels.get(k).is_none_or(|v| !vals.contains(v)),
        })
    }
}

/// Commas separate terms, except inside the parentheses of `in (a,b)`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_requirement(term: &str) -> Option<Requirement> {
    if let Some(key) = term.strip_prefix('!') {
        return valid_key(key.trim()).then(|| Requirement::NotExists(key.trim().to_string()));
    }
    if let Some((key, rest)) = split_word(term, " notin ") {
        return Some(Requirement::NotIn(key, parse_set(rest)?));
    }
    if let Some((key, rest)) = split_word(term, " in ") {
        return Some(Requirement::In(key, parse_set(rest)?));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = term.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            let vals = vec![value.to_string()];
            return Some(if negate {
                Requirement::NotIn(key.to_string(), vals)
            } else {
                Requirement::In(key.to_string(), vals)
            });
        }
    }
    valid_key(term).then(|| Requirement::Exists(term.to_string()))
}

fn split_word(term: &str, word: &str) -> Option<(String, String)> {
    let (key, rest) = term.split_once(word)?;
    let key = key.trim();
    valid_key(key).then(|| (key.to_string(), rest.trim().to_string()))
}

fn parse_set(text: String) -> Option<Vec<String>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    vals.iter().all(|v| valid_value(v)).then_some(vals)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(Vec<&'static str>, String, bool)>);

impl FieldSelector {
    /// Only the fields the resource supports are accepted: an unknown one is a 400, as in Kubernetes.
    pub fn parse(text: &str, def: &ResourceDef) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term:?}"
                )));
            };
            let field = field.trim();
            let path: Vec<&'static str> = match field {
                "metadata.name" => vec!["metadata", "name"],
                "metadata.namespace" => vec!["metadata", "namespace"],
                _ => match def.fields.iter().find(|(label, _)| *label == field) {
                    Some((_, path)) => path.to_vec(),
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                },
            };
            terms.push((path, value.trim().to_string(), negate));
        }
        Ok(FieldSelector(terms))
    }

    /// Selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, want, negate)| {
            let mut cur = object;
            for seg in path {
                cur = cur.get(*seg).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (actual == *want) != *negate
        })
    }
}

pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = [
            "app=web",
            "app==web",
            "app",
            "!db",
            "tier in (front,back)",
            "app notin (db)",
            "app!=db",
            "db!=x",
            "app=web,tier=front",
            "",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "!app",
            "tier in (back)",
            "tier notin (front)",
            "app!=web",
            "db",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should not match"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_check_supported_fields() {
        let def = super::super::resources::find("", "v1", "pods").unwrap();
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            def,
        )
        .unwrap();
        assert!(sel.matches(&pod));
        assert!(
            !FieldSelector::parse("metadata.name=q", def)
                .unwrap()
                .matches(&pod)
        );
        assert_eq!(
            FieldSelector::parse("spec.bogus=1", def).unwrap_err().code,
            400
        );
    }
}

/// Whether `labels` satisfy a `metav1.LabelSelector` object (matchLabels and matchExpressions).
/// An empty selector matches everything, as in Kubernetes.
pub fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    match label_selector_to_string(selector) {
        Some(text) => LabelSelector::parse(&text).is_ok_and(|s| s.matches(labels)),
        None => false,
    }
}

/// A `metav1.LabelSelector` object (or a plain map, as ReplicationControllers use) in the string
/// form of label selectors; None when it holds an operator Kubernetes does not know.
pub fn label_selector_to_string(selector: &Value) -> Option<String> {
    let mut terms = Vec::new();
    let match_labels = selector.get("matchLabels").or_else(|| {
        // A ReplicationController's selector is a bare map.
        (selector.get("matchExpressions").is_none()).then_some(selector)
    });
    if let Some(map) = match_labels.and_then(Value::as_object) {
        for (k, v) in map {
            terms.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match expr.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => return None,
        });
    }
    Some(terms.join(","))
}

#[cfg(test)]
mod label_selector_object_tests {
    use super::*;

    #[test]
    fn selector_objects_match_and_print() {
        let sel = serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(
            label_selector_to_string(&sel).unwrap(),
            "app=web,tier in (a,b),!canary"
        );
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(label_selector_matches(&sel, &labels));
        assert!(label_selector_matches(&serde_json::json!({}), &labels));
        assert!(label_selector_matches(
            &serde_json::json!({"app": "web"}),
            &labels
        ));
        assert!(!label_selector_matches(
            &serde_json::json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]}),
            &labels
        ));
    }
}
