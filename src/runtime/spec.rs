//! From a container description (what a pod's container asks for) and its image's config to an
//! OCI runtime spec (`config.json` in the bundle), the way containerd's CRI plugin does it:
//! Kubernetes' command/args rules, image env under container env, the user resolved against
//! the image's /etc/passwd and /etc/group, the default capability set, masked and read-only
//! /proc paths, /dev, /sys, cgroup limits and namespaces (new, or joined by path).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::images::ImageConfig;

/// PATH for images that set none (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a container gets unless it asks otherwise (Docker's and containerd's set).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/interrupts",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A namespace the container gets: a new one, or one joined by its path (a pod's network
/// namespace, `/proc/<pid>/ns/ipc` of the pod's first container, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<PathBuf>,
}

/// cgroup limits, in the units the kernel takes (Kubernetes' CPU request 250m is 256 shares;
/// its limit 500m is a quota of 50000 µs per 100000 µs period).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

/// Who the process runs as, over what the image says (runAsUser, runAsGroup,
/// supplementalGroups and fsGroup).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

/// What to run: the runtime's input, written as `container.json` in the container's directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// Letters, digits, '-', '_' and '.'; unique on the node.
    pub id: String,
    /// The image as asked for (a name or an id).
    pub image: String,
    /// Kubernetes `command`: replaces the image's ENTRYPOINT (and drops its CMD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Kubernetes `args`: replaces the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Added to (and overriding by name) the image's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserOverride>,
    pub hostname: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub resources: Resources,
    /// cgroup path (under the node's own cgroup) of the container's parent, e.g. `/kubepods/pod<uid>`.
    pub cgroup_parent: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// securityContext.privileged: every capability the node has, every device, /proc and /sys
    /// unmasked and writable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// securityContext.capabilities: names with or without `CAP_`, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_drop: Vec<String>,
    /// allowPrivilegeEscalation: false sets no_new_privs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// The OOM killer's preference (Kubernetes' per-QoS value, already clamped to what the node
    /// may set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// /etc/hosts and /etc/resolv.conf contents (None: a minimal hosts file, and the node's
    /// resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Run under a terminal (Kubernetes `tty`); the shim keeps its master for `kubectl attach`.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for `kubectl attach` (Kubernetes `stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin after the first attach ends (Kubernetes `stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
}

impl ContainerConfig {
    pub fn validate(&self) -> Result<()> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 128
            && !self.id.starts_with('.')
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            bail!(
                "container id {:?} is not valid: use letters, digits, '-', '_' and '.'",
                self.id
            );
        }
        if !self.cgroup_parent.starts_with('/') {
            bail!(
                "the cgroup parent {:?} must be an absolute cgroup path",
                self.cgroup_parent
            );
        }
        for m in &self.mounts {
            if !m.destination.starts_with('/') {
                bail!("mount destination {:?} must be absolute", m.destination);
            }
        }
        Ok(())
    }
}

/// The user a process runs as, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The passwd entry's home directory, for HOME.
    pub home: Option<String>,
}

/// Reads files of the image (e.g. `etc/passwd`) without mounting it.
pub trait ImageFiles {
    fn read(&self, path: &str) -> Option<Vec<u8>>;
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(files: &dyn ImageFiles) -> Vec<PasswdEntry> {
    let Some(data) = files.read("etc/passwd") else {
        return Vec::new();
    };
    String::from_utf8_lossy(&data)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 6).then(|| {
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })?
        })
        .collect()
}

