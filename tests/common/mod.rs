//! Shared pieces of the end-to-end tests: the real kcluster binary, the real Docker engine and
//! the real kubectl. Nothing here skips: a missing Docker or kubectl fails the test loudly.
#![allow(dead_code)]

pub mod cdp;
pub mod crds;
pub mod etcd;
pub mod https;
pub mod images;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary under test; `KCLUSTER_BIN` names another copy (a target directory shared by
/// several checkouts relinks the default path on every build).
pub fn kcluster_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("KCLUSTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kcluster").into())
    })
}

pub fn require_docker_and_kubectl() {
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match docker {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "these tests need a running Docker engine: `docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("these tests need the docker CLI and a running engine: {e}"),
    }
    match Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        other => panic!("these tests need kubectl on PATH: {other:?}"),
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a `kubectl get` of one object says it is gone: true on NotFound, false while it
/// exists. Any other failure (a dead API server, a typo) fails the test, so a wait for
/// "gone" never passes on an error.
#[allow(dead_code)]
pub fn gone(out: &Output) -> bool {
    if out.status.success() {
        return false;
    }
    let t = text(out);
    assert!(
        t.contains("(NotFound)"),
        "kubectl failed, and not with NotFound: {t}"
    );
    true
}

/// Polls `check` (which says what it saw when it fails) until it passes, failing the test
/// after `timeout` with the last thing it saw.
#[allow(dead_code)]
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check() {
            Ok(()) => return,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
}

/// One HTTP/1.0 GET from this machine, no retries: the response, or why there is none.
#[allow(dead_code)]
pub fn http_once(host: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let addr = format!("{host}:{port}");
    match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body
        }
        Err(e) => format!("cannot connect to {addr}: {e}"),
    }
}

/// Polls `get` until its output holds every one of `needles` (events and other things that
/// are written asynchronously are waited for, never read once); returns that output.
#[allow(dead_code)]
pub fn wait_output(what: &str, mut get: impl FnMut() -> String, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = get();
        let missing: Vec<&&str> = needles.iter().filter(|n| !out.contains(**n)).collect();
        if missing.is_empty() {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: no {missing:?} in:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `get` until it returns `want` (30 s): for what controllers write asynchronously,
/// such as the sequence of an object's events. Fails showing the last value.
#[allow(dead_code)]
pub fn wait_eq<T: PartialEq + std::fmt::Debug>(what: &str, mut get: impl FnMut() -> T, want: T) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n got: {got:?}\nwant: {want:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `check` until it holds, failing the test after `timeout`: state that controllers and
/// agents settle asynchronously is waited for, never read once.
#[allow(dead_code)]
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A unique cluster name per test run, so parallel tests and leftovers never collide.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}", (nanos ^ std::process::id()) & 0xfffff)
}

/// A scratch home for one test: its own kubeconfig, never the user's.
/// A kube-rs client for one context of the sandbox's kubeconfig (the benchmarks drive the API
/// with it, as client libraries do).
#[allow(dead_code)]
pub async fn kube_client(sandbox: &Sandbox, context: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sandbox.kubeconfig()).expect("a kubeconfig");
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .expect("a client configuration");
    kube::Client::try_from(config).expect("an API client")
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("cannot make a temp dir"),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kcluster(&self, args: &[&str]) -> Output {
        self.kcluster_cmd(args)
            .output()
            .expect("cannot run kcluster")
    }

    pub fn kcluster_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kcluster_bin());
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path());
        cmd
    }

    pub fn kubectl(&self, context: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(["--context", context])
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .output()
            .expect("cannot run kubectl")
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, context: &str, args: &[&str]) -> String {
        let out = self.kubectl(context, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            text(&out)
        );
        stdout(&out)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A cluster that is deleted when the test ends, pass or fail.
pub struct Cluster<'a> {
    pub name: String,
    pub sandbox: &'a Sandbox,
}

impl<'a> Cluster<'a> {
    /// A cluster whose nodes keep the default node-monitor grace period (40 s), so that the
    /// 10 s heartbeats never let a healthy node look unreachable.
    pub fn create(sandbox: &'a Sandbox, name: &str, extra: &[&str]) -> Self {
        Self::create_with_grace(sandbox, name, extra, None)
    }

    /// A cluster that notices a stopped node after 15 s instead of 40 s: for tests that stop
    /// nodes. Still longer than a heartbeat interval plus slack, so healthy nodes do not flap.
    pub fn create_quick_to_notice(sandbox: &'a Sandbox, name: &str, extra: &[&str]) -> Self {
        Self::create_with_grace(sandbox, name, extra, Some("15"))
    }

    fn create_with_grace(
        sandbox: &'a Sandbox,
        name: &str,
        extra: &[&str],
        grace: Option<&str>,
    ) -> Self {
        let mut args = vec!["create", "--name", name, "--wait", "120s"];
        args.extend_from_slice(extra);
        let mut cmd = sandbox.kcluster_cmd(&args);
        if let Some(g) = grace {
            cmd.env("KCLUSTER_NODE_MONITOR_GRACE_SECONDS", g);
        }
        let out = cmd.output().expect("cannot run kcluster");
        let cluster = Cluster {
            name: name.to_string(),
            sandbox,
        };
        assert!(
            out.status.success(),
            "kcluster create failed: {}",
            text(&out)
        );
        cluster
    }

