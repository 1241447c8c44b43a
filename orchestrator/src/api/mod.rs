//! The REST admin API. Handlers extract and validate, hand a typed command
//! to the controller and await its answer; errors become status codes in
//! `ApiError::status` only.

pub mod apps;
mod handlers;
mod live;
pub mod openapi;
mod serve;

pub use live::{AppSeries, SeriesView};
pub use serve::{serve, HttpLimits, REFUSED_CONNECTIONS};

use crate::controller::{ApiCmd, Command, CommandError};
use crate::metrics as m;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use utoipa::ToSchema;
use zz_wire::Deployment;

#[derive(Clone)]
pub struct ApiState {
    pub commands: mpsc::Sender<Command>,
    pub dep: Arc<Deployment>,
    pub token: Arc<String>,
    pub shutdown: watch::Receiver<bool>,
    /// Deploys tenants' Wasm apps; without it `/v1/apps` only lists.
    pub apps: Option<Arc<dyn apps::Installer>>,
}

impl ApiState {
    /// Sends a command built around a reply channel and awaits the answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ApiCmd) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Api(make(tx)))
            .await
            .map_err(|_| ApiError::Unavailable)?;
        rx.await.map_err(|_| ApiError::Unavailable)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the orchestrator is shutting down")]
    Unavailable,
    /// The agreement cluster did not certify what was asked in time.
    #[error("{0}")]
    NotCertified(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The one place errors become status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable | ApiError::NotCertified(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(what) => ApiError::NotFound(format!("no such {what}")),
            CommandError::Conflict(m) => ApiError::Conflict(m),
            CommandError::Refused(m) => ApiError::BadRequest(m),
            CommandError::Backend(e) => ApiError::Internal(e.to_string()),
            CommandError::Unavailable => ApiError::Unavailable,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status(),
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/cluster", get(handlers::cluster))
        .route("/v1/replicas", get(handlers::replicas))
        .route("/v1/replicas/{id}/pause", post(handlers::pause))
        .route("/v1/replicas/{id}/wake", post(handlers::wake))
        .route("/v1/replicas/{id}/hibernate", post(handlers::hibernate))
        .route("/v1/replicas/{id}/replace", post(handlers::replace))
        .route("/v1/faults", post(handlers::inject_fault).get(handlers::faults))
        .route("/v1/faults/{id}", delete(handlers::clear_fault))
        .route("/v1/incidents", get(handlers::incidents))
        .route(
            "/v1/apps",
            post(apps::deploy)
                .get(apps::list)
                .layer(DefaultBodyLimit::max(apps::MAX_COMPONENT * 2)),
        )
        .route(
            "/v1/apps/{name}",
            get(apps::one)
                .put(apps::upgrade)
                .delete(apps::remove)
                .layer(DefaultBodyLimit::max(apps::MAX_COMPONENT * 2)),
        )
        .route("/v1/incidents/{id}/timeline", get(live::incident_timeline))
        .route("/v1/series", get(live::series))
        .route("/v1/events", get(handlers::events))
        .route("/v1/events/stream", get(handlers::event_stream))
        .route("/v1/openapi.json", get(handlers::openapi_json))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(handlers::dashboard))
        .route("/v1/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

async fn auth(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::counter!(
        m::API_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}
