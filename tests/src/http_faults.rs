//! A fault-injecting HTTP/1.1 reverse proxy for connector-rest's tests: in front of a web
//! service (json-server, the SOAP service, the token endpoint), it forwards every request
//! unchanged (the very bytes the client sent) and answers with the service's answer, unless
//! the test queued a fault for it: an error status without forwarding, a connection closed
//! before or after forwarding (the write happened, and the client never learns), an answer
//! held back, or a body replaced. It can also require a header (a bearer token, say) and refuse
//! expired JWTs, as a resource server would. It records every request it sees, so that tests
//! can assert on what the connector sent.
//!
//! Plain std threads and sockets (like [`crate::cut_proxy`]), a thread per client connection
//! and a fresh upstream connection per request: a client's keep-alive connection stays open
//! between requests, as its pool expects.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest request or response head the proxy reads (the rest is an error).
const MAX_HEAD: usize = 64 * 1024;
/// How long the proxy waits for the upstream service's answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What goes wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer `code` with `body` (and `Retry-After` when given) without forwarding. The
    /// `Content-Type` follows the body: JSON when it parses as JSON, XML when it starts with `<`,
    /// text otherwise.
    Status { code: u16, retry_after: Option<u32>, body: String },
    /// Close the client's connection without answering; nothing is forwarded.
    DropBeforeForward,
    /// Forward, wait for the service's answer, then close the client's connection without
    /// answering: the write happened, and the client never learns.
    DropAfterForward,
    /// Forward, then hold the answer this long before sending it.
    DelayAfterForward(Duration),
    /// Forward, then answer with this body instead of the service's (its headers kept but the
    /// length and encodings), and with `status` instead of its status when given: malformed
    /// JSON or XML, a 200 without an id.
    ReplaceBody { status: Option<u16>, body: String },
}

/// A fault queued for the next requests that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The method it applies to (any case), or any method.
    pub method: Option<String>,
    /// A prefix of the request target (path and query) it applies to; `""` for any.
    pub path_prefix: String,
    pub kind: FaultKind,
    /// How many matching requests it applies to (at least 1).
    pub times: usize,
}

impl Fault {
    /// `kind` for the next request, whatever it is.
    pub fn any(kind: FaultKind) -> Self {
        Self { method: None, path_prefix: String::new(), kind, times: 1 }
    }

    /// `kind` for the next `method` request whose target starts with `path_prefix`.
    pub fn on(method: &str, path_prefix: &str, kind: FaultKind) -> Self {
        Self { method: Some(method.to_string()), path_prefix: path_prefix.to_string(), kind, times: 1 }
    }

    /// The same fault for the next `times` matching requests.
    pub fn times(self, times: usize) -> Self {
        Self { times, ..self }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && target.starts_with(&self.path_prefix)
    }
}

/// A request as the proxy received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The request target: path and query, as sent.
    pub path_and_query: String,
    /// The headers in the order sent, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was sent in chunks.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body_text()))
    }
}

/// What the proxy's threads share with the test.
#[derive(Default)]
struct Shared {
    faults: Mutex<VecDeque<Fault>>,
    /// Headers every request must carry: a name, and the exact value or any.
    required: Mutex<Vec<(String, Option<String>)>>,
    reject_expired_jwt: AtomicBool,
    recorded: Mutex<Vec<Recorded>>,
    /// The client connections, to close on drop.
    clients: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
}

