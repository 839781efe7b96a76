//! The EIF signature section: parse it, measure it (PCR8), describe it and
//! verify it the way `nitro-cli describe-eif` does, and create it byte for
//! byte the way `nitro-cli build-enclave --signing-certificate … --private-key …`
//! does.
//!
//! The section is `serde_cbor`'s encoding of `Vec<PcrSignature>` from
//! aws-nitro-enclaves-image-format. Because that crate does not use
//! `serde_bytes`, every `Vec<u8>` in it is a CBOR *array of integers*, not a
//! byte string; we write that form exactly and read either form.
//!
//! Layout (one entry, as nitro-cli writes it):
//!
//! ```text
//! [ { "signing_certificate": [int...]   ; the PEM file's bytes, verbatim
//!     "signature":           [int...] } ] ; an untagged COSE_Sign1
//!
//! COSE_Sign1 = [ bstr .cbor {1: alg}, {}, bstr payload, bstr r||s ]
//! payload    = { "register_index": 0, "register_value": [int...] }  ; PCR0
//! ```
//!
//! `alg` follows the key's curve: P-256 → ES256 (-7, SHA-256),
//! P-384 → ES384 (-35, SHA-384), P-521 → ES512 (-36, SHA-512).

use std::collections::BTreeMap;

use ciborium::value::Value;
use der::oid::ObjectIdentifier;
use der::{Decode, Tag, Tagged};
use serde::Serialize;
use x509_cert::Certificate;

/// Upper bound for the section. A real one is a PEM certificate plus a
/// ~200-byte COSE object, each byte inflated to at most two bytes by the
/// integer-array encoding: a few KiB. Callers must check the size from the
/// section header *before* reading it so a forged header cannot make us
/// allocate gigabytes.
pub const MAX_SIGNATURE_SECTION: u64 = 1024 * 1024;

/// One signed PCR, as stored in the section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSignature {
    /// The signing certificate exactly as the signer supplied it (PEM text).
    pub signing_certificate: Vec<u8>,
    /// A serialized COSE_Sign1 whose payload names the PCR and its value.
    pub signature: Vec<u8>,
}

/// The decoded signature section. nitro-cli only ever writes and reads the
/// first entry (PCR0); further entries are kept but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSection {
    pub entries: Vec<PcrSignature>,
}

/// Outcome of checking the PCR0 signature, finer than a bool because
/// nitro-cli treats the two failures differently: a payload that does not
/// match gives `"SignatureCheck": false`, while a signature that does not
/// verify makes `describe-eif` fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pcr0Check {
    /// Signed by the certificate's key, over this PCR0.
    Valid,
    /// Signed by the certificate's key, but over something else.
    PayloadMismatch,
    /// Not a valid signature by the certificate's key.
    BadSignature,
}

