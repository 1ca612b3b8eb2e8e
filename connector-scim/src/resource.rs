//! The connector's attributes are paths into the downstream SCIM resource, in a strict subset
//! of RFC 7644's path grammar: `userName`, `name.givenName`, `emails[type eq "work"].value`,
//! `members` (a multi-valued attribute: its values' `value`), and any of these behind an
//! extension's schema URN (`urn:...:enterprise:2.0:User:manager`). This module reads and writes
//! values at such paths in a resource's JSON, and builds the RFC-strict PATCH operations that
//! change them.

use serde_json::{Map, Value as Json, json};

/// One parsed attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The schema URN of an extension attribute (`None` for the core schema).
    pub schema: Option<String>,
    /// The attribute.
    pub attribute: String,
    /// `[type eq "work"]`: the value of the multi-valued attribute whose `type` is this.
    pub of_type: Option<String>,
    /// `.givenName`: the sub-attribute.
    pub sub: Option<String>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

impl Path {
    /// Reads a path; `None` when it is not of the supported forms.
    pub fn parse(text: &str) -> Option<Self> {
        // An extension URN ends at the last ':' before the attribute.
        let (schema, rest) = if text.to_ascii_lowercase().starts_with("urn:") {
            let bracket = text.find('[').unwrap_or(text.len());
            let colon = text[..bracket].rfind(':')?;
            (Some(text[..colon].to_string()), &text[colon + 1..])
        } else {
            (None, text)
        };
        let (head, sub) = match rest.rsplit_once('.') {
            Some((head, sub)) => (head, Some(sub)),
            None => (rest, None),
        };
        let (attribute, of_type) = match head.split_once('[') {
            Some((attribute, filter)) => {
                let filter = filter.strip_suffix(']')?;
                let value = filter.strip_prefix("type eq \"")?.strip_suffix('"')?;
                if value.contains('"') || value.contains('\\') {
                    return None;
                }
                (attribute, Some(value.to_string()))
            }
            None => (head, None),
        };
        if !is_name(attribute) || sub.is_some_and(|s| !is_name(s)) || (of_type.is_some() && sub.is_none()) {
            return None;
        }
        Some(Self { schema, attribute: attribute.to_string(), of_type, sub: sub.map(str::to_string) })
    }

    /// The path as RFC 7644 writes it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(schema) = &self.schema {
            out.push_str(schema);
            out.push(':');
        }
        out.push_str(&self.attribute);
        if let Some(t) = &self.of_type {
            out.push_str(&format!("[type eq \"{t}\"]"));
        }
        if let Some(sub) = &self.sub {
            out.push('.');
            out.push_str(sub);
        }
        out
    }

    /// The path of the attribute itself (without filter and sub-attribute).
    pub fn attribute_path(&self) -> String {
        Path { of_type: None, sub: None, ..self.clone() }.text()
    }

    /// The object that holds the attribute: the resource, or its extension's object.
    fn holder<'a>(&self, resource: &'a Json) -> Option<&'a Map<String, Json>> {
        let object = resource.as_object()?;
        match &self.schema {
            None => Some(object),
            Some(urn) => find(object, urn)?.as_object(),
        }
    }

    fn holder_mut<'a>(&self, resource: &'a mut Json) -> &'a mut Map<String, Json> {
        if !resource.is_object() {
            *resource = Json::Object(Map::new());
        }
        let object = resource.as_object_mut().expect("an object");
        match &self.schema {
            None => object,
            Some(urn) => {
                let key = key_of(object, urn).unwrap_or_else(|| urn.clone());
                let ext = object.entry(key).or_insert_with(|| Json::Object(Map::new()));
                if !ext.is_object() {
                    *ext = Json::Object(Map::new());
                }
                ext.as_object_mut().expect("an object")
            }
        }
    }

    /// The values at this path in `resource`. A complex value read without a sub-attribute
    /// gives its `value` (a manager's id, a member's id).
    pub fn read(&self, resource: &Json) -> Vec<Json> {
        let Some(holder) = self.holder(resource) else { return vec![] };
        let Some(value) = find(holder, &self.attribute) else { return vec![] };
        let leaf = |v: &Json| -> Option<Json> {
            match (&self.sub, v) {
                (Some(sub), Json::Object(o)) => find(o, sub).cloned(),
                (Some(_), _) => None,
                (None, Json::Object(o)) => find(o, "value").cloned(),
                (None, other) => Some(other.clone()),
            }
        };
        let values: Vec<Json> = match value {
            Json::Array(items) => items
                .iter()
                .filter(|item| match &self.of_type {
                    Some(t) => item
                        .as_object()
                        .and_then(|o| find(o, "type"))
                        .and_then(Json::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(t)),
                    None => true,
                })
                .filter_map(leaf)
                .collect(),
            other => leaf(other).into_iter().collect(),
        };
        values.into_iter().filter(|v| !v.is_null()).collect()
    }

    /// Whether `resource` has an element for this path: for a typed path, a value of the
    /// multi-valued attribute with that type (even one whose sub-attribute is gone); else any
    /// value.
    pub fn has_element(&self, resource: &Json) -> bool {
        let Some(t) = &self.of_type else { return !self.read(resource).is_empty() };
        self.holder(resource).and_then(|h| find(h, &self.attribute)).and_then(Json::as_array).is_some_and(
            |items| {
                items.iter().any(|i| {
                    i.as_object()
                        .and_then(|o| find(o, "type"))
                        .and_then(Json::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(t))
                })
            },
        )
    }

    /// Sets this path's values in `resource` (none removes them). `multi` is the downstream
    /// schema's multi-valuedness of the attribute, `complex` whether its values are objects.
    pub fn write(&self, resource: &mut Json, values: &[Json], multi: bool, complex: bool) {
        let holder = self.holder_mut(resource);
        let key = key_of(holder, &self.attribute).unwrap_or_else(|| self.attribute.clone());
        match (&self.of_type, &self.sub) {
            (Some(t), Some(sub)) => {
                // One value of a multi-valued complex attribute, by its type.
                let list = holder.entry(key.clone()).or_insert_with(|| Json::Array(vec![]));
                if !list.is_array() {
                    *list = Json::Array(vec![]);
                }
                let items = list.as_array_mut().expect("an array");
                let at = items.iter().position(|i| {
                    i.as_object()
                        .and_then(|o| find(o, "type"))
                        .and_then(Json::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(t))
                });
                match (at, values.first()) {
                    (Some(i), Some(v)) => {
                        items[i][sub.as_str()] = v.clone();
                    }
                    (None, Some(v)) => items.push(json!({ "type": t, sub.as_str(): v })),
                    (Some(i), None) => {
                        if let Some(o) = items[i].as_object_mut() {
                            o.remove(sub);
                            if o.keys().all(|k| k == "type" || k == "primary") {
                                items.remove(i);
                            }
                        }
                    }
                    (None, None) => {}
                }
                if items.is_empty() {
                    holder.remove(&key);
                }
            }
            (None, Some(sub)) => {
                let object = holder.entry(key.clone()).or_insert_with(|| Json::Object(Map::new()));
                if !object.is_object() {
                    *object = Json::Object(Map::new());
                }
                let o = object.as_object_mut().expect("an object");
                match values.first() {
                    Some(v) => {
                        o.insert(sub.clone(), v.clone());
                    }
                    None => {
                        o.remove(sub);
                    }
                }
                if o.is_empty() {
                    holder.remove(&key);
                }
            }
            (_, None) => {
                let wrap = |v: &Json| if complex { json!({ "value": v }) } else { v.clone() };
                if values.is_empty() {
                    holder.remove(&key);
                } else if multi {
                    holder.insert(key, Json::Array(values.iter().map(wrap).collect()));
                } else {
                    holder.insert(key, wrap(&values[0]));
                }
            }
        }
    }
}

