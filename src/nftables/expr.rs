//! Encoding of kernel expressions (`NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { … } }`),
//! attribute numbers from linux/netfilter/nf_tables.h. Attributes go in the order nft (libnftnl)
//! sends them, so the bytes compare equal to what `nft --debug=mnl` shows.

use super::netlink::Attrs;
use super::{
    CmpOp, CtKey, DynsetOp, ElementData, Expr, FibResult, MetaKey, NatKind, PayloadBase,
    RejectKind, Verdict,
};

// NFTA_LIST_ELEM / NFTA_EXPR_*
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

// NFTA_DATA_* and NFTA_VERDICT_*
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

// Verdict codes (NF_DROP, NF_ACCEPT, NFT_CONTINUE, NFT_JUMP, NFT_GOTO, NFT_RETURN).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// Where a set named by a rule lives: its name on the wire and, for a set added in the same
/// batch, its NFTA_SET_ID (the kernel finds sets of the open transaction by id).
#[derive(Debug, Clone)]
pub struct SetRef {
    pub name: String,
    pub id: Option<u32>,
}

/// What encoding a rule needs from the batch around it.
pub trait Context {
    /// NFPROTO_* for nat expressions.
    fn nat_family(&self) -> u8;
    fn set(&self, name: &str) -> SetRef;
}

pub fn put_verdict(a: &mut Attrs, v: &Verdict) {
    a.nest(NFTA_DATA_VERDICT, |a| {
        let (code, chain) = match v {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Continue => (NFT_CONTINUE, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        };
        a.put_be32(NFTA_VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            a.put_str(NFTA_VERDICT_CHAIN, c);
        }
    });
}

/// NFTA_DATA_VALUE or NFTA_DATA_VERDICT, inside an attribute of type `ty`.
pub fn put_data(a: &mut Attrs, ty: u16, d: &ElementData) {
    a.nest(ty, |a| match d {
        ElementData::Value(v) => a.put(NFTA_DATA_VALUE, v),
        ElementData::Verdict(v) => put_verdict(a, v),
    });
}

fn put_value(a: &mut Attrs, ty: u16, v: &[u8]) {
    a.nest(ty, |a| a.put(NFTA_DATA_VALUE, v));
}

pub fn name(e: &Expr) -> &'static str {
    match e {
        Expr::Payload { .. } => "payload",
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Immediate { .. } => "immediate",
        Expr::Numgen { .. } => "numgen",
        Expr::Fib { .. } => "fib",
        Expr::Ct { .. } => "ct",
        Expr::Nat { .. } => "nat",
        Expr::Masq { .. } => "masq",
        Expr::Dynset { .. } => "dynset",
        Expr::Reject { .. } => "reject",
        Expr::Counter => "counter",
    }
}

fn meta_key(k: MetaKey) -> u32 {
    match k {
        MetaKey::Mark => 3,     // NFT_META_MARK
        MetaKey::NfProto => 15, // NFT_META_NFPROTO
        MetaKey::L4Proto => 16, // NFT_META_L4PROTO
    }
}

/// Appends `NFTA_LIST_ELEM { name, data }` for one expression.
pub fn put_expr(a: &mut Attrs, e: &Expr, ctx: &dyn Context) {
    a.nest(NFTA_LIST_ELEM, |a| {
        a.put_str(NFTA_EXPR_NAME, name(e));
        a.nest(NFTA_EXPR_DATA, |a| put_expr_data(a, e, ctx));
    });
}

