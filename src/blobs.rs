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
