//! The `ecma.v1` service of the shell connector: each operation runs its script
//! (docs/shell-connector.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ecma_connector_sdk::{Sessions, error_status, negotiate};
use ecma_proto::v1::{self, AttributeType, ConfigParameters, ErrorKind, connector_server::Connector};
use serde_json::{Map, Value as Json, json};
use tonic::{Request, Response, Status};

use crate::protocol::{self, call_error, parse_line};
use crate::runner::{self, Script, ScriptError};
use crate::settings::Settings;

const DEFAULT_PAGE_SIZE: u32 = 500;
const MAX_PAGE_SIZE: u32 = 10_000;

fn status(e: ScriptError) -> Status {
    error_status(e.kind, e.message)
}

/// A configuration with what its schema script said.
struct State {
    settings: Settings,
    schema: v1::SchemaType,
    /// Attribute name → (type, multi-valued).
    types: BTreeMap<String, (AttributeType, bool)>,
}

impl State {
    fn schema_json(&self) -> Json {
        let attributes: Vec<Json> = self
            .schema
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
        json!({ "object_type": self.schema.name, "anchor": self.settings.anchor, "attributes": attributes })
    }

    fn script(&self, operation: &str) -> Result<&Script, Status> {
        self.settings.scripts.get(operation).ok_or_else(|| {
            error_status(ErrorKind::Unsupported, format!("no {operation}_script is configured"))
        })
    }

    /// The input document of `operation`: the envelope, the schema, and `extra`.
    fn input(&self, operation: &str, extra: Map<String, Json>) -> Json {
        let mut document = self.settings.envelope(operation);
        document.insert("schema".into(), self.schema_json());
        document.extend(extra);
        Json::Object(document)
    }
}

fn type_name(kind: AttributeType) -> &'static str {
    match kind {
        AttributeType::Integer => "integer",
        AttributeType::Boolean => "boolean",
        AttributeType::Binary => "binary",
        AttributeType::Reference => "reference",
        _ => "string",
    }
}

fn type_by_name(name: &str) -> Option<AttributeType> {
    Some(match name {
        "string" => AttributeType::String,
        "integer" => AttributeType::Integer,
        "boolean" => AttributeType::Boolean,
        "binary" => AttributeType::Binary,
        "reference" => AttributeType::Reference,
        _ => return None,
    })
}

#[derive(Clone)]
struct ImportSession {
    state: Arc<State>,
    kind: &'static str,
    watermark: Option<String>,
    cursor: Json,
    page_size: u32,
    done: bool,
    final_watermark: Option<String>,
}

#[derive(Default)]
pub struct ShellConnector {
    state: tokio::sync::Mutex<Option<(ConfigParameters, Arc<State>)>>,
    imports: Sessions<ImportSession>,
    exports: Sessions<Arc<State>>,
}

impl ShellConnector {
    /// The state of `config`: read once (running the schema script) and kept while the
    /// configuration stays the same.
    async fn state(&self, config: &Option<ConfigParameters>) -> Result<Arc<State>, Status> {
        let key = config.clone().unwrap_or_default();
        let mut slot = self.state.lock().await;
        if let Some((cached, state)) = slot.as_ref()
            && *cached == key
        {
            return Ok(state.clone());
        }
        let settings = Settings::read(config)?;
        if let Some(problem) = settings.problems().into_iter().next() {
            // The message alone, outside ValidateConfiguration: it names its parameter itself.
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!("{}: {}", problem.parameter, problem.message),
            ));
        }
        let schema = match settings.scripts.get("schema") {
            Some(script) => schema_from_script(&settings, script).await?,
            None => schema_from_settings(&settings),
        };
        let types = schema
            .attributes
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    (AttributeType::try_from(a.r#type).unwrap_or(AttributeType::String), a.multi_valued),
                )
            })
            .collect();
        let state = Arc::new(State { settings, schema, types });
        *slot = Some((key, state.clone()));
        Ok(state)
    }
}

fn schema_from_settings(settings: &Settings) -> v1::SchemaType {
    let mut attributes = vec![v1::SchemaAttribute {
        name: settings.anchor.clone(),
        r#type: AttributeType::String as i32,
        multi_valued: false,
        operation: v1::AttributeOperation::ImportOnly as i32,
        required: false,
    }];
    attributes.extend(settings.attributes.iter().filter(|a| a.name != settings.anchor).map(|a| {
        v1::SchemaAttribute {
            name: a.name.clone(),
            r#type: a.kind as i32,
            multi_valued: a.multi,
            operation: v1::AttributeOperation::ImportExport as i32,
            required: false,
        }
    }));
    v1::SchemaType {
        name: settings.object_type.clone(),
        attributes,
        anchor_attributes: vec![settings.anchor.clone()],
        locked: false,
    }
}

