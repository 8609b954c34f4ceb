//! The kubelet API end to end: real kubectl → our API server → the node agent's kubelet API
//! on :10250 → containers of real pods that the node's kubelet runs, in a real two-node
//! cluster with a locally built busybox image. Pods are placed with spec.nodeName so both the
//! server node (its own serving certificate) and the worker (one from `kcluster create`) answer.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The port the web pod's httpd listens on inside its own network namespace.
const HTTP_PORT: u16 = 8080;

fn manifests(image: &str, server: &str, worker: &str) -> String {
    r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: WORKER
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www; echo hello-through-forward > /www/index.html; httpd -p PORT -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
    readinessProbe: {httpGet: {path: /, port: PORT}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  nodeName: WORKER
  restartPolicy: Always
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo first-one; echo first-two; sleep 0.1; echo first-err >&2; sleep 1; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: talk-server}
spec:
  nodeName: SERVER
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "echo ready; while read line; do echo in:$line; done; echo bye"]
---
apiVersion: v1
kind: Pod
metadata: {name: talk-worker}
spec:
  nodeSelector: {kubernetes.io/hostname: WORKER}
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "echo ready; while read line; do echo in:$line; done; echo bye"]
"#
    .replace("IMAGE", image)
    .replace("SERVER", server)
    .replace("WORKER", worker)
    .replace("PORT", &HTTP_PORT.to_string())
}

