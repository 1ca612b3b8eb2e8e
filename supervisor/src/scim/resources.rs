//! `/scim/{app}/Users` and `/scim/{app}/Groups`: create, read, list and search, replace, patch,
//! delete; one set of handlers, generic over the resource [`Kind`].

use std::sync::Arc;
use tracing::Instrument;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::error::ScimError;
use super::query::{Projection, Query as ListQuery, RawQuery};
use super::resource::{self, GroupKind, Kind, list_response, parse_body, to_response};
use super::{App, Authorized, ScimBody, ScimState, scim_json};
use crate::provision::{Password, Revision};
use crate::store::{Record, RecordState};
use serde_json::Value;

fn reply<K: Kind>(status: StatusCode, record: &Record, base_url: &str) -> Response {
    let mut response = scim_json(status, &to_response::<K>(record, base_url));
    if let Ok(etag) = HeaderValue::from_str(&resource::etag(record)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

async fn present<K: Kind>(state: &ScimState, app: &str, id: &str) -> Result<Record, ScimError> {
    state
        .provisioner
        .store
        .get(app, K::NAME, id)
        .await
        .map_err(|e| ScimError::from(crate::provision::ProvisionError::Store(e)))?
        .filter(|r| r.state == RecordState::Present)
        .ok_or_else(|| ScimError::not_found(format!("no {} with id {id:?}", K::NAME)))
}

/// A resource checked by its kind and by the app's extension schemas.
pub(crate) fn validated<K: Kind>(app: &App, resource: Value) -> Result<(Value, String), ScimError> {
    let (mut resource, name) = K::validate(resource)?;
    K::schemas(app).conform(&mut resource)?;
    for extension in app.extensions.iter().filter(|e| e.resource == K::NAME) {
        extension.check(&resource)?;
    }
    Ok((resource, name))
}

/// The write-only `password` of a request body (a User's), if it has one.
pub(crate) fn password_of(body: &Value) -> Option<Password> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("password"))
        .and_then(|(_, v)| v.as_str())
        .filter(|p| !p.is_empty())
        .map(|p| Password(p.to_string()))
}

/// The connector holding this kind of resource for the app, or a SCIM 404.
fn connector<K: Kind>(auth: &Authorized) -> Result<&str, ScimError> {
    K::connector(&auth.app)
        .ok_or_else(|| ScimError::not_found(format!("app {:?} has no {}", auth.app.name, K::ENDPOINT)))
}

/// `GET /Users[?filter=...&sortBy=...&startIndex=...&count=...&attributes=...]`, answered from
/// the connector space.
pub async fn list<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Query(raw): Query<RawQuery>,
) -> Result<Response, ScimError> {
    search_with::<K>(&state, &auth, raw.parse()?).await
}

/// `POST /Users/.search`: the same query in a SearchRequest body.
pub async fn search<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let query = RawQuery::from_search_body(&parse_body(&body)?)?.parse()?;
    search_with::<K>(&state, &auth, query).await
}

/// `POST /.search` at the app's root (RFC 7644 §3.4.3): one query over Users and Groups; the
/// `schemas` of each resource tell them apart.
pub async fn search_all(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let query = RawQuery::from_search_body(&parse_body(&body)?)?.parse()?;
    let store = &state.provisioner.store;
    let store_error = |e| ScimError::from(crate::provision::ProvisionError::Store(e));
    let mut resources: Vec<Value> = store
        .list(&auth.app.name, resource::UserKind::NAME)
        .await
        .map_err(store_error)?
        .iter()
        .map(|r| to_response::<resource::UserKind>(r, &auth.base_url))
        .collect();
    if auth.app.groups.is_some() {
        let groups = store.list(&auth.app.name, GroupKind::NAME).await.map_err(store_error)?;
        resources.extend(groups.iter().map(|r| to_response::<GroupKind>(r, &auth.base_url)));
    }
    let (page, total) = query.apply(resources);
    Ok(scim_json(StatusCode::OK, &list_response(page, total, query.start_index)))
}

async fn search_with<K: Kind>(
    state: &ScimState,
    auth: &Authorized,
    query: ListQuery,
) -> Result<Response, ScimError> {
    connector::<K>(auth)?;
    let store = &state.provisioner.store;
    let store_error = |e| ScimError::from(crate::provision::ProvisionError::Store(e));
    // `userName eq "..."` (`displayName eq` for groups), how Entra matches before it creates, is
    // answered from an index.
    let records = match query.filter.as_ref().and_then(|f| f.eq_on(K::UNIQUE)) {
        Some(name) => store
            .by_user_name(&auth.app.name, K::NAME, name)
            .await
            .map_err(store_error)?
            .filter(|r| r.state == RecordState::Present)
            .into_iter()
            .collect(),
        None => store.list(&auth.app.name, K::NAME).await.map_err(store_error)?,
    };
    let resources = records.iter().map(|r| to_response::<K>(r, &auth.base_url)).collect();
    let (page, total) = query.apply(resources);
    Ok(scim_json(StatusCode::OK, &list_response(page, total, query.start_index)))
}

/// An `If-Match` header: the versions (ETags) the client's change applies to.
#[derive(Debug, Clone)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    /// No condition.
    pub fn any() -> Self {
        Self(None)
    }

    pub fn from_headers(headers: &HeaderMap) -> Self {
        let tags = headers.get_all(header::IF_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| {
            v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect::<Vec<_>>()
        });
        let tags: Vec<String> = tags.collect();
        Self((!tags.is_empty()).then_some(tags))
    }

    /// Whether the record's version is one of those named (weak comparison; `*` is any).
    pub fn holds(&self, record: &Record) -> bool {
        let Some(tags) = &self.0 else { return true };
        let current = resource::etag(record);
        let bare = |t: &str| t.trim_start_matches("W/").trim_matches('"').to_string();
        tags.iter().any(|t| t == "*" || bare(t) == bare(&current))
    }
}

