//! `subPath` and `subPathExpr` of a volume mount: expanding `$(VAR)` from the container's
//! environment and resolving the result inside the volume without escaping it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Kubernetes' `$(VAR)` expansion: known names are replaced, `$$` is a literal `$`, and
/// anything else stays as written. Names used but not set (or empty) are collected.
pub fn expand(text: &str, env: &BTreeMap<String, String>, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.get(name) {
                Some(v) if !v.is_empty() => out.push_str(v),
                _ => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_string());
                    }
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The subPath as a relative path of normal elements, or kubelet's complaint.
pub fn check(sub_path: &str) -> Result<PathBuf, String> {
    let p = Path::new(sub_path);
    if p.is_absolute() {
        return Err(format!(
            "subPath {sub_path:?} is not allowed to be an absolute path"
        ));
    }
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "subPath {sub_path:?} is not allowed to contain '..'"
                ));
            }
        }
    }
    Ok(clean)
}

/// `root/sub`, created as a directory when missing (as kubelet does), with symlinks resolved,
/// refused when it leads out of `root`.
pub fn resolve(root: &Path, sub: &Path) -> Result<PathBuf, String> {
    let joined = root.join(sub);
    if std::fs::symlink_metadata(&joined).is_err() {
        std::fs::create_dir_all(&joined)
            .map_err(|e| format!("failed to create subPath directory {joined:?}: {e}"))?;
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("cannot resolve {root:?}: {e}"))?;
    let real = joined
        .canonicalize()
        .map_err(|e| format!("cannot resolve subPath {joined:?}: {e}"))?;
    if !real.starts_with(&real_root) {
        return Err(format!(
            "subpath {real:?} not within volume path {real_root:?}"
        ));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = BTreeMap::from([
            ("POD".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]);
        let mut missing = vec![];
        assert_eq!(expand("logs/$(POD)", &env, &mut missing), "logs/web-0");
        assert_eq!(expand("$$(POD)/$(POD)", &env, &mut missing), "$(POD)/web-0");
        assert!(missing.is_empty());
        assert_eq!(expand("$(NOPE)/$(EMPTY)/x", &env, &mut missing), "//x");
        assert_eq!(missing, vec!["NOPE".to_string(), "EMPTY".to_string()]);
        let mut missing = vec![];
        assert_eq!(expand("a$b$(c", &env, &mut missing), "a$b$(c");
    }

    #[test]
    fn sub_paths_stay_inside_the_volume() {
        assert_eq!(check("a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(check("../x").is_err());
        assert!(check("a/../../x").is_err());
        assert!(check("/etc").is_err());

        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        let made = resolve(&root, Path::new("new/dir")).unwrap();
        assert!(made.is_dir());
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        assert!(resolve(&root, Path::new("out")).is_err());
        std::fs::write(root.join("file"), "x").unwrap();
        std::os::unix::fs::symlink("file", root.join("in")).unwrap();
        assert_eq!(
            resolve(&root, Path::new("in")).unwrap(),
            root.canonicalize().unwrap().join("file")
        );
    }
}
