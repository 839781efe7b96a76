//! Base images against the real Docker daemon: mmdebstrap bases (which download a few Debian
//! packages from deb.debian.org), archives made here, and registry references (no registry is
//! reachable, so only their refusals and failures are tested).

mod common;

use std::path::Path;
use std::sync::Mutex;

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use common::images::{self, Entry};
use eifctl::base::{
    ArchiveSpec, BaseContext, BaseError, BasePin, BaseSpec, MmdebstrapSpec, Variant, materialize,
};
use eifctl::eif::Arch;
use serde_json::json;

/// 2024-01-01T00:00:00Z.
const EPOCH: u64 = 1_704_067_200;

async fn docker() -> Docker {
    eifctl::docker::connect()
        .await
        .expect("a Docker daemon (scripts/test starts one)")
}

fn host_arch() -> Arch {
    Arch::host().expect("an x86_64 or aarch64 host")
}

/// Progress lines, kept to look at.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn push(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

async fn run(
    docker: &Docker,
    name: &str,
    spec: &BaseSpec,
    recipe_dir: &Path,
    arch: Arch,
    expected: Option<&BasePin>,
    lines: &Lines,
) -> Result<BasePin, BaseError> {
    let work = tempfile::tempdir().unwrap();
    let progress = |line: &str| lines.push(line);
    let ctx = BaseContext {
        recipe_dir,
        source_date_epoch: EPOCH,
        arch,
        work_dir: work.path(),
        expected,
        progress: &progress,
    };
    materialize(docker, name, spec, &ctx).await
}

async fn remove_image(docker: &Docker, id: &str) {
    docker
        .remove_image(
            id,
            Some(RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("removing {id}: {e}"));
}

// --- recipe.toml -------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Recipe {
    bases: std::collections::BTreeMap<String, BaseSpec>,
}

#[test]
fn recipe_toml_shapes() {
    let recipe: Recipe = toml::from_str(
        r#"
[bases.builder]
mmdebstrap = { suite = "bookworm", packages = ["dpkg", "libc-bin", "busybox-static"], variant = "custom", hooks = ["busybox"], mirror = "http://snapshot.debian.org/archive/debian/20240101T000000Z" }

[bases.plain]
mmdebstrap = { suite = "bookworm" }

[bases.runtime]
archive = { path = "base.tar", sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }

[bases.upstream]
registry = "debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
"#,
    )
    .unwrap();
    assert_eq!(
        recipe.bases["builder"],
        BaseSpec::Mmdebstrap(MmdebstrapSpec {
            suite: "bookworm".into(),
            packages: vec!["dpkg".into(), "libc-bin".into(), "busybox-static".into()],
            variant: Variant::Custom,
            mirror: Some("http://snapshot.debian.org/archive/debian/20240101T000000Z".into()),
            hooks: vec!["busybox".into()],
        })
    );
    assert_eq!(
        recipe.bases["plain"],
        BaseSpec::Mmdebstrap(MmdebstrapSpec {
            suite: "bookworm".into(),
            packages: vec![],
            variant: Variant::Essential,
            mirror: None,
            hooks: vec![],
        })
    );
    assert!(matches!(&recipe.bases["runtime"], BaseSpec::Archive(a) if a.path == "base.tar"));
    assert!(matches!(&recipe.bases["upstream"], BaseSpec::Registry(r) if r.starts_with("debian@")));

    // The digest is of the content, not of how recipe.toml spells it.
    let spelled: Recipe = toml::from_str(
        "[bases.plain.mmdebstrap]\nvariant = \"essential\"\npackages = []\nsuite = \"bookworm\"\n",
    )
    .unwrap();
    assert_eq!(
        spelled.bases["plain"].digest(),
        recipe.bases["plain"].digest()
    );
    assert_ne!(
        recipe.bases["plain"].digest(),
        recipe.bases["builder"].digest()
    );

    let typo = toml::from_str::<Recipe>(
        "[bases.b]\nmmdebstrap = { suite = \"bookworm\", pakages = [] }\n",
    );
    assert!(typo.is_err());
    let two_kinds = toml::from_str::<Recipe>(
        "[bases.b]\nregistry = \"a@sha256:00\"\narchive = { path = \"a\", sha256 = \"b\" }\n",
    );
    assert!(two_kinds.is_err());
}

