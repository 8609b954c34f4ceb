//! The official Python `kubernetes` client (PyPI, the version CI pins) against kcluster:
//! - `python_kubernetes_client`: what a Python operator or script does (typed CRUD, patches,
//!   selectors, a watch, error codes) against the standalone API server
//!   (`tests/python/client_test.py`);
//! - `python_client_streams_on_a_cluster`: its WebSocket exec (v5 and v4 channels) and
//!   port-forward against real pods on a real cluster (`tests/python/streams_test.py`), then the
//!   asyncio flavour's watch and exec (`tests/python/async_test.py`);
//! - `python_client_e2e_suite`: the client project's own end-to-end suite
//!   (`kubernetes/e2e_test`, run with pytest from beside the installed package, as upstream runs
//!   it against kind) against a real cluster, every test passing, none skipped. Ignored by
//!   default: no PyPI package carries the suite and CI machines may not reach GitHub; run
//!   `tests/python/fetch-e2e-suite.sh`, then `cargo test --test python_client -- --ignored
//!   python_client_e2e_suite`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::images::{TestImage, build_busybox_image, build_port_echo_image};
use common::{Cluster, Sandbox, text, unique_name};

/// The client version CI installs (`.ci/run`); any recent one works with Python 3.11.
const PIP_INSTALL: &str = "python3 -m pip install kubernetes==37.0.2 pytest";

/// The suite takes about two minutes on a loaded 2-core machine; past this it is stuck.
const SUITE_BUDGET: Duration = Duration::from_secs(15 * 60);

/// Fails loudly, never skips: a machine without the module would otherwise pass unchecked.
fn require_python_client() {
    match Command::new("python3")
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs the Python kubernetes client; install it with `{PIP_INSTALL}`:\n{}",
            text(&out)
        ),
        Err(e) => panic!("this test needs python3 on PATH ({e}); then `{PIP_INSTALL}`"),
    }
}

#[test]
fn python_kubernetes_client() {
    require_python_client();
    let server = common::ApiServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.sandbox.kubeconfig())
        .env("HOME", server.sandbox.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "the Python client checks failed:\n{}",
        text(&out)
    );
    println!("{}", common::stdout(&out));
}

#[test]
fn python_client_streams_on_a_cluster() {
    require_python_client();
    common::require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("pystreams");
    let busybox = format!("kcluster-test/{name}-busybox:1");
    let echo = format!("kcluster-test/{name}-echo:1");
    let _images = [
        build_busybox_image(&sandbox, &busybox, ""),
        build_port_echo_image(&sandbox, &echo),
    ];
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&busybox);
    cluster.load_image(&echo);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/streams_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(sandbox.kubeconfig())
        .arg(cluster.context())
        .arg(&busybox)
        .arg(&echo)
        .env("HOME", sandbox.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "the Python client's streams failed:\n{}",
        text(&out)
    );
    println!("{}", common::stdout(&out));
    // The asyncio flavour of the same wheel, against the busybox pod the streams left running.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/async_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(sandbox.kubeconfig())
        .arg(cluster.context())
        .arg("shell")
        .env("HOME", sandbox.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "the asyncio Python client failed:\n{}",
        text(&out)
    );
    println!("{}", common::stdout(&out));
}

/// The directory holding the installed `kubernetes` package, and so `kubernetes/e2e_test`.
fn suite_root() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import kubernetes, os; print(os.path.dirname(os.path.dirname(kubernetes.__file__)))",
        ])
        .output()
        .expect("cannot run python3");
    assert!(out.status.success(), "{}", text(&out));
    let root = PathBuf::from(common::stdout(&out).trim());
    let suite = root.join("kubernetes/e2e_test");
    assert!(
        suite.join("base.py").is_file(),
        "the Python client's e2e suite is not at {}: the PyPI packages do not carry it; \
         tests/python/fetch-e2e-suite.sh copies kubernetes/e2e_test from the client's source \
         release of the pinned version next to the installed package",
        suite.display()
    );
    let pytest = Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output();
    assert!(
        pytest.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs pytest: `{PIP_INSTALL}`"
    );
    root
}

