//! The cluster DNS server (`kcluster node dns`) against the standalone API server: Services and
//! hand-made EndpointSlices created with kubectl, questions asked over UDP and TCP, names
//! outside the cluster forwarded to a fake upstream this test runs on 127.0.0.1 (nothing leaves
//! the machine), and answers following the watch when Services come and go.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ApiServer, kcluster_bin, wait_for};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A resolver for the names `*.test.` only: `external.test.` has an A record, everything else
/// is NXDOMAIN. Counts the questions it gets.
struct FakeUpstream {
    addr: SocketAddr,
    asked: Arc<AtomicUsize>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut answer =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                answer.metadata.recursion_desired = query.metadata.recursion_desired;
                answer.metadata.recursion_available = true;
                answer.queries = query.queries.clone();
                let q = &query.queries[0];
                let name = q.name().to_ascii().to_ascii_lowercase();
                if name == "external.test." && q.query_type() == RecordType::A {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        300,
                        RData::A(A::new(192, 0, 2, 10)),
                    ));
                } else if name != "external.test." {
                    answer.metadata.response_code = ResponseCode::NXDomain;
                    let zone = Name::from_ascii("test.").unwrap();
                    answer.add_authority(Record::from_rdata(
                        zone.clone(),
                        60,
                        RData::SOA(SOA::new(zone.clone(), zone, 1, 60, 60, 60, 3)),
                    ));
                }
                let _ = socket.send_to(&answer.to_vec().unwrap(), peer);
            }
        });
        FakeUpstream { addr, asked }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// `kcluster node dns`, killed when dropped.
