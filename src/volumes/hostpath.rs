//! hostPath volumes: the `type` checks kubelet makes (and the creations it does for the
//! `...OrCreate` types; an untyped missing path is made a directory, as the runtime would).
//! Paths are the node container's own.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (or creates) `path` as `kind` asks; Err carries Kubernetes' wording.
pub fn check_type(path: &Path, kind: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let show = path.display();
    let file_type = meta.as_ref().ok().map(|m| m.file_type());
    match kind {
        // No checks; a missing path becomes a directory, as containerd makes it when it
        // bind-mounts a source that does not exist.
        "" if meta.is_err() => {
            std::fs::create_dir_all(path).map_err(|e| format!("failed to mkdir {show:?}: {e}"))
        }
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_err() => std::fs::create_dir_all(path)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| format!("hostPath type check failed: cannot create {show}: {e}")),
        "DirectoryOrCreate" | "Directory" => match file_type {
            Some(t) if t.is_dir() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a directory"
            )),
        },
        "FileOrCreate" if meta.is_err() => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|e| format!("hostPath type check failed: cannot create {show}: {e}")),
        "FileOrCreate" | "File" => match file_type {
            Some(t) if t.is_file() => Ok(()),
            _ => Err(format!("hostPath type check failed: {show} is not a file")),
        },
        "Socket" => match file_type {
            Some(t) if t.is_socket() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a socket file"
            )),
        },
        "CharDevice" => match file_type {
            Some(t) if t.is_char_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a character device"
            )),
        },
        "BlockDevice" => match file_type {
            Some(t) if t.is_block_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a block device"
            )),
        },
        other => Err(format!(
            "hostPath type check failed: unknown type {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_checked_with_kubernetes_wording() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();

        assert!(check_type(dir, "Directory").is_ok());
        assert_eq!(
            check_type(&file, "Directory").unwrap_err(),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert!(check_type(&dir.join("missing"), "Directory").is_err());
        let untyped = dir.join("u/v");
        check_type(&untyped, "").unwrap();
        assert!(untyped.is_dir());
        assert!(check_type(&file, "").is_ok());
        let made = dir.join("a/b");
        check_type(&made, "DirectoryOrCreate").unwrap();
        assert!(made.is_dir());
        assert!(check_type(&file, "DirectoryOrCreate").is_err());

        assert!(check_type(&file, "File").is_ok());
        assert_eq!(
            check_type(dir, "File").unwrap_err(),
            format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            )
        );
        let new_file = dir.join("g");
        check_type(&new_file, "FileOrCreate").unwrap();
        assert!(new_file.is_file());
        // No parent is made for a file.
        assert!(check_type(&dir.join("x/y"), "FileOrCreate").is_err());

        assert!(
            check_type(&file, "Socket")
                .unwrap_err()
                .ends_with("is not a socket file")
        );
        let sock = dir.join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(check_type(&sock, "Socket").is_ok());
        assert!(check_type(Path::new("/dev/null"), "CharDevice").is_ok());
        assert!(
            check_type(&file, "CharDevice")
                .unwrap_err()
                .ends_with("is not a character device")
        );
        assert!(
            check_type(Path::new("/dev/null"), "BlockDevice")
                .unwrap_err()
                .ends_with("is not a block device")
        );
        assert!(check_type(&dir.join("anything"), "").is_ok());
    }
}
