//! The built-in registry (`kcluster registry`, `kcluster create --registry-use`) with the host's
//! real Docker engine pushing to it and real clusters pulling from it by the same name; its
//! answers to bad uploads are compared with Debian's `docker-registry` (the CNCF distribution
//! registry), the reference implementation, run on the host by the test.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A registry container removed when the test ends, pass or fail.
struct TestRegistry<'a> {
    name: String,
    sandbox: &'a Sandbox,
}

impl Drop for TestRegistry<'_> {
    fn drop(&mut self) {
        let _ = self
            .sandbox
            .kcluster(&["registry", "delete", "--name", &self.name]);
    }
}

/// `kcluster registry create`; returns the registry and the host port it reports.
fn create_registry<'a>(
    sandbox: &'a Sandbox,
    name: &str,
    port: u16,
) -> (TestRegistry<'a>, u16, String) {
    create_registry_with(sandbox, name, port, &[])
}

/// `kcluster registry create` with `extra` arguments.
fn create_registry_with<'a>(
    sandbox: &'a Sandbox,
    name: &str,
    port: u16,
    extra: &[&str],
) -> (TestRegistry<'a>, u16, String) {
    let port = port.to_string();
    let mut args = vec!["registry", "create", "--name", name, "--port", &port];
    args.extend_from_slice(extra);
    let out = sandbox.kcluster(&args);
    let registry = TestRegistry {
        name: name.to_string(),
        sandbox,
    };
    assert!(
        out.status.success(),
        "registry create failed: {}",
        text(&out)
    );
    let said = text(&out);
    let host = said
        .split_whitespace()
        .find(|w| w.starts_with("localhost:"))
        .unwrap_or_else(|| panic!("no localhost:<port> in the output: {said}"))
        .to_string();
    let port: u16 = host["localhost:".len()..]
        .parse()
        .unwrap_or_else(|e| panic!("bad port in {host}: {e}"));
    wait_until(
        "the registry to answer /v2/",
        Duration::from_secs(60),
        || {
            let (status, _, body) = request(port, "GET", "/v2/", &[], b"");
            (status == 200)
                .then_some(())
                .ok_or(format!("{status} {body}"))
        },
    );
    (registry, port, said)
}

/// One HTTP/1.1 request on a fresh connection: status, headers (lowercased names), body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return (0, Vec::new(), format!("cannot connect: {e}")),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, Vec::new(), "the connection broke".into());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, rest)) = raw.split_once("\r\n\r\n") else {
        return (0, Vec::new(), raw);
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {body}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {body}"))
        .to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// What a registry answers to the bad pushes; the same sequence runs against ours and Debian's.
#[derive(Debug, PartialEq, Eq)]
struct BadPushAnswers {
    wrong_digest: (u16, String),
    blob_after_wrong_digest: u16,
    claimed_blob_after_wrong_digest: u16,
    upload_after_wrong_digest: u16,
    manifest_with_unknown_blob: (u16, String),
    unknown_manifest: (u16, String),
    unknown_repository_tags: (u16, String),
    good_blob: (u16, bool),
    mount: (u16, bool),
    /// Chunked upload: status and Range of an in-order PATCH, an out-of-order one, the next one.
    chunks: Vec<(u16, String)>,
}

