//! Telemetry end to end: an OTLP trace receiver of our own (the collector's gRPC trace service)
//! gets, for one SCIM create, the spans of the supervisor and of the connector process in one
//! trace continued from the client's `traceparent`, with the right parent links; `/metrics`
//! counts the requests; no log line and no span attribute holds the password or a token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::otlp::{Span, receiver, text};
use e2e::{Supervisor, TOKEN, TempDir, free_addr, quickstart_config, request, request_with};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

fn otel_env(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".into()),
    ]
}

#[test]
fn one_scim_create_is_one_trace_across_both_processes() {
    let (receiver, addr, _runtime) = receiver();
    let dir = TempDir::new("otel");
    let env = otel_env(addr);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Supervisor::spawn_with_env(&quickstart_config(), dir.path(), &env);
    s.wait_ready(Duration::from_secs(30));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let password = "Tr4ce-me-n0t-p4ssword";
    let mut body: serde_json::Value = serde_json::from_str(&e2e::user_body("traced")).unwrap();
    body["password"] = json!(password);
    let r = request_with(
        s.scim,
        "POST",
        "/scim/demo/Users",
        &[("traceparent", &format!("00-{trace_id}-{client_span}-01"))],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Wait for the spans of the trace from both processes, down to the database operation.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Span> =
            receiver.0.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        if spans.iter().any(|s| s.service == "connector-sql" && s.name.starts_with("INSERT"))
            && spans.iter().any(|s| s.kind == SpanKind::Server as i32 && s.service == "ecma-supervisor")
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {trace_id} did not all arrive: {spans:#?}\nall: {:#?}",
            receiver.0.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let by_id = |id: &str| spans.iter().find(|s| s.span_id == id);

    // The supervisor's HTTP server span continues the client's span.
    let server = spans
        .iter()
        .find(|s| s.service == "ecma-supervisor" && s.kind == SpanKind::Server as i32)
        .expect("the supervisor's server span");
    assert_eq!(server.parent, client_span, "{server:?}");
    assert_eq!(server.name, "POST /scim/{app}/Users");
    assert_eq!(server.attribute("http.response.status_code"), Some("201"), "{server:?}");
    assert_eq!(server.attribute("scim.app"), Some("demo"));
    assert_eq!(server.attribute("scim.operation"), Some("create"));
    let provision = spans.iter().find(|s| s.name == "provision create").expect("the provision span");
    assert_eq!(provision.attribute("ecma.object_type"), Some("user"), "{provision:?}");

    // Its RPC client span, under it, calls the connector.
    let call = spans
        .iter()
        .find(|s| s.service == "ecma-supervisor" && s.name == "ecma.v1.Connector/PutExportEntries")
        .expect("the PutExportEntries client span");
    assert_eq!(call.kind, SpanKind::Client as i32);
    let mut up = call.parent.clone();
    while up != server.span_id {
        up = by_id(&up)
            .unwrap_or_else(|| panic!("{call:?} is not under the server span: {spans:#?}"))
            .parent
            .clone();
    }

    // The connector's server span is the child of that call, in the connector's own process.
    let handled = spans
        .iter()
        .find(|s| {
            s.service == "connector-sql"
                && s.kind == SpanKind::Server as i32
                && s.name.ends_with("PutExportEntries")
        })
        .expect("the connector's server span");
    assert_eq!(handled.parent, call.span_id, "{handled:?}");
    assert_eq!(handled.attribute("rpc.system"), Some("grpc"));

    // And its database operation under that.
    let insert =
        spans.iter().find(|s| s.service == "connector-sql" && s.name == "INSERT users").expect("INSERT span");
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(insert.attribute("db.system.name"), Some("sqlite"));
    let mut up = insert.parent.clone();
    while up != handled.span_id {
        up = by_id(&up)
            .unwrap_or_else(|| panic!("{insert:?} is not under the connector's server span"))
            .parent
            .clone();
    }

    // Nothing anywhere holds the password or a bearer token.
    let everything: Vec<&str> = spans
        .iter()
        .flat_map(|s| s.attributes.iter().map(|(_, v)| v.as_str()).chain([s.name.as_str()]))
        .collect();
    for secret in [password, TOKEN] {
        assert!(everything.iter().all(|v| !v.contains(secret)), "a span holds a secret");
        assert!(!s.log().contains(secret), "the log holds a secret");
    }
    // The metrics go by OTLP too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !receiver.1.lock().unwrap().iter().any(|n| n == "scim_requests_total") {
        assert!(
            Instant::now() < deadline,
            "no scim_requests_total by OTLP: {:?}",
            receiver.1.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Log lines inside the request carry its trace id.
    assert!(s.log().lines().any(|l| l.contains(trace_id)), "no log line carries the trace id");
}

#[test]
fn metrics_count_scim_requests_and_connector_calls() {
    let dir = TempDir::new("metrics");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("counted"))).status, 201);
    assert_eq!(s.scim("GET", "/scim/demo/Users/nope", None).status, 404);
    // An app that is not configured is counted as "other", never by its name.
    assert_eq!(s.scim("GET", "/scim/no-such-app-42/Users", None).status, 404);
    let metrics = request(s.admin, "GET", "/metrics", None, None).body;
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{metrics}"))
    };
    assert!(
        value(r#"scim_requests_total{app="demo",resource="Users",method="POST",status="201"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(value(r#"scim_requests_total{app="demo",resource="Users",method="GET",status="404"}"#) >= 1.0);
    assert!(value(r#"scim_requests_total{app="other",resource="Users",method="GET",status="404"}"#) >= 1.0);
    assert!(!metrics.contains("no-such-app-42"), "labels are bounded");
    assert!(
        value(r#"scim_request_duration_seconds_count{app="demo",resource="Users",method="POST"}"#) >= 1.0
    );
    assert!(
        value(
            r#"connector_call_duration_seconds_count{connector="demo-users",operation="PutExportEntries",result="ok"}"#
        ) >= 1.0
    );
    assert!(value(r#"export_results_total{connector="demo-users",kind="None"}"#) >= 1.0);
    assert!(value("connector_space_records ") >= 1.0, "{metrics}");
    assert!(value("connector_space_bytes ") > 0.0);
}

#[test]
fn spans_also_go_by_otlp_over_http_protobuf_as_the_configuration_says() {
    use prost::Message;
    // An OTLP/HTTP receiver: POST /v1/traces with an ExportTraceServiceRequest in protobuf.
    let services: Arc<Mutex<Vec<String>>> = Arc::default();
    let addr = free_addr();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let seen = services.clone();
    runtime.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("protobuf");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                            .map(|a| text(&a.value))
                            .unwrap_or_default();
                        seen.lock().unwrap().push(service);
                    }
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    let dir = TempDir::new("otel-http");
    // Set by the configuration this time (the OTEL_* variables would take precedence).
    let config = format!(
        "{}\n[telemetry]\notlp_endpoint = \"http://{addr}\"\notlp_protocol = \"http/protobuf\"\n",
        quickstart_config()
    );
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    s.wait_ready(Duration::from_secs(30));
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("over-http"))).status, 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = services.lock().unwrap().clone();
        if seen.iter().any(|s| s == "ecma-supervisor") && seen.iter().any(|s| s == "connector-sql") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans over OTLP/HTTP from both processes did not arrive: {seen:?}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
