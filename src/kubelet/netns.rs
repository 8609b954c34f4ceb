//! Dialing from inside a pod's network namespace: a short-lived thread enters the namespace,
//! connects, and hands the connected socket back (a socket keeps the namespace it was made
//! in). Probes and hooks use this, so they reach the pod at its own address or at 127.0.0.1
//! whether or not the node can route to the pod network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub async fn connect(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream> {
    let netns: PathBuf = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-dial".into())
        .spawn(move || {
            let result = (|| -> Result<std::net::TcpStream> {
                let file = std::fs::File::open(&netns)
                    .with_context(|| format!("cannot open {}", netns.display()))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("cannot enter the pod's network namespace")?;
                let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
                    .with_context(|| format!("dial tcp {addr}"))?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })();
            let _ = tx.send(result);
        })
        .context("cannot start a thread")?;
    let stream = rx.await.context("the dialing thread died")??;
    Ok(tokio::net::TcpStream::from_std(stream)?)
}
