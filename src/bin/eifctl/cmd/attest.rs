//! `eifctl attest verify`: does an enclave's attestation document prove it runs this release?

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use eifctl::attest::{self, Check, Document, Options};
use eifctl::manifest::Manifest;
use eifctl::openpgp::{self, Keyring};

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// AWS Nitro Enclaves attestation documents.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Verify(Box<VerifyArgs>),
}

/// Verify an attestation document against a release's pcr-values.json.
///
/// Checks the COSE_Sign1 structure and its ES384 signature, the certificate chain up to the
/// pinned AWS Nitro Enclaves Root-G1, certificate validity, PCR0/1/2 (and PCR8 when the manifest
/// records one) against the manifest, that the enclave is not in debug mode, and on request the
/// document's age, its nonce and the manifest's OpenPGP signature. Exit 0 when every check
/// passes; 1 when a check fails (each is listed); 2 when the input is malformed.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The document: raw CBOR, base64, or JSON {"attestation_document": "<base64>"}.
    pub document: PathBuf,
    /// The release's pcr-values.json (canonical).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The manifest's detached OpenPGP signature: also check it against the keyring.
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// The trusted certificates for --signature: a directory or one file.
    #[arg(long, value_name = "DIR|FILE", default_value = "keys")]
    pub keyring: PathBuf,
    /// The nonce the document must carry, hex.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Check as of this time (RFC 3339) instead of the document's timestamp (validity) and the
    /// clock (freshness).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// The document may be at most this many seconds old.
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Trust this root (PEM) instead of AWS Nitro Enclaves Root-G1 (for tests).
    #[arg(long, value_name = "PEM")]
    pub root_cert: Option<PathBuf>,
    /// The verdict as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: Command) -> Result<Outcome, Failure> {
    match cmd {
        Command::Verify(a) => verify(*a),
    }
}

fn read_capped(path: &PathBuf, cap: u64) -> Result<Vec<u8>, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    if out.len() as u64 > cap {
        return Err(Failure::input(format!(
            "{}: more than {cap} bytes",
            path.display()
        )));
    }
    Ok(out)
}

fn verify(args: VerifyArgs) -> Result<Outcome, Failure> {
    use sha2::{Digest, Sha256};
    use time::format_description::well_known::Rfc3339;

    let input = read_capped(&args.document, attest::MAX_INPUT)?;
    let manifest_bytes = read_capped(&args.manifest, 16 << 20)?;
    let manifest = Manifest::from_canonical(&manifest_bytes).map_err(|e| {
        Failure::input(format!(
            "--manifest {}: {}",
            args.manifest.display(),
            one_line(&e)
        ))
    })?;
    let nonce = match &args.nonce {
        Some(h) => Some(
            hex::decode(h.trim()).map_err(|e| Failure::input(format!("--nonce: not hex: {e}")))?,
        ),
        None => None,
    };
    let at = match &args.at {
        Some(t) => Some(SystemTime::from(
            time::OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|e| Failure::input(format!("--at {t:?}: not an RFC 3339 time: {e}")))?,
        )),
        None => None,
    };
    let root_sha256 = match &args.root_cert {
        Some(p) => {
            let pem = read_capped(p, 1 << 20)?;
            let der = eifctl::eif::signature::certificate_der_from_pem(&pem).map_err(|e| {
                Failure::input(format!("--root-cert {}: {}", p.display(), one_line(&e)))
            })?;
            Sha256::digest(&der).into()
        }
        None => Options::aws_root(),
    };
    let opts = Options {
        pcrs: Options::pcrs_of(&manifest),
        nonce,
        at,
        now: SystemTime::now(),
        max_age: args.max_age.map(Duration::from_secs),
        root_sha256,
    };
    let doc_name = args.document.display().to_string();
    let (doc, mut checks) = attest::verify(&input, &opts)
        .map_err(|e| Failure::input(format!("{doc_name}: {}", one_line(&e))))?;

    if let Some(sig_path) = &args.signature {
        let sig = read_capped(sig_path, 1 << 20)?;
        let ring = Keyring::load(&args.keyring)
            .map_err(|e| Failure::input(format!("--keyring: {}", one_line(&e))))?;
        let sig_name = sig_path.display();
        checks.push(
            match openpgp::verify_detached(&manifest_bytes, &sig, &ring, opts.now) {
                Ok(v) => Check::pass(
                    "manifest-signature",
                    format!("good signature by {}", v.fingerprint),
                ),
                Err(e) if e.is_checked() => Check::fail("manifest-signature", e.to_string()),
                Err(e) => return Err(Failure::input(format!("{sig_name}: {e}"))),
            },
        );
    }

    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    if args.json {
        crate::cmd::print_json(&report_json(&doc, &checks, failed.is_empty()));
    } else {
        println!(
            "{doc_name}: module {} at {}",
            doc.module_id,
            doc.timestamp_rfc3339()
        );
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    if failed.is_empty() {
        if !args.json {
            println!("{doc_name}: verified against {}", args.manifest.display());
        }
        Ok(Outcome::Ok)
    } else {
        Err(Failure::mismatch(format!(
            "{doc_name}: does not verify: failed {}",
            failed.join(", ")
        )))
    }
}

fn report_json(doc: &Document, checks: &[Check], ok: bool) -> serde_json::Value {
    let hex_opt = |b: &Option<Vec<u8>>| b.as_ref().map(hex::encode);
    serde_json::json!({
        "ok": ok,
        "checks": checks,
        "document": {
            "module_id": doc.module_id,
            "digest": doc.digest,
            "timestamp": doc.timestamp_ms,
            "pcrs": doc.pcrs.iter().map(|(k, v)| (*k, hex::encode(v))).collect::<std::collections::BTreeMap<u64, String>>(),
            "nonce": hex_opt(&doc.nonce),
            "user_data": hex_opt(&doc.user_data),
            "public_key": hex_opt(&doc.public_key),
        }
    })
}
