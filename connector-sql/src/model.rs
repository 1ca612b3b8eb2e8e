//! What both backends (sqlx's tables and ODBC's) share: the partition, a column, the outcome of
//! an applied entry, a page of an import, the identifier check every name in SQL text passes, the
//! schema type of a table, and an entry's single value.

use ecma_connector_sdk::{ConnectorError, error_status};
use ecma_proto::v1::{
    self, AttributeChange, AttributeModificationType, AttributeType, Entry, ErrorKind, Value, value::Kind,
};
use tonic::Status;

/// Partition id: a table has exactly one.
pub const PARTITION: &str = "default";

/// A column of the target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: AttributeType,
    /// The type as the catalog names it (for casts); empty for child-table attributes.
    pub sql_type: String,
    pub not_null: bool,
    /// Held in the child table `<table>_<name>` (owner, value), one row per value.
    pub multi: bool,
    /// The database fills it in (identity, serial, default, auto_increment).
    pub generated: bool,
}

/// The outcome of one entry of an export batch.
pub struct Applied {
    pub anchor: Value,
}

/// Takes the anchor column out of a table's columns (anchors travel as text whatever the
/// column's type), marking the columns that `is_reference` names as references.
pub fn split_anchor(
    catalog: Vec<Column>,
    table: &str,
    anchor: &str,
    is_reference: impl Fn(&str) -> bool,
) -> Result<(Column, Vec<Column>), Status> {
    let (mut anchors, mut columns): (Vec<Column>, Vec<Column>) =
        catalog.into_iter().partition(|c| c.name == anchor);
    for column in &mut columns {
        if is_reference(&column.name) {
            column.kind = AttributeType::Reference;
        }
    }
    let mut anchor_column = anchors.pop().ok_or_else(|| {
        error_status(
            ErrorKind::InvalidConfiguration,
            format!("anchor_column {anchor:?} is not a column of table {table:?}"),
        )
    })?;
    anchor_column.kind = AttributeType::String;
    Ok((anchor_column, columns))
}

/// One page of an import.
pub struct Page {
    /// (deleted, entry): a deleted entry carries its anchor only.
    pub entries: Vec<(bool, Entry)>,
    /// The anchor (as text) of the last row, to continue after.
    pub last: Option<String>,
}

/// A SQL identifier: letters, digits and underscores, not starting with a digit. Identifiers are
/// quoted as well, but only names that pass this check are ever put into SQL text.
pub fn check_identifier(what: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(error_status(
            ErrorKind::InvalidConfiguration,
            format!("{what} {name:?} is not a valid SQL identifier (letters, digits and _)"),
        ))
    }
}

pub(crate) fn kind_matches(value: &Value, kind: AttributeType) -> bool {
    matches!(
        (&value.kind, kind),
        (Some(Kind::StringValue(_)), AttributeType::String)
            | (Some(Kind::ReferenceValue(_)), AttributeType::Reference | AttributeType::String)
            | (Some(Kind::IntegerValue(_)), AttributeType::Integer)
            | (Some(Kind::BooleanValue(_)), AttributeType::Boolean)
            | (Some(Kind::BinaryValue(_)), AttributeType::Binary)
    )
}

/// The schema type of a table: the anchor (import only), then every column.
pub(crate) fn schema_type(object_type: &str, anchor: &Column, columns: &[Column]) -> v1::SchemaType {
    let mut attributes = vec![v1::SchemaAttribute {
        name: anchor.name.clone(),
        r#type: anchor.kind as i32,
        multi_valued: false,
        operation: v1::AttributeOperation::ImportOnly as i32,
        required: false,
    }];
    attributes.extend(columns.iter().map(|c| v1::SchemaAttribute {
        name: c.name.clone(),
        r#type: c.kind as i32,
        multi_valued: c.multi,
        operation: v1::AttributeOperation::ImportExport as i32,
        // A column the database fills in (a default, a watermark) is not required.
        required: c.not_null && !c.generated,
    }));
    v1::SchemaType {
        name: object_type.to_string(),
        attributes,
        anchor_attributes: vec![anchor.name.clone()],
        locked: false,
    }
}

/// The one value a single-valued column gets from an attribute change (`None` clears it).
pub(crate) fn single_value(change: &AttributeChange) -> Result<Option<Value>, ConnectorError> {
    use AttributeModificationType as A;
    let too_many = || {
        ConnectorError::new(
            ErrorKind::InvalidAttributeValue,
            format!("column {:?} holds one value; several were given", change.name),
        )
    };
    match A::try_from(change.modification_type).unwrap_or(A::Unspecified) {
        A::Delete => Ok(None),
        A::Add | A::Replace | A::Update => {
            if change.value_adds.len() > 1 {
                return Err(too_many());
            }
            Ok(change.value_adds.first().cloned())
        }
        A::Unspecified => {
            Err(ConnectorError::new(ErrorKind::InvalidAttributeValue, "attribute change without a type"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("table", "users").is_ok());
        assert!(check_identifier("table", "user_2").is_ok());
        assert!(check_identifier("table", "users; DROP TABLE x").is_err());
        assert!(check_identifier("table", "a\"b").is_err());
        assert!(check_identifier("table", "1abc").is_err());
        assert!(check_identifier("table", "").is_err());
    }
}
