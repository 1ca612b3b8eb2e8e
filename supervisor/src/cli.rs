//! The command line: `supervisor run`, `check-config`, the operator's commands (`status`,
//! `import`, `test-connection`, `schema`), `cert`/`token generate` and shell completions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::{self, RunOptions};
use crate::telemetry::{self, LogFormat};

/// `EX_USAGE` from sysexits.h: the configuration or the command line is wrong.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "supervisor",
    version,
    about = "SCIM 2.0 front end that supervises out-of-process connectors"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    ///
    /// Example: supervisor run --config deploy/examples/quickstart.toml
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// SCIM listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listen address (overrides server.admin_listen).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Data directory: the connector space and connector sockets. Default: server.data_dir,
        /// else $STATE_DIRECTORY (systemd), else ./supervisor-data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration file and report every problem; binds and spawns nothing.
    ///
    /// Example: supervisor check-config --config deploy/examples/quickstart.toml
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Show a running supervisor's connectors (through its admin listener). Exit 0 when all are
    /// ready, 1 otherwise, 69 when the supervisor cannot be reached.
    ///
    /// Example: supervisor status --config /etc/ecma-supervisor/supervisor.toml
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the provisioning log of a running supervisor: every write sent to a connector and
    /// every change an import made, oldest first; `--follow` goes on printing new rows.
    ///
    /// Example: supervisor log --app hr --outcome refused --config /etc/ecma-supervisor/supervisor.toml
    Log {
        /// Only this app's rows.
        #[arg(long)]
        app: Option<String>,
        /// Only this connector's rows.
        #[arg(long)]
        connector: Option<String>,
        /// Only this operation (add, update, delete, set_password, lookup, import_add, ...).
        #[arg(long)]
        operation: Option<String>,
        /// Only this outcome (applied, refused, unavailable, unknown, found, absent).
        #[arg(long)]
        outcome: Option<String>,
        /// A SCIM id, an anchor or a trace id; or part of a userName, displayName or DN.
        #[arg(long, short)]
        query: Option<String>,
        /// Only rows of the last ... (e.g. 15m, 2h, 1d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// How many rows at most.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// Keep printing new rows as they come.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run an import on a running supervisor now, and print its report.
    ///
    /// Example: supervisor import ldap-users --delta --config /etc/ecma-supervisor/supervisor.toml
    Import {
        /// The connector, by its name in the configuration.
        connector: String,
        /// A full import (the default): everything, and what is gone leaves the connector space.
        #[arg(long, conflicts_with = "delta")]
        full: bool,
        /// A delta import: what changed since the last one (full where the connector cannot).
        #[arg(long)]
        delta: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start one connector of a configuration on its own, let it validate its configuration and
    /// reach its target, and report (no listener is opened). Exit 0 when it is ready, 69 when its
    /// target cannot be reached, 64 when it refuses its configuration.
    ///
    /// Example: supervisor test-connection ldap-users --config deploy/examples/ldap.toml
    TestConnection {
        connector: String,
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Start one connector on its own and print what its target offers: partitions, object
    /// types and their attributes.
    ///
    /// Example: supervisor schema sql-users --config deploy/examples/postgres.toml
    Schema {
        connector: String,
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    ///
    /// Example: supervisor completions bash > /etc/bash_completion.d/supervisor
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// TLS certificates.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Bearer tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The connector space (connector-space.db in the data directory, or a PostgreSQL store).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

/// How an operator's command reaches a running supervisor's admin API.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin listener (default: server.admin_listen of --config, else 127.0.0.1:9090).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The configuration file: its admin listener, token variable or file, and TLS.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The CA certificate of an admin listener with TLS (default: [admin.tls] cert_file).
    #[arg(long)]
    admin_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Check the connector space's integrity (SQLite's integrity_check: every page, b-tree and
    /// index). Exit 0 when it is sound, 1 when it is damaged.
    ///
    /// Example: supervisor store check --config /etc/ecma-supervisor/supervisor.toml
    Check {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only the quick check that `run` does at start (pages and b-trees, not indexes).
        #[arg(long)]
        quick: bool,
    },
    /// Set a damaged connector space aside (kept beside it, renamed) and start an empty one,
    /// which the next `supervisor run` fills from the targets with a full import of every
    /// connector. The supervisor must be stopped.
    ///
    /// Example: supervisor store rebuild --config /etc/ecma-supervisor/supervisor.toml
    Rebuild {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rebuild even when the check finds the connector space sound.
        #[arg(long)]
        force: bool,
    },
    /// Copy a connector space from one store to another (a SQLite file or a PostgreSQL URL,
    /// either way): every record and import watermark, then the counts compared per app,
    /// resource type and state. Stop every supervisor that uses either store first. A URL's
    /// password may come from the STORE_PASSWORD environment variable.
    ///
    /// Example: supervisor store migrate --from /var/lib/ecma-supervisor/connector-space.db --to postgres://ecma@db:5432/ecma
    Migrate {
        /// The store to copy: a SQLite file, or postgres://user@host:port/database.
        #[arg(long)]
        from: String,
        /// The store to copy into (created if missing): a SQLite file or a PostgreSQL URL.
        #[arg(long)]
        to: String,
        /// Copy into a store that already holds records (records with the same id are replaced).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Write a self-signed certificate and key (cert.pem, key.pem) for trying TLS out.
    ///
    /// Example: supervisor cert generate --out-dir /etc/ecma-supervisor --name scim.example.com
    Generate {
        /// Directory to write cert.pem and key.pem into.
        #[arg(long)]
        out_dir: PathBuf,
        /// Host names and IP addresses the certificate is for (repeatable).
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Print a new random bearer token (256 bits, hex).
    ///
    /// Example: supervisor token generate > /etc/ecma-supervisor/demo.token
    Generate,
}

/// The data directory: flag, then config, then $STATE_DIRECTORY, then ./supervisor-data. The
/// config is read once with a provisional value to find `server.data_dir`.
/// The result is absolute: `${data_dir}` is expanded into paths that connectors, whose working
/// directory is the data directory itself, must resolve the same way.
fn data_dir(flag: Option<PathBuf>, config_file: &Path) -> PathBuf {
    let dir = flag.unwrap_or_else(|| {
        let fallback = std::env::var_os("STATE_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("supervisor-data"));
        Config::load(config_file, &fallback).ok().and_then(|c| c.server.data_dir).unwrap_or(fallback)
    });
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The admin listener to talk to: the flag, else the configuration's, else the default.
/// The admin API of a running supervisor: `--admin`, else `server.admin_listen` of `--config`,
/// else 127.0.0.1:9090; its token and TLS from the configuration's `[admin]`.
fn admin_client(
    flag: Option<SocketAddr>,
    config: Option<&Path>,
    ca: Option<&Path>,
) -> anyhow::Result<crate::operator::AdminClient> {
    let loaded = config.and_then(|config| Config::load(config, &data_dir(None, config)).ok());
    let addr = flag
        .or_else(|| loaded.as_ref().map(|c| c.server.admin_listen))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let admin = loaded.map(|c| c.admin).unwrap_or_default();
    crate::operator::AdminClient::new(addr, &admin, ca)
}

/// Runs an operator's command against the admin API.
fn with_admin<F: std::future::Future<Output = anyhow::Result<u8>>>(
    args: AdminArgs,
    command: impl FnOnce(crate::operator::AdminClient) -> F,
) -> ExitCode {
    match admin_client(args.admin, args.config.as_deref(), args.admin_ca.as_deref()) {
        Ok(client) => one_shot(command(client)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `test-connection` (or, with `schema`, `schema`): one connector of `config` started on its own.
fn probe(config: &Path, dir: Option<PathBuf>, connector: &str, schema: bool) -> ExitCode {
    let dir = data_dir(dir, config);
    let loaded = match Config::load(config, &dir) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !loaded.connectors.contains_key(connector) {
        eprintln!(
            "error: no connector named {connector:?} in {} (it has: {})",
            config.display(),
            loaded.connectors.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    }
    one_shot(async move {
        if schema {
            crate::operator::schema(&loaded, &dir, connector).await
        } else {
            crate::operator::test_connection(&loaded, &dir, connector).await
        }
    })
}

/// Runs an operator command on a runtime of its own; its error is printed, exit 69 for an
/// unreachable supervisor (an I/O error), 1 for anything else.
fn one_shot(command: impl std::future::Future<Output = anyhow::Result<u8>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some()) {
                ExitCode::from(crate::operator::EXIT_UNAVAILABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` sets up its telemetry inside its runtime (the trace exporter needs it).
    let _telemetry = match &cli.command {
        Command::Run { .. } => None,
        _ => Some(telemetry::init(cli.log_format, false)),
    };
    match cli.command {
        Command::Cert { action: CertAction::Generate { out_dir, names } } => {
            match crate::transport::generate_self_signed(&out_dir, &names) {
                Ok((cert, key)) => {
                    println!("wrote {} and {} for {}", cert.display(), key.display(), names.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token { action: TokenAction::Generate } => {
            use rand::Rng;
            let bytes: [u8; 32] = rand::rng().random();
            println!("{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "supervisor", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Status { admin } => {
            with_admin(admin, |client| async move { crate::operator::status(&client).await })
        }
        Command::Import { connector, full: _, delta, admin } => with_admin(admin, |client| async move {
            crate::operator::import(&client, &connector, if delta { "delta" } else { "full" }).await
        }),
        Command::Log { app, connector, operation, outcome, query, since, limit, follow, json, admin } => {
            let mut filter = Vec::new();
            for (key, value) in [
                ("app", app),
                ("connector", connector),
                ("operation", operation),
                ("outcome", outcome),
                ("q", query),
            ] {
                if let Some(value) = value {
                    filter.push((key, value));
                }
            }
            if let Some(since) = since {
                let since_ms = crate::store::now_ms() - since.as_millis().min(i64::MAX as u128) as i64;
                filter.push(("since_ms", since_ms.to_string()));
            }
            let query = crate::operator::LogQuery { filter, limit, follow, json };
            with_admin(admin, |client| async move { crate::operator::log(&client, query).await })
        }
        Command::TestConnection { connector, config, data_dir: dir } => {
            probe(&config, dir, &connector, false)
        }
        Command::Schema { connector, config, data_dir: dir } => probe(&config, dir, &connector, true),
        Command::Store { action: StoreAction::Check { config, data_dir: dir, quick } } => {
            let dir = data_dir(dir, &config);
            ExitCode::from(crate::operator::store_check(&dir, !quick))
        }
        Command::Store { action: StoreAction::Rebuild { config, data_dir: dir, force } } => {
            let dir = data_dir(dir, &config);
            one_shot(crate::operator::store_rebuild(&dir, force))
        }
        Command::Store { action: StoreAction::Migrate { from, to, force } } => {
            one_shot(crate::operator::store_migrate(&from, &to, force))
        }
        Command::CheckConfig { config, data_dir: dir } => {
            let dir = data_dir(dir, &config);
            match Config::load(&config, &dir) {
                Ok(_) => {
                    println!("{}: OK", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Run { config, listen, admin_listen, data_dir: dir } => {
            let dir = data_dir(dir, &config);
            let loaded = match Config::load(&config, &dir) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let options = RunOptions {
                config_file: config.clone(),
                data_dir: dir,
                listen: listen.unwrap_or(loaded.server.listen),
                admin_listen: admin_listen.unwrap_or(loaded.server.admin_listen),
            };
            for (name, value) in loaded.telemetry.variables() {
                if std::env::var_os(name).is_none() {
                    // SAFETY: single-threaded still (the runtime starts below); the connectors
                    // inherit these variables.
                    unsafe { std::env::set_var(name, value) };
                }
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let _telemetry = {
                let _inside = runtime.enter();
                telemetry::init(cli.log_format, true)
            };
            match runtime.block_on(server::run(loaded, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
