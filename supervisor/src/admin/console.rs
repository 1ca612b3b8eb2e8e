//! The operator's console at `/console/`: server-rendered HTML (maud escapes every value), one
//! stylesheet and one small script shipped in the binary, no build step and no CDN. Live parts
//! (the connectors, the chart, import progress) are fragments the script fetches again. Every
//! form that changes something carries the session's CSRF token ([`super::auth`] checks it).
//! No secret is ever rendered: passwords are never stored, the log names attributes only, and
//! the configuration is shown with secret values redacted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::AdminState;
use super::auth::{CSRF_FIELD, Caller};
use crate::scim::resource::{GroupKind, UserKind, to_response};
use crate::store::log::{LogEntry, LogFilter};
use crate::store::{Record, RecordState};
use crate::supervision::Phase;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

pub fn router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(overview))
        .route("/console/static/console.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route("/console/static/console.js", get(|| async { asset(JS, "text/javascript; charset=utf-8") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/fragments/connectors", get(connectors_fragment))
        .route("/console/fragments/chart", get(chart_fragment))
        .route("/console/fragments/imports", get(imports_fragment))
        .route("/console/imports", get(imports_page))
        .route("/console/imports/{name}", post(start_import))
        .route("/console/space", get(space_page))
        .route("/console/space/{app}/{kind}/{id}", get(record_page))
        .route("/console/connectors/{name}/{action}", post(connector_action))
        .route("/console/log", get(log_page))
        .route("/console/preview", get(preview_page).post(preview_run))
        .route("/console/config", get(config_page))
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        text,
    )
        .into_response()
}

/// The pages of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Imports,
    Space,
    Log,
    Preview,
    Config,
    None,
}

/// Security headers of every console page: nothing from elsewhere, no framing. (The referrer
/// policy is `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null`
/// with the console's own forms, which the cross-site check must refuse.)
fn secured(markup: Markup, status: StatusCode) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(title: &str, nav: Nav, caller: Option<&Caller>, body: Markup) -> Response {
    page_with_status(title, nav, caller, body, StatusCode::OK)
}

