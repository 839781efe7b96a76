//! `eifctl attest verify`: genuine AWS Nitro Enclaves attestation documents (in `../shared`,
//! beside the repository) and documents made here by a test CA chain (the `openssl` command
//! line), one for each way a document can fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ciborium::value::Value;
use common::attestation::*;
use eifctl::attest::Document;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/attestation/"
    ));
    assert!(
        dir.join("README.md").is_file(),
        "the attestation fixtures are missing: expected {} (the `shared/` directory beside the repository)",
        dir.display()
    );
    dir
}

// ---------------------------------------------------------------------------
// Genuine documents

struct Genuine {
    file: &'static str,
    /// Inside the all-certificates validity window.
    at: &'static str,
    pcr0: &'static str,
    debug: bool,
    bad_signature: bool,
}

const GENUINE: &[Genuine] = &[
    Genuine {
        file: "yawn-nitro-attest-prod-2025-01-06.cbor",
        at: "2025-01-06T17:00:00Z",
        pcr0: "8bb159f202bb95d6d4d98e0e103918246cea734f1d57cd263e4fd56075ed53f6fa8c68854817a32749a241e11874c26b",
        debug: false,
        bad_signature: false,
    },
    Genuine {
        file: "evervault-prod-nonce-2022-10-13.cbor",
        at: "2022-10-13T09:30:00Z",
        pcr0: "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b",
        debug: false,
        bad_signature: false,
    },
    Genuine {
        file: "base-nitro-validator-prod-indefinite-2026-01-03.cbor",
        at: "2026-01-03T21:00:00Z",
        pcr0: "4b8d4cf2a99e05ce1b5bddaf9d21cb446eb0e606c5bebd1ebf02b473a22165f7b68b0bb0d1ac5a90f0311e493522cfab",
        debug: false,
        bad_signature: false,
    },
    Genuine {
        file: "anjuna-prod-userdata-2023-09-21.cbor",
        at: "2023-09-22T00:00:00Z",
        pcr0: "0f0b6b3e05d75450ab3cc91e6e105d2ffcb43edb4a4b7eccd63c9d2cf6e38c864ff6cfe0b8209f8b37059e8cc73469a0",
        debug: false,
        bad_signature: false,
    },
    Genuine {
        file: "anjuna-debug-full-2024-01-24.cbor",
        at: "2024-01-24T19:00:00Z",
        pcr0: "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        debug: true,
        bad_signature: false,
    },
    Genuine {
        file: "eternis-NEGATIVE-badsig-2024-07-23.cbor",
        at: "2024-07-23T22:00:00Z",
        pcr0: "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        debug: true,
        bad_signature: true,
    },
];

/// A manifest with the document's PCR0, PCR1, PCR2 and (when not zero) PCR8.
fn manifest_for(doc: &Document, dir: &Path) -> PathBuf {
    let mut pcrs: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in [0, 1, 2, 8] {
        let v = &doc.pcrs[&i];
        if i < 8 || v.iter().any(|b| *b != 0) {
            pcrs.insert(i, v.clone());
        }
    }
    let p = dir.join("pcr-values.json");
    std::fs::write(&p, manifest_bytes(&pcrs)).unwrap();
    p
}

#[test]
fn genuine_documents_get_the_verdicts_their_provenance_says() {
    let dir = fixtures();
    let tmp = TempDir::new().unwrap();
    for g in GENUINE {
        let file = dir.join(g.file);
        let bytes = std::fs::read(&file).unwrap();
        let doc = Document::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        assert_eq!(hex::encode(&doc.pcrs[&0]), g.pcr0, "{}", g.file);
        let manifest = manifest_for(&doc, tmp.path());
        let run = eifctl(&[
            "attest",
            "verify",
            path(&file),
            "--manifest",
            path(&manifest),
            "--at",
            g.at,
        ]);
        let ctx = format!("{}: {}{}", g.file, run.stdout, run.stderr);
        for name in ["cose", "chain", "validity", "pcr0", "pcr1", "pcr2"] {
            assert_eq!(run.verdict(name), Some(true), "{name} in {ctx}");
        }
        assert_eq!(run.verdict("signature"), Some(!g.bad_signature), "{ctx}");
        assert_eq!(run.verdict("debug"), Some(!g.debug), "{ctx}");
        if g.debug {
            assert!(run.line("debug").contains("debug mode"), "{ctx}");
        }
        if g.debug || g.bad_signature {
            assert_eq!(run.code, 1, "{ctx}");
            assert!(run.stderr.contains("does not verify"), "{ctx}");
        } else {
            assert_eq!(run.code, 0, "{ctx}");
        }

        // At the current time, every genuine document has long expired.
        let now = eifctl(&[
            "attest",
            "verify",
            path(&file),
            "--manifest",
            path(&manifest),
            "--at",
            &rfc3339(SystemTime::now()),
        ]);
        assert_eq!(now.code, 1, "{}", g.file);
        assert_eq!(now.verdict("validity"), Some(false), "{}", g.file);
        assert!(now.line("validity").contains("expired"), "{}", now.stdout);
        assert!(now.stderr.contains("validity"), "{}", now.stderr);
    }
}

