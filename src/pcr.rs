//! Nitro Enclaves measurements.
//!
//! A PCR is never the plain hash of its data: the enclave's NSM starts every register at 48 zero
//! bytes and *extends* it once, so `PCR = SHA384(zeros || SHA384(data))`. Getting that wrong gives
//! plausible-looking but useless values, hence one place for it.
//!
//! The [`Measurer`] computes PCR0, PCR1 and PCR2 of an EIF in one pass with two hashing threads:
//! PCR0 hashes every measured byte, while PCR1 and PCR2 hash disjoint halves of the same bytes,
//! so each thread does the same amount of work and the pass takes one SHA-384 time on two cores.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha384};

/// Size of one SHA-384 digest and so of one PCR.
pub const PCR_LEN: usize = 48;

/// Chunk size for streaming measured data: big enough to amortise channel hand-offs, small enough
/// that the chunks in flight stay a few MiB.
pub const CHUNK: usize = 1 << 20;

/// A piece of measured data shared between the hashing threads.
pub type Chunk = Arc<Vec<u8>>;

/// How many chunks a hashing thread may lag behind the reader; bounds memory to
/// about `(QUEUE + 2) * CHUNK`.
const QUEUE: usize = 4;

/// The string nitro-cli 1.5.0 prints as `HashAlgorithm`: the `Debug` form of its SHA-384 hasher.
pub const NITRO_CLI_HASH_ALGORITHM: &str = "Sha512_48 { .. }";

/// One PCR value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pcr(pub [u8; PCR_LEN]);

impl Pcr {
    /// The register value after one extend with the digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Pcr {
        extend(&Sha384::digest(data).into())
    }

    /// The register value after one extend with the digest of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Pcr> {
        let mut hasher = Sha384::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
        Ok(extend(&hasher.finalize().into()))
    }

    /// Lowercase hex, the form nitro-cli prints and manifests record.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// True for the all-zero value a debug-mode enclave reports.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

/// Extends a zeroed register with `digest`.
pub fn extend(digest: &[u8; PCR_LEN]) -> Pcr {
    let mut h = Sha384::new();
    h.update([0u8; PCR_LEN]);
    h.update(digest);
    Pcr(h.finalize().into())
}

impl fmt::Display for Pcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Pcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pcr({})", self.to_hex())
    }
}

/// A PCR given as text was not 96 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a PCR value (96 hex digits expected): {0:?}")]
pub struct ParsePcrError(pub String);

impl FromStr for Pcr {
    type Err = ParsePcrError;
    fn from_str(s: &str) -> Result<Pcr, ParsePcrError> {
        let mut out = [0u8; PCR_LEN];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ParsePcrError(s.to_string()))?;
        Ok(Pcr(out))
    }
}

impl serde::Serialize for Pcr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Pcr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pcr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The measurements an EIF file determines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurements {
    /// Kernel, cmdline and every ramdisk: the whole enclave image.
    pub pcr0: Pcr,
    /// Kernel, cmdline and the first (bootstrap) ramdisk: what AWS's boot blobs determine.
    pub pcr1: Pcr,
    /// The ramdisks after the first: the application.
    pub pcr2: Pcr,
    /// The signing certificate, for signed images only.
    pub pcr8: Option<Pcr>,
}

/// Which registers a span of measured bytes belongs to, besides PCR0 which takes them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Kernel, cmdline, first ramdisk: PCR0 and PCR1.
    Boot,
    /// Later ramdisks: PCR0 and PCR2.
    App,
}

/// The PCR1 and PCR2 digests, from the thread that computes both.
type BootAndApp = ([u8; PCR_LEN], [u8; PCR_LEN]);

enum Job {
    Data(Part, Chunk),
}

/// Computes PCR0, PCR1 and PCR2 from measured bytes fed in file order, on two threads.
///
/// Memory stays bounded because the channels are bounded: a feeder that outruns the hashers
/// blocks instead of queueing.
pub struct Measurer {
    image: Option<(SyncSender<Job>, JoinHandle<[u8; PCR_LEN]>)>,
    split: Option<(SyncSender<Job>, JoinHandle<BootAndApp>)>,
}

