//! What the dashboard draws: the live per-app series with their markers,
//! and one incident's timeline.

use super::{ApiError, ApiState, ErrorBody};
use crate::controller::ApiCmd;
use crate::series::{self, Point};
use crate::timeline::{self, IncidentTimeline, Marker};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One app's window.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AppSeries {
    pub app: String,
    /// One per whole second, oldest first, the newest being the second
    /// before `now_ms`'s.
    pub points: Vec<Point>,
    /// Fault episode markers within the window, oldest first.
    pub markers: Vec<Marker>,
}

/// `GET /v1/series`
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SeriesView {
    /// When the window was read (unix ms).
    pub now_ms: u64,
    pub window_secs: u64,
    pub apps: Vec<AppSeries>,
}

fn app_names(s: &ApiState) -> Vec<String> {
    s.dep.apps.iter().map(|a| a.name.clone()).collect()
}

#[utoipa::path(get, path = "/v1/series", tag = "status", security(("bearer" = [])),
    description = "Per app, what web clients got from this process's gateway over the last 60 whole seconds: certified answers and 503s per second, p50 and p99 latency of the answers; with markers for fault injected, incident opened, standby woken, first certified answer, fenced and replaced. The newest second is the one /metrics exports as zz_gateway_* gauges.",
    responses((status = 200, body = SeriesView), (status = 401, body = ErrorBody)))]
pub async fn series(State(s): State<ApiState>) -> Result<Json<SeriesView>, ApiError> {
    let rec = series::global();
    let now_ms = series::now_ms();
    let mut windows = rec.window(now_ms);
    let from_ms = (now_ms / 1000).saturating_sub(rec.window_secs() + 1) * 1000;
    let events = s.ask(|reply| ApiCmd::Events { since: 0, reply }).await?;
    let recent: Vec<_> = events.into_iter().filter(|e| e.at_ms >= from_ms).collect();
    let names = app_names(&s);
    // Deployment order first, then any other app the gateway served.
    let mut order = names.clone();
    order.extend(
        windows
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let apps = order
        .into_iter()
        .map(|app| AppSeries {
            points: windows.remove(&app).unwrap_or_default(),
            markers: timeline::markers(&names, &app, &recent),
            app,
        })
        .collect();
    Ok(Json(SeriesView {
        now_ms,
        window_secs: rec.window_secs(),
        apps,
    }))
}

#[utoipa::path(get, path = "/v1/incidents/{id}/timeline", tag = "incidents", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Incident id from GET /v1/incidents")),
    description = "The incident's phases on one axis (fault injected, detected, woken, resumed, fetched, certified, fenced, replaced) with their times, durations and replicas, from the event log.",
    responses((status = 200, body = IncidentTimeline), (status = 404, body = ErrorBody)))]
pub async fn incident_timeline(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentTimeline>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("incident id {id:?} is not a number")))?;
    let incidents = s.ask(ApiCmd::Incidents).await?;
    let incident = incidents
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no such incident {id}")))?;
    let events = s.ask(|reply| ApiCmd::Events { since: 0, reply }).await?;
    Ok(Json(timeline::incident_timeline(&app_names(&s), &incident, &events)))
}
