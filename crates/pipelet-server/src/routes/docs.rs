//! The API's own documentation: `GET /openapi.json`, the OpenAPI 3 document generated
//! from the code (see [`crate::openapi`]), and `GET /docs`, a self-contained page (inline
//! CSS and JavaScript, no external resources) that renders that document and lets a
//! person try each operation. Neither needs a key; the page asks for one to try calls
//! and keeps it where the playground does.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;

/// The page itself (`crates/pipelet-server/assets/docs.html`, with `page.css`).
pub static PAGE: LazyLock<String> =
    LazyLock::new(|| super::with_shared_css(include_str!("../../assets/docs.html")));

/// As the playground's: this origin only, nothing loaded from elsewhere, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The OpenAPI document
///
/// This API's OpenAPI 3 document, generated from the server's code. No key needed.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", body = Object)),
    security(()),
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::openapi::spec_json(),
    )
}

/// API docs page
///
/// An interactive page that renders this document and can try each operation. No key
/// needed to load it.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "ops",
    operation_id = "docs",
    responses((status = 200, description = "The docs page.", content_type = "text/html",
        body = String)),
    security(()),
)]
pub async fn page() -> impl IntoResponse {
    super::html_page(CONTENT_SECURITY_POLICY, PAGE.as_str())
}
