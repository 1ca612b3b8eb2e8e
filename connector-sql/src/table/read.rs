//! The read path: lookups, full imports paged by anchor, delta imports by a watermark column or
//! a change table, and rows as entries.

use std::collections::HashMap;

use ecma_connector_sdk::error_status;
use ecma_proto::v1::{Anchor, AttributeType, AttributeValues, Entry, ErrorKind, Value, value::Kind};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use tonic::Status;

use super::errors::*;
use super::*;
use crate::dialect::Dialect;
use crate::model::*;
use crate::statements::Operation;

impl Table {
    /// The select list: the anchor as text, then every single-valued column (cast to text
    /// where the driver has no native mapping for its type).
    pub(super) fn select_list(&self) -> String {
        let d = self.dialect;
        let mut items =
            vec![format!("{} AS {}", d.as_text(&self.q(&self.anchor.name)), self.q(&self.anchor.name))];
        for column in self.columns.iter().filter(|c| !c.multi) {
            items.push(d.select_expr(&self.q(&column.name), column.kind, &column.sql_type));
        }
        items.join(", ")
    }

    /// `column` is not set (for the soft-delete flag).
    pub(super) fn not_deleted(&self) -> Option<String> {
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
    pub(super) async fn changed_page(
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
    pub(super) async fn entries(&self, rows: &[AnyRow]) -> Result<Vec<(bool, Entry)>, Status> {
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
    pub(super) fn entry(&self, row: &AnyRow) -> Result<Entry, Status> {
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
}
