//! The connector on the SDK's trait: each exported entry becomes the requests its operation's
//! templates describe, each answer an outcome; imports page through `list`; lookups use `get`
//! and `search`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ecma_connector_sdk::{
    Capabilities, ConnectorError, ConnectorV2, ExportScope, ImportRequest, ImportRun, Outcome, Page,
    PasswordChange, Target,
};
use ecma_proto::v1::{self, AttributeModificationType as Mod, AttributeType, ConfigParameters, ErrorKind};
use futures_util::StreamExt;
use reqwest::header::{self, HeaderValue};
use serde_json::Value as Json;
use url::Url;

use crate::extract::{Body, Found, error_message, soap_fault};
use crate::settings::{BodyTemplate, Format, Operation, Paging, Settings, UpdateMode, definitions};
use crate::template::{Only, Vars, merge_patch, render_path};
use connector_web::{Answer, Failure, Http, Request, retry_after};

pub struct RestConnector;

#[tonic::async_trait]
impl ConnectorV2 for RestConnector {
    type Target = RestTarget;

    fn name(&self) -> &'static str {
        "connector-rest"
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

    async fn open(&self, config: &ConfigParameters) -> Result<RestTarget, ConnectorError> {
        let settings = Arc::new(Settings::read(&Some(config.clone()))?);
        let http = Http::new(settings.connection.clone())?;
        Ok(RestTarget { settings, http: Arc::new(http) })
    }
}

/// One configured service.
pub struct RestTarget {
    settings: Arc<Settings>,
    http: Arc<Http>,
}

/// What one entry is.
struct Object {
    anchor: Option<String>,
    dn: String,
}

impl RestTarget {
    fn operation(&self, name: &str) -> Result<&Operation, ConnectorError> {
        self.settings.operation(name).ok_or_else(|| {
            ConnectorError::unsupported(format!("no {name} request is configured (parameter {name})"))
        })
    }

    /// The request of `op` for `vars`.
    fn request(&self, op: &Operation, vars: &Vars, body: Option<String>) -> Result<Request, ConnectorError> {
        let refused =
            |e: String| ConnectorError::new(ErrorKind::InvalidAttributeValue, format!("{}: {e}", op.name));
        let path = render_path(&op.path, vars).map_err(refused)?;
        let mut url = self.url_of(&path);
        self.add_query(&mut url, &op.query, vars);
        Ok(self.request_at(op, url, vars, body))
    }

    /// Sends `request`; a status outside `expected` (any 2xx when empty) is the error
    /// [`Self::refusal`] makes of it.
    async fn call(&self, request: &Request, expected: &[u16]) -> Result<Answer, Failure> {
        self.http.call(request, expected, |answer| self.refusal(request.operation, answer)).await
    }

    /// The error an answer that is not a success means: its kind from `error_kinds`, a SOAP
    /// fault's code, or its status; the service's own message in the detail.
    fn refusal(&self, operation: &str, answer: &Answer) -> ConnectorError {
        let s = &self.settings;
        let message =
            self.http.redact(&error_message(&answer.body, s.error_message_path.as_ref(), &s.namespaces));
        let status = answer.status.as_u16();
        let mut detail = format!("{operation}: the service answered {status}: {message}");
        if (status == 429 || status == 503)
            && let Some(wait) = retry_after(&answer.headers)
        {
            detail.push_str(&format!(" (Retry-After {}s)", wait.as_secs()));
        }
        let lower = message.to_lowercase();
        let configured =
            s.error_kinds.iter().find(|(word, _)| lower.contains(word.as_str())).map(|(_, k)| *k);
        let fault = soap_fault(&answer.body).map(|(code, _)| code.to_lowercase());
        let kind = configured.unwrap_or_else(|| match (&fault, status) {
            (Some(code), _) if code.contains("notfound") => ErrorKind::NoSuchObject,
            (Some(code), _) if code.contains("exist") => ErrorKind::AlreadyExists,
            (Some(code), _) if code.contains("auth") || code.contains("denied") => {
                ErrorKind::PermissionDenied
            }
            (Some(code), 500) if code.contains("client") || code.contains("sender") => {
                ErrorKind::InvalidAttributeValue
            }
            (_, 404 | 410) => ErrorKind::NoSuchObject,
            (_, 409) => ErrorKind::AlreadyExists,
            (_, 401 | 403) => ErrorKind::PermissionDenied,
            (_, 408 | 429 | 502 | 503 | 504) => ErrorKind::Retryable,
            (_, 412) => ErrorKind::ConstraintViolation,
            (_, 400..=499) => ErrorKind::InvalidAttributeValue,
            _ => ErrorKind::Internal,
        });
        ConnectorError::new(kind, detail)
    }

