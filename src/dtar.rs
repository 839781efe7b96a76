//! A deterministic tar writer, and a writer that hashes what passes through it.
//!
//! Every tar that eifctl writes for Docker (a build context, a normalized layer, a
//! `docker save` archive) must come out byte for byte the same from the same input, so the
//! headers are written here field by field rather than through `tar::Builder`, whose path
//! handling rewrites names (it drops a directory's trailing `/` and a symlink target's, and
//! skips `.` components).
//!
//! The format is GNU tar, always: a `ustar  ` header per entry, and a `././@LongLink` entry
//! (type `L` for the path, `K` for a link target) before any entry whose path or link target
//! does not fit the header's 100 bytes. Numbers that do not fit their octal field (uid, gid,
//! size, mtime) are written base-256, as GNU tar does. There are no user or group names, no
//! atime or ctime, and no PAX records; the header fields not set below stay zero.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// What a tar entry says about a file, apart from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The entry type: regular, directory, symlink, hard link, character or block device,
    /// FIFO.
    pub kind: EntryType,
    /// The mode's low 12 bits: permissions, setuid, setgid, sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
    /// The size of the data that follows; 0 for anything but a regular file.
    pub size: u64,
    /// A symlink's target, or the path a hard link names.
    pub link: Option<&'a [u8]>,
    /// A device's major and minor numbers.
    pub device: Option<(u32, u32)>,
}

/// Writes tar entries in GNU format, deterministically: the same entries give the same bytes.
pub struct TarWriter<W: Write> {
    out: W,
}

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Appends one entry; `data` must yield exactly `meta.size` bytes.
    pub fn append(&mut self, path: &[u8], meta: &Meta<'_>, data: impl Read) -> io::Result<()> {
        if path.is_empty() || path.contains(&0) || meta.link.is_some_and(|l| l.contains(&0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a tar entry's path and link target must be non-empty and without NUL: {:?}",
                    String::from_utf8_lossy(path)
                ),
            ));
        }
        if path.len() > NAME_LEN {
            self.long_link(b'L', path)?;
        }
        if let Some(link) = meta.link
            && link.len() > NAME_LEN
        {
            self.long_link(b'K', link)?;
        }

        let mut header = Header::new_gnu();
        let name = &path[..path.len().min(NAME_LEN)];
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = meta.link {
            let link = &link[..link.len().min(NAME_LEN)];
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        header.set_mode(meta.mode & 0o7777);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime);
        header.set_size(meta.size);
        header.set_entry_type(meta.kind);
        if let Some((major, minor)) = meta.device {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;

        let copied = io::copy(&mut data.take(meta.size), &mut self.out)?;
        if copied != meta.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {copied} bytes of data where the header says {}",
                    String::from_utf8_lossy(path),
                    meta.size
                ),
            ));
        }
        self.pad(meta.size)
    }

    /// A GNU `././@LongLink` entry carrying a long path (`L`) or link target (`K`).
    fn long_link(&mut self, kind: u8, name: &[u8]) -> io::Result<()> {
        let mut header = Header::new_gnu();
        let marker = b"././@LongLink";
        header.as_old_mut().name[..marker.len()].copy_from_slice(marker);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let size = name.len() as u64 + 1;
        header.set_size(size);
        header.set_entry_type(EntryType::new(kind));
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name)?;
        self.out.write_all(&[0])?;
        self.pad(size)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest != 0 {
            self.out.write_all(&[0; BLOCK][..BLOCK - rest])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A writer that passes everything on and keeps its sha256 and length.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The writer, the sha256 of what was written (hex) and its length.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: EntryType, size: u64, link: Option<&[u8]>) -> Meta<'_> {
        Meta {
            kind,
            mode: 0o4755,
            uid: 3_000_000,
            gid: 7,
            mtime: 1_700_000_000,
            size,
            link,
            device: None,
        }
    }

    #[test]
    fn round_trips_through_the_tar_crate_with_long_names_and_big_ids() {
        let long = "d/".repeat(80) + "file";
        let target = "../".repeat(50) + "target/";
        let mut w = TarWriter::new(Vec::new());
        w.append(b"dir/", &meta(EntryType::Directory, 0, None), io::empty())
            .unwrap();
        w.append(
            long.as_bytes(),
            &meta(EntryType::Regular, 5, None),
            &b"hello"[..],
        )
        .unwrap();
        w.append(
            b"link",
            &meta(EntryType::Symlink, 0, Some(target.as_bytes())),
            io::empty(),
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);

        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path_bytes().into_owned();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, link, h.mode().unwrap(), h.uid().unwrap(), data)
            })
            .collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0, b"dir/");
        assert_eq!(entries[1].0, long.as_bytes());
        assert_eq!(entries[1].4, b"hello");
        assert_eq!(entries[1].2, 0o4755);
        assert_eq!(entries[1].3, 3_000_000);
        assert_eq!(entries[2].1.as_deref(), Some(target.as_bytes()));
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let err = w
            .append(b"f", &meta(EntryType::Regular, 10, None), &b"abc"[..])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn hashing_writer_hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, hash, len) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(len, 3);
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
