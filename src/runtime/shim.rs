//! `kcluster node container-run <dir>`: the helper process that runs one container.
//!
//! It must be single-threaded when it calls libcontainer (which clones the calling process),
//! so it runs before any async runtime or thread exists. It mounts the overlay rootfs, has
//! libcontainer create and start the container with stdout/stderr on pipes, copies those into
//! the CRI log file, waits for the container's first process (a pidfd in the same poll loop),
//! records how it ended in `state.json` *before* reaping it (so [`super::container::Runtime::signal`]
//! can trust a pid while the state says running), then removes the cgroup and unmounts.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tracing::{debug, error, info, warn};

use super::attach;
use super::cgroups;
use super::container::{self, PidFd, Record, START_FAILURE_EXIT_CODE, State, Status};
use super::logs::{LogWriter, Stream};

/// The unix socket in the container's directory through which `kubectl attach` reaches the
/// container's stdin and terminal (see [`super::attach`]).
pub const ATTACH_SOCKET: &str = attach::SOCKET;

/// How long the container's side has to send its terminal once it is created.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

/// How long output may keep coming after the first process exited (its children may hold the
/// pipes; in a PID namespace the kernel kills them right away).
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the container described in `dir` to its end. Errors are also recorded in its state.
pub fn run(dir: &Path) -> Result<()> {
    let began = std::time::Instant::now();
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no container directory {}", dir.display()))?;
    let data = std::fs::read(dir.join("container.json"))
        .with_context(|| format!("{} has no container.json", dir.display()))?;
    let record: Record = serde_json::from_slice(&data).context("container.json is damaged")?;
    let mut state = container::read_state(&dir)?;
    if state.status != Status::Created || state.helper_pid.is_some() {
        bail!("container {} was already started", record.config.id);
    }
    state.helper_pid = Some(std::process::id());
    container::write_state(&dir, &state)?;
    // A terminal hang-up or ctrl-C in whoever started us must not orphan the container.
    // SAFETY: setting signal dispositions to ignore before any thread exists.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let rootfs = dir.join("bundle/rootfs");
    let result = run_container(&dir, &record, &rootfs, &mut state, began);
    if let Err(e) = &result {
        error!(id = %record.config.id, error = format!("{e:#}"), "container failed");
        if state.status != Status::Exited {
            state.status = Status::Exited;
            state.exit_code = Some(START_FAILURE_EXIT_CODE);
            state.error = Some(format!("{e:#}"));
            state.finished_at = Some(jiff::Timestamp::now().to_string());
            state.pid = None;
        }
    }
    if container::is_mount_point(&rootfs) {
        container::unmount(&rootfs);
    }
    container::write_state(&dir, &state)?;
    result
}

