//! Benchmark of the built-in ingress (ignored by default; BENCHMARKS.md has the numbers):
//!
//!   cargo test --release --test ingress_bench -- --ignored --nocapture
//!
//! One busybox httpd pod behind a LoadBalancer Service and an Ingress. Requests/s and latency
//! percentiles with 16 keep-alive client connections for 5 s each, small (100 B) and 1 MiB
//! responses, three ways in the same run: through the ingress's host port; straight to the
//! Service's own host port (the baseline: same host-port proxy, no ingress); through Debian's
//! `nginx` on this machine configured as the same reverse proxy in front of that host port
//! (upstream keep-alive, access log off). Then the time from `kubectl apply` of a new Ingress
//! to its first 200.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::images::build_web_image;
use common::*;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && head -c 100 /dev/zero | tr '\\0' x > /www/small && head -c 1048576 /dev/zero > /www/1m && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: LBPORT, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: bench.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: LBPORT}}}}
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One keep-alive connection's request: status and body length, or None on any failure.
fn request(
    conn: &mut Option<BufReader<TcpStream>>,
    port: u16,
    host: &str,
    path: &str,
) -> Option<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench\r\n\r\n");
    if r.get_mut().write_all(req.as_bytes()).is_err() {
        *conn = None;
        return None;
    }
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        *conn = None;
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    if close || line.starts_with("HTTP/1.0") {
        *conn = None;
    }
    Some(status)
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

fn load(port: u16, host: &str, path: &str, conns: usize, secs: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let host = host.to_string();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut conn = None;
                let mut lat = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match request(&mut conn, port, &host, &path) {
                        Some(200) => lat.push(t.elapsed()),
                        _ => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("load thread");
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Run {
        rps: all.len() as f64 / secs as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn host_port(cluster: &Cluster, ns: &str, svc: &str) -> Vec<u16> {
    let ann = cluster.wait_for(
        &[
            "-n",
            ns,
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.metadata.annotations.kcluster\\.dev/host-ports}",
        ],
        Duration::from_secs(60),
        |s| s.contains('='),
    );
    ann.split(',')
        .filter_map(|p| p.rsplit_once(':')?.1.parse().ok())
        .collect()
}

/// The nginx master, stopped with SIGTERM when the bench ends, pass or fail (it stops its
/// workers; SIGKILL would leave them running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore]
fn ingress_vs_direct_vs_nginx() {
    require_docker_and_kubectl();
    assert!(
        std::path::Path::new("/usr/sbin/nginx").exists(),
        "this bench needs Debian's nginx: apt-get install nginx-light"
    );
    let sandbox = Sandbox::new();
    let name = unique_name("ingbench");
    let tag = format!("kcluster-e2e/httpd:{name}");
    let _image = build_web_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);
    let lb = free_port();
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &APP.replace("IMAGE", &tag)
            .replace("LBPORT", &lb.to_string()),
    );
    assert!(out.status.success(), "{}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let direct = host_port(&cluster, "default", "web")[0];
    let ingress = host_port(&cluster, "kube-system", "ingress-nginx-controller")[0];
    wait_for("the ingress route", Duration::from_secs(30), || {
        request(&mut None, ingress, "bench.example", "/small") == Some(200)
    });

    let nginx_port = free_port();
    let dir = sandbox.path().join("nginx");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  upstream app {{ server 127.0.0.1:{direct}; keepalive 320; }}\n  server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Real-IP $remote_addr;\n      proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )
    .expect("nginx.conf");
    let nginx = Nginx(
        Command::new("/usr/sbin/nginx")
            .args(["-p", dir.to_str().expect("path"), "-c"])
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    wait_for("nginx", Duration::from_secs(10), || {
        request(&mut None, nginx_port, "bench.example", "/small") == Some(200)
    });

    println!("| path | body | req/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|");
    for (path, conns) in [("/small", 16), ("/1m", 4)] {
        for (label, port) in [
            ("direct (Service host port)", direct),
            ("ingress", ingress),
            ("nginx → Service host port", nginx_port),
        ] {
            let r = load(port, "bench.example", path, conns, 5);
            println!(
                "| {label} | {path} ({conns} conns) | {:.0} | {:.1} ms | {:.1} ms | {} |",
                r.rps,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.errors
            );
        }
    }
    drop(nginx);

    // From `kubectl apply` of a new Ingress to its first 200 through the ingress.
    let mut times = Vec::new();
    for i in 0..5 {
        let host = format!("round{i}.example");
        let manifest = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: round{i}}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: {lb}}}}}}}}}\n"
        );
        let t = Instant::now();
        let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest);
        assert!(out.status.success(), "{}", text(&out));
        // Polled every 5 ms (a 404 until the route is in the table).
        while request(&mut None, ingress, &host, "/small") != Some(200) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{host} never answered 200"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "apply → first 200: median {:?}, max {:?} (kubectl apply itself included)",
        times[2], times[4]
    );
}
