//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the admin API under `/admin/` (the
//! connectors, imports, reloads, the provisioning log, dry runs) and the console under
//! `/console/`. [`auth`] guards all of it.

pub mod auth;
pub mod console;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::store::log::LogFilter;
use crate::supervision::{ConnectorHandle, Phase};

/// What the admin handlers see.
pub struct AdminState {
    pub reloader: Arc<crate::server::Reloader>,
    pub connectors: Vec<Arc<ConnectorHandle>>,
    pub metrics: PrometheusHandle,
    pub store: crate::store::Store,
    pub imports: Arc<crate::import::Imports>,
    pub provisioner: Arc<crate::provision::Provisioner>,
    /// The SCIM side: the apps, and the router a dry run's `apply` goes through.
    pub scim: Arc<crate::scim::ScimState>,
    pub scim_router: Router,
    pub activity: Arc<crate::activity::Activity>,
    pub auth: Arc<auth::Auth>,
    /// When this supervisor started (for uptimes).
    pub started: std::time::Instant,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/connectors", get(connectors))
        .route("/admin/connectors/{name}/reset", post(reset))
        .route("/admin/connectors/{name}/reload", post(reload_one))
        .route("/admin/reload", post(reload_all))
        .route("/admin/connectors/{name}/import", post(import))
        .route("/admin/connectors/{name}/imports", get(import_history))
        .route("/admin/connectors/{name}/reconcile", post(reconcile))
        .route("/admin/connectors/{name}/test", post(test_connection))
        .route("/admin/log", get(log))
        .route("/admin/activity", get(activity))
        .route("/admin/apps/{app}/preview", post(preview))
        .merge(console::router())
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "no such endpoint"}))) })
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::guard))
}

fn connector_named<'a>(
    state: &'a AdminState,
    name: &str,
) -> Result<&'a Arc<ConnectorHandle>, (StatusCode, Json<Value>)> {
    state.connectors.iter().find(|c| c.name == name).ok_or_else(|| {
        (StatusCode::NOT_FOUND, Json(json!({"error": format!("no connector named {name:?}")})))
    })
}

/// `GET /admin/log`: provisioning log rows, newest first (`before` = the last `seq` for the next
/// page; `after` = a `seq` to read on from, oldest first, as `supervisor log --follow` does).
async fn log(
    State(state): State<Arc<AdminState>>,
    Query(filter): Query<LogFilter>,
) -> (StatusCode, Json<Value>) {
    match state.store.log_query(&filter).await {
        Ok(entries) => {
            let next = if filter.after.is_none() && entries.len() == filter.limit() {
                entries.last().map(|e| e.seq)
            } else {
                None
            };
            (StatusCode::OK, Json(json!({"entries": entries, "next_before": next})))
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ActivityQuery {
    minutes: Option<usize>,
}

/// `GET /admin/activity?minutes=N`: SCIM requests, errors and restarts per minute.
async fn activity(State(state): State<Arc<AdminState>>, Query(q): Query<ActivityQuery>) -> Json<Value> {
    Json(json!({"minutes": state.activity.last(q.minutes.unwrap_or(60))}))
}

/// `GET /admin/connectors/{name}/imports`: the connector's import runs, newest first.
async fn import_history(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = connector_named(&state, &name) {
        return e;
    }
    match state.store.imports(&name).await {
        Ok(mut runs) => {
            runs.reverse();
            (StatusCode::OK, Json(json!({"imports": runs})))
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))),
    }
}

/// `POST /admin/connectors/{name}/reconcile`: settles the connector's pending writes now.
async fn reconcile(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = connector_named(&state, &name) {
        return e;
    }
    let provisioner = state.provisioner.clone();
    let task = {
        let name = name.clone();
        tokio::spawn(crate::provision::with_source("reconcile", async move {
            provisioner.reconcile_pending(&name).await
        }))
    };
    match task.await {
        Ok(Ok(settled)) => (StatusCode::OK, Json(json!({"name": name, "settled": settled}))),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"name": name, "error": e.to_string()}))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"name": name, "error": e.to_string()}))),
    }
}

