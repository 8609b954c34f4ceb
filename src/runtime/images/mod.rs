//! The node's image store: content-addressed, on the node's volume.
//!
//! ```text
//! <state>/images/blobs/sha256/<hex>   image configs and manifests, named by their digest
//! <state>/images/index.json           images: id (config digest), names, manifest, layers, size
//! <state>/layers/<hex>/fs             one unpacked layer, named by its DiffID (uncompressed
//!                                     digest); an overlayfs lower directory, shared by every
//!                                     image and container that uses the layer
//! <state>/layers/<hex>/layer.json     its size and the compressed digests it was seen under
//! <state>/layers/by-digest/<hex>      symlink from a compressed blob's digest to its layer
//! <state>/images/loaded.json          names that `kcluster image load` put there (`loaded`)
//! ```
//!
//! Layers are unpacked once, in a temporary directory, and renamed into place: a layer
//! directory that exists is complete. Compressed layer blobs are not kept (nothing reads them
//! back; a registry pull fetches them again if ever needed). `index.json` is rewritten whole
//! under a lock and renamed into place.

pub mod archive;
pub mod credentials;
pub mod layer;
pub mod loaded;
pub mod pull;
pub mod reference;
pub mod registry;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use reference::normalize;

/// One image as the store knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The config blob's digest, as Docker and containerd name images.
    pub id: String,
    /// Full references (`docker.io/library/busybox:latest`); empty for an untagged image.
    #[serde(default)]
    pub names: Vec<String>,
    /// The manifest's digest when the image came with one (OCI layout, registries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// DiffIDs, lowest layer first.
    pub layers: Vec<String>,
    /// Uncompressed size of all layers, in bytes.
    pub size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<Image>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Compressed digests this layer has been seen under.
    #[serde(default)]
    pub digests: Vec<String>,
}

/// The parts of an image config that running a container needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: ContainerDefaults,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerDefaults {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Clone)]
pub struct Store {
    images: PathBuf,
    layers: PathBuf,
}

fn hex_of(digest: &str) -> Result<&str> {
    reference::check_digest(digest)
}

/// Writes a file through a temporary name and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

