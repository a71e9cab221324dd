//! Parses the muxer's own output back and checks the layout and the tables.

use super::*;

/// (fourcc, body) of each box in `buf`.
fn boxes(buf: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= buf.len() {
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && pos + size <= buf.len(),
            "bad box size {size} at {pos}"
        );
        out.push((
            buf[pos + 4..pos + 8].try_into().unwrap(),
            &buf[pos + 8..pos + size],
        ));
        pos += size;
    }
    assert_eq!(pos, buf.len(), "trailing bytes");
    out
}

/// The body of the box at `path` (fourccs separated by '/'); full boxes keep their
/// version/flags word. `stsd` children start after its 4-byte entry count, `avc1`'s
/// after its 78-byte visual sample entry, `dref`'s after its entry count.
fn find<'a>(buf: &'a [u8], path: &str) -> &'a [u8] {
    let mut cur = buf;
    for name in path.split('/') {
        let (_, body) = boxes(cur)
            .into_iter()
            .find(|(f, _)| f == name.as_bytes())
            .unwrap_or_else(|| panic!("no {name} in {path}"));
        cur = match name {
            "stsd" | "dref" => &body[8..],
            "avc1" => &body[78..],
            _ => body,
        };
    }
    cur
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01];
const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];

fn mux(sizes: &[u32], keys: &[bool]) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &s)| std::iter::repeat_n(i as u8, s as usize))
        .collect();
    let video = Mp4Video {
        width: 832,
        height: 480,
        timescale: 16_000,
        sample_delta: 1000,
        sps: SPS,
        pps: PPS,
        sample_sizes: sizes,
        keyframes: keys,
    };
    let mut file = Vec::new();
    let n = write_mp4(&mut file, &video, &payload).unwrap();
    assert_eq!(n, file.len() as u64);
    (file, payload)
}

#[test]
fn top_level_order_is_ftyp_moov_mdat() {
    let (file, payload) = mux(&[10, 3, 7], &[true, false, false]);
    let top = boxes(&file);
    let names: Vec<&[u8]> = top.iter().map(|(f, _)| &f[..]).collect();
    assert_eq!(names, [&b"ftyp"[..], b"moov", b"mdat"]);
    assert_eq!(top[2].1, &payload[..]);
    assert_eq!(&top[0].1[..4], b"isom");
}

#[test]
fn sample_tables_describe_every_frame() {
    let sizes: Vec<u32> = (0..81).map(|i| 100 + i).collect();
    let keys: Vec<bool> = (0..81).map(|i| i % 32 == 0).collect();
    let (file, _) = mux(&sizes, &keys);
    let stbl = "moov/trak/mdia/minf/stbl";

    let stsz = find(&file, &format!("{stbl}/stsz"));
    assert_eq!(u32_at(stsz, 4), 0, "per-sample sizes");
    assert_eq!(u32_at(stsz, 8), 81);
    let parsed: Vec<u32> = (0..81).map(|i| u32_at(stsz, 12 + 4 * i)).collect();
    assert_eq!(parsed, sizes);

    let stts = find(&file, &format!("{stbl}/stts"));
    assert_eq!(
        (u32_at(stts, 4), u32_at(stts, 8), u32_at(stts, 12)),
        (1, 81, 1000)
    );

    let stss = find(&file, &format!("{stbl}/stss"));
    assert_eq!(u32_at(stss, 4), 3);
    assert_eq!(
        [u32_at(stss, 8), u32_at(stss, 12), u32_at(stss, 16)],
        [1, 33, 65]
    );

    let stsc = find(&file, &format!("{stbl}/stsc"));
    assert_eq!(
        [
            u32_at(stsc, 4),
            u32_at(stsc, 8),
            u32_at(stsc, 12),
            u32_at(stsc, 16)
        ],
        [1, 1, 81, 1]
    );

    // The single chunk offset points at the first payload byte inside mdat.
    let stco = find(&file, &format!("{stbl}/stco"));
    assert_eq!(u32_at(stco, 4), 1);
    let offset = u32_at(stco, 8) as usize;
    let mdat_at = file.len() - sizes.iter().sum::<u32>() as usize - 8;
    assert_eq!(&file[mdat_at + 4..mdat_at + 8], b"mdat");
    assert_eq!(offset, mdat_at + 8);
    assert_eq!(file[offset], 0);
    assert_eq!(file[offset + 100], 1, "second sample follows the first");

    let mdhd = find(&file, "moov/trak/mdia/mdhd");
    assert_eq!((u32_at(mdhd, 12), u32_at(mdhd, 16)), (16_000, 81_000));
    let mvhd = find(&file, "moov/mvhd");
    assert_eq!((u32_at(mvhd, 12), u32_at(mvhd, 16)), (1000, 5062));
    let tkhd = find(&file, "moov/trak/tkhd");
    assert_eq!((u32_at(tkhd, 76), u32_at(tkhd, 80)), (832 << 16, 480 << 16));
    assert_eq!(&find(&file, "moov/trak/mdia/hdlr")[8..12], b"vide");
}

#[test]
fn avcc_carries_the_parameter_sets() {
    let (file, _) = mux(&[5], &[true]);
    let avc1 = find(&file, "moov/trak/mdia/minf/stbl/stsd");
    let (name, body) = boxes(avc1)[0];
    assert_eq!(&name, b"avc1");
    assert_eq!(u16::from_be_bytes([body[24], body[25]]), 832);
    assert_eq!(u16::from_be_bytes([body[26], body[27]]), 480);
    let avcc = find(&file, "moov/trak/mdia/minf/stbl/stsd/avc1/avcC");
    assert_eq!(&avcc[..6], &[1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1]);
    assert_eq!(u16::from_be_bytes([avcc[6], avcc[7]]) as usize, SPS.len());
    assert_eq!(&avcc[8..8 + SPS.len()], SPS);
    let rest = &avcc[8 + SPS.len()..];
    assert_eq!(rest[0], 1);
    assert_eq!(u16::from_be_bytes([rest[1], rest[2]]) as usize, PPS.len());
    assert_eq!(&rest[3..], PPS);
    let url: &[u8] = &[0, 0, 0, 12, b'u', b'r', b'l', b' ', 0, 0, 0, 1];
    assert_eq!(find(&file, "moov/trak/mdia/minf/dinf/dref"), url);
}

#[test]
fn rejects_inconsistent_input() {
    let video = |sizes: &'static [u32], keys: &'static [bool]| Mp4Video {
        width: 64,
        height: 64,
        timescale: 16_000,
        sample_delta: 1000,
        sps: SPS,
        pps: PPS,
        sample_sizes: sizes,
        keyframes: keys,
    };
    assert!(header(&video(&[], &[]), 0).is_err(), "no samples");
    assert!(
        header(&video(&[4], &[false]), 4).is_err(),
        "first sample not a keyframe"
    );
    assert!(
        header(&video(&[4, 4], &[true]), 8).is_err(),
        "flag count mismatch"
    );
    assert!(
        header(&video(&[4], &[true]), 5).is_err(),
        "payload size mismatch"
    );
    assert!(
        header(
            &Mp4Video {
                sps: &[0x67],
                ..video(&[4], &[true])
            },
            4
        )
        .is_err(),
        "short SPS"
    );
    assert!(header(&video(&[4], &[true]), 4).is_ok());
}
