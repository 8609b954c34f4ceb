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
    let out = sandbox.kcluster(&[
        "registry",
        "create",
        "--name",
        name,
        "--port",
        &port.to_string(),
    ]);
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
    let mut data = vec![0u8; 100 << 20];
    let mut state = 0x9e3779b97f4a7c15u64 ^ (seed.wrapping_mul(0x2545f4914f6cdd1d) | 1);
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(context.join("blob"), &data).unwrap();
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
