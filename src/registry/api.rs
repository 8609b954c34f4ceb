//! The OCI distribution API (what `docker push`/`pull` and the nodes' puller speak): routing,
//! uploads with digest checks, manifests by tag and digest, tags and the catalog. Error bodies
//! are the spec's `{"errors":[{"code","message","detail"}]}` with its codes and statuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::storage::{BlobDigest, Storage, valid_repository, valid_tag, valid_upload_id};

pub type Body = BoxBody<Bytes, std::io::Error>;

const MAX_MANIFEST: usize = 4 << 20;
pub const MEDIA_MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPES: [&str; 4] = [
    MEDIA_MANIFEST_DOCKER,
    MEDIA_INDEX_DOCKER,
    MEDIA_MANIFEST_OCI,
    MEDIA_INDEX_OCI,
];

/// The registry's state shared by every connection.
pub struct Registry {
    pub storage: Storage,
    pub delete_enabled: bool,
    /// Running hashes of uploads in progress, so finishing one does not read it again.
    hashes: Mutex<HashMap<String, (Sha256, u64)>>,
}

impl Registry {
    pub fn new(storage: Storage, delete_enabled: bool) -> Arc<Registry> {
        Arc::new(Registry {
            storage,
            delete_enabled,
            hashes: Mutex::new(HashMap::new()),
        })
    }
}

/// An error as the distribution spec spells it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn io(what: &str, e: std::io::Error) -> ApiError {
        warn!(error = %e, "{what}");
        if e.raw_os_error() == Some(libc::ENOSPC) {
            // distribution answers 500 UNKNOWN here, but Docker and containerd show only the
            // status line of a 5xx answer: 507 Insufficient Storage (RFC 4918) is the one that
            // reaches the user. Both are retried alike by clients; the body keeps the spec's code.
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                format!(
                    "{what}: the registry's storage is full ({e}); nothing of this upload was kept: free space on its volume, or delete the registry (`kcluster registry delete`) to drop its images"
                ),
            );
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("{what}: {e}"),
        )
    }

    fn response(&self) -> Response<Body> {
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

type Result<T> = std::result::Result<T, ApiError>;

/// What a request's path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_string()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name.to_string()));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload(name.to_string(), id.to_string()));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name.to_string(), reference.to_string()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob(name.to_string(), digest.to_string()));
    }
    None
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub async fn handle(registry: Arc<Registry>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = dispatch(&registry, req).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            debug!(%method, %path, code = e.code, message = %e.message, "refused");
            e.response()
        }
    };
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        header::HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn dispatch(registry: &Registry, req: Request<Incoming>) -> Result<Response<Body>> {
    let Some(route) = route(req.uri().path()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such API path: this is an OCI distribution registry (/v2/)",
        ));
    };
    let name = match &route {
        Route::Base | Route::Catalog => None,
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Uploads(n)
        | Route::Upload(n, _) => Some(n.clone()),
    };
    if let Some(name) = &name
        && !valid_repository(name)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}"),
        ));
    }
    let method = req.method().clone();
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(json_response(StatusCode::OK, "{}")),
        (Route::Catalog, Method::GET) => catalog(registry, &req).await,
        (Route::Tags(name), Method::GET) => tags(registry, &name, &req).await,
        (Route::Blob(name, digest), m @ (Method::GET | Method::HEAD)) => {
            get_blob(registry, &name, &digest, m == Method::HEAD).await
        }
        (Route::Blob(_, digest), Method::DELETE) => delete_blob(registry, &digest).await,
        (Route::Uploads(name), Method::POST) => start_upload(registry, &name, req).await,
        (Route::Upload(name, id), Method::PATCH) => patch_upload(registry, &name, &id, req).await,
        (Route::Upload(name, id), Method::PUT) => finish_upload(registry, &name, &id, req).await,
        (Route::Upload(name, id), Method::GET) => upload_status(registry, &name, &id).await,
        (Route::Upload(_, id), Method::DELETE) => cancel_upload(registry, &id).await,
        (Route::Manifest(name, reference), m @ (Method::GET | Method::HEAD)) => {
            get_manifest(registry, &name, &reference, m == Method::HEAD).await
        }
        (Route::Manifest(name, reference), Method::PUT) => {
            put_manifest(registry, &name, &reference, req).await
        }
        (Route::Manifest(name, reference), Method::DELETE) => {
            delete_manifest(registry, &name, &reference).await
        }
        (_, method) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported on this path"),
        )),
    }
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    let mut r = Response::new(full(body.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    r
}

fn with_headers(status: StatusCode, headers: &[(&str, String)]) -> Result<Response<Body>> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    builder
        .body(empty())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))
}

