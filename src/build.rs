//! `eifctl build` and `eifctl lock`: from a recipe to `out/<name>/<version>/`.
//!
//! The flow is the release's data flow: recipe -> pinned bases -> Dockerfile build ->
//! normalized image -> ramdisks -> EIF -> measurements -> `pcr-values.json`. Every input is
//! checked against the lock before it is used, and the output directory is assembled aside and
//! swapped in only when everything succeeded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use bollard::Docker;
use sha2::{Digest, Sha256, Sha384};

use crate::atomic::StagedDir;
use crate::base::{self, BaseContext, BaseError, BasePin};
use crate::blobs::{BlobError, BlobSet};
use crate::context::{self, ContextError};
use crate::docker::{self, BuildEvent, DockerError};
use crate::eif::rfc3339_utc;
use crate::enclave::{self, BuildError as EnclaveError, BuildOptions};
use crate::manifest::{self, Manifest};
use crate::normalize::{self, NormalizeError};
use crate::pcr::{Measurements, Pcr};
use crate::recipe::{
    Changes, Lock, LockedBase, LockedBlobs, LockedInputs, Prepare, Recipe, RecipeError,
};

/// How the EIF is made from the normalized image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EifBuilderKind {
    /// eifctl's own assembly (no nitro-cli needed).
    Native,
    /// `nitro-cli build-enclave` at this path, its JSON output read back.
    NitroCli(PathBuf),
}

/// What to build.
pub struct BuildRequest {
    pub recipe_dir: PathBuf,
    /// `out/`: the build lands in `out/<name>/<version>/`.
    pub out_root: PathBuf,
    /// `--blobs`; `None` lets [`BlobSet::locate`] decide.
    pub blobs: Option<PathBuf>,
    pub no_cache: bool,
    pub eif_builder: EifBuilderKind,
    /// Build with both eifctl and nitro-cli and fail on any PCR difference.
    pub cross_check: Option<PathBuf>,
    /// Overrides the recipe's SOURCE_DATE_EPOCH (a verifier uses the recorded one).
    pub source_date_epoch: Option<u64>,
}

/// A finished build.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Plain statements the user should read (e.g. why the manifest is incomplete).
    pub notes: Vec<String>,
}

