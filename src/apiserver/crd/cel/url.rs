//! Kubernetes' URL library (`kubernetes.urls`): `url(s)`, `isURL(s)` and a URL's
//! `getScheme()`, `getHost()`, `getHostname()`, `getPort()`, `getEscapedPath()` and
//! `getQuery()`.
//!
//! Kubernetes parses with Go's net/url, whose answers rules observe (which strings are URLs,
//! the error texts, what `getEscapedPath` keeps escaped), so this is a port of the parts of
//! net/url those functions use, not a WHATWG parser: `url()` accepts what `ParseRequestURI`
//! accepts (an absolute URI or an absolute path) and keeps what `Parse` makes of it (which, unlike
//! `ParseRequestURI`, takes the `#fragment` off). The `uri` format of the format library
//! validates with the same function.

use std::collections::HashMap;
use std::sync::LazyLock;

use cel::common::types::{CelBool, CelList, CelMap, CelMapKey, CelString, Type};
use cel::common::value::{StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::{fail, go_quote};

static URL_TYPE: LazyLock<Type> = LazyLock::new(|| Type::new_opaque_type("kubernetes.URL"));

/// A parsed URL, as Go's `url.URL` holds it. Paths and hosts are bytes: an escape may stand
/// for a byte that is not UTF-8 on its own, and `getEscapedPath` must give it back as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Url {
    scheme: String,
    opaque: String,
    userinfo: Option<Vec<u8>>,
    host: Vec<u8>,
    path: Vec<u8>,
    raw_path: String,
    force_query: bool,
    raw_query: String,
    fragment: Vec<u8>,
}

/// Go's `*url.Error`: `parse "<url>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    url: String,
    reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parse {}: {}", go_quote(&self.url), self.reason)
    }
}

/// Go's `url.ParseRequestURI`: an absolute URI or an absolute path, the whole text (a `#`
/// included) being the request's.
pub fn parse_request_uri(raw: &str) -> Result<Url, ParseError> {
    parse(raw, true).map_err(|reason| ParseError {
        url: raw.to_string(),
        reason,
    })
}

/// Go's `url.Parse`: any URL reference, its fragment taken off.
fn parse_reference(raw: &str) -> Result<Url, ParseError> {
    let (before, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    let mut url = parse(before, false).map_err(|reason| ParseError {
        url: before.to_string(),
        reason,
    })?;
    if !fragment.is_empty() {
        url.fragment = unescape(fragment, Mode::Fragment).map_err(|reason| ParseError {
            url: raw.to_string(),
            reason,
        })?;
    }
    Ok(url)
}

/// What `url()` makes of a string: it must pass `ParseRequestURI`; the value is what
/// `Parse` makes of it (Kubernetes parses twice, for `ParseRequestURI` would leave a fragment
/// in the path or the query).
pub fn parse_url(raw: &str) -> Result<Url, ParseError> {
    parse_request_uri(raw)?;
    parse_reference(raw)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    QueryComponent,
    Fragment,
}

fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, Mode::Host | Mode::Zone)
        && (matches!(c, b'[' | b']' | b'<' | b'>' | b'"') || sub_delim_or_colon(c))
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::UserPassword => return matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::QueryComponent => return true,
            Mode::Fragment => return false,
            // Go escapes only `?` in a whole path: `/`, `;` and `,` keep their meaning.
            Mode::Path => return c == b'?',
            Mode::Host | Mode::Zone => {}
        },
        _ => {}
    }
    if mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Go's `unescape`: `%XX` decoded (and `+` as a space in a query component), with the
