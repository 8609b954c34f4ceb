//! NetworkPolicy enforced on a real 1+2 cluster, probed as the upstream netpol e2e suite probes
//! it: pods a/b/c in namespaces x/y/z (one per node), each serving TCP and UDP on ports 80 and
//! 81; every pair probed on both ports and protocols before and after each policy, in parallel
//! with short timeouts. Policies: default deny ingress; default deny egress, then DNS allowed on
//! top; allow from a namespace label; a combined namespace+pod selector; ipBlock with except; a
//! named port; endPort; a connection addressed to a Service; labels changed live. Plus admission
//! of an invalid ipBlock, refused with Kubernetes' message.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::images::build_net_image;
use common::*;

const IMAGE: &str = "kcluster-e2e/net:netpol";
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PROBE_MS: u64 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    from: (usize, usize),
    to: (usize, usize),
    udp: bool,
    port: u16,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |(n, p): (usize, usize)| format!("{}/{}", NAMESPACES[n], PODS[p]);
        write!(
            f,
            "{} -> {} {}/{}",
            name(self.from),
            name(self.to),
            if self.udp { "udp" } else { "tcp" },
            self.port
        )
    }
}

struct World<'a> {
    cluster: &'a Cluster<'a>,
    ips: BTreeMap<(usize, usize), String>,
}

impl World<'_> {
    fn pods() -> impl Iterator<Item = (usize, usize)> {
        (0..3).flat_map(|n| (0..3).map(move |p| (n, p)))
    }

    /// Every pair on both ports and protocols; one `net-tool probe` per source pod, all sources
    /// at once.
    fn matrix(&self) -> BTreeMap<Probe, bool> {
        let mut probes = Vec::new();
        for from in Self::pods() {
            for to in Self::pods() {
                for udp in [false, true] {
                    for port in [80, 81] {
                        probes.push(Probe {
                            from,
                            to,
                            udp,
                            port,
                        });
                    }
                }
            }
        }
        self.run(&probes, |p| self.ips[&p.to].clone())
    }

    /// Probes to arbitrary addresses: `target(p)` gives the address for probe `p`.
    fn run(&self, probes: &[Probe], target: impl Fn(&Probe) -> String) -> BTreeMap<Probe, bool> {
        let by_source: BTreeMap<(usize, usize), Vec<(Probe, String)>> =
            probes.iter().fold(BTreeMap::new(), |mut m, p| {
                let t = format!(
                    "{}:{}:{}",
                    if p.udp { "udp" } else { "tcp" },
                    target(p),
                    p.port
                );
                m.entry(p.from).or_insert_with(Vec::new).push((*p, t));
                m
            });
        let context = self.cluster.context();
        let kubeconfig = self.cluster.sandbox.kubeconfig();
        let home = self.cluster.sandbox.path().to_path_buf();
        std::thread::scope(|s| {
            let handles: Vec<_> = by_source
                .iter()
                .map(|((n, p), list)| {
                    let (context, kubeconfig, home) = (&context, &kubeconfig, &home);
                    s.spawn(move || {
                        let ms = PROBE_MS.to_string();
                        let mut args = vec![
                            "--context",
                            context.as_str(),
                            "exec",
                            "-n",
                            NAMESPACES[*n],
                            PODS[*p],
                            "--",
                            "net-tool",
                            "probe",
                            &ms,
                        ];
                        args.extend(list.iter().map(|(_, t)| t.as_str()));
                        let out = std::process::Command::new("kubectl")
                            .args(&args)
                            .env("KUBECONFIG", kubeconfig)
                            .env("HOME", home)
                            .output()
                            .expect("cannot run kubectl");
                        let lines: BTreeMap<String, bool> = stdout(&out)
                            .lines()
                            .filter_map(|l| l.rsplit_once(' '))
                            .map(|(t, r)| (t.to_string(), r == "ok"))
                            .collect();
                        list.iter()
                            .map(|(probe, t)| (*probe, lines.get(t).copied().unwrap_or(false)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("probe thread"))
                .collect()
        })
    }

    /// Probes until the matrix is `expect` (policies take effect asynchronously); fails with
    /// the pairs that differ.
    fn expect(&self, what: &str, expect: impl Fn(&Probe) -> bool) {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < Duration::from_secs(40) {
            let got = self.matrix();
            last = got
                .iter()
                .filter(|(p, ok)| {
                    // A pod reaches itself over its own loopback: never judged.
                    let want = p.from == p.to || expect(p);
                    **ok != want
                })
                .map(|(p, ok)| format!("{p}: {}", if *ok { "connected" } else { "blocked" }))
                .collect();
            if last.is_empty() {
                println!("{what}: matrix as expected after {:?}", started.elapsed());
                return;
            }
        }
        panic!(
            "{what}: {} probes differ from the expected matrix:\n{}",
            last.len(),
            last.join("\n")
        );
    }
}

fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

fn delete_policies(cluster: &Cluster) {
    for ns in NAMESPACES {
        cluster.kubectl_ok(&["delete", "networkpolicy", "--all", "-n", ns]);
    }
}

fn pods_yaml(nodes: &[String]) -> String {
    let mut y = String::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{ns}\", labels: {{ns: \"{ns}\"}}}}\n---\n"
        ));
        for (p, pod) in PODS.iter().enumerate() {
            let node = &nodes[(n + p) % nodes.len()];
            y.push_str(&format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: "{ns}", labels: {{pod: {pod}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: serve
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "net-tool serve 80 & exec net-tool serve 81"]
    ports:
    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}
    - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
    - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}
    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}
---
"#
            ));
        }
    }
    y
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: \"{ns}\"}}\nspec:\n{spec}"
    )
}

