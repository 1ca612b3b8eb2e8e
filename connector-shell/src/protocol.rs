//! The JSON contract with scripts (docs/shell-connector.md): what they read on stdin, and the
//! JSON lines they write on stdout.

use std::collections::BTreeMap;

use ecma_proto::v1::{
    self, AttributeModificationType as A, AttributeType, CsEntryChange, ErrorKind,
    ObjectModificationType as M, Value, value::Kind,
};
use serde_json::{Map, Value as Json, json};

use ecma_connector_sdk::ConnectorError;

pub const PROTOCOL: u32 = 1;

/// A protocol value as JSON: strings and references as strings, integers as numbers, booleans
/// as booleans, binary as `{"base64": "..."}`.
pub fn to_json(value: &Value) -> Json {
    match &value.kind {
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => Json::String(s.clone()),
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::BooleanValue(b)) => json!(b),
        Some(Kind::BinaryValue(b)) => json!({ "base64": base64(b) }),
        None => Json::Null,
    }
}

/// A JSON value from a script as a protocol value of `kind`.
pub fn from_json(value: &Json, kind: AttributeType) -> Result<Value, String> {
    Ok(match (value, kind) {
        (Json::String(s), AttributeType::Reference) => Value { kind: Some(Kind::ReferenceValue(s.clone())) },
        (Json::String(s), AttributeType::Integer) => {
            Value::integer(s.trim().parse().map_err(|_| format!("{s:?} is not an integer"))?)
        }
        (Json::String(s), AttributeType::Boolean) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::boolean(true),
            "false" | "0" | "no" => Value::boolean(false),
            _ => return Err(format!("{s:?} is not a boolean")),
        },
        (Json::String(s), _) => Value::string(s.clone()),
        (Json::Number(n), AttributeType::String) => Value::string(n.to_string()),
        (Json::Number(n), _) => {
            Value::integer(n.as_i64().ok_or_else(|| format!("{n} is not a 64-bit integer"))?)
        }
        (Json::Bool(b), AttributeType::String) => Value::string(b.to_string()),
        (Json::Bool(b), _) => Value::boolean(*b),
        (Json::Object(o), _) if o.contains_key("base64") => {
            let text = o["base64"].as_str().ok_or("base64 must be a string")?;
            Value { kind: Some(Kind::BinaryValue(unbase64(text)?)) }
        }
        (other, _) => return Err(format!("{other} is not a string, number, boolean or {{\"base64\": ...}}")),
    })
}

fn modification_name(kind: i32) -> &'static str {
    match M::try_from(kind).unwrap_or(M::Unspecified) {
        M::Add => "add",
        M::Update => "update",
        M::Replace => "replace",
        M::Delete => "delete",
        _ => "unspecified",
    }
}

/// One entry of an export batch, as a script reads it: the raw changes, and `attributes`, what
/// each named attribute holds after the change (the whole set of values; `[]` when cleared)
/// where that is known from the change itself.
pub fn export_entry(change: &CsEntryChange) -> Json {
    let mut attributes = Map::new();
    let mut changes = Vec::new();
    for c in &change.attribute_changes {
        let adds: Vec<Json> = c.value_adds.iter().map(to_json).collect();
        let deletes: Vec<Json> = c.value_deletes.iter().map(to_json).collect();
        let op = match A::try_from(c.modification_type).unwrap_or(A::Unspecified) {
            A::Add => "add",
            A::Replace => "replace",
            A::Update => "update",
            A::Delete => "delete",
            A::Unspecified => "unspecified",
        };
        match op {
            "add" | "replace" => {
                attributes.insert(c.name.clone(), Json::Array(adds.clone()));
            }
            "delete" => {
                attributes.insert(c.name.clone(), Json::Array(vec![]));
            }
            _ => {}
        }
        changes.push(json!({ "name": c.name, "op": op, "add": adds, "remove": deletes }));
    }
    let anchor = change.anchors.first().and_then(|a| a.value.as_ref()).map(to_json).unwrap_or(Json::Null);
    json!({
        "identifier": change.identifier,
        "modification": modification_name(change.modification_type),
        "anchor": anchor,
        "dn": change.dn,
        "attributes": attributes,
        "changes": changes,
    })
}

/// An error object `{"kind": "...", "message": "..."}` of a script's line.
pub fn error_of(value: &Json) -> (ErrorKind, String) {
    let kind = value.get("kind").and_then(Json::as_str).unwrap_or("internal");
    let message = value.get("message").and_then(Json::as_str).unwrap_or("").to_string();
    (kind_by_name(kind), message)
}

