//! A built image made reproducible: its filesystem as one deterministic layer, a
//! deterministic config, and a deterministic `docker save` archive of the two.
//!
//! A Dockerfile build is not reproducible as it comes out of the daemon: every file a step
//! writes carries the time of the build, the layer tars carry them too, and the config
//! records the build's times and container IDs. [`normalize`] takes the built image's
//! filesystem (`docker export` of a container made from it, [`crate::docker::export_image`])
//! and writes it again:
//!
//! - **one layer**, entry by entry in the export's order (Docker walks the filesystem in
//!   lexical order, so the order depends only on the files), in GNU tar format
//!   ([`crate::dtar`]): every mtime clamped to `SOURCE_DATE_EPOCH` (`min(mtime, sde)`: files
//!   the base image shipped with older times keep them, everything the build wrote gets
//!   `sde`); mode (setuid, setgid and sticky included), uid, gid, contents, symlink targets,
//!   hard links (as hard links), device numbers kept; no user or group names, no atime or
//!   ctime, no PAX records. Extended attributes (e.g. file capabilities) are dropped: an
//!   enclave's ramdisk is a cpio archive, which cannot carry them either.
//! - **dropped**: `.dockerenv` only, an empty file that Docker puts in every container, not
//!   part of the image. **Kept**: the other files of the container's init layer
//!   (`etc/hostname`, `etc/hosts`, `etc/resolv.conf`, `etc/mtab`, `dev/`, `dev/console`,
//!   `dev/pts/`, `dev/shm/`, `proc/`, `sys/`): they are empty files, empty directories and
//!   one symlink, the same in every export, so they are deterministic once their mtimes are
//!   clamped; they are mount points that a runtime (Docker, or linuxkit for nitro-cli, which
//!   rewrites them) mounts over, and removing them would change what such a runtime finds.
//! - **the config**: architecture, OS and variant of the built image, `created` = `sde`, the
//!   built image's `Cmd`, `Entrypoint`, `Env`, `WorkingDir`, `User`, `ExposedPorts`,
//!   `Labels`, `StopSignal`, `Volumes` (and `Healthcheck`, `Shell`, `OnBuild`, which also
//!   change how the image runs), nothing host-specific (no hostname, container ID, builder
//!   version); `rootfs` with the one layer; one fixed `history` entry. Serialized with sorted
//!   keys and no whitespace, so the image ID, sha256 of the config, is reproducible.
//! - **the archive**: `<config-hex>.json`, `<layer-hex>/`, `<layer-hex>/layer.tar`,
//!   `manifest.json` in that order, mtimes `sde`, uid and gid 0, GNU headers.
//!
//! The archive is loaded back into the daemon, and the loaded image's ID must be the
//! config's digest. Temporary files live next to `archive_out` and are removed on every
//! path; `archive_out` appears, by rename, only once the archive has loaded.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use bollard::Docker;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tar::EntryType;
use thiserror::Error;
use tokio::runtime::Handle;

use crate::docker::{self, DockerError};
use crate::dtar::{HashingWriter, Meta, TarWriter};

/// The one `history` entry of a normalized image's config.
pub const HISTORY_CREATED_BY: &str =
    "eifctl: the built image's filesystem as one layer, mtimes clamped to SOURCE_DATE_EPOCH";

/// The keys of the built image's `Config` that the normalized image keeps.
pub const KEPT_CONFIG_KEYS: &[&str] = &[
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "Labels",
    "OnBuild",
    "Shell",
    "StopSignal",
    "User",
    "Volumes",
    "WorkingDir",
];

/// The files of a container that are not part of its image, and are dropped.
pub const DROPPED: &[&str] = &[".dockerenv"];

/// A normalized image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The image ID, `sha256:` and the config's digest, as loaded into the daemon.
    pub id: String,
    /// The sha256 (hex) of the archive at `archive_out`.
    pub archive_sha256: String,
    /// The sha256 (hex) of the layer tar: the layer's diff ID without `sha256:`.
    pub layer_sha256: String,
}

