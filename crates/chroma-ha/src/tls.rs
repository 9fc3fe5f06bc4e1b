//! TLS with rustls (ring provider; no OpenSSL anywhere): loading PEM files
//! into rustls configurations for the gateway's outgoing clients and for its
//! own listener.
//!
//! - Outgoing ([`ClientTls`]): every client that can reach a Chroma server
//!   or another gateway (server clients and their probes, the follower →
//!   leader forwarder, `chroma-ha status|check`) trusts the same roots:
//!   the certificates of `tls.ca_file` when it is set, *instead of* the
//!   system's roots (as `curl --cacert` does), else the system's roots. With
//!   `tls.client_cert_file` and `tls.client_key_file` it presents that
//!   certificate to servers that ask for one (mutual TLS).
//! - Incoming ([`listener`]): with `tls.cert_file` and `tls.key_file` the
//!   gateway serves TLS only, and reloads the certificate on SIGHUP and when
//!   either file changes ([`reload`]).

pub mod listener;
pub mod reload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Which configured file a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `tls.cert_file`: the gateway's own certificate chain.
    Cert,
    /// `tls.key_file`: the gateway's own private key.
    Key,
    /// `tls.ca_file`: the roots trusted for outgoing connections.
    Ca,
    /// `tls.client_cert_file`: the certificate presented to servers.
    ClientCert,
    /// `tls.client_key_file`: its private key.
    ClientKey,
}

/// A TLS file that cannot be used: names the file and says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsError {
    /// Which setting the file belongs to.
    pub which: TlsFile,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    fn new(which: TlsFile, path: &Path, reason: impl Into<String>) -> Self {
        TlsError {
            which,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The crypto provider every TLS configuration here is built with (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every `CERTIFICATE` block of the PEM text `pem` read from `path`;
/// at least one must be there.
pub fn parse_certs(
    which: TlsFile,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(which, path, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            which,
            path,
            "has no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1 PEM) of `pem`.
pub fn parse_key(
    which: TlsFile,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        TlsError::new(
            which,
            path,
            format!("has no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

fn read(which: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(which, path, format!("cannot be read: {e}")))
}

/// Pairs a certificate chain with its key, checking that the key belongs to
/// the first certificate. `which` tells the cert/key settings apart.
pub fn certified_key(
    (cert_which, cert_path, cert_pem): (TlsFile, &Path, &[u8]),
    (key_which, key_path, key_pem): (TlsFile, &Path, &[u8]),
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_which, cert_path, cert_pem)?;
    let key = parse_key(key_which, key_path, key_pem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::new(
            key_which,
            key_path,
            format!(
                "is not the key of the certificate in {}: {e}",
                cert_path.display()
            ),
        )
    })
}

/// Reads the gateway's own certificate and key files (blocking I/O: call at
/// start-up or from `spawn_blocking`).
pub fn load_server_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(TlsFile::Cert, cert)?;
    let key_pem = read(TlsFile::Key, key)?;
    certified_key(
        (TlsFile::Cert, cert, &cert_pem),
        (TlsFile::Key, key, &key_pem),
    )
}

/// Checks every TLS file `tls` names (readable, parses, key matches its
/// certificate), without loading the system's roots. Used by configuration
/// validation so a bad file stops `serve` with the file's name.
pub fn validate(tls: &TlsConfig) -> Result<(), TlsError> {
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        load_server_key(cert, key)?;
    }
    if let Some(ca) = &tls.ca_file {
        root_store_from_file(ca)?;
    }
    client_identity(tls)?;
    Ok(())
}

fn root_store_from_file(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = read(TlsFile::Ca, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(TlsFile::Ca, path, &pem)? {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                TlsFile::Ca,
                path,
                format!("has an unusable CA certificate: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// The system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the platform's
/// store), read once per process.
fn system_roots() -> rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's TLS root certificates");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system TLS root certificates");
            roots
        })
        .clone()
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(tls: &TlsConfig) -> Result<Option<Identity>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) else {
        return Ok(None);
    };
    let chain = parse_certs(TlsFile::ClientCert, cert, &read(TlsFile::ClientCert, cert)?)?;
    let private = parse_key(TlsFile::ClientKey, key, &read(TlsFile::ClientKey, key)?)?;
    CertifiedKey::from_der(chain.clone(), private.clone_key(), &provider()).map_err(|e| {
        TlsError::new(
            TlsFile::ClientKey,
            key,
            format!(
                "is not the key of the certificate in {}: {e}",
                cert.display()
            ),
        )
    })?;
    Ok(Some((chain, private)))
}

/// The TLS side of every outgoing HTTP client: which roots are trusted and
/// which client certificate, if any, is presented. Cheap to clone.
///
/// `ClientTls::default()` is reqwest's TLS with no roots at all: http works,
/// https fails verification. Use [`ClientTls::from_config`] for real clients.
#[derive(Clone, Default)]
pub struct ClientTls(Option<Arc<rustls::ClientConfig>>);

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "ClientTls(configured)",
            None => "ClientTls(none)",
        })
    }
}

