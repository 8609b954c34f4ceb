//! kcluster: local Kubernetes clusters in Docker. One binary is both the CLI and, behind
//! `kcluster node …`, everything that runs inside a node container.

mod agent;
mod apiserver;
mod cli;
mod cluster;
mod conntrack;
mod controllers;
mod dashboard;
mod dns;
mod ingress;
mod kubelet;
mod kubeletapi;
mod lb;
mod leaderelection;
mod netpol;
mod network;
mod nftables;
mod node;
mod noderesources;
mod pki;
mod ports;
mod proxy;
mod registry;
mod runtime;
mod scheduler;
mod store;
mod volumes;

fn main() -> std::process::ExitCode {
    cli::main()
}
