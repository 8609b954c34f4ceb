//! Pieces of a PodStatus as kubelet writes them: container states from the runtime's records,
//! conditions that keep their transition time while unchanged.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::runtime::container::State;

/// Kubernetes' Time: RFC 3339 in whole seconds.
pub fn k8s_time(text: &str) -> String {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| text.to_string())
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Marks a container whose helper vanished (the node restarted under it).
pub const LOST_MARKER: &str = "the container's helper is gone: the node restarted while it ran";

/// `state.terminated` of an exited container.
pub fn terminated(state: &State, container_id: &str, message: Option<String>) -> Value {
    let code = state.exit_code.unwrap_or(-1);
    let lost = state.error.as_deref() == Some(LOST_MARKER);
    let start_error = state.error.is_some() && !lost;
    let reason = if lost {
        "Unknown"
    } else if start_error {
        "StartError"
    } else if state.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "containerID": format!("kcluster://{container_id}"),
    });
    if let Some(s) = state.signal {
        t["signal"] = json!(s);
    }
    // A container that never ran shows the zero time, as kubelet does for a StartError.
    t["startedAt"] = json!(
        state
            .started_at
            .as_deref()
            .map(k8s_time)
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
    );
    t["finishedAt"] = json!(
        state
            .finished_at
            .as_deref()
            .map(k8s_time)
            .unwrap_or_else(now)
    );
    let message = if start_error {
        state.error.clone()
    } else {
        message.filter(|m| !m.is_empty())
    };
    if let Some(m) = message {
        t["message"] = json!(m);
    }
    t
}

/// A condition; lastTransitionTime stays what the pod has while the status is unchanged.
pub fn condition(
    pod: &Pod,
    kind: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let status_text = if status { "True" } else { "False" };
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let since = match previous {
        Some(c) if c.status == status_text => c
            .last_transition_time
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(now),
        _ => now(),
    };
    let mut c = json!({"type": kind, "status": status_text, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The termination message a container left: its message file, or with
/// FallbackToLogsOnError the end of its log when it failed.
pub fn termination_message(
    file: &std::path::Path,
    fallback_to_logs: bool,
    failed: bool,
    log: &std::path::Path,
) -> Option<String> {
    let mut text = std::fs::read(file).ok().map(|b| {
        let b = &b[..b.len().min(4096)];
        String::from_utf8_lossy(b).into_owned()
    });
    if text.as_deref().is_none_or(str::is_empty) && fallback_to_logs && failed {
        let mut lines: Vec<String> = Vec::new();
        if let Ok(mut reader) = crate::runtime::logs::LogReader::open(log)
            && let Ok(read) = reader.read_new()
        {
            lines = read
                .into_iter()
                .map(|l| String::from_utf8_lossy(&l.text).into_owned())
                .collect();
        }
        let start = lines.len().saturating_sub(80);
        let mut joined = lines[start..].join("\n");
        if joined.len() > 2048 {
            let mut cut = joined.len() - 2048;
            while !joined.is_char_boundary(cut) {
                cut += 1;
            }
            joined = joined[cut..].to_string();
        }
        text = Some(joined);
    }
    text
}
