//! Talking to a web service: one HTTP client (rustls, the configured CA bundle and client
//! certificate), authentication (OAuth 2.0 tokens fetched, cached until shortly before they
//! expire, fetched again after a 401), retries of what the service did not process (429 and
//! 503, after their Retry-After), and the meaning of every failure: not done (with its error
//! kind) or not known (a write that was sent and got no answer).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ecma_connector_sdk::{ConnectorError, Outcome};
use ecma_proto::v1::ErrorKind;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::{Auth, HttpSettings, json_message};

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation, for messages.
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Content type and body.
    pub body: Option<(String, String)>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Why a request has no answer to use.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Not done: nothing was written (the connection could not be made, or the service refused
    /// with this error).
    NotDone(ConnectorError),
    /// A write was sent and no answer came (a timeout, a connection broken): it may have been
    /// applied.
    Unknown(String),
}

impl Failure {
    /// What became of an exported entry, from its write's result: an unknown outcome is
    /// logged, and gets no result (the supervisor looks the object up).
    pub fn outcome(result: Result<Outcome, Failure>, entry: &str) -> Outcome {
        match result {
            Ok(outcome) => outcome,
            Err(Failure::NotDone(e)) => Outcome::Failed(e),
            Err(Failure::Unknown(detail)) => {
                tracing::warn!(entry, "outcome unknown: {detail}");
                Outcome::Unknown
            }
        }
    }

    /// A password operation's result: a refusal names the password attribute and never
    /// shows `password`; an unknown outcome stays one.
    pub fn password<T>(result: Result<T, Failure>, password: &str) -> Result<(), ConnectorError> {
        match result {
            Ok(_) => Ok(()),
            Err(Failure::NotDone(e)) => {
                Err(ConnectorError { detail: e.detail.replace(password, "[redacted]"), ..e }.on("password"))
            }
            Err(Failure::Unknown(detail)) => {
                Err(ConnectorError::outcome_unknown(detail.replace(password, "[redacted]")))
            }
        }
    }

    /// As an error of a call that has no per-entry outcome (a read, an import page).
    pub fn into_error(self) -> ConnectorError {
        match self {
            Failure::NotDone(e) => e,
            Failure::Unknown(detail) => ConnectorError::new(ErrorKind::ConnectionFailed, detail),
        }
    }
}

struct Token {
    value: String,
    /// When to fetch another (shortly before it expires).
    renew_at: Instant,
}

/// The connection to the service.
pub struct Http {
    client: reqwest::Client,
    settings: Arc<HttpSettings>,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Tokens handed out, to keep out of messages (the last few).
    issued: std::sync::Mutex<Vec<String>>,
}

/// A value shown in messages instead of a secret.
const REDACTED: &str = "[redacted]";

impl Http {
    pub fn new(settings: HttpSettings) -> Result<Self, ConnectorError> {
        let settings = Arc::new(settings);
        let tls = ecma_connector_sdk::tls::client_config(&ecma_connector_sdk::tls::TlsFiles {
            ca_file: settings.ca_file.as_deref(),
            client_cert_file: settings.client_cert_file.as_deref(),
            client_key_file: settings.client_key_file.as_deref(),
        })?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            // Under the 5 s keep-alive of Node.js servers: an idle connection is not reused as the
            // service closes it.
            .pool_idle_timeout(Duration::from_secs(4))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(settings.user_agent.clone())
            .build()
            .map_err(|e| ConnectorError::config("base_url", format!("cannot make an HTTP client: {e}")))?;
        Ok(Self { client, settings, token: tokio::sync::Mutex::new(None), issued: Default::default() })
    }

