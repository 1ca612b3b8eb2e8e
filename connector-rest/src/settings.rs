//! The connector's parameters (docs/rest-connector.md lists every one): the service, how to
//! authenticate and reach it over TLS, the object and its attributes, each operation's request
//! template, where things are in the answers, and how imports page.

use std::collections::BTreeSet;

use connector_web::{HttpSettings, Method, bad, header::HeaderName, header_name, json_object, number};
use ecma_connector_sdk::declared::{Declared, parse_declaration};
use ecma_connector_sdk::{ConfigExt, ConnectorError, Parameter};
use ecma_proto::v1::{
    AttributeType, ConfigParameterDefinition, ConfigParameterType as T, ConfigParameters, ErrorKind,
};

use crate::extract::{Selector, Shape};
use crate::template::{Absent, JsonTemplate, Soap, Text, XmlTemplate};

/// The operations a request can be configured for, with their default request.
pub const OPERATIONS: [(&str, &str, &str); 7] = [
    ("create", "POST", "Creates an object; its answer gives the anchor (id_path)"),
    ("get", "GET", "Reads one object by its anchor (lookups, and updates that need the whole object)"),
    ("update", "PUT", "Updates an object (see update_mode)"),
    ("delete", "DELETE", "Deletes an object"),
    ("list", "GET", "Lists objects for imports, a page at a time (see paging)"),
    ("search", "GET", "Finds objects by an attribute's value ({{attribute}}, {{value}}) for lookups"),
    ("set_password", "POST", "Sets or changes a password ({{password}}, {{old_password}})"),
];

/// The parameters this connector declares.
pub fn definitions() -> Vec<ConfigParameterDefinition> {
    let p = |name: &str, kind: T, help: &str| Parameter::new(name, kind, help);
    let mut out = connector_web::definitions();
    out.extend([
        p("format", T::String, "json, xml or soap").default("json"),
        p("soap_version", T::String, "1.1 or 1.2 (format = soap)").default("1.1"),
        p("namespaces", T::Text, "XML namespaces for XPath, a JSON object prefix -> URI").default("{}"),
        p("concurrency", T::Integer, "Requests in flight at once within one export batch").default("8"),
        p("object_type", T::String, "Object type name").default("user"),
        p("partition", T::String, "The one partition's name").default("default"),
        p("attributes", T::Text, "Comma-separated `name[:string|integer|boolean|binary|reference][*]` (* = multi-valued)").required(),
        p("anchor_attribute", T::String, "The attribute that holds the service's id of an object").default("id"),
        p("unique_attribute", T::String, "An attribute the service should keep unique but does not: a create first looks for an object with its value (search), and one found is ALREADY_EXISTS"),
        p("id_path", T::String, "Where the id is in an object (JSONPath or XPath)").default("$.id"),
        p("attribute_paths", T::Text, "Where each attribute is in an object, a JSON object attribute -> JSONPath/XPath (default: a member or child element of its name)").default("{}"),
        p("object_path", T::String, "Where the object is in the answer of get, create and update (default: the whole answer; SOAP: the result in the response element)"),
        p("items_path", T::String, "Where the objects are in the answer of list and search").default("$[*]"),
        p("absent", T::String, "What a JSON body does with a placeholder without value: omit or null").default("omit"),
        p("update_mode", T::String, "put (the whole object, read first with get), patch or merge-patch (only the changes)").default("put"),
        p("paging", T::String, "none, page, offset, cursor or link").default("none"),
        p("page_size", T::Integer, "Objects per page asked for ({{limit}})").default("100"),
        p("first_page", T::Integer, "Number of the first page ({{page}})").default("1"),
        p("next_path", T::String, "Where the next page's cursor (paging = cursor) or URL (paging = link; default: the Link header) is"),
        p("delta_query", T::Text, "Query parameters added to list for a delta import, a JSON object using {{watermark}}"),
        p("watermark_path", T::String, "Where an object's modification time is (delta imports)"),
        p("error_message_path", T::String, "Where the service's message is in an error answer"),
        p("error_kinds", T::Text, "Error kinds by a word of the service's message or SOAP fault code, a JSON object word -> kind").default("{}"),
    ]);
    for (op, method, help) in OPERATIONS {
        out.push(p(
            op,
            T::String,
            &format!("{help}: `METHOD /path/{{{{anchor}}}}` (default method {method})"),
        ));
        out.push(p(&format!("{op}_query"), T::Text, "Query parameters, a JSON object name -> template"));
        out.push(p(&format!("{op}_body"), T::Text, "Body template (JSON, or XML for xml and soap)"));
        out.push(p(
            &format!("{op}_status"),
            T::String,
            "Statuses that mean success, comma-separated (default: any 2xx)",
        ));
        out.push(p(&format!("{op}_headers"), T::Text, "Headers of this operation, a JSON object"));
        out.push(p(&format!("{op}_action"), T::String, "SOAPAction (format = soap)"));
    }
    out.into_iter().map(Parameter::definition).collect()
}

