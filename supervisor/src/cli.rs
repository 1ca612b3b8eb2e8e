//! The command line: `supervisor run` and `supervisor check-config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::{self, RunOptions};
use crate::telemetry::{self, LogFormat};

/// `EX_USAGE` from sysexits.h: the configuration or the command line is wrong.
const EXIT_USAGE: u8 = 64;

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
