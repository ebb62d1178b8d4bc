//! TLS for trace export, the same over both OTLP protocols: the roots a
//! collector's certificate is checked against (the CA in
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, or the Mozilla roots compiled in) and
//! the client certificate for mutual TLS (`_CLIENT_CERTIFICATE` and
//! `_CLIENT_KEY`). The files are read, parsed and checked once, at start,
//! into one rustls configuration; tonic (OTLP/gRPC) is given the same
//! roots and identity, and hyper (OTLP/HTTP) the configuration itself. A
//! file that cannot be used stops the start with the variable's name.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{ClientTlsConfig, Identity};

use crate::configuration::OtelSettings;

const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";

/// The TLS an `https://` endpoint is exported to with.
pub struct ExportTls {
    roots: RootCertStore,
    /// The client's certificate chain and key, as PEM (tonic's form).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Built from the same roots and identity (hyper's form).
    rustls: ClientConfig,
}

impl ExportTls {
    /// `None` for an `http://` endpoint; an error names the variable whose
    /// file cannot be used.
    pub fn read(endpoint: &str, otel: &OtelSettings) -> Result<Option<Self>, String> {
        if !is_https(endpoint) {
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        match &otel.certificate {
            Some(path) => {
                for cert in certificates(&read(CERTIFICATE, path)?, CERTIFICATE, path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{CERTIFICATE}: {}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone());
        let (rustls, identity) = match (&otel.client_certificate, &otel.client_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read(CLIENT_CERTIFICATE, cert)?;
                let key_pem = read(CLIENT_KEY, key)?;
                let chain = certificates(&cert_pem, CLIENT_CERTIFICATE, cert)?;
                let parsed = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!("{CLIENT_KEY}: no private key in {}: {e}", key.display())
                })?;
                // Also checks that the key is the certificate's.
                let config = builder.with_client_auth_cert(chain, parsed).map_err(|e| {
                    format!(
                        "{CLIENT_CERTIFICATE} and {CLIENT_KEY}: {} and {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                (config, Some((cert_pem, key_pem)))
            }
            _ => (builder.with_no_client_auth(), None),
        };
        Ok(Some(Self {
            roots,
            identity,
            rustls,
        }))
    }

    /// For tonic (OTLP/gRPC).
    pub fn tonic(&self) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new().trust_anchors(self.roots.roots.iter().cloned());
        match &self.identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
            None => tls,
        }
    }

    /// For hyper (OTLP/HTTP).
    pub fn rustls(&self) -> ClientConfig {
        self.rustls.clone()
    }
}

/// Whether the endpoint's scheme is `https` (in any case, as URIs allow).
pub fn is_https(endpoint: &str) -> bool {
    endpoint
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme() == Some(&http::uri::Scheme::HTTPS))
}

fn read(variable: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{variable}: cannot read {}: {e}", path.display()))
}

/// The certificates in the PEM file `variable` names; at least one.
fn certificates(
    pem: &[u8],
    variable: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{variable}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{variable}: no PEM certificate in {}",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_decides_tls_in_any_case() {
        assert!(is_https("https://collector:4317"));
        assert!(is_https("HTTPS://collector:4317"));
        assert!(!is_https("http://collector:4317"));
        assert!(!is_https("collector:4317"));
    }

    #[test]
    fn an_http_endpoint_reads_no_file() {
        let otel = OtelSettings {
            certificate: Some("/nonexistent/ca.pem".into()),
            ..OtelSettings::default()
        };
        assert!(matches!(ExportTls::read("http://c:4317", &otel), Ok(None)));
        let Err(e) = ExportTls::read("https://c:4317", &otel) else {
            panic!("the control: an https endpoint reads the CA");
        };
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_client_key_that_is_not_the_certificates_stops_the_start() {
        use rcgen::{CertificateParams, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write");
            path
        };
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["switchyard".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let other = KeyPair::generate().expect("another key");
        let otel = |key_pem: String| OtelSettings {
            certificate: Some(write("ca.pem", cert.pem())),
            client_certificate: Some(write("client.pem", cert.pem())),
            client_key: Some(write("client-key.pem", key_pem)),
            ..OtelSettings::default()
        };
        // The control: the certificate's own key.
        assert!(matches!(
            ExportTls::read("https://c:4317", &otel(key.serialize_pem())),
            Ok(Some(_))
        ));
        let Err(e) = ExportTls::read("https://c:4317", &otel(other.serialize_pem())) else {
            panic!("a key that is not the certificate's is refused");
        };
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
                && e.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            "{e}"
        );
    }
}
