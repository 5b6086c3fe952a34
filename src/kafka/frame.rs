//! Kafka frames on a byte stream: a big-endian i32 length, then the request or response.
//! Every length is checked against the limit before anything is allocated for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection is closed instead of answered (the Kafka broker does the same: a
/// client that sent what cannot be parsed cannot be told so in a response).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {len} bytes, outside 8..={max} (kafka request_bytes_max)")]
    Length { len: i64, max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("api key {api_key} version {version} is not advertised")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("malformed request header: {0}")]
    Header(String),
    #[error("malformed {api:?} v{version} request: {why}")]
    Body { api: ApiKey, version: i16, why: String },
    #[error("cannot encode the response (a keel bug): {0}")]
    Encode(String),
    #[error("the request failed inside keel: {0}")]
    Internal(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The smallest request: api key, version and correlation id.
const REQUEST_PREFIX_BYTES: usize = 8;

/// Reads the next frame's length: `None` at a clean end of stream (between frames).
pub async fn read_length<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    let len = i32::from_be_bytes(prefix);
    if len < REQUEST_PREFIX_BYTES as i32 || len as usize > max {
        return Err(FrameError::Length { len: len.into(), max });
    }
    Ok(Some(len as usize))
}

/// Reads a frame body of `len` bytes (already checked against the limit).
pub async fn read_body<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> Result<Bytes, FrameError> {
    let mut body = BytesMut::zeroed(len);
    reader.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(body.freeze())
}

/// The fixed start of every request header, readable whatever the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
}

pub fn prefix(frame: &Bytes) -> Prefix {
    let mut b = &frame[..REQUEST_PREFIX_BYTES];
    Prefix { api_key: b.get_i16(), version: b.get_i16(), correlation_id: b.get_i32() }
}

/// Decodes the request header of a supported api and version; `frame` is left at the body.
pub fn header(api: ApiKey, version: i16, frame: &mut Bytes) -> Result<RequestHeader, FrameError> {
    RequestHeader::decode(frame, api.request_header_version(version)).map_err(|e| FrameError::Header(e.to_string()))
}

/// Decodes a request body of a supported version.
pub fn body<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, FrameError> {
    T::decode(body, version).map_err(|e| FrameError::Body { api, version, why: e.to_string() })
}

/// Encodes a whole response frame: length, header (the version the API asks for), body.
pub fn response<T: Encodable + HeaderVersion>(
    api: ApiKey,
    correlation_id: i32,
    version: i16,
    body: &T,
) -> Result<BytesMut, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = T::header_version(version);
    debug_assert_eq!(header_version, api.response_header_version(version));
    let size = header.compute_size(header_version).map_err(|e| e.to_string())?
        + body.compute_size(version).map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).map_err(|_| format!("{api:?} response of {size} bytes"))?);
    header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    debug_assert_eq!(buf.len(), 4 + size);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lengths_outside_the_limit_are_refused_before_reading_the_body() {
        for len in [i32::MAX, -1, 0, 7, 1025] {
            let bytes = len.to_be_bytes();
            let mut reader = &bytes[..];
            assert!(matches!(read_length(&mut reader, 1024).await, Err(FrameError::Length { .. })), "{len}");
        }
        let mut reader = &[0u8, 0][..];
        assert!(matches!(read_length(&mut reader, 1024).await, Err(FrameError::Truncated)));
        let mut reader = &[][..];
        assert!(matches!(read_length(&mut reader, 1024).await, Ok(None)));
        let mut reader = &[0u8, 0, 0, 8, 1, 2][..];
        assert_eq!(read_length(&mut reader, 1024).await.unwrap(), Some(8));
        assert!(matches!(read_body(&mut reader, 8).await, Err(FrameError::Truncated)));
    }
}
