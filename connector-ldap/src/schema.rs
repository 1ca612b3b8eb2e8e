//! Schema discovery: object classes and attribute types read from the server's subschema entry
//! (RFC 4512 section 4.1), turned into the protocol's schema types.

use std::collections::{BTreeMap, HashMap};

use ecma_proto::v1::{self, AttributeOperation, AttributeType};

/// One parsed definition: its names, and its keywords with their values.
#[derive(Debug, Default, Clone)]
struct Definition {
    names: Vec<String>,
    fields: HashMap<String, Vec<String>>,
}

impl Definition {
    fn name(&self) -> Option<&str> {
        self.names.first().map(String::as_str)
    }

    fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    fn list(&self, key: &str) -> &[String] {
        self.fields.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Dollar,
    Quoted(String),
    Word(String),
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '$' => {
                chars.next();
                out.push(Token::Dollar);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    s.push(c);
                }
                out.push(Token::Quoted(s));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '$' || c == '\'' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    out
}

/// Parses one object class or attribute type description; `None` when it is malformed.
fn parse(text: &str) -> Option<Definition> {
    let tokens = tokens(text);
    let mut it = tokens.into_iter().peekable();
    if it.next()? != Token::Open {
        return None;
    }
    // The numeric OID.
    let Token::Word(_) = it.next()? else { return None };
    let mut def = Definition::default();
    while let Some(token) = it.next() {
        let key = match token {
            Token::Word(w) => w.to_ascii_uppercase(),
            Token::Close => break,
            _ => return None,
        };
        let mut values = Vec::new();
        match it.peek() {
            Some(Token::Open) => {
                it.next();
                for t in it.by_ref() {
                    match t {
                        Token::Close => break,
                        Token::Quoted(s) | Token::Word(s) => values.push(s),
                        Token::Dollar | Token::Open => {}
                    }
                }
            }
            Some(Token::Quoted(_)) => {
                if let Some(Token::Quoted(s)) = it.next() {
                    values.push(s);
                }
            }
            // Keywords that take an oid or a word (SUP, SYNTAX, USAGE, EQUALITY, ...); flags
            // (STRUCTURAL, SINGLE-VALUE, ...) are followed by the next keyword.
            Some(Token::Word(w)) if !is_keyword(w) => {
                if let Some(Token::Word(s)) = it.next() {
                    values.push(s);
                }
            }
            _ => {}
        }
        if key == "NAME" {
            def.names = values.clone();
        }
        def.fields.insert(key, values);
    }
    Some(def)
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word.to_ascii_uppercase().as_str(),
        "NAME"
            | "DESC"
            | "OBSOLETE"
            | "SUP"
            | "ABSTRACT"
            | "STRUCTURAL"
            | "AUXILIARY"
            | "MUST"
            | "MAY"
            | "EQUALITY"
            | "ORDERING"
            | "SUBSTR"
            | "SYNTAX"
            | "SINGLE-VALUE"
            | "COLLECTIVE"
            | "NO-USER-MODIFICATION"
            | "USAGE"
    ) || word.starts_with("X-")
}

/// Attribute syntaxes (RFC 4517) that matter to the protocol's types.
const DN_SYNTAX: &str = "1.3.6.1.4.1.1466.115.121.1.12";
const NAME_AND_UID_SYNTAX: &str = "1.3.6.1.4.1.1466.115.121.1.34";
const BOOLEAN_SYNTAX: &str = "1.3.6.1.4.1.1466.115.121.1.7";
const INTEGER_SYNTAX: &str = "1.3.6.1.4.1.1466.115.121.1.27";
const BINARY_SYNTAXES: &[&str] = &[
    "1.3.6.1.4.1.1466.115.121.1.40", // octet string
    "1.3.6.1.4.1.1466.115.121.1.5",  // binary
    "1.3.6.1.4.1.1466.115.121.1.28", // JPEG
    "1.3.6.1.4.1.1466.115.121.1.8",  // certificate
];

/// The directory's schema, by lower-cased name.
#[derive(Debug, Default)]
pub struct DirectorySchema {
    classes: BTreeMap<String, Definition>,
    attributes: HashMap<String, Definition>,
}

