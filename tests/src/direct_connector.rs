//! A connector process driven by the benchmark itself, without a supervisor: started with the
//! process contract's environment, reached on its socket with its per-spawn token. The benches
//! use it for floors: what a connector and its target cost when the supervisor costs nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecma_proto::v1::{self, HelloRequest, connector_client::ConnectorClient};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A running connector and a client of its socket. Killed when dropped.
pub struct DirectConnector {
    child: Child,
    token: String,
    pub client: ConnectorClient<Channel>,
}

impl DirectConnector {
    /// Starts connector binary `name` with its socket in `dir`, and returns once its `Hello` is
    /// answered. Panics after 15 s.
    pub async fn start(name: &str, dir: &Path) -> Self {
        let socket = dir.join(format!("{name}-{}.sock", uuid::Uuid::new_v4().simple()));
        let token = uuid::Uuid::new_v4().simple().to_string();
        let child = Command::new(crate::binary(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(ecma_proto::env::SOCKET, &socket)
            .env(ecma_proto::env::TOKEN, &token)
            .env(ecma_proto::env::PROTOCOL_VERSIONS, "1")
            .env(ecma_proto::env::SUPERVISOR_PID, std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        // Killed on drop from here on, also when it never answers.
        let mut connector = Self { child, token, client: ConnectorClient::new(endpoint().connect_lazy()) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let hello = HelloRequest {
            supported_protocol_versions: vec![1],
            connector_name: name.into(),
            incarnation: 1,
        };
        loop {
            let path = socket.clone();
            let channel = endpoint()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                    }
                }))
                .await;
            if let Ok(channel) = channel {
                connector.client = ConnectorClient::new(channel);
                let request = connector.request(hello.clone());
                if connector.client.hello(request).await.is_ok() {
                    return connector;
                }
            }
            assert!(Instant::now() < deadline, "{name} did not answer Hello within 15 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `message` with the per-spawn token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        request(&self.token, message)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The endpoint a connector's socket is reached through (the URI is not used).
fn endpoint() -> Endpoint {
    Endpoint::from_static("http://connector.invalid")
}

/// `message` with the per-spawn `token`.
pub fn request<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(ecma_proto::TOKEN_METADATA, token.parse().expect("a hex token"));
    request
}

impl Drop for DirectConnector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a connector is opened on: its parameters as the supervisor sends them, its object type
/// and partition.
pub struct Target {
    pub config: v1::ConfigParameters,
    pub object_type: String,
    pub partition: String,
}

impl Target {
    /// `parameters` (name, value) as a [`v1::ConfigParameters`].
    pub fn new(parameters: &[(&str, String)], object_type: &str, partition: &str) -> Self {
        let values = parameters.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        Self {
            config: v1::ConfigParameters { values },
            object_type: object_type.into(),
            partition: partition.into(),
        }
    }
}

/// An attribute of an ADD, as the supervisor's mapping sends it.
pub fn added(name: &str, value: v1::Value) -> v1::AttributeChange {
    v1::AttributeChange {
        name: name.into(),
        modification_type: v1::AttributeModificationType::Add as i32,
        value_adds: vec![value],
        value_deletes: vec![],
    }
}

impl DirectConnector {
    /// Exports the ADDs `add` makes of `names` as the supervisor's export queue does: one export
    /// session, `concurrency / 2` batches in flight, two ADDs a batch. Asserts that each
    /// succeeded; returns ADDs/s.
    pub async fn creates(
        &self,
        target: &Target,
        names: &[String],
        concurrency: usize,
        add: impl Fn(&str) -> v1::CsEntryChange + Clone + Send + 'static,
    ) -> f64 {
        let open = v1::OpenExportConnectionRequest {
            config: Some(target.config.clone()),
            object_type: target.object_type.clone(),
            partition_id: target.partition.clone(),
            export_type: v1::ExportType::AttributeUpdate as i32,
        };
        let session = self.client.clone().open_export_connection(self.request(open)).await;
        let session = session.expect("OpenExportConnection").into_inner().session_id;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in names.chunks(names.len().div_ceil((concurrency / 2).max(1))) {
            let (mut client, token) = (self.client.clone(), self.token.clone());
            let (chunk, session, add) = (chunk.to_vec(), session.clone(), add.clone());
            tasks.spawn(async move {
                for batch in chunk.chunks(2) {
                    let entries = batch.iter().map(|name| add(name)).collect();
                    let put = v1::PutExportEntriesRequest { session_id: session.clone(), entries };
                    let results = client.put_export_entries(request(&token, put)).await;
                    let results = results.expect("PutExportEntries").into_inner().results;
                    assert!(
                        results.len() == batch.len()
                            && results.iter().all(|r| r.error_kind() == v1::ErrorKind::None),
                        "{results:?}"
                    );
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("an export task");
        }
        names.len() as f64 / started.elapsed().as_secs_f64()
    }

    /// A full import as the supervisor asks for it (pages of 500, the next asked for as soon as
    /// one arrives), each page decoded and its entries counted, nothing compared or stored.
    /// Returns the seconds and the entries read.
    pub async fn full_import(&self, target: &Target) -> (f64, usize) {
        let started = Instant::now();
        let open = v1::OpenImportConnectionRequest {
            config: Some(target.config.clone()),
            import_type: v1::ImportType::Full as i32,
            object_type: target.object_type.clone(),
            partition_id: target.partition.clone(),
            page_size: 500,
            watermark: vec![],
        };
        let mut client = self.client.clone();
        let session = client.open_import_connection(self.request(open)).await;
        let session = session.expect("OpenImportConnection").into_inner().session_id;
        let fetch = |session: String| {
            let (mut client, token) = (self.client.clone(), self.token.clone());
            tokio::spawn(async move {
                let get = v1::GetImportEntriesRequest { session_id: session };
                client.get_import_entries(request(&token, get)).await.expect("GetImportEntries").into_inner()
            })
        };
        let (mut next, mut entries) = (Some(fetch(session.clone())), 0);
        while let Some(fetching) = next.take() {
            let page = fetching.await.expect("a page");
            if page.more_to_import {
                next = Some(fetch(session.clone()));
            }
            entries += page.entries.iter().filter(|e| e.error.is_none() && e.entry.is_some()).count();
        }
        let close = v1::CloseImportConnectionRequest { session_id: session };
        client.close_import_connection(self.request(close)).await.expect("CloseImportConnection");
        (started.elapsed().as_secs_f64(), entries)
    }
}
