//! The provisioning log's rows: one per write sent to a connector (and per change an import
//! made to the connector space), kept in the connector space beside the objects, and the
//! filters `GET /admin/log`, `supervisor log` and the console read them with.
//!
//! A row names attributes, never their values: what changed is diagnosable without copying
//! personal data (or a password) into a second table.

use serde::{Deserialize, Serialize};

/// One provisioning log row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Assigned by the store, increasing (the paging and `--follow` cursor).
    #[serde(default)]
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The supervisor that did it.
    pub node: String,
    /// `scim` (a SCIM request), `console` (a dry run applied from the admin API or console),
    /// `import`, or `reconcile` (settling a pending write).
    pub source: String,
    pub app: String,
    /// `User` or `Group`.
    pub resource_type: String,
    pub connector: String,
    /// `add`, `update`, `delete`, `set_password`, `lookup`; for imports `import_add`,
    /// `import_update`, `import_delete`.
    pub operation: String,
    pub scim_id: String,
    /// userName (a group's displayName).
    pub name: String,
    /// The target object's anchor, where it has one.
    pub anchor: String,
    pub dn: String,
    /// The attributes the change carried (names only).
    pub attributes: Vec<String>,
    /// `applied`, `refused`, `unavailable` (not sent), `unknown` (sent, no answer), `found` or
    /// `absent` (an unknown outcome settled by a lookup).
    pub outcome: String,
    /// The connector's error kind when refused (`ALREADY_EXISTS`, ...).
    pub error_kind: String,
    pub detail: String,
    pub duration_ms: f64,
    /// The W3C trace id of the request, where tracing is on.
    pub trace_id: String,
}

impl LogEntry {
    /// A row about `record`: its app, type, connector, id, name, anchor and DN.
    pub fn of(record: &super::Record, source: &str, operation: &str, outcome: &str) -> Self {
        Self {
            source: source.into(),
            app: record.app.clone(),
            resource_type: record.resource_type.clone(),
            connector: record.connector.clone(),
            operation: operation.into(),
            scim_id: record.id.clone(),
            name: record.user_name.clone(),
            anchor: super::anchor_text(&record.target.anchors).unwrap_or_default(),
            dn: record.target.dn.clone(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }
}

/// Which rows to read. Rows come newest first, `before` a `seq` for the next page; with `after`
/// they come oldest first from just after that `seq` (how `--follow` reads).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogFilter {
    pub app: Option<String>,
    pub connector: Option<String>,
    pub resource_type: Option<String>,
    pub operation: Option<String>,
    pub outcome: Option<String>,
    pub source: Option<String>,
    /// A SCIM id, or part of a userName / displayName (case-insensitive), or a DN part.
    pub q: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

/// Most rows one read returns.
pub const MAX_LIMIT: usize = 1000;
/// Rows a read returns when the filter does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// The SQL spelling of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter of a log query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Integer(i64),
}

pub const COLUMNS: &str = "seq, at_ms, node, source, app, resource_type, connector, operation, scim_id, \
     name, anchor, dn, attributes, outcome, error_kind, detail, duration_ms, trace_id";

impl LogFilter {
    /// The rows asked for, within bounds.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// `WHERE ... ORDER BY ... LIMIT n` and its parameters, in the engine's dialect.
    pub fn sql(&self, dialect: Dialect) -> (String, Vec<Param>) {
        let placeholder = |i: usize| match dialect {
            Dialect::Sqlite => format!("?{i}"),
            Dialect::Postgres => format!("${i}"),
        };
        // The position of a part in a text: SQLite's instr, PostgreSQL's strpos.
        let position = match dialect {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        let bind = |params: &mut Vec<Param>, value: Param| {
            params.push(value);
            placeholder(params.len())
        };
        for (column, value) in [
            ("app", &self.app),
            ("connector", &self.connector),
            ("resource_type", &self.resource_type),
            ("operation", &self.operation),
            ("outcome", &self.outcome),
            ("source", &self.source),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                let p = bind(&mut params, Param::Text(value.clone()));
                clauses.push(format!("{column} = {p}"));
            }
        }
        if let Some(q) = self.q.as_ref().map(|q| q.trim()).filter(|q| !q.is_empty()) {
            let exact = bind(&mut params, Param::Text(q.to_string()));
            let part = bind(&mut params, Param::Text(q.to_lowercase()));
            clauses.push(format!(
                "(scim_id = {exact} OR anchor = {exact} OR trace_id = {exact} \
                 OR {position}(lower(name), {part}) > 0 OR {position}(lower(dn), {part}) > 0)"
            ));
        }
        for (column, op, value) in [
            ("at_ms", ">=", self.since_ms),
            ("at_ms", "<", self.until_ms),
            ("seq", "<", self.before),
            ("seq", ">", self.after),
        ] {
            if let Some(value) = value {
                let p = bind(&mut params, Param::Integer(value));
                clauses.push(format!("{column} {op} {p}"));
            }
        }
        let mut sql = String::new();
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(if self.after.is_some() { " ORDER BY seq ASC" } else { " ORDER BY seq DESC" });
        sql.push_str(&format!(" LIMIT {}", self.limit()));
        (sql, params)
    }
}

/// The attribute names of a row, as stored (a JSON array).
pub fn attributes_text(attributes: &[String]) -> String {
    serde_json::to_string(attributes).unwrap_or_else(|_| "[]".into())
}

/// The attribute names of a stored row.
pub fn attributes_of(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_bound_parameters_never_text() {
        let filter = LogFilter {
            app: Some("hr".into()),
            q: Some("Ann'; DROP TABLE x; --".into()),
            before: Some(42),
            limit: Some(5000),
            ..Default::default()
        };
        let (sql, params) = filter.sql(Dialect::Sqlite);
        assert!(sql.contains("instr(lower(name), ?3)"), "{sql}");
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.starts_with(" WHERE app = ?1 AND (scim_id = ?2"), "{sql}");
        assert!(sql.ends_with("seq < ?4 ORDER BY seq DESC LIMIT 1000"), "{sql}");
        assert_eq!(params[0], Param::Text("hr".into()));
        assert_eq!(params[2], Param::Text("ann'; drop table x; --".into()));
        assert_eq!(params[3], Param::Integer(42));
        let follow = LogFilter { after: Some(7), ..Default::default() };
        let (sql, params) = follow.sql(Dialect::Postgres);
        assert_eq!(sql, " WHERE seq > $1 ORDER BY seq ASC LIMIT 100");
        assert_eq!(params, vec![Param::Integer(7)]);
    }

    #[test]
    fn attribute_names_round_trip() {
        let names = vec!["mail".to_string(), "sn".into()];
        assert_eq!(attributes_of(&attributes_text(&names)), names);
        assert!(attributes_of("not json").is_empty());
    }
}
