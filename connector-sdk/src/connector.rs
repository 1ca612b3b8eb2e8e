//! SDK v2: a connector is one trait. Implement [`Connector`] (what the connector is: its name,
//! capabilities, parameters, and how to open a [`Target`] from a configuration) and [`Target`]
//! (what one configured target does: schema, partitions, export, import, lookups, passwords),
//! and hand the connector to [`run_connector`]. The SDK implements the `ecma.v1` gRPC service:
//! the handshake and version negotiation, the parameter declarations and the problems of a
//! configuration that lacks a required one, the target kept for as long as the configuration
//! stays the same, import and export sessions, one result per exported entry, error kinds on the
//! wire, and "unsupported" answers for what a target does not do.

use std::collections::HashMap;
use std::sync::Arc;

use ecma_proto::v1::{self, ConfigParameters, ErrorKind};
use tonic::{Request, Response, Status};

use crate::{Sessions, error_status, missing_required, negotiate};

/// A failure, as the protocol carries it: an error kind and a detail (and, for a configuration
/// problem, the parameter it concerns). The one error type of every connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub detail: String,
    /// What it concerns: the parameter of a configuration problem, the attribute of a refused
    /// password.
    pub parameter: Option<String>,
    /// The call may or may not have written what it was sent (a connection that broke during a
    /// COMMIT): the supervisor looks the objects up instead of taking the call for failed.
    pub outcome_unknown: bool,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), parameter: None, outcome_unknown: false }
    }

    /// A call whose outcome is not known: on the wire, UNAVAILABLE without an error kind.
    pub fn outcome_unknown(detail: impl Into<String>) -> Self {
        Self { outcome_unknown: true, ..Self::new(ErrorKind::ConnectionFailed, detail) }
    }

    /// A configuration problem with `parameter`.
    pub fn config(parameter: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfiguration, detail).on(parameter)
    }

    /// An operation this connector (or this configuration) does not offer.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, what)
    }

    /// The same error, about `parameter`.
    pub fn on(mut self, parameter: impl Into<String>) -> Self {
        self.parameter = Some(parameter.into());
        self
    }

    fn problem(&self) -> v1::ConfigProblem {
        v1::ConfigProblem {
            parameter: self.parameter.clone().unwrap_or_default(),
            message: self.detail.clone(),
            kind: self.kind as i32,
        }
    }
}

impl std::fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ConnectorError {}

impl From<ConnectorError> for Status {
    fn from(e: ConnectorError) -> Self {
        if e.outcome_unknown { Status::unavailable(e.detail) } else { error_status(e.kind, e.detail) }
    }
}

impl From<Status> for ConnectorError {
    /// The status's error kind; a status without one whose code says the call may have been
    /// done (UNAVAILABLE, UNKNOWN, ABORTED, CANCELLED) keeps that meaning.
    fn from(status: Status) -> Self {
        match ecma_proto::error_kind_of(&status) {
            Some(kind) => Self::new(kind, status.message()),
            None if matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            ) =>
            {
                Self::outcome_unknown(status.message())
            }
            None => Self::new(ErrorKind::Internal, status.message()),
        }
    }
}

/// What became of one exported entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Written: the object's anchors (for an add, the new object's) and the attributes the
    /// target confirms (a DN it built, say).
    Applied { anchors: Vec<v1::Anchor>, attributes: Vec<v1::AttributeValues> },
    /// Not written, for this reason.
    Failed(ConnectorError),
    /// Sent, but whether it was written is not known (a connection broken after the request):
    /// no result goes back for it, and the supervisor looks the object up.
    Unknown,
}

impl Outcome {
    /// Written, with these anchors.
    pub fn applied(anchors: Vec<v1::Anchor>) -> Self {
        Outcome::Applied { anchors, attributes: vec![] }
    }
}

/// One page of an import.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub entries: Vec<v1::ImportEntry>,
    pub more: bool,
    /// The watermark after this page (the last page's is the import's).
    pub watermark: Vec<u8>,
}

/// An import under way: its pages, one call at a time.
#[tonic::async_trait]
pub trait ImportRun: Send + 'static {
    async fn next_page(&mut self) -> Result<Page, ConnectorError>;
    /// The watermark to commit when the import is closed after its last page.
    fn final_watermark(&self) -> Vec<u8> {
        vec![]
    }
}

/// What an import is asked for.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub delta: bool,
    pub object_type: String,
    pub partition: String,
    pub page_size: u32,
    /// Where a delta starts (empty for a full import).
    pub watermark: Vec<u8>,
}

