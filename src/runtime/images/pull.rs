//! Pulling an image from a registry into the store: resolve the reference to a manifest
//! (through an index to this machine's platform), fetch the config, and fetch and unpack each
//! layer the store does not already have — through the same layer-commit path as `image load`.
//! Every blob is checked against its digest; a reference with a digest is checked against the
//! manifest's.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use super::archive::{
    MEDIA_INDEX_DOCKER, MEDIA_INDEX_OCI, MEDIA_MANIFEST_DOCKER, MEDIA_MANIFEST_OCI, OciIndex,
    OciManifest, platform_matches,
};
use super::reference::Reference;
use super::registry::{Credentials, ErrorKind, PullError, Registry, read_limited};
use super::{Image, ImageConfig, Store, remove_tree};

const MAX_MANIFEST: usize = 4 << 20;
const MAX_CONFIG: usize = 64 << 20;
const ACCEPT: [&str; 4] = [
    MEDIA_MANIFEST_OCI,
    MEDIA_MANIFEST_DOCKER,
    MEDIA_INDEX_OCI,
    MEDIA_INDEX_DOCKER,
];

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: Image,
    /// Layers fetched from the registry (the others were in the store already).
    pub layers_fetched: usize,
    /// Compressed bytes downloaded for those layers.
    pub bytes_fetched: u64,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pulls `reference` into the store; each step of reaching the registry may take
/// `connect_timeout` ([`super::registry::CONNECT_TIMEOUT`] unless the caller is in a hurry).
pub async fn pull(
    store: &Store,
    reference: &str,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
) -> Result<Pulled, PullError> {
    let r = Reference::parse(reference)
        .map_err(|e| PullError::failed(format!("invalid reference format: {e:#}")))?;
    let mut registry = Registry::new(&r.registry, &r.repository, credentials)
        .with_connect_timeout(connect_timeout);
    let wanted = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (mut manifest_bytes, mut media_type) =
        fetch_manifest(&mut registry, &wanted, r.digest.as_deref()).await?;
    // An index (multi-platform image) leads to this platform's manifest, possibly nested.
    for _ in 0..4 {
        let looks_like_index = media_type == MEDIA_INDEX_OCI
            || media_type == MEDIA_INDEX_DOCKER
            || serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
                .ok()
                .is_some_and(|v| v.get("manifests").is_some());
        if !looks_like_index {
            break;
        }
        let index: OciIndex = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| PullError::failed(format!("the image index is not valid: {e}")))?;
        let choice = index.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| platform_matches(&p.os, &p.architecture))
        });
        let Some(choice) = choice else {
            let platforms: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            return Err(PullError::new(
                ErrorKind::NotFound,
                format!(
                    "no matching manifest for linux/{} in the manifest list entries (the image has {})",
                    arch(),
                    platforms.join(", ")
                ),
            ));
        };
        let digest = choice.digest.clone();
        (manifest_bytes, media_type) =
            fetch_manifest(&mut registry, &digest, Some(&digest)).await?;
    }
    let schema1 = media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        || serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
            .ok()
            .and_then(|v| v.get("schemaVersion").and_then(|n| n.as_u64()))
            == Some(1);
    if schema1 {
        return Err(PullError::failed(
            "the image has a Docker schema 1 manifest, which registries stopped serving: push it again with a current Docker",
        ));
    }
    let manifest: OciManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| PullError::failed(format!("the image manifest is not valid: {e}")))?;
    let manifest_digest = sha256(&manifest_bytes);

    let config_reply = registry
        .get(&format!("blobs/{}", manifest.config.digest), &[])
        .await
        .map_err(|e| blob_error(e, &manifest.config.digest))?;
    let config_bytes = read_limited(config_reply.response, MAX_CONFIG).await?;
    if sha256(&config_bytes) != manifest.config.digest {
        return Err(PullError::failed(format!(
            "the image config {} is damaged: its content hashes to {}",
            manifest.config.digest,
            sha256(&config_bytes)
        )));
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| PullError::failed(format!("the image config is not valid JSON: {e}")))?;
    if !config.os.is_empty() && config.os != "linux" {
        return Err(PullError::failed(format!(
            "the image is for {}, not linux",
            config.os
        )));
    }

    let mut layers = Vec::new();
    let (mut fetched, mut bytes) = (0, 0);
    for layer in &manifest.layers {
        if let Some(diff_id) = store.layer_for_digest(&layer.digest) {
            debug!(digest = %layer.digest, "layer already in the store");
            layers.push(diff_id);
            continue;
        }
        if layer.media_type.contains("zstd") {
            return Err(PullError::failed(format!(
                "layer {} is zstd-compressed, which is not supported yet",
                layer.digest
            )));
        }
        let (diff_id, size) = fetch_layer(store, &mut registry, &layer.digest, layer.size).await?;
        fetched += 1;
        bytes += size;
        layers.push(diff_id);
    }
    if config.rootfs.diff_ids != layers {
        return Err(PullError::failed(format!(
            "the image's layers do not match its config: the config lists {:?}, the layers unpack to {:?}",
            config.rootfs.diff_ids, layers
        )));
    }

    let store_owned = store.clone();
    let name = r.full();
    let image = tokio::task::spawn_blocking(move || -> anyhow::Result<Image> {
        let store = store_owned;
        let id = store.put_blob(&config_bytes)?;
        let manifest = store.put_blob(&manifest_bytes)?;
        let size = layers
            .iter()
            .map(|l| store.layer_info(l).map(|i| i.size).unwrap_or(0))
            .sum();
        let image = Image {
            id,
            names: vec![name],
            manifest: Some(manifest),
            layers,
            size,
        };
        store.add(image.clone())?;
        Ok(image)
    })
    .await
    .map_err(|e| PullError::failed(format!("storing the image failed: {e}")))??;
    info!(reference, id = %image.id, manifest = %manifest_digest, layers_fetched = fetched, bytes_fetched = bytes, "image pulled");
    Ok(Pulled {
        image,
        layers_fetched: fetched,
        bytes_fetched: bytes,
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// GETs a manifest; checks it against `digest` when one is expected. Returns it and its media type.
async fn fetch_manifest(
    registry: &mut Registry,
    reference: &str,
    digest: Option<&str>,
) -> Result<(Vec<u8>, String), PullError> {
    let reply = registry
        .get(&format!("manifests/{reference}"), &ACCEPT)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => PullError::new(
                ErrorKind::NotFound,
                format!("manifest {reference} not found: {}", e.message),
            ),
            _ => e,
        })?;
    let media_type = reply
        .response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default();
    let body = read_limited(reply.response, MAX_MANIFEST).await?;
    if let Some(digest) = digest
        && sha256(&body) != digest
    {
        return Err(PullError::failed(format!(
            "the manifest the registry {} sent for {digest} hashes to {}",
            registry.name(),
            sha256(&body)
        )));
    }
    // The body's own mediaType wins over a generic Content-Type.
    let declared = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    Ok((body, declared.unwrap_or(media_type)))
}

