//! Image-to-video create rules through HTTP: the `data_uri` forms people send, images
//! that are not images or lie about their size, `height`/`min_height`, and durations for
//! the height class. (The derived output sizes are checked on finished videos in
//! `api_render.rs`.)

use crate::common::AppExt as _;
use crate::common::images::{b64, b64_wrapped, crc32, jpeg, photo, png, png_claiming};
use crate::common::{I2V, I2V_PRO, I2V_VIP, T2V, TestApp, expect_invalid, spawn_queue_only};
use image::ImageFormat;
use serde_json::{Value, json};

async fn accepted(app: &TestApp, key: &str, body: Value) {
    app.create(key, I2V, &body).await;
}

async fn refused(app: &TestApp, key: &str, body: Value, words: &[&str]) -> String {
    let response = app.post_create(key, I2V, &body).await;
    expect_invalid(response, words).await
}

#[test]
fn the_hand_built_png_has_correct_crcs() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the standard check value");
    let file = png_claiming(100_000, 100_000);
    // IHDR: length, type, 13 bytes of data, then the CRC of type + data.
    assert_eq!(&file[12..16], b"IHDR");
    assert_eq!(&file[16..20], &100_000u32.to_be_bytes());
    let crc = u32::from_be_bytes(file[29..33].try_into().unwrap());
    assert_eq!(crc, crc32(&file[12..29]));
    assert_eq!(&file[file.len() - 8..], b"IEND\xAE\x42\x60\x82");
    // And the image crate reads its header as a real PNG of that size.
    let dims =
        image::ImageReader::with_format(std::io::Cursor::new(&file), image::ImageFormat::Png)
            .into_dimensions()
            .expect("a valid PNG header");
    assert_eq!(dims, (100_000, 100_000));
}

#[tokio::test]
async fn data_uri_is_required_and_accepted_in_every_common_form() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = png(64, 48);
    refused(&app, &key, json!({"prompt": "a zoom"}), &["data_uri"]).await;
    refused(
        &app,
        &key,
        json!({"prompt": "a zoom", "data_uri": ""}),
        &["data_uri"],
    )
    .await;
    refused(
        &app,
        &key,
        json!({"prompt": "a zoom", "data_uri": 42}),
        &["data_uri"],
    )
    .await;

    let forms = [
        b64(&image),
        format!("data:image/png;base64,{}", b64(&image)),
        b64_wrapped(&image),
        format!("data:image/png;base64,{}", b64_wrapped(&image)),
        b64(&jpeg(64, 48)),
        format!("data:image/jpeg;base64,{}", b64(&jpeg(64, 48))),
        b64(&image).trim_end_matches('=').to_string(),
    ];
    assert!(
        b64_wrapped(&image).contains('\n'),
        "the image is big enough to wrap"
    );
    for data_uri in forms {
        let body = json!({"prompt": "a zoom", "data_uri": data_uri, "duration": 1});
        accepted(&app, &key, body).await;
    }
    // The other tiers take the same input.
    for model in [I2V_PRO, I2V_VIP] {
        let body = json!({"prompt": "a zoom", "data_uri": b64(&image), "duration": 1});
        app.create(&key, model, &body).await;
    }
}

#[tokio::test]
async fn bytes_that_are_not_a_supported_image_are_422() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let cases = [
        b64(b"hello, this is certainly not an image"),
        "!!!! not base64 ????".to_string(),
        format!("data:image/png,{}", b64(&png(16, 16))), // not marked base64
        b64(&png(64, 48)[..40]),                         // truncated PNG
        b64(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),     // GIF is not supported
    ];
    for data_uri in cases {
        refused(
            &app,
            &key,
            json!({"prompt": "p", "data_uri": data_uri}),
            &["data_uri"],
        )
        .await;
    }
    // A tiny PNG whose header claims 100000x100000 is refused from its header alone.
    let huge = b64(&png_claiming(100_000, 100_000));
    refused(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": huge}),
        &["100000x100000"],
    )
    .await;
    // A valid header within the limits but no pixels behind it.
    let hollow = b64(&png_claiming(64, 64));
    refused(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": hollow}),
        &["data_uri"],
    )
    .await;
    // Too elongated to animate (8:1).
    let strip = b64(&png(400, 50));
    refused(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": strip}),
        &["aspect"],
    )
    .await;
    // A remote URL is not fetched.
    let remote = json!({"prompt": "p", "image_url": "https://example.com/cat.png"});
    refused(&app, &key, remote, &["image_url"]).await;
}

#[tokio::test]
async fn a_cut_off_or_corrupt_image_is_422_not_a_grey_video() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for (format, name) in [
        (ImageFormat::Jpeg, "JPEG"),
        (ImageFormat::Png, "PNG"),
        (ImageFormat::WebP, "WebP"),
    ] {
        let file = photo(256, 192, format);
        let text = b64(&file);
        assert!(text.len() > 4000, "{name} is big enough to cut");
        // The first 2,000 base64 characters: what a cut-off paste or upload sends.
        let body = json!({"prompt": "p", "data_uri": &text[..2000]});
        let detail = refused(
            &app,
            &key,
            body,
            &["data_uri", "truncated or corrupt", name],
        )
        .await;
        assert!(
            detail.starts_with("data_uri image is truncated or corrupt"),
            "{detail}"
        );
        // The whole file is still accepted.
        accepted(
            &app,
            &key,
            json!({"prompt": "p", "data_uri": text, "duration": 1}),
        )
        .await;
    }
    // A WebP whose bitstream signature is damaged.
    let mut webp = photo(64, 48, ImageFormat::WebP);
    assert_eq!(&webp[12..16], b"VP8L");
    webp[20] = 0;
    let body = json!({"prompt": "p", "data_uri": b64(&webp)});
    refused(
        &app,
        &key,
        body,
        &["data_uri", "truncated or corrupt", "WebP"],
    )
    .await;
}