fn wait_ready(cluster: &Cluster, pod: &str) {
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=120s",
    ]);
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
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let worker = format!("{name}-worker-0");
    let server = format!("{name}-server-0");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag, &server, &worker));
    assert!(out.status.success(), "apply failed: {}", text(&out));
    wait_ready(&cluster, "web");
    // Two ticks at least, for the checks below that read the first two lines.
    cluster.wait_for(
        &["logs", "web", "--tail", "1"],
        Duration::from_secs(30),
        |o| o.starts_with("tick") && o.trim() != "tick 0",
    );

    // Logs: plain, tail, timestamps, limit, follow (ended by its own timeout), unknown container.
    let all = cluster.kubectl_ok(&["logs", "web"]);
    assert!(all.starts_with("tick 0\ntick 1\n"), "{all}");
    let tail = cluster.kubectl_ok(&["logs", "web", "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let stamped = cluster.kubectl_ok(&["logs", "web", "--tail", "1", "--timestamps"]);
    let (time, rest) = stamped.trim().split_once(' ').unwrap_or_default();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && rest.starts_with("tick"),
        "{stamped}"
    );
    let limited = cluster.kubectl_ok(&["logs", "web", "--limit-bytes", "6"]);
    assert_eq!(limited, "tick 0");
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
            >= 2,
        "follow showed no new lines: {}",
        text(&follow)
    );
    let missing = cluster.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(!missing.status.success(), "{}", text(&missing));
    assert!(text(&missing).contains("nope"), "{}", text(&missing));

    // --previous: the crashing pod's first attempt, once the kubelet has restarted it.
    cluster.wait_for(
        &[
            "get",
            "pod",
            "crashy",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        Duration::from_secs(120),
        |o| o.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let previous = cluster.kubectl_ok(&["logs", "crashy", "--previous"]);
    assert_eq!(previous, "first-one\nfirst-two\nfirst-err\n");
    let limited = cluster.kubectl_ok(&["logs", "crashy", "--previous", "--limit-bytes", "5"]);
    assert_eq!(limited, "first");

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

        // port-forward + an HTTP GET through it, into the pod's own network namespace.
        let local = free_port();
        let mapping = format!("{local}:{HTTP_PORT}");
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
        let mut forward = cmd.spawn().expect("cannot run kubectl port-forward");
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
    for (label, env) in [
        ("websocket", vec![]),
        ("spdy", vec![("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")]),
    ] {
        let tty = run_in_pty(
            &cluster,
            &env,
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
        assert_eq!(tty.0, Some(7), "{label}: {}", tty.1);
        assert!(tty.1.contains("/dev/pts/"), "{label}: {}", tty.1);
        assert!(tty.1.contains("33 111"), "{label}: {}", tty.1);
    }

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
    // and the attach ends when the container does. On the server node over WebSocket, on
    // the worker over SPDY.
    for (pod, env) in [
        ("talk-server", vec![]),
        (
            "talk-worker",
            vec![("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
        ),
    ] {
        wait_ready(&cluster, pod);
        cluster.wait_for(&["logs", pod], Duration::from_secs(30), |o| {
            o.contains("ready")
        });
        let out = kubectl_env(&cluster, &env, &["attach", "-i", pod], b"hello\n");
        assert!(out.status.success(), "{pod}: {}", text(&out));
        assert!(stdout(&out).contains("in:hello"), "{pod}: {}", text(&out));
        cluster.wait_for(&["logs", pod], Duration::from_secs(30), |o| {
            o.contains("bye")
        });
    }
    let placed = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}{\"\\n\"}{end}",
    ]);
    assert!(
        placed.contains(&format!("talk-server={server}\n")),
        "{placed}"
    );
    assert!(
        placed.contains(&format!("talk-worker={worker}\n")),
        "{placed}"
    );
}

/// Runs kubectl with a pseudo-terminal as its stdio; returns its exit code and output.
fn run_in_pty(cluster: &Cluster, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
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
        .envs(env.iter().copied())
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

/// kubectl under a terminal we type into and resize, as a user at a shell would.
struct Typist {
    child: std::process::Child,
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Typist {
    fn start(cluster: &Cluster, args: &[&str], rows: u16, cols: u16) -> Typist {
        use std::os::fd::OwnedFd;
        use std::os::unix::process::CommandExt;
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(cluster.sandbox.kubeconfig())
            .arg("--context")
            .arg(cluster.context())
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // kubectl's own session with the terminal as its controlling one, so a resize reaches
        // it as SIGWINCH.
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("cannot run kubectl");
        let master = std::fs::File::from(pty.master);
        let mut reading = master.try_clone().unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once kubectl (the last holder of the terminal) has exited.
            while let Ok(n) = reading.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Typist {
            child,
            master,
            output,
            reader: Some(reader),
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output (from `from` on) shows `text`; returns where it ends.
    fn wait_for(&self, from: usize, text: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let screen = self.screen();
            if let Some(at) = screen.get(from..).and_then(|s| s.find(text)) {
                return from + at + text.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{text:?} never showed; the terminal shows:\n{}",
            self.screen()
        );
    }

    fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize; the fd is our pty master.
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
            0
        );
    }

    /// Waits for kubectl to end; its exit code and everything it showed.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                drop(self.master);
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return (
                    status.code(),
                    String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned(),
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "kubectl did not end; the terminal shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn terminal_containers_run_attach_resize_and_log() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ktty");
    let tag = format!("kcluster-e2e/busybox:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);

    // `kubectl run -it --rm`: a stdin+tty container, attached at once; typed lines reach its
    // shell, sizes follow the terminal, and the pod goes when the shell exits.
    let mut run = Typist::start(
        &cluster,
        &[
            "run",
            "-it",
            "--rm",
            "--restart=Never",
            "--image",
            &tag,
            "--image-pull-policy=Never",
            "shell",
            "--",
            "sh",
        ],
        33,
        111,
    );
    let mut at = run.wait_for(0, "If you don't see a command prompt");
    run.type_line("echo size=$(stty size) term=$TERM tty=$(tty)");
    at = run.wait_for(at, "size=33 111 term=xterm tty=/dev/");
    run.resize(41, 97);
    // The new size travels kubectl → API server → kubelet API → the container's helper.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        run.type_line("stty size | sed s/^/now:/");
        std::thread::sleep(Duration::from_secs(1));
        if run.screen()[at..].contains("now:41 97") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resize never arrived:\n{}",
            run.screen()
        );
    }
    run.type_line("exit 3");
    let (code, screen) = run.finish();
    assert!(screen.contains("pod \"shell\" deleted"), "{screen}");
    assert_eq!(code, Some(3), "{screen}");
    cluster.wait_for(
        &["get", "pods", "-o", "name"],
        Duration::from_secs(60),
        |o| !o.contains("pod/shell"),
    );

    // A tty pod attached to later: its log holds the terminal's output (one line per line, no
    // carriage returns), and `kubectl attach -it` reaches a prompt that ends without a newline.
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: asker}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: Never
    stdin: true
    tty: true
    command: ["sh", "-c", "echo started; while true; do printf 'name? '; read n; [ \"$n\" = quit ] && exit 0; echo hello-$n; done"]
"#
    .replace("IMAGE", &tag);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &pod);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    wait_ready(&cluster, "asker");
    cluster.wait_for(&["logs", "asker"], Duration::from_secs(60), |o| {
        o.starts_with("started\n")
    });
    let mut attach = Typist::start(&cluster, &["attach", "-it", "asker"], 24, 80);
    let mut at = attach.wait_for(0, "If you don't see a command prompt");
    attach.type_line("ann");
    at = attach.wait_for(at, "hello-ann");
    // The prompt arrives before any newline follows it.
    attach.wait_for(at, "name? ");
    attach.type_line("quit");
    let (code, screen) = attach.finish();
    assert_eq!(code, Some(0), "{screen}");
    cluster.wait_for(
        &["get", "pod", "asker", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |o| o == "Succeeded",
    );
    let logs = cluster.kubectl_ok(&["logs", "asker"]);
    assert!(logs.starts_with("started\n"), "{logs:?}");
    assert!(logs.contains("hello-ann\n"), "{logs:?}");
    assert!(!logs.contains('\r'), "{logs:?}");
}
