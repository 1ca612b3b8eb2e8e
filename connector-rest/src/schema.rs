//! `connector-rest schema URL`: reads one sample object from the service and proposes the
//! declaration of its attributes (and their mapping), for the admin to edit.
//!
//!   connector-rest schema http://127.0.0.1:3000/users [--items '$[0]'] [--header 'Accept: application/json']
//!       [--token-env VAR]   (a bearer token from the environment variable VAR)

use anyhow::{Context, bail};
use serde_json::Value as Json;

const USAGE: &str =
    "usage: connector-rest schema URL [--items JSONPATH] [--header 'Name: value']... [--token-env VAR]";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut url = None;
    let mut items = None;
    let mut headers = Vec::new();
    let mut token_env = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--items" => items = Some(it.next().context(USAGE)?.clone()),
            "--header" => headers.push(it.next().context(USAGE)?.clone()),
            "--token-env" => token_env = Some(it.next().context(USAGE)?.clone()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if url.is_none() && !other.starts_with('-') => url = Some(other.to_string()),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let url = url.context(USAGE)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = runtime.block_on(async {
        let tls = ecma_connector_sdk::tls::client_config(&Default::default())?;
        let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build()?;
        let mut request = client.get(&url).header("accept", "application/json");
        for h in &headers {
            let (name, value) =
                h.split_once(':').with_context(|| format!("--header {h:?} is not `Name: value`"))?;
            request = request.header(name.trim(), value.trim());
        }
        if let Some(var) = &token_env {
            let token = std::env::var(var).with_context(|| format!("--token-env: {var} is not set"))?;
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = answer.status();
        let text = answer.text().await?;
        if !status.is_success() {
            bail!("GET {url} answered {status}");
        }
        Ok::<_, anyhow::Error>(text)
    })?;
    let json: Json = serde_json::from_str(&body)
        .context("the answer is not JSON (the schema command reads JSON services)")?;
    let sample = match &items {
        Some(path) => serde_json_path::JsonPath::parse(path)
            .map_err(|e| anyhow::anyhow!("--items: {e}"))?
            .query(&json)
            .first()
            .cloned(),
        None => match &json {
            Json::Array(a) => a.first().cloned(),
            other => Some(other.clone()),
        },
    };
    let Some(Json::Object(sample)) = sample else { bail!("no object found in the answer (try --items)") };
    print!("{}", propose(&sample));
    Ok(())
}

/// The declaration and mapping proposed for one sample object.
fn propose(sample: &serde_json::Map<String, Json>) -> String {
    let mut declared = Vec::new();
    let mut paths = Vec::new();
    for (name, value) in sample {
        if name == "id" {
            continue;
        }
        let (kind, multi) = match value {
            Json::Bool(_) => ("boolean", false),
            Json::Number(n) if n.is_i64() => ("integer", false),
            Json::Array(items) => (
                match items.first() {
                    Some(Json::Bool(_)) => "boolean",
                    Some(Json::Number(n)) if n.is_i64() => "integer",
                    _ => "string",
                },
                true,
            ),
            Json::Object(_) => {
                paths.push(format!(
                    "# {name} is an object: map its members with attribute_paths (\"$.{name}.member\")"
                ));
                continue;
            }
            _ => ("string", false),
        };
        let mut spec = name.clone();
        if kind != "string" {
            spec.push(':');
            spec.push_str(kind);
        }
        if multi {
            spec.push('*');
        }
        declared.push(spec);
    }
    let mut out = String::from(
        "# Proposed from one sample object: check each type, and mark references (\":reference\").\n",
    );
    out.push_str(&format!("attributes = \"{}\"\n", declared.join(", ")));
    out.push_str(&format!(
        "anchor_attribute = \"id\"\nid_path = \"$.id\"\n{}",
        paths.iter().map(|p| format!("{p}\n")).collect::<String>()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_is_proposed_from_a_sample() {
        let sample = serde_json::json!({"id": 1, "userName": "a", "active": true, "age": 3, "emails": ["x"], "name": {"given": "g"}});
        let text = propose(sample.as_object().unwrap());
        assert!(text.contains(r#"attributes = "active:boolean, age:integer, emails*, userName""#), "{text}");
        assert!(text.contains("name is an object"), "{text}");
    }
}
