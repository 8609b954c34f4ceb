//! Host ports end to end on a real two-node cluster: NodePort and LoadBalancer Services reached
//! from this machine's loopback with real traffic to real pods (TCP and UDP), added and removed
//! while the cluster runs; a taken host port moves a LoadBalancer and gives a NodePort a
//! Warning event without disturbing what holds it; a connection through one port survives
//! other Services coming and going; `kcluster port ls`, `get nodes` and `delete` see the proxies
//! as they should.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::images::{TestImage, build_net_image};
use common::*;

/// Each test builds its own tag (`kcluster-e2e/net:<cluster>`): a test that ends removes its
/// image, which must not pull it from under another test running beside it.
fn image_for(cluster: &str) -> String {
    format!("kcluster-e2e/net:{cluster}")
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c", "net-tool sink 9000 & exec net-tool serve 8080"]
        ports: [{containerPort: 8080}, {containerPort: 9000}]
"#;

/// A cluster (named after `prefix`) running `web` from an image built for it, rolled out; the
/// Deployment's manifest goes through `edit` (given the cluster's name) first.
fn web_cluster<'a>(
    sandbox: &'a Sandbox,
    prefix: &str,
    args: &[&str],
    edit: impl Fn(&str, String) -> String,
) -> (String, TestImage, Cluster<'a>) {
    let name = unique_name(prefix);
    let tag = image_for(&name);
    let image = build_net_image(sandbox, &tag);
    let cluster = Cluster::create(sandbox, &name, args);
    cluster.load_image(&tag);
    let manifest = edit(&name, WEB.replace("IMAGE", &tag));
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    (name, image, cluster)
}

/// `kubectl expose deploy/web --type=NodePort` (port 80 to the pods' 8080): its node port.
fn expose_node_port(cluster: &Cluster) -> u16 {
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    jsonpath(cluster, "svc/web", "{.spec.ports[0].nodePort}")
        .parse()
        .expect("a node port")
}

/// `kubectl expose deploy/web --type=LoadBalancer` as `name` on `port` (to the pods' 8080).
fn expose_load_balancer(cluster: &Cluster, name: &str, port: u16) {
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        &format!("--name={name}"),
        &format!("--port={port}"),
        "--target-port=8080",
        "--type=LoadBalancer",
    ]);
}

/// Waits until a pod of `web` answers on 127.0.0.1:port.
fn wait_answer(what: &str, port: u16) {
    wait_until(what, Duration::from_secs(60), || {
        let got = http_once("127.0.0.1", port);
        if got.contains("200 OK") && got.contains("web-") {
            Ok(())
        } else {
            Err(got)
        }
    });
}

/// A port nothing on this machine listens on right now (TCP or UDP).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn jsonpath(cluster: &Cluster, kind_name: &str, path: &str) -> String {
    cluster.kubectl_ok(&["get", kind_name, "-o", &format!("jsonpath={path}")])
}

fn port_ls(sandbox: &Sandbox, cluster: &str) -> String {
    let out = sandbox.kcluster(&["port", "ls", "--name", cluster]);
    assert!(out.status.success(), "port ls failed: {}", text(&out));
    stdout(&out)
}

/// The host port a LoadBalancer Service's annotation names for its first port.
fn annotated_host_port(cluster: &Cluster, svc: &str) -> u16 {
    let mut port = 0;
    wait_until(
        &format!("the host-ports annotation of {svc}"),
        Duration::from_secs(60),
        || {
            let value = jsonpath(
                cluster,
                &format!("svc/{svc}"),
                "{.metadata.annotations.kcluster\\.dev/host-ports}",
            );
            match value.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
                Some(Ok(p)) => {
                    port = p;
                    Ok(())
                }
                _ => Err(value),
            }
        },
    );
    port
}

fn events_of(cluster: &Cluster, name: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "jsonpath={range .items[*]}{.type} {.reason} {.message}{\"\\n\"}{end}",
    ])
}

