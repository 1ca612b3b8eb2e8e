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
//! | `slow-export` | answers PutExportEntries after `FAULT_SLOW_MS` milliseconds (default 3000) while armed, as a slow target would: alive, answering health checks meanwhile |
//! | `garbage-stdout` | prints garbage (and bytes that are not UTF-8) on stdout, then works |
//! | `wrong-protocol` | answers Hello with protocol version 999 |
//! | `exit-config` | exits 78 (EX_CONFIG) before serving |
//! | `flap` | serves, then exits 1 after `FAULT_FLAP_MS` milliseconds (default 300) |
//! | `no-export` | says in Hello that it cannot export (an import-only connector) |
//! | `none` | no fault (for the delta import below) |
//!
//! With `FAULT_FILE` set, the fault is active only while that file exists; the faults inside a
//! call (`crash-mid-export`, `hang-export`) remove it when they fire, so they fire once.
//!
//! With `FOREIGN_LOOKUP=1`, LookupEntries also returns an entry of another object type and
//! partition, which the supervisor must reject.
//!
//! With `DELTA_FILE` set, the connector offers delta imports: the file holds one change per line
//! (`{"op": "add"|"update"|"delete", "anchor": "...", "attributes": {"column": "value"}}`), the
//! watermark is the number of lines already delivered, and a delta import returns the lines
//! after it. A full import ends with the watermark of the whole file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use connector_sql::SqlConnector;
use ecma_connector_sdk::connector::Service;
use ecma_proto::v1::{self, connector_server::Connector};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    CrashOnStart,
    CrashMidExport,
    HangExport,
    SlowExport,
    GarbageStdout,
    WrongProtocol,
    ExitConfig,
    Flap,
    NoExport,
}

impl Fault {
    fn from_env() -> Option<Self> {
        let fault = match std::env::var("FAULT").ok()?.as_str() {
            "crash-on-start" => Fault::CrashOnStart,
            "crash-mid-export" => Fault::CrashMidExport,
            "hang-export" => Fault::HangExport,
            "slow-export" => Fault::SlowExport,
            "garbage-stdout" => Fault::GarbageStdout,
            "wrong-protocol" => Fault::WrongProtocol,
            "exit-config" => Fault::ExitConfig,
            "flap" => Fault::Flap,
            "no-export" => Fault::NoExport,
            "none" => return None,
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
    inner: Service<SqlConnector>,
    fault: Option<Fault>,
    /// The open delta import: its entries and the watermark it ends with.
    delta: std::sync::Mutex<Option<(Vec<v1::ImportEntry>, usize)>>,
}

fn delta_file() -> Option<PathBuf> {
    std::env::var_os("DELTA_FILE").map(PathBuf::from)
}

fn delta_lines(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// One line of the delta file as an import entry.
fn delta_entry(line: &str) -> Result<v1::ImportEntry, Status> {
    let change: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Status::invalid_argument(format!("delta line {line:?}: {e}")))?;
    let modification = match change["op"].as_str() {
        Some("add") => v1::ObjectModificationType::Add,
        Some("update") => v1::ObjectModificationType::Update,
        Some("delete") => v1::ObjectModificationType::Delete,
        other => return Err(Status::invalid_argument(format!("delta op {other:?}"))),
    };
    let attributes = change["attributes"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(name, value)| v1::AttributeValues {
                    name: name.clone(),
                    values: vec![match value {
                        serde_json::Value::Bool(b) => v1::Value::boolean(*b),
                        other => v1::Value::string(other.as_str().unwrap_or_default()),
                    }],
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(v1::ImportEntry {
        modification_type: modification as i32,
        entry: Some(v1::Entry {
            object_type: "user".into(),
            anchors: vec![v1::Anchor {
                name: "id".into(),
                value: Some(v1::Value::string(change["anchor"].as_str().unwrap_or_default())),
            }],
            dn: String::new(),
            attributes,
            partition_id: "default".into(),
        }),
        error: None,
    })
}

#[tonic::async_trait]
impl Connector for Faulty {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        let mut response = self.inner.hello(request).await?;
        if self.fault == Some(Fault::WrongProtocol) && armed() {
            response.get_mut().protocol_version = 999;
        }
        if self.fault == Some(Fault::NoExport)
            && let Some(capabilities) = response.get_mut().capabilities.as_mut()
        {
            capabilities.supports_export = false;
        }
        if delta_file().is_some()
            && let Some(capabilities) = response.get_mut().capabilities.as_mut()
        {
            capabilities.delta_import = true;
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
            Some(Fault::SlowExport) if armed() => {
                let ms = std::env::var("FAULT_SLOW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
                eprintln!("fault: taking {ms} ms over PutExportEntries");
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.inner.put_export_entries(request).await
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
        let request = request.into_inner();
        if request.import_type == v1::ImportType::Delta as i32
            && let Some(file) = delta_file()
        {
            let seen: usize = String::from_utf8_lossy(&request.watermark).parse().unwrap_or(0);
            let lines = delta_lines(&file);
            let entries =
                lines.iter().skip(seen).map(|line| delta_entry(line)).collect::<Result<Vec<_>, _>>()?;
            *self.delta.lock().unwrap() = Some((entries, lines.len()));
            return Ok(Response::new(v1::OpenImportConnectionResponse { session_id: "delta".into() }));
        }
        self.inner.open_import_connection(Request::new(request)).await
    }

    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        if request.get_ref().session_id == "delta" {
            let (entries, total) = self.delta.lock().unwrap().take().unwrap_or_default();
            return Ok(Response::new(v1::GetImportEntriesResponse {
                entries,
                more_to_import: false,
                watermark: total.to_string().into_bytes(),
            }));
        }
        self.inner.get_import_entries(request).await
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        let delta = request.get_ref().session_id == "delta";
        let mut response = if delta {
            Response::new(v1::CloseImportConnectionResponse::default())
        } else {
            self.inner.close_import_connection(request).await?
        };
        // A full import is a base for the next delta: the whole file so far.
        if !delta && let Some(file) = delta_file() {
            response.get_mut().watermark = delta_lines(&file).len().to_string().into_bytes();
        }
        Ok(response)
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
    ecma_connector_sdk::run(Faulty { inner: Service::new(SqlConnector), fault, delta: Default::default() })
}
