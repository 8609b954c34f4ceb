//! The user's verbs. Each verb lives in its own file; this one parses arguments, sets up logging
//! and runs the verb on a tokio runtime.

mod create;
mod delete;
mod doctor;
pub mod duration;
mod export_logs;
mod grow;
mod image;
mod kubeconfig;
mod lifecycle;
mod list;
mod node;
mod port;
mod progress;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

pub use progress::Progress;

#[derive(Parser, Debug)]
#[command(
    name = "kcluster",
    version,
    about = "Local Kubernetes clusters in Docker, in seconds",
    propagate_version = true
)]
pub struct Cli {
    /// More logs: -v for info, -vv for debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print only errors and the results asked for.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the node variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Create a cluster and wait until every node is Ready.
    Create(CreateArgs),
    /// Delete a cluster (or all of them): containers, network, volumes and its kubeconfig entry.
    Delete(DeleteArgs),
    /// List clusters with their node counts and state.
    List,
    /// Stop every container of a cluster; it stays stopped across Docker restarts and reboots.
    Stop {
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
    },
    /// Start a stopped cluster: servers, then workers, then its host ports; waits until Ready.
    Start {
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// How long to wait for every node to be Ready again (e.g. 60s, 2m; 0 = don't wait).
        #[arg(long, default_value = "120s", value_parser = duration::parse)]
        wait: std::time::Duration,
    },
    /// Show a cluster's nodes or kubeconfig.
    #[command(subcommand)]
    Get(GetCommand),
    /// Write a cluster's kubeconfig entry into your kubeconfig file, or collect its logs.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Load images from the host's Docker engine into the nodes, and list the nodes' images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The host ports of a cluster's NodePort and LoadBalancer Services.
    #[command(subcommand)]
    Port(PortCommand),
    /// A local registry clusters pull from: `docker push localhost:5001/app:dev`.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Check what the Docker engine allows, and say what kcluster will do about it.
    Doctor,
    /// Serve a live, read-only view of a cluster for a room to watch (nodes as lanes, pods,
    /// events, replay) on http://127.0.0.1:8088.
    Dashboard(DashboardArgs),
    /// Print shell completions: `kcluster completion bash > /etc/bash_completion.d/kcluster`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Add, resize, drain and delete a cluster's nodes (the other `node` commands run inside node
    /// containers).
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Cluster name (a DNS label of at most 40 characters). Default: the config file's, else "kcluster".
    #[arg(long)]
    name: Option<String>,
    /// Number of worker nodes. Overrides the config file's workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Number of server nodes (1 to 7; 3 for a control plane that survives losing one).
    /// Several servers keep the state in an etcd member on each server node (the etcd binary
    /// comes from this machine, see --etcd-binary) unless --store etcd=… names one, and get
    /// the API load balancer `<name>-lb`. Overrides the config file's servers.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=7))]
    servers: Option<u8>,
    /// The etcd (3.4 or newer) put into the node image for several servers; default: `etcd`
    /// on PATH.
    #[arg(long, value_name = "FILE")]
    etcd_binary: Option<PathBuf>,
    /// Cluster config file (apiVersion kcluster.dev/v1alpha1, kind Cluster); see examples/.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node image to use instead of the one built from this binary.
    #[arg(long)]
    image: Option<String>,
    /// How long to wait for every node to be Ready (e.g. 60s, 2m; 0 = don't wait).
    #[arg(long, default_value = "120s", value_parser = duration::parse)]
    wait: std::time::Duration,
    /// Host port for the API server (default: picked once, then kept).
    #[arg(long)]
    api_port: Option<u16>,
    /// Host address NodePort and LoadBalancer Services are published on (default 127.0.0.1;
    /// 0.0.0.0 for every address). Overrides networking.hostAddress.
    #[arg(long)]
    host_address: Option<std::net::IpAddr>,
    /// CPUs every node may use (Docker's --cpus), e.g. 2, 1.5 or 1500m; Node capacity follows.
    /// Overrides nodes[].resources.cpus.
    #[arg(long, value_name = "CPUS")]
    node_cpus: Option<String>,
    /// Memory every node may use, swap included (e.g. 4Gi, 512Mi); Node capacity follows.
    /// Overrides nodes[].resources.memory.
    #[arg(long, value_name = "QUANTITY")]
    node_memory: Option<String>,
    /// Host port the built-in Ingress controller's HTTP is published on (the next free one
    /// when taken). Overrides ingress.httpPort.
    #[arg(long)]
    ingress_http_port: Option<u16>,
    /// Host port for the Ingress controller's HTTPS. Overrides ingress.httpsPort.
    #[arg(long)]
    ingress_https_port: Option<u16>,
    /// No built-in Ingress controller (ingress.enabled: false), e.g. to install another one.
    #[arg(long)]
    no_ingress: bool,
    /// Keep whatever was created when create fails, for debugging.
    #[arg(long)]
    retain: bool,
    /// Add the kubeconfig entry without making it the current context.
    #[arg(long)]
    no_switch_context: bool,
    /// Kubeconfig file to update (default: first path of $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Use the local registry kcluster-registry (created on 127.0.0.1:5001 when missing):
    /// nodes pull localhost:<port>/… from it.
    #[arg(long)]
    registry: bool,
    /// Use the existing registry NAME (see `kcluster registry ls`).
    #[arg(long, value_name = "NAME", conflicts_with = "registry")]
    registry_use: Option<String>,
    /// Where the cluster's state lives: `embedded` (the server node's volume) or
    /// `etcd=https://host:2379[,https://host2:2379…]`, an etcd the nodes can reach (kept under
    /// /kcluster/<name>/; must be empty there).
    #[arg(long, default_value = "embedded", value_name = "STORE")]
    store: String,
    #[command(flatten)]
    etcd_tls: EtcdTlsArgs,
}

