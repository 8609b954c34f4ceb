//! Cluster DNS, built in (what CoreDNS does in other clusters): answers the cluster zone from
//! watches of Services and EndpointSlices (`records` has the names and records, `watch` keeps
//! the zone current) and forwards everything else to the node's resolvers through a cache
//! (`forward`). UDP and TCP on every listener; a UDP answer that does not fit the client's size
//! (512 bytes, or its EDNS size) goes out empty with TC=1 so the client asks again over TCP.
//! `metrics` serves Prometheus text like CoreDNS's :9153. `cli` is `kcluster node dns`.

pub mod cli;
mod forward;
mod metrics;
pub mod probe;
pub mod records;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use forward::{EDNS_PAYLOAD, Forwarder};
use metrics::Metrics;
use records::{Answer, Outcome, Zone};
use watch::ZoneCell;

/// What a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenMode {
    /// The cluster zone from the API, everything else forwarded.
    Cluster,
    /// Everything forwarded, nothing answered from the cluster (for dnsPolicy=Default pods).
    ForwardOnly,
}

#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The cluster domain, e.g. "cluster.local".
    pub cluster_domain: String,
    /// UDP and TCP on each address (port 0: one free port, the same for both).
    pub listen: Vec<(SocketAddr, ListenMode)>,
    /// Where names outside the cluster zone go, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Prometheus text on /metrics, and /health, /ready.
    pub metrics: Option<SocketAddr>,
}

impl DnsSettings {
    /// The `nameserver` addresses of a resolv.conf, on port 53.
    pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
        text.lines()
            .filter_map(|line| {
                let line = line.split(['#', ';']).next()?;
                let mut words = line.split_whitespace();
                if words.next()? != "nameserver" {
                    return None;
                }
                // A zone index (fe80::1%eth0) cannot be kept in an IpAddr: such entries are skipped.
                let ip: std::net::IpAddr = words.next()?.parse().ok()?;
                Some(SocketAddr::new(ip, 53))
            })
            .collect()
    }
}

/// Binds every listener first (an error if one cannot be bound), then serves forever. Cluster
/// names come from watches of Services and EndpointSlices (all namespaces) through whichever
/// client the channel holds (None until the API server is reached; replaced after a reconnect,
/// and then re-watched with the new one). Until the first full list, cluster names get
/// SERVFAIL; forwarding works from the start.
// The node agent calls this (wired in with the service proxy); `kcluster node dns` binds first
// to print the addresses it got.
#[allow(dead_code)]
pub async fn run(
    settings: DnsSettings,
    clients: tokio::sync::watch::Receiver<Option<kube::Client>>,
) -> Result<()> {
    bind(settings).await?.serve(clients).await
}

/// Listeners bound and not yet serving.
pub struct Bound {
    settings: DnsSettings,
    udp: Vec<(UdpSocket, ListenMode)>,
    tcp: Vec<(TcpListener, ListenMode)>,
    metrics: Option<TcpListener>,
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    // With port 0 the TCP port is taken to match the UDP one, which another process may hold.
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}/udp"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot listen on {addr}/tcp: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

pub async fn bind(settings: DnsSettings) -> Result<Bound> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for (addr, mode) in &settings.listen {
        let (u, t) = bind_pair(*addr).await?;
        udp.push((u, *mode));
        tcp.push((t, *mode));
    }
    let metrics = match settings.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    Ok(Bound {
        settings,
        udp,
        tcp,
        metrics,
    })
}

