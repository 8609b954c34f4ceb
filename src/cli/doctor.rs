//! `kcluster doctor`: what this machine's Docker engine allows, and what kcluster does about it.

use anyhow::Result;

use crate::cluster::docker::{self, Docker, Security};
use crate::cluster::image;

fn line(ok: bool, what: &str, detail: &str) {
    println!(" {} {what}: {detail}", if ok { "✓" } else { "✗" });
}

pub async fn run() -> Result<()> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = match Docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            line(false, "Docker engine", &format!("{e:#}"));
            return Err(anyhow::anyhow!("kcluster needs a reachable Docker engine"));
        }
    };
    let version = docker.api().version().await?;
    let info = docker.api().info().await?;
    line(
        true,
        "Docker engine",
        &format!(
            "{host}, version {} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
    );
    line(
        true,
        "Host",
        &format!(
            "{}, kernel {}, {} CPUs, {:.1} GiB",
            info.operating_system.unwrap_or_default(),
            info.kernel_version.unwrap_or_default(),
            info.ncpu.unwrap_or_default(),
            info.mem_total.unwrap_or_default() as f64 / (1u64 << 30) as f64
        ),
    );
    let cgroup = info
        .cgroup_version
        .map(|v| format!("{v:?}").to_lowercase().replace("_", ""))
        .unwrap_or_else(|| "unknown".into());
    line(
        true,
        "cgroups",
        &format!(
            "version {} with the {} driver; nodes get a private cgroup namespace either way",
            cgroup.trim_start_matches('v').trim_start_matches('_'),
            info.cgroup_driver
                .map(|d| format!("{d:?}").to_lowercase())
                .unwrap_or_default()
        ),
    );
    line(
        true,
        "Storage driver",
        &format!(
            "{}; node state lives on a named volume, so overlay mounts inside nodes work on any driver",
            info.driver.unwrap_or_default()
        ),
    );

    let binary = image::own_binary()?;
    let tag = image::tag_for(&binary)?;
    let built = image::ensure(&docker, &binary, &tag).await;
    match &built {
        Ok(true) => line(
            true,
            "Node image",
            &format!("{tag} (built just now from {})", binary.display()),
        ),
        Ok(false) => line(true, "Node image", &format!("{tag} (present)")),
        Err(e) => line(false, "Node image", &format!("{e:#}")),
    }
    if built.is_ok() {
        match docker.probe(&tag, Security::Privileged).await {
            Ok(()) => line(
                true,
                "Node privileges",
                "privileged containers work; nodes run --privileged",
            ),
            Err(e) if docker::is_capability_failure(&e) => {
                let fallback = docker.probe(&tag, Security::Capabilities).await;
                line(
                    false,
                    "Privileged containers",
                    "refused: the engine cannot grant every capability (runc: \"unable to apply caps\"; typically CAP_SYS_RESOURCE is missing from its bounding set)",
                );
                match fallback {
                    Ok(()) => line(
                        true,
                        "Node privileges",
                        "kcluster falls back to --cap-add ALL --cap-drop SYS_RESOURCE, seccomp/apparmor unconfined, systempaths unconfined, private cgroupns",
                    ),
                    Err(e) => line(
                        false,
                        "Node privileges",
                        &format!("the capability fallback is refused too: {e:#}"),
                    ),
                }
            }
            Err(e) => line(false, "Node privileges", &format!("{e:#}")),
        }
    }
    match std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            line(
                true,
                "kubectl",
                text.lines().next().unwrap_or_default().trim(),
            );
        }
        _ => line(
            false,
            "kubectl",
            "not found on PATH; install it to use the clusters kcluster makes",
        ),
    }
    let clusters: std::collections::BTreeSet<String> = docker
        .node_containers(None)
        .await?
        .iter()
        .filter_map(|c| docker::label(c, docker::LABEL_CLUSTER).map(str::to_string))
        .collect();
    line(
        true,
        "Clusters",
        &if clusters.is_empty() {
            "none".to_string()
        } else {
            clusters.into_iter().collect::<Vec<_>>().join(", ")
        },
    );
    Ok(())
}
