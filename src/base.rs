//! The base images a recipe's Dockerfile builds `FROM`, each pinned to one image ID.
//!
//! A recipe is reproducible only if what it builds on is: a tag that moves, or a Debian
//! mirror that moves on, would change the enclave without any change to the recipe. So every
//! base a recipe names in `recipe.toml` resolves to an image ID (the sha256 of the image's
//! config), `recipe.lock` records it, and the Dockerfile gets it as a build arg. A base is
//! one of three kinds:
//!
//! ```toml
//! # A Debian root filesystem made here by mmdebstrap, from a suite and a package list.
//! # variant (default "essential") and mirror (default http://deb.debian.org/debian) may be
//! # left out; hooks names directories of hooks that mmdebstrap ships
//! # (/usr/share/mmdebstrap/hooks/NAME), e.g. "busybox" for a chroot without dash.
//! [bases.builder]
//! mmdebstrap = { suite = "bookworm", packages = ["dpkg", "libc-bin", "busybox-static"], variant = "custom", hooks = ["busybox"], mirror = "http://snapshot.debian.org/archive/debian/20240101T000000Z" }
//!
//! # A `docker save` archive shipped in the recipe directory, pinned by its sha256.
//! [bases.runtime]
//! archive = { path = "base.tar", sha256 = "<64 lower-case hex>" }
//!
//! # An image in a registry, pinned by digest: only a digest names one image for good.
//! [bases.upstream]
//! registry = "debian@sha256:<64 lower-case hex>"
//! ```
//!
//! An mmdebstrap base is reproducible because mmdebstrap's tarball is, for the same package
//! versions, with `SOURCE_DATE_EPOCH` set (every mtime is clamped to it, and mmdebstrap
//! removes the logs, caches and machine IDs that would differ), and because everything
//! eifctl adds around it is fixed: the two files mmdebstrap copies from the host
//! (`/etc/resolv.conf`, `/etc/hostname`) are removed by a customize hook, and the image
//! config holds nothing but the architecture, `SOURCE_DATE_EPOCH`, `PATH` and the layer's
//! hash. The tarball becomes the image's one layer unchanged, so its hash (recorded as
//! [`BasePin::rootfs_sha256`]) tells whether the packages changed when an image ID does not
//! match the lock. Packages change when the mirror does: only a snapshot mirror makes a base
//! rebuildable later.
//!
//! Nothing here holds a root filesystem in memory: mmdebstrap writes it to a file in the
//! work directory, it is hashed and copied into a `docker save` archive on another file, and
//! that file is streamed to `POST /images/load`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::docker::{self, DockerError, ImageInfo};
use crate::eif::Arch;

/// The mirror mmdebstrap uses when a spec names none.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Where mmdebstrap keeps the hook directories it ships, which [`MmdebstrapSpec::hooks`]
/// names.
pub const MMDEBSTRAP_HOOKS: &str = "/usr/share/mmdebstrap/hooks";

/// The `PATH` of an mmdebstrap base's config, and of mmdebstrap itself (which warns when
/// root's lacks the sbin directories): Docker's usual one.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The one history entry of an mmdebstrap base. Fixed, and without the base's name or spec,
/// so that the image ID depends only on the root filesystem, the time and the architecture.
const MMDEBSTRAP_HISTORY: &str = "eifctl: a Debian root filesystem made by mmdebstrap";

/// The bytes read or written at a time when hashing, copying and streaming files.
const CHUNK: usize = 256 << 10;

/// How many of mmdebstrap's last lines an error quotes from.
const TAIL_LINES: usize = 40;

// --- specs -------------------------------------------------------------------------------------

/// A base as `recipe.toml` declares it, under `[bases.NAME]`: one key, naming the kind.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum BaseSpec {
    /// A Debian root filesystem made by mmdebstrap.
    Mmdebstrap(MmdebstrapSpec),
    /// A `docker save` archive in the recipe directory.
    Archive(ArchiveSpec),
    /// A registry reference pinned by digest, `NAME@sha256:<64 hex>`.
    Registry(String),
}

