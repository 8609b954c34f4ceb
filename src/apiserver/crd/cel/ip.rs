//! Kubernetes' IP library (`kubernetes.net.ip`): `ip(s)`, `isIP(s)`, `ip.isCanonical(s)`,
//! `string(ip)`, and an address's `family()`, `isUnspecified()`, `isLoopback()`,
//! `isLinkLocalMulticast()`, `isLinkLocalUnicast()` and `isGlobalUnicast()`.
//!
//! Kubernetes parses with Go's `netip.ParseAddr`, then refuses zones and IPv4-mapped IPv6
//! addresses. Its error texts reach rules' messages, so [`parse_addr`] is a port of
//! `ParseAddr` (std's parser accepts and refuses much the same, but says other things).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use cel::common::types::{CelBool, CelInt, CelString, Type};
use cel::common::value::{StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::{fail, go_quote};

static IP_TYPE: LazyLock<Type> = LazyLock::new(|| Type::new_opaque_type("net.IP"));

/// An IP address as a CEL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip(pub IpAddr);

/// Go's `netip.parseAddrError`: `ParseAddr("<in>"): <msg>[ (at "<rest>")]`.
fn addr_error(input: &str, msg: &str, at: &str) -> String {
    let mut e = format!("ParseAddr({}): {msg}", go_quote(input));
    if !at.is_empty() {
        e.push_str(&format!(" (at {})", go_quote(at)));
    }
    e
}

/// Go's `netip.ParseAddr`: the address and its zone (`fe80::1%eth0`), or Go's error.
pub fn parse_addr(s: &str) -> Result<(IpAddr, String), String> {
    for c in s.bytes() {
        match c {
            b'.' => {
                return ipv4_fields(s, s).map(|f| (IpAddr::V4(Ipv4Addr::from(f)), String::new()));
            }
            b':' => return parse_ipv6(s),
            b'%' => return Err(addr_error(s, "missing IPv6 address", "")),
            _ => {}
        }
    }
    Err(addr_error(s, "unable to parse IP", ""))
}

/// Go's `parseIPv4Fields`: four decimal octets, no leading zeros; errors name `input`.
fn ipv4_fields(input: &str, s: &str) -> Result<[u8; 4], String> {
    let b = s.as_bytes();
    let mut fields = [0u8; 4];
    let (mut val, mut pos, mut digits) = (0u32, 0usize, 0usize);
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            if digits == 1 && val == 0 {
                return Err(addr_error(
                    input,
                    "IPv4 field has octet with leading zero",
                    "",
                ));
            }
            val = val * 10 + u32::from(c - b'0');
            digits += 1;
            if val > 255 {
                return Err(addr_error(input, "IPv4 field has value >255", ""));
            }
        } else if c == b'.' {
            if i == 0 || i == b.len() - 1 || b[i - 1] == b'.' {
                return Err(addr_error(
                    input,
                    "IPv4 field must have at least one digit",
                    &s[i..],
                ));
            }
            if pos == 3 {
                return Err(addr_error(input, "IPv4 address too long", ""));
            }
            fields[pos] = val as u8;
            pos += 1;
            val = 0;
            digits = 0;
        } else {
            return Err(addr_error(input, "unexpected character", &s[i..]));
        }
    }
    if pos < 3 {
        return Err(addr_error(input, "IPv4 address too short", ""));
    }
    fields[3] = val as u8;
    Ok(fields)
}

