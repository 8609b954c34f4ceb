//! `Batch`: nf_tables changes encoded as netlink messages, ready to be framed and sent by `Conn`.

use std::collections::HashMap;

use super::expr::{self, Context, SetRef};
use super::netlink::{self, Attrs, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use super::{BaseChain, ChainType, DataType, Element, Expr, Family, Hook, Policy, Set};

// NFT_MSG_*
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

// NFTA_TABLE_*
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
// NFTA_CHAIN_*
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
// NFTA_RULE_*
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
// NFTA_SET_*
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_FIELD_LEN: u16 = 1;
// NFT_SET_* flags
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_SET_CONCAT: u32 = 0x80;
/// NFT_DATA_VERDICT: the data type of verdict maps.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
// NFTA_SET_ELEM_LIST_* and NFTA_SET_ELEM_*
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;

/// An attribute's length is a u16: element lists are split into messages well below that.
const MAX_ELEMENTS_BYTES: usize = 48 * 1024;

/// One change of the batch.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// NFT_MSG_* (without the subsystem).
    pub ty: u16,
    pub flags: u16,
    pub family: Family,
    pub attrs: Vec<u8>,
    /// What the message does, for errors: "add rule #2 to chain svc-x (payload, cmp)".
    pub what: String,
}

/// A set of this batch: its id and key layout.
#[derive(Debug, Clone)]
struct NewSet {
    id: u32,
    key: Vec<DataType>,
}

/// One transaction: everything in it commits together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) msgs: Vec<Msg>,
    last_set_id: u32,
    /// Sets added in this batch, by (family, table, name): rules and elements refer to them by
    /// NFTA_*_SET_ID too, as nft does.
    sets: HashMap<(Family, String, String), NewSet>,
    /// Anonymous maps by the name `add_anonymous_map` returned; all are `__map%d` on the wire
    /// (the kernel numbers them) and are told apart by id.
    anonymous: HashMap<String, u32>,
    /// Rules added per chain, for naming a refused one.
    rules: HashMap<(Family, String, String), usize>,
}

/// The name all anonymous maps have on the wire; the kernel replaces `%d` by a free number.
const ANONYMOUS_MAP_NAME: &str = "__map%d";

struct RuleCtx<'a> {
    batch: &'a Batch,
    family: Family,
    table: &'a str,
}

impl Context for RuleCtx<'_> {
    fn nat_family(&self) -> u8 {
        // An inet table's nat needs the address family: the builders only make IPv4 addresses.
        match self.family {
            Family::Ip6 => Family::Ip6.nfproto(),
            Family::Ip | Family::Inet => Family::Ip.nfproto(),
        }
    }
    fn set(&self, name: &str) -> SetRef {
        self.batch.set_ref(self.family, self.table, name)
    }
}

fn key_type(key: &[DataType]) -> u32 {
    // nft's concatenated types: each part's TYPE_* shifted in, 6 bits apiece.
    key.iter().fold(0, |acc, t| (acc << 6) | t.nft_type())
}

/// NFTA_SET_USERDATA for `nft list`: the kernel ignores it, nft reads the key's byte order from
/// it (libnftnl's NFTNL_UDATA_SET_KEYBYTEORDER: a u8 type 0, u8 length 4, u32 host-order value,
/// BYTEORDER_HOST_ENDIAN 1 or BIG_ENDIAN 2). Without it nft prints a numgen map's host-order
/// integer keys byte-swapped (1 as 16777216). Only one-part keys get it, as the concatenations'
/// parts have fixed byte orders.
fn put_key_byteorder(a: &mut Attrs, key: &[DataType]) {
    if let [t] = key {
        let order: u32 = match t {
            DataType::Integer | DataType::Mark => 1,
            _ => 2,
        };
        let mut udata = vec![0u8, 4];
        udata.extend_from_slice(&order.to_ne_bytes());
        a.put(NFTA_SET_USERDATA, &udata);
    }
}

