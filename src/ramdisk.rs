//! The two ramdisks of an EIF, written byte for byte as `nitro-cli build-enclave` writes them.
//!
//! PCR1 measures the bootstrap ramdisk and PCR2 the customer ramdisk, so "close enough" is
//! worthless here: a single differing byte gives different measurements. nitro-cli does not
//! write these archives itself; it runs its bundled, AWS-patched linuxkit (upstream v1.5.2 plus
//! three patches from `aws/aws-nitro-enclaves-sdk-bootstrap`) with
//! `build --format kernel+initrd-nogz --no-sbom [--docker]` on two generated YAML files. This
//! module reproduces what that pipeline does — Docker export, linuxkit's `ImageTar` filter, its
//! `files:` writer, Go's `archive/tar` round trip and the tar-to-cpio conversion of
//! `initrd.go` — without Go, linuxkit or a temporary tar file. `docs/nitro-cli-ramdisks.md`
//! gives every rule with its source; the comments here say which rule a piece of code mirrors.
//!
//! Everything streams: a tar entry's data goes straight from the input to the output. The only
//! state kept across entries is which of linuxkit's nine "touch" paths the image already had
//! (nine booleans), because linuxkit creates the missing ones after the image tree.
//!
//! Where linuxkit would fail (an entry type cpio cannot hold, a header Go's tar writer
//! refuses) or would write a broken or escaping archive (numbers that overflow a newc field,
//! names with `..`), this module returns a [`RamdiskError`] instead.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::cpio::{self, Header, Kind, Writer, WriterOptions};

/// The mtime linuxkit gives everything it creates or "touches": its `defaultModTime`,
/// 2017-04-18T16:30:00Z ("roughly the time LinuxKit got open sourced").
pub const LINUXKIT_MTIME: u32 = 1_492_533_000;

/// Where nitro-cli's customer YAML (`prefix: rootfs/`) puts the image filesystem.
pub const ROOTFS_PREFIX: &[u8] = b"rootfs/";

/// The target linuxkit gives `etc/resolv.conf` in `init:` images (its `resolvconfSymlink`).
pub const RESOLV_CONF_TARGET: &[u8] = b"/run/resolvconf/resolv.conf";

/// The target of the `etc/mtab` symlink linuxkit creates when an image lacks one.
pub const MTAB_TARGET: &[u8] = b"/proc/mounts";

/// The `etc/hosts` linuxkit writes in place of the image's (its `replace` table).
pub const ETC_HOSTS: &[u8] = b"127.0.0.1       localhost\n\
::1     localhost ip6-localhost ip6-loopback\n\
fe00::0 ip6-localnet\n\
ff00::0 ip6-mcastprefix\n\
ff02::1 ip6-allnodes\n\
ff02::2 ip6-allrouters\n";

/// Tar names linuxkit drops from an image (its `exclude` table), compared byte for byte with
/// the name as stored: Docker stores directories with a trailing `/`, so the directories
/// `dev/pts/` and `dev/shm/` are *not* dropped by this list (they are "touched" instead).
pub const EXCLUDED: [&[u8]; 6] = [
    b".dockerenv",
    b"Dockerfile",
    b"dev/console",
    b"dev/pts",
    b"dev/shm",
    b"etc/hostname",
];

/// The directories nitro-cli's customer YAML lists under `files:`, in YAML order.
pub const CUSTOMER_DIRS: [&[u8]; 6] = [
    b"rootfs/dev",
    b"rootfs/run",
    b"rootfs/sys",
    b"rootfs/var",
    b"rootfs/proc",
    b"rootfs/tmp",
];

