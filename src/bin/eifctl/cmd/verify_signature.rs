//! `eifctl verify-signature`: does a detached OpenPGP signature over a file hold?

use std::path::PathBuf;
use std::time::SystemTime;

use eifctl::openpgp::{self, Keyring};

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Verify a detached OpenPGP signature (armored or binary) over a file against trusted
/// certificates.
///
/// Every signature in the file must hold: made over exactly these bytes by a key of the keyring
/// that is now neither revoked nor expired and may sign. Exit 0 when it holds (the signer's
/// fingerprint and user ID on stdout); 1 when it was checked and does not (bad signature,
/// unknown key, expired, revoked, not a signing key, rejected by policy); 2 when the input is
/// not usable (missing file, empty or malformed signature, unreadable keyring).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signed file.
    pub file: PathBuf,
    /// The detached signature.
    pub signature: PathBuf,
    /// The trusted certificates: a directory (its *.asc, *.pgp and *.gpg files) or one file.
    #[arg(long, value_name = "DIR|FILE", default_value = "keys")]
    pub keyring: PathBuf,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| Failure::input(format!("{}: {e}", p.display())));
    let data = read(&args.file)?;
    let signature = read(&args.signature)?;
    let ring = Keyring::load(&args.keyring)
        .map_err(|e| Failure::input(format!("--keyring: {}", one_line(&e))))?;
    let sig = args.signature.display();
    match openpgp::verify_detached(&data, &signature, &ring, SystemTime::now()) {
        Ok(v) => {
            let created = eifctl::eif::rfc3339_utc(time::OffsetDateTime::from(v.created));
            println!(
                "{sig}: good signature over {} by {}{}, made {created}",
                args.file.display(),
                v.fingerprint,
                v.userids
                    .first()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default()
            );
            Ok(Outcome::Ok)
        }
        Err(e) if e.is_checked() => Err(Failure::mismatch(format!("{sig}: {e}"))),
        Err(e) => Err(Failure::input(format!("{sig}: {e}"))),
    }
}
