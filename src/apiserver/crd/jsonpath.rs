//! The JSONPath subset CustomResourceDefinitions use in printer columns, scale paths and
//! selectable fields: `.a.b`, `.a[0]`, `.a[*]`, `.a[?(@.type=="Ready")].status` and keys with
//! escaped dots (`.metadata.labels.app\.kubernetes\.io/name`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b=="x")]`: elements whose field path equals the value.
    Filter(Vec<String>, Value),
}

/// A parsed path, or why it cannot be parsed.
pub fn parse(path: &str) -> Result<Vec<String>, String> {
    steps(path).map(|s| {
        s.into_iter()
            .filter_map(|st| match st {
                Step::Field(f) => Some(f),
                _ => None,
            })
            .collect()
    })
}

fn steps(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        name.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    return Err(format!("empty field name in {path:?}"));
                }
                out.push(Step::Field(name));
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .ok_or_else(|| format!("unclosed [ in {path:?}"))?;
                let inner: String = chars[i + 1..i + end].iter().collect();
                i += end + 1;
                let inner = inner.trim();
                if inner == "*" {
                    out.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|x| x.strip_suffix(')'))
                {
                    let (lhs, rhs) = f
                        .split_once("==")
                        .ok_or_else(|| format!("unsupported filter in {path:?}"))?;
                    let rhs = rhs.trim();
                    let value = if let Some(s) = rhs
                        .strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .or_else(|| rhs.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                    {
                        Value::String(s.to_string())
                    } else {
                        serde_json::from_str(rhs)
                            .map_err(|_| format!("unsupported filter value in {path:?}"))?
                    };
                    let lhs = lhs.trim().split('.').map(str::to_string).collect();
                    out.push(Step::Filter(lhs, value));
                } else if let Some(name) = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                {
                    out.push(Step::Field(name.to_string()));
                } else {
                    let n: i64 = inner
                        .parse()
                        .map_err(|_| format!("unsupported subscript [{inner}] in {path:?}"))?;
                    out.push(Step::Index(n));
                }
            }
            c => return Err(format!("unexpected {c:?} in {path:?}")),
        }
    }
    Ok(out)
}

/// Every value the path reaches (none when it is malformed or leads nowhere).
pub fn find<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Ok(steps) = steps(path) else {
        return Vec::new();
    };
    let mut current = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if idx >= 0 {
                            next.extend(a.get(idx as usize));
                        }
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(lhs, want) => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter().filter(|e| {
                            let mut cur = Some(*e);
                            for k in lhs {
                                cur = cur.and_then(|c| c.get(k.as_str()));
                            }
                            cur == Some(want)
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// The first value the path reaches.
pub fn first<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    find(obj, path).into_iter().next()
}

/// Sets the value at a path of plain fields, creating objects on the way.
pub fn set(obj: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let fields = parse(path)?;
    let Some((last, parents)) = fields.split_last() else {
        return Err(format!("{path:?} names no field"));
    };
    let mut cur = obj;
    for f in parents {
        if !cur.get(f.as_str()).is_some_and(Value::is_object) {
            cur[f.as_str()] = Value::Object(Default::default());
        }
        cur = &mut cur[f.as_str()];
    }
    cur[last.as_str()] = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_fields_indexes_and_filters() {
        let o = json!({"spec": {"replicas": 3, "items": [{"n": "a"}, {"n": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(first(&o, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(first(&o, ".spec.items[1].n"), Some(&json!("b")));
        assert_eq!(
            first(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(
            first(&o, ".metadata.labels.app\\.kubernetes\\.io/name"),
            Some(&json!("web"))
        );
        assert_eq!(find(&o, ".spec.items[*].n").len(), 2);
        assert!(first(&o, ".spec.missing").is_none());
        let mut o = json!({});
        set(&mut o, ".spec.replicas", json!(4)).unwrap();
        assert_eq!(o, json!({"spec": {"replicas": 4}}));
    }
}
