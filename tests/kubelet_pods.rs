//! The node agent's pod manager end to end: a real cluster, a locally built busybox image
//! loaded into it, and pods whose effects are read back through the API as kubectl shows
//! them (status, termination messages, events) and from the node (`kcluster node ps`).
//! One cluster serves every check; the pods run side by side.

mod common;

use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "kcluster-e2e/kubelet-busybox:1";

fn manifests(image: &str) -> String {
    r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {GREETING: hello, "1st": skipped}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  restartPolicy: Never
  containers:
  - name: server
    image: IMAGE
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
  - name: client
    image: IMAGE
    command: ["sh", "-c", "until wget -q -O /dev/termination-log http://127.0.0.1:8080/; do sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: envpod, labels: {tier: backend}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 2000}
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "echo \"$GREETING|$PASS|$MY_NAME|$TIER|$MEM|$EXPANDED|$(hostname)|$(id -u):$(id -g)|$OPTIONAL\" > /dev/termination-log"]
    envFrom:
    - configMapRef: {name: settings}
    env:
    - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: EXPANDED, value: "x-$(MY_NAME)-$$(MY_NAME)"}
    - {name: OPTIONAL, valueFrom: {configMapKeyRef: {name: absent, key: k, optional: true}}}
    resources: {limits: {memory: 48Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - {name: c, image: IMAGE, command: ["sh", "-c", "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure-ok}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: c, image: IMAGE, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never-fail}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: IMAGE, command: ["sh", "-c", "echo went-wrong > /dev/termination-log; exit 2"]}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"]
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  restartPolicy: Never
  initContainers:
  - {name: first, image: IMAGE, command: ["sleep", "1"]}
  - {name: second, image: IMAGE, command: ["sleep", "1"]}
  containers:
  - {name: main, image: IMAGE, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: init-fail}
spec:
  restartPolicy: Never
  initContainers:
  - {name: broken, image: IMAGE, command: ["sh", "-c", "exit 1"]}
  containers:
  - {name: main, image: IMAGE, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: liveness}
spec:
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: unready}
spec:
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /missing, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  readinessGates: [{conditionType: example.com/ready}]
  containers:
  - {name: c, image: IMAGE, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: missing-config}
spec:
  containers:
  - name: c
    image: IMAGE
    env:
    - {name: X, valueFrom: {configMapKeyRef: {name: nope, key: k}}}
---
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  restartPolicy: Never
  shareProcessNamespace: true
  containers:
  - name: main
    image: IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    readinessProbe: {exec: {command: ["cat", "/ready"]}, periodSeconds: 1}
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "echo done > /ready"]}}
  - name: peer
    image: IMAGE
    command: ["sh", "-c", "until ps | grep -q 'while true'; do sleep 0.2; done; ps > /dev/termination-log"]
---
apiVersion: v1
kind: Pod
metadata: {name: sidecar}
spec:
  restartPolicy: Never
  initContainers:
  - name: side
    image: IMAGE
    restartPolicy: Always
    command: ["sh", "-c", "mkdir -p /www && echo from-sidecar > /www/index.html && exec httpd -f -p 8081 -h /www"]
  containers:
  - name: main
    image: IMAGE
    command: ["sh", "-c", "until wget -q -O /dev/termination-log http://127.0.0.1:8081/; do sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: deadline}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: IMAGE, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - {name: c, image: IMAGE, command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}
"#
    .replace("IMAGE", image)
}

fn jsonpath(cluster: &Cluster, pod: &str, path: &str) -> String {
    let out = cluster.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")]);
    stdout(&out)
}

/// Waits until a pod's field (a kubectl jsonpath) satisfies `check`.
fn wait_field(cluster: &Cluster, pod: &str, path: &str, check: impl Fn(&str) -> bool) -> String {
    cluster.wait_for(
        &["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")],
        Duration::from_secs(90),
        check,
    )
}

fn node_ps(node: &str) -> String {
    stdout(&docker(&["exec", node, "/kcluster", "node", "ps"]))
}