fn parse_digest(text: &str) -> Result<BlobDigest> {
    BlobDigest::parse(text).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {text:?}: only sha256:<64 lowercase hex digits> is supported"),
        )
    })
}

async fn catalog(registry: &Registry, req: &Request<Incoming>) -> Result<Response<Body>> {
    let repositories = registry
        .storage
        .repositories()
        .await
        .map_err(|e| ApiError::io("cannot list the repositories", e))?;
    let q = query(req);
    let page = paginate(repositories, &q);
    Ok(json_response(
        StatusCode::OK,
        json!({ "repositories": page }).to_string(),
    ))
}

/// `n` and `last` as the spec's pagination: entries after `last`, at most `n`.
fn paginate(items: Vec<String>, q: &HashMap<String, String>) -> Vec<String> {
    let after = q.get("last");
    let items = items
        .into_iter()
        .filter(|t| after.is_none_or(|last| t.as_str() > last.as_str()));
    match q.get("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => items.take(n).collect(),
        None => items.collect(),
    }
}

async fn tags(registry: &Registry, name: &str, req: &Request<Incoming>) -> Result<Response<Body>> {
    let tags = registry
        .storage
        .tags(name)
        .await
        .map_err(|e| ApiError::io("cannot list the tags", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                format!("repository name not known to registry: {name}"),
            )
        })?;
    let tags = paginate(tags, &query(req));
    Ok(json_response(
        StatusCode::OK,
        json!({ "name": name, "tags": tags }).to_string(),
    ))
}

fn blob_unknown(digest: &BlobDigest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
        format!("blob unknown to registry: {digest}"),
    )
}

async fn get_blob(
    registry: &Registry,
    _name: &str,
    digest: &str,
    head: bool,
) -> Result<Response<Body>> {
    let digest = parse_digest(digest)?;
    let size = registry
        .storage
        .blob_size(&digest)
        .await
        .map_err(|e| ApiError::io("cannot read the blob", e))?
        .ok_or_else(|| blob_unknown(&digest))?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, size)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""));
    let body = if head {
        empty()
    } else {
        let file = tokio::fs::File::open(registry.storage.blob_path(&digest))
            .await
            .map_err(|e| ApiError::io("cannot open the blob", e))?;
        file_body(file)
    };
    builder
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))
}

fn file_body(file: tokio::fs::File) -> Body {
    let frames = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}

async fn delete_blob(registry: &Registry, digest: &str) -> Result<Response<Body>> {
    check_delete(registry)?;
    let digest = parse_digest(digest)?;
    if !registry
        .storage
        .delete_blob(&digest)
        .await
        .map_err(|e| ApiError::io("cannot delete the blob", e))?
    {
        return Err(blob_unknown(&digest));
    }
    with_headers(StatusCode::ACCEPTED, &[])
}

fn check_delete(registry: &Registry) -> Result<()> {
    if registry.delete_enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "deletes are disabled: run the registry with --enable-delete (`kcluster registry create --enable-delete`)",
        ))
    }
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        format!("blob upload unknown to registry: {id}"),
    )
}

