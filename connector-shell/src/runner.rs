//! Runs one script: its executable with the configured arguments (never through a shell), one
//! JSON document on stdin, JSON lines read from stdout as they come, stderr forwarded to the log
//! line by line, a timeout that kills the script's whole process group.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ecma_connector_sdk::ConnectorError;
use ecma_proto::v1::ErrorKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How to run one script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The operation it serves (`export`, `import`, ...), for messages and the log.
    pub operation: String,
    pub path: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub working_dir: Option<PathBuf>,
    /// Added to the environment (which is the connector's, less its own contract variables).
    pub env: Vec<(String, String)>,
}

/// The error kind an exit code stands for (sysexits.h, as documented in docs/shell-connector.md).
pub fn exit_kind(code: Option<i32>) -> ErrorKind {
    match code {
        Some(69) => ErrorKind::ConnectionFailed,     // EX_UNAVAILABLE
        Some(75) => ErrorKind::Retryable,            // EX_TEMPFAIL
        Some(77) => ErrorKind::PermissionDenied,     // EX_NOPERM
        Some(78) => ErrorKind::InvalidConfiguration, // EX_CONFIG
        _ => ErrorKind::Internal,
    }
}

/// How many of the last stderr lines a failure message quotes.
const STDERR_TAIL: usize = 5;

/// Runs `script` with `input` on stdin. Each stdout line (1-based number, text without the line
/// end) goes to `on_line` as it arrives; an `Err` from it stops the script. Returns once the
/// script has exited 0; a non-zero exit, a signal or the timeout is an error that quotes the
/// last stderr lines.
pub async fn run(
    script: &Script,
    input: &serde_json::Value,
    mut on_line: impl FnMut(usize, &str) -> Result<(), ConnectorError>,
) -> Result<(), ConnectorError> {
    let mut command = tokio::process::Command::new(&script.path);
    command
        .args(&script.args)
        .env_clear()
        // The connector's environment, less what the supervisor told the connector alone (its
        // socket, its per-spawn token).
        .envs(std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with("ECMA_")))
        .envs(script.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &script.working_dir {
        command.current_dir(dir);
    }
    let what = format!("{} script {}", script.operation, script.path.display());
    let mut child = command.spawn().map_err(|e| {
        ConnectorError::new(
            ErrorKind::InvalidConfiguration,
            format!("cannot start the {what}: {e}{}", spawn_hint(&e, &script.operation)),
        )
    })?;
    let pid = child.id();

    // stdin from a task of its own: a script that writes before it has read everything must
    // not deadlock against us.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut document = serde_json::to_vec(input).expect("JSON");
    document.push(b'\n');
    let writer = tokio::spawn(async move {
        // A script that exits without reading its input is its own business (EPIPE ignored).
        let _ = stdin.write_all(&document).await;
        let _ = stdin.shutdown().await;
    });

    let stderr = child.stderr.take().expect("piped stderr");
    let operation = script.operation.clone();
    let forwarder = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail = std::collections::VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(script = %operation, "{line}");
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>()
    });

    let stdout = child.stdout.take().expect("piped stdout");
    let work = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut number = 0;
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    number += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    on_line(number, &line)?;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ConnectorError::new(
                        ErrorKind::Internal,
                        format!("the {what} wrote something unreadable on stdout (line {}): {e}", number + 1),
                    ));
                }
            }
        }
        child
            .wait()
            .await
            .map_err(|e| ConnectorError::new(ErrorKind::Internal, format!("waiting for the {what}: {e}")))
    };
    let outcome = tokio::time::timeout(script.timeout, work).await;
    let status = match outcome {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectorError::new(
            ErrorKind::Timeout,
            format!(
                "the {what} did not finish within {:?}; it was killed with its process group",
                script.timeout
            ),
        )),
    };
    if status.is_err() {
        kill_group(pid);
        let _ = child.wait().await;
    }
    writer.abort();
    let tail = forwarder.await.unwrap_or_default();
    let status = status?;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".to_string(),
    };
    let said = if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) };
    Err(ConnectorError::new(exit_kind(status.code()), format!("the {what} {how}{said}")))
}

/// What to check when a script could not be started (its file was found and is executable
/// when the settings were read).
fn spawn_hint(e: &std::io::Error, operation: &str) -> String {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_raw) {
        // execve's ENOENT for a file that exists: the interpreter of its #! line is missing (or
        // so is the working directory).
        Some(Errno::ENOENT) => format!(
            "; check that {operation}_script exists, that the interpreter on its #! line is installed, and that working_dir exists"
        ),
        Some(Errno::EACCES) => format!(
            "; the connector's user may not run {operation}_script: check its mode (chmod +x), its directories' and its interpreter's, and that its file system is not mounted noexec"
        ),
        Some(Errno::ENOEXEC) => {
            format!("; {operation}_script is neither a program nor a script starting with a #! line")
        }
        _ => String::new(),
    }
}

/// Kills a script's process group (the script and whatever it started).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_that_cannot_start_names_its_parameter() {
        let dir = std::env::temp_dir().join(format!("shell-runner-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("export.sh");
        std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let e = std::process::Command::new(&script).spawn().unwrap_err();
        let hint = spawn_hint(&e, "export");
        assert!(hint.contains("export_script") && hint.contains("#! line"), "{hint}");
        std::fs::remove_dir_all(&dir).unwrap();
        let denied = std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32);
        assert!(spawn_hint(&denied, "import").contains("may not run import_script"));
        let format = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOEXEC as i32);
        assert!(spawn_hint(&format, "export").contains("#! line"));
        assert_eq!(spawn_hint(&std::io::Error::other("x"), "export"), "");
    }
}