/// What can go wrong in normalizing an image.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NormalizeError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the export of image {image} has an entry eifctl cannot carry over: {path}: {reason}")]
    Entry {
        image: String,
        path: String,
        reason: String,
    },
    #[error("SOURCE_DATE_EPOCH {0} is not a time eifctl can write")]
    BadEpoch(u64),
    #[error(
        "the normalized archive loaded as {loaded}, not as {expected}, the digest of its config"
    )]
    IdMismatch { expected: String, loaded: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NormalizeError {
    let what = what.into();
    move |source| NormalizeError::Io { what, source }
}

/// Normalizes the built image `image_id` (see the module's documentation), writes its
/// archive to `archive_out`, loads it tagged `tag`, and returns its ID and digests.
///
/// Blocking: call it from a thread that is not one of `rt`'s workers (`spawn_blocking`, or
/// plain code around `block_on`); `rt` runs the requests to the daemon.
pub fn normalize(
    docker: &Docker,
    rt: &Handle,
    image_id: &str,
    sde: u64,
    archive_out: &Path,
    tag: &str,
) -> Result<Normalized, NormalizeError> {
    let created = rfc3339(sde)?;
    let info = rt.block_on(docker::inspect_image(docker, image_id))?;
    let dir = match archive_out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = |prefix: &str| {
        tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".tar")
            .tempfile_in(&dir)
            .map_err(io_err(format!(
                "creating a temporary file in {}",
                dir.display()
            )))
    };

    // The layer.
    let layer = temp(".eifctl-layer-")?;
    let export = docker::export_image(docker, &info.id, rt)?;
    let (layer_sha256, layer_len) = rewrite_layer(export, layer.as_file(), &info.id, sde)?;

    // The config.
    let config = image_config(&info.inspect, &created, &layer_sha256);
    let config_hex = hex::encode(Sha256::digest(&config));
    let id = format!("sha256:{config_hex}");

    // The archive.
    let archive = temp(".eifctl-image-")?;
    let archive_sha256 = {
        let what = || format!("writing {}", archive.path().display());
        let mut tar = TarWriter::new(HashingWriter::new(BufWriter::new(archive.as_file())));
        let file = |size| Meta {
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: sde,
            size,
            link: None,
            device: None,
        };
        let config_name = format!("{config_hex}.json");
        let layer_dir = format!("{layer_sha256}/");
        let layer_name = format!("{layer_sha256}/layer.tar");
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "Layers": [layer_name],
            "RepoTags": [tag],
        }]))
        .expect("JSON of strings");
        tar.append(
            config_name.as_bytes(),
            &file(config.len() as u64),
            &config[..],
        )
        .map_err(io_err(what()))?;
        let dir_meta = Meta {
            kind: EntryType::Directory,
            mode: 0o755,
            ..file(0)
        };
        tar.append(layer_dir.as_bytes(), &dir_meta, io::empty())
            .map_err(io_err(what()))?;
        let layer_reader = layer
            .reopen()
            .map_err(io_err(format!("reading {}", layer.path().display())))?;
        tar.append(layer_name.as_bytes(), &file(layer_len), layer_reader)
            .map_err(io_err(what()))?;
        tar.append(
            b"manifest.json",
            &file(manifest.len() as u64),
            &manifest[..],
        )
        .map_err(io_err(what()))?;
        let (buffered, sha256, _) = tar.finish().map_err(io_err(what()))?.finish();
        buffered
            .into_inner()
            .map_err(|e| io_err(what())(e.into_error()))?
            .sync_all()
            .map_err(io_err(what()))?;
        sha256
    };
    drop(layer);

    // Load it, from the temporary file: archive_out appears only once it has loaded.
    let reader = archive
        .reopen()
        .map_err(io_err(format!("reading {}", archive.path().display())))?;
    let loaded = rt.block_on(async {
        docker::load_image(docker, tokio::fs::File::from_std(reader)).await?;
        docker::inspect_image(docker, tag).await
    })?;
    if loaded.id != id {
        return Err(NormalizeError::IdMismatch {
            expected: id,
            loaded: loaded.id,
        });
    }
    archive
        .persist(archive_out)
        .map_err(|e| NormalizeError::Io {
            what: format!("renaming the archive to {}", archive_out.display()),
            source: e.error,
        })?;
    Ok(Normalized {
        id,
        archive_sha256,
        layer_sha256,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(sde: u64) -> Result<String, NormalizeError> {
    let t = i64::try_from(sde)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(NormalizeError::BadEpoch(sde))?;
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .map_err(|_| NormalizeError::BadEpoch(sde))
}

/// Rewrites the export's tar stream into the layer at `out`; the layer's sha256 (hex) and
/// length. The export is read to its end, and closed, so that its container is removed.
fn rewrite_layer(
    export: docker::Export,
    out: &File,
    image: &str,
    sde: u64,
) -> Result<(String, u64), NormalizeError> {
    let reading = || format!("reading the export of image {image}");
    let writing = || "writing the normalized layer".to_owned();
    let bad = |path: &[u8], reason: String| NormalizeError::Entry {
        image: image.to_owned(),
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    };
    let mut tar = TarWriter::new(HashingWriter::new(BufWriter::new(out)));
    let mut archive = tar::Archive::new(export);
    for entry in archive.entries().map_err(io_err(reading()))? {
        let mut entry = entry.map_err(io_err(reading()))?;
        let path = entry.path_bytes().into_owned();
        let bare = trim_path(&path);
        if DROPPED.iter().any(|d| d.as_bytes() == bare) {
            continue;
        }
        let header = entry.header().clone();
        let field = |name: &str, r: io::Result<u64>| {
            r.map_err(|e| bad(&path, format!("unreadable {name}: {e}")))
        };
        let mut uid = field("uid", header.uid())?;
        let mut gid = field("gid", header.gid())?;
        let mut mtime = field("mtime", header.mtime())?;
        let mode = header
            .mode()
            .map_err(|e| bad(&path, format!("unreadable mode: {e}")))?;
        // Go's archive/tar moves what does not fit the header into PAX records.
        if let Some(pax) = entry.pax_extensions().map_err(io_err(reading()))? {
            for ext in pax {
                let ext = ext.map_err(io_err(reading()))?;
                let value = || {
                    ext.value()
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match ext.key_bytes() {
                    b"uid" => uid = value().ok_or_else(|| bad(&path, "PAX uid".into()))?,
                    b"gid" => gid = value().ok_or_else(|| bad(&path, "PAX gid".into()))?,
                    // A negative or unreadable time is before any epoch: clamped to 0.
                    b"mtime" => mtime = value().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let kind = header.entry_type();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let device = match kind {
            EntryType::Char | EntryType::Block => {
                let dev = |r: io::Result<Option<u32>>| {
                    r.ok()
                        .flatten()
                        .ok_or_else(|| bad(&path, "no device numbers".into()))
                };
                Some((dev(header.device_major())?, dev(header.device_minor())?))
            }
            _ => None,
        };
        let (kind, size, link) = match kind {
            EntryType::Regular | EntryType::Continuous => (EntryType::Regular, entry.size(), None),
            EntryType::Directory | EntryType::Char | EntryType::Block | EntryType::Fifo => {
                (kind, 0, None)
            }
            EntryType::Symlink | EntryType::Link => match link {
                Some(link) if !link.is_empty() => (kind, 0, Some(link)),
                _ => return Err(bad(&path, "a link without a target".into())),
            },
            other => return Err(bad(&path, format!("entry type {other:?}"))),
        };
        let meta = Meta {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            mtime: mtime.min(sde),
            size,
            link: link.as_deref(),
            device,
        };
        tar.append(&path, &meta, &mut entry)
            .map_err(io_err(writing()))?;
    }
    let (buffered, sha256, len) = tar.finish().map_err(io_err(writing()))?.finish();
    buffered
        .into_inner()
        .map_err(|e| io_err(writing())(e.into_error()))?
        .sync_all()
        .map_err(io_err(writing()))?;

    // The rest of the stream (the tar's padding), then the container's removal.
    let mut export = archive.into_inner();
    io::copy(&mut export, &mut io::sink()).map_err(io_err(reading()))?;
    export.close()?;
    Ok((sha256, len))
}

/// A path without a leading `./` or `/`, nor a trailing `/`.
fn trim_path(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let Some(rest) = p.strip_prefix(b"./").or_else(|| p.strip_prefix(b"/")) {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

/// The normalized image's config, canonical JSON (sorted keys, no whitespace).
fn image_config(inspect: &Value, created: &str, layer_sha256: &str) -> Vec<u8> {
    let mut config = Map::new();
    if let Some(built) = inspect.get("Config").and_then(Value::as_object) {
        for key in KEPT_CONFIG_KEYS {
            match built.get(*key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(value) => {
                    config.insert((*key).to_owned(), value.clone());
                }
            }
        }
    }
    let text = |key: &str| {
        inspect
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut image = Map::new();
    image.insert("architecture".into(), json!(text("Architecture")));
    image.insert("os".into(), json!(text("Os")));
    if let Some(variant) = text("Variant") {
        image.insert("variant".into(), json!(variant));
    }
    image.insert("created".into(), json!(created));
    image.insert("config".into(), Value::Object(config));
    image.insert(
        "rootfs".into(),
        json!({ "type": "layers", "diff_ids": [format!("sha256:{layer_sha256}")] }),
    );
    image.insert(
        "history".into(),
        json!([{ "created": created, "created_by": HISTORY_CREATED_BY }]),
    );
    serde_json::to_vec(&canonical(Value::Object(image))).expect("JSON values serialize")
}

/// A JSON value with every object's keys sorted (serde_json keeps insertion order here).
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200).unwrap(), "2024-01-01T00:00:00Z");
        assert!(rfc3339(u64::MAX).is_err());
    }

    #[test]
    fn config_is_canonical_and_keeps_only_the_image_fields() {
        let inspect = json!({
            "Id": "sha256:x",
            "Architecture": "amd64",
            "Os": "linux",
            "Variant": "",
            "Created": "2025-01-01T01:02:03.456Z",
            "Container": "abc",
            "Config": {
                "Hostname": "abc",
                "WorkingDir": "/data",
                "User": "",
                "Labels": {"z": "1", "a": "2"},
                "Env": ["B=1", "A=2"],
                "Cmd": ["sh"],
                "Entrypoint": null,
                "Image": "sha256:parent",
            },
        });
        let config =
            String::from_utf8(image_config(&inspect, "2024-01-01T00:00:00Z", "ab")).unwrap();
        assert_eq!(
            config,
            r#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["B=1","A=2"],"Labels":{"a":"2","z":"1"},"WorkingDir":"/data"},"created":"2024-01-01T00:00:00Z","history":[{"created":"2024-01-01T00:00:00Z","created_by":"eifctl: the built image's filesystem as one layer, mtimes clamped to SOURCE_DATE_EPOCH"}],"os":"linux","rootfs":{"diff_ids":["sha256:ab"],"type":"layers"}}"#
        );
    }

    #[test]
    fn paths_are_trimmed_for_comparison() {
        assert_eq!(trim_path(b"./.dockerenv"), b".dockerenv");
        assert_eq!(trim_path(b"/etc/"), b"etc");
        assert_eq!(trim_path(b".dockerenv"), b".dockerenv");
    }
}
