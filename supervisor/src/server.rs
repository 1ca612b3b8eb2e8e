//! Putting it together: the store, the connectors, the SCIM and admin listeners, and an orderly
//! shutdown (stop taking requests, drain them, stop the children, close the store).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::config::{AppConfig, Config};
use crate::import::{Binding, Imports, NotRun as NotRunOf};
use crate::provision::{Provisioner, Target};
use crate::scim::{App, ScimState, Tokens};
use crate::store::Store;
use crate::supervision::lifecycle::{self, Context as LifecycleContext};
use crate::supervision::spawn::Spawner;
use crate::supervision::{ConnectorHandle, Phase};
use ecma_proto::v1::ImportType;

/// Longest Unix socket path we create (the kernel's limit is 107 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// Where the supervisor listens and keeps its files.
pub struct RunOptions {
    /// The configuration file, read again by a reload.
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

/// Splits a token list: whitespace or commas between tokens (a file holds one per line).
fn split_tokens(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves an app's bearer tokens: from the environment variable and the file together (one
/// or more each, for rotation), else the insecure default (with a warning).
pub fn resolve_tokens(name: &str, app: &AppConfig) -> anyhow::Result<Tokens> {
    let mut tokens =
        read_tokens(app.token_env.as_deref(), app.token_file.as_deref(), &format!("apps.{name}"))?;
    if tokens.is_empty() {
        let Some(default) = &app.insecure_default_token else {
            bail!(
                "apps.{name}: no bearer token: set the environment variable {} or token_file",
                app.token_env.as_deref().unwrap_or("named by token_env")
            );
        };
        tracing::warn!(
            app = name,
            "using the built-in default bearer token: for trying things out only; set {} to a secret of your own",
            app.token_env.as_deref().unwrap_or("token_env")
        );
        tokens.push(default.clone());
    }
    Tokens::new(tokens).map_err(|e| {
        anyhow::anyhow!("apps.{name}: {e}; use long random tokens (`supervisor token generate`)")
    })
}

/// The tokens of an environment variable and a file together (`section` names them in errors).
fn read_tokens(var: Option<&str>, file: Option<&Path>, section: &str) -> anyhow::Result<Vec<String>> {
    let mut tokens: Vec<String> =
        var.and_then(|var| std::env::var(var).ok()).map(|v| split_tokens(&v)).unwrap_or_default();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{section}.token_file: cannot read {}", file.display()))?;
        tokens.extend(split_tokens(&text));
    }
    Ok(tokens)
}

/// The admin tokens: from `[admin] token_env` (default `ADMIN_TOKEN`) and `token_file`;
/// `None` when neither holds one (the admin listener then answers loopback clients only).
pub fn resolve_admin_tokens(admin: &crate::config::AdminConfig) -> anyhow::Result<Option<Tokens>> {
    let tokens = read_tokens(Some(&admin.token_env), admin.token_file.as_deref(), "admin")?;
    if tokens.is_empty() {
        return Ok(None);
    }
    Tokens::new(tokens).map(Some).map_err(|e| {
        anyhow::anyhow!("admin tokens ({} or admin.token_file): {e}; use long random tokens (`supervisor token generate`)", admin.token_env)
    })
}

/// A directory only we can enter, for the children's sockets; stale sockets of an earlier run
/// are removed (a supervisor never re-attaches to children of an earlier run).
fn socket_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // systemd's RuntimeDirectory= (emptied when the service stops) where there is one, else
    // the data directory's run/.
    let preferred = std::env::var_os("RUNTIME_DIRECTORY")
        .map(|d| PathBuf::from(d).join("sockets"))
        .unwrap_or_else(|| data_dir.join("run"));
    // Leave room for "<connector name>-<incarnation>.sock".
    let dir = if preferred.as_os_str().len() + 40 <= MAX_SOCKET_PATH {
        preferred
    } else {
        std::env::temp_dir().join(format!("ecma-supervisor-{}", nix::unistd::getuid()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("while creating the socket directory {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("while restricting {}", dir.display()))?;
    for entry in std::fs::read_dir(&dir)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "sock") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(dir)
}

/// The connector space's file in the data directory.
pub const STORE_FILE: &str = "connector-space.db";

/// Left by `supervisor store rebuild`: the next start imports every connector in full.
pub const REBUILD_MARKER: &str = "connector-space.rebuild";

/// Held (an exclusive `flock`) by the supervisor that uses a data directory, for as long as it
/// runs: a second supervisor on the same directory, or `store rebuild` under a running one, is
/// refused.
pub struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Takes the data directory's lock, or says who holds it.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = data_dir.join("supervisor.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("while opening {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DataDirLock(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => anyhow::bail!(
            "another supervisor is running with the data directory {} (it holds {}): stop it first, \
             or give this one a data directory of its own (--data-dir)",
            data_dir.display(),
            path.display()
        ),
        Err((_, e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub async fn run(mut config: Config, options: RunOptions) -> anyhow::Result<()> {
    // First, so that a signal during start-up is a shutdown request, not a sudden death.
    let mut signals = Signals::new()?;
    let data_dir = &options.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("while creating the data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let _lock = lock_data_dir(&data_dir)?;
    let metrics = crate::telemetry::init_metrics();

    let mut apps = HashMap::new();
    for (name, app) in &config.apps {
        apps.insert(
            name.clone(),
            App::new(
                name.clone(),
                app.users.clone(),
                app.groups.clone(),
                resolve_tokens(name, app)?,
                app.unknown_attributes,
                app.scim_extensions(),
            ),
        );
    }

    // Checked before anything starts: a bad admin token stops the start-up here.
    let admin_tokens = resolve_admin_tokens(&config.admin)?;
    let location = config.store.location(&data_dir);
    let store = Store::at(&location, config.server.store_cache_records)
        .await
        .with_context(|| format!("while opening the connector space at {location}"))?;
    store.set_durability(config.store.durability).context("store.durability")?;
    let node = config.server.node(options.listen);
    tracing::info!(store = store.kind(), %node, "connector space open");
    let marker = data_dir.join(REBUILD_MARKER);
    let rebuild = if marker.exists() {
        tracing::warn!(
            "the connector space was rebuilt: every connector is imported in full at start (the marker {} \
             stays until every import has succeeded)",
            marker.display()
        );
        for connector in config.connectors.values_mut() {
            connector.import.on_start = true;
        }
        Some(Arc::new(Rebuild { marker, left: Mutex::new(config.connectors.keys().cloned().collect()) }))
    } else {
        None
    };

    let ctx = LifecycleContext {
        spawner: Spawner::start()?,
        socket_dir: socket_dir(&data_dir)?,
        working_dir: data_dir.clone(),
        shutdown_timeout: config.server.shutdown_timeout,
    };
    let (stop_children, children_stop) = watch::channel(false);
    let mut handles = Vec::new();
    let mut targets = HashMap::new();
    let mut lifecycles = Vec::new();
    for (name, connector) in &config.connectors {
        let (handle, mapping) = Target::handle_for(name, connector.clone())?;
        lifecycles.push(tokio::spawn(lifecycle::run(handle.clone(), ctx.clone(), children_stop.clone())));
        targets.insert(name.clone(), Target::new(handle.clone(), mapping));
        handles.push(handle);
    }

    // Serve once every connector has finished its first start (or its start-up time is over):
    // requests to a connector that is not ready get 503 with Retry-After.
    let longest = config.connectors.values().map(|c| c.startup_timeout).max().unwrap_or_default();
    let _ = tokio::time::timeout(longest + Duration::from_secs(1), async {
        for handle in &handles {
            let mut phase = handle.phase();
            while matches!(phase, Phase::Starting) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                phase = handle.phase();
            }
        }
    })
    .await;

    // SIGHUP: reload every serving connector (the configuration read again, the executable as
    // it is on disk now), one after the other, without a moment of unavailability.
    let reloader = Arc::new(Reloader {
        config_file: options.config_file.clone(),
        data_dir: data_dir.clone(),
        connectors: handles.clone(),
    });
    {
        let reloader = reloader.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("while installing a SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reload(&reloader, None).await {
                    Ok(outcomes) => {
                        for outcome in outcomes {
                            tracing::info!(%outcome, "reload on SIGHUP");
                        }
                    }
                    Err(e) => tracing::error!("reload on SIGHUP: {e}"),
                }
            }
        });
    }
    let journal = crate::journal::Journal::start(store.clone(), node.clone(), config.log.retention());
    let provisioner = Arc::new(Provisioner::new(store.clone(), targets, journal));
    let imports = Arc::new(Imports::new(
        provisioner.clone(),
        bindings(&config),
        &config.connectors.iter().map(|(name, c)| (name.clone(), c.import.on_start)).collect::<Vec<_>>(),
        node,
    ));
    for handle in &handles {
        tokio::spawn(when_ready(handle.clone(), provisioner.clone(), imports.clone(), rebuild.clone()));
    }
    let activity = Arc::new(crate::activity::Activity::default());
    tokio::spawn(count_restarts(handles.clone(), activity.clone()));
    let scim_state = Arc::new(ScimState {
        apps,
        provisioner: provisioner.clone(),
        scheme: if config.server.tls.is_some() { "https" } else { "http" },
        public_url: config.server.public_url.clone(),
        activity: activity.clone(),
    });
    let scim = crate::scim::router(scim_state.clone(), config.server.max_body_bytes);
    if admin_tokens.is_none() {
        tracing::warn!(
            "no admin token is configured ({} or admin.token_file): the admin API and the console answer \
             loopback clients only",
            config.admin.token_env
        );
    }
    let admin_tls = match &config.admin.tls {
        Some(tls) => {
            let rustls = crate::transport::load(tls).await.context("admin.tls")?;
            tokio::spawn(crate::transport::reload_on_change(
                rustls.clone(),
                tls.clone(),
                tls.reload_interval,
            ));
            Some(rustls)
        }
        None => None,
    };
    let auth = Arc::new(crate::admin::auth::Auth::new(admin_tokens, &config.admin, admin_tls.is_some()));
    let admin = crate::admin::router(Arc::new(crate::admin::AdminState {
        reloader: reloader.clone(),
        connectors: handles.clone(),
        metrics,
        store: store.clone(),
        imports: imports.clone(),
        provisioner: provisioner.clone(),
        scim: scim_state,
        scim_router: scim.clone(),
        activity,
        auth,
        started: std::time::Instant::now(),
    }));

    let tls = match &config.server.tls {
        Some(tls) => {
            let rustls = crate::transport::load(tls).await?;
            tokio::spawn(crate::transport::reload_on_change(
                rustls.clone(),
                tls.clone(),
                tls.reload_interval,
            ));
            Some(rustls)
        }
        None => {
            tracing::warn!(
                "SCIM is served over plain HTTP (server.plain_http = true): for loopback trials only"
            );
            None
        }
    };
    let scim_listener = std::net::TcpListener::bind(options.listen)
        .with_context(|| format!("while binding the SCIM listener on {}", options.listen))?;
    let admin_listener = std::net::TcpListener::bind(options.admin_listen)
        .with_context(|| format!("while binding the admin listener on {}", options.admin_listen))?;
    tracing::info!(
        scim = %scim_listener.local_addr()?, tls = tls.is_some(), admin = %admin_listener.local_addr()?,
        admin_tls = admin_tls.is_some(), data_dir = %data_dir.display(), "supervisor listening"
    );

    let scim_handle = axum_server::Handle::<SocketAddr>::new();
    let scim_server = tokio::spawn(crate::transport::serve(scim_listener, scim, tls, scim_handle.clone()));
    let admin_handle = axum_server::Handle::<SocketAddr>::new();
    let admin_server =
        tokio::spawn(crate::transport::serve(admin_listener, admin, admin_tls, admin_handle.clone()));

    // systemd (Type=notify): ready once both listeners serve; the watchdog is fed while the
    // runtime runs (a wedged runtime misses it and systemd restarts the service). Without
    // NOTIFY_SOCKET these do nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }

    signals.next().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: draining requests (a second SIGTERM or SIGINT stops at once)");
    let grace = config.server.shutdown_timeout;
    // Stop accepting; in-flight requests finish (the grace period is enforced below).
    scim_handle.graceful_shutdown(None);
    admin_handle.graceful_shutdown(None);
    let drain = async {
        let _ = scim_server.await;
        let _ = admin_server.await;
    };
    tokio::select! {
        drained = tokio::time::timeout(grace, drain) => if drained.is_err() {
            tracing::warn!(?grace, "requests still running after the shutdown grace period; stopping anyway");
        },
        _ = signals.next() => return stop_at_once(&handles),
    }
    tracing::info!("stopping connectors");
    let _ = stop_children.send(true);
    let children = async {
        for task in lifecycles {
            let _ = task.await;
        }
    };
    tokio::select! {
        _ = children => {}
        _ = signals.next() => return stop_at_once(&handles),
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads connectors (`only`: one of them, else all that serve), each in turn: the
/// configuration file is read again (a file with problems reloads nothing), each connector's
/// executable, args, env and parameters are taken from it, and a new incarnation starts beside
/// the serving one. One outcome per connector.
pub async fn reload(reloader: &Reloader, only: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    let config = Config::load(&reloader.config_file, &reloader.data_dir)
        .map_err(|e| format!("the configuration was not reloaded: {}", e.to_string().trim_end()))?;
    let mut outcomes = Vec::new();
    for handle in reloader.connectors.iter().filter(|h| only.is_none_or(|o| o == h.name)) {
        let previous = handle.launch_config();
        let taken = match config.connectors.get(&handle.name) {
            Some(new) => handle.set_launch_config(new),
            None => Err(format!(
                "connectors.{} is no longer in the configuration; removing a connector needs a restart",
                handle.name
            )),
        };
        let outcome = match taken {
            Ok(()) => handle.reload().await,
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            // The serving incarnation's settings stay those of its next restart.
            handle.restore_launch_config(previous);
        }
        outcomes.push(match outcome {
            Ok(incarnation) => {
                serde_json::json!({"name": handle.name, "reloaded": true, "incarnation": incarnation})
            }
            Err(error) => serde_json::json!({"name": handle.name, "reloaded": false, "error": error}),
        });
    }
    Ok(outcomes)
}

/// What a reload needs: the configuration file and the connectors.
pub struct Reloader {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub connectors: Vec<Arc<ConnectorHandle>>,
}

/// Where each connector's imported objects go: the app and resource kind it serves.
fn bindings(config: &Config) -> HashMap<String, Binding> {
    use crate::scim::resource::{GROUP_SCHEMA, USER_SCHEMA};
    let mut bindings = HashMap::new();
    for (app, a) in &config.apps {
        bindings.insert(
            a.users.clone(),
            Binding { app: app.clone(), resource_type: "User", unique: "userName", schema: USER_SCHEMA },
        );
        if let Some(groups) = &a.groups {
            bindings.insert(
                groups.clone(),
                Binding {
                    app: app.clone(),
                    resource_type: "Group",
                    unique: "displayName",
                    schema: GROUP_SCHEMA,
                },
            );
        }
    }
    bindings
}

/// The work a connector's readiness starts: each time it becomes ready, the writes whose outcome
/// is unknown are settled, then (the first time, if configured) a full import runs; full and
/// delta imports then run on their schedules while it is ready.
/// A rebuild of the connector space under way: the connectors whose full import has not
/// succeeded yet; the marker goes when none is left.
struct Rebuild {
    marker: PathBuf,
    left: Mutex<std::collections::HashSet<String>>,
}

impl Rebuild {
    fn done(&self, connector: &str) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        if left.remove(connector) && left.is_empty() {
            let _ = std::fs::remove_file(&self.marker);
            tracing::info!("the connector space is rebuilt: every connector's full import succeeded");
        }
    }
}

/// How often a ready connector's pending records are looked for and settled.
const SETTLE_INTERVAL: Duration = Duration::from_secs(10);

async fn when_ready(
    handle: Arc<ConnectorHandle>,
    provisioner: Arc<Provisioner>,
    imports: Arc<Imports>,
    rebuild: Option<Arc<Rebuild>>,
) {
    let schedule = handle.config.import.clone();
    let name = handle.name.clone();
    let mut phases = handle.subscribe();
    // The import at start: tried again each time the connector becomes ready until it succeeds.
    let mut start_import = schedule.on_start;
    let tick = |every: Option<Duration>| async move {
        match every {
            Some(every) => tokio::time::sleep(every).await,
            None => std::future::pending().await,
        }
    };
    let mut next_full = Box::pin(tick(schedule.full_interval));
    let mut next_delta = Box::pin(tick(schedule.delta_interval));
    // Pending records are also settled on a timer, not only when the connector becomes ready:
    // those a write left when the store went away, and, on a shared store, those of a
    // supervisor that died during an export (whichever node takes the object's lock first
    // settles it; the others find it settled).
    let mut next_settle = Box::pin(tick(Some(SETTLE_INTERVAL)));
    // The phase may already be ready when this task starts.
    let mut check_now = true;
    let mut settle = false;
    loop {
        let mut import = None;
        let became_ready = if check_now {
            check_now = false;
            matches!(*phases.borrow_and_update(), Phase::Ready(_))
        } else {
            tokio::select! {
                changed = phases.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    matches!(*phases.borrow_and_update(), Phase::Ready(_))
                }
                _ = &mut next_full => {
                    next_full = Box::pin(tick(schedule.full_interval));
                    import = Some(ImportType::Full);
                    false
                }
                _ = &mut next_delta => {
                    next_delta = Box::pin(tick(schedule.delta_interval));
                    import = Some(ImportType::Delta);
                    false
                }
                _ = &mut next_settle => {
                    next_settle = Box::pin(tick(Some(SETTLE_INTERVAL)));
                    settle = matches!(handle.phase(), Phase::Ready(_));
                    false
                }
            }
        };
        if became_ready || std::mem::take(&mut settle) {
            let pending =
                crate::provision::with_source("reconcile", provisioner.reconcile_pending(&name)).await;
            match pending {
                Ok(0) => {}
                Ok(n) => tracing::info!(connector = %name, settled = n, "pending writes settled"),
                Err(e) => {
                    tracing::warn!(connector = %name, error = %e, "could not settle pending writes yet")
                }
            }
        }
        if became_ready && start_import {
            import = Some(ImportType::Full);
            if provisioner.target(&name).shape().has_references() {
                imports.wait_for_peers(&name, handle.config.startup_timeout * 2).await;
            }
        }
        if let Some(kind) = import
            && matches!(handle.phase(), Phase::Ready(_))
        {
            match imports.run(&name, kind).await {
                // Running on another supervisor of the store: that one's import serves this one.
                Ok(_) | Err(NotRunOf::Unknown(_) | NotRunOf::Unbound(_) | NotRunOf::Elsewhere(_))
                    if kind == ImportType::Full =>
                {
                    start_import = false;
                    if let Some(rebuild) = &rebuild {
                        rebuild.done(&name);
                    }
                }
                Ok(_) => {}
                Err(e) if start_import => {
                    tracing::warn!(connector = %name, error = %e, "the import at start failed; tried again when the connector is ready again")
                }
                Err(e) => tracing::debug!(connector = %name, error = %e, "scheduled import not run"),
            }
        }
    }
}

/// Counts connector restarts into the console's per-minute activity (sampled every second).
async fn count_restarts(handles: Vec<Arc<ConnectorHandle>>, activity: Arc<crate::activity::Activity>) {
    let total = || handles.iter().map(|h| h.status().restarts).sum::<u64>();
    let mut seen = total();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = total();
        activity.restarts(now.saturating_sub(seen));
        seen = now;
    }
}

/// The second signal: SIGKILL every child's process group and return without draining.
fn stop_at_once(handles: &[Arc<ConnectorHandle>]) -> anyhow::Result<()> {
    tracing::warn!("second signal: stopping at once");
    for handle in handles {
        if let Some(pid) = handle.status().pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT, counted.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("while installing a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("while installing a SIGINT handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
