//! The EIF signature section, specified against an independent
//! implementation: every key, certificate, digest and foreign signature here
//! comes from the `openssl` command line, and the CBOR/COSE layout is checked
//! by hand against what nitro-cli (serde_cbor + aws-nitro-enclaves-cose)
//! writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ciborium::value::Value;
use eifctl::eif::signature::{
    MAX_SIGNATURE_SECTION, Pcr0Check, PcrSignature, SignatureError, SignatureSection,
    certificate_info, pcr8, sign_pcr0,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Fixtures

/// One of the three curves nitro-cli can sign with, with what COSE and
/// OpenSSL call it.
#[derive(Clone, Copy, Debug)]
struct Curve {
    openssl_name: &'static str,
    digest: &'static str,
    /// The protected header as a bstr: `{1: alg}`.
    protected_bstr: &'static [u8],
    scalar_len: usize,
}

const P256: Curve = Curve {
    openssl_name: "prime256v1",
    digest: "-sha256",
    protected_bstr: &[0x43, 0xa1, 0x01, 0x26], // {1: -7} ES256
    scalar_len: 32,
};
const P384: Curve = Curve {
    openssl_name: "secp384r1",
    digest: "-sha384",
    protected_bstr: &[0x44, 0xa1, 0x01, 0x38, 0x22], // {1: -35} ES384
    scalar_len: 48,
};
const P521: Curve = Curve {
    openssl_name: "secp521r1",
    digest: "-sha512",
    protected_bstr: &[0x44, 0xa1, 0x01, 0x38, 0x23], // {1: -36} ES512
    scalar_len: 66,
};
const CURVES: [Curve; 3] = [P256, P384, P521];

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl_text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(openssl(dir, args)).expect("openssl prints UTF-8")
}

/// A self-signed signing identity, as a nitro-cli user would make one.
struct Identity {
    dir: TempDir,
    curve: Curve,
    cert_pem: Vec<u8>,
    /// `openssl ecparam -genkey` output: EC PARAMETERS then EC PRIVATE KEY.
    sec1_pem: Vec<u8>,
    pkcs8_pem: Vec<u8>,
}

impl Identity {
    fn new(curve: Curve) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                curve.openssl_name,
                "-genkey",
                "-out",
                "key.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "365",
                "-sha384",
                "-subj",
                "/C=US/ST=Washington/O=eifctl tests/CN=enclave signer",
            ],
        );
        openssl(
            d,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-out", "key8.pem",
            ],
        );
        openssl(
            d,
            &[
                "x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem",
            ],
        );
        let read = |name: &str| std::fs::read(d.join(name)).unwrap();
        Identity {
            curve,
            cert_pem: read("cert.pem"),
            sec1_pem: read("key.pem"),
            pkcs8_pem: read("key8.pem"),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sign(&self, pcr0: &[u8; 48]) -> Vec<u8> {
        sign_pcr0(&self.cert_pem, &self.sec1_pem, pcr0).unwrap()
    }

    /// An ECDSA signature made by OpenSSL (random nonce), as COSE's r||s.
    fn openssl_sign(&self, data: &[u8]) -> Vec<u8> {
        std::fs::write(self.path().join("tbs.bin"), data).unwrap();
        openssl(
            self.path(),
            &[
                "dgst",
                self.curve.digest,
                "-sign",
                "key.pem",
                "-out",
                "sig.der",
                "tbs.bin",
            ],
        );
        let der = std::fs::read(self.path().join("sig.der")).unwrap();
        der_signature_to_raw(&der, self.curve.scalar_len)
    }

    fn openssl_verifies(&self, data: &[u8], raw_signature: &[u8]) -> bool {
        std::fs::write(self.path().join("tbs.bin"), data).unwrap();
        std::fs::write(
            self.path().join("sig.der"),
            raw_signature_to_der(raw_signature),
        )
        .unwrap();
        let out = Command::new("openssl")
            .args([
                "dgst",
                self.curve.digest,
                "-verify",
                "pub.pem",
                "-signature",
                "sig.der",
                "tbs.bin",
            ])
            .current_dir(self.path())
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
    }
}

fn sample_pcr0() -> [u8; 48] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
}

// ---------------------------------------------------------------------------
// Independent CBOR / COSE / DER helpers (deliberately not the library's)