/// `mmdebstrap = { … }`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MmdebstrapSpec {
    /// The Debian suite or code name, e.g. `bookworm`.
    pub suite: String,
    /// Packages to install (`--include`), besides those the variant brings.
    #[serde(default)]
    pub packages: Vec<String>,
    /// mmdebstrap's `--variant`.
    #[serde(default)]
    pub variant: Variant,
    /// The archive URL, e.g. a snapshot
    /// (`http://snapshot.debian.org/archive/debian/20240101T000000Z`); [`DEFAULT_MIRROR`]
    /// when absent. Only this mirror is used: no security or updates suite is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Hook directories that mmdebstrap ships, by name (under [`MMDEBSTRAP_HOOKS`]): a
    /// `custom` variant without dash needs `busybox` to have a shell for maintainer scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
}

/// mmdebstrap's package sets. `custom` installs only [`MmdebstrapSpec::packages`] (which then
/// must include `dpkg`, and `libc-bin` for ldconfig); `essential` is the smallest set that
/// works with any package list.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Custom,
    #[default]
    Essential,
    Apt,
    Required,
    Minbase,
    Buildd,
    Important,
    Standard,
}

impl Variant {
    /// The name mmdebstrap knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Custom => "custom",
            Variant::Essential => "essential",
            Variant::Apt => "apt",
            Variant::Required => "required",
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
            Variant::Important => "important",
            Variant::Standard => "standard",
        }
    }
}

/// `archive = { path = "…", sha256 = "…" }`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// The archive's path, relative to the recipe directory and inside it: a recipe must
    /// carry what it builds on.
    pub path: String,
    /// The sha256 of the archive file, 64 lower-case hex digits.
    pub sha256: String,
}

impl BaseSpec {
    /// The sha256 of the spec as canonical JSON (keys sorted, no whitespace, defaults
    /// written out), in hex: recorded in the lock, it tells whether the spec changed since
    /// the lock's pin was made, however recipe.toml spells it.
    pub fn digest(&self) -> String {
        let value = serde_json::to_value(self).expect("a BaseSpec serializes to JSON");
        let mut text = String::new();
        write_canonical(&value, &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The kind's name, as recipe.toml spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            BaseSpec::Mmdebstrap(_) => "mmdebstrap",
            BaseSpec::Archive(_) => "archive",
            BaseSpec::Registry(_) => "registry",
        }
    }
}

/// JSON with object keys in byte order at every level, and no whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

// --- pins and context --------------------------------------------------------------------------

/// What a base resolved to, as recipe.lock records it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct BasePin {
    /// `sha256:` and the digest of the image's config: what the Dockerfile builds FROM.
    pub image_id: String,
    /// For a registry base, the digest it is pinned by (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_digest: Option<String>,
    /// For an mmdebstrap base, the sha256 (hex) of mmdebstrap's tarball: when the image ID
    /// differs from the lock's, it tells whether the packages did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_sha256: Option<String>,
}

/// Where and for what a base is materialized.
pub struct BaseContext<'a> {
    /// The recipe directory, against which archive paths are resolved.
    pub recipe_dir: &'a Path,
    /// Seconds since the Unix epoch: mmdebstrap's clamp for mtimes, and the image's
    /// `created`.
    pub source_date_epoch: u64,
    /// The enclave's architecture; a base must be of it.
    pub arch: Arch,
    /// Where temporary files go (a root filesystem, an image archive): tens or hundreds of MB.
    pub work_dir: &'a Path,
    /// The lock's pin for this base, if the lock has one for this very spec (same
    /// [`BaseSpec::digest`]); `None` to make the base afresh.
    pub expected: Option<&'a BasePin>,
    /// Gets one line at a time of what is being done, mmdebstrap's output included.
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

// --- errors ------------------------------------------------------------------------------------

