//! Starting a connector child the careful way.
//!
//! - Every child leads its own process group, so that a kill reaches its children too.
//! - Its environment is cleared but for a few variables, the process contract's, and its own.
//! - `PR_SET_PDEATHSIG` kills it if the supervisor dies. The signal fires when the *thread* that
//!   forked exits, so children are forked from one dedicated thread that lives as long as the
//!   process, never from a runtime worker that might be retired.
//! - stdin is closed; stdout and stderr are read line by line into our log (never parsed).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, mpsc};

use anyhow::{Context, anyhow};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::ConnectorHandle;

/// Variables passed through from the supervisor's environment to every child.
const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "RUST_LOG", "RUST_BACKTRACE"];

type SpawnRequest = (Command, oneshot::Sender<std::io::Result<Child>>);

/// Forks children from one long-lived thread (see the module docs for why).
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    /// Starts the spawning thread; call from inside the runtime.
    pub fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                // tokio's process support needs a runtime context to register the child.
                let _guard = runtime.enter();
                while let Ok((mut command, reply)) = receiver.recv() {
                    let _ = reply.send(command.spawn());
                }
            })
            .context("while starting the child-spawner thread")?;
        Ok(Self { requests })
    }

    /// Spawns `command` from the spawner thread.
    pub async fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.requests.send((command, tx)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        rx.await.map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

/// Finds a connector executable: a path as given; a bare name next to the supervisor's own
/// binary first, then on PATH.
pub fn resolve_executable(name: &str) -> anyhow::Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if path.is_file() { Ok(path) } else { Err(anyhow!("{name} does not exist")) };
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} was found neither next to the supervisor binary nor on PATH"))
}

/// What the child is told in its environment.
pub struct Contract<'a> {
    pub socket: &'a Path,
    pub token: &'a str,
    pub incarnation: u64,
    pub working_dir: &'a Path,
}

/// Builds the command for one incarnation of `handle`.
pub fn command(handle: &ConnectorHandle, executable: &Path, contract: &Contract<'_>) -> Command {
    use ecma_proto::env;
    let launch = handle.launch_config();
    let mut command = Command::new(executable);
    command
        .args(&launch.args)
        .env_clear()
        .envs(PASSED_THROUGH.iter().filter_map(|k| std::env::var_os(k).map(|v| (*k, v))))
        .envs(std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("OTEL_")))
        .envs(&launch.env)
        .env(env::SOCKET, contract.socket)
        .env(env::TOKEN, contract.token)
        .env(
            env::PROTOCOL_VERSIONS,
            ecma_proto::PROTOCOL_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        )
        .env(env::CONNECTOR_NAME, &handle.name)
        .env(env::INCARNATION, contract.incarnation.to_string())
        .env(env::SUPERVISOR_PID, std::process::id().to_string())
        .current_dir(contract.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl and getppid are plain system calls).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The supervisor may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the supervisor exited during spawn"));
            }
            Ok(())
        });
    }
    command
}

/// Forwards the child's stdout and stderr into our log, line by line, tagged with the connector
/// and incarnation, and keeps the last lines for the crash report.
pub fn drain_output(handle: &Arc<ConnectorHandle>, child: &mut Child, incarnation: u64) {
    fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        handle: Arc<ConnectorHandle>,
        reader: R,
        stream: &'static str,
        incarnation: u64,
    ) {
        tokio::spawn(async move {
            // Bytes, not `lines()`: a child that prints something that is not UTF-8 must not
            // stop the draining (a full pipe would block it); such bytes are shown replaced.
            let mut reader = BufReader::new(reader);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer).await {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer);
                        let line = line.trim_end_matches(['\n', '\r']);
                        tracing::info!(target: "connector", connector = %handle.name, incarnation, stream, "{line}");
                        handle.remember_output(format!("[{stream}] {line}"));
                    }
                    Err(e) => {
                        tracing::warn!(connector = %handle.name, incarnation, stream, error = %e, "stopped reading child output");
                        break;
                    }
                }
            }
        });
    }
    if let Some(stdout) = child.stdout.take() {
        forward(handle.clone(), stdout, "stdout", incarnation);
    }
    if let Some(stderr) = child.stderr.take() {
        forward(handle.clone(), stderr, "stderr", incarnation);
    }
}
