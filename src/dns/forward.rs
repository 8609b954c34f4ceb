//! Forwarding to the upstream resolvers (the node's resolv.conf: Docker's embedded DNS), with
//! a cache. Each forwarded question goes out from a fresh UDP socket (a random source port and
//! a random ID), retried over TCP when the answer comes back truncated; upstreams are tried in
//! order until one answers. Answers are cached by (name, type, class, DO bit) for their TTL,
//! at most `MAX_TTL` (negative answers at most `MAX_NEGATIVE_TTL`), `CAPACITY` entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::metrics::Metrics;

/// Longest a positive answer is cached (kubeadm's Corefile: `cache 30`).
const MAX_TTL: u32 = 30;
/// Longest a negative answer (NXDOMAIN, no data) is cached.
const MAX_NEGATIVE_TTL: u32 = 5;
/// Negative answers without an SOA.
const DEFAULT_NEGATIVE_TTL: u32 = 2;
const CAPACITY: usize = 10_000;
/// One attempt at one upstream.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded questions in flight at once (CoreDNS: `max_concurrent 1000`); more get SERVFAIL.
const MAX_CONCURRENT: usize = 1000;
/// The EDNS payload size we offer upstream and to clients (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    qtype: u16,
    class: u16,
    dnssec_ok: bool,
}

struct Entry {
    response: Message,
    stored: Instant,
    expires: Instant,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<Key, Entry>>,
    in_flight: tokio::sync::Semaphore,
    metrics: std::sync::Arc<Metrics>,
}

fn key(query: &Query, dnssec_ok: bool) -> Key {
    Key {
        name: query.name().to_ascii().to_ascii_lowercase(),
        qtype: u16::from(query.query_type()),
        class: u16::from(query.query_class()),
        dnssec_ok,
    }
}

/// How long `response` may be cached, if at all.
fn cache_ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation {
        return None;
    }
    match response.metadata.response_code {
        ResponseCode::NoError if !response.answers.is_empty() => response
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|ttl| ttl.min(MAX_TTL)),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = response.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            });
            Some(soa.unwrap_or(DEFAULT_NEGATIVE_TTL).min(MAX_NEGATIVE_TTL))
        }
        _ => None,
    }
    .filter(|ttl| *ttl > 0)
}

fn random_id() -> u16 {
    let mut bytes = [0u8; 2];
    // SystemRandom only fails when the kernel has no randomness to give; a fixed ID then still
    // works (the source port is random).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u16::from_be_bytes(bytes)
}

/// Whether `response` answers `query` (same ID and question, case-insensitively).
fn answers_query(response: &Message, query: &Message) -> bool {
    response.metadata.id == query.metadata.id
        && response.metadata.message_type == MessageType::Response
        && response.queries.len() == query.queries.len()
        && response.queries.iter().zip(&query.queries).all(|(a, b)| {
            a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
                && a.name().eq_ignore_root(b.name())
        })
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, metrics: std::sync::Arc<Metrics>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT),
            metrics,
        }
    }

    /// The upstreams' answer to `name`/`qtype` (class IN), cached. The answer's ID and
    /// question are the upstream query's: callers take what they need from it.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        class: DNSClass,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Message {
        let mut query = Query::query(name.clone(), qtype);
        query.set_query_class(class);
        let key = key(&query, dnssec_ok);
        if let Some(hit) = self.cached(&key) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return servfail(query);
        };
        let mut request = Message::new(random_id(), MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = true;
        request.metadata.checking_disabled = checking_disabled;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_dnssec_ok(dnssec_ok);
        request.set_edns(edns);
        for upstream in &self.upstreams {
            self.metrics
                .forward_requests
                .fetch_add(1, Ordering::Relaxed);
            match exchange(*upstream, &request).await {
                Ok(mut response) => {
                    if let Some(ttl) = cache_ttl(&response) {
                        // Clients see the TTL the cache keeps (as CoreDNS's cache writes it),
                        // so their own caches expire together with ours.
                        for record in response
                            .answers
                            .iter_mut()
                            .chain(response.authorities.iter_mut())
                            .chain(response.additionals.iter_mut())
                        {
                            record.ttl = record.ttl.min(ttl);
                        }
                        self.store(key, &response, ttl);
                    }
                    return response;
                }
                Err(e) => {
                    self.metrics.forward_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%upstream, name = %name, "forward failed: {e:#}");
                }
            }
        }
        servfail(query)
    }

    /// A cached answer with its TTLs lowered by the time it has spent in the cache.
    fn cached(&self, key: &Key) -> Option<Message> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(key)?;
        let now = Instant::now();
        if now >= entry.expires {
            return None;
        }
        let mut response = entry.response.clone();
        let elapsed = now.duration_since(entry.stored).as_secs() as u32;
        drop(cache);
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(response)
    }

    fn store(&self, key: Key, response: &Message, ttl: u32) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= CAPACITY && !cache.contains_key(&key) {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= CAPACITY {
                // Still full of live answers: drop an arbitrary sixteenth.
                let drop: Vec<Key> = cache.keys().take(CAPACITY / 16).cloned().collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            key,
            Entry {
                response: response.clone(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
        self.metrics
            .cache_entries
            .store(cache.len() as u64, Ordering::Relaxed);
    }
}

fn servfail(query: Query) -> Message {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::ServFail;
    m.add_query(query);
    m
}

/// One question to one upstream: UDP, then TCP when the answer is truncated.
async fn exchange(upstream: SocketAddr, request: &Message) -> Result<Message> {
    let bytes = request.to_vec().context("cannot encode the query")?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, udp_exchange(upstream, request, &bytes))
        .await
        .context("no answer within 2s")??;
    if !response.metadata.truncation {
        return Ok(response);
    }
    tokio::time::timeout(ATTEMPT_TIMEOUT, tcp_exchange(upstream, request, &bytes))
        .await
        .context("no answer over TCP within 2s")?
}

async fn udp_exchange(upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that does not answer this question (late or forged) is ignored.
        if let Ok(response) = Message::from_vec(&buf[..n])
            && answers_query(&response, request)
        {
            return Ok(response);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).context("query too long")?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        if let Ok(response) = Message::from_vec(&buf)
            && answers_query(&response, request)
        {
            return Ok(response);
        }
        if len == 0 {
            bail!("empty answer");
        }
    }
}