/// The documented error kind names (unknown names are `internal`).
pub fn kind_by_name(name: &str) -> ErrorKind {
    match name {
        "already_exists" => ErrorKind::AlreadyExists,
        "no_such_object" => ErrorKind::NoSuchObject,
        "invalid_value" => ErrorKind::InvalidAttributeValue,
        "schema_violation" => ErrorKind::SchemaViolation,
        "constraint_violation" => ErrorKind::ConstraintViolation,
        "permission_denied" => ErrorKind::PermissionDenied,
        "connection_failed" => ErrorKind::ConnectionFailed,
        "retryable" => ErrorKind::Retryable,
        "timeout" => ErrorKind::Timeout,
        "unsupported" => ErrorKind::Unsupported,
        "invalid_configuration" => ErrorKind::InvalidConfiguration,
        _ => ErrorKind::Internal,
    }
}

/// Parses a stdout line as a JSON object, or says which line is not one.
pub fn parse_line(operation: &str, number: usize, line: &str) -> Result<Map<String, Json>, ConnectorError> {
    match serde_json::from_str::<Json>(line) {
        Ok(Json::Object(object)) => Ok(object),
        Ok(_) | Err(_) => {
            let shown: String = line.chars().take(120).collect();
            Err(ConnectorError::new(
                ErrorKind::Internal,
                format!("the {operation} script's output line {number} is not a JSON object: {shown:?}"),
            ))
        }
    }
}

/// A whole-call error line (`{"error": {...}}` without an identifier).
pub fn call_error(operation: &str, object: &Map<String, Json>) -> Option<ConnectorError> {
    if object.contains_key("identifier") {
        return None;
    }
    let error = object.get("error")?;
    let (kind, message) = error_of(error);
    Some(ConnectorError::new(kind, format!("the {operation} script reported: {message}")))
}

/// An imported object line: `{"anchor": ..., "attributes": {...}, "modification": "add" |
/// "replace" | "delete"}`, checked against the schema's attribute types.
pub fn import_entry(
    object: &Map<String, Json>,
    types: &BTreeMap<String, (AttributeType, bool)>,
    object_type: &str,
    anchor_name: &str,
    partition: &str,
) -> Result<v1::ImportEntry, String> {
    let anchor = match object.get("anchor") {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => return Err("an entry needs \"anchor\" (a string)".into()),
    };
    let modification = match object.get("modification").and_then(Json::as_str).unwrap_or("add") {
        "add" => M::Add,
        "replace" | "update" => M::Replace,
        "delete" => M::Delete,
        other => return Err(format!("modification {other:?} is not add, replace or delete")),
    };
    let mut attributes = Vec::new();
    if let Some(values) = object.get("attributes") {
        let values = values.as_object().ok_or("\"attributes\" must be an object")?;
        for (name, value) in values {
            let Some((kind, multi)) = types.get(name) else {
                return Err(format!("attribute {name:?} is not in the schema"));
            };
            let list: Vec<&Json> = match value {
                Json::Array(items) => items.iter().collect(),
                Json::Null => vec![],
                single => vec![single],
            };
            if list.len() > 1 && !multi {
                return Err(format!("attribute {name:?} is single-valued; {} values given", list.len()));
            }
            let values = list
                .into_iter()
                .filter(|v| !v.is_null())
                .map(|v| from_json(v, *kind).map_err(|e| format!("attribute {name:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if !values.is_empty() {
                attributes.push(v1::AttributeValues { name: name.clone(), values });
            }
        }
    }
    Ok(v1::ImportEntry {
        modification_type: modification as i32,
        entry: Some(v1::Entry {
            object_type: object_type.to_string(),
            anchors: vec![v1::Anchor { name: anchor_name.to_string(), value: Some(Value::string(anchor)) }],
            dn: String::new(),
            attributes,
            partition_id: partition.to_string(),
        }),
        error: None,
    })
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unbase64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for sample in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\x00\xff\x10"] {
            assert_eq!(unbase64(&base64(sample)).unwrap(), sample);
        }
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn script_values_take_the_schema_type() {
        assert_eq!(from_json(&json!("42"), AttributeType::Integer).unwrap(), Value::integer(42));
        assert_eq!(from_json(&json!(true), AttributeType::Boolean).unwrap(), Value::boolean(true));
        assert_eq!(from_json(&json!("False"), AttributeType::Boolean).unwrap(), Value::boolean(false));
        assert!(from_json(&json!("x"), AttributeType::Integer).is_err());
        assert!(from_json(&json!([1]), AttributeType::String).is_err());
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let e = parse_line("export", 3, "not json").unwrap_err();
        assert!(e.detail.contains("line 3"), "{}", e.detail);
        assert!(parse_line("export", 1, "[1, 2]").is_err());
        assert!(parse_line("export", 1, r#"{"identifier": "a"}"#).is_ok());
    }
}
