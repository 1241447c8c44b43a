//! The HTTP front door: each web request becomes a BFT client request for
//! the app its path names, answered once f+1 agreement nodes vouch for it.

use crate::apps::Routes;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use zz_agreement::client::{Client, ClientError};
use zz_orchestrator::series::{self, Outcome};
use zz_wire::{AppId, AppRequest, Deployment};

/// Request bodies above this are refused with 413 (a kv value is ≤ 1 MiB).
pub const MAX_REQUEST_BODY: usize = zz_wire::app::MAX_BODY;
/// A body not received whole within this is refused with 408 and its
/// connection closed: the header deadline of `api::serve` ends with the
/// head, and a client trickling its body would hold a connection slot.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Gateway {
    dep: Arc<Deployment>,
    client: Client,
    /// Tenants' Wasm apps by name.
    routes: Routes,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    dep: Arc<Deployment>,
    client: Client,
    routes: Routes,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(dep, client, routes);
    zz_orchestrator::api::serve(
        listener,
        app,
        zz_orchestrator::api::HttpLimits::from_env(),
        "gateway",
        shutdown,
    )
    .await?;
    Ok(())
}

pub fn router(dep: Arc<Deployment>, client: Client, routes: Routes) -> Router {
    for app in dep.apps.iter().filter(|a| a.kind != zz_wire::config::WASM_KIND) {
        series::global().register(&app.name);
    }
    Router::new()
        .route("/{*path}", any(forward))
        .route(
            "/",
            any(|| async { error(StatusCode::NOT_FOUND, "name an app: /kv/... or /bank/...") }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(Gateway { dep, client, routes })
}

/// Headers an app may look at; everything else stays at the gateway so
/// replicas see identical requests.
const FORWARDED_HEADERS: &[&str] = &["content-type"];
/// What a tenant's Wasm app sees (`zz_agent::app::wasm::FORWARDED_HEADERS`).
const WASM_HEADERS: &[&str] = zz_agent::app::wasm::FORWARDED_HEADERS;

impl Gateway {
    /// The app `name` reaches, and whether it is a tenant's Wasm app. A
    /// deployment's Wasm slots are reached only by the app in them.
    fn route(&self, name: &str) -> Option<(AppId, bool)> {
        match self.dep.app_by_name(name) {
            Some(app) if self.dep.app(app).is_some_and(|a| a.kind != zz_agent::app::tenant::KIND) => Some((app, false)),
            Some(_) => None,
            None => self.routes.get(name).map(|app| (app, true)),
        }
    }
}

async fn forward(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut path = parts.uri.path().to_string();
    let app_name = path.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    let Some((app, wasm)) = gw.route(&app_name) else {
        return error(StatusCode::NOT_FOUND, format!("no app named {app_name:?}"));
    };
    if wasm {
        // A tenant's app sees the query too (the built-in apps never did).
        if let Some(q) = parts.uri.query() {
            path = format!("{path}?{q}");
        }
    }
    let body: Bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_REQUEST_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_REQUEST_BODY} bytes"),
            )
        }
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} s", BODY_TIMEOUT.as_secs()),
            );
            r.headers_mut()
                .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let headers = pick_headers(&parts.headers, if wasm { WASM_HEADERS } else { FORWARDED_HEADERS });
    let method = if parts.method == Method::HEAD {
        "GET".to_string()
    } else {
        parts.method.to_string()
    };
    let areq = AppRequest {
        method,
        path,
        headers,
        body: body.to_vec(),
    };
    let started = std::time::Instant::now();
    let answer = gw.client.call(app, areq).await;
    // What the client got, for the dashboard's charts and `/metrics`.
    let outcome = match &answer {
        Ok(_) => Some(Outcome::Certified {
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }),
        Err(ClientError::Timeout(_) | ClientError::Closed) => Some(Outcome::Unavailable),
        Err(_) => None,
    };
    if let Some(o) = outcome {
        series::global().record(&app_name, o, series::now_ms());
    }
    match answer {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = Response::new(Body::from(resp.body));
            *r.status_mut() = status;
            for (k, v) in resp.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().insert(k, v);
                }
            }
            r
        }
        Err(ClientError::Timeout(d)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no certified answer from the agreement cluster within {} ms",
                d.as_millis()
            ),
        ),
        Err(ClientError::TooLarge) => error(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        Err(ClientError::Closed) => error(StatusCode::SERVICE_UNAVAILABLE, "gateway is shutting down"),
        Err(ClientError::BadAnswer) => error(StatusCode::BAD_GATEWAY, "the certified answer does not decode"),
    }
}

fn pick_headers(h: &HeaderMap, names: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names
        .iter()
        .filter_map(|name| {
            h.get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (name.to_string(), v.to_string()))
        })
        .collect();
    out.sort();
    out
}
