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

use ecma_proto::v1;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::ConnectorConfig;
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
    /// Restarted too often: tried again only at `until`, or when an operator resets it.
    Quarantined { until: Instant, reason: String },
    /// Refused its configuration (or exited with EX_CONFIG): not restarted until an operator
    /// resets it.
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
            Phase::Quarantined { .. } => "quarantined",
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
    pub quarantines: u64,
    /// Entries of another object type or partition that the connector returned (rejected).
    pub rejected_entries: u64,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
    pub started_at: Option<String>,
    pub protocol_version: Option<u32>,
    pub connector_version: Option<String>,
    #[serde(skip)]
    pub recent_output: VecDeque<String>,
}

/// What the layer above checks of a connector's schema when it starts (its attribute mapping's
/// targets, say): `Err` says why the configuration does not fit the connector.
pub type SchemaCheck = Box<dyn Fn(&v1::SchemaType) -> Result<(), String> + Send + Sync>;

/// A connector as the rest of the supervisor sees it.
pub struct ConnectorHandle {
    pub name: String,
    pub config: Arc<ConnectorConfig>,
    /// The connector's schema of its object type (from GetSchema at start-up).
    schema: std::sync::RwLock<Arc<v1::SchemaType>>,
    /// Checked against that schema at each start (a failure is a configuration error).
    schema_check: SchemaCheck,
    phase: watch::Sender<Phase>,
    status: Mutex<Status>,
    /// Asks the lifecycle task to kill the child of the incarnation in `kill_incarnation`.
    kill: Notify,
    kill_incarnation: std::sync::atomic::AtomicU64,
    /// Why the kill was asked for (a lost call, an overrun deadline, a hang), for `last_exit`.
    kill_reason: Mutex<String>,
    /// An operator's reset: leave quarantine or failed_config and start again now.
    reset: Notify,
    /// Reload requests (a new incarnation beside the serving one), each with where its outcome
    /// goes: the new incarnation's number, or why the old one goes on serving.
    reloads: Mutex<Vec<tokio::sync::oneshot::Sender<Result<u64, String>>>>,
    reload: Notify,
    /// How the next incarnation is started (executable, arguments, environment, parameters):
    /// the configuration at start-up, or as a reload re-read it.
    launch: std::sync::RwLock<Arc<ConnectorConfig>>,
    /// Write results in a row that said the target could not take them for now (locked, full,
    /// timed out), with no success between.
    passing_failures: std::sync::atomic::AtomicU32,
}

/// Write results in a row, each saying the target cannot take writes for now, that make a
/// connector degraded (one such result may be a single row's lock or deadlock).
const PASSING_FAILURES_TO_DEGRADE: u32 = 3;

impl ConnectorHandle {
    /// A handle for a connector that has not started yet; `schema_check` is run on its schema
    /// at each start.
    pub fn new(name: String, config: ConnectorConfig, schema_check: SchemaCheck) -> Self {
        let config = Arc::new(config);
        Self {
            name,
            launch: std::sync::RwLock::new(config.clone()),
            config,
            schema: std::sync::RwLock::new(Arc::new(v1::SchemaType::default())),
            schema_check,
            phase: watch::Sender::new(Phase::Starting),
            status: Mutex::new(Status::default()),
            kill: Notify::new(),
            kill_incarnation: std::sync::atomic::AtomicU64::new(0),
            kill_reason: Mutex::new(String::new()),
            reset: Notify::new(),
            reloads: Mutex::new(Vec::new()),
            reload: Notify::new(),
            passing_failures: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The connector's schema of its object type, as it declared it at its last start (empty
    /// before the first).
    pub fn schema(&self) -> Arc<v1::SchemaType> {
        self.schema.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_schema(&self, schema: v1::SchemaType) {
        *self.schema.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(schema);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Phase changes, for whoever must act when the connector becomes ready.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Notes a write result: a success, or a failure that says the target cannot take writes
    /// for now (`connection_lost`: it is unreachable, which degrades at once; otherwise locked,
    /// full or timed out, which degrades after [`PASSING_FAILURES_TO_DEGRADE`] in a row, so that
    /// one row's lock or deadlock does not hold up every other write).
    pub fn note_write(&self, failure: Option<(bool, String)>) {
        use std::sync::atomic::Ordering;
        match failure {
            None => self.passing_failures.store(0, Ordering::Relaxed),
            Some((connection_lost, reason)) => {
                let in_a_row = self.passing_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if connection_lost || in_a_row >= PASSING_FAILURES_TO_DEGRADE {
                    self.passing_failures.store(0, Ordering::Relaxed);
                    self.degrade(reason);
                }
            }
        }
    }

    /// Marks a ready connector degraded because its target failed a write for a passing reason
    /// (unreachable, locked, full, timed out): SCIM answers 503 with Retry-After until the next
    /// health tick finds the target fit again (the checks it passed at start, run again).
    pub fn degrade(&self, reason: String) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Ready(session) => {
                tracing::warn!(connector = %self.name, %reason, "the target failed a write for a passing reason; degraded until a health check passes");
                metrics::counter!("connector_degradations_total", "connector" => self.name.clone()).increment(1);
                *phase = Phase::Degraded { session: session.clone(), reason };
                true
            }
            _ => false,
        });
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

    /// Waits up to `timeout` for the connector to be ready. Gives up at once when it cannot be
    /// ready within `timeout`: a backoff that ends later, quarantine, a refused configuration,
    /// shutdown. The error says when to try again.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<Session>, CallError> {
        let deadline = Instant::now() + timeout;
        let settled = |phase: &Phase| match phase {
            Phase::Ready(_) => true,
            Phase::Backoff { until } => *until > deadline,
            Phase::Quarantined { .. } | Phase::FailedConfig { .. } | Phase::Stopped => true,
            Phase::Starting | Phase::Degraded { .. } => false,
        };
        let mut rx = self.phase.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(settled)).await;
        self.session()
    }

