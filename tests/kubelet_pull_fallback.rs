//! Pull fallback (`images.pullFallback`): real clusters, real pods, images put on the nodes
//! with `kcluster image load`. "Offline" is a registry address on the cluster network's
//! gateway where nothing listens (connection refused), so no test traffic leaves the machine;
//! the reachable registry is Debian's `docker-registry` on the host (`common::registry`).
//!
//!   cargo test --test kubelet_pull_fallback
//!   cargo test --test kubelet_pull_fallback -- --ignored --nocapture pull_fallback_bench

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::registry::{free_port, gateway};
use common::*;

/// A pod running `sleep`; `policy` None leaves imagePullPolicy to its default.
fn pod(name: &str, image: &str, policy: Option<&str>) -> String {
    let policy = policy
        .map(|p| format!("    imagePullPolicy: {p}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
{policy}    command: ["sleep", "3600"]
"#
    )
}

fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "apply failed: {}", text(&out));
}

fn image_id(tag: &str) -> String {
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
    assert!(out.status.success(), "image inspect failed: {}", text(&out));
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    id
}

fn running_image_id(cluster: &Cluster, pod: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ])
}

/// `docker tag` of the test image under `name`, then `kcluster image load`; the tag is
/// removed from the host's engine again (the node keeps the image).
fn load_as(cluster: &Cluster, local: &str, name: &str) {
    let out = docker(&["tag", local, name]);
    assert!(out.status.success(), "docker tag failed: {}", text(&out));
    cluster.load_image(name);
    let _ = docker(&["rmi", name]);
}