fn upload_accepted(name: &str, id: &str, size: u64) -> Result<Response<Body>> {
    // The spec's Range is inclusive: "0-0" also stands for an empty upload, as distribution does.
    with_headers(
        StatusCode::ACCEPTED,
        &[
            ("Location", upload_location(name, id)),
            ("Range", format!("0-{}", size.saturating_sub(1))),
            ("Docker-Upload-UUID", id.to_string()),
            ("Content-Length", "0".to_string()),
        ],
    )
}

fn blob_created(name: &str, digest: &BlobDigest) -> Result<Response<Body>> {
    created(format!("/v2/{name}/blobs/{digest}"), digest)
}

/// 201 for a stored blob or manifest: where it is and its digest.
fn created(location: String, digest: &BlobDigest) -> Result<Response<Body>> {
    with_headers(
        StatusCode::CREATED,
        &[
            ("Location", location),
            ("Docker-Content-Digest", digest.to_string()),
            ("Content-Length", "0".to_string()),
        ],
    )
}

async fn start_upload(
    registry: &Registry,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let q = query(&req);
    // Cross-repository mount: blobs are shared by every repository, so a known blob is there.
    if let Some(mount) = q.get("mount") {
        let digest = parse_digest(mount)?;
        if registry
            .storage
            .blob_size(&digest)
            .await
            .map_err(|e| ApiError::io("cannot read the blob", e))?
            .is_some()
        {
            return blob_created(name, &digest);
        }
    }
    let id = registry
        .storage
        .new_upload()
        .await
        .map_err(|e| ApiError::io("cannot start an upload", e))?;
    registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), (Sha256::new(), 0));
    // A monolithic upload: POST with ?digest= and the whole blob as the body.
    if let Some(digest) = q.get("digest") {
        let digest = parse_digest(digest)?;
        append(registry, &id, req.into_body()).await?;
        return finish(registry, name, &id, &digest).await;
    }
    upload_accepted(name, &id, 0)
}

/// Appends a request body to an upload, hashing as it goes; returns the upload's size.
async fn append(registry: &Registry, id: &str, mut body: Incoming) -> Result<u64> {
    let running = registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    let (mut hasher, mut size) = match running {
        Some(state) => state,
        None => {
            let size = registry
                .storage
                .upload_size(id)
                .await
                .map_err(|e| ApiError::io("cannot read the upload", e))?
                .ok_or_else(|| upload_unknown(id))?;
            let hasher = registry
                .storage
                .hash_upload(id)
                .await
                .map_err(|e| ApiError::io("cannot read the upload", e))?;
            (hasher, size)
        }
    };
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(registry.storage.upload_path(id))
        .await;
    let mut file = match file {
        Ok(f) => tokio::io::BufWriter::with_capacity(1 << 20, f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(upload_unknown(id)),
        Err(e) => return Err(ApiError::io("cannot open the upload", e)),
    };
    let mut failed = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                failed = Some(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    format!("the upload's body broke off: {e}"),
                ));
                break;
            }
        };
        if let Ok(data) = frame.into_data() {
            if let Err(e) = file.write_all(&data).await {
                failed = Some(ApiError::io("cannot write the upload", e));
                // Read the rest before answering: a client still sending when the connection
                // closes sees a reset instead of the answer that says why.
                while let Some(Ok(_)) = body.frame().await {}
                break;
            }
            hasher.update(&data);
            size += data.len() as u64;
        }
    }
    if failed.is_none()
        && let Err(e) = file.flush().await
    {
        failed = Some(ApiError::io("cannot write the upload", e));
    }
    if let Some(e) = failed {
        // The file and the hash disagree now: the upload cannot be continued.
        registry.storage.remove_upload(id).await;
        return Err(e);
    }
    registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string(), (hasher, size));
    Ok(size)
}

async fn check_upload(registry: &Registry, id: &str) -> Result<()> {
    if !valid_upload_id(id)
        || registry
            .storage
            .upload_size(id)
            .await
            .map_err(|e| ApiError::io("cannot read the upload", e))?
            .is_none()
    {
        return Err(upload_unknown(id));
    }
    Ok(())
}

