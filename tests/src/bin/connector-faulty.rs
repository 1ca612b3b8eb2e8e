//! `connector-faulty`: a test-only connector that is `connector-sql` with injectable faults, so
//! that the end-to-end tests can check what the supervisor does with a misbehaving child.
//!
//! The fault is chosen by the `FAULT` environment variable (set in the connector's `env` table):
//!
//! | `FAULT` | behaviour |
//! |---|---|
//! | `crash-on-start` | exits 1 before serving |
//! | `crash-mid-export` | writes the batch to the database, then aborts before answering |
//! | `hang-export` | never answers PutExportEntries (nothing written) |
//! | `garbage-stdout` | prints garbage (and bytes that are not UTF-8) on stdout, then works |
//! | `wrong-protocol` | answers Hello with protocol version 999 |
//! | `exit-config` | exits 78 (EX_CONFIG) before serving |
//! | `flap` | serves, then exits 1 after `FAULT_FLAP_MS` milliseconds (default 300) |
//!
//! With `FAULT_FILE` set, the fault is active only while that file exists; the faults inside a
//! call (`crash-mid-export`, `hang-export`) remove it when they fire, so they fire once.
//!
//! With `FOREIGN_LOOKUP=1`, LookupEntries also returns an entry of another object type and
//! partition, which the supervisor must reject.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use connector_sql::SqlConnector;
use ecma_proto::v1::{self, connector_server::Connector};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    CrashOnStart,
    CrashMidExport,
    HangExport,
    GarbageStdout,
    WrongProtocol,
    ExitConfig,
    Flap,
}

impl Fault {
    fn from_env() -> Option<Self> {
        let fault = match std::env::var("FAULT").ok()?.as_str() {
            "crash-on-start" => Fault::CrashOnStart,
            "crash-mid-export" => Fault::CrashMidExport,
            "hang-export" => Fault::HangExport,
            "garbage-stdout" => Fault::GarbageStdout,
            "wrong-protocol" => Fault::WrongProtocol,
            "exit-config" => Fault::ExitConfig,
            "flap" => Fault::Flap,
            other => panic!("unknown FAULT {other:?}"),
        };
        Some(fault)
    }
}

fn fault_file() -> Option<PathBuf> {
    std::env::var_os("FAULT_FILE").map(PathBuf::from)
}

/// Whether the fault is active now.
fn armed() -> bool {
    fault_file().is_none_or(|f| f.exists())
}

/// Fires a one-shot fault: disarms it first, so that the next incarnation behaves.
fn fire_once() -> bool {
    if !armed() {
        return false;
    }
    if let Some(f) = fault_file() {
        let _ = std::fs::remove_file(f);
    }
    true
}

struct Faulty {
    inner: SqlConnector,
    fault: Option<Fault>,
}

#[tonic::async_trait]
impl Connector for Faulty {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        let mut response = self.inner.hello(request).await?;
        if self.fault == Some(Fault::WrongProtocol) && armed() {
            response.get_mut().protocol_version = 999;
        }
        Ok(response)
    }

    async fn get_config_parameters(
        &self,
        request: Request<v1::GetConfigParametersRequest>,
    ) -> Result<Response<v1::GetConfigParametersResponse>, Status> {
        self.inner.get_config_parameters(request).await
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        self.inner.validate_configuration(request).await
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        self.inner.get_schema(request).await
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        self.inner.get_partitions(request).await
    }

    async fn open_export_connection(
        &self,
        request: Request<v1::OpenExportConnectionRequest>,
    ) -> Result<Response<v1::OpenExportConnectionResponse>, Status> {
        self.inner.open_export_connection(request).await
    }

    async fn put_export_entries(
        &self,
        request: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        match self.fault {
            Some(Fault::HangExport) if fire_once() => {
                eprintln!("fault: hanging in PutExportEntries");
                std::future::pending::<()>().await;
                unreachable!()
            }
            Some(Fault::CrashMidExport) if fire_once() => {
                // The batch is committed to the database; the answer never leaves.
                let written = self.inner.put_export_entries(request).await;
                eprintln!("fault: crashing after the export was written ({})", written.is_ok());
                std::process::abort();
            }
            _ => self.inner.put_export_entries(request).await,
        }
    }

    async fn close_export_connection(
        &self,
        request: Request<v1::CloseExportConnectionRequest>,
    ) -> Result<Response<v1::CloseExportConnectionResponse>, Status> {
        self.inner.close_export_connection(request).await
    }

    async fn open_import_connection(
        &self,
        request: Request<v1::OpenImportConnectionRequest>,
    ) -> Result<Response<v1::OpenImportConnectionResponse>, Status> {
        self.inner.open_import_connection(request).await
    }

    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        self.inner.get_import_entries(request).await
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        self.inner.close_import_connection(request).await
    }

    async fn lookup_entries(
        &self,
        request: Request<v1::LookupEntriesRequest>,
    ) -> Result<Response<v1::LookupEntriesResponse>, Status> {
        let mut response = self.inner.lookup_entries(request).await?;
        if std::env::var_os("FOREIGN_LOOKUP").is_some() {
            let mut foreign = response.get_ref().entries.first().cloned().unwrap_or_default();
            foreign.object_type = "group".into();
            foreign.partition_id = "elsewhere".into();
            response.get_mut().entries.insert(0, foreign);
        }
        Ok(response)
    }
}

fn main() -> anyhow::Result<()> {
    let fault = Fault::from_env();
    if armed() {
        match fault {
            Some(Fault::CrashOnStart) => {
                eprintln!("fault: crashing on start");
                std::process::exit(1);
            }
            Some(Fault::ExitConfig) => {
                eprintln!("fault: refusing the configuration");
                std::process::exit(ecma_proto::EXIT_CONFIG);
            }
            Some(Fault::GarbageStdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(b"1|{not a handshake}\nplugin-address: /tmp/nowhere\n\xff\xfe garbage \x00\n")?;
                out.write_all(b"a line without a newline at the end")?;
                out.flush()?;
            }
            Some(Fault::Flap) => {
                let ms = std::env::var("FAULT_FLAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    eprintln!("fault: flapping");
                    std::process::exit(1);
                });
            }
            _ => {}
        }
    }
    ecma_connector_sdk::run(Faulty { inner: SqlConnector::default(), fault })
}
