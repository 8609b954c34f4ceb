//! A small network tool for the Service tests, std only (compiled by the tests with rustc into a
//! static binary; no crates, no registry).
//!
//!   net-tool serve PORT            TCP (HTTP) and UDP on PORT; every answer is
//!                                  "<hostname> <client address>", so a test sees which pod
//!                                  answered and what source address it saw
//!   net-tool udp HOST PORT MSG     one datagram, prints the answer; exit 1 after 2 s of silence

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn serve(port: u16) {
    let udp = UdpSocket::bind(("0.0.0.0", port)).expect("cannot bind UDP");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let answer = format!("{} {} {}", hostname(), peer.ip(), msg.trim());
            let _ = udp.send_to(answer.as_bytes(), peer);
        }
    });
    let tcp = TcpListener::bind(("0.0.0.0", port)).expect("cannot bind TCP");
    for conn in tcp.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let peer = conn.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let body = format!("{} {}\n", hostname(), peer);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        });
    }
}

fn udp(host: &str, port: &str, msg: &str) -> i32 {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("cannot bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let target = format!("{host}:{port}");
    if let Err(e) = sock.send_to(msg.as_bytes(), &target) {
        eprintln!("cannot send to {target}: {e}");
        return 1;
    }
    let mut buf = [0u8; 2048];
    match sock.recv(&mut buf) {
        Ok(n) => {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            0
        }
        Err(e) => {
            eprintln!("no answer from {target}: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("serve") => {
            serve(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(8080));
            0
        }
        Some("udp") if args.len() == 5 => udp(&args[2], &args[3], &args[4]),
        _ => {
            eprintln!("usage: net-tool serve PORT | net-tool udp HOST PORT MSG");
            2
        }
    };
    std::process::exit(code);
}
