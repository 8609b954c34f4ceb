//! The seed tutorial, replayed from `examples/tutorial/` in the order of its README: one Pod,
//! two Pods with a ConfigMap and a Secret, Deployments (self-healing, scaling, a rolling update
//! and a rollback), Services and cluster DNS, and a NodePort reached from the host. The images
//! are built by the example's own script, so what the README tells a user is what runs here.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "luffy";

fn example(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tutorial")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

/// Removes the tutorial's images from the host's Docker when the test ends.
struct TutorialImages;

impl Drop for TutorialImages {
    fn drop(&mut self) {
        for tag in [
            "tutorial/myblog:v1",
            "tutorial/myblog:v2",
            "tutorial/mysql:5.7",
        ] {
            let _ = docker(&["rmi", "-f", tag]);
        }
    }
}

/// `examples/tutorial/images/build.sh <cluster>` with this build's kcluster first on PATH.
fn build_and_load_images(cluster: &Cluster) -> TutorialImages {
    let bin_dir = PathBuf::from(kcluster_bin())
        .parent()
        .expect("the kcluster binary has a directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(example("images/build.sh"))
        .arg(&cluster.name)
        .env("PATH", path)
        .env("HOME", cluster.sandbox.path())
        .env("KUBECONFIG", cluster.sandbox.kubeconfig())
        .output()
        .expect("cannot run examples/tutorial/images/build.sh");
    let images = TutorialImages;
    assert!(
        out.status.success(),
        "examples/tutorial/images/build.sh failed: {}",
        text(&out)
    );
    images
}

fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    cluster.kubectl_ok(&all)
}

fn create_file(cluster: &Cluster, rel: &str) {
    cluster.kubectl_ok(&["create", "-f", &example(rel)]);
}

fn wait_ready(cluster: &Cluster, pod: &str) {
    let out = cluster.kubectl(&[
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=180s",
    ]);
    assert!(
        out.status.success(),
        "pod {pod} did not become Ready: {}\n{}",
        text(&out),
        cluster.kubectl_ok(&["-n", NS, "describe", "pod", pod])
    );
}

fn rollout_status(cluster: &Cluster, deploy: &str) {
    let out = cluster.kubectl(&[
        "-n",
        NS,
        "rollout",
        "status",
        &format!("deploy/{deploy}"),
        "--timeout=240s",
    ]);
    assert!(
        out.status.success(),
        "deployment {deploy} did not roll out: {}\n{}",
        text(&out),
        cluster.kubectl_ok(&["-n", NS, "describe", "deploy", deploy])
    );
}

/// The blog's page as one pod sees it through `url`, fetched inside that pod.
fn page_in(cluster: &Cluster, target: &str, url: &str) -> String {
    kubectl_ok(
        cluster,
        &[
            "exec", target, "-c", "myblog", "--", "wget", "-q", "-O-", url,
        ],
    )
}

/// One HTTP/1.0 GET of `path` on 127.0.0.1:port, no retries.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{port}");
    match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body
        }
        Err(e) => format!("cannot connect to {addr}: {e}"),
    }
}

fn delete_pods_and_wait(cluster: &Cluster, pods: &[&str]) {
    let mut args = vec!["delete", "pod"];
    args.extend_from_slice(pods);
    args.push("--wait=true");
    kubectl_ok(cluster, &args);
    for pod in pods {
        let out = cluster.kubectl(&["-n", NS, "get", "pod", pod]);
        assert!(gone(&out), "pod {pod} still exists after its delete");
    }
}

