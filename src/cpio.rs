//! Streaming reader and writer for SVR4 "newc" cpio archives, the format of Linux initramfs
//! images and therefore of EIF ramdisks.
//!
//! PCR2 is the SHA-384 of the ramdisk bytes, so the writer must reproduce exactly what AWS
//! `nitro-cli build-enclave` emits. nitro-cli builds its ramdisks with linuxkit, whose
//! `src/cmd/linuxkit/initrd/initrd.go` (repo `linuxkit/linuxkit`) feeds tar entries to the Go
//! package `github.com/surma/gocpio` (pinned by linuxkit's `go.mod` at
//! `v1.0.2-0.20160926205914-fcb68777e7dc`). What that code writes, as read in
//! `surma/gocpio` `pkg/cpio/writer.go` + `pkg/cpio/common.go` (pre-Go 1) and a Go 1 copy of
//! `writer.go` with the same header logic (the pinned commit itself was not available to read):
//!
//! - Header: `fmt.Sprintf("%s%08x…", "070701", …)`: **lowercase** hex, 8 digits per field
//!   (GNU `cpio -H newc` writes uppercase; readers accept both).
//! - `ino`: a counter starting at **721**, incremented after every header **including the
//!   trailer**, so the trailer carries `721 + number of entries`.
//! - `mode`: `perm & 0o7777 | type << 12`.
//! - `nlink`: 2 if the entry is a directory, 1 otherwise (the trailer: 1).
//! - `devmajor`/`devminor`: constants **3** and **1** on every header, the trailer included;
//!   `rdevmajor`/`rdevminor` are the tar header's device numbers (0 for the trailer).
//! - `namesize` = name length + 1 (the NUL); `check` = 0.
//! - Padding: header + name + NUL, then zeros up to a multiple of 4 of the archive offset;
//!   data, then zeros up to a multiple of 4 (written before the next header).
//! - Trailer: name `TRAILER!!!`, every other field 0 except `ino`, `nlink`, the dev numbers and
//!   `namesize` as above; then the archive is zero-padded to a multiple of **512** bytes
//!   (`Close` -> `pad(512)`). Around the cpio stream linuxkit only adds gzip (and, in older
//!   `initrd.go` versions, zero padding of the gzip output to 4 bytes), outside this module.
//! - linuxkit turns hard links into relative symlinks; symlink data is the target.
//!
//! [`WriterOptions::linuxkit`] encodes those rules.
//!
//! The reader also accepts the `070702` variant ("newc with CRC"): its `check` field is the
//! 32-bit wrapping sum of the data bytes. The reader verifies it for regular files only, once
//! their data has been consumed, because GNU `cpio -H crc` (2.13, tested) writes 0 for
//! symlinks.
//! The writer only writes `070701`, as every Linux initramfs tool does.

use std::io::{self, Read, Write};

/// Magic of the newc format.
pub const MAGIC_NEWC: &[u8; 6] = b"070701";
/// Magic of the newc format with a data checksum in the `check` field.
pub const MAGIC_NEWC_CRC: &[u8; 6] = b"070702";
/// Name of the entry that ends an archive.
pub const TRAILER_NAME: &[u8] = b"TRAILER!!!";
/// Size of the fixed part of a header: magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// Largest `namesize` (NUL included) the reader accepts: it allocates this much for a name, so
/// it has to be bounded, and Linux paths are at most 4 KiB anyway.
pub const MAX_NAME_SIZE: u32 = 64 * 1024;

const FIELD_NAMES: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];
const COPY_BUF_LEN: usize = 64 * 1024;
const S_IFMT: u32 = 0o170000;

