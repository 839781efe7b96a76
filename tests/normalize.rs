//! The pieces of `eifctl build`: the deterministic build context, the Dockerfile build, and
//! the normalization of the built image, against the real daemon.

mod common;

use common::runtime;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use eifctl::context::{ContextError, write_context};
use eifctl::docker::{self, BuildEvent, DockerError};
use eifctl::normalize::{Normalized, normalize};

use common::images;

/// SOURCE_DATE_EPOCH for these tests: 2024-01-01T00:00:00Z, earlier than any checkout.
const SDE: u64 = 1_704_067_200;

// --- context -----------------------------------------------------------------------------

/// One entry of a tar as these tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn list(reader: impl Read) -> Vec<Listed> {
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            if h.entry_type() == tar::EntryType::Regular && e.size() <= 1 << 20 {
                e.read_to_end(&mut data).unwrap();
            }
            Listed {
                path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
                data,
            }
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// A recipe tree, its files made in the order given (or reversed), with mtimes `mtime`.
fn make_tree(dir: &Path, reversed: bool, mtime: u64) {
    let mut files: Vec<(&str, &[u8])> = vec![
        ("Dockerfile", b"FROM scratch\n"),
        (
            ".dockerignore",
            b"# everything but the sources\nDockerfile\n**/*.log\nsecret\ndocs\n!docs/keep.md\n",
        ),
        ("src/main.rs", b"fn main() {}\n"),
        ("src/a.b", b"dot sorts before slash\n"),
        ("src/a/inner", b"inner\n"),
        ("src/debug.log", b"ignored\n"),
        ("debug.log", b"ignored\n"),
        ("secret", b"ignored\n"),
        ("docs/keep.md", b"kept by an exception\n"),
        ("docs/other.md", b"ignored\n"),
        (".git/HEAD", b"ref: refs/heads/main\n"),
        ("out/enclave.eif", b"output\n"),
        ("sub/out/kept", b"only the top-level out is left out\n"),
    ];
    if reversed {
        files.reverse();
    }
    for (path, data) in &files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    std::os::unix::fs::symlink("main.rs", dir.join("src/link")).unwrap();
    fs::set_permissions(
        dir.join("src/main.rs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    for (path, _) in &files {
        set_mtime(&dir.join(path), mtime + path.len() as u64);
    }
    for d in ["src", "src/a", "docs", "sub", "sub/out", ""] {
        set_mtime(&dir.join(d), mtime + 7);
    }
}

#[test]
fn contexts_are_sorted_clamped_filtered_and_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    make_tree(a.path(), false, now - 1000);
    make_tree(b.path(), true, now - 500_000);

    let mut tar_a = Vec::new();
    let sum_a = write_context(a.path(), "Dockerfile", SDE, &mut tar_a).unwrap();
    let mut tar_b = Vec::new();
    let sum_b = write_context(b.path(), "Dockerfile", SDE, &mut tar_b).unwrap();
    assert!(
        tar_a == tar_b,
        "two copies of a tree give different contexts"
    );
    assert_eq!(sum_a, sum_b);
    assert_eq!(sum_a.bytes, tar_a.len() as u64);
    assert_eq!(sum_a.sha256, images::sha256_hex(&tar_a));
    assert_eq!(
        eifctl::context::context_digest(a.path(), "Dockerfile", SDE).unwrap(),
        sum_a.sha256
    );

    let listed = list(&tar_a[..]);
    let paths: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".dockerignore",
            "Dockerfile",
            "docs/",
            "docs/keep.md",
            "src/",
            // Bytewise by path: "src/a" < "src/a.b" < "src/a/inner" ('.' < '/').
            "src/a/",
            "src/a.b",
            "src/a/inner",
            "src/link",
            "src/main.rs",
            "sub/",
            "sub/out/",
            "sub/out/kept",
        ]
    );
    assert_eq!(sum_a.entries, paths.len() as u64);
    assert_eq!(sum_a.files, 7);
    for e in &listed {
        assert_eq!(e.mtime, SDE, "{}", e.path);
        assert_eq!((e.uid, e.gid), (0, 0), "{}", e.path);
    }
    let by_path: HashMap<&str, &Listed> = listed.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(by_path["src/main.rs"].mode, 0o750);
    assert_eq!(by_path["src/main.rs"].data, b"fn main() {}\n");
    assert_eq!(by_path["src/link"].kind, tar::EntryType::Symlink);
    assert_eq!(by_path["src/link"].link.as_deref(), Some("main.rs"));
    assert_eq!(by_path["src/"].kind, tar::EntryType::Directory);
    // No user or group names.
    let mut archive = tar::Archive::new(&tar_a[..]);
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
    }
}

