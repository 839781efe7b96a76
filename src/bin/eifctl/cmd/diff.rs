//! `eifctl diff`: why two EIFs measure differently.

use std::path::PathBuf;

use eifctl::diff::diff;
use eifctl::eif::EifFile;

use crate::Outcome;
use crate::failure::Failure;

/// Compare two EIFs: which PCRs differ, which sections (size, SHA-384), and inside differing
/// ramdisks which entries were added, removed or changed (type, mode, owner, mtime, size,
/// content, link target).
///
/// Exits 0 when the measurements are identical, 1 when they differ.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let a = EifFile::open(&args.a)?;
    let b = EifFile::open(&args.b)?;
    let d = diff(&a, &b)?;
    if args.json {
        super::print_json(&serde_json::to_value(&d).expect("plain data"));
    } else {
        print!("{}", d.human());
    }
    Ok(if d.same_measurements {
        Outcome::Ok
    } else {
        Outcome::Mismatch
    })
}