/// checks Go makes of a host.
fn unescape(s: &str, mode: Mode) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let escape_error = |at: usize| {
        let end = (at + 3).min(b.len());
        format!(
            "invalid URL escape {}",
            go_quote(&String::from_utf8_lossy(&b[at..end]))
        )
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex_value),
                    b.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(escape_error(i));
                };
                let is_25 = &b[i..i + 3] == b"%25";
                // In a host only non-ASCII bytes may be escaped (RFC 3986), and `%25`,
                // which RFC 6874 allows before an IPv6 zone.
                if mode == Mode::Host && hi < 8 && !is_25 {
                    return Err(escape_error(i));
                }
                let v = hi << 4 | lo;
                if mode == Mode::Zone && !is_25 && v != b' ' && should_escape(v, Mode::Host) {
                    return Err(escape_error(i));
                }
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(if mode == Mode::QueryComponent {
                    b' '
                } else {
                    b'+'
                });
                i += 1;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape(c, mode) {
                    return Err(format!(
                        "invalid character {} in host name",
                        go_quote(&(c as char).to_string())
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `escape`, for a path.
fn escape_path(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if should_escape(c, Mode::Path) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

/// RFC 3986's sub-delims and `:`, which both of Go's escaping rules above leave alone.
fn sub_delim_or_colon(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':'
    )
}

/// Go's `validEncoded`: whether `s` is a path as a browser would leave it.
fn valid_encoded_path(s: &str) -> bool {
    s.bytes().all(|c| {
        sub_delim_or_colon(c)
            || matches!(c, b'@' | b'[' | b']' | b'%')
            || !should_escape(c, Mode::Path)
    })
}

/// Go's `getScheme`: the scheme, if the text starts with one, and the rest.
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            c if c.is_ascii_alphabetic() => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// Go's `validOptionalPort`: empty, or a colon and digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_host(host: &str) -> Result<Vec<u8>, String> {
    let bad_port = |p: &str| format!("invalid port {} after host", go_quote(p));
    if host.starts_with('[') {
        let Some(close) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &host[close + 1..];
        if !valid_optional_port(colon_port) {
            return Err(bad_port(colon_port));
        }
        if let Some(zone) = host[..close].find("%25") {
            let mut out = unescape(&host[..zone], Mode::Host)?;
            out.extend(unescape(&host[zone..close], Mode::Zone)?);
            out.extend(unescape(&host[close..], Mode::Host)?);
            return Ok(out);
        }
    } else if let Some(colon) = host.rfind(':') {
        let colon_port = &host[colon..];
        if !valid_optional_port(colon_port) {
            return Err(bad_port(colon_port));
        }
    }
    unescape(host, Mode::Host)
}

fn valid_userinfo(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c))
}

/// Go's `parseAuthority`: the user information (kept for equality only) and the host.
fn parse_authority(authority: &str) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let Some(at) = authority.rfind('@') else {
        return Ok((None, parse_host(authority)?));
    };
    let host = parse_host(&authority[at + 1..])?;
    let userinfo = &authority[..at];
    if !valid_userinfo(userinfo) {
        return Err("net/url: invalid userinfo".into());
    }
    let mut user = Vec::new();
    for (i, part) in userinfo.splitn(2, ':').enumerate() {
        if i > 0 {
            user.push(b':');
        }
        user.extend(unescape(part, Mode::UserPassword)?);
    }
    Ok((Some(user), host))
}

/// Go's `parse`; `via_request` for `ParseRequestURI`.
fn parse(raw: &str, via_request: bool) -> Result<Url, String> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() && via_request {
        return Err("empty url".into());
    }
    let mut url = Url::default();
    if raw == "*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    let (scheme, mut rest) = split_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, query)) = rest.split_once('?') {
        url.raw_query = query.to_string();
        rest = before;
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // A rootless path, per RFC 3986, is opaque.
            url.opaque = rest.to_string();
            return Ok(url);
        }
        if via_request {
            return Err("invalid URI for request".into());
        }
        let first_segment = rest.split('/').next().unwrap_or_default();
        if first_segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !via_request && !rest.starts_with("///"))
        && rest.starts_with("//")
    {
        let authority = &rest[2..];
        let (authority, path) = match authority.find('/') {
            Some(slash) => authority.split_at(slash),
            None => (authority, ""),
        };
        (url.userinfo, url.host) = parse_authority(authority)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    if escape_path(&url.path) != rest {
        url.raw_path = rest.to_string();
    }
    Ok(url)
}

/// Go's `splitHostPort`: the host without brackets, and the port.
fn split_host_port(host_port: &str) -> (&str, &str) {
    let (mut host, mut port) = (host_port, "");
    if let Some(colon) = host_port.rfind(':')
        && valid_optional_port(&host_port[colon..])
    {
        (host, port) = (&host_port[..colon], &host_port[colon + 1..]);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        host = inner;
    }
    (host, port)
}