/// What can go wrong in materializing a base. Each names the base.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BaseError {
    /// The spec cannot be used as it is.
    #[error("base {name}: {reason}")]
    InvalidSpec { name: String, reason: String },

    /// A tool the base needs is not installed.
    #[error("base {name}: {tool} is not installed: install it (apt-get install {package})")]
    ToolMissing {
        name: String,
        tool: &'static str,
        package: &'static str,
    },

    /// mmdebstrap would have to run programs of another architecture than the host's.
    #[error(
        "base {name}: mmdebstrap makes root filesystems for this host's architecture ({host}) only, not {target}: build {target} recipes on a {target} machine"
    )]
    ForeignArch {
        name: String,
        target: Arch,
        host: String,
    },

    /// mmdebstrap failed; `message` is its last error line.
    #[error("base {name}: mmdebstrap failed ({status}): {message}")]
    Mmdebstrap {
        name: String,
        status: String,
        message: String,
    },

    /// Reading or writing a file failed.
    #[error("base {name}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        #[source]
        source: io::Error,
    },

    /// An archive's hash is not the one its spec pins.
    #[error("base {name}: {path} has sha256 {actual}, but recipe.toml pins {expected}")]
    ArchiveHash {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// An archive is not one image in the `docker save` format.
    #[error("base {name}: {path}: {reason}")]
    ArchiveContents {
        name: String,
        path: PathBuf,
        reason: String,
    },

    /// A registry reference without a digest.
    #[error(
        "base {name}: {reference} is not pinned by digest: write NAME@sha256:<64 hex> (`docker inspect --format '{{{{index .RepoDigests 0}}}}' IMAGE` shows it)"
    )]
    NotPinned { name: String, reference: String },

    /// The Docker daemon refused or failed a request.
    #[error("base {name}: {source}")]
    Docker {
        name: String,
        #[source]
        source: DockerError,
    },

    /// `POST /images/load` failed; `message` is the daemon's, on one line.
    #[error("base {name}: loading the image failed: {message}")]
    Load { name: String, message: String },

    /// The image is of another platform than the enclave.
    #[error("base {name}: image {image_id} is for {found}, but the enclave is {expected}")]
    WrongPlatform {
        name: String,
        image_id: String,
        found: String,
        expected: String,
    },

    /// The base resolved to another image than the lock pins.
    #[error("base {name}: made image {actual}, but recipe.lock pins {expected}: {detail}")]
    Mismatch {
        name: String,
        expected: String,
        actual: String,
        detail: String,
    },
}

// --- materialize -------------------------------------------------------------------------------

/// Makes sure the Docker engine has the base's image, and says which it is.
///
/// When the lock's image is already in the engine it is taken as it is: its ID is the hash of
/// its config, which names its layers by hash, so it is the image the lock pinned and
/// nothing needs making. Otherwise the base is made (or loaded, or pulled); if the lock
/// pinned an image, the result must be it, or [`BaseError::Mismatch`] says how it differs.
pub async fn materialize(
    docker: &Docker,
    name: &str,
    spec: &BaseSpec,
    ctx: &BaseContext<'_>,
) -> Result<BasePin, BaseError> {
    check_name(name)?;
    if let Some(expected) = ctx.expected
        && let Some(info) = present(docker, name, &expected.image_id).await?
    {
        check_platform(name, &info, ctx.arch)?;
        (ctx.progress)(&format!(
            "base {name}: {} is in the Docker engine already",
            expected.image_id
        ));
        return Ok(expected.clone());
    }

    let pin = match spec {
        BaseSpec::Mmdebstrap(spec) => mmdebstrap_base(docker, name, spec, ctx).await?,
        BaseSpec::Archive(spec) => archive_base(docker, name, spec, ctx).await?,
        BaseSpec::Registry(reference) => registry_base(docker, name, reference, ctx).await?,
    };

    if let Some(expected) = ctx.expected
        && expected.image_id != pin.image_id
    {
        return Err(BaseError::Mismatch {
            name: name.to_owned(),
            expected: expected.image_id.clone(),
            actual: pin.image_id.clone(),
            detail: mismatch_detail(spec, expected, &pin),
        });
    }
    (ctx.progress)(&format!("base {name}: {}", pin.image_id));
    Ok(pin)
}

