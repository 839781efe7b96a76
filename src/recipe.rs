//! Recipes: what to build (`recipe.toml`) and what it was pinned to (`recipe.lock`).
//!
//! A recipe names every input that can change the image: the Dockerfile and its context, the
//! base images (each pinned by content), the boot blobs, the inputs prepared on the host (such as
//! vendored crates) and the time stamped into files. The lock records their content hashes, so a
//! build on another day or machine either uses exactly the same inputs or says which one moved.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::BaseSpec;
use crate::eif::Arch;

/// File names inside a recipe directory.
pub const RECIPE_FILE: &str = "recipe.toml";
pub const LOCK_FILE: &str = "recipe.lock";

/// `recipe.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    pub name: String,
    pub version: String,
    /// Target architecture of the enclave image.
    #[serde(default = "default_arch")]
    pub arch: Arch,
    /// The Dockerfile, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// The build context, relative to the recipe directory.
    #[serde(default = "default_context")]
    pub context: String,
    /// Seconds since the epoch stamped into files and metadata; default: the commit time of
    /// the recipe directory.
    pub source_date_epoch: Option<u64>,
    /// The parent instance type the release recommends (informational, carried to the manifest).
    pub instance_type: Option<String>,
    pub enclave: EnclaveConfig,
    /// Named base images; each reaches the Dockerfile as the build arg of its name in upper case.
    #[serde(default)]
    pub bases: BTreeMap<String, BaseSpec>,
    /// Inputs prepared on the host before the build, so the build itself needs no network.
    #[serde(default)]
    pub prepare: Vec<Prepare>,
}

fn default_arch() -> Arch {
    Arch::X86_64
}

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

fn default_context() -> String {
    ".".into()
}

/// The enclave resources a release publishes with its measurements.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    pub memory_mib: u64,
    pub cpu_count: u64,
}

/// A preparation step run on the host.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Prepare {
    /// `cargo vendor --locked` of a manifest in the context into a directory of the context.
    CargoVendor { manifest: String, into: String },
}

/// A recipe read from disk, with its directory.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub dir: PathBuf,
    pub file: RecipeFile,
}

/// Why a recipe or its lock cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Dockerfile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no lock: run `eifctl lock {}` and commit {LOCK_FILE}", dir.display(), dir.display())]
    NoLock { dir: PathBuf },
    #[error("{}: stale lock: {changes}; run `eifctl lock {}` to re-lock (and review the change)", dir.display(), dir.display())]
    StaleLock { dir: PathBuf, changes: Changes },
}