impl Url {
    fn host(&self) -> String {
        String::from_utf8_lossy(&self.host).into_owned()
    }

    /// Go's `EscapedPath`: the path as written when that is a valid spelling of it,
    /// otherwise escaped.
    fn escaped_path(&self) -> String {
        if !self.raw_path.is_empty()
            && valid_encoded_path(&self.raw_path)
            && unescape(&self.raw_path, Mode::Path).is_ok_and(|p| p == self.path)
        {
            return self.raw_path.clone();
        }
        if self.path == b"*" {
            return "*".into();
        }
        escape_path(&self.path)
    }

    /// Go's `Query()`: `&`-separated `key=value` pairs, unescaped, in order per key. Pairs
    /// Go cannot parse (a `;` in them, a bad escape) are left out.
    fn query(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for pair in self.raw_query.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Ok(key), Ok(value)) = (
                unescape(key, Mode::QueryComponent),
                unescape(value, Mode::QueryComponent),
            ) else {
                continue;
            };
            let key = String::from_utf8_lossy(&key).into_owned();
            let value = String::from_utf8_lossy(&value).into_owned();
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => out.push((key, vec![value])),
            }
        }
        out
    }
}

impl Val for Url {
    fn get_type(&self) -> &Type {
        &URL_TYPE
    }

    fn cel_type() -> &'static Type {
        &URL_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Url>().is_some_and(|o| o == self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for Url {}

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(URL_TYPE.to_owned())?;
    cel::add_overload!(env, fn to_url: (CelString) -> Result<Url>, name = "url", id = "string_to_url")?;
    cel::add_overload!(env, fn is_url: (CelString) -> CelBool, name = "isURL", id = "is_url_string")?;
    cel::add_member_overload!(env, fn get_scheme: (Url) -> CelString, id = "url_get_scheme")?;
    cel::add_member_overload!(env, fn get_host: (Url) -> CelString, id = "url_get_host")?;
    cel::add_member_overload!(env, fn get_hostname: (Url) -> CelString, id = "url_get_hostname")?;
    cel::add_member_overload!(env, fn get_port: (Url) -> CelString, id = "url_get_port")?;
    cel::add_member_overload!(
        env,
        fn get_escaped_path: (Url) -> CelString,
        id = "url_get_escaped_path"
    )?;
    cel::add_member_overload!(env, fn get_query: (Url) -> CelMap, id = "url_get_query")?;
    Ok(())
}

fn to_url(s: &CelString<'_>) -> Result<Url, ExecutionError> {
    parse_url(s.inner()).map_err(|e| {
        fail(
            "url",
            format!("URL parse error during conversion from string: {e}"),
        )
    })
}

fn is_url(s: &CelString<'_>) -> CelBool {
    CelBool::from(parse_request_uri(s.inner()).is_ok())
}

fn get_scheme(u: &Url) -> CelString<'static> {
    CelString::from(u.scheme.clone())
}

fn get_host(u: &Url) -> CelString<'static> {
    CelString::from(u.host())
}

fn get_hostname(u: &Url) -> CelString<'static> {
    CelString::from(split_host_port(&u.host()).0.to_string())
}

fn get_port(u: &Url) -> CelString<'static> {
    CelString::from(split_host_port(&u.host()).1.to_string())
}

fn get_escaped_path(u: &Url) -> CelString<'static> {
    CelString::from(u.escaped_path())
}