#[test]
fn pods_run_restart_report_and_stop_like_kubelet() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kl");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    let node = format!("{name}-server-0");
    cluster.load_image(&tag);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag));
    assert!(out.status.success(), "apply failed: {}", text(&out));

    // kubectl wait sees Ready; the status reads as on any cluster.
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/sleeper",
        "--timeout=90s",
    ]);
    assert_eq!(jsonpath(&cluster, "sleeper", ".status.phase"), "Running");
    let cid = jsonpath(
        &cluster,
        "sleeper",
        ".status.containerStatuses[0].containerID",
    );
    let uid = jsonpath(&cluster, "sleeper", ".metadata.uid");
    assert_eq!(cid, format!("kcluster://{uid}-c-0"));
    assert_eq!(
        jsonpath(&cluster, "sleeper", ".status.qosClass"),
        "BestEffort"
    );
    assert!(!jsonpath(&cluster, "sleeper", ".status.hostIP").is_empty());
    assert!(node_ps(&node).contains(&format!("{uid}-c-0")));
    wait_output(
        "the kubelet's events",
        || {
            cluster.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=sleeper",
                "-o",
                "jsonpath={range .items[*]}{.reason}:{.source.component}:{.message}{\"\\n\"}{end}",
            ])
        },
        &[
            &format!("Pulled:kubelet:Container image \"{tag}\" already present on machine"),
            "Created:kubelet:Created container: c",
            "Started:kubelet:Started container c",
        ],
    );

    // Two containers of one pod talk over localhost; the client's message is the page.
    let msg = wait_field(
        &cluster,
        "web",
        ".status.containerStatuses[?(@.name==\"client\")].state.terminated.message",
        |m| !m.is_empty(),
    );
    assert_eq!(msg.trim(), "hello-from-server");
    wait_field(
        &cluster,
        "web",
        ".status.containerStatuses[?(@.name==\"server\")].ready",
        |r| r == "true",
    );

    // Environment from a ConfigMap, a Secret, the downward API and expansion; user and group.
    let msg = wait_field(
        &cluster,
        "envpod",
        ".status.containerStatuses[0].state.terminated.message",
        |m| !m.is_empty(),
    );
    assert_eq!(
        msg.trim(),
        "hello|s3cret|envpod|backend|48|x-envpod-$(MY_NAME)|envpod|1000:2000|"
    );
    assert_eq!(jsonpath(&cluster, "envpod", ".status.phase"), "Succeeded");

    // Restart policies and exit reasons.
    wait_field(&cluster, "onfailure-ok", ".status.phase", |p| {
        p == "Succeeded"
    });
    wait_field(&cluster, "never-fail", ".status.phase", |p| p == "Failed");
    let state = jsonpath(
        &cluster,
        "never-fail",
        ".status.containerStatuses[0].state.terminated",
    );
    assert!(state.contains("\"exitCode\":2"), "{state}");
    assert!(state.contains("\"reason\":\"Error\""), "{state}");
    assert!(state.contains("went-wrong"), "{state}");
    wait_field(
        &cluster,
        "oom",
        ".status.containerStatuses[0].state.terminated.reason",
        |r| r == "OOMKilled",
    );

    // A crashing container backs off with a rising restart count.
    wait_field(
        &cluster,
        "crash",
        ".status.containerStatuses[0].state.waiting.reason",
        |r| r == "CrashLoopBackOff",
    );
    wait_field(
        &cluster,
        "crash",
        ".status.containerStatuses[0].restartCount",
        |n| n.parse::<u32>().unwrap_or(0) >= 2,
    );
    let last = jsonpath(
        &cluster,
        "crash",
        ".status.containerStatuses[0].lastState.terminated.exitCode",
    );
    assert_eq!(last, "3");
    let get = cluster.kubectl_ok(&["get", "pod", "crash"]);
    assert!(get.contains("CrashLoopBackOff"), "{get}");

    // Init containers run in order, before the app container.
    wait_field(&cluster, "init", ".status.phase", |p| p == "Succeeded");
    let first_done = jsonpath(
        &cluster,
        "init",
        ".status.initContainerStatuses[0].state.terminated.finishedAt",
    );
    let second_start = jsonpath(
        &cluster,
        "init",
        ".status.initContainerStatuses[1].state.terminated.startedAt",
    );
    let second_done = jsonpath(
        &cluster,
        "init",
        ".status.initContainerStatuses[1].state.terminated.finishedAt",
    );
    let main_start = jsonpath(
        &cluster,
        "init",
        ".status.containerStatuses[0].state.terminated.startedAt",
    );
    assert!(
        first_done <= second_start && second_done <= main_start,
        "{first_done} {second_start} {second_done} {main_start}"
    );
    wait_field(&cluster, "init-fail", ".status.phase", |p| p == "Failed");
    assert_eq!(
        jsonpath(
            &cluster,
            "init-fail",
            ".status.containerStatuses[0].state.waiting.reason"
        ),
        "PodInitializing"
    );
    let get = cluster.kubectl_ok(&["get", "pod", "init-fail"]);
    assert!(get.contains("Init:Error"), "{get}");

    // A failing liveness probe restarts the container.
    wait_field(
        &cluster,
        "liveness",
        ".status.containerStatuses[0].restartCount",
        |n| n.parse::<u32>().unwrap_or(0) >= 1,
    );
    cluster.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=liveness",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        Duration::from_secs(30),
        |m| {
            m.contains("Liveness probe failed: dial tcp")
                && m.contains("Container c failed liveness probe, will be restarted")
        },
    );

    // A failing readiness probe keeps the pod running but not Ready.
    cluster.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unready",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        Duration::from_secs(60),
        |m| m.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
    );
    assert_eq!(jsonpath(&cluster, "unready", ".status.phase"), "Running");
    assert_eq!(
        jsonpath(
            &cluster,
            "unready",
            ".status.conditions[?(@.type==\"Ready\")].status"
        ),
        "False"
    );

    // A readiness gate holds Ready until its condition is True.
    wait_field(
        &cluster,
        "gated",
        ".status.conditions[?(@.type==\"Ready\")].reason",
        |r| r == "ReadinessGatesNotReady",
    );
    assert_eq!(
        jsonpath(
            &cluster,
            "gated",
            ".status.conditions[?(@.type==\"ContainersReady\")].status"
        ),
        "True"
    );
    cluster.kubectl_ok(&[
        "patch",
        "pod",
        "gated",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"example.com/ready","status":"True"}]}}"#,
    ]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/gated",
        "--timeout=60s",
    ]);

    // postStart and an exec readiness probe run in the container; a shared PID namespace lets
    // one container see another's processes.
    wait_field(
        &cluster,
        "hooks",
        ".status.containerStatuses[?(@.name==\"main\")].ready",
        |r| r == "true",
    );
    let ps = wait_field(
        &cluster,
        "hooks",
        ".status.containerStatuses[?(@.name==\"peer\")].state.terminated.message",
        |m| !m.is_empty(),
    );
    assert!(ps.contains("while true"), "{ps}");

    // A sidecar (an init container that keeps running) serves the app container, and stops
    // when the app container is done.
    wait_field(&cluster, "sidecar", ".status.phase", |p| p == "Succeeded");
    assert_eq!(
        jsonpath(
            &cluster,
            "sidecar",
            ".status.containerStatuses[0].state.terminated.message"
        )
        .trim(),
        "from-sidecar"
    );

    // activeDeadlineSeconds ends a pod that runs too long.
    wait_field(&cluster, "deadline", ".status.phase", |p| p == "Failed");
    assert_eq!(
        jsonpath(&cluster, "deadline", ".status.reason"),
        "DeadlineExceeded"
    );

    // A missing ConfigMap is a configuration error with kubelet's message.
    let msg = wait_field(
        &cluster,
        "missing-config",
        ".status.containerStatuses[0].state.waiting.message",
        |m| !m.is_empty(),
    );
    assert_eq!(msg, "configmap \"nope\" not found");
    assert_eq!(
        jsonpath(
            &cluster,
            "missing-config",
            ".status.containerStatuses[0].state.waiting.reason"
        ),
        "CreateContainerConfigError"
    );

    // Deleting a pod stops its containers (SIGTERM is honoured), the pod goes, and so do its
    // containers on the node.
    let started = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", "sleeper", "--wait=true", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_ps(&node).contains(&uid) {
        assert!(
            Instant::now() < deadline,
            "the deleted pod's containers are still on the node:\n{}",
            node_ps(&node)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("sleeper deleted and cleaned in {:?}", started.elapsed());
    drop(cluster);
}
