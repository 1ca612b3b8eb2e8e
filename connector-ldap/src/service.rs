//! The `ecma.v1` service of the LDAP connector, on the SDK's `Connector` trait.

use std::collections::HashMap;
use std::sync::Arc;

use ecma_connector_sdk::{
    Capabilities, ConnectorError, ConnectorV2, ExportScope, ImportRequest, ImportRun, Outcome, Page,
    PasswordChange,
};
use ecma_proto::v1::{self, ConfigParameters, ErrorKind};
use ldap3::ldap_escape;
use tokio::sync::mpsc;

use crate::directory::OpError;
use crate::export;
use crate::import::{self, Item};
use crate::settings::{DeltaMethod, Settings, parameters};
use crate::target::Target;

const MAX_PAGE_SIZE: u32 = 5000;

impl From<OpError> for ConnectorError {
    fn from(e: OpError) -> Self {
        ConnectorError::new(e.kind, e.detail)
    }
}

/// The LDAP connector.
#[derive(Default)]
pub struct LdapConnector;

/// The open directory of one configuration.
pub struct LdapTarget(Arc<Target>);

impl LdapTarget {
    fn partition_of(&self, partition: &str) -> Result<String, ConnectorError> {
        if !partition.is_empty() {
            return Ok(partition.to_string());
        }
        self.0.features.naming_contexts.first().cloned().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::InvalidConfiguration,
                "the server names no naming context; set a partition",
            )
        })
    }
}

#[tonic::async_trait]
impl ConnectorV2 for LdapConnector {
    type Target = LdapTarget;

    fn name(&self) -> &'static str {
        env!("CARGO_PKG_NAME")
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> v1::Capabilities {
        Capabilities::new()
            .import()
            .delta_import()
            .export(v1::ExportType::AttributeUpdate)
            .lookup()
            .password()
            .concurrent()
            .batches(100, MAX_PAGE_SIZE)
            .with(|c| {
                c.distinguished_name_style = v1::DistinguishedNameStyle::Ldap as i32;
                c.object_rename = true;
                c.export_password_in_first_pass = true;
                c.supports_partitions = true;
            })
            .build()
    }

    fn parameters(&self) -> Vec<v1::ConfigParameterDefinition> {
        parameters()
    }

    async fn open(&self, config: &ConfigParameters) -> Result<LdapTarget, ConnectorError> {
        let settings = Settings::parse(&Some(config.clone())).map_err(|s| {
            let kind = ecma_proto::error_kind_of(&s).unwrap_or(ErrorKind::InvalidConfiguration);
            with_parameter(ConnectorError::new(kind, s.message()))
        })?;
        let target = Target::open(settings).await.map_err(|e| with_parameter(e.into()))?;
        Ok(LdapTarget(Arc::new(target)))
    }
}

/// Settings errors start with the parameter they concern: name it.
fn with_parameter(e: ConnectorError) -> ConnectorError {
    let parameter = e
        .detail
        .split_once(':')
        .map(|(p, _)| p.to_string())
        .filter(|p| parameters().iter().any(|d| d.name == *p));
    match parameter {
        Some(p) => e.on(p),
        None => e,
    }
}

