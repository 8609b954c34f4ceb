//! `kcluster node incluster-get PATH` (hidden): a GET with the in-cluster configuration a pod
//! has — `KUBERNETES_SERVICE_HOST`/`PORT`, the service-account token and `ca.crt` — the way
//! client-go's `rest.InClusterConfig()` and the Python client's `load_incluster_config()` reach
//! the API server. Tests run this binary inside a pod to check that path end to end (TLS
//! verified against the cluster CA, through the `kubernetes` Service).

use anyhow::{Context, Result};

/// `by_name`: dial `kubernetes.default.svc` (cluster DNS) instead of KUBERNETES_SERVICE_HOST.
pub async fn get(path: &str, by_name: bool) -> Result<()> {
    let config = if by_name {
        kube::Config::incluster_dns()
    } else {
        kube::Config::incluster()
    }
    .context("no in-cluster configuration (is this running in a pod with a service account?)")?;
    let client = kube::Client::try_from(config).context("cannot build an in-cluster client")?;
    let request = http::Request::get(path)
        .body(Vec::new())
        .context("bad request path")?;
    let body = client
        .request_text(request)
        .await
        .with_context(|| format!("GET {path} failed"))?;
    println!("{body}");
    Ok(())
}
