//! Feeds arbitrary bytes to the attestation document reader (as a file's content: raw CBOR,
//! base64 or JSON, and as raw CBOR) and runs every check on whatever parses. It must never
//! panic; a parsed document always yields the fixed checks.

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eifctl::attest::{self, Document, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let opts = Options {
        pcrs: [(0, eifctl::pcr::Pcr([1; 48])), (8, eifctl::pcr::Pcr([0; 48]))]
            .into_iter()
            .collect(),
        nonce: Some(vec![1, 2, 3]),
        at: None,
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        max_age: Some(Duration::from_secs(300)),
        root_sha256: Options::aws_root(),
    };
    if let Ok((doc, checks)) = attest::verify(bytes, &opts) {
        // cose, signature, chain, validity, freshness, pcr0..2, pcr8, debug, nonce.
        assert_eq!(checks.len(), 11);
        let _ = doc.timestamp_rfc3339();
    }
    if let Ok(doc) = Document::parse(bytes) {
        let _ = doc.check(&Options {
            at: Some(SystemTime::UNIX_EPOCH),
            max_age: None,
            nonce: None,
            ..opts
        });
    }
});
