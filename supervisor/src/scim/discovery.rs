//! Discovery (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`. They say
//! what this service really does: PATCH, filters, sorting and ETags yes; bulk and password
//! changes no.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ScimError;
use super::query::MAX_COUNT;
use super::resource::{GROUP_SCHEMA, LIST_RESPONSE, USER_SCHEMA};
use super::{ScimState, scim_json};

pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// An attribute definition (RFC 7643 §7) with the common defaults.
struct Attr(serde_json::Map<String, Value>);

fn attr(name: &str, kind: &str) -> Attr {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), json!(name));
    m.insert("type".into(), json!(kind));
    m.insert("multiValued".into(), json!(false));
    m.insert("description".into(), json!(""));
    m.insert("required".into(), json!(false));
    if kind == "string" || kind == "reference" {
        m.insert("caseExact".into(), json!(false));
    }
    m.insert("mutability".into(), json!("readWrite"));
    m.insert("returned".into(), json!("default"));
    m.insert("uniqueness".into(), json!("none"));
    Attr(m)
}

fn s(name: &str) -> Attr {
    attr(name, "string")
}

impl Attr {
    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }
    fn multi(self) -> Self {
        self.set("multiValued", json!(true))
    }
    fn required(self) -> Self {
        self.set("required", json!(true))
    }
    fn read_only(self) -> Self {
        self.set("mutability", json!("readOnly"))
    }
    fn case_exact(self) -> Self {
        self.set("caseExact", json!(true))
    }
    fn describe(self, text: &str) -> Self {
        self.set("description", json!(text))
    }
    fn canonical(self, values: &[&str]) -> Self {
        self.set("canonicalValues", json!(values))
    }
    fn refs(self, types: &[&str]) -> Self {
        self.set("referenceTypes", json!(types))
    }
    fn subs(self, subs: Vec<Attr>) -> Self {
        self.set("subAttributes", Value::Array(subs.into_iter().map(Attr::done).collect()))
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// A multi-valued complex attribute of the usual shape: value, display, type, primary.
fn multi_valued(name: &str, types: &[&str], value: Attr) -> Attr {
    attr(name, "complex").multi().subs(vec![
        value,
        s("display"),
        s("type").canonical(types),
        attr("primary", "boolean"),
    ])
}

fn user_schema() -> Value {
    let attributes = vec![
        s("userName")
            .required()
            .set("uniqueness", json!("server"))
            .describe("Unique identifier for the User"),
        attr("name", "complex").subs(vec![
            s("formatted"),
            s("familyName"),
            s("givenName"),
            s("middleName"),
            s("honorificPrefix"),
            s("honorificSuffix"),
        ]),
        s("displayName"),
        s("nickName"),
        attr("profileUrl", "reference").refs(&["external"]),
        s("title"),
        s("userType"),
        s("preferredLanguage"),
        s("locale"),
        s("timezone"),
        attr("active", "boolean"),
        s("password")
            .set("mutability", json!("writeOnly"))
            .set("returned", json!("never"))
            .describe("Handed to the connector, never stored or returned"),
        multi_valued("emails", &["work", "home", "other"], s("value")),
        multi_valued("phoneNumbers", &["work", "home", "mobile", "fax", "pager", "other"], s("value")),
        multi_valued("ims", &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"], s("value")),
        multi_valued("photos", &["photo", "thumbnail"], attr("value", "reference").refs(&["external"])),
        attr("addresses", "complex").multi().subs(vec![
            s("formatted"),
            s("streetAddress"),
            s("locality"),
            s("region"),
            s("postalCode"),
            s("country"),
            s("type").canonical(&["work", "home", "other"]),
            attr("primary", "boolean"),
        ]),
        // `groups` is not listed: Users are not answered with their groups (see the Groups'
        // members instead), and this schema only says what the service does.
        multi_valued("entitlements", &[], s("value")),
        multi_valued("roles", &[], s("value")),
        multi_valued("x509Certificates", &[], attr("value", "binary")),
    ];
    schema(USER_SCHEMA, "User", "User Account", attributes)
}

fn enterprise_schema() -> Value {
    let attributes = vec![
        s("employeeNumber"),
        s("costCenter"),
        s("organization"),
        s("division"),
        s("department"),
        attr("manager", "complex").subs(vec![
            s("value").describe("The id of the manager's User"),
            attr("$ref", "reference").refs(&["User"]),
            s("displayName").read_only(),
        ]),
    ];
    schema(ENTERPRISE_USER_SCHEMA, "EnterpriseUser", "Enterprise User", attributes)
}

fn group_schema() -> Value {
    let attributes = vec![
        s("displayName").required(),
        attr("members", "complex").multi().subs(vec![
            s("value").set("mutability", json!("immutable")).case_exact(),
            attr("$ref", "reference").refs(&["User", "Group"]).set("mutability", json!("immutable")),
            s("display").read_only(),
            s("type").canonical(&["User", "Group"]).set("mutability", json!("immutable")),
        ]),
    ];
    schema(GROUP_SCHEMA, "Group", "Group", attributes)
}

fn schema(id: &str, name: &str, description: &str, attributes: Vec<Attr>) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes.into_iter().map(Attr::done).collect::<Vec<_>>(),
    })
}

