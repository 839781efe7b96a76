//! `eifctl publish` and `eifctl record`: a signed build output directory as a GitHub release,
//! and into the repository's `manifests/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eifctl::github::{
    self, GitHub, GitHubError, MANIFEST, PublishOptions, RetryPolicy, SIGNATURE, SIGNER,
};
use eifctl::manifest::Manifest;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Publish a signed build (out/<name>/<version>/) as the GitHub release TAG of REPO, then record
/// its manifest and signature in manifests/<name>/<version>/.
///
/// The manifest must be canonical and complete and signed (pcr-values.json.asc, signer.asc)
/// before any request is made. The token comes from GITHUB_TOKEN. Re-running with the same files
/// changes nothing; an asset that exists with different bytes is refused unless --replace.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build output directory (pcr-values.json, pcr-values.json.asc, signer.asc, the EIF,
    /// image.tar).
    pub dir: PathBuf,
    /// The repository, owner/name.
    #[arg(long)]
    pub repo: String,
    /// The release tag, e.g. v1.2.0.
    #[arg(long)]
    pub tag: String,
    /// Create the release as a draft.
    #[arg(long)]
    pub draft: bool,
    /// Mark the release as a pre-release.
    #[arg(long)]
    pub prerelease: bool,
    /// Also publish the EIF and the normalized image (image.tar).
    #[arg(long)]
    pub with_eif: bool,
    /// Replace assets (and recorded manifests) whose bytes differ instead of refusing.
    #[arg(long)]
    pub replace: bool,
    /// The API endpoint: GitHub Enterprise is https://HOST/api/v3.
    #[arg(long, value_name = "URL", default_value = github::DEFAULT_API_URL)]
    pub api_url: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The first retry wait in milliseconds (doubling up to 5 tries); for tests.
    #[arg(long, hide = true, env = "EIFCTL_GITHUB_BACKOFF_MS")]
    pub backoff_ms: Option<u64>,
}

/// Record a signed build's pcr-values.json and pcr-values.json.asc in
/// manifests/<name>/<version>/ (relative to the current directory, the repository root).
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The build output directory.
    pub dir: PathBuf,
    /// Overwrite a recorded manifest whose bytes differ.
    #[arg(long)]
    pub replace: bool,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    // Everything local before any request.
    github::split_repo(&args.repo).map_err(|e| Failure::input(one_line(&e)))?;
    let manifest = check_publishable(&args.dir)?;
    let token = match std::env::var("GITHUB_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            return Err(Failure::environment(
                "GITHUB_TOKEN is not set: export a token that may write releases of the repository",
            ));
        }
    };
    let retry = match args.backoff_ms {
        Some(ms) => RetryPolicy::with_base(Duration::from_millis(ms)),
        None => RetryPolicy::default(),
    };
    let gh = GitHub::new(&args.api_url, token)
        .map_err(failure)?
        .with_retry(retry);
    let opts = PublishOptions {
        draft: args.draft,
        prerelease: args.prerelease,
        with_eif: args.with_eif,
        replace: args.replace,
        notes: github::release_notes(&manifest, &args.repo, &args.tag),
    };
    let rt = super::runtime()?;
    let report = rt
        .block_on(gh.publish(&args.repo, &args.tag, &args.dir, opts))
        .map_err(failure)?;
    let recorded = record(&args.dir, &manifest, args.replace)?;
    if args.json {
        let mut v = serde_json::to_value(&report).expect("plain data");
        v["recorded"] = serde_json::json!(recorded.display().to_string());
        super::print_json(&v);
    } else {
        println!(
            "{} {}: {}",
            if report.created { "Created" } else { "Release" },
            args.tag,
            report.release_url
        );
        for (label, names) in [
            ("uploaded", &report.uploaded),
            ("replaced", &report.replaced),
            ("unchanged", &report.unchanged),
        ] {
            if !names.is_empty() {
                println!("  {label}: {}", names.join(", "));
            }
        }
        if report.notes_updated {
            println!("  release notes updated");
        }
        println!("Recorded {}", recorded.display());
    }
    Ok(Outcome::Ok)
}

