//! Workload controllers with real pods on real nodes: one cluster (a server and two workers)
//! for the whole binary, scenarios in their own namespaces.
//!
//! Phase 1, in parallel: a Deployment's rolling update watched pod by pod (maxSurge and
//! maxUnavailable hold), a readiness probe that never passes stalling the next rollout until
//! its progress deadline, `kubectl rollout undo`; a DaemonSet on all three nodes and its rolling
//! update; a StatefulSet whose claim keeps its data across a pod delete; a Job with parallelism
//! whose failing pod is retried; a CronJob whose own controller starts a Job (this one runs on
//! the server node through phase 2, since a minute can pass before it fires).
//! Phase 2: `kubectl drain` of a worker blocked by a PodDisruptionBudget, finishing once the
//! budget allows it. Phase 3 (it takes a node down, so it runs last): `docker stop` of a worker,
//! its pod evicted after the pod's short unreachable toleration and replaced on another node.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::images::build_busybox_image;
use common::*;
use serde_json::Value;

/// kubectl in namespace `ns`.
fn kn(cluster: &Cluster, ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    cluster.kubectl(&all)
}

/// kubectl in namespace `ns` that must succeed; its stdout.
fn kn_ok(cluster: &Cluster, ns: &str, args: &[&str]) -> String {
    let out = kn(cluster, ns, args);
    assert!(
        out.status.success(),
        "kubectl -n {ns} {args:?} failed: {}",
        text(&out)
    );
    stdout(&out)
}

fn apply(cluster: &Cluster, ns: &str, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

fn json(cluster: &Cluster, ns: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    let out = kn_ok(cluster, ns, &all);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("kubectl {args:?} gave no JSON ({e}): {out}"))
}

fn rollout_status(cluster: &Cluster, ns: &str, what: &str) {
    let out = kn(cluster, ns, &["rollout", "status", what, "--timeout=150s"]);
    assert!(
        out.status.success(),
        "rollout of {what} did not finish: {}\n{}",
        text(&out),
        diagnose(cluster, ns)
    );
}