/// `POST /admin/connectors/{name}/test`: asks the serving connector to validate its
/// configuration and reach its target (ValidateConfiguration).
async fn test_connection(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    let handle = match connector_named(&state, &name) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let session = match handle.session() {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"name": name, "ok": false, "state": handle.phase().name(), "error": e.to_string()}),
                ),
            );
        }
    };
    let started = std::time::Instant::now();
    let request = ecma_proto::v1::ValidateConfigurationRequest { config: Some(session.config.clone()) };
    let answer = session
        .call("ValidateConfiguration", session.client().validate_configuration(session.request(request)))
        .await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok(response) => {
            let problems: Vec<Value> = response
                .problems
                .iter()
                .map(|p| json!({"parameter": p.parameter, "message": p.message}))
                .collect();
            let ok = problems.is_empty();
            (
                if ok { StatusCode::OK } else { StatusCode::CONFLICT },
                Json(json!({"name": name, "ok": ok, "problems": problems, "duration_ms": duration_ms})),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"name": name, "ok": false, "error": e.to_string(), "duration_ms": duration_ms})),
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
struct PreviewQuery {
    #[serde(default)]
    apply: bool,
}

/// `POST /admin/apps/{app}/preview[?apply=true]`: a dry run of a SCIM request; with `apply`,
/// the request then runs as a real one and the answer carries its outcome and log rows.
async fn preview(
    State(state): State<Arc<AdminState>>,
    Path(app): Path<String>,
    Query(query): Query<PreviewQuery>,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let request: crate::scim::preview::PreviewRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("the body must be {{\"method\", \"path\", \"body\"}}: {e}")})),
            );
        }
    };
    match run_preview(&state, &app, &request, query.apply).await {
        Ok(answer) => (StatusCode::OK, Json(answer)),
        Err((status, answer)) => (status, Json(answer)),
    }
}

