//! `eifctl attest verify --url`: a live check against a proof server. The server here speaks
//! the enclave proof server's contract (`GET /attestation?nonce=<hex>` -> 200
//! `{"attestation_document": "<base64>"}`, 503 `{"error": ...}` outside an enclave) over TLS
//! from a private CA, and makes a fresh document per request with the test chain of
//! `tests/attest.rs`, carrying the nonce it was sent and a per-boot Ed25519 public key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ciborium::value::Value;
use common::attestation::*;
use common::proof_server::{ProofServer, Reply, Seen, tls_config};

/// The proof server's per-boot public key (32 bytes, Ed25519 raw).
const PUBLIC_KEY: [u8; 32] = [0x5a; 32];

/// A signed document as the enclave would make it for `seen`: its nonce, the public key,
/// `age_ms` old.
fn document_for(pki: &Pki, nonce: Option<&[u8]>, age_ms: u64) -> Vec<u8> {
    let mut f = fields(pki, now_ms() - age_ms, nonce);
    f[6].1 = Value::Bytes(PUBLIC_KEY.to_vec());
    sign_doc(f, &pki.leaf_key, -35)
}

struct World {
    pki: Arc<Pki>,
    tls: TlsPki,
    manifest: std::path::PathBuf,
}

fn world() -> World {
    let pki = pki();
    let manifest = good_manifest(pki.dir.path());
    World {
        pki: Arc::new(pki),
        tls: tls_pki(),
        manifest,
    }
}

impl World {
    /// An HTTPS proof server answering with `reply`.
    fn server(&self, reply: impl Fn(&Pki, &Seen) -> Reply + Send + Sync + 'static) -> ProofServer {
        let pki = self.pki.clone();
        let config = tls_config(&self.tls.chain_pem(), &self.tls.key_pem());
        ProofServer::start(Some(config), move |seen| reply(&pki, seen))
    }

    /// `attest verify --url URL --manifest M --root-cert ROOT extra...`
    fn verify(&self, url: &str, extra: &[&str]) -> Run {
        let root = self.pki.root_pem();
        let mut args = vec![
            "attest",
            "verify",
            "--url",
            url,
            "--manifest",
            path(&self.manifest),
            "--root-cert",
            path(&root),
        ];
        args.extend_from_slice(extra);
        eifctl(&args)
    }

    /// Like `verify`, trusting the server's TLS CA.
    fn verify_trusting(&self, url: &str, extra: &[&str]) -> Run {
        let ca = self.tls.ca_pem();
        let mut args = vec!["--ca-cert", path(&ca)];
        args.extend_from_slice(extra);
        self.verify(url, &args)
    }
}

/// The genuine proof server: the document carries the nonce it was sent.
fn honest(pki: &Pki, seen: &Seen) -> Reply {
    Reply::document(&document_for(pki, seen.nonce().as_deref(), 0))
}

fn ctx(run: &Run) -> String {
    format!("exit {}\n{}{}", run.code, run.stdout, run.stderr)
}

#[test]
fn a_live_enclave_is_verified_with_a_fresh_nonce_each_time() {
    let w = world();
    let server = w.server(honest);
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    for name in [
        "cose",
        "signature",
        "chain",
        "validity",
        "freshness",
        "pcr0",
        "pcr1",
        "pcr2",
        "debug",
        "nonce",
    ] {
        assert_eq!(run.verdict(name), Some(true), "{name}: {}", ctx(&run));
    }

    // What the server received: GET /attestation?nonce=<64 hex digits>.
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/attestation");
    assert_eq!(seen[0].host, server.addr.to_string());
    let params = seen[0].params();
    assert_eq!(params.len(), 1, "{params:?}");
    let (k, nonce_hex) = &params[0];
    assert_eq!(k, "nonce");
    assert_eq!(nonce_hex.len(), 64, "{nonce_hex}");
    assert!(
        nonce_hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{nonce_hex}"
    );

    // The report names the URL fetched, the nonce sent and the enclave's public key.
    assert!(
        run.stdout
            .contains(&format!("fetched: {}?nonce={nonce_hex}", server.url())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("nonce sent: {nonce_hex}")),
        "{}",
        run.stdout
    );
    assert!(
        run.line("nonce").contains(nonce_hex.as_str()),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("public_key: {}", hex::encode(PUBLIC_KEY))),
        "{}",
        run.stdout
    );

    // A second run sends another nonce; --json reports it.
    let run = w.verify_trusting(&server.url(), &["--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let second = &seen[1].params()[0].1;
    assert_ne!(second, nonce_hex, "the nonce must be fresh");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["fetched"]["nonce"], second.as_str());
    assert_eq!(
        v["fetched"]["url"],
        format!("{}?nonce={second}", server.url())
    );
    assert_eq!(v["document"]["nonce"], second.as_str());
    assert_eq!(v["document"]["public_key"], hex::encode(PUBLIC_KEY));
}

