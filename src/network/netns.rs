//! Network namespaces from an async process. `setns` moves only the calling thread, so a tokio
//! worker must never call it: a short-lived OS thread enters the namespace and opens a netlink
//! socket there. A netlink socket stays bound to the namespace it was opened in, so the
//! connection is then driven by the ordinary runtime while the thread is gone.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sched::CloneFlags;

/// A route netlink connection inside the network namespace at `path` (a bind-mounted
/// namespace file, or /proc/<pid>/ns/net).
pub async fn connect(path: &Path) -> Result<rtnetlink::Handle> {
    let file = File::open(path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("netns-enter".into())
        .spawn(move || {
            let result = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("cannot enter network namespace {shown}"))
                .and_then(|()| {
                    // The socket registers with the process's runtime, not with this thread.
                    let _entered = runtime.enter();
                    rtnetlink::new_connection().context("cannot open a netlink socket")
                });
            // The thread ends here; only the socket keeps the namespace.
            let _ = tx.send(result);
        })
        .context("cannot start a thread to enter a network namespace")?;
    let (connection, handle, _) = rx
        .await
        .context("the namespace thread ended without an answer")??;
    tokio::spawn(connection);
    Ok(handle)
}

/// A netlink connection in the process's own network namespace.
pub fn connect_here() -> Result<rtnetlink::Handle> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Makes a new, empty network namespace and keeps it alive by bind-mounting it on `path`
/// (what a pod sandbox does; used by `kcluster node net`). An existing one is left as it is.
pub async fn create(path: &Path) -> Result<()> {
    if is_namespace(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let target: PathBuf = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || {
            let result = (|| -> Result<()> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .context("cannot make a network namespace (unshare)")?;
                File::create(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                nix::mount::mount(
                    Some(own.as_str()),
                    &target,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .with_context(|| format!("cannot bind-mount {own} on {}", target.display()))?;
                Ok(())
            })();
            let _ = tx.send(result);
        })
        .context("cannot start a thread to make a network namespace")?;
    rx.await
        .context("the namespace thread ended without an answer")?
}

/// Unmounts and removes a namespace file made by `create`; one that is not there is fine.
pub fn remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", path.display())),
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// Whether `path` is a mounted namespace (nsfs) rather than a plain file left behind.
fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}
