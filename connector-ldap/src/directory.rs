//! The connection to the directory: TLS by rustls, bind, reconnection, and the mapping of LDAP
//! result codes to the protocol's error kinds.

use std::collections::HashMap;
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

/// `host:port` of an LDAP URL, with the scheme's default port when it names none.
fn host_port(url: &str) -> String {
    let (rest, default_port) = match url.strip_prefix("ldaps://") {
        Some(rest) => (rest, 636),
        None => (url.trim_start_matches("ldap://"), 389),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    // An IPv6 literal ([::1]) has colons of its own: a port comes after its closing bracket.
    let has_port = authority[authority.rfind(']').map_or(0, |i| i + 1)..].contains(':');
    if has_port { authority.to_string() } else { format!("{authority}:{default_port}") }
}

/// The rustls error inside a client library error, if it is one.
fn tls_error_of(e: &LdapError) -> Option<&rustls::Error> {
    match e {
        LdapError::Rustls { source } => Some(source),
        LdapError::Io { source } => source.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// A failure to open and secure a connection (before the bind), saying what to change.
pub fn connect_error(settings: &Settings, e: &LdapError) -> OpError {
    let what = format!("connecting to {}", settings.url);
    if let Some(tls) = tls_error_of(e) {
        let hint = match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "; the host in url must be a name (or address) the directory's certificate holds".to_string()
                }
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. }
                | rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. } => {
                    "; the directory's certificate is outside its validity period (or this host's clock is wrong)"
                        .to_string()
                }
                _ => match &settings.ca_file {
                    Some(file) => format!(
                        "; the directory's certificate is not signed by a CA of ca_file ({}): set ca_file to the PEM bundle of the CA that issued it",
                        file.display()
                    ),
                    None => "; the directory's certificate is not signed by a CA among the system's roots: set ca_file to the PEM bundle of the CA that issued it".to_string(),
                },
            },
            _ => String::new(),
        };
        return OpError::new(ErrorKind::ConnectionFailed, format!("{what}: TLS failure: {tls}{hint}"));
    }
    match e {
        // Before the connection is handed back, the only LDAP operation is the StartTLS request.
        LdapError::LdapResult { result } if settings.security == Security::StartTls => {
            let mut error = result_error(&format!("{what}: the directory refused StartTLS"), result);
            error.detail.push_str(
                "; use an ldaps:// url if the directory offers it (usually port 636), or set security = \"none\" (clear text; LDAP_SECURITY=none with deploy/examples/ldap.toml) only for a directory on loopback or a trusted network",
            );
            error
        }
        LdapError::Io { source }
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) =>
        {
            let reason = match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                std::io::ErrorKind::HostUnreachable => "host unreachable",
                _ => "network unreachable",
            };
            OpError::new(
                ErrorKind::ConnectionFailed,
                format!(
                    "{what}: the directory is not reachable at {} ({reason}): check the host and port in url, and that the server is running",
                    host_port(&settings.url)
                ),
            )
        }
        other => client_error(&what, other),
    }
}

/// A failed bind, saying which parameters to check (never the password itself).
pub fn bind_error(bind: &Bind, e: &LdapError) -> OpError {
    let what = match bind {
        Bind::Simple { dn, .. } => format!("binding as {dn:?}"),
        Bind::External => "SASL EXTERNAL bind with the client certificate".to_string(),
        Bind::Anonymous => "anonymous bind".to_string(),
    };
    let mut error = client_error(&what, e);
    let hint = match (bind, error.rc) {
        (Bind::Simple { .. }, Some(49)) => {
            "; the directory refused this bind_dn with this bind_password: check both parameters (a bind_dn that does not exist gets the same answer)"
        }
        (_, Some(8 | 13)) => {
            "; the directory requires TLS for this bind: use StartTLS (security = \"starttls\") or an ldaps:// url"
        }
        (Bind::External, Some(48..=50)) => {
            "; the directory did not map the certificate of client_cert_file to an identity allowed to bind"
        }
        _ => "",
    };
    error.detail.push_str(hint);
    error
}

