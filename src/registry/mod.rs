//! The built-in local registry: the kcluster binary in a `registry` role (`kcluster node
//! registry`, in the node image, so nothing is pulled). `api` serves the OCI distribution API
//! over plain HTTP, `storage` keeps blobs and manifests on the container's named volume,
//! `docker` runs the container (`kcluster-registry`, published on 127.0.0.1:5001, joined to
//! each cluster's network under its own name) and `hosting` writes KEP-1755's
//! `kube-public/local-registry-hosting` ConfigMap that tools such as Tilt, Skaffold and ko read.

pub mod api;
pub mod docker;
pub mod hosting;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

/// The port the registry listens on inside its container (and on the cluster networks).
pub const PORT_IN_CONTAINER: u16 = 5000;
/// Where its volume is mounted.
pub const DATA_DIR: &str = "/var/lib/registry";

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:5000")]
    pub listen: SocketAddr,
    /// Where blobs, manifests and tags live.
    #[arg(long, default_value = DATA_DIR)]
    pub root: PathBuf,
    /// Serve DELETE of manifests and blobs.
    #[arg(long)]
    pub enable_delete: bool,
}

/// Serves the registry until the process is stopped.
pub async fn serve(args: ServeArgs) -> Result<()> {
    let storage = storage::Storage::open(&args.root).await.with_context(|| {
        format!(
            "cannot prepare the registry's storage at {}",
            args.root.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(listen = %args.listen, root = %args.root.display(), delete = args.enable_delete, "registry serving");
    serve_on(listener, api::Registry::new(storage, args.enable_delete)).await
}

pub async fn serve_on(
    listener: tokio::net::TcpListener,
    registry: Arc<api::Registry>,
) -> Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(registry, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
