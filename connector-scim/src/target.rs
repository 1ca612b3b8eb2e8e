//! The connector on the SDK's trait: one resource type of a downstream SCIM 2.0 service,
//! discovered when the target opens; RFC-strict requests whatever dialect the supervisor's own
//! client spoke.

use std::collections::BTreeSet;
use std::sync::Arc;

use connector_web::{Answer, Failure, Http, HttpSettings, Method, Request, bad, header, number};
use ecma_connector_sdk::{
    Capabilities, ConfigExt, ConnectorError, ConnectorV2, ExportScope, ImportRequest, ImportRun, Outcome,
    Page, Parameter, PasswordChange, Target,
};
use ecma_proto::v1::{
    self, AttributeModificationType as Mod, AttributeType, ConfigParameterType as T, ErrorKind,
};
use futures_util::StreamExt;
use reqwest::header::HeaderValue;
use serde_json::{Value as Json, json};
use url::Url;

use crate::discovery::{Attribute, Features, Resource};
use crate::resource::{Path, filter_string};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SCIM_JSON: &str = "application/scim+json";

/// The parameters this connector declares.
pub fn definitions() -> Vec<v1::ConfigParameterDefinition> {
    let p = |name: &str, kind: T, help: &str| Parameter::new(name, kind, help);
    let mut out = connector_web::definitions();
    out.extend([
        p("resource_type", T::String, "The downstream resource type: User or Group (its name or endpoint)")
            .required(),
        p("object_type", T::String, "Object type name (default: the resource type's name in lower case)"),
        p("partition", T::String, "The one partition's name").default("default"),
        p("update_method", T::String, "auto (PATCH where the service supports it, else PUT), patch or put")
            .default("auto"),
        p("page_size", T::Integer, "Resources per page of an import (count)").default("100"),
        p("concurrency", T::Integer, "Requests in flight at once within one export batch").default("8"),
    ]);
    out.into_iter().map(Parameter::definition).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateMethod {
    Patch,
    Put,
}

/// Settings read from one configuration, and what discovery found.
#[derive(Debug)]
struct Settings {
    object_type: String,
    partition: String,
    update: UpdateMethod,
    page_size: u64,
    concurrency: usize,
    features: Features,
    resource: Resource,
}

pub struct ScimConnector;

#[tonic::async_trait]
impl ConnectorV2 for ScimConnector {
    type Target = ScimTarget;

    fn name(&self) -> &'static str {
        "connector-scim"
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
            .batches(50, 1000)
            .build()
    }

    fn parameters(&self) -> Vec<v1::ConfigParameterDefinition> {
        definitions()
    }

    async fn open(&self, config: &v1::ConfigParameters) -> Result<ScimTarget, ConnectorError> {
        let declared = definitions();
        let given = Some(config.clone());
        let config = &ecma_connector_sdk::Settings::new(&declared, &given);
        let connection = HttpSettings {
            user_agent: concat!("connector-scim/", env!("CARGO_PKG_VERSION")).into(),
            ..HttpSettings::read(config)?
        };
        let http = Http::new(connection)?;
        let update = match config.text("update_method") {
            "auto" | "patch" | "put" => config.text("update_method").to_string(),
            other => return Err(bad("update_method", format!("{other:?} is not auto, patch or put"))),
        };
        // Discovery: what the service supports, and the resource type's schema.
        let features = Features::read(&get_json(&http, "/ServiceProviderConfig").await?);
        let resource_types = list_all(&http, "/ResourceTypes").await?;
        let schemas = list_all(&http, "/Schemas").await?;
        let resource = crate::discovery::resource(config.text("resource_type"), &resource_types, &schemas)
            .map_err(|e| bad("resource_type", e))?;
        let update = match update.as_str() {
            "put" => UpdateMethod::Put,
            "patch" if !features.patch => {
                return Err(bad(
                    "update_method",
                    "patch: the service's ServiceProviderConfig says it does not support PATCH",
                ));
            }
            _ if features.patch => UpdateMethod::Patch,
            _ => UpdateMethod::Put,
        };
        let object_type = match config.get("object_type") {
            Some(t) => t.to_string(),
            None => resource.endpoint.trim_start_matches('/').trim_end_matches('s').to_ascii_lowercase(),
        };
        let settings = Settings {
            object_type,
            partition: config.text("partition").to_string(),
            update,
            page_size: number(config, "page_size")?.clamp(1, 10_000),
            concurrency: number(config, "concurrency")?.clamp(1, 256) as usize,
            features,
            resource,
        };
        tracing::info!(
            endpoint = %settings.resource.endpoint,
            attributes = settings.resource.attributes.len(),
            patch = settings.features.patch,
            filter = settings.features.filter,
            etag = settings.features.etag,
            cursor = settings.features.cursor,
            "discovered the downstream service"
        );
        Ok(ScimTarget { http: Arc::new(http), settings: Arc::new(settings) })
    }
}

