//! The container helper's attach socket (`attach.sock` in the container's directory), through
//! which `kubectl attach` reaches a running container's stdin and terminal.
//!
//! Clients send frames: `[kind u8][length u32 big-endian][payload]` — [`KIND_STDIN_OPEN`]
//! (this client brings stdin), [`KIND_STDIN`] (bytes for the container's stdin),
//! [`KIND_RESIZE`] (width, height as u16 big-endian) and [`KIND_STDIN_END`]. A container with a
//! terminal sends every client its raw terminal output from the moment it connected (kubectl
//! shows prompts that end without a newline, which a log-follower would hold back); other
//! containers send nothing, their output is followed in the log.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use tracing::debug;

pub const SOCKET: &str = "attach.sock";

pub const KIND_STDIN: u8 = 0;
pub const KIND_RESIZE: u8 = 1;
pub const KIND_STDIN_END: u8 = 2;
pub const KIND_STDIN_OPEN: u8 = 3;

/// Largest frame a client may send; more is a broken client.
const MAX_FRAME: usize = 1 << 20;
/// Output held for a client that does not read; beyond it the client is dropped.
const MAX_PENDING_OUTPUT: usize = 4 << 20;
/// Input held for a container that does not read its stdin; beyond it input is dropped.
const MAX_PENDING_INPUT: usize = 1 << 20;

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub fn encode_resize(width: u16, height: u16) -> Vec<u8> {
    let mut payload = width.to_be_bytes().to_vec();
    payload.extend_from_slice(&height.to_be_bytes());
    encode(KIND_RESIZE, &payload)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    StdinOpen,
    Stdin(Vec<u8>),
    Resize { width: u16, height: u16 },
    StdinEnd,
}

/// Splits a client's byte stream into frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame; Err when the stream is not this protocol.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("attach frame of {len} bytes is too large"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload: Vec<u8> = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        match kind {
            KIND_STDIN => Ok(Some(Frame::Stdin(payload))),
            KIND_STDIN_END => Ok(Some(Frame::StdinEnd)),
            KIND_STDIN_OPEN => Ok(Some(Frame::StdinOpen)),
            KIND_RESIZE if payload.len() == 4 => Ok(Some(Frame::Resize {
                width: u16::from_be_bytes([payload[0], payload[1]]),
                height: u16::from_be_bytes([payload[2], payload[3]]),
            })),
            other => Err(format!("unknown attach frame kind {other}")),
        }
    }
}

struct Client {
    stream: UnixStream,
    input: FrameReader,
    /// It announced stdin and has not ended it.
    stdin: bool,
    output: Vec<u8>,
}

/// The helper's side: accepts clients, feeds the container's stdin, resizes its terminal and
/// copies terminal output to every client. Everything is non-blocking (one poll loop).
pub struct Server {
    listener: Option<UnixListener>,
    stdin: Option<std::fs::File>,
    input: Vec<u8>,
    terminal: Option<OwnedFd>,
    clients: Vec<Client>,
    /// stdinOnce: stdin closes when the first client's stdin ends (not with a terminal, as
    /// containerd: a terminal has no end of input to give).
    once: bool,
}