/// `?attributes=` and `?excludedAttributes=` on a single-resource request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionQuery {
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

/// `POST /Users`.
pub async fn create<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let connector = connector::<K>(&auth)?;
    let body = parse_body(&body)?;
    let password = password_of(&body);
    let (resource, name) = validated::<K>(&auth.app, body)?;
    // In a task of its own: a create goes through even if the client hangs up midway.
    let (provisioner, app, connector) =
        (state.provisioner.clone(), auth.app.name.clone(), connector.to_string());
    // (In the request's span, so that the trace goes on into the task.)
    let record = tokio::spawn(
        crate::provision::with_source(crate::provision::source(), async move {
            provisioner.create(&app, K::NAME, &connector, &name, resource, password).await
        })
        .in_current_span(),
    )
    .await
    .map_err(|e| ScimError::internal(format!("the create failed: {e}")))??;
    let mut response = reply::<K>(StatusCode::CREATED, &record, &auth.base_url);
    if let Ok(location) =
        HeaderValue::from_str(&resource::location::<K>(&auth.base_url, &record.app, &record.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /Users/{id}`.
pub async fn get<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    Query(projection): Query<ProjectionQuery>,
) -> Result<Response, ScimError> {
    let projection =
        Projection::parse(projection.attributes.as_deref(), projection.excluded_attributes.as_deref())?;
    connector::<K>(&auth)?;
    let record = present::<K>(&state, &auth.app.name, &id).await?;
    let mut response =
        scim_json(StatusCode::OK, &projection.apply(to_response::<K>(&record, &auth.base_url)));
    if let Ok(etag) = HeaderValue::from_str(&resource::etag(&record)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Writes a new version of a resource through the write path ([`Provisioner::update`]), which
/// computes it again from the current record when a concurrent write came first.
///
/// [`Provisioner::update`]: crate::provision::Provisioner::update
async fn update_resource<K: Kind>(
    state: &ScimState,
    app: &App,
    id: &str,
    if_match: &IfMatch,
    compute: impl Fn(&Record) -> Result<Revision, ScimError>,
) -> Result<Record, ScimError> {
    let if_match = if_match.clone();
    state
        .provisioner
        .update(&app.name, K::NAME, id, Arc::new(move |r: &Record| if_match.holds(r)), compute)
        .await
}

/// `PUT /Users/{id}`.
pub async fn replace<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    connector::<K>(&auth)?;
    let body = parse_body(&body)?;
    let password = password_of(&body);
    let (resource, name) = validated::<K>(&auth.app, body)?;
    let if_match = IfMatch::from_headers(&headers);
    let record = update_resource::<K>(&state, &auth.app, &id, &if_match, |_| {
        Ok(Revision { resource: resource.clone(), name: name.clone(), password: password.clone() })
    })
    .await?;
    Ok(reply::<K>(StatusCode::OK, &record, &auth.base_url))
}

/// `PATCH /Users/{id}`: the patch is applied to a copy of the current record; nothing changes
/// unless all of it applies.
pub async fn patch<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    connector::<K>(&auth)?;
    let request = parse_body(&body)?;
    let if_match = IfMatch::from_headers(&headers);
    let record = update_resource::<K>(&state, &auth.app, &id, &if_match, |existing| {
        let mut patched = existing.resource.clone();
        K::schemas(&auth.app).drop_legacy(&mut patched);
        super::patch::apply(&mut patched, &request, K::schemas(&auth.app))?;
        let password = password_of(&patched);
        let (resource, name) = validated::<K>(&auth.app, patched)?;
        Ok(Revision { resource, name, password })
    })
    .await?;
    Ok(reply::<K>(StatusCode::OK, &record, &auth.base_url))
}

/// `DELETE /Users/{id}`.
pub async fn delete<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ScimError> {
    connector::<K>(&auth)?;
    let existing = present::<K>(&state, &auth.app.name, &id).await?;
    let if_match = IfMatch::from_headers(&headers);
    // A deleted resource is no member of any group any more.
    let membership = |group: &Record, member: bool| {
        let (resource, name) = GroupKind::validate(with_member(&group.resource, &id, member))?;
        Ok::<_, ScimError>(Revision { resource, name, password: None })
    };
    let groups = auth.app.groups.is_some().then_some(GroupKind::NAME);
    let precondition = Arc::new(move |r: &Record| if_match.holds(r));
    state.provisioner.delete_member(existing, precondition, groups, membership).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A copy of a group resource with `member` in its members (`wanted`) or not.
fn with_member(group: &Value, member: &str, wanted: bool) -> Value {
    let mut group = group.clone();
    let Some(object) = group.as_object_mut() else { return group };
    let members = object.entry("members").or_insert_with(|| Value::Array(vec![]));
    if let Value::Array(members) = members {
        members.retain(|m| m.get("value").and_then(Value::as_str) != Some(member));
        if wanted {
            members.push(serde_json::json!({ "value": member }));
        }
    }
    if object.get("members").is_some_and(|m| m.as_array().is_some_and(Vec::is_empty)) {
        object.remove("members");
    }
    group
}