impl Bound {
    /// The bound DNS addresses (UDP and TCP share each), in the order of `settings.listen`.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ListenMode)> {
        self.udp
            .iter()
            .filter_map(|(s, mode)| Some((s.local_addr().ok()?, *mode)))
            .collect()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn serve(
        self,
        clients: tokio::sync::watch::Receiver<Option<kube::Client>>,
    ) -> Result<()> {
        let metrics = Arc::new(Metrics::default());
        let zone = Arc::new(ZoneCell::new(Zone::unsynced(&self.settings.cluster_domain)));
        if self.settings.upstreams.is_empty() {
            tracing::warn!("no upstream resolvers: names outside the cluster get SERVFAIL");
        }
        let server = Arc::new(Server {
            zone: zone.clone(),
            forwarder: Forwarder::new(self.settings.upstreams.clone(), metrics.clone()),
            metrics: metrics.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch::maintain(
            zone,
            self.settings.cluster_domain.clone(),
            clients,
            metrics.clone(),
        ));
        if let Some(listener) = self.metrics {
            tasks.spawn(async move {
                if let Err(e) = metrics::serve(listener, metrics).await {
                    tracing::warn!("DNS metrics: {e:#}");
                }
            });
        }
        for (socket, mode) in self.udp {
            tasks.spawn(serve_udp(server.clone(), Arc::new(socket), mode));
        }
        for (listener, mode) in self.tcp {
            tasks.spawn(serve_tcp(server.clone(), listener, mode));
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a DNS server task failed")?;
        }
        Ok(())
    }
}

struct Server {
    zone: Arc<ZoneCell>,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
}

/// A question that needs the upstreams before it can be answered.
struct Pending {
    request: Message,
    started: Instant,
    max_size: usize,
    /// None: forward the whole question. Some: an ExternalName's CNAME, whose target is
    /// resolved and appended.
    chase: Option<Answer>,
}

enum Step {
    Reply(Vec<u8>),
    Pending(Box<Pending>),
    Drop,
}

/// Copies only what a response should keep from the request: ID, opcode, RD, CD, question.
fn response_to(request: &Message) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// An error response for a packet that could not be parsed: its header, QR set, no sections.
fn raw_error(packet: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = packet.get(..4)?;
    if header[2] & 0x80 != 0 {
        return None; // a response: never answer those
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = 0x80 | (header[2] & 0x79); // QR, opcode and RD kept
    out[3] = rcode & 0x0f;
    Some(out)
}

impl Server {
    fn handle(&self, packet: &[u8], mode: ListenMode, tcp: bool) -> Step {
        let started = Instant::now();
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => {
                return match raw_error(packet, 1) {
                    Some(bytes) => {
                        self.metrics.response(1, started.elapsed());
                        Step::Reply(bytes)
                    }
                    None => Step::Drop,
                };
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return Step::Drop;
        }
        let max_size = if tcp {
            usize::from(u16::MAX)
        } else {
            usize::from(
                request
                    .edns
                    .as_ref()
                    .map_or(512, |e| e.max_payload().max(512)),
            )
        };
        let qtype = request
            .queries
            .first()
            .map_or(0, |q| u16::from(q.query_type()));
        self.metrics.request(tcp, qtype);
        let mut response = response_to(&request);
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return self.reply(response, max_size, started);
        }
        if request.queries.len() != 1 {
            response.metadata.response_code = ResponseCode::FormErr;
            return self.reply(response, max_size, started);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            response.metadata.response_code = ResponseCode::BADVERS;
            return self.reply(response, max_size, started);
        }
        let query = &request.queries[0];
        if mode == ListenMode::ForwardOnly || !records::class_is_ours(query.query_class()) {
            return self.pending(request, started, max_size, None);
        }
        let zone = self.zone.get();
        match zone.lookup(query.name(), query.query_type()) {
            Outcome::Forward => self.pending(request, started, max_size, None),
            Outcome::NotReady => {
                response.metadata.response_code = ResponseCode::ServFail;
                self.reply(response, max_size, started)
            }
            Outcome::Answer(answer) if answer.chase.is_some() => {
                self.pending(request, started, max_size, Some(answer))
            }
            Outcome::Answer(answer) => {
                fill(&mut response, answer, &zone);
                self.reply(response, max_size, started)
            }
        }
    }

    fn pending(
        &self,
        request: Message,
        started: Instant,
        max_size: usize,
        chase: Option<Answer>,
    ) -> Step {
        Step::Pending(Box::new(Pending {
            request,
            started,
            max_size,
            chase,
        }))
    }

    /// Encodes `response`, truncated to the header and question (TC=1) when too big.
    fn encode(&self, mut response: Message, max_size: usize, started: Instant) -> Vec<u8> {
        let mut bytes = response.to_vec().ok();
        if bytes.is_none() {
            response.answers.clear();
            response.authorities.clear();
            response.additionals.clear();
            response.metadata.response_code = ResponseCode::ServFail;
            bytes = response.to_vec().ok();
        }
        let mut bytes = bytes.unwrap_or_default();
        if bytes.len() > max_size {
            self.metrics
                .truncated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes = response.truncate().to_vec().unwrap_or_default();
        }
        self.metrics.response(
            u16::from(response.metadata.response_code),
            started.elapsed(),
        );
        bytes
    }

    fn reply(&self, response: Message, max_size: usize, started: Instant) -> Step {
        Step::Reply(self.encode(response, max_size, started))
    }

    /// Answers a pending question through the upstreams.
    async fn finish(&self, pending: Pending) -> Vec<u8> {
        let Pending {
            request,
            started,
            max_size,
            chase,
        } = pending;
        let mut response = response_to(&request);
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let cd = request.metadata.checking_disabled;
        let Some(query) = request.queries.first() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return self.encode(response, max_size, started);
        };
        match chase {
            None => {
                let upstream = self
                    .forwarder
                    .resolve(
                        query.name(),
                        query.query_type(),
                        query.query_class(),
                        dnssec_ok,
                        cd,
                    )
                    .await;
                response.metadata.response_code = upstream.metadata.response_code;
                response.metadata.authentic_data = upstream.metadata.authentic_data;
                response.answers = upstream.answers;
                response.authorities = upstream.authorities;
                response.additionals = upstream.additionals;
                if let (Some(ours), Some(theirs)) = (response.edns.as_mut(), upstream.edns.as_ref())
                {
                    ours.set_dnssec_ok(dnssec_ok && theirs.flags().dnssec_ok);
                }
            }
            Some(answer) => {
                let zone = self.zone.get();
                self.chase(
                    &mut response,
                    answer,
                    &zone,
                    query.query_type(),
                    dnssec_ok,
                    cd,
                )
                .await;
            }
        }
        self.encode(response, max_size, started)
    }

