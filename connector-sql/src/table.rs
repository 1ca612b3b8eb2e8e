//! One configured table: its columns as read from the database's catalog, and the parameterised
//! statements that read and write it, in the dialect of the database behind the connection
//! string (PostgreSQL, MySQL/MariaDB or SQLite, through sqlx's `Any` driver).

use std::collections::HashMap;
use std::time::Duration;

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{
    self, Anchor, AttributeChange, AttributeModificationType, AttributeType, AttributeValues, CsEntryChange,
    Entry, ErrorKind, Value, value::Kind,
};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use tonic::Status;

use crate::dialect::Dialect;
use crate::statements::{Custom, Operation, Statement};

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

/// The outcome of one entry of an export batch.
pub struct Applied {
    pub anchor: Value,
}

/// An entry-level failure, reported in that entry's result: the SDK's one error type.
pub use ecma_connector_sdk::ConnectorError;

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

/// The child table holding the values of a multi-valued attribute.
fn child_table(table: &str, attribute: &str) -> String {
    format!("{table}_{attribute}")
}

/// Maps a database error to the protocol's error kinds, naming the constraint's column.
fn db_error(error: sqlx::Error) -> ConnectorError {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if let Some(kind) = passing_kind(db.as_ref(), &code) {
                return ConnectorError::new(kind, passing_detail(kind, db.message()));
            }
            let kind = match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => ErrorKind::AlreadyExists,
                sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::CheckViolation => ErrorKind::ConstraintViolation,
                // PostgreSQL: connection exceptions (08) and operator intervention (57P: the
                // server is shutting down or restarting).
                _ if code.starts_with("08") || code.starts_with("57P") => ErrorKind::ConnectionFailed,
                // PostgreSQL 42501, MySQL 1142/1143/1044/1045 (error numbers; the code sqlx
                // gives for MySQL is the SQLSTATE): permission denied.
                _ if code == "42501"
                    || matches!(mysql_number(db.as_ref()), Some(1142 | 1143 | 1044 | 1045)) =>
                {
                    ErrorKind::PermissionDenied
                }
                _ => ErrorKind::Internal,
            };
            let mut detail = db.message().to_string();
            // PostgreSQL names the column in its detail ("Key (user_name)=(...) already exists").
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(more) = pg.detail() {
                    detail = format!("{detail}: {more}");
                }
                if let Some(column) = pg.column() {
                    detail = format!("{detail} (column {column})");
                }
            }
            ConnectorError::new(kind, detail)
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            ConnectorError::new(ErrorKind::ConnectionFailed, error.to_string())
        }
        _ => ConnectorError::new(ErrorKind::Internal, error.to_string()),
    }
}

/// A MySQL/MariaDB error's number.
fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number())
}

/// The error kind of a failure that says the database cannot take writes for now (rather than
/// that this write is wrong): the supervisor answers 503 with Retry-After and reports the
/// connector degraded until its health checks pass.
/// - SQLite (extended result codes; the primary code is the low byte): BUSY (5) and LOCKED (6)
///   after `busy_timeout`, a timeout; FULL (13), IOERR (10), NOMEM (7), retryable.
/// - PostgreSQL: serialization failure (40001), deadlock (40P01), lock not available (55P03),
///   insufficient resources (53xxx: disk full, out of memory, too many connections) retryable;
///   a statement timeout (57014) a timeout.
/// - MySQL/MariaDB: lock wait timeout (1205) a timeout; deadlock (1213), table or disk full
///   (1114, 1021), too many connections (1040) retryable.
fn passing_kind(db: &dyn sqlx::error::DatabaseError, code: &str) -> Option<ErrorKind> {
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return match code.parse::<u32>().ok()? & 0xff {
            5 | 6 => Some(ErrorKind::Timeout),
            7 | 10 | 13 => Some(ErrorKind::Retryable),
            _ => None,
        };
    }
    if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return match code {
            "57014" => Some(ErrorKind::Timeout),
            "40001" | "40P01" | "55P03" => Some(ErrorKind::Retryable),
            c if c.starts_with("53") => Some(ErrorKind::Retryable),
            _ => None,
        };
    }
    match mysql_number(db)? {
        1205 => Some(ErrorKind::Timeout),
        1213 | 1114 | 1021 | 1040 => Some(ErrorKind::Retryable),
        _ => None,
    }
}

/// The detail of a passing failure: what the database said, and what it means.
fn passing_detail(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::Timeout => format!(
            "{message} (the database kept the rows locked; the write was rolled back and can be retried)"
        ),
        _ => format!(
            "{message} (the database cannot take writes for now; the write was rolled back and can be retried)"
        ),
    }
}

/// A failed COMMIT. When the connection broke, whether the database committed is unknown: the
/// call fails without an error kind (gRPC UNAVAILABLE), which the supervisor takes as "outcome
/// unknown" and settles by looking the objects up, instead of as a failure that wrote nothing
/// (which a retry would turn into a duplicate).
pub(crate) fn commit_failed(error: sqlx::Error) -> Status {
    let e = db_error(error);
    if e.kind == ErrorKind::ConnectionFailed {
        Status::unavailable(format!(
            "the connection broke during COMMIT; its outcome is unknown: {}",
            e.detail
        ))
    } else {
        error_status(e.kind, e.detail)
    }
}

/// A whole-call failure from a database error.
pub fn db_status(error: sqlx::Error) -> Status {
    let e = db_error(error);
    error_status(e.kind, e.detail)
}