/// A running proxy on a free loopback port; it stops on drop, closing its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each request to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if let Ok(copy) = client.try_clone() {
                    s.clients.lock().unwrap().push(copy);
                }
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &s);
                });
            }
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `fault`: the next `fault.times` requests that match it get it, after the faults
    /// queued before it (a request gets the first fault that matches it, and one at most).
    pub fn push(&self, fault: Fault) {
        assert!(fault.times >= 1, "a fault applies to at least one request: {fault:?}");
        self.shared.faults.lock().unwrap().push_back(fault);
    }

    /// How many requests the queued faults are still waiting for.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().unwrap().iter().map(|f| f.times).sum()
    }

    /// From now on, a request without header `name` (any case), or, with `value`, whose value
    /// is not exactly that, is answered 401 without being forwarded; for `Authorization`, with
    /// `WWW-Authenticate: Bearer` (and `error="invalid_token"` when it had a value, as RFC 6750
    /// says). Replaces an earlier requirement of the same header.
    pub fn require_header(&self, name: &str, value: Option<&str>) {
        let mut required = self.shared.required.lock().unwrap();
        required.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        required.push((name.to_string(), value.map(str::to_string)));
    }

    /// Lifts every [`FaultProxy::require_header`].
    pub fn clear_required_headers(&self) {
        self.shared.required.lock().unwrap().clear();
    }

    /// Whether a request whose `Authorization: Bearer` token is a JWT with an `exp` in the past
    /// is answered 401 `invalid_token` without being forwarded (the signature is not checked).
    pub fn reject_expired_jwt(&self, on: bool) {
        self.shared.reject_expired_jwt.store(on, Ordering::SeqCst);
    }

    /// Every request received so far, in order (refused and dropped ones too).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.recorded.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop up, to see that it is stopped.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for client in self.shared.clients.lock().unwrap().drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}

/// An HTTP/1.1 message read off a connection: its bytes as they came, and its parts.
struct Message {
    raw: Vec<u8>,
    start_line: String,
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    body: Vec<u8>,
    /// Whether its body ended with the connection (a response without length or chunks).
    until_close: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Whether the connection closes after this message: `Connection: close`, or HTTP/1.0
    /// without `keep-alive`.
    fn closes(&self) -> bool {
        let version = if self.start_line.starts_with("HTTP/") {
            self.start_line.split(' ').next() // a status line
        } else {
            self.start_line.rsplit(' ').next() // a request line
        };
        self.has_token("connection", "close")
            || (version == Some("HTTP/1.0") && !self.has_token("connection", "keep-alive"))
    }
}

/// Serves one client connection until it closes, a fault closes it, or the proxy stops.
fn serve(client: TcpStream, upstream: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let Some(request) = read_request(&mut reader, &mut writer)? else { return Ok(()) };
        if shared.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut parts = request.start_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        shared.recorded.lock().unwrap().push(Recorded {
            method: method.clone(),
            path_and_query: target.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        });

        if let Some(refusal) = refusal(shared, &request) {
            writer.write_all(&refusal)?;
            if request.closes() {
                return close(&writer);
            }
            continue;
        }
        let fault = take_fault(shared, &method, &target);
        match &fault {
            Some(FaultKind::Status { code, retry_after, body }) => {
                let retry = retry_after.map(|s| ("Retry-After".to_string(), s.to_string()));
                let content_type = ("Content-Type".to_string(), content_type(body).to_string());
                writer.write_all(&response(
                    *code,
                    [content_type].into_iter().chain(retry).collect(),
                    body,
                ))?;
                if request.closes() {
                    return close(&writer);
                }
                continue;
            }
            Some(FaultKind::DropBeforeForward) => return close(&writer),
            _ => {}
        }

        let answer = match forward(upstream, &request, method == "HEAD") {
            Ok(answer) => answer,
            Err(e) => {
                let body = format!("the fault proxy could not reach {upstream}: {e}\n");
                let headers = vec![("Content-Type".to_string(), "text/plain".to_string())];
                writer.write_all(&response(502, headers, &body))?;
                return close(&writer);
            }
        };
        let raw = match fault {
            Some(FaultKind::DropAfterForward) => return close(&writer),
            Some(FaultKind::DelayAfterForward(delay)) => {
                std::thread::sleep(delay);
                answer.raw.clone()
            }
            Some(FaultKind::ReplaceBody { status, body }) => replace_body(&answer, status, &body),
            _ => answer.raw.clone(),
        };
        writer.write_all(&raw)?;
        if request.closes() || answer.closes() || answer.until_close {
            return close(&writer);
        }
    }
}