/// A connection to a sink (which never writes) is open when a read finds nothing yet rather
/// than the end or a reset.
fn still_open(s: &mut TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Ok(0) => Err("the connection was closed".into()),
        Ok(_) => Err("the sink wrote something".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn container_id(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    assert!(out.status.success(), "no container {name}: {}", text(&out));
    stdout(&out).trim().to_string()
}

fn container_gone(name: &str) -> Result<(), String> {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    let err = text(&out);
    if out.status.success() {
        Err(format!("{name} still exists"))
    } else if err.contains("No such object") {
        Ok(())
    } else {
        panic!("docker inspect {name} failed otherwise: {err}")
    }
}

#[test]
fn services_are_published_on_the_hosts_loopback_while_the_cluster_runs() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let (name, _image, cluster) =
        web_cluster(&sandbox, "hostports", &["--workers", "1"], |_, web| web);

    // NodePort: the node port itself on 127.0.0.1, as `kubectl expose` made it.
    let node_port = expose_node_port(&cluster);
    wait_answer("the NodePort on 127.0.0.1", node_port);
    let listed = port_ls(&sandbox, &name);
    assert!(
        listed.contains(&format!("127.0.0.1:{node_port}/TCP"))
            && listed.contains("default/web ")
            && listed.contains("NodePort"),
        "{listed}"
    );

    // A long-lived connection through another NodePort, kept open while Services come and go.
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--name=web-sink",
        "--port=9000",
        "--type=NodePort",
    ]);
    let sink_port: u16 = jsonpath(&cluster, "svc/web-sink", "{.spec.ports[0].nodePort}")
        .parse()
        .expect("a node port");
    let sink_proxy = format!("kcluster-{name}-port-{sink_port}-tcp");
    let mut long_lived = None;
    wait_until("the sink NodePort", Duration::from_secs(60), || {
        match TcpStream::connect(("127.0.0.1", sink_port)) {
            Ok(mut s) => {
                s.write_all(&[7u8; 65536]).map_err(|e| e.to_string())?;
                // Until the Service routes, the proxy finds no node port and closes at once.
                still_open(&mut s)?;
                long_lived = Some(s);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let mut long_lived = long_lived.expect("a connection");
    let sink_id = container_id(&sink_proxy);

    // LoadBalancer: EXTERNAL-IP filled, the Service port on the host.
    let lb_port = free_port(false);
    expose_load_balancer(&cluster, "web-lb", lb_port);
    cluster.wait_for(&["get", "svc", "web-lb"], Duration::from_secs(60), |s| {
        s.contains("127.0.0.1") && s.contains(&format!("{lb_port}:3"))
    });
    wait_answer("the LoadBalancer port", lb_port);
    assert_eq!(
        jsonpath(
            &cluster,
            "svc/web-lb",
            "{.status.loadBalancer.ingress[0].ports[0].port}"
        ),
        lb_port.to_string()
    );

    // A second LoadBalancer on the same port gets another host port; both are reported.
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--name=web-lb2",
        &format!("--port={lb_port}"),
        "--target-port=8080",
        "--type=LoadBalancer",
    ]);
    let lb2_port = annotated_host_port(&cluster, "web-lb2");
    assert_ne!(lb2_port, lb_port);
    wait_answer("the second LoadBalancer's host port", lb2_port);
    let listed = port_ls(&sandbox, &name);
    assert!(
        listed.contains(&format!("127.0.0.1:{lb_port}/TCP   default/web-lb "))
            && listed.contains(&format!("127.0.0.1:{lb2_port}/TCP   default/web-lb2 ")),
        "{listed}"
    );

    // A host port something else holds: the LoadBalancer moves, says so, and the holder keeps
    // its port.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--name=web-taken",
        &format!("--port={held}"),
        "--target-port=8080",
        "--type=LoadBalancer",
    ]);
    let moved = annotated_host_port(&cluster, "web-taken");
    assert_ne!(moved, held);
    wait_answer("the moved LoadBalancer port", moved);
    let events = events_of(&cluster, "web-taken");
    assert!(
        events.contains("Normal HostPortPublished")
            && events.contains(&format!("127.0.0.1:{moved}"))
            && events.contains("was not available"),
        "{events}"
    );
    let _client = TcpStream::connect(("127.0.0.1", held)).expect("the holder still listens");
    holder.accept().expect("the holder accepts its connection");

    // A NodePort whose host port is taken: a Warning event, nothing published, holder untouched.
    let offset = std::process::id() % 2768;
    let np_holder = (0..2768u32)
        .map(|i| 30000 + (i + offset) % 2768)
        .find_map(|p| TcpListener::bind(("127.0.0.1", p as u16)).ok())
        .expect("a free port in the node port range");
    let np_held = np_holder.local_addr().unwrap().port();
    cluster.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "np-taken",
        "--tcp=80:8080",
        &format!("--node-port={np_held}"),
    ]);
    wait_until(
        "a HostPortUnavailable event",
        Duration::from_secs(60),
        || {
            let events = events_of(&cluster, "np-taken");
            if events.contains("Warning HostPortUnavailable")
                && events.contains(&format!("127.0.0.1:{np_held} is not available"))
            {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    assert!(!port_ls(&sandbox, &name).contains("np-taken"));
    let _client = TcpStream::connect(("127.0.0.1", np_held)).expect("the holder still listens");
    np_holder
        .accept()
        .expect("the holder accepts its connection");

    // UDP through a LoadBalancer.
    let udp_port = free_port(true);
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--name=web-udp",
        &format!("--port={udp_port}"),
        "--target-port=8080",
        "--protocol=UDP",
        "--type=LoadBalancer",
    ]);
    let udp_host_port = annotated_host_port(&cluster, "web-udp");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    wait_until("a UDP answer", Duration::from_secs(60), || {
        sock.send_to(b"ping", ("127.0.0.1", udp_host_port))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        match sock.recv(&mut buf) {
            Ok(n) => {
                let answer = String::from_utf8_lossy(&buf[..n]).to_string();
                if answer.starts_with("web-") && answer.ends_with("ping") {
                    Ok(())
                } else {
                    Err(answer)
                }
            }
            Err(e) => Err(e.to_string()),
        }
    });

    // Deleting a Service frees its host port and removes its proxy.
    cluster.kubectl_ok(&["delete", "svc", "web-lb"]);
    let lb_proxy = format!("kcluster-{name}-port-{lb_port}-tcp");
    wait_until(
        "the LoadBalancer's proxy to go",
        Duration::from_secs(60),
        || container_gone(&lb_proxy),
    );
    let got = http_once("127.0.0.1", lb_port);
    assert!(got.starts_with("cannot connect"), "{got}");
    assert!(!port_ls(&sandbox, &name).contains("default/web-lb "));
    wait_answer("the second LoadBalancer after the first went", lb2_port);

    // The long-lived connection went through all of that on the same proxy.
    for _ in 0..16 {
        long_lived
            .write_all(&[9u8; 65536])
            .expect("the long-lived connection still carries data");
    }
    still_open(&mut long_lived).expect("the long-lived connection is still open");
    assert_eq!(container_id(&sink_proxy), sink_id);

    // Proxies are not nodes; delete removes them with the nodes.
    let nodes = stdout(&sandbox.kcluster(&["get", "nodes", "--name", &name]));
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(!nodes.contains("-port"), "{nodes}");
    let out = sandbox.kcluster(&["delete", "--name", &name]);
    assert!(out.status.success(), "delete failed: {}", text(&out));
    let left = docker_objects("container", &name);
    assert!(left.is_empty(), "containers left after delete: {left:?}");
}

