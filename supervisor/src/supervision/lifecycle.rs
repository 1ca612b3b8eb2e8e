//! The life of one connector: spawn, handshake, configuration checks, health, restart with
//! backoff, shutdown. One task per connector (one-for-one), driven by one `select!` over the
//! events that can happen to it: the child exits, a health tick, a kill request, shutdown.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ecma_proto::v1;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rand::Rng;
use tokio::process::Child;
use tokio::sync::watch;

use super::checks::{self, NotReady};
use super::client::{self, Health, Session};
use super::spawn::{self, Contract, Spawner};
use super::{ConnectorHandle, Phase, rfc3339};
use crate::config::RestartConfig;

/// How long a child whose call was lost may take to finish dying before it is killed.
const DYING_GRACE: Duration = Duration::from_millis(100);

/// Consecutive failed health checks before a child is killed.
const HEALTH_FAILURES_BEFORE_KILL: u32 = 3;

/// Consecutive health checks left without any answer (within `hang_probe_timeout`) before a
/// child is killed: fewer, since silence is a clearer sign than a failed answer.
const UNANSWERED_BEFORE_KILL: u32 = 2;

/// What the lifecycle tasks share.
#[derive(Clone)]
pub struct Context {
    pub spawner: Spawner,
    /// Directory for the children's sockets: ours alone (mode 0700).
    pub socket_dir: PathBuf,
    /// Working directory of the children (the data directory).
    pub working_dir: PathBuf,
    pub shutdown_timeout: Duration,
}

/// How an incarnation ended.
enum Ended {
    /// The child exited (or was killed) and should be restarted.
    Exited(String),
    /// The child refused its configuration: no restart until an operator resets it.
    BadConfig(String),
    /// Shutdown was asked for.
    Shutdown,
}

impl Ended {
    fn reason(&self) -> String {
        match self {
            Ended::Exited(reason) | Ended::BadConfig(reason) => reason.clone(),
            Ended::Shutdown => "shutting down".into(),
        }
    }
}

/// The restart history of one connector: decides between backoff and quarantine.
struct Restarts {
    policy: RestartConfig,
    attempt: u32,
    recent: VecDeque<Instant>,
    /// Set by a quarantine; cleared when an incarnation stays up for `reset_after`, or by an
    /// operator's reset. While set, any early exit quarantines again.
    quarantined: bool,
}

/// What to do after an incarnation ended.
enum Next {
    Backoff(Duration),
    Quarantine(Duration),
}

impl Restarts {
    fn new(policy: RestartConfig) -> Self {
        Self { policy, attempt: 0, recent: VecDeque::new(), quarantined: false }
    }

    fn clear(&mut self) {
        self.attempt = 0;
        self.recent.clear();
        self.quarantined = false;
    }

    /// Records an exit of an incarnation that ran for `uptime`.
    fn exited(&mut self, uptime: Duration, now: Instant) -> Next {
        if uptime >= self.policy.reset_after {
            self.clear();
        }
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > self.policy.window) {
            self.recent.pop_front();
        }
        if self.quarantined || self.recent.len() > self.policy.max_restarts {
            self.quarantined = true;
            return Next::Quarantine(self.policy.quarantine_probe);
        }
        // The first exit within the window is restarted at once, as an Erlang/OTP supervisor
        // does: a connector that was running normally costs its clients only the restart (spawn
        // and handshake, milliseconds). The backoff starts with the second exit in the window.
        if self.recent.len() == 1 {
            return Next::Backoff(Duration::ZERO);
        }
        let delay = backoff(self.policy.initial_backoff, self.policy.max_backoff, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        Next::Backoff(delay)
    }
}