#[tokio::test]
async fn a_url_in_data_uri_is_named_as_such() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for url in [
        "https://example.com/cat.jpg",
        "http://10.0.0.1/a.png",
        "ftp://h/a.webp",
    ] {
        let body = json!({"prompt": "p", "data_uri": url});
        let detail = refused(&app, &key, body, &["data_uri must be base64, not a URL"]).await;
        assert!(!detail.contains("Invalid symbol"), "{detail}");
    }
}

#[tokio::test]
async fn an_image_sent_to_a_t2v_model_is_422() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = b64(&png(32, 24));
    for (field, value) in [
        ("data_uri", json!(image)),
        ("data_uri", json!("")),
        ("image_url", json!(format!("data:image/png;base64,{image}"))),
    ] {
        let mut body = json!({"prompt": "p", "width": 512, "height": 512, "duration": 1});
        body[field] = value;
        let response = app.post_create(&key, T2V, &body).await;
        let body =
            crate::common::expect_error(response, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{body}");
        let detail = crate::common::str_field(&body, "detail");
        assert!(
            detail.contains(T2V) && detail.contains("text-to-video"),
            "{detail}"
        );
    }
    // null means "not given".
    let body = json!({"prompt": "p", "width": 512, "height": 512, "duration": 1,
                      "data_uri": null});
    app.create(&key, T2V, &body).await;
}

#[tokio::test]
async fn only_height_480_or_720_is_used() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = b64(&png(64, 48));
    for height in [json!(480), json!(720), json!(720.0), json!(null)] {
        let body = json!({"prompt": "p", "data_uri": image, "height": height, "duration": 1});
        accepted(&app, &key, body).await;
    }
    // width is ignored, whatever it says.
    let body = json!({"prompt": "p", "data_uri": image, "width": 1234, "duration": 1});
    accepted(&app, &key, body).await;
    for height in [
        json!(1080),
        json!(360),
        json!(832),
        json!("720"),
        json!(-480),
    ] {
        let body = json!({"prompt": "p", "data_uri": image, "height": height});
        refused(&app, &key, body, &["height"]).await;
    }
    let body = json!({"prompt": "p", "data_uri": image, "height": 1080});
    refused(&app, &key, body, &["480", "720"]).await;
    for min_height in [json!(600), json!(1080), json!("480")] {
        let body = json!({"prompt": "p", "data_uri": image, "min_height": min_height});
        refused(&app, &key, body, &["min_height"]).await;
    }
}

#[tokio::test]
async fn i2v_durations_follow_the_height_class() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = b64(&png(64, 48));
    let with = |extra: Value| {
        let mut body = json!({"prompt": "p", "data_uri": image});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    accepted(&app, &key, with(json!({"duration": 7}))).await;
    accepted(&app, &key, with(json!({"height": 720, "duration": 5}))).await;
    accepted(&app, &key, with(json!({"height": 720}))).await; // the default 5 s
    refused(&app, &key, with(json!({"duration": 8})), &["duration", "7"]).await;
    refused(
        &app,
        &key,
        with(json!({"height": 720, "duration": 6})),
        &["duration", "5"],
    )
    .await;
    // min_height 720 makes it 720-class too.
    let raised = with(json!({"height": 480, "min_height": 720, "duration": 6}));
    refused(&app, &key, raised, &["duration"]).await;
    accepted(&app, &key, with(json!({"min_height": 480, "duration": 7}))).await;
    for duration in [json!(0), json!(5.5), json!("5")] {
        refused(
            &app,
            &key,
            with(json!({"duration": duration})),
            &["duration"],
        )
        .await;
    }
}

#[tokio::test]
async fn i2v_options_are_accepted_and_type_checked() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = b64(&png(48, 64));
    let ok = [
        json!({"use_best_resolution": true}),
        json!({"use_best_resolution": false, "min_height": 480}),
        json!({"higher_quality_with_more_steps": true, "priority": 3}),
    ];
    for extra in ok {
        let mut body = json!({"prompt": "p", "data_uri": image, "duration": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        accepted(&app, &key, body).await;
    }
    let body = json!({"prompt": "p", "data_uri": image, "use_best_resolution": "yes"});
    refused(&app, &key, body, &["use_best_resolution"]).await;
    // The prompt is required for image-to-video too.
    refused(&app, &key, json!({"data_uri": image}), &["prompt"]).await;
}

#[tokio::test]
async fn image_bytes_and_pixels_are_bounded() {
    let app = crate::common::spawn_app_with(|c| {
        c.workers = 0;
        c.limits.max_image_bytes = 2048;
        c.limits.max_image_pixels = 64 * 64;
    })
    .await;
    let key = app.client_key().await;
    // Within both bounds.
    accepted(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": b64(&png(16, 16)), "duration": 1}),
    )
    .await;
    // A file over the byte bound (noise does not compress).
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut big = png(16, 16);
    big.extend_from_slice(&noise);
    refused(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": b64(&big)}),
        &["data_uri", "2048"],
    )
    .await;
    // A header over the pixel bound is refused before decoding.
    let wide = b64(&png_claiming(128, 64));
    refused(
        &app,
        &key,
        json!({"prompt": "p", "data_uri": wide}),
        &["128x64", "4096"],
    )
    .await;
}