struct DnsServer {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl DnsServer {
    fn start(api: &ApiServer, upstream: SocketAddr) -> DnsServer {
        let mut child = Command::new(kcluster_bin())
            .args([
                "node",
                "dns",
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .arg("--upstream")
            .arg(upstream.to_string())
            .arg("--kubeconfig")
            .arg(api.sandbox.kubeconfig())
            .args(["--context", api.context()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start kcluster node dns");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the DNS server's first line: {line:?}"))
                .parse()
                .unwrap()
        };
        assert!(
            line.starts_with("ready "),
            "unexpected first line: {line:?}"
        );
        DnsServer {
            addr: field("cluster="),
            metrics: field("metrics="),
            child,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask_udp_with(server: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let id = (std::process::id() as u16) ^ 0x5a5a;
    socket
        .send_to(&query(id, name, qtype, edns), server)
        .unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer for {name} {qtype} over UDP: {e}"));
    assert!(
        n <= 1232 || !edns,
        "UDP answer of {n} bytes exceeds the EDNS size"
    );
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, id, "the answer's ID is the question's");
    assert_eq!(m.queries.len(), 1);
    assert_eq!(
        m.queries[0].name().to_ascii(),
        name,
        "the question comes back as asked"
    );
    m
}

fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_udp_with(server, name, qtype, false)
}

fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let q = query(77, name, qtype, false);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, 77);
    m
}

fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, protocol: TCP}, {name: alt, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec:
  clusterIP: None
  ports: [{name: web, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nginx-1
  namespace: default
  labels: {kubernetes.io/service-name: nginx}
addressType: IPv4
ports: [{name: web, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.1.5]
  hostname: web-0
  conditions: {ready: true}
- addresses: [10.244.2.6]
  conditions: {ready: true}
- addresses: [10.244.3.7]
  hostname: web-2
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: external.test
"#;

fn big_slice() -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec:\n  clusterIP: None\n  ports: [{port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nendpoints:\n",
    );
    for i in 1..=60 {
        s.push_str(&format!("- addresses: [10.244.9.{i}]\n"));
    }
    s
}

#[test]
fn cluster_names_forwarding_truncation_and_watch() {
    let api = ApiServer::start();
    let upstream = FakeUpstream::start();
    let dns = DnsServer::start(&api, upstream.addr);
    let out = api.kubectl_stdin(&["apply", "-f", "-"], OBJECTS);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        common::text(&out)
    );
    let out = api.kubectl_stdin(&["apply", "-f", "-"], &big_slice());
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        common::text(&out)
    );
    let cluster_ip = api
        .kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    assert!(!cluster_ip.is_empty(), "web has no ClusterIP");

    // The zone follows the watch: wait until the last object applied is visible.
    wait_for("big's endpoints in DNS", Duration::from_secs(20), || {
        ask_tcp(dns.addr, "big.default.svc.cluster.local.", RecordType::A)
            .answers
            .len()
            == 60
    });

    // ClusterIP service: A, case-insensitive; AAAA: no data with the SOA, not NXDOMAIN.
    let m = ask(dns.addr, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&m), std::slice::from_ref(&cluster_ip));
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 30);
    let m = ask(dns.addr, "WEB.default.SVC.cluster.local.", RecordType::A);
    assert_eq!(data(&m), std::slice::from_ref(&cluster_ip));
    let m = ask(dns.addr, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // Misses under the zone: NXDOMAIN at once, the upstream never asked.
    let before = upstream.asked();
    let m = ask(dns.addr, "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(
        dns.addr,
        "example.com.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(dns.addr, "default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(upstream.asked(), before);

    // Headless: ready endpoints, hostnames, dashed IPs, SRV with additional records.
    let m = ask(dns.addr, "nginx.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&m), ["10.244.1.5", "10.244.2.6"]);
    let m = ask(
        dns.addr,
        "web-0.nginx.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(data(&m), ["10.244.1.5"]);
    let m = ask(
        dns.addr,
        "10-244-2-6.nginx.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(data(&m), ["10.244.2.6"]);
    let m = ask(
        dns.addr,
        "web-2.nginx.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(
        dns.addr,
        "_web._tcp.nginx.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        data(&m),
        [
            "0 50 8080 10-244-2-6.nginx.default.svc.cluster.local.",
            "0 50 8080 web-0.nginx.default.svc.cluster.local."
        ]
    );
    assert_eq!(m.additionals.len(), 2);
    let m = ask(
        dns.addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals[0].data.to_string(), cluster_ip);

    // PTR for the ClusterIP and an endpoint.
    let reverse: Vec<&str> = cluster_ip.split('.').rev().collect();
    let m = ask(
        dns.addr,
        &format!("{}.in-addr.arpa.", reverse.join(".")),
        RecordType::PTR,
    );
    assert_eq!(data(&m), ["web.default.svc.cluster.local."]);
    let m = ask(dns.addr, "5.1.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&m), ["web-0.nginx.default.svc.cluster.local."]);

    // Pod names, the schema version.
    let m = ask(
        dns.addr,
        "10-244-7-8.default.pod.cluster.local.",
        RecordType::A,
    );
    assert_eq!(data(&m), ["10.244.7.8"]);
    let m = ask(dns.addr, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&m), ["1.1.0"]);

    // ExternalName: the CNAME, chased through the upstream.
    let m = ask(dns.addr, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 2, "CNAME + A: {m:?}");
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(m.answers[0].data.to_string(), "external.test.");
    assert_eq!(m.answers[1].data.to_string(), "192.0.2.10");

    // Forwarded names: ID and question restored; the second ask comes from the cache.
    let m = ask(dns.addr, "External.Test.", RecordType::A);
    assert_eq!(data(&m), ["192.0.2.10"]);
    assert!(m.answers[0].ttl <= 30, "TTLs capped at 30 s in the cache");
    let asked = upstream.asked();
    let m = ask(dns.addr, "external.test.", RecordType::A);
    assert_eq!(data(&m), ["192.0.2.10"]);
    assert_eq!(
        upstream.asked(),
        asked,
        "a cached answer does not go upstream"
    );
    let m = ask(dns.addr, "missing.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // 60 addresses do not fit 512 bytes: TC=1 over UDP, everything over TCP or with EDNS.
    let m = ask(dns.addr, "big.default.svc.cluster.local.", RecordType::A);
    assert!(m.metadata.truncation, "expected TC=1");
    assert!(m.answers.is_empty());
    let m = ask_udp_with(
        dns.addr,
        "big.default.svc.cluster.local.",
        RecordType::A,
        true,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    let m = ask_tcp(dns.addr, "big.default.svc.cluster.local.", RecordType::A);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);

    // Watch: a new Service appears, a deleted one goes.
    let ns_missing = ask(dns.addr, "other.svc.cluster.local.", RecordType::A);
    let out = api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: other}\nspec:\n  ports: [{port: 53, protocol: UDP, name: dns}]\n",
    );
    assert!(out.status.success(), "{}", common::text(&out));
    wait_for("late.other in DNS", Duration::from_secs(20), || {
        ask(dns.addr, "late.other.svc.cluster.local.", RecordType::A)
            .answers
            .len()
            == 1
    });
    let m = ask(
        dns.addr,
        "_dns._udp.late.other.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(m.answers.len(), 1);
    // A namespace with a Service is an empty non-terminal; before it was not there.
    assert_eq!(ns_missing.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(dns.addr, "other.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    api.kubectl_ok(&["delete", "svc", "web"]);
    wait_for("web gone from DNS", Duration::from_secs(20), || {
        ask(dns.addr, "web.default.svc.cluster.local.", RecordType::A)
            .metadata
            .response_code
            == ResponseCode::NXDomain
    });

    // Metrics and readiness.
    let metrics = http_get(dns.metrics, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains(
            "coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",proto=\"udp\",type=\"A\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("coredns_cache_hits_total"), "{metrics}");
    assert!(http_get(dns.metrics, "/ready").starts_with("HTTP/1.1 200"));
    assert!(http_get(dns.metrics, "/health").starts_with("HTTP/1.1 200"));
}

#[test]
fn servfail_for_cluster_names_until_listed_while_forwarding_works() {
    // An API server that is not there: the zone is never listed.
    let upstream = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\nusers: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(kcluster_bin())
        .args([
            "node",
            "dns",
            "--listen",
            "127.0.0.1:0",
            "--forward-only",
            "127.0.0.1:0",
        ])
        .arg("--upstream")
        .arg(upstream.addr.to_string())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .parse()
            .unwrap()
    };
    let (cluster, forward_only) = (field("cluster="), field("forward-only="));
    let m = ask(
        cluster,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = ask(cluster, "external.test.", RecordType::A);
    assert_eq!(data(&m), ["192.0.2.10"]);
    // Forward-only: even cluster names go upstream (which knows nothing of them).
    let before = upstream.asked();
    let m = ask(
        forward_only,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.asked(), before + 1);
    let _ = child.kill();
    let _ = child.wait();
}