    /// The base URL joined with `path` (the base's own path kept).
    fn url_of(&self, path: &str) -> Url {
        self.http.url(path)
    }

    fn add_query(&self, url: &mut Url, query: &[(String, crate::template::Text)], vars: &Vars) {
        let pairs: Vec<(String, String)> =
            query.iter().filter_map(|(k, t)| Some((k.clone(), t.render_plain(vars)?))).collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
    }

    fn request_at(&self, op: &Operation, url: Url, vars: &Vars, body: Option<String>) -> Request {
        let mut headers: Vec<_> = op
            .headers
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), HeaderValue::from_str(&t.render_plain(vars)?).ok()?)))
            .collect();
        let accept =
            if self.settings.format.is_xml() { "application/xml, text/xml" } else { "application/json" };
        headers.push((header::ACCEPT, HeaderValue::from_static(accept)));
        let body = body.map(|body| match self.settings.format {
            Format::Json => ("application/json".to_string(), body),
            Format::Xml => ("application/xml; charset=utf-8".to_string(), body),
            Format::Soap(soap) => {
                if soap == crate::template::Soap::V11 {
                    let action = format!("\"{}\"", op.action.as_deref().unwrap_or_default().replace('"', ""));
                    if let Ok(v) = HeaderValue::from_str(&action) {
                        headers.push((reqwest::header::HeaderName::from_static("soapaction"), v));
                    }
                }
                (soap.content_type(op.action.as_deref()), soap.envelope(&body))
            }
        });
        Request { operation: op.name, method: op.method.clone(), url, headers, body }
    }

    /// The body of `op` for `vars` (every member).
    fn body(&self, op: &Operation, vars: &Vars, only: Only<'_>) -> Option<String> {
        let s = &self.settings;
        match op.body.as_ref()? {
            BodyTemplate::Json(t) => Some(t.render(vars, &|n| s.is_multi(n), s.absent, only).to_string()),
            BodyTemplate::Xml(t) => Some(t.render(vars, s.absent)),
        }
    }

    /// The object in an answer (at object_path).
    fn object_in(&self, body: &str) -> Result<Option<Found>, String> {
        let parsed = Body::parse(body, self.settings.format.is_xml())?;
        let mut found = parsed.objects(self.settings.object_path.as_ref(), &self.settings.shape)?;
        Ok(if found.is_empty() { None } else { Some(found.swap_remove(0)) })
    }

    /// The objects in a list or search answer.
    fn objects_in(&self, body: &Body) -> Result<Vec<Found>, String> {
        body.objects(Some(&self.settings.items_path), &self.settings.shape)
    }

    /// A found object's attribute values, typed per the declaration.
    fn values_of(&self, found: &Found) -> HashMap<String, Vec<v1::Value>> {
        found
            .attributes
            .iter()
            .map(|(name, values)| {
                let kind = self.settings.kind_of(name);
                (name.clone(), values.iter().filter_map(|v| typed(v, kind)).collect())
            })
            .collect()
    }

    fn entry_of(&self, found: &Found) -> Option<v1::Entry> {
        let anchor = found.anchor.clone()?;
        let attributes = self
            .values_of(found)
            .into_iter()
            .filter(|(name, values)| !values.is_empty() && *name != self.settings.anchor)
            .map(|(name, values)| v1::AttributeValues { name, values })
            .collect();
        Some(v1::Entry {
            object_type: self.settings.object_type.clone(),
            anchors: vec![self.anchor(anchor)],
            dn: String::new(),
            attributes,
            partition_id: self.settings.partition.clone(),
        })
    }

    fn anchor(&self, value: String) -> v1::Anchor {
        v1::Anchor { name: self.settings.anchor.clone(), value: Some(v1::Value::string(value)) }
    }

    /// The variables of an object: its anchor (as `anchor` and as the anchor attribute) and DN.
    fn object_vars(&self, object: &Object, mut vars: Vars) -> Vars {
        vars.insert("now".into(), vec![v1::Value::string(now())]);
        if let Some(anchor) = &object.anchor {
            vars.insert(self.settings.anchor.clone(), vec![v1::Value::string(anchor.clone())]);
            vars.insert("anchor".into(), vec![v1::Value::string(anchor.clone())]);
        }
        if !object.dn.is_empty() {
            vars.insert("dn".into(), vec![v1::Value::string(object.dn.clone())]);
        }
        vars
    }

    /// Reads one object by its anchor; `None` when the service has no such object.
    async fn get(&self, anchor: &str) -> Result<Option<(Found, Option<Json>)>, ConnectorError> {
        let op = self.operation("get")?;
        let object = Object { anchor: Some(anchor.to_string()), dn: String::new() };
        let vars = self.object_vars(&object, Vars::new());
        let request = self.request(op, &vars, self.body(op, &vars, Only::All))?;
        match self.call(&request, &op.statuses).await {
            Ok(answer) => {
                let found = self.object_in(&answer.body).map_err(|e| self.bad_answer("get", e))?;
                Ok(found.map(|f| {
                    let raw = f.raw.clone();
                    (f, raw)
                }))
            }
            Err(Failure::NotDone(e)) if e.kind == ErrorKind::NoSuchObject => Ok(None),
            Err(f) => Err(f.into_error()),
        }
    }

    fn bad_answer(&self, op: &str, e: String) -> ConnectorError {
        ConnectorError::new(ErrorKind::Internal, format!("{op}: {}", self.http.redact(&e)))
    }

    async fn export_one(&self, entry: &v1::CsEntryChange) -> Outcome {
        let anchor = entry
            .anchors
            .iter()
            .find(|a| a.name == self.settings.anchor)
            .or(entry.anchors.first())
            .and_then(|a| a.value.as_ref())
            .map(crate::template::text_of);
        let object = Object { anchor, dn: entry.dn.clone() };
        let result = match v1::ObjectModificationType::try_from(entry.modification_type) {
            Ok(v1::ObjectModificationType::Add) => self.create(&object, entry).await,
            Ok(v1::ObjectModificationType::Update) | Ok(v1::ObjectModificationType::Replace) => {
                self.update(&object, entry).await
            }
            Ok(v1::ObjectModificationType::Delete) => self.delete(&object).await,
            _ => Err(Failure::NotDone(ConnectorError::new(
                ErrorKind::Unsupported,
                format!("modification type {} is not exported", entry.modification_type),
            ))),
        };
        Failure::outcome(result, &entry.identifier)
    }

    async fn create(&self, object: &Object, entry: &v1::CsEntryChange) -> Result<Outcome, Failure> {
        let op = self.operation("create").map_err(Failure::NotDone)?;
        let vars = self.object_vars(object, apply_changes(Vars::new(), &entry.attribute_changes));
        if let Some(unique) = &self.settings.unique_attribute
            && let Some(value) = vars.get(unique).and_then(|v| v.first())
        {
            let found = self.search(unique, value).await.map_err(Failure::NotDone)?;
            if let Some(existing) = found.first() {
                let id =
                    existing.anchors.first().and_then(|a| a.value.as_ref()).map(crate::template::text_of);
                return Err(Failure::NotDone(ConnectorError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "create: the service has an object with this {unique} (id {})",
                        id.unwrap_or_default()
                    ),
                )));
            }
        }
        let body = self.body(op, &vars, Only::All);
        let request = self.request(op, &vars, body).map_err(Failure::NotDone)?;
        let answer = self.call(&request, &op.statuses).await?;
        // Written: without an id in the answer the object cannot be named, and the supervisor
        // looks it up (by its matching attribute) instead of creating it again.
        let found = match self.object_in(&answer.body) {
            Ok(Some(found)) if found.anchor.is_some() => found,
            Ok(_) => {
                return Err(Failure::Unknown(format!(
                    "create: the service answered {} without an id at id_path",
                    answer.status
                )));
            }
            Err(e) => {
                return Err(Failure::Unknown(format!(
                    "create: the service answered {} with a body that cannot be read: {}",
                    answer.status,
                    self.http.redact(&e)
                )));
            }
        };
        Ok(Outcome::applied(vec![self.anchor(found.anchor.unwrap_or_default())]))
    }

    async fn update(&self, object: &Object, entry: &v1::CsEntryChange) -> Result<Outcome, Failure> {
        let s = &self.settings;
        let op = self.operation("update").map_err(Failure::NotDone)?;
        let Some(anchor) = object.anchor.clone() else {
            return Err(Failure::NotDone(ConnectorError::new(
                ErrorKind::NoSuchObject,
                "update: the entry has no anchor",
            )));
        };
        // `{{now}}` (a modification time the service keeps for delta imports) changes with
        // every write.
        let mut changed: BTreeSet<String> = entry.attribute_changes.iter().map(|c| c.name.clone()).collect();
        changed.insert("now".into());
        let removed: BTreeSet<String> = entry
            .attribute_changes
            .iter()
            .filter(|c| c.modification_type == Mod::Delete as i32)
            .map(|c| c.name.clone())
            .collect();
        let partial = entry.attribute_changes.iter().any(|c| c.modification_type == Mod::Update as i32);
        // The current object, where the body needs it: a whole-object update, or a change of
        // some values of a multi-valued attribute.
        let template = op.body.as_ref().or(s.operation("create").and_then(|c| c.body.as_ref()));
        let nested = match template {
            Some(BodyTemplate::Json(t)) if s.update_mode == UpdateMode::Patch => {
                !t.nested_vars().is_disjoint(&changed)
            }
            _ => false,
        };
        let current =
            if s.update_mode == UpdateMode::Put || ((partial || nested) && s.operation("get").is_some()) {
                match self.get(&anchor).await.map_err(Failure::NotDone)? {
                    Some(found) => Some(found),
                    None => {
                        return Err(Failure::NotDone(ConnectorError::new(
                            ErrorKind::NoSuchObject,
                            format!("update: the service has no object {anchor}"),
                        )));
                    }
                }
            } else {
                None
            };
        let base = current.as_ref().map(|(f, _)| self.values_of(f)).unwrap_or_default();
        let vars = self.object_vars(object, apply_changes(base, &entry.attribute_changes));
        // The update's body template (or the create's): what changed, as a JSON Merge Patch,
        // or as whole top-level members for a PATCH that the service merges one level deep.
        let only = match s.update_mode {
            UpdateMode::Patch => Only::Members { changed: &changed },
            _ => Only::Changed { changed: &changed, removed: &removed },
        };
        let body = match template {
            Some(BodyTemplate::Json(t)) => {
                // What the template renders of the changes, as a JSON Merge Patch; for a whole
                // object update, merged into the service's object (members the template does
                // not cover are kept).
                let patch = t.render(&vars, &|n| s.is_multi(n), s.absent, only);
                if patch.is_null() {
                    // No member of the body uses what changed: nothing to send.
                    return Ok(Outcome::applied(vec![self.anchor(anchor)]));
                }
                if s.update_mode == UpdateMode::Put {
                    let mut whole = current.as_ref().and_then(|(_, raw)| raw.clone()).unwrap_or_default();
                    merge_patch(&mut whole, &patch);
                    Some(whole.to_string())
                } else {
                    Some(patch.to_string())
                }
            }
            Some(BodyTemplate::Xml(t)) => Some(t.render(&vars, s.absent)),
            None => None,
        };
        let mut request = self.request(op, &vars, body).map_err(Failure::NotDone)?;
        if s.update_mode == UpdateMode::MergePatch
            && let Some((content_type, _)) = request.body.as_mut()
        {
            *content_type = "application/merge-patch+json".into();
        }
        self.call(&request, &op.statuses).await?;
        Ok(Outcome::applied(vec![self.anchor(anchor)]))
    }

    async fn delete(&self, object: &Object) -> Result<Outcome, Failure> {
        let op = self.operation("delete").map_err(Failure::NotDone)?;
        let vars = self.object_vars(object, Vars::new());
        let body = self.body(op, &vars, Only::All);
        let request = self.request(op, &vars, body).map_err(Failure::NotDone)?;
        self.call(&request, &op.statuses).await?;
        Ok(Outcome::applied(vec![]))
    }

    /// Objects whose `attribute` has `value`: by `search` when configured, else by reading the
    /// whole list.
    async fn search(&self, attribute: &str, value: &v1::Value) -> Result<Vec<v1::Entry>, ConnectorError> {
        let wanted = crate::template::text_of(value);
        let matches = |found: &Found| {
            found.attributes.get(attribute).is_some_and(|vs| {
                vs.iter().any(|v| match v {
                    Json::String(s) => *s == wanted,
                    other => serde_json::to_string(other).is_ok_and(|text| text == wanted),
                })
            }) || (attribute == self.settings.anchor && found.anchor.as_deref() == Some(wanted.as_str()))
        };
        let mut out = Vec::new();
        if let Some(op) = self.settings.operation("search") {
            let mut vars = Vars::new();
            vars.insert("attribute".into(), vec![v1::Value::string(attribute)]);
            vars.insert("value".into(), vec![value.clone()]);
            vars.insert(attribute.into(), vec![value.clone()]);
            let request = self.request(op, &vars, self.body(op, &vars, Only::All))?;
            let answer = match self.call(&request, &op.statuses).await {
                Ok(a) => a,
                Err(Failure::NotDone(e)) if e.kind == ErrorKind::NoSuchObject => return Ok(vec![]),
                Err(f) => return Err(f.into_error()),
            };
            let body = Body::parse(&answer.body, self.settings.format.is_xml())
                .map_err(|e| self.bad_answer("search", e))?;
            out.extend(
                self.objects_in(&body)
                    .map_err(|e| self.bad_answer("search", e))?
                    .iter()
                    .filter(|f| matches(f))
                    .filter_map(|f| self.entry_of(f)),
            );
            return Ok(out);
        }
        let mut run = self.list(false, 1000, vec![])?;
        loop {
            let page = run.fetch().await?;
            out.extend(page.found.iter().filter(|f| matches(f)).filter_map(|f| self.entry_of(f)));
            if !page.more {
                return Ok(out);
            }
        }
    }

    fn list(&self, delta: bool, page_size: u32, watermark: Vec<u8>) -> Result<ListRun, ConnectorError> {
        let op = self.operation("list")?.clone();
        if delta && self.settings.delta.is_none() {
            return Err(ConnectorError::unsupported("delta imports need delta_query and watermark_path"));
        }
        let limit = if page_size == 0 {
            self.settings.page_size
        } else {
            u64::from(page_size).min(self.settings.page_size)
        };
        Ok(ListRun {
            target: RestTarget { settings: self.settings.clone(), http: self.http.clone() },
            op,
            delta,
            since: String::from_utf8_lossy(&watermark).into_owned(),
            latest: String::from_utf8_lossy(&watermark).into_owned(),
            limit,
            // Page numbers (also for `{{page}}` in the first request of other pagings) count
            // from first_page, 1 by default: json-server takes `_page=0` for page 1.
            page: self.settings.first_page,
            offset: 0,
            cursor: None,
            next_url: None,
            done: false,
            seen: BTreeSet::new(),
        })
    }
}