/// Runs `handle`'s connector until `shutdown` turns true.
pub async fn run(handle: Arc<ConnectorHandle>, ctx: Context, mut shutdown: watch::Receiver<bool>) {
    let mut restarts = Restarts::new(handle.config.restart.clone());
    let mut incarnation: u64 = 0;
    let name = handle.name.clone();
    loop {
        incarnation += 1;
        handle.set_phase(Phase::Starting);
        metrics::gauge!("connector_up", "connector" => name.clone()).set(0.0);
        let started = Instant::now();
        let ended = run_incarnation(&handle, &ctx, &mut incarnation, &mut shutdown).await;
        metrics::gauge!("connector_up", "connector" => name.clone()).set(0.0);
        let wait = match ended {
            Ended::Shutdown => {
                handle.set_phase(Phase::Stopped);
                return;
            }
            Ended::BadConfig(reason) => {
                tracing::error!(connector = %name, %reason, "connector refused its configuration; not restarting it until an operator resets it (POST /admin/connectors/<name>/reset)");
                handle.update_status(|s| {
                    s.pid = None;
                    s.last_error = Some(reason.clone());
                });
                handle.set_phase(Phase::FailedConfig { reason });
                None
            }
            Ended::Exited(reason) => {
                let next = restarts.exited(started.elapsed(), Instant::now());
                let crash_report: Vec<String> =
                    handle.status().recent_output.iter().rev().take(10).rev().cloned().collect();
                metrics::counter!("connector_restarts_total", "connector" => name.clone()).increment(1);
                handle.update_status(|s| {
                    s.pid = None;
                    s.restarts += 1;
                    s.last_exit = Some(reason.clone());
                });
                match next {
                    Next::Backoff(delay) => {
                        tracing::warn!(
                            connector = %name, incarnation, %reason, restart_in = ?delay,
                            last_output = ?crash_report, "connector child ended; restarting"
                        );
                        handle.set_phase(Phase::Backoff { until: Instant::now() + delay });
                        Some(delay)
                    }
                    Next::Quarantine(delay) => {
                        tracing::error!(
                            connector = %name, incarnation, %reason, probe_in = ?delay,
                            last_output = ?crash_report,
                            "connector restarted too often; quarantined (POST /admin/connectors/{name}/reset to retry now)"
                        );
                        metrics::counter!("connector_quarantines_total", "connector" => name.clone())
                            .increment(1);
                        handle.update_status(|s| s.quarantines += 1);
                        handle.set_phase(Phase::Quarantined { until: Instant::now() + delay, reason });
                        Some(delay)
                    }
                }
            }
        };
        let sleep = async {
            match wait {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = handle.reset_requested() => restarts.clear(),
            _ = stopped(&mut shutdown) => {
                handle.set_phase(Phase::Stopped);
                return;
            }
        }
    }
}

/// Resolves once shutdown is asked for (the guard `wait_for` returns is not `Send`; it is
/// dropped here, not held across the caller's awaits).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Exponential backoff with full jitter in [d/2, d].
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(max);
    let half = exp / 2;
    half + exp.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
}

fn new_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A child spawned for one incarnation: its process and its socket.
struct Spawned {
    child: Child,
    socket: PathBuf,
    token: String,
    executable: PathBuf,
}

/// Spawns the child of `incarnation` (the executable is looked up anew: an upgrade on disk is
/// what starts).
async fn spawn_child(
    handle: &Arc<ConnectorHandle>,
    ctx: &Context,
    incarnation: u64,
) -> Result<Spawned, Ended> {
    let executable = match spawn::resolve_executable(&handle.launch_config().executable) {
        Ok(path) => path,
        Err(e) => return Err(Ended::BadConfig(format!("executable: {e:#}"))),
    };
    let socket = ctx.socket_dir.join(format!("{}-{incarnation}.sock", handle.name));
    let _ = std::fs::remove_file(&socket);
    let token = new_token();
    let contract = Contract { socket: &socket, token: &token, incarnation, working_dir: &ctx.working_dir };
    let mut child = match ctx.spawner.spawn(spawn::command(handle, &executable, &contract)).await {
        Ok(child) => child,
        Err(e) => return Err(Ended::Exited(format!("could not start {}: {e}", executable.display()))),
    };
    spawn::drain_output(handle, &mut child, incarnation);
    tracing::info!(connector = %handle.name, incarnation, pid = child.id(), executable = %executable.display(), "connector child started");
    Ok(Spawned { child, socket, token, executable })
}

fn record_started(handle: &ConnectorHandle, spawned: &Spawned, incarnation: u64) {
    let pid = spawned.child.id();
    handle.update_status(|s| {
        s.pid = pid;
        s.incarnation = incarnation;
        s.started_at = Some(rfc3339(SystemTime::now()));
    });
}

async fn run_incarnation(
    handle: &Arc<ConnectorHandle>,
    ctx: &Context,
    incarnation: &mut u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut spawned = match spawn_child(handle, ctx, *incarnation).await {
        Ok(spawned) => spawned,
        Err(ended) => return ended,
    };
    record_started(handle, &spawned, *incarnation);
    let ended = serve_incarnation(handle, ctx, &mut spawned, incarnation, shutdown).await;
    let _ = std::fs::remove_file(&spawned.socket);
    ended
}

