//! Writing EIF files.
//!
//! The builder streams every section from its source into a temporary file next to the output,
//! measuring and checksumming on the way, and renames it into place only when it is complete: a
//! failed or interrupted build never leaves a plausible-looking EIF behind. Section sizes need
//! not be known in advance (a ramdisk can be generated on the fly): headers are patched after the
//! data, and CRC-32 pieces are combined in file order.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::reader::BufferPool;
use super::{
    Arch, CURRENT_VERSION, DEFAULT_CPUS, DEFAULT_MEM, FLAG_AARCH64, HEADER_CRC_SPAN, HEADER_LEN,
    Header, MAGIC, MAX_SECTIONS, Metadata, SECTION_HEADER_LEN, SectionHeader, SectionKind,
};
use crate::pcr::{CHUNK, Measurements, Measurer, Part, Pcr};

/// Where a section's data comes from.
pub enum Source {
    /// A file, read when the EIF is written.
    File(PathBuf),
    /// Bytes already in memory (small sections, tests).
    Bytes(Vec<u8>),
    /// Any stream, e.g. a ramdisk encoded while it is written; the name appears in errors.
    Reader {
        name: String,
        reader: Box<dyn Read + Send>,
    },
    /// Data produced by a function writing into a pipe on its own thread, e.g. a ramdisk encoded
    /// from a Docker export while the EIF is written. If the function fails, the section (and
    /// so the whole write) fails: a producer error can never pass for the end of the data.
    Generated { name: String, produce: Producer },
}

/// A function that writes a section's data; see [`Source::Generated`].
pub type Producer = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => "in-memory data".into(),
            Source::Reader { name, .. } | Source::Generated { name, .. } => name.clone(),
        }
    }
}

/// Produces the signature section from PCR0, which is known only once the ramdisks are written.
pub trait Pcr0Signer {
    fn sign(&self, pcr0: &Pcr) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>;
}

enum Signature {
    None,
    Bytes(Vec<u8>),
    Signer(Box<dyn Pcr0Signer>),
}

/// Why an EIF could not be written; the output path is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An input could not be read: the caller's mistake or a missing file.
    #[error("reading {name}: {source}")]
    Input {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The output could not be written: the environment's fault (disk full, permissions).
    #[error("{what}: {source}")]
    Output {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} changed size while it was read ({expected} bytes, then {actual})")]
    SizeChanged {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{0} sections: an EIF holds at most 32 (kernel, cmdline, metadata, signature and at most 28 ramdisks)"
    )]
    TooManySections(usize),
    #[error("an EIF needs at least one ramdisk")]
    NoRamdisk,
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("signing PCR0 failed: {0}")]
    Signer(String),
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    /// PCR0/1/2; PCR8 is left to whoever parses the signature section.
    pub measurements: Measurements,
    pub crc32: u32,
    /// Total file size.
    pub size: u64,
    /// Kind and data size of each section, in file order.
    pub sections: Vec<(SectionKind, u64)>,
    /// The signature section, if one was written.
    pub signature: Option<Vec<u8>>,
}

/// Assembles an EIF v4 the way AWS's builder lays it out: header, kernel, cmdline, metadata,
/// ramdisks, then the signature. Identical inputs give identical bytes: nothing is taken from
/// the clock or the environment.
pub struct EifBuilder {
    arch: Arch,
    default_mem: u64,
    default_cpus: u64,
    kernel: Source,
    cmdline: Vec<u8>,
    metadata: Vec<u8>,
    ramdisks: Vec<Source>,
    signature: Signature,
}

impl EifBuilder {
    /// `cmdline` is stored as given: callers trim it as nitro-cli does (see [`trim_cmdline`]).
    pub fn new(
        arch: Arch,
        kernel: Source,
        cmdline: impl Into<Vec<u8>>,
        metadata: &Metadata,
    ) -> Self {
        EifBuilder {
            arch,
            default_mem: DEFAULT_MEM,
            default_cpus: DEFAULT_CPUS,
            kernel,
            cmdline: cmdline.into(),
            metadata: metadata.to_bytes(),
            ramdisks: Vec::new(),
            signature: Signature::None,
        }
    }

    /// Appends a ramdisk; the first one is the bootstrap ramdisk (PCR1), the others the
    /// application (PCR2).
    pub fn ramdisk(mut self, source: Source) -> Self {
        self.ramdisks.push(source);
        self
    }

    /// Copies an existing signature section verbatim (for re-assembling a signed image).
    pub fn signature_section(mut self, bytes: Vec<u8>) -> Self {
        self.signature = Signature::Bytes(bytes);
        self
    }

    /// Signs PCR0 once it is known and writes the result as the signature section.
    pub fn signer(mut self, signer: Box<dyn Pcr0Signer>) -> Self {
        self.signature = Signature::Signer(signer);
        self
    }

