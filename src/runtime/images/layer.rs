//! Unpacking one image layer (a tar, plain or gzip) into a directory that overlayfs can use as
//! a lower layer. The OCI/Docker whiteout files become what overlayfs understands:
//! `.wh.NAME` becomes a character device 0/0 named NAME, and `.wh..wh..opq` in a directory
//! becomes the `trusted.overlay.opaque=y` extended attribute on that directory. Device nodes
//! and FIFOs are made with mknod (the tar crate would write them as empty files).

use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads whatever is left (a tar reader stops at the end-of-archive blocks and compressed
    /// streams may have trailing bytes) so that the digest covers the whole stream.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Tells the compression from the first bytes of a stream without consuming them.
pub fn sniff<R: Read>(reader: &mut BufReader<R>) -> io::Result<Compression> {
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// What unpacking a layer found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the stream as read (the compressed blob's digest when it was compressed).
    pub digest: String,
    /// sha256 of the uncompressed tar: the layer's DiffID, which names it in the store.
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub size: u64,
}

/// Unpacks a layer stream (plain or gzip tar) into `dest`, which must exist and be empty, and
/// returns its digests. The whole stream is read.
pub fn unpack(reader: impl Read, dest: &Path) -> Result<Unpacked> {
    let mut raw = HashingReader::new(reader);
    let (diff_id, size) = {
        let mut buffered = BufReader::with_capacity(256 * 1024, &mut raw);
        let result = match sniff(&mut buffered).context("cannot read the layer")? {
            Compression::None => {
                let mut tar = HashingReader::new(&mut buffered);
                unpack_tar(&mut tar, dest)?;
                tar.finish().context("cannot read the layer")?
            }
            Compression::Gzip => {
                let mut tar =
                    HashingReader::new(flate2::bufread::MultiGzDecoder::new(&mut buffered));
                unpack_tar(&mut tar, dest)?;
                tar.finish().context("cannot decompress the gzip layer")?
            }
            Compression::Zstd => bail!(
                "zstd-compressed layers are not supported yet: save the image with plain or gzip layers (`docker save` does)"
            ),
        };
        io::copy(&mut buffered, &mut io::sink()).context("cannot read the layer")?;
        result
    };
    let (digest, _) = raw.finish().context("cannot read the layer")?;
    Ok(Unpacked {
        digest,
        diff_id,
        size,
    })
}

/// Hashes a layer stream without unpacking it: used to check whether a layer is one the store
/// already has. Returns the same digests as [`unpack`].
pub fn digest_only(reader: impl Read) -> Result<Unpacked> {
    let mut raw = HashingReader::new(reader);
    let (diff_id, size) = {
        let mut buffered = BufReader::with_capacity(256 * 1024, &mut raw);
        let result = match sniff(&mut buffered).context("cannot read the layer")? {
            Compression::None => HashingReader::new(&mut buffered).finish(),
            Compression::Gzip => {
                HashingReader::new(flate2::bufread::MultiGzDecoder::new(&mut buffered)).finish()
            }
            Compression::Zstd => bail!("zstd-compressed layers are not supported yet"),
        }
        .context("cannot read the layer")?;
        io::copy(&mut buffered, &mut io::sink()).context("cannot read the layer")?;
        result
    };
    let (digest, _) = raw.finish().context("cannot read the layer")?;
    Ok(Unpacked {
        digest,
        diff_id,
        size,
    })
}

/// The path of an entry inside `dest`, or None for entries that name `dest` itself. Absolute
/// paths are taken as relative to the layer's root; `..` is refused (a layer must not write
/// outside its directory).
fn inside(dest: &Path, path: &Path) -> Result<Option<PathBuf>> {
    let mut out = dest.to_path_buf();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => bail!(
                "the layer has an entry {} that climbs out of the image with '..'",
                path.display()
            ),
            Component::Normal(p) => out.push(p),
        }
    }
    Ok((out != dest).then_some(out))
}

/// Creates `dir` (and its parents) inside `dest` and checks that, symlinks resolved, it is still
/// inside `dest`: a layer's symlink must not lead a later entry out of the layer.
fn ensure_dir_inside(dest: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let real = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let root = dest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dest.display()))?;
    if !real.starts_with(&root) {
        bail!(
            "the layer leads {} outside the image through a symlink",
            dir.display()
        );
    }
    Ok(())
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", path.display()))
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let c_path = cstring(path)?;
    let c_name = CString::new(name).context("xattr name has a NUL byte")?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        bail!(
            "cannot set the extended attribute {name} on {}: {err} (overlay layers need a filesystem with trusted xattrs and CAP_SYS_ADMIN)",
            path.display()
        );
    }
    Ok(())
}

pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = cstring(path).ok()?;
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the buffer is valid for its length; the strings are NUL-terminated.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) -> Result<()> {
    let c_path = cstring(path)?;
    // SAFETY: the path is NUL-terminated and outlives the call.
    let rc = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            kind | (mode & 0o7777) as libc::mode_t,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        bail!(
            "cannot make the device node {}: {err} (layers with whiteouts or devices need CAP_MKNOD)",
            path.display()
        );
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("cannot replace {}", path.display()))
}

