use super::*;
use crate::test_images::{b64, jpeg, jpeg_rotated_90, png, png_claiming, webp};

fn limits() -> Limits {
    Limits::default()
}

fn err(r: Result<impl std::fmt::Debug, InputError>) -> String {
    let e = r.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("data_uri"), "{e:?}");
    e.detail
}

#[test]
fn plain_base64_decodes() {
    let bytes = png(8, 8);
    assert_eq!(decode_data_uri(&b64(&bytes), &limits()).unwrap(), bytes);
}

#[test]
fn data_url_prefix_is_accepted_whatever_the_declared_type() {
    let bytes = png(8, 8);
    for prefix in [
        "data:image/png;base64,",
        "data:image/jpeg;base64,", // declared type is ignored: the bytes decide
        "DATA:image/PNG;BASE64,",
        "data:;base64,",
    ] {
        let got = decode_data_uri(&format!("{prefix}{}", b64(&bytes)), &limits()).unwrap();
        assert_eq!(got, bytes, "{prefix}");
    }
}

#[test]
fn whitespace_and_line_wrapping_are_ignored() {
    let bytes = jpeg(40, 30);
    let encoded = b64(&bytes);
    // As `base64` on Linux writes it: 76-column lines, plus stray spaces and CRLF.
    let wrapped: Vec<String> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let text = format!("  \n{}\r\n ", wrapped.join("\n"));
    assert_eq!(decode_data_uri(&text, &limits()).unwrap(), bytes);
    let url = format!("data:image/jpeg;base64,\n{}", wrapped.join("\r\n"));
    assert_eq!(decode_data_uri(&url, &limits()).unwrap(), bytes);
}

#[test]
fn missing_padding_and_url_safe_alphabet_are_accepted() {
    let bytes = vec![0xFBu8, 0xFF, 0xBF, 0x01];
    let std = b64(&bytes);
    assert_eq!(
        decode_data_uri(std.trim_end_matches('='), &limits()).unwrap(),
        bytes
    );
    let url_safe = std.replace('+', "-").replace('/', "_");
    assert_eq!(decode_data_uri(&url_safe, &limits()).unwrap(), bytes);
}

#[test]
fn bogus_base64_is_refused() {
    for bad in [
        "not base64 at all!",
        "abc$def",
        "data:image/png;base64,@@@@",
        "A",
    ] {
        let detail = err(decode_data_uri(bad, &limits()));
        assert!(detail.contains("not valid base64"), "{bad}: {detail}");
    }
}

#[test]
fn empty_and_malformed_data_urls_are_refused() {
    assert!(err(decode_data_uri("", &limits())).contains("empty"));
    assert!(err(decode_data_uri("  \n ", &limits())).contains("empty"));
    assert!(err(decode_data_uri("data:image/png;base64,", &limits())).contains("empty"));
    assert!(err(decode_data_uri("data:image/png;base64", &limits())).contains("no comma"));
    let detail = err(decode_data_uri("data:image/png,%89PNG", &limits()));
    assert!(detail.contains("not base64"), "{detail}");
}

#[test]
fn non_ascii_input_does_not_panic() {
    for s in ["dé", "é", "daté:", "ééééé,abc"] {
        assert!(decode_data_uri(s, &limits()).is_err(), "{s}");
    }
}

#[test]
fn oversize_base64_is_refused_by_length_before_decoding() {
    let small = Limits {
        max_image_bytes: 300,
        ..Limits::default()
    };
    // Not even valid base64: proves the length check runs before any decoding.
    let detail = err(decode_data_uri(&"!".repeat(1000), &small));
    assert!(detail.contains("too large"), "{detail}");
    assert!(detail.contains("300 bytes"), "{detail}");
    // Exactly at the limit passes; one byte over (decoded) is refused.
    assert_eq!(
        decode_data_uri(&b64(&[7u8; 300]), &small).unwrap().len(),
        300
    );
    assert!(err(decode_data_uri(&b64(&[7u8; 301]), &small)).contains("too large"));
}

