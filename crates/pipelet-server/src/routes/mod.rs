//! The HTTP handlers, one module per route family; `crate::router` maps paths to them.

pub mod admin_keys;
pub mod docs;
pub mod favicon;
pub mod files;
pub mod health;
pub mod history;
pub mod idempotency;
pub mod models;
pub mod playground;
pub mod queue;
pub mod stream;
pub mod usage;
pub mod webhooks;
pub mod worker_api;

/// Serves one of the self-contained HTML pages (playground, docs) with the headers both
/// need: revalidated on every load (so an upgraded server serves its own page at once),
/// the page's Content-Security-Policy, no sniffing, never framed, no referrer.
pub(crate) fn html_page(
    content_security_policy: &'static str,
    page: &'static str,
) -> impl axum::response::IntoResponse {
    use axum::http::{HeaderName, header};
    let headers: [(HeaderName, &str); 6] = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, content_security_policy),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, page)
}

/// The CSS both pages share (`assets/page.css`): colours, reset, header.
const SHARED_CSS: &str = include_str!("../../assets/page.css");
/// The line in each page's `<style>` that [`with_shared_css`] replaces.
const SHARED_CSS_MARKER: &str = "  /* page.css goes here (routes::with_shared_css) */\n";

/// `page` with the shared CSS in place of its marker line (built once per page).
pub(crate) fn with_shared_css(page: &str) -> String {
    page.replacen(SHARED_CSS_MARKER, SHARED_CSS, 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_pages_get_the_shared_css() {
        for page in [&*super::docs::PAGE, &*super::playground::PAGE] {
            assert!(
                !page.contains("page.css goes here"),
                "marker left in a page"
            );
            assert!(page.contains("--accent-soft"), "shared CSS missing");
        }
    }
}
