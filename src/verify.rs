//! Verify by rebuild: a third party's verdict on a published release.
//!
//! The signature says who vouches for the measurements; only a rebuild says that they are the
//! measurements of the recorded source. Every step fails closed: what cannot be checked (no
//! trusted key, a source tree that does not hash to the record, missing boot blobs) is a
//! failure with its reason, never a warning. When the PCRs differ, the report says which
//! recorded input differs from what this machine used and, with the published EIF at hand,
//! which files inside the ramdisks differ.

use std::path::{Path, PathBuf};

use bollard::Docker;
use serde::Serialize;

use crate::build::{self, BuildRequest, EifBuilderKind};
use crate::diff::{EifDiff, FieldChange};
use crate::eif::EifFile;
use crate::manifest::{Manifest, ManifestError};
use crate::openpgp::{self, Keyring};

/// What to verify, and with what.
pub struct VerifyRequest {
    pub manifest: PathBuf,
    pub signature: PathBuf,
    /// Trusted certificates (a directory such as `keys/`, or one file).
    pub keyring: PathBuf,
    /// The recipe directory to rebuild from; its tree must hash to the recorded one. Default:
    /// the recorded revision checked out from the git repository around the current directory.
    pub source: Option<PathBuf>,
    /// Boot blobs; default: extracted from `eif`.
    pub blobs: Option<PathBuf>,
    /// The published EIF, for blob extraction and for explaining differences.
    pub eif: Option<PathBuf>,
}

/// One comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub recorded: String,
    pub rebuilt: String,
}

/// The verdict and its reasons.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub version: String,
    /// Who signed the manifest (fingerprint and user IDs).
    pub signer: String,
    pub checks: Vec<Check>,
    /// Recorded inputs that differ from the ones this rebuild used.
    pub input_differences: Vec<FieldChange>,
    /// The published EIF against the rebuilt one, when they differ and the published one is at hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eif_diff: Option<EifDiff>,
    pub matches: bool,
}

/// Why verification could not reach a verdict, or reached a negative one before rebuilding.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature was checked and does not hold (bad, unknown key, expired, revoked...).
    #[error("signature {}: {reason}", path.display())]
    Signature {
        path: PathBuf,
        reason: String,
        /// False when the file is not a signature at all (malformed, empty).
        checked: bool,
    },
    #[error("{}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    /// The source given or checked out is not what was recorded.
    #[error("source: {0}")]
    Source(String),
    #[error("boot blobs: {0}")]
    Blobs(String),
    #[error("rebuild: {0}")]
    Rebuild(#[source] Box<build::BuildError>),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trusted keys: {0}")]
    Keyring(#[from] openpgp::KeyringError),
}

impl VerifyError {
    /// True for verdicts ("it does not match"), false for inability to check.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            VerifyError::Signature { checked: true, .. } | VerifyError::Source(_)
        )
    }
}

