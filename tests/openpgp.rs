//! OpenPGP signing and verification: eifctl's keys and signatures against GnuPG 2.2 and sq
//! (Debian's, installed by scripts/test), every verdict of `verify-signature` with its exit
//! code, and `sign`'s refusals.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::{stderr, stdout};
use eifctl::manifest::Manifest;
use eifctl::openpgp::{self, Keyring, VerifyError};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs eifctl with only the given environment variables of ours (the test's own
/// EIFCTL_* variables, if any, are removed) and stdin from /dev/null.
fn eifctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eifctl"));
    c.args(args)
        .env_remove("EIFCTL_SIGNING_KEY")
        .env_remove("EIFCTL_KEY_PASSPHRASE")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running eifctl")
}

fn eifctl(args: &[&str]) -> Output {
    eifctl_env(args, &[])
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// A complete manifest, as `eifctl build` writes one.
fn manifest() -> Manifest {
    common::sample_manifest(true)
}

/// Writes the complete manifest as `dir/pcr-values.json`.
fn write_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("pcr-values.json");
    std::fs::write(&path, manifest().to_canonical()).unwrap();
    path
}

/// `eifctl key generate` into `dir/key`, encrypted with `passphrase` (None: --no-passphrase).
/// Returns the key directory and the fingerprint.
fn generate(dir: &Path, userid: &str, passphrase: Option<&str>) -> (PathBuf, String) {
    let out = dir.join("key");
    let o = match passphrase {
        Some(pw) => {
            let f = dir.join("passphrase");
            std::fs::write(&f, format!("{pw}\n")).unwrap();
            eifctl(&[
                "key",
                "generate",
                "--userid",
                userid,
                "--out",
                p(&out),
                "--passphrase-file",
                p(&f),
            ])
        }
        None => eifctl(&[
            "key",
            "generate",
            "--userid",
            userid,
            "--out",
            p(&out),
            "--no-passphrase",
        ]),
    };
    assert!(o.status.success(), "{}", stderr(&o));
    let fpr = stdout(&o).trim().to_string();
    assert_eq!(fpr.len(), 40, "{fpr}");
    (out, fpr)
}

/// A GnuPG home of its own, so nothing touches the user's keyring.
struct Gpg {
    home: tempfile::TempDir,
}

impl Drop for Gpg {
    /// Stops the gpg-agent this home started.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running gpg (scripts/test installs gnupg)")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "gpg {args:?}: {}", stderr(&o));
        o
    }

    /// A new key with no passphrase; returns its fingerprint.
    fn generate(&self, userid: &str, algo: &str, expire: &str, extra: &[&str]) -> String {
        let mut args = extra.to_vec();
        args.extend([
            "--passphrase",
            "",
            "--quick-gen-key",
            userid,
            algo,
            "sign",
            expire,
        ]);
        self.ok(&args);
        let o = self.ok(&["--with-colons", "--list-keys", userid]);
        stdout(&o)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_string())
            .expect("a fingerprint")
    }

    fn export(&self, fpr: &str, to: &Path) {
        let o = self.ok(&["--armor", "--export", fpr]);
        std::fs::write(to, o.stdout).unwrap();
    }

    fn detach_sign(&self, fpr: &str, data: &Path, sig: &Path, extra: &[&str]) {
        let mut args = extra.to_vec();
        args.extend([
            "--passphrase",
            "",
            "--local-user",
            fpr,
            "--armor",
            "--output",
            p(sig),
            "--detach-sign",
            p(data),
        ]);
        self.ok(&args);
    }
}

fn verify_cli(data: &Path, sig: &Path, keyring: &Path) -> Output {
    eifctl(&["verify-signature", p(data), p(sig), "--keyring", p(keyring)])
}

/// The one error line, and no other output on stderr.
fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("eifctl: error: "), "{err}");
    err
}