/// What a failure message shows: nodes, the namespace's pods and events, and the warnings and
/// errors each node logged last.
fn diagnose(cluster: &Cluster, ns: &str) -> String {
    let mut report = String::new();
    for args in [
        vec!["get", "nodes", "-o", "wide"],
        vec!["get", "pods", "-n", ns, "-o", "wide"],
        vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
    ] {
        report += &format!(
            "kubectl {}:\n{}\n",
            args.join(" "),
            text(&cluster.kubectl(&args))
        );
    }
    for node in docker_objects("container", &cluster.name) {
        let logs = text(&docker(&["logs", "--tail", "400", &node]));
        let bad: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let tail = &bad[bad.len().saturating_sub(15)..];
        report += &format!("{node} warnings and errors:\n{}\n", tail.join("\n"));
    }
    report
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What a watch last saw of one pod.
#[derive(Clone, Debug)]
struct PodView {
    node: String,
    /// The value of the watch's version label (pod-template-hash, controller-revision-hash).
    version: String,
    phase: String,
    ready: bool,
    terminating: bool,
}

impl PodView {
    /// Counted by the controllers: neither being deleted nor finished.
    fn live(&self) -> bool {
        !self.terminating && self.phase != "Succeeded" && self.phase != "Failed"
    }
}

#[derive(Default)]
struct WatchState {
    pods: BTreeMap<String, PodView>,
    /// The pods after every event, in order.
    history: Vec<BTreeMap<String, PodView>>,
    ended: Option<String>,
}

impl WatchState {
    fn live(&self) -> Vec<&PodView> {
        self.pods.values().filter(|p| p.live()).collect()
    }

    /// (live, live and ready) pods of `version` (every version for "").
    fn count(&self, version: &str) -> (usize, usize) {
        let live: Vec<&PodView> = self
            .live()
            .into_iter()
            .filter(|p| version.is_empty() || p.version == version)
            .collect();
        (live.len(), live.iter().filter(|p| p.ready).count())
    }

    fn versions(&self) -> BTreeSet<String> {
        self.live().iter().map(|p| p.version.clone()).collect()
    }

    fn describe(&self) -> String {
        format!("{:#?} (watch ended: {:?})", self.pods, self.ended)
    }
}

/// `kubectl get pods --watch` of one selector, every event recorded as it arrives.
struct PodWatch {
    child: Child,
    state: Arc<Mutex<WatchState>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PodWatch {
    fn start(cluster: &Cluster, ns: &str, selector: &str, version_label: &str) -> PodWatch {
        let mut child = Command::new("kubectl")
            .args(["--context", &cluster.context(), "-n", ns])
            .args([
                "get",
                "pods",
                "-l",
                selector,
                "--watch",
                "--output-watch-events",
            ])
            .args(["-o", "json"])
            .env("KUBECONFIG", cluster.sandbox.kubeconfig())
            .env("HOME", cluster.sandbox.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start kubectl get --watch");
        let out = child.stdout.take().expect("the watch's stdout");
        let state = Arc::new(Mutex::new(WatchState::default()));
        let shared = state.clone();
        let label = format!("/metadata/labels/{}", version_label.replace('/', "~1"));
        let reader = std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(std::io::BufReader::new(out))
                .into_iter::<Value>();
            for event in stream {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        shared.lock().unwrap().ended = Some(format!("bad JSON: {e}"));
                        return;
                    }
                };
                let pod = &event["object"];
                let name = str_at(pod, "/metadata/name").to_string();
                let mut s = shared.lock().unwrap();
                if event["type"] == "DELETED" {
                    s.pods.remove(&name);
                } else {
                    let view = PodView {
                        node: str_at(pod, "/spec/nodeName").to_string(),
                        version: str_at(pod, &label).to_string(),
                        phase: str_at(pod, "/status/phase").to_string(),
                        ready: pod_ready(pod),
                        terminating: pod.pointer("/metadata/deletionTimestamp").is_some(),
                    };
                    s.pods.insert(name, view);
                }
                let snapshot = s.pods.clone();
                s.history.push(snapshot);
            }
            shared.lock().unwrap().ended = Some("the stream ended".into());
        });
        PodWatch {
            child,
            state,
            reader: Some(reader),
        }
    }

    /// Waits until the watched pods satisfy `check`; a watch that ended fails the test.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&WatchState) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.state.lock().unwrap();
                assert!(
                    s.ended.is_none(),
                    "the watch for {what} ended: {s:?}",
                    s = s.ended
                );
                if check(&s) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; pods:\n{}",
                    s.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn history_len(&self) -> usize {
        self.state.lock().unwrap().history.len()
    }

    /// Every snapshot from `from` on, checked by `bound`; the first that breaks it fails the test.
    fn assert_history(
        &self,
        from: usize,
        what: &str,
        bound: impl Fn(&BTreeMap<String, PodView>) -> bool,
    ) {
        let s = self.state.lock().unwrap();
        assert!(s.ended.is_none(), "the watch ended: {:?}", s.ended);
        assert!(s.history.len() > from, "no events recorded for {what}");
        if let Some((i, bad)) = s.history[from..]
            .iter()
            .enumerate()
            .find(|(_, p)| !bound(p))
        {
            panic!(
                "{what} broken at event {} of {}: {bad:#?}",
                from + i,
                s.history.len()
            );
        }
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// (live, live and ready) in one snapshot, for `version` ("" for all).
fn counts(pods: &BTreeMap<String, PodView>, version: &str) -> (usize, usize) {
    let live: Vec<&PodView> = pods
        .values()
        .filter(|p| p.live() && (version.is_empty() || p.version == version))
        .collect();
    (live.len(), live.iter().filter(|p| p.ready).count())
}

/// A pod whose readiness probe asks its web server for /ready (a file it serves; v3 asks for
/// a path it never serves) and that stops at once when deleted.
fn container(image: &str, version: &str) -> String {
    format!(
        r#"
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: [sh, -c, "mkdir -p /www && touch /www/ready && exec httpd -f -p 8080 -h /www"]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1, timeoutSeconds: 3}}"#
    )
}

