//! `eifctl build-enclave` against the real Docker daemon, on images made here without a registry.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images::{self, Entry};
use common::*;
use eifctl::cpio;
use eifctl::eif::{Arch, EifFile};
use serde_json::{Value, json};

fn docker(rt: &tokio::runtime::Runtime) -> bollard::Docker {
    rt.block_on(eifctl::docker::connect())
        .expect("a Docker daemon (scripts/test starts one)")
}

/// A blob directory with stand-in kernels, init and nsm.ko: their bytes do not matter to the
/// build, only that they are measured.
fn blobs(dir: &Path) -> PathBuf {
    let b = dir.join("blobs");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("bzImage"), random_bytes(31, 40_000)).unwrap();
    std::fs::write(b.join("Image"), random_bytes(32, 30_000)).unwrap();
    std::fs::write(b.join("init"), random_bytes(33, 20_000)).unwrap();
    std::fs::write(b.join("nsm.ko"), random_bytes(34, 10_000)).unwrap();
    std::fs::write(
        b.join("cmdline"),
        "reboot=k panic=30 pci=off console=ttyS0\n",
    )
    .unwrap();
    b
}

fn build_enclave(image: &str, blobs: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build-enclave",
        "--docker-uri",
        image,
        "--blobs",
        blobs.to_str().unwrap(),
        "--output-file",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    eifctl(&args)
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// The customer ramdisk's entries: name, kind, mode, uid, gid, mtime, data.
fn customer_entries(eif: &Path) -> Vec<(String, cpio::Header, Vec<u8>)> {
    let eif = EifFile::open(eif).unwrap();
    let rd = eif.ramdisks().nth(1).unwrap().clone();
    let mut r = cpio::Reader::new(eif.section_reader(&rd));
    let mut out = Vec::new();
    while let Some(mut e) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            e.header().name_lossy().into_owned(),
            e.header().clone(),
            data,
        ));
    }
    let end = r.finish().unwrap();
    assert!(end.trailing_all_zero);
    out
}

