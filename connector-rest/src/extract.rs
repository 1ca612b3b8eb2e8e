//! Reading answers: the objects in a body and their anchor and attributes, by JSONPath
//! (RFC 9535) for JSON and XPath 1.0 for XML and SOAP; the service's own error message; a SOAP
//! fault.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use serde_json_path::JsonPath;
use sxd_xpath::nodeset::Node;

/// A place in an answer.
#[derive(Debug, Clone)]
pub enum Selector {
    Json(JsonPath),
    /// An XPath expression (compiled where it is used: the XML library's trees are not `Send`).
    Xml(String),
}

impl Selector {
    /// Reads `text` as JSONPath or, for XML answers, XPath; a bad expression is an error.
    pub fn parse(text: &str, xml: bool) -> Result<Self, String> {
        if xml {
            sxd_xpath::Factory::new()
                .build(text)
                .map_err(|e| format!("{text:?} is not an XPath 1.0 expression ({e})"))?
                .ok_or_else(|| format!("{text:?} is an empty XPath expression"))?;
            Ok(Selector::Xml(text.to_string()))
        } else {
            JsonPath::parse(text)
                .map(Selector::Json)
                .map_err(|e| format!("{text:?} is not an RFC 9535 JSONPath ({e})"))
        }
    }
}

/// One object found in an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub anchor: Option<String>,
    /// Each attribute's values: JSON values, or the text of XML nodes as strings.
    pub attributes: BTreeMap<String, Vec<Json>>,
    /// The object's modification time (for delta imports).
    pub watermark: Option<String>,
    /// The object itself (JSON answers only).
    pub raw: Option<Json>,
}

/// Where the anchor, the attributes and the watermark of an object are, relative to it.
#[derive(Debug, Clone)]
pub struct Shape {
    pub anchor: Selector,
    pub attributes: Vec<(String, Selector)>,
    pub watermark: Option<Selector>,
    pub namespaces: Vec<(String, String)>,
}

/// A parsed answer.
pub enum Body {
    Json(Json),
    Xml(String),
}

impl Body {
    pub fn parse(text: &str, xml: bool) -> Result<Self, String> {
        if xml {
            sxd_document::parser::parse(text)
                .map_err(|e| format!("the answer is not well-formed XML ({e:?})"))?;
            Ok(Body::Xml(text.to_string()))
        } else {
            serde_json::from_str(text)
                .map(Body::Json)
                .map_err(|e| format!("the answer is not valid JSON ({e})"))
        }
    }

    /// The objects at `items` (the whole answer when `None`), with their parts per `shape`.
    pub fn objects(&self, items: Option<&Selector>, shape: &Shape) -> Result<Vec<Found>, String> {
        match self {
            Body::Json(json) => {
                let objects: Vec<&Json> = match items {
                    Some(Selector::Json(path)) => path.query(json).all(),
                    None => vec![json],
                    Some(Selector::Xml(_)) => return Err("an XPath on a JSON answer".into()),
                };
                Ok(objects.into_iter().map(|o| json_object(o, shape)).collect())
            }
            Body::Xml(text) => xml_objects(text, items, shape),
        }
    }

    /// The text at `at` (the first match), if any.
    pub fn text(&self, at: &Selector, namespaces: &[(String, String)]) -> Option<String> {
        match (self, at) {
            (Body::Json(json), Selector::Json(path)) => path.query(json).first().and_then(scalar_text),
            (Body::Xml(text), Selector::Xml(_)) => {
                let package = sxd_document::parser::parse(text).ok()?;
                let doc = package.as_document();
                xml_values(doc.root().into(), at, namespaces).ok()?.into_iter().next()
            }
            _ => None,
        }
    }
}

fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn json_object(object: &Json, shape: &Shape) -> Found {
    let first = |s: &Selector| match s {
        Selector::Json(p) => p.query(object).first().and_then(scalar_text),
        Selector::Xml(_) => None,
    };
    let mut attributes = BTreeMap::new();
    for (name, at) in &shape.attributes {
        let Selector::Json(path) = at else { continue };
        let mut values = Vec::new();
        for v in path.query(object).all() {
            match v {
                Json::Null => {}
                Json::Array(items) => values.extend(items.iter().filter(|i| !i.is_null()).cloned()),
                other => values.push(other.clone()),
            }
        }
        attributes.insert(name.clone(), values);
    }
    Found {
        anchor: first(&shape.anchor),
        attributes,
        watermark: shape.watermark.as_ref().and_then(first),
        raw: Some(object.clone()),
    }
}

