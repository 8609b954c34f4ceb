//! The registry's files on its volume:
//!
//! ```text
//! <root>/blobs/sha256/<hex>                         every blob and manifest, by digest
//! <root>/uploads/<uuid>                             uploads in progress
//! <root>/repositories/<name>/_manifests/<hex>       the manifest belongs to the repository (holds its media type)
//! <root>/repositories/<name>/_tags/<tag>            the tag's manifest digest
//! ```
//!
//! A blob appears under `blobs/` only by a rename after its digest was checked, so a reader
//! never sees a partial or wrong blob, and a failed upload leaves nothing behind.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `sha256:<64 hex>` digest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDigest(String);

impl BlobDigest {
    pub fn parse(text: &str) -> Option<BlobDigest> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| BlobDigest(text.to_string()))
    }

    pub fn of(data: &[u8]) -> BlobDigest {
        BlobDigest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    pub fn from_hasher(hasher: Sha256) -> BlobDigest {
        BlobDigest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Repository names as the distribution spec's grammar allows them: path components of
/// lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
pub fn valid_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        if bytes.is_empty()
            || !bytes[0].is_ascii_alphanumeric()
            || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_lowercase() || b.is_ascii_digit() {
                i += 1;
                continue;
            }
            // A separator: ".", "_", "__" or "-"+, always followed by an alphanumeric.
            let run = bytes[i..].iter().take_while(|c| **c == b).count();
            let ok = match b {
                b'.' => run == 1,
                b'_' => run <= 2,
                b'-' => true,
                _ => false,
            };
            if !ok {
                return false;
            }
            i += run;
        }
        true
    })
}

/// Tags as the spec allows them: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    pub async fn open(root: &Path) -> std::io::Result<Storage> {
        for dir in ["blobs/sha256", "uploads", "repositories"] {
            tokio::fs::create_dir_all(root.join(dir)).await?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &BlobDigest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn repository(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    /// The blob's size, if the registry has it.
    pub async fn blob_size(&self, digest: &BlobDigest) -> std::io::Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn new_upload(&self) -> std::io::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        tokio::fs::File::create(self.upload_path(&id)).await?;
        Ok(id)
    }

    /// The upload's size so far, if it exists.
    pub async fn upload_size(&self, id: &str) -> std::io::Result<Option<u64>> {
        match tokio::fs::metadata(self.upload_path(id)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_upload(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.upload_path(id)).await;
    }

    /// Hashes an upload from its start (when the running hash of an earlier process is lost).
    pub async fn hash_upload(&self, id: &str) -> std::io::Result<Sha256> {
        let mut file = tokio::fs::File::open(self.upload_path(id)).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(hasher);
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Moves a checked upload into place as the blob `digest`.
    pub async fn commit_upload(&self, id: &str, digest: &BlobDigest) -> std::io::Result<()> {
        let upload = self.upload_path(id);
        tokio::fs::File::open(&upload).await?.sync_all().await?;
        tokio::fs::rename(&upload, self.blob_path(digest)).await
    }

    /// Stores small content (a manifest) as a blob.
    pub async fn put_blob_bytes(&self, data: &[u8]) -> std::io::Result<BlobDigest> {
        let digest = BlobDigest::of(data);
        if self.blob_size(&digest).await?.is_none() {
            let tmp = self.upload_path(&uuid::Uuid::new_v4().to_string());
            let written = async {
                let mut file = tokio::fs::File::create(&tmp).await?;
                file.write_all(data).await?;
                file.sync_all().await?;
                tokio::fs::rename(&tmp, self.blob_path(&digest)).await
            }
            .await;
            if let Err(e) = written {
                // A full disk must not leave a half-written file taking what space is left.
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        }
        Ok(digest)
    }

    pub async fn delete_blob(&self, digest: &BlobDigest) -> std::io::Result<bool> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records that `name` holds the manifest `digest` of `media_type`, and tags it.
    pub async fn link_manifest(
        &self,
        name: &str,
        digest: &BlobDigest,
        media_type: &str,
        tag: Option<&str>,
    ) -> std::io::Result<()> {
        let repo = self.repository(name);
        write_atomic(
            &repo.join("_manifests").join(digest.hex()),
            media_type.as_bytes(),
        )
        .await?;
        if let Some(tag) = tag {
            write_atomic(&repo.join("_tags").join(tag), digest.as_str().as_bytes()).await?;
        }
        Ok(())
    }

    /// The media type of a manifest the repository holds.
    pub async fn manifest_media_type(
        &self,
        name: &str,
        digest: &BlobDigest,
    ) -> std::io::Result<Option<String>> {
        let path = self.repository(name).join("_manifests").join(digest.hex());
        match tokio::fs::read_to_string(path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn tag(&self, name: &str, tag: &str) -> std::io::Result<Option<BlobDigest>> {
        let path = self.repository(name).join("_tags").join(tag);
        match tokio::fs::read_to_string(path).await {
            Ok(t) => Ok(BlobDigest::parse(t.trim())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The repository's tags, sorted; None when the repository does not exist.
    pub async fn tags(&self, name: &str) -> std::io::Result<Option<Vec<String>>> {
        let repo = self.repository(name);
        if tokio::fs::metadata(repo.join("_manifests")).await.is_err() {
            return Ok(None);
        }
        let mut tags = Vec::new();
        match tokio::fs::read_dir(repo.join("_tags")).await {
            Ok(mut dir) => {
                while let Some(entry) = dir.next_entry().await? {
                    if let Some(t) = entry.file_name().to_str()
                        && valid_tag(t)
                    {
                        tags.push(t.to_string());
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Every repository name, sorted.
    pub async fn repositories(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join("repositories"), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let mut entries = tokio::fs::read_dir(&dir).await?;
            while let Some(entry) = entries.next_entry().await? {
                let Some(file) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if file == "_manifests" {
                    out.push(prefix.clone());
                } else if !file.starts_with('_') && entry.file_type().await?.is_dir() {
                    let name = if prefix.is_empty() {
                        file
                    } else {
                        format!("{prefix}/{file}")
                    };
                    stack.push((entry.path(), name));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the manifest from the repository and every tag that named it.
    pub async fn unlink_manifest(&self, name: &str, digest: &BlobDigest) -> std::io::Result<bool> {
        let repo = self.repository(name);
        let existed = match tokio::fs::remove_file(repo.join("_manifests").join(digest.hex())).await
        {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        for tag in self.tags(name).await?.unwrap_or_default() {
            if self.tag(name, &tag).await?.as_ref() == Some(digest) {
                let _ = tokio::fs::remove_file(repo.join("_tags").join(&tag)).await;
            }
        }
        Ok(existed)
    }
}

async fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a registry path without a parent"))?;
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let written = async {
        tokio::fs::write(&tmp, data).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["app", "e2e/app", "a.b/c_d/e__f", "x--y", "library/busybox"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "", "App", "a//b", "-a", "a-", "a..b", "a___b", "a/../b", "a b",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_tag("dev") && valid_tag("_x.1-2") && !valid_tag(".x") && !valid_tag(""));
        assert!(BlobDigest::parse(&format!("sha256:{}", "a".repeat(64))).is_some());
        assert!(BlobDigest::parse("sha256:ABC").is_none());
        assert!(BlobDigest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
    }
}
