//! Services end to end on a real two-node cluster: the seed tutorial's Service chapter
//! replayed with the real kubectl (expose, curl the cluster IP from pods on both nodes, scale,
//! readiness), then what kube-proxy users rely on: NodePort on every node's address,
//! `externalTrafficPolicy: Local` keeping the client's address, hairpin, ClientIP affinity, UDP,
//! connection refused for a Service without endpoints, pod egress to a container on the
//! cluster's Docker network, hostPort, and the API server through `kubernetes.default`.
//! Every pod runs on a node; every request is real traffic between the test's own containers.

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use common::images::build_net_image;
use common::*;

const IMAGE: &str = "kcluster-e2e/net:1";

/// A container on the cluster's Docker network that is not a node: an "outside" client or server.
struct Outsider {
    name: String,
}

impl Outsider {
    fn start(cluster: &str, name: &str, cmd: &[&str]) -> Outsider {
        Self::start_image(cluster, name, IMAGE, cmd)
    }

    fn start_image(cluster: &str, name: &str, image: &str, cmd: &[&str]) -> Outsider {
        let network = format!("kcluster-{cluster}");
        let mut args = vec!["run", "-d", "--network", &network, "--name", name, image];
        args.extend_from_slice(cmd);
        let out = docker(&args);
        assert!(out.status.success(), "docker run failed: {}", text(&out));
        Outsider {
            name: name.to_string(),
        }
    }

    fn ip(&self) -> String {
        let out = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name,
        ]);
        stdout(&out).trim().to_string()
    }

    fn sh(&self, script: &str) -> Output {
        docker(&["exec", &self.name, "sh", "-c", script])
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

fn sh(cluster: &Cluster, ns: &str, pod: &str, script: &str) -> Output {
    cluster.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
}

/// `n` GETs of `url` from inside `pod`; the set of first words (the answering pod's name).
fn answers(cluster: &Cluster, ns: &str, pod: &str, url: &str, n: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq {n}); do timeout 5 wget -q -O- {url} || echo FAILED; done");
    let out = sh(cluster, ns, pod, &script);
    assert!(out.status.success(), "wget loop failed: {}", text(&out));
    stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn pods_of(cluster: &Cluster, ns: &str, selector: &str) -> BTreeSet<String> {
    cluster
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn wait_ready(cluster: &Cluster, ns: &str, selector: &str, count: usize) {
    cluster.wait_for(
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
        Duration::from_secs(120),
        |s| s.lines().filter(|l| *l == "True").count() == count && s.lines().count() == count,
    );
}

fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: luffy}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: myblog, namespace: luffy}
spec:
  replicas: 2
  selector: {matchLabels: {app: myblog}}
  template:
    metadata: {labels: {app: myblog}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app: myblog}}
      containers:
      - name: myblog
        image: IMAGE
        imagePullPolicy: Never
        command: ["net-tool", "serve", "8002"]
        ports: [{containerPort: 8002}]
        readinessProbe:
          exec: {command: ["sh", "-c", "test ! -e /unready"]}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: myblog
  namespace: luffy
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 8002
  selector:
    app: myblog
  type: ClusterIP
"#;

fn client_pod(name: &str, ns: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{role: client}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: ["net-tool", "serve", "9000"]}}
"#
    )
}