/// An attribute as the connector treats it.
#[derive(Debug, Clone)]
pub struct AttributeInfo {
    pub name: String,
    pub kind: AttributeType,
    pub single: bool,
    pub operational: bool,
}

impl DirectorySchema {
    /// From the `objectClasses` and `attributeTypes` values of the subschema entry.
    pub fn parse(object_classes: &[String], attribute_types: &[String]) -> Self {
        let mut schema = Self::default();
        for def in object_classes.iter().filter_map(|t| parse(t)) {
            for name in &def.names {
                schema.classes.insert(name.to_ascii_lowercase(), def.clone());
            }
        }
        for def in attribute_types.iter().filter_map(|t| parse(t)) {
            for name in &def.names {
                schema.attributes.insert(name.to_ascii_lowercase(), def.clone());
            }
        }
        schema
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The canonical name of an object class.
    pub fn class_name(&self, name: &str) -> Option<String> {
        self.classes.get(&name.to_ascii_lowercase()).and_then(|d| d.name()).map(String::from)
    }

    pub fn is_auxiliary(&self, name: &str) -> bool {
        self.classes.get(&name.to_ascii_lowercase()).is_some_and(|d| d.has("AUXILIARY"))
    }

    /// Names of the structural classes.
    pub fn structural_classes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .classes
            .values()
            .filter(|d| d.has("STRUCTURAL"))
            .filter_map(|d| d.name().map(String::from))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The syntax of an attribute, following SUP.
    fn syntax(&self, name: &str) -> Option<String> {
        let mut current = self.attributes.get(&name.to_ascii_lowercase())?;
        for _ in 0..16 {
            if let Some(syntax) = current.list("SYNTAX").first() {
                return Some(syntax.split('{').next().unwrap_or(syntax).to_string());
            }
            current = self.attributes.get(&current.list("SUP").first()?.to_ascii_lowercase())?;
        }
        None
    }

    /// How the connector treats an attribute.
    pub fn attribute(&self, name: &str) -> Option<AttributeInfo> {
        let def = self.attributes.get(&name.to_ascii_lowercase())?;
        let syntax = self.syntax(name).unwrap_or_default();
        let kind = match syntax.as_str() {
            DN_SYNTAX | NAME_AND_UID_SYNTAX => AttributeType::Reference,
            BOOLEAN_SYNTAX => AttributeType::Boolean,
            INTEGER_SYNTAX => AttributeType::Integer,
            s if BINARY_SYNTAXES.contains(&s) => AttributeType::Binary,
            _ => AttributeType::String,
        };
        let operational =
            def.list("USAGE").first().is_some_and(|u| !u.eq_ignore_ascii_case("userApplications"))
                || def.has("NO-USER-MODIFICATION");
        Some(AttributeInfo {
            name: def.name().unwrap_or(name).to_string(),
            kind,
            single: def.has("SINGLE-VALUE"),
            operational,
        })
    }

    /// The MUST and MAY attributes of `classes` and their superclasses.
    fn class_attributes(&self, classes: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut must, mut may) = (Vec::new(), Vec::new());
        let mut todo: Vec<String> = classes.iter().map(|c| c.to_ascii_lowercase()).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(class) = todo.pop() {
            if !seen.insert(class.clone()) {
                continue;
            }
            let Some(def) = self.classes.get(&class) else { continue };
            must.extend(def.list("MUST").iter().cloned());
            may.extend(def.list("MAY").iter().cloned());
            todo.extend(def.list("SUP").iter().map(|s| s.to_ascii_lowercase()));
        }
        (must, may)
    }

