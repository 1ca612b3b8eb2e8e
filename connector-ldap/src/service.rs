//! The `ecma.v1` service of the LDAP connector.

use std::sync::{Arc, Mutex};

use ecma_connector_sdk::{Sessions, error_status, negotiate};
use ecma_proto::v1::{self, ConfigParameters, ErrorKind, connector_server::Connector};
use ldap3::ldap_escape;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::directory::OpError;
use crate::export;
use crate::import::{self, Item};
use crate::settings::{DeltaMethod, Settings, parameters};
use crate::target::Target;

const MAX_PAGE_SIZE: u32 = 5000;

struct ImportSession {
    items: tokio::sync::Mutex<mpsc::Receiver<Item>>,
    page_size: usize,
    finished: Mutex<Option<Vec<u8>>>,
}

struct ExportSession {
    target: Arc<Target>,
    partition: String,
}

/// The connector's state: the open target for the current configuration, and open sessions.
#[derive(Default)]
pub struct LdapConnector {
    target: tokio::sync::Mutex<Option<(ConfigParameters, Arc<Target>)>>,
    imports: Sessions<Arc<ImportSession>>,
    exports: Sessions<Arc<ExportSession>>,
}

impl LdapConnector {
    /// The target for `config`, opened once and reused while the configuration stays the same.
    async fn target(&self, config: &Option<ConfigParameters>) -> Result<Arc<Target>, OpError> {
        let value = config.clone().unwrap_or_default();
        let mut slot = self.target.lock().await;
        if let Some((cached, target)) = slot.as_ref()
            && *cached == value
        {
            return Ok(target.clone());
        }
        let settings = Settings::parse(config).map_err(|s| {
            OpError::new(
                ecma_proto::error_kind_of(&s).unwrap_or(ErrorKind::InvalidConfiguration),
                s.message(),
            )
        })?;
        let target = Arc::new(Target::open(settings).await?);
        *slot = Some((value, target.clone()));
        Ok(target)
    }

    fn partition_of(target: &Target, partition: &str) -> Result<String, OpError> {
        if !partition.is_empty() {
            return Ok(partition.to_string());
        }
        target.features.naming_contexts.first().cloned().ok_or_else(|| {
            OpError::new(
                ErrorKind::InvalidConfiguration,
                "the server names no naming context; set a partition",
            )
        })
    }
}

fn status(e: OpError) -> Status {
    e.status()
}