fn resource_types(app: &App) -> Vec<Value> {
    let (base, groups) = (app.base.as_str(), app.groups);
    let extensions_of = |resource: &str| -> Vec<Value> {
        app.extensions
            .iter()
            .filter(|e| e.resource == resource)
            .map(|e| json!({"schema": e.urn, "required": false}))
            .collect()
    };
    let mut user_extensions = vec![json!({"schema": ENTERPRISE_USER_SCHEMA, "required": false})];
    user_extensions.extend(extensions_of("User"));
    let mut types = vec![json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": USER_SCHEMA,
        "schemaExtensions": user_extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
    })];
    if groups {
        types.push(json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": extensions_of("Group"),
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }));
    }
    types
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// Discovery answers need no token (RFC 7644 §4 allows either); they hold no data.
pub struct App {
    base: String,
    groups: bool,
    extensions: Vec<super::Extension>,
}

fn app(
    state: &ScimState,
    name: &str,
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
) -> Result<App, ScimError> {
    // An unknown app's name is never echoed (nor told apart from a known one without a token).
    let app =
        state.apps.get(name).ok_or_else(|| ScimError::unauthorized(headers.contains_key("authorization")))?;
    Ok(App {
        base: format!("{}/scim/{name}", state.base_url(headers, uri)),
        groups: app.groups.is_some(),
        extensions: app.extensions.clone(),
    })
}

pub async fn service_provider_config(
    State(state): State<Arc<ScimState>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ScimError> {
    let app = app(&state, &name, &headers, &uri)?;
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [SPC_SCHEMA],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_COUNT},
            "changePassword": {"supported": true},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token in the Authorization header",
                "primary": true
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", app.base)},
        }),
    ))
}

pub async fn list_resource_types(
    State(state): State<Arc<ScimState>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ScimError> {
    let app = app(&state, &name, &headers, &uri)?;
    Ok(scim_json(StatusCode::OK, &list(resource_types(&app))))
}

pub async fn get_resource_type(
    State(state): State<Arc<ScimState>>,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ScimError> {
    let app = app(&state, &name, &headers, &uri)?;
    resource_types(&app)
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .map(|t| scim_json(StatusCode::OK, &t))
        .ok_or_else(|| ScimError::not_found(format!("no resource type {id:?}")))
}

/// The definition of a custom extension schema.
fn extension_schema(e: &super::Extension) -> Value {
    let attributes = e.attributes.iter().map(|(name, kind)| attr(name, kind.scim_name())).collect();
    schema(&e.urn, e.urn.rsplit(':').next().unwrap_or("Extension"), &e.description, attributes)
}

/// The schemas of one resource type (`User` or `Group`), core schema first, then its
/// extensions (the enterprise one for Users, then the app's own), located under `base`.
pub fn schemas_of(resource: &str, extensions: &[super::Extension], base: &str) -> Vec<Value> {
    let mut schemas = match resource {
        "User" => vec![user_schema(), enterprise_schema()],
        _ => vec![group_schema()],
    };
    schemas.extend(extensions.iter().filter(|e| e.resource == resource).map(extension_schema));
    for s in &mut schemas {
        let id = s["id"].as_str().unwrap_or_default().to_string();
        s["meta"] = json!({"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")});
    }
    schemas
}

fn app_schemas(app: &App) -> Vec<Value> {
    let mut schemas = schemas_of("User", &app.extensions, &app.base);
    if app.groups {
        schemas.extend(schemas_of("Group", &app.extensions, &app.base));
    }
    schemas
}

pub async fn list_schemas(
    State(state): State<Arc<ScimState>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ScimError> {
    let app = app(&state, &name, &headers, &uri)?;
    Ok(scim_json(StatusCode::OK, &list(app_schemas(&app))))
}

pub async fn get_schema(
    State(state): State<Arc<ScimState>>,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ScimError> {
    let app = app(&state, &name, &headers, &uri)?;
    app_schemas(&app)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id)))
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("no schema {id:?}")))
}

/// The answer to a write on a read-only endpoint.
pub async fn method_not_allowed() -> ScimError {
    ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, "this endpoint is read-only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_describe_every_attribute_fully() {
        let mut all = schemas_of("User", &[], "https://h/scim/a");
        all.extend(schemas_of("Group", &[], "https://h/scim/a"));
        for schema in all {
            for attribute in schema["attributes"].as_array().unwrap() {
                for key in ["name", "type", "multiValued", "required", "mutability", "returned", "uniqueness"]
                {
                    assert!(attribute.get(key).is_some(), "{} lacks {key}", attribute["name"]);
                }
            }
        }
        let user = user_schema();
        let user_name = &user["attributes"][0];
        assert_eq!(
            (user_name["name"].as_str(), user_name["uniqueness"].as_str()),
            (Some("userName"), Some("server"))
        );
    }
}