/// The time now, in RFC 3339 (UTC, milliseconds): `{{now}}`.
fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&format).unwrap_or_default()
}

/// `vars` with the values an entry's attribute changes give.
fn apply_changes(mut vars: Vars, changes: &[v1::AttributeChange]) -> Vars {
    for change in changes {
        let values = vars.entry(change.name.clone()).or_default();
        match Mod::try_from(change.modification_type) {
            Ok(Mod::Add) | Ok(Mod::Replace) => *values = change.value_adds.clone(),
            Ok(Mod::Update) => {
                values.retain(|v| !change.value_deletes.contains(v));
                for v in &change.value_adds {
                    if !values.contains(v) {
                        values.push(v.clone());
                    }
                }
            }
            Ok(Mod::Delete) => values.clear(),
            _ => {}
        }
    }
    vars
}

/// A JSON value (or XML text) as a value of `kind`.
fn typed(value: &Json, kind: AttributeType) -> Option<v1::Value> {
    let text = || match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(match kind {
        AttributeType::Integer => match value {
            Json::Number(n) => v1::Value::integer(n.as_i64()?),
            _ => v1::Value::integer(text().trim().parse().ok()?),
        },
        AttributeType::Boolean => match value {
            Json::Bool(b) => v1::Value::boolean(*b),
            _ => match text().trim().to_ascii_lowercase().as_str() {
                "true" | "1" => v1::Value::boolean(true),
                "false" | "0" => v1::Value::boolean(false),
                _ => return None,
            },
        },
        AttributeType::Reference => v1::Value { kind: Some(v1::value::Kind::ReferenceValue(text())) },
        AttributeType::Binary => {
            use base64::Engine;
            v1::Value {
                kind: Some(v1::value::Kind::BinaryValue(
                    base64::engine::general_purpose::STANDARD.decode(text()).ok()?,
                )),
            }
        }
        _ => v1::Value::string(text()),
    })
}