/// What linuxkit writes for a "touch" path the image did not have.
#[derive(Debug, Clone, Copy)]
enum Created {
    Dir,
    Hosts,
    Symlink(&'static [u8]),
}

/// One entry of linuxkit's `touch` table: `key` is matched against tar names, `name` (no
/// trailing slash) is what gets written when the image lacks the path.
struct Touch {
    key: &'static [u8],
    name: &'static [u8],
    perm: u32,
    created: Created,
}

/// linuxkit's `touch` table, in the order it emits missing entries (`sort.Strings` of keys).
const TOUCH: [Touch; 9] = [
    touch(b"dev/", b"dev", 0o755, Created::Dir),
    touch(b"dev/pts/", b"dev/pts", 0o755, Created::Dir),
    touch(b"dev/shm/", b"dev/shm", 0o755, Created::Dir),
    touch(b"etc/", b"etc", 0o755, Created::Dir),
    touch(b"etc/hosts", b"etc/hosts", 0o644, Created::Hosts),
    touch(
        b"etc/mtab",
        b"etc/mtab",
        0o755,
        Created::Symlink(MTAB_TARGET),
    ),
    touch(
        b"etc/resolv.conf",
        b"etc/resolv.conf",
        0o644,
        Created::Symlink(RESOLV_CONF_TARGET),
    ),
    touch(b"proc/", b"proc", 0o755, Created::Dir),
    touch(b"sys/", b"sys", 0o755, Created::Dir),
];

const fn touch(key: &'static [u8], name: &'static [u8], perm: u32, created: Created) -> Touch {
    Touch {
        key,
        name,
        perm,
        created,
    }
}

/// Largest value Go's `archive/tar` writer accepts for fields it cannot move into a PAX record
/// (mode, device numbers): 7 octal digits. linuxkit re-encodes every header with that writer.
const GO_TAR_OCTAL_MAX: u64 = 0o7777777;

/// Why a ramdisk could not be written. Tar entry numbers count the members the tar stream
/// yields (extension headers excluded), from 0.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    #[error("the image config has neither Cmd nor Entrypoint; nitro-cli refuses such images")]
    NoCommand,
    #[error("cannot read {path}: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error("bad tar stream at entry {index}: {source}")]
    Tar { index: u64, source: io::Error },
    #[error("tar entry {index} ({name:?}): {reason}")]
    Unsupported {
        index: u64,
        name: String,
        reason: String,
    },
    #[error("tar entry {index} ({name:?}): {reason}; refusing a path that could leave the rootfs")]
    UnsafePath {
        index: u64,
        name: String,
        reason: &'static str,
    },
    #[error("tar entry {index} ({name:?}): {field} {value} does not fit a 32-bit newc field")]
    OutOfRange {
        index: u64,
        name: String,
        field: &'static str,
        value: i128,
    },
    #[error("writing tar entry {index} ({name:?}): {source}")]
    Entry {
        index: u64,
        name: String,
        source: cpio::Error,
    },
    #[error("writing the ramdisk: {0}")]
    Cpio(#[from] cpio::Error),
}

/// The command and environment nitro-cli passes to the enclave's init, as the `cmd` and `env`
/// files of the customer ramdisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
}

impl Command {
    /// nitro-cli's rule (`enclave_build/src/docker.rs`, `extract_image`, bollard version, 1.3.0
    /// on): an image with `Cmd` runs `Cmd` and its `Entrypoint` is ignored; otherwise
    /// `Entrypoint`; with neither the build fails. A missing `Env` is an empty list. An empty
    /// but present `Cmd` (`[]`) still wins and gives an empty `cmd` file.
    pub fn from_config(
        cmd: Option<&[String]>,
        entrypoint: Option<&[String]>,
        env: Option<&[String]>,
    ) -> Result<Command, RamdiskError> {
        let chosen = cmd.or(entrypoint).ok_or(RamdiskError::NoCommand)?;
        Ok(Command {
            cmd: chosen.to_vec(),
            env: env.map(<[String]>::to_vec).unwrap_or_default(),
        })
    }

    /// `write_config`: every item followed by `\n`, nothing else (an empty list is an empty
    /// file). Items are written verbatim, embedded newlines included.
    pub fn cmd_file_bytes(&self) -> Vec<u8> {
        lines(&self.cmd)
    }

    /// Same format as [`Command::cmd_file_bytes`], one `KEY=value` per line.
    pub fn env_file_bytes(&self) -> Vec<u8> {
        lines(&self.env)
    }
}