/// Stand-ins for the public images the suite names, built locally (no registry is reachable):
/// `busybox` is Debian's static busybox; `nginx` (also as `nginx:1.15.4`) is busybox's httpd
/// serving nginx's welcome page on port 80; `python` is `tests/images/port_echo.rs`, which
/// serves what the suite's `port_server.py` serves (a TCP echo on every port named after the
/// script), so the `python -u /opt/port-server.py 1234 1235` the suite runs behaves the same;
/// `k8s.gcr.io/pause:2.0` sleeps.
fn stand_in_images(sandbox: &Sandbox) -> Vec<TestImage> {
    let html = sandbox.path().join("image-nginx_latest");
    std::fs::create_dir_all(&html).unwrap();
    std::fs::write(
        html.join("index.html"),
        "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n\
         <body><h1>Welcome to nginx!</h1></body></html>\n",
    )
    .unwrap();
    let path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n";
    let nginx = build_busybox_image(
        sandbox,
        "nginx:latest",
        &format!(
            "{path}COPY index.html /usr/share/nginx/html/index.html\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/usr/share/nginx/html\"]\n"
        ),
    );
    let out = common::docker(&["tag", "nginx:latest", "nginx:1.15.4"]);
    assert!(out.status.success(), "{}", text(&out));
    vec![
        build_busybox_image(sandbox, "busybox:latest", &format!("{path}CMD [\"sh\"]\n")),
        nginx,
        TestImage {
            tag: "nginx:1.15.4".into(),
        },
        build_port_echo_image(sandbox, "python:latest"),
        build_busybox_image(
            sandbox,
            "k8s.gcr.io/pause:2.0",
            &format!("{path}CMD [\"sleep\", \"86400\"]\n"),
        ),
    ]
}

/// The suite's pods name untagged images (`imagePullPolicy: Always`) and several of its tests
/// wait without end for them to leave Pending: check first that such a pod starts from the
/// loaded stand-in, and say why not when it does not, rather than letting pytest hang.
fn untagged_images_start(cluster: &Cluster<'_>) {
    cluster.kubectl_ok(&[
        "run",
        "pull-check",
        "--image=busybox",
        "--restart=Never",
        "--",
        "true",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state = cluster.kubectl_ok(&[
            "get",
            "pod",
            "pull-check",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}",
        ]);
        if state.starts_with("Succeeded") {
            break;
        }
        assert!(
            !state.contains("ImagePullBackOff") && std::time::Instant::now() < deadline,
            "a pod of the untagged image `busybox` (imagePullPolicy Always, as the suite's) did \
             not start from the loaded stand-in; the suite needs the runtime's pull fallback \
             (no registry is reachable here): {state}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.kubectl_ok(&["delete", "pod", "pull-check", "--wait=false"]);
}

/// The suite's manifests name `busybox`, `nginx` and `python` without a tag, so their pods pull
/// (`imagePullPolicy: Always`); with no registry reachable they start from the loaded stand-ins
/// through the runtime's pull fallback, as on an offline kind node.
#[test]
#[ignore = "needs the client's e2e suite, which no PyPI package carries: run tests/python/fetch-e2e-suite.sh first"]
fn python_client_e2e_suite() {
    require_python_client();
    common::require_docker_and_kubectl();
    let root = suite_root();
    let sandbox = Sandbox::new();
    let images = stand_in_images(&sandbox);
    let name = unique_name("pye2e");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    for image in &images {
        cluster.load_image(&image.tag);
    }
    untagged_images_start(&cluster);
    // The suite reads ~/.kube/config's (here $KUBECONFIG's) current context, and names its
    // YAML files relative to the directory above the package.
    let started = std::time::Instant::now();
    let log = sandbox.path().join("pytest.log");
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            "kubernetes/e2e_test",
        ])
        .current_dir(&root)
        .env("KUBECONFIG", sandbox.kubeconfig())
        .env("HOME", sandbox.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("cannot create the pytest log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run pytest");
    // Some of the suite's waits have no end of their own (a pod that never leaves Pending).
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for pytest") {
            break Some(status);
        }
        if started.elapsed() > SUITE_BUDGET {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        panic!("the Python client's e2e suite did not finish in {SUITE_BUDGET:?}:\n{report}");
    };
    let summary = report
        .lines()
        .rev()
        .find(|l| l.starts_with('=') && (l.contains(" passed") || l.contains(" failed")))
        .unwrap_or("(no summary line)")
        .to_string();
    println!("{summary} in {:.0?}", started.elapsed());
    assert!(
        status.success(),
        "the Python client's e2e suite failed ({summary}):\n{report}"
    );
    for bad in [" failed", " skipped", " error", " deselected", " xfailed"] {
        assert!(
            !summary.contains(bad),
            "every test must run and pass ({summary}):\n{report}"
        );
    }
}
