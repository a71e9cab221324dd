//! Validation of create bodies: the [`Limits`] that bound them, the [`JobSpec`] a valid
//! body becomes (stored as JSON with the job and handed to the runner), and the
//! [`InputError`] that tells a person exactly what to fix.
//!
//! Fields are read by hand from a `serde_json::Value`, not through a derived struct, so a
//! wrong type gets a message naming the field and the expected type. Unknown fields are
//! ignored, and a JSON `null` counts as "not given".

mod fields;
mod limits;
mod size;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{DEFAULT_DURATION_S, FPS, ModelSpec, Pipeline, ResolutionClass};
use crate::error_codes::ErrorCode;
use crate::image_input;
pub use crate::image_input::InputImageInfo;
pub use limits::*;
pub use size::{i2v_output_size, t2v_size};

/// A create body that cannot be accepted (HTTP 422). `detail` is written for a person,
/// `code` for programs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{detail}")]
pub struct InputError {
    /// What kind of failure this is (a 422 code of [`ErrorCode`]).
    #[serde(default = "invalid_input")]
    pub code: ErrorCode,
    /// The body field at fault, when there is one.
    pub field: Option<String>,
    /// What is wrong and how to fix it, written for a person; may be reworded any time.
    pub detail: String,
}

fn invalid_input() -> ErrorCode {
    ErrorCode::InvalidInput
}

impl InputError {
    /// A field whose value is not allowed (`invalid_field`; see [`InputError::with_code`]).
    pub fn field(field: &str, detail: impl Into<String>) -> Self {
        InputError {
            code: ErrorCode::InvalidField,
            field: Some(field.to_owned()),
            detail: detail.into(),
        }
    }

    /// An error about the body as a whole (`invalid_input`).
    pub fn body(detail: impl Into<String>) -> Self {
        InputError {
            code: ErrorCode::InvalidInput,
            field: None,
            detail: detail.into(),
        }
    }

    /// The same error with a more specific code.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }
}

/// Everything a runner needs to make the video; stored as JSON with the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    /// What the video should show (non-empty, within the server's length limit).
    pub prompt: String,
    /// What the video should avoid; `null` uses the model's own default.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Output width in pixels (a multiple of 16).
    pub width: u32,
    /// Output height in pixels (a multiple of 16).
    pub height: u32,
    /// Video length in seconds.
    pub duration_s: u32,
    /// `16 * duration_s + 1` (Wan's 4n+1 rule).
    pub num_frames: u32,
    /// Output frame rate (frames per second).
    pub fps: u32,
    /// Denoising steps, from the model's tier (`hq_steps` when `higher_quality`).
    pub steps: u32,
    /// The body's `higher_quality_with_more_steps`.
    #[serde(default)]
    pub higher_quality: bool,
    /// Random seed; `null` lets the worker derive one from the job id.
    #[serde(default)]
    pub seed: Option<u64>,
    /// i2v: the image's shorter side, not its height, was set to the target height.
    #[serde(default)]
    pub use_best_resolution: bool,
    /// The input image (i2v); its bytes live in the blob store, not here.
    #[serde(default)]
    pub image: Option<InputImageInfo>,
    /// The body's `priority`, before the server adds the tier and clamps it per key.
    #[serde(default)]
    pub requested_priority: i64,
}

impl JobSpec {
    /// A small valid text-to-video spec (480x272, one second, 4 steps) with `prompt`:
    /// for tests and tools that need a job without a create body.
    pub fn sample(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            width: 480,
            height: 272,
            duration_s: 1,
            num_frames: 17,
            fps: 16,
            steps: 4,
            higher_quality: false,
            seed: None,
            use_best_resolution: false,
            image: None,
            requested_priority: 0,
        }
    }
}

/// A valid create body.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCreate {
    /// What gets stored with the job.
    pub spec: JobSpec,

    /// The decoded input image file (i2v), for the blob store.
    pub image: Option<Vec<u8>>,
}

