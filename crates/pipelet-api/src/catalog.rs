//! The model catalog: which model ids exist, which pipeline serves each, and the tier
//! settings (priority, steps). It is data an operator can replace with a JSON file.
//!
//! This module also owns the fixed facts of the two pipelines (allowed sizes, heights and
//! durations) and [`ModelInfo`], the description a `/models` endpoint can return.

mod info;

use serde::{Deserialize, Serialize};

pub use info::{MaxDuration, ModelDefaults, ModelInfo, Size};

/// The two Wan 2.2 pipelines. Tiers of one pipeline share one set of weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Text-to-video: the prompt alone decides the video.
    T2v,
    /// Image-to-video: the video starts from the request's input image.
    I2v,
}

impl Pipeline {
    /// Both pipelines, in the order listings and metrics use.
    pub const ALL: [Pipeline; 2] = [Pipeline::T2v, Pipeline::I2v];

    /// The wire and CLI spelling (`"t2v"`, `"i2v"`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Pipeline::T2v => "t2v",
            Pipeline::I2v => "i2v",
        }
    }

    /// The pipeline spelled `s` (exactly `"t2v"` or `"i2v"`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Pipeline> {
        match s {
            "t2v" => Some(Pipeline::T2v),
            "i2v" => Some(Pipeline::I2v),
            _ => None,
        }
    }

    /// The name a person reads in error messages ("text-to-video").
    pub fn long_name(self) -> &'static str {
        match self {
            Pipeline::T2v => "text-to-video",
            Pipeline::I2v => "image-to-video",
        }
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Denoising steps of the Lightning-distilled "fast" models.
pub const DEFAULT_STEPS: u32 = 4;
/// Steps used for `higher_quality_with_more_steps: true`.
pub const DEFAULT_HQ_STEPS: u32 = 8;
/// Output frame rate of every Wan 2.2 fast model.
pub const FPS: u32 = 16;
/// Duration used when the body has none.
pub const DEFAULT_DURATION_S: u32 = 5;
/// Longest video for 720-class output (shorter side at least 720).
pub const MAX_DURATION_720_S: u32 = 5;
/// Longest video for 480-class output.
pub const MAX_DURATION_480_S: u32 = 7;

/// Text-to-video sizes as (width, height), the only ones the model was trained for.
const T2V_SIZES: [(u32, u32); 6] = [
    (1280, 720),
    (720, 1280),
    (480, 832),
    (832, 480),
    (512, 512),
    (768, 768),
];
/// Text-to-video size when the body names neither width nor height.
pub const DEFAULT_T2V_SIZE: (u32, u32) = (832, 480);
const I2V_HEIGHTS: [u32; 2] = [480, 720];
/// Image-to-video height when the body names none.
pub const DEFAULT_I2V_HEIGHT: u32 = 480;

/// Allowed text-to-video `(width, height)` pairs.
pub fn allowed_t2v_sizes() -> &'static [(u32, u32)] {
    &T2V_SIZES
}

/// Allowed image-to-video `height` (and `min_height`) values.
pub fn allowed_i2v_heights() -> &'static [u32] {
    &I2V_HEIGHTS
}

/// Output class that decides the longest allowed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionClass {
    /// Shorter side (t2v) or height (i2v) below 720: up to [`MAX_DURATION_480_S`].
    P480,
    /// Shorter side (t2v) or height (i2v) of 720 or more: up to [`MAX_DURATION_720_S`].
    P720,
}

impl ResolutionClass {
    /// The class of an output whose shorter side (t2v) or requested height (i2v) is `side`.
    pub fn of_side(side: u32) -> ResolutionClass {
        if side >= 720 {
            ResolutionClass::P720
        } else {
            ResolutionClass::P480
        }
    }

    /// Longest allowed `duration` for this class, in seconds.
    pub fn max_duration_s(self) -> u32 {
        match self {
            ResolutionClass::P480 => MAX_DURATION_480_S,
            ResolutionClass::P720 => MAX_DURATION_720_S,
        }
    }

    /// The class as error messages name it (`"480p"`, `"720p"`).
    pub fn label(self) -> &'static str {
        match self {
            ResolutionClass::P480 => "480p",
            ResolutionClass::P720 => "720p",
        }
    }
}

/// One model id of the catalog: a tier of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)] // an operator's typo ("prority") must not pass silently
pub struct ModelSpec {
    /// The `model_id` clients put in `POST /queue/{model_id}`; unique in the catalog.
    pub id: String,
    /// Which set of weights (and so which workers) serves this model.
    pub pipeline: Pipeline,
    /// Tier priority, added to the request's own priority; higher is dispatched sooner.
    #[serde(default)]
    pub priority: i64,
    /// Denoising steps of a normal request (at least 1; default [`DEFAULT_STEPS`]).
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// Steps for `higher_quality_with_more_steps: true`.
    #[serde(default = "default_hq_steps")]
    pub hq_steps: u32,
    /// Short human-readable name shown by `/models`; may be empty.
    #[serde(default)]
    pub title: String,
    /// One or two sentences for `/models`; may be empty.
    #[serde(default)]
    pub description: String,
}