/// The dry run (and, with `apply`, the real request); shared with the console's form.
pub async fn run_preview(
    state: &AdminState,
    app: &str,
    request: &crate::scim::preview::PreviewRequest,
    apply: bool,
) -> Result<Value, (StatusCode, Value)> {
    let Some(scim_app) = state.scim.apps.get(app) else {
        return Err((StatusCode::NOT_FOUND, json!({"error": format!("no app named {app:?}")})));
    };
    let mut answer = match crate::scim::preview::preview(&state.scim, scim_app, request).await {
        Ok(preview) => json!({"preview": preview}),
        Err(error) => json!({"preview": crate::scim::preview::error_json(&error)}),
    };
    if apply {
        let started_ms = crate::store::now_ms();
        let applied = apply_request(state, app, request).await;
        state.provisioner.journal.flush().await;
        // The rows of this request: by the SCIM id it answered or named, else (a create that
        // failed) by the name it carried.
        let key = applied["body"]["id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| crate::scim::preview::parse(app, request).ok().and_then(|p| p.id))
            .or_else(|| answer["preview"]["name"].as_str().map(str::to_string));
        let entries = match key {
            Some(key) => {
                let filter = LogFilter {
                    app: Some(app.into()),
                    source: Some("console".into()),
                    q: Some(key.clone()),
                    since_ms: Some(started_ms),
                    ..Default::default()
                };
                let mut rows = state.store.log_query(&filter).await.unwrap_or_default();
                rows.retain(|r| r.scim_id == key || r.name.eq_ignore_ascii_case(&key));
                rows
            }
            None => vec![],
        };
        answer["applied"] = applied;
        answer["log"] = json!(entries);
    }
    Ok(answer)
}

/// Runs a SCIM request through the SCIM router, as the app's client (the request never leaves
/// the process; it carries the app's authorisation as an extension no client can set).
async fn apply_request(
    state: &AdminState,
    app: &str,
    request: &crate::scim::preview::PreviewRequest,
) -> Value {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let path = request.path.trim();
    let path = if path.starts_with("/scim/") {
        path.to_string()
    } else {
        format!("/scim/{app}/{}", path.trim_start_matches('/'))
    };
    let body = request.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
    let built = axum::http::Request::builder()
        .method(request.method.trim().to_ascii_uppercase().as_str())
        .uri(&path)
        .header(header::HOST, "console")
        .header(header::CONTENT_TYPE, "application/scim+json")
        .extension(crate::scim::Internal)
        .body(axum::body::Body::from(body));
    let built = match built {
        Ok(b) => b,
        Err(e) => return json!({"status": 400, "body": {"detail": e.to_string()}}),
    };
    let run = crate::provision::with_source("console", state.scim_router.clone().oneshot(built));
    let response = match run.await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
    json!({"status": status, "body": body})
}

fn describe(
    handle: &ConnectorHandle,
    pending_writes: Option<i64>,
    last_import: Option<crate::import::Report>,
    import_running: Option<crate::import::Report>,
) -> Value {
    let phase = handle.phase();
    let status = handle.status();
    let reason = match &phase {
        Phase::Degraded { reason, .. }
        | Phase::FailedConfig { reason }
        | Phase::Quarantined { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    json!({
        "name": handle.name,
        "state": phase.name(),
        "reason": reason,
        "pid": status.pid,
        "incarnation": status.incarnation,
        "restarts": status.restarts,
        "quarantines": status.quarantines,
        "rejected_entries": status.rejected_entries,
        "last_exit": status.last_exit,
        "last_error": status.last_error,
        "started_at": status.started_at,
        "protocol_version": status.protocol_version,
        "connector_version": status.connector_version,
        "pending_writes": pending_writes,
        "last_import": last_import,
        "import_running": import_running,
        "object_type": handle.config.object_type,
        "partition": handle.config.partition,
        "recent_output": status.recent_output.iter().rev().take(10).rev().collect::<Vec<_>>(),
    })
}

/// 200 when every connector and the connector space are ready, 503 with what is not.
async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Value>) {
    let not_ready: Vec<Value> = state
        .connectors
        .iter()
        .filter(|c| !matches!(c.phase(), Phase::Ready(_)))
        .map(|c| json!({"name": c.name, "state": c.phase().name()}))
        .collect();
    let store_ready = state.store.health() == crate::store::Health::Ready;
    if not_ready.is_empty() && store_ready {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "not ready", "connectors": not_ready, "store": store_status(&state.store)}),
            ),
        )
    }
}

