//! OTLP export of the `metrics` facade's counters, gauges and histograms: a `metrics::Recorder`
//! that records into OpenTelemetry instruments, read and pushed periodically
//! (`OTEL_METRIC_EXPORT_INTERVAL`) by an OTLP exporter on the tokio runtime. The supervisor
//! installs it beside its Prometheus recorder (a fan-out), when OTLP export is configured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// The meter provider pushing metrics by OTLP; flushed and stopped when dropped.
pub struct OtlpMetrics {
    provider: SdkMeterProvider,
}

impl Drop for OtlpMetrics {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// A recorder into OpenTelemetry instruments, and the provider that exports them; `None` (with
/// the reason) when the exporter cannot be built. Call inside the tokio runtime.
pub fn otlp_recorder(service_name: &str) -> Result<(OtelRecorder, OtlpMetrics), String> {
    let exporter = opentelemetry_otlp::MetricExporter::builder().build().map_err(|e| e.to_string())?;
    let reader = opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_string()).build();
    let provider = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    let meter = provider.meter("ecma");
    Ok((OtelRecorder { meter, instruments: Arc::default() }, OtlpMetrics { provider }))
}

/// The instruments by name, and the handles by name and labels (so that a gauge keeps its value
/// between registrations, and a hot counter does not rebuild its attributes every time).
#[derive(Default)]
struct Instruments {
    counters: HashMap<String, opentelemetry::metrics::Counter<u64>>,
    gauges: HashMap<String, opentelemetry::metrics::Gauge<f64>>,
    histograms: HashMap<String, opentelemetry::metrics::Histogram<f64>>,
    counter_handles: HashMap<Key, Arc<OtelCounter>>,
    gauge_handles: HashMap<Key, Arc<OtelGauge>>,
    histogram_handles: HashMap<Key, Arc<OtelHistogram>>,
}

/// The `metrics::Recorder` side: one OpenTelemetry instrument per metric name, the labels as
/// attributes.
pub struct OtelRecorder {
    meter: Meter,
    instruments: Arc<Mutex<Instruments>>,
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels().map(|l| KeyValue::new(l.key().to_string(), l.value().to_string())).collect()
}

struct OtelCounter(opentelemetry::metrics::Counter<u64>, Vec<KeyValue>);

impl CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.0.add(value, &self.1);
    }
    fn absolute(&self, _value: u64) {
        // Cumulative values are not set from outside in this code base.
    }
}

struct OtelGauge(opentelemetry::metrics::Gauge<f64>, Vec<KeyValue>, AtomicU64);

impl OtelGauge {
    fn update(&self, change: impl Fn(f64) -> f64) {
        let mut current = self.2.load(Ordering::Relaxed);
        loop {
            let next = change(f64::from_bits(current)).to_bits();
            match self.2.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break self.0.record(f64::from_bits(next), &self.1),
                Err(seen) => current = seen,
            }
        }
    }
}

impl GaugeFn for OtelGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

struct OtelHistogram(opentelemetry::metrics::Histogram<f64>, Vec<KeyValue>);

impl HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.0.record(value, &self.1);
    }
}

impl metrics::Recorder for OtelRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut guard = self.instruments.lock().expect("instruments");
        let i = &mut *guard;
        let handle = i.counter_handles.entry(key.clone()).or_insert_with(|| {
            let name = key.name().to_string();
            let counter =
                i.counters.entry(name.clone()).or_insert_with(|| self.meter.u64_counter(name).build());
            Arc::new(OtelCounter(counter.clone(), attributes(key)))
        });
        Counter::from_arc(handle.clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut guard = self.instruments.lock().expect("instruments");
        let i = &mut *guard;
        let handle = i.gauge_handles.entry(key.clone()).or_insert_with(|| {
            let name = key.name().to_string();
            let gauge = i.gauges.entry(name.clone()).or_insert_with(|| self.meter.f64_gauge(name).build());
            Arc::new(OtelGauge(gauge.clone(), attributes(key), AtomicU64::new(0f64.to_bits())))
        });
        Gauge::from_arc(handle.clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut guard = self.instruments.lock().expect("instruments");
        let i = &mut *guard;
        let handle = i.histogram_handles.entry(key.clone()).or_insert_with(|| {
            let name = key.name().to_string();
            let histogram =
                i.histograms.entry(name.clone()).or_insert_with(|| self.meter.f64_histogram(name).build());
            Arc::new(OtelHistogram(histogram.clone(), attributes(key)))
        });
        Histogram::from_arc(handle.clone())
    }
}
