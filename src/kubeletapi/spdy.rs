//! SPDY/3.1, the server side of what Kubernetes' streaming clients speak (exec, attach and
//! port-forward over `Upgrade: SPDY/3.1`, and port-forward tunnelled through a WebSocket).
//!
//! Only what those clients use: client-opened streams (SYN_STREAM, answered with SYN_REPLY),
//! DATA with FIN, RST_STREAM, PING echo, GOAWAY, SETTINGS and WINDOW_UPDATE read and ignored
//! (Go's spdystream does no flow control). Header blocks are zlib-compressed with SPDY/3's
//! dictionary, one compression context per direction for the whole connection.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame payload accepted (the length field has 24 bits).
const MAX_FRAME: usize = 1 << 24;
/// Largest DATA payload sent at once.
const MAX_DATA_CHUNK: usize = 32 * 1024;
/// RST_STREAM status CANCEL.
pub const RST_CANCEL: u32 = 5;

/// SPDY/3's zlib dictionary for header blocks: length-prefixed common header names and values,
/// then common text.
pub fn dictionary() -> Vec<u8> {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut out = Vec::with_capacity(1423);
    for word in WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(TAIL.as_bytes());
    out
}

/// Header names (lowercase) and values; several values of one name are separate entries.
pub type Headers = Vec<(String, String)>;

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: read, then ignored.
    Ignored {
        kind: u16,
    },
}

/// Encodes a header block (count, then length-prefixed names and values, values of one name
/// joined by NUL) and compresses it with the connection's context.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl HeaderEncoder {
    pub fn new() -> Result<HeaderEncoder> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&dictionary())
            .context("cannot load the SPDY header dictionary")?;
        Ok(HeaderEncoder { zlib })
    }

    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        let mut grouped: Vec<(String, Vec<&str>)> = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            match grouped.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => grouped.push((name, vec![value])),
            }
        }
        let mut plain = Vec::new();
        plain.extend_from_slice(&(grouped.len() as u32).to_be_bytes());
        for (name, values) in &grouped {
            let value = values.join("\0");
            plain.extend_from_slice(&(name.len() as u32).to_be_bytes());
            plain.extend_from_slice(name.as_bytes());
            plain.extend_from_slice(&(value.len() as u32).to_be_bytes());
            plain.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input: &[u8] = &plain;
        loop {
            out.reserve(plain.len() + 64);
            let before_in = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .context("cannot compress SPDY headers")?;
            let used = (self.zlib.total_in() - before_in) as usize;
            input = &input[used..];
            // A sync flush is complete once the output buffer was not filled to the brim.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

pub struct HeaderDecoder {
    zlib: Decompress,
    dictionary: Vec<u8>,
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            zlib: Decompress::new(true),
            dictionary: dictionary(),
        }
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if plain.len() == plain.capacity() {
                plain.reserve(plain.capacity().max(1024));
            }
            let before_in = self.zlib.total_in();
            let before_out = plain.len();
            match self
                .zlib
                .decompress_vec(input, &mut plain, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    let used = (self.zlib.total_in() - before_in) as usize;
                    input = &input[used..];
                    self.zlib
                        .set_dictionary(&self.dictionary)
                        .context("cannot load the SPDY header dictionary")?;
                    continue;
                }
                Err(e) => bail!("damaged SPDY header block: {e}"),
            }
            let used = (self.zlib.total_in() - before_in) as usize;
            input = &input[used..];
            let produced = plain.len() - before_out;
            if input.is_empty() && plain.len() < plain.capacity() {
                break;
            }
            if used == 0 && produced == 0 && plain.len() < plain.capacity() {
                break;
            }
        }
        parse_block(&plain)
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_block(plain: &[u8]) -> Result<Headers> {
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Result<u32> {
        let bytes = plain
            .get(*at..*at + 4)
            .context("truncated SPDY header block")?;
        *at += 4;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let count = take_u32(&mut at)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = take_u32(&mut at)? as usize;
        let name = plain
            .get(at..at + len)
            .context("truncated SPDY header name")?;
        at += len;
        let len = take_u32(&mut at)? as usize;
        let value = plain
            .get(at..at + len)
            .context("truncated SPDY header value")?;
        at += len;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        for v in value.split(|&b| b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Reads one frame; None at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut HeaderDecoder,
) -> Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("cannot read a SPDY frame"),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len >= MAX_FRAME {
        bail!("SPDY frame too large ({len} bytes)");
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .context("truncated SPDY frame")?;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: Bytes::from(body),
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        bail!("SPDY version {version} is not supported (only 3)");
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let stream_id = u32_at(&body, 0) & 0x7fff_ffff;
    Ok(Some(match kind {
        SYN_STREAM => {
            if body.len() < 10 {
                bail!("short SYN_STREAM frame");
            }
            Frame::SynStream {
                stream_id,
                associated: u32_at(&body, 4) & 0x7fff_ffff,
                flags,
                headers: decoder.decode(&body[10..])?,
            }
        }
        SYN_REPLY => Frame::SynReply {
            stream_id,
            flags,
            headers: decoder.decode(body.get(4..).unwrap_or(&[]))?,
        },
        HEADERS => Frame::Headers {
            stream_id,
            flags,
            headers: decoder.decode(body.get(4..).unwrap_or(&[]))?,
        },
        RST_STREAM => Frame::RstStream {
            stream_id,
            status: u32_at(&body, 4),
        },
        PING => Frame::Ping {
            id: u32_at(&body, 0),
        },
        GOAWAY => Frame::GoAway {
            last_good: stream_id,
            status: u32_at(&body, 4),
        },
        other => Frame::Ignored { kind: other },
    }))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

pub fn encode_frame(frame: &Frame, encoder: &mut HeaderEncoder) -> Result<Vec<u8>> {
    Ok(match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::SynStream {
            stream_id,
            associated,
            flags,
            headers,
        } => {
            let mut body = Vec::new();
            body.extend_from_slice(&stream_id.to_be_bytes());
            body.extend_from_slice(&associated.to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&encoder.encode(headers)?);
            control(SYN_STREAM, *flags, &body)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&encoder.encode(headers)?);
            control(SYN_REPLY, *flags, &body)
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&encoder.encode(headers)?);
            control(HEADERS, *flags, &body)
        }
        Frame::RstStream { stream_id, status } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &body)
        }
        Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut body = last_good.to_be_bytes().to_vec();
            body.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &body)
        }
        Frame::Ignored { kind } => {
            let body: &[u8] = match *kind {
                SETTINGS => &[0, 0, 0, 0],
                WINDOW_UPDATE => &[0, 0, 0, 0, 0, 0, 0, 0],
                _ => &[],
            };
            control(*kind, 0, body)
        }
    })
}

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data on this stream; ends at its FIN or reset.
    pub incoming: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// Sends on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Frame>,
}

