//! The kubelet API end to end: real kubectl → our API server → the node agent's kubelet API
//! on :10250 → containers in a real cluster. Pods are Pod objects bound to a node whose
//! containers are started by hand inside the node (`kcluster node run-once --detach` with the
//! kubelet's annotations), so the streaming path is tested on its own.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct TestImage(String);

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

fn build_busybox(sandbox: &Sandbox, tag: &str) -> TestImage {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "these tests need Debian's static busybox at /bin/busybox: apt-get install -y busybox-static"
    );
    let context = sandbox.path().join("image");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\"]\n",
    )
    .unwrap();
    let out = docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    assert!(out.status.success(), "docker build failed: {}", text(&out));
    TestImage(tag.to_string())
}

/// Starts a container for pod `pod` (container `main`, attempt `attempt`) inside `node`, in the
/// node's network namespace, the way the kubelet labels it.
fn start_container(
    node: &str,
    image: &str,
    uid: &str,
    pod: &str,
    attempt: u32,
    extra: &[&str],
    script: &str,
) {
    let id = format!("{uid}-main-{attempt}");
    let annotations = [
        "io.kubernetes.pod.namespace=default".to_string(),
        format!("io.kubernetes.pod.name={pod}"),
        format!("io.kubernetes.pod.uid={uid}"),
        "io.kubernetes.container.name=main".to_string(),
        format!("io.kubernetes.container.restartCount={attempt}"),
        "io.kubernetes.container.type=regular".to_string(),
    ];
    let mut args: Vec<String> = [
        "exec",
        node,
        "/kcluster",
        "node",
        "run-once",
        "--detach",
        "--id",
        &id,
        "--image",
        image,
        "--netns",
        "/proc/1/ns/net",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for a in &annotations {
        args.push("--annotation".into());
        args.push(a.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "--".to_string(),
        "sh".into(),
        "-c".into(),
        script.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker(&args);
    assert!(out.status.success(), "cannot start {id}: {}", text(&out));
}

fn create_pod(cluster: &Cluster, node: &str, pod: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: unused\n"
    );
    let path = cluster.sandbox.path().join(format!("{pod}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    cluster.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    // kubectl port-forward and exec want a running pod; nothing else sets the phase here.
    cluster.kubectl_ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    cluster
        .kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
        .trim()
        .to_string()
}

fn kubectl_env(cluster: &Cluster, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(cluster.sandbox.kubeconfig())
        .arg("--context")
        .arg(cluster.context())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cannot run kubectl");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / through a forwarded local port, retrying until port-forward listens.
fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("200") {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no answer through port-forward on {port}: {last:?}");
}

#[test]
fn logs_exec_attach_port_forward_and_cp_reach_containers() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kapi");
    let tag = format!("kcluster-e2e/busybox:{name}");
    let _image = build_busybox(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name]);
    assert!(out.status.success(), "image load failed: {}", text(&out));
    let image = format!("docker.io/{tag}");
    // The worker's serving certificate comes from `kcluster create`, the server's is its own.
    let worker = format!("{name}-worker-0");
    let server = format!("{name}-server-0");
    let http_port = 20000 + (std::process::id() % 10000) as u16;

    let uid = create_pod(&cluster, &worker, "web");
    start_container(
        &worker,
        &image,
        &uid,
        "web",
        0,
        &[],
        "echo first-one; echo first-two; echo first-err >&2",
    );
    start_container(
        &worker,
        &image,
        &uid,
        "web",
        1,
        &[],
        &format!(
            "mkdir -p /www; echo hello-through-forward > /www/index.html; httpd -p {http_port} -h /www; \
             i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
        ),
    );
    cluster.wait_for(
        &["logs", "web", "--tail", "1"],
        Duration::from_secs(30),
        |o| o.starts_with("tick"),
    );

    // Logs: plain, tail, timestamps, previous, limit, follow (ended by its own timeout).
    let all = cluster.kubectl_ok(&["logs", "web"]);
    assert!(all.starts_with("tick 0\ntick 1\n"), "{all}");
    let tail = cluster.kubectl_ok(&["logs", "web", "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let stamped = cluster.kubectl_ok(&["logs", "web", "--tail", "1", "--timestamps"]);
    let (time, rest) = stamped.trim().split_once(' ').unwrap();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && rest.starts_with("tick"),
        "{stamped}"
    );
    let previous = cluster.kubectl_ok(&["logs", "web", "--previous"]);
    assert_eq!(previous, "first-one\nfirst-two\nfirst-err\n");
    let limited = cluster.kubectl_ok(&["logs", "web", "--previous", "--limit-bytes", "5"]);
    assert_eq!(limited, "first");
    let follow = kubectl_env(
        &cluster,
        &[],
        &[
            "logs",
            "web",
            "-f",
            "--tail",
            "1",
            "--request-timeout",
            "3s",
        ],
        b"",
    );
    assert!(
        stdout(&follow)
            .lines()
            .filter(|l| l.starts_with("tick"))
            .count()
            >= 3,
        "follow showed no new lines: {}",
        text(&follow)
    );
    let missing = cluster.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(!missing.status.success());

    for (label, env) in [
        ("websocket", vec![]),
        (
            "spdy",
            vec![
                ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
                ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
            ],
        ),
    ] {
        // exec: output, stderr, exit code.
        let out = kubectl_env(
            &cluster,
            &env,
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(3), "{label}: {}", text(&out));
        assert_eq!(stdout(&out), "out\n", "{label}");
        assert!(text(&out).contains("err\n"), "{label}: {}", text(&out));
        // exec -i: stdin, more than one SPDY/WebSocket window of it.
        let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let out = kubectl_env(
            &cluster,
            &env,
            &["exec", "-i", "web", "--", "wc", "-c"],
            &input,
        );
        assert!(out.status.success(), "{label}: {}", text(&out));
        assert_eq!(stdout(&out).trim(), "300000", "{label}");
        // A command that does not exist says so.
        let out = kubectl_env(
            &cluster,
            &env,
            &["exec", "web", "--", "no-such-command"],
            b"",
        );
        assert!(!out.status.success());
        assert!(
            text(&out).contains("no-such-command"),
            "{label}: {}",
            text(&out)
        );

        // port-forward + an HTTP GET through it.
        let local = free_port();
        let mapping = format!("{local}:{http_port}");
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(sandbox.kubeconfig())
            .arg("--context")
            .arg(cluster.context())
            .args(["port-forward", "pod/web", &mapping])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut forward = cmd.spawn().unwrap();
        let first = http_get(local);
        let second = http_get(local);
        let _ = forward.kill();
        let _ = forward.wait();
        assert!(first.contains("hello-through-forward"), "{label}: {first}");
        assert!(
            second.contains("hello-through-forward"),
            "{label}: {second}"
        );
    }

    // exec -t under a real terminal: a tty of the container, the size kubectl sent.
    let tty = run_in_pty(
        &cluster,
        &[
            "exec",
            "-it",
            "web",
            "--",
            "sh",
            "-c",
            "tty; stty size; exit 7",
        ],
    );
    assert_eq!(tty.0, Some(7), "{}", tty.1);
    assert!(tty.1.contains("/dev/pts/"), "{}", tty.1);
    assert!(tty.1.contains("33 111"), "{}", tty.1);

    // cp both ways (tar inside the container).
    let local = sandbox.path().join("local.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    cluster.kubectl_ok(&["cp", local.to_str().unwrap(), "web:/www/copied.txt"]);
    assert_eq!(
        cluster.kubectl_ok(&["exec", "web", "--", "cat", "/www/copied.txt"]),
        "copied in\n"
    );
    let back = sandbox.path().join("back.txt");
    cluster.kubectl_ok(&["cp", "web:/www/copied.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");

    // attach: stdin reaches the container (stdinOnce closes it after), output comes back,
    // and the attach ends when the container does. On the server node (its own certificate).
    let uid = create_pod(&cluster, &server, "talk");
    start_container(
        &server,
        &image,
        &uid,
        "talk",
        0,
        &["-i", "--stdin-once"],
        "echo ready; while read line; do echo in:$line; done; echo bye",
    );
    cluster.wait_for(&["logs", "talk"], Duration::from_secs(30), |o| {
        o.contains("ready")
    });
    let out = kubectl_env(&cluster, &[], &["attach", "-i", "talk"], b"hello\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("in:hello"), "{}", text(&out));
    cluster.wait_for(&["logs", "talk"], Duration::from_secs(30), |o| {
        o.contains("bye")
    });
}

/// Runs kubectl with a pseudo-terminal as its stdio; returns its exit code and output.
fn run_in_pty(cluster: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    use std::os::fd::OwnedFd;
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.sandbox.kubeconfig())
        .arg("--context")
        .arg(cluster.context())
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("cannot run kubectl");
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once kubectl (the last holder of the terminal) has exited.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let status = child.wait().unwrap();
    (status.code(), reader.join().unwrap())
}