impl Default for Measurer {
    fn default() -> Self {
        Self::new()
    }
}

impl Measurer {
    pub fn new() -> Measurer {
        let (tx0, rx0) = sync_channel::<Job>(QUEUE);
        let image = std::thread::Builder::new()
            .name("pcr0".into())
            .spawn(move || hash_all(rx0))
            .expect("spawning a hashing thread");
        let (tx1, rx1) = sync_channel::<Job>(QUEUE);
        let split = std::thread::Builder::new()
            .name("pcr1-pcr2".into())
            .spawn(move || hash_split(rx1))
            .expect("spawning a hashing thread");
        Measurer {
            image: Some((tx0, image)),
            split: Some((tx1, split)),
        }
    }

    /// Feeds the next measured bytes in file order.
    pub fn feed(&mut self, part: Part, chunk: Chunk) {
        if chunk.is_empty() {
            return;
        }
        // A send only fails if a hashing thread died, which `finish` reports.
        if let Some((tx, _)) = &self.image {
            let _ = tx.send(Job::Data(part, chunk.clone()));
        }
        if let Some((tx, _)) = &self.split {
            let _ = tx.send(Job::Data(part, chunk));
        }
    }

    /// Copies a slice and feeds it; for small sections such as the cmdline.
    pub fn feed_slice(&mut self, part: Part, data: &[u8]) {
        for piece in data.chunks(CHUNK) {
            self.feed(part, Arc::new(piece.to_vec()));
        }
    }

    /// Waits for both threads and returns the registers (PCR8 is the caller's business).
    pub fn finish(mut self) -> Measurements {
        let (tx0, h0) = self.image.take().expect("finish called once");
        let (tx1, h1) = self.split.take().expect("finish called once");
        drop(tx0);
        drop(tx1);
        let d0 = h0.join().expect("the PCR0 hashing thread panicked");
        let (d1, d2) = h1.join().expect("the PCR1/PCR2 hashing thread panicked");
        Measurements {
            pcr0: extend(&d0),
            pcr1: extend(&d1),
            pcr2: extend(&d2),
            pcr8: None,
        }
    }
}

impl Drop for Measurer {
    fn drop(&mut self) {
        // Dropping the senders ends the threads; join so none outlives its measurer.
        if let Some((tx, h)) = self.image.take() {
            drop(tx);
            let _ = h.join();
        }
        if let Some((tx, h)) = self.split.take() {
            drop(tx);
            let _ = h.join();
        }
    }
}

fn hash_all(rx: Receiver<Job>) -> [u8; PCR_LEN] {
    let mut h = Sha384::new();
    for Job::Data(_, chunk) in rx {
        h.update(chunk.as_slice());
    }
    h.finalize().into()
}

fn hash_split(rx: Receiver<Job>) -> BootAndApp {
    let mut boot = Sha384::new();
    let mut app = Sha384::new();
    for Job::Data(part, chunk) in rx {
        match part {
            Part::Boot => boot.update(chunk.as_slice()),
            Part::App => app.update(chunk.as_slice()),
        }
    }
    (boot.finalize().into(), app.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_of_empty_matches_the_reference_vector() {
        assert_eq!(
            Pcr::of_bytes(b"").to_hex(),
            "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"
        );
    }

    #[test]
    fn measurer_splits_boot_and_app_bytes() {
        let mut m = Measurer::new();
        m.feed_slice(Part::Boot, b"kernel");
        m.feed_slice(Part::Boot, b"cmdline");
        m.feed_slice(Part::App, b"app");
        let got = m.finish();
        assert_eq!(got.pcr0, Pcr::of_bytes(b"kernelcmdlineapp"));
        assert_eq!(got.pcr1, Pcr::of_bytes(b"kernelcmdline"));
        assert_eq!(got.pcr2, Pcr::of_bytes(b"app"));
    }

    #[test]
    fn pcr_parses_its_own_hex_and_rejects_other_text() {
        let p = Pcr::of_bytes(b"x");
        assert_eq!(p.to_hex().parse::<Pcr>().unwrap(), p);
        assert!("abc".parse::<Pcr>().is_err());
    }
}
