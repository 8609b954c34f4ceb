//! A tiny HTTP/1.1 server for the ingress benchmark, std only (compiled by the tests with rustc
//! into a static binary; no crates, no registry). Unlike busybox httpd it keeps connections
//! open and forks nothing, so a proxy in front of it shows its own ceiling.
//!
//!   keepalive-http PORT    GET /small answers 100 bytes, GET /1m 1 MiB, anything else 404;
//!                          a thread per connection, keep-alive unless the client says close

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream, small: &[u8], big: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        let mut body_len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
            if line.starts_with("connection:") {
                close = line.contains("close");
            }
        }
        // Request bodies are read and dropped.
        std::io::copy(&mut (&mut reader).take(body_len as u64), &mut std::io::sink())?;
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body): (&str, &[u8]) = match path {
            "/small" => ("200 OK", small),
            "/1m" => ("200 OK", big),
            _ => ("404 Not Found", b"not found\n"),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        out.write_all(head.as_bytes())?;
        out.write_all(body)?;
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).expect("cannot listen");
    let small: &'static [u8] = Box::leak(vec![b'x'; 100].into_boxed_slice());
    let big: &'static [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream, small, big);
        });
    }
}