/// What a user needs to tell why a base came out differently.
fn mismatch_detail(spec: &BaseSpec, expected: &BasePin, actual: &BasePin) -> String {
    match spec {
        BaseSpec::Mmdebstrap(_) => {
            let actual_rootfs = actual.rootfs_sha256.as_deref().unwrap_or("unknown");
            match expected.rootfs_sha256.as_deref() {
                Some(locked) if locked == actual_rootfs => format!(
                    "the root filesystem is the same (sha256 {actual_rootfs}), so the image config differs: SOURCE_DATE_EPOCH, the architecture or eifctl's config changed"
                ),
                Some(locked) => format!(
                    "the root filesystem differs (sha256 {actual_rootfs}, locked {locked}): the mirror served other packages or versions (pin a snapshot mirror), or mmdebstrap behaves differently"
                ),
                None => format!(
                    "the root filesystem has sha256 {actual_rootfs}; the lock records none to compare"
                ),
            }
        }
        BaseSpec::Archive(_) => {
            "the archive matches its pinned sha256 but holds another image than the lock's: the spec changed since the lock was written".to_owned()
        }
        BaseSpec::Registry(_) => format!(
            "the registry digest {} resolved to another image (another platform of a multi-platform image?)",
            actual.registry_digest.as_deref().unwrap_or("?")
        ),
    }
}

/// Base names become parts of file names and messages: keep them plain.
fn check_name(name: &str) -> Result<(), BaseError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(BaseError::InvalidSpec {
            name: name.to_owned(),
            reason: "a base's name must be 1 to 64 of A-Z a-z 0-9 _ - . and not start with - or ."
                .to_owned(),
        })
    }
}

/// The engine's image by exactly this ID, if it has it.
async fn present(
    docker: &Docker,
    name: &str,
    image_id: &str,
) -> Result<Option<ImageInfo>, BaseError> {
    if !is_image_id(image_id) {
        return Err(BaseError::InvalidSpec {
            name: name.to_owned(),
            reason: format!("recipe.lock pins {image_id:?}, which is not sha256:<64 hex>"),
        });
    }
    match docker::inspect_image(docker, image_id).await {
        Ok(info) if info.id == image_id => Ok(Some(info)),
        Ok(_) | Err(DockerError::ImageNotFound { .. }) => Ok(None),
        Err(source) => Err(BaseError::Docker {
            name: name.to_owned(),
            source,
        }),
    }
}

fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(is_sha256_hex)
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's (Go's) name of an architecture.
fn go_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    }
}

fn check_platform(name: &str, info: &ImageInfo, arch: Arch) -> Result<(), BaseError> {
    let expected = format!("linux/{}", go_arch(arch));
    let found = format!("{}/{}", info.os, info.architecture);
    if found == expected {
        Ok(())
    } else {
        Err(BaseError::WrongPlatform {
            name: name.to_owned(),
            image_id: info.id.clone(),
            found,
            expected,
        })
    }
}

async fn inspect(docker: &Docker, name: &str, reference: &str) -> Result<ImageInfo, BaseError> {
    docker::inspect_image(docker, reference)
        .await
        .map_err(|source| BaseError::Docker {
            name: name.to_owned(),
            source,
        })
}

fn io_error(name: &str, what: impl Into<String>) -> impl FnOnce(io::Error) -> BaseError {
    let name = name.to_owned();
    let what = what.into();
    move |source| BaseError::Io { name, what, source }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    name: &str,
    what: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, BaseError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(io_error(name, what))
}

// --- registry ----------------------------------------------------------------------------------

async fn registry_base(
    docker: &Docker,
    name: &str,
    reference: &str,
    ctx: &BaseContext<'_>,
) -> Result<BasePin, BaseError> {
    let Some((_, digest)) = reference.rsplit_once("@sha256:") else {
        return Err(BaseError::NotPinned {
            name: name.to_owned(),
            reference: reference.to_owned(),
        });
    };
    let mut progress = |line: &str| (ctx.progress)(&format!("base {name}: {line}"));
    let info = docker::ensure_image_with_progress(docker, reference, &mut progress)
        .await
        .map_err(|source| BaseError::Docker {
            name: name.to_owned(),
            source,
        })?;
    check_platform(name, &info, ctx.arch)?;
    Ok(BasePin {
        image_id: info.id,
        registry_digest: Some(format!("sha256:{digest}")),
        rootfs_sha256: None,
    })
}

