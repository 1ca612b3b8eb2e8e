//! Statements an admin writes (`add_statement = "INSERT INTO ... VALUES (:anchor, :user_name)"`)
//! and stored procedures an admin names (`add_procedure = "user_add"`): both become one SQL text
//! with the dialect's placeholders, and a list of the named parameters to bind, in order. A value
//! never enters the SQL text.

use std::collections::HashMap;

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{ErrorKind, Value};
use tonic::Status;

use crate::dialect::Dialect;

/// The operations an admin can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Update,
    Delete,
    Read,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Operation::Add, Operation::Update, Operation::Delete, Operation::Read];

    pub fn key(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Read => "read",
        }
    }

    /// The parameters besides the columns that this operation offers.
    fn extra(self) -> &'static [&'static str] {
        match self {
            Operation::Read => &["after", "page_size"],
            _ => &["anchor"],
        }
    }
}

/// A compiled statement: SQL with placeholders, and the parameter names in binding order.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The configuration key it came from, for messages.
    pub key: String,
    pub sql: String,
    pub names: Vec<String>,
}

impl Statement {
    /// The values to bind, in order, from `value` (a parameter the operation does not have is
    /// refused when the statement is compiled, so every name is answered).
    pub fn values(&self, value: impl Fn(&str) -> Option<Value>) -> Vec<Option<Value>> {
        self.names.iter().map(|n| value(n)).collect()
    }
}

/// Compiles `text`: each `:name` outside string literals, quoted identifiers and comments
/// becomes a placeholder (`::` is PostgreSQL's cast and stays). Names must be in `known`.
pub fn compile(dialect: Dialect, key: &str, text: &str, known: &[String]) -> Result<Statement, Status> {
    let chars: Vec<char> = text.chars().collect();
    let mut sql = String::with_capacity(text.len());
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // The end (exclusive) of a literal, quoted identifier or comment starting at i.
        let skip_to = match c {
            '\'' | '"' | '`' => {
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => break j,
                        Some('\\') if c == '\'' && dialect == Dialect::MySql => j += 2,
                        Some(&q) if q == c && chars.get(j + 1) == Some(&c) => j += 2,
                        Some(&q) if q == c => break j + 1,
                        Some(_) => j += 1,
                    }
                }
            }
            '-' if next == Some('-') => {
                chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p + 1)
            }
            '/' if next == Some('*') => {
                let mut j = i + 2;
                while j < chars.len() && !(chars[j - 1] == '*' && chars[j] == '/' && j > i + 2) {
                    j += 1;
                }
                (j + 1).min(chars.len())
            }
            _ => i,
        };
        if skip_to > i {
            sql.extend(&chars[i..skip_to]);
            i = skip_to;
            continue;
        }
        match (c, next) {
            (':', Some(':')) => {
                sql.push_str("::");
                i += 2;
            }
            (':', Some(n)) if n.is_ascii_alphabetic() || n == '_' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if !known.contains(&name) {
                    return Err(error_status(
                        ErrorKind::InvalidConfiguration,
                        format!(
                            "{key}: parameter :{name} is not one of :{} (columns of the table, and the operation's own)",
                            known.join(", :")
                        ),
                    ));
                }
                names.push(name);
                sql.push_str(&dialect.placeholder(names.len()));
                i = j;
            }
            _ => {
                sql.push(c);
                i += 1;
            }
        }
    }
    Ok(Statement { key: key.to_string(), sql, names })
}

/// The statements configured for `operation`: `<op>_statement`, or `<op>_procedure` (with
/// `<op>_procedure_parameters`, by default the anchor then `columns` for add and update, the
/// anchor for delete, `after, page_size` for read). `None`: the connector generates the SQL.
pub fn configured(
    config: &impl ConfigExt,
    dialect: Dialect,
    operation: Operation,
    anchor: &str,
    columns: &[String],
) -> Result<Option<Statement>, Status> {
    let op = operation.key();
    let mut known: Vec<String> = operation.extra().iter().map(|s| s.to_string()).collect();
    known.extend(columns.iter().cloned());
    known.push(anchor.to_string());
    let statement_key = format!("{op}_statement");
    let procedure_key = format!("{op}_procedure");
    match (config.get(&statement_key), config.get(&procedure_key)) {
        (Some(_), Some(_)) => Err(error_status(
            ErrorKind::InvalidConfiguration,
            format!("{statement_key} and {procedure_key} are both set: keep one"),
        )),
        (Some(text), None) => compile(dialect, &statement_key, text, &known).map(Some),
        (None, Some(procedure)) => {
            crate::model::check_identifier(&procedure_key, procedure)?;
            let parameters_key = format!("{op}_procedure_parameters");
            let parameters: Vec<String> = match config.get(&parameters_key) {
                Some(list) => {
                    list.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
                }
                None => match operation {
                    Operation::Read => vec!["after".into(), "page_size".into()],
                    Operation::Delete => vec!["anchor".into()],
                    _ => std::iter::once("anchor".to_string()).chain(columns.iter().cloned()).collect(),
                },
            };
            let arguments = parameters.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(", ");
            let name = dialect.quote(procedure);
            let text = match (dialect, operation) {
                (Dialect::Sqlite, _) => {
                    return Err(error_status(
                        ErrorKind::InvalidConfiguration,
                        format!("{procedure_key}: SQLite has no stored procedures; use {statement_key}"),
                    ));
                }
                // A PostgreSQL procedure returns no rows: reads call a set-returning function.
                (Dialect::Postgres, Operation::Read) => format!("SELECT * FROM {name}({arguments})"),
                _ => format!("CALL {name}({arguments})"),
            };
            compile(dialect, &parameters_key, &text, &known).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// The configured statements, by operation.
#[derive(Debug, Default)]
pub struct Custom {
    pub by_operation: HashMap<&'static str, Statement>,
}

impl Custom {
    pub fn load(
        config: &impl ConfigExt,
        dialect: Dialect,
        anchor: &str,
        columns: &[String],
    ) -> Result<Self, Status> {
        let mut by_operation = HashMap::new();
        for operation in Operation::ALL {
            if let Some(statement) = configured(config, dialect, operation, anchor, columns)? {
                by_operation.insert(operation.key(), statement);
            }
        }
        Ok(Self { by_operation })
    }

    pub fn get(&self, operation: Operation) -> Option<&Statement> {
        self.by_operation.get(operation.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["anchor", "user_name", "after", "page_size"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn named_parameters_become_placeholders() {
        let s = compile(
            Dialect::Postgres,
            "add_statement",
            "INSERT INTO users (id, login) VALUES (:anchor, :user_name::text) -- :nothing\n",
            &known(),
        )
        .unwrap();
        assert_eq!(s.sql, "INSERT INTO users (id, login) VALUES ($1, $2::text) -- :nothing\n");
        assert_eq!(s.names, ["anchor", "user_name"]);
        let s = compile(Dialect::MySql, "k", "SELECT ':anchor', `:x`, :after, :after", &known()).unwrap();
        assert_eq!(s.sql, "SELECT ':anchor', `:x`, ?, ?");
        assert_eq!(s.names, ["after", "after"]);
        let s = compile(Dialect::Sqlite, "k", "SELECT 'it''s :anchor' /* :x */, :anchor", &known()).unwrap();
        assert_eq!(s.sql, "SELECT 'it''s :anchor' /* :x */, ?1");
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e =
            compile(Dialect::Postgres, "update_statement", "UPDATE t SET a = :nope", &known()).unwrap_err();
        assert!(e.message().contains("update_statement: parameter :nope"), "{}", e.message());
    }
}
