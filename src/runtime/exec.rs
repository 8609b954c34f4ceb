//! Processes run inside a running container: exec probes and hooks (`capture`), and
//! `kubectl exec` (`start`, with stdin/stdout/stderr pipes or a terminal).
//!
//! The process joins the container's namespaces (mnt, pid, net, ipc, uts, cgroup), its cgroup,
//! rootfs, user and groups, capabilities, environment and working directory, through
//! libcontainer's tenant builder. That clones its caller and enters a mount namespace, which a
//! multi-threaded process cannot do, so the agent runs a single-threaded helper,
//! `kcluster node container-exec` ([`helper_main`]), per exec. The helper's stdio is the
//! process's stdio (without a terminal); with one, the container's side sends the terminal's
//! master straight to a unix socket the caller listens on. The helper waits for the process and
//! reports how it ended as one JSON line on fd 3 (so the process's own output stays untouched);
//! SIGTERM to the helper kills the process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tracing::debug;

use super::container::{self, Record, Runtime, Status};

/// Most output [`capture`] keeps (exec probes and hooks only show a little of it).
pub const OUTPUT_CAP: usize = 16 * 1024;

/// The fd on which the helper reports how the process ended.
const STATUS_FD: i32 = 3;

/// How long output may keep coming after the process exited (children can hold the pipes).
const DRAIN: Duration = Duration::from_secs(2);

pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout then stderr, capped at [`OUTPUT_CAP`] bytes.
    pub output: Vec<u8>,
}

/// The helper's report on fd 3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Report {
    /// The process ran and ended: its exit code (128 + signal when killed).
    Exited(i32),
    /// The process could not be started (bad command, container not running, …).
    Failed(String),
}

