//! The PATCH engine (RFC 7644 §3.5.2): `add`, `replace` and `remove` operations, with and
//! without `path`, on a resource held as JSON. Operation names are case-insensitive; a path-less
//! value's keys may be attribute paths themselves (`"name.givenName"`, URN-prefixed), as Entra ID
//! sends them.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::resource::{PATCH_OP, lists_schema};
use super::schema::{ResourceSchemas, Target};
use crate::paths::{AttrPath, Filter, ValuePath, is_core_urn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies a PatchOp request body to `resource`, its paths resolved against `schemas`: a path
/// that is exactly an extension's URN names that extension's whole object (RFC 7644 §3.5.2,
/// §3.10); a path no schema defines is refused with `invalidPath` (or skipped, where the app
/// drops unknown attributes).
pub fn apply(resource: &mut Value, body: &Value, schemas: &ResourceSchemas) -> Result<(), ScimError> {
    if !lists_schema(body, PATCH_OP) {
        return Err(ScimError::bad_request("invalidSyntax", format!("\"schemas\" must list {PATCH_OP}")));
    }
    let operations = body
        .get("Operations")
        .or_else(|| body.get("operations"))
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "\"Operations\" must be an array"))?;
    for operation in operations {
        let op = match operation.get("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
            Some("add") => Op::Add,
            Some("replace") => Op::Replace,
            Some("remove") => Op::Remove,
            other => return Err(ScimError::bad_request("invalidSyntax", format!("unknown op {other:?}"))),
        };
        let value = operation.get("value").cloned().unwrap_or(Value::Null);
        match operation.get("path") {
            Some(Value::String(path)) => apply_target(resource, op, schemas, path, value)?,
            Some(Value::Null) | None if op == Op::Remove => {
                return Err(ScimError::bad_request("noTarget", "remove needs a path"));
            }
            Some(Value::Null) | None => {
                let Value::Object(map) = value else {
                    return Err(ScimError::bad_request(
                        "invalidValue",
                        "a path-less add or replace needs an object value",
                    ));
                };
                // Each key is an attribute path (Entra sends `name.givenName` and URN-prefixed
                // ones as keys), or an extension's URN with its object.
                for (key, v) in map {
                    apply_target(resource, op, schemas, &key, v)?;
                }
            }
            Some(_) => return Err(ScimError::bad_request("invalidPath", "\"path\" must be a string")),
        }
    }
    Ok(())
}

/// Applies one operation to what `path` resolves to.
fn apply_target(
    resource: &mut Value,
    op: Op,
    schemas: &ResourceSchemas,
    path: &str,
    value: Value,
) -> Result<(), ScimError> {
    match schemas.resolve(path)? {
        Target::Path(path) => apply_path(resource, op, &path, value),
        Target::Unknown(reason) => schemas.refuse_unknown("invalidPath", &reason),
        Target::Extension(urn) => match (op, value) {
            // The whole extension object goes; `schemas` follows when the resource is checked.
            (Op::Remove, _) | (_, Value::Null) => {
                if let Some(root) = resource.as_object_mut() {
                    root.retain(|k, _| !k.eq_ignore_ascii_case(&urn));
                }
                Ok(())
            }
            // A complex attribute's sub-attributes are added or replaced one by one; the others
            // are left as they are (RFC 7644 §3.5.2.1 and §3.5.2.3).
            // (A `schemas` member in the value, as some clients' models serialise an extension,
            // only restates which schema this is.)
            (_, Value::Object(values)) => {
                for (name, v) in values.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case("schemas")) {
                    apply_target(resource, op, schemas, &format!("{urn}:{name}"), v)?;
                }
                Ok(())
            }
            _ => Err(ScimError::bad_request(
                "invalidValue",
                format!("{urn} takes an object of its attributes"),
            )),
        },
    }
}

/// Whether two values of a multi-valued attribute are the same: equal `value`s for complex
/// values (a member added twice is one member), equality otherwise.
fn same_value(a: &Value, b: &Value) -> bool {
    match (get_value(a), get_value(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn get_value(v: &Value) -> Option<&Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case("value")).map(|(_, v)| v)
}

fn container_mut<'a>(
    resource: &'a mut Value,
    path: &AttrPath,
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let root = resource.as_object_mut()?;
    match &path.urn {
        Some(urn) if !is_core_urn(urn) => {
            let key =
                root.keys().find(|k| k.eq_ignore_ascii_case(urn)).cloned().unwrap_or_else(|| urn.clone());
            if !root.contains_key(&key) {
                if !create {
                    return None;
                }
                root.insert(key.clone(), Value::Object(Map::new()));
                add_schema(root, urn);
            }
            root.get_mut(&key)?.as_object_mut()
        }
        _ => Some(root),
    }
}

