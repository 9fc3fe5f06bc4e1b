//! The gateway's own certificate, replaceable while it serves.
//!
//! [`ServerCert`] answers every TLS handshake with the certificate it holds
//! now. [`ServerCert::watch`] reloads it on SIGHUP and when the certificate
//! or key file changes (size or modification time, polled). A reload that
//! fails (unreadable file, bad PEM, a key that is not the certificate's)
//! keeps the old certificate and logs an error naming the file; it is tried
//! again on the next SIGHUP or the next change of either file.
//!
//! Metrics: `chroma_ha_tls_cert_reloads_total{result="ok"|"error"}` and
//! `chroma_ha_tls_cert_loaded_timestamp_seconds` (Unix time of the last
//! successful load, start-up included).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounterVec, Opts, Registry};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{certified_key, load_server_key, provider, TlsError, TlsFile};

/// How often the certificate and key files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// The certificate reload metrics.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    reloads: IntCounterVec,
    loaded_at: Gauge,
}

impl TlsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, String> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "tls_cert_reloads_total",
                "Reloads of the gateway's TLS certificate, by result (ok, error)",
            )
            .namespace("chroma_ha"),
            &["result"],
        )
        .map_err(|e| e.to_string())?;
        let loaded_at = Gauge::with_opts(
            Opts::new(
                "tls_cert_loaded_timestamp_seconds",
                "Unix time the certificate now served was loaded",
            )
            .namespace("chroma_ha"),
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(reloads.clone()))
            .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(loaded_at.clone()))
            .map_err(|e| e.to_string())?;
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        Ok(TlsMetrics { reloads, loaded_at })
    }

    fn loaded_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.loaded_at.set(now);
    }
}

/// The certificate and key the gateway serves, from two PEM files.
#[derive(Debug)]
pub struct ServerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    metrics: TlsMetrics,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What is known of the two files' versions: size and modification time.
type Stamp = Option<(u64, SystemTime)>;

async fn stamp(path: &Path) -> Stamp {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Stops the watch task when dropped.
#[derive(Debug)]
pub struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ServerCert {
    /// Loads the certificate chain in `cert_file` and the key in `key_file`
    /// (blocking I/O; at start-up).
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        metrics: TlsMetrics,
    ) -> Result<Arc<ServerCert>, TlsError> {
        let key = load_server_key(cert_file, key_file)?;
        metrics.loaded_now();
        Ok(Arc::new(ServerCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            metrics,
        }))
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A rustls server configuration that serves whatever this holds at
    /// each handshake (HTTP/1.1, TLS 1.2 and 1.3, no client certificates).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                which: TlsFile::Cert,
                path: self.cert_file.clone(),
                reason: format!("TLS set-up failed: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads both files again and, if they make a valid pair, serves them
    /// from the next handshake on; otherwise keeps the old certificate.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let result = async {
            let cert_pem = tokio::fs::read(&self.cert_file)
                .await
                .map_err(|e| TlsError {
                    which: TlsFile::Cert,
                    path: self.cert_file.clone(),
                    reason: format!("cannot be read: {e}"),
                })?;
            let key_pem = tokio::fs::read(&self.key_file)
                .await
                .map_err(|e| TlsError {
                    which: TlsFile::Key,
                    path: self.key_file.clone(),
                    reason: format!("cannot be read: {e}"),
                })?;
            certified_key(
                (TlsFile::Cert, &self.cert_file, &cert_pem),
                (TlsFile::Key, &self.key_file, &key_pem),
            )
        }
        .await;
        match result {
            Ok(key) => {
                match self.current.write() {
                    Ok(mut guard) => *guard = Arc::new(key),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
                }
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                self.metrics.loaded_now();
                Ok(())
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                Err(e)
            }
        }
    }

    async fn stamps(&self) -> (Stamp, Stamp) {
        (stamp(&self.cert_file).await, stamp(&self.key_file).await)
    }

    /// Reloads on SIGHUP and whenever either file changes (checked every
    /// `poll`), until the returned task is dropped. Must be called inside a
    /// Tokio runtime.
    pub fn watch(self: &Arc<Self>, poll: Duration) -> WatchTask {
        let this = self.clone();
        WatchTask(tokio::spawn(async move {
            let mut hangup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate reloads only when its files change");
                    None
                }
            };
            let mut seen = this.stamps().await;
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                    _ = ticker.tick() => {
                        let now = this.stamps().await;
                        if now == seen {
                            continue;
                        }
                        "the files changed"
                    }
                };
                seen = this.stamps().await;
                match this.reload().await {
                    Ok(()) => tracing::info!(
                        cert_file = %this.cert_file.display(),
                        key_file = %this.key_file.display(),
                        reason = why,
                        "reloaded the TLS certificate"
                    ),
                    Err(e) => tracing::error!(
                        file = %e.path.display(),
                        error = %e,
                        reason = why,
                        "reloading the TLS certificate failed; still serving the previous one"
                    ),
                }
            }
        }))
    }
}
