//! The pod containers running on this node, with the cgroups their statistics come from.

use crate::kubeletapi::find::{ANN_CONTAINER, ANN_NAMESPACE, ANN_POD, ANN_UID};
use crate::runtime::container::{Runtime, Status};

#[derive(Debug, Clone)]
pub struct RunningContainer {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub name: String,
    /// cgroup paths relative to the node's cgroup root.
    pub cgroup: String,
    pub pod_cgroup: String,
    pub started_at: Option<String>,
}

/// Running containers that belong to pods (the kubelet annotates each with its pod), by pod uid
/// then container name.
pub fn running(runtime: &Runtime) -> Vec<RunningContainer> {
    let Ok(list) = runtime.list() else {
        return Vec::new();
    };
    let mut out: Vec<RunningContainer> = list
        .into_iter()
        .filter(|(_, state)| state.status == Status::Running)
        .filter_map(|(id, state)| {
            let record = runtime.record(&id).ok()?;
            let a = &record.config.annotations;
            Some(RunningContainer {
                namespace: a.get(ANN_NAMESPACE)?.clone(),
                pod: a.get(ANN_POD)?.clone(),
                pod_uid: a.get(ANN_UID)?.clone(),
                name: a.get(ANN_CONTAINER)?.clone(),
                cgroup: record.cgroup_path.clone(),
                pod_cgroup: record
                    .config
                    .cgroup_parent
                    .trim_end_matches('/')
                    .to_string(),
                started_at: state.started_at,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.pod_uid, &a.name).cmp(&(&b.pod_uid, &b.name)));
    out
}
