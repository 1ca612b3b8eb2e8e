//! Attribute mapping: from a SCIM resource (JSON) to the connector attributes of one object
//! type, as `connector attribute = "SCIM path"` pairs in the configuration.
//!
//! Paths are SCIM attribute paths (`userName`, `name.givenName`,
//! `emails[type eq "work"].value`, URN-prefixed extension attributes). A path that reaches a
//! multi-valued attribute without a filter takes the primary value, else the first.

use std::collections::BTreeMap;

use ecma_proto::v1::{self, AttributeChange, AttributeModificationType};
use serde_json::Value;

use crate::scim::filter::{FilterError, ValuePath, get_ci};

/// The mapping of one connector.
#[derive(Debug, Clone)]
pub struct Mapping {
    entries: Vec<(String, ValuePath)>,
}

/// Connector attribute values computed from a resource; `None` means absent (to be cleared).
pub type TargetValues = BTreeMap<String, Option<v1::Value>>;

impl Mapping {
    /// Builds the mapping from the configuration's `attributes` table.
    pub fn new(attributes: &BTreeMap<String, String>) -> Result<Self, FilterError> {
        let entries = attributes
            .iter()
            .map(|(target, path)| Ok((target.clone(), ValuePath::parse(path)?)))
            .collect::<Result<_, FilterError>>()?;
        Ok(Self { entries })
    }

    /// Names of the connector attributes this mapping writes.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(t, _)| t.as_str())
    }

    /// The connector attribute values of `resource`.
    pub fn to_target(&self, resource: &Value) -> TargetValues {
        self.entries
            .iter()
            .map(|(target, path)| (target.clone(), pick(path, resource).and_then(to_value)))
            .collect()
    }

    /// Attribute changes for an ADD: every present value.
    pub fn add_changes(values: &TargetValues) -> Vec<AttributeChange> {
        values
            .iter()
            .filter_map(|(name, v)| {
                v.as_ref().map(|v| AttributeChange {
                    name: name.clone(),
                    modification_type: AttributeModificationType::Add as i32,
                    value_adds: vec![v.clone()],
                    value_deletes: vec![],
                })
            })
            .collect()
    }

    /// Attribute changes that turn `before` into `after`: a REPLACE for each changed value, a
    /// DELETE for each value that went away. Unchanged attributes are not sent.
    pub fn update_changes(before: &TargetValues, after: &TargetValues) -> Vec<AttributeChange> {
        after
            .iter()
            .filter(|(name, v)| before.get(*name).cloned().flatten() != **v)
            .map(|(name, v)| match v {
                Some(v) => AttributeChange {
                    name: name.clone(),
                    modification_type: AttributeModificationType::Replace as i32,
                    value_adds: vec![v.clone()],
                    value_deletes: vec![],
                },
                None => AttributeChange {
                    name: name.clone(),
                    modification_type: AttributeModificationType::Delete as i32,
                    value_adds: vec![],
                    value_deletes: vec![],
                },
            })
            .collect()
    }
}

/// The one value `path` gives in `resource`.
fn pick<'a>(path: &ValuePath, resource: &'a Value) -> Option<&'a Value> {
    if path.filter.is_some() {
        return path.resolve(resource).into_iter().next();
    }
    let container = path.path.container(resource)?;
    let value = get_ci(container, &path.path.attr)?;
    let element = match value {
        Value::Array(items) => items
            .iter()
            .find(|i| get_ci(i, "primary").is_some_and(|p| p == &Value::Bool(true)))
            .or_else(|| items.first())?,
        v => v,
    };
    match &path.path.sub {
        Some(sub) => get_ci(element, sub),
        None => Some(element),
    }
}

/// A JSON value as a protocol value. Objects and arrays are not single values.
fn to_value(v: &Value) -> Option<v1::Value> {
    match v {
        Value::String(s) => Some(v1::Value::string(s.clone())),
        Value::Bool(b) => Some(v1::Value::boolean(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => v1::Value::integer(i),
            None => v1::Value::string(n.to_string()),
        }),
        _ => None,
    }
}

/// A protocol value as JSON (for the connector space's record of what was exported).
pub fn value_to_json(v: &v1::Value) -> Value {
    use v1::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => Value::String(s.clone()),
        Some(Kind::IntegerValue(i)) => Value::from(*i),
        Some(Kind::BooleanValue(b)) => Value::Bool(*b),
        Some(Kind::BinaryValue(b)) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
        None => Value::Null,
    }
}

/// Inverse of [`value_to_json`] for the kinds the mapping produces.
pub fn json_to_value(v: &Value) -> Option<v1::Value> {
    to_value(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> Mapping {
        let attributes = [
            ("user_name", "userName"),
            ("given", "name.givenName"),
            ("mail", "emails.value"),
            ("home", r#"emails[type eq "home"].value"#),
            ("active", "active"),
            ("dept", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
        ];
        Mapping::new(&attributes.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap()
    }

    #[test]
    fn resource_maps_to_target_values() {
        let user = json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "work", "primary": true}],
            "active": false,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}
        });
        let v = mapping().to_target(&user);
        assert_eq!(v["user_name"], Some(v1::Value::string("bjensen")));
        assert_eq!(v["given"], Some(v1::Value::string("Barbara")));
        assert_eq!(v["mail"], Some(v1::Value::string("w@x")), "primary first");
        assert_eq!(v["home"], Some(v1::Value::string("h@x")));
        assert_eq!(v["active"], Some(v1::Value::boolean(false)));
        assert_eq!(v["dept"], Some(v1::Value::string("Eng")));
    }

    #[test]
    fn changes_are_minimal() {
        let m = mapping();
        let before = m.to_target(&json!({"userName": "a", "name": {"givenName": "G"}, "active": true}));
        let after = m.to_target(&json!({"userName": "a", "active": false}));
        let changes = Mapping::update_changes(&before, &after);
        let summary: Vec<_> = changes.iter().map(|c| (c.name.as_str(), c.modification_type)).collect();
        assert_eq!(
            summary,
            [
                ("active", AttributeModificationType::Replace as i32),
                ("given", AttributeModificationType::Delete as i32),
            ]
        );
        assert_eq!(Mapping::add_changes(&before).len(), 3);
    }
}