    pub fn default_mem(mut self, bytes: u64) -> Self {
        self.default_mem = bytes;
        self
    }

    pub fn default_cpus(mut self, cpus: u64) -> Self {
        self.default_cpus = cpus;
        self
    }

    /// Writes the image to `output` atomically: a temporary file in the same directory, renamed
    /// into place when complete.
    pub fn write_to(self, output: &Path) -> Result<Written, WriteError> {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io_err = |what: String| move |source| WriteError::Output { what, source };
        let mut tmp = tempfile::Builder::new()
            .prefix(".eifctl-")
            .suffix(".eif.tmp")
            .tempfile_in(dir)
            .map_err(io_err(format!(
                "creating a temporary file in {}",
                dir.display()
            )))?;
        let written = self.write_into(tmp.as_file_mut())?;
        let what = format!("writing {}", output.display());
        tmp.as_file().sync_all().map_err(io_err(what.clone()))?;
        set_mode_644(tmp.as_file()).map_err(io_err(what.clone()))?;
        tmp.persist(output).map_err(|e| WriteError::Output {
            what,
            source: e.error,
        })?;
        Ok(written)
    }

    /// Writes the image into `out` from its start; `out` must be empty and seekable.
    pub fn write_into(self, out: &mut File) -> Result<Written, WriteError> {
        if self.ramdisks.is_empty() {
            return Err(WriteError::NoRamdisk);
        }
        let signed = !matches!(self.signature, Signature::None);
        let count = 3 + self.ramdisks.len() + usize::from(signed);
        if count > MAX_SECTIONS {
            return Err(WriteError::TooManySections(count));
        }
        if self.cmdline.contains(&0) {
            return Err(WriteError::CmdlineNul);
        }
        let out_err = |source| WriteError::Output {
            what: "writing the EIF".into(),
            source,
        };

        let mut w = SectionWriter {
            out,
            pos: 0,
            crc_rest: crc32fast::Hasher::new(),
            measurer: Measurer::new(),
            pool: BufferPool::default(),
            table: Vec::new(),
        };
        w.out.seek(SeekFrom::Start(0)).map_err(out_err)?;
        w.out.set_len(0).map_err(out_err)?;
        w.out.write_all(&[0u8; HEADER_LEN]).map_err(out_err)?;
        w.pos = HEADER_LEN as u64;

        w.section(SectionKind::Kernel, Some(Part::Boot), self.kernel)?;
        w.section(
            SectionKind::Cmdline,
            Some(Part::Boot),
            Source::Bytes(self.cmdline),
        )?;
        w.section(SectionKind::Metadata, None, Source::Bytes(self.metadata))?;
        for (i, rd) in self.ramdisks.into_iter().enumerate() {
            let part = if i == 0 { Part::Boot } else { Part::App };
            w.section(SectionKind::Ramdisk, Some(part), rd)?;
        }
        let SectionWriter {
            out,
            mut pos,
            mut crc_rest,
            measurer,
            table,
            ..
        } = w;
        let measurements = measurer.finish();
        let signature = match self.signature {
            Signature::None => None,
            Signature::Bytes(b) => Some(b),
            Signature::Signer(s) => Some(
                s.sign(&measurements.pcr0)
                    .map_err(|e| WriteError::Signer(e.to_string()))?,
            ),
        };
        let mut table = table;
        if let Some(sig) = &signature {
            let sh = SectionHeader {
                kind: SectionKind::Signature.to_u16(),
                flags: 0,
                size: sig.len() as u64,
            }
            .to_bytes();
            out.write_all(&sh).map_err(out_err)?;
            out.write_all(sig).map_err(out_err)?;
            crc_rest.update(&sh);
            crc_rest.update(sig);
            table.push((SectionKind::Signature, pos, sig.len() as u64));
            pos += (SECTION_HEADER_LEN + sig.len()) as u64;
        }

        let mut header = Header {
            magic: MAGIC,
            version: CURRENT_VERSION,
            flags: match self.arch {
                Arch::X86_64 => 0,
                Arch::Aarch64 => FLAG_AARCH64,
            },
            default_mem: self.default_mem,
            default_cpus: self.default_cpus,
            reserved: 0,
            num_sections: table.len() as u16,
            section_offsets: [0; MAX_SECTIONS],
            section_sizes: [0; MAX_SECTIONS],
            unused: 0,
            crc32: 0,
        };
        for (i, (_, offset, size)) in table.iter().enumerate() {
            header.section_offsets[i] = *offset;
            header.section_sizes[i] = *size;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header.to_bytes()[..HEADER_CRC_SPAN]);
        crc.combine(&crc_rest);
        header.crc32 = crc.finalize();
        out.seek(SeekFrom::Start(0)).map_err(out_err)?;
        out.write_all(&header.to_bytes()).map_err(out_err)?;
        out.flush().map_err(out_err)?;

        Ok(Written {
            measurements,
            crc32: header.crc32,
            size: pos,
            sections: table.iter().map(|(k, _, s)| (*k, *s)).collect(),
            signature,
        })
    }
}

