//! The pod sandbox: the network, IPC and UTS namespaces a pod's containers share (and a PID
//! namespace with shareProcessNamespace), kept alive as bind-mounted namespace files under
//! `/run/kcluster/pods/<uid>/ns/` instead of a pause container.
//!
//! `unshare` changes the calling process, and a multi-threaded tokio process must not be the
//! one that does it, so `kcluster node pod-sandbox create` (a short single-threaded helper)
//! makes the namespaces, brings loopback up, sets the hostname and bind-mounts the namespace
//! files. A shared PID namespace needs a living first process: the helper forks one that only
//! reaps orphans (what a pause container does) and leaves its pid in `pause.pid`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracing::{debug, warn};

/// Where pod sandboxes live (tmpfs: gone with the node container, as the namespaces are).
pub const PODS_RUN_DIR: &str = "/run/kcluster/pods";

pub fn run_dir(pod_uid: &str) -> PathBuf {
    std::env::var_os("KCLUSTER_PODS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PODS_RUN_DIR))
        .join(pod_uid)
}

/// What `kcluster node pod-sandbox create` is asked to make.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// The pod's directory (namespaces go to DIR/ns/).
    pub dir: PathBuf,
    /// The pod's hostname (ignored with --host-network: the node's is kept).
    #[arg(long)]
    pub hostname: String,
    /// Use the node's network and UTS namespaces (hostNetwork).
    #[arg(long)]
    pub host_network: bool,
    /// Use the node's IPC namespace (hostIPC).
    #[arg(long)]
    pub host_ipc: bool,
    /// Give the pod one PID namespace (shareProcessNamespace).
    #[arg(long)]
    pub share_pid: bool,
}

/// The namespace files of a pod whose sandbox exists.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub dir: PathBuf,
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
    pub pid: Option<PathBuf>,
}

impl Sandbox {
    pub fn at(dir: &Path, share_pid: bool) -> Sandbox {
        let ns = dir.join("ns");
        Sandbox {
            dir: dir.to_path_buf(),
            net: ns.join("net"),
            ipc: ns.join("ipc"),
            uts: ns.join("uts"),
            pid: share_pid.then(|| ns.join("pid")),
        }
    }

    /// Whether every namespace file is still mounted (a node restart empties /run).
    pub fn is_complete(&self) -> bool {
        let mounts = mount_points();
        [&self.net, &self.ipc, &self.uts]
            .into_iter()
            .chain(self.pid.as_ref())
            .all(|p| mounts.iter().any(|m| Path::new(m) == p))
            && self.pid.as_ref().is_none_or(|_| pause_alive(&self.dir))
    }
}

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// Makes the sandbox through the helper; idempotent (a complete sandbox is kept).
pub async fn create(args: &CreateArgs) -> Result<Sandbox> {
    let sandbox = Sandbox::at(&args.dir, args.share_pid);
    if sandbox.is_complete() {
        return Ok(sandbox);
    }
    remove(&args.dir).await;
    let exe = std::env::current_exe().context("cannot find the kcluster binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["node", "pod-sandbox"])
        .arg(&args.dir)
        .args(["--hostname", &args.hostname]);
    if args.host_network {
        cmd.arg("--host-network");
    }
    if args.host_ipc {
        cmd.arg("--host-ipc");
    }
    if args.share_pid {
        cmd.arg("--share-pid");
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("cannot run the pod sandbox helper")?;
    if !out.status.success() {
        bail!(
            "cannot create the pod sandbox: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(sandbox)
}

/// Unmounts the namespace files, stops the PID namespace's first process and removes the
/// directory. Safe on a sandbox that is partly or not there.
pub async fn remove(dir: &Path) {
    let dir = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || remove_now(&dir)).await;
}

fn remove_now(dir: &Path) {
    use nix::mount::{MntFlags, umount2};
    if let Some(pid) = read_pause_pid(dir)
        && pause_alive(dir)
        && let Some(fd) = crate::runtime::container::pidfd_open(pid)
    {
        let _ = crate::runtime::container::pidfd_send_signal(&fd, libc::SIGKILL);
        // It was reparented to us (PID 1 of the node) when the helper exited: reap it.
        for _ in 0..50 {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
    for name in ["net", "ipc", "uts", "pid"] {
        let path = dir.join("ns").join(name);
        if path.exists() {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove the pod sandbox directory");
    }
}

fn read_pause_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pause.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pause process is alive and still the one whose PID namespace is mounted (not a reused pid).
fn pause_alive(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(pid) = read_pause_pid(dir) else {
        return false;
    };
    let (Ok(live), Ok(mounted)) = (
        std::fs::metadata(format!("/proc/{pid}/ns/pid")),
        std::fs::metadata(dir.join("ns/pid")),
    ) else {
        return false;
    };
    live.ino() == mounted.ino() && live.dev() == mounted.dev()
}

// ---- the helper side: runs single-threaded, before any async runtime exists ----

/// `kcluster node pod-sandbox DIR --hostname H [...]`.
pub fn helper_main(args: &CreateArgs) -> Result<()> {
    use nix::sched::{CloneFlags, unshare};
    let ns = args.dir.join("ns");
    std::fs::create_dir_all(&ns).with_context(|| format!("cannot create {}", ns.display()))?;
    let mut flags = CloneFlags::empty();
    if !args.host_network {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    if !args.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if !flags.is_empty() {
        unshare(flags).context("cannot create the pod's namespaces")?;
    }
    if !args.host_network {
        nix::unistd::sethostname(&args.hostname)
            .with_context(|| format!("cannot set the hostname {:?}", args.hostname))?;
        loopback_up().context("cannot bring the pod's loopback interface up")?;
    }
    for name in ["net", "ipc", "uts"] {
        bind_namespace(&format!("/proc/self/ns/{name}"), &ns.join(name))?;
    }
    if args.share_pid {
        start_pause(&args.dir)?;
    }
    debug!(dir = %args.dir.display(), "pod sandbox created");
    Ok(())
}

fn bind_namespace(source: &str, target: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    std::fs::File::create(target).with_context(|| format!("cannot create {}", target.display()))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind-mount {source} on {}", target.display()))
}

fn loopback_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("cannot open a socket")?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: a valid socket and a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
        }
    }
    Ok(())
}

/// Forks the first process of a new PID namespace: it reaps orphans until it is killed.
fn start_pause(dir: &Path) -> Result<()> {
    use nix::sched::{CloneFlags, unshare};
    use nix::unistd::{ForkResult, fork};
    unshare(CloneFlags::CLONE_NEWPID).context("cannot create the pod's PID namespace")?;
    // SAFETY: this helper is single-threaded; the child only makes async-signal-safe calls.
    match unsafe { fork() }.context("cannot fork the pod's first process")? {
        ForkResult::Child => pause_loop(),
        ForkResult::Parent { child } => {
            let pid = child.as_raw();
            bind_namespace(&format!("/proc/{pid}/ns/pid"), &dir.join("ns/pid"))?;
            std::fs::write(dir.join("pause.pid"), pid.to_string())
                .context("cannot record the pod's first process")?;
            Ok(())
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

fn pause_loop() -> ! {
    // SAFETY: plain syscalls in a freshly forked single-threaded child.
    unsafe {
        libc::setsid();
        for fd in 0..3 {
            libc::close(fd);
        }
        libc::signal(libc::SIGCHLD, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::pause();
        }
    }
}
