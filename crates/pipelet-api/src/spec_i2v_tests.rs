//! Image-to-video validation: the image field, output size, heights and their limits.

use serde_json::json;

use super::tests::{bad, i2v, img, ok, size, t2v};
use super::*;
use pipelet_testkit::images::{b64, jpeg, photo, png, webp};

#[test]
fn i2v_needs_an_image() {
    bad(
        &i2v(),
        json!({"prompt": "p"}),
        Some("data_uri"),
        &["required", "base64"],
    );
    bad(
        &i2v(),
        json!({"prompt": "p", "data_uri": 5}),
        Some("data_uri"),
        &["string"],
    );
    bad(
        &i2v(),
        json!({"prompt": "p", "data_uri": "%%%"}),
        Some("data_uri"),
        &["base64"],
    );
    let text = b64(b"just some text, not an image");
    bad(
        &i2v(),
        json!({"prompt": "p", "data_uri": text}),
        Some("data_uri"),
        &["not a PNG"],
    );
}

#[test]
fn a_cut_off_upload_is_refused_as_truncated() {
    use image::ImageFormat;
    for (format, name) in [
        (ImageFormat::Jpeg, "JPEG"),
        (ImageFormat::Png, "PNG"),
        (ImageFormat::WebP, "WebP"),
    ] {
        let text = b64(&photo(256, 192, format));
        // The whole file is fine; its first 2,000 base64 characters are not.
        ok(&i2v(), json!({"prompt": "p", "data_uri": text}));
        let cut = format!("data:image/x;base64,{}", &text[..2000]);
        bad(
            &i2v(),
            json!({"prompt": "p", "data_uri": cut}),
            Some("data_uri"),
            &["truncated or corrupt", name],
        );
    }
}

#[test]
fn a_url_in_data_uri_gets_a_plain_message() {
    for url in [
        "https://example.com/cat.jpg",
        "http://x/y.png",
        "ftp://h/a.webp",
    ] {
        bad(
            &i2v(),
            json!({"prompt": "p", "data_uri": url}),
            Some("data_uri"),
            &["data_uri must be base64, not a URL"],
        );
    }
}

#[test]
fn an_image_sent_to_a_t2v_model_is_refused() {
    let image = b64(&png(40, 30));
    for field in ["data_uri", "image_url"] {
        for value in [
            json!(image),
            json!(format!("data:image/png;base64,{image}")),
            json!(""),
        ] {
            let mut body = json!({"prompt": "p"});
            body[field] = value;
            bad(
                &t2v(),
                body,
                Some(field),
                &[field, "wan22-fast-t2v", "text-to-video", "image-to-video"],
            );
        }
    }
    // null is "not given", as for every field.
    ok(
        &t2v(),
        json!({"prompt": "p", "data_uri": null, "image_url": null}),
    );
}

#[test]
fn i2v_accepts_a_data_url_in_image_url() {
    let url = format!("data:image/png;base64,{}", b64(&png(40, 30)));
    let v = ok(&i2v(), json!({"prompt": "p", "image_url": url}));
    assert_eq!(size(&v), (640, 480));
    bad(
        &i2v(),
        json!({"prompt": "p", "image_url": "https://example.com/cat.png"}),
        Some("image_url"),
        &["does not fetch"],
    );
}

#[test]
fn i2v_keeps_the_image_and_its_info() {
    for (bytes, format) in [
        (png(40, 30), "png"),
        (jpeg(40, 30), "jpeg"),
        (webp(40, 30), "webp"),
    ] {
        let body =
            json!({"prompt": "p", "data_uri": format!("data:image/x;base64,{}", b64(&bytes))});
        let v = ok(&i2v(), body);
        let info = v.spec.image.clone().unwrap();
        assert_eq!(
            (info.format.as_str(), info.width, info.height),
            (format, 40, 30)
        );
        assert_eq!(info.bytes, bytes.len() as u64);
        assert_eq!(v.image.as_deref(), Some(&bytes[..]));
    }
}

#[test]
fn i2v_output_keeps_the_image_aspect() {
    let m = i2v();
    assert_eq!(size(&ok(&m, img(400, 300, json!({})))), (640, 480)); // 4:3
    assert_eq!(size(&ok(&m, img(90, 160, json!({})))), (272, 480)); // 9:16
    assert_eq!(size(&ok(&m, img(160, 90, json!({})))), (848, 480)); // 16:9
    assert_eq!(
        size(&ok(&m, img(64, 64, json!({"height": 720})))),
        (720, 720)
    );
    assert_eq!(
        size(&ok(&m, img(400, 300, json!({"height": 720})))),
        (960, 720)
    );
    assert_eq!(
        size(&ok(&m, img(160, 90, json!({"height": 720.0})))),
        (1280, 720)
    );
}