#[test]
fn evervault_records_pcr8_and_a_nonce_and_both_are_checked() {
    let file = fixtures().join("evervault-prod-nonce-2022-10-13.cbor");
    let doc = Document::parse(&std::fs::read(&file).unwrap()).unwrap();
    let tmp = TempDir::new().unwrap();
    let manifest = manifest_for(&doc, tmp.path());
    let nonce = hex::encode(doc.nonce.as_ref().unwrap());
    let args = |n: &str| {
        eifctl(&[
            "attest",
            "verify",
            path(&file),
            "--manifest",
            path(&manifest),
            "--at",
            "2022-10-13T09:00:00Z",
            "--nonce",
            n,
        ])
    };
    let run = args(&nonce);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict("pcr8"), Some(true));
    assert_eq!(run.verdict("nonce"), Some(true));
    let run = args("00");
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("nonce"), Some(false));
}

#[test]
fn the_indefinite_length_payload_is_verified_over_the_bytes_as_received() {
    let file = fixtures().join("base-nitro-validator-prod-indefinite-2026-01-03.cbor");
    let doc = Document::parse(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc.payload.first(), Some(&0xbf), "an indefinite-length map");
    assert_eq!(doc.payload.last(), Some(&0xff));
    let opts = eifctl::attest::Options {
        pcrs: BTreeMap::new(),
        nonce: None,
        at: None,
        now: SystemTime::now(),
        max_age: None,
        root_sha256: eifctl::attest::Options::aws_root(),
    };
    let checks = doc.check(&opts);
    let sig = checks.iter().find(|c| c.name == "signature").unwrap();
    assert!(sig.ok, "{sig:?}");
}

