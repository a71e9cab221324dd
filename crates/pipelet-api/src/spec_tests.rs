//! Create-body validation: the body, text fields, t2v sizes, duration and options.

use serde_json::json;

use super::*;
use crate::catalog::Catalog;
use pipelet_testkit::images::{b64, png};

pub(super) fn model(id: &str) -> ModelSpec {
    Catalog::default().get(id).cloned().unwrap()
}

pub(super) fn t2v() -> ModelSpec {
    model("wan22-fast-t2v")
}

pub(super) fn i2v() -> ModelSpec {
    model("wan22-fast-i2v")
}

pub(super) fn ok(m: &ModelSpec, body: Value) -> ValidatedCreate {
    validate_create(m, &body, &Limits::default()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
}

/// The error, checked to name `field` and to mention every one of `words`.
pub(super) fn bad(m: &ModelSpec, body: Value, field: Option<&str>, words: &[&str]) -> InputError {
    let e = validate_create(m, &body, &Limits::default()).unwrap_err();
    assert_eq!(e.field.as_deref(), field, "{e:?}");
    for w in words {
        assert!(e.detail.contains(w), "{:?} lacks {w:?}", e.detail);
    }
    e
}

/// An i2v body with a `w`x`h` PNG plus the `extra` fields.
pub(super) fn img(w: u32, h: u32, extra: Value) -> Value {
    let mut body = json!({"prompt": "a cat", "data_uri": b64(&png(w, h))});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

pub(super) fn size(v: &ValidatedCreate) -> (u32, u32) {
    (v.spec.width, v.spec.height)
}

#[test]
fn minimal_t2v_body_gets_the_defaults() {
    let v = ok(&t2v(), json!({"prompt": "a red fox"}));
    let s = &v.spec;
    assert_eq!(s.prompt, "a red fox");
    assert_eq!((s.width, s.height), (832, 480));
    assert_eq!((s.duration_s, s.num_frames, s.fps), (5, 81, 16));
    assert_eq!((s.steps, s.higher_quality), (4, false));
    assert_eq!((s.seed, s.negative_prompt.as_deref()), (None, None));
    assert_eq!((s.requested_priority, s.use_best_resolution), (0, false));
    assert!(s.image.is_none() && v.image.is_none());
}

#[test]
fn job_spec_round_trips_through_json() {
    let v = ok(
        &i2v(),
        img(40, 30, json!({"seed": 7, "negative_prompt": "blur"})),
    );
    let text = serde_json::to_string(&v.spec).unwrap();
    assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), v.spec);
}

#[test]
fn body_must_be_an_object() {
    for body in [json!([]), json!("prompt"), json!(null), json!(5)] {
        bad(&t2v(), body, None, &["JSON object"]);
    }
}

#[test]
fn prompt_rules() {
    let m = t2v();
    bad(&m, json!({}), Some("prompt"), &["required"]);
    bad(&m, json!({"prompt": null}), Some("prompt"), &["required"]);
    bad(&m, json!({"prompt": ""}), Some("prompt"), &["empty"]);
    bad(&m, json!({"prompt": " \n\t"}), Some("prompt"), &["empty"]);
    bad(
        &m,
        json!({"prompt": 5}),
        Some("prompt"),
        &["string", "number 5"],
    );
    bad(
        &m,
        json!({"prompt": ["a"]}),
        Some("prompt"),
        &["string", "array"],
    );
    // The bound counts characters, not bytes: 4000 'é' (8000 bytes) pass.
    ok(&m, json!({"prompt": "é".repeat(DEFAULT_MAX_PROMPT_CHARS)}));
    let long = "a".repeat(DEFAULT_MAX_PROMPT_CHARS + 1);
    bad(
        &m,
        json!({"prompt": long}),
        Some("prompt"),
        &["too long", "4001 characters", "4000 characters"],
    );
    // A one-character limit reads "1 character", not "1 characters".
    let tight = Limits {
        max_prompt_chars: 1,
        ..Limits::default()
    };
    let e = validate_create(&m, &json!({"prompt": "ab"}), &tight).unwrap_err();
    assert_eq!(
        e.detail,
        "prompt is too long: 2 characters; the limit is 1 character"
    );
}

