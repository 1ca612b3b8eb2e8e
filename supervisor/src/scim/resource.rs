//! SCIM resources as JSON: validating what a client sends, and building what we answer.

use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::filter::get_ci;
use crate::store::Record;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Attributes the service provider owns; values sent by clients are ignored (RFC 7643 §3.1).
const READ_ONLY: &[&str] = &["id", "meta"];
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
    let object = user
        .as_object_mut()
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "a User is a JSON object"))?;
    object.retain(|k, v| !v.is_null() && !READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(k)));
    for (key, value) in object.iter_mut() {
        if BOOLEANS.iter().any(|b| b.eq_ignore_ascii_case(key)) {
            *value = coerce_boolean(key, value)?;
        }
    }
    let user_name = match get_ci(&user, "userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(ScimError::bad_request("invalidValue", "userName must be a non-empty string")),
        None => return Err(ScimError::bad_request("invalidValue", "userName is required")),
    };
    Ok((user, user_name))
}

fn coerce_boolean(key: &str, value: &Value) -> Result<Value, ScimError> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        _ => Err(ScimError::bad_request("invalidValue", format!("{key} must be a boolean"))),
    }
}

/// The resource as we answer it: stored attributes, `id`, and `meta`.
pub fn user_response(record: &Record, base_url: &str) -> Value {
    let mut out = match &record.resource {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    out.insert("id".into(), json!(record.id));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": record.created,
            "lastModified": record.modified,
            "location": location(base_url, &record.app, &record.id),
            "version": etag(record),
        }),
    );
    Value::Object(out)
}

/// The URL of a User.
pub fn location(base_url: &str, app: &str, id: &str) -> String {
    format!("{base_url}/scim/{app}/Users/{id}")
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
    fn bodies_must_be_json_objects() {
        assert_eq!(parse_body(b"{not json").unwrap_err().scim_type, Some("invalidSyntax"));
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(br#"{"a":1}"#).is_ok());
    }
}
