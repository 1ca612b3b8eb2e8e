//! Attribute mapping: from a SCIM resource (JSON) to the connector attributes of one object
//! type, as `connector attribute = "SCIM path"` pairs in the configuration.
//!
//! Paths are SCIM attribute paths (`userName`, `name.givenName`,
//! `emails[type eq "work"].value`, `members.value`, URN-prefixed extension attributes). What a
//! connector attribute gets depends on how the connector's schema declares it:
//!
//! - single-valued: one value; a path that reaches a multi-valued SCIM attribute without a
//!   filter takes the primary value, else the first;
//! - multi-valued: every value the path reaches; changes are sent as value adds and deletes, so
//!   adding one group member does not rewrite the list;
//! - reference: each value is a SCIM id, sent as the referenced object's DN (or anchor), found
//!   in the connector space.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ecma_proto::v1::{self, AttributeChange, AttributeModificationType, AttributeType};
use serde_json::Value;

use crate::scim::filter::{FilterError, ValuePath, get_ci};

/// Connector attribute values computed from a resource; an empty list means absent.
pub type TargetValues = BTreeMap<String, Vec<v1::Value>>;

/// How the connector's schema declares the mapped attributes.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    multi: BTreeSet<String>,
    references: BTreeSet<String>,
}

impl Shape {
    /// The shape of a schema type.
    pub fn of(schema: &v1::SchemaType) -> Self {
        let mut shape = Self::default();
        for a in &schema.attributes {
            if a.multi_valued {
                shape.multi.insert(a.name.clone());
            }
            if a.r#type == AttributeType::Reference as i32 {
                shape.references.insert(a.name.clone());
            }
        }
        shape
    }

    fn is_multi(&self, name: &str) -> bool {
        self.multi.contains(name)
    }
}

/// A SCIM id that a reference attribute names but the connector space does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: no resource with id {id:?}")]
pub struct UnknownReference {
    pub attribute: String,
    pub id: String,
}