    /// A client's advice on when to retry, for `Retry-After`.
    fn retry_after(&self, phase: &Phase) -> Duration {
        match phase {
            Phase::Backoff { until } | Phase::Quarantined { until, .. } => {
                until.saturating_duration_since(Instant::now()) + Duration::from_secs(1)
            }
            Phase::Starting => Duration::from_secs(2),
            Phase::Degraded { .. } => self.config.health_interval.max(Duration::from_secs(1)),
            _ => Duration::from_secs(30),
        }
    }

    /// Asks for the child of `incarnation` to be killed and restarted, with the reason. It stops
    /// being offered to callers at once, so that nobody (a reconciliation in particular) uses it
    /// meanwhile.
    pub(crate) fn request_kill(&self, incarnation: u64, reason: &str) {
        let current = match &*self.phase.borrow() {
            Phase::Ready(s) | Phase::Degraded { session: s, .. } => s.incarnation == incarnation,
            _ => false,
        };
        if current {
            tracing::warn!(connector = %self.name, incarnation, reason, "killing the child");
            *self.kill_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
            self.set_phase(Phase::Starting);
            self.kill_incarnation.store(incarnation, std::sync::atomic::Ordering::SeqCst);
            self.kill.notify_one();
        }
    }

    /// Why the last kill was asked for.
    pub(crate) fn kill_reason(&self) -> String {
        self.kill_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves when a kill of `incarnation` is asked for (requests for earlier incarnations,
    /// which may still be pending, are ignored).
    pub(crate) async fn kill_requested(&self, incarnation: u64) {
        loop {
            self.kill.notified().await;
            if self.kill_incarnation.load(std::sync::atomic::Ordering::SeqCst) == incarnation {
                return;
            }
        }
    }

    /// An operator's reset. Returns false (and does nothing) unless the connector is waiting to
    /// restart: quarantined, failed_config, or in backoff.
    pub fn reset(&self) -> bool {
        let waiting = matches!(
            self.phase(),
            Phase::Quarantined { .. } | Phase::FailedConfig { .. } | Phase::Backoff { .. }
        );
        if waiting {
            tracing::info!(connector = %self.name, "reset by an operator");
            self.reset.notify_one();
        }
        waiting
    }

    pub(crate) async fn reset_requested(&self) {
        self.reset.notified().await
    }

    /// Asks for a reload: a new incarnation (the executable as it is on disk now) is started
    /// beside the serving one and takes over once ready; the old one is drained and stopped.
    /// The answer: the new incarnation's number, or why the old one goes on serving. Only a
    /// serving connector (ready or degraded) reloads; others are refused at once.
    pub fn request_reload(&self) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.phase() {
            Phase::Ready(_) | Phase::Degraded { .. } => {
                self.reloads.lock().expect("reloads lock").push(reply);
                self.reload.notify_one();
            }
            other => {
                let _ = reply.send(Err(format!(
                    "the connector is {}; only a serving connector is reloaded (a stopped one starts with what is on disk)",
                    other.name()
                )));
            }
        }
        answer
    }

    /// How the next incarnation starts: executable, arguments, environment and parameters.
    pub fn launch_config(&self) -> Arc<ConnectorConfig> {
        self.launch.read().expect("launch lock").clone()
    }

    /// Takes the executable, arguments, environment and parameters of a re-read configuration
    /// for the next incarnation. What decides where objects go (object type, partition, the
    /// attribute mapping) cannot change under a running supervisor: that is refused, and needs a
    /// restart.
    pub fn set_launch_config(&self, new: &ConnectorConfig) -> Result<(), String> {
        let current = &self.config;
        let mut changed = Vec::new();
        if new.object_type != current.object_type {
            changed.push("object_type");
        }
        if new.partition != current.partition {
            changed.push("partition");
        }
        if new.attributes != current.attributes {
            changed.push("attributes");
        }
        if new.match_attribute != current.match_attribute {
            changed.push("match_attribute");
        }
        if !changed.is_empty() {
            return Err(format!(
                "connectors.{}: {} changed; that needs a restart of the supervisor (a reload takes the \
                 executable, args, env and parameters)",
                self.name,
                changed.join(", ")
            ));
        }
        *self.launch.write().expect("launch lock") = Arc::new(new.clone());
        Ok(())
    }

    /// Puts back launch settings (after a reload that failed).
    pub fn restore_launch_config(&self, previous: Arc<ConnectorConfig>) {
        *self.launch.write().expect("launch lock") = previous;
    }

    /// [`Self::request_reload`], waiting for its outcome.
    pub async fn reload(&self) -> Result<u64, String> {
        self.request_reload()
            .await
            .unwrap_or_else(|_| Err("the connector stopped (or restarted) before the reload finished".into()))
    }

    /// Resolves with the pending reload requests when there are any.
    pub(crate) async fn reload_requested(&self) -> Vec<tokio::sync::oneshot::Sender<Result<u64, String>>> {
        loop {
            self.reload.notified().await;
            let pending = std::mem::take(&mut *self.reloads.lock().expect("reloads lock"));
            if !pending.is_empty() {
                return pending;
            }
        }
    }

    /// Counts entries the connector returned for another object type or partition.
    pub(crate) fn reject_entries(&self, count: usize, what: &str) {
        if count == 0 {
            return;
        }
        tracing::warn!(connector = %self.name, count, what, "rejected entries of another object type or partition");
        metrics::counter!("connector_rejected_entries_total", "connector" => self.name.clone())
            .increment(count as u64);
        self.update_status(|s| s.rejected_entries += count as u64);
    }
}

/// RFC 3339 text for a time.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> ConnectorHandle {
        let text = crate::config::tests::MINIMAL;
        let config = crate::config::Config::parse(text, std::path::Path::new("/nowhere"), &|_| None)
            .expect("a valid configuration");
        ConnectorHandle::new("people".into(), config.connectors["people"].clone(), Box::new(|_| Ok(())))
    }

    #[tokio::test]
    async fn waiting_for_readiness_gives_up_at_once_when_it_cannot_come_in_time() {
        let handle = handle();
        // A restart due after the wait: no point waiting; the advice is the backoff's end.
        handle.set_phase(Phase::Backoff { until: Instant::now() + Duration::from_secs(60) });
        let started = Instant::now();
        let error = handle.wait_ready(Duration::from_secs(10)).await.err().expect("not ready");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(error, CallError::Unavailable { retry_after, reason: "backoff" } if retry_after > Duration::from_secs(59)),
            "{error:?}"
        );
        for phase in [
            Phase::Quarantined { until: Instant::now(), reason: "crash loop".into() },
            Phase::FailedConfig { reason: "bad".into() },
            Phase::Stopped,
        ] {
            handle.set_phase(phase);
            let started = Instant::now();
            assert!(handle.wait_ready(Duration::from_secs(10)).await.is_err());
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        // Starting, or a backoff that ends within the wait: it waits the whole time for readiness.
        for phase in [Phase::Starting, Phase::Backoff { until: Instant::now() + Duration::from_millis(10) }] {
            handle.set_phase(phase);
            let started = Instant::now();
            assert!(handle.wait_ready(Duration::from_millis(200)).await.is_err());
            assert!(started.elapsed() >= Duration::from_millis(200));
        }
    }
}
