//! eifctl turns an enclave application into an AWS Nitro Enclave image (EIF) that anyone can
//! rebuild bit for bit, and publishes its measurements signed.
//!
//! The library is organised along the one-way data flow of a release:
//! recipe -> image -> ramdisks -> EIF -> measurements -> manifest -> signature -> release.
//! Every module streams: an EIF or a root filesystem is never held in memory whole.

pub mod atomic;
pub mod attest;
pub mod base;
pub mod blobs;
pub mod build;
pub mod context;
pub mod cpio;
pub mod describe;
pub mod diff;
pub mod docker;
pub mod dtar;
pub mod eif;
pub mod enclave;
pub mod fetch;
pub mod github;
pub mod manifest;
pub mod normalize;
pub mod openpgp;
pub mod pcr;
pub mod ramdisk;
pub mod recipe;
pub mod verify;

/// An error and its causes on one line, each cause once: the form every eifctl error takes on
/// the terminal.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}
