//! List queries (RFC 7644 §3.4.2): filter, `sortBy`/`sortOrder`, `startIndex`/`count`,
//! `attributes`/`excludedAttributes`, from the query string or a `POST /.search` body.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ScimError;
use super::resource::lists_schema;
use crate::paths::{AttrPath, Filter, get_ci};

/// Page size when the client gives none, and the most returned in one page.
pub const DEFAULT_COUNT: usize = 100;
pub const MAX_COUNT: usize = 1000;

const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// The query parameters as they arrive (all text, as in a URL).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawQuery {
    pub filter: Option<String>,
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
}

/// A parsed list query.
#[derive(Debug)]
pub struct Query {
    pub filter: Option<Filter>,
    pub start_index: usize,
    pub count: usize,
    pub sort_by: Option<AttrPath>,
    pub descending: bool,
    pub projection: Projection,
}

/// Which attributes to return.
#[derive(Debug, Default)]
pub struct Projection {
    attributes: Vec<AttrPath>,
    excluded: Vec<AttrPath>,
}

fn integer(name: &str, value: Option<&str>, default: usize) -> Result<usize, ScimError> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(|n| n.max(0) as usize)
            .map_err(|_| ScimError::bad_request("invalidValue", format!("{name} must be an integer"))),
    }
}

/// The most paths an `attributes` or `excludedAttributes` list may name (each is compared with
/// every attribute of every resource returned).
pub const MAX_PATHS: usize = 100;

fn paths(name: &str, list: Option<&str>) -> Result<Vec<AttrPath>, ScimError> {
    let list = list.unwrap_or("");
    if list.split(',').filter(|p| !p.trim().is_empty()).nth(MAX_PATHS).is_some() {
        return Err(ScimError::bad_request(
            "invalidValue",
            format!("{name} names more than {MAX_PATHS} attributes"),
        ));
    }
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            AttrPath::parse(p).map_err(|e| ScimError::bad_request("invalidPath", format!("{name}: {e}")))
        })
        .collect()
}

impl RawQuery {
    /// A `POST /.search` body as a query.
    pub fn from_search_body(body: &Value) -> Result<Self, ScimError> {
        if !lists_schema(body, SEARCH_REQUEST) {
            return Err(ScimError::bad_request(
                "invalidSyntax",
                format!("\"schemas\" must list {SEARCH_REQUEST}"),
            ));
        }
        let text = |key: &str| -> Option<String> {
            match get_ci(body, key)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Array(items) => {
                    Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                }
                _ => None,
            }
        };
        Ok(Self {
            filter: text("filter"),
            start_index: text("startIndex"),
            count: text("count"),
            sort_by: text("sortBy"),
            sort_order: text("sortOrder"),
            attributes: text("attributes"),
            excluded_attributes: text("excludedAttributes"),
        })
    }

    /// Parses and checks every parameter.
    pub fn parse(&self) -> Result<Query, ScimError> {
        let filter = self
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(Filter::parse)
            .transpose()
            .map_err(|e| ScimError::bad_request("invalidFilter", e.to_string()))?;
        let descending = match self.sort_order.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    format!("sortOrder {other:?} is neither ascending nor descending"),
                ));
            }
        };
        let sort_by = self
            .sort_by
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| AttrPath::parse(s.trim()))
            .transpose()
            .map_err(|e| ScimError::bad_request("invalidPath", format!("sortBy: {e}")))?;
        Ok(Query {
            filter,
            // startIndex is 1-based; values below 1 mean 1 (RFC 7644 §3.4.2.4).
            start_index: integer("startIndex", self.start_index.as_deref(), 1)?.max(1),
            count: integer("count", self.count.as_deref(), DEFAULT_COUNT)?.min(MAX_COUNT),
            sort_by,
            descending,
            projection: Projection {
                attributes: paths("attributes", self.attributes.as_deref())?,
                excluded: paths("excludedAttributes", self.excluded_attributes.as_deref())?,
            },
        })
    }
}

/// Orders two values of the sort attribute: absent last, strings case-insensitively.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(Value::String(a)), Some(Value::String(b))) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Some(Value::Number(a)), Some(Value::Number(b))) => {
            a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::Bool(a)), Some(Value::Bool(b))) => a.cmp(b),
        (Some(a), Some(b)) => a.to_string().cmp(&b.to_string()),
    }
}

