//! AWS Nitro Enclaves attestation documents: parse one, and check it against a release's
//! measurements (`pcr-values.json`).
//!
//! A document is a COSE_Sign1 (tagged 18 or untagged) signed with ES384 by a leaf certificate
//! that chains, through the document's `cabundle` (root first), to the pinned AWS Nitro Enclaves
//! Root-G1. Its payload is a CBOR map (definite or indefinite length) with the enclave's PCRs.
//!
//! The payload bytes are kept exactly as received: the Sig_structure is built around the
//! original protected-header and payload byte strings, never a re-encoding.
//!
//! Malformed input is an [`AttestError`] (exit 2 in the CLI); a well-formed document that does
//! not hold is a list of [`Check`]s, some of which fail (exit 1).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::value::Value;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Reader};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::Certificate;

use crate::manifest::Manifest;
use crate::pcr::Pcr;

/// A document larger than this is refused before parsing.
pub const MAX_DOCUMENT: usize = 64 * 1024;
/// An input file (base64 or JSON inflate the document) larger than this is refused unread.
pub const MAX_INPUT: u64 = 128 * 1024;
/// Optional fields (`public_key`, `user_data`, `nonce`) are at most this long.
pub const MAX_OPTIONAL: usize = 1024;
/// More certificates than this in `cabundle` is not a Nitro document.
pub const MAX_CABUNDLE: usize = 16;
/// SHA-256 of the DER of "AWS Nitro Enclaves Root-G1".
pub const AWS_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
/// How far a document's timestamp may lie in the future of "now" (clocks differ).
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

const ES384: i64 = -35;
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// Why bytes are not an attestation document (input errors, exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("document is {0} bytes, more than the {MAX_DOCUMENT}-byte limit")]
    TooLarge(usize),
    #[error("document is empty")]
    Empty,
    #[error("not raw CBOR, base64 or {{\"attestation_document\": \"<base64>\"}}: {0}")]
    Encoding(String),
    #[error("response: {0}")]
    Response(String),
    #[error("cose: {0}")]
    Cose(String),
    #[error("payload: {0}")]
    Payload(String),
    #[error("{which}: {detail}")]
    Certificate { which: String, detail: String },
}

fn cose(msg: impl Into<String>) -> AttestError {
    AttestError::Cose(msg.into())
}

fn payload_err(msg: impl Into<String>) -> AttestError {
    AttestError::Payload(msg.into())
}

/// A parsed document. Byte strings are as received.
#[derive(Debug, Clone)]
pub struct Document {
    /// The protected header's bytes (the content of the bstr).
    pub protected: Vec<u8>,
    /// The algorithm in the protected header, when it is exactly `{1: alg}`.
    pub alg: Option<i64>,
    /// The payload's bytes (the content of the bstr), as signed.
    pub payload: Vec<u8>,
    /// r||s.
    pub signature: Vec<u8>,
    pub module_id: String,
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub pcrs: BTreeMap<u64, Vec<u8>>,
    /// The leaf certificate, DER.
    pub certificate: Vec<u8>,
    /// Root first, DER.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
    leaf: Certificate,
    bundle: Vec<Certificate>,
}

/// One named check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// What a document is checked against.
#[derive(Debug, Clone)]
pub struct Options {
    /// Expected PCRs by index (0, 1, 2 and optionally 8).
    pub pcrs: BTreeMap<u64, Pcr>,
    /// The expected nonce, when one was sent.
    pub nonce: Option<Vec<u8>>,
    /// Check certificate validity at this instant instead of the document's timestamp, and
    /// measure freshness from it instead of the clock.
    pub at: Option<SystemTime>,
    /// The clock (for freshness without `at`).
    pub now: SystemTime,
    /// The document may be at most this old.
    pub max_age: Option<Duration>,
    /// SHA-256 of the DER of the trusted root.
    pub root_sha256: [u8; 32],
}

impl Options {
    /// The expected PCRs of a manifest ("0", "1", "2" and "8" when present).
    pub fn pcrs_of(manifest: &Manifest) -> BTreeMap<u64, Pcr> {
        manifest
            .pcrs
            .iter()
            .filter_map(|(k, v)| k.parse::<u64>().ok().map(|i| (i, *v)))
            .collect()
    }

    /// The pinned AWS Nitro Enclaves Root-G1 fingerprint.
    pub fn aws_root() -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(AWS_ROOT_G1_SHA256, &mut out).expect("a 64-digit hex constant");
        out
    }
}

