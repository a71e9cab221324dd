use super::*;
use pipelet_testkit::images::{b64, jpeg, jpeg_rotated_90, photo, png, png_claiming, webp};

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
fn a_header_without_pixels_is_corrupt() {
    // Within every limit, so the full decode runs and finds no image data.
    let detail = err(probe_image(&png_claiming(100, 100), &limits()));
    assert!(
        detail.starts_with("data_uri image is truncated or corrupt ("),
        "{detail}"
    );
    assert!(detail.contains("complete PNG file"), "{detail}");
    let detail = err(probe_image(&png_claiming(0, 10), &limits()));
    assert!(detail.contains("truncated or corrupt"), "{detail}");
}

#[test]
fn truncated_and_corrupt_files_are_refused() {
    let full = png(64, 64);
    for bytes in [&full[..full.len() / 2], &full[..20]] {
        let detail = err(probe_image(bytes, &limits()));
        assert!(detail.contains("truncated or corrupt"), "{detail}");
    }
    let mut corrupt = webp(32, 32);
    corrupt.truncate(24);
    assert!(err(probe_image(&corrupt, &limits())).contains("truncated or corrupt"));
    let mut jpeg_head = jpeg(32, 32);
    jpeg_head.truncate(4);
    assert!(err(probe_image(&jpeg_head, &limits())).contains("truncated or corrupt"));
}

/// What a cut-off upload looks like: the first 2,000 base64 characters of a real file.
fn first_2000_base64_chars(file: &[u8]) -> Vec<u8> {
    let text = b64(file);
    assert!(text.len() > 4000, "the test image is big enough to cut");
    decode_data_uri(&text[..2000], &limits()).unwrap()
}

#[test]
fn the_first_2000_base64_chars_of_an_image_are_refused_as_truncated() {
    // The JPEG decoder paints missing rows grey and reports success: the case that let
    // a cut-off photo "complete" as a grey video.
    for (format, name) in [
        (ImageFormat::Jpeg, "JPEG"),
        (ImageFormat::Png, "PNG"),
        (ImageFormat::WebP, "WebP"),
    ] {
        let full = photo(256, 192, format);
        assert!(probe_image(&full, &limits()).is_ok(), "{name} whole");
        let detail = err(probe_image(&first_2000_base64_chars(&full), &limits()));
        assert!(
            detail.starts_with("data_uri image is truncated or corrupt"),
            "{name}: {detail}"
        );
        assert!(
            detail.contains(&format!("complete {name} file")),
            "{name}: {detail}"
        );
    }
}

#[test]
fn a_file_missing_only_its_last_bytes_is_refused() {
    for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
        let full = photo(64, 48, format);
        for cut in [1, 2, 10, full.len() / 10] {
            let short = &full[..full.len() - cut];
            let detail = err(probe_image(short, &limits()));
            assert!(
                detail.contains("truncated or corrupt"),
                "{format:?} -{cut}: {detail}"
            );
        }
    }
}

#[test]
fn bytes_after_the_end_marker_are_ignored() {
    // Phones append data after a JPEG's EOI (motion photos); PNG and WebP readers stop
    // at IEND / the RIFF size too.
    for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
        let mut file = photo(64, 48, format);
        file.extend_from_slice(b"\xFF\xD8 trailing vendor data \xFF");
        let info = probe_image(&file, &limits()).unwrap_or_else(|e| panic!("{format:?}: {e:?}"));
        assert_eq!((info.width, info.height), (64, 48));
    }
}

#[test]
fn a_jpeg_is_walked_through_its_segments_and_scans() {
    // The EXIF (APP1) segment before the frame is skipped by its length.
    let whole = jpeg_rotated_90(64, 48);
    assert!(probe_image(&whole, &limits()).is_ok());
    assert!(err(probe_image(&whole[..whole.len() - 2], &limits())).contains("truncated"));
    // A scan holding stuffed FF 00 bytes and restart markers is not mistaken for its end.
    let mut synthetic = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
    synthetic.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF]);
    assert!(complete::jpeg(&synthetic).is_err(), "no EOI yet");
    synthetic.push(0xD9);
    assert_eq!(complete::jpeg(&synthetic), Ok(()));
    // An EOI with no scan before it is not an image.
    assert!(complete::jpeg(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
}

#[test]
fn a_corrupt_webp_is_refused() {
    let mut file = webp(32, 32);
    assert_eq!(&file[12..16], b"VP8L");
    // The lossless bitstream's signature byte, then garbage in its data.
    file[20] = 0x00;
    let detail = err(probe_image(&file, &limits()));
    assert!(detail.contains("truncated or corrupt"), "{detail}");
    assert!(detail.contains("WebP"), "{detail}");
    // A RIFF size larger than the file: the tail is missing.
    let mut file = webp(32, 32);
    let size = u32::from_le_bytes([file[4], file[5], file[6], file[7]]) + 100;
    file[4..8].copy_from_slice(&size.to_le_bytes());
    assert!(err(probe_image(&file, &limits())).contains("truncated or corrupt"));
}

#[test]
fn a_url_is_refused_with_a_plain_message() {
    for url in [
        "http://example.com/cat.jpg",
        "https://example.com/cat.jpg?x=1",
        "  HTTPS://EXAMPLE.COM/A.PNG",
        "ftp://files.example.com/a.png",
        "s3://bucket/a.webp",
        "file:///tmp/a.png",
    ] {
        let detail = err(decode_data_uri(url, &limits()));
        assert!(
            detail.starts_with("data_uri must be base64, not a URL"),
            "{url}: {detail}"
        );
        assert!(!detail.contains("Invalid"), "no decoder jargon: {detail}");
    }
    // Base64 has no ':' so it is never taken for a URL, nor is a data: URI.
    let bytes = png(8, 8);
    assert!(decode_data_uri(&b64(&bytes), &limits()).is_ok());
    let data_url = format!("data:image/png;base64,{}", b64(&bytes));
    assert!(decode_data_uri(&data_url, &limits()).is_ok());
}
