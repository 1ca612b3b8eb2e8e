//! The SCIM listener's transport: TLS by rustls (TLS 1.2 and 1.3, ring provider), certificate
//! and key from PEM files and reloaded when they change; plain HTTP only when the configuration
//! says so. Also `supervisor cert generate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsConfig;

/// Installs ring as the process's rustls provider (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the certificate chain and key, with errors that name the files.
pub async fn load(tls: &TlsConfig) -> anyhow::Result<RustlsConfig> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file).await.with_context(|| {
        format!(
            "server.tls: cannot load the certificate {} and key {} (PEM files; `supervisor cert generate` \
             writes a pair for trying things out)",
            tls.cert_file.display(),
            tls.key_file.display()
        )
    })
}

/// Serves `router` on `listener` until `handle` shuts it down: TLS when `tls` is given.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    handle: Handle<SocketAddr>,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => axum_server::from_tcp_rustls(listener, config)?.handle(handle).serve(service).await,
        None => axum_server::from_tcp(listener)?.handle(handle).serve(service).await,
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the certificate and key whenever either file changes (checked every `interval`).
/// A pair that fails to load is reported and the previous one kept.
pub async fn reload_on_change(config: RustlsConfig, tls: TlsConfig, interval: Duration) {
    let stamp = |tls: &TlsConfig| (modified(&tls.cert_file), modified(&tls.key_file));
    let mut seen = stamp(&tls);
    loop {
        tokio::time::sleep(interval).await;
        let now = stamp(&tls);
        if now == seen {
            continue;
        }
        match config.reload_from_pem_file(&tls.cert_file, &tls.key_file).await {
            Ok(()) => {
                tracing::info!(cert = %tls.cert_file.display(), "TLS certificate reloaded");
                seen = now;
            }
            // Often the certificate was replaced before its key: try again at the next tick.
            Err(error) => {
                tracing::warn!(%error, cert = %tls.cert_file.display(), "TLS certificate not reloaded; keeping the previous one")
            }
        }
    }
}

/// Writes a self-signed certificate and key for `names` into `dir` (cert.pem, key.pem, the key
/// readable by its owner only). For trying things out: clients must be told to trust it.
pub fn generate_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let certified =
        rcgen::generate_simple_self_signed(names.to_vec()).context("while generating the certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())
        .with_context(|| format!("while writing {}", cert.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| f.write_all(certified.signing_key.serialize_pem().as_bytes()))
        .with_context(|| format!("while writing {}", key.display()))?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_pairs_load() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        let (cert, key) = generate_self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let tls =
            TlsConfig { cert_file: cert, key_file: key.clone(), reload_interval: Duration::from_secs(5) };
        assert!(load(&tls).await.is_ok());
        std::fs::write(&key, "not a key").unwrap();
        let error = load(&tls).await.unwrap_err().to_string();
        assert!(error.contains("server.tls") && error.contains("key.pem"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
