//! The `ecma.v1` service of the shell connector, on the SDK's `Connector` trait: each operation
//! runs its script (docs/shell-connector.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ecma_connector_sdk::declared::{schema_type, type_name, type_of};
use ecma_connector_sdk::{
    Capabilities, ConnectorError, ConnectorV2, ExportScope, ImportRequest, ImportRun, Outcome, Page,
    PasswordChange, Target,
};
use ecma_proto::v1::{self, AttributeType, ConfigParameters, ErrorKind};
use serde_json::{Map, Value as Json, json};

use crate::protocol::{self, call_error, parse_line};
use crate::runner::{self, Script};
use crate::settings::Settings;

const DEFAULT_PAGE_SIZE: u32 = 500;
const MAX_PAGE_SIZE: u32 = 10_000;

/// What the schema script said of a configuration (or the `attributes` parameter).
struct Loaded {
    schema: v1::SchemaType,
    /// Attribute name → (type, multi-valued).
    types: BTreeMap<String, (AttributeType, bool)>,
}

/// One configuration of the connector: its settings, and its schema once asked for.
struct Configured {
    settings: Settings,
    loaded: tokio::sync::OnceCell<Arc<Loaded>>,
}

/// The target of one configuration.
#[derive(Clone)]
pub struct ShellTarget(Arc<Configured>);

impl ShellTarget {
    fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The schema, from the schema script (run once per configuration, again after a failure)
    /// or from the `attributes` parameter.
    async fn loaded(&self) -> Result<Arc<Loaded>, ConnectorError> {
        let settings = &self.0.settings;
        if let Some(problem) = settings.problems().into_iter().next() {
            let kind = ErrorKind::try_from(problem.kind).unwrap_or(ErrorKind::InvalidConfiguration);
            // The message names its parameter itself.
            return Err(ConnectorError::new(kind, format!("{}: {}", problem.parameter, problem.message))
                .on(problem.parameter));
        }
        self.0
            .loaded
            .get_or_try_init(|| async {
                let schema = match settings.scripts.get("schema") {
                    Some(script) => schema_from_script(settings, script).await?,
                    None => schema_type(&settings.object_type, &settings.anchor, &settings.attributes),
                };
                let types = schema
                    .attributes
                    .iter()
                    .map(|a| {
                        (
                            a.name.clone(),
                            (
                                AttributeType::try_from(a.r#type).unwrap_or(AttributeType::String),
                                a.multi_valued,
                            ),
                        )
                    })
                    .collect();
                Ok(Arc::new(Loaded { schema, types }))
            })
            .await
            .cloned()
    }

    fn script(&self, operation: &str) -> Result<&Script, ConnectorError> {
        self.0
            .settings
            .scripts
            .get(operation)
            .ok_or_else(|| ConnectorError::unsupported(format!("no {operation}_script is configured")))
    }

    /// The input document of `operation`: the envelope, the schema, and `extra`.
    fn input(&self, loaded: &Loaded, operation: &str, extra: Map<String, Json>) -> Json {
        let mut document = self.0.settings.envelope(operation);
        document.insert("schema".into(), schema_json(&loaded.schema, &self.0.settings.anchor));
        document.extend(extra);
        Json::Object(document)
    }
}

fn schema_json(schema: &v1::SchemaType, anchor: &str) -> Json {
    let attributes: Vec<Json> = schema
        .attributes
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "type": type_name(AttributeType::try_from(a.r#type).unwrap_or(AttributeType::String)),
                "multi_valued": a.multi_valued,
                "required": a.required,
            })
        })
        .collect();
    json!({ "object_type": schema.name, "anchor": anchor, "attributes": attributes })
}

