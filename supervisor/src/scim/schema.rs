//! What each resource type of an app is made of (RFC 7643 §2-§4): its core schema and its
//! extension schemas, read from the very definitions `/Schemas` serves, so that what a client may
//! write and what discovery says are one thing. Here attribute paths are resolved against them (a
//! schema URN alone names that extension's whole object; a URN prefix must name a known schema,
//! RFC 7644 §3.10), and resources are made to conform: an attribute no schema defines is refused,
//! or dropped where the app's configuration says so (`unknown_attributes = "ignore"`); never stored.

use serde_json::{Map, Value};

use super::error::ScimError;
use crate::paths::{AttrPath, ValuePath, is_core_urn};

/// What to do with an attribute that no schema of the resource type defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAttributes {
    /// Answer 400 (`invalidValue` in a body, `invalidPath` in a PATCH path): the default.
    #[default]
    Refuse,
    /// Drop it (counted in `scim_unknown_attributes_dropped_total`, logged at debug level with
    /// its name): for clients such as Entra ID that send attributes an admin mapped without
    /// declaring them.
    Ignore,
}

/// Attributes every resource has (RFC 7643 §3.1), whatever its schemas.
const COMMON: &[&str] = &["schemas", "id", "meta", "externalId"];

/// One attribute of a schema.
#[derive(Debug, Clone)]
struct AttrDef {
    name: String,
    multi: bool,
    /// Sub-attribute names of a complex attribute; empty for a simple one.
    subs: Vec<String>,
}

/// One schema: its URN and its attributes.
#[derive(Debug, Clone)]
pub struct SchemaDef {
    pub urn: String,
    attributes: Vec<AttrDef>,
}

impl SchemaDef {
    /// From an RFC 7643 §7 schema definition (`/Schemas/<urn>`).
    pub fn from_definition(definition: &Value) -> Self {
        let names = |list: Option<&Value>| -> Vec<AttrDef> {
            list.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|a| AttrDef {
                    name: a["name"].as_str().unwrap_or_default().to_string(),
                    multi: a["multiValued"].as_bool().unwrap_or(false),
                    subs: a
                        .get("subAttributes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["name"].as_str().map(str::to_string))
                        .collect(),
                })
                .collect()
        };
        Self {
            urn: definition["id"].as_str().unwrap_or_default().to_string(),
            attributes: names(definition.get("attributes")),
        }
    }

    fn attribute(&self, name: &str) -> Option<&AttrDef> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// The schemas of one resource type of one app.
#[derive(Debug, Clone)]
pub struct ResourceSchemas {
    /// `User` or `Group`.
    pub resource: &'static str,
    pub core: SchemaDef,
    pub extensions: Vec<SchemaDef>,
    pub unknown: UnknownAttributes,
}

/// Where a PATCH path leads, once resolved against the schemas.
#[derive(Debug, Clone)]
pub enum Target {
    /// An attribute (with its URN, when it is an extension's).
    Path(ValuePath),
    /// The whole object of an extension schema (the path is exactly its URN).
    Extension(String),
    /// Nothing any schema defines; the reason says what was not found.
    Unknown(String),
}

impl ResourceSchemas {
    /// The schemas of `resource` (`User` or `Group`): its core schema, the enterprise extension
    /// for Users, and the app's own `extensions` of it.
    pub fn of(resource: &'static str, extensions: &[super::Extension], unknown: UnknownAttributes) -> Self {
        let mut definitions = super::discovery::schemas_of(resource, extensions, "").into_iter();
        let core = SchemaDef::from_definition(&definitions.next().unwrap_or_default());
        Self {
            resource,
            core,
            extensions: definitions.map(|d| SchemaDef::from_definition(&d)).collect(),
            unknown,
        }
    }

    /// The extension schema with this URN (case-insensitively).
    pub fn extension(&self, urn: &str) -> Option<&SchemaDef> {
        self.extensions.iter().find(|e| e.urn.eq_ignore_ascii_case(urn))
    }

    /// Whether `urn` is one of this resource type's schemas.
    pub fn knows(&self, urn: &str) -> bool {
        self.core.urn.eq_ignore_ascii_case(urn) || self.extension(urn).is_some()
    }