/// The `SigningCertificate` object of `nitro-cli describe-eif`. Field order
/// and names are nitro-cli's; each string is formed as its OpenSSL calls
/// format it (see [`certificate_info`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    #[serde(rename = "IssuerName")]
    pub issuer_name: BTreeMap<String, String>,
    #[serde(rename = "Algorithm")]
    pub algorithm: String,
    #[serde(rename = "NotBefore")]
    pub not_before: String,
    #[serde(rename = "NotAfter")]
    pub not_after: String,
    #[serde(rename = "Signature")]
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature section is {size} bytes, more than the {max}-byte limit")]
    TooLarge { size: u64, max: u64 },
    #[error("signature section is empty")]
    Empty,
    #[error("signature section is not valid CBOR: {0}")]
    Cbor(String),
    #[error("{0} trailing bytes after the CBOR value")]
    TrailingBytes(usize),
    #[error("signature section has an unexpected structure: {0}")]
    Structure(String),
    #[error("signature section holds no PCR signature")]
    NoEntries,
    #[error("PEM: {0}")]
    Pem(String),
    #[error("signing certificate is not a valid X.509 certificate: {0}")]
    Certificate(String),
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    #[error("private key: {0}")]
    PrivateKey(String),
    #[error("the private key does not belong to the signing certificate")]
    KeyMismatch,
    #[error("malformed COSE_Sign1: {0}")]
    Cose(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl SignatureSection {
    /// Refuses a section size before the caller reads (and allocates) it.
    pub fn check_size(size: u64) -> Result<(), SignatureError> {
        if size > MAX_SIGNATURE_SECTION {
            return Err(SignatureError::TooLarge {
                size,
                max: MAX_SIGNATURE_SECTION,
            });
        }
        Ok(())
    }

    /// Lenient where serde would be: byte fields may be integer arrays (what
    /// nitro-cli writes) or byte strings, the entry may be a map with text or
    /// index keys, or a two-element array; unknown map keys are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        Self::check_size(bytes.len() as u64)?;
        if bytes.is_empty() {
            return Err(SignatureError::Empty);
        }
        let items = match untag(decode_cbor(bytes)?) {
            Value::Array(items) => items,
            _ => return Err(structure("the section is not a CBOR array")),
        };
        if items.is_empty() {
            return Err(SignatureError::NoEntries);
        }
        let entries = items
            .into_iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignatureSection { entries })
    }

    /// The canonical (nitro-cli) encoding: byte fields as integer arrays.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_head(&mut out, MAJOR_ARRAY, self.entries.len() as u64);
        for entry in &self.entries {
            put_head(&mut out, MAJOR_MAP, 2);
            put_text(&mut out, "signing_certificate");
            put_int_array(&mut out, &entry.signing_certificate);
            put_text(&mut out, "signature");
            put_int_array(&mut out, &entry.signature);
        }
        out
    }

    /// DER of the first entry's certificate, the input to PCR8. We return
    /// the PEM's decoded bytes rather than a re-encoding; for a certificate
    /// that parses as DER (which we require) they are what OpenSSL's
    /// `X509::to_der` would give.
    pub fn signing_certificate_der(&self) -> Result<Vec<u8>, SignatureError> {
        let entry = self.entries.first().ok_or(SignatureError::NoEntries)?;
        let der = certificate_der_from_pem(&entry.signing_certificate)?;
        parse_certificate(&der)?;
        Ok(der)
    }

    /// True iff the first entry's COSE_Sign1 verifies with its certificate's
    /// key and its payload is PCR index 0 with this value. Malformed input is
    /// an error; a well-formed but wrong signature or payload is `false`.
    pub fn verify_pcr0(&self, pcr0: &[u8; 48]) -> Result<bool, SignatureError> {
        Ok(self.check_pcr0(pcr0)? == Pcr0Check::Valid)
    }

    /// [`verify_pcr0`](Self::verify_pcr0) with the reason for a `false`.
    ///
    /// Unlike nitro-cli, which compares the payload bytes with its own
    /// serde_cbor encoding, we compare decoded values, so a payload whose
    /// register value is a byte string also matches.
    pub fn check_pcr0(&self, pcr0: &[u8; 48]) -> Result<Pcr0Check, SignatureError> {
        let entry = self.entries.first().ok_or(SignatureError::NoEntries)?;
        let cert_der = certificate_der_from_pem(&entry.signing_certificate)?;
        let cert = parse_certificate(&cert_der)?;
        let key = EcVerifyingKey::from_certificate(&cert)?;
        let cose = CoseSign1::parse(&entry.signature)?;

        // As aws-nitro-enclaves-cose: an algorithm other than the one the
        // key's curve implies is a failed verification, not malformed input.
        if cose.alg != key.curve().cose_alg() {
            return Ok(Pcr0Check::BadSignature);
        }
        let to_be_signed = sig_structure(&cose.protected, &cose.payload);
        if !key.verify(&to_be_signed, &cose.signature) {
            return Ok(Pcr0Check::BadSignature);
        }
        Ok(match decode_pcr_info(&cose.payload) {
            Some((0, value)) if value == pcr0 => Pcr0Check::Valid,
            _ => Pcr0Check::PayloadMismatch,
        })
    }
}

/// PCR8 as the Nitro hypervisor extends it: a SHA-384 PCR starting at zero,
/// extended once with SHA-384 of the certificate's DER.
pub fn pcr8(cert_der: &[u8]) -> crate::pcr::Pcr {
    crate::pcr::Pcr::of_bytes(cert_der)
}

impl SignatureSection {
    /// PCR8 of the image this section signs: that of its (first) signing certificate.
    pub fn pcr8(&self) -> Result<crate::pcr::Pcr, SignatureError> {
        Ok(pcr8(&self.signing_certificate_der()?))
    }
}

