//! Request templates. A placeholder `{{name}}` stands for a variable: a mapped attribute, or
//! one of the names the connector sets (`anchor`, `dn`, `password`, `value`, `page`, ...).
//! Values are never pasted into text that is parsed afterwards: a path segment or a query value
//! is percent-encoded, a JSON body is built as JSON (a value whose whole string is one
//! placeholder becomes a typed JSON value, or an array of them for a multi-valued attribute), an
//! XML body is written by an XML writer that escapes every value. A template is read once; a
//! value holding `{{x}}`, quotes, `</` or `]]>` is only ever data.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;

use base64::Engine;
use ecma_proto::v1::{self, value::Kind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use serde_json::Value as Json;

/// The values a template can use: each variable's values (one for a single-valued attribute).
pub type Vars = HashMap<String, Vec<v1::Value>>;

/// A value as text (binary as base64).
pub fn text_of(value: &v1::Value) -> String {
    match &value.kind {
        Some(Kind::StringValue(s)) | Some(Kind::ReferenceValue(s)) => s.clone(),
        Some(Kind::IntegerValue(i)) => i.to_string(),
        Some(Kind::BooleanValue(b)) => b.to_string(),
        Some(Kind::BinaryValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        None => String::new(),
    }
}

/// A value as JSON, typed.
pub fn json_of(value: &v1::Value) -> Json {
    match &value.kind {
        Some(Kind::IntegerValue(i)) => Json::from(*i),
        Some(Kind::BooleanValue(b)) => Json::from(*b),
        _ => Json::from(text_of(value)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(String),
}

/// A text with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pieces: Vec<Piece>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

impl Text {
    /// Reads a template: `{{name}}` (spaces inside the braces allowed) is a placeholder;
    /// anything else, `{{` included, is literal.
    pub fn parse(template: &str) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            match after.find("}}") {
                Some(close) if is_name(after[..close].trim()) => {
                    literal.push_str(&rest[..open]);
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var(after[..close].trim().to_string()));
                    rest = &after[close + 2..];
                }
                _ => {
                    literal.push_str(&rest[..open + 2]);
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Self { pieces }
    }

    /// The variables it uses.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(name) => Some(name.as_str()),
            Piece::Literal(_) => None,
        })
    }

    /// The variable, when the whole text is one placeholder.
    pub fn whole_var(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Var(name)] => Some(name),
            _ => None,
        }
    }

    /// The text with each placeholder replaced by its variable's first value, passed through
    /// `encode`; `None` when a variable has no value.
    pub fn render(&self, vars: &Vars, mut encode: impl FnMut(&str) -> String) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Var(name) => out.push_str(&encode(&text_of(vars.get(name)?.first()?))),
            }
        }
        Some(out)
    }

    /// The text with placeholders replaced as they are (for XML attribute values and text,
    /// which the writer escapes).
    pub fn render_plain(&self, vars: &Vars) -> Option<String> {
        self.render(vars, str::to_string)
    }
}

/// What a path segment may hold unencoded: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A value as one path segment. `.` and `..` are refused: no encoding keeps a URL parser from
/// taking them for the current and parent directory.
pub fn path_segment(value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("{value:?} cannot be a path segment"));
    }
    Ok(utf8_percent_encode(value, SEGMENT).to_string())
}

/// A path template: `/users/{{anchor}}`, each value one percent-encoded segment.
pub fn render_path(template: &Text, vars: &Vars) -> Result<String, String> {
    let mut refused = None;
    let rendered = template.render(vars, |v| match path_segment(v) {
        Ok(s) => s,
        Err(e) => {
            refused.get_or_insert(e);
            String::new()
        }
    });
    if let Some(e) = refused {
        return Err(e);
    }
    rendered.ok_or_else(|| {
        let missing: Vec<&str> =
            template.vars().filter(|v| vars.get(*v).is_none_or(|x| x.is_empty())).collect();
        format!("no value for {} in the path", missing.join(", "))
    })
}

/// What a JSON body does with a placeholder that has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// The member is left out (an array element too).
    Omit,
    /// The member is `null`.
    Null,
}