fn key_len(key: &[DataType]) -> u32 {
    if key.len() == 1 {
        key[0].len()
    } else {
        key.iter().map(|t| (t.len() + 3) & !3).sum()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    fn push(&mut self, ty: u16, flags: u16, family: Family, attrs: Attrs, what: String) {
        self.msgs.push(Msg {
            ty,
            flags: flags | NLM_F_REQUEST | NLM_F_ACK,
            family,
            attrs: attrs.buf,
            what,
        });
    }

    fn set_ref(&self, family: Family, table: &str, name: &str) -> SetRef {
        if let Some(id) = self.anonymous.get(name) {
            return SetRef {
                name: ANONYMOUS_MAP_NAME.to_string(),
                id: Some(*id),
            };
        }
        let id = self
            .sets
            .get(&(family, table.to_string(), name.to_string()))
            .map(|s| s.id);
        SetRef {
            name: name.to_string(),
            id,
        }
    }

    /// Creates the table if missing (never an error when it exists).
    pub fn add_table(&mut self, family: Family, table: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_TABLE_NAME, table);
        a.put_be32(NFTA_TABLE_FLAGS, 0);
        self.push(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            family,
            a,
            format!("add table {table}"),
        );
    }

    pub fn delete_table(&mut self, family: Family, table: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_TABLE_NAME, table);
        self.push(
            NFT_MSG_DELTABLE,
            0,
            family,
            a,
            format!("delete table {table}"),
        );
    }

    /// Creates the chain if missing.
    pub fn add_chain(&mut self, family: Family, table: &str, name: &str, base: Option<&BaseChain>) {
        let mut a = Attrs::new();
        a.put_str(NFTA_CHAIN_TABLE, table);
        a.put_str(NFTA_CHAIN_NAME, name);
        if let Some(b) = base {
            a.put_str(
                NFTA_CHAIN_TYPE,
                match b.kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                    ChainType::Route => "route",
                },
            );
            // NF_DROP 0, NF_ACCEPT 1
            a.put_be32(NFTA_CHAIN_POLICY, u32::from(b.policy == Policy::Accept));
            a.nest(NFTA_CHAIN_HOOK, |a| {
                // NF_INET_PRE_ROUTING … NF_INET_POST_ROUTING
                let hooknum = match b.hook {
                    Hook::Prerouting => 0,
                    Hook::Input => 1,
                    Hook::Forward => 2,
                    Hook::Output => 3,
                    Hook::Postrouting => 4,
                };
                a.put_be32(NFTA_HOOK_HOOKNUM, hooknum);
                a.put_be32(NFTA_HOOK_PRIORITY, b.priority as u32);
            });
        }
        self.push(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            family,
            a,
            format!("add chain {name}"),
        );
    }

    /// Removes every rule of the chain (a DELRULE naming only table and chain).
    pub fn flush_chain(&mut self, family: Family, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_RULE_TABLE, table);
        a.put_str(NFTA_RULE_CHAIN, name);
        self.push(NFT_MSG_DELRULE, 0, family, a, format!("flush chain {name}"));
    }

    pub fn delete_chain(&mut self, family: Family, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_CHAIN_TABLE, table);
        a.put_str(NFTA_CHAIN_NAME, name);
        self.push(
            NFT_MSG_DELCHAIN,
            0,
            family,
            a,
            format!("delete chain {name}"),
        );
    }

    /// Appends a rule.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, exprs: Vec<Expr>) {
        let mut a = Attrs::new();
        a.put_str(NFTA_RULE_TABLE, table);
        a.put_str(NFTA_RULE_CHAIN, chain);
        {
            let ctx = RuleCtx {
                batch: self,
                family,
                table,
            };
            a.nest(NFTA_RULE_EXPRESSIONS, |a| {
                for e in &exprs {
                    expr::put_expr(a, e, &ctx);
                }
            });
        }
        let n = self
            .rules
            .entry((family, table.to_string(), chain.to_string()))
            .or_default();
        *n += 1;
        let names: Vec<&str> = exprs.iter().map(expr::name).collect();
        let what = format!("add rule #{n} to chain {chain} ({})", names.join(", "));
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family,
            a,
            what,
        );
    }

    fn new_set_id(&mut self) -> u32 {
        self.last_set_id += 1;
        self.last_set_id
    }

    pub fn add_set(&mut self, family: Family, table: &str, set: &Set) {
        let id = self.new_set_id();
        let mut flags = 0;
        if set.flags.anonymous {
            flags |= NFT_SET_ANONYMOUS;
        }
        if set.flags.constant {
            flags |= NFT_SET_CONSTANT;
        }
        if set.flags.interval {
            flags |= NFT_SET_INTERVAL;
        }
        if set.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if set.flags.timeout || set.timeout.is_some() {
            flags |= NFT_SET_TIMEOUT;
        }
        if set.flags.dynamic {
            flags |= NFT_SET_EVAL;
        }
        // Only interval sets (the pipapo backend) take the field lengths of a concatenation, and
        // then the kernel wants NFT_SET_CONCAT too; nft sends neither for hashed concatenations.
        let concat = set.flags.interval && set.key.len() > 1;
        if concat {
            flags |= NFT_SET_CONCAT;
        }
        let mut a = Attrs::new();
        a.put_str(NFTA_SET_TABLE, table);
        a.put_str(NFTA_SET_NAME, &set.name);
        a.put_be32(NFTA_SET_FLAGS, flags);
        a.put_be32(NFTA_SET_KEY_TYPE, key_type(&set.key));
        a.put_be32(NFTA_SET_KEY_LEN, key_len(&set.key));
        match set.data.as_deref() {
            Some([DataType::Verdict]) => {
                a.put_be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                a.put_be32(NFTA_SET_DATA_LEN, 0);
            }
            Some(d) => {
                a.put_be32(NFTA_SET_DATA_TYPE, key_type(d));
                a.put_be32(NFTA_SET_DATA_LEN, key_len(d));
            }
            None => {}
        }
        a.put_be32(NFTA_SET_ID, id);
        if let Some(t) = set.timeout {
            a.put_be64(NFTA_SET_TIMEOUT, t.as_millis() as u64);
        }
        if concat {
            a.nest(NFTA_SET_DESC, |a| {
                a.nest(NFTA_SET_DESC_CONCAT, |a| {
                    for t in &set.key {
                        a.nest(NFTA_LIST_ELEM, |a| a.put_be32(NFTA_SET_FIELD_LEN, t.len()));
                    }
                });
            });
        }
        put_key_byteorder(&mut a, &set.key);
        let kind = if set.data.is_some() { "map" } else { "set" };
        self.push(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            family,
            a,
            format!("add {kind} {}", set.name),
        );
        self.sets.insert(
            (family, table.to_string(), set.name.clone()),
            NewSet {
                id,
                key: set.key.clone(),
            },
        );
    }

    /// Removes every element of the set (a DELSETELEM without elements).
    pub fn flush_set(&mut self, family: Family, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        a.put_str(NFTA_SET_ELEM_LIST_SET, name);
        self.push(
            NFT_MSG_DELSETELEM,
            0,
            family,
            a,
            format!("flush set {name}"),
        );
    }

    pub fn delete_set(&mut self, family: Family, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.put_str(NFTA_SET_TABLE, table);
        a.put_str(NFTA_SET_NAME, name);
        self.push(NFT_MSG_DELSET, 0, family, a, format!("delete set {name}"));
    }

    /// Adds elements (in as many NEWSETELEM messages as their size needs). A set made in this
    /// batch with a one-part key of a type shorter than 4 bytes (`inet_proto`, `inet_service`)
    /// takes keys as `key::proto`/`key::port` make them; for such a set made in an earlier batch,
    /// give keys at the type's own length.
    pub fn add_elements(&mut self, family: Family, table: &str, set: &str, elements: &[Element]) {
        self.elements(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            set,
            elements,
            "add elements to",
        );
    }

    pub fn delete_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elements: &[Element],
    ) {
        self.elements(
            NFT_MSG_DELSETELEM,
            0,
            family,
            table,
            set,
            elements,
            "delete elements from",
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn elements(
        &mut self,
        ty: u16,
        flags: u16,
        family: Family,
        table: &str,
        set: &str,
        elements: &[Element],
        verb: &str,
    ) {
        let r = self.set_ref(family, table, set);
        // The kernel wants a key of exactly the set's length: cut the register padding off a
        // one-part key shorter than 4 bytes.
        let key_len = self
            .sets
            .get(&(family, table.to_string(), set.to_string()))
            .filter(|s| s.key.len() == 1)
            .map(|s| s.key[0].len() as usize);
        let display = if self.anonymous.contains_key(set) {
            "anonymous map"
        } else {
            set
        };
        // No elements, no message (an empty list would be a no-op anyway).
        let mut start = 0;
        while start < elements.len() {
            let mut a = Attrs::new();
            a.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            a.put_str(NFTA_SET_ELEM_LIST_SET, &r.name);
            // Only additions name the set by id too (the kernel's delsetelem looks up by name).
            if let (Some(id), NFT_MSG_NEWSETELEM) = (r.id, ty) {
                a.put_be32(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            let mut end = start;
            a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                let base = a.len();
                while end < elements.len() && (end == start || a.len() - base < MAX_ELEMENTS_BYTES)
                {
                    // Numbered from 1 in each message as nft does (the kernel reads any type here).
                    put_element(a, (end - start + 1) as u16, &elements[end], key_len);
                    end += 1;
                }
            });
            let what = format!(
                "{verb} {display} ({} of {} elements from #{})",
                end - start,
                elements.len(),
                start + 1
            );
            self.push(ty, flags, family, a, what);
            start = end;
        }
    }

    /// An anonymous, constant map (as `numgen random mod 2 vmap { 0 : goto a, 1 : goto b }`
    /// makes), with its elements; returns the name to use in a `Lookup` of a rule added later in
    /// this batch (the name means something only to this batch: the kernel names the map).
    pub fn add_anonymous_map(
        &mut self,
        family: Family,
        table: &str,
        key: DataType,
        data: DataType,
        elements: &[Element],
    ) -> String {
        let id = self.new_set_id();
        let handle = format!("{ANONYMOUS_MAP_NAME}#{id}");
        let mut a = Attrs::new();
        a.put_str(NFTA_SET_TABLE, table);
        a.put_str(NFTA_SET_NAME, ANONYMOUS_MAP_NAME);
        a.put_be32(
            NFTA_SET_FLAGS,
            NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
        );
        a.put_be32(NFTA_SET_KEY_TYPE, key.nft_type());
        a.put_be32(NFTA_SET_KEY_LEN, key.len());
        if data == DataType::Verdict {
            a.put_be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            a.put_be32(NFTA_SET_DATA_LEN, 0);
        } else {
            a.put_be32(NFTA_SET_DATA_TYPE, data.nft_type());
            a.put_be32(NFTA_SET_DATA_LEN, data.len());
        }
        a.put_be32(NFTA_SET_ID, id);
        a.nest(NFTA_SET_DESC, |a| {
            a.put_be32(NFTA_SET_DESC_SIZE, elements.len() as u32)
        });
        put_key_byteorder(&mut a, &[key]);
        self.push(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            family,
            a,
            "add anonymous map".to_string(),
        );
        self.anonymous.insert(handle.clone(), id);
        self.sets.insert(
            (family, table.to_string(), handle.clone()),
            NewSet { id, key: vec![key] },
        );
        if !elements.is_empty() {
            self.add_elements(family, table, &handle, elements);
        }
        handle
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Number of messages (changes) in the batch, without the begin and end markers.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// The whole batch as one datagram, sequence numbers from `seq` (BATCH_BEGIN) on: the
    /// changes get `seq + 1 ..= seq + len()`, BATCH_END `seq + len() + 1`.
    pub(crate) fn encode(&self, seq: u32) -> Vec<u8> {
        let size: usize = self.msgs.iter().map(|m| 20 + m.attrs.len()).sum::<usize>() + 40;
        let mut out = Vec::with_capacity(size);
        let res_id = netlink::NFNL_SUBSYS_NFTABLES;
        netlink::push_message(
            &mut out,
            netlink::NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            res_id,
            &[],
        );
        for (i, m) in self.msgs.iter().enumerate() {
            let ty = (netlink::NFNL_SUBSYS_NFTABLES << 8) | m.ty;
            let s = seq.wrapping_add(1 + i as u32);
            netlink::push_message(&mut out, ty, m.flags, s, m.family.nfproto(), 0, &m.attrs);
        }
        let end = seq.wrapping_add(1 + self.msgs.len() as u32);
        netlink::push_message(
            &mut out,
            netlink::NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            res_id,
            &[],
        );
        out
    }
}

fn put_element(a: &mut Attrs, n: u16, e: &Element, key_len: Option<usize>) {
    a.nest(n, |a| {
        if let Some(t) = e.timeout {
            a.put_be64(NFTA_SET_ELEM_TIMEOUT, t.as_millis() as u64);
        }
        let key = match key_len {
            Some(n) if n < e.key.len() && e.key[n..].iter().all(|&b| b == 0) => &e.key[..n],
            _ => &e.key[..],
        };
        a.nest(NFTA_SET_ELEM_KEY, |a| a.put(expr::NFTA_DATA_VALUE, key));
        if let Some(d) = &e.data {
            expr::put_data(a, NFTA_SET_ELEM_DATA, d);
        }
    });
}
