//! A stand-in for the `python` image of the Python client's e2e suite, std only (compiled by
//! the tests with rustc into a static binary installed as `python`). The suite runs
//! `python -u /opt/port-server.py PORT...`, a TCP echo server on every PORT that logs what it
//! receives; this program serves exactly that protocol for the same command line: options and
//! the script path are skipped, every other argument is a port to echo on.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn echo(mut conn: TcpStream, port: u16) {
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                println!("{port}: {:?}", String::from_utf8_lossy(&buf[..n]));
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let ports: Vec<u16> = args
        .iter()
        .skip(1)
        .map(|p| p.parse().unwrap_or_else(|_| panic!("not a port: {p}")))
        .collect();
    if ports.is_empty() {
        eprintln!("usage: python [-u] SCRIPT PORT...");
        std::process::exit(2);
    }
    for port in ports {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .unwrap_or_else(|e| panic!("cannot listen on {port}: {e}"));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || echo(conn, port));
            }
        });
    }
    // As the script: serve for ten minutes, then end.
    std::thread::sleep(std::time::Duration::from_secs(600));
}
