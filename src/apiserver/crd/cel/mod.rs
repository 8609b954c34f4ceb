//! `x-kubernetes-validations`: CEL rules on a custom resource's schema nodes, evaluated with the
//! `cel` crate (standard library plus its strings, lists and math extensions, which Kubernetes'
//! environment also has) and Kubernetes' own libraries, one file each: [`lists`] (`isSorted`,
//! `sum`, `min`, `indexOf`...), [`regex`] (`find`, `findAll`), [`url`], [`quantity`],
//! [`format`], [`ip`] and [`cidr`]. `self` is the node's value; a rule that mentions `oldSelf`
//! is a transition rule, evaluated only on updates, against the node's previous value.

mod cidr;
mod format;
mod ip;
mod lists;
mod quantity;
mod regex;
mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::value::CowVal;
use cel::{Context, DeclarationError, Env, ExecutionError, Program};
use serde_json::Value;

use crate::apiserver::kinds::field::{Bad, ErrorType, Errors, Path};

type Library = fn(&mut Env) -> Result<(), DeclarationError>;

/// Every library the environment has, by name (for the log, should one fail to register).
const LIBRARIES: [(&str, Library); 10] = [
    ("strings", cel::extensions::strings),
    ("lists", cel::extensions::lists),
    ("math", cel::extensions::math),
    ("kubernetes.lists", lists::library),
    ("kubernetes.regex", regex::library),
    ("kubernetes.urls", url::library),
    ("kubernetes.quantity", quantity::library),
    ("format", format::library),
    ("kubernetes.net.ip", ip::library),
    ("net.cidr", cidr::library),
];

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        for (name, library) in LIBRARIES {
            if let Err(e) = env.add_extension(library) {
                tracing::warn!(extension = name, error = ?e, "CEL extension unavailable");
            }
        }
        Arc::new(env)
    })
    .clone()
}

/// `args` as the `N` arguments an overload was declared with.
fn take<'b, 'v, const N: usize>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<[CowVal<'b, 'v>; N], ExecutionError> {
    args.try_into()
        .map_err(|args: Vec<_>| ExecutionError::invalid_argument_count(N, args.len()))
}

/// An error of one of Kubernetes' functions: its text is what Kubernetes reports.
fn fail(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

/// Go's `strconv.Quote`, for the strings its errors quote.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What an evaluation error says: a function's own message as Kubernetes words it (cel-go
/// does not name the function), the interpreter's description otherwise.
fn error_text(e: ExecutionError) -> String {
    match e {
        ExecutionError::FunctionError { message, .. } => message,
        // cel-go's wording leads, so that the error is reported as Kubernetes reports it.
        ExecutionError::NoSuchOverload(o) => format!("no such overload: {o}"),
        other => other.to_string(),
    }
}

type Compiled = Result<Arc<Program>, String>;

/// Rules are compiled once per text: every object of a kind runs the same few.
pub fn compile(rule: &str) -> Compiled {
    static CACHE: Mutex<Option<HashMap<String, Compiled>>> = Mutex::new(None);
    let mut guard = match CACHE.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(c) = cache.get(rule) {
        return c.clone();
    }
    let compiled = env()
        .compile(rule)
        .map(Arc::new)
        .map_err(|e| e.to_string().trim().to_string());
    cache.insert(rule.to_string(), compiled.clone());
    compiled
}

fn is_transition(rule: &str) -> bool {
    rule.contains("oldSelf")
}

enum Outcome {
    Pass,
    Fail,
    /// The rule cannot be run, or gave no bool.
    Error(String),
    /// Running the rule failed (`min` of an empty list, an invalid URL...).
    EvalError(String),
}

fn run(program: &Program, value: &Value, old: Option<&Value>) -> Result<cel::Value, String> {
    let mut ctx = Context::with_env(env());
    ctx.add_variable("self", value.clone())
        .map_err(|e| format!("cannot bind self: {e}"))?;
    if let Some(old) = old {
        ctx.add_variable("oldSelf", old.clone())
            .map_err(|e| format!("cannot bind oldSelf: {e}"))?;
    }
    program.execute(&ctx).map_err(error_text)
}

/// Runs `program` with the named variables bound: the admission webhooks' match conditions
/// use the same environment as the schemas' rules.
pub fn run_with(program: &Program, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
    let mut ctx = Context::with_env(env());
    for (name, value) in vars {
        ctx.add_variable(*name, (*value).clone())
            .map_err(|e| format!("cannot bind {name}: {e}"))?;
    }
    program.execute(&ctx).map_err(error_text)
}

fn evaluate(rule: &str, value: &Value, old: Option<&Value>) -> Outcome {
    let program = match compile(rule) {
        Ok(p) => p,
        Err(e) => return Outcome::Error(format!("compilation failed: {e}")),
    };
    match run(&program, value, old) {
        Ok(cel::Value::Bool(true)) => Outcome::Pass,
        Ok(cel::Value::Bool(false)) => Outcome::Fail,
        Ok(other) => Outcome::Error(format!("rule did not evaluate to a bool: {other:?}")),
        Err(e) => Outcome::EvalError(e),
    }
}

fn message(rule: &Value, value: &Value, old: Option<&Value>) -> String {
    let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
    if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
        && let Ok(program) = compile(expr)
        && let Ok(cel::Value::String(s)) = run(&program, value, old)
        && !s.trim().is_empty()
    {
        return s.to_string();
    }
    // Kubernetes trims both (ruleMessageOrDefault).
    match rule.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.trim().to_string(),
        _ => format!("failed rule: {}", text.trim()),
    }
}

