//! `/api/openapi.json` documents every route the server answers, and the server
//! answers every route it documents.

use std::collections::BTreeSet;

use crate::support::{ADMIN_TOKEN, client, local_server};

/// Every route, as (method, path). A route added without its operation fails
/// the first assertion below; one documented but not served, the second.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("post", "/hooks/github"),
    ("post", "/hooks/gitlab"),
    ("get", "/api/v1/plugins"),
    ("post", "/api/v1/plugins"),
    ("delete", "/api/v1/plugins/{name}"),
    ("get", "/api/v1/mirrors"),
    ("post", "/api/v1/mirrors/pull"),
    ("post", "/api/v1/mirrors/push"),
    ("get", "/api/v1/mirrors/{id}"),
    ("patch", "/api/v1/mirrors/{id}"),
    ("delete", "/api/v1/mirrors/{id}"),
    ("put", "/api/v1/mirrors/{id}/credentials"),
    ("get", "/api/v1/mirrors/{id}/credentials"),
    ("delete", "/api/v1/mirrors/{id}/credentials"),
    ("get", "/api/v1/mirrors/{id}/ssh-host-keys"),
    ("put", "/api/v1/mirrors/{id}/ssh-host-keys"),
    ("post", "/api/v1/mirrors/{id}/ssh-host-keys/detect"),
    ("get", "/api/v1/mirrors/{id}/schedule"),
    ("put", "/api/v1/mirrors/{id}/schedule"),
    ("post", "/api/v1/mirrors/{id}/schedule/enable"),
    ("post", "/api/v1/mirrors/{id}/schedule/disable"),
    ("get", "/api/v1/mirrors/{id}/bandwidth"),
    ("put", "/api/v1/mirrors/{id}/bandwidth"),
    ("post", "/api/v1/mirrors/{id}/sync"),
    ("get", "/api/v1/mirrors/{id}/runs"),
    ("post", "/api/v1/mirrors/{id}/runs"),
    ("get", "/api/v1/runs/{run_id}"),
    ("get", "/api/v1/runs/{run_id}/refs"),
    ("post", "/api/v1/runs/{run_id}/cancel"),
    ("get", "/api/v1/mirrors/{id}/health"),
    ("get", "/api/v1/health/unhealthy"),
    ("get", "/api/v1/mirrors/{id}/conflicts"),
    ("post", "/api/v1/mirrors/{id}/conflicts/detect"),
    ("post", "/api/v1/mirrors/{id}/conflicts/{cid}/resolve"),
    ("put", "/api/v1/projects/{id}/protected-branches"),
    ("post", "/api/v1/projects/{id}/housekeeping"),
    ("put", "/api/v1/projects/{id}/webhook"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

#[tokio::test]
async fn the_document_and_the_router_list_the_same_routes() {
    let server = local_server();
    let http = client();
    let doc = crate::support::get_json(&server, "/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // Each documented operation reaches a handler: not the fallback's "no such
    // route", not 405. Unknown ids give the handler's own 404.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "999999")
            .replace("{run_id}", "999999")
            .replace("{cid}", "1")
            .replace("{name}", "no-such-plugin");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = http
            .request(method.clone(), server.url(&concrete))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(!body.contains("no such route"), "{method} {path}: {body}");
    }

    // Admin operations say they need the bearer token; probes and webhooks not.
    let security = &doc["components"]["securitySchemes"]["admin_token"];
    assert_eq!(
        (security["type"].as_str(), security["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
    assert!(
        doc["paths"]["/api/v1/mirrors"]["get"]
            .get("security")
            .is_none()
    );
    assert_eq!(doc["security"], serde_json::json!([{"admin_token": []}]));

    // Every admin operation lists what the shared layers answer: 401 from
    // the token check, 400/422 where a body or query string is parsed, each
    // with the error body's schema.
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let statuses = op["responses"].as_object().unwrap();
            let listed = |status: &str| statuses.contains_key(status);
            assert!(listed("401"), "{method} {path}: no 401");
            if op.get("requestBody").is_some() {
                assert!(listed("422"), "{method} {path}: a body but no 422");
            }
            let queried = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if queried {
                assert!(listed("422"), "{method} {path}: a query but no 422");
            }
            let schema = &statuses["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path}");
        }
    }
}

/// Routes are only ever added through `routes!`, which registers the handler
/// and its operation together: a plain `.route(` in the router would slip past
/// the document.
#[test]
fn the_router_adds_no_route_outside_routes_macro() {
    let source = include_str!("../../host/src/api/mod.rs");
    for needle in [".route(", ".route_service(", ".nest_service("] {
        assert!(!source.contains(needle), "api/mod.rs uses {needle}");
    }
}

/// What the derived schemas miss is written into the document, so that a
/// body it allows is a body the service takes (checked against the live
/// service by `tests/api-contract/run.sh`); and a struct is never read from
/// an array, which serde would otherwise allow.
#[tokio::test]
async fn bodies_the_document_allows_are_bodies_the_service_takes() {
    let server = local_server();
    let doc = crate::support::get_json(&server, "/api/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    for name in ["ExternalRunBody", "SetSchedule"] {
        assert_eq!(
            schemas[name]["oneOf"].as_array().map(Vec::len),
            Some(2),
            "{name}"
        );
    }
    for variant in schemas["Secret"]["oneOf"].as_array().unwrap() {
        assert_eq!(variant["additionalProperties"], false, "{variant}");
    }
    let branches = &doc["paths"]["/api/v1/projects/{id}/protected-branches"]["put"]["requestBody"];
    let items = &branches["content"]["application/json"]["schema"]["items"];
    assert_eq!(
        (items["minLength"].as_i64(), items["maxLength"].as_i64()),
        (Some(1), Some(255))
    );

    let api = crate::support::Api::new(&server);
    let id = api
        .create("pull", serde_json::json!({"project_id": "contract/app", "url": "https://git.example.com/a.git"}))
        .await;
    let (status, err) = api
        .put(
            &format!("/api/v1/mirrors/{id}/bandwidth"),
            serde_json::json!([null, null]),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let (status, _) = api
        .put(
            "/api/v1/projects/contract%2Fapp/protected-branches",
            serde_json::json!(["main"]),
        )
        .await;
    assert_eq!(status, 200);
}
