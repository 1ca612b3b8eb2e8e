//! Mapping expressions: a connector attribute computed from SCIM attributes, in the function
//! style identity admins know from Entra's attribute mappings.
//!
//! ```text
//! Join("", "uid=", [userName], ",ou=People,dc=example,dc=com")
//! Switch([department], "ou=Staff", "Engineering", "ou=Eng", "Sales", "ou=Sales")
//! IIF([userType] = "Contractor", "ext", "int")
//! ToLower(Replace([displayName], " ", "."))
//! ```
//!
//! `[path]` is a SCIM attribute path (value filters allowed); `"..."` a string with `\"` and
//! `\\` escapes; numbers, `true` and `false` are literals; `a = b` compares (case-insensitively
//! for strings). Functions: `Join(separator, values...)`, `Switch(source, default, key, value,
//! ...)`, `IIF(condition, then, else)`, `IsPresent(value)`, `ToLower`, `ToUpper`,
//! `Replace(source, find, replacement)`, `EscapeDN(value)` (RFC 4514), `Coalesce(values...)`.
//! In the mapping of the `dn` target, values taken from SCIM attributes are escaped as DN values
//! (RFC 4514) wherever they land, so that a `userName` like `a,ou=Admins` cannot move an entry.

use serde_json::Value;

use crate::paths::{ValuePath, get_ci, is_present as present};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Attribute(ValuePath),
    Call(Function, Vec<Expr>),
    Equals(Box<Expr>, Box<Expr>),
}

/// The functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Join,
    Switch,
    Iif,
    IsPresent,
    ToLower,
    ToUpper,
    Replace,
    EscapeDn,
    Coalesce,
}

impl Function {
    fn named(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "join" => Function::Join,
            "switch" => Function::Switch,
            "iif" => Function::Iif,
            "ispresent" => Function::IsPresent,
            "tolower" => Function::ToLower,
            "toupper" => Function::ToUpper,
            "replace" => Function::Replace,
            "escapedn" => Function::EscapeDn,
            "coalesce" => Function::Coalesce,
            _ => return None,
        })
    }

    /// (fewest, most) arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Function::Join => (1, usize::MAX),
            Function::Switch => (2, usize::MAX),
            Function::Iif | Function::Replace => (3, 3),
            Function::IsPresent | Function::ToLower | Function::ToUpper | Function::EscapeDn => (1, 1),
            Function::Coalesce => (1, usize::MAX),
        }
    }
}

/// Whether a mapping value is an expression rather than a plain SCIM path.
pub fn is_expression(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with('[') || t.starts_with('"') || {
        let name: String = t.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        !name.is_empty() && t[name.len()..].trim_start().starts_with('(') && Function::named(&name).is_some()
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn error<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at character {}", self.text[..self.pos].chars().count() + 1))
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let left = self.primary()?;
        if self.eat('=') {
            let right = self.primary()?;
            return Ok(Expr::Equals(Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.skip_space();
        let rest = self.rest();
        if rest.starts_with('"') {
            return self.string().map(|s| Expr::Literal(Value::String(s)));
        }
        if rest.starts_with('[') {
            // A SCIM path in brackets; value filters inside have brackets (and strings) of their own.
            let mut depth = 0;
            let mut in_string = false;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_string => escaped = true,
                    '"' => in_string = !in_string,
                    '[' if !in_string => depth += 1,
                    ']' if !in_string => {
                        depth -= 1;
                        if depth == 0 {
                            let path = &rest[1..i];
                            self.pos += i + 1;
                            return ValuePath::parse(path)
                                .map(Expr::Attribute)
                                .map_err(|e| format!("[{path}]: {e}"));
                        }
                    }
                    _ => {}
                }
            }
            return self.error("'[' without ']'");
        }
        let word: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
        if word.is_empty() {
            return self.error("expected a value, an [attribute] or a function");
        }
        self.pos += word.len();
        match word.to_ascii_lowercase().as_str() {
            "true" => return Ok(Expr::Literal(Value::Bool(true))),
            "false" => return Ok(Expr::Literal(Value::Bool(false))),
            _ => {}
        }
        if let Ok(n) = word.parse::<serde_json::Number>() {
            return Ok(Expr::Literal(Value::Number(n)));
        }
        let Some(function) = Function::named(&word) else {
            return self.error(&format!("unknown function {word:?}"));
        };
        if !self.eat('(') {
            return self.error(&format!("expected '(' after {word}"));
        }
        let mut args = Vec::new();
        if !self.eat(')') {
            loop {
                args.push(self.expr()?);
                if self.eat(')') {
                    break;
                }
                if !self.eat(',') {
                    return self.error("expected ',' or ')'");
                }
            }
        }
        let (min, max) = function.arity();
        if args.len() < min || args.len() > max {
            return self.error(&format!(
                "{word} takes {}",
                if min == max { format!("{min} arguments") } else { format!("at least {min} arguments") }
            ));
        }
        if function == Function::Switch && args.len() % 2 != 0 {
            return self.error("Switch takes a source, a default, then key-value pairs");
        }
        Ok(Expr::Call(function, args))
    }

    fn string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.error("unterminated string")
    }
}