/// The describe-eif view of a certificate. Each string reproduces what
/// nitro-cli's rust-openssl calls print:
/// - issuer keys: `Asn1Object` Display = `OBJ_obj2txt(.., 0)`, i.e. the
///   OpenSSL *long* name (`commonName`, `countryName`, `emailAddress`), or
///   the dotted OID when OpenSSL has no name for it; a repeated attribute
///   keeps its last value (it is a `BTreeMap` insert);
/// - issuer values: `format!("{:?}", ASN1_STRING_to_UTF8(..))` with every
///   `"` removed, so an inner quote leaves the backslash that escaped it
///   (`Acme "Q"` → `Acme \Q\`); `error` when OpenSSL could not convert;
/// - `Algorithm`: the long name of the outer signature algorithm;
/// - dates: `ASN1_TIME_print`, e.g. `Jan  1 00:00:00 2024 GMT`;
/// - `Signature`: the signature bits as `XX:XX:…`, uppercase.
///
/// We parse with x509-cert's RFC 5280 profile, which is stricter than
/// OpenSSL (e.g. no BER, no UniversalString, UTCTime from 1970): such a
/// certificate is an error here where nitro-cli would still describe it.
pub fn certificate_info(cert_der: &[u8]) -> Result<CertificateInfo, SignatureError> {
    let cert = parse_certificate(cert_der)?;
    let tbs = cert.tbs_certificate();

    let mut issuer_name = BTreeMap::new();
    for attribute in tbs.issuer().iter() {
        let value = format!("{:?}", openssl_utf8(&attribute.value)).replace('"', "");
        issuer_name.insert(openssl_object_name(&attribute.oid), value);
    }

    let validity = tbs.validity();
    Ok(CertificateInfo {
        issuer_name,
        algorithm: openssl_object_name(&cert.signature_algorithm().oid),
        not_before: asn1_time_print(validity.not_before.to_date_time()),
        not_after: asn1_time_print(validity.not_after.to_date_time()),
        signature: cert
            .signature()
            .raw_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// Builds the section nitro-cli would write for this certificate, key and
/// PCR0: same CBOR, same COSE headers, the certificate file stored verbatim.
///
/// One deliberate difference: OpenSSL's ECDSA picks a random nonce, so
/// nitro-cli's signatures differ on every build. We use RFC 6979
/// deterministic nonces so that a rebuild is byte-identical. A verifier
/// cannot tell the two apart; both are ordinary ECDSA signatures.
///
/// Unlike nitro-cli, a key that does not belong to the certificate is
/// refused up front ([`SignatureError::KeyMismatch`]) instead of producing
/// an image whose signature can never verify.
pub fn sign_pcr0(
    cert_pem: &[u8],
    key_pem: &[u8],
    pcr0: &[u8; 48],
) -> Result<Vec<u8>, SignatureError> {
    let cert_der = certificate_der_from_pem(cert_pem)?;
    let cert = parse_certificate(&cert_der)?;
    let public = EcVerifyingKey::from_certificate(&cert)?;
    let private = EcSigningKey::from_pem(key_pem)?;
    if !private.matches(&public) {
        return Err(SignatureError::KeyMismatch);
    }

    let payload = encode_pcr_info(0, pcr0);
    let mut protected = Vec::new();
    put_head(&mut protected, MAJOR_MAP, 1);
    put_int(&mut protected, 1);
    put_int(&mut protected, private.curve().cose_alg());
    let signature = private.sign(&sig_structure(&protected, &payload))?;

    let mut cose = Vec::new();
    put_head(&mut cose, MAJOR_ARRAY, 4);
    put_bytes(&mut cose, &protected);
    put_head(&mut cose, MAJOR_MAP, 0);
    put_bytes(&mut cose, &payload);
    put_bytes(&mut cose, &signature);

    Ok(SignatureSection {
        entries: vec![PcrSignature {
            signing_certificate: cert_pem.to_vec(),
            signature: cose,
        }],
    }
    .to_bytes())
}

// ---------------------------------------------------------------------------
// Section and payload structure

fn structure(msg: &str) -> SignatureError {
    SignatureError::Structure(msg.to_owned())
}

fn parse_entry(value: Value) -> Result<PcrSignature, SignatureError> {
    let (cert, sig) = match untag(value) {
        Value::Map(pairs) => {
            let mut cert = None;
            let mut sig = None;
            for (key, value) in pairs {
                let slot = match untag(key) {
                    Value::Text(t) if t == "signing_certificate" => &mut cert,
                    Value::Text(t) if t == "signature" => &mut sig,
                    Value::Integer(i) if i == 0.into() => &mut cert,
                    Value::Integer(i) if i == 1.into() => &mut sig,
                    _ => continue,
                };
                if slot.replace(value).is_some() {
                    return Err(structure("duplicate field in a PCR signature"));
                }
            }
            (
                cert.ok_or_else(|| structure("missing signing_certificate"))?,
                sig.ok_or_else(|| structure("missing signature"))?,
            )
        }
        Value::Array(items) => {
            let [cert, sig]: [Value; 2] = items
                .try_into()
                .map_err(|_| structure("a PCR signature array must have two elements"))?;
            (cert, sig)
        }
        _ => return Err(structure("a PCR signature is neither a map nor an array")),
    };
    Ok(PcrSignature {
        signing_certificate: bytes_of(cert)
            .ok_or_else(|| structure("signing_certificate is not a byte sequence"))?,
        signature: bytes_of(sig).ok_or_else(|| structure("signature is not a byte sequence"))?,
    })
}

/// `(register_index, register_value)` if the payload has PcrInfo's shape.
fn decode_pcr_info(payload: &[u8]) -> Option<(i64, Vec<u8>)> {
    let Value::Map(pairs) = untag(decode_cbor(payload).ok()?) else {
        return None;
    };
    let mut index = None;
    let mut value = None;
    for (key, v) in pairs {
        let Value::Text(name) = untag(key) else {
            continue;
        };
        let duplicate = match name.as_str() {
            "register_index" => {
                let Value::Integer(i) = untag(v) else {
                    return None;
                };
                index.replace(i64::try_from(i).ok()?).is_some()
            }
            "register_value" => value.replace(bytes_of(v)?).is_some(),
            _ => false,
        };
        if duplicate {
            return None;
        }
    }
    Some((index?, value?))
}

/// serde_cbor's encoding of `PcrInfo { register_index, register_value }`.
fn encode_pcr_info(index: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_head(&mut out, MAJOR_MAP, 2);
    put_text(&mut out, "register_index");
    put_int(&mut out, index);
    put_text(&mut out, "register_value");
    put_int_array(&mut out, value);
    out
}

// ---------------------------------------------------------------------------
// COSE_Sign1 (RFC 8152 §4.2), the subset aws-nitro-enclaves-cose produces

struct CoseSign1 {
    /// Kept as the exact bytes received: the signature covers them.
    protected: Vec<u8>,
    alg: i64,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl CoseSign1 {
    fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let cose = |msg: &str| SignatureError::Cose(msg.to_owned());
        let value = match decode_cbor(bytes).map_err(|e| SignatureError::Cose(e.to_string()))? {
            Value::Tag(18, inner) => *inner,
            Value::Tag(tag, _) => {
                return Err(SignatureError::Cose(format!("unexpected tag {tag}")));
            }
            other => other,
        };
        let Value::Array(items) = value else {
            return Err(cose("not a CBOR array"));
        };
        let [protected, unprotected, payload, signature]: [Value; 4] = items
            .try_into()
            .map_err(|_| cose("a COSE_Sign1 has exactly four elements"))?;
        let protected = bytes_of(protected).ok_or_else(|| cose("protected is not a bstr"))?;
        if !matches!(unprotected, Value::Map(_)) {
            return Err(cose("unprotected header is not a map"));
        }
        let payload = match payload {
            Value::Null => return Err(cose("detached payloads are not supported")),
            p => bytes_of(p).ok_or_else(|| cose("payload is not a bstr"))?,
        };
        let signature = bytes_of(signature).ok_or_else(|| cose("signature is not a bstr"))?;

        let Value::Map(header) =
            decode_cbor(&protected).map_err(|e| SignatureError::Cose(format!("protected: {e}")))?
        else {
            return Err(cose("protected header is not a map"));
        };
        let mut alg = None;
        for (key, value) in header {
            if key == Value::Integer(1.into()) {
                let Value::Integer(a) = value else {
                    return Err(cose("alg is not an integer"));
                };
                if alg.replace(i64::try_from(a).ok()).is_some() {
                    return Err(cose("duplicate alg in protected header"));
                }
            }
        }
        // An alg too large for i64 is no algorithm we know: i64::MIN maps to
        // no curve, so verification fails rather than errors.
        let alg = alg.ok_or_else(|| cose("protected header has no alg"))?;
        Ok(CoseSign1 {
            protected,
            alg: alg.unwrap_or(i64::MIN),
            payload,
            signature,
        })
    }
}

/// `Sig_structure = ["Signature1", protected, external_aad = h'', payload]`.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 20);
    put_head(&mut out, MAJOR_ARRAY, 4);
    put_text(&mut out, "Signature1");
    put_bytes(&mut out, protected);
    put_bytes(&mut out, &[]);
    put_bytes(&mut out, payload);
    out
}

// ---------------------------------------------------------------------------
// CBOR: lenient decoding through ciborium, exact encoding by hand (serde_cbor
// always uses the shortest head, which is what `put_head` writes)

const MAJOR_UINT: u8 = 0;
const MAJOR_NINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

fn decode_cbor(bytes: &[u8]) -> Result<Value, SignatureError> {
    let mut rest = bytes;
    let value: Value =
        ciborium::from_reader(&mut rest).map_err(|e| SignatureError::Cbor(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SignatureError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// serde ignores CBOR tags on plain values; so do we.
fn untag(mut value: Value) -> Value {
    while let Value::Tag(_, inner) = value {
        value = *inner;
    }
    value
}

/// A byte sequence in either encoding serde would accept for `Vec<u8>`.
fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match untag(value) {
        Value::Bytes(b) => Some(b),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match untag(item) {
                Value::Integer(i) => u8::try_from(i).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
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

fn put_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        put_head(out, MAJOR_UINT, n.unsigned_abs());
    } else {
        // -1 - n, computed without overflow for i64::MIN.
        put_head(out, MAJOR_NINT, n.unsigned_abs() - 1);
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_int_array(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_ARRAY, b.len() as u64);
    for &byte in b {
        put_head(out, MAJOR_UINT, u64::from(byte));
    }
}

// ---------------------------------------------------------------------------
// PEM, read the way OpenSSL's PEM_read_bio_* does: text before, between and
// after blocks is skipped, and the first block with a wanted label is used.

struct PemBlock {
    label: String,
    has_headers: bool,
    der: Vec<u8>,
}

fn find_pem_block(data: &[u8], wanted: impl Fn(&str) -> bool) -> Result<PemBlock, SignatureError> {
    let mut lines = data.split(|&b| b == b'\n').map(|l| l.trim_ascii());
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix(b"-----BEGIN ")
            .and_then(|l| l.strip_suffix(b"-----"))
        else {
            continue;
        };
        let label = String::from_utf8_lossy(label).into_owned();
        if !wanted(&label) {
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut body = Vec::new();
        let mut has_headers = false;
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end.as_bytes() {
                closed = true;
                break;
            }
            if line.contains(&b':') {
                has_headers = true;
            } else {
                body.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
            }
        }
        if !closed {
            return Err(SignatureError::Pem(format!("no {end} line")));
        }
        let body = std::str::from_utf8(&body)
            .map_err(|_| SignatureError::Pem(format!("{label}: body is not base64")))?;
        let der = <base64ct::Base64 as base64ct::Encoding>::decode_vec(body)
            .map_err(|e| SignatureError::Pem(format!("{label}: bad base64: {e}")))?;
        if der.is_empty() {
            return Err(SignatureError::Pem(format!("{label}: empty body")));
        }
        return Ok(PemBlock {
            label,
            has_headers,
            der,
        });
    }
    Err(SignatureError::Pem("no matching BEGIN line".into()))
}

/// OpenSSL reads a certificate from `CERTIFICATE` or the legacy
/// `X509 CERTIFICATE` label.
pub fn certificate_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, SignatureError> {
    find_pem_block(pem, |l| l == "CERTIFICATE" || l == "X509 CERTIFICATE")
        .map(|block| block.der)
        .map_err(|e| match e {
            SignatureError::Pem(msg) => SignatureError::Pem(format!("certificate: {msg}")),
            other => other,
        })
}

fn parse_certificate(der: &[u8]) -> Result<Certificate, SignatureError> {
    Certificate::from_der(der).map_err(|e| SignatureError::Certificate(e.to_string()))
}

// ---------------------------------------------------------------------------
// Keys

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_oid(oid: &ObjectIdentifier) -> Result<Self, SignatureError> {
        match *oid {
            SECP256R1 => Ok(Curve::P256),
            SECP384R1 => Ok(Curve::P384),
            SECP521R1 => Ok(Curve::P521),
            _ => Err(SignatureError::UnsupportedKey(format!(
                "curve {oid} (only P-256, P-384 and P-521 are supported)"
            ))),
        }
    }

    /// The COSE algorithm aws-nitro-enclaves-cose pairs with the curve.
    fn cose_alg(self) -> i64 {
        match self {
            Curve::P256 => -7,
            Curve::P384 => -35,
            Curve::P521 => -36,
        }
    }

    /// Bytes in a scalar: r and s are each left-padded to this length.
    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

enum EcVerifyingKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

impl EcVerifyingKey {
    fn from_certificate(cert: &Certificate) -> Result<Self, SignatureError> {
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(SignatureError::UnsupportedKey(format!(
                "certificate key algorithm {} is not EC",
                spki.algorithm.oid
            )));
        }
        let curve_oid = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .ok_or_else(|| {
                SignatureError::UnsupportedKey("certificate key has no named curve".into())
            })?;
        let point = spki.subject_public_key.as_bytes().ok_or_else(|| {
            SignatureError::Certificate("public key bit string is not byte-aligned".into())
        })?;
        let bad_point = |_| SignatureError::Certificate("public key is not a valid point".into());
        Ok(match Curve::from_oid(&curve_oid)? {
            Curve::P256 => {
                Self::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_point)?)
            }
            Curve::P384 => {
                Self::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_point)?)
            }
            Curve::P521 => {
                Self::P521(p521::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_point)?)
            }
        })
    }

    fn curve(&self) -> Curve {
        match self {
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::P521(_) => Curve::P521,
        }
    }

    /// `signature` is COSE's r||s; the message is hashed with the curve's
    /// digest. Like OpenSSL, high-S signatures are accepted.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        if signature.len() != 2 * self.curve().scalar_len() {
            return false;
        }
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
            Self::P384(k) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
            Self::P521(k) => p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
        }
    }
}

