//! A table opened from its settings: the parameters read and checked, the connection made, the
//! table created when configured to, and its columns read from the database's catalog.

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{AttributeType, ErrorKind};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tonic::Status;

use super::connection::{connect, synchronous};
use super::ddl::*;
use super::errors::*;
use super::*;
use crate::dialect::Dialect;
use crate::model::*;
use crate::statements::Custom;

pub(crate) fn list(config: &impl ConfigExt, key: &str) -> Result<Vec<String>, Status> {
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

pub(crate) fn identifier(config: &impl ConfigExt, key: &str) -> Result<Option<String>, Status> {
    match config.get(key) {
        Some(name) => {
            check_identifier(key, name)?;
            Ok(Some(name.to_string()))
        }
        None => Ok(None),
    }
}

impl Table {
    /// Connects, creates the table when configured to, and reads its columns (`config` read
    /// against the declared parameters).
    pub async fn open(config: &(impl ConfigExt + Sync)) -> Result<Self, Status> {
        let url = config.require("connection_string")?.to_string();
        let dialect = Dialect::of_url(&url)?;
        let name = config.require("table")?.to_string();
        check_identifier("table", &name)?;
        let anchor_name = config.text("anchor_column").to_string();
        check_identifier("anchor_column", &anchor_name)?;
        let object_type = config.text("object_type").to_string();
        let create = config.flag("create_table")?;
        let multi_valued = list(config, "multi_valued")?;
        let references = list(config, "references")?;
        let watermark_column = identifier(config, "watermark_column")?;
        let soft_delete_column = identifier(config, "soft_delete_column")?;
        let change_table = identifier(config, "change_table")?;
        let install_triggers = config.flag("install_change_triggers")?;
        if install_triggers && change_table.is_none() {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                "install_change_triggers needs change_table (the name of the table the triggers write)",
            ));
        }
        let synchronous = synchronous(dialect, config.text("sqlite_synchronous"))?;
        let pool = connect(dialect, &url, create, synchronous).await?;
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
        let (anchor, mut columns) =
            split_anchor(catalog, &name, &anchor_name, |c| references.iter().any(|r| r == c))?;
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
    pub(super) async fn catalog(
        pool: &AnyPool,
        dialect: Dialect,
        table: &str,
    ) -> Result<Vec<Column>, Status> {
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
}
