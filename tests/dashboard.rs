//! `kcluster dashboard` end to end: the real binary serving a real cluster to headless Chromium,
//! driven through the DevTools protocol. Every step changes the cluster with kubectl and waits
//! for the page's DOM to show it.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::cdp::Browser;
use common::*;
use serde_json::Value;

const IMAGE: &str = "kcluster-e2e/dashboard-busybox:1";
const DOM_WAIT: Duration = Duration::from_secs(90);

/// A running `kcluster dashboard`, stopped when dropped.
struct Dashboard {
    child: Child,
    port: u16,
    url: String,
}

impl Dashboard {
    fn start(sandbox: &Sandbox, args: &[&str]) -> Self {
        let log = std::fs::File::create(sandbox.path().join("dashboard.log")).expect("a log file");
        let mut child = sandbox
            .kcluster_cmd(&[&["dashboard"], args].concat())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("cannot start kcluster dashboard");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("cannot read the dashboard's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(sandbox.path().join("dashboard.log"));
                panic!("the dashboard printed no URL: {line:?}; its log: {log:?}")
            })
            .to_string();
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        Dashboard { child, port, url }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to the dashboard; the status line and the body.
fn http(port: u16, method: &str, path: &str, host: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The keys of the pods the page draws for `selector` (not those being deleted).
fn drawn_pods(browser: &mut Browser, selector: &str) -> Vec<String> {
    let value = browser.eval(&format!(
        "[...document.querySelectorAll({})].filter(e => !e.classList.contains('deleting')).map(e => e.dataset.key).sort()",
        js_string(selector)
    ));
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect()
}

/// The pods of `label` as kubectl lists them (not those being deleted), as `namespace/name`.
fn listed_pods(cluster: &Cluster, label: &str) -> Vec<String> {
    let out = cluster.kubectl_ok(&["get", "pods", "-l", label, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("a pod list");
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| format!("default/{}", p["metadata"]["name"].as_str().unwrap()))
        .collect();
    names.sort();
    names
}

/// Waits until the page draws exactly the pods kubectl lists for the Deployment `app` (label
/// app=`app`), `count` of them.
fn wait_same_pods(browser: &mut Browser, cluster: &Cluster, app: &str, count: usize) {
    let label = format!("app={app}");
    let label = label.as_str();
    let selector = format!(".lane .pod[data-owner^=\"ReplicaSet/{app}-\"]");
    let deadline = std::time::Instant::now() + DOM_WAIT;
    let (mut drawn, mut listed) = (Vec::new(), Vec::new());
    while std::time::Instant::now() < deadline {
        listed = listed_pods(cluster, label);
        drawn = drawn_pods(browser, &selector);
        if listed.len() == count && drawn == listed {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the page draws {drawn:?} while kubectl lists {listed:?} (want {count})");
}

fn manifests(image: &str, worker: &str) -> String {
    r#"
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  nodeSelector: {kubernetes.io/hostname: WORKER}
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: IMAGE, command: ["sleep", "3600"], resources: {requests: {cpu: 100m, memory: 16Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: stuck}
spec:
  nodeSelector: {tier: nowhere}
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: IMAGE, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: fail, image: IMAGE, command: ["sh", "-c", "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: unready}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: sleep
    image: IMAGE
    command: ["sleep", "3600"]
    readinessProbe: {exec: {command: ["false"]}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: web, image: IMAGE, command: ["httpd", "-f", "-p", "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#
    .replace("IMAGE", image)
    .replace("WORKER", worker)
}

#[test]
fn the_page_follows_pods_deployments_and_events_of_a_real_cluster() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("dashboard");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let server = format!("{name}-server-0");
    let worker = format!("{name}-worker-0");

    let dashboard = Dashboard::start(&sandbox, &["--name", &name, "--port", "0"]);
    assert!(
        dashboard.url.starts_with("http://127.0.0.1:"),
        "{}",
        dashboard.url
    );
    // Read-only, and only for pages of this machine's own names.
    let (status, _) = http(dashboard.port, "POST", "/snapshot", "127.0.0.1");
    assert!(status.contains("405"), "a POST got {status}");
    for host in ["evil.example:80", "127.0.0.1.nip.io"] {
        let (status, _) = http(dashboard.port, "GET", "/snapshot", host);
        assert!(status.contains("403"), "Host {host} got {status}");
    }
    for host in ["localhost", "[::1]:8088", "127.0.0.1:8088"] {
        let (status, _) = http(dashboard.port, "GET", "/snapshot", host);
        assert!(status.contains("200"), "Host {host} got {status}");
    }

    let mut browser = Browser::open(&dashboard.url, 1400, 1000);
    browser.wait_true(
        "the page is live",
        "document.getElementById('conn').dataset.state === 'live'",
        DOM_WAIT,
    );
    for node in [&server, &worker] {
        browser.wait_true(
            &format!("a Ready lane for {node}"),
            &format!("!!document.querySelector('.lane[data-node=\"{node}\"] .tag.good')"),
            DOM_WAIT,
        );
    }

    // The page's clock before anything was created: the replay goes back there.
    let before_apply = browser.eval("Date.now()");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag, &worker));
    assert!(out.status.success(), "apply failed: {}", text(&out));

    // A pod lands in its node's lane, and turns Running there.
    browser.wait_true(
        "solo in the worker's lane",
        &format!(
            "!!document.querySelector('.lane[data-node=\"{worker}\"] .pod[data-key=\"default/solo\"]')"
        ),
        DOM_WAIT,
    );
    let node = cluster.kubectl_ok(&["get", "pod", "solo", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(node, worker);
    browser.wait_true(
        "solo Running",
        "!!document.querySelector('.pod.Running[data-key=\"default/solo\"]')",
        DOM_WAIT,
    );
    // An unschedulable pod waits in the Pending lane with the scheduler's reason.
    browser.wait_true(
        "stuck in the Pending lane with the scheduler's reason",
        "(document.querySelector('.lane.pending .pod[data-key=\"default/stuck\"] .reason') || {}).textContent?.includes(\"didn't match Pod's node affinity/selector\") === true",
        DOM_WAIT,
    );
    let reason = cluster.kubectl_ok(&[
        "get",
        "pod",
        "stuck",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(reason, "Unschedulable");

    // The Deployment's pod, then three after a scale.
    wait_same_pods(&mut browser, &cluster, "web", 1);
    cluster.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    wait_same_pods(&mut browser, &cluster, "web", 3);
    browser.wait_true(
        "the Deployment card with 3/3 ready and its ReplicaSet",
        "(() => { const c = document.querySelector('.card[data-edges=\"deployment\"][data-key=\"default/web\"]'); return !!c && c.textContent.includes('3/3 ready') && c.textContent.includes('ReplicaSet web-'); })()",
        DOM_WAIT,
    );
    browser.wait_true(
        "the Service card with its three endpoints",
        "(document.querySelector('.card[data-edges=\"service\"][data-key=\"default/web\"]') || {}).textContent?.includes('3/3 ready endpoints') === true",
        DOM_WAIT,
    );

    // Pointing at a card draws its edges to its pods: the Deployment's through its ReplicaSet,
    // the Service's through its EndpointSlice.
    for card in ["deployment", "service"] {
        browser.eval(&format!(
            "document.querySelector('.card[data-edges=\"{card}\"][data-key=\"default/web\"] h4').dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}))"
        ));
        browser.wait_true(
            &format!("edges from the {card} card to the three web pods"),
            "document.querySelectorAll('#edges line').length === 3 && [...document.querySelectorAll('.pod.lit')].every(p => p.dataset.owner.startsWith('ReplicaSet/web-')) && document.querySelectorAll('.pod.lit').length === 3",
            DOM_WAIT,
        );
        browser.eval(
            "document.getElementById('workloads').dispatchEvent(new MouseEvent('mouseleave'))",
        );
        browser.wait_true(
            "no edges once the pointer leaves",
            "document.querySelectorAll('#edges line').length === 0 && !document.querySelector('.pod.lit')",
            DOM_WAIT,
        );
    }

    // An autoscaler beside its Deployment, with the numbers of its status.
    cluster.kubectl_ok(&[
        "autoscale",
        "deployment/web",
        "--min=3",
        "--max=5",
        "--cpu-percent=50",
    ]);
    let deadline = std::time::Instant::now() + DOM_WAIT;
    loop {
        let status = cluster.kubectl_ok(&[
            "get",
            "hpa",
            "web",
            "-o",
            "jsonpath=current {.status.currentReplicas}, desired {.status.desiredReplicas}",
        ]);
        let drawn = browser.eval(
            "(document.querySelector('.card[data-key=\"default/web\"] .hpa') || {}).textContent || ''",
        );
        let drawn = drawn.as_str().unwrap_or("");
        // Without CPU requests there is no utilisation to act on: desired stays what the
        // controller wrote (0 for a new autoscaler, as in Kubernetes); the page shows the same.
        if status.starts_with("current 3, desired ") && drawn.contains(&status) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HPA is {status:?}, the page shows {drawn:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A deleted pod leaves the page and its replacement arrives.
    let before = listed_pods(&cluster, "app=web");
    let victim = before[0].strip_prefix("default/").unwrap().to_string();
    cluster.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_same_pods(&mut browser, &cluster, "web", 3);
    let after = listed_pods(&cluster, "app=web");
    assert!(
        !after.contains(&before[0]),
        "{victim} is still listed: {after:?}"
    );
    browser.wait_true(
        &format!("{victim} gone from the page"),
        &format!("!document.querySelector('.pod[data-key=\"default/{victim}\"]')"),
        DOM_WAIT,
    );

    // The scheduler's event about solo shows in the ticker.
    browser.wait_true(
        "the Scheduled event of solo in the ticker",
        "[...document.querySelectorAll('#ticker .event')].some(e => e.textContent.includes('Scheduled') && e.textContent.includes('Pod/solo'))",
        DOM_WAIT,
    );

    // Badges: a container that keeps exiting, a readiness probe that keeps failing.
    browser.wait_true(
        "a restart badge on crashy",
        "!!document.querySelector('.pod[data-key=\"default/crashy\"] .badge[title=\"restarts\"]')",
        DOM_WAIT,
    );
    let restarts = cluster.kubectl_ok(&[
        "get",
        "pod",
        "crashy",
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ]);
    assert_ne!(restarts, "0", "the page shows restarts kubectl does not");
    browser.wait_true(
        "a probe badge on unready",
        "!!document.querySelector('.pod.Running.notready[data-key=\"default/unready\"] .badge[title=\"a probe is failing\"]')",
        DOM_WAIT,
    );

    // Pause and scrub back to before the apply: none of its pods, nor their events; live again:
    // all of them.
    browser.eval("document.getElementById('pause').click()");
    browser.eval(&format!(
        "(() => {{ const t = document.getElementById('timeline'); t.value = {before_apply}; t.dispatchEvent(new Event('input')); }})()"
    ));
    browser.wait_true(
        "the view as it was before the apply",
        &format!(
            "document.body.classList.contains('paused') && !document.querySelector('.pod[data-key=\"default/solo\"]') && !document.querySelector('.pod[data-owner^=\"ReplicaSet/web-\"]') && !!document.querySelector('.lane[data-node=\"{worker}\"]') && !document.getElementById('ticker').textContent.includes('Pod/solo')"
        ),
        DOM_WAIT,
    );
    browser.eval("document.getElementById('pause').click()");
    browser.wait_true(
        "the live view again",
        "!document.body.classList.contains('paused') && !!document.querySelector('.pod[data-key=\"default/solo\"]')",
        DOM_WAIT,
    );
    wait_same_pods(&mut browser, &cluster, "web", 3);

    // A namespace filter shows only that namespace's pods.
    cluster.kubectl_ok(&["create", "namespace", "student1"]);
    cluster.kubectl_ok(&[
        "run",
        "lone",
        "-n",
        "student1",
        &format!("--image={tag}"),
        "--restart=Never",
        "--command",
        "--",
        "sleep",
        "3600",
    ]);
    browser.wait_true(
        "student1/lone on the page",
        "!!document.querySelector('.pod[data-key=\"student1/lone\"]')",
        DOM_WAIT,
    );
    browser.eval("location.hash = 'ns=student1'");
    browser.wait_true(
        "only student1's pods",
        "!!document.querySelector('.pod[data-key=\"student1/lone\"]') && !document.querySelector('.pod[data-key=\"default/solo\"]')",
        DOM_WAIT,
    );
    browser.eval("location.hash = ''");
    browser.wait_true(
        "all namespaces again",
        "!!document.querySelector('.pod[data-key=\"default/solo\"]')",
        DOM_WAIT,
    );

    // Live usage from metrics.k8s.io, once the agents have sampled: a bar and a figure per
    // node, for nodes `kubectl top` knows too.
    for node in [&server, &worker] {
        browser.wait_true(
            &format!("usage on {node}'s lane"),
            &format!(
                "(() => {{ const l = document.querySelector('.lane[data-node=\"{node}\"]'); return !!l && !!l.querySelector('.bar .use') && l.textContent.includes('using'); }})()"
            ),
            DOM_WAIT,
        );
    }
    let top = cluster.kubectl_ok(&["top", "nodes", "--no-headers"]);
    assert!(top.contains(&server) && top.contains(&worker), "{top}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    browser.screenshot(&shot);
    println!("dashboard screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).expect("the screenshot").len() > 10_000);

    // Projector mode: larger type everywhere, kept in the address to share.
    browser.eval("document.getElementById('projector').click()");
    browser.wait_true(
        "projector mode",
        "getComputedStyle(document.querySelector('.pod')).fontSize === '19.2px' && location.hash.includes('projector=1')",
        DOM_WAIT,
    );
    let shot =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-projector.png"));
    browser.screenshot(&shot);
    println!("dashboard screenshot (projector): {}", shot.display());

    // The dashboard goes away: the page says so; a pod created meanwhile shows once it is back.
    let port = dashboard.port;
    drop(dashboard);
    browser.wait_true(
        "the page notices the lost connection",
        "document.getElementById('conn').dataset.state === 'reconnecting'",
        DOM_WAIT,
    );
    cluster.kubectl_ok(&["delete", "pod", "solo", "--wait=false"]);
    let _dashboard = Dashboard::start(&sandbox, &["--name", &name, "--port", &port.to_string()]);
    browser.wait_true(
        "the page reconnected and resynced",
        "document.getElementById('conn').dataset.state === 'live' && window.kc.snapshots >= 2 && !document.querySelector('.pod[data-key=\"default/solo\"]')",
        DOM_WAIT,
    );
    wait_same_pods(&mut browser, &cluster, "web", 3);
}

#[test]
fn a_cluster_that_is_down_shows_as_down_and_comes_back() {
    // The standalone API server: stopped, then started again on its port with its store and CA.
    let mut api = ApiServer::start();
    let dashboard = Dashboard::start(
        &api.sandbox,
        &[
            "--context",
            api.context(),
            "--name",
            "standalone",
            "--port",
            "0",
        ],
    );
    let mut browser = Browser::open(&dashboard.url, 1200, 800);
    browser.wait_true(
        "a live page with every watched kind readable",
        "document.getElementById('conn').dataset.state === 'live' && !!document.querySelector('.lane.pending') && document.getElementById('notes').textContent === ''",
        DOM_WAIT,
    );

    api.stop();
    browser.wait_true(
        "the cluster shown as down",
        "(document.getElementById('down') || {}).textContent?.includes('retrying') === true",
        DOM_WAIT,
    );
    let (status, body) = http(dashboard.port, "GET", "/snapshot", "localhost");
    assert!(status.contains("200"), "{status}");
    let snapshot: Value = serde_json::from_str(&body).expect("a JSON snapshot");
    assert_eq!(
        snapshot["kinds"]["nodes"]["status"]["state"], "unreachable",
        "{snapshot}"
    );

    api.restart();
    let node = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "back-0"}}"#;
    let out = api.kubectl_stdin(&["apply", "-f", "-"], node);
    assert!(out.status.success(), "{}", text(&out));
    browser.wait_true(
        "the page recovered, showing the node created since",
        "!document.getElementById('down') && !!document.querySelector('.lane[data-node=\"back-0\"]')",
        DOM_WAIT,
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let api = ApiServer::start();
    // A cluster with no entry in the kubeconfig.
    let out = api
        .sandbox
        .kcluster(&["dashboard", "--name", "nosuch", "--port", "0"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("no context \"kcluster-nosuch\"")
            && err.contains("kcluster export kubeconfig --name nosuch"),
        "{err}"
    );
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().unwrap().port().to_string();
    let out = api
        .sandbox
        .kcluster(&["dashboard", "--context", api.context(), "--port", &port]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        text(&out)
    );
    // Served beyond loopback: a warning, and any Host is answered.
    let dashboard = Dashboard::start(
        &api.sandbox,
        &[
            "--context",
            api.context(),
            "--address",
            "0.0.0.0",
            "--port",
            "0",
        ],
    );
    let log = std::fs::read_to_string(api.sandbox.path().join("dashboard.log")).unwrap();
    assert!(
        log.contains("warning: the dashboard is served on 0.0.0.0 without a login"),
        "{log}"
    );
    let (status, body) = http(dashboard.port, "GET", "/snapshot", "classroom.example:8088");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"t\":\"snapshot\""), "{body}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Creates `count` pods named `{prefix}-{i}` one after another; for each, the time from just
/// before kubectl starts to (a) a `kubectl get --watch` printing it (the same-run baseline) and
/// (b) the page drawing it.
fn latency_samples(
    api: &ApiServer,
    browser: &mut Browser,
    prefix: &str,
    count: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut watch = api.kubectl_spawn(&["get", "pods", "--watch", "-o", "name"]);
    let stdout = watch.stdout.take().expect("watch stdout");
    let (tx, rx) = std::sync::mpsc::channel::<(String, f64)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send((line.trim().to_string(), now_ms()));
        }
    });
    let (mut to_watch, mut to_dom) = (Vec::new(), Vec::new());
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let pod = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}}, "spec": {{"containers": [{{"name": "c", "image": "none"}}]}}}}"#
        );
        let start = now_ms();
        let out = api.kubectl_stdin(&["create", "-f", "-"], &pod);
        assert!(out.status.success(), "{}", text(&out));
        let seen_watch = loop {
            let (line, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the watch printed nothing");
            if line == format!("pod/{name}") {
                break at;
            }
        };
        browser.wait_true(
            &format!("{name} drawn"),
            &format!("'default/{name}' in window.kc.seen"),
            DOM_WAIT,
        );
        let seen_dom = browser
            .eval(&format!("window.kc.seen['default/{name}']"))
            .as_f64()
            .expect("a time");
        to_watch.push(seen_watch - start);
        to_dom.push(seen_dom - start);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    (to_watch, to_dom)
}

/// Render times of the page (ms) for `count` changes of a node label, each waited for in the DOM.
fn render_times(api: &ApiServer, browser: &mut Browser, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| {
            api.kubectl_ok(&["label", "node", "bench-0", &format!("step={i}"), "--overwrite"]);
            browser.wait_true(
                "the label drawn",
                &format!(
                    "[...document.querySelectorAll('.lane[data-node=\"bench-0\"] .tag')].some(t => t.textContent === 'step={i}')"
                ),
                DOM_WAIT,
            );
            browser.eval("window.kc.lastRenderMs").as_f64().expect("a time")
        })
        .collect()
}

/// `cargo test --test dashboard -- --ignored --nocapture dashboard_bench`: kubectl → DOM latency
/// beside kubectl → watch, server memory and page render time, empty and with 500 pods on 10
/// nodes (objects in the standalone API server: nothing runs them).
#[test]
#[ignore]
fn dashboard_bench() {
    let api = ApiServer::start();
    let dashboard = Dashboard::start(
        &api.sandbox,
        &["--context", api.context(), "--name", "bench", "--port", "0"],
    );
    let mut browser = Browser::open(&dashboard.url, 1600, 1000);
    browser.wait_true(
        "a live page",
        "document.getElementById('conn').dataset.state === 'live'",
        DOM_WAIT,
    );
    let nodes: Vec<String> = (0..10)
        .map(|n| format!(
            r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "bench-{n}"}}, "status": {{"allocatable": {{"cpu": "4", "memory": "8Gi"}}, "capacity": {{"cpu": "4", "memory": "8Gi"}}}}}}"#
        ))
        .collect();
    let list = nodes.join("\n");
    let out = api.kubectl_stdin(&["create", "-f", "-"], &list);
    assert!(out.status.success(), "{}", text(&out));
    browser.wait_true(
        "ten lanes",
        "document.querySelectorAll('.lane[data-node^=\"bench-\"]').length === 10",
        DOM_WAIT,
    );

    let rss_empty = rss_kib(dashboard.child.id());
    let (watch_empty, dom_empty) = latency_samples(&api, &mut browser, "a", 25);
    let render_empty = render_times(&api, &mut browser, 20);

    let pods: Vec<String> = (0..500)
        .map(|i| format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "load-{i}", "labels": {{"app": "load"}}}}, "spec": {{"nodeName": "bench-{}", "containers": [{{"name": "c", "image": "none", "resources": {{"requests": {{"cpu": "50m", "memory": "64Mi"}}}}}}]}}}}"#,
            i % 10
        ))
        .collect();
    let list = pods.join("\n");
    let out = api.kubectl_stdin(&["create", "-f", "-"], &list);
    assert!(out.status.success(), "{}", text(&out));
    browser.wait_true(
        "500 pods in the lanes",
        "document.querySelectorAll('.lane[data-node^=\"bench-\"] .pod').length === 500",
        DOM_WAIT,
    );
    let rss_loaded = rss_kib(dashboard.child.id());
    let (watch_loaded, dom_loaded) = latency_samples(&api, &mut browser, "b", 25);
    let render_loaded = render_times(&api, &mut browser, 20);

    let summary = |what: &str, samples: &[f64]| {
        println!(
            "{what}: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} samples)",
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 1.0),
            samples.len()
        );
    };
    println!("--- 10 nodes, no pods");
    summary(
        "kubectl create → kubectl get --watch prints it",
        &watch_empty,
    );
    summary("kubectl create → page draws it", &dom_empty);
    summary(
        "page update (redraw, style and layout after a node label)",
        &render_empty,
    );
    println!("dashboard RSS: {:.1} MiB", rss_empty as f64 / 1024.0);
    println!("--- 10 nodes, 500 pods");
    summary(
        "kubectl create → kubectl get --watch prints it",
        &watch_loaded,
    );
    summary("kubectl create → page draws it", &dom_loaded);
    summary(
        "page update (redraw, style and layout after a node label)",
        &render_loaded,
    );
    println!("dashboard RSS: {:.1} MiB", rss_loaded as f64 / 1024.0);
}