    pub fn context(&self) -> String {
        format!("kcluster-{}", self.name)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.sandbox.kubectl_ok(&self.context(), args)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.sandbox.kubectl(&self.context(), args)
    }

    /// Waits until the pod (in the context's namespace) is Ready.
    #[allow(dead_code)]
    pub fn wait_ready_pod(&self, pod: &str) {
        self.wait_for(
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            Duration::from_secs(120),
            |s| s == "True",
        );
    }

    /// A pod's events, one per line: `<type> <reason>: <message>`.
    #[allow(dead_code)]
    pub fn pod_events(&self, pod: &str) -> String {
        self.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ])
    }

    /// Waits until the pod's events satisfy `check` (events are written asynchronously);
    /// returns them.
    #[allow(dead_code)]
    pub fn wait_pod_events(&self, pod: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_until(
            &format!("the events of {pod}"),
            Duration::from_secs(120),
            || {
                last = self.pod_events(pod);
                if check(&last) {
                    Ok(())
                } else {
                    Err(last.clone())
                }
            },
        );
        last
    }

    /// `kubectl wait --for=condition=Ready` of a pod; on failure shows the pod and its events.
    #[allow(dead_code)]
    pub fn wait_pod_ready(&self, pod: &str) {
        let out = self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
        assert!(
            out.status.success(),
            "{pod} did not become ready: {}\n{}\nevents:\n{}",
            text(&out),
            self.kubectl_ok(&["get", "pod", pod, "-o", "yaml"]),
            self.pod_events(pod)
        );
    }

    /// Waits for the pod's first container to wait with `reason`; returns its message.
    #[allow(dead_code)]
    pub fn wait_pod_waiting(&self, pod: &str, reason: &str) -> String {
        let jsonpath = "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}";
        let out = self.wait_for(
            &["get", "pod", pod, "-o", jsonpath],
            Duration::from_secs(120),
            |s| s.starts_with(&format!("{reason}|")),
        );
        out.split_once('|')
            .map(|(_, m)| m.to_string())
            .unwrap_or_default()
    }

    /// Every node's name and InternalIP, as the API has them.
    #[allow(dead_code)]
    pub fn node_ips(&self) -> Vec<(String, String)> {
        self.kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type==\"InternalIP\")].address}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    /// Polls kubectl until `check` accepts its output or the time is up.
    pub fn wait_for(
        &self,
        args: &[&str],
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.kubectl(args);
            last = text(&out);
            if out.status.success() && check(&stdout(&out)) {
                return stdout(&out);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("timed out after {timeout:?} waiting on kubectl {args:?}; last output:\n{last}");
    }
}

impl Cluster<'_> {
    /// A kubectl JSONPath over the built-in ingress's Service,
    /// `kube-system/ingress-nginx-controller`.
    pub fn ingress_service(&self, jsonpath: &str) -> String {
        self.kubectl_ok(&[
            "-n",
            "kube-system",
            "get",
            "svc",
            "ingress-nginx-controller",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    }

    /// One annotation of the built-in ingress's Service ("" when it has none).
    pub fn ingress_service_annotation(&self, key: &str) -> String {
        self.ingress_service(&format!(
            "{{.metadata.annotations.{}}}",
            key.replace('.', "\\.")
        ))
    }

    /// The host port a TCP port of the ingress's Service is published on, from its
    /// `kcluster.dev/host-ports` annotation ("80/TCP=127.0.0.1:80,443/TCP=127.0.0.1:443").
    pub fn ingress_host_port(&self, service_port: u16) -> Option<u16> {
        self.ingress_service_annotation("kcluster.dev/host-ports")
            .split(',')
            .find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{service_port}/TCP="))
                    .map(str::to_string)
            })
            .and_then(|addr| addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
    }

    /// kubectl with `stdin` fed to it (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(["--context", &self.context()])
            .args(args)
            .env("KUBECONFIG", self.sandbox.kubeconfig())
            .env("HOME", self.sandbox.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("cannot write to kubectl");
        child.wait_with_output().expect("kubectl did not finish")
    }

    /// `kcluster image load` of a local image into this cluster's nodes.
    pub fn load_image(&self, tag: &str) {
        let out = self
            .sandbox
            .kcluster(&["image", "load", tag, "--name", &self.name]);
        assert!(out.status.success(), "image load failed: {}", text(&out));
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.sandbox.kcluster(&["delete", "--name", &self.name]);
    }
}

/// A file of a node container (nodes have no `cat`; docker cp also reads stopped ones); empty
/// if it cannot be read.
#[allow(dead_code)]
pub fn node_file(node: &str, path: &str) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let local = dir.path().join("copy");
    let out = docker(&["cp", &format!("{node}:{path}"), &local.to_string_lossy()]);
    if !out.status.success() {
        return String::new();
    }
    std::fs::read_to_string(&local).unwrap_or_default()
}

