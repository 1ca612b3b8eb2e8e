//! Supervision of connector child processes, one-for-one: each configured connector has a
//! [`ConnectorHandle`] (its state, shared with the SCIM and admin layers) and a task that spawns
//! the child, waits for the handshake, checks its health, and restarts it with backoff.
//!
//! - [`spawn`]: starting a child the careful way (process group, cleared environment, parent
//!   death signal, output drained into our log).
//! - [`client`]: the gRPC client over the child's Unix socket, with deadlines and typed errors.
//! - [`lifecycle`]: the per-connector loop (handshake, checks, health, restart, shutdown).

pub mod checks;
pub mod client;
pub mod lifecycle;
pub mod spawn;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::ConnectorConfig;
use crate::mapping::Mapping;
pub use client::{CallError, Session};

/// How many output lines of a child are kept for its crash report.
const KEPT_LINES: usize = 50;

/// Where a connector is in its life.
#[derive(Clone)]
pub enum Phase {
    /// A child is being spawned or is doing its handshake.
    Starting,
    /// Ready to serve calls.
    Ready(Arc<Session>),
    /// Alive, but its target is not reachable: SCIM answers 503 until it is.
    Degraded { session: Arc<Session>, reason: String },
    /// Waiting before the next restart.
    Backoff { until: Instant },
    /// Refused its configuration (or exited with EX_CONFIG): not restarted until it changes.
    FailedConfig { reason: String },
    /// Stopped by shutdown.
    Stopped,
}

impl Phase {
    /// The state's name, as the admin API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready(_) => "ready",
            Phase::Degraded { .. } => "degraded",
            Phase::Backoff { .. } => "backoff",
            Phase::FailedConfig { .. } => "failed_config",
            Phase::Stopped => "stopped",
        }
    }
}

/// Facts about a connector for the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub pid: Option<u32>,
    pub incarnation: u64,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
    pub started_at: Option<String>,
    pub protocol_version: Option<u32>,
    pub connector_version: Option<String>,
    #[serde(skip)]
    pub recent_output: VecDeque<String>,
}

/// A connector as the rest of the supervisor sees it.
pub struct ConnectorHandle {
    pub name: String,
    pub config: Arc<ConnectorConfig>,
    pub mapping: Mapping,
    phase: watch::Sender<Phase>,
    status: Mutex<Status>,
    /// Asks the lifecycle task to kill the current child (deadline overrun).
    kill: Notify,
}

impl ConnectorHandle {
    /// A handle for a connector that has not started yet.
    pub fn new(name: String, config: ConnectorConfig) -> anyhow::Result<Self> {
        let mapping = Mapping::new(&config.attributes)?;
        Ok(Self {
            name,
            config: Arc::new(config),
            mapping,
            phase: watch::Sender::new(Phase::Starting),
            status: Mutex::new(Status::default()),
            kill: Notify::new(),
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    pub(crate) fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    pub(crate) fn remember_output(&self, line: String) {
        self.update_status(|s| {
            if s.recent_output.len() == KEPT_LINES {
                s.recent_output.pop_front();
            }
            s.recent_output.push_back(line);
        });
    }

    /// The live session, or why there is none and when to try again.
    pub fn session(&self) -> Result<Arc<Session>, CallError> {
        match &*self.phase.borrow() {
            Phase::Ready(session) => Ok(session.clone()),
            other => {
                Err(CallError::Unavailable { retry_after: self.retry_after(other), reason: other.name() })
            }
        }
    }

    /// Waits up to `timeout` for the connector to be ready.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<Session>, CallError> {
        let mut rx = self.phase.subscribe();
        let ready = tokio::time::timeout(timeout, rx.wait_for(|p| matches!(p, Phase::Ready(_)))).await;
        match ready {
            Ok(Ok(_)) => self.session(),
            _ => self.session(),
        }
    }

    /// A client's advice on when to retry, for `Retry-After`.
    fn retry_after(&self, phase: &Phase) -> Duration {
        match phase {
            Phase::Backoff { until } => {
                until.saturating_duration_since(Instant::now()) + Duration::from_secs(1)
            }
            Phase::Starting => Duration::from_secs(2),
            Phase::Degraded { .. } => self.config.health_interval.max(Duration::from_secs(1)),
            _ => Duration::from_secs(30),
        }
    }

    /// Asks for the current child to be killed and restarted.
    pub(crate) fn request_kill(&self) {
        self.kill.notify_one();
    }

    pub(crate) async fn kill_requested(&self) {
        self.kill.notified().await
    }
}

/// RFC 3339 text for a time.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
