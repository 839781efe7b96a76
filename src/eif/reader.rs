//! Reading EIF files: strict layout validation, then one streaming pass for CRC and PCRs.
//!
//! Validation is strict because an EIF is evidence: if the section table and the section headers
//! disagree, or bytes hide after the last section, different readers (the Nitro loader, nitro-cli,
//! an auditor's script) could measure different things. Such a file is rejected, not described.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha384};

use super::{
    Arch, HEADER_CRC_SPAN, HEADER_LEN, Header, MAGIC, MAX_SECTIONS, Metadata, SECTION_HEADER_LEN,
    SectionHeader, SectionKind,
};
use crate::pcr::{CHUNK, Measurements, Measurer, PCR_LEN, Part};

/// Largest metadata section read into memory (nitro-cli's holds a `docker inspect`: kilobytes).
pub const MAX_METADATA: u64 = 16 << 20;
/// Largest signature section read into memory (a certificate and a COSE signature: kilobytes).
pub const MAX_SIGNATURE: u64 = 1 << 20;

/// What is wrong with a file, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", path.display(), problem_at(*offset, problem))]
pub struct ReadError {
    pub path: PathBuf,
    /// Byte offset in the file where the problem was found, when one applies.
    pub offset: Option<u64>,
    pub problem: Problem,
}

fn problem_at(offset: Option<u64>, problem: &Problem) -> String {
    match offset {
        Some(o) => format!("offset {o}: {problem}"),
        None => problem.to_string(),
    }
}

/// The ways an EIF can be unreadable or malformed.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error("not an EIF: magic is {found}, expected 2e656966 (\".eif\")")]
    NotEif { found: String },
    #[error("truncated: {what} needs {needed} bytes, the file has {available} from here")]
    Truncated {
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("unsupported EIF version {0} (eifctl reads versions 2, 3 and 4)")]
    UnsupportedVersion(u16),
    #[error("header flags {0:#06x} name no known architecture (bit 0 is the only defined flag)")]
    UnknownFlags(u16),
    #[error("section count {0}: an EIF holds 1 to 32 sections")]
    SectionCount(u16),
    #[error("section table entry {index} is past the section count {count} but not zero")]
    StaleTableEntry { index: usize, count: u16 },
    #[error(
        "section {index} (offset {offset}, {size} bytes of data) ends past the end of the file ({len} bytes)"
    )]
    PastEnd {
        index: usize,
        offset: u64,
        size: u64,
        len: u64,
    },
    #[error("sections {a} and {b} overlap in the section table")]
    Overlap { a: usize, b: usize },
    #[error(
        "section table says section {index} {field} is {table}, but the section headers give {actual}"
    )]
    TableMismatch {
        index: usize,
        field: &'static str,
        table: u64,
        actual: u64,
    },
    #[error(
        "section {index} has invalid type {kind} (valid: 1 kernel, 2 cmdline, 3 ramdisk, 4 signature, 5 metadata)"
    )]
    InvalidType { index: usize, kind: u16 },
    #[error("{0} bytes follow the last section")]
    TrailingData(u64),
    #[error("no {0} section")]
    Missing(SectionKind),
    #[error("more than one {0} section")]
    Duplicate(SectionKind),
    #[error("a {kind} section is not allowed in an EIF of version {version}")]
    NotAllowed { kind: SectionKind, version: u16 },
    #[error("{kind} section of {size} bytes exceeds the {max} bytes eifctl reads")]
    TooLarge {
        kind: SectionKind,
        size: u64,
        max: u64,
    },
    #[error("metadata is not the JSON nitro-cli writes: {0}")]
    BadMetadata(#[source] serde_json::Error),
    #[error("bad signature section: {0}")]
    BadSignature(String),
    #[error("a ramdisk does not hold {0}")]
    MissingEntry(String),
    #[error("bad ramdisk: {0}")]
    Cpio(String),
}

/// One section as laid out in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Position in the file (and in the section table).
    pub index: usize,
    pub kind: SectionKind,
    pub flags: u16,
    /// Offset of the 12-byte section header.
    pub header_offset: u64,
    /// Offset of the data.
    pub offset: u64,
    pub size: u64,
    /// For ramdisks, their rank among ramdisks (0 is the bootstrap ramdisk).
    pub ramdisk_index: Option<usize>,
}

/// An EIF whose layout has been validated; data is read on demand.
#[derive(Debug)]
pub struct EifFile {
    path: PathBuf,
    file: File,
    len: u64,
    header: Header,
    sections: Vec<Section>,
}

/// SHA-384 of each section's data, in file order (used to explain differences).
pub type SectionDigests = Vec<[u8; PCR_LEN]>;

