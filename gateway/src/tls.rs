//! TLS: the listener's certificate, reloaded when its files change, and the site CA bundle
//! outbound calls trust.
//!
//! With `TLS_CERT_FILE` and `TLS_KEY_FILE` the gateway serves HTTPS only (rustls, TLS 1.2 and
//! 1.3, ring). The files are checked every few seconds; a changed pair that loads replaces the
//! one in use for new connections, with no restart; a pair that does not load (half-written,
//! mismatched, not PEM) is refused with a warning and an alert, and the one in use stays.
//! `CA_BUNDLE_FILE` adds a site CA (air-gapped sites run private ones) to the roots every
//! outbound client trusts: `PROXY_TARGET`, alert webhooks, the sidecar's heartbeats.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// The certificate the listener presents, swapped whole when its files change.
#[derive(Debug)]
pub(crate) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

/// Size and modification time of both files: what a change looks like.
type Stamp = [(u64, Option<SystemTime>); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.len(), m.modified().ok()))
            .unwrap_or((0, None))
    };
    [one(cert), one(key)]
}

/// Loads a PEM certificate chain and its private key, checking that they belong together.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))
    };
    let cert_pem = read(cert, "certificate")?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_pem = read(key, "private key")?;
    let der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{} is not PEM: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "{} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
                key.display()
            )
        })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "the private key {} does not belong to the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

impl Reloading {
    pub(crate) fn open(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let s = stamp(cert, key);
        let loaded = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((s, Arc::new(loaded))),
        }))
    }

    /// Loads the files again if they changed; `Some(Err)` when a changed pair was refused.
    pub(crate) fn refresh(&self) -> Option<Result<(), String>> {
        let s = stamp(&self.cert, &self.key);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == s {
            return None;
        }
        let result = load(&self.cert, &self.key);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(k) => {
                *current = (s, Arc::new(k));
                Some(Ok(()))
            }
            Err(e) => {
                // Remember the refused pair, so it is reported once, not every interval.
                current.0 = s;
                Some(Err(e))
            }
        }
    }

    /// The TLS acceptor presenting this certificate (HTTP/1.1 only, as the listener serves).
    /// With `client_ca`, a client may present a certificate, which must chain to one of its CAs
    /// (a connection with any other certificate is refused in the handshake); one without a
    /// certificate is accepted, and the admin API refuses its requests.
    pub(crate) fn acceptor(
        self: &Arc<Self>,
        client_ca: Option<&Path>,
    ) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(p) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    client_roots(p)?,
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("ADMIN_CLIENT_CA_FILE {}: {e}", p.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()).1,
        ))
    }
}

/// Checks the certificate files every `every` and takes a changed pair that loads.
pub(crate) fn spawn_reloader(
    certs: Arc<Reloading>,
    alerts: crate::alerts::Alerts,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = Arc::clone(&certs);
            let outcome = tokio::task::spawn_blocking(move || c.refresh())
                .await
                .ok()
                .flatten();
            match outcome {
                Some(Ok(())) => {
                    tracing::info!(cert = %certs.cert.display(), "TLS certificate reloaded; new connections present it");
                }
                Some(Err(e)) => {
                    tracing::warn!("TLS certificate not reloaded: {e}; the one in use stays");
                    alerts.raise(crate::alerts::Alert::system(
                        "TLS Certificate Refused",
                        &format!("{e}; the certificate in use stays"),
                    ));
                }
                None => {}
            }
        }
    });
}

/// The CAs of `ADMIN_CLIENT_CA_FILE`, whose client certificates the admin API accepts.
pub(crate) fn client_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read ADMIN_CLIENT_CA_FILE {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| {
            format!(
                "ADMIN_CLIENT_CA_FILE {} is not a PEM bundle: {e}",
                path.display()
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "ADMIN_CLIENT_CA_FILE {} holds a certificate that is not a CA: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ADMIN_CLIENT_CA_FILE {} holds no certificate",
            path.display()
        ));
    }
    Ok(Arc::new(roots))
}

/// A verified client certificate on the connection a request came in on (its SHA-256), set by
/// the TLS listener; the admin API requires one when `ADMIN_CLIENT_CA_FILE` is set.
#[derive(Debug, Clone)]
pub(crate) struct ClientCert {
    pub(crate) sha256: String,
}

/// The site CA bundle's certificates, for outbound clients.
pub(crate) fn extra_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read CA_BUNDLE_FILE {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA_BUNDLE_FILE {} is not a PEM bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA_BUNDLE_FILE {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client builder trusting the built-in roots and the site's, and following no redirect:
/// every outbound call of the gateway (upstream, alerts, witnesses) goes where it was sent and
/// nowhere a receiver bounces it to.
pub(crate) fn client_builder(roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    roots
        .iter()
        .fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .redirect(reqwest::redirect::Policy::none())
}