/// Values bound to a statement under construction, in order.
struct Params {
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

fn kind_matches(value: &Value, kind: AttributeType) -> bool {
    matches!(
        (&value.kind, kind),
        (Some(Kind::StringValue(_)), AttributeType::String)
            | (Some(Kind::ReferenceValue(_)), AttributeType::Reference | AttributeType::String)
            | (Some(Kind::IntegerValue(_)), AttributeType::Integer)
            | (Some(Kind::BooleanValue(_)), AttributeType::Boolean)
            | (Some(Kind::BinaryValue(_)), AttributeType::Binary)
    )
}

fn list(config: &impl ConfigExt, key: &str) -> Result<Vec<String>, Status> {
    let names: Vec<String> = config
        .get(key)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    for n in &names {
        check_identifier(key, n)?;
    }
    Ok(names)
}

fn identifier(config: &impl ConfigExt, key: &str) -> Result<Option<String>, Status> {
    match config.get(key) {
        Some(name) => {
            check_identifier(key, name)?;
            Ok(Some(name.to_string()))
        }
        None => Ok(None),
    }
}

async fn connect(dialect: Dialect, url: &str, create: bool) -> Result<AnyPool, Status> {
    sqlx::any::install_default_drivers();
    let mut url = url.to_string();
    if dialect == Dialect::Sqlite && create && !url.contains("mode=") {
        url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
    }
    let options = AnyPoolOptions::new()
        .max_connections(if dialect == Dialect::Sqlite { 4 } else { 8 })
        .acquire_timeout(Duration::from_secs(5))
        // A connection whose transaction bookkeeping cannot be trusted is dropped, never handed
        // out again. A COMMIT or ROLLBACK that fails (SQLite's automatic rollback after a full
        // disk, an I/O error) leaves sqlx counting one transaction too many: its next BEGIN
        // becomes a SAVEPOINT, a later ROLLBACK only rolls back to it, and the connection then
        // sits inside a transaction that its COMMITs (RELEASE SAVEPOINTs) never end: writes
        // acknowledged and never committed, and every other connection "database is locked".
        .before_acquire(move |conn, _| {
            Box::pin(async move {
                use sqlx::Connection;
                if conn.is_in_transaction() {
                    tracing::warn!("dropping a database connection left inside a transaction");
                    return Ok(false);
                }
                // SQLite's own view (sqlx cannot show it through the Any driver): a BEGIN fails
                // inside a transaction. In-process, this costs microseconds.
                if dialect == Dialect::Sqlite
                    && sqlx::raw_sql("BEGIN; ROLLBACK").execute(&mut *conn).await.is_err()
                {
                    tracing::warn!("dropping a SQLite connection that SQLite says is inside a transaction");
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    sqlx::raw_sql("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL")
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        });
    // Switching a SQLite database to WAL takes an exclusive lock, and SQLite answers "database is
    // locked" at once (busy_timeout does not cover it) when another process, such as a second
    // connector on the same file starting at the same moment, holds it: try again briefly.
    let mut attempts = 0;
    loop {
        match options.clone().connect(&url).await {
            Ok(pool) => return Ok(pool),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20 + 10 * attempts)).await;
            }
            Err(e) => {
                // A URL the driver cannot use is the configuration's fault; anything else
                // (refused, unreachable, refused credentials, a file that cannot be opened) is
                // the target's, and is retried by the supervisor's health checks.
                let kind = match e {
                    sqlx::Error::Configuration(_) => ErrorKind::InvalidConfiguration,
                    _ => ErrorKind::ConnectionFailed,
                };
                let hint = connect_hint(dialect, &url, &e);
                let detail = db_error(e).detail;
                return Err(error_status(
                    kind,
                    format!("cannot connect to the database: {}{hint}", redact(&detail, &url)),
                ));
            }
        }
    }
}

/// `host:port` of a database server URL, without its user name or password (`None` for
/// SQLite, whose URL names a file).
fn server_of(dialect: Dialect, url: &str) -> Option<String> {
    let default_port = match dialect {
        Dialect::Postgres => 5432,
        Dialect::MySql => 3306,
        Dialect::Sqlite | Dialect::Odbc => return None,
    };
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.is_empty() { "localhost" } else { host };
    let has_port = host[host.rfind(']').map_or(0, |i| i + 1)..].contains(':');
    Some(if has_port { host.to_string() } else { format!("{host}:{default_port}") })
}

/// What the admin can change when the database refused a connection with this error code
/// (SQLSTATE; MySQL's error number; SQLite's result code).
fn refusal_hint(dialect: Dialect, code: &str, mysql_number: Option<u16>) -> &'static str {
    const CREDENTIALS: &str =
        "; the database refused the user name or password: check them in connection_string";
    const DATABASE: &str = "; check the database name in connection_string (the path after the host)";
    match (dialect, code, mysql_number) {
        (Dialect::Postgres, "28P01", _) | (Dialect::MySql, _, Some(1045)) => CREDENTIALS,
        (Dialect::Postgres, "28000", _) => {
            "; the server refused this user from this host: check the user name in connection_string (and the server's pg_hba.conf)"
        }
        (Dialect::Postgres, "3D000", _) | (Dialect::MySql, _, Some(1049)) => DATABASE,
        (Dialect::MySql, _, Some(1044)) => {
            "; the user may not use this database: check the database name in connection_string, or grant the user access"
        }
        (Dialect::Sqlite, code, _) => match code.parse::<i32>().map(|c| c & 0xff) {
            // SQLITE_CANTOPEN
            Ok(14) => {
                "; check the file path in connection_string: its directory must exist, and the file too unless create_table = true"
            }
            // SQLITE_NOTADB
            Ok(26) => "; the file in connection_string is not a SQLite database",
            _ => "",
        },
        _ => "",
    }
}

/// A hint to append to a failed connection's message, naming the part of connection_string to
/// fix (never its password).
fn connect_hint(dialect: Dialect, url: &str, error: &sqlx::Error) -> String {
    let server = || server_of(dialect, url).map(|s| format!(" at {s}")).unwrap_or_default();
    match error {
        sqlx::Error::PoolTimedOut if dialect != Dialect::Sqlite => format!(
            "; the database server{} did not accept a connection within 5 s (refused, or no answer): check the host and port in connection_string, and that the server is running",
            server()
        ),
        sqlx::Error::Io(_) if dialect != Dialect::Sqlite => format!(
            "; the database server{} is not reachable: check the host and port in connection_string, and that the server is running",
            server()
        ),
        sqlx::Error::Tls(_) => {
            "; check the TLS options in connection_string (e.g. sslmode, sslrootcert)".into()
        }
        sqlx::Error::Database(db) => {
            let number = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number());
            refusal_hint(dialect, db.code().as_deref().unwrap_or(""), number).to_string()
        }
        _ => String::new(),
    }
}

