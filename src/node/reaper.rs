//! The node process is PID 1 of its container, so every orphan on the node is reparented to
//! it. An exec'd process (a probe's command, `kubectl exec`) lives in its container's PID
//! namespace; when its helper dies first (a probe's timeout kills the helper) the process
//! becomes ours, and once killed it stays a zombie until reaped. A container's init cannot
//! finish dying while a zombie of its namespace is unreaped (the kernel waits for them), so
//! unreaped orphans kept deleted pods' containers "running" for ever.
//!
//! Only zombies in another PID namespace are reaped: the processes this one spawns itself
//! (helpers) live in its own namespace and are waited for by whoever spawned them.

use std::time::Duration;

use tracing::debug;

/// How often orphans are looked for; a container's stop waits up to 10 s after SIGKILL.
const PERIOD: Duration = Duration::from_secs(1);

/// Reaps orphaned zombies from other PID namespaces for as long as the process runs; does
/// nothing unless this process is PID 1.
pub async fn run() {
    if std::process::id() != 1 {
        return;
    }
    let Ok(own_ns) = std::fs::read_link("/proc/self/ns/pid") else {
        return;
    };
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let own = own_ns.clone();
        let reaped = tokio::task::spawn_blocking(move || reap_once(&own))
            .await
            .unwrap_or(0);
        if reaped > 0 {
            debug!(reaped, "reaped orphaned processes of containers");
        }
    }
}

/// One pass over /proc: zombies whose parent is this process and whose PID namespace is not
/// ours. Returns how many were reaped.
fn reap_once(own_ns: &std::path::Path) -> usize {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if !orphaned_zombie(&stat, me) {
            continue;
        }
        match std::fs::read_link(format!("/proc/{pid}/ns/pid")) {
            Ok(ns) if ns != own_ns => {}
            _ => continue,
        }
        let waited = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if waited.is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// Whether a /proc/<pid>/stat line is a zombie child of `parent`. The command name is in
/// parentheses and may itself hold spaces or parentheses: fields are read after the last ')'.
fn orphaned_zombie(stat: &str, parent: i32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
    state == Some("Z") && ppid == Some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombie_children_are_told_from_the_rest() {
        assert!(orphaned_zombie("17351 (cat) Z 1 17351 17351 0 -1", 1));
        assert!(orphaned_zombie("17351 (a b) (c)) Z 1 0 0", 1));
        assert!(!orphaned_zombie("17351 (cat) S 1 17351 17351", 1));
        assert!(!orphaned_zombie("17351 (cat) Z 42 17351 17351", 1));
        assert!(!orphaned_zombie("garbage", 1));
    }
}