/// What differs between a lock and the recipe or inputs it should describe.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes(pub Vec<String>);

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl Recipe {
    /// Reads and checks `dir/recipe.toml`.
    pub fn load(dir: &Path) -> Result<Recipe, RecipeError> {
        let path = dir.join(RECIPE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| RecipeError::Io {
            path: path.clone(),
            source,
        })?;
        let file: RecipeFile = toml::from_str(&text).map_err(|e| RecipeError::Invalid {
            path: path.clone(),
            message: one_line(&e.to_string()),
        })?;
        let invalid = |message: String| RecipeError::Invalid {
            path: path.clone(),
            message,
        };
        if file.name.is_empty() || !file.name.chars().all(is_name_char) {
            return Err(invalid(format!(
                "name {:?}: use letters, digits, '.', '_' and '-'",
                file.name
            )));
        }
        if file.version.is_empty() || !file.version.chars().all(is_name_char) {
            return Err(invalid(format!(
                "version {:?}: use letters, digits, '.', '_' and '-'",
                file.version
            )));
        }
        for name in file.bases.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(format!(
                    "bases.{name}: base names use letters, digits, '_' and '-'"
                )));
            }
        }
        if file.enclave.memory_mib == 0 || file.enclave.cpu_count == 0 {
            return Err(invalid(
                "enclave: memory_mib and cpu_count must be positive".into(),
            ));
        }
        for p in [&file.context, &file.dockerfile] {
            if Path::new(p).is_absolute() || p.split('/').any(|c| c == "..") {
                return Err(invalid(format!(
                    "{p:?}: paths stay inside the recipe directory"
                )));
            }
        }
        Ok(Recipe {
            dir: dir.to_path_buf(),
            file,
        })
    }

    pub fn context_dir(&self) -> PathBuf {
        self.dir.join(&self.file.context)
    }

    pub fn dockerfile_path(&self) -> PathBuf {
        self.context_dir().join(&self.file.dockerfile)
    }

    /// The build arg through which base `name` reaches the Dockerfile.
    pub fn build_arg(name: &str) -> String {
        name.to_ascii_uppercase().replace('-', "_")
    }

    /// Checks that every `FROM` of the Dockerfile is pinned: `scratch`, an earlier stage, a
    /// named base passed as a build arg (declared with `ARG` before it), or `@sha256:`.
    pub fn check_dockerfile(&self) -> Result<(), RecipeError> {
        let path = self.dockerfile_path();
        let text = std::fs::read_to_string(&path).map_err(|source| RecipeError::Io {
            path: path.clone(),
            source,
        })?;
        let base_args: Vec<String> = self.file.bases.keys().map(|n| Self::build_arg(n)).collect();
        check_from_lines(&path, &text, &base_args)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The drift guard on a Dockerfile's text; see [`Recipe::check_dockerfile`].
pub fn check_from_lines(path: &Path, text: &str, base_args: &[String]) -> Result<(), RecipeError> {
    let mut stages: Vec<String> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let mut froms = 0;
    for (line_no, line) in logical_lines(text) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        let err = |message: String| RecipeError::Dockerfile {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" if froms == 0 => {
                for w in words {
                    declared.push(w.split('=').next().unwrap_or(w).to_string());
                }
            }
            "FROM" => {
                froms += 1;
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let Some(image) = rest.first() else {
                    return Err(err("FROM without an image".into()));
                };
                let image = *image;
                let pinned = if image.eq_ignore_ascii_case("scratch") {
                    true
                } else if let Some(arg) = arg_reference(image) {
                    if !base_args.iter().any(|a| a == arg) {
                        return Err(err(format!(
                            "FROM {image}: {arg} is not a base of this recipe (declare it under [bases] in recipe.toml)"
                        )));
                    }
                    if !declared.iter().any(|a| a == arg) {
                        return Err(err(format!(
                            "FROM {image}: declare `ARG {arg}` before the first FROM so the pinned image ID reaches it"
                        )));
                    }
                    true
                } else {
                    stages.iter().any(|s| s.eq_ignore_ascii_case(image)) || is_digest_pinned(image)
                };
                if !pinned {
                    return Err(err(format!(
                        "FROM {image} is not pinned: use a named base (ARG NAME, then FROM ${{NAME}}), an earlier stage, scratch, or name@sha256:<digest>"
                    )));
                }
                if rest.len() >= 3 && rest[1].eq_ignore_ascii_case("AS") {
                    stages.push(rest[2].to_string());
                }
            }
            _ => {}
        }
    }
    if froms == 0 {
        return Err(RecipeError::Dockerfile {
            path: path.to_path_buf(),
            line: 1,
            message: "no FROM instruction".into(),
        });
    }
    Ok(())
}

/// `${NAME}` or `$NAME` as a whole image reference.
fn arg_reference(image: &str) -> Option<&str> {
    let inner = image
        .strip_prefix("${")
        .and_then(|s| s.strip_suffix('}'))
        .or_else(|| image.strip_prefix('$'))?;
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(inner)
}

fn is_digest_pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(name, hex)| {
        !name.is_empty() && hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// Joins continuation lines (trailing `\`) and drops comments; yields (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        if current.is_empty() {
            start = i + 1;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push((start, std::mem::take(&mut current)));
                }
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// `recipe.lock`: the content pins of a recipe's inputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The lock format.
    pub version: u32,
    #[serde(default)]
    pub bases: BTreeMap<String, LockedBase>,
    /// The boot blobs PCR0 and PCR1 were computed with, when the locker had them.
    pub blobs: Option<LockedBlobs>,
    #[serde(default)]
    pub inputs: LockedInputs,
}

/// One base: its spec (to notice edits) and the image it resolved to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedBase {
    /// Digest of the spec in recipe.toml.
    pub spec: String,
    /// The image ID: sha256 of the image config, i.e. its content.
    pub image_id: String,
    pub registry_digest: Option<String>,
    /// For Debian bases: sha256 of the root filesystem tarball, to explain a mismatch.
    pub rootfs_sha256: Option<String>,
}

/// The boot blob set by content.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedBlobs {
    pub kernel_sha384: String,
    pub init_sha384: String,
    pub nsm_sha384: String,
    /// The command line as measured (trimmed).
    pub cmdline: String,
}

/// Hashes of what the host prepared.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedInputs {
    /// sha256 over the prepared trees (see [`crate::recipe::Prepare`]), if any.
    pub prepared_sha256: Option<String>,
}

/// The lock format this version of eifctl writes.
pub const LOCK_VERSION: u32 = 1;

