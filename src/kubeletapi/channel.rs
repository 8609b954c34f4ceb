//! The WebSocket channel protocol of exec and attach (`v4`/`v5.channel.k8s.io`): each binary
//! message starts with its channel — 0 stdin, 1 stdout, 2 stderr, 3 error (a Status), 4 resize
//! (`{"Width":…,"Height":…}`); v5 adds 255, "close" of the channel in the next byte.

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Stdin(Vec<u8>),
    Resize {
        width: u16,
        height: u16,
    },
    /// The client closed one of its channels (v5).
    Close(u8),
    /// Empty, unknown or malformed: ignored.
    Other,
}

pub fn encode(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

pub fn decode(message: &[u8]) -> Incoming {
    let Some((&channel, data)) = message.split_first() else {
        return Incoming::Other;
    };
    match channel {
        STDIN => Incoming::Stdin(data.to_vec()),
        RESIZE => parse_resize(data).unwrap_or(Incoming::Other),
        CLOSE => data
            .first()
            .map(|&c| Incoming::Close(c))
            .unwrap_or(Incoming::Other),
        _ => Incoming::Other,
    }
}

/// `{"Width":120,"Height":40}` (the names as kubectl sends them).
pub fn parse_resize(data: &[u8]) -> Option<Incoming> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let get = |k: &str| {
        v.get(k)
            .or_else(|| v.get(k.to_ascii_lowercase()))
            .and_then(|n| n.as_u64())
            .map(|n| n.min(u16::MAX as u64) as u16)
    };
    Some(Incoming::Resize {
        width: get("Width")?,
        height: get("Height")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_by_channel() {
        assert_eq!(
            decode(&encode(STDIN, b"ls\n")),
            Incoming::Stdin(b"ls\n".to_vec())
        );
        assert_eq!(
            decode(&encode(RESIZE, br#"{"Width":120,"Height":40}"#)),
            Incoming::Resize {
                width: 120,
                height: 40
            }
        );
        assert_eq!(decode(&[CLOSE, STDIN]), Incoming::Close(STDIN));
        assert_eq!(decode(&[RESIZE, b'{']), Incoming::Other);
        assert_eq!(decode(&[]), Incoming::Other);
        assert_eq!(encode(STDOUT, b"x"), vec![1, b'x']);
    }
}
