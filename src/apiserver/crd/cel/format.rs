//! Kubernetes' format library (`format`, Kubernetes 1.31+): named string formats,
//! `format.dns1123Label()` and the like or `format.named('dns1123Label')` (an optional, none
//! for an unknown name), and `f.validate(s)`: `optional.none()` for a valid string, else an
//! optional list of Kubernetes' messages, e.g.
//! `format.dns1123Label().validate(self.name).orValue([]).join(', ')` in a messageExpression.
//!
//! The name formats reuse the API server's own validators, so the messages are those of
//! object names; `uri` is `url()`'s `ParseRequestURI`; `uuid`, `byte`, `date` and `datetime`
//! follow kube-openapi's `strfmt` checks, with its one-line messages.

use std::sync::LazyLock;

use cel::common::types::{CelList, CelOptional, CelString, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::take;
use crate::apiserver::kinds::names;

static FORMAT_TYPE: LazyLock<Type> =
    LazyLock::new(|| Type::new_opaque_type("kubernetes.NamedFormat"));

/// A named format: the name rules use, and its check (messages, none when valid).
#[derive(Debug, Clone, Copy)]
pub struct NamedFormat {
    name: &'static str,
    check: fn(&str) -> Vec<String>,
}

/// Every format, in Kubernetes' list order.
const FORMATS: [NamedFormat; 13] = [
    NamedFormat {
        name: "dns1123Label",
        check: names::dns1123_label,
    },
    NamedFormat {
        name: "dns1123Subdomain",
        check: names::dns1123_subdomain,
    },
    NamedFormat {
        name: "dns1035Label",
        check: names::dns1035_label,
    },
    NamedFormat {
        name: "qualifiedName",
        check: names::qualified_name,
    },
    NamedFormat {
        name: "dns1123LabelPrefix",
        check: |s| names::dns1123_label(&mask_trailing_dash(s)),
    },
    NamedFormat {
        name: "dns1123SubdomainPrefix",
        check: |s| names::dns1123_subdomain(&mask_trailing_dash(s)),
    },
    NamedFormat {
        name: "dns1035LabelPrefix",
        check: |s| names::dns1035_label(&mask_trailing_dash(s)),
    },
    NamedFormat {
        name: "labelValue",
        check: names::label_value,
    },
    NamedFormat {
        name: "uri",
        check: uri,
    },
    NamedFormat {
        name: "uuid",
        check: |s| failing(matches(&UUID, s), "does not match the UUID format"),
    },
    NamedFormat {
        name: "byte",
        check: |s| failing(matches(&BASE64, s), "invalid base64"),
    },
    NamedFormat {
        name: "date",
        check: |s| failing(is_date(s), "invalid date"),
    },
    NamedFormat {
        name: "datetime",
        check: |s| failing(is_datetime(s), "invalid datetime"),
    },
];

/// A prefix for generated names may end in a dash: Kubernetes' `maskTrailingDash` puts a
/// letter in place of it before checking, and in place of the character before it too.
fn mask_trailing_dash(s: &str) -> String {
    match s.strip_suffix('-') {
        Some(rest) if s.len() > 1 => {
            let mut kept = rest.to_string();
            kept.pop();
            kept + "a"
        }
        _ => s.to_string(),
    }
}

fn failing(ok: bool, message: &str) -> Vec<String> {
    if ok {
        vec![]
    } else {
        vec![message.to_string()]
    }
}

fn uri(s: &str) -> Vec<String> {
    match super::url::parse_request_uri(s) {
        Ok(_) => vec![],
        Err(e) => vec![e.to_string()],
    }
}

/// kube-openapi's patterns. They are constants: `None` (never expected) fails every check
/// rather than panic.
static UUID: LazyLock<Option<::regex::Regex>> = LazyLock::new(|| {
    ::regex::Regex::new("(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
        .ok()
});
static BASE64: LazyLock<Option<::regex::Regex>> = LazyLock::new(|| {
    ::regex::Regex::new(
        "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$",
    )
    .ok()
});
static TIME: LazyLock<Option<::regex::Regex>> = LazyLock::new(|| {
    ::regex::Regex::new("^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
        .ok()
});

fn matches(re: &Option<::regex::Regex>, s: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(s))
}

/// Go's `time.Parse("2006-01-02", s)`: four-digit year, two-digit month and day, a day the
/// month has.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
            && s.get(r).and_then(|d| d.parse::<i16>().ok()).is_some()
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
        return false;
    }
    if !digits(8..10) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<i16>().ok());
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => {
            let (Ok(m), Ok(d)) = (i8::try_from(m), i8::try_from(d)) else {
                return false;
            };
            jiff::civil::Date::new(y, m, d).is_ok()
        }
        _ => false,
    }
}

/// kube-openapi's `IsDateTime`: a date, a `t` (any case), a time within the day's bounds.
fn is_datetime(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let Some(caps) = TIME.as_ref().and_then(|re| re.captures(parts[1])) else {
        return false;
    };
    let field = |i: usize| caps.get(i).map(|m| m.as_str()).unwrap_or_default();
    field(1) <= "23" && field(2) <= "59" && field(3) <= "59"
}

impl Val for NamedFormat {
    fn get_type(&self) -> &Type {
        &FORMAT_TYPE
    }

