//! `kcluster node container-run` (the per-container helper) and `kcluster node run-once`
//! (run one container from a loaded image and print its output: the runtime's end-to-end
//! check, and a debugging aid). Both run without an async runtime: libcontainer must be called
//! from a single-threaded process.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::runtime::container::{Runtime, Status};
use crate::runtime::images::Store;
use crate::runtime::logs::{LogReader, Stream};
use crate::runtime::spec::{ContainerConfig, EnvVar, Namespaces, Resources, UserOverride};

pub fn container_run(dir: PathBuf) -> Result<()> {
    crate::runtime::shim::run(&dir)
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunOnceArgs {
    /// A loaded image (name or id).
    #[arg(long)]
    pub image: String,
    /// Environment variables (NAME=VALUE); repeat the flag for more.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory (default: the image's).
    #[arg(long)]
    pub workdir: Option<String>,
    /// UID[:GID] to run as (default: the image's USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Memory limit in bytes, or with a suffix: 64Mi, 1Gi, 500M.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in cores (0.5 = a quota of 50 ms per 100 ms).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight (cgroup v1 shares; converted to a weight on v2).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// Most processes the container may have.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Hostname (default: the container id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Join this network namespace (e.g. /proc/1/ns/net: the node's) instead of a new one.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Stop the container after this many seconds (SIGTERM, then SIGKILL after --grace).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Keep the container's directory afterwards (to look at its log, state and spec).
    #[arg(long)]
    pub keep: bool,
    /// Container id (default: run-once-<random>).
    #[arg(long)]
    pub id: Option<String>,
    /// Start the container and return at once, leaving it running (prints its id).
    #[arg(long)]
    pub detach: bool,
    /// Annotations (KEY=VALUE), e.g. the pod ones the kubelet API finds containers by.
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Run under a terminal (Kubernetes `tty`).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Keep stdin open for attach (Kubernetes `stdin`).
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// Close stdin after the first attach (Kubernetes `stdinOnce`).
    #[arg(long)]
    pub stdin_once: bool,
    /// Its cgroup parent.
    #[arg(long, default_value = "/kcluster-run-once")]
    pub cgroup_parent: String,
    /// Command and arguments (replace the image's ENTRYPOINT and CMD); none: the image's.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `64Mi`, `1Gi`, `500M`, `1000k`, or plain bytes.
pub fn parse_bytes(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let n: i64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a size (e.g. 64Mi, 1Gi, 500M)"))?;
    let factor: i64 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => bail!("{text:?} has an unknown unit {suffix:?} (use Ki, Mi, Gi, k, M or G)"),
    };
    n.checked_mul(factor)
        .with_context(|| format!("{text:?} is too large"))
}

fn config_from(args: &RunOnceArgs, id: &str) -> Result<ContainerConfig> {
    let env = args
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((n, v)) if !n.is_empty() => Ok(EnvVar {
                name: n.to_string(),
                value: v.to_string(),
            }),
            _ => bail!("--env {e:?} is not NAME=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    let user = match &args.user {
        None => None,
        Some(u) => {
            let (uid, gid) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u.as_str(), None),
            };
            Some(UserOverride {
                uid: Some(
                    uid.parse()
                        .with_context(|| format!("--user {u:?}: UID[:GID]"))?,
                ),
                gid: gid
                    .map(|g| {
                        g.parse()
                            .with_context(|| format!("--user {u:?}: UID[:GID]"))
                    })
                    .transpose()?,
                supplemental_groups: Vec::new(),
            })
        }
    };
    let annotations = args
        .annotations
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--annotation {a:?} is not KEY=VALUE"),
        })
        .collect::<Result<_>>()?;
    let memory_limit = args.memory.as_deref().map(parse_bytes).transpose()?;
    let cpu_quota = match args.cpus {
        Some(c) if c > 0.0 => Some((c * 100_000.0).round() as i64),
        Some(_) => bail!("--cpus must be more than 0"),
        None => None,
    };
    Ok(ContainerConfig {
        id: id.to_string(),
        image: args.image.clone(),
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        args: None,
        env,
        working_dir: args.workdir.clone(),
        user,
        hostname: args.hostname.clone().unwrap_or_else(|| id.to_string()),
        namespaces: Namespaces {
            network: args.netns.clone(),
            ..Default::default()
        },
        resources: Resources {
            cpu_shares: args.cpu_shares,
            cpu_quota,
            cpu_period: cpu_quota.map(|_| 100_000),
            memory_limit,
            pids_limit: args.pids_limit,
        },
        cgroup_parent: args.cgroup_parent.clone(),
        annotations,
        tty: args.tty,
        stdin: args.stdin,
        stdin_once: args.stdin_once,
        ..Default::default()
    })
}

