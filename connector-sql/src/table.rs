//! One configured table: its columns as read from the database's catalog, and the parameterised
//! statements that read and write it.

use std::str::FromStr;
use std::time::Duration;

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{
    self, Anchor, AttributeChange, AttributeModificationType, AttributeType, AttributeValues,
    ConfigParameters, CsEntryChange, Entry, ErrorKind, Value, value::Kind,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};
use tonic::Status;

/// Partition id: a table has exactly one.
pub const PARTITION: &str = "default";

/// A column of the target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: AttributeType,
    pub not_null: bool,
    /// Held in the child table `<table>_<name>` (owner, value), one row per value.
    pub multi: bool,
}

/// The configured table, with its columns read from the database.
#[derive(Debug)]
pub struct Table {
    pool: SqlitePool,
    pub name: String,
    pub object_type: String,
    pub anchor: Column,
    /// All columns but the anchor.
    pub columns: Vec<Column>,
}

/// The outcome of one entry of an export batch.
pub struct Applied {
    pub anchor: Value,
}

/// An entry-level failure, reported in that entry's result.
pub struct EntryError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl EntryError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
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

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn column_kind(declared: &str) -> AttributeType {
    let d = declared.to_ascii_uppercase();
    if d.contains("BOOL") {
        AttributeType::Boolean
    } else if d.contains("INT") {
        AttributeType::Integer
    } else if d.contains("BLOB") {
        AttributeType::Binary
    } else {
        AttributeType::String
    }
}

/// Maps a database error to the protocol's error kinds, naming the constraint's column.
fn db_error(error: sqlx::Error) -> EntryError {
    match &error {
        sqlx::Error::Database(db) => {
            let kind = match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => ErrorKind::AlreadyExists,
                sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::CheckViolation => ErrorKind::ConstraintViolation,
                _ => ErrorKind::Internal,
            };
            EntryError::new(kind, db.message().to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
            EntryError::new(ErrorKind::ConnectionFailed, error.to_string())
        }
        _ => EntryError::new(ErrorKind::Internal, error.to_string()),
    }
}

/// A whole-call failure from a database error.
pub fn db_status(error: sqlx::Error) -> Status {
    let e = db_error(error);
    error_status(e.kind, e.detail)
}

