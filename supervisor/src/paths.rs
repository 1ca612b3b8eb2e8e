//! The SCIM path grammar every layer shares: RFC 7644 §3.4.2.2 filters, parsed once into a
//! [`Filter`] and evaluated against SCIM resources (JSON), and attribute paths (`name.givenName`,
//! URN-prefixed paths, value paths like `emails[type eq "work"].value`). The SCIM front door
//! (filters, PATCH paths, `attributes`), the attribute mapping, the write path and imports all
//! read resources through it; it depends on nothing else of ours.
//!
//! Attribute names are case-insensitive. String comparison is case-insensitive except for the
//! attributes the core schema marks `caseExact` (`id`, `externalId`, `meta.version`).

use serde_json::Value;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// An attribute path: optional schema URN, attribute, optional sub-attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    /// Schema URN, e.g. `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Value),
    /// `attr[filter]`: some element of the multi-valued `attr` matches the inner filter.
    ValuePath(AttrPath, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// A PATCH path or mapping path: `attr[.sub]`, or `attr[filter][.sub]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValuePath {
    pub path: AttrPath,
    pub filter: Option<Filter>,
    /// Sub-attribute after a value filter (`emails[type eq "work"].value`).
    pub sub_after_filter: Option<String>,
}

/// The deepest nesting a filter may have: parentheses, `not (...)` and value filters `attr[...]`
/// together. Evaluation and dropping recurse as deep as the tree, so a request must not be able to
/// make it deep enough to overflow a runtime thread's stack (a 1,500-deep filter once did).
pub const MAX_DEPTH: usize = 32;
/// The most comparisons (and `pr` tests) one filter may hold. `and`/`or` chains build trees as
/// deep as they are long; this bounds them (and the cost of evaluating one filter per resource).
pub const MAX_TERMS: usize = 256;
/// The longest filter text accepted (in characters).
pub const MAX_LEN: usize = 64 * 1024;

/// A filter that could not be parsed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(Value),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A `.` right after `]`.
    Dot,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1
            }
            '.' if matches!(tokens.last(), Some(Token::CloseBracket)) => {
                tokens.push(Token::Dot);
                i += 1
            }
            '"' => {
                // A JSON string: find the closing quote, honouring backslash escapes.
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(FilterError("unterminated string".into()));
                }
                i += 1;
                let literal: String = chars[start..i].iter().collect();
                let value: Value = serde_json::from_str(&literal)
                    .map_err(|_| FilterError(format!("bad string literal {literal}")))?;
                tokens.push(Token::Literal(value));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '\n' | '\r' | '(' | ')' | '[' | ']' | '"')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

impl AttrPath {
    /// Parses `[urn:...:]attr[.sub]`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let (urn, rest) = if text.len() > 4 && text.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
            let at = text.rfind(':').expect("urn: has a colon");
            (Some(text[..at].to_string()), &text[at + 1..])
        } else {
            (None, text)
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '$')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !valid(attr) || sub.is_some_and(|s| !valid(s)) {
            return Err(FilterError(format!("{text:?} is not an attribute path")));
        }
        Ok(Self { urn, attr: attr.to_string(), sub: sub.map(str::to_string) })
    }

    fn with_sub(&self, sub: Option<String>) -> Self {
        Self { urn: self.urn.clone(), attr: self.attr.clone(), sub }
    }

    /// The values this path reaches in `resource` (flattened over multi-valued attributes).
    pub fn resolve<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        let Some(container) = self.container(resource) else { return vec![] };
        let Some(value) = get_ci(container, &self.attr) else { return vec![] };
        let mut out = Vec::new();
        let mut push = |v: &'a Value| match (&self.sub, v) {
            (None, v) => out.push(v),
            (Some(sub), v) => {
                if let Some(s) = get_ci(v, sub) {
                    out.push(s)
                }
            }
        };
        match value {
            Value::Array(items) => items.iter().for_each(&mut push),
            Value::Null => {}
            v => push(v),
        }
        out
    }

    /// The object holding `attr`: the resource itself, or its extension object for a URN path.
    pub fn container<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        match &self.urn {
            Some(urn) if !is_core_urn(urn) => get_ci(resource, urn),
            _ => Some(resource),
        }
    }

    fn is_case_exact(&self) -> bool {
        let a = self.attr.to_ascii_lowercase();
        let s = self.sub.as_deref().map(str::to_ascii_lowercase);
        matches!((a.as_str(), s.as_deref()), ("id", None) | ("externalid", None) | ("meta", Some("version")))
    }
}