    /// The service's base URL with `path` appended to its own path.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.settings.base_url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// `text` with every secret and token replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for secret in self.settings.auth.secrets().into_iter().chain(issued) {
            if secret.len() >= 4 {
                out = out.replace(&secret, REDACTED);
            }
        }
        out
    }

    /// The OAuth 2.0 access token: the cached one, or a new one from the token endpoint.
    async fn access_token(&self, renew: bool) -> Result<String, ConnectorError> {
        let Auth::OAuth2 { token_url, client_id, client_secret, form, in_body } = &self.settings.auth else {
            return Err(ConnectorError::new(ErrorKind::Internal, "no OAuth 2.0 settings"));
        };
        let mut cached = self.token.lock().await;
        if !renew
            && let Some(t) = cached.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        let body = {
            let mut body = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                body.append_pair(k, v);
            }
            if *in_body {
                body.append_pair("client_id", client_id).append_pair("client_secret", client_secret);
            }
            body.finish()
        };
        let mut request = self.client.post(token_url.clone()).header(header::ACCEPT, "application/json");
        if !*in_body {
            // RFC 6749 2.3.1: each part form-encoded, then Basic.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(client_id),
                enc(client_secret)
            ));
            request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let failed = |detail: String| {
            ConnectorError::new(ErrorKind::ConnectionFailed, format!("token endpoint {token_url}: {detail}"))
        };
        let answer = request
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| failed(self.redact(&e.without_url().to_string())))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let kind = if matches!(status.as_u16(), 400 | 401 | 403) {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::ConnectionFailed
            };
            let message = self.redact(&json_message(&text));
            return Err(ConnectorError::new(
                kind,
                format!(
                    "token endpoint {token_url} answered {status}: {message} (check client_id and client_secret)"
                ),
            ));
        }
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| failed("the answer is not JSON".into()))?;
        let value = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("the answer has no access_token".into()))?
            .to_string();
        let lifetime = Duration::from_secs(json["expires_in"].as_u64().unwrap_or(3600));
        // Renewed a little before it expires: a tenth of its life, at most 30 s early.
        let renew_at = Instant::now() + lifetime - (lifetime / 10).min(Duration::from_secs(30));
        {
            let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
            issued.push(value.clone());
            let excess = issued.len().saturating_sub(8);
            issued.drain(..excess);
        }
        *cached = Some(Token { value: value.clone(), renew_at });
        tracing::debug!(lifetime_s = lifetime.as_secs(), "fetched an OAuth 2.0 access token");
        Ok(value)
    }

    /// The Authorization (or token) header of a request.
    async fn auth_header(&self, renew: bool) -> Result<Option<(HeaderName, HeaderValue)>, ConnectorError> {
        let sensitive = |value: String| {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| ConnectorError::config("token", "the credential is not a valid header value"))?;
            v.set_sensitive(true);
            Ok::<_, ConnectorError>(v)
        };
        Ok(match &self.settings.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                Some((header::AUTHORIZATION, sensitive(format!("Basic {basic}"))?))
            }
            Auth::Bearer(token) => Some((header::AUTHORIZATION, sensitive(format!("Bearer {token}"))?)),
            Auth::Header { name, value } => Some((name.clone(), sensitive(value.clone())?)),
            Auth::OAuth2 { .. } => Some((
                header::AUTHORIZATION,
                sensitive(format!("Bearer {}", self.access_token(renew).await?))?,
            )),
        })
    }

    /// Sends `request`: 429 and 503 are retried after their Retry-After (up to max_retries,
    /// when it is not longer than max_retry_after), a 401 with OAuth 2.0 once with a new token.
    /// Any other status is the caller's to judge.
    pub async fn send(&self, request: &Request) -> Result<Answer, Failure> {
        let write = !matches!(request.method, Method::GET | Method::HEAD);
        let mut retries = 0;
        let mut renewed = false;
        loop {
            let mut builder = self.client.request(request.method.clone(), request.url.clone());
            for (name, value) in &self.settings.headers {
                builder = builder.header(name, value);
            }
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some((name, value)) = self.auth_header(renewed).await.map_err(Failure::NotDone)? {
                builder = builder.header(name, value);
            }
            if let Some((content_type, body)) = &request.body {
                builder = builder.header(header::CONTENT_TYPE, content_type).body(body.clone());
            }
            let where_ = format!("{} {}", request.method, request.url.path());
            let answer = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.text().await {
                        Ok(body) => Answer { status, headers, body },
                        Err(e) => return Err(self.no_answer(write, &where_, &e)),
                    }
                }
                Err(e) => return Err(self.no_answer(write, &where_, &e)),
            };
            let status = answer.status.as_u16();
            if status == 401 && matches!(self.settings.auth, Auth::OAuth2 { .. }) && !renewed {
                renewed = true;
                tracing::debug!("{where_}: 401, fetching a new access token");
                continue;
            }
            if matches!(status, 429 | 503) && retries < self.settings.max_retries {
                let wait = retry_after(&answer.headers).unwrap_or(Duration::from_secs(1));
                if wait <= self.settings.max_retry_after {
                    retries += 1;
                    tracing::info!(
                        "{where_}: {status}, retrying in {wait:?} ({retries} of {})",
                        self.settings.max_retries
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Ok(answer);
        }
    }

    /// A request that got no answer: for a write, an unknown outcome unless the connection was
    /// never made.
    fn no_answer(&self, write: bool, where_: &str, e: &reqwest::Error) -> Failure {
        let cause = self.redact(&error_chain(e));
        if e.is_connect() {
            return Failure::NotDone(ConnectorError::new(
                ErrorKind::ConnectionFailed,
                format!("{where_}: cannot connect to {}: {cause}", self.settings.base_url),
            ));
        }
        let what = if e.is_timeout() {
            format!("{where_}: no answer within {:?} ({cause})", self.settings.timeout)
        } else {
            format!("{where_}: the connection broke before the answer ({cause})")
        };
        if write {
            Failure::Unknown(what)
        } else {
            let kind = if e.is_timeout() { ErrorKind::Timeout } else { ErrorKind::ConnectionFailed };
            Failure::NotDone(ConnectorError::new(kind, what))
        }
    }

    /// Sends `request` and checks its status against `expected` (any 2xx when empty); another
    /// status is the error `refuse` makes of the answer. A 502 or 504 to a write is an unknown
    /// outcome (a gateway lost the service's answer).
    pub async fn call(
        &self,
        request: &Request,
        expected: &[u16],
        refuse: impl FnOnce(&Answer) -> ConnectorError,
    ) -> Result<Answer, Failure> {
        let answer = self.send(request).await?;
        let status = answer.status.as_u16();
        let ok = if expected.is_empty() { answer.status.is_success() } else { expected.contains(&status) };
        if ok {
            return Ok(answer);
        }
        let write = !matches!(request.method, Method::GET | Method::HEAD);
        if write && matches!(status, 502 | 504) {
            return Err(Failure::Unknown(format!(
                "{} {}: a gateway answered {status}: the service may have applied it",
                request.method,
                request.url.path()
            )));
        }
        Err(Failure::NotDone(refuse(&answer)))
    }
}

/// A Retry-After header: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_parse(text)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 says to send.
fn httpdate_parse(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// An error with its causes (reqwest's own message is short: "error sending request").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past: at once");
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
