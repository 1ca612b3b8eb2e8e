//! The connection to the directory: TLS by rustls, bind, reconnection, and the mapping of LDAP
//! result codes to the protocol's error kinds.

use std::sync::Arc;

use ecma_connector_sdk::error_status;
use ecma_proto::v1::ErrorKind;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Scope, SearchEntry};
use tokio::sync::Mutex;
use tonic::Status;

use crate::settings::{Bind, Security, Settings};

/// An error of one LDAP operation, with its protocol kind.
#[derive(Debug, Clone)]
pub struct OpError {
    pub kind: ErrorKind,
    pub detail: String,
    /// The LDAP result code, when the server answered.
    pub rc: Option<u32>,
    /// A write whose request may have reached the server, which did not answer (the connection
    /// broke or the deadline passed): it may or may not have been applied.
    pub unknown_outcome: bool,
}

impl OpError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), rc: None, unknown_outcome: false }
    }

    pub fn status(&self) -> Status {
        error_status(self.kind, self.detail.clone())
    }

    /// Whether the connection itself broke (a client-side timeout leaves it usable).
    pub fn is_broken_connection(&self) -> bool {
        self.rc.is_none() && self.kind == ErrorKind::ConnectionFailed
    }
}

impl From<OpError> for Status {
    fn from(e: OpError) -> Status {
        e.status()
    }
}

/// Result codes (RFC 4511 appendix A) as protocol error kinds.
pub fn kind_of_rc(rc: u32) -> ErrorKind {
    match rc {
        0 => ErrorKind::None,
        68 => ErrorKind::AlreadyExists, // entryAlreadyExists
        32 => ErrorKind::NoSuchObject,  // noSuchObject
        16 | 18 | 20 | 21 => ErrorKind::InvalidAttributeValue, // noSuchAttribute, inappropriateMatching, attributeOrValueExists, invalidAttributeSyntax
        19 => ErrorKind::ConstraintViolation, // constraintViolation (e.g. unique, password policy)
        17 | 65 | 67 | 69 => ErrorKind::SchemaViolation, // undefinedAttributeType, objectClassViolation, notAllowedOnRDN, objectClassModsProhibited
        64 => ErrorKind::InvalidDn,                      // namingViolation
        34 => ErrorKind::InvalidDn,                      // invalidDNSyntax
        50 | 8 | 13 | 48 | 49 => ErrorKind::PermissionDenied, // insufficientAccessRights, strongerAuthRequired, confidentialityRequired, inappropriateAuthentication, invalidCredentials
        51 | 52 | 80 => ErrorKind::Retryable,                 // busy, unavailable, other
        3 => ErrorKind::Timeout,                              // timeLimitExceeded
        53 | 66 => ErrorKind::ConstraintViolation,            // unwillingToPerform, notAllowedOnNonLeaf
        12 | 2 => ErrorKind::Unsupported,                     // unavailableCriticalExtension, protocolError
        _ => ErrorKind::Internal,
    }
}

/// The name of a result code, for messages.
fn rc_name(rc: u32) -> &'static str {
    match rc {
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        _ => "error",
    }
}

/// An operation's error from an LDAP result.
pub fn result_error(what: &str, result: &LdapResult) -> OpError {
    let text = if result.text.is_empty() { String::new() } else { format!(": {}", result.text) };
    OpError {
        unknown_outcome: false,
        kind: kind_of_rc(result.rc),
        detail: format!("{what}: {} ({}){text}", rc_name(result.rc), result.rc),
        rc: Some(result.rc),
    }
}

/// An operation's error from the client library (I/O, TLS, timeouts).
pub fn client_error(what: &str, e: &LdapError) -> OpError {
    match e {
        LdapError::LdapResult { result } => result_error(what, result),
        LdapError::Timeout { .. } => {
            OpError::new(ErrorKind::Timeout, format!("{what}: the server did not answer in time"))
        }
        LdapError::Rustls { source } => {
            OpError::new(ErrorKind::ConnectionFailed, format!("{what}: TLS failure: {source}"))
        }
        LdapError::Io { source } if source.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            OpError::new(ErrorKind::ConnectionFailed, format!("{what}: TLS failure: {source}"))
        }
        other => OpError::new(ErrorKind::ConnectionFailed, format!("{what}: {other}")),
    }
}

