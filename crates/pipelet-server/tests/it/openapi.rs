//! The OpenAPI document: the committed `docs/openapi.json` is what the code generates,
//! every route of the router is in it (and nothing else), `GET /openapi.json` serves it,
//! and `GET /docs` serves the page that renders it.
//!
//! After changing a handler's annotation or a wire type, regenerate the committed copy:
//!
//! ```text
//! PIPELET_UPDATE_OPENAPI=1 cargo test -p pipelet-server --test it openapi
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::{AppExt as _, T2V, expect_html, spawn_queue_only};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const REGENERATE: &str = "PIPELET_UPDATE_OPENAPI=1 cargo test -p pipelet-server --test it openapi";

/// Every operation the server has, as (method, path). A new route goes here, in the
/// router and, with its `#[utoipa::path]` annotation, in `openapi.rs`.
const OPERATIONS: [(&str, &str); 33] = [
    ("get", "/admin/v1/keys"),
    ("post", "/admin/v1/keys"),
    ("patch", "/admin/v1/keys/{name}"),
    ("delete", "/admin/v1/keys/{name}"),
    ("post", "/admin/v1/keys/{name}/rotate"),
    ("get", "/admin/v1/usage"),
    ("post", "/queue/{model_id}"),
    ("get", "/queue/{model_id}/requests/{id}/status"),
    ("get", "/queue/{model_id}/requests/{id}/status/stream"),
    ("put", "/queue/{model_id}/requests/{id}/cancel"),
    ("get", "/queue/{model_id}/requests/{id}"),
    ("get", "/queue/{model_id}/requests/{id}/video.mp4"),
    ("get", "/queue/{model_id}/requests/{id}/webhooks"),
    ("get", "/files/{file}"),
    ("get", "/webhooks/secret"),
    ("post", "/webhooks/secret/rotate"),
    ("get", "/requests"),
    ("get", "/usage"),
    ("get", "/models"),
    ("post", "/worker/v1/claim"),
    ("post", "/worker/v1/jobs/{id}/heartbeat"),
    ("get", "/worker/v1/jobs/{id}/input"),
    ("put", "/worker/v1/jobs/{id}/result"),
    ("post", "/worker/v1/jobs/{id}/complete"),
    ("post", "/worker/v1/jobs/{id}/fail"),
    ("post", "/worker/v1/jobs/{id}/cancelled"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("get", "/"),
    ("get", "/favicon.ico"),
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn spec() -> Value {
    serde_json::from_str(pipelet_server::openapi::spec_json()).expect("the document is JSON")
}

/// (method, path) of every operation in the document.
fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    let mut found = BTreeSet::new();
    for (path, item) in paths {
        for method in HTTP_METHODS {
            if item.get(method).is_some() {
                found.insert((method.to_string(), path.clone()));
            }
        }
    }
    found
}

/// Each `(method, path, operation)` of the document.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in HTTP_METHODS {
            if let Some(op) = item.get(method) {
                found.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    found
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    for (n, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  committed: {x}\n  generated: {y}", n + 1);
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines)",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn committed_document_is_what_the_code_generates() {
    let generated = pipelet_server::openapi::spec_json();
    let path = committed_path();
    if std::env::var_os("PIPELET_UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs dir")).expect("create docs/");
        std::fs::write(&path, generated).expect("write docs/openapi.json");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); generate it with\n\n    {REGENERATE}\n",
            path.display()
        )
    });
    assert!(
        committed == generated,
        "docs/openapi.json is out of date with the code (first difference at {}).\n\
         Regenerate it with\n\n    {REGENERATE}\n\nand commit the result.",
        first_difference(&committed, generated)
    );
}

#[test]
fn every_operation_is_documented_and_nothing_else() {
    let spec = spec();
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        expected.len(),
        OPERATIONS.len(),
        "OPERATIONS has a duplicate"
    );
    assert_eq!(documented(&spec), expected);
}

#[test]
fn every_route_of_the_router_is_documented() {
    // The router's source names each path once, in `.route("...", ...)`.
    let source = include_str!("../../src/router.rs");
    let routed: BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect();
    assert!(routed.len() >= 10, "cannot read the routes of router.rs");
    let documented: BTreeSet<String> = documented(&spec()).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        routed, documented,
        "router.rs paths vs the document's paths"
    );
}

fn concrete(path: &str) -> String {
    path.replace("{model_id}", T2V)
        .replace("{id}", "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f")
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_methods() {
    let app = spawn_queue_only().await;
    let spec = spec();
    let documented = documented(&spec);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            let url = app.url(&concrete(path));
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // No key: a routed operation answers anything but 405 and the fallback's 404.
            let response = app.client.request(m, &url).send().await.expect("request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let fallback = status == StatusCode::NOT_FOUND && body.contains("no such endpoint");
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            if is_documented {
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && !fallback,
                    "{method} {path} is documented but not routed: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed ({status}) but not documented"
                );
            }
        }
    }
}

