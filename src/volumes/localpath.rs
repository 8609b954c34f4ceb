//! The node's half of the local-path provisioner: volumes live in directories under
//! `/var/local-path-provisioner` on the node that holds them, so only that node can remove
//! one. Directories whose PersistentVolume is gone are removed here.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use tracing::{info, warn};

use crate::controllers::localpath::BASE_DIR;
use crate::node::client::{self, Credentials};

const SWEEP: Duration = Duration::from_secs(30);

/// Sweeps forever, reconnecting to the API server as needed.
pub async fn run_cleaner(host: String, port: u16, creds: Credentials) {
    loop {
        match client::connect(&host, port, &creds).await {
            Ok(client) => loop {
                if let Err(e) = sweep(&client, Path::new(BASE_DIR)).await {
                    warn!(error = format!("{e:#}"), "cannot clean up local volumes");
                    break;
                }
                tokio::time::sleep(SWEEP).await;
            },
            Err(e) => warn!(
                error = format!("{e:#}"),
                "local volume cleaner cannot reach the API server"
            ),
        }
        tokio::time::sleep(SWEEP).await;
    }
}

/// Removes each `pvc-*` directory under `base` whose PersistentVolume the API server no longer
/// has. Volume names carry the claim's uid and never come back, so a 404 is final.
pub async fn sweep(client: &kube::Client, base: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("pvc-") || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if pvs.get_opt(&name).await?.is_none() {
            std::fs::remove_dir_all(entry.path())?;
            info!(volume = %name, "volume deleted; its directory is removed");
        }
    }
    Ok(())
}
