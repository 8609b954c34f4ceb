//! Pod lifecycle on real nodes: gRPC probes against a real gRPC health server, a liveness
//! probe's own terminationGracePeriodSeconds, the order of init container, hooks and probes as
//! the classic pod-lifecycle tutorial shows it, and a node container that stops and starts
//! again under its pods.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn jsonpath(cluster: &Cluster, ns: &str, pod: &str, path: &str) -> String {
    let out = cluster.kubectl(&[
        "-n",
        ns,
        "get",
        "pod",
        pod,
        "-o",
        &format!("jsonpath={{{path}}}"),
    ]);
    stdout(&out)
}

fn wait_field(
    cluster: &Cluster,
    ns: &str,
    pod: &str,
    path: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    cluster.wait_for(
        &[
            "-n",
            ns,
            "get",
            "pod",
            pod,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ],
        Duration::from_secs(120),
        check,
    )
}

/// Waits for a Warning/Normal event on `pod` whose message satisfies `check`.
fn wait_event(cluster: &Cluster, pod: &str, check: impl Fn(&str) -> bool) -> String {
    cluster.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        Duration::from_secs(120),
        |o| o.lines().any(&check),
    )
}

fn grpc_pods(image: &str) -> String {
    r#"
apiVersion: v1
kind: Pod
metadata: {name: grpc-serving}
spec:
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["/grpc-health-server", "50051", "SERVING", "kcluster"]
    readinessProbe: {grpc: {port: 50051, service: kcluster}, periodSeconds: 1}
    livenessProbe: {grpc: {port: 50051}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: grpc-not-serving}
spec:
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["/grpc-health-server", "50051", "NOT_SERVING"]
    readinessProbe: {grpc: {port: 50051}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: grpc-unknown-service}
spec:
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["/grpc-health-server", "50051", "SERVING", "kcluster"]
    readinessProbe: {grpc: {port: 50051, service: other}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: probe-grace}
spec:
  # The server runs as PID 1 and ignores SIGTERM: only SIGKILL after the grace ends it. The
  # pod's 600 s would hold the restart for ten minutes; the probe's own 2 s must be used.
  terminationGracePeriodSeconds: 600
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["/grpc-health-server", "50051", "NOT_SERVING"]
    livenessProbe:
      grpc: {port: 50051}
      periodSeconds: 1
      failureThreshold: 1
      terminationGracePeriodSeconds: 2
"#
    .replace("IMAGE", image)
}

/// The tutorial's pod, word for word but for the image (a local busybox, never pulled).
fn lifecycle_pod(image: &str) -> String {
    r#"
apiVersion: v1
kind: Pod
metadata:
  name: pod-lifecycle
  namespace: luffy
  labels:
    component: pod-lifecycless
spec:
  initContainers:
  - name: init
    image: IMAGE
    imagePullPolicy: Never
    command: ['sh', '-c', 'echo $(date +%s): INIT >> /loap/timing']
    volumeMounts:
    - mountPath: /loap
      name: timing
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    command: ['sh', '-c', 'echo $(date +%s): START >> /loap/timing;
sleep 10; echo $(date +%s): END >> /loap/timing;']
    volumeMounts:
    - mountPath: /loap
      name: timing
    livenessProbe:
      exec:
        command: ['sh', '-c', 'echo $(date +%s): LIVENESS >> /loap/timing']
    readinessProbe:
      exec:
        command: ['sh', '-c', 'echo $(date +%s): READINESS >> /loap/timing']
    lifecycle:
      postStart:
        exec:
          command: ['sh', '-c', 'echo $(date +%s): POST-START >> /loap/timing']
      preStop:
        exec:
          command: ['sh', '-c', 'echo $(date +%s): PRE-STOP >> /loap/timing']
  volumes:
  - name: timing
    hostPath:
      path: /tmp/loap
"#
    .replace("IMAGE", image)
}

/// A pod beside the tutorial's that shows the node's /tmp/loap (a node's /tmp is a tmpfs,
/// which docker cp cannot read).
fn reader_pod(image: &str) -> String {
    r#"
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: luffy}
spec:
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: timing, mountPath: /loap}]
  volumes:
  - {name: timing, hostPath: {path: /tmp/loap, type: DirectoryOrCreate}}
"#
    .replace("IMAGE", image)
}

