//! A dry run of a SCIM request (`POST /admin/apps/{app}/preview`): the request goes through
//! the same normalisation, mapping and matching as a real one, and the answer says what each
//! step made of it and the exact change the connector would receive; nothing is written, neither
//! in the connector space nor in the target (the only call to the connector is a lookup).

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ScimError;
use super::resource::{GroupKind, Kind, UserKind, parse_body};
use super::resources::{password_of, validated};
use super::{App, ScimState};
use crate::config::DeprovisionAction;
use crate::mapping::{Mapping, TargetValues, value_to_json};
use crate::provision::{Provisioner, Target, add_change, change_of, is_active, set_values};
use crate::store::{Record, RecordState};
use ecma_proto::v1;

/// A SCIM request as a client would send it.
#[derive(Debug, Clone, Deserialize)]
pub struct PreviewRequest {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// `/Users`, `/Users/{id}`, `/Groups/{id}` (or the full `/scim/{app}/...` path).
    pub path: String,
    /// The body (none for DELETE).
    #[serde(default)]
    pub body: Option<Value>,
}

/// What the request targets: its kind and, for an existing resource, its id.
pub struct Parsed {
    pub endpoint: &'static str,
    pub id: Option<String>,
    pub method: String,
}

/// Reads the method and path (relative to the app, or with `/scim/{app}` in front).
pub fn parse(app: &str, request: &PreviewRequest) -> Result<Parsed, ScimError> {
    let method = request.method.trim().to_ascii_uppercase();
    if !["POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
        return Err(ScimError::bad_request(
            "invalidValue",
            format!(
                "method {:?}: a preview takes POST, PUT, PATCH or DELETE (reads need none)",
                request.method
            ),
        ));
    }
    let path = request.path.trim();
    let path = path.split('?').next().unwrap_or_default();
    let relative = path.strip_prefix(&format!("/scim/{app}")).unwrap_or(path);
    let mut parts = relative.trim_matches('/').split('/');
    let endpoint = match parts.next() {
        Some("Users") => UserKind::ENDPOINT,
        Some("Groups") => GroupKind::ENDPOINT,
        _ => {
            return Err(ScimError::bad_request(
                "invalidPath",
                format!("path {path:?}: expected /Users, /Users/{{id}}, /Groups or /Groups/{{id}}"),
            ));
        }
    };
    let id = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    if parts.next().is_some() || (method == "POST") == id.is_some() {
        return Err(ScimError::bad_request(
            "invalidPath",
            format!("{method} {path}: POST goes to the collection, PUT, PATCH and DELETE to one resource"),
        ));
    }
    Ok(Parsed { endpoint, id, method })
}

/// Runs the dry run.
pub async fn preview(state: &ScimState, app: &App, request: &PreviewRequest) -> Result<Value, ScimError> {
    let parsed = parse(&app.name, request)?;
    if parsed.endpoint == UserKind::ENDPOINT {
        preview_kind::<UserKind>(state, app, &parsed, request).await
    } else {
        preview_kind::<GroupKind>(state, app, &parsed, request).await
    }
}

fn values_json(values: &TargetValues) -> Value {
    Value::Object(
        values
            .iter()
            .map(|(name, values)| (name.clone(), Value::Array(values.iter().map(value_to_json).collect())))
            .collect(),
    )
}

/// A change as the connector would receive it; the password attribute's value redacted.
fn change_json(change: &v1::CsEntryChange, password_attribute: Option<&str>) -> Value {
    let kind = v1::ObjectModificationType::try_from(change.modification_type)
        .map(|k| k.as_str_name().trim_start_matches("OBJECT_MODIFICATION_TYPE_").to_string())
        .unwrap_or_default();
    let changes: Vec<Value> = change
        .attribute_changes
        .iter()
        .map(|c| {
            let secret = password_attribute == Some(c.name.as_str());
            let show = |values: &[v1::Value]| -> Vec<Value> {
                values.iter().map(|v| if secret { json!("[redacted]") } else { value_to_json(v) }).collect()
            };
            json!({
                "name": c.name,
                "modification": v1::AttributeModificationType::try_from(c.modification_type)
                    .map(|k| k.as_str_name().trim_start_matches("ATTRIBUTE_MODIFICATION_TYPE_").to_string())
                    .unwrap_or_default(),
                "add": show(&c.value_adds),
                "delete": show(&c.value_deletes),
            })
        })
        .collect();
    json!({
        "modificationType": kind,
        "objectType": change.object_type,
        "dn": change.dn,
        "anchors": change.anchors.iter().map(|a| json!({"name": a.name, "value": a.value.as_ref().map(value_to_json)})).collect::<Vec<_>>(),
        "attributeChanges": changes,
    })
}

fn record_json(record: &Record) -> Value {
    json!({
        "id": record.id,
        "state": record.state.as_str(),
        "name": record.user_name,
        "version": record.version,
        "anchor": crate::store::anchor_text(&record.target.anchors).unwrap_or_default(),
        "dn": record.target.dn,
        "exported": values_json(&record.target_values()),
    })
}