fn lines(items: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|s| s.len() + 1).sum());
    for item in items {
        out.extend_from_slice(item.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Counts for progress output and for checking what a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerStats {
    /// Members read from the export tar.
    pub tar_entries: u64,
    /// Entries written to the ramdisk, the trailer not counted.
    pub cpio_entries: u64,
    /// Regular-file data bytes copied from the export.
    pub file_bytes: u64,
    /// Export entries dropped by linuxkit's exclude list.
    pub excluded: u64,
    /// Export entries whose content linuxkit replaces (`etc/hosts`, `etc/resolv.conf`).
    pub replaced: u64,
    /// Export entries whose mtime linuxkit forces.
    pub touched: u64,
    /// Touch paths the export lacked, created after the image tree.
    pub created: u64,
    /// Hard links written as relative symlinks.
    pub hard_links: u64,
    /// Bytes written so far; once the ramdisk is complete, its size, padding included.
    pub archive_bytes: u64,
}

/// Writes nitro-cli's bootstrap ramdisk: `dev` (directory), `init` and `nsm.ko` (files), all
/// mode 0755, uid/gid 0, mtime [`LINUXKIT_MTIME`], exactly as linuxkit writes the three
/// `files:` entries of nitro-cli's bootstrap YAML. The files are streamed, not loaded.
pub fn write_bootstrap<W: Write>(out: W, init: &Path, nsm: &Path) -> Result<W, RamdiskError> {
    let mut cw = Writer::new(out, WriterOptions::linuxkit());
    cw.append(&generated(b"dev", Kind::Dir, 0o755, 0), io::empty())?;
    append_source_file(&mut cw, b"init", init)?;
    append_source_file(&mut cw, b"nsm.ko", nsm)?;
    Ok(cw.finish()?)
}

fn append_source_file<W: Write>(
    cw: &mut Writer<W>,
    name: &[u8],
    path: &Path,
) -> Result<(), RamdiskError> {
    let source_error = |source| RamdiskError::Source {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(source_error)?;
    let len = file.metadata().map_err(source_error)?.len();
    let filesize = u32::try_from(len).map_err(|_| cpio::Error::FieldOverflow {
        field: "filesize",
        value: len,
    })?;
    let mut input = TrackedReader::new(file);
    match cw.append(&generated(name, Kind::File, 0o755, filesize), &mut input) {
        Ok(()) => Ok(()),
        Err(e) => Err(match input.failed.take() {
            Some(source) => source_error(source),
            None => e.into(),
        }),
    }
}

/// Writes nitro-cli's customer ramdisk from the `docker export` tar of a container created
/// from the image (linuxkit creates it with `Cmd: ["/dev/null"]`, networking disabled, never
/// started), and the command chosen by [`Command::from_config`].
///
/// Order, as linuxkit writes it: `rootfs` (the prefix directory); the export's entries, each
/// renamed under `rootfs/` and filtered (exclude, replace, touch); the touch paths the export
/// lacked; then the `files:` of nitro-cli's YAML: `rootfs` again, `rootfs/{dev,run,sys,var,
/// proc,tmp}`, `cmd`, `env`.
pub fn write_customer<R: Read, W: Write>(
    export: R,
    command: &Command,
    out: W,
) -> Result<(W, CustomerStats), RamdiskError> {
    let mut stats = CustomerStats::default();
    let mut cw = Writer::new(Counting { inner: out, n: 0 }, WriterOptions::linuxkit());

    // ImageTar -> tarPrefix: one directory per component of the prefix.
    append_generated(
        &mut cw,
        &mut stats,
        generated(b"rootfs", Kind::Dir, 0o755, 0),
        &[],
    )?;

    let mut found = [false; TOUCH.len()];
    let mut archive = tar::Archive::new(export);
    let entries = archive
        .entries()
        .map_err(|source| RamdiskError::Tar { index: 0, source })?;
    for (index, entry) in (0u64..).zip(entries) {
        let entry = entry.map_err(|source| RamdiskError::Tar { index, source })?;
        stats.tar_entries += 1;
        convert_entry(index, entry, &mut cw, &mut found, &mut stats)?;
    }

    // ImageTar: touch paths the image lacked, in sorted key order, without trailing slash.
    for (t, _) in TOUCH.iter().zip(found).filter(|(_, seen)| !seen) {
        let name = [ROOTFS_PREFIX, t.name].concat();
        let (header, data): (Header, &[u8]) = match t.created {
            Created::Dir => (generated(&name, Kind::Dir, t.perm, 0), &[]),
            Created::Hosts => (
                generated_data(&name, Kind::File, t.perm, ETC_HOSTS),
                ETC_HOSTS,
            ),
            Created::Symlink(target) => {
                (generated_data(&name, Kind::Symlink, t.perm, target), target)
            }
        };
        append_generated(&mut cw, &mut stats, header, data)?;
        stats.created += 1;
    }

    // filesystem(): the YAML's `files:`. The first one, `rootfs/dev`, needs its parent
    // directory `rootfs`, written with the entry's mode given execute bits (0755 stays 0755).
    append_generated(
        &mut cw,
        &mut stats,
        generated(b"rootfs", Kind::Dir, 0o755, 0),
        &[],
    )?;
    for dir in CUSTOMER_DIRS {
        append_generated(
            &mut cw,
            &mut stats,
            generated(dir, Kind::Dir, 0o755, 0),
            &[],
        )?;
    }
    let cmd = command.cmd_file_bytes();
    let env = command.env_file_bytes();
    append_generated(
        &mut cw,
        &mut stats,
        generated_data(b"cmd", Kind::File, 0o644, &cmd),
        &cmd,
    )?;
    append_generated(
        &mut cw,
        &mut stats,
        generated_data(b"env", Kind::File, 0o644, &env),
        &env,
    )?;

    let out = cw.finish()?;
    stats.archive_bytes = out.n;
    Ok((out.inner, stats))
}

/// A header for an entry linuxkit makes up: uid/gid 0, mtime [`LINUXKIT_MTIME`].
fn generated(name: &[u8], kind: Kind, perm: u32, filesize: u32) -> Header {
    Header {
        mtime: LINUXKIT_MTIME,
        filesize,
        ..Header::new(name, kind, perm)
    }
}

fn generated_data(name: &[u8], kind: Kind, perm: u32, data: &[u8]) -> Header {
    // Generated data is a few hundred bytes at most (or the cmd/env files, bounded by what
    // fits in memory as a `Command`); saturating keeps an absurd size an error of the writer.
    let filesize = u32::try_from(data.len()).unwrap_or(u32::MAX);
    generated(name, kind, perm, filesize)
}

fn append_generated<W: Write>(
    cw: &mut Writer<W>,
    stats: &mut CustomerStats,
    header: Header,
    data: &[u8],
) -> Result<(), RamdiskError> {
    if data.len() as u64 != u64::from(header.filesize) {
        return Err(cpio::Error::FieldOverflow {
            field: "filesize",
            value: data.len() as u64,
        }
        .into());
    }
    cw.append(&header, data)?;
    stats.cpio_entries += 1;
    stats.archive_bytes = cw.position();
    Ok(())
}

/// The entry types of Go's `archive/tar` that linuxkit's `typeconv` maps to cpio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TarKind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl TarKind {
    /// Go's reader turns the legacy `\0` type into a directory when the name ends in `/`,
    /// else a regular file; everything `typeconv` does not list is an error in linuxkit.
    fn of(typeflag: u8, name: &[u8]) -> Option<TarKind> {
        Some(match typeflag {
            b'0' => TarKind::Regular,
            b'\0' if name.ends_with(b"/") => TarKind::Dir,
            b'\0' => TarKind::Regular,
            b'1' => TarKind::HardLink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::Char,
            b'4' => TarKind::Block,
            b'5' => TarKind::Dir,
            b'6' => TarKind::Fifo,
            _ => return None,
        })
    }

    fn cpio_kind(self) -> Kind {
        match self {
            TarKind::Regular => Kind::File,
            TarKind::HardLink | TarKind::Symlink => Kind::Symlink,
            TarKind::Char => Kind::CharDev,
            TarKind::Block => Kind::BlockDev,
            TarKind::Dir => Kind::Dir,
            TarKind::Fifo => Kind::Fifo,
        }
    }
}

/// The header fields of one export entry after Go's reader has applied PAX records.
struct Meta {
    index: u64,
    name: Vec<u8>,
    perm: u32,
    uid: u32,
    gid: u32,
    /// The entry's own mtime, range-checked only when used: linuxkit replaces it for
    /// touched and replaced entries.
    mtime: i64,
    rdev: (u32, u32),
}

impl Meta {
    fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    fn mtime(&self) -> Result<u32, RamdiskError> {
        let value = i128::from(self.mtime);
        u32::try_from(self.mtime).map_err(|_| RamdiskError::OutOfRange {
            index: self.index,
            name: self.name_lossy(),
            field: "mtime",
            value,
        })
    }

    fn header(&self, name: Vec<u8>, kind: Kind, mtime: u32, filesize: u32) -> Header {
        Header {
            uid: self.uid,
            gid: self.gid,
            mtime,
            filesize,
            rdevmajor: self.rdev.0,
            rdevminor: self.rdev.1,
            ..Header::new(name, kind, self.perm)
        }
    }
}

fn convert_entry<R: Read, W: Write>(
    index: u64,
    mut entry: tar::Entry<'_, R>,
    cw: &mut Writer<W>,
    found: &mut [bool; TOUCH.len()],
    stats: &mut CustomerStats,
) -> Result<(), RamdiskError> {
    let name = entry.path_bytes().into_owned();
    // The raw byte: the tar crate folds the legacy `\0` type into `0`, Go does not.
    let typeflag = entry.header().as_old().linkflag[0];
    // A PAX global header reaches linuxkit as an entry of its own; its data is records, not
    // file content, so it is not asked for PAX records of its own.
    if typeflag == b'g' {
        if EXCLUDED.contains(&name.as_slice()) {
            stats.excluded += 1;
            return Ok(());
        }
        return Err(unsupported(
            index,
            &name,
            "PAX global header: linuxkit cannot convert it to cpio".into(),
        ));
    }
    let pax_mtime = read_pax(index, &name, &mut entry)?;

    // ImageTar, first rule: the exclude list, whatever the entry's type.
    if EXCLUDED.contains(&name.as_slice()) {
        stats.excluded += 1;
        return Ok(());
    }

    check_path(index, &name, "name")?;
    let kind = TarKind::of(typeflag, &name);
    let size = entry.size();
    if let Some(kind) = kind.filter(|k| *k != TarKind::Regular && size != 0) {
        // Go skips no data blocks for these types; the tar crate would, and the two readers
        // would see different archives from here on.
        return Err(unsupported(
            index,
            &name,
            format!(
                "a {kind:?} entry with {size} data bytes: Go's tar reader ignores such data, this \
                 reader cannot"
            ),
        ));
    }
    let meta = read_meta(index, name, &entry, pax_mtime)?;
    let prefixed = [ROOTFS_PREFIX, &meta.name].concat();
    let touch_slot = TOUCH.iter().position(|t| t.key == meta.name.as_slice());

    // ImageTar, second rule: replaced content, before any look at the type. The AWS patch
    // "Fix output image duplicate entries" marks the path as found so it is not created again
    // after the tree.
    if meta.name == b"etc/hosts" || meta.name == b"etc/resolv.conf" {
        if let Some(slot) = touch_slot {
            found[slot] = true;
        }
        stats.replaced += 1;
        let (header, data) = if meta.name == b"etc/hosts" {
            if kind != Some(TarKind::Regular) {
                return Err(unsupported(
                    index,
                    &meta.name,
                    format!(
                        "etc/hosts is of tar type {:?}: linuxkit gives it new content, which \
                         Go's tar writer or initrd.go then refuses",
                        char::from(typeflag)
                    ),
                ));
            }
            let header = meta.header(prefixed, Kind::File, LINUXKIT_MTIME, len32(ETC_HOSTS));
            (header, ETC_HOSTS)
        } else {
            // Any type becomes a symlink; mode, owner and device numbers stay.
            let header = meta.header(
                prefixed,
                Kind::Symlink,
                LINUXKIT_MTIME,
                len32(RESOLV_CONF_TARGET),
            );
            (header, RESOLV_CONF_TARGET)
        };
        return append_entry(cw, stats, &meta, &header, data);
    }

    let kind = kind.ok_or_else(|| {
        unsupported(
            index,
            &meta.name,
            format!(
                "tar type {:?} has no cpio equivalent; linuxkit fails on it",
                char::from(typeflag)
            ),
        )
    })?;
    // Go's tar writer (linuxkit re-encodes every header) refuses these names.
    if matches!(
        kind,
        TarKind::Regular | TarKind::Char | TarKind::Block | TarKind::Fifo
    ) && meta.name.ends_with(b"/")
    {
        return Err(unsupported(
            index,
            &meta.name,
            format!("a {kind:?} entry whose name ends in '/': Go's tar writer refuses it"),
        ));
    }

    // ImageTar, third rule: touched paths keep everything but the mtime.
    let mtime = match touch_slot {
        Some(slot) => {
            found[slot] = true;
            stats.touched += 1;
            LINUXKIT_MTIME
        }
        None => meta.mtime()?,
    };

    match kind {
        TarKind::Regular => {
            let filesize = u32::try_from(size).map_err(|_| RamdiskError::OutOfRange {
                index,
                name: meta.name_lossy(),
                field: "filesize",
                value: i128::from(size),
            })?;
            let header = meta.header(prefixed, Kind::File, mtime, filesize);
            let mut input = TrackedReader::new(&mut entry);
            match cw.append(&header, &mut input) {
                Ok(()) => {}
                Err(source) => {
                    return Err(match input.failed.take() {
                        Some(source) => RamdiskError::Tar { index, source },
                        None if input.got < size => RamdiskError::Tar {
                            index,
                            source: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("data ends after {} of {size} bytes", input.got),
                            ),
                        },
                        None => RamdiskError::Entry {
                            index,
                            name: meta.name_lossy(),
                            source,
                        },
                    });
                }
            }
            stats.cpio_entries += 1;
            stats.file_bytes += size;
            stats.archive_bytes = cw.position();
            Ok(())
        }
        TarKind::HardLink => {
            let link = entry
                .link_name_bytes()
                .map(Cow::into_owned)
                .unwrap_or_default();
            check_path(index, &link, "hard link target")?;
            // Hard link names are archive paths, so ImageTar prefixes them too; initrd.go
            // then writes filepath.Rel(filepath.Dir(name), linkname) as a symlink.
            let target = [ROOTFS_PREFIX, &link].concat();
            let relative = hard_link_target(&prefixed, &target);
            let header = meta.header(prefixed, Kind::Symlink, mtime, len32(&relative));
            append_entry(cw, stats, &meta, &header, &relative)?;
            stats.hard_links += 1;
            Ok(())
        }
        TarKind::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(Cow::into_owned)
                .unwrap_or_default();
            let filesize = u32::try_from(target.len()).map_err(|_| RamdiskError::OutOfRange {
                index,
                name: meta.name_lossy(),
                field: "symlink target length",
                value: target.len() as i128,
            })?;
            let header = meta.header(prefixed, Kind::Symlink, mtime, filesize);
            append_entry(cw, stats, &meta, &header, &target)
        }
        TarKind::Char | TarKind::Block | TarKind::Dir | TarKind::Fifo => {
            let header = meta.header(prefixed, kind.cpio_kind(), mtime, 0);
            append_entry(cw, stats, &meta, &header, &[])
        }
    }
}