/// Why a build or lock failed; the output directory is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(
        "boot blobs differ from the lock: {changes}; use the locked blobs (e.g. `eifctl blobs extract` from the published EIF) or re-lock"
    )]
    BlobMismatch { changes: Changes },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    #[error(transparent)]
    Enclave(#[from] EnclaveError),
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    #[error("nitro-cli and eifctl disagree: {0}")]
    CrossCheck(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where progress lines go (stderr, or a spinner's log); shared with threads that make bases.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Everything about the inputs that does not need Docker.
struct Inputs {
    recipe: Recipe,
    sde: u64,
    prepared_sha256: Option<String>,
    blobs: Option<(BlobSet, LockedBlobs)>,
}

fn gather(
    recipe_dir: &Path,
    blobs_flag: Option<&Path>,
    sde_override: Option<u64>,
    progress: Progress<'_>,
) -> Result<Inputs, BuildError> {
    let recipe = Recipe::load(recipe_dir)?;
    recipe.check_dockerfile()?;
    let sde = match (sde_override, recipe.file.source_date_epoch) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => commit_time(&recipe.dir)?,
    };
    let prepared_sha256 = prepare(&recipe, progress)?;
    let set = BlobSet::locate(blobs_flag);
    let blobs = match blob_hashes(&set, &recipe) {
        Ok(b) => Some((set, b)),
        // Missing blobs leave the build incomplete; unreadable ones are an error.
        Err(BlobError::Missing { .. }) if blobs_flag.is_none() => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Inputs {
        recipe,
        sde,
        prepared_sha256,
        blobs,
    })
}

/// Pins a recipe's inputs and writes `recipe.lock`.
pub fn lock(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    recipe_dir: &Path,
    blobs_flag: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Lock, BuildError> {
    let inputs = gather(recipe_dir, blobs_flag, None, progress)?;
    let work = tempfile::tempdir().map_err(io_err(Path::new("temporary directory")))?;
    let mut bases = BTreeMap::new();
    for (name, spec) in &inputs.recipe.file.bases {
        let ctx = base_context(&inputs, work.path(), None, progress);
        let pin = rt.block_on(base::materialize(docker, name, spec, &ctx))?;
        bases.insert(name.clone(), locked_base(spec, &pin));
    }
    let lock = Lock {
        version: crate::recipe::LOCK_VERSION,
        bases,
        blobs: inputs.blobs.as_ref().map(|(_, b)| b.clone()),
        inputs: LockedInputs {
            prepared_sha256: inputs.prepared_sha256.clone(),
        },
    };
    lock.write(&inputs.recipe)?;
    if inputs.blobs.is_none() {
        progress(
            "No boot blobs found: the lock pins no blob set (PCR0 and PCR1 need one; see `eifctl blobs extract`)",
        );
    }
    Ok(lock)
}

fn locked_base(spec: &base::BaseSpec, pin: &BasePin) -> LockedBase {
    LockedBase {
        spec: spec.digest(),
        image_id: pin.image_id.clone(),
        registry_digest: pin.registry_digest.clone(),
        rootfs_sha256: pin.rootfs_sha256.clone(),
    }
}

fn base_context<'a>(
    inputs: &'a Inputs,
    work: &'a Path,
    expected: Option<&'a BasePin>,
    progress: Progress<'a>,
) -> BaseContext<'a> {
    BaseContext {
        recipe_dir: &inputs.recipe.dir,
        source_date_epoch: inputs.sde,
        arch: inputs.recipe.file.arch,
        work_dir: work,
        expected,
        progress,
    }
}

impl LockedBase {
    fn pin(&self) -> BasePin {
        BasePin {
            image_id: self.image_id.clone(),
            registry_digest: self.registry_digest.clone(),
            rootfs_sha256: self.rootfs_sha256.clone(),
        }
    }
}

/// Builds a recipe into `out/<name>/<version>/`.
pub fn build(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    req: &BuildRequest,
    progress: Progress<'_>,
    on_build_event: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<Built, BuildError> {
    let inputs = gather(
        &req.recipe_dir,
        req.blobs.as_deref(),
        req.source_date_epoch,
        progress,
    )?;
    let recipe = &inputs.recipe;
    let lock = Lock::read(recipe)?;
    let mut changes = lock.base_changes(recipe).0;
    if lock.inputs.prepared_sha256 != inputs.prepared_sha256 {
        changes.push(format!(
            "prepared inputs hash {} (locked {})",
            inputs.prepared_sha256.as_deref().unwrap_or("none"),
            lock.inputs.prepared_sha256.as_deref().unwrap_or("none")
        ));
    }
    let mut notes = Vec::new();
    match (&lock.blobs, &inputs.blobs) {
        (Some(locked), Some((_, found))) => {
            let c = locked.changes(found);
            if !c.0.is_empty() {
                return Err(BuildError::BlobMismatch { changes: c });
            }
        }
        (None, Some(_)) => changes.push("boot blobs are present but not in the lock".into()),
        (_, None) => notes.push(
            "No boot blobs (bzImage/Image, cmdline, init, nsm.ko) were found: the build has the normalized image and PCR2, but PCR0 and PCR1 need the blobs. Get them with `eifctl blobs extract <published.eif> <dir>` or from the aws-nitro-enclaves-cli package, then pass --blobs <dir>. The manifest is marked incomplete and cannot be published.".into(),
        ),
    }
    if !changes.is_empty() {
        return Err(RecipeError::StaleLock {
            dir: recipe.dir.clone(),
            changes: Changes(changes),
        }
        .into());
    }

    let work = tempfile::tempdir().map_err(io_err(Path::new("temporary directory")))?;
    let mut build_args = BTreeMap::new();
    let mut pins = BTreeMap::new();
    let expected: BTreeMap<&String, BasePin> =
        lock.bases.iter().map(|(n, l)| (n, l.pin())).collect();
    for (name, spec) in &recipe.file.bases {
        let ctx = base_context(&inputs, work.path(), expected.get(name), progress);
        let pin = rt.block_on(base::materialize(docker, name, spec, &ctx))?;
        build_args.insert(Recipe::build_arg(name), pin.image_id.clone());
        pins.insert(name.clone(), (spec.digest(), pin));
    }
    build_args.insert("SOURCE_DATE_EPOCH".into(), inputs.sde.to_string());

    let context_path = work.path().join("context.tar");
    let summary = {
        let f = std::fs::File::create(&context_path).map_err(io_err(&context_path))?;
        context::write_context(
            &recipe.context_dir(),
            &recipe.file.dockerfile,
            inputs.sde,
            std::io::BufWriter::new(f),
        )?
    };
    progress(&format!(
        "Building {} {} ({} files in the context)",
        recipe.file.name, recipe.file.version, summary.files
    ));
    let build_tag = format!("eifctl-build/{}:{}", recipe.file.name, recipe.file.version);
    let built_id = rt.block_on(async {
        let context = tokio::fs::File::open(&context_path)
            .await
            .map_err(io_err(&context_path))?;
        docker::build_image(
            docker,
            context,
            &recipe.file.dockerfile,
            &build_args,
            &build_tag,
            req.no_cache,
            on_build_event,
        )
        .await
        .map_err(BuildError::from)
    })?;

    let target = req
        .out_root
        .join(&recipe.file.name)
        .join(&recipe.file.version);
    let staged = StagedDir::new(&target).map_err(io_err(&target))?;
    let archive_name = "image.tar";
    let tag = format!("{}:{}", recipe.file.name, recipe.file.version);
    progress("Normalizing the image (mtimes clamped, one layer, deterministic config)");
    let normalized = normalize::normalize(
        docker,
        rt.handle(),
        &built_id,
        inputs.sde,
        &staged.path().join(archive_name),
        &tag,
    )?;

    let eif_name = format!("{}.eif", recipe.file.name);
    let eif_path = staged.path().join(&eif_name);
    let (measurements, eif) = match &inputs.blobs {
        Some((set, _)) => {
            let native = || -> Result<Measurements, BuildError> {
                let opts = BuildOptions {
                    docker_uri: normalized.id.clone(),
                    output: eif_path.clone(),
                    blobs: set.clone(),
                    name: Some(recipe.file.name.clone()),
                    version: Some(recipe.file.version.clone()),
                    build_time: rfc3339_utc(time_of(inputs.sde)),
                    custom_metadata: serde_json::Value::Null,
                    signer: None,
                };
                Ok(enclave::build(rt, docker, opts, progress)?.measurements)
            };
            let m = match (&req.eif_builder, &req.cross_check) {
                (EifBuilderKind::Native, None) => native()?,
                (EifBuilderKind::NitroCli(cli), None) => {
                    nitro_cli(cli, &normalized.id, &eif_path, set)?
                }
                (_, Some(cli)) => {
                    let ours = native()?;
                    let theirs_path = work.path().join("nitro-cli.eif");
                    let theirs = nitro_cli(cli, &normalized.id, &theirs_path, set)?;
                    compare(&ours, &theirs)?;
                    progress("Cross-check: nitro-cli and eifctl give the same PCR0, PCR1 and PCR2");
                    ours
                }
            };
            let facts = eif_facts(&eif_path, &eif_name)?;
            (m, Some(facts))
        }
        None => {
            progress("Computing PCR2 from the customer ramdisk (no boot blobs)");
            (pcr2_only(rt, docker, &normalized.id)?, None)
        }
    };

    let complete = eif.is_some();
    let mut pcrs = BTreeMap::new();
    if complete {
        pcrs.insert("0".to_string(), measurements.pcr0);
        pcrs.insert("1".to_string(), measurements.pcr1);
    }
    pcrs.insert("2".to_string(), measurements.pcr2);
    let source = source_facts(&recipe.dir)?;
    let manifest = Manifest {
        schema: manifest::SCHEMA.into(),
        name: recipe.file.name.clone(),
        version: recipe.file.version.clone(),
        platform: manifest::PLATFORM.into(),
        arch: recipe.file.arch.to_string(),
        complete,
        pcrs,
        enclave_config: manifest::EnclaveConfig {
            memory_mib: recipe.file.enclave.memory_mib,
            cpu_count: recipe.file.enclave.cpu_count,
            debug_mode: false,
        },
        build_date: manifest::build_date(inputs.sde),
        instance_type: recipe.file.instance_type.clone(),
        docker_image: manifest::DockerImage {
            name: recipe.file.name.clone(),
            tag: recipe.file.version.clone(),
            digest: normalized.id.clone(),
            archive: archive_name.into(),
            archive_sha256: normalized.archive_sha256.clone(),
        },
        eif,
        inputs: manifest::Inputs {
            source,
            bases: pins
                .into_iter()
                .map(|(name, (spec, pin))| {
                    (
                        name,
                        manifest::Base {
                            image_id: pin.image_id,
                            registry_digest: pin.registry_digest,
                            spec,
                        },
                    )
                })
                .collect(),
            blobs: inputs.blobs.as_ref().map(|(_, b)| manifest::Blobs {
                kernel_sha384: b.kernel_sha384.clone(),
                init_sha384: b.init_sha384.clone(),
                nsm_sha384: b.nsm_sha384.clone(),
                cmdline: b.cmdline.clone(),
            }),
            source_date_epoch: inputs.sde,
            context_sha256: summary.sha256.clone(),
            prepared_sha256: inputs.prepared_sha256.clone(),
            eifctl_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    let manifest_path = staged.path().join("pcr-values.json");
    crate::atomic::write_file(&manifest_path, &manifest.to_canonical())
        .map_err(io_err(&manifest_path))?;
    let dir = staged.commit().map_err(io_err(&target))?;
    Ok(Built {
        dir,
        manifest,
        notes,
    })
}

fn time_of(sde: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(sde as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// sha384 of the three blob files and the trimmed cmdline, for the recipe's architecture.
fn blob_hashes(set: &BlobSet, recipe: &Recipe) -> Result<LockedBlobs, BlobError> {
    let hash = |path: PathBuf| -> Result<String, BlobError> {
        let mut f = std::fs::File::open(&path).map_err(|source| BlobError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let mut h = Sha384::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|source| BlobError::Unreadable {
                path: path.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    };
    Ok(LockedBlobs {
        kernel_sha384: hash(set.kernel(recipe.file.arch)?)?,
        init_sha384: hash(set.init()?)?,
        nsm_sha384: hash(set.nsm()?)?,
        cmdline: set.cmdline()?,
    })
}

/// Runs the recipe's preparation steps and hashes what they produced.
fn prepare(recipe: &Recipe, progress: Progress<'_>) -> Result<Option<String>, BuildError> {
    if recipe.file.prepare.is_empty() {
        return Ok(None);
    }
    let ctx = recipe.context_dir();
    let mut all = Sha256::new();
    for step in &recipe.file.prepare {
        match step {
            Prepare::CargoVendor { manifest, into } => {
                progress(&format!("Vendoring the crates of {manifest} into {into}"));
                let out = Process::new("cargo")
                    .args(["vendor", "--locked", "--versioned-dirs", "--manifest-path"])
                    .arg(ctx.join(manifest))
                    .arg(ctx.join(into))
                    .output()
                    .map_err(|e| BuildError::Step {
                        step: format!("cargo vendor ({manifest})"),
                        message: e.to_string(),
                    })?;
                if !out.status.success() {
                    return Err(BuildError::Step {
                        step: format!("cargo vendor --locked ({manifest})"),
                        message: last_line(&out.stderr),
                    });
                }
                all.update(into.as_bytes());
                all.update([0]);
                tree_sha256(&ctx.join(into), &mut all)?;
            }
        }
    }
    Ok(Some(hex::encode(all.finalize())))
}

/// Feeds a directory tree into `h`: every path in byte order with its type, permission bits
/// and content (or link target). Times and owners are left out: they are not content.
fn tree_sha256(dir: &Path, h: &mut Sha256) -> Result<(), BuildError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = rel.join(&name);
            let meta = std::fs::symlink_metadata(root.join(&path))?;
            out.push(path.clone());
            if meta.is_dir() {
                walk(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    walk(dir, Path::new(""), &mut paths).map_err(io_err(dir))?;
    for rel in paths {
        let full = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&full).map_err(io_err(&full))?;
        h.update(rel.as_os_str().as_bytes());
        h.update([0]);
        h.update(format!("{:o}", meta.permissions().mode()).as_bytes());
        h.update([0]);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(io_err(&full))?;
            h.update(target.as_os_str().as_bytes());
        } else if meta.is_file() {
            let mut f = std::fs::File::open(&full).map_err(io_err(&full))?;
            let mut file_hash = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).map_err(io_err(&full))?;
                if n == 0 {
                    break;
                }
                file_hash.update(&buf[..n]);
            }
            h.update(file_hash.finalize());
        }
        h.update([0]);
    }
    Ok(())
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string()
}

/// The commit time of the last commit touching the recipe directory.
fn commit_time(dir: &Path) -> Result<u64, BuildError> {
    let out = git(dir, &["log", "-1", "--format=%ct", "--", "."])?;
    out.trim().parse().map_err(|_| BuildError::Step {
        step: "source_date_epoch".into(),
        message: format!(
            "{}: no commit touches the recipe; commit it or set source_date_epoch in recipe.toml",
            dir.display()
        ),
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String, BuildError> {
    let out = Process::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| BuildError::Step {
            step: format!("git {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::Step {
            step: format!("git {} in {}", args.join(" "), dir.display()),
            message: last_line(&out.stderr),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit, and the tree of the recipe directory as it is on disk.
pub fn source_facts(dir: &Path) -> Result<manifest::Source, BuildError> {
    let tree = tree_hash(dir)?;
    let Ok(revision) = git(dir, &["rev-parse", "HEAD"]) else {
        // Outside any repository (a verifier's copy): no revision to name, and not clean.
        return Ok(manifest::Source {
            path: ".".into(),
            revision: "0".repeat(40),
            tree,
            dirty: true,
        });
    };
    let prefix = git(dir, &["rev-parse", "--show-prefix"])?;
    let prefix = prefix.trim_end_matches('/').to_string();
    let committed = git(dir, &["rev-parse", &format!("HEAD:{prefix}")]).unwrap_or_default();
    Ok(manifest::Source {
        path: if prefix.is_empty() {
            ".".into()
        } else {
            prefix
        },
        revision,
        dirty: tree != committed,
        tree,
    })
}

/// The git tree hash of a directory's content as it is on disk, computed in a throwaway
/// repository so that it does not depend on where the directory is: a verifier's copy hashes
/// like the publisher's checkout. `.gitignore` files inside the directory apply (keep prepared
/// outputs such as `vendor/` listed there).
pub fn tree_hash(dir: &Path) -> Result<String, BuildError> {
    let scratch = tempfile::tempdir().map_err(io_err(Path::new("temporary directory")))?;
    let git_dir = scratch.path().join("git");
    let run = |args: &[&str]| -> Result<String, BuildError> {
        let out = Process::new("git")
            .arg("--git-dir")
            .arg(&git_dir)
            .arg("--work-tree")
            .arg(dir)
            .args([
                "-c",
                "core.excludesFile=/dev/null",
                "-c",
                "core.autocrlf=false",
            ])
            .args(args)
            .output()
            .map_err(|e| BuildError::Step {
                step: "git".into(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(BuildError::Step {
                step: format!("hashing {} with git {}", dir.display(), args.join(" ")),
                message: last_line(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    run(&["init", "-q"])?;
    run(&["add", "-A", "--", "."])?;
    run(&["write-tree"])
}

fn eif_facts(path: &Path, name: &str) -> Result<manifest::EifFacts, BuildError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut s256 = Sha256::new();
    let mut s384 = Sha384::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        s256.update(&buf[..n]);
        s384.update(&buf[..n]);
        size += n as u64;
    }
    Ok(manifest::EifFacts {
        file: name.into(),
        size,
        sha256: hex::encode(s256.finalize()),
        sha384: hex::encode(s384.finalize()),
    })
}

/// PCR2 of an image without boot blobs: the customer ramdisk, encoded into a hasher.
fn pcr2_only(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    image: &str,
) -> Result<Measurements, BuildError> {
    let info = rt.block_on(docker::inspect_image(docker, image))?;
    let command = crate::ramdisk::Command::from_config(
        info.cmd.as_deref(),
        info.entrypoint.as_deref(),
        info.env.as_deref(),
    )
    .map_err(|e| BuildError::Step {
        step: format!("image {image}"),
        message: e.to_string(),
    })?;
    let export = docker::export_image(docker, &info.id, rt.handle())?;
    let mut hasher = HashWriter(Sha384::new());
    crate::ramdisk::write_customer(export, &command, &mut hasher).map_err(|e| {
        BuildError::Step {
            step: "customer ramdisk".into(),
            message: e.to_string(),
        }
    })?;
    let zero = Pcr([0; 48]);
    Ok(Measurements {
        pcr0: zero,
        pcr1: zero,
        pcr2: crate::pcr::extend(&hasher.0.finalize().into()),
        pcr8: None,
    })
}

struct HashWriter(Sha384);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `nitro-cli build-enclave` and reads the measurements from its JSON.
fn nitro_cli(
    cli: &Path,
    image: &str,
    output: &Path,
    blobs: &BlobSet,
) -> Result<Measurements, BuildError> {
    let out = Process::new(cli)
        .args(["build-enclave", "--docker-uri", image, "--output-file"])
        .arg(output)
        .env("NITRO_CLI_BLOBS", &blobs.dir)
        .output()
        .map_err(|e| BuildError::Step {
            step: format!("running {}", cli.display()),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::Step {
            step: format!("{} build-enclave", cli.display()),
            message: last_line(&out.stderr),
        });
    }
    parse_nitro_cli_measurements(&out.stdout).map_err(|message| BuildError::Step {
        step: format!("reading {}'s output", cli.display()),
        message,
    })
}

/// Reads `{"Measurements": {"HashAlgorithm": …, "PCR0": …}}` as nitro-cli prints it; both
/// spellings of the SHA-384 hasher are accepted, anything else is refused.
pub fn parse_nitro_cli_measurements(stdout: &[u8]) -> Result<Measurements, String> {
    let v: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    let m = v.get("Measurements").ok_or("no Measurements object")?;
    let algo = m
        .get("HashAlgorithm")
        .and_then(|a| a.as_str())
        .ok_or("no HashAlgorithm")?;
    if !(algo.starts_with("Sha384 {") || algo.starts_with("Sha512_48 {")) {
        return Err(format!("HashAlgorithm {algo:?} is not SHA-384"));
    }
    let pcr = |k: &str| -> Result<Pcr, String> {
        m.get(k)
            .and_then(|p| p.as_str())
            .ok_or(format!("no {k}"))?
            .parse()
            .map_err(|e: crate::pcr::ParsePcrError| format!("{k}: {e}"))
    };
    Ok(Measurements {
        pcr0: pcr("PCR0")?,
        pcr1: pcr("PCR1")?,
        pcr2: pcr("PCR2")?,
        pcr8: m.get("PCR8").map(|_| pcr("PCR8")).transpose()?,
    })
}

fn compare(ours: &Measurements, theirs: &Measurements) -> Result<(), BuildError> {
    let mut diffs = Vec::new();
    for (name, a, b) in [
        ("PCR0", ours.pcr0, theirs.pcr0),
        ("PCR1", ours.pcr1, theirs.pcr1),
        ("PCR2", ours.pcr2, theirs.pcr2),
    ] {
        if a != b {
            diffs.push(format!("{name} eifctl {a}, nitro-cli {b}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(BuildError::CrossCheck(diffs.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_nitro_clis_hash_algorithm_are_read() {
        let p = Pcr::of_bytes(b"x").to_hex();
        for algo in ["Sha384 { ... }", "Sha512_48 { .. }"] {
            let out = format!(
                r#"{{"Measurements":{{"HashAlgorithm":"{algo}","PCR0":"{p}","PCR1":"{p}","PCR2":"{p}"}}}}"#
            );
            let m = parse_nitro_cli_measurements(out.as_bytes()).unwrap();
            assert_eq!(m.pcr2.to_hex(), p);
            assert!(m.pcr8.is_none());
        }
        let bad = format!(r#"{{"Measurements":{{"HashAlgorithm":"Sha256 {{ }}","PCR0":"{p}"}}}}"#);
        assert!(
            parse_nitro_cli_measurements(bad.as_bytes())
                .unwrap_err()
                .contains("not SHA-384")
        );
        assert!(parse_nitro_cli_measurements(b"Start building...").is_err());
    }
}