fn store_error(e: crate::store::StoreError) -> ScimError {
    ScimError::from(crate::provision::ProvisionError::Store(e))
}

/// The target object that matches `values`, looked up through the connector.
async fn target_object(target: &Target, values: &TargetValues) -> Value {
    let session = match target.handle.session() {
        Ok(session) => session,
        Err(e) => return json!({"looked_up": false, "reason": format!("the connector is not ready: {e}")}),
    };
    if !session.capabilities.supports_lookup {
        return json!({"looked_up": false, "reason": "this connector cannot look objects up"});
    }
    let attribute = target.handle.config.match_attribute().unwrap_or_default().to_string();
    match Provisioner::lookup(target, &session, values).await {
        Ok(entries) => match entries.first() {
            Some(entry) => json!({
                "looked_up": true, "by": attribute, "found": true,
                "anchor": crate::store::anchor_text(&entry.anchors).unwrap_or_default(),
                "dn": entry.dn,
                "values": values_json(&crate::store::entry_values(entry)),
            }),
            None => json!({"looked_up": true, "by": attribute, "found": false}),
        },
        Err(e) => json!({"looked_up": false, "by": attribute, "reason": e.to_string()}),
    }
}

async fn preview_kind<K: Kind>(
    state: &ScimState,
    app: &App,
    parsed: &Parsed,
    request: &PreviewRequest,
) -> Result<Value, ScimError> {
    let connector = K::connector(app)
        .ok_or_else(|| ScimError::not_found(format!("app {:?} has no {}", app.name, K::ENDPOINT)))?;
    let provisioner = &state.provisioner;
    let target = provisioner.targets().get(connector).expect("apps name configured connectors");
    let store = &provisioner.store;
    let body = match (&request.body, parsed.method.as_str()) {
        (_, "DELETE") => None,
        (Some(body), _) => Some(parse_body(body.to_string().as_bytes())?),
        (None, method) => {
            return Err(ScimError::bad_request("invalidSyntax", format!("a {method} needs a body")));
        }
    };
    let existing = match &parsed.id {
        Some(id) => Some(
            store
                .get(&app.name, K::NAME, id)
                .await
                .map_err(store_error)?
                .filter(|r| r.state == RecordState::Present)
                .ok_or_else(|| ScimError::not_found(format!("no {} with id {id:?}", K::NAME)))?,
        ),
        None => None,
    };
    // 1. The body as SCIM normalises it (for a PATCH: the resource after the patch).
    let (resource, name, password) = match (parsed.method.as_str(), body) {
        ("POST" | "PUT", Some(body)) => {
            let password = password_of(&body).is_some();
            let (resource, name) = validated::<K>(app, body)?;
            (Some(resource), Some(name), password)
        }
        ("PATCH", Some(patch)) => {
            let current = existing.as_ref().expect("a PATCH names its resource");
            let mut patched = current.resource.clone();
            K::schemas(app).drop_legacy(&mut patched);
            super::patch::apply(&mut patched, &patch, K::schemas(app))?;
            let password = password_of(&patched).is_some();
            let (resource, name) = validated::<K>(app, patched)?;
            (Some(resource), Some(name), password)
        }
        _ => (None, None, false),
    };
    let normalised = resource.as_ref().map(|r| {
        let mut shown = r.clone();
        if let Some(object) = shown.as_object_mut() {
            object.retain(|k, _| !k.eq_ignore_ascii_case("password"));
        }
        shown
    });
    // 2. The record it matches in the connector space.
    let matched = match (&existing, &name) {
        (Some(record), _) => Some(record.clone()),
        (None, Some(name)) => store.by_user_name(&app.name, K::NAME, name).await.map_err(store_error)?,
        _ => None,
    };
    // 3. The connector's attribute values, references resolved.
    let values = match &resource {
        Some(resource) => Some(provisioner.target_values(target, &app.name, resource).await?),
        None => None,
    };
    let password_attribute = target.mapping.password_target();
    let mut shown_values = values.as_ref().map(values_json);
    if let (Some(Value::Object(shown)), Some(attribute)) = (&mut shown_values, password_attribute) {
        shown.remove(attribute);
    }
    // 4. The object in the target that matches it.
    let lookup_values = values.clone().or_else(|| existing.as_ref().map(Record::target_values));
    let target_object = match &lookup_values {
        Some(values) => target_object(target, values).await,
        None => Value::Null,
    };
    // 5. The change the connector would receive, and the answer the client would get.
    let policy = &target.handle.config.deprovision;
    let (change, answer, note): (Option<v1::CsEntryChange>, u16, String) = match parsed.method.as_str() {
        "POST" => match &matched {
            Some(r) if r.state == RecordState::Present => {
                (None, 409, format!("{} {:?} is taken by {}", K::UNIQUE, r.user_name, r.id))
            }
            other => {
                let values = values.as_ref().expect("a create has values");
                let record = Record {
                    app: app.name.clone(),
                    resource_type: K::NAME.into(),
                    id: "(assigned at create)".into(),
                    connector: connector.into(),
                    state: RecordState::Pending,
                    user_name: name.clone().unwrap_or_default(),
                    resource: Value::Null,
                    target: v1::Entry::default(),
                    version: 1,
                    created: String::new(),
                    modified: String::new(),
                };
                let secret = crate::provision::Password("[redacted]".into());
                let change = add_change(target, &record, values, password.then_some(&secret));
                match other {
                    Some(r) => (
                        Some(change),
                        201,
                        format!(
                            "the name belongs to a {} record: the create looks the object up first and adds it only if absent",
                            r.state.as_str()
                        ),
                    ),
                    // The target has an object with this matching value that the connector space
                    // does not know: the connector refuses the ADD (a full import would bring it in).
                    None if target_object["found"] == true => (
                        Some(change),
                        409,
                        format!(
                            "the target already has an object with this {} (anchor {}), unknown to the connector space: the connector will refuse the ADD; an import brings it in",
                            target_object["by"].as_str().unwrap_or("matching value"),
                            target_object["anchor"].as_str().unwrap_or("")
                        ),
                    ),
                    None => (Some(change), 201, "a new object".into()),
                }
            }
        },
        "PUT" | "PATCH" => {
            let record = existing.as_ref().expect("an update names its resource");
            let resource = resource.as_ref().expect("an update has a resource");
            let name = name.as_deref().unwrap_or_default();
            match store.by_user_name(&app.name, K::NAME, name).await.map_err(store_error)? {
                Some(other) if other.id != record.id => {
                    (None, 409, format!("{} {name:?} belongs to {}", K::UNIQUE, other.id))
                }
                _ => {
                    let before = record.target_values();
                    let mut after = values.clone().expect("an update has values");
                    let active = is_active(resource);
                    if policy.on_disable == DeprovisionAction::Delete
                        && !active
                        && !record.target.anchors.is_empty()
                    {
                        let change = change_of(target, record, v1::ObjectModificationType::Delete, vec![]);
                        (
                            Some(change),
                            200,
                            "disabled: the target object is deleted (deprovision.on_disable = \"delete\")"
                                .into(),
                        )
                    } else {
                        if policy.on_disable == DeprovisionAction::Set && !active {
                            after.extend(set_values(policy));
                        }
                        let changes = Mapping::update_changes(&before, &after, &target.shape());
                        let renamed = Mapping::dn(&after).filter(|dn| *dn != record.target.dn);
                        if changes.is_empty() && renamed.is_none() && !password {
                            (None, 200, "nothing changes in the target".into())
                        } else {
                            let mut change =
                                change_of(target, record, v1::ObjectModificationType::Update, changes);
                            if let Some(dn) = renamed {
                                change.dn = dn;
                            }
                            let note =
                                if password { "the password is set after the update" } else { "an update" };
                            (Some(change), 200, note.into())
                        }
                    }
                }
            }
        }
        _ => {
            let record = existing.as_ref().expect("a DELETE names its resource");
            let delete = change_of(target, record, v1::ObjectModificationType::Delete, vec![]);
            match policy.on_delete {
                _ if record.target.anchors.is_empty() => {
                    (None, 204, "the target object was already removed on disable".into())
                }
                DeprovisionAction::Delete => (Some(delete), 204, "the target object is deleted".into()),
                DeprovisionAction::Set => {
                    let before = record.target_values();
                    let mut after = before.clone();
                    after.extend(set_values(policy));
                    let changes = Mapping::update_changes(&before, &after, &target.shape());
                    let change = v1::CsEntryChange {
                        modification_type: v1::ObjectModificationType::Update as i32,
                        attribute_changes: changes,
                        ..delete
                    };
                    (Some(change), 204, "deprovisioned: the object is kept with the configured values".into())
                }
                DeprovisionAction::None => {
                    (None, 204, "deprovisioned: the object is kept in the target unchanged".into())
                }
            }
        }
    };
    Ok(json!({
        "app": app.name,
        "resourceType": K::NAME,
        "connector": connector,
        "method": parsed.method,
        "id": parsed.id,
        "normalised": normalised,
        "name": name,
        "password": if password { Some("sent (never shown)") } else { None },
        "record": matched.as_ref().map(record_json),
        "values": shown_values,
        "dn": values.as_ref().and_then(Mapping::dn),
        "targetObject": target_object,
        "change": change.as_ref().map(|c| change_json(c, password_attribute)),
        "answer": answer,
        "note": note,
        "written": false,
    }))
}

/// The status a dry run's error would have been for the real request, and its body.
pub fn error_json(error: &ScimError) -> Value {
    json!({"answer": error.status.as_u16(), "scimType": error.scim_type, "detail": error.detail, "written": false})
}
