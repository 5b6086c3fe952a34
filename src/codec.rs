//! Bounded reading and writing of the little-endian fields that keel's own encodings are
//! made of (frames, metadata records, state files): every read is bounds-checked, so any
//! bytes give an error, never a panic, and a forged count never makes the caller allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why bytes could not be read as what they should hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated while reading {what}")]
    Truncated { what: &'static str },
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    #[error("{0} trailing bytes after the end")]
    Trailing(usize),
}

/// Reads a buffer field by field; every read is bounds-checked.
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n { Err(DecodeError::Truncated { what }) } else { Ok(()) }
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16_le())
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32_le())
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64_le())
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what }),
        }
    }

    /// A length-prefixed (u32) byte string, zero-copy.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }

    /// A count of items that each take at least `min_item_len` bytes: checked against what
    /// is left so that a forged count cannot make the caller allocate.
    pub fn count(&mut self, min_item_len: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.buf.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n)
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid { what })
    }

    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    /// The rest of the body, zero-copy.
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_to(self.buf.len())
    }

    /// Succeeds only when the whole body was consumed.
    pub fn end(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::Trailing(self.buf.len())) }
    }
}

pub fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32_le(u32::try_from(bytes.len()).expect("fields are bounded far below 4 GiB"));
    buf.put_slice(bytes);
}
