//! The result body: the finished MP4 as plain base64, with what it is, and the pieces a
//! server needs to stream that body without building it in memory.

use serde::{Deserialize, Serialize};

/// `GET /queue/{model_id}/requests/{id}` → 200, once COMPLETED.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultResponse {
    /// The finished video.
    pub video: VideoResult,
}

/// The finished video and what it is.
///
/// `data_uri` comes first so a server can stream the body: see
/// [`ResultResponse::stream_parts`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "The finished video (H.264, yuv420p, in an MP4 that plays in a \
                          browser) and what it is."
    )
)]
pub struct VideoResult {
    /// Plain base64 of the MP4 (no `data:` prefix), so `base64 --decode` works verbatim;
    /// on a server run with `--result-data-uri url`, the same link as `url` instead.
    pub data_uri: String,
    /// A link to the raw MP4 that needs no API key and expires (2 hours by default);
    /// it answers `Range` requests, so a browser `<video>` can seek.
    // `default` only so answers of servers older than the field still parse; this
    // server always sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = String))]
    pub url: Option<String>,
    /// Always `video/mp4`.
    #[cfg_attr(feature = "openapi", schema(example = "video/mp4"))]
    pub content_type: String,
    /// `{request_id}.mp4`.
    pub file_name: String,
    /// Size of the MP4 in bytes (before base64).
    pub file_size: u64,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Frames per second (16).
    pub fps: u32,
    /// `16 * duration + 1`.
    pub num_frames: u32,
    /// Seconds (`num_frames / fps`).
    pub duration: f64,
    /// `preview` or `wan`.
    pub backend: String,
}

/// The MIME type of every result.
pub const VIDEO_CONTENT_TYPE: &str = "video/mp4";

impl ResultResponse {
    /// The JSON text before and after the `data_uri` value, ignoring `video.data_uri`.
    ///
    /// Writing `prefix`, then the base64 of the MP4 (which needs no JSON escaping), then
    /// `suffix` gives the same document as serializing with the base64 inside, without
    /// holding the encoded video in memory.
    pub fn stream_parts(&self) -> (String, String) {
        let v = &self.video;
        // Copy everything but the (possibly huge) base64.
        let shell = ResultResponse {
            video: VideoResult {
                data_uri: String::new(),
                content_type: v.content_type.clone(),
                file_name: v.file_name.clone(),
                backend: v.backend.clone(),
                url: v.url.clone(),
                ..*v
            },
        };
        // Serializing plain strings and numbers cannot fail; `to_string` only errors on
        // maps with non-string keys and failing custom Serialize impls.
        let json = serde_json::to_string(&shell).unwrap_or_default();
        const MARK: &str = "\"data_uri\":\"";
        // Quotes inside other string values are escaped, so this unescaped mark is the key.
        match json.find(MARK) {
            Some(i) => {
                let cut = i + MARK.len();
                (json[..cut].to_owned(), json[cut..].to_owned())
            }
            None => (json, String::new()),
        }
    }
}
