//! Load generator for the API server: `cargo bench --bench apiserver`.
//!
//! Starts the release binary's standalone server (`kcluster node apiserver`), talks to it the way
//! kubectl and client libraries do (HTTPS with the admin client certificate from the kubeconfig
//! it writes, one HTTP/1.1 connection per client), runs each scenario with a bounded number of
//! requests and a time limit, prints a Markdown summary and stops the server.
//!
//! Sizes can be shrunk for a quick look with environment variables: `BENCH_OBJECTS` (creates per
//! write run, 10000), `BENCH_CLIENTS` (16), `BENCH_WATCHERS` (1000), `BENCH_FANOUT_WRITES` (200)
//! and `BENCH_FANOUT_RATE` (paced writes per second during the fan-out run, 50).

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Every scenario (and every wait inside one) gives up after this long, so a broken server makes
/// the bench fail instead of hang.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sizes {
    objects: usize,
    clients: usize,
    watchers: usize,
    fanout_writes: usize,
    fanout_rate: usize,
    bindings: usize,
}

// ------------------------------------------------------------------------------------------------
// The server process

struct Server {
    child: Child,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    /// The CA alone, for clients that authenticate with a bearer token.
    token_tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `kcluster node apiserver` on a fresh data directory; returns it and the time from
    /// spawning the process to its `ready` line.
    fn start() -> (Server, Duration) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let began = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcluster"))
            .args(["node", "apiserver", "--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start kcluster node apiserver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("cannot read the server's first line");
        let ready = began.elapsed();
        let url = line
            .trim()
            .strip_prefix("ready https://")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        let addr: SocketAddr = url.parse().expect("server address");
        let (tls, token_tls) = client_tls(&kubeconfig);
        (
            Server {
                child,
                addr,
                tls,
                token_tls,
                _dir: dir,
            },
            ready,
        )
    }

    /// (VmHWM, VmRSS) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("server's /proc status");
        let field = |name: &str| -> f64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status"));
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("a number of kB");
            kib / 1024.0
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// CPU time the server has used so far (user + system).
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.child.id()))
    }

    async fn connect(&self) -> Client {
        Client::connect(self.addr, self.tls.clone()).await
    }

    /// A client that authenticates with a bearer token instead of the admin certificate.
    async fn connect_as(&self, token: &str) -> Client {
        let mut c = Client::connect(self.addr, self.token_tls.clone()).await;
        c.bearer = Some(format!("Bearer {token}"));
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime from a /proc/<pid>/stat file, at the usual 100 ticks per second.
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).expect("/proc stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The CA and admin client certificate of the context the server wrote; and the CA alone.
fn client_tls(kubeconfig: &Path) -> (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>) {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let context = "kcluster-standalone";
    let named = |list: &str, name: &str| -> serde_yaml::Value {
        config[list]
            .as_sequence()
            .and_then(|items| items.iter().find(|i| i["name"].as_str() == Some(name)))
            .unwrap_or_else(|| panic!("kubeconfig has no {list} entry {name:?}"))
            .clone()
    };
    let ctx = named("contexts", context);
    let cluster = named(
        "clusters",
        ctx["context"]["cluster"].as_str().expect("cluster"),
    );
    let user = named("users", ctx["context"]["user"].as_str().expect("user"));
    let data = |v: &serde_yaml::Value| -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 data"))
            .expect("valid base64")
    };
    let ca = data(&cluster["cluster"]["certificate-authority-data"]);
    let cert = data(&user["user"]["client-certificate-data"]);
    let key = data(&user["user"]["client-key-data"]);

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .expect("client certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(&key).expect("client key PEM");
    let builder = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots.clone())
    };
    let mut config = builder()
        .with_client_auth_cert(certs, key)
        .expect("client certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut token_only = builder().with_no_client_auth();
    token_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), Arc::new(token_only))
}

// ------------------------------------------------------------------------------------------------
// One client: one TLS connection speaking HTTP/1.1

struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    /// `Authorization` header value, for token clients.
    bearer: Option<String>,
}

impl Client {
    async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("TCP connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            host: addr.to_string(),
            bearer: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> hyper::Response<hyper::body::Incoming> {
        self.sender.ready().await.expect("connection ready");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::ACCEPT, "application/json");
        if let Some(bearer) = &self.bearer {
            req = req.header(header::AUTHORIZATION, bearer);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .expect("request");
        self.sender.send_request(req).await.expect("response")
    }

    /// A request whose whole answer is read; panics unless the status is `want`.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> Bytes {
        let resp = self.send(method.clone(), path, body).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }
}