/// (name, gid, members) of /etc/group.
fn group_entries(files: &dyn ImageFiles) -> Vec<(String, u32, Vec<String>)> {
    let Some(data) = files.read("etc/group") else {
        return Vec::new();
    };
    String::from_utf8_lossy(&data)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves the image's USER (`uid`, `uid:gid`, `name`, `name:group`) and the container's
/// overrides the way runc/containerd do: a numeric uid missing from passwd runs with gid 0; a
/// name missing from passwd is an error.
pub fn resolve_user(
    image_user: Option<&str>,
    over: Option<&UserOverride>,
    files: &dyn ImageFiles,
) -> Result<ResolvedUser> {
    let passwd = passwd_entries(files);
    let groups = group_entries(files);
    let spec = image_user.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let over_uid = over.and_then(|o| o.uid);
    let (uid, mut gid, name, home) = if let Some(uid) = over_uid {
        let entry = passwd.iter().find(|e| e.uid == uid);
        (
            uid,
            entry.map(|e| e.gid).unwrap_or(0),
            entry.map(|e| e.name.clone()),
            entry.map(|e| e.home.clone()),
        )
    } else if user_part.is_empty() {
        let entry = passwd.iter().find(|e| e.uid == 0);
        (
            0,
            0,
            entry.map(|e| e.name.clone()),
            entry.map(|e| e.home.clone()),
        )
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = passwd.iter().find(|e| e.uid == uid);
        (
            uid,
            entry.map(|e| e.gid).unwrap_or(0),
            entry.map(|e| e.name.clone()),
            entry.map(|e| e.home.clone()),
        )
    } else {
        let entry = passwd.iter().find(|e| e.name == user_part).with_context(|| {
            format!("unable to find user {user_part}: no matching entries in the image's /etc/passwd")
        })?;
        (
            entry.uid,
            entry.gid,
            Some(entry.name.clone()),
            Some(entry.home.clone()),
        )
    };
    if over_uid.is_none()
        && let Some(group) = group_part.filter(|g| !g.is_empty())
    {
        gid = match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == group)
                .map(|(_, g, _)| *g)
                .with_context(|| {
                    format!("unable to find group {group}: no matching entries in the image's /etc/group")
                })?,
        };
    }
    if let Some(g) = over.and_then(|o| o.gid) {
        gid = g;
    }
    // The primary group leads the list so that setgroups always runs: with an empty list
    // libcontainer keeps the helper's own groups (root's), which a container must not inherit.
    let mut additional: Vec<u32> = vec![gid];
    if let Some(name) = &name {
        for (_, g, members) in &groups {
            if members.contains(name) && *g != gid && !additional.contains(g) {
                additional.push(*g);
            }
        }
    }
    for g in over
        .map(|o| o.supplemental_groups.as_slice())
        .unwrap_or(&[])
    {
        if !additional.contains(g) {
            additional.push(*g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

/// The process arguments under Kubernetes' rules for command/args over ENTRYPOINT/CMD.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let entrypoint = image.config.entrypoint.clone().unwrap_or_default();
    let cmd = image.config.cmd.clone().unwrap_or_default();
    let args = match (&config.command, &config.args) {
        (Some(command), Some(args)) => [command.clone(), args.clone()].concat(),
        (Some(command), None) => command.clone(),
        (None, Some(args)) => [entrypoint, args.clone()].concat(),
        (None, None) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        bail!(
            "no command to run: the image {} has neither ENTRYPOINT nor CMD and the container gives no command",
            config.image
        );
    }
    Ok(args)
}

/// HOSTNAME, then the image's environment, then the container's (a later name wins, in place).
pub fn process_env(
    config: &ContainerConfig,
    image: &ImageConfig,
    home: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), config.hostname.clone())];
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    for entry in image.config.env.as_deref().unwrap_or(&[]) {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(name, value);
    }
    for var in &config.env {
        set(&var.name, &var.value);
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(n, _)| n == "HOME") {
        env.push((
            "HOME".into(),
            home.filter(|h| !h.is_empty()).unwrap_or("/").into(),
        ));
    }
    // As containerd does for a terminal: programs need a TERM to drive it.
    if config.tty && !env.iter().any(|(n, _)| n == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The files of a container's directory that the spec bind-mounts.
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Everything the spec is built from.
pub struct SpecInput<'a> {
    pub config: &'a ContainerConfig,
    pub image: &'a ImageConfig,
    pub user: &'a ResolvedUser,
    /// The bundle-relative (or absolute) rootfs path.
    pub rootfs: &'a Path,
    pub etc: &'a EtcFiles,
    /// Whether the node has swap accounting (then swap is capped at the memory limit: no swap).
    pub swap_accounting: bool,
}

fn namespace(kind: &str, path: Option<&Path>) -> Value {
    match path {
        Some(p) => json!({"type": kind, "path": p}),
        None => json!({"type": kind}),
    }
}

