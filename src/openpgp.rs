//! OpenPGP signatures over published files (`pcr-values.json`), with Sequoia.
//!
//! Keys made here are what GnuPG 2.2 and every other OpenPGP implementation read: version 4
//! (RFC 4880) Ed25519 keys whose primary key certifies and signs. Signatures are detached,
//! binary-document signatures, ASCII-armored.
//!
//! Verification fails closed. A file verifies only when every signature in it is a well-formed
//! binary-document signature, made by a key of the given [`Keyring`], over exactly these bytes,
//! and the key is at `now` neither revoked nor expired, bound to its certificate, and
//! signing-capable, under Sequoia's standard policy (no SHA-1, no weak keys). Anything else
//! is a [`VerifyError`] that says which.
//!
//! The crypto backend is Sequoia's pure-Rust one (RustCrypto). Its RSA code is not constant
//! time, so eifctl signs only with Ed25519 and ECDSA keys; RSA signatures are still verified
//! (verification handles public data only).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::packet::Signature;
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{KeyFlags, PublicKeyAlgorithm, RevocationStatus, SignatureType};
use openpgp::{Cert, Packet, PacketPile};

/// How far a signature's creation time may lie in the future of `now` (clocks differ).
const CLOCK_SKEW: Duration = Duration::from_secs(30 * 60);

/// The file extensions a keyring directory is read for.
pub const KEYRING_EXTENSIONS: &[&str] = &["asc", "pgp", "gpg"];

/// A new signing key, armored.
#[derive(Clone)]
pub struct GeneratedKey {
    /// The transferable secret key (encrypted with the passphrase, when one was given).
    pub secret_armored: String,
    /// The public certificate: what goes into `keys/`.
    pub public_armored: String,
    /// A revocation certificate for the key ("key retired"), to publish when it leaves.
    pub revocation_armored: String,
    /// The primary key's fingerprint, uppercase hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum OpenPgpError {
    #[error("invalid user ID {0:?}: give one line such as \"Name <email>\"")]
    UserId(String),
    #[error("empty passphrase: give a real one, or make an unencrypted key on purpose")]
    EmptyPassphrase,
    #[error("not an OpenPGP key: {0}")]
    Parse(String),
    #[error("{0} OpenPGP certificates in one key file: expected exactly one")]
    NotOneCert(usize),
    #[error("key {0} has no secret key material (a public certificate?)")]
    NoSecretKey(String),
    #[error("key {0} is encrypted: a passphrase is needed")]
    PassphraseRequired(String),
    #[error("wrong passphrase for key {0}")]
    WrongPassphrase(String),
    #[error("key {fingerprint} has no usable signing key: {reason}")]
    NoSigningKey { fingerprint: String, reason: String },
    #[error(
        "key {fingerprint} signs with {algorithm}: eifctl signs with Ed25519 or ECDSA keys only (its crypto backend's RSA is not constant time)"
    )]
    UnsupportedAlgorithm {
        fingerprint: String,
        algorithm: String,
    },
    #[error("OpenPGP: {0}")]
    Crypto(String),
}

/// Why a detached signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature: {0}")]
    NoSignature(String),
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("signed by unknown key {issuer}: not in the keyring")]
    UnknownKey { issuer: String },
    #[error("BAD signature by {fingerprint}: the file is not what was signed")]
    BadSignature { fingerprint: String },
    #[error("key {fingerprint} has expired: {detail}")]
    Expired { fingerprint: String, detail: String },
    #[error("key {fingerprint} is revoked: {detail}")]
    Revoked { fingerprint: String, detail: String },
    #[error("key {fingerprint} is not signing-capable")]
    NotSigningCapable { fingerprint: String },
    #[error("signature by {fingerprint} rejected: {reason}")]
    Rejected { fingerprint: String, reason: String },
}

impl VerifyError {
    /// True for a signature that was checked against the keyring and does not hold (as opposed
    /// to input that is not a signature at all).
    pub fn is_checked(&self) -> bool {
        !matches!(
            self,
            VerifyError::NoSignature(_) | VerifyError::Malformed(_)
        )
    }
}