/// Runs argv inside the running container `id` (its namespaces, cgroup, rootfs, env, user) and
/// waits. Err on timeout (the process is killed) or when the container is not running.
pub async fn capture(
    runtime: &Runtime,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput> {
    let mut exec = start(
        runtime,
        id,
        argv,
        &ExecOptions {
            tty: false,
            stdin: false,
        },
    )
    .await?;
    let mut stdout = exec.stdout.take();
    let mut stderr = exec.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let run = async {
        let reading = async {
            tokio::join!(
                read_capped(&mut stdout, &mut out),
                read_capped(&mut stderr, &mut err)
            )
        };
        tokio::pin!(reading);
        let waiting = exec.wait();
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut reading => waiting.await,
            status = &mut waiting => {
                // Children of the process may hold the pipes open: take what comes soon.
                let _ = tokio::time::timeout(DRAIN, &mut reading).await;
                status
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(status) => {
            let exit_code = status?;
            let mut output = out;
            output.extend_from_slice(&err);
            output.truncate(OUTPUT_CAP);
            Ok(ExecOutput { exit_code, output })
        }
        Err(_) => {
            exec.kill();
            bail!(
                "command {argv:?} in container {id} timed out after {:.1}s",
                timeout.as_secs_f64()
            )
        }
    }
}

/// Reads a stream to its end, keeping at most [`OUTPUT_CAP`] bytes.
async fn read_capped(stream: &mut Option<Box<dyn AsyncRead + Send + Unpin>>, kept: &mut Vec<u8>) {
    let Some(s) = stream else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Run under a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// Give the process a stdin the caller writes to (else /dev/null).
    pub stdin: bool,
}

/// A process running inside a container.
pub struct Exec {
    helper: tokio::process::Child,
    status: Option<tokio::process::ChildStdout>,
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    terminal: Option<std::sync::Arc<OwnedFd>>,
    socket_dir: Option<PathBuf>,
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(dir) = self.socket_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A handle to resize an exec's terminal from another task.
#[derive(Clone)]
pub struct Resizer(Option<std::sync::Arc<OwnedFd>>);

impl Resizer {
    pub fn resize(&self, width: u16, height: u16) {
        if let Some(fd) = &self.0 {
            set_window_size(fd, width, height);
        }
    }
}

pub fn set_window_size(fd: &OwnedFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer; fd is a terminal master we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc != 0 {
        debug!(error = %std::io::Error::last_os_error(), "cannot resize the terminal");
    }
}

impl Exec {
    pub fn resizer(&self) -> Resizer {
        Resizer(self.terminal.clone())
    }

    /// Kills the process (the helper forwards SIGKILL to it).
    pub fn kill(&mut self) {
        if let Some(pid) = self.helper.id() {
            // SAFETY: sending a signal to our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process; returns its exit code (128 + signal when killed). Err when it
    /// could not be started (the message says why).
    pub async fn wait(&mut self) -> Result<i32> {
        let mut report = Vec::new();
        if let Some(mut status) = self.status.take() {
            status
                .read_to_end(&mut report)
                .await
                .context("cannot read the exec helper's report")?;
        }
        let helper = self
            .helper
            .wait()
            .await
            .context("cannot wait for the exec helper")?;
        parse_report(&report, helper)
    }
}

fn parse_report(report: &[u8], helper: std::process::ExitStatus) -> Result<i32> {
    let line = String::from_utf8_lossy(report);
    let line = line.trim();
    if line.is_empty() {
        bail!("the exec helper ended without a report ({helper})");
    }
    match serde_json::from_str::<Report>(line) {
        Ok(Report::Exited(code)) => Ok(code),
        Ok(Report::Failed(message)) => bail!("{message}"),
        Err(_) => bail!("the exec helper's report is damaged: {line:?}"),
    }
}

/// Starts argv inside the running container `id`.
pub async fn start(
    runtime: &Runtime,
    id: &str,
    argv: &[String],
    options: &ExecOptions,
) -> Result<Exec> {
    use std::process::Stdio;
    if argv.is_empty() {
        bail!("no command given to run in container {id}");
    }
    let state = runtime.state(id)?;
    if state.status != Status::Running {
        bail!("container {id} is not running");
    }
    let dir = runtime.dir(id);
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let mut command = tokio::process::Command::new(runtime.helper_path());
    command
        .args(["node", "container-exec", "--dir"])
        .arg(&dir)
        .kill_on_drop(true)
        .stderr(Stdio::piped());
    let mut listener = None;
    let mut socket_dir = None;
    if options.tty {
        // Short, private path: unix socket paths are limited to 108 bytes.
        let sdir = PathBuf::from(format!(
            "/run/kcluster/exec/{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ));
        std::fs::create_dir_all(&sdir)
            .with_context(|| format!("cannot create {}", sdir.display()))?;
        let path = sdir.join("console.sock");
        socket_dir = Some(sdir);
        listener = Some(
            tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?,
        );
        command.arg("--tty").arg("--console-socket").arg(&path);
        command.stdin(Stdio::null()).stdout(Stdio::null());
    } else {
        command
            .stdin(if options.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped());
    }
    command.arg("--").args(argv);
    let raw_status_w = status_w.as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl run: both async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if raw_status_w == STATUS_FD {
                if libc::fcntl(STATUS_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw_status_w, STATUS_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let helper = command
        .spawn()
        .context("cannot start the exec helper (kcluster node container-exec)")?;
    drop(status_w);
    let status = tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(status_r))
        .context("cannot watch the exec helper's report")?;
    let mut exec = Exec {
        status: Some(status),
        stdin: None,
        stdout: None,
        stderr: None,
        terminal: None,
        socket_dir,
        helper,
    };
    // The helper's own stderr is the process's stderr without a terminal; with one, it only
    // carries the helper's complaints, which the report repeats.
    let stderr = exec.helper.stderr.take();
    if let Some(listener) = listener {
        let master = tokio::select! {
            accepted = receive_terminal(&listener) => accepted,
            ended = exec.wait() => match ended {
                Ok(code) => Err(anyhow::anyhow!("the process ended (exit code {code}) before its terminal was set up")),
                Err(e) => Err(e),
            },
        };
        let master = std::sync::Arc::new(master?);
        let reader = dup_file(&master)?;
        let writer = dup_file(&master)?;
        exec.terminal = Some(master);
        exec.stdout = Some(Box::new(TerminalReader(tokio::fs::File::from_std(reader))));
        if options.stdin {
            exec.stdin = Some(Box::new(tokio::fs::File::from_std(writer)));
        }
        drop(stderr);
    } else {
        exec.stdin = exec
            .helper
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>);
        exec.stdout = exec
            .helper
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        exec.stderr = stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
    }
    Ok(exec)
}

fn dup_file(fd: &OwnedFd) -> Result<std::fs::File> {
    let copy = fd.try_clone().context("cannot duplicate the terminal")?;
    Ok(std::fs::File::from(copy))
}

/// Reads a terminal master; the end of the terminal (EIO once every slave is closed) is the
/// end of the stream.
struct TerminalReader(tokio::fs::File);

impl AsyncRead for TerminalReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Accepts the container side's connection and receives the terminal master it sends.
async fn receive_terminal(listener: &tokio::net::UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .await
        .context("no terminal came from the container")?;
    let stream = stream
        .into_std()
        .context("cannot take the console socket")?;
    stream
        .set_nonblocking(false)
        .context("cannot take the console socket")?;
    tokio::task::spawn_blocking(move || recv_fd(&stream))
        .await
        .context("the terminal receiver failed")?
}

/// One file descriptor sent with SCM_RIGHTS.
pub fn recv_fd(stream: &std::os::unix::net::UnixStream) -> Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut data = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("cannot receive the terminal")?;
    for cmsg in msg.cmsgs().context("cannot read the terminal message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd in our table; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    bail!("the container sent no terminal")
}

/// Arguments of `kcluster node container-exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct HelperArgs {
    /// The container's directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Run under a terminal whose master goes to --console-socket.
    #[arg(long)]
    pub tty: bool,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Extra environment (NAME=VALUE) over the container's.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `kcluster node container-exec`: runs before any thread exists. Returns the process's exit
/// code; the report goes to fd 3 when the caller opened it, else to stderr.
pub fn helper_main(args: &HelperArgs) -> i32 {
    let mut report_to = status_file();
    let (report, code) = match run_helper(args) {
        Ok(code) => (Report::Exited(code), code),
        Err(e) => (Report::Failed(format!("{e:#}")), 126),
    };
    let line = serde_json::to_string(&report).unwrap_or_default();
    use std::io::Write;
    match &mut report_to {
        Some(f) => {
            let _ = writeln!(f, "{line}");
        }
        None => {
            if let Report::Failed(message) = &report {
                eprintln!("error: {message}");
            }
        }
    }
    code
}

/// fd 3, if the caller gave one; marked close-on-exec so the process does not inherit it.
fn status_file() -> Option<std::fs::File> {
    // SAFETY: F_GETFD only queries the fd.
    if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: setting FD_CLOEXEC on an fd that exists.
    unsafe {
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: fd 3 is open (checked above) and handed to us by our caller to own.
    Some(unsafe { std::fs::File::from_raw_fd(STATUS_FD) })
}

fn run_helper(args: &HelperArgs) -> Result<i32> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let dir = &args.dir;
    let record: Record = serde_json::from_slice(
        &std::fs::read(dir.join("container.json"))
            .with_context(|| format!("no container at {}", dir.display()))?,
    )
    .context("container.json is damaged")?;
    let id = record.config.id.clone();
    let state = container::read_state(dir)?;
    if state.status != Status::Running {
        bail!("container {id} is not running");
    }
    if args.tty != args.console_socket.is_some() {
        bail!("--tty and --console-socket go together");
    }
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("bundle/config.json")).context("the bundle has no config.json")?,
    )
    .context("the bundle's config.json is damaged")?;
    let mut process = spec["process"].clone();
    if !process.is_object() {
        bail!("the container's spec has no process");
    }
    process["args"] = serde_json::json!(args.command);
    process["terminal"] = serde_json::json!(args.tty);
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    for extra in &args.env {
        let Some((name, _)) = extra.split_once('=') else {
            bail!("--env {extra:?} is not NAME=VALUE");
        };
        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(name));
        env.push(extra.clone());
    }
    process["env"] = serde_json::json!(env);
    let process_path = dir.join(format!(
        "exec-{}.json",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    super::images::write_atomic(
        &process_path,
        &serde_json::to_vec(&process).context("cannot encode the process")?,
    )?;
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&record.run_root)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .map(|b| b.with_console_socket(args.console_socket.as_deref()))
        .and_then(|b| {
            b.as_tenant()
                .with_process(Some(&process_path))
                .with_detach(args.tty)
                .build()
                .map_err(|e| anyhow::anyhow!("{}", chain(&e)))
        });
    let _ = std::fs::remove_file(&process_path);
    let pid = built
        .with_context(|| format!("cannot run {:?} in container {id}", args.command))?
        .as_raw();
    debug!(%id, pid, "exec started");
    wait_forwarding_signals(pid)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Waits for the process; SIGTERM, SIGINT or SIGHUP to the helper kill it.
fn wait_forwarding_signals(pid: i32) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGHUP);
    mask.thread_block().context("cannot block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot watch signals")?;
    let pidfd = container::pidfd_open(pid).context("cannot watch the process")?;
    let mut killed = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll failed");
        }
        if fds[1].revents != 0 {
            while let Ok(Some(_)) = signals.read_signal() {}
            if !killed {
                killed = true;
                let _ = container::pidfd_send_signal(&pidfd, libc::SIGKILL);
            }
        }
        if fds[0].revents != 0 {
            use nix::sys::wait::{WaitStatus, waitpid};
            return match waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => Ok(128 + signal as i32),
                Ok(other) => bail!("unexpected wait status {other:?}"),
                Err(e) => Err(e).context("cannot wait for the process"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn reports_round_trip_and_bad_ones_say_so() {
        let ok = serde_json::to_string(&Report::Exited(3)).unwrap();
        assert_eq!(
            parse_report(ok.as_bytes(), std::process::ExitStatus::from_raw(0)).unwrap(),
            3
        );
        let failed = serde_json::to_string(&Report::Failed("no such file".into())).unwrap();
        let err = parse_report(failed.as_bytes(), std::process::ExitStatus::from_raw(0))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no such file");
        assert!(parse_report(b"", std::process::ExitStatus::from_raw(0)).is_err());
    }
}