fn blob_error(e: PullError, digest: &str) -> PullError {
    match e.kind {
        ErrorKind::NotFound => PullError::new(
            ErrorKind::NotFound,
            format!("blob {digest} not found: {}", e.message),
        ),
        _ => e,
    }
}

/// Downloads a layer blob to a temporary file (checking its digest), then unpacks it into the
/// store. Returns its DiffID and the downloaded size.
async fn fetch_layer(
    store: &Store,
    registry: &mut Registry,
    digest: &str,
    expected_size: u64,
) -> Result<(String, u64), PullError> {
    let reply = registry
        .get(&format!("blobs/{digest}"), &[])
        .await
        .map_err(|e| blob_error(e, digest))?;
    let store_owned = store.clone();
    let dir = tokio::task::spawn_blocking(move || store_owned.temp_layer_dir())
        .await
        .map_err(|e| PullError::failed(e.to_string()))??;
    let file = dir.join("blob");
    let result = async {
        let size = download(reply.response, &file, digest, expected_size).await?;
        let store = store.clone();
        let digest = digest.to_string();
        let file = file.clone();
        let (info, _) = tokio::task::spawn_blocking(move || {
            let reader = std::fs::File::open(&file)?;
            store.unpack_layer(std::io::BufReader::new(reader), Some(&digest))
        })
        .await
        .map_err(|e| PullError::failed(e.to_string()))??;
        Ok::<_, PullError>((info.diff_id, size))
    }
    .await;
    let dir2 = dir.clone();
    let _ = tokio::task::spawn_blocking(move || remove_tree(&dir2)).await;
    result
}

