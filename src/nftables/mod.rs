//! nf_tables over netlink, from Rust: the subset of the kernel's nf_tables API the service proxy
//! needs (tables, chains, sets and verdict maps, rules made of kernel expressions), sent as one
//! atomic batch. No `nft` binary and no libnftnl: nodes are FROM scratch, and the C library is GPL.
//!
//! SKELETON: the public API the proxy is written against. The encoder fills it in.

use std::net::Ipv4Addr;
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
    pub data: Option<DataType>,
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

/// Kernel expressions (one `nft_expr` each), in the order a rule runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload { base: PayloadBase, offset: u32, len: u32, dreg: u32 },
    Meta { key: MetaKey, dreg: u32 },
    MetaSet { key: MetaKey, sreg: u32 },
    Cmp { sreg: u32, op: CmpOp, data: Vec<u8> },
    Bitwise { sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8> },
    /// A set lookup; with `dreg` a map lookup (dreg 0 = verdict map). `set` names a set made in
    /// the same batch or earlier; anonymous sets are made with `Batch::add_anonymous_map`.
    Lookup { set: String, sreg: u32, dreg: Option<u32>, invert: bool },
    Immediate { dreg: u32, data: ElementData },
    Numgen { dreg: u32, modulus: u32, random: bool, offset: u32 },
    Fib { result: FibResult, flags: FibFlags, dreg: u32 },
    Ct { key: CtKey, dreg: u32 },
    /// dnat/snat to the address (and port) in these registers.
    Nat { kind: NatKind, addr_reg: u32, port_reg: Option<u32>, flags: u32 },
    Masq { fully_random: bool },
    /// `update @set { <key in sreg> }` / `add`, refreshing the element's timeout.
    Dynset { set: String, op: DynsetOp, sreg_key: u32, timeout: Option<Duration> },
    Reject { kind: RejectKind, code: u8 },
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

/// One transaction: everything in it commits together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    // filled in by the encoder
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    /// Creates the table if missing (never an error when it exists).
    pub fn add_table(&mut self, _family: Family, _table: &str) {}
    pub fn delete_table(&mut self, _family: Family, _table: &str) {}
    /// Creates the chain if missing.
    pub fn add_chain(&mut self, _family: Family, _table: &str, _name: &str, _base: Option<&BaseChain>) {}
    /// Removes every rule of the chain.
    pub fn flush_chain(&mut self, _family: Family, _table: &str, _name: &str) {}
    pub fn delete_chain(&mut self, _family: Family, _table: &str, _name: &str) {}
    /// Appends a rule.
    pub fn add_rule(&mut self, _family: Family, _table: &str, _chain: &str, _exprs: Vec<Expr>) {}
    pub fn add_set(&mut self, _family: Family, _table: &str, _set: &Set) {}
    pub fn flush_set(&mut self, _family: Family, _table: &str, _name: &str) {}
    pub fn delete_set(&mut self, _family: Family, _table: &str, _name: &str) {}
    pub fn add_elements(&mut self, _family: Family, _table: &str, _set: &str, _elements: &[Element]) {}
    pub fn delete_elements(&mut self, _family: Family, _table: &str, _set: &str, _elements: &[Element]) {}
    /// An anonymous, constant map (as `numgen random mod 2 vmap { 0 : goto a, 1 : goto b }`
    /// makes); returns the name to use in a `Lookup` of a rule added later in this batch.
    pub fn add_anonymous_map(&mut self, _family: Family, _table: &str, _key: DataType, _data: DataType, _elements: &[Element]) -> String {
        String::new()
    }
    pub fn is_empty(&self) -> bool {
        true
    }
}

/// A netlink socket to nf_tables in the calling thread's network namespace.
pub struct Conn {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nf_tables refused the batch: {message} (errno {errno}){}", .at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default())]
    Refused { errno: i32, message: String, at: Option<String> },
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl Conn {
    pub fn new() -> Result<Conn, Error> {
        Ok(Conn {})
    }
    /// Sends the batch and waits for the kernel's answer to every message of it.
    pub fn apply(&mut self, _batch: &Batch) -> Result<(), Error> {
        Ok(())
    }
    /// Whether `table` exists (the proxy resyncs fully when it vanished).
    pub fn table_exists(&mut self, _family: Family, _table: &str) -> Result<bool, Error> {
        Ok(false)
    }
}

#[allow(dead_code)]
fn _unused(_: Ipv4Addr) {}
