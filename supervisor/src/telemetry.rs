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
/// When OTLP export is configured, the same metrics are also pushed by OTLP (a fan-out to an
/// OpenTelemetry recorder), for the life of the process.
pub fn init_metrics() -> PrometheusHandle {
    // The OTLP meter provider lives as long as the process (it is not shut down from inside
    // the runtime, which would block a worker on the reader's own task).
    static OTLP: std::sync::OnceLock<ecma_telemetry::metrics_bridge::OtlpMetrics> =
        std::sync::OnceLock::new();
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    let (installed, otlp) = if ecma_telemetry::otlp_configured() {
        match ecma_telemetry::metrics_bridge::otlp_recorder(&service_name()) {
            Ok((otel, otlp)) => {
                let fanout = metrics_util::layers::FanoutBuilder::default()
                    .add_recorder(prometheus)
                    .add_recorder(otel)
                    .build();
                (metrics::set_global_recorder(fanout).is_ok(), Some(otlp))
            }
            Err(e) => {
                tracing::warn!("OpenTelemetry metric export is off: {e}");
                (metrics::set_global_recorder(prometheus).is_ok(), None)
            }
        }
    } else {
        (metrics::set_global_recorder(prometheus).is_ok(), None)
    };
    if !installed {
        tracing::warn!("a metrics recorder was already installed; /metrics shows this one's view only");
    }
    if let Some(otlp) = otlp {
        let _ = OTLP.set(otlp);
    }
    handle
}

/// The supervisor's `service.name`: `OTEL_SERVICE_NAME`, or `ecma-supervisor`.
fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "ecma-supervisor".to_string())
}

/// Installs the global subscriber (`RUST_LOG` overrides the default `info`) and, when the
/// `OTEL_*` variables ask for it, the OTLP trace exporter (which needs the tokio runtime: call
/// this inside it). The returned guard flushes spans when dropped.
pub fn init(format: LogFormat, traces: bool) -> ecma_telemetry::Telemetry {
    ecma_telemetry::init(ecma_telemetry::Options {
        service_name: service_name(),
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