    /// The advice appended to a refusal.
    fn advice(&self) -> &'static str {
        "; /Schemas lists what this service stores (an app can be told to drop undeclared \
         attributes instead: unknown_attributes = \"ignore\")"
    }

    /// The error for what is unknown, in this app's mode: `Ok(())` when it is to be dropped.
    pub fn refuse_unknown(&self, scim_type: &'static str, what: &str) -> Result<(), ScimError> {
        match self.unknown {
            UnknownAttributes::Refuse => {
                Err(ScimError::bad_request(scim_type, format!("{what}{}", self.advice())))
            }
            UnknownAttributes::Ignore => {
                tracing::debug!(resource = self.resource, what, "dropped an undeclared attribute");
                metrics::counter!("scim_unknown_attributes_dropped_total", "resource" => self.resource)
                    .increment(1);
                Ok(())
            }
        }
    }

    /// [`Self::refuse_unknown`], or for legacy data a logged drop.
    fn unknown_as(&self, legacy: bool, scim_type: &'static str, what: &str) -> Result<(), ScimError> {
        if legacy {
            tracing::warn!(
                resource = self.resource,
                what,
                "dropping undeclared data stored by an earlier version"
            );
            return Ok(());
        }
        self.refuse_unknown(scim_type, what)
    }

    /// Resolves a PATCH path: a known extension's URN alone names its whole object; a URN
    /// prefix must name a known schema; the attribute (and sub-attribute) must be defined.
    /// `manager` alone means the enterprise extension's manager (Entra ID sends it so).
    pub fn resolve(&self, text: &str) -> Result<Target, ScimError> {
        let text = text.trim();
        if let Some(extension) = self.extension(text) {
            return Ok(Target::Extension(extension.urn.clone()));
        }
        let path =
            ValuePath::parse(text).map_err(|e| ScimError::bad_request("invalidPath", e.to_string()))?;
        self.resolve_parsed(path, text)
    }

    /// Whether a parsed path names an attribute of these schemas; the reason when it does not.
    pub fn check(&self, path: &ValuePath) -> Result<(), String> {
        match self.resolve_parsed(path.clone(), &path_text(path)) {
            Ok(Target::Path(_) | Target::Extension(_)) => Ok(()),
            Ok(Target::Unknown(reason)) => Err(reason),
            Err(e) => Err(e.detail),
        }
    }

    fn resolve_parsed(&self, mut path: ValuePath, text: &str) -> Result<Target, ScimError> {
        let schema = match &path.path.urn {
            None => self.core_or_alias(&mut path.path),
            Some(urn) if self.core.urn.eq_ignore_ascii_case(urn) => {
                path.path.urn = None;
                &self.core
            }
            Some(urn) => match self.extension(urn) {
                Some(extension) => {
                    path.path.urn = Some(extension.urn.clone());
                    extension
                }
                None => return Ok(Target::Unknown(format!("{text:?}: no schema {urn:?} is known here"))),
            },
        };
        let attr = &path.path.attr;
        if schema.urn == self.core.urn && COMMON.iter().any(|c| c.eq_ignore_ascii_case(attr)) {
            return Ok(Target::Path(path));
        }
        let Some(def) = schema.attribute(attr) else {
            return Ok(Target::Unknown(format!("{text:?}: {} has no attribute {attr:?}", schema.urn)));
        };
        for sub in [path.path.sub.as_deref(), path.sub_after_filter.as_deref()].into_iter().flatten() {
            if !def.subs.iter().any(|s| s.eq_ignore_ascii_case(sub)) {
                return Ok(Target::Unknown(format!("{text:?}: {} has no sub-attribute {sub:?}", def.name)));
            }
        }
        if path.filter.is_some() && !def.multi {
            return Err(ScimError::bad_request(
                "invalidPath",
                format!("{text:?}: a value filter needs a multi-valued attribute, and {} is not", def.name),
            ));
        }
        Ok(Target::Path(path))
    }

    /// The core schema, or for `manager` on a User the enterprise extension (Entra's short path).
    fn core_or_alias(&self, path: &mut AttrPath) -> &SchemaDef {
        if self.core.attribute(&path.attr).is_none()
            && path.attr.eq_ignore_ascii_case("manager")
            && let Some(enterprise) = self.extension(super::discovery::ENTERPRISE_USER_SCHEMA)
        {
            path.urn = Some(enterprise.urn.clone());
            return enterprise;
        }
        &self.core
    }

