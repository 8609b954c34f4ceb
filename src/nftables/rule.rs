//! Rule builders: the expressions nft compiles each statement to (as `nft --debug=netlink`
//! shows them), registers included, so a rule built here lists back as the nft text in its doc.
//! Concatenate the vectors of several builders for one rule, e.g.
//! `[l4proto_eq(6), dnat(ip, 80)].concat()` is `meta l4proto tcp dnat to ip:80`.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{
    CmpOp, CtKey, DynsetOp, ElementData, Expr, FibFlags, FibResult, MetaKey, NatKind, PayloadBase,
    REG_1, REG_2, REG_VERDICT, RejectKind, Verdict, reg32,
};

/// NF_NAT_RANGE_PROTO_SPECIFIED: the nat expression sets the port too.
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
/// NF_NAT_RANGE_PROTO_RANDOM_FULLY: `fully-random` port allocation.
pub const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// ct state bit of `new` (NF_CT_STATE_BIT(IP_CT_NEW)).
const CT_STATE_NEW: u32 = 1 << 3;
/// RTN_LOCAL: what `fib … type local` compares with.
const RTN_LOCAL: u32 = 2;
/// ICMP_PORT_UNREACH.
const ICMP_PORT_UNREACH: u8 = 3;

const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;

fn ip_addr_cmp(offset: u32, ip: Ipv4Addr, op: CmpOp) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op,
            data: ip.octets().to_vec(),
        },
    ]
}

/// `ip saddr 10.0.0.1`
pub fn ip_saddr_eq(ip: Ipv4Addr) -> Vec<Expr> {
    ip_addr_cmp(IP_SADDR, ip, CmpOp::Eq)
}

/// `ip daddr 10.0.0.1`
pub fn ip_daddr_eq(ip: Ipv4Addr) -> Vec<Expr> {
    ip_addr_cmp(IP_DADDR, ip, CmpOp::Eq)
}

/// `ip saddr != 10.0.0.1`
pub fn ip_saddr_neq(ip: Ipv4Addr) -> Vec<Expr> {
    ip_addr_cmp(IP_SADDR, ip, CmpOp::Neq)
}

/// `ip daddr != 10.0.0.1`
pub fn ip_daddr_neq(ip: Ipv4Addr) -> Vec<Expr> {
    ip_addr_cmp(IP_DADDR, ip, CmpOp::Neq)
}

fn ip_addr_in(offset: u32, net: Ipv4Addr, prefix: u8, negate: bool) -> Vec<Expr> {
    let prefix = prefix.min(32);
    let op = if negate { CmpOp::Neq } else { CmpOp::Eq };
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let net = (u32::from(net) & mask).to_be_bytes();
    if prefix > 0 && prefix.is_multiple_of(8) {
        // As nft: a whole-byte prefix loads only those bytes and compares them.
        let len = u32::from(prefix / 8);
        return vec![
            Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op,
                data: net[..len as usize].to_vec(),
            },
        ];
    }
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg: REG_1,
        },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: mask.to_be_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: REG_1,
            op,
            data: net.to_vec(),
        },
    ]
}

/// `ip saddr 10.16.0.0/12` (`!=` with `negate`).
pub fn ip_saddr_in(net: Ipv4Addr, prefix: u8, negate: bool) -> Vec<Expr> {
    ip_addr_in(IP_SADDR, net, prefix, negate)
}

/// `ip daddr 127.0.0.0/8` (`!=` with `negate`).
pub fn ip_daddr_in(net: Ipv4Addr, prefix: u8, negate: bool) -> Vec<Expr> {
    ip_addr_in(IP_DADDR, net, prefix, negate)
}

/// `meta l4proto 6` (`tcp`)
pub fn l4proto_eq(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: vec![proto],
        },
    ]
}

/// `th dport 53` (the transport header's destination port, whatever the protocol).
pub fn th_dport_eq(port: u16) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: port.to_be_bytes().to_vec(),
        },
    ]
}

/// `ct state new`
pub fn ct_state_new() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: CtKey::State,
            dreg: REG_1,
        },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: CT_STATE_NEW.to_ne_bytes().to_vec(),
            xor: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

fn fib_type_local(flags: FibFlags, negate: bool) -> Vec<Expr> {
    vec![
        Expr::Fib {
            result: FibResult::AddrType,
            flags,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: if negate { CmpOp::Neq } else { CmpOp::Eq },
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// `fib daddr type local` (`fib daddr type != local` with `negate`).
pub fn fib_daddr_type_local(negate: bool) -> Vec<Expr> {
    fib_type_local(
        FibFlags {
            saddr: false,
            daddr: true,
        },
        negate,
    )
}

/// `fib saddr type local`
pub fn fib_saddr_type_local() -> Vec<Expr> {
    fib_type_local(
        FibFlags {
            saddr: true,
            daddr: false,
        },
        false,
    )
}

fn mark_bitwise(mask: u32, xor: u32) -> Expr {
    Expr::Bitwise {
        sreg: REG_1,
        dreg: REG_1,
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    }
}

/// `meta mark set meta mark or 0x4000`
pub fn mark_set_or(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        },
        mark_bitwise(!bits, bits),
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: REG_1,
        },
    ]
}

/// `meta mark and 0x4000 == 0`
pub fn mark_and_is_zero(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        },
        mark_bitwise(bits, 0),
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// `meta mark set meta mark xor 0x4000`
pub fn mark_set_xor(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        },
        mark_bitwise(u32::MAX, bits),
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: REG_1,
        },
    ]
}