/// Go's `parseIPv6`.
fn parse_ipv6(input: &str) -> Result<(IpAddr, String), String> {
    let (mut s, zone) = match input.split_once('%') {
        Some((_, "")) => return Err(addr_error(input, "zone must be a non-empty string", "")),
        Some((addr, zone)) => (addr, zone.to_string()),
        None => (input, String::new()),
    };
    let mut ip = [0u8; 16];
    let mut ellipsis: Option<usize> = None;
    if s.starts_with("::") {
        ellipsis = Some(0);
        s = &s[2..];
        if s.is_empty() {
            return Ok((IpAddr::V6(Ipv6Addr::UNSPECIFIED), zone));
        }
    }
    let mut i = 0;
    while i < 16 {
        let b = s.as_bytes();
        let mut off = 0;
        let mut acc: u32 = 0;
        while off < b.len() {
            let Some(d) = (b[off] as char).to_digit(16) else {
                break;
            };
            acc = (acc << 4) + d;
            if off > 3 {
                return Err(addr_error(
                    input,
                    "each group must have 4 or less digits",
                    s,
                ));
            }
            if acc > 0xffff {
                return Err(addr_error(input, "IPv6 field has value >=2^16", s));
            }
            off += 1;
        }
        if off == 0 {
            return Err(addr_error(
                input,
                "each colon-separated field must have at least one digit",
                s,
            ));
        }
        if b.get(off) == Some(&b'.') {
            if ellipsis.is_none() && i != 12 {
                return Err(addr_error(
                    input,
                    "embedded IPv4 address must replace the final 2 fields of the address",
                    s,
                ));
            }
            if i + 4 > 16 {
                return Err(addr_error(
                    input,
                    "too many hex fields to fit an embedded IPv4 at the end of the address",
                    s,
                ));
            }
            ip[i..i + 4].copy_from_slice(&ipv4_fields(input, s)?);
            s = "";
            i += 4;
            break;
        }
        ip[i] = (acc >> 8) as u8;
        ip[i + 1] = acc as u8;
        i += 2;
        s = &s[off..];
        if s.is_empty() {
            break;
        }
        if !s.starts_with(':') {
            return Err(addr_error(input, "unexpected character, want colon", s));
        }
        if s.len() == 1 {
            return Err(addr_error(
                input,
                "colon must be followed by more characters",
                s,
            ));
        }
        s = &s[1..];
        if s.starts_with(':') {
            if ellipsis.is_some() {
                return Err(addr_error(input, "multiple :: in address", s));
            }
            ellipsis = Some(i);
            s = &s[1..];
            if s.is_empty() {
                break;
            }
        }
    }
    if !s.is_empty() {
        return Err(addr_error(input, "trailing garbage after address", s));
    }
    if i < 16 {
        let Some(at) = ellipsis else {
            return Err(addr_error(input, "address string too short", ""));
        };
        // The groups after the `::` move to the end; zeros fill the gap.
        let n = 16 - i;
        ip.copy_within(at..i, at + n);
        ip[at..at + n].fill(0);
    } else if ellipsis.is_some() {
        return Err(addr_error(
            input,
            "the :: must expand to at least one field of zeros",
            "",
        ));
    }
    Ok((IpAddr::V6(Ipv6Addr::from(ip)), zone))
}

/// Kubernetes' `parseIPAddr`: `ParseAddr` without zones or IPv4-mapped IPv6 addresses.
pub fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    let (addr, zone) = parse_addr(raw).map_err(|e| {
        format!(
            "IP Address {} parse error during conversion from string: {e}",
            go_quote(raw)
        )
    })?;
    if !zone.is_empty() {
        return Err(format!(
            "IP address {} with zone value is not allowed",
            go_quote(raw)
        ));
    }
    if is_4in6(&addr) {
        return Err(format!(
            "IPv4-mapped IPv6 address {} is not allowed",
            go_quote(raw)
        ));
    }
    Ok(addr)
}

pub fn is_4in6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Go's `netip.Addr` predicates, which differ from std's in places (link-local multicast is
/// `ff02::/16` with any flags, global unicast includes private ranges).
fn is_multicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[0] & 0xf0 == 0xe0,
        IpAddr::V6(v6) => v6.octets()[0] == 0xff,
    }
}

fn is_loopback(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => *v6 == Ipv6Addr::LOCALHOST,
    }
}

fn is_link_local_unicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[..2] == [169, 254],
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn is_link_local_multicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    }
}

fn is_global_unicast(addr: &IpAddr) -> bool {
    if matches!(addr, IpAddr::V4(v4) if *v4 == Ipv4Addr::UNSPECIFIED || *v4 == Ipv4Addr::BROADCAST)
    {
        return false;
    }
    !addr.is_unspecified()
        && !is_loopback(addr)
        && !is_multicast(addr)
        && !is_link_local_unicast(addr)
}

impl Val for Ip {
    fn get_type(&self) -> &Type {
        &IP_TYPE
    }

