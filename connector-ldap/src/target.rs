//! One configured target: the directory connection, its schema and controls, the partition,
//! and the conversions between LDAP entries and the protocol's entries.

use std::collections::HashSet;

use ecma_proto::v1::{self, AttributeType, ErrorKind, value::Kind};
use ldap3::{Scope, SearchEntry, ldap_escape};

use crate::directory::{Directory, OpError, first, values};
use crate::schema::DirectorySchema;
use crate::settings::Settings;

pub const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
pub const SYNC_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub const POST_READ_OID: &str = "1.3.6.1.1.13.2";
pub const PERMISSIVE_MODIFY_OID: &str = "1.2.840.113556.1.4.1413";
pub const PASSWORD_MODIFY_OID: &str = "1.3.6.1.4.1.4203.1.11.1";

/// What the server offers, from its root DSE.
#[derive(Debug, Clone, Default)]
pub struct ServerFeatures {
    pub naming_contexts: Vec<String>,
    pub paged_results: bool,
    pub sync: bool,
    pub post_read: bool,
    pub permissive_modify: bool,
    pub password_modify: bool,
    pub vendor: String,
    /// 389 DS's retro changelog, when the root DSE names one (`changelog`).
    pub changelog: Option<String>,
}

/// A configured directory, ready for operations.
pub struct Target {
    pub dir: Directory,
    pub features: ServerFeatures,
    pub schema: DirectorySchema,
    pub type_schema: v1::SchemaType,
}

impl Target {
    /// Connects, reads the root DSE and the subschema entry.
    pub async fn open(settings: Settings) -> Result<Self, OpError> {
        let dir = Directory::new(settings)?;
        let dse = dir.root_dse().await?;
        let controls: HashSet<&str> = values(&dse, "supportedControl").iter().map(String::as_str).collect();
        let extensions: HashSet<&str> =
            values(&dse, "supportedExtension").iter().map(String::as_str).collect();
        let features = ServerFeatures {
            naming_contexts: values(&dse, "namingContexts").to_vec(),
            paged_results: controls.contains(PAGED_RESULTS_OID),
            sync: controls.contains(SYNC_OID),
            post_read: controls.contains(POST_READ_OID),
            permissive_modify: controls.contains(PERMISSIVE_MODIFY_OID),
            password_modify: extensions.contains(PASSWORD_MODIFY_OID),
            vendor: first(&dse, "vendorName").unwrap_or("").to_string(),
            changelog: first(&dse, "changelog").map(String::from),
        };
        let subschema = first(&dse, "subschemaSubentry").unwrap_or("cn=Subschema").to_string();
        let entry =
            dir.read_entry(&subschema, &["objectClasses", "attributeTypes"]).await?.ok_or_else(|| {
                OpError::new(
                    ErrorKind::SchemaViolation,
                    format!("the subschema entry {subschema:?} cannot be read"),
                )
            })?;
        let schema =
            DirectorySchema::parse(values(&entry, "objectClasses"), values(&entry, "attributeTypes"));
        let s = &dir.settings;
        if !schema.is_empty() {
            if schema.class_name(&s.object_class).is_none() {
                return Err(OpError::new(
                    ErrorKind::InvalidConfiguration,
                    format!("object_class: the server's schema has no class {:?}", s.object_class),
                ));
            }
            if let Some(aux) = s.auxiliary_classes.iter().find(|c| !schema.is_auxiliary(c)) {
                return Err(OpError::new(
                    ErrorKind::InvalidConfiguration,
                    format!("auxiliary_classes: {aux:?} is not an auxiliary class in the server's schema"),
                ));
            }
        }
        let type_schema = schema.schema_type(&s.object_class, &s.auxiliary_classes, &s.anchor);
        tracing::info!(
            vendor = %features.vendor,
            naming_contexts = ?features.naming_contexts,
            paged_results = features.paged_results,
            sync = features.sync,
            changelog = ?features.changelog,
            "connected to the directory"
        );
        Ok(Self { dir, features, schema, type_schema })
    }

    pub fn settings(&self) -> &Settings {
        &self.dir.settings
    }

    /// Whether `object_type` names this target's type (LDAP names ignore case).
    pub fn check_type(&self, object_type: &str) -> Result<(), OpError> {
        if object_type.is_empty() || object_type.eq_ignore_ascii_case(&self.type_schema.name) {
            Ok(())
        } else {
            Err(OpError::new(
                ErrorKind::SchemaViolation,
                format!(
                    "object type {object_type:?} is not offered; this connector serves {:?}",
                    self.type_schema.name
                ),
            ))
        }
    }

    /// The subtree searched for objects of a partition.
    pub fn search_base(&self, partition: &str) -> String {
        self.settings().container.clone().unwrap_or_else(|| partition.to_string())
    }

    /// The filter selecting this target's objects.
    pub fn type_filter(&self) -> String {
        format!("(objectClass={})", ldap_escape(&self.settings().object_class))
    }

    /// The attributes requested for entries.
    pub fn requested_attributes(&self) -> Vec<String> {
        let mut attrs: Vec<String> = self
            .type_schema
            .attributes
            .iter()
            .filter(|a| a.operation != v1::AttributeOperation::ExportOnly as i32)
            .map(|a| a.name.clone())
            .collect();
        if attrs.is_empty() {
            attrs.push("*".into());
        }
        if !attrs.iter().any(|a| a.eq_ignore_ascii_case(&self.settings().anchor)) {
            attrs.push(self.settings().anchor.clone());
        }
        attrs
    }

