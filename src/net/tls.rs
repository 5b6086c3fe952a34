//! TLS material and identities: which files hold what, the rustls configurations of a
//! node and of a client, and the check that binds a peer's node id to its certificate.
//!
//! One crypto provider (ring) is named explicitly everywhere: quinn and the metrics
//! exporter would otherwise each pull in a different default and rustls panics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN of node-to-node (Raft) connections.
pub const ALPN_PEER: &[u8] = b"keel-raft/1";
/// ALPN of client connections (produce, fetch, metadata).
pub const ALPN_CLIENT: &[u8] = b"keel-client/2";

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client.key";
/// The DNS name every node certificate carries; clients check it.
pub const ANY_NODE_NAME: &str = "node.keel";
/// The DNS name of client certificates.
pub const CLIENT_NAME: &str = "client.keel";

/// The DNS name that identifies node `id` to its peers.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.keel")
}

pub fn node_cert_file(id: u64) -> String {
    format!("node-{id}.pem")
}

pub fn node_key_file(id: u64) -> String {
    format!("node-{id}.key")
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source} (make certificates with `keel certs --dir DIR --node ID ...`)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no usable {what} (expected PEM, as written by `keel certs`)")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer's certificate is not valid for {name}: {reason}")]
    WrongIdentity { name: String, reason: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.into(), what: "certificate" });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem { path: path.into(), what: "private key" })
}

fn load_roots(dir: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let path = dir.join(CA_CERT);
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&path)? {
        roots.add(cert).map_err(|_| TlsError::Pem { path: path.clone(), what: "CA certificate" })?;
    }
    Ok(Arc::new(roots))
}

/// Everything a node needs for both sides of its handshakes.
#[derive(Clone)]
pub struct NodeTls {
    /// Accepting peers and clients. Peers must present a certificate; clients must too
    /// when `require_client_cert` was set (the default of `keel serve`).
    pub server: Arc<ServerConfig>,
    /// Dialing peers, presenting this node's certificate.
    pub peer_client: Arc<ClientConfig>,
    /// A secret that only this node has and that survives restarts (derived from its private
    /// key): it keys the QUIC stateless resets and connection ids (see `endpoint.rs`).
    pub endpoint_secret: [u8; 32],
}

impl NodeTls {
    pub fn load(dir: &Path, id: u64, require_client_cert: bool) -> Result<NodeTls, TlsError> {
        let roots = load_roots(dir)?;
        let certs = load_certs(&dir.join(node_cert_file(id)))?;
        let key = load_key(&dir.join(node_key_file(id)))?;
        let endpoint_secret = derive_secret(b"keel endpoint secret v1", key.secret_der());
        let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        if !require_client_cert {
            // Peers are still required to present one: `verify_peer` checks it.
            verifier = verifier.allow_unauthenticated();
        }
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.build()?)
            .with_single_cert(certs.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];
        let mut peer_client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        peer_client.alpn_protocols = vec![ALPN_PEER.to_vec()];
        Ok(NodeTls { server: Arc::new(server), peer_client: Arc::new(peer_client), endpoint_secret })
    }
}

/// SHA-256 of `label` and `secret`: a key for one purpose that reveals nothing of `secret`.
pub fn derive_secret(label: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(label);
    ctx.update(secret);
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The configuration a client dials nodes with: the cluster CA as the only root, and the
/// client certificate when `dir` has one.
pub fn client_config(dir: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_as(dir, None)
}

/// The client configuration for a node that asks the cluster something as a client (the
/// metadata leader, to register itself): it presents its own node certificate, `id`.
pub fn client_config_as(dir: &Path, node: Option<u64>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(dir)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let (cert_path, key_path) = match node {
        Some(id) => (dir.join(node_cert_file(id)), dir.join(node_key_file(id))),
        None => (dir.join(CLIENT_CERT), dir.join(CLIENT_KEY)),
    };
    let mut config = if cert_path.exists() {
        builder.with_client_auth_cert(load_certs(&cert_path)?, load_key(&key_path)?)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    Ok(Arc::new(config))
}

/// Checks that a certificate chain the TLS layer already verified names node `id`.
/// Without this a node could present its own (valid) certificate and claim another id.
pub fn verify_node_identity(chain: &[CertificateDer<'_>], id: u64) -> Result<(), TlsError> {
    let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
    let name = node_name(id);
    let wrong = |reason: String| TlsError::WrongIdentity { name: name.clone(), reason };
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| wrong(e.to_string()))?;
    let server_name = ServerName::try_from(name.as_str()).map_err(|e| wrong(e.to_string()))?;
    cert.verify_is_valid_for_subject_name(&server_name).map_err(|e| wrong(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identity_is_bound_to_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        super::super::certs::generate(dir.path(), &[1, 2], &[], false).unwrap();
        let chain = load_certs(&dir.path().join(node_cert_file(1))).unwrap();
        verify_node_identity(&chain, 1).unwrap();
        let err = verify_node_identity(&chain, 2).unwrap_err();
        assert!(matches!(err, TlsError::WrongIdentity { .. }), "{err}");
        let client = load_certs(&dir.path().join(CLIENT_CERT)).unwrap();
        assert!(verify_node_identity(&client, 1).is_err(), "a client certificate must not pass as a node");
    }

    #[test]
    fn configs_load_from_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        super::super::certs::generate(dir.path(), &[1], &["keel-1.example".into()], false).unwrap();
        NodeTls::load(dir.path(), 1, true).unwrap();
        client_config(dir.path()).unwrap();
        let missing = NodeTls::load(dir.path(), 7, true).err().unwrap();
        assert!(missing.to_string().contains("node-7.pem"), "{missing}");
    }
}