#[test]
fn the_feature_image_becomes_a_ramdisk_that_follows_nitro_cli_rules() {
    let rt = runtime();
    let docker = docker(&rt);
    rt.block_on(images::feature_image(&docker));
    let dir = tempfile::tempdir().unwrap();
    let blobs = blobs(dir.path());
    let out = dir.path().join("feature.eif");
    let o = build_enclave(images::FEATURE_TAG, &blobs, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = json_out(&o);
    assert_eq!(
        printed["Measurements"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
    );

    // The EIF's own measurements are what was printed.
    let described = json_out(&eifctl(&["describe", "--json", out.to_str().unwrap()]));
    assert_eq!(described["Measurements"], printed["Measurements"]);
    assert_eq!(described["IsSigned"], false);

    // The image's filesystem, as `docker export` gives it, read independently of eifctl.
    let exported = {
        let c = sh(&format!("docker create {}", images::FEATURE_TAG));
        let list = images::list_tar(
            Command::new("docker")
                .args(["export", &c])
                .output()
                .unwrap()
                .stdout
                .as_slice(),
        );
        sh(&format!("docker rm {c}"));
        list
    };
    let entries = customer_entries(&out);
    let by_name: HashMap<&str, &(String, cpio::Header, Vec<u8>)> =
        entries.iter().map(|e| (e.0.as_str(), e)).collect();

    // The prefix directory comes first; the generated entries close the archive in order.
    assert_eq!(entries[0].0, "rootfs");
    let tail: Vec<&str> = entries[entries.len() - 9..]
        .iter()
        .map(|e| e.0.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "rootfs",
            "rootfs/dev",
            "rootfs/run",
            "rootfs/sys",
            "rootfs/var",
            "rootfs/proc",
            "rootfs/tmp",
            "cmd",
            "env"
        ]
    );
    // Cmd wins over Entrypoint, one argument per line; the environment one variable per line.
    let cmd = &entries[entries.len() - 2];
    assert_eq!(cmd.2, b"cat /etc/hello.txt; env\n");
    assert_eq!(cmd.1.perm(), 0o644);
    let env = String::from_utf8(entries[entries.len() - 1].2.clone()).unwrap();
    for var in [
        images::BASE_PATH,
        "GREETING=hello world",
        "EIFCTL_TEST=1",
        "LANG=C.UTF-8",
    ] {
        assert!(
            env.lines().any(|l| l == var),
            "{var} missing from env:\n{env}"
        );
    }

    // Every exported file keeps its type, permission bits and contents under rootfs/, except
    // what linuxkit drops or replaces; hard links become relative symlinks.
    let replaced = [
        ".dockerenv",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/mtab",
        "dev/console",
        "dev/pts",
        "dev/shm",
    ];
    let mut checked = 0;
    for (path, t) in &exported {
        if path.is_empty() || replaced.contains(&path.as_str()) {
            continue;
        }
        let is_dir = t.kind == tar::EntryType::Directory;
        let name = format!("rootfs/{path}{}", if is_dir { "/" } else { "" });
        let (_, h, data) = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from the ramdisk"));
        assert_eq!(h.perm(), t.mode & 0o7777, "{name}: permission bits");
        match t.kind {
            tar::EntryType::Directory => assert_eq!(h.kind(), cpio::Kind::Dir, "{name}"),
            tar::EntryType::Symlink => {
                assert_eq!(h.kind(), cpio::Kind::Symlink, "{name}");
                assert_eq!(data, t.link.as_ref().unwrap().as_bytes(), "{name}: target");
            }
            tar::EntryType::Link => {
                assert_eq!(
                    h.kind(),
                    cpio::Kind::Symlink,
                    "{name}: a hard link becomes a symlink"
                );
                let target = t.link.as_ref().unwrap();
                let from = Path::new(path).parent().unwrap();
                let expected = relative(from, Path::new(target.trim_start_matches('/')));
                assert_eq!(
                    String::from_utf8_lossy(data),
                    expected,
                    "{name}: relative target"
                );
            }
            tar::EntryType::Regular => {
                assert_eq!(h.kind(), cpio::Kind::File, "{name}");
                assert_eq!(u64::from(h.filesize), t.size, "{name}: size");
                if let Some(d) = &t.data {
                    assert_eq!(data, d, "{name}: contents");
                }
            }
            other => panic!("{name}: unexpected type {other:?} in the fixture"),
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} entries compared");
    for gone in [
        ".dockerenv",
        "etc/hostname",
        "data/deleted",
        "data/opaque/old",
    ] {
        assert!(
            !by_name.contains_key(format!("rootfs/{gone}").as_str()),
            "{gone} is in the ramdisk"
        );
    }
    let suid_link = by_name["rootfs/usr/local/bin/suid-tool-hardlink"];
    assert_eq!(
        suid_link.1.mode, 0o124755,
        "a hard link to a setuid file keeps its bits"
    );
    assert_eq!(
        by_name["rootfs/etc/resolv.conf"].2,
        b"/run/resolvconf/resolv.conf"
    );
    assert_eq!(by_name["rootfs/etc/mtab"].2, b"/proc/mounts");
}

/// The path of `to` relative to directory `from` (both relative to the root).
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[test]
fn the_same_image_and_blobs_give_the_same_bytes_and_source_date_epoch_sets_the_time() {
    let rt = runtime();
    let docker = docker(&rt);
    rt.block_on(images::feature_image(&docker));
    let dir = tempfile::tempdir().unwrap();
    let blobs = blobs(dir.path());
    let (a, b) = (dir.path().join("a.eif"), dir.path().join("b.eif"));
    assert!(
        build_enclave(images::FEATURE_TAG, &blobs, &a, &[])
            .status
            .success()
    );
    assert!(
        build_enclave(images::FEATURE_TAG, &blobs, &b, &[])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let c = dir.path().join("c.eif");
    let o = Command::new(env!("CARGO_BIN_EXE_eifctl"))
        .args([
            "build-enclave",
            "--docker-uri",
            images::FEATURE_TAG,
            "--blobs",
            blobs.to_str().unwrap(),
            "--output-file",
            c.to_str().unwrap(),
            "--name",
            "feature",
            "--version",
            "7",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let d = json_out(&eifctl(&["describe", "--json", c.to_str().unwrap()]));
    assert_eq!(d["Metadata"]["BuildTime"], "2023-11-14T22:13:20+00:00");
    assert_eq!(
        (d["ImageName"].clone(), d["ImageVersion"].clone()),
        (json!("feature"), json!("7"))
    );
    assert_eq!(
        d["Metadata"]["DockerInfo"]["Config"]["Cmd"],
        json!(["cat /etc/hello.txt; env"])
    );
    assert!(
        d["Metadata"]["DockerInfo"].get("RepoTags").is_none(),
        "no host-specific fields"
    );
    // Same PCRs, other metadata.
    let da = json_out(&eifctl(&["describe", "--json", a.to_str().unwrap()]));
    assert_eq!(da["Measurements"], d["Measurements"]);
    assert_eq!(da["ImageName"], "eifctl-test/feature");
}

#[test]
fn a_signed_build_shows_pcr8_and_a_valid_signature() {
    let rt = runtime();
    let docker = docker(&rt);
    rt.block_on(images::feature_image(&docker));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "openssl ecparam -name secp384r1 -genkey -noout -out {d}/key.pem && \
         openssl req -x509 -new -key {d}/key.pem -subj /CN=enclave-signer -days 30 -out {d}/cert.pem"
    ));
    let out = dir.path().join("signed.eif");
    let o = build_enclave(
        images::FEATURE_TAG,
        &blobs(dir.path()),
        &out,
        &[
            "--signing-certificate",
            &format!("{d}/cert.pem"),
            "--private-key",
            &format!("{d}/key.pem"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = json_out(&o);
    let pcr8 = json_out(&eifctl(&[
        "pcr",
        "--signing-certificate",
        &format!("{d}/cert.pem"),
    ]))["PCR8"]
        .clone();
    assert_eq!(printed["Measurements"]["PCR8"], pcr8);
    let described = eifctl(&["describe", "--json", "--strict", out.to_str().unwrap()]);
    assert!(described.status.success(), "{}", stderr(&described));
    assert_eq!(json_out(&described)["SignatureCheck"], true);
}

/// Loads a one-layer image whose config claims `arch`, tagged `tag`.
fn load_image_for_arch(
    rt: &tokio::runtime::Runtime,
    docker: &bollard::Docker,
    arch: &str,
    tag: &str,
) {
    let layer = images::base_layer();
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": [images::BASE_PATH], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", images::sha256_hex(&layer))]},
    }))
    .unwrap();
    let config_name = format!("{}.json", images::sha256_hex(&config));
    let layer_name = format!("{}/layer.tar", images::sha256_hex(&layer));
    let manifest = serde_json::to_vec(
        &json!([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]),
    )
    .unwrap();
    let archive = images::tar_of(&[
        (&config_name, 0o644, Entry::File(&config)),
        (layer_name.split('/').next().unwrap(), 0o755, Entry::Dir),
        (&layer_name, 0o644, Entry::File(&layer)),
        ("manifest.json", 0o644, Entry::File(&manifest)),
    ]);
    rt.block_on(images::load_archive(docker, archive));
}

