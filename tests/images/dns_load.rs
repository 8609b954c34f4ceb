//! A DNS load generator for benchmarks, built by the tests with plain `rustc` as a static binary
//! and run FROM scratch (or straight from the host). Standard library only: queries are built
//! by hand. Each of N threads owns one UDP socket and keeps one question in flight (closed
//! loop), cycling through the names given; the latency of every answer is recorded.
//!
//! Usage: dns-load SERVER:PORT [--sockets N] [--seconds D] [--type A|AAAA|SRV|PTR|TXT]
//!                 [--timeout-ms T] NAME...
//! Prints one JSON line: queries, qps, p50/p90/p99/max in ms, errors (timeouts, malformed or
//! mismatched answers, rcodes other than NOERROR/NXDOMAIN) and the NXDOMAIN count.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

struct Options {
    server: SocketAddr,
    sockets: usize,
    seconds: f64,
    qtype: u16,
    timeout: Duration,
    names: Vec<String>,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    timeouts: u64,
    bad: u64,
    nxdomain: u64,
    other_rcode: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("dns-load: {msg}");
    eprintln!("usage: dns-load SERVER:PORT [--sockets N] [--seconds D] [--type A|AAAA|SRV|PTR|TXT] [--timeout-ms T] NAME...");
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let server = match args.next().map(|s| s.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        _ => usage("the first argument is the server, e.g. 10.96.0.10:53"),
    };
    let mut options = Options {
        server,
        sockets: 4,
        seconds: 10.0,
        qtype: 1,
        timeout: Duration::from_millis(1000),
        names: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{what} needs a value")))
        };
        match arg.as_str() {
            "--sockets" => {
                options.sockets = value("--sockets")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --sockets"))
            }
            "--seconds" => {
                options.seconds = value("--seconds")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --seconds"))
            }
            "--timeout-ms" => {
                let ms: u64 = value("--timeout-ms")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --timeout-ms"));
                options.timeout = Duration::from_millis(ms.max(1));
            }
            "--type" => {
                options.qtype = match value("--type").to_ascii_uppercase().as_str() {
                    "A" => 1,
                    "AAAA" => 28,
                    "SRV" => 33,
                    "PTR" => 12,
                    "TXT" => 16,
                    other => usage(&format!("unknown type {other}")),
                }
            }
            name if !name.starts_with("--") => options.names.push(name.to_string()),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if options.names.is_empty() {
        options
            .names
            .push("kubernetes.default.svc.cluster.local".to_string());
    }
    if options.sockets == 0 {
        usage("--sockets must be at least 1");
    }
    options
}

/// A query packet with ID 0 (patched per send): RD set, one question, class IN.
fn packet(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            usage(&format!("bad name {name}"));
        }
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn worker(options: &Options, index: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let bind: SocketAddr = if options.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a literal address");
    let socket = match UdpSocket::bind(bind).and_then(|s| s.connect(options.server).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dns-load: cannot open a socket to {}: {e}", options.server);
            tally.bad += 1;
            return tally;
        }
    };
    let packets: Vec<Vec<u8>> = options
        .names
        .iter()
        .map(|n| packet(n, options.qtype))
        .collect();
    let mut buf = [0u8; 4096];
    let mut id: u16 = (index as u16).wrapping_mul(7919);
    let mut turn = index;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        let mut query = packets[turn % packets.len()].clone();
        turn += 1;
        query[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        if socket.send(&query).is_err() {
            tally.bad += 1;
            continue;
        }
        let until = sent + options.timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tally.timeouts += 1;
                break;
            }
            let _ = socket.set_read_timeout(Some(left));
            match socket.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                    let elapsed = sent.elapsed();
                    tally
                        .latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                    match buf[3] & 0x0f {
                        0 if buf[2] & 0x80 != 0 => {}
                        3 => tally.nxdomain += 1,
                        _ => tally.other_rcode += 1,
                    }
                    break;
                }
                // A late answer to an earlier question: keep waiting for this one.
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    tally.timeouts += 1;
                    break;
                }
                Err(_) => {
                    tally.bad += 1;
                    break;
                }
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let options = parse_args();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.sockets)
            .map(|i| {
                let options = &options;
                scope.spawn(move || worker(options, i, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = Vec::new();
    let (mut timeouts, mut bad, mut nxdomain, mut other) = (0, 0, 0, 0);
    for t in tallies {
        latencies.extend(t.latencies_us);
        timeouts += t.timeouts;
        bad += t.bad;
        nxdomain += t.nxdomain;
        other += t.other_rcode;
    }
    latencies.sort_unstable();
    let answered = latencies.len() as u64;
    println!(
        "{{\"server\":\"{}\",\"sockets\":{},\"seconds\":{:.2},\"names\":{},\"queries\":{},\"answered\":{},\"qps\":{:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"errors\":{},\"timeouts\":{},\"nxdomain\":{}}}",
        options.server,
        options.sockets,
        elapsed,
        options.names.len(),
        answered + timeouts + bad,
        answered,
        answered as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        timeouts + bad + other,
        timeouts,
        nxdomain,
    );
}