/// Checks an LDAP result, turning a non-success into an [`OpError`].
pub fn check(what: &str, result: Result<LdapResult, LdapError>) -> Result<LdapResult, OpError> {
    match result {
        Ok(r) if r.rc == 0 => Ok(r),
        Ok(r) => Err(result_error(what, &r)),
        Err(e) => Err(client_error(what, &e)),
    }
}

/// The rustls client configuration for `settings`: its CA bundle (or the system's roots) and
/// its client certificate.
fn tls_config(settings: &Settings) -> Result<Arc<rustls::ClientConfig>, OpError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |m: String| OpError::new(ErrorKind::InvalidConfiguration, m);
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("ca_file: cannot read {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("ca_file: {} holds no PEM certificate", file.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(format!("ca_file: {}: {e}", file.display())))?;
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
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("client_cert_file: cannot read {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(format!("client_key_file: cannot read {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(format!("client_cert_file: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// One directory connection, opened on first use and again after it drops.
pub struct Directory {
    pub settings: Settings,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Mutex<Slot>,
}

/// The current connection, and how many have been opened.
#[derive(Default)]
struct Slot {
    generation: u64,
    ldap: Option<Ldap>,
}

impl Directory {
    pub fn new(settings: Settings) -> Result<Self, OpError> {
        let tls = match settings.security {
            Security::Plain => None,
            _ => Some(tls_config(&settings)?),
        };
        Ok(Self { settings, tls, conn: Mutex::new(Slot::default()) })
    }

    /// Connects, secures and binds a new connection.
    async fn connect(&self) -> Result<Ldap, OpError> {
        let s = &self.settings;
        let mut conn_settings = LdapConnSettings::new().set_conn_timeout(s.connect_timeout);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        conn_settings = conn_settings.set_starttls(s.security == Security::StartTls);
        let connect = async {
            let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &s.url)
                .await
                .map_err(|e| client_error(&format!("connecting to {}", s.url), &e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.drive().await {
                    tracing::warn!(error = %e, "the directory connection ended");
                }
            });
            match &s.bind {
                Bind::Anonymous => {}
                Bind::Simple { dn, password } => {
                    check(&format!("binding as {dn:?}"), ldap.simple_bind(dn, password).await)?;
                }
                Bind::External => {
                    check("SASL EXTERNAL bind with the client certificate", ldap.sasl_external_bind().await)?;
                }
            }
            Ok::<_, OpError>(ldap)
        };
        match tokio::time::timeout(s.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(OpError::new(
                ErrorKind::Timeout,
                format!("connecting to {}: no answer within {:?}", s.url, s.connect_timeout),
            )),
        }
    }

    /// A live connection: the current one, or a new one when it dropped.
    pub async fn ldap(&self) -> Result<Ldap, OpError> {
        Ok(self.connection().await?.1)
    }

    /// A live connection and its generation (which connection of this directory it is).
    async fn connection(&self) -> Result<(u64, Ldap), OpError> {
        let mut slot = self.conn.lock().await;
        if let Some(ldap) = slot.ldap.as_mut()
            && !ldap.is_closed()
        {
            let mut ldap = ldap.clone();
            ldap.with_timeout(self.settings.operation_timeout);
            return Ok((slot.generation, ldap));
        }
        if slot.ldap.is_some() {
            tracing::info!(url = %self.settings.url, "reconnecting to the directory");
        }
        let ldap = self.connect().await?;
        slot.generation += 1;
        slot.ldap = Some(ldap.clone());
        let mut ldap = ldap;
        ldap.with_timeout(self.settings.operation_timeout);
        Ok((slot.generation, ldap))
    }

    /// Forgets connection `generation` after it failed, so that the next call reconnects; a
    /// newer connection (opened by a concurrent call meanwhile) is left alone.
    async fn reset(&self, generation: u64) {
        let mut slot = self.conn.lock().await;
        if slot.generation == generation
            && let Some(mut ldap) = slot.ldap.take()
        {
            let _ = ldap.unbind().await;
        }
    }

    /// Runs a read-only operation, once more on a new connection if the connection failed.
    pub async fn read<T, F, Fut>(&self, op: F) -> Result<T, OpError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpError>>,
    {
        let (generation, ldap) = self.connection().await?;
        match op(ldap).await {
            Err(e) if e.is_broken_connection() => {
                self.reset(generation).await;
                op(self.ldap().await?).await
            }
            other => other,
        }
    }

    /// Runs a write; a broken connection is dropped. A write that met a broken connection or
    /// its deadline after it was sent has an unknown outcome: it is not repeated here, and is
    /// marked so that the supervisor reconciles it (a connection that could not be opened
    /// fails before anything is sent: a definite failure).
    pub async fn write<T, F, Fut>(&self, op: F) -> Result<T, OpError>
    where
        F: FnOnce(Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpError>>,
    {
        let (generation, ldap) = self.connection().await?;
        let mut result = op(ldap).await;
        if let Err(e) = &mut result
            && e.rc.is_none()
            && matches!(e.kind, ErrorKind::ConnectionFailed | ErrorKind::Timeout)
        {
            e.unknown_outcome = true;
            if e.is_broken_connection() {
                self.reset(generation).await;
            }
        }
        result
    }

    /// Base-scope read of one entry; `None` when it does not exist.
    pub async fn read_entry(&self, dn: &str, attrs: &[&str]) -> Result<Option<SearchEntry>, OpError> {
        Ok(self.search(dn, Scope::Base, "(objectClass=*)", attrs).await?.into_iter().next())
    }

    /// A search (not paged: for results known to be small); a missing base finds nothing.
    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, OpError> {
        let attrs: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
        let what = format!("searching {base:?} for {filter}");
        self.read(|mut ldap| {
            let attrs = attrs.clone();
            let what = &what;
            async move {
                let result =
                    ldap.search(base, scope, filter, attrs).await.map_err(|e| client_error(what, &e))?;
                if result.1.rc == 32 {
                    return Ok(vec![]);
                }
                let (entries, _) = result.success().map_err(|e| client_error(what, &e))?;
                Ok(entries.into_iter().map(SearchEntry::construct).collect())
            }
        })
        .await
    }

    /// The root DSE.
    pub async fn root_dse(&self) -> Result<SearchEntry, OpError> {
        let attrs = [
            "namingContexts",
            "supportedControl",
            "supportedExtension",
            "subschemaSubentry",
            "vendorName",
            "supportedSASLMechanisms",
            "changelog",
        ];
        self.read_entry("", &attrs)
            .await?
            .ok_or_else(|| OpError::new(ErrorKind::ConnectionFailed, "the server has no root DSE"))
    }
}

/// The first value of an attribute, case-insensitively.
pub fn first<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a str> {
    values(entry, name).first().map(String::as_str)
}

/// The values of an attribute, case-insensitively.
pub fn values<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_map_to_kinds() {
        assert_eq!(kind_of_rc(68), ErrorKind::AlreadyExists);
        assert_eq!(kind_of_rc(32), ErrorKind::NoSuchObject);
        assert_eq!(kind_of_rc(19), ErrorKind::ConstraintViolation);
        assert_eq!(kind_of_rc(50), ErrorKind::PermissionDenied);
        assert_eq!(kind_of_rc(65), ErrorKind::SchemaViolation);
        assert_eq!(kind_of_rc(34), ErrorKind::InvalidDn);
        let e = result_error(
            "adding x",
            &LdapResult {
                rc: 68,
                matched: String::new(),
                text: "exists".into(),
                refs: vec![],
                ctrls: vec![],
            },
        );
        assert_eq!(e.detail, "adding x: entryAlreadyExists (68): exists");
        assert!(!e.is_broken_connection());
    }
}