/// What went wrong, with byte offsets into the archive so a report can point at the spot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("bad magic {found:?} at byte {offset}: expected \"070701\" or \"070702\"")]
    BadMagic { offset: u64, found: String },
    #[error("field {field} at byte {offset} is not 8 hex digits: {found:?}")]
    BadHex {
        field: &'static str,
        offset: u64,
        found: String,
    },
    #[error("input ends at byte {offset} inside the {part} of the entry at byte {entry_offset}")]
    Truncated {
        part: Part,
        entry_offset: u64,
        offset: u64,
    },
    #[error("input ends at byte {offset} without a TRAILER!!! entry")]
    MissingTrailer { offset: u64 },
    #[error("namesize of the entry at byte {entry_offset} is 0: a name needs at least its NUL")]
    NameSizeZero { entry_offset: u64 },
    #[error("name of the entry at byte {entry_offset} is {size} bytes, more than {MAX_NAME_SIZE}")]
    NameTooLong { entry_offset: u64, size: u64 },
    #[error("name of the entry at byte {entry_offset} does not end with NUL")]
    NameNotTerminated { entry_offset: u64 },
    #[error("padding byte at {offset} is not zero")]
    NonZeroPadding { offset: u64 },
    #[error(
        "checksum of the entry at byte {entry_offset} is {actual:#010x}, header says {expected:#010x}"
    )]
    ChecksumMismatch {
        entry_offset: u64,
        expected: u32,
        actual: u32,
    },
    #[error("cannot write name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{field} value {value} does not fit the 32-bit newc field")]
    FieldOverflow { field: &'static str, value: u64 },
    #[error("data of {name:?} ended after {got} of {expected} bytes")]
    DataTooShort {
        name: String,
        expected: u32,
        got: u64,
    },
    #[error("data of {name:?} is longer than its filesize {expected}")]
    DataTooLong { name: String, expected: u32 },
    #[error("the archive stream is unusable after an earlier error")]
    Poisoned,
}

/// Which part of an entry the input ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    Name,
    NamePadding,
    Data,
    DataPadding,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Name => "name",
            Part::NamePadding => "name padding",
            Part::Data => "data",
            Part::DataPadding => "data padding",
        })
    }
}

/// Which of the two newc magics an entry had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `070701`: `check` is unused (0).
    Newc,
    /// `070702`: `check` is the wrapping sum of a regular file's data bytes.
    NewcCrc,
}

/// File type from the `S_IFMT` bits of a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
    /// Type bits no Unix file type uses, kept so the mode can be rebuilt.
    Unknown(u32),
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & S_IFMT {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::CharDev,
            0o060000 => Kind::BlockDev,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            other => Kind::Unknown(other),
        }
    }

    /// The `S_IFMT` bits to OR into a mode.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::CharDev => 0o020000,
            Kind::BlockDev => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
            Kind::Unknown(bits) => bits & S_IFMT,
        }
    }
}

/// The nlink gocpio writes: it ignores the source's link count and uses 2 for directories,
/// 1 for everything else.
pub fn linuxkit_nlink(mode: u32) -> u32 {
    if Kind::from_mode(mode) == Kind::Dir {
        2
    } else {
        1
    }
}

/// One newc header. Fields are the raw 32-bit values; `name` excludes the NUL and is bytes
/// because Linux paths need not be UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Header {
    pub name: Vec<u8>,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    pub check: u32,
}

impl Header {
    /// A header with the type and permissions set, the nlink linuxkit would use, and every
    /// other field 0.
    pub fn new(name: impl Into<Vec<u8>>, kind: Kind, perm: u32) -> Header {
        let mode = kind.mode_bits() | (perm & 0o7777);
        Header {
            name: name.into(),
            mode,
            nlink: linuxkit_nlink(mode),
            ..Header::default()
        }
    }

    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }

    /// Permission bits including setuid, setgid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    pub fn is_trailer(&self) -> bool {
        self.name == TRAILER_NAME
    }

    fn fields(&self, namesize: u32) -> [u32; 13] {
        [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            namesize,
            self.check,
        ]
    }
}

fn pad4(offset: u64) -> u64 {
    (4 - offset % 4) % 4
}

fn hex_value(digit: u8) -> Option<u32> {
    match digit {
        b'0'..=b'9' => Some(u32::from(digit - b'0')),
        b'a'..=b'f' => Some(u32::from(digit - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(digit - b'A' + 10)),
        _ => None,
    }
}

fn parse_hex(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some((acc << 4) | hex_value(d)?))
}