/// The timing file on the node: (seconds, event) per line.
fn timing(cluster: &Cluster) -> Vec<(u64, String)> {
    let out = cluster.kubectl(&["-n", "luffy", "exec", "reader", "--", "cat", "/loap/timing"]);
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let (t, e) = l.split_once(": ")?;
            Some((t.trim().parse().ok()?, e.trim().to_string()))
        })
        .collect()
}

fn wait_timing(cluster: &Cluster, check: impl Fn(&[(u64, String)]) -> bool) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = timing(cluster);
        if check(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "the timing file never got there: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn count(lines: &[(u64, String)], event: &str) -> usize {
    lines.iter().filter(|(_, e)| e == event).count()
}

fn first(lines: &[(u64, String)], event: &str) -> usize {
    lines
        .iter()
        .position(|(_, e)| e == event)
        .unwrap_or_else(|| panic!("no {event} in {lines:?}"))
}

#[test]
fn grpc_probes_probe_grace_and_the_lifecycle_tutorial() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("klife");
    let busybox = format!("kcluster-e2e/busybox:{name}");
    let grpc = format!("kcluster-e2e/grpc-health:{name}");
    let _busybox = common::images::build_busybox_image(&sandbox, &busybox, "");
    let _grpc = common::images::build_grpc_health_image(&sandbox, &grpc);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&busybox);
    cluster.load_image(&grpc);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &grpc_pods(&grpc));
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&["create", "namespace", "luffy"]);
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], &reader_pod(&busybox));
    assert!(out.status.success(), "create failed: {}", text(&out));
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], &lifecycle_pod(&busybox));
    assert!(out.status.success(), "create failed: {}", text(&out));

    // SERVING for the named service: Ready, and the liveness probe leaves it alone.
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/grpc-serving",
        "--timeout=120s",
    ]);
    // NOT_SERVING and an unknown service fail readiness with kubelet's messages.
    wait_event(&cluster, "grpc-not-serving", |m| {
        m == "Unhealthy: Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
    });
    wait_event(&cluster, "grpc-unknown-service", |m| {
        m.starts_with("Unhealthy: Readiness probe failed: error: health rpc probe failed: rpc error: code = NotFound")
    });
    // A failing liveness probe with its own grace restarts the container well before the
    // pod's 600 s grace could have run out.
    wait_event(&cluster, "probe-grace", |m| {
        m == "Killing: Container c failed liveness probe, will be restarted"
    });
    wait_field(
        &cluster,
        "default",
        "probe-grace",
        ".status.containerStatuses[0].restartCount",
        |r| r.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    for pod in ["grpc-not-serving", "grpc-unknown-service"] {
        assert_eq!(
            jsonpath(
                &cluster,
                "default",
                pod,
                ".status.containerStatuses[0].ready"
            ),
            "false",
            "{pod}"
        );
    }
    assert_eq!(
        jsonpath(
            &cluster,
            "default",
            "grpc-serving",
            ".status.containerStatuses[0].restartCount"
        ),
        "0"
    );

    // The tutorial's timing file: INIT, then START and POST-START (together, in either order),
    // then the probes (once postStart is done), then END.
    let lines = wait_timing(&cluster, |l| count(l, "END") >= 1);
    let init = first(&lines, "INIT");
    let start = first(&lines, "START");
    let post = first(&lines, "POST-START");
    let readiness = first(&lines, "READINESS");
    let liveness = first(&lines, "LIVENESS");
    let end = first(&lines, "END");
    assert_eq!(init, 0, "{lines:?}");
    assert!(
        start < readiness && post < readiness && post < liveness && start < liveness,
        "{lines:?}"
    );
    assert!(readiness < end && liveness < end, "{lines:?}");
    assert_eq!(count(&lines[..end], "INIT"), 1, "{lines:?}");
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "time runs forward: {lines:?}"
    );
    // The pod restarts its main container (restartPolicy Always; the init container does not
    // run again). Deleting the pod while it runs runs preStop.
    let lines = wait_timing(&cluster, |l| count(l, "START") >= 2);
    assert_eq!(count(&lines, "INIT"), 1, "{lines:?}");
    cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "delete",
        "pod",
        "pod-lifecycle",
        "--wait=false",
    ]);
    let lines = wait_timing(&cluster, |l| count(l, "PRE-STOP") >= 1);
    assert!(
        first(&lines, "PRE-STOP") > lines.iter().rposition(|(_, e)| e == "START").unwrap_or(0),
        "{lines:?}"
    );
}

