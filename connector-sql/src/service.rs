//! The `ecma.v1` service of the SQL connector, on the SDK's `Connector` trait.

use std::sync::Arc;

use ecma_connector_sdk::{
    Capabilities, ConnectorError, ConnectorV2, ExportScope, ImportRequest, ImportRun, Outcome, Page,
    Parameter, Target,
};
use ecma_proto::v1::{self, ConfigParameterType as T, ConfigParameters, ErrorKind};

use crate::backend::Backend;
use crate::model::PARTITION;
use crate::statements::Operation;

const DEFAULT_PAGE_SIZE: u32 = 500;
const MAX_PAGE_SIZE: u32 = 5000;

/// The SQL connector.
#[derive(Default)]
pub struct SqlConnector;

/// The open table of one configuration.
pub struct SqlTarget(Arc<Backend>);

impl SqlTarget {
    fn check_type(&self, object_type: &str) -> Result<(), ConnectorError> {
        if !object_type.is_empty() && object_type != self.0.object_type() {
            return Err(ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!(
                    "object type {object_type:?} is not offered; this table offers {:?}",
                    self.0.object_type()
                ),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ConnectorV2 for SqlConnector {
    type Target = SqlTarget;

    fn name(&self) -> &'static str {
        env!("CARGO_PKG_NAME")
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> v1::Capabilities {
        // Batches of a database server run concurrently; SQLite's are serialised inside.
        Capabilities::new()
            .import()
            .delta_import()
            .export(v1::ExportType::AttributeReplace)
            .lookup()
            .concurrent()
            .batches(100, MAX_PAGE_SIZE)
            .build()
    }

    fn parameters(&self) -> Vec<v1::ConfigParameterDefinition> {
        parameters()
    }

    async fn open(&self, config: &ConfigParameters) -> Result<SqlTarget, ConnectorError> {
        Ok(SqlTarget(Arc::new(Backend::open(&Some(config.clone())).await?)))
    }
}

#[tonic::async_trait]
impl Target for SqlTarget {
    async fn validate(&self) -> Vec<ConnectorError> {
        match self.0.ping().await {
            Ok(()) => vec![],
            Err(status) => vec![status.into()],
        }
    }

    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError> {
        Ok(vec![self.0.schema_type()])
    }

    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError> {
        Ok(vec![v1::Partition { id: PARTITION.into(), name: self.0.name().to_string() }])
    }

    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        self.check_type(&request.object_type)?;
        let table = self.0.clone();
        if request.delta && !table.has_watermark() {
            return Err(ConnectorError::unsupported(
                "delta import needs watermark_column (a column holding each row's last change time) or change_table",
            ));
        }
        let since = if request.delta {
            let since = String::from_utf8(request.watermark).unwrap_or_default();
            if since.is_empty() {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidAttributeValue,
                    "no watermark from an earlier import: run a full import first",
                ));
            }
            Some(since)
        } else {
            None
        };
        // Taken before the first read: what changes while this run reads is seen again next time.
        let mark = table.mark().await?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Ok(Box::new(SqlImport { table, after: None, since, mark, page_size, done: false }))
    }

    async fn open_export(&self, scope: &ExportScope) -> Result<(), ConnectorError> {
        self.check_type(&scope.object_type)
    }

    async fn export(
        &self,
        _: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        let applied = self.0.export(entries).await?;
        Ok(entries
            .iter()
            .zip(applied)
            .map(|(change, result)| match result {
                Ok(applied) => Outcome::applied(vec![v1::Anchor {
                    name: self.0.anchor_name().to_string(),
                    value: Some(applied.anchor),
                }]),
                Err(e) => {
                    tracing::info!(identifier = %change.identifier, kind = ?e.kind, detail = %e.detail, "entry failed");
                    Outcome::Failed(e)
                }
            })
            .collect())
    }

    async fn lookup(
        &self,
        object_type: &str,
        _: &str,
        by: &v1::lookup_entries_request::By,
    ) -> Result<Vec<v1::Entry>, ConnectorError> {
        self.check_type(object_type)?;
        let (column, value) = match by {
            v1::lookup_entries_request::By::Anchor(anchor) => (anchor.name.clone(), anchor.value.clone()),
            v1::lookup_entries_request::By::Attribute(attr) => {
                (attr.name.clone(), attr.values.first().cloned())
            }
        };
        let value = value
            .ok_or_else(|| ConnectorError::new(ErrorKind::InvalidAttributeValue, "lookup without a value"))?;
        Ok(self.0.lookup(&column, value).await?)
    }
}

/// An import under way: pages of rows by anchor (after the last one read), and the mark taken
/// when it started.
struct SqlImport {
    table: Arc<Backend>,
    after: Option<String>,
    /// Delta: rows whose watermark column is at or after this mark.
    since: Option<String>,
    /// The mark taken when this run started: the next delta starts from it.
    mark: Option<String>,
    page_size: u32,
    done: bool,
}

#[tonic::async_trait]
impl ImportRun for SqlImport {
    async fn next_page(&mut self) -> Result<Page, ConnectorError> {
        if self.done {
            return Ok(Page::default());
        }
        let page = self.table.page(self.after.as_deref(), self.since.as_deref(), self.page_size).await?;
        let more = page.entries.len() as u32 == self.page_size;
        self.after = page.last.or(self.after.take());
        self.done = !more;
        // A full run adds every row; a delta replaces what changed and deletes what was marked.
        let changed = if self.since.is_some() {
            v1::ObjectModificationType::Replace
        } else {
            v1::ObjectModificationType::Add
        };
        Ok(Page {
            entries: page
                .entries
                .into_iter()
                .map(|(deleted, entry)| v1::ImportEntry {
                    modification_type: if deleted { v1::ObjectModificationType::Delete } else { changed }
                        as i32,
                    entry: Some(entry),
                    error: None,
                })
                .collect(),
            more,
            watermark: if more { vec![] } else { self.mark.clone().unwrap_or_default().into_bytes() },
        })
    }