enum EcSigningKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

impl EcSigningKey {
    /// Accepts what nitro-cli's `PKey::private_key_from_pem` accepts for EC
    /// keys: SEC1 (`EC PRIVATE KEY`, as `openssl ecparam -genkey` writes,
    /// after an `EC PARAMETERS` block that is skipped) or unencrypted
    /// PKCS#8 (`PRIVATE KEY`).
    fn from_pem(pem: &[u8]) -> Result<Self, SignatureError> {
        let block = find_pem_block(pem, |l| l.ends_with("PRIVATE KEY")).map_err(|e| match e {
            SignatureError::Pem(msg) => SignatureError::Pem(format!("private key: {msg}")),
            other => other,
        })?;
        if block.has_headers || block.label == "ENCRYPTED PRIVATE KEY" {
            return Err(SignatureError::PrivateKey(
                "encrypted private keys are not supported".into(),
            ));
        }
        match block.label.as_str() {
            "EC PRIVATE KEY" => Self::from_sec1_der(&block.der, None),
            "PRIVATE KEY" => Self::from_pkcs8_der(&block.der),
            other => Err(SignatureError::UnsupportedKey(format!(
                "{other} is not an EC key"
            ))),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignatureError> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| SignatureError::PrivateKey(format!("not a PKCS#8 key: {e}")))?;
        if info.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(SignatureError::UnsupportedKey(format!(
                "private key algorithm {} is not EC",
                info.algorithm.oid
            )));
        }
        let curve_oid = info
            .algorithm
            .parameters_oid()
            .map_err(|_| SignatureError::UnsupportedKey("private key has no named curve".into()))?;
        let curve = Curve::from_oid(&curve_oid)?;
        Self::from_sec1_der(info.private_key.as_bytes(), Some(curve))
    }

    /// `outer` is the curve named by an enclosing PKCS#8 wrapper.
    fn from_sec1_der(der: &[u8], outer: Option<Curve>) -> Result<Self, SignatureError> {
        let key = sec1::EcPrivateKey::from_der(der)
            .map_err(|e| SignatureError::PrivateKey(format!("not a SEC1 EC key: {e}")))?;
        let inner = match &key.parameters {
            Some(sec1::EcParameters::NamedCurve(oid)) => Some(Curve::from_oid(oid)?),
            None => None,
        };
        let curve = match (inner, outer) {
            (Some(a), Some(b)) if a != b => {
                return Err(SignatureError::PrivateKey(
                    "PKCS#8 and SEC1 name different curves".into(),
                ));
            }
            (Some(c), _) | (None, Some(c)) => c,
            // A bare SEC1 key without parameters: its length names the curve.
            (None, None) => match key.private_key.len() {
                32 => Curve::P256,
                48 => Curve::P384,
                66 => Curve::P521,
                n => {
                    return Err(SignatureError::PrivateKey(format!(
                        "cannot tell the curve of a {n}-byte key without parameters"
                    )));
                }
            },
        };
        let bad = |e: der::Error| SignatureError::PrivateKey(format!("invalid EC key: {e}"));
        Ok(match curve {
            Curve::P256 => Self::P256(p256::SecretKey::try_from(key).map_err(bad)?.into()),
            Curve::P384 => Self::P384(p384::SecretKey::try_from(key).map_err(bad)?.into()),
            Curve::P521 => Self::P521(p521::SecretKey::try_from(key).map_err(bad)?.into()),
        })
    }

    fn curve(&self) -> Curve {
        match self {
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::P521(_) => Curve::P521,
        }
    }

    fn matches(&self, public: &EcVerifyingKey) -> bool {
        match (self, public) {
            (Self::P256(s), EcVerifyingKey::P256(p)) => s.verifying_key() == p,
            (Self::P384(s), EcVerifyingKey::P384(p)) => s.verifying_key() == p,
            (Self::P521(s), EcVerifyingKey::P521(p)) => s.verifying_key() == p,
            _ => false,
        }
    }

    /// RFC 6979 ECDSA over the curve's digest, as COSE's fixed-size r||s.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        use p256::ecdsa::signature::Signer;
        let err = |e: p256::ecdsa::Error| SignatureError::Signing(e.to_string());
        Ok(match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.try_sign(message).map_err(err)?;
                s.to_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.try_sign(message).map_err(err)?;
                s.to_bytes().to_vec()
            }
            Self::P521(k) => {
                let s: p521::ecdsa::Signature = k.try_sign(message).map_err(err)?;
                s.to_bytes().to_vec()
            }
        })
    }
}

