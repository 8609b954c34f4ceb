//! Deleting conntrack entries over ctnetlink (NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK), in the
//! calling thread's network namespace: kube-proxy's stale-UDP cleanup. A UDP "connection" lives
//! on in conntrack as long as packets keep coming, so after a service's endpoints change, clients
//! keep being DNATed to the old endpoint until its entry is removed; likewise when a service gets
//! its first endpoint, entries made while packets to it were rejected must go.
//!
//! The dump (IPCTNL_MSG_CT_GET with NLM_F_DUMP) lists every IPv4 entry; the matching ones are
//! deleted one by one (IPCTNL_MSG_CT_DELETE naming the original tuple and the entry's id, so an
//! entry that was replaced meanwhile is left alone). Attribute numbers from the kernel's uapi
//! linux/netfilter/nfnetlink_conntrack.h.

// The service proxy is being written against this API; until it lands, it is unused.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use crate::nftables::Error;
use crate::nftables::netlink::{self, Attr, Attrs, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Socket};

pub type Result<T> = std::result::Result<T, Error>;

const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = libc::AF_INET as u8;

/// One direction of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// An entry as the dump shows it, with what deleting it takes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    /// The CTA_TUPLE_ORIG attribute as the kernel sent it (sent back to delete the entry).
    orig_raw: Vec<u8>,
    id: Option<u32>,
    zone: Option<u16>,
}

fn tuple(a: &Attr) -> Tuple {
    let mut t = Tuple::default();
    for part in a.attrs() {
        match part.ty {
            CTA_TUPLE_IP => {
                for ip in part.attrs() {
                    let addr = ip
                        .data
                        .get(..4)
                        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                    match ip.ty {
                        CTA_IP_V4_SRC => t.src = addr,
                        CTA_IP_V4_DST => t.dst = addr,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in part.attrs() {
                    match p.ty {
                        CTA_PROTO_NUM => t.proto = p.u8().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.sport = p.be16().unwrap_or(0),
                        CTA_PROTO_DST_PORT => t.dport = p.be16().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let mut e = Entry {
        orig: Tuple::default(),
        reply: Tuple::default(),
        orig_raw: Vec::new(),
        id: None,
        zone: None,
    };
    // After the nfgenmsg.
    for a in netlink::attrs(payload.get(4..)?) {
        match a.ty {
            CTA_TUPLE_ORIG => {
                e.orig = tuple(&a);
                e.orig_raw = a.data.to_vec();
            }
            CTA_TUPLE_REPLY => e.reply = tuple(&a),
            CTA_ID => e.id = a.be32(),
            CTA_ZONE => e.zone = a.be16(),
            _ => {}
        }
    }
    (!e.orig_raw.is_empty()).then_some(e)
}

fn refused(errno: i32, text: Option<String>, at: String) -> Error {
    let mut message = netlink::strerror(errno);
    if let Some(t) = text {
        message = format!("{message}: {t}");
    }
    Error::Refused {
        errno,
        message,
        at: Some(at),
    }
}

/// Every IPv4 entry of the calling thread's network namespace.
pub fn dump(sock: &mut Socket) -> Result<Vec<Entry>> {
    let seq = 1;
    let mut req = Vec::new();
    let ty = (netlink::NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    netlink::push_message(
        &mut req,
        ty,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        AF_INET,
        0,
        &[],
    );
    sock.send(&req)?;
    let mut out = Vec::new();
    loop {
        let buf = sock.recv()?;
        for m in netlink::messages(buf) {
            if m.seq != seq {
                continue;
            }
            if m.ty == netlink::NLMSG_DONE {
                return Ok(out);
            }
            if let Some((errno, text)) = m.error() {
                if errno == 0 {
                    return Ok(out);
                }
                return Err(refused(errno, text, "dump conntrack entries".into()));
            }
            if m.ty == (netlink::NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
                && let Some(e) = parse_entry(m.payload)
            {
                out.push(e);
            }
        }
    }
}

/// Deletes one entry; false when it was gone already.
fn delete(sock: &mut Socket, seq: u32, e: &Entry) -> Result<bool> {
    let mut a = Attrs::new();
    a.nest(CTA_TUPLE_ORIG, |a| a.buf.extend_from_slice(&e.orig_raw));
    if let Some(id) = e.id {
        a.put_be32(CTA_ID, id);
    }
    if let Some(z) = e.zone {
        a.put_be16(CTA_ZONE, z);
    }
    let mut req = Vec::new();
    let ty = (netlink::NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    netlink::push_message(
        &mut req,
        ty,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        AF_INET,
        0,
        &a.buf,
    );
    sock.send(&req)?;
    loop {
        let buf = sock.recv()?;
        for m in netlink::messages(buf) {
            if m.seq != seq {
                continue;
            }
            match m.error() {
                Some((0, _)) => return Ok(true),
                Some((libc::ENOENT, _)) => return Ok(false),
                Some((errno, text)) => {
                    return Err(refused(
                        errno,
                        text,
                        format!("delete conntrack entry {:?}", e.orig),
                    ));
                }
                None => {}
            }
        }
    }
}

/// Deletes the entries `matches` picks; returns how many went.
pub fn delete_where(matches: impl Fn(&Entry) -> bool) -> Result<usize> {
    let mut sock = Socket::open()?;
    let entries = dump(&mut sock)?;
    let mut deleted = 0;
    for (i, e) in entries.iter().filter(|e| matches(e)).enumerate() {
        if delete(&mut sock, 2 + i as u32, e)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes UDP entries whose original destination is `dst` (a service IP), and port `dport` when
/// given. Returns how many were deleted.
pub fn delete_udp_to(dst: Ipv4Addr, dport: Option<u16>) -> Result<usize> {
    delete_where(|e| {
        e.orig.proto == IPPROTO_UDP
            && e.orig.dst == Some(dst)
            && dport.is_none_or(|p| e.orig.dport == p)
    })
}

/// Deletes UDP entries DNATed to `src` (an endpoint that is gone): their reply tuple's source is
/// the endpoint, their original destination something else (the service IP). Returns how many were deleted.
pub fn delete_udp_reply_from(src: Ipv4Addr) -> Result<usize> {
    delete_where(|e| {
        e.reply.proto == IPPROTO_UDP && e.reply.src == Some(src) && e.orig.dst != Some(src)
    })
}