/// A search whose base does not exist (noSuchObject), naming the setting that gives the base.
pub fn missing_base(what: &str, base: &str, setting: &str, result: &LdapResult) -> OpError {
    let mut error = result_error(&format!("{what}: the base {base:?} does not exist"), result);
    error.detail.push_str(&format!("; check {setting}"));
    error
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
    let files = ecma_connector_sdk::tls::TlsFiles {
        ca_file: settings.ca_file.as_deref(),
        client_cert_file: settings.client_cert_file.as_deref(),
        client_key_file: settings.client_key_file.as_deref(),
    };
    let config =
        ecma_connector_sdk::tls::client_config(&files).map_err(|e| OpError::new(e.kind, e.detail))?;
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
                .map_err(|e| connect_error(s, &e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.drive().await {
                    tracing::warn!(error = %e, "the directory connection ended");
                }
            });
            let bound = match &s.bind {
                Bind::Anonymous => None,
                Bind::Simple { dn, password } => Some(ldap.simple_bind(dn, password).await),
                Bind::External => Some(ldap.sasl_external_bind().await),
            };
            match bound {
                None => {}
                Some(Ok(r)) if r.rc == 0 => {}
                Some(Ok(r)) => return Err(bind_error(&s.bind, &LdapError::LdapResult { result: r })),
                Some(Err(e)) => return Err(bind_error(&s.bind, &e)),
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
                entries.into_iter().map(|raw| self.entry(raw)).collect()
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

/// The attribute whose values are always binary: an `objectGUID` anchor (16 bytes, which may
/// happen to be valid UTF-8).
pub fn binary_attribute(settings: &Settings) -> Option<&str> {
    settings.anchor.eq_ignore_ascii_case("objectGUID").then_some(settings.anchor.as_str())
}

impl Directory {
    /// An entry of a search result, as [`entry_of`] takes it apart for this directory.
    pub fn entry(&self, raw: ldap3::ResultEntry) -> Result<SearchEntry, OpError> {
        entry_of(raw, binary_attribute(&self.settings))
    }
}

/// An entry of a search result (RFC 4511 `SearchResultEntry`) as `ldap3`'s [`SearchEntry`],
/// taken apart without copying its values, and refused with an error when it is malformed
/// (`SearchEntry::construct` copies every value and panics on a malformed entry). An attribute
/// with any value that is not UTF-8, or named `binary`, goes to `bin_attrs`, all its values with
/// it, in the order the server sent them.
pub fn entry_of(raw: ldap3::ResultEntry, binary: Option<&str>) -> Result<SearchEntry, OpError> {
    let malformed =
        || OpError::new(ErrorKind::Internal, "the directory sent a malformed search result entry");
    let text = |tag: Option<ldap3::asn1::StructureTag>| {
        tag.and_then(|t| t.expect_primitive()).and_then(|bytes| String::from_utf8(bytes).ok())
    };
    let mut parts = raw.0.match_id(4).and_then(|t| t.expect_constructed()).ok_or_else(malformed)?.into_iter();
    let dn = text(parts.next()).ok_or_else(malformed)?;
    let attributes = parts.next().and_then(|t| t.expect_constructed()).ok_or_else(malformed)?;
    let mut entry =
        SearchEntry { dn, attrs: HashMap::with_capacity(attributes.len()), bin_attrs: HashMap::new() };
    for attribute in attributes {
        let mut pair = attribute.expect_constructed().ok_or_else(malformed)?.into_iter();
        let name = text(pair.next()).ok_or_else(malformed)?;
        let mut raw_values = pair
            .next()
            .and_then(|t| t.expect_constructed())
            .ok_or_else(malformed)?
            .into_iter()
            .map(|t| t.expect_primitive().ok_or_else(malformed));
        let mut texts = Vec::new();
        let mut first_binary = None;
        if !binary.is_some_and(|b| b.eq_ignore_ascii_case(&name)) {
            for value in raw_values.by_ref() {
                match String::from_utf8(value?) {
                    Ok(s) => texts.push(s),
                    Err(e) => {
                        first_binary = Some(e.into_bytes());
                        break;
                    }
                }
            }
            if first_binary.is_none() {
                entry.attrs.entry(name).or_default().extend(texts);
                continue;
            }
        }
        let rest = raw_values.collect::<Result<Vec<_>, _>>()?;
        entry
            .bin_attrs
            .entry(name)
            .or_default()
            .extend(texts.into_iter().map(String::into_bytes).chain(first_binary).chain(rest));
    }
    Ok(entry)
}

/// The values of an attribute, case-insensitively.
pub fn values<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{PL, StructureTag, TagClass};

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(bytes.to_vec()) }
    }

    fn sequence(id: u64, class: TagClass, parts: Vec<StructureTag>) -> StructureTag {
        StructureTag { class, id, payload: PL::C(parts) }
    }

    /// A SearchResultEntry as the server sends it: DN, then (type, set of values) pairs.
    fn raw_entry(dn: &str, attributes: &[(&str, &[&[u8]])]) -> ldap3::ResultEntry {
        let attributes = attributes
            .iter()
            .map(|(name, values)| {
                sequence(
                    16,
                    TagClass::Universal,
                    vec![
                        octets(name.as_bytes()),
                        sequence(17, TagClass::Universal, values.iter().map(|v| octets(v)).collect()),
                    ],
                )
            })
            .collect();
        let entry = sequence(
            4,
            TagClass::Application,
            vec![octets(dn.as_bytes()), sequence(16, TagClass::Universal, attributes)],
        );
        ldap3::ResultEntry::new(entry)
    }

    #[test]
    fn search_entries_are_taken_apart_as_ldap3_does_and_binary_values_keep_their_attribute_together() {
        let guid: &[u8] = b"0123456789abcdef"; // 16 bytes that happen to be valid UTF-8
        let attributes: &[(&str, &[&[u8]])] = &[
            ("cn", &[b"Ada Lovelace", b"Ada"]),
            ("mail", &[b"ada@example.org"]),
            ("jpegPhoto", &[b"ok", &[0xff, 0xd8, 0xff], b"tail"]),
            ("objectGUID", &[guid]),
        ];
        let ours =
            entry_of(raw_entry("uid=ada,ou=People,dc=example", attributes), Some("objectGUID")).unwrap();
        let theirs = SearchEntry::construct(raw_entry("uid=ada,ou=People,dc=example", attributes));
        assert_eq!(ours.dn, theirs.dn);
        assert_eq!(ours.attrs["cn"], ["Ada Lovelace", "Ada"]);
        assert_eq!(ours.attrs["mail"], theirs.attrs["mail"]);
        // Any value that is not UTF-8 makes the whole attribute binary, in the server's order.
        assert_eq!(ours.bin_attrs["jpegPhoto"], [b"ok".to_vec(), vec![0xff, 0xd8, 0xff], b"tail".to_vec()]);
        assert!(!ours.attrs.contains_key("jpegPhoto"));
        let mut their_photo = theirs.bin_attrs["jpegPhoto"].clone();
        their_photo.sort();
        let mut our_photo = ours.bin_attrs["jpegPhoto"].clone();
        our_photo.sort();
        assert_eq!(our_photo, their_photo);
        // The binary anchor stays binary even when its bytes read as text (ldap3 made it text).
        assert_eq!(ours.bin_attrs["objectGUID"], [guid.to_vec()]);
        assert!(theirs.attrs.contains_key("objectGUID"));
        // Without a binary anchor it is text, as any other attribute.
        let plain = entry_of(raw_entry("uid=ada", attributes), None).unwrap();
        assert_eq!(plain.attrs["objectGUID"], ["0123456789abcdef"]);
    }

    #[test]
    fn a_malformed_search_entry_is_an_error_not_a_panic() {
        let not_an_entry = ldap3::ResultEntry::new(octets(b"uid=ada"));
        let no_attributes =
            ldap3::ResultEntry::new(sequence(4, TagClass::Application, vec![octets(b"uid=ada")]));
        let dn_not_utf8 = raw_entry("", &[]);
        let dn_not_utf8 = match dn_not_utf8.0.payload {
            PL::C(mut parts) => {
                parts[0] = octets(&[0xff, 0xfe]);
                ldap3::ResultEntry::new(sequence(4, TagClass::Application, parts))
            }
            PL::P(_) => unreachable!("an entry is constructed"),
        };
        // A value that is a sequence rather than an octet string.
        let value_not_octets = {
            let cn = sequence(
                16,
                TagClass::Universal,
                vec![
                    octets(b"cn"),
                    sequence(17, TagClass::Universal, vec![sequence(16, TagClass::Universal, vec![])]),
                ],
            );
            let attributes = sequence(16, TagClass::Universal, vec![cn]);
            ldap3::ResultEntry::new(sequence(4, TagClass::Application, vec![octets(b"uid=ada"), attributes]))
        };
        for raw in [not_an_entry, no_attributes, dn_not_utf8, value_not_octets] {
            let e = entry_of(raw, None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Internal);
            assert!(e.detail.contains("malformed search result entry"), "{}", e.detail);
        }
    }

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

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let values = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::parse(&Some(ecma_proto::v1::ConfigParameters { values })).unwrap()
    }

    fn ldap_result(rc: u32, text: &str) -> LdapResult {
        LdapResult { rc, matched: String::new(), text: text.into(), refs: vec![], ctrls: vec![] }
    }

    #[test]
    fn a_refused_starttls_says_so_and_how_to_choose() {
        let s = settings(&[("url", "ldap://dir.example.com")]);
        let e = connect_error(
            &s,
            &LdapError::LdapResult { result: ldap_result(2, "unsupported extended operation") },
        );
        assert_eq!(e.kind, ErrorKind::Unsupported, "the kind is the result code's");
        assert_eq!(e.rc, Some(2));
        assert!(
            e.detail.starts_with(
                "connecting to ldap://dir.example.com: the directory refused StartTLS: protocolError (2): unsupported extended operation; "
            ),
            "{}",
            e.detail
        );
        assert!(e.detail.contains("ldaps://") && e.detail.contains("security = \"none\""), "{}", e.detail);
        assert!(e.detail.contains("loopback"), "{}", e.detail);
    }

    #[test]
    fn a_refused_connection_names_host_and_port() {
        let refused =
            || LdapError::Io { source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) };
        let e = connect_error(&settings(&[("url", "ldap://127.0.0.1:3890")]), &refused());
        assert_eq!(e.kind, ErrorKind::ConnectionFailed);
        assert!(e.is_broken_connection());
        assert!(
            e.detail.starts_with(
                "connecting to ldap://127.0.0.1:3890: the directory is not reachable at 127.0.0.1:3890 (connection refused)"
            ),
            "{}",
            e.detail
        );
        let e = connect_error(&settings(&[("url", "ldaps://dir")]), &refused());
        assert!(e.detail.contains("not reachable at dir:636"), "{}", e.detail);
        let e = connect_error(&settings(&[("url", "ldap://[::1]/")]), &refused());
        assert!(e.detail.contains("not reachable at [::1]:389"), "{}", e.detail);
    }

    #[test]
    fn an_untrusted_certificate_names_ca_file() {
        let untrusted = || LdapError::Io {
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
        };
        let e = connect_error(&settings(&[("url", "ldaps://dir")]), &untrusted());
        assert_eq!(e.kind, ErrorKind::ConnectionFailed);
        assert!(e.detail.contains("TLS failure") && e.detail.contains("system's roots"), "{}", e.detail);
        assert!(e.detail.contains("set ca_file"), "{}", e.detail);
        let e = connect_error(&settings(&[("url", "ldaps://dir"), ("ca_file", "/etc/ca.pem")]), &untrusted());
        assert!(e.detail.contains("ca_file (/etc/ca.pem)"), "{}", e.detail);
        let e = connect_error(
            &settings(&[("url", "ldaps://dir")]),
            &LdapError::Rustls {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
            },
        );
        assert!(e.detail.contains("the host in url"), "{}", e.detail);
    }

    #[test]
    fn invalid_credentials_name_the_parameters_not_the_password() {
        let s =
            settings(&[("url", "ldap://dir"), ("bind_dn", "cn=admin,dc=x"), ("bind_password", "s3cret-pw")]);
        let e = bind_error(&s.bind, &LdapError::LdapResult { result: ldap_result(49, "") });
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(
            e.detail.starts_with("binding as \"cn=admin,dc=x\": invalidCredentials (49); "),
            "{}",
            e.detail
        );
        assert!(e.detail.contains("bind_dn") && e.detail.contains("bind_password"), "{}", e.detail);
        assert!(!e.detail.contains("s3cret-pw"), "the password is never in a message");
    }

    #[test]
    fn a_missing_base_is_named_with_its_setting() {
        let e = missing_base("accesslog search", "cn=accesslog", "accesslog_base", &ldap_result(32, ""));
        assert_eq!(e.kind, ErrorKind::NoSuchObject);
        assert_eq!(
            e.detail,
            "accesslog search: the base \"cn=accesslog\" does not exist: noSuchObject (32); check accesslog_base"
        );
    }
}
