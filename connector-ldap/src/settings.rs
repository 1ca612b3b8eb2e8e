//! The connector's parameters, as declared to the supervisor and parsed from its configuration.

use std::path::PathBuf;
use std::time::Duration;

use ecma_connector_sdk::{ConfigExt, Parameter, error_status};
use ecma_proto::v1::{ConfigParameterDefinition, ConfigParameterType as T, ConfigParameters, ErrorKind};
use tonic::Status;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `ldap://` upgraded with the StartTLS extended operation (the default for `ldap://`).
    StartTls,
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` in clear: only when `security = "none"` says so.
    Plain,
}

/// How the connector authenticates.
#[derive(Clone)]
pub enum Bind {
    Anonymous,
    Simple {
        dn: String,
        password: String,
    },
    /// SASL EXTERNAL: the identity is the TLS client certificate.
    External,
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Anonymous => f.write_str("Anonymous"),
            Bind::Simple { dn, .. } => f.debug_struct("Simple").field("dn", dn).finish_non_exhaustive(),
            Bind::External => f.write_str("External"),
        }
    }
}

/// Where delta imports read changes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMethod {
    /// 389 DS's retro changelog when the root DSE names one, else RFC 4533 content
    /// synchronisation when the server offers it, else OpenLDAP's accesslog when it is among
    /// the naming contexts, else `modifyTimestamp`.
    Auto,
    /// RFC 4533 refreshOnly with a cookie (OpenLDAP syncprov, 389 DS content sync plug-in).
    Sync,
    /// OpenLDAP's accesslog overlay: the successful writes logged since the last run.
    Accesslog,
    /// 389 Directory Server's retro changelog (`cn=changelog`): the changes numbered after the
    /// last run's.
    Changelog,
    /// Entries whose `modifyTimestamp` moved; deletes are seen only by full imports.
    Timestamp,
}

/// Group membership style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStyle {
    GroupOfNames,
    GroupOfUniqueNames,
}

/// Everything the connector needs to reach and write the directory.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub bind: Bind,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub object_class: String,
    pub auxiliary_classes: Vec<String>,
    pub anchor: String,
    /// Subtree the objects live in (defaults to the partition).
    pub container: Option<String>,
    /// Naming attribute of a DN built when the mapping gives none.
    pub rdn_attribute: String,
    pub create_containers: bool,
    pub page_size: i32,
    pub delta: DeltaMethod,
    /// Placeholder member of a group that has no other member.
    pub empty_member: String,
    /// After a rename, rewrite the old DN in the partition's groups.
    pub update_references: bool,
    /// The suffix of OpenLDAP's accesslog database.
    pub accesslog_base: String,
    /// The base of 389 DS's retro changelog.
    pub changelog_base: String,
    /// The changelog attribute that carries the anchor of the changed entry.
    pub changelog_anchor: String,
}

impl Settings {
    /// Whether the configured class is a group class (members are DN references).
    pub fn group_style(&self) -> Option<GroupStyle> {
        if self.object_class.eq_ignore_ascii_case("groupOfNames") {
            Some(GroupStyle::GroupOfNames)
        } else if self.object_class.eq_ignore_ascii_case("groupOfUniqueNames") {
            Some(GroupStyle::GroupOfUniqueNames)
        } else {
            None
        }
    }

    /// All object classes an entry of this type carries.
    pub fn classes(&self) -> Vec<String> {
        std::iter::once(self.object_class.clone()).chain(self.auxiliary_classes.iter().cloned()).collect()
    }

    /// Reads a configuration against the declared parameters (a default is the one
    /// [`parameters`] declares).
    pub fn parse(config: &Option<ConfigParameters>) -> Result<Self, Status> {
        let declared = parameters();
        let config = &ecma_connector_sdk::Settings::new(&declared, config);
        let bad = |message: String| error_status(ErrorKind::InvalidConfiguration, message);
        let url = config.require("url")?.trim().to_string();
        let ldaps = if url.starts_with("ldaps://") {
            true
        } else if url.starts_with("ldap://") {
            false
        } else {
            return Err(bad(format!(
                "url: {url:?} must start with ldap:// or ldaps:// (e.g. ldaps://dir.example.com)"
            )));
        };
        if url
            .trim_start_matches("ldaps://")
            .trim_start_matches("ldap://")
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .is_empty()
        {
            return Err(bad(format!("url: {url:?} names no host")));
        }
        let security = match (config.get("security").unwrap_or("").to_ascii_lowercase().as_str(), ldaps) {
            (_, true) => Security::Ldaps,
            ("" | "starttls", false) => Security::StartTls,
            ("none" | "plain", false) => Security::Plain,
            (other, false) => {
                return Err(bad(format!(
                    "security: {other:?} is not one of \"starttls\" (the default) or \"none\" (clear text, loopback only)"
                )));
            }
        };
        let path = |name: &str| config.get(name).filter(|s| !s.is_empty()).map(PathBuf::from);
        let host = url
            .trim_start_matches("ldaps://")
            .trim_start_matches("ldap://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let loopback = {
            let name = host
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(host.as_str(), |(h, _)| h);
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        };
        let bind_method = config.get("bind_method").unwrap_or("").to_ascii_lowercase();
        let bind_dn = config.get("bind_dn").unwrap_or("").to_string();
        let bind = match bind_method.as_str() {
            "" if bind_dn.is_empty() => Bind::Anonymous,
            "" | "simple" => {
                if bind_dn.is_empty() {
                    return Err(bad("bind_dn: bind_method \"simple\" needs a bind_dn".into()));
                }
                let password = config.get("bind_password").unwrap_or("").to_string();
                if password.is_empty() {
                    // An empty password makes a simple bind anonymous (RFC 4513 5.1.2): refuse it.
                    return Err(bad(
                        "bind_password: a simple bind needs a password (set it from env or file)".into(),
                    ));
                }
                if security == Security::Plain && !loopback {
                    return Err(bad(format!(
                        "security: \"none\" would send bind_password in clear text to {host}; use StartTLS (the default) or ldaps://"
                    )));
                }
                Bind::Simple { dn: bind_dn, password }
            }
            "anonymous" => Bind::Anonymous,
            "sasl_external" | "external" => {
                if path("client_cert_file").is_none() || path("client_key_file").is_none() {
                    return Err(bad(
                        "client_cert_file: bind_method \"sasl_external\" needs client_cert_file and client_key_file".into(),
                    ));
                }
                if security == Security::Plain {
                    return Err(bad("security: SASL EXTERNAL needs TLS (StartTLS or ldaps://)".into()));
                }
                Bind::External
            }
            other => {
                return Err(bad(format!(
                    "bind_method: {other:?} is not one of \"simple\", \"sasl_external\" or \"anonymous\""
                )));
            }
        };
        let seconds = |name: &str| -> Result<Duration, Status> {
            let s = config.text(name);
            match s.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                _ => Err(bad(format!("{name}: {s:?} is not a positive number of seconds"))),
            }
        };
        let object_class = config.text("object_class").to_string();
        let list = |name: &str| -> Vec<String> {
            config
                .get(name)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let page_size = match config.text("page_size").parse::<i32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(bad(format!(
                    "page_size: {:?} is not a positive number",
                    config.text("page_size")
                )));
            }
        };
        let delta = match config.text("delta_method").to_ascii_lowercase().as_str() {
            "" | "auto" => DeltaMethod::Auto,
            "sync" => DeltaMethod::Sync,
            "timestamp" | "modifytimestamp" => DeltaMethod::Timestamp,
            "accesslog" => DeltaMethod::Accesslog,
            "changelog" => DeltaMethod::Changelog,
            other => {
                return Err(bad(format!(
                    "delta_method: {other:?} is not one of \"auto\", \"sync\", \"accesslog\", \"changelog\" or \"timestamp\""
                )));
            }
        };
        let anchor = config.text("anchor_attribute").to_string();
        // The retro changelog names the entry of a change by the attributes its plug-in is told
        // to copy (`nsslapd-attribute: nsuniqueid:targetUniqueId`, `entryuuid:targetEntryUUID`).
        let changelog_anchor = config
            .get("changelog_anchor_attribute")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .unwrap_or_else(|| {
                if anchor.eq_ignore_ascii_case("nsUniqueId") {
                    "targetUniqueId".to_string()
                } else {
                    format!("target{anchor}")
                }
            });
        let default_rdn = if object_class.to_ascii_lowercase().contains("group") { "cn" } else { "uid" };
        Ok(Settings {
            url,
            security,
            ca_file: path("ca_file"),
            client_cert_file: path("client_cert_file"),
            client_key_file: path("client_key_file"),
            bind,
            connect_timeout: seconds("connect_timeout_seconds")?,
            operation_timeout: seconds("timeout_seconds")?,
            auxiliary_classes: list("auxiliary_classes"),
            anchor,
            container: config.get("container").filter(|s| !s.is_empty()).map(String::from),
            rdn_attribute: config
                .get("rdn_attribute")
                .filter(|s| !s.is_empty())
                .unwrap_or(default_rdn)
                .to_string(),
            create_containers: config.flag("create_containers")?,
            page_size,
            delta,
            update_references: config.flag("update_group_references")?,
            accesslog_base: config.text("accesslog_base").to_string(),
            changelog_base: config.text("changelog_base").to_string(),
            changelog_anchor,
            empty_member: config.text("empty_group_member").to_string(),
            object_class,
        })
    }
}

/// The parameters the connector declares.
pub fn parameters() -> Vec<ConfigParameterDefinition> {
    vec![
        Parameter::new("url", T::String, "ldap://host[:port] (StartTLS unless security = \"none\") or ldaps://host[:port]").required().definition(),
        Parameter::new("security", T::String, "For ldap:// URLs: \"starttls\" or \"none\" (clear text)").default("starttls").definition(),
        Parameter::new("ca_file", T::String, "PEM bundle of the CAs to trust; the system's roots when empty").definition(),
        Parameter::new("bind_method", T::String, "\"simple\", \"sasl_external\" (TLS client certificate) or \"anonymous\" (default: simple with a bind_dn, anonymous without)").definition(),
        Parameter::new("bind_dn", T::String, "DN to bind as (simple bind)").definition(),
        Parameter::new("bind_password", T::EncryptedString, "Password of bind_dn").secret().definition(),
        Parameter::new("client_cert_file", T::String, "PEM client certificate (SASL EXTERNAL)").definition(),
        Parameter::new("client_key_file", T::String, "PEM private key of client_cert_file").definition(),
        Parameter::new("connect_timeout_seconds", T::Integer, "Time allowed to connect, secure and bind").default("10").definition(),
        Parameter::new("timeout_seconds", T::Integer, "Time allowed for one LDAP operation").default("30").definition(),
        Parameter::new("object_class", T::String, "Structural object class (the object type)").default("inetOrgPerson").definition(),
        Parameter::new("auxiliary_classes", T::Text, "Comma-separated auxiliary classes added to every new entry").definition(),
        Parameter::new("anchor_attribute", T::String, "Operational attribute that identifies an entry: entryUUID, or objectGUID on AD LDS").default("entryUUID").definition(),
        Parameter::new("container", T::String, "Subtree the objects live in (default: the partition)").definition(),
        Parameter::new("rdn_attribute", T::String, "Naming attribute when the mapping gives no dn (default: uid, or cn for a group class)").definition(),
        Parameter::new("create_containers", T::Boolean, "Create missing parent entries (as organizationalUnit) of a new DN").default("false").definition(),
        Parameter::new("page_size", T::Integer, "Paged-results page size for imports").default("500").definition(),
        Parameter::new("empty_group_member", T::String, "Placeholder member of a group with no other member (groupOfNames requires one); never imported").default("cn=nobody").definition(),
        Parameter::new("update_group_references", T::Boolean, "After a rename, rewrite the old DN in the groups (member, uniqueMember) of the partition").default("true").definition(),
        Parameter::new("delta_method", T::String, "\"auto\" (389 DS's changelog, else sync, else accesslog, else timestamp), \"sync\" (RFC 4533), \"accesslog\" (OpenLDAP's accesslog overlay), \"changelog\" (389 DS's retro changelog) or \"timestamp\" (modifyTimestamp; deletes seen by full imports only)").default("auto").definition(),
        Parameter::new("accesslog_base", T::String, "Suffix of the accesslog database (delta_method \"accesslog\"; bind_dn must be able to read it)").default("cn=accesslog").definition(),
        Parameter::new("changelog_base", T::String, "Base of 389 DS's retro changelog (delta_method \"changelog\"; bind_dn must be able to read it)").default("cn=changelog").definition(),
        Parameter::new("changelog_anchor_attribute", T::String, "Changelog attribute holding the changed entry's anchor: the retro changelog plug-in must copy it (nsslapd-attribute: entryuuid:targetEntryUUID, or nsuniqueid:targetUniqueId for anchor nsUniqueId); default: target followed by anchor_attribute").definition(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Option<ConfigParameters> {
        Some(ConfigParameters { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    #[test]
    fn clear_text_binds_only_to_loopback_and_errors_name_the_parameter() {
        let simple = [("bind_dn", "cn=admin,dc=x"), ("bind_password", "pw"), ("security", "none")];
        let with = |url: &str| {
            let mut pairs = simple.to_vec();
            pairs.push(("url", url));
            Settings::parse(&config(&pairs))
        };
        assert!(with("ldap://127.0.0.1:389").is_ok());
        assert!(with("ldap://localhost").is_ok());
        assert!(with("ldap://[::1]:389").is_ok());
        let refused = with("ldap://dir.example.com").unwrap_err();
        assert!(refused.message().starts_with("security:"), "{}", refused.message());
        assert!(!refused.message().contains("pw\""), "the password is not in the message");
        // StartTLS is the default for ldap://, ldaps:// is TLS whatever `security` says.
        let s =
            Settings::parse(&config(&[("url", "ldap://dir"), ("bind_dn", "cn=a"), ("bind_password", "p")]))
                .unwrap();
        assert_eq!(s.security, Security::StartTls);
        let s = Settings::parse(&config(&[("url", "ldaps://dir"), ("security", "none")])).unwrap();
        assert_eq!(s.security, Security::Ldaps);
        assert!(
            Settings::parse(&config(&[("url", "http://dir")])).unwrap_err().message().starts_with("url:")
        );
        let e = Settings::parse(&config(&[("url", "ldap://dir"), ("bind_dn", "cn=a")])).unwrap_err();
        assert!(e.message().starts_with("bind_password:"), "{}", e.message());
        let e = Settings::parse(&config(&[("url", "ldap://dir"), ("delta_method", "magic")])).unwrap_err();
        assert!(e.message().starts_with("delta_method:"), "{}", e.message());
    }
}
