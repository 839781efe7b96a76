//! Attestation documents made here: a test CA chain from the openssl command line (P-384, as
//! AWS's), documents signed by its leaf, manifests that match them, a TLS CA for proof servers,
//! and a runner that reads `attest verify`'s report.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use ciborium::value::Value;
use eifctl::attest::sig_structure;
use eifctl::pcr::Pcr;
use tempfile::TempDir;

/// A canonical manifest recording exactly `pcrs`.
pub fn manifest_bytes(pcrs: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let pcr = |b: &[u8]| Pcr(b.try_into().expect("48 bytes"));
    let mut m = super::sample_manifest(true);
    m.pcrs = pcrs.iter().map(|(k, v)| (k.to_string(), pcr(v))).collect();
    m.to_canonical()
}

/// What `eifctl` did: exit code and output.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The line of check `name`: "ok  " or "FAIL".
    pub fn verdict(&self, name: &str) -> Option<bool> {
        self.stdout.lines().find_map(|l| {
            let (mark, rest) = l.split_at_checked(5)?;
            rest.starts_with(&format!("{name}: "))
                .then(|| mark.trim() == "ok")
        })
    }

    pub fn line(&self, name: &str) -> String {
        self.stdout
            .lines()
            .find(|l| {
                l.get(5..)
                    .is_some_and(|r| r.starts_with(&format!("{name}: ")))
            })
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs eifctl with `args`.
pub fn eifctl(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_eifctl"))
        .args(args)
        .output()
        .expect("running eifctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    eifctl::eif::rfc3339_utc(time::OffsetDateTime::from(t))
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line is needed by these tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const CA_EXT: &str = "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n[leaf]\nbasicConstraints=critical,CA:FALSE\n";

/// A root -> intermediate -> leaf chain (P-384), from the openssl command line.
pub struct Pki {
    pub dir: TempDir,
    pub root_der: Vec<u8>,
    pub int_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub leaf_key: p384::ecdsa::SigningKey,
}

impl Pki {
    pub fn root_pem(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }
}

pub fn key(dir: &Path, name: &str, curve: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// Issues `name` (key `name.key`) by `ca` (None: self-signed), valid from a day ago until
/// `days` from now.
pub fn issue(dir: &Path, name: &str, ca: Option<&str>, ext: &str, days: &str) -> Vec<u8> {
    // `openssl ca` rather than `x509 -req`: OpenSSL 3.0 has no other way to set notBefore.
    // Every certificate starts a day ago, so that documents made minutes "ago" (stale ones)
    // still fall inside their chain's validity.
    if !dir.join("index.txt").exists() {
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "07\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca=tca\n[tca]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n\
             default_md=sha384\npolicy=any\npreserve=yes\nunique_subject=no\n\
             [any]\ncountryName=optional\norganizationName=optional\ncommonName=supplied\n",
        )
        .unwrap();
    }
    let subj = format!("/C=US/O=eifctl tests/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &subj,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let day_ago = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let start = day_ago
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]Z"
        ))
        .unwrap();
    let (cert, key) = (
        format!("{}.pem", ca.unwrap_or(name)),
        format!("{}.key", ca.unwrap_or(name)),
    );
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    let mut args = vec![
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-keyfile",
        &key,
        "-in",
        &csr,
        "-out",
        &pem,
        "-startdate",
        &start,
        "-days",
        days,
        "-extfile",
        "ext.cnf",
        "-extensions",
        ext,
        "-notext",
    ];
    match ca {
        None => args.push("-selfsign"),
        Some(_) => args.extend(["-cert", &cert]),
    }
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-in",
            &format!("{name}.pem"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ],
    );
    std::fs::read(dir.join(format!("{name}.der"))).unwrap()
}