    /// The protocol schema type of a structural class plus auxiliary classes, with the anchor.
    pub fn schema_type(&self, class: &str, auxiliary: &[String], anchor: &str) -> v1::SchemaType {
        let classes: Vec<String> =
            std::iter::once(class.to_string()).chain(auxiliary.iter().cloned()).collect();
        let (must, may) = self.class_attributes(&classes);
        let mut attributes: Vec<v1::SchemaAttribute> = Vec::new();
        let mut push = |name: &str, required: bool, operation: AttributeOperation| {
            if name.eq_ignore_ascii_case("objectClass") {
                return;
            }
            let info = self.attribute(name).unwrap_or(AttributeInfo {
                name: name.to_string(),
                kind: AttributeType::String,
                single: false,
                operational: false,
            });
            if attributes.iter().any(|a| a.name.eq_ignore_ascii_case(&info.name)) {
                return;
            }
            let operation = if info.name.eq_ignore_ascii_case("userPassword") {
                AttributeOperation::ExportOnly
            } else if info.operational {
                AttributeOperation::ImportOnly
            } else {
                operation
            };
            attributes.push(v1::SchemaAttribute {
                name: info.name,
                r#type: info.kind as i32,
                multi_valued: !info.single,
                operation: operation as i32,
                required,
            });
        };
        for name in &must {
            push(name, true, AttributeOperation::ImportExport);
        }
        for name in &may {
            push(name, false, AttributeOperation::ImportExport);
        }
        push(anchor, false, AttributeOperation::ImportOnly);
        // The anchor is read-only and single-valued whatever the schema says.
        if let Some(a) = attributes.iter_mut().find(|a| a.name.eq_ignore_ascii_case(anchor)) {
            a.multi_valued = false;
            a.r#type = AttributeType::String as i32;
        }
        let anchor_name = attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(anchor))
            .map(|a| a.name.clone())
            .unwrap_or_else(|| anchor.to_string());
        v1::SchemaType {
            name: self.class_name(class).unwrap_or_else(|| class.to_string()),
            attributes,
            anchor_attributes: vec![anchor_name],
            locked: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> DirectorySchema {
        DirectorySchema::parse(
            &[
                "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )".into(),
                "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber ) )".into(),
                "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP person STRUCTURAL MAY ( mail $ uid $ manager ) )".into(),
                "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST ( member $ cn ) MAY description )".into(),
                "( 1.1 NAME 'extra' AUXILIARY MAY employeeType )".into(),
            ],
            &[
                "( 2.5.4.41 NAME 'name' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )".into(),
                "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'common name' SUP name )".into(),
                "( 2.5.4.4 NAME ( 'sn' 'surname' ) SUP name )".into(),
                "( 0.9.2342.19200300.100.1.1 NAME ( 'uid' 'userid' ) SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} )".into(),
                "( 2.5.4.31 NAME 'member' SUP distinguishedName )".into(),
                "( 2.5.4.49 NAME 'distinguishedName' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )".into(),
                "( 0.9.2342.19200300.100.1.10 NAME 'manager' SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )".into(),
                "( 1.3.6.1.1.16.4 NAME 'entryUUID' SYNTAX 1.3.6.1.1.16.1 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )".into(),
                "( 2.16.840.1.113730.3.1.4 NAME 'employeeType' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )".into(),
                "( 2.5.4.35 NAME 'userPassword' SYNTAX 1.3.6.1.4.1.1466.115.121.1.40{128} )".into(),
            ],
        )
    }

    #[test]
    fn classes_inherit_attributes_and_syntaxes() {
        let s = schema();
        let t = s.schema_type("inetorgperson", &["extra".into()], "entryUUID");
        assert_eq!(t.name, "inetOrgPerson");
        let get =
            |n: &str| t.attributes.iter().find(|a| a.name == n).unwrap_or_else(|| panic!("{n} missing"));
        assert!(get("sn").required && get("cn").required && !get("mail").required);
        assert_eq!(get("manager").r#type, AttributeType::Reference as i32);
        assert_eq!(get("userPassword").operation, AttributeOperation::ExportOnly as i32);
        assert_eq!(get("userPassword").r#type, AttributeType::Binary as i32);
        assert_eq!(get("entryUUID").operation, AttributeOperation::ImportOnly as i32);
        assert!(!get("entryUUID").multi_valued);
        assert!(get("employeeType").multi_valued, "auxiliary class attributes are included");
        assert!(t.attributes.iter().all(|a| a.name != "objectClass"));
        assert_eq!(t.anchor_attributes, ["entryUUID"]);
        let g = s.schema_type("groupOfNames", &[], "entryUUID");
        let member = g.attributes.iter().find(|a| a.name == "member").unwrap();
        assert!(member.multi_valued && member.required && member.r#type == AttributeType::Reference as i32);
        assert_eq!(s.structural_classes(), ["groupOfNames", "inetOrgPerson", "person"]);
        assert!(s.is_auxiliary("EXTRA"));
    }
}