async fn download(
    response: http::Response<hyper::body::Incoming>,
    path: &Path,
    digest: &str,
    expected_size: u64,
) -> Result<u64, PullError> {
    use http_body_util::BodyExt;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| PullError::failed(format!("cannot create {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            PullError::failed(format!("the download of layer {digest} broke off: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            size += data.len() as u64;
            if expected_size > 0 && size > expected_size {
                return Err(PullError::failed(format!(
                    "layer {digest} is damaged: the registry sends more than the manifest's {expected_size} bytes"
                )));
            }
            file.write_all(&data)
                .await
                .map_err(|e| PullError::failed(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| PullError::failed(format!("cannot write {}: {e}", path.display())))?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        return Err(PullError::failed(format!(
            "layer {digest} is damaged: the download hashes to {actual}"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use serde_json::json;

    use super::*;
    use crate::runtime::images::archive::tests::{layer_tar, sha};

    const TOKEN: &str = "t0k3n";

    /// A registry that wants a Bearer token from its realm (which wants Basic credentials), serves
    /// a multi-platform index, and redirects layer blobs to another path.
    struct Fake {
        port: u16,
        blobs: HashMap<String, (String, Vec<u8>)>,
    }

    fn respond(fake: &Fake, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{}/token",service="fake",scope="repository:team/app:pull""#,
            fake.port
        );
        let reply = |status: StatusCode, body: Vec<u8>| {
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        if path == "/token" {
            let query = req.uri().query().unwrap_or_default();
            let basic = format!(
                "Basic {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:p")
            );
            if auth != basic || !query.contains("scope=repository%3Ateam%2Fapp%3Apull") {
                return reply(StatusCode::UNAUTHORIZED, Vec::new());
            }
            return reply(StatusCode::OK, json!({"token": TOKEN}).to_string().into());
        }
        if let Some(hex) = path.strip_prefix("/storage/") {
            let digest = format!("sha256:{hex}");
            return match fake.blobs.get(&digest) {
                Some((_, data)) => reply(StatusCode::OK, data.clone()),
                None => reply(StatusCode::NOT_FOUND, Vec::new()),
            };
        }
        if auth != format!("Bearer {TOKEN}") {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(http::header::WWW_AUTHENTICATE, challenge)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        if path == "/v2/" {
            return reply(StatusCode::OK, b"{}".to_vec());
        }
        let Some(rest) = path.strip_prefix("/v2/team/app/") else {
            return reply(StatusCode::NOT_FOUND, Vec::new());
        };
        let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
        let name = if name == "v1" { "index" } else { name };
        match (kind, fake.blobs.get(name)) {
            ("blobs", Some((media, _))) if media == "layer" => Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(
                    http::header::LOCATION,
                    format!("/storage/{}", name.trim_start_matches("sha256:")),
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
            (_, Some((media, data))) => Response::builder()
                .header(http::header::CONTENT_TYPE, media)
                .body(Full::new(Bytes::from(data.clone())))
                .unwrap(),
            _ => reply(
                StatusCode::NOT_FOUND,
                json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
                    .to_string()
                    .into(),
            ),
        }
    }

    async fn serve(mut fake: Fake) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        fake.port = port;
        let fake = Arc::new(fake);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let response = respond(&fake, &req);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    const T: Duration = crate::runtime::images::registry::CONNECT_TIMEOUT;

    #[tokio::test]
    async fn pulls_through_a_bearer_token_an_index_and_a_redirect() {
        let tar = layer_tar(&[("hello.txt", b"hi")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let config = json!({"architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]}})
        .to_string()
        .into_bytes();
        let manifest = json!({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST_OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}]})
        .to_string()
        .into_bytes();
        let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX_OCI, "manifests": [
            {"mediaType": MEDIA_MANIFEST_OCI, "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": MEDIA_MANIFEST_OCI, "digest": sha(&manifest), "size": manifest.len(),
             "platform": {"os": "linux", "architecture": arch()}}]})
        .to_string()
        .into_bytes();
        let blobs = HashMap::from([
            (
                "index".to_string(),
                (MEDIA_INDEX_OCI.to_string(), index.clone()),
            ),
            (sha(&index), (MEDIA_INDEX_OCI.to_string(), index.clone())),
            (
                sha(&manifest),
                (MEDIA_MANIFEST_OCI.to_string(), manifest.clone()),
            ),
            (
                sha(&config),
                ("application/octet-stream".to_string(), config.clone()),
            ),
            (sha(&layer), ("layer".to_string(), layer.clone())),
        ]);
        let port = serve(Fake { port: 0, blobs }).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let host = format!("127.0.0.1:{port}");

        let refused = pull(&store, &format!("{host}/team/app:v1"), None, T)
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Unauthorized, "{refused}");

        let pulled = pull(
            &store,
            &format!("{host}/team/app:v1"),
            Some(creds.clone()),
            T,
        )
        .await
        .unwrap();
        assert_eq!(pulled.layers_fetched, 1);
        assert_eq!(pulled.image.id, sha(&config));
        assert_eq!(
            pulled.image.manifest.as_deref(),
            Some(sha(&manifest).as_str())
        );
        assert!(
            store
                .resolve(&format!("{host}/team/app:v1"))
                .unwrap()
                .is_some()
        );
        let file = store.layer_path(&sha(&tar)).unwrap().join("hello.txt");
        assert_eq!(std::fs::read(file).unwrap(), b"hi");

        // By the index's digest; the layer is in the store now and is not fetched again.
        let by_digest = format!("{host}/team/app@{}", sha(&index));
        let again = pull(&store, &by_digest, Some(creds.clone()), T)
            .await
            .unwrap();
        assert_eq!(again.layers_fetched, 0);
        assert!(store.resolve(&by_digest).unwrap().is_some());

        let missing = pull(&store, &format!("{host}/team/app:v2"), Some(creds), T)
            .await
            .unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
        assert!(missing.message.contains("MANIFEST_UNKNOWN"), "{missing}");
    }
}
