//! The web playground at `/`: one self-contained HTML page (inline CSS and JavaScript,
//! no external resources) compiled into the binary. Loading it needs no key; the page
//! asks for one and then talks to the public API like any other client.
//!
//! The page keeps the key in the browser's `localStorage`, so it is served with a
//! strict Content-Security-Policy: it may talk to this server only, load nothing from
//! elsewhere, and not be framed.

use std::sync::LazyLock;

use axum::response::IntoResponse;

/// The page itself (`crates/pipelet-server/assets/playground.html`, with `page.css`).
pub static PAGE: LazyLock<String> =
    LazyLock::new(|| super::with_shared_css(include_str!("../../assets/playground.html")));

/// Everything the page needs is inline or from this origin; videos and image previews
/// are `blob:` and `data:` URLs made in the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Web playground
///
/// A page to make videos from the browser. No key needed to load it; it asks for one.
#[utoipa::path(
    get,
    path = "/",
    tag = "ops",
    operation_id = "playground",
    responses((status = 200, description = "The playground page.", content_type = "text/html",
        body = String)),
    security(()),
)]
pub async fn page() -> impl IntoResponse {
    super::html_page(CONTENT_SECURITY_POLICY, PAGE.as_str())
}