#[test]
fn key_generate_writes_a_private_secret_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (key, fpr) = generate(dir.path(), "Release <release@example.org>", Some("pw 1"));
    let mode = |f: &str| std::fs::metadata(key.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("signing-key.asc"), 0o600);
    assert_eq!(mode("signing-key.rev.asc"), 0o600);
    assert_eq!(mode("signing-key.pub.asc"), 0o644);
    let secret = std::fs::read_to_string(key.join("signing-key.asc")).unwrap();
    assert!(secret.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    let public = std::fs::read_to_string(key.join("signing-key.pub.asc")).unwrap();
    assert!(public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(!public.contains("PRIVATE"));

    // export gives the same certificate as the .pub.asc file
    let o = eifctl(&["key", "export", "--key", p(&key.join("signing-key.asc"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), public);
    let out = dir.path().join("exported.asc");
    let o = eifctl(&[
        "key",
        "export",
        "--key",
        p(&key.join("signing-key.asc")),
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        openpgp::fingerprint(&std::fs::read(&out).unwrap()).unwrap(),
        fpr
    );

    // never over an existing key
    let before = std::fs::read(key.join("signing-key.asc")).unwrap();
    let o = eifctl(&[
        "key",
        "generate",
        "--userid",
        "Other <o@example.org>",
        "--out",
        p(&key),
        "--no-passphrase",
    ]);
    assert_eq!(code(&o), 2);
    assert!(one_error_line(&o).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(key.join("signing-key.asc")).unwrap(), before);

    // no passphrase source and no terminal: refused, nothing written
    let other = dir.path().join("other");
    let o = eifctl(&[
        "key",
        "generate",
        "--userid",
        "X <x@example.org>",
        "--out",
        p(&other),
    ]);
    assert_eq!(code(&o), 2);
    assert!(one_error_line(&o).contains("--no-passphrase"));
    assert!(!other.exists());

    // the passphrase from the environment
    let o = eifctl_env(
        &[
            "key",
            "generate",
            "--userid",
            "Env <e@example.org>",
            "--out",
            p(&other),
        ],
        &[("EIFCTL_KEY_PASSPHRASE", "from env")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let data = b"x";
    let secret = std::fs::read(other.join("signing-key.asc")).unwrap();
    assert!(openpgp::sign_detached(&secret, Some("from env"), data).is_ok());
}

#[test]
fn eifctl_signatures_verify_with_gpg_and_sq() {
    let dir = tempfile::tempdir().unwrap();
    let (key, fpr) = generate(dir.path(), "Release <release@example.org>", Some("secret"));
    let m = write_manifest(dir.path());
    let o = eifctl(&[
        "sign",
        p(&m),
        "--key",
        p(&key.join("signing-key.asc")),
        "--passphrase-file",
        p(&dir.path().join("passphrase")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&fpr), "{}", stderr(&o));
    let sig = dir.path().join("pcr-values.json.asc");
    let signer = dir.path().join("signer.asc");
    assert!(
        std::fs::read_to_string(&sig)
            .unwrap()
            .starts_with("-----BEGIN PGP SIGNATURE-----")
    );

    // GnuPG 2.2
    let gpg = Gpg::new();
    gpg.ok(&["--import", p(&signer)]);
    let o = gpg.ok(&["--trust-model", "always", "--verify", p(&sig), p(&m)]);
    let err = stderr(&o);
    assert!(
        err.contains("Good signature from \"Release <release@example.org>\""),
        "{err}"
    );
    assert!(err.contains(&fpr), "{err}");
    let other = dir.path().join("other.json");
    std::fs::write(&other, b"{}\n").unwrap();
    let o = gpg.run(&["--trust-model", "always", "--verify", p(&sig), p(&other)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("BAD signature"), "{}", stderr(&o));

    // sq
    let o = Command::new("sq")
        .args([
            "verify",
            "--signer-cert",
            p(&signer),
            "--detached",
            p(&sig),
            p(&m),
        ])
        .output()
        .expect("running sq (scripts/test installs sq)");
    assert!(o.status.success(), "sq verify: {}", stderr(&o));
    let o = Command::new("sq")
        .args([
            "verify",
            "--signer-cert",
            p(&signer),
            "--detached",
            p(&sig),
            p(&other),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());

    // and eifctl itself, with the certificate in a keyring directory
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(key.join("signing-key.pub.asc"), keys.join("release.asc")).unwrap();
    std::fs::write(keys.join("README.md"), b"not a key").unwrap();
    let o = verify_cli(&m, &sig, &keys);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let line = stdout(&o);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("good signature") && line.contains(&fpr),
        "{line}"
    );
    assert!(line.contains("Release <release@example.org>"), "{line}");
}

#[test]
fn gpg_signatures_verify_with_eifctl_and_are_unknown_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_manifest(dir.path());
    let gpg = Gpg::new();
    let ed = gpg.generate("Gpg Ed <ed@example.org>", "ed25519", "never", &[]);
    let rsa = gpg.generate("Gpg Rsa <rsa@example.org>", "rsa2048", "never", &[]);
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    gpg.export(&ed, &keys.join("ed.asc"));

    let ed_sig = dir.path().join("ed.asc");
    gpg.detach_sign(&ed, &data, &ed_sig, &[]);
    let o = verify_cli(&data, &ed_sig, &keys);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&ed), "{}", stdout(&o));

    // a binary (unarmored) signature too, in the library
    let bin_sig = dir.path().join("ed.sig");
    gpg.ok(&[
        "--local-user",
        &ed,
        "--output",
        p(&bin_sig),
        "--detach-sign",
        p(&data),
    ]);
    let ring = Keyring::load(&keys).unwrap();
    let v = openpgp::verify_detached(
        &std::fs::read(&data).unwrap(),
        &std::fs::read(&bin_sig).unwrap(),
        &ring,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(v.fingerprint, ed);
    assert_eq!(v.userids, ["Gpg Ed <ed@example.org>"]);

    // signed by a key that is not in the keyring
    let rsa_sig = dir.path().join("rsa.asc");
    gpg.detach_sign(&rsa, &data, &rsa_sig, &[]);
    let o = verify_cli(&data, &rsa_sig, &keys);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(one_error_line(&o).contains("unknown key"), "{}", stderr(&o));
    let err = openpgp::verify_detached(
        &std::fs::read(&data).unwrap(),
        &std::fs::read(&rsa_sig).unwrap(),
        &ring,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::UnknownKey { issuer } if rsa.ends_with(issuer.as_str())),
        "{err}"
    );

    // RSA signatures are verified (only signing with RSA is refused)
    gpg.export(&rsa, &keys.join("rsa.asc"));
    let o = verify_cli(&data, &rsa_sig, &keys);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rsa_secret = gpg
        .ok(&["--passphrase", "", "--armor", "--export-secret-keys", &rsa])
        .stdout;
    let r = openpgp::sign_detached(&rsa_secret, None, b"data");
    assert!(
        matches!(r, Err(openpgp::OpenPgpError::UnsupportedAlgorithm { .. })),
        "{r:?}"
    );

    // a text-mode signature is not what eifctl verifies: malformed, exit 2
    let text_sig = dir.path().join("text.asc");
    gpg.detach_sign(&ed, &data, &text_sig, &["--textmode"]);
    let o = verify_cli(&data, &text_sig, &keys);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        one_error_line(&o).contains("binary-document"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sq_signatures_verify_with_eifctl() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_manifest(dir.path());
    let key = dir.path().join("sq-key.pgp");
    let sq = |args: &[&str]| {
        let o = Command::new("sq")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running sq");
        assert!(o.status.success(), "sq {args:?}: {}", stderr(&o));
    };
    // a certify-only primary key with a signing subkey, as sq makes them by default
    sq(&[
        "key",
        "generate",
        "--userid",
        "Sq <sq@example.org>",
        "--cannot-encrypt",
        "--export",
        p(&key),
    ]);
    let cert = dir.path().join("sq-cert.asc");
    sq(&["key", "extract-cert", "--output", p(&cert), p(&key)]);
    let sig = dir.path().join("sq.sig");
    sq(&[
        "sign",
        "--detached",
        "--signer-key",
        p(&key),
        "--output",
        p(&sig),
        p(&data),
    ]);
    let o = verify_cli(&data, &sig, &cert);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ring = Keyring::load(&cert).unwrap();
    let v = openpgp::verify_detached(
        &std::fs::read(&data).unwrap(),
        &std::fs::read(&sig).unwrap(),
        &ring,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        v.fingerprint,
        ring.fingerprints()[0],
        "the certificate, not the subkey"
    );
    assert_ne!(v.key_fingerprint, v.fingerprint);
}

#[test]
fn every_failure_has_its_verdict_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, fpr) = generate(d, "Release <release@example.org>", None);
    let data = write_manifest(d);
    let o = eifctl(&["sign", p(&data), "--key", p(&key.join("signing-key.asc"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sig = d.join("pcr-values.json.asc");
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(key.join("signing-key.pub.asc"), keys.join("release.asc")).unwrap();
    let ring = Keyring::load(&keys).unwrap();
    let bytes = std::fs::read(&data).unwrap();
    let sig_bytes = std::fs::read(&sig).unwrap();
    let now = SystemTime::now();
    let verify = |data: &[u8], sig: &[u8]| openpgp::verify_detached(data, sig, &ring, now);
    assert!(verify(&bytes, &sig_bytes).is_ok());

    // other bytes: BAD, exit 1
    let mut edited = bytes.clone();
    edited[10] ^= 1;
    assert!(matches!(
        verify(&edited, &sig_bytes),
        Err(VerifyError::BadSignature { fingerprint }) if fingerprint == fpr
    ));
    let other = d.join("edited.json");
    std::fs::write(&other, &edited).unwrap();
    let o = verify_cli(&other, &sig, &keys);
    assert_eq!(code(&o), 1);
    assert!(
        one_error_line(&o).contains("BAD signature"),
        "{}",
        stderr(&o)
    );

    // a corrupted signature value: BAD or malformed, never good
    let mut bin = Vec::new();
    {
        let text = String::from_utf8(sig_bytes.clone()).unwrap();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.contains(':') && !l.starts_with('='))
            .collect();
        use base64ct::Encoding;
        bin.extend(base64ct::Base64::decode_vec(body.trim()).unwrap());
    }
    assert!(verify(&bytes, &bin).is_ok(), "the binary form verifies");
    let mut flipped = bin.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    assert!(
        matches!(
            verify(&bytes, &flipped),
            Err(VerifyError::BadSignature { .. } | VerifyError::Malformed(_))
        ),
        "{:?}",
        verify(&bytes, &flipped)
    );

    // truncated, garbage, empty, a key instead of a signature: input errors, exit 2
    let text = String::from_utf8(sig_bytes.clone()).unwrap();
    let truncated = &text[..text.len() / 2];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", truncated.as_bytes().to_vec()),
        ("truncated binary", bin[..bin.len() / 2].to_vec()),
        ("garbage", b"this is not a signature\n".to_vec()),
        ("empty", Vec::new()),
        (
            "a certificate",
            std::fs::read(key.join("signing-key.pub.asc")).unwrap(),
        ),
    ];
    for (what, bad) in &cases {
        let r = verify(&bytes, bad);
        assert!(
            matches!(
                r,
                Err(VerifyError::Malformed(_) | VerifyError::NoSignature(_))
            ),
            "{what}: {r:?}"
        );
        let f = d.join("bad.asc");
        std::fs::write(&f, bad).unwrap();
        let o = verify_cli(&data, &f, &keys);
        assert_eq!(code(&o), 2, "{what}: {}", stderr(&o));
        one_error_line(&o);
    }
    assert!(matches!(
        verify(&bytes, b""),
        Err(VerifyError::NoSignature(_))
    ));
    assert!(matches!(
        verify(&bytes, b"garbage"),
        Err(VerifyError::Malformed(_))
    ));

    // missing files and an empty keyring: exit 2
    let o = verify_cli(&d.join("missing.json"), &sig, &keys);
    assert_eq!(code(&o), 2);
    one_error_line(&o);
    let o = verify_cli(&data, &d.join("missing.asc"), &keys);
    assert_eq!(code(&o), 2);
    let empty = d.join("empty-keys");
    std::fs::create_dir(&empty).unwrap();
    let o = verify_cli(&data, &sig, &empty);
    assert_eq!(code(&o), 2);
    assert!(
        one_error_line(&o).contains("no certificates"),
        "{}",
        stderr(&o)
    );
    // a secret key in a keyring is refused
    let secret_ring = d.join("secret-keys");
    std::fs::create_dir(&secret_ring).unwrap();
    std::fs::copy(key.join("signing-key.asc"), secret_ring.join("oops.asc")).unwrap();
    let o = verify_cli(&data, &sig, &secret_ring);
    assert_eq!(code(&o), 2);
    assert!(one_error_line(&o).contains("secret key"), "{}", stderr(&o));

    // a key that is not trusted: exit 1
    let other_dir = d.join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let (other_key, _) = generate(&other_dir, "Other <other@example.org>", None);
    let o = verify_cli(&data, &sig, &other_key.join("signing-key.pub.asc"));
    assert_eq!(code(&o), 1);
    assert!(one_error_line(&o).contains("unknown key"), "{}", stderr(&o));

    // revoked: the revocation certificate next to the certificate
    std::fs::copy(
        key.join("signing-key.rev.asc"),
        keys.join("release.rev.asc"),
    )
    .unwrap();
    let revoked_ring = Keyring::load(&keys).unwrap();
    assert_eq!(revoked_ring.len(), 1, "merged by fingerprint");
    let r = openpgp::verify_detached(&bytes, &sig_bytes, &revoked_ring, now);
    assert!(
        matches!(&r, Err(VerifyError::Revoked { fingerprint, .. }) if *fingerprint == fpr),
        "{r:?}"
    );
    let o = verify_cli(&data, &sig, &keys);
    assert_eq!(code(&o), 1);
    assert!(one_error_line(&o).contains("revoked"), "{}", stderr(&o));
    // the revocation certificate alone (the certificate removed, as keys/README.md says)
    std::fs::remove_file(keys.join("release.asc")).unwrap();
    let o = verify_cli(&data, &sig, &keys);
    assert_eq!(code(&o), 1);
    assert!(one_error_line(&o).contains("revoked"), "{}", stderr(&o));
}

#[test]
fn expired_keys_and_signatures_do_not_verify() {
    // in the library: a key valid for a day, checked two days later
    let key = openpgp::generate_key(
        "Short <short@example.org>",
        None,
        Some(Duration::from_secs(86_400)),
    )
    .unwrap();
    let sig = openpgp::sign_detached(key.secret_armored.as_bytes(), None, b"data").unwrap();
    let ring = Keyring::from_bytes(key.public_armored.as_bytes()).unwrap();
    let now = SystemTime::now();
    assert!(openpgp::verify_detached(b"data", sig.as_bytes(), &ring, now).is_ok());
    let later = now + Duration::from_secs(2 * 86_400);
    let r = openpgp::verify_detached(b"data", sig.as_bytes(), &ring, later);
    assert!(
        matches!(&r, Err(VerifyError::Expired { fingerprint, .. }) if *fingerprint == key.fingerprint),
        "{r:?}"
    );
    // a signature that expires by itself
    {
        use pgp::packet::signature::SignatureBuilder;
        use pgp::parse::Parse;
        use pgp::serialize::SerializeInto;
        use pgp::types::SignatureType;
        use sequoia_openpgp as pgp;
        let cert = pgp::Cert::from_bytes(key.secret_armored.as_bytes()).unwrap();
        let mut pair = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let sig = SignatureBuilder::new(SignatureType::Binary)
            .set_signature_validity_period(Duration::from_secs(3600))
            .unwrap()
            .sign_message(&mut pair, b"data")
            .unwrap();
        let sig = pgp::Packet::from(sig).to_vec().unwrap();
        assert!(openpgp::verify_detached(b"data", &sig, &ring, now).is_ok());
        let r = openpgp::verify_detached(b"data", &sig, &ring, now + Duration::from_secs(7200));
        assert!(
            matches!(&r, Err(VerifyError::Expired { detail, .. }) if detail.contains("signature")),
            "{r:?}"
        );
    }

    // through the CLI: a gpg key made and used in 2020 that expired a day later
    let dir = tempfile::tempdir().unwrap();
    let data = write_manifest(dir.path());
    let gpg = Gpg::new();
    let fake = ["--faked-system-time", "20200101T000000"];
    let fpr = gpg.generate("Old <old@example.org>", "ed25519", "1d", &fake);
    let sig = dir.path().join("old.asc");
    gpg.detach_sign(&fpr, &data, &sig, &fake);
    let cert = dir.path().join("old-cert.asc");
    gpg.export(&fpr, &cert);
    let o = verify_cli(&data, &sig, &cert);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(one_error_line(&o).contains("expired"), "{}", stderr(&o));
}

#[test]
fn a_certification_only_key_is_not_signing_capable() {
    use pgp::cert::prelude::*;
    use pgp::packet::signature::SignatureBuilder;
    use pgp::serialize::SerializeInto;
    use pgp::types::{KeyFlags, SignatureType};
    use sequoia_openpgp as pgp;

    let (cert, _) = CertBuilder::new()
        .set_profile(pgp::Profile::RFC4880)
        .unwrap()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification())
        .add_userid("Certify <c@example.org>")
        .generate()
        .unwrap();
    let mut pair = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .sign_message(&mut pair, b"data")
        .unwrap();
    let armored = pgp::Packet::from(sig).to_vec().unwrap();
    let ring = Keyring::from_bytes(
        &cert
            .clone()
            .strip_secret_key_material()
            .armored()
            .to_vec()
            .unwrap(),
    )
    .unwrap();
    let r = openpgp::verify_detached(b"data", &armored, &ring, SystemTime::now());
    assert!(
        matches!(r, Err(VerifyError::NotSigningCapable { .. })),
        "{r:?}"
    );
    // and eifctl does not sign with it
    let tsk = cert.as_tsk().armored().to_vec().unwrap();
    assert!(matches!(
        openpgp::sign_detached(&tsk, None, b"data"),
        Err(openpgp::OpenPgpError::NoSigningKey { .. })
    ));
}

#[test]
fn sign_refuses_non_canonical_and_incomplete_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, _) = generate(d, "Release <release@example.org>", None);
    let key_file = key.join("signing-key.asc");

    let compact = d.join("compact.json");
    let value: serde_json::Value = serde_json::from_slice(&manifest().to_canonical()).unwrap();
    std::fs::write(&compact, serde_json::to_vec(&value).unwrap()).unwrap();
    let o = eifctl(&["sign", p(&compact), "--key", p(&key_file)]);
    assert_eq!(code(&o), 2);
    assert!(
        one_error_line(&o).contains("not canonical"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("compact.json.asc").exists());
    assert!(!d.join("signer.asc").exists());

    let mut m = manifest();
    m.complete = false;
    m.eif = None;
    m.pcrs.remove("0");
    m.pcrs.remove("1");
    let incomplete = d.join("incomplete.json");
    std::fs::write(&incomplete, m.to_canonical()).unwrap();
    let o = eifctl(&["sign", p(&incomplete), "--key", p(&key_file)]);
    assert_eq!(code(&o), 2);
    assert!(one_error_line(&o).contains("incomplete"), "{}", stderr(&o));
    assert!(!d.join("incomplete.json.asc").exists());

    let o = eifctl(&["sign", p(&d.join("missing.json")), "--key", p(&key_file)]);
    assert_eq!(code(&o), 2);
    one_error_line(&o);
}

#[test]
fn sign_takes_the_key_from_the_environment_and_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_manifest(d);
    let sig = d.join("pcr-values.json.asc");

    // no key at all: exit 3
    let o = eifctl(&["sign", p(&data)]);
    assert_eq!(code(&o), 3);
    assert!(
        one_error_line(&o).contains("EIFCTL_SIGNING_KEY"),
        "{}",
        stderr(&o)
    );
    assert!(!sig.exists());

    // an unencrypted key from the environment (CI)
    let (plain, plain_fpr) = generate(d, "Ci <ci@example.org>", None);
    let armored = std::fs::read_to_string(plain.join("signing-key.asc")).unwrap();
    let o = eifctl_env(&["sign", p(&data)], &[("EIFCTL_SIGNING_KEY", &armored)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&plain_fpr));
    let signer = std::fs::read(d.join("signer.asc")).unwrap();
    assert_eq!(openpgp::fingerprint(&signer).unwrap(), plain_fpr);
    let o = verify_cli(&data, &sig, &d.join("signer.asc"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // an encrypted key from the environment, with its passphrase from the environment
    let enc_dir = d.join("enc");
    std::fs::create_dir(&enc_dir).unwrap();
    let (enc, enc_fpr) = generate(&enc_dir, "Enc <enc@example.org>", Some("correct horse"));
    let armored = std::fs::read_to_string(enc.join("signing-key.asc")).unwrap();
    let o = eifctl_env(
        &["sign", p(&data)],
        &[
            ("EIFCTL_SIGNING_KEY", &armored),
            ("EIFCTL_KEY_PASSPHRASE", "correct horse"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&enc_fpr));

    // wrong passphrase: a clear error, nothing replaced
    let before = std::fs::read(&sig).unwrap();
    let o = eifctl_env(
        &["sign", p(&data)],
        &[
            ("EIFCTL_SIGNING_KEY", &armored),
            ("EIFCTL_KEY_PASSPHRASE", "wrong"),
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(
        one_error_line(&o).contains("wrong passphrase"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&sig).unwrap(), before);

    // no passphrase and no terminal: exit 3, saying how to give one
    let o = eifctl(&["sign", p(&data), "--key", p(&enc.join("signing-key.asc"))]);
    assert_eq!(code(&o), 3);
    assert!(
        one_error_line(&o).contains("EIFCTL_KEY_PASSPHRASE"),
        "{}",
        stderr(&o)
    );

    // a public certificate is not a signing key
    let o = eifctl(&[
        "sign",
        p(&data),
        "--key",
        p(&enc.join("signing-key.pub.asc")),
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        one_error_line(&o).contains("no secret key"),
        "{}",
        stderr(&o)
    );
}