#[test]
fn services_route_like_the_seed_tutorial_and_as_kube_proxy_does() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let name = unique_name("svc");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(IMAGE);
    let nodes = cluster.node_ips();
    assert_eq!(nodes.len(), 2, "{nodes:?}");

    // The seed's Service chapter: a Deployment and `kd create -f svc-myblog.yaml`.
    apply(&cluster, &SEED.replace("IMAGE", IMAGE));
    for (node, _) in &nodes {
        apply(&cluster, &client_pod(&format!("c-{node}"), "luffy", node));
    }
    let clients: Vec<String> = nodes.iter().map(|(n, _)| format!("c-{n}")).collect();
    wait_ready(&cluster, "luffy", "app=myblog", 2);
    wait_ready(&cluster, "luffy", "role=client", 2);
    let ip = cluster.kubectl_ok(&[
        "get",
        "svc",
        "myblog",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let backends = pods_of(&cluster, "luffy", "app=myblog");
    let backend_nodes = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "luffy",
        "-l",
        "app=myblog",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    // From a pod on each node: both backends answer (one same-node, one cross-node when the
    // scheduler spread them; every path is covered either way).
    for client in &clients {
        wait_until(
            &format!("both backends to answer {client} at {ip} (on {backend_nodes})"),
            Duration::from_secs(30),
            || {
                let seen: BTreeSet<String> =
                    answers(&cluster, "luffy", client, &format!("http://{ip}/"), 20)
                        .into_iter()
                        .collect();
                if seen == backends {
                    Ok(())
                } else {
                    Err(format!("saw {seen:?}, want {backends:?}"))
                }
            },
        );
    }

    // Scale to three: the new pod gets traffic.
    cluster.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=3"]);
    wait_ready(&cluster, "luffy", "app=myblog", 3);
    let all = pods_of(&cluster, "luffy", "app=myblog");
    let new_pod = all.difference(&backends).next().expect("a new pod").clone();
    wait_until(
        "the new pod to get traffic",
        Duration::from_secs(30),
        || {
            let seen = answers(&cluster, "luffy", &clients[0], &format!("http://{ip}/"), 30);
            if seen.contains(&new_pod) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );

    // A pod that turns unready stops getting traffic.
    let out = sh(&cluster, "luffy", &new_pod, "touch /unready");
    assert!(out.status.success(), "{}", text(&out));
    cluster.wait_for(
        &[
            "get",
            "endpoints",
            "myblog",
            "-n",
            "luffy",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        Duration::from_secs(30),
        |s| s.split_whitespace().count() == 2,
    );
    wait_until(
        "the unready pod to get no traffic",
        Duration::from_secs(10),
        || {
            let seen = answers(&cluster, "luffy", &clients[1], &format!("http://{ip}/"), 30);
            if seen.contains(&new_pod) || seen.iter().any(|s| s == "FAILED") {
                Err(format!("{seen:?}"))
            } else {
                Ok(())
            }
        },
    );

    // Hairpin: a backend reaching its own Service, answered by itself among others.
    let backend = backends.iter().next().unwrap().clone();
    wait_until(
        "a backend to reach itself through its Service",
        Duration::from_secs(20),
        || {
            let seen = answers(&cluster, "luffy", &backend, &format!("http://{ip}/"), 30);
            if seen.contains(&backend) && !seen.iter().any(|s| s == "FAILED") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );

    // NodePort (the seed's myblog-np) on every node's address, from a container on the
    // cluster's Docker network that is not a node. externalTrafficPolicy Cluster masquerades:
    // the pod sees a node's address.
    let outsider = Outsider::start(
        &name,
        &format!("{name}-outside"),
        &["net-tool", "serve", "7000"],
    );
    let outside_ip = outsider.ip();
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: myblog-np, namespace: luffy}
spec:
  ports: [{port: 80, protocol: TCP, targetPort: 8002}]
  selector: {app: myblog}
  type: NodePort
"#,
    );
    let node_port = cluster.kubectl_ok(&[
        "get",
        "svc",
        "myblog-np",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for (node, addr) in &nodes {
        wait_until(
            &format!("NodePort {node_port} on {node}"),
            Duration::from_secs(20),
            || {
                let out = outsider.sh(&format!("timeout 5 wget -q -O- http://{addr}:{node_port}/"));
                let body = stdout(&out);
                let seen_from = body.split_whitespace().nth(1).unwrap_or("");
                if out.status.success() && seen_from != outside_ip {
                    Ok(())
                } else {
                    Err(text(&out))
                }
            },
        );
        // And from the machine running the test (Linux reaches container addresses).
        let got = http_get(addr, node_port.parse().unwrap());
        assert!(got.contains("200 OK"), "{got}");
    }

    // externalIPs: a Service port on an address the cluster's hosts route to (here a node's).
    let (ext_node, ext_ip) = &nodes[1];
    apply(
        &cluster,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: myblog-ext, namespace: luffy}}
spec:
  externalIPs: ["{ext_ip}"]
  ports: [{{port: 8081, protocol: TCP, targetPort: 8002}}]
  selector: {{app: myblog}}
"#
        ),
    );
    wait_until(
        &format!("externalIP {ext_ip} ({ext_node})"),
        Duration::from_secs(20),
        || {
            let out = outsider.sh(&format!("timeout 5 wget -q -O- http://{ext_ip}:8081/"));
            if out.status.success() && stdout(&out).starts_with("myblog-") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );

    // externalTrafficPolicy Local: only nodes with a local endpoint answer, and the pod sees
    // the outside client's own address.
    cluster.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=1"]);
    wait_ready(&cluster, "luffy", "app=myblog", 1);
    cluster.kubectl_ok(&[
        "patch",
        "svc",
        "myblog-np",
        "-n",
        "luffy",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let only = pods_of(&cluster, "luffy", "app=myblog")
        .into_iter()
        .next()
        .unwrap();
    let only_node = cluster.kubectl_ok(&[
        "get",
        "pod",
        &only,
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    for (node, addr) in &nodes {
        let url = format!("http://{addr}:{node_port}/");
        if *node == only_node {
            wait_until(
                "the client address to be kept",
                Duration::from_secs(20),
                || {
                    let out = outsider.sh(&format!("timeout 5 wget -q -O- {url}"));
                    let body = stdout(&out);
                    if body.split_whitespace().nth(1) == Some(outside_ip.as_str()) {
                        Ok(())
                    } else {
                        Err(text(&out))
                    }
                },
            );
        } else {
            wait_until(
                "a node without a local endpoint to drop",
                Duration::from_secs(20),
                || {
                    let out = outsider.sh(&format!("timeout 5 wget -q -O- {url}"));
                    if out.status.success() {
                        Err(format!("answered: {}", text(&out)))
                    } else {
                        Ok(())
                    }
                },
            );
        }
    }

    // Session affinity ClientIP: every request of one client lands on one pod.
    cluster.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=3"]);
    sh(&cluster, "luffy", &new_pod, "rm -f /unready");
    wait_ready(&cluster, "luffy", "app=myblog", 3);
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: luffy}
spec:
  ports: [{port: 80, targetPort: 8002}]
  selector: {app: myblog}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
"#,
    );
    let sticky = cluster.kubectl_ok(&[
        "get",
        "svc",
        "sticky",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    cluster.wait_for(
        &[
            "get",
            "endpoints",
            "sticky",
            "-n",
            "luffy",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        Duration::from_secs(30),
        |s| s.split_whitespace().count() == 3,
    );
    wait_until("sticky answers", Duration::from_secs(20), || {
        let seen = answers(
            &cluster,
            "luffy",
            &clients[0],
            &format!("http://{sticky}/"),
            15,
        );
        let distinct: BTreeSet<&String> = seen.iter().collect();
        if distinct.len() == 1 && !seen.iter().any(|s| s == "FAILED") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });

    // UDP through a Service, to a named targetPort.
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: echo-udp, namespace: luffy}
spec:
  ports: [{name: echo, port: 5353, protocol: UDP, targetPort: 8002}]
  selector: {app: myblog}
"#,
    );
    let udp_ip = cluster.kubectl_ok(&[
        "get",
        "svc",
        "echo-udp",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let now = pods_of(&cluster, "luffy", "app=myblog");
    wait_until(
        "a UDP answer through the Service",
        Duration::from_secs(20),
        || {
            let out = sh(
                &cluster,
                "luffy",
                &clients[1],
                &format!("net-tool udp {udp_ip} 5353 hello"),
            );
            let body = stdout(&out);
            let from = body.split_whitespace().next().unwrap_or("");
            if out.status.success() && body.trim_end().ends_with("hello") && now.contains(from) {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );

    // A UDP endpoint that leaves its Service: the client keeps its source port (as a resolver
    // does), so without the conntrack cleanup every datagram would follow the old entry to the
    // old pod, which is still alive and would still answer.
    let movers: Vec<&String> = now.iter().take(2).collect();
    let [first, second] = movers[..] else {
        panic!("two myblog pods expected, have {now:?}");
    };
    cluster.kubectl_ok(&["label", "pod", first, "-n", "luffy", "udp=target"]);
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: udp-mover, namespace: luffy}
spec:
  ports: [{port: 5300, protocol: UDP, targetPort: 8002}]
  selector: {udp: target}
"#,
    );
    let mover_ip = cluster.kubectl_ok(&[
        "get",
        "svc",
        "udp-mover",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let answered_by = |want: &str| {
        let out = sh(
            &cluster,
            "luffy",
            &clients[1],
            &format!("net-tool udp {mover_ip} 5300 hi 40053"),
        );
        let body = stdout(&out);
        if out.status.success() && body.split_whitespace().next() == Some(want) {
            Ok(())
        } else {
            Err(text(&out))
        }
    };
    wait_until(
        "the first UDP endpoint answers from a fixed source port",
        Duration::from_secs(20),
        || answered_by(first),
    );
    cluster.kubectl_ok(&["label", "pod", second, "-n", "luffy", "udp=target"]);
    cluster.kubectl_ok(&["label", "pod", first, "-n", "luffy", "udp-"]);
    wait_until(
        "the same client and source port reach the endpoint that replaced the removed one",
        Duration::from_secs(20),
        || answered_by(second),
    );

    // A Service whose selector matches nothing: refused at once, not a hang.
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: luffy}
spec:
  ports: [{port: 80, targetPort: 8002}]
  selector: {app: nobody}
"#,
    );
    let nobody = cluster.kubectl_ok(&[
        "get",
        "svc",
        "nobody",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    wait_until(
        "connection refused for a Service without endpoints",
        Duration::from_secs(20),
        || {
            let started = Instant::now();
            let out = sh(
                &cluster,
                "luffy",
                &clients[0],
                &format!("timeout 5 wget -q -O- http://{nobody}/"),
            );
            let took = started.elapsed();
            let err = text(&out);
            if !out.status.success() && err.contains("refused") {
                Ok(())
            } else {
                Err(format!("after {took:?}: {err}"))
            }
        },
    );

    // Pod egress: a container on the Docker network that has no route to pods answers, and
    // sees the node's address.
    let out = sh(
        &cluster,
        "luffy",
        &clients[0],
        &format!("timeout 5 wget -q -O- http://{outside_ip}:7000/"),
    );
    assert!(out.status.success(), "pod egress failed: {}", text(&out));
    let client_node_ip = &nodes[0].1;
    assert_eq!(
        stdout(&out).split_whitespace().nth(1),
        Some(client_node_ip.as_str()),
        "egress is masqueraded to the node's address: {}",
        text(&out)
    );

    // The API server through the `kubernetes` Service, as in-cluster clients reach it
    // (KUBERNETES_SERVICE_HOST, the service-account token, TLS verified against the CA).
    let body = in_cluster_get(&cluster, "luffy", "incluster-ip", IMAGE, false);
    assert!(body.contains("APIVersions"), "{body}");
}

/// Runs this build's own binary in a pod (mounted from the node, where it is /kcluster) as an
/// in-cluster client: `kcluster node incluster-get /api`; returns its output.
fn in_cluster_get(cluster: &Cluster, ns: &str, pod: &str, image: &str, by_name: bool) -> String {
    let flag = if by_name { ", \"--by-name\"" } else { "" };
    apply(
        cluster,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: {ns}}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    imagePullPolicy: Never
    command: ["/kcluster-client", "node", "incluster-get", "/api"{flag}]
    volumeMounts: [{{name: bin, mountPath: /kcluster-client}}]
  volumes:
  - {{name: bin, hostPath: {{path: /kcluster, type: File}}}}
"#
        ),
    );
    let phase = cluster.wait_for(
        &[
            "get",
            "pod",
            pod,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.phase}",
        ],
        Duration::from_secs(60),
        |s| s == "Succeeded" || s == "Failed",
    );
    let logs = cluster.kubectl_ok(&["logs", pod, "-n", ns]);
    assert_eq!(phase, "Succeeded", "the in-cluster client failed: {logs}");
    logs
}

#[test]
fn host_ports_reach_their_pod_on_its_nodes_address() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, "kcluster-e2e/net:hostport");
    let name = unique_name("hostport");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image("kcluster-e2e/net:hostport");
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hp}
spec:
  containers:
  - name: c
    image: kcluster-e2e/net:hostport
    imagePullPolicy: Never
    command: ["net-tool", "serve", "8080"]
    ports: [{containerPort: 8080, hostPort: 18080}, {containerPort: 8080, hostPort: 18081, protocol: UDP}]
"#,
    );
    cluster.wait_ready_pod("hp");
    let node_ip = &cluster.node_ips()[0].1;
    let got = http_get(node_ip, 18080);
    assert!(got.contains("200 OK") && got.contains("hp "), "{got}");
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(b"ping", format!("{node_ip}:18081")).unwrap();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("a UDP answer through the hostPort");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        answer.starts_with("hp ") && answer.ends_with("ping"),
        "{answer}"
    );
}

/// GETs from this machine until one answers 200 (20 s at most); the last response or error.
fn http_get(host: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = http_once(host, port);
        if body.contains("200 OK") || Instant::now() >= deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// nslookup's answer lines ("Address: x" / "name = x" / "service = …") for one query.
fn lookup(cluster: &Cluster, ns: &str, pod: &str, args: &str) -> (bool, String) {
    let out = sh(cluster, ns, pod, &format!("nslookup {args}"));
    (out.status.success(), text(&out))
}

const DNS_OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: luffy}
---
apiVersion: v1
kind: Service
metadata: {name: myblog, namespace: luffy}
spec:
  ports: [{name: http, port: 80, targetPort: 8002}]
  selector: {app: myblog}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: myblog, namespace: luffy}
