//! Port-forward over WebSocket with `v4.channel.k8s.io` framing, as kubelet serves it to clients
//! that speak no SPDY (the Python client's `portforward()`): each requested port gets two
//! channels, data on `2i` and error on `2i+1`; the server's first message on each channel is the
//! port as two little-endian bytes. One connection to the pod per port lives as long as the
//! WebSocket; a port that cannot be reached gets its reason on its error channel while the
//! others keep going. The WebSocket closes when every port is done or the client leaves.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use super::portforward::{Target, connect_in};
use super::upgrade::Upgraded;

pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// The ports of `port=` or `ports=` (comma-separated, repeatable), with kubelet's messages.
pub fn parse_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "port" || k == "ports")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The message that opens channel `channel` of `port`.
fn opening(channel: u8, port: u16) -> Vec<u8> {
    let [lo, hi] = port.to_le_bytes();
    vec![channel, lo, hi]
}

pub async fn serve(io: Upgraded, ports: Vec<u16>, target: Arc<Target>) {
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, mut stream) = ws.split();
    let (out_tx, writer) = super::remotecommand::spawn_websocket_writer(sink, 64);
    // Channel numbers are one byte: kubelet's limit of 127 ports per request.
    let ports: Vec<u16> = ports.into_iter().take(127).collect();
    for (i, &port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for message in [opening(data, port), opening(data + 1, port)] {
            if out_tx.send(message).await.is_err() {
                return;
            }
        }
    }
    let mut to_ports = Vec::new();
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(32);
        to_ports.push(tx);
        forwards.push(tokio::spawn(forward(
            port,
            (2 * i) as u8,
            rx,
            out_tx.clone(),
            target.clone(),
        )));
    }
    drop(out_tx);
    let reader = async move {
        while let Some(message) = stream.next().await {
            let data = match message {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            // Only data channels carry the client's bytes; what it writes elsewhere is ignored.
            if channel % 2 == 0
                && let Some(tx) = to_ports.get(usize::from(channel / 2))
                && !payload.is_empty()
            {
                let _ = tx.send(Bytes::copy_from_slice(payload)).await;
            }
        }
        // Dropping the senders ends every upload: the pod sees the client's end of input.
    };
    let all_done = futures::future::join_all(forwards);
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
    }
    let _ = writer.await;
}

/// One port: its connection in the pod, the client's bytes to it and its bytes back.
async fn forward(
    port: u16,
    channel: u8,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Vec<u8>>,
    target: Arc<Target>,
) {
    let tcp = match connect_in(&target.netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e:#}",
                target.pod, target.uid
            );
            debug!(%message);
            let mut frame = vec![channel + 1];
            frame.extend_from_slice(message.as_bytes());
            let _ = out.send(frame).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upload = async move {
        while let Some(chunk) = from_client.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let download = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(channel);
                    frame.extend_from_slice(&buf[..n]);
                    if out.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // The pod's end of output finishes the port; the client's end of input only half-closes.
    tokio::pin!(upload);
    tokio::select! {
        _ = download => {}
        _ = &mut upload => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ports_parse_as_kubelet_reads_them() {
        assert_eq!(
            parse_ports(&q(&[("ports", "1234,1235"), ("port", "80")])),
            Ok(vec![1234, 1235, 80])
        );
        assert_eq!(
            parse_ports(&[]),
            Err("query parameter \"port\" is required".into())
        );
        assert!(parse_ports(&q(&[("ports", "x")])).is_err());
        assert!(parse_ports(&q(&[("ports", "0")])).is_err());
        assert!(parse_ports(&q(&[("ports", "")])).is_err());
    }

    #[test]
    fn each_channel_opens_with_its_port_little_endian() {
        assert_eq!(opening(0, 1234), vec![0, 0xd2, 0x04]);
        assert_eq!(opening(5, 80), vec![5, 80, 0]);
    }
}