impl Table {
    /// Connects, creates the table when configured to, and reads its columns.
    /// Opens the table `config` (read against the declared parameters) describes.
    pub async fn open(config: &(impl ConfigExt + Sync)) -> Result<Self, Status> {
        let url = config.require("connection_string")?.to_string();
        let dialect = Dialect::of_url(&url)?;
        let name = config.require("table")?.to_string();
        check_identifier("table", &name)?;
        let anchor_name = config.text("anchor_column").to_string();
        check_identifier("anchor_column", &anchor_name)?;
        let object_type = config.text("object_type").to_string();
        let create = config.boolean("create_table", false)?;
        let multi_valued = list(config, "multi_valued")?;
        let references = list(config, "references")?;
        let watermark_column = identifier(config, "watermark_column")?;
        let soft_delete_column = identifier(config, "soft_delete_column")?;
        let change_table = identifier(config, "change_table")?;
        let install_triggers = config.boolean("install_change_triggers", false)?;
        if install_triggers && change_table.is_none() {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                "install_change_triggers needs change_table (the name of the table the triggers write)",
            ));
        }
        let pool = connect(dialect, &url, create).await?;
        let q = |n: &str| dialect.quote(n);

        if create {
            let columns = parse_column_definitions(config.text("columns"))?;
            let mut ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} ({} {} PRIMARY KEY NOT NULL",
                q(&name),
                q(&anchor_name),
                dialect.ddl_type(AttributeType::String, true)
            );
            for (column, kind, unique) in &columns {
                ddl.push_str(&format!(
                    ", {} {}{}",
                    q(column),
                    dialect.ddl_type(*kind, *unique),
                    if *unique { " UNIQUE" } else { "" }
                ));
            }
            if let Some(column) = &soft_delete_column
                && !columns.iter().any(|(c, _, _)| c == column)
            {
                ddl.push_str(&format!(", {} BOOLEAN NOT NULL DEFAULT FALSE", q(column)));
            }
            if let Some(column) = &watermark_column {
                ddl.push_str(&format!(", {} {}", q(column), dialect.ddl_watermark()));
            }
            ddl.push(')');
            create_if_missing(&pool, ddl).await?;
            let key = dialect.ddl_type(AttributeType::String, true);
            for attribute in &multi_valued {
                let child = format!(
                    "CREATE TABLE IF NOT EXISTS {} (owner {key} NOT NULL, value {key} NOT NULL, PRIMARY KEY (owner, value))",
                    q(&child_table(&name, attribute))
                );
                create_if_missing(&pool, child).await?;
            }
        }

        let catalog = Self::catalog(&pool, dialect, &name).await?;
        if catalog.is_empty() {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!(
                    "table {name:?} does not exist in the database connection_string names{} (check table, or set create_table = true to create it)",
                    if dialect == Dialect::Postgres { ", in its current schema" } else { "" }
                ),
            ));
        }
        let mut anchor = None;
        let mut columns = Vec::new();
        for mut column in catalog {
            if references.contains(&column.name) {
                column.kind = AttributeType::Reference;
            }
            if column.name == anchor_name {
                // Anchors travel as text whatever the column's type.
                column.kind = AttributeType::String;
                anchor = Some(column);
            } else {
                columns.push(column);
            }
        }
        let anchor = anchor.ok_or_else(|| {
            error_status(
                ErrorKind::InvalidConfiguration,
                format!("anchor_column {anchor_name:?} is not a column of table {name:?}"),
            )
        })?;
        let find = |key: &str, wanted: &Option<String>| -> Result<Option<Column>, Status> {
            // (multi-valued attributes are not columns of the table itself)
            let Some(wanted) = wanted else { return Ok(None) };
            columns.iter().find(|c| &c.name == wanted).cloned().map(Some).ok_or_else(|| {
                error_status(
                    ErrorKind::InvalidConfiguration,
                    format!("{key} {wanted:?} is not a column of table {name:?}"),
                )
            })
        };
        let watermark_query =
            config.get("watermark_query").unwrap_or(dialect.default_watermark_query()).to_string();
        let watermark = find("watermark_column", &watermark_column)?.map(|column| Watermark {
            column,
            query: watermark_query.clone(),
            touch: create,
        });
        let soft_delete = find("soft_delete_column", &soft_delete_column)?;
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let custom = Custom::load(config, dialect, &anchor.name, &names)?;
        let changes = match change_table {
            Some(table) => {
                if install_triggers {
                    let children: Vec<String> = multi_valued.iter().map(|a| child_table(&name, a)).collect();
                    for statement in triggers(dialect, &name, &anchor_name, &children, &table) {
                        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&pool).await.map_err(|e| {
                            let e = db_error(e);
                            error_status(e.kind, format!("install_change_triggers: {}", e.detail))
                        })?;
                    }
                }
                let found = Self::catalog(&pool, dialect, &table).await?;
                let at = found.iter().find(|c| c.name == "changed_at").cloned();
                match (found.iter().any(|c| c.name == "anchor"), at) {
                    (true, Some(at)) => Some(Changes { table, at, owned: install_triggers }),
                    _ => {
                        return Err(error_status(
                            ErrorKind::InvalidConfiguration,
                            format!(
                                "change_table {table:?} needs the columns anchor and changed_at \
                                 (set install_change_triggers = true to create it with triggers)"
                            ),
                        ));
                    }
                }
            }
            None => None,
        };
        for attribute in multi_valued {
            let child = child_table(&name, &attribute);
            let found = Self::catalog(&pool, dialect, &child).await?;
            if !found.iter().any(|c| c.name == "owner") || !found.iter().any(|c| c.name == "value") {
                return Err(error_status(
                    ErrorKind::InvalidConfiguration,
                    format!("multi_valued: table {child:?} (owner, value) for {attribute:?} does not exist"),
                ));
            }
            let kind = if references.contains(&attribute) {
                AttributeType::Reference
            } else {
                AttributeType::String
            };
            columns.push(Column {
                name: attribute,
                kind,
                sql_type: String::new(),
                not_null: false,
                multi: true,
                generated: false,
            });
        }
        Ok(Self {
            pool,
            dialect,
            name,
            object_type,
            anchor,
            columns,
            watermark,
            soft_delete,
            watermark_query,
            writer: tokio::sync::Mutex::new(()),
            concurrent: dialect != Dialect::Sqlite,
            custom,
            changes,
        })
    }

    /// The columns of `table`, from the catalog.
    async fn catalog(pool: &AnyPool, dialect: Dialect, table: &str) -> Result<Vec<Column>, Status> {
        let rows =
            sqlx::query(dialect.columns_query()).bind(table).fetch_all(pool).await.map_err(db_status)?;
        let mut columns = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(db_status)?;
            let sql_type: String = row.try_get::<String, _>(1).map_err(db_status)?.to_ascii_lowercase();
            dialect.check_type_name(&sql_type)?;
            columns.push(Column {
                kind: dialect.kind_of(&sql_type),
                name,
                sql_type,
                not_null: read_bool(&row, 2).map_err(db_status)?.unwrap_or(false),
                multi: false,
                generated: read_bool(&row, 3).map_err(db_status)?.unwrap_or(false),
            });
        }
        Ok(columns)
    }

    fn q(&self, name: &str) -> String {
        self.dialect.quote(name)
    }

    /// The schema type this table offers.
    pub fn schema_type(&self) -> v1::SchemaType {
        schema_type(&self.object_type, &self.anchor, &self.columns)
    }

    fn column(&self, name: &str) -> Result<&Column, ConnectorError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!("{name:?} is not a column of table {:?}", self.name),
            )
        })
    }

    fn anchor_of(&self, change: &CsEntryChange) -> Result<Value, ConnectorError> {
        change.anchors.iter().find(|a| a.name == self.anchor.name).and_then(|a| a.value.clone()).ok_or_else(
            || {
                ConnectorError::new(
                    ErrorKind::InvalidAttributeValue,
                    format!("anchor {:?} missing", self.anchor.name),
                )
            },
        )
    }

    /// Applies an export batch in one transaction, each entry of a batch of several under a
    /// savepoint of its own (a failed entry is rolled back alone while the rest goes on).
    /// Returns one result per entry, in order; `Err` only when the transaction itself failed.
    ///
    /// The savepoints are plain SQL, not sqlx's nested transactions: when a savepoint statement
    /// fails (the connection broke), sqlx's nested-transaction bookkeeping queues a ROLLBACK of
    /// the whole transaction and forgets it, and a later COMMIT then reports success for
    /// entries that were rolled back. Here a failed savepoint statement fails the whole batch,
    /// which was then never committed.
    ///
    /// A batch of several is first tried without savepoints (one statement per entry instead of
    /// three): if every entry succeeds it commits as is; at the first failure nothing is
    /// committed, the transaction is rolled back and the batch runs again with savepoints.
    pub async fn export(
        &self,
        changes: &[CsEntryChange],
    ) -> Result<Vec<Result<Applied, ConnectorError>>, Status> {
        let _writer = if self.concurrent { None } else { Some(self.writer.lock().await) };
        if changes.len() > 1
            && let Some(done) = self.export_whole(changes).await?
        {
            return Ok(done);
        }
        let mut tx = self.pool.begin().await.map_err(db_status)?;
        let mut results = Vec::with_capacity(changes.len());
        let single = changes.len() == 1;
        let mut broken: Option<ConnectorError> = None;
        for (i, change) in changes.iter().enumerate() {
            if single {
                results.push(self.apply(&mut tx, change).await);
                break;
            }
            let savepoint = format!("ecma_entry_{i}");
            if let Err(e) =
                sqlx::query(AssertSqlSafe(format!("SAVEPOINT {savepoint}"))).execute(&mut *tx).await
            {
                broken = Some(db_error(e));
                break;
            }
            let result = self.apply(&mut tx, change).await;
            let end = if result.is_ok() { "RELEASE SAVEPOINT" } else { "ROLLBACK TO SAVEPOINT" };
            if let Err(e) = sqlx::query(AssertSqlSafe(format!("{end} {savepoint}"))).execute(&mut *tx).await {
                broken = Some(db_error(e));
                break;
            }
            results.push(result);
        }
        if let Some(e) = broken {
            // Nothing of the batch is committed: every entry fails with the transaction.
            let _ = tx.rollback().await;
            let detail = format!("the batch's transaction failed: {}", e.detail);
            return Ok(changes.iter().map(|_| Err(ConnectorError::new(e.kind, detail.clone()))).collect());
        }
        if single && results[0].is_err() {
            tx.rollback().await.map_err(db_status)?;
        } else if let Err(e) = tx.commit().await {
            return Err(commit_failed(e));
        }
        Ok(results)
    }

    /// The batch in one transaction without savepoints: `Some` (every entry applied and the
    /// transaction committed) or `None` (an entry failed; nothing was committed).
    async fn export_whole(
        &self,
        changes: &[CsEntryChange],
    ) -> Result<Option<Vec<Result<Applied, ConnectorError>>>, Status> {
        let mut tx = self.pool.begin().await.map_err(db_status)?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            match self.apply(&mut tx, change).await {
                Ok(applied) => results.push(Ok(applied)),
                Err(_) => {
                    // A broken connection shows again when the savepoint pass begins.
                    let _ = tx.rollback().await;
                    return Ok(None);
                }
            }
        }
        tx.commit().await.map_err(commit_failed)?;
        Ok(Some(results))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        change: &CsEntryChange,
    ) -> Result<Applied, ConnectorError> {
        use tracing::Instrument;
        use v1::ObjectModificationType as M;
        if !change.object_type.is_empty() && change.object_type != self.object_type {
            return Err(ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!("object type {:?} is not {:?}", change.object_type, self.object_type),
            ));
        }
        let operation = match M::try_from(change.modification_type).unwrap_or(M::Unspecified) {
            M::Add => "INSERT",
            M::Update | M::Replace => "UPDATE",
            M::Delete => "DELETE",
            _ => "NONE",
        };
        // The database operation's span: OpenTelemetry's database client conventions, the error
        // kind of a failure; no values.
        let span = tracing::info_span!(
            "db",
            otel.name = %format!("{operation} {}", self.name),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.dialect.name(),
            db.collection.name = %self.name,
            db.operation.name = operation,
            error.type = tracing::field::Empty,
        );
        let result = self.apply_one(tx, change).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", format!("{:?}", e.kind));
        }
        result
    }

    async fn apply_one(
        &self,
        tx: &mut Transaction<'_, Any>,
        change: &CsEntryChange,
    ) -> Result<Applied, ConnectorError> {
        use v1::ObjectModificationType as M;
        match M::try_from(change.modification_type).unwrap_or(M::Unspecified) {
            M::Add => self.insert(tx, change).await,
            M::Update => self.update(tx, change, false).await,
            M::Replace => self.update(tx, change, true).await,
            M::Delete => self.delete(tx, change).await,
            other => Err(ConnectorError::new(ErrorKind::Unsupported, format!("modification {other:?}"))),
        }
    }

    async fn insert(
        &self,
        tx: &mut Transaction<'_, Any>,
        change: &CsEntryChange,
    ) -> Result<Applied, ConnectorError> {
        let given = self.anchor_of(change).ok();
        let anchor = match given {
            Some(v) => Some(v),
            None if self.anchor.generated => None,
            None => Some(Value::string(uuid::Uuid::new_v4().to_string())),
        };
        if let Some(statement) = self.custom.get(Operation::Add) {
            let mut values = HashMap::new();
            let mut multi = Vec::new();
            for attr in &change.attribute_changes {
                let column = self.column(&attr.name)?;
                if column.multi {
                    multi.push((column, attr));
                } else {
                    values.insert(column.name.clone(), single_value(attr)?);
                }
            }
            values.insert(self.anchor.name.clone(), anchor.clone());
            let row = self.run(tx, statement, &values, anchor.clone()).await?;
            let anchor = match (row.as_ref().map(|r| any_text(r, 0)).transpose()?, anchor) {
                (Some(returned), _) => Value::string(returned),
                (None, Some(anchor)) => anchor,
                (None, None) => {
                    return Err(ConnectorError::new(
                        ErrorKind::Internal,
                        format!(
                            "{} returned no row: the database assigns {:?}, so the statement must return it \
                             (e.g. RETURNING {})",
                            statement.key, self.anchor.name, self.anchor.name
                        ),
                    ));
                }
            };
            for (column, attr) in multi {
                self.change_values(tx, column, &anchor, attr, true).await?;
            }
            return Ok(Applied { anchor });
        }
        let mut params = Params::new(self.dialect);
        let mut names = Vec::new();
        let mut placeholders = Vec::new();
        if let Some(anchor) = &anchor {
            names.push(self.q(&self.anchor.name));
            placeholders.push(params.add(&self.anchor, Some(anchor.clone())));
        }
        let mut multi = Vec::new();
        for attr in &change.attribute_changes {
            let column = self.column(&attr.name)?;
            if column.multi {
                multi.push((column, attr));
                continue;
            }
            names.push(self.q(&column.name));
            placeholders.push(params.add(column, single_value(attr)?));
        }
        let columns = names.join(", ");
        let values = placeholders.join(", ");
        let table = self.q(&self.name);
        let anchor = match anchor {
            Some(anchor) => {
                let sql = format!("INSERT INTO {table} ({columns}) VALUES ({values})");
                params.query(sql).execute(&mut **tx).await.map_err(db_error)?;
                anchor
            }
            None if self.dialect == Dialect::MySql => {
                let sql = format!("INSERT INTO {table} ({columns}) VALUES ({values})");
                let done = params.query(sql).execute(&mut **tx).await.map_err(db_error)?;
                let id = done.last_insert_id().ok_or_else(|| {
                    ConnectorError::new(ErrorKind::Internal, "the database returned no auto_increment id")
                })?;
                Value::string(id.to_string())
            }
            None => {
                let sql = format!(
                    "INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING {}",
                    self.dialect.as_text(&self.q(&self.anchor.name))
                );
                let row = params.query(sql).fetch_one(&mut **tx).await.map_err(db_error)?;
                Value::string(row.try_get::<String, _>(0).map_err(db_error)?)
            }
        };
        for (column, attr) in multi {
            self.change_values(tx, column, &anchor, attr, true).await?;
        }
        Ok(Applied { anchor })
    }

    /// Applies an attribute change to a multi-valued attribute's child rows. `fresh`: the object
    /// was just added (nothing to clear).
    async fn change_values(
        &self,
        tx: &mut Transaction<'_, Any>,
        column: &Column,
        owner: &Value,
        change: &AttributeChange,
        fresh: bool,
    ) -> Result<(), ConnectorError> {
        use AttributeModificationType as A;
        let d = self.dialect;
        let table = self.q(&child_table(&self.name, &column.name));
        let owner = owner.as_text().unwrap_or_default();
        let kind = A::try_from(change.modification_type).unwrap_or(A::Unspecified);
        if !fresh && matches!(kind, A::Replace | A::Delete) {
            let sql = format!("DELETE FROM {table} WHERE owner = {}", d.placeholder(1));
            sqlx::query(AssertSqlSafe(sql)).bind(&owner).execute(&mut **tx).await.map_err(db_error)?;
        }
        if kind == A::Update {
            let sql = format!(
                "DELETE FROM {table} WHERE owner = {} AND value = {}",
                d.placeholder(1),
                d.placeholder(2)
            );
            for value in &change.value_deletes {
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(&owner)
                    .bind(value.as_text().unwrap_or_default())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        if kind != A::Delete {
            // Adding a value that is there already is not an error (set semantics).
            let sql = d.insert_ignore(&table);
            for value in &change.value_adds {
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(&owner)
                    .bind(value.as_text().unwrap_or_default())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        Ok(())
    }

    /// Values of a multi-valued attribute, for each owner of `owners`.
    async fn values(&self, column: &Column, owners: &[String]) -> Result<Vec<(String, Value)>, sqlx::Error> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let list = (1..=owners.len()).map(|i| self.dialect.placeholder(i)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT owner, value FROM {} WHERE owner IN ({list}) ORDER BY owner, value",
            self.q(&child_table(&self.name, &column.name))
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for owner in owners {
            query = query.bind(owner.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let owner: String = row.try_get(0)?;
                let v: String = row.try_get(1)?;
                let value = match column.kind {
                    AttributeType::Reference => Value { kind: Some(Kind::ReferenceValue(v)) },
                    _ => Value::string(v),
                };
                Ok((owner, value))
            })
            .collect()
    }

    async fn update(
        &self,
        tx: &mut Transaction<'_, Any>,
        change: &CsEntryChange,
        replace: bool,
    ) -> Result<Applied, ConnectorError> {
        let anchor = self.anchor_of(change)?;
        let mut sets: Vec<(&Column, Option<Value>)> = Vec::new();
        let mut multi = Vec::new();
        for attr in &change.attribute_changes {
            let column = self.column(&attr.name)?;
            if column.multi {
                multi.push((column, attr.clone()));
            } else {
                sets.push((column, single_value(attr)?));
            }
        }
        if replace {
            // An object Replace clears every attribute it does not name (but not the columns
            // the connector keeps itself).
            for column in &self.columns {
                let named = sets.iter().any(|(c, _)| c.name == column.name)
                    || multi.iter().any(|(c, _)| c.name == column.name);
                let kept = self.watermark.as_ref().is_some_and(|w| w.column.name == column.name)
                    || self.soft_delete.as_ref().is_some_and(|c| c.name == column.name);
                if named || kept {
                    continue;
                }
                if column.multi {
                    let clear = AttributeChange {
                        name: column.name.clone(),
                        modification_type: AttributeModificationType::Delete as i32,
                        ..Default::default()
                    };
                    multi.push((column, clear));
                } else {
                    sets.push((column, None));
                }
            }
        }
        if let Some(statement) = self.custom.get(Operation::Update) {
            // The statement sets whole rows: what the change does not name keeps its value.
            let mut values = self.current(tx, &anchor).await?;
            for (column, value) in sets {
                values.insert(column.name.clone(), value);
            }
            values.insert(self.anchor.name.clone(), Some(anchor.clone()));
            self.run(tx, statement, &values, Some(anchor.clone())).await?;
            for (column, attr) in &multi {
                self.change_values(tx, column, &anchor, attr, false).await?;
            }
            return Ok(Applied { anchor });
        }
        let mut params = Params::new(self.dialect);
        let mut assignments = Vec::new();
        for (column, value) in sets {
            assignments.push(format!("{} = {}", self.q(&column.name), params.add(column, value)));
        }
        if let Some(w) = self.watermark.as_ref().filter(|w| w.touch) {
            assignments.push(format!("{} = {}", self.q(&w.column.name), self.dialect.now()));
        }
        let table = self.q(&self.name);
        let sql = if assignments.is_empty() {
            let key = params.add(&self.anchor, Some(anchor.clone()));
            format!("SELECT 1 FROM {table} WHERE {} = {key}", self.q(&self.anchor.name))
        } else {
            let key = params.add(&self.anchor, Some(anchor.clone()));
            format!(
                "UPDATE {table} SET {} WHERE {} = {key}",
                assignments.join(", "),
                self.q(&self.anchor.name)
            )
        };
        let found = if sql.starts_with("SELECT") {
            params.query(sql).fetch_optional(&mut **tx).await.map_err(db_error)?.is_some()
        } else {
            params.query(sql).execute(&mut **tx).await.map_err(db_error)?.rows_affected() > 0
                || self.exists(tx, &anchor).await?
        };
        if !found {
            return Err(ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
        }
        for (column, attr) in &multi {
            self.change_values(tx, column, &anchor, attr, false).await?;
        }
        Ok(Applied { anchor })
    }

    /// Whether the row is there (MySQL counts only rows an UPDATE changed, not those it found).
    async fn exists(&self, tx: &mut Transaction<'_, Any>, anchor: &Value) -> Result<bool, ConnectorError> {
        if self.dialect != Dialect::MySql {
            return Ok(false);
        }
        let mut params = Params::new(self.dialect);
        let key = params.add(&self.anchor, Some(anchor.clone()));
        let sql = format!("SELECT 1 FROM {} WHERE {} = {key}", self.q(&self.name), self.q(&self.anchor.name));
        Ok(params.query(sql).fetch_optional(&mut **tx).await.map_err(db_error)?.is_some())
    }

    async fn delete(
        &self,
        tx: &mut Transaction<'_, Any>,
        change: &CsEntryChange,
    ) -> Result<Applied, ConnectorError> {
        let anchor = self.anchor_of(change)?;
        let owner = anchor.as_text().unwrap_or_default();
        for column in self.columns.iter().filter(|c| c.multi) {
            let sql = format!(
                "DELETE FROM {} WHERE owner = {}",
                self.q(&child_table(&self.name, &column.name)),
                self.dialect.placeholder(1)
            );
            sqlx::query(AssertSqlSafe(sql)).bind(&owner).execute(&mut **tx).await.map_err(db_error)?;
        }
        if let Some(statement) = self.custom.get(Operation::Delete) {
            let values = HashMap::from([(self.anchor.name.clone(), Some(anchor.clone()))]);
            self.run(tx, statement, &values, Some(anchor.clone())).await?;
            return Ok(Applied { anchor });
        }
        let mut params = Params::new(self.dialect);
        let key = params.add(&self.anchor, Some(anchor.clone()));
        let sql = format!("DELETE FROM {} WHERE {} = {key}", self.q(&self.name), self.q(&self.anchor.name));
        let done = params.query(sql).execute(&mut **tx).await.map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
        }
        Ok(Applied { anchor })
    }

    /// Runs an admin's statement with `values` (by column name) and the anchor; returns its
    /// first row, if it returned any.
    async fn run(
        &self,
        tx: &mut Transaction<'_, Any>,
        statement: &Statement,
        values: &HashMap<String, Option<Value>>,
        anchor: Option<Value>,
    ) -> Result<Option<AnyRow>, ConnectorError> {
        let bound = statement.values(|name| match name {
            "anchor" => anchor.clone(),
            _ => values.get(name).cloned().flatten(),
        });
        let mut query = sqlx::query(AssertSqlSafe(statement.sql.clone()));
        for value in bound {
            query = bind(query, value);
        }
        query.fetch_optional(&mut **tx).await.map_err(|e| {
            let mut e = db_error(e);
            e.detail = format!("{}: {}", statement.key, e.detail);
            e
        })
    }

    /// The single-valued columns of the row with `anchor`, by name (NoSuchObject without one).
    async fn current(
        &self,
        tx: &mut Transaction<'_, Any>,
        anchor: &Value,
    ) -> Result<HashMap<String, Option<Value>>, ConnectorError> {
        let mut params = Params::new(self.dialect);
        let key = params.add(&self.anchor, Some(anchor.clone()));
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = {key}",
            self.select_list(),
            self.q(&self.name),
            self.q(&self.anchor.name)
        );
        let row = params
            .query(sql)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ConnectorError::new(ErrorKind::NoSuchObject, "no row with that anchor"))?;
        let entry = self.entry(&row).map_err(|s| ConnectorError::new(ErrorKind::Internal, s.message()))?;
        let mut values: HashMap<String, Option<Value>> =
            self.columns.iter().filter(|c| !c.multi).map(|c| (c.name.clone(), None)).collect();
        for attribute in entry.attributes {
            values.insert(attribute.name, attribute.values.into_iter().next());
        }
        Ok(values)
    }

    /// The select list: the anchor as text, then every single-valued column (cast to text
    /// where the driver has no native mapping for its type).
    fn select_list(&self) -> String {
        let d = self.dialect;
        let mut items =
            vec![format!("{} AS {}", d.as_text(&self.q(&self.anchor.name)), self.q(&self.anchor.name))];
        for column in self.columns.iter().filter(|c| !c.multi) {
            items.push(d.select_expr(&self.q(&column.name), column.kind, &column.sql_type));
        }
        items.join(", ")
    }

    /// `column` is not set (for the soft-delete flag).
    fn not_deleted(&self) -> Option<String> {
        let column = self.q(&self.soft_delete.as_ref()?.name);
        Some(match self.dialect {
            Dialect::Postgres => format!("COALESCE({column}, FALSE) = FALSE"),
            _ => format!("COALESCE({column}, 0) = 0"),
        })
    }

    /// Rows whose `column` equals `value` (the anchor or any other column).
    pub async fn lookup(&self, column: &str, value: Value) -> Result<Vec<Entry>, Status> {
        let column = if column == self.anchor.name {
            &self.anchor
        } else {
            self.column(column).map_err(|e| error_status(e.kind, e.detail))?
        };
        if column.multi {
            return Err(error_status(ErrorKind::Unsupported, "lookup by a multi-valued attribute"));
        }
        let mut params = Params::new(self.dialect);
        let key = params.add(column, Some(value));
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {} = {key}",
            self.select_list(),
            self.q(&self.name),
            self.q(&column.name)
        );
        if let Some(live) = self.not_deleted() {
            sql.push_str(&format!(" AND {live}"));
        }
        let rows = params.query(sql).fetch_all(&self.pool).await.map_err(db_status)?;
        Ok(self.entries(&rows).await?.into_iter().map(|(_, e)| e).collect())
    }

    /// Whether delta imports are possible (a watermark column is configured).
    pub fn has_watermark(&self) -> bool {
        self.watermark.is_some() || self.changes.is_some()
    }

    /// The mark a run starts from (the watermark query's answer, as text); `None` without a
    /// watermark column.
    pub async fn mark(&self) -> Result<Option<String>, Status> {
        let query = match (&self.watermark, &self.changes) {
            (Some(w), _) => w.query.as_str(),
            (None, Some(_)) => self.watermark_query.as_str(),
            (None, None) => return Ok(None),
        };
        let sql = format!("SELECT {}", self.dialect.as_text(&format!("({query})")));
        let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(&self.pool).await.map_err(|e| {
            let e = db_error(e);
            error_status(ErrorKind::InvalidConfiguration, format!("watermark_query failed: {}", e.detail))
        })?;
        Ok(Some(row.try_get::<String, _>(0).map_err(db_status)?))
    }

    /// One page in anchor order after `after` (keyset paging): of a full import (live rows),
    /// or, with `since`, of a delta import (rows whose watermark column is at or after the mark,
    /// deleted ones included and flagged).
    pub async fn page(&self, after: Option<&str>, since: Option<&str>, size: u32) -> Result<Page, Status> {
        if let (None, Some(statement)) = (since, self.custom.get(Operation::Read)) {
            let bound = statement.values(|name| match name {
                "after" => after.map(|a| Value::string(a.to_string())),
                "page_size" => Some(Value::integer(i64::from(size))),
                _ => None,
            });
            let mut query = sqlx::query(AssertSqlSafe(statement.sql.clone()));
            for value in bound {
                query = bind(query, value);
            }
            let rows = query.fetch_all(&self.pool).await.map_err(|e| {
                let e = db_error(e);
                error_status(e.kind, format!("{}: {}", statement.key, e.detail))
            })?;
            let entries = self.entries(&rows).await?;
            let last = rows
                .last()
                .map(|row| any_text(row, self.anchor.name.as_str()))
                .transpose()
                .map_err(|e| error_status(e.kind, e.detail))?;
            return Ok(Page { entries, last });
        }
        if let (Some(since), Some(changes)) = (since, &self.changes) {
            return self.changed_page(changes, after, since, size).await;
        }
        let mut params = Params::new(self.dialect);
        let mut conditions = Vec::new();
        let deleted = self.soft_delete.as_ref().map(|c| self.q(&c.name));
        match (since, &self.watermark) {
            (Some(mark), Some(w)) => {
                let p = params.add(&w.column, Some(Value::string(mark.to_string())));
                conditions.push(format!("{} >= {p}", self.q(&w.column.name)));
            }
            _ => conditions.extend(self.not_deleted()),
        }
        if let Some(after) = after {
            let p = params.add(&self.anchor, Some(Value::string(after.to_string())));
            conditions.push(format!("{} > {p}", self.q(&self.anchor.name)));
        }
        let mut select = self.select_list();
        if let (Some(_), Some(deleted)) = (since, &deleted) {
            let flag = match self.dialect {
                Dialect::Postgres => deleted.clone(),
                Dialect::MySql => format!("CAST({deleted} AS SIGNED)"),
                Dialect::Sqlite | Dialect::Odbc => format!("CAST({deleted} AS INTEGER)"),
            };
            select.push_str(&format!(", {flag} AS ecma_deleted"));
        }
        let limit = params.int(i64::from(size));
        let sql = format!(
            "SELECT {select} FROM {}{} ORDER BY {} LIMIT {limit}",
            self.q(&self.name),
            if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            },
            self.q(&self.anchor.name),
        );
        let rows = params.query(sql).fetch_all(&self.pool).await.map_err(db_status)?;
        let mut entries = self.entries(&rows).await?;
        if since.is_some() && deleted.is_some() {
            for ((flag, entry), row) in entries.iter_mut().zip(&rows) {
                *flag = read_bool(row, "ecma_deleted").map_err(db_status)?.unwrap_or(false);
                if *flag {
                    entry.attributes.clear();
                }
            }
        }
        let last = rows.last().map(|row| row.try_get::<String, _>(0)).transpose().map_err(db_status)?;
        Ok(Page { entries, last })
    }

    /// A page of a delta read from the change table: the anchors changed since the mark, each
    /// reported as its current row, or as deleted where the row is gone (or soft-deleted).
    async fn changed_page(
        &self,
        changes: &Changes,
        after: Option<&str>,
        since: &str,
        size: u32,
    ) -> Result<Page, Status> {
        if changes.owned && after.is_none() {
            // What changed before this run's starting mark is never read again.
            let mut params = Params::new(self.dialect);
            let p = params.add(&changes.at, Some(Value::string(since.to_string())));
            let sql = format!("DELETE FROM {} WHERE changed_at < {p}", self.q(&changes.table));
            params.query(sql).execute(&self.pool).await.map_err(db_status)?;
        }
        let mut params = Params::new(self.dialect);
        let p = params.add(&changes.at, Some(Value::string(since.to_string())));
        let mut sql = format!(
            "SELECT DISTINCT {} AS anchor FROM {} WHERE changed_at >= {p}",
            self.dialect.as_text("anchor"),
            self.q(&changes.table)
        );
        if let Some(after) = after {
            sql.push_str(&format!(" AND {} > {}", self.dialect.as_text("anchor"), params.text(after)));
        }
        sql.push_str(&format!(" ORDER BY anchor LIMIT {}", params.int(i64::from(size))));
        let anchors: Vec<String> = params
            .query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_status)?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(db_status)?;
        let mut found = HashMap::new();
        if !anchors.is_empty() {
            let mut params = Params::new(self.dialect);
            let keys: Vec<String> =
                anchors.iter().map(|a| params.add(&self.anchor, Some(Value::string(a.clone())))).collect();
            let mut sql = format!(
                "SELECT {} FROM {} WHERE {} IN ({})",
                self.select_list(),
                self.q(&self.name),
                self.q(&self.anchor.name),
                keys.join(", ")
            );
            if let Some(live) = self.not_deleted() {
                sql.push_str(&format!(" AND {live}"));
            }
            let rows = params.query(sql).fetch_all(&self.pool).await.map_err(db_status)?;
            for (_, entry) in self.entries(&rows).await? {
                let key = entry.anchors[0].value.as_ref().and_then(Value::as_text).unwrap_or_default();
                found.insert(key, entry);
            }
        }
        let entries = anchors
            .iter()
            .map(|anchor| match found.remove(anchor) {
                Some(entry) => (false, entry),
                None => (
                    true,
                    Entry {
                        object_type: self.object_type.clone(),
                        anchors: vec![Anchor {
                            name: self.anchor.name.clone(),
                            value: Some(Value::string(anchor.clone())),
                        }],
                        dn: String::new(),
                        attributes: vec![],
                        partition_id: PARTITION.to_string(),
                    },
                ),
            })
            .collect();
        Ok(Page { entries, last: anchors.last().cloned() })
    }

    /// Entries of rows (with their multi-valued attributes, one query per attribute).
    async fn entries(&self, rows: &[AnyRow]) -> Result<Vec<(bool, Entry)>, Status> {
        let mut entries =
            rows.iter().map(|row| self.entry(row).map(|e| (false, e))).collect::<Result<Vec<_>, _>>()?;
        let owners: Vec<String> = entries
            .iter()
            .map(|(_, e)| e.anchors[0].value.as_ref().and_then(Value::as_text).unwrap_or_default())
            .collect();
        for column in self.columns.iter().filter(|c| c.multi) {
            let mut values = self.values(column, &owners).await.map_err(db_status)?.into_iter().peekable();
            // Both lists are in owner order only by chance; match by owner.
            let mut by_owner: std::collections::HashMap<String, Vec<Value>> =
                std::collections::HashMap::new();
            for (owner, value) in values.by_ref() {
                by_owner.entry(owner).or_default().push(value);
            }
            for ((_, entry), owner) in entries.iter_mut().zip(&owners) {
                if let Some(values) = by_owner.remove(owner) {
                    entry.attributes.push(AttributeValues { name: column.name.clone(), values });
                }
            }
        }
        Ok(entries)
    }

    /// The single-valued attributes of a row.
    fn entry(&self, row: &AnyRow) -> Result<Entry, Status> {
        let read = |column: &Column| -> Result<Option<Value>, Status> {
            let name = column.name.as_str();
            // The select list has cast every column to what its kind reads (select_expr).
            let value = match column.kind {
                AttributeType::Boolean => read_bool(row, name).map(|v| v.map(Value::boolean)),
                AttributeType::Integer => row.try_get::<Option<i64>, _>(name).map(|v| v.map(Value::integer)),
                AttributeType::Binary => row
                    .try_get::<Option<Vec<u8>>, _>(name)
                    .map(|v| v.map(|b| Value { kind: Some(Kind::BinaryValue(b)) })),
                AttributeType::Reference => row
                    .try_get::<Option<String>, _>(name)
                    .map(|v| v.map(|r| Value { kind: Some(Kind::ReferenceValue(r)) })),
                _ => row.try_get::<Option<String>, _>(name).map(|v| v.map(Value::string)),
            };
            value.map_err(db_status)
        };
        let anchor = any_text(row, self.anchor.name.as_str()).map_err(|e| error_status(e.kind, e.detail))?;
        let mut attributes = Vec::new();
        // An admin's read statement may return some of the columns only: the others are absent.
        use sqlx::Column as _;
        let returned: std::collections::HashSet<&str> = row.columns().iter().map(|c| c.name()).collect();
        for column in self.columns.iter().filter(|c| !c.multi && returned.contains(c.name.as_str())) {
            if let Some(value) = read(column)? {
                attributes.push(AttributeValues { name: column.name.clone(), values: vec![value] });
            }
        }
        Ok(Entry {
            object_type: self.object_type.clone(),
            anchors: vec![Anchor { name: self.anchor.name.clone(), value: Some(Value::string(anchor)) }],
            dn: String::new(),
            attributes,
            partition_id: PARTITION.to_string(),
        })
    }

    /// Runs a trivial statement, to prove the database answers.
    pub async fn ping(&self) -> Result<(), Status> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(db_status)
    }
}

