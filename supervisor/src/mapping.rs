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

use crate::expression::{Expr, is_expression};
use crate::paths::{FilterError, ValuePath, get_ci};

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

    /// Whether any attribute is a reference (and so needs resolution through the store).
    pub fn has_references(&self) -> bool {
        !self.references.is_empty()
    }

    /// The texts (DNs or anchors) of the references among an entry's attributes.
    pub fn reference_texts(&self, attributes: &[v1::AttributeValues]) -> Vec<String> {
        attributes
            .iter()
            .filter(|a| self.references.contains(&a.name))
            .flat_map(|a| &a.values)
            .filter_map(v1::Value::as_text)
            .collect()
    }

    /// Whether a reference among `values` names no object that `ids` knows (yet).
    pub fn unresolved(&self, values: &TargetValues, ids: &HashMap<String, String>) -> bool {
        self.references
            .iter()
            .filter_map(|name| values.get(name))
            .flatten()
            .any(|v| v.as_text().is_some_and(|anchor| !ids.contains_key(&anchor)))
    }
}

/// A SCIM id that a reference attribute names but the connector space does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: no resource with id {id:?}")]
pub struct UnknownReference {
    pub attribute: String,
    pub id: String,
}

/// Where a connector attribute's value comes from.
#[derive(Debug, Clone)]
enum Source {
    /// A SCIM attribute path.
    Path(ValuePath),
    /// An expression (see [`crate::expression`]); not written back by imports.
    Expr(Expr),
}

/// The target that names the object's DN rather than an attribute (DN-style connectors).
pub const DN_TARGET: &str = "dn";

/// The mapping of one connector.
#[derive(Debug, Clone)]
pub struct Mapping {
    entries: Vec<(String, Source)>,
}