fn add_schema(root: &mut Map<String, Value>, urn: &str) {
    if let Some(Value::Array(schemas)) = root.get_mut("schemas")
        && !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)))
    {
        schemas.push(Value::String(urn.to_string()));
    }
}

/// The actual key of `name` in `map` (attribute names are case-insensitive).
fn key_of(map: &Map<String, Value>, name: &str) -> String {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_string())
}

fn apply_path(resource: &mut Value, op: Op, path: &ValuePath, value: Value) -> Result<(), ScimError> {
    let attr = &path.path;
    if matches!(attr.attr.to_ascii_lowercase().as_str(), "id" | "meta" | "schemas") && attr.urn.is_none() {
        return Err(ScimError::bad_request("mutability", format!("{} cannot be changed", attr.attr)));
    }
    let Some(container) = container_mut(resource, attr, op != Op::Remove) else {
        return Ok(()); // removing from an absent extension: nothing to do
    };
    let key = key_of(container, &attr.attr);
    if let Some(filter) = &path.filter {
        return apply_filtered(container, &key, op, filter, path.sub_after_filter.as_deref(), value);
    }
    match (&attr.sub, op) {
        // `{"op": "Remove", "path": "members", "value": [{"value": id}]}` (Entra): remove those
        // values, not the whole attribute.
        (None, Op::Remove) if value.is_array() || value.is_object() => {
            let gone: Vec<Value> = match value {
                Value::Array(items) => items,
                one => vec![one],
            };
            if let Some(Value::Array(existing)) = container.get_mut(&key) {
                existing.retain(|item| !gone.iter().any(|g| same_value(g, item)));
                if existing.is_empty() {
                    container.remove(&key);
                }
            }
        }
        (None, Op::Remove) => {
            container.remove(&key);
        }
        (None, _) if value.is_null() => {
            container.remove(&key);
        }
        (None, Op::Add) => match (container.get_mut(&key), value) {
            (Some(Value::Array(existing)), Value::Array(new)) => {
                for v in new {
                    if !existing.iter().any(|e| same_value(e, &v)) {
                        existing.push(v);
                    }
                }
            }
            (Some(Value::Object(existing)), Value::Object(new)) => {
                for (k, v) in new {
                    let k = key_of(existing, &k);
                    existing.insert(k, v);
                }
            }
            (_, value) => {
                container.insert(key, value);
            }
        },
        (None, Op::Replace) => {
            container.insert(key, value);
        }
        (Some(sub), op) => {
            let parent = container.entry(key).or_insert_with(|| Value::Object(Map::new()));
            match parent {
                Value::Object(obj) => {
                    let sub_key = key_of(obj, sub);
                    if op == Op::Remove || value.is_null() {
                        obj.remove(&sub_key);
                    } else {
                        obj.insert(sub_key, value);
                    }
                }
                // `emails.value` on a multi-valued attribute: apply to every element.
                Value::Array(items) => {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        let sub_key = key_of(item, sub);
                        if op == Op::Remove {
                            item.remove(&sub_key);
                        } else {
                            item.insert(sub_key, value.clone());
                        }
                    }
                }
                _ => {
                    return Err(ScimError::bad_request(
                        "invalidPath",
                        format!("{} has no sub-attributes", attr.attr),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn apply_filtered(
    container: &mut Map<String, Value>,
    key: &str,
    op: Op,
    filter: &Filter,
    sub: Option<&str>,
    value: Value,
) -> Result<(), ScimError> {
    if op == Op::Remove && !matches!(container.get(key), Some(Value::Array(_))) {
        return Ok(());
    }
    let no_target = || ScimError::bad_request("noTarget", format!("no {key} value matches the filter"));
    if !matches!(container.get(key), Some(Value::Array(_))) {
        container.insert(key.to_string(), Value::Array(vec![]));
    }
    let Some(Value::Array(items)) = container.get_mut(key) else { return Err(no_target()) };
    let matching: Vec<usize> = (0..items.len()).filter(|i| filter.matches(&items[*i])).collect();
    if matching.is_empty() && op != Op::Remove {
        // `emails[type eq "work"].value` for a user without a work email (Entra sends this when
        // an attribute gets its first value): the value is created, as `add` does for a path
        // that has no value yet (RFC 7644 §3.5.2.1).
        let created = match (sub, filter.eq_fields()) {
            (Some(sub), Some(mut element)) if !value.is_null() => {
                element.insert(sub.to_string(), value);
                Some(Value::Object(element))
            }
            _ => None,
        };
        match created {
            Some(element) => items.push(element),
            None => {
                if items.is_empty() {
                    container.remove(key);
                }
                return Err(no_target());
            }
        }
        return Ok(());
    }
    match (op, sub) {
        (Op::Remove, None) => {
            for i in matching.into_iter().rev() {
                items.remove(i);
            }
        }
        (Op::Remove, Some(sub)) => {
            for i in matching {
                if let Some(obj) = items[i].as_object_mut() {
                    let k = key_of(obj, sub);
                    obj.remove(&k);
                }
            }
        }
        (_, Some(sub)) => {
            for i in matching {
                if let Some(obj) = items[i].as_object_mut() {
                    let k = key_of(obj, sub);
                    obj.insert(k, value.clone());
                }
            }
        }
        (_, None) => {
            for i in matching {
                match (&mut items[i], &value) {
                    (Value::Object(obj), Value::Object(new)) if op == Op::Add => {
                        for (k, v) in new {
                            let k = key_of(obj, k);
                            obj.insert(k, v.clone());
                        }
                    }
                    (slot, _) => *slot = value.clone(),
                }
            }
        }
    }
    if items.is_empty() {
        container.remove(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(resource: &mut Value, ops: Value) -> Result<(), ScimError> {
        let schemas = ResourceSchemas::of(
            if resource.get("members").is_some()
                || resource.get("displayName").is_some() && resource.get("userName").is_none()
            {
                "Group"
            } else {
                "User"
            },
            &[],
            super::super::schema::UnknownAttributes::Refuse,
        );
        apply(resource, &json!({"schemas": [PATCH_OP], "Operations": ops}), &schemas)
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bjensen",
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "w@x", "type": "work"}, {"value": "h@x", "type": "home"}]
        })
    }

    #[test]
    fn entra_style_operations() {
        let mut u = user();
        patch(&mut u, json!([
            {"op": "Replace", "path": "displayName", "value": "Babs"},
            {"op": "Add", "value": {"name.familyName": "Jensen", "title": "Boss"}},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@x"},
            {"op": "Add", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Eng"}},
        ]))
        .unwrap();
        assert_eq!(u["displayName"], "Babs");
        assert_eq!(u["name"], json!({"givenName": "Barbara", "familyName": "Jensen"}));
        assert_eq!(u["title"], "Boss");
        assert_eq!(u["emails"][0]["value"], "new@x");
        assert_eq!(u["emails"][1]["value"], "h@x");
        assert_eq!(u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "Eng");
        assert!(u["schemas"].as_array().unwrap().len() == 2, "extension schema listed");
    }

    #[test]
    fn removes() {
        let mut u = user();
        patch(
            &mut u,
            json!([
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "remove", "path": "name.givenName"},
            ]),
        )
        .unwrap();
        assert_eq!(u["emails"], json!([{"value": "w@x", "type": "work"}]));
        assert_eq!(u["name"], json!({}));
        patch(&mut u, json!([{"op": "remove", "path": "emails"}])).unwrap();
        assert!(u.get("emails").is_none());
    }

    #[test]
    fn adds_to_multi_valued_attributes_without_duplicates() {
        let mut u = user();
        patch(&mut u, json!([{"op": "add", "path": "emails", "value": [{"value": "h@x", "type": "home"}, {"value": "o@x"}]}])).unwrap();
        assert_eq!(u["emails"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_filtered_path_without_a_match_creates_the_value() {
        let mut u = user();
        patch(
            &mut u,
            json!([
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"},
                {"op": "Replace", "path": "emails[type eq \"home\"].value", "value": "h@x"},
            ]),
        )
        .unwrap();
        assert_eq!(u["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555"}]));
        assert_eq!(u["emails"][1], json!({"type": "home", "value": "h@x"}));
        // Only when the filter says what the new value is.
        let e = patch(&mut u, json!([{"op": "add", "path": "ims[type ne \"x\"].value", "value": "a"}]))
            .unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        assert!(u.get("ims").is_none(), "nothing left behind");
    }

    #[test]
    fn group_members_one_by_one_in_both_forms() {
        let mut g = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "g",
                           "members": [{"value": "u1"}]});
        patch(&mut g, json!([{"op": "Add", "path": "members", "value": [{"value": "u2"}, {"value": "u1", "display": "x"}]}])).unwrap();
        assert_eq!(g["members"], json!([{"value": "u1"}, {"value": "u2"}]), "added once");
        patch(&mut g, json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}])).unwrap();
        assert_eq!(g["members"], json!([{"value": "u2"}]));
        patch(&mut g, json!([{"op": "remove", "path": "members[value eq \"u2\"]"}])).unwrap();
        assert!(g.get("members").is_none());
        patch(&mut g, json!([{"op": "add", "path": "members", "value": [{"value": "u3"}]}])).unwrap();
        patch(&mut g, json!([{"op": "replace", "path": "members", "value": [{"value": "u4"}]}])).unwrap();
        assert_eq!(g["members"], json!([{"value": "u4"}]));
        patch(&mut g, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(g.get("members").is_none(), "remove without a value empties it");
    }

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn schemas(unknown: super::super::schema::UnknownAttributes) -> ResourceSchemas {
        ResourceSchemas::of("User", &[], unknown)
    }

    /// A user patched, then checked as a request's result is (`validate_user`, then conform).
    fn patched(ops: Value, unknown: super::super::schema::UnknownAttributes) -> Result<Value, ScimError> {
        let mut u = user();
        let schemas = schemas(unknown);
        apply(&mut u, &json!({"schemas": [PATCH_OP], "Operations": ops}), &schemas)?;
        let (mut u, _) = super::super::resource::validate_user(u)?;
        schemas.conform(&mut u)?;
        Ok(u)
    }

    use super::super::schema::UnknownAttributes::{Ignore, Refuse};

    #[test]
    fn a_schema_urn_as_path_is_the_whole_extension() {
        for op in ["add", "replace", "Replace"] {
            let u = patched(
                json!([{"op": op, "path": ENTERPRISE, "value": {"department": "Eng", "employeeNumber": "7"}}]),
                Refuse,
            )
            .unwrap();
            assert_eq!(u[ENTERPRISE], json!({"department": "Eng", "employeeNumber": "7"}), "{op}");
            assert_eq!(u["schemas"], json!([super::super::resource::USER_SCHEMA, ENTERPRISE]), "{op}");
            assert!(u.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0").is_none(), "{op}");
        }
        // Replace leaves the sub-attributes it does not name (RFC 7644 §3.5.2.3).
        let u = patched(
            json!([
                {"op": "add", "path": ENTERPRISE, "value": {"department": "Eng", "costCenter": "1"}},
                {"op": "replace", "path": ENTERPRISE, "value": {"department": "Ops"}},
            ]),
            Refuse,
        )
        .unwrap();
        assert_eq!(u[ENTERPRISE], json!({"department": "Ops", "costCenter": "1"}));
        let u = patched(
            json!([
                {"op": "add", "path": ENTERPRISE, "value": {"department": "Eng"}},
                {"op": "remove", "path": ENTERPRISE.to_uppercase()},
            ]),
            Refuse,
        )
        .unwrap();
        assert!(u.get(ENTERPRISE).is_none(), "removed: {u}");
        assert_eq!(u["schemas"], json!([super::super::resource::USER_SCHEMA]), "and no longer listed");
        // Path-less, the URN as a key does the same.
        let u = patched(json!([{"op": "add", "value": {ENTERPRISE: {"division": "D"}}}]), Refuse).unwrap();
        assert_eq!(u[ENTERPRISE], json!({"division": "D"}));
    }

    #[test]
    fn paths_that_name_nothing_are_refused_or_dropped_as_configured() {
        for (path, scim_type) in [
            ("notAnAttribute", "invalidPath"),
            ("urn:example:evil:2.0:Thing:attr", "invalidPath"),
            ("department", "invalidPath"),
            ("name.nickname", "invalidPath"),
            ("emails[type eq \"work\"].colour", "invalidPath"),
        ] {
            let e = patched(json!([{"op": "add", "path": path, "value": "x"}]), Refuse).unwrap_err();
            assert_eq!((e.status.as_u16(), e.scim_type), (400, Some(scim_type)), "{path}: {e:?}");
            let u = patched(json!([{"op": "add", "path": path, "value": "x"}]), Ignore).unwrap();
            assert_eq!(u, patched(json!([]), Ignore).unwrap(), "{path}: nothing stored");
        }
        let e = patched(json!([{"op": "add", "value": {"notAnAttribute": 1}}]), Refuse).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        // A value with a sub-attribute no schema has is an invalid value.
        let e =
            patched(json!([{"op": "add", "path": "name", "value": {"nickname": "x"}}]), Refuse).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
        let e = patched(json!([{"op": "add", "path": "title", "value": {"deep": {"deeper": 1}}}]), Refuse)
            .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"), "a simple attribute holds one value");
    }

    /// A resource stored by an earlier version with data no schema defines (it did not check)
    /// can still be patched: that data is dropped (and logged), not held against the client.
    #[test]
    fn legacy_undeclared_data_does_not_block_a_patch() {
        let mut stored = user();
        stored["favouriteColour"] = json!("blue");
        stored["title"] = json!({"deep": {"deeper": 1}});
        stored["name"]["nickname"] = json!("x");
        let schemas = schemas(Refuse);
        assert!(schemas.conform(&mut stored.clone()).is_err(), "the stored data does not conform");
        let mut patched = stored.clone();
        schemas.drop_legacy(&mut patched);
        let ops = json!([{"op": "replace", "path": "displayName", "value": "B"}]);
        apply(&mut patched, &json!({"schemas": [PATCH_OP], "Operations": ops}), &schemas).unwrap();
        schemas.conform(&mut patched).expect("what is left conforms");
        assert_eq!(patched["displayName"], "B");
        assert!(patched.get("favouriteColour").is_none() && patched.get("title").is_none(), "{patched}");
        assert_eq!(patched["name"], json!({"givenName": "Barbara"}));
        // What the client sends is still checked.
        let bad = json!([{"op": "add", "path": "favouriteColour", "value": "red"}]);
        assert!(apply(&mut patched, &json!({"schemas": [PATCH_OP], "Operations": bad}), &schemas).is_err());
    }

    #[test]
    fn a_bare_value_of_a_multi_valued_attribute_is_a_list_of_one_and_legacy_drops_per_value() {
        let schemas = schemas(Refuse);
        let mut u = json!({"schemas": [super::super::resource::USER_SCHEMA], "userName": "u",
                           "emails": {"value": "a@x", "type": "work"}});
        schemas.conform(&mut u).unwrap();
        assert_eq!(u["emails"], json!([{"value": "a@x", "type": "work"}]));
        let mut stored = json!({"schemas": [super::super::resource::USER_SCHEMA, 7], "userName": "u",
                                "emails": [{"value": "a@x"}, {"value": {"deep": 1}}]});
        schemas.drop_legacy(&mut stored);
        assert_eq!(stored["emails"], json!([{"value": "a@x"}]), "only the misshapen value goes");
        schemas.conform(&mut stored).expect("conforms after the legacy drop");
    }

    /// Entra's short `manager` path works for every operation, with a path and without.
    #[test]
    fn the_manager_alias_works_for_every_operation() {
        let manager = |u: &Value| u[ENTERPRISE]["manager"]["value"].clone();
        let shapes =
            [json!([{"$ref": "https://h/Users/m-1", "value": "m-1"}]), json!({"value": "m-1"}), json!("m-1")];
        for op in ["Add", "Replace", "add", "replace"] {
            for value in &shapes {
                let u = patched(json!([{"op": op, "path": "manager", "value": value}]), Refuse).unwrap();
                assert_eq!(manager(&u), "m-1", "{op} path {value}");
                let u = patched(json!([{"op": op, "value": {"manager": value}}]), Refuse).unwrap();
                assert_eq!(manager(&u), "m-1", "{op} path-less {value}");
                let full = format!("{ENTERPRISE}:manager");
                let u = patched(json!([{"op": op, "path": full, "value": value}]), Refuse).unwrap();
                assert_eq!(manager(&u), "m-1", "{op} full path {value}");
            }
        }
        for remove in ["manager", &format!("{ENTERPRISE}:manager"), "MANAGER"] {
            let u = patched(
                json!([
                    {"op": "Add", "path": "manager", "value": [{"value": "m-1"}]},
                    {"op": "add", "path": ENTERPRISE, "value": {"department": "Eng"}},
                    {"op": "Remove", "path": remove},
                ]),
                Refuse,
            )
            .unwrap();
            assert!(u[ENTERPRISE].get("manager").is_none(), "{remove}: {u}");
            assert_eq!(u[ENTERPRISE]["department"], "Eng", "{remove}: the rest stays");
            let u = patched(
                json!([{"op": "Add", "path": "manager", "value": "m-1"}, {"op": "Remove", "path": remove}]),
                Refuse,
            )
            .unwrap();
            assert!(u.get(ENTERPRISE).is_none(), "{remove}: an empty extension goes: {u}");
        }
        // An empty value clears the manager too (Entra's way of removing it on replace).
        let u = patched(
            json!([{"op": "Add", "path": "manager", "value": "m-1"}, {"op": "Replace", "path": "manager", "value": ""}]),
            Refuse,
        )
        .unwrap();
        assert!(u.get(ENTERPRISE).is_none(), "{u}");
    }

    /// Random operations (seeded): the engine never panics, and every refusal is a SCIM 400
    /// with one of the RFC 7644 `scimType`s.
    #[test]
    fn random_patches_apply_or_are_refused_cleanly() {
        use rand::{Rng, SeedableRng, seq::IndexedRandom};
        let ops = [json!("add"), json!("Replace"), json!("remove"), json!("REMOVE"), json!("move"), json!(1)];
        let paths = [
            json!("displayName"),
            json!("name.givenName"),
            json!("emails"),
            json!("emails[type eq \"work\"].value"),
            json!("emails[type eq \"nope\"]"),
            json!("members"),
            json!("members[value eq \"u1\"]"),
            json!("id"),
            json!("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"),
            json!("emails[type"),
            json!(""),
            json!(7),
            serde_json::Value::Null,
        ];
        let values = [
            json!("x"),
            json!(true),
            json!({"value": "u2"}),
            json!([{"value": "u1"}, {"value": "u3"}]),
            json!({"name.familyName": "F", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "D"}),
            json!(null),
            json!([]),
            json!({}),
        ];
        let scim_types = ["invalidSyntax", "invalidPath", "invalidValue", "noTarget", "mutability"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut applied, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let n = rng.random_range(1..4);
            let operations: Vec<Value> = (0..n)
                .map(|_| {
                    let mut op = serde_json::Map::new();
                    op.insert("op".into(), ops.choose(&mut rng).unwrap().clone());
                    if rng.random_bool(0.8) {
                        op.insert("path".into(), paths.choose(&mut rng).unwrap().clone());
                    }
                    op.insert("value".into(), values.choose(&mut rng).unwrap().clone());
                    Value::Object(op)
                })
                .collect();
            let mut u = user();
            u["members"] = json!([{"value": "u1"}]);
            match patch(&mut u, Value::Array(operations.clone())) {
                Ok(()) => {
                    applied += 1;
                    assert!(u.is_object(), "{operations:?}");
                }
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.status.as_u16(), 400, "{operations:?}");
                    assert!(e.scim_type.is_some_and(|t| scim_types.contains(&t)), "{operations:?}: {e:?}");
                }
            }
        }
        assert!(applied > 1000 && refused > 1000, "both outcomes exercised ({applied}, {refused})");
    }

    #[test]
    fn bad_patches_are_refused() {
        let mut u = user();
        let e = patch(&mut u, json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e = patch(&mut u, json!([{"op": "jump", "path": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
        let e = patch(&mut u, json!([{"op": "replace", "path": "id", "value": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
        let e =
            patch(&mut u, json!([{"op": "replace", "path": "emails[type eq \"fax\" or primary eq true].value", "value": "x"}]))
                .unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e =
            patch(&mut u, json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let schemas = ResourceSchemas::of("User", &[], super::super::schema::UnknownAttributes::Refuse);
        assert!(apply(&mut u, &json!({"Operations": []}), &schemas).is_err(), "schemas required");
        assert_eq!(u, user(), "a refused patch changes nothing it had not applied");
    }
}
