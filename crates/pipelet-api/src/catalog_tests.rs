use super::*;

#[test]
fn default_catalog_has_the_six_models_with_their_tiers() {
    let c = Catalog::default();
    let expect = [
        ("wan22-fast-t2v", Pipeline::T2v, 0),
        ("wan22-fast-t2v-premium", Pipeline::T2v, 10),
        ("wan22-fast-t2v-pro", Pipeline::T2v, 20),
        ("wan22-fast-i2v", Pipeline::I2v, 0),
        ("wan22-fast-i2v-pro", Pipeline::I2v, 10),
        ("wan22-fast-i2v-vip", Pipeline::I2v, 20),
    ];
    assert_eq!(c.models.len(), expect.len());
    for (id, pipeline, priority) in expect {
        let m = c.get(id).unwrap_or_else(|| panic!("missing {id}"));
        assert_eq!((m.pipeline, m.priority), (pipeline, priority), "{id}");
        assert_eq!((m.steps, m.hq_steps), (4, 8), "{id}");
        assert!(!m.title.is_empty());
    }
    c.validate().unwrap();
    assert!(c.get("wan22-fast").is_none());
    assert!(c.get("").is_none());
}

#[test]
fn vip_is_the_highest_i2v_tier() {
    let c = Catalog::default();
    let top = c
        .models
        .iter()
        .filter(|m| m.pipeline == Pipeline::I2v)
        .max_by_key(|m| m.priority)
        .unwrap();
    assert_eq!(top.id, "wan22-fast-i2v-vip");
}

#[test]
fn catalog_round_trips_through_json() {
    let c = Catalog::default();
    let json = serde_json::to_string_pretty(&c).unwrap();
    assert_eq!(Catalog::from_json(&json).unwrap(), c);
}

#[test]
fn from_json_fills_defaults_and_accepts_a_bare_list() {
    let wrapped = r#"{"models": [{"id": "my-t2v", "pipeline": "t2v"}]}"#;
    let bare = r#"[{"id": "my-t2v", "pipeline": "t2v"}]"#;
    for json in [wrapped, bare] {
        let c = Catalog::from_json(json).unwrap();
        let m = c.get("my-t2v").unwrap();
        assert_eq!((m.priority, m.steps, m.hq_steps), (0, 4, 8));
    }
}

#[test]
fn from_json_refuses_bad_catalogs() {
    let cases = [
        ("not json", "JSON"),
        (r#"{"models": []}"#, "no models"),
        ("[]", "no models"),
        (
            r#"[{"id":"a","pipeline":"t2v"},{"id":"a","pipeline":"i2v"}]"#,
            "more than once",
        ),
        (r#"[{"id":"Upper","pipeline":"t2v"}]"#, "invalid"),
        (r#"[{"id":"-dash","pipeline":"t2v"}]"#, "invalid"),
        (r#"[{"id":"a/b","pipeline":"t2v"}]"#, "invalid"),
        (
            r#"[{"id":"a","pipeline":"t2v","steps":0}]"#,
            "steps must be at least 1",
        ),
        (r#"[{"id":"a","pipeline":"t2v","hq_steps":0}]"#, "hq_steps"),
        (r#"[{"id":"a","pipeline":"v2v"}]"#, "v2v"),
        (r#"[{"id":"a","pipeline":"t2v","prority":3}]"#, "prority"),
        (r#"{"modles": []}"#, "modles"),
    ];
    for (json, want) in cases {
        let err = Catalog::from_json(json).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
}

#[test]
fn model_id_rule() {
    let long = "a".repeat(64);
    for ok in ["a", "0", "wan22-fast-t2v", "a.b_c-d", long.as_str()] {
        assert!(valid_model_id(ok), "{ok}");
    }
    let too_long = "a".repeat(65);
    for bad in [
        "",
        "-a",
        ".a",
        "_a",
        "A",
        "a b",
        "a/b",
        "é",
        too_long.as_str(),
    ] {
        assert!(!valid_model_id(bad), "{bad}");
    }
}

#[test]
fn pipeline_names() {
    for p in Pipeline::ALL {
        assert_eq!(Pipeline::parse(p.as_str()), Some(p));
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
    }
    assert_eq!(Pipeline::parse("T2V"), None);
}

#[test]
fn resolution_classes() {
    assert_eq!(ResolutionClass::of_side(480), ResolutionClass::P480);
    assert_eq!(ResolutionClass::of_side(512), ResolutionClass::P480);
    assert_eq!(ResolutionClass::of_side(720), ResolutionClass::P720);
    assert_eq!(ResolutionClass::P720.max_duration_s(), 5);
    assert_eq!(ResolutionClass::P480.max_duration_s(), 7);
}

#[test]
fn model_info_describes_sizes_heights_and_limits() {
    let c = Catalog::default();
    let t2v = serde_json::to_value(c.get("wan22-fast-t2v-pro").unwrap().info()).unwrap();
    assert_eq!(t2v["tier_priority"], 20);
    assert_eq!(t2v["pipeline"], "t2v");
    assert_eq!(t2v["sizes"].as_array().unwrap().len(), 6);
    assert_eq!(
        t2v["sizes"][0],
        serde_json::json!({"width": 1280, "height": 720})
    );
    assert!(t2v.get("heights").is_none());
    assert_eq!(
        t2v["max_duration_s"],
        serde_json::json!({"480p": 7, "720p": 5})
    );
    assert_eq!(
        t2v["defaults"],
        serde_json::json!({"width": 832, "height": 480, "duration": 5, "fps": 16})
    );

    let i2v = serde_json::to_value(c.get("wan22-fast-i2v").unwrap().info()).unwrap();
    assert_eq!(i2v["heights"], serde_json::json!([480, 720]));
    assert!(i2v.get("sizes").is_none());
    assert_eq!(
        i2v["defaults"],
        serde_json::json!({"height": 480, "duration": 5, "fps": 16})
    );
    assert_eq!(c.infos().len(), 6);
}