impl Store {
    /// Opens (creating if needed) the store under a node's state directory.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let store = Store {
            images: state_dir.join("images"),
            layers: state_dir.join("layers"),
        };
        for dir in [
            store.images.join("blobs/sha256"),
            store.layers.join("by-digest"),
            store.layers.join("tmp"),
        ] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(store)
    }

    /// The directory the layers live in: overlay mounts name lower directories relative to it.
    pub fn layers_dir(&self) -> &Path {
        &self.layers
    }

    /// The unpacked root of a layer, relative to [`Store::layers_dir`].
    pub fn layer_relative(diff_id: &str) -> Result<PathBuf> {
        Ok(Path::new(hex_of(diff_id)?).join("fs"))
    }

    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.layers.join(Self::layer_relative(diff_id)?))
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_path(diff_id)
            .map(|p| p.is_dir())
            .unwrap_or(false)
    }

    pub fn layer_info(&self, diff_id: &str) -> Result<LayerInfo> {
        let path = self.layers.join(hex_of(diff_id)?).join("layer.json");
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Every complete layer in the store.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.layers)
            .with_context(|| format!("cannot list {}", self.layers.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let diff_id = format!("sha256:{name}");
            if hex_of(&diff_id).is_ok() && self.has_layer(&diff_id) {
                match self.layer_info(&diff_id) {
                    Ok(info) => out.push(info),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "skipping a layer"),
                }
            }
        }
        Ok(out)
    }

    /// The layer a (compressed or not) blob digest unpacks to, if the store has it.
    pub fn layer_for_digest(&self, digest: &str) -> Option<String> {
        if self.has_layer(digest) {
            return Some(digest.to_string());
        }
        let link = self.layers.join("by-digest").join(hex_of(digest).ok()?);
        let target = std::fs::read_link(link).ok()?;
        let diff_id = format!("sha256:{}", target.file_name()?.to_string_lossy());
        self.has_layer(&diff_id).then_some(diff_id)
    }

    /// A fresh directory to unpack a layer into; [`Store::commit_layer`] moves it into place.
    pub fn temp_layer_dir(&self) -> Result<PathBuf> {
        let dir = self
            .layers
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(dir.join("fs"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Moves an unpacked layer (made by [`Store::temp_layer_dir`]) into place. Returns false
    /// when the store already had it (another import won the race); the temporary copy is then
    /// removed.
    pub fn commit_layer(&self, temp: &Path, info: &LayerInfo) -> Result<bool> {
        let hex = hex_of(&info.diff_id)?.to_string();
        write_atomic(
            &temp.join("layer.json"),
            &serde_json::to_vec_pretty(info).context("cannot encode layer info")?,
        )?;
        let dest = self.layers.join(&hex);
        let added = if dest.join("fs").is_dir() {
            false
        } else {
            match std::fs::rename(temp, &dest) {
                Ok(()) => true,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
                {
                    false
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot move the layer into {}", dest.display()));
                }
            }
        };
        if !added {
            remove_tree(temp);
        }
        for digest in &info.digests {
            self.alias_layer(digest, &info.diff_id)?;
        }
        Ok(added)
    }

    /// Unpacks a layer stream (plain or gzip tar) and moves it into place; `expected` is the
    /// stream's digest when the caller knows it (a manifest's or an archive's blob name), and a
    /// mismatch is refused. Returns the layer and whether it is new (false: the store already
    /// had it, possibly added by a concurrent import or pull).
    pub fn unpack_layer(
        &self,
        reader: impl std::io::Read,
        expected: Option<&str>,
    ) -> Result<(LayerInfo, bool)> {
        let temp = self.temp_layer_dir()?;
        let unpacked = match layer::unpack(reader, &temp.join("fs")) {
            Ok(u) => u,
            Err(e) => {
                remove_tree(&temp);
                return Err(e.context("cannot unpack a layer"));
            }
        };
        if let Some(expected) = expected
            && unpacked.digest != expected
        {
            remove_tree(&temp);
            bail!(
                "layer blob {expected} is damaged: its content hashes to {}",
                unpacked.digest
            );
        }
        let info = LayerInfo {
            diff_id: unpacked.diff_id.clone(),
            size: unpacked.size,
            digests: if unpacked.digest != unpacked.diff_id {
                vec![unpacked.digest.clone()]
            } else {
                Vec::new()
            },
        };
        let added = self.commit_layer(&temp, &info)?;
        if added {
            tracing::info!(diff_id = %info.diff_id, size = info.size, "layer unpacked");
        }
        Ok((info, added))
    }

    /// Remembers that the blob `digest` unpacks to `diff_id`, so a later import skips it by name.
    pub fn alias_layer(&self, digest: &str, diff_id: &str) -> Result<()> {
        if digest == diff_id {
            return Ok(());
        }
        let link = self.layers.join("by-digest").join(hex_of(digest)?);
        match std::os::unix::fs::symlink(Path::new("..").join(hex_of(diff_id)?), &link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", link.display())),
        }
    }

    /// Removes what crashed imports left behind (temporary layers older than an hour).
    pub fn clean_temp(&self) {
        let Ok(entries) = std::fs::read_dir(self.layers.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            if old {
                remove_tree(&entry.path());
            }
        }
    }

    pub fn put_blob(&self, data: &[u8]) -> Result<String> {
        use sha2::Digest;
        let hex = hex::encode(sha2::Sha256::digest(data));
        let path = self.images.join("blobs/sha256").join(&hex);
        if !path.exists() {
            write_atomic(&path, data)?;
        }
        Ok(format!("sha256:{hex}"))
    }

    pub fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.images.join("blobs/sha256").join(hex_of(digest)?);
        std::fs::read(&path).with_context(|| format!("the store has no blob {digest}"))
    }

    pub fn config(&self, image: &Image) -> Result<ImageConfig> {
        let data = self.blob(&image.id)?;
        serde_json::from_slice(&data)
            .with_context(|| format!("the config of image {} is not valid JSON", image.id))
    }

    fn lock(&self) -> Result<fd_lock::RwLock<std::fs::File>> {
        let path = self.images.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(fd_lock::RwLock::new(file))
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.images.join("index.json");
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).with_context(|| {
                format!(
                    "{} is damaged; move it away and load the images again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Every image, sorted by first name (untagged ones last).
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut images = self.read_index()?.images;
        images.sort_by(|a, b| {
            (a.names.is_empty(), a.names.first()).cmp(&(b.names.is_empty(), b.names.first()))
        });
        Ok(images)
    }

    /// Adds an image (or merges it with the one of the same id) and moves `names` to it. Every
    /// layer must already be in the store.
    pub fn add(&self, mut image: Image) -> Result<()> {
        for layer in &image.layers {
            if !self.has_layer(layer) {
                bail!(
                    "cannot add image {}: its layer {layer} is missing",
                    image.id
                );
            }
        }
        let mut lock = self.lock()?;
        let _guard = lock.write().context("cannot lock the image index")?;
        let mut index = self.read_index()?;
        for other in &mut index.images {
            other.names.retain(|n| !image.names.contains(n));
        }
        if let Some(existing) = index.images.iter_mut().find(|i| i.id == image.id) {
            for name in &existing.names {
                if !image.names.contains(name) {
                    image.names.push(name.clone());
                }
            }
            if image.manifest.is_none() {
                image.manifest = existing.manifest.clone();
            }
            *existing = image;
        } else {
            index.images.push(image);
        }
        // An image that lost its last name to another stays, untagged, like Docker's <none>.
        let data = serde_json::to_vec_pretty(&index).context("cannot encode the image index")?;
        write_atomic(&self.images.join("index.json"), &data)
    }

    /// The image `reference` names exactly (its normalized name, or for `name@digest` the image
    /// with that manifest digest) and that full name; never an id or an id prefix.
    pub fn find_named(&self, reference: &str) -> Result<Option<(String, Image)>> {
        let name = normalize(reference)?;
        let digest = name.split_once('@').map(|(_, d)| d.to_string());
        let found = self.list()?.into_iter().find(|i| {
            i.names.contains(&name)
                || digest.is_some() && i.manifest.as_deref() == digest.as_deref()
        });
        Ok(found.map(|i| (name, i)))
    }

    /// Finds an image by name (normalized), full id, or an unambiguous id prefix of at least
    /// 12 hex digits.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>> {
        let images = self.list()?;
        let wanted_id = reference.strip_prefix("sha256:").unwrap_or(reference);
        if wanted_id.len() >= 12 && wanted_id.chars().all(|c| c.is_ascii_hexdigit()) {
            let found: Vec<&Image> = images
                .iter()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(wanted_id))
                .collect();
            if found.len() == 1 {
                return Ok(Some(found[0].clone()));
            }
        }
        let name = normalize(reference)?;
        Ok(images.into_iter().find(|i| {
            i.names.contains(&name)
                || i.manifest.as_deref().is_some_and(|m| {
                    // name@digest finds the image whose manifest has that digest.
                    name.split_once('@').map(|(_, d)| d) == Some(m)
                })
        }))
    }
}

/// Reads files of an image straight from its unpacked layers, top layer first, honouring
/// whiteouts and opaque directories: how the user in `USER app` is looked up in the image's
/// /etc/passwd before anything is mounted. Symlinks are not followed.
pub struct LayerFiles<'a> {
    pub store: &'a Store,
    /// DiffIDs, lowest first (as in [`Image::layers`]).
    pub layers: &'a [String],
}

