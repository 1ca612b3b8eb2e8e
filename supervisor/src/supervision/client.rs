//! The gRPC client of one connector incarnation, over its Unix socket: the per-spawn token on
//! every call, a deadline on every call, a watch for a child that stopped answering, and errors
//! mapped to [`CallError`] without parsing messages.
//!
//! A call outstanding longer than `hang_check_after` gets the child probed: a `grpc.health.v1`
//! check on the call's own connection, with the short deadline `hang_probe_timeout`, repeated
//! every `hang_check_after` while the call lasts. The connector's gRPC server answers health
//! checks beside its calls, so a child whose target is slow (a long LDAP add, a big SQL batch)
//! answers and its call goes on up to `call_timeout`; a child that does not answer (stopped,
//! deadlocked, its runtime starved) is taken for hung: killed at once, the call's outcome unknown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ecma_proto::v1::{self, ErrorKind, connector_client::ConnectorClient};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;

use super::ConnectorHandle;

/// Why a call did not give a result.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The connector is not ready; nothing was sent.
    Unavailable { retry_after: Duration, reason: &'static str },
    /// The call was sent but the child died or overran its deadline: the outcome is unknown.
    Lost { detail: String },
    /// The connector answered with a typed error.
    Failed { kind: ErrorKind, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unavailable { reason, .. } => write!(f, "connector is not ready ({reason})"),
            CallError::Lost { detail } => write!(f, "call lost, outcome unknown: {detail}"),
            CallError::Failed { kind, message } => write!(f, "{}: {message}", kind.as_str_name()),
        }
    }
}

impl std::error::Error for CallError {}

/// Adds the per-spawn token to every call.
#[derive(Clone)]
pub struct TokenInterceptor(AsciiMetadataValue);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(ecma_proto::TOKEN_METADATA, self.0.clone());
        // The trace context of the call's span (Session::call), so that the connector's spans
        // join the trace.
        ecma_telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

pub type Client = ConnectorClient<InterceptedService<Channel, TokenInterceptor>>;

/// A live, handshaken connection to one incarnation.
pub struct Session {
    pub incarnation: u64,
    pub protocol_version: u32,
    pub capabilities: v1::Capabilities,
    /// The configuration parameters sent with every call that takes them.
    pub config: v1::ConfigParameters,
    client: Client,
    health: HealthClient<InterceptedService<Channel, TokenInterceptor>>,
    call_timeout: Duration,
    /// How long a call may be outstanding before the child is probed (and then again each time).
    hang_check_after: Duration,
    /// Deadline of each probe: no answer within it, and the child is taken for hung.
    hang_probe_timeout: Duration,
    /// The connector, to ask for a kill when a call overruns its deadline.
    handle: Weak<ConnectorHandle>,
}

/// The answer to one `grpc.health.v1` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Serving,
    /// It answered, but not `SERVING`.
    NotServing,
    /// The check failed with a status (a broken connection, say): the child answered something,
    /// or its end of the socket is gone; either way it is not stuck.
    Failed(String),
    /// Nothing within the deadline: the child stopped answering.
    NoAnswer(Duration),
}

/// How a watched call ended.
enum Outcome<T> {
    Answered(Result<Response<T>, Status>),
    /// The child did not answer a probe while the call was outstanding (the detail says so).
    Hung(String),
    /// `call_timeout` passed.
    Overran,
}

