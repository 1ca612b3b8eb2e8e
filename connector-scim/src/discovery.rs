//! What the downstream service says of itself (RFC 7644 section 4): `/ServiceProviderConfig`
//! (PATCH, filters, ETags, cursor paging), `/ResourceTypes` (the endpoint and extensions of the
//! configured resource type) and `/Schemas` (its attributes), turned into the connector's
//! schema: every writable attribute as a path (`resource::Path`).

use std::collections::BTreeMap;

use ecma_proto::v1::{self, AttributeType};
use serde_json::Value as Json;

use ecma_connector_sdk::declared::Declared;

use crate::resource::find;

/// What the service supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    pub patch: bool,
    pub filter: bool,
    pub etag: bool,
    /// RFC 9865 cursor paging.
    pub cursor: bool,
}

impl Features {
    pub fn read(config: &Json) -> Self {
        let flag = |name: &str| {
            config
                .as_object()
                .and_then(|o| find(o, name))
                .and_then(|v| v.as_object())
                .and_then(|o| find(o, "supported"))
                .and_then(Json::as_bool)
                .unwrap_or(false)
        };
        let cursor = config
            .as_object()
            .and_then(|o| find(o, "pagination"))
            .and_then(|p| p.as_object())
            .and_then(|p| find(p, "cursor"))
            .and_then(Json::as_bool)
            .unwrap_or(false);
        Self { patch: flag("patch"), filter: flag("filter"), etag: flag("etag"), cursor }
    }
}

/// One attribute of the connector's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Its path (`name.givenName`, `emails[type eq "work"].value`, an extension's URN first).
    pub name: String,
    pub kind: AttributeType,
    /// Whether the connector attribute has several values.
    pub multi: bool,
    /// The downstream attribute's multi-valuedness and complexity (how a value is written).
    pub downstream_multi: bool,
    pub complex: bool,
}

/// The resource type the connector serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub endpoint: String,
    pub schema: String,
    pub extensions: Vec<String>,
    pub attributes: Vec<Attribute>,
}

fn kind_of(scim_type: &str) -> AttributeType {
    match scim_type {
        "boolean" => AttributeType::Boolean,
        "integer" => AttributeType::Integer,
        "binary" => AttributeType::Binary,
        "reference" => AttributeType::Reference,
        _ => AttributeType::String,
    }
}

fn text<'a>(o: &'a serde_json::Map<String, Json>, name: &str) -> &'a str {
    find(o, name).and_then(Json::as_str).unwrap_or("")
}

fn flag(o: &serde_json::Map<String, Json>, name: &str) -> bool {
    find(o, name).and_then(Json::as_bool).unwrap_or(false)
}

fn writable(o: &serde_json::Map<String, Json>) -> bool {
    !matches!(text(o, "mutability"), "readOnly")
}

/// Whether a complex attribute's `value` refers to other resources (members, a manager).
fn refers(sub: &[Json]) -> bool {
    sub.iter().filter_map(Json::as_object).any(|s| {
        matches!(text(s, "name"), "value" | "$ref")
            && (text(s, "type") == "reference" || find(s, "referenceTypes").is_some())
    })
}

