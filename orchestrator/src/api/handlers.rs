//! One handler per route: parse, validate, ask the controller.

use super::{ApiError, ApiState, ErrorBody};
use crate::controller::{ApiCmd, FaultTarget, ReplicaAction};
use crate::model::{ClusterView, Event, FaultView, IncidentView, ReplicaView};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};
use zz_wire::{Principal, ReplicaId};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `POST /v1/faults`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// A replica (`kv-e1`) or an agreement node (`a0`).
    pub target: String,
    /// Replicas: crash, hang, corrupt-reply, corrupt-state, bad-checkpoint,
    /// serve-bad-state, slow. Nodes: crash, mute, equivocate, slow, slow-primary.
    pub kind: String,
    /// Cleared automatically after this long.
    pub duration_ms: Option<u64>,
    /// Inject even if more than f replicas of the target's app, or more
    /// than f agreement nodes, would then have a fault at once. Without it
    /// such a fault is refused (400): past f, f+1 matching wrong answers
    /// certify (or PBFT loses safety), which demonstrates breaking the
    /// fault model, not zz.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/replicas/{id}/hibernate` (the body is optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HibernateRequest {
    /// Destroy the instance instead of suspending it to disk: a wake then
    /// provisions a clean one from the image, which fetches its state from
    /// peers. On the process backend a hibernated replica keeps no process
    /// either, so both behave alike there.
    #[serde(default)]
    pub cold: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: u64,
}

/// Documents the query string; `parse_since` reads it (so that a bad value
/// is a 400 with a JSON body like every other error).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SinceQuery {
    /// Only events with a larger seq.
    pub since: Option<u64>,
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad request body: {e}")))
}

fn parse_since(q: Option<String>) -> Result<u64, ApiError> {
    let mut since = 0;
    for pair in q.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", v)) => {
                since = v
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("since={v:?} is not a number")))?;
            }
            _ => return Err(ApiError::BadRequest(format!("unknown query parameter {pair:?}"))),
        }
    }
    Ok(since)
}

fn replica_id(state: &ApiState, id: &str) -> Result<ReplicaId, ApiError> {
    match state.dep.parse_principal(id) {
        Some(Principal::Replica(r)) => Ok(r),
        _ => Err(ApiError::NotFound(format!("no such replica {id:?}"))),
    }
}

fn fault_target(state: &ApiState, req: &FaultRequest) -> Result<FaultTarget, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    match state.dep.parse_principal(&req.target) {
        Some(Principal::Replica(r)) => Ok(FaultTarget::Replica(r, req.kind.parse().map_err(bad)?)),
        Some(Principal::Node(n)) => Ok(FaultTarget::Node(n, req.kind.parse().map_err(bad)?)),
        _ => Err(bad(format!(
            "unknown target {:?}; expected a replica like kv-e1 or a node like a0",
            req.target
        ))),
    }
}

#[utoipa::path(get, path = "/v1/health", tag = "status",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/", tag = "status",
    responses((status = 200, description = "Dashboard page", content_type = "text/html")))]
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../dashboard.html"))
}

#[utoipa::path(get, path = "/metrics", tag = "status",
    description = "Prometheus metrics. Needs no token, so a scraper needs no admin credential: it serves counts, gauges and timings by app, replica state, route and reason, nothing an operator could act with. Bind the admin address where only trusted scrapers reach it if even that is too much. The zz_gateway_* series are those of GET /v1/series: its newest whole second (zz_gateway_second) and the totals.",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    crate::metrics::export_series(crate::series::global(), crate::series::now_ms());
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "status", security(("bearer" = [])),
    responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = ClusterView), (status = 401, body = ErrorBody)))]
pub async fn cluster(State(s): State<ApiState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(s.ask(ApiCmd::Cluster).await?))
}

#[utoipa::path(get, path = "/v1/replicas", tag = "replicas", security(("bearer" = [])),
    responses((status = 200, body = Vec<ReplicaView>), (status = 401, body = ErrorBody)))]
pub async fn replicas(State(s): State<ApiState>) -> Result<Json<Vec<ReplicaView>>, ApiError> {
    Ok(Json(s.ask(ApiCmd::Replicas).await?))
}

async fn act(s: ApiState, id: &str, action: ReplicaAction) -> Result<Json<ReplicaView>, ApiError> {
    let id = replica_id(&s, id)?;
    let view = s.ask(|reply| ApiCmd::Act { id, action, reply }).await??;
    Ok(Json(view))
}