/// A signature that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signer's certificate (primary key) fingerprint, uppercase hex.
    pub fingerprint: String,
    /// The fingerprint of the key that made the signature (a subkey, or the primary key).
    pub key_fingerprint: String,
    /// The certificate's valid user IDs.
    pub userids: Vec<String>,
    /// When the signature says it was made.
    pub created: SystemTime,
}

/// Why a keyring could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not OpenPGP certificates: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: holds secret key material: put only public certificates in a keyring")]
    Secret { path: PathBuf },
    #[error("{path}: no certificates (*.asc, *.pgp, *.gpg)")]
    Empty { path: PathBuf },
}

/// Trusted certificates: every one given is trusted to sign.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    certs: Vec<Cert>,
}

fn flat(e: impl std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn policy() -> StandardPolicy<'static> {
    StandardPolicy::new()
}

/// Makes a signing key: a v4 Ed25519 primary key with the certification and signing
/// capabilities, bound to `userid`, valid for `validity` (None: no expiry), its secret
/// encrypted with `passphrase` when one is given.
pub fn generate_key(
    userid: &str,
    passphrase: Option<&str>,
    validity: Option<Duration>,
) -> Result<GeneratedKey, OpenPgpError> {
    if userid.trim().is_empty() || userid.contains(['\n', '\r', '\0']) {
        return Err(OpenPgpError::UserId(userid.to_string()));
    }
    if passphrase == Some("") {
        return Err(OpenPgpError::EmptyPassphrase);
    }
    let builder = CertBuilder::new()
        .set_profile(openpgp::Profile::RFC4880)
        .map_err(|e| OpenPgpError::Crypto(flat(e)))?
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .add_userid(userid)
        .set_validity_period(validity)
        .set_password(passphrase.map(Password::from));
    let (cert, revocation) = builder
        .generate()
        .map_err(|e| OpenPgpError::Crypto(flat(e)))?;
    let fingerprint = cert.fingerprint().to_hex();
    let secret_armored = armored_string(&cert.as_tsk().armored())?;
    let public_armored = public_armored(&cert)?;
    // A revocation certificate as sq writes one: the primary key with its revocation, which
    // merges into the certificate wherever the two meet (a keyring, `gpg --import`).
    let rev_cert = Cert::from_packets(
        vec![
            Packet::from(cert.primary_key().key().clone().take_secret().0),
            Packet::from(revocation),
        ]
        .into_iter(),
    )
    .map_err(|e| OpenPgpError::Crypto(flat(e)))?;
    let revocation_armored = armored_string(&rev_cert.armored())?;
    Ok(GeneratedKey {
        secret_armored,
        public_armored,
        revocation_armored,
        fingerprint,
    })
}

fn armored_string(what: &impl SerializeInto) -> Result<String, OpenPgpError> {
    let bytes = SerializeInto::to_vec(what).map_err(|e| OpenPgpError::Crypto(flat(e)))?;
    String::from_utf8(bytes).map_err(|e| OpenPgpError::Crypto(flat(e)))
}

fn public_armored(cert: &Cert) -> Result<String, OpenPgpError> {
    let mut out = Vec::new();
    cert.armored()
        .export(&mut out)
        .map_err(|e| OpenPgpError::Crypto(flat(e)))?;
    String::from_utf8(out).map_err(|e| OpenPgpError::Crypto(flat(e)))
}

/// Reads exactly one certificate (armored or binary) from a key file.
pub fn read_one_cert(bytes: &[u8]) -> Result<Cert, OpenPgpError> {
    let certs: Vec<Cert> = CertParser::from_bytes(bytes)
        .map_err(|e| OpenPgpError::Parse(flat(e)))?
        .collect::<openpgp::Result<_>>()
        .map_err(|e| OpenPgpError::Parse(flat(e)))?;
    match certs.len() {
        1 => Ok(certs.into_iter().next().expect("one")),
        0 => Err(OpenPgpError::Parse("no certificate found".into())),
        n => Err(OpenPgpError::NotOneCert(n)),
    }
}

/// The public certificate of a key (or of a certificate), armored.
pub fn public_cert(secret: &[u8]) -> Result<String, OpenPgpError> {
    let cert = read_one_cert(secret)?.strip_secret_key_material();
    public_armored(&cert)
}

/// The fingerprint of the one certificate in `key` (secret or public), uppercase hex.
pub fn fingerprint(key: &[u8]) -> Result<String, OpenPgpError> {
    Ok(read_one_cert(key)?.fingerprint().to_hex())
}

