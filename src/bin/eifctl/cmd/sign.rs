//! `eifctl sign`: a detached OpenPGP signature over a published pcr-values.json.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eifctl::manifest::Manifest;
use eifctl::openpgp::{self, OpenPgpError};

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// The environment variable an armored secret key may come from (for CI).
pub const KEY_ENV: &str = "EIFCTL_SIGNING_KEY";

/// Sign a pcr-values.json with an OpenPGP key.
///
/// The manifest must be canonical and complete (PCR0, PCR1, PCR2 and the EIF): anything else is
/// refused before signing. Writes <manifest>.asc (an ASCII-armored detached signature) and
/// signer.asc (the signer's public certificate) next to it, and prints the signer's
/// fingerprint on stderr.
///
/// The key comes from --key FILE, else from EIFCTL_SIGNING_KEY (the armored secret key itself);
/// an encrypted key's passphrase from --passphrase-file, else EIFCTL_KEY_PASSPHRASE, else the
/// terminal. No key: exit 3.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pcr-values.json to sign.
    pub manifest: PathBuf,
    /// The secret key file (armored or binary).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A file whose first line is the key's passphrase.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let name = args.manifest.display().to_string();
    let bytes =
        std::fs::read(&args.manifest).map_err(|e| Failure::input(format!("{name}: {e}")))?;
    let manifest = Manifest::from_canonical(&bytes)
        .map_err(|e| Failure::input(format!("{name}: {}", one_line(&e))))?;
    manifest
        .require_complete()
        .map_err(|e| Failure::input(format!("{name}: {}; refusing to sign", one_line(&e))))?;

    let (key, origin) = match &args.key {
        Some(path) => (
            std::fs::read(path)
                .map_err(|e| Failure::environment(format!("--key {}: {e}", path.display())))?,
            format!("--key {}", path.display()),
        ),
        None => match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => (v.into_bytes(), KEY_ENV.to_string()),
            _ => {
                return Err(Failure::environment(format!(
                    "no signing key: give --key FILE or set {KEY_ENV} to the armored secret key"
                )));
            }
        },
    };
    let key_error = |e: OpenPgpError| match e {
        OpenPgpError::PassphraseRequired(_) => Failure::environment(format!("{origin}: {e}")),
        _ => Failure::input(format!("{origin}: {}", one_line(&e))),
    };
    let fingerprint = openpgp::fingerprint(&key).map_err(key_error)?;
    let passphrase = if openpgp::needs_passphrase(&key).map_err(key_error)? {
        Some(super::key::existing_passphrase(
            args.passphrase_file.as_deref(),
            &fingerprint,
        )?)
    } else {
        None
    };
    let signature =
        openpgp::sign_detached(&key, passphrase.as_deref(), &bytes).map_err(key_error)?;
    let cert = openpgp::public_cert(&key).map_err(key_error)?;

    // Check what is about to be published, as a verifier will.
    let ring = openpgp::Keyring::from_bytes(cert.as_bytes())
        .map_err(|e| Failure::environment(format!("the signer's certificate: {}", one_line(&e))))?;
    let verified = openpgp::verify_detached(&bytes, signature.as_bytes(), &ring, SystemTime::now())
        .map_err(|e| Failure::environment(format!("the new signature does not verify: {e}")))?;

    let sig_path = signature_path(&args.manifest);
    let signer_path = parent(&args.manifest).join("signer.asc");
    for (path, text) in [(&sig_path, &signature), (&signer_path, &cert)] {
        eifctl::atomic::write_file(path, text.as_bytes())
            .map_err(|e| Failure::environment(format!("{}: {e}", path.display())))?;
    }
    eprintln!(
        "eifctl: signed {name} with key {}{}",
        verified.fingerprint,
        verified
            .userids
            .first()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default()
    );
    println!("{}", sig_path.display());
    println!("{}", signer_path.display());
    Ok(Outcome::Ok)
}

/// `<manifest>.asc`.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".asc");
    PathBuf::from(s)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