/// Runs the schema script: one line, `{"object_type": ..., "anchor": ..., "attributes":
/// [{"name", "type", "multi_valued", "required"}]}`.
async fn schema_from_script(settings: &Settings, script: &Script) -> Result<v1::SchemaType, Status> {
    let mut found = None;
    runner::run(script, &Json::Object(settings.envelope("schema")), |number, line| {
        let object = parse_line("schema", number, line)?;
        if let Some(e) = call_error("schema", &object) {
            return Err(e);
        }
        found = Some(object);
        Ok(())
    })
    .await
    .map_err(status)?;
    let object =
        found.ok_or_else(|| error_status(ErrorKind::Internal, "the schema script printed nothing"))?;
    let bad = |what: String| error_status(ErrorKind::Internal, format!("the schema script's answer: {what}"));
    let anchor = object.get("anchor").and_then(Json::as_str).unwrap_or(&settings.anchor).to_string();
    let mut attributes = Vec::new();
    for a in object
        .get("attributes")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("no \"attributes\" array".into()))?
    {
        let name = a.get("name").and_then(Json::as_str).ok_or_else(|| bad(format!("{a} has no name")))?;
        let type_text = a.get("type").and_then(Json::as_str).unwrap_or("string");
        let kind = type_by_name(type_text)
            .ok_or_else(|| bad(format!("type {type_text:?} of {name:?} is unknown")))?;
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

fn problem(kind: ErrorKind, parameter: &str, message: String) -> v1::ConfigProblem {
    v1::ConfigProblem { parameter: parameter.to_string(), message, kind: kind as i32 }
}

#[tonic::async_trait]
impl Connector for ShellConnector {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: negotiate(request.get_ref())?,
            connector_name: env!("CARGO_PKG_NAME").into(),
            connector_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Some(v1::Capabilities {
                distinguished_name_style: v1::DistinguishedNameStyle::None as i32,
                export_type: v1::ExportType::AttributeReplace as i32,
                delta_import: true,
                supports_import: true,
                supports_export: true,
                supports_password: true,
                // Scripts look nothing up: a write whose outcome is unknown waits for an import.
                supports_lookup: false,
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
        Ok(Response::new(v1::GetConfigParametersResponse { parameters: crate::settings::definitions() }))
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        let config = request.into_inner().config;
        let missing = ecma_connector_sdk::missing_required(&crate::settings::definitions(), &config);
        if !missing.is_empty() {
            return Ok(Response::new(v1::ValidateConfigurationResponse { problems: missing }));
        }
        let settings = match Settings::read(&config) {
            Ok(settings) => settings,
            Err(e) => {
                let kind = ecma_proto::error_kind_of(&e).unwrap_or(ErrorKind::InvalidConfiguration);
                return Ok(Response::new(v1::ValidateConfigurationResponse {
                    problems: vec![problem(kind, "", e.message().to_string())],
                }));
            }
        };
        let mut problems = settings.problems();
        if problems.is_empty()
            && let Some(script) = settings.scripts.get("validate")
        {
            // The validate script prints `{"problem": "...", "parameter": "..."}` lines; a
            // failure of its own (exit code, timeout) is one problem more.
            let mut found = Vec::new();
            let ran = runner::run(script, &Json::Object(settings.envelope("validate")), |number, line| {
                let object = parse_line("validate", number, line)?;
                if let Some(message) = object.get("problem").and_then(Json::as_str) {
                    let parameter = object.get("parameter").and_then(Json::as_str).unwrap_or("");
                    let kind = object
                        .get("kind")
                        .and_then(Json::as_str)
                        .map_or(ErrorKind::ConnectionFailed, protocol::kind_by_name);
                    found.push(problem(kind, parameter, message.to_string()));
                }
                Ok(())
            })
            .await;
            problems.extend(found);
            if let Err(e) = ran {
                let kind = if e.kind == ErrorKind::Internal { ErrorKind::ConnectionFailed } else { e.kind };
                problems.push(problem(kind, "validate_script", e.message));
            }
        }
        if problems.is_empty()
            && let Err(e) = self.state(&config).await
        {
            let kind = ecma_proto::error_kind_of(&e).unwrap_or(ErrorKind::Internal);
            problems.push(problem(kind, "schema_script", e.message().to_string()));
        }
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let state = self.state(&request.into_inner().config).await?;
        Ok(Response::new(v1::GetSchemaResponse {
            schema: Some(v1::Schema { types: vec![state.schema.clone()] }),
        }))
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        let settings = Settings::read(&request.into_inner().config)?;
        Ok(Response::new(v1::GetPartitionsResponse {
            partitions: vec![v1::Partition { id: settings.partition.clone(), name: settings.partition }],
        }))
    }

    async fn get_hierarchy(
        &self,
        _: Request<v1::GetHierarchyRequest>,
    ) -> Result<Response<v1::GetHierarchyResponse>, Status> {
        Ok(Response::new(v1::GetHierarchyResponse { nodes: vec![] }))
    }

    async fn open_import_connection(
        &self,
        request: Request<v1::OpenImportConnectionRequest>,
    ) -> Result<Response<v1::OpenImportConnectionResponse>, Status> {
        let request = request.into_inner();
        let state = self.state(&request.config).await?;
        state.script("import")?;
        let delta = request.import_type == v1::ImportType::Delta as i32;
        let watermark = String::from_utf8(request.watermark).ok().filter(|w| !w.is_empty());
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let session_id = self.imports.open(ImportSession {
            state,
            kind: if delta { "delta" } else { "full" },
            watermark: if delta { watermark } else { None },
            cursor: Json::Null,
            page_size,
            done: false,
            final_watermark: None,
        });
        Ok(Response::new(v1::OpenImportConnectionResponse { session_id }))
    }

    /// One page: one run of the import script, which prints an object per line and, last, a
    /// control line `{"more": bool, "cursor": ..., "watermark": "..."}`.
    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        let session_id = request.into_inner().session_id;
        let ImportSession { state, kind, watermark, cursor, page_size, done, .. } =
            self.imports.get(&session_id)?;
        if done {
            return Ok(Response::new(v1::GetImportEntriesResponse::default()));
        }
        let script = state.script("import")?;
        let mut extra = Map::new();
        extra.insert(
            "import".into(),
            json!({ "type": kind, "page_size": page_size, "watermark": watermark, "cursor": cursor }),
        );
        let input = state.input("import", extra);
        let mut entries = Vec::new();
        let mut control = Map::new();
        let anchor = state.settings.anchor.clone();
        runner::run(script, &input, |number, line| {
            let object = parse_line("import", number, line)?;
            if let Some(e) = call_error("import", &object) {
                return Err(e);
            }
            if object.contains_key("anchor") {
                match protocol::import_entry(
                    &object,
                    &state.types,
                    &state.schema.name,
                    &anchor,
                    &state.settings.partition,
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
        .await
        .map_err(status)?;
        let more = control.get("more").and_then(Json::as_bool).unwrap_or(false);
        let new_watermark = control.get("watermark").and_then(|w| match w {
            Json::String(s) => Some(s.clone()),
            Json::Null => None,
            other => Some(other.to_string()),
        });
        self.imports.update(&session_id, |s| {
            s.cursor = control.get("cursor").cloned().unwrap_or(Json::Null);
            s.done = !more;
            if new_watermark.is_some() {
                s.final_watermark = new_watermark.clone();
            }
        });
        Ok(Response::new(v1::GetImportEntriesResponse {
            entries,
            more_to_import: more,
            watermark: if more { vec![] } else { new_watermark.unwrap_or_default().into_bytes() },
        }))
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        let session = self.imports.close(&request.into_inner().session_id);
        let watermark = session.filter(|s| s.done).and_then(|s| s.final_watermark).unwrap_or_default();
        Ok(Response::new(v1::CloseImportConnectionResponse { watermark: watermark.into_bytes() }))
    }

    async fn open_export_connection(
        &self,
        request: Request<v1::OpenExportConnectionRequest>,
    ) -> Result<Response<v1::OpenExportConnectionResponse>, Status> {
        let request = request.into_inner();
        let state = self.state(&request.config).await?;
        let session_id = self.exports.open(state);
        Ok(Response::new(v1::OpenExportConnectionResponse { session_id }))
    }

    /// One run of the export script for the batch: it prints one result line per entry,
    /// `{"identifier": ..., "anchor": ..., "error": {"kind": ..., "message": ...}}`.
    async fn put_export_entries(
        &self,
        request: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        let request = request.into_inner();
        let state = self.exports.get(&request.session_id)?;
        let script = state.script("export")?;
        let mut extra = Map::new();
        extra.insert(
            "entries".into(),
            Json::Array(request.entries.iter().map(protocol::export_entry).collect()),
        );
        let input = state.input("export", extra);
        let expected: HashMap<&str, &v1::CsEntryChange> =
            request.entries.iter().map(|e| (e.identifier.as_str(), e)).collect();
        let mut results: HashMap<String, v1::CsEntryChangeResult> = HashMap::new();
        let ran = runner::run(script, &input, |number, line| {
            let object = parse_line("export", number, line)?;
            if let Some(e) = call_error("export", &object) {
                return Err(e);
            }
            let identifier = object.get("identifier").and_then(Json::as_str).unwrap_or_default();
            let Some(change) = expected.get(identifier) else {
                return Err(ScriptError::new(
                    ErrorKind::Internal,
                    format!("the export script's line {number} names identifier {identifier:?}, which is not in the batch"),
                ));
            };
            results.insert(identifier.to_string(), export_result(&state, change, &object));
            Ok(())
        })
        .await;
        // Entries the script gave no result for failed: with the script's own failure when it
        // failed, else as missing.
        let missing = match &ran {
            Ok(()) => (ErrorKind::Internal, "the export script printed no result for this entry".to_string()),
            Err(e) => (e.kind, e.message.clone()),
        };
        if let Err(e) = &ran {
            tracing::warn!(kind = ?e.kind, "{}", e.message);
        }
        let results = request
            .entries
            .iter()
            .map(|change| {
                results.remove(&change.identifier).unwrap_or_else(|| v1::CsEntryChangeResult {
                    identifier: change.identifier.clone(),
                    error_kind: missing.0 as i32,
                    error_detail: missing.1.clone(),
                    ..Default::default()
                })
            })
            .collect();
        Ok(Response::new(v1::PutExportEntriesResponse { results }))
    }

    async fn close_export_connection(
        &self,
        request: Request<v1::CloseExportConnectionRequest>,
    ) -> Result<Response<v1::CloseExportConnectionResponse>, Status> {
        self.exports.close(&request.into_inner().session_id);
        Ok(Response::new(v1::CloseExportConnectionResponse {}))
    }

    async fn set_password(
        &self,
        request: Request<v1::SetPasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        let request = request.into_inner();
        let mut extra = Map::new();
        extra.insert("password_operation".into(), json!("set"));
        extra.insert("new_password".into(), json!(request.new_password));
        extra.insert("unlock_account".into(), json!(request.unlock_account));
        extra.insert("force_change_at_logon".into(), json!(request.force_change_at_logon));
        self.password(&request.config, &request.anchors, &request.dn, extra).await
    }

    async fn change_password(
        &self,
        request: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        let request = request.into_inner();
        let mut extra = Map::new();
        extra.insert("password_operation".into(), json!("change"));
        extra.insert("old_password".into(), json!(request.old_password));
        extra.insert("new_password".into(), json!(request.new_password));
        self.password(&request.config, &request.anchors, &request.dn, extra).await
    }
}

impl ShellConnector {
    /// Runs the password script; the password is in its stdin document only.
    async fn password(
        &self,
        config: &Option<ConfigParameters>,
        anchors: &[v1::Anchor],
        dn: &str,
        mut extra: Map<String, Json>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        let state = self.state(config).await?;
        let Some(script) = state.settings.scripts.get("password") else {
            // As with a connector that has no way to set passwords: the object is written, the
            // password is not kept anywhere.
            tracing::info!("a password was sent, but no password_script is configured: it is not kept");
            return Ok(Response::new(v1::PasswordResponse { error: None }));
        };
        let anchor =
            anchors.first().and_then(|a| a.value.as_ref()).map(protocol::to_json).unwrap_or(Json::Null);
        extra.insert("anchor".into(), anchor);
        extra.insert("dn".into(), json!(dn));
        let input = state.input("password", extra);
        let mut error = None;
        let ran = runner::run(script, &input, |number, line| {
            let object = parse_line("password", number, line)?;
            if let Some(e) = object.get("error") {
                let (kind, message) = protocol::error_of(e);
                error = Some(v1::Error { kind: kind as i32, message, attribute: String::new() });
            }
            Ok(())
        })
        .await;
        if let Err(e) = ran {
            error = Some(v1::Error { kind: e.kind as i32, message: e.message, attribute: String::new() });
        }
        Ok(Response::new(v1::PasswordResponse { error }))
    }
}

/// One result line of the export script as the protocol's result.
fn export_result(
    state: &State,
    change: &v1::CsEntryChange,
    object: &Map<String, Json>,
) -> v1::CsEntryChangeResult {
    let identifier = change.identifier.clone();
    if let Some(error) = object.get("error").filter(|e| !e.is_null()) {
        let (kind, message) = protocol::error_of(error);
        return v1::CsEntryChangeResult {
            identifier,
            error_kind: kind as i32,
            error_detail: message,
            ..Default::default()
        };
    }
    let anchor = match object.get("anchor") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => change.anchors.first().and_then(|a| a.value.as_ref()).and_then(v1::Value::as_text),
    };
    let Some(anchor) = anchor else {
        return v1::CsEntryChangeResult {
            identifier,
            error_kind: ErrorKind::Internal as i32,
            error_detail: "the export script's result for an add has no \"anchor\"".into(),
            ..Default::default()
        };
    };
    v1::CsEntryChangeResult {
        identifier,
        error_kind: ErrorKind::None as i32,
        anchors: vec![v1::Anchor {
            name: state.settings.anchor.clone(),
            value: Some(v1::Value::string(anchor)),
        }],
        ..Default::default()
    }
}
