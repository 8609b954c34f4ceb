//! gRPC probes: one `grpc.health.v1.Health/Check` call over HTTP/2 without TLS, as kubelet
//! makes it. The two messages are tiny, so their protobuf encoding is written here by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::probes::Target;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckResponse.ServingStatus` by number.
fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// The request message in a gRPC length-prefixed frame (uncompressed).
pub fn request_frame(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = data.get(*at) else {
            bail!("truncated varint");
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// The serving status in a response body (one gRPC frame); a message without the field is
/// UNKNOWN (proto3 default).
pub fn response_status(body: &[u8]) -> Result<u64> {
    if body.len() < 5 {
        bail!("the health response has no message");
    }
    if body[0] != 0 {
        bail!("the health response is compressed, which the probe did not ask for");
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let message = body
        .get(5..5 + len)
        .context("the health response is truncated")?;
    let mut at = 0;
    let mut status = 0;
    while at < message.len() {
        let key = get_varint(message, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(message, &mut at)?,
            (_, 0) => {
                get_varint(message, &mut at)?;
            }
            (_, 1) => at += 8,
            (_, 2) => {
                let n = get_varint(message, &mut at)? as usize;
                at += n;
            }
            (_, 5) => at += 4,
            (_, wire) => bail!("unexpected protobuf wire type {wire}"),
        }
    }
    Ok(status)
}

/// gRPC status codes kubelet words its messages by.
const UNIMPLEMENTED: u32 = 12;

/// A gRPC status code's name, as grpc-go prints it in `rpc error: code = …`.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

/// Ok(None) when the service is SERVING; Ok(Some(why)) otherwise, in kubelet's words.
pub async fn check(
    target: &Target,
    port: i32,
    service: &str,
    ip: IpAddr,
    timeout: Duration,
) -> Result<Option<String>> {
    let port = u16::try_from(port).with_context(|| format!("invalid port {port}"))?;
    let addr = SocketAddr::new(ip, port);
    let secs = timeout.as_secs();
    let tcp = match super::netns::connect(&target.netns, addr, timeout).await {
        Ok(t) => t,
        Err(e) => {
            return Ok(Some(format!(
                "timeout: failed to connect service {:?} within {secs}s: {e:#}",
                addr.to_string()
            )));
        }
    };
    let call = async {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .context("HTTP/2 handshake failed")?;
        let driver = tokio::spawn(conn);
        let request = http::Request::post(format!("http://{addr}{PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "kube-probe/1.32")
            .header("grpc-timeout", format!("{}m", timeout.as_millis()))
            .body(Full::new(Bytes::from(request_frame(service))))
            .context("cannot build the health request")?;
        let answer = async {
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let collected = body.collect().await?;
            anyhow::Ok((parts, collected))
        }
        .await;
        driver.abort();
        let (parts, collected) = answer?;
        if parts.status != http::StatusCode::OK {
            bail!("HTTP status {}", parts.status.as_u16());
        }
        // A trailers-only answer carries grpc-status in its headers.
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let grpc_status = trailers
            .get("grpc-status")
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .context("the answer has no grpc-status")?;
        let grpc_message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        anyhow::Ok((grpc_status, grpc_message, collected.to_bytes()))
    };
    let (grpc_status, grpc_message, body) = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            return Ok(Some(format!(
                "timeout: health rpc did not complete within {secs}s"
            )));
        }
        Ok(Err(e)) => {
            return Ok(Some(format!("error: health rpc probe failed: {e:#}")));
        }
        Ok(Ok(answer)) => answer,
    };
    if grpc_status == UNIMPLEMENTED {
        return Ok(Some(format!(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health): {grpc_message}"
        )));
    }
    if grpc_status != 0 {
        return Ok(Some(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {grpc_message}",
            code_name(grpc_status)
        )));
    }
    let status = match response_status(&body) {
        Ok(s) => s,
        Err(e) => return Ok(Some(format!("error: health rpc probe failed: {e:#}"))),
    };
    if status == 1 {
        Ok(None)
    } else {
        Ok(Some(format!(
            "service unhealthy (responded with {:?})",
            status_name(status)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frames_carry_the_service_name() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            request_frame("db"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
    }

    #[test]
    fn response_status_reads_field_one_and_skips_others() {
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]).unwrap(), 1);
        assert_eq!(response_status(&[0, 0, 0, 0, 0]).unwrap(), 0);
        // An unknown string field 2 before the status.
        assert_eq!(
            response_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]).unwrap(),
            2
        );
        assert!(response_status(&[1, 0, 0, 0, 0]).is_err());
        assert!(response_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert_eq!(status_name(2), "NOT_SERVING");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Code(99)");
    }
}