/// Runs the schema script: one line, `{"object_type": ..., "anchor": ..., "attributes":
/// [{"name", "type", "multi_valued", "required"}]}`.
async fn schema_from_script(settings: &Settings, script: &Script) -> Result<v1::SchemaType, ConnectorError> {
    let mut found = None;
    runner::run(script, &Json::Object(settings.envelope("schema")), |number, line| {
        let object = parse_line("schema", number, line)?;
        if let Some(e) = call_error("schema", &object) {
            return Err(e);
        }
        found = Some(object);
        Ok(())
    })
    .await?;
    let object =
        found.ok_or_else(|| ConnectorError::new(ErrorKind::Internal, "the schema script printed nothing"))?;
    let bad = |what: String| {
        ConnectorError::new(ErrorKind::Internal, format!("the schema script's answer: {what}"))
    };
    let anchor = object.get("anchor").and_then(Json::as_str).unwrap_or(&settings.anchor).to_string();
    let mut attributes = Vec::new();
    for a in object
        .get("attributes")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("no \"attributes\" array".into()))?
    {
        let name = a.get("name").and_then(Json::as_str).ok_or_else(|| bad(format!("{a} has no name")))?;
        let type_text = a.get("type").and_then(Json::as_str).unwrap_or("string");
        let kind =
            type_of(type_text).ok_or_else(|| bad(format!("type {type_text:?} of {name:?} is unknown")))?;
        attributes.push(v1::SchemaAttribute {
            name: name.to_string(),
            r#type: kind as i32,
            multi_valued: a.get("multi_valued").and_then(Json::as_bool).unwrap_or(false),
            operation: if name == anchor {
                v1::AttributeOperation::ImportOnly as i32
            } else {
                v1::AttributeOperation::ImportExport as i32
            },
            required: a.get("required").and_then(Json::as_bool).unwrap_or(false),
        });
    }
    if !attributes.iter().any(|a| a.name == anchor) {
        attributes.insert(
            0,
            v1::SchemaAttribute {
                name: anchor.clone(),
                r#type: AttributeType::String as i32,
                multi_valued: false,
                operation: v1::AttributeOperation::ImportOnly as i32,
                required: false,
            },
        );
    }
    Ok(v1::SchemaType {
        name: object.get("object_type").and_then(Json::as_str).unwrap_or(&settings.object_type).to_string(),
        attributes,
        anchor_attributes: vec![anchor],
        locked: false,
    })
}

/// The shell connector.
#[derive(Default)]
pub struct ShellConnector;

#[tonic::async_trait]
impl ConnectorV2 for ShellConnector {
    type Target = ShellTarget;

    fn name(&self) -> &'static str {
        env!("CARGO_PKG_NAME")
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> v1::Capabilities {
        // Scripts look nothing up: a write whose outcome is unknown waits for an import.
        Capabilities::new()
            .import()
            .delta_import()
            .export(v1::ExportType::AttributeReplace)
            .password()
            .batches(100, MAX_PAGE_SIZE)
            .build()
    }

    fn parameters(&self) -> Vec<v1::ConfigParameterDefinition> {
        crate::settings::definitions()
    }

    async fn open(&self, config: &ConfigParameters) -> Result<ShellTarget, ConnectorError> {
        let settings = Settings::read(&Some(config.clone())).map_err(|e| {
            let kind = ecma_proto::error_kind_of(&e).unwrap_or(ErrorKind::InvalidConfiguration);
            ConnectorError::new(kind, e.message())
        })?;
        // Scripts that cannot be run are ValidateConfiguration's problems (each of them), and
        // every other call's error (the first).
        Ok(ShellTarget(Arc::new(Configured { settings, loaded: tokio::sync::OnceCell::new() })))
    }
}

#[tonic::async_trait]
impl Target for ShellTarget {
    /// The validate script's problems (`{"problem": "...", "parameter": "..."}` lines; a failure
    /// of its own is one problem more), then whether the schema can be had.
    async fn validate(&self) -> Vec<ConnectorError> {
        let settings = self.settings();
        let mut problems: Vec<ConnectorError> = settings
            .problems()
            .into_iter()
            .map(|p| {
                let kind = ErrorKind::try_from(p.kind).unwrap_or(ErrorKind::InvalidConfiguration);
                ConnectorError::new(kind, p.message).on(p.parameter)
            })
            .collect();
        if !problems.is_empty() {
            return problems;
        }
        if let Some(script) = settings.scripts.get("validate") {
            let ran = runner::run(script, &Json::Object(settings.envelope("validate")), |number, line| {
                let object = parse_line("validate", number, line)?;
                if let Some(message) = object.get("problem").and_then(Json::as_str) {
                    let parameter = object.get("parameter").and_then(Json::as_str).unwrap_or("");
                    let kind = object
                        .get("kind")
                        .and_then(Json::as_str)
                        .map_or(ErrorKind::ConnectionFailed, protocol::kind_by_name);
                    problems.push(ConnectorError::new(kind, message).on(parameter));
                }
                Ok(())
            })
            .await;
            if let Err(e) = ran {
                let kind = if e.kind == ErrorKind::Internal { ErrorKind::ConnectionFailed } else { e.kind };
                problems.push(ConnectorError::new(kind, e.detail).on("validate_script"));
            }
        }
        if problems.is_empty()
            && let Err(e) = self.loaded().await
        {
            problems.push(e.on("schema_script"));
        }
        problems
    }

    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError> {
        Ok(vec![self.loaded().await?.schema.clone()])
    }

