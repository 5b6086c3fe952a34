//! How a client call fails, and which failures prove that nothing was appended.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::AlertDescription;

use crate::net::client_codec::ErrorReply;
use crate::net::endpoint::{RefusedBy, TlsRefusal};
use crate::net::tls::{CA_CERT, CLIENT_CERT, CLIENT_KEY};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    #[error(
        "the outcome is unknown: {0}; the records may or may not have been appended \
         (at-least-once: retrying may duplicate them)"
    )]
    OutcomeUnknown(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("unknown topic {0:?}: create it with `keel topic create {0}`")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {count}: 0..{count})")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A request that breaks a rule (a topic name, a config value, a partition count).
    #[error("{0}")]
    Invalid(String),
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    #[error("no node could serve the request: {0}")]
    Unavailable(String),
    /// The call's deadline (`ClientConfig::timeout`) passed while every failure was one
    /// that left the log untouched: a produce that ends so appended nothing.
    #[error("gave up after {after:?} without success: {last}")]
    TimedOut { after: Duration, last: String },
    /// TLS refused the handshake: nothing reached the cluster, and retrying cannot help
    /// until the certificates are fixed. Never retried.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The group coordinator refused a call (its Kafka error code is `GroupError::code`).
    #[error("{0}")]
    Group(crate::groups::GroupError),
}

impl ClientError {
    /// True when the records are known not to have been appended.
    pub fn known_failed(&self) -> bool {
        !matches!(self, ClientError::OutcomeUnknown(_))
    }
}

impl From<ErrorReply> for ClientError {
    fn from(e: ErrorReply) -> ClientError {
        match e {
            ErrorReply::OutcomeUnknown { .. } => ClientError::OutcomeUnknown(e.to_string()),
            ErrorReply::OffsetOutOfRange { requested, start, end } => {
                ClientError::OffsetOutOfRange { requested, start, end }
            }
            ErrorReply::Refused(msg) => ClientError::Refused(msg),
            ErrorReply::UnknownTopic(topic) => ClientError::UnknownTopic(topic),
            ErrorReply::UnknownPartition { topic, partition, count } => {
                ClientError::UnknownPartition { topic, partition, count }
            }
            ErrorReply::TopicExists(topic) => ClientError::TopicExists(topic),
            ErrorReply::Invalid(msg) => ClientError::Invalid(msg),
            // Known not appended: the producer's session is over.
            ErrorReply::Producer(e) => ClientError::Refused(e.to_string()),
            ErrorReply::Group(e) => ClientError::Group(e),
            other => ClientError::Unavailable(other.to_string()),
        }
    }
}

/// A certificate mistake, told from the TLS alert that ended the handshake; each message
/// names the files involved and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The node requires a client certificate and `dir` has none.
    #[error(
        "no client certificate in {dir} ({CLIENT_CERT}, {CLIENT_KEY}): the cluster requires one — run \
         `keel certs --dir {dir} --node ID ...` with the cluster's CA (its ca.pem and ca.key), or copy \
         {CLIENT_CERT} and {CLIENT_KEY} from the directory where the cluster's certificates were made",
        dir = .dir.display()
    )]
    NoClientCertificate { dir: PathBuf },
    /// The node refused the client certificate in `dir`.
    #[error(
        "the node refused the client certificate {} (TLS alert {alert:?}): it must be signed by the \
         cluster's CA — is --tls pointing at this cluster's certificates?",
        .dir.join(CLIENT_CERT).display()
    )]
    ClientCertificateRefused { dir: PathBuf, alert: AlertDescription },
    /// This client refused the node's certificate.
    #[error("{}", server_refused(.dir, *.alert, .detail))]
    ServerCertificateRefused { dir: PathBuf, alert: AlertDescription, detail: String },
    /// The node ended the handshake for a reason other than a certificate.
    #[error("the node refused the TLS handshake (alert {alert:?}): is it a keel node, of the same version?")]
    HandshakeRefused { alert: AlertDescription },
}

impl CertificateError {
    /// What went wrong, for a client whose certificates are in `dir`.
    pub(super) fn new(dir: &Path, refusal: TlsRefusal) -> CertificateError {
        let dir = dir.to_path_buf();
        let alert = refusal.alert;
        match refusal.by {
            RefusedBy::Us => CertificateError::ServerCertificateRefused { dir, alert, detail: refusal.detail },
            RefusedBy::Peer if alert == AlertDescription::CertificateRequired => {
                CertificateError::NoClientCertificate { dir }
            }
            RefusedBy::Peer if is_about_a_certificate(alert) => {
                CertificateError::ClientCertificateRefused { dir, alert }
            }
            RefusedBy::Peer => CertificateError::HandshakeRefused { alert },
        }
    }
}

/// The alerts TLS sends when it refuses a certificate (RFC 8446 §6.2).
fn is_about_a_certificate(alert: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        alert,
        A::UnknownCA
            | A::DecryptError
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::AccessDenied
    )
}

fn server_refused(dir: &Path, alert: AlertDescription, detail: &str) -> String {
    use AlertDescription as A;
    let ca = dir.join(CA_CERT);
    match alert {
        // An unknown issuer, or one with the same name whose signature does not verify.
        A::UnknownCA | A::DecryptError => format!(
            "the server's certificate is not signed by {}: is --tls pointing at this cluster's certificates? \
             ({detail})",
            ca.display()
        ),
        A::CertificateExpired => format!(
            "the server's certificate has expired or is not valid yet ({detail}): check the clocks, or make new \
             certificates with `keel certs`"
        ),
        A::BadCertificate => format!(
            "the server's certificate does not name a keel node ({detail}): make node certificates with `keel certs`"
        ),
        other => format!("this client refused the server's certificate (TLS alert {other:?}: {detail})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(by: RefusedBy, alert: AlertDescription) -> TlsRefusal {
        TlsRefusal { by, alert, detail: "invalid peer certificate: UnknownIssuer".into() }
    }

    #[test]
    fn each_refusal_names_its_cause_and_the_fix() {
        let dir = Path::new("/etc/keel/tls");
        let missing = CertificateError::new(dir, refusal(RefusedBy::Peer, AlertDescription::CertificateRequired));
        assert!(matches!(missing, CertificateError::NoClientCertificate { .. }));
        let text = missing.to_string();
        assert!(text.starts_with("no client certificate in /etc/keel/tls (client.pem, client.key)"), "{text}");
        assert!(text.contains("keel certs --dir /etc/keel/tls"), "{text}");
        let foreign = CertificateError::new(dir, refusal(RefusedBy::Us, AlertDescription::UnknownCA));
        let text = foreign.to_string();
        assert!(text.starts_with("the server's certificate is not signed by /etc/keel/tls/ca.pem"), "{text}");
        assert!(text.contains("is --tls pointing at this cluster's certificates?"), "{text}");
        let refused = CertificateError::new(dir, refusal(RefusedBy::Peer, AlertDescription::UnknownCA));
        assert!(matches!(refused, CertificateError::ClientCertificateRefused { .. }), "{refused}");
        let other = CertificateError::new(dir, refusal(RefusedBy::Peer, AlertDescription::NoApplicationProtocol));
        assert!(matches!(other, CertificateError::HandshakeRefused { .. }), "{other}");
        assert!(ClientError::from(foreign).known_failed(), "nothing was sent");
    }
}