fn bad_pushes(port: u16) -> BadPushAnswers {
    let data = b"the content of a layer";
    let actual = format!("sha256:{}", sha256_hex(data));
    let claimed = format!("sha256:{}", sha256_hex(b"something else"));
    let (status, headers, body) = request(port, "POST", "/v2/bad/app/blobs/uploads/", &[], b"");
    assert_eq!(status, 202, "upload start: {body}");
    let location = header(&headers, "location")
        .unwrap_or_else(|| panic!("no Location: {headers:?}"))
        .to_string();
    let path = location
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap_or(&location)
        .to_string();
    let separator = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = request(
        port,
        "PUT",
        &format!("{path}{separator}digest={claimed}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    let wrong_digest = (status, error_code(&body));
    let blob_after = request(
        port,
        "HEAD",
        &format!("/v2/bad/app/blobs/{actual}"),
        &[],
        b"",
    )
    .0;
    let claimed_after = request(
        port,
        "HEAD",
        &format!("/v2/bad/app/blobs/{claimed}"),
        &[],
        b"",
    )
    .0;
    let upload_after = request(port, "GET", &path, &[], b"").0;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": claimed},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": data.len(), "digest": actual}],
    })
    .to_string();
    let (status, _, body) = request(
        port,
        "PUT",
        "/v2/bad/app/manifests/v1",
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        manifest.as_bytes(),
    );
    let manifest_with_unknown_blob = (status, error_code(&body));
    let (status, _, body) = request(port, "GET", "/v2/bad/app/manifests/v1", &[], b"");
    let unknown_manifest = (status, error_code(&body));
    let (status, _, body) = request(port, "GET", "/v2/never/pushed/tags/list", &[], b"");
    let unknown_repository_tags = (status, error_code(&body));

    // The same content with its own digest is stored and served back under that digest.
    let (status, headers, body) = request(port, "POST", "/v2/bad/app/blobs/uploads/", &[], b"");
    assert_eq!(status, 202, "upload start: {body}");
    let location = header(&headers, "location").unwrap_or_default().to_string();
    let path = location
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap_or(&location)
        .to_string();
    let separator = if path.contains('?') { '&' } else { '?' };
    let (status, headers, body) = request(
        port,
        "PUT",
        &format!("{path}{separator}digest={actual}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(status, 201, "closing PUT: {body}");
    assert_eq!(
        header(&headers, "docker-content-digest"),
        Some(actual.as_str())
    );
    let (status, headers, body) = request(
        port,
        "GET",
        &format!("/v2/bad/app/blobs/{actual}"),
        &[],
        b"",
    );
    let good_blob = (
        status,
        body.as_bytes() == data
            && header(&headers, "docker-content-digest") == Some(actual.as_str()),
    );
    // Cross-repository mount of a blob the registry has.
    let (status, headers, _) = request(
        port,
        "POST",
        &format!("/v2/other/app/blobs/uploads/?mount={actual}&from=bad/app"),
        &[],
        b"",
    );
    let mount = (
        status,
        header(&headers, "docker-content-digest") == Some(actual.as_str()),
    );
    // Chunked upload with Content-Range: in order, out of order (the spec's 416), in order again.
    let (status, headers, body) = request(port, "POST", "/v2/bad/chunks/blobs/uploads/", &[], b"");
    assert_eq!(status, 202, "upload start: {body}");
    // Each answer's Location is where the next chunk goes (the reference registry keeps the
    // upload's state in it).
    let relative = |headers: &[(String, String)]| {
        let location = header(headers, "location").unwrap_or_default();
        location
            .strip_prefix(&format!("http://127.0.0.1:{port}"))
            .unwrap_or(location)
            .to_string()
    };
    let mut path = relative(&headers);
    let mut chunks = Vec::new();
    for range in ["0-9", "20-29", "10-19"] {
        let (status, headers, body) = request(
            port,
            "PATCH",
            &path,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", range),
            ],
            b"0123456789",
        );
        let answer = if status == 202 {
            path = relative(&headers);
            header(&headers, "range").unwrap_or("no Range").to_string()
        } else {
            error_code(&body)
        };
        chunks.push((status, answer));
    }
    BadPushAnswers {
        chunks,
        mount,
        wrong_digest,
        blob_after_wrong_digest: blob_after,
        claimed_blob_after_wrong_digest: claimed_after,
        upload_after_wrong_digest: upload_after,
        manifest_with_unknown_blob,
        unknown_manifest,
        unknown_repository_tags,
        good_blob,
    }
}

