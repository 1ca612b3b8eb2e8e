//! `/scim/{app}/Users` and `/scim/{app}/Groups`: create, read, list and search, replace, patch,
//! delete; one set of handlers, generic over the resource [`Kind`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::error::ScimError;
use super::query::{Projection, Query as ListQuery, RawQuery};
use super::resource::{self, GroupKind, Kind, list_response, parse_body, to_response};
use super::{Authorized, ScimBody, ScimState, scim_json};
use crate::store::{Record, RecordState};

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
fn validated<K: Kind>(
    auth: &Authorized,
    resource: serde_json::Value,
) -> Result<(serde_json::Value, String), ScimError> {
    let (resource, name) = K::validate(resource)?;
    for extension in auth.app.extensions.iter().filter(|e| e.resource == K::NAME) {
        extension.check(&resource)?;
    }
    Ok((resource, name))
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
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
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
    let (resource, name) = validated::<K>(&auth, parse_body(&body)?)?;
    let record = state.provisioner.create(&auth.app.name, K::NAME, connector, &name, resource).await?;
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

/// `PUT /Users/{id}`.
pub async fn replace<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    connector::<K>(&auth)?;
    let existing = present::<K>(&state, &auth.app.name, &id).await?;
    let (resource, name) = validated::<K>(&auth, parse_body(&body)?)?;
    let if_match = IfMatch::from_headers(&headers);
    let record = state.provisioner.replace(existing, &name, resource, &|r| if_match.holds(r)).await?;
    Ok(reply::<K>(StatusCode::OK, &record, &auth.base_url))
}

/// `PATCH /Users/{id}`: the patch is applied to a copy; nothing changes unless all of it applies.
pub async fn patch<K: Kind>(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    connector::<K>(&auth)?;
    let existing = present::<K>(&state, &auth.app.name, &id).await?;
    let request = parse_body(&body)?;
    let mut patched = existing.resource.clone();
    super::patch::apply(&mut patched, &request)?;
    let (resource, name) = validated::<K>(&auth, patched)?;
    let if_match = IfMatch::from_headers(&headers);
    let record = state.provisioner.replace(existing, &name, resource, &|r| if_match.holds(r)).await?;
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
    if !if_match.holds(&existing) {
        return Err(crate::provision::ProvisionError::PreconditionFailed.into());
    }
    // A deleted resource is no member of any group any more: leave the groups first, so that a
    // failure leaves both as they were and the client's retry finishes the job.
    leave_groups(&state, &auth, &id).await?;
    state.provisioner.delete(existing, &|r| if_match.holds(r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes `member` from every group of the app that lists it.
async fn leave_groups(state: &ScimState, auth: &Authorized, member: &str) -> Result<(), ScimError> {
    if auth.app.groups.is_none() {
        return Ok(());
    }
    let store_error = |e| ScimError::from(crate::provision::ProvisionError::Store(e));
    let groups = state.provisioner.store.list(&auth.app.name, GroupKind::NAME).await.map_err(store_error)?;
    for group in groups {
        let Some(serde_json::Value::Array(members)) = group.resource.get("members") else { continue };
        if !members.iter().any(|m| m.get("value").and_then(serde_json::Value::as_str) == Some(member)) {
            continue;
        }
        let mut resource = group.resource.clone();
        if let Some(serde_json::Value::Array(members)) = resource.get_mut("members") {
            members.retain(|m| m.get("value").and_then(serde_json::Value::as_str) != Some(member));
            if members.is_empty() {
                resource.as_object_mut().map(|o| o.remove("members"));
            }
        }
        let name = group.user_name.clone();
        tracing::info!(group = %group.id, member, "removing a deleted member from its group");
        state.provisioner.replace(group, &name, resource, &|_| true).await?;
    }
    Ok(())
}
