//! Fixtures shared by the integration tests: random parts, assembled EIFs, byte surgery, and
//! (in `images`) Docker images made without a registry.
#![allow(dead_code)]

pub mod attestation;
pub mod fake_github;
pub mod images;
pub mod proof_server;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::collections::BTreeMap;

use eifctl::cpio;
use eifctl::eif::{Arch, BuildInfo, EifBuilder, Metadata, Source, Written};
use eifctl::manifest::{
    self, DockerImage, EifFacts, EnclaveConfig, Inputs, Manifest, PLATFORM, SCHEMA, build_date,
};
use eifctl::pcr::Pcr;

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn metadata(name: &str) -> Metadata {
    Metadata {
        image_name: name.into(),
        image_version: "1.0".into(),
        build: BuildInfo {
            build_time: "2024-01-01T00:00:00+00:00".into(),
            build_tool: "eifctl-tests".into(),
            build_tool_version: "0".into(),
            operating_system: "Linux".into(),
            kernel_version: "6.1".into(),
        },
        docker_info: serde_json::Value::Null,
        custom: serde_json::json!({"purpose": "test"}),
    }
}

/// A bootstrap ramdisk as nitro-cli lays it out: `dev/`, `init`, `nsm.ko`.
pub fn bootstrap_ramdisk(init: &[u8], nsm: &[u8]) -> Vec<u8> {
    let mut w = cpio::Writer::new(Vec::new(), cpio::WriterOptions::linuxkit());
    w.append_dir(b"dev", 0o755, 0, 0, 0).unwrap();
    w.append_file_bytes(b"init", init, 0o755, 0, 0, 0).unwrap();
    w.append_file_bytes(b"nsm.ko", nsm, 0o755, 0, 0, 0).unwrap();
    w.finish().unwrap()
}

/// The parts of a test image, written to files in `dir`.
pub struct Parts {
    pub kernel: PathBuf,
    pub cmdline: String,
    pub ramdisks: Vec<PathBuf>,
}

pub fn write_parts(dir: &Path, seed: u64, ramdisk_sizes: &[usize]) -> Parts {
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, random_bytes(seed, 4096 + seed as usize % 1000)).unwrap();
    let mut ramdisks = Vec::new();
    for (i, size) in ramdisk_sizes.iter().enumerate() {
        let p = dir.join(format!("ramdisk{i}"));
        std::fs::write(&p, random_bytes(seed + 1 + i as u64, *size)).unwrap();
        ramdisks.push(p);
    }
    Parts {
        kernel,
        cmdline: "reboot=k panic=30 pci=off nomodules console=ttyS0".into(),
        ramdisks,
    }
}

pub fn build(parts: &Parts, out: &Path) -> Written {
    let mut b = EifBuilder::new(
        Arch::X86_64,
        Source::File(parts.kernel.clone()),
        parts.cmdline.clone(),
        &metadata("test"),
    );
    for r in &parts.ramdisks {
        b = b.ramdisk(Source::File(r.clone()));
    }
    b.write_to(out).unwrap()
}

/// A small valid EIF at `dir/name`, with its parts.
pub fn small_eif(dir: &Path, name: &str) -> (PathBuf, Parts) {
    let parts = write_parts(dir, 7, &[1500, 3000]);
    let out = dir.join(name);
    build(&parts, &out);
    (out, parts)
}

pub fn eifctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eifctl"))
        .args(args)
        .output()
        .expect("running eifctl")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a shell pipeline and returns its trimmed stdout; panics with its stderr on failure.
pub fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The PCR of the concatenation of `files`, computed by coreutils/openssl, not by eifctl.
pub fn pcr_by_shell(files: &[&Path]) -> String {
    let list: Vec<String> = files.iter().map(|p| format!("'{}'", p.display())).collect();
    let cat = if list.is_empty() {
        "printf ''".to_string()
    } else {
        format!("cat {}", list.join(" "))
    };
    sh(&format!(
        "{{ head -c 48 /dev/zero; {cat} | openssl dgst -sha384 -binary; }} | sha384sum | cut -d' ' -f1"
    ))
}

/// A multi-thread runtime, as eifctl runs Docker requests on one while a synchronous thread
/// reads an export.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A canonical manifest as `eifctl build` writes one (complete, or without PCR0/PCR1 and EIF).
pub fn sample_manifest(complete: bool) -> Manifest {
    let pcr = |b: &[u8]| Pcr::of_bytes(b);
    let mut pcrs: BTreeMap<String, Pcr> = [("0", pcr(b"0")), ("1", pcr(b"1")), ("2", pcr(b"2"))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if !complete {
        pcrs.remove("0");
        pcrs.remove("1");
    }
    Manifest {
        schema: SCHEMA.into(),
        name: "hello".into(),
        version: "0.1.0".into(),
        platform: PLATFORM.into(),
        arch: "x86_64".into(),
        complete,
        pcrs,
        enclave_config: EnclaveConfig {
            memory_mib: 512,
            cpu_count: 2,
            debug_mode: false,
        },
        build_date: build_date(1_700_000_000),
        instance_type: Some("c5.xlarge".into()),
        docker_image: DockerImage {
            name: "hello".into(),
            tag: "0.1.0".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            archive: "image.tar".into(),
            archive_sha256: "b".repeat(64),
        },
        eif: complete.then(|| EifFacts {
            file: "hello.eif".into(),
            size: 1234,
            sha256: "c".repeat(64),
            sha384: "d".repeat(96),
        }),
        inputs: Inputs {
            source: manifest::Source {
                path: "recipes/hello".into(),
                revision: "e".repeat(40),
                tree: "f".repeat(40),
                dirty: false,
            },
            bases: BTreeMap::new(),
            blobs: None,
            source_date_epoch: 1_700_000_000,
            context_sha256: "6".repeat(64),
            prepared_sha256: None,
            eifctl_version: "0.1.0".into(),
        },
    }
}

/// Writes the fixture recipe (`tests/fixtures/recipes/hello`) into `root/recipes/hello`, with
/// its base archive made here (no registry) and its recipe.toml pinning that archive's hash.
pub fn write_fixture_recipe(root: &Path) -> PathBuf {
    let recipe = root.join("recipes/hello");
    std::fs::create_dir_all(recipe.join("app")).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipes/hello");
    for f in [
        "Dockerfile",
        ".dockerignore",
        "app/hello.sh",
        "app/message.txt",
    ] {
        std::fs::copy(fixture.join(f), recipe.join(f)).unwrap();
    }
    let (archive, _) = images::base_archive();
    std::fs::write(recipe.join("base.tar"), &archive).unwrap();
    let toml = std::fs::read_to_string(fixture.join("recipe.toml.in"))
        .unwrap()
        .replace("@BASE_SHA256@", &images::sha256_hex(&archive));
    std::fs::write(recipe.join("recipe.toml"), toml).unwrap();
    recipe
}