#[test]
fn mtimes_older_than_the_epoch_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    set_mtime(&dir.path().join("Dockerfile"), SDE - 3600);
    let mut tar = Vec::new();
    write_context(dir.path(), "Dockerfile", SDE, &mut tar).unwrap();
    assert_eq!(list(&tar[..])[0].mtime, SDE - 3600);
}

#[test]
fn special_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    fs::create_dir(dir.path().join("run")).unwrap();
    let socket = dir.path().join("run/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    match write_context(dir.path(), "Dockerfile", SDE, std::io::sink()) {
        Err(ContextError::SpecialFile { path, kind }) => {
            assert_eq!(path, socket);
            assert_eq!(kind, "socket");
            let text = ContextError::SpecialFile { path, kind }.to_string();
            assert!(text.contains("run/app.sock is a socket"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // Ignored, it is not looked at.
    fs::write(dir.path().join(".dockerignore"), "run\n").unwrap();
    write_context(dir.path(), "Dockerfile", SDE, std::io::sink()).unwrap();
}

// --- build -------------------------------------------------------------------------------

/// Builds `dockerfile` with `files` as the rest of the context; the events, and the result.
async fn build(
    docker: &Docker,
    dockerfile: &str,
    files: &[(&str, &[u8])],
    args: &[(&str, &str)],
    tag: &str,
    no_cache: bool,
) -> (Result<String, DockerError>, Vec<BuildEvent>) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (path, data) in files {
        fs::write(dir.path().join(path), data).unwrap();
    }
    let mut context = tempfile::tempfile().unwrap();
    write_context(dir.path(), "Dockerfile", SDE, &mut context).unwrap();
    std::io::Seek::rewind(&mut context).unwrap();
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut events = Vec::new();
    let result = docker::build_image(
        docker,
        tokio::fs::File::from_std(context),
        "Dockerfile",
        &args,
        tag,
        no_cache,
        &mut |e| events.push(e),
    )
    .await;
    (result, events)
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_from_the_base_by_tag_and_by_pinned_id() {
    let docker = docker::connect().await.unwrap();
    let base = images::base_image(&docker).await;

    let (id, events) = build(
        &docker,
        "FROM eifctl-test/base:busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n",
        &[("hello.txt", b"hello\n")],
        &[],
        "eifctl-test/build:tag",
        false,
    )
    .await;
    let id = id.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(images::image_id(&docker, "eifctl-test/build:tag").await, id);
    let steps: Vec<(u32, u32, String)> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step { n, m, text } => Some((*n, *m, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, 3, "FROM eifctl-test/base:busybox".to_owned()),
            (2, 3, "COPY hello.txt /hello.txt".to_owned()),
            (3, 3, "RUN cat /hello.txt".to_owned()),
        ]
    );

    let (pinned, events) = build(
        &docker,
        "ARG BASE\nFROM ${BASE}\nRUN echo pinned > /pinned\n",
        &[],
        &[("BASE", &base)],
        "eifctl-test/build:pinned",
        true,
    )
    .await;
    let pinned = pinned.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let inspect = docker::inspect_image(&docker, &pinned).await.unwrap();
    assert_eq!(inspect.id, pinned);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Step { n: 2, m: 3, text } if text == "FROM ${BASE}")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_is_named_with_the_daemons_message() {
    let docker = docker::connect().await.unwrap();
    images::base_image(&docker).await;
    let (result, _) = build(
        &docker,
        "FROM eifctl-test/base:busybox\nRUN true\nRUN false\nRUN true\n",
        &[],
        &[],
        "eifctl-test/build:fails",
        false,
    )
    .await;
    match result {
        Err(DockerError::BuildFailed { step, message }) => {
            assert_eq!(step, "Step 3/4 : RUN false");
            assert_eq!(
                message,
                "The command '/bin/sh -c false' returned a non-zero code: 1"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The step succeeds only if the network is missing: asserting on a failed step's output
/// would be racy, as the classic builder may report the failure before the last output.
#[tokio::test(flavor = "multi_thread")]
async fn run_steps_have_no_network() {
    let docker = docker::connect().await.unwrap();
    images::base_image(&docker).await;
    let (result, events) = build(
        &docker,
        "FROM eifctl-test/base:busybox\n\
         RUN test \"$(ls /sys/class/net)\" = lo \\\n\
         && ! busybox nc -w 3 1.1.1.1 80 </dev/null 2>/tmp/err \\\n\
         && grep 'Network is unreachable' /tmp/err\n",
        &[],
        &[],
        "eifctl-test/build:network",
        true,
    )
    .await;
    if let Err(e) = result {
        panic!("a RUN step reached the network, or had an interface but lo: {e}\n{events:#?}");
    }
}

// --- normalize -----------------------------------------------------------------------------

const NORMALIZE_DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
COPY hello.txt /etc/hello.txt
RUN mkdir -p /data/empty \
 && echo keep > /data/file \
 && ln /data/file /data/file-hardlink \
 && cp /bin/busybox /data/suid \
 && chmod 4755 /data/suid \
 && chmod 2710 /data/empty \
 && ln -s ../etc/hello.txt /data/relative-link \
 && ln -s /etc/hello.txt /data/absolute-link
WORKDIR /data
ENV GREETING=hello
LABEL org.example.b=2 org.example.a=1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /etc/hello.txt"]
"#;

/// The export of an image as a map, without `.dockerenv` (every container has one).
fn export_map(rt: &tokio::runtime::Runtime, docker: &Docker, image: &str) -> Vec<Listed> {
    let export = docker::export_image(docker, image, rt.handle()).unwrap();
    list(export)
        .into_iter()
        .filter(|e| e.path != ".dockerenv")
        .collect()
}

#[test]
fn two_no_cache_builds_normalize_to_one_image_that_loads_again() {
    let rt = runtime();
    let docker = rt.block_on(docker::connect()).unwrap();
    let base = rt.block_on(images::base_image(&docker));
    let out = tempfile::tempdir().unwrap();

    let mut built = Vec::new();
    let mut normalized: Vec<(Normalized, Vec<u8>)> = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // Another second: the layers' mtimes differ.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (id, events) = rt.block_on(build(
            &docker,
            NORMALIZE_DOCKERFILE,
            &[("hello.txt", b"hello from the context\n")],
            &[("BASE", &base)],
            &format!("eifctl-test/normalize-built:{round}"),
            true,
        ));
        let id = id.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
        let archive = out.path().join(format!("image-{round}.tar"));
        let n = normalize(
            &docker,
            rt.handle(),
            &id,
            SDE,
            &archive,
            "eifctl-test/normalized:latest",
        )
        .unwrap();
        normalized.push((n, fs::read(&archive).unwrap()));
        built.push(id);
    }
    assert_ne!(built[0], built[1], "no_cache builds gave the same image");
    let (n, archive) = &normalized[0];
    assert_eq!(normalized[0].0, normalized[1].0);
    assert!(normalized[0].1 == normalized[1].1, "the archives differ");
    assert_eq!(n.archive_sha256, images::sha256_hex(archive));
    // Nothing but the two archives is left in the directory.
    let mut names: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["image-0.tar", "image-1.tar"]);

    // The archive: config, layer directory, layer, manifest; the config's digest is the ID.
    let outer = list(&archive[..]);
    let config_hex = n.id.strip_prefix("sha256:").unwrap();
    let outer_paths: Vec<&str> = outer.iter().map(|e| e.path.as_str()).collect();
    let layer_name = format!("{}/layer.tar", n.layer_sha256);
    assert_eq!(
        outer_paths,
        [
            format!("{config_hex}.json").as_str(),
            format!("{}/", n.layer_sha256).as_str(),
            layer_name.as_str(),
            "manifest.json",
        ]
    );
    for e in &outer {
        assert_eq!((e.mtime, e.uid, e.gid), (SDE, 0, 0), "{}", e.path);
    }
    assert_eq!(images::sha256_hex(&outer[0].data), config_hex);
    let config: serde_json::Value = serde_json::from_slice(&outer[0].data).unwrap();
    assert_eq!(config["created"], "2024-01-01T00:00:00Z");
    assert_eq!(config["config"]["WorkingDir"], "/data");
    assert_eq!(config["config"]["Cmd"][0], "cat /etc/hello.txt");
    assert_eq!(config["config"]["Labels"]["org.example.a"], "1");
    assert!(config["config"].get("Hostname").is_none());
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", n.layer_sha256)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&outer[3].data).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "eifctl-test/normalized:latest");

    // The layer: no .dockerenv, mtimes clamped, setuid, hard links and symlinks kept.
    let mut layer_file = tar::Archive::new(&archive[..]);
    let mut layer_bytes = Vec::new();
    for e in layer_file.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().ends_with(b"layer.tar") {
            e.read_to_end(&mut layer_bytes).unwrap();
        }
    }
    assert_eq!(images::sha256_hex(&layer_bytes), n.layer_sha256);
    let layer = list(&layer_bytes[..]);
    let by_path: HashMap<&str, &Listed> = layer
        .iter()
        .map(|e| (e.path.trim_end_matches('/'), e))
        .collect();
    assert!(!by_path.contains_key(".dockerenv"));
    for kept in [
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "proc",
        "sys",
        "dev",
    ] {
        assert!(by_path.contains_key(kept), "{kept} is missing");
    }
    assert!(layer.iter().all(|e| e.mtime <= SDE));
    assert_eq!(by_path["data/file"].mtime, SDE);
    assert_eq!(by_path["data/suid"].mode, 0o4755);
    assert_eq!(by_path["data/empty"].mode, 0o2710);
    assert_eq!(by_path["data/file-hardlink"].kind, tar::EntryType::Link);
    assert_eq!(
        by_path["data/file-hardlink"].link.as_deref(),
        Some("data/file")
    );
    assert_eq!(by_path["data/relative-link"].kind, tar::EntryType::Symlink);
    assert_eq!(
        by_path["data/relative-link"].link.as_deref(),
        Some("../etc/hello.txt")
    );
    assert_eq!(
        by_path["data/absolute-link"].link.as_deref(),
        Some("/etc/hello.txt")
    );

    // The normalized image's filesystem is the built one's, mtimes clamped. (Both are
    // clamped: a container made from the normalized image gets its init-layer files,
    // etc/hostname and the like, and their directories, stamped anew by Docker.)
    let original = export_map(&rt, &docker, &built[0]);
    let again = export_map(&rt, &docker, &n.id);
    let clamp = |list: Vec<Listed>| -> Vec<Listed> {
        list.into_iter()
            .map(|mut e| {
                e.mtime = e.mtime.min(SDE);
                e
            })
            .collect()
    };
    assert_eq!(clamp(original), clamp(again));

    // Removed, then loaded from the archive: the same ID.
    rt.block_on(async {
        docker
            .remove_image(
                &n.id,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await
            .unwrap();
        assert!(docker::inspect_image(&docker, &n.id).await.is_err());
        images::load_archive(&docker, archive.clone()).await;
        assert_eq!(
            images::image_id(&docker, "eifctl-test/normalized:latest").await,
            n.id
        );
    });
}

#[test]
fn a_failed_normalize_leaves_nothing_behind() {
    let rt = runtime();
    let docker = rt.block_on(docker::connect()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    let err = normalize(
        &docker,
        rt.handle(),
        "eifctl-test/does-not-exist:latest",
        SDE,
        &archive,
        "eifctl-test/normalized:never",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not in the local Docker engine"),
        "{err}"
    );
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}