#[tonic::async_trait]
impl Connector for LdapConnector {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: negotiate(request.get_ref())?,
            connector_name: env!("CARGO_PKG_NAME").into(),
            connector_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Some(v1::Capabilities {
                distinguished_name_style: v1::DistinguishedNameStyle::Ldap as i32,
                object_rename: true,
                delta_import: true,
                concurrent_operation: true,
                export_type: v1::ExportType::AttributeUpdate as i32,
                export_password_in_first_pass: true,
                supports_password: true,
                supports_lookup: true,
                supports_import: true,
                supports_export: true,
                supports_partitions: true,
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
        let problem = |e: OpError| {
            // Settings errors start with the parameter they concern.
            let parameter = e
                .detail
                .split_once(':')
                .map(|(p, _)| p)
                .filter(|p| parameters().iter().any(|d| d.name == *p))
                .unwrap_or("")
                .to_string();
            v1::ConfigProblem { parameter, message: e.detail, kind: e.kind as i32 }
        };
        let problems = match self.target(&config).await {
            Err(e) => vec![problem(e)],
            Ok(target) => {
                let mut problems = Vec::new();
                if target.settings().delta == DeltaMethod::Sync && !target.features.sync {
                    problems.push(problem(OpError::new(
                        ErrorKind::Unsupported,
                        "delta_method: the server does not offer the RFC 4533 sync control (OpenLDAP: load the syncprov overlay), or use \"timestamp\"",
                    )));
                }
                problems
            }
        };
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let target = self.target(&request.into_inner().config).await.map_err(status)?;
        let s = target.settings();
        let mut types = vec![target.type_schema.clone()];
        // The other structural classes, for an admin choosing an object type.
        for class in target.schema.structural_classes() {
            if !class.eq_ignore_ascii_case(&target.type_schema.name) {
                types.push(target.schema.schema_type(&class, &[], &s.anchor));
            }
        }
        Ok(Response::new(v1::GetSchemaResponse { schema: Some(v1::Schema { types }) }))
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        let target = self.target(&request.into_inner().config).await.map_err(status)?;
        Ok(Response::new(v1::GetPartitionsResponse {
            partitions: target
                .features
                .naming_contexts
                .iter()
                .map(|nc| v1::Partition { id: nc.clone(), name: nc.clone() })
                .collect(),
        }))
    }

    async fn open_import_connection(
        &self,
        request: Request<v1::OpenImportConnectionRequest>,
    ) -> Result<Response<v1::OpenImportConnectionResponse>, Status> {
        let request = request.into_inner();
        let target = self.target(&request.config).await.map_err(status)?;
        target.check_type(&request.object_type).map_err(status)?;
        let partition = Self::partition_of(&target, &request.partition_id).map_err(status)?;
        let page_size = match request.page_size {
            0 => target.settings().page_size as u32,
            n => n,
        }
        .min(MAX_PAGE_SIZE) as usize;
        let delta = request.import_type == v1::ImportType::Delta as i32;
        let items = import::start(target, partition, delta, request.watermark, page_size).map_err(status)?;
        let session_id = self.imports.open(Arc::new(ImportSession {
            items: tokio::sync::Mutex::new(items),
            page_size,
            finished: Mutex::new(None),
        }));
        Ok(Response::new(v1::OpenImportConnectionResponse { session_id }))
    }

    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        let session_id = request.into_inner().session_id;
        let session = self.imports.get(&session_id)?;
        if session.finished.lock().expect("finished lock").is_some() {
            return Ok(Response::new(v1::GetImportEntriesResponse::default()));
        }
        let mut items = session.items.lock().await;
        let mut entries = Vec::new();
        let mut done = None;
        while entries.len() < session.page_size {
            match items.recv().await {
                Some(Item::Entry(e)) => entries.push(e),
                Some(Item::Done(watermark)) => {
                    done = Some(watermark);
                    break;
                }
                Some(Item::Failed(e)) => return Err(status(e)),
                None => {
                    return Err(error_status(ErrorKind::Internal, "the import task ended without a result"));
                }
            }
        }
        let more = done.is_none();
        if let Some(watermark) = done {
            *session.finished.lock().expect("finished lock") = Some(watermark);
        }
        Ok(Response::new(v1::GetImportEntriesResponse { entries, more_to_import: more, watermark: vec![] }))
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        let session = self.imports.close(&request.into_inner().session_id);
        // The watermark counts only for a run read to its end.
        let watermark =
            session.and_then(|s| s.finished.lock().expect("finished lock").take()).unwrap_or_default();
        Ok(Response::new(v1::CloseImportConnectionResponse { watermark }))
    }

    async fn open_export_connection(
        &self,
        request: Request<v1::OpenExportConnectionRequest>,
    ) -> Result<Response<v1::OpenExportConnectionResponse>, Status> {
        let request = request.into_inner();
        let target = self.target(&request.config).await.map_err(status)?;
        target.check_type(&request.object_type).map_err(status)?;
        let partition = Self::partition_of(&target, &request.partition_id).map_err(status)?;
        let session_id = self.exports.open(Arc::new(ExportSession { target, partition }));
        Ok(Response::new(v1::OpenExportConnectionResponse { session_id }))
    }

