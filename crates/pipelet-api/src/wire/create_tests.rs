use serde_json::json;

use super::*;
use crate::catalog::Catalog;
use crate::spec::{Limits, validate_create};
use crate::{ModelSpec, Pipeline};
use pipelet_testkit::images::{b64, png};

/// Every documented field, and the pipeline whose validator reads it.
const FIELDS: [(&str, Pipeline); 12] = [
    ("prompt", Pipeline::T2v),
    ("negative_prompt", Pipeline::T2v),
    ("width", Pipeline::T2v),
    ("height", Pipeline::T2v),
    ("duration", Pipeline::T2v),
    ("data_uri", Pipeline::I2v),
    ("image_url", Pipeline::I2v),
    ("priority", Pipeline::T2v),
    ("seed", Pipeline::T2v),
    ("higher_quality_with_more_steps", Pipeline::T2v),
    ("use_best_resolution", Pipeline::I2v),
    ("min_height", Pipeline::I2v),
];

fn model(pipeline: Pipeline) -> ModelSpec {
    let catalog = Catalog::default();
    let found = catalog.models.iter().find(|m| m.pipeline == pipeline);
    found
        .cloned()
        .expect("the default catalog has both pipelines")
}

fn full() -> CreateRequest {
    CreateRequest {
        prompt: "a cat".into(),
        negative_prompt: Some("blur".into()),
        width: Some(832),
        height: Some(480),
        duration: Some(5),
        data_uri: Some(b64(&png(64, 48))),
        image_url: None,
        priority: Some(3),
        seed: Some(7),
        higher_quality_with_more_steps: Some(true),
        use_best_resolution: Some(true),
        min_height: Some(480),
    }
}

#[test]
fn the_type_names_exactly_the_documented_fields() {
    let mut body = serde_json::to_value(full()).unwrap();
    body["image_url"] = json!("data:image/png;base64,AAAA");
    let names: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
    expected.sort_unstable();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn the_validator_reads_every_documented_field() {
    // A value of the wrong type in one field must be refused naming that field: proof
    // that the validator reads the field the documentation promises.
    for (name, pipeline) in FIELDS {
        let mut body = json!({"prompt": "a cat"});
        body[name] = json!([]);
        let err = validate_create(&model(pipeline), &body, &Limits::default()).expect_err(name);
        assert_eq!(err.field.as_deref(), Some(name), "{name}: {err:?}");
    }
}

#[test]
fn a_full_body_is_valid_for_both_pipelines() {
    for pipeline in Pipeline::ALL {
        let mut body = serde_json::to_value(full()).unwrap();
        if pipeline == Pipeline::T2v {
            // A text-to-video model refuses an image rather than ignore it.
            body.as_object_mut().unwrap().remove("data_uri");
        }
        let valid = validate_create(&model(pipeline), &body, &Limits::default())
            .unwrap_or_else(|e| panic!("{pipeline}: {e:?}"));
        assert_eq!(valid.spec.requested_priority, 3);
        assert_eq!(valid.spec.seed, Some(7));
        assert!(valid.spec.higher_quality);
    }
}

#[test]
fn only_the_prompt_is_required_and_nothing_is_sent_for_none() {
    let body = CreateRequest {
        prompt: "p".into(),
        ..CreateRequest::default()
    };
    assert_eq!(serde_json::to_value(body).unwrap(), json!({"prompt": "p"}));
    let parsed: CreateRequest = serde_json::from_value(json!({"prompt": "p", "x": 1})).unwrap();
    assert_eq!(parsed.width, None);
}

#[cfg(feature = "openapi")]
#[test]
fn the_schema_bounds_match_the_validator() {
    use serde_json::Value;
    use utoipa::PartialSchema;

    use crate::spec::PRIORITY_RANGE;

    let schema = serde_json::to_value(CreateRequest::schema()).unwrap();
    let field = |name: &str| -> Value { schema["properties"][name].clone() };
    assert_eq!(schema["required"], json!(["prompt"]));
    assert_eq!(field("priority")["minimum"], json!(*PRIORITY_RANGE.start()));
    assert_eq!(field("priority")["maximum"], json!(*PRIORITY_RANGE.end()));
    assert_eq!(
        field("duration")["maximum"],
        json!(crate::catalog::MAX_DURATION_480_S)
    );
    for (name, _) in FIELDS {
        let description = field(name)["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!description.is_empty(), "{name} has no description");
    }
}