    /// An ExternalName's CNAME followed by its target's records of the asked type: from the
    /// zone when the target is a cluster name (at most 8 links), else from the upstreams.
    async fn chase(
        &self,
        response: &mut Message,
        mut answer: Answer,
        zone: &Zone,
        qtype: RecordType,
        dnssec_ok: bool,
        cd: bool,
    ) {
        for _ in 0..8 {
            let Some(target) = answer.chase.take() else {
                fill(response, answer, zone);
                return;
            };
            response.answers.append(&mut answer.answers);
            match zone.lookup(&target, qtype) {
                Outcome::Answer(next) => answer = next,
                Outcome::NotReady => {
                    response.metadata.response_code = ResponseCode::ServFail;
                    return;
                }
                Outcome::Forward => {
                    let upstream = self
                        .forwarder
                        .resolve(&target, qtype, DNSClass::IN, dnssec_ok, cd)
                        .await;
                    response.metadata.response_code = upstream.metadata.response_code;
                    response.answers.extend(upstream.answers);
                    if response.answers.len() <= 1 {
                        response.authorities.extend(upstream.authorities);
                    }
                    return;
                }
            }
        }
        // A loop of ExternalNames.
        response.metadata.response_code = ResponseCode::ServFail;
    }
}

/// Puts a zone answer into `response` (appending to answers already there).
fn fill(response: &mut Message, answer: Answer, zone: &Zone) {
    response.metadata.authoritative = true;
    response.metadata.response_code = answer.rcode;
    response.answers.extend(answer.answers);
    response.additionals.extend(answer.additionals);
    if answer.soa {
        response.authorities.push(zone.soa());
    }
}

async fn serve_udp(server: Arc<Server>, socket: Arc<UdpSocket>, mode: ListenMode) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep going.
                tracing::debug!("DNS UDP receive: {e}");
                continue;
            }
        };
        match server.handle(&buf[..n], mode, false) {
            Step::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Step::Pending(pending) => {
                let server = server.clone();
                let socket = socket.clone();
                tokio::spawn(async move {
                    let bytes = server.finish(*pending).await;
                    let _ = socket.send_to(&bytes, peer).await;
                });
            }
            Step::Drop => {}
        }
    }
}

/// A TCP connection is closed after this long without a question (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

async fn serve_tcp(server: Arc<Server>, listener: TcpListener, mode: ListenMode) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _ = serve_connection(&server, stream, mode).await;
        });
    }
}