fn cbor_head(out: &mut Vec<u8>, major: u8, n: usize) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        _ => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
}

fn cbor_bstr(out: &mut Vec<u8>, b: &[u8]) {
    cbor_head(out, 2, b.len());
    out.extend_from_slice(b);
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, 3, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// serde_cbor's `PcrInfo { register_index, register_value }`, with the
/// value either as nitro-cli writes it (integer array) or as a bstr.
fn pcr_info(index: u8, value: &[u8], as_bstr: bool) -> Vec<u8> {
    let mut out = vec![0xa2];
    cbor_text(&mut out, "register_index");
    out.push(index);
    cbor_text(&mut out, "register_value");
    if as_bstr {
        cbor_bstr(&mut out, value);
    } else {
        cbor_head(&mut out, 4, value.len());
        for &b in value {
            if b < 24 {
                out.push(b);
            } else {
                out.extend_from_slice(&[0x18, b]);
            }
        }
    }
    out
}

/// RFC 8152 Sig_structure for COSE_Sign1 with no external AAD.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    cbor_text(&mut out, "Signature1");
    cbor_bstr(&mut out, protected);
    cbor_bstr(&mut out, &[]);
    cbor_bstr(&mut out, payload);
    out
}

fn cose_sign1(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    cbor_bstr(&mut out, protected);
    out.push(0xa0);
    cbor_bstr(&mut out, payload);
    cbor_bstr(&mut out, signature);
    out
}

/// A COSE_Sign1 whose signature OpenSSL made.
fn openssl_cose(id: &Identity, protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let signature = id.openssl_sign(&sig_structure(protected, payload));
    cose_sign1(protected, payload, &signature)
}

fn der_len(der: &[u8], at: &mut usize) -> usize {
    let first = der[*at];
    *at += 1;
    if first < 0x80 {
        return first as usize;
    }
    let mut n = 0;
    for _ in 0..(first & 0x7f) {
        n = (n << 8) | der[*at] as usize;
        *at += 1;
    }
    n
}

/// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } → r||s.
fn der_signature_to_raw(der: &[u8], scalar_len: usize) -> Vec<u8> {
    let mut at = 0;
    assert_eq!(der[at], 0x30);
    at += 1;
    der_len(der, &mut at);
    let mut raw = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[at], 0x02);
        at += 1;
        let len = der_len(der, &mut at);
        let mut int = &der[at..at + len];
        at += len;
        while int.len() > scalar_len && int[0] == 0 {
            int = &int[1..];
        }
        raw.extend(std::iter::repeat_n(0, scalar_len - int.len()));
        raw.extend_from_slice(int);
    }
    raw
}

fn der_push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&[0x81, len as u8]);
    }
}

fn raw_signature_to_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::new();
    for int in [r, s] {
        let start = int.iter().position(|&b| b != 0).unwrap_or(int.len() - 1);
        let mut int = int[start..].to_vec();
        if int[0] & 0x80 != 0 {
            int.insert(0, 0);
        }
        body.push(0x02);
        der_push_len(&mut body, int.len());
        body.extend_from_slice(&int);
    }
    let mut der = vec![0x30];
    der_push_len(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

/// The four COSE_Sign1 fields of the first entry of a section.
fn cose_fields(section: &[u8]) -> (Vec<u8>, Value, Vec<u8>, Vec<u8>) {
    let parsed = SignatureSection::parse(section).unwrap();
    let value: Value = ciborium::from_reader(&parsed.entries[0].signature[..]).unwrap();
    let Value::Array(items) = value else {
        panic!("COSE_Sign1 is an array")
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = items.try_into().unwrap();
    let bytes = |v: Value| v.into_bytes().expect("a bstr");
    (
        bytes(protected),
        unprotected,
        bytes(payload),
        bytes(signature),
    )
}

fn section_with(cert_pem: &[u8], cose: Vec<u8>) -> SignatureSection {
    SignatureSection {
        entries: vec![PcrSignature {
            signing_certificate: cert_pem.to_vec(),
            signature: cose,
        }],
    }
}

// ---------------------------------------------------------------------------
// Signing and verifying

#[test]
fn a_signed_pcr0_verifies_on_every_supported_curve() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
        assert_eq!(section.entries.len(), 1, "{curve:?}");
        assert!(section.verify_pcr0(&pcr0).unwrap(), "{curve:?}");
        assert_eq!(section.check_pcr0(&pcr0).unwrap(), Pcr0Check::Valid);
    }
}

