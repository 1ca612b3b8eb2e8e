//! SCIM resources as JSON: validating what a client sends, and building what we answer.

use serde_json::{Map, Value, json};

use super::App;
use super::discovery::ENTERPRISE_USER_SCHEMA;
use super::error::ScimError;
use crate::paths::get_ci;
use crate::store::Record;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Attributes the service provider owns; values sent by clients are ignored (RFC 7643 §3.1;
/// a User's `groups` is read-only, RFC 7643 §4.1.2: memberships change through the Groups).
const READ_ONLY: &[&str] = &["id", "meta"];
const USER_READ_ONLY: &[&str] = &["groups"];
/// Core User attributes of type boolean, which some clients send as strings ("False").
const BOOLEANS: &[&str] = &["active"];

/// Whether a message's `schemas` lists `urn` (case-insensitively).
pub fn lists_schema(message: &Value, urn: &str) -> bool {
    message
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn))))
}

/// Parses a request body as JSON, with a SCIM error for anything else.
pub fn parse_body(body: &[u8]) -> Result<Value, ScimError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::bad_request("invalidSyntax", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ScimError::bad_request("invalidSyntax", "the body must be a JSON object"));
    }
    Ok(value)
}

/// Checks and normalises a User sent by a client; returns it (without read-only attributes
/// and without nulls) and its userName.
pub fn validate_user(mut user: Value) -> Result<(Value, String), ScimError> {
    if !lists_schema(&user, USER_SCHEMA) {
        return Err(ScimError::bad_request("invalidSyntax", format!("\"schemas\" must list {USER_SCHEMA}")));
    }
    remove_nulls(&mut user);
    let object = user
        .as_object_mut()
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "a User is a JSON object"))?;
    // Read-only attributes are the service's; `password` is write-only and never stored here
    // (the request handlers take it first and hand it to the connector).
    object.retain(|k, _| {
        !READ_ONLY.iter().chain(USER_READ_ONLY).chain(["password"].iter()).any(|r| r.eq_ignore_ascii_case(k))
    });
    for (key, value) in object.iter_mut() {
        if BOOLEANS.iter().any(|b| b.eq_ignore_ascii_case(key)) {
            *value = coerce_boolean(key, value)?;
        }
        // `primary` of multi-valued attributes, also sent as "True" by some clients.
        if let Value::Array(items) = value {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(primary) = item.get_mut("primary") {
                    *primary = coerce_boolean("primary", primary)?;
                }
            }
        }
    }
    normalize_manager(object)?;
    let user_name = match get_ci(&user, "userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(ScimError::bad_request("invalidValue", "userName must be a non-empty string")),
        None => return Err(ScimError::bad_request("invalidValue", "userName is required")),
    };
    check_text(&user, USER_NAMES)?;
    Ok((user, user_name))
}

/// Attributes that name or identify a resource (a Group's unique name is its `displayName`): no
/// control character at all in them.
const USER_NAMES: &[&str] = &["userName", "externalId"];
const GROUP_NAMES: &[&str] = &["displayName", "externalId"];

/// Refuses text no target can hold faithfully: U+0000 anywhere (PostgreSQL and C libraries cut
/// or refuse it), and any control character (C0, DEL, C1) in a name or an identifier (`names`);
/// elsewhere tab, line feed and carriage return are allowed (an address may span lines).
fn check_text(resource: &Value, names: &[&str]) -> Result<(), ScimError> {
    fn walk(value: &Value, name: &str, strict: bool) -> Result<(), ScimError> {
        match value {
            Value::String(s) => {
                let bad = s
                    .chars()
                    .find(|c| *c == '\0' || (c.is_control() && (strict || !matches!(c, '\t' | '\n' | '\r'))));
                match bad {
                    Some(c) => Err(ScimError::bad_request(
                        "invalidValue",
                        format!("{name} contains the control character U+{:04X}", c as u32),
                    )),
                    None => Ok(()),
                }
            }
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, name, strict)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| walk(v, k, strict)),
            _ => Ok(()),
        }
    }
    let Value::Object(map) = resource else { return Ok(()) };
    map.iter().try_for_each(|(k, v)| walk(v, k, names.iter().any(|n| n.eq_ignore_ascii_case(k))))
}

/// Drops explicit nulls at any depth (`"$ref": null`, `"title": null`): null means absent.
fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => {
            items.retain(|v| !v.is_null());
            items.iter_mut().for_each(remove_nulls);
        }
        _ => {}
    }
}

