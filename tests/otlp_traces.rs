//! Traces over OTLP/HTTP: `aegis serve` with `AEGIS_OTLP_ENDPOINT` pointing at a small
//! collector in this test sends a span for a request (child of the caller's
//! `traceparent`) and for engine ticks, and log lines inside a span carry its trace id.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    parent_span_id: String,
    attributes: Vec<String>,
    service: String,
}

/// An OTLP/HTTP receiver: decodes every `POST /v1/traces` body as the collector would and
/// keeps the spans. Answers 200 with an empty export response.
type Shared<T> = Arc<Mutex<Vec<T>>>;

fn collector() -> (u16, Shared<Received>, Shared<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans: Shared<Received> = Arc::default();
    let paths: Shared<String> = Arc::default();
    let (s, p) = (Arc::clone(&spans), Arc::clone(&paths));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (spans, paths) = (Arc::clone(&s), Arc::clone(&p));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    paths
                        .lock()
                        .unwrap()
                        .push(request_line.split(' ').nth(1).unwrap_or("").to_owned());
                    let export = ExportTraceServiceRequest::decode(body.as_slice())
                        .expect("an OTLP protobuf export request");
                    let mut out = spans.lock().unwrap();
                    for rs in export.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                out.push(Received {
                                    name: span.name,
                                    trace_id: hex(&span.trace_id),
                                    parent_span_id: hex(&span.parent_span_id),
                                    attributes: span
                                        .attributes
                                        .iter()
                                        .map(|a| format!("{}={:?}", a.key, a.value))
                                        .collect(),
                                    service: service.clone(),
                                });
                            }
                        }
                    }
                    drop(out);
                    stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                        )
                        .unwrap();
                }
            });
        }
    });
    (port, spans, paths)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn spans_for_a_request_and_a_tick_reach_the_collector_and_logs_carry_the_trace_id() {
    let (otlp_port, spans, paths) = collector();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = common::aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "AEGIS_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("AEGIS_ENGINE_TICK_MS", "200")
        .env("AEGIS_LOG_FORMAT", "json")
        .env("AEGIS_LOG_LEVEL", "info,sqlx=warn,aegis_api=debug")
        // The SDK's batch delay (default 5 s), so the test need not wait.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_healthy(&mut child, port);

    // A caller in a trace of its own: the request span is its child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /api/v1/policies/nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\ntraceparent: 00-{caller_trace}-{caller_span}-01\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (request, tick) = loop {
        let got = spans.lock().unwrap().clone();
        let request = got
            .iter()
            .find(|s| s.name == "GET /api/v1/policies/{id}")
            .cloned();
        let tick = got.iter().find(|s| s.name == "engine.tick").cloned();
        if let (Some(r), Some(t)) = (&request, &tick) {
            break (r.clone(), t.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no request and tick spans after 20 s: {:?}",
            got.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(request.trace_id, caller_trace, "{request:?}");
    assert_eq!(request.parent_span_id, caller_span, "{request:?}");
    assert!(request.service.contains("aegis"), "{request:?}");
    for attr in ["http.route", "http.response.status_code", "request_id"] {
        assert!(
            request.attributes.iter().any(|a| a.starts_with(attr)),
            "{attr} missing: {request:?}"
        );
    }
    assert!(
        request
            .attributes
            .iter()
            .any(|a| a.starts_with("http.response.status_code") && a.contains("401")),
        "{request:?}"
    );
    // A tick is a trace of its own, a root span.
    assert!(tick.parent_span_id.is_empty(), "{tick:?}");
    assert_ne!(tick.trace_id, caller_trace);
    assert!(paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));

    // Every span sent before a clean stop; the request's log line names its trace.
    let (_, output) = common::terminate(child);
    assert!(output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    let line = logs
        .lines()
        .find(|l| l.contains("request done") && l.contains("/api/v1/policies/nope"))
        .unwrap_or_else(|| panic!("no request log line in:\n{logs}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        json["span"]["trace_id"].as_str(),
        Some(caller_trace),
        "{line}"
    );
}

#[test]
fn an_https_or_malformed_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["https://collector:4318", "collector:4318"] {
        let out = common::aegis(dir.path())
            .args(["config", "print"])
            .env("AEGIS_OTLP_ENDPOINT", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("AEGIS_OTLP_ENDPOINT"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