/// One downstream service's resource type.
pub struct ScimTarget {
    http: Arc<Http>,
    settings: Arc<Settings>,
}

/// The error a SCIM error answer means (RFC 7644 3.12): its status, with `scimType` and
/// `detail` in the message.
fn refusal(operation: &str, answer: &Answer) -> ConnectorError {
    let body: Json = serde_json::from_str(&answer.body).unwrap_or(Json::Null);
    let scim_type = body.get("scimType").and_then(Json::as_str).unwrap_or("");
    let detail = connector_web::json_message(&answer.body);
    let status = answer.status.as_u16();
    let kind = match (status, scim_type) {
        (409, _) | (400, "uniqueness") => ErrorKind::AlreadyExists,
        (404 | 410, _) => ErrorKind::NoSuchObject,
        (401 | 403, _) => ErrorKind::PermissionDenied,
        (412, _) => ErrorKind::ConstraintViolation,
        // A gateway that lost the service (502, 504) is passing too (to a write, the outcome
        // is unknown before it gets here).
        (408 | 429 | 502 | 503 | 504, _) => ErrorKind::Retryable,
        (501, _) => ErrorKind::Unsupported,
        (400..=499, _) => ErrorKind::InvalidAttributeValue,
        _ => ErrorKind::Internal,
    };
    let scim_type = if scim_type.is_empty() { String::new() } else { format!(" ({scim_type})") };
    let mut message = format!("{operation}: the service answered {status}{scim_type}: {detail}");
    if let Some(wait) = connector_web::retry_after(&answer.headers).filter(|_| matches!(status, 429 | 503)) {
        message.push_str(&format!(" (Retry-After {}s)", wait.as_secs()));
    }
    ConnectorError::new(kind, message)
}

/// A value as JSON, typed.
fn json_of(value: &v1::Value) -> Json {
    use v1::value::Kind;
    match &value.kind {
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::BooleanValue(b)) => json!(b),
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => json!(s),
        Some(Kind::BinaryValue(b)) => {
            use base64::Engine;
            json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
        None => Json::Null,
    }
}

/// A JSON value as a value of `kind`.
fn typed(value: &Json, kind: AttributeType) -> Option<v1::Value> {
    let text = || match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(match kind {
        AttributeType::Integer => v1::Value::integer(value.as_i64().or_else(|| text().parse().ok())?),
        AttributeType::Boolean => match value {
            Json::Bool(b) => v1::Value::boolean(*b),
            _ => v1::Value::boolean(text().eq_ignore_ascii_case("true")),
        },
        AttributeType::Reference => v1::Value { kind: Some(v1::value::Kind::ReferenceValue(text())) },
        _ => v1::Value::string(text()),
    })
}