/// Opens a channel to the socket (fails at once if nothing listens there yet).
pub async fn connect(
    socket: PathBuf,
    token: &str,
) -> Result<(Client, HealthClient<InterceptedService<Channel, TokenInterceptor>>), tonic::transport::Error> {
    // The URI is a placeholder; the connector function below decides where to connect.
    let channel = Endpoint::from_static("http://connector.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    let interceptor = TokenInterceptor(token.parse().expect("the token is ASCII hex"));
    Ok((
        ConnectorClient::with_interceptor(channel.clone(), interceptor.clone())
            .max_decoding_message_size(64 << 20),
        HealthClient::with_interceptor(channel, interceptor),
    ))
}

impl Session {
    pub(crate) fn new(
        incarnation: u64,
        hello: v1::HelloResponse,
        config: v1::ConfigParameters,
        client: Client,
        health: HealthClient<InterceptedService<Channel, TokenInterceptor>>,
        handle: &Arc<ConnectorHandle>,
    ) -> Self {
        Self {
            incarnation,
            protocol_version: hello.protocol_version,
            capabilities: hello.capabilities.unwrap_or_default(),
            config,
            client,
            health,
            call_timeout: handle.config.call_timeout,
            hang_check_after: handle.config.hang_check_after,
            hang_probe_timeout: handle.config.hang_probe_timeout,
            handle: Arc::downgrade(handle),
        }
    }

    /// A clone of the client, for one call.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one call under the deadline, watching the child while it lasts. A call that
    /// overruns its deadline, or meets a child that does not answer a probe, gets the child
    /// killed: its outcome is unknown, and a child that ignores deadlines (or hung) is not
    /// trusted with the next call.
    pub async fn call<T, F>(&self, operation: &'static str, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        use tracing::Instrument;
        let connector = self.handle.upgrade().map(|h| h.name.clone()).unwrap_or_default();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("ecma.v1.Connector/{operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = "ecma.v1.Connector",
            rpc.method = operation,
            rpc.grpc.status_code = tracing::field::Empty,
            ecma.connector = %connector,
            ecma.incarnation = self.incarnation,
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let call = call.instrument(span.clone());
        let watched = async {
            tokio::select! {
                biased;
                answer = call => Outcome::Answered(answer),
                detail = self.watch(operation, started) => Outcome::Hung(detail),
            }
        };
        let outcome = match tokio::time::timeout(self.call_timeout, watched).await {
            // The channel enforces the request's grpc-timeout (the same deadline) on its own, and
            // reports it as CANCELLED: an overrun too.
            Ok(Outcome::Answered(Err(status)))
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= self.call_timeout =>
            {
                Outcome::Overran
            }
            Ok(outcome) => outcome,
            Err(_) => Outcome::Overran,
        };
        let result = match &outcome {
            Outcome::Answered(Ok(_)) => "ok",
            Outcome::Answered(Err(_)) => "error",
            Outcome::Hung(_) => "hung",
            Outcome::Overran => "timeout",
        };
        metrics::histogram!(
            "connector_call_duration_seconds",
            "connector" => connector.clone(),
            "operation" => operation,
            "result" => result
        )
        .record(started.elapsed().as_secs_f64());
        match &outcome {
            Outcome::Answered(Ok(_)) => {
                span.record("rpc.grpc.status_code", 0);
            }
            Outcome::Answered(Err(status)) => {
                span.record("rpc.grpc.status_code", status.code() as i32);
                span.record("otel.status_code", "ERROR");
                span.record("error.type", format!("{:?}", status.code()));
            }
            Outcome::Hung(_) | Outcome::Overran => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", result);
            }
        }
        match outcome {
            Outcome::Answered(Ok(response)) => Ok(response.into_inner()),
            Outcome::Answered(Err(status)) => {
                let error = map_status(status);
                if let CallError::Lost { detail } = &error {
                    // The child died in the call, or its transport broke: either way it is not
                    // trusted with the next call (and must not answer a reconciliation).
                    self.kill(&format!("{operation} lost: {detail}"));
                }
                Err(error)
            }
            Outcome::Hung(detail) => {
                metrics::counter!("connector_hangs_total", "connector" => connector).increment(1);
                self.kill(&detail);
                Err(CallError::Lost { detail })
            }
            Outcome::Overran => {
                let detail = format!("{operation} overran its {:?} deadline", self.call_timeout);
                self.kill(&detail);
                Err(CallError::Lost { detail })
            }
        }
    }

    /// Resolves only if the child stops answering while a call is outstanding: a probe after
    /// `hang_check_after`, and again every `hang_check_after` while the call lasts, each with
    /// the deadline `hang_probe_timeout`. A live child answers however slow its target is.
    async fn watch(&self, operation: &str, started: Instant) -> String {
        loop {
            tokio::time::sleep(self.hang_check_after).await;
            match self.check_health(self.hang_probe_timeout).await {
                Health::NoAnswer(within) => {
                    return format!(
                        "{operation} hung: no answer after {:.1?}, nor to a health check within {within:?}",
                        started.elapsed()
                    );
                }
                // Alive (a slow target), or its connection broke, which the call itself reports.
                Health::Serving | Health::NotServing | Health::Failed(_) => {
                    tracing::debug!(operation, outstanding = ?started.elapsed(), "call outstanding; the connector answers its health check");
                }
            }
        }
    }

    fn kill(&self, reason: &str) {
        if let Some(handle) = self.handle.upgrade() {
            handle.request_kill(self.incarnation, reason);
        }
    }

    /// A deadline for a request, so that the connector sees it too (`grpc-timeout`).
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.call_timeout);
        request
    }

    /// One `grpc.health.v1` check, on the connection the calls use.
    pub async fn check_health(&self, timeout: Duration) -> Health {
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let mut health = self.health.clone();
        // No grpc-timeout on the request: the deadline is ours alone, so that running out of it
        // is always "no answer", never a status that looks like one.
        let check = health.check(HealthCheckRequest { service: String::new() });
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Health::Serving,
            Ok(Ok(_)) => Health::NotServing,
            Ok(Err(status)) => Health::Failed(status.message().to_string()),
            Err(_) => Health::NoAnswer(timeout),
        }
    }
}

/// Maps a failed call: a typed error kind when the connector sent one; otherwise a broken
/// transport (the outcome is unknown) or an unimplemented operation.
pub fn map_status(status: Status) -> CallError {
    if let Some(kind) = ecma_proto::error_kind_of(&status) {
        return CallError::Failed { kind, message: status.message().to_string() };
    }
    match status.code() {
        tonic::Code::Unimplemented => CallError::Failed {
            kind: ErrorKind::Unsupported,
            message: format!("the connector does not implement this operation ({})", status.message()),
        },
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Aborted => {
            CallError::Lost { detail: status.message().to_string() }
        }
        tonic::Code::DeadlineExceeded => CallError::Lost { detail: "deadline exceeded".into() },
        tonic::Code::NotFound => {
            CallError::Failed { kind: ErrorKind::NoSuchObject, message: status.message().into() }
        }
        tonic::Code::InvalidArgument => {
            CallError::Failed { kind: ErrorKind::InvalidAttributeValue, message: status.message().into() }
        }
        _ => CallError::Failed { kind: ErrorKind::Internal, message: status.message().to_string() },
    }
}