fn run_container(
    dir: &Path,
    record: &Record,
    rootfs: &Path,
    state: &mut State,
    began: std::time::Instant,
) -> Result<()> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    cgroups::prepare()?;
    mount_rootfs(dir, record, rootfs)?;
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("bundle/config.json")).context("the bundle has no config.json")?,
    )
    .context("the bundle's config.json is damaged")?;
    if let Some(cwd) = spec["process"]["cwd"].as_str() {
        make_working_dir(rootfs, cwd);
    }
    let mut log = LogWriter::create(&dir.join("container.log"))?;
    let id = record.config.id.clone();
    let ms = |since: std::time::Instant| (since.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let setup_ms = ms(began);
    let building = std::time::Instant::now();
    let builder = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&record.run_root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let io = if record.config.tty {
        Io::terminal(dir, builder)?
    } else {
        Io::pipes(dir, &record.config, builder)?
    };
    let Io {
        builder,
        outputs,
        mut console,
        attach,
        err_r,
    } = io;
    let lc = builder
        .as_init(dir.join("bundle"))
        .with_systemd(false)
        .with_detach(true)
        .build();
    let mut lc = match lc {
        Ok(lc) => lc,
        Err(e) => {
            // libcontainer's init process logs the precise cause on the container's stderr.
            if let Some(err_r) = err_r {
                let detail = drain_now(err_r);
                if !detail.trim().is_empty() {
                    error!(output = %detail.trim(), "container init output");
                }
            }
            bail!("cannot create the container: {}", chain(&e));
        }
    };
    // The builder held the pipes' write ends; it is gone, so only the container has them now.
    let pid = lc
        .pid()
        .map(|p| p.as_raw())
        .context("libcontainer reported no pid")?;
    let build_ms = ms(building);
    let starting = std::time::Instant::now();
    state.pid = Some(pid);
    container::write_state(dir, state)?;
    let pidfd = container::pidfd_open(pid).context("cannot watch the container's process")?;
    let (outputs, mut attach) = match console.take() {
        Some(console) => match console.receive(&record.config) {
            Ok(io) => io,
            Err(e) => {
                if let Ok(kill) = libcontainer::signal::Signal::try_from(libc::SIGKILL) {
                    let _ = lc.kill(kill, true);
                }
                let _ = lc.delete(true);
                return Err(e);
            }
        },
        None => (outputs, attach),
    };
    if let Err(e) = lc.start() {
        if let Ok(kill) = libcontainer::signal::Signal::try_from(libc::SIGKILL) {
            let _ = lc.kill(kill, true);
        }
        let _ = lc.delete(true);
        bail!("cannot start the container: {}", chain(&e));
    }
    state.status = Status::Running;
    state.started_at = Some(jiff::Timestamp::now().to_string());
    container::write_state(dir, state)?;
    // Where the helper's part of a container start goes (the pod start latency benchmark).
    info!(%id, pid, setup_ms, build_ms, start_ms = ms(starting), "container started");

    let (code, signal) = pump(&mut log, outputs, &pidfd, pid, attach.as_mut())?;
    if let Some(a) = attach {
        a.finish();
    }
    let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
    state.oom_killed = cgroups::oom_killed(&record.cgroup_path);
    state.status = Status::Exited;
    state.exit_code = Some(code);
    state.signal = signal;
    state.finished_at = Some(jiff::Timestamp::now().to_string());
    container::write_state(dir, state)?;
    // Now that the exit is on record, the pid may go.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    info!(%id, code, ?signal, oom = state.oom_killed, "container exited");
    if let Err(e) = lc.delete(true) {
        warn!(%id, error = %chain(&e), "cannot clean up the container's cgroup and state");
    }
    Ok(())
}

/// An error and its causes on one line (libcontainer's errors nest the useful part).
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

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")
}