// ---------------------------------------------------------------------------
// OpenSSL's textual forms, for describe-eif

/// `OBJ_obj2txt(buf, len, obj, 0)`: the long name OpenSSL 3 knows for the
/// OID, else the dotted form. Covers the attribute types that appear in
/// names and the signature algorithms a CA can use.
fn openssl_object_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    let name = match dotted.as_str() {
        "2.5.4.3" => "commonName",
        "2.5.4.4" => "surname",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "countryName",
        "2.5.4.7" => "localityName",
        "2.5.4.8" => "stateOrProvinceName",
        "2.5.4.9" => "streetAddress",
        "2.5.4.10" => "organizationName",
        "2.5.4.11" => "organizationalUnitName",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.16" => "postalAddress",
        "2.5.4.17" => "postalCode",
        "2.5.4.18" => "postOfficeBox",
        "2.5.4.41" => "name",
        "2.5.4.42" => "givenName",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.72" => "role",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.2.840.113549.1.9.2" => "unstructuredName",
        "1.2.840.113549.1.9.8" => "unstructuredAddress",
        "0.9.2342.19200300.100.1.1" => "userId",
        "0.9.2342.19200300.100.1.25" => "domainComponent",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionLocalityName",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionStateOrProvinceName",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionCountryName",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "2.16.840.1.101.3.4.3.9" => "ecdsa_with_SHA3-224",
        "2.16.840.1.101.3.4.3.10" => "ecdsa_with_SHA3-256",
        "2.16.840.1.101.3.4.3.11" => "ecdsa_with_SHA3-384",
        "2.16.840.1.101.3.4.3.12" => "ecdsa_with_SHA3-512",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.113549.1.1.15" => "sha512-224WithRSAEncryption",
        "1.2.840.113549.1.1.16" => "sha512-256WithRSAEncryption",
        "2.16.840.1.101.3.4.3.13" => "RSA-SHA3-224",
        "2.16.840.1.101.3.4.3.14" => "RSA-SHA3-256",
        "2.16.840.1.101.3.4.3.15" => "RSA-SHA3-384",
        "2.16.840.1.101.3.4.3.16" => "RSA-SHA3-512",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        "1.2.840.10040.4.3" => "dsaWithSHA1",
        "2.16.840.1.101.3.4.3.1" => "dsa_with_SHA224",
        "2.16.840.1.101.3.4.3.2" => "dsa_with_SHA256",
        _ => return dotted,
    };
    name.to_owned()
}