fn deployment_rollout(cluster: &Cluster, image: &str) {
    let ns = "rolling";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:{}
"#,
            container(image, "1")
        ),
    );
    rollout_status(cluster, ns, "deployment/web");
    let watch = PodWatch::start(cluster, ns, "app=web", "pod-template-hash");
    watch.wait("4 ready pods of v1", Duration::from_secs(60), |s| {
        s.count("") == (4, 4) && s.versions().len() == 1
    });
    let v1 = watch
        .state
        .lock()
        .unwrap()
        .versions()
        .into_iter()
        .next()
        .unwrap();

    // v2: a rolling update, four pods replaced one or two at a time.
    let from = watch.history_len();
    kn_ok(cluster, ns, &["set", "env", "deployment/web", "VERSION=2"]);
    rollout_status(cluster, ns, "deployment/web");
    watch.wait(
        "4 ready pods of v2, none of v1",
        Duration::from_secs(60),
        |s| s.count("") == (4, 4) && !s.versions().contains(&v1),
    );
    let v2 = watch
        .state
        .lock()
        .unwrap()
        .versions()
        .into_iter()
        .next()
        .unwrap();
    // maxSurge 1: never more than 5 pods; maxUnavailable 1: never fewer than 3 ready.
    let bounds = |p: &BTreeMap<String, PodView>| {
        let (live, ready) = counts(p, "");
        live <= 5 && ready >= 3
    };
    watch.assert_history(
        from,
        "maxSurge 1 / maxUnavailable 1 (≤ 5 pods, ≥ 3 ready)",
        bounds,
    );
    watch.assert_history(from, "the old version kept until replaced", |p| {
        let (old, _) = counts(p, &v1);
        let (new, _) = counts(p, &v2);
        old + new >= 3
    });
    {
        let s = watch.state.lock().unwrap();
        let both = s.history[from..]
            .iter()
            .any(|p| counts(p, &v1).1 > 0 && counts(p, &v2).1 > 0);
        assert!(
            both,
            "no moment with ready pods of both versions: not a rolling update"
        );
    }

    // v3 never becomes ready: the rollout stops at maxSurge + maxUnavailable new pods, keeps
    // three old ones and reports its progress deadline.
    let from = watch.history_len();
    kn_ok(
        cluster,
        ns,
        &[
            "patch",
            "deployment/web",
            "-p",
            r#"{"spec":{"progressDeadlineSeconds":15,"template":{"spec":{"containers":[{"name":"c","env":[{"name":"VERSION","value":"3"}],"readinessProbe":{"httpGet":{"path":"/never"}}}]}}}}"#,
        ],
    );
    let out = kn(
        cluster,
        ns,
        &["rollout", "status", "deployment/web", "--timeout=150s"],
    );
    assert!(
        !out.status.success() && text(&out).contains("exceeded its progress deadline"),
        "the rollout of a never-ready version should stop at its deadline: {}",
        text(&out)
    );
    watch.wait(
        "3 ready v2 pods and 2 running, unready v3 pods",
        Duration::from_secs(60),
        |s| {
            let v3: Vec<&PodView> = s.live().into_iter().filter(|p| p.version != v2).collect();
            s.count(&v2) == (3, 3)
                && v3.len() == 2
                && v3.iter().all(|p| !p.ready && p.phase == "Running")
        },
    );
    let d = json(cluster, ns, &["get", "deployment", "web"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            progressing["status"].as_str(),
            progressing["reason"].as_str()
        ),
        (Some("False"), Some("ProgressDeadlineExceeded")),
        "{d:#}"
    );
    assert_eq!(d["status"]["availableReplicas"], 3, "{d:#}");
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d:#}");

    // Undo: back to v2's template, served by v2's own ReplicaSet (same pod-template-hash).
    // Undo restores only the template: a longer deadline again, so a loaded machine does not
    // make the way back look stalled.
    kn_ok(
        cluster,
        ns,
        &[
            "patch",
            "deployment/web",
            "-p",
            r#"{"spec":{"progressDeadlineSeconds":600}}"#,
        ],
    );
    kn_ok(cluster, ns, &["rollout", "undo", "deployment/web"]);
    rollout_status(cluster, ns, "deployment/web");
    watch.wait(
        "4 ready pods of v2 after undo",
        Duration::from_secs(60),
        |s| s.count("") == (4, 4) && s.count(&v2) == (4, 4),
    );
    watch.assert_history(
        from,
        "the bounds during the stalled rollout and the undo",
        bounds,
    );
    let d = json(cluster, ns, &["get", "deployment", "web"]);
    assert_eq!(
        str_at(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "4",
        "undo makes revision 2's template revision 4: {d:#}"
    );
    assert_eq!(
        str_at(&d, "/spec/template/spec/containers/0/env/0/value"),
        "2",
        "{d:#}"
    );
    let history = kn_ok(cluster, ns, &["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "3", "4"], "{history}");
}

fn daemonset_rollout(cluster: &Cluster, image: &str, nodes: &BTreeSet<String>) {
    let ns = "daemons";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let manifest = |version: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:{}
"#,
            container(image, version)
        )
    };
    apply(cluster, ns, &manifest("1"));
    rollout_status(cluster, ns, "daemonset/agent");
    let watch = PodWatch::start(cluster, ns, "app=agent", "controller-revision-hash");
    let on_every_node = |s: &WatchState| {
        let live = s.live();
        let on: BTreeSet<String> = live.iter().map(|p| p.node.clone()).collect();
        live.len() == 3 && live.iter().all(|p| p.ready) && &on == nodes && s.versions().len() == 1
    };
    watch.wait(
        "a ready pod on each of the 3 nodes",
        Duration::from_secs(60),
        on_every_node,
    );
    let v1 = watch
        .state
        .lock()
        .unwrap()
        .versions()
        .into_iter()
        .next()
        .unwrap();

    let from = watch.history_len();
    apply(cluster, ns, &manifest("2"));
    rollout_status(cluster, ns, "daemonset/agent");
    watch.wait(
        "a ready pod of the new version on each node",
        Duration::from_secs(60),
        |s| on_every_node(s) && !s.versions().contains(&v1),
    );
    // maxUnavailable 1, no surge: one node at a time without its ready pod, never two pods on
    // a node.
    watch.assert_history(from, "one node at a time (maxUnavailable 1)", |p| {
        let mut per_node: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for pod in p.values().filter(|p| p.live()) {
            let e = per_node.entry(pod.node.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(pod.ready);
        }
        per_node.values().all(|(live, _)| *live <= 1)
            && per_node.values().filter(|(_, ready)| *ready == 1).count() >= 2
    });
    let ds = json(cluster, ns, &["get", "daemonset", "agent"]);
    for field in [
        "desiredNumberScheduled",
        "updatedNumberScheduled",
        "numberReady",
    ] {
        assert_eq!(ds["status"][field], 3, "{field}: {ds:#}");
    }
}

fn statefulset_keeps_data(cluster: &Cluster, image: &str) {
    let ns = "stateful";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: [sh, -c, "exec sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"#
        ),
    );
    rollout_status(cluster, ns, "statefulset/db");
    for pod in ["db-0", "db-1"] {
        kn_ok(
            cluster,
            ns,
            &[
                "exec",
                pod,
                "--",
                "sh",
                "-c",
                &format!("echo written-by-{pod} > /data/proof"),
            ],
        );
    }
    let before = json(cluster, ns, &["get", "pod", "db-0"]);
    let uid = str_at(&before, "/metadata/uid").to_string();
    let node = str_at(&before, "/spec/nodeName").to_string();
    let claim = json(cluster, ns, &["get", "pvc", "data-db-0"]);
    let volume = str_at(&claim, "/spec/volumeName").to_string();
    assert!(!volume.is_empty(), "data-db-0 is not bound: {claim:#}");

    kn_ok(cluster, ns, &["delete", "pod", "db-0"]);
    let mut last = String::new();
    wait_until("a new, ready db-0", Duration::from_secs(120), || {
        let out = kn(cluster, ns, &["get", "pod", "db-0", "-o", "json"]);
        if gone(&out) {
            return Err("db-0 is gone".into());
        }
        let pod: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        last = format!("{pod:#}");
        if str_at(&pod, "/metadata/uid") != uid && pod_ready(&pod) {
            Ok(())
        } else {
            Err(last.clone())
        }
    });
    let after = json(cluster, ns, &["get", "pod", "db-0"]);
    assert_eq!(
        str_at(&after, "/spec/nodeName"),
        node,
        "the local volume keeps db-0 on its node"
    );
    let claim = json(cluster, ns, &["get", "pvc", "data-db-0"]);
    assert_eq!(str_at(&claim, "/spec/volumeName"), volume, "{claim:#}");
    let read = kn_ok(cluster, ns, &["exec", "db-0", "--", "cat", "/data/proof"]);
    assert_eq!(
        read.trim(),
        "written-by-db-0",
        "db-0's data after its pod was replaced"
    );
    let read = kn_ok(cluster, ns, &["exec", "db-1", "--", "cat", "/data/proof"]);
    assert_eq!(read.trim(), "written-by-db-1");
}