// --- mmdebstrap --------------------------------------------------------------------------------

/// The smallest Debian that dpkg can install into: busybox gives the maintainer scripts a
/// shell (mmdebstrap's busybox hooks), dpkg and libc-bin (ldconfig) install the packages.
fn tiny_debian() -> BaseSpec {
    BaseSpec::Mmdebstrap(MmdebstrapSpec {
        suite: "bookworm".into(),
        packages: vec!["dpkg".into(), "libc-bin".into(), "busybox-static".into()],
        variant: Variant::Custom,
        mirror: None,
        hooks: vec!["busybox".into()],
    })
}

fn ran_mmdebstrap(lines: &[String]) -> bool {
    lines.iter().any(|line| line.contains("mmdebstrap"))
}

/// One test, in order, because each step depends on what the engine holds after the last.
#[tokio::test]
async fn mmdebstrap_base_is_reproducible_cached_and_checked() {
    let docker = docker().await;
    let recipe = tempfile::tempdir().unwrap();
    let spec = tiny_debian();
    let lines = Lines::default();

    // Made from scratch.
    let started = std::time::Instant::now();
    let first = run(
        &docker,
        "tiny",
        &spec,
        recipe.path(),
        host_arch(),
        None,
        &lines,
    )
    .await
    .unwrap();
    let made = lines.take();
    eprintln!("first build: {:?}, {first:?}", started.elapsed());
    assert!(ran_mmdebstrap(&made), "{made:#?}");
    assert!(first.image_id.starts_with("sha256:"));
    let rootfs = first.rootfs_sha256.clone().expect("a rootfs hash");
    assert_eq!(first.registry_digest, None);

    let info = eifctl::docker::inspect_image(&docker, &first.image_id)
        .await
        .unwrap();
    assert_eq!(info.architecture, images::go_arch());
    assert_eq!(info.os, "linux");
    assert_eq!(
        info.env,
        Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
        ])
    );
    assert_eq!(info.inspect["Created"], json!("2024-01-01T00:00:00Z"));
    assert_eq!(
        info.inspect["RootFS"]["Layers"],
        json!([format!("sha256:{rootfs}")])
    );

    // Cached: the lock's image is there, so nothing is made.
    let started = std::time::Instant::now();
    let cached = run(
        &docker,
        "tiny",
        &spec,
        recipe.path(),
        host_arch(),
        Some(&first),
        &lines,
    )
    .await
    .unwrap();
    let said = lines.take();
    eprintln!("cached: {:?}", started.elapsed());
    assert_eq!(cached, first);
    assert!(!ran_mmdebstrap(&said), "{said:#?}");
    assert!(
        said.iter()
            .any(|l| l.contains("in the Docker engine already")),
        "{said:#?}"
    );

    // Made again from scratch, in fresh directories, with the image gone: the same image.
    remove_image(&docker, &first.image_id).await;
    let started = std::time::Instant::now();
    let second = run(
        &docker,
        "tiny",
        &spec,
        recipe.path(),
        host_arch(),
        Some(&first),
        &lines,
    )
    .await
    .unwrap_or_else(|e| panic!("the second build differs: {e}"));
    eprintln!("second build: {:?}", started.elapsed());
    assert!(ran_mmdebstrap(&lines.take()));
    assert_eq!(second, first);

    // A lock that pins another image: the rebuild says so, and that the packages differ.
    let wrong = BasePin {
        image_id: format!("sha256:{}", "0".repeat(64)),
        registry_digest: None,
        rootfs_sha256: Some("1".repeat(64)),
    };
    let error = run(
        &docker,
        "tiny",
        &spec,
        recipe.path(),
        host_arch(),
        Some(&wrong),
        &lines,
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, BaseError::Mismatch { name, expected, actual, .. }
            if name == "tiny" && *expected == wrong.image_id && *actual == first.image_id),
        "{message}"
    );
    assert!(message.starts_with("base tiny: "), "{message}");
    assert!(message.contains(&rootfs), "{message}");
    assert!(message.contains("root filesystem differs"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test]
async fn mmdebstrap_refuses_a_foreign_architecture() {
    let docker = docker().await;
    let foreign = match host_arch() {
        Arch::X86_64 => Arch::Aarch64,
        Arch::Aarch64 => Arch::X86_64,
    };
    let lines = Lines::default();
    let dir = tempfile::tempdir().unwrap();
    let error = run(
        &docker,
        "cross",
        &tiny_debian(),
        dir.path(),
        foreign,
        None,
        &lines,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, BaseError::ForeignArch { .. }), "{error}");
    assert!(error.to_string().starts_with("base cross: "), "{error}");
    assert!(!ran_mmdebstrap(&lines.take()));
}