fn unsupported(index: u64, name: &[u8], reason: String) -> RamdiskError {
    RamdiskError::Unsupported {
        index,
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    }
}

fn len32(data: &[u8]) -> u32 {
    // Only called on constants and on hard-link targets, which are at most one archive path
    // longer than the link's own name (bounded by the tar reader's allocation).
    u32::try_from(data.len()).unwrap_or(u32::MAX)
}

fn append_entry<W: Write>(
    cw: &mut Writer<W>,
    stats: &mut CustomerStats,
    meta: &Meta,
    header: &Header,
    data: &[u8],
) -> Result<(), RamdiskError> {
    cw.append(header, data)
        .map_err(|source| RamdiskError::Entry {
            index: meta.index,
            name: meta.name_lossy(),
            source,
        })?;
    stats.cpio_entries += 1;
    stats.archive_bytes = cw.position();
    Ok(())
}

/// Reads the numeric fields as Go's `archive/tar` reader would give them to linuxkit
/// (`parseNumeric`: octal, or base-256 with the high bit set; an all-blank field is 0), and
/// checks what Go's writer (linuxkit's temporary tar) and gocpio (8 hex digits) can hold.
/// PAX `uid`/`gid` records are already in the header (the tar crate applies them).
fn read_meta<R: Read>(
    index: u64,
    name: Vec<u8>,
    entry: &tar::Entry<'_, R>,
    pax_mtime: Option<i64>,
) -> Result<Meta, RamdiskError> {
    let header = entry.header();
    let old = header.as_old();
    let bad = |field: &str| RamdiskError::Tar {
        index,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {field} field of the header is not a number"),
        ),
    };
    let number = |field: &'static str, raw: &[u8]| go_numeric(raw).ok_or_else(|| bad(field));
    let range = |field: &'static str, value: i64, max: u64| {
        u32::try_from(value)
            .ok()
            .filter(|v| u64::from(*v) <= max)
            .ok_or_else(|| RamdiskError::OutOfRange {
                index,
                name: String::from_utf8_lossy(&name).into_owned(),
                field,
                value: i128::from(value),
            })
    };
    let mode = range("mode", number("mode", &old.mode)?, GO_TAR_OCTAL_MAX)?;
    let uid = range("uid", number("uid", &old.uid)?, u64::from(u32::MAX))?;
    let gid = range("gid", number("gid", &old.gid)?, u64::from(u32::MAX))?;
    let mtime = match pax_mtime {
        Some(v) => v,
        None => number("mtime", &old.mtime)?,
    };
    // Go reads device numbers from ustar and GNU headers, whatever the type, and initrd.go
    // copies them unconditionally.
    let dev_fields = match (header.as_ustar(), header.as_gnu()) {
        (Some(h), _) => Some((h.dev_major, h.dev_minor)),
        (None, Some(h)) => Some((h.dev_major, h.dev_minor)),
        (None, None) => None,
    };
    let rdev = match dev_fields {
        Some((major, minor)) => (
            range("devmajor", number("devmajor", &major)?, GO_TAR_OCTAL_MAX)?,
            range("devminor", number("devminor", &minor)?, GO_TAR_OCTAL_MAX)?,
        ),
        None => (0, 0),
    };
    Ok(Meta {
        index,
        name,
        perm: mode & 0o7777,
        uid,
        gid,
        mtime,
        rdev,
    })
}

