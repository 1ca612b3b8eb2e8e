//! The ODBC path (cargo feature `odbc`): any database with an ODBC driver (SQL Server, Oracle,
//! DB2, and PostgreSQL or MariaDB through their Debian drivers), through the system's unixODBC
//! driver manager and `odbc-api`. `connection_string = "odbc:Driver={...};Server=...;..."`
//! (or `odbc:DSN=name;...`).
//!
//! The same table as the native path, with portable SQL: quoted identifiers, `?` parameters,
//! keyset paging that stops fetching after a page (no LIMIT, which not every database has), the
//! catalog from `SQLColumns`. Every entry is its own autocommitted statement. Admin statements
//! and stored procedures work as on the native path. Not here: multi-valued child tables, delta
//! imports (use a native driver where the database has one).
//!
//! ODBC calls block: they run on tokio's blocking threads, one connection per table behind a
//! mutex, reopened after the driver reports it dead.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{
    self, Anchor, AttributeType, AttributeValues, CsEntryChange, Entry, ErrorKind, Value, value::Kind,
};
use odbc_api::parameter::InputParameter;
use odbc_api::{Connection, ConnectionOptions, Cursor, Environment, IntoParameter};
use tonic::Status;

use crate::dialect::Dialect;
use crate::model::{Applied, Column, PARTITION, Page, check_identifier, single_value, split_anchor};
use crate::statements::{Custom, Operation};
use ecma_connector_sdk::ConnectorError;

fn environment() -> Result<&'static Environment, Status> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| Environment::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| error_status(ErrorKind::Internal, format!("the ODBC driver manager failed: {e}")))
}

/// Maps an ODBC error to the protocol's error kinds by its SQLSTATE.
fn odbc_error(error: odbc_api::Error) -> ConnectorError {
    let state = match &error {
        odbc_api::Error::Diagnostics { record, .. } => String::from_utf8_lossy(&record.state.0).to_string(),
        _ => String::new(),
    };
    let kind = match state.as_str() {
        // 23505 unique (PostgreSQL, DB2), 23000 integrity constraint (SQL Server, MySQL, Oracle).
        "23505" => ErrorKind::AlreadyExists,
        s if s.starts_with("23") => {
            let text = error.to_string().to_ascii_lowercase();
            if text.contains("duplicate") || text.contains("unique") {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::ConstraintViolation
            }
        }
        s if s.starts_with("08") || s == "HYT00" || s == "HYT01" => ErrorKind::ConnectionFailed,
        "42000" | "42501" | "28000" => ErrorKind::PermissionDenied,
        _ => ErrorKind::Internal,
    };
    ConnectorError::new(kind, error.to_string())
}

/// What to change in connection_string when the driver manager or the driver refused to
/// connect with this SQLSTATE (never echoing the string, which may hold PWD=).
fn connect_hint(state: &[u8; 5]) -> &'static str {
    match state {
        b"IM002" => {
            "; connection_string names no installed driver or data source: check Driver= (or DSN=); `odbcinst -q -d` lists the installed drivers"
        }
        b"28000" | b"28P01" => {
            "; the database refused the user name or password: check UID= and PWD= in connection_string"
        }
        b"3D000" => "; check the database name (Database=) in connection_string",
        [b'0', b'8', ..] => {
            "; check the server, port, database and credentials in connection_string (the driver's message says which), and that the server is running"
        }
        _ => "",
    }
}

/// The protocol type of an ODBC SQL data type code.
fn kind_of(data_type: i16) -> AttributeType {
    match data_type {
        -7 => AttributeType::Boolean,              // SQL_BIT
        -6 | 5 | 4 | -5 => AttributeType::Integer, // TINYINT SMALLINT INTEGER BIGINT
        -4..=-2 => AttributeType::Binary,          // BINARY VARBINARY LONGVARBINARY
        _ => AttributeType::String,
    }
}

