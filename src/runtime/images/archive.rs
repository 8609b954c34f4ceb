//! Importing `docker save` archives, streamed: both layouts Docker writes.
//!
//! * Legacy (Docker ≤ 24): `manifest.json` lists `{Config, RepoTags, Layers}` with layers at
//!   `<v1 id>/layer.tar` (uncompressed; identical layers may be symlinks to one another) and the
//!   config at `<hex>.json`. The manifest comes last, so layer entries are hashed as they
//!   stream and matched to the manifest at the end.
//! * OCI image layout (Docker ≥ 25, buildx `type=oci`): `index.json` → manifests → config and
//!   layers, all under `blobs/sha256/<hex>`. Docker 25+ also writes a `manifest.json` like the
//!   legacy one whose paths point into `blobs/`; when present it gives the names.
//!
//! A layer the store already has is not unpacked again: OCI blobs are recognised by their
//! name; a legacy `layer.tar` whose size matches a stored layer is hashed first (spooled to a
//! temporary file) and only unpacked when it turns out to be new.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::layer;
use super::{Image, ImageConfig, Store, normalize, remove_tree};

/// JSON files (manifests, configs, indexes) larger than this are refused: they are metadata.
const MAX_JSON: u64 = 64 << 20;

pub(super) const MEDIA_MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const MEDIA_MANIFEST_DOCKER: &str =
    "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const MEDIA_INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const MEDIA_INDEX_DOCKER: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// What an import did, printed as JSON by `kcluster node image-import` for the CLI.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub images: Vec<Image>,
    /// Layers unpacked by this import.
    pub layers_new: usize,
    /// Layers the store already had (not unpacked again).
    pub layers_existing: usize,
    /// Uncompressed bytes of the new layers.
    pub bytes_new: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OciIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OciManifest {
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An archive path with `./` and leading `/` removed; `..` is kept (resolved by the caller).
fn clean(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn blob_path(digest: &str) -> Result<String> {
    Ok(format!(
        "blobs/sha256/{}",
        super::reference::check_digest(digest)?
    ))
}

struct Importer<'s> {
    store: &'s Store,
    /// Small JSON files by archive path.
    files: HashMap<String, Vec<u8>>,
    /// Layer entries by archive path → DiffID.
    layers: HashMap<String, String>,
    /// Symlinks and hard links between archive entries (legacy saves link identical layers).
    links: HashMap<String, String>,
    /// Sizes of the layers the store had when the import started.
    known_sizes: HashSet<u64>,
    new: BTreeSet<String>,
    existing: BTreeSet<String>,
    bytes_new: u64,
}

/// Imports every image in a `docker save` archive read from `reader`.
pub fn import(store: &Store, reader: impl Read) -> Result<Report> {
    store.clean_temp();
    let known_sizes = store.layers()?.iter().map(|l| l.size).collect();
    let mut importer = Importer {
        store,
        files: HashMap::new(),
        layers: HashMap::new(),
        links: HashMap::new(),
        known_sizes,
        new: BTreeSet::new(),
        existing: BTreeSet::new(),
        bytes_new: 0,
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .context("the input is not a tar archive (expected the output of `docker save`)")?
    {
        let entry = entry.context("the archive is damaged or ended early")?;
        importer.entry(entry)?;
    }
    importer.finish()
}

impl Importer<'_> {
    fn entry<R: Read>(&mut self, entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path().context("an archive entry has a bad path")?;
        let path = clean(&raw_path);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().context("bad link in the archive")? {
                let resolved = if kind.is_symlink() {
                    // Symlink targets are relative to the link's directory.
                    let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
                    clean(&dir.join(target))
                } else {
                    clean(&target)
                };
                self.links.insert(path, resolved);
            }
            return Ok(());
        }
        if !kind.is_file() {
            return Ok(());
        }
        let size = entry.header().size().unwrap_or(0);
        let top_level = !path.contains('/');
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            super::reference::check_digest(&digest)
                .with_context(|| format!("archive entry {path} is not named by a digest"))?;
            if let Some(diff_id) = self.store.layer_for_digest(&digest) {
                debug!(%digest, "layer already in the store");
                self.existing.insert(diff_id.clone());
                self.layers.insert(path, diff_id);
                return Ok(());
            }
            let mut reader = BufReader::with_capacity(64 * 1024, entry);
            let head = reader.fill_buf().context("cannot read the archive")?;
            let is_json = head
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b'{');
            if is_json {
                let data = read_json(reader, size, &path)?;
                let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
                if actual != digest {
                    bail!("archive blob {path} is damaged: its content hashes to {actual}");
                }
                self.files.insert(path, data);
            } else {
                let diff_id = self.unpack_new(reader, Some(&digest))?;
                self.layers.insert(path, diff_id);
            }
        } else if path.ends_with("/layer.tar") {
            let diff_id = if self.known_sizes.contains(&size) {
                self.spooled(entry, &path)?
            } else {
                self.unpack_new(entry, None)?
            };
            self.layers.insert(path, diff_id);
        } else if top_level && (path.ends_with(".json") || path == "repositories") {
            let data = read_json(entry, size, &path)?;
            self.files.insert(path, data);
        }
        // Anything else (legacy `<id>/json`, `<id>/VERSION`, `oci-layout`) carries nothing we use.
        Ok(())
    }

    /// Unpacks a layer the store does not have by name and returns its DiffID.
    fn unpack_new(&mut self, reader: impl Read, expected: Option<&str>) -> Result<String> {
        let (info, added) = self.store.unpack_layer(reader, expected)?;
        if added {
            self.new.insert(info.diff_id.clone());
            self.bytes_new += info.size;
        } else {
            self.existing.insert(info.diff_id.clone());
        }
        Ok(info.diff_id)
    }

    /// A legacy layer that may be one the store has: spool it while hashing, unpack only if new.
    fn spooled(&mut self, mut reader: impl Read, path: &str) -> Result<String> {
        let temp = self.store.temp_layer_dir()?;
        let spool = temp.join("spool.tar");
        let result = (|| -> Result<String> {
            let mut file = std::fs::File::create(&spool)
                .with_context(|| format!("cannot create {}", spool.display()))?;
            // Hash while spooling: for the usual uncompressed layer.tar that digest is the DiffID.
            let mut hashing = layer::HashingReader::new(&mut reader);
            std::io::copy(&mut hashing, &mut file)
                .with_context(|| format!("cannot spool {path}"))?;
            let (digest, _) = hashing.finish().context("cannot read the archive")?;
            let mut head = [0u8; 4];
            let compressed = std::io::Read::read(
                &mut std::fs::File::open(&spool)
                    .with_context(|| format!("cannot read {}", spool.display()))?,
                &mut head,
            )
            .map(|n| {
                n >= 2 && (head.starts_with(&[0x1f, 0x8b]) || head == [0x28, 0xb5, 0x2f, 0xfd])
            })
            .unwrap_or(false);
            let digests = if compressed {
                layer::digest_only(
                    std::fs::File::open(&spool)
                        .with_context(|| format!("cannot read {}", spool.display()))?,
                )?
            } else {
                layer::Unpacked {
                    diff_id: digest.clone(),
                    digest,
                    size: 0,
                }
            };
            if self.store.has_layer(&digests.diff_id) {
                debug!(diff_id = %digests.diff_id, "layer already in the store");
                self.existing.insert(digests.diff_id.clone());
                return Ok(digests.diff_id);
            }
            let file = std::fs::File::open(&spool)
                .with_context(|| format!("cannot read {}", spool.display()))?;
            self.unpack_new(file, None)
        })();
        remove_tree(&temp);
        result
    }

    fn resolve<'a>(&'a self, path: &'a str) -> String {
        let mut path = clean(Path::new(path));
        for _ in 0..16 {
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    fn file(&self, path: &str) -> Result<&[u8]> {
        let resolved = self.resolve(path);
        self.files
            .get(&resolved)
            .map(Vec::as_slice)
            .with_context(|| format!("the archive lacks {path}"))
    }

    fn layer(&self, path: &str) -> Result<String> {
        let resolved = self.resolve(path);
        self.layers
            .get(&resolved)
            .cloned()
            .with_context(|| format!("the archive lacks the layer {path}"))
    }

    /// Matches what streamed past to the manifests and records the images.
    fn finish(self) -> Result<Report> {
        let mut found: Vec<Found> = Vec::new();
        if self.files.contains_key("manifest.json") {
            let manifests: Vec<LegacyManifest> =
                serde_json::from_slice(self.file("manifest.json")?)
                    .context("the archive's manifest.json is not a docker save manifest")?;
            // With an OCI index beside it (Docker 25+), the image manifests give RepoDigests.
            let oci = self.oci_manifests().unwrap_or_default();
            for m in manifests {
                let config = self.file(&m.config)?.to_vec();
                let layers = m
                    .layers
                    .iter()
                    .map(|l| self.layer(l))
                    .collect::<Result<Vec<_>>>()?;
                let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
                let manifest = oci
                    .iter()
                    .find(|o| o.config_digest == config_digest)
                    .map(|o| o.manifest.clone());
                found.push(Found {
                    names: m.repo_tags.unwrap_or_default(),
                    config,
                    layers,
                    manifest,
                });
            }
        } else if self.files.contains_key("index.json") {
            for oci in self.oci_manifests()? {
                let config = self.file(&blob_path(&oci.config_digest)?)?.to_vec();
                let layers = oci
                    .layer_digests
                    .iter()
                    .map(|d| self.layer(&blob_path(d)?))
                    .collect::<Result<Vec<_>>>()?;
                found.push(Found {
                    names: oci.names,
                    config,
                    layers,
                    manifest: Some(oci.manifest),
                });
            }
        } else {
            bail!(
                "the archive has neither manifest.json nor index.json: it is not the output of `docker save`"
            );
        }
        if found.is_empty() {
            bail!("the archive holds no image");
        }
        let mut report = Report {
            layers_new: self.new.len(),
            layers_existing: self.existing.difference(&self.new).count(),
            bytes_new: self.bytes_new,
            ..Default::default()
        };
        for Found {
            names,
            config,
            layers,
            manifest,
        } in found
        {
            let parsed: ImageConfig =
                serde_json::from_slice(&config).context("an image config is not valid JSON")?;
            if parsed.rootfs.diff_ids != layers {
                bail!(
                    "the archive's layers do not match its image config: config lists {:?}, archive has {:?}",
                    parsed.rootfs.diff_ids,
                    layers
                );
            }
            if !parsed.os.is_empty() && parsed.os != "linux" {
                bail!("the image is for {}, not linux", parsed.os);
            }
            let names = names
                .iter()
                .map(|n| normalize(n))
                .collect::<Result<Vec<_>>>()?;
            let id = self.store.put_blob(&config)?;
            let manifest = match manifest {
                Some(m) => Some(self.store.put_blob(&m)?),
                None => None,
            };
            let mut size = 0;
            for layer in &layers {
                size += self.store.layer_info(layer).map(|l| l.size).unwrap_or(0);
            }
            let image = Image {
                id,
                names,
                manifest,
                layers,
                size,
            };
            self.store.add(image.clone())?;
            info!(id = %image.id, names = ?image.names, "image imported");
            report.images.push(image);
        }
        Ok(report)
    }

    /// The image manifests an OCI `index.json` leads to (following nested indexes), for this
    /// machine's platform.
    fn oci_manifests(&self) -> Result<Vec<OciFound>> {
        let index: OciIndex = serde_json::from_slice(self.file("index.json")?)
            .context("the archive's index.json is not an OCI index")?;
        let mut out = Vec::new();
        let mut queue: Vec<(Descriptor, Vec<String>)> = index
            .manifests
            .into_iter()
            .map(|d| (d, Vec::new()))
            .collect();
        let mut seen = HashSet::new();
        while let Some((desc, inherited)) = queue.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            if let Some(p) = &desc.platform
                && !platform_matches(&p.os, &p.architecture)
            {
                continue;
            }
            let mut names = inherited.clone();
            if let Some(annotations) = &desc.annotations {
                // containerd and Docker write the full name here; other tools only a tag.
                if let Some(name) = annotations.get("io.containerd.image.name") {
                    names.push(name.clone());
                } else if let Some(name) = annotations.get("org.opencontainers.image.ref.name")
                    && super::reference::Reference::parse(name).is_ok()
                    && (name.contains('/') || name.contains(':'))
                {
                    names.push(name.clone());
                }
            }
            // Blobs for other platforms are often left out of an archive: skip what is absent.
            let Ok(data) = self.file(&blob_path(&desc.digest)?) else {
                debug!(digest = %desc.digest, "manifest not in the archive");
                continue;
            };
            let is_index = desc.media_type == MEDIA_INDEX_OCI
                || desc.media_type == MEDIA_INDEX_DOCKER
                || serde_json::from_slice::<serde_json::Value>(data)
                    .ok()
                    .is_some_and(|v| v.get("manifests").is_some());
            if is_index {
                let nested: OciIndex = serde_json::from_slice(data)
                    .with_context(|| format!("index {} is not valid", desc.digest))?;
                queue.extend(nested.manifests.into_iter().map(|d| (d, names.clone())));
                continue;
            }
            let manifest: OciManifest = serde_json::from_slice(data)
                .with_context(|| format!("manifest {} is not valid", desc.digest))?;
            if !manifest.media_type.is_empty()
                && manifest.media_type != MEDIA_MANIFEST_OCI
                && manifest.media_type != MEDIA_MANIFEST_DOCKER
            {
                continue;
            }
            // Attestation manifests (buildx provenance) have no runnable config.
            if manifest.config.media_type.contains("in-toto") {
                continue;
            }
            out.push(OciFound {
                names,
                manifest: data.to_vec(),
                config_digest: manifest.config.digest,
                layer_digests: manifest.layers.into_iter().map(|l| l.digest).collect(),
            });
        }
        out.reverse();
        Ok(out)
    }
}