/// Trims a cmdline blob as nitro-cli does (`String::trim`): the blob file ends in a newline,
/// which is not part of the measured command line.
pub fn trim_cmdline(raw: &str) -> &str {
    raw.trim()
}

struct SectionWriter<'a> {
    out: &'a mut File,
    pos: u64,
    /// CRC of everything after the header, combined piece by piece.
    crc_rest: crc32fast::Hasher,
    measurer: Measurer,
    pool: BufferPool,
    table: Vec<(SectionKind, u64, u64)>,
}

impl SectionWriter<'_> {
    fn section(
        &mut self,
        kind: SectionKind,
        part: Option<Part>,
        source: Source,
    ) -> Result<(), WriteError> {
        let name = source.name();
        let read_err = |source| WriteError::Input {
            name: name.clone(),
            source,
        };
        let out_err = |source| WriteError::Output {
            what: "writing the EIF".into(),
            source,
        };
        let (expected, mut reader): (Option<u64>, Box<dyn Read + Send>) = match source {
            Source::File(path) => {
                let f = File::open(&path).map_err(read_err)?;
                let len = f.metadata().map_err(read_err)?.len();
                (Some(len), Box::new(f))
            }
            Source::Bytes(b) => (Some(b.len() as u64), Box::new(io::Cursor::new(b))),
            Source::Reader { reader, .. } => (None, reader),
            Source::Generated { produce, .. } => (None, Box::new(spawn_producer(produce))),
        };
        let header_offset = self.pos;
        let placeholder = SectionHeader {
            kind: kind.to_u16(),
            flags: 0,
            size: expected.unwrap_or(0),
        };
        self.out
            .write_all(&placeholder.to_bytes())
            .map_err(out_err)?;
        let mut data_crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        loop {
            let mut buf = self.pool.take();
            buf.resize(CHUNK, 0);
            let n = read_full(&mut reader, &mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            self.out.write_all(&buf).map_err(out_err)?;
            data_crc.update(&buf);
            size += n as u64;
            let chunk = Arc::new(buf);
            if let Some(part) = part {
                self.measurer.feed(part, chunk.clone());
            }
            self.pool.give_back(chunk);
        }
        if let Some(expected) = expected
            && expected != size
        {
            return Err(WriteError::SizeChanged {
                name,
                expected,
                actual: size,
            });
        }
        let header = SectionHeader {
            kind: kind.to_u16(),
            flags: 0,
            size,
        };
        if expected.is_none() {
            self.out
                .seek(SeekFrom::Start(header_offset))
                .map_err(out_err)?;
            self.out.write_all(&header.to_bytes()).map_err(out_err)?;
            self.out.seek(SeekFrom::End(0)).map_err(out_err)?;
        }
        self.crc_rest.update(&header.to_bytes());
        self.crc_rest.combine(&data_crc);
        self.table.push((kind, header_offset, size));
        self.pos = header_offset + SECTION_HEADER_LEN as u64 + size;
        Ok(())
    }
}

/// Runs `produce` on its own thread, writing into a bounded channel that the returned reader
/// drains; at most a few chunks are in flight.
fn spawn_producer(produce: Producer) -> ProducerReader {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(4);
    let thread_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("section-producer".into())
        .spawn(move || {
            let mut w = ChannelWriter {
                tx: thread_tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = produce(&mut w).and_then(|()| w.flush_buf());
            // The reader may be gone (it failed first); nothing is left to tell then.
            let _ = thread_tx.send(match result {
                Ok(()) => Piece::End,
                Err(e) => Piece::Failed(e),
            });
        });
    if let Err(e) = spawned {
        // The channel is empty, so this cannot block; the reader reports it on its first read.
        let _ = tx.try_send(Piece::Failed(e));
    }
    ProducerReader {
        rx,
        current: Vec::new(),
        pos: 0,
        done: false,
    }
}

enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

struct ChannelWriter {
    tx: std::sync::mpsc::SyncSender<Piece>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Piece::Data(chunk)).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the EIF writer stopped reading")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ProducerReader {
    rx: std::sync::mpsc::Receiver<Piece>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ProducerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => {
                    self.current = d;
                    self.pos = 0;
                }
                Ok(Piece::End) => self.done = true,
                Ok(Piece::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(
                        "the section producer stopped without finishing",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Fills `buf` unless the reader ends first; returns how much was read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn set_mode_644(f: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}