    fn cel_type() -> &'static Type {
        &IP_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Ip>().is_some_and(|o| o == self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for Ip {}

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(IP_TYPE.to_owned())?;
    cel::add_overload!(env, fn to_ip: (CelString) -> Result<Ip>, name = "ip", id = "string_to_ip")?;
    cel::add_overload!(env, fn is_ip: (CelString) -> CelBool, name = "isIP", id = "is_ip")?;
    cel::add_overload!(
        env,
        fn is_canonical: (CelString) -> Result<CelBool>,
        name = "ip.isCanonical",
        id = "ip_is_canonical"
    )?;
    cel::add_overload!(env, fn to_string: (Ip) -> CelString, name = "string", id = "ip_to_string")?;
    cel::add_member_overload!(env, fn family: (Ip) -> CelInt, id = "ip_family")?;
    cel::add_member_overload!(env, fn unspecified: (Ip) -> CelBool, name = "isUnspecified", id = "ip_is_unspecified")?;
    cel::add_member_overload!(env, fn loopback: (Ip) -> CelBool, name = "isLoopback", id = "ip_is_loopback")?;
    cel::add_member_overload!(
        env,
        fn link_local_multicast: (Ip) -> CelBool,
        name = "isLinkLocalMulticast",
        id = "ip_is_link_local_multicast"
    )?;
    cel::add_member_overload!(
        env,
        fn link_local_unicast: (Ip) -> CelBool,
        name = "isLinkLocalUnicast",
        id = "ip_is_link_local_unicast"
    )?;
    cel::add_member_overload!(
        env,
        fn global_unicast: (Ip) -> CelBool,
        name = "isGlobalUnicast",
        id = "ip_is_global_unicast"
    )?;
    Ok(())
}

pub fn to_ip(s: &CelString<'_>) -> Result<Ip, ExecutionError> {
    parse_ip(s.inner()).map(Ip).map_err(|e| fail("ip", e))
}

fn is_ip(s: &CelString<'_>) -> CelBool {
    CelBool::from(parse_ip(s.inner()).is_ok())
}

/// Whether the text is the one Go prints for the address: its only canonical form.
fn is_canonical(s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let addr = parse_ip(s.inner()).map_err(|e| fail("ip.isCanonical", e))?;
    Ok(CelBool::from(addr.to_string() == s.inner()))
}

fn to_string(ip: &Ip) -> CelString<'static> {
    CelString::from(ip.0.to_string())
}

fn family(ip: &Ip) -> CelInt {
    CelInt::from(if ip.0.is_ipv4() { 4 } else { 6 })
}

fn unspecified(ip: &Ip) -> CelBool {
    CelBool::from(ip.0.is_unspecified())
}

fn loopback(ip: &Ip) -> CelBool {
    CelBool::from(is_loopback(&ip.0))
}

fn link_local_multicast(ip: &Ip) -> CelBool {
    CelBool::from(is_link_local_multicast(&ip.0))
}

fn link_local_unicast(ip: &Ip) -> CelBool {
    CelBool::from(is_link_local_unicast(&ip.0))
}

