//! What connectors that talk to web services share (connector-rest, connector-scim): the
//! parameters of a service's connection (its URL, headers, timeouts, retries, TLS files and
//! authentication), and [`Http`], the client that authenticates, retries what the service did
//! not process, and says what a failure means for a write (not done, or not known).

use std::path::PathBuf;
use std::time::Duration;

use ecma_connector_sdk::{ConfigExt, ConnectorError, Parameter};
use ecma_proto::v1::ConfigParameterType as T;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value as Json;
use url::Url;

mod http;
pub use http::{Answer, Failure, Http, Request, retry_after};
pub use reqwest::{Method, StatusCode, header};

/// How the service is authenticated to. Secrets stay in here, and out of every message.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
    Header {
        name: HeaderName,
        value: String,
    },
    OAuth2 {
        token_url: Url,
        client_id: String,
        client_secret: String,
        form: Vec<(String, String)>,
        in_body: bool,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
            Auth::Header { .. } => "header",
            Auth::OAuth2 { .. } => "oauth2",
        })
    }
}

impl Auth {
    /// The secrets, to keep out of error details.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Auth::None => vec![],
            Auth::Basic { password, .. } => vec![password.clone()],
            Auth::Bearer(token) | Auth::Header { value: token, .. } => vec![token.clone()],
            Auth::OAuth2 { client_secret, .. } => vec![client_secret.clone()],
        }
    }
}

/// A service's connection.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub base_url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub max_retry_after: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub auth: Auth,
    /// The User-Agent of every request (the connector's name and version).
    pub user_agent: String,
}

/// The parameters of a connection (`base_url` among them), with their defaults.
pub fn definitions() -> Vec<Parameter> {
    let p = |name: &str, kind: T, help: &str| Parameter::new(name, kind, help);
    vec![
        p("base_url", T::String, "The service's base URL; request paths are relative to it").required(),
        p("headers", T::Text, "Headers sent with every request, a JSON object").default("{}"),
        p("timeout", T::String, "Deadline of one request, from sending it to the end of the answer")
            .default("30s"),
        p("connect_timeout", T::String, "Deadline of connecting").default("10s"),
        p("max_retries", T::Integer, "Retries of a request answered 429 or 503 (not processed)").default("2"),
        p("max_retry_after", T::String, "The longest Retry-After waited before retrying; longer is an error")
            .default("10s"),
        p(
            "ca_file",
            T::String,
            "PEM bundle of the CAs that sign the service's certificate (default: the system's)",
        ),
        p("client_cert_file", T::String, "PEM client certificate chain, for mutual TLS"),
        p("client_key_file", T::String, "PEM private key of client_cert_file"),
        p("auth", T::String, "none, basic, bearer, header or oauth2").default("none"),
        p("username", T::String, "User name (auth = basic)"),
        p("password", T::EncryptedString, "Password (auth = basic); from env or a file").secret(),
        p("token", T::EncryptedString, "Token (auth = bearer or header); from env or a file").secret(),
        p("auth_header", T::String, "Header that carries the token (auth = header)").default("X-API-Key"),
        p("token_url", T::String, "OAuth 2.0 token endpoint (auth = oauth2)"),
        p("client_id", T::String, "OAuth 2.0 client id (auth = oauth2)"),
        p("client_secret", T::EncryptedString, "OAuth 2.0 client secret (auth = oauth2); from env or a file")
            .secret(),
        p("scope", T::String, "OAuth 2.0 scope (auth = oauth2)"),
        p(
            "token_params",
            T::Text,
            "More form parameters of the token request, a JSON object (audience, resource)",
        )
        .default("{}"),
        p("client_auth", T::String, "How the client authenticates to the token endpoint: basic or body")
            .default("basic"),
    ]
}

/// A configuration problem with `parameter`, named in the message.
pub fn bad(parameter: &str, detail: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::config(parameter, format!("{parameter}: {detail}"))
}

/// A JSON object parameter, as (name, string value) pairs.
pub fn json_object(config: &impl ConfigExt, key: &str) -> Result<Vec<(String, String)>, ConnectorError> {
    let Some(text) = config.get(key) else { return Ok(vec![]) };
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map
            .into_iter()
            .map(|(k, v)| match v {
                Json::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()),
        Ok(_) => Err(bad(key, "must be a JSON object")),
        Err(e) => Err(bad(key, format!("is not valid JSON ({e})"))),
    }
}

pub fn duration(config: &impl ConfigExt, key: &str) -> Result<Duration, ConnectorError> {
    let text = config.text(key);
    humantime::parse_duration(text)
        .map_err(|e| bad(key, format!("{text:?} is not a duration like 30s ({e})")))
}

pub fn number(config: &impl ConfigExt, key: &str) -> Result<u64, ConnectorError> {
    let text = config.text(key);
    text.parse().map_err(|_| bad(key, format!("{text:?} is not a whole number")))
}

pub fn header_name(key: &str, name: &str) -> Result<HeaderName, ConnectorError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(key, format!("{name:?} is not a header name")))
}

