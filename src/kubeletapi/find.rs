//! A pod's containers on this node, found by the annotations the kubelet puts on each.

use crate::runtime::container::{Runtime, State, Status};

pub const ANN_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const ANN_POD: &str = "io.kubernetes.pod.name";
pub const ANN_UID: &str = "io.kubernetes.pod.uid";
pub const ANN_CONTAINER: &str = "io.kubernetes.container.name";
pub const ANN_RESTARTS: &str = "io.kubernetes.container.restartCount";

#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub pod_uid: String,
    pub restart_count: u32,
    pub state: State,
    /// The container runs under a terminal (attach then carries it).
    pub tty: bool,
}

/// Every attempt of `container` in pod `ns/pod` still on the node, newest first.
pub fn attempts(runtime: &Runtime, ns: &str, pod: &str, container: Option<&str>) -> Vec<Found> {
    let mut found = Vec::new();
    let Ok(list) = runtime.list() else {
        return found;
    };
    for (id, state) in list {
        let Ok(record) = runtime.record(&id) else {
            continue;
        };
        let a = &record.config.annotations;
        let matches = a.get(ANN_NAMESPACE).map(String::as_str) == Some(ns)
            && a.get(ANN_POD).map(String::as_str) == Some(pod)
            && container.is_none_or(|c| a.get(ANN_CONTAINER).map(String::as_str) == Some(c));
        if !matches {
            continue;
        }
        found.push(Found {
            id,
            pod_uid: a.get(ANN_UID).cloned().unwrap_or_default(),
            restart_count: a
                .get(ANN_RESTARTS)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            state,
            tty: record.config.tty,
        });
    }
    found.sort_by(|a, b| {
        b.restart_count
            .cmp(&a.restart_count)
            .then_with(|| b.state.started_at.cmp(&a.state.started_at))
    });
    found
}

/// The container's current (newest) attempt.
pub fn current(runtime: &Runtime, ns: &str, pod: &str, container: &str) -> Option<Found> {
    attempts(runtime, ns, pod, Some(container))
        .into_iter()
        .next()
}

/// A running container of the pod (for port-forward's network namespace).
pub fn running_in_pod(runtime: &Runtime, ns: &str, pod: &str) -> Option<Found> {
    attempts(runtime, ns, pod, None)
        .into_iter()
        .find(|f| f.state.status == Status::Running)
}