/// `ip daddr . meta l4proto . th dport vmap @map` (key `ipv4_addr . inet_proto . inet_service`).
pub fn vmap_daddr_proto_dport(map: &str) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IP_DADDR,
            len: 4,
            dreg: REG_1,
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: reg32(1),
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: reg32(2),
        },
        Expr::Lookup {
            set: map.to_string(),
            sreg: REG_1,
            dreg: Some(REG_VERDICT),
            invert: false,
        },
    ]
}

/// `meta l4proto . th dport vmap @map` (key `inet_proto . inet_service`).
pub fn vmap_proto_dport(map: &str) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG_1,
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: reg32(1),
        },
        Expr::Lookup {
            set: map.to_string(),
            sreg: REG_1,
            dreg: Some(REG_VERDICT),
            invert: false,
        },
    ]
}

fn lookup_addr(offset: u32, set: &str) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg: REG_1,
        },
        Expr::Lookup {
            set: set.to_string(),
            sreg: REG_1,
            dreg: None,
            invert: false,
        },
    ]
}

/// `ip daddr @set`
pub fn lookup_daddr(set: &str) -> Vec<Expr> {
    lookup_addr(IP_DADDR, set)
}

/// `ip saddr @set`
pub fn lookup_saddr(set: &str) -> Vec<Expr> {
    lookup_addr(IP_SADDR, set)
}

/// `numgen random mod N` into register 1.
fn numgen_random(modulus: u32) -> Expr {
    Expr::Numgen {
        dreg: REG_1,
        modulus,
        random: true,
        offset: 0,
    }
}

/// `numgen random mod N vmap <map>`, `map` an anonymous map from `Batch::add_anonymous_map`
/// (key `DataType::Integer`, elements keyed `key::u32_host(0..N)`).
pub fn numgen_vmap(map: &str, modulus: u32) -> Vec<Expr> {
    vec![
        numgen_random(modulus),
        Expr::Lookup {
            set: map.to_string(),
            sreg: REG_1,
            dreg: Some(REG_VERDICT),
            invert: false,
        },
    ]
}

/// `numgen random mod N == value`: true for one packet in N on average. A chain of these with
/// moduli N, N-1, … 2 picks among N targets uniformly, with no set to create (iptables'
/// `statistic --mode random` cascade).
pub fn numgen_is(modulus: u32, value: u32) -> Vec<Expr> {
    vec![
        numgen_random(modulus),
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: value.to_ne_bytes().to_vec(),
        },
    ]
}

/// `dnat to 10.1.2.3:80`. The kernel takes a port only after a protocol match: put
/// `l4proto_eq(..)` before it, as kube-proxy's `meta l4proto tcp dnat to …` does.
pub fn dnat(ip: Ipv4Addr, port: u16) -> Vec<Expr> {
    vec![
        Expr::Immediate {
            dreg: REG_1,
            data: ElementData::Value(ip.octets().to_vec()),
        },
        Expr::Immediate {
            dreg: REG_2,
            data: ElementData::Value(port.to_be_bytes().to_vec()),
        },
        Expr::Nat {
            kind: NatKind::Dnat,
            addr_reg: REG_1,
            port_reg: Some(REG_2),
            flags: NF_NAT_RANGE_PROTO_SPECIFIED,
        },
    ]
}

/// `dnat ip to numgen random mod N map @map`: one of N destinations, uniformly, from a named
/// map keyed `key::u32_host(0..N)` whose values are `ipv4_addr . inet_service` (a `Set` with
/// `data: [Ipv4Addr, InetService]`, values `key::ipv4(ip)` then `key::port(port)`). As with
/// `dnat`, put `l4proto_eq(..)` before it.
pub fn dnat_numgen_map(map: &str, modulus: u32) -> Vec<Expr> {
    vec![
        numgen_random(modulus),
        Expr::Lookup {
            set: map.to_string(),
            sreg: REG_1,
            dreg: Some(REG_1),
            invert: false,
        },
        // The address lands in the first 32-bit register, the port (padded) in the next.
        Expr::Nat {
            kind: NatKind::Dnat,
            addr_reg: REG_1,
            port_reg: Some(reg32(1)),
            flags: 0,
        },
    ]
}

/// `ip saddr . ip daddr @set` (key `ipv4_addr . ipv4_addr`).
pub fn lookup_saddr_daddr(set: &str) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IP_SADDR,
            len: 4,
            dreg: REG_1,
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IP_DADDR,
            len: 4,
            dreg: reg32(1),
        },
        Expr::Lookup {
            set: set.to_string(),
            sreg: REG_1,
            dreg: None,
            invert: false,
        },
    ]
}

/// `masquerade` / `masquerade fully-random`
pub fn masquerade(fully_random: bool) -> Vec<Expr> {
    vec![Expr::Masq { fully_random }]
}

/// `update @set { ip saddr }` (with `timeout`: `update @set { ip saddr timeout 10s }`; without,
/// the set's default timeout applies).
pub fn dynset_update_saddr(set: &str, timeout: Option<Duration>) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IP_SADDR,
            len: 4,
            dreg: REG_1,
        },
        Expr::Dynset {
            set: set.to_string(),
            op: DynsetOp::Update,
            sreg_key: REG_1,
            timeout,
        },
    ]
}

/// `reject` in an ip table (`reject with icmp port-unreachable`).
pub fn reject_icmp_port_unreachable() -> Vec<Expr> {
    vec![Expr::Reject {
        kind: RejectKind::IcmpUnreach,
        code: ICMP_PORT_UNREACH,
    }]
}

/// `accept`, `drop`, `return`, `continue`, `jump c`, `goto c`.
pub fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Immediate {
        dreg: REG_VERDICT,
        data: ElementData::Verdict(v),
    }]
}

/// `counter`
pub fn counter() -> Vec<Expr> {
    vec![Expr::Counter]
}