    /// The schema (and the scripts' checks) when an export session opens, as every call but
    /// GetPartitions.
    async fn open_export(&self, _: &ExportScope) -> Result<(), ConnectorError> {
        self.loaded().await.map(|_| ())
    }

    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError> {
        let partition = self.settings().partition.clone();
        Ok(vec![v1::Partition { id: partition.clone(), name: partition }])
    }

    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        self.script("import")?;
        let loaded = self.loaded().await?;
        let watermark = String::from_utf8(request.watermark).ok().filter(|w| !w.is_empty());
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Ok(Box::new(ShellImport {
            target: self.clone(),
            loaded,
            kind: if request.delta { "delta" } else { "full" },
            watermark: if request.delta { watermark } else { None },
            cursor: Json::Null,
            page_size,
            done: false,
            final_watermark: None,
        }))
    }

    /// One run of the export script for the batch: it prints one result line per entry,
    /// `{"identifier": ..., "anchor": ..., "error": {"kind": ..., "message": ...}}`. Entries the
    /// script gave no result for failed: with the script's own failure when it failed, else as
    /// missing.
    async fn export(
        &self,
        _: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        let script = self.script("export")?;
        let loaded = self.loaded().await?;
        let mut extra = Map::new();
        extra.insert("entries".into(), Json::Array(entries.iter().map(protocol::export_entry).collect()));
        let input = self.input(&loaded, "export", extra);
        let expected: HashMap<&str, &v1::CsEntryChange> =
            entries.iter().map(|e| (e.identifier.as_str(), e)).collect();
        let mut results: HashMap<String, Outcome> = HashMap::new();
        let ran = runner::run(script, &input, |number, line| {
            let object = parse_line("export", number, line)?;
            if let Some(e) = call_error("export", &object) {
                return Err(e);
            }
            let identifier = object.get("identifier").and_then(Json::as_str).unwrap_or_default();
            let Some(change) = expected.get(identifier) else {
                return Err(ConnectorError::new(
                    ErrorKind::Internal,
                    format!("the export script's line {number} names identifier {identifier:?}, which is not in the batch"),
                ));
            };
            results.insert(identifier.to_string(), export_result(self.settings(), change, &object));
            Ok(())
        })
        .await;
        let missing = match ran {
            Ok(()) => {
                ConnectorError::new(ErrorKind::Internal, "the export script printed no result for this entry")
            }
            Err(e) => {
                tracing::warn!(kind = ?e.kind, "{}", e.detail);
                e
            }
        };
        Ok(entries
            .iter()
            .map(|change| {
                results.remove(&change.identifier).unwrap_or_else(|| Outcome::Failed(missing.clone()))
            })
            .collect())
    }

    /// Runs the password script; the password is in its stdin document only.
    async fn password(&self, change: PasswordChange) -> Result<(), ConnectorError> {
        let Some(script) = self.settings().scripts.get("password") else {
            // As with a connector that has no way to set passwords: the object is written, the
            // password is not kept anywhere.
            tracing::info!("a password was sent, but no password_script is configured: it is not kept");
            return Ok(());
        };
        let loaded = self.loaded().await?;
        let mut extra = Map::new();
        match &change.old {
            None => {
                extra.insert("password_operation".into(), json!("set"));
                extra.insert("unlock_account".into(), json!(change.unlock_account));
                extra.insert("force_change_at_logon".into(), json!(change.force_change_at_logon));
            }
            Some(old) => {
                extra.insert("password_operation".into(), json!("change"));
                extra.insert("old_password".into(), json!(old));
            }
        }
        extra.insert("new_password".into(), json!(change.new));
        let anchor = change
            .anchors
            .first()
            .and_then(|a| a.value.as_ref())
            .map(protocol::to_json)
            .unwrap_or(Json::Null);
        extra.insert("anchor".into(), anchor);
        extra.insert("dn".into(), json!(change.dn));
        let input = self.input(&loaded, "password", extra);
        let mut error = None;
        runner::run(script, &input, |number, line| {
            let object = parse_line("password", number, line)?;
            if let Some(e) = object.get("error") {
                let (kind, message) = protocol::error_of(e);
                error = Some(ConnectorError::new(kind, message));
            }
            Ok(())
        })
        .await?;
        error.map_or(Ok(()), Err)
    }
}