#[test]
fn sec1_and_pkcs8_keys_sign_identically_and_signing_is_deterministic() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let from_sec1 = sign_pcr0(&id.cert_pem, &id.sec1_pem, &pcr0).unwrap();
        let from_pkcs8 = sign_pcr0(&id.cert_pem, &id.pkcs8_pem, &pcr0).unwrap();
        assert_eq!(from_sec1, from_pkcs8, "{curve:?}");
        assert_eq!(
            from_sec1,
            sign_pcr0(&id.cert_pem, &id.sec1_pem, &pcr0).unwrap()
        );
    }
}

#[test]
fn a_different_pcr0_does_not_verify() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P384);
    let section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
    let mut other = pcr0;
    other[47] ^= 1;
    assert!(!section.verify_pcr0(&other).unwrap());
    assert_eq!(
        section.check_pcr0(&other).unwrap(),
        Pcr0Check::PayloadMismatch
    );
}

#[test]
fn a_flipped_signature_byte_does_not_verify() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let mut section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
        let cose = &mut section.entries[0].signature;
        let last = cose.len() - 1; // the last byte of s
        cose[last] ^= 0x01;
        let reparsed = SignatureSection::parse(&section.to_bytes()).unwrap();
        assert!(!reparsed.verify_pcr0(&pcr0).unwrap(), "{curve:?}");
        assert_eq!(reparsed.check_pcr0(&pcr0).unwrap(), Pcr0Check::BadSignature);
    }
}

#[test]
fn a_flipped_payload_byte_does_not_verify() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let (protected, _, mut payload, signature) = cose_fields(&id.sign(&pcr0));
    let last = payload.len() - 1;
    payload[last] ^= 0x01;
    let section = section_with(&id.cert_pem, cose_sign1(&protected, &payload, &signature));
    assert_eq!(section.check_pcr0(&pcr0).unwrap(), Pcr0Check::BadSignature);
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let pcr0 = sample_pcr0();
    let signer = Identity::new(P384);
    let same_curve = Identity::new(P384);
    let other_curve = Identity::new(P256);
    for key in [
        &same_curve.sec1_pem,
        &same_curve.pkcs8_pem,
        &other_curve.sec1_pem,
    ] {
        let err = sign_pcr0(&signer.cert_pem, key, &pcr0).unwrap_err();
        assert!(matches!(err, SignatureError::KeyMismatch), "{err:?}");
    }
}

#[test]
fn openssl_verifies_our_signatures() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let (protected, _, payload, signature) = cose_fields(&id.sign(&pcr0));
        assert!(
            id.openssl_verifies(&sig_structure(&protected, &payload), &signature),
            "{curve:?}"
        );
    }
}

#[test]
fn we_verify_openssl_signatures() {
    // OpenSSL's nonces are random, so its signatures are what nitro-cli
    // writes; several of them cover both low and high S values.
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let payload = pcr_info(0, &pcr0, false);
        for _ in 0..4 {
            let cose = openssl_cose(&id, &curve.protected_bstr[1..], &payload);
            let section = section_with(&id.cert_pem, cose);
            assert!(section.verify_pcr0(&pcr0).unwrap(), "{curve:?}");
        }
    }
}

#[test]
fn the_payload_is_compared_as_decoded_values() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P384);
    let protected = &P384.protected_bstr[1..];

    let bstr_payload = openssl_cose(&id, protected, &pcr_info(0, &pcr0, true));
    let section = section_with(&id.cert_pem, bstr_payload);
    assert!(section.verify_pcr0(&pcr0).unwrap());

    let other_register = openssl_cose(&id, protected, &pcr_info(1, &pcr0, false));
    let section = section_with(&id.cert_pem, other_register);
    assert_eq!(
        section.check_pcr0(&pcr0).unwrap(),
        Pcr0Check::PayloadMismatch
    );

    let not_pcr_info = openssl_cose(&id, protected, b"\x63abc");
    let section = section_with(&id.cert_pem, not_pcr_info);
    assert_eq!(
        section.check_pcr0(&pcr0).unwrap(),
        Pcr0Check::PayloadMismatch
    );
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_fails_verification() {
    // A P-384 key with an ES256 header: aws-nitro-enclaves-cose answers
    // "not verified", not "malformed".
    let pcr0 = sample_pcr0();
    let id = Identity::new(P384);
    let cose = openssl_cose(&id, &P256.protected_bstr[1..], &pcr_info(0, &pcr0, false));
    let section = section_with(&id.cert_pem, cose);
    assert_eq!(section.check_pcr0(&pcr0).unwrap(), Pcr0Check::BadSignature);
}