/// The body format of requests and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
    Soap(Soap),
}

impl Format {
    pub fn is_xml(self) -> bool {
        !matches!(self, Format::Json)
    }
}

/// A body template.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    Json(JsonTemplate),
    Xml(XmlTemplate),
}

impl BodyTemplate {
    pub fn vars(&self) -> BTreeSet<String> {
        match self {
            BodyTemplate::Json(t) => t.vars(),
            BodyTemplate::Xml(t) => t.vars(),
        }
    }
}

/// One configured operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: &'static str,
    pub method: Method,
    pub path: Text,
    pub query: Vec<(String, Text)>,
    pub body: Option<BodyTemplate>,
    /// Statuses that mean success (empty: any 2xx).
    pub statuses: Vec<u16>,
    pub headers: Vec<(HeaderName, Text)>,
    pub action: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    Put,
    Patch,
    MergePatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    None,
    Page,
    Offset,
    Cursor,
    Link,
}

/// Delta imports: the query that asks for what changed since the watermark.
#[derive(Debug, Clone)]
pub struct Delta {
    pub query: Vec<(String, Text)>,
}

/// Settings read from one configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service's URL, TLS and authentication.
    pub connection: HttpSettings,
    pub format: Format,
    pub namespaces: Vec<(String, String)>,
    pub concurrency: usize,
    pub object_type: String,
    pub partition: String,
    pub attributes: Vec<Declared>,
    pub anchor: String,
    pub unique_attribute: Option<String>,
    pub shape: Shape,
    pub object_path: Option<Selector>,
    pub items_path: Selector,
    pub absent: Absent,
    pub update_mode: UpdateMode,
    pub paging: Paging,
    pub page_size: u64,
    pub first_page: u64,
    pub next_path: Option<Selector>,
    pub delta: Option<Delta>,
    pub error_message_path: Option<Selector>,
    pub error_kinds: Vec<(String, ErrorKind)>,
    pub operations: Vec<Operation>,
}

/// The error kind a name in `error_kinds` gives.
fn kind_named(name: &str) -> Option<ErrorKind> {
    Some(match name {
        "already_exists" => ErrorKind::AlreadyExists,
        "no_such_object" => ErrorKind::NoSuchObject,
        "permission_denied" => ErrorKind::PermissionDenied,
        "invalid_attribute_value" => ErrorKind::InvalidAttributeValue,
        "constraint_violation" => ErrorKind::ConstraintViolation,
        "retryable" => ErrorKind::Retryable,
        "schema_violation" => ErrorKind::SchemaViolation,
        "internal" => ErrorKind::Internal,
        _ => return None,
    })
}

