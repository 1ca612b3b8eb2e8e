//! The admin listener (loopback by default, no auth): `/healthz`, `/readyz`, `/metrics`,
//! `/admin/connectors` and `POST /admin/connectors/{name}/reset`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::supervision::{ConnectorHandle, Phase};

/// What the admin handlers see.
pub struct AdminState {
    pub reloader: Arc<crate::server::Reloader>,
    pub connectors: Vec<Arc<ConnectorHandle>>,
    pub metrics: PrometheusHandle,
    pub store: crate::store::Store,
    pub imports: Arc<crate::import::Imports>,
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
        .with_state(state)
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
    if !state.connectors.iter().any(|c| c.name == name) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no connector named {name:?}")})));
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
    let Some(handle) = state.connectors.iter().find(|c| c.name == name) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no connector named {name:?}")})));
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