/// One page of a list.
struct Listed {
    found: Vec<Found>,
    more: bool,
}

/// An import (or a lookup's scan) under way.
pub struct ListRun {
    target: RestTarget,
    op: Operation,
    delta: bool,
    /// The watermark the delta starts from, and the latest modification time seen.
    since: String,
    latest: String,
    limit: u64,
    page: u64,
    offset: u64,
    cursor: Option<String>,
    next_url: Option<Url>,
    done: bool,
    /// Anchors already given (a service whose pages shift while they are read can repeat one).
    seen: BTreeSet<String>,
}

impl ListRun {
    async fn fetch(&mut self) -> Result<Listed, ConnectorError> {
        if self.done {
            return Ok(Listed { found: vec![], more: false });
        }
        let t = &self.target;
        let s = &t.settings;
        let mut vars = Vars::new();
        vars.insert("now".into(), vec![v1::Value::string(now())]);
        let number = |n: u64| vec![v1::Value::integer(n as i64)];
        vars.insert("page".into(), number(self.page));
        vars.insert("offset".into(), number(self.offset));
        vars.insert("limit".into(), number(self.limit));
        if let Some(cursor) = &self.cursor {
            vars.insert("cursor".into(), vec![v1::Value::string(cursor.clone())]);
        }
        if !self.since.is_empty() {
            vars.insert("watermark".into(), vec![v1::Value::string(self.since.clone())]);
        }
        let request = match &self.next_url {
            Some(url) => t.request_at(&self.op, url.clone(), &vars, None),
            None => {
                let mut request = t.request(&self.op, &vars, t.body(&self.op, &vars, Only::All))?;
                if self.delta
                    && let Some(delta) = &s.delta
                {
                    t.add_query(&mut request.url, &delta.query, &vars);
                }
                request
            }
        };
        let answer = t.call(&request, &self.op.statuses).await.map_err(Failure::into_error)?;
        let body = Body::parse(&answer.body, s.format.is_xml()).map_err(|e| t.bad_answer("list", e))?;
        let found = t.objects_in(&body).map_err(|e| t.bad_answer("list", e))?;
        let count = found.len() as u64;
        let next = match &s.next_path {
            Some(at) => body.text(at, &s.namespaces).filter(|n| !n.is_empty()),
            None if s.paging == Paging::Link => next_link(&answer.headers),
            None => None,
        };
        let more = match s.paging {
            Paging::None => false,
            Paging::Page | Paging::Offset => count >= self.limit && count > 0,
            Paging::Cursor => next.is_some() && count > 0,
            Paging::Link => next.is_some(),
        };
        self.page += 1;
        self.offset += count;
        match s.paging {
            Paging::Cursor => self.cursor = next,
            Paging::Link => {
                self.next_url = match next {
                    Some(n) => Some(request.url.join(&n).map_err(|e| {
                        t.bad_answer("list", format!("the next link {n:?} is not a URL ({e})"))
                    })?),
                    None => None,
                }
            }
            _ => {}
        }
        let mut fresh = Vec::new();
        for f in found {
            if let Some(w) = &f.watermark
                && later(w, &self.latest)
            {
                self.latest = w.clone();
            }
            if let Some(anchor) = &f.anchor
                && self.seen.insert(anchor.clone())
            {
                fresh.push(f);
            }
        }
        // A service that sends the same page again (a next link to itself, a cursor that does
        // not move) would page forever: a page that brings nothing new ends the list.
        let more = more && !(count > 0 && fresh.is_empty()) && self.next_url.as_ref() != Some(&request.url);
        if count > 0 && fresh.is_empty() {
            tracing::warn!("list: a page brought no object not seen before; the list ends here");
        }
        self.done = !more;
        Ok(Listed { found: fresh, more })
    }
}

