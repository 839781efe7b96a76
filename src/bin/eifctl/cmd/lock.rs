//! `eifctl lock`: pin a recipe's inputs in recipe.lock.

use std::path::PathBuf;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Resolve a recipe's bases to content-pinned image IDs (building Debian bases with mmdebstrap,
/// checking archive hashes, pulling digests), hash the boot blobs and the prepared inputs, and
/// write recipe.lock. Commit the lock: `eifctl build` refuses to build without it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe directory.
    pub recipe: PathBuf,
    /// Boot blob directory. Default: NITRO_CLI_BLOBS, else /usr/share/nitro_enclaves/blobs.
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let rt = super::runtime()?;
    let docker = rt
        .block_on(eifctl::docker::connect())
        .map_err(|e| Failure::environment(one_line(&e)))?;
    let lock = eifctl::build::lock(&rt, &docker, &args.recipe, args.blobs.as_deref(), &|l| {
        eprintln!("{l}")
    })
    .map_err(super::build::failure)?;
    eprintln!(
        "Wrote {} ({} bases{})",
        args.recipe.join(eifctl::recipe::LOCK_FILE).display(),
        lock.bases.len(),
        if lock.blobs.is_some() {
            ", boot blobs"
        } else {
            ", no boot blobs"
        }
    );
    Ok(Outcome::Ok)
}
