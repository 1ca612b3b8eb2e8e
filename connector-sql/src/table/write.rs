//! The write path: an export batch in one transaction (again with a savepoint per entry when an
//! entry fails), adds, updates of single- and multi-valued attributes, deletes, and the admin's
//! own statements and procedures in their place.

use std::collections::HashMap;

use ecma_connector_sdk::ConnectorError;
use ecma_proto::v1::{
    self, AttributeChange, AttributeModificationType, AttributeType, CsEntryChange, ErrorKind, Value,
    value::Kind,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use tonic::Status;

use super::errors::*;
use super::*;
use crate::dialect::Dialect;
use crate::model::*;
use crate::statements::{Operation, Statement};

impl Table {
    pub(super) fn anchor_of(&self, change: &CsEntryChange) -> Result<Value, ConnectorError> {
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
    pub(super) async fn export_whole(
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

    pub(super) async fn apply(
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

    pub(super) async fn apply_one(
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

    pub(super) async fn insert(
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
    pub(super) async fn change_values(
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
    pub(super) async fn values(
        &self,
        column: &Column,
        owners: &[String],
    ) -> Result<Vec<(String, Value)>, sqlx::Error> {
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

    pub(super) async fn update(
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
    pub(super) async fn exists(
        &self,
        tx: &mut Transaction<'_, Any>,
        anchor: &Value,
    ) -> Result<bool, ConnectorError> {
        if self.dialect != Dialect::MySql {
            return Ok(false);
        }
        let mut params = Params::new(self.dialect);
        let key = params.add(&self.anchor, Some(anchor.clone()));
        let sql = format!("SELECT 1 FROM {} WHERE {} = {key}", self.q(&self.name), self.q(&self.anchor.name));
        Ok(params.query(sql).fetch_optional(&mut **tx).await.map_err(db_error)?.is_some())
    }

    pub(super) async fn delete(
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
    pub(super) async fn run(
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
    pub(super) async fn current(
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
}
