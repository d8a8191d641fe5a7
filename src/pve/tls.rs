//! How the client trusts PVE's certificate: a pinned SHA-256 fingerprint of the end-entity certificate or a CA bundle, as a rustls `ClientConfig`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::PveError;

/// What the client accepts as PVE's certificate. There is deliberately no "accept anything".
#[derive(Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The SHA-256 of the server's certificate (DER), as `pvenode cert info` prints it. PVE's
    /// default certificate is signed by the cluster's own CA; pinning needs no CA and ignores the
    /// host name. Signatures of the handshake are still verified with the certificate's key.
    Fingerprint([u8; 32]),
    /// PEM certificates to trust as roots (e.g. `/etc/pve/pve-root-ca.pem` or a public CA);
    /// the usual WebPKI chain and host-name checks apply.
    CaBundlePem(String),
}

impl TlsTrust {
    /// `AA:BB:…` (as PVE prints it) or plain hex, case-insensitive, 32 bytes.
    pub fn parse_fingerprint(s: &str) -> Result<Self, PveError> {
        let hex_digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let bad = || PveError::Config(format!("'{s}' is not a SHA-256 fingerprint (64 hex digits, optionally separated by ':')"));
        if s.trim().contains(':') {
            let groups: Vec<&str> = s.trim().split(':').collect();
            if groups.len() != 32 || groups.iter().any(|g| g.len() != 2) {
                return Err(bad());
            }
        }
        let bytes = hex::decode(&hex_digits).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(TlsTrust::Fingerprint(arr))
    }

    /// The rustls configuration for this trust (HTTP/1.1 only, like pveproxy).
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, PveError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PveError::Config(format!("TLS setup: {e}")))?;
        let mut config = match self {
            TlsTrust::Fingerprint(expected) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedFingerprint { expected: *expected, provider }))
                .with_no_client_auth(),
            TlsTrust::CaBundlePem(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| PveError::Config(format!("CA bundle: {e}")))?;
                    roots.add(cert).map_err(|e| PveError::Config(format!("CA bundle: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(PveError::Config("CA bundle holds no PEM certificate".to_string()));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsTrust::Fingerprint(fp) => write!(f, "Fingerprint({})", colon_hex(fp)),
            TlsTrust::CaBundlePem(pem) => write!(f, "CaBundlePem({} certificate(s))", pem.matches("BEGIN CERTIFICATE").count()),
        }
    }
}

/// `AA:BB:…`
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Accepts exactly the certificate whose DER hashes to `expected`.
#[derive(Debug)]
struct PinnedFingerprint {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
}

/// The presented certificate is not the pinned one.
#[derive(Debug)]
struct FingerprintMismatch {
    expected: [u8; 32],
    presented: [u8; 32],
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: expected SHA-256 {}, server presented {}",
            colon_hex(&self.expected),
            colon_hex(&self.presented)
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

impl ServerCertVerifier for PinnedFingerprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if subtle::ConstantTimeEq::ct_eq(&presented[..], &self.expected[..]).into() {
            Ok(ServerCertVerified::assertion())
        } else {
            let err = FingerprintMismatch { expected: self.expected, presented };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err)))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error somewhere in an error's chain, described (io errors wrap it without
/// exposing it as their source, so they are looked into).
pub(crate) fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        cur = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// rustls prints custom certificate errors with `Debug`; ours read better with `Display`.
fn describe(r: &rustls::Error) -> String {
    match r {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => format!("invalid peer certificate: {inner}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_spellings() {
        let colon = (0..32).map(|i| format!("{i:02x}")).collect::<Vec<_>>().join(":");
        let plain: String = (0..32).map(|i| format!("{i:02X}")).collect();
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(TlsTrust::parse_fingerprint(&colon).unwrap(), TlsTrust::Fingerprint(want));
        assert_eq!(TlsTrust::parse_fingerprint(&format!(" {plain} ")).unwrap(), TlsTrust::Fingerprint(want));
        for bad in ["", "AA:BB", &plain[..62], &format!("{plain}00"), &colon.replace("00:", "0:0"), &plain.replace('0', "g")] {
            assert!(matches!(TlsTrust::parse_fingerprint(bad), Err(PveError::Config(_))), "{bad}");
        }
        assert_eq!(format!("{:?}", TlsTrust::Fingerprint(want)), format!("Fingerprint({})", colon.to_uppercase()));
    }

    #[test]
    fn empty_ca_bundle_is_a_config_error() {
        assert!(matches!(TlsTrust::CaBundlePem("nothing here".into()).client_config(), Err(PveError::Config(_))));
        assert!(TlsTrust::Fingerprint([0; 32]).client_config().is_ok());
    }
}