/// A column as text: text, or an integer (an identity anchor a statement returned as is).
fn any_text<I: sqlx::ColumnIndex<AnyRow> + Copy + std::fmt::Debug>(
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

/// The statements that create a change table and the triggers that fill it: every insert,
/// update and delete on `table` (and on its child tables, by owner) adds the anchor with the
/// time. Re-running them is harmless.
fn triggers(dialect: Dialect, table: &str, anchor: &str, children: &[String], changes: &str) -> Vec<String> {
    let q = |n: &str| dialect.quote(n);
    let key = dialect.ddl_type(AttributeType::String, true);
    let mut out = Vec::new();
    let (at_type, at_default) = match dialect {
        Dialect::Postgres => ("TIMESTAMPTZ", "clock_timestamp()"),
        Dialect::MySql => ("TIMESTAMP(6)", "CURRENT_TIMESTAMP(6)"),
        Dialect::Sqlite | Dialect::Odbc => ("TEXT", "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"),
    };
    let index = format!("{changes}_at");
    if dialect == Dialect::MySql {
        // MySQL has no CREATE INDEX IF NOT EXISTS: the index is declared with the table.
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (anchor {key} NOT NULL, changed_at {at_type} NOT NULL DEFAULT {at_default}, \
             INDEX {} (changed_at, anchor))",
            q(changes),
            q(&index)
        ));
    } else {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (anchor {key} NOT NULL, changed_at {at_type} NOT NULL DEFAULT {at_default})",
            q(changes)
        ));
        out.push(format!("CREATE INDEX IF NOT EXISTS {} ON {} (changed_at, anchor)", q(&index), q(changes)));
    }
    let sources: Vec<(&str, &str)> =
        std::iter::once((table, anchor)).chain(children.iter().map(|c| (c.as_str(), "owner"))).collect();
    for (source, column) in sources {
        let name = format!("{source}_log_changes");
        match dialect {
            Dialect::Postgres => {
                let (new, old) =
                    (format!("CAST(NEW.{} AS TEXT)", q(column)), format!("CAST(OLD.{} AS TEXT)", q(column)));
                out.push(format!(
                    "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN \
                     IF TG_OP <> 'INSERT' THEN INSERT INTO {c} (anchor) VALUES ({old}); END IF; \
                     IF TG_OP <> 'DELETE' THEN INSERT INTO {c} (anchor) VALUES ({new}); END IF; \
                     RETURN NULL; END $body$",
                    f = q(&name),
                    c = q(changes)
                ));
                out.push(format!("DROP TRIGGER IF EXISTS {} ON {}", q(&name), q(source)));
                out.push(format!(
                    "CREATE TRIGGER {t} AFTER INSERT OR UPDATE OR DELETE ON {s} FOR EACH ROW EXECUTE FUNCTION {t}()",
                    t = q(&name),
                    s = q(source)
                ));
            }
            Dialect::MySql | Dialect::Sqlite | Dialect::Odbc => {
                for (event, values) in [
                    ("INSERT", format!("(NEW.{})", q(column))),
                    ("UPDATE", format!("(NEW.{c}), (OLD.{c})", c = q(column))),
                    ("DELETE", format!("(OLD.{})", q(column))),
                ] {
                    let trigger = format!("{name}_{}", &event[..3].to_ascii_lowercase());
                    let insert = format!("INSERT INTO {} (anchor) VALUES {values}", q(changes));
                    if dialect == Dialect::MySql {
                        out.push(format!("DROP TRIGGER IF EXISTS {}", q(&trigger)));
                        out.push(format!(
                            "CREATE TRIGGER {} AFTER {event} ON {} FOR EACH ROW {insert}",
                            q(&trigger),
                            q(source)
                        ));
                    } else {
                        out.push(format!(
                            "CREATE TRIGGER IF NOT EXISTS {} AFTER {event} ON {} BEGIN {insert}; END",
                            q(&trigger),
                            q(source)
                        ));
                    }
                }
            }
        }
    }
    out
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