/// Whether `urn` names a core resource schema (whose attributes sit at the top level).
pub fn is_core_urn(urn: &str) -> bool {
    let u = urn.to_ascii_lowercase();
    u.starts_with("urn:ietf:params:scim:schemas:core:")
}

/// Case-insensitive member lookup.
pub fn get_ci<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(key).or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current nesting depth (parentheses, `not`, brackets).
    depth: usize,
    /// Comparisons seen so far.
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// Parses a nested `or` expression one level deeper, refusing past [`MAX_DEPTH`].
    fn nested(&mut self) -> Result<Filter, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(FilterError(format!("the filter is nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let inner = self.or();
        self.depth -= 1;
        inner
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            self.pos += 1;
            self.expect(Token::Open, "'(' after not")?;
            let inner = self.nested()?;
            self.expect(Token::Close, "')'")?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.nested()?;
            self.expect(Token::Close, "')'")?;
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError(format!("the filter has more than {MAX_TERMS} comparisons")));
        }
        self.attr_expression()
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            Some(t) => Err(FilterError(format!("expected {what}, found {t:?}"))),
            None => Err(FilterError(format!("expected {what}, found the end"))),
        }
    }

    fn attr_expression(&mut self) -> Result<Filter, FilterError> {
        let path = match self.next() {
            Some(Token::Word(w)) => AttrPath::parse(&w)?,
            Some(t) => return Err(FilterError(format!("expected an attribute path, found {t:?}"))),
            None => return Err(FilterError("expected an attribute path, found the end".into())),
        };
        if self.peek() == Some(&Token::OpenBracket) {
            self.pos += 1;
            let inner = self.nested()?;
            self.expect(Token::CloseBracket, "']'")?;
            // `emails[type eq "work"].value eq "x"`: not in the RFC's filter grammar but sent by
            // some clients; it means the same as `emails[type eq "work" and value eq "x"]`.
            if self.peek() == Some(&Token::Dot) {
                self.pos += 1;
                let sub = match self.next() {
                    Some(Token::Word(w)) => w,
                    _ => return Err(FilterError("expected a sub-attribute after ']'.".into())),
                };
                let sub_path = AttrPath { urn: None, attr: sub, sub: None };
                let rest = self.comparison(sub_path)?;
                return Ok(Filter::ValuePath(path, Box::new(Filter::And(Box::new(inner), Box::new(rest)))));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        let op = match self.next() {
            Some(Token::Word(w)) => w.to_ascii_lowercase(),
            _ => return Err(FilterError("expected an operator after the attribute".into())),
        };
        let op = match op.as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => return Err(FilterError(format!("unknown operator {other:?}"))),
        };
        let value = match self.next() {
            Some(Token::Literal(v)) => v,
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => serde_json::from_str::<serde_json::Number>(&w)
                    .map(Value::Number)
                    .map_err(|_| FilterError(format!("{w:?} is not a value (strings need double quotes)")))?,
            },
            _ => return Err(FilterError("expected a value after the operator".into())),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

impl Filter {
    /// Parses a filter expression.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_LEN {
            return Err(FilterError(format!("the filter is longer than {MAX_LEN} bytes")));
        }
        let mut parser = Parser { tokens: tokenize(text)?, pos: 0, depth: 0, terms: 0 };
        let filter = parser.or()?;
        if let Some(t) = parser.peek() {
            return Err(FilterError(format!("unexpected {t:?} after the filter")));
        }
        Ok(filter)
    }

    /// Whether `resource` matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(a) => !a.matches(resource),
            Filter::Present(path) => path.resolve(resource).into_iter().any(is_present),
            Filter::Compare(path, op, expected) => {
                let values = path.resolve(resource);
                let exact = path.is_case_exact();
                // A complex multi-valued attribute compared directly compares its `value`s.
                let values =
                    values.into_iter().map(|v| get_ci(v, "value").filter(|_| v.is_object()).unwrap_or(v));
                let mut values = values.peekable();
                if values.peek().is_none() {
                    return *op == CompareOp::Ne && !expected.is_null();
                }
                if *op == CompareOp::Ne {
                    return values.all(|v| !compare(v, CompareOp::Eq, expected, exact));
                }
                values.any(|v| compare(v, *op, expected, exact))
            }
            Filter::ValuePath(path, inner) => {
                let Some(container) = path.container(resource) else { return false };
                match get_ci(container, &path.attr) {
                    Some(Value::Array(items)) => items.iter().any(|item| inner.matches(item)),
                    Some(v @ Value::Object(_)) => inner.matches(v),
                    _ => false,
                }
            }
        }
    }

    /// The fields of an element that would match the filter, when it is only `attr eq value`
    /// comparisons joined by `and` (`type eq "work"`): used to create a value a filtered path
    /// names but that does not exist yet.
    pub fn eq_fields(&self) -> Option<serde_json::Map<String, Value>> {
        let mut fields = serde_json::Map::new();
        fn collect(f: &Filter, out: &mut serde_json::Map<String, Value>) -> bool {
            match f {
                Filter::Compare(p, CompareOp::Eq, v) if p.sub.is_none() && p.urn.is_none() => {
                    out.insert(p.attr.clone(), v.clone());
                    true
                }
                Filter::And(a, b) => collect(a, out) && collect(b, out),
                _ => false,
            }
        }
        collect(self, &mut fields).then_some(fields)
    }

    /// The value when the filter is exactly `<attribute> eq "..."` on a core attribute: the store
    /// answers `userName` and `displayName` (groups) from an index.
    pub fn eq_on(&self, attribute: &str) -> Option<&str> {
        match self {
            Filter::Compare(p, CompareOp::Eq, Value::String(s))
                if p.attr.eq_ignore_ascii_case(attribute)
                    && p.sub.is_none()
                    && p.urn.as_deref().is_none_or(is_core_urn) =>
            {
                Some(s)
            }
            _ => None,
        }
    }
}