fn close(stream: &TcpStream) -> std::io::Result<()> {
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// The first queued fault that matches, taken (removed when it has no more uses).
fn take_fault(shared: &Shared, method: &str, target: &str) -> Option<FaultKind> {
    let mut faults = shared.faults.lock().unwrap();
    let at = faults.iter().position(|f| f.matches(method, target))?;
    let fault = &mut faults[at];
    fault.times -= 1;
    let kind = fault.kind.clone();
    if fault.times == 0 {
        faults.remove(at);
    }
    Some(kind)
}

/// The 401 for a request that lacks a required header or carries an expired JWT, if it does.
fn refusal(shared: &Shared, request: &Message) -> Option<Vec<u8>> {
    let unauthorized = |challenge: &str, error: &str| {
        let headers = vec![
            ("WWW-Authenticate".to_string(), challenge.to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        Some(response(401, headers, &serde_json::json!({ "error": error }).to_string()))
    };
    for (name, value) in shared.required.lock().unwrap().iter() {
        let sent = request.header(name);
        if sent.is_some() && value.as_deref().is_none_or(|v| Some(v) == sent) {
            continue;
        }
        return match (name.eq_ignore_ascii_case("authorization"), sent) {
            (true, None) => unauthorized("Bearer realm=\"fault-proxy\"", "missing_token"),
            (true, Some(_)) => {
                unauthorized("Bearer realm=\"fault-proxy\", error=\"invalid_token\"", "invalid_token")
            }
            (false, _) => unauthorized("Bearer realm=\"fault-proxy\"", &format!("missing or wrong {name}")),
        };
    }
    if shared.reject_expired_jwt.load(Ordering::SeqCst) {
        let token = request.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        if token.and_then(jwt_exp).is_some_and(|exp| exp <= now) {
            return unauthorized(
                "Bearer realm=\"fault-proxy\", error=\"invalid_token\", error_description=\"The access token expired\"",
                "invalid_token",
            );
        }
    }
    None
}

/// The `exp` claim of a JWT (`header.payload.signature`, base64url), if it is one and has it.
pub fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let claims: serde_json::Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    claims["exp"].as_u64()
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// Forwards the request's bytes to `upstream` on a new connection; returns the answer (an
/// interim 1xx answer skipped).
fn forward(upstream: SocketAddr, request: &Message, head_request: bool) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    stream.write_all(&request.raw)?;
    let mut reader = BufReader::new(stream);
    loop {
        let (raw, start_line, headers) = read_head(&mut reader)?
            .ok_or_else(|| std::io::Error::other("the service closed without answering"))?;
        let status: u16 = start_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut answer = Message { raw, start_line, headers, body: Vec::new(), until_close: false };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(answer);
        }
        if answer.has_token("transfer-encoding", "chunked") {
            read_chunked(&mut reader, &mut answer)?;
        } else if let Some(length) = content_length(&answer)? {
            read_exact(&mut reader, &mut answer, length)?;
        } else {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            answer.raw.extend_from_slice(&rest);
            answer.body = rest;
            answer.until_close = true;
        }
        return Ok(answer);
    }
}

/// Reads one request from the client; `None` when the connection closed before one began.
/// Answers `Expect: 100-continue` itself, so that the client sends its body.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> std::io::Result<Option<Message>> {
    let Some((raw, start_line, headers)) = read_head(reader)? else { return Ok(None) };
    let mut request = Message { raw, start_line, headers, body: Vec::new(), until_close: false };
    if request.has_token("expect", "100-continue") {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if request.has_token("transfer-encoding", "chunked") {
        read_chunked(reader, &mut request)?;
    } else if let Some(length) = content_length(&request)? {
        read_exact(reader, &mut request, length)?;
    }
    Ok(Some(request))
}

/// A message's head: its bytes as they came, its start line, and its headers.
type Head = (Vec<u8>, String, Vec<(String, String)>);

/// Reads a start line and headers, up to the empty line; `None` at once on a closed connection.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let start = raw.len();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other("the head was cut off"))
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(std::io::Error::other("the head is too large"));
        }
        let line = String::from_utf8_lossy(&raw[start..]).trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // a stray empty line before a request (RFC 9112 section 2.2)
            }
            break;
        }
        lines.push(line);
    }
    let start_line = lines.remove(0);
    let headers = lines
        .into_iter()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    Ok(Some((raw, start_line, headers)))
}

fn content_length(message: &Message) -> std::io::Result<Option<usize>> {
    message
        .header("content-length")
        .map(|v| v.parse().map_err(|_| std::io::Error::other(format!("bad Content-Length {v:?}"))))
        .transpose()
}

fn read_exact(reader: &mut impl Read, message: &mut Message, length: usize) -> std::io::Result<()> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    message.raw.extend_from_slice(&body);
    message.body = body;
    Ok(())
}