/// The document bytes from a file's content: raw CBOR, base64 (standard alphabet, padded or
/// not, whitespace ignored), or the JSON `{"attestation_document": "<base64>"}`.
pub fn decode_input(input: &[u8]) -> Result<Vec<u8>, AttestError> {
    let first = input.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let bytes = match first {
        None => return Err(AttestError::Empty),
        // An array of 4 (untagged COSE_Sign1) or tag 18: binary, never text.
        Some(b) if !b.is_ascii() => input.to_vec(),
        Some(b'{') => {
            let v: serde_json::Value = serde_json::from_slice(input)
                .map_err(|e| AttestError::Encoding(format!("JSON: {e}")))?;
            let text = v
                .get("attestation_document")
                .and_then(|d| d.as_str())
                .ok_or_else(|| {
                    AttestError::Encoding(
                        "JSON without an \"attestation_document\" string".to_string(),
                    )
                })?;
            decode_base64(text.as_bytes())?
        }
        Some(_) => decode_base64(input)?,
    };
    if bytes.is_empty() {
        return Err(AttestError::Empty);
    }
    if bytes.len() > MAX_DOCUMENT {
        return Err(AttestError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// The document from a proof server's answer, which is only ever the JSON
/// `{"attestation_document": "<base64>"}` (not raw CBOR nor bare base64, unlike a file).
pub fn decode_response(body: &[u8]) -> Result<Vec<u8>, AttestError> {
    let response = |m: String| AttestError::Response(m);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| response(format!("not JSON: {e}")))?;
    let text = v
        .get("attestation_document")
        .and_then(|d| d.as_str())
        .ok_or_else(|| response("JSON without an \"attestation_document\" string".into()))?;
    let bytes = decode_base64(text.as_bytes())
        .map_err(|e| response(format!("attestation_document: {e}")))?;
    if bytes.is_empty() {
        return Err(AttestError::Empty);
    }
    if bytes.len() > MAX_DOCUMENT {
        return Err(AttestError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

fn decode_base64(text: &[u8]) -> Result<Vec<u8>, AttestError> {
    use base64ct::{Base64, Base64Unpadded, Encoding};
    if text.len() as u64 > MAX_INPUT {
        return Err(AttestError::TooLarge(text.len()));
    }
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let clean = std::str::from_utf8(&clean)
        .map_err(|_| AttestError::Encoding("base64: not text".into()))?;
    let decoded = if clean.ends_with('=') {
        Base64::decode_vec(clean)
    } else {
        Base64Unpadded::decode_vec(clean)
    };
    decoded.map_err(|e| AttestError::Encoding(format!("base64: {e}")))
}

fn decode_cbor(bytes: &[u8], what: &str) -> Result<Value, String> {
    let mut rest = bytes;
    let value: Value =
        ciborium::from_reader(&mut rest).map_err(|e| format!("{what} is not CBOR: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the {what}", rest.len()));
    }
    Ok(value)
}

impl Document {
    /// Parses a document (raw CBOR). Refuses anything that is not an ES384-shaped COSE_Sign1
    /// with a complete Nitro payload and parseable certificates.
    pub fn parse(bytes: &[u8]) -> Result<Document, AttestError> {
        if bytes.is_empty() {
            return Err(AttestError::Empty);
        }
        if bytes.len() > MAX_DOCUMENT {
            return Err(AttestError::TooLarge(bytes.len()));
        }
        let value = match decode_cbor(bytes, "document").map_err(cose)? {
            Value::Tag(18, inner) => *inner,
            Value::Tag(tag, _) => return Err(cose(format!("tag {tag}, not COSE_Sign1 (18)"))),
            other => other,
        };
        let Value::Array(items) = value else {
            return Err(cose("not a CBOR array"));
        };
        let [protected, unprotected, payload, signature]: [Value; 4] = items
            .try_into()
            .map_err(|_| cose("a COSE_Sign1 has exactly four elements"))?;
        let Value::Bytes(protected) = protected else {
            return Err(cose("protected header is not a byte string"));
        };
        if !matches!(unprotected, Value::Map(_)) {
            return Err(cose("unprotected header is not a map"));
        }
        let payload = match payload {
            Value::Bytes(p) => p,
            Value::Null => return Err(cose("detached payload (null)")),
            _ => return Err(cose("payload is not a byte string")),
        };
        let Value::Bytes(signature) = signature else {
            return Err(cose("signature is not a byte string"));
        };
        if signature.len() != 96 {
            return Err(cose(format!(
                "signature is {} bytes, ES384 r||s is 96",
                signature.len()
            )));
        }
        let Value::Map(header) = decode_cbor(&protected, "protected header").map_err(cose)? else {
            return Err(cose("protected header is not a map"));
        };
        let alg = match header.as_slice() {
            [(Value::Integer(k), Value::Integer(a))] if i128::from(*k) == 1 => {
                i64::try_from(*a).ok()
            }
            _ => None,
        };

        let fields = match decode_cbor(&payload, "payload").map_err(payload_err)? {
            Value::Map(m) => m,
            _ => return Err(payload_err("not a CBOR map")),
        };
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in fields {
            let Value::Text(k) = k else {
                return Err(payload_err("a key is not text"));
            };
            if map.contains_key(&k) {
                return Err(payload_err(format!("duplicate key {k:?}")));
            }
            map.insert(k, v);
        }
        let mut take = |k: &str| map.remove(k);
        let module_id = match take("module_id") {
            Some(Value::Text(t)) if !t.is_empty() => t,
            Some(_) => return Err(payload_err("module_id is not a non-empty text")),
            None => return Err(payload_err("no module_id")),
        };
        let digest = match take("digest") {
            Some(Value::Text(t)) => t,
            Some(_) => return Err(payload_err("digest is not text")),
            None => return Err(payload_err("no digest")),
        };
        let pcr_len = match digest.as_str() {
            "SHA384" => 48,
            other => {
                return Err(payload_err(format!(
                    "digest {other:?} is not SHA384 (the only digest Nitro uses)"
                )));
            }
        };
        let timestamp_ms = match take("timestamp") {
            Some(Value::Integer(i)) => u64::try_from(i)
                .map_err(|_| payload_err("timestamp is not an unsigned 64-bit integer"))?,
            Some(_) => return Err(payload_err("timestamp is not an integer")),
            None => return Err(payload_err("no timestamp")),
        };
        let pcrs = match take("pcrs") {
            Some(Value::Map(m)) => {
                let mut pcrs = BTreeMap::new();
                for (k, v) in m {
                    let Value::Integer(i) = k else {
                        return Err(payload_err("pcrs: an index is not an integer"));
                    };
                    let i = u64::try_from(i)
                        .ok()
                        .filter(|i| *i < 32)
                        .ok_or_else(|| payload_err("pcrs: an index is not 0..31"))?;
                    let Value::Bytes(b) = v else {
                        return Err(payload_err(format!("pcrs: PCR{i} is not a byte string")));
                    };
                    if b.len() != pcr_len {
                        return Err(payload_err(format!(
                            "pcrs: PCR{i} is {} bytes, {digest} needs {pcr_len}",
                            b.len()
                        )));
                    }
                    if pcrs.insert(i, b).is_some() {
                        return Err(payload_err(format!("pcrs: PCR{i} appears twice")));
                    }
                }
                pcrs
            }
            Some(_) => return Err(payload_err("pcrs is not a map")),
            None => return Err(payload_err("no pcrs")),
        };
        for i in [0, 1, 2] {
            if !pcrs.contains_key(&i) {
                return Err(payload_err(format!("pcrs: no PCR{i}")));
            }
        }
        let certificate = match take("certificate") {
            Some(Value::Bytes(b)) => b,
            Some(_) => return Err(payload_err("certificate is not a byte string")),
            None => return Err(payload_err("no certificate")),
        };
        let cabundle = match take("cabundle") {
            Some(Value::Array(items)) => {
                if items.is_empty() || items.len() > MAX_CABUNDLE {
                    return Err(payload_err(format!(
                        "cabundle has {} certificates (1 to {MAX_CABUNDLE})",
                        items.len()
                    )));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Bytes(b) => Ok(b),
                        _ => Err(payload_err(format!("cabundle[{i}] is not a byte string"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(payload_err("cabundle is not an array")),
            None => return Err(payload_err("no cabundle")),
        };
        let mut optional = |k: &str| match take(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bytes(b)) if b.len() <= MAX_OPTIONAL => Ok(Some(b)),
            Some(Value::Bytes(b)) => Err(payload_err(format!(
                "{k} is {} bytes, more than {MAX_OPTIONAL}",
                b.len()
            ))),
            Some(_) => Err(payload_err(format!(
                "{k} is neither null nor a byte string"
            ))),
        };
        let public_key = optional("public_key")?;
        let user_data = optional("user_data")?;
        let nonce = optional("nonce")?;

        let leaf = parse_certificate(&certificate, "certificate")?;
        match ec_key(&leaf) {
            Ok(EcKey::P384(_)) => {}
            Ok(_) => {
                return Err(AttestError::Certificate {
                    which: "certificate".into(),
                    detail: "the leaf key is not P-384".into(),
                });
            }
            Err(detail) => {
                return Err(AttestError::Certificate {
                    which: "certificate".into(),
                    detail,
                });
            }
        }
        let bundle = cabundle
            .iter()
            .enumerate()
            .map(|(i, der)| parse_certificate(der, &format!("cabundle[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Document {
            protected,
            alg,
            payload,
            signature,
            module_id,
            digest,
            timestamp_ms,
            pcrs,
            certificate,
            cabundle,
            public_key,
            user_data,
            nonce,
            leaf,
            bundle,
        })
    }

    /// The document's time.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }

    /// The document's time, RFC 3339 with milliseconds (never panics, whatever the value).
    pub fn timestamp_rfc3339(&self) -> String {
        let ms = self.timestamp_ms;
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(crate::eif::rfc3339_utc)
            .unwrap_or_else(|_| format!("@{ms} ms"))
    }

    /// Runs every check that applies (cose, signature, chain, validity, freshness, pcrN,
    /// debug, nonce), in that order.
    pub fn check(&self, opts: &Options) -> Vec<Check> {
        let mut checks = Vec::new();
        let es384 = self.alg == Some(ES384);
        checks.push(if es384 {
            Check::pass("cose", "COSE_Sign1, protected header {1: -35} (ES384)")
        } else {
            Check::fail("cose", "protected header is not exactly {1: -35} (ES384)")
        });
        checks.push(self.check_signature(es384));
        checks.push(self.check_chain(&opts.root_sha256));
        checks.push(self.check_validity(opts.at.unwrap_or(self.timestamp())));
        if let Some(max_age) = opts.max_age {
            checks.push(self.check_freshness(opts.at.unwrap_or(opts.now), max_age));
        }
        let mut indices: Vec<u64> = vec![0, 1, 2];
        if opts.pcrs.contains_key(&8) {
            indices.push(8);
        }
        for i in indices {
            let name = format!("pcr{i}");
            checks.push(match (opts.pcrs.get(&i), self.pcrs.get(&i)) {
                (None, _) => Check::fail(&name, format!("the manifest records no PCR{i}")),
                (Some(_), None) => Check::fail(&name, format!("the document has no PCR{i}")),
                (Some(want), Some(got)) if want.0.as_slice() == got.as_slice() => {
                    Check::pass(&name, want.to_hex())
                }
                (Some(want), Some(got)) => Check::fail(
                    &name,
                    format!(
                        "document {} != manifest {}",
                        hex::encode(got),
                        want.to_hex()
                    ),
                ),
            });
        }
        let debug = [0u64, 1, 2]
            .iter()
            .all(|i| self.pcrs.get(i).is_some_and(|p| p.iter().all(|b| *b == 0)));
        checks.push(if debug {
            Check::fail(
                "debug",
                "debug mode: PCR0, PCR1 and PCR2 are all zero (the enclave runs with --debug-mode)",
            )
        } else {
            Check::pass("debug", "production mode (PCR0..2 are not zero)")
        });
        if let Some(want) = &opts.nonce {
            checks.push(match &self.nonce {
                Some(got) if got == want => Check::pass("nonce", hex::encode(got)),
                Some(got) => Check::fail(
                    "nonce",
                    format!(
                        "document {} != expected {}",
                        hex::encode(got),
                        hex::encode(want)
                    ),
                ),
                None => Check::fail("nonce", "the document has no nonce"),
            });
        }
        checks
    }

    fn check_signature(&self, es384: bool) -> Check {
        if !es384 {
            return Check::fail("signature", "not checked: the algorithm is not ES384");
        }
        let Ok(EcKey::P384(key)) = ec_key(&self.leaf) else {
            return Check::fail("signature", "the leaf key is not P-384");
        };
        let tbs = sig_structure(&self.protected, &self.payload);
        let ok = p384::ecdsa::Signature::from_slice(&self.signature).is_ok_and(|s| {
            use p384::ecdsa::signature::Verifier;
            key.verify(&tbs, &s).is_ok()
        });
        if ok {
            Check::pass("signature", "ES384 by the leaf certificate's key")
        } else {
            Check::fail(
                "signature",
                "the ES384 signature does not verify with the leaf certificate's key",
            )
        }
    }

    fn check_chain(&self, root_sha256: &[u8; 32]) -> Check {
        let root_fp: [u8; 32] = Sha256::digest(&self.cabundle[0]).into();
        if &root_fp != root_sha256 {
            return Check::fail(
                "chain",
                format!(
                    "cabundle[0] (SHA-256 {}) is not the trusted root {}",
                    hex::encode(root_fp),
                    hex::encode(root_sha256)
                ),
            );
        }
        // Leaf back through the bundle in reverse order, then the root by itself.
        let mut links: Vec<(String, &Certificate, &Vec<u8>, usize)> = Vec::new();
        links.push((
            "certificate".into(),
            &self.leaf,
            &self.certificate,
            self.bundle.len() - 1,
        ));
        for i in (1..self.bundle.len()).rev() {
            links.push((
                format!("cabundle[{i}]"),
                &self.bundle[i],
                &self.cabundle[i],
                i - 1,
            ));
        }
        links.push(("cabundle[0]".into(), &self.bundle[0], &self.cabundle[0], 0));
        for (name, cert, der, issuer) in links {
            if let Err(e) = verify_issued(cert, der, &self.bundle[issuer]) {
                return Check::fail(
                    "chain",
                    format!("{name} is not issued by cabundle[{issuer}]: {e}"),
                );
            }
        }
        Check::pass(
            "chain",
            format!(
                "leaf <- {} certificate(s) <- root {}",
                self.bundle.len() - 1,
                hex::encode(root_fp)
            ),
        )
    }

    fn check_validity(&self, at: SystemTime) -> Check {
        let at_s = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let certs = std::iter::once(("certificate".to_string(), &self.leaf)).chain(
            self.bundle
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("cabundle[{i}]"), c)),
        );
        for (name, cert) in certs {
            let v = cert.tbs_certificate().validity();
            let nb = v.not_before.to_unix_duration().as_secs();
            let na = v.not_after.to_unix_duration().as_secs();
            if at_s < nb {
                return Check::fail(
                    "validity",
                    format!(
                        "{name} not yet valid at {}: from {}",
                        rfc3339(at_s),
                        rfc3339(nb)
                    ),
                );
            }
            if at_s > na {
                return Check::fail(
                    "validity",
                    format!(
                        "{name} expired at {}: valid until {}",
                        rfc3339(at_s),
                        rfc3339(na)
                    ),
                );
            }
        }
        Check::pass(
            "validity",
            format!("every certificate valid at {}", rfc3339(at_s)),
        )
    }

    fn check_freshness(&self, now: SystemTime, max_age: Duration) -> Check {
        let ts = self.timestamp();
        match now.duration_since(ts) {
            Ok(age) if age > max_age => Check::fail(
                "freshness",
                format!(
                    "stale: made {} s ago, more than --max-age {} s",
                    age.as_secs(),
                    max_age.as_secs()
                ),
            ),
            Ok(age) => Check::pass("freshness", format!("made {} s ago", age.as_secs())),
            Err(e) if e.duration() > CLOCK_SKEW => Check::fail(
                "freshness",
                format!("timestamp {} s in the future", e.duration().as_secs()),
            ),
            Err(_) => Check::pass("freshness", "made just now (within the clock skew)"),
        }
    }
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs.min(i64::MAX as u64) as i64)
        .map(crate::eif::rfc3339_utc)
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// `Sig_structure = ["Signature1", protected, h'', payload]`, definite lengths, around the
/// original byte strings.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    put_head(&mut out, 4, 4);
    put_head(&mut out, 3, 10);
    out.extend_from_slice(b"Signature1");
    put_head(&mut out, 2, protected.len() as u64);
    out.extend_from_slice(protected);
    put_head(&mut out, 2, 0);
    put_head(&mut out, 2, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn parse_certificate(der: &[u8], which: &str) -> Result<Certificate, AttestError> {
    Certificate::from_der(der).map_err(|e| AttestError::Certificate {
        which: which.into(),
        detail: format!("not a DER X.509 certificate: {e}"),
    })
}

enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

fn ec_key(cert: &Certificate) -> Result<EcKey, String> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(format!("key algorithm {} is not EC", spki.algorithm.oid));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or("the EC key has no named curve")?;
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the public key bit string is not byte-aligned")?;
    match curve {
        SECP384R1 => p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(EcKey::P384)
            .map_err(|_| "the P-384 public key is not a valid point".into()),
        SECP256R1 => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(EcKey::P256)
            .map_err(|_| "the P-256 public key is not a valid point".into()),
        other => Err(format!("curve {other} is neither P-384 nor P-256")),
    }
}

/// The TBSCertificate exactly as encoded in `der`.
fn raw_tbs(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut r = der::SliceReader::new(der)?;
    der::Header::decode(&mut r)?;
    r.tlv_bytes()
}

/// `cert` names `issuer` as its issuer and carries a valid signature by its key.
fn verify_issued(cert: &Certificate, der: &[u8], issuer: &Certificate) -> Result<(), String> {
    use p384::ecdsa::signature::hazmat::PrehashVerifier;
    let issuer_name = cert.tbs_certificate().issuer().to_der();
    let subject_name = issuer.tbs_certificate().subject().to_der();
    match (issuer_name, subject_name) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => return Err("issuer name does not match the issuer's subject".into()),
    }
    let tbs = raw_tbs(der).map_err(|e| format!("TBSCertificate: {e}"))?;
    let alg = &cert.signature_algorithm().oid;
    let prehash: Vec<u8> = match *alg {
        ECDSA_SHA384 => Sha384::digest(tbs).to_vec(),
        ECDSA_SHA256 => Sha256::digest(tbs).to_vec(),
        other => {
            return Err(format!(
                "signature algorithm {other} is not ECDSA-SHA384/256"
            ));
        }
    };
    let sig = cert
        .signature()
        .as_bytes()
        .ok_or("the signature bit string is not byte-aligned")?;
    let ok = match ec_key(issuer)? {
        EcKey::P384(k) => p384::ecdsa::Signature::from_der(sig)
            .is_ok_and(|s| k.verify_prehash(&prehash, &s).is_ok()),
        EcKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
            .is_ok_and(|s| k.verify_prehash(&prehash, &s).is_ok()),
    };
    if ok {
        Ok(())
    } else {
        Err("the certificate signature does not verify with the issuer's key".into())
    }
}

/// Parse and check in one go: the bytes of a file (raw, base64 or JSON).
pub fn verify(input: &[u8], opts: &Options) -> Result<(Document, Vec<Check>), AttestError> {
    let doc = Document::parse(&decode_input(input)?)?;
    let checks = doc.check(opts);
    Ok((doc, checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_structure_uses_definite_lengths_around_the_original_bytes() {
        let s = sig_structure(&[0xa1, 0x01, 0x38, 0x22], &[0xbf, 0xff]);
        assert_eq!(
            hex::encode(s),
            "846a5369676e617475726531".to_owned() + "44a1013822" + "40" + "42bfff"
        );
    }

    #[test]
    fn base64_with_or_without_padding_and_json_decode_alike() {
        let raw = [0x84u8, 0x40, 0xa0, 0x40, 0x40];
        assert_eq!(decode_input(&raw).unwrap(), raw);
        assert_eq!(decode_input(b"hECgQEA=\n").unwrap(), raw);
        assert_eq!(decode_input(b" hECg\nQEA ").unwrap(), raw);
        assert_eq!(
            decode_input(br#"{"attestation_document": "hECgQEA="}"#).unwrap(),
            raw
        );
        assert!(decode_input(b"{}").is_err());
        assert!(decode_input(b"   ").is_err());
    }

    #[test]
    fn a_response_is_the_json_form_only() {
        let raw = [0x84u8, 0x40, 0xa0, 0x40, 0x40];
        assert_eq!(
            decode_response(br#"{"attestation_document": "hECgQEA="}"#).unwrap(),
            raw
        );
        for (body, needle) in [
            (&b"hECgQEA="[..], "not JSON"),
            (&raw[..], "not JSON"),
            (br#"{"error": "x"}"#, "attestation_document"),
            (br#"{"attestation_document": 1}"#, "attestation_document"),
            (br#"{"attestation_document": "%%"}"#, "base64"),
        ] {
            let e = decode_response(body).unwrap_err().to_string();
            assert!(e.starts_with("response: ") && e.contains(needle), "{e}");
        }
    }
}
