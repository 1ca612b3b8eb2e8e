//! Attributes declared in a configuration, for connectors whose target has no schema to read
//! (a script, a web service): `name[:type][*]`, comma-separated, `*` for multi-valued.

use ecma_proto::v1::{self, AttributeType};

use crate::ConnectorError;

/// One declared attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub kind: AttributeType,
    pub multi: bool,
}

/// Reads a declaration such as `userName, active:boolean, groups*, manager:reference`; a
/// problem names `parameter`.
pub fn parse_declaration(parameter: &str, text: &str) -> Result<Vec<Declared>, ConnectorError> {
    let mut out: Vec<Declared> = Vec::new();
    for spec in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (spec, multi) = match spec.strip_suffix('*') {
            Some(s) => (s.trim(), true),
            None => (spec, false),
        };
        let (name, kind) = match spec.split_once(':') {
            Some((name, kind)) => (name.trim(), kind.trim()),
            None => (spec, "string"),
        };
        let kind = type_of(kind).ok_or_else(|| {
            ConnectorError::config(
                parameter,
                format!(
                    "{parameter}: {kind:?} (of {name:?}) is not string, integer, boolean, binary or reference"
                ),
            )
        })?;
        if name.is_empty() || out.iter().any(|d| d.name == name) {
            return Err(ConnectorError::config(
                parameter,
                format!("{parameter}: {name:?} is empty or declared twice"),
            ));
        }
        out.push(Declared { name: name.to_string(), kind, multi });
    }
    Ok(out)
}

/// The type a declaration names.
pub fn type_of(name: &str) -> Option<AttributeType> {
    Some(match name {
        "string" => AttributeType::String,
        "integer" => AttributeType::Integer,
        "boolean" => AttributeType::Boolean,
        "binary" => AttributeType::Binary,
        "reference" => AttributeType::Reference,
        _ => return None,
    })
}

/// The name a declaration gives a type.
pub fn type_name(kind: AttributeType) -> &'static str {
    match kind {
        AttributeType::Integer => "integer",
        AttributeType::Boolean => "boolean",
        AttributeType::Binary => "binary",
        AttributeType::Reference => "reference",
        _ => "string",
    }
}

/// The object type of a declaration: the anchor (import only, unless declared) first, then
/// every declared attribute.
pub fn schema_type(object_type: &str, anchor: &str, attributes: &[Declared]) -> v1::SchemaType {
    let mut out = vec![v1::SchemaAttribute {
        name: anchor.to_string(),
        r#type: AttributeType::String as i32,
        multi_valued: false,
        operation: v1::AttributeOperation::ImportOnly as i32,
        required: false,
    }];
    out.extend(attributes.iter().filter(|a| a.name != anchor).map(|a| v1::SchemaAttribute {
        name: a.name.clone(),
        r#type: a.kind as i32,
        multi_valued: a.multi,
        operation: v1::AttributeOperation::ImportExport as i32,
        required: false,
    }));
    v1::SchemaType {
        name: object_type.to_string(),
        attributes: out,
        anchor_attributes: vec![anchor.to_string()],
        locked: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_read_and_checked() {
        let d =
            parse_declaration("attributes", "userName, active:boolean, groups*, boss:reference *").unwrap();
        assert_eq!(
            d.iter().map(|a| (a.name.as_str(), a.kind, a.multi)).collect::<Vec<_>>(),
            [
                ("userName", AttributeType::String, false),
                ("active", AttributeType::Boolean, false),
                ("groups", AttributeType::String, true),
                ("boss", AttributeType::Reference, true),
            ]
        );
        let e = parse_declaration("attributes", "a:date").unwrap_err();
        assert!(e.detail.contains("\"date\"") && e.parameter.as_deref() == Some("attributes"), "{e:?}");
        assert!(parse_declaration("attributes", "a, a").unwrap_err().detail.contains("twice"));
        let schema = schema_type("user", "id", &d);
        assert_eq!(schema.attributes[0].name, "id");
        assert_eq!(schema.attributes.len(), 5);
        assert_eq!(schema.anchor_attributes, ["id"]);
    }
}