#[test]
fn query_parameters_are_kept_and_a_nonce_of_ones_own_is_refused() {
    let w = world();
    let server = w.server(honest);
    let run = w.verify_trusting(&format!("{}?format=json", server.url()), &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let params = server.seen()[0].params();
    assert_eq!(params[0], ("format".into(), "json".into()));
    assert_eq!(params[1].0, "nonce");

    let run = w.verify_trusting(&format!("{}?nonce=00", server.url()), &[]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert!(run.stderr.contains("nonce parameter"), "{}", run.stderr);
    let run = w.verify_trusting(&server.url(), &["--nonce", "00"]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert_eq!(
        server.seen().len(),
        1,
        "nothing fetched after the first run"
    );
}

#[test]
fn a_document_for_another_nonce_fails_the_nonce_check() {
    let w = world();
    let server = w.server(|pki, _| Reply::document(&document_for(pki, Some(&[7; 32]), 0)));
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert_eq!(run.verdict("nonce"), Some(false), "{}", ctx(&run));
    assert!(
        run.line("nonce").contains(&hex::encode([7; 32])),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("failed nonce"), "{}", run.stderr);
    // Everything else holds.
    assert_eq!(run.verdict("signature"), Some(true));
    assert_eq!(run.verdict("freshness"), Some(true));

    // A document without any nonce fails it too.
    let server = w.server(|pki, _| Reply::document(&document_for(pki, None, 0)));
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert!(run.line("nonce").contains("no nonce"), "{}", run.stdout);
}

#[test]
fn a_live_document_must_be_fresh_by_default() {
    let w = world();
    // Ten minutes old: the default --max-age (300 s) refuses it, a wider one accepts it.
    let server =
        w.server(|pki, seen| Reply::document(&document_for(pki, seen.nonce().as_deref(), 600_000)));
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert_eq!(run.verdict("freshness"), Some(false), "{}", ctx(&run));
    assert!(run.line("freshness").contains("300"), "{}", run.stdout);
    assert!(run.stderr.contains("failed freshness"), "{}", run.stderr);
    assert_eq!(run.verdict("nonce"), Some(true));

    let run = w.verify_trusting(&server.url(), &["--max-age", "3600"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(run.verdict("freshness"), Some(true));
    // --at would move the clock: not with --url.
    let run = w.verify_trusting(&server.url(), &["--at", "2026-01-01T00:00:00Z"]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
}

#[test]
fn outside_an_enclave_the_servers_error_is_shown() {
    let w = world();
    let server = w.server(|_, _| {
        Reply::json(
            503,
            serde_json::json!({ "error": "not running in an enclave" }),
        )
    });
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    assert!(
        run.stderr.contains("not running in an enclave"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&server.url()), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // A redirect is a status like any other: not followed.
    let server = w.server(|_, _| {
        let mut r = Reply::bytes(302, vec![]);
        r.headers
            .push("Location: https://elsewhere.example/attestation".into());
        r
    });
    let run = w.verify_trusting(&server.url(), &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert!(run.stderr.contains("302"), "{}", run.stderr);
    assert!(run.stderr.contains("not followed"), "{}", run.stderr);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn an_answer_that_is_not_the_document_is_an_input_error() {
    let w = world();
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "garbage",
            Reply::bytes(200, b"<html>hello</html>".to_vec()),
            "response: not JSON",
        ),
        (
            "JSON without the document",
            Reply::json(200, serde_json::json!({ "document": "x" })),
            "attestation_document",
        ),
        (
            "not base64",
            Reply::json(200, serde_json::json!({ "attestation_document": "%%%" })),
            "base64",
        ),
        (
            "not a COSE_Sign1",
            Reply::json(200, serde_json::json!({ "attestation_document": "oA==" })),
            "cose",
        ),
    ];
    for (what, reply, needle) in cases {
        let reply = Arc::new(reply);
        let server = w.server(move |_, _| Reply {
            status: reply.status,
            body: reply.body.clone(),
            headers: vec![],
            content_length: true,
            delay: Duration::ZERO,
        });
        let run = w.verify_trusting(&server.url(), &[]);
        assert_eq!(run.code, 2, "{what}: {}", ctx(&run));
        assert!(run.stderr.contains(needle), "{what}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{what}: {}", run.stderr);
    }
}

#[test]
fn an_oversized_answer_is_refused() {
    let w = world();
    let big = vec![b' '; 100 * 1024];
    // Declared too large, and undeclared (read until the connection closes).
    for declared in [true, false] {
        let big = big.clone();
        let server = w.server(move |_, _| {
            let mut r = Reply::bytes(200, big.clone());
            r.content_length = declared;
            r
        });
        let run = w.verify_trusting(&server.url(), &[]);
        assert_eq!(run.code, 2, "declared {declared}: {}", ctx(&run));
        assert!(
            run.stderr.contains("more than 65536 bytes"),
            "declared {declared}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_server_that_cannot_be_trusted_or_reached_is_an_environment_error() {
    let w = world();
    let server = w.server(honest);

    // A certificate from a CA the platform does not know, without --ca-cert.
    let run = w.verify(&server.url(), &[]);
    assert_eq!(run.code, 3, "{}", ctx(&run));
    assert!(run.stderr.contains("TLS handshake"), "{}", run.stderr);
    assert!(run.stderr.contains(&server.url()), "{}", run.stderr);
    assert!(server.seen().is_empty(), "no request over an untrusted TLS");

    // A certificate from the right CA for another name.
    let elsewhere = tls_pki_for("DNS:enclave.example");
    let config = tls_config(&elsewhere.chain_pem(), &elsewhere.key_pem());
    let pki = w.pki.clone();
    let misnamed = ProofServer::start(Some(config), move |seen| honest(&pki, seen));
    let ca = elsewhere.ca_pem();
    let run = w.verify(&misnamed.url(), &["--ca-cert", path(&ca)]);
    assert_eq!(run.code, 3, "{}", ctx(&run));
    assert!(run.stderr.contains("TLS handshake"), "{}", run.stderr);
    assert!(run.stderr.contains("not valid for name"), "{}", run.stderr);
    assert!(misnamed.seen().is_empty());

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{port}/attestation");
    let run = w.verify_trusting(&url, &[]);
    assert_eq!(run.code, 3, "{}", ctx(&run));
    assert!(run.stderr.contains("connecting"), "{}", run.stderr);
    assert!(run.stderr.contains(&url), "{}", run.stderr);

    // A server that never answers: --timeout.
    let slow = w.server(|pki, seen| {
        let mut r = honest(pki, seen);
        r.delay = Duration::from_secs(5);
        r
    });
    let started = std::time::Instant::now();
    let run = w.verify_trusting(&slow.url(), &["--timeout", "1"]);
    assert_eq!(run.code, 3, "{}", ctx(&run));
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn plain_http_only_when_allowed() {
    let w = world();
    let pki = w.pki.clone();
    let server = ProofServer::start(None, move |seen| honest(&pki, seen));
    assert!(server.url().starts_with("http://"));
    let run = w.verify(&server.url(), &[]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert!(run.stderr.contains("--allow-http"), "{}", run.stderr);
    assert!(server.seen().is_empty());

    let run = w.verify(&server.url(), &["--allow-http"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(run.verdict("nonce"), Some(true));
    assert_eq!(server.seen().len(), 1);

    // --allow-http and --ca-cert belong to --url.
    let doc = write(w.pki.dir.path(), "doc.cbor", &document_for(&w.pki, None, 0));
    let run = eifctl(&[
        "attest",
        "verify",
        path(&doc),
        "--manifest",
        path(&w.manifest),
        "--allow-http",
    ]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
}
