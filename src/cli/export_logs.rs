//! `kcluster export logs [DIR] [--name]`: one folder (or `.tar.gz`) with what a bug report or a
//! CI artifact needs — every container of the cluster (nodes, port publisher, port proxies)
//! with its `docker inspect` and its log (a node's log is its agent's and server's), the log of
//! every pod container kept on each node, the cluster's objects as the API returns them (and
//! `kubectl get`/`describe` when kubectl is installed), the cluster config and versions.
//!
//! One failing part never stops the export: what could not be read is listed in `errors.txt`.
//! Nothing secret is written: no container environment (it may hold Secret values), no keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
};
use futures::StreamExt;

use super::Progress;
use crate::cluster::docker::{self, Docker};

/// The API lists written to `kubernetes/` (path, file).
const LISTS: &[(&str, &str)] = &[
    ("/api/v1/nodes", "nodes.json"),
    ("/api/v1/pods", "pods.json"),
    ("/api/v1/events", "events.json"),
    ("/api/v1/namespaces", "namespaces.json"),
    ("/api/v1/services", "services.json"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "endpointslices.json",
    ),
    ("/apis/apps/v1/deployments", "deployments.json"),
    ("/apis/apps/v1/replicasets", "replicasets.json"),
    ("/apis/apps/v1/daemonsets", "daemonsets.json"),
    ("/apis/apps/v1/statefulsets", "statefulsets.json"),
    ("/apis/batch/v1/jobs", "jobs.json"),
    (
        "/api/v1/persistentvolumeclaims",
        "persistentvolumeclaims.json",
    ),
    ("/api/v1/persistentvolumes", "persistentvolumes.json"),
];

/// What kubectl prints, when it is installed: (file, arguments).
const KUBECTL: &[(&str, &[&str])] = &[
    ("get-nodes.txt", &["get", "nodes", "-o", "wide"]),
    ("get-pods.txt", &["get", "pods", "-A", "-o", "wide"]),
    ("get-all.txt", &["get", "all", "-A"]),
    (
        "get-events.txt",
        &["get", "events", "-A", "--sort-by=.lastTimestamp"],
    ),
    ("describe-nodes.txt", &["describe", "nodes"]),
    ("describe-pods.txt", &["describe", "pods", "-A"]),
];

/// Files of a pod container's directory on a node that are kept (container.json is not: it
/// holds the container's environment, Secret values included).
const CONTAINER_FILES: &[&str] = &["container.log", "helper.log", "state.json"];

pub async fn run(name: &str, dir: Option<PathBuf>, progress: &Progress) -> Result<()> {
    let docker = Docker::connect().await?;
    let containers = docker.cluster_containers(Some(name)).await?;
    if !containers.iter().any(docker::is_node) {
        bail!("no cluster named {name:?} (see `kcluster list`)");
    }
    let target = dir.unwrap_or_else(|| {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        PathBuf::from(format!("kcluster-logs-{name}-{stamp}"))
    });
    let archive = is_archive(&target);
    let out = if archive {
        if target.exists() {
            bail!(
                "{} already exists; name a new file or remove it",
                target.display()
            );
        }
        target.with_extension(format!("partial-{}", std::process::id()))
    } else {
        if target.exists() && std::fs::read_dir(&target)?.next().is_some() {
            bail!(
                "{} already exists and is not empty; name a new folder or remove it",
                target.display()
            );
        }
        target.clone()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut export = Export {
        out: out.clone(),
        errors: Vec::new(),
    };
    let step = progress.step(format!("Exporting logs of cluster {name:?}"));
    export.versions(&docker).await;
    if let Some(config) = containers
        .iter()
        .find_map(|c| docker::label(c, docker::LABEL_CONFIG))
    {
        let pretty = serde_json::from_str::<serde_json::Value>(config)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| config.to_string());
        export.write("cluster-config.json", pretty.as_bytes());
    }
    let pods = export.kubernetes(name).await;
    for c in &containers {
        let container = docker::container_name(c);
        export.container(&docker, &container).await;
        if docker::is_node(c) && docker::is_running(c) {
            export.pod_logs(&docker, &container, &pods).await;
        }
    }
    if !export.errors.is_empty() {
        let text = export.errors.join("\n") + "\n";
        export.write("errors.txt", text.as_bytes());
    }
    step.done();

    if archive {
        let packed = pack(&out, &target);
        let _ = std::fs::remove_dir_all(&out);
        packed?;
    }
    progress.say(&format!(
        "Exported logs of cluster {name:?} to {}{}",
        target.display(),
        match export.errors.len() {
            0 => String::new(),
            n => format!(" ({n} part(s) could not be read: see errors.txt)"),
        }
    ));
    println!("{}", target.display());
    Ok(())
}

