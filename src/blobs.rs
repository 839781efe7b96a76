//! Boot blobs: the kernel, its command line, and the bootstrap ramdisk's `init` and `nsm.ko`.
//!
//! PCR1 is determined by these four files alone, and AWS ships them only inside the
//! aws-nitro-enclaves-cli package. A verifier who has a published EIF but not that package can
//! take them out of the EIF itself and rebuild with exactly the blobs the publisher used.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::cpio;
use crate::eif::{EifFile, Problem, ReadError, SectionKind};

/// File names of a blob set, as nitro-cli expects them in its blobs directory.
pub const CMDLINE: &str = "cmdline";
pub const INIT: &str = "init";
pub const NSM_KO: &str = "nsm.ko";

/// Why blobs could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `bzImage` or `Image` (by the image's architecture), `cmdline`, `init` and `nsm.ko`
/// into `dir`, creating it if needed. Everything is extracted to temporary files first and
/// renamed into place only when all four are complete, so a failure leaves `dir` as it was.
pub fn extract(eif: &EifFile, dir: &Path) -> Result<Vec<PathBuf>, ExtractError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExtractError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".eifctl-blobs-")
        .tempdir_in(dir)
        .map_err(write_err(dir))?;

    let kernel = eif.section(SectionKind::Kernel).expect("validated in open");
    let kernel_name = eif.arch().kernel_blob_name();
    let staged_kernel = staging.path().join(kernel_name);
    copy_to(&mut eif.section_reader(kernel), &staged_kernel, 0o644)
        .map_err(write_err(&staged_kernel))?;

    let cmdline = eif
        .section(SectionKind::Cmdline)
        .expect("validated in open");
    let mut text = eif.read_section(cmdline)?;
    text.push(b'\n');
    let staged_cmdline = staging.path().join(CMDLINE);
    copy_to(&mut text.as_slice(), &staged_cmdline, 0o644).map_err(write_err(&staged_cmdline))?;

    let bootstrap = eif.ramdisks().next().expect("validated in open").clone();
    let bad = |e: cpio::Error| eif.error(Some(bootstrap.offset), Problem::Cpio(e.to_string()));
    let mut archive = cpio::Reader::new(eif.section_reader(&bootstrap));
    let mut found = Vec::new();
    while let Some(mut entry) = archive.next_entry().map_err(bad)? {
        let name = entry.header().name.clone();
        let name = name.strip_prefix(b"./").unwrap_or(&name).to_vec();
        let wanted = [INIT, NSM_KO]
            .into_iter()
            .find(|w| w.as_bytes() == name.as_slice());
        if let Some(w) = wanted
            && entry.header().kind() == cpio::Kind::File
        {
            let staged = staging.path().join(w);
            copy_to(&mut entry, &staged, 0o755).map_err(write_err(&staged))?;
            found.push(w);
        }
    }
    for w in [INIT, NSM_KO] {
        if !found.contains(&w) {
            return Err(eif
                .error(
                    Some(bootstrap.offset),
                    Problem::MissingEntry(format!("{w} (the bootstrap ramdisk should hold it)")),
                )
                .into());
        }
    }

    let mut out = Vec::new();
    for name in [kernel_name, CMDLINE, INIT, NSM_KO] {
        let dest = dir.join(name);
        fs::rename(staging.path().join(name), &dest).map_err(write_err(&dest))?;
        out.push(dest);
    }
    Ok(out)
}

fn copy_to(src: &mut dyn Read, path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = fs::File::create(path)?;
    io::copy(src, &mut f)?;
    f.flush()?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// Where nitro-cli looks for its blobs when neither `--blobs` nor `NITRO_CLI_BLOBS` says.
pub const DEFAULT_BLOBS_DIR: &str = "/usr/share/nitro_enclaves/blobs";

/// How the blob directory was chosen, so that an error can say what to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOrigin {
    Flag,
    Env,
    Default,
}

impl BlobOrigin {
    fn explain(self) -> &'static str {
        match self {
            BlobOrigin::Flag => "given with --blobs",
            BlobOrigin::Env => "from NITRO_CLI_BLOBS",
            BlobOrigin::Default => {
                "the default; install aws-nitro-enclaves-cli, or give --blobs DIR (e.g. from `eifctl blobs extract`)"
            }
        }
    }
}