impl HttpSettings {
    /// Reads the connection's parameters (declared by [`definitions`], defaults filled in).
    pub fn read(config: &impl ConfigExt) -> Result<Self, ConnectorError> {
        let base_url: Url =
            config.text("base_url").parse().map_err(|e| bad("base_url", format!("is not a URL ({e})")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(bad("base_url", "must be an http:// or https:// URL"));
        }
        let headers = json_object(config, "headers")?
            .into_iter()
            .map(|(k, v)| {
                let value = HeaderValue::from_str(&v)
                    .map_err(|_| bad("headers", format!("the value of {k} is not a header value")))?;
                Ok((header_name("headers", &k)?, value))
            })
            .collect::<Result<Vec<_>, ConnectorError>>()?;
        let secret = |key: &str, auth: &str| {
            config
                .get(key)
                .map(str::to_string)
                .ok_or_else(|| bad(key, format!("is required with auth = {auth}")))
        };
        let auth = match config.text("auth") {
            "none" => Auth::None,
            "basic" => {
                Auth::Basic { username: secret("username", "basic")?, password: secret("password", "basic")? }
            }
            "bearer" => Auth::Bearer(secret("token", "bearer")?),
            "header" => Auth::Header {
                name: header_name("auth_header", config.text("auth_header"))?,
                value: secret("token", "header")?,
            },
            "oauth2" => {
                let token_url = secret("token_url", "oauth2")?
                    .parse()
                    .map_err(|e| bad("token_url", format!("is not a URL ({e})")))?;
                let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
                if let Some(scope) = config.get("scope") {
                    form.push(("scope".into(), scope.into()));
                }
                form.extend(json_object(config, "token_params")?);
                let in_body = match config.text("client_auth") {
                    "basic" => false,
                    "body" => true,
                    other => return Err(bad("client_auth", format!("{other:?} is not basic or body"))),
                };
                Auth::OAuth2 {
                    token_url,
                    client_id: secret("client_id", "oauth2")?,
                    client_secret: secret("client_secret", "oauth2")?,
                    form,
                    in_body,
                }
            }
            other => {
                return Err(bad("auth", format!("{other:?} is not none, basic, bearer, header or oauth2")));
            }
        };
        let path = |key: &str| config.get(key).map(PathBuf::from);
        Ok(Self {
            base_url,
            headers,
            timeout: duration(config, "timeout")?,
            connect_timeout: duration(config, "connect_timeout")?,
            max_retries: number(config, "max_retries")? as u32,
            max_retry_after: duration(config, "max_retry_after")?,
            ca_file: path("ca_file"),
            client_cert_file: path("client_cert_file"),
            client_key_file: path("client_key_file"),
            auth,
            user_agent: concat!("ecma-connector/", env!("CARGO_PKG_VERSION")).into(),
        })
    }
}

/// The service's own message in a JSON error body: the first of `detail` (SCIM), `message`,
/// `error_description` (OAuth 2.0), `error.message`, `error`, `title`; else the start of the
/// body.
pub fn json_message(body: &str) -> String {
    if let Ok(Json::Object(o)) = serde_json::from_str::<Json>(body) {
        let text = |v: &Json| match v {
            Json::String(s) => Some(s.clone()),
            Json::Null | Json::Object(_) | Json::Array(_) => None,
            other => Some(other.to_string()),
        };
        for key in ["detail", "message", "error_description"] {
            if let Some(t) = o.get(key).and_then(text) {
                return t;
            }
        }
        if let Some(t) = o.get("error").and_then(|e| e.get("message")).and_then(text) {
            return t;
        }
        for key in ["error", "title"] {
            if let Some(t) = o.get(key).and_then(text) {
                return t;
            }
        }
    }
    let mut text: String = body.chars().take(300).collect();
    if body.chars().count() > 300 {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecma_proto::v1::ConfigParameters;

    fn config(pairs: &[(&str, &str)]) -> Option<ConfigParameters> {
        Some(ConfigParameters { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    #[test]
    fn a_connection_is_read_with_its_defaults_and_no_secret_in_debug() {
        let declared: Vec<_> = definitions().into_iter().map(Parameter::definition).collect();
        let given =
            config(&[("base_url", "https://svc.example/api"), ("auth", "bearer"), ("token", "t0ken-value")]);
        let s = HttpSettings::read(&ecma_connector_sdk::Settings::new(&declared, &given)).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.max_retries, 2);
        assert_eq!(format!("{:?}", s.auth), "bearer");
        assert!(!format!("{s:?}").contains("t0ken-value"));
        let given = config(&[("base_url", "ftp://x"), ("auth", "basic")]);
        let e = HttpSettings::read(&ecma_connector_sdk::Settings::new(&declared, &given)).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("base_url"));
        let given = config(&[("base_url", "http://x"), ("auth", "oauth2"), ("token_url", "http://t")]);
        let e = HttpSettings::read(&ecma_connector_sdk::Settings::new(&declared, &given)).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("client_id"));
    }

    #[test]
    fn service_messages_are_found_in_usual_places() {
        assert_eq!(json_message(r#"{"detail": "taken", "status": "409"}"#), "taken");
        assert_eq!(json_message(r#"{"error": {"message": "x"}}"#), "x");
        assert_eq!(
            json_message(r#"{"error": "invalid_client", "error_description": "bad secret"}"#),
            "bad secret"
        );
        assert_eq!(json_message("plain"), "plain");
    }
}