/// The handshake and the configuration checks of a spawned child: its session, and whether it
/// is ready or degraded. `Err`: it ended (exited, refused, timed out).
async fn launch(
    handle: &Arc<ConnectorHandle>,
    ctx: &Context,
    spawned: &mut Spawned,
    incarnation: u64,
    reloading: bool,
) -> Result<(Arc<Session>, Result<(), String>), Ended> {
    let (socket, token, child) = (&spawned.socket, &spawned.token, &mut spawned.child);
    // Handshake: connect and Hello until it answers, while watching for the child exiting and
    // for the start-up deadline.
    let handshake = async {
        // The socket appears a few milliseconds after the spawn (a spawn and Hello take 3 ms
        // here): tried again after 1 ms, then doubling up to 25 ms, so that a restart is not
        // held up by the polling.
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok((mut client, health)) = client::connect(socket.to_path_buf(), token).await {
                let hello = v1::HelloRequest {
                    supported_protocol_versions: ecma_proto::PROTOCOL_VERSIONS.to_vec(),
                    connector_name: handle.name.clone(),
                    incarnation,
                };
                match client.hello(hello).await {
                    Ok(r) => return Ok((client, health, r.into_inner())),
                    // No common protocol version: retrying will not help.
                    Err(status) if status.code() == tonic::Code::FailedPrecondition => return Err(status),
                    // The child is not quite ready, or dying (its exit is seen below): retry.
                    Err(_) => {}
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    };
    let (client, health, hello) = tokio::select! {
        result = handshake => match result {
            Ok(ok) => ok,
            Err(status) => {
                stop_child(child, ctx.shutdown_timeout).await;
                return Err(Ended::BadConfig(format!("handshake refused: {}", status.message())));
            }
        },
        status = child.wait() => return Err(exited(status)),
        _ = tokio::time::sleep(handle.config.startup_timeout) => {
            kill_group(child);
            let _ = child.wait().await;
            return Err(Ended::Exited(format!("no handshake within {:?}", handle.config.startup_timeout)));
        }
    };
    if !ecma_proto::PROTOCOL_VERSIONS.contains(&hello.protocol_version) {
        stop_child(child, ctx.shutdown_timeout).await;
        return Err(Ended::BadConfig(format!(
            "the connector chose protocol version {}, which this supervisor does not speak (it speaks {:?}); \
             upgrade the connector or the supervisor",
            hello.protocol_version,
            ecma_proto::PROTOCOL_VERSIONS
        )));
    }
    let versions = (hello.protocol_version, format!("{} {}", hello.connector_name, hello.connector_version));
    let record_versions = || {
        handle.update_status(|s| {
            s.protocol_version = Some(versions.0);
            s.connector_version = Some(versions.1.clone());
        })
    };
    // What answered is shown at once, even if it then refuses its configuration; a reload's new
    // incarnation only once it serves (the old one's versions stand until then).
    if !reloading {
        record_versions();
    }
    let config =
        v1::ConfigParameters { values: handle.launch_config().parameter_values().into_iter().collect() };
    let session = Arc::new(Session::new(incarnation, hello, config, client, health, handle));
    // Configuration checks, racing the child's exit.
    let checked = tokio::select! {
        checked = checks::check(handle, &session) => checked,
        status = child.wait() => return Err(exited(status)),
    };
    let ready = match checked {
        Ok(()) => Ok(()),
        Err(NotReady::Degraded(reason)) => Err(reason),
        Err(NotReady::BadConfig(reason)) => {
            stop_child(child, ctx.shutdown_timeout).await;
            return Err(Ended::BadConfig(reason));
        }
    };
    if reloading {
        record_versions();
    }
    Ok((session, ready))
}

/// Makes `session` the one calls go to: ready, or degraded with the reason.
fn serve_with(handle: &ConnectorHandle, session: &Arc<Session>, ready: Result<(), String>) {
    match ready {
        Ok(()) => {
            tracing::info!(connector = %handle.name, incarnation = session.incarnation, protocol = session.protocol_version, "connector ready");
            metrics::gauge!("connector_up", "connector" => handle.name.clone()).set(1.0);
            handle.set_phase(Phase::Ready(session.clone()));
        }
        Err(reason) => {
            tracing::warn!(connector = %handle.name, %reason, "connector's target is not reachable; degraded");
            handle.set_phase(Phase::Degraded { session: session.clone(), reason });
        }
    }
}

/// Starts the next incarnation beside the serving one. On success the new one serves and the
/// old one is drained (its calls in flight finish) and stopped in the background; on failure
/// the old one goes on serving, and the reason is returned.
async fn reload(
    handle: &Arc<ConnectorHandle>,
    ctx: &Context,
    serving: &mut Spawned,
    session: &mut Arc<Session>,
    incarnation: &mut u64,
) -> Result<u64, String> {
    let next = *incarnation + 1;
    tracing::info!(connector = %handle.name, incarnation = next, "reload: starting a new incarnation beside the serving one");
    let mut spawned = spawn_child(handle, ctx, next).await.map_err(|e| e.reason())?;
    let (new_session, ready) = match launch(handle, ctx, &mut spawned, next, true).await {
        Ok(launched) => launched,
        Err(ended) => {
            let _ = std::fs::remove_file(&spawned.socket);
            let reason =
                format!("the new incarnation did not start, the old one goes on serving: {}", ended.reason());
            tracing::error!(connector = %handle.name, %reason, "reload failed");
            handle.update_status(|s| s.last_error = Some(reason.clone()));
            return Err(reason);
        }
    };
    *incarnation = next;
    record_started(handle, &spawned, next);
    serve_with(handle, &new_session, ready);
    let old_session = std::mem::replace(session, new_session);
    let old = std::mem::replace(serving, spawned);
    let (name, grace, drain) = (handle.name.clone(), ctx.shutdown_timeout, handle.config.call_timeout);
    tokio::spawn(async move {
        // Calls already on the old incarnation finish there (their callers hold the session).
        let deadline = Instant::now() + drain;
        while Arc::strong_count(&old_session) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut old = old;
        stop_child(&mut old.child, grace).await;
        let _ = std::fs::remove_file(&old.socket);
        tracing::info!(connector = %name, incarnation = old_session.incarnation, executable = %old.executable.display(), "reload: the old incarnation is drained and stopped");
    });
    Ok(next)
}

async fn serve_incarnation(
    handle: &Arc<ConnectorHandle>,
    ctx: &Context,
    spawned: &mut Spawned,
    incarnation: &mut u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let launched = tokio::select! {
        launched = launch(handle, ctx, spawned, *incarnation, false) => Some(launched),
        _ = stopped(shutdown) => None,
    };
    let (mut session, ready) = match launched {
        Some(Ok(launched)) => launched,
        Some(Err(ended)) => return ended,
        None => {
            stop_child(&mut spawned.child, ctx.shutdown_timeout).await;
            return Ended::Shutdown;
        }
    };
    serve_with(handle, &session, ready);

    let mut tick = tokio::time::interval(handle.config.health_interval);
    // A check that waits out its deadline delays the next one rather than bunching them up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let (mut failures, mut unanswered) = (0u32, 0u32);
    loop {
        let child = &mut spawned.child;
        tokio::select! {
            status = child.wait() => return exited(status),
            _ = handle.kill_requested(*incarnation) => {
                // A child that is dying (which is why the call was lost: its sockets close a
                // moment before it can be reaped) reports its own end.
                if let Ok(status) = tokio::time::timeout(DYING_GRACE, child.wait()).await {
                    return exited(status);
                }
                kill_group(child);
                let _ = child.wait().await;
                return Ended::Exited(format!("killed: {}", handle.kill_reason()));
            }
            replies = handle.reload_requested() => {
                let outcome = reload(handle, ctx, spawned, &mut session, incarnation).await;
                if outcome.is_ok() {
                    (failures, unanswered) = (0, 0);
                }
                for reply in replies {
                    let _ = reply.send(outcome.clone());
                }
            }
            _ = tick.tick() => {
                let health = session.check_health(handle.config.hang_probe_timeout).await;
                match &health {
                    Health::Serving => (failures, unanswered) = (0, 0),
                    Health::NoAnswer(_) => (failures, unanswered) = (failures + 1, unanswered + 1),
                    Health::NotServing | Health::Failed(_) => (failures, unanswered) = (failures + 1, 0),
                }
                if unanswered >= UNANSWERED_BEFORE_KILL || failures >= HEALTH_FAILURES_BEFORE_KILL {
                    tracing::warn!(connector = %handle.name, incarnation = *incarnation, ?health, failures, "health checks failed; killing the child");
                    kill_group(child);
                    let _ = child.wait().await;
                    return Ended::Exited(match health {
                        Health::NoAnswer(within) => {
                            format!("killed: {unanswered} health checks in a row got no answer within {within:?}")
                        }
                        _ => format!("killed: {failures} health checks failed"),
                    });
                }
                // A degraded connector becomes ready again once its target answers and passes
                // the checks it could not pass while it was down.
                if let Phase::Degraded { .. } = handle.phase() {
                    match checks::check(handle, &session).await {
                        Ok(()) => {
                            tracing::info!(connector = %handle.name, "target reachable again; ready");
                            handle.set_phase(Phase::Ready(session.clone()));
                        }
                        Err(NotReady::Degraded(reason)) => {
                            handle.set_phase(Phase::Degraded { session: session.clone(), reason })
                        }
                        Err(NotReady::BadConfig(reason)) => {
                            stop_child(child, ctx.shutdown_timeout).await;
                            return Ended::BadConfig(reason);
                        }
                    }
                }
            }
            _ = stopped(shutdown) => {
                handle.set_phase(Phase::Stopped);
                stop_child(child, ctx.shutdown_timeout).await;
                return Ended::Shutdown;
            }
        }
    }
}

fn exited(status: std::io::Result<std::process::ExitStatus>) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.code() == Some(ecma_proto::EXIT_CONFIG) => {
            Ended::BadConfig("the connector exited with EX_CONFIG (78): bad configuration".into())
        }
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Ended::Exited(format!("exited with code {code}")),
            (None, Some(signal)) => Ended::Exited(format!(
                "killed by signal {}",
                Signal::try_from(signal)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| signal.to_string())
            )),
            _ => Ended::Exited(format!("ended: {s}")),
        },
        Err(e) => Ended::Exited(format!("could not wait for the child: {e}")),
    }
}

