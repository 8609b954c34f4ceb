//! A gRPC health server for test images (`grpc.health.v1.Health/Check` only), built by the
//! tests with plain `rustc` as a static binary and run FROM scratch. Standard library only:
//! the HTTP/2 it speaks is the least a gRPC client needs (no HPACK decoding: request headers
//! are not read, the answer uses literal header fields).
//!
//! Usage: grpc-health-server PORT STATUS [SERVICE]
//!   STATUS: SERVING | NOT_SERVING; SERVICE: the one service name it knows besides "" (others
//!   get gRPC NOT_FOUND, as grpc-go's health server answers).
//! It ignores SIGTERM (it runs as PID 1, where an unhandled SIGTERM does nothing).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A literal header field without indexing, new name, no Huffman coding.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// The service name in a HealthCheckRequest frame (field 1).
fn requested_service(body: &[u8]) -> String {
    let Some(message) = body.get(5..) else {
        return String::new();
    };
    if message.len() >= 2 && message[0] == 0x0a {
        let n = message[1] as usize;
        if let Some(name) = message.get(2..2 + n) {
            return String::from_utf8_lossy(name).into_owned();
        }
    }
    String::new()
}

fn answer(
    conn: &mut TcpStream,
    stream: u32,
    body: &[u8],
    status: u8,
    known: &str,
) -> std::io::Result<()> {
    let service = requested_service(body);
    let mut headers = vec![0x88]; // :status 200 (static table entry 8)
    literal(&mut headers, "content-type", "application/grpc");
    if !service.is_empty() && service != known {
        literal(&mut headers, "grpc-status", "5");
        literal(&mut headers, "grpc-message", "unknown service");
        return conn.write_all(&frame(1, 0x5, stream, &headers));
    }
    let mut out = frame(1, 0x4, stream, &headers);
    let message = [0x08, status];
    let mut data = vec![0, 0, 0, 0, message.len() as u8];
    data.extend_from_slice(&message);
    out.extend(frame(0, 0, stream, &data));
    let mut trailers = Vec::new();
    literal(&mut trailers, "grpc-status", "0");
    out.extend(frame(1, 0x5, stream, &trailers));
    conn.write_all(&out)
}

fn serve(mut conn: TcpStream, status: u8, known: &str) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    conn.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Ok(());
    }
    conn.write_all(&frame(4, 0, 0, &[]))?;
    let mut bodies: Vec<(u32, Vec<u8>)> = Vec::new();
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload)?;
        match kind {
            // SETTINGS: acknowledge the client's.
            4 if flags & 1 == 0 => conn.write_all(&frame(4, 1, 0, &[]))?,
            // PING: answer it.
            6 if flags & 1 == 0 => conn.write_all(&frame(6, 1, 0, &payload))?,
            // HEADERS: a request; with END_STREAM it has no body.
            1 => {
                if flags & 1 != 0 {
                    answer(&mut conn, stream, &[], status, known)?;
                } else {
                    bodies.push((stream, Vec::new()));
                }
            }
            // DATA: the request body; answer at its end.
            0 => {
                let Some(at) = bodies.iter().position(|(s, _)| *s == stream) else {
                    continue;
                };
                bodies[at].1.extend_from_slice(&payload);
                if flags & 1 != 0 {
                    let (_, body) = bodies.remove(at);
                    answer(&mut conn, stream, &body, status, known)?;
                }
            }
            // GOAWAY: the client is done.
            7 => return Ok(()),
            _ => {}
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: grpc-health-server PORT SERVING|NOT_SERVING [SERVICE]");
        std::process::exit(2);
    }
    let status = match args[2].as_str() {
        "SERVING" => 1,
        "NOT_SERVING" => 2,
        other => {
            eprintln!("unknown status {other}");
            std::process::exit(2);
        }
    };
    let known = args.get(3).cloned().unwrap_or_default();
    let listener = match TcpListener::bind(("0.0.0.0", args[1].parse::<u16>().unwrap_or(50051))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen: {e}");
            std::process::exit(1);
        }
    };
    println!("serving {} on {}", args[2], args[1]);
    for conn in listener.incoming().flatten() {
        let known = known.clone();
        std::thread::spawn(move || {
            let _ = serve(conn, status, &known);
        });
    }
}
