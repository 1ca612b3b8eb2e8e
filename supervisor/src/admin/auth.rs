//! Who may use the admin listener: a bearer admin token for the API, a session cookie (got by
//! logging in with the token) for the console, and, when no admin token is configured, clients on
//! loopback only. State-changing requests made with a cookie carry a CSRF token; any request
//! whose `Origin` is another site is refused whatever it carries. Failed logins and bad tokens
//! are rate-limited per client address and logged without the token.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use crate::scim::Tokens;

/// The session cookie's name.
pub const COOKIE: &str = "ecma_console";
/// The CSRF form field and header.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions kept at most.
const MAX_SESSIONS: usize = 10_000;

/// A console login.
#[derive(Debug, Clone)]
struct Session {
    expires: Instant,
    csrf: String,
}

/// Who the request comes from, as the handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The session's CSRF token, for the forms a page renders (none for bearer callers).
    pub csrf: Option<String>,
    /// Logged in with a cookie (the console shows "log out").
    pub session: bool,
}

/// The admin listener's gate.
pub struct Auth {
    tokens: Option<Tokens>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    ttl: Duration,
    secure: bool,
    open: Vec<String>,
    max_failures: u32,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("tokens", &self.tokens).field("secure", &self.secure).finish()
    }
}

/// A random token of 32 bytes, URL-safe base64.
fn random_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The key a session is kept under: a digest of its cookie value (a heap dump holds no cookie).
fn session_key(cookie: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two short secrets.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Auth {
    /// `tokens`: the admin tokens (`None`: loopback only); `secure`: the listener has TLS.
    pub fn new(tokens: Option<Tokens>, config: &crate::config::AdminConfig, secure: bool) -> Self {
        Self {
            tokens,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            ttl: config.session_ttl,
            secure,
            open: config.open_endpoints.clone(),
            max_failures: config.failed_logins_per_minute.max(1),
        }
    }

    /// How long a console login lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether an admin token is configured.
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether `path` answers without a token.
    fn is_open(&self, path: &str) -> bool {
        let name = path.trim_start_matches('/');
        self.open.iter().any(|o| o == name)
    }

    /// The seconds a client must wait before trying again, when it failed too often.
    pub fn locked_out(&self, ip: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = failures.get(&ip)?;
        let left = Duration::from_secs(60).checked_sub(since.elapsed())?;
        (*count >= self.max_failures).then(|| left.as_secs().max(1))
    }

    /// Counts a failed login or bad token from `ip`.
    pub fn failed(&self, ip: IpAddr, what: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        entry.1 += 1;
        metrics::counter!("admin_auth_failures_total").increment(1);
        // The token tried is never logged, not even in part.
        tracing::warn!(client = %ip, attempts = entry.1, "{what} refused: the admin token does not match");
    }

    /// Whether `token` is an admin token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.matches(token))
    }

    /// Opens a session; returns its cookie value and the `Set-Cookie` header.
    pub fn open_session(&self) -> (String, HeaderValue) {
        let value = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > Instant::now());
        // Clients that never send their cookie back (scripts on loopback) must not fill memory.
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            session_key(&value),
            Session { expires: Instant::now() + self.ttl, csrf: random_token() },
        );
        let cookie = format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.ttl.as_secs(),
            if self.secure { "; Secure" } else { "" }
        );
        (value, HeaderValue::from_str(&cookie).expect("a cookie of URL-safe characters"))
    }

    /// Ends the session of `headers`' cookie; the header that clears the cookie.
    pub fn close_session(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(value) = cookie(headers) {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&session_key(&value));
        }
        let cookie = format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).expect("a constant cookie")
    }

    /// The live session of a cookie value.
    fn session(&self, value: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = session_key(value);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }
}

/// The session cookie's value in a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Whether a request comes from another site: an `Origin` that is not this listener's own, or
/// `Sec-Fetch-Site: cross-site`.
fn cross_site(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let own = origin.split_once("://").map(|(_, authority)| authority);
    own != Some(host)
}