/// Whether the signing key in `secret` needs a passphrase.
pub fn needs_passphrase(secret: &[u8]) -> Result<bool, OpenPgpError> {
    let cert = read_one_cert(secret)?;
    let key = signing_key(&cert)?;
    Ok(key.secret().is_encrypted())
}

type SigningKey =
    openpgp::packet::Key<openpgp::packet::key::SecretParts, openpgp::packet::key::UnspecifiedRole>;

/// The key of `cert` that signs now: alive, not revoked, signing-capable, with secret material.
fn signing_key(cert: &Cert) -> Result<SigningKey, OpenPgpError> {
    let fpr = cert.fingerprint().to_hex();
    let p = policy();
    if !cert.is_tsk() {
        return Err(OpenPgpError::NoSecretKey(fpr));
    }
    let no = |reason: String| OpenPgpError::NoSigningKey {
        fingerprint: fpr.clone(),
        reason,
    };
    let vc = cert.with_policy(&p, None).map_err(|e| no(flat(e)))?;
    vc.alive()
        .map_err(|e| no(format!("the certificate is not alive: {}", flat(e))))?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(no("the certificate is revoked".into()));
    }
    let ka = vc
        .keys()
        .secret()
        .for_signing()
        .alive()
        .revoked(false)
        .next()
        .ok_or_else(|| no("no live, unrevoked signing key with secret material".into()))?;
    let key = ka.key().clone().role_into_unspecified();
    match key.pk_algo() {
        PublicKeyAlgorithm::EdDSA | PublicKeyAlgorithm::Ed25519 | PublicKeyAlgorithm::ECDSA => {
            Ok(key)
        }
        other => Err(OpenPgpError::UnsupportedAlgorithm {
            fingerprint: fpr,
            algorithm: other.to_string(),
        }),
    }
}

/// Signs `data` with the signing key in `secret` (an armored or binary transferable secret
/// key): an ASCII-armored detached binary-document signature. An encrypted key needs its
/// passphrase; a passphrase given for an unencrypted key is ignored.
pub fn sign_detached(
    secret: &[u8],
    passphrase: Option<&str>,
    data: &[u8],
) -> Result<String, OpenPgpError> {
    let cert = read_one_cert(secret)?;
    let fpr = cert.fingerprint().to_hex();
    let mut key = signing_key(&cert)?;
    if key.secret().is_encrypted() {
        let Some(pass) = passphrase else {
            return Err(OpenPgpError::PassphraseRequired(fpr));
        };
        key = key
            .decrypt_secret(&Password::from(pass))
            .map_err(|_| OpenPgpError::WrongPassphrase(fpr.clone()))?;
    }
    let keypair = key
        .into_keypair()
        .map_err(|e| OpenPgpError::Crypto(flat(e)))?;
    let mut out = Vec::new();
    {
        let crypto = |e| OpenPgpError::Crypto(flat(e));
        let message = Message::new(&mut out);
        let message = Armorer::new(message)
            .kind(openpgp::armor::Kind::Signature)
            .build()
            .map_err(crypto)?;
        let mut signer = Signer::with_template(
            message,
            keypair,
            openpgp::packet::signature::SignatureBuilder::new(SignatureType::Binary),
        )
        .map_err(crypto)?
        .detached()
        .build()
        .map_err(crypto)?;
        std::io::Write::write_all(&mut signer, data)
            .map_err(|e| OpenPgpError::Crypto(e.to_string()))?;
        signer.finalize().map_err(crypto)?;
    }
    String::from_utf8(out).map_err(|e| OpenPgpError::Crypto(flat(e)))
}

impl Keyring {
    /// A keyring of the certificates in `bytes` (armored or binary, one or more).
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, KeyringError> {
        let mut k = Keyring::default();
        k.add_bytes(Path::new("<bytes>"), bytes)?;
        Ok(k)
    }