#[test]
fn bad_pushes_are_refused_as_the_reference_registry_refuses_them() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kcluster-reg-bad");
    let (_registry, port, _) = create_registry(&sandbox, &name, common::registry::free_port());
    let ours = bad_pushes(port);
    assert_eq!(ours.wrong_digest, (400, "DIGEST_INVALID".to_string()));
    assert_eq!(ours.blob_after_wrong_digest, 404, "nothing may be stored");
    assert_eq!(
        ours.claimed_blob_after_wrong_digest, 404,
        "nothing may be stored"
    );
    assert_eq!(ours.good_blob, (200, true));

    assert_eq!(ours.mount, (201, true));
    assert_eq!(
        ours.chunks,
        [
            (202, "0-9".to_string()),
            (416, "RANGE_INVALID".to_string()),
            (202, "0-19".to_string())
        ]
    );

    let reference = common::registry::start(&sandbox.path().join("reference"), None);
    let mut theirs = bad_pushes(reference.port);
    // Debian's registry (distribution 2.8) appends any chunk wherever its Content-Range says it
    // goes; the OCI distribution spec (and distribution 3) answer an out-of-order chunk 416, as
    // ours does. In-order chunks are answered alike.
    assert_eq!(ours.chunks[0], theirs.chunks[0]);
    theirs.chunks = ours.chunks.clone();
    assert_eq!(
        ours, theirs,
        "ours (left) and Debian's docker-registry (right) differ"
    );

    // A monolithic upload (POST with ?digest=, which the spec allows and Debian's 2.8 does
    // not take) is checked the same way.
    let data = b"monolithic";
    let claimed = format!("sha256:{}", sha256_hex(b"not it"));
    let (status, _, body) = request(
        port,
        "POST",
        &format!("/v2/mono/app/blobs/uploads/?digest={claimed}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(
        (status, error_code(&body)),
        (400, "DIGEST_INVALID".to_string())
    );
    let actual = format!("sha256:{}", sha256_hex(data));
    for digest in [&claimed, &actual] {
        let (status, _, _) = request(
            port,
            "HEAD",
            &format!("/v2/mono/app/blobs/{digest}"),
            &[],
            b"",
        );
        assert_eq!(status, 404, "nothing may be stored for {digest}");
    }
}