/// Checks a create body for `model` and turns it into a [`JobSpec`].
///
/// Cheap checks run first, so a body with a bad `duration` is refused before its image
/// is decoded.
pub fn validate_create(
    model: &ModelSpec,
    body: &Value,
    limits: &Limits,
) -> Result<ValidatedCreate, InputError> {
    let Some(obj) = body.as_object() else {
        return Err(InputError::body(format!(
            "the request body must be a JSON object like {{\"prompt\": \"...\"}}; got {}",
            fields::describe(body)
        )));
    };
    let prompt = match fields::opt_string(obj, "prompt", limits.max_prompt_chars)? {
        Some(p) if !p.trim().is_empty() => p,
        Some(_) => return Err(InputError::field("prompt", "prompt must not be empty")),
        None => {
            return Err(InputError::field(
                "prompt",
                "prompt is required: a non-empty string describing the video",
            )
            .with_code(ErrorCode::MissingField));
        }
    };
    let negative_prompt = fields::opt_string(obj, "negative_prompt", limits.max_prompt_chars)?;

    // The size class (and so the longest duration) is known before any image work.
    let target = match model.pipeline {
        Pipeline::T2v => {
            no_image_for_t2v(model, obj)?;
            let width = fields::opt_dimension(obj, "width")?;
            let height = fields::opt_dimension(obj, "height")?;
            let (w, h) = t2v_size(width, height)?;
            Target::T2v(w, h)
        }
        Pipeline::I2v => Target::I2v(i2v_height(obj)?),
    };
    let duration_s = duration(obj, &target)?;

    let requested_priority = match fields::opt_integer(obj, "priority", "an integer")? {
        None => 0,
        Some(p) => i64::try_from(p)
            .ok()
            .filter(|p| PRIORITY_RANGE.contains(p))
            .ok_or_else(|| {
                InputError::field(
                    "priority",
                    format!(
                        "priority must be an integer from {} to {} (bigger runs sooner); got {p}",
                        PRIORITY_RANGE.start(),
                        PRIORITY_RANGE.end()
                    ),
                )
            })?,
    };
    let higher_quality = fields::opt_bool(obj, "higher_quality_with_more_steps")?.unwrap_or(false);
    let seed = match fields::opt_integer(obj, "seed", "a non-negative integer")? {
        None => None,
        Some(s) => Some(u64::try_from(s).map_err(|_| {
            InputError::field(
                "seed",
                format!("seed must be an integer from 0 to {}; got {s}", u64::MAX),
            )
        })?),
    };

    let (width, height, use_best_resolution, image, image_bytes) = match target {
        Target::T2v(w, h) => (w, h, false, None, None),
        Target::I2v(target_h) => {
            let best = fields::opt_bool(obj, "use_best_resolution")?.unwrap_or(false);
            let bytes = image_input::decode_data_uri(image_field(obj)?, limits)?;
            let info = image_input::probe_image(&bytes, limits)?;
            check_aspect(&info, limits)?;
            let max_side = limits.max_output_side;
            let (w, h) = i2v_output_size(info.width, info.height, target_h, best, max_side);
            (w, h, best, Some(info), Some(bytes))
        }
    };

    let spec = JobSpec {
        prompt,
        negative_prompt,
        width,
        height,
        duration_s,
        num_frames: FPS * duration_s + 1,
        fps: FPS,
        steps: if higher_quality {
            model.hq_steps
        } else {
            model.steps
        },
        higher_quality,
        seed,
        use_best_resolution,
        image,
        requested_priority,
    };
    Ok(ValidatedCreate {
        spec,
        image: image_bytes,
    })
}

/// i2v `height` (480 or 720, default 480), raised to `min_height` when that is larger.
fn i2v_height(obj: &Map<String, Value>) -> Result<u32, InputError> {
    let height = size::i2v_height_field(obj, "height")?;
    let min_height = size::i2v_height_field(obj, "min_height")?;
    let height = height.unwrap_or(crate::catalog::DEFAULT_I2V_HEIGHT);
    Ok(min_height.map_or(height, |m| height.max(m)))
}

/// The requested output: a t2v size, or an i2v height (the width follows the image).
enum Target {
    T2v(u32, u32),
    I2v(u32),
}