    /// The run's mark, for the next delta (a full run's is stored only now that it ended).
    fn final_watermark(&self) -> Vec<u8> {
        if self.done { self.mark.clone().unwrap_or_default().into_bytes() } else { vec![] }
    }
}

/// The parameters this connector declares.
pub fn parameters() -> Vec<v1::ConfigParameterDefinition> {
    let mut parameters = vec![
        Parameter::new(
            "connection_string",
            T::EncryptedString,
            "Database URL: postgres://user:password@host/db, mysql://... (MariaDB too), \
                     sqlite:///var/lib/app/users.db; add ?sslmode=require (PostgreSQL) or \
                     ?ssl-mode=required (MySQL) for TLS",
        )
        .required()
        .secret()
        .definition(),
        Parameter::new("table", T::String, "Table (or view) holding the objects").required().definition(),
        Parameter::new("anchor_column", T::String, "Column that identifies a row").default("id").definition(),
        Parameter::new("object_type", T::String, "Object type name the table offers")
            .default("user")
            .definition(),
        Parameter::new("create_table", T::Boolean, "Create the table if it is missing")
            .default("false")
            .definition(),
        Parameter::new(
            "sqlite_synchronous",
            T::String,
            "SQLite targets: how a commit reaches the disk. full (default): synced before the \
                 export is answered, so it survives a power loss; normal: survives a crash of any \
                 process, but a power loss may take the last commits (SQLite's advice for WAL)",
        )
        .default("full")
        .definition(),
        Parameter::new(
            "multi_valued",
            T::Text,
            "Comma-separated multi-valued attributes, each in a table <table>_<attribute> (owner, value)",
        )
        .definition(),
        Parameter::new(
            "references",
            T::Text,
            "Comma-separated attributes whose values are anchors of other objects (e.g. members)",
        )
        .definition(),
        Parameter::new(
            "watermark_column",
            T::String,
            "Column holding each row's last change time: enables delta imports (created \
                     with the table when create_table is set)",
        )
        .definition(),
        Parameter::new(
            "watermark_query",
            T::Text,
            "Query returning the mark a run starts from (default: now less 5 minutes)",
        )
        .definition(),
        Parameter::new(
            "soft_delete_column",
            T::String,
            "Boolean column marking deleted rows: left out of full imports, reported as \
                     deletes by delta imports",
        )
        .definition(),
        Parameter::new(
            "change_table",
            T::String,
            "Table (anchor, changed_at) of changed anchors that delta imports read; a changed \
                 anchor whose row is gone is reported as deleted",
        )
        .definition(),
        Parameter::new(
            "install_change_triggers",
            T::Boolean,
            "Create change_table and triggers on the table (and its multi-valued tables) that fill it",
        )
        .default("false")
        .definition(),
        Parameter::new(
            "columns",
            T::Text,
            "With create_table: comma-separated `name [text|integer|boolean|blob] [unique]`",
        )
        .definition(),
    ];
    // Per operation, the admin's own SQL or stored procedure instead of the generated SQL.
    for operation in Operation::ALL {
        let op = operation.key();
        let (statement_help, procedure_help, parameters_help) = match operation {
            Operation::Read => (
                "Paged SELECT for full imports, with :after (the last anchor, NULL at first) and \
                     :page_size; columns named as the table's",
                "Stored procedure (PostgreSQL: set-returning function) called with (:after, :page_size)",
                "Its parameters, in order (default: after, page_size)",
            ),
            Operation::Delete => (
                "SQL run to delete an object, with :anchor",
                "Stored procedure called to delete an object",
                "Its parameters, in order (default: anchor)",
            ),
            _ => (
                "SQL run for this operation, with :anchor and :<column> parameters (an add \
                     may return the new anchor as its one row)",
                "Stored procedure called for this operation",
                "Its parameters, in order (default: anchor, then every column)",
            ),
        };
        parameters.push(Parameter::new(format!("{op}_statement"), T::Text, statement_help).definition());
        parameters.push(Parameter::new(format!("{op}_procedure"), T::String, procedure_help).definition());
        parameters.push(
            Parameter::new(format!("{op}_procedure_parameters"), T::String, parameters_help).definition(),
        );
    }
    parameters
}
