//! nf_tables over netlink, from Rust: the subset of the kernel's nf_tables API the service proxy
//! needs (tables, chains, sets and verdict maps, rules made of kernel expressions), sent as one
//! atomic batch. No `nft` binary and no libnftnl: nodes are FROM scratch, and the C library is GPL.
//!
//! The message formats follow the kernel's uapi (linux/netfilter/nf_tables.h, nfnetlink.h), and
//! the attribute layout follows what `nft --debug=mnl` sends, which the unit tests compare against.
//! A batch is one datagram: `NFNL_MSG_BATCH_BEGIN`, the changes, `NFNL_MSG_BATCH_END`; the kernel
//! commits it whole or aborts it whole, and answers each change (NLM_F_ACK) with an ack or errno.

// The encoder covers the kernel's vocabulary beyond what today's rules use (other families,
// verdicts, operators); all of it is encoded and tested against nft's bytes.
#![allow(dead_code)]

mod batch;
mod conn;
mod expr;
pub(crate) mod netlink;
pub mod resync;
pub mod rule;
#[cfg(test)]
pub mod testing;

pub use batch::Batch;
pub use conn::Conn;

#[cfg(test)]
mod tests;

use std::time::Duration;

/// NFPROTO_* of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// What makes a chain a base chain (attached to a netfilter hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    /// e.g. -100 for dstnat, 100 for srcnat, 0 for filter.
    pub priority: i32,
    pub policy: Policy,
}

/// The data types of set keys and map values (nft's TYPE_*; a key of several is a concatenation,
/// each part padded to 4 bytes as the kernel's registers are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    InetProto,
    InetService,
    Mark,
    Integer,
    Verdict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetFlags {
    pub anonymous: bool,
    pub constant: bool,
    pub interval: bool,
    pub timeout: bool,
    pub dynamic: bool,
}

/// A named set or map of a table (`data: Some(..)` makes it a map; Verdict makes it a vmap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Vec<DataType>,
    /// The value type of a map: one type, or the parts of a concatenation (e.g. the address
    /// and port a `dnat … map` takes), laid out as keys are.
    pub data: Option<Vec<DataType>>,
    pub flags: SetFlags,
    /// Default timeout of elements (sets with `flags.timeout`).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

/// Data of a map element: a verdict (vmaps) or bytes in the value type's layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElementData {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// One element: the key bytes (parts concatenated, each padded to 4 bytes: see `key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    pub key: Vec<u8>,
    pub data: Option<ElementData>,
    pub timeout: Option<Duration>,
}

/// Key parts in register layout (network byte order, padded to 4 bytes).
pub mod key {
    use std::net::Ipv4Addr;
    pub fn ipv4(ip: Ipv4Addr) -> Vec<u8> {
        ip.octets().to_vec()
    }
    pub fn proto(p: u8) -> Vec<u8> {
        vec![p, 0, 0, 0]
    }
    pub fn port(p: u16) -> Vec<u8> {
        let b = p.to_be_bytes();
        vec![b[0], b[1], 0, 0]
    }
    /// An Integer/Mark value in host byte order, as numgen and meta mark produce it.
    pub fn u32_host(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
}

/// Registers: the verdict register and the 32-bit ones (`NFT_REG32_00` + n).
pub const REG_VERDICT: u32 = 0;
pub const fn reg32(n: u32) -> u32 {
    8 + n
}
/// The 128-bit registers nft names when a value starts on a 16-byte boundary: `NFT_REG_1`
/// shares its first 4 bytes with `reg32(0)`, `NFT_REG_2` with `reg32(4)`. The rule builders use
/// them as nft does, so their bytes equal nft's.
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;

/// Kernel expressions (one `nft_expr` each), in the order a rule runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    MetaSet {
        key: MetaKey,
        sreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// A set lookup; with `dreg` a map lookup (dreg 0 = verdict map). `set` names a set made in
    /// the same batch or earlier; anonymous sets are made with `Batch::add_anonymous_map`.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate {
        dreg: u32,
        data: ElementData,
    },
    Numgen {
        dreg: u32,
        modulus: u32,
        random: bool,
        offset: u32,
    },
    Fib {
        result: FibResult,
        flags: FibFlags,
        dreg: u32,
    },
    Ct {
        key: CtKey,
        dreg: u32,
    },
    /// dnat/snat to the address (and port) in these registers.
    Nat {
        kind: NatKind,
        addr_reg: u32,
        port_reg: Option<u32>,
        flags: u32,
    },
    Masq {
        fully_random: bool,
    },
    /// `update @set { <key in sreg> }` / `add`, refreshing the element's timeout.
    Dynset {
        set: String,
        op: DynsetOp,
        sreg_key: u32,
        timeout: Option<Duration>,
    },
    Reject {
        kind: RejectKind,
        code: u8,
    },
    Counter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    L4Proto,
    Mark,
    NfProto,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    AddrType,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FibFlags {
    pub saddr: bool,
    pub daddr: bool,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Status,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Snat,
    Dnat,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    Add,
    Update,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    IcmpUnreach,
    TcpRst,
    IcmpxUnreach,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a message: the whole batch was rolled back. `message` is the errno's
    /// text (and the kernel's extended-ack text, when it gave one); `at` names the message, e.g.
    /// "add rule #2 to chain svc-x (payload, cmp, immediate)".
    #[error("nf_tables refused the batch: {message} (errno {errno}){}", .at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default())]
    Refused {
        errno: i32,
        message: String,
        at: Option<String>,
    },
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl Family {
    /// NFPROTO_*.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Ip6 => 10,
        }
    }
}

impl DataType {
    /// nft's TYPE_* number (what `nft list` reads back to print the set's type).
    pub fn nft_type(self) -> u32 {
        match self {
            DataType::Verdict => 1,
            DataType::Integer => 4,
            DataType::Ipv4Addr => 7,
            DataType::InetProto => 12,
            DataType::InetService => 13,
            DataType::Mark => 19,
        }
    }
    /// Bytes of a value of this type (unpadded).
    pub fn len(self) -> u32 {
        match self {
            DataType::Verdict => 0,
            DataType::InetProto => 1,
            DataType::InetService => 2,
            DataType::Ipv4Addr | DataType::Integer | DataType::Mark => 4,
        }
    }
}