impl StreamWriter {
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.out
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                })
                .await
                .context("the SPDY connection is closed")?;
        }
        Ok(())
    }

    /// Half-closes the stream (our side is done).
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
    }

    pub async fn reset(&self) {
        let _ = self
            .out
            .send(Frame::RstStream {
                stream_id: self.id,
                status: RST_CANCEL,
            })
            .await;
    }
}

/// Runs the server side of a SPDY connection on `io`: every stream the client opens is
/// answered and handed to `streams`. Returns when the connection ends.
pub async fn serve<IO>(io: IO, streams: mpsc::Sender<Stream>) -> Result<()>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    let write_task = tokio::spawn(async move {
        let mut encoder = HeaderEncoder::new()?;
        while let Some(frame) = out_rx.recv().await {
            let bytes = encode_frame(&frame, &mut encoder)?;
            writer
                .write_all(&bytes)
                .await
                .context("cannot write to the SPDY connection")?;
            if out_rx.is_empty() {
                writer.flush().await.context("cannot flush")?;
            }
        }
        let _ = writer.shutdown().await;
        anyhow::Ok(())
    });
    let mut decoder = HeaderDecoder::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let result = loop {
        let frame = match read_frame(&mut reader, &mut decoder).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                if out_tx
                    .send(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    })
                    .await
                    .is_err()
                {
                    break Ok(());
                }
                let stream = Stream {
                    id: stream_id,
                    headers,
                    incoming: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        out: out_tx.clone(),
                    },
                };
                if streams.send(stream).await.is_err() {
                    break Ok(());
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = open.get(&stream_id)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    open.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping { id } => {
                let _ = out_tx.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => break Ok(()),
            Frame::Headers {
                stream_id, flags, ..
            }
            | Frame::SynReply {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::Ignored { kind } => debug!(kind, "SPDY frame ignored"),
        }
    };
    drop(open);
    drop(out_tx);
    drop(streams);
    // The writer ends once every stream writer is gone.
    let _ = write_task.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[tokio::test]
    async fn frames_round_trip_with_shared_compression() {
        let mut enc = HeaderEncoder::new().unwrap();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                flags: FLAG_FIN,
                headers: vec![("streamtype".into(), "data".into())],
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&encode_frame(f, &mut enc).unwrap());
        }
        let mut dec = HeaderDecoder::new();
        let mut reader: &[u8] = &wire;
        let mut back = Vec::new();
        while let Some(f) = read_frame(&mut reader, &mut dec).await.unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
    }

    #[tokio::test]
    async fn a_connection_answers_streams_and_pings() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(4);
        let serving = tokio::spawn(serve(server, tx));
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = HeaderEncoder::new().unwrap();
        let mut dec = HeaderDecoder::new();
        let syn = Frame::SynStream {
            stream_id: 1,
            associated: 0,
            flags: 0,
            headers: vec![("streamtype".into(), "stdin".into())],
        };
        cw.write_all(&encode_frame(&syn, &mut enc).unwrap())
            .await
            .unwrap();
        let reply = read_frame(&mut cr, &mut dec).await.unwrap().unwrap();
        assert!(matches!(reply, Frame::SynReply { stream_id: 1, .. }));
        let mut stream = rx.recv().await.unwrap();
        assert_eq!(header(&stream.headers, "streamType"), Some("stdin"));
        let data = Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"abc"),
        };
        cw.write_all(&encode_frame(&data, &mut enc).unwrap())
            .await
            .unwrap();
        assert_eq!(stream.incoming.recv().await.unwrap(), Bytes::from("abc"));
        assert!(stream.incoming.recv().await.is_none());
        stream.writer.write(b"out").await.unwrap();
        let got = read_frame(&mut cr, &mut dec).await.unwrap().unwrap();
        assert_eq!(
            got,
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from("out")
            }
        );
        cw.write_all(&encode_frame(&Frame::Ping { id: 1 }, &mut enc).unwrap())
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut cr, &mut dec).await.unwrap().unwrap(),
            Frame::Ping { id: 1 }
        );
        drop(stream);
        // A split duplex closes only on shutdown: the server then reads the end.
        cw.shutdown().await.unwrap();
        drop(rx);
        serving.await.unwrap().unwrap();
    }
}
