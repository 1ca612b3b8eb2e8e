//! The admin listener (loopback by default, no auth): `/healthz`, `/readyz` and
//! `/admin/connectors`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::supervision::{ConnectorHandle, Phase};

/// What the admin handlers see.
pub struct AdminState {
    pub connectors: Vec<Arc<ConnectorHandle>>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/admin/connectors", get(connectors))
        .with_state(state)
}

fn describe(handle: &ConnectorHandle) -> Value {
    let phase = handle.phase();
    let status = handle.status();
    let reason = match &phase {
        Phase::Degraded { reason, .. } | Phase::FailedConfig { reason } => Some(reason.clone()),
        _ => None,
    };
    json!({
        "name": handle.name,
        "state": phase.name(),
        "reason": reason,
        "pid": status.pid,
        "incarnation": status.incarnation,
        "restarts": status.restarts,
        "last_exit": status.last_exit,
        "last_error": status.last_error,
        "started_at": status.started_at,
        "protocol_version": status.protocol_version,
        "connector_version": status.connector_version,
        "object_type": handle.config.object_type,
        "partition": handle.config.partition,
        "recent_output": status.recent_output.iter().rev().take(10).rev().collect::<Vec<_>>(),
    })
}

/// 200 when every connector is ready, 503 with the ones that are not.
async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Value>) {
    let not_ready: Vec<Value> = state
        .connectors
        .iter()
        .filter(|c| !matches!(c.phase(), Phase::Ready(_)))
        .map(|c| json!({"name": c.name, "state": c.phase().name()}))
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "connectors": not_ready})))
    }
}

async fn connectors(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({"connectors": state.connectors.iter().map(|c| describe(c)).collect::<Vec<_>>()}))
}
