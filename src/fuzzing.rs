//! The bodies of the cargo-fuzz targets under `fuzz/`. They live in the
//! library so that `tests/fuzz_corpus.rs` replays every committed corpus
//! file through exactly the same code on stable, in CI.
//!
//! Each body panics only when an invariant breaks; any input is fair.

use pear_model::decode::{decode_image, Limits};
use pear_protocol::{parse_request, Frame, Framer};

/// Request limit the framer target uses (small, so the limit path is reached).
const MAX_REQUEST: usize = 512;

fn frames(data: &[u8], chunk: usize) -> Vec<Frame> {
    let mut framer = Framer::new(MAX_REQUEST);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        framer.push(piece);
        while let Some(f) = framer.next_frame() {
            let too_large = matches!(f, Frame::TooLarge { .. });
            out.push(f);
            if too_large {
                return out; // the server closes the connection here
            }
        }
    }
    out.extend(framer.finish());
    out
}

/// Framer and request parser: the first byte picks how the rest is split
/// into reads. However the bytes arrive, the frames must be the same; every
/// object fits the limit and starts with `{` or `[`; parsing the envelope and
/// the command's own data never panics.
pub fn framer_and_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunked = frames(rest, usize::from(first % 32) + 1);
    let whole = frames(rest, rest.len());
    assert_eq!(chunked, whole, "frames depend on how the bytes were split");
    for f in &chunked {
        if let Frame::Object(bytes) = f {
            assert!(bytes.len() <= MAX_REQUEST);
            assert!(bytes.first().is_some_and(|b| *b == b'{' || *b == b'['));
            if let Ok(req) = parse_request(bytes) {
                // Commands parse their own data; building one must never panic.
                let _ = crate::commands::parse(&req);
            }
        }
    }
}

/// Image decoding under limits: never a panic, and a decoded image is
/// within the pixel limit with exactly 3 bytes per pixel.
pub fn decode(data: &[u8]) {
    let limits = Limits { max_pixels: 1 << 22, max_file_bytes: 1 << 24 };
    if let Ok(img) = decode_image(data, &limits) {
        let (w, h) = (u64::from(img.width()), u64::from(img.height()));
        assert!(w * h <= limits.max_pixels);
        assert_eq!(img.as_raw().len() as u64, w * h * 3);
    }
}

/// A safetensors file holding `meta` as the bundle metadata and one tiny tensor.
pub fn bundle_with_metadata(meta: &str) -> Vec<u8> {
    let header = serde_json::json!({
        "__metadata__": { pear_model::bundle::META_KEY: meta },
        "detector.x": { "dtype": "F32", "shape": [1], "data_offsets": [0, 4] },
    })
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&1f32.to_le_bytes());
    out
}

/// Bundle parsing: an even first byte feeds the rest as a whole file, an odd
/// one as the metadata of an otherwise valid file (so the metadata checks are
/// reached). Never a panic; what parses also builds its layers or says why.
pub fn bundle(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let bytes = if first % 2 == 0 {
        rest.to_vec()
    } else {
        match std::str::from_utf8(rest) {
            Ok(meta) => bundle_with_metadata(meta),
            Err(_) => return,
        }
    };
    let dev = candle_core::Device::Cpu;
    if let Ok(b) = pear_model::bundle::Bundle::from_bytes(&bytes, &dev) {
        let _ = pear_model::Pipeline::from_bundle(b, &dev, None);
    }
}
