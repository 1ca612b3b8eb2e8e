//! Logs and traces for the supervisor and its connectors, in one place.
//!
//! - Logs: `tracing` events to stderr, `RUST_LOG`-style filters, human-readable or JSON lines.
//! - Traces: off unless the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) says where to send them, and `OTEL_SDK_DISABLED` /
//!   `OTEL_TRACES_EXPORTER=none` do not turn them off. Then `tracing` spans are exported by OTLP,
//!   over gRPC or HTTP/protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL`), in batches; the rest of the
//!   `OTEL_*` variables apply as the OpenTelemetry SDK reads them. Off, there is no OpenTelemetry
//!   layer at all.
//! - The trace context across the process boundary: W3C `traceparent`/`tracestate` in HTTP
//!   headers (a SCIM request) and in gRPC metadata (a call into a connector).
//!
//! Both sides of the protocol use this crate; it depends on nothing of ours.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use tracing_opentelemetry::OpenTelemetrySpanExt as SpanExt;

pub mod metrics_bridge;

/// How log lines look.
#[derive(Debug, Clone)]
pub struct Options {
    /// `service.name` of this process's spans.
    pub service_name: String,
    /// Extra resource attributes (e.g. the connector's name in the configuration).
    pub resource: Vec<(String, String)>,
    /// JSON lines instead of human-readable ones.
    pub json: bool,
    /// Colours, timestamps and targets (a connector's lines go into the supervisor's log, which
    /// adds its own).
    pub decorated: bool,
    /// Export traces when the environment says so (false: logs only, e.g. a one-shot command).
    pub traces: bool,
}

/// Keeps the trace exporter alive; dropping it flushes the spans not sent yet.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Whether the environment asks for OTLP trace export.
pub fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !off && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber (and, when configured, the OTLP exporter and the W3C trace
/// context propagator). Call it inside a tokio runtime: the gRPC exporter needs one.
pub fn init(options: Options) -> Telemetry {
    // Each layer has its own filter: RUST_LOG decides what is logged, not what is traced (a
    // service logging warnings only still exports its info-level spans).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match (options.json, options.decorated) {
        (true, _) => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
        (false, true) => fmt.boxed(),
        (false, false) => fmt.with_ansi(false).with_target(false).without_time().boxed(),
    }
    .with_filter(filter);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, problem) =
        if options.traces && otlp_configured() { exporter(&options) } else { (None, None) };
    // Spans at info and above: ours (libraries trace their internals at debug and below).
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(options.service_name.clone()))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    if let Some(problem) = problem {
        tracing::warn!("OpenTelemetry trace export is off: {problem}");
    }
    Telemetry { provider }
}

fn exporter(options: &Options) -> (Option<SdkTracerProvider>, Option<String>) {
    match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => {
            let mut resource =
                opentelemetry_sdk::Resource::builder().with_service_name(options.service_name.clone());
            for (key, value) in &options.resource {
                resource = resource.with_attribute(opentelemetry::KeyValue::new(key.clone(), value.clone()));
            }
            // The batch processor on the tokio runtime (the HTTP client and the gRPC channel need
            // one; the SDK's default processor runs on a thread of its own without it).
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource.build())
                .build();
            (Some(provider), None)
        }
        Err(e) => (None, Some(e.to_string())),
    }
}

/// The W3C trace context of the current span, into gRPC metadata (a call into a connector).
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

/// Makes `span` a child of the trace context in `headers` (HTTP or gRPC), if there is one.
/// Returns whether there was.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    if !headers.contains_key("traceparent") {
        return false;
    }
    let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    use opentelemetry::trace::TraceContextExt;
    if !context.span().span_context().is_valid() {
        return false;
    }
    let _ = span.set_parent(context);
    true
}

/// The trace id of `span` (32 hex digits) when traces are on, for log lines.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
