//! Benchmarks of the built-in ingress (ignored by default; BENCHMARKS.md has the numbers):
//!
//!   cargo test --test ingress_bench -- --ignored --nocapture
//!   (KCLUSTER_BIN=<a release kcluster> for the release build's figures)
//!
//! `ingress_vs_direct_vs_nginx`: two backends behind LoadBalancer Services and Ingresses —
//! busybox httpd (forks and closes per request, what the tests use) and a keep-alive server of
//! our own (tests/images/keepalive_http.rs, so the proxies' own ceiling shows). Requests/s and
//! latency percentiles with keep-alive client connections for 5 s each, small (100 B) and
//! 1 MiB responses, three ways in the same run: through the ingress's host port; straight to
//! the Service's own host port (the baseline: same host-port proxy, no ingress); through
//! Debian's `nginx` on this machine configured as the same reverse proxy in front of that host
//! port (upstream keep-alive, access log off). Then the time from `kubectl apply` of a new
//! Ingress to its first 200.
//!
//! `memory_with_1000_ingresses`: the server node's process (API server, controllers and the
//! ingress in one) and the node container's memory before and after 1,000 Services and
//! Ingresses, and the time from their `kubectl apply` until the last one answers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::images::{build_keepalive_image, build_web_image};
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
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fast}
spec:
  selector: {matchLabels: {app: fast}}
  template:
    metadata: {labels: {app: fast}}
    spec:
      containers:
      - name: keepalive
        image: FASTIMAGE
        imagePullPolicy: Never
        command: ["/keepalive-http", "8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: fast}
spec:
  type: LoadBalancer
  selector: {app: fast}
  ports: [{port: FASTPORT, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fast}
spec:
  rules:
  - host: fast.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: fast, port: {number: FASTPORT}}}}
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