fn pod_image_pulled(cluster: &Cluster, pod: &str, image: &str) {
    let out = cluster.kubectl(&[
        "run",
        pod,
        &format!("--image={image}"),
        "--restart=Never",
        "--command",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "kubectl run failed: {}", text(&out));
    cluster.wait_pod_ready(pod);
    let phase = cluster.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Running");
    // Pulled from the registry: the image was never loaded into the nodes, and no fallback.
    let events = wait_output(
        "the Pulled event",
        || cluster.pod_events(pod),
        &["Successfully pulled image"],
    );
    assert!(!events.contains("PullFallback"), "{events}");
}

fn registry_networks(name: &str) -> String {
    let out = docker(&[
        "inspect",
        name,
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    ]);
    assert!(out.status.success(), "inspect: {}", text(&out));
    stdout(&out)
}

#[test]
fn push_to_the_registry_then_run_by_the_same_name_in_two_clusters_and_after_a_restart() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kcluster-reg");

    // The port asked for is taken: the next free one is used, said, and advertised.
    let holder = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken = holder.local_addr().unwrap().port();
    let (_registry, port, said) = create_registry(&sandbox, &name, taken);
    assert_ne!(port, taken, "{said}");
    assert!(
        said.contains(&format!("port {taken} on 127.0.0.1 is taken")),
        "{said}"
    );
    let ls = sandbox.kcluster(&["registry", "ls"]);
    assert!(ls.status.success(), "{}", text(&ls));
    let line = stdout(&ls)
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in `registry ls`: {}", text(&ls)))
        .to_string();
    assert!(
        line.contains(&format!("localhost:{port}")) && line.contains("running"),
        "{line}"
    );

    // docker build + docker push from the host's engine, plain HTTP to loopback.
    let host = format!("localhost:{port}");
    let image = format!("{host}/app:dev");
    let _built = common::images::build_busybox_image(&sandbox, &image, "");
    let out = docker(&["push", &image]);
    assert!(out.status.success(), "docker push failed: {}", text(&out));

    let first = Cluster::create(&sandbox, &unique_name("reg1"), &["--registry-use", &name]);
    // KEP-1755: what Tilt, Skaffold and ko read.
    let value = first.kubectl_ok(&[
        "-n",
        "kube-public",
        "get",
        "configmap",
        "local-registry-hosting",
        "-o",
        "jsonpath={.data.localRegistryHosting\\.v1}",
    ]);
    let hosting: serde_yaml::Value =
        serde_yaml::from_str(&value).unwrap_or_else(|e| panic!("not YAML ({e}): {value}"));
    assert_eq!(hosting["host"].as_str(), Some(host.as_str()), "{value}");
    let in_network = format!("{name}:5000");
    assert_eq!(
        hosting["hostFromClusterNetwork"].as_str(),
        Some(in_network.as_str())
    );
    assert_eq!(
        hosting["hostFromContainerRuntime"].as_str(),
        Some(in_network.as_str())
    );
    assert!(
        hosting["help"]
            .as_str()
            .is_some_and(|h| h.starts_with("https://")),
        "{value}"
    );
    pod_image_pulled(&first, "app", &image);

    // A restart of the registry container keeps what was pushed.
    let out = docker(&["restart", &name]);
    assert!(out.status.success(), "docker restart: {}", text(&out));
    wait_until(
        "the registry back after its restart",
        Duration::from_secs(60),
        || {
            let (status, _, body) = request(port, "GET", "/v2/app/tags/list", &[], b"");
            (status == 200 && body.contains("\"dev\""))
                .then_some(())
                .ok_or(format!("{status} {body}"))
        },
    );
    let restart_policy = stdout(&docker(&[
        "inspect",
        &name,
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
    ]));
    assert_eq!(restart_policy.trim(), "unless-stopped");

    // A second cluster shares it; its first pull happens after the restart.
    let second = Cluster::create(&sandbox, &unique_name("reg2"), &["--registry-use", &name]);
    pod_image_pulled(&second, "app", &image);
    let networks = registry_networks(&name);
    assert!(
        networks.contains(&format!("kcluster-{}", first.name))
            && networks.contains(&format!("kcluster-{}", second.name)),
        "{networks}"
    );

    // `image load --to-registry` pushes a host image under the registry's name for it.
    let loaded = format!("kcluster-e2e/loaded:{}", second.name);
    let _loaded_image = common::images::build_busybox_image(&sandbox, &loaded, "");
    let out = sandbox.kcluster(&["image", "load", "--to-registry", &name, &loaded]);
    assert!(
        out.status.success(),
        "image load --to-registry: {}",
        text(&out)
    );
    let pushed_as = format!("{host}/kcluster-e2e/loaded:{}", second.name);
    assert!(text(&out).contains(&pushed_as), "{}", text(&out));
    pod_image_pulled(&second, "loaded", &pushed_as);
    let _ = docker(&["rmi", &pushed_as]);

    // Deleting a cluster takes the registry off its network only.
    let first_name = first.name.clone();
    drop(first);
    let networks = registry_networks(&name);
    assert!(
        !networks.contains(&format!("kcluster-{first_name}")),
        "{networks}"
    );
    assert!(
        networks.contains(&format!("kcluster-{}", second.name)),
        "{networks}"
    );
    let (status, _, body) = request(port, "GET", "/v2/app/tags/list", &[], b"");
    assert_eq!((status, body.contains("\"dev\"")), (200, true), "{body}");
    drop(holder);
}

