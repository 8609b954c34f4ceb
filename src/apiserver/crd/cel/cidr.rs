//! Kubernetes' CIDR library (`net.cidr`): `cidr(s)`, `isCIDR(s)`, `string(cidr)`, and a
//! CIDR's `containsIP(ip|string)`, `containsCIDR(cidr|string)`, `ip()`, `masked()` and
//! `prefixLength()`. A CIDR keeps the address as written (`192.168.0.1/24` is valid, and
//! `masked()` gives `192.168.0.0/24`); `containsCIDR` compares masked addresses, as since
//! Kubernetes 1.33 (before, an address other than the network's was never contained).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use cel::common::types::{CelBool, CelInt, CelString, Type};
use cel::common::value::{StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::ip::{Ip, is_4in6, parse_addr, parse_ip};
use super::{fail, go_quote};

static CIDR_TYPE: LazyLock<Type> = LazyLock::new(|| Type::new_opaque_type("net.CIDR"));

/// A network address and prefix length, as Go's `netip.Prefix` (not masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// Go's `netip.ParsePrefix`, its errors included.
fn parse_prefix(s: &str) -> Result<Cidr, String> {
    let error = |msg: &str| format!("netip.ParsePrefix({}): {msg}", go_quote(s));
    let Some(slash) = s.rfind('/') else {
        return Err(error("no '/'"));
    };
    let (addr, zone) = parse_addr(&s[..slash]).map_err(|e| error(&e))?;
    if addr.is_ipv6() && !zone.is_empty() {
        return Err(error("IPv6 zones cannot be present in a prefix"));
    }
    let bits_text = &s[slash + 1..];
    let bad_bits = || error(&format!("bad bits after slash: {}", go_quote(bits_text)));
    // Go's Atoi would take a sign or leading zeros; ParsePrefix does not.
    if bits_text.len() > 1 && !bits_text.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return Err(bad_bits());
    }
    let bits: i64 = bits_text.parse().map_err(|_| bad_bits())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if !(0..=max).contains(&bits) {
        return Err(error("prefix length out of range"));
    }
    Ok(Cidr {
        addr,
        bits: bits as u8,
    })
}

/// Kubernetes' `parseCIDR`: `ParsePrefix` without IPv4-mapped IPv6 addresses. Its errors are
/// wrapped once more by `cidr()`, so a parse error reads the prefix twice, as in Kubernetes.
fn parse_cidr(raw: &str) -> Result<Cidr, String> {
    let cidr = parse_prefix(raw)
        .map_err(|e| format!("network address parse error during conversion from string: {e}"))?;
    if is_4in6(&cidr.addr) {
        return Err(format!(
            "IPv4-mapped IPv6 address {} is not allowed",
            go_quote(raw)
        ));
    }
    Ok(cidr)
}