/// One nginx `server` for `host`, proxying to `127.0.0.1:port` with upstream keep-alive.
fn nginx_server(name: &str, host: &str, port: u16, listen: u16) -> String {
    format!(
        "  upstream {name} {{ server 127.0.0.1:{port}; keepalive 320; }}\n  server {{\n    listen 127.0.0.1:{listen};\n    server_name {host};\n    location / {{\n      proxy_pass http://{name};\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Real-IP $remote_addr;\n      proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_buffering off;\n    }}\n  }}\n"
    )
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
    let fast_tag = format!("kcluster-e2e/keepalive:{name}");
    let _fast_image = build_keepalive_image(&sandbox, &fast_tag);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);
    cluster.load_image(&fast_tag);
    let lb = free_port();
    let fast_lb = loop {
        let p = free_port();
        if p != lb {
            break p;
        }
    };
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &APP.replace("FASTIMAGE", &fast_tag)
            .replace("IMAGE", &tag)
            .replace("FASTPORT", &fast_lb.to_string())
            .replace("LBPORT", &lb.to_string()),
    );
    assert!(out.status.success(), "{}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    cluster.kubectl_ok(&["rollout", "status", "deploy/fast", "--timeout=120s"]);
    let direct = host_port(&cluster, "default", "web")[0];
    let fast_direct = host_port(&cluster, "default", "fast")[0];
    let ingress = host_port(&cluster, "kube-system", "ingress-nginx-controller")[0];
    wait_for("the ingress routes", Duration::from_secs(30), || {
        request(&mut None, ingress, "bench.example", "/small") == Some(200)
            && request(&mut None, ingress, "fast.example", "/small") == Some(200)
    });

    let nginx_port = free_port();
    let dir = sandbox.path().join("nginx");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n{web}{fast}}}\n",
            d = dir.display(),
            web = nginx_server("web", "bench.example", direct, nginx_port),
            fast = nginx_server("fast", "fast.example", fast_direct, nginx_port),
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
            && request(&mut None, nginx_port, "fast.example", "/small") == Some(200)
    });

    println!("| backend | path | body | req/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (backend, host, direct) in [
        ("busybox httpd", "bench.example", direct),
        ("keep-alive", "fast.example", fast_direct),
    ] {
        for (path, conns) in [("/small", 16), ("/1m", 4)] {
            for (label, port) in [
                ("direct (Service host port)", direct),
                ("ingress", ingress),
                ("nginx → Service host port", nginx_port),
            ] {
                let r = load(port, host, path, conns, 5);
                println!(
                    "| {backend} | {label} | {path} ({conns} conns) | {:.0} | {:.1} ms | {:.1} ms | {} |",
                    r.rps,
                    r.p50.as_secs_f64() * 1e3,
                    r.p99.as_secs_f64() * 1e3,
                    r.errors
                );
            }
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

/// The server node process's resident memory in KiB (`docker top`: ps on the Docker host).
fn server_rss_kib(node: &str) -> u64 {
    // docker top needs the pid column to pick the container's processes.
    let out = docker(&["top", node, "-eo", "pid,rss,args"]);
    assert!(out.status.success(), "docker top: {}", text(&out));
    stdout(&out)
        .lines()
        .find(|l| l.contains("node server"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no `node server` process in:\n{}", stdout(&out)))
}

/// The node container's memory use as `docker stats` shows it (its cgroup: pods included).
fn container_memory(node: &str) -> String {
    let out = docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", node]);
    assert!(out.status.success(), "docker stats: {}", text(&out));
    stdout(&out).trim().to_string()
}

#[test]
#[ignore]
fn memory_with_1000_ingresses() {
    require_docker_and_kubectl();
    const N: usize = 1000;
    let sandbox = Sandbox::new();
    let name = unique_name("ingress-mem");
    let tag = format!("kcluster-e2e/keepalive:{name}");
    let _image = build_keepalive_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);
    let node = format!("{name}-server-0");
    let fast_lb = free_port();
    let backend = APP
        .split("---")
        .skip(3)
        .collect::<Vec<_>>()
        .join("---")
        .replace("FASTIMAGE", &tag)
        .replace("FASTPORT", &fast_lb.to_string());
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &backend);
    assert!(out.status.success(), "{}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deploy/fast", "--timeout=120s"]);
    let ingress = host_port(&cluster, "kube-system", "ingress-nginx-controller")[0];
    wait_for("the first Ingress", Duration::from_secs(30), || {
        request(&mut None, ingress, "fast.example", "/small") == Some(200)
    });
    let rss_before = server_rss_kib(&node);
    let cgroup_before = container_memory(&node);

    // Created through the API 16 at a time, as client libraries and controllers do (kubectl
    // apply of 2,000 objects one by one takes many minutes on a loaded machine).
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        use futures::StreamExt;
        use kube::api::{Api, PostParams};
        let client = kube_client(&sandbox, &cluster.context()).await;
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), "default");
        let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
            Api::namespaced(client, "default");
        futures::stream::iter(0..N)
            .for_each_concurrent(16, |i| {
                let (services, ingresses) = (services.clone(), ingresses.clone());
                async move {
                    let svc = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("s{i}")},
                        "spec": {"selector": {"app": "fast"},
                                 "ports": [{"port": 80, "targetPort": 8080}]},
                    }))
                    .expect("a Service");
                    services
                        .create(&PostParams::default(), &svc)
                        .await
                        .expect("Service created");
                    let ing = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("i{i}")},
                        "spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
                            {"path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": format!("s{i}"), "port": {"number": 80}}}}]}}]},
                    }))
                    .expect("an Ingress");
                    ingresses
                        .create(&PostParams::default(), &ing)
                        .await
                        .expect("Ingress created");
                }
            })
            .await;
    });
    let applied = started.elapsed();
    // Every host in turn until it answers 200 (all were created before this starts, so when
    // the last one answers, all do).
    let mut conn = None;
    for i in 0..N {
        let host = format!("h{i}.example");
        while request(&mut conn, ingress, &host, "/small") != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{host} never answered 200"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let last_answered = started.elapsed();
    let rss_after = server_rss_kib(&node);
    let cgroup_after = container_memory(&node);
    println!(
        "{N} Services + Ingresses: created in {:.1} s, the last answering {:.1} s after the first create",
        applied.as_secs_f64(),
        last_answered.as_secs_f64()
    );
    println!(
        "server node process RSS: {:.1} MiB before, {:.1} MiB after (+{:.1} MiB)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after as f64 - rss_before as f64) / 1024.0
    );
    println!("node container memory: {cgroup_before} before, {cgroup_after} after");
}