#[test]
fn host_ports_come_back_after_every_container_restarts_and_a_taken_one_moves() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let (name, _image, cluster) = web_cluster(&sandbox, "hprestart", &[], |_, web| web);
    let node_port = expose_node_port(&cluster);
    let lb_port = free_port(false);
    expose_load_balancer(&cluster, "web-lb", lb_port);
    wait_answer("the NodePort", node_port);
    wait_answer("the LoadBalancer port", lb_port);
    assert_eq!(annotated_host_port(&cluster, "web-lb"), lb_port);

    // Every container of the cluster stops; while it is down something else takes the
    // LoadBalancer's host port; then everything starts again.
    // The node, the publisher, the NodePort's and the LoadBalancer's proxies, and the
    // Ingress controller's two (HTTP and HTTPS).
    // The Ingress controller's are started asynchronously after create: wait for all six.
    let mut containers = Vec::new();
    wait_until(
        "the cluster's six containers",
        Duration::from_secs(60),
        || {
            containers = docker_objects("container", &name);
            if containers.len() == 6 {
                Ok(())
            } else {
                Err(format!("{containers:?}"))
            }
        },
    );
    let mut stop = vec!["stop"];
    stop.extend(containers.iter().map(String::as_str));
    let out = docker(&stop);
    assert!(out.status.success(), "docker stop failed: {}", text(&out));
    let holder = TcpListener::bind(("127.0.0.1", lb_port)).expect("the freed LoadBalancer port");
    for c in &containers {
        // The LoadBalancer's proxy cannot bind its port now; the port publisher moves it.
        let _ = docker(&["start", c]);
    }

    wait_answer("the NodePort after the restart", node_port);
    let moved = {
        let mut moved = 0;
        wait_until("the LoadBalancer to move", Duration::from_secs(90), || {
            let p = annotated_host_port(&cluster, "web-lb");
            if p != lb_port {
                moved = p;
                Ok(())
            } else {
                Err(format!("still annotated with {p}"))
            }
        });
        moved
    };
    wait_answer("the moved LoadBalancer port", moved);
    let listed = port_ls(&sandbox, &name);
    assert!(
        listed.contains(&format!("127.0.0.1:{moved}/TCP"))
            && listed.contains(&format!("127.0.0.1:{node_port}/TCP")),
        "{listed}"
    );
    let _client = TcpStream::connect(("127.0.0.1", lb_port)).expect("the holder still listens");
    holder.accept().expect("the holder accepts its connection");
}

