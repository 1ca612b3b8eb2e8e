//! Benchmark: the cost of tracing. Two supervisors on the quickstart (SQLite), one with traces
//! off (the default) and one exporting every span by OTLP/gRPC to a receiver in this process;
//! SCIM creates alternately into each, at the same concurrency, in one run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench telemetry`
//! (`CREATES=2000` per round).

use std::net::SocketAddr;
use std::time::Duration;

use e2e::otlp::receiver;
use e2e::{Supervisor, TempDir, cpu_seconds, median, quickstart_config};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

fn creates(scim: SocketAddr, names: &[String]) -> f64 {
    e2e::creates_per_second(scim, "/scim/demo/Users", names, CONCURRENCY, e2e::user_body)
}

fn main() {
    let count: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let (spans, addr, _runtime) = receiver();
    let (off_dir, on_dir) = (TempDir::new("bench-traces-off"), TempDir::new("bench-traces-on"));
    let off = Supervisor::spawn_with_env(&quickstart_config(), off_dir.path(), &[("RUST_LOG", "warn")]);
    let endpoint = format!("http://{addr}");
    let on = Supervisor::spawn_with_env(
        &quickstart_config(),
        on_dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    off.wait_ready(Duration::from_secs(30));
    on.wait_ready(Duration::from_secs(30));
    let warm = |s: &Supervisor, tag: &str| {
        creates(s.scim, &(0..200).map(|i| format!("warm-{tag}{i}")).collect::<Vec<_>>())
    };
    warm(&off, "off");
    warm(&on, "on");

    let (mut rates_off, mut rates_on) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..count).map(|i| format!("r{round}-{i}")).collect();
        let before = cpu_seconds(off.pid());
        let a = creates(off.scim, &names);
        let cpu_off = (cpu_seconds(off.pid()) - before) * 1e6 / count as f64;
        let before = cpu_seconds(on.pid());
        let b = creates(on.scim, &names);
        let cpu_on = (cpu_seconds(on.pid()) - before) * 1e6 / count as f64;
        println!(
            "round {round}: traces off {a:>7.0}/s ({cpu_off:.0} µs CPU a create)   traces on {b:>7.0}/s ({cpu_on:.0} µs)   ratio {:.2}",
            b / a
        );
        rates_off.push(a);
        rates_on.push(b);
    }
    // Count the spans once the last batches have arrived: the count stops growing.
    let spans_received = || spans.0.lock().unwrap().len();
    let mut last = usize::MAX;
    e2e::wait_until(Duration::from_secs(30), "the spans to stop arriving", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = spans_received();
        std::mem::replace(&mut last, now) == now
    });
    let received = spans_received();
    let (a, b) = (median(rates_off), median(rates_on));
    println!(
        "creates, concurrency {CONCURRENCY}, {count} per round, median of {ROUNDS}: traces off {a:.0}/s, traces on {b:.0}/s, ratio {:.2}; {received} spans received",
        b / a
    );
}