async fn serve_connection(server: &Server, mut stream: TcpStream, mode: ListenMode) -> Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return Ok(()),
        };
        let mut packet = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await??;
        let bytes = match server.handle(&packet, mode, true) {
            Step::Reply(bytes) => bytes,
            Step::Pending(pending) => server.finish(*pending).await,
            Step::Drop => return Ok(()),
        };
        let len = u16::try_from(bytes.len()).context("answer too long for TCP")?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use records::{EndpointInfo, ServiceInfo, ServiceKind, SliceInfo};

    fn server() -> Server {
        let services = [
            ServiceInfo {
                namespace: "default".into(),
                name: "big".into(),
                kind: ServiceKind::Headless,
                ports: vec![],
                publish_not_ready: false,
            },
            ServiceInfo {
                namespace: "default".into(),
                name: "web".into(),
                kind: ServiceKind::ClusterIp(vec!["10.96.0.20".parse().unwrap()]),
                ports: vec![],
                publish_not_ready: false,
            },
        ];
        // 60 addresses: 12 + 39 + 60 × 16 bytes, well over 512.
        let slices = [SliceInfo {
            namespace: "default".into(),
            service: "big".into(),
            ports: Arc::new(vec![]),
            endpoints: (0..60)
                .map(|i| EndpointInfo {
                    addresses: vec![format!("10.244.1.{i}").parse().unwrap()],
                    hostname: None,
                    ready: true,
                    serving: true,
                })
                .collect(),
        }];
        let metrics = Arc::new(Metrics::default());
        Server {
            zone: Arc::new(ZoneCell::new(Zone::build(
                "cluster.local",
                services.iter(),
                slices.iter(),
            ))),
            forwarder: Forwarder::new(vec![], metrics.clone()),
            metrics,
        }
    }

    fn query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn reply(step: Step) -> Message {
        match step {
            Step::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            Step::Pending(_) => panic!("expected an answer at once, got a forward"),
            Step::Drop => panic!("expected an answer, got nothing"),
        }
    }

    #[test]
    fn answers_keep_id_and_question_and_are_authoritative() {
        let s = server();
        let r = reply(s.handle(
            &query(4242, "Web.Default.svc.cluster.local.", RecordType::A, None),
            ListenMode::Cluster,
            false,
        ));
        assert_eq!(r.metadata.id, 4242);
        assert!(r.metadata.authoritative && r.metadata.recursion_desired);
        assert_eq!(
            r.queries[0].name().to_ascii(),
            "Web.Default.svc.cluster.local."
        );
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let s = server();
        let r = reply(s.handle(
            &query(1, "nope.default.svc.cluster.local.", RecordType::A, None),
            ListenMode::Cluster,
            false,
        ));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(r.authorities[0].ttl, records::NEGATIVE_TTL);
    }

    #[test]
    fn big_udp_answers_are_truncated_unless_edns_or_tcp_allow_them() {
        let s = server();
        let q = query(7, "big.default.svc.cluster.local.", RecordType::A, None);
        let r = reply(s.handle(&q, ListenMode::Cluster, false));
        assert!(r.metadata.truncation, "UDP without EDNS: TC=1");
        assert!(r.answers.is_empty());
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.queries.len(), 1);
        let r = reply(s.handle(&q, ListenMode::Cluster, true));
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        let q = query(
            8,
            "big.default.svc.cluster.local.",
            RecordType::A,
            Some(4096),
        );
        let r = reply(s.handle(&q, ListenMode::Cluster, false));
        assert!(!r.metadata.truncation, "EDNS 4096 fits 60 addresses");
        assert_eq!(r.answers.len(), 60);
        assert_eq!(r.edns.map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
    }

    #[test]
    fn bad_packets_and_other_opcodes() {
        let s = server();
        // A header with garbage after it: FORMERR with the same ID.
        let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 5]);
        match s.handle(&garbage, ListenMode::Cluster, false) {
            Step::Reply(bytes) => {
                assert_eq!(&bytes[..2], &[0x12, 0x34]);
                assert_eq!(bytes[2] & 0x80, 0x80);
                assert_eq!(bytes[3] & 0x0f, 1);
            }
            _ => panic!("expected FORMERR"),
        }
        assert!(matches!(
            s.handle(&[1, 2, 3], ListenMode::Cluster, false),
            Step::Drop
        ));
        let mut m = Message::from_vec(&query(
            9,
            "web.default.svc.cluster.local.",
            RecordType::A,
            None,
        ))
        .unwrap();
        m.metadata.op_code = OpCode::Status;
        let r = reply(s.handle(&m.to_vec().unwrap(), ListenMode::Cluster, false));
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        // EDNS version 1: BADVERS.
        let mut m = Message::from_vec(&query(
            10,
            "web.default.svc.cluster.local.",
            RecordType::A,
            Some(1232),
        ))
        .unwrap();
        if let Some(e) = m.edns.as_mut() {
            e.set_version(1);
        }
        let r = reply(s.handle(&m.to_vec().unwrap(), ListenMode::Cluster, false));
        // 16 is BADVERS in a response to an OPT (hickory decodes it as BADSIG, the same code).
        assert_eq!(u16::from(r.metadata.response_code), 16);
    }

    #[test]
    fn forward_only_and_outside_names_go_upstream() {
        let s = server();
        let q = query(11, "web.default.svc.cluster.local.", RecordType::A, None);
        assert!(matches!(
            s.handle(&q, ListenMode::ForwardOnly, false),
            Step::Pending(_)
        ));
        let q = query(12, "example.org.", RecordType::A, None);
        assert!(matches!(
            s.handle(&q, ListenMode::Cluster, false),
            Step::Pending(_)
        ));
    }

    #[test]
    fn resolv_conf_upstreams() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.11\nnameserver  fd00::53 # v6\noptions ndots:0\nnameserver fe80::1%eth0\n";
        assert_eq!(
            DnsSettings::upstreams_from_resolv_conf(text),
            vec![
                "127.0.0.11:53".parse::<SocketAddr>().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }
}