impl Query {
    /// Filters, sorts and pages `resources`; returns the page and the total before paging.
    pub fn apply(&self, resources: Vec<Value>) -> (Vec<Value>, usize) {
        let mut matching: Vec<Value> =
            resources.into_iter().filter(|r| self.filter.as_ref().is_none_or(|f| f.matches(r))).collect();
        if let Some(path) = &self.sort_by {
            // The sort key of a multi-valued attribute is its primary (else first) value.
            matching.sort_by(|a, b| {
                let ka = path.resolve(a).into_iter().next();
                let kb = path.resolve(b).into_iter().next();
                let ordering = compare(ka, kb);
                if self.descending { ordering.reverse() } else { ordering }
            });
        }
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(self.start_index - 1)
            .take(self.count)
            .map(|r| self.projection.apply(r))
            .collect();
        (page, total)
    }
}

/// Attributes returned whatever `attributes` and `excludedAttributes` say (`returned: always`).
const ALWAYS: &[&str] = &["id", "schemas", "meta"];

impl Projection {
    /// A projection from comma-separated lists (for single-resource GETs).
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self, ScimError> {
        Ok(Self {
            attributes: paths("attributes", attributes)?,
            excluded: paths("excludedAttributes", excluded)?,
        })
    }

    /// Keeps the listed attributes (and those always returned), or drops the excluded ones.
    pub fn apply(&self, resource: Value) -> Value {
        let Value::Object(object) = resource else { return resource };
        let always = |key: &str| ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(key));
        let mut out = Map::new();
        for (key, value) in object {
            if always(&key) {
                out.insert(key, value);
                continue;
            }
            let value = if self.attributes.is_empty() { Some(value) } else { self.keep(&key, value) };
            let value = value.and_then(|v| self.drop_excluded(&key, v));
            if let Some(v) = value {
                out.insert(key, v);
            }
        }
        Value::Object(out)
    }

    /// The part of `value` (at top-level `key`) that the `attributes` list asks for.
    fn keep(&self, key: &str, value: Value) -> Option<Value> {
        let asked: Vec<&AttrPath> = self.attributes.iter().filter(|p| names(p, key)).collect();
        if asked.is_empty() {
            // An extension object: keep the sub-attributes asked for with its URN.
            return self.keep_extension(key, value);
        }
        if asked
            .iter()
            .any(|p| p.sub.is_none() || p.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(key)))
        {
            return Some(value);
        }
        let subs: Vec<&str> = asked.iter().filter_map(|p| p.sub.as_deref()).collect();
        Some(keep_subs(value, &subs))
    }

    fn keep_extension(&self, key: &str, value: Value) -> Option<Value> {
        if self.attributes.iter().any(|p| names_schema(p, key)) {
            return Some(value);
        }
        let subs: Vec<&str> = self
            .attributes
            .iter()
            .filter(|p| p.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(key)))
            .map(|p| p.attr.as_str())
            .collect();
        if subs.is_empty() {
            return None;
        }
        Some(keep_subs(value, &subs)).filter(|v| v.as_object().is_none_or(|o| !o.is_empty()))
    }

    fn drop_excluded(&self, key: &str, value: Value) -> Option<Value> {
        let mut value = value;
        for p in &self.excluded {
            let whole = (names(p, key) && p.sub.is_none()) || names_schema(p, key);
            if whole {
                return None;
            }
            if names(p, key) {
                value = drop_sub(value, p.sub.as_deref().unwrap_or_default());
            } else if p.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(key)) {
                value = drop_sub(value, &p.attr);
            }
        }
        Some(value)
    }
}

/// Whether path `p` names the top-level attribute `key` (core attributes only).
fn names(p: &AttrPath, key: &str) -> bool {
    p.attr.eq_ignore_ascii_case(key) && p.urn.as_deref().is_none_or(crate::paths::is_core_urn)
}