/// Mounts the image's layers plus the container's writable layer at `rootfs`. Lower dirs are
/// named relative to the layers directory (we chdir there) so that many layers fit in the
/// page-sized mount options.
fn mount_rootfs(dir: &Path, record: &Record, rootfs: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    if container::is_mount_point(rootfs) {
        container::unmount(rootfs);
    }
    let mut lowers: Vec<String> = record
        .lower_dirs
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if lowers.is_empty() {
        // An image without layers: overlayfs still needs a lower directory.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty)?;
        lowers.push(empty.to_string_lossy().into_owned());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    if options.len() >= 4000 {
        bail!(
            "the image has too many layers ({}) for one overlay mount; flatten it (e.g. a multi-stage build)",
            record.lower_dirs.len()
        );
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    std::env::set_current_dir(&record.layers_dir)
        .with_context(|| format!("cannot enter {}", record.layers_dir.display()))?;
    let mounted = mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    );
    let _ = std::env::set_current_dir(here);
    mounted.with_context(|| {
        format!(
            "cannot mount the overlay rootfs at {} (options {options})",
            rootfs.display()
        )
    })?;
    debug!(rootfs = %rootfs.display(), layers = record.lower_dirs.len(), "rootfs mounted");
    Ok(())
}

/// Creates the working directory in the rootfs if the image lacks it (as Docker and containerd
/// do), unless a symlink is on the way (then the container's own view decides).
fn make_working_dir(rootfs: &Path, cwd: &str) {
    let mut path = rootfs.to_path_buf();
    for part in cwd.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return;
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return,
            Err(_) => {
                if let Err(e) = std::fs::create_dir(&path) {
                    warn!(path = %path.display(), error = %e, "cannot create the working directory");
                    return;
                }
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).context("fcntl")?;
    fcntl(
        fd.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .context("fcntl")?;
    Ok(())
}

/// Output streams to copy into the log.
type Outputs = Vec<(OwnedFd, Stream)>;

/// The container's stdio as the helper sets it up before creating the container.
struct Io {
    builder: libcontainer::container::builder::ContainerBuilder,
    /// Output to copy into the log (empty until the terminal arrives).
    outputs: Outputs,
    /// A terminal still to be received from the container's side.
    console: Option<Console>,
    attach: Option<attach::Server>,
    /// The container's stderr, where libcontainer's init reports why it failed.
    err_r: Option<OwnedFd>,
}

impl Io {
    /// stdout and stderr on pipes; stdin a pipe fed through the attach socket, or /dev/null.
    fn pipes(
        dir: &Path,
        config: &super::spec::ContainerConfig,
        builder: libcontainer::container::builder::ContainerBuilder,
    ) -> Result<Io> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, attach): (OwnedFd, _) = if config.stdin {
            let (in_r, in_w) = pipe()?;
            let server = attach::Server::new(listen(dir)?, Some(in_w), None, config.stdin_once)
                .context("cannot set up the attach socket")?;
            (in_r, Some(server))
        } else {
            let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
            (null.into(), None)
        };
        let err_keep = err_r.try_clone().context("cannot duplicate a pipe")?;
        Ok(Io {
            builder: builder
                .with_stdin(stdin)
                .with_stdout(out_w)
                .with_stderr(err_w),
            outputs: vec![(out_r, Stream::Stdout), (err_keep, Stream::Stderr)],
            console: None,
            attach,
            err_r: Some(err_r),
        })
    }

    /// A terminal: the container's side makes it and sends its master to a console socket.
    fn terminal(
        dir: &Path,
        builder: libcontainer::container::builder::ContainerBuilder,
    ) -> Result<Io> {
        // Unix socket paths are short (108 bytes); container directories can be longer.
        let socket_dir = PathBuf::from(format!(
            "/run/kcluster/console/{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ));
        std::fs::create_dir_all(&socket_dir)
            .with_context(|| format!("cannot create {}", socket_dir.display()))?;
        let path = socket_dir.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        Ok(Io {
            builder: builder.with_console_socket(Some(&path)),
            outputs: Vec::new(),
            console: Some(Console {
                listener,
                socket_dir,
                dir: dir.to_path_buf(),
            }),
            attach: None,
            err_r: None,
        })
    }
}

/// Where the container's terminal master arrives.
struct Console {
    listener: std::os::unix::net::UnixListener,
    socket_dir: PathBuf,
    dir: PathBuf,
}

impl Console {
    /// Takes the master; returns it as the log's one output (a terminal merges stdout and
    /// stderr, as Kubernetes logs it) and the attach server that shares it.
    fn receive(
        self,
        config: &super::spec::ContainerConfig,
    ) -> Result<(Outputs, Option<attach::Server>)> {
        let accepted = accept_within(&self.listener, CONSOLE_WAIT);
        let _ = std::fs::remove_dir_all(&self.socket_dir);
        let stream = accepted?;
        stream
            .set_read_timeout(Some(CONSOLE_WAIT))
            .context("cannot set up the console socket")?;
        let master = super::exec::recv_fd(&stream)?;
        let reader = master
            .try_clone()
            .context("cannot duplicate the terminal")?;
        let stdin = if config.stdin {
            Some(
                master
                    .try_clone()
                    .context("cannot duplicate the terminal")?,
            )
        } else {
            None
        };
        // Attach clients get the terminal's output and may resize it, with or without stdin.
        let server =
            attach::Server::new(listen(&self.dir)?, stdin, Some(master), config.stdin_once)
                .context("cannot set up the attach socket")?;
        Ok((vec![(reader, Stream::Stdout)], Some(server)))
    }
}

fn accept_within(
    listener: &std::os::unix::net::UnixListener,
    wait: Duration,
) -> Result<std::os::unix::net::UnixStream> {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as i32) };
    if n <= 0 {
        bail!(
            "the container did not send its terminal within {}s",
            wait.as_secs()
        );
    }
    let (stream, _) = listener
        .accept()
        .context("cannot accept the container's terminal")?;
    Ok(stream)
}