#[test]
fn a_signature_of_the_wrong_length_fails_verification() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let (protected, _, payload, mut signature) = cose_fields(&id.sign(&pcr0));
    signature.pop();
    let section = section_with(&id.cert_pem, cose_sign1(&protected, &payload, &signature));
    assert_eq!(section.check_pcr0(&pcr0).unwrap(), Pcr0Check::BadSignature);
    let section = section_with(&id.cert_pem, cose_sign1(&protected, &payload, &[]));
    assert!(!section.verify_pcr0(&pcr0).unwrap());
}

#[test]
fn a_tagged_cose_sign1_is_read() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let mut section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
    section.entries[0].signature.insert(0, 0xd2); // tag 18
    assert!(section.verify_pcr0(&pcr0).unwrap());
}

// ---------------------------------------------------------------------------
// The bytes nitro-cli writes

/// Reads a CBOR array of small unsigned integers, as serde_cbor writes a
/// `Vec<u8>`, starting at `at`.
fn read_int_array(bytes: &[u8], at: &mut usize) -> Vec<u8> {
    let len = match bytes[*at] {
        h @ 0x80..=0x97 => {
            *at += 1;
            (h - 0x80) as usize
        }
        0x98 => {
            *at += 2;
            bytes[*at - 1] as usize
        }
        0x99 => {
            *at += 3;
            u16::from_be_bytes([bytes[*at - 2], bytes[*at - 1]]) as usize
        }
        h => panic!("expected an array head, found {h:#04x}"),
    };
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        match bytes[*at] {
            b @ 0..=23 => {
                out.push(b);
                *at += 1;
            }
            0x18 => {
                assert!(bytes[*at + 1] >= 24, "serde_cbor uses the shortest form");
                out.push(bytes[*at + 1]);
                *at += 2;
            }
            h => panic!("expected a small unsigned integer, found {h:#04x}"),
        }
    }
    out
}

#[test]
fn the_section_is_serde_cbor_with_byte_fields_as_integer_arrays() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let bytes = id.sign(&pcr0);

        // [ { "signing_certificate": [ints], "signature": [ints] } ]
        assert_eq!(bytes[0], 0x81, "an array of one entry");
        assert_eq!(bytes[1], 0xa2, "a map of two fields");
        assert_eq!(bytes[2], 0x60 | 19);
        assert_eq!(&bytes[3..22], b"signing_certificate");
        let mut at = 22;
        let cert = read_int_array(&bytes, &mut at);
        assert_eq!(cert, id.cert_pem, "the PEM file is stored verbatim");
        assert_eq!(bytes[at], 0x60 | 9);
        assert_eq!(&bytes[at + 1..at + 10], b"signature");
        at += 10;
        let cose = read_int_array(&bytes, &mut at);
        assert_eq!(at, bytes.len(), "nothing follows");

        // [ bstr {1: alg}, {}, bstr PcrInfo, bstr r||s ], untagged
        let mut prefix = vec![0x84];
        prefix.extend_from_slice(curve.protected_bstr);
        prefix.push(0xa0);
        cbor_bstr(&mut prefix, &pcr_info(0, &pcr0, false));
        let sig_len = 2 * curve.scalar_len;
        prefix.extend_from_slice(&[0x58, sig_len as u8]);
        assert_eq!(&cose[..prefix.len()], &prefix[..], "{curve:?}");
        assert_eq!(cose.len(), prefix.len() + sig_len, "{curve:?}");
    }
}

#[test]
fn byte_strings_are_read_as_well_as_integer_arrays() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P521);
    let canonical = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
    let entry = &canonical.entries[0];
    let as_bstr = Value::Array(vec![Value::Map(vec![
        (
            Value::Text("signing_certificate".into()),
            Value::Bytes(entry.signing_certificate.clone()),
        ),
        (
            Value::Text("signature".into()),
            Value::Bytes(entry.signature.clone()),
        ),
    ])]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&as_bstr, &mut bytes).unwrap();
    let parsed = SignatureSection::parse(&bytes).unwrap();
    assert_eq!(parsed, canonical);
    assert!(parsed.verify_pcr0(&pcr0).unwrap());
    // Writing is always exact: back to the integer-array form.
    assert_eq!(parsed.to_bytes(), id.sign(&pcr0));
}