/// The string values of the nodes (or the value) `at` selects from `node`.
fn xml_values(node: Node<'_>, at: &Selector, namespaces: &[(String, String)]) -> Result<Vec<String>, String> {
    let Selector::Xml(expression) = at else { return Err("a JSONPath on an XML answer".into()) };
    let xpath = sxd_xpath::Factory::new()
        .build(expression)
        .map_err(|e| e.to_string())?
        .ok_or("an empty XPath expression")?;
    let mut context = sxd_xpath::Context::new();
    for (prefix, uri) in namespaces {
        context.set_namespace(prefix, uri);
    }
    let value = xpath.evaluate(&context, node).map_err(|e| format!("XPath {expression:?}: {e}"))?;
    Ok(match value {
        sxd_xpath::Value::Nodeset(nodes) => {
            nodes.document_order().into_iter().map(|n| n.string_value()).collect()
        }
        sxd_xpath::Value::String(s) if s.is_empty() => vec![],
        sxd_xpath::Value::String(s) => vec![s],
        sxd_xpath::Value::Number(n) => vec![n.to_string()],
        sxd_xpath::Value::Boolean(b) => vec![b.to_string()],
    })
}

fn xml_objects(text: &str, items: Option<&Selector>, shape: &Shape) -> Result<Vec<Found>, String> {
    let package = sxd_document::parser::parse(text).map_err(|e| format!("not well-formed XML ({e:?})"))?;
    let doc = package.as_document();
    let nodes: Vec<Node<'_>> = match items {
        None => vec![doc.root().into()],
        Some(Selector::Xml(expression)) => {
            let xpath = sxd_xpath::Factory::new()
                .build(expression)
                .map_err(|e| e.to_string())?
                .ok_or("an empty XPath expression")?;
            let mut context = sxd_xpath::Context::new();
            for (prefix, uri) in &shape.namespaces {
                context.set_namespace(prefix, uri);
            }
            match xpath.evaluate(&context, doc.root()).map_err(|e| format!("XPath {expression:?}: {e}"))? {
                sxd_xpath::Value::Nodeset(nodes) => nodes.document_order(),
                _ => return Err(format!("XPath {expression:?} does not select nodes")),
            }
        }
        Some(Selector::Json(_)) => return Err("a JSONPath on an XML answer".into()),
    };
    let mut out = Vec::new();
    for node in nodes {
        let mut attributes = BTreeMap::new();
        for (name, at) in &shape.attributes {
            let values = xml_values(node, at, &shape.namespaces)?;
            attributes.insert(name.clone(), values.into_iter().map(Json::String).collect());
        }
        let first = |s: &Selector| -> Result<Option<String>, String> {
            Ok(xml_values(node, s, &shape.namespaces)?.into_iter().find(|v| !v.is_empty()))
        };
        out.push(Found {
            anchor: first(&shape.anchor)?,
            attributes,
            watermark: shape.watermark.as_ref().map(first).transpose()?.flatten(),
            raw: None,
        });
    }
    Ok(out)
}

/// A SOAP fault in an answer: its code and its message.
pub fn soap_fault(text: &str) -> Option<(String, String)> {
    let package = sxd_document::parser::parse(text).ok()?;
    let doc = package.as_document();
    let one = |expression: &str| {
        xml_values(doc.root().into(), &Selector::Xml(expression.into()), &[]).ok()?.into_iter().next()
    };
    one("//*[local-name()='Fault']")?;
    // SOAP 1.1: faultcode and faultstring; SOAP 1.2: Code/Value (and Subcode) and Reason/Text.
    let code = one("//*[local-name()='Fault']/*[local-name()='faultcode']")
        .or_else(|| one("//*[local-name()='Fault']/*[local-name()='Code']//*[local-name()='Value'][last()]"))
        .unwrap_or_default();
    let message = one("//*[local-name()='Fault']/*[local-name()='faultstring']")
        .or_else(|| one("//*[local-name()='Fault']/*[local-name()='Reason']/*[local-name()='Text']"))
        .unwrap_or_default();
    Some((code.trim().to_string(), message.trim().to_string()))
}

