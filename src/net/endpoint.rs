//! The one QUIC endpoint of a node (peers and clients share its UDP port), the client
//! endpoint, and frame I/O on streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream, TransportConfig, VarInt};

use super::frame::{FrameError, check_len};
use super::tls::{NodeTls, derive_secret};

/// A QUIC connection to a node or a client.
pub type Connection = quinn::Connection;

/// How long a silent connection lives: partitions are noticed within this time.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// Client requests in flight per connection (one bidirectional stream each).
pub const CLIENT_STREAMS_MAX: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bind UDP {addr}: {source} (is another process using the port?)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: quinn::ConnectError },
    #[error("connection to {addr}: {source}")]
    Connection { addr: SocketAddr, source: quinn::ConnectionError },
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream read: {0}")]
    Read(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Protocol(String),
}

fn transport(bidi_streams: u32) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("4 s is a valid idle timeout")))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_concurrent_bidi_streams(VarInt::from_u32(bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(16))
        .stream_receive_window(VarInt::from_u32(8 << 20))
        .receive_window(VarInt::from_u32(32 << 20))
        .send_window(32 << 20);
    Arc::new(t)
}

/// The node's endpoint: accepts peers and clients, dials peers.
///
/// Its stateless-reset key and connection-id key are derived from the node's private key,
/// so they are the same after a restart: a peer or client still holding a connection to
/// the node's previous process gets a stateless reset at its next packet and dials again
/// at once, instead of waiting out the idle timeout (during which a lower id that must
/// dial a restarted higher one could not reach it).
pub fn node_endpoint(listen: SocketAddr, tls: &NodeTls) -> Result<Endpoint, NetError> {
    let crypto = QuicServerConfig::try_from(tls.server.clone()).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(CLIENT_STREAMS_MAX));
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &tls.endpoint_secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    let cid_secret = derive_secret(b"keel connection ids v1", &tls.endpoint_secret);
    let cid_key = u64::from_le_bytes(cid_secret[..8].try_into().expect("8 bytes"));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let bind_error = |source| NetError::Bind { addr: listen, source };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
    let runtime = quinn::default_runtime().ok_or_else(|| NetError::Protocol("QUIC needs a tokio runtime".into()))?;
    let mut endpoint = Endpoint::new(config, Some(server), socket, runtime).map_err(bind_error)?;
    endpoint.set_default_client_config(client_config(tls.peer_client.clone())?);
    Ok(endpoint)
}

fn client_config(tls: Arc<rustls::ClientConfig>) -> Result<quinn::ClientConfig, NetError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(CLIENT_STREAMS_MAX));
    Ok(config)
}

/// An endpoint for a client process: dials nodes only.
pub fn client_endpoint(tls: Arc<rustls::ClientConfig>) -> Result<Endpoint, NetError> {
    let any: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
    let mut endpoint = Endpoint::client(any).map_err(|source| NetError::Bind { addr: any, source })?;
    endpoint.set_default_client_config(client_config(tls)?);
    Ok(endpoint)
}

/// Which end of a TLS handshake refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// This end's TLS refused the peer (its certificate, most often).
    Us,
    /// The peer's TLS refused this end.
    Peer,
}

/// A connection that failed because TLS refused the handshake: who refused it, the alert
/// that says why, and the TLS library's own words (empty when the peer refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRefusal {
    pub by: RefusedBy,
    pub alert: rustls::AlertDescription,
    pub detail: String,
}

/// Tells a refused TLS handshake from other connection failures by the error's type: QUIC
/// carries a TLS alert as a CRYPTO_ERROR transport code, 0x100 plus the alert (RFC 9001
/// §4.8), raised locally (`TransportError`) or received from the peer (`ConnectionClosed`).
pub fn tls_refusal(error: &quinn::ConnectionError) -> Option<TlsRefusal> {
    let (by, code, detail) = match error {
        quinn::ConnectionError::TransportError(e) => (RefusedBy::Us, e.code, e.reason.clone()),
        quinn::ConnectionError::ConnectionClosed(close) => (RefusedBy::Peer, close.error_code, String::new()),
        _ => return None,
    };
    let alert = u8::try_from(u64::from(code).checked_sub(0x100)?).ok()?;
    Some(TlsRefusal { by, alert: rustls::AlertDescription::from(alert), detail })
}

