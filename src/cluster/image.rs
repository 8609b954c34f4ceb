//! The node image: FROM scratch plus this very binary, built through the Docker API when the
//! image for this binary is missing. Its tag carries the version and a hash of the binary, so a
//! rebuilt binary gets a new image and a node always matches the CLI that made it.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::docker::{Docker, LABEL_VERSION};

pub const REPOSITORY: &str = "kcluster/node";

/// `kcluster/node:<version>-<first 12 hex digits of the binary's sha256>`.
pub fn tag_for(binary: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", binary.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hex::encode(hasher.finalize());
    Ok(format!(
        "{REPOSITORY}:{}-{}",
        env!("CARGO_PKG_VERSION"),
        &digest[..12]
    ))
}

pub fn own_binary() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot find the kcluster binary to put into the node image")
}

pub async fn exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.api().inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect the image {tag}")),
    }
}

/// Builds the image from `binary` unless it is already there; returns whether it built.
pub async fn ensure(docker: &Docker, binary: &Path, tag: &str) -> Result<bool> {
    if exists(docker, tag).await? {
        return Ok(false);
    }
    check_static(binary)?;
    let data =
        std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let dockerfile = format!(
        "FROM scratch\nCOPY kcluster /kcluster\nLABEL {LABEL_VERSION}=\"{}\"\nENTRYPOINT [\"/kcluster\"]\nCMD [\"node\", \"agent\"]\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut context = tar::Builder::new(Vec::with_capacity(data.len() + 4096));
    for (name, bytes, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("kcluster", data.as_slice(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        context
            .append_data(&mut header, name, bytes)
            .context("cannot pack the image build context")?;
    }
    let context = context
        .into_inner()
        .context("cannot pack the image build context")?;
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream =
        docker
            .api()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("building the node image {tag} failed"))?;
        if let Some(detail) = info.error_detail {
            bail!(
                "building the node image {tag} failed: {}",
                detail.message.unwrap_or_default()
            );
        }
    }
    if !exists(docker, tag).await? {
        bail!("the Docker engine finished building {tag} but does not have it");
    }
    Ok(true)
}

/// A dynamically linked binary would fail inside the FROM-scratch image with a cryptic
/// "no such file or directory": say so up front.
fn check_static(binary: &Path) -> Result<()> {
    let mut head = vec![0u8; 4096];
    let mut file = std::fs::File::open(binary)?;
    let n = file.read(&mut head)?;
    let head = &head[..n];
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF binary; the node image needs the Linux kcluster binary",
            binary.display()
        );
    }
    // PT_INTERP in the program headers means a dynamic loader is needed.
    let phoff = u64::from_le_bytes(head[32..40].try_into()?) as usize;
    let phentsize = u16::from_le_bytes(head[54..56].try_into()?) as usize;
    let phnum = u16::from_le_bytes(head[56..58].try_into()?) as usize;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > head.len() {
            break;
        }
        if u32::from_le_bytes(head[off..off + 4].try_into()?) == 3 {
            bail!(
                "{} is dynamically linked, so it cannot run in the FROM-scratch node image. Build it with the repository's .cargo/config.toml (static, +crt-static), or pass --image",
                binary.display()
            );
        }
    }
    Ok(())
}