#[tokio::test]
async fn mmdebstrap_refuses_bad_specs() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = Lines::default();
    let bad = |f: fn(&mut MmdebstrapSpec)| {
        let mut spec = MmdebstrapSpec {
            suite: "bookworm".into(),
            packages: vec!["busybox-static".into()],
            variant: Variant::Essential,
            mirror: None,
            hooks: vec![],
        };
        f(&mut spec);
        BaseSpec::Mmdebstrap(spec)
    };
    for spec in [
        bad(|s| s.packages.push("--hook-dir=/tmp".into())),
        bad(|s| s.suite = "bookworm main".into()),
        bad(|s| s.mirror = Some("ftp://example.org/debian".into())),
        bad(|s| s.hooks.push("../../../tmp".into())),
        bad(|s| s.hooks.push("no-such-hooks".into())),
        bad(|s| {
            s.variant = Variant::Custom;
            s.packages.clear();
        }),
    ] {
        let error = run(&docker, "bad", &spec, dir.path(), host_arch(), None, &lines)
            .await
            .unwrap_err();
        assert!(matches!(error, BaseError::InvalidSpec { .. }), "{error}");
        assert!(error.to_string().starts_with("base bad: "), "{error}");
    }
    assert!(!ran_mmdebstrap(&lines.take()));
}

// --- archive -----------------------------------------------------------------------------------

fn write(dir: &Path, file: &str, data: &[u8]) -> String {
    std::fs::write(dir.join(file), data).unwrap();
    images::sha256_hex(data)
}

#[tokio::test]
async fn archive_base_is_verified_and_loaded() {
    let docker = docker().await;
    let recipe = tempfile::tempdir().unwrap();
    let (archive, id) = images::base_archive();
    let sha256 = write(recipe.path(), "base.tar", &archive);
    let lines = Lines::default();
    let spec = BaseSpec::Archive(ArchiveSpec {
        path: "base.tar".into(),
        sha256: sha256.clone(),
    });

    let pin = run(
        &docker,
        "rt",
        &spec,
        recipe.path(),
        host_arch(),
        None,
        &lines,
    )
    .await
    .unwrap();
    assert_eq!(
        pin,
        BasePin {
            image_id: id.clone(),
            registry_digest: None,
            rootfs_sha256: None
        }
    );
    assert_eq!(images::image_id(&docker, &id).await, id);

    // Pinned, present: taken as it is.
    let again = run(
        &docker,
        "rt",
        &spec,
        recipe.path(),
        host_arch(),
        Some(&pin),
        &lines,
    )
    .await
    .unwrap();
    assert_eq!(again, pin);

    // Another image than the lock's.
    let other = BasePin {
        image_id: format!("sha256:{}", "0".repeat(64)),
        ..pin.clone()
    };
    let error = run(
        &docker,
        "rt",
        &spec,
        recipe.path(),
        host_arch(),
        Some(&other),
        &lines,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, BaseError::Mismatch { .. }), "{error}");
    assert!(error.to_string().starts_with("base rt: "), "{error}");
}

#[tokio::test]
async fn archive_base_with_the_wrong_hash_is_refused() {
    let docker = docker().await;
    let recipe = tempfile::tempdir().unwrap();
    let (archive, _) = images::base_archive();
    write(recipe.path(), "base.tar", &archive);
    let spec = BaseSpec::Archive(ArchiveSpec {
        path: "base.tar".into(),
        sha256: "ab".repeat(32),
    });
    let error = run(
        &docker,
        "rt",
        &spec,
        recipe.path(),
        host_arch(),
        None,
        &Lines::default(),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, BaseError::ArchiveHash { .. }), "{message}");
    assert!(message.starts_with("base rt: "), "{message}");
    assert!(message.contains("base.tar"), "{message}");
    assert!(message.contains(&"ab".repeat(32)), "{message}");
}