fn write_config(sandbox: &Sandbox, file: &str, body: &str) -> String {
    let path = sandbox.path().join(file);
    std::fs::write(
        &path,
        format!("apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\n{body}"),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn loaded_images_start_when_their_registry_cannot_be_reached_or_lacks_them() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("pfb");
    let tag = format!("kcluster-e2e/fallback:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let newer_tag = format!("kcluster-e2e/fallback-newer:{name}");
    let _newer = common::images::build_busybox_image(&sandbox, &newer_tag, "LABEL newer=yes");
    let id = image_id(&tag);
    let newer_id = image_id(&newer_tag);
    assert_ne!(id, newer_id);

    let registry_dir = sandbox.path().join("registry");
    let registry = common::registry::start(&registry_dir, None);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    let gw = gateway(&name);
    let offline = format!("{gw}:{}", free_port());
    let online = format!("{gw}:{}", registry.port);

    // Offline, untagged (imagePullPolicy defaults to Always): the loaded image runs, and the
    // Warning names the registry's error and the image id.
    let untagged = format!("{offline}/e2e/app");
    load_as(&cluster, &tag, &untagged);
    let tagged = format!("{offline}/e2e/tagged:latest");
    load_as(&cluster, &tag, &tagged);
    apply(&cluster, &pod("untagged", &untagged, None));
    cluster.wait_pod_ready("untagged");
    let policy = cluster.kubectl_ok(&[
        "get",
        "pod",
        "untagged",
        "-o",
        "jsonpath={.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(policy, "Always");
    let events = cluster.wait_pod_events("untagged", |e| e.contains("PullFallback"));
    let fallback = events
        .lines()
        .find(|l| l.starts_with("Warning PullFallback: "))
        .unwrap_or_else(|| panic!("no PullFallback event:\n{events}"));
    assert!(
        fallback.contains(&format!("Failed to pull image \"{untagged}\""))
            && fallback.contains("cannot reach the registry")
            && fallback.contains(&id),
        "{fallback}"
    );
    assert!(!events.contains("ErrImagePull"), "{events}");
    // `--nocapture` shows the event as users see it.
    println!("untagged events:\n{events}");
    assert_eq!(running_image_id(&cluster, "untagged"), id);

    // `:latest` right after: the same registry is remembered as unreachable, not asked again.
    apply(&cluster, &pod("tagged", &tagged, None));
    cluster.wait_pod_ready("tagged");
    let events = cluster.wait_pod_events("tagged", |e| e.contains("PullFallback"));
    assert!(
        events.contains("Warning PullFallback: ")
            && events.contains("the registry was not asked again")
            && events.contains(&id),
        "{events}"
    );

    // An image the node does not have still fails as before, with the registry's error.
    let absent = format!("{offline}/e2e/absent");
    apply(&cluster, &pod("absent", &absent, None));
    let message = cluster.wait_pod_waiting("absent", "ImagePullBackOff");
    assert!(message.contains("cannot reach the registry"), "{message}");
    let events = cluster.wait_pod_events("absent", |e| e.contains("Error: ErrImagePull"));
    assert!(events.contains("Error: ErrImagePull"), "{events}");
    assert!(!events.contains("PullFallback"), "{events}");

    // A reachable registry without the image: a loaded image falls back on "not found".
    let only_local = format!("{online}/e2e/only-local");
    load_as(&cluster, &tag, &only_local);
    apply(&cluster, &pod("only-local", &only_local, None));
    cluster.wait_pod_ready("only-local");
    let events = cluster.wait_pod_events("only-local", |e| e.contains("PullFallback"));
    assert!(
        events.contains("Warning PullFallback: ")
            && events.contains("not found")
            && events.contains("kcluster image load")
            && events.contains(&id),
        "{events}"
    );

    // A reachable registry with a different image under the name: the registry wins.
    let docker_config = sandbox.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    common::registry::push(
        &docker_config,
        &newer_tag,
        &format!("127.0.0.1:{}/e2e/app:latest", registry.port),
    );
    let replaced = format!("{online}/e2e/app");
    load_as(&cluster, &tag, &replaced);
    apply(&cluster, &pod("replaced", &replaced, None));
    cluster.wait_pod_ready("replaced");
    let events = cluster.wait_pod_events("replaced", |e| e.contains("Pulled: "));
    assert!(
        events.contains(&format!(
            "Normal Pulled: Successfully pulled image \"{replaced}\""
        )),
        "{events}"
    );
    assert!(!events.contains("PullFallback"), "{events}");
    assert_eq!(running_image_id(&cluster, "replaced"), newer_id);

    // IfNotPresent is untouched: no pull, no fallback.
    apply(
        &cluster,
        &pod("if-not-present", &untagged, Some("IfNotPresent")),
    );
    cluster.wait_pod_ready("if-not-present");
    let events = cluster.wait_pod_events("if-not-present", |e| {
        e.contains("already present on machine")
    });
    assert!(
        events.contains("already present on machine") && !events.contains("PullFallback"),
        "{events}"
    );
}

#[test]
fn with_pull_fallback_off_an_unreachable_registry_is_an_error() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("pfoff");
    let tag = format!("kcluster-e2e/fallback-off:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let config = write_config(&sandbox, "strict.yaml", "images:\n  pullFallback: false\n");
    let cluster = Cluster::create(&sandbox, &name, &["--config", &config]);
    let offline = format!("{}:{}", gateway(&name), free_port());
    let untagged = format!("{offline}/e2e/app");
    load_as(&cluster, &tag, &untagged);

    apply(&cluster, &pod("strict", &untagged, None));
    // The pull's failure and the kubelet's ErrImagePull are two events, written in either
    // order: wait for both.
    let events = cluster.wait_pod_events("strict", |e| {
        e.contains("Error: ErrImagePull") && e.contains("Failed: Failed to pull image")
    });
    assert!(
        events.contains(&format!("Failed: Failed to pull image \"{untagged}\": "))
            && events.contains("cannot reach the registry"),
        "{events}"
    );
    let message = cluster.wait_pod_waiting("strict", "ImagePullBackOff");
    assert!(message.contains("cannot reach the registry"), "{message}");
    assert!(
        !cluster.pod_events("strict").contains("PullFallback"),
        "fallback is off"
    );

    // The image is there all the same: IfNotPresent runs it.
    apply(&cluster, &pod("present", &untagged, Some("IfNotPresent")));
    cluster.wait_pod_ready("present");
}

/// A "registry" on the host that accepts connections and never says a word (a black hole as
/// a laptop on a captive network sees one); counts the connections it got.
struct Silent {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("0.0.0.0:0").expect("a listening socket");
        let port = listener.local_addr().expect("its address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        });
        Silent { port, connections }
    }
}

#[test]
fn twenty_replicas_of_a_loaded_image_do_not_each_wait_for_a_silent_registry() {
    const REPLICAS: usize = 20;
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("pfrep");
    let tag = format!("kcluster-e2e/fallback-replicas:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let id = image_id(&tag);
    let silent = Silent::start();
    let cluster = Cluster::create(&sandbox, &name, &[]);
    let image = format!("{}:{}/e2e/web", gateway(&name), silent.port);
    load_as(&cluster, &tag, &image);

    apply(
        &cluster,
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {REPLICAS}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: ["sleep", "3600"]
        resources:
          requests: {{cpu: 1m, memory: 1Mi}}
"#
        ),
    );
    // Available allows maxUnavailable (25%) missing: wait for every replica instead.
    cluster.wait_for(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        Duration::from_secs(180),
        |s| s == REPLICAS.to_string(),
    );
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=PullFallback",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name} {.message}{\"\\n\"}{end}",
    ]);
    let pods: std::collections::BTreeSet<&str> = events
        .lines()
        .filter(|l| l.contains(&id))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pods.len(), REPLICAS, "every replica falls back:\n{events}");
    // Replicas starting together share one attempt, later ones skip the registry found
    // unreachable. One attempt is an HTTPS and a plain HTTP connection; the registry is
    // forgotten after 60 s, so a slow run may make a second attempt, never one per replica.
    let connections = silent.connections.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&connections),
        "the silent registry got {connections} connections for {REPLICAS} replicas"
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Create → Ready, timed around `kubectl apply` and `kubectl wait`.
fn time_pod(cluster: &Cluster, name: &str, image: &str, policy: Option<&str>) -> Duration {
    let started = Instant::now();
    apply(cluster, &pod(name, image, policy));
    cluster.wait_pod_ready(name);
    started.elapsed()
}

/// Pod start of a loaded untagged image whose registry cannot be reached (Always, fallback)
/// against the same image with IfNotPresent, alternating in the same run.
#[test]
#[ignore = "benchmark: cargo test --test kubelet_pull_fallback -- --ignored --nocapture pull_fallback_bench"]
fn pull_fallback_bench() {
    const ROUNDS: usize = 15;
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("pfbench");
    let tag = format!("kcluster-e2e/fallback-bench:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    let untagged = format!("{}:{}/bench/app", gateway(&name), free_port());
    load_as(&cluster, &tag, &untagged);
    // A warm-up pod takes the costs of a cluster's first pod; then the first fallback pod pays
    // for finding the registry unreachable, reported apart.
    let warm_up = time_pod(&cluster, "warm-up", &untagged, Some("IfNotPresent"));
    let first = time_pod(&cluster, "first", &untagged, None);
    let (mut fallback, mut present) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        fallback.push(time_pod(&cluster, &format!("fb-{i}"), &untagged, None));
        present.push(time_pod(
            &cluster,
            &format!("inp-{i}"),
            &untagged,
            Some("IfNotPresent"),
        ));
    }
    let events = cluster.wait_pod_events("fb-0", |e| e.contains("PullFallback"));
    assert!(events.contains("PullFallback"), "{events}");
    // A registry that accepts connections and never answers costs the first pod the TLS
    // handshake's and the plain HTTP ping's timeouts; the next one skips it.
    let silent = Silent::start();
    let black_hole = format!("{}:{}/bench/app", gateway(&name), silent.port);
    load_as(&cluster, &tag, &black_hole);
    let silent_first = time_pod(&cluster, "silent-first", &black_hole, None);
    let silent_next = time_pod(&cluster, "silent-next", &black_hole, None);
    fallback.sort();
    present.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (fb50, inp50) = (percentile(&fallback, 0.5), percentile(&present, 0.5));
    println!("warm-up pod (IfNotPresent): {:.0} ms", ms(warm_up));
    println!(
        "first fallback pod (registry found unreachable): {:.0} ms",
        ms(first)
    );
    println!(
        "Always + fallback, {ROUNDS} pods: p50 {:.0} ms, max {:.0} ms",
        ms(fb50),
        ms(fallback[ROUNDS - 1])
    );
    println!(
        "IfNotPresent (baseline), {ROUNDS} pods: p50 {:.0} ms, max {:.0} ms",
        ms(inp50),
        ms(present[ROUNDS - 1])
    );
    println!(
        "ratio of the p50s: {:.2}",
        fb50.as_secs_f64() / inp50.as_secs_f64()
    );
    println!(
        "silent registry: first pod {:.0} ms, the next {:.0} ms",
        ms(silent_first),
        ms(silent_next)
    );
}