spec:
  replicas: 1
  selector: {matchLabels: {app: myblog}}
  template:
    metadata: {labels: {app: myblog}}
    spec:
      containers:
      - {name: c, image: IMAGE, imagePullPolicy: Never, command: ["net-tool", "serve", "8002"]}
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  ports: [{name: web, port: 80, targetPort: 8002}]
  selector: {app: sts}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 2
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: IMAGE, imagePullPolicy: Never, command: ["net-tool", "serve", "8002"]}
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  type: ExternalName
  externalName: OUTSIDER
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: IMAGE, imagePullPolicy: Never, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  dnsPolicy: Default
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: IMAGE, imagePullPolicy: Never, command: ["sleep", "3600"]}
"#;

#[test]
fn cluster_dns_answers_by_the_kubernetes_dns_specification() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let image = "kcluster-e2e/net:dns";
    let _image = build_net_image(&sandbox, image);
    let name = unique_name("dns");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(image);
    let outsider_name = format!("{name}-named");
    let outsider = Outsider::start_image(&name, &outsider_name, image, &["sleep", "600"]);
    let outsider_ip = outsider.ip();

    // kube-dns as users look for it, with one endpoint per node.
    let svc = cluster.kubectl_ok(&[
        "-n", "kube-system", "get", "svc", "kube-dns", "-o",
        "jsonpath={.spec.clusterIP} {.metadata.labels.k8s-app} {range .spec.ports[*]}{.name}:{.port}/{.protocol} {end}",
    ]);
    assert_eq!(
        svc.trim(),
        "10.96.0.10 kube-dns dns:53/UDP dns-tcp:53/TCP metrics:9153/TCP"
    );
    cluster.wait_for(
        &[
            "-n",
            "kube-system",
            "get",
            "endpoints",
            "kube-dns",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        Duration::from_secs(30),
        |s| s.split_whitespace().count() == 2,
    );

    apply(
        &cluster,
        &DNS_OBJECTS
            .replace("IMAGE", image)
            .replace("OUTSIDER", &outsider_name),
    );
    wait_ready(&cluster, "luffy", "app=myblog", 1);
    wait_ready(&cluster, "default", "app=sts", 2);
    cluster.wait_ready_pod("client");
    cluster.wait_ready_pod("plain");
    let myblog_ip = cluster.kubectl_ok(&[
        "get",
        "svc",
        "myblog",
        "-n",
        "luffy",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let web0_ip = cluster.kubectl_ok(&["get", "pod", "web-0", "-o", "jsonpath={.status.podIP}"]);
    let web1_ip = cluster.kubectl_ok(&["get", "pod", "web-1", "-o", "jsonpath={.status.podIP}"]);

    // The seed's resolv.conf.
    let out = sh(&cluster, "default", "client", "cat /etc/resolv.conf");
    assert_eq!(
        stdout(&out),
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );

    let expect = |what: &str, args: &str, want: &str| {
        wait_until(what, Duration::from_secs(20), || {
            let (ok, out) = lookup(&cluster, "default", "client", args);
            if ok && out.contains(want) {
                Ok(())
            } else {
                Err(out)
            }
        });
    };
    // Another namespace's Service, short and fully qualified; the search path does the rest.
    expect(
        "myblog.luffy",
        "myblog.luffy.svc.cluster.local",
        &format!("Address: {myblog_ip}"),
    );
    let out = sh(
        &cluster,
        "default",
        "client",
        "wget -q -O- http://myblog.luffy/",
    );
    assert!(
        out.status.success() && stdout(&out).starts_with("myblog-"),
        "{}",
        text(&out)
    );
    // Headless: one address per ready pod; StatefulSet pods by name.
    expect(
        "the headless service",
        "nginx.default.svc.cluster.local",
        &format!("Address: {web0_ip}"),
    );
    expect(
        "the headless service",
        "nginx.default.svc.cluster.local",
        &format!("Address: {web1_ip}"),
    );
    expect(
        "a StatefulSet pod",
        "web-0.nginx.default.svc.cluster.local",
        &format!("Address: {web0_ip}"),
    );
    // SRV for a named port, PTR for a cluster IP.
    expect(
        "SRV",
        "-type=srv _http._tcp.myblog.luffy.svc.cluster.local",
        "service = 0 100 80 myblog.luffy.svc.cluster.local",
    );
    expect("PTR", &myblog_ip, "name = myblog.luffy.svc.cluster.local");
    // ExternalName: a CNAME to a name Docker's DNS knows (another container), chased.
    expect(
        "ExternalName",
        "outside.default.svc.cluster.local",
        &format!("Address: {outsider_ip}"),
    );
    // Pod A records and the schema version.
    let dashed = web0_ip.replace('.', "-");
    expect(
        "a pod's A record",
        &format!("{dashed}.default.pod.cluster.local"),
        &format!("Address: {web0_ip}"),
    );
    expect(
        "dns-version",
        "-type=txt dns-version.cluster.local",
        "1.1.0",
    );
    // A name that does not exist: NXDOMAIN, not a timeout.
    let (ok, out) = lookup(
        &cluster,
        "default",
        "client",
        "nosuch.default.svc.cluster.local",
    );
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    // Names outside the cluster go to the node's resolver (Docker's DNS knows the container).
    expect(
        "a forwarded name",
        &format!("{outsider_name}."),
        &format!("Address: {outsider_ip}"),
    );
    // dnsPolicy Default: the node's resolver, reachable from the pod.
    let out = sh(&cluster, "default", "plain", "cat /etc/resolv.conf");
    assert!(!stdout(&out).contains("127.0.0.11"), "{}", text(&out));
    wait_until(
        "a forwarded name from a dnsPolicy Default pod",
        Duration::from_secs(20),
        || {
            let (ok, out) = lookup(&cluster, "default", "plain", &format!("{outsider_name}."));
            if ok && out.contains(&outsider_ip) {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    // The API server by name (kubernetes.default.svc through cluster DNS), TLS verified.
    let body = in_cluster_get(&cluster, "default", "incluster-name", image, true);
    assert!(body.contains("APIVersions"), "{body}");

    // A Service that goes away stops resolving.
    cluster.kubectl_ok(&["delete", "svc", "myblog", "-n", "luffy"]);
    wait_until(
        "a deleted Service to be NXDOMAIN",
        Duration::from_secs(20),
        || {
            let (ok, out) = lookup(
                &cluster,
                "default",
                "client",
                "myblog.luffy.svc.cluster.local",
            );
            if !ok && out.contains("NXDOMAIN") {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
}

#[test]
fn a_restarted_node_routes_again_before_its_pods_are_ready() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let image = "kcluster-e2e/net:restart";
    let _image = build_net_image(&sandbox, image);
    let name = unique_name("svc-restart");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(image);
    let worker = format!("{name}-worker-0");
    apply(
        &cluster,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: {worker}
  containers:
  - name: c
    image: {image}
    imagePullPolicy: Never
    command: ["net-tool", "serve", "8080"]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
        ),
    );
    cluster.wait_ready_pod("web");
    let node_port: u16 = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap();
    // The worker's address as Docker has it now (a restart may hand out another).
    let worker_ip = || {
        let out = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &worker,
        ]);
        stdout(&out).trim().to_string()
    };
    let got = http_get(&worker_ip(), node_port);
    assert!(got.contains("200 OK"), "{got}");
    let container = |c: &Cluster| {
        c.kubectl_ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ])
    };
    let before = container(&cluster);

    let out = docker(&["restart", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    // The moment the pod is Ready again in a new container, its node already routes to it:
    // one request, no retries.
    cluster.wait_for(
        &[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID} {.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        Duration::from_secs(120),
        |s| s.ends_with(" True") && !s.starts_with(&format!("{before} ")),
    );
    let got = http_once(&worker_ip(), node_port);
    assert!(got.contains("200 OK") && got.contains("web "), "{got}");
}
