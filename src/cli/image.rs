//! `kcluster image load` and `kcluster image ls`: images from the host's Docker engine into the
//! nodes' own image stores.
//!
//! How an image travels: one `docker save` stream from the host engine (bollard
//! `export_images`) is fanned out, chunk by chunk, to `docker exec -i <node> /kcluster node
//! image-import` in every target node at once; the slowest node paces the stream. The importer
//! in the node unpacks layers it does not have and skips those it has (see
//! `runtime::images::archive`), then prints a JSON report on stdout that is read back here.
//! The archive is never written to the host's disk.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Progress;
use crate::cluster::docker::{self, Docker};
use crate::runtime::images::archive::Report;
use crate::runtime::images::{Image, human_size};

const IMPORT: [&str; 3] = ["/kcluster", "node", "image-import"];
const LIST: [&str; 4] = ["/kcluster", "node", "images", "--json"];

/// The running node containers to act on: all of the cluster's, or the ones named.
async fn target_nodes(docker: &Docker, cluster: &str, only: &[String]) -> Result<Vec<String>> {
    let containers = docker.node_containers(Some(cluster)).await?;
    if containers.is_empty() {
        bail!("there is no cluster named {cluster:?}; `kcluster list` shows the clusters");
    }
    let mut nodes = Vec::new();
    for c in &containers {
        let name = docker::container_name(c);
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        if !docker::is_running(c) {
            bail!(
                "node {name} is {}; start it (docker start {name}) or leave it out with --nodes",
                docker::state_str(c)
            );
        }
        nodes.push(name);
    }
    for wanted in only {
        if !nodes.contains(wanted) {
            let all: Vec<String> = containers.iter().map(docker::container_name).collect();
            bail!(
                "cluster {cluster:?} has no node {wanted:?}; its nodes are {}",
                all.join(", ")
            );
        }
    }
    Ok(nodes)
}