fn denied(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The largest form body read to find its CSRF field.
const MAX_FORM: usize = 1 << 20;

/// The middleware in front of every admin route.
pub async fn guard(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if auth.is_open(&path) {
        return next.run(request).await;
    }
    // A form posted from another site is refused whatever credentials the browser attached.
    if changes && cross_site(request.headers()) {
        tracing::warn!(client = %peer.ip(), path, "cross-site request to the admin listener refused");
        return denied(StatusCode::FORBIDDEN, "cross-site requests are refused");
    }
    // The login page and its form are the way in.
    if path == "/console/login" || path.starts_with("/console/static/") {
        return next.run(request).await;
    }
    let ip = peer.ip();
    // No admin token configured: loopback clients only, whatever they carry (a cookie made on
    // loopback opens nothing from elsewhere).
    if !auth.has_tokens() && !ip.is_loopback() {
        return denied(
            StatusCode::FORBIDDEN,
            "no admin token is configured, so the admin listener answers loopback clients only; set ADMIN_TOKEN",
        );
    }
    let headers = request.headers();
    // 1. A bearer admin token (scripts, the CLI): no cookie, so no CSRF to check.
    if let Some(token) = bearer(headers) {
        if let Some(wait) = auth.locked_out(ip) {
            return too_many(wait);
        }
        if auth.token_matches(token) {
            request.extensions_mut().insert(Caller { csrf: None, session: false });
            return next.run(request).await;
        }
        if auth.has_tokens() {
            auth.failed(ip, "admin API request");
            return denied(StatusCode::UNAUTHORIZED, "the admin token does not match");
        }
    }
    // 2. A console session.
    let session = cookie(headers).and_then(|v| auth.session(&v));
    if let Some(session) = &session {
        if changes && !csrf_holds(&mut request, &session.csrf).await {
            tracing::warn!(client = %ip, path, "admin request without a valid CSRF token refused");
            return denied(StatusCode::FORBIDDEN, "the CSRF token is missing or wrong; reload the page");
        }
        request.extensions_mut().insert(Caller { csrf: Some(session.csrf.clone()), session: true });
        return next.run(request).await;
    }
    // 3. No admin token configured (the client is on loopback, checked above).
    if !auth.has_tokens() {
        if is_console(&path) {
            // The console still works with a session: its forms need a CSRF token.
            let (value, set_cookie) = auth.open_session();
            let csrf = auth.session(&value).map(|s| s.csrf);
            if changes {
                return denied(StatusCode::FORBIDDEN, "the CSRF token is missing or wrong; reload the page");
            }
            request.extensions_mut().insert(Caller { csrf, session: false });
            let mut response = next.run(request).await;
            response.headers_mut().append(header::SET_COOKIE, set_cookie);
            return response;
        }
        request.extensions_mut().insert(Caller { csrf: None, session: false });
        return next.run(request).await;
    }
    if is_console(&path) && !changes {
        let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/console/");
        let next = url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>();
        return Redirect::to(&format!("/console/login?next={next}")).into_response();
    }
    denied(
        StatusCode::UNAUTHORIZED,
        "an admin token is required (Authorization: Bearer ...), or log in to the console",
    )
}

fn too_many(wait: u64) -> Response {
    let mut response = denied(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; try again later");
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Whether a cookie-authenticated request carries the session's CSRF token, in the
/// `X-CSRF-Token` header or in a form's `csrf` field (the body is read and put back).
async fn csrf_holds(request: &mut Request, expected: &str) -> bool {
    if let Some(given) = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return same(given, expected);
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return false;
    }
    let body = std::mem::replace(request.body_mut(), Body::empty());
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else { return false };
    let given =
        url::form_urlencoded::parse(&bytes).find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.into_owned());
    *request.body_mut() = Body::from(bytes);
    given.is_some_and(|g| same(&g, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn another_sites_origin_is_cross_site_and_our_own_is_not() {
        assert!(cross_site(&headers(&[("host", "127.0.0.1:9090"), ("origin", "https://evil.example")])));
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")])));
        assert!(cross_site(&headers(&[("host", "a:1"), ("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&headers(&[("host", "a:1")])));
    }

    #[test]
    fn sessions_expire_and_close() {
        let config =
            crate::config::AdminConfig { session_ttl: Duration::from_millis(30), ..Default::default() };
        let auth =
            Auth::new(Some(Tokens::new(vec!["0123456789abcdef-admin".into()]).unwrap()), &config, true);
        let (value, set_cookie) = auth.open_session();
        let set_cookie = set_cookie.to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        assert!(auth.session(&value).is_some());
        assert!(auth.session("forged").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(auth.session(&value).is_none(), "an expired session must not be accepted");
        let (value, _) = auth.open_session();
        let cleared = auth.close_session(&headers(&[("cookie", &format!("other=1; {COOKIE}={value}"))]));
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert!(auth.session(&value).is_none());
    }

    #[test]
    fn failures_lock_a_client_out_for_the_rest_of_the_minute() {
        let config = crate::config::AdminConfig { failed_logins_per_minute: 2, ..Default::default() };
        let auth = Auth::new(None, &config, false);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        auth.failed(ip, "test");
        assert!(auth.locked_out(ip).is_none());
        auth.failed(ip, "test");
        assert!(auth.locked_out(ip).is_some_and(|s| (1..=60).contains(&s)));
        assert!(auth.locked_out("192.0.2.8".parse().unwrap()).is_none());
    }
}