/// An image found in the archive: its names, config bytes, DiffIDs and manifest bytes.
struct Found {
    names: Vec<String>,
    config: Vec<u8>,
    layers: Vec<String>,
    manifest: Option<Vec<u8>>,
}

/// An image manifest reached through an OCI index.
struct OciFound {
    names: Vec<String>,
    manifest: Vec<u8>,
    config_digest: String,
    layer_digests: Vec<String>,
}

/// Whether an index entry's platform can run here (empty fields match anything).
pub(super) fn platform_matches(os: &str, architecture: &str) -> bool {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os.is_empty() || os == "linux") && (architecture.is_empty() || architecture == arch)
}

fn read_json(reader: impl Read, size: u64, path: &str) -> Result<Vec<u8>> {
    if size > MAX_JSON {
        bail!("archive entry {path} is {size} bytes: too large for image metadata");
    }
    let mut data = Vec::with_capacity(size as usize);
    reader
        .take(MAX_JSON)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {path} from the archive"))?;
    Ok(data)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::images::layer::OPAQUE_XATTR;
    use serde_json::json;

    pub fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    /// A layer tar with the given files ('/'-ending paths are directories, empty-content
    /// `.wh.` entries whiteouts).
    pub fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o755);
                header.set_size(data.len() as u64);
            }
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    pub fn config_for(layers: &[&[u8]], cmd: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"],
                "Cmd": cmd,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    pub struct Archive(tar::Builder<Vec<u8>>);

    impl Archive {
        pub fn new() -> Self {
            Archive(tar::Builder::new(Vec::new()))
        }
        pub fn file(mut self, path: &str, data: &[u8]) -> Self {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            self.0.append_data(&mut header, path, data).unwrap();
            self
        }
        pub fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            header.set_cksum();
            self.0.append_link(&mut header, path, target).unwrap();
            self
        }
        pub fn build(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// What Docker 20.10 writes: layer dirs, then the config, then manifest.json; the second
    /// layer dir's layer.tar is a symlink to the first (Docker does that for identical layers).
    pub fn legacy_archive(name: &str, layers: &[&[u8]], cmd: &[&str]) -> Vec<u8> {
        let config = config_for(layers, cmd);
        let config_name = format!("{}.json", sha(&config).trim_start_matches("sha256:"));
        let mut archive = Archive::new();
        let mut paths = Vec::new();
        let mut first_of: HashMap<Vec<u8>, String> = HashMap::new();
        for (i, layer) in layers.iter().enumerate() {
            let dir = format!("{:064x}", i + 1);
            let path = format!("{dir}/layer.tar");
            archive = archive
                .file(&format!("{dir}/VERSION"), b"1.0")
                .file(&format!("{dir}/json"), br#"{"id":"x"}"#);
            archive = match first_of.get(*layer) {
                Some(first) => archive.symlink(&path, &format!("../{first}")),
                None => {
                    first_of.insert(layer.to_vec(), path.clone());
                    archive.file(&path, layer)
                }
            };
            paths.push(path);
        }
        let manifest = json!([{ "Config": config_name, "RepoTags": [name], "Layers": paths }]);
        archive
            .file(&config_name, &config)
            .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
            .file("repositories", b"{}")
            .build()
    }

    /// An OCI image layout archive as Docker 25+ writes it (index.json naming the image, blobs,
    /// plus the compatibility manifest.json when `with_docker_manifest`), with gzip layers.
    pub fn oci_archive(
        name: &str,
        layers: &[&[u8]],
        cmd: &[&str],
        with_docker_manifest: bool,
    ) -> Vec<u8> {
        let config = config_for(layers, cmd);
        let blobs: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST_OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": blobs.iter().map(|b| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(b), "size": b.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX_OCI,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST_OCI, "digest": sha(&manifest), "size": manifest.len(),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"},
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }))
        .unwrap();
        let mut archive = Archive::new();
        let mut all: Vec<&[u8]> = vec![&config, &manifest];
        all.extend(blobs.iter().map(Vec::as_slice));
        for blob in all {
            archive = archive.file(
                &format!("blobs/sha256/{}", sha(blob).trim_start_matches("sha256:")),
                blob,
            );
        }
        archive = archive
            .file("index.json", &index)
            .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        if with_docker_manifest {
            let docker = json!([{
                "Config": format!("blobs/sha256/{}", sha(&config).trim_start_matches("sha256:")),
                "RepoTags": [name],
                "Layers": blobs.iter().map(|b| format!("blobs/sha256/{}", sha(b).trim_start_matches("sha256:"))).collect::<Vec<_>>(),
            }]);
            archive = archive.file("manifest.json", &serde_json::to_vec(&docker).unwrap());
        }
        archive.build()
    }

    fn base() -> Vec<u8> {
        layer_tar(&[
            ("bin/", b""),
            ("bin/hello", b"hello"),
            ("etc/", b""),
            ("etc/old", b"old"),
            ("var/cache/", b""),
            ("var/cache/a", b"a"),
        ])
    }

    fn top() -> Vec<u8> {
        layer_tar(&[
            ("etc/", b""),
            ("etc/.wh.old", b""),
            ("var/cache/", b""),
            ("var/cache/.wh..wh..opq", b""),
            ("var/cache/b", b"b"),
        ])
    }

    #[test]
    fn legacy_archive_imports_and_second_import_skips_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (base, top) = (base(), top());
        let archive = legacy_archive("demo:1", &[&base, &top, &base], &["/bin/hello"]);
        // The third layer repeats the first (a symlink in the archive, as Docker writes it).
        let report = import(&store, archive.as_slice()).unwrap();
        assert_eq!(report.layers_new, 2);
        assert_eq!(report.layers_existing, 0);
        let image = &report.images[0];
        assert_eq!(image.names, vec!["docker.io/library/demo:1"]);
        assert_eq!(image.layers, vec![sha(&base), sha(&top), sha(&base)]);
        assert_eq!(image.manifest, None);
        assert!(store.has_layer(&sha(&base)) && store.has_layer(&sha(&top)));
        let top_dir = store.layer_path(&sha(&top)).unwrap();
        assert_eq!(
            layer::get_xattr(&top_dir.join("var/cache"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );

        // Same layers again (under another name): hashed, not unpacked.
        let again = legacy_archive("demo:2", &[&base, &top, &base], &["/bin/hello"]);
        let report = import(&store, again.as_slice()).unwrap();
        assert_eq!((report.layers_new, report.layers_existing), (0, 2));
        assert_eq!(store.list().unwrap().len(), 1, "same config, same image");
        let found = store.resolve("demo:2").unwrap().unwrap();
        assert!(
            found
                .names
                .contains(&"docker.io/library/demo:1".to_string())
        );
        let by_id = store.resolve(&found.id[7..19]).unwrap().unwrap();
        assert_eq!(by_id.id, found.id);
        let config = store.config(&found).unwrap();
        assert_eq!(config.config.cmd, Some(vec!["/bin/hello".to_string()]));
    }

    #[test]
    fn oci_layout_archive_imports_with_gzip_layers_and_skips_known_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (base, top) = (base(), top());
        for with_docker_manifest in [false, true] {
            let archive = oci_archive(
                "registry.local:5000/team/demo:1",
                &[&base, &top],
                &["/bin/hello"],
                with_docker_manifest,
            );
            let report = import(&store, archive.as_slice()).unwrap();
            if with_docker_manifest {
                assert_eq!((report.layers_new, report.layers_existing), (0, 2));
            } else {
                assert_eq!((report.layers_new, report.layers_existing), (2, 0));
            }
            let image = &report.images[0];
            assert_eq!(image.names, vec!["registry.local:5000/team/demo:1"]);
            assert_eq!(image.layers, vec![sha(&base), sha(&top)]);
            assert!(image.manifest.is_some());
            assert_eq!(image.size, (base.len() + top.len()) as u64);
        }
        // The compressed digest finds the layer.
        assert_eq!(store.layer_for_digest(&sha(&gzip(&top))), Some(sha(&top)));
        // The same layers in legacy form (uncompressed) are the same layers.
        let legacy = legacy_archive("other:1", &[&base, &top], &["/bin/hello"]);
        let report = import(&store, legacy.as_slice()).unwrap();
        assert_eq!((report.layers_new, report.layers_existing), (0, 2));
    }

    #[test]
    fn damaged_and_foreign_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = import(
            &store,
            Archive::new().file("hello.txt", b"hi").build().as_slice(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("docker save"), "{err:#}");
        let err = import(&store, &b"not a tar at all, clearly not"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("archive"), "{err:#}");
        // A blob whose content does not match its name.
        let bad = Archive::new()
            .file(&format!("blobs/sha256/{}", "0".repeat(64)), b"{}")
            .build();
        let err = import(&store, bad.as_slice()).unwrap_err();
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
        // Layers that disagree with the config.
        let (base, top) = (base(), top());
        let config = config_for(&[&base], &["x"]);
        let cname = format!("{}.json", &sha(&config)[7..]);
        let manifest = json!([{"Config": cname, "RepoTags": ["x:1"], "Layers": ["a/layer.tar"]}]);
        let wrong = Archive::new()
            .file("a/layer.tar", &top)
            .file(&cname, &config)
            .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
            .build();
        let err = import(&store, wrong.as_slice()).unwrap_err();
        assert!(format!("{err:#}").contains("do not match"), "{err:#}");
        assert!(store.list().unwrap().is_empty());
    }
}
