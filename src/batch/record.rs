//! One record inside a batch, as Kafka lays it out (all lengths are zigzag varints):
//!
//! ```text
//! length          varint   bytes of the record after this field
//! attributes      i8       unused
//! timestampDelta  varlong  from the batch's baseTimestamp
//! offsetDelta     varint   from the batch's baseOffset
//! keyLength       varint   -1 = null key
//! key
//! valueLength     varint   -1 = null value
//! value
//! headerCount     varint
//! header*         keyLength varint (>= 0), key (UTF-8), valueLength varint (-1 = null), value
//! ```
//!
//! [`parse`] reads one record from a byte slice without allocating and without trusting
//! any length: every length is checked against what is left of the record.

use bytes::BufMut;

use super::varint::{put_varint, put_varlong, read_varint, read_varlong, varint_len, varlong_len};

/// A record of a batch, as producers give it and consumers get it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch (-1: none given).
    pub timestamp_ms: i64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    /// In order; a name may repeat (Kafka headers are a list, not a map).
    pub headers: Vec<(String, Option<bytes::Bytes>)>,
}

impl Record {
    /// A record of `value`: no key, no headers, no timestamp yet (a producer stamps the
    /// time it is sent).
    pub fn new(value: impl Into<bytes::Bytes>) -> Record {
        Record { timestamp_ms: -1, key: None, value: Some(value.into()), headers: Vec::new() }
    }

    pub fn with_key(mut self, key: impl Into<bytes::Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// The value's bytes (a null value reads as empty).
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }

    /// Bytes the record takes in a batch, at most: its fields, and every varint at its
    /// largest (a producer's batching decisions need no more precision).
    pub fn size(&self) -> usize {
        const VARINT_MAX: usize = 10;
        let field = |b: &Option<bytes::Bytes>| VARINT_MAX + b.as_ref().map_or(0, |b| b.len());
        let headers: usize = self.headers.iter().map(|(n, v)| VARINT_MAX + n.len() + field(v)).sum();
        1 + 4 * VARINT_MAX + field(&self.key) + field(&self.value) + headers
    }
}

/// A record as it lies in the bytes: views, nothing copied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRecord<'a> {
    /// Bytes of the whole record, its length field included.
    pub encoded_len: usize,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: usize,
    /// The headers' bytes, already checked by `parse`; `headers` walks them again.
    pub headers: &'a [u8],
}

/// What is wrong with a record's bytes (`BatchError::Malformed` says which record).
pub(crate) type Malformed = &'static str;

/// Reads the record at the front of `buf`, advancing past it. Lengths are bounded by
/// what is left of the record, so no input can make the caller allocate or panic.
/// `record_bytes_max` is applied once the record's length is known to be real.
pub(crate) fn parse<'a>(buf: &mut &'a [u8]) -> Result<RawRecord<'a>, Malformed> {
    let before = buf.len();
    let length = read_varint(buf).map_err(|_| "its length is not a valid varint")?;
    let length = usize::try_from(length).map_err(|_| "its length is negative")?;
    if length > buf.len() {
        return Err("its length runs past the end of the records");
    }
    let (mut body, rest) = buf.split_at(length);
    *buf = rest;
    let encoded_len = before - buf.len();
    let (_attributes, tail) = body.split_first().ok_or("it ends before its attributes")?;
    body = tail;
    let timestamp_delta = read_varlong(&mut body).map_err(|_| "its timestamp delta is not a valid varlong")?;
    let offset_delta = read_varint(&mut body).map_err(|_| "its offset delta is not a valid varint")?;
    let key = nullable_bytes(&mut body, KEY)?;
    let value = nullable_bytes(&mut body, VALUE)?;
    let header_count = read_varint(&mut body).map_err(|_| "its header count is not a valid varint")?;
    let header_count = usize::try_from(header_count).map_err(|_| "its header count is negative")?;
    let headers = body;
    for _ in 0..header_count {
        next_header(&mut body)?;
    }
    if !body.is_empty() {
        return Err("it has bytes after its last header");
    }
    Ok(RawRecord { encoded_len, timestamp_delta, offset_delta, key, value, header_count, headers })
}

/// Reads one header from the front of `buf`.
pub(crate) fn next_header<'a>(buf: &mut &'a [u8]) -> Result<(&'a str, Option<&'a [u8]>), Malformed> {
    let len = read_varint(buf).map_err(|_| "a header name length is not a valid varint")?;
    let len = usize::try_from(len).map_err(|_| "a header name is null or has a negative length")?;
    if len > buf.len() {
        return Err("a header name runs past the end of the record");
    }
    let (name, rest) = buf.split_at(len);
    *buf = rest;
    let name = std::str::from_utf8(name).map_err(|_| "a header name is not UTF-8")?;
    Ok((name, nullable_bytes(buf, HEADER_VALUE)?))
}

/// What to say when a nullable field is malformed: its length is not a varint, is below
/// -1, or runs past the end of the record.
type FieldErrors = [Malformed; 3];
const KEY: FieldErrors =
    ["its key length is not a valid varint", "its key length is below -1", "its key runs past the end of the record"];
const VALUE: FieldErrors = [
    "its value length is not a valid varint",
    "its value length is below -1",
    "its value runs past the end of the record",
];
const HEADER_VALUE: FieldErrors = [
    "a header value length is not a valid varint",
    "a header value length is below -1",
    "a header value runs past the end of the record",
];

fn nullable_bytes<'a>(
    buf: &mut &'a [u8],
    [not_varint, negative, past_end]: FieldErrors,
) -> Result<Option<&'a [u8]>, Malformed> {
    let len = read_varint(buf).map_err(|_| not_varint)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| negative)?;
    if len > buf.len() {
        return Err(past_end);
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(bytes))
}

/// Bytes of a record's body (everything after its length field).
fn body_len(record: &Record, timestamp_delta: i64, offset_delta: i32) -> usize {
    let nullable = |b: &Option<bytes::Bytes>| b.as_ref().map_or(varint_len(-1), |b| varint_len(len_i32(b)) + b.len());
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| varint_len(len_i32(name.as_bytes())) + name.len() + nullable(value))
        .sum();
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable(&record.key)
        + nullable(&record.value)
        + varint_len(len_i32(&record.headers))
        + headers
}

/// Bytes `encode` writes for `record`.
pub(crate) fn encoded_len(record: &Record, timestamp_delta: i64, offset_delta: i32) -> usize {
    let body = body_len(record, timestamp_delta, offset_delta);
    varint_len(i32::try_from(body).expect("records are bounded far below 2 GiB")) + body
}

/// Appends `record` in Kafka's layout.
pub(crate) fn encode(buf: &mut Vec<u8>, record: &Record, timestamp_delta: i64, offset_delta: i32) {
    let body = body_len(record, timestamp_delta, offset_delta);
    put_varint(buf, i32::try_from(body).expect("records are bounded far below 2 GiB"));
    buf.put_i8(0);
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    put_nullable(buf, &record.key);
    put_nullable(buf, &record.value);
    put_varint(buf, len_i32(&record.headers));
    for (name, value) in &record.headers {
        put_varint(buf, len_i32(name.as_bytes()));
        buf.put_slice(name.as_bytes());
        put_nullable(buf, value);
    }
}

fn put_nullable(buf: &mut Vec<u8>, bytes: &Option<bytes::Bytes>) {
    match bytes {
        Some(b) => {
            put_varint(buf, len_i32(b));
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

fn len_i32<T>(items: &[T]) -> i32 {
    i32::try_from(items.len()).expect("records are bounded far below 2 GiB")
}
