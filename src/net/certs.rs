//! `keel certs`: a cluster CA, one certificate per node and a client certificate (rcgen).
//!
//! Names bound into the certificates (checked by `tls.rs`):
//! - node N: DNS `node-N.keel` (its identity to peers), DNS `node.keel` (any node, for
//!   clients), `localhost`, `127.0.0.1` and every `--host`;
//! - client: DNS `client.keel`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::tls::node_name;
use super::tls::{ANY_NODE_NAME, CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY, CLIENT_NAME, node_cert_file, node_key_file};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path} exists but {other} is missing; restore it or pass --force to make a new CA")]
    CaIncomplete { path: PathBuf, other: PathBuf },
}

/// What `generate` wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub ca_created: bool,
    pub files: Vec<PathBuf>,
}

/// Writes certificates for `nodes` (and a client certificate) into `dir`, creating the CA
/// if there is none. An existing CA is never overwritten unless `force`: without it, new
/// certificates are signed by the existing CA (how a node is added to a running cluster).
pub fn generate(dir: &Path, nodes: &[u64], hosts: &[String], force: bool) -> Result<Written, CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Io { op: "create directory", path: dir.into(), source })?;
    let mut written = Written::default();
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let issuer = match (ca_cert_path.exists(), ca_key_path.exists(), force) {
        (false, false, _) | (_, _, true) => {
            written.ca_created = true;
            let issuer = new_ca()?;
            write_file(&ca_key_path, issuer.key().serialize_pem().as_bytes(), true, &mut written)?;
            let cert = ca_params().self_signed(issuer.key())?;
            write_file(&ca_cert_path, cert.pem().as_bytes(), false, &mut written)?;
            issuer
        }
        (true, true, false) => {
            // The issuer is rebuilt from the same parameters and key that made ca.pem: the
            // subject name and key identifier match, so new leaves chain to the existing CA.
            Issuer::new(ca_params(), KeyPair::from_pem(&read(&ca_key_path)?)?)
        }
        (true, false, false) => return Err(CertsError::CaIncomplete { path: ca_cert_path, other: ca_key_path }),
        (false, true, false) => return Err(CertsError::CaIncomplete { path: ca_key_path, other: ca_cert_path }),
    };
    for &id in nodes {
        let mut names = vec![node_name(id), ANY_NODE_NAME.to_string(), "localhost".into(), "127.0.0.1".into()];
        names.extend(hosts.iter().cloned());
        names.dedup();
        let key = KeyPair::generate()?;
        let cert = leaf_params(names, &format!("keel node {id}"))?.signed_by(&key, &issuer)?;
        write_file(&dir.join(node_key_file(id)), key.serialize_pem().as_bytes(), true, &mut written)?;
        write_file(&dir.join(node_cert_file(id)), cert.pem().as_bytes(), false, &mut written)?;
    }
    let key = KeyPair::generate()?;
    let cert = leaf_params(vec![CLIENT_NAME.into()], "keel client")?.signed_by(&key, &issuer)?;
    write_file(&dir.join(CLIENT_KEY), key.serialize_pem().as_bytes(), true, &mut written)?;
    write_file(&dir.join(CLIENT_CERT), cert.pem().as_bytes(), false, &mut written)?;
    Ok(written)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "keel cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn new_ca() -> Result<Issuer<'static, KeyPair>, CertsError> {
    Ok(Issuer::new(ca_params(), KeyPair::generate()?))
}

fn leaf_params(names: Vec<String>, common_name: &str) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every certificate may act on both sides of a handshake: nodes dial each other.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Io { op: "read", path: path.into(), source })
}

/// Writes a file; private keys are created with mode 0600 before any byte is written.
fn write_file(path: &Path, bytes: &[u8], secret: bool, written: &mut Written) -> Result<(), CertsError> {
    let io = |op, source| CertsError::Io { op, path: path.into(), source };
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create", e))?;
    // An existing file keeps its old mode through open(); set it explicitly.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io("set permissions of", e))?;
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    written.files.push(path.into());
    Ok(())
}