#[test]
fn i2v_use_best_resolution_fits_the_shorter_side() {
    let m = i2v();
    let best = json!({"use_best_resolution": true});
    assert_eq!(size(&ok(&m, img(90, 160, best.clone()))), (480, 848)); // 9:16 selfie
    assert_eq!(size(&ok(&m, img(400, 300, best.clone()))), (640, 480)); // landscape: same
    let v = ok(
        &m,
        img(90, 160, json!({"use_best_resolution": true, "height": 720})),
    );
    assert_eq!(size(&v), (720, 1280));
    assert!(v.spec.use_best_resolution);
    bad(
        &m,
        img(90, 160, json!({"use_best_resolution": 1})),
        Some("use_best_resolution"),
        &["true or false"],
    );
}

#[test]
fn i2v_ignores_width() {
    let v = ok(&i2v(), img(400, 300, json!({"width": 1280})));
    assert_eq!(size(&v), (640, 480));
    ok(&i2v(), img(400, 300, json!({"width": "anything"})));
}

#[test]
fn i2v_height_rules() {
    let m = i2v();
    for h in [json!(1080), json!(360), json!(0)] {
        bad(
            &m,
            img(40, 30, json!({"height": h})),
            Some("height"),
            &["use 480 or 720"],
        );
    }
    bad(
        &m,
        img(40, 30, json!({"height": "720"})),
        Some("height"),
        &["whole number"],
    );
    bad(
        &m,
        img(40, 30, json!({"min_height": 1080})),
        Some("min_height"),
        &["480 or 720"],
    );
}

#[test]
fn min_height_raises_the_height_and_the_720_duration_limit_follows() {
    let m = i2v();
    let v = ok(&m, img(400, 300, json!({"min_height": 720})));
    assert_eq!(size(&v), (960, 720));
    // min_height never lowers an explicit height.
    assert_eq!(
        size(&ok(
            &m,
            img(400, 300, json!({"height": 720, "min_height": 480}))
        )),
        (960, 720)
    );
    // 7 s is fine at 480 but not once min_height makes it 720.
    ok(&m, img(400, 300, json!({"duration": 7})));
    bad(
        &m,
        img(400, 300, json!({"duration": 7, "min_height": 720})),
        Some("duration"),
        &["720p", "height 720", "at most 5 s"],
    );
}

#[test]
fn i2v_duration_limits() {
    let m = i2v();
    ok(&m, img(40, 30, json!({"height": 720, "duration": 5})));
    bad(
        &m,
        img(40, 30, json!({"height": 720, "duration": 6})),
        Some("duration"),
        &["at most 5 s"],
    );
    ok(&m, img(40, 30, json!({"height": 480, "duration": 7})));
    bad(
        &m,
        img(40, 30, json!({"duration": 8})),
        Some("duration"),
        &["at most 7 s"],
    );
}

#[test]
fn duration_is_checked_before_the_image_is_decoded() {
    let body = json!({"prompt": "p", "data_uri": "not an image", "duration": 9});
    bad(&i2v(), body, Some("duration"), &["at most 7 s"]);
}

#[test]
fn aspect_ratio_bound() {
    let m = i2v();
    ok(&m, img(400, 100, json!({}))); // exactly 4:1
    ok(&m, img(100, 400, json!({})));
    bad(
        &m,
        img(401, 100, json!({})),
        Some("data_uri"),
        &["401x100", "4.01:1", "at most 4:1"],
    );
    bad(&m, img(100, 500, json!({})), Some("data_uri"), &["5.00:1"]);
}

#[test]
fn long_outputs_are_capped_at_max_output_side() {
    let m = i2v();
    // 4:1 at 720 would be 2880x720; it is scaled to fit 2048.
    assert_eq!(
        size(&ok(&m, img(400, 100, json!({"height": 720})))),
        (2048, 512)
    );
    let v = ok(
        &m,
        img(
            100,
            400,
            json!({"height": 720, "use_best_resolution": true}),
        ),
    );
    assert_eq!(size(&v), (512, 2048));
}

#[test]
fn output_size_function() {
    assert_eq!(i2v_output_size(4, 3, 480, false, 2048), (640, 480));
    assert_eq!(i2v_output_size(9, 16, 480, false, 2048), (272, 480));
    assert_eq!(i2v_output_size(9, 16, 480, true, 2048), (480, 848));
    assert_eq!(i2v_output_size(9, 16, 720, true, 2048), (720, 1280));
    assert_eq!(i2v_output_size(3, 4, 480, true, 2048), (480, 640));
    assert_eq!(i2v_output_size(1, 1, 480, true, 2048), (480, 480));
    // Sides never reach 0, nor pass the cap; degenerate input does not panic.
    assert_eq!(i2v_output_size(1, 1000, 480, false, 2048), (16, 480));
    assert_eq!(i2v_output_size(1000, 1, 480, false, 2048), (2048, 16));
    assert_eq!(i2v_output_size(0, 0, 480, false, 2048), (480, 480));
    assert_eq!(i2v_output_size(4, 1, 720, false, 1000), (992, 256));
    for (w, h) in [(1234, 567), (567, 1234), (1920, 1080), (3, 2)] {
        for best in [false, true] {
            let (ow, oh) = i2v_output_size(w, h, 720, best, 2048);
            assert!(
                ow % 16 == 0 && oh % 16 == 0 && ow <= 2048 && oh <= 2048,
                "{w}x{h}"
            );
        }
    }
}
