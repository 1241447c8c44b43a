//! The OpenAPI document lists every route of the contract, and the copy
//! committed at `orchestrator/openapi.json` is current.
//! Regenerate with `ZZ_UPDATE_OPENAPI=1 cargo test -p zz-orchestrator --test openapi`.

use zz_orchestrator::api::openapi::document;

const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/v1/health"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/cluster"),
    ("get", "/v1/replicas"),
    ("post", "/v1/replicas/{id}/pause"),
    ("post", "/v1/replicas/{id}/wake"),
    ("post", "/v1/replicas/{id}/hibernate"),
    ("post", "/v1/replicas/{id}/replace"),
    ("post", "/v1/faults"),
    ("get", "/v1/faults"),
    ("delete", "/v1/faults/{id}"),
    ("get", "/v1/incidents"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/series"),
    ("get", "/v1/incidents/{id}/timeline"),
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/{name}"),
    ("put", "/v1/apps/{name}"),
    ("delete", "/v1/apps/{name}"),
];

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ROUTES.len(), "undocumented extra operations");
    let fault = &doc["components"]["schemas"]["FaultRequest"]["properties"];
    for field in ["target", "kind", "duration_ms", "force"] {
        assert!(fault.get(field).is_some(), "FaultRequest.{field}");
    }
    let hibernate = &doc["components"]["schemas"]["HibernateRequest"]["properties"];
    assert!(hibernate.get("cold").is_some(), "HibernateRequest.cold");
    let view = &doc["components"]["schemas"]["ReplicaView"]["properties"];
    assert!(view.get("cold").is_some(), "ReplicaView.cold");
    let deploy = &doc["components"]["schemas"]["DeployRequest"]["properties"];
    for field in ["name", "component"] {
        assert!(deploy.get(field).is_some(), "DeployRequest.{field}");
    }
    let app = &doc["components"]["schemas"]["AppView"]["properties"];
    for field in ["name", "kind", "hash", "version", "replicas"] {
        assert!(app.get(field).is_some(), "AppView.{field}");
    }
    let point = &doc["components"]["schemas"]["Point"]["properties"];
    for field in ["t_ms", "answers", "errors", "p50_ms", "p99_ms"] {
        assert!(point.get(field).is_some(), "Point.{field}");
    }
}

#[test]
fn committed_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let fresh = document() + "\n";
    if std::env::var_os("ZZ_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale; regenerate with ZZ_UPDATE_OPENAPI=1 cargo test -p zz-orchestrator --test openapi",
        path.display()
    );
}