/// `duration` in whole seconds, default 5, at most the size class's maximum.
fn duration(obj: &Map<String, Value>, target: &Target) -> Result<u32, InputError> {
    let (class, size_text) = match *target {
        Target::T2v(w, h) => (ResolutionClass::of_side(w.min(h)), format!("{w}x{h}")),
        Target::I2v(h) => (ResolutionClass::of_side(h), format!("height {h}")),
    };
    let max = class.max_duration_s();
    let Some(d) = fields::opt_integer(obj, "duration", "a whole number of seconds")? else {
        return Ok(DEFAULT_DURATION_S);
    };
    if d < 1 {
        return Err(InputError::field(
            "duration",
            format!("duration must be at least 1 second; got {d}"),
        ));
    }
    if d > i128::from(max) {
        let hint = match class {
            ResolutionClass::P720 => format!(
                "; 480p sizes allow up to {} s",
                ResolutionClass::P480.max_duration_s()
            ),
            ResolutionClass::P480 => String::new(),
        };
        return Err(InputError::field(
            "duration",
            format!(
                "duration {d} s is too long for {} output ({size_text}): at most {max} s{hint}",
                class.label()
            ),
        )
        .with_code(ErrorCode::DurationTooLong));
    }
    Ok(u32::try_from(d).unwrap_or(max)) // 1..=max always fits
}

/// The image field: `data_uri`, or `image_url` holding a data URI (as fal clients send).
fn image_field(obj: &Map<String, Value>) -> Result<&str, InputError> {
    if let Some(s) = fields::opt_str(obj, "data_uri")? {
        return Ok(s);
    }
    match fields::opt_str(obj, "image_url")? {
        Some(s) if s.trim_start().starts_with("data:") => Ok(s),
        Some(_) => Err(InputError::field(
            "image_url",
            "image_url must be a data: URI; pipelet does not fetch remote images. \
             Send the image itself as data_uri (base64 of a JPEG, PNG or WebP file)",
        )
        .with_code(ErrorCode::RemoteImageUrl)),
        None => Err(InputError::field(
            "data_uri",
            "data_uri is required for image-to-video models: the base64 of a JPEG, PNG or \
             WebP file (plain, or as data:image/...;base64,...)",
        )
        .with_code(ErrorCode::MissingField)),
    }
}

/// Refuses an input image sent to a text-to-video model, which would silently drop it.
fn no_image_for_t2v(model: &ModelSpec, obj: &Map<String, Value>) -> Result<(), InputError> {
    // `null` is "not given", as everywhere; any other value (even "") is a mistake.
    let Some(field) = ["data_uri", "image_url"]
        .into_iter()
        .find(|name| obj.get(*name).is_some_and(|v| !v.is_null()))
    else {
        return Ok(());
    };
    Err(InputError::field(
        field,
        format!(
            "{field} is only for image-to-video models; {} is a text-to-video model and would \
             ignore the image. Remove {field}, or send the request to an image-to-video model \
             (GET /models lists each model's pipeline)",
            model.id
        ),
    )
    .with_code(ErrorCode::ImageNotAccepted))
}

/// Refuses images too elongated for the model to animate sensibly.
fn check_aspect(info: &InputImageInfo, limits: &Limits) -> Result<(), InputError> {
    let (long, short) = (info.width.max(info.height), info.width.min(info.height));
    let ratio = f64::from(long) / f64::from(short.max(1));
    if ratio > limits.max_aspect_ratio {
        return Err(InputError::field(
            "data_uri",
            format!(
                "data_uri image is {}x{}, an aspect ratio of {ratio:.2}:1; at most {}:1 is \
                 supported, so crop the image first",
                info.width, info.height, limits.max_aspect_ratio
            ),
        )
        .with_code(ErrorCode::InvalidAspectRatio));
    }
    Ok(())
}

#[cfg(test)]
#[path = "spec_i2v_tests.rs"]
mod i2v_tests;
#[cfg(test)]
#[path = "spec_option_tests.rs"]
mod option_tests;
#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
