//! `kcluster stop` / `kcluster start` with new container IPs: a 1+2 cluster with a Deployment
//! behind a Service, a NodePort and a claim holding data is stopped; spacer containers then take
//! addresses on its network, so that every node comes back on another IP; after `start` the
//! nodes report their new addresses, the pods run again, the Service routes by name through
//! the cluster DNS, the node port answers on the host and the claim's data is still there.
//! An ingress Service without its PROXY-protocol annotation (as clusters made before it had)
//! gets it back when the server node starts.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn container_ips(cluster: &str) -> BTreeMap<String, String> {
    let network = format!("kcluster-{cluster}");
    [
        format!("{cluster}-server-0"),
        format!("{cluster}-worker-0"),
        format!("{cluster}-worker-1"),
    ]
    .into_iter()
    .map(|node| {
        let ip = stdout(&docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &node,
        ]))
        .trim()
        .to_string();
        (node, ip)
    })
    .collect()
}

fn manifests(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: keeper}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: keeper
    image: {image}
    command: ["sleep", "3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
"#
    )
}

fn list_state(sandbox: &Sandbox, name: &str) -> String {
    let out = sandbox.kcluster(&["list"]);
    assert!(out.status.success(), "list: {}", text(&out));
    stdout(&out)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in `kcluster list`: {}", stdout(&out)))
        .to_string()
}

#[test]
fn a_stopped_cluster_starts_again_on_new_addresses_with_everything_working() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ss");
    let tag = format!("kcluster-e2e/ss-busybox:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "2"]);
    cluster.load_image(&tag);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag));
    assert!(out.status.success(), "apply: {}", text(&out));
    cluster.wait_pod_ready("keeper");
    cluster.kubectl_ok(&[
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "echo kept-data > /data/file",
    ]);
    let out = cluster.kubectl(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(out.status.success(), "rollout: {}", text(&out));
    let node_port: u16 = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("a node port");
    let before = container_ips(&name);
    let http_before = cluster
        .ingress_host_port(80)
        .expect("the ingress's HTTP on a host port");
    // As a cluster made before the host-port proxies spoke PROXY protocol: its ingress Service
    // lacks the annotation, and gets it when the server node comes back.
    cluster.kubectl_ok(&[
        "-n",
        "kube-system",
        "annotate",
        "svc",
        "ingress-nginx-controller",
        "kcluster.dev/proxy-protocol-",
    ]);

    let out = sandbox.kcluster(&["stop", "--name", &name]);
    assert!(out.status.success(), "stop: {}", text(&out));
    for node in before.keys() {
        let state = stdout(&docker(&["inspect", "-f", "{{.State.Status}}", node]));
        assert_eq!(state.trim(), "exited", "{node} after stop");
    }
    let publisher = format!("kcluster-{name}-ports");
    let state = stdout(&docker(&["inspect", "-f", "{{.State.Status}}", &publisher]));
    assert_eq!(state.trim(), "exited", "the port publisher after stop");
    assert!(list_state(&sandbox, &name).contains("stopped"));
    // Stopping again is no error and changes nothing.
    let out = sandbox.kcluster(&["stop", "--name", &name]);
    assert!(out.status.success(), "second stop: {}", text(&out));
    assert!(text(&out).contains("already stopped"), "{}", text(&out));

    // Spacers take addresses on the cluster's network while it is down, whichever way Docker
    // hands them out (lowest free or next in turn), so the nodes cannot get their old ones back.
    let network = format!("kcluster-{name}");
    let _spacers = Spacers::start(&name, &network, &tag, 3);

    // The ingress's HTTP host port is taken while the cluster is down: start still succeeds,
    // and the port moves to the next free one, as at create.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", http_before))
        .unwrap_or_else(|e| panic!("hold 127.0.0.1:{http_before} while the cluster is down: {e}"));

    let out = sandbox.kcluster(&["start", "--name", &name, "--wait", "180s"]);
    assert!(out.status.success(), "start: {}", text(&out));
    assert!(
        text(&out).contains("next free host port"),
        "start says the taken port moves: {}",
        text(&out)
    );
    assert!(list_state(&sandbox, &name).contains("running"));
    let after = container_ips(&name);
    for (node, ip) in &after {
        assert_ne!(
            Some(ip),
            before.get(node),
            "{node} kept its address: the test did not force a new one"
        );
    }
    // Each Node reports the address its container has now.
    wait_until(
        "Nodes to report their new addresses",
        Duration::from_secs(60),
        || {
            let reported: BTreeMap<String, String> = cluster.node_ips().into_iter().collect();
            if reported == after {
                Ok(())
            } else {
                Err(format!("API {reported:?}, containers {after:?}"))
            }
        },
    );
    let out = cluster.kubectl(&["rollout", "status", "deploy/web", "--timeout=180s"]);
    assert!(out.status.success(), "web after start: {}", text(&out));
    cluster.wait_pod_ready("keeper");
    assert_eq!(
        cluster
            .kubectl_ok(&["exec", "keeper", "--", "cat", "/data/file"])
            .trim(),
        "kept-data"
    );
    // The Service by name, through the cluster DNS, from a pod.
    wait_until(
        "the Service by name from a pod",
        Duration::from_secs(60),
        || {
            let out =
                cluster.kubectl(&["exec", "keeper", "--", "wget", "-q", "-O-", "http://web/"]);
            let got = text(&out);
            if out.status.success() && got.starts_with("web-") {
                Ok(())
            } else {
                Err(got)
            }
        },
    );
    wait_until(
        "the ingress Service annotated again",
        Duration::from_secs(60),
        || {
            let got = cluster.ingress_service_annotation("kcluster.dev/proxy-protocol");
            if got.contains("=") && got.contains(":10080") {
                Ok(())
            } else {
                Err(format!("annotation {got:?}"))
            }
        },
    );
    let mut http_after = http_before;
    wait_until(
        "the ingress's HTTP published on another host port",
        Duration::from_secs(90),
        || {
            http_after = cluster
                .ingress_host_port(80)
                .expect("the ingress's HTTP on a host port");
            if http_after != http_before {
                Ok(())
            } else {
                Err(format!("still {http_after}"))
            }
        },
    );
    wait_until(
        "the ingress answering on its new host port",
        Duration::from_secs(60),
        || {
            // No Ingress in this cluster: the default server's 404 is the ingress answering.
            let got = http_once("127.0.0.1", http_after);
            if got.contains("404 Not Found") {
                Ok(())
            } else {
                Err(got)
            }
        },
    );
    // The node port on the host's loopback.
    wait_until("the node port on the host", Duration::from_secs(60), || {
        let got = http_once("127.0.0.1", node_port);
        if got.contains("200 OK") && got.contains("web-") {
            Ok(())
        } else {
            Err(got)
        }
    });

    // Bad input: no such cluster.
    let out = sandbox.kcluster(&["start", "--name", "no-such-cluster"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no cluster named \"no-such-cluster\""),
        "{}",
        text(&out)
    );
    let out = sandbox.kcluster(&["stop", "--name", "no-such-cluster"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no cluster named \"no-such-cluster\""),
        "{}",
        text(&out)
    );
}