#[test]
fn publish_node_ports_false_publishes_only_load_balancers() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("cluster.yaml");
    std::fs::write(
        &config,
        "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nnetworking:\n  hostAddress: 127.0.0.1\n  publishNodePorts: false\n",
    )
    .unwrap();
    let (name, _image, cluster) = web_cluster(
        &sandbox,
        "hponly",
        &["--config", config.to_str().unwrap()],
        |_, web| web,
    );
    let node_port = expose_node_port(&cluster);
    let lb_port = free_port(false);
    expose_load_balancer(&cluster, "web-lb", lb_port);
    wait_answer("the LoadBalancer port", lb_port);
    // The publisher saw the NodePort Service before the newer LoadBalancer answered, and made
    // no proxy for it.
    let listed = port_ls(&sandbox, &name);
    assert!(
        listed.contains("default/web-lb ") && !listed.contains("NodePort"),
        "{listed}"
    );
    let proxy = format!("kcluster-{name}-port-{node_port}-tcp");
    container_gone(&proxy).unwrap_or_else(|e| panic!("{e}"));

    // loadBalancerSourceRanges: a range without this machine keeps it out (the proxy listens,
    // as the Service's status says, and closes the connection); one with 127.0.0.1 lets it in.
    let ranged_port = free_port(false);
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web-ranged}}\nspec:\n  type: LoadBalancer\n  selector: {{app: web}}\n  loadBalancerSourceRanges: [10.255.0.0/16]\n  ports: [{{port: {ranged_port}, targetPort: 8080}}]\n"
        ),
    );
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
    let host_port = annotated_host_port(&cluster, "web-ranged");
    cluster.wait_for(
        &[
            "get",
            "svc",
            "web-ranged",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        Duration::from_secs(60),
        |ip| ip == "127.0.0.1",
    );
    let refused = http_once("127.0.0.1", host_port);
    assert!(
        !refused.contains("HTTP/1."),
        "a client outside loadBalancerSourceRanges got an answer: {refused}"
    );
    cluster.kubectl_ok(&[
        "patch",
        "svc",
        "web-ranged",
        "--type=merge",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["10.255.0.0/16","127.0.0.1/32"]}}"#,
    ]);
    let host_port = annotated_host_port(&cluster, "web-ranged");
    wait_answer(
        "the LoadBalancer once its ranges hold this machine",
        host_port,
    );
}

#[test]
fn a_stopped_node_is_skipped_by_the_host_port() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    // The only pod on the server node, so that what stops is a way in, not the backend.
    let (name, _image, cluster) = web_cluster(
        &sandbox,
        "hpnodedown",
        &["--workers", "1"],
        |name, web| {
            web.replace(
                "      terminationGracePeriodSeconds: 1\n",
                &format!(
                    "      terminationGracePeriodSeconds: 1\n      nodeSelector: {{kubernetes.io/hostname: {name}-server-0}}\n"
                ),
            )
        },
    );
    let lb_port = free_port(false);
    expose_load_balancer(&cluster, "web-lb", lb_port);
    wait_answer("the LoadBalancer port", lb_port);

    let worker = format!("{name}-worker-0");
    let out = docker(&["stop", &worker]);
    assert!(out.status.success(), "docker stop failed: {}", text(&out));
    // The proxy tries the nodes in turn; every request still gets its answer through the
    // server node, the stopped worker being skipped.
    for i in 0..10 {
        let got = http_once("127.0.0.1", lb_port);
        assert!(
            got.contains("200 OK") && got.contains("web-"),
            "request {i} with the worker stopped: {got}"
        );
    }
}

#[test]
fn a_load_balancer_without_node_ports_is_published_through_its_cluster_ip() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let (_name, _image, cluster) =
        web_cluster(&sandbox, "hpnonp", &["--workers", "1"], |_, web| web);
    let lb_port = free_port(false);
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web-lb}}\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  selector: {{app: web}}\n  ports: [{{port: {lb_port}, targetPort: 8080}}]\n"
    );
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &svc);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
    assert_eq!(
        jsonpath(&cluster, "svc/web-lb", "{.spec.ports[0].nodePort}"),
        "",
        "the Service has no node port"
    );
    wait_answer("the LoadBalancer port through the cluster IP", lb_port);
    cluster.wait_for(
        &[
            "get",
            "svc",
            "web-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        Duration::from_secs(60),
        |s| s == "127.0.0.1",
    );
    let events = events_of(&cluster, "web-lb");
    assert!(events.contains("forwarding to cluster IP"), "{events}");
}