/// An import under way: one run of the import script per page, which prints an object per line
/// and, last, a control line `{"more": bool, "cursor": ..., "watermark": "..."}`.
struct ShellImport {
    target: ShellTarget,
    loaded: Arc<Loaded>,
    kind: &'static str,
    watermark: Option<String>,
    cursor: Json,
    page_size: u32,
    done: bool,
    final_watermark: Option<String>,
}

#[tonic::async_trait]
impl ImportRun for ShellImport {
    async fn next_page(&mut self) -> Result<Page, ConnectorError> {
        if self.done {
            return Ok(Page::default());
        }
        let script = self.target.script("import")?;
        let mut extra = Map::new();
        extra.insert(
            "import".into(),
            json!({ "type": self.kind, "page_size": self.page_size, "watermark": self.watermark, "cursor": self.cursor }),
        );
        let input = self.target.input(&self.loaded, "import", extra);
        let settings = self.target.settings();
        let mut entries = Vec::new();
        let mut control = Map::new();
        runner::run(script, &input, |number, line| {
            let object = parse_line("import", number, line)?;
            if let Some(e) = call_error("import", &object) {
                return Err(e);
            }
            if object.contains_key("anchor") {
                match protocol::import_entry(
                    &object,
                    &self.loaded.types,
                    &self.loaded.schema.name,
                    &settings.anchor,
                    &settings.partition,
                ) {
                    Ok(entry) => entries.push(entry),
                    // A bad object is skipped with its error; the run goes on.
                    Err(message) => entries.push(v1::ImportEntry {
                        modification_type: v1::ObjectModificationType::Add as i32,
                        entry: None,
                        error: Some(v1::Error {
                            kind: ErrorKind::InvalidAttributeValue as i32,
                            message: format!("import script line {number}: {message}"),
                            attribute: String::new(),
                        }),
                    }),
                }
            } else {
                control = object;
            }
            Ok(())
        })
        .await?;
        let more = control.get("more").and_then(Json::as_bool).unwrap_or(false);
        let new_watermark = control.get("watermark").and_then(|w| match w {
            Json::String(s) => Some(s.clone()),
            Json::Null => None,
            other => Some(other.to_string()),
        });
        self.cursor = control.get("cursor").cloned().unwrap_or(Json::Null);
        self.done = !more;
        if new_watermark.is_some() {
            self.final_watermark = new_watermark.clone();
        }
        Ok(Page {
            entries,
            more,
            watermark: if more { vec![] } else { new_watermark.unwrap_or_default().into_bytes() },
        })
    }

    fn final_watermark(&self) -> Vec<u8> {
        if self.done { self.final_watermark.clone().unwrap_or_default().into_bytes() } else { vec![] }
    }
}

/// One result line of the export script as the protocol's result.
fn export_result(settings: &Settings, change: &v1::CsEntryChange, object: &Map<String, Json>) -> Outcome {
    if let Some(error) = object.get("error").filter(|e| !e.is_null()) {
        let (kind, message) = protocol::error_of(error);
        return Outcome::Failed(ConnectorError::new(kind, message));
    }
    let anchor = match object.get("anchor") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => change.anchors.first().and_then(|a| a.value.as_ref()).and_then(v1::Value::as_text),
    };
    match anchor {
        Some(anchor) => Outcome::applied(vec![v1::Anchor {
            name: settings.anchor.clone(),
            value: Some(v1::Value::string(anchor)),
        }]),
        None => Outcome::Failed(ConnectorError::new(
            ErrorKind::Internal,
            "the export script's result for an add has no \"anchor\"",
        )),
    }
}