/// Whether modification time `a` is later than `b`: as numbers when both are, else as text
/// (ISO 8601 times in one form sort as text).
fn later(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
}

/// The `next` link of a Link header (RFC 8288).
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for value in headers.get_all(header::LINK) {
        for link in value.to_str().ok()?.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim().trim_start_matches('<').trim_end_matches('>');
            if parts.any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"next\"" || p == "rel=next"
            }) {
                return Some(target.to_string());
            }
        }
    }
    None
}

#[tonic::async_trait]
impl ImportRun for ListRun {
    async fn next_page(&mut self) -> Result<Page, ConnectorError> {
        let listed = self.fetch().await?;
        let kind =
            if self.delta { v1::ObjectModificationType::Replace } else { v1::ObjectModificationType::Add };
        let entries = listed
            .found
            .iter()
            .filter_map(|f| self.target.entry_of(f))
            .map(|entry| v1::ImportEntry { modification_type: kind as i32, entry: Some(entry), error: None })
            .collect();
        // The watermark is committed only after the last page: a run that stops half-way is
        // read again from the old one.
        let watermark = if listed.more { vec![] } else { self.latest.clone().into_bytes() };
        Ok(Page { entries, more: listed.more, watermark })
    }

    fn final_watermark(&self) -> Vec<u8> {
        self.latest.clone().into_bytes()
    }
}

