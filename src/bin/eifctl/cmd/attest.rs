//! `eifctl attest verify`: does an enclave's attestation document prove it runs this release?

use std::io::Read;
use std::path::{Path, PathBuf};
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
///
/// With --url, the document comes from a running enclave's proof server: eifctl sends
/// GET URL?nonce=<32 random bytes, hex> over HTTPS and checks the answer like a file, the nonce
/// always (it must be the one sent) and its age always (--max-age, 300 s unless given). Exit 3
/// when the server cannot be reached (connect, TLS, timeout), 1 when it answers other than 200,
/// 2 when its answer is not the JSON document.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["document", "url"])))]
pub struct VerifyArgs {
    /// The document: raw CBOR, base64, or JSON {"attestation_document": "<base64>"}.
    pub document: Option<PathBuf>,
    /// Fetch the document from a running enclave's proof server instead (https://host:port/path):
    /// GET with a fresh random `nonce` query parameter (other parameters kept), the answer must
    /// be 200 {"attestation_document": "<base64>"} carrying that nonce. Redirects are not followed.
    #[arg(long, value_name = "URL", conflicts_with_all = ["nonce", "at"])]
    pub url: Option<String>,
    /// With --url: also trust this CA (PEM, one or more certificates) for the server's TLS
    /// certificate, besides the platform's roots (SSL_CERT_FILE/SSL_CERT_DIR when set).
    #[arg(long, value_name = "PEM", conflicts_with = "document")]
    pub ca_cert: Vec<PathBuf>,
    /// With --url: allow a plain http:// URL. The document stays authenticated end to end (AWS's
    /// signature, the fresh nonce), but anyone on the path sees and can block the exchange.
    #[arg(long, conflicts_with = "document")]
    pub allow_http: bool,
    /// With --url: give up after this many seconds (the whole exchange; each connection attempt
    /// at most 10 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The release's pcr-values.json (canonical).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The manifest's detached OpenPGP signature: also check it against the keyring.
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// The trusted certificates for --signature: a directory or one file.
    #[arg(long, value_name = "DIR|FILE", default_value = "keys")]
    pub keyring: PathBuf,
    /// The nonce the document must carry, hex (not with --url, which sends its own).
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Check as of this time (RFC 3339) instead of the document's timestamp (validity) and the
    /// clock (freshness). Not with --url: a live document is checked at the clock.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// The document may be at most this many seconds old. With --url the default is 300: a
    /// live check must be fresh.
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Trust this root (PEM) instead of AWS Nitro Enclaves Root-G1 (for tests).
    #[arg(long, value_name = "PEM")]
    pub root_cert: Option<PathBuf>,
    /// The verdict as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How old a document fetched with --url may be when --max-age is not given.
pub const LIVE_MAX_AGE: Duration = Duration::from_secs(300);
/// The largest answer accepted from a proof server (a document is 4 to 5 KiB in base64 JSON).
pub const MAX_RESPONSE: usize = 64 * 1024;

pub fn run(cmd: Command) -> Result<Outcome, Failure> {
    match cmd {
        Command::Verify(a) => verify(*a),
    }
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, Failure> {
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

/// Where the document came from, for the report.
struct Fetched {
    /// The URL as fetched (with the nonce).
    url: String,
    nonce: [u8; 32],
}

/// Fetches a document from a proof server: the document bytes (raw CBOR) and what was sent.
fn fetch(args: &VerifyArgs, base: &str) -> Result<(Vec<u8>, Fetched), Failure> {
    use eifctl::fetch::{self, FetchError, Fetcher};

    let usage = |e: &dyn std::fmt::Display| Failure::input(format!("--url {base}: {e}"));
    let parsed = url::Url::parse(base).map_err(|e| usage(&e))?;
    let mut extra = Vec::new();
    for p in &args.ca_cert {
        let pem = read_capped(p, 1 << 20)?;
        extra.extend(
            fetch::certificates_from_pem(&pem)
                .map_err(|e| Failure::input(format!("--ca-cert {}: {e}", p.display())))?,
        );
    }
    let mut fetcher =
        Fetcher::new(&extra).map_err(|e| Failure::input(format!("--ca-cert: {e}")))?;
    fetcher.allow_http = args.allow_http;
    fetcher.timeout = Duration::from_secs(args.timeout);
    fetcher.connect_timeout = fetch::CONNECT_TIMEOUT.min(fetcher.timeout);
    fetcher.max_body = MAX_RESPONSE;
    fetcher.check_url(&parsed).map_err(|e| usage(&e))?;
    let nonce = fetch::random_nonce().map_err(Failure::environment)?;
    let url = fetch::with_nonce(&parsed, &nonce).map_err(|e| usage(&e))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::environment(format!("starting the async runtime: {e}")))?;
    let resp = rt.block_on(fetcher.get(&url)).map_err(|e| match e {
        FetchError::Usage(_) => usage(&e),
        FetchError::TooLarge { .. } => Failure::input(format!("{base}: {e}")),
        FetchError::Transport { .. } | FetchError::Timeout { .. } => {
            Failure::environment(format!("{base}: {e}"))
        }
    })?;
    if resp.status != http::StatusCode::OK {
        let mut msg = format!("{base}: the server answered HTTP {}", resp.status);
        if let Some(e) = server_error(&resp.body) {
            msg.push_str(&format!(": {e}"));
        }
        if resp.status.is_redirection() {
            let to = resp
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(printable)
                .unwrap_or_default();
            msg.push_str(&format!(" (to {to:?}; redirects are not followed)"));
        }
        return Err(Failure::mismatch(msg));
    }
    let doc = attest::decode_response(&resp.body)
        .map_err(|e| Failure::input(format!("{base}: {}", one_line(&e))))?;
    Ok((
        doc,
        Fetched {
            url: url.to_string(),
            nonce,
        },
    ))
}

/// The `error` string of a JSON error body, made printable and short.
fn server_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error").and_then(|e| e.as_str()).map(printable)
}

/// At most 300 characters, control characters replaced: a server's text goes to a terminal.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

fn verify(args: VerifyArgs) -> Result<Outcome, Failure> {
    use sha2::{Digest, Sha256};
    use time::format_description::well_known::Rfc3339;

    let manifest_bytes = read_capped(&args.manifest, 16 << 20)?;
    let manifest = Manifest::from_canonical(&manifest_bytes).map_err(|e| {
        Failure::input(format!(
            "--manifest {}: {}",
            args.manifest.display(),
            one_line(&e)
        ))
    })?;
    let mut nonce = match &args.nonce {
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
    let mut max_age = args.max_age.map(Duration::from_secs);
    let (input, doc_name, fetched) = match (&args.url, &args.document) {
        (Some(base), _) => {
            let (doc, fetched) = fetch(&args, base)?;
            nonce = Some(fetched.nonce.to_vec());
            max_age = max_age.or(Some(LIVE_MAX_AGE));
            (doc, base.clone(), Some(fetched))
        }
        (None, Some(path)) => (
            read_capped(path, attest::MAX_INPUT)?,
            path.display().to_string(),
            None,
        ),
        (None, None) => return Err(Failure::input("a document or --url is required")),
    };
    let opts = Options {
        pcrs: Options::pcrs_of(&manifest),
        nonce,
        at,
        now: SystemTime::now(),
        max_age,
        root_sha256,
    };
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
        crate::cmd::print_json(&report_json(
            &doc,
            &checks,
            fetched.as_ref(),
            failed.is_empty(),
        ));
    } else {
        if let Some(f) = &fetched {
            println!("fetched: {}", f.url);
            println!("nonce sent: {}", hex::encode(f.nonce));
        }
        println!(
            "{doc_name}: module {} at {}",
            doc.module_id,
            doc.timestamp_rfc3339()
        );
        if let Some(k) = &doc.public_key {
            println!("public_key: {}", hex::encode(k));
        }
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

fn report_json(
    doc: &Document,
    checks: &[Check],
    fetched: Option<&Fetched>,
    ok: bool,
) -> serde_json::Value {
    let hex_opt = |b: &Option<Vec<u8>>| b.as_ref().map(hex::encode);
    serde_json::json!({
        "ok": ok,
        "fetched": fetched.map(|f| serde_json::json!({
            "url": f.url,
            "nonce": hex::encode(f.nonce),
        })),
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