impl Server {
    /// `stdin`: the container's stdin writer (a pipe, or a duplicate of the terminal master),
    /// None when the container keeps no stdin. `terminal`: the master, for sizes and output.
    pub fn new(
        listener: UnixListener,
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
        once: bool,
    ) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        if let Some(fd) = &stdin {
            set_nonblocking(fd)?;
        }
        Ok(Server {
            listener: Some(listener),
            stdin: stdin.map(std::fs::File::from),
            input: Vec::new(),
            terminal,
            clients: Vec::new(),
            once,
        })
    }

    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        let mut fds = Vec::new();
        let mut push = |fd: i32, events: i16| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        if let Some(l) = &self.listener {
            push(l.as_raw_fd(), libc::POLLIN);
        }
        if let Some(s) = &self.stdin
            && !self.input.is_empty()
        {
            push(s.as_raw_fd(), libc::POLLOUT);
        }
        for c in &self.clients {
            let events = if c.output.is_empty() {
                libc::POLLIN
            } else {
                libc::POLLIN | libc::POLLOUT
            };
            push(c.stream.as_raw_fd(), events);
        }
        fds
    }

    /// Handles what poll reported on the fds [`Self::poll_fds`] gave.
    pub fn serve(&mut self, ready: &[libc::pollfd]) {
        let ready_fd = |fd: i32| ready.iter().any(|p| p.fd == fd && p.revents != 0);
        if let Some(l) = &self.listener
            && ready_fd(l.as_raw_fd())
        {
            while let Ok((stream, _)) = l.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    self.clients.push(Client {
                        stream,
                        input: FrameReader::default(),
                        stdin: false,
                        output: Vec::new(),
                    });
                }
            }
        }
        let mut buf = [0u8; 16 * 1024];
        let mut gone = Vec::new();
        for i in 0..self.clients.len() {
            if !ready_fd(self.clients[i].stream.as_raw_fd()) {
                continue;
            }
            let mut open = flush(&mut self.clients[i]);
            while open {
                match self.clients[i].stream.read(&mut buf) {
                    Ok(0) => open = false,
                    Ok(n) => self.clients[i].input.push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => open = false,
                }
            }
            loop {
                match self.clients[i].input.next_frame() {
                    Ok(Some(frame)) => self.apply(i, frame),
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "attach client dropped");
                        open = false;
                        break;
                    }
                }
            }
            if !open {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            if self.clients[i].stdin {
                self.apply(i, Frame::StdinEnd);
            }
            self.clients.remove(i);
        }
        self.feed_stdin();
    }

    fn apply(&mut self, client: usize, frame: Frame) {
        match frame {
            Frame::StdinOpen => self.clients[client].stdin = true,
            Frame::Stdin(data) => {
                if self.stdin.is_some() && self.input.len() + data.len() <= MAX_PENDING_INPUT {
                    self.input.extend_from_slice(&data);
                }
            }
            Frame::Resize { width, height } => {
                if let Some(t) = &self.terminal {
                    super::exec::set_window_size(t, width, height);
                }
            }
            Frame::StdinEnd => {
                let had = std::mem::replace(&mut self.clients[client].stdin, false);
                if had && self.once && self.terminal.is_none() {
                    self.feed_stdin();
                    self.stdin = None;
                    self.input.clear();
                    // Nothing more can be attached to: the stream ended for good.
                    self.listener = None;
                }
            }
        }
    }

    fn feed_stdin(&mut self) {
        let Some(stdin) = &mut self.stdin else {
            return;
        };
        while !self.input.is_empty() {
            match stdin.write(&self.input) {
                Ok(0) => break,
                Ok(n) => {
                    self.input.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The container closed its stdin.
                    self.stdin = None;
                    self.input.clear();
                    break;
                }
            }
        }
    }

    /// Terminal output for every connected client.
    pub fn broadcast(&mut self, data: &[u8]) {
        if self.terminal.is_none() {
            return;
        }
        self.clients.retain_mut(|c| {
            if c.output.len() + data.len() > MAX_PENDING_OUTPUT {
                debug!("attach client does not read its output; dropped");
                return false;
            }
            c.output.extend_from_slice(data);
            flush(c)
        });
    }

    /// The container ended: gives clients what is left of their output (briefly), then
    /// closes them so their sessions end.
    pub fn finish(mut self) {
        for c in &mut self.clients {
            if c.output.is_empty() {
                continue;
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c
                .stream
                .set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = c.stream.write_all(&c.output);
        }
        self.clients.clear();
    }
}

/// Writes what a client's output holds; false when the client is gone.
fn flush(c: &mut Client) -> bool {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => return false,
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

pub fn set_nonblocking(fd: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        fd.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_bad_ones_are_refused() {
        let mut bytes = encode(KIND_STDIN_OPEN, b"");
        bytes.extend(encode(KIND_STDIN, b"ls\n"));
        bytes.extend(encode_resize(120, 40));
        bytes.extend(encode(KIND_STDIN_END, b""));
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            r.push(chunk);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::StdinOpen,
                Frame::Stdin(b"ls\n".to_vec()),
                Frame::Resize {
                    width: 120,
                    height: 40
                },
                Frame::StdinEnd,
            ]
        );
        let mut bad = FrameReader::default();
        bad.push(&encode(9, b"x"));
        assert!(bad.next_frame().is_err());
        let mut huge = FrameReader::default();
        huge.push(&[KIND_STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert!(huge.next_frame().is_err());
    }

    #[test]
    fn stdin_once_closes_after_the_first_client_without_a_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut server = Server::new(listener, Some(w), None, true).unwrap();
        let mut client = UnixStream::connect(dir.path().join("a.sock")).unwrap();
        client.write_all(&encode(KIND_STDIN_OPEN, b"")).unwrap();
        client.write_all(&encode(KIND_STDIN, b"hi\n")).unwrap();
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.listener.is_some() && std::time::Instant::now() < deadline {
            let mut fds = server.poll_fds();
            // SAFETY: fds is a valid pollfd array.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            server.serve(&fds);
        }
        assert!(server.listener.is_none() && server.stdin.is_none());
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi\n");
    }
}
