//! `GET /models`: the model catalog as JSON, so that clients (and the web playground)
//! can offer only what the server accepts. It needs no key: the catalog is no secret.
//!
//! Each entry is the catalog's [`ModelInfo`] (id, pipeline, title, tier priority, steps,
//! allowed `sizes` for t2v or `heights` for i2v, the longest duration per output class,
//! and the defaults), plus `resolutions`: every allowed size or height with its output
//! class and longest duration already worked out, so a client need not know the rule
//! that a shorter side (t2v) or height (i2v) of at least 720 makes a 720p video.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use pipelet_api::ModelInfo;
use pipelet_api::catalog::ResolutionClass;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The body of `GET /models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelEntry>,
}

/// One model: the catalog's description plus its resolutions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    #[serde(flatten)]
    pub info: ModelInfo,
    pub resolutions: Vec<Resolution>,
}

/// One allowed output size (t2v: `width` and `height`) or height (i2v: `height` only),
/// with the class that decides its longest duration.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolution {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    pub height: u32,
    /// `"480p"` or `"720p"`.
    #[schema(value_type = String, example = "480p")]
    pub class: &'static str,
    pub max_duration_s: u32,
}

fn resolution(width: Option<u32>, height: u32) -> Resolution {
    // t2v: the shorter side decides; i2v: the requested height does.
    let side = width.map_or(height, |w| w.min(height));
    let class = ResolutionClass::of_side(side);
    Resolution {
        width,
        height,
        class: class.label(),
        max_duration_s: class.max_duration_s(),
    }
}

fn entry(info: ModelInfo) -> ModelEntry {
    let sizes = info
        .sizes
        .iter()
        .flatten()
        .map(|s| resolution(Some(s.width), s.height));
    let heights = info.heights.iter().flatten().map(|&h| resolution(None, h));
    let resolutions = sizes.chain(heights).collect();
    ModelEntry { info, resolutions }
}

/// The catalog of this server, in catalog order.
pub fn models(state: &AppState) -> ModelsResponse {
    ModelsResponse {
        models: state
            .config
            .catalog
            .infos()
            .into_iter()
            .map(entry)
            .collect(),
    }
}

/// List the models
///
/// The catalog of this server, in catalog order: each model's id, pipeline, tier priority,
/// steps, allowed sizes (t2v) or heights (i2v) and durations, and defaults. No key needed.
#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    operation_id = "models",
    responses(
        (status = 200, description = "The model catalog.", body = ModelsResponse,
            headers(("Cache-Control" = String, description = "`public, max-age=60`"))),
    ),
    security(()),
)]
pub async fn list(State(state): State<AppState>) -> impl IntoResponse {
    (
        // The catalog changes only with a restart; a minute of caching is harmless.
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(models(&state)),
    )
}