impl Table {
    /// Connects, creates the table when configured to, and reads its columns.
    pub async fn open(config: &Option<ConfigParameters>) -> Result<Self, Status> {
        let url = config.require("connection_string")?;
        let name = config.require("table")?.to_string();
        check_identifier("table", &name)?;
        let anchor_name = config.get("anchor_column").unwrap_or("id").to_string();
        check_identifier("anchor_column", &anchor_name)?;
        let object_type = config.get("object_type").unwrap_or("user").to_string();
        let create = config.boolean("create_table", false)?;
        let list = |key: &str| -> Result<Vec<String>, Status> {
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
        };
        let multi_valued = list("multi_valued")?;
        let references = list("references")?;

        // The connection string may hold a password (other drivers); it is never echoed.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                error_status(
                    ErrorKind::InvalidConfiguration,
                    format!("connection_string is not a SQLite URL ({})", redact(&e.to_string(), url)),
                )
            })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        // Switching a database to WAL takes an exclusive lock, and SQLite answers "database is
        // locked" at once (busy_timeout does not cover it) when another process, such as a second
        // connector on the same file starting at the same moment, holds it: try again briefly.
        let mut attempts = 0;
        let pool = loop {
            let connected = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await;
            match connected {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20 + 10 * attempts)).await;
                }
                Err(e) => {
                    return Err(error_status(
                        ErrorKind::ConnectionFailed,
                        format!("cannot open the database: {}", redact(&e.to_string(), url)),
                    ));
                }
            }
        };

        if create {
            let columns = parse_column_definitions(config.get("columns").unwrap_or(""))?;
            let mut ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} ({} TEXT PRIMARY KEY NOT NULL",
                quote(&name),
                quote(&anchor_name)
            );
            for (column, kind, unique) in &columns {
                ddl.push_str(&format!(
                    ", {} {}{}",
                    quote(column),
                    kind,
                    if *unique { " UNIQUE" } else { "" }
                ));
            }
            ddl.push(')');
            sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await.map_err(db_status)?;
            for attribute in &multi_valued {
                let child = format!(
                    "CREATE TABLE IF NOT EXISTS {} (owner TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (owner, value))",
                    quote(&child_table(&name, attribute))
                );
                sqlx::query(AssertSqlSafe(child)).execute(&pool).await.map_err(db_status)?;
            }
        }

        let rows = sqlx::query("SELECT name, type, \"notnull\" FROM pragma_table_info(?1)")
            .bind(&name)
            .fetch_all(&pool)
            .await
            .map_err(db_status)?;
        if rows.is_empty() {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!("table {name:?} does not exist (set create_table = true to create it)"),
            ));
        }
        let mut anchor = None;
        let mut columns = Vec::new();
        for row in rows {
            let name = row.get::<String, _>(0);
            let kind = if references.contains(&name) {
                AttributeType::Reference
            } else {
                column_kind(&row.get::<String, _>(1))
            };
            let column = Column { name, kind, not_null: row.get::<i64, _>(2) != 0, multi: false };
            if column.name == anchor_name {
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
        for attribute in multi_valued {
            let child = child_table(&name, &attribute);
            let found: Option<(i64,)> =
                sqlx::query_as("SELECT 1 FROM pragma_table_info(?1) WHERE name = 'value'")
                    .bind(&child)
                    .fetch_optional(&pool)
                    .await
                    .map_err(db_status)?;
            if found.is_none() {
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
            columns.push(Column { name: attribute, kind, not_null: false, multi: true });
        }
        Ok(Self { pool, name, object_type, anchor, columns })
    }

    /// The schema type this table offers.
    pub fn schema_type(&self) -> v1::SchemaType {
        let mut attributes = vec![v1::SchemaAttribute {
            name: self.anchor.name.clone(),
            r#type: self.anchor.kind as i32,
            multi_valued: false,
            operation: v1::AttributeOperation::ImportOnly as i32,
            required: false,
        }];
        attributes.extend(self.columns.iter().map(|c| v1::SchemaAttribute {
            name: c.name.clone(),
            r#type: c.kind as i32,
            multi_valued: c.multi,
            operation: v1::AttributeOperation::ImportExport as i32,
            required: c.not_null,
        }));
        v1::SchemaType {
            name: self.object_type.clone(),
            attributes,
            anchor_attributes: vec![self.anchor.name.clone()],
            locked: false,
        }
    }

    fn column(&self, name: &str) -> Result<&Column, EntryError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            EntryError::new(
                ErrorKind::SchemaViolation,
                format!("{name:?} is not a column of table {:?}", self.name),
            )
        })
    }

    fn anchor_of(&self, change: &CsEntryChange) -> Result<Value, EntryError> {
        change.anchors.iter().find(|a| a.name == self.anchor.name).and_then(|a| a.value.clone()).ok_or_else(
            || {
                EntryError::new(
                    ErrorKind::InvalidAttributeValue,
                    format!("anchor {:?} missing", self.anchor.name),
                )
            },
        )
    }

    /// Starts a transaction for an export batch.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, Status> {
        self.pool.begin().await.map_err(db_status)
    }

    /// Applies one entry change inside `tx` (under a savepoint, so that a failed entry leaves no
    /// trace while the rest of the batch goes on).
    pub async fn apply(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        change: &CsEntryChange,
    ) -> Result<Applied, EntryError> {
        use v1::ObjectModificationType as M;
        if !change.object_type.is_empty() && change.object_type != self.object_type {
            return Err(EntryError::new(
                ErrorKind::SchemaViolation,
                format!("object type {:?} is not {:?}", change.object_type, self.object_type),
            ));
        }
        let mut savepoint = sqlx::Connection::begin(&mut **tx).await.map_err(db_error)?;
        let result = match M::try_from(change.modification_type).unwrap_or(M::Unspecified) {
            M::Add => self.insert(&mut savepoint, change).await,
            M::Update => self.update(&mut savepoint, change, false).await,
            M::Replace => self.update(&mut savepoint, change, true).await,
            M::Delete => self.delete(&mut savepoint, change).await,
            other => Err(EntryError::new(ErrorKind::Unsupported, format!("modification {other:?}"))),
        };
        match result {
            Ok(applied) => {
                savepoint.commit().await.map_err(db_error)?;
                Ok(applied)
            }
            Err(e) => {
                savepoint.rollback().await.map_err(db_error)?;
                Err(e)
            }
        }
    }

    async fn insert(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        change: &CsEntryChange,
    ) -> Result<Applied, EntryError> {
        let anchor = match self.anchor_of(change) {
            Ok(v) => v,
            Err(_) => Value::string(uuid::Uuid::new_v4().to_string()),
        };
        let mut names = vec![quote(&self.anchor.name)];
        let mut values = vec![Some(anchor.clone())];
        let mut multi = Vec::new();
        for attr in &change.attribute_changes {
            let column = self.column(&attr.name)?;
            if column.multi {
                multi.push((column, attr));
                continue;
            }
            names.push(quote(&column.name));
            values.push(single_value(attr)?);
        }
        let placeholders = (1..=names.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("INSERT INTO {} ({}) VALUES ({placeholders})", quote(&self.name), names.join(", "));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in values {
            query = bind(query, value);
        }
        query.execute(&mut **tx).await.map_err(db_error)?;
        for (column, attr) in multi {
            self.change_values(tx, column, &anchor, attr, true).await?;
        }
        Ok(Applied { anchor })
    }

    /// Applies an attribute change to a multi-valued attribute's child rows. `fresh`: the object
    /// was just added (nothing to clear).
    async fn change_values(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        column: &Column,
        owner: &Value,
        change: &AttributeChange,
        fresh: bool,
    ) -> Result<(), EntryError> {
        use AttributeModificationType as A;
        let table = quote(&child_table(&self.name, &column.name));
        let owner = owner.as_text().unwrap_or_default();
        let kind = A::try_from(change.modification_type).unwrap_or(A::Unspecified);
        if !fresh && matches!(kind, A::Replace | A::Delete) {
            let sql = format!("DELETE FROM {table} WHERE owner = ?1");
            sqlx::query(AssertSqlSafe(sql)).bind(&owner).execute(&mut **tx).await.map_err(db_error)?;
        }
        if kind == A::Update {
            for value in &change.value_deletes {
                let sql = format!("DELETE FROM {table} WHERE owner = ?1 AND value = ?2");
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&owner)
                    .bind(value.as_text().unwrap_or_default())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        if kind != A::Delete {
            for value in &change.value_adds {
                // Adding a value that is there already is not an error (set semantics).
                let sql = format!("INSERT OR IGNORE INTO {table} (owner, value) VALUES (?1, ?2)");
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&owner)
                    .bind(value.as_text().unwrap_or_default())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        Ok(())
    }

    /// Values of a multi-valued attribute.
    async fn values<'e, E: sqlx::Executor<'e, Database = Sqlite>>(
        &self,
        executor: E,
        column: &Column,
        owner: &str,
    ) -> Result<Vec<Value>, sqlx::Error> {
        let sql = format!(
            "SELECT value FROM {} WHERE owner = ?1 ORDER BY value",
            quote(&child_table(&self.name, &column.name))
        );
        let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(sql)).bind(owner).fetch_all(executor).await?;
        Ok(rows
            .into_iter()
            .map(|(v,)| match column.kind {
                AttributeType::Reference => Value { kind: Some(Kind::ReferenceValue(v)) },
                _ => Value::string(v),
            })
            .collect())
    }

    async fn update(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        change: &CsEntryChange,
        replace: bool,
    ) -> Result<Applied, EntryError> {
        let anchor = self.anchor_of(change)?;
        let mut sets: Vec<(String, Option<Value>)> = Vec::new();
        let mut multi = Vec::new();
        for attr in &change.attribute_changes {
            let column = self.column(&attr.name)?;
            if column.multi {
                multi.push((column, attr.clone()));
            } else {
                sets.push((column.name.clone(), single_value(attr)?));
            }
        }
        if replace {
            // An object Replace clears every attribute it does not name.
            for column in &self.columns {
                let named = sets.iter().any(|(name, _)| *name == column.name)
                    || multi.iter().any(|(c, _)| c.name == column.name);
                if named {
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
                    sets.push((column.name.clone(), None));
                }
            }
        }
        if sets.is_empty() {
            self.exists(tx, &anchor).await?;
            for (column, attr) in &multi {
                self.change_values(tx, column, &anchor, attr, false).await?;
            }
            return Ok(Applied { anchor });
        }
        let assignments = sets
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{} = ?{}", quote(name), i + 1))
            .collect::<Vec<_>>();
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = ?{}",
            quote(&self.name),
            assignments.join(", "),
            quote(&self.anchor.name),
            sets.len() + 1
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (_, value) in sets {
            query = bind(query, value);
        }
        query = bind(query, Some(anchor.clone()));
        let done = query.execute(&mut **tx).await.map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(EntryError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
        }
        for (column, attr) in &multi {
            self.change_values(tx, column, &anchor, attr, false).await?;
        }
        Ok(Applied { anchor })
    }

    async fn exists(&self, tx: &mut Transaction<'_, Sqlite>, anchor: &Value) -> Result<(), EntryError> {
        let sql = format!("SELECT 1 FROM {} WHERE {} = ?1", quote(&self.name), quote(&self.anchor.name));
        let found = bind(sqlx::query(AssertSqlSafe(sql)), Some(anchor.clone()))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        found.map(|_| ()).ok_or_else(|| EntryError::new(ErrorKind::NoSuchObject, "no row with that anchor"))
    }

    async fn delete(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        change: &CsEntryChange,
    ) -> Result<Applied, EntryError> {
        let anchor = self.anchor_of(change)?;
        let owner = anchor.as_text().unwrap_or_default();
        for column in self.columns.iter().filter(|c| c.multi) {
            let sql =
                format!("DELETE FROM {} WHERE owner = ?1", quote(&child_table(&self.name, &column.name)));
            sqlx::query(AssertSqlSafe(sql)).bind(&owner).execute(&mut **tx).await.map_err(db_error)?;
        }
        let sql = format!("DELETE FROM {} WHERE {} = ?1", quote(&self.name), quote(&self.anchor.name));
        let done = bind(sqlx::query(AssertSqlSafe(sql)), Some(anchor.clone()))
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(EntryError::new(ErrorKind::NoSuchObject, "no row with that anchor"));
        }
        Ok(Applied { anchor })
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
        let sql = format!("SELECT * FROM {} WHERE {} = ?1", quote(&self.name), quote(&column.name));
        let rows = bind(sqlx::query(AssertSqlSafe(sql)), Some(value))
            .fetch_all(&self.pool)
            .await
            .map_err(db_status)?;
        self.entries(&rows).await
    }

    /// One page of a full import, in anchor order, after `after` (keyset paging).
    pub async fn page(&self, after: Option<&str>, size: u32) -> Result<Vec<Entry>, Status> {
        let sql = format!(
            "SELECT * FROM {t} WHERE ?1 IS NULL OR CAST({a} AS TEXT) > ?1 ORDER BY CAST({a} AS TEXT) LIMIT ?2",
            t = quote(&self.name),
            a = quote(&self.anchor.name)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(size))
            .fetch_all(&self.pool)
            .await
            .map_err(db_status)?;
        self.entries(&rows).await
    }

    async fn entries(&self, rows: &[SqliteRow]) -> Result<Vec<Entry>, Status> {
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let mut entry = self.entry(row)?;
            let owner = entry.anchors[0].value.as_ref().and_then(Value::as_text).unwrap_or_default();
            for column in self.columns.iter().filter(|c| c.multi) {
                let values = self.values(&self.pool, column, &owner).await.map_err(db_status)?;
                if !values.is_empty() {
                    entry.attributes.push(AttributeValues { name: column.name.clone(), values });
                }
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The single-valued attributes of a row.
    fn entry(&self, row: &SqliteRow) -> Result<Entry, Status> {
        let read = |column: &Column| -> Result<Option<Value>, Status> {
            let name = column.name.as_str();
            let value = match column.kind {
                AttributeType::Boolean => row.try_get::<Option<bool>, _>(name).map(|v| v.map(Value::boolean)),
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
        let anchor =
            read(&self.anchor)?.ok_or_else(|| error_status(ErrorKind::Internal, "row without anchor"))?;
        let mut attributes = Vec::new();
        for column in self.columns.iter().filter(|c| !c.multi) {
            if let Some(value) = read(column)? {
                attributes.push(AttributeValues { name: column.name.clone(), values: vec![value] });
            }
        }
        Ok(Entry {
            object_type: self.object_type.clone(),
            anchors: vec![Anchor { name: self.anchor.name.clone(), value: Some(anchor) }],
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

/// The one value a single-valued column gets from an attribute change (`None` clears it).
fn single_value(change: &AttributeChange) -> Result<Option<Value>, EntryError> {
    use AttributeModificationType as A;
    let too_many = || {
        EntryError::new(
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
            Err(EntryError::new(ErrorKind::InvalidAttributeValue, "attribute change without a type"))
        }
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind(query: Query<'_>, value: Option<Value>) -> Query<'_> {
    match value.and_then(|v| v.kind) {
        None => query.bind(None::<String>),
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => query.bind(s),
        Some(Kind::IntegerValue(i)) => query.bind(i),
        Some(Kind::BooleanValue(b)) => query.bind(b),
        Some(Kind::BinaryValue(b)) => query.bind(b),
    }
}

/// Parses `create_table`'s column list: `name [text|integer|boolean|blob] [unique]`, comma
/// separated. Returns (name, SQL type, unique).
fn parse_column_definitions(text: &str) -> Result<Vec<(String, &'static str, bool)>, Status> {
    let mut columns = Vec::new();
    for definition in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let mut words = definition.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        check_identifier("column", &name)?;
        let mut kind = "TEXT";
        let mut unique = false;
        for word in words {
            match word.to_ascii_lowercase().as_str() {
                "text" | "string" => kind = "TEXT",
                "integer" | "int" => kind = "INTEGER",
                "boolean" | "bool" => kind = "BOOLEAN",
                "blob" | "binary" => kind = "BLOB",
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

/// Removes the connection string from an error message, in case the driver quoted it.
fn redact(message: &str, secret: &str) -> String {
    if secret.is_empty() { message.to_string() } else { message.replace(secret, "<connection_string>") }
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
                ("user_name".to_string(), "TEXT", true),
                ("active".to_string(), "BOOLEAN", false),
                ("age".to_string(), "INTEGER", false),
            ]
        );
        assert!(parse_column_definitions("name varchar(10)").is_err());
        assert!(parse_column_definitions("bad-name").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("failed: sqlite://secret@x", "sqlite://secret@x"), "failed: <connection_string>");
    }
}