// --- archive -----------------------------------------------------------------------------------

async fn archive_base(
    docker: &Docker,
    name: &str,
    spec: &ArchiveSpec,
    ctx: &BaseContext<'_>,
) -> Result<BasePin, BaseError> {
    let invalid = |reason: String| BaseError::InvalidSpec {
        name: name.to_owned(),
        reason,
    };
    let relative = Path::new(&spec.path);
    if spec.path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(format!(
            "archive path {:?} must be relative and inside the recipe directory",
            spec.path
        )));
    }
    if !is_sha256_hex(&spec.sha256) {
        return Err(invalid(format!(
            "archive sha256 {:?} is not 64 lower-case hex digits",
            spec.sha256
        )));
    }
    let path = ctx.recipe_dir.join(relative);

    (ctx.progress)(&format!("base {name}: checking {}", path.display()));
    let file_path = path.clone();
    let actual = blocking(name, &format!("reading {}", path.display()), move || {
        sha256_file(&file_path)
    })
    .await?;
    if actual != spec.sha256 {
        return Err(BaseError::ArchiveHash {
            name: name.to_owned(),
            path,
            expected: spec.sha256.clone(),
            actual,
        });
    }

    let file_path = path.clone();
    let contents = blocking(name, &format!("reading {}", path.display()), move || {
        archive_image_id(&file_path)
    })
    .await?;
    let image_id = contents.map_err(|reason| BaseError::ArchiveContents {
        name: name.to_owned(),
        path: path.clone(),
        reason,
    })?;

    (ctx.progress)(&format!("base {name}: loading {}", path.display()));
    load(docker, name, &path).await?;
    let info = inspect(docker, name, &image_id).await?;
    check_platform(name, &info, ctx.arch)?;
    Ok(BasePin {
        image_id: info.id,
        registry_digest: None,
        rootfs_sha256: None,
    })
}

/// The sha256 of a file, in hex, read a chunk at a time.
fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// One entry of a `docker save` manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

/// The ID of the one image in a `docker save` archive: the sha256 of its config file, which
/// is what the engine names it by once loaded (whatever the config file is called: the
/// classic `<hex>.json` or the OCI layout's `blobs/sha256/<hex>`). `Err` says why the
/// archive is not one image.
fn archive_image_id(path: &Path) -> io::Result<Result<String, String>> {
    let Some(manifest) = read_entry(path, "manifest.json", 1 << 20)? else {
        return Ok(Err(
            "no manifest.json: not a `docker save` archive".to_owned()
        ));
    };
    let entries: Vec<ManifestEntry> = match serde_json::from_slice(&manifest) {
        Ok(entries) => entries,
        Err(e) => {
            return Ok(Err(format!(
                "manifest.json is not a docker save manifest: {e}"
            )));
        }
    };
    let entry = match entries.as_slice() {
        [entry] => entry,
        [] => return Ok(Err("manifest.json lists no image".to_owned())),
        many => {
            return Ok(Err(format!(
                "it holds {} images; a base must be exactly one (docker save one image)",
                many.len()
            )));
        }
    };
    if entry.layers.is_empty() {
        return Ok(Err("its image has no layers".to_owned()));
    }
    let Some(config) = read_entry(path, &entry.config, 16 << 20)? else {
        return Ok(Err(format!(
            "manifest.json names config {}, which is not in the archive",
            entry.config
        )));
    };
    Ok(Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&config))
    )))
}

/// The contents of one entry of a tar file, if it has it and it is at most `limit` bytes.
fn read_entry(path: &Path, wanted: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let wanted = wanted.trim_start_matches("./");
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let entry_path = entry.path_bytes();
        let entry_path = String::from_utf8_lossy(&entry_path);
        if entry_path.trim_start_matches("./") != wanted
            || entry.header().entry_type() != tar::EntryType::Regular
        {
            continue;
        }
        if entry.size() > limit {
            return Err(io::Error::other(format!(
                "{wanted} is larger than {limit} bytes"
            )));
        }
        let mut data = Vec::new();
        entry.take(limit).read_to_end(&mut data)?;
        return Ok(Some(data));
    }
    Ok(None)
}

