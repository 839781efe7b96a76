//! `eifctl lock` and `eifctl build` of a fixture recipe against the real Docker daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images;
use common::*;
use serde_json::Value;

/// A git repository holding the fixture recipe, with a base archive made here (no registry).
struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    recipe: PathBuf,
    blobs: PathBuf,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let recipe = write_fixture_recipe(&root);
    sh(&format!(
        "cd {} && git init -q && git -c user.name=t -c user.email=t@t add -A && git -c user.name=t -c user.email=t@t commit -qm fixture",
        root.display()
    ));
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join("bzImage"), random_bytes(51, 50_000)).unwrap();
    std::fs::write(blobs.join("init"), random_bytes(52, 20_000)).unwrap();
    std::fs::write(blobs.join("nsm.ko"), random_bytes(53, 9_000)).unwrap();
    std::fs::write(blobs.join("cmdline"), "console=ttyS0 reboot=k\n").unwrap();
    Repo {
        _dir: dir,
        root,
        recipe,
        blobs,
    }
}

fn run(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eifctl"));
    cmd.current_dir(&repo.root)
        .args(args)
        .env_remove("NITRO_CLI_BLOBS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Locks the recipe and commits the lock, as a release engineer does.
fn lock(repo: &Repo) {
    let o = run(
        repo,
        &[
            "lock",
            "recipes/hello",
            "--blobs",
            repo.blobs.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "lock: {}", stderr(&o));
    sh(&format!(
        "cd {} && git add -A && git -c user.name=t -c user.email=t@t commit -qm lock --allow-empty",
        repo.root.display()
    ));
}

fn build(repo: &Repo, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "recipes/hello",
        "--out",
        out,
        "--blobs",
        repo.blobs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(repo, &args, &[])
}

fn manifest(repo: &Repo, out: &str) -> Value {
    let bytes = std::fs::read(repo.root.join(out).join("hello/0.1.0/pcr-values.json")).unwrap();
    eifctl::manifest::Manifest::from_canonical(&bytes).expect("a canonical manifest");
    serde_json::from_slice(&bytes).unwrap()
}

fn ensure_base_loaded() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let docker = rt.block_on(eifctl::docker::connect()).unwrap();
    rt.block_on(images::base_image(&docker));
}

#[test]
fn two_clean_builds_give_the_same_image_pcrs_and_eif_bytes() {
    ensure_base_loaded();
    let repo = repo();
    lock(&repo);
    assert!(repo.recipe.join("recipe.lock").exists());
    for out in ["out-a", "out-b"] {
        let o = build(&repo, out, &["--no-cache"]);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
    }
    let (a, b) = (manifest(&repo, "out-a"), manifest(&repo, "out-b"));
    assert_eq!(a, b, "the manifests are identical");
    assert_eq!(a["complete"], true);
    for idx in ["0", "1", "2"] {
        assert_eq!(a["pcrs"][idx].as_str().unwrap().len(), 96);
    }
    let file = |out: &str, f: &str| {
        std::fs::read(repo.root.join(out).join("hello/0.1.0").join(f)).unwrap()
    };
    assert_eq!(file("out-a", "hello.eif"), file("out-b", "hello.eif"));
    assert_eq!(file("out-a", "image.tar"), file("out-b", "image.tar"));
    // The EIF measures what the manifest says.
    let d = json(&eifctl(&[
        "describe",
        "--json",
        repo.root
            .join("out-a/hello/0.1.0/hello.eif")
            .to_str()
            .unwrap(),
    ]));
    assert_eq!(d["Measurements"]["PCR0"], a["pcrs"]["0"]);
    assert_eq!(d["Measurements"]["PCR2"], a["pcrs"]["2"]);
    assert_eq!(a["inputs"]["source"]["dirty"], false);
    assert_eq!(a["inputs"]["source_date_epoch"], 1_700_000_000);
    assert_eq!(a["enclave_config"]["debug_mode"], false);

    // The schema in the repository accepts it.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pcr-values.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&a));

    // A changed source file changes PCR2 and PCR0, not PCR1.
    std::fs::write(repo.recipe.join("app/message.txt"), "version two\n").unwrap();
    let o = build(&repo, "out-c", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = manifest(&repo, "out-c");
    assert_ne!(c["pcrs"]["2"], a["pcrs"]["2"]);
    assert_ne!(c["pcrs"]["0"], a["pcrs"]["0"]);
    assert_eq!(c["pcrs"]["1"], a["pcrs"]["1"]);
    assert_eq!(c["inputs"]["source"]["dirty"], true);
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn without_boot_blobs_the_build_has_pcr2_and_an_incomplete_manifest() {
    ensure_base_loaded();
    let repo = repo();
    let o = run(
        &repo,
        &["lock", "recipes/hello"],
        &[("NITRO_CLI_BLOBS", "/nonexistent-blobs")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &repo,
        &["build", "recipes/hello", "--out", "out"],
        &[("NITRO_CLI_BLOBS", "/nonexistent-blobs")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("PCR0 and PCR1 need the blobs"),
        "{}",
        stderr(&o)
    );
    let m = manifest(&repo, "out");
    assert_eq!(m["complete"], false);
    assert!(m["pcrs"].get("0").is_none() && m["pcrs"].get("2").is_some());
    assert!(m.get("eif").is_none());
    let parsed = eifctl::manifest::Manifest::from_canonical(
        &std::fs::read(repo.root.join("out/hello/0.1.0/pcr-values.json")).unwrap(),
    )
    .unwrap();
    assert!(
        parsed.require_complete().is_err(),
        "publishing would refuse it"
    );

    // Its PCR2 is the one a full build gets.
    lock(&repo);
    let o = build(&repo, "full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest(&repo, "full")["pcrs"]["2"], m["pcrs"]["2"]);
}

#[test]
fn nitro_cli_as_eif_builder_and_the_cross_check() {
    ensure_base_loaded();
    let repo = repo();
    lock(&repo);
    // A stand-in for nitro-cli: builds with eifctl and prints nitro-cli <= 1.4's spelling of
    // the hash algorithm. It checks the output format, not nitro-cli's ramdisks.
    let honest = repo.root.join("nitro-cli");
    std::fs::write(&honest, format!(
        "#!/bin/sh\n[ \"$1\" = build-enclave ] || exit 64\nshift\n\"{}\" build-enclave --blobs \"$NITRO_CLI_BLOBS\" \"$@\" | sed 's/Sha512_48 {{ .. }}/Sha384 {{ ... }}/'\n",
        env!("CARGO_BIN_EXE_eifctl")
    )).unwrap();
    let lying = repo.root.join("lying-nitro-cli");
    std::fs::write(&lying, format!(
        "#!/bin/sh\nshift\n\"{}\" build-enclave --blobs \"$NITRO_CLI_BLOBS\" \"$@\" | sed 's/\"PCR2\": \"./\"PCR2\": \"0/'\n",
        env!("CARGO_BIN_EXE_eifctl")
    )).unwrap();
    sh(&format!(
        "chmod +x {} {}",
        honest.display(),
        lying.display()
    ));

    let o = build(&repo, "native", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build(
        &repo,
        "via-cli",
        &[
            "--eif-builder",
            "nitro-cli",
            "--nitro-cli",
            honest.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        manifest(&repo, "via-cli")["pcrs"],
        manifest(&repo, "native")["pcrs"]
    );
    let o = build(
        &repo,
        "checked",
        &["--cross-check", "--nitro-cli", honest.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build(
        &repo,
        "lied-to",
        &["--cross-check", "--nitro-cli", lying.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("PCR2 eifctl"), "{}", stderr(&o));
    assert!(
        !repo.root.join("lied-to/hello").exists(),
        "nothing published after a failed check"
    );
}

#[test]
fn every_refusal_has_its_message_and_exit_code_and_leaves_out_empty() {
    ensure_base_loaded();
    fn edit(repo: &Repo, file: &str, from: &str, to: &str) {
        let p = repo.recipe.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replace(from, to)).unwrap();
    }
    struct Case {
        what: &'static str,
        setup: Box<dyn Fn(&Repo)>,
        env: Vec<(&'static str, &'static str)>,
        code: i32,
        needle: &'static str,
    }
    let cases = vec![
        Case {
            what: "no lock",
            setup: Box::new(|_| {}),
            env: vec![],
            code: 2,
            needle: "no lock: run `eifctl lock",
        },
        Case {
            what: "unpinned FROM",
            setup: Box::new(|r| {
                lock(r);
                edit(r, "Dockerfile", "FROM ${BASE}", "FROM debian:bookworm")
            }),
            env: vec![],
            code: 2,
            needle: "Dockerfile:2: FROM debian:bookworm is not pinned",
        },
        Case {
            what: "stale lock",
            setup: Box::new(|r| {
                lock(r);
                let p = r.recipe.join("recipe.lock");
                let t = std::fs::read_to_string(&p).unwrap();
                let spec_line = t
                    .lines()
                    .find(|l| l.starts_with("spec = "))
                    .unwrap()
                    .to_string();
                std::fs::write(&p, t.replace(&spec_line, "spec = \"0000\"")).unwrap();
            }),
            env: vec![],
            code: 2,
            needle: "stale lock: base base changed in recipe.toml",
        },
        Case {
            what: "missing Dockerfile",
            setup: Box::new(|r| {
                lock(r);
                std::fs::remove_file(r.recipe.join("Dockerfile")).unwrap()
            }),
            env: vec![],
            code: 2,
            needle: "Dockerfile: No such file",
        },
        Case {
            what: "failing RUN",
            setup: Box::new(|r| {
                lock(r);
                edit(r, "Dockerfile", "echo built > /data/stamp", "false")
            }),
            env: vec![],
            code: 2,
            needle: "RUN chmod",
        },
        Case {
            what: "blob hash mismatch",
            setup: Box::new(|r| {
                lock(r);
                std::fs::write(r.blobs.join("init"), b"another init").unwrap()
            }),
            env: vec![],
            code: 2,
            needle: "boot blobs differ from the lock: init sha384",
        },
        Case {
            what: "no daemon",
            setup: Box::new(lock),
            env: vec![("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
            code: 3,
            needle: "no Docker daemon answers",
        },
    ];
    for case in cases {
        let repo = repo();
        (case.setup)(&repo);
        let mut args = vec![
            "build",
            "recipes/hello",
            "--out",
            "out",
            "--blobs",
            repo.blobs.to_str().unwrap(),
        ];
        args.push("--no-cache");
        let o = run(&repo, &args, &case.env);
        let err = stderr(&o);
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(o.status.code(), Some(case.code), "{}: {err}", case.what);
        assert!(
            last.starts_with("eifctl: error: ") && last.contains(case.needle),
            "{}: {err}",
            case.what
        );
        let out = repo.root.join("out");
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        let nested: Vec<_> = leftovers
            .iter()
            .flat_map(|p| {
                std::fs::read_dir(p)
                    .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        assert!(nested.is_empty(), "{}: left in out/: {nested:?}", case.what);
    }
}
