//! The container runtime inside a node: no containerd, no runc binary.
//!
//! * `images` — the content-addressed image store on the node's volume and the importer of
//!   `docker save` archives (what `kcluster image load` streams in).
//! * `spec` — from a container description and its image to an OCI runtime spec.
//! * `container` — create / start / signal / stop / remove, and the on-disk layout.
//! * `exec` — processes run inside a running container (probes, hooks, `kubectl exec`).
//! * `attach` — the helper's attach socket (stdin, terminal output and sizes for `kubectl attach`).
//! * `shim` — the single-threaded helper process per container that drives libcontainer.
//! * `cgroups` — v1 and v2 preparation of the node's cgroup for containers; OOM detection.
//! * `logs` — the CRI log format (writer in the helper, reader for run-once and later logs).

pub mod attach;
pub mod cgroups;
pub mod container;
pub mod exec;
pub mod images;
pub mod logs;
pub mod shim;
pub mod spec;