/// `fieldPath` (`.spec.replicas`, `.a['b']`) under `base`.
fn with_field_path(base: &Path, field_path: Option<&str>) -> Path {
    let Some(fp) = field_path.filter(|f| !f.is_empty()) else {
        return base.clone();
    };
    let mut out = base.clone();
    for part in super::jsonpath::parse(fp).unwrap_or_default() {
        out = out.child(&part);
    }
    out
}

/// Checks the rules of every node of `value`. Without `old` (a create, or a node new in an
/// update) transition rules are skipped; with `transition_only`, only they run (the rest were
/// checked by the pass without `old`).
pub fn validate(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    transition_only: bool,
    path: &Path,
    errs: &mut Errors,
) {
    if value.is_null() {
        return;
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        let transition = is_transition(text);
        if transition && old.is_none() || transition_only && !transition {
            continue;
        }
        let at = with_field_path(path, rule.get("fieldPath").and_then(Value::as_str));
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("object");
        match evaluate(text, value, old.filter(|_| transition)) {
            Outcome::Pass => {}
            Outcome::Fail => {
                let msg = message(rule, value, old);
                match rule.get("reason").and_then(Value::as_str) {
                    Some("FieldValueRequired") => errs.required(&at, msg),
                    Some("FieldValueForbidden") => errs.forbidden(&at, msg),
                    Some("FieldValueDuplicate") => {
                        errs.push(ErrorType::Duplicate, &at, Bad::None, msg)
                    }
                    _ => errs.invalid(&at, Bad::str(kind), msg),
                }
            }
            Outcome::Error(e) => errs.invalid(&at, Bad::str(kind), e),
            Outcome::EvalError(e) => {
                // Kubernetes names the rule by its message when it has one.
                let named = match rule.get("message").and_then(Value::as_str).map(str::trim) {
                    Some(m) if !m.is_empty() => m,
                    _ => text.trim(),
                };
                errs.invalid(&at, Bad::str(kind), format!("{e} evaluating rule: {named}"))
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let (sub, p) = match (props.and_then(|p| p.get(k)), extra) {
                    (Some(sub), _) => (sub, path.child(k)),
                    (None, Some(sub)) => (sub, path.key(k)),
                    _ => continue,
                };
                let o = old.and_then(|o| o.get(k));
                validate(sub, v, o, transition_only, &p, errs);
            }
        }
        Value::Array(items) => {
            let Some(sub) = schema.get("items") else {
                return;
            };
            // Kubernetes pairs old and new elements only in map lists, by their keys.
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let is_map =
                schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            for (i, v) in items.iter().enumerate() {
                let o = if is_map {
                    old.and_then(Value::as_array).and_then(|olds| {
                        olds.iter()
                            .find(|o| keys.iter().all(|k| o.get(*k) == v.get(*k)))
                    })
                } else {
                    None
                };
                validate(sub, v, o, transition_only, &path.index(i), errs);
            }
        }
        _ => {}
    }
}

