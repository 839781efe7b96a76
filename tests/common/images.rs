//! Docker images for the tests, made on this machine: no registry is reachable here or in CI,
//! so nothing may be pulled, not even a base image.
//!
//! The base is the host's static busybox (Debian's busybox-static, which scripts/test
//! installs) in a one-layer image written by hand in the `docker save` format and loaded with
//! `POST /images/load`. Loaded that way, an image's ID is the sha256 of its config, so the base
//! has the same ID on every load and every machine with the same busybox, and the build cache
//! of every image built on it survives from one test run to the next. `docker import` would
//! not do: it stamps the config with the time of the import.
//!
//! Every other image is built `FROM` the base with the classic builder (BuildKit's would need
//! a session), with no network and without pulling: Docker 20.10 builds `FROM` a local tag
//! that way.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion, ImportImageOptions};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// The tag of the base image.
pub const BASE_TAG: &str = "eifctl-test/base:busybox";

/// The tag of [`feature_image`].
pub const FEATURE_TAG: &str = "eifctl-test/feature:latest";

/// Where the host's static busybox is.
pub const BUSYBOX: &str = "/bin/busybox";

/// The base's `PATH`, Docker's usual one.
pub const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The applets linked in the base's `/bin`: what RUN steps of the test images use, and a few
/// more for debugging.
const APPLETS: &[&str] = &[
    "[",
    "ash",
    "cat",
    "chmod",
    "cp",
    "dd",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "id",
    "ln",
    "ls",
    "mkdir",
    "mv",
    "printf",
    "rm",
    "rmdir",
    "sed",
    "sh",
    "sha256sum",
    "sleep",
    "stat",
    "tail",
    "test",
    "touch",
    "tr",
    "true",
    "uname",
    "wc",
];

/// The mtime of every entry the tests write into a tar: 2024-01-01T00:00:00Z.
const MTIME: u64 = 1_704_067_200;

/// The `created` time written into the base image's config.
const CREATED: &str = "2024-01-01T00:00:00Z";

/// This host's CPU architecture in Go's terms, which Docker uses.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// What goes into a tar written by [`tar_of`].
#[derive(Clone, Copy)]
pub enum Entry<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
}

/// A deterministic tar: entries in the order given (sort them), fixed mtime, uid and gid 0, no
/// user or group names.
pub fn tar_of(entries: &[(&str, u32, Entry<'_>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        match entry {
            Entry::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .unwrap();
            }
            Entry::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Entry::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// The sha256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The base image's one layer: `/bin/busybox`, its applets as symlinks to it, `/etc` and
/// `/tmp`, as a deterministic tar.
pub fn base_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("reading {BUSYBOX}: {e}: install busybox-static (scripts/test does)")
    });
    let mut entries: Vec<(String, u32, Entry<'_>)> = vec![
        ("bin".into(), 0o755, Entry::Dir),
        ("bin/busybox".into(), 0o755, Entry::File(&busybox)),
        ("etc".into(), 0o755, Entry::Dir),
        ("tmp".into(), 0o1777, Entry::Dir),
    ];
    entries.extend(
        APPLETS
            .iter()
            .map(|applet| (format!("bin/{applet}"), 0o777, Entry::Symlink("busybox"))),
    );
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let borrowed: Vec<(&str, u32, Entry<'_>)> = entries
        .iter()
        .map(|(path, mode, entry)| (path.as_str(), *mode, *entry))
        .collect();
    tar_of(&borrowed)
}

/// The config of an image of `layers` (uncompressed tars), for this host's platform, with
/// the base's `PATH` and `labels` (none for the base itself). The image's ID is `sha256:` and
/// the digest of these bytes.
pub fn image_config(layers: &[&[u8]], labels: &[(&str, &str)]) -> Vec<u8> {
    let mut config = json!({ "Env": [BASE_PATH] });
    if !labels.is_empty() {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        config["Labels"] = serde_json::Value::Object(labels);
    }
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|layer| format!("sha256:{}", sha256_hex(layer)))
        .collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| {
            json!({
                "created": CREATED,
                "created_by": "eifctl tests: the host's static busybox, written by tests/common/images.rs",
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    }))
    .unwrap()
}

