//! Switching a request to WebSocket or SPDY/3.1, with the subprotocol both sides agree on.

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::{Body, bad_request, full};

pub type Upgraded = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    WebSocket { accept: String, protocol: String },
    Spdy { protocol: String },
}

/// Every value of a comma-separated header, over all its lines.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// What the request asks to switch to, if we speak one of its subprotocols (ours in order of
/// preference); else the answer to send instead.
pub fn negotiate(
    req: &Request<Incoming>,
    websocket: &[&str],
    spdy: &[&str],
) -> Result<Kind, Box<Response<Body>>> {
    let upgrade = values(req.headers(), header::UPGRADE.as_str());
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = values(req.headers(), "sec-websocket-protocol");
        let Some(protocol) = websocket.iter().find(|p| offered.iter().any(|o| o == *p)) else {
            return Err(Box::new(bad_request(&format!(
                "none of the offered WebSocket subprotocols {offered:?} is supported ({websocket:?})"
            ))));
        };
        let Some(key) = req.headers().get("sec-websocket-key") else {
            return Err(Box::new(bad_request(
                "a WebSocket upgrade needs Sec-WebSocket-Key",
            )));
        };
        return Ok(Kind::WebSocket {
            accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            protocol: protocol.to_string(),
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = values(req.headers(), "x-stream-protocol-version");
        let Some(protocol) = spdy.iter().find(|p| offered.iter().any(|o| o == *p)) else {
            return Err(Box::new(forbidden_protocol(&offered, spdy)));
        };
        return Ok(Kind::Spdy {
            protocol: protocol.to_string(),
        });
    }
    Err(Box::new(bad_request(
        "this endpoint needs a connection upgrade (Upgrade: websocket or SPDY/3.1)",
    )))
}

fn forbidden_protocol(offered: &[String], ours: &[&str]) -> Response<Body> {
    super::status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ours:?}"
        ),
    )
}

pub fn switching(kind: &Kind) -> Response<Body> {
    let builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    let builder = match kind {
        Kind::WebSocket { accept, protocol } => builder
            .header(header::UPGRADE, "websocket")
            .header("Sec-WebSocket-Accept", accept)
            .header("Sec-WebSocket-Protocol", protocol),
        Kind::Spdy { protocol } => builder
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", protocol),
    };
    builder
        .body(full(""))
        .unwrap_or_else(|_| Response::new(full("")))
}
