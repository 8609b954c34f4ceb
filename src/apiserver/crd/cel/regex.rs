//! Kubernetes' regex library (`kubernetes.regex`): `s.find(re)`, the first match of `re` in
//! `s` or `""`, and `s.findAll(re)` / `s.findAll(re, n)`, every match (at most `n` of them
//! when `n` is not negative). The regex crate speaks RE2's syntax, as Go's regexp does, and
//! skips an empty match right after a match, as Go's FindAllString does.

use cel::common::types::{CelInt, CelList, CelString};
use cel::common::value::Val;
use cel::{DeclarationError, Env, ExecutionError};

use super::fail;

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_member_overload!(
        env,
        fn find: (CelString, CelString) -> Result<CelString>,
        id = "string_find_string"
    )?;
    cel::add_member_overload!(
        env,
        fn find_all: (CelString, CelString) -> Result<CelList>,
        id = "string_find_all_string"
    )?;
    cel::add_member_overload!(
        env,
        fn find_all_n: (CelString, CelString, CelInt) -> Result<CelList>,
        name = "findAll",
        id = "string_find_all_string_int"
    )?;
    Ok(())
}

/// `pattern` compiled, or the error Kubernetes reports (Go's wording, the regex crate's
/// reason).
fn compile(function: &str, pattern: &str) -> Result<::regex::Regex, ExecutionError> {
    ::regex::Regex::new(pattern).map_err(|e| {
        let reason = match &e {
            ::regex::Error::Syntax(text) => text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(text)
                .to_string(),
            other => other.to_string(),
        };
        fail(
            function,
            format!("Illegal regex: error parsing regexp: {reason}: `{pattern}`"),
        )
    })
}

fn find(s: &CelString<'_>, re: &CelString<'_>) -> Result<CelString<'static>, ExecutionError> {
    let re = compile("find", re.inner())?;
    let found = re.find(s.inner()).map(|m| m.as_str()).unwrap_or_default();
    Ok(CelString::from(found.to_string()))
}

fn find_all(s: &CelString<'_>, re: &CelString<'_>) -> Result<CelList<'static>, ExecutionError> {
    matches(s.inner(), re.inner(), -1)
}

fn find_all_n(
    s: &CelString<'_>,
    re: &CelString<'_>,
    n: &CelInt,
) -> Result<CelList<'static>, ExecutionError> {
    matches(s.inner(), re.inner(), *n.inner())
}

/// The first `limit` matches (all of them for a negative limit), as strings.
fn matches(s: &str, pattern: &str, limit: i64) -> Result<CelList<'static>, ExecutionError> {
    let re = compile("findAll", pattern)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let found: Vec<Box<dyn Val>> = re
        .find_iter(s)
        .take(limit)
        .map(|m| Box::new(CelString::from(m.as_str().to_string())) as Box<dyn Val>)
        .collect();
    Ok(CelList::from(found))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use cel::Value;

    fn strings(items: &[&str]) -> Value {
        Value::List(
            items
                .iter()
                .map(|s| Value::String(s.to_string().into()))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    #[test]
    fn find_returns_the_first_match_or_nothing() {
        assert_eq!(
            eval("'abc 123'.find('[0-9]+')"),
            Value::String("123".to_string().into())
        );
        assert_eq!(
            eval("'abc 123'.find('xyz')"),
            Value::String(String::new().into())
        );
        // An empty match at the start is a match, as in Go.
        assert_eq!(
            eval("'abc 123'.find('[0-9]*')"),
            Value::String(String::new().into())
        );
    }

    #[test]
    fn find_all_returns_every_match_up_to_a_limit() {
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+')"),
            strings(&["123", "456"])
        );
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+', 1)"),
            strings(&["123"])
        );
        assert_eq!(eval("'123 abc 456'.findAll('[0-9]+', 0)"), strings(&[]));
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+', -1)"),
            strings(&["123", "456"])
        );
        assert_eq!(eval("'123 abc 456'.findAll('xyz')"), strings(&[]));
        // Go skips the empty match right after "123" and the one at the end.
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]*')"),
            strings(&["123", "", "", "", "", "456"])
        );
    }

    #[test]
    fn an_invalid_pattern_is_an_evaluation_error() {
        let e = eval_err("'abc'.find('[a')");
        assert!(
            e.starts_with("Illegal regex: error parsing regexp: ") && e.ends_with(": `[a`"),
            "{e}"
        );
        assert!(eval_err("'abc'.findAll('(')").starts_with("Illegal regex: "));
    }
}