/// The base image in the `docker save` format (manifest.json, the config, one layer tar),
/// tagged [`BASE_TAG`], and the ID it loads as: `sha256:` and the digest of its config.
pub fn base_archive() -> (Vec<u8>, String) {
    let layer = base_layer();
    let diff_id = sha256_hex(&layer);
    let config = image_config(&[&layer], &[]);
    let config_hex = sha256_hex(&config);
    let config_name = format!("{config_hex}.json");
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [BASE_TAG],
        "Layers": [layer_name],
    }]))
    .unwrap();

    let archive = tar_of(&[
        (&config_name, 0o644, Entry::File(&config)),
        (&diff_id, 0o755, Entry::Dir),
        (&layer_name, 0o644, Entry::File(&layer)),
        ("manifest.json", 0o644, Entry::File(&manifest)),
    ]);
    (archive, format!("sha256:{config_hex}"))
}

/// Loads a `docker save` archive (`POST /images/load`); panics with the daemon's message if
/// that fails.
pub async fn load_archive(docker: &Docker, archive: Vec<u8>) {
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut stream = docker.import_image(options, bollard::body_full(archive.into()), None);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            panic!("loading an image archive: {e}");
        }
    }
}

/// The ID an image reference resolves to.
pub async fn image_id(docker: &Docker, reference: &str) -> String {
    let image = docker
        .inspect_image(reference)
        .await
        .unwrap_or_else(|e| panic!("inspecting {reference}: {e}"));
    image.id.expect("an image ID")
}

static BASE: OnceCell<String> = OnceCell::const_new();

/// The base image, loaded (once per test process) and tagged [`BASE_TAG`]; its ID.
pub async fn base_image(docker: &Docker) -> String {
    BASE.get_or_init(|| async {
        let (archive, id) = base_archive();
        load_archive(docker, archive).await;
        let loaded = image_id(docker, BASE_TAG).await;
        assert_eq!(
            loaded, id,
            "{BASE_TAG} loaded with another ID than its config's digest"
        );
        id
    })
    .await
    .clone()
}

/// Builds an image with the classic builder from `dockerfile` and a context made in memory
/// (`(path, contents, mode)` each), tags it `tag`, and returns its ID. No network, no pull,
/// intermediate containers removed. Panics with the failing step and the daemon's message.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    context: &[(&str, &[u8], u32)],
) -> String {
    let mut entries: Vec<(&str, u32, Entry<'_>)> =
        vec![("Dockerfile", 0o644, Entry::File(dockerfile.as_bytes()))];
    entries.extend(
        context
            .iter()
            .map(|(path, data, mode)| (*path, *mode, Entry::File(data))),
    );
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let context = tar_of(&entries);

    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.into()),
        // Not pulling is what lets FROM name an image that exists only here.
        pull: None,
        rm: true,
        forcerm: true,
        networkmode: Some("none".into()),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut output = String::new();
    let mut id = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    output.push_str(&text);
                }
                if let Some(aux) = info.aux.and_then(|aux| aux.id) {
                    id = Some(aux);
                }
            }
            Err(e) => {
                let step = output
                    .lines()
                    .rev()
                    .find(|line| line.starts_with("Step "))
                    .unwrap_or("(before the first step)");
                panic!("building {tag} failed at {step}: {e}\n--- build output ---\n{output}");
            }
        }
    }
    match id {
        Some(id) => id,
        None => image_id(docker, tag).await,
    }
}

