//! Go's `%v` and `%q` renderings of decoded JSON, which Kubernetes puts into some error messages
//! (`patch: Invalid value: "map[spec:map[foo:1]]": …`). Clients show these messages verbatim, so
//! ours read the same; and Go's `time.Duration.String()`, which Kubernetes writes into durations
//! of objects and events.

use serde_json::{Number, Value};

/// `fmt.Sprintf("%v", v)` of a value decoded into `interface{}`: maps as `map[k:v …]` with
/// sorted keys, lists as `[a b]`, null as `<nil>`, strings unquoted.
pub fn value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("map[");
            // Go prints map keys sorted; serde_json's map is already ordered by key.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push(']');
        }
    }
}

/// Kubernetes decodes integers as int64 and everything else as float64; `%v` prints a float64
/// like `%g` with the shortest digits, in exponent form below 1e-4 and from 1e6 on.
fn number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or_default();
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor();
    if (-4.0..6.0).contains(&exp) {
        format!("{f}")
    } else {
        // Rust prints `1e21`; Go prints `1e+21`, with at least two exponent digits.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

/// `strconv.Quote`: double quotes, with `"` and `\` escaped and control characters as escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String`, which is metav1.Duration's JSON form ("1h2m3.5s", "1.5ms").
pub fn duration(d: i64) -> String {
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        return match u {
            0..1_000 => format!("{sign}{u}ns"),
            1_000..1_000_000 => format!("{sign}{}µs", with_fraction(u, 3)),
            _ => format!("{sign}{}ms", with_fraction(u, 6)),
        };
    }
    let seconds = with_fraction(u % 60_000_000_000, 9);
    let minutes = u / 60_000_000_000;
    match minutes {
        0 => format!("{sign}{seconds}s"),
        1..60 => format!("{sign}{minutes}m{seconds}s"),
        _ => format!("{sign}{}h{}m{seconds}s", minutes / 60, minutes % 60),
    }
}

/// `v / 10^digits` in decimal, without trailing zeros in the fraction.
fn with_fraction(v: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let fraction = format!("{:0width$}", v % scale, width = digits as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", v / scale)
    } else {
        format!("{}.{fraction}", v / scale)
    }
}

/// Go's `Duration.String()` of `d` truncated to milliseconds (`523ms`, `1.2s`, `1m3.5s`), as
/// kubelet's Pulled events and metrics-server's `window` print durations.
pub fn duration_millis(d: std::time::Duration) -> String {
    duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 1_000_000) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_go() {
        let v = json!({"spec": {"replicas": 3, "b": [1, "x", null, true]}, "a": 0.5});
        assert_eq!(
            value(&v),
            "map[a:0.5 spec:map[b:[1 x <nil> true] replicas:3]]"
        );
        assert_eq!(value(&json!(1e21)), "1e+21");
        assert_eq!(value(&json!(1.5e-7)), "1.5e-07");
        assert_eq!(value(&json!(100000.0)), "100000");
        assert_eq!(value(&json!(2500000.0)), "2.5e+06");
        assert_eq!(quote("a\"b\\\n\u{1}é"), "\"a\\\"b\\\\\\n\\x01é\"");
    }
}