/// `POST /images/load` with the archive streamed from the file.
async fn load(docker: &Docker, name: &str, path: &Path) -> Result<(), BaseError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(io_error(name, format!("opening {}", path.display())))?;
    let body = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0; CHUNK];
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok::<_, io::Error>(None);
        }
        buffer.truncate(n);
        Ok(Some((Bytes::from(buffer), file)))
    });
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut stream = docker.import_image_stream(options, body, None);
    while let Some(item) = stream.next().await {
        if let Err(error) = item {
            let message = match error {
                BollardError::DockerResponseServerError { message, .. } => message,
                BollardError::DockerStreamError { error } => error,
                other => other.to_string(),
            };
            return Err(BaseError::Load {
                name: name.to_owned(),
                message: message.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
    }
    Ok(())
}

// --- mmdebstrap --------------------------------------------------------------------------------

async fn mmdebstrap_base(
    docker: &Docker,
    name: &str,
    spec: &MmdebstrapSpec,
    ctx: &BaseContext<'_>,
) -> Result<BasePin, BaseError> {
    let host = Arch::host();
    if host != Some(ctx.arch) {
        return Err(BaseError::ForeignArch {
            name: name.to_owned(),
            target: ctx.arch,
            host: std::env::consts::ARCH.to_owned(),
        });
    }
    let args = mmdebstrap_args(name, spec, ctx.arch)?;
    let program =
        find_program("mmdebstrap", std::env::var_os("PATH").as_deref()).ok_or_else(|| {
            BaseError::ToolMissing {
                name: name.to_owned(),
                tool: "mmdebstrap",
                package: "mmdebstrap",
            }
        })?;

    let work = tempfile::Builder::new()
        .prefix(&format!("eifctl-base-{name}-"))
        .tempdir_in(ctx.work_dir)
        .map_err(io_error(
            name,
            format!("making a directory in {}", ctx.work_dir.display()),
        ))?;
    let rootfs = work.path().join("rootfs.tar");
    run_mmdebstrap(name, &program, &args, &rootfs, ctx).await?;

    // The tarball is the layer unchanged, so its hash is the layer's diff ID.
    let archive = work.path().join("image.tar");
    let (rootfs_sha256, config) = {
        let rootfs = rootfs.clone();
        let archive = archive.clone();
        let arch = ctx.arch;
        let epoch = ctx.source_date_epoch;
        blocking(name, "writing the image archive", move || {
            let rootfs_sha256 = sha256_file(&rootfs)?;
            let config = image_config(arch, epoch, &rootfs_sha256)?;
            write_image_archive(&archive, &config, &rootfs, &rootfs_sha256)?;
            Ok((rootfs_sha256, config))
        })
        .await?
    };
    let image_id = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    (ctx.progress)(&format!(
        "base {name}: root filesystem sha256 {rootfs_sha256}; loading it as {image_id}"
    ));
    load(docker, name, &archive).await?;
    let info = inspect(docker, name, &image_id).await?;
    check_platform(name, &info, ctx.arch)?;
    drop(work);
    Ok(BasePin {
        image_id: info.id,
        registry_digest: None,
        rootfs_sha256: Some(rootfs_sha256),
    })
}

/// mmdebstrap's command line: options, then the suite, the target and the mirror.
#[derive(Debug)]
struct Invocation {
    options: Vec<String>,
    suite: String,
    mirror: String,
}

fn mmdebstrap_args(name: &str, spec: &MmdebstrapSpec, arch: Arch) -> Result<Invocation, BaseError> {
    let invalid = |reason: String| BaseError::InvalidSpec {
        name: name.to_owned(),
        reason,
    };
    // Words that reach mmdebstrap's command line or apt's sources: no option look-alikes,
    // separators or whitespace.
    let plain = |word: &str| {
        !word.is_empty()
            && !word.starts_with('-')
            && word.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_' | b':' | b'=')
            })
    };
    if !plain(&spec.suite) {
        return Err(invalid(format!(
            "suite {:?} is not a suite name",
            spec.suite
        )));
    }
    if let Some(package) = spec.packages.iter().find(|p| !plain(p)) {
        return Err(invalid(format!("{package:?} is not a package name")));
    }
    if spec.variant == Variant::Custom && spec.packages.is_empty() {
        return Err(invalid(
            "variant custom installs only the packages listed, and none are".to_owned(),
        ));
    }
    let mirror = spec.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
    if !(mirror.starts_with("http://") || mirror.starts_with("https://"))
        || mirror.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "mirror {mirror:?} is not an http:// or https:// URL"
        )));
    }

    let mut args = vec![
        // root needs no user namespaces; unshare is how anybody else can own files as root.
        format!(
            "--mode={}",
            if running_as_root() { "root" } else { "unshare" }
        ),
        format!("--variant={}", spec.variant.as_str()),
        format!("--architectures={}", go_arch(arch)),
        "--format=tar".to_owned(),
    ];
    if !spec.packages.is_empty() {
        args.push(format!("--include={}", spec.packages.join(",")));
    }
    for hook in &spec.hooks {
        let dir = Path::new(MMDEBSTRAP_HOOKS).join(hook);
        if !plain(hook) || hook.contains(['.', ':', '=']) || !dir.is_dir() {
            return Err(invalid(format!(
                "hooks: {hook:?} is not a hook directory of mmdebstrap's (ls {MMDEBSTRAP_HOOKS})"
            )));
        }
        args.push(format!("--hook-dir={}", dir.display()));
    }
    if mirror.contains("://snapshot.debian.org/") {
        // Snapshots' Release files are past their Valid-Until, which is the point of them.
        args.push("--aptopt=Acquire::Check-Valid-Until \"false\"".to_owned());
    }
    // mmdebstrap copies these two from the host; they would make the image differ by machine.
    args.push(r#"--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname""#.to_owned());
    Ok(Invocation {
        options: args,
        suite: spec.suite.clone(),
        mirror: mirror.to_owned(),
    })
}