/// `addr` with all but its first `bits` bits cleared.
fn mask(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

impl Cidr {
    fn masked(self) -> Cidr {
        Cidr {
            addr: mask(self.addr, self.bits),
            bits: self.bits,
        }
    }

    /// Go's `Prefix.Contains`: same family, same first `bits` bits.
    fn contains(self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && mask(ip, self.bits) == mask(self.addr, self.bits)
    }

    fn contains_cidr(self, other: Cidr) -> bool {
        self.bits <= other.bits && self.contains(other.addr)
    }
}

impl Val for Cidr {
    fn get_type(&self) -> &Type {
        &CIDR_TYPE
    }

    fn cel_type() -> &'static Type {
        &CIDR_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Cidr>().is_some_and(|o| o == self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for Cidr {}

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(CIDR_TYPE.to_owned())?;
    cel::add_overload!(env, fn to_cidr: (CelString) -> Result<Cidr>, name = "cidr", id = "string_to_cidr")?;
    cel::add_overload!(env, fn is_cidr: (CelString) -> CelBool, name = "isCIDR", id = "is_cidr")?;
    cel::add_overload!(env, fn to_string: (Cidr) -> CelString, name = "string", id = "cidr_to_string")?;
    cel::add_member_overload!(
        env,
        fn contains_ip: (Cidr, Ip) -> CelBool,
        name = "containsIP",
        id = "cidr_contains_ip_ip"
    )?;
    cel::add_member_overload!(
        env,
        fn contains_ip_string: (Cidr, CelString) -> Result<CelBool>,
        name = "containsIP",
        id = "cidr_contains_ip_string"
    )?;
    cel::add_member_overload!(
        env,
        fn contains_cidr: (Cidr, Cidr) -> CelBool,
        name = "containsCIDR",
        id = "cidr_contains_cidr"
    )?;
    cel::add_member_overload!(
        env,
        fn contains_cidr_string: (Cidr, CelString) -> Result<CelBool>,
        name = "containsCIDR",
        id = "cidr_contains_cidr_string"
    )?;
    cel::add_member_overload!(env, fn ip: (Cidr) -> Ip, id = "cidr_ip")?;
    cel::add_member_overload!(env, fn masked: (Cidr) -> Cidr, id = "cidr_masked")?;
    cel::add_member_overload!(env, fn prefix_length: (Cidr) -> CelInt, id = "cidr_prefix_length")?;
    Ok(())
}

fn to_cidr(s: &CelString<'_>) -> Result<Cidr, ExecutionError> {
    parse_cidr(s.inner()).map_err(|e| {
        fail(
            "cidr",
            format!("network address parse error during conversion from string: {e}"),
        )
    })
}

fn is_cidr(s: &CelString<'_>) -> CelBool {
    CelBool::from(parse_cidr(s.inner()).is_ok())
}

fn to_string(c: &Cidr) -> CelString<'static> {
    CelString::from(format!("{}/{}", c.addr, c.bits))
}

fn contains_ip(c: &Cidr, ip: &Ip) -> CelBool {
    CelBool::from(c.contains(ip.0))
}

/// An invalid address is "no such overload" in Kubernetes, not the address's error.
fn contains_ip_string(c: &Cidr, s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let ip = parse_ip(s.inner()).map_err(|_| fail("containsIP", "no such overload"))?;
    Ok(CelBool::from(c.contains(ip)))
}

fn contains_cidr(c: &Cidr, other: &Cidr) -> CelBool {
    CelBool::from(c.contains_cidr(*other))
}

fn contains_cidr_string(c: &Cidr, s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let other = to_cidr(s)?;
    Ok(CelBool::from(c.contains_cidr(other)))
}

fn ip(c: &Cidr) -> Ip {
    Ip(c.addr)
}

fn masked(c: &Cidr) -> Cidr {
    c.masked()
}

fn prefix_length(c: &Cidr) -> CelInt {
    CelInt::from(i64::from(c.bits))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use cel::Value;

    fn assert_true(expr: &str) {
        assert_eq!(eval(expr), Value::Bool(true), "{expr}");
    }

    #[test]
    fn what_is_a_cidr() {
        for ok in [
            "192.168.0.0/16",
            "::1/128",
            "192.168.0.1/16",
            "0.0.0.0/0",
            "2001:db8::/32",
        ] {
            assert_true(&format!("isCIDR('{ok}')"));
        }
        for bad in [
            "192.168.0.0/33",
            "::1/129",
            "192.168.0.0",
            "192.168.0.0/",
            "1.2.3.4/024",
            "1.2.3.4/+8",
            "::ffff:1.2.3.4/120",
            "fe80::1%eth0/64",
            "1.2.3/8",
        ] {
            assert_eq!(
                eval(&format!("isCIDR('{bad}')")),
                Value::Bool(false),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_read_as_kubernetes_s() {
        for (expr, e) in [
            (
                "cidr('192.168.0.0/')",
                r#"network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix("192.168.0.0/"): bad bits after slash: """#,
            ),
            (
                "cidr('10.0.0.0/33')",
                r#"network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range"#,
            ),
            (
                "cidr('10.0.0/8')",
                r#"network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix("10.0.0/8"): ParseAddr("10.0.0"): IPv4 address too short"#,
            ),
            (
                "cidr('::ffff:1.2.3.4/120')",
                r#"network address parse error during conversion from string: IPv4-mapped IPv6 address "::ffff:1.2.3.4/120" is not allowed"#,
            ),
            ("cidr('10.0.0.0/8').containsIP('nope')", "no such overload"),
        ] {
            assert_eq!(eval_err(expr), e, "{expr}");
        }
    }

    #[test]
    fn containment_and_parts() {
        for expr in [
            "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))",
            "!cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))",
            "cidr('192.168.0.0/24').containsIP('192.168.0.1')",
            "!cidr('192.168.0.0/24').containsIP('192.168.1.1')",
            "!cidr('0.0.0.0/0').containsIP('::1')",
            "cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))",
            "!cidr('192.168.1.0/24').containsCIDR(cidr('192.168.2.0/24'))",
            "cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')",
            "!cidr('192.168.0.0/24').containsCIDR('192.168.0.0/23')",
            "cidr('192.168.0.0/16').containsCIDR('192.168.0.1/32')",
            "cidr('2001:db8::/32').containsIP('2001:db8::1')",
            "!cidr('2001:db8::/32').containsIP('2001:dc8::1')",
            "cidr('2001:db8::/32').containsCIDR('2001:db8::/33')",
            "cidr('192.168.0.1/24').ip() == ip('192.168.0.1')",
            "cidr('::1/128').ip().family() == 6",
            "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
            "cidr('192.168.0.1/24') != cidr('192.168.0.1/24').masked()",
            "cidr('2001:db8:1::/32').masked() == cidr('2001:db8::/32')",
            "cidr('0.0.0.0/0').masked() == cidr('0.0.0.0/0')",
            "cidr('192.168.0.0/16').prefixLength() == 16",
            "string(cidr('192.168.0.0/24')) == '192.168.0.0/24'",
            "type(cidr('192.168.0.0/24')) == net.CIDR",
        ] {
            assert_true(expr);
        }
    }
}