fn wrapping_sum(sum: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(sum, |acc, &b| acc.wrapping_add(u32::from(b)))
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// What an archive held from its trailer on, so a diff can tell two archives apart even when
/// their entries agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub trailer: Header,
    pub trailer_offset: u64,
    /// Offset just past the trailer's name padding (and data, if it had any).
    pub trailer_end: u64,
    /// Bytes between `trailer_end` and the end of input: the archive alignment padding.
    pub trailing_len: u64,
    pub trailing_all_zero: bool,
}

enum State {
    Entries,
    Done,
    Poisoned,
}

/// Streams entries out of an archive without holding any entry's data in memory.
pub struct Reader<R: Read> {
    inner: R,
    pos: u64,
    state: State,
    current: Header,
    raw: [u8; HEADER_LEN],
    format: Format,
    entry_offset: u64,
    remaining: u64,
    sum: u32,
    end: Option<End>,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            pos: 0,
            state: State::Entries,
            current: Header::default(),
            raw: [0; HEADER_LEN],
            format: Format::Newc,
            entry_offset: 0,
            remaining: 0,
            sum: 0,
            end: None,
        }
    }

    /// Bytes consumed from the underlying reader.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Skips what is left of the previous entry, then reads the next header. `None` once the
    /// trailer has been read; [`Reader::finish`] then reports what followed it.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_, R>>, Error> {
        match self.state {
            State::Entries => {}
            State::Done => return Ok(None),
            State::Poisoned => return Err(Error::Poisoned),
        }
        match self.advance() {
            Ok(true) => Ok(Some(Entry { reader: self })),
            Ok(false) => {
                self.state = State::Done;
                Ok(None)
            }
            Err(e) => {
                self.state = State::Poisoned;
                Err(e)
            }
        }
    }

    /// Skips any remaining entries, then reads to the end of input and describes the trailer
    /// and the bytes after it.
    pub fn finish(mut self) -> Result<End, Error> {
        while self.next_entry()?.is_some() {}
        let mut end = self.end.take().ok_or(Error::Poisoned)?;
        let mut buf = [0u8; 8192];
        let mut all_zero = true;
        let start = self.pos;
        loop {
            let n = self.read_some(&mut buf)?;
            if n == 0 {
                break;
            }
            all_zero &= buf[..n].iter().all(|&b| b == 0);
        }
        end.trailing_len = self.pos - start;
        end.trailing_all_zero = all_zero;
        Ok(end)
    }

    /// Once `next_entry` has returned `None`, the inner reader is positioned just past the
    /// trailer, where a concatenated archive (as the kernel accepts) would start.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Returns Ok(true) for a regular entry, Ok(false) after the trailer.
    fn advance(&mut self) -> Result<bool, Error> {
        self.finish_entry()?;
        self.read_header()?;
        if !self.current.is_trailer() {
            return Ok(true);
        }
        // A trailer with data is odd but harmless: consume it as part of the trailer.
        self.finish_entry()?;
        self.end = Some(End {
            trailer: self.current.clone(),
            trailer_offset: self.entry_offset,
            trailer_end: self.pos,
            trailing_len: 0,
            trailing_all_zero: true,
        });
        Ok(false)
    }

    /// Consumes the rest of the current entry and checks its data sum.
    fn finish_entry(&mut self) -> Result<(), Error> {
        self.skip_data()?;
        self.skip_padding(Part::DataPadding)?;
        let checked = self.format == Format::NewcCrc && self.current.kind() == Kind::File;
        if checked && self.sum != self.current.check {
            return Err(Error::ChecksumMismatch {
                entry_offset: self.entry_offset,
                expected: self.current.check,
                actual: self.sum,
            });
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), Error> {
        let entry_offset = self.pos;
        self.entry_offset = entry_offset;
        let mut raw = [0u8; HEADER_LEN];
        let got = self.read_full(&mut raw)?;
        if got == 0 {
            return Err(Error::MissingTrailer { offset: self.pos });
        }
        // Magic first: a short non-cpio input (say, still gzip-compressed) is a bad magic,
        // not a truncated header.
        self.format = match raw.get(..6).filter(|_| got >= 6) {
            None => Format::Newc,
            Some(m) if m == MAGIC_NEWC => Format::Newc,
            Some(m) if m == MAGIC_NEWC_CRC => Format::NewcCrc,
            Some(m) => {
                return Err(Error::BadMagic {
                    offset: entry_offset,
                    found: String::from_utf8_lossy(m).into_owned(),
                });
            }
        };
        if got < HEADER_LEN {
            return Err(Error::Truncated {
                part: Part::Header,
                entry_offset,
                offset: self.pos,
            });
        }
        let mut fields = [0u32; 13];
        for (i, (field, digits)) in fields.iter_mut().zip(raw[6..].chunks_exact(8)).enumerate() {
            *field = parse_hex(digits).ok_or_else(|| Error::BadHex {
                field: FIELD_NAMES[i],
                offset: entry_offset + 6 + 8 * i as u64,
                found: String::from_utf8_lossy(digits).into_owned(),
            })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            devmajor,
            devminor,
            rdevmajor,
            rdevminor,
            namesize,
            check,
        ] = fields;
        if namesize == 0 {
            return Err(Error::NameSizeZero { entry_offset });
        }
        if namesize > MAX_NAME_SIZE {
            return Err(Error::NameTooLong {
                entry_offset,
                size: u64::from(namesize),
            });
        }
        let mut name = vec![0u8; namesize as usize];
        if self.read_full(&mut name)? < name.len() {
            return Err(Error::Truncated {
                part: Part::Name,
                entry_offset,
                offset: self.pos,
            });
        }
        if name.pop() != Some(0) {
            return Err(Error::NameNotTerminated { entry_offset });
        }
        self.skip_padding(Part::NamePadding)?;
        self.raw = raw;
        self.current = Header {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            devmajor,
            devminor,
            rdevmajor,
            rdevminor,
            check,
        };
        self.remaining = u64::from(filesize);
        self.sum = 0;
        Ok(())
    }

    fn skip_data(&mut self) -> Result<(), Error> {
        let mut buf = [0u8; 8192];
        while self.remaining > 0 {
            let want = buf
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let n = self.read_data(&mut buf[..want])?;
            if n == 0 {
                return Err(self.truncated_data());
            }
        }
        Ok(())
    }

    fn truncated_data(&self) -> Error {
        Error::Truncated {
            part: Part::Data,
            entry_offset: self.entry_offset,
            offset: self.pos,
        }
    }

    /// Reads at most the current entry's remaining data, keeping the checksum up to date.
    fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.read_some(&mut buf[..want])?;
        self.remaining -= n as u64;
        if self.format == Format::NewcCrc {
            self.sum = wrapping_sum(self.sum, &buf[..n]);
        }
        Ok(n)
    }

    fn skip_padding(&mut self, part: Part) -> Result<(), Error> {
        let mut pad = [0u8; 3];
        let len = pad4(self.pos) as usize;
        let start = self.pos;
        if self.read_full(&mut pad[..len])? < len {
            return Err(Error::Truncated {
                part,
                entry_offset: self.entry_offset,
                offset: self.pos,
            });
        }
        match pad[..len].iter().position(|&b| b != 0) {
            Some(i) => Err(Error::NonZeroPadding {
                offset: start + i as u64,
            }),
            None => Ok(()),
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        offset: self.pos,
                        source,
                    });
                }
            }
        }
    }

    /// Fills `buf` unless input ends first; returns how much was read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.read_some(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }
}

