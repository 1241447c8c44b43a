//! Prometheus series the orchestrator exports on `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REPLICAS: &str = "zz_orchestrator_replicas";
pub const WAKES: &str = "zz_orchestrator_wakes_total";
pub const INCIDENTS: &str = "zz_orchestrator_incidents_total";
pub const INCIDENTS_COALESCED: &str = "zz_orchestrator_incident_wakes_coalesced_total";
pub const RECOVERY_MS: &str = "zz_orchestrator_recovery_ms";
pub const REPLACEMENTS: &str = "zz_orchestrator_replacements_total";
pub const FAULTS_INJECTED: &str = "zz_orchestrator_faults_injected_total";
pub const API_REQUESTS: &str = "zz_orchestrator_api_requests_total";
pub const DROPPED: &str = "zz_orchestrator_dropped_messages_total";
pub const COMPONENT_CHUNKS: &str = "zz_orchestrator_component_chunks_total";

// What web clients got from the gateway of this process (`series`): the
// same figures as `GET /v1/series`, the newest whole second of its window.
pub const GATEWAY_ANSWERS: &str = "zz_gateway_answers_total";
pub const GATEWAY_UNAVAILABLE: &str = "zz_gateway_unavailable_total";
pub const GATEWAY_SECOND: &str = "zz_gateway_second";
pub const GATEWAY_ANSWERS_PER_S: &str = "zz_gateway_answers_per_second";
pub const GATEWAY_ERRORS_PER_S: &str = "zz_gateway_errors_per_second";
pub const GATEWAY_P50_MS: &str = "zz_gateway_latency_p50_ms";
pub const GATEWAY_P99_MS: &str = "zz_gateway_latency_p99_ms";

/// Reasons a message or link is dropped (label values of `DROPPED`).
pub const DROP_REASONS: &[&str] = &[
    "bad-signature",
    "wrong-author",
    "unexpected",
    "malformed",
    "handshake",
    "link-queue-full",
];

const RECOVERY_BUCKETS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder (installed on first use). `None` when another
/// recorder was installed first; `/metrics` then reports that.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RECOVERY_MS.into()), RECOVERY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Registers every series at zero so dashboards see them before the first event.
pub fn register(apps: &[String]) {
    handle();
    metrics::describe_gauge!(REPLICAS, "Execution replicas by app and state");
    metrics::describe_counter!(WAKES, "Standbys woken");
    metrics::describe_counter!(INCIDENTS, "Incidents opened by f+1 WAKEs");
    metrics::describe_counter!(
        INCIDENTS_COALESCED,
        "f+1 WAKE certificates that joined the incident of their fault episode"
    );
    metrics::describe_histogram!(RECOVERY_MS, "Incident detection to certified reply (ms)");
    metrics::describe_counter!(REPLACEMENTS, "Replicas fenced and replaced");
    metrics::describe_counter!(FAULTS_INJECTED, "Faults injected through the API");
    metrics::describe_counter!(API_REQUESTS, "Admin API requests by route and status");
    metrics::describe_counter!(DROPPED, "Inbound messages or links dropped, by reason");
    metrics::describe_counter!(
        COMPONENT_CHUNKS,
        "Wasm component chunks sent to replicas that fetched them (found = no: not here)"
    );
    metrics::describe_counter!(GATEWAY_ANSWERS, "Certified answers the gateway gave web clients");
    metrics::describe_counter!(
        GATEWAY_UNAVAILABLE,
        "Requests the gateway answered 503: no certified answer by the deadline"
    );
    metrics::describe_gauge!(
        GATEWAY_SECOND,
        "Unix second the zz_gateway_*_per_second and latency gauges describe (the newest whole one)"
    );
    metrics::describe_gauge!(GATEWAY_ANSWERS_PER_S, "Certified answers in zz_gateway_second");
    metrics::describe_gauge!(GATEWAY_ERRORS_PER_S, "503 answers in zz_gateway_second");
    metrics::describe_gauge!(
        GATEWAY_P50_MS,
        "Median latency of the certified answers in zz_gateway_second (ms; NaN without answers)"
    );
    metrics::describe_gauge!(
        GATEWAY_P99_MS,
        "99th percentile latency of the certified answers in zz_gateway_second (ms; NaN without answers)"
    );
    for app in apps {
        crate::series::global().register(app);
        metrics::counter!(WAKES, "app" => app.clone()).increment(0);
        metrics::counter!(REPLACEMENTS, "app" => app.clone()).increment(0);
        metrics::counter!(INCIDENTS_COALESCED, "app" => app.clone()).increment(0);
        for kind in ["mismatch", "timeout", "checkpoint"] {
            metrics::counter!(INCIDENTS, "app" => app.clone(), "kind" => kind).increment(0);
        }
    }
    for reason in DROP_REASONS {
        metrics::counter!(DROPPED, "reason" => *reason).increment(0);
    }
    let _ = metrics::histogram!(RECOVERY_MS);
}

/// Sets the gateway series' counters and gauges from `series` as of
/// `now_ms`: done when `/metrics` is read, so the gauges describe the
/// newest whole second at that moment.
pub fn export_series(series: &crate::series::Series, now_ms: u64) {
    let totals = series.totals();
    for (app, p) in series.latest(now_ms) {
        let t = totals.get(&app).copied().unwrap_or_default();
        metrics::counter!(GATEWAY_ANSWERS, "app" => app.clone()).absolute(t.answers);
        metrics::counter!(GATEWAY_UNAVAILABLE, "app" => app.clone()).absolute(t.errors);
        metrics::gauge!(GATEWAY_SECOND, "app" => app.clone()).set((p.t_ms / 1000) as f64);
        metrics::gauge!(GATEWAY_ANSWERS_PER_S, "app" => app.clone()).set(p.answers as f64);
        metrics::gauge!(GATEWAY_ERRORS_PER_S, "app" => app.clone()).set(p.errors as f64);
        metrics::gauge!(GATEWAY_P50_MS, "app" => app.clone()).set(p.p50_ms.unwrap_or(f64::NAN));
        metrics::gauge!(GATEWAY_P99_MS, "app" => app).set(p.p99_ms.unwrap_or(f64::NAN));
    }
}

pub fn render() -> String {
    handle().map_or_else(
        || "# metrics recorder unavailable in this process\n".to_string(),
        |h| h.render(),
    )
}
