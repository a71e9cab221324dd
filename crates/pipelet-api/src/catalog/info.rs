//! [`ModelInfo`]: the public description of a model, for a `/models` endpoint.

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_DURATION_S, DEFAULT_I2V_HEIGHT, DEFAULT_T2V_SIZE, FPS, I2V_HEIGHTS, MAX_DURATION_480_S,
    MAX_DURATION_720_S, ModelSpec, Pipeline, T2V_SIZES,
};

impl ModelSpec {
    /// What a `/models` endpoint says about this model.
    pub fn info(&self) -> ModelInfo {
        let (sizes, heights, default_width, default_height) = match self.pipeline {
            Pipeline::T2v => {
                let sizes = T2V_SIZES
                    .iter()
                    .map(|&(width, height)| Size { width, height });
                let (w, h) = DEFAULT_T2V_SIZE;
                (Some(sizes.collect()), None, Some(w), h)
            }
            Pipeline::I2v => (None, Some(I2V_HEIGHTS.to_vec()), None, DEFAULT_I2V_HEIGHT),
        };
        ModelInfo {
            id: self.id.clone(),
            pipeline: self.pipeline,
            title: self.title.clone(),
            description: self.description.clone(),
            tier_priority: self.priority,
            steps: self.steps,
            hq_steps: self.hq_steps,
            sizes,
            heights,
            max_duration_s: MaxDuration {
                p480: MAX_DURATION_480_S,
                p720: MAX_DURATION_720_S,
            },
            defaults: ModelDefaults {
                width: default_width,
                height: default_height,
                duration: DEFAULT_DURATION_S,
                fps: FPS,
            },
        }
    }
}

/// A `width x height` pair as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Size {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
}

/// Longest duration per output class, as `{"480p": 7, "720p": 5}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaxDuration {
    /// Longest `duration`, in seconds, for 480p-class output.
    #[serde(rename = "480p")]
    pub p480: u32,
    /// Longest `duration`, in seconds, for 720p-class output.
    #[serde(rename = "720p")]
    pub p720: u32,
}

/// What a create body gets when it leaves a field out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelDefaults {
    /// Only for t2v; i2v output width follows the input image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    pub height: u32,
    /// Video length in seconds.
    pub duration: u32,
    /// Output frame rate (frames per second); fixed, not settable per request.
    pub fps: u32,
}

/// The public description of one model (for a `/models` endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    /// The `model_id` of `POST /queue/{model_id}`.
    #[cfg_attr(feature = "openapi", schema(example = "wan22-fast-t2v"))]
    pub id: String,
    /// `t2v` takes a prompt only; `i2v` also needs an input image.
    pub pipeline: Pipeline,
    /// Short human-readable name.
    pub title: String,
    /// What the model is for, in a sentence or two.
    pub description: String,
    /// Added to each request's own `priority`; higher tiers run sooner.
    pub tier_priority: i64,
    /// Denoising steps of a request.
    pub steps: u32,
    /// Denoising steps with `higher_quality_with_more_steps`.
    pub hq_steps: u32,
    /// t2v: the allowed output sizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Vec<Size>>,
    /// i2v: the allowed `height` values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heights: Option<Vec<u32>>,
    /// Longest `duration` per output class, in seconds.
    pub max_duration_s: MaxDuration,
    /// Values used for fields a create body leaves out.
    pub defaults: ModelDefaults,
}