/// The Dockerfile of [`feature_image`].
pub const FEATURE_DOCKERFILE: &str = r#"FROM eifctl-test/base:busybox
ENV GREETING="hello world" EIFCTL_TEST=1
ENV LANG=C.UTF-8
COPY hello.txt /etc/hello.txt
COPY tool.sh /usr/local/bin/tool.sh
RUN mkdir -p /data/keep /data/opaque /empty \
 && echo keep > /data/keep/file \
 && ln /data/keep/file /data/keep/file-hardlink \
 && echo 'to be deleted' > /data/deleted \
 && echo old > /data/opaque/old \
 && cp /usr/local/bin/tool.sh /usr/local/bin/suid-tool \
 && chmod 4755 /usr/local/bin/suid-tool \
 && ln /usr/local/bin/suid-tool /usr/local/bin/suid-tool-hardlink \
 && ln -s ../etc/hello.txt /data/relative-link \
 && ln -s /etc/hello.txt /data/absolute-link
RUN rm /data/deleted \
 && rm -r /data/opaque \
 && mkdir /data/opaque \
 && echo new > /data/opaque/new
WORKDIR /data
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /etc/hello.txt; env"]
"#;

/// The contents of `/etc/hello.txt` in [`feature_image`].
pub const HELLO: &[u8] = b"hello from the build context\n";

/// The contents of `/usr/local/bin/tool.sh` (and of the setuid copy) in [`feature_image`].
pub const TOOL: &[u8] = b"#!/bin/sh\necho tool\n";

static FEATURE: OnceCell<String> = OnceCell::const_new();

/// An image with what a tar-to-ramdisk conversion must get right ([`FEATURE_DOCKERFILE`]):
/// several layers; a file made in one layer and deleted in the next (a whiteout in the layer,
/// absent from the export); a directory deleted and made again (an opaque directory); hard
/// links, one of them to a setuid file; relative and absolute symlinks; an empty directory;
/// several ENV, WORKDIR, ENTRYPOINT and CMD. Built once per test process; its ID.
pub async fn feature_image(docker: &Docker) -> String {
    FEATURE
        .get_or_init(|| async {
            base_image(docker).await;
            build_image(
                docker,
                FEATURE_TAG,
                FEATURE_DOCKERFILE,
                &[("hello.txt", HELLO, 0o644), ("tool.sh", TOOL, 0o755)],
            )
            .await
        })
        .await
        .clone()
}

/// An image whose one added file, `/big`, holds `bytes` random bytes, tagged
/// `eifctl-test/large:<bytes>`; its ID. The file is made by a RUN step, so it never passes
/// through the test's memory, and the build cache keeps it from one run to the next.
pub async fn large_image(docker: &Docker, bytes: u64) -> String {
    base_image(docker).await;
    build_image(
        docker,
        &format!("eifctl-test/large:{bytes}"),
        &format!("FROM {BASE_TAG}\nRUN head -c {bytes} /dev/urandom > /big\n"),
        &[],
    )
    .await
}

/// What a tar's entries are, by path (without a leading `./` or `/`, nor a trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub kind: tar::EntryType,
    pub mode: u32,
    /// A link's target: a symlink's, or the path a hard link names.
    pub link: Option<String>,
    pub size: u64,
    /// The file's contents, for regular files of at most 64 KiB.
    pub data: Option<Vec<u8>>,
}

/// Reads a tar stream to its end and lists its entries, in order.
pub fn list_tar(reader: impl std::io::Read) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(reader);
    let mut list = Vec::new();
    for entry in archive.entries().expect("a tar stream") {
        let mut entry = entry.expect("a tar entry");
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().expect("a mode");
        let size = header.size().expect("a size");
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let data = (kind == tar::EntryType::Regular && size <= 64 << 10).then(|| {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("an entry's data");
            data
        });
        list.push((
            path,
            TarEntry {
                kind,
                mode,
                link,
                size,
                data,
            },
        ));
    }
    list
}

/// [`list_tar`] as a map.
pub fn tar_map(list: Vec<(String, TarEntry)>) -> HashMap<String, TarEntry> {
    list.into_iter().collect()
}