fn page_with_status(
    title: &str,
    nav: Nav,
    caller: Option<&Caller>,
    body: Markup,
    status: StatusCode,
) -> Response {
    let link = |href: &str, label: &str, this: Nav| {
        html! { a href=(href) aria-current=[(nav == this).then_some("page")] { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ECMA supervisor" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "ECMA supervisor" }
                    @if nav != Nav::None {
                        nav aria-label="Console" {
                            (link("/console/", "Overview", Nav::Overview))
                            (link("/console/imports", "Imports", Nav::Imports))
                            (link("/console/space", "Connector space", Nav::Space))
                            (link("/console/log", "Provisioning log", Nav::Log))
                            (link("/console/preview", "Dry run", Nav::Preview))
                            (link("/console/config", "Configuration", Nav::Config))
                        }
                    }
                    @if let Some(caller) = caller.filter(|c| c.session) {
                        form.inline method="post" action="/console/logout" {
                            (csrf(caller))
                            button.secondary type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    };
    secured(markup, status)
}

fn csrf(caller: &Caller) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(caller.csrf.as_deref().unwrap_or("")); }
}

fn badge(text: &str) -> Markup {
    html! { span class=(format!("badge {text}")) { (text) } }
}

fn message(text: &str, bad: bool) -> Markup {
    html! { div class=(if bad { "message bad" } else { "message" }) role="status" { (text) } }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn time_of_ms(ms: i64) -> String {
    crate::journal::time_of_ms(ms).replace('T', " ")
}

/// "3 h 12 min", "45 s".
fn human(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn uptime(started_at: &Value) -> String {
    let Some(started) = started_at
        .as_str()
        .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
    else {
        return "-".into();
    };
    human((time::OffsetDateTime::now_utc() - started).whole_seconds().max(0))
}

// ---------------------------------------------------------------------------------------------
// Log in and out.

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where a login may send the browser: a console page of this listener, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains("\\") => n.to_string(),
        _ => "/console/".into(),
    }
}

async fn login_page(State(state): State<Arc<AdminState>>, Query(query): Query<NextQuery>) -> Response {
    login_form(&state, query.next.as_deref(), None, StatusCode::OK)
}

fn login_form(state: &AdminState, next: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        div.login.panel {
            @if !state.auth.has_tokens() {
                (message("No admin token is configured: the console is open to clients on this machine's loopback only. Set ADMIN_TOKEN to require a login.", false))
                p { a href="/console/" { "Open the console" } }
            } @else {
                @if let Some(error) = error { (message(error, true)) }
                form method="post" action="/console/login" {
                    input type="hidden" name="next" value=(safe_next(next));
                    div.field {
                        label for="token" { "Admin token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required autofocus size="40";
                    }
                    button type="submit" { "Log in" }
                }
                p.muted { "The token is the one set in ADMIN_TOKEN (or [admin] token_file). The session lasts " (human(state.auth_ttl_seconds())) "." }
            }
        }
    };
    page_with_status("Log in", Nav::None, None, body, status)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let auth = &state.auth;
    if let Some(wait) = auth.locked_out(peer.ip()) {
        let mut response = login_form(
            &state,
            form.next.as_deref(),
            Some(&format!("Too many failed attempts from your address; try again in {wait} s.")),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !auth.has_tokens() || !auth.token_matches(form.token.trim()) {
        if auth.has_tokens() {
            auth.failed(peer.ip(), "console login");
        }
        return login_form(
            &state,
            form.next.as_deref(),
            Some("That is not the admin token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    tracing::info!(client = %peer.ip(), "console login");
    let (_, cookie) = auth.open_session();
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

async fn logout(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let cleared = state.auth.close_session(&headers);
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, cleared);
    response
}

impl AdminState {
    fn auth_ttl_seconds(&self) -> i64 {
        self.auth.ttl().as_secs() as i64
    }
}

// ---------------------------------------------------------------------------------------------
// Overview.

async fn overview(State(state): State<Arc<AdminState>>, Extension(caller): Extension<Caller>) -> Response {
    let store = super::store_status(&state.store);
    let body = html! {
        section.panel aria-labelledby="apps-heading" {
            h2 id="apps-heading" { "Apps" }
            div.scroll { table {
                thead { tr { th { "App" } th { "SCIM path" } th { "Users" } th { "Groups" } } }
                tbody { @for (name, app) in sorted(&state.scim.apps) {
                    tr {
                        td { (name) }
                        td.mono { "/scim/" (name) }
                        td { (app.users) }
                        td { (app.groups.as_deref().unwrap_or("-")) }
                    }
                } }
            } }
            p.muted { "Connector space: " (store["engine"].as_str().unwrap_or("")) " · " (badge(store["state"].as_str().unwrap_or("")))
                @if let Some(reason) = store["reason"].as_str() { " " (reason) }
                " · this supervisor up " (human(state.started.elapsed().as_secs() as i64)) }
        }
        section.panel aria-labelledby="connectors-heading" {
            h2 id="connectors-heading" { "Connectors" }
            div id="connectors" data-refresh="/console/fragments/connectors" data-every="2000" aria-live="polite" {
                (connectors_table(&state).await)
            }
        }
        section.panel aria-labelledby="activity-heading" {
            h2 id="activity-heading" { "SCIM requests, errors and connector restarts per minute" }
            div.chart id="chart" data-refresh="/console/fragments/chart" data-every="5000" {
                (chart(&state, 180))
            }
        }
    };
    page("Overview", Nav::Overview, Some(&caller), body)
}

fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

async fn connectors_table(state: &AdminState) -> Markup {
    let mut rows = Vec::new();
    for handle in &state.connectors {
        let pending = state.store.count_pending(&handle.name).await.ok();
        rows.push(super::describe(
            handle,
            pending,
            state.imports.last(&handle.name),
            state.imports.running(&handle.name),
        ));
    }
    html! {
        div.scroll { table {
            thead { tr {
                th { "Connector" } th { "State" } th.num { "PID" } th.num { "Incarnation" } th.num { "Restarts" }
                th.num { "Pending" } th { "Uptime" } th { "Object type" } th { "Last error" }
            } }
            tbody { @for c in &rows {
                tr data-connector=(c["name"].as_str().unwrap_or("")) {
                    td { (c["name"].as_str().unwrap_or("")) }
                    td.state { (badge(c["state"].as_str().unwrap_or(""))) }
                    td.num.pid { (c["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into())) }
                    td.num.incarnation { (c["incarnation"]) }
                    td.num.restarts { (c["restarts"]) }
                    td.num { (c["pending_writes"].as_i64().unwrap_or(0)) }
                    td { (uptime(&c["started_at"])) }
                    td { (c["object_type"].as_str().unwrap_or("")) @if let Some(p) = c["partition"].as_str().filter(|p| !p.is_empty()) { " / " (p) } }
                    td.error {
                        @if let Some(reason) = c["reason"].as_str() { (reason) br; }
                        @if let Some(error) = c["last_error"].as_str() { (error) }
                        @else if let Some(exit) = c["last_exit"].as_str() { span.muted { "last exit: " (exit) } }
                    }
                }
            } }
        } }
    }
}

async fn connectors_fragment(State(state): State<Arc<AdminState>>) -> Response {
    secured(connectors_table(&state).await, StatusCode::OK)
}

#[derive(Deserialize)]
struct ChartQuery {
    minutes: Option<usize>,
}

async fn chart_fragment(State(state): State<Arc<AdminState>>, Query(q): Query<ChartQuery>) -> Response {
    secured(chart(&state, q.minutes.unwrap_or(180)), StatusCode::OK)
}

/// Requests (blue), errors (red) and restarts (amber, along the top) per minute, as SVG.
fn chart(state: &AdminState, minutes: usize) -> Markup {
    let minutes_data = state.activity.last(minutes.clamp(10, crate::activity::MINUTES));
    let n = minutes_data.len().max(1);
    let (width, height, top) = (720.0_f64, 160.0_f64, 14.0_f64);
    let bar = width / n as f64;
    let max = minutes_data.iter().map(|m| m.requests).max().unwrap_or(0).max(1) as f64;
    let scale = |v: u64| (v as f64 / max) * (height - top);
    let (requests, errors, restarts): (u64, u64, u64) =
        minutes_data.iter().fold((0, 0, 0), |(r, e, s), m| (r + m.requests, e + m.errors, s + m.restarts));
    let hours = n as f64 / 60.0;
    let summary = format!(
        "In the last {} minutes: {requests} SCIM requests, {errors} errors, {restarts} connector restarts; busiest minute {} requests.",
        n, max as u64
    );
    html! {
        svg viewBox=(format!("0 0 {width} {}", height + 18.0)) role="img" aria-label=(summary) {
            title { (summary) }
            line x1="0" y1=(height) x2=(width) y2=(height) stroke="#aab4c0" {}
            @for (i, m) in minutes_data.iter().enumerate() {
                @let x = i as f64 * bar;
                @if m.requests > 0 {
                    rect.requests x=(format!("{x:.1}")) y=(format!("{:.1}", height - scale(m.requests))) width=(format!("{:.2}", (bar - 0.5).max(0.5))) height=(format!("{:.1}", scale(m.requests))) {}
                }
                @if m.errors > 0 {
                    rect.errors x=(format!("{x:.1}")) y=(format!("{:.1}", height - scale(m.errors))) width=(format!("{:.2}", (bar - 0.5).max(0.5))) height=(format!("{:.1}", scale(m.errors))) {}
                }
                @if m.restarts > 0 {
                    rect.restarts x=(format!("{x:.1}")) y="0" width=(format!("{:.2}", bar.max(2.0))) height=(top - 4.0) {}
                }
            }
            text x="0" y=(height + 14.0) font-size="11" fill="#5b6470" { (format!("-{hours:.0} h")) }
            text x=(width) y=(height + 14.0) font-size="11" fill="#5b6470" text-anchor="end" { "now" }
            text x=(width) y="11" font-size="11" fill="#5b6470" text-anchor="end" { (max as u64) "/min" }
        }
        p.legend {
            span { i.requests style="background:#6ea8fe" {} "requests: " strong.total-requests { (requests) } }
            span { i style="background:#b3261e" {} "errors: " strong.total-errors { (errors) } }
            span { i style="background:#8a5a00" {} "restarts: " strong.total-restarts { (restarts) } }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Imports.

fn processed(report: &Value) -> u64 {
    ["added", "updated", "unchanged", "skipped", "rejected", "errors"]
        .iter()
        .map(|k| report[*k].as_u64().unwrap_or(0))
        .sum()
}

async fn imports_table(state: &AdminState) -> Markup {
    let mut blocks = Vec::new();
    for handle in &state.connectors {
        let running = state.imports.running(&handle.name).map(|r| serde_json::json!(r));
        let last = state.imports.last(&handle.name).map(|r| serde_json::json!(r));
        blocks.push((handle.name.clone(), running, last));
    }
    html! {
        @for (name, running, last) in &blocks {
            div.import data-connector=(name) {
                h3 { (name) }
                @if let Some(running) = running {
                    @let done = processed(running);
                    @let expected = last.as_ref().map(processed).unwrap_or(0).max(done);
                    p { "Running: " (running["import_type"].as_str().unwrap_or("")) " import, page " (running["pages"]) ", "
                        span.progress-count { (done) } " objects (" (running["added"]) " added, " (running["updated"]) " updated, " (running["unchanged"]) " unchanged)" }
                    @if expected > 0 {
                        progress max=(expected) value=(done) aria-label=(format!("import of {name}")) { (done) " of about " (expected) }
                    } @else {
                        progress aria-label=(format!("import of {name}")) {}
                    }
                } @else if let Some(last) = last {
                    p.last-import { "Last import here: " (last["import_type"].as_str().unwrap_or("")) ", finished " (last["finished_at"].as_str().unwrap_or("")) ": "
                        span.last-added { (last["added"]) } " added, " (last["updated"]) " updated, " (last["unchanged"]) " unchanged, " (last["deleted"]) " deleted, "
                        (last["skipped"]) " skipped in " (last["duration_ms"]) " ms" }
                    progress max="1" value="1" aria-label=(format!("last import of {name}")) { "done" }
                } @else {
                    p.muted { "No import has run on this supervisor since it started." }
                }
            }
        }
    }
}

async fn imports_fragment(State(state): State<Arc<AdminState>>) -> Response {
    secured(imports_table(&state).await, StatusCode::OK)
}

async fn imports_page(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut history = Vec::new();
    for handle in &state.connectors {
        let mut runs = state.store.imports(&handle.name).await.unwrap_or_default();
        runs.reverse();
        runs.truncate(10);
        history.push((handle.name.clone(), runs));
    }
    let body = html! {
        section.panel {
            h2 { "Run an import" }
            div.scroll { table {
                thead { tr { th { "Connector" } th { "State" } th { "" } } }
                tbody { @for handle in &state.connectors {
                    tr {
                        td { (handle.name) }
                        td { (badge(handle.phase().name())) }
                        td {
                            form.inline method="post" action=(format!("/console/imports/{}?type=full", handle.name)) {
                                (csrf(&caller)) button type="submit" name="run" value="full" { "Full import of " (handle.name) }
                            }
                            " "
                            form.inline method="post" action=(format!("/console/imports/{}?type=delta", handle.name)) {
                                (csrf(&caller)) button.secondary type="submit" name="run" value="delta" { "Delta" }
                            }
                        }
                    }
                } }
            } }
        }
        section.panel {
            h2 { "Progress" }
            div id="imports" data-refresh="/console/fragments/imports" data-every="1000" aria-live="polite" {
                (imports_table(&state).await)
            }
        }
        section.panel {
            h2 { "History (every node of the store)" }
            @for (name, runs) in &history {
                h3 { (name) }
                @if runs.is_empty() { p.muted { "No import yet." } } @else {
                    div.scroll { table.history {
                        thead { tr { th { "Started" } th { "Type" } th { "Node" } th { "Duration" } th { "Outcome" } } }
                        tbody { @for run in runs {
                            tr {
                                td { (time_of_ms(run.started_ms)) }
                                td { (run.import_type) }
                                td { (run.node) }
                                td { @if let Some(f) = run.finished_ms { (format!("{:.1} s", (f - run.started_ms) as f64 / 1000.0)) } @else { "running" } }
                                td { (run.outcome.as_deref().unwrap_or("running")) }
                            }
                        } }
                    } }
                }
            }
        }
    };
    page("Imports", Nav::Imports, Some(&caller), body)
}

#[derive(Deserialize)]
struct ImportQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn start_import(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(query): Query<ImportQuery>,
) -> Response {
    if !state.connectors.iter().any(|c| c.name == name) {
        return (StatusCode::NOT_FOUND, "no such connector").into_response();
    }
    let kind = match query.kind.as_deref() {
        Some("delta") => ecma_proto::v1::ImportType::Delta,
        _ => ecma_proto::v1::ImportType::Full,
    };
    let imports = state.imports.clone();
    // It runs on its own; the page shows its progress.
    let task = {
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = imports.run(&name, kind).await {
                tracing::warn!(connector = %name, error = %e, "import started from the console failed");
            }
        })
    };
    // The page that follows shows it running (or its report): wait until it is registered or
    // done, at most a second (an import refused at once is neither; the page shows the last).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while state.imports.running(&name).is_none()
        && !task.is_finished()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Redirect::to("/console/imports").into_response()
}

// ---------------------------------------------------------------------------------------------
// The connector space.

#[derive(Deserialize, Default)]
struct SpaceQuery {
    app: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    q: Option<String>,
}

fn default_app(state: &AdminState, asked: Option<&str>) -> String {
    asked
        .filter(|a| state.scim.apps.contains_key(*a))
        .map(str::to_string)
        .or_else(|| sorted(&state.scim.apps).first().map(|(n, _)| (*n).clone()))
        .unwrap_or_default()
}

async fn space_page(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SpaceQuery>,
) -> Response {
    space(&state, &caller, query, None).await
}

async fn space(
    state: &AdminState,
    caller: &Caller,
    query: SpaceQuery,
    note: Option<(String, bool)>,
) -> Response {
    let app = default_app(state, query.app.as_deref());
    let kind = if query.kind.as_deref() == Some("Group") { "Group" } else { "User" };
    let q = query.q.clone().unwrap_or_default();
    let records = state.store.search(&app, kind, q.trim(), 100).await;
    let mut pending = Vec::new();
    for handle in &state.connectors {
        if let Ok(records) = state.store.pending(&handle.name).await {
            pending.push((handle.name.clone(), records));
        }
    }
    let body = html! {
        @if let Some((text, bad)) = &note { (message(text, *bad)) }
        form.filters.panel method="get" action="/console/space" role="search" {
            div { label for="app" { "App" }
                select id="app" name="app" { @for (name, _) in sorted(&state.scim.apps) { option value=(name) selected[*name == app] { (name) } } } }
            div { label for="type" { "Type" }
                select id="type" name="type" { option value="User" selected[kind == "User"] { "Users" } option value="Group" selected[kind == "Group"] { "Groups" } } }
            div { label for="q" { "Name or SCIM id" } input id="q" name="q" type="search" value=(q) placeholder="part of a userName, or an id"; }
            div { button type="submit" { "Search" } }
        }
        section.panel {
            h2 { "Records" }
            @match &records {
                Err(e) => (message(&format!("The connector space cannot be read: {e}"), true)),
                Ok(records) if records.is_empty() => p.muted { "No record matches." },
                Ok(records) => div.scroll { table.records {
                    thead { tr { th { "Name" } th { "SCIM id" } th { "State" } th { "Anchor" } th { "DN" } th { "Modified" } } }
                    tbody { @for r in records {
                        tr {
                            td { a href=(format!("/console/space/{}/{}/{}", r.app, r.resource_type, r.id)) { (r.user_name) } }
                            td.mono { (r.id) }
                            td { (badge(r.state.as_str())) }
                            td.mono { (crate::store::anchor_text(&r.target.anchors).unwrap_or_default()) }
                            td.mono { (r.target.dn) }
                            td { (r.modified) }
                        }
                    } }
                } },
            }
        }
        section.panel {
            h2 { "Pending writes" }
            p.muted { "Writes whose outcome is not known yet (the connector or this supervisor died during the call). They are settled when the connector becomes ready and every 10 s; \"Reconcile now\" settles them at once." }
            @for (name, records) in &pending {
                div.pending data-connector=(name) {
                    h3 { (name) ": " (records.len()) " pending" }
                    @if !records.is_empty() {
                        ul { @for r in records { li { a href=(format!("/console/space/{}/{}/{}", r.app, r.resource_type, r.id)) { (r.user_name) } " " span.muted { (r.id) } } } }
                    }
                    form.inline method="post" action=(format!("/console/connectors/{name}/reconcile")) {
                        (csrf(caller)) button.secondary type="submit" { "Reconcile now" }
                    }
                }
            }
        }
    };
    page("Connector space", Nav::Space, Some(caller), body)
}

async fn record_page(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Path((app, kind, id)): Path<(String, String, String)>,
) -> Response {
    let record = match state.store.get(&app, &kind, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return page_with_status(
                "No such record",
                Nav::Space,
                Some(&caller),
                html! { p { "No " (kind) " " (id) " in app " (app) "." } },
                StatusCode::NOT_FOUND,
            );
        }
        Err(e) => {
            return page_with_status(
                "Connector space unavailable",
                Nav::Space,
                Some(&caller),
                message(&e.to_string(), true),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    let resource = if record.resource_type == "Group" {
        to_response::<GroupKind>(&record, "")
    } else {
        to_response::<UserKind>(&record, "")
    };
    let log = state
        .store
        .log_query(&LogFilter {
            app: Some(app.clone()),
            q: Some(id.clone()),
            limit: Some(20),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let body = html! {
        p { (badge(record.state.as_str())) " " (record.resource_type) " of app " strong { (record.app) } " in connector " strong { (record.connector) } ", version " (record.version) ", created " (record.created) ", modified " (record.modified) }
        p {
            a href=(format!("/console/preview?app={}&pick={}", record.app, record.id)) { "Dry-run a change of it" } " · "
            a href=(format!("/console/log?app={}&q={}", record.app, record.id)) { "Its provisioning log" }
        }
        div.grid {
            section.panel {
                h2 { "SCIM resource" }
                pre.resource { (pretty(&resource)) }
            }
            section.panel {
                h2 { "Target object" }
                dl {
                    dt { "Anchor" } dd.mono.anchor { (crate::store::anchor_text(&record.target.anchors).unwrap_or_default()) }
                    dt { "DN" } dd.mono.dn { (record.target.dn) }
                }
                h3 { "Values last exported" }
                (values_table(&record))
            }
        }
        section.panel {
            h2 { "Recent provisioning log" }
            (log_table(&log))
        }
    };
    page(&format!("{} {}", record.resource_type, record.user_name), Nav::Space, Some(&caller), body)
}

fn values_table(record: &Record) -> Markup {
    html! {
        div.scroll { table.values {
            thead { tr { th { "Attribute" } th { "Values" } } }
            tbody { @for (name, values) in record.target_values() {
                tr { td.mono { (name) } td.mono { (values.iter().map(|v| crate::mapping::value_to_json(v).to_string()).collect::<Vec<_>>().join(", ")) } }
            } }
        } }
    }
}

// ---------------------------------------------------------------------------------------------
// Connector actions: reconcile, test connection, reload, reset.

async fn connector_action(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let Some(handle) = state.connectors.iter().find(|c| c.name == name) else {
        return page_with_status(
            "No such connector",
            Nav::Config,
            Some(&caller),
            html! {},
            StatusCode::NOT_FOUND,
        );
    };
    match action.as_str() {
        "reconcile" => {
            let provisioner = state.provisioner.clone();
            let connector = name.clone();
            let settled = tokio::spawn(crate::provision::with_source("reconcile", async move {
                provisioner.reconcile_pending(&connector).await
            }))
            .await;
            let note = match settled {
                Ok(Ok(n)) => (format!("{name}: {n} pending write(s) settled."), false),
                Ok(Err(e)) => (format!("{name}: could not settle now: {e}"), true),
                Err(e) => (format!("{name}: {e}"), true),
            };
            space(&state, &caller, SpaceQuery::default(), Some(note)).await
        }
        "test" => {
            let (status, answer) = super::test_connection(State(state.clone()), Path(name.clone())).await;
            let ok = status == StatusCode::OK;
            let text = if ok {
                format!(
                    "{name}: the connection works (validated in {:.0} ms).",
                    answer["duration_ms"].as_f64().unwrap_or(0.0)
                )
            } else {
                let problems: Vec<String> = answer["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p["parameter"].as_str().unwrap_or(""),
                            p["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                format!(
                    "{name}: the test failed: {}{}",
                    answer["error"].as_str().unwrap_or(""),
                    problems.join("; ")
                )
            };
            config(&state, &caller, Some((text, !ok))).await
        }
        "reload" => {
            let (status, answer) = super::reload_one(State(state.clone()), Path(name.clone())).await;
            let ok = status == StatusCode::OK;
            let text = if ok {
                format!("{name}: reloaded; incarnation {} serves now.", answer["incarnation"])
            } else {
                format!("{name}: not reloaded: {}", answer["error"].as_str().unwrap_or(""))
            };
            config(&state, &caller, Some((text, !ok))).await
        }
        "reset" => {
            let ok = handle.reset();
            let text = if ok {
                format!("{name}: reset; it starts again now.")
            } else {
                format!(
                    "{name} is {}; only a quarantined, failed_config or backoff connector can be reset.",
                    handle.phase().name()
                )
            };
            config(&state, &caller, Some((text, !ok))).await
        }
        _ => page_with_status("No such action", Nav::Config, Some(&caller), html! {}, StatusCode::NOT_FOUND),
    }
}

// ---------------------------------------------------------------------------------------------
// The provisioning log.

fn log_table(entries: &[LogEntry]) -> Markup {
    html! {
        @if entries.is_empty() { p.muted { "No row." } } @else {
            div.scroll { table.log {
                thead { tr {
                    th { "Time" } th { "Source" } th { "App" } th { "Connector" } th { "Operation" } th { "Outcome" }
                    th { "Name" } th { "SCIM id" } th { "Anchor / DN" } th { "Attributes" } th.num { "ms" } th { "Detail" }
                } }
                tbody { @for e in entries {
                    tr data-seq=(e.seq) {
                        td { (time_of_ms(e.at_ms)) }
                        td { (e.source) }
                        td { (e.app) }
                        td { (e.connector) }
                        td.operation { (e.operation) }
                        td.outcome { (badge(&e.outcome)) @if !e.error_kind.is_empty() { " " span.mono { (e.error_kind) } } }
                        td { (e.name) }
                        td.mono { @if e.scim_id.starts_with('(') { (e.scim_id) } @else {
                            a href=(format!("/console/space/{}/{}/{}", e.app, e.resource_type, e.scim_id)) { (e.scim_id) } } }
                        td.mono { (e.anchor) @if !e.dn.is_empty() { br; (e.dn) } }
                        td.mono { (e.attributes.join(", ")) }
                        td.num { (format!("{:.1}", e.duration_ms)) }
                        td { (e.detail) @if !e.trace_id.is_empty() { br; span.muted.mono { "trace " (e.trace_id) } } }
                    }
                } }
            } }
        }
    }
}

async fn log_page(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Query(filter): Query<LogFilter>,
) -> Response {
    let entries = state.store.log_query(&filter).await;
    let selected = |value: &Option<String>, option: &str| value.as_deref() == Some(option);
    let more =
        entries.as_ref().ok().filter(|e| e.len() == filter.limit()).and_then(|e| e.last()).map(|e| e.seq);
    let next_link = more.map(|before| {
        let mut pairs: Vec<(&str, String)> = vec![("before", before.to_string())];
        for (k, v) in [
            ("app", &filter.app),
            ("connector", &filter.connector),
            ("operation", &filter.operation),
            ("outcome", &filter.outcome),
            ("q", &filter.q),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                pairs.push((k, v.clone()));
            }
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        format!("/console/log?{query}")
    });
    let body = html! {
        form.filters.panel method="get" action="/console/log" role="search" {
            div { label for="log-app" { "App" }
                select id="log-app" name="app" { option value="" { "any" } @for (name, _) in sorted(&state.scim.apps) { option value=(name) selected[selected(&filter.app, name)] { (name) } } } }
            div { label for="log-connector" { "Connector" }
                select id="log-connector" name="connector" { option value="" { "any" } @for c in &state.connectors { option value=(c.name) selected[selected(&filter.connector, &c.name)] { (c.name) } } } }
            div { label for="log-operation" { "Operation" }
                select id="log-operation" name="operation" { option value="" { "any" }
                    @for op in ["add", "update", "delete", "set_password", "lookup", "import_add", "import_update", "import_delete"] { option value=(op) selected[selected(&filter.operation, op)] { (op) } } } }
            div { label for="log-outcome" { "Outcome" }
                select id="log-outcome" name="outcome" { option value="" { "any" }
                    @for o in ["applied", "refused", "unavailable", "unknown", "found", "absent"] { option value=(o) selected[selected(&filter.outcome, o)] { (o) } } } }
            div { label for="log-q" { "Name, SCIM id, anchor, DN or trace id" } input id="log-q" name="q" type="search" value=(filter.q.as_deref().unwrap_or("")); }
            div { button type="submit" { "Filter" } }
        }
        section.panel {
            @match &entries {
                Ok(entries) => (log_table(entries)),
                Err(e) => (message(&format!("The provisioning log cannot be read: {e}"), true)),
            }
            @if let Some(link) = next_link { p { a href=(link) rel="next" { "Older rows" } } }
        }
    };
    page("Provisioning log", Nav::Log, Some(&caller), body)
}

// ---------------------------------------------------------------------------------------------
// Dry run and provision on demand.

#[derive(Deserialize, Default)]
struct PreviewQuery {
    app: Option<String>,
    pick: Option<String>,
}

const SAMPLE_USER: &str = r#"{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "externalId": "00aa11bb-22cc-33dd-44ee-55ff66778899",
  "userName": "new.user@example.com",
  "active": true,
  "displayName": "New User",
  "name": { "givenName": "New", "familyName": "User" },
  "emails": [{ "primary": true, "type": "work", "value": "new.user@example.com" }]
}"#;

async fn preview_page(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PreviewQuery>,
) -> Response {
    let app = default_app(&state, query.app.as_deref());
    let mut form = PreviewForm {
        app: app.clone(),
        method: "POST".into(),
        path: "/Users".into(),
        body: SAMPLE_USER.into(),
        action: None,
    };
    if let Some(id) = &query.pick {
        for kind in ["User", "Group"] {
            if let Ok(Some(record)) = state.store.get(&app, kind, id).await {
                let mut resource = if kind == "Group" {
                    to_response::<GroupKind>(&record, "")
                } else {
                    to_response::<UserKind>(&record, "")
                };
                if let Some(object) = resource.as_object_mut() {
                    object.remove("meta");
                }
                form.method = "PUT".into();
                form.path = format!("/{}s/{}", kind, record.id);
                form.body = pretty(&resource);
            }
        }
    }
    preview_view(&state, &caller, &form, None).await
}

#[derive(Deserialize, Default)]
struct PreviewForm {
    app: String,
    method: String,
    path: String,
    #[serde(default)]
    body: String,
    /// `dry` or `apply`.
    action: Option<String>,
}

async fn preview_run(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<PreviewForm>,
) -> Response {
    let body = if form.body.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(&form.body) {
            Ok(v) => Some(v),
            Err(e) => {
                let answer = serde_json::json!({"error": format!("the body is not valid JSON: {e}")});
                return preview_view(&state, &caller, &form, Some(answer)).await;
            }
        }
    };
    let request =
        crate::scim::preview::PreviewRequest { method: form.method.clone(), path: form.path.clone(), body };
    let apply = form.action.as_deref() == Some("apply");
    let mut answer = match super::run_preview(&state, &form.app, &request, apply).await {
        Ok(answer) => answer,
        Err((_, answer)) => answer,
    };
    // The form comes back without the password the operator typed: no page shows a secret.
    let mut form = form;
    if let Some(Value::Object(mut body)) = request.body {
        let before = body.len();
        body.retain(|k, _| !k.eq_ignore_ascii_case("password"));
        if body.len() != before {
            form.body = pretty(&Value::Object(body));
            answer["password_removed"] = Value::Bool(true);
        }
    }
    preview_view(&state, &caller, &form, Some(answer)).await
}

async fn preview_view(
    state: &AdminState,
    caller: &Caller,
    form: &PreviewForm,
    answer: Option<Value>,
) -> Response {
    let users = state.store.search(&form.app, "User", "", 200).await.unwrap_or_default();
    let body = html! {
        div.grid {
            section.panel {
                h2 { "Request" }
                form method="get" action="/console/preview" {
                    div.field {
                        label for="pick" { "Start from an existing user (a PUT of it as stored)" }
                        input type="hidden" name="app" value=(form.app);
                        select id="pick" name="pick" data-submit {
                            option value="" { "choose a user" }
                            @for u in &users { @if u.state == RecordState::Present { option value=(u.id) { (u.user_name) } } }
                        }
                        noscript { button.secondary type="submit" { "Load" } }
                    }
                }
                form method="post" action="/console/preview" id="preview-form" {
                    (csrf(caller))
                    div.field { label for="preview-app" { "App" }
                        select id="preview-app" name="app" { @for (name, _) in sorted(&state.scim.apps) { option value=(name) selected[*name == form.app] { (name) } } } }
                    div.field { label for="preview-method" { "Method" }
                        select id="preview-method" name="method" { @for m in ["POST", "PUT", "PATCH", "DELETE"] { option value=(m) selected[form.method.eq_ignore_ascii_case(m)] { (m) } } } }
                    div.field { label for="preview-path" { "Path (relative to /scim/" (form.app) ")" } input id="preview-path" name="path" value=(form.path) size="48"; }
                    div.field { label for="preview-body" { "Body (JSON, as Entra ID would send it)" } textarea id="preview-body" name="body" spellcheck="false" { (form.body) } }
                    button type="submit" name="action" value="dry" { "Dry run" } " "
                    button.danger type="submit" name="action" value="apply" { "Apply for real" }
                }
            }
            section.panel id="preview-result" aria-live="polite" {
                h2 { "Result" }
                @match &answer {
                    None => p.muted { "A dry run shows how the body is normalised, the values after the mapping, the DN, the record and target object it matches, and the exact change the connector would receive. Nothing is written." },
                    Some(answer) => (preview_result(answer)),
                }
            }
        }
    };
    page("Dry run", Nav::Preview, Some(caller), body)
}

fn preview_result(answer: &Value) -> Markup {
    if let Some(error) = answer["error"].as_str() {
        return message(error, true);
    }
    let p = &answer["preview"];
    let applied = &answer["applied"];
    html! {
        @if applied.is_null() {
            (message("Dry run: nothing was written, neither in the connector space nor in the target.", false))
        }
        @if answer["password_removed"] == true {
            p.muted { "The password was taken out of the form after the run (no page shows a secret); type it again to send it." }
        }
        dl {
            dt { "The client would get" } dd.answer { strong { (p["answer"]) } " " (p["note"].as_str().or(p["detail"].as_str()).unwrap_or("")) }
            @if let Some(kind) = p["scimType"].as_str() { dt { "scimType" } dd { (kind) } }
            @if let Some(dn) = p["dn"].as_str() { dt { "DN" } dd.mono.preview-dn { (dn) } }
            @if let Some(pw) = p["password"].as_str() { dt { "Password" } dd { (pw) } }
        }
        @if !p["record"].is_null() {
            h3 { "Matching record in the connector space" }
            p { (badge(p["record"]["state"].as_str().unwrap_or(""))) " " span.mono { (p["record"]["id"].as_str().unwrap_or("")) } " anchor " span.mono { (p["record"]["anchor"].as_str().unwrap_or("")) } }
        } @else if p["answer"].is_number() {
            p.no-record { "No record in the connector space has this name: a new one." }
        }
        @if !p["targetObject"].is_null() {
            h3 { "Target object (looked up through the connector)" }
            @if p["targetObject"]["found"] == true {
                p.target-found { "Found by " (p["targetObject"]["by"].as_str().unwrap_or("")) ": anchor " span.mono { (p["targetObject"]["anchor"].as_str().unwrap_or("")) } " " span.mono { (p["targetObject"]["dn"].as_str().unwrap_or("")) } }
            } @else if p["targetObject"]["looked_up"] == true {
                p.target-absent { "Not in the target (looked up by " (p["targetObject"]["by"].as_str().unwrap_or("")) ")." }
            } @else {
                p.muted { "Not looked up: " (p["targetObject"]["reason"].as_str().unwrap_or("")) }
            }
        }
        @if let Some(change) = p["change"].as_object() {
            h3 { "Change the connector would receive" }
            p { strong.change-type { (change["modificationType"].as_str().unwrap_or("")) } " of " (change["objectType"].as_str().unwrap_or("")) @if let Some(dn) = change["dn"].as_str().filter(|d| !d.is_empty()) { " " span.mono { (dn) } } }
            div.scroll { table.change {
                thead { tr { th { "Attribute" } th { "Modification" } th { "Values added" } th { "Values removed" } } }
                tbody { @for c in change["attributeChanges"].as_array().into_iter().flatten() {
                    tr {
                        td.mono { (c["name"].as_str().unwrap_or("")) }
                        td { (c["modification"].as_str().unwrap_or("")) }
                        td.mono { (join(&c["add"])) }
                        td.mono { (join(&c["delete"])) }
                    }
                } }
            } }
        } @else if p["answer"].is_number() {
            p.no-change { "The connector would receive no change." }
        }
        @if !p["normalised"].is_null() {
            details { summary { "The body as SCIM normalised it" } pre { (pretty(&p["normalised"])) } }
        }
        @if let Some(values) = p["values"].as_object() {
            details { summary { "Connector attribute values after the mapping" }
                table { tbody { @for (k, v) in values { tr { td.mono { (k) } td.mono { (join(v)) } } } } }
            }
        }
        @if !applied.is_null() {
            h3 { "Applied" }
            p.applied-status { "The request ran for real and was answered " strong { (applied["status"]) } "." }
            details open { summary { "Response body" } pre { (pretty(&applied["body"])) } }
            h3 { "Provisioning log of this request" }
            (log_table(&serde_json::from_value::<Vec<LogEntry>>(answer["log"].clone()).unwrap_or_default()))
        }
    }
}

fn join(values: &Value) -> String {
    values
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The configuration.

async fn config_page(State(state): State<Arc<AdminState>>, Extension(caller): Extension<Caller>) -> Response {
    config(&state, &caller, None).await
}

async fn config(state: &AdminState, caller: &Caller, note: Option<(String, bool)>) -> Response {
    let file = &state.reloader.config_file;
    let shown = match std::fs::read_to_string(file) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(table) => {
                let mut value = toml::Value::Table(table);
                redact(&mut value, "");
                toml::to_string_pretty(&value).unwrap_or_default()
            }
            Err(e) => format!("the file does not parse: {e}"),
        },
        Err(e) => format!("cannot read {}: {e}", file.display()),
    };
    let body = html! {
        @if let Some((text, bad)) = &note { (message(text, *bad)) }
        section.panel {
            h2 { "Connectors" }
            div.scroll { table {
                thead { tr { th { "Connector" } th { "State" } th { "Executable" } th { "Object type" } th { "Actions" } } }
                tbody { @for c in &state.connectors {
                    @let phase = c.phase();
                    tr data-connector=(c.name) {
                        td { (c.name) }
                        td { (badge(phase.name())) }
                        td.mono { (c.launch_config().executable) }
                        td { (c.config.object_type) }
                        td {
                            form.inline method="post" action=(format!("/console/connectors/{}/test", c.name)) { (csrf(caller)) button.secondary type="submit" { "Test connection" } } " "
                            form.inline method="post" action=(format!("/console/connectors/{}/reload", c.name)) { (csrf(caller)) button.secondary type="submit" { "Reload" } } " "
                            @if matches!(phase, Phase::Quarantined { .. } | Phase::FailedConfig { .. } | Phase::Backoff { .. }) {
                                form.inline method="post" action=(format!("/console/connectors/{}/reset", c.name)) { (csrf(caller)) button type="submit" { "Reset" } }
                            }
                        }
                    }
                } }
            } }
        }
        section.panel {
            h2 { "Configuration file" }
            p.muted { (file.display()) " as it is on disk now (reload to apply changes). Secret values are redacted; " code { "{ env = ... }" } " and " code { "{ file = ... }" } " references are shown as written." }
            pre.config { (shown) }
        }
    };
    page("Configuration", Nav::Config, Some(caller), body)
}

/// Whether a key names a secret (its value is shown redacted). Keys that name where a secret
/// is (`*_env`, `*_file`) are not secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_env") || key.ends_with("_file") {
        return false;
    }
    ["password", "secret", "token", "credential", "api_key", "apikey", "private_key", "passphrase"]
        .iter()
        .any(|s| key.contains(s))
}

/// `Password=...;` and `PWD=...;` pairs of an ODBC or ADO connection string, redacted.
fn redact_pairs(text: &str) -> String {
    text.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if ["password", "pwd"].contains(&k.trim().to_ascii_lowercase().as_str()) => {
                format!("{k}=[redacted]")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Replaces secret values in a configuration: values of secret-named keys, and the password of
/// any URL (`postgres://user:password@host`).
fn redact(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::String(text) => {
            if is_secret_key(key) {
                *text = "[redacted]".into();
            } else if url::Url::parse(text).is_ok_and(|url| {
                url.password().is_some() || url.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password"))
            }) {
                *text = crate::store::postgres::redacted(text);
            } else {
                *text = redact_pairs(text);
            }
        }
        toml::Value::Table(table) => {
            // A reference to where a secret is kept is not the secret.
            let reference = table.len() == 1 && (table.contains_key("env") || table.contains_key("file"));
            for (k, v) in table.iter_mut() {
                if reference {
                    continue;
                }
                redact(v, k);
            }
        }
        toml::Value::Array(values) => values.iter_mut().for_each(|v| redact(v, key)),
        _ if is_secret_key(key) => *value = toml::Value::String("[redacted]".into()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_references_kept() {
        let mut config: toml::Value = toml::from_str(
            r#"
            [apps.hr]
            token_env = "HR_TOKEN"
            insecure_default_token = "abcdefghijklmnop-secret"
            [connectors.ldap.parameters]
            bind_password = "hunter2"
            host = "ldap.example.com"
            client_secret = { env = "CLIENT_SECRET" }
            [connectors.odbc.parameters]
            connection_string = "Driver={PostgreSQL};Server=db;UID=svc;PWD=odbc-s3cret;Database=x"
            [store]
            url = "postgres://svc:pa55word@db.example.com/space"
            "#,
        )
        .unwrap();
        redact(&mut config, "");
        let shown = toml::to_string(&config).unwrap();
        for secret in ["abcdefghijklmnop-secret", "hunter2", "pa55word", "odbc-s3cret"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(
            shown.contains("HR_TOKEN")
                && shown.contains("CLIENT_SECRET")
                && shown.contains("ldap.example.com"),
            "{shown}"
        );
        assert!(shown.contains("postgres://svc:***@db.example.com/space"), "{shown}");
        assert!(shown.contains("Server=db;UID=svc;PWD=[redacted];Database=x"), "{shown}");
    }

    #[test]
    fn a_login_only_sends_the_browser_to_a_console_page() {
        assert_eq!(safe_next(Some("/console/log?app=hr")), "/console/log?app=hr");
        for hostile in
            ["https://evil.example/", "//evil.example/console/", "/admin/reload", "/console/\\evil"]
        {
            assert_eq!(safe_next(Some(hostile)), "/console/", "{hostile}");
        }
    }
}
