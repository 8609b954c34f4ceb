//! The GitHub Action's steps, run here as the runner runs them (`action.yml` calls these
//! scripts): install from the cache, create with kind-action's inputs and preloaded images,
//! diagnostics and a log bundle when the cluster does not come up, and the post step's delete.
//! The workflow file itself runs where GitHub runs it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `bash .ci/action/<script>` with the job's environment: this build's kcluster as the
/// installed binary, the sandbox's kubeconfig and home, `env` on top.
fn step(sandbox: &Sandbox, script: &str, env: &[(&str, &str)]) -> Output {
    let bin_dir = Path::new(kcluster_bin()).parent().unwrap().to_path_buf();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join(".ci/action").join(script))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KCLUSTER", kcluster_bin())
        .env("HOME", sandbox.path())
        .env("KUBECONFIG", sandbox.kubeconfig())
        .env("RUNNER_TEMP", sandbox.path())
        .env_remove("GITHUB_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot run bash")
}

/// The hash install.sh keeps beside a binary it built, computed the same way.
fn source_hash() -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg("cat Cargo.lock Cargo.toml $(find src node-image -type f 2>/dev/null | sort) | sha256sum")
        .current_dir(repo())
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
}

#[test]
fn install_uses_the_cached_binary_and_says_what_a_build_needs() {
    let sandbox = Sandbox::new();
    let root = sandbox.path().join("action-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    // A cache hit: the binary of this source, and the source's hash beside it.
    std::fs::copy(kcluster_bin(), root.join("bin/kcluster")).unwrap();
    std::fs::write(root.join("source.sha256"), source_hash()).unwrap();
    let source = repo();
    let env = [
        ("KCLUSTER_ACTION_SOURCE", source.to_str().unwrap()),
        ("KCLUSTER_ACTION_ROOT", root.to_str().unwrap()),
    ];
    let out = step(&sandbox, "install.sh", &env);
    assert!(out.status.success(), "install.sh: {}", text(&out));
    assert!(
        text(&out).contains("from the cache"),
        "install.sh rebuilt a cached binary: {}",
        text(&out)
    );
    let path_file = sandbox.path().join("github-path");
    let mut with_path = env.to_vec();
    let path_str = path_file.to_str().unwrap().to_string();
    with_path.push(("GITHUB_PATH", &path_str));
    let out = step(&sandbox, "install.sh", &with_path);
    assert!(out.status.success(), "install.sh: {}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&path_file).unwrap().trim(),
        root.join("bin").to_str().unwrap(),
        "the binary's folder is not added to the job's PATH"
    );

    // A cache miss on a runner without Rust: a clear error, nothing installed.
    let empty = sandbox.path().join("empty-root");
    let out = Command::new("bash")
        .arg(repo().join(".ci/action/install.sh"))
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", sandbox.path())
        .env("KCLUSTER_ACTION_SOURCE", repo())
        .env("KCLUSTER_ACTION_ROOT", &empty)
        .output()
        .expect("bash");
    assert!(!out.status.success(), "install.sh without cargo succeeded");
    assert!(
        text(&out).contains("needs Rust"),
        "install.sh without cargo: {}",
        text(&out)
    );
    assert!(!empty.join("bin/kcluster").exists());
}

#[test]
fn create_preloads_images_and_the_post_step_deletes_the_cluster() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("act");
    let tag = format!("kcluster-e2e/act-busybox:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let config = sandbox.path().join("kcluster.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nname: {name}\nnodes:\n- role: server\n- role: worker\n"
        ),
    )
    .unwrap();
    let inputs = [
        ("INPUT_CLUSTER_NAME", name.as_str()),
        ("INPUT_CONFIG", config.to_str().unwrap()),
        ("INPUT_WAIT", "120s"),
        ("INPUT_PRELOAD_IMAGES", tag.as_str()),
    ];
    let out = step(&sandbox, "create.sh", &inputs);
    let cluster = Cluster {
        name: name.clone(),
        sandbox: &sandbox,
    };
    assert!(out.status.success(), "create.sh: {}", text(&out));
    // The exported kubeconfig is the current context: plain kubectl reaches the cluster.
    let nodes = Command::new("kubectl")
        .args(["get", "nodes", "-o", "name"])
        .env("KUBECONFIG", sandbox.kubeconfig())
        .env("HOME", sandbox.path())
        .output()
        .expect("kubectl");
    assert!(nodes.status.success(), "kubectl: {}", text(&nodes));
    assert_eq!(
        stdout(&nodes).lines().count(),
        2,
        "the config's two nodes: {}",
        stdout(&nodes)
    );
    let images = sandbox.kcluster(&["image", "ls", "--name", &name]);
    assert!(images.status.success(), "image ls: {}", text(&images));
    let listed = stdout(&images);
    assert!(
        listed.matches(&tag).count() >= 2,
        "the preloaded image is not on both nodes: {listed}"
    );

    // The post step.
    let out = step(&sandbox, "cleanup.sh", &[("INPUT_CLUSTER_NAME", &name)]);
    assert!(out.status.success(), "cleanup.sh: {}", text(&out));
    assert!(
        docker_objects("container", &name).is_empty(),
        "containers left after the post step: {:?}",
        docker_objects("container", &name)
    );
    drop(cluster);
}

#[test]
fn a_cluster_that_does_not_come_up_leaves_diagnostics_and_a_log_bundle() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("actf");
    // No node is Ready within a millisecond: create fails and keeps its nodes (--retain).
    let out = step(
        &sandbox,
        "create.sh",
        &[("INPUT_CLUSTER_NAME", &name), ("INPUT_WAIT", "1ms")],
    );
    let cluster = Cluster {
        name: name.clone(),
        sandbox: &sandbox,
    };
    assert!(!out.status.success(), "create.sh passed with a 1 ms wait");
    let log = text(&out);
    assert!(
        log.contains("::group::kcluster diagnostics")
            && log.contains("::error::kcluster create failed"),
        "no diagnostics: {log}"
    );
    let bundle = sandbox.path().join(format!("kcluster-logs-{name}"));
    let server_log = bundle.join(format!("{name}-server-0/logs.txt"));
    assert!(
        server_log.exists(),
        "no log bundle at {} ({log})",
        bundle.display()
    );

    // Bad input: an unknown registry value stops before anything is created.
    let other = unique_name("actb");
    let out = step(
        &sandbox,
        "create.sh",
        &[("INPUT_CLUSTER_NAME", &other), ("INPUT_REGISTRY", "maybe")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("input registry must be true or false"),
        "{}",
        text(&out)
    );
    assert!(docker_objects("container", &other).is_empty());
    drop(cluster);
}