    /// Every `*.asc`, `*.pgp` and `*.gpg` file of a directory (not its subdirectories), or one
    /// file. Certificates with the same fingerprint are merged, so a revocation certificate
    /// next to its certificate revokes it. A file that is not OpenPGP certificates, or that
    /// holds secret keys, is refused; so is a keyring with no certificate at all.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mut files = Vec::new();
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                let wanted = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| KEYRING_EXTENSIONS.contains(&e));
                if wanted && p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut k = Keyring::default();
        for f in &files {
            let bytes = std::fs::read(f).map_err(|source| KeyringError::Io {
                path: f.clone(),
                source,
            })?;
            k.add_bytes(f, &bytes)?;
        }
        if k.certs.is_empty() {
            return Err(KeyringError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(k)
    }

    fn add_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
        let parse = |e: openpgp::anyhow::Error| KeyringError::Parse {
            path: path.to_path_buf(),
            reason: flat(e),
        };
        let certs: Vec<Cert> = CertParser::from_bytes(bytes)
            .map_err(parse)?
            .collect::<openpgp::Result<_>>()
            .map_err(parse)?;
        if certs.is_empty() {
            return Err(KeyringError::Parse {
                path: path.to_path_buf(),
                reason: "no certificate found".into(),
            });
        }
        for cert in certs {
            if cert.is_tsk() {
                return Err(KeyringError::Secret {
                    path: path.to_path_buf(),
                });
            }
            if let Some(i) = self
                .certs
                .iter()
                .position(|c| c.fingerprint() == cert.fingerprint())
            {
                let old = self.certs.remove(i);
                self.certs.insert(i, old.merge_public(cert).map_err(parse)?);
            } else {
                self.certs.push(cert);
            }
        }
        Ok(())
    }

    /// The fingerprints of the certificates, uppercase hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }
}

/// Verifies a detached signature over `data` against the keyring, as of `now`. Every
/// signature in `signature` must hold; the first one's signer is returned.
pub fn verify_detached(
    data: &[u8],
    signature: &[u8],
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let sigs = parse_signatures(signature)?;
    let mut first = None;
    for sig in &sigs {
        let v = verify_one(sig, data, keyring, now)?;
        first.get_or_insert(v);
    }
    Ok(first.expect("parse_signatures returns at least one"))
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(VerifyError::NoSignature(
            "the signature file is empty".into(),
        ));
    }
    let pile = PacketPile::from_bytes(bytes)
        .map_err(|e| VerifyError::Malformed(format!("not OpenPGP data: {}", flat(e))))?;
    let mut sigs = Vec::new();
    for packet in pile.into_children() {
        match packet {
            Packet::Signature(sig) => {
                if sig.typ() != SignatureType::Binary {
                    return Err(VerifyError::Malformed(format!(
                        "a {} signature, not a detached binary-document signature",
                        sig.typ()
                    )));
                }
                sigs.push(sig);
            }
            Packet::Unknown(u) => {
                return Err(VerifyError::Malformed(format!(
                    "unreadable {} packet: {}",
                    u.tag(),
                    flat(u.error())
                )));
            }
            other => {
                return Err(VerifyError::Malformed(format!(
                    "a {} packet: not a detached signature",
                    other.tag()
                )));
            }
        }
    }
    if sigs.is_empty() {
        return Err(VerifyError::NoSignature(
            "no signature packet in the signature file".into(),
        ));
    }
    Ok(sigs)
}