/// A student's credentials (a service account with `view` in its own namespace): what they
/// may not list shows as forbidden with the API server's reason, pods are narrowed to their
/// namespace, and their namespace's pods are there while others' are not.
#[test]
fn a_user_limited_by_rbac_sees_what_they_may_see() {
    let api = ApiServer::start();
    for args in [
        vec!["create", "namespace", "class1"],
        vec!["create", "namespace", "class2"],
        vec!["-n", "class1", "create", "serviceaccount", "student"],
        vec![
            "-n",
            "class1",
            "create",
            "rolebinding",
            "student-view",
            "--clusterrole=view",
            "--serviceaccount=class1:student",
        ],
    ] {
        api.kubectl_ok(&args);
    }
    for ns in ["class1", "class2"] {
        let pod = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "app", "namespace": "{ns}"}},
                "spec": {{"containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
        );
        let out = api.kubectl_stdin(&["apply", "-f", "-"], &pod);
        assert!(out.status.success(), "{}", text(&out));
    }
    let token = api.kubectl_ok(&["-n", "class1", "create", "token", "student"]);
    let raw: Value = serde_json::from_str(
        &api.kubectl_ok(&["config", "view", "--raw", "--minify", "-o", "json"]),
    )
    .expect("kubeconfig JSON");
    let cluster = &raw["clusters"][0]["cluster"];
    let kubeconfig = api.sandbox.path().join("student-kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "student",
            "clusters": [{"name": "class", "cluster": cluster}],
            "users": [{"name": "student", "user": {"token": token.trim()}}],
            "contexts": [{"name": "student",
                          "context": {"cluster": "class", "user": "student", "namespace": "class1"}}],
        })
        .to_string(),
    )
    .expect("write the student's kubeconfig");
    let path = kubeconfig.display().to_string();
    let dashboard = Dashboard::start(
        &api.sandbox,
        &[
            "--kubeconfig",
            &path,
            "--context",
            "student",
            "--name",
            "class",
            "--port",
            "0",
        ],
    );
    let snapshot = || -> Value {
        let (status, body) = http(dashboard.port, "GET", "/snapshot", "localhost");
        assert!(status.contains("200"), "{status}");
        serde_json::from_str(&body).expect("a JSON snapshot")
    };
    let mut last = Value::Null;
    wait_for(
        "nodes forbidden and pods narrowed to class1",
        Duration::from_secs(30),
        || {
            last = snapshot();
            let nodes = &last["kinds"]["nodes"]["status"];
            let pods = &last["kinds"]["pods"];
            nodes["state"] == "forbidden"
                && pods["status"]["state"] == "ok"
                && pods["status"]["limited"].is_string()
                && pods["objects"].as_object().is_some_and(|o| !o.is_empty())
        },
    );
    let nodes = last["kinds"]["nodes"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        nodes.contains(
            r#"User "system:serviceaccount:class1:student" cannot list resource "nodes""#
        ),
        "the API server's reason is shown: {last}"
    );
    let pods: Vec<&String> = last["kinds"]["pods"]["objects"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(
        pods.iter().all(|k| k.starts_with("class1/")) && !pods.is_empty(),
        "only class1's pods: {pods:?}"
    );
}