fn is_archive(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.ends_with(".tar.gz") || s.ends_with(".tgz")
}

/// `dir` as a gzipped tar at `file`, its entries under the file's base name.
fn pack(dir: &Path, file: &Path) -> Result<()> {
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = base
        .trim_end_matches(".tar.gz")
        .trim_end_matches(".tgz")
        .to_string();
    let f =
        std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(&base, dir)
        .with_context(|| format!("cannot write {}", file.display()))?;
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .with_context(|| format!("cannot finish {}", file.display()))?;
    Ok(())
}

struct Export {
    out: PathBuf,
    errors: Vec<String>,
}

/// Pod uid → "namespace_name", from the API's pod list.
type PodNames = HashMap<String, String>;

impl Export {
    fn write(&mut self, rel: &str, data: &[u8]) {
        let path = self.out.join(rel);
        let result = path
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(&path, data));
        if let Err(e) = result {
            self.errors.push(format!("{rel}: cannot write: {e}"));
        }
    }

    async fn versions(&mut self, docker: &Docker) {
        let mut text = format!("kcluster {}\n", env!("CARGO_PKG_VERSION"));
        match docker.api().version().await {
            Ok(v) => text.push_str(&format!(
                "docker {} (API {}), {} {}, kernel {}\n",
                v.version.unwrap_or_default(),
                v.api_version.unwrap_or_default(),
                v.os.unwrap_or_default(),
                v.arch.unwrap_or_default(),
                v.kernel_version.unwrap_or_default()
            )),
            Err(e) => self.errors.push(format!("docker version: {e}")),
        }
        self.write("versions.txt", text.as_bytes());
    }

    /// `docker inspect` and the whole log (with timestamps) of one container.
    async fn container(&mut self, docker: &Docker, container: &str) {
        match docker
            .api()
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(mut inspect) => {
                // The environment of a node holds nothing secret today, but the rule is simple:
                // no container environment leaves the machine in a log bundle.
                if let Some(config) = inspect.config.as_mut() {
                    config.env = None;
                }
                match serde_json::to_vec_pretty(&inspect) {
                    Ok(json) => self.write(&format!("{container}/inspect.json"), &json),
                    Err(e) => self.errors.push(format!("{container}: inspect: {e}")),
                }
            }
            Err(e) => self
                .errors
                .push(format!("{container}: docker inspect: {e}")),
        }
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .build();
        let mut stream = docker.api().logs(container, Some(options));
        let mut log = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => log.extend_from_slice(&c.into_bytes()),
                Err(e) => {
                    self.errors.push(format!("{container}: docker logs: {e}"));
                    break;
                }
            }
        }
        self.write(&format!("{container}/logs.txt"), &log);
    }

    /// The logs every pod container left on `node`, under `<node>/pods/<ns>_<pod>_<uid>/`.
    async fn pod_logs(&mut self, docker: &Docker, node: &str, pods: &PodNames) {
        let root = format!("{}/containers", crate::node::state_dir().display());
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&root)
            .build();
        let mut stream = docker.api().download_from_container(node, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => archive.extend_from_slice(&c),
                Err(e) => {
                    self.errors.push(format!("{node}: cannot read {root}: {e}"));
                    return;
                }
            }
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let entries = match tar.entries() {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(format!("{node}: {root}: not a tar: {e}"));
                return;
            }
        };
        let mut kept = Vec::new();
        for entry in entries {
            let Ok(mut entry) = entry else { continue };
            let Ok(path) = entry.path().map(|p| p.into_owned()) else {
                continue;
            };
            // containers/<id>/<file>
            let parts: Vec<_> = path.iter().map(|p| p.to_string_lossy()).collect();
            if parts.len() != 3 || !CONTAINER_FILES.contains(&parts[2].as_ref()) {
                continue;
            }
            let mut data = Vec::new();
            if std::io::Read::read_to_end(&mut entry, &mut data).is_ok() {
                kept.push((parts[1].to_string(), parts[2].to_string(), data));
            }
        }
        for (id, file, data) in kept {
            let rel = format!("{node}/pods/{}/{file}", container_dir(&id, pods));
            self.write(&rel, &data);
        }
    }

    /// The cluster's objects as JSON, and kubectl's views when kubectl is installed; returns the
    /// pods' names by uid (empty when the API cannot be reached).
    async fn kubernetes(&mut self, name: &str) -> PodNames {
        let mut pods = PodNames::new();
        let entry = match super::kubeconfig::entry(name, false).await {
            Ok(e) => e,
            Err(e) => {
                self.errors
                    .push(format!("kubernetes: no admin credentials: {e:#}"));
                return pods;
            }
        };
        let client = match super::kubeconfig::client(&entry).await {
            Ok(c) => c,
            Err(e) => {
                self.errors.push(format!("kubernetes: {e:#}"));
                return pods;
            }
        };
        for (path, file) in LISTS {
            let request = match http::Request::get(*path).body(Vec::new()) {
                Ok(r) => r,
                Err(e) => {
                    self.errors.push(format!("{path}: {e}"));
                    continue;
                }
            };
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(15),
                client.request_text(request),
            )
            .await;
            match answer {
                Ok(Ok(body)) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    if *file == "pods.json" {
                        pods = pod_names(&value);
                    }
                    let pretty = serde_json::to_vec_pretty(&value)
                        .unwrap_or_else(|_| body.clone().into_bytes());
                    self.write(&format!("kubernetes/{file}"), &pretty);
                }
                Ok(Err(e)) => self.errors.push(format!("GET {path}: {e}")),
                Err(_) => self
                    .errors
                    .push(format!("GET {path}: no answer within 15 s")),
            }
        }
        self.kubectl(&entry).await;
        pods
    }

    async fn kubectl(&mut self, entry: &crate::cluster::kubeconfig::KubeconfigEntry) {
        let Ok(rendered) = crate::cluster::kubeconfig::render(entry) else {
            return;
        };
        // Outside the export folder: the admin credentials must not end up in the bundle.
        let kubeconfig =
            std::env::temp_dir().join(format!("kcluster-export-{}.kubeconfig", std::process::id()));
        if let Err(e) = std::fs::write(&kubeconfig, rendered) {
            self.errors
                .push(format!("kubectl: cannot write a kubeconfig: {e}"));
            return;
        }
        for (file, args) in KUBECTL {
            let out = tokio::process::Command::new("kubectl")
                .args(*args)
                .arg("--request-timeout=15s")
                .env("KUBECONFIG", &kubeconfig)
                .output()
                .await;
            match out {
                Ok(out) => {
                    let mut text = out.stdout;
                    text.extend_from_slice(&out.stderr);
                    self.write(&format!("kubernetes/{file}"), &text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.errors.push(
                        "kubectl is not installed: no kubectl get/describe output (the JSON lists are there)"
                            .to_string(),
                    );
                    break;
                }
                Err(e) => self.errors.push(format!("kubectl {}: {e}", args.join(" "))),
            }
        }
        let _ = std::fs::remove_file(&kubeconfig);
    }
}

