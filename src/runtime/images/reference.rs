//! Image references the way Docker and Kubernetes read them: `busybox` is
//! `docker.io/library/busybox:latest`, `localhost:5000/app@sha256:…` keeps its registry and digest.
//! The store keeps names in this full form so a pod's `image: busybox` finds what
//! `kcluster image load busybox` put there.

use anyhow::{Result, bail};

pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed reference: registry, repository path, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let text = text.trim();
        if text.is_empty() {
            bail!("an image reference is empty");
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)
                    .map_err(|e| anyhow::anyhow!("image reference {text:?}: {e}"))?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                && !tag.starts_with(['.', '-']);
            if !valid {
                bail!("image reference {text:?} has an invalid tag {tag:?}");
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
            });
        if !valid_repo {
            bail!(
                "image reference {text:?} is not valid: repository names are lowercase letters, digits and . _ - separated by /"
            );
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository[:tag][@digest]`, the form the store and Kubernetes' status use.
    pub fn full(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(hex)
        }
        _ => bail!("{digest:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)"),
    }
}

/// Normalizes a reference for lookups and storage; see [`Reference::full`].
pub fn normalize(text: &str) -> Result<String> {
    Ok(Reference::parse(text)?.full())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_the_default_registry_library_and_latest() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("busybox:1.36").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize("me/app:v1").unwrap(), "docker.io/me/app:v1");
        assert_eq!(
            normalize("docker.io/library/busybox:latest").unwrap(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_ports_and_digests_are_kept() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize(&format!("registry.k8s.io/pause@{digest}")).unwrap(),
            format!("registry.k8s.io/pause@{digest}")
        );
        assert_eq!(
            normalize(&format!("ghcr.io/a/b:1@{digest}")).unwrap(),
            format!("ghcr.io/a/b:1@{digest}")
        );
        let r = Reference::parse("localhost:5000/team/app:2").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("2"));
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["", "Busybox", "app:", "app@sha256:12", "a//b", "app:-x"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
