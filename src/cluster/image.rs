//! The node image: FROM scratch plus this very binary, built through the Docker API when the
//! image for this binary is missing. Its tag carries the version and a hash of the binary, so a
//! rebuilt binary gets a new image and a node always matches the CLI that made it.

use std::io::Read;
use std::path::{Path, PathBuf};

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
    build(
        docker,
        tag,
        vec![
            ("Dockerfile".into(), dockerfile.into_bytes(), 0o644),
            ("kcluster".into(), data, 0o755),
        ],
    )
    .await?;
    Ok(true)
}

/// Builds `tag` from a context of (path, bytes, mode) entries, one of them the Dockerfile.
async fn build(docker: &Docker, tag: &str, entries: Vec<(String, Vec<u8>, u32)>) -> Result<()> {
    let size: usize = entries.iter().map(|(_, b, _)| b.len()).sum();
    let mut context = tar::Builder::new(Vec::with_capacity(size + 4096));
    for (name, bytes, mode) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        context
            .append_data(&mut header, name, bytes.as_slice())
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
    Ok(())
}

/// The etcd that clusters with several servers run in each server node, taken from this
/// machine (`--etcd-binary`, else `etcd` on PATH) with the files it needs to run in a
/// FROM-scratch image.
#[derive(Debug, Clone)]
pub struct EtcdBinary {
    pub path: PathBuf,
    pub version: String,
    /// For a dynamically linked etcd: its loader and libraries, as `ldd` names them.
    pub libraries: Vec<PathBuf>,
}

pub fn find_etcd(explicit: Option<&Path>) -> Result<EtcdBinary> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
            .context(
                "several servers run etcd in each server node, and no `etcd` is on PATH: install etcd 3.4 or newer \
                 (e.g. `apt install etcd-server`) or pass --etcd-binary, or keep the state in an etcd of yours with --store etcd=…",
            )?,
    };
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version (--etcd-binary)", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{} --version does not name an etcd version", path.display()))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (3, 4) {
        bail!(
            "{} is etcd {version}; kcluster needs etcd 3.4 or newer (its v3 JSON gateway)",
            path.display()
        );
    }
    let libraries = if is_static(&path)? {
        Vec::new()
    } else {
        let out = std::process::Command::new("ldd")
            .arg(&path)
            .output()
            .with_context(|| {
                format!(
                    "{} is dynamically linked and `ldd` cannot be run to find its libraries",
                    path.display()
                )
            })?;
        ldd_paths(&String::from_utf8_lossy(&out.stdout))
    };
    Ok(EtcdBinary {
        path,
        version,
        libraries,
    })
}

/// The absolute paths in `ldd`'s output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and the
/// loader's `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has none.
fn ldd_paths(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `<base>-etcd<first 12 hex digits of etcd's sha256>`: the node image plus etcd at
/// `node::etcd_member::BINARY`, built when missing.
pub async fn ensure_with_etcd(docker: &Docker, base: &str, etcd: &EtcdBinary) -> Result<String> {
    let data = std::fs::read(&etcd.path)
        .with_context(|| format!("cannot read {}", etcd.path.display()))?;
    let digest = hex::encode(Sha256::digest(&data));
    let tag = format!("{base}-etcd{}", &digest[..12]);
    if exists(docker, &tag).await? {
        return Ok(tag);
    }
    let mut entries = vec![
        (
            "Dockerfile".to_string(),
            format!("FROM {base}\nCOPY rootfs/ /\n").into_bytes(),
            0o644,
        ),
        (
            format!("rootfs{}", crate::node::etcd_member::BINARY),
            data,
            0o755,
        ),
    ];
    for lib in &etcd.libraries {
        let bytes = std::fs::read(lib)
            .with_context(|| format!("cannot read etcd's library {}", lib.display()))?;
        entries.push((format!("rootfs{}", lib.display()), bytes, 0o755));
    }
    build(docker, &tag, entries).await?;
    if !exists(docker, &tag).await? {
        bail!("the Docker engine finished building {tag} but does not have it");
    }
    Ok(tag)
}

/// A dynamically linked binary would fail inside the FROM-scratch image with a cryptic
/// "no such file or directory": say so up front.
fn check_static(binary: &Path) -> Result<()> {
    if !is_static(binary)? {
        bail!(
            "{} is dynamically linked, so it cannot run in the FROM-scratch node image. Build it with the repository's .cargo/config.toml (static, +crt-static), or pass --image",
            binary.display()
        );
    }
    Ok(())
}

/// Whether an ELF binary runs without a dynamic loader (no PT_INTERP program header).
fn is_static(binary: &Path) -> Result<bool> {
    let mut head = vec![0u8; 4096];
    let mut file = std::fs::File::open(binary)?;
    let n = file.read(&mut head)?;
    let head = &head[..n];
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF binary; the node image needs Linux binaries",
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
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f18)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f18)\n";
        assert_eq!(
            ldd_paths(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
