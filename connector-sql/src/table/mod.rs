//! One configured table: its columns as read from the database's catalog, and the parameterised
//! statements that read and write it, in the dialect of the database behind the connection
//! string (PostgreSQL, MySQL/MariaDB or SQLite, through sqlx's `Any` driver).
//!
//! `open`: settings, connection and catalog; `write`: the write path; `read`: lookups and
//! imports; `ddl`: what the connector creates; `errors`: database errors as error kinds;
//! `connection`: the pool.

mod connection;
mod ddl;
mod errors;
mod open;
mod read;
mod write;

pub use errors::db_status;

use ecma_connector_sdk::ConnectorError;
use ecma_proto::v1::{self, ErrorKind, Value, value::Kind};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row};
use tonic::Status;

use crate::dialect::Dialect;
use crate::model::*;
use crate::statements::Custom;

/// Delta imports by a watermark column.
#[derive(Debug)]
struct Watermark {
    column: Column,
    /// Returns the mark a run starts from; wrapped in a cast to text.
    query: String,
    /// The connector created the column: its own updates keep it current.
    touch: bool,
}

/// The configured table, with its columns read from the database.
#[derive(Debug)]
pub struct Table {
    pool: AnyPool,
    pub dialect: Dialect,
    pub name: String,
    pub object_type: String,
    pub anchor: Column,
    /// All columns but the anchor.
    pub columns: Vec<Column>,
    watermark: Option<Watermark>,
    /// The query giving a run's mark (configured, or the dialect's default).
    watermark_query: String,
    /// A boolean column marking rows as deleted: such rows are left out of full imports and
    /// reported as deletes by delta imports.
    soft_delete: Option<Column>,
    /// SQLite takes one writer at a time: batches are applied one after the other.
    writer: tokio::sync::Mutex<()>,
    /// Export batches may run concurrently (a database server, not SQLite).
    pub concurrent: bool,
    /// Statements or stored procedures the admin configured, by operation (others are
    /// generated from the catalog).
    custom: Custom,
    /// A change table (anchor, changed_at) that delta imports read: kept by the application or
    /// by triggers the connector installs.
    changes: Option<Changes>,
}

/// The change table of delta imports.
#[derive(Debug)]
struct Changes {
    table: String,
    /// Its `changed_at` column (for the cast of the mark).
    at: Column,
    /// The connector installed it (and prunes what no delta will read again).
    owned: bool,
}

/// The child table holding the values of a multi-valued attribute.
pub(crate) fn child_table(table: &str, attribute: &str) -> String {
    format!("{table}_{attribute}")
}

/// A column as text: text, or an integer (an identity anchor a statement returned as is).
pub(crate) fn any_text<I: sqlx::ColumnIndex<AnyRow> + Copy + std::fmt::Debug>(
    row: &AnyRow,
    index: I,
) -> Result<String, ConnectorError> {
    match row.try_get::<Option<String>, _>(index) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(ConnectorError::new(ErrorKind::Internal, format!("column {index:?} is NULL"))),
        Err(_) => row.try_get::<i64, _>(index).map(|i| i.to_string()).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Internal,
                format!(
                    "column {index:?} is neither text nor an integer (cast it to text in the statement): {e}"
                ),
            )
        }),
    }
}

/// A boolean as the driver gives it: a boolean (PostgreSQL) or an integer (MySQL, SQLite).
pub(crate) fn read_bool<I: sqlx::ColumnIndex<AnyRow> + Copy>(
    row: &AnyRow,
    index: I,
) -> Result<Option<bool>, sqlx::Error> {
    match row.try_get::<Option<bool>, _>(index) {
        Ok(v) => Ok(v),
        Err(_) => row.try_get::<Option<i64>, _>(index).map(|v| v.map(|i| i != 0)),
    }
}

pub(crate) type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

pub(crate) fn bind(query: Query<'_>, value: Option<Value>) -> Query<'_> {
    match value.and_then(|v| v.kind) {
        None => query.bind(None::<String>),
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => query.bind(s),
        Some(Kind::IntegerValue(i)) => query.bind(i),
        Some(Kind::BooleanValue(b)) => query.bind(b),
        Some(Kind::BinaryValue(b)) => query.bind(b),
    }
}

/// Values bound to a statement under construction, in order.
pub(crate) struct Params {
    dialect: Dialect,
    values: Vec<Option<Value>>,
}

impl Params {
    fn new(dialect: Dialect) -> Self {
        Self { dialect, values: Vec::new() }
    }

    /// Binds `value` for `column` and returns its placeholder (with a cast where needed).
    fn add(&mut self, column: &Column, value: Option<Value>) -> String {
        // The catalog's type decides (an anchor travels as text whatever its column's type).
        let native = value.as_ref().is_some_and(|v| kind_matches(v, self.dialect.kind_of(&column.sql_type)));
        self.values.push(value);
        self.dialect.value_for(self.values.len(), &column.sql_type, native)
    }

    /// Binds a text value compared with no column (a plain placeholder).
    fn text(&mut self, value: &str) -> String {
        self.values.push(Some(Value::string(value.to_string())));
        self.dialect.placeholder(self.values.len())
    }

    /// Binds an integer (a LIMIT) and returns its placeholder.
    fn int(&mut self, value: i64) -> String {
        self.values.push(Some(Value::integer(value)));
        self.dialect.placeholder(self.values.len())
    }

    fn query(self, sql: String) -> Query<'static> {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in self.values {
            query = bind(query, value);
        }
        query
    }
}

impl Table {
    pub(super) fn q(&self, name: &str) -> String {
        self.dialect.quote(name)
    }

    /// The schema type this table offers.
    pub fn schema_type(&self) -> v1::SchemaType {
        schema_type(&self.object_type, &self.anchor, &self.columns)
    }

    pub(super) fn column(&self, name: &str) -> Result<&Column, ConnectorError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!("{name:?} is not a column of table {:?}", self.name),
            )
        })
    }

    /// Runs a trivial statement, to prove the database answers.
    pub async fn ping(&self) -> Result<(), Status> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(db_status)
    }
}
