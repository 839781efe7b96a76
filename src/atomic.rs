//! Writing outputs so that they appear whole or not at all.
//!
//! Every file eifctl publishes is written to a temporary file in the same directory and renamed
//! into place, and a build's output directory is assembled aside and swapped in, so an
//! interrupted or failed command never leaves a half-written file that looks finished.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` via a temporary file in the same directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".eifctl-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    set_mode_644(tmp.as_file())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `bytes` to a new file `path` with permissions `mode`, via a temporary file in the
/// same directory: the file appears whole, with its mode, or not at all, and an existing file
/// is never replaced (`ErrorKind::AlreadyExists`). For secrets, use mode 0600: the content is
/// never readable by others, not even while it is written.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".eifctl-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

/// A directory being assembled next to its final place; [`StagedDir::commit`] swaps it in.
/// Dropped without committing, it is removed with everything in it.
pub struct StagedDir {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
    /// Parents created for the target, removed again (when empty) if nothing is committed.
    created: Vec<PathBuf>,
}

impl StagedDir {
    pub fn new(target: &Path) -> io::Result<StagedDir> {
        let parent = parent(target);
        let mut created = Vec::new();
        let mut missing = parent.as_path();
        while !missing.exists() {
            created.push(missing.to_path_buf());
            match missing.parent() {
                Some(p) if !p.as_os_str().is_empty() => missing = p,
                _ => break,
            }
        }
        std::fs::create_dir_all(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix(".eifctl-staging-")
            .tempdir_in(&parent)?;
        Ok(StagedDir {
            dir: Some(dir),
            target: target.to_path_buf(),
            created,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until commit").path()
    }

    /// Replaces the target directory with the staged one; an existing target is moved aside
    /// first and removed only once the new one is in place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.created.clear();
        let staged = self.dir.take().expect("present until commit").keep();
        let old = if self.target.exists() {
            let aside = tempfile::Builder::new()
                .prefix(".eifctl-old-")
                .tempdir_in(parent(&self.target))?
                .keep();
            std::fs::remove_dir(&aside)?;
            std::fs::rename(&self.target, &aside)?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&staged, &self.target) {
            if let Some(aside) = &old {
                let _ = std::fs::rename(aside, &self.target);
            }
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
        if let Some(aside) = old {
            std::fs::remove_dir_all(aside)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        // The staging directory goes first (TempDir's own drop), then the parents made for it.
        drop(self.dir.take());
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn set_mode_644(f: &std::fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_directory_replaces_the_old_one_whole() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out/app/1.0");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("old"), b"old").unwrap();
        let staged = StagedDir::new(&target).unwrap();
        write_file(&staged.path().join("new"), b"new").unwrap();
        staged.commit().unwrap();
        assert!(!target.join("old").exists());
        assert_eq!(std::fs::read(target.join("new")).unwrap(), b"new");
        let leftovers = std::fs::read_dir(root.path().join("out/app"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "only the committed directory remains");
    }

    #[test]
    fn a_dropped_staging_directory_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out/x");
        {
            let staged = StagedDir::new(&target).unwrap();
            std::fs::write(staged.path().join("partial"), b"p").unwrap();
        }
        assert!(!target.exists());
        assert!(
            !root.path().join("out").exists(),
            "the parents it made are gone too"
        );
    }
}