fn default_steps() -> u32 {
    DEFAULT_STEPS
}

fn default_hq_steps() -> u32 {
    DEFAULT_HQ_STEPS
}

impl ModelSpec {
    fn builtin(id: &str, pipeline: Pipeline, priority: i64, title: &str, desc: &str) -> Self {
        ModelSpec {
            id: id.to_owned(),
            pipeline,
            priority,
            steps: DEFAULT_STEPS,
            hq_steps: DEFAULT_HQ_STEPS,
            title: title.to_owned(),
            description: desc.to_owned(),
        }
    }
}

/// A catalog that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file is not JSON, or not the `{"models": [...]}` shape.
    #[error("catalog is not valid JSON for a model list: {0}")]
    Json(#[from] serde_json::Error),
    /// `models` is empty: the server would accept nothing.
    #[error("catalog has no models")]
    Empty,
    /// Two entries share this id, so lookups would be ambiguous.
    #[error("catalog lists model id {0:?} more than once")]
    DuplicateId(String),
    /// The id is not 1 to 64 of `[a-z0-9._-]` starting with `[a-z0-9]` (it goes in URLs).
    #[error(
        "catalog model id {0:?} is invalid: use 1 to 64 of [a-z0-9._-], starting with [a-z0-9]"
    )]
    BadId(String),
    /// A step count is 0.
    #[error("catalog model {id:?}: {field} must be at least 1")]
    BadSteps {
        /// The model whose entry is wrong.
        id: String,
        /// `"steps"` or `"hq_steps"`.
        field: &'static str,
    },
}

/// The set of models the server accepts requests for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The models, in the order `/models` lists them; ids are unique once validated.
    pub models: Vec<ModelSpec>,
}

impl Default for Catalog {
    /// The six Wan 2.2 fast models: three tiers per pipeline on one set of weights each.
    fn default() -> Self {
        use Pipeline::{I2v, T2v};
        let t2v = "Wan 2.2 fast text-to-video";
        let i2v = "Wan 2.2 fast image-to-video";
        Catalog {
            models: vec![
                ModelSpec::builtin("wan22-fast-t2v", T2v, 0, t2v, "Text-to-video, base tier."),
                ModelSpec::builtin(
                    "wan22-fast-t2v-premium",
                    T2v,
                    10,
                    &format!("{t2v} (premium)"),
                    "Text-to-video, same model, higher queue priority.",
                ),
                ModelSpec::builtin(
                    "wan22-fast-t2v-pro",
                    T2v,
                    20,
                    &format!("{t2v} (pro)"),
                    "Text-to-video, same model, highest queue priority.",
                ),
                ModelSpec::builtin("wan22-fast-i2v", I2v, 0, i2v, "Image-to-video, base tier."),
                ModelSpec::builtin(
                    "wan22-fast-i2v-pro",
                    I2v,
                    10,
                    &format!("{i2v} (pro)"),
                    "Image-to-video, same model, higher queue priority.",
                ),
                ModelSpec::builtin(
                    "wan22-fast-i2v-vip",
                    I2v,
                    20,
                    &format!("{i2v} (vip)"),
                    "Image-to-video, same model, highest queue priority.",
                ),
            ],
        }
    }
}

impl Catalog {
    /// The model with this exact id, if the catalog has one.
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Descriptions of every model, in catalog order.
    pub fn infos(&self) -> Vec<ModelInfo> {
        self.models.iter().map(ModelSpec::info).collect()
    }

    /// Parses an operator's catalog: `{"models": [...]}` or a bare `[...]` list.
    pub fn from_json(json: &str) -> Result<Catalog, CatalogError> {
        // Look at the outer shape first so the serde error is about the form meant.
        let value: serde_json::Value = serde_json::from_str(json)?;
        let catalog = if value.is_array() {
            Catalog {
                models: serde_json::from_value(value)?,
            }
        } else {
            serde_json::from_value(value)?
        };
        catalog.validate()?;
        Ok(catalog)
    }

    /// Checks ids (valid, unique), steps and non-emptiness.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.models.is_empty() {
            return Err(CatalogError::Empty);
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if !valid_model_id(&m.id) {
                return Err(CatalogError::BadId(m.id.clone()));
            }
            if !seen.insert(m.id.as_str()) {
                return Err(CatalogError::DuplicateId(m.id.clone()));
            }
            for (field, v) in [("steps", m.steps), ("hq_steps", m.hq_steps)] {
                if v == 0 {
                    let id = m.id.clone();
                    return Err(CatalogError::BadSteps { id, field });
                }
            }
        }
        Ok(())
    }
}

/// `[a-z0-9][a-z0-9._-]{0,63}`: safe in URL paths, file names and metric labels.
pub fn valid_model_id(id: &str) -> bool {
    let b = id.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 64
        && ok(&b[0])
        && b[1..]
            .iter()
            .all(|c| ok(c) || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