/// `ASN1_STRING_to_UTF8` on a name attribute, then the C-string view
/// rust-openssl takes of the result (so it stops at the first NUL).
/// OpenSSL converts only string types, byte-per-character ones as Latin-1;
/// anything else, or bytes it rejects, is rust-openssl's "error".
fn openssl_utf8(value: &der::Any) -> String {
    const ERROR: &str = "error";
    let bytes = value.value();
    let text: Option<String> = match value.tag() {
        Tag::Utf8String => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Tag::NumericString
        | Tag::PrintableString
        | Tag::TeletexString
        | Tag::Ia5String
        | Tag::UtcTime
        | Tag::GeneralizedTime
        | Tag::VisibleString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        // UCS-2 big-endian. (UniversalString, OpenSSL's other wide type,
        // is not decodable by `der`, so such a certificate fails to parse.)
        Tag::BmpString if bytes.len().is_multiple_of(2) => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_be_bytes([c[0], c[1]]))))
            .collect(),
        _ => None,
    };
    match text {
        Some(mut s) => {
            if let Some(nul) = s.find('\0') {
                s.truncate(nul);
            }
            s
        }
        None => ERROR.to_owned(),
    }
}

/// `ASN1_TIME_print`: `%s %2d %02d:%02d:%02d %d GMT`. DER times are always
/// UTC and without fractional seconds, so neither variant of the format
/// arises.
fn asn1_time_print(t: der::DateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(usize::from(t.month()).wrapping_sub(1))
        .copied()
        .unwrap_or("???");
    format!(
        "{month} {:2} {:02}:{:02}:{:02} {} GMT",
        t.day(),
        t.hour(),
        t.minutes(),
        t.seconds(),
        t.year()
    )
}