/// Whether a value counts as present (`pr`): not null, and not an empty string, list or object.
pub(crate) fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if case_exact {
                (a.clone(), e.clone())
            } else {
                (crate::store::fold(a), crate::store::fold(e))
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
            }
        }
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        // Entra sends booleans as strings; compare them as booleans.
        (Value::String(a), Value::Bool(e)) => match a.to_ascii_lowercase().parse::<bool>() {
            Ok(a) => compare(&Value::Bool(a), op, &Value::Bool(*e), case_exact),
            Err(_) => false,
        },
        (Value::Number(a), Value::Number(e)) => {
            let (Some(a), Some(e)) = (a.as_f64(), e.as_f64()) else { return false };
            let ord = a.partial_cmp(&e).unwrap_or(Ordering::Equal);
            match op {
                CompareOp::Eq => ord == Ordering::Equal,
                CompareOp::Ne => ord != Ordering::Equal,
                CompareOp::Gt => ord == Ordering::Greater,
                CompareOp::Ge => ord != Ordering::Less,
                CompareOp::Lt => ord == Ordering::Less,
                CompareOp::Le => ord != Ordering::Greater,
                _ => false,
            }
        }
        (_, Value::Null) => op == CompareOp::Ne,
        _ => false,
    }
}

impl ValuePath {
    /// Parses a PATCH-style path: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, each
    /// optionally URN-prefixed.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let text = text.trim();
        let Some(open) = text.find('[') else {
            return Ok(Self { path: AttrPath::parse(text)?, filter: None, sub_after_filter: None });
        };
        let close = text.rfind(']').ok_or_else(|| FilterError(format!("{text:?}: '[' without ']'")))?;
        if close < open {
            return Err(FilterError(format!("{text:?}: ']' before '['")));
        }
        let path = AttrPath::parse(&text[..open])?;
        if path.sub.is_some() {
            return Err(FilterError(format!(
                "{text:?}: a value filter applies to an attribute, not a sub-attribute"
            )));
        }
        let filter = Filter::parse(&text[open + 1..close])?;
        let rest = &text[close + 1..];
        let sub_after_filter = match rest {
            "" => None,
            _ => {
                let sub = rest
                    .strip_prefix('.')
                    .ok_or_else(|| FilterError(format!("{text:?}: expected '.' after ']'")))?;
                AttrPath::parse(sub)?;
                Some(sub.to_string())
            }
        };
        Ok(Self { path, filter: Some(filter), sub_after_filter })
    }

    /// The values this path reaches in `resource`.
    pub fn resolve<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        let Some(filter) = &self.filter else { return self.path.resolve(resource) };
        let elements = self.path.with_sub(None).resolve(resource);
        elements
            .into_iter()
            .filter(|e| filter.matches(e))
            .filter_map(|e| match &self.sub_after_filter {
                Some(sub) => get_ci(e, sub),
                None => Some(e),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "2819c223",
            "userName": "Bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@home.example", "type": "home"}
            ],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984"}
        })
    }

    fn m(filter: &str) -> bool {
        Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(&user())
    }

    #[test]
    fn comparisons() {
        assert!(m(r#"userName eq "bjensen""#), "userName is case-insensitive");
        assert!(!m(r#"id eq "2819C223""#), "id is case-exact");
        assert!(m(r#"name.familyName co "ens""#));
        assert!(m(r#"userName sw "bj" and userName ew "SEN""#));
        assert!(m(r#"meta.lastModified gt "2011-05-13T04:42:34Z" or active eq true"#));
        assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        assert!(m("title pr or active eq true"));
        assert!(!m("title pr"));
        assert!(m(r#"emails eq "babs@home.example""#), "complex multi-valued compares value");
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
        ));
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen""#));
        assert!(m(r#"userName ne "other""#));
        assert!(!m(r#"userName ne "BJENSEN""#));
    }

    #[test]
    fn logic_and_grouping() {
        assert!(m(r#"not (userName eq "x")"#));
        assert!(!m(r#"userName eq "x" or (active eq false and userName eq "bjensen")"#));
        assert!(m(r#"userName eq "x" or active eq false or (userName EQ "bjensen")"#));
        assert!(m(r#"emails[type eq "work" and value co "@example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and primary eq true]"#));
        assert!(m(r#"emails[type eq "work"].value eq "bjensen@example.com""#));
        // `and` binds tighter than `or`.
        let f = Filter::parse(r#"a eq 1 or b eq 2 and c eq 3"#).unwrap();
        assert!(matches!(f, Filter::Or(_, ref r) if matches!(**r, Filter::And(_, _))));
    }

    #[test]
    fn bad_filters_are_rejected() {
        for bad in [
            "userName",
            r#"userName eq"#,
            r#"userName xx "a""#,
            r#"userName eq bob"#,
            r#"(userName eq "a""#,
            r#"userName eq "a" extra"#,
            r#"userName eq "unterminated"#,
            r#"emails[type eq "work""#,
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn multibyte_text_is_refused_not_a_panic() {
        // Found by the fuzzer: slicing "urn:" off a path cut a character in two.
        for text in ["$\u{70a}\u{70a} ", "\u{e9}\u{e9}\u{e9} pr", "ur\u{e9}:x eq 1", "u\u{1f600} eq \"a\""] {
            let _ = Filter::parse(text);
            let _ = ValuePath::parse(text);
            let _ = AttrPath::parse(text);
        }
        assert!(AttrPath::parse("\u{e9}\u{e9}\u{e9}").is_err());
    }

    #[test]
    fn user_name_index_shortcut() {
        assert_eq!(Filter::parse(r#"userName eq "a\"b""#).unwrap().eq_on("userName"), Some("a\"b"));
        assert_eq!(Filter::parse(r#"userName co "a""#).unwrap().eq_on("userName"), None);
        assert_eq!(Filter::parse(r#"displayName eq "G""#).unwrap().eq_on("displayName"), Some("G"));
    }

    /// A random filter from the grammar, sometimes corrupted by a stray token.
    fn random_filter(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
        use rand::{Rng, seq::IndexedRandom};
        let attrs = [
            "userName",
            "name.givenName",
            "emails",
            "emails.value",
            "active",
            "meta.lastModified",
            "title",
            "ID",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        ];
        let ops = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ"];
        let values =
            ["\"bjensen\"", "\"B\"", "\"\"", "true", "false", "null", "7", "1.5", "\"x\\\"y\"", "\"\u{e9}\""];
        let choice = if depth == 0 { 0 } else { rng.random_range(0..6) };
        match choice {
            0 | 1 => {
                let attr = attrs.choose(rng).unwrap();
                if rng.random_bool(0.15) {
                    format!("{attr} pr")
                } else {
                    format!("{attr} {} {}", ops.choose(rng).unwrap(), values.choose(rng).unwrap())
                }
            }
            2 => format!("({})", random_filter(rng, depth - 1)),
            3 => format!(
                "{} {} {}",
                random_filter(rng, depth - 1),
                ["and", "or", "AND"].choose(rng).unwrap(),
                random_filter(rng, depth - 1)
            ),
            4 => format!("not ({})", random_filter(rng, depth - 1)),
            _ => {
                format!("emails[{}]", random_filter(rng, 0).replace("emails.", "").replace("emails", "value"))
            }
        }
    }

    /// Random filter texts (seeded, so that a failure repeats): parsing never panics, and every
    /// filter that parses obeys the logic it claims (`not`, `and`, `or`).
    #[test]
    fn random_filters_obey_boolean_logic() {
        use rand::{Rng, SeedableRng, seq::IndexedRandom};
        let junk = ["(", ")", "[", "]", "\"", "and", "not", "eq", "\\", ".", "pr"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let resource = user();
        let mut parsed = 0;
        for round in 0..20_000 {
            // Now and then a deep or long one, past the bounds as often as within them.
            let mut text = match round % 50 {
                0 => {
                    let n = rng.random_range(1..2 * MAX_DEPTH);
                    format!("{}{}{}", "(".repeat(n), random_filter(&mut rng, 2), ")".repeat(n))
                }
                1 => vec![random_filter(&mut rng, 1); rng.random_range(1..2 * MAX_TERMS / 3)].join(" or "),
                _ => random_filter(&mut rng, 3),
            };
            if rng.random_bool(0.2) {
                let at = rng.random_range(0..=text.len());
                if text.is_char_boundary(at) {
                    text.insert_str(at, junk.choose(&mut rng).unwrap());
                }
            }
            let Ok(filter) = Filter::parse(&text) else { continue };
            parsed += 1;
            let m = filter.matches(&resource);
            // A derived filter may pass the bounds that its part kept within: then it is
            // refused for that reason, and for no other.
            let derived = |text: String| match Filter::parse(&text) {
                Ok(f) => Some(f),
                Err(e) if ["nested", "comparisons", "longer"].iter().any(|b| e.0.contains(b)) => None,
                Err(e) => panic!("{text}: {e}"),
            };
            if let Some(negated) = derived(format!("not ({text})")) {
                assert_eq!(negated.matches(&resource), !m, "{text}");
            }
            if let Some(both) = derived(format!("({text}) and ({text})")) {
                assert_eq!(both.matches(&resource), m, "{text}");
            }
            if let Some(always) = derived(format!("({text}) or not ({text})")) {
                assert!(always.matches(&resource), "{text}");
            }
        }
        assert!(parsed > 10_000, "the generator should mostly produce valid filters ({parsed})");
    }

    /// The worst filter a request can send within the bounds: as deep and as long as allowed.
    fn worst_case() -> String {
        let chain = vec![r#"userName eq "x""#; MAX_TERMS - MAX_DEPTH].join(" and ");
        let mut text = chain;
        for level in 0..MAX_DEPTH {
            text = if level % 2 == 0 { format!("not ({text})") } else { format!("({text}) or active pr") };
        }
        text
    }

    #[test]
    fn deep_and_long_filters_are_refused_not_a_crash() {
        for depth in [MAX_DEPTH + 1, 1_500, 100_000] {
            let nested = format!("{}userName eq \"x\"{}", "(".repeat(depth), ")".repeat(depth));
            let e = Filter::parse(&nested).unwrap_err();
            assert!(e.0.contains("nested") || e.0.contains("longer"), "{depth}: {e}");
            let nots = format!("{}userName pr{}", "not (".repeat(depth), ")".repeat(depth));
            assert!(Filter::parse(&nots).is_err());
            let brackets = format!("{}value pr{}", "emails[".repeat(depth), "]".repeat(depth));
            assert!(Filter::parse(&brackets).is_err());
            assert!(ValuePath::parse(&format!("emails[{}]", &nested)).is_err());
        }
        let at_limit = format!("{}userName eq \"x\"{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Filter::parse(&at_limit).is_ok());
        for (op, n) in [("and", MAX_TERMS + 1), ("or", 100_000)] {
            let chain = vec![r#"userName eq "x""#; n].join(&format!(" {op} "));
            let e = Filter::parse(&chain).unwrap_err();
            assert!(e.0.contains("comparisons") || e.0.contains("longer"), "{op} {n}: {e}");
        }
        assert!(Filter::parse(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    /// The deepest and longest filter within the bounds parses, evaluates and drops on a stack
    /// a tenth of a runtime worker's (2 MiB): the bounds leave a wide margin.
    #[test]
    fn the_worst_accepted_filter_fits_a_small_stack() {
        let text = worst_case();
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let filter = Filter::parse(&text).expect("the worst case is within the bounds");
                let matched = filter.matches(&user());
                let path = ValuePath::parse(&format!("emails[{text}].value")).expect("as a value path too");
                let resolved = path.resolve(&user()).len();
                drop(filter);
                (matched, resolved)
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        // The outermost level (an odd one) is `(...) or active pr`, and the user is active.
        assert!(outcome.0);
        assert_eq!(outcome.1, 0, "no email has userName x");
    }

    #[test]
    fn value_paths_resolve() {
        let p = ValuePath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.resolve(&user()), vec![&json!("bjensen@example.com")]);
        let p = ValuePath::parse("name.givenName").unwrap();
        assert_eq!(p.resolve(&user()), vec![&json!("Barbara")]);
        assert!(ValuePath::parse("name.givenName[x eq 1]").is_err());
        assert!(ValuePath::parse("emails[type eq \"work\"]value").is_err());
    }
}