#[test]
fn operations_are_complete() {
    let spec = spec();
    let tags: BTreeSet<&str> = spec["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["queue", "models", "worker", "admin", "ops"])
    );
    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(
        scheme["description"]
            .as_str()
            .is_some_and(|d| d.contains("Key <key>")),
        "{scheme}"
    );
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&spec) {
        let name = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        assert!(
            !id.is_empty() && ids.insert(id),
            "{name}: a unique operationId"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: a summary"
        );
        let op_tags = op["tags"].as_array().expect("tags");
        assert_eq!(op_tags.len(), 1, "{name}: one tag");
        assert!(
            tags.contains(op_tags[0].as_str().unwrap_or_default()),
            "{name}"
        );
        let responses = op["responses"].as_object().expect("responses");
        let keyed = op["security"]
            .as_array()
            .expect("every operation says its security")
            .iter()
            .any(|s| s.get("bearer").is_some());
        let keyed_only = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s.get("bearer").is_some()));
        // Keyed operations can answer 401; those for clients or workers also 403 (the
        // other role).
        if keyed {
            assert!(responses.contains_key("401"), "{name}: 401");
        }
        if keyed_only {
            assert!(responses.contains_key("403"), "{name}: 403");
            assert!(
                // A claim, the history, the key's webhook secret, the key list and the
                // usage reports name no resource that could be missing.
                responses.contains_key("404")
                    || path == "/worker/v1/claim"
                    || path == "/admin/v1/keys"
                    || path == "/requests"
                    || path.ends_with("/usage")
                    || path.starts_with("/webhooks/secret"),
                "{name}: 404"
            );
        }
        for (code, response) in responses {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name} {code}: a description"
            );
            // Every error is JSON with a `detail`, and the document says so.
            if code.starts_with('4') || code.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                assert!(schema["$ref"].is_string(), "{name} {code}: a JSON body");
            }
        }
    }
}

/// The error schema's `code` is an enum of exactly the codes of the table, each
/// described, and every error schema of every response carries it.
#[test]
fn error_codes_are_the_table() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let code = &schemas["ErrorCode"];
    assert_eq!(code["type"], "string", "{code}");
    let documented: BTreeSet<&str> = code["enum"]
        .as_array()
        .expect("an enum of codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let table: BTreeSet<&str> = pipelet_api::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(documented, table);
    assert_eq!(documented.len(), pipelet_api::ErrorCode::ALL.len());
    let description = code["description"].as_str().unwrap_or_default();
    for c in pipelet_api::ErrorCode::ALL {
        let line = format!("- `{}` ({}): {}", c.as_str(), c.status(), c.description());
        assert!(description.contains(&line), "{line} is not described");
    }
    for name in ["ErrorBody", "ResultNotReady", "WorkerConflict"] {
        let schema = &schemas[name];
        assert_eq!(
            schema["properties"]["code"]["$ref"], "#/components/schemas/ErrorCode",
            "{name}: {schema}"
        );
        let required = schema["required"].as_array().expect("required");
        assert!(
            required.iter().any(|r| r == "code"),
            "{name}: code is required"
        );
    }
    // Each error response of each operation has a body whose schema has a `code`.
    for (method, path, op) in operations(&spec) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            let name = schema
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .unwrap_or_else(|| panic!("{method} {path} {status}: {schema}"));
            assert!(
                schemas[name]["properties"]["code"].is_object(),
                "{method} {path} {status}: {name} has no code"
            );
        }
    }
}

#[test]
fn the_create_body_documents_every_field() {
    let spec = spec();
    let create = &spec["paths"]["/queue/{model_id}"]["post"];
    let schema = &create["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["$ref"], "#/components/schemas/CreateRequest");
    let body = &spec["components"]["schemas"]["CreateRequest"];
    let fields: BTreeSet<&str> = body["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "duration",
        "data_uri",
        "priority",
        "seed",
        "higher_quality_with_more_steps",
        "use_best_resolution",
        "min_height",
    ] {
        assert!(fields.contains(field), "CreateRequest lacks {field}");
    }
    let status = &spec["components"]["schemas"]["StatusResponse"];
    assert!(
        status["properties"]["statusMessages"].is_object(),
        "{status}"
    );
    assert!(status["properties"].get("status_messages").is_none());
    let stream = &spec["paths"]["/queue/{model_id}/requests/{id}/status/stream"]["get"];
    assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object());
    let cancel = &spec["paths"]["/queue/{model_id}/requests/{id}/cancel"]["put"];
    let params: Vec<&str> = cancel["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["model_id", "id", "force"]);
    assert_eq!(
        spec["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the version is the crate's"
    );
}

#[tokio::test]
async fn the_server_serves_the_same_document_without_a_key() {
    let app = spawn_queue_only().await;
    let response = app.get_open("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = crate::common::content_type(&response);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    assert_eq!(text, pipelet_server::openapi::spec_json());
    let served: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(served, spec());
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3'))
    );
}

#[tokio::test]
async fn the_docs_page_is_self_contained_html() {
    let app = spawn_queue_only().await;
    let (csp, html) = expect_html(app.get_open("/docs").await).await;
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<title>pipelet API docs</title>"));
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
    // It reads the document and shares the playground's key.
    for used in [
        "/openapi.json",
        "pipelet.key",
        "localStorage",
        "Authorization",
    ] {
        assert!(html.contains(used), "the page should use {used}");
    }

    // The playground links to it.
    let playground = app.get_open("/").await.text().await.expect("body");
    assert!(playground.contains("href=\"/docs\""), "a link to /docs");
    assert!(playground.contains("const KEY_STORE = 'pipelet.key';"));
}