const XA: (usize, usize) = (0, 0);

#[test]
fn network_policies_on_real_nodes() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let name = unique_name("netpol");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "2"]);
    cluster.load_image(IMAGE);
    let nodes: Vec<String> = cluster.node_ips().into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes.len(), 3, "a 1+2 cluster: {nodes:?}");
    apply(&cluster, &pods_yaml(&nodes));
    let mut ips = BTreeMap::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        for (p, pod) in PODS.iter().enumerate() {
            let ip = cluster
                .wait_for(
                    &[
                        "get",
                        "pod",
                        "-n",
                        ns,
                        pod,
                        "-o",
                        "jsonpath={.status.phase} {.status.podIP}",
                    ],
                    Duration::from_secs(120),
                    |s| s.starts_with("Running ") && s.len() > "Running ".len(),
                )
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            ips.insert((n, p), ip);
        }
    }
    let world = World {
        cluster: &cluster,
        ips: ips.clone(),
    };

    world.expect("no policy", |_| true);

    // Default deny ingress in x.
    apply(
        &cluster,
        &policy(
            "x",
            "deny-ingress",
            "  podSelector: {}\n  policyTypes: [Ingress]\n",
        ),
    );
    world.expect("default deny ingress in x", |p| p.to.0 != 0);
    delete_policies(&cluster);

    // Default deny egress in x: DNS fails too; then a second policy allows DNS (policies add up).
    apply(
        &cluster,
        &policy(
            "x",
            "deny-egress",
            "  podSelector: {}\n  policyTypes: [Egress]\n",
        ),
    );
    world.expect("default deny egress in x", |p| p.from.0 != 0);
    let lookup = || {
        cluster.kubectl(&[
            "exec",
            "-n",
            "x",
            "a",
            "--",
            "timeout",
            "4",
            "nslookup",
            "kubernetes.default.svc.cluster.local",
        ])
    };
    let out = lookup();
    assert!(
        !out.status.success(),
        "DNS must be blocked by a default deny egress: {}",
        text(&out)
    );
    apply(
        &cluster,
        &policy(
            "x",
            "allow-dns",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}\n    - {protocol: TCP, port: 53}\n",
        ),
    );
    wait_until("DNS allowed from x/a", Duration::from_secs(30), || {
        let out = lookup();
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    world.expect("default deny egress in x with DNS allowed", |p| {
        p.from.0 != 0
    });
    delete_policies(&cluster);

    // Allow to x/a from namespace y only.
    apply(
        &cluster,
        &policy(
            "x",
            "from-y",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n",
        ),
    );
    world.expect("x/a from namespace y", |p| p.to != XA || p.from.0 == 1);
    delete_policies(&cluster);

    // Combined selector: only pod b of namespace y.
    apply(
        &cluster,
        &policy(
            "x",
            "from-y-b",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n      podSelector: {matchLabels: {pod: b}}\n",
        ),
    );
    world.expect("x/a from y/b", |p| p.to != XA || p.from == (1, 1));
    delete_policies(&cluster);

    // ipBlock with except: every pod address but y/b's.
    let xa_ip: std::net::Ipv4Addr = ips[&XA].parse().expect("x/a's address");
    let net = std::net::Ipv4Addr::from(u32::from(xa_ip) & 0xffff_0000);
    apply(
        &cluster,
        &policy(
            "x",
            "ipblock",
            &format!(
                "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {net}/16, except: [{}/32]}}\n",
                ips[&(1, 1)]
            ),
        ),
    );
    world.expect("x/a from an ipBlock except y/b", |p| {
        p.to != XA || p.from != (1, 1)
    });
    delete_policies(&cluster);

    // Named port: x/a only on its port named serve-81-tcp.
    apply(
        &cluster,
        &policy(
            "x",
            "named",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: serve-81-tcp}\n",
        ),
    );
    world.expect("x/a on the named port serve-81-tcp", |p| {
        p.to != XA || (!p.udp && p.port == 81)
    });
    delete_policies(&cluster);

    // endPort: TCP 75-80 and UDP 81-90 to x/a.
    apply(
        &cluster,
        &policy(
            "x",
            "range",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 75, endPort: 80}\n    - {protocol: UDP, port: 81, endPort: 90}\n",
        ),
    );
    world.expect("x/a on port ranges", |p| {
        p.to != XA || (p.udp == (p.port == 81))
    });
    delete_policies(&cluster);

    // A connection addressed to a Service is judged by the pod it reaches.
    apply(
        &cluster,
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc-a, namespace: x}\nspec:\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, protocol: TCP}\n",
    );
    let cluster_ip = cluster.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        "x",
        "svc-a",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let sources: Vec<Probe> = World::pods()
        .filter(|p| *p != XA)
        .map(|from| Probe {
            from,
            to: XA,
            udp: false,
            port: 80,
        })
        .collect();
    let service_matrix = |want: &dyn Fn(&Probe) -> bool, what: &str| {
        let started = Instant::now();
        let mut wrong = Vec::new();
        while started.elapsed() < Duration::from_secs(40) {
            let got = world.run(&sources, |_| cluster_ip.clone());
            wrong = got
                .iter()
                .filter(|(p, ok)| **ok != want(p))
                .map(|(p, ok)| format!("{p} (via {cluster_ip}): {ok}"))
                .collect();
            if wrong.is_empty() {
                return;
            }
        }
        panic!("{what}: {}", wrong.join("\n"));
    };
    service_matrix(&|_| true, "the Service before any policy");
    apply(
        &cluster,
        &policy(
            "x",
            "from-b",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
        ),
    );
    service_matrix(
        &|p| p.from == (0, 1),
        "the Service with x/a open to x/b only",
    );
    delete_policies(&cluster);

    // Labels changed live: a pod label, then a namespace label.
    apply(
        &cluster,
        &policy(
            "x",
            "clients",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {role: client}}\n    - namespaceSelector: {matchLabels: {team: blue}}\n",
        ),
    );
    world.expect("x/a with no client yet", |p| p.to != XA);
    cluster.kubectl_ok(&["label", "pod", "-n", "z", "c", "role=client"]);
    world.expect("x/a after z/c became a client", |p| {
        p.to != XA || p.from == (2, 2)
    });
    cluster.kubectl_ok(&["label", "namespace", "y", "team=blue"]);
    world.expect("x/a after namespace y joined team blue", |p| {
        p.to != XA || p.from == (2, 2) || p.from.0 == 1
    });
    cluster.kubectl_ok(&["label", "pod", "-n", "z", "c", "role-"]);
    world.expect("x/a after z/c stopped being a client", |p| {
        p.to != XA || p.from.0 == 1
    });
    delete_policies(&cluster);
    world.expect("all policies deleted", |_| true);

    // Admission: an ipBlock exception outside its CIDR is refused, and nothing is stored.
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &policy(
            "x",
            "bad",
            "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/24, except: [192.168.0.0/24]}\n",
        ),
    );
    assert!(!out.status.success(), "an invalid ipBlock was accepted");
    assert!(
        text(&out).contains(
            r#"The NetworkPolicy "bad" is invalid: spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/24": must be a strict subset of `cidr`"#
        ),
        "{}",
        text(&out)
    );
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &policy(
            "x",
            "bad",
            "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.300/24}\n",
        ),
    );
    assert!(
        text(&out).contains(
            r#"spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.300/24": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#
        ),
        "{}",
        text(&out)
    );
    let out = cluster.kubectl(&["get", "networkpolicy", "-n", "x", "bad"]);
    assert!(gone(&out), "the refused policy exists: {}", text(&out));
}
