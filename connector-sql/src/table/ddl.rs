//! The DDL the connector runs when configured to: the table and its child tables
//! (`create_table`, `columns`), and the change table's triggers (`install_change_triggers`).

use ecma_connector_sdk::error_status;
use ecma_proto::v1::{AttributeType, ErrorKind};
use sqlx::{AnyPool, AssertSqlSafe};
use tonic::Status;

use super::errors::*;
use crate::dialect::Dialect;
use crate::model::*;

/// Runs a `CREATE TABLE IF NOT EXISTS`. Two processes creating one table at the same moment
/// (two supervisors started at once, each with its connector) make PostgreSQL refuse one of them
/// with a unique violation on its own catalog (or "already exists"): that one runs it again, and
/// then finds the table there.
pub(crate) async fn create_if_missing(pool: &AnyPool, ddl: String) -> Result<(), Status> {
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
pub(crate) fn parse_column_definitions(text: &str) -> Result<Vec<(String, AttributeType, bool)>, Status> {
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

/// The statements that create a change table and the triggers that fill it: every insert,
/// update and delete on `table` (and on its child tables, by owner) adds the anchor with the
/// time. Re-running them is harmless.
pub(crate) fn triggers(
    dialect: Dialect,
    table: &str,
    anchor: &str,
    children: &[String],
    changes: &str,
) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
