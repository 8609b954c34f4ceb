//! Pulls from a real registry: Debian's `docker-registry` (the CNCF distribution registry),
//! started by the test on the host (`common::registry`), one open and one behind htpasswd
//! Basic auth. A locally built image is pushed to both with the Docker engine (which speaks
//! plain HTTP to 127/8); the node reaches the host through its Docker network's gateway, a
//! private address, so the node agent falls back to plain HTTP as it does for local registries.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::registry::{free_port, gateway, push, start as start_registry};
use common::*;

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-pass";

fn pod(name: &str, image: &str, policy: &str, secret: Option<&str>) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets:\n  - name: {s}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
{secrets}  containers:
  - name: c
    image: {image}
    imagePullPolicy: {policy}
    command: ["sleep", "3600"]
"#
    )
}

fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "apply failed: {}", text(&out));
}

#[test]
fn pods_pull_from_a_registry_by_tag_and_digest_with_secrets_and_policies() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("reg");
    let dir: PathBuf = sandbox.path().join("registries");

    // One open registry, one behind Basic auth.
    let open = start_registry(&dir.join("open"), None);
    let htpasswd = dir.join("htpasswd");
    std::fs::create_dir_all(&dir).unwrap();
    let hash = bcrypt::hash(PASSWORD, 5).expect("bcrypt");
    std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
    let private = start_registry(&dir.join("private"), Some(&htpasswd));

    let tag = format!("kcluster-e2e/pull:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let docker_config = sandbox.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let digest = push(
        &docker_config,
        &tag,
        &format!("127.0.0.1:{}/e2e/app:v1", open.port),
    );
    push(
        &docker_config,
        &tag,
        &format!("127.0.0.1:{}/e2e/app:always", open.port),
    );
    let mut login = Command::new("docker")
        .arg("--config")
        .arg(&docker_config)
        .args([
            "login",
            &format!("127.0.0.1:{}", private.port),
            "-u",
            USER,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run docker login");
    {
        use std::io::Write;
        login
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
    }
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "docker login failed: {}", text(&out));
    push(
        &docker_config,
        &tag,
        &format!("127.0.0.1:{}/secret/app:v1", private.port),
    );

    let cluster = Cluster::create(&sandbox, &name, &[]);
    let gw = gateway(&name);
    let open_host = format!("{gw}:{}", open.port);
    let private_host = format!("{gw}:{}", private.port);

    // By tag: Pulling, then Pulled with the time and size, and the pod runs.
    let by_tag = format!("{open_host}/e2e/app:v1");
    apply(&cluster, &pod("by-tag", &by_tag, "IfNotPresent", None));
    cluster.wait_pod_ready("by-tag");
    let events = cluster.wait_pod_events("by-tag", |e| e.contains("Pulled: "));
    assert!(
        events.contains(&format!("Pulling: Pulling image \"{by_tag}\"")),
        "{events}"
    );
    assert!(
        events.contains(&format!(
            "Pulled: Successfully pulled image \"{by_tag}\" in "
        )) && events.contains("including waiting). Image size: "),
        "{events}"
    );
    // `--nocapture` shows the pull times (BENCHMARKS.md); nothing here checks them.
    println!("by-tag events:\n{events}");
    let image_id = cluster.kubectl_ok(&[
        "get",
        "pod",
        "by-tag",
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // IfNotPresent with the image on the node: no pull.
    apply(&cluster, &pod("present", &by_tag, "IfNotPresent", None));
    cluster.wait_pod_ready("present");
    let events = cluster.wait_pod_events("present", |e| e.contains("Pulled: "));
    assert!(
        events.contains(&format!(
            "Pulled: Container image \"{by_tag}\" already present on machine"
        )),
        "{events}"
    );
    assert!(!events.contains("Pulling:"), "{events}");

    // Always: asks the registry again even though the image is there.
    apply(&cluster, &pod("always", &by_tag, "Always", None));
    cluster.wait_pod_ready("always");
    let events = cluster.wait_pod_events("always", |e| e.contains("Pulled: "));
    assert!(
        events.contains(&format!("Pulling: Pulling image \"{by_tag}\"")),
        "{events}"
    );
    assert!(
        events.contains("Pulled: Successfully pulled image"),
        "{events}"
    );
    println!("always events:\n{events}");

    // By digest.
    let by_digest = format!("{open_host}/e2e/app@{digest}");
    apply(
        &cluster,
        &pod("by-digest", &by_digest, "IfNotPresent", None),
    );
    cluster.wait_pod_ready("by-digest");

    // A missing image: ErrImagePull (event), then ImagePullBackOff saying what failed.
    let missing = format!("{open_host}/e2e/missing:v1");
    apply(&cluster, &pod("missing", &missing, "IfNotPresent", None));
    let events = cluster.wait_pod_events("missing", |e| {
        e.contains("Error: ErrImagePull") && e.contains("BackOff: Back-off pulling image")
    });
    assert!(
        events.contains(&format!("Failed: Failed to pull image \"{missing}\": "))
            && events.contains("not found"),
        "{events}"
    );
    let message = cluster.wait_pod_waiting("missing", "ImagePullBackOff");
    assert!(
        message.starts_with(&format!("Back-off pulling image \"{missing}\"")),
        "{message}"
    );
    assert!(message.contains("not found"), "{message}");

    // Behind auth: refused without a secret, pulled with one.
    let secret_image = format!("{private_host}/secret/app:v1");
    apply(
        &cluster,
        &pod("no-secret", &secret_image, "IfNotPresent", None),
    );
    let message = cluster.wait_pod_waiting("no-secret", "ImagePullBackOff");
    assert!(message.contains("unauthorized"), "{message}");
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={private_host}"),
        &format!("--docker-username={USER}"),
        &format!("--docker-password={PASSWORD}"),
    ]);
    apply(
        &cluster,
        &pod(
            "with-secret",
            &secret_image,
            "IfNotPresent",
            Some("regcred"),
        ),
    );
    cluster.wait_pod_ready("with-secret");

    // An unreachable registry says so.
    let closed = format!("{gw}:{}/e2e/app:v1", free_port());
    apply(&cluster, &pod("unreachable", &closed, "IfNotPresent", None));
    let message = cluster.wait_pod_waiting("unreachable", "ImagePullBackOff");
    assert!(message.contains("cannot reach the registry"), "{message}");

    // The node lists what it pulled.
    cluster.wait_for(
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[0].status.images[*]}{.names}{\"\\n\"}{end}",
        ],
        Duration::from_secs(60),
        |s| s.contains(&by_tag) && s.contains(&secret_image) && s.contains(&by_digest),
    );
}
