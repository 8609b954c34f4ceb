//! The runtime end to end: an image built locally (FROM scratch + Debian's static busybox),
//! loaded into a real cluster's nodes, and containers run from it inside a node with
//! `kcluster node run-once`.

mod common;

use std::process::Output;

use common::images::TestImage;
use common::*;

/// Several layers, one of which deletes a file and another replaces a directory, so loading
/// exercises whiteouts.
fn build_busybox_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    common::images::build_busybox_image(
        sandbox,
        tag,
        r#"RUN mkdir -p /data/keep && echo gone > /data/gone && echo old > /data/keep/a
RUN rm /data/gone && rm -rf /data/keep && mkdir /data/keep && echo new > /data/keep/b
ENV GREETING=hello
WORKDIR /work
CMD ["/bin/sh", "-c", "echo $GREETING from $(pwd)"]
"#,
    )
}

fn exec(node: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", node, "/kcluster", "node"];
    all.extend_from_slice(args);
    docker(&all)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn images_load_into_nodes_and_containers_run_from_them() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("rt");
    let tag = format!("kcluster-e2e/busybox:{name}");
    let _image = build_busybox_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    let server = format!("{name}-server-0");
    let worker = format!("{name}-worker-0");
    let full = format!("docker.io/{tag}");

    // Load into both nodes; a second load finds every layer in place.
    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name]);
    assert!(out.status.success(), "image load failed: {}", text(&out));
    let first = stdout(&out);
    assert!(first.contains(&format!("Loaded {tag}")), "{first}");
    assert!(first.contains("into 2 node(s)"), "{first}");
    for node in [&server, &worker] {
        assert!(
            first.contains(&format!("{node}: 5 new layer(s), 0 already present")),
            "{first}"
        );
    }
    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name, "--nodes", &worker]);
    assert!(out.status.success(), "second load failed: {}", text(&out));
    let second = stdout(&out);
    assert!(
        second.contains(&format!("{worker}: 0 new layer(s), 5 already present")),
        "{second}"
    );
    assert!(
        !second.contains(&server),
        "--nodes was not honoured: {second}"
    );

    // An image built on top of it brings one new layer; the shared ones stay.
    let derived_tag = format!("kcluster-e2e/derived:{name}");
    let derived_dir = sandbox.path().join("derived");
    std::fs::create_dir_all(&derived_dir).unwrap();
    std::fs::write(
        derived_dir.join("Dockerfile"),
        format!("FROM {tag}\nRUN echo v2 > /version\n"),
    )
    .unwrap();
    let out = docker(&[
        "build",
        "-q",
        "-t",
        &derived_tag,
        derived_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "docker build failed: {}", text(&out));
    let _derived = TestImage {
        tag: derived_tag.clone(),
    };
    let out = sandbox.kcluster(&[
        "image",
        "load",
        &derived_tag,
        "--name",
        &name,
        "--nodes",
        &server,
    ]);
    assert!(out.status.success(), "derived load failed: {}", text(&out));
    assert!(
        stdout(&out).contains(&format!("{server}: 1 new layer(s), 5 already present")),
        "{}",
        text(&out)
    );
    let out = exec(
        &server,
        &["run-once", "--image", &derived_tag, "--", "cat", "/version"],
    );
    assert_eq!(stdout(&out), "v2\n", "{}", text(&out));

    let out = sandbox.kcluster(&["image", "ls", "--name", &name]);
    assert!(out.status.success(), "image ls failed: {}", text(&out));
    let listing = stdout(&out);
    let id = stdout(&docker(&["image", "inspect", "--format", "{{.Id}}", &tag]));
    let short = &id.trim().trim_start_matches("sha256:")[..12];
    for node in [&server, &worker] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(node.as_str()) && l.contains(&full) && l.contains(short)),
            "image ls lacks {full} ({short}) on {node}:\n{listing}"
        );
    }
    let node_listing = stdout(&exec(&worker, &["images"]));
    assert!(node_listing.contains(&full), "{node_listing}");

    // Bad input says what to do.
    let out = sandbox.kcluster(&[
        "image",
        "load",
        "kcluster-e2e/missing:nope",
        "--name",
        &name,
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("docker pull"), "{}", text(&out));
    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name, "--nodes", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&worker), "{}", text(&out));

    // The image's own CMD, ENV and WORKDIR.
    let out = exec(&worker, &["run-once", "--image", &tag]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "hello from /work\n", "{}", text(&out));

    // The files the layers leave (a deleted file, a replaced directory) are what Docker itself
    // shows for the image. (Docker's fuse-overlayfs driver writes no opaque marker for the
    // replaced directory, so there both show its old file too; overlay2 writes one.)
    let view = "echo data=$(ls /data) keep=$(ls /data/keep)";
    let docker_view = docker(&["run", "--rm", &tag, "sh", "-c", view]);
    assert!(docker_view.status.success(), "{}", text(&docker_view));
    let docker_view = stdout(&docker_view);
    let ours = exec(
        &worker,
        &["run-once", "--image", &tag, "--", "sh", "-c", view],
    );
    assert_eq!(stdout(&ours), docker_view, "{}", text(&ours));
    assert!(!docker_view.contains("gone"), "{docker_view}");

    // A command with env, working dir and limits; its output and exit code come back.
    let script = "echo greeting=$GREETING extra=$EXTRA; echo pwd=$(pwd); \
        echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
        grep ' / / ' /proc/self/mountinfo | grep -q ' - overlay ' && echo rootfs=overlay; \
        echo host=$(hostname); \
        echo nets=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '); \
        echo to-stderr >&2; exit 3";
    let out = exec(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "-e",
            "EXTRA=yes",
            "--workdir",
            "/tmp/w",
            "--memory",
            "64Mi",
            "--cpus",
            "0.5",
            "--hostname",
            "box",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let got = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for line in [
        "greeting=hello extra=yes",
        "pwd=/tmp/w",
        &format!("mem={}", 64 << 20),
        "rootfs=overlay",
        "host=box",
        "nets=lo",
    ] {
        assert!(
            got.lines().any(|l| l == line),
            "no line {line:?} in:\n{got}"
        );
    }
    let err = stderr(&out);
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");

    // Joining the node's network namespace instead of a new one.
    let out = exec(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "--netns",
            "/proc/1/ns/net",
            "--",
            "sh",
            "-c",
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("eth0"), "{}", text(&out));

    // Stopping: sleep as PID 1 ignores SIGTERM, so SIGKILL follows the grace period.
    let out = exec(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "--timeout",
            "1",
            "--grace",
            "1",
            "--",
            "sleep",
            "60",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(stderr(&out).contains("(signal 9)"), "{}", text(&out));

    // Over its memory limit, the kernel kills it and the runtime says so.
    let out = exec(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "--memory",
            "16Mi",
            "--",
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(stderr(&out).contains("OOMKilled"), "{}", text(&out));

    // A user and group from the command line; groups do not leak the helper's root group.
    let out = exec(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "--user",
            "1000:2000",
            "--",
            "id",
        ],
    );
    assert_eq!(
        stdout(&out).trim(),
        "uid=1000 gid=2000 groups=2000",
        "{}",
        text(&out)
    );

    // A command that does not exist fails to start, with the reason.
    let out = exec(
        &worker,
        &["run-once", "--image", &tag, "--", "/no/such/tool"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/no/such/tool"), "{}", text(&out));

    // A kept container is listed, exited, with its CRI log on the node volume.
    let out = exec(
        &server,
        &[
            "run-once",
            "--image",
            &tag,
            "--keep",
            "--id",
            "kept-1",
            "--",
            "sh",
            "-c",
            "echo logged",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ps = stdout(&exec(&server, &["ps"]));
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept-1") && l.contains("exited")),
        "{ps}"
    );
    drop(cluster);
}