pub fn run_record(args: RecordArgs) -> Result<Outcome, Failure> {
    let manifest = check_publishable(&args.dir)?;
    let recorded = record(&args.dir, &manifest, args.replace)?;
    println!("Recorded {}", recorded.display());
    Ok(Outcome::Ok)
}

/// The local checks of `publish` and `record`: a canonical, complete, signed manifest.
fn check_publishable(dir: &Path) -> Result<Manifest, Failure> {
    let manifest = github::read_manifest(dir).map_err(failure)?;
    check_signed(dir)?;
    Ok(manifest)
}

/// Refuses a build directory that is not signed.
///
/// Both files must be there, and the signature must hold over `pcr-values.json` with the
/// certificate in `signer.asc`: a release never carries a signature that does not verify.
pub fn check_signed(dir: &Path) -> Result<(), Failure> {
    for name in [SIGNATURE, SIGNER] {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => {
                return Err(Failure::input(format!(
                    "{}: empty or not a file: sign the manifest first (eifctl sign)",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(Failure::input(format!(
                    "{}: {e}: the manifest is not signed, run eifctl sign first",
                    path.display()
                )));
            }
        }
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
    };
    let signer = eifctl::openpgp::Keyring::from_bytes(&read(SIGNER)?)
        .map_err(|e| Failure::input(format!("{}: {}", dir.join(SIGNER).display(), one_line(&e))))?;
    eifctl::openpgp::verify_detached(
        &read("pcr-values.json")?,
        &read(SIGNATURE)?,
        &signer,
        std::time::SystemTime::now(),
    )
    .map_err(|e| {
        Failure::input(format!(
            "{}: {} (with the certificate in {SIGNER})",
            dir.join(SIGNATURE).display(),
            one_line(&e)
        ))
    })?;
    Ok(())
}

/// Copies pcr-values.json and its signature into manifests/<name>/<version>/, atomically; an
/// identical recorded copy is left alone, a different one refused unless `replace`.
fn record(dir: &Path, manifest: &Manifest, replace: bool) -> Result<PathBuf, Failure> {
    for part in [&manifest.name, &manifest.version] {
        if part.is_empty() || part.starts_with('.') || part.contains(['/', '\\']) {
            return Err(Failure::input(format!(
                "{}: name or version {part:?} cannot be a directory name",
                dir.join(MANIFEST).display()
            )));
        }
    }
    let target = Path::new("manifests")
        .join(&manifest.name)
        .join(&manifest.version);
    let mut files = Vec::new();
    for name in [MANIFEST, SIGNATURE] {
        let src = dir.join(name);
        let bytes =
            std::fs::read(&src).map_err(|e| Failure::input(format!("{}: {e}", src.display())))?;
        let dst = target.join(name);
        match std::fs::read(&dst) {
            Ok(old) if old == bytes => {}
            Ok(_) if !replace => {
                return Err(Failure::input(format!(
                    "{}: already recorded with different contents: pass --replace to overwrite it",
                    dst.display()
                )));
            }
            _ => files.push((dst, bytes)),
        }
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| Failure::environment(format!("{}: {e}", target.display())))?;
    for (dst, bytes) in files {
        eifctl::atomic::write_file(&dst, &bytes)
            .map_err(|e| Failure::environment(format!("{}: {e}", dst.display())))?;
    }
    Ok(target)
}

fn failure(e: GitHubError) -> Failure {
    if e.is_input() {
        Failure::input(one_line(&e))
    } else {
        Failure::environment(one_line(&e))
    }
}

/// A client for reading releases (verify): `GITHUB_TOKEN` when set, anonymous otherwise.
pub fn client(api_url: &str) -> Result<GitHub, Failure> {
    let token = std::env::var("GITHUB_TOKEN").unwrap_or_default();
    GitHub::new(api_url, token).map_err(failure)
}
