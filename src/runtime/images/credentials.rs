//! Registry credentials from imagePullSecrets: `kubernetes.io/dockerconfigjson` (a
//! `~/.docker/config.json`: `{"auths": {host: entry}}`) and the older `kubernetes.io/dockercfg`
//! (`{host: entry}`), where an entry has `auth` (base64 `user:password`) or `username` and
//! `password`. Keys are registry hosts, sometimes written as URLs
//! (`https://index.docker.io/v1/`); they are matched by host and port, as kubelet does.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;

use super::registry::Credentials;

#[derive(Debug, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Registry key → credentials, from one secret's data.
pub type Keyring = Vec<(String, Credentials)>;

/// Reads the credentials out of a secret of the given type and data.
pub fn parse_secret(type_: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Keyring> {
    let entries: BTreeMap<String, Entry> = match type_ {
        "kubernetes.io/dockerconfigjson" => {
            let raw = data
                .get(".dockerconfigjson")
                .context("the secret has no .dockerconfigjson key")?;
            serde_json::from_slice::<ConfigJson>(raw)
                .context(".dockerconfigjson is not a Docker config.json")?
                .auths
        }
        "kubernetes.io/dockercfg" => {
            let raw = data
                .get(".dockercfg")
                .context("the secret has no .dockercfg key")?;
            serde_json::from_slice(raw).context(".dockercfg is not a Docker .dockercfg file")?
        }
        other => bail!(
            "its type is {other:?}, not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"
        ),
    };
    let mut out = Vec::new();
    for (key, entry) in entries {
        let (username, password) = match (&entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .with_context(|| format!("the auth of {key:?} is not base64"))?;
                let text = String::from_utf8(decoded)
                    .with_context(|| format!("the auth of {key:?} is not text"))?;
                let (u, p) = text
                    .split_once(':')
                    .with_context(|| format!("the auth of {key:?} is not user:password"))?;
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u, p),
            _ => continue,
        };
        out.push((key, Credentials { username, password }));
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000/path` → `host:5000`.
fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

fn same_registry(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    let registry = registry.to_ascii_lowercase();
    let docker_hub = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    host == registry || (docker_hub(&host) && docker_hub(&registry))
}

/// The first credentials (secrets in the pod's order) for the registry a reference names.
pub fn lookup<'a>(keyrings: &'a [Keyring], registry: &str) -> Option<&'a Credentials> {
    keyrings
        .iter()
        .flatten()
        .find(|(key, _)| same_registry(key, registry))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_secret_formats_are_read_and_matched_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("me:secret");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"10.0.0.1:5000":{{"username":"u","password":"p"}}}}}}"#
        );
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), json.into_bytes())]);
        let ring = parse_secret("kubernetes.io/dockerconfigjson", &data).unwrap();
        let rings = vec![ring];
        assert_eq!(lookup(&rings, "docker.io").unwrap().username, "me");
        assert_eq!(lookup(&rings, "docker.io").unwrap().password, "secret");
        assert_eq!(lookup(&rings, "10.0.0.1:5000").unwrap().username, "u");
        assert!(lookup(&rings, "10.0.0.1:5001").is_none());

        let cfg = format!(r#"{{"ghcr.io":{{"auth":"{auth}"}}}}"#);
        let data = BTreeMap::from([(".dockercfg".to_string(), cfg.into_bytes())]);
        let rings = vec![parse_secret("kubernetes.io/dockercfg", &data).unwrap()];
        assert_eq!(lookup(&rings, "ghcr.io").unwrap().username, "me");

        assert!(parse_secret("Opaque", &BTreeMap::new()).is_err());
    }
}