/// The `reason` label of `keel_quic_handshake_failures_total` for a refused connection,
/// from the error's type: a TLS alert about certificates, a missing application protocol,
/// a timeout, or something else.
pub fn handshake_failure_reason(error: &quinn::ConnectionError) -> &'static str {
    use rustls::AlertDescription as Alert;
    if let quinn::ConnectionError::TimedOut = error {
        return "timeout";
    }
    match tls_refusal(error).map(|r| r.alert) {
        Some(
            Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::CertificateRequired
            | Alert::DecryptError,
        ) => "bad_certificate",
        Some(Alert::NoApplicationProtocol) => "wrong_alpn",
        _ => "other",
    }
}

/// Connects and completes the handshake, checking the server's certificate for `name`.
pub async fn connect(endpoint: &Endpoint, addr: SocketAddr, name: &str) -> Result<Connection, NetError> {
    let connecting = endpoint.connect(addr, name).map_err(|source| NetError::Connect { addr, source })?;
    connecting.await.map_err(|source| NetError::Connection { addr, source })
}

/// Reads one frame (without its length prefix); `None` when the stream ended cleanly.
/// The length is checked against `max` before the buffer is allocated.
pub async fn read_frame(stream: &mut RecvStream, max: usize) -> Result<Option<Bytes>, NetError> {
    let Some(len) = read_len(stream, max).await? else { return Ok(None) };
    read_body(stream, len).await.map(Some)
}

/// Reads and checks a frame's length prefix; `None` at a clean end of stream.
async fn read_len(stream: &mut RecvStream, max: usize) -> Result<Option<usize>, NetError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(()) => Ok(Some(check_len(prefix, max)?)),
        Err(quinn::ReadExactError::FinishedEarly(0)) => Ok(None),
        Err(e) => Err(NetError::Read(e.to_string())),
    }
}

async fn read_body(stream: &mut RecvStream, len: usize) -> Result<Bytes, NetError> {
    let mut buf = BytesMut::zeroed(len);
    stream.read_exact(&mut buf).await.map_err(|e| NetError::Read(e.to_string()))?;
    Ok(buf.freeze())
}

/// Writes a frame given as chunks (the first carries the length prefix); no copies.
pub async fn write_frame(stream: &mut SendStream, chunks: &mut [Bytes]) -> Result<(), NetError> {
    stream.write_all_chunks(chunks).await?;
    Ok(())
}

/// The ALPN protocol the peer chose in the handshake.
pub fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// The certificate chain the peer presented (already verified against the cluster CA).
pub fn peer_certificates(conn: &Connection) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
    conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok().map(|b| *b)
}

/// Like `read_frame`, but first takes the frame's length from `budget` (bytes a connection
/// may hold in the node at once); the permit is released when the caller drops it.
pub async fn read_frame_budgeted(
    stream: &mut RecvStream,
    max: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<Option<(Bytes, tokio::sync::OwnedSemaphorePermit)>, NetError> {
    let Some(len) = read_len(stream, max).await? else { return Ok(None) };
    let permits = u32::try_from(len).expect("frames are bounded below 4 GiB");
    let permit = budget.clone().acquire_many_owned(permits).await.map_err(|_| NetError::Protocol("closing".into()))?;
    Ok(Some((read_body(stream, len).await?, permit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::{ConnectionClose, ConnectionError, TransportErrorCode};

    #[test]
    fn a_tls_alert_is_told_apart_with_the_end_that_sent_it() {
        let local = ConnectionError::TransportError(quinn_proto::TransportError {
            code: TransportErrorCode::crypto(48),
            frame: None,
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        let refusal = tls_refusal(&local).expect("a TLS refusal");
        assert_eq!((refusal.by, refusal.alert), (RefusedBy::Us, rustls::AlertDescription::UnknownCA));
        assert_eq!(refusal.detail, "invalid peer certificate: UnknownIssuer");
        let close = |code| ConnectionClose { error_code: code, frame_type: None, reason: Bytes::new() };
        let remote = ConnectionError::ConnectionClosed(close(TransportErrorCode::crypto(116)));
        let refusal = tls_refusal(&remote).expect("a TLS refusal");
        assert_eq!((refusal.by, refusal.alert), (RefusedBy::Peer, rustls::AlertDescription::CertificateRequired));
        let not_tls = ConnectionError::ConnectionClosed(close(TransportErrorCode::PROTOCOL_VIOLATION));
        assert_eq!(tls_refusal(&not_tls), None);
        assert_eq!(tls_refusal(&ConnectionError::TimedOut), None);
    }
}