impl ClientTls {
    /// Trusts `tls.ca_file` (or, without it, the system's roots) and
    /// presents `tls.client_cert_file` + `tls.client_key_file` when both are
    /// set. Reads the files (blocking; at start-up).
    pub fn from_config(tls: &TlsConfig) -> Result<ClientTls, TlsError> {
        let roots = match &tls.ca_file {
            Some(ca) => root_store_from_file(ca)?,
            None => system_roots(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                TlsError::new(
                    TlsFile::Ca,
                    tls.ca_file.as_deref().unwrap_or(Path::new("-")),
                    format!("TLS set-up failed: {e}"),
                )
            })?
            .with_root_certificates(roots);
        let mut config = match client_identity(tls)? {
            Some((chain, key)) => {
                let path = tls.client_key_file.as_deref().unwrap_or(Path::new("-"));
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError::new(TlsFile::ClientKey, path, format!("cannot be used: {e}"))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls(Some(Arc::new(config))))
    }

    /// Trusts the CA file `ca_file` (or the system's roots) and presents the
    /// client certificate `cert` + `key` when both are given; for the CLI.
    pub fn from_files(
        ca_file: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, TlsError> {
        ClientTls::from_config(&TlsConfig {
            ca_file: ca_file.map(Path::to_path_buf),
            client_cert_file: cert.map(Path::to_path_buf),
            client_key_file: key.map(Path::to_path_buf),
            ..TlsConfig::default()
        })
    }

    /// `builder` with this TLS configuration (unchanged for the default).
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match &self.0 {
            Some(config) => builder.use_preconfigured_tls(config.as_ref().clone()),
            None => builder,
        }
    }
}

/// What went wrong in TLS, in operator's words, if `err` or one of its
/// causes is a rustls error: a certificate the client does not trust, or a
/// handshake the peer refused (e.g. for want of a client certificate).
pub fn explain_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{CertificateError, Error};
    /// `e` as a rustls error, looking through nested `io::Error`s (whose
    /// `source` skips the error they wrap).
    fn rustls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
        loop {
            if let Some(tls) = e.downcast_ref::<Error>() {
                return Some(tls);
            }
            let inner: &(dyn std::error::Error + 'static) =
                e.downcast_ref::<std::io::Error>()?.get_ref()?;
            e = inner;
        }
    }
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = rustls_error(e) {
            return Some(match tls {
                Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    "TLS certificate verification failed: the server's certificate is not \
                     issued by a trusted CA (tls.ca_file or --ca-file; without one, the system's roots)"
                        .to_string()
                }
                Error::InvalidCertificate(CertificateError::NotValidForName)
                | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
                    "TLS certificate verification failed: the server's certificate is not valid \
                     for the host name in its URL"
                        .to_string()
                }
                Error::InvalidCertificate(c) => {
                    format!("TLS certificate verification failed: {c:?}")
                }
                Error::AlertReceived(alert) => format!(
                    "the server refused the TLS handshake ({alert:?}); does it need a client \
                     certificate (tls.client_cert_file)?"
                ),
                other => format!("TLS handshake failed: {other}"),
            });
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