#[utoipa::path(post, path = "/v1/replicas/{id}/pause", tag = "replicas", security(("bearer" = [])),
    params(("id" = String, Path, description = "Replica, e.g. kv-e1")),
    responses((status = 200, body = ReplicaView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn pause(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<ReplicaView>, ApiError> {
    act(s, &id, ReplicaAction::Pause).await
}

#[utoipa::path(post, path = "/v1/replicas/{id}/wake", tag = "replicas", security(("bearer" = [])),
    params(("id" = String, Path, description = "Replica, e.g. kv-e1")),
    responses((status = 200, body = ReplicaView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn wake(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<ReplicaView>, ApiError> {
    act(s, &id, ReplicaAction::Wake).await
}

#[utoipa::path(post, path = "/v1/replicas/{id}/hibernate", tag = "replicas", security(("bearer" = [])),
    params(("id" = String, Path, description = "Replica, e.g. kv-e1")),
    request_body(content = Option<HibernateRequest>, description = "Optional; an empty body hibernates warm"),
    responses((status = 200, body = ReplicaView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn hibernate(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ReplicaView>, ApiError> {
    let req: HibernateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        HibernateRequest::default()
    } else {
        parse_body(&body)?
    };
    act(s, &id, ReplicaAction::Hibernate { cold: req.cold }).await
}

#[utoipa::path(post, path = "/v1/replicas/{id}/replace", tag = "replicas", security(("bearer" = [])),
    params(("id" = String, Path, description = "Replica, e.g. kv-e1")),
    responses((status = 200, body = ReplicaView), (status = 404, body = ErrorBody)))]
pub async fn replace(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<ReplicaView>, ApiError> {
    act(s, &id, ReplicaAction::Replace).await
}

#[utoipa::path(post, path = "/v1/faults", tag = "faults", security(("bearer" = [])),
    request_body = FaultRequest,
    description = "Injects a fault. Refused with 400 if more than f replicas of one app, or more than f agreement nodes, would then have a fault at once, unless `force` is true.",
    responses((status = 201, body = Created),
        (status = 400, description = "Bad body, unknown target or kind, or more than f faulty without force", body = ErrorBody)))]
pub async fn inject_fault(State(s): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let req: FaultRequest = parse_body(&body)?;
    let target = fault_target(&s, &req)?;
    let (duration_ms, force) = (req.duration_ms, req.force);
    let id = s
        .ask(|reply| ApiCmd::InjectFault {
            target,
            duration_ms,
            force,
            reply,
        })
        .await??;
    Ok((StatusCode::CREATED, Json(Created { id })).into_response())
}

#[utoipa::path(get, path = "/v1/faults", tag = "faults", security(("bearer" = [])),
    responses((status = 200, body = Vec<FaultView>)))]
pub async fn faults(State(s): State<ApiState>) -> Result<Json<Vec<FaultView>>, ApiError> {
    Ok(Json(s.ask(ApiCmd::Faults).await?))
}

#[utoipa::path(delete, path = "/v1/faults/{id}", tag = "faults", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Fault id from POST /v1/faults")),
    responses((status = 200, body = Created), (status = 404, body = ErrorBody)))]
pub async fn clear_fault(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Created>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("fault id {id:?} is not a number")))?;
    s.ask(|reply| ApiCmd::ClearFault { id, reply }).await??;
    Ok(Json(Created { id }))
}

#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", security(("bearer" = [])),
    responses((status = 200, body = Vec<IncidentView>)))]
pub async fn incidents(State(s): State<ApiState>) -> Result<Json<Vec<IncidentView>>, ApiError> {
    Ok(Json(s.ask(ApiCmd::Incidents).await?))
}

#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(SinceQuery),
    responses((status = 200, body = Vec<Event>), (status = 400, body = ErrorBody)))]
pub async fn events(State(s): State<ApiState>, RawQuery(q): RawQuery) -> Result<Json<Vec<Event>>, ApiError> {
    let since = parse_since(q)?;
    Ok(Json(s.ask(|reply| ApiCmd::Events { since, reply }).await?))
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events", security(("bearer" = [])),
    params(SinceQuery),
    responses((status = 200, description = "Server-sent events; data is an Event", content_type = "text/event-stream")))]
pub async fn event_stream(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let since = parse_since(q)?;
    let (backlog, live) = s.ask(|reply| ApiCmd::Subscribe { since, reply }).await?;
    let last = backlog.last().map_or(since, |e| e.seq);
    let live = BroadcastStream::new(live).filter_map(move |e| async move {
        // A lagging subscriber skips what it missed rather than blocking the log.
        e.ok().filter(|e| e.seq > last)
    });
    let mut shutdown = s.shutdown.clone();
    let stream = futures::stream::iter(backlog)
        .chain(live)
        .map(|e| Ok(to_sse(&e)))
        .take_until(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn to_sse(e: &Event) -> sse::Event {
    sse::Event::default()
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}
