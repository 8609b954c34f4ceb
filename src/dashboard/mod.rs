//! `kcluster dashboard`: a live, read-only view of a cluster for a room to watch, served by the
//! CLI process. `watch` keeps one watch per kind with the user's kubeconfig credentials and feeds
//! the `Hub`; `model` turns those events into per-kind summaries (`summary`) and deltas;
//! `server` serves the embedded page and pushes a snapshot, then deltas, to every page over
//! Server-Sent Events.

pub mod model;
mod server;
pub mod summary;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use model::{Input, Model};

/// Messages a page may fall behind by before it is sent a fresh snapshot instead.
const BACKLOG: usize = 4096;

/// The state every page shares, and the channel that carries its changes.
pub struct Hub {
    cluster: String,
    model: Mutex<Model>,
    changes: broadcast::Sender<Arc<str>>,
}

impl Hub {
    pub fn new(cluster: &str) -> Self {
        Hub {
            cluster: cluster.to_string(),
            model: Mutex::new(Model::new()),
            changes: broadcast::channel(BACKLOG).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        // The model is plain data: a panic elsewhere cannot leave it half-updated in a way
        // that matters more than stopping the view.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn feed(&self, input: Input) {
        let mut model = self.lock();
        let deltas = model.apply(input);
        if !deltas.is_empty() {
            let message = json!({"t": "deltas", "items": deltas}).to_string();
            // No receiver is fine: no page is open.
            let _ = self.changes.send(message.into());
        }
    }

    fn snapshot_of(&self, model: &Model) -> String {
        let mut snapshot = model.snapshot();
        snapshot["cluster"] = Value::String(self.cluster.clone());
        snapshot.to_string()
    }

    pub fn snapshot(&self) -> String {
        self.snapshot_of(&self.lock())
    }

    /// A snapshot and the changes after it, with no gap: both are taken under the lock that
    /// `feed` holds while it sends.
    pub fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let model = self.lock();
        (self.snapshot_of(&model), self.changes.subscribe())
    }
}

pub struct Options {
    /// Cluster name, for the page's title and the default context.
    pub cluster: String,
    /// The kubeconfig context to use (default `kcluster-<cluster>`).
    pub context: Option<String>,
    /// A kubeconfig file instead of $KUBECONFIG / ~/.kube/config.
    pub kubeconfig: Option<std::path::PathBuf>,
    pub address: IpAddr,
    pub port: u16,
    pub open: bool,
}

pub async fn run(options: Options) -> Result<()> {
    let context = options
        .context
        .clone()
        .unwrap_or_else(|| format!("kcluster-{}", options.cluster));
    let client = client(options.kubeconfig.as_deref(), &context, &options.cluster).await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(options.address, options.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (pick another with --port, or 0 for any free one)",
                options.address, options.port
            )
        })?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    if !options.address.is_loopback() {
        eprintln!(
            "warning: the dashboard is served on {} without a login: anyone who can reach this \
             address sees your cluster with your credentials' view of it",
            options.address
        );
    }
    let host = match local.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("http://{host}:{}/", local.port());
    println!("Dashboard of {context} on {url} (ctrl-C stops it)");
    let hub = Arc::new(Hub::new(&options.cluster));
    watch::spawn_all(hub.clone(), client);
    if options.open {
        open_browser(&url);
    }
    let serve = server::serve(listener, hub, options.address.is_loopback());
    tokio::select! {
        result = serve => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn client(
    path: Option<&std::path::Path>,
    context: &str,
    cluster: &str,
) -> Result<kube::Client> {
    let kubeconfig = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p)
            .with_context(|| format!("cannot read the kubeconfig {}", p.display()))?,
        None => kube::config::Kubeconfig::read()
            .context("cannot read your kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        anyhow::bail!(
            "your kubeconfig has no context {context:?}: `kcluster export kubeconfig --name \
             {cluster}` adds it, or name another with --context"
        );
    }
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("cannot use the context {context:?} of your kubeconfig"))?;
    kube::Client::try_from(config).context("cannot build an API client from your kubeconfig")
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        // Reaped in the background: xdg-open returns once the browser has the URL.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!("cannot open a browser with {opener} ({e}): open {url} yourself"),
    }
}

#[cfg(test)]
mod tests;