/// Containers may make device nodes but only open the usual harmless ones.
fn default_devices() -> Value {
    json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": true, "type": "b", "access": "m"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rwm"},
    ])
}

/// Builds the OCI runtime spec (as JSON; [`check`] parses it with libcontainer's types).
pub fn build(input: &SpecInput) -> Result<Value> {
    let config = input.config;
    let args = process_args(config, input.image)?;
    let env = process_env(config, input.image, input.user.home.as_deref());
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| input.image.config.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} must be an absolute path");
    }
    let caps = capability_set(config);
    let ro = |opts: &[&str], read_only: bool| -> Vec<String> {
        let mut o: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        o.push(if read_only { "ro" } else { "rw" }.to_string());
        o
    };
    let etc_ro = config.read_only_root_filesystem;
    let sys_ro = if config.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
        json!({"destination": "/etc/hosts", "type": "bind", "source": input.etc.hosts, "options": ro(&["rbind", "rprivate"], etc_ro)}),
        json!({"destination": "/etc/hostname", "type": "bind", "source": input.etc.hostname, "options": ro(&["rbind", "rprivate"], etc_ro)}),
        json!({"destination": "/etc/resolv.conf", "type": "bind", "source": input.etc.resolv_conf, "options": ro(&["rbind", "rprivate"], etc_ro)}),
    ];
    // libcontainer sets up the cgroup v1 mount from /proc/<its pid>, read through the node's
    // /proc: a container joining a pod's PID namespace (shareProcessNamespace) has a pid that
    // /proc does not know, so it goes without /sys/fs/cgroup rather than not starting.
    if config.namespaces.pid.is_some() && super::cgroups::version() == super::cgroups::Version::V1 {
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    }
    for m in &config.mounts {
        mounts.push(json!({
            "destination": m.destination, "type": "bind", "source": m.source,
            "options": ro(&["rbind", "rprivate"], m.read_only),
        }));
    }
    let ns = &config.namespaces;
    let namespaces = vec![
        namespace("pid", ns.pid.as_deref()),
        namespace("ipc", ns.ipc.as_deref()),
        namespace("uts", ns.uts.as_deref()),
        json!({"type": "mount"}),
        namespace("network", ns.network.as_deref()),
        json!({"type": "cgroup"}),
    ];
    let r = &config.resources;
    // A privileged container keeps every device its node may use: its cgroup starts from the
    // node's device list (asking for more than the node has is refused on cgroup v1).
    let mut resources = if config.privileged {
        json!({})
    } else {
        json!({"devices": default_devices()})
    };
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares.max(2)));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        resources["memory"] = if input.swap_accounting {
            json!({"limit": limit, "swap": limit})
        } else {
            json!({"limit": limit})
        };
    }
    if let Some(pids) = r.pids_limit {
        resources["pids"] = json!({"limit": pids});
    }
    let cgroups_path = format!(
        "{}/{}",
        config.cgroup_parent.trim_end_matches('/'),
        config.id
    );
    let mut process = json!({
        "terminal": config.tty,
        "user": {
            "uid": input.user.uid,
            "gid": input.user.gid,
        },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
    });
    process["user"]["additionalGids"] = json!(input.user.additional_gids);
    if let Some(adj) = config.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    if config.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    let (masked, readonly): (&[&str], &[&str]) = if config.privileged {
        (&[], &[])
    } else {
        (&MASKED_PATHS, &READONLY_PATHS)
    };
    let linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": input.rootfs, "readonly": config.read_only_root_filesystem},
        "mounts": mounts,
        "linux": linux,
        "annotations": config.annotations,
    });
    // A joined UTS namespace keeps its hostname (the pod's).
    if ns.uts.is_none() {
        spec["hostname"] = json!(config.hostname);
    }
    Ok(spec)
}