/// Signs PCR0 with a local EC key and its certificate, as `nitro-cli build-enclave
/// --signing-certificate --private-key` does.
pub struct PemSigner {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl PemSigner {
    /// Checks the pair up front, so a key that does not belong to the certificate is refused
    /// before any image is written.
    pub fn new(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<PemSigner, SignatureError> {
        sign_pcr0(&cert_pem, &key_pem, &[0u8; 48])?;
        Ok(PemSigner { cert_pem, key_pem })
    }
}

impl super::Pcr0Signer for PemSigner {
    fn sign(
        &self,
        pcr0: &crate::pcr::Pcr,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(sign_pcr0(&self.cert_pem, &self.key_pem, &pcr0.0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-for-byte vectors from aws-nitro-enclaves-image-format's
    /// src/utils/cbor.rs, recorded from serde_cbor 0.11 (nitro-cli's encoder).
    const PCR_INFO_SERDE_CBOR: &str = "a26e72656769737465725f696e646578006e72656769737465725f76616c75659830000102030405060708090a0b0c0d0e0f101112131415161718181819181a181b181c181d181e181f1820182118221823182418251826182718281829182a182b182c182d182e182f";
    const SECTION_SERDE_CBOR: &str = "81a2737369676e696e675f6365727469666963617465983b182d182d182d182d182d1842184518471849184e182018431845185218541849184618491843184118541845182d182d182d182d182d0a184d1849184918420a182d182d182d182d182d1845184e1844182018431845185218541849184618491843184118541845182d182d182d182d182d0a697369676e61747572658a18d21884184418a1011838182218a018401840";

    #[test]
    fn pcr_info_is_encoded_as_serde_cbor_does() {
        let value: Vec<u8> = (0u8..48).collect();
        assert_eq!(hex::encode(encode_pcr_info(0, &value)), PCR_INFO_SERDE_CBOR);
    }

    #[test]
    fn section_is_encoded_as_serde_cbor_does() {
        let section = SignatureSection {
            entries: vec![PcrSignature {
                signing_certificate:
                    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec(),
                signature: vec![0xd2, 0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x40, 0x40],
            }],
        };
        assert_eq!(hex::encode(section.to_bytes()), SECTION_SERDE_CBOR);
        let bytes = hex::decode(SECTION_SERDE_CBOR).unwrap();
        assert_eq!(SignatureSection::parse(&bytes).unwrap(), section);
    }

    #[test]
    fn protected_headers_match_aws_nitro_enclaves_cose() {
        // From aws-nitro-enclaves-cose's map_serialization test.
        for (curve, expected) in [
            (Curve::P256, &[0xa1, 0x01, 0x26][..]),
            (Curve::P384, &[0xa1, 0x01, 0x38, 0x22]),
            (Curve::P521, &[0xa1, 0x01, 0x38, 0x23]),
        ] {
            let mut out = Vec::new();
            put_head(&mut out, MAJOR_MAP, 1);
            put_int(&mut out, 1);
            put_int(&mut out, curve.cose_alg());
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn sig_structure_matches_aws_nitro_enclaves_cose() {
        // From aws-nitro-enclaves-cose's sig_structure_text test (ES256 case).
        let text = b"It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.";
        let got = sig_structure(&[0xa1, 0x01, 0x26], text);
        let mut want = vec![0x84, 0x6a];
        want.extend_from_slice(b"Signature1");
        want.extend_from_slice(&[0x43, 0xa1, 0x01, 0x26, 0x40, 0x58, 0x75]);
        want.extend_from_slice(text);
        assert_eq!(got, want);
    }

    #[test]
    fn heads_are_shortest_form() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (23, &[0x17]),
            (24, &[0x18, 24]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 0x01, 0x00]),
            (65536, &[0x1a, 0x00, 0x01, 0x00, 0x00]),
        ];
        for (n, want) in cases {
            let mut out = Vec::new();
            put_head(&mut out, MAJOR_UINT, n);
            assert_eq!(out, want, "{n}");
        }
        let mut out = Vec::new();
        put_int(&mut out, i64::MIN);
        assert_eq!(out[0], 0x3b);
    }

    #[test]
    fn time_is_printed_like_asn1_time_print() {
        let t = der::DateTime::new(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(asn1_time_print(t), "Jan  1 00:00:00 2024 GMT");
        let t = der::DateTime::new(2051, 12, 31, 23, 59, 9).unwrap();
        assert_eq!(asn1_time_print(t), "Dec 31 23:59:09 2051 GMT");
    }

    #[test]
    fn string_values_convert_like_asn1_string_to_utf8() {
        let any = |tag: u8, bytes: &[u8]| {
            let mut der = vec![tag, bytes.len() as u8];
            der.extend_from_slice(bytes);
            der::Any::from_der(&der).unwrap()
        };
        assert_eq!(openssl_utf8(&any(0x0C, "Zürich".as_bytes())), "Zürich");
        assert_eq!(openssl_utf8(&any(0x14, &[0x5A, 0xFC])), "Zü"); // Latin-1
        assert_eq!(openssl_utf8(&any(0x1E, &[0x00, 0x41, 0x00, 0xFC])), "Aü");
        assert_eq!(openssl_utf8(&any(0x0C, &[0xff])), "error");
        assert_eq!(openssl_utf8(&any(0x1E, &[0x00])), "error");
        assert_eq!(openssl_utf8(&any(0x04, b"octets")), "error");
        assert_eq!(openssl_utf8(&any(0x13, b"ab\0cd")), "ab");
    }

    #[test]
    fn object_names_fall_back_to_dotted_form() {
        let oid = ObjectIdentifier::new_unwrap("1.2.3.4.5");
        assert_eq!(openssl_object_name(&oid), "1.2.3.4.5");
    }
}
