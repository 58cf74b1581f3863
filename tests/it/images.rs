//! How image files reach the model, over TCP against the real server: a JPEG
//! the camera has not finished writing is refused rather than judged, and an
//! EXIF orientation tag is applied as the original's cv2.imread applied it;
//! files that are not regular, too large, or unfinished PNGs are refused
//! without holding a worker.

use crate::common::*;
use pear_model::decode::{decode_image, Limits};
use std::io::Write;

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

/// A FIFO or a folder under an image name is refused (error 2), the rest of
/// the request answers, and so does the next one. (A FIFO swapped in after
/// the name was checked is refused by the worker's own open: unit test in
/// src/inference/read.rs.)
#[test]
fn special_files_are_refused_without_blocking() {
    let s = TestServer::start(Options { extended: true, workers: 1, ..Options::default() });
    let images = s.dir.join("images");
    let fifo = images.join("fifo.jpg");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::fs::create_dir(images.join("folder.jpg")).unwrap();
    let mut c = s.client();
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["fifo.jpg", "folder.jpg", "fifo.jpg", "normal_1.jpg"]}"#);
    let e = entries(&r);
    for x in &e[..3] {
        assert_eq!(x["error_code"], 2, "{r}");
        assert!(x["result"].is_null(), "{r}");
        assert!(x["message"].as_str().unwrap().contains("is not a file"), "{r}");
    }
    assert_eq!(e[3]["error_code"], 0, "the worker is still alive: {r}");
    let again = c.request(r#"{"cmd": 0x01, "request_data": ["normal_1.jpg"]}"#);
    assert_eq!(entries(&again)[0]["error_code"], 0, "{again}");
}

/// Files over images.max_file_bytes are refused before they are read.
#[test]
fn oversized_files_are_refused() {
    let s = TestServer::start(Options { extended: true, max_file_bytes: 20_000, ..Options::default() });
    let images = s.dir.join("images");
    let small = std::fs::metadata(images.join("normal_1.jpg")).unwrap().len();
    assert!(small <= 20_000, "sample fits the limit: {small}");
    let big = [std::fs::read(images.join("normal_1.jpg")).unwrap(), vec![0u8; 20_000]].concat();
    std::fs::write(images.join("big.jpg"), big).unwrap();
    let r = s.client().request(r#"{"cmd": 0x01, "request_data": ["big.jpg", "normal_1.jpg"]}"#);
    let e = entries(&r);
    assert_eq!(e[0]["error_code"], 2, "{r}");
    assert!(e[0]["message"].as_str().unwrap().contains("images.max_file_bytes"), "{r}");
    assert_eq!(e[1]["error_code"], 0, "{r}");
}

/// A PNG still being written (no IEND yet) is incomplete, not judged.
#[test]
fn png_without_its_end_is_incomplete() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let images = s.dir.join("images");
    let img = decode_image(&std::fs::read(images.join("rot_1.jpg")).unwrap(), &Limits::default()).unwrap();
    img.save(images.join("whole.png")).unwrap();
    let png = std::fs::read(images.join("whole.png")).unwrap();
    std::fs::write(images.join("no_iend.png"), &png[..png.len() - 12]).unwrap();
    std::fs::write(images.join("half.png"), &png[..png.len() / 2]).unwrap();
    let r = s.client().request(r#"{"cmd": 0x01, "request_data": ["no_iend.png", "half.png", "whole.png"]}"#);
    let e = entries(&r);
    for x in &e[..2] {
        assert_eq!(x["error_code"], 2, "{r}");
        assert!(x["message"].as_str().unwrap().contains("incomplete image"), "{r}");
    }
    assert_eq!(e[2]["error_code"], 0, "{r}");
    assert_eq!(e[2]["result"], 4, "the whole PNG is the rot sample: {r}");
}

/// `[debug] annotated_dir`: each inspected image is saved with its answer
/// drawn, and only the newest `annotated_keep` are kept.
#[test]
fn annotated_images_are_saved_and_pruned() {
    let s = TestServer::start(Options { workers: 1, annotated_keep: Some(3), ..Options::default() });
    let mut c = s.client();
    for f in ["normal_1.jpg", "rot_1.jpg", "scab_1.jpg", "bruise_1.jpg", "crack_1.jpg"] {
        assert_eq!(entries(&c.request(&classify(&[f])))[0]["error_code"], 0);
    }
    let mut saved: Vec<String> =
        std::fs::read_dir(s.dir.join("annotated")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    saved.sort();
    assert_eq!(saved.len(), 3, "{saved:?}");
    for (name, stem) in saved.iter().zip(["scab_1", "bruise_1", "crack_1"]) {
        assert!(name.ends_with(&format!("-{stem}.jpg")), "{saved:?}");
    }
    let pic = image::open(s.dir.join("annotated").join(&saved[2])).unwrap();
    let orig = image::open(s.dir.join("images/crack_1.jpg")).unwrap();
    assert_eq!((pic.width(), pic.height()), (orig.width(), orig.height()));
}

/// `images.settle_ms`: a file the camera is still writing is read again
/// while it grows. The test appends the rest only once the server has seen
/// the first part (its /metrics counts the wait), then gets the whole
/// image's answer; a file that stops growing still answers incomplete.
#[test]
fn a_growing_file_is_waited_for() {
    let s = TestServer::start(Options { settle_ms: 1000, metrics: true, ..Options::default() });
    let whole = std::fs::read(s.dir.join("images/rot_1.jpg")).unwrap();
    let cut = whole.len() * 2 / 5;
    std::fs::write(s.dir.join("images/growing.jpg"), &whole[..cut]).unwrap();
    std::fs::write(s.dir.join("images/stuck.jpg"), &whole[..cut]).unwrap();
    let mut c = s.client();
    c.send(classify(&["growing.jpg"]).as_bytes());
    wait_for_metric(&s, "pear_settle_waits_total", "", |n| n >= 1.0);
    std::fs::OpenOptions::new().append(true).open(s.dir.join("images/growing.jpg")).unwrap().write_all(&whole[cut..]).unwrap();
    let r = c.recv();
    let twin = c.request(&classify(&["rot_1.jpg"]));
    assert_eq!(entries(&r)[0]["error_code"], 0, "{r}");
    assert_eq!(entries(&r)[0]["result"], entries(&twin)[0]["result"]);
    let r = c.request(&classify(&["stuck.jpg"]));
    assert_eq!(entries(&r)[0]["error_code"], 2, "{r}");
}