/// A boolean as the driver gives it: a boolean (PostgreSQL) or an integer (MySQL, SQLite).
fn read_bool<I: sqlx::ColumnIndex<AnyRow> + Copy>(
    row: &AnyRow,
    index: I,
) -> Result<Option<bool>, sqlx::Error> {
    match row.try_get::<Option<bool>, _>(index) {
        Ok(v) => Ok(v),
        Err(_) => row.try_get::<Option<i64>, _>(index).map(|v| v.map(|i| i != 0)),
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

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

fn bind(query: Query<'_>, value: Option<Value>) -> Query<'_> {
    match value.and_then(|v| v.kind) {
        None => query.bind(None::<String>),
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => query.bind(s),
        Some(Kind::IntegerValue(i)) => query.bind(i),
        Some(Kind::BooleanValue(b)) => query.bind(b),
        Some(Kind::BinaryValue(b)) => query.bind(b),
    }
}

/// Runs a `CREATE TABLE IF NOT EXISTS`. Two processes creating one table at the same moment
/// (two supervisors started at once, each with its connector) make PostgreSQL refuse one of them
/// with a unique violation on its own catalog (or "already exists"): that one runs it again, and
/// then finds the table there.
async fn create_if_missing(pool: &AnyPool, ddl: String) -> Result<(), Status> {
    match sqlx::query(AssertSqlSafe(ddl.clone())).execute(pool).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("23505" | "42P07" | "42710")) => {
            sqlx::query(AssertSqlSafe(ddl)).execute(pool).await.map(|_| ()).map_err(db_status)
        }
        Err(e) => Err(db_status(e)),
    }
}

/// Parses `create_table`'s column list: `name [text|integer|boolean|blob] [unique]`, comma
/// separated. Returns (name, type, unique).
fn parse_column_definitions(text: &str) -> Result<Vec<(String, AttributeType, bool)>, Status> {
    let mut columns = Vec::new();
    for definition in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let mut words = definition.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        check_identifier("column", &name)?;
        let mut kind = AttributeType::String;
        let mut unique = false;
        for word in words {
            match word.to_ascii_lowercase().as_str() {
                "text" | "string" => kind = AttributeType::String,
                "integer" | "int" => kind = AttributeType::Integer,
                "boolean" | "bool" => kind = AttributeType::Boolean,
                "blob" | "binary" => kind = AttributeType::Binary,
                "unique" => unique = true,
                other => {
                    return Err(error_status(
                        ErrorKind::InvalidConfiguration,
                        format!(
                            "columns: {other:?} in {definition:?} is not one of text, integer, boolean, blob, unique"
                        ),
                    ));
                }
            }
        }
        columns.push((name, kind, unique));
    }
    Ok(columns)
}

