//! Throwaway PostgreSQL and MariaDB servers for the tests: each fixture makes its own data
//! directory under the temp directory, starts the server on a free loopback port (as the
//! `postgres` / `mysql` user when the tests run as root, since neither server runs as root),
//! and removes everything on drop. No system server is touched; the fixtures need only the
//! Debian packages `postgresql` and `mariadb-server` installed (scripts/test-all.sh does that).
//!
//! Each fixture makes a fresh database per call of `database()`, so that nothing a test leaves
//! behind reaches another test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TempDir, free_addr};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `command` run as `user` when we are root (servers refuse root), else as ourselves.
fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn give_to(user: &str, dir: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", user]).arg(dir).status().expect("chown");
        assert!(status.success(), "chown {user} {}", dir.display());
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (Debian package postgresql; scripts/test-all.sh installs it)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql").1
}

/// Runs `sql` (with text binds) on `url` through sqlx and returns the rows as JSON objects
/// (integers, booleans and text; NULL as null).
pub fn query(url: &str, sql: &str, binds: &[&str]) -> Vec<Value> {
    use sqlx::{Column, Connection, Row};
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        let rows = q.fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .map(|row| {
                let mut object = serde_json::Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                        v.map(Value::from)
                    } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                        v.map(Value::from)
                    } else {
                        row.try_get::<Option<String>, _>(i).expect("a text column").map(Value::from)
                    };
                    object.insert(column.name().to_string(), value.unwrap_or(Value::Null));
                }
                Value::Object(object)
            })
            .collect()
    })
}

/// Runs statements (no rows expected).
pub fn execute(url: &str, sql: &str, binds: &[&str]) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        q.execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

fn wait_until_answers(url: &str, server: &mut Child, log: &Path, timeout: Duration) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let deadline = Instant::now() + timeout;
    loop {
        let ok = runtime.block_on(async {
            match sqlx::AnyConnection::connect(url).await {
                Ok(mut c) => sqlx::query("SELECT 1").execute(&mut c).await.is_ok(),
                Err(_) => false,
            }
        });
        if ok {
            return;
        }
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "the server did not answer: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway PostgreSQL cluster (fsync off unless asked: the tests measure our code, not the
/// disk).
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    durable: bool,
    /// TLS on (`ssl=on` with a certificate of the fixture's own CA).
    tls: bool,
    server: Option<Child>,
    databases: std::sync::atomic::AtomicU32,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// `durable`: fsync and synchronous commit on (PostgreSQL's defaults), as a database in
    /// service runs; off otherwise.
    pub fn start_with(durable: bool) -> Self {
        Self::start_full(durable, false)
    }

    /// A server that also accepts TLS (`ssl = on`), with a server certificate for `localhost`
    /// and `127.0.0.1` signed by a CA of its own: [`Postgres::ca_file`].
    pub fn start_tls() -> Self {
        Self::start_full(false, true)
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    fn start_full(durable: bool, tls: bool) -> Self {
        let dir = TempDir::new("postgres");
        if tls {
            crate::slapd::write_certificates(dir.path());
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("tls/server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
        }
        let bin = postgres_bin();
        give_to("postgres", dir.path());
        let mut initdb = as_user("postgres", &bin.join("initdb"));
        initdb.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ]);
        run(initdb, "initdb");
        let port = free_addr().port();
        let mut pg = Self { dir, bin, port, durable, tls, server: None, databases: Default::default() };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let log = self.dir.path().join("postgres.log");
        let mut command = as_user("postgres", &self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]);
        if !self.durable {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        if self.tls {
            let tls = self.dir.path().join("tls");
            command
                .args(["-c", "ssl=on", "-c"])
                .arg(format!("ssl_cert_file={}", tls.join("server.pem").display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.join("server.key").display()));
        }
        command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log"));
        let mut child = command.spawn().expect("spawn postgres");
        wait_until_answers(&self.url("postgres"), &mut child, &log, Duration::from_secs(30));
        self.server = Some(child);
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("e2e_{n}");
        execute(&self.url("postgres"), &format!("CREATE DATABASE {name}"), &[]);
        self.url(&name)
    }

    /// Stops the server at once (as a crash or a restart would), keeping its data.
    pub fn stop(&mut self) {
        let mut stop = as_user("postgres", &self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.path().join("data")).args(["stop", "-m", "fast"]);
        let _ = stop.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Some(mut child) = self.server.take() {
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway MariaDB server (grant tables skipped: any user name gets in; durability off).
pub struct MariaDb {
    dir: TempDir,
    port: u16,
    server: Option<Child>,
    databases: std::sync::atomic::AtomicU32,
}

impl MariaDb {
    pub fn start() -> Self {
        let dir = TempDir::new("mariadb");
        give_to("mysql", dir.path());
        // Bootstrapping a data directory is done one at a time (tests start servers
        // concurrently, and concurrent bootstraps were seen to fail under load), and tried again
        // once from scratch.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        let data = dir.path().join("data");
        let install = || {
            let _ = std::fs::remove_dir_all(&data);
            let mut install = Command::new("mariadb-install-db");
            install
                .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display()));
            if is_root() {
                install.arg("--user=mysql");
            }
            install.stdin(Stdio::null()).output().expect("mariadb-install-db (Debian package mariadb-server)")
        };
        let mut out = install();
        if !out.status.success() {
            std::thread::sleep(Duration::from_millis(500));
            out = install();
        }
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        drop(_one_at_a_time);
        let log = dir.path().join("mariadb.log");
        let port = free_addr().port();
        // A temp directory of its own: a starting mariadbd deletes the `#sql*` files it finds in
        // its tmpdir, which, shared, are other servers' temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmpdir");
        give_to("mysql", &tmp);
        let mut command = Command::new("mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-log-bin"])
            .args(["--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=64M"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log"));
        if is_root() {
            command.arg("--user=mysql");
        }
        let mut child = command.spawn().expect("spawn mariadbd (Debian package mariadb-server)");
        let url = format!("mysql://root@127.0.0.1:{port}/mysql");
        wait_until_answers(&url, &mut child, &log, Duration::from_secs(60));
        Self { dir, port, server: Some(child), databases: Default::default() }
    }

    pub fn url(&self, name: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("e2e_{n}");
        execute(&self.url("mysql"), &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"), &[]);
        self.url(&name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
