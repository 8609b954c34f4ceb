//! `kcluster node image-import` and `kcluster node images`: the node's side of
//! `kcluster image load` / `image ls`, and a debugging aid (`docker exec <node> /kcluster node images`).
//! Both are plain synchronous programs: no async runtime, no threads.

use anyhow::{Context, Result};

use crate::runtime::images::{Store, archive, human_size};

/// Reads a `docker save` archive on stdin into the store; prints the report as one JSON line.
pub fn import_stdin() -> Result<()> {
    let store = Store::open(&super::state_dir())?;
    let stdin = std::io::stdin();
    let report = archive::import(
        &store,
        std::io::BufReader::with_capacity(1 << 20, stdin.lock()),
    )?;
    // Loaded, not pulled: a failed pull of these names falls back to them.
    store.mark_loaded(&report.images)?;
    println!(
        "{}",
        serde_json::to_string(&report).context("cannot encode the report")?
    );
    Ok(())
}

/// Adds names to an image the store has (`kcluster image load` of an image a node already
/// holds); prints a report like an import's, with every layer present.
pub fn tag(id: &str, names: &[String]) -> Result<()> {
    let store = Store::open(&super::state_dir())?;
    let mut image = store
        .resolve(id)?
        .with_context(|| format!("this node has no image {id}"))?;
    let mut loaded = Vec::new();
    for name in names {
        let full = crate::runtime::images::normalize(name)?;
        if !image.names.contains(&full) {
            image.names.push(full.clone());
        }
        loaded.push(full);
    }
    store.add(image.clone())?;
    // Only the names this load gave are marked: others may have come from a registry.
    store.mark_loaded(&[crate::runtime::images::Image {
        names: loaded,
        ..image.clone()
    }])?;
    let mut layers = image.layers.clone();
    layers.sort();
    layers.dedup();
    let report = archive::Report {
        layers_existing: layers.len(),
        images: vec![image],
        ..Default::default()
    };
    println!(
        "{}",
        serde_json::to_string(&report).context("cannot encode the report")?
    );
    Ok(())
}

pub fn list(json: bool) -> Result<()> {
    let store = Store::open(&super::state_dir())?;
    let images = store.list()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&images).context("cannot encode the image list")?
        );
        return Ok(());
    }
    println!("{:<60} {:<14} {:>9} LAYERS", "IMAGE", "IMAGE ID", "SIZE");
    for image in images {
        let id: String = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        let names = if image.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            image.names.clone()
        };
        for name in names {
            println!(
                "{name:<60} {id:<14} {:>9} {}",
                human_size(image.size),
                image.layers.len()
            );
        }
    }
    Ok(())
}
