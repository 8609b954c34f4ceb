//! `Conn`: sends batches over a NETLINK_NETFILTER socket and reads the kernel's answers.

use std::collections::HashMap;

use super::batch::{Batch, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, NFTA_TABLE_NAME};
use super::netlink::{self, Attrs, NLM_F_ACK, NLM_F_REQUEST, Socket};
use super::{Error, Family};

/// Receive-buffer room per acked message: an ack is a small skb, but its true size (what the
/// buffer limit counts) is most of a kilobyte.
const RCVBUF_PER_ACK: usize = 2048;

/// A netlink socket to nf_tables in the calling thread's network namespace.
pub struct Conn {
    sock: Socket,
    seq: u32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("seq", &self.seq).finish()
    }
}

impl Conn {
    pub fn new() -> Result<Conn, Error> {
        let sock = Socket::open()?;
        // Start somewhere other than 0 so answers to an earlier process's socket can't be taken
        // for ours (they can't reach this socket anyway; this only makes traces readable).
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Conn { sock, seq })
    }

    fn take_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32);
        s
    }

    /// Sends the batch and waits for the kernel's answer to every message of it. On a refusal
    /// nothing of the batch is applied; the error names the first refused message.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.msgs.len();
        let begin = self.take_seq(n + 2);
        let data = batch.encode(begin);
        // The kernel runs the batch while we are still in send(): every answer is queued before
        // the first is read, and one dropped for want of room would leave us guessing.
        self.sock.ensure_send_buffer(data.len())?;
        self.sock.ensure_receive_buffer((n + 16) * RCVBUF_PER_ACK)?;
        self.sock.send(&data)?;

        let first = begin.wrapping_add(1);
        let mut answered = vec![false; n];
        let mut left = n;
        // errno per message index, and batch-level errors (answers to the begin/end markers).
        let mut refused: HashMap<usize, (i32, Option<String>)> = HashMap::new();
        let mut batch_error: Option<(i32, Option<String>)> = None;
        while left > 0 {
            let buf = match self.sock.recv() {
                Ok(b) => b,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(Error::Io(std::io::Error::other(
                        "netlink: answers to the batch were dropped (receive buffer full); \
                         whether it was applied is unknown",
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            for m in netlink::messages(buf) {
                let Some((errno, text)) = m.error() else {
                    continue;
                };
                let idx = m.seq.wrapping_sub(first) as usize;
                if idx < n {
                    if !answered[idx] {
                        answered[idx] = true;
                        left -= 1;
                    }
                    if errno != 0 {
                        refused.insert(idx, (errno, text));
                    }
                } else if errno != 0 {
                    batch_error = Some((errno, text));
                }
            }
            if batch_error.is_some() {
                break;
            }
        }
        if let Some(idx) = refused.keys().min().copied() {
            let (errno, text) = refused[&idx].clone();
            let mut message = netlink::strerror(errno);
            if let Some(t) = text {
                message = format!("{message}: {t}");
            }
            if refused.len() > 1 {
                message = format!(
                    "{message} (and {} later messages refused)",
                    refused.len() - 1
                );
            }
            return Err(Error::Refused {
                errno,
                message,
                at: Some(batch.msgs[idx].what.clone()),
            });
        }
        if let Some((errno, text)) = batch_error {
            let mut message = netlink::strerror(errno);
            if let Some(t) = text {
                message = format!("{message}: {t}");
            }
            return Err(Error::Refused {
                errno,
                message,
                at: None,
            });
        }
        Ok(())
    }

    /// Whether `table` exists (the proxy resyncs fully when it vanished).
    pub fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, Error> {
        let seq = self.take_seq(1);
        let mut a = Attrs::new();
        a.put_str(NFTA_TABLE_NAME, table);
        let mut data = Vec::new();
        let ty = (netlink::NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
        netlink::push_message(
            &mut data,
            ty,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family.nfproto(),
            0,
            &a.buf,
        );
        self.sock.send(&data)?;
        let mut found = false;
        loop {
            let buf = self.sock.recv()?;
            for m in netlink::messages(buf) {
                if m.seq != seq {
                    continue;
                }
                if m.ty == (netlink::NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
                    found = true;
                    continue;
                }
                match m.error() {
                    Some((0, _)) => return Ok(found),
                    Some((libc::ENOENT, _)) => return Ok(false),
                    Some((errno, text)) => {
                        let mut message = netlink::strerror(errno);
                        if let Some(t) = text {
                            message = format!("{message}: {t}");
                        }
                        return Err(Error::Refused {
                            errno,
                            message,
                            at: Some(format!("get table {table}")),
                        });
                    }
                    None => {}
                }
            }
        }
    }
}