#[test]
fn formats_are_sniffed_from_magic_bytes() {
    assert_eq!(sniff_format(&png(4, 4)), Some(ImageFormat::Png));
    assert_eq!(sniff_format(&jpeg(4, 4)), Some(ImageFormat::Jpeg));
    assert_eq!(sniff_format(&webp(4, 4)), Some(ImageFormat::WebP));
    assert_eq!(sniff_format(b"GIF89a...."), None);
    assert_eq!(sniff_format(b""), None);
    assert_eq!(sniff_format(b"RIFF\0\0\0\0WAVE"), None);
}

#[test]
fn real_images_of_each_format_probe() {
    for (bytes, format) in [
        (png(64, 48), "png"),
        (jpeg(64, 48), "jpeg"),
        (webp(64, 48), "webp"),
    ] {
        let info = probe_image(&bytes, &limits()).unwrap();
        assert_eq!(info.format, format);
        assert_eq!((info.width, info.height), (64, 48));
        assert_eq!(info.bytes, bytes.len() as u64);
        assert_eq!(info.content_type(), format!("image/{format}"));
    }
}

#[test]
fn exif_rotation_reports_the_displayed_size() {
    let info = probe_image(&jpeg_rotated_90(64, 48), &limits()).unwrap();
    assert_eq!((info.width, info.height), (48, 64));
}

#[test]
fn non_image_bytes_are_refused() {
    let detail = err(probe_image(b"hello, this is a text file", &limits()));
    assert!(detail.contains("not a PNG, JPEG or WebP"), "{detail}");
    assert!(err(probe_image(b"", &limits())).contains("not a PNG, JPEG or WebP"));
}

#[test]
fn other_image_formats_are_named() {
    assert!(err(probe_image(b"GIF89a\x01\0\x01\0", &limits())).contains("GIF"));
    assert!(err(probe_image(b"BM\0\0\0\0", &limits())).contains("BMP"));
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0";
    assert!(err(probe_image(heic, &limits())).contains("HEIC"));
}

#[test]
fn huge_claimed_png_is_refused_from_its_header() {
    let bytes = png_claiming(100_000, 100_000);
    assert!(bytes.len() < 100);
    // Decoding this would need 40 GB; the header check answers first.
    let detail = err(probe_image(&bytes, &limits()));
    assert!(detail.contains("100000x100000"), "{detail}");
    assert!(detail.contains("at most 8192"), "{detail}");
}

#[test]
fn too_many_pixels_is_refused_from_the_header() {
    // Each side within 8192, but 64 M pixels > 40 M.
    let detail = err(probe_image(&png_claiming(8000, 8000), &limits()));
    assert!(detail.contains("64000000 pixels"), "{detail}");
    assert!(detail.contains("at most 40000000"), "{detail}");
}

#[test]
fn a_header_without_pixels_is_not_decodable() {
    // Within every limit, so the full decode runs and finds no image data.
    let detail = err(probe_image(&png_claiming(100, 100), &limits()));
    assert!(
        detail.starts_with("data_uri is not a decodable PNG/JPEG/WebP image:"),
        "{detail}"
    );
    let detail = err(probe_image(&png_claiming(0, 10), &limits()));
    assert!(detail.contains("not a decodable"), "{detail}");
}

#[test]
fn truncated_and_corrupt_files_are_not_decodable() {
    let full = png(64, 64);
    for bytes in [&full[..full.len() / 2], &full[..20]] {
        let detail = err(probe_image(bytes, &limits()));
        assert!(
            detail.contains("not a decodable PNG/JPEG/WebP image"),
            "{detail}"
        );
    }
    let mut corrupt = webp(32, 32);
    corrupt.truncate(24);
    assert!(err(probe_image(&corrupt, &limits())).contains("not a decodable"));
    let mut jpeg_head = jpeg(32, 32);
    jpeg_head.truncate(4);
    assert!(err(probe_image(&jpeg_head, &limits())).contains("not a decodable"));
}

#[test]
fn custom_side_limit_applies() {
    let tight = Limits {
        max_image_side: 32,
        ..Limits::default()
    };
    assert!(probe_image(&png(32, 16), &tight).is_ok());
    assert!(err(probe_image(&png(33, 16), &tight)).contains("at most 32 pixels"));
}
