//! Debian's `docker-registry` (the CNCF distribution registry) started by a test on the host,
//! and the few Docker steps around it. Nodes reach it through their Docker network's gateway,
//! a private address, so the node agent speaks plain HTTP to it as it does to local registries.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{docker, stdout, text};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry process on 0.0.0.0:<port>, killed when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Starts a registry storing under `dir`, behind htpasswd Basic auth when given.
pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
    assert!(
        Path::new(REGISTRY_BIN).exists(),
        "this test needs Debian's registry at {REGISTRY_BIN}: apt-get install -y docker-registry (.ci/run installs it)"
    );
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let port = free_port();
    let auth = match htpasswd {
        Some(path) => format!(
            "auth:\n  htpasswd:\n    realm: kcluster-test\n    path: {}\n",
            path.display()
        ),
        None => String::new(),
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 0.0.0.0:{port}\n{auth}",
        dir.join("storage").display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start docker-registry");
    let registry = Registry { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    registry
}

/// `docker tag` + `docker push` (the engine speaks plain HTTP to 127/8); returns the pushed
/// manifest's digest.
pub fn push(docker_config: &Path, local: &str, remote: &str) -> String {
    let out = docker(&["tag", local, remote]);
    assert!(out.status.success(), "docker tag failed: {}", text(&out));
    let out = Command::new("docker")
        .arg("--config")
        .arg(docker_config)
        .args(["push", remote])
        .output()
        .expect("cannot run docker");
    assert!(out.status.success(), "docker push failed: {}", text(&out));
    let pushed = stdout(&out);
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:") && w.len() == 71)
        .unwrap_or_else(|| panic!("no digest in the push output: {pushed}"))
        .to_string();
    let _ = docker(&["rmi", remote]);
    digest
}

/// The cluster network's gateway: the host as the nodes see it.
pub fn gateway(cluster: &str) -> String {
    let out = docker(&[
        "network",
        "inspect",
        &format!("kcluster-{cluster}"),
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    assert!(
        out.status.success(),
        "network inspect failed: {}",
        text(&out)
    );
    let ip = stdout(&out).trim().to_string();
    assert!(!ip.is_empty(), "the cluster network has no gateway");
    ip
}