/// Whether this process runs as root: /proc/self belongs to the effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The first executable `program` in a `PATH`-like list.
fn find_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs mmdebstrap to write `target`, passing its output on line by line.
async fn run_mmdebstrap(
    name: &str,
    program: &Path,
    args: &Invocation,
    target: &Path,
    ctx: &BaseContext<'_>,
) -> Result<(), BaseError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(&args.options)
        .arg(&args.suite)
        .arg(target)
        .arg(&args.mirror)
        .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch.to_string())
        .env("PATH", BASE_PATH)
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env_remove("APT_CONFIG")
        .env_remove("TMPDIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (ctx.progress)(&format!(
        "base {name}: mmdebstrap {} {} {} {}",
        args.options.join(" "),
        args.suite,
        target.display(),
        args.mirror
    ));
    let mut child = command
        .spawn()
        .map_err(io_error(name, format!("running {}", program.display())))?;

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = std::pin::pin!(futures_util::stream::select(
        tokio_lines(BufReader::new(stdout)),
        tokio_lines(BufReader::new(stderr)),
    ));
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = lines.next().await {
        let line = line.map_err(io_error(name, "reading mmdebstrap's output"))?;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        (ctx.progress)(&format!("base {name}: mmdebstrap: {line}"));
        if tail.len() == TAIL_LINES {
            tail.remove(0);
        }
        tail.push(line.to_owned());
    }
    let status = child
        .wait()
        .await
        .map_err(io_error(name, "waiting for mmdebstrap"))?;
    if status.success() {
        return Ok(());
    }
    // mmdebstrap's errors start with "E: "; the first of the last ones is the cause, the
    // others say that it gave up.
    let message = tail
        .iter()
        .find(|line| line.starts_with("E: ") && !line.contains("mmdebstrap failed to run"))
        .or_else(|| tail.last())
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "no output".to_owned());
    Err(BaseError::Mmdebstrap {
        name: name.to_owned(),
        status: status.to_string(),
        message,
    })
}

fn tokio_lines<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures_util::Stream<Item = io::Result<String>> + Send {
    futures_util::stream::try_unfold(reader.lines(), |mut lines| async move {
        Ok(lines.next_line().await?.map(|line| (line, lines)))
    })
}

