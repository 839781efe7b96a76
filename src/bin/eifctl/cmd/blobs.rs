//! `eifctl blobs`: boot blobs taken from a published EIF.

use std::path::PathBuf;

use eifctl::blobs;
use eifctl::eif::EifFile;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Work with boot blobs (kernel, cmdline, init, nsm.ko), the inputs that determine PCR1.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Extract(ExtractArgs),
}

/// Write an EIF's kernel (bzImage or Image), cmdline, init and nsm.ko into a directory, so
/// that a rebuild can use exactly the boot blobs of a published image.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// The EIF to take the blobs from.
    pub eif: PathBuf,
    /// Directory to write them into (created if missing; existing blobs are replaced).
    pub dir: PathBuf,
    /// Print the written paths and their PCR-style digests as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: Command) -> Result<Outcome, Failure> {
    match cmd {
        Command::Extract(args) => extract(args),
    }
}

fn extract(args: ExtractArgs) -> Result<Outcome, Failure> {
    let eif = EifFile::open(&args.eif)?;
    let written = blobs::extract(&eif, &args.dir).map_err(|e| match e {
        blobs::ExtractError::Read(r) => Failure::from(r),
        other => Failure::environment(one_line(&other)),
    })?;
    if args.json {
        let files: Vec<_> = written
            .iter()
            .map(|p| serde_json::json!({"path": p.display().to_string()}))
            .collect();
        super::print_json(&serde_json::json!({ "files": files }));
    } else {
        for p in &written {
            println!("{}", p.display());
        }
    }
    Ok(Outcome::Ok)
}