    /// Makes a resource conform to its schemas: every attribute defined (or, in `Ignore` mode,
    /// dropped), simple attributes single values, complex ones objects of known sub-attributes,
    /// extension objects under known URNs, and `schemas` listing the core schema and exactly the
    /// extensions that have values (RFC 7643 §3).
    pub fn conform(&self, resource: &mut Value) -> Result<(), ScimError> {
        self.conform_as(resource, false)
    }

    /// Drops from a stored resource what these schemas do not define, or in a shape they do not
    /// allow: data stored by a version that did not check (it could never be exported). A PATCH
    /// applies to the stored resource, so without this every PATCH of such a resource would be
    /// refused for data the client did not send. Each drop is logged.
    pub fn drop_legacy(&self, resource: &mut Value) {
        let _ = self.conform_as(resource, true);
    }

    fn conform_as(&self, resource: &mut Value, legacy: bool) -> Result<(), ScimError> {
        let Some(object) = resource.as_object_mut() else {
            return Err(ScimError::bad_request("invalidSyntax", "a resource is a JSON object"));
        };
        let listed = object.iter().find(|(k, _)| k.eq_ignore_ascii_case("schemas")).map(|(_, v)| v);
        if let Some(Value::Array(listed)) = listed {
            for urn in listed {
                let Some(urn) = urn.as_str() else {
                    if legacy {
                        continue;
                    }
                    return Err(ScimError::bad_request("invalidValue", "\"schemas\" lists strings"));
                };
                if !self.knows(urn) {
                    self.unknown_as(
                        legacy,
                        "invalidValue",
                        &format!("schema {urn:?} is not one of {}'s", self.resource),
                    )?;
                }
            }
        }
        // Each extension's object against its schema, kept under the schema's own URN.
        for extension in &self.extensions {
            let Some(key) = object.keys().find(|k| k.eq_ignore_ascii_case(&extension.urn)).cloned() else {
                continue;
            };
            let Some(Value::Object(mut values)) = object.remove(&key) else {
                if legacy {
                    continue;
                }
                return Err(ScimError::bad_request("invalidValue", format!("{key} must be an object")));
            };
            self.conform_members(extension, &mut values, legacy)?;
            if !values.is_empty() {
                object.insert(extension.urn.clone(), Value::Object(values));
            }
        }
        // The rest against the core schema.
        self.conform_members(&self.core, object, legacy)?;
        let mut schemas = vec![Value::String(self.core.urn.clone())];
        schemas.extend(
            self.extensions
                .iter()
                .filter(|e| object.contains_key(&e.urn))
                .map(|e| Value::String(e.urn.clone())),
        );
        object.retain(|k, _| !k.eq_ignore_ascii_case("schemas"));
        object.insert("schemas".into(), Value::Array(schemas));
        Ok(())
    }

    /// Checks every member of `values` against `schema`'s attributes: unknown ones refused (or
    /// dropped), known ones checked by [`Self::check_value`]. In the core schema's pass, the
    /// common attributes and the extensions' objects (already checked) are left as they are.
    fn conform_members(
        &self,
        schema: &SchemaDef,
        values: &mut Map<String, Value>,
        legacy: bool,
    ) -> Result<(), ScimError> {
        let core = std::ptr::eq(schema, &self.core);
        for name in values.keys().cloned().collect::<Vec<_>>() {
            if core
                && (COMMON.iter().any(|c| c.eq_ignore_ascii_case(&name))
                    || self.extensions.iter().any(|e| e.urn == name))
            {
                continue;
            }
            let label = if core { name.clone() } else { format!("{}:{name}", schema.urn) };
            let keep = match schema.attribute(&name) {
                Some(def) => self.check_value(def, &label, values.get_mut(&name), legacy)?,
                None => {
                    let urn = name.len() > 4
                        && name.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
                        && !is_core_urn(&name);
                    let what = match (core, urn) {
                        (true, true) => format!("an extension schema of {}", self.resource),
                        (true, false) => format!("an attribute of {}", self.resource),
                        (false, _) => "an attribute of that extension".to_string(),
                    };
                    self.unknown_as(legacy, "invalidValue", &format!("{label:?} is not {what}"))?;
                    false
                }
            };
            if !keep {
                values.remove(&name);
            }
        }
        Ok(())
    }