fn job_retries(cluster: &Cluster, image: &str, server: &str) {
    let ns = "batch";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let watch = PodWatch::start(cluster, ns, "job-name=work", "batch.kubernetes.io/job-name");
    // The first pod to create the directory fails; a host directory on one node is the state
    // the pods share.
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: work}}
spec:
  completions: 4
  parallelism: 2
  backoffLimit: 3
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      nodeSelector: {{kubernetes.io/hostname: {server}}}
      containers:
      - name: c
        image: {image}
        command: [sh, -c, "if mkdir /state/failed-once; then echo failing on purpose; exit 3; fi; echo done"]
        volumeMounts: [{{name: state, mountPath: /state}}]
      volumes:
      - name: state
        hostPath: {{path: /tmp/kcluster-e2e-job-{unique}, type: DirectoryOrCreate}}
"#,
            unique = cluster.name
        ),
    );
    let out = kn(
        cluster,
        ns,
        &[
            "wait",
            "--for=condition=Complete",
            "job/work",
            "--timeout=150s",
        ],
    );
    assert!(
        out.status.success(),
        "the job did not complete: {}\n{}",
        text(&out),
        kn_ok(cluster, ns, &["get", "job", "work", "-o", "yaml"])
    );
    let job = json(cluster, ns, &["get", "job", "work"]);
    assert_eq!(job["status"]["succeeded"], 4, "{job:#}");
    assert_eq!(job["status"]["failed"], 1, "{job:#}");
    let pods = json(cluster, ns, &["get", "pods", "-l", "job-name=work"]);
    let mut phases: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in pods["items"].as_array().into_iter().flatten() {
        phases
            .entry(str_at(p, "/status/phase").to_string())
            .or_default()
            .push(
                p.pointer("/status/containerStatuses/0/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                    .unwrap_or(-1),
            );
    }
    let want: BTreeMap<String, Vec<i64>> = [
        ("Failed".to_string(), vec![3]),
        ("Succeeded".to_string(), vec![0, 0, 0, 0]),
    ]
    .into();
    assert_eq!(
        phases, want,
        "pods by phase with their exit codes:\n{pods:#}"
    );
    // parallelism 2: two pods at once, never three.
    watch.assert_history(0, "parallelism 2", |p| counts(p, "").0 <= 2);
    let s = watch.state.lock().unwrap();
    assert!(
        s.history.iter().any(|p| counts(p, "").0 == 2),
        "never two pods running at once: {}",
        s.describe()
    );
}