impl Expr {
    /// The attribute paths the expression reads.
    pub fn attribute_paths(&self) -> Vec<&ValuePath> {
        match self {
            Expr::Literal(_) => vec![],
            Expr::Attribute(path) => vec![path],
            Expr::Call(_, args) => args.iter().flat_map(Expr::attribute_paths).collect(),
            Expr::Equals(a, b) => a.attribute_paths().into_iter().chain(b.attribute_paths()).collect(),
        }
    }

    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parser = Parser { text, pos: 0 };
        let expr = parser.expr()?;
        parser.skip_space();
        if !parser.rest().is_empty() {
            return parser.error("unexpected text after the expression");
        }
        Ok(expr)
    }

    /// Evaluates against a SCIM resource. `None` is "no value". With `escape_dn`, values taken
    /// from the resource are escaped as DN values.
    pub fn eval(&self, resource: &Value, escape_dn: bool) -> Option<Value> {
        match self {
            Expr::Literal(v) => Some(v.clone()),
            Expr::Attribute(path) => {
                let value = pick(path, resource)?.clone();
                match (&value, escape_dn) {
                    (Value::String(s), true) => Some(Value::String(escape_dn_value(s))),
                    _ => Some(value),
                }
            }
            Expr::Equals(a, b) => {
                let (a, b) = (a.eval(resource, false), b.eval(resource, false));
                Some(Value::Bool(match (&a, &b) {
                    (Some(Value::String(x)), Some(Value::String(y))) => x.eq_ignore_ascii_case(y),
                    _ => a == b,
                }))
            }
            Expr::Call(function, args) => {
                let text =
                    |e: &Expr| e.eval(resource, escape_dn).map(|v| as_text(&v)).filter(|s| !s.is_empty());
                match function {
                    Function::Join => {
                        let separator =
                            args[0].eval(resource, false).map(|v| as_text(&v)).unwrap_or_default();
                        let parts: Vec<String> = args[1..].iter().filter_map(text).collect();
                        (!parts.is_empty()).then(|| Value::String(parts.join(&separator)))
                    }
                    Function::Switch => {
                        let source = args[0].eval(resource, false).map(|v| as_text(&v));
                        let pairs = args[2..].chunks(2);
                        for pair in pairs {
                            let key = pair[0].eval(resource, false).map(|v| as_text(&v));
                            if key.is_some()
                                && key.as_deref().map(str::to_lowercase)
                                    == source.as_deref().map(str::to_lowercase)
                            {
                                return pair[1].eval(resource, escape_dn);
                            }
                        }
                        args[1].eval(resource, escape_dn)
                    }
                    Function::Iif => {
                        let condition = args[0].eval(resource, false);
                        let yes = matches!(condition, Some(Value::Bool(true)))
                            || matches!(&condition, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"));
                        args[if yes { 1 } else { 2 }].eval(resource, escape_dn)
                    }
                    Function::IsPresent => {
                        Some(Value::Bool(args[0].eval(resource, false).is_some_and(|v| present(&v))))
                    }
                    Function::ToLower => text(&args[0]).map(|s| Value::String(s.to_lowercase())),
                    Function::ToUpper => text(&args[0]).map(|s| Value::String(s.to_uppercase())),
                    Function::Replace => {
                        let source = text(&args[0])?;
                        let find = args[1].eval(resource, false).map(|v| as_text(&v)).unwrap_or_default();
                        let with = args[2].eval(resource, escape_dn).map(|v| as_text(&v)).unwrap_or_default();
                        Some(Value::String(if find.is_empty() {
                            source
                        } else {
                            source.replace(&find, &with)
                        }))
                    }
                    Function::EscapeDn => {
                        // Escaped once: inside the dn target the attribute is escaped already.
                        let value = args[0].eval(resource, false).map(|v| as_text(&v))?;
                        Some(Value::String(escape_dn_value(&value)))
                    }
                    Function::Coalesce => {
                        args.iter().find_map(|a| a.eval(resource, escape_dn).filter(present))
                    }
                }
            }
        }
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The value a path gives: the primary (else first) element of a multi-valued attribute.
fn pick<'a>(path: &ValuePath, resource: &'a Value) -> Option<&'a Value> {
    let values = path.resolve(resource);
    if path.filter.is_none()
        && let Some(container) = path.path.container(resource)
        && let Some(Value::Array(items)) = get_ci(container, &path.path.attr)
        && let Some(primary) = items.iter().find(|i| get_ci(i, "primary") == Some(&Value::Bool(true)))
    {
        return match &path.path.sub {
            Some(sub) => get_ci(primary, sub),
            None => Some(primary),
        };
    }
    values.into_iter().next()
}