/// Extended attributes the layer asks for. overlayfs' own (`trusted.overlay.*`) are dropped: a
/// layer must not be able to set redirects or metacopy on its files.
fn wanted_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(extensions) = entry
        .pax_extensions()
        .context("bad PAX header in the layer")?
    {
        for ext in extensions {
            let ext = ext.context("bad PAX header in the layer")?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && !name.starts_with("trusted.overlay.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Unpacks an uncompressed layer tar into `dest`, turning whiteouts into overlayfs whiteouts.
pub fn unpack_tar(reader: impl Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // Applied by hand below, without overlayfs' own attributes.
    archive.set_unpack_xattrs(false);
    for entry in archive
        .entries()
        .context("the layer is not a tar archive")?
    {
        let mut entry = entry.context("the layer's tar stream is damaged")?;
        let path = entry
            .path()
            .context("the layer has an entry with a bad path")?
            .into_owned();
        let Some(target) = inside(dest, &path)? else {
            continue;
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = target.parent().unwrap_or(dest).to_path_buf();
        if name == OPAQUE_MARKER {
            // Everything below this directory in lower layers is hidden.
            ensure_dir_inside(dest, &parent)?;
            set_xattr(&parent, OPAQUE_XATTR, b"y")?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                // Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`): not content.
                continue;
            }
            ensure_dir_inside(dest, &parent)?;
            let whiteout = parent.join(hidden);
            remove_any(&whiteout)?;
            mknod(&whiteout, libc::S_IFCHR, 0, 0, 0)?;
            continue;
        }
        let kind = entry.header().entry_type();
        let special = if kind.is_character_special() {
            Some(libc::S_IFCHR)
        } else if kind.is_block_special() {
            Some(libc::S_IFBLK)
        } else if kind.is_fifo() {
            Some(libc::S_IFIFO)
        } else {
            None
        };
        let xattrs = wanted_xattrs(&mut entry)?;
        if let Some(kind) = special {
            ensure_dir_inside(dest, &parent)?;
            remove_any(&target)?;
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o600);
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            mknod(&target, kind, mode, major, minor)?;
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", target.display()))?;
        } else {
            // A file replacing a directory (or the reverse) within one layer: the later entry wins.
            if !kind.is_dir()
                && std::fs::symlink_metadata(&target)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
            {
                remove_any(&target)?;
            }
            entry
                .unpack_in(dest)
                .with_context(|| format!("cannot unpack {}", path.display()))?;
        }
        for (key, value) in xattrs {
            set_xattr(&target, &key, &value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A tar with the given (path, contents) regular files; a path ending in '/' is a directory.
    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
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
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
            }
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_of(&[
            ("etc/", b""),
            ("etc/.wh.gone", b""),
            ("var/cache/", b""),
            ("var/cache/.wh..wh..opq", b""),
            ("var/cache/new", b"fresh"),
            (".wh..wh.plnk/", b""),
        ]);
        let out = unpack(layer.as_slice(), dir.path()).unwrap();
        let gone = std::fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert_eq!(
            get_xattr(&dir.path().join("var/cache"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );
        assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
        assert_eq!(
            std::fs::read(dir.path().join("var/cache/new")).unwrap(),
            b"fresh"
        );
        assert!(!dir.path().join(".wh..wh.plnk").exists());
        // Uncompressed: the blob digest is the diff id, and both cover the whole stream.
        assert_eq!(out.digest, out.diff_id);
        assert_eq!(
            out.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&layer)))
        );
        assert_eq!(out.size, layer.len() as u64);
    }

    #[test]
    fn gzip_layers_have_a_blob_digest_and_a_diff_id() {
        use std::io::Write;
        let layer = tar_of(&[("bin/", b""), ("bin/tool", b"#!tool")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).unwrap();
        let blob = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = unpack(blob.as_slice(), dir.path()).unwrap();
        assert_eq!(
            out.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
        );
        assert_eq!(
            out.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&layer)))
        );
        assert_eq!(
            std::fs::read(dir.path().join("bin/tool")).unwrap(),
            b"#!tool"
        );
        assert_eq!(digest_only(blob.as_slice()).unwrap(), out);
    }

    #[test]
    fn entries_climbing_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("layer");
        std::fs::create_dir(&inner).unwrap();
        // A symlink to the outside, then a whiteout through it.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_cksum();
        builder
            .append_link(&mut header, "escape", dir.path())
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "escape/.wh.victim", &b""[..])
            .unwrap();
        let layer = builder.into_inner().unwrap();
        std::fs::write(dir.path().join("victim"), b"safe").unwrap();
        assert!(unpack(layer.as_slice(), &inner).is_err());
        assert_eq!(std::fs::read(dir.path().join("victim")).unwrap(), b"safe");
    }

    #[test]
    fn device_nodes_and_fifos_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, major, minor) in [
            ("dev/null", tar::EntryType::Char, 1, 3),
            ("run/fifo", tar::EntryType::Fifo, 0, 0),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o666);
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
            header.set_cksum();
            builder.append_data(&mut header, name, &b""[..]).unwrap();
        }
        let layer = builder.into_inner().unwrap();
        unpack(layer.as_slice(), dir.path()).unwrap();
        let null = std::fs::symlink_metadata(dir.path().join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        let fifo = std::fs::symlink_metadata(dir.path().join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
    }
}