/// Brings `manager` to its RFC 7643 shape in the enterprise extension, from every shape Entra
/// sends: `{"value": id}`, `[{"$ref": ..., "value": id}]`, a bare id string, at `manager` or at
/// the extension's path. An empty id removes the manager.
fn normalize_manager(object: &mut Map<String, Value>) -> Result<(), ScimError> {
    let top = object.keys().find(|k| k.eq_ignore_ascii_case("manager")).cloned();
    let mut manager = top.and_then(|k| object.remove(&k));
    let extension_key = object.keys().find(|k| k.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)).cloned();
    if manager.is_none()
        && let Some(Value::Object(ext)) = extension_key.as_ref().and_then(|k| object.get_mut(k))
        && let Some(k) = ext.keys().find(|k| k.eq_ignore_ascii_case("manager")).cloned()
    {
        manager = ext.remove(&k);
    }
    let Some(manager) = manager else { return Ok(()) };
    let first = match manager {
        Value::Array(mut items) if !items.is_empty() => items.remove(0),
        Value::Array(_) => Value::Null,
        other => other,
    };
    let normalized = match first {
        Value::String(id) => (!id.trim().is_empty()).then(|| json!({ "value": id })),
        Value::Object(m) => {
            let value = m.iter().find(|(k, _)| k.eq_ignore_ascii_case("value")).map(|(_, v)| v.clone());
            match value {
                Some(Value::String(id)) if !id.trim().is_empty() => {
                    let mut out = Map::new();
                    out.insert("value".into(), Value::String(id));
                    if let Some((_, r)) = m.iter().find(|(k, _)| k.eq_ignore_ascii_case("$ref")) {
                        out.insert("$ref".into(), r.clone());
                    }
                    if let Some((_, d)) = m.iter().find(|(k, _)| k.eq_ignore_ascii_case("displayName")) {
                        out.insert("displayName".into(), d.clone());
                    }
                    Some(Value::Object(out))
                }
                Some(Value::String(_)) | None => None,
                Some(_) => {
                    return Err(ScimError::bad_request("invalidValue", "manager.value must be a string id"));
                }
            }
        }
        Value::Null => None,
        _ => return Err(ScimError::bad_request("invalidValue", "manager must be an id or {\"value\": id}")),
    };
    let key = extension_key.unwrap_or_else(|| ENTERPRISE_USER_SCHEMA.to_string());
    let extension = object.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(ext) = extension {
        match normalized {
            Some(m) => {
                ext.insert("manager".into(), m);
            }
            None => {
                ext.remove("manager");
            }
        }
        if ext.is_empty() {
            object.retain(|k, _| !k.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA));
        } else if let Some(Value::Array(schemas)) = object.get_mut("schemas")
            && !schemas
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)))
        {
            schemas.push(json!(ENTERPRISE_USER_SCHEMA));
        }
    }
    Ok(())
}

fn coerce_boolean(key: &str, value: &Value) -> Result<Value, ScimError> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        _ => Err(ScimError::bad_request("invalidValue", format!("{key} must be a boolean"))),
    }
}

/// A kind of resource: its names, its unique attribute, its validation, its connector.
pub trait Kind: Send + Sync + 'static {
    /// `meta.resourceType`, and the connector space's resource type.
    const NAME: &'static str;
    /// The endpoint (`/Users`).
    const ENDPOINT: &'static str;
    /// The core schema's URN.
    const CORE_SCHEMA: &'static str;
    /// The attribute that is unique per app and that clients match on.
    const UNIQUE: &'static str;
    /// Checks and normalises a resource sent by a client; returns it and its unique name.
    fn validate(resource: Value) -> Result<(Value, String), ScimError>;
    /// The connector that holds this kind for `app`, if the app has this kind.
    fn connector(app: &App) -> Option<&str>;
    /// This kind's schemas in `app`.
    fn schemas(app: &App) -> &super::schema::ResourceSchemas;
}

/// Users.
pub struct UserKind;
/// Groups.
pub struct GroupKind;

impl Kind for UserKind {
    const NAME: &'static str = "User";
    const ENDPOINT: &'static str = "Users";
    const CORE_SCHEMA: &'static str = USER_SCHEMA;
    const UNIQUE: &'static str = "userName";
    fn validate(resource: Value) -> Result<(Value, String), ScimError> {
        validate_user(resource)
    }
    fn connector(app: &App) -> Option<&str> {
        Some(&app.users)
    }
    fn schemas(app: &App) -> &super::schema::ResourceSchemas {
        &app.user_schemas
    }
}

