//! Verify by rebuild, offline: build the fixture recipe, sign it with a fresh key, then verify
//! from a clean state; each kind of tampering gets its own verdict and exit code.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images;
use common::*;

struct Release {
    _dir: tempfile::TempDir,
    root: PathBuf,
    blobs: PathBuf,
    keys: PathBuf,
    /// out/hello/0.1.0 of the publisher's build.
    out: PathBuf,
}

fn git(root: &Path, args: &str) {
    sh(&format!(
        "cd {} && git -c user.name=t -c user.email=t@t {args}",
        root.display()
    ));
}

fn eifctl_in(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eifctl"));
    cmd.current_dir(root)
        .args(args)
        .env_remove("NITRO_CLI_BLOBS")
        .env_remove("EIFCTL_SIGNING_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    o
}

/// Publisher side: a repository with the fixture recipe, locked, built, signed.
fn release() -> Release {
    let rt = runtime();
    let docker = rt.block_on(eifctl::docker::connect()).unwrap();
    rt.block_on(images::base_image(&docker));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    write_fixture_recipe(&root);
    std::fs::write(root.join(".gitignore"), "/out\n").unwrap();
    git(&root, "init -q");
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join("bzImage"), random_bytes(61, 50_000)).unwrap();
    std::fs::write(blobs.join("init"), random_bytes(62, 20_000)).unwrap();
    std::fs::write(blobs.join("nsm.ko"), random_bytes(63, 9_000)).unwrap();
    std::fs::write(blobs.join("cmdline"), "console=ttyS0\n").unwrap();
    let b = blobs.to_str().unwrap();
    ok(
        eifctl_in(&root, &["lock", "recipes/hello", "--blobs", b], &[]),
        "lock",
    );
    git(&root, "add -A");
    git(&root, "commit -qm release");
    ok(
        eifctl_in(&root, &["build", "recipes/hello", "--blobs", b], &[]),
        "build",
    );

    let keys = dir.path().join("keys");
    let secret = dir.path().join("secret");
    ok(
        eifctl_in(
            &root,
            &[
                "key",
                "generate",
                "--userid",
                "Release <release@example.test>",
                "--out",
                secret.to_str().unwrap(),
                "--no-passphrase",
            ],
            &[],
        ),
        "key generate",
    );
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(secret.join("signing-key.pub.asc"), keys.join("release.asc")).unwrap();
    let out = root.join("out/hello/0.1.0");
    ok(
        eifctl_in(
            &root,
            &[
                "sign",
                out.join("pcr-values.json").to_str().unwrap(),
                "--key",
                secret.join("signing-key.asc").to_str().unwrap(),
            ],
            &[],
        ),
        "sign",
    );
    Release {
        _dir: dir,
        root,
        blobs,
        keys,
        out,
    }
}

fn verify(r: &Release, manifest: &Path, signature: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--manifest",
        manifest.to_str().unwrap(),
        "--signature",
        signature.to_str().unwrap(),
        "--keyring",
        r.keys.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    eifctl_in(&r.root, &args, &[])
}