impl crate::runtime::spec::ImageFiles for LayerFiles<'_> {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileTypeExt;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for diff_id in self.layers.iter().rev() {
            let root = self.store.layer_path(diff_id).ok()?;
            let mut dir = root.clone();
            let mut opaque = false;
            for (i, part) in parts.iter().enumerate() {
                let here = dir.join(part);
                let meta = std::fs::symlink_metadata(&here).ok();
                if meta
                    .as_ref()
                    .is_some_and(|m| m.file_type().is_char_device())
                {
                    // A whiteout: the path (or a directory on it) was deleted in this layer.
                    return None;
                }
                if i + 1 == parts.len() {
                    if meta.is_some_and(|m| m.is_file()) {
                        return std::fs::read(&here).ok();
                    }
                } else if layer::get_xattr(&here, layer::OPAQUE_XATTR).as_deref() == Some(b"y") {
                    opaque = true;
                }
                dir = here;
            }
            if opaque {
                // An opaque directory on the path hides every lower layer below it.
                return None;
            }
        }
        None
    }
}

/// Removes a directory tree, logging rather than failing: used to clean up temporary copies.
pub fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

/// Sizes the way `docker images` prints them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500), "1.5kB");
        assert_eq!(human_size(5_313_536), "5.314MB");
    }
}
