//! Opening an image file the way a worker can afford to: never blocking on
//! something that is not a file, never reading more than the limit.
//!
//! The type is checked on the opened handle, not the name, so a FIFO or a
//! device swapped in after the path was checked is still refused; the open
//! is non-blocking, so a FIFO with no writer cannot hold a worker.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The whole file, or why not (answered as error_code 2).
pub fn read_image_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| format!("cannot read image: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read image: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read image: not a regular file".into());
    }
    if meta.len() > max_bytes {
        return Err(format!("image file is {} bytes, more than images.max_file_bytes ({max_bytes})", meta.len()));
    }
    // The file may grow after the check: read at most one byte past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref().take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read image: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("image file grew past images.max_file_bytes ({max_bytes})"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("pear-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.jpg");
        std::fs::write(&f, [7u8; 100]).unwrap();
        assert_eq!(read_image_file(&f, 100).unwrap().len(), 100);
        assert!(read_image_file(&f, 99).unwrap_err().contains("max_file_bytes"));
        assert!(read_image_file(&dir, 1000).unwrap_err().contains("not a regular file"));
        assert!(read_image_file(&dir.join("missing.jpg"), 1000).unwrap_err().contains("cannot read"));
        // A FIFO with no writer: a blocking open would never return.
        let fifo = dir.join("fifo.jpg");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_image_file(&fifo, 1000).unwrap_err().contains("not a regular file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