fn myblog_pods(cluster: &Cluster) -> Vec<String> {
    kubectl_ok(
        cluster,
        &[
            "get",
            "pods",
            "-l",
            "app=myblog",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The host ports of the built-in Ingress controller (http, https), from its Service's
/// `kcluster.dev/host-ports` annotation ("80/TCP=127.0.0.1:80,443/TCP=127.0.0.1:443").
fn ingress_ports(cluster: &Cluster) -> (u16, u16) {
    let mut ports = (0, 0);
    wait_until(
        "the Ingress controller's host ports",
        Duration::from_secs(60),
        || match (
            cluster.ingress_host_port(80),
            cluster.ingress_host_port(443),
        ) {
            (Some(h), Some(s)) => {
                ports = (h, s);
                Ok(())
            }
            _ => Err(cluster.ingress_service_annotation("kcluster.dev/host-ports")),
        },
    );
    ports
}

/// curl of myblog.luffy.com as a browser with a hosts entry would ask for it: "<code> <body>".
fn curl_myblog(scheme: &str, port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-k",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &format!("myblog.luffy.com:{port}:127.0.0.1"),
            &format!("{scheme}://myblog.luffy.com:{port}{path}"),
        ])
        .output()
        .expect("cannot run curl (apt-get install curl; .ci/run installs it)");
    let t = stdout(&out);
    match t.rsplit_once('\n') {
        Some((body, code)) => format!("{code} {}", body.trim()),
        None => format!("curl failed: {}", text(&out)),
    }
}

fn wait_myblog(what: &str, scheme: &str, port: u16, want: &[&str]) -> String {
    let mut last = String::new();
    wait_until(what, Duration::from_secs(60), || {
        last = curl_myblog(scheme, port, "/blog/index/");
        if want.iter().all(|w| last.contains(w)) {
            Ok(())
        } else {
            Err(last.clone())
        }
    });
    last
}

#[test]
fn the_myblog_tutorial_replays_chapter_by_chapter() {
    require_docker_and_kubectl();
    let started = Instant::now();
    let chapter = |n: &str| eprintln!("tutorial: {n} at {:.0?}", started.elapsed());
    let sandbox = Sandbox::new();
    let name = unique_name("luffy");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "2"]);
    let _images = build_and_load_images(&cluster);
    let worker = format!("{name}-worker-0");
    create_file(&cluster, "00-namespace.yaml");

    chapter("cluster and images");
    // 1. One Pod: Pending until a node carries the label its nodeSelector asks for.
    create_file(&cluster, "01-one-pod/pod-completed.yaml");
    wait_until(
        "myblog's FailedScheduling event",
        Duration::from_secs(60),
        || {
            let events = kubectl_ok(
                &cluster,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=myblog,reason=FailedScheduling",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
            );
            if events.contains("didn't match Pod's node affinity/selector") {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    assert_eq!(
        kubectl_ok(
            &cluster,
            &["get", "pod", "myblog", "-o", "jsonpath={.status.phase}"]
        ),
        "Pending"
    );
    cluster.kubectl_ok(&["label", "node", &worker, "component=mysql"]);
    wait_ready(&cluster, "myblog");
    assert_eq!(
        kubectl_ok(
            &cluster,
            &["get", "pod", "myblog", "-o", "jsonpath={.spec.nodeName}"]
        ),
        worker
    );
    let page = page_in(&cluster, "myblog", "http://127.0.0.1:8002/blog/index/");
    assert!(
        page.contains("myblog v1") && page.contains("database 127.0.0.1:3306"),
        "the blog does not reach its database over the Pod's localhost: {page}"
    );
    let starts = |pod: &str| {
        kubectl_ok(
            &cluster,
            &[
                "exec",
                pod,
                "-c",
                "mysql",
                "--",
                "cat",
                "/var/lib/mysql/starts",
            ],
        )
        .trim()
        .to_string()
    };
    assert_eq!(starts("myblog"), "1");
    let logs = kubectl_ok(&cluster, &["logs", "myblog", "-c", "mysql"]);
    assert!(logs.contains("ready for connections"), "mysql logs: {logs}");
    // The hostPath keeps the database's data across Pods on the same node.
    delete_pods_and_wait(&cluster, &["myblog"]);
    create_file(&cluster, "01-one-pod/pod-completed.yaml");
    wait_ready(&cluster, "myblog");
    assert_eq!(starts("myblog"), "2", "the hostPath volume lost its data");
    delete_pods_and_wait(&cluster, &["myblog"]);

    chapter("chapter 1");
    // 2. Two Pods: the database on the node's network, found through a ConfigMap; the
    //    credentials from a Secret.
    let node_ip = cluster.kubectl_ok(&[
        "get",
        "node",
        "-l",
        "component=mysql",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    assert!(!node_ip.is_empty(), "the labelled node has no InternalIP");
    let configmap = std::fs::read_to_string(example("02-two-pod/configmap.yaml"))
        .unwrap()
        .replace("NODE_IP", &node_ip);
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], &configmap);
    assert!(out.status.success(), "configmap: {}", text(&out));
    create_file(&cluster, "02-two-pod/secret.yaml");
    create_file(&cluster, "02-two-pod/mysql-with-config.yaml");
    create_file(&cluster, "02-two-pod/myblog-with-config.yaml");
    wait_ready(&cluster, "mysql");
    wait_ready(&cluster, "myblog");
    assert_eq!(
        kubectl_ok(
            &cluster,
            &["get", "pod", "mysql", "-o", "jsonpath={.status.podIP}"]
        ),
        node_ip,
        "a hostNetwork pod has its node's address"
    );
    let page = page_in(&cluster, "myblog", "http://127.0.0.1:8002/blog/index/");
    assert!(
        page.contains(&format!("database {node_ip}:3306, user root")),
        "the blog did not get its database address from the ConfigMap and its user from the Secret: {page}"
    );
    delete_pods_and_wait(&cluster, &["myblog", "mysql"]);

    chapter("chapter 2");
    // 3. Deployments: replicas kept, scaled, rolled to v2 and back.
    create_file(&cluster, "03-deployment/deploy-mysql.yaml");
    create_file(&cluster, "03-deployment/deploy-myblog.yaml");
    rollout_status(&cluster, "mysql");
    rollout_status(&cluster, "myblog");
    let before = myblog_pods(&cluster);
    assert_eq!(before.len(), 1, "replicas: 1 → {before:?}");
    let victim = before[0].split(' ').next().unwrap().to_string();
    kubectl_ok(&cluster, &["delete", "pod", &victim]);
    wait_until(
        "the ReplicaSet to replace a deleted pod",
        Duration::from_secs(120),
        || {
            let ready = kubectl_ok(
                &cluster,
                &[
                    "get",
                    "deploy",
                    "myblog",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ],
            );
            let pods = myblog_pods(&cluster);
            if ready == "1"
                && pods.len() == 1
                && !pods
                    .iter()
                    .any(|p| p.split(' ').next() == Some(victim.as_str()))
            {
                Ok(())
            } else {
                Err(format!("ready {ready}, pods {pods:?}"))
            }
        },
    );
    kubectl_ok(&cluster, &["scale", "deploy", "myblog", "--replicas=2"]);
    rollout_status(&cluster, "myblog");
    kubectl_ok(
        &cluster,
        &["set", "image", "deploy/myblog", "myblog=tutorial/myblog:v2"],
    );
    rollout_status(&cluster, "myblog");
    wait_until("every myblog pod on v2", Duration::from_secs(60), || {
        let pods = myblog_pods(&cluster);
        if pods.len() == 2 && pods.iter().all(|p| p.ends_with("tutorial/myblog:v2")) {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    let page = page_in(
        &cluster,
        "deploy/myblog",
        "http://127.0.0.1:8002/blog/index/",
    );
    assert!(page.contains("myblog v2"), "after set image: {page}");
    let describe = kubectl_ok(&cluster, &["describe", "deploy", "myblog"]);
    assert!(
        describe.contains("ScalingReplicaSet"),
        "no ScalingReplicaSet events: {describe}"
    );
    let history = kubectl_ok(&cluster, &["rollout", "history", "deploy/myblog"]);
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('1'))
            && history.lines().any(|l| l.trim_start().starts_with('2')),
        "rollout history: {history}"
    );
    kubectl_ok(
        &cluster,
        &["rollout", "undo", "deploy/myblog", "--to-revision=1"],
    );
    rollout_status(&cluster, "myblog");
    wait_until(
        "every myblog pod back on v1",
        Duration::from_secs(60),
        || {
            let pods = myblog_pods(&cluster);
            if pods.len() == 2 && pods.iter().all(|p| p.ends_with("tutorial/myblog:v1")) {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            }
        },
    );

    chapter("chapter 3");
    // 4. Services and DNS: the blog by its Service's name; then the database too.
    create_file(&cluster, "04-service/svc-myblog.yaml");
    create_file(&cluster, "04-service/svc-mysql.yaml");
    wait_until("myblog's two endpoints", Duration::from_secs(60), || {
        let eps = kubectl_ok(
            &cluster,
            &[
                "get",
                "endpoints",
                "myblog",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
        );
        if eps.split_whitespace().count() == 2 {
            Ok(())
        } else {
            Err(eps)
        }
    });
    wait_until(
        "the blog through its Service's name",
        Duration::from_secs(60),
        || {
            let out = cluster.kubectl(&[
                "-n",
                NS,
                "exec",
                "deploy/myblog",
                "--",
                "wget",
                "-q",
                "-O-",
                "http://myblog/blog/index/",
            ]);
            let page = text(&out);
            if out.status.success() && page.contains("myblog v1") {
                Ok(())
            } else {
                Err(page)
            }
        },
    );
    cluster.kubectl_ok(&["apply", "-f", &example("04-service/configmap.yaml")]);
    kubectl_ok(
        &cluster,
        &[
            "delete",
            "-f",
            &example("03-deployment/deploy-mysql.yaml"),
            "--wait=true",
        ],
    );
    create_file(&cluster, "04-service/deploy-mysql.yaml");
    rollout_status(&cluster, "mysql");
    kubectl_ok(&cluster, &["rollout", "restart", "deploy/myblog"]);
    rollout_status(&cluster, "myblog");
    wait_until(
        "the blog reaching its database by the Service's name",
        Duration::from_secs(60),
        || {
            let page = page_in(&cluster, "deploy/myblog", "http://myblog/blog/index/");
            if page.contains("database mysql:3306") {
                Ok(())
            } else {
                Err(page)
            }
        },
    );
    let resolv = kubectl_ok(
        &cluster,
        &["exec", "deploy/myblog", "--", "cat", "/etc/resolv.conf"],
    );
    assert!(
        resolv.contains("search luffy.svc.cluster.local"),
        "resolv.conf: {resolv}"
    );

    chapter("chapter 4");
    // 5. NodePort, published on the host's loopback.
    create_file(&cluster, "05-nodeport/svc-myblog-nodeport.yaml");
    let node_port: u16 = kubectl_ok(
        &cluster,
        &[
            "get",
            "svc",
            "myblog-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
    )
    .parse()
    .expect("a node port");
    // A node port is published on the host's loopback under its own number.
    let host_port = node_port;
    wait_until(
        "the blog on the host's loopback",
        Duration::from_secs(60),
        || {
            let got = http_get(host_port, "/blog/index/");
            if got.contains("200 OK") && got.contains("myblog v1") {
                Ok(())
            } else {
                Err(got)
            }
        },
    );
    let ls = sandbox.kcluster(&["port", "ls", "--name", &name]);
    assert!(
        ls.status.success() && stdout(&ls).contains(&host_port.to_string()),
        "port ls does not list node port {host_port}: {}",
        text(&ls)
    );
    chapter("chapter 5");

    // 6. Ingress: the built-in controller, on the host ports it was published on.
    let (http, https) = ingress_ports(&cluster);
    create_file(&cluster, "06-ingress/myblog.ing.yaml");
    wait_until(
        "the Ingress's class and address",
        Duration::from_secs(60),
        || {
            let got = kubectl_ok(
                &cluster,
                &[
                    "get",
                    "ing",
                    "myblog",
                    "-o",
                    "jsonpath={.spec.ingressClassName} {.status.loadBalancer.ingress[0].ip}",
                ],
            );
            if got == "nginx 127.0.0.1" {
                Ok(())
            } else {
                Err(got)
            }
        },
    );
    wait_myblog(
        "the blog through the Ingress",
        "http",
        http,
        &["200 ", "myblog v1"],
    );
    let dir = sandbox.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, crt) = (dir.join("tls.key"), dir.join("tls.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "2920", "-newkey", "rsa:2048", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=*.luffy.com/O=ingress-nginx"])
        .output()
        .expect("cannot run openssl (.ci/run installs it)");
    assert!(out.status.success(), "openssl: {}", text(&out));
    kubectl_ok(
        &cluster,
        &[
            "create",
            "secret",
            "tls",
            "tls-myblog",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            crt.to_str().unwrap(),
        ],
    );
    cluster.kubectl_ok(&["apply", "-f", &example("06-ingress/myblog-tls.ing.yaml")]);
    wait_myblog(
        "the blog over HTTPS",
        "https",
        https,
        &["200 ", "myblog v1"],
    );
    wait_myblog("plain HTTP redirected to HTTPS", "http", http, &["308"]);
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        &example("06-ingress/myblog-annotations.ing.yaml"),
    ]);
    wait_myblog(
        "plain HTTP served again with ssl-redirect false",
        "http",
        http,
        &["200 ", "myblog v1"],
    );
    chapter("chapter 6");
}