// ---------------------------------------------------------------------------
// PCR8 and the describe-eif certificate view

#[test]
fn pcr8_extends_a_zero_register_with_the_certificate_digest() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
        let der = section.signing_certificate_der().unwrap();

        let openssl_der = openssl(id.path(), &["x509", "-in", "cert.pem", "-outform", "DER"]);
        assert_eq!(der, openssl_der);

        std::fs::write(id.path().join("cert.der"), &openssl_der).unwrap();
        let digest = openssl(id.path(), &["dgst", "-sha384", "-binary", "cert.der"]);
        assert_eq!(digest.len(), 48);
        let mut extend_input = vec![0u8; 48];
        extend_input.extend_from_slice(&digest);
        std::fs::write(id.path().join("extend.bin"), &extend_input).unwrap();
        let expected = openssl(id.path(), &["dgst", "-sha384", "-binary", "extend.bin"]);

        assert_eq!(pcr8(&der).0.to_vec(), expected, "{curve:?}");
    }
}

/// What `openssl x509` prints, in the shapes describe-eif uses.
struct OpensslView {
    issuer: BTreeMap<String, String>,
    algorithm: String,
    not_before: String,
    not_after: String,
    signature: String,
}

fn openssl_view(dir: &Path, cert: &str) -> OpensslView {
    // Long names, one attribute per line, no escaping: `name = value`.
    let issuer_text = openssl_text(
        dir,
        &[
            "x509",
            "-in",
            cert,
            "-noout",
            "-issuer",
            "-nameopt",
            "lname,utf8,sep_multiline,-esc_msb,space_eq",
        ],
    );
    let mut issuer = BTreeMap::new();
    for line in issuer_text.lines().skip(1) {
        let (name, value) = line.trim().split_once(" = ").unwrap();
        // nitro-cli prints `format!("{:?}", value)` with every `"` removed,
        // which leaves the backslash that escaped an inner quote.
        issuer.insert(name.to_owned(), format!("{value:?}").replace('"', ""));
    }

    let dates = openssl_text(
        dir,
        &["x509", "-in", cert, "-noout", "-startdate", "-enddate"],
    );
    let date = |prefix: &str| {
        dates
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .to_owned()
    };

    let text = openssl_text(dir, &["x509", "-in", cert, "-noout", "-text"]);
    let algorithm = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Signature Algorithm: "))
        .unwrap()
        .to_owned();
    // The signature value is the last block: lowercase, colon-separated,
    // wrapped. describe-eif prints it uppercase on one line.
    let (_, sig_block) = text.rsplit_once("Signature Value:").unwrap();
    let signature = sig_block
        .split_whitespace()
        .collect::<String>()
        .to_uppercase();

    OpensslView {
        issuer,
        algorithm,
        not_before: date("notBefore="),
        not_after: date("notAfter="),
        signature,
    }
}

#[test]
fn certificate_info_matches_what_openssl_prints() {
    let pcr0 = sample_pcr0();
    for curve in CURVES {
        let id = Identity::new(curve);
        let section = SignatureSection::parse(&id.sign(&pcr0)).unwrap();
        let info = certificate_info(&section.signing_certificate_der().unwrap()).unwrap();
        let view = openssl_view(id.path(), "cert.pem");

        assert_eq!(info.issuer_name, view.issuer, "{curve:?}");
        assert_eq!(info.algorithm, view.algorithm);
        assert_eq!(info.algorithm, "ecdsa-with-SHA384");
        assert_eq!(info.not_before, view.not_before);
        assert_eq!(info.not_after, view.not_after);
        assert_eq!(info.signature, view.signature);
        assert_eq!(
            info.issuer_name.keys().collect::<Vec<_>>(),
            [
                "commonName",
                "countryName",
                "organizationName",
                "stateOrProvinceName"
            ]
        );
    }
}