/// Removes the connection string (and its password) from an error message, in case the driver
/// quoted it.
fn redact(message: &str, url: &str) -> String {
    let mut out =
        if url.is_empty() { message.to_string() } else { message.replace(url, "<connection_string>") };
    if let Some(password) = url_password(url)
        && !password.is_empty()
    {
        out = out.replace(&password, "<password>");
    }
    out
}

/// The password in a `scheme://user:password@host/...` URL.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
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

    #[test]
    fn column_definitions_parse() {
        let cols = parse_column_definitions("user_name unique, active boolean, age integer,").unwrap();
        assert_eq!(
            cols,
            vec![
                ("user_name".to_string(), AttributeType::String, true),
                ("active".to_string(), AttributeType::Boolean, false),
                ("age".to_string(), AttributeType::Integer, false),
            ]
        );
        assert!(parse_column_definitions("name varchar(10)").is_err());
        assert!(parse_column_definitions("bad-name").is_err());
    }

    #[test]
    fn refused_connections_name_what_to_fix_in_connection_string() {
        let url = "postgres://app:s3cr3t@db.example/app";
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let hint = connect_hint(Dialect::Postgres, url, &refused);
        assert!(hint.contains("at db.example:5432 is not reachable"), "{hint}");
        assert!(hint.contains("host and port in connection_string") && !hint.contains("s3cr3t"), "{hint}");
        let hint = connect_hint(Dialect::MySql, "mysql://u:pw@[::1]:3307/db", &sqlx::Error::PoolTimedOut);
        assert!(hint.contains("at [::1]:3307 did not accept a connection"), "{hint}");
        assert_eq!(server_of(Dialect::Sqlite, "sqlite:///tmp/x.db"), None);
        assert_eq!(server_of(Dialect::Postgres, "postgres:///app").as_deref(), Some("localhost:5432"));
        assert_eq!(server_of(Dialect::Postgres, "postgres://u:p@ss@db:5433/x").as_deref(), Some("db:5433"));
        assert!(refusal_hint(Dialect::Postgres, "28P01", None).contains("user name or password"));
        assert!(refusal_hint(Dialect::MySql, "28000", Some(1045)).contains("user name or password"));
        assert!(
            refusal_hint(Dialect::Postgres, "3D000", None).contains("database name in connection_string")
        );
        assert!(
            refusal_hint(Dialect::MySql, "42000", Some(1049)).contains("database name in connection_string")
        );
        assert!(refusal_hint(Dialect::Sqlite, "14", None).contains("file path in connection_string"));
        assert_eq!(refusal_hint(Dialect::Postgres, "23505", None), "");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("failed: sqlite://secret@x", "sqlite://secret@x"), "failed: <connection_string>");
        let url = "postgres://app:s3cr%21t@db.example/app";
        assert_eq!(redact("password s3cr%21t rejected", url), "password <password> rejected");
        assert_eq!(url_password("mysql://u@h/db"), None);
    }
}