/// How many bytes an upload holds so far.
async fn upload_size(registry: &Registry, id: &str) -> Result<u64> {
    registry
        .storage
        .upload_size(id)
        .await
        .map_err(|e| ApiError::io("cannot read the upload", e))?
        .ok_or_else(|| upload_unknown(id))
}

async fn patch_upload(
    registry: &Registry,
    name: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    check_upload(registry, id).await?;
    if let Some(range) = chunk_range(&req)? {
        check_chunk(range, upload_size(registry, id).await?)?;
    }
    let size = append(registry, id, req.into_body()).await?;
    upload_accepted(name, id, size)
}

/// A chunk's claimed place: `Content-Range: <first>-<last>` (inclusive, no unit, as the
/// distribution spec writes it) with the `Content-Length` it implies. Like the reference
/// registry, the claim is checked only when both headers are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkRange {
    first: u64,
    last: u64,
    length: u64,
}

fn chunk_range(req: &Request<Incoming>) -> Result<Option<ChunkRange>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let (Some(range), Some(length)) = (header("Content-Range"), header("Content-Length")) else {
        return Ok(None);
    };
    parse_chunk_range(range, length).map(Some)
}

fn parse_chunk_range(range: &str, length: &str) -> Result<ChunkRange> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("Content-Range {range:?} is not <first byte>-<last byte>"),
        )
    };
    let (first, last) = range.split_once('-').ok_or_else(invalid)?;
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = match (number(first), number(last)) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(invalid()),
    };
    let length = length.parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "SIZE_INVALID",
            format!("Content-Length {length:?} is not a number"),
        )
    })?;
    Ok(ChunkRange {
        first,
        last,
        length,
    })
}

/// Chunks must come in order and be as long as their range says: out of order is 416, as the
/// spec requires, so the client asks for the upload's state and resumes from there.
fn check_chunk(range: ChunkRange, size: u64) -> Result<()> {
    if range.first > range.last || range.first != size {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!(
                "invalid content range: the chunk starts at byte {}, the upload holds {size} bytes",
                range.first
            ),
        ));
    }
    if range.last - range.first + 1 != range.length {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SIZE_INVALID",
            format!(
                "provided length did not match content length: the range {}-{} is {} bytes, the body {}",
                range.first,
                range.last,
                range.last - range.first + 1,
                range.length
            ),
        ));
    }
    Ok(())
}

async fn upload_status(registry: &Registry, name: &str, id: &str) -> Result<Response<Body>> {
    check_upload(registry, id).await?;
    let mut r = upload_accepted(name, id, upload_size(registry, id).await?)?;
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn cancel_upload(registry: &Registry, id: &str) -> Result<Response<Body>> {
    check_upload(registry, id).await?;
    registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    registry.storage.remove_upload(id).await;
    with_headers(StatusCode::NO_CONTENT, &[])
}

async fn finish_upload(
    registry: &Registry,
    name: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    check_upload(registry, id).await?;
    let Some(digest) = query(&req).get("digest").cloned() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the upload's closing PUT needs ?digest=",
        ));
    };
    let digest = match parse_digest(&digest) {
        Ok(d) => d,
        Err(e) => {
            discard(registry, id).await;
            return Err(e);
        }
    };
    append(registry, id, req.into_body()).await?;
    finish(registry, name, id, &digest).await
}

async fn discard(registry: &Registry, id: &str) {
    registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    registry.storage.remove_upload(id).await;
}