/// Parses one mapping value: an expression, or a SCIM path.
pub fn parse_source(text: &str) -> Result<(), String> {
    if is_expression(text) {
        Expr::parse(text).map(|_| ())
    } else {
        ValuePath::parse(text).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The SCIM paths a mapping source reads (its path, or every path in its expression); none when
/// it does not parse (`parse_source` says why).
pub fn source_paths(text: &str) -> Vec<ValuePath> {
    if is_expression(text) {
        Expr::parse(text).map(|e| e.attribute_paths().into_iter().cloned().collect()).unwrap_or_default()
    } else {
        ValuePath::parse(text).into_iter().collect()
    }
}

impl Mapping {
    /// Builds the mapping from the configuration's `attributes` table.
    pub fn new(attributes: &BTreeMap<String, String>) -> Result<Self, String> {
        let entries = attributes
            .iter()
            .map(|(target, text)| {
                let source = if is_expression(text) {
                    Source::Expr(Expr::parse(text)?)
                } else {
                    Source::Path(ValuePath::parse(text).map_err(|e: FilterError| e.to_string())?)
                };
                Ok((target.clone(), source))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { entries })
    }

    /// The DN a resource's object gets, when the mapping has a `dn` target.
    pub fn dn(values: &TargetValues) -> Option<String> {
        values.get(DN_TARGET)?.first()?.as_text()
    }

    /// The connector attribute mapped from the SCIM `password` (which is never stored: it is
    /// written in the ADD, or by SetPassword later).
    pub fn password_target(&self) -> Option<&str> {
        self.entries.iter().find_map(|(t, source)| match source {
            Source::Path(p)
                if p.path.attr.eq_ignore_ascii_case("password")
                    && p.path.sub.is_none()
                    && p.filter.is_none()
                    && p.path.urn.as_deref().is_none_or(crate::paths::is_core_urn) =>
            {
                Some(t.as_str())
            }
            _ => None,
        })
    }

    /// Names of the connector attributes this mapping writes (not the `dn` target).
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(t, _)| t.as_str()).filter(|t| !t.eq_ignore_ascii_case(DN_TARGET))
    }

    /// The JSON values each mapped attribute takes from `resource`.
    fn raw(&self, resource: &Value, shape: &Shape) -> Vec<(&str, Vec<Value>)> {
        self.entries
            .iter()
            .map(|(target, source)| {
                let values: Vec<Value> = match source {
                    Source::Path(path) if shape.is_multi(target) => {
                        path.resolve(resource).into_iter().cloned().collect()
                    }
                    Source::Path(path) => pick(path, resource).into_iter().cloned().collect(),
                    // In the DN, values from the resource are escaped as DN values.
                    Source::Expr(expr) => {
                        expr.eval(resource, target.eq_ignore_ascii_case(DN_TARGET)).into_iter().collect()
                    }
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
                } else if let Some(value) = to_value(&v) {
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
            .filter(|(name, v)| !v.is_empty() && !name.eq_ignore_ascii_case(DN_TARGET))
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
        for (name, new) in after.iter().filter(|(name, _)| !name.eq_ignore_ascii_case(DN_TARGET)) {
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

impl Mapping {
    /// Writes target values back into a SCIM resource (for imports): each mapped path is set
    /// from its attribute, or removed when the attribute has no value. References are turned
    /// back into SCIM ids through `ids` (a reference the connector space does not know is left
    /// out). Attributes the mapping does not cover are left as they are.
    pub fn from_target(
        &self,
        resource: &mut Value,
        values: &TargetValues,
        shape: &Shape,
        ids: &HashMap<String, String>,
    ) {
        for (target, source) in &self.entries {
            // Expressions are not inverted: an import leaves what they computed alone.
            let Source::Path(path) = source else { continue };
            let mut json: Vec<Value> =
                values.get(target).map(|vs| vs.iter().map(value_to_json).collect()).unwrap_or_default();
            if shape.references.contains(target) {
                json = json
                    .iter()
                    .filter_map(|v| v.as_str().and_then(|a| ids.get(a)).map(|id| Value::String(id.clone())))
                    .collect();
            }
            set_path(resource, path, json, shape.is_multi(target) && scim_multi_valued(path));
        }
    }
}

/// Whether the SCIM attribute a path names is multi-valued. A multi-valued connector attribute
/// (most LDAP attributes are) mapped to a single-valued SCIM attribute gives it its first value.
/// Attributes of custom extension schemas follow the connector's schema.
fn scim_multi_valued(path: &ValuePath) -> bool {
    const MULTI: &[&str] = &[
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
        "members",
    ];
    let core = match &path.path.urn {
        None => true,
        Some(urn) => {
            crate::paths::is_core_urn(urn)
                || urn.eq_ignore_ascii_case("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        }
    };
    !core || MULTI.iter().any(|m| m.eq_ignore_ascii_case(&path.path.attr))
}

/// A protocol value as JSON.
pub fn value_to_json(v: &v1::Value) -> Value {
    use v1::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => Value::String(s.clone()),
        Some(Kind::IntegerValue(i)) => Value::from(*i),
        Some(Kind::BooleanValue(b)) => Value::Bool(*b),
        Some(Kind::BinaryValue(b)) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        None => Value::Null,
    }
}

/// Sets the values a path reaches (see [`Mapping::from_target`]).
fn set_path(resource: &mut Value, path: &ValuePath, values: Vec<Value>, multi: bool) {
    use crate::paths::is_core_urn;
    let Some(root) = resource.as_object_mut() else { return };
    let container = match &path.path.urn {
        Some(urn) if !is_core_urn(urn) => {
            let key =
                root.keys().find(|k| k.eq_ignore_ascii_case(urn)).cloned().unwrap_or_else(|| urn.clone());
            if values.is_empty() && !root.contains_key(&key) {
                return;
            }
            let entry = root.entry(key).or_insert_with(|| Value::Object(serde_json::Map::new()));
            match entry.as_object_mut() {
                Some(m) => m,
                None => return,
            }
        }
        _ => root,
    };
    let key = container
        .keys()
        .find(|k| k.eq_ignore_ascii_case(&path.path.attr))
        .cloned()
        .unwrap_or_else(|| path.path.attr.clone());
    let sub = path.sub_after_filter.as_deref().or(path.path.sub.as_deref());
    if let Some(filter) = &path.filter {
        // One element of a multi-valued attribute, chosen by the filter.
        let items = container.entry(key.clone()).or_insert_with(|| Value::Array(vec![]));
        let Value::Array(items) = items else { return };
        let at = items.iter().position(|e| filter.matches(e));
        match (at, values.into_iter().next(), sub) {
            (Some(i), Some(v), Some(sub)) => {
                if let Some(o) = items[i].as_object_mut() {
                    o.insert(sub.to_string(), v);
                }
            }
            (Some(i), None, _) => {
                items.remove(i);
            }
            (None, Some(v), Some(sub)) => {
                if let Some(mut element) = filter.eq_fields() {
                    element.insert(sub.to_string(), v);
                    items.push(Value::Object(element));
                }
            }
            _ => {}
        }
        if items.is_empty() {
            container.remove(&key);
        }
        return;
    }
    match (sub, multi) {
        (None, _) if values.is_empty() => {
            container.remove(&key);
        }
        (None, true) => {
            container.insert(key, Value::Array(values));
        }
        (None, false) => {
            container.insert(key, values.into_iter().next().unwrap_or(Value::Null));
        }
        (Some(sub), true) => {
            // `members.value`: keep the elements whose value stays (with their other
            // sub-attributes), add the new ones.
            let existing = match container.remove(&key) {
                Some(Value::Array(items)) => items,
                _ => vec![],
            };
            let mut kept: Vec<Value> =
                existing.into_iter().filter(|e| get_ci(e, sub).is_some_and(|v| values.contains(v))).collect();
            for v in values {
                if !kept.iter().any(|e| get_ci(e, sub) == Some(&v)) {
                    kept.push(serde_json::json!({ sub: v }));
                }
            }
            if !kept.is_empty() {
                container.insert(key, Value::Array(kept));
            }
        }
        (Some(sub), false) => {
            let value = values.into_iter().next();
            match container.get_mut(&key) {
                // `emails.value` on a multi-valued attribute: the primary (else first) element.
                Some(Value::Array(items)) => {
                    let i = items
                        .iter()
                        .position(|e| get_ci(e, "primary") == Some(&Value::Bool(true)))
                        .or(if items.is_empty() { None } else { Some(0) });
                    match (i, value) {
                        (Some(i), Some(v)) => {
                            if let Some(o) = items[i].as_object_mut() {
                                o.insert(sub.to_string(), v);
                            }
                        }
                        (Some(i), None) => {
                            items.remove(i);
                        }
                        (None, Some(v)) => items.push(serde_json::json!({ sub: v, "primary": true })),
                        (None, None) => {}
                    }
                    if items.is_empty() {
                        container.remove(&key);
                    }
                }
                Some(Value::Object(o)) => {
                    match value {
                        Some(v) => {
                            o.insert(sub.to_string(), v);
                        }
                        None => {
                            o.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                        }
                    }
                    if o.is_empty() {
                        container.remove(&key);
                    }
                }
                _ => {
                    if let Some(v) = value {
                        container.insert(key, serde_json::json!({ sub: v }));
                    }
                }
            }
        }
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
    fn multi_valued_connector_attributes_fill_single_valued_scim_attributes_with_one_value() {
        // LDAP's uid, givenName and departmentNumber are multi-valued; SCIM's are not.
        let m = mapping(&[
            ("uid", "userName"),
            ("givenName", "name.givenName"),
            ("departmentNumber", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            ("mail", "emails.value"),
        ]);
        let s = shape(&["uid", "givenName", "departmentNumber", "mail"], &[]);
        let values: TargetValues = [
            ("uid", vec![v1::Value::string("ada"), v1::Value::string("ada2")]),
            ("givenName", vec![v1::Value::string("Ada")]),
            ("departmentNumber", vec![v1::Value::string("R&D")]),
            ("mail", vec![v1::Value::string("a@x"), v1::Value::string("b@x")]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut r = json!({});
        m.from_target(&mut r, &values, &s, &HashMap::new());
        assert_eq!(r["userName"], "ada");
        assert_eq!(r["name"], json!({"givenName": "Ada"}));
        assert_eq!(r["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "R&D");
        assert_eq!(
            r["emails"],
            json!([{"value": "a@x"}, {"value": "b@x"}]),
            "a multi-valued SCIM attribute keeps all"
        );
    }

    #[test]
    fn target_values_write_back_into_resources() {
        let m = mapping(&[
            ("user_name", "userName"),
            ("given", "name.givenName"),
            ("mail", r#"emails[type eq "work"].value"#),
            ("active", "active"),
            ("dept", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
        ]);
        let s = Shape::default();
        let values: TargetValues = [
            ("user_name", v1::Value::string("imported")),
            ("given", v1::Value::string("Ada")),
            ("mail", v1::Value::string("ada@x")),
            ("active", v1::Value::boolean(true)),
            ("dept", v1::Value::string("Eng")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), vec![v]))
        .collect();
        let mut user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "title": "kept"});
        m.from_target(&mut user, &values, &s, &HashMap::new());
        assert_eq!(user["userName"], "imported");
        assert_eq!(user["name"]["givenName"], "Ada");
        assert_eq!(user["emails"], json!([{"type": "work", "value": "ada@x"}]));
        assert_eq!(user["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "Eng");
        assert_eq!(user["title"], "kept", "unmapped attributes stay");
        // And the round trip gives the same target values.
        assert_eq!(m.to_target(&user, &s, &HashMap::new()).unwrap(), values);
        // Values that went away are removed.
        let mut fewer = values.clone();
        fewer.insert("mail".into(), vec![]);
        fewer.insert("given".into(), vec![]);
        m.from_target(&mut user, &fewer, &s, &HashMap::new());
        assert!(user.get("emails").is_none() && user.get("name").is_none(), "{user}");
    }

    #[test]
    fn members_write_back_as_scim_ids() {
        let m = mapping(&[("members", "members.value")]);
        let s = shape(&["members"], &["members"]);
        let ids: HashMap<String, String> =
            [("a1", "u1"), ("a2", "u2")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let values: TargetValues = [(
            "members".to_string(),
            vec![v1::Value::string("a1"), v1::Value::string("a2"), v1::Value::string("unknown")],
        )]
        .into_iter()
        .collect();
        let mut group =
            json!({"displayName": "g", "members": [{"value": "u1", "display": "One"}, {"value": "gone"}]});
        m.from_target(&mut group, &values, &s, &ids);
        assert_eq!(group["members"], json!([{"value": "u1", "display": "One"}, {"value": "u2"}]));
    }

    #[test]
    fn expressions_and_the_dn_target() {
        let m = mapping(&[
            (
                "dn",
                r#"Join("", "uid=", [userName], ",", Switch([title], "ou=Staff", "Boss", "ou=Bosses"), ",dc=example,dc=com")"#,
            ),
            ("cn", r#"Join(" ", [name.givenName], ToUpper([name.familyName]))"#),
            ("uid", "userName"),
        ]);
        let s = Shape::default();
        let user = json!({"userName": "a,b", "name": {"givenName": "Ada", "familyName": "Lovelace"}, "title": "Boss"});
        let v = m.to_target(&user, &s, &HashMap::new()).unwrap();
        assert_eq!(
            Mapping::dn(&v).as_deref(),
            Some("uid=a\\,b,ou=Bosses,dc=example,dc=com"),
            "the DN escapes what it takes"
        );
        assert_eq!(one(&v, "cn"), Some(v1::Value::string("Ada LOVELACE")));
        assert_eq!(one(&v, "uid"), Some(v1::Value::string("a,b")), "only the DN is escaped");
        assert_eq!(m.targets().collect::<Vec<_>>(), ["cn", "uid"], "the DN is not an attribute");
        assert!(Mapping::add_changes(&v).iter().all(|c| c.name != "dn"));
        // Imports leave expressions alone.
        let mut back = json!({"userName": "x"});
        m.from_target(&mut back, &v, &s, &HashMap::new());
        assert!(back.get("cn").is_none() && back["userName"] == "a,b");
        assert!(Mapping::new(&[("cn".to_string(), "Join(".to_string())].into_iter().collect()).is_err());
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
