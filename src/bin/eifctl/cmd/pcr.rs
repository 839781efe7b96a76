//! `eifctl pcr`: the PCR a file would produce (`nitro-cli pcr`).

use std::path::PathBuf;

use eifctl::pcr::Pcr;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Print the PCR value of a file's bytes, `SHA384(zeros || SHA384(file))`, or with
/// `--signing-certificate` the PCR8 of a PEM certificate (computed over its DER form), as
/// `nitro-cli pcr` does.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["file", "input", "signing_certificate"])))]
pub struct Args {
    /// The file to measure.
    pub file: Option<PathBuf>,
    /// The file to measure (nitro-cli's spelling).
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub input: Option<PathBuf>,
    /// A PEM signing certificate: print PCR8, the value a signed EIF made with it shows.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "input"])]
    pub signing_certificate: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let (key, pcr) = if let Some(cert) = &args.signing_certificate {
        let pem = std::fs::read(cert)
            .map_err(|e| Failure::input(format!("reading {}: {e}", cert.display())))?;
        let der = eifctl::eif::signature::certificate_der_from_pem(&pem)
            .map_err(|e| Failure::input(format!("{}: {}", cert.display(), one_line(&e))))?;
        ("PCR8", Pcr::of_bytes(&der))
    } else {
        let path = args.file.or(args.input).expect("clap requires one input");
        let f = std::fs::File::open(&path)
            .map_err(|e| Failure::input(format!("reading {}: {e}", path.display())))?;
        let pcr = Pcr::of_reader(std::io::BufReader::with_capacity(1 << 20, f))
            .map_err(|e| Failure::input(format!("reading {}: {e}", path.display())))?;
        ("PCR", pcr)
    };
    super::print_json(&serde_json::json!({ key: pcr.to_hex() }));
    Ok(Outcome::Ok)
}