/// Whether path `p` is exactly the URN `key` of an extension (its whole object): parsed, the
/// URN's last part reads as an attribute name.
fn names_schema(p: &AttrPath, key: &str) -> bool {
    p.sub.is_none()
        && p.urn.as_deref().is_some_and(|u| {
            key.len() == u.len() + 1 + p.attr.len() && format!("{u}:{}", p.attr).eq_ignore_ascii_case(key)
        })
}

fn keep_subs(value: Value, subs: &[&str]) -> Value {
    let pick = |v: Value| match v {
        Value::Object(o) => Value::Object(
            o.into_iter().filter(|(k, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(k))).collect(),
        ),
        other => other,
    };
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(pick).collect()),
        v => pick(v),
    }
}

fn drop_sub(value: Value, sub: &str) -> Value {
    let drop = |v: Value| match v {
        Value::Object(mut o) => {
            o.retain(|k, _| !k.eq_ignore_ascii_case(sub));
            Value::Object(o)
        }
        other => other,
    };
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(drop).collect()),
        v => drop(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user(name: &str, family: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": name, "userName": name, "name": {"givenName": "G", "familyName": family},
            "emails": [{"value": "a@x", "type": "work"}], "meta": {"resourceType": "User"},
            ENTERPRISE: {"department": "Eng", "employeeNumber": "7"}
        })
    }

    fn query(q: RawQuery) -> Query {
        q.parse().unwrap()
    }

    #[test]
    fn sorts_pages_and_counts() {
        let users = vec![user("b", "Zed"), user("c", "Alpha"), user("a", "mid")];
        let q = query(RawQuery { sort_by: Some("name.familyName".into()), ..Default::default() });
        let (page, total) = q.apply(users.clone());
        assert_eq!(total, 3);
        assert_eq!(page.iter().map(|u| u["id"].as_str().unwrap()).collect::<Vec<_>>(), ["c", "a", "b"]);
        let q = query(RawQuery {
            sort_by: Some("userName".into()),
            sort_order: Some("descending".into()),
            start_index: Some("2".into()),
            count: Some("1".into()),
            ..Default::default()
        });
        let (page, total) = q.apply(users);
        assert_eq!((total, page.len(), page[0]["id"].as_str()), (3, 1, Some("b")));
    }

    #[test]
    fn bad_parameters_are_scim_errors() {
        assert!(RawQuery { sort_order: Some("sideways".into()), ..Default::default() }.parse().is_err());
        assert!(RawQuery { count: Some("ten".into()), ..Default::default() }.parse().is_err());
        assert!(RawQuery { attributes: Some("a..b".into()), ..Default::default() }.parse().is_err());
        let q = query(RawQuery {
            count: Some("100000".into()),
            start_index: Some("-4".into()),
            ..Default::default()
        });
        assert_eq!((q.count, q.start_index), (MAX_COUNT, 1));
    }

    #[test]
    fn attributes_and_excluded_attributes() {
        let p = Projection::parse(Some(&format!("userName,name.familyName,{ENTERPRISE}:department")), None)
            .unwrap();
        assert_eq!(
            p.apply(user("a", "F")),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "a", "userName": "a",
                "name": {"familyName": "F"}, "meta": {"resourceType": "User"}, ENTERPRISE: {"department": "Eng"}
            })
        );
        let p =
            Projection::parse(None, Some(&format!("emails,name.givenName,{ENTERPRISE}:employeeNumber,id")))
                .unwrap();
        let out = p.apply(user("a", "F"));
        assert!(out.get("emails").is_none());
        assert_eq!(out["name"], json!({"familyName": "F"}));
        assert_eq!(out[ENTERPRISE], json!({"department": "Eng"}));
        assert_eq!(out["id"], "a", "id is always returned");
    }

    #[test]
    fn search_bodies_become_queries() {
        let body = json!({
            "schemas": [SEARCH_REQUEST], "filter": "userName sw \"a\"", "startIndex": 1, "count": 10,
            "attributes": ["userName", "emails"]
        });
        let q = RawQuery::from_search_body(&body).unwrap().parse().unwrap();
        assert_eq!(q.count, 10);
        assert!(q.filter.is_some());
        assert!(RawQuery::from_search_body(&json!({"filter": "x"})).is_err());
    }
}