/// TLS files for `--store etcd=…`.
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdTlsArgs {
    /// CA certificate (PEM) that signed etcd's serving certificate.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert authentication.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    pub fn config(&self, store: &str) -> anyhow::Result<Option<crate::store::etcd::EtcdConfig>> {
        crate::store::etcd::EtcdConfig::from_flags(
            store,
            self.etcd_ca.as_deref(),
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!(e))
    }
}

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Cluster name: the view uses your kubeconfig's context kcluster-<name>.
    #[arg(long, default_value = "kcluster")]
    name: String,
    /// Port to serve on (0 picks a free one).
    #[arg(long, default_value_t = 8088)]
    port: u16,
    /// Address to serve on. Anything but a loopback address lets others see the cluster
    /// without a login.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Open the page in the desktop's browser.
    #[arg(long)]
    open: bool,
    /// Kubeconfig context to use instead of kcluster-<name> (e.g. a student's limited user).
    #[arg(long)]
    context: Option<String>,
    /// Kubeconfig file to read (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Cluster name.
    #[arg(long, default_value = "kcluster", conflicts_with = "all")]
    name: String,
    /// Delete every kcluster cluster.
    #[arg(long)]
    all: bool,
    /// Kubeconfig file to remove the entry from (default: first path of $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum GetCommand {
    /// The cluster's node containers: role, state, IP.
    Nodes {
        #[arg(long, default_value = "kcluster")]
        name: String,
    },
    /// Print the cluster's kubeconfig.
    Kubeconfig {
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// Address the API server by its node name, for use from containers on the cluster's network.
        #[arg(long)]
        internal: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// Merge the cluster's entry into your kubeconfig and make it the current context.
    Kubeconfig {
        #[arg(long, default_value = "kcluster")]
        name: String,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Collect everything a bug report needs into DIR (or DIR.tar.gz): each container's docker
    /// inspect and log, every pod container's log, the cluster's objects, events and config.
    Logs {
        /// Where to write: a new or empty folder, or a file ending in .tar.gz. Default:
        /// ./kcluster-logs-<name>-<time>.
        dir: Option<PathBuf>,
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum PortCommand {
    /// Every host port of a cluster: host address:port -> Service, node port, kind.
    #[command(alias = "list")]
    Ls {
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Copy images from the host's Docker engine into every node of a cluster (or the nodes
    /// named), skipping layers a node already has. Pods can then use them without a registry.
    Load {
        /// Images as the host's Docker knows them (e.g. busybox:latest, my/app:dev).
        #[arg(required = true)]
        images: Vec<String>,
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// Only these nodes (comma-separated node names, as `kcluster get nodes` shows them).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Push them into the local registry instead (default kcluster-registry), as
        /// localhost:<port>/<repository>:<tag>: every node, present and future, pulls from there.
        #[arg(long, value_name = "REGISTRY", num_args = 0..=1, default_missing_value = crate::registry::docker::DEFAULT_NAME, conflicts_with = "nodes")]
        to_registry: Option<String>,
    },
    /// List the images in each node's store.
    #[command(alias = "list")]
    Ls {
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// Only these nodes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the run-once variant does not matter.
#[allow(clippy::large_enum_variant)]
enum NodeCommand {
    /// Add nodes to a running cluster (settings copied from a node of that role; a server
    /// joins the cluster's store, which a cluster made with one server first moves into etcd).
    Add {
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// Role of the new nodes: worker, or server (the new server's etcd member joins the
        /// store, the balancer takes it in; a cluster made with one server first gets both:
        /// its server is made anew with an etcd member holding its state, its nodes restart to
        /// dial the balancer, and their pods restart with them).
        #[arg(long, default_value = "worker")]
        role: String,
        /// How many nodes to add.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Node labels, key=value (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// How long to wait for the new nodes to be Ready (0 = don't wait).
        #[arg(long, default_value = "120s", value_parser = duration::parse)]
        wait: std::time::Duration,
        /// The etcd (3.4 or newer) for the first servers added to a cluster made with one
        /// (its state moves into an etcd member on each server); default: `etcd` on PATH.
        #[arg(long, value_name = "FILE")]
        etcd_binary: Option<PathBuf>,
    },
    /// Drain a worker (evictions honour PodDisruptionBudgets), delete its Node, container and volume.
    Delete {
        /// The node, as `kcluster get nodes` names it (e.g. dev-worker-1).
        node: String,
        /// Cluster name.
        #[arg(long, default_value = "kcluster")]
        name: String,
        /// Delete the pods without the eviction API (no disruption budget holds it back).
        #[arg(long)]
        force: bool,
        /// Give up draining after this long; the node stays cordoned.
        #[arg(long, default_value = "120s", value_parser = duration::parse)]
        timeout: std::time::Duration,
    },
    /// Give a node other CPU and memory limits (Docker's container update); the Node's
    /// capacity follows at its next heartbeat.
    Update(node::UpdateArgs),
    /// The server node: store, API server, controllers and the node's own agent.
    #[command(hide = true)]
    Server,
    /// A worker node's agent.
    #[command(hide = true)]
    Agent,
    /// Exit at once: used to test what the engine lets a node container do.
    #[command(hide = true)]
    Probe,
    /// Read a `docker save` archive on stdin into this node's image store (used by `kcluster
    /// image load`); prints a JSON report.
    #[command(hide = true)]
    ImageImport,
    /// Add names to an image this node already has (by id); prints a JSON report.
    #[command(hide = true)]
    ImageTag { id: String, names: Vec<String> },
    /// List this node's images.
    #[command(hide = true)]
    Images {
        /// As JSON (for `kcluster image ls`).
        #[arg(long)]
        json: bool,
    },
    /// List the containers on this node.
    #[command(hide = true)]
    Ps,
    /// Run the container prepared in DIR to its end (the per-container helper process).
    #[command(hide = true)]
    ContainerRun { dir: PathBuf },
    /// Create a pod's namespaces under DIR/ns (the kubelet's single-threaded sandbox helper).
    #[command(hide = true)]
    PodSandbox(crate::kubelet::sandbox::CreateArgs),
    /// Run a command in a running container on this node, with this command's stdio.
    #[command(hide = true)]
    Exec(crate::node::containers::ExecArgs),
    /// Print a container's log (`-f` follows it while it runs).
    #[command(hide = true)]
    Logs(crate::node::containers::LogsArgs),
    /// Run a command inside the running container in DIR (the per-exec helper process).
    #[command(hide = true)]
    ContainerExec(crate::runtime::exec::HelperArgs),
    /// Run one container from a loaded image, print its output, exit with its exit code
    /// (`docker exec <node> /kcluster node run-once --image busybox -- echo hi`).
    #[command(hide = true)]
    RunOnce(crate::node::containers::RunOnceArgs),
    /// The pod network by hand: attach/detach a network namespace, list addresses, measure.
    #[command(subcommand)]
    #[command(hide = true)]
    Net(crate::node::net::NetCommand),
    /// The cluster DNS server alone, watching the API server a kubeconfig names (tests).
    #[command(hide = true)]
    Dns(crate::dns::cli::DnsArgs),
    /// One DNS query (default: to the cluster DNS Service); exit 0 once it answers with an
    /// address (`kcluster create --wait` runs it in the server node).
    #[command(hide = true)]
    DnsProbe(crate::dns::probe::ProbeArgs),
    /// One GET with a pod's in-cluster configuration (service-account token, cluster CA,
    /// KUBERNETES_SERVICE_HOST); prints the body (tests run it inside pods).
    #[command(hide = true)]
    InclusterGet {
        path: String,
        /// Dial kubernetes.default.svc (through cluster DNS) instead of KUBERNETES_SERVICE_HOST.
        #[arg(long)]
        by_name: bool,
    },
    /// The cluster's port publisher: watches Services and runs one proxy container per host
    /// port (the `kcluster-<cluster>-ports` container).
    #[command(hide = true)]
    Ports(crate::ports::controller::ControllerArgs),
    /// Forward one published port to a Service's node port on the nodes (a proxy container).
    #[command(hide = true)]
    PortProxy(crate::ports::proxy::ProxyArgs),
    /// The API load balancer of a cluster with several servers (the `<cluster>-lb` container).
    #[command(hide = true)]
    Lb(crate::lb::LbArgs),
    /// The store's membership, from inside a server node that runs an etcd member.
    #[command(hide = true, subcommand)]
    EtcdMember(crate::node::etcd_member::MemberCommand),
    /// The local registry (the `kcluster-registry` container).
    Registry(crate::registry::ServeArgs),
    /// The API server alone on 127.0.0.1, with its own CA, writing a kubeconfig for it (tests).
    #[command(hide = true)]
    Apiserver {
        /// Where the store and the CA live.
        #[arg(long)]
        data_dir: PathBuf,
        /// 0 picks a free port.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Kubeconfig to write the context `kcluster-standalone` into.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Also run the controllers.
        #[arg(long)]
        controllers: bool,
        /// With --controllers: give each Node a /24 of this subnet as its pod CIDR.
        #[arg(long)]
        pod_subnet: Option<crate::cluster::cidr::Ipv4Cidr>,
        /// `embedded` (in --data-dir) or `etcd=URL[,URL…]`.
        #[arg(long, default_value = "embedded")]
        store: String,
        /// The etcd key prefix the state goes under.
        #[arg(long, default_value = "/kcluster/standalone/")]
        etcd_prefix: String,
        #[command(flatten)]
        etcd_tls: EtcdTlsArgs,
        /// How long Events are kept after their last write (kube-apiserver's --event-ttl).
        #[arg(long, default_value = "1h", value_parser = duration::parse)]
        event_ttl: std::time::Duration,
    },
}

fn init_logging(verbose: u8, node: bool, quiet_node: Option<&str>) {
    let default = match (node, verbose) {
        (true, _) => "info",
        (false, 0) => "kcluster=warn",
        (false, 1) => "kcluster=info",
        (false, _) => "kcluster=debug,kube=debug",
    };
    // Nodes set RUST_LOG=info for their long-running processes; the quiet node commands keep
    // their own filter unless -v asks for more.
    let filter = match quiet_node {
        Some(quiet) if verbose == 0 => tracing_subscriber::EnvFilter::new(quiet),
        // An empty RUST_LOG counts as unset (tracing would read it as "errors of everything",
        // and print every retry of a client library).
        _ => match std::env::var("RUST_LOG") {
            Ok(set) if !set.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&set)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
            _ => tracing_subscriber::EnvFilter::new(default),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `node update` is a user's verb; the other node commands run inside nodes.
    let node = matches!(&cli.command, Command::Node(c) if !matches!(c, NodeCommand::Update(_)));
    let quiet_node = match &cli.command {
        // The container's first process is a clone of the helper and logs, until it execs,
        // on the container's stderr: only libcontainer's errors belong there.
        Command::Node(NodeCommand::ContainerRun { .. }) => {
            Some("info,libcontainer=error,libcgroups=error")
        }
        // Its stdout and stderr are the process's: the report on fd 3 says what went wrong.
        Command::Node(NodeCommand::ContainerExec(_)) => Some("off"),
        Command::Node(NodeCommand::Exec(_) | NodeCommand::Logs(_)) => Some("warn"),
        // Debugging commands whose output is the point.
        Command::Node(
            NodeCommand::RunOnce(_)
            | NodeCommand::Images { .. }
            | NodeCommand::ImageImport
            | NodeCommand::ImageTag { .. }
            | NodeCommand::PodSandbox(_)
            | NodeCommand::Ps
            | NodeCommand::Net(_)
            | NodeCommand::EtcdMember(_),
        ) => Some("warn"),
        _ => None,
    };
    init_logging(cli.verbose, node, quiet_node);
    // kube and our API server build rustls configs without naming a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kcluster",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    // Node commands that must not start threads (the container runtime forks) or need none.
    let sync = match &cli.command {
        Command::Node(NodeCommand::Probe) => Some(Ok(ExitCode::SUCCESS)),
        Command::Node(NodeCommand::ImageImport) => {
            Some(crate::node::images::import_stdin().map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::ImageTag { id, names }) => {
            Some(crate::node::images::tag(id, names).map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::Images { json }) => {
            Some(crate::node::images::list(*json).map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::Ps) => {
            Some(crate::node::containers::ps().map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::ContainerRun { dir }) => {
            Some(crate::node::containers::container_run(dir.clone()).map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::PodSandbox(args)) => {
            Some(crate::kubelet::sandbox::helper_main(args).map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::Logs(args)) => {
            Some(crate::node::containers::logs(args).map(|()| ExitCode::SUCCESS))
        }
        Command::Node(NodeCommand::ContainerExec(args)) => {
            let code = crate::runtime::exec::helper_main(args);
            Some(Ok(ExitCode::from(code.clamp(0, 255) as u8)))
        }
        Command::Node(NodeCommand::RunOnce(args)) => Some(
            crate::node::containers::run_once(args.clone())
                .map(|code| ExitCode::from(code.clamp(0, 255) as u8)),
        ),
        _ => None,
    };
    if let Some(result) = sync {
        return match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Node(NodeCommand::Exec(args)) = &cli.command {
        let result = runtime.block_on(crate::node::containers::exec(args.clone()));
        runtime.shutdown_timeout(std::time::Duration::from_millis(100));
        return match result {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let progress = Progress::new(cli.quiet);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Create(args) => create::run(args, &progress).await,
            Command::Delete(args) => delete::run(args, &progress).await,
            Command::List => list::clusters().await,
            Command::Stop { name } => lifecycle::stop(&name, &progress).await,
            Command::Start { name, wait } => lifecycle::start(&name, wait, &progress).await,
            Command::Get(GetCommand::Nodes { name }) => list::nodes(&name).await,
            Command::Get(GetCommand::Kubeconfig { name, internal }) => {
                kubeconfig::print(&name, internal).await
            }
            Command::Export(ExportCommand::Kubeconfig {
                name,
                internal,
                kubeconfig,
            }) => kubeconfig::export(&name, internal, kubeconfig, &progress).await,
            Command::Export(ExportCommand::Logs { dir, name }) => {
                export_logs::run(&name, dir, &progress).await
            }
            Command::Doctor => doctor::run().await,
            Command::Dashboard(args) => {
                crate::dashboard::run(crate::dashboard::Options {
                    cluster: args.name,
                    context: args.context,
                    kubeconfig: args.kubeconfig,
                    address: args.address,
                    port: args.port,
                    open: args.open,
                })
                .await
            }
            Command::Image(ImageCommand::Load {
                images,
                to_registry: Some(registry),
                ..
            }) => registry::load_to_registry(&images, &registry, &progress).await,
            Command::Image(ImageCommand::Load {
                images,
                name,
                nodes,
                to_registry: None,
            }) => image::load(&images, &name, &nodes, &progress).await,
            Command::Image(ImageCommand::Ls { name, nodes }) => image::list(&name, &nodes).await,
            Command::Port(PortCommand::Ls { name }) => port::list(&name).await,
            Command::Node(NodeCommand::Add {
                name,
                role,
                count,
                labels,
                wait,
                etcd_binary,
            }) => {
                let options = node::AddOptions {
                    cluster: name,
                    role,
                    count,
                    labels,
                    wait,
                    etcd_binary,
                };
                node::add(options, &progress).await
            }
            Command::Node(NodeCommand::Delete {
                node,
                name,
                force,
                timeout,
            }) => {
                let options = node::DeleteOptions {
                    cluster: name,
                    node,
                    force,
                    timeout,
                };
                node::delete(options, &progress).await
            }
            Command::Node(NodeCommand::Update(args)) => node::update(args, &progress).await,
            Command::Registry(command) => registry::run(command, &progress).await,
            Command::Node(NodeCommand::Registry(args)) => crate::registry::serve(args).await,
            Command::Node(NodeCommand::Ports(args)) => crate::ports::controller::run(args).await,
            Command::Node(NodeCommand::PortProxy(args)) => crate::ports::proxy::run(args).await,
            Command::Node(NodeCommand::Lb(args)) => crate::lb::run(args).await,
            Command::Node(NodeCommand::EtcdMember(command)) => {
                crate::node::etcd_member::run_command(command).await
            }
            Command::Node(NodeCommand::Server) => crate::node::run_server().await,

            Command::Node(NodeCommand::Agent) => crate::node::run_agent().await,
            Command::Node(NodeCommand::Net(command)) => crate::node::net::run(command).await,
            Command::Node(NodeCommand::Dns(args)) => crate::dns::cli::run(args).await,
            Command::Node(NodeCommand::DnsProbe(args)) => crate::dns::probe::run(args),
            Command::Node(NodeCommand::InclusterGet { path, by_name }) => {
                crate::node::incluster::get(&path, by_name).await
            }
            Command::Node(NodeCommand::Apiserver {
                data_dir,
                port,
                kubeconfig,
                controllers,
                pod_subnet,
                store,
                etcd_prefix,
                etcd_tls,
                event_ttl,
            }) => {
                let etcd = etcd_tls.config(&store)?;
                crate::apiserver::kinds::set_event_ttl(event_ttl);
                crate::node::run_standalone(crate::node::standalone::Options {
                    data_dir,
                    port,
                    kubeconfig,
                    controllers,
                    pod_subnet,
                    etcd,
                    etcd_prefix,
                })
                .await
            }
            Command::Node(
                NodeCommand::Probe
                | NodeCommand::ImageImport
                | NodeCommand::ImageTag { .. }
                | NodeCommand::Images { .. }
                | NodeCommand::Ps
                | NodeCommand::ContainerRun { .. }
                | NodeCommand::PodSandbox(_)
                | NodeCommand::ContainerExec(_)
                | NodeCommand::Logs(_)
                | NodeCommand::Exec(_)
                | NodeCommand::RunOnce(_),
            )
            | Command::Completion { .. } => Ok(()),
        }
    });
    // Streams still open (watches, Docker connections) must not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<create::Interrupted>() {
                Some(_) => ExitCode::from(130),
                None => ExitCode::FAILURE,
            }
        }
    }
}