#[tokio::test]
async fn archive_base_with_two_images_is_refused() {
    let docker = docker().await;
    let recipe = tempfile::tempdir().unwrap();
    let layer = images::base_layer();
    let diff_id = images::sha256_hex(&layer);
    let config_a = images::image_config(&[&layer], &[("which", "a")]);
    let config_b = images::image_config(&[&layer], &[("which", "b")]);
    let name_a = format!("{}.json", images::sha256_hex(&config_a));
    let name_b = format!("{}.json", images::sha256_hex(&config_b));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&json!([
        { "Config": name_a, "RepoTags": null, "Layers": [layer_name] },
        { "Config": name_b, "RepoTags": null, "Layers": [layer_name] },
    ]))
    .unwrap();
    let mut entries = vec![
        (name_a.as_str(), 0o644, Entry::File(&config_a)),
        (name_b.as_str(), 0o644, Entry::File(&config_b)),
        (diff_id.as_str(), 0o755, Entry::Dir),
        (layer_name.as_str(), 0o644, Entry::File(&layer)),
        ("manifest.json", 0o644, Entry::File(&manifest)),
    ];
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let sha256 = write(recipe.path(), "two.tar", &images::tar_of(&entries));
    let spec = BaseSpec::Archive(ArchiveSpec {
        path: "two.tar".into(),
        sha256,
    });
    let error = run(
        &docker,
        "two",
        &spec,
        recipe.path(),
        host_arch(),
        None,
        &Lines::default(),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, BaseError::ArchiveContents { .. }),
        "{message}"
    );
    assert!(message.starts_with("base two: "), "{message}");
    eprintln!("{message}");
    assert!(message.contains("2 images"), "{message}");
}

#[tokio::test]
async fn archive_base_outside_the_recipe_is_refused() {
    let docker = docker().await;
    let recipe = tempfile::tempdir().unwrap();
    for path in ["../base.tar", "/etc/passwd", ""] {
        let spec = BaseSpec::Archive(ArchiveSpec {
            path: path.into(),
            sha256: "ab".repeat(32),
        });
        let error = run(
            &docker,
            "out",
            &spec,
            recipe.path(),
            host_arch(),
            None,
            &Lines::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, BaseError::InvalidSpec { .. }),
            "{path}: {error}"
        );
    }
}

// --- registry ----------------------------------------------------------------------------------

#[tokio::test]
async fn registry_base_needs_a_digest() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    for reference in ["debian:bookworm", "debian", "eifctl-test/base:busybox"] {
        let spec = BaseSpec::Registry(reference.into());
        let error = run(
            &docker,
            "up",
            &spec,
            dir.path(),
            host_arch(),
            None,
            &Lines::default(),
        )
        .await
        .unwrap_err();
        let message = error.to_string();
        eprintln!("{message}");
        assert!(matches!(error, BaseError::NotPinned { .. }), "{message}");
        assert!(message.starts_with("base up: "), "{message}");
        assert!(message.contains(reference), "{message}");
    }
}

#[tokio::test]
async fn registry_base_that_cannot_be_pulled_fails_in_one_line() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("eifctl-test/absent@sha256:{}", "e".repeat(64));
    let spec = BaseSpec::Registry(reference.clone());
    let error = run(
        &docker,
        "up",
        &spec,
        dir.path(),
        host_arch(),
        None,
        &Lines::default(),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, BaseError::Docker { .. }), "{message}");
    eprintln!("{message}");
    assert!(message.starts_with("base up: cannot pull "), "{message}");
    assert!(message.contains(&reference), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test]
async fn mmdebstrap_failure_is_one_line() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = Lines::default();
    let spec = BaseSpec::Mmdebstrap(MmdebstrapSpec {
        suite: "bookworm".into(),
        packages: vec!["dpkg".into(), "eifctl-no-such-package".into()],
        variant: Variant::Custom,
        mirror: None,
        hooks: vec!["busybox".into()],
    });
    let error = run(
        &docker,
        "broken",
        &spec,
        dir.path(),
        host_arch(),
        None,
        &lines,
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    eprintln!("{message}");
    assert!(matches!(error, BaseError::Mmdebstrap { .. }), "{message}");
    assert!(
        message.starts_with("base broken: mmdebstrap failed"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert!(ran_mmdebstrap(&lines.take()));
}