/// Checks the signature, rebuilds, compares.
pub fn verify(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    req: &VerifyRequest,
    progress: build::Progress<'_>,
) -> Result<Report, VerifyError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| VerifyError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let manifest_bytes = read(&req.manifest)?;
    let signature = read(&req.signature)?;
    let keyring = Keyring::load(&req.keyring)?;
    let verified = openpgp::verify_detached(
        &manifest_bytes,
        &signature,
        &keyring,
        std::time::SystemTime::now(),
    )
    .map_err(|e| VerifyError::Signature {
        path: req.signature.clone(),
        reason: e.to_string(),
        checked: e.is_checked(),
    })?;
    let signer = format!("{} {}", verified.fingerprint, verified.userids.join(", "));
    progress(&format!("Signature: valid, by {signer}"));
    let recorded =
        Manifest::from_canonical(&manifest_bytes).map_err(|source| VerifyError::Manifest {
            path: req.manifest.clone(),
            source,
        })?;
    recorded
        .require_complete()
        .map_err(|source| VerifyError::Manifest {
            path: req.manifest.clone(),
            source,
        })?;

    let work = tempfile::tempdir().map_err(|source| VerifyError::Io {
        path: PathBuf::from("temporary directory"),
        source,
    })?;
    let (recipe_dir, _checkout) = source_dir(req, &recorded, work.path())?;
    let tree = build::tree_hash(&recipe_dir).map_err(|e| VerifyError::Rebuild(Box::new(e)))?;
    if tree != recorded.inputs.source.tree {
        return Err(VerifyError::Source(format!(
            "{} has tree {}, the release records {} (revision {}{})",
            recipe_dir.display(),
            tree,
            recorded.inputs.source.tree,
            recorded.inputs.source.revision,
            if recorded.inputs.source.dirty {
                ", built from uncommitted changes"
            } else {
                ""
            }
        )));
    }
    progress(&format!("Source: tree {tree} as recorded"));

    let blobs = match (&req.blobs, &req.eif) {
        (Some(dir), _) => dir.clone(),
        (None, Some(eif)) => {
            let dir = work.path().join("blobs");
            let file = EifFile::open(eif).map_err(|e| VerifyError::Blobs(e.to_string()))?;
            crate::blobs::extract(&file, &dir).map_err(|e| VerifyError::Blobs(e.to_string()))?;
            progress(&format!("Boot blobs: taken from {}", eif.display()));
            dir
        }
        (None, None) => {
            return Err(VerifyError::Blobs(
                "none given: pass --blobs DIR, or --eif with the published EIF to take them from"
                    .into(),
            ));
        }
    };

    progress("Rebuilding with the recorded inputs");
    let out = work.path().join("out");
    let rebuilt = build::build(
        rt,
        docker,
        &BuildRequest {
            recipe_dir: recipe_dir.clone(),
            out_root: out,
            blobs: Some(blobs),
            no_cache: false,
            eif_builder: EifBuilderKind::Native,
            cross_check: None,
            source_date_epoch: Some(recorded.inputs.source_date_epoch),
        },
        progress,
        &mut |_| {},
    );
    let rebuilt = match rebuilt {
        Ok(b) => b,
        Err(build::BuildError::BlobMismatch { changes }) => {
            return Err(VerifyError::Blobs(format!(
                "the blobs given are not the ones the release's lock pins: {changes}"
            )));
        }
        Err(e) => return Err(VerifyError::Rebuild(Box::new(e))),
    };
    let m = &rebuilt.manifest;

    let mut checks = Vec::new();
    for idx in ["0", "1", "2", "8"] {
        let (a, b) = (recorded.pcrs.get(idx), m.pcrs.get(idx));
        if a.is_none() && b.is_none() {
            continue;
        }
        let show = |p: Option<&crate::pcr::Pcr>| p.map_or("(none)".into(), |p| p.to_hex());
        checks.push(Check {
            name: format!("PCR{idx}"),
            ok: a == b,
            recorded: show(a),
            rebuilt: show(b),
        });
    }
    if let (Some(a), Some(b)) = (&recorded.eif, &m.eif) {
        checks.push(Check {
            name: "EIF sha384".into(),
            ok: a.sha384 == b.sha384,
            recorded: a.sha384.clone(),
            rebuilt: b.sha384.clone(),
        });
    }
    let matches = checks.iter().all(|c| c.ok);
    let input_differences = if matches {
        Vec::new()
    } else {
        input_differences(&recorded, m)
    };
    let eif_diff = match (&req.eif, matches, &m.eif) {
        (Some(published), false, Some(e)) => {
            let a = EifFile::open(published).map_err(|e| VerifyError::Blobs(e.to_string()))?;
            let b = EifFile::open(rebuilt.dir.join(&e.file)).map_err(|e| {
                VerifyError::Rebuild(Box::new(build::BuildError::Step {
                    step: "reading the rebuilt EIF".into(),
                    message: e.to_string(),
                }))
            })?;
            crate::diff::diff(&a, &b).ok()
        }
        _ => None,
    };
    Ok(Report {
        name: recorded.name.clone(),
        version: recorded.version.clone(),
        signer,
        checks,
        input_differences,
        eif_diff,
        matches,
    })
}