/// An RSA CA with a busy subject issues an EC signing certificate with
/// fixed dates, one of them past 2049 (so a GeneralizedTime).
#[test]
fn certificate_info_of_a_ca_issued_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_subject = "/C=DE/ST=Bayern/L=München/O=Acme \"Q\" GmbH/OU=R&D/OU=Builds/CN=Test CA/emailAddress=ca@example.com";
    openssl(
        d,
        &[
            "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "3650", "-sha256", "-utf8", "-subj", ca_subject,
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.key",
        ],
    );
    openssl(
        d,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr",
        ],
    );
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "01\n").unwrap();
    openssl(
        d,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-batch",
            "-notext",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "leaf.csr",
            "-out",
            "leaf.pem",
            "-startdate",
            "20240101000000Z",
            "-enddate",
            "20510615123456Z",
        ],
    );

    let cert_pem = std::fs::read(d.join("leaf.pem")).unwrap();
    let key_pem = std::fs::read(d.join("leaf.key")).unwrap();
    let pcr0 = sample_pcr0();
    let section = SignatureSection::parse(&sign_pcr0(&cert_pem, &key_pem, &pcr0).unwrap()).unwrap();
    assert!(section.verify_pcr0(&pcr0).unwrap());

    let info = certificate_info(&section.signing_certificate_der().unwrap()).unwrap();
    let view = openssl_view(d, "leaf.pem");
    assert_eq!(info.issuer_name, view.issuer);
    assert_eq!(info.algorithm, view.algorithm);
    assert_eq!(info.not_before, view.not_before);
    assert_eq!(info.not_after, view.not_after);
    assert_eq!(info.signature, view.signature);

    // The exact describe-eif JSON: nitro-cli's key order, long attribute
    // names sorted, a repeated OU keeps its last value, and the quotes of
    // `Acme "Q" GmbH` turned into backslashes (Debug-escaped, then every
    // `"` removed), which JSON escapes again.
    let expected = format!(
        concat!(
            r#"{{"IssuerName":{{"commonName":"Test CA","countryName":"DE","#,
            r#""emailAddress":"ca@example.com","localityName":"München","#,
            r#""organizationName":"Acme \\Q\\ GmbH","organizationalUnitName":"Builds","#,
            r#""stateOrProvinceName":"Bayern"}},"Algorithm":"sha256WithRSAEncryption","#,
            r#""NotBefore":"Jan  1 00:00:00 2024 GMT","NotAfter":"Jun 15 12:34:56 2051 GMT","#,
            r#""Signature":"{}"}}"#
        ),
        view.signature
    );
    assert_eq!(serde_json::to_string(&info).unwrap(), expected);
    assert_eq!(info.signature.len(), 256 * 3 - 1, "RSA-2048: 256 bytes");

    // The CA's own key is RSA: it cannot sign an EIF.
    let ca_pem = std::fs::read(d.join("ca.pem")).unwrap();
    let ca_key = std::fs::read(d.join("ca.key")).unwrap();
    let err = sign_pcr0(&ca_pem, &ca_key, &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedKey(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// Malformed input: a specific error, never a panic

fn parse_err(bytes: &[u8]) -> SignatureError {
    SignatureSection::parse(bytes).unwrap_err()
}

#[test]
fn malformed_sections_are_rejected_with_specific_errors() {
    assert!(matches!(parse_err(&[]), SignatureError::Empty));

    for garbage in [
        &[0xff][..],
        &[0x1c],
        &[0x81],
        &[0x5f, 0x41],
        b"\x62\xff\xfe",
    ] {
        let err = parse_err(garbage);
        assert!(
            matches!(err, SignatureError::Cbor(_)),
            "{garbage:?}: {err:?}"
        );
    }
    assert!(matches!(
        parse_err(&[0x80, 0x00]),
        SignatureError::TrailingBytes(1)
    ));

    assert!(matches!(parse_err(&[0x80]), SignatureError::NoEntries));
    let mut wrong_shapes: Vec<Vec<u8>> = vec![
        vec![0xa0],                         // a map, not an array
        vec![0x81, 0x01],                   // an entry that is an integer
        vec![0x81, 0x83, 1, 2, 3],          // an entry array of three
        vec![0x81, 0x82, 0x61, b'x', 0x40], // a text where bytes belong
    ];
    let mut missing_signature = vec![0x81, 0xa1];
    cbor_text(&mut missing_signature, "signing_certificate");
    missing_signature.extend_from_slice(&[0x81, 0x01]);
    wrong_shapes.push(missing_signature);
    let mut out_of_range = vec![0x81, 0xa2];
    cbor_text(&mut out_of_range, "signing_certificate");
    out_of_range.extend_from_slice(&[0x81, 0x19, 0x01, 0x00]); // [256]
    cbor_text(&mut out_of_range, "signature");
    out_of_range.push(0x80);
    wrong_shapes.push(out_of_range);
    let mut duplicate = vec![0x81, 0xa3];
    for field in ["signature", "signing_certificate", "signature"] {
        cbor_text(&mut duplicate, field);
        duplicate.push(0x40);
    }
    wrong_shapes.push(duplicate);
    for bytes in wrong_shapes {
        let err = parse_err(&bytes);
        assert!(
            matches!(err, SignatureError::Structure(_)),
            "{bytes:02x?}: {err:?}"
        );
    }
}

#[test]
fn oversize_sections_are_refused_before_reading() {
    assert!(SignatureSection::check_size(MAX_SIGNATURE_SECTION).is_ok());
    for size in [MAX_SIGNATURE_SECTION + 1, u64::MAX] {
        let err = SignatureSection::check_size(size).unwrap_err();
        assert!(matches!(err, SignatureError::TooLarge { .. }), "{err:?}");
    }
    let big = vec![0u8; MAX_SIGNATURE_SECTION as usize + 1];
    assert!(matches!(parse_err(&big), SignatureError::TooLarge { .. }));
}

#[test]
fn hostile_lengths_and_nesting_do_not_exhaust_memory_or_stack() {
    let huge = [0xff; 8];
    for major in [0x9b, 0x5b, 0x7b, 0xbb] {
        let mut bytes = vec![major];
        bytes.extend_from_slice(&huge);
        let err = parse_err(&bytes);
        assert!(
            matches!(err, SignatureError::Cbor(_) | SignatureError::Structure(_)),
            "{major:#x}: {err:?}"
        );
    }
    let deep = vec![0x81; 100_000];
    assert!(matches!(parse_err(&deep), SignatureError::Cbor(_)));
}

#[test]
fn bad_certificates_are_rejected_with_specific_errors() {
    let pcr0 = sample_pcr0();
    let pem_errors: [&[u8]; 5] = [
        b"",
        b"not a PEM file at all",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ];
    for pem in pem_errors {
        let section = section_with(pem, vec![0x80]);
        let err = section.signing_certificate_der().unwrap_err();
        assert!(matches!(err, SignatureError::Pem(_)), "{pem:?}: {err:?}");
        let err = section.verify_pcr0(&pcr0).unwrap_err();
        assert!(matches!(err, SignatureError::Pem(_)), "{pem:?}: {err:?}");
    }

    let not_a_certificate = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let section = section_with(not_a_certificate, vec![0x80]);
    let err = section.signing_certificate_der().unwrap_err();
    assert!(matches!(err, SignatureError::Certificate(_)), "{err:?}");

    for der in [&b""[..], b"\x30\x00", b"garbage"] {
        let err = certificate_info(der).unwrap_err();
        assert!(matches!(err, SignatureError::Certificate(_)), "{err:?}");
    }

    let no_entries = SignatureSection { entries: vec![] };
    assert!(matches!(
        no_entries.signing_certificate_der(),
        Err(SignatureError::NoEntries)
    ));
    assert!(matches!(
        no_entries.verify_pcr0(&pcr0),
        Err(SignatureError::NoEntries)
    ));
}

#[test]
fn text_around_the_certificate_block_is_skipped_like_openssl_does() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let text = openssl(id.path(), &["x509", "-in", "cert.pem", "-text"]);
    assert!(!text.starts_with(b"-----BEGIN"));
    let section = SignatureSection::parse(&sign_pcr0(&text, &id.sec1_pem, &pcr0).unwrap()).unwrap();
    assert_eq!(section.entries[0].signing_certificate, text);
    assert!(section.verify_pcr0(&pcr0).unwrap());
}

#[test]
fn malformed_cose_is_an_error_not_a_failed_check() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P384);
    let payload = pcr_info(0, &pcr0, false);
    let good_protected = &P384.protected_bstr[1..];
    let sig = vec![1u8; 96];

    let mut three_fields = vec![0x83];
    cbor_bstr(&mut three_fields, good_protected);
    three_fields.push(0xa0);
    cbor_bstr(&mut three_fields, &payload);

    let mut unprotected_not_a_map = vec![0x84];
    cbor_bstr(&mut unprotected_not_a_map, good_protected);
    unprotected_not_a_map.push(0x80);
    cbor_bstr(&mut unprotected_not_a_map, &payload);
    cbor_bstr(&mut unprotected_not_a_map, &sig);

    let mut detached = vec![0x84];
    cbor_bstr(&mut detached, good_protected);
    detached.extend_from_slice(&[0xa0, 0xf6]);
    cbor_bstr(&mut detached, &sig);

    let mut other_tag = vec![0xd1]; // tag 17: COSE_Mac0
    other_tag.extend(cose_sign1(good_protected, &payload, &sig));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not CBOR", vec![0xff]),
        (
            "trailing bytes",
            [cose_sign1(good_protected, &payload, &sig), vec![0]].concat(),
        ),
        ("not an array", vec![0xa0]),
        ("three fields", three_fields),
        ("unprotected not a map", unprotected_not_a_map),
        ("detached payload", detached),
        ("tag 17", other_tag),
        ("empty protected", cose_sign1(&[], &payload, &sig)),
        ("protected without alg", cose_sign1(&[0xa0], &payload, &sig)),
        ("protected not a map", cose_sign1(&[0x80], &payload, &sig)),
        ("protected not CBOR", cose_sign1(&[0xff], &payload, &sig)),
        (
            "alg a text",
            cose_sign1(&[0xa1, 0x01, 0x61, b'x'], &payload, &sig),
        ),
    ];
    for (what, cose) in cases {
        let section = section_with(&id.cert_pem, cose);
        let err = section.verify_pcr0(&pcr0).unwrap_err();
        assert!(matches!(err, SignatureError::Cose(_)), "{what}: {err:?}");
    }
}

