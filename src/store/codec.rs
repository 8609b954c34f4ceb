//! Byte layouts of the records kept in redb.
//!
//! Hand-rolled rather than serde: the payloads are opaque bytes, so a generic format would only
//! add a copy or an escape pass, and an explicit layout is easier to keep stable across versions
//! (the file outlives the binary that wrote it). All integers are little-endian.
//!
//! Current-state table value: `create_revision: i64 | mod_revision: i64 | value…`
//!
//! History table value (the table key is the event's revision):
//! - put:    `1 | key_len: u32 | key | create_revision: i64 | value_len: u32 | value | prev`
//!   where `prev` is `0` (a create) or `1 | create_revision: i64 | mod_revision: i64 | value…`
//! - delete: `2 | key_len: u32 | key | create_revision: i64 | mod_revision: i64 | value…`
//!   (the deleted key-value; the delete's own revision is the table key)

use bytes::Bytes;

use super::{Event, KeyValue, Revision, StoreError};

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const KV_HEADER: usize = 16;

pub(super) fn encode_kv(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(super) fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    let mut r = Reader::new(raw, || format!("current value of {key:?}"));
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(r.rest()),
        create_revision,
        mod_revision,
    })
}

pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    let mut out;
    match event {
        Event::Put { kv, prev } => {
            let prev_len = prev.as_ref().map_or(0, |p| 16 + p.value.len());
            out = Vec::with_capacity(1 + 4 + kv.key.len() + 8 + 4 + kv.value.len() + 1 + prev_len);
            out.push(TAG_PUT);
            put_bytes(&mut out, kv.key.as_bytes());
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            put_bytes(&mut out, &kv.value);
            match prev {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    out.extend_from_slice(&p.create_revision.to_le_bytes());
                    out.extend_from_slice(&p.mod_revision.to_le_bytes());
                    out.extend_from_slice(&p.value);
                }
            }
        }
        Event::Delete { prev, .. } => {
            out = Vec::with_capacity(1 + 4 + prev.key.len() + 16 + prev.value.len());
            out.push(TAG_DELETE);
            put_bytes(&mut out, prev.key.as_bytes());
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            out.extend_from_slice(&prev.value);
        }
    }
    out
}

/// The key of a history record, without decoding (and copying) the values: replay and
/// `list_at` skip most records by prefix.
pub(super) fn event_key(revision: Revision, raw: &[u8]) -> Result<&str, StoreError> {
    let mut r = Reader::new(raw, || format!("history record at revision {revision}"));
    r.u8()?;
    r.str()
}

pub(super) fn decode_event(revision: Revision, raw: &[u8]) -> Result<Event, StoreError> {
    let mut r = Reader::new(raw, || format!("history record at revision {revision}"));
    let tag = r.u8()?;
    let key = r.str()?;
    match tag {
        TAG_PUT => {
            let create_revision = r.i64()?;
            let value = Bytes::copy_from_slice(r.bytes()?);
            let prev = match r.u8()? {
                0 => None,
                1 => Some(KeyValue {
                    key: key.to_owned(),
                    create_revision: r.i64()?,
                    mod_revision: r.i64()?,
                    value: Bytes::copy_from_slice(r.rest()),
                }),
                other => return Err(r.corrupt(&format!("bad prev marker {other}"))),
            };
            Ok(Event::Put {
                kv: KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision,
                    mod_revision: revision,
                },
                prev,
            })
        }
        TAG_DELETE => Ok(Event::Delete {
            prev: KeyValue {
                key: key.to_owned(),
                create_revision: r.i64()?,
                mod_revision: r.i64()?,
                value: Bytes::copy_from_slice(r.rest()),
            },
            revision,
        }),
        other => Err(r.corrupt(&format!("unknown event tag {other}"))),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the API server's request size limit; a
    // larger one would be a caller bug, and truncating the length would corrupt the record.
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&b[..len as usize]);
}

/// Bounds-checked cursor: a damaged file must surface as `StoreError::Backend`, not a panic.
struct Reader<'a, F: Fn() -> String> {
    buf: &'a [u8],
    what: F,
}

impl<'a, F: Fn() -> String> Reader<'a, F> {
    fn new(buf: &'a [u8], what: F) -> Self {
        Reader { buf, what }
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        StoreError::Backend(format!("corrupt {}: {detail}", (self.what)()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        let len = u32::from_le_bytes(a) as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, StoreError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("key is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, c: Revision, m: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn events_round_trip() {
        let cases = [
            Event::Put {
                kv: kv("/a/b", "{\"x\":1}", 7, 7),
                prev: None,
            },
            Event::Put {
                kv: kv("/a/b", "", 7, 9),
                prev: Some(kv("/a/b", "{\"x\":1}", 7, 7)),
            },
            Event::Delete {
                prev: kv("/a/ü", "v", 3, 5),
                revision: 12,
            },
        ];
        for ev in cases {
            let raw = encode_event(&ev);
            assert_eq!(event_key(ev.revision(), &raw).ok(), Some(ev.key()));
            let back = decode_event(ev.revision(), &raw).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{ev:?}"));
        }
    }

    #[test]
    fn kv_round_trip() {
        let raw = encode_kv(3, 8, b"hello");
        assert_eq!(decode_kv("/k", &raw).ok(), Some(kv("/k", "hello", 3, 8)));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let raw = encode_event(&Event::Put {
            kv: kv("/a", "value", 2, 2),
            prev: Some(kv("/a", "old", 1, 1)),
        });
        for cut in 0..raw.len() {
            // Every truncation must either decode (the trailing value may legitimately be
            // shorter) or fail cleanly.
            let _ = decode_event(2, &raw[..cut]);
            let _ = event_key(2, &raw[..cut]);
        }
        assert!(decode_event(2, &[9, 0, 0, 0, 0]).is_err());
        assert!(decode_kv("/k", &[1, 2, 3]).is_err());
    }
}