/// What an export batch is for.
#[derive(Debug, Clone)]
pub struct ExportScope {
    pub object_type: String,
    pub partition: String,
}

impl ExportScope {
    /// Refuses a session for another object type or partition than the one a connector serves.
    pub fn expect(&self, object_type: &str, partition: &str) -> Result<(), ConnectorError> {
        if self.object_type == object_type && self.partition == partition {
            return Ok(());
        }
        Err(ConnectorError::new(
            ErrorKind::InvalidConfiguration,
            format!(
                "this connector serves object type {object_type:?} in partition {partition:?}, not {:?} in {:?}",
                self.object_type, self.partition
            ),
        ))
    }
}

/// A password operation.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub anchors: Vec<v1::Anchor>,
    pub dn: String,
    /// `None` for a set (an administrator's reset), the current password for a change.
    pub old: Option<String>,
    pub new: String,
    pub unlock_account: bool,
    pub force_change_at_logon: bool,
}

/// A connector: what it is, and how it opens a target from a configuration.
#[tonic::async_trait]
pub trait Connector: Send + Sync + 'static {
    type Target: Target;
    /// The name and version it gives in Hello.
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn capabilities(&self) -> v1::Capabilities;
    /// The parameters it declares (the SDK names the required ones a configuration lacks).
    fn parameters(&self) -> Vec<v1::ConfigParameterDefinition>;
    /// Opens the target a configuration describes (kept while the configuration stays the
    /// same); a configuration problem is an error with its parameter.
    async fn open(&self, config: &ConfigParameters) -> Result<Self::Target, ConnectorError>;
}

/// One configured target.
#[tonic::async_trait]
pub trait Target: Send + Sync + 'static {
    /// Problems found by trying the target (reachable, credentials work), beyond those `open`
    /// found; none by default.
    async fn validate(&self) -> Vec<ConnectorError> {
        vec![]
    }
    async fn schema(&self) -> Result<Vec<v1::SchemaType>, ConnectorError>;
    async fn partitions(&self) -> Result<Vec<v1::Partition>, ConnectorError>;
    /// Checks an export session's object type and partition when it is opened.
    async fn open_export(&self, scope: &ExportScope) -> Result<(), ConnectorError> {
        let _ = scope;
        Ok(())
    }
    /// One outcome per entry, in the entries' order; an error fails the whole call (nothing of
    /// the batch was written).
    async fn export(
        &self,
        scope: &ExportScope,
        entries: &[v1::CsEntryChange],
    ) -> Result<Vec<Outcome>, ConnectorError> {
        let _ = (scope, entries);
        Err(ConnectorError::unsupported("this connector does not export"))
    }
    async fn import(&self, request: ImportRequest) -> Result<Box<dyn ImportRun>, ConnectorError> {
        let _ = request;
        Err(ConnectorError::unsupported("this connector does not import"))
    }
    async fn lookup(
        &self,
        object_type: &str,
        partition: &str,
        by: &v1::lookup_entries_request::By,
    ) -> Result<Vec<v1::Entry>, ConnectorError> {
        let _ = (object_type, partition, by);
        Err(ConnectorError::unsupported("this connector does not look objects up"))
    }
    async fn password(&self, change: PasswordChange) -> Result<(), ConnectorError> {
        let _ = change;
        Err(ConnectorError::unsupported("this connector does not set passwords"))
    }
}

/// A builder of the capabilities a connector declares in Hello.
#[derive(Debug, Clone)]
pub struct Capabilities(v1::Capabilities);

