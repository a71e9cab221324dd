//! [`CreateRequest`]: the create body as a type, for documentation and for clients.
//!
//! The server does not deserialize into it: [`crate::validate_create`] reads the raw JSON
//! field by field so that every mistake gets a message naming the field. This type says
//! what those fields are (the OpenAPI schema of `POST /queue/{model_id}` is derived from
//! it), and a test checks that the validator reads each of them.

use serde::{Deserialize, Serialize};

/// `POST /queue/{model_id}`: what to generate.
///
/// Only `prompt` is always required; image-to-video models also need `data_uri`. Unknown
/// fields are ignored and a JSON `null` counts as "not given".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = json!({
        "prompt": "a red fox running through fresh snow at sunrise, cinematic",
        "width": 832,
        "height": 480,
        "duration": 5
    }))
)]
pub struct CreateRequest {
    /// What the video shows. Required and not blank; at most 4000 characters unless the
    /// operator set another limit.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            example = "a red fox running through fresh snow at sunrise"
        )
    )]
    pub prompt: String,
    /// What the video should avoid. Same length limit as `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Text-to-video only: output width in pixels. `width`x`height` must be one of
    /// 1280x720, 720x1280, 480x832, 832x480, 512x512, 768x768 (default 832x480).
    /// Image-to-video models ignore it: the width follows the image's aspect ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 832))]
    pub width: Option<u32>,
    /// Text-to-video: output height, paired with `width` (see there). Image-to-video: 480
    /// or 720 (default 480); the output is this many pixels high (with
    /// `use_best_resolution`, the shorter side is) and keeps the image's aspect ratio,
    /// each side rounded to a multiple of 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 480))]
    pub height: Option<u32>,
    /// Length of the video in whole seconds (`5` and `5.0` alike; `5.5` is refused),
    /// default 5. At most 5 s for 720p output (shorter side at least 720: 1280x720,
    /// 720x1280, 768x768, image-to-video height 720) and 7 s for 480p output. The video
    /// has 16 fps and `16 * duration + 1` frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 7, example = 5))]
    pub duration: Option<u32>,
    /// Image-to-video only, and required there: the input image, a JPEG, PNG or WebP
    /// file as plain base64 or as a `data:image/...;base64,...` URI (not a URL: pipelet
    /// fetches nothing). Bounded in bytes (10 MiB by default), pixels and side length;
    /// aspect ratios beyond 4:1 and truncated or corrupt files are refused. A
    /// text-to-video model refuses it rather than ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_uri: Option<String>,
    /// Image-to-video: accepted instead of `data_uri` when it holds a `data:` URI (as fal's
    /// clients send it). pipelet never fetches remote URLs. Refused by text-to-video
    /// models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Bigger runs sooner. Added to the model tier's priority after being capped by what
    /// the key may use; lowering it is always allowed. Default 0. The create answer's
    /// `priority` says the value used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000, example = 0))]
    pub priority: Option<i64>,
    /// Random seed, for repeatable output; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 42))]
    pub seed: Option<u64>,
    /// More denoising steps: better detail, slower. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub higher_quality_with_more_steps: Option<bool>,
    /// Image-to-video only: make the image's shorter side `height` pixels instead of its
    /// height (a 9:16 selfie at 480 gives 480x848 instead of 272x480). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_best_resolution: Option<bool>,
    /// Image-to-video only: 480 or 720; raises `height` to at least this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 720))]
    pub min_height: Option<u32>,
}

#[cfg(test)]
#[path = "create_tests.rs"]
mod tests;