pub async fn load(
    images: &[String],
    cluster: &str,
    only: &[String],
    progress: &Progress,
) -> Result<()> {
    let docker = Docker::connect().await?;
    let nodes = target_nodes(&docker, cluster, only).await?;
    // Check every image first, so a typo in the last one does not leave the others half done.
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    for image in images {
        match docker.api().inspect_image(image).await {
            Ok(info) => {
                sizes.push(info.size.unwrap_or(0).max(0) as u64);
                ids.push(info.id.unwrap_or_default());
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => bail!(
                "the host's Docker engine has no image {image:?}: build it (docker build -t {image} …) or pull it (docker pull {image}) first"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot inspect the image {image}")),
        }
    }
    let multi = MultiProgress::with_draw_target(
        if progress.is_quiet() || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    // What each node has already: an image it holds by id only needs the name, not the stream.
    let mut present: Vec<Vec<String>> = Vec::new();
    for node in &nodes {
        present.push(node_image_ids(&docker, node).await?);
    }
    for ((image, size), id) in images.iter().zip(sizes).zip(ids) {
        let (have, need): (Vec<usize>, Vec<usize>) =
            (0..nodes.len()).partition(|&i| !id.is_empty() && present[i].contains(&id));
        let started = Instant::now();
        let mut tagged = Vec::new();
        for &i in &have {
            tagged.push(tag_in_node(&docker, &nodes[i], &id, image).await?);
        }
        let nodes: Vec<String> = need.iter().map(|&i| nodes[i].clone()).collect();
        let bar = multi.add(ProgressBar::new(size.max(1)));
        if let Ok(style) = ProgressStyle::with_template(
            " {spinner:.cyan} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{image} → {} node(s)", nodes.len()));
        let reports = if nodes.is_empty() {
            Ok(Vec::new())
        } else {
            load_one(&docker, image, &nodes, &bar).await
        };
        bar.finish_and_clear();
        let mut reports = reports?;
        reports.extend(tagged);
        let id = reports
            .first()
            .and_then(|(_, r)| r.images.first())
            .map(|i| short_id(&i.id))
            .unwrap_or_default();
        let total = reports
            .first()
            .and_then(|(_, r)| r.images.first())
            .map(|i| human_size(i.size))
            .unwrap_or_default();
        progress.say(&format!(
            "Loaded {image} ({id}, {total}) into {} node(s) in {:.1}s",
            reports.len(),
            started.elapsed().as_secs_f64()
        ));
        for (node, report) in &reports {
            progress.say(&format!(
                "  {node}: {} new layer(s), {} already present",
                report.layers_new, report.layers_existing
            ));
        }
    }
    Ok(())
}

/// Image ids in a node's store.
async fn node_image_ids(docker: &Docker, node: &str) -> Result<Vec<String>> {
    let out = docker.exec(node, &LIST).await?;
    if out.exit_code != 0 {
        bail!(
            "cannot list the images of {node}: {}",
            last_error_line(&out.stderr_text(), out.exit_code)
        );
    }
    let images: Vec<Image> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{node} printed an image list that is not JSON"))?;
    Ok(images.into_iter().map(|i| i.id).collect())
}

/// Gives an image a node already has (by id) the name it was loaded under; a report like an
/// import's with every layer present.
async fn tag_in_node(
    docker: &Docker,
    node: &str,
    id: &str,
    name: &str,
) -> Result<(String, Report)> {
    let mut cmd = vec!["/kcluster", "node", "image-tag", id];
    // An image named by its id has no name to add.
    let by_id = name
        .trim_start_matches("sha256:")
        .chars()
        .all(|c| c.is_ascii_hexdigit());
    if !by_id {
        cmd.push(name);
    }
    let out = docker.exec(node, &cmd).await?;
    if out.exit_code != 0 {
        bail!(
            "cannot name {name} in {node}: {}",
            last_error_line(&out.stderr_text(), out.exit_code)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str::<Report>(text.trim())
        .with_context(|| format!("{node} printed a report that is not JSON"))?;
    Ok((node.to_string(), report))
}

/// Streams one `docker save` into every node's importer; returns each node's report.
async fn load_one(
    docker: &Docker,
    image: &str,
    nodes: &[String],
    bar: &ProgressBar,
) -> Result<Vec<(String, Report)>> {
    let mut senders = Vec::new();
    let mut execs = Vec::new();
    for node in nodes {
        // A few chunks of slack per node; the engine sends chunks of up to a few hundred kB.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        senders.push(tx);
        execs.push(async move {
            (
                node.clone(),
                docker.exec_with_input(node, &IMPORT, Some(rx)).await,
            )
        });
    }
    let feed = async move {
        let mut stream = docker.api().export_images(&[image]);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("docker save {image} failed"))?;
            bar.inc(chunk.len() as u64);
            for tx in &senders {
                // A node whose importer already stopped reports its own error below.
                let _ = tx.send(chunk.clone()).await;
            }
        }
        drop(senders);
        anyhow::Ok(())
    };
    let (fed, results) = tokio::join!(feed, futures::future::join_all(execs));
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (node, result) in results {
        match result {
            Ok(out) if out.exit_code == 0 => {
                let text = String::from_utf8_lossy(&out.stdout);
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                match last.map(serde_json::from_str::<Report>) {
                    Some(Ok(report)) => reports.push((node, report)),
                    _ => failures.push(format!(
                        "{node}: the importer printed no report ({})",
                        out.stderr_text()
                    )),
                }
            }
            Ok(out) => failures.push(format!(
                "{node}: {}",
                last_error_line(&out.stderr_text(), out.exit_code)
            )),
            Err(e) => failures.push(format!("{node}: {e:#}")),
        }
    }
    fed?;
    if !failures.is_empty() {
        bail!("loading {image} failed on {}", failures.join("; "));
    }
    Ok(reports)
}

/// The node command's own `error: …` line, without the log lines before it.
fn last_error_line(stderr: &str, code: i64) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| {
            if stderr.is_empty() {
                format!("the importer exited with code {code}")
            } else {
                stderr.to_string()
            }
        })
}

pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub async fn list(cluster: &str, only: &[String]) -> Result<()> {
    let docker = Docker::connect().await?;
    let nodes = target_nodes(&docker, cluster, only).await?;
    let outputs =
        futures::future::join_all(nodes.iter().map(|node| docker.exec(node, &LIST))).await;
    let mut rows = Vec::new();
    for (node, out) in nodes.iter().zip(outputs) {
        let out = out?;
        if out.exit_code != 0 {
            bail!(
                "cannot list the images of {node}: {}",
                last_error_line(&out.stderr_text(), out.exit_code)
            );
        }
        let images: Vec<Image> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{node} printed an image list that is not JSON"))?;
        for image in images {
            let names = if image.names.is_empty() {
                vec!["<none>".to_string()]
            } else {
                image.names.clone()
            };
            for name in names {
                rows.push(vec![
                    node.clone(),
                    name,
                    short_id(&image.id),
                    human_size(image.size),
                ]);
            }
        }
    }
    if rows.is_empty() {
        println!(
            "No images in the nodes of {cluster:?}. Load some with `kcluster image load IMAGE`."
        );
        return Ok(());
    }
    super::list::print_table(&["NODE", "IMAGE", "IMAGE ID", "SIZE"], rows);
    Ok(())
}
