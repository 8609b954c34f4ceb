//! Netlink framing shared by nf_tables and ctnetlink: attribute writing and reading, message
//! headers, and a NETLINK_NETFILTER socket. Constants come from the kernel's uapi headers
//! (linux/netlink.h, linux/netfilter/nfnetlink.h, nf_tables.h).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// In an NLMSG_ERROR: extended-ack TLVs follow the (capped) original header.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an NLMSG_ERROR: the original message's payload was left out.
pub const NLM_F_CAPPED: u16 = 0x100;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;

const NLMSG_HDRLEN: usize = 16;

/// Attributes being written into a buffer: each `len | type | payload`, padded to 4 bytes, the
/// length and type in host order (netlink's), payload integers big-endian (nf_tables').
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    pub buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) {
        self.put(ty, &[v]);
    }

    pub fn put_be16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string.
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.put(ty, &data);
    }

    /// A nested attribute whose payload `f` writes.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// One attribute read from a buffer (type without the NESTED/BYTEORDER flags).
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub nested: bool,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.data.get(..2)?.try_into().ok()?))
    }
    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.get(..4)?.try_into().ok()?))
    }
    pub fn u8(&self) -> Option<u8> {
        self.data.first().copied()
    }
    pub fn str(&self) -> String {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }
    pub fn attrs(&self) -> AttrIter<'a> {
        AttrIter { buf: self.data }
    }
}

/// The attributes of a buffer, in order; stops at the first malformed one.
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    pub buf: &'a [u8],
}

pub fn attrs(buf: &[u8]) -> AttrIter<'_> {
    AttrIter { buf }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]);
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let data = &self.buf[4..len];
        let next = ((len + 3) & !3).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some(Attr {
            ty: ty & NLA_TYPE_MASK,
            nested: ty & NLA_F_NESTED != 0,
            data,
        })
    }
}

/// Appends one netlink message: nlmsghdr, nfgenmsg (family, version 0, res_id big-endian), attrs.
pub fn push_message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = (NLMSG_HDRLEN + 4 + attrs.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// One message read from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// For NLMSG_ERROR: the errno (0 for an ack, positive otherwise) and the extended-ack text.
    pub fn error(&self) -> Option<(i32, Option<String>)> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        let code = i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?);
        let mut text = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // The original message follows: its header only when capped, else all of it.
            let orig_len = if self.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                self.payload
                    .get(4..8)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .unwrap_or(NLMSG_HDRLEN)
            };
            let tlvs = self.payload.get(4 + ((orig_len + 3) & !3)..).unwrap_or(&[]);
            text = attrs(tlvs)
                .find(|a| a.ty == NLMSGERR_ATTR_MSG)
                .map(|a| a.str());
        }
        Some((-code, text))
    }
}

/// The messages of one datagram.
pub fn messages(buf: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push(Message {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value (pid 0: the kernel picks).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr lives across the call and its size is passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        let sock = Socket {
            fd,
            buf: vec![0; 1 << 16],
        };
        // Errors carry only the failed message's header, plus the kernel's text when it has one.
        sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
        sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1)?;
        // Never block forever on an answer the kernel will not send.
        let tv = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        // SAFETY: tv lives across the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(sock)
    }

    fn setsockopt(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: value lives across the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    fn getsockopt(&self, name: libc::c_int) -> io::Result<usize> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len live across the call.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                &mut value as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        })?;
        Ok(value.max(0) as usize)
    }

    /// Makes a socket buffer at least `bytes` (the FORCE variants pass the sysctl limits as
    /// root; without CAP_NET_ADMIN the plain ones, capped by the sysctls, are what is left).
    fn grow_buffer(&self, bytes: usize, plain: libc::c_int, force: libc::c_int) -> io::Result<()> {
        // The kernel reports twice what was set (it adds its bookkeeping).
        if self.getsockopt(plain)? / 2 >= bytes {
            return Ok(());
        }
        let want = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        self.setsockopt(libc::SOL_SOCKET, force, want)
            .or_else(|_| self.setsockopt(libc::SOL_SOCKET, plain, want))
    }

    /// Room for sending one datagram of `bytes` (a batch must go in one: the kernel runs a batch
    /// from a single skb and aborts it when the end marker is missing).
    pub fn ensure_send_buffer(&self, bytes: usize) -> io::Result<()> {
        self.grow_buffer(bytes + 4096, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE)
    }

    /// Room for `bytes` of answers queued before the first is read.
    pub fn ensure_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        self.grow_buffer(bytes, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE)
    }

    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; pid 0 addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: data and addr live across the call, their sizes are passed.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    data.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if rc as usize != data.len() {
                return Err(io::Error::other(format!(
                    "netlink: sent {rc} of {} bytes",
                    data.len()
                )));
            }
            return Ok(());
        }
    }

    /// Receives one datagram (blocking up to the receive timeout).
    pub fn recv(&mut self) -> io::Result<&[u8]> {
        loop {
            // SAFETY: the buffer is ours and its length is passed; MSG_TRUNC makes the kernel
            // report the real size of a datagram larger than it.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if err.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "netlink: no answer from the kernel",
                    ));
                }
                return Err(err);
            }
            if rc as usize > self.buf.len() {
                self.buf.resize(rc as usize, 0);
            }
            // SAFETY: as above, now with room for the whole datagram.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            return Ok(&self.buf[..rc as usize]);
        }
    }
}

/// The text of an errno, without std's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