/// Reads a chunked body (and its trailers): the bytes as they came into `raw`, the data into
/// `body`.
fn read_chunked(reader: &mut impl BufRead, message: &mut Message) -> std::io::Result<()> {
    loop {
        let start = message.raw.len();
        reader.read_until(b'\n', &mut message.raw)?;
        let line = String::from_utf8_lossy(&message.raw[start..]).to_string();
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let start = message.raw.len();
                if reader.read_until(b'\n', &mut message.raw)? == 0
                    || message.raw[start..].trim_ascii().is_empty()
                {
                    return Ok(());
                }
            }
        }
        let mut chunk = vec![0; size + 2]; // the data and its CRLF
        reader.read_exact(&mut chunk)?;
        message.raw.extend_from_slice(&chunk);
        message.body.extend_from_slice(&chunk[..size]);
    }
}

/// The service's answer with another body (and status): its headers but the length and the
/// encodings, which no longer hold.
fn replace_body(answer: &Message, status: Option<u16>, body: &str) -> Vec<u8> {
    let status_line = match status {
        Some(code) => format!("HTTP/1.1 {code} {}", reason(code)),
        None => answer.start_line.clone(),
    };
    let headers: Vec<(String, String)> = answer
        .headers
        .iter()
        .filter(|(k, _)| {
            !["content-length", "transfer-encoding", "content-encoding"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
        })
        .cloned()
        .collect();
    head_and_body(&status_line, headers, body)
}

/// An answer of the proxy's own.
fn response(code: u16, headers: Vec<(String, String)>, body: &str) -> Vec<u8> {
    head_and_body(&format!("HTTP/1.1 {code} {}", reason(code)), headers, body)
}

fn head_and_body(status_line: &str, headers: Vec<(String, String)>, body: &str) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// The Content-Type of a body the test wrote.
fn content_type(body: &str) -> &'static str {
    if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else if body.trim_start().starts_with('<') {
        "text/xml; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::{Fault, FaultKind, FaultProxy, read_request};
    use crate::{Response, try_request_with};

    /// A tiny upstream: answers every request 200 (201 to a POST) with
    /// `{"n": <how many it has received>, "method", "target", "body"}`, keep-alive; counts them.
    fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while let Ok(Some(request)) = read_request(&mut reader, &mut writer) {
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut parts = request.start_line.split(' ');
                        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                        let body = serde_json::json!({
                            "n": n, "method": method, "target": target,
                            "body": String::from_utf8_lossy(&request.body),
                        })
                        .to_string();
                        let status = if method == "POST" { "201 Created" } else { "200 OK" };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if writer.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn get(proxy: &FaultProxy, path: &str) -> std::io::Result<Response> {
        try_request_with(proxy.addr(), "GET", path, &[], None)
    }

    fn post(proxy: &FaultProxy, path: &str, body: &str) -> std::io::Result<Response> {
        try_request_with(proxy.addr(), "POST", path, &[("Content-Type", "application/json")], Some(body))
    }

    #[test]
    fn forwards_requests_unchanged_and_records_them() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        let r = try_request_with(
            proxy.addr(),
            "POST",
            "/users?x=1",
            &[("Content-Type", "application/json"), ("X-Trace", "abc")],
            Some(r#"{"userName":"alice"}"#),
        )
        .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["target"], "/users?x=1");
        assert_eq!(r.json()["body"], r#"{"userName":"alice"}"#);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let seen = proxy.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].method.as_str(), seen[0].path_and_query.as_str()), ("POST", "/users?x=1"));
        assert_eq!(seen[0].header("x-trace"), Some("abc"));
        assert_eq!(seen[0].json()["userName"], "alice");
    }

    #[test]
    fn keeps_a_client_connection_alive_and_reads_chunked_bodies() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        for i in 1..=2 {
            write!(
                stream,
                "POST /users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
            )
            .unwrap();
            // The answer, read with the proxy's own head reader.
            let (_, status_line, headers) = super::read_head(&mut reader).unwrap().unwrap();
            assert!(status_line.contains("201"), "{status_line}");
            let length: usize =
                headers.iter().find(|(k, _)| k == "Content-Length").unwrap().1.parse().unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((body["n"].as_u64(), body["body"].as_str()), (Some(i), Some("abcde")));
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(proxy.requests()[1].body, b"abcde");
    }

    #[test]
    fn a_status_fault_answers_without_forwarding_for_matching_requests() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        let kind = FaultKind::Status { code: 503, retry_after: Some(7), body: r#"{"error":"busy"}"#.into() };
        proxy.push(Fault::on("post", "/users", kind).times(2));
        assert_eq!(proxy.pending_faults(), 2);

        // Another method or path passes.
        assert_eq!(get(&proxy, "/users").unwrap().status, 200);
        assert_eq!(post(&proxy, "/groups", "{}").unwrap().status, 201);
        for _ in 0..2 {
            let r = post(&proxy, "/users/1", "{}").unwrap();
            assert_eq!((r.status, r.header("retry-after")), (503, Some("7")));
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.json()["error"], "busy");
        }
        assert_eq!(post(&proxy, "/users", "{}").unwrap().status, 201);
        assert_eq!(count.load(Ordering::SeqCst), 3, "the faulted requests were not forwarded");
        assert_eq!(proxy.pending_faults(), 0);
        assert_eq!(proxy.requests().len(), 5);
    }

    #[test]
    fn drops_before_and_after_forwarding() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        proxy.push(Fault::any(FaultKind::DropBeforeForward));
        assert!(post(&proxy, "/users", "{}").is_err(), "no answer");
        assert_eq!(count.load(Ordering::SeqCst), 0, "nothing forwarded");

        proxy.push(Fault::any(FaultKind::DropAfterForward));
        assert!(post(&proxy, "/users", "{}").is_err(), "no answer");
        assert_eq!(count.load(Ordering::SeqCst), 1, "forwarded");

        let r = get(&proxy, "/users").unwrap();
        assert_eq!((r.status, r.json()["n"].as_u64()), (200, Some(2)));
    }

    #[test]
    fn delays_an_answer() {
        let (addr, _) = upstream();
        let proxy = FaultProxy::start(addr);
        proxy.push(Fault::any(FaultKind::DelayAfterForward(Duration::from_millis(300))));
        let started = Instant::now();
        assert_eq!(get(&proxy, "/users").unwrap().status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn replaces_a_body_and_status() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        proxy.push(Fault::any(FaultKind::ReplaceBody { status: None, body: "{not json".into() }));
        let r = post(&proxy, "/users", "{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{not json"));
        assert_eq!(r.header("content-type"), Some("application/json"), "the service's headers are kept");
        proxy.push(Fault::any(FaultKind::ReplaceBody { status: Some(200), body: "{}".into() }));
        let r = post(&proxy, "/users", "{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        assert_eq!(count.load(Ordering::SeqCst), 2, "both forwarded");
    }

    #[test]
    fn requires_headers_and_unexpired_tokens() {
        let (addr, count) = upstream();
        let proxy = FaultProxy::start(addr);
        proxy.require_header("Authorization", Some("Bearer good"));
        let r = get(&proxy, "/users").unwrap();
        assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer realm=\"fault-proxy\"")));
        let r = try_request_with(proxy.addr(), "GET", "/users", &[("Authorization", "Bearer bad")], None)
            .unwrap();
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));
        let r = try_request_with(proxy.addr(), "GET", "/users", &[("authorization", "Bearer good")], None)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(count.load(Ordering::SeqCst), 1);

        proxy.clear_required_headers();
        proxy.reject_expired_jwt(true);
        // {"alg":"none"}.{"exp":1}. and {"exp":<far future>}.
        let expired = "eyJhbGciOiJub25lIn0.eyJleHAiOjF9.";
        let valid = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.";
        let auth = |t: &str| format!("Bearer {t}");
        let r =
            try_request_with(proxy.addr(), "GET", "/", &[("Authorization", &auth(expired))], None).unwrap();
        assert_eq!(r.status, 401);
        let r = try_request_with(proxy.addr(), "GET", "/", &[("Authorization", &auth(valid))], None).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(get(&proxy, "/").unwrap().status, 200, "no token is not an expired one");
    }

    #[test]
    fn answers_502_when_the_service_is_away() {
        let gone = crate::free_addr();
        let proxy = FaultProxy::start(gone);
        assert_eq!(get(&proxy, "/users").unwrap().status, 502);
    }
}