/// What one pass over the file establishes.
#[derive(Clone, Debug)]
pub struct Scan {
    /// PCR0, PCR1, PCR2 (PCR8 is derived from `signature` by the caller that parses it).
    pub measurements: Measurements,
    /// CRC-32 computed over the file, to compare with the header's.
    pub crc_computed: u32,
    pub signature: Option<Vec<u8>>,
    pub metadata: Option<Vec<u8>>,
    /// Per-section digests, when asked for.
    pub section_digests: Option<SectionDigests>,
}

impl Scan {
    pub fn crc_ok(&self, header: &Header) -> bool {
        self.crc_computed == header.crc32
    }
}

impl EifFile {
    /// Opens `path` and validates its whole layout without reading section data.
    pub fn open(path: impl AsRef<Path>) -> Result<EifFile, ReadError> {
        let path = path.as_ref().to_path_buf();
        let err = |offset: Option<u64>, problem: Problem| ReadError {
            path: path.clone(),
            offset,
            problem,
        };
        let file = File::open(&path).map_err(|e| err(None, Problem::Io(e)))?;
        let meta = file.metadata().map_err(|e| err(None, Problem::Io(e)))?;
        if !meta.is_file() {
            return Err(err(None, Problem::NotAFile));
        }
        let len = meta.len();

        let mut head = [0u8; HEADER_LEN];
        let got = read_at_most(&file, &mut head, 0).map_err(|e| err(Some(0), Problem::Io(e)))?;
        if got < 4 || head[..4] != MAGIC {
            return Err(err(
                Some(0),
                Problem::NotEif {
                    found: if got < 4 {
                        format!("missing (the file has {got} bytes)")
                    } else {
                        hex::encode(&head[..4])
                    },
                },
            ));
        }
        if got < HEADER_LEN {
            return Err(err(
                Some(0),
                Problem::Truncated {
                    what: "the EIF header".into(),
                    needed: HEADER_LEN as u64,
                    available: got as u64,
                },
            ));
        }
        let header = Header::parse(&head);
        if !(2..=4).contains(&header.version) {
            return Err(err(Some(4), Problem::UnsupportedVersion(header.version)));
        }
        if header.arch().is_none() {
            return Err(err(Some(6), Problem::UnknownFlags(header.flags)));
        }
        let count = header.num_sections;
        if count == 0 || count as usize > MAX_SECTIONS {
            return Err(err(Some(0x1a), Problem::SectionCount(count)));
        }
        let n = count as usize;
        for index in n..MAX_SECTIONS {
            if header.section_offsets[index] != 0 || header.section_sizes[index] != 0 {
                return Err(err(
                    Some(0x1c + 8 * index as u64),
                    Problem::StaleTableEntry { index, count },
                ));
            }
        }

        // The table on its own: every section inside the file, none overlapping.
        let span = |i: usize| {
            let start = header.section_offsets[i];
            let end = start
                .checked_add(SECTION_HEADER_LEN as u64)
                .and_then(|e| e.checked_add(header.section_sizes[i]));
            (start, end)
        };
        for index in 0..n {
            let (offset, end) = span(index);
            if end.is_none_or(|e| e > len) || offset < HEADER_LEN as u64 {
                return Err(err(
                    Some(0x1c + 8 * index as u64),
                    Problem::PastEnd {
                        index,
                        offset,
                        size: header.section_sizes[index],
                        len,
                    },
                ));
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| header.section_offsets[i]);
        for w in order.windows(2) {
            let (_, a_end) = span(w[0]);
            let (b_start, _) = span(w[1]);
            if a_end.is_some_and(|e| e > b_start) {
                return Err(err(
                    Some(0x1c + 8 * w[1] as u64),
                    Problem::Overlap {
                        a: w[0].min(w[1]),
                        b: w[0].max(w[1]),
                    },
                ));
            }
        }

        // The chain of section headers must reproduce the table exactly.
        let mut sections = Vec::with_capacity(n);
        let mut pos = HEADER_LEN as u64;
        let mut ramdisks = 0usize;
        for index in 0..n {
            if header.section_offsets[index] != pos {
                return Err(err(
                    Some(0x1c + 8 * index as u64),
                    Problem::TableMismatch {
                        index,
                        field: "offset",
                        table: header.section_offsets[index],
                        actual: pos,
                    },
                ));
            }
            let mut sh = [0u8; SECTION_HEADER_LEN];
            let got =
                read_at_most(&file, &mut sh, pos).map_err(|e| err(Some(pos), Problem::Io(e)))?;
            if got < SECTION_HEADER_LEN {
                return Err(err(
                    Some(pos),
                    Problem::Truncated {
                        what: format!("section header {index}"),
                        needed: SECTION_HEADER_LEN as u64,
                        available: got as u64,
                    },
                ));
            }
            let sh = SectionHeader::parse(&sh);
            let Some(kind) = SectionKind::from_u16(sh.kind) else {
                return Err(err(
                    Some(pos),
                    Problem::InvalidType {
                        index,
                        kind: sh.kind,
                    },
                ));
            };
            if sh.size != header.section_sizes[index] {
                return Err(err(
                    Some(pos + 4),
                    Problem::TableMismatch {
                        index,
                        field: "size",
                        table: header.section_sizes[index],
                        actual: sh.size,
                    },
                ));
            }
            let offset = pos + SECTION_HEADER_LEN as u64;
            let ramdisk_index = (kind == SectionKind::Ramdisk).then(|| {
                ramdisks += 1;
                ramdisks - 1
            });
            sections.push(Section {
                index,
                kind,
                flags: sh.flags,
                header_offset: pos,
                offset,
                size: sh.size,
                ramdisk_index,
            });
            pos = offset + sh.size;
        }
        if pos != len {
            return Err(err(Some(pos), Problem::TrailingData(len - pos)));
        }

        let count_of = |k: SectionKind| sections.iter().filter(|s| s.kind == k).count();
        for kind in [SectionKind::Kernel, SectionKind::Cmdline] {
            match count_of(kind) {
                0 => return Err(err(None, Problem::Missing(kind))),
                1 => {}
                _ => return Err(err(None, Problem::Duplicate(kind))),
            }
        }
        if count_of(SectionKind::Ramdisk) == 0 {
            return Err(err(None, Problem::Missing(SectionKind::Ramdisk)));
        }
        let version = header.version;
        match (version, count_of(SectionKind::Metadata)) {
            (4, 0) => return Err(err(None, Problem::Missing(SectionKind::Metadata))),
            (4, 1) | (2 | 3, 0) => {}
            (4, _) => return Err(err(None, Problem::Duplicate(SectionKind::Metadata))),
            _ => {
                let kind = SectionKind::Metadata;
                return Err(err(None, Problem::NotAllowed { kind, version }));
            }
        }
        match (version, count_of(SectionKind::Signature)) {
            (_, 0) | (3 | 4, 1) => {}
            (2, _) => {
                let kind = SectionKind::Signature;
                return Err(err(None, Problem::NotAllowed { kind, version }));
            }
            _ => return Err(err(None, Problem::Duplicate(SectionKind::Signature))),
        }
        for s in &sections {
            let max = match s.kind {
                SectionKind::Metadata => MAX_METADATA,
                SectionKind::Signature => MAX_SIGNATURE,
                _ => continue,
            };
            if s.size > max {
                return Err(err(
                    Some(s.header_offset),
                    Problem::TooLarge {
                        kind: s.kind,
                        size: s.size,
                        max,
                    },
                ));
            }
        }

        Ok(EifFile {
            path,
            file,
            len,
            header,
            sections,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn version(&self) -> u16 {
        self.header.version
    }

    pub fn arch(&self) -> Arch {
        self.header.arch().expect("validated in open")
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The first section of `kind`.
    pub fn section(&self, kind: SectionKind) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// Ramdisks in order (the first is the bootstrap ramdisk).
    pub fn ramdisks(&self) -> impl Iterator<Item = &Section> {
        self.sections
            .iter()
            .filter(|s| s.kind == SectionKind::Ramdisk)
    }

    /// Streams one section's data; independent of any other reader of the same file.
    pub fn section_reader(&self, section: &Section) -> SectionReader<'_> {
        SectionReader {
            file: &self.file,
            pos: section.offset,
            end: section.offset + section.size,
        }
    }

    /// Reads a small section (cmdline, metadata, signature) into memory.
    pub fn read_section(&self, section: &Section) -> Result<Vec<u8>, ReadError> {
        let mut buf = Vec::new();
        self.section_reader(section)
            .read_to_end(&mut buf)
            .map_err(|e| self.error(Some(section.offset), Problem::Io(e)))?;
        Ok(buf)
    }

    /// Parses the metadata section, if the image has one.
    pub fn metadata(&self) -> Result<Option<Metadata>, ReadError> {
        let Some(s) = self.section(SectionKind::Metadata) else {
            return Ok(None);
        };
        let bytes = self.read_section(s)?;
        Metadata::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| self.error(Some(s.offset), Problem::BadMetadata(e)))
    }

    /// A [`ReadError`] about this file.
    pub fn error(&self, offset: Option<u64>, problem: Problem) -> ReadError {
        ReadError {
            path: self.path.clone(),
            offset,
            problem,
        }
    }

    /// One sequential pass: CRC, PCR0/1/2 on two threads, the small sections kept, and per-section
    /// digests on a third thread when `section_digests` is set. Memory stays at a few MiB.
    pub fn scan(&self, section_digests: bool) -> Result<Scan, ReadError> {
        let mut crc = crc32fast::Hasher::new();
        let mut head = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut head, 0)
            .map_err(|e| self.error(Some(0), Problem::Io(e)))?;
        crc.update(&head[..HEADER_CRC_SPAN]);

        let mut measurer = Measurer::new();
        let digests = section_digests.then(SectionHasher::spawn);
        let mut pool = BufferPool::default();
        let mut signature = None;
        let mut metadata = None;

        for s in &self.sections {
            let mut sh = [0u8; SECTION_HEADER_LEN];
            self.file
                .read_exact_at(&mut sh, s.header_offset)
                .map_err(|e| self.error(Some(s.header_offset), Problem::Io(e)))?;
            crc.update(&sh);
            let part = match (s.kind, s.ramdisk_index) {
                (SectionKind::Kernel | SectionKind::Cmdline, _) | (_, Some(0)) => Some(Part::Boot),
                (SectionKind::Ramdisk, _) => Some(Part::App),
                _ => None,
            };
            let keep = matches!(s.kind, SectionKind::Signature | SectionKind::Metadata);
            let mut kept = Vec::new();
            let mut pos = s.offset;
            let end = s.offset + s.size;
            while pos < end {
                let n = ((end - pos) as usize).min(CHUNK);
                let mut buf = pool.take();
                buf.resize(n, 0);
                self.file
                    .read_exact_at(&mut buf, pos)
                    .map_err(|e| self.error(Some(pos), Problem::Io(e)))?;
                crc.update(&buf);
                if keep {
                    kept.extend_from_slice(&buf);
                }
                let chunk = Arc::new(buf);
                if let Some(d) = &digests {
                    d.feed(s.index, chunk.clone());
                }
                if let Some(part) = part {
                    measurer.feed(part, chunk.clone());
                }
                pool.give_back(chunk);
                pos += n as u64;
            }
            match s.kind {
                SectionKind::Signature => signature = Some(kept),
                SectionKind::Metadata => metadata = Some(kept),
                _ => {}
            }
        }

        let section_digests = digests.map(|d| d.finish(self.sections.len()));
        Ok(Scan {
            measurements: measurer.finish(),
            crc_computed: crc.finalize(),
            signature,
            metadata,
            section_digests,
        })
    }
}

/// Reads a byte range of a file by position, so several readers can share one handle.
pub struct SectionReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reuses chunk buffers once the hashing threads have dropped them, so a pass over a large file
/// does not fault in fresh pages for every chunk.
#[derive(Default)]
pub(crate) struct BufferPool {
    in_flight: VecDeque<Arc<Vec<u8>>>,
}

impl BufferPool {
    pub(crate) fn take(&mut self) -> Vec<u8> {
        if let Some(front) = self.in_flight.front_mut()
            && Arc::get_mut(front).is_some()
        {
            let arc = self.in_flight.pop_front().expect("front exists");
            let mut v = Arc::try_unwrap(arc).unwrap_or_default();
            v.clear();
            return v;
        }
        if self.in_flight.len() > 16 {
            self.in_flight.pop_front();
        }
        Vec::with_capacity(CHUNK)
    }

    pub(crate) fn give_back(&mut self, chunk: Arc<Vec<u8>>) {
        self.in_flight.push_back(chunk);
    }
}

/// Digests every section separately on its own thread.
struct SectionHasher {
    tx: std::sync::mpsc::SyncSender<(usize, Arc<Vec<u8>>)>,
    handle: std::thread::JoinHandle<Vec<(usize, [u8; PCR_LEN])>>,
}

impl SectionHasher {
    fn spawn() -> SectionHasher {
        let (tx, rx) = sync_channel::<(usize, Arc<Vec<u8>>)>(4);
        let handle = std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut current: Option<(usize, Sha384)> = None;
            for (index, chunk) in rx {
                match &mut current {
                    Some((i, h)) if *i == index => h.update(&*chunk),
                    _ => {
                        if let Some((i, h)) = current.take() {
                            done.push((i, h.finalize().into()));
                        }
                        let mut h = Sha384::new();
                        h.update(&*chunk);
                        current = Some((index, h));
                    }
                }
            }
            if let Some((i, h)) = current {
                done.push((i, h.finalize().into()));
            }
            done
        });
        SectionHasher { tx, handle }
    }

    fn feed(&self, index: usize, chunk: Arc<Vec<u8>>) {
        let _ = self.tx.send((index, chunk));
    }

    fn finish(self, sections: usize) -> SectionDigests {
        drop(self.tx);
        let done = self
            .handle
            .join()
            .expect("the section hashing thread panicked");
        // Empty sections never send a chunk: their digest is that of no bytes.
        let empty: [u8; PCR_LEN] = Sha384::digest(b"").into();
        let mut out = vec![empty; sections];
        for (i, d) in done {
            out[i] = d;
        }
        out
    }
}