/// Runs until the CronJob controller has started one Job and it finished; up to a minute
/// passes before the schedule comes due.
fn cronjob_fires(cluster: &Cluster, image: &str, server: &str) {
    let ns = "cron";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "*/1 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          nodeSelector: {{kubernetes.io/hostname: {server}}}
          containers: [{{name: c, image: {image}, command: [sh, -c, "echo tick"]}}]
"#
        ),
    );
    let jobs = cluster.wait_for(
        &[
            "get",
            "jobs",
            "-n",
            ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ],
        Duration::from_secs(100),
        |s| !s.trim().is_empty(),
    );
    // One firing is what this checks: stop the schedule before it comes due again.
    kn_ok(
        cluster,
        ns,
        &[
            "patch",
            "cronjob/tick",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    let names: Vec<&str> = jobs.lines().collect();
    assert_eq!(names.len(), 1, "one job: {names:?}");
    let job_name = names[0];
    let out = kn(
        cluster,
        ns,
        &[
            "wait",
            "--for=condition=Complete",
            &format!("job/{job_name}"),
            "--timeout=120s",
        ],
    );
    assert!(
        out.status.success(),
        "{job_name} did not complete: {}",
        text(&out)
    );
    let job = json(cluster, ns, &["get", "job", job_name]);
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("CronJob"), Some("tick"), Some(true)),
        "{job:#}"
    );
    assert_eq!(job["status"]["succeeded"], 1, "{job:#}");
    let scheduled = str_at(
        &job,
        "/metadata/annotations/batch.kubernetes.io~1cronjob-scheduled-timestamp",
    );
    let at: jiff::Timestamp = scheduled
        .parse()
        .unwrap_or_else(|e| panic!("scheduled timestamp {scheduled:?}: {e}\n{job:#}"));
    assert_eq!(at.as_second() % 60, 0, "due on a minute: {scheduled}");
    assert_eq!(job_name, format!("tick-{}", at.as_second() / 60));
    let cj = json(cluster, ns, &["get", "cronjob", "tick"]);
    let created: jiff::Timestamp = str_at(&cj, "/metadata/creationTimestamp")
        .parse()
        .expect("creationTimestamp");
    assert!(at > created, "fired for a time after its creation: {cj:#}");
    let last: jiff::Timestamp = str_at(&cj, "/status/lastScheduleTime")
        .parse()
        .unwrap_or_else(|e| panic!("lastScheduleTime: {e}\n{cj:#}"));
    assert_eq!(last, at, "{cj:#}");
    cluster.wait_for(
        &[
            "get",
            "cronjob",
            "tick",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ],
        Duration::from_secs(30),
        |s| !s.is_empty(),
    );
    let jobs = kn_ok(cluster, ns, &["get", "jobs", "-o", "name"]);
    assert_eq!(jobs.trim(), format!("job.batch/{job_name}"), "fired once");
}