/// A value as an ODBC input parameter of the column's type.
fn parameter(value: Option<&Value>, kind: AttributeType) -> Box<dyn InputParameter> {
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::IntegerValue(i)) => Box::new(*i),
        Some(Kind::BooleanValue(b)) => Box::new(odbc_api::Bit::from_bool(*b)),
        Some(Kind::BinaryValue(b)) => Box::new(b.clone().into_parameter()),
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => Box::new(s.clone().into_parameter()),
        // A NULL of the column's type (some databases refuse a text NULL for a number).
        None => match kind {
            AttributeType::Integer => Box::new(odbc_api::Nullable::<i64>::null()),
            AttributeType::Boolean => Box::new(odbc_api::Nullable::<odbc_api::Bit>::null()),
            _ => Box::new(None::<String>.into_parameter()),
        },
    }
}

/// A configured table reached over ODBC.
pub struct OdbcTable {
    connection_string: String,
    connection: Mutex<Option<Connection<'static>>>,
    pub name: String,
    pub object_type: String,
    pub anchor: Column,
    pub columns: Vec<Column>,
    custom: Custom,
    /// The driver's identifier quote character (`"`, or MySQL's backtick).
    quote: char,
}

impl OdbcTable {
    /// Connects and reads the table's columns (blocking).
    pub fn open(config: &impl ConfigExt, connection_string: &str) -> Result<Self, Status> {
        let name = config.require("table")?.to_string();
        check_identifier("table", &name)?;
        let anchor_name = config.text("anchor_column").to_string();
        check_identifier("anchor_column", &anchor_name)?;
        for unsupported in ["multi_valued", "watermark_column", "soft_delete_column", "create_table"] {
            if config.get(unsupported).is_some_and(|v| v != "false") {
                return Err(error_status(
                    ErrorKind::InvalidConfiguration,
                    format!("{unsupported} is not available over ODBC; use a native driver URL or remove it"),
                ));
            }
        }
        if !matches!(config.text("sqlite_synchronous").trim().to_ascii_lowercase().as_str(), "" | "full") {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                "sqlite_synchronous applies to SQLite targets only (sqlite:// connection strings): remove it",
            ));
        }
        let references = config.text("references").to_string();
        let table = Self {
            connection_string: connection_string.to_string(),
            connection: Mutex::new(None),
            name: name.clone(),
            object_type: config.text("object_type").to_string(),
            anchor: Column {
                name: anchor_name.clone(),
                kind: AttributeType::String,
                sql_type: String::new(),
                not_null: true,
                multi: false,
                generated: false,
            },
            columns: Vec::new(),
            custom: Custom::default(),
            quote: '"',
        };
        let quote = table.with(|conn| conn.identifier_quote_char().map_err(odbc_error))?.unwrap_or('"');
        let catalog = table.with(|conn| {
            let mut columns = Vec::new();
            let mut schema_seen: Option<String> = None;
            for row in conn.columns("", "", &name, "").map_err(odbc_error)? {
                let row = row.map_err(odbc_error)?;
                // The same table name in several schemas: the first schema's columns.
                let schema = row.schema.as_str().ok().flatten().unwrap_or_default().to_string();
                if schema_seen.get_or_insert_with(|| schema.clone()) != &schema {
                    continue;
                }
                let column_name = row.column_name.as_str().ok().flatten().unwrap_or_default().to_string();
                let type_name =
                    row.type_name.as_str().ok().flatten().unwrap_or_default().to_ascii_lowercase();
                columns.push((column_name, row.data_type, type_name, row.nullable == 0));
            }
            Ok(columns)
        })?;
        if catalog.is_empty() {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!(
                    "table {name:?} was not found through the ODBC driver (check table, and the database connection_string names)"
                ),
            ));
        }
        let mut found = Vec::new();
        for (column_name, data_type, type_name, not_null) in catalog {
            found.push(Column {
                name: column_name,
                kind: kind_of(data_type),
                sql_type: type_name,
                not_null,
                multi: false,
                generated: false,
            });
        }
        let (anchor, columns) =
            split_anchor(found, &name, &anchor_name, |c| references.split(',').any(|r| r.trim() == c))?;
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let custom = Custom::load(config, Dialect::Odbc, &anchor.name, &names)?;
        Ok(Self { anchor, columns, custom, quote, ..table })
    }

    /// Runs `f` on the connection, opening it first if needed; forgets a connection the driver
    /// reports dead, so that the next call opens a new one.
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection<'static>) -> Result<T, ConnectorError>,
    ) -> Result<T, Status> {
        // A driver that panicked under the lock leaves it poisoned: its connection is dropped and
        // the next call opens a new one, instead of every later call failing.
        let mut slot = self.connection.lock().unwrap_or_else(|poisoned| {
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        });
        let conn = match slot.take() {
            Some(conn) => slot.insert(conn),
            None => {
                let env = environment()?;
                let conn = env
                    .connect_with_connection_string(&self.connection_string, ConnectionOptions::default())
                    .map_err(|e| {
                        let hint = match &e {
                            odbc_api::Error::Diagnostics { record, .. } => connect_hint(&record.state.0),
                            _ => "",
                        };
                        let detail = e.to_string().replace(&self.connection_string, "<connection_string>");
                        error_status(
                            ErrorKind::ConnectionFailed,
                            format!("cannot connect through ODBC: {detail}{hint}"),
                        )
                    })?;
                slot.insert(conn)
            }
        };
        let result = f(conn);
        if result.is_err() && conn.is_dead().unwrap_or(true) {
            *slot = None;
        }
        result.map_err(Status::from)
    }

    fn q(&self, name: &str) -> String {
        format!("{q}{name}{q}", q = self.quote)
    }

    fn column(&self, name: &str) -> Result<&Column, ConnectorError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!("{name:?} is not a column of table {:?}", self.name),
            )
        })
    }

    pub fn ping(&self) -> Result<(), Status> {
        self.with(|conn| conn.execute("SELECT 1", (), None).map(|_| ()).map_err(odbc_error))
            .or_else(|_| self.with(|conn| conn.is_dead().map(|_| ()).map_err(odbc_error)))
    }

    /// Applies each entry as its own autocommitted statement.
    pub fn export(&self, changes: &[CsEntryChange]) -> Vec<Result<Applied, ConnectorError>> {
        changes
            .iter()
            .map(|change| {
                match self.with(|conn| match self.apply(conn, change) {
                    // A failure of the connection rather than of the entry goes back through `with`,
                    // which drops a connection the driver reports dead (the next entry opens a new
                    // one). Each entry is autocommitted, so nothing is left open either way.
                    Err(e)
                        if matches!(
                            e.kind,
                            ErrorKind::ConnectionFailed | ErrorKind::Retryable | ErrorKind::Timeout
                        ) =>
                    {
                        Err(e)
                    }
                    other => Ok(other),
                }) {
                    Ok(result) => result,
                    Err(status) => Err(ConnectorError::new(
                        ecma_proto::error_kind_of(&status).unwrap_or(ErrorKind::ConnectionFailed),
                        status.message().to_string(),
                    )),
                }
            })
            .collect()
    }

    fn apply(&self, conn: &Connection<'static>, change: &CsEntryChange) -> Result<Applied, ConnectorError> {
        use v1::ObjectModificationType as M;
        let anchor = change.anchors.iter().find(|a| a.name == self.anchor.name).and_then(|a| a.value.clone());
        let mut values: HashMap<String, Option<Value>> = HashMap::new();
        for attr in &change.attribute_changes {
            let column = self.column(&attr.name)?;
            values.insert(column.name.clone(), single_value(attr)?);
        }
        let missing_anchor = || {
            ConnectorError::new(
                ErrorKind::InvalidAttributeValue,
                format!("anchor {:?} missing", self.anchor.name),
            )
        };
        let table = self.q(&self.name);
        let key = self.q(&self.anchor.name);
        match M::try_from(change.modification_type).unwrap_or(M::Unspecified) {
            M::Add => {
                let anchor = anchor.unwrap_or_else(|| Value::string(uuid::Uuid::new_v4().to_string()));
                if let Some(statement) = self.custom.get(Operation::Add) {
                    let returned =
                        self.run(conn, &statement.sql, &statement.names, &values, Some(&anchor), true)?;
                    return Ok(Applied { anchor: returned.map(Value::string).unwrap_or(anchor) });
                }
                let mut names = vec![self.anchor.name.clone()];
                names.extend(values.keys().cloned());
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    names.iter().map(|n| self.q(n)).collect::<Vec<_>>().join(", "),
                    vec!["?"; names.len()].join(", ")
                );
                let names: Vec<String> =
                    std::iter::once("anchor".to_string()).chain(names.into_iter().skip(1)).collect();
                self.run(conn, &sql, &names, &values, Some(&anchor), false)?;
                Ok(Applied { anchor })
            }
            kind @ (M::Update | M::Replace) => {
                let anchor = anchor.ok_or_else(missing_anchor)?;
                if kind == M::Replace {
                    for column in &self.columns {
                        values.entry(column.name.clone()).or_insert(None);
                    }
                }
                if let Some(statement) = self.custom.get(Operation::Update) {
                    // The statement sets whole rows: what the change does not name keeps its value.
                    let mut current = self.current(conn, &anchor)?;
                    current.extend(values);
                    self.run(conn, &statement.sql, &statement.names, &current, Some(&anchor), false)?;
                    return Ok(Applied { anchor });
                }
                if values.is_empty() {
                    self.current(conn, &anchor)?;
                    return Ok(Applied { anchor });
                }
                let names: Vec<String> = values.keys().cloned().collect();
                let sets = names.iter().map(|n| format!("{} = ?", self.q(n))).collect::<Vec<_>>().join(", ");
                let sql = format!("UPDATE {table} SET {sets} WHERE {key} = ?");
                let mut bound = names;
                bound.push("anchor".into());
                let count = self.execute_counting(conn, &sql, &bound, &values, Some(&anchor))?;
                if count == Some(0) {
                    return Err(ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
                }
                Ok(Applied { anchor })
            }
            M::Delete => {
                let anchor = anchor.ok_or_else(missing_anchor)?;
                if let Some(statement) = self.custom.get(Operation::Delete) {
                    self.run(conn, &statement.sql, &statement.names, &values, Some(&anchor), false)?;
                    return Ok(Applied { anchor });
                }
                let sql = format!("DELETE FROM {table} WHERE {key} = ?");
                let count =
                    self.execute_counting(conn, &sql, &["anchor".to_string()], &values, Some(&anchor))?;
                if count == Some(0) {
                    return Err(ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
                }
                Ok(Applied { anchor })
            }
            other => Err(ConnectorError::new(ErrorKind::Unsupported, format!("modification {other:?}"))),
        }
    }

    fn bind(
        &self,
        names: &[String],
        values: &HashMap<String, Option<Value>>,
        anchor: Option<&Value>,
    ) -> Vec<Box<dyn InputParameter>> {
        names
            .iter()
            .map(|name| {
                if name == "anchor" || *name == self.anchor.name {
                    return parameter(anchor, AttributeType::String);
                }
                let kind =
                    self.columns.iter().find(|c| &c.name == name).map_or(AttributeType::String, |c| c.kind);
                parameter(values.get(name).and_then(Option::as_ref), kind)
            })
            .collect()
    }

    /// Runs a statement; with `first_text`, returns the first column of its first row, if any.
    fn run(
        &self,
        conn: &Connection<'static>,
        sql: &str,
        names: &[String],
        values: &HashMap<String, Option<Value>>,
        anchor: Option<&Value>,
        first_text: bool,
    ) -> Result<Option<String>, ConnectorError> {
        let params = self.bind(names, values, anchor);
        let cursor = conn.execute(sql, &params[..], None).map_err(odbc_error)?;
        match (cursor, first_text) {
            (Some(mut cursor), true) => {
                let mut buf = Vec::new();
                match cursor.next_row().map_err(odbc_error)? {
                    Some(mut row) => {
                        row.get_text(1, &mut buf).map_err(odbc_error)?;
                        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
                    }
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    fn execute_counting(
        &self,
        conn: &Connection<'static>,
        sql: &str,
        names: &[String],
        values: &HashMap<String, Option<Value>>,
        anchor: Option<&Value>,
    ) -> Result<Option<usize>, ConnectorError> {
        let params = self.bind(names, values, anchor);
        let mut statement = conn.preallocate().map_err(odbc_error)?;
        statement.execute(sql, &params[..]).map_err(odbc_error)?;
        statement.row_count().map_err(odbc_error)
    }

    fn select_list(&self) -> String {
        std::iter::once(&self.anchor)
            .chain(&self.columns)
            .map(|c| self.q(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The row with `anchor`, by column name (NoSuchObject without one).
    fn current(
        &self,
        conn: &Connection<'static>,
        anchor: &Value,
    ) -> Result<HashMap<String, Option<Value>>, ConnectorError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?",
            self.select_list(),
            self.q(&self.name),
            self.q(&self.anchor.name)
        );
        let params = self.bind(&["anchor".to_string()], &HashMap::new(), Some(anchor));
        let cursor = conn.execute(&sql, &params[..], None).map_err(odbc_error)?;
        let entry = cursor
            .map(|c| self.read(c, 1))
            .transpose()?
            .and_then(|mut e| e.pop())
            .ok_or(ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"))?;
        let mut values: HashMap<String, Option<Value>> =
            self.columns.iter().map(|c| (c.name.clone(), None)).collect();
        for attribute in entry.attributes {
            values.insert(attribute.name, attribute.values.into_iter().next());
        }
        Ok(values)
    }

    /// Up to `limit` rows of a cursor as entries, columns found by name.
    fn read(&self, mut cursor: impl Cursor, limit: usize) -> Result<Vec<Entry>, ConnectorError> {
        let count = cursor.num_result_cols().map_err(odbc_error)? as u16;
        let mut names = Vec::with_capacity(count as usize);
        for i in 1..=count {
            names.push(cursor.col_name(i).map_err(odbc_error)?.to_ascii_lowercase());
        }
        let anchor_index =
            names.iter().position(|n| *n == self.anchor.name.to_ascii_lowercase()).ok_or_else(|| {
                ConnectorError::new(
                    ErrorKind::Internal,
                    format!("the rows have no column {:?} (the anchor)", self.anchor.name),
                )
            })?;
        let mut entries = Vec::new();
        let mut buf = Vec::new();
        while entries.len() < limit {
            let Some(mut row) = cursor.next_row().map_err(odbc_error)? else { break };
            let mut anchor = None;
            let mut attributes = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let column = (i as u16) + 1;
                let kind = if i == anchor_index {
                    AttributeType::String
                } else {
                    match self.columns.iter().find(|c| c.name.to_ascii_lowercase() == *name) {
                        Some(c) => c.kind,
                        None => continue,
                    }
                };
                let present = if kind == AttributeType::Binary {
                    row.get_binary(column, &mut buf).map_err(odbc_error)?
                } else {
                    row.get_text(column, &mut buf).map_err(odbc_error)?
                };
                if !present {
                    continue;
                }
                let value = match kind {
                    AttributeType::Binary => Value { kind: Some(Kind::BinaryValue(buf.clone())) },
                    _ => {
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        match kind {
                            AttributeType::Integer => {
                                text.trim().parse().map(Value::integer).unwrap_or(Value::string(text))
                            }
                            AttributeType::Boolean => Value::boolean(matches!(
                                text.trim().to_ascii_lowercase().as_str(),
                                "1" | "t" | "true" | "y" | "yes"
                            )),
                            AttributeType::Reference => Value { kind: Some(Kind::ReferenceValue(text)) },
                            _ => Value::string(text),
                        }
                    }
                };
                if i == anchor_index {
                    anchor = Some(value);
                } else {
                    let column_name = self
                        .columns
                        .iter()
                        .find(|c| c.name.to_ascii_lowercase() == *name)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    attributes.push(AttributeValues { name: column_name, values: vec![value] });
                }
            }
            let anchor =
                anchor.ok_or_else(|| ConnectorError::new(ErrorKind::Internal, "a row without anchor"))?;
            entries.push(Entry {
                object_type: self.object_type.clone(),
                anchors: vec![Anchor { name: self.anchor.name.clone(), value: Some(anchor) }],
                dn: String::new(),
                attributes,
                partition_id: PARTITION.to_string(),
            });
        }
        Ok(entries)
    }

    /// One page of a full import in anchor order after `after`.
    pub fn page(&self, after: Option<&str>, size: u32) -> Result<Page, Status> {
        let after_value = after.map(|a| Value::string(a.to_string()));
        let entries = self.with(|conn| {
            let (sql, names) = match self.custom.get(Operation::Read) {
                Some(statement) => (statement.sql.clone(), statement.names.clone()),
                None => {
                    let mut sql = format!("SELECT {} FROM {}", self.select_list(), self.q(&self.name));
                    let mut names = Vec::new();
                    if after.is_some() {
                        sql.push_str(&format!(" WHERE {} > ?", self.q(&self.anchor.name)));
                        names.push("after".to_string());
                    }
                    sql.push_str(&format!(" ORDER BY {}", self.q(&self.anchor.name)));
                    (sql, names)
                }
            };
            let params: Vec<Box<dyn InputParameter>> = names
                .iter()
                .map(|n| match n.as_str() {
                    "after" => parameter(after_value.as_ref(), AttributeType::String),
                    "page_size" => Box::new(i64::from(size)) as Box<dyn InputParameter>,
                    _ => parameter(None, AttributeType::String),
                })
                .collect();
            match conn.execute(&sql, &params[..], None).map_err(odbc_error)? {
                Some(cursor) => self.read(cursor, size as usize),
                None => Ok(Vec::new()),
            }
        })?;
        let last = entries.last().and_then(|e| e.anchors[0].value.as_ref()).and_then(Value::as_text);
        Ok(Page { entries: entries.into_iter().map(|e| (false, e)).collect(), last })
    }

    /// Rows whose `column` equals `value`.
    pub fn lookup(&self, column: &str, value: Value) -> Result<Vec<Entry>, Status> {
        if column != self.anchor.name {
            self.column(column).map_err(Status::from)?;
        }
        check_identifier("lookup column", column)?;
        let sql =
            format!("SELECT {} FROM {} WHERE {} = ?", self.select_list(), self.q(&self.name), self.q(column));
        self.with(|conn| {
            let params = [parameter(Some(&value), AttributeType::String)];
            match conn.execute(&sql, &params[..], None).map_err(odbc_error)? {
                Some(cursor) => self.read(cursor, usize::MAX),
                None => Ok(Vec::new()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_name_what_to_fix_in_connection_string() {
        assert!(connect_hint(b"IM002").contains("Driver="));
        assert!(connect_hint(b"28000").contains("UID= and PWD="));
        assert!(connect_hint(b"08001").contains("server, port"));
        assert!(connect_hint(b"3D000").contains("database name"));
        assert_eq!(connect_hint(b"42S02"), "");
    }
}