/// One entry of an archive; reading it yields exactly `filesize` bytes of data.
pub struct Entry<'a, R: Read> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Entry<'_, R> {
    pub fn header(&self) -> &Header {
        &self.reader.current
    }

    /// The 110 header bytes as found, for byte-level comparison (hex case, magic).
    pub fn raw_header(&self) -> &[u8; HEADER_LEN] {
        &self.reader.raw
    }

    /// Offset of the header in the archive.
    pub fn offset(&self) -> u64 {
        self.reader.entry_offset
    }

    pub fn format(&self) -> Format {
        self.reader.format
    }
}

impl<R: Read> Read for Entry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.reader.remaining == 0 {
            return Ok(0);
        }
        match self.reader.read_data(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                self.reader.truncated_data(),
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// How the writer rewrites headers, so that one code path can produce both faithful copies and
/// linuxkit-identical ramdisks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterOptions {
    /// `Some(n)`: entries get inodes n, n+1, … and the trailer the next one. `None`: keep each
    /// header's `ino`; the trailer gets 0.
    pub first_inode: Option<u32>,
    /// Replaces `devmajor`/`devminor` on every header, the trailer included.
    pub dev: Option<(u32, u32)>,
    /// Replaces each header's `nlink` with [`linuxkit_nlink`] of its mode.
    pub linuxkit_nlink: bool,
    /// Zero-pads the archive to a multiple of this many bytes; 0 or 1 means no padding.
    pub archive_alignment: u32,
}