/// Containers that take addresses on a cluster's network while it is down, whichever way
/// Docker hands them out (lowest free or next in turn), so its nodes come back on new ones;
/// removed when dropped.
#[allow(dead_code)]
pub struct Spacers(Vec<String>);

#[allow(dead_code)]
impl Spacers {
    /// `count` containers of `image` (one with `sleep`) named `<prefix>-spacer-<n>`.
    pub fn start(prefix: &str, network: &str, image: &str, count: usize) -> Spacers {
        let mut spacers = Spacers(Vec::new());
        for i in 0..count {
            let spacer = format!("{prefix}-spacer-{i}");
            let out = docker(&[
                "run",
                "-d",
                "--name",
                &spacer,
                "--network",
                network,
                image,
                "sleep",
                "3600",
            ]);
            assert!(out.status.success(), "spacer {spacer}: {}", text(&out));
            spacers.0.push(spacer);
        }
        spacers
    }
}

impl Drop for Spacers {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = docker(&["rm", "-f", s]);
        }
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("cannot run docker")
}

/// Names of Docker objects of a kind (`container`, `network`, `volume`) that carry the cluster's label.
pub fn docker_objects(kind: &str, cluster: &str) -> Vec<String> {
    let filter = format!("label=dev.kcluster.cluster={cluster}");
    let out = match kind {
        "container" => docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]),
        "network" => docker(&[
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ]),
        _ => docker(&["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"]),
    };
    stdout(&out)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The API server alone (`kcluster node apiserver`), on a free port with its own CA and kubeconfig:
/// for kubectl tests that need no Docker. Killed when dropped.
pub struct ApiServer {
    pub sandbox: Sandbox,
    child: std::process::Child,
    pub url: String,
}

impl ApiServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let sandbox = Sandbox::new();
        let (child, url) = Self::spawn(&sandbox, extra);
        ApiServer {
            sandbox,
            child,
            url,
        }
    }

    fn spawn(sandbox: &Sandbox, extra: &[&str]) -> (std::process::Child, String) {
        use std::io::BufRead;
        let data = sandbox.path().join("data");
        // KCLUSTER_TEST_ETCD=http://127.0.0.1:2379 runs every API server test against that
        // etcd instead of the embedded store, each server under its own prefix.
        let etcd = std::env::var("KCLUSTER_TEST_ETCD").ok().map(|url| {
            let dir = sandbox.path().to_string_lossy().replace('/', "_");
            [
                format!("--store=etcd={url}"),
                format!("--etcd-prefix=/kcluster-test/{}{dir}/", std::process::id()),
            ]
        });
        let mut child = Command::new(kcluster_bin())
            .args(["node", "apiserver", "--data-dir"])
            .arg(&data)
            .arg("--kubeconfig")
            .arg(sandbox.kubeconfig())
            .args(etcd.iter().flatten())
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start kcluster node apiserver");
        let stdout = child.stdout.take().expect("no stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("cannot read the server's first line");
        let url = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("unexpected first line from the API server: {line:?}"))
            .to_string();
        (child, url)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url))
    }

    /// Stops the server; its store, CA and kubeconfig stay for `restart`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same port, with the same store and CA.
    pub fn restart(&mut self) {
        let port = self.port().to_string();
        let (child, url) = Self::spawn(&self.sandbox, &["--port", &port]);
        self.child = child;
        assert_eq!(url, self.url, "the API server came back elsewhere");
    }

    pub fn context(&self) -> &'static str {
        "kcluster-standalone"
    }

    /// The server process's pid (benchmarks read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.sandbox.kubectl(self.context(), args)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.sandbox.kubectl_ok(self.context(), args)
    }

    /// kubectl started in the background (watches, waits, proxies), its stdout and stderr piped.
    pub fn kubectl_spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new("kubectl")
            .args(["--context", self.context()])
            .args(args)
            .env("KUBECONFIG", self.sandbox.kubeconfig())
            .env("HOME", self.sandbox.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start kubectl")
    }

    /// kubectl with `stdin` fed to it (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(["--context", self.context()])
            .args(args)
            .env("KUBECONFIG", self.sandbox.kubeconfig())
            .env("HOME", self.sandbox.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("cannot write to kubectl");
        child.wait_with_output().expect("kubectl did not finish")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kubectl with nothing but the server, its CA and a bearer token: no client certificate.
#[allow(dead_code)]
pub fn kubectl_with_token(server: &ApiServer, token: &str, args: &[&str]) -> Output {
    let empty = server.sandbox.path().join("empty-kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").expect("write a kubeconfig");
    let ca = server.sandbox.path().join("data/pki/ca.crt");
    std::process::Command::new("kubectl")
        .arg("--server")
        .arg(&server.url)
        .arg("--certificate-authority")
        .arg(&ca)
        .arg("--token")
        .arg(token)
        .args(args)
        .env("KUBECONFIG", &empty)
        .env("HOME", server.sandbox.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run kubectl")
}
