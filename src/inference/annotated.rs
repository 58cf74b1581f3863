//! `[debug] annotated_dir`: every inspected image saved with its box and
//! label drawn, as the original's debug switch did, keeping only the newest
//! `annotated_keep` files so a long run cannot fill the disk.

use crate::sync::lock;
use image::RgbImage;
use pear_model::pipeline::Inspection;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct AnnotatedDir {
    dir: PathBuf,
    keep: usize,
    written: Mutex<VecDeque<PathBuf>>,
    seq: AtomicU64,
}

impl AnnotatedDir {
    /// Creates the folder if needed; files already there count against `keep`, oldest first.
    pub fn open(dir: &Path, keep: usize) -> std::io::Result<AnnotatedDir> {
        std::fs::create_dir_all(dir)?;
        let mut old: Vec<PathBuf> =
            std::fs::read_dir(dir)?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jpg")).collect();
        old.sort(); // names start with a sortable timestamp
        let a = AnnotatedDir { dir: dir.to_path_buf(), keep: keep.max(1), written: Mutex::new(old.into()), seq: AtomicU64::new(0) };
        a.prune();
        Ok(a)
    }

    /// Saves `img` with `ins` drawn as `<time>-<seq>-<image name>.jpg`.
    pub fn save(&self, img: &RgbImage, ins: &Inspection, source: &Path) {
        let mut pic = img.clone();
        let caption = pear_model::annotate::caption(
            ins.class.is_some(),
            ins.class.map(|c| c as i64),
            ins.label.as_deref(),
            ins.confidence.map(f64::from),
        );
        pear_model::annotate::draw(&mut pic, ins.bbox, &caption);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = format!("{:013}-{:06}-{stem}.jpg", now.as_millis(), self.seq.fetch_add(1, Ordering::Relaxed) % 1_000_000);
        let path = self.dir.join(name);
        match pic.save_with_format(&path, image::ImageFormat::Jpeg) {
            Ok(()) => {
                lock(&self.written).push_back(path);
                self.prune();
            }
            Err(e) => log::warn!("cannot save annotated image {}: {e}", path.display()),
        }
    }

    fn prune(&self) {
        let mut w = lock(&self.written);
        while w.len() > self.keep {
            if let Some(old) = w.pop_front() {
                let _ = std::fs::remove_file(old);
            }
        }
    }
}