// ------------------------------------------------------------------------------------------------
// Statistics

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct WriteRun {
    /// CPU seconds per second of the run: the server's, and this load generator's own.
    server_cpu: f64,
    client_cpu: f64,
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl WriteRun {
    fn row(&self) -> String {
        format!(
            "{:.0} writes/s, p50 {}, p99 {}, max {} (CPU: server {:.0}%, load generator {:.0}%)",
            self.rate,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.server_cpu * 100.0,
            self.client_cpu * 100.0
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Scenarios

fn configmap(namespace: &str, name: &str, i: usize) -> Bytes {
    // About 600 bytes of JSON once stored: a typical small ConfigMap with labels.
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "bench", "shard": format!("s{}", i % 10)},
        },
        "data": {
            "index": i.to_string(),
            "settings.yaml": "x".repeat(400),
        },
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON"))
}

async fn create_namespace(server: &Server, name: &str) {
    let mut c = server.connect().await;
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    c.call(
        Method::POST,
        "/api/v1/namespaces",
        Some(Bytes::from(body.to_string())),
        StatusCode::CREATED,
    )
    .await;
}

/// `count` ConfigMap creates in `namespace` from `clients` connections at once.
async fn create_many(server: &Server, namespace: &str, count: usize, clients: usize) -> WriteRun {
    create_many_as(server, None, namespace, count, clients).await
}

/// `create_many` as the admin (`token` None, system:masters) or with a bearer token.
async fn create_many_as(
    server: &Server,
    token: Option<&str>,
    namespace: &str,
    count: usize,
    clients: usize,
) -> WriteRun {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(match token {
            Some(t) => server.connect_as(t).await,
            None => server.connect().await,
        });
    }
    let path = format!("/api/v1/namespaces/{namespace}/configmaps");
    let (server_cpu, client_cpu) = (server.cpu(), cpu_of("/proc/self/stat"));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            let path = path.clone();
            let namespace = namespace.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count / clients + 1);
                for i in (t..count).step_by(clients) {
                    let body = configmap(&namespace, &format!("cm-{i:05}"), i);
                    let began = Instant::now();
                    c.call(Method::POST, &path, Some(body), StatusCode::CREATED)
                        .await;
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.extend(
            tokio::time::timeout(SCENARIO_LIMIT, t)
                .await
                .expect("writers finish in time")
                .expect("writer task"),
        );
    }
    let elapsed = started.elapsed();
    let per_second = |d: Duration| d.as_secs_f64() / elapsed.as_secs_f64();
    latencies.sort_unstable();
    WriteRun {
        server_cpu: per_second(server.cpu() - server_cpu),
        client_cpu: per_second(cpu_of("/proc/self/stat") - client_cpu),
        rate: count as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// Times of whole-list requests: (time to the full body, bytes, items).
async fn list_all(server: &Server, namespace: &str, runs: usize) -> Vec<(Duration, usize, usize)> {
    let mut c = server.connect().await;
    let path = format!("/api/v1/namespaces/{namespace}/configmaps");
    let mut out = Vec::new();
    for _ in 0..runs {
        let began = Instant::now();
        let body = c.call(Method::GET, &path, None, StatusCode::OK).await;
        let took = began.elapsed();
        let list: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
        let items = list["items"].as_array().map_or(0, Vec::len);
        out.push((took, body.len(), items));
    }
    out
}

/// The list's resourceVersion, for watches that start from now.
async fn current_rv(server: &Server, namespace: &str) -> String {
    let mut c = server.connect().await;
    let path = format!("/api/v1/namespaces/{namespace}/configmaps?limit=1");
    let body = c.call(Method::GET, &path, None, StatusCode::OK).await;
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
    list["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_string()
}

/// A watcher's record: for each object `fan-NNNNN` it saw ADDED, when.
type Seen = Vec<(usize, Instant)>;

/// Opens `count` watches of ConfigMaps in `namespace` from `rv`, each on its own connection, and
/// returns their tasks; each ends after `expect` events or when told to stop.
async fn open_watchers(
    server: &Server,
    namespace: &str,
    rv: &str,
    count: usize,
    expect: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let path = format!("/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={rv}");
    let mut tasks = Vec::with_capacity(count);
    // Connect one at a time: a thousand simultaneous handshakes only measure the accept queue.
    let mut pending = Vec::new();
    for _ in 0..count {
        let mut c = server.connect().await;
        let resp = c.send(Method::GET, &path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "watch {path}");
        pending.push((c, resp));
    }
    for (c, resp) in pending {
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = c;
            let mut body = resp.into_body();
            let mut seen: Seen = Vec::with_capacity(expect);
            let mut buf: Vec<u8> = Vec::new();
            while seen.len() < expect {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = stop.changed() => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = Instant::now();
                buf.extend_from_slice(&data);
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if let Some(n) = fanout_index(&line) {
                        seen.push((n, now));
                    }
                }
            }
            seen
        }));
    }
    tasks
}