#[test]
fn registry_names_and_ports_are_checked_before_anything_is_made() {
    let sandbox = Sandbox::new();
    let out = sandbox.kcluster(&["registry", "create", "--name", "Bad_Name"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("invalid registry name \"Bad_Name\""),
        "{}",
        text(&out)
    );
    let missing = unique_name("kcluster-reg-missing");
    let out = sandbox.kcluster(&[
        "create",
        "--name",
        &unique_name("nr"),
        "--registry-use",
        &missing,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("there is no registry named {missing:?}")),
        "{}",
        text(&out)
    );
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name={missing}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker");
    assert_eq!(stdout(&out).trim(), "", "nothing may be created");
    let out = sandbox.kcluster(&["registry", "delete", "--name", &missing]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("there is no registry named"),
        "{}",
        text(&out)
    );
}

/// `cargo test --release --test registry -- --ignored --nocapture push_bench`: a ~100 MB image
/// pushed to the built-in registry and to Debian's docker-registry in the same run.
#[test]
#[ignore]
fn push_bench() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kcluster-reg-bench");
    let (_registry, ours, _) = create_registry(&sandbox, &name, common::registry::free_port());
    let reference = common::registry::start(&sandbox.path().join("reference"), None);
    let mut results = Vec::new();
    for round in 0..4u64 {
        // A new image each round: Docker skips layers a registry already has.
        let tag = build_big_image(&sandbox, round);
        // Whoever goes second may profit from Docker's cached compression: take turns.
        let mut order = [("kcluster", ours), ("docker-registry", reference.port)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (label, port) in order {
            let remote = format!("127.0.0.1:{port}/bench/r{round}:v1");
            assert!(docker(&["tag", &tag, &remote]).status.success());
            let started = Instant::now();
            let out = docker(&["push", &remote]);
            let took = started.elapsed();
            assert!(out.status.success(), "push to {label}: {}", text(&out));
            assert!(
                text(&out).contains("Pushed"),
                "nothing was pushed: {}",
                text(&out)
            );
            let _ = docker(&["rmi", &remote]);
            println!("round {round} {label}: {:.2}s", took.as_secs_f64());
            results.push((label, took));
        }
        let _ = docker(&["rmi", "-f", &tag]);
    }
    let median = |label: &str| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, d)| d.as_secs_f64())
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (k, d) = (median("kcluster"), median("docker-registry"));
    println!(
        "median push of 100 MB: kcluster {k:.2}s, docker-registry {d:.2}s, ratio (docker-registry/kcluster) {:.2}",
        d / k
    );
}

/// FROM scratch with one ~100 MB incompressible file, different for each `seed`.
fn build_big_image(sandbox: &Sandbox, seed: u64) -> String {
    let context = sandbox.path().join(format!("big-{seed}"));
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("blob"), incompressible(100 << 20, seed)).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY blob /blob\n",
    )
    .unwrap();
    let tag = format!("kcluster-bench/push:{}-{seed}", unique_name("b"));
    let out = docker(&["build", "-q", "-t", &tag, context.to_str().unwrap()]);
    assert!(out.status.success(), "build: {}", text(&out));
    tag
}

/// A Docker volume removed when the test ends (after the registry using it: declare it first).
struct TestVolume(String);