impl Capabilities {
    /// Nothing offered yet; no DN, attribute-update exports, normal confirmation, batches of
    /// 100, pages of up to 1,000.
    pub fn new() -> Self {
        Self(v1::Capabilities {
            distinguished_name_style: v1::DistinguishedNameStyle::None as i32,
            export_type: v1::ExportType::AttributeUpdate as i32,
            normalizations: v1::Normalizations::None as i32,
            object_confirmation: v1::ObjectConfirmation::Normal as i32,
            export_batch_size: 100,
            import_max_page_size: 1000,
            ..Default::default()
        })
    }
    pub fn import(mut self) -> Self {
        self.0.supports_import = true;
        self
    }
    pub fn delta_import(mut self) -> Self {
        self.0.delta_import = true;
        self
    }
    pub fn export(mut self, export_type: v1::ExportType) -> Self {
        self.0.supports_export = true;
        self.0.export_type = export_type as i32;
        self
    }
    pub fn lookup(mut self) -> Self {
        self.0.supports_lookup = true;
        self
    }
    pub fn password(mut self) -> Self {
        self.0.supports_password = true;
        self
    }
    pub fn concurrent(mut self) -> Self {
        self.0.concurrent_operation = true;
        self
    }
    pub fn batches(mut self, export_batch_size: u32, import_max_page_size: u32) -> Self {
        self.0.export_batch_size = export_batch_size;
        self.0.import_max_page_size = import_max_page_size;
        self
    }
    /// Edit what has no method of its own.
    pub fn with(mut self, edit: impl FnOnce(&mut v1::Capabilities)) -> Self {
        edit(&mut self.0);
        self
    }
    pub fn build(self) -> v1::Capabilities {
        self.0
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// An import under way, as a session holds it.
type SharedImport = Arc<ReadAhead>;

/// An import whose next page is read while the last one is on its way: a task asks the run for
/// its pages one after the other and keeps one ready, so that the target reads the next page
/// while the supervisor stores this one (the supervisor asks for the next page as soon as a
/// page arrives; without this, the connector would start reading it only then).
struct ReadAhead {
    run: Arc<tokio::sync::Mutex<Box<dyn ImportRun>>>,
    pages: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Page, ConnectorError>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(run: Box<dyn ImportRun>) -> Self {
        use tracing::Instrument;
        let run = Arc::new(tokio::sync::Mutex::new(run));
        let (sender, pages) = tokio::sync::mpsc::channel(1);
        let reading = run.clone();
        let task = tokio::spawn(
            async move {
                // One page ahead, no more: the next is read once the last has been taken.
                while let Ok(room) = sender.reserve().await {
                    let page = reading.lock().await.next_page().await;
                    // A failed page is handed on like a page; the call after it asks again.
                    let last = matches!(&page, Ok(page) if !page.more);
                    room.send(page);
                    if last {
                        break;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Self { run, pages: tokio::sync::Mutex::new(pages), task }
    }

    /// The next page; after the last, an empty one.
    async fn next_page(&self) -> Result<Page, ConnectorError> {
        match self.pages.lock().await.recv().await {
            Some(page) => page,
            None => Ok(Page::default()),
        }
    }

    /// The run's final watermark, once nothing reads ahead.
    async fn final_watermark(&self) -> Vec<u8> {
        self.task.abort();
        self.run.lock().await.final_watermark()
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `ecma.v1` service of a [`Connector`].
pub struct Service<C: Connector> {
    connector: C,
    /// The target of the last configuration seen, kept while it stays the same.
    slot: tokio::sync::Mutex<Option<(ConfigParameters, Arc<C::Target>)>>,
    exports: Sessions<(Arc<C::Target>, Arc<ExportScope>)>,
    imports: std::sync::Mutex<HashMap<String, SharedImport>>,
}

impl<C: Connector> Service<C> {
    pub fn new(connector: C) -> Self {
        Self {
            connector,
            slot: tokio::sync::Mutex::new(None),
            exports: Sessions::default(),
            imports: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The target of `config`: opened once, kept while the configuration stays the same.
    pub async fn target(&self, config: &Option<ConfigParameters>) -> Result<Arc<C::Target>, ConnectorError> {
        let key = config.clone().unwrap_or_default();
        let mut slot = self.slot.lock().await;
        if let Some((cached, target)) = slot.as_ref()
            && *cached == key
        {
            return Ok(target.clone());
        }
        let target = Arc::new(self.connector.open(&key).await?);
        *slot = Some((key, target.clone()));
        Ok(target)
    }

    fn import_run(&self, id: &str) -> Result<SharedImport, Status> {
        self.imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no such session {id:?}")))
    }
}

/// The results of an export batch: one per entry whose outcome is known.
fn results(entries: &[v1::CsEntryChange], outcomes: Vec<Outcome>) -> Vec<v1::CsEntryChangeResult> {
    let mut outcomes = outcomes.into_iter();
    entries
        .iter()
        .filter_map(|entry| {
            // An entry the target gave no outcome for may or may not be written: no result, and
            // the supervisor looks it up.
            let outcome = outcomes.next().unwrap_or(Outcome::Unknown);
            let identifier = entry.identifier.clone();
            match outcome {
                Outcome::Applied { anchors, attributes } => Some(v1::CsEntryChangeResult {
                    identifier,
                    error_kind: ErrorKind::None as i32,
                    anchors,
                    confirmed_attributes: attributes,
                    ..Default::default()
                }),
                Outcome::Failed(e) => Some(v1::CsEntryChangeResult {
                    identifier,
                    error_kind: e.kind as i32,
                    error_detail: e.detail,
                    ..Default::default()
                }),
                Outcome::Unknown => None,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl<C: Connector> v1::connector_server::Connector for Service<C> {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: negotiate(request.get_ref())?,
            connector_name: self.connector.name().into(),
            connector_version: self.connector.version().into(),
            capabilities: Some(self.connector.capabilities()),
        }))
    }

    async fn get_config_parameters(
        &self,
        _: Request<v1::GetConfigParametersRequest>,
    ) -> Result<Response<v1::GetConfigParametersResponse>, Status> {
        Ok(Response::new(v1::GetConfigParametersResponse { parameters: self.connector.parameters() }))
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        let config = request.into_inner().config;
        let mut problems = missing_required(&self.connector.parameters(), &config);
        if problems.is_empty() {
            match self.target(&config).await {
                Ok(target) => problems.extend(target.validate().await.iter().map(ConnectorError::problem)),
                Err(e) => problems.push(e.problem()),
            }
        }
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let types = self.target(&request.into_inner().config).await?.schema().await?;
        Ok(Response::new(v1::GetSchemaResponse { schema: Some(v1::Schema { types }) }))
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        let partitions = self.target(&request.into_inner().config).await?.partitions().await?;
        Ok(Response::new(v1::GetPartitionsResponse { partitions }))
    }

    async fn get_hierarchy(
        &self,
        _: Request<v1::GetHierarchyRequest>,
    ) -> Result<Response<v1::GetHierarchyResponse>, Status> {
        Ok(Response::new(v1::GetHierarchyResponse { nodes: vec![] }))
    }

    async fn open_import_connection(
        &self,
        request: Request<v1::OpenImportConnectionRequest>,
    ) -> Result<Response<v1::OpenImportConnectionResponse>, Status> {
        let request = request.into_inner();
        let target = self.target(&request.config).await?;
        let run = target
            .import(ImportRequest {
                delta: request.import_type == v1::ImportType::Delta as i32,
                object_type: request.object_type,
                partition: request.partition_id,
                page_size: request.page_size,
                watermark: request.watermark,
            })
            .await?;
        let id = uuid::Uuid::new_v4().to_string();
        self.imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::new(ReadAhead::start(run)));
        Ok(Response::new(v1::OpenImportConnectionResponse { session_id: id }))
    }

    async fn get_import_entries(
        &self,
        request: Request<v1::GetImportEntriesRequest>,
    ) -> Result<Response<v1::GetImportEntriesResponse>, Status> {
        let run = self.import_run(&request.into_inner().session_id)?;
        let page = run.next_page().await?;
        Ok(Response::new(v1::GetImportEntriesResponse {
            entries: page.entries,
            more_to_import: page.more,
            watermark: page.watermark,
        }))
    }

    async fn close_import_connection(
        &self,
        request: Request<v1::CloseImportConnectionRequest>,
    ) -> Result<Response<v1::CloseImportConnectionResponse>, Status> {
        let run =
            self.imports.lock().unwrap_or_else(|e| e.into_inner()).remove(&request.into_inner().session_id);
        let watermark = match run {
            Some(run) => run.final_watermark().await,
            None => vec![],
        };
        Ok(Response::new(v1::CloseImportConnectionResponse { watermark }))
    }

    async fn open_export_connection(
        &self,
        request: Request<v1::OpenExportConnectionRequest>,
    ) -> Result<Response<v1::OpenExportConnectionResponse>, Status> {
        let request = request.into_inner();
        let target = self.target(&request.config).await?;
        let scope = ExportScope { object_type: request.object_type, partition: request.partition_id };
        target.open_export(&scope).await?;
        let session_id = self.exports.open((target, Arc::new(scope)));
        Ok(Response::new(v1::OpenExportConnectionResponse { session_id }))
    }

    async fn put_export_entries(
        &self,
        request: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        let request = request.into_inner();
        let (target, scope) = self.exports.get(&request.session_id)?;
        let outcomes = target.export(&scope, &request.entries).await?;
        Ok(Response::new(v1::PutExportEntriesResponse { results: results(&request.entries, outcomes) }))
    }

    async fn close_export_connection(
        &self,
        request: Request<v1::CloseExportConnectionRequest>,
    ) -> Result<Response<v1::CloseExportConnectionResponse>, Status> {
        self.exports.close(&request.into_inner().session_id);
        Ok(Response::new(v1::CloseExportConnectionResponse {}))
    }

    async fn lookup_entries(
        &self,
        request: Request<v1::LookupEntriesRequest>,
    ) -> Result<Response<v1::LookupEntriesResponse>, Status> {
        let request = request.into_inner();
        let by =
            request.by.ok_or_else(|| Status::invalid_argument("a lookup needs an anchor or an attribute"))?;
        let target = self.target(&request.config).await?;
        let entries = target.lookup(&request.object_type, &request.partition_id, &by).await?;
        Ok(Response::new(v1::LookupEntriesResponse { entries }))
    }

    async fn set_password(
        &self,
        request: Request<v1::SetPasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        if !self.connector.capabilities().supports_password {
            return Err(ConnectorError::unsupported("this connector does not set passwords").into());
        }
        let request = request.into_inner();
        let target = self.target(&request.config).await?;
        let change = PasswordChange {
            anchors: request.anchors,
            dn: request.dn,
            old: None,
            new: request.new_password,
            unlock_account: request.unlock_account,
            force_change_at_logon: request.force_change_at_logon,
        };
        password_response(target.password(change).await)
    }

    async fn change_password(
        &self,
        request: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<v1::PasswordResponse>, Status> {
        if !self.connector.capabilities().supports_password {
            return Err(ConnectorError::unsupported("this connector does not change passwords").into());
        }
        let request = request.into_inner();
        let target = self.target(&request.config).await?;
        let change = PasswordChange {
            anchors: request.anchors,
            dn: request.dn,
            old: Some(request.old_password),
            new: request.new_password,
            unlock_account: false,
            force_change_at_logon: false,
        };
        password_response(target.password(change).await)
    }
}

/// A password operation's answer: a refusal by the target in the response; an operation the
/// connector does not offer a failed call (UNIMPLEMENTED), as for any call it does not serve.
fn password_response(outcome: Result<(), ConnectorError>) -> Result<Response<v1::PasswordResponse>, Status> {
    match outcome {
        Err(e) if e.kind == ErrorKind::Unsupported => Err(e.into()),
        outcome => Ok(Response::new(v1::PasswordResponse {
            error: outcome.err().map(|e| v1::Error {
                kind: e.kind as i32,
                message: e.detail,
                attribute: e.parameter.unwrap_or_default(),
            }),
        })),
    }
}

/// The whole `main` of a connector written to the [`Connector`] trait.
pub fn run_connector<C: Connector>(connector: C) -> anyhow::Result<()> {
    crate::run(Service::new(connector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `pages` pages of one entry each, counting how often it was asked; fails the first time
    /// it is asked for page `fail_once`.
    struct Numbered {
        asked: Arc<AtomicUsize>,
        served: usize,
        pages: usize,
        fail_once: Option<usize>,
    }

    #[tonic::async_trait]
    impl ImportRun for Numbered {
        async fn next_page(&mut self) -> Result<Page, ConnectorError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.fail_once == Some(self.served + 1) {
                self.fail_once = None;
                return Err(ConnectorError::new(ErrorKind::ConnectionFailed, "the target went away"));
            }
            self.served += 1;
            let entry = v1::Entry { dn: format!("page {}", self.served), ..Default::default() };
            Ok(Page {
                entries: vec![v1::ImportEntry { entry: Some(entry), ..Default::default() }],
                more: self.served < self.pages,
                watermark: vec![self.served as u8],
            })
        }
        fn final_watermark(&self) -> Vec<u8> {
            vec![b'f', self.served as u8]
        }
    }

    fn numbered(pages: usize, fail_once: Option<usize>) -> (ReadAhead, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let run = Numbered { asked: asked.clone(), served: 0, pages, fail_once };
        (ReadAhead::start(Box::new(run)), asked)
    }

    fn dn(page: &Page) -> &str {
        page.entries[0].entry.as_ref().map(|e| e.dn.as_str()).unwrap_or_default()
    }

    /// Lets the read-ahead task run until it waits.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_import_reads_one_page_ahead_and_no_more() {
        let (import, asked) = numbered(5, None);
        settle().await;
        assert_eq!(asked.load(Ordering::SeqCst), 1, "the first page is read before it is asked for");
        let first = import.next_page().await.unwrap();
        assert_eq!((dn(&first), first.more, first.watermark.as_slice()), ("page 1", true, &[1u8][..]));
        settle().await;
        assert_eq!(asked.load(Ordering::SeqCst), 2, "the second is read while the first is served");
        settle().await;
        assert_eq!(asked.load(Ordering::SeqCst), 2, "and no further until it is taken");
        assert_eq!(dn(&import.next_page().await.unwrap()), "page 2");
    }

    #[tokio::test]
    async fn an_import_ends_with_empty_pages_and_its_final_watermark() {
        let (import, asked) = numbered(2, None);
        assert!(import.next_page().await.unwrap().more);
        let last = import.next_page().await.unwrap();
        assert_eq!((dn(&last), last.more), ("page 2", false));
        let after = import.next_page().await.unwrap();
        assert_eq!((after.entries.len(), after.more), (0, false));
        assert_eq!(asked.load(Ordering::SeqCst), 2, "nothing is asked for after the last page");
        assert_eq!(import.final_watermark().await, [b'f', 2]);
    }

    #[tokio::test]
    async fn a_failed_page_is_handed_on_and_the_next_call_asks_again() {
        let (import, _) = numbered(3, Some(2));
        assert_eq!(dn(&import.next_page().await.unwrap()), "page 1");
        let failed = import.next_page().await.unwrap_err();
        assert_eq!(failed, ConnectorError::new(ErrorKind::ConnectionFailed, "the target went away"));
        assert_eq!(dn(&import.next_page().await.unwrap()), "page 2");
        let last = import.next_page().await.unwrap();
        assert_eq!((dn(&last), last.more), ("page 3", false));
    }

    #[tokio::test]
    async fn closing_an_import_midway_stops_its_reading() {
        let (import, asked) = numbered(100, None);
        assert_eq!(dn(&import.next_page().await.unwrap()), "page 1");
        assert_eq!(import.final_watermark().await, [b'f', asked.load(Ordering::SeqCst) as u8]);
        let stopped = asked.load(Ordering::SeqCst);
        settle().await;
        assert_eq!(asked.load(Ordering::SeqCst), stopped, "nothing is read once the import is closed");
    }

    fn entry(id: &str) -> v1::CsEntryChange {
        v1::CsEntryChange { identifier: id.into(), ..Default::default() }
    }

    #[test]
    fn one_result_per_entry_whose_outcome_is_known() {
        let entries = [entry("a"), entry("b"), entry("c"), entry("d")];
        let anchor = v1::Anchor { name: "id".into(), value: Some(v1::Value::string("1")) };
        let outcomes = vec![
            Outcome::applied(vec![anchor.clone()]),
            Outcome::Failed(ConnectorError::new(ErrorKind::AlreadyExists, "taken")),
            Outcome::Unknown,
        ];
        let results = results(&entries, outcomes);
        let summary: Vec<(&str, i32)> =
            results.iter().map(|r| (r.identifier.as_str(), r.error_kind)).collect();
        assert_eq!(
            summary,
            [
                ("a", ErrorKind::None as i32),
                ("b", ErrorKind::AlreadyExists as i32),
                // "c" is unknown, and "d" got no outcome at all: no result for either, so that
                // the supervisor looks them up.
            ]
        );
        assert_eq!(results[0].anchors, [anchor]);
        assert_eq!(results[1].error_detail, "taken");
    }

    #[test]
    fn errors_keep_their_kind_on_the_wire_and_name_their_parameter() {
        let status = Status::from(ConnectorError::new(ErrorKind::NoSuchObject, "gone"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(ConnectorError::from(status), ConnectorError::new(ErrorKind::NoSuchObject, "gone"));
        // A call whose outcome is unknown stays so on the wire (no error kind: the supervisor
        // looks the objects up).
        let unknown = Status::from(ConnectorError::from(Status::unavailable("COMMIT broke")));
        assert_eq!((unknown.code(), ecma_proto::error_kind_of(&unknown)), (tonic::Code::Unavailable, None));
        let problem = ConnectorError::config("url", "url is required").problem();
        assert_eq!(
            (problem.parameter.as_str(), problem.kind),
            ("url", ErrorKind::InvalidConfiguration as i32)
        );
        let capabilities =
            Capabilities::new().import().lookup().export(v1::ExportType::AttributeReplace).build();
        assert!(capabilities.supports_import && capabilities.supports_lookup && capabilities.supports_export);
        assert!(!capabilities.supports_password && !capabilities.delta_import);
        assert_eq!(capabilities.export_type, v1::ExportType::AttributeReplace as i32);
    }
}
