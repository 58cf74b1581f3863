//! Keeps client-supplied paths inside the folders the operator allowed.
//!
//! The original opened `../../x.jpg` as given and let any client point the
//! image folder at `/etc`. Here a file name must stay inside its folder after
//! symlinks are resolved, and a folder change must land inside a configured root.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Absolute, `..`, empty, or resolving (through a symlink) outside the folder.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
}

/// Resolves `name` inside `root`; the result exists and is inside `root`.
///
/// `name` is relative to `root`, or absolute: the original opened
/// `os.path.join(image_folder, name)`, so its clients may send the folder
/// joined with the file name. An absolute name must lead inside `root`
/// (written under it, or resolving into it through symlinks); anything else
/// is refused like `..`.
pub fn resolve_file(root: &Path, name: &str) -> Result<PathBuf, PathError> {
    if name.is_empty() || name.contains('\0') {
        return Err(PathError::Refused("empty or invalid file name".into()));
    }
    let root = root.canonicalize().map_err(|e| PathError::NotFound(format!("folder {} is gone: {e}", root.display())))?;
    let given = Path::new(name);
    let rel = if given.is_absolute() {
        match given.strip_prefix(&root) {
            Ok(rel) => rel.to_path_buf(),
            // Written through another path (a symlinked folder, say): only where it really leads counts.
            Err(_) => match given.canonicalize() {
                Ok(real) if real.starts_with(&root) => real.strip_prefix(&root).map(Path::to_path_buf).unwrap_or_default(),
                _ => return Err(PathError::Refused(format!("'{name}' is outside the image folder"))),
            },
        }
    } else {
        given.to_path_buf()
    };
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(PathError::Refused(format!("'{name}' leaves the folder ('..')")));
    }
    let full = root.join(&rel);
    let real = full.canonicalize().map_err(|_| PathError::NotFound(format!("'{name}' not found")))?;
    if !real.starts_with(&root) {
        return Err(PathError::Refused(format!("'{name}' points outside the folder")));
    }
    if !real.is_file() {
        return Err(PathError::NotFound(format!("'{name}' is not a file")));
    }
    Ok(real)
}

/// Resolves a folder given by a client: absolute, or relative to the first root.
/// It must exist, be a directory, and lie inside one of `roots`.
pub fn resolve_dir(roots: &[PathBuf], path: &str) -> Result<PathBuf, PathError> {
    if path.trim().is_empty() || path.contains('\0') {
        return Err(PathError::Refused("empty or invalid folder path".into()));
    }
    let p = Path::new(path);
    let candidate = if p.is_absolute() {
        p.to_path_buf()
    } else {
        roots.first().map(|r| r.join(p)).ok_or_else(|| PathError::Refused("no folders are allowed".into()))?
    };
    let real = candidate.canonicalize().map_err(|_| PathError::NotFound(format!("folder '{path}' does not exist")))?;
    if !real.is_dir() {
        return Err(PathError::NotFound(format!("'{path}' is not a folder")));
    }
    let inside = roots.iter().filter_map(|r| r.canonicalize().ok()).any(|r| real.starts_with(r));
    if !inside {
        return Err(PathError::Refused(format!("folder '{path}' is outside the allowed roots")));
    }
    Ok(real)
}

/// A bare file name for the model folder: no separators, no `..`, not hidden.
pub fn check_model_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(PathError::Refused(format!("'{name}' is not a plain model file name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        let d = std::env::temp_dir().join(format!("pear-paths-{}", std::process::id()));
        std::fs::create_dir_all(d.join("in")).unwrap();
        std::fs::write(d.join("in/a.jpg"), b"x").unwrap();
        std::fs::write(d.join("secret.jpg"), b"x").unwrap();
        let _ = std::fs::remove_file(d.join("in/link.jpg"));
        std::os::unix::fs::symlink(d.join("secret.jpg"), d.join("in/link.jpg")).unwrap();
        let root = d.join("in");
        assert!(resolve_file(&root, "a.jpg").is_ok());
        assert!(matches!(resolve_file(&root, "../secret.jpg"), Err(PathError::Refused(_))));
        assert!(matches!(resolve_file(&root, "/etc/passwd"), Err(PathError::Refused(_))));
        // Absolute names: inside the folder they resolve, missing ones are not found, a way out is refused.
        let abs = |rel: &str| format!("{}/{rel}", root.canonicalize().unwrap().display());
        assert!(resolve_file(&root, &abs("a.jpg")).is_ok());
        assert!(matches!(resolve_file(&root, &abs("nope.jpg")), Err(PathError::NotFound(_))));
        assert!(matches!(resolve_file(&root, &abs("../secret.jpg")), Err(PathError::Refused(_))));
        assert!(matches!(resolve_file(&root, &abs("link.jpg")), Err(PathError::Refused(_))));
        assert!(matches!(resolve_file(&root, &abs("")), Err(PathError::Refused(_))), "the folder itself");
        assert!(matches!(resolve_file(&root, "link.jpg"), Err(PathError::Refused(_))));
        assert!(matches!(resolve_file(&root, "nope.jpg"), Err(PathError::NotFound(_))));
        assert!(matches!(resolve_dir(std::slice::from_ref(&root), "/etc"), Err(PathError::Refused(_))));
        assert!(resolve_dir(std::slice::from_ref(&d), "in").is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
