//! The table behind a configuration: through sqlx (PostgreSQL, MySQL/MariaDB, SQLite) or, for
//! `odbc:` connection strings, through ODBC (cargo feature `odbc`).

use ecma_connector_sdk::{ConfigExt, error_status};
use ecma_proto::v1::{self, ConfigParameters, CsEntryChange, Entry, ErrorKind, Value};
use tonic::Status;

use crate::model::{Applied, Page};
use crate::table::Table;
use ecma_connector_sdk::ConnectorError;

pub enum Backend {
    Sqlx(Box<Table>),
    #[cfg(feature = "odbc")]
    Odbc(std::sync::Arc<crate::odbc::OdbcTable>),
}

/// Runs blocking ODBC work off the async threads.
#[cfg(feature = "odbc")]
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error_status(ErrorKind::Internal, format!("an ODBC call failed: {e}")))
}

impl Backend {
    /// Opens the table `config` describes, its parameters read against the declared table (a
    /// default is the one `parameters()` declares).
    pub async fn open(config: &Option<ConfigParameters>) -> Result<Self, Status> {
        let declared = crate::service::parameters();
        let settings = ecma_connector_sdk::Settings::new(&declared, config);
        let url = settings.require("connection_string")?;
        match url.strip_prefix("odbc:") {
            #[cfg(feature = "odbc")]
            Some(odbc) => {
                let (config, odbc) = (config.clone(), odbc.to_string());
                let table = blocking(move || {
                    crate::odbc::OdbcTable::open(
                        &ecma_connector_sdk::Settings::new(&declared, &config),
                        &odbc,
                    )
                })
                .await??;
                Ok(Self::Odbc(std::sync::Arc::new(table)))
            }
            #[cfg(not(feature = "odbc"))]
            Some(_) => Err(error_status(
                ErrorKind::InvalidConfiguration,
                "this connector-sql was built without ODBC support (cargo feature `odbc`)",
            )),
            None => Ok(Self::Sqlx(Box::new(Table::open(&settings).await?))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Sqlx(t) => &t.name,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => &t.name,
        }
    }

    pub fn object_type(&self) -> &str {
        match self {
            Self::Sqlx(t) => &t.object_type,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => &t.object_type,
        }
    }

    pub fn anchor_name(&self) -> &str {
        match self {
            Self::Sqlx(t) => &t.anchor.name,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => &t.anchor.name,
        }
    }

    pub fn schema_type(&self) -> v1::SchemaType {
        match self {
            Self::Sqlx(t) => t.schema_type(),
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => crate::model::schema_type(&t.object_type, &t.anchor, &t.columns),
        }
    }

    pub async fn ping(&self) -> Result<(), Status> {
        match self {
            Self::Sqlx(t) => t.ping().await,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => {
                let t = t.clone();
                blocking(move || t.ping()).await?
            }
        }
    }

    pub fn has_watermark(&self) -> bool {
        match self {
            Self::Sqlx(t) => t.has_watermark(),
            #[cfg(feature = "odbc")]
            Self::Odbc(_) => false,
        }
    }

    pub async fn mark(&self) -> Result<Option<String>, Status> {
        match self {
            Self::Sqlx(t) => t.mark().await,
            #[cfg(feature = "odbc")]
            Self::Odbc(_) => Ok(None),
        }
    }

    pub async fn page(&self, after: Option<&str>, since: Option<&str>, size: u32) -> Result<Page, Status> {
        match self {
            Self::Sqlx(t) => t.page(after, since, size).await,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => {
                let (t, after) = (t.clone(), after.map(String::from));
                blocking(move || t.page(after.as_deref(), size)).await?
            }
        }
    }

    pub async fn export(
        &self,
        changes: &[CsEntryChange],
    ) -> Result<Vec<Result<Applied, ConnectorError>>, Status> {
        match self {
            Self::Sqlx(t) => t.export(changes).await,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => {
                let (t, changes) = (t.clone(), changes.to_vec());
                let results = blocking(move || t.export(&changes)).await?;
                // Each entry is its own autocommitted statement: one cut off by a broken
                // connection may or may not be done. The whole call is then "outcome unknown"
                // (UNAVAILABLE without an error kind), which the supervisor settles by lookups.
                if let Some(Err(e)) =
                    results.iter().find(|r| matches!(r, Err(e) if e.kind == ErrorKind::ConnectionFailed))
                {
                    return Err(Status::unavailable(format!(
                        "the database connection broke; outcome unknown: {}",
                        e.detail
                    )));
                }
                Ok(results)
            }
        }
    }

    pub async fn lookup(&self, column: &str, value: Value) -> Result<Vec<Entry>, Status> {
        match self {
            Self::Sqlx(t) => t.lookup(column, value).await,
            #[cfg(feature = "odbc")]
            Self::Odbc(t) => {
                let (t, column) = (t.clone(), column.to_string());
                blocking(move || t.lookup(&column, value)).await?
            }
        }
    }
}
