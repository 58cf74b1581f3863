//! Our JPEG decode equals OpenCV's `imread` pixel for pixel on every kind of
//! file in tests/fixtures/jpeg (made by tools/make_jpeg_fixtures.py, which
//! stores the SHA-256 of what imread decoded), and refuses what imread
//! refuses, plus the truncated files imread would decode into grey halves.

use pear_model::decode::{decode_image, DecodeError, Limits};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Deserialize)]
struct Manifest {
    opencv: String,
    images: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    file: String,
    refused: bool,
    width: Option<u32>,
    height: Option<u32>,
    sha256: Option<String>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn identical_to_opencv_imread() {
    let m: Manifest = serde_json::from_slice(&std::fs::read(dir().join("decoded.json")).unwrap()).unwrap();
    assert!(m.images.len() >= 24, "need at least 24 fixtures, have {}", m.images.len());
    let mut mismatched = Vec::new();
    for r in &m.images {
        let bytes = std::fs::read(dir().join(&r.file)).unwrap();
        match (decode_image(&bytes, &Limits::default()), r.refused) {
            (Err(_), true) => {}
            (Err(e), false) => mismatched.push(format!("{}: we refused ({e}), OpenCV decoded it", r.file)),
            (Ok(img), true) => mismatched.push(format!("{}: OpenCV refused, we decoded {:?}", r.file, img.dimensions())),
            (Ok(img), false) => {
                let want = (r.width.unwrap(), r.height.unwrap());
                let got = hex(&Sha256::digest(img.as_raw()));
                if img.dimensions() != want || Some(&got) != r.sha256.as_ref() {
                    mismatched.push(format!(
                        "{}: {:?} vs OpenCV {want:?}, pixels differ: {}",
                        r.file,
                        img.dimensions(),
                        Some(&got) != r.sha256.as_ref()
                    ));
                }
            }
        }
    }
    assert!(mismatched.is_empty(), "against OpenCV {}:\n{}", m.opencv, mismatched.join("\n"));
    println!("{} JPEGs identical to OpenCV {}", m.images.len(), m.opencv);
}

/// A file the camera is still writing: OpenCV fills the rest with grey and
/// answers; we refuse it as incomplete.
#[test]
fn truncated_jpegs_are_incomplete() {
    for name in ["q92_420.jpg", "progressive_420.jpg", "restart_1.jpg", "grey.jpg", "cmyk.jpg"] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert!(decode_image(&bytes, &Limits::default()).is_ok());
        for pct in [30, 50, 70, 99] {
            let cut = &bytes[..bytes.len() * pct / 100];
            match decode_image(cut, &Limits::default()) {
                Err(DecodeError::Incomplete(m)) => assert!(m.contains("Premature end"), "{name} at {pct}%: {m}"),
                other => panic!("{name} cut at {pct}%: {other:?}"),
            }
        }
    }
}

#[test]
fn pixel_limit_is_checked_before_decoding() {
    let bytes = std::fs::read(dir().join("large_1296x972.jpg")).unwrap();
    let limits = Limits { max_pixels: 1296 * 972 - 1, ..Limits::default() };
    assert_eq!(decode_image(&bytes, &limits), Err(DecodeError::TooLarge { width: 1296, height: 972, max: 1296 * 972 - 1 }));
    assert!(decode_image(&bytes, &Limits { max_pixels: 1296 * 972, ..Limits::default() }).is_ok());
    // A header claiming 65500x65500 with no data behind it.
    let mut bomb = bytes[..bytes.len() / 4].to_vec();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    assert!(matches!(decode_image(&bomb, &Limits::default()), Err(DecodeError::TooLarge { width: 65500, height: 65500, .. })));
}

#[test]
fn garbage_is_refused_not_guessed() {
    for bytes in [&b""[..], b"\xff\xd8", b"\xff\xd8\xff", b"GIF89a....", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"] {
        assert!(decode_image(bytes, &Limits::default()).is_err(), "{bytes:?}");
    }
}