#[test]
fn a_release_verifies_by_rebuild_and_every_tampering_has_its_verdict() {
    let r = release();
    let manifest = r.out.join("pcr-values.json");
    let sig = r.out.join("pcr-values.json.asc");
    let eif = r.out.join("hello.eif");
    // Copies away from out/, which the rebuild does not touch anyway.
    let held = r.root.join("../held");
    std::fs::create_dir_all(&held).unwrap();
    for f in ["pcr-values.json", "pcr-values.json.asc", "hello.eif"] {
        std::fs::copy(r.out.join(f), held.join(f)).unwrap();
    }
    let (manifest_c, sig_c, eif_c) = (
        held.join("pcr-values.json"),
        held.join("pcr-values.json.asc"),
        held.join("hello.eif"),
    );
    std::fs::remove_dir_all(r.root.join("out")).unwrap();

    // Match: blobs from the published EIF, source from the recorded revision.
    let o = verify(&r, &manifest_c, &sig_c, &["--eif", eif_c.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("PCR0        match") && text.contains("VERIFIED"),
        "{text}"
    );
    let _ = (&manifest, &sig, &eif);

    // A tampered manifest: the signature no longer holds.
    let tampered = held.join("tampered.json");
    let t = std::fs::read_to_string(&manifest_c)
        .unwrap()
        .replace("\"cpu_count\": 2", "\"cpu_count\": 4");
    std::fs::write(&tampered, t).unwrap();
    let o = verify(&r, &tampered, &sig_c, &["--eif", eif_c.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("NOT VERIFIED: signature"),
        "{}",
        stderr(&o)
    );

    // A damaged signature.
    let bad_sig = held.join("bad.asc");
    std::fs::write(
        &bad_sig,
        b"-----BEGIN PGP SIGNATURE-----\n\nnot a signature\n-----END PGP SIGNATURE-----\n",
    )
    .unwrap();
    let o = verify(
        &r,
        &manifest_c,
        &bad_sig,
        &["--eif", eif_c.to_str().unwrap()],
    );
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));

    // A key that is not trusted.
    let other_keys = held.join("other-keys");
    ok(
        eifctl_in(
            &r.root,
            &[
                "key",
                "generate",
                "--userid",
                "Stranger <s@example.test>",
                "--out",
                held.join("stranger").to_str().unwrap(),
                "--no-passphrase",
            ],
            &[],
        ),
        "stranger key",
    );
    std::fs::create_dir_all(&other_keys).unwrap();
    std::fs::copy(
        held.join("stranger/signing-key.pub.asc"),
        other_keys.join("stranger.asc"),
    )
    .unwrap();
    let o = eifctl_in(
        &r.root,
        &[
            "verify",
            "--manifest",
            manifest_c.to_str().unwrap(),
            "--signature",
            sig_c.to_str().unwrap(),
            "--keyring",
            other_keys.to_str().unwrap(),
            "--eif",
            eif_c.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("key"), "{}", stderr(&o));

    // One source file changed: --source no longer hashes to the recorded tree.
    let changed = r.root.join("../changed-source");
    sh(&format!(
        "cp -r {} {}",
        r.root.join("recipes/hello").display(),
        changed.display()
    ));
    std::fs::write(changed.join("app/message.txt"), "changed\n").unwrap();
    let o = verify(
        &r,
        &manifest_c,
        &sig_c,
        &[
            "--eif",
            eif_c.to_str().unwrap(),
            "--source",
            changed.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("the release records"), "{}", stderr(&o));

    // One blob changed: the rebuild refuses blobs the release's lock does not pin.
    let other_blobs = held.join("other-blobs");
    sh(&format!(
        "cp -r {} {}",
        r.blobs.display(),
        other_blobs.display()
    ));
    std::fs::write(other_blobs.join("init"), b"another init").unwrap();
    let o = verify(
        &r,
        &manifest_c,
        &sig_c,
        &["--blobs", other_blobs.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("init sha384"), "{}", stderr(&o));
}

#[test]
fn a_published_release_verifies_from_the_release_on_a_clean_output_directory() {
    let r = release();
    let gh = common::fake_github::FakeGitHub::start(true);
    let api = gh.api_url();
    let token = common::fake_github::TOKEN;
    let publish = eifctl_in(
        &r.root,
        &[
            "publish",
            "--repo",
            "acme/enclaves",
            "--tag",
            "v0.1.0",
            "--api-url",
            &api,
            "--with-eif",
            r.out.to_str().unwrap(),
        ],
        &[("GITHUB_TOKEN", token), ("EIFCTL_GITHUB_BACKOFF_MS", "1")],
    );
    assert!(publish.status.success(), "publish: {}", stderr(&publish));
    assert!(
        r.root
            .join("manifests/hello/0.1.0/pcr-values.json.asc")
            .exists(),
        "recorded in manifests/"
    );
    std::fs::remove_dir_all(r.root.join("out")).unwrap();

    let args = [
        "verify",
        "--repo",
        "acme/enclaves",
        "--tag",
        "v0.1.0",
        "--api-url",
        &api,
        "--keyring",
        r.keys.to_str().unwrap(),
    ];
    // The fake answers only with the token (like a private repository on GitHub).
    let o = eifctl_in(&r.root, &args, &[("GITHUB_TOKEN", token)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("VERIFIED"), "{}", stdout(&o));

    // The recorded copy in manifests/ verifies offline too, with the published EIF's blobs.
    let m = r.root.join("manifests/hello/0.1.0");
    let eif = r.root.join("../published.eif");
    std::fs::write(&eif, gh.asset_bytes("v0.1.0", "hello.eif").unwrap()).unwrap();
    let o = verify(
        &r,
        &m.join("pcr-values.json"),
        &m.join("pcr-values.json.asc"),
        &["--eif", eif.to_str().unwrap(), "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["matches"], true);
    assert_eq!(
        report["checks"].as_array().unwrap().len(),
        4,
        "PCR0, PCR1, PCR2 and the EIF hash"
    );
}

#[test]
fn a_signed_manifest_for_other_code_is_explained_down_to_the_changed_file() {
    let r = release();
    // The publisher builds from a modified tree but signs a manifest that claims the recorded
    // (clean) source: the rebuild from that source cannot reproduce its PCRs.
    let clean: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.out.join("pcr-values.json")).unwrap()).unwrap();
    std::fs::write(
        r.root.join("recipes/hello/app/message.txt"),
        "version two\n",
    )
    .unwrap();
    let b = r.blobs.to_str().unwrap();
    ok(
        eifctl_in(
            &r.root,
            &["build", "recipes/hello", "--blobs", b, "--out", "modified"],
            &[],
        ),
        "modified build",
    );
    git(&r.root, "checkout -q -- recipes/hello/app/message.txt");
    let modified_dir = r.root.join("modified/hello/0.1.0");
    let modified: serde_json::Value =
        serde_json::from_slice(&std::fs::read(modified_dir.join("pcr-values.json")).unwrap())
            .unwrap();
    let mut claimed = clean.clone();
    claimed["pcrs"] = modified["pcrs"].clone();
    claimed["eif"] = modified["eif"].clone();
    let held = r.root.join("../claimed");
    std::fs::create_dir_all(&held).unwrap();
    std::fs::write(
        held.join("pcr-values.json"),
        eifctl::manifest::canonical_json(&claimed),
    )
    .unwrap();
    ok(
        eifctl_in(
            &r.root,
            &[
                "sign",
                held.join("pcr-values.json").to_str().unwrap(),
                "--key",
                r.root.join("../secret/signing-key.asc").to_str().unwrap(),
            ],
            &[],
        ),
        "sign the claimed manifest",
    );
    let o = verify(
        &r,
        &held.join("pcr-values.json"),
        &held.join("pcr-values.json.asc"),
        &["--eif", modified_dir.join("hello.eif").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("PCR1        match"), "{text}");
    assert!(
        text.contains("PCR2        MISMATCH") && text.contains("PCR0        MISMATCH"),
        "{text}"
    );
    assert!(
        text.contains("~ rootfs/app/message.txt: content sha256"),
        "{text}"
    );
    assert!(text.contains("NOT VERIFIED"), "{text}");
}
