//! HTTPS served by pipelet itself (`--tls-cert`/`--tls-key`), without a proxy: rustls
//! on the ring provider, ALPN `h2` then `http/1.1`, and a certificate that
//! [`TlsCertificate::reload`] swaps (on SIGHUP, see [`reload_on_sighup`]) for the
//! connections that follow, while open ones keep the one they started with.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished its TLS handshake by then is dropped: it would
/// otherwise hold a task, and a graceful shutdown, for as long as it liked.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not one connection's (e.g. out of file
/// descriptors), as `axum::serve` does, rather than spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The certificate chain and private key served, read from their PEM files, and
/// re-read from the same files by [`TlsCertificate::reload`].
pub struct TlsCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl TlsCertificate {
    /// Reads the certificate chain (`cert_path`, PEM, leaf first) and its private key
    /// (`key_path`, PEM: PKCS#8, PKCS#1 or SEC1). Fails, naming the file, if either
    /// cannot be read or parsed, or if the key is not the certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<TlsCertificate>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read_certified_key(&provider, cert_path, key_path)?;
        Ok(Arc::new(TlsCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Re-reads both files; connections accepted from now on get the new certificate.
    /// On an error the certificate served so far stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read_certified_key(&self.provider, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate file (`--tls-cert`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The rustls configuration of the connections: this certificate (as it is at each
    /// handshake), TLS 1.2 and 1.3, HTTP/2 preferred over HTTP/1.1.
    fn server_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for TlsCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reads and checks one certificate chain and key; every error names its flag and file.
fn read_certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<CertifiedKey> {
    let cert_file = cert_path.display();
    let key_file = key_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("--tls-cert", &cert_file, "certificate", e))?;
    if chain.is_empty() {
        anyhow::bail!(
            "--tls-cert {cert_file}: no certificate in the file (expected PEM \
             \"-----BEGIN CERTIFICATE-----\" blocks)"
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
        PemError::NoItemsFound => anyhow!(
            "--tls-key {key_file}: no private key in the file (expected a PEM \
             \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)"
        ),
        e => pem_error("--tls-key", &key_file, "private key", e),
    })?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("--tls-key {key_file}: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => anyhow::bail!(
            "--tls-key {key_file} is not the private key of the certificate in \
             --tls-cert {cert_file} ({e})"
        ),
    }
    Ok(certified)
}

/// A PEM file that cannot be read, or is not PEM, as a start or reload error.
fn pem_error(flag: &str, file: &dyn std::fmt::Display, what: &str, e: PemError) -> anyhow::Error {
    match e {
        PemError::Io(e) => anyhow!("{flag} {file}: cannot read the file: {e}"),
        e => anyhow!("{flag} {file}: not a valid PEM {what}: {e}"),
    }
}

/// Reloads `tls` on each SIGHUP until `stop`; a failed reload is logged and the
/// current certificate kept. The handler is installed by this call, before the returned
/// future first runs, so a SIGHUP right after the start cannot end the process.
#[cfg(unix)]
pub fn reload_on_sighup(
    tls: Arc<TlsCertificate>,
    stop: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                () = stop.cancelled() => return,
            }
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.cert_path.display(),
                    "SIGHUP: TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: cannot reload the TLS certificate; still serving the previous one"
                ),
            }
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then, as
/// `axum::serve` with its graceful shutdown, stops accepting, lets each open connection
/// finish its requests and returns once all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: &Arc<TlsCertificate>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls.server_config()?));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As axum::serve: extended CONNECT (WebSockets over HTTP/2).
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Taken before the shutdown signal can be sent, so it reaches this connection
        // even while its handshake is still under way.
        let watcher = graceful.watcher();
        let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            // What `into_make_service_with_connect_info` gives handlers without TLS.
            let app = app.map_request(move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(app),
            );
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one incoming connection (it was reset before it was accepted): the next
/// accept is unaffected.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