fn get_query(u: &Url) -> CelMap<'static> {
    let map: HashMap<CelMapKey, Box<dyn Val>> = u
        .query()
        .into_iter()
        .map(|(k, values)| {
            let values: Vec<Box<dyn Val>> = values
                .into_iter()
                .map(|v| Box::new(CelString::from(v)) as Box<dyn Val>)
                .collect();
            (
                CelMapKey::from(k),
                Box::new(CelList::from(values)) as Box<dyn Val>,
            )
        })
        .collect();
    CelMap::from(map)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use super::*;
    use cel::Value;

    fn s(v: &str) -> Value {
        Value::String(v.to_string().into())
    }

    #[test]
    fn what_is_a_url() {
        for ok in [
            "https://user:pass@example.com:80/path?query=val#fragment",
            "/absolute-path",
            "https://example.com/path with spaces/",
            "mailto:someone@example.com",
            "*",
            "http://[::1]:8080/",
        ] {
            assert_eq!(eval(&format!("isURL({ok:?})")), Value::Bool(true), "{ok}");
        }
        for bad in [
            "https://a:b:c/",
            "../relative-path",
            "relative",
            "",
            ":no-scheme",
            "http://exa mple.com/",
            "http://[::1/",
            "/bad%zzescape",
        ] {
            assert_eq!(
                eval(&format!("isURL({bad:?})")),
                Value::Bool(false),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_invalid_url_fails_with_go_errors() {
        for (raw, reason) in [
            (
                "https://a:b:c/",
                r#"parse "https://a:b:c/": invalid port ":c" after host"#,
            ),
            (
                "../relative-path",
                r#"parse "../relative-path": invalid URI for request"#,
            ),
            ("", r#"parse "": empty url"#),
            (":x", r#"parse ":x": missing protocol scheme"#),
            ("/a%zz", r#"parse "/a%zz": invalid URL escape "%zz""#),
            (
                "http://a b/",
                r#"parse "http://a b/": invalid character " " in host name"#,
            ),
            (
                "http://[::1/",
                r#"parse "http://[::1/": missing ']' in host"#,
            ),
            (
                "http://a\u{1}b/",
                r#"parse "http://a\x01b/": net/url: invalid control character in URL"#,
            ),
        ] {
            assert_eq!(
                parse_url(raw).map(|_| ()).map_err(|e| e.to_string()),
                Err(reason.to_string()),
                "{raw:?}"
            );
        }
        assert_eq!(
            eval_err("url('../relative-path')"),
            r#"URL parse error during conversion from string: parse "../relative-path": invalid URI for request"#
        );
    }

    #[test]
    fn components() {
        for (expr, want) in [
            ("url('/path').getScheme()", ""),
            ("url('HTTPS://example.com/').getScheme()", "https"),
            ("url('https://example.com:80/').getHost()", "example.com:80"),
            ("url('https://example.com/').getHost()", "example.com"),
            ("url('https://[::1]:80/').getHost()", "[::1]:80"),
            ("url('https://[::1]/').getHost()", "[::1]"),
            ("url('/path').getHost()", ""),
            (
                "url('https://example.com:80/').getHostname()",
                "example.com",
            ),
            ("url('https://127.0.0.1:80/').getHostname()", "127.0.0.1"),
            ("url('https://[::1]:80/').getHostname()", "::1"),
            ("url('/path').getHostname()", ""),
            ("url('https://example.com:80/').getPort()", "80"),
            ("url('https://example.com/').getPort()", ""),
            ("url('/path').getPort()", ""),
            ("url('https://example.com/path').getEscapedPath()", "/path"),
            (
                "url('https://example.com/path with spaces/').getEscapedPath()",
                "/path%20with%20spaces/",
            ),
            ("url('https://example.com').getEscapedPath()", ""),
            (
                "url('https://example.com/a%2Fb').getEscapedPath()",
                "/a%2Fb",
            ),
            ("url('https://example.com/%7e').getEscapedPath()", "/%7e"),
            ("url('https://example.com/p?q#frag').getEscapedPath()", "/p"),
            ("url('https://example.com/%FF').getEscapedPath()", "/%FF"),
        ] {
            assert_eq!(eval(expr), s(want), "{expr}");
        }
    }

    #[test]
    fn queries_are_lists_per_key() {
        for (expr, want) in [
            (
                "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
                true,
            ),
            (
                "url('https://example.com/path?key with spaces=value with spaces').getQuery() \
                 == {'key with spaces': ['value with spaces']}",
                true,
            ),
            ("url('https://example.com/path?').getQuery() == {}", true),
            ("url('https://example.com/path').getQuery() == {}", true),
            (
                "url('https://x/?a=1+2&b=%41&c;=3&d').getQuery() == {'a': ['1 2'], 'b': ['A'], 'd': ['']}",
                true,
            ),
            (
                "url('https://x/p?a=1#b=2').getQuery() == {'a': ['1']}",
                true,
            ),
            ("url('https://x/a') == url('https://x/a')", true),
            ("url('https://x/a') == url('https://x/b')", false),
        ] {
            assert_eq!(eval(expr), Value::Bool(want), "{expr}");
        }
    }
}