/// Which members of a JSON template to render: all, or only those that use a changed
/// variable (a JSON Merge Patch), with a removed variable's members set to `null`.
#[derive(Debug, Clone, Copy)]
pub enum Only<'a> {
    All,
    Changed {
        changed: &'a BTreeSet<String>,
        removed: &'a BTreeSet<String>,
    },
    /// The top-level members that use a changed variable, each whole (a PATCH that the
    /// service merges one level deep); a member with no value left is `null`.
    Members {
        changed: &'a BTreeSet<String>,
    },
}

/// A JSON body template: a JSON document whose strings may hold placeholders, read once into
/// nodes that know the variables they use.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A value without placeholders.
    Literal(Json),
    Text(Text, BTreeSet<String>),
    Array(Vec<Node>, BTreeSet<String>),
    Object(Vec<(String, Node)>, BTreeSet<String>),
}

impl Node {
    fn of(value: Json) -> Self {
        match value {
            Json::String(s) => {
                let text = Text::parse(&s);
                let vars: BTreeSet<String> = text.vars().map(str::to_string).collect();
                if vars.is_empty() { Node::Literal(Json::String(s)) } else { Node::Text(text, vars) }
            }
            Json::Array(items) => {
                let items: Vec<Node> = items.into_iter().map(Node::of).collect();
                let vars = items.iter().flat_map(|i| i.vars().iter().cloned()).collect();
                Node::Array(items, vars)
            }
            Json::Object(map) => {
                let members: Vec<(String, Node)> = map.into_iter().map(|(k, v)| (k, Node::of(v))).collect();
                let vars = members.iter().flat_map(|(_, n)| n.vars().iter().cloned()).collect();
                Node::Object(members, vars)
            }
            other => Node::Literal(other),
        }
    }

    fn vars(&self) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        match self {
            Node::Literal(_) => &NONE,
            Node::Text(_, vars) | Node::Array(_, vars) | Node::Object(_, vars) => vars,
        }
    }
}

impl JsonTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        serde_json::from_str(template)
            .map(|json| Self(Node::of(json)))
            .map_err(|e| format!("not valid JSON ({e})"))
    }

    pub fn vars(&self) -> BTreeSet<String> {
        self.0.vars().clone()
    }

    /// The body for `vars`. `multi` says which variables are multi-valued (a whole-string
    /// placeholder of one becomes an array).
    pub fn render(&self, vars: &Vars, multi: &dyn Fn(&str) -> bool, absent: Absent, only: Only<'_>) -> Json {
        match (only, &self.0) {
            (Only::Members { changed }, Node::Object(members, _)) => {
                let mut out = serde_json::Map::new();
                for (key, item) in members.iter().filter(|(_, n)| !n.vars().is_disjoint(changed)) {
                    let value =
                        render_node(item, vars, multi, absent, Only::All, false).unwrap_or(Json::Null);
                    out.insert(key.clone(), value);
                }
                if out.is_empty() { Json::Null } else { Json::Object(out) }
            }
            (Only::Members { .. }, node) => {
                render_node(node, vars, multi, absent, Only::All, false).unwrap_or(Json::Null)
            }
            (only, node) => render_node(node, vars, multi, absent, only, false).unwrap_or(Json::Null),
        }
    }

    /// The variables used inside a top-level member that is an object or an array (a PATCH
    /// of one of them needs the object's other values).
    pub fn nested_vars(&self) -> BTreeSet<String> {
        let Node::Object(members, _) = &self.0 else { return BTreeSet::new() };
        members
            .iter()
            .filter(|(_, n)| matches!(n, Node::Array(..) | Node::Object(..)))
            .flat_map(|(_, n)| n.vars().iter().cloned())
            .collect()
    }
}