    /// Checks one attribute's value against its definition; drops unknown sub-attributes in
    /// `Ignore` mode. Returns whether to keep the attribute.
    fn check_value(
        &self,
        def: &AttrDef,
        name: &str,
        value: Option<&mut Value>,
        legacy: bool,
    ) -> Result<bool, ScimError> {
        match self.check_shape(def, name, value, legacy) {
            Err(e) if legacy => {
                tracing::warn!(attribute = name, reason = %e.detail, "dropping a stored value of a shape the schema does not allow");
                Ok(false)
            }
            outcome => outcome,
        }
    }

    fn check_shape(
        &self,
        def: &AttrDef,
        name: &str,
        value: Option<&mut Value>,
        legacy: bool,
    ) -> Result<bool, ScimError> {
        let Some(value) = value else { return Ok(false) };
        let shape = |what: &str| ScimError::bad_request("invalidValue", format!("{name} must be {what}"));
        let check_element = |element: &mut Value| -> Result<bool, ScimError> {
            if def.subs.is_empty() {
                return match element {
                    Value::Object(_) | Value::Array(_) => {
                        Err(shape("a single value, not an object or a list"))
                    }
                    _ => Ok(true),
                };
            }
            let Value::Object(fields) = element else { return Err(shape("an object of sub-attributes")) };
            for sub in fields.keys().cloned().collect::<Vec<_>>() {
                if !def.subs.iter().any(|s| s.eq_ignore_ascii_case(&sub)) {
                    self.unknown_as(
                        legacy,
                        "invalidValue",
                        &format!("{name}.{sub} is not a sub-attribute of {name}"),
                    )?;
                    fields.remove(&sub);
                } else if matches!(fields.get(&sub), Some(Value::Object(_) | Value::Array(_))) {
                    return Err(shape(&format!("single values in {sub}")));
                }
            }
            Ok(!fields.is_empty())
        };
        match value {
            Value::Array(items) if def.multi => {
                let mut kept = Vec::with_capacity(items.len());
                for mut item in std::mem::take(items) {
                    match check_element(&mut item) {
                        Ok(true) => kept.push(item),
                        Ok(false) => {}
                        // Stored by an earlier version: the one misshapen value goes, not the rest.
                        Err(e) if legacy => {
                            tracing::warn!(attribute = name, reason = %e.detail, "dropping a stored value of a shape the schema does not allow")
                        }
                        Err(e) => return Err(e),
                    }
                }
                *items = kept;
                Ok(!items.is_empty())
            }
            Value::Array(_) => Err(shape("a single value, not a list")),
            // One value of a multi-valued attribute, sent bare: a list of one.
            element @ Value::Object(_) if def.multi => {
                let mut one = std::mem::take(element);
                let keep = check_element(&mut one)?;
                *element = Value::Array(vec![one]);
                Ok(keep)
            }
            element => check_element(element),
        }
    }
}

/// A path as text, for messages.
fn path_text(path: &ValuePath) -> String {
    let mut text = match &path.path.urn {
        Some(urn) => format!("{urn}:{}", path.path.attr),
        None => path.path.attr.clone(),
    };
    if let Some(sub) = &path.path.sub {
        text = format!("{text}.{sub}");
    }
    if path.filter.is_some() {
        text.push_str("[...]");
    }
    if let Some(sub) = &path.sub_after_filter {
        text = format!("{text}.{sub}");
    }
    text
}

/// `schemas` for an answer: the core schema and the extensions that have values (RFC 7643 §3),
/// whatever an older record listed.
pub fn answer_schemas(object: &mut Map<String, Value>, core: &str) {
    let mut schemas = vec![Value::String(core.to_string())];
    for key in object.keys() {
        if key.len() > 4
            && key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
            && !is_core_urn(key)
            && object[key].as_object().is_some_and(|o| !o.is_empty())
        {
            schemas.push(Value::String(key.clone()));
        }
    }
    object.insert("schemas".into(), Value::Array(schemas));
}