pub fn signing_key(dir: &Path, name: &str) -> p384::ecdsa::SigningKey {
    use der::Decode;
    openssl(
        dir,
        &[
            "ec",
            "-in",
            &format!("{name}.key"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.sec1"),
        ],
    );
    let der = std::fs::read(dir.join(format!("{name}.sec1"))).unwrap();
    let key = sec1::EcPrivateKey::from_der(&der).unwrap();
    p384::SecretKey::try_from(key).unwrap().into()
}

pub fn pki() -> Pki {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // `req` needs a [req] section in the config it is given.
    std::fs::write(
        d.join("ext.cnf"),
        format!("[req]\ndistinguished_name=dn\n[dn]\n{CA_EXT}"),
    )
    .unwrap();
    for k in ["root", "int", "leaf", "other-root", "other-leaf"] {
        key(d, k, "P-384");
    }
    key(d, "p256-leaf", "P-256");
    let root_der = issue(d, "root", None, "ca", "3650");
    let int_der = issue(d, "int", Some("root"), "ca", "3650");
    let leaf_der = issue(d, "leaf", Some("int"), "leaf", "1");
    issue(d, "other-root", None, "ca", "3650");
    issue(d, "other-leaf", Some("other-root"), "leaf", "1");
    issue(d, "p256-leaf", Some("int"), "leaf", "1");
    let leaf_key = signing_key(d, "leaf");
    Pki {
        dir,
        root_der,
        int_der,
        leaf_der,
        leaf_key,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// The payload fields of a good document from this chain.
pub fn fields(pki: &Pki, timestamp_ms: u64, nonce: Option<&[u8]>) -> Vec<(Value, Value)> {
    let pcrs = (0u8..16)
        .map(|i| {
            let v = if i < 3 { vec![i + 1; 48] } else { vec![0; 48] };
            (Value::Integer(i.into()), Value::Bytes(v))
        })
        .collect();
    vec![
        (
            text("module_id"),
            text("i-0123456789abcdef0-enc0123456789abcdef"),
        ),
        (text("digest"), text("SHA384")),
        (text("timestamp"), Value::Integer(timestamp_ms.into())),
        (text("pcrs"), Value::Map(pcrs)),
        (text("certificate"), Value::Bytes(pki.leaf_der.clone())),
        (
            text("cabundle"),
            Value::Array(vec![
                Value::Bytes(pki.root_der.clone()),
                Value::Bytes(pki.int_der.clone()),
            ]),
        ),
        (text("public_key"), Value::Null),
        (text("user_data"), Value::Null),
        (
            text("nonce"),
            nonce.map_or(Value::Null, |n| Value::Bytes(n.to_vec())),
        ),
    ]
}

pub fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// A COSE_Sign1 over `fields`, signed by `key`, with protected header `{1: alg}`.
pub fn sign_doc(fields: Vec<(Value, Value)>, key: &p384::ecdsa::SigningKey, alg: i64) -> Vec<u8> {
    use p384::ecdsa::signature::Signer;
    let protected = cbor(&Value::Map(vec![(
        Value::Integer(1.into()),
        Value::Integer(alg.into()),
    )]));
    let payload = cbor(&Value::Map(fields));
    let sig: p384::ecdsa::Signature = key.sign(&sig_structure(&protected, &payload));
    cbor(&Value::Array(vec![
        Value::Bytes(protected),
        Value::Map(vec![]),
        Value::Bytes(payload),
        Value::Bytes(sig.to_bytes().to_vec()),
    ]))
}

/// The manifest matching `fields` (PCR0..2 = 01.., 02.., 03..).
pub fn good_manifest(dir: &Path) -> PathBuf {
    let pcrs = (0u64..3).map(|i| (i, vec![i as u8 + 1; 48])).collect();
    let p = dir.join("pcr-values.json");
    std::fs::write(&p, manifest_bytes(&pcrs)).unwrap();
    p
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A TLS CA (P-256) and a server certificate it issued for `127.0.0.1` and `localhost`: what a
/// proof server behind a private CA presents.
pub struct TlsPki {
    pub dir: TempDir,
}

impl TlsPki {
    /// The CA certificate, PEM: for `--ca-cert`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// The server's certificate chain (leaf then CA), PEM.
    pub fn chain_pem(&self) -> PathBuf {
        self.dir.path().join("chain.pem")
    }

    /// The server's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

pub fn tls_pki() -> TlsPki {
    tls_pki_for("IP:127.0.0.1,DNS:localhost")
}

/// A TLS CA and a server certificate for `sans` (an openssl subjectAltName value).
pub fn tls_pki_for(sans: &str) -> TlsPki {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ext.cnf"),
        format!(
            "[req]\ndistinguished_name=dn\n[dn]\n{CA_EXT}[server]\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectAltName={sans}\n"
        ),
    )
    .unwrap();
    key(d, "tls-ca", "P-256");
    key(d, "server", "P-256");
    issue(d, "tls-ca", None, "ca", "30");
    issue(d, "server", Some("tls-ca"), "server", "30");
    let chain = [
        std::fs::read(d.join("server.pem")).unwrap(),
        std::fs::read(d.join("tls-ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("chain.pem"), chain).unwrap();
    TlsPki { dir }
}
