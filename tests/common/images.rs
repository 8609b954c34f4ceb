//! Test images built locally: FROM scratch plus Debian's static busybox (never pulled).

use super::{Sandbox, docker, text};

/// A test image removed when the test ends.
pub struct TestImage {
    pub tag: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// Builds `tag` FROM scratch with /bin/busybox and its applets, then `extra` Dockerfile lines.
pub fn build_busybox_image(sandbox: &Sandbox, tag: &str, extra: &str) -> TestImage {
    let context = context_for(sandbox, tag);
    build_busybox_image_in(&context, tag, extra)
}

/// `build_busybox_image` in a build context that may already hold other files.
fn build_busybox_image_in(context: &std::path::Path, tag: &str, extra: &str) -> TestImage {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "these tests need Debian's static busybox at /bin/busybox: apt-get install -y busybox-static (.ci/run installs it)"
    );
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    docker_build(
        context,
        tag,
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{extra}"
        ),
    )
}

/// The build context of `tag`'s image in the sandbox.
fn context_for(sandbox: &Sandbox, tag: &str) -> std::path::PathBuf {
    let context = sandbox
        .path()
        .join(format!("image-{}", tag.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&context).unwrap();
    context
}

/// Writes `dockerfile` into `context` and builds `tag` from it; the image goes when the test ends.
fn docker_build(context: &std::path::Path, tag: &str, dockerfile: &str) -> TestImage {
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    let image = TestImage {
        tag: tag.to_string(),
    };
    let out = docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    assert!(out.status.success(), "docker build failed: {}", text(&out));
    image
}

/// Compiles a standard-library-only test program from tests/images/ with rustc as a static
/// binary into `tag`'s build context, then builds `tag` FROM scratch with it at /`binary`.
fn build_static_program_image(
    sandbox: &Sandbox,
    tag: &str,
    source: &str,
    binary: &str,
) -> TestImage {
    let context = context_for(sandbox, tag);
    compile_test_program(source, &context, binary);
    docker_build(
        &context,
        tag,
        &format!("FROM scratch\nCOPY {binary} /{binary}\n"),
    )
}

/// Builds `tag` FROM scratch with the test gRPC health server (tests/images/grpc_health_server.rs,
/// compiled here by rustc as a static binary) at /grpc-health-server.
pub fn build_grpc_health_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    build_static_program_image(sandbox, tag, "grpc_health_server", "grpc-health-server")
}

/// Builds `tag` FROM scratch with the DNS load generator (tests/images/dns_load.rs) at
/// /dns-load: `dns-load SERVER:PORT [--sockets N] [--seconds D] NAME...` prints one JSON line.
pub fn build_dns_load_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    build_static_program_image(sandbox, tag, "dns_load", "dns-load")
}

/// Builds `tag` FROM scratch with the keep-alive HTTP server (tests/images/keepalive_http.rs)
/// at /keepalive-http: `keepalive-http PORT` serves /small (100 B) and /1m (1 MiB).
#[allow(dead_code)]
pub fn build_keepalive_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    build_static_program_image(sandbox, tag, "keepalive_http", "keepalive-http")
}

/// Compiles `tests/images/<name>.rs` with rustc into a static binary at `dir/<binary>`.
fn compile_test_program(name: &str, dir: &std::path::Path, binary: &str) {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(format!("{name}.rs"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(dir.join(binary))
        .arg(&source)
        .output()
        .expect("cannot run rustc");
    assert!(out.status.success(), "cannot build {name}: {}", text(&out));
}

/// A busybox image (see `build_busybox_image`) that also has `/bin/net-tool`
/// (tests/images/net_tool.rs): a TCP/UDP server that answers with its hostname and the client's
/// address, and a UDP client.
pub fn build_net_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    let context = context_for(sandbox, tag);
    compile_test_program("net_tool", &context, "net-tool");
    build_busybox_image_in(&context, tag, "COPY net-tool /bin/net-tool\n")
}

/// A busybox image (httpd for the ingress tests' backends) that also has `/bin/ws-echo`
/// (tests/images/ws_echo.rs): a WebSocket echo server.
#[allow(dead_code)]
pub fn build_web_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    let context = context_for(sandbox, tag);
    compile_test_program("ws_echo", &context, "ws-echo");
    build_busybox_image_in(&context, tag, "COPY ws-echo /bin/ws-echo\n")
}

/// The stand-in `python` image of the Python client's e2e suite: FROM scratch with
/// tests/images/port_echo.rs as /usr/local/bin/python, which serves what the suite's
/// `port_server.py` serves (a TCP echo on each port given after the script).
#[allow(dead_code)]
pub fn build_port_echo_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    let context = context_for(sandbox, tag);
    compile_test_program("port_echo", &context, "python");
    docker_build(
        &context,
        tag,
        "FROM scratch\nCOPY python /usr/local/bin/python\nENV PATH=/usr/local/bin:/usr/bin:/bin\n",
    )
}

/// Builds `tag` FROM scratch with the admission webhook server (tests/images/admission-webhook,
/// a package of its own since it needs TLS) at /admission-webhook. Cargo builds it into
/// `test-images/` of this build's target directory: the `cargo test` running these tests holds
/// the lock of the target directory itself.
pub fn build_admission_webhook_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    let context = context_for(sandbox, tag);
    // <target>/x86_64-unknown-linux-gnu/debug/kcluster
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_kcluster"))
        .ancestors()
        .nth(3)
        .expect("the target directory")
        .join("test-images");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/images/admission-webhook"
        ))
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--locked",
            "--offline",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .expect("cannot run cargo");
    assert!(
        out.status.success(),
        "cannot build tests/images/admission-webhook: {}",
        text(&out)
    );
    let executable = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact" && m["target"]["name"] == "admission-webhook"
        })
        .find_map(|m| m["executable"].as_str().map(str::to_string))
        .expect("cargo named no admission-webhook executable");
    std::fs::copy(&executable, context.join("admission-webhook")).unwrap();
    docker_build(
        &context,
        tag,
        "FROM scratch\nCOPY admission-webhook /admission-webhook\nENTRYPOINT [\"/admission-webhook\"]\n",
    )
}