/// Checks the upload against the digest the client claims; only then does it become a blob.
async fn finish(
    registry: &Registry,
    name: &str,
    id: &str,
    digest: &BlobDigest,
) -> Result<Response<Body>> {
    let running = registry
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    let hasher = match running {
        Some((hasher, _)) => hasher,
        None => registry
            .storage
            .hash_upload(id)
            .await
            .map_err(|e| ApiError::io("cannot read the upload", e))?,
    };
    let actual = BlobDigest::from_hasher(hasher);
    if &actual != digest {
        registry.storage.remove_upload(id).await;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!(
                "provided digest did not match uploaded content: the upload is {actual}, not {digest}"
            ),
        ));
    }
    if let Err(e) = registry.storage.commit_upload(id, digest).await {
        registry.storage.remove_upload(id).await;
        return Err(ApiError::io("cannot store the blob", e));
    }
    blob_created(name, digest)
}

fn manifest_unknown(reference: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
        format!("manifest unknown: {reference}"),
    )
}

/// The manifest digest a tag or digest reference names in the repository.
async fn resolve(registry: &Registry, name: &str, reference: &str) -> Result<BlobDigest> {
    if reference.starts_with("sha256:") || reference.contains(':') {
        return parse_digest(reference);
    }
    if !valid_tag(reference) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("invalid tag {reference:?}"),
        ));
    }
    registry
        .storage
        .tag(name, reference)
        .await
        .map_err(|e| ApiError::io("cannot read the tag", e))?
        .ok_or_else(|| manifest_unknown(reference))
}

async fn get_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response<Body>> {
    let digest = resolve(registry, name, reference).await?;
    let media_type = registry
        .storage
        .manifest_media_type(name, &digest)
        .await
        .map_err(|e| ApiError::io("cannot read the manifest", e))?
        .ok_or_else(|| manifest_unknown(reference))?;
    let data = match tokio::fs::read(registry.storage.blob_path(&digest)).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(manifest_unknown(reference));
        }
        Err(e) => return Err(ApiError::io("cannot read the manifest", e)),
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, data.len())
        .header("Docker-Content-Digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""));
    builder
        .body(if head { empty() } else { full(data) })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))
}

fn manifest_invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
}

async fn put_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let body = http_body_util::Limited::new(req.into_body(), MAX_MANIFEST)
        .collect()
        .await
        .map_err(|e| manifest_invalid(format!("cannot read the manifest: {e}")))?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| manifest_invalid(format!("the manifest is not JSON: {e}")))?;
    let media_type = content_type
        .filter(|t| !t.is_empty() && t != "application/octet-stream")
        .or_else(|| {
            value
                .get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .ok_or_else(|| {
            manifest_invalid("the manifest has no media type (Content-Type or mediaType)")
        })?;
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(manifest_invalid(format!(
            "unsupported manifest media type {media_type:?}: Docker schema 2 and OCI manifests and indexes are supported"
        )));
    }
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(manifest_invalid("the manifest's schemaVersion must be 2"));
    }
    let digest = BlobDigest::of(&body);
    let tag = if reference.contains(':') {
        let wanted = parse_digest(reference)?;
        if wanted != digest {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!(
                    "provided digest did not match uploaded content: the manifest is {digest}, not {wanted}"
                ),
            ));
        }
        None
    } else if valid_tag(reference) {
        Some(reference)
    } else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("invalid tag {reference:?}"),
        ));
    };
    check_references(registry, name, &media_type, &value).await?;
    let stored = registry
        .storage
        .put_blob_bytes(&body)
        .await
        .map_err(|e| ApiError::io("cannot store the manifest", e))?;
    registry
        .storage
        .link_manifest(name, &stored, &media_type, tag)
        .await
        .map_err(|e| ApiError::io("cannot store the manifest", e))?;
    created(format!("/v2/{name}/manifests/{digest}"), &digest)
}