/// Processes whose command line is `marker`, as the Docker host sees them (nodes are Docker
/// containers, so pod processes are host processes too). Read from a throwaway container in
/// the host's PID namespace, so a remote Docker engine is checked as well as a local one.
fn host_processes(image: &str, marker: &str) -> usize {
    let out = docker(&[
        "run",
        "--rm",
        "--pid=host",
        "--network=none",
        image,
        "sh",
        "-c",
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done",
    ]);
    assert!(
        out.status.success(),
        "cannot list the Docker host's processes: {}",
        text(&out)
    );
    let listing = stdout(&out);
    assert!(
        listing.lines().any(|l| l.contains("kcluster node")),
        "the Docker host's process list shows no node agent, so it cannot be trusted: {listing}"
    );
    listing.lines().filter(|l| l.trim() == marker).count()
}

/// Processes of the node container (host pids) whose command line is `marker`.
fn node_processes(node: &str, marker: &str) -> usize {
    stdout(&docker(&["top", node, "-eo", "pid,args"]))
        .lines()
        .filter(|l| {
            l.trim()
                .split_once(' ')
                .is_some_and(|(_, args)| args.trim() == marker)
        })
        .count()
}

#[test]
fn a_stopped_node_takes_its_pods_down_and_starting_it_brings_each_back_once() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kstop");
    let tag = format!("kcluster-e2e/busybox:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let worker = format!("{name}-worker-0");
    // A marker in the command line finds the pod's process; each start is counted in a
    // hostPath file, and a SIGTERM from the node's shutdown is noted there too.
    let marker = "sleep 36017";
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  nodeName: WORKER
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo start >> /log/events; trap 'echo term >> /log/events; exit 0' TERM; MARKER & wait"]
    volumeMounts: [{name: log, mountPath: /log}]
  volumes:
  - {name: log, hostPath: {path: /var/survivor, type: DirectoryOrCreate}}
"#
    .replace("IMAGE", &tag)
    .replace("WORKER", &worker)
    .replace("MARKER", marker);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &pod);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/survivor",
        "--timeout=120s",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_processes(&worker, marker) != 1 {
        assert!(
            Instant::now() < deadline,
            "the pod's process is not on the node: {}",
            stdout(&docker(&["top", &worker, "-eo", "pid,args"]))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        host_processes(&tag, marker),
        1,
        "the host sees the pod's process before the stop"
    );

    // docker stop: the agent stops its pods within Docker's 10 s (SIGTERM reaches the pod),
    // and nothing of them is left running on the host.
    let out = docker(&["stop", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        host_processes(&tag, marker),
        0,
        "pod processes outlived their node"
    );
    let events = node_file(&worker, "/var/survivor/events");
    assert!(
        events.contains("start") && events.contains("term"),
        "the pod was not stopped gracefully: {events:?}"
    );

    // docker start: the agent finds the pod again and runs it once (a new attempt of the same
    // container, no duplicate process).
    let out = docker(&["start", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    cluster.wait_for(
        &["get", "pod", "survivor", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}"],
        Duration::from_secs(120),
        |o| {
            let mut parts = o.split(' ');
            parts.next().and_then(|r| r.parse::<u32>().ok()).is_some_and(|r| r >= 1)
                && parts.next() == Some("true")
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_processes(&worker, marker) != 1 {
        assert!(
            Instant::now() < deadline,
            "not exactly one pod process after the restart: {}",
            stdout(&docker(&["top", &worker, "-eo", "pid,args"]))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // It stays one: nothing starts a second copy a little later.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        node_processes(&worker, marker),
        1,
        "{}",
        stdout(&docker(&["top", &worker, "-eo", "pid,args"]))
    );
    let events = node_file(&worker, "/var/survivor/events");
    assert_eq!(
        events.lines().filter(|l| *l == "start").count(),
        2,
        "{events:?}"
    );
    let uid = cluster.kubectl_ok(&["get", "pod", "survivor", "-o", "jsonpath={.metadata.uid}"]);
    let ps = stdout(&docker(&["exec", &worker, "/kcluster", "node", "ps"]));
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains(uid.trim()) && l.contains(" running "))
            .count(),
        1,
        "one running container of the pod on the node: {ps}"
    );
}