impl ScimTarget {
    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.http.url(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// The URL of one resource: its id is one percent-encoded path segment.
    fn resource_url(&self, id: &str) -> Result<Url, ConnectorError> {
        if id.is_empty() || id == "." || id == ".." {
            return Err(ConnectorError::new(ErrorKind::NoSuchObject, format!("{id:?} is not a resource id")));
        }
        let mut url = self.url(&self.settings.resource.endpoint, &[]);
        url.path_segments_mut()
            .map_err(|_| ConnectorError::config("base_url", "cannot be a base URL"))?
            .push(id);
        Ok(url)
    }

    fn request(&self, operation: &'static str, method: Method, url: Url, body: Option<Json>) -> Request {
        request(operation, method, url, body)
    }

    async fn call(&self, request: Request) -> Result<Answer, Failure> {
        call(&self.http, request).await
    }

    fn attribute(&self, name: &str) -> Option<(&Attribute, Path)> {
        let a = self.settings.resource.attribute(name)?;
        Some((a, Path::parse(&a.name)?))
    }

    /// One resource, with its ETag; `None` when the service has no such resource.
    async fn get(&self, id: &str) -> Result<Option<(Json, Option<String>)>, ConnectorError> {
        let request = self.request("get", Method::GET, self.resource_url(id)?, None);
        match self.call(request).await {
            Ok(answer) => {
                let etag = answer.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = parse("get", &answer)?;
                let etag =
                    etag.or_else(|| body.pointer("/meta/version").and_then(Json::as_str).map(str::to_string));
                Ok(Some((body, etag)))
            }
            Err(Failure::NotDone(e)) if e.kind == ErrorKind::NoSuchObject => Ok(None),
            Err(f) => Err(f.into_error()),
        }
    }

    /// A resource as an entry: its id as the anchor, each attribute at its path.
    fn entry_of(&self, resource: &Json) -> Option<v1::Entry> {
        let id = resource.get("id")?.as_str()?.to_string();
        let mut attributes = Vec::new();
        for a in &self.settings.resource.attributes {
            let Some(path) = Path::parse(&a.name) else { continue };
            let values: Vec<v1::Value> =
                path.read(resource).iter().filter_map(|v| typed(v, a.kind)).collect();
            if !values.is_empty() {
                attributes.push(v1::AttributeValues { name: a.name.clone(), values });
            }
        }
        Some(v1::Entry {
            object_type: self.settings.object_type.clone(),
            anchors: vec![anchor(id)],
            dn: String::new(),
            attributes,
            partition_id: self.settings.partition.clone(),
        })
    }

    async fn export_one(&self, entry: &v1::CsEntryChange) -> Outcome {
        let id = entry.anchors.first().and_then(|a| a.value.as_ref()).and_then(|v| v.as_text());
        let result = match v1::ObjectModificationType::try_from(entry.modification_type) {
            Ok(v1::ObjectModificationType::Add) => self.create(entry).await,
            Ok(v1::ObjectModificationType::Update) | Ok(v1::ObjectModificationType::Replace) => match &id {
                Some(id) => self.update(id, &entry.attribute_changes).await,
                None => {
                    Err(Failure::NotDone(ConnectorError::new(ErrorKind::NoSuchObject, "update: no anchor")))
                }
            },
            Ok(v1::ObjectModificationType::Delete) => match &id {
                Some(id) => self.delete(id).await,
                None => {
                    Err(Failure::NotDone(ConnectorError::new(ErrorKind::NoSuchObject, "delete: no anchor")))
                }
            },
            _ => Err(Failure::NotDone(ConnectorError::unsupported("this modification type is not exported"))),
        };
        Failure::outcome(result, &entry.identifier)
    }

    /// The schemas a resource with these attributes declares: the core schema, and each
    /// extension one of them is in.
    fn schemas_of(&self, resource: &Json) -> Json {
        let r = &self.settings.resource;
        let mut schemas = vec![json!(r.schema)];
        for ext in &r.extensions {
            if resource.get(ext).is_some() {
                schemas.push(json!(ext));
            }
        }
        Json::Array(schemas)
    }

    async fn create(&self, entry: &v1::CsEntryChange) -> Result<Outcome, Failure> {
        let mut resource = json!({});
        for change in &entry.attribute_changes {
            let (a, path) = self.known(&change.name)?;
            let values: Vec<Json> = change.value_adds.iter().map(json_of).collect();
            path.write(&mut resource, &values, a.downstream_multi, a.complex);
        }
        resource["schemas"] = self.schemas_of(&resource);
        let url = self.url(&self.settings.resource.endpoint, &[]);
        let answer = self.call(self.request("create", Method::POST, url, Some(resource))).await?;
        // Created: without an id in the answer it cannot be named, and the supervisor looks it
        // up (by userName or displayName) instead of creating it again.
        let id = serde_json::from_str::<Json>(&answer.body)
            .ok()
            .and_then(|b| b.get("id").and_then(Json::as_str).map(str::to_string));
        match id {
            Some(id) => Ok(Outcome::applied(vec![anchor(id)])),
            None => {
                Err(Failure::Unknown(format!("create: the service answered {} without an id", answer.status)))
            }
        }
    }

    fn known(&self, name: &str) -> Result<(&Attribute, Path), Failure> {
        self.attribute(name).ok_or_else(|| {
            Failure::NotDone(ConnectorError::new(
                ErrorKind::SchemaViolation,
                format!(
                    "{name:?} is not an attribute of the service's {} resources",
                    self.settings.resource.endpoint
                ),
            ))
        })
    }

    async fn update(&self, id: &str, changes: &[v1::AttributeChange]) -> Result<Outcome, Failure> {
        // An ETag mismatch (someone else wrote in between) is read again and retried.
        for attempt in 0..3 {
            match self.update_once(id, changes).await {
                Err(Failure::NotDone(e)) if e.kind == ErrorKind::ConstraintViolation && attempt < 2 => {
                    tracing::debug!("update of {id}: {}; reading it again", e.detail);
                }
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn update_once(&self, id: &str, changes: &[v1::AttributeChange]) -> Result<Outcome, Failure> {
        let s = &self.settings;
        let filtered =
            changes.iter().any(|c| self.attribute(&c.name).is_some_and(|(_, p)| p.of_type.is_some()));
        // The current resource, where the request needs it: a PUT, a typed value whose
        // existence decides between add and replace, an ETag to send.
        let current = if s.update == UpdateMethod::Put || filtered {
            match self.get(id).await.map_err(Failure::NotDone)? {
                Some(found) => Some(found),
                None => {
                    return Err(Failure::NotDone(ConnectorError::new(
                        ErrorKind::NoSuchObject,
                        format!("update: the service has no resource {id}"),
                    )));
                }
            }
        } else {
            None
        };
        let url = self.resource_url(id).map_err(Failure::NotDone)?;
        let (current, etag) = match current {
            Some((resource, etag)) => (Some(resource), etag),
            None => (None, None),
        };
        let mut request = if let (UpdateMethod::Put, Some(mut resource)) = (s.update, current.clone()) {
            for change in changes {
                let (a, path) = self.known(&change.name)?;
                let mut values: Vec<Json> = path.read(&resource);
                match Mod::try_from(change.modification_type) {
                    Ok(Mod::Add) | Ok(Mod::Replace) => {
                        values = change.value_adds.iter().map(json_of).collect()
                    }
                    Ok(Mod::Delete) => values.clear(),
                    Ok(Mod::Update) => {
                        let deletes: Vec<Json> = change.value_deletes.iter().map(json_of).collect();
                        values.retain(|v| !deletes.contains(v));
                        for v in change.value_adds.iter().map(json_of) {
                            if !values.contains(&v) {
                                values.push(v);
                            }
                        }
                    }
                    _ => {}
                }
                path.write(&mut resource, &values, a.downstream_multi, a.complex);
            }
            if let Some(o) = resource.as_object_mut() {
                o.remove("meta");
            }
            resource["schemas"] = self.schemas_of(&resource);
            self.request("update", Method::PUT, url, Some(resource))
        } else {
            let mut operations = Vec::new();
            for change in changes {
                let (a, path) = self.known(&change.name)?;
                operations.extend(patch_operations(a, &path, change, current.as_ref()));
            }
            if operations.is_empty() {
                return Ok(Outcome::applied(vec![anchor(id.to_string())]));
            }
            self.request(
                "update",
                Method::PATCH,
                url,
                Some(json!({ "schemas": [PATCH_OP], "Operations": operations })),
            )
        };
        if s.features.etag
            && let Some(etag) = &etag
            && let Ok(value) = HeaderValue::from_str(etag)
        {
            request.headers.push((header::IF_MATCH, value));
        }
        self.call(request).await?;
        Ok(Outcome::applied(vec![anchor(id.to_string())]))
    }

    async fn delete(&self, id: &str) -> Result<Outcome, Failure> {
        let url = self.resource_url(id).map_err(Failure::NotDone)?;
        self.call(self.request("delete", Method::DELETE, url, None)).await?;
        Ok(Outcome::applied(vec![]))
    }

    /// Resources whose attribute `name` has `value`: by a filter where the service filters
    /// (then compared exactly here too), else by reading the whole list.
    async fn search(&self, name: &str, value: &v1::Value) -> Result<Vec<v1::Entry>, ConnectorError> {
        let wanted = json_of(value);
        let path = if name == "id" {
            None
        } else {
            Some(self.attribute(name).map(|(_, p)| p).ok_or_else(|| {
                ConnectorError::new(ErrorKind::SchemaViolation, format!("{name:?} is not an attribute"))
            })?)
        };
        let matches = |resource: &Json| match &path {
            None => resource.get("id") == Some(&wanted),
            Some(p) => p.read(resource).iter().any(|v| {
                v == &wanted
                    || (v.as_str().zip(wanted.as_str()).is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                        && name.eq_ignore_ascii_case("userName"))
            }),
        };
        let filter = match (&path, self.settings.features.filter, wanted.as_str()) {
            (Some(p), true, Some(text)) if p.of_type.is_none() => {
                Some(format!("{} eq {}", p.text(), filter_string(text)))
            }
            _ => None,
        };
        let mut run = self.run(filter, None);
        let mut out = Vec::new();
        loop {
            let page = run.fetch().await?;
            out.extend(page.resources.iter().filter(|r| matches(r)).filter_map(|r| self.entry_of(r)));
            if !page.more {
                return Ok(out);
            }
        }
    }

    fn run(&self, filter: Option<String>, since: Option<String>) -> ListRun {
        ListRun {
            target: ScimTarget { http: self.http.clone(), settings: self.settings.clone() },
            filter,
            since: since.clone(),
            latest: since.unwrap_or_default(),
            start: 1,
            cursor: self.settings.features.cursor.then(String::new),
            done: false,
            seen: BTreeSet::new(),
        }
    }
}

/// A request with the SCIM media types.
fn request(operation: &'static str, method: Method, url: Url, body: Option<Json>) -> Request {
    Request {
        operation,
        method,
        url,
        headers: vec![(header::ACCEPT, HeaderValue::from_static("application/scim+json, application/json"))],
        body: body.map(|b| (SCIM_JSON.to_string(), b.to_string())),
    }
}

/// Sends `request`; an error answer is the error its status and `scimType` mean.
async fn call(http: &Http, request: Request) -> Result<Answer, Failure> {
    let operation = request.operation;
    http.call(&request, &[], |answer| refusal(operation, answer)).await
}

fn parse(operation: &str, answer: &Answer) -> Result<Json, ConnectorError> {
    serde_json::from_str(&answer.body).map_err(|e| {
        ConnectorError::new(ErrorKind::Internal, format!("{operation}: the answer is not JSON ({e})"))
    })
}

/// A discovery endpoint's answer.
async fn get_json(http: &Http, path: &str) -> Result<Json, ConnectorError> {
    let answer = call(http, request("discovery", Method::GET, http.url(path), None))
        .await
        .map_err(Failure::into_error)?;
    parse("discovery", &answer)
}

/// The resources of a discovery endpoint (a list response, or a plain array).
async fn list_all(http: &Http, path: &str) -> Result<Vec<Json>, ConnectorError> {
    match get_json(http, path).await? {
        Json::Array(items) => Ok(items),
        other => Ok(other.get("Resources").and_then(Json::as_array).cloned().unwrap_or_default()),
    }
}

fn anchor(id: String) -> v1::Anchor {
    v1::Anchor { name: "id".into(), value: Some(v1::Value::string(id)) }
}

/// The RFC 7644 PATCH operations of one attribute change. A typed value (`emails[type eq
/// "work"].value`) that `current` lacks is added as a new element, never "replaced" (a replace
/// whose filter matches nothing is an error); values of a multi-valued attribute are added and
/// removed one by one (`members[value eq "..."]`), never by sending the whole list.
pub fn patch_operations(
    a: &Attribute,
    path: &Path,
    change: &v1::AttributeChange,
    current: Option<&Json>,
) -> Vec<Json> {
    let wrap = |v: &v1::Value| {
        if a.complex && path.sub.is_none() { json!({ "value": json_of(v) }) } else { json_of(v) }
    };
    let adds: Vec<Json> = change.value_adds.iter().map(wrap).collect();
    // A typed element that is there (even without its value, as RFC 7644 leaves one after a
    // removal of `.value`) is replaced, never added a second time.
    let exists = current.is_none_or(|r| path.has_element(r));
    let has_value = current.is_none_or(|r| !path.read(r).is_empty());
    match Mod::try_from(change.modification_type) {
        Ok(Mod::Update) if a.downstream_multi => {
            let mut ops = Vec::new();
            if !adds.is_empty() {
                ops.push(json!({"op": "add", "path": path.text(), "value": adds}));
            }
            for v in &change.value_deletes {
                let value = json_of(v);
                let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                ops.push(json!({"op": "remove", "path": format!("{}[value eq {}]", path.text(), filter_string(&text))}));
            }
            ops
        }
        Ok(Mod::Delete) if !has_value => vec![],
        Ok(Mod::Delete) => vec![json!({"op": "remove", "path": path.text()})],
        _ if adds.is_empty() => vec![json!({"op": "remove", "path": path.text()})],
        _ if path.of_type.is_some() && !exists => {
            // A new typed element: `add` to the multi-valued attribute.
            let sub = path.sub.clone().unwrap_or_else(|| "value".into());
            vec![
                json!({"op": "add", "path": path.attribute_path(), "value": [{"type": path.of_type, sub: adds[0]}]}),
            ]
        }
        // The supervisor replaces a multi-valued attribute's values only when it had none:
        // they are added (members one by one too, never as a whole list that drops others).
        _ if a.downstream_multi && path.of_type.is_none() => {
            vec![json!({"op": "add", "path": path.text(), "value": adds})]
        }
        _ => vec![json!({"op": "replace", "path": path.text(), "value": adds[0]})],
    }
}

/// One page of a list.
struct Listed {
    resources: Vec<Json>,
    more: bool,
}

/// An import (or a search's scan) under way: `startIndex`/`count` pages, or cursors (RFC 9865)
/// where the service announces them.
pub struct ListRun {
    target: ScimTarget,
    filter: Option<String>,
    since: Option<String>,
    latest: String,
    start: u64,
    cursor: Option<String>,
    done: bool,
    seen: BTreeSet<String>,
}

impl ListRun {
    async fn fetch(&mut self) -> Result<Listed, ConnectorError> {
        if self.done {
            return Ok(Listed { resources: vec![], more: false });
        }
        let t = &self.target;
        let count = t.settings.page_size;
        let mut query: Vec<(&str, String)> = vec![("count", count.to_string())];
        match &self.cursor {
            Some(cursor) => query.push(("cursor", cursor.clone())),
            None => query.push(("startIndex", self.start.to_string())),
        }
        let filter = match (&self.filter, &self.since) {
            (Some(f), _) => Some(f.clone()),
            // `ge`: an object changed in the watermark's very millisecond is read again rather
            // than missed.
            (None, Some(since)) if !since.is_empty() => {
                Some(format!("meta.lastModified ge {}", filter_string(since)))
            }
            _ => None,
        };
        if let Some(f) = filter {
            query.push(("filter", f));
        }
        let url = t.url(&t.settings.resource.endpoint, &query);
        let answer = t.call(t.request("list", Method::GET, url, None)).await.map_err(Failure::into_error)?;
        let body = parse("list", &answer)?;
        let resources = body.get("Resources").and_then(Json::as_array).cloned().unwrap_or_default();
        let total = body.get("totalResults").and_then(Json::as_u64).unwrap_or(0);
        let received = resources.len() as u64;
        let more = match &mut self.cursor {
            Some(cursor) => match body.get("nextCursor").and_then(Json::as_str) {
                Some(next) if !next.is_empty() && received > 0 => {
                    *cursor = next.to_string();
                    true
                }
                _ => false,
            },
            None => {
                self.start += received;
                received > 0 && self.start <= total
            }
        };
        let mut fresh = Vec::new();
        for r in resources {
            if let Some(modified) = r.pointer("/meta/lastModified").and_then(Json::as_str)
                && modified > self.latest.as_str()
            {
                self.latest = modified.to_string();
            }
            if let Some(id) = r.get("id").and_then(Json::as_str)
                && self.seen.insert(id.to_string())
            {
                fresh.push(r);
            }
        }
        self.done = !more;
        Ok(Listed { resources: fresh, more })
    }
}

#[tonic::async_trait]
impl ImportRun for ListRun {
    async fn next_page(&mut self) -> Result<Page, ConnectorError> {
        let listed = self.fetch().await?;
        let kind = if self.since.is_some() {
            v1::ObjectModificationType::Replace
        } else {
            v1::ObjectModificationType::Add
        };
        let entries = listed
            .resources
            .iter()
            .filter_map(|r| self.target.entry_of(r))
            .map(|entry| v1::ImportEntry { modification_type: kind as i32, entry: Some(entry), error: None })
            .collect();
        let watermark = if listed.more { vec![] } else { self.latest.clone().into_bytes() };
        Ok(Page { entries, more: listed.more, watermark })
    }

    fn final_watermark(&self) -> Vec<u8> {
        self.latest.clone().into_bytes()
    }
}

#[tonic::async_trait]
impl Target for ScimTarget {
    async fn validate(&self) -> Vec<ConnectorError> {
        // Discovery worked when the target opened; one page of one resource shows that the
        // credentials reach the resources too.
        let url = self.url(&self.settings.resource.endpoint, &[("count", "1".into())]);
        match self.call(self.request("list", Method::GET, url, None)).await {
            Ok(_) => vec![],
            Err(f) => {
                let e = f.into_error();
                let parameter = if e.kind == ErrorKind::PermissionDenied { "auth" } else { "base_url" };
                vec![e.on(parameter)]
            }
        }
    }

    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError> {
        Ok(vec![self.settings.resource.schema_type(&self.settings.object_type)])
    }

    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError> {
        let p = &self.settings.partition;
        Ok(vec![v1::Partition { id: p.clone(), name: p.clone() }])
    }

    async fn open_export(&self, scope: &ExportScope) -> Result<(), ConnectorError> {
        scope.expect(&self.settings.object_type, &self.settings.partition)
    }

    async fn export(
        &self,
        _: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        let work: Vec<_> = entries.iter().map(|entry| self.export_one(entry)).collect();
        Ok(futures_util::stream::iter(work).buffered(self.settings.concurrency).collect().await)
    }

    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        if !request.delta {
            return Ok(Box::new(self.run(None, None)));
        }
        if !self.settings.features.filter {
            return Err(ConnectorError::unsupported(
                "delta imports need filters on meta.lastModified, which the service's ServiceProviderConfig does not offer: full imports only",
            ));
        }
        let since = String::from_utf8_lossy(&request.watermark).into_owned();
        Ok(Box::new(self.run(None, Some(since))))
    }

    async fn lookup(
        &self,
        _object_type: &str,
        _partition: &str,
        by: &v1::lookup_entries_request::By,
    ) -> Result<Vec<v1::Entry>, ConnectorError> {
        match by {
            v1::lookup_entries_request::By::Anchor(a) => {
                let Some(id) = a.value.as_ref().and_then(|v| v.as_text()) else { return Ok(vec![]) };
                Ok(self.get(&id).await?.and_then(|(r, _)| self.entry_of(&r)).into_iter().collect())
            }
            v1::lookup_entries_request::By::Attribute(a) => match a.values.first() {
                Some(value) => self.search(&a.name, value).await,
                None => Ok(vec![]),
            },
        }
    }

    async fn password(&self, change: PasswordChange) -> Result<(), ConnectorError> {
        let Some(id) = change.anchors.first().and_then(|a| a.value.as_ref()).and_then(|v| v.as_text()) else {
            return Err(ConnectorError::new(ErrorKind::NoSuchObject, "set password: no anchor"));
        };
        let url = self.resource_url(&id)?;
        let body = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "password", "value": change.new}]});
        let request = self.request("set password", Method::PATCH, url, Some(body));
        Failure::password(self.call(request).await, &change.new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(name: &str, multi: bool, complex: bool) -> (Attribute, Path) {
        let a = Attribute {
            name: name.into(),
            kind: AttributeType::String,
            multi,
            downstream_multi: multi || name.contains('['),
            complex,
        };
        let p = Path::parse(name).unwrap();
        (a, p)
    }

    fn change(name: &str, kind: Mod, adds: &[&str], deletes: &[&str]) -> v1::AttributeChange {
        v1::AttributeChange {
            name: name.into(),
            modification_type: kind as i32,
            value_adds: adds.iter().map(|v| v1::Value::string(*v)).collect(),
            value_deletes: deletes.iter().map(|v| v1::Value::string(*v)).collect(),
        }
    }

    #[test]
    fn patch_operations_are_rfc_strict() {
        let (a, p) = attribute("members", true, true);
        let ops = patch_operations(&a, &p, &change("members", Mod::Update, &["u2"], &["u1\"x"]), None);
        assert_eq!(
            ops,
            [
                json!({"op": "add", "path": "members", "value": [{"value": "u2"}]}),
                json!({"op": "remove", "path": "members[value eq \"u1\\\"x\"]"}),
            ]
        );
        let (a, p) = attribute(r#"emails[type eq "work"].value"#, false, true);
        let current = json!({"emails": [{"type": "home", "value": "h@x"}]});
        let ops = patch_operations(&a, &p, &change(&a.name, Mod::Replace, &["w@x"], &[]), Some(&current));
        assert_eq!(
            ops,
            [json!({"op": "add", "path": "emails", "value": [{"type": "work", "value": "w@x"}]})]
        );
        let current = json!({"emails": [{"type": "work"}]});
        let ops = patch_operations(&a, &p, &change(&a.name, Mod::Replace, &["w@x"], &[]), Some(&current));
        assert_eq!(
            ops,
            [json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x"})],
            "no second work element"
        );
        assert!(patch_operations(&a, &p, &change(&a.name, Mod::Delete, &[], &[]), Some(&current)).is_empty());
        let current = json!({"emails": [{"type": "work", "value": "old@x"}]});
        let ops = patch_operations(&a, &p, &change(&a.name, Mod::Replace, &["w@x"], &[]), Some(&current));
        assert_eq!(ops, [json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x"})]);
        let (a, p) =
            attribute("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", false, true);
        let ops = patch_operations(&a, &p, &change(&a.name, Mod::Replace, &["m1"], &[]), None);
        assert_eq!(
            ops,
            [
                json!({"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": {"value": "m1"}})
            ]
        );
        let (a, p) = attribute("name.givenName", false, true);
        assert_eq!(
            patch_operations(&a, &p, &change(&a.name, Mod::Delete, &[], &[]), None),
            [json!({"op": "remove", "path": "name.givenName"})]
        );
    }

    #[test]
    fn scim_errors_map_to_kinds_with_their_scim_type() {
        let answer = |status: u16, body: &str| Answer {
            status: connector_web::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.into(),
        };
        let e = refusal(
            "create",
            &answer(409, r#"{"scimType": "uniqueness", "detail": "userName taken", "status": "409"}"#),
        );
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(e.detail.contains("(uniqueness): userName taken"), "{}", e.detail);
        assert_eq!(
            refusal("x", &answer(400, r#"{"scimType": "uniqueness"}"#)).kind,
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            refusal("x", &answer(400, r#"{"scimType": "invalidValue"}"#)).kind,
            ErrorKind::InvalidAttributeValue
        );
        assert_eq!(refusal("x", &answer(404, "{}")).kind, ErrorKind::NoSuchObject);
        assert_eq!(refusal("x", &answer(412, "{}")).kind, ErrorKind::ConstraintViolation);
        assert_eq!(refusal("x", &answer(429, "{}")).kind, ErrorKind::Retryable);
    }
}
