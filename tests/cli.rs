//! The `eifctl` commands as a user meets them: output formats, exit codes, one-line errors.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Assembles an EIF from a real bootstrap ramdisk and a random application ramdisk.
fn assemble(dir: &Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, std::process::Output) {
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, random_bytes(1, 5000)).unwrap();
    let boot = dir.join("bootstrap.cpio");
    std::fs::write(
        &boot,
        bootstrap_ramdisk(&random_bytes(2, 3000), &random_bytes(3, 2000)),
    )
    .unwrap();
    let app = dir.join("app.cpio");
    if !app.exists() {
        std::fs::write(&app, random_bytes(4, 7000)).unwrap();
    }
    let out = dir.join(name);
    let mut args = vec![
        "assemble",
        "--kernel",
        p(&kernel),
        "--cmdline",
        "console=ttyS0 reboot=k",
        "--ramdisk",
        p(&boot),
        "--ramdisk",
        p(&app),
        "--output",
        p(&out),
    ];
    args.extend_from_slice(extra);
    let o = eifctl(&args);
    (out, o)
}

#[test]
fn assemble_prints_measurements_as_nitro_cli_does_and_describe_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (eif, o) = assemble(dir.path(), "a.eif", &["--name", "demo", "--version", "2.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let built = json(&o);
    assert_eq!(keys(&built), ["Measurements"]);
    assert_eq!(
        keys(&built["Measurements"]),
        ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
    );
    assert_eq!(built["Measurements"]["HashAlgorithm"], "Sha512_48 { .. }");

    let d = eifctl(&["describe", "--json", p(&eif)]);
    assert!(d.status.success(), "{}", stderr(&d));
    let desc = json(&d);
    assert_eq!(
        keys(&desc),
        [
            "EifVersion",
            "Measurements",
            "IsSigned",
            "CheckCRC",
            "ImageName",
            "ImageVersion",
            "Metadata"
        ]
    );
    assert_eq!(desc["Measurements"], built["Measurements"]);
    assert_eq!(desc["EifVersion"], 4);
    assert_eq!(desc["IsSigned"], false);
    assert_eq!(desc["CheckCRC"], true);
    assert_eq!(desc["ImageName"], "demo");
    assert_eq!(desc["ImageVersion"], "2.1");
    assert_eq!(
        keys(&desc["Metadata"]),
        [
            "BuildTime",
            "BuildTool",
            "BuildToolVersion",
            "OperatingSystem",
            "KernelVersion",
            "DockerInfo"
        ]
    );
    assert_eq!(desc["Metadata"]["BuildTime"], "1970-01-01T00:00:00+00:00");
}

#[test]
fn assemble_is_deterministic_and_takes_its_time_from_source_date_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, o) = assemble(dir.path(), "a.eif", &[]);
    assert!(o.status.success());
    let (b, o) = assemble(dir.path(), "b.eif", &[]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let (c, o) = assemble(
        dir.path(),
        "c.eif",
        &[
            "--build-time",
            "2024-02-03T04:05:06Z",
            "--metadata",
            r#"{"commit":"abc"}"#,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let desc = json(&eifctl(&["describe", "--json", p(&c)]));
    assert_eq!(desc["Metadata"]["BuildTime"], "2024-02-03T04:05:06+00:00");
    assert_eq!(
        desc["Metadata"]["commit"], "abc",
        "custom metadata is flattened in"
    );

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_eifctl"))
        .args(["describe", "--json", p(&a)])
        .output()
        .unwrap();
    assert_eq!(
        json(&o)["Metadata"]["BuildTime"],
        "1970-01-01T00:00:00+00:00"
    );
}

#[test]
fn pcr_of_a_file_matches_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    std::fs::write(&f, random_bytes(8, 100_000)).unwrap();
    for args in [vec!["pcr", p(&f)], vec!["pcr", "--input", p(&f)]] {
        let o = eifctl(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(json(&o), serde_json::json!({"PCR": pcr_by_shell(&[&f])}));
    }
}

#[test]
fn pcr_of_a_signing_certificate_is_computed_over_its_der_form() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "openssl ecparam -name secp384r1 -genkey -noout -out {d}/key.pem && \
         openssl req -x509 -new -key {d}/key.pem -subj /CN=test -days 30 -out {d}/cert.pem && \
         openssl x509 -in {d}/cert.pem -outform DER -out {d}/cert.der"
    ));
    let o = eifctl(&["pcr", "--signing-certificate", &format!("{d}/cert.pem")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let der = dir.path().join("cert.der");
    assert_eq!(json(&o), serde_json::json!({"PCR8": pcr_by_shell(&[&der])}));
}

#[test]
fn describe_reports_a_crc_mismatch_and_strict_makes_it_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let (eif, o) = assemble(dir.path(), "a.eif", &[]);
    assert!(o.status.success());
    let mut b = std::fs::read(&eif).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&eif, &b).unwrap();

    let o = eifctl(&["describe", "--json", p(&eif)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["CheckCRC"], false);
    assert!(stderr(&o).contains("CRC mismatch"));

    let o = eifctl(&["describe", "--strict", p(&eif)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("MISMATCH"));
}

#[test]
fn describe_human_form_shows_layout_measurements_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (eif, _) = assemble(dir.path(), "a.eif", &["--name", "shown"]);
    let o = eifctl(&["describe", p(&eif)]);
    assert!(o.status.success());
    let text = stdout(&o);
    for needle in [
        "EIF version 4, x86_64",
        "kernel",
        "cmdline",
        "metadata",
        "ramdisk 0",
        "ramdisk 1",
        "PCR0",
        "PCR1",
        "PCR2",
        "CRC-32  ok",
        "signed  no",
        "name      shown",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn bad_input_gives_one_line_naming_the_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.eif");
    std::fs::write(&junk, b"definitely not an enclave image").unwrap();
    let missing = dir.path().join("missing.eif");
    for (args, needle) in [
        (vec!["describe", p(&junk)], "junk.eif: offset 0: not an EIF"),
        (vec!["describe", p(&missing)], "missing.eif"),
        (vec!["diff", p(&junk), p(&junk)], "junk.eif"),
        (
            vec!["blobs", "extract", p(&junk), p(dir.path())],
            "junk.eif",
        ),
        (vec!["pcr", p(&missing)], "missing.eif"),
        (vec!["pcr", "--signing-certificate", p(&junk)], "junk.eif"),
    ] {
        let o = eifctl(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("eifctl: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn assemble_rejects_bad_input_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--build-time", "yesterday"], "--build-time"),
        (vec!["--metadata", "[1,2]"], "JSON object"),
        (vec!["--metadata", p(&missing)], "nope"),
        (vec!["--arch", "riscv"], "riscv"),
    ];
    for (extra, needle) in cases {
        let (out, o) = assemble(dir.path(), "x.eif", &extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
    let o = eifctl(&[
        "assemble",
        "--kernel",
        p(&missing),
        "--cmdline",
        "x",
        "--ramdisk",
        p(&missing),
        "--output",
        p(&dir.path().join("y.eif")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            (n.ends_with(".eif") || n.contains(".tmp")).then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn blobs_extract_gives_back_the_exact_boot_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (eif, o) = assemble(dir.path(), "a.eif", &[]);
    assert!(o.status.success());
    let blobs = dir.path().join("blobs");
    let o = eifctl(&["blobs", "extract", p(&eif), p(&blobs)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(blobs.join("bzImage")).unwrap(),
        random_bytes(1, 5000)
    );
    assert_eq!(
        std::fs::read(blobs.join("init")).unwrap(),
        random_bytes(2, 3000)
    );
    assert_eq!(
        std::fs::read(blobs.join("nsm.ko")).unwrap(),
        random_bytes(3, 2000)
    );
    assert_eq!(
        std::fs::read_to_string(blobs.join("cmdline")).unwrap(),
        "console=ttyS0 reboot=k\n"
    );

    // Reassembling from the extracted blobs reproduces PCR1.
    let boot = dir.path().join("bootstrap.cpio");
    let again = dir.path().join("again.eif");
    let o = eifctl(&[
        "assemble",
        "--kernel",
        p(&blobs.join("bzImage")),
        "--cmdline-file",
        p(&blobs.join("cmdline")),
        "--ramdisk",
        p(&boot),
        "--output",
        p(&again),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pcr1 =
        |f: &Path| json(&eifctl(&["describe", "--json", p(f)]))["Measurements"]["PCR1"].clone();
    assert_eq!(pcr1(&again), pcr1(&eif));
}

#[test]
fn blobs_extract_fails_cleanly_when_the_bootstrap_ramdisk_lacks_init() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, b"kernel").unwrap();
    let boot = dir.path().join("boot.cpio");
    let mut w = eifctl::cpio::Writer::new(Vec::new(), eifctl::cpio::WriterOptions::linuxkit());
    w.append_file_bytes(b"nsm.ko", b"module", 0o755, 0, 0, 0)
        .unwrap();
    std::fs::write(&boot, w.finish().unwrap()).unwrap();
    let eif = dir.path().join("e.eif");
    let o = eifctl(&[
        "assemble",
        "--kernel",
        p(&kernel),
        "--cmdline",
        "x",
        "--ramdisk",
        p(&boot),
        "--output",
        p(&eif),
    ]);
    assert!(o.status.success());
    let out = dir.path().join("blobs");
    let o = eifctl(&["blobs", "extract", p(&eif), p(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("init"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn diff_of_identical_images_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = assemble(dir.path(), "a.eif", &[]);
    let (b, _) = assemble(dir.path(), "b.eif", &["--name", "other"]);
    let o = eifctl(&["diff", "--json", p(&a), p(&b)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let d = json(&o);
    assert_eq!(d["same_measurements"], true);
    let meta = d["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["section"] == "metadata")
        .unwrap();
    assert_eq!(meta["equal"], false, "the metadata differs, unmeasured");
}

#[test]
fn diff_explains_a_changed_application_down_to_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let app = |files: &[(&str, &[u8], u32)]| {
        let mut w = eifctl::cpio::Writer::new(Vec::new(), eifctl::cpio::WriterOptions::linuxkit());
        w.append_dir(b"rootfs", 0o755, 0, 0, 0).unwrap();
        for (name, data, mtime) in files {
            w.append_file_bytes(name.as_bytes(), data, 0o644, 0, 0, *mtime)
                .unwrap();
        }
        w.finish().unwrap()
    };
    std::fs::write(
        dir.path().join("app.cpio"),
        app(&[
            ("rootfs/app", b"v1", 10),
            ("rootfs/old", b"x", 10),
            ("rootfs/same", b"s", 10),
        ]),
    )
    .unwrap();
    let (a, _) = assemble(dir.path(), "a.eif", &[]);
    std::fs::write(
        dir.path().join("app.cpio"),
        app(&[
            ("rootfs/app", b"v2!", 10),
            ("rootfs/new", b"y", 10),
            ("rootfs/same", b"s", 99),
        ]),
    )
    .unwrap();
    let (b, _) = assemble(dir.path(), "b.eif", &[]);

    let o = eifctl(&["diff", "--json", p(&a), p(&b)]);
    assert_eq!(o.status.code(), Some(1));
    let d = json(&o);
    let verdict: Vec<(String, bool)> = d["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["register"].as_str().unwrap().to_string(),
                m["equal"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdict,
        [
            ("PCR0".into(), false),
            ("PCR1".into(), true),
            ("PCR2".into(), false),
            ("PCR8".into(), true)
        ]
    );
    let rd = &d["ramdisks"][0];
    assert_eq!(rd["ramdisk"], 1);
    assert_eq!(rd["added"][0]["path"], "rootfs/new");
    assert_eq!(rd["removed"][0]["path"], "rootfs/old");
    let changed: Vec<(String, Vec<String>)> = rd["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["field"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert!(
        changed.contains(&(
            "rootfs/app".into(),
            vec!["size".into(), "content sha256".into()]
        )),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .any(|(p, f)| p == "rootfs/same" && f.contains(&"mtime".to_string())),
        "{changed:?}"
    );

    let o = eifctl(&["diff", p(&a), p(&b)]);
    let text = stdout(&o);
    assert!(
        text.contains("PCR2  DIFFERS")
            && text.contains("+ rootfs/new")
            && text.contains("- rootfs/old")
            && text.contains("~ rootfs/app"),
        "{text}"
    );
}

fn openssl_pair(dir: &Path, name: &str, curve: &str) -> (String, String) {
    let d = dir.display();
    sh(&format!(
        "openssl ecparam -name {curve} -genkey -noout -out {d}/{name}.key && \
         openssl req -x509 -new -key {d}/{name}.key -subj /CN={name}/O=eifctl -days 30 -out {d}/{name}.pem"
    ));
    (format!("{d}/{name}.pem"), format!("{d}/{name}.key"))
}

#[test]
fn a_signed_image_shows_pcr8_and_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_pair(dir.path(), "signer", "secp384r1");
    let (eif, o) = assemble(
        dir.path(),
        "signed.eif",
        &["--signing-certificate", &cert, "--private-key", &key],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let built = json(&o);
    let expected_pcr8 = json(&eifctl(&["pcr", "--signing-certificate", &cert]))["PCR8"].clone();
    assert_eq!(built["Measurements"]["PCR8"], expected_pcr8);

    let o = eifctl(&["describe", "--json", "--strict", p(&eif)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let desc = json(&o);
    assert_eq!(
        keys(&desc),
        [
            "EifVersion",
            "Measurements",
            "IsSigned",
            "SigningCertificate",
            "CheckCRC",
            "SignatureCheck",
            "ImageName",
            "ImageVersion",
            "Metadata"
        ]
    );
    assert_eq!(desc["IsSigned"], true);
    assert_eq!(desc["SignatureCheck"], true);
    assert_eq!(desc["Measurements"], built["Measurements"]);
    assert_eq!(
        desc["SigningCertificate"]["IssuerName"]["commonName"],
        "signer"
    );
    assert_eq!(desc["SigningCertificate"]["Algorithm"], "ecdsa-with-SHA256");
}

#[test]
fn signing_with_a_key_that_does_not_match_the_certificate_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = openssl_pair(dir.path(), "one", "prime256v1");
    let (_, other_key) = openssl_pair(dir.path(), "two", "prime256v1");
    let (eif, o) = assemble(
        dir.path(),
        "never.eif",
        &["--signing-certificate", &cert, "--private-key", &other_key],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("one.pem"), "{}", stderr(&o));
    assert!(!eif.exists());
}

#[test]
fn a_signature_over_another_image_fails_the_strict_check() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_pair(dir.path(), "signer", "prime256v1");
    let (eif, o) = assemble(
        dir.path(),
        "signed.eif",
        &["--signing-certificate", &cert, "--private-key", &key],
    );
    assert!(o.status.success());
    // Flip a byte of the application ramdisk: PCR0 changes, the signature no longer covers it.
    let desc = eifctl::eif::EifFile::open(&eif).unwrap();
    let app = desc.ramdisks().nth(1).unwrap().offset as usize;
    let mut b = std::fs::read(&eif).unwrap();
    b[app + 10] ^= 0x55;
    std::fs::write(&eif, &b).unwrap();
    let o = eifctl(&["describe", "--json", "--strict", p(&eif)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["SignatureCheck"], false);
    assert!(
        stderr(&o).contains("signature does not verify"),
        "{}",
        stderr(&o)
    );
}