/// A manifest may only name blobs the registry has; an index only manifests of the repository.
async fn check_references(
    registry: &Registry,
    name: &str,
    media_type: &str,
    value: &serde_json::Value,
) -> Result<()> {
    let digests = |key: &str| -> Result<Vec<BlobDigest>> {
        let entries: Vec<&serde_json::Value> = match value.get(key) {
            Some(serde_json::Value::Array(items)) => items.iter().collect(),
            Some(item @ serde_json::Value::Object(_)) => vec![item],
            _ => Vec::new(),
        };
        entries
            .into_iter()
            .map(|d| {
                let text = d.get("digest").and_then(|d| d.as_str()).unwrap_or("");
                BlobDigest::parse(text).ok_or_else(|| {
                    manifest_invalid(format!(
                        "the manifest's {key} has an invalid digest {text:?}"
                    ))
                })
            })
            .collect()
    };
    if media_type == MEDIA_INDEX_OCI || media_type == MEDIA_INDEX_DOCKER {
        for digest in digests("manifests")? {
            let known = registry
                .storage
                .manifest_media_type(name, &digest)
                .await
                .map_err(|e| ApiError::io("cannot read a manifest", e))?;
            if known.is_none() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_UNKNOWN",
                    format!(
                        "the index names the manifest {digest}, which {name} does not have: push it first"
                    ),
                ));
            }
        }
        return Ok(());
    }
    let config = digests("config")?;
    if config.is_empty() {
        return Err(manifest_invalid("the manifest has no config"));
    }
    for digest in config.into_iter().chain(digests("layers")?) {
        let known = registry
            .storage
            .blob_size(&digest)
            .await
            .map_err(|e| ApiError::io("cannot read a blob", e))?;
        if known.is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                format!("blob unknown to registry: {digest}"),
            ));
        }
    }
    Ok(())
}

async fn delete_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
) -> Result<Response<Body>> {
    check_delete(registry)?;
    if !reference.contains(':') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "manifests are deleted by digest, not by tag",
        ));
    }
    let digest = parse_digest(reference)?;
    if !registry
        .storage
        .unlink_manifest(name, &digest)
        .await
        .map_err(|e| ApiError::io("cannot delete the manifest", e))?
    {
        return Err(manifest_unknown(reference));
    }
    with_headers(StatusCode::ACCEPTED, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_names_with_slashes() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(
            route("/v2/a/b/manifests/dev"),
            Some(Route::Manifest("a/b".into(), "dev".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::Uploads("a".into()))
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/123"),
            Some(Route::Upload("a/b".into(), "123".into()))
        );
        assert_eq!(
            route("/v2/x/blobs/sha256:00"),
            Some(Route::Blob("x".into(), "sha256:00".into()))
        );
        assert_eq!(route("/v2/x/tags/list"), Some(Route::Tags("x".into())));
        assert_eq!(route("/v1/x"), None);
    }

    #[test]
    fn pagination_is_after_last_and_at_most_n() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = HashMap::from([
            ("n".to_string(), "2".to_string()),
            ("last".to_string(), "a".to_string()),
        ]);
        assert_eq!(paginate(items, &q), vec!["b", "c"]);
    }

    #[test]
    fn chunks_must_come_in_order_and_match_their_length() {
        let range = |r: &str, l: &str| parse_chunk_range(r, l);
        let ok = range("10-19", "10").expect("a well-formed range");
        assert_eq!(
            ok,
            ChunkRange {
                first: 10,
                last: 19,
                length: 10
            }
        );
        assert!(check_chunk(ok, 10).is_ok());
        let code = |r: Result<()>| r.err().map(|e| (e.status.as_u16(), e.code));
        assert_eq!(code(check_chunk(ok, 0)), Some((416, "RANGE_INVALID")));
        assert_eq!(code(check_chunk(ok, 20)), Some((416, "RANGE_INVALID")));
        let backwards = range("19-10", "10").expect("parses");
        assert_eq!(
            code(check_chunk(backwards, 19)),
            Some((416, "RANGE_INVALID"))
        );
        let short = range("10-19", "5").expect("parses");
        assert_eq!(code(check_chunk(short, 10)), Some((400, "SIZE_INVALID")));
        for bad in ["bytes 0-9", "0-", "-9", "a-b", "0-9/10", "+1-9"] {
            assert!(range(bad, "10").is_err(), "{bad:?} must be refused");
        }
        assert!(range("0-9", "ten").is_err());
    }
}
