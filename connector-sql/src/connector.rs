//! The `ecma.v1` service of the SQL connector.

use std::sync::Arc;

use ecma_connector_sdk::{Sessions, error_status, negotiate, parameter};
use ecma_proto::v1::{
    self, ConfigParameterType as T, ConfigParameters, ErrorKind, connector_server::Connector,
};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::statements::Operation;
use crate::table::PARTITION;

const DEFAULT_PAGE_SIZE: u32 = 500;
const MAX_PAGE_SIZE: u32 = 5000;

#[derive(Clone)]
struct ImportSession {
    table: Arc<Backend>,
    after: Option<String>,
    /// Delta: rows whose watermark column is at or after this mark.
    since: Option<String>,
    /// The mark taken when this run started: the next delta starts from it.
    mark: Option<String>,
    page_size: u32,
    done: bool,
}

/// The connector's state: the open table for the current configuration, and open sessions.
#[derive(Default)]
pub struct SqlConnector {
    table: tokio::sync::Mutex<Option<(ConfigParameters, Arc<Backend>)>>,
    imports: Sessions<ImportSession>,
    exports: Sessions<Arc<Backend>>,
}

impl SqlConnector {
    /// The table for `config`, opened once and reused while the configuration stays the same.
    async fn table(&self, config: &Option<ConfigParameters>) -> Result<Arc<Backend>, Status> {
        let config_value = config.clone().unwrap_or_default();
        let mut slot = self.table.lock().await;
        if let Some((cached, table)) = slot.as_ref()
            && *cached == config_value
        {
            return Ok(table.clone());
        }
        let table = Arc::new(Backend::open(config).await?);
        *slot = Some((config_value, table.clone()));
        Ok(table)
    }