#[test]
fn negative_prompt_rules() {
    let m = t2v();
    let v = ok(&m, json!({"prompt": "p", "negative_prompt": "blurry"}));
    assert_eq!(v.spec.negative_prompt.as_deref(), Some("blurry"));
    bad(
        &m,
        json!({"prompt": "p", "negative_prompt": 1}),
        Some("negative_prompt"),
        &["string"],
    );
    let long = "a".repeat(DEFAULT_MAX_PROMPT_CHARS + 1);
    bad(
        &m,
        json!({"prompt": "p", "negative_prompt": long}),
        Some("negative_prompt"),
        &["too long"],
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let v = ok(
        &t2v(),
        json!({"prompt": "p", "foo": {"bar": 1}, "sync_mode": true}),
    );
    assert_eq!(v.spec.prompt, "p");
}

#[test]
fn every_t2v_size_is_accepted() {
    for &(w, h) in crate::catalog::allowed_t2v_sizes() {
        let v = ok(&t2v(), json!({"prompt": "p", "width": w, "height": h}));
        assert_eq!(size(&v), (w, h));
    }
}

#[test]
fn unsupported_t2v_size_lists_the_allowed_ones() {
    let e = bad(
        &t2v(),
        json!({"prompt": "p", "width": 1000, "height": 700}),
        Some("width"),
        &[],
    );
    assert_eq!(
        e.detail,
        "width x height 1000x700 is not supported for text-to-video; use one of 1280x720, \
         720x1280, 480x832, 832x480, 512x512, 768x768"
    );
}

#[test]
fn one_t2v_dimension_picks_its_unique_size() {
    let m = t2v();
    let cases = [
        (json!({"height": 720}), (1280, 720)),
        (json!({"height": 1280}), (720, 1280)),
        (json!({"height": 480}), (832, 480)),
        (json!({"width": 512}), (512, 512)),
        (json!({"width": 480}), (480, 832)),
        (json!({"width": 768.0}), (768, 768)),
    ];
    for (mut body, want) in cases {
        body["prompt"] = json!("p");
        assert_eq!(size(&ok(&m, body.clone())), want, "{body}");
    }
    bad(
        &m,
        json!({"prompt": "p", "height": 600}),
        Some("height"),
        &["height 600", "1280x720"],
    );
    bad(
        &m,
        json!({"prompt": "p", "width": 600}),
        Some("width"),
        &["width 600"],
    );
}

#[test]
fn t2v_dimension_types() {
    let m = t2v();
    assert_eq!(
        size(&ok(
            &m,
            json!({"prompt": "p", "width": 1280.0, "height": 720.0})
        )),
        (1280, 720)
    );
    // null counts as not given.
    assert_eq!(
        size(&ok(
            &m,
            json!({"prompt": "p", "width": null, "height": 720})
        )),
        (1280, 720)
    );
    bad(
        &m,
        json!({"prompt": "p", "width": "1280", "height": 720}),
        Some("width"),
        &["whole number", "string"],
    );
    bad(
        &m,
        json!({"prompt": "p", "width": 1280.5, "height": 720}),
        Some("width"),
        &["whole number"],
    );
    bad(
        &m,
        json!({"prompt": "p", "height": -720}),
        Some("height"),
        &["whole number", "-720"],
    );
    bad(
        &m,
        json!({"prompt": "p", "height": true}),
        Some("height"),
        &["boolean"],
    );
}

#[test]
fn t2v_ignores_use_best_resolution() {
    let v = ok(&t2v(), json!({"prompt": "p", "use_best_resolution": "yes"}));
    assert!(!v.spec.use_best_resolution);
}

#[test]
fn tier_does_not_change_validation() {
    let body = json!({"prompt": "p", "width": 1280, "height": 720});
    let base = ok(&model("wan22-fast-t2v"), body.clone()).spec;
    assert_eq!(ok(&model("wan22-fast-t2v-pro"), body).spec, base);
}

#[test]
fn input_error_displays_its_detail() {
    let e = InputError::field("width", "width is wrong");
    assert_eq!(e.to_string(), "width is wrong");
}

/// Each kind of failure has its own stable code.
#[test]
fn each_failure_has_its_code() {
    use crate::ErrorCode as C;
    let code = |m: &ModelSpec, body: Value| {
        validate_create(m, &body, &Limits::default())
            .map(|_| ())
            .unwrap_err()
            .code
    };
    let (t, i) = (t2v(), i2v());
    assert_eq!(code(&t, json!([1])), C::InvalidInput);
    assert_eq!(code(&t, json!({})), C::MissingField);
    assert_eq!(code(&t, json!({"prompt": ""})), C::InvalidField);
    assert_eq!(code(&t, json!({"prompt": 5})), C::WrongType);
    let long = "x".repeat(DEFAULT_MAX_PROMPT_CHARS + 1);
    assert_eq!(code(&t, json!({"prompt": long})), C::PromptTooLong);
    let p = |extra: Value| {
        let mut body = json!({"prompt": "p"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    assert_eq!(code(&t, p(json!({"width": 333}))), C::InvalidResolution);
    assert_eq!(code(&t, p(json!({"width": -1}))), C::InvalidResolution);
    assert_eq!(code(&t, p(json!({"width": "832"}))), C::WrongType);
    assert_eq!(
        code(&i, img(64, 64, json!({"height": 600}))),
        C::InvalidResolution
    );
    let too_long = p(json!({"width": 1280, "height": 720, "duration": 9}));
    assert_eq!(code(&t, too_long), C::DurationTooLong);
    assert_eq!(code(&t, p(json!({"duration": 0}))), C::InvalidField);
    assert_eq!(code(&t, p(json!({"priority": 5000}))), C::InvalidField);
    assert_eq!(code(&t, p(json!({"data_uri": "x"}))), C::ImageNotAccepted);
    assert_eq!(code(&i, p(json!({}))), C::MissingField);
    let url = "https://example.com/a.png";
    assert_eq!(code(&i, p(json!({"image_url": url}))), C::RemoteImageUrl);
    assert_eq!(code(&i, p(json!({"data_uri": url}))), C::RemoteImageUrl);
    assert_eq!(code(&i, p(json!({"data_uri": "!!!"}))), C::InvalidImage);
    assert_eq!(
        code(&i, p(json!({"data_uri": "R0lGODlh"}))),
        C::UnsupportedImageFormat
    );
    assert_eq!(code(&i, img(9000, 16, json!({}))), C::ImageTooLarge);
    assert_eq!(code(&i, img(400, 64, json!({}))), C::InvalidAspectRatio);
}