fn verify_one(
    sig: &Signature,
    data: &[u8],
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let p = policy();
    let issuers = sig.get_issuers();
    let found = keyring.certs.iter().find_map(|cert| {
        let ka = if issuers.is_empty() {
            // No issuer subpacket: try every key, as gpg does not, but sq does.
            cert.keys()
                .find(|ka| sig.verify_message(ka.key(), data).is_ok())
        } else {
            cert.keys().key_handles(issuers.iter()).next()
        };
        ka.map(|ka| (cert, ka))
    });
    let Some((cert, ka)) = found else {
        return Err(VerifyError::UnknownKey {
            issuer: issuers
                .first()
                .map(|h| h.to_hex())
                .unwrap_or_else(|| "(no issuer named)".into()),
        });
    };
    let fingerprint = cert.fingerprint().to_hex();
    let rejected = |reason: String| VerifyError::Rejected {
        fingerprint: fingerprint.clone(),
        reason,
    };

    // The cryptography first: a signature over other bytes is bad whatever the key's state.
    if sig.verify_message(ka.key(), data).is_err() {
        return Err(VerifyError::BadSignature {
            fingerprint: fingerprint.clone(),
        });
    }

    // Revocation, of the certificate or of the key, at any time before `now`.
    let revoked = |status: RevocationStatus| match status {
        RevocationStatus::Revoked(sigs) => Some(
            sigs.first()
                .and_then(|s| s.reason_for_revocation())
                .map(|(code, text)| {
                    let text = String::from_utf8_lossy(text);
                    // Sequoia's generated revocations say "Unspecified" in words too.
                    if text.trim().is_empty() || text.trim() == "Unspecified" {
                        code.to_string()
                    } else {
                        format!("{code}: {}", text.trim())
                    }
                })
                .unwrap_or_else(|| "no reason given".into()),
        ),
        _ => None,
    };
    if let Some(detail) = revoked(cert.revocation_status(&p, now)) {
        return Err(VerifyError::Revoked {
            fingerprint,
            detail,
        });
    }

    // The certificate and the key at `now`.
    let vc = cert
        .with_policy(&p, now)
        .map_err(|e| rejected(format!("the certificate is not valid: {}", flat(e))))?;
    if let Err(e) = vc.alive() {
        return Err(VerifyError::Expired {
            fingerprint,
            detail: format!("the certificate: {}", flat(e)),
        });
    }
    let vka = ka
        .clone()
        .with_policy(&p, now)
        .map_err(|e| rejected(format!("the signing key is not valid: {}", flat(e))))?;
    if let Some(detail) = revoked(vka.revocation_status()) {
        return Err(VerifyError::Revoked {
            fingerprint,
            detail: format!("key {}: {detail}", vka.key().fingerprint().to_hex()),
        });
    }
    if let Err(e) = vka.alive() {
        return Err(VerifyError::Expired {
            fingerprint,
            detail: format!("key {}: {}", vka.key().fingerprint().to_hex(), flat(e)),
        });
    }
    if !vka.for_signing() {
        return Err(VerifyError::NotSigningCapable { fingerprint });
    }

    // The signature itself: its own expiry, its time, the policy (hash algorithm).
    let created = sig
        .signature_creation_time()
        .ok_or_else(|| rejected("no creation time".into()))?;
    if let Err(e) = sig.signature_alive(now, CLOCK_SKEW) {
        return match e.downcast_ref::<openpgp::Error>() {
            Some(openpgp::Error::Expired(_)) => Err(VerifyError::Expired {
                fingerprint,
                detail: format!("the signature: {}", flat(e)),
            }),
            _ => Err(rejected(flat(e))),
        };
    }
    p.signature(sig, HashAlgoSecurity::CollisionResistance)
        .map_err(|e| rejected(flat(e)))?;

    // The key must also have been a valid signing key when the signature was made.
    let then = ka
        .clone()
        .with_policy(&p, created)
        .map_err(|e| rejected(format!("the key was not valid when it signed: {}", flat(e))))?;
    if then.alive().is_err() || !then.for_signing() {
        return Err(rejected(
            "the key was not a live signing key when it signed".into(),
        ));
    }

    let userids = vc
        .userids()
        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
        .collect();
    Ok(Verified {
        key_fingerprint: ka.key().fingerprint().to_hex(),
        fingerprint,
        userids,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_certificate_verifies() {
        let key = generate_key("Test <test@example.org>", Some("pw"), None).unwrap();
        let sig = sign_detached(key.secret_armored.as_bytes(), Some("pw"), b"data").unwrap();
        assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----"), "{sig}");
        let ring = Keyring::from_bytes(key.public_armored.as_bytes()).unwrap();
        let v = verify_detached(b"data", sig.as_bytes(), &ring, SystemTime::now()).unwrap();
        assert_eq!(v.fingerprint, key.fingerprint);
        assert_eq!(v.userids, ["Test <test@example.org>"]);
        assert!(matches!(
            verify_detached(b"other", sig.as_bytes(), &ring, SystemTime::now()),
            Err(VerifyError::BadSignature { .. })
        ));
        assert!(matches!(
            sign_detached(key.secret_armored.as_bytes(), Some("nope"), b"data"),
            Err(OpenPgpError::WrongPassphrase(_))
        ));
        assert!(matches!(
            sign_detached(key.secret_armored.as_bytes(), None, b"data"),
            Err(OpenPgpError::PassphraseRequired(_))
        ));
    }
}