    fn check_type(table: &Backend, object_type: &str) -> Result<(), Status> {
        if !object_type.is_empty() && object_type != table.object_type() {
            return Err(error_status(
                ErrorKind::SchemaViolation,
                format!(
                    "object type {object_type:?} is not offered; this table offers {:?}",
                    table.object_type()
                ),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Connector for SqlConnector {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        let version = negotiate(request.get_ref())?;
        Ok(Response::new(v1::HelloResponse {
            protocol_version: version,
            connector_name: env!("CARGO_PKG_NAME").into(),
            connector_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Some(v1::Capabilities {
                distinguished_name_style: v1::DistinguishedNameStyle::None as i32,
                object_rename: false,
                delta_import: true,
                // Batches of a database server run concurrently; SQLite's are serialised inside.
                concurrent_operation: true,
                export_type: v1::ExportType::AttributeReplace as i32,
                full_export: false,
                supports_lookup: true,
                supports_import: true,
                supports_export: true,
                supports_partitions: false,
                supports_hierarchy: false,
                normalizations: v1::Normalizations::None as i32,
                object_confirmation: v1::ObjectConfirmation::Normal as i32,
                export_batch_size: 100,
                import_max_page_size: MAX_PAGE_SIZE,
                ..Default::default()
            }),
        }))
    }

    async fn get_config_parameters(
        &self,
        _: Request<v1::GetConfigParametersRequest>,
    ) -> Result<Response<v1::GetConfigParametersResponse>, Status> {
        Ok(Response::new(v1::GetConfigParametersResponse { parameters: parameters() }))
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        let config = request.into_inner().config;
        let missing = ecma_connector_sdk::missing_required(&parameters(), &config);
        if !missing.is_empty() {
            return Ok(Response::new(v1::ValidateConfigurationResponse { problems: missing }));
        }
        let problems = match self.table(&config).await {
            Ok(table) => match table.ping().await {
                Ok(()) => vec![],
                Err(status) => vec![problem_from(status)],
            },
            Err(status) => vec![problem_from(status)],
        };
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let table = self.table(&request.into_inner().config).await?;
        Ok(Response::new(v1::GetSchemaResponse {
            schema: Some(v1::Schema { types: vec![table.schema_type()] }),
        }))
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        let table = self.table(&request.into_inner().config).await?;
        Ok(Response::new(v1::GetPartitionsResponse {
            partitions: vec![v1::Partition { id: PARTITION.into(), name: table.name().to_string() }],
        }))
    }

    async fn get_hierarchy(
        &self,
        _: Request<v1::GetHierarchyRequest>,
    ) -> Result<Response<v1::GetHierarchyResponse>, Status> {
        // A table is flat: no hierarchy.
        Ok(Response::new(v1::GetHierarchyResponse { nodes: vec![] }))
    }

    async fn open_import_connection(
        &self,
        request: Request<v1::OpenImportConnectionRequest>,
    ) -> Result<Response<v1::OpenImportConnectionResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.config).await?;
        Self::check_type(&table, &request.object_type)?;
        let delta = request.import_type == v1::ImportType::Delta as i32;
        if delta && !table.has_watermark() {
            return Err(error_status(
                ErrorKind::Unsupported,
                "delta import needs watermark_column (a column holding each row's last change time) \
                 or change_table",
            ));
        }
        let since = if delta {
            let since = String::from_utf8(request.watermark).unwrap_or_default();
            if since.is_empty() {
                return Err(error_status(
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
        let session_id =
            self.imports.open(ImportSession { table, after: None, since, mark, page_size, done: false });
        Ok(Response::new(v1::OpenImportConnectionResponse { session_id }))
    }

    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        let session_id = request.into_inner().session_id;
        let ImportSession { table, after, since, mark, page_size, done } = self.imports.get(&session_id)?;
        if done {
            return Ok(Response::new(v1::GetImportEntriesResponse::default()));
        }
        let page = table.page(after.as_deref(), since.as_deref(), page_size).await?;
        let more = page.entries.len() as u32 == page_size;
        self.imports.update(&session_id, |s| {
            s.after = page.last.or(s.after.take());
            s.done = !more;
        });
        // A full run adds every row; a delta replaces what changed and deletes what was marked.
        let changed = if since.is_some() {
            v1::ObjectModificationType::Replace
        } else {
            v1::ObjectModificationType::Add
        };
        Ok(Response::new(v1::GetImportEntriesResponse {
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
            more_to_import: more,
            watermark: if more { vec![] } else { mark.unwrap_or_default().into_bytes() },
        }))
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        let session = self.imports.close(&request.into_inner().session_id);
        // The run's mark, for the next delta (a full run's is stored only now that it ended).
        let watermark = session.filter(|s| s.done).and_then(|s| s.mark).unwrap_or_default().into_bytes();
        Ok(Response::new(v1::CloseImportConnectionResponse { watermark }))
    }

    async fn open_export_connection(
        &self,
        request: Request<v1::OpenExportConnectionRequest>,
    ) -> Result<Response<v1::OpenExportConnectionResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.config).await?;
        Self::check_type(&table, &request.object_type)?;
        let session_id = self.exports.open(table);
        Ok(Response::new(v1::OpenExportConnectionResponse { session_id }))
    }

    async fn put_export_entries(
        &self,
        request: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        let request = request.into_inner();
        let table = self.exports.get(&request.session_id)?;
        let applied = table.export(&request.entries).await?;
        let mut results = Vec::with_capacity(applied.len());
        for (change, result) in request.entries.iter().zip(applied) {
            results.push(match result {
                Ok(applied) => v1::CsEntryChangeResult {
                    identifier: change.identifier.clone(),
                    error_kind: ErrorKind::None as i32,
                    anchors: vec![v1::Anchor { name: table.anchor_name().to_string(), value: Some(applied.anchor) }],
                    ..Default::default()
                },
                Err(e) => {
                    tracing::info!(identifier = %change.identifier, kind = ?e.kind, detail = %e.detail, "entry failed");
                    v1::CsEntryChangeResult {
                        identifier: change.identifier.clone(),
                        error_kind: e.kind as i32,
                        error_detail: e.detail,
                        ..Default::default()
                    }
                }
            });
        }
        Ok(Response::new(v1::PutExportEntriesResponse { results }))
    }

    async fn close_export_connection(
        &self,
        request: Request<v1::CloseExportConnectionRequest>,
    ) -> Result<Response<v1::CloseExportConnectionResponse>, Status> {
        self.exports.close(&request.into_inner().session_id);
        Ok(Response::new(v1::CloseExportConnectionResponse {}))
    }

    async fn lookup_entries(
        &self,
        request: Request<v1::LookupEntriesRequest>,
    ) -> Result<Response<v1::LookupEntriesResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.config).await?;
        Self::check_type(&table, &request.object_type)?;
        let (column, value) = match request.by {
            Some(v1::lookup_entries_request::By::Anchor(anchor)) => (anchor.name, anchor.value),
            Some(v1::lookup_entries_request::By::Attribute(attr)) => {
                (attr.name, attr.values.into_iter().next())
            }
            None => {
                return Err(error_status(
                    ErrorKind::InvalidAttributeValue,
                    "lookup needs an anchor or an attribute",
                ));
            }
        };
        let value =
            value.ok_or_else(|| error_status(ErrorKind::InvalidAttributeValue, "lookup without a value"))?;
        let entries = table.lookup(&column, value).await?;
        Ok(Response::new(v1::LookupEntriesResponse { entries }))
    }

    async fn set_password(
        &self,
        _: Request<v1::SetPasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        Err(error_status(ErrorKind::Unsupported, "password operations are not supported by connector-sql"))
    }

    async fn change_password(
        &self,
        _: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        Err(error_status(ErrorKind::Unsupported, "password operations are not supported by connector-sql"))
    }
}

/// The parameters this connector declares.
pub fn parameters() -> Vec<v1::ConfigParameterDefinition> {
    let mut parameters = vec![
        parameter(
            "connection_string",
            T::EncryptedString,
            true,
            true,
            "",
            "Database URL: postgres://user:password@host/db, mysql://... (MariaDB too), \
                     sqlite:///var/lib/app/users.db; add ?sslmode=require (PostgreSQL) or \
                     ?ssl-mode=required (MySQL) for TLS",
        ),
        parameter("table", T::String, true, false, "", "Table (or view) holding the objects"),
        parameter("anchor_column", T::String, false, false, "id", "Column that identifies a row"),
        parameter("object_type", T::String, false, false, "user", "Object type name the table offers"),
        parameter("create_table", T::Boolean, false, false, "false", "Create the table if it is missing"),
        parameter(
            "multi_valued",
            T::Text,
            false,
            false,
            "",
            "Comma-separated multi-valued attributes, each in a table <table>_<attribute> (owner, value)",
        ),
        parameter(
            "references",
            T::Text,
            false,
            false,
            "",
            "Comma-separated attributes whose values are anchors of other objects (e.g. members)",
        ),
        parameter(
            "watermark_column",
            T::String,
            false,
            false,
            "",
            "Column holding each row's last change time: enables delta imports (created \
                     with the table when create_table is set)",
        ),
        parameter(
            "watermark_query",
            T::Text,
            false,
            false,
            "",
            "Query returning the mark a run starts from (default: now less 5 minutes)",
        ),
        parameter(
            "soft_delete_column",
            T::String,
            false,
            false,
            "",
            "Boolean column marking deleted rows: left out of full imports, reported as \
                     deletes by delta imports",
        ),
        parameter(
            "change_table",
            T::String,
            false,
            false,
            "",
            "Table (anchor, changed_at) of changed anchors that delta imports read; a changed \
                 anchor whose row is gone is reported as deleted",
        ),
        parameter(
            "install_change_triggers",
            T::Boolean,
            false,
            false,
            "false",
            "Create change_table and triggers on the table (and its multi-valued tables) that fill it",
        ),
        parameter(
            "columns",
            T::Text,
            false,
            false,
            "",
            "With create_table: comma-separated `name [text|integer|boolean|blob] [unique]`",
        ),
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
        parameters.push(parameter(&format!("{op}_statement"), T::Text, false, false, "", statement_help));
        parameters.push(parameter(&format!("{op}_procedure"), T::String, false, false, "", procedure_help));
        parameters.push(parameter(
            &format!("{op}_procedure_parameters"),
            T::String,
            false,
            false,
            "",
            parameters_help,
        ));
    }
    parameters
}

fn problem_from(status: Status) -> v1::ConfigProblem {
    let kind = ecma_proto::error_kind_of(&status).unwrap_or(ErrorKind::Internal);
    v1::ConfigProblem { parameter: String::new(), message: status.message().to_string(), kind: kind as i32 }
}