/// A boot blob could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("boot blob {name} not found in {} ({})", dir.display(), origin.explain())]
    Missing {
        name: String,
        dir: PathBuf,
        origin: BlobOrigin,
    },
    #[error("boot blob {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A directory of boot blobs laid out as nitro-cli expects: `bzImage` or `Image` (with an
/// optional `.config`), `cmdline`, `init`, `nsm.ko`.
#[derive(Clone, Debug)]
pub struct BlobSet {
    pub dir: PathBuf,
    pub origin: BlobOrigin,
}

impl BlobSet {
    /// `--blobs DIR`, else `NITRO_CLI_BLOBS`, else nitro-cli's default directory.
    pub fn locate(flag: Option<&Path>) -> BlobSet {
        match (flag, std::env::var_os("NITRO_CLI_BLOBS")) {
            (Some(dir), _) => BlobSet {
                dir: dir.to_path_buf(),
                origin: BlobOrigin::Flag,
            },
            (None, Some(env)) if !env.is_empty() => BlobSet {
                dir: PathBuf::from(env),
                origin: BlobOrigin::Env,
            },
            _ => BlobSet {
                dir: PathBuf::from(DEFAULT_BLOBS_DIR),
                origin: BlobOrigin::Default,
            },
        }
    }

    /// The path of blob `name`, checked to be a readable regular file.
    pub fn file(&self, name: &str) -> Result<PathBuf, BlobError> {
        let path = self.dir.join(name);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                fs::File::open(&path).map_err(|source| BlobError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                Ok(path)
            }
            Ok(_) => Err(BlobError::Unreadable {
                path,
                source: io::Error::other("not a regular file"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing {
                name: name.to_string(),
                dir: self.dir.clone(),
                origin: self.origin,
            }),
            Err(source) => Err(BlobError::Unreadable { path, source }),
        }
    }

    /// The kernel for `arch`: an image's architecture picks it (nitro-cli uses the host's, which
    /// makes an arm64 image on an x86_64 host impossible to build).
    pub fn kernel(&self, arch: crate::eif::Arch) -> Result<PathBuf, BlobError> {
        self.file(arch.kernel_blob_name())
    }

    /// The kernel's `.config`, which records the kernel version, if present.
    pub fn kernel_config(&self, arch: crate::eif::Arch) -> Option<PathBuf> {
        self.file(&format!("{}.config", arch.kernel_blob_name()))
            .ok()
    }

    /// The command line, trimmed as nitro-cli trims it.
    pub fn cmdline(&self) -> Result<String, BlobError> {
        let path = self.file(CMDLINE)?;
        let text = fs::read_to_string(&path).map_err(|source| BlobError::Unreadable {
            path: path.clone(),
            source,
        })?;
        Ok(crate::eif::trim_cmdline(&text).to_string())
    }

    pub fn init(&self) -> Result<PathBuf, BlobError> {
        self.file(INIT)
    }

    pub fn nsm(&self) -> Result<PathBuf, BlobError> {
        self.file(NSM_KO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_blob_names_itself_the_directory_and_how_it_was_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let set = BlobSet::locate(Some(dir.path()));
        assert_eq!(set.origin, BlobOrigin::Flag);
        let e = set.init().unwrap_err().to_string();
        assert!(e.starts_with("boot blob init not found in "), "{e}");
        assert!(
            e.contains(&dir.path().display().to_string()) && e.contains("--blobs"),
            "{e}"
        );
    }

    #[test]
    fn the_cmdline_blob_is_trimmed_and_kernels_follow_the_architecture() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cmdline"), "  console=ttyS0 reboot=k \n").unwrap();
        fs::write(dir.path().join("Image"), b"arm kernel").unwrap();
        let set = BlobSet::locate(Some(dir.path()));
        assert_eq!(set.cmdline().unwrap(), "console=ttyS0 reboot=k");
        assert!(set.kernel(crate::eif::Arch::Aarch64).is_ok());
        let e = set
            .kernel(crate::eif::Arch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bzImage"), "{e}");
    }

    #[test]
    fn a_directory_in_place_of_a_blob_is_unreadable_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("nsm.ko")).unwrap();
        let e = BlobSet::locate(Some(dir.path())).nsm().unwrap_err();
        assert!(matches!(e, BlobError::Unreadable { .. }), "{e}");
    }
}
