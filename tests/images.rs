//! How image files reach the model, over TCP against the real server: a JPEG
//! the camera has not finished writing is refused rather than judged, and an
//! EXIF orientation tag is applied as the original's cv2.imread applied it.

mod common;
use common::*;
use pear_server::decode::{decode_image, Limits};

/// 30, 50 and 70 % of a sample: `result` null, `error_code` 2, and the message
/// says why; the whole file still answers.
#[test]
fn truncated_jpeg_answers_error_2() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let images = s.dir.join("images");
    let mut names = vec![];
    for sample in ["bruise_1.jpg", "normal_1.jpg", "crack_1.jpg"] {
        let bytes = std::fs::read(images.join(sample)).unwrap();
        for pct in [30, 50, 70] {
            let name = format!("cut_{pct}_{sample}");
            std::fs::write(images.join(&name), &bytes[..bytes.len() * pct / 100]).unwrap();
            names.push(name);
        }
    }
    names.push("bruise_1.jpg".into());
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let r = s.client().request(&format!("{{\"cmd\": 0x01, \"request_data\": [{}]}}", list.join(",")));
    let e = entries(&r);
    assert_eq!(e.len(), names.len());
    for (entry, name) in e.iter().zip(&names).take(9) {
        assert_eq!(entry["file_name"], name.as_str());
        assert!(entry["result"].is_null(), "{name}: {entry}");
        assert_eq!(entry["error_code"], 2, "{name}: {entry}");
        assert!(entry["message"].as_str().unwrap().contains("incomplete image"), "{name}: {entry}");
    }
    assert_eq!(e[9]["error_code"], 0, "the complete file still answers: {r}");
    assert_eq!(e[9]["result"], 1);
}

/// Inserts an EXIF APP1 segment with `orientation` right after SOI.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

/// A JPEG tagged "rotate 90 clockwise" answers exactly what the same pixels,
/// rotated and saved losslessly, answer: same class, confidence and box.
#[test]
fn exif_orientation_is_applied() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let images = s.dir.join("images");
    let bytes = std::fs::read(images.join("scab_1.jpg")).unwrap();
    std::fs::write(images.join("tagged_6.jpg"), with_orientation(&bytes, 6)).unwrap();
    let upright = decode_image(&bytes, &Limits::default()).unwrap();
    image::imageops::rotate90(&upright).save(images.join("rotated.png")).unwrap();
    let r = s.client().request(r#"{"cmd": 0x01, "request_data": ["tagged_6.jpg", "rotated.png", "scab_1.jpg"]}"#);
    let e = entries(&r);
    assert_eq!(e[0]["error_code"], 0, "{r}");
    for key in ["result", "label", "confidence", "bbox", "detected"] {
        assert_eq!(e[0][key], e[1][key], "{key}: {r}");
    }
    let (w, h) = upright.dimensions();
    let bbox = e[0]["bbox"].as_array().unwrap();
    assert!(bbox[2].as_f64().unwrap() <= h as f64 && bbox[3].as_f64().unwrap() <= w as f64, "box in the rotated frame: {r}");
    assert_ne!(e[0]["bbox"], e[2]["bbox"], "the untagged file is seen unrotated: {r}");
}