impl Settings {
    /// Reads a configuration against the declared parameters; a problem names its parameter
    /// and says what it should be.
    pub fn read(config: &Option<ConfigParameters>) -> Result<Self, ConnectorError> {
        let declared = definitions();
        let config = &ecma_connector_sdk::Settings::new(&declared, config);
        let connection = HttpSettings {
            user_agent: concat!("connector-rest/", env!("CARGO_PKG_VERSION")).into(),
            ..HttpSettings::read(config)?
        };
        let format = match (config.text("format"), config.text("soap_version")) {
            ("json", _) => Format::Json,
            ("xml", _) => Format::Xml,
            ("soap", "1.1") => Format::Soap(Soap::V11),
            ("soap", "1.2") => Format::Soap(Soap::V12),
            ("soap", other) => return Err(bad("soap_version", format!("{other:?} is not 1.1 or 1.2"))),
            (other, _) => return Err(bad("format", format!("{other:?} is not json, xml or soap"))),
        };
        let xml = format.is_xml();
        let namespaces = json_object(config, "namespaces")?;
        let selector = |key: &str| -> Result<Option<Selector>, ConnectorError> {
            config.get(key).map(|t| Selector::parse(t, xml).map_err(|e| bad(key, e))).transpose()
        };
        let attributes = parse_declaration("attributes", config.text("attributes"))?;
        let anchor = config.text("anchor_attribute").to_string();
        let explicit = json_object(config, "attribute_paths")?;
        if let Some((name, _)) = explicit.iter().find(|(n, _)| !attributes.iter().any(|a| a.name == *n)) {
            return Err(bad("attribute_paths", format!("{name:?} is not a declared attribute")));
        }
        let mut attribute_paths = Vec::new();
        for a in &attributes {
            let text = match explicit.iter().find(|(n, _)| *n == a.name) {
                Some((_, path)) => path.clone(),
                // An element of its name; a multi-valued one holds an element per value.
                None if xml && a.multi => format!("*[local-name()='{}']/*", a.name.replace('\'', "")),
                None if xml => format!("*[local-name()='{}']", a.name.replace('\'', "")),
                None => format!("$['{}']", a.name.replace('\\', "\\\\").replace('\'', "\\'")),
            };
            attribute_paths
                .push((a.name.clone(), Selector::parse(&text, xml).map_err(|e| bad("attribute_paths", e))?));
        }
        let id_default = if xml { "*[local-name()='id']" } else { "$.id" };
        let id_text = config.get("id_path").filter(|t| !(xml && *t == "$.id")).unwrap_or(id_default);
        let shape = Shape {
            anchor: Selector::parse(id_text, xml).map_err(|e| bad("id_path", e))?,
            attributes: attribute_paths,
            watermark: selector("watermark_path")?,
            namespaces: namespaces.clone(),
        };
        let items_text = config.text("items_path");
        let items_path = match (xml, items_text) {
            (true, "$[*]") if config.get("list").is_some() || config.get("search").is_some() => {
                return Err(bad(
                    "items_path",
                    "is required with format = xml or soap: an XPath to the objects in the answers of list and search",
                ));
            }
            (true, "$[*]") => Selector::Xml("/*".into()),
            _ => Selector::parse(items_text, xml).map_err(|e| bad("items_path", e))?,
        };
        let mut operations = Vec::new();
        for (op, default_method, _) in OPERATIONS {
            let Some(spec) = config.get(op) else { continue };
            operations.push(read_operation(config, op, default_method, spec, format)?);
        }
        let has = |op: &str| operations.iter().any(|o| o.name == op);
        for op in ["create", "update", "delete"] {
            if !has(op) {
                return Err(bad(
                    op,
                    format!("is required: the request that does a {op}, like `POST /users`"),
                ));
            }
        }
        let attributes_declared: Vec<String> = shape.attributes.iter().map(|(n, _)| n.clone()).collect();
        let update_mode = match config.text("update_mode") {
            "put" => UpdateMode::Put,
            "patch" => UpdateMode::Patch,
            "merge-patch" => UpdateMode::MergePatch,
            other => return Err(bad("update_mode", format!("{other:?} is not put, patch or merge-patch"))),
        };
        if update_mode == UpdateMode::Put && !has("get") {
            return Err(bad(
                "get",
                "is required with update_mode = put (the object is read before it is replaced)",
            ));
        }
        if xml && update_mode != UpdateMode::Put {
            return Err(bad("update_mode", "must be put with format = xml or soap"));
        }
        let paging = match config.text("paging") {
            "none" => Paging::None,
            "page" => Paging::Page,
            "offset" => Paging::Offset,
            "cursor" => Paging::Cursor,
            "link" => Paging::Link,
            other => {
                return Err(bad("paging", format!("{other:?} is not none, page, offset, cursor or link")));
            }
        };
        let next_path = selector("next_path")?;
        if paging == Paging::Cursor && next_path.is_none() {
            return Err(bad("next_path", "is required with paging = cursor"));
        }
        let delta = match config.get("delta_query") {
            None => None,
            Some(_) => {
                if shape.watermark.is_none() {
                    return Err(bad("watermark_path", "is required with delta_query"));
                }
                Some(Delta { query: query_of(config, "delta_query")? })
            }
        };
        let error_kinds = json_object(config, "error_kinds")?
            .into_iter()
            .map(|(word, kind)| match kind_named(&kind) {
                Some(k) => Ok((word.to_lowercase(), k)),
                None => Err(bad("error_kinds", format!("{kind:?} (for {word:?}) is not an error kind: already_exists, no_such_object, permission_denied, invalid_attribute_value, constraint_violation, retryable, schema_violation or internal"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let settings = Settings {
            connection,
            format,
            namespaces,
            concurrency: number(config, "concurrency")?.clamp(1, 256) as usize,
            object_type: config.text("object_type").to_string(),
            partition: config.text("partition").to_string(),
            attributes,
            anchor,
            unique_attribute: match config.get("unique_attribute") {
                Some(name) if !attributes_declared.contains(&name.to_string()) => {
                    return Err(bad("unique_attribute", format!("{name:?} is not a declared attribute")));
                }
                other => other.map(str::to_string),
            },
            shape,
            object_path: match (selector("object_path")?, format) {
                (Some(at), _) => Some(at),
                // The operation's result, inside its response element, inside the Body.
                (None, Format::Soap(_)) => Some(Selector::Xml("//*[local-name()='Body']/*/*".into())),
                (None, Format::Xml) => Some(Selector::Xml("/*".into())),
                (None, Format::Json) => None,
            },
            items_path,
            absent: match config.text("absent") {
                "omit" => Absent::Omit,
                "null" => Absent::Null,
                other => return Err(bad("absent", format!("{other:?} is not omit or null"))),
            },
            update_mode,
            paging,
            page_size: number(config, "page_size")?.max(1),
            first_page: number(config, "first_page")?,
            next_path,
            delta,
            error_message_path: selector("error_message_path")?,
            error_kinds,
            operations,
        };
        settings.check_variables()?;
        Ok(settings)
    }

    /// Every placeholder names a declared attribute or a variable the operation sets.
    fn check_variables(&self) -> Result<(), ConnectorError> {
        for op in &self.operations {
            let mut set: Vec<&str> = vec!["anchor", "dn", "id", "now"];
            set.extend(self.attributes.iter().map(|a| a.name.as_str()));
            match op.name {
                "list" => set.extend(["page", "offset", "limit", "cursor", "watermark"]),
                "search" => set.extend(["attribute", "value"]),
                "set_password" => set.extend(["password", "old_password"]),
                _ => {}
            }
            let mut used: BTreeSet<String> = op.path.vars().map(str::to_string).collect();
            used.extend(op.query.iter().flat_map(|(_, t)| t.vars().map(str::to_string)));
            used.extend(op.headers.iter().flat_map(|(_, t)| t.vars().map(str::to_string)));
            if let Some(body) = &op.body {
                used.extend(body.vars());
            }
            if op.name == "list"
                && let Some(delta) = &self.delta
            {
                used.extend(delta.query.iter().flat_map(|(_, t)| t.vars().map(str::to_string)));
            }
            if let Some(unknown) = used.iter().find(|v| !set.contains(&v.as_str())) {
                return Err(bad(
                    op.name,
                    format!(
                        "{{{{{unknown}}}}} is neither a declared attribute nor a variable of this operation ({})",
                        set.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.name == name)
    }

    pub fn declared(&self, name: &str) -> Option<&Declared> {
        self.attributes.iter().find(|a| a.name == name)
    }

    pub fn is_multi(&self, name: &str) -> bool {
        self.declared(name).is_some_and(|a| a.multi)
    }

    pub fn kind_of(&self, name: &str) -> AttributeType {
        self.declared(name).map(|a| a.kind).unwrap_or(AttributeType::String)
    }
}

fn query_of(config: &impl ConfigExt, key: &str) -> Result<Vec<(String, Text)>, ConnectorError> {
    Ok(json_object(config, key)?.into_iter().map(|(k, v)| (k, Text::parse(&v))).collect())
}

fn read_operation(
    config: &impl ConfigExt,
    op: &'static str,
    default_method: &str,
    spec: &str,
    format: Format,
) -> Result<Operation, ConnectorError> {
    let (method, path) = match spec.trim().split_once(char::is_whitespace) {
        Some((m, p)) => (m, p.trim()),
        None if spec.starts_with('/') => (default_method, spec.trim()),
        None => (spec.trim(), ""),
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad(op, format!("{method:?} is not an HTTP method")))?;
    if !path.is_empty() && !path.starts_with('/') {
        return Err(bad(op, format!("the path {path:?} must start with / (it is relative to base_url)")));
    }
    let body_key = format!("{op}_body");
    let body = match config.get(&body_key) {
        None => None,
        Some(text) if format.is_xml() => {
            Some(BodyTemplate::Xml(XmlTemplate::parse(text).map_err(|e| bad(&body_key, e))?))
        }
        Some(text) => Some(BodyTemplate::Json(JsonTemplate::parse(text).map_err(|e| bad(&body_key, e))?)),
    };
    if body.is_none() && matches!(op, "create" | "set_password") {
        return Err(bad(&body_key, format!("is required: the body of {op} requests")));
    }
    let status_key = format!("{op}_status");
    let statuses = config
        .text(&status_key)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u16>()
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| bad(&status_key, format!("{s:?} is not an HTTP status")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers_key = format!("{op}_headers");
    let headers = json_object(config, &headers_key)?
        .into_iter()
        .map(|(k, v)| Ok((header_name(&headers_key, &k)?, Text::parse(&v))))
        .collect::<Result<Vec<_>, ConnectorError>>()?;
    Ok(Operation {
        name: op,
        method,
        path: Text::parse(path),
        query: query_of(config, &format!("{op}_query"))?,
        body,
        statuses,
        headers,
        action: config.get(&format!("{op}_action")).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn config(pairs: &[(&str, &str)]) -> Option<ConfigParameters> {
        Some(ConfigParameters { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    const BASE: [(&str, &str); 6] = [
        ("base_url", "http://127.0.0.1:3000"),
        ("attributes", "userName, active:boolean, emails*"),
        ("create", "POST /users"),
        ("create_body", r#"{"userName": "{{userName}}"}"#),
        ("update", "PATCH /users/{{anchor}}"),
        ("delete", "DELETE /users/{{anchor}}"),
    ];

    fn read(extra: &[(&str, &str)]) -> Result<Settings, ConnectorError> {
        let mut pairs = BASE.to_vec();
        pairs.extend_from_slice(extra);
        Settings::read(&config(&pairs))
    }

    #[test]
    fn a_configuration_is_read_with_its_defaults() {
        let s = read(&[("update_mode", "merge-patch"), ("auth", "bearer"), ("token", "t0ken")]).unwrap();
        assert_eq!(s.format, Format::Json);
        assert_eq!(s.operation("update").unwrap().method, Method::PATCH);
        assert_eq!(s.operation("create").unwrap().statuses, Vec::<u16>::new());
        assert_eq!(s.connection.timeout, std::time::Duration::from_secs(30));
        assert!(s.is_multi("emails") && !s.is_multi("userName"));
        assert_eq!(format!("{:?}", s.connection.auth), "bearer", "no secret in Debug");
        assert_eq!(s.connection.auth.secrets(), ["t0ken"]);
    }

    #[test]
    fn problems_name_their_parameter_and_the_fix() {
        let problem = |extra: &[(&str, &str)]| {
            let e = read(extra).unwrap_err();
            (e.parameter.unwrap_or_default(), e.detail)
        };
        let (p, d) = problem(&[]);
        assert_eq!(p, "get", "{d}");
        assert!(d.contains("update_mode = put"));
        assert_eq!(problem(&[("update_mode", "patch"), ("create_body", "{")]).0, "create_body");
        assert_eq!(problem(&[("update_mode", "patch"), ("auth", "basic")]).0, "username");
        assert_eq!(problem(&[("update_mode", "patch"), ("paging", "cursor")]).0, "next_path");
        assert_eq!(problem(&[("update_mode", "patch"), ("create", "POST users")]).0, "create");
        let (p, d) = problem(&[("update_mode", "patch"), ("create_body", r#"{"a": "{{nope}}"}"#)]);
        assert_eq!(p, "create");
        assert!(d.contains("{{nope}}"), "{d}");
        assert_eq!(
            problem(&[("update_mode", "patch"), ("error_kinds", r#"{"x": "gone"}"#)]).0,
            "error_kinds"
        );
        assert_eq!(
            problem(&[("update_mode", "patch"), ("format", "soap"), ("create_body", "<a/>")]).0,
            "update_mode"
        );
    }
}