/// One node of a template; `None` leaves it out.
fn render_node(
    node: &Node,
    vars: &Vars,
    multi: &dyn Fn(&str) -> bool,
    absent: Absent,
    only: Only<'_>,
    in_array: bool,
) -> Option<Json> {
    // In a merge patch, a member that uses no changed variable (a constant included) is left
    // out: the service keeps what it has.
    if let Only::Changed { changed, .. } = only
        && node.vars().is_disjoint(changed)
    {
        return None;
    }
    match node {
        Node::Literal(value) => Some(value.clone()),
        Node::Text(text, used) => {
            if let Only::Changed { removed, .. } = only
                && used.is_subset(removed)
            {
                return Some(Json::Null);
            }
            let missing = || if absent == Absent::Null && !in_array { Some(Json::Null) } else { None };
            if let Some(name) = text.whole_var() {
                let values = vars.get(name).map(Vec::as_slice).unwrap_or_default();
                if multi(name) {
                    return Some(Json::Array(values.iter().map(json_of).collect()));
                }
                return match values.first() {
                    Some(v) => Some(json_of(v)),
                    None => missing(),
                };
            }
            match text.render_plain(vars) {
                Some(s) => Some(Json::String(s)),
                None => missing(),
            }
        }
        Node::Array(items, _) => {
            let mut out = Vec::new();
            for item in items {
                // A multi-valued placeholder alone in an array puts its values in the array.
                match item {
                    Node::Text(text, _) if text.whole_var().is_some_and(multi) => {
                        let name = text.whole_var().unwrap_or_default();
                        out.extend(vars.get(name).into_iter().flatten().map(json_of));
                    }
                    item => out.extend(render_node(item, vars, multi, absent, Only::All, true)),
                }
            }
            Some(Json::Array(out))
        }
        Node::Object(members, _) => {
            let mut out = serde_json::Map::new();
            for (key, item) in members {
                if let Some(v) = render_node(item, vars, multi, absent, only, false) {
                    out.insert(key.clone(), v);
                }
            }
            Some(Json::Object(out))
        }
    }
}

/// RFC 7386: `patch` applied to `target`.
pub fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(serde_json::Map::new());
    }
    let Json::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Json::Null), value);
        }
    }
}

/// An XML body template, read once into events. An element whose whole text is one placeholder
/// is written once per value (none when it has no value, unless absent values are `null`: then
/// once, with `xsi:nil="true"`); an attribute whose value has no value is left out.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlTemplate {
    events: Vec<Event<'static>>,
}

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