#[test]
fn an_arm64_image_is_built_with_aarch64_blobs_on_any_host() {
    let rt = runtime();
    let docker = docker(&rt);
    load_image_for_arch(&rt, &docker, "arm64", "eifctl-test/arm64:latest");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("arm.eif");
    let o = build_enclave("eifctl-test/arm64:latest", &blobs(dir.path()), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eif = EifFile::open(&out).unwrap();
    assert_eq!(eif.arch(), Arch::Aarch64);
    let kernel = eif.section(eifctl::eif::SectionKind::Kernel).unwrap();
    assert_eq!(kernel.size, 30_000, "the Image blob, not bzImage");
}

#[test]
fn every_failure_is_one_line_with_its_exit_code_and_leaves_no_file() {
    let rt = runtime();
    let docker = docker(&rt);
    let base = rt.block_on(images::base_image(&docker));
    rt.block_on(images::feature_image(&docker));
    load_image_for_arch(&rt, &docker, "s390x", "eifctl-test/s390x:latest");
    let dir = tempfile::tempdir().unwrap();
    let good = blobs(dir.path());
    let no_nsm = dir.path().join("no-nsm");
    std::fs::create_dir_all(&no_nsm).unwrap();
    for f in ["bzImage", "init", "cmdline"] {
        std::fs::copy(good.join(f), no_nsm.join(f)).unwrap();
    }
    let d = dir.path().display();
    sh(&format!(
        "openssl ecparam -name prime256v1 -genkey -noout -out {d}/a.key && \
         openssl req -x509 -new -key {d}/a.key -subj /CN=a -days 30 -out {d}/a.pem && \
         openssl ecparam -name prime256v1 -genkey -noout -out {d}/b.key"
    ));
    let out = dir.path().join("never.eif");
    type Case<'a> = (
        &'a str,
        PathBuf,
        Vec<String>,
        Vec<(&'a str, &'a str)>,
        i32,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "absent image",
            good.clone(),
            vec![],
            vec![],
            2,
            "not in the local Docker engine",
        ),
        (
            "missing blob",
            no_nsm.clone(),
            vec![],
            vec![],
            3,
            "boot blob nsm.ko not found in",
        ),
        (
            "foreign architecture",
            good.clone(),
            vec![],
            vec![],
            2,
            "s390x",
        ),
        (
            "key of another certificate",
            good.clone(),
            vec![
                "--signing-certificate".into(),
                format!("{d}/a.pem"),
                "--private-key".into(),
                format!("{d}/b.key"),
            ],
            vec![],
            2,
            "a.pem",
        ),
        (
            "no daemon",
            good.clone(),
            vec![],
            vec![("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
            3,
            "no Docker daemon answers at unix:///nonexistent/docker.sock",
        ),
    ];
    for (what, blob_dir, extra, env, code, needle) in cases {
        let image = match what {
            "absent image" => "eifctl-test/absent:latest",
            "foreign architecture" => "eifctl-test/s390x:latest",
            "image without a command" => base.as_str(),
            _ => images::FEATURE_TAG,
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eifctl"));
        cmd.args([
            "build-enclave",
            "--docker-uri",
            image,
            "--blobs",
            blob_dir.to_str().unwrap(),
            "--output-file",
            out.to_str().unwrap(),
        ]);
        cmd.args(&extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let err = stderr(&o);
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(o.status.code(), Some(code), "{what}: {err}");
        assert!(
            last.starts_with("eifctl: error: ") && last.contains(needle),
            "{what}: {err}"
        );
        assert!(!out.exists(), "{what}: output written");
        let stray = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(stray, 0, "{what}: temporary file left");
    }
}

#[test]
fn a_large_file_streams_through_in_bounded_memory() {
    let rt = runtime();
    let docker = docker(&rt);
    let size: u64 = 300 << 20;
    let tag = format!("eifctl-test/large-with-cmd:{size}");
    rt.block_on(async {
        images::base_image(&docker).await;
        let dockerfile = format!(
            "FROM {}\nRUN head -c {size} /dev/urandom > /big\nCMD [\"/bin/sh\"]\n",
            images::BASE_TAG
        );
        images::build_image(&docker, &tag, &dockerfile, &[]).await
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("large.eif");
    let blobs = blobs(dir.path());
    let time_file = dir.path().join("time");
    let o = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%M",
            "-o",
            time_file.to_str().unwrap(),
            env!("CARGO_BIN_EXE_eifctl"),
            "build-enclave",
            "--docker-uri",
            &tag,
            "--blobs",
            blobs.to_str().unwrap(),
            "--output-file",
            out.to_str().unwrap(),
        ])
        .output()
        .expect("GNU time (scripts/test installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let peak_kib: u64 = std::fs::read_to_string(&time_file)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {peak_kib} KiB for a {size}-byte file"
    );
    let big = customer_entries_sizes(&out);
    assert_eq!(big.get("rootfs/big"), Some(&(size as u32)));
}

fn customer_entries_sizes(eif: &Path) -> HashMap<String, u32> {
    let eif = EifFile::open(eif).unwrap();
    let rd = eif.ramdisks().nth(1).unwrap().clone();
    let mut r = cpio::Reader::new(eif.section_reader(&rd));
    let mut out = HashMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        out.insert(e.header().name_lossy().into_owned(), e.header().filesize);
    }
    out
}