#[tonic::async_trait]
impl ecma_connector_sdk::Target for LdapTarget {
    async fn validate(&self) -> Vec<ConnectorError> {
        if self.0.settings().delta == DeltaMethod::Sync && !self.0.features.sync {
            return vec![with_parameter(ConnectorError::new(
                ErrorKind::Unsupported,
                "delta_method: the server does not offer the RFC 4533 sync control (OpenLDAP: load the syncprov overlay), or use \"timestamp\"",
            ))];
        }
        vec![]
    }

    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError> {
        let target = &self.0;
        let mut types = vec![target.type_schema.clone()];
        // The other structural classes, for an admin choosing an object type.
        for class in target.schema.structural_classes() {
            if !class.eq_ignore_ascii_case(&target.type_schema.name) {
                types.push(target.schema.schema_type(&class, &[], &target.settings().anchor));
            }
        }
        Ok(types)
    }

    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError> {
        Ok(self
            .0
            .features
            .naming_contexts
            .iter()
            .map(|nc| v1::Partition { id: nc.clone(), name: nc.clone() })
            .collect())
    }

    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        self.0.check_type(&request.object_type)?;
        let partition = self.partition_of(&request.partition)?;
        let page_size = match request.page_size {
            0 => self.0.settings().page_size as u32,
            n => n,
        }
        .min(MAX_PAGE_SIZE) as usize;
        let items = import::start(self.0.clone(), partition, request.delta, request.watermark, page_size)?;
        Ok(Box::new(LdapImport { items, page_size, finished: None }))
    }

    /// Entries of one batch are distinct objects: they go to the directory concurrently,
    /// pipelined on the one connection.
    async fn open_export(&self, scope: &ExportScope) -> Result<(), ConnectorError> {
        self.0.check_type(&scope.object_type)?;
        self.partition_of(&scope.partition).map(|_| ())
    }

    async fn export(
        &self,
        scope: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        let partition = Arc::new(self.partition_of(&scope.partition)?);
        let mut tasks = tokio::task::JoinSet::new();
        for change in entries.iter().cloned() {
            let (target, partition) = (self.0.clone(), partition.clone());
            tasks.spawn(async move {
                let outcome = export::apply(&target, &partition, &change).await;
                (change.identifier, outcome)
            });
        }
        let anchor_name = self.0.type_schema.anchor_attributes[0].clone();
        let mut outcomes = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            // A task that panicked leaves its entry without a result: its outcome is unknown,
            // and the supervisor reconciles it (a failure would deny a write that may be done).
            let Ok((identifier, outcome)) = joined else {
                tracing::error!("an export task panicked; its entry's outcome is left unknown");
                continue;
            };
            let outcome = match outcome {
                Ok(applied) => Outcome::Applied {
                    anchors: applied
                        .anchor
                        .map(|a| v1::Anchor { name: anchor_name.clone(), value: Some(v1::Value::string(a)) })
                        .into_iter()
                        .collect(),
                    attributes: if applied.dn.is_empty() {
                        vec![]
                    } else {
                        vec![v1::AttributeValues {
                            name: "dn".into(),
                            values: vec![v1::Value::string(applied.dn)],
                        }]
                    },
                },
                // No result: the supervisor takes the entry's outcome for unknown and looks the
                // object up instead of taking the write for failed (it may have been applied).
                Err(e) if e.unknown_outcome => {
                    tracing::warn!(%identifier, detail = %e.detail, "entry outcome unknown");
                    Outcome::Unknown
                }
                Err(e) => {
                    tracing::info!(%identifier, kind = ?e.kind, detail = %e.detail, "entry failed");
                    Outcome::Failed(e.into())
                }
            };
            outcomes.insert(identifier, outcome);
        }
        Ok(entries.iter().map(|e| outcomes.remove(&e.identifier).unwrap_or(Outcome::Unknown)).collect())
    }

    async fn lookup(
        &self,
        object_type: &str,
        partition: &str,
        by: &v1::lookup_entries_request::By,
    ) -> Result<Vec<v1::Entry>, ConnectorError> {
        let target = &self.0;
        target.check_type(object_type)?;
        let partition = self.partition_of(partition)?;
        let filter = match by {
            v1::lookup_entries_request::By::Anchor(anchor) => {
                let text = anchor.value.as_ref().and_then(v1::Value::as_text).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::InvalidAttributeValue,
                        "lookup by an anchor without a value",
                    )
                })?;
                format!("(&{}{})", target.type_filter(), target.anchor_filter(&text)?)
            }
            v1::lookup_entries_request::By::Attribute(attr) => {
                // Only attributes of the type's schema: a name is never taken from a request as is.
                let name = target
                    .type_schema
                    .attributes
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(&attr.name))
                    .map(|a| a.name.clone())
                    .ok_or_else(|| {
                        ConnectorError::new(
                            ErrorKind::SchemaViolation,
                            format!("{:?} is not an attribute of this type", attr.name),
                        )
                    })?;
                let value = attr.values.first().and_then(v1::Value::as_text).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::InvalidAttributeValue,
                        "lookup by an attribute without a value",
                    )
                })?;
                format!("(&{}({name}={}))", target.type_filter(), ldap_escape(&value))
            }
        };
        let entries = target.search(&partition, &filter).await?;
        Ok(entries.into_iter().map(|e| target.to_entry(e, &partition)).collect())
    }

    async fn password(&self, change: PasswordChange) -> Result<(), ConnectorError> {
        if change.old.is_some() {
            return Err(ConnectorError::unsupported("changing a password with the old one; set it instead"));
        }
        let target = &self.0;
        let partition = self.partition_of("")?;
        let base = target.settings().container.clone().unwrap_or(partition);
        let anchor = change.anchors.first().and_then(|a| a.value.as_ref()).and_then(v1::Value::as_text);
        export::set_password(target, &base, anchor, &change.dn, &change.new)
            .await
            .map_err(|e| ConnectorError::from(e).on("userPassword"))
    }
}

/// An import under way: a task of its own feeds entries into a bounded channel; each page takes
/// up to `page_size` of them.
struct LdapImport {
    items: mpsc::Receiver<Item>,
    page_size: usize,
    /// The run's watermark, once it was read to its end.
    finished: Option<Vec<u8>>,
}

#[tonic::async_trait]
impl ImportRun for LdapImport {
    async fn next_page(&mut self) -> Result<Page, ConnectorError> {
        if self.finished.is_some() {
            return Ok(Page::default());
        }
        let mut entries = Vec::new();
        while entries.len() < self.page_size {
            match self.items.recv().await {
                Some(Item::Entry(e)) => entries.push(e),
                Some(Item::Done(watermark)) => {
                    self.finished = Some(watermark);
                    break;
                }
                Some(Item::Failed(e)) => return Err(e.into()),
                None => {
                    return Err(ConnectorError::new(
                        ErrorKind::Internal,
                        "the import task ended without a result",
                    ));
                }
            }
        }
        Ok(Page { entries, more: self.finished.is_none(), watermark: vec![] })
    }

    /// The watermark counts only for a run read to its end.
    fn final_watermark(&self) -> Vec<u8> {
        self.finished.clone().unwrap_or_default()
    }
}
