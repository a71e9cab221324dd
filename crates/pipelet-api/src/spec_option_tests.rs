//! Create-body validation of `duration` and the optional fields (priority, steps, seed).

use serde_json::json;

use super::tests::{bad, ok, t2v};
use super::*;

#[test]
fn duration_values() {
    let m = t2v();
    let dur = |d: Value| ok(&m, json!({"prompt": "p", "duration": d})).spec;
    let s = dur(json!(5));
    assert_eq!((s.duration_s, s.num_frames), (5, 81));
    assert_eq!(dur(json!(5.0)).duration_s, 5);
    assert_eq!(dur(json!(1)).num_frames, 17);
    let s = dur(json!(7));
    assert_eq!((s.duration_s, s.num_frames), (7, 113));
    assert_eq!(dur(json!(null)).duration_s, 5);
    for d in [json!(5.5), json!("5"), json!(true), json!([5])] {
        bad(
            &m,
            json!({"prompt": "p", "duration": d}),
            Some("duration"),
            &["whole number of seconds"],
        );
    }
    for d in [json!(0), json!(-1), json!(-5.0)] {
        bad(
            &m,
            json!({"prompt": "p", "duration": d}),
            Some("duration"),
            &["at least 1"],
        );
    }
    bad(
        &m,
        json!({"prompt": "p", "duration": 1e30}),
        Some("duration"),
        &["too long"],
    );
}

#[test]
fn duration_limits_per_t2v_class() {
    let m = t2v();
    for (w, h) in [(1280, 720), (720, 1280), (768, 768)] {
        ok(
            &m,
            json!({"prompt": "p", "width": w, "height": h, "duration": 5}),
        );
        bad(
            &m,
            json!({"prompt": "p", "width": w, "height": h, "duration": 6}),
            Some("duration"),
            &["720p", &format!("{w}x{h}"), "at most 5 s", "up to 7 s"],
        );
    }
    for (w, h) in [(832, 480), (480, 832), (512, 512)] {
        ok(
            &m,
            json!({"prompt": "p", "width": w, "height": h, "duration": 7}),
        );
        bad(
            &m,
            json!({"prompt": "p", "width": w, "height": h, "duration": 8}),
            Some("duration"),
            &["480p", "at most 7 s"],
        );
    }
}

#[test]
fn priority_rules() {
    let m = t2v();
    let pri = |p: Value| {
        ok(&m, json!({"prompt": "p", "priority": p}))
            .spec
            .requested_priority
    };
    assert_eq!(pri(json!(5)), 5);
    assert_eq!(pri(json!(-1000)), -1000);
    assert_eq!(pri(json!(1000.0)), 1000);
    assert_eq!(pri(json!(null)), 0);
    for p in [json!(1001), json!(-1001), json!(u64::MAX)] {
        bad(
            &m,
            json!({"prompt": "p", "priority": p}),
            Some("priority"),
            &["-1000 to 1000"],
        );
    }
    for p in [json!("high"), json!(1.5), json!(false)] {
        bad(
            &m,
            json!({"prompt": "p", "priority": p}),
            Some("priority"),
            &["must be an integer"],
        );
    }
}

#[test]
fn higher_quality_uses_the_models_hq_steps() {
    let mut m = t2v();
    m.hq_steps = 12;
    let s = ok(
        &m,
        json!({"prompt": "p", "higher_quality_with_more_steps": true}),
    )
    .spec;
    assert_eq!((s.steps, s.higher_quality), (12, true));
    let s = ok(
        &m,
        json!({"prompt": "p", "higher_quality_with_more_steps": false}),
    )
    .spec;
    assert_eq!((s.steps, s.higher_quality), (4, false));
    bad(
        &m,
        json!({"prompt": "p", "higher_quality_with_more_steps": "true"}),
        Some("higher_quality_with_more_steps"),
        &["true or false", "string"],
    );
}

#[test]
fn seed_rules() {
    let m = t2v();
    let seed = |s: Value| ok(&m, json!({"prompt": "p", "seed": s})).spec.seed;
    assert_eq!(seed(json!(0)), Some(0));
    assert_eq!(seed(json!(42.0)), Some(42));
    assert_eq!(seed(json!(u64::MAX)), Some(u64::MAX));
    assert_eq!(seed(json!(null)), None);
    bad(
        &m,
        json!({"prompt": "p", "seed": -1}),
        Some("seed"),
        &["from 0 to"],
    );
    bad(
        &m,
        json!({"prompt": "p", "seed": 2e20}),
        Some("seed"),
        &["from 0 to"],
    );
    bad(
        &m,
        json!({"prompt": "p", "seed": "42"}),
        Some("seed"),
        &["non-negative integer"],
    );
}