/// Escapes an attribute value for a DN (RFC 4514 §2.4).
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "userName": "bjensen", "displayName": "Barbara Jensen", "userType": "Contractor",
            "emails": [{"value": "b@x", "type": "home"}, {"value": "B@Work", "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Engineering"}
        })
    }

    fn eval(text: &str) -> Option<Value> {
        Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).eval(&user(), false)
    }

    #[test]
    fn functions() {
        assert_eq!(
            eval(r#"Join("", "uid=", [userName], ",ou=People,dc=example,dc=com")"#),
            Some(json!("uid=bjensen,ou=People,dc=example,dc=com"))
        );
        assert_eq!(
            eval(r#"Join(" ", [name.givenName], [displayName])"#),
            Some(json!("Barbara Jensen")),
            "absent parts are left out"
        );
        let dept = "[urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department]";
        assert_eq!(
            eval(&format!(r#"Switch({dept}, "ou=Staff", "Engineering", "ou=Eng")"#)),
            Some(json!("ou=Eng"))
        );
        assert_eq!(
            eval(r#"Switch([userName], "ou=Staff", "Engineering", "ou=Eng")"#),
            Some(json!("ou=Staff"))
        );
        assert_eq!(eval(r#"IIF([userType] = "contractor", "ext", "int")"#), Some(json!("ext")));
        assert_eq!(eval(r#"IIF(IsPresent([title]), "titled", "none")"#), Some(json!("none")));
        assert_eq!(eval(r#"ToLower(Replace([displayName], " ", "."))"#), Some(json!("barbara.jensen")));
        assert_eq!(eval("ToLower([emails.value])"), Some(json!("b@work")), "primary first");
        assert_eq!(eval(r#"[emails[type eq "home"].value]"#), Some(json!("b@x")));
        assert_eq!(eval(r#"Coalesce([title], [displayName])"#), Some(json!("Barbara Jensen")));
        assert_eq!(eval("[title]"), None);
        assert_eq!(eval(r#""a \"quoted\" \\ text""#), Some(json!("a \"quoted\" \\ text")));
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,ou=Admins"), "a\\,ou\\=Admins");
        assert_eq!(escape_dn_value(" #lead "), "\\ #lead\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("x+y\"z\\<>;"), "x\\+y\\\"z\\\\\\<\\>\\;");
        let evil = json!({"userName": "evil,ou=Admins,dc=example,dc=com"});
        let dn = Expr::parse(r#"Join("", "uid=", [userName], ",ou=People,dc=example,dc=com")"#)
            .unwrap()
            .eval(&evil, true);
        assert_eq!(
            dn,
            Some(json!("uid=evil\\,ou\\=Admins\\,dc\\=example\\,dc\\=com,ou=People,dc=example,dc=com"))
        );
        let twice = Expr::parse(r#"Join("", "cn=", EscapeDN([userName]))"#).unwrap().eval(&evil, true);
        assert_eq!(twice, Some(json!("cn=evil\\,ou\\=Admins\\,dc\\=example\\,dc\\=com")), "escaped once");
    }

    #[test]
    fn bad_expressions_are_refused_with_the_place() {
        for bad in [
            "Join(",
            "Join()",
            r#"Nope("x")"#,
            "[userName",
            r#""open"#,
            r#"IIF([a], "b")"#,
            r#"Switch([a], "d", "k")"#,
            r#"ToLower([a]) extra"#,
            "Join(\"\", [a..b])",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
        assert!(Expr::parse("Join(").unwrap_err().contains("character"));
        assert!(is_expression(r#"Join("", [a])"#) && is_expression("[userName]") && is_expression(r#""x""#));
        assert!(
            !is_expression("userName")
                && !is_expression(r#"emails[type eq "work"].value"#)
                && !is_expression("name.givenName")
        );
    }
}