    async fn put_export_entries(
        &self,
        request: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        let request = request.into_inner();
        let session = self.exports.get(&request.session_id)?;
        // Entries of one batch are distinct objects: they go to the directory concurrently,
        // pipelined on the one connection.
        let mut tasks = tokio::task::JoinSet::new();
        for change in request.entries {
            let session = session.clone();
            tasks.spawn(async move {
                let outcome = export::apply(&session.target, &session.partition, &change).await;
                (change.identifier, outcome, session)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            // A task that panicked leaves its entry without a result: its outcome is unknown,
            // and the supervisor reconciles it (a failure would deny a write that may be done).
            let Ok((identifier, outcome, session)) = joined else {
                tracing::error!("an export task panicked; its entry's outcome is left unknown");
                continue;
            };
            let anchor_name = session.target.type_schema.anchor_attributes[0].clone();
            results.push(match outcome {
                Ok(applied) => v1::CsEntryChangeResult {
                    identifier,
                    error_kind: ErrorKind::None as i32,
                    anchors: applied
                        .anchor
                        .map(|a| v1::Anchor { name: anchor_name, value: Some(v1::Value::string(a)) })
                        .into_iter()
                        .collect(),
                    confirmed_attributes: if applied.dn.is_empty() {
                        vec![]
                    } else {
                        vec![v1::AttributeValues {
                            name: "dn".into(),
                            values: vec![v1::Value::string(applied.dn)],
                        }]
                    },
                    ..Default::default()
                },
                // No result: the supervisor takes the entry's outcome for unknown and looks the
                // object up instead of taking the write for failed (it may have been applied).
                Err(e) if e.unknown_outcome => {
                    tracing::warn!(%identifier, detail = %e.detail, "entry outcome unknown");
                    continue;
                }
                Err(e) => {
                    tracing::info!(%identifier, kind = ?e.kind, detail = %e.detail, "entry failed");
                    v1::CsEntryChangeResult {
                        identifier,
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
        let target = self.target(&request.config).await.map_err(status)?;
        target.check_type(&request.object_type).map_err(status)?;
        let partition = Self::partition_of(&target, &request.partition_id).map_err(status)?;
        let filter = match request.by {
            Some(v1::lookup_entries_request::By::Anchor(anchor)) => {
                let text = anchor.value.as_ref().and_then(v1::Value::as_text).ok_or_else(|| {
                    error_status(ErrorKind::InvalidAttributeValue, "lookup by an anchor without a value")
                })?;
                format!("(&{}{})", target.type_filter(), target.anchor_filter(&text).map_err(status)?)
            }
            Some(v1::lookup_entries_request::By::Attribute(attr)) => {
                // Only attributes of the type's schema: a name is never taken from a request as is.
                let name = target
                    .type_schema
                    .attributes
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(&attr.name))
                    .map(|a| a.name.clone())
                    .ok_or_else(|| {
                        error_status(
                            ErrorKind::SchemaViolation,
                            format!("{:?} is not an attribute of this type", attr.name),
                        )
                    })?;
                let value = attr.values.first().and_then(v1::Value::as_text).ok_or_else(|| {
                    error_status(ErrorKind::InvalidAttributeValue, "lookup by an attribute without a value")
                })?;
                format!("(&{}({name}={}))", target.type_filter(), ldap_escape(&value))
            }
            None => {
                return Err(error_status(
                    ErrorKind::InvalidAttributeValue,
                    "lookup needs an anchor or an attribute",
                ));
            }
        };
        let entries = target.search(&partition, &filter).await.map_err(status)?;
        Ok(Response::new(v1::LookupEntriesResponse {
            entries: entries.iter().map(|e| target.to_entry(e, &partition)).collect(),
        }))
    }

    async fn set_password(
        &self,
        request: Request<v1::SetPasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        let request = request.into_inner();
        let target = self.target(&request.config).await.map_err(status)?;
        let partition = Self::partition_of(&target, "").map_err(status)?;
        let base = target.settings().container.clone().unwrap_or(partition);
        let anchor = request.anchors.first().and_then(|a| a.value.as_ref()).and_then(v1::Value::as_text);
        let error = match export::set_password(&target, &base, anchor, &request.dn, &request.new_password)
            .await
        {
            Ok(()) => None,
            Err(e) => {
                Some(v1::Error { kind: e.kind as i32, message: e.detail, attribute: "userPassword".into() })
            }
        };
        Ok(Response::new(v1::PasswordResponse { error }))
    }
}
