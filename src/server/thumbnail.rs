//! `/api/inspections/{id}/image`: a record's image, small, with its answer
//! drawn, for the dashboard. The request names a record id only: the folder
//! and file come from the journal, are resolved inside that folder as 0x01
//! resolves them, and are read under the same limits. An image that changed
//! since it was judged (its SHA-256 differs) is not shown as if it had not.

use crate::inference::read::read_image_file;
use crate::journal::query;
use crate::models::sha256_hex;
use crate::paths::resolve_file;
use crate::state::State;
use pear_model::annotate;
use pear_model::decode::decode_image;
use std::path::Path;

/// The longer side of a thumbnail, in pixels.
pub const MAX_SIDE: u32 = 320;

/// JPEG bytes, or (HTTP status, why).
pub fn thumbnail(state: &State, journal: &Path, id: i64) -> Result<Vec<u8>, (u16, String)> {
    let j = query::judged(journal, id).map_err(|e| (503, format!("journal: {e}")))?.ok_or((404, format!("no record {id}")))?;
    let gone = |why: String| (410, format!("record {id}'s image: {why}"));
    let path = resolve_file(Path::new(&j.image_dir), &j.file).map_err(|e| gone(e.to_string()))?;
    let limits = state.config.images.limits();
    let bytes = read_image_file(&path, limits.max_file_bytes).map_err(gone)?;
    if j.image_sha256.as_deref() != Some(sha256_hex(&bytes).as_str()) {
        return Err(gone("the file is not the one that was judged (its SHA-256 differs)".into()));
    }
    let img = decode_image(&bytes, &limits).map_err(|e| gone(e.to_string()))?;
    let (w, h) = img.dimensions();
    let scale = (MAX_SIDE as f32 / w.max(h) as f32).min(1.0);
    let (tw, th) = (((w as f32 * scale) as u32).max(1), ((h as f32 * scale) as u32).max(1));
    let mut small = image::imageops::thumbnail(&img, tw, th);
    let bbox = j.bbox.map(|b| b.map(|v| v * scale));
    annotate::draw(&mut small, bbox, &annotate::caption(j.detected, j.result, j.label.as_deref(), j.confidence));
    let mut out = std::io::Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Jpeg).map_err(|e| (500, format!("cannot encode: {e}")))?;
    Ok(out.into_inner())
}