/// A member of `object` by name, case-insensitively (SCIM attribute names are).
pub fn find<'a>(object: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    object.get(name).or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn key_of(object: &Map<String, Json>, name: &str) -> Option<String> {
    object.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// A string as a SCIM filter's comparison value (RFC 7644 3.4.2.2: a JSON string).
pub fn filter_string(value: &str) -> String {
    Json::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    #[test]
    fn paths_are_read_in_the_supported_forms_only() {
        let p = Path::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(
            (p.attribute.as_str(), p.of_type.as_deref(), p.sub.as_deref()),
            ("emails", Some("work"), Some("value"))
        );
        assert_eq!(p.text(), r#"emails[type eq "work"].value"#);
        let p = Path::parse(&format!("{ENTERPRISE}:manager")).unwrap();
        assert_eq!(
            (p.schema.as_deref(), p.attribute.as_str(), p.sub.as_deref()),
            (Some(ENTERPRISE), "manager", None)
        );
        let p = Path::parse(&format!("{ENTERPRISE}:manager.displayName")).unwrap();
        assert_eq!(p.sub.as_deref(), Some("displayName"));
        assert_eq!(Path::parse("name.givenName").unwrap().attribute_path(), "name");
        for bad in [
            "",
            "emails[value eq \"x\"].value",
            "emails[type eq \"work\"]",
            "a b",
            "emails[type eq \"a\"b\"].value",
        ] {
            assert_eq!(Path::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_are_read_and_written_at_their_paths() {
        let mut r = json!({"userName": "a", "Emails": [{"type": "Work", "value": "a@x"}, {"type": "home", "value": "h@x"}],
                           ENTERPRISE: {"manager": {"value": "m1"}}, "members": [{"value": "u1"}, {"value": "u2"}]});
        let p = |s: &str| Path::parse(s).unwrap();
        assert_eq!(p(r#"emails[type eq "work"].value"#).read(&r), [json!("a@x")]);
        assert_eq!(p(&format!("{ENTERPRISE}:manager")).read(&r), [json!("m1")]);
        assert_eq!(p("members").read(&r), [json!("u1"), json!("u2")]);
        assert!(p("name.givenName").read(&r).is_empty());
        p(r#"emails[type eq "work"].value"#).write(&mut r, &[json!("b@x")], true, true);
        p(r#"phoneNumbers[type eq "mobile"].value"#).write(&mut r, &[json!("123")], true, true);
        p("name.givenName").write(&mut r, &[json!("G")], false, true);
        p(&format!("{ENTERPRISE}:employeeNumber")).write(&mut r, &[json!("7")], false, false);
        p("members").write(&mut r, &[json!("u3")], true, true);
        p(r#"emails[type eq "home"].value"#).write(&mut r, &[], true, true);
        assert_eq!(
            r,
            json!({"userName": "a", "Emails": [{"type": "Work", "value": "b@x"}],
                   "phoneNumbers": [{"type": "mobile", "value": "123"}], "name": {"givenName": "G"},
                   ENTERPRISE: {"manager": {"value": "m1"}, "employeeNumber": "7"}, "members": [{"value": "u3"}]})
        );
        assert_eq!(filter_string("a\"b\\c"), r#""a\"b\\c""#);
    }
}