fn pod_names(list: &serde_json::Value) -> PodNames {
    let mut names = PodNames::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let meta = &item["metadata"];
        if let (Some(uid), Some(ns), Some(name)) = (
            meta["uid"].as_str(),
            meta["namespace"].as_str(),
            meta["name"].as_str(),
        ) {
            names.insert(uid.to_string(), format!("{ns}_{name}"));
        }
    }
    names
}

/// A container id is `<pod uid>-<container>-<restart>`: `<ns>_<pod>_<uid>/<container>-<restart>`
/// when the pod is known, `unknown_<uid>/…` when it is not (deleted, or no API).
fn container_dir(id: &str, pods: &PodNames) -> String {
    const UID_LEN: usize = 36;
    if id.len() > UID_LEN + 1 && id.as_bytes()[UID_LEN] == b'-' {
        let (uid, rest) = id.split_at(UID_LEN);
        let pod = pods
            .get(uid)
            .cloned()
            .unwrap_or_else(|| "unknown".to_string());
        format!("{pod}_{uid}/{}", &rest[1..])
    } else {
        format!("other/{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_dirs_name_the_pod_when_known() {
        let uid = "f43f9bfa-a602-4380-b941-27865c84d814";
        let pods = PodNames::from([(uid.to_string(), "default_bb".to_string())]);
        assert_eq!(
            container_dir(&format!("{uid}-bb-0"), &pods),
            format!("default_bb_{uid}/bb-0")
        );
        assert_eq!(
            container_dir(&format!("{uid}-web-3"), &PodNames::new()),
            format!("unknown_{uid}/web-3")
        );
        assert_eq!(container_dir("sandbox", &pods), "other/sandbox");
    }

    #[test]
    fn archives_are_told_by_their_extension() {
        assert!(is_archive(Path::new("/tmp/x.tar.gz")));
        assert!(is_archive(Path::new("logs.tgz")));
        assert!(!is_archive(Path::new("logs")));
    }

    #[test]
    fn pod_names_come_from_a_pod_list() {
        let list = serde_json::json!({"items": [
            {"metadata": {"uid": "u1", "namespace": "a", "name": "p"}},
            {"metadata": {"name": "no-uid"}}
        ]});
        assert_eq!(
            pod_names(&list),
            PodNames::from([("u1".to_string(), "a_p".to_string())])
        );
    }
}
