//! Logging, traces and metrics set-up: `RUST_LOG`-style filters, human-readable or JSON lines,
//! OTLP trace export when the `OTEL_*` variables ask for it (ecma-telemetry), and the
//! Prometheus recorder behind `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global metrics recorder; its handle renders the Prometheus text for `/metrics`.
pub fn init_metrics() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics shows this one's view only");
    }
    handle
}

/// Installs the global subscriber (`RUST_LOG` overrides the default `info`) and, when the
/// `OTEL_*` variables ask for it, the OTLP trace exporter (which needs the tokio runtime: call
/// this inside it). The returned guard flushes spans when dropped.
pub fn init(format: LogFormat, traces: bool) -> ecma_telemetry::Telemetry {
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "ecma-supervisor".to_string());
    ecma_telemetry::init(ecma_telemetry::Options {
        service_name,
        resource: vec![],
        json: matches!(format, LogFormat::Json),
        decorated: true,
        traces,
    })
}

/// A short, stable hash of a SCIM id for span attributes (ids are not secrets, but traces
/// leave the house: they carry no identifiers of people).
pub fn id_hash(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}