impl Drop for TestVolume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// `(status, code, message)` of a registry's error answer.
fn error_of(answer: &(u16, Vec<(String, String)>, String)) -> (u16, String, String) {
    let value: serde_json::Value = serde_json::from_str(&answer.2).unwrap_or_default();
    let message = value["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (answer.0, error_code(&answer.2), message)
}

#[test]
fn a_full_disk_is_507_with_the_reason_keeps_nothing_and_reads_go_on() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kcluster-reg-full");
    // The registry's storage: an 8 MiB tmpfs volume, the user's own (`--volume`).
    let volume = TestVolume(format!("{name}-small"));
    let out = docker(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=8m",
        &volume.0,
    ]);
    assert!(out.status.success(), "volume create: {}", text(&out));
    let (registry, port, _) = create_registry_with(
        &sandbox,
        &name,
        common::registry::free_port(),
        &["--volume", &volume.0],
    );
    let mounted = stdout(&docker(&[
        "inspect",
        &name,
        "--format",
        "{{range .Mounts}}{{.Name}} {{end}}",
    ]));
    assert_eq!(mounted.trim(), volume.0, "the registry must use --volume");

    // A small image fits.
    let host = format!("localhost:{port}");
    let small = format!("{host}/small:v1");
    let _small = common::images::build_busybox_image(&sandbox, &small, "");
    let out = docker(&["push", &small]);
    assert!(
        out.status.success(),
        "push of the small image: {}",
        text(&out)
    );

    // A layer bigger than the volume: the answer is 507 with the reason, the upload is gone.
    let big = vec![0x5au8; 12 << 20];
    let start = request(port, "POST", "/v2/big/app/blobs/uploads/", &[], b"");
    assert_eq!(start.0, 202, "upload start: {}", start.2);
    let location = header(&start.1, "location").unwrap_or_default().to_string();
    let answer = request(
        port,
        "PATCH",
        &location,
        &[("Content-Type", "application/octet-stream")],
        &big,
    );
    let (status, code, message) = error_of(&answer);
    assert_eq!((status, code.as_str()), (507, "UNKNOWN"), "{}", answer.2);
    assert!(
        message.contains("storage is full") && message.contains("No space left on device"),
        "{message}"
    );
    let after = request(port, "GET", &location, &[], b"");
    assert_eq!(
        (after.0, error_code(&after.2)),
        (404, "BLOB_UPLOAD_UNKNOWN".to_string()),
        "a failed upload must not be resumable: {}",
        after.2
    );

    // The real `docker push` of an image bigger than the volume fails and says why.
    let context = sandbox.path().join("too-big");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("payload"), incompressible(12 << 20, 7)).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY payload /payload\n",
    )
    .unwrap();
    let too_big = format!("{host}/big:v1");
    let out = docker(&["build", "-q", "-t", &too_big, context.to_str().unwrap()]);
    assert!(out.status.success(), "build: {}", text(&out));
    let _too_big_image = common::images::TestImage {
        tag: too_big.clone(),
    };
    let out = docker(&["push", &too_big]);
    assert!(!out.status.success(), "the push cannot fit: {}", text(&out));
    assert!(
        text(&out).contains("507 Insufficient Storage"),
        "docker push must show why: {}",
        text(&out)
    );

    // Nothing half-stored: no tag, no upload left, and every blob is whole (its name is the
    // hash of its content), read from the volume itself.
    let tags = request(port, "GET", "/v2/big/tags/list", &[], b"");
    assert_eq!(
        (tags.0, error_code(&tags.2)),
        (404, "NAME_UNKNOWN".to_string()),
        "{}",
        tags.2
    );
    let check = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data:ro", volume.0),
        "--entrypoint",
        "/bin/sh",
        &small,
        "-c",
        "cd /data && echo uploads=$(ls -A uploads | wc -l) temporary=$(find . -name '.tmp-*' | wc -l) && \
         for f in blobs/sha256/*; do [ \"$(sha256sum \"$f\" | cut -d' ' -f1)\" = \"${f##*/}\" ] || echo \"partial $f\"; done; \
         echo blobs=$(ls blobs/sha256 | wc -l)",
    ]);
    assert!(check.status.success(), "volume check: {}", text(&check));
    let report = stdout(&check);
    assert!(
        report.contains("uploads=0 temporary=0") && !report.contains("partial"),
        "{report}"
    );
    assert!(
        !report.contains("blobs=0"),
        "the small image is there: {report}"
    );

    // Reads go on: the small image is pulled back; the space a failed upload took is free
    // again, so another small image still fits.
    let out = docker(&["rmi", &small]);
    assert!(out.status.success(), "rmi: {}", text(&out));
    let out = docker(&["pull", &small]);
    assert!(
        out.status.success(),
        "pull after the full disk: {}",
        text(&out)
    );
    let second = format!("{host}/small:v2");
    let _second = common::images::build_busybox_image(&sandbox, &second, "RUN echo v2 > /v2\n");
    let out = docker(&["push", &second]);
    assert!(
        out.status.success(),
        "push after the full disk: {}",
        text(&out)
    );
    let catalog = request(port, "GET", "/v2/_catalog", &[], b"");
    assert_eq!(
        (catalog.0, catalog.2.trim()),
        (200, r#"{"repositories":["small"]}"#)
    );

    // `registry delete` keeps a volume the user brought.
    drop(registry);
    let out = docker(&["volume", "inspect", &volume.0]);
    assert!(
        out.status.success(),
        "the user's volume must stay: {}",
        text(&out)
    );
}

