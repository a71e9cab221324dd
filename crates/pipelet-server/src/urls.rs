//! Absolute URLs for responses: from `--public-url` when set, else from the request's
//! Host, with `https` when pipelet serves TLS itself (else `X-Forwarded-Proto` from a
//! proxy says it).

use axum::extract::FromRequestParts;
use axum::http::header::HOST;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The base URL a response's links start with, without a trailing slash.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl BaseUrl {
    pub fn request(&self, model_id: &str, id: Uuid) -> String {
        format!("{}/queue/{model_id}/requests/{id}", self.0)
    }
    pub fn status(&self, model_id: &str, id: Uuid) -> String {
        format!("{}/status", self.request(model_id, id))
    }
    pub fn cancel(&self, model_id: &str, id: Uuid) -> String {
        format!("{}/cancel", self.request(model_id, id))
    }
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(url) = &state.config.public_url {
            return Ok(BaseUrl(url.clone()));
        }
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            // Never echo a hostile Host header into links.
            .filter(|h| !h.is_empty() && h.chars().all(is_host_char))
            .map(str::to_string)
            .unwrap_or_else(|| state.config.listen.to_string());
        let scheme = match parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
        {
            // Served over TLS by pipelet itself: https whatever a header says.
            _ if state.config.tls_cert.is_some() => "https",
            Some("https") => "https",
            _ => "http",
        };
        Ok(BaseUrl(format!("{scheme}://{host}")))
    }
}