/// Runs one container to its end, printing its output as it comes; returns its exit code.
pub fn run_once(args: RunOnceArgs) -> Result<i32> {
    let state_dir = super::state_dir();
    let store = Store::open(&state_dir)?;
    let runtime = Runtime::new(&state_dir)?;
    let id = args.id.clone().unwrap_or_else(|| {
        format!(
            "run-once-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    });
    runtime.create(&store, config_from(&args, &id)?)?;
    if args.detach {
        return detach(&runtime, &id);
    }
    let result = follow(&runtime, &id, &args);
    if !args.keep {
        if let Err(e) = runtime.remove(&id) {
            eprintln!("warning: cannot remove container {id}: {e:#}");
        }
    } else {
        eprintln!("kept: {}", runtime.dir(&id).display());
    }
    result
}

fn follow(runtime: &Runtime, id: &str, args: &RunOnceArgs) -> Result<i32> {
    let mut helper = runtime.start(id)?;
    let started = Instant::now();
    let mut reader: Option<LogReader> = None;
    let mut stopped = false;
    let print = |reader: &mut Option<LogReader>| -> Result<()> {
        if reader.is_none() && runtime.log_path(id).exists() {
            *reader = Some(LogReader::open(&runtime.log_path(id))?);
        }
        if let Some(r) = reader {
            for line in r.read_new()? {
                let mut text = line.text;
                text.push(b'\n');
                match line.stream {
                    Stream::Stdout => std::io::stdout().write_all(&text)?,
                    Stream::Stderr => std::io::stderr().write_all(&text)?,
                }
            }
            std::io::stdout().flush()?;
        }
        Ok(())
    };
    loop {
        print(&mut reader)?;
        if helper.try_wait()?.is_some() {
            break;
        }
        if let Some(limit) = args.timeout
            && !stopped
            && started.elapsed() >= Duration::from_secs_f64(limit)
        {
            stopped = true;
            eprintln!("timeout: stopping container {id}");
            runtime.stop(id, Duration::from_secs_f64(args.grace))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    print(&mut reader)?;
    let state = runtime.state(id)?;
    if let Some(error) = &state.error {
        let helper_log = std::fs::read_to_string(runtime.helper_log_path(id)).unwrap_or_default();
        tracing::debug!(helper_log = %helper_log, "helper log");
        bail!("container {id} could not run: {error}");
    }
    if state.status != Status::Exited {
        bail!(
            "the helper of container {id} ended but the container did not; see {}",
            runtime.helper_log_path(id).display()
        );
    }
    let code = state.exit_code.unwrap_or(-1);
    let mut summary = format!("exit code: {code}");
    if let Some(signal) = state.signal {
        summary.push_str(&format!(" (signal {signal})"));
    }
    if state.oom_killed {
        summary.push_str(" (OOMKilled)");
    }
    eprintln!("{summary}");
    Ok(code)
}

/// Starts the container and returns once it runs (or failed), leaving the helper running.
fn detach(runtime: &Runtime, id: &str) -> Result<i32> {
    let _helper = runtime.start(id)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = runtime.state(id)?;
        match state.status {
            Status::Running => {
                println!("{id}");
                return Ok(0);
            }
            Status::Exited => {
                if let Some(error) = state.error {
                    bail!("container {id} could not run: {error}");
                }
                println!("{id}");
                return Ok(0);
            }
            Status::Created if Instant::now() >= deadline => {
                bail!("container {id} did not start within 30 s")
            }
            Status::Created => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The container to run in.
    pub id: String,
    /// Pass this command's stdin to the process.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `kcluster node exec ID -- cmd…`: runs a command in a running container, copying this
/// process's stdio; returns its exit code.
pub async fn exec(args: ExecArgs) -> Result<i32> {
    use crate::runtime::exec::{ExecOptions, start};
    let runtime = Runtime::new(&super::state_dir())?;
    let mut exec = start(
        &runtime,
        &args.id,
        &args.command,
        &ExecOptions {
            tty: false,
            stdin: args.stdin,
        },
    )
    .await?;
    let stdin = exec.stdin.take();
    let feed = async move {
        if let Some(mut w) = stdin {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
        }
    };
    let out = exec.stdout.take();
    let err = exec.stderr.take();
    let copy_out = async move {
        if let Some(mut r) = out {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stdout()).await;
        }
    };
    let copy_err = async move {
        if let Some(mut r) = err {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stderr()).await;
        }
    };
    tokio::spawn(feed);
    let (_, _, code) = tokio::join!(copy_out, copy_err, exec.wait());
    code
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The container whose log to print.
    pub id: String,
    /// Keep printing new lines while the container runs.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print each line's time.
    #[arg(long)]
    pub timestamps: bool,
}

/// `kcluster node logs ID [-f]`: a container's log as `kubectl logs` shows it.
pub fn logs(args: &LogsArgs) -> Result<()> {
    let runtime = Runtime::new(&super::state_dir())?;
    let path = runtime.log_path(&args.id);
    let mut reader = LogReader::open(&path)
        .with_context(|| format!("container {} has no log on this node", args.id))?;
    let mut out = std::io::stdout().lock();
    loop {
        let running = runtime
            .state(&args.id)
            .map(|s| s.status != Status::Exited)
            .unwrap_or(false);
        for line in reader.read_new()? {
            if args.timestamps {
                out.write_all(line.time.as_bytes())?;
                out.write_all(b" ")?;
            }
            out.write_all(&line.text)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        if !args.follow || !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kcluster node ps`: the containers on this node, as the runtime sees them.
pub fn ps() -> Result<()> {
    let runtime = Runtime::new(&super::state_dir())?;
    println!(
        "{:<40} {:<8} {:<6} {:<8} IMAGE",
        "CONTAINER", "STATUS", "EXIT", "PID"
    );
    for (id, state) in runtime.list()? {
        let image = runtime
            .record(&id)
            .map(|r| r.config.image)
            .unwrap_or_default();
        let status = match state.status {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        };
        println!(
            "{id:<40} {status:<8} {:<6} {:<8} {image}",
            state.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            state.pid.map(|p| p.to_string()).unwrap_or_default(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_kubernetes_quantities() {
        assert_eq!(parse_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("500M").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