/// The N of an ADDED event for `fan-NNNNN`, found without a JSON parse: a thousand watchers
/// parsing every event would measure the client more than the server.
fn fanout_index(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains("\"type\":\"ADDED\"") {
        return None;
    }
    let at = text.find("\"name\":\"fan-")? + "\"name\":\"fan-".len();
    text.get(at..at + 5)?.parse().ok()
}

struct Fanout {
    delivered: usize,
    expected: usize,
    from_response: Vec<Duration>,
    from_request: Vec<Duration>,
    write_rate: f64,
}

/// Paced creates in the watched namespace; every watcher should see each one.
async fn fanout(
    server: &Server,
    watchers: Vec<tokio::task::JoinHandle<Seen>>,
    stop: tokio::sync::watch::Sender<bool>,
    writes: usize,
    rate: usize,
) -> Fanout {
    let watcher_count = watchers.len();
    let mut c = server.connect().await;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut sent = Vec::with_capacity(writes);
    let mut answered = Vec::with_capacity(writes);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    for i in 0..writes {
        ticker.tick().await;
        let body = configmap("fanout", &format!("fan-{i:05}"), i);
        sent.push(Instant::now());
        c.call(
            Method::POST,
            "/api/v1/namespaces/fanout/configmaps",
            Some(body),
            StatusCode::CREATED,
        )
        .await;
        answered.push(Instant::now());
    }
    let write_rate = writes as f64 / started.elapsed().as_secs_f64();
    // Give stragglers a bounded time to catch up, then stop everyone.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let _ = stop.send(true);
        stop
    });
    let mut from_response = Vec::with_capacity(writes * watcher_count);
    let mut from_request = Vec::with_capacity(writes * watcher_count);
    let mut delivered = 0;
    for w in watchers {
        let seen = tokio::time::timeout(SCENARIO_LIMIT, w)
            .await
            .expect("watchers finish in time")
            .expect("watcher task");
        delivered += seen.len();
        for (n, at) in seen {
            if n < writes {
                // The server tells watchers before it answers the writer, so an event may
                // arrive before the response: that counts as no delay.
                from_response.push(at.saturating_duration_since(answered[n]));
                from_request.push(at.saturating_duration_since(sent[n]));
            }
        }
    }
    stopper.abort();
    from_response.sort_unstable();
    from_request.sort_unstable();
    Fanout {
        delivered,
        expected: writes * watcher_count,
        from_response,
        from_request,
        write_rate,
    }
}

/// First requests kubectl makes for an apply: the OpenAPI index and one group-version document.
async fn openapi_first(server: &Server) -> (Duration, Duration) {
    let mut c = server.connect().await;
    let began = Instant::now();
    let index = c
        .call(Method::GET, "/openapi/v3", None, StatusCode::OK)
        .await;
    let index_took = began.elapsed();
    let index: serde_json::Value = serde_json::from_slice(&index).expect("index JSON");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 in the OpenAPI index")
        .to_string();
    let began = Instant::now();
    c.call(Method::GET, &url, None, StatusCode::OK).await;
    (index_took, began.elapsed())
}

// ------------------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from other tools is ignored.
    let sizes = Sizes {
        objects: env_usize("BENCH_OBJECTS", 10_000),
        clients: env_usize("BENCH_CLIENTS", 16),
        watchers: env_usize("BENCH_WATCHERS", 1_000),
        fanout_writes: env_usize("BENCH_FANOUT_WRITES", 200),
        fanout_rate: env_usize("BENCH_FANOUT_RATE", 50),
        bindings: env_usize("BENCH_BINDINGS", 200),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bench_started = Instant::now();
    let report = runtime.block_on(run(&sizes));
    println!("{report}");
    println!(
        "\n(bench took {:.0} s; binary {})",
        bench_started.elapsed().as_secs_f64(),
        env!("CARGO_BIN_EXE_kcluster")
    );
}