impl Kind for GroupKind {
    const NAME: &'static str = "Group";
    const ENDPOINT: &'static str = "Groups";
    const CORE_SCHEMA: &'static str = GROUP_SCHEMA;
    const UNIQUE: &'static str = "displayName";
    fn validate(resource: Value) -> Result<(Value, String), ScimError> {
        validate_group(resource)
    }
    fn connector(app: &App) -> Option<&str> {
        app.groups.as_deref()
    }
    fn schemas(app: &App) -> &super::schema::ResourceSchemas {
        &app.group_schemas
    }
}

/// The schema Entra ID puts beside the core Group schema on group creates.
pub const ADSCIM_GROUP_SCHEMA: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

/// Checks and normalises a Group; returns it and its displayName. Members are `{value, type,
/// display}` objects, each value once.
pub fn validate_group(mut group: Value) -> Result<(Value, String), ScimError> {
    if !lists_schema(&group, GROUP_SCHEMA) && !lists_schema(&group, ADSCIM_GROUP_SCHEMA) {
        return Err(ScimError::bad_request("invalidSyntax", format!("\"schemas\" must list {GROUP_SCHEMA}")));
    }
    remove_nulls(&mut group);
    let object = group
        .as_object_mut()
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "a Group is a JSON object"))?;
    object.retain(|k, _| !READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(k)));
    // Answer with the core schema whatever the client listed.
    if let Some(Value::Array(schemas)) = object.get_mut("schemas") {
        schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ADSCIM_GROUP_SCHEMA)));
        if !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(GROUP_SCHEMA))) {
            schemas.insert(0, json!(GROUP_SCHEMA));
        }
    }
    if let Some(key) = object.keys().find(|k| k.eq_ignore_ascii_case("members")).cloned() {
        let members = match object.remove(&key) {
            Some(Value::Array(items)) => items,
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(ScimError::bad_request("invalidValue", "members must be a list")),
        };
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for member in members {
            let Value::Object(m) = member else {
                return Err(ScimError::bad_request("invalidValue", "each member is an object with a value"));
            };
            let value = match m.iter().find(|(k, _)| k.eq_ignore_ascii_case("value")).map(|(_, v)| v) {
                Some(Value::String(v)) if !v.is_empty() => v.clone(),
                _ => return Err(ScimError::bad_request("invalidValue", "each member needs a string value")),
            };
            if seen.contains(&value) {
                continue;
            }
            seen.push(value.clone());
            let mut kept = Map::new();
            kept.insert("value".into(), Value::String(value));
            for (k, v) in m {
                if ["type", "display"].iter().any(|a| a.eq_ignore_ascii_case(&k)) {
                    kept.insert(k.to_ascii_lowercase(), v);
                }
            }
            out.push(Value::Object(kept));
        }
        if !out.is_empty() {
            object.insert("members".into(), Value::Array(out));
        }
    }
    let name = match get_ci(&group, "displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => {
            return Err(ScimError::bad_request("invalidValue", "displayName must be a non-empty string"));
        }
        None => return Err(ScimError::bad_request("invalidValue", "displayName is required")),
    };
    check_text(&group, GROUP_NAMES)?;
    Ok((group, name))
}

/// The resource as we answer it: stored attributes, `id`, and `meta`.
pub fn to_response<K: Kind>(record: &Record, base_url: &str) -> Value {
    let mut out = match &record.resource {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    super::schema::answer_schemas(&mut out, K::CORE_SCHEMA);
    if K::NAME == "Group" {
        add_member_refs(&mut out, base_url, &record.app);
    }
    out.insert("id".into(), json!(record.id));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": K::NAME,
            "created": record.created,
            "lastModified": record.modified,
            "location": location::<K>(base_url, &record.app, &record.id),
            "version": etag(record),
        }),
    );
    Value::Object(out)
}

/// Each member's `$ref` (returned by default, RFC 7643 §4.2): the member's URL, under Groups
/// when its `type` says Group, else under Users.
fn add_member_refs(group: &mut Map<String, Value>, base_url: &str, app: &str) {
    let Some(Value::Array(members)) = group.get_mut("members") else { return };
    for member in members.iter_mut().filter_map(Value::as_object_mut) {
        let Some(id) = member.get("value").and_then(Value::as_str) else { continue };
        let endpoint = match member.get("type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("Group") => GroupKind::ENDPOINT,
            _ => UserKind::ENDPOINT,
        };
        let url = format!("{base_url}/scim/{app}/{endpoint}/{id}");
        member.insert("$ref".into(), Value::String(url));
    }
}