impl WriterOptions {
    /// The encoding of gocpio as used by linuxkit, hence by `nitro-cli build-enclave`.
    pub fn linuxkit() -> WriterOptions {
        WriterOptions {
            first_inode: Some(721),
            dev: Some((3, 1)),
            linuxkit_nlink: true,
            archive_alignment: 512,
        }
    }
}

/// Writes a newc archive, streaming each entry's data through a fixed buffer.
pub struct Writer<W: Write> {
    inner: W,
    options: WriterOptions,
    pos: u64,
    next_inode: Option<u32>,
    buf: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W, options: WriterOptions) -> Writer<W> {
        Writer {
            inner,
            options,
            pos: 0,
            next_inode: options.first_inode,
            buf: Vec::new(),
            poisoned: false,
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes `header` (rewritten per the options; `check` is written as 0) and exactly
    /// `header.filesize` bytes from `data`, which must hold no more than that.
    pub fn append(&mut self, header: &Header, data: impl Read) -> Result<(), Error> {
        if header.is_trailer() {
            return Err(Error::InvalidName {
                name: header.name_lossy().into_owned(),
                reason: "it would end the archive early",
            });
        }
        self.guard(|w| w.write_entry(header, data))
    }

    pub fn append_dir(
        &mut self,
        name: impl AsRef<[u8]>,
        perm: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
    ) -> Result<(), Error> {
        let header = Header {
            uid,
            gid,
            mtime,
            ..Header::new(name.as_ref(), Kind::Dir, perm)
        };
        self.append(&header, io::empty())
    }

    pub fn append_symlink(
        &mut self,
        name: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
        perm: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
    ) -> Result<(), Error> {
        self.append_bytes(
            name.as_ref(),
            Kind::Symlink,
            target.as_ref(),
            [perm, uid, gid, mtime],
        )
    }

    pub fn append_file_bytes(
        &mut self,
        name: impl AsRef<[u8]>,
        data: &[u8],
        perm: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
    ) -> Result<(), Error> {
        self.append_bytes(name.as_ref(), Kind::File, data, [perm, uid, gid, mtime])
    }

    /// Writes the trailer and the archive padding, flushes, and hands back the inner writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.guard(|w| {
            let trailer = Header {
                name: TRAILER_NAME.to_vec(),
                nlink: 1,
                ino: w.next_inode.unwrap_or(0),
                ..Header::default()
            };
            w.write_entry(&trailer, io::empty())?;
            let align = u64::from(w.options.archive_alignment);
            if align > 1 {
                let pad = (align - w.pos % align) % align;
                w.write_zeros(pad)?;
            }
            w.inner.flush().map_err(|source| Error::Io {
                offset: w.pos,
                source,
            })
        })?;
        Ok(self.inner)
    }

    fn append_bytes(
        &mut self,
        name: &[u8],
        kind: Kind,
        data: &[u8],
        [perm, uid, gid, mtime]: [u32; 4],
    ) -> Result<(), Error> {
        let filesize = u32::try_from(data.len()).map_err(|_| Error::FieldOverflow {
            field: "filesize",
            value: data.len() as u64,
        })?;
        let header = Header {
            uid,
            gid,
            mtime,
            filesize,
            ..Header::new(name, kind, perm)
        };
        self.append(&header, data)
    }

    /// Runs a write step; any failure leaves a partial entry behind, so it poisons the writer.
    fn guard<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = step(self);
        self.poisoned = result.is_err();
        result
    }

    fn write_entry(&mut self, header: &Header, mut data: impl Read) -> Result<(), Error> {
        if header.name.contains(&0) {
            return Err(Error::InvalidName {
                name: header.name_lossy().into_owned(),
                reason: "it contains a NUL byte",
            });
        }
        let namesize = header.name.len() as u64 + 1;
        if namesize > u64::from(MAX_NAME_SIZE) {
            return Err(Error::FieldOverflow {
                field: "namesize",
                value: namesize,
            });
        }
        let mut header = header.clone();
        header.check = 0;
        if let Some(ino) = self.next_inode {
            header.ino = ino;
            self.next_inode = Some(ino.checked_add(1).ok_or(Error::FieldOverflow {
                field: "ino",
                value: u64::from(ino) + 1,
            })?);
        }
        if let Some((major, minor)) = self.options.dev {
            header.devmajor = major;
            header.devminor = minor;
        }
        if self.options.linuxkit_nlink {
            header.nlink = linuxkit_nlink(header.mode);
        }

        let mut raw = [0u8; HEADER_LEN];
        raw[..6].copy_from_slice(MAGIC_NEWC);
        // namesize <= MAX_NAME_SIZE was checked above.
        for (field, out) in header
            .fields(namesize as u32)
            .iter()
            .zip(raw[6..].chunks_exact_mut(8))
        {
            for (i, digit) in out.iter_mut().enumerate() {
                *digit = b"0123456789abcdef"[((field >> (28 - 4 * i)) & 0xf) as usize];
            }
        }
        self.write_all(&raw)?;
        self.write_all(&header.name)?;
        self.write_all(&[0])?;
        self.write_zeros(pad4(self.pos))?;
        self.copy_data(&header, &mut data)?;
        self.write_zeros(pad4(self.pos))
    }

    fn copy_data(&mut self, header: &Header, data: &mut impl Read) -> Result<(), Error> {
        if self.buf.is_empty() && header.filesize > 0 {
            self.buf = vec![0; COPY_BUF_LEN];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.copy_with(header, data, &mut buf);
        self.buf = buf;
        result
    }

    fn copy_with(
        &mut self,
        header: &Header,
        data: &mut impl Read,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        let expected = u64::from(header.filesize);
        let mut copied = 0u64;
        while copied < expected {
            let want = buf
                .len()
                .min(usize::try_from(expected - copied).unwrap_or(usize::MAX));
            let n = read_retrying(data, &mut buf[..want]).map_err(|source| Error::Io {
                offset: self.pos,
                source,
            })?;
            if n == 0 {
                return Err(Error::DataTooShort {
                    name: header.name_lossy().into_owned(),
                    expected: header.filesize,
                    got: copied,
                });
            }
            self.write_all(&buf[..n])?;
            copied += n as u64;
        }
        let mut probe = [0u8; 1];
        if read_retrying(data, &mut probe).map_err(|source| Error::Io {
            offset: self.pos,
            source,
        })? != 0
        {
            return Err(Error::DataTooLong {
                name: header.name_lossy().into_owned(),
                expected: header.filesize,
            });
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.write_all(bytes).map_err(|source| Error::Io {
            offset: self.pos,
            source,
        })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, mut len: u64) -> Result<(), Error> {
        const ZEROS: [u8; 512] = [0; 512];
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }
}

fn read_retrying(data: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match data.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
