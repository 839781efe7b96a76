//! `eifctl describe`: the truth about one EIF.

use std::path::PathBuf;

use eifctl::describe::describe;
use eifctl::eif::EifFile;

use crate::Outcome;
use crate::failure::Failure;

/// Show an EIF's measurements (PCR0, PCR1, PCR2, PCR8), CRC and signature checks, layout and
/// metadata.
///
/// `--json` prints the document `nitro-cli describe-eif` prints, with the same fields in the
/// same order.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The EIF file.
    pub eif: PathBuf,
    /// Print nitro-cli's describe-eif JSON instead of the readable report.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 unless the CRC matches and, for a signed image, the signature verifies.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let eif = EifFile::open(&args.eif)?;
    let d = describe(&eif)?;
    if args.json {
        super::print_json(&d.nitro_cli_json(&eif));
    } else {
        print!("{}", d.human(&eif));
    }
    let sig_ok = d.signature.as_ref().is_none_or(|s| s.valid);
    if !d.crc_ok {
        eprintln!(
            "eifctl: {}: CRC mismatch: the header says {:08x}, the content gives {:08x}",
            args.eif.display(),
            eif.header().crc32,
            d.scan.crc_computed
        );
    }
    if !sig_ok {
        eprintln!(
            "eifctl: {}: the signature does not verify over this image's PCR0",
            args.eif.display()
        );
    }
    if args.strict && !(d.crc_ok && sig_ok) {
        return Ok(Outcome::Mismatch);
    }
    Ok(Outcome::Ok)
}