#[test]
fn base64_and_json_forms_verify_like_the_raw_document() {
    use base64ct::{Base64, Base64Unpadded, Encoding};
    let file = fixtures().join("yawn-nitro-attest-prod-2025-01-06.cbor");
    let raw = std::fs::read(&file).unwrap();
    let doc = Document::parse(&raw).unwrap();
    let tmp = TempDir::new().unwrap();
    let manifest = manifest_for(&doc, tmp.path());
    let padded = Base64::encode_string(&raw);
    let wrapped: String = padded
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let forms = [
        ("padded.b64", padded.clone()),
        ("wrapped.b64", wrapped),
        ("unpadded.b64", Base64Unpadded::encode_string(&raw)),
        (
            "doc.json",
            serde_json::json!({ "attestation_document": padded }).to_string(),
        ),
    ];
    for (name, text) in forms {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        let run = eifctl(&[
            "attest",
            "verify",
            path(&p),
            "--manifest",
            path(&manifest),
            "--at",
            "2025-01-06T17:00:00Z",
            "--json",
        ]);
        assert_eq!(run.code, 0, "{name}: {}{}", run.stdout, run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(
            v["document"]["module_id"],
            "i-0bee92034f3d60691-enc01943c5eaab3ad6a"
        );
    }
}

// ---------------------------------------------------------------------------
// Documents made here

/// `attest verify doc --manifest M --root-cert root.pem extra...`
fn verify_made(pki: &Pki, doc: &[u8], extra: &[&str]) -> Run {
    let d = pki.dir.path();
    let doc = write(d, "doc.cbor", doc);
    let manifest = good_manifest(d);
    let root = pki.root_pem();
    let mut args = vec![
        "attest",
        "verify",
        path(&doc),
        "--manifest",
        path(&manifest),
        "--root-cert",
        path(&root),
    ];
    args.extend_from_slice(extra);
    eifctl(&args)
}

#[test]
fn documents_made_by_a_test_chain_get_one_verdict_per_failure() {
    let pki = pki();
    let d = pki.dir.path();
    let ts = now_ms();
    let good = sign_doc(fields(&pki, ts, None), &pki.leaf_key, -35);

    // Good, untagged and tagged (18).
    let run = verify_made(&pki, &good, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&good);
    let run = verify_made(&pki, &tagged, &["--max-age", "600"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict("freshness"), Some(true));

    // Wrong signature: chain fine, signature not.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let run = verify_made(&pki, &bad, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.verdict("signature"), Some(false));
    assert_eq!(run.verdict("chain"), Some(true));
    assert!(run.stderr.contains("failed signature"), "{}", run.stderr);

    // Broken chain: the leaf was issued by another CA (and signs the document itself).
    let mut f = fields(&pki, ts, None);
    f[4].1 = Value::Bytes(std::fs::read(d.join("other-leaf.der")).unwrap());
    let doc = sign_doc(f, &signing_key(d, "other-leaf"), -35);
    let run = verify_made(&pki, &doc, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("signature"), Some(true), "{}", run.stdout);
    assert_eq!(run.verdict("chain"), Some(false), "{}", run.stdout);
    assert!(
        run.line("chain").contains("not issued by"),
        "{}",
        run.stdout
    );

    // A good chain to a root that is not AWS's, without --root-cert.
    let doc_path = write(d, "good.cbor", &good);
    let manifest = good_manifest(d);
    let run = eifctl(&[
        "attest",
        "verify",
        path(&doc_path),
        "--manifest",
        path(&manifest),
    ]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("chain"), Some(false));
    assert!(
        run.line("chain")
            .contains(eifctl::attest::AWS_ROOT_G1_SHA256),
        "{}",
        run.stdout
    );

    // The leaf (one day) has expired two days from now.
    let later = rfc3339(SystemTime::now() + Duration::from_secs(2 * 86400));
    let run = verify_made(&pki, &good, &["--at", &later]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("validity"), Some(false));
    assert!(
        run.line("validity").contains("certificate expired"),
        "{}",
        run.stdout
    );

    // Stale, and from the future.
    let old = sign_doc(fields(&pki, ts - 3_600_000, None), &pki.leaf_key, -35);
    let now = rfc3339(SystemTime::now());
    let run = verify_made(&pki, &old, &["--at", &now, "--max-age", "60"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.verdict("freshness"), Some(false));
    assert!(run.line("freshness").contains("stale"), "{}", run.stdout);
    let future = sign_doc(fields(&pki, ts + 3_600_000, None), &pki.leaf_key, -35);
    let run = verify_made(&pki, &future, &["--at", &now, "--max-age", "60"]);
    assert_eq!(run.code, 1);
    assert!(run.line("freshness").contains("future"), "{}", run.stdout);

    // PCR mismatch.
    let mut f = fields(&pki, ts, None);
    if let Value::Map(p) = &mut f[3].1 {
        p[1].1 = Value::Bytes(vec![9; 48]);
    }
    let run = verify_made(&pki, &sign_doc(f, &pki.leaf_key, -35), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("pcr0"), Some(true));
    assert_eq!(run.verdict("pcr1"), Some(false));
    assert!(run.stderr.contains("failed pcr1"), "{}", run.stderr);

    // Debug mode.
    let mut f = fields(&pki, ts, None);
    if let Value::Map(p) = &mut f[3].1 {
        for (_, v) in p.iter_mut().take(3) {
            *v = Value::Bytes(vec![0; 48]);
        }
    }
    let run = verify_made(&pki, &sign_doc(f, &pki.leaf_key, -35), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("debug"), Some(false));

    // Nonce: equal, different, absent.
    let with_nonce = sign_doc(fields(&pki, ts, Some(b"hello")), &pki.leaf_key, -35);
    let run = verify_made(&pki, &with_nonce, &["--nonce", &hex::encode(b"hello")]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = verify_made(&pki, &with_nonce, &["--nonce", "00ff"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("nonce"), Some(false));
    let run = verify_made(&pki, &good, &["--nonce", "00ff"]);
    assert_eq!(run.code, 1);
    assert!(run.line("nonce").contains("no nonce"), "{}", run.stdout);

    // A timestamp far beyond any calendar: checked, not a crash.
    let run = verify_made(
        &pki,
        &sign_doc(fields(&pki, u64::MAX, None), &pki.leaf_key, -35),
        &["--max-age", "60"],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict("validity"), Some(false));
    assert_eq!(run.verdict("freshness"), Some(false));

    // Not ES384 in the protected header.
    let run = verify_made(
        &pki,
        &sign_doc(fields(&pki, ts, None), &pki.leaf_key, -7),
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.verdict("cose"), Some(false));
    assert_eq!(run.verdict("signature"), Some(false));
}

#[test]
fn the_manifest_signature_is_checked_and_fails_closed() {
    let pki = pki();
    let d = pki.dir.path();
    let good = sign_doc(fields(&pki, now_ms(), None), &pki.leaf_key, -35);
    let manifest = good_manifest(d);
    let trusted =
        eifctl::openpgp::generate_key("Release <release@example.test>", None, None).unwrap();
    let stranger = eifctl::openpgp::generate_key("Other <other@example.test>", None, None).unwrap();
    let keyring = write(d, "trusted.asc", trusted.public_armored.as_bytes());
    let data = std::fs::read(&manifest).unwrap();
    let doc = write(d, "doc.cbor", &good);
    let run_with = |secret: &str| {
        let sig = eifctl::openpgp::sign_detached(secret.as_bytes(), None, &data).unwrap();
        let sig = write(d, "pcr-values.json.asc", sig.as_bytes());
        eifctl(&[
            "attest",
            "verify",
            path(&doc),
            "--manifest",
            path(&manifest),
            "--root-cert",
            path(&pki.root_pem()),
            "--signature",
            path(&sig),
            "--keyring",
            path(&keyring),
        ])
    };
    let run = run_with(&trusted.secret_armored);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict("manifest-signature"), Some(true));
    let run = run_with(&stranger.secret_armored);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict("manifest-signature"), Some(false));
    assert!(run.stderr.contains("manifest-signature"), "{}", run.stderr);

    // A signature file that is not a signature: input error.
    let junk = write(d, "junk.asc", b"not a signature");
    let run = eifctl(&[
        "attest",
        "verify",
        path(&doc),
        "--manifest",
        path(&manifest),
        "--root-cert",
        path(&pki.root_pem()),
        "--signature",
        path(&junk),
        "--keyring",
        path(&keyring),
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
}

#[test]
fn malformed_documents_are_input_errors() {
    let pki = pki();
    let d = pki.dir.path();
    let ts = now_ms();
    let key = &pki.leaf_key;
    let with = |i: usize, v: Value| {
        let mut f = fields(&pki, ts, None);
        f[i].1 = v;
        sign_doc(f, key, -35)
    };
    let without = |i: usize| {
        let mut f = fields(&pki, ts, None);
        f.remove(i);
        sign_doc(f, key, -35)
    };
    let mut short_pcr = fields(&pki, ts, None);
    if let Value::Map(p) = &mut short_pcr[3].1 {
        p[0].1 = Value::Bytes(vec![1; 47]);
    }
    let mut p256 = fields(&pki, ts, None);
    p256[4].1 = Value::Bytes(std::fs::read(d.join("p256-leaf.der")).unwrap());
    let good = sign_doc(fields(&pki, ts, None), key, -35);
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        ("not base64 nor CBOR", b"hello, world!".to_vec(), "base64"),
        ("not CBOR", vec![0x84, 0x01], "not CBOR"),
        (
            "not an array",
            cbor(&Value::Map(vec![])),
            "not a CBOR array",
        ),
        (
            "three elements",
            cbor(&Value::Array(vec![Value::Null; 3])),
            "four elements",
        ),
        (
            "another tag",
            cbor(&Value::Tag(98, Box::new(Value::Null))),
            "tag 98",
        ),
        ("trailing bytes", trailing, "trailing"),
        (
            "JSON without the field",
            br#"{"doc": "x"}"#.to_vec(),
            "attestation_document",
        ),
        ("too large", vec![0x84; 70 * 1024], "limit"),
        ("no timestamp", without(2), "no timestamp"),
        (
            "module_id not text",
            with(0, Value::Integer(1.into())),
            "module_id",
        ),
        ("digest SHA256", with(1, text("SHA256")), "SHA384"),
        ("pcrs not a map", with(3, Value::Array(vec![])), "pcrs"),
        ("short PCR", sign_doc(short_pcr, key, -35), "47 bytes"),
        (
            "certificate not DER",
            with(4, Value::Bytes(vec![1, 2, 3])),
            "certificate",
        ),
        ("cabundle empty", with(5, Value::Array(vec![])), "cabundle"),
        (
            "nonce too long",
            with(8, Value::Bytes(vec![0; 1025])),
            "nonce",
        ),
        ("P-256 leaf", sign_doc(p256, key, -35), "not P-384"),
    ];
    let manifest = good_manifest(d);
    for (what, bytes, needle) in cases {
        let doc = write(d, "bad.cbor", &bytes);
        let run = eifctl(&[
            "attest",
            "verify",
            path(&doc),
            "--manifest",
            path(&manifest),
            "--root-cert",
            path(&pki.root_pem()),
        ]);
        assert_eq!(run.code, 2, "{what}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(needle), "{what}: {}", run.stderr);
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{what}: one line: {}",
            run.stderr
        );
    }
    // A manifest that is not canonical, a bad --nonce, a bad --at.
    let doc = write(d, "good.cbor", &good);
    let loose = write(d, "loose.json", b"{}");
    let run = eifctl(&["attest", "verify", path(&doc), "--manifest", path(&loose)]);
    assert_eq!(run.code, 2);
    for extra in [["--nonce", "xyz"], ["--at", "yesterday"]] {
        let mut args = vec![
            "attest",
            "verify",
            path(&doc),
            "--manifest",
            path(&manifest),
        ];
        args.extend_from_slice(&extra);
        assert_eq!(eifctl(&args).code, 2, "{extra:?}");
    }
}
