//! The self-signed certificate made at start and an HTTP/1.1-only TLS acceptor for poem.
//!
//! pveproxy speaks HTTP/1.1 only and puts its error messages in the status line's reason
//! phrase, which HTTP/2 cannot carry; so ALPN offers `http/1.1` alone (poem's own rustls
//! listener would also offer `h2`).

use std::io::{Error as IoError, Result as IoResult};
use std::sync::Arc;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{LocalAddr, RemoteAddr};
use poem::http::uri::Scheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A certificate and key generated for this simulator instance.
#[derive(Clone)]
pub struct SelfSignedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl SelfSignedCert {
    /// A fresh certificate for `localhost`, `127.0.0.1` and the given extra names (node names).
    pub fn generate(extra_names: &[String]) -> anyhow::Result<Self> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_names.iter().cloned());
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(Self {
            cert_pem: certified.cert.pem(),
            cert_der: certified.cert.der().to_vec(),
            key_der: certified.signing_key.serialize_der(),
        })
    }

    /// SHA-256 over the DER certificate as `pvenode cert info` prints it: `AA:BB:…`.
    pub fn fingerprint_sha256(&self) -> String {
        Sha256::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Accepts TCP connections, finishes TLS handshakes in background tasks and hands poem the
/// ready streams.
pub struct H1TlsAcceptor {
    local: Vec<LocalAddr>,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, LocalAddr, RemoteAddr)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl H1TlsAcceptor {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: std::net::SocketAddr, cert: &SelfSignedCert) -> anyhow::Result<Self> {
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()?));
        let mut tcp = TcpListener::bind(addr).into_acceptor().await?;
        let local = tcp.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, local, remote, _)) = tcp.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(stream)).await
                    {
                        let _ = tx.send((tls_stream, local, remote)).await;
                    }
                });
            }
        });
        Ok(Self { local, ready, accept_loop })
    }

    /// The bound socket address.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.local.first().and_then(|a| a.as_socket_addr().copied())
    }
}

impl Drop for H1TlsAcceptor {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Acceptor for H1TlsAcceptor {
    type Io = TlsStream<tokio::net::TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.local.clone()
    }

    async fn accept(&mut self) -> IoResult<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        match self.ready.recv().await {
            Some((io, local, remote)) => Ok((io, local, remote, Scheme::HTTPS)),
            None => Err(IoError::other("listener closed")),
        }
    }
}