async fn run(sizes: &Sizes) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        eprintln!("{s}");
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "## API server bench: {} objects, {} clients, {} watchers\n",
        sizes.objects, sizes.clients, sizes.watchers
    ));
    line("| scenario | result | target |".into());
    line("|---|---|---|".into());

    // Start-up, three times on fresh directories; the last server is the one measured on. The
    // OpenAPI documents are asked for right after `ready` twice, and once after the pause a
    // kubectl started by hand or by a test would take anyway.
    let mut readies = Vec::new();
    let mut server = None;
    let mut openapi = Vec::new();
    for pause in [0, 0, 500] {
        let (s, ready) = Server::start();
        readies.push(ready);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        openapi.push((pause, openapi_first(&s).await));
        server = Some(s);
    }
    let server = server.expect("a server");
    line(format!(
        "| start to `ready` (3 fresh starts) | {} | |",
        readies
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "| first `GET /openapi/v3`, then `apis/apps/v1` | {} | |",
        openapi
            .iter()
            .map(|(pause, (index, doc))| format!(
                "{pause} ms after ready: {}, {}",
                ms(*index),
                ms(*doc)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    create_namespace(&server, "bench").await;
    create_namespace(&server, "bench2").await;
    create_namespace(&server, "bench3").await;
    create_namespace(&server, "fanout").await;
    let (_, idle_rss) = server.memory();

    let writes = create_many(&server, "bench", sizes.objects, sizes.clients).await;
    line(format!(
        "| create {} ConfigMaps, {} clients | {} | ≥ 3,000 writes/s, p99 < 25 ms |",
        sizes.objects,
        sizes.clients,
        writes.row()
    ));
    let (hwm_writes, rss_writes) = server.memory();

    let lists = list_all(&server, "bench", 5).await;
    let mut times: Vec<Duration> = lists.iter().map(|l| l.0).collect();
    times.sort_unstable();
    let (_, bytes, items) = lists[0];
    assert_eq!(items, sizes.objects, "the list returns every object");
    line(format!(
        "| list {items} ConfigMaps in one request ({:.1} MB), 5 runs | median {}, best {}, worst {} | < 200 ms |",
        bytes as f64 / 1e6,
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    ));
    let (hwm, rss) = server.memory();
    line(format!(
        "| server memory with {} objects | VmRSS {:.1} MiB (idle before writes {:.1} MiB, after writes {:.1} MiB), VmHWM {:.1} MiB (after writes {:.1} MiB) | < 150 MiB |",
        sizes.objects, rss, idle_rss, rss_writes, hwm, hwm_writes
    ));

    // Fan-out: watchers on an empty namespace, from its current revision.
    let rv = current_rv(&server, "fanout").await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opened = Instant::now();
    let watchers = open_watchers(
        &server,
        "fanout",
        &rv,
        sizes.watchers,
        sizes.fanout_writes,
        stop_rx,
    )
    .await;
    let open_took = opened.elapsed();
    let (_, rss_watchers) = server.memory();
    // What the open watches cost while nothing happens: it should be nothing.
    let (idle_server, idle_client) = (server.cpu(), cpu_of("/proc/self/stat"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_server = (server.cpu() - idle_server).as_secs_f64() / 2.0;
    let idle_client = (cpu_of("/proc/self/stat") - idle_client).as_secs_f64() / 2.0;

    // Writes elsewhere while the watches are open: the server must filter them out cheaply.
    let with_watchers = create_many(&server, "bench2", sizes.objects, sizes.clients).await;
    line(format!(
        "| same creates with {} watches open (watching ConfigMaps in another namespace) | {} | no noticeable slowdown vs {:.0} writes/s |",
        sizes.watchers,
        with_watchers.row(),
        writes.rate
    ));

    let f = fanout(
        &server,
        watchers,
        stop_tx,
        sizes.fanout_writes,
        sizes.fanout_rate,
    )
    .await;
    line(format!(
        "| fan-out: {} creates paced at {}/s ({:.0}/s achieved), each to {} watchers | delivered {}/{}; from the write's response: p50 {}, p99 {}, max {}; from the write's request: p99 {} | p99 < 100 ms |",
        sizes.fanout_writes,
        sizes.fanout_rate,
        f.write_rate,
        sizes.watchers,
        f.delivered,
        f.expected,
        ms(percentile(&f.from_response, 50.0)),
        ms(percentile(&f.from_response, 99.0)),
        ms(f.from_response.last().copied().unwrap_or_default()),
        ms(percentile(&f.from_request, 99.0)),
    ));
    let (hwm_end, rss_end) = server.memory();

    line(format!(
        "| {} watches: time to open them; CPU while they idle; server memory | {:.1} s; server {:.0}%, load generator {:.0}%; VmRSS {:.1} MiB with them open, {:.1} MiB after the fan-out (VmHWM {:.1} MiB) | |",
        sizes.watchers,
        open_took.as_secs_f64(),
        idle_server * 100.0,
        idle_client * 100.0,
        rss_watchers,
        rss_end,
        hwm_end
    ));
    // Writes again once the watches are closed: the with/without comparison then brackets the
    // run with watches instead of always putting it second.
    let after = create_many(&server, "bench3", sizes.objects, sizes.clients).await;
    line(format!(
        "| same creates again after the watches closed | {} | |",
        after.row()
    ));

    // RBAC: a service account's token, authorized by RBAC among many bindings, against the
    // admin certificate (system:masters, decided before RBAC is consulted).
    let token = rbac_setup(&server, sizes.bindings).await;
    // Writes slow down as the store grows, so the runs go admin, account, account, admin
    // (ABBA): a steady trend then weighs on both sides alike.
    let quarter = (sizes.objects / 4).max(1);
    let admin_1 = create_many(&server, "rbac-admin", quarter, sizes.clients).await;
    let sa_1 = create_many_as(&server, Some(&token), "rbac-sa", quarter, sizes.clients).await;
    let sa_2 = create_many_as(&server, Some(&token), "rbac-sa2", quarter, sizes.clients).await;
    let admin_2 = create_many(&server, "rbac-admin2", quarter, sizes.clients).await;
    line(format!(
        "| RBAC: 4 × {quarter} creates, admin / service account / service account / admin ({} bindings in the cluster) | admin {}; account {}; account {}; admin {}; ratio account/admin {:.2} | ≥ 0.9 |",
        sizes.bindings + 1,
        admin_1.row(),
        sa_1.row(),
        sa_2.row(),
        admin_2.row(),
        (sa_1.rate + sa_2.rate) / (admin_1.rate + admin_2.rate)
    ));
    drop(server);
    out
}

/// Namespaces for the RBAC comparison, `bindings` RoleBindings and ClusterRoleBindings of other
/// subjects, and a service account `writer` that may create ConfigMaps in `rbac-sa` through a
/// Role; returns a token of that account.
async fn rbac_setup(server: &Server, bindings: usize) -> String {
    for ns in ["rbac-admin", "rbac-admin2", "rbac-sa", "rbac-sa2"] {
        create_namespace(server, ns).await;
    }
    let mut c = server.connect().await;
    let post = |path: &'static str, body: serde_json::Value| (path, Bytes::from(body.to_string()));
    let mut calls = vec![post(
        "/api/v1/namespaces/rbac-sa/serviceaccounts",
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": {"name": "writer"}}),
    )];
    for (roles, bindings) in [
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-sa/roles",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-sa/rolebindings",
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-sa2/roles",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-sa2/rolebindings",
        ),
    ] {
        calls.push(post(
            roles,
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "cm-writer"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]}),
        ));
        calls.push(post(
            bindings,
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "writer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-writer"},
                "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": "rbac-sa"}]}),
        ));
    }
    for i in 0..bindings {
        // Half in the account's own namespace (looked at by its requests), half cluster-wide.
        let (path, kind) = if i % 2 == 0 {
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-sa/rolebindings",
                "RoleBinding",
            )
        } else {
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                "ClusterRoleBinding",
            )
        };
        calls.push(post(
            path,
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                "metadata": {"name": format!("other-{i}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": format!("user-{i}")},
                             {"kind": "Group", "name": format!("group-{i}")}]}),
        ));
    }
    for (path, body) in calls {
        c.call(Method::POST, path, Some(body), StatusCode::CREATED)
            .await;
    }
    let answer = c
        .call(
            Method::POST,
            "/api/v1/namespaces/rbac-sa/serviceaccounts/writer/token",
            Some(Bytes::from(
                serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
                                   "kind": "TokenRequest", "spec": {}})
                .to_string(),
            )),
            StatusCode::CREATED,
        )
        .await;
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("TokenRequest JSON");
    answer["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string()
}