/// SIGKILL to the child's whole process group.
fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// SIGTERM to the group, then SIGKILL after `grace`.
pub async fn stop_child(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id().map(|pid| Pid::from_raw(pid as i32)) else { return };
    let _ = killpg(pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group goes too.
    let _ = killpg(pid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..10 {
            let d = backoff(initial, max, attempt);
            let full = initial.saturating_mul(1 << attempt).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
        }
        assert!(backoff(initial, max, 1000) <= max);
    }

    #[test]
    fn too_many_restarts_in_the_window_quarantine_until_a_stable_run() {
        let policy = RestartConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            reset_after: Duration::from_secs(10),
            max_restarts: 3,
            window: Duration::from_secs(60),
            quarantine_probe: Duration::from_secs(300),
        };
        let mut r = Restarts::new(policy);
        let t0 = Instant::now();
        let short = Duration::from_millis(50);
        for i in 0..3 {
            let next = r.exited(short, t0 + Duration::from_secs(i));
            match next {
                Next::Backoff(d) if i == 0 => {
                    assert_eq!(d, Duration::ZERO, "the first exit restarts at once")
                }
                Next::Backoff(d) => assert!(d >= Duration::from_millis(50), "restart {i}: backoff {d:?}"),
                Next::Quarantine(_) => panic!("restart {i} quarantined"),
            }
        }
        assert!(
            matches!(r.exited(short, t0 + Duration::from_secs(3)), Next::Quarantine(d) if d == Duration::from_secs(300))
        );
        // The probe, long after the window, crashes early again: still quarantined.
        assert!(matches!(r.exited(short, t0 + Duration::from_secs(400)), Next::Quarantine(_)));
        // A probe that stays up for reset_after ends the quarantine.
        assert!(matches!(r.exited(Duration::from_secs(11), t0 + Duration::from_secs(800)), Next::Backoff(_)));
        // Restarts spread wider than the window never quarantine.
        let mut r = Restarts::new(r.policy.clone());
        for i in 0..10 {
            assert!(matches!(r.exited(short, t0 + Duration::from_secs(61 * i)), Next::Backoff(_)));
        }
    }

    /// A crash loop reaches quarantine no later than before the first restart became immediate:
    /// the delays before it add up to at most 0 + 100 + 200 ms, where they were at least 50 +
    /// 100 + 200 ms (each backoff is jittered in [d/2, d]).
    #[test]
    fn a_crash_loop_is_quarantined_no_later_than_with_a_first_backoff() {
        let policy = RestartConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
            max_restarts: 3,
            window: Duration::from_secs(60),
            quarantine_probe: Duration::from_secs(300),
        };
        for _ in 0..100 {
            let mut r = Restarts::new(policy.clone());
            let mut now = Instant::now();
            let mut waited = Duration::ZERO;
            while let Next::Backoff(d) = r.exited(Duration::from_millis(5), now) {
                waited += d;
                now += d + Duration::from_millis(5);
            }
            let before = Duration::from_millis(50 + 100 + 200);
            assert!(waited < before, "{waited:?} of backoff before quarantine (at least {before:?} before)");
        }
    }

    #[test]
    fn tokens_are_fresh_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