/// Where the pods of `selector` run: (name, node, terminating).
fn placed(cluster: &Cluster, ns: &str, selector: &str) -> Vec<(String, String, bool)> {
    let pods = json(cluster, ns, &["get", "pods", "-l", selector]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                str_at(p, "/metadata/name").to_string(),
                str_at(p, "/spec/nodeName").to_string(),
                p.pointer("/metadata/deletionTimestamp").is_some(),
            )
        })
        .collect()
}

fn drain_honours_pdb(cluster: &Cluster, image: &str, workers: &[String; 2]) {
    let ns = "guarded";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: guarded}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: guarded}}}}
  template:
    metadata: {{labels: {{app: guarded}}}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{w0}, {w1}]}}]
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: guarded}}}}}}{}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: guarded}}
spec:
  minAvailable: 2
  selector: {{matchLabels: {{app: guarded}}}}
"#,
            container(image, "1"),
            w0 = workers[0],
            w1 = workers[1],
        ),
    );
    rollout_status(cluster, ns, "deployment/guarded");
    let drained = &workers[0];
    let before = placed(cluster, ns, "app=guarded");
    let victim = before
        .iter()
        .find(|p| &p.1 == drained)
        .unwrap_or_else(|| panic!("no guarded pod on {drained}: {before:?}"))
        .0
        .clone();
    cluster.wait_for(
        &[
            "get",
            "pdb",
            "guarded",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ],
        Duration::from_secs(60),
        |s| s == "2/0",
    );

    let log = cluster.sandbox.path().join("drain.log");
    let file = std::fs::File::create(&log).expect("drain log");
    let mut drain = Command::new("kubectl")
        .args(["--context", &cluster.context()])
        .args([
            "drain",
            drained,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
        ])
        .args(["--timeout=150s"])
        .env("KUBECONFIG", cluster.sandbox.kubeconfig())
        .env("HOME", cluster.sandbox.path())
        .stdout(file.try_clone().expect("drain log"))
        .stderr(file)
        .spawn()
        .expect("cannot start kubectl drain");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let blocked = format!("evicting pod {ns}/{victim}");
    wait_until(
        "the drain to be refused by the budget",
        Duration::from_secs(90),
        || {
            let l = read_log();
            if let Some(status) = drain.try_wait().expect("drain status") {
                panic!("drain finished ({status}) while the budget forbids it:\n{l}");
            }
            if l.contains("Cannot evict pod as it would violate the pod's disruption budget")
                && l.contains(&blocked)
            {
                Ok(())
            } else {
                Err(l)
            }
        },
    );
    let now = placed(cluster, ns, "app=guarded");
    assert!(
        now.contains(&(victim.clone(), drained.clone(), false)),
        "the budget keeps {victim} on {drained}: {now:?}"
    );
    assert_eq!(
        cluster.kubectl_ok(&[
            "get",
            "node",
            drained,
            "-o",
            "jsonpath={.spec.unschedulable}"
        ]),
        "true",
        "drain cordons first"
    );

    // Allowing one disruption lets the drain finish.
    kn_ok(
        cluster,
        ns,
        &[
            "patch",
            "pdb/guarded",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":1}}"#,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = drain.try_wait().expect("drain status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = drain.kill();
            let _ = drain.wait();
            panic!("drain did not finish once allowed:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let l = read_log();
    assert!(status.success(), "drain failed: {l}");
    assert!(l.contains(&format!("node/{drained} drained")), "{l}");
    let out = kn(cluster, ns, &["get", "pod", &victim]);
    assert!(gone(&out), "{victim} was evicted");
    let after = placed(cluster, ns, "app=guarded");
    assert!(
        after.iter().all(|p| &p.1 != drained),
        "nothing of ours left on the drained node: {after:?}"
    );

    // Uncordoned, the node takes the replacement back.
    cluster.kubectl_ok(&["uncordon", drained]);
    rollout_status(cluster, ns, "deployment/guarded");
    let back = placed(cluster, ns, "app=guarded");
    assert!(back.iter().any(|p| &p.1 == drained && !p.2), "{back:?}");
}

fn stopped_worker_pods_move(cluster: &Cluster, image: &str, workers: &[String; 2]) {
    let ns = "moving";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    apply(
        cluster,
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: mover}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: mover}}}}
  template:
    metadata: {{labels: {{app: mover}}}}
    spec:
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: mover}}}}}}{}
"#,
            container(image, "1")
        ),
    );
    rollout_status(cluster, ns, "deployment/mover");
    let before = placed(cluster, ns, "app=mover");
    let (victim, stopped) = before
        .iter()
        .find(|p| workers.contains(&p.1))
        .map(|p| (p.0.clone(), p.1.clone()))
        .unwrap_or_else(|| panic!("two pods on two nodes, one of them a worker: {before:?}"));
    let watch = PodWatch::start(cluster, ns, "app=mover", "pod-template-hash");
    watch.wait("the two pods", Duration::from_secs(30), |s| {
        s.count("") == (2, 2)
    });

    let out = docker(&["stop", &stopped]);
    assert!(
        out.status.success(),
        "docker stop {stopped}: {}",
        text(&out)
    );
    watch.wait(
        "a ready replacement away from the stopped node",
        Duration::from_secs(150),
        |s| {
            let live = s.live();
            live.len() == 2
                && live.iter().all(|p| p.ready && p.node != stopped)
                && s.pods.get(&victim).is_none_or(|p| p.terminating)
        },
    );
    let node = json(cluster, "default", &["get", "node", &stopped]);
    let taints: Vec<&str> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable"),
        "{node:#}"
    );
    let events = cluster.wait_for(
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={victim}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        Duration::from_secs(30),
        |s| s.contains("TaintManagerEviction"),
    );
    assert!(
        events.contains(&format!(
            "TaintManagerEviction: Marking for deletion Pod {ns}/{victim}"
        )),
        "{events}"
    );
}

