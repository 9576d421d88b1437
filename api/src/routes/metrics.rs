//! `GET /metrics` in the Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// The Prometheus text exposition of every Aegis metric.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    record_process_metrics();
    if let Some(healing) = state.healing() {
        // The engine's own counters, read at scrape time: they show that scoring goes on
        // even when nothing else (the database included) answers.
        let (ticks, rows_scored) = healing.progress();
        metrics::gauge!("aegis_engine_ticks_total").set(ticks as f64);
        metrics::gauge!("aegis_engine_rows_scored_total").set(rows_scored as f64);
        // 1 on the replica that executes actions (the alert rules want exactly one).
        let leader = healing
            .leader_flag()
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("aegis_engine_leader").set(f64::from(u8::from(leader)));
    }
    // The decision audit writer, for the alert on a queue that does not drain.
    let policies = state.policies().health();
    if let Some(writer) = &policies.audit_writer {
        metrics::gauge!("aegis_audit_queue_depth").set(writer.queued as f64);
        metrics::gauge!("aegis_audit_writer_stalled_seconds")
            .set(writer.stalled_for_secs.unwrap_or(0) as f64);
    }
    metrics::gauge!("aegis_policy_emergency_stop")
        .set(f64::from(u8::from(policies.emergency_stop)));
    match state.metrics() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Process metrics in the Prometheus client conventions, read from `/proc` at scrape time
/// (Linux; elsewhere only the build info), plus `aegis_build_info`.
fn record_process_metrics() {
    metrics::gauge!("aegis_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces, inside parentheses).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            metrics::gauge!("process_cpu_seconds_total").set((ticks(11) + ticks(12)) / USER_HZ);
            // RSS in pages is field 24 (index 21 here); pages are 4 KiB on the platforms we ship.
            metrics::gauge!("process_resident_memory_bytes").set(ticks(21) * 4096.0);
            metrics::gauge!("process_virtual_memory_bytes").set(ticks(20));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(dir.count() as f64);
    }
}
