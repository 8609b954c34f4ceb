//! Host ports for Services: every NodePort and LoadBalancer Service of a cluster reachable on the
//! host, added and removed while the cluster runs.
//!
//! Docker cannot add a published port to a running container, so each host port gets its own
//! small proxy container (`kcluster-<cluster>-port-<port>-<proto>`, the kcluster binary in the
//! `port-proxy` role, FROM the node image) that publishes it and forwards to the Service's node
//! port on the nodes. One per-cluster container, `kcluster-<cluster>-ports` (the `ports` role,
//! with the Docker socket mounted), watches Services and starts and removes those proxies, so a
//! port comes or goes without touching any other.
//!
//! `want` says which host ports the Services ask for; `proxy` is the forwarder; `docker` creates
//! and removes the containers; `controller` runs the watch-driven reconcile.

pub mod controller;
pub mod docker;
pub mod proxy;
pub mod proxy_protocol;
pub mod want;

/// Labels of a proxy container: they are the whole record of what is published (`port ls`
/// reads them, the controller rebuilds its state from them after a restart).
pub const LABEL_KEY: &str = "dev.kcluster.port.key";
pub const LABEL_SERVICE: &str = "dev.kcluster.port.service";
pub const LABEL_KIND: &str = "dev.kcluster.port.kind";
pub const LABEL_PROTOCOL: &str = "dev.kcluster.port.protocol";
pub const LABEL_HOST_ADDRESS: &str = "dev.kcluster.port.host-address";
pub const LABEL_HOST_PORT: &str = "dev.kcluster.port.host-port";
pub const LABEL_SERVICE_PORT: &str = "dev.kcluster.port.service-port";
pub const LABEL_NODE_PORT: &str = "dev.kcluster.port.node-port";
/// A LoadBalancer's `loadBalancerSourceRanges` the proxy enforces (`a/n,b/m`; absent: any).
pub const LABEL_SOURCE_RANGES: &str = "dev.kcluster.port.source-ranges";

/// The Service port whose proxy dials one node directly with a PROXY protocol v2 header
/// (`<service port>=<node>:<port>`); empty: the node port, no header.
pub const LABEL_PROXY_PROTOCOL: &str = "dev.kcluster.port.proxy-protocol";

/// A Service annotation asking for that: `80=<node>:<port>,443=<node>:<port>`, the node being
/// one of the cluster's own (the built-in ingress sets it on its Service, so its host ports
/// carry the client's address).
pub const PROXY_PROTOCOL_ANNOTATION: &str = "kcluster.dev/proxy-protocol";

/// The Service annotation that names each LoadBalancer port's host address, e.g.
/// `8080/TCP=127.0.0.1:8081` when 8080 was taken on the host.
pub const HOST_PORTS_ANNOTATION: &str = "kcluster.dev/host-ports";

/// Where the controller finds its client certificate (put there by `kcluster create`).
pub const PKI_DIR: &str = "/etc/kcluster/pki";

pub fn controller_name(cluster: &str) -> String {
    format!("kcluster-{cluster}-ports")
}

pub fn proxy_name(cluster: &str, host_port: u16, protocol: want::Protocol) -> String {
    format!(
        "kcluster-{cluster}-port-{host_port}-{}",
        protocol.as_str().to_lowercase()
    )
}
