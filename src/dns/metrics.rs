//! Counters of the DNS server and their Prometheus text on `/metrics`, under CoreDNS's metric
//! names where one exists (what dashboards for CoreDNS's :9153 read); `/health` answers OK
//! while the server runs, `/ready` once the cluster zone has been listed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub const QTYPES: [&str; 8] = ["A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "SOA", "other"];
pub const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];
/// Upper bounds (seconds) of the request duration histogram (CoreDNS's buckets, from 0.25 ms).
const BUCKETS: [f64; 12] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
];

#[derive(Default)]
pub struct Metrics {
    /// [udp, tcp] × QTYPES
    requests: [[AtomicU64; QTYPES.len()]; 2],
    responses: [AtomicU64; RCODES.len()],
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    pub truncated: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_entries: AtomicU64,
    pub forward_requests: AtomicU64,
    pub forward_errors: AtomicU64,
    pub zone_services: AtomicU64,
    pub zone_updates: AtomicU64,
    pub ready: AtomicBool,
}

pub fn qtype_index(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        28 => 1,
        33 => 2,
        12 => 3,
        16 => 4,
        5 => 5,
        6 => 6,
        _ => 7,
    }
}

impl Metrics {
    pub fn request(&self, tcp: bool, qtype: u16) {
        self.requests[usize::from(tcp)][qtype_index(qtype)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, rcode: u16, elapsed: std::time::Duration) {
        let index = if rcode < 6 { rcode as usize } else { 6 };
        self.responses[index].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n# TYPE coredns_dns_requests_total counter\n");
        for (p, proto) in ["udp", "tcp"].iter().enumerate() {
            for (t, qtype) in QTYPES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "coredns_dns_requests_total{{server=\"dns://:53\",zone=\".\",proto=\"{proto}\",type=\"{qtype}\"}} {}",
                    get(&self.requests[p][t])
                );
            }
        }
        out.push_str("# HELP coredns_dns_responses_total Counter of response status codes.\n# TYPE coredns_dns_responses_total counter\n");
        for (i, rcode) in RCODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "coredns_dns_responses_total{{server=\"dns://:53\",zone=\".\",rcode=\"{rcode}\"}} {}",
                get(&self.responses[i])
            );
        }
        out.push_str("# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took.\n# TYPE coredns_dns_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += get(&self.duration_buckets[i]);
            let _ = writeln!(
                out,
                "coredns_dns_request_duration_seconds_bucket{{server=\"dns://:53\",zone=\".\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = get(&self.duration_count);
        let _ = writeln!(
            out,
            "coredns_dns_request_duration_seconds_bucket{{server=\"dns://:53\",zone=\".\",le=\"+Inf\"}} {count}\ncoredns_dns_request_duration_seconds_sum{{server=\"dns://:53\",zone=\".\"}} {}\ncoredns_dns_request_duration_seconds_count{{server=\"dns://:53\",zone=\".\"}} {count}",
            get(&self.duration_sum_micros) as f64 / 1e6
        );
        let simple: [(&str, &str, &str, u64); 9] = [
            (
                "coredns_cache_hits_total",
                "counter",
                "The count of cache hits.",
                get(&self.cache_hits),
            ),
            (
                "coredns_cache_misses_total",
                "counter",
                "The count of cache misses.",
                get(&self.cache_misses),
            ),
            (
                "coredns_cache_entries",
                "gauge",
                "The number of elements in the cache.",
                get(&self.cache_entries),
            ),
            (
                "coredns_forward_requests_total",
                "counter",
                "Counter of requests made per upstream.",
                get(&self.forward_requests),
            ),
            (
                "coredns_forward_errors_total",
                "counter",
                "Counter of upstream exchanges that failed (timeouts, refused connections).",
                get(&self.forward_errors),
            ),
            (
                "kcluster_dns_truncated_responses_total",
                "counter",
                "UDP answers sent with TC=1 because they did not fit.",
                get(&self.truncated),
            ),
            (
                "kcluster_dns_zone_services",
                "gauge",
                "Services in the cluster zone.",
                get(&self.zone_services),
            ),
            (
                "kcluster_dns_zone_updates_total",
                "counter",
                "Rebuilds of the cluster zone from watch events.",
                get(&self.zone_updates),
            ),
            (
                "kcluster_dns_ready",
                "gauge",
                "1 once Services and EndpointSlices have been listed.",
                u64::from(self.ready.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/health" => (StatusCode::OK, "OK".to_string(), "text/plain"),
        "/ready" if metrics.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "OK".to_string(), "text/plain")
        }
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster zone has not been listed yet".to_string(),
            "text/plain",
        ),
        _ => (StatusCode::NOT_FOUND, "not found".to_string(), "text/plain"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the metrics listener (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))
}
