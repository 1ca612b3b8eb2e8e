//! The rustls client configuration of a connector that reaches its target over TLS: a CA
//! bundle (or the system's roots) and an optional client certificate, on the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ConnectorError;

/// Where the TLS material is; each problem names its parameter (`ca_file`, `client_cert_file`,
/// `client_key_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert_file: Option<&'a Path>,
    pub client_key_file: Option<&'a Path>,
}

/// The client configuration the files describe.
pub fn client_config(files: &TlsFiles<'_>) -> Result<rustls::ClientConfig, ConnectorError> {
    let bad = |parameter: &str, m: String| ConnectorError::config(parameter, format!("{parameter}: {m}"));
    let mut roots = rustls::RootCertStore::empty();
    match files.ca_file {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad("ca_file", format!("cannot read {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(bad("ca_file", format!("{} holds no PEM certificate", file.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad("ca_file", format!("{}: {e}", file.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::config("ca_file", format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (files.client_cert_file, files.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad("client_cert_file", format!("cannot read {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad("client_key_file", format!("cannot read {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad("client_cert_file", e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(bad("client_key_file", "is required with client_cert_file".into())),
        (None, Some(_)) => Err(bad("client_cert_file", "is required with client_key_file".into())),
    }
}
