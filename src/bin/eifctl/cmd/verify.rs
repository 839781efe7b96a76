//! `eifctl verify`: check a release's signature, rebuild it, compare, explain.

use std::path::PathBuf;

use eifctl::verify::{VerifyError, VerifyRequest, verify};

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Verify a release by rebuilding it: check the manifest's signature against trusted keys,
/// take the recorded source (the recorded revision from the local git repository, or
/// --source), rebuild with the recorded inputs, and compare PCR0, PCR1, PCR2 and the EIF hash.
/// On a mismatch, say which recorded inputs differ from this machine's and, with the published
/// EIF, which files in the ramdisks differ.
///
/// Exit 0 when everything matches, 1 on a mismatch (including a bad or untrusted signature),
/// 2 or 3 when it could not be checked.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("release").required(true).args(["repo", "manifest"])))]
pub struct Args {
    /// The GitHub repository of the release (owner/name); needs --tag.
    #[arg(long, requires = "tag")]
    pub repo: Option<String>,
    /// The release tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// GitHub API URL (GitHub Enterprise).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
    /// A local pcr-values.json (e.g. from manifests/); needs --signature.
    #[arg(long, requires = "signature", conflicts_with = "repo")]
    pub manifest: Option<PathBuf>,
    /// Its detached signature.
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Trusted certificates: a directory or one file.
    #[arg(long, default_value = "keys")]
    pub keyring: PathBuf,
    /// Rebuild from this recipe directory instead of checking out the recorded revision; its
    /// tree must hash to the recorded one.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Boot blobs to rebuild with (default: taken from the published EIF).
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
    /// The published EIF (downloaded from the release with --repo when it has one).
    #[arg(long, value_name = "FILE")]
    pub eif: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let rt = super::runtime()?;
    let downloads = tempfile::tempdir()
        .map_err(|e| Failure::environment(format!("temporary directory: {e}")))?;
    let (manifest, signature, eif) = match (&args.repo, &args.tag, &args.manifest, &args.signature)
    {
        (Some(repo), Some(tag), _, _) => {
            let gh = super::publish::client(&args.api_url)?;
            let dir = downloads.path();
            rt.block_on(gh.download_release(
                repo,
                tag,
                dir,
                &["pcr-values.json", "pcr-values.json.asc"],
            ))
            .map_err(|e| Failure::environment(one_line(&e)))?;
            let manifest = dir.join("pcr-values.json");
            // The EIF is optional in a release; without it the blobs must be given.
            let eif = match (&args.eif, name_of(&manifest)) {
                (Some(e), _) => Some(e.clone()),
                (None, Some(name)) => {
                    let file = format!("{name}.eif");
                    rt.block_on(gh.download_release(repo, tag, dir, &[file.as_str()]))
                        .ok()
                        .map(|_| dir.join(&file))
                }
                (None, None) => None,
            };
            (manifest, dir.join("pcr-values.json.asc"), eif)
        }
        (_, _, Some(m), Some(s)) => (m.clone(), s.clone(), args.eif.clone()),
        _ => unreachable!("clap requires --repo/--tag or --manifest/--signature"),
    };
    let docker = rt
        .block_on(eifctl::docker::connect())
        .map_err(|e| Failure::environment(one_line(&e)))?;
    let req = VerifyRequest {
        manifest,
        signature,
        keyring: args.keyring.clone(),
        source: args.source.clone(),
        blobs: args.blobs.clone(),
        eif,
    };
    let report = match verify(&rt, &docker, &req, &|l| eprintln!("{l}")) {
        Ok(r) => r,
        Err(e) if e.is_mismatch() => {
            if args.json {
                super::print_json(&serde_json::json!({"matches": false, "reason": one_line(&e)}));
            }
            eprintln!("NOT VERIFIED: {}", one_line(&e));
            return Ok(Outcome::Mismatch);
        }
        Err(VerifyError::Rebuild(b)) => return Err(super::build::failure(*b)),
        Err(e) => return Err(Failure::input(one_line(&e))),
    };
    if args.json {
        super::print_json(&serde_json::to_value(&report).expect("plain data"));
    } else {
        print!("{}", report.human());
    }
    Ok(if report.matches {
        Outcome::Ok
    } else {
        Outcome::Mismatch
    })
}

fn name_of(manifest: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(manifest).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("name")?.as_str().map(str::to_string)
}
