//! PROXY protocol version 2 (haproxy's binary header): how a port proxy tells the server it
//! forwards to who the client is, since the server's TCP peer is the proxy itself. Only the
//! parts used here: the PROXY command over TCP/IPv4 and TCP/IPv6, TLVs skipped; a LOCAL
//! header (a health check by the proxy itself) means "the peer is the client".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const VERSION_2: u8 = 0x20;
const COMMAND_LOCAL: u8 = 0x00;
const COMMAND_PROXY: u8 = 0x01;
const TCP_V4: u8 = 0x11;
const TCP_V6: u8 = 0x21;
/// Addresses plus room for TLVs a sender may add; a longer header is refused rather than read.
const MAX_BLOCK: usize = 1024;

/// The header for a connection from `client` to `server` (the address the client dialled).
pub fn encode(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | COMMAND_PROXY);
    // Both ends in one family: a v4 client of a v6 socket is written as its mapped form.
    let pair = match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => Err((c, s)),
        (c, s) => Ok((v6(c), v6(s))),
    };
    match pair {
        Err((c, s)) => {
            out.push(TCP_V4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
        Ok((c, s)) => {
            out.push(TCP_V6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
    out
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol v2 header")]
    NoSignature,
    #[error("PROXY protocol version {0} is not spoken here (only 2)")]
    Version(u8),
    #[error("PROXY protocol command {0:#x} is unknown")]
    Command(u8),
    #[error("a PROXY protocol address block of {0} bytes is too short or too long")]
    Length(usize),
    #[error("the connection ended inside the PROXY protocol header")]
    Truncated,
}

/// Reads one header from `io` and returns the client it names: `None` for LOCAL or an
/// address family other than TCP over IPv4/IPv6 (the peer is then the client).
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, HeaderError> {
    let mut head = [0u8; 16];
    io.read_exact(&mut head)
        .await
        .map_err(|_| HeaderError::Truncated)?;
    if head[..12] != SIGNATURE {
        return Err(HeaderError::NoSignature);
    }
    let version = head[12] >> 4;
    if version != 2 {
        return Err(HeaderError::Version(version));
    }
    let command = head[12] & 0x0f;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BLOCK {
        return Err(HeaderError::Length(len));
    }
    let mut block = vec![0u8; len];
    io.read_exact(&mut block)
        .await
        .map_err(|_| HeaderError::Truncated)?;
    match command {
        COMMAND_LOCAL => Ok(None),
        COMMAND_PROXY => client(head[13], &block),
        other => Err(HeaderError::Command(other)),
    }
}

fn client(family: u8, block: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let port_at = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        TCP_V4 => {
            if block.len() < 12 {
                return Err(HeaderError::Length(block.len()));
            }
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port_at(8))))
        }
        TCP_V6 => {
            if block.len() < 36 {
                return Err(HeaderError::Length(block.len()));
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let ip = Ipv6Addr::from(octets);
            // A mapped v4 client is a v4 client (source ranges are IPv4).
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Ok(Some(SocketAddr::new(ip, port_at(32))))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(client: &str, server: &str) -> Result<Option<SocketAddr>, HeaderError> {
        let mut bytes = encode(client.parse().unwrap(), server.parse().unwrap());
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut io = &bytes[..];
        let got = read(&mut io).await;
        assert_eq!(io, b"GET / HTTP/1.1\r\n", "the header alone is consumed");
        got
    }

    #[tokio::test]
    async fn headers_carry_the_client_both_families() {
        assert_eq!(
            round_trip("172.18.0.9:40000", "172.18.0.3:80").await,
            Ok(Some("172.18.0.9:40000".parse().unwrap()))
        );
        assert_eq!(
            round_trip("[2001:db8::7]:5555", "[2001:db8::1]:443").await,
            Ok(Some("[2001:db8::7]:5555".parse().unwrap()))
        );
        assert_eq!(
            round_trip("10.0.0.1:1", "[::1]:80").await,
            Ok(Some("10.0.0.1:1".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn other_bytes_are_refused() {
        let mut plain: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(read(&mut plain).await, Err(HeaderError::NoSignature));
        let mut short: &[u8] = &SIGNATURE[..8];
        assert_eq!(read(&mut short).await, Err(HeaderError::Truncated));
        let mut huge = SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(read(&mut &huge[..]).await, Err(HeaderError::Length(65535)));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0, 12]);
        assert_eq!(read(&mut &v1[..]).await, Err(HeaderError::Version(1)));
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&mut &local[..]).await, Ok(None));
    }
}
