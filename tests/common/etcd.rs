//! A real etcd (Debian's `etcd-server` package) on loopback for one test, removed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Etcd {
    child: Child,
    pub url: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn spawn(args: &[String], dir: &Path) -> Child {
    let binary = std::env::var("KCLUSTER_TEST_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("etcd log file");
    Command::new(&binary)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need etcd ({binary}; Debian's etcd-server package, which .ci/run installs): {e}"
            )
        })
}

impl Etcd {
    /// etcd listening on 127.0.0.1.
    pub fn start() -> Etcd {
        Etcd::start_on("127.0.0.1")
    }

    /// etcd listening on `ip` (e.g. Docker's bridge gateway, which node containers reach).
    pub fn start_on(ip: &str) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir for etcd");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://{ip}:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args: Vec<String> = [
            "--name",
            "test",
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("test={peer_url}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = spawn(&args, dir.path());
        let mut etcd = Etcd {
            child,
            url,
            args,
            _dir: dir,
        };
        etcd.wait_healthy();
        etcd
    }

    /// Starts the stopped etcd again, same ports and data.
    pub fn restart(&mut self) {
        self.child = spawn(&self.args, self._dir.path());
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let health = format!("{}/health", self.url);
        let etcd = self;
        super::wait_for("etcd to answer /health", Duration::from_secs(30), || {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                panic!(
                    "etcd exited ({status}): {}",
                    std::fs::read_to_string(etcd.log()).unwrap_or_default()
                );
            }
            Command::new("curl")
                .args(["-sf", &health])
                .output()
                .is_ok_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("true")
                })
        });
    }

    pub fn log(&self) -> std::path::PathBuf {
        self._dir.path().join("etcd.log")
    }

    /// `etcdctl` against this etcd; panics with its output when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url])
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client package) runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            super::text(&out)
        );
        super::stdout(&out)
    }

    /// Stops etcd (its data stays, for `restart`).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