    fn attribute_kind(&self, name: &str) -> AttributeType {
        self.type_schema
            .attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .and_then(|a| AttributeType::try_from(a.r#type).ok())
            .unwrap_or(AttributeType::String)
    }

    /// Whether the anchor is AD's binary `objectGUID`.
    fn binary_anchor(&self) -> bool {
        self.settings().anchor.eq_ignore_ascii_case("objectGUID")
    }

    /// The filter that finds an entry by its anchor text.
    pub fn anchor_filter(&self, anchor: &str) -> Result<String, OpError> {
        let name = &self.settings().anchor;
        if self.binary_anchor() {
            let bytes = guid_bytes(anchor).ok_or_else(|| {
                OpError::new(ErrorKind::InvalidAttributeValue, format!("{anchor:?} is not a GUID"))
            })?;
            let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
            Ok(format!("({name}={escaped})"))
        } else {
            Ok(format!("({name}={})", ldap_escape(anchor)))
        }
    }

    /// The anchor text of an entry.
    pub fn anchor_of(&self, entry: &SearchEntry) -> Option<String> {
        let name = &self.settings().anchor;
        if self.binary_anchor() {
            let bytes = entry.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?.1.first()?;
            guid_text(bytes)
        } else {
            first(entry, name).map(String::from)
        }
    }

    /// The current DN of the entry with this anchor, searched under the partition.
    pub async fn dn_of_anchor(&self, partition: &str, anchor: &str) -> Result<Option<String>, OpError> {
        let filter = self.anchor_filter(anchor)?;
        let found = self.dir.search(partition, Scope::Subtree, &filter, &["1.1"]).await?;
        Ok(found.into_iter().next().map(|e| e.dn))
    }

    /// Entries under the partition matching `filter`.
    pub async fn search(&self, partition: &str, filter: &str) -> Result<Vec<SearchEntry>, OpError> {
        let attrs = self.requested_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        self.dir.search(&self.search_base(partition), Scope::Subtree, filter, &attrs).await
    }

    /// A directory entry as the protocol's entry.
    pub fn to_entry(&self, entry: SearchEntry, partition: &str) -> v1::Entry {
        let anchor_name = &self.settings().anchor;
        let placeholder = &self.settings().empty_member;
        let anchor = self.anchor_of(&entry);
        let mut attributes = Vec::with_capacity(entry.attrs.len());
        // The entry is taken apart: its values move into the protocol's instead of being copied.
        for (name, vals) in entry.attrs {
            if name.eq_ignore_ascii_case("objectClass")
                || name.eq_ignore_ascii_case("userPassword")
                || name.eq_ignore_ascii_case(anchor_name)
            {
                continue;
            }
            let canonical = self.canonical_name(&name);
            let kind = self.attribute_kind(&canonical);
            let values = vals
                .into_iter()
                .filter(|v| !(kind == AttributeType::Reference && v.eq_ignore_ascii_case(placeholder)))
                .map(|v| match kind {
                    AttributeType::Reference => v1::Value { kind: Some(Kind::ReferenceValue(v)) },
                    AttributeType::Integer => match v.parse::<i64>() {
                        Ok(i) => v1::Value::integer(i),
                        Err(_) => v1::Value::string(v),
                    },
                    AttributeType::Boolean => v1::Value::boolean(v.eq_ignore_ascii_case("TRUE")),
                    _ => v1::Value::string(v),
                })
                .collect::<Vec<_>>();
            if !values.is_empty() {
                attributes.push(v1::AttributeValues { name: canonical, values });
            }
        }
        for (name, vals) in entry.bin_attrs {
            if name.eq_ignore_ascii_case("userPassword") || name.eq_ignore_ascii_case(anchor_name) {
                continue;
            }
            attributes.push(v1::AttributeValues {
                name: self.canonical_name(&name),
                values: vals.into_iter().map(|v| v1::Value { kind: Some(Kind::BinaryValue(v)) }).collect(),
            });
        }
        attributes.sort_by(|a, b| a.name.cmp(&b.name));
        v1::Entry {
            object_type: self.type_schema.name.clone(),
            anchors: anchor
                .map(|a| v1::Anchor {
                    name: self.type_schema.anchor_attributes[0].clone(),
                    value: Some(v1::Value::string(a)),
                })
                .into_iter()
                .collect(),
            dn: entry.dn,
            attributes,
            partition_id: partition.to_string(),
        }
    }

    /// The schema type's spelling of an attribute name (the server returns what it was asked).
    pub fn canonical_name(&self, name: &str) -> String {
        self.type_schema
            .attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .map(|a| a.name.clone())
            .or_else(|| self.schema.attribute(name).map(|a| a.name))
            .unwrap_or_else(|| name.to_string())
    }

    /// The placeholder member of an otherwise empty group.
    pub fn empty_member(&self) -> String {
        self.settings().empty_member.clone()
    }
}

/// An AD `objectGUID` (little-endian first three fields) as its usual text.
pub fn guid_text(bytes: &[u8]) -> Option<String> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The bytes of a GUID's text, in AD's order.
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    let mut b = raw;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// RFC 4533's entryUUID octets as the text OpenLDAP shows in `entryUUID`.
pub fn uuid_text(bytes: &[u8]) -> Option<String> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some(uuid::Uuid::from_bytes(b).hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_round_trip_in_ad_byte_order() {
        let text = "01234567-89ab-cdef-0123-456789abcdef";
        let bytes = guid_bytes(text).unwrap();
        assert_eq!(&bytes[..4], &[0x67, 0x45, 0x23, 0x01]);
        assert_eq!(guid_text(&bytes).unwrap(), text);
        assert!(guid_bytes("nope").is_none());
        assert_eq!(uuid_text(&[0u8; 16]).unwrap(), "00000000-0000-0000-0000-000000000000");
    }
}