/// Go's `parser.parseNumeric`: base-256 (two's complement) when the first byte has its high
/// bit set, else octal text with surrounding spaces and NULs ignored; `None` where Go fails.
fn go_numeric(raw: &[u8]) -> Option<i64> {
    if raw.first().is_some_and(|b| b & 0x80 != 0) {
        let inv = if raw[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &byte) in raw.iter().enumerate() {
            let mut c = byte ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    let trimmed = {
        let start = raw.iter().position(|&b| b != b' ' && b != 0);
        let end = raw.iter().rposition(|&b| b != b' ' && b != 0);
        match (start, end) {
            (Some(s), Some(e)) => &raw[s..=e],
            _ => return Some(0),
        }
    };
    // parseString: the text ends at the first NUL.
    let text = match trimmed.iter().position(|&b| b == 0) {
        Some(nul) => &trimmed[..nul],
        None => trimmed,
    };
    if text.is_empty() || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 8)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
}

/// Applies Go's `mergePAX` checks: returns the `mtime` record, refuses malformed numbers (Go's
/// reader fails on them) and sparse files (Go expands them; this reader cannot).
fn read_pax<R: Read>(
    index: u64,
    name: &[u8],
    entry: &mut tar::Entry<'_, R>,
) -> Result<Option<i64>, RamdiskError> {
    let tar_error = |source| RamdiskError::Tar { index, source };
    let bad = |key: &[u8], value: &[u8]| RamdiskError::Tar {
        index,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "malformed PAX record {}={}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
        ),
    };
    let Some(records) = entry.pax_extensions().map_err(tar_error)? else {
        return Ok(None);
    };
    let mut mtime = None;
    for record in records {
        let record = record.map_err(tar_error)?;
        let (key, value) = (record.key_bytes(), record.value_bytes());
        match key {
            b"mtime" => mtime = Some(parse_pax_time(value).ok_or_else(|| bad(key, value))?),
            b"atime" | b"ctime" => {
                parse_pax_time(value).ok_or_else(|| bad(key, value))?;
            }
            b"uid" | b"gid" => {
                let v = parse_go_int(value).ok_or_else(|| bad(key, value))?;
                if v < 0 {
                    return Err(RamdiskError::OutOfRange {
                        index,
                        name: String::from_utf8_lossy(name).into_owned(),
                        field: if key == b"uid" { "uid" } else { "gid" },
                        value: i128::from(v),
                    });
                }
            }
            b"size" if parse_go_int(value).is_none_or(|v| v < 0) => {
                return Err(bad(key, value));
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(RamdiskError::Unsupported {
                    index,
                    name: String::from_utf8_lossy(name).into_owned(),
                    reason: "PAX sparse file: not supported".into(),
                });
            }
            _ => {}
        }
    }
    Ok(mtime)
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, decimal digits, no spaces.
fn parse_go_int(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Go's `parsePAXTime` followed by `Time.Unix()`: whole seconds, rounded toward negative
/// infinity (`-1.5` is -2).
fn parse_pax_time(value: &[u8]) -> Option<i64> {
    let (secs, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &[][..]),
    };
    let whole = parse_go_int(secs)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Go keeps nine digits of the fraction; only "is it non-zero" matters for the floor.
    let nonzero_frac = frac.iter().take(9).any(|&b| b != b'0');
    if secs.first() == Some(&b'-') && nonzero_frac {
        whole.checked_sub(1)
    } else {
        Some(whole)
    }
}

/// Refuses paths that linuxkit would pass through but that do not name something inside the
/// rootfs: empty, absolute, or with a `..` component (the kernel's initramfs unpacker follows
/// them, so `rootfs/../init` would replace the bootstrap's init). `docker export` never
/// produces such names.
fn check_path(index: u64, path: &[u8], what: &'static str) -> Result<(), RamdiskError> {
    let reason = if path.is_empty() {
        Some(match what {
            "name" => "empty name",
            _ => "empty hard link target",
        })
    } else if path[0] == b'/' {
        Some(match what {
            "name" => "absolute name",
            _ => "absolute hard link target",
        })
    } else if path.split(|&b| b == b'/').any(|c| c == b"..") {
        Some(match what {
            "name" => "name with a '..' component",
            _ => "hard link target with a '..' component",
        })
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RamdiskError::UnsafePath {
            index,
            name: String::from_utf8_lossy(path).into_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// initrd.go `typeconv`, `tar.TypeLink` case: `filepath.Rel(filepath.Dir(name), linkname)`,
/// or `"/" + linkname` if Rel fails.
pub fn hard_link_target(name: &[u8], linkname: &[u8]) -> Vec<u8> {
    go_rel(&go_dir(name), linkname).unwrap_or_else(|| [b"/", linkname].concat())
}

/// Go's `path.Clean` (= `filepath.Clean` on Unix), on bytes.
pub fn go_clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        let at = |i: usize| path.get(i).copied();
        // A separator, or a `.` element: nothing to copy.
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || at(r + 1) == Some(b'/'))) {
            r += 1;
        } else if path[r] == b'.'
            && at(r + 1) == Some(b'.')
            && (r + 2 == n || at(r + 2) == Some(b'/'))
        {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Go's `filepath.Dir` on Unix: everything up to the last `/`, cleaned.
pub fn go_dir(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => go_clean(&path[..=i]),
        None => b".".to_vec(),
    }
}

/// Go's `filepath.Rel` on Unix; `None` where Go returns an error.
pub fn go_rel(basepath: &[u8], targpath: &[u8]) -> Option<Vec<u8>> {
    let base = go_clean(basepath);
    let targ = go_clean(targpath);
    if targ == base {
        return Some(b".".to_vec());
    }
    let base: &[u8] = if base == b"." { b"" } else { &base };
    let targ: &[u8] = &targ;
    let base_slashed = base.first() == Some(&b'/');
    let targ_slashed = targ.first() == Some(&b'/');
    if base_slashed != targ_slashed {
        return None;
    }
    let (bl, tl) = (base.len(), targ.len());
    let (mut b0, mut bi, mut t0, mut ti) = (0, 0, 0, 0);
    loop {
        while bi < bl && base[bi] != b'/' {
            bi += 1;
        }
        while ti < tl && targ[ti] != b'/' {
            ti += 1;
        }
        if targ[t0..ti] != base[b0..bi] {
            break;
        }
        if bi < bl {
            bi += 1;
        }
        if ti < tl {
            ti += 1;
        }
        b0 = bi;
        t0 = ti;
    }
    if &base[b0..bi] == b".." {
        return None;
    }
    if b0 != bl {
        let seps = base[b0..bl].iter().filter(|&&b| b == b'/').count();
        let mut out = b"..".to_vec();
        for _ in 0..seps {
            out.extend_from_slice(b"/..");
        }
        if t0 != tl {
            out.push(b'/');
            out.extend_from_slice(&targ[t0..]);
        }
        return Some(out);
    }
    Some(targ[t0..].to_vec())
}

/// Counts what reaches the output, so the stats can give the final size, trailer and
/// padding included.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through and remembers the first input error, so that a failure while copying
/// an entry can be blamed on the input (bad tar) or on the output (cpio/I/O).
struct TrackedReader<R> {
    inner: R,
    got: u64,
    failed: Option<io::Error>,
}

impl<R> TrackedReader<R> {
    fn new(inner: R) -> TrackedReader<R> {
        TrackedReader {
            inner,
            got: 0,
            failed: None,
        }
    }
}

impl<R: Read> Read for TrackedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.got += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_examples() {
        // From the Go documentation of path.Clean / filepath.Clean.
        for (input, want) in [
            ("a/c", "a/c"),
            ("a//c", "a/c"),
            ("a/c/.", "a/c"),
            ("a/c/b/..", "a/c"),
            ("/../a/c", "/a/c"),
            ("/../a/b/../././/c", "/a/c"),
            ("", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("a/../..", ".."),
            ("rootfs/", "rootfs"),
            ("/", "/"),
            ("./", "."),
        ] {
            assert_eq!(
                go_clean(input.as_bytes()),
                want.as_bytes(),
                "Clean({input:?})"
            );
        }
    }

    #[test]
    fn dir_matches_go() {
        for (input, want) in [
            ("rootfs/usr/bin/x", "rootfs/usr/bin"),
            ("x", "."),
            ("rootfs/x", "rootfs"),
            ("/x", "/"),
            ("a//b", "a"),
            ("a/b/", "a/b"),
        ] {
            assert_eq!(go_dir(input.as_bytes()), want.as_bytes(), "Dir({input:?})");
        }
    }

    #[test]
    fn rel_matches_go_examples() {
        // From the Go documentation of filepath.Rel, plus the cases hard links produce.
        for (base, targ, want) in [
            ("/a", "/a/b/c", Some("b/c")),
            ("/a", "/b/c", Some("../b/c")),
            ("/a", "./b/c", None),
            ("rootfs/usr/bin", "rootfs/usr/bin/perl", Some("perl")),
            ("rootfs/usr/bin", "rootfs/usr/lib/x", Some("../lib/x")),
            ("rootfs", "rootfs/bin/sh", Some("bin/sh")),
            ("rootfs/a/b/c", "rootfs/x", Some("../../../x")),
            ("rootfs/a", "rootfs/a", Some(".")),
            ("rootfs/a", "rootfs/a/", Some(".")),
            ("..", "a", None),
            (".", "a/b", Some("a/b")),
        ] {
            assert_eq!(
                go_rel(base.as_bytes(), targ.as_bytes()),
                want.map(|w| w.as_bytes().to_vec()),
                "Rel({base:?}, {targ:?})"
            );
        }
    }

    #[test]
    fn hard_link_target_falls_back_to_absolute() {
        assert_eq!(
            hard_link_target(b"rootfs/usr/bin/a", b"rootfs/usr/bin/b"),
            b"b"
        );
        assert_eq!(hard_link_target(b"../x/y", b"z"), b"/z");
    }

    #[test]
    fn pax_time_floors_like_go() {
        assert_eq!(parse_pax_time(b"1600000000"), Some(1_600_000_000));
        assert_eq!(parse_pax_time(b"1600000000.999"), Some(1_600_000_000));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-2));
        assert_eq!(parse_pax_time(b"-0.5"), Some(-1));
        assert_eq!(parse_pax_time(b"-1.000"), Some(-1));
        assert_eq!(parse_pax_time(b"+7"), Some(7));
        assert_eq!(parse_pax_time(b"1.2x"), None);
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(parse_pax_time(b" 1"), None);
        assert_eq!(parse_pax_time(b"1."), Some(1));
    }

    #[test]
    fn numeric_fields_parse_like_go() {
        assert_eq!(go_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(go_numeric(b" 644 \0\0\0"), Some(0o644));
        assert_eq!(go_numeric(b"\0\0\0\0\0\0\0\0"), Some(0), "blank field is 0");
        assert_eq!(go_numeric(b"        "), Some(0));
        assert_eq!(go_numeric(b"0000 644"), None);
        assert_eq!(go_numeric(b"00008\0"), None);
        assert_eq!(
            go_numeric(b"12\09"),
            Some(0o12),
            "text ends at the first NUL"
        );
        assert_eq!(go_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(go_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(
            go_numeric(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some(0xff_ffff_ffff_ffff)
        );
        assert_eq!(
            go_numeric(&[0x80, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None,
            "overflow"
        );
    }

    #[test]
    fn command_rule() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (cmd, ep, env) = (v(&["/bin/sh", "-c", "x y"]), v(&["/ep"]), v(&["A=1", "B="]));
        let c = Command::from_config(Some(&cmd), Some(&ep), Some(&env)).unwrap();
        assert_eq!(c.cmd, cmd, "Cmd wins over Entrypoint");
        assert_eq!(c.cmd_file_bytes(), b"/bin/sh\n-c\nx y\n");
        assert_eq!(c.env_file_bytes(), b"A=1\nB=\n");
        let c = Command::from_config(None, Some(&ep), None).unwrap();
        assert_eq!(
            (c.cmd_file_bytes(), c.env_file_bytes()),
            (b"/ep\n".to_vec(), vec![])
        );
        let c = Command::from_config(Some(&[]), Some(&ep), None).unwrap();
        assert_eq!(c.cmd_file_bytes(), b"", "an empty Cmd is still a Cmd");
        assert!(matches!(
            Command::from_config(None, None, Some(&env)),
            Err(RamdiskError::NoCommand)
        ));
    }

    #[test]
    fn constants() {
        assert_eq!(ETC_HOSTS.len(), 160);
        assert!(ETC_HOSTS.starts_with(
            b"127.0.0.1\x20\x20\x20\x20\x20\x20\x20localhost\n::1\x20\x20\x20\x20\x20localhost "
        ));
        assert!(
            TOUCH.windows(2).all(|w| w[0].key < w[1].key),
            "sorted like sort.Strings"
        );
    }
}
