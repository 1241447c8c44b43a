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
    for app in apps {
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

pub fn render() -> String {
    handle().map_or_else(
        || "# metrics recorder unavailable in this process\n".to_string(),
        |h| h.render(),
    )
}