/// The config of an mmdebstrap base: nothing that varies but what the image is made of.
fn image_config(arch: Arch, epoch: u64, rootfs_sha256: &str) -> io::Result<Vec<u8>> {
    let created = created(epoch)?;
    let config = json!({
        "architecture": go_arch(arch),
        "os": "linux",
        "created": created,
        "config": { "Env": [format!("PATH={BASE_PATH}")] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{rootfs_sha256}")] },
        "history": [{ "created": created, "created_by": MMDEBSTRAP_HISTORY }],
    });
    serde_json::to_vec(&config).map_err(io::Error::other)
}

/// SOURCE_DATE_EPOCH in RFC 3339, UTC.
fn created(epoch: u64) -> io::Result<String> {
    let seconds = i64::try_from(epoch).map_err(io::Error::other)?;
    let time = time::OffsetDateTime::from_unix_timestamp(seconds).map_err(io::Error::other)?;
    time.format(&time::format_description::well_known::Rfc3339)
        .map_err(io::Error::other)
}

/// A `docker save` archive of one image with one layer, written to `path` with the layer
/// copied from `layer`, a chunk at a time. Untagged: the lock names it by ID, and a tag
/// would be one more thing that could point elsewhere.
fn write_image_archive(
    path: &Path,
    config: &[u8],
    layer: &Path,
    layer_sha256: &str,
) -> io::Result<()> {
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config)));
    let layer_name = format!("{layer_sha256}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": null,
        "Layers": [layer_name],
    }]))
    .map_err(io::Error::other)?;

    let out = io::BufWriter::with_capacity(CHUNK, File::create(path)?);
    let mut builder = tar::Builder::new(out);
    let header = |size: u64, mode: u32, kind: tar::EntryType| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    let mut h = header(config.len() as u64, 0o644, tar::EntryType::Regular);
    builder.append_data(&mut h, &config_name, config)?;
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    builder.append_data(&mut h, format!("{layer_sha256}/"), io::empty())?;
    let layer_file = File::open(layer)?;
    let size = layer_file.metadata()?.len();
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    builder.append_data(
        &mut h,
        &layer_name,
        io::BufReader::with_capacity(CHUNK, layer_file),
    )?;
    let mut h = header(manifest.len() as u64, 0o644, tar::EntryType::Regular);
    builder.append_data(&mut h, "manifest.json", manifest.as_slice())?;
    let mut out = builder.into_inner()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_spelling_but_not_content() {
        let a = BaseSpec::Mmdebstrap(MmdebstrapSpec {
            suite: "bookworm".into(),
            packages: vec!["busybox-static".into()],
            variant: Variant::Essential,
            mirror: None,
            hooks: vec![],
        });
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        if let BaseSpec::Mmdebstrap(spec) = &mut b {
            spec.packages.push("dpkg".into());
        }
        assert_ne!(a.digest(), b.digest());
        let registry = BaseSpec::Registry("x@sha256:00".into());
        assert_eq!(registry.digest().len(), 64);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut out = String::new();
        write_canonical(
            &json!({"b": [1, {"z": "x", "a": null}], "a": true}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":true,"b":[1,{"a":null,"z":"x"}]}"#);
    }

    #[test]
    fn program_search() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            find_program("mmdebstrap", Some(dir.path().as_os_str())),
            None
        );
        assert!(find_program("sh", Some("/bin:/usr/bin".as_ref())).is_some());
        assert_eq!(find_program("sh", None), None);
    }

    #[test]
    fn created_is_rfc3339() {
        assert_eq!(created(1_704_067_200).unwrap(), "2024-01-01T00:00:00Z");
    }

    #[test]
    fn args_refuse_option_lookalikes() {
        let spec = MmdebstrapSpec {
            suite: "bookworm".into(),
            packages: vec!["--hook-dir=/tmp".into()],
            variant: Variant::Essential,
            mirror: None,
            hooks: vec![],
        };
        let e = mmdebstrap_args("b", &spec, Arch::X86_64).unwrap_err();
        assert!(e.to_string().starts_with("base b: "), "{e}");
    }
}