/// The URL of a resource.
pub fn location<K: Kind>(base_url: &str, app: &str, id: &str) -> String {
    format!("{base_url}/scim/{app}/{}/{id}", K::ENDPOINT)
}

/// The weak ETag of a record's version.
pub fn etag(record: &Record) -> String {
    format!("W/\"{}\"", record.version)
}

/// A ListResponse.
pub fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_validated_and_normalised() {
        let (user, name) = validate_user(json!({
            "schemas": [USER_SCHEMA], "userName": "alice", "id": "forged", "meta": {},
            "active": "False", "title": null
        }))
        .unwrap();
        assert_eq!(name, "alice");
        assert_eq!(user, json!({"schemas": [USER_SCHEMA], "userName": "alice", "active": false}));

        let missing = validate_user(json!({"schemas": [USER_SCHEMA]})).unwrap_err();
        assert_eq!(missing.scim_type, Some("invalidValue"));
        let no_schema = validate_user(json!({"userName": "a"})).unwrap_err();
        assert_eq!(no_schema.scim_type, Some("invalidSyntax"));
        assert!(
            validate_user(json!({"schemas": [USER_SCHEMA], "userName": "a", "active": "maybe"})).is_err()
        );
    }

    #[test]
    fn manager_in_every_shape_entra_sends() {
        let base = json!({"schemas": [USER_SCHEMA], "userName": "u"});
        let expected = json!({"value": "m-1"});
        let with = |extra: Value| {
            let mut u = base.clone();
            u.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            validate_user(u).unwrap().0
        };
        for shape in [
            json!({"manager": "m-1"}),
            json!({"manager": {"value": "m-1", "$ref": null}}),
            json!({ENTERPRISE_USER_SCHEMA: {"manager": [{"value": "m-1"}]}}),
            json!({ENTERPRISE_USER_SCHEMA: {"manager": "m-1", "department": "Eng"}}),
        ] {
            let user = with(shape.clone());
            assert_eq!(user[ENTERPRISE_USER_SCHEMA]["manager"], expected, "{shape}");
            assert!(user.get("manager").is_none());
            assert!(lists_schema(&user, ENTERPRISE_USER_SCHEMA), "{shape}");
        }
        let cleared = with(json!({ENTERPRISE_USER_SCHEMA: {"manager": {"value": ""}}}));
        assert!(cleared.get(ENTERPRISE_USER_SCHEMA).is_none(), "{cleared}");
        assert!(validate_user(with(json!({}))).is_ok());
    }

    #[test]
    fn nested_nulls_and_string_booleans() {
        let (user, _) = validate_user(json!({
            "schemas": [USER_SCHEMA], "userName": "u", "password": "secret",
            "emails": [{"value": "a@x", "primary": "True", "$ref": null}]
        }))
        .unwrap();
        assert_eq!(user["emails"], json!([{"value": "a@x", "primary": true}]));
        assert!(user.get("password").is_none(), "never stored");
    }

    #[test]
    fn groups_as_entra_sends_them() {
        let (group, name) = validate_group(json!({
            "schemas": [GROUP_SCHEMA, ADSCIM_GROUP_SCHEMA],
            "externalId": "8aa1a0c0", "displayName": "Group1DisplayName", "meta": {"resourceType": "Group"},
            "members": [{"value": "u1", "$ref": null}, {"value": "u1"}, {"value": "u2", "type": "User"}]
        }))
        .unwrap();
        assert_eq!(name, "Group1DisplayName");
        assert_eq!(group["schemas"], json!([GROUP_SCHEMA]));
        assert_eq!(group["members"], json!([{"value": "u1"}, {"value": "u2", "type": "User"}]));
        assert!(group.get("meta").is_none());
        let (only_adscim, _) =
            validate_group(json!({"schemas": [ADSCIM_GROUP_SCHEMA], "displayName": "g", "members": []}))
                .unwrap();
        assert_eq!(only_adscim["schemas"], json!([GROUP_SCHEMA]));
        assert!(validate_group(json!({"schemas": [GROUP_SCHEMA]})).is_err());
        assert!(
            validate_group(
                json!({"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"type": "User"}]})
            )
            .is_err()
        );
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert_eq!(parse_body(b"{not json").unwrap_err().scim_type, Some("invalidSyntax"));
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(br#"{"a":1}"#).is_ok());
    }
}