/// Starts one scenario in its own thread, named for it (its panic is printed with the name).
fn spawn<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    name: &'static str,
    f: impl FnOnce() + Send + 's,
) -> (&'static str, std::thread::ScopedJoinHandle<'s, ()>) {
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, f)
        .expect("cannot start a scenario thread");
    (name, handle)
}

#[test]
fn workload_controllers_on_real_nodes() {
    require_docker_and_kubectl();
    let started = Instant::now();
    let sandbox = Sandbox::new();
    let name = unique_name("wl");
    let image_tag = format!("kcluster-e2e/workloads-{name}:1");
    let _image = build_busybox_image(&sandbox, &image_tag, "");
    let owned = Cluster::create_quick_to_notice(&sandbox, &name, &["--workers", "2"]);
    let cluster = &owned;
    cluster.load_image(&image_tag);
    let nodes: BTreeSet<String> = cluster.node_ips().into_iter().map(|(n, _)| n).collect();
    let server = format!("{name}-server-0");
    let workers = [format!("{name}-worker-0"), format!("{name}-worker-1")];
    let want: BTreeSet<String> = [server.clone(), workers[0].clone(), workers[1].clone()].into();
    assert_eq!(nodes, want, "the cluster's nodes");
    eprintln!("cluster ready after {:?}", started.elapsed());

    let mut failed: Vec<&str> = Vec::new();
    let (cluster, image, nodes, server, workers) = (
        &cluster,
        image_tag.as_str(),
        &nodes,
        server.as_str(),
        &workers,
    );
    std::thread::scope(|scope| {
        let mut record = |handles: Vec<(&'static str, std::thread::ScopedJoinHandle<'_, ()>)>| {
            for (name, h) in handles {
                let ok = h.join().is_ok();
                let verdict = if ok { "passed" } else { "FAILED" };
                eprintln!("{name}: {verdict} after {:?}", started.elapsed());
                if !ok {
                    failed.push(name);
                }
            }
        };
        let cron = spawn(scope, "cronjob", move || {
            cronjob_fires(cluster, image, server)
        });
        record(vec![
            spawn(scope, "deployment", move || {
                deployment_rollout(cluster, image)
            }),
            spawn(scope, "daemonset", move || {
                daemonset_rollout(cluster, image, nodes)
            }),
            spawn(scope, "statefulset", move || {
                statefulset_keeps_data(cluster, image)
            }),
            spawn(scope, "job", move || job_retries(cluster, image, server)),
        ]);
        // Draining moves other namespaces' pods off the node: only after phase 1.
        record(vec![spawn(scope, "drain", move || {
            drain_honours_pdb(cluster, image, workers)
        })]);
        record(vec![cron]);
        // Takes a node down for good: last.
        record(vec![spawn(scope, "stopped-worker", move || {
            stopped_worker_pods_move(cluster, image, workers)
        })]);
    });
    eprintln!("all scenarios done after {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "failed scenarios: {failed:?} (their panics are above)"
    );
}
