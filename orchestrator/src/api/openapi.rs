//! The OpenAPI description, generated from the handlers' annotations.

use super::handlers;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "zz orchestrator admin API", description = "Replica pool, faults, incidents and events of a zz deployment."),
    paths(
        handlers::health,
        handlers::dashboard,
        handlers::metrics,
        handlers::openapi_json,
        handlers::cluster,
        handlers::replicas,
        handlers::pause,
        handlers::wake,
        handlers::hibernate,
        handlers::replace,
        handlers::inject_fault,
        handlers::faults,
        handlers::clear_fault,
        handlers::incidents,
        handlers::events,
        handlers::event_stream,
        super::apps::deploy,
        super::apps::upgrade,
        super::apps::remove,
        super::apps::list,
        super::apps::one,
        super::live::series,
        super::live::incident_timeline,
    ),
    components(schemas(
        handlers::Health,
        handlers::FaultRequest,
        handlers::HibernateRequest,
        handlers::Created,
        super::ErrorBody,
        crate::model::ReplicaState,
        crate::model::ReplicaView,
        crate::model::Event,
        crate::model::IncidentView,
        crate::model::FaultView,
        crate::model::ClusterView,
        crate::model::NodeView,
        crate::model::NodeAppStatus,
        crate::model::AppView,
        super::apps::DeployRequest,
        super::apps::Deployed,
        super::live::SeriesView,
        super::live::AppSeries,
        crate::series::Point,
        crate::timeline::Marker,
        crate::timeline::Phase,
        crate::timeline::IncidentTimeline,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served and as committed in `orchestrator/openapi.json`.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
