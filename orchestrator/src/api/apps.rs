//! `/v1/apps`: tenants' Wasm apps, deployed, upgraded and removed at run
//! time. The controller keeps the books and the replicas; an `Installer`
//! (given by whoever runs the orchestrator) checks components, stores their
//! bytes where replicas find them, and orders the install or removal in the
//! app's log through the deployment's `admin` client.

use super::{ApiError, ApiState, ErrorBody};
use crate::controller::ApiCmd;
use crate::model::{AppView, TenantApp};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zz_wire::AppId;

/// Largest component accepted.
pub const MAX_COMPONENT: usize = 32 << 20;

/// What the API needs done outside the orchestrator's own state.
pub trait Installer: Send + Sync + 'static {
    /// Compiles and links the component; `Err` is the validator's message.
    fn validate(&self, component: &[u8]) -> Result<(), String>;
    /// Makes the bytes available to replicas; the component's SHA-256, hex.
    fn store(&self, component: &[u8]) -> Result<String, String>;
    /// Orders `ZZ-INSTALL` of `hash` as `name` in `slot`'s log; the version
    /// f+1 replicas certify.
    fn install(&self, slot: AppId, name: String, hash: String) -> BoxFuture<'static, Result<u64, String>>;
    /// Orders `ZZ-REMOVE` in `slot`'s log.
    fn remove(&self, slot: AppId) -> BoxFuture<'static, Result<(), String>>;
    /// The stored bytes of component `hash`, if they are here and match it
    /// (what replicas without the orchestrator's disk fetch).
    fn component(&self, hash: &[u8; 32]) -> Option<Vec<u8>>;
}

/// `POST /v1/apps` and `PUT /v1/apps/{name}` with a JSON body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Required by POST; PUT takes the name from the path.
    #[serde(default)]
    pub name: Option<String>,
    /// The component's bytes, base64.
    pub component: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deployed {
    pub name: String,
    pub hash: String,
    pub version: u64,
}

/// The name and component of a deploy request: JSON `{name, component}`,
/// or the raw component (`Content-Type: application/wasm`) with `?name=`.
fn parse_deploy(headers: &HeaderMap, query: Option<&str>, body: &Bytes) -> Result<(Option<String>, Vec<u8>), ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/wasm"));
    if raw {
        let name = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("name="))
            .map(str::to_string);
        return Ok((name, body.to_vec()));
    }
    let req: DeployRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be JSON {{\"name\", \"component\": base64}} or a component with Content-Type application/wasm: {e}"
        ))
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.component.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("component is not base64: {e}")))?;
    Ok((req.name, bytes))
}

fn installer(s: &ApiState) -> Result<&dyn Installer, ApiError> {
    s.apps
        .as_deref()
        .ok_or_else(|| ApiError::Conflict("this orchestrator cannot deploy apps (it has no admin client)".into()))
}

/// Validates (on a blocking thread: compiling takes a while) and stores.
async fn check_and_store(s: &ApiState, component: Vec<u8>) -> Result<String, ApiError> {
    if component.len() > MAX_COMPONENT {
        return Err(ApiError::BadRequest(format!(
            "component larger than {MAX_COMPONENT} bytes"
        )));
    }
    installer(s)?;
    let inst = s.apps.clone().ok_or(ApiError::Unavailable)?;
    tokio::task::spawn_blocking(move || {
        inst.validate(&component).map_err(ApiError::BadRequest)?;
        inst.store(&component).map_err(ApiError::Internal)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

fn slot_id(s: &ApiState, t: &TenantApp) -> Result<AppId, ApiError> {
    s.dep
        .app_by_name(&t.slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {} is not in the deployment", t.slot)))
}

#[utoipa::path(post, path = "/v1/apps", tag = "apps", security(("bearer" = [])),
    request_body = DeployRequest,
    responses((status = 201, body = Deployed), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deploy(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    installer(&s)?;
    let (name, component) = parse_deploy(&headers, q.as_deref(), &body)?;
    let name = name.ok_or_else(|| ApiError::BadRequest("name the app: {\"name\": ...} or ?name=".into()))?;
    if !crate::controller::valid_app_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "app name {name:?} must match [a-z][a-z0-9-]{{0,31}} and not be v1"
        )));
    }
    let hash = check_and_store(&s, component).await?;
    let t = s
        .ask(|reply| ApiCmd::ReserveApp {
            name: name.clone(),
            hash: hash.clone(),
            reply,
        })
        .await??;
    let slot = slot_id(&s, &t)?;
    match install(&s, slot, name.clone(), hash, "install").await {
        Ok(d) => Ok((StatusCode::CREATED, Json(d)).into_response()),
        Err(e) => {
            if matches!(e, ApiError::NotCertified(_)) {
                // Nothing was certified: free the slot again.
                let _ = s.ask(|reply| ApiCmd::RemoveApp { name, reply }).await;
            }
            Err(e)
        }
    }
}

/// Orders the install of `hash` as `name` in `slot` and records the version
/// f+1 replicas certified; `what` names it in the error.
async fn install(s: &ApiState, slot: AppId, name: String, hash: String, what: &str) -> Result<Deployed, ApiError> {
    let version = installer(s)?
        .install(slot, name.clone(), hash.clone())
        .await
        .map_err(|e| ApiError::NotCertified(format!("the {what} was not certified: {e}")))?;
    s.ask(|reply| ApiCmd::AppInstalled {
        name: name.clone(),
        hash: hash.clone(),
        version,
        reply,
    })
    .await??;
    Ok(Deployed { name, hash, version })
}

#[utoipa::path(put, path = "/v1/apps/{name}", tag = "apps", security(("bearer" = [])),
    request_body = DeployRequest,
    params(("name" = String, Path, description = "The app's name")),
    responses((status = 200, body = Deployed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn upgrade(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Deployed>, ApiError> {
    installer(&s)?;
    let (named, component) = parse_deploy(&headers, q.as_deref(), &body)?;
    if named.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::BadRequest(format!(
            "the body names {:?} but the path {name:?}",
            named.unwrap_or_default()
        )));
    }
    let t = s
        .ask(|reply| ApiCmd::App {
            name: name.clone(),
            reply,
        })
        .await??;
    let hash = check_and_store(&s, component).await?;
    let slot = slot_id(&s, &t)?;
    Ok(Json(install(&s, slot, name, hash, "upgrade").await?))
}

#[utoipa::path(delete, path = "/v1/apps/{name}", tag = "apps", security(("bearer" = [])),
    params(("name" = String, Path, description = "The app's name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(State(s): State<ApiState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    installer(&s)?;
    let t = s
        .ask(|reply| ApiCmd::App {
            name: name.clone(),
            reply,
        })
        .await??;
    let slot = slot_id(&s, &t)?;
    installer(&s)?
        .remove(slot)
        .await
        .map_err(|e| ApiError::NotCertified(format!("the removal was not certified: {e}")))?;
    s.ask(|reply| ApiCmd::RemoveApp { name, reply }).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps", security(("bearer" = [])),
    responses((status = 200, body = Vec<AppView>)))]
pub async fn list(State(s): State<ApiState>) -> Result<Json<Vec<AppView>>, ApiError> {
    Ok(Json(s.ask(ApiCmd::Apps).await?))
}

#[utoipa::path(get, path = "/v1/apps/{name}", tag = "apps", security(("bearer" = [])),
    params(("name" = String, Path, description = "The app's name")),
    responses((status = 200, body = AppView), (status = 404, body = ErrorBody)))]
pub async fn one(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<AppView>, ApiError> {
    s.ask(ApiCmd::Apps)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no such app {name}")))
}
