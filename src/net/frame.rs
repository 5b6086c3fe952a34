//! Length-delimited, versioned frames on QUIC streams, and a reader for their bodies
//! that returns errors instead of panicking on any bytes.
//!
//! ```text
//! offset size field
//!      0    4 len      bytes after this field (version + kind + body), little-endian
//!      4    1 version  FRAME_VERSION
//!      5    1 kind     what the body holds (defined by each protocol)
//!      6    . body
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use crate::codec::{DecodeError, Reader, put_bytes};

pub const FRAME_VERSION: u8 = 1;
/// Bytes before the body: length, version, kind.
pub const FRAME_HEADER_LEN: usize = 4 + 1 + 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("frame too short: {len} bytes")]
    TooShort { len: u64 },
    #[error("unsupported frame version {0} (this build speaks version {FRAME_VERSION})")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame body: {0}")]
    Body(#[from] DecodeError),
}

/// Builds one frame: reserve the header, write the body, then `finish`.
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    pub fn new(kind: u8, body_capacity: usize) -> FrameBuilder {
        let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + body_capacity);
        buf.put_u32_le(0);
        buf.put_u8(FRAME_VERSION);
        buf.put_u8(kind);
        FrameBuilder { buf }
    }

    pub fn body(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn finish(self) -> Bytes {
        let mut chunks = self.finish_with(Vec::new());
        chunks.pop().expect("one chunk")
    }

    /// Finishes a frame whose body continues in `tail`, which is sent as it is (entries
    /// go from the mapped segment files to the network without a copy).
    pub fn finish_with(mut self, tail: Vec<Bytes>) -> Vec<Bytes> {
        let tail_len: usize = tail.iter().map(Bytes::len).sum();
        let len = u32::try_from(self.buf.len() - 4 + tail_len).expect("frames are bounded far below 4 GiB");
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let mut chunks = Vec::with_capacity(1 + tail.len());
        chunks.push(self.buf.freeze());
        chunks.extend(tail);
        chunks
    }
}

/// Validates the 4-byte length prefix against `max` before anything is allocated.
pub fn check_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as u64;
    if len < 2 {
        return Err(FrameError::TooShort { len });
    }
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len as usize)
}

/// Splits a frame (without its length prefix) into kind and body.
pub fn open(mut frame: Bytes) -> Result<(u8, Reader), FrameError> {
    if frame.len() < 2 {
        return Err(FrameError::TooShort { len: frame.len() as u64 });
    }
    let version = frame.get_u8();
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = frame.get_u8();
    Ok((kind, Reader::new(frame)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut b = FrameBuilder::new(7, 16);
        b.body().put_u64_le(42);
        put_bytes(b.body(), b"hi");
        let frame = b.finish();
        let len = check_len(frame[..4].try_into().unwrap(), 1024).unwrap();
        assert_eq!(len, frame.len() - 4);
        let (kind, mut r) = open(frame.slice(4..)).unwrap();
        assert_eq!(kind, 7);
        assert_eq!(r.u64("n").unwrap(), 42);
        assert_eq!(&r.bytes("s").unwrap()[..], b"hi");
        r.end().unwrap();
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        assert_eq!(
            check_len(u32::MAX.to_le_bytes(), 1 << 20),
            Err(FrameError::TooLarge { len: 4294967295, max: 1 << 20 })
        );
        assert_eq!(check_len(1u32.to_le_bytes(), 1 << 20), Err(FrameError::TooShort { len: 1 }));
    }

    #[test]
    fn forged_counts_are_refused() {
        let mut r = Reader::new(Bytes::from_static(&[255, 255, 255, 255, 0]));
        assert!(r.count(8, "entries").is_err());
    }

    proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((_, mut r)) = open(Bytes::from(bytes)) {
                let _ = r.u32("a");
                let _ = r.bytes("b");
                let _ = r.count(4, "c");
                let _ = r.string("d");
                let _ = r.bool("e");
            }
        }
    }
}