#[tonic::async_trait]
impl Target for RestTarget {
    async fn validate(&self) -> Vec<ConnectorError> {
        // Reachable, and the credentials work: the token endpoint, then the list (or a get of
        // an object that does not exist, which answers 404 when all is well).
        let probe = async {
            if let Some(op) = self.settings.operation("list") {
                let first = self.settings.first_page as i64;
                let mut vars = Vars::new();
                vars.insert("page".into(), vec![v1::Value::integer(first)]);
                vars.insert("offset".into(), vec![v1::Value::integer(0)]);
                vars.insert("limit".into(), vec![v1::Value::integer(1)]);
                let request = self.request(op, &vars, self.body(op, &vars, Only::All))?;
                self.call(&request, &op.statuses).await.map_err(Failure::into_error)?;
            } else if self.settings.operation("get").is_some() {
                self.get("connector-rest-validate").await?;
            }
            Ok::<_, ConnectorError>(())
        };
        match probe.await {
            Ok(()) => vec![],
            Err(e) if e.kind == ErrorKind::PermissionDenied => {
                vec![
                    ConnectorError { detail: format!("{} (check the credentials)", e.detail), ..e }
                        .on("auth"),
                ]
            }
            // A service that is down or busy is not a configuration problem: the kind says it
            // passes, and the supervisor tries again.
            Err(e) => vec![e.on("base_url")],
        }
    }

    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError> {
        let s = &self.settings;
        Ok(vec![ecma_connector_sdk::declared::schema_type(&s.object_type, &s.anchor, &s.attributes)])
    }

    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError> {
        Ok(vec![v1::Partition { id: self.settings.partition.clone(), name: self.settings.partition.clone() }])
    }