/// The recipe directory to rebuild: `--source`, or the recorded revision checked out into a
/// temporary worktree (removed when the guard drops).
fn source_dir(
    req: &VerifyRequest,
    recorded: &Manifest,
    work: &Path,
) -> Result<(PathBuf, Option<Worktree>), VerifyError> {
    if let Some(dir) = &req.source {
        return Ok((dir.clone(), None));
    }
    let top = git(Path::new("."), &["rev-parse", "--show-toplevel"]).map_err(|e| {
        VerifyError::Source(format!(
            "no --source given and the current directory is not in a git repository ({e})"
        ))
    })?;
    let checkout = work.join("source");
    let revision = &recorded.inputs.source.revision;
    git(
        Path::new(&top),
        &[
            "worktree",
            "add",
            "--detach",
            "--quiet",
            checkout.to_str().unwrap_or_default(),
            revision,
        ],
    )
    .map_err(|e| {
        VerifyError::Source(format!(
            "checking out revision {revision}: {e} (fetch it first?)"
        ))
    })?;
    let guard = Worktree {
        repo: PathBuf::from(&top),
        path: checkout.clone(),
    };
    Ok((checkout.join(&recorded.inputs.source.path), Some(guard)))
}

struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "remove", "--force"])
            .arg(&self.path)
            .output();
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Recorded inputs against the rebuild's, field by field.
fn input_differences(recorded: &Manifest, rebuilt: &Manifest) -> Vec<FieldChange> {
    let (a, b) = (&recorded.inputs, &rebuilt.inputs);
    let mut out = Vec::new();
    let mut cmp = |field: String, x: String, y: String| {
        if x != y {
            out.push(FieldChange { field, a: x, b: y });
        }
    };
    for (name, base) in &a.bases {
        let other = b.bases.get(name);
        cmp(
            format!("base {name} image"),
            base.image_id.clone(),
            other.map_or("(absent)".into(), |o| o.image_id.clone()),
        );
    }
    let blob = |m: &Manifest, f: fn(&crate::manifest::Blobs) -> &String| {
        m.inputs
            .blobs
            .as_ref()
            .map_or("(none)".to_string(), |b| f(b).clone())
    };
    cmp(
        "kernel sha384".into(),
        blob(recorded, |b| &b.kernel_sha384),
        blob(rebuilt, |b| &b.kernel_sha384),
    );
    cmp(
        "init sha384".into(),
        blob(recorded, |b| &b.init_sha384),
        blob(rebuilt, |b| &b.init_sha384),
    );
    cmp(
        "nsm.ko sha384".into(),
        blob(recorded, |b| &b.nsm_sha384),
        blob(rebuilt, |b| &b.nsm_sha384),
    );
    cmp(
        "cmdline".into(),
        blob(recorded, |b| &b.cmdline),
        blob(rebuilt, |b| &b.cmdline),
    );
    cmp(
        "SOURCE_DATE_EPOCH".into(),
        a.source_date_epoch.to_string(),
        b.source_date_epoch.to_string(),
    );
    cmp(
        "eifctl version".into(),
        a.eifctl_version.clone(),
        b.eifctl_version.clone(),
    );
    cmp(
        "build context sha256".into(),
        a.context_sha256.clone(),
        b.context_sha256.clone(),
    );
    cmp(
        "prepared inputs sha256".into(),
        a.prepared_sha256.clone().unwrap_or_default(),
        b.prepared_sha256.clone().unwrap_or_default(),
    );
    cmp(
        "normalized image".into(),
        recorded.docker_image.digest.clone(),
        rebuilt.docker_image.digest.clone(),
    );
    out
}

impl Report {
    /// The readable verdict: one line per check, then the explanations.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {}: signed by {}",
            self.name, self.version, self.signer
        );
        for c in &self.checks {
            if c.ok {
                let _ = writeln!(s, "  {:<11} match     {}", c.name, c.recorded);
            } else {
                let _ = writeln!(s, "  {:<11} MISMATCH  recorded {}", c.name, c.recorded);
                let _ = writeln!(s, "  {:<11}           rebuilt  {}", "", c.rebuilt);
            }
        }
        if !self.input_differences.is_empty() {
            let _ = writeln!(s, "Inputs that differ from the recorded ones:");
            for d in &self.input_differences {
                let _ = writeln!(s, "  {}: recorded {}, this rebuild {}", d.field, d.a, d.b);
            }
        }
        if let Some(d) = &self.eif_diff {
            let _ = writeln!(s, "The published EIF (a) against the rebuilt one (b):");
            for line in d.human().lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            if self.matches {
                "VERIFIED: the rebuild reproduces the published measurements"
            } else {
                "NOT VERIFIED: the rebuild does not reproduce the published measurements"
            }
        );
        s
    }
}
