//! The codecs a batch's records may be compressed with, and inflating them with a bound.
//!
//! Inflating is bounded by the caller's `inflated_bytes_max`: a few KiB of zstd or gzip
//! can claim gigabytes, so no codec is asked for more than the bound plus one byte.
//! (kafka-protocol 0.18's decompressors read to the end, and its snappy path allocates
//! whatever length the stream claims.)
//!
//! Snappy comes in two framings and keel reads both: raw snappy (librdkafka) and the
//! xerial framing of snappy-java (the Java client): a 16-byte header starting
//! `\x82SNAPPY\0`, then blocks of a big-endian u32 length and raw snappy. keel's builder
//! writes xerial framing with 32 KiB blocks, as the Java client does, which every Kafka
//! client reads. LZ4 is the LZ4 frame format with independent blocks (what Kafka's
//! RecordBatch v2 uses), gzip a gzip stream, zstd a zstd frame.

use std::io::{Read, Write};

/// A codec of RecordBatch v2 (attribute bits 0-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The number in the batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_id(id: u8) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Compression, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown compression {s:?}: use none, gzip, snappy, lz4 or zstd"))
    }
}

/// Why compressed records could not be inflated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The codec refused the bytes (the message is the codec's).
    Damaged(String),
    /// The records inflate to more than the bound.
    TooLarge,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
/// The xerial header: magic, then version and minimum compatible version (1 and 1).
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01";
/// snappy-java's block size, which the Java client uses.
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

/// Compresses `raw` (records in Kafka's layout) with `codec`.
pub(crate) fn compress(codec: Compression, raw: &[u8]) -> Vec<u8> {
    // Writing into memory fails only when memory does, which aborts anyway.
    const IN_MEMORY: &str = "compressing into memory cannot fail";
    match codec {
        Compression::None => raw.to_vec(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(raw).expect(IN_MEMORY);
            gz.finish().expect(IN_MEMORY)
        }
        Compression::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in raw.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder.compress_vec(block).expect(IN_MEMORY);
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Compression::Lz4 => {
            // Independent 64 KiB blocks and no content checksum: what Kafka's Java client writes.
            let mut lz4 = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .expect(IN_MEMORY);
            lz4.write_all(raw).expect(IN_MEMORY);
            let (out, done) = lz4.finish();
            done.expect(IN_MEMORY);
            out
        }
        Compression::Zstd => zstd::bulk::compress(raw, zstd::DEFAULT_COMPRESSION_LEVEL).expect(IN_MEMORY),
    }
}

/// Inflates `compressed` records, refusing output over `max` bytes.
pub(crate) fn inflate(codec: Compression, compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let damaged = |e: std::io::Error| InflateError::Damaged(e.to_string());
    match codec {
        Compression::None => bounded(compressed, max),
        Compression::Gzip => bounded(flate2::read::MultiGzDecoder::new(compressed), max),
        Compression::Snappy if compressed.starts_with(XERIAL_MAGIC) => inflate_xerial(compressed, max),
        Compression::Snappy => inflate_snappy_block(compressed, max),
        Compression::Lz4 => {
            let mut decoder = lz4::Decoder::new(compressed).map_err(damaged)?;
            let out = bounded(&mut decoder, max)?;
            // The decoder stops quietly at the end of its input, even inside a frame; only
            // `finish` tells a whole frame from a cut one.
            decoder.finish().1.map_err(|_| InflateError::Damaged("the lz4 frame is cut short".into()))?;
            Ok(out)
        }
        Compression::Zstd => bounded(zstd::stream::read::Decoder::new(compressed).map_err(damaged)?, max),
    }
}

/// Reads `reader` to its end, refusing more than `max` bytes.
fn bounded(reader: impl Read, max: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(&mut out).map_err(|e| InflateError::Damaged(e.to_string()))?;
    if out.len() > max {
        return Err(InflateError::TooLarge);
    }
    Ok(out)
}

/// One raw snappy block: its header states its inflated length, checked before allocating.
fn inflate_snappy_block(block: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let damaged = |e: snap::Error| InflateError::Damaged(e.to_string());
    let len = snap::raw::decompress_len(block).map_err(damaged)?;
    if len > max {
        return Err(InflateError::TooLarge);
    }
    snap::raw::Decoder::new().decompress_vec(block).map_err(damaged)
}

fn inflate_xerial(stream: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut rest = stream.get(XERIAL_HEADER.len()..).ok_or_else(|| truncated("header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| truncated("block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or_else(|| truncated("block"))?;
        out.extend_from_slice(&inflate_snappy_block(block, max - out.len())?);
        rest = &tail[len..];
    }
    Ok(out)
}

fn truncated(what: &str) -> InflateError {
    InflateError::Damaged(format!("the xerial snappy stream ends inside a {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let raw = sample();
        for codec in Compression::ALL {
            let packed = compress(codec, &raw);
            assert_eq!(inflate(codec, &packed, raw.len()).unwrap(), raw, "{codec}");
            assert_eq!(inflate(codec, &packed, raw.len() - 1), Err(InflateError::TooLarge), "{codec}");
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let raw = sample();
        let packed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(inflate(Compression::Snappy, &packed, raw.len()).unwrap(), raw);
        assert_eq!(inflate(Compression::Snappy, &packed, 10), Err(InflateError::TooLarge));
    }

    #[test]
    fn a_bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros compress to a few KiB in each codec.
        let zeros = vec![0u8; 64 << 20];
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &zeros);
            assert!(packed.len() < zeros.len() / 16, "{codec}: {}", packed.len());
            assert_eq!(inflate(codec, &packed, 1 << 20), Err(InflateError::TooLarge), "{codec}");
        }
    }

    #[test]
    fn damaged_streams_are_errors() {
        let raw = sample();
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &raw);
            let cut = &packed[..packed.len() / 2];
            assert!(matches!(inflate(codec, cut, 1 << 30), Err(InflateError::Damaged(_))), "{codec}");
        }
    }
}