#[test]
fn bad_private_keys_are_rejected_with_specific_errors() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let d = id.path();
    openssl(d, &["genpkey", "-algorithm", "RSA", "-out", "rsa.pem"]);
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "key.pem",
            "-out",
            "enc.pem",
            "-passout",
            "pass:secret",
        ],
    );
    openssl(
        d,
        &[
            "ec",
            "-in",
            "key.pem",
            "-out",
            "legacy-enc.pem",
            "-aes256",
            "-passout",
            "pass:secret",
        ],
    );
    let read = |name: &str| std::fs::read(d.join(name)).unwrap();

    let err = sign_pcr0(&id.cert_pem, b"", &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::Pem(_)), "{err:?}");
    let err = sign_pcr0(&id.cert_pem, &id.cert_pem, &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::Pem(_)), "{err:?}");

    let err = sign_pcr0(&id.cert_pem, &read("rsa.pem"), &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedKey(_)), "{err:?}");

    for encrypted in ["enc.pem", "legacy-enc.pem"] {
        let err = sign_pcr0(&id.cert_pem, &read(encrypted), &pcr0).unwrap_err();
        assert!(
            matches!(err, SignatureError::PrivateKey(_)),
            "{encrypted}: {err:?}"
        );
    }

    let garbage_key = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let err = sign_pcr0(&id.cert_pem, garbage_key, &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::PrivateKey(_)), "{err:?}");

    let err = sign_pcr0(b"no certificate", &id.sec1_pem, &pcr0).unwrap_err();
    assert!(matches!(err, SignatureError::Pem(_)), "{err:?}");
}

/// Deterministic xorshift, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_sections_never_panic() {
    let pcr0 = sample_pcr0();
    let id = Identity::new(P256);
    let valid = id.sign(&pcr0);
    let cose = SignatureSection::parse(&valid).unwrap().entries[0]
        .signature
        .clone();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..600 {
        // Mutate either the outer section or the COSE object inside it.
        let inner = round % 2 == 1;
        let mut bytes = if inner { cose.clone() } else { valid.clone() };
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, rng.next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let section = if inner {
            Ok(section_with(&id.cert_pem, bytes))
        } else {
            SignatureSection::parse(&bytes)
        };
        if let Ok(section) = section {
            let _ = section.check_pcr0(&pcr0);
            if let Ok(der) = section.signing_certificate_der() {
                let _ = certificate_info(&der);
                let _ = pcr8(&der);
            }
        }
    }
}