impl XmlTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut reader = quick_xml::Reader::from_str(template);
        let mut events = Vec::new();
        let mut depth = 0usize;
        loop {
            match reader.read_event().map_err(|e| format!("not well-formed XML ({e})"))? {
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
                Event::Start(s) => {
                    depth += 1;
                    events.push(Event::Start(s.into_owned()));
                }
                Event::End(e) => {
                    depth = depth.checked_sub(1).ok_or("an end tag without its start")?;
                    events.push(Event::End(e.into_owned()));
                }
                Event::Text(t) => {
                    let text = t.unescape().map_err(|e| format!("not well-formed XML ({e})"))?;
                    if !text.trim().is_empty() {
                        events.push(Event::Text(BytesText::new(&text).into_owned()));
                    }
                }
                Event::CData(c) => {
                    let text = String::from_utf8_lossy(&c).into_owned();
                    events.push(Event::Text(BytesText::new(&text).into_owned()));
                }
                other => events.push(other.into_owned()),
            }
        }
        if depth != 0 {
            return Err("an element is not closed".into());
        }
        Ok(Self { events })
    }

    /// The variables it uses.
    pub fn vars(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for event in &self.events {
            match event {
                Event::Text(t) => {
                    out.extend(Text::parse(&String::from_utf8_lossy(t)).vars().map(str::to_string))
                }
                Event::Start(s) | Event::Empty(s) => {
                    for a in s.attributes().flatten() {
                        out.extend(
                            Text::parse(&String::from_utf8_lossy(&a.value)).vars().map(str::to_string),
                        );
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The document for `vars`.
    pub fn render(&self, vars: &Vars, absent: Absent) -> String {
        let mut writer = quick_xml::Writer::new(Cursor::new(Vec::new()));
        let mut i = 0;
        while i < self.events.len() {
            // <name>{{var}}</name>: once per value.
            if let (Event::Start(start), Some(Event::Text(t)), Some(Event::End(_))) =
                (&self.events[i], self.events.get(i + 1), self.events.get(i + 2))
                && let Some(name) = Text::parse(&String::from_utf8_lossy(t)).whole_var()
            {
                let values = vars.get(name).map(Vec::as_slice).unwrap_or_default();
                let start = with_attributes(start, vars);
                if values.is_empty() && absent == Absent::Null {
                    let mut nil = start.clone();
                    nil.push_attribute(("xmlns:xsi", XSI));
                    nil.push_attribute(("xsi:nil", "true"));
                    let _ = writer.write_event(Event::Empty(nil));
                }
                for value in values {
                    let _ = writer.write_event(Event::Start(start.clone()));
                    let _ = writer.write_event(Event::Text(BytesText::new(&text_of(value))));
                    let _ = writer.write_event(Event::End(BytesEnd::new(
                        String::from_utf8_lossy(start.name().as_ref()).into_owned(),
                    )));
                }
                i += 3;
                continue;
            }
            let event = match &self.events[i] {
                Event::Start(s) => Event::Start(with_attributes(s, vars)),
                Event::Empty(s) => Event::Empty(with_attributes(s, vars)),
                Event::Text(t) => {
                    let text = Text::parse(&String::from_utf8_lossy(t));
                    let rendered = text.render_plain(vars).unwrap_or_default();
                    Event::Text(BytesText::new(&rendered).into_owned())
                }
                other => other.clone(),
            };
            let _ = writer.write_event(event);
            i += 1;
        }
        String::from_utf8(writer.into_inner().into_inner()).unwrap_or_default()
    }
}

/// A start tag with its attributes' placeholders replaced (an attribute without a value is left
/// out).
fn with_attributes(start: &BytesStart<'static>, vars: &Vars) -> BytesStart<'static> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut out = BytesStart::new(name);
    for a in start.attributes().flatten() {
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map(|v| v.into_owned()).unwrap_or_default();
        if let Some(value) = Text::parse(&value).render_plain(vars) {
            out.push_attribute((key.as_str(), value.as_str()));
        }
    }
    out
}

/// The SOAP versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Soap {
    V11,
    V12,
}

impl Soap {
    pub fn namespace(self) -> &'static str {
        match self {
            Soap::V11 => "http://schemas.xmlsoap.org/soap/envelope/",
            Soap::V12 => "http://www.w3.org/2003/05/soap-envelope",
        }
    }

    /// `body` (a rendered body template) in an envelope.
    pub fn envelope(self, body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{}"><soap:Body>{body}</soap:Body></soap:Envelope>"#,
            self.namespace()
        )
    }

    /// The Content-Type of a request, with the action where SOAP 1.2 carries it.
    pub fn content_type(self, action: Option<&str>) -> String {
        match (self, action) {
            (Soap::V11, _) => "text/xml; charset=utf-8".into(),
            (Soap::V12, Some(action)) => {
                format!("application/soap+xml; charset=utf-8; action=\"{}\"", action.replace('"', ""))
            }
            (Soap::V12, None) => "application/soap+xml; charset=utf-8".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &[v1::Value])]) -> Vars {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    #[test]
    fn placeholders_are_read_once_and_values_stay_data() {
        let t = Text::parse("a{{ x }}b{{y}}{{ not a name }}{{");
        assert_eq!(t.vars().collect::<Vec<_>>(), ["x", "y"]);
        let v = vars(&[("x", &[v1::Value::string("{{y}}")]), ("y", &[v1::Value::integer(3)])]);
        assert_eq!(t.render_plain(&v).unwrap(), "a{{y}}b3{{ not a name }}{{");
        assert_eq!(Text::parse("{{x}}").whole_var(), Some("x"));
        assert_eq!(Text::parse("{{x}}-").whole_var(), None);
        assert_eq!(Text::parse("{{z}}").render_plain(&v), None);
    }

    #[test]
    fn path_values_are_one_encoded_segment() {
        let t = Text::parse("/users/{{anchor}}/x");
        let path = |s: &str| render_path(&t, &vars(&[("anchor", &[v1::Value::string(s)])]));
        assert_eq!(path("a b/../c?d#e%2F").unwrap(), "/users/a%20b%2F..%2Fc%3Fd%23e%252F/x");
        assert_eq!(path("é").unwrap(), "/users/%C3%A9/x");
        assert!(path("..").unwrap_err().contains("path segment"));
        assert!(path(".").is_err() && path("").is_err());
        assert!(render_path(&t, &Vars::new()).unwrap_err().contains("anchor"));
    }

    #[test]
    fn json_bodies_are_built_as_json_with_types() {
        let t = JsonTemplate::parse(
            r#"{"userName": "{{userName}}", "active": "{{active}}", "age": "{{age}}",
                "emails": "{{emails}}", "tags": ["fixed", "{{emails}}"], "label": "u:{{userName}}",
                "name": {"first": "{{given}}"}, "gone": "{{none}}", "n": 1}"#,
        )
        .unwrap();
        let v = vars(&[
            ("userName", &[v1::Value::string("a\"b</x>]]>{{c}}")]),
            ("active", &[v1::Value::boolean(false)]),
            ("age", &[v1::Value::integer(41)]),
            ("emails", &[v1::Value::string("a@x"), v1::Value::string("b@x")]),
        ]);
        let multi = |n: &str| n == "emails";
        let body = t.render(&v, &multi, Absent::Omit, Only::All);
        assert_eq!(
            body,
            json!({"userName": "a\"b</x>]]>{{c}}", "active": false, "age": 41,
                   "emails": ["a@x", "b@x"], "tags": ["fixed", "a@x", "b@x"],
                   "label": "u:a\"b</x>]]>{{c}}", "name": {}, "n": 1})
        );
        let body = t.render(&v, &multi, Absent::Null, Only::All);
        assert_eq!(body["gone"], Json::Null);
        assert_eq!(body["name"], json!({"first": null}));
        // A merge patch: only what changed, removed values as null.
        let changed = ["age", "given"].into_iter().map(String::from).collect();
        let removed = ["given"].into_iter().map(String::from).collect();
        let patch =
            t.render(&v, &multi, Absent::Omit, Only::Changed { changed: &changed, removed: &removed });
        assert_eq!(patch, json!({"age": 41, "name": {"first": null}}));
        // A member-level PATCH: whole members, null where nothing is left.
        let members = t.render(&v, &multi, Absent::Omit, Only::Members { changed: &changed });
        assert_eq!(members, json!({"age": 41, "name": {}}));
        let gone = ["none"].into_iter().map(String::from).collect();
        assert_eq!(
            t.render(&v, &multi, Absent::Omit, Only::Members { changed: &gone }),
            json!({"gone": null})
        );
        assert_eq!(t.nested_vars().into_iter().collect::<Vec<_>>(), ["emails", "given"]);
        let mut target = json!({"id": 7, "age": 3, "name": {"first": "x", "last": "y"}, "other": true});
        merge_patch(&mut target, &patch);
        assert_eq!(target, json!({"id": 7, "age": 41, "name": {"last": "y"}, "other": true}));
    }

    #[test]
    fn xml_bodies_are_written_escaped_with_one_element_per_value() {
        let t = XmlTemplate::parse(
            r#"<u:CreateUser xmlns:u="urn:x"><u:user kind="{{kind}}" opt="{{none}}"><u:userName>{{userName}}</u:userName>
               <u:groups><u:string>{{groups}}</u:string></u:groups><u:note>by {{userName}}</u:note><u:gone>{{none}}</u:gone></u:user></u:CreateUser>"#,
        )
        .unwrap();
        assert_eq!(t.vars().into_iter().collect::<Vec<_>>(), ["groups", "kind", "none", "userName"]);
        let v = vars(&[
            ("userName", &[v1::Value::string("a<b>&\"c\"]]></u:userName>")]),
            ("groups", &[v1::Value::string("g1"), v1::Value::string("g2")]),
            ("kind", &[v1::Value::string("x\"y")]),
        ]);
        let xml = t.render(&v, Absent::Omit);
        assert_eq!(
            xml,
            concat!(
                r#"<u:CreateUser xmlns:u="urn:x"><u:user kind="x&quot;y"><u:userName>a&lt;b&gt;&amp;&quot;c&quot;]]&gt;&lt;/u:userName&gt;</u:userName>"#,
                r#"<u:groups><u:string>g1</u:string><u:string>g2</u:string></u:groups><u:note>by a&lt;b&gt;&amp;&quot;c&quot;]]&gt;&lt;/u:userName&gt;</u:note></u:user></u:CreateUser>"#
            )
        );
        assert!(
            t.render(&v, Absent::Null).contains(
                r#"<u:gone xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/>"#
            )
        );
        assert!(XmlTemplate::parse("<a><b></a>").is_err());
        // The envelopes and content types of both SOAP versions.
        assert!(Soap::V11.envelope("<x/>").contains(
            r#"xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x/></soap:Body>"#
        ));
        assert!(Soap::V12.envelope("<x/>").contains("http://www.w3.org/2003/05/soap-envelope"));
        assert_eq!(Soap::V11.content_type(Some("Create")), "text/xml; charset=utf-8");
        assert_eq!(
            Soap::V12.content_type(Some("urn:Create\"x")),
            r#"application/soap+xml; charset=utf-8; action="urn:Createx""#
        );
        assert!(XmlTemplate::parse("<a>").is_err());
    }
}