    async fn open_export(&self, scope: &ExportScope) -> Result<(), ConnectorError> {
        scope.expect(&self.settings.object_type, &self.settings.partition)
    }

    async fn export(
        &self,
        _: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        // Entries of one batch are different objects (the supervisor never sends two changes
        // of one object at once): they go out side by side, their outcomes in order.
        let work: Vec<_> = entries.iter().map(|entry| self.export_one(entry)).collect();
        Ok(futures_util::stream::iter(work).buffered(self.settings.concurrency).collect().await)
    }

    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        let watermark = if request.delta { request.watermark } else { vec![] };
        Ok(Box::new(self.list(request.delta, request.page_size, watermark)?))
    }

    async fn lookup(
        &self,
        _object_type: &str,
        _partition: &str,
        by: &v1::lookup_entries_request::By,
    ) -> Result<Vec<v1::Entry>, ConnectorError> {
        match by {
            v1::lookup_entries_request::By::Anchor(anchor) => {
                let Some(value) = anchor.value.as_ref().map(crate::template::text_of) else {
                    return Ok(vec![]);
                };
                if self.settings.operation("get").is_none() {
                    return self.search(&self.settings.anchor.clone(), &v1::Value::string(value)).await;
                }
                Ok(self.get(&value).await?.and_then(|(found, _)| self.entry_of(&found)).into_iter().collect())
            }
            v1::lookup_entries_request::By::Attribute(a) => match a.values.first() {
                Some(value) => self.search(&a.name, value).await,
                None => Ok(vec![]),
            },
        }
    }

    async fn password(&self, change: PasswordChange) -> Result<(), ConnectorError> {
        let op = self.operation("set_password")?;
        let anchor = change
            .anchors
            .iter()
            .find(|a| a.name == self.settings.anchor)
            .or(change.anchors.first())
            .and_then(|a| a.value.as_ref())
            .map(crate::template::text_of);
        let object = Object { anchor, dn: change.dn.clone() };
        let mut vars = Vars::new();
        vars.insert("password".into(), vec![v1::Value::string(change.new.clone())]);
        if let Some(old) = &change.old {
            vars.insert("old_password".into(), vec![v1::Value::string(old.clone())]);
        }
        let vars = self.object_vars(&object, vars);
        let request = self.request(op, &vars, self.body(op, &vars, Only::All))?;
        Failure::password(self.call(&request, &op.statuses).await, &change.new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_to_the_current_values() {
        let s = |v: &str| v1::Value::string(v);
        let mut vars = Vars::new();
        vars.insert("groups".into(), vec![s("a"), s("b")]);
        vars.insert("title".into(), vec![s("x")]);
        let change =
            |name: &str, kind: Mod, adds: Vec<v1::Value>, deletes: Vec<v1::Value>| v1::AttributeChange {
                name: name.into(),
                modification_type: kind as i32,
                value_adds: adds,
                value_deletes: deletes,
            };
        let out = apply_changes(
            vars,
            &[
                change("groups", Mod::Update, vec![s("c"), s("a")], vec![s("b")]),
                change("title", Mod::Delete, vec![], vec![]),
                change("name", Mod::Replace, vec![s("n")], vec![]),
            ],
        );
        assert_eq!(out["groups"], [s("a"), s("c")]);
        assert!(out["title"].is_empty());
        assert_eq!(out["name"], [s("n")]);
    }

    #[test]
    fn answers_are_typed_per_the_declaration() {
        assert_eq!(typed(&Json::from(3), AttributeType::Integer), Some(v1::Value::integer(3)));
        assert_eq!(typed(&Json::from("42"), AttributeType::Integer), Some(v1::Value::integer(42)));
        assert_eq!(typed(&Json::from("true"), AttributeType::Boolean), Some(v1::Value::boolean(true)));
        assert_eq!(typed(&Json::from("maybe"), AttributeType::Boolean), None);
        assert_eq!(typed(&Json::from(7), AttributeType::String), Some(v1::Value::string("7")));
        assert!(later("2026-12-05T10:00:01Z", "2026-12-05T10:00:00Z"));
        assert!(later("10", "9"), "numbers as numbers");
    }

    #[test]
    fn the_next_link_is_read_from_a_link_header() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static(
                r#"<http://x/users?_page=1>; rel="first", <http://x/users?_page=3>; rel="next""#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("http://x/users?_page=3"));
        h.insert(header::LINK, HeaderValue::from_static(r#"<http://x/users?_page=1>; rel="first""#));
        assert_eq!(next_link(&h), None);
    }
}