/// The attributes of one schema, as paths (`prefix` is the extension's URN and a colon).
fn schema_attributes(schema: &Json, prefix: &str, out: &mut Vec<Attribute>) {
    let Some(attributes) = schema.as_object().and_then(|o| find(o, "attributes")).and_then(Json::as_array)
    else {
        return;
    };
    for a in attributes.iter().filter_map(Json::as_object).filter(|a| writable(a)) {
        let name = text(a, "name");
        if name.is_empty() || name == "id" || name == "password" {
            continue;
        }
        let multi = flag(a, "multiValued");
        let scim_type = text(a, "type");
        if scim_type != "complex" {
            out.push(Attribute {
                name: format!("{prefix}{name}"),
                kind: kind_of(scim_type),
                multi,
                downstream_multi: multi,
                complex: false,
            });
            continue;
        }
        let sub: Vec<Json> = find(a, "subAttributes").and_then(Json::as_array).cloned().unwrap_or_default();
        let subs: Vec<&serde_json::Map<String, Json>> =
            sub.iter().filter_map(Json::as_object).filter(|s| writable(s)).collect();
        let types: Vec<String> = subs
            .iter()
            .find(|s| text(s, "name") == "type")
            .and_then(|s| find(s, "canonicalValues"))
            .and_then(Json::as_array)
            .map(|v| v.iter().filter_map(Json::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if !multi {
            if refers(&sub) {
                // A manager: the attribute's value is the other resource's id.
                out.push(Attribute {
                    name: format!("{prefix}{name}"),
                    kind: AttributeType::Reference,
                    multi: false,
                    downstream_multi: false,
                    complex: true,
                });
            }
            for s in &subs {
                let sub_name = text(s, "name");
                if sub_name == "$ref" || (sub_name == "value" && refers(&sub)) {
                    continue;
                }
                out.push(Attribute {
                    name: format!("{prefix}{name}.{sub_name}"),
                    kind: kind_of(text(s, "type")),
                    multi: false,
                    downstream_multi: false,
                    complex: true,
                });
            }
        } else if types.is_empty() || refers(&sub) {
            // Members, roles, entitlements: the values' `value`s.
            let value_type =
                subs.iter().find(|s| text(s, "name") == "value").map(|s| text(s, "type")).unwrap_or("string");
            out.push(Attribute {
                name: format!("{prefix}{name}"),
                kind: if refers(&sub) { AttributeType::Reference } else { kind_of(value_type) },
                multi: true,
                downstream_multi: true,
                complex: true,
            });
        } else {
            // Emails, phone numbers, addresses: one value per canonical type.
            for t in &types {
                for s in subs
                    .iter()
                    .filter(|s| !matches!(text(s, "name"), "type" | "primary" | "display" | "$ref"))
                {
                    out.push(Attribute {
                        name: format!("{prefix}{name}[type eq \"{t}\"].{}", text(s, "name")),
                        kind: kind_of(text(s, "type")),
                        multi: false,
                        downstream_multi: true,
                        complex: true,
                    });
                }
            }
        }
    }
}

/// The resource type named `name` (or whose endpoint is `/name`) from the service's answers.
pub fn resource(name: &str, resource_types: &[Json], schemas: &[Json]) -> Result<Resource, String> {
    let wanted = name.trim_start_matches('/');
    let rt = resource_types
        .iter()
        .filter_map(Json::as_object)
        .find(|rt| {
            text(rt, "name").eq_ignore_ascii_case(wanted)
                || text(rt, "id").eq_ignore_ascii_case(wanted)
                || text(rt, "endpoint").trim_start_matches('/').eq_ignore_ascii_case(wanted)
        })
        .ok_or_else(|| {
            let names: Vec<&str> =
                resource_types.iter().filter_map(Json::as_object).map(|rt| text(rt, "name")).collect();
            format!("the service has no resource type {name:?} (it has {})", names.join(", "))
        })?;
    let by_id: BTreeMap<String, &Json> =
        schemas.iter().filter_map(|s| Some((s.as_object().map(|o| text(o, "id"))?.to_string(), s))).collect();
    let schema = text(rt, "schema").to_string();
    let extensions: Vec<String> = find(rt, "schemaExtensions")
        .and_then(Json::as_array)
        .map(|e| e.iter().filter_map(|x| x.as_object().map(|o| text(o, "schema").to_string())).collect())
        .unwrap_or_default();
    // externalId is common to every resource (RFC 7643 3.1), not in the schemas.
    let mut attributes = vec![Attribute {
        name: "externalId".into(),
        kind: AttributeType::String,
        multi: false,
        downstream_multi: false,
        complex: false,
    }];
    let core = by_id.get(&schema).ok_or_else(|| format!("the service's /Schemas lacks {schema}"))?;
    schema_attributes(core, "", &mut attributes);
    for ext in &extensions {
        if let Some(s) = by_id.get(ext) {
            schema_attributes(s, &format!("{ext}:"), &mut attributes);
        }
    }
    Ok(Resource { endpoint: text(rt, "endpoint").to_string(), schema, extensions, attributes })
}

impl Resource {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The connector's schema type: `id` (import only) and every attribute.
    pub fn schema_type(&self, object_type: &str) -> v1::SchemaType {
        let declared: Vec<Declared> = self
            .attributes
            .iter()
            .map(|a| Declared { name: a.name.clone(), kind: a.kind, multi: a.multi })
            .collect();
        ecma_connector_sdk::declared::schema_type(object_type, "id", &declared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_becomes_paths() {
        let user = json!({"id": "urn:ietf:params:scim:schemas:core:2.0:User", "attributes": [
            {"name": "userName", "type": "string", "multiValued": false, "mutability": "readWrite"},
            {"name": "id", "type": "string", "multiValued": false, "mutability": "readOnly"},
            {"name": "active", "type": "boolean", "multiValued": false},
            {"name": "name", "type": "complex", "multiValued": false, "subAttributes": [
                {"name": "givenName", "type": "string"}, {"name": "formatted", "type": "string", "mutability": "readOnly"}]},
            {"name": "emails", "type": "complex", "multiValued": true, "subAttributes": [
                {"name": "value", "type": "string"}, {"name": "type", "type": "string", "canonicalValues": ["work", "home"]},
                {"name": "primary", "type": "boolean"}]},
            {"name": "groups", "type": "complex", "multiValued": true, "mutability": "readOnly", "subAttributes": []}
        ]});
        let ext = json!({"id": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "attributes": [
            {"name": "manager", "type": "complex", "multiValued": false, "subAttributes": [
                {"name": "value", "type": "string"}, {"name": "$ref", "type": "reference", "referenceTypes": ["User"]},
                {"name": "displayName", "type": "string", "mutability": "readOnly"}]}]});
        let group = json!({"id": "urn:ietf:params:scim:schemas:core:2.0:Group", "attributes": [
            {"name": "members", "type": "complex", "multiValued": true, "subAttributes": [
                {"name": "value", "type": "string", "mutability": "immutable"}, {"name": "$ref", "type": "reference", "referenceTypes": ["User", "Group"]},
                {"name": "type", "type": "string", "canonicalValues": ["User", "Group"]}]}]});
        let types = [
            json!({"name": "User", "endpoint": "/Users", "schema": "urn:ietf:params:scim:schemas:core:2.0:User",
                   "schemaExtensions": [{"schema": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}]}),
            json!({"name": "Group", "endpoint": "/Groups", "schema": "urn:ietf:params:scim:schemas:core:2.0:Group"}),
        ];
        let schemas = [user, ext, group];
        let r = resource("Users", &types, &schemas).unwrap();
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "externalId",
                "userName",
                "active",
                "name.givenName",
                "emails[type eq \"work\"].value",
                "emails[type eq \"home\"].value",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            ]
        );
        assert_eq!(r.attribute("active").unwrap().kind, AttributeType::Boolean);
        assert_eq!(r.attributes[6].kind, AttributeType::Reference);
        let g = resource("group", &types, &schemas).unwrap();
        assert_eq!(g.attributes[1].name, "members");
        assert!(g.attributes[1].multi && g.attributes[1].kind == AttributeType::Reference);
        assert!(resource("Devices", &types, &schemas).unwrap_err().contains("User, Group"));
        let f = Features::read(
            &json!({"patch": {"supported": true}, "etag": {"supported": false}, "pagination": {"cursor": true}}),
        );
        assert_eq!(f, Features { patch: true, filter: false, etag: false, cursor: true });
    }
}