/// `size` bytes no compressor can shrink, different for each `seed`.
fn incompressible(size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut state = 0x9e3779b97f4a7c15u64 ^ (seed.wrapping_mul(0x2545f4914f6cdd1d) | 1);
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// The KEP-1755 value the cluster advertises, parsed.
fn advertised(cluster: &Cluster) -> serde_yaml::Value {
    let value = cluster.kubectl_ok(&[
        "-n",
        "kube-public",
        "get",
        "configmap",
        "local-registry-hosting",
        "-o",
        "jsonpath={.data.localRegistryHosting\\.v1}",
    ]);
    serde_yaml::from_str(&value).unwrap_or_else(|e| panic!("not YAML ({e}): {value}"))
}

/// `kcluster create --registry` (`--wait 120s`): the cluster and what create printed.
fn create_with_registry<'a>(sandbox: &'a Sandbox, name: &str) -> (Cluster<'a>, String) {
    let out = sandbox.kcluster(&["create", "--name", name, "--wait", "120s", "--registry"]);
    let cluster = Cluster {
        name: name.to_string(),
        sandbox,
    };
    assert!(out.status.success(), "create --registry: {}", text(&out));
    (cluster, text(&out))
}

/// `kcluster create --registry` as a user types it: the registry `kcluster-registry` on
/// 127.0.0.1:5001, or on the next free port when 5001 is taken. The only test that uses the
/// default name and port; it fails (rather than touching them) when something else holds them.
#[test]
fn create_with_registry_uses_5001_or_the_next_free_port_and_advertises_it() {
    require_docker_and_kubectl();
    const DEFAULT: &str = "kcluster-registry";
    let out = docker(&["inspect", "--format", "{{.Name}}", DEFAULT]);
    assert!(
        !out.status.success() && text(&out).contains("No such object"),
        "a container named {DEFAULT} exists already (not this test's): delete it (`kcluster registry delete`) before running this test; {}",
        text(&out)
    );
    let holder = TcpListener::bind("127.0.0.1:5001").unwrap_or_else(|e| {
        panic!("127.0.0.1:5001 is held by another process ({e}); this test needs it free")
    });
    let sandbox = Sandbox::new();
    let _registry = TestRegistry {
        name: DEFAULT.to_string(),
        sandbox: &sandbox,
    };

    // 5001 taken: the next free port, said, and written into the ConfigMap.
    let (first, said) = create_with_registry(&sandbox, &unique_name("dflt1"));
    let moved = said
        .split("is on port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("create must say which port the registry is on: {said}"));
    assert!(
        said.contains("port 5001 on 127.0.0.1 is taken") && moved != 5001,
        "{said}"
    );
    let host = format!("localhost:{moved}");
    assert_eq!(advertised(&first)["host"].as_str(), Some(host.as_str()));
    let image = format!("{host}/app:dev");
    let _built = common::images::build_busybox_image(&sandbox, &image, "");
    let out = docker(&["push", &image]);
    assert!(out.status.success(), "docker push: {}", text(&out));
    pod_image_pulled(&first, "app", &image);
    drop(first);
    let out = sandbox.kcluster(&["registry", "delete"]);
    assert!(out.status.success(), "registry delete: {}", text(&out));
    drop(holder);

    // 5001 free: the registry is there, as the docs say.
    let (second, said) = create_with_registry(&sandbox, &unique_name("dflt2"));
    assert!(!said.contains("is taken"), "{said}");
    let hosting = advertised(&second);
    assert_eq!(hosting["host"].as_str(), Some("localhost:5001"));
    assert_eq!(
        hosting["hostFromClusterNetwork"].as_str(),
        Some("kcluster-registry:5000")
    );
    let ls = stdout(&sandbox.kcluster(&["registry", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("{DEFAULT} ")) && l.contains("localhost:5001")),
        "{ls}"
    );
    let image = "localhost:5001/app:dev";
    let _built = common::images::build_busybox_image(&sandbox, image, "RUN echo 5001 > /at\n");
    let out = docker(&["push", image]);
    assert!(out.status.success(), "docker push: {}", text(&out));
    pod_image_pulled(&second, "app", image);
}

/// `cargo test --test registry -- --ignored --nocapture pod_start_bench`: pod start (create →
/// Running, seen by a watch) for an image the node does not have, pulled from the built-in
/// registry, against the same kind of image put on the node by `kcluster image load` (the
/// baseline), in the same run, taking turns. Each image is one layer of its own (busybox and
/// 16 MiB that no compressor shrinks), so nothing is shared with an earlier round.
#[test]
#[ignore]
fn pod_start_bench() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kcluster-reg-podbench");
    let (_registry, port, _) = create_registry(&sandbox, &name, common::registry::free_port());
    let cluster = Cluster::create(
        &sandbox,
        &unique_name("regbench"),
        &["--registry-use", &name],
    );
    const ROUNDS: u64 = 5;
    let mut images = Vec::new();
    let mut plan = Vec::new();
    for round in 0..ROUNDS {
        for how in ["registry", "image load"] {
            let seed = round * 2 + u64::from(how == "registry");
            let context = sandbox.path().join(format!("podbench-{seed}"));
            std::fs::create_dir_all(&context).unwrap();
            std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
            std::fs::write(context.join("payload"), incompressible(16 << 20, seed)).unwrap();
            std::fs::write(
                context.join("Dockerfile"),
                "FROM scratch\nCOPY busybox payload /\n",
            )
            .unwrap();
            let tag = if how == "registry" {
                format!("localhost:{port}/podbench/r{round}:v1")
            } else {
                format!("kcluster-bench/podbench-{}:r{round}", cluster.name)
            };
            let out = docker(&["build", "-q", "-t", &tag, context.to_str().unwrap()]);
            assert!(out.status.success(), "build: {}", text(&out));
            images.push(common::images::TestImage { tag: tag.clone() });
            // Both are put where the pod gets them before the clock starts.
            if how == "registry" {
                let out = docker(&["push", &tag]);
                assert!(out.status.success(), "push: {}", text(&out));
            } else {
                cluster.load_image(&tag);
            }
            plan.push((how, tag));
        }
        // Whoever goes second may find the node's disk cache warmer: take turns.
        if round % 2 == 1 {
            let n = plan.len();
            plan.swap(n - 2, n - 1);
        }
    }

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let samples = rt.block_on(async {
        let client = kube_client(&sandbox, &cluster.context()).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let mut samples = Vec::new();
        for (i, (how, image)) in plan.iter().enumerate() {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("start-{i}")},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": image,
                                    "command": ["/busybox", "sleep", "3600"]}],
                },
            }))
            .expect("a pod");
            let wp = WatchParams::default().fields(&format!("metadata.name=start-{i}"));
            let mut watch = pods.watch(&wp, "0").await.expect("a watch").boxed();
            let started = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("pod created");
            let deadline = started + Duration::from_secs(120);
            loop {
                let event = tokio::time::timeout_at(deadline.into(), watch.next())
                    .await
                    .unwrap_or_else(|_| panic!("start-{i} ({how}) did not run within 120 s"));
                match event {
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))
                        if p.status.as_ref().and_then(|s| s.phase.as_deref())
                            == Some("Running") =>
                    {
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("the watch failed: {e}"),
                    None => panic!("the watch ended"),
                }
            }
            let took = started.elapsed();
            println!("start-{i} {how}: {:.0} ms", took.as_secs_f64() * 1000.0);
            samples.push((*how, took));
        }
        samples
    });
    // The registry pods pulled: their events say so, and no fallback to a node's copy.
    for (i, (how, _)) in plan.iter().enumerate() {
        if *how == "registry" {
            let events = cluster.wait_pod_events(&format!("start-{i}"), |e| {
                e.contains("Successfully pulled image")
            });
            assert!(!events.contains("PullFallback"), "start-{i}: {events}");
        }
    }
    let median = |how: &str| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|(h, _)| *h == how)
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (r, rmin, rmax) = median("registry");
    let (l, lmin, lmax) = median("image load");
    println!(
        "pod start, median of {ROUNDS}: from the registry {r:.0} ms ({rmin:.0}–{rmax:.0}), loaded {l:.0} ms ({lmin:.0}–{lmax:.0}); registry/loaded {:.2}",
        r / l
    );
}