/// The service's own message in an error answer: at `at` when configured, else the first of a
/// few usual places (connector_web::json_message), else the start of the body.
pub fn error_message(body: &str, at: Option<&Selector>, namespaces: &[(String, String)]) -> String {
    let xml = body.trim_start().starts_with('<');
    if xml && let Some((code, message)) = soap_fault(body) {
        return if code.is_empty() { message } else { format!("{code}: {message}") };
    }
    if let Some(at) = at
        && let Ok(parsed) = Body::parse(body, xml)
        && let Some(text) = parsed.text(at, namespaces)
    {
        return text;
    }
    // The usual places of a JSON body, else the start of the body.
    connector_web::json_message(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(xml: bool, anchor: &str, attributes: &[(&str, &str)]) -> Shape {
        Shape {
            anchor: Selector::parse(anchor, xml).unwrap(),
            attributes: attributes
                .iter()
                .map(|(n, p)| (n.to_string(), Selector::parse(p, xml).unwrap()))
                .collect(),
            watermark: None,
            namespaces: vec![("u".into(), "urn:x".into())],
        }
    }

    #[test]
    fn json_objects_are_found_by_jsonpath() {
        let body =
            Body::parse(r#"{"data": [{"id": 7, "n": "a", "tags": ["x", null, "y"]}, {"id": "8"}]}"#, false)
                .unwrap();
        let items = Selector::parse("$.data[*]", false).unwrap();
        let found =
            body.objects(Some(&items), &shape(false, "$.id", &[("n", "$.n"), ("tags", "$.tags")])).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].anchor.as_deref(), Some("7"));
        assert_eq!(found[0].attributes["tags"], [json!("x"), json!("y")]);
        assert_eq!(found[1].anchor.as_deref(), Some("8"));
        assert!(found[1].attributes["n"].is_empty());
        assert!(Selector::parse("$.[", false).is_err());
    }

    #[test]
    fn xml_objects_are_found_by_xpath_with_namespaces() {
        let xml = r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <u:r xmlns:u="urn:x"><u:User><u:id>u1</u:id><u:g><u:string>a</u:string><u:string>b</u:string></u:g></u:User>
            <u:User><u:id>u2</u:id></u:User></u:r></s:Body></s:Envelope>"#;
        let body = Body::parse(xml, true).unwrap();
        let items = Selector::parse("//u:User", true).unwrap();
        let found = body.objects(Some(&items), &shape(true, "u:id", &[("g", "u:g/u:string")])).unwrap();
        assert_eq!(found.iter().map(|f| f.anchor.clone().unwrap()).collect::<Vec<_>>(), ["u1", "u2"]);
        assert_eq!(found[0].attributes["g"], [json!("a"), json!("b")]);
        assert!(Body::parse("<a>", true).is_err());
    }

    #[test]
    fn error_messages_come_from_the_service() {
        let fault = r#"<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/"><soap11env:Body><soap11env:Fault><faultcode>soap11env:Client.NotFound</faultcode><faultstring>no user u9</faultstring></soap11env:Fault></soap11env:Body></soap11env:Envelope>"#;
        assert_eq!(
            soap_fault(fault).unwrap(),
            ("soap11env:Client.NotFound".to_string(), "no user u9".to_string())
        );
        assert_eq!(error_message(fault, None, &[]), "soap11env:Client.NotFound: no user u9");
        let soap12 = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text xml:lang="en">bad</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#;
        assert_eq!(soap_fault(soap12).unwrap(), ("e:Sender".to_string(), "bad".to_string()));
        assert_eq!(error_message(r#"{"error": {"message": "taken"}}"#, None, &[]), "taken");
        let at = Selector::parse("$.errors[0].text", false).unwrap();
        assert_eq!(error_message(r#"{"errors": [{"text": "x"}]}"#, Some(&at), &[]), "x");
        assert_eq!(error_message("plain words", None, &[]), "plain words");
    }
}