/// Capability names by number (linux/capability.h), for the node's own bounding set.
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this node itself holds: "all" for a container can be no more than that (a
/// node started without CAP_SYS_RESOURCE cannot give it away).
pub fn node_capabilities() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// `NET_ADMIN`, `cap_net_admin` → `CAP_NET_ADMIN`.
fn capability_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The default set, or all of the node's for a privileged container, with adds and drops applied
/// (drops first, as containerd does; `ALL` in either list).
fn capability_set(config: &ContainerConfig) -> Vec<String> {
    let node = node_capabilities();
    if config.privileged {
        return node.iter().map(|s| s.to_string()).collect();
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let drops: Vec<String> = config
        .capabilities_drop
        .iter()
        .map(|c| capability_name(c))
        .collect();
    if drops.iter().any(|d| d == "CAP_ALL") {
        caps.clear();
    } else {
        caps.retain(|c| !drops.contains(c));
    }
    for add in config.capabilities_add.iter().map(|c| capability_name(c)) {
        if add == "CAP_ALL" {
            for n in &node {
                if !caps.iter().any(|c| c == n) {
                    caps.push(n.to_string());
                }
            }
        } else if node.contains(&add.as_str()) && !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps
}

/// Parses a built spec with libcontainer's own types: what it would refuse, refuse now.
pub fn check(spec: &Value) -> Result<libcontainer::oci_spec::runtime::Spec> {
    serde_json::from_value(spec.clone()).context("the generated runtime spec is not valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Files(HashMap<&'static str, &'static str>);
    impl ImageFiles for Files {
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0.get(path).map(|s| s.as_bytes().to_vec())
        }
    }

    fn files() -> Files {
        Files(HashMap::from([
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
            ),
            (
                "etc/group",
                "root:x:0:\napp:x:1000:\nwheel:x:10:app,root\naudio:x:29:app\n",
            ),
        ]))
    }

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let mut image = ImageConfig::default();
        image.config.entrypoint = entrypoint.map(|v| v.iter().map(|s| s.to_string()).collect());
        image.config.cmd = cmd.map(|v| v.iter().map(|s| s.to_string()).collect());
        image.config.env = Some(vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()]);
        image.config.working_dir = Some("/srv".into());
        image
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image(Some(&["/entry"]), Some(&["default"]));
        let mut c = ContainerConfig {
            image: "x".into(),
            ..Default::default()
        };
        assert_eq!(process_args(&c, &img).unwrap(), ["/entry", "default"]);
        c.args = strings(&["a1"]);
        assert_eq!(process_args(&c, &img).unwrap(), ["/entry", "a1"]);
        c.command = strings(&["/cmd"]);
        assert_eq!(process_args(&c, &img).unwrap(), ["/cmd", "a1"]);
        c.args = None;
        assert_eq!(process_args(&c, &img).unwrap(), ["/cmd"]);
        let bare = image(None, None);
        c.command = None;
        let err = process_args(&c, &bare).unwrap_err();
        assert!(format!("{err}").contains("neither ENTRYPOINT nor CMD"));
    }

    #[test]
    fn container_env_overrides_image_env_in_place() {
        let img = image(None, Some(&["x"]));
        let c = ContainerConfig {
            hostname: "pod-a".into(),
            env: vec![
                EnvVar {
                    name: "B".into(),
                    value: "mine".into(),
                },
                EnvVar {
                    name: "C".into(),
                    value: "new".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            process_env(&c, &img, Some("/root")),
            [
                "HOSTNAME=pod-a",
                "PATH=/bin",
                "A=image",
                "B=mine",
                "C=new",
                "HOME=/root"
            ]
        );
        let empty = ImageConfig::default();
        let env = process_env(&ContainerConfig::default(), &empty, None);
        assert!(env.contains(&format!("PATH={DEFAULT_PATH}")));
        assert!(env.contains(&"HOME=/".to_string()));
    }

    #[test]
    fn users_resolve_against_the_image_files() {
        let f = files();
        let u = resolve_user(None, None, &f).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_deref()), (0, 0, Some("/root")));
        assert_eq!(u.additional_gids, vec![0, 10]);
        let u = resolve_user(Some("app"), None, &f).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 10, 29]);
        let u = resolve_user(Some("app:audio"), None, &f).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        let u = resolve_user(Some("4242"), None, &f).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 0, None));
        let u = resolve_user(Some("5:6"), None, &f).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (5, 6, vec![6]));
        let over = UserOverride {
            uid: Some(1000),
            gid: None,
            supplemental_groups: vec![2000],
        };
        let u = resolve_user(Some("root"), Some(&over), &f).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 10, 29, 2000]);
        let over = UserOverride {
            uid: None,
            gid: Some(7),
            supplemental_groups: vec![],
        };
        assert_eq!(resolve_user(Some("app"), Some(&over), &f).unwrap().gid, 7);
        let err = resolve_user(Some("nobody"), None, &f).unwrap_err();
        assert!(format!("{err}").contains("unable to find user nobody"));
    }

    fn spec_for(config: &ContainerConfig) -> Value {
        let img = image(None, Some(&["/bin/sh"]));
        let user = resolve_user(None, config.user.as_ref(), &files()).unwrap();
        let etc = EtcFiles {
            hosts: "/c/etc/hosts".into(),
            hostname: "/c/etc/hostname".into(),
            resolv_conf: "/c/etc/resolv.conf".into(),
        };
        build(&SpecInput {
            config,
            image: &img,
            user: &user,
            rootfs: Path::new("rootfs"),
            etc: &etc,
            swap_accounting: true,
        })
        .unwrap()
    }

    #[test]
    fn spec_has_limits_namespaces_mounts_and_parses_with_libcontainer_types() {
        let config = ContainerConfig {
            id: "c1".into(),
            image: "x".into(),
            hostname: "web-0".into(),
            cgroup_parent: "/kubepods/podabc".into(),
            resources: Resources {
                cpu_shares: Some(256),
                cpu_quota: Some(50_000),
                cpu_period: None,
                memory_limit: Some(64 << 20),
                pids_limit: Some(100),
            },
            namespaces: Namespaces {
                network: Some("/var/run/netns/pod".into()),
                ..Default::default()
            },
            mounts: vec![BindMount {
                source: "/data".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        let spec = spec_for(&config);
        let parsed = check(&spec).unwrap();
        assert_eq!(parsed.hostname().as_deref(), Some("web-0"));
        assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/podabc/c1");
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 100);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        let net = ns.iter().find(|n| n["type"] == "network").unwrap();
        assert_eq!(net["path"], "/var/run/netns/pod");
        assert!(
            ns.iter()
                .find(|n| n["type"] == "pid")
                .unwrap()
                .get("path")
                .is_none()
        );
        let mounts = spec["mounts"].as_array().unwrap();
        for dest in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hosts",
            "/etc/resolv.conf",
        ] {
            assert!(
                mounts.iter().any(|m| m["destination"] == dest),
                "no {dest} mount"
            );
        }
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
        assert_eq!(spec["process"]["cwd"], "/srv");
        assert_eq!(spec["process"]["args"], json!(["/bin/sh"]));
        assert_eq!(spec["root"]["path"], "rootfs");
        assert!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .contains(&json!("CAP_NET_BIND_SERVICE"))
        );
    }

    #[test]
    fn capabilities_add_drop_and_privileged() {
        let node = node_capabilities();
        let mut c = ContainerConfig {
            capabilities_drop: vec!["chown".into()],
            capabilities_add: vec!["NET_ADMIN".into()],
            ..Default::default()
        };
        let caps = capability_set(&c);
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(
            caps.contains(&"CAP_NET_ADMIN".to_string()),
            node.contains(&"CAP_NET_ADMIN")
        );
        c.capabilities_drop = vec!["ALL".into()];
        c.capabilities_add = vec![];
        assert!(capability_set(&c).is_empty());
        c.privileged = true;
        assert_eq!(capability_set(&c).len(), node.len());
        let spec = spec_for(&ContainerConfig {
            privileged: true,
            ..c.clone()
        });
        assert!(spec["linux"]["resources"].get("devices").is_none());
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
    }

    #[test]
    fn joined_uts_namespace_keeps_its_hostname_and_ids_are_checked() {
        let config = ContainerConfig {
            id: "c2".into(),
            image: "x".into(),
            hostname: "h".into(),
            cgroup_parent: "/k".into(),
            namespaces: Namespaces {
                uts: Some("/proc/1/ns/uts".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = spec_for(&config);
        assert!(spec.get("hostname").is_none());
        check(&spec).unwrap();
        assert!(config.validate().is_ok());
        let bad = ContainerConfig {
            id: "../x".into(),
            ..config
        };
        assert!(bad.validate().is_err());
    }
}
