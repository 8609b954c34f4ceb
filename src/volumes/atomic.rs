//! Writes the files of a configMap, secret, downwardAPI or projected volume so that a container
//! never sees half an update: the payload goes into a fresh `..<timestamp>` directory, the
//! `..data` symlink is swapped to it with one rename, and each top-level name the user sees is a
//! symlink through `..data`. Containers that mount the whole volume see new contents at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};

pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume: its contents and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path (as in `items[].path`) → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// A path of a payload must stay inside the volume: relative, no `..` element, nothing that
/// starts with `..` (those names belong to the writer).
pub fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("the path is empty");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        bail!("{path:?} must be a relative path");
    }
    for c in p.components() {
        match c {
            Component::Normal(name) if !name.to_string_lossy().starts_with("..") => {}
            _ => bail!("{path:?} must not contain '..'"),
        }
    }
    Ok(())
}

fn first_element(path: &str) -> &str {
    path.split('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Makes `dir` hold exactly `payload`. Returns whether anything changed. `fs_group`: the group
/// that owns the files (the pod's securityContext.fsGroup), which also gets read access.
pub fn write(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<bool> {
    for path in payload.keys() {
        check_path(path).with_context(|| format!("invalid path in the volume: {path}"))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_link = dir.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_ts
        && same_contents(&dir.join(old), payload, fs_group)
    {
        return Ok(false);
    }

    let ts_name = timestamp_dir_name(dir);
    let ts_dir = dir.join(&ts_name);
    std::fs::create_dir(&ts_dir).with_context(|| format!("cannot create {}", ts_dir.display()))?;
    let filled = fill(&ts_dir, payload, fs_group);
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(e);
    }

    // The swap: a new symlink renamed over the old one is atomic.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts_name, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, &data_link)
        .with_context(|| format!("cannot swap {}", data_link.display()))?;

    // User-visible names: one symlink per top-level element, created before old ones go away.
    let wanted: BTreeSet<&str> = payload.keys().map(|p| first_element(p)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link)
                .with_context(|| format!("cannot create {}", link.display()))?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("..") || wanted.contains(name.as_str()) {
            continue;
        }
        // Only what this writer made: symlinks into ..data.
        if entry.file_type()?.is_symlink() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_ts
        && old != Path::new(&ts_name)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn fill(ts_dir: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<()> {
    for (path, file) in payload {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut f = std::fs::File::create(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        f.write_all(&file.data)
            .with_context(|| format!("cannot write {}", target.display()))?;
        let mut mode = file.mode & 0o7777;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&target, None, Some(gid))
                .with_context(|| format!("cannot give {} to group {gid}", target.display()))?;
            // What kubelet does for read-only volumes: the group may read.
            mode |= 0o440;
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", target.display()))?;
    }
    let mut dirs = vec![ts_dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let mut mode = 0o755;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&d, None, Some(gid))
                .with_context(|| format!("cannot give {} to group {gid}", d.display()))?;
            mode |= 0o2550;
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Whether `ts_dir` already holds exactly `payload`, contents and modes.
fn same_contents(ts_dir: &Path, payload: &Payload, fs_group: Option<u32>) -> bool {
    let mut found = 0usize;
    for (path, file) in payload {
        let p = ts_dir.join(path);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            return false;
        };
        let group_bits = if fs_group.is_some() { 0o440 } else { 0 };
        if !meta.is_file()
            || meta.permissions().mode() & 0o7777 != (file.mode & 0o7777) | group_bits
        {
            return false;
        }
        match std::fs::read(&p) {
            Ok(data) if data == file.data => found += 1,
            _ => return false,
        }
    }
    count_files(ts_dir) == found
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Kubernetes' name for a payload directory: `..2006_01_02_15_04_05.<nanos>`.
fn timestamp_dir_name(dir: &Path) -> String {
    let now = jiff::Timestamp::now();
    let base = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    let mut name = format!("..{base}.{:09}", now.subsec_nanosecond());
    // Two writes in the same nanosecond are unlikely, but a name must never repeat.
    let mut n = 0;
    while dir.join(&name).exists() && n < 10 {
        n += 1;
        name = format!("..{base}.{:09}{n}", now.subsec_nanosecond());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_files_behind_the_data_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let p = payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]);
        assert!(write(&dir, &p, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(dir.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        let ts = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        assert!(ts.to_string_lossy().starts_with("..20"));
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn an_update_swaps_and_removes_what_went_away() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        write(
            &dir,
            &payload(&[("a", "1", 0o644), ("b", "x", 0o644)]),
            None,
        )
        .unwrap();
        let first = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        // The same payload changes nothing.
        assert!(
            !write(
                &dir,
                &payload(&[("a", "1", 0o644), ("b", "x", 0o644)]),
                None
            )
            .unwrap()
        );
        assert!(write(&dir, &payload(&[("a", "2", 0o644)]), None).unwrap());
        let second = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!dir.join(&first).exists(), "the old payload is removed");
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "2");
        assert!(std::fs::symlink_metadata(dir.join("b")).is_err());
        // A changed mode alone is an update too.
        assert!(write(&dir, &payload(&[("a", "2", 0o600)]), None).unwrap());
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../x", "..data", ""] {
            assert!(
                write(tmp.path(), &payload(&[(bad, "1", 0o644)]), None).is_err(),
                "{bad}"
            );
        }
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    }
}