fn listen(dir: &Path) -> Result<std::os::unix::net::UnixListener> {
    let socket = dir.join(ATTACH_SOCKET);
    let _ = std::fs::remove_file(&socket);
    std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))
}

/// Copies output to the log (and a terminal's to attach clients) until the process has
/// exited and the output is drained; serves attach clients meanwhile. Returns (exit code,
/// signal) without reaping the process.
fn pump(
    log: &mut LogWriter,
    outputs: Outputs,
    pidfd: &PidFd,
    pid: i32,
    mut attach: Option<&mut attach::Server>,
) -> Result<(i32, Option<i32>)> {
    let mut streams: Vec<(Option<std::fs::File>, Stream)> = Vec::new();
    for (fd, stream) in outputs {
        set_nonblocking(&fd)?;
        streams.push((Some(std::fs::File::from(fd)), stream));
    }
    let mut exited: Option<(i32, Option<i32>, Instant)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut which: Vec<usize> = Vec::new();
        for (i, (file, _)) in streams.iter().enumerate() {
            if let Some(f) = file {
                fds.push(libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        let pid_slot = fds.len();
        if exited.is_none() {
            fds.push(libc::pollfd {
                fd: pidfd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if fds.is_empty() {
            break;
        }
        let attach_from = fds.len();
        if exited.is_none()
            && let Some(a) = attach.as_deref()
        {
            fds.extend(a.poll_fds());
        }
        let timeout_ms = match exited {
            Some((_, _, at)) => DRAIN.saturating_sub(at.elapsed()).as_millis() as i32,
            None => -1,
        };
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll failed");
        }
        for (slot, fd) in which.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            let (file, stream) = &mut streams[*slot];
            let Some(f) = file else { continue };
            loop {
                match f.read(&mut buf) {
                    Ok(0) => {
                        log.close(*stream)?;
                        *file = None;
                        break;
                    }
                    Ok(n) => {
                        log.write(*stream, &buf[..n])?;
                        if let Some(a) = attach.as_deref_mut() {
                            a.broadcast(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A terminal's master reads EIO once no process holds the slave.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        log.close(*stream)?;
                        *file = None;
                        break;
                    }
                    Err(e) => return Err(e).context("cannot read the container's output"),
                }
            }
        }
        if exited.is_none()
            && let Some(a) = attach.as_deref_mut()
        {
            a.serve(&fds[attach_from..]);
        }
        if exited.is_none() && fds.get(pid_slot).is_some_and(|f| f.revents != 0) {
            let (code, signal) = exit_status(pid)?;
            exited = Some((code, signal, Instant::now()));
        }
        if let Some((code, signal, at)) = exited {
            if streams.iter().all(|(f, _)| f.is_none()) {
                return Ok((code, signal));
            }
            if at.elapsed() >= DRAIN {
                // Something outside the container's PID namespace still holds the pipes.
                for (file, stream) in &mut streams {
                    if file.take().is_some() {
                        log.close(*stream)?;
                    }
                }
                return Ok((code, signal));
            }
        }
    }
    match exited {
        Some((code, signal, _)) => Ok((code, signal)),
        None => exit_status_blocking(pid),
    }
}

/// The exit status of an exited child, leaving it unreaped (WNOWAIT).
fn exit_status(pid: i32) -> Result<(i32, Option<i32>)> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to info; pid is our child.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot read the container's exit status");
    }
    // SAFETY: waitid succeeded, so the child fields are set.
    let (code, status) = (info.si_code, unsafe { info.si_status() });
    Ok(match code {
        libc::CLD_EXITED => (status, None),
        _ => (128 + status, Some(status)),
    })
}

fn exit_status_blocking(pid: i32) -> Result<(i32, Option<i32>)> {
    exit_status(pid)
}

/// What a pipe holds right now, without waiting (the write ends are closed).
fn drain_now(fd: OwnedFd) -> String {
    let _ = set_nonblocking(&fd);
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 || out.len() > 64 * 1024 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