    fn cel_type() -> &'static Type {
        &FORMAT_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<NamedFormat>()
            .is_some_and(|o| o.name == self.name)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for NamedFormat {}

/// `format.<name>()` for the format at `I`.
fn constant<'b, 'v, const I: usize>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [] = take(args)?;
    Ok(CowVal::owned(FORMATS[I]))
}

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(FORMAT_TYPE.to_owned())?;
    // One function per format: overloads are plain fn pointers, so each index is its own.
    macro_rules! constants {
        ($($i:literal)*) => {$(
            let name = format!("format.{}", FORMATS[$i].name);
            env.add_overload(&name, &name, vec![], constant::<$i>)?;
        )*};
    }
    constants!(0 1 2 3 4 5 6 7 8 9 10 11 12);
    cel::add_overload!(
        env,
        fn named: (CelString) -> CelOptional,
        name = "format.named",
        id = "format-named"
    )?;
    cel::add_member_overload!(
        env,
        fn validate: (NamedFormat, CelString) -> CelOptional,
        id = "format-validate"
    )?;
    Ok(())
}

fn named(name: &CelString<'_>) -> CelOptional<'static> {
    match FORMATS.iter().find(|f| f.name == name.inner()) {
        Some(f) => CelOptional::of(Box::new(*f)),
        None => CelOptional::none(),
    }
}

fn validate(format: &NamedFormat, s: &CelString<'_>) -> CelOptional<'static> {
    let errors = (format.check)(s.inner());
    if errors.is_empty() {
        return CelOptional::none();
    }
    let errors: Vec<Box<dyn Val>> = errors
        .into_iter()
        .map(|e| Box::new(CelString::from(e)) as Box<dyn Val>)
        .collect();
    CelOptional::of(Box::new(CelList::from(errors)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::eval;
    use super::*;
    use cel::Value;

    fn assert_true(expr: &str) {
        assert_eq!(eval(expr), Value::Bool(true), "{expr}");
    }

    #[test]
    fn every_format_is_reachable_both_ways() {
        for f in FORMATS {
            assert_true(&format!(
                "format.named('{0}') == optional.of(format.{0}())",
                f.name
            ));
        }
        assert_true("!format.named('nope').hasValue()");
        assert_true("format.dns1123Label() != format.dns1035Label()");
    }

    #[test]
    fn valid_strings_give_none() {
        for expr in [
            "format.dns1123Label().validate('my-label-name')",
            "format.dns1123Subdomain().validate('apiextensions.k8s.io')",
            "format.dns1035Label().validate('my-label-name')",
            "format.qualifiedName().validate('apiextensions.k8s.io/v1beta1')",
            "format.dns1123LabelPrefix().validate('my-label-prefix-')",
            "format.dns1123SubdomainPrefix().validate('mysubdomain.prefix.-')",
            "format.dns1035LabelPrefix().validate('my-label-prefix-')",
            "format.labelValue().validate('')",
            "format.uri().validate('http://example.com')",
            "format.uuid().validate('123e4567-e89b-12d3-a456-426614174000')",
            "format.uuid().validate('123E4567E89B12D3A456426614174000')",
            "format.byte().validate('aGVsbG8=')",
            "format.date().validate('2021-01-01')",
            "format.date().validate('2024-02-29')",
            "format.datetime().validate('2021-01-01T00:00:00Z')",
            "format.datetime().validate('2021-01-01t23:59:59.123+05:30')",
            "format.named('dns1123Label').value().validate('x')",
        ] {
            assert_true(&format!("{expr} == optional.none()"));
        }
    }

    #[test]
    fn invalid_strings_give_kubernetes_messages() {
        for (expr, message) in [
            (
                "format.dns1123Label().validate('My_Label')",
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            (
                "format.dns1035Label().validate('1abc')",
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ),
            (
                "format.uri().validate('../relative')",
                "parse \"../relative\": invalid URI for request",
            ),
            (
                "format.uuid().validate('123')",
                "does not match the UUID format",
            ),
            ("format.byte().validate('aGVsbG8')", "invalid base64"),
            ("format.date().validate('2023-02-29')", "invalid date"),
            ("format.date().validate('2021-1-01')", "invalid date"),
            (
                "format.datetime().validate('2021-01-01T24:00:00Z')",
                "invalid datetime",
            ),
            (
                "format.datetime().validate('2021-01-01 00:00:00Z')",
                "invalid datetime",
            ),
        ] {
            assert_eq!(
                eval(&format!("{expr}.value()")),
                Value::List(vec![Value::String(message.to_string().into())].into()),
                "{expr}"
            );
        }
        let long = "a".repeat(64);
        assert_eq!(
            eval(&format!("format.dns1123Label().validate('{long}').value()")),
            Value::List(
                vec![Value::String(
                    "must be no more than 63 characters".to_string().into()
                )]
                .into()
            ),
        );
        assert_true("format.labelValue().validate('-x').hasValue()");
        assert_true("format.dns1123LabelPrefix().validate('_x-').hasValue()");
        // Kubernetes' mask drops the character before the dash too.
        assert_true("!format.dns1123LabelPrefix().validate('x_-').hasValue()");
    }
}
