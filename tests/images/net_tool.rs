//! A small network tool for the Service tests, std only (compiled by the tests with rustc into a
//! static binary; no crates, no registry).
//!
//!   net-tool serve PORT            TCP (HTTP) and UDP on PORT; every answer is
//!                                  "<hostname> <client address>", so a test sees which pod
//!                                  answered and what source address it saw
//!   net-tool udp HOST PORT MSG [SRC]  one datagram (from source port SRC, else any), prints
//!                                  the answer; exit 1 after 2 s of silence
//!   net-tool sink PORT             TCP: reads and discards everything (throughput target)
//!   net-tool blast HOST PORT SECS  TCP: writes to a sink for SECS, prints {"mbit_per_s": …}
//!   net-tool rate HOST PORT SECS   new TCP connection + one HTTP GET each, for SECS, prints
//!                                  {"connections_per_s": …, "errors": …}
//!   net-tool probe MS PROTO:HOST:PORT…  all at once: a TCP connect, or a UDP datagram that must
//!                                  be answered, within MS milliseconds; prints
//!                                  "PROTO:HOST:PORT ok|fail" per target, in order
//!   net-tool until open|closed HOST PORT  TCP connects (200 ms each) until one succeeds (open)
//!                                  or fails (closed); prints "polling" after the first try
//!                                  that saw the other state, then {"epoch_ms": …} of the moment

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

fn udp(host: &str, port: &str, msg: &str, src: Option<&str>) -> i32 {
    let src: u16 = match src.map(str::parse).transpose() {
        Ok(p) => p.unwrap_or(0),
        Err(e) => {
            eprintln!("bad source port: {e}");
            return 2;
        }
    };
    let sock = UdpSocket::bind(("0.0.0.0", src)).expect("cannot bind");
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

fn sink(port: u16) {
    let tcp = TcpListener::bind(("0.0.0.0", port)).expect("cannot bind TCP");
    for conn in tcp.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

fn blast(host: &str, port: &str, secs: u64) -> i32 {
    let Ok(mut conn) = std::net::TcpStream::connect(format!("{host}:{port}")) else {
        eprintln!("cannot connect to {host}:{port}");
        return 1;
    };
    let buf = vec![0x5au8; 256 * 1024];
    let start = std::time::Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        match conn.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(e) => {
                eprintln!("write failed: {e}");
                return 1;
            }
        }
    }
    let mbit = sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
    println!("{{\"mbit_per_s\": {mbit:.0}}}");
    0
}

/// Closes with a reset instead of a FIN (SO_LINGER 0), as load generators do, so that neither
/// side keeps the connection in TIME_WAIT and a long run does not measure port exhaustion.
fn reset_on_close(conn: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized struct linger.
    unsafe {
        setsockopt(
            conn.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &linger,
            std::mem::size_of::<Linger>() as u32,
        );
    }
}

fn rate(host: &str, port: &str, secs: u64) -> i32 {
    let target = format!("{host}:{port}");
    let start = std::time::Instant::now();
    let (mut ok, mut errors) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        let done = std::net::TcpStream::connect(&target).and_then(|mut c| {
            reset_on_close(&c);
            c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = Vec::new();
            c.read_to_end(&mut body)?;
            Ok(body.starts_with(b"HTTP/1.0 200"))
        });
        match done {
            Ok(true) => ok += 1,
            _ => errors += 1,
        }
    }
    let per_s = ok as f64 / start.elapsed().as_secs_f64();
    println!("{{\"connections_per_s\": {per_s:.0}, \"errors\": {errors}}}");
    0
}

fn probe_one(target: &str, timeout: Duration) -> bool {
    let mut parts = target.splitn(2, ':');
    let (Some(proto), Some(addr)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    match proto {
        "tcp" => std::net::TcpStream::connect_timeout(&addr, timeout).is_ok(),
        "udp" => {
            let Ok(sock) = UdpSocket::bind(("0.0.0.0", 0)) else {
                return false;
            };
            // Two tries within the time: a datagram can be lost on a busy machine.
            let half = timeout / 2;
            for _ in 0..2 {
                if sock.set_read_timeout(Some(half)).is_err() || sock.send_to(b"probe", addr).is_err() {
                    return false;
                }
                let mut buf = [0u8; 512];
                if sock.recv(&mut buf).is_ok() {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn probe(ms: u64, targets: &[String]) -> i32 {
    let timeout = Duration::from_millis(ms);
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| std::thread::spawn(move || probe_one(&t, timeout)))
        .collect();
    for (t, h) in targets.iter().zip(handles) {
        let ok = h.join().unwrap_or(false);
        println!("{t} {}", if ok { "ok" } else { "fail" });
    }
    0
}

fn until(want_open: bool, host: &str, port: &str) -> i32 {
    let Ok(addr) = format!("{host}:{port}").parse::<std::net::SocketAddr>() else {
        eprintln!("bad address {host}:{port}");
        return 2;
    };
    let mut announced = false;
    loop {
        let open = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        if !announced && open != want_open {
            println!("polling");
            let _ = std::io::stdout().flush();
            announced = true;
        }
        if open == want_open {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            println!("{{\"epoch_ms\": {ms}}}");
            return 0;
        }
        if open {
            std::thread::sleep(Duration::from_millis(20));
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
        Some("udp") if args.len() == 5 || args.len() == 6 => {
            udp(&args[2], &args[3], &args[4], args.get(5).map(String::as_str))
        }
        Some("sink") => {
            sink(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(9001));
            0
        }
        Some("blast") if args.len() == 5 => {
            blast(&args[2], &args[3], args[4].parse().unwrap_or(5))
        }
        Some("rate") if args.len() == 5 => rate(&args[2], &args[3], args[4].parse().unwrap_or(5)),
        Some("until") if args.len() == 5 => until(args[2] == "open", &args[3], &args[4]),
        Some("probe") if args.len() >= 3 => probe(args[2].parse().unwrap_or(2000), &args[3..]),
        _ => {
            eprintln!(
                "usage: net-tool serve PORT | udp HOST PORT MSG [SRC] | sink PORT | blast HOST PORT SECS | rate HOST PORT SECS | probe MS PROTO:HOST:PORT... | until open|closed HOST PORT"
            );
            2
        }
    };
    std::process::exit(code);
}
