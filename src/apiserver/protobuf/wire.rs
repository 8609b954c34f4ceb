//! The protobuf wire format: just enough to walk a message's fields without knowing its type.

use std::fmt;

#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    /// No Kubernetes field is fixed32; the value is skipped, not kept.
    Fixed32,
    Bytes(&'a [u8]),
}

impl WireValue<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "fixed64",
            WireValue::Fixed32 => "fixed32",
            WireValue::Bytes(_) => "length-delimited",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Truncated,
    VarintTooLong,
    /// Groups (wire types 3 and 4) were never used by Kubernetes; anything else is not protobuf.
    WireType(u64),
    FieldZero,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "the message ends in the middle of a field"),
            Error::VarintTooLong => write!(f, "a varint is longer than 10 bytes"),
            Error::WireType(t) => write!(f, "unsupported wire type {t}"),
            Error::FieldZero => write!(f, "field number 0"),
        }
    }
}

pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.rest.len() >= 10 {
            Error::VarintTooLong
        } else {
            Error::Truncated
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.rest.len() {
            return Err(Error::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn fixed64(&mut self) -> Result<u64, Error> {
        let bytes = self.take(8)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(buf))
    }

    /// The next field's number and value, or `None` at the end of the message.
    // Not an Iterator: the error has to stop the walk, and `?` reads better with Option inside.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u32, WireValue<'a>)>, Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Error::WireType(key))?;
        if tag == 0 {
            return Err(Error::FieldZero);
        }
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(self.fixed64()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Error::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed32
            }
            other => return Err(Error::WireType(other)),
        };
        Ok(Some((tag, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type_and_rejects_truncation() {
        // field 1 varint 300, field 2 bytes "hi", field 3 fixed64 1, field 4 fixed32 2
        let bytes = [
            0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0, 0,
        ];
        let mut r = Reader::new(&bytes);
        assert!(matches!(r.next(), Ok(Some((1, WireValue::Varint(300))))));
        assert!(matches!(r.next(), Ok(Some((2, WireValue::Bytes(b"hi"))))));
        assert!(matches!(r.next(), Ok(Some((3, WireValue::Fixed64(1))))));
        assert!(matches!(r.next(), Ok(Some((4, WireValue::Fixed32)))));
        assert!(matches!(r.next(), Ok(None)));

        assert_eq!(
            Reader::new(&[0x12, 5, b'a']).next().err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x08, 0x80]).next().err(),
            Some(Error::Truncated)
        );
        assert_eq!(Reader::new(&[0x0b]).next().err(), Some(Error::WireType(3)));
        assert_eq!(
            Reader::new(&[0x00, 0x00]).next().err(),
            Some(Error::FieldZero)
        );
        assert_eq!(
            Reader::new(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .next()
            .err(),
            Some(Error::VarintTooLong)
        );
    }
}