fn global_unicast(ip: &Ip) -> CelBool {
    CelBool::from(is_global_unicast(&ip.0))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use super::*;
    use cel::Value;

    fn assert_true(expr: &str) {
        assert_eq!(eval(expr), Value::Bool(true), "{expr}");
    }

    #[test]
    fn parse_addr_agrees_with_std_on_what_parses() {
        for s in [
            "127.0.0.1",
            "::1",
            "::",
            "2001:db8::abcd",
            "1:2:3:4:5:6:7:8",
            "::1.2.3.4",
            "1::",
            "fe80::1:2",
            "0.0.0.0",
            "1:2:3:4:5:6:1.2.3.4",
        ] {
            let want: IpAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(parse_addr(s), Ok((want, String::new())), "{s}");
        }
        assert_eq!(
            parse_addr("fe80::1%eth0").map(|(_, z)| z),
            Ok("eth0".to_string())
        );
    }

    #[test]
    fn parse_errors_read_as_go_s() {
        for (s, e) in [
            (
                "127.0.0.256",
                r#"ParseAddr("127.0.0.256"): IPv4 field has value >255"#,
            ),
            (
                "127.0.0.01",
                r#"ParseAddr("127.0.0.01"): IPv4 field has octet with leading zero"#,
            ),
            ("1.2.3", r#"ParseAddr("1.2.3"): IPv4 address too short"#),
            (
                "1.2.3.4.5",
                r#"ParseAddr("1.2.3.4.5"): IPv4 address too long"#,
            ),
            (
                "1..2.3",
                r#"ParseAddr("1..2.3"): IPv4 field must have at least one digit (at ".2.3")"#,
            ),
            (
                "1.2.3.x",
                r#"ParseAddr("1.2.3.x"): unexpected character (at "x")"#,
            ),
            (
                ":::1",
                r#"ParseAddr(":::1"): each colon-separated field must have at least one digit (at ":1")"#,
            ),
            (
                "1::2::3",
                r#"ParseAddr("1::2::3"): multiple :: in address (at ":3")"#,
            ),
            (
                "12345::",
                r#"ParseAddr("12345::"): each group must have 4 or less digits (at "12345::")"#,
            ),
            ("1:2", r#"ParseAddr("1:2"): address string too short"#),
            ("abc", r#"ParseAddr("abc"): unable to parse IP"#),
            ("", r#"ParseAddr(""): unable to parse IP"#),
            ("%eth0", r#"ParseAddr("%eth0"): missing IPv6 address"#),
            (
                "fe80::1%",
                r#"ParseAddr("fe80::1%"): zone must be a non-empty string"#,
            ),
            (
                "1:2:3:4:5:6:7:8:9",
                r#"ParseAddr("1:2:3:4:5:6:7:8:9"): trailing garbage after address (at "9")"#,
            ),
        ] {
            assert_eq!(parse_addr(s).map(|_| ()), Err(e.to_string()), "{s}");
        }
    }

    #[test]
    fn ip_refuses_what_kubernetes_refuses() {
        for bad in [
            "127.0.0.256",
            ":::1",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "01.2.3.4",
        ] {
            assert_eq!(eval(&format!("isIP('{bad}')")), Value::Bool(false), "{bad}");
        }
        assert_eq!(
            eval_err("ip('::ffff:1.2.3.4')"),
            r#"IPv4-mapped IPv6 address "::ffff:1.2.3.4" is not allowed"#
        );
        assert_eq!(
            eval_err("ip('fe80::1%eth0')"),
            r#"IP address "fe80::1%eth0" with zone value is not allowed"#
        );
        assert_eq!(
            eval_err("ip('1.2.3')"),
            r#"IP Address "1.2.3" parse error during conversion from string: ParseAddr("1.2.3"): IPv4 address too short"#
        );
    }

    #[test]
    fn addresses_answer_as_netip_does() {
        for expr in [
            "isIP('127.0.0.1') && isIP('::1')",
            "ip('127.0.0.1').family() == 4 && ip('::1').family() == 6",
            "ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::abcd')",
            "!ip.isCanonical('2001:DB8::ABCD') && !ip.isCanonical('2001:db8::0:0:0:abcd')",
            "ip('0.0.0.0').isUnspecified() && ip('::').isUnspecified()",
            "!ip('127.0.0.1').isUnspecified() && !ip('::1').isUnspecified()",
            "ip('127.0.0.1').isLoopback() && ip('::1').isLoopback()",
            "!ip('192.168.0.1').isLoopback() && !ip('2001:db8::abcd').isLoopback()",
            "ip('224.0.0.1').isLinkLocalMulticast() && ip('ff02::1').isLinkLocalMulticast()",
            "!ip('224.0.1.1').isLinkLocalMulticast() && !ip('fd00::1').isLinkLocalMulticast()",
            "ip('169.254.169.254').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()",
            "!ip('192.168.0.1').isLinkLocalUnicast() && !ip('fd80::1').isLinkLocalUnicast()",
            "ip('192.168.0.1').isGlobalUnicast() && ip('2001:db8::abcd').isGlobalUnicast()",
            "!ip('255.255.255.255').isGlobalUnicast() && !ip('ff00::1').isGlobalUnicast()",
            "string(ip('2001:db8::0:0:0:abcd')) == '2001:db8::abcd'",
            "ip('::1') == ip('0:0::1') && ip('::1') != ip('::2')",
            "type(ip('1.2.3.4')) == net.IP",
        ] {
            assert_true(expr);
        }
    }
}