impl Lock {
    pub fn read(recipe: &Recipe) -> Result<Lock, RecipeError> {
        let path = recipe.dir.join(LOCK_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecipeError::NoLock {
                    dir: recipe.dir.clone(),
                });
            }
            Err(source) => return Err(RecipeError::Io { path, source }),
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| RecipeError::Invalid {
            path: path.clone(),
            message: one_line(&e.to_string()),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(RecipeError::Invalid {
                path,
                message: format!(
                    "lock version {} (this eifctl reads {LOCK_VERSION}); re-lock",
                    lock.version
                ),
            });
        }
        Ok(lock)
    }

    /// The lock as written: a header comment, then TOML with sorted tables.
    pub fn to_text(&self) -> String {
        format!(
            "# Written by `eifctl lock`: the content pins of this recipe's inputs. Do not edit.\n{}",
            toml::to_string(self).expect("the lock is plain data")
        )
    }

    /// Writes `dir/recipe.lock` atomically.
    pub fn write(&self, recipe: &Recipe) -> Result<(), RecipeError> {
        let path = recipe.dir.join(LOCK_FILE);
        crate::atomic::write_file(&path, self.to_text().as_bytes())
            .map_err(|source| RecipeError::Io { path, source })
    }

    /// What in the recipe's bases no longer matches the lock (names and spec digests only;
    /// content is checked when the bases are materialized).
    pub fn base_changes(&self, recipe: &Recipe) -> Changes {
        let mut changes = Vec::new();
        for (name, spec) in &recipe.file.bases {
            match self.bases.get(name) {
                None => changes.push(format!("base {name} is not in the lock")),
                Some(locked) if locked.spec != spec.digest() => {
                    changes.push(format!("base {name} changed in recipe.toml"))
                }
                Some(_) => {}
            }
        }
        for name in self.bases.keys() {
            if !recipe.file.bases.contains_key(name) {
                changes.push(format!(
                    "base {name} is locked but no longer in recipe.toml"
                ));
            }
        }
        Changes(changes)
    }
}

impl LockedBlobs {
    /// What differs between these (locked) blobs and `other` (found), by blob.
    pub fn changes(&self, other: &LockedBlobs) -> Changes {
        let mut c = Vec::new();
        let mut cmp = |what: &str, a: &str, b: &str| {
            if a != b {
                c.push(format!("{what}: locked {a}, found {b}"));
            }
        };
        cmp("kernel sha384", &self.kernel_sha384, &other.kernel_sha384);
        cmp("init sha384", &self.init_sha384, &other.init_sha384);
        cmp("nsm.ko sha384", &self.nsm_sha384, &other.nsm_sha384);
        cmp("cmdline", &self.cmdline, &other.cmdline);
        Changes(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, bases: &[&str]) -> Result<(), String> {
        let args: Vec<String> = bases.iter().map(|s| s.to_string()).collect();
        check_from_lines(Path::new("Dockerfile"), text, &args).map_err(|e| e.to_string())
    }

    #[test]
    fn pinned_froms_pass_the_drift_guard() {
        let ok = "ARG BUILDER\nARG RUNTIME=unused\n# comment\nFROM ${BUILDER} AS build\nRUN make\nFROM $RUNTIME\nCOPY --from=build /a /a\nFROM build AS again\nFROM scratch\nFROM debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        assert_eq!(check(ok, &["BUILDER", "RUNTIME"]), Ok(()));
        assert_eq!(check("FROM --platform=linux/amd64 scratch\n", &[]), Ok(()));
    }

    #[test]
    fn unpinned_froms_are_named_by_file_and_line() {
        let e = check(
            "ARG BUILDER\nFROM ${BUILDER}\n\nFROM debian:bookworm\n",
            &["BUILDER"],
        )
        .unwrap_err();
        assert!(
            e.starts_with("Dockerfile:4: FROM debian:bookworm is not pinned"),
            "{e}"
        );
        let e = check("FROM \\\n  alpine\n", &[]).unwrap_err();
        assert!(
            e.starts_with("Dockerfile:1: FROM alpine is not pinned"),
            "{e}"
        );
        let e = check("FROM debian@sha256:abc\n", &[]).unwrap_err();
        assert!(e.contains("not pinned"), "{e}");
    }

    #[test]
    fn base_args_must_be_recipe_bases_declared_before_the_first_from() {
        let e = check("ARG OTHER\nFROM ${OTHER}\n", &["BUILDER"]).unwrap_err();
        assert!(e.contains("OTHER is not a base of this recipe"), "{e}");
        let e = check("FROM ${BUILDER}\n", &["BUILDER"]).unwrap_err();
        assert!(e.contains("declare `ARG BUILDER`"), "{e}");
        assert!(check("RUN true\n", &[]).unwrap_err().contains("no FROM"));
    }

    #[test]
    fn build_args_are_upper_case_names() {
        assert_eq!(Recipe::build_arg("rust-builder"), "RUST_BUILDER");
    }
}