fn put_expr_data(a: &mut Attrs, e: &Expr, ctx: &dyn Context) {
    match e {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            // NFTA_PAYLOAD_DREG, BASE, OFFSET, LEN
            a.put_be32(1, *dreg);
            a.put_be32(
                2,
                match base {
                    PayloadBase::Link => 0,
                    PayloadBase::Network => 1,
                    PayloadBase::Transport => 2,
                },
            );
            a.put_be32(3, *offset);
            a.put_be32(4, *len);
        }
        Expr::Meta { key, dreg } => {
            // NFTA_META_KEY, DREG
            a.put_be32(2, meta_key(*key));
            a.put_be32(1, *dreg);
        }
        Expr::MetaSet { key, sreg } => {
            // NFTA_META_KEY, SREG
            a.put_be32(2, meta_key(*key));
            a.put_be32(3, *sreg);
        }
        Expr::Cmp { sreg, op, data } => {
            // NFTA_CMP_SREG, OP, DATA
            a.put_be32(1, *sreg);
            a.put_be32(
                2,
                match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                    CmpOp::Lt => 2,
                    CmpOp::Lte => 3,
                    CmpOp::Gt => 4,
                    CmpOp::Gte => 5,
                },
            );
            put_value(a, 3, data);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            // NFTA_BITWISE_SREG, DREG, OP (NFT_BITWISE_BOOL: the kernel's default, sent
            // explicitly as nft does for mark arithmetic), LEN, MASK, XOR
            a.put_be32(1, *sreg);
            a.put_be32(2, *dreg);
            a.put_be32(6, 0);
            a.put_be32(3, mask.len() as u32);
            put_value(a, 4, mask);
            put_value(a, 5, xor);
        }
        Expr::Lookup {
            set,
            sreg,
            dreg,
            invert,
        } => {
            let r = ctx.set(set);
            // NFTA_LOOKUP_SREG, DREG, SET, SET_ID, FLAGS (NFT_LOOKUP_F_INV)
            a.put_be32(2, *sreg);
            if let Some(d) = dreg {
                a.put_be32(3, *d);
            }
            a.put_str(1, &r.name);
            if let Some(id) = r.id {
                a.put_be32(4, id);
            }
            if *invert {
                a.put_be32(5, 1);
            }
        }
        Expr::Immediate { dreg, data } => {
            // NFTA_IMMEDIATE_DREG, DATA
            a.put_be32(1, *dreg);
            put_data(a, 2, data);
        }
        Expr::Numgen {
            dreg,
            modulus,
            random,
            offset,
        } => {
            // NFTA_NG_DREG, MODULUS, TYPE (NFT_NG_INCREMENTAL 0 / NFT_NG_RANDOM 1), OFFSET
            a.put_be32(1, *dreg);
            a.put_be32(2, *modulus);
            a.put_be32(3, u32::from(*random));
            a.put_be32(4, *offset);
        }
        Expr::Fib {
            result,
            flags,
            dreg,
        } => {
            // NFTA_FIB_FLAGS (NFTA_FIB_F_SADDR 1, DADDR 2), RESULT, DREG
            let mut f = 0;
            if flags.saddr {
                f |= 1;
            }
            if flags.daddr {
                f |= 2;
            }
            a.put_be32(3, f);
            a.put_be32(
                2,
                match result {
                    FibResult::AddrType => 3, // NFT_FIB_RESULT_ADDRTYPE
                },
            );
            a.put_be32(1, *dreg);
        }
        Expr::Ct { key, dreg } => {
            // NFTA_CT_KEY (NFT_CT_STATE 0, NFT_CT_STATUS 2), DREG
            a.put_be32(
                2,
                match key {
                    CtKey::State => 0,
                    CtKey::Status => 2,
                },
            );
            a.put_be32(1, *dreg);
        }
        Expr::Nat {
            kind,
            addr_reg,
            port_reg,
            flags,
        } => {
            // NFTA_NAT_TYPE (NFT_NAT_SNAT 0, DNAT 1), FAMILY, REG_ADDR_MIN, REG_PROTO_MIN, FLAGS
            a.put_be32(
                1,
                match kind {
                    NatKind::Snat => 0,
                    NatKind::Dnat => 1,
                },
            );
            a.put_be32(2, u32::from(ctx.nat_family()));
            a.put_be32(3, *addr_reg);
            if let Some(p) = port_reg {
                a.put_be32(5, *p);
            }
            if *flags != 0 {
                a.put_be32(7, *flags);
            }
        }
        Expr::Masq { fully_random } => {
            // NFTA_MASQ_FLAGS: NF_NAT_RANGE_PROTO_RANDOM_FULLY
            if *fully_random {
                a.put_be32(1, super::rule::NF_NAT_RANGE_PROTO_RANDOM_FULLY);
            }
        }
        Expr::Dynset {
            set,
            op,
            sreg_key,
            timeout,
        } => {
            let r = ctx.set(set);
            // NFTA_DYNSET_SREG_KEY, OP (NFT_DYNSET_OP_ADD 0, UPDATE 1), TIMEOUT (ms), SET_NAME,
            // SET_ID
            a.put_be32(4, *sreg_key);
            a.put_be32(
                3,
                match op {
                    DynsetOp::Add => 0,
                    DynsetOp::Update => 1,
                },
            );
            if let Some(t) = timeout {
                a.put_be64(6, t.as_millis() as u64);
            }
            a.put_str(1, &r.name);
            if let Some(id) = r.id {
                a.put_be32(2, id);
            }
        }
        Expr::Reject { kind, code } => {
            // NFTA_REJECT_TYPE (NFT_REJECT_ICMP_UNREACH 0, TCP_RST 1, ICMPX_UNREACH 2), ICMP_CODE
            a.put_be32(
                1,
                match kind {
                    RejectKind::IcmpUnreach => 0,
                    RejectKind::TcpRst => 1,
                    RejectKind::IcmpxUnreach => 2,
                },
            );
            a.put_u8(2, *code);
        }
        Expr::Counter => {}
    }
}
