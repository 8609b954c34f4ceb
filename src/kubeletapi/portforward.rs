//! `/portForward/{ns}/{pod}`: SPDY/3.1 (`portforward.k8s.io`), plain or tunnelled through a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`: the SPDY bytes ride in binary messages), or
//! channels on a WebSocket (`v4.channel.k8s.io`, `portforward_channels`). Over SPDY, for
//! each forwarded connection the client opens an error stream and a data stream that share a
//! `requestID` and name the `port`; the data stream is joined to 127.0.0.1:<port> inside the
//! pod's network namespace.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use super::upgrade::{self, Kind};
use super::{Body, bad_request, find, spdy};
use crate::runtime::container::Runtime;

pub const WEBSOCKET_PROTOCOLS: [&str; 2] = [
    "SPDY/3.1+portforward.k8s.io",
    super::portforward_channels::PROTOCOL,
];
pub const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

pub async fn handle(
    runtime: Arc<Runtime>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let Some(found) = find::running_in_pod(&runtime, ns, pod) else {
        return bad_request(&format!(
            "pod {ns}/{pod} has no running container on this node"
        ));
    };
    let netns = netns_of(&found);
    let kind = match upgrade::negotiate(&req, &WEBSOCKET_PROTOCOLS, &SPDY_PROTOCOLS) {
        Ok(k) => k,
        Err(resp) => return *resp,
    };
    // With channels the ports are named up front, in the query.
    let channel_ports = match &kind {
        Kind::WebSocket { protocol, .. } if protocol == super::portforward_channels::PROTOCOL => {
            match super::portforward_channels::parse_ports(&super::query_pairs(&req)) {
                Ok(ports) => Some(ports),
                Err(message) => return bad_request(&message),
            }
        }
        _ => None,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let answer = upgrade::switching(&kind);
    let pod_name = pod.to_string();
    let uid = found.pod_uid.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => hyper_util::rt::TokioIo::new(up),
            Err(e) => return debug!(error = %e, "upgrade failed"),
        };
        if let Some(ports) = channel_ports {
            let target = Target {
                netns,
                pod: pod_name,
                uid,
            };
            return super::portforward_channels::serve(io, ports, Arc::new(target)).await;
        }
        let (tx, rx) = mpsc::channel::<spdy::Stream>(16);
        let target = Target {
            netns,
            pod: pod_name,
            uid,
        };
        let forwarding = tokio::spawn(forward_streams(rx, Arc::new(target)));
        let result = match kind {
            Kind::Spdy { .. } => spdy::serve(io, tx).await,
            Kind::WebSocket { .. } => {
                let (tunnel, ours) = tokio::io::duplex(256 * 1024);
                tokio::spawn(websocket_tunnel(io, tunnel));
                spdy::serve(ours, tx).await
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "port-forward connection ended");
        }
        let _ = forwarding.await;
    });
    answer
}

pub(super) struct Target {
    pub netns: PathBuf,
    pub pod: String,
    pub uid: String,
}

/// The pod's network namespace: the sandbox's, else that of its running container.
fn netns_of(found: &find::Found) -> PathBuf {
    let sandbox = PathBuf::from(format!("/run/kcluster/pods/{}/ns/net", found.pod_uid));
    if !found.pod_uid.is_empty() && sandbox.exists() {
        return sandbox;
    }
    match found.state.pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        None => sandbox,
    }
}

/// Carries the SPDY bytes between WebSocket binary messages and `tunnel`.
async fn websocket_tunnel(io: super::upgrade::Upgraded, tunnel: tokio::io::DuplexStream) {
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(tunnel);
    let inbound = async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Binary(b)) => {
                    if to_spdy.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = to_spdy.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_spdy.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::join!(inbound, outbound);
}

/// Pairs error and data streams by request id and forwards each pair.
async fn forward_streams(mut streams: mpsc::Receiver<spdy::Stream>, target: Arc<Target>) {
    let mut errors: HashMap<String, spdy::Stream> = HashMap::new();
    let mut datas: HashMap<String, spdy::Stream> = HashMap::new();
    while let Some(stream) = streams.recv().await {
        let request = spdy::header(&stream.headers, "requestid")
            .unwrap_or("")
            .to_string();
        match spdy::header(&stream.headers, "streamtype").unwrap_or("") {
            "error" => {
                errors.insert(request.clone(), stream);
            }
            "data" => {
                datas.insert(request.clone(), stream);
            }
            other => {
                debug!(streamtype = other, "unknown port-forward stream");
                stream.writer.reset().await;
                continue;
            }
        }
        if errors.contains_key(&request) && datas.contains_key(&request) {
            let (Some(error), Some(data)) = (errors.remove(&request), datas.remove(&request))
            else {
                continue;
            };
            tokio::spawn(forward_one(error, data, target.clone()));
        }
    }
}

async fn forward_one(error: spdy::Stream, data: spdy::Stream, target: Arc<Target>) {
    let port = spdy::header(&data.headers, "port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        let _ = error
            .writer
            .write(b"invalid port in the port-forward request")
            .await;
        error.writer.close().await;
        data.writer.close().await;
        return;
    };
    let tcp = match connect_in(&target.netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e:#}",
                target.pod, target.uid
            );
            debug!(%message);
            let _ = error.writer.write(message.as_bytes()).await;
            error.writer.close().await;
            data.writer.close().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let spdy::Stream {
        incoming: mut from_client,
        writer,
        ..
    } = data;
    let upload = async {
        while let Some(chunk) = from_client.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let download = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.close().await;
    };
    tokio::join!(upload, download);
    error.writer.close().await;
}

/// Connects to 127.0.0.1:port inside the network namespace at `netns`: a socket belongs to the
/// namespace its creator was in, so a dedicated thread enters it first.
pub(super) async fn connect_in(netns: &Path, port: u16) -> Result<tokio::net::TcpStream> {
    let netns = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let result = (|| -> Result<std::net::TcpStream> {
                let file = std::fs::File::open(&netns)
                    .with_context(|| format!("cannot open {}", netns.display()))?;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("cannot enter {}", netns.display()))?;
                let tcp = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    std::time::Duration::from_secs(10),
                )
                .with_context(|| format!("dial tcp4 127.0.0.1:{port}"))?;
                tcp.set_nonblocking(true)?;
                Ok(tcp)
            })();
            let _ = tx.send(result);
        })
        .context("cannot start a thread")?;
    let tcp = rx.await.context("the connecting thread died")??;
    tokio::net::TcpStream::from_std(tcp).context("cannot use the connection")
}