/// Prometheus text exposition.
async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    for c in &state.connectors {
        let phase = c.phase();
        for name in ["starting", "ready", "degraded", "backoff", "quarantined", "failed_config", "stopped"] {
            let value = if phase.name() == name { 1.0 } else { 0.0 };
            metrics::gauge!("connector_state", "connector" => c.name.clone(), "state" => name).set(value);
        }
    }
    // The connector space's size: its records, and the store file's bytes.
    if let Ok(count) = state.store.count().await {
        metrics::gauge!("connector_space_records").set(count as f64);
    }
    if let Some(bytes) = state.store.file_bytes() {
        metrics::gauge!("connector_space_bytes").set(bytes as f64);
    }
    metrics::gauge!("connector_space_wal_peak_bytes").set(state.store.wal_peak_bytes() as f64);
    let health = state.store.health();
    for name in ["ready", "degraded", "failed"] {
        metrics::gauge!("connector_space_state", "state" => name).set(if health.name() == name {
            1.0
        } else {
            0.0
        });
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Reads the configuration again and starts a new incarnation of one connector beside the
/// serving one (its executable as it is on disk now); answers once it serves (200) or why the
/// old one goes on serving (409).
async fn reload_one(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = connector_named(&state, &name) {
        return e;
    }
    match crate::server::reload(&state.reloader, Some(&name)).await {
        Ok(mut outcomes) => {
            let outcome = outcomes.pop().unwrap_or(Value::Null);
            let status = if outcome["reloaded"] == true { StatusCode::OK } else { StatusCode::CONFLICT };
            (status, Json(outcome))
        }
        Err(error) => (StatusCode::CONFLICT, Json(json!({"name": name, "reloaded": false, "error": error}))),
    }
}

/// Reloads every serving connector, one after the other (as SIGHUP does).
async fn reload_all(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Value>) {
    match crate::server::reload(&state.reloader, None).await {
        Ok(outcomes) => {
            let failed = outcomes.iter().any(|o| o["reloaded"] == false);
            (
                if failed { StatusCode::CONFLICT } else { StatusCode::OK },
                Json(json!({"connectors": outcomes})),
            )
        }
        Err(error) => (StatusCode::CONFLICT, Json(json!({"error": error}))),
    }
}

/// Leaves quarantine or failed_config (or skips the rest of a backoff) and starts again now.
async fn reset(State(state): State<Arc<AdminState>>, Path(name): Path<String>) -> (StatusCode, Json<Value>) {
    let handle = match connector_named(&state, &name) {
        Ok(h) => h,
        Err(e) => return e,
    };
    if handle.reset() {
        (StatusCode::ACCEPTED, Json(json!({"name": name, "reset": true})))
    } else {
        let state = handle.phase().name();
        (
            StatusCode::CONFLICT,
            Json(
                json!({"name": name, "reset": false, "error": format!("the connector is {state}; only a quarantined, failed_config or backoff connector can be reset")}),
            ),
        )
    }
}

#[derive(Debug, serde::Deserialize)]
struct ImportQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Runs an import now and answers its report: `?type=full` (default) or `?type=delta` (full
/// where the connector has no delta).
async fn import(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ImportQuery>,
) -> (StatusCode, Json<Value>) {
    use crate::import::{ImportError, NotRun};
    let kind = match query.kind.as_deref().unwrap_or("full") {
        "full" => ecma_proto::v1::ImportType::Full,
        "delta" => ecma_proto::v1::ImportType::Delta,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("type {other:?} is neither full nor delta")})),
            );
        }
    };
    // In a task of its own: an import goes on to its end (and lets go of its locks) even if the
    // client that asked for it hangs up.
    let imports = state.imports.clone();
    let run = tokio::spawn(async move { imports.run(&name, kind).await });
    let outcome = match run.await {
        Ok(outcome) => outcome,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": format!("the import was cut short: {e}")})),
            );
        }
    };
    match outcome {
        Ok(report) => (StatusCode::OK, Json(json!(report))),
        Err(e @ NotRun::Unknown(_)) => (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))),
        Err(e @ (NotRun::Unbound(_) | NotRun::Elsewhere(_))) => {
            (StatusCode::CONFLICT, Json(json!({"error": e.to_string()})))
        }
        Err(e @ NotRun::Failed(ImportError::Connector(_))) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()})))
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    }
}

async fn connectors(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let mut described = Vec::with_capacity(state.connectors.len());
    for c in &state.connectors {
        described.push(describe(
            c,
            state.store.count_pending(&c.name).await.ok(),
            state.imports.last(&c.name),
            state.imports.running(&c.name),
        ));
    }
    Json(json!({ "connectors": described, "store": store_status(&state.store) }))
}

/// The connector space as the admin API shows it: its engine (`sqlite`, `postgresql`), its state (`ready`, `degraded`, `failed`), the
/// reason, and the size of its files.
fn store_status(store: &crate::store::Store) -> Value {
    let health = store.health();
    json!({
        "engine": store.kind(),
        "state": health.name(),
        "reason": match &health {
            crate::store::Health::Ready => None,
            crate::store::Health::Degraded(r) | crate::store::Health::Failed(r) => Some(r.clone()),
        },
        "bytes": store.file_bytes(),
        "wal_peak_bytes": store.wal_peak_bytes(),
    })
}