/// Every rule in a schema that does not compile, with the path of its `rule` field.
pub fn compile_errors(schema: &Value, path: &Path, errs: &mut Errors) {
    for (i, rule) in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let rp = path.child("x-kubernetes-validations").index(i);
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if text.is_empty() {
            errs.required(&rp.child("rule"), "");
        } else if let Err(e) = compile(text) {
            errs.invalid(
                &rp.child("rule"),
                Bad::str(text),
                format!("compilation failed: {e}"),
            );
        }
        if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
            && let Err(e) = compile(expr)
        {
            errs.invalid(
                &rp.child("messageExpression"),
                Bad::str(expr),
                format!("messageExpression compilation failed: {e}"),
            );
        }
        if let Some(reason) = rule.get("reason").and_then(Value::as_str) {
            let allowed = [
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
                "FieldValueDuplicate",
            ];
            if !allowed.contains(&reason) {
                errs.not_supported(&rp.child("reason"), reason, &allowed);
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            compile_errors(sub, &path.child("properties").key(k), errs);
        }
    }
    if let Some(items) = schema.get("items") {
        compile_errors(items, &path.child("items"), errs);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        compile_errors(extra, &path.child("additionalProperties"), errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `expr` evaluates to, with `self` null.
    pub(super) fn eval(expr: &str) -> cel::Value {
        let program = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        run_with(&program, &[]).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// The error `expr` fails with.
    pub(super) fn eval_err(expr: &str) -> String {
        let program = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        match run_with(&program, &[]) {
            Ok(v) => panic!("{expr}: evaluated to {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn evaluation_errors_name_the_rule_as_kubernetes_does() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.xs.min() > 0"},
                {"rule": "isURL(self.home) && url(self.home).getScheme() == 'https'"},
                {"rule": "url(self.home).getHost() != ''", "message": " home needs a host "}],
            "properties": {"xs": {"type": "array", "items": {"type": "integer"}},
                "home": {"type": "string"}}}}});
        let messages = |obj: Value| {
            let mut errs = Errors::new();
            validate(&schema, &obj, None, false, &Path::default(), &mut errs);
            errs.0.iter().map(|e| e.message()).collect::<Vec<String>>()
        };
        assert_eq!(
            messages(json!({"spec": {"xs": [], "home": "/docs"}})),
            vec![
                "spec: Invalid value: \"object\": min called on empty list evaluating rule: self.xs.min() > 0",
                "spec: Invalid value: \"object\": failed rule: isURL(self.home) && url(self.home).getScheme() == 'https'",
                "spec: Invalid value: \"object\": home needs a host",
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"xs": [1], "home": "no"}})),
            vec![
                "spec: Invalid value: \"object\": failed rule: isURL(self.home) && url(self.home).getScheme() == 'https'",
                "spec: Invalid value: \"object\": URL parse error during conversion from string: parse \"no\": invalid URI for request evaluating rule: home needs a host",
            ]
        );
    }

    #[test]
    fn every_library_registers() {
        let mut env = Env::stdlib();
        for (name, library) in LIBRARIES {
            assert_eq!(env.add_extension(library), Ok(()), "{name}");
        }
    }

    #[test]
    fn rules_fail_with_their_messages() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "self.name.startsWith('w')"},
                {"rule": "self.max >= oldSelf.max", "message": "max may not shrink", "fieldPath": ".max"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}, "name": {"type": "string"}}}}});
        let bad = json!({"spec": {"min": 5, "max": 1, "name": "x"}});
        let mut errs = Errors::new();
        validate(&schema, &bad, None, false, &Path::default(), &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec: Invalid value: \"object\": min must not exceed max",
                "spec: Invalid value: \"object\": failed rule: self.name.startsWith('w')",
            ]
        );
        let old = json!({"spec": {"min": 0, "max": 9, "name": "w"}});
        let new = json!({"spec": {"min": 0, "max": 3, "name": "w"}});
        let mut errs = Errors::new();
        validate(&schema, &new, Some(&old), true, &Path::default(), &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec!["spec.max: Invalid value: \"object\": max may not shrink"]
        );
        let mut errs = Errors::new();
        compile_errors(
            &json!({"x-kubernetes-validations": [{"rule": "self.a >"}]}),
            &Path::root("schema"),
            &mut errs,
        );
        assert_eq!(errs.0.len(), 1);
    }
}