/// The mapping of one connector.
#[derive(Debug, Clone)]
pub struct Mapping {
    entries: Vec<(String, ValuePath)>,
}

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

    /// The JSON values each mapped attribute takes from `resource`.
    fn raw<'a>(&self, resource: &'a Value, shape: &Shape) -> Vec<(&str, Vec<&'a Value>)> {
        self.entries
            .iter()
            .map(|(target, path)| {
                let values = if shape.is_multi(target) {
                    path.resolve(resource)
                } else {
                    pick(path, resource).into_iter().collect()
                };
                (target.as_str(), values.into_iter().filter(|v| to_value(v).is_some()).collect())
            })
            .collect()
    }

    /// The SCIM ids that `resource`'s reference attributes name (to be resolved by the caller).
    pub fn referenced_ids(&self, resource: &Value, shape: &Shape) -> Vec<String> {
        self.raw(resource, shape)
            .into_iter()
            .filter(|(target, _)| shape.references.contains(*target))
            .flat_map(|(_, values)| values.into_iter().filter_map(|v| v.as_str().map(str::to_string)))
            .collect()
    }

    /// The connector attribute values of `resource`; references are replaced through `resolved`
    /// (SCIM id → the referenced object's DN or anchor).
    pub fn to_target(
        &self,
        resource: &Value,
        shape: &Shape,
        resolved: &HashMap<String, v1::Value>,
    ) -> Result<TargetValues, UnknownReference> {
        let mut out = TargetValues::new();
        for (target, values) in self.raw(resource, shape) {
            let mut converted = Vec::with_capacity(values.len());
            for v in values {
                if shape.references.contains(target) {
                    let id = v.as_str().unwrap_or_default();
                    let reference = resolved.get(id).cloned().ok_or_else(|| UnknownReference {
                        attribute: target.to_string(),
                        id: id.to_string(),
                    })?;
                    converted.push(reference);
                } else if let Some(value) = to_value(v) {
                    converted.push(value);
                }
            }
            // Set semantics for multi-valued attributes: no value twice.
            let mut seen = Vec::new();
            converted.retain(|v| {
                let fresh = !seen.contains(v);
                if fresh {
                    seen.push(v.clone());
                }
                fresh
            });
            out.insert(target.to_string(), converted);
        }
        Ok(out)
    }

    /// Attribute changes for an ADD: every present attribute.
    pub fn add_changes(values: &TargetValues) -> Vec<AttributeChange> {
        values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, v)| AttributeChange {
                name: name.clone(),
                modification_type: AttributeModificationType::Add as i32,
                value_adds: v.clone(),
                value_deletes: vec![],
            })
            .collect()
    }

    /// Attribute changes that turn `before` into `after`. Single-valued: a REPLACE for a changed
    /// value, a DELETE for one that went away. Multi-valued: an UPDATE with the values added and
    /// removed. Unchanged attributes are not sent.
    pub fn update_changes(
        before: &TargetValues,
        after: &TargetValues,
        shape: &Shape,
    ) -> Vec<AttributeChange> {
        let mut changes = Vec::new();
        for (name, new) in after {
            let old = before.get(name).cloned().unwrap_or_default();
            if old == *new {
                continue;
            }
            let change = |kind: AttributeModificationType, adds: Vec<v1::Value>, deletes: Vec<v1::Value>| {
                AttributeChange {
                    name: name.clone(),
                    modification_type: kind as i32,
                    value_adds: adds,
                    value_deletes: deletes,
                }
            };
            if new.is_empty() {
                changes.push(change(AttributeModificationType::Delete, vec![], vec![]));
            } else if shape.is_multi(name) && !old.is_empty() {
                let adds: Vec<_> = new.iter().filter(|v| !old.contains(v)).cloned().collect();
                let deletes: Vec<_> = old.iter().filter(|v| !new.contains(v)).cloned().collect();
                if !adds.is_empty() || !deletes.is_empty() {
                    changes.push(change(AttributeModificationType::Update, adds, deletes));
                }
            } else {
                changes.push(change(AttributeModificationType::Replace, new.clone(), vec![]));
            }
        }
        changes
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        Mapping::new(&pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap()
    }

    fn shape(multi: &[&str], references: &[&str]) -> Shape {
        Shape {
            multi: multi.iter().map(|s| s.to_string()).collect(),
            references: references.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn one(v: &TargetValues, name: &str) -> Option<v1::Value> {
        v[name].first().cloned()
    }

    #[test]
    fn resource_maps_to_target_values() {
        let m = mapping(&[
            ("user_name", "userName"),
            ("given", "name.givenName"),
            ("mail", "emails.value"),
            ("home", r#"emails[type eq "home"].value"#),
            ("all_mail", "emails.value"),
            ("active", "active"),
            ("dept", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
        ]);
        let user = json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "work", "primary": true}],
            "active": false,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}
        });
        let v = m.to_target(&user, &shape(&["all_mail"], &[]), &HashMap::new()).unwrap();
        assert_eq!(one(&v, "user_name"), Some(v1::Value::string("bjensen")));
        assert_eq!(one(&v, "given"), Some(v1::Value::string("Barbara")));
        assert_eq!(v["mail"], [v1::Value::string("w@x")], "primary first");
        assert_eq!(v["home"], [v1::Value::string("h@x")]);
        assert_eq!(v["all_mail"], [v1::Value::string("h@x"), v1::Value::string("w@x")], "multi-valued: all");
        assert_eq!(one(&v, "active"), Some(v1::Value::boolean(false)));
        assert_eq!(one(&v, "dept"), Some(v1::Value::string("Eng")));
    }

    #[test]
    fn references_resolve_through_the_connector_space() {
        let m = mapping(&[("members", "members.value")]);
        let s = shape(&["members"], &["members"]);
        let group =
            json!({"displayName": "g", "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u1"}]});
        assert_eq!(m.referenced_ids(&group, &s), ["u1", "u2", "u1"]);
        let anchors: HashMap<String, v1::Value> = [("u1", "a1"), ("u2", "a2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v1::Value::string(*v)))
            .collect();
        let v = m.to_target(&group, &s, &anchors).unwrap();
        assert_eq!(v["members"], [v1::Value::string("a1"), v1::Value::string("a2")], "no value twice");
        let unknown = m.to_target(&json!({"members": [{"value": "nobody"}]}), &s, &anchors).unwrap_err();
        assert_eq!(unknown.id, "nobody");
    }

    #[test]
    fn changes_are_minimal() {
        let m = mapping(&[("user_name", "userName"), ("given", "name.givenName"), ("active", "active")]);
        let s = Shape::default();
        let none = HashMap::new();
        let before = m
            .to_target(&json!({"userName": "a", "name": {"givenName": "G"}, "active": true}), &s, &none)
            .unwrap();
        let after = m.to_target(&json!({"userName": "a", "active": false}), &s, &none).unwrap();
        let summary: Vec<_> = Mapping::update_changes(&before, &after, &s)
            .iter()
            .map(|c| (c.name.clone(), c.modification_type))
            .collect();
        assert_eq!(
            summary,
            [
                ("active".to_string(), AttributeModificationType::Replace as i32),
                ("given".to_string(), AttributeModificationType::Delete as i32),
            ]
        );
        assert_eq!(Mapping::add_changes(&before).len(), 3);
    }

    #[test]
    fn one_member_more_is_one_value_added() {
        let s = shape(&["members"], &[]);
        let values = |list: &[&str]| -> TargetValues {
            [("members".to_string(), list.iter().map(|v| v1::Value::string(*v)).collect())]
                .into_iter()
                .collect()
        };
        let changes = Mapping::update_changes(&values(&["a", "b"]), &values(&["a", "b", "c"]), &s);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].modification_type, AttributeModificationType::Update as i32);
        assert_eq!((changes[0].value_adds.len(), changes[0].value_deletes.len()), (1, 0));
        let changes = Mapping::update_changes(&values(&["a", "b"]), &values(&["b"]), &s);
        assert_eq!(changes[0].value_deletes, [v1::Value::string("a")]);
        let changes = Mapping::update_changes(&values(&["a"]), &values(&[]), &s);
        assert_eq!(changes[0].modification_type, AttributeModificationType::Delete as i32);
    }
}
