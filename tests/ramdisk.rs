//! Specification of the two ramdisks nitro-cli 1.5.0 writes (through its bundled linuxkit), as
//! `eifctl::ramdisk` reproduces them. Each test builds a `docker export`-like tar by hand, runs
//! the conversion, reads the newc archive back and compares it with an entry list written out
//! here from the rules in `docs/nitro-cli-ramdisks.md`, so the expected lists are the spec.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Cursor, Read, Write};

use eifctl::cpio::{self, Header, Kind, Reader, Writer, WriterOptions};
use eifctl::ramdisk::{
    Command, CustomerStats, ETC_HOSTS, LINUXKIT_MTIME, RamdiskError, write_bootstrap,
    write_customer,
};
use tar::EntryType;

/// linuxkit's fixed mtime, 2017-04-18T16:30:00Z.
const M: u32 = LINUXKIT_MTIME;
/// mtime of the image's layer files in these fixtures.
const T: u32 = 1_600_000_000;
/// mtime Docker gives the entries it creates when the container is created (init layer).
const C: u32 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Building export tars
// ---------------------------------------------------------------------------------------------

/// Writes tar members header field by header field, the way Docker's exporter (Go's
/// `archive/tar`, ustar/PAX) lays them out: directory names end in `/`, and the mode field
/// carries the file-type bits as well (Docker's `fillGo18FileTypeBits`).
struct ExportTar {
    builder: tar::Builder<Vec<u8>>,
}

struct Member<'a> {
    name: &'a [u8],
    typeflag: u8,
    perm: u32,
    owner: (u64, u64),
    mtime: u64,
    link: &'a [u8],
    data: &'a [u8],
    rdev: (u32, u32),
}

impl Default for Member<'_> {
    fn default() -> Self {
        Member {
            name: b"",
            typeflag: b'0',
            perm: 0o644,
            owner: (0, 0),
            mtime: u64::from(T),
            link: b"",
            data: b"",
            rdev: (0, 0),
        }
    }
}

fn type_bits(typeflag: u8) -> u32 {
    match typeflag {
        b'0' | b'1' => 0o100000,
        b'2' => 0o120000,
        b'3' => 0o020000,
        b'4' => 0o060000,
        b'5' => 0o040000,
        b'6' => 0o010000,
        _ => 0,
    }
}

impl ExportTar {
    fn new() -> ExportTar {
        ExportTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(m: &Member) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        assert!(m.name.len() <= 100 && m.link.len() <= 100);
        h.as_old_mut().name[..m.name.len()].copy_from_slice(m.name);
        h.as_old_mut().linkname[..m.link.len()].copy_from_slice(m.link);
        h.as_old_mut().linkflag[0] = m.typeflag;
        h.set_mode(m.perm | type_bits(m.typeflag));
        h.set_uid(m.owner.0);
        h.set_gid(m.owner.1);
        h.set_mtime(m.mtime);
        h.set_size(m.data.len() as u64);
        h.set_device_major(m.rdev.0).unwrap();
        h.set_device_minor(m.rdev.1).unwrap();
        h.set_cksum();
        h
    }

    fn add(&mut self, m: Member) -> &mut Self {
        let h = Self::header(&m);
        self.builder.append(&h, m.data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, perm: u32, mtime: u32) -> &mut Self {
        assert!(name.ends_with('/'));
        self.add(Member {
            name: name.as_bytes(),
            typeflag: b'5',
            perm,
            mtime: mtime.into(),
            ..Member::default()
        })
    }

    fn file(&mut self, name: &str, perm: u32, mtime: u32, data: &[u8]) -> &mut Self {
        self.add(Member {
            name: name.as_bytes(),
            perm,
            mtime: mtime.into(),
            data,
            ..Member::default()
        })
    }

    fn symlink(&mut self, name: &str, target: &str, mtime: u32) -> &mut Self {
        self.add(Member {
            name: name.as_bytes(),
            typeflag: b'2',
            perm: 0o777,
            mtime: mtime.into(),
            link: target.as_bytes(),
            ..Member::default()
        })
    }

    /// A hard link as Docker writes it: the mode of the file it links to, size 0.
    fn hard_link(&mut self, name: &str, target: &str, perm: u32) -> &mut Self {
        self.add(Member {
            name: name.as_bytes(),
            typeflag: b'1',
            perm,
            link: target.as_bytes(),
            ..Member::default()
        })
    }

    /// A PAX extended header ('x') for the next member.
    fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        self.add(Member {
            name: b"PaxHeaders.0/next",
            typeflag: b'x',
            data: &data,
            ..Member::default()
        })
    }

    /// A file whose name needs a GNU long-name member (more than 100 bytes).
    fn long_file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o100644);
        h.set_mtime(u64::from(T));
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, name, data).unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        std::mem::take(self.builder.get_mut())
    }
}

// ---------------------------------------------------------------------------------------------
// Expected entries
// ---------------------------------------------------------------------------------------------

/// One newc entry as a reader sees it. `mode` includes the type bits, written in octal so the
/// spec reads like `ls -l`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct E {
    name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

fn e(name: &str, mode: u32, owner: (u32, u32), mtime: u32, data: &[u8]) -> E {
    E {
        name: name.into(),
        mode,
        uid: owner.0,
        gid: owner.1,
        mtime,
        // gocpio: 2 for directories, 1 for everything else, whatever the source said.
        nlink: if mode & 0o170000 == 0o040000 { 2 } else { 1 },
        rdev: (0, 0),
        data: data.to_vec(),
    }
}

const ROOT: (u32, u32) = (0, 0);

/// The `files:` part of nitro-cli's customer YAML, written after the image: the parent `rootfs`
/// again (linuxkit's filesystem() creates leading directories of `rootfs/dev`), the six
/// directories, then `cmd` and `env`; everything 0:0, mtime M.
fn files_section(cmd: &[u8], env: &[u8]) -> Vec<E> {
    vec![
        e("rootfs", 0o040755, ROOT, M, b""),
        e("rootfs/dev", 0o040755, ROOT, M, b""),
        e("rootfs/run", 0o040755, ROOT, M, b""),
        e("rootfs/sys", 0o040755, ROOT, M, b""),
        e("rootfs/var", 0o040755, ROOT, M, b""),
        e("rootfs/proc", 0o040755, ROOT, M, b""),
        e("rootfs/tmp", 0o040755, ROOT, M, b""),
        e("cmd", 0o100644, ROOT, M, cmd),
        e("env", 0o100644, ROOT, M, env),
    ]
}

/// What linuxkit appends after the image tree when the export lacks all nine "touch" paths:
/// sorted by key, names without trailing slash, 0:0, mtime M.
fn all_touch_paths_created() -> Vec<E> {
    vec![
        e("rootfs/dev", 0o040755, ROOT, M, b""),
        e("rootfs/dev/pts", 0o040755, ROOT, M, b""),
        e("rootfs/dev/shm", 0o040755, ROOT, M, b""),
        e("rootfs/etc", 0o040755, ROOT, M, b""),
        e("rootfs/etc/hosts", 0o100644, ROOT, M, ETC_HOSTS),
        e("rootfs/etc/mtab", 0o120755, ROOT, M, b"/proc/mounts"),
        e(
            "rootfs/etc/resolv.conf",
            0o120644,
            ROOT,
            M,
            b"/run/resolvconf/resolv.conf",
        ),
        e("rootfs/proc", 0o040755, ROOT, M, b""),
        e("rootfs/sys", 0o040755, ROOT, M, b""),
    ]
}

/// Reads an archive back, checking the encoding rules every linuxkit archive follows: inodes
/// 721, 722, … including the trailer, dev 3:1 everywhere, lowercase hex, 512-byte padding.
fn read_back(bytes: &[u8]) -> Vec<E> {
    assert_eq!(bytes.len() % 512, 0, "archive padded to 512");
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    let mut ino = 721;
    while let Some(mut entry) = reader.next_entry().unwrap() {
        let h = entry.header().clone();
        let raw = *entry.raw_header();
        assert!(
            !raw.iter().any(u8::is_ascii_uppercase),
            "lowercase hex in {raw:?}"
        );
        assert_eq!(&raw[..6], b"070701");
        assert_eq!(h.ino, ino, "inode of {}", h.name_lossy());
        assert_eq!((h.devmajor, h.devminor), (3, 1));
        assert_eq!(h.check, 0);
        ino += 1;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(E {
            name: h.name_lossy().into_owned(),
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            nlink: h.nlink,
            rdev: (h.rdevmajor, h.rdevminor),
            data,
        });
    }
    let end = reader.finish().unwrap();
    assert_eq!(end.trailer.ino, ino, "the trailer takes the next inode");
    assert_eq!((end.trailer.devmajor, end.trailer.devminor), (3, 1));
    assert!(end.trailing_all_zero);
    assert!(end.trailing_len < 512);
    assert_eq!(end.trailer_end + end.trailing_len, bytes.len() as u64);
    out
}

fn command() -> Command {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Command::from_config(
        Some(&v(&["/bin/sh", "-c", "exec server --port 5005"])),
        Some(&v(&["/ignored-entrypoint"])),
        Some(&v(&["PATH=/usr/bin:/bin", "GREETING=hello world"])),
    )
    .unwrap()
}

const CMD_FILE: &[u8] = b"/bin/sh\n-c\nexec server --port 5005\n";
const ENV_FILE: &[u8] = b"PATH=/usr/bin:/bin\nGREETING=hello world\n";

fn convert(export: &[u8]) -> (Vec<E>, CustomerStats, Vec<u8>) {
    let (bytes, stats) = write_customer(export, &command(), Vec::new()).unwrap();
    assert_eq!(stats.archive_bytes, bytes.len() as u64);
    (read_back(&bytes), stats, bytes)
}

fn assert_entries(actual: &[E], expected: &[E]) {
    for (i, (a, x)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a, x, "entry {i}");
    }
    assert_eq!(actual.len(), expected.len(), "entry count");
}

// ---------------------------------------------------------------------------------------------
// Customer ramdisk
// ---------------------------------------------------------------------------------------------

/// A realistic export: layer files with their own metadata, Docker's init-layer entries
/// (`.dockerenv`, `dev/console`, `dev/pts/`, `dev/shm/`, `etc/hostname`, `etc/hosts`,
/// `etc/mtab`, `etc/resolv.conf`, `proc/`, `sys/`, stamped with the container's creation time),
/// hard links (one to a setuid file), a device, a FIFO, odd modes/owners/mtimes, a long name
/// and a PAX mtime.
#[test]
fn docker_export_becomes_linuxkit_customer_ramdisk() {
    let long_name = format!("usr/share/{}", "n".repeat(120));
    let mut t = ExportTar::new();
    t.file(".dockerenv", 0o755, C, b"")
        .dir("bin/", 0o755, T)
        .pax(&[("mtime", "1650000000.9"), ("atime", "1.5")])
        .file("bin/busybox", 0o755, T, b"BUSYBOX")
        .symlink("bin/sh", "busybox", T)
        .file("bin/su", 0o4755, T, b"su!")
        .dir("dev/", 0o755, C)
        .file("dev/console", 0o755, C, b"")
        .add(Member {
            name: b"dev/null",
            typeflag: b'3',
            perm: 0o666,
            rdev: (1, 3),
            ..Member::default()
        })
        .dir("dev/pts/", 0o755, C)
        .dir("dev/shm/", 0o755, C)
        .add(Member {
            name: b"empty/",
            typeflag: b'5',
            perm: 0o700,
            owner: (1000, 1000),
            mtime: 1,
            ..Member::default()
        })
        .dir("etc/", 0o755, C)
        .file("etc/hostname", 0o644, C, b"4126a0b299d3\n")
        .file("etc/hosts", 0o644, C, b"10.0.0.1 somewhere\n")
        .symlink("etc/mtab", "/proc/mounts", C)
        .file("etc/resolv.conf", 0o644, C, b"nameserver 9.9.9.9\n")
        .dir("home/", 0o755, T)
        .add(Member {
            name: b"home/odd/",
            typeflag: b'5',
            perm: 0o2750,
            owner: (1234, 5678),
            mtime: u64::from(u32::MAX),
            ..Member::default()
        })
        .add(Member {
            name: b"home/odd/file",
            perm: 0o640,
            owner: (1234, 5678),
            mtime: 0,
            data: b"odd",
            ..Member::default()
        })
        .dir("lib/", 0o755, T)
        .dir("lib/x/", 0o755, T)
        .dir("lib/x/y/", 0o755, T)
        .file("lib/x/y/libz.so", 0o644, T, b"ZZ")
        .dir("proc/", 0o755, C)
        .dir("sbin/", 0o755, T)
        .hard_link("sbin/su", "bin/su", 0o4755)
        .dir("sys/", 0o755, C)
        .dir("tmp/", 0o1777, T)
        .dir("usr/", 0o755, T)
        .dir("usr/lib/", 0o755, T)
        .hard_link("usr/lib/libz.so", "lib/x/y/libz.so", 0o644)
        .dir("usr/share/", 0o755, T)
        .long_file(&long_name, b"long")
        .dir("var/", 0o755, T)
        .add(Member {
            name: b"var/fifo",
            typeflag: b'6',
            perm: 0o600,
            ..Member::default()
        });
    let export = t.finish();

    let mut expected = vec![
        // tarPrefix("rootfs/"): the prefix directory, before anything from the image.
        e("rootfs", 0o040755, ROOT, M, b""),
        // .dockerenv: excluded.
        e("rootfs/bin/", 0o040755, ROOT, T, b""),
        // The PAX mtime record wins over the header, whole seconds.
        e(
            "rootfs/bin/busybox",
            0o100755,
            ROOT,
            1_650_000_000,
            b"BUSYBOX",
        ),
        e("rootfs/bin/sh", 0o120777, ROOT, T, b"busybox"),
        e("rootfs/bin/su", 0o104755, ROOT, T, b"su!"),
        // Touched: kept as exported (trailing slash included), mtime forced.
        e("rootfs/dev/", 0o040755, ROOT, M, b""),
        // dev/console: excluded.
        E {
            rdev: (1, 3),
            ..e("rootfs/dev/null", 0o020666, ROOT, T, b"")
        },
        // "dev/pts" is on the exclude list, but Docker names the directory "dev/pts/", which
        // only the touch list matches.
        e("rootfs/dev/pts/", 0o040755, ROOT, M, b""),
        e("rootfs/dev/shm/", 0o040755, ROOT, M, b""),
        e("rootfs/empty/", 0o040700, (1000, 1000), 1, b""),
        e("rootfs/etc/", 0o040755, ROOT, M, b""),
        // etc/hostname: excluded. etc/hosts: linuxkit's content, the image's mode and owner.
        e("rootfs/etc/hosts", 0o100644, ROOT, M, ETC_HOSTS),
        e("rootfs/etc/mtab", 0o120777, ROOT, M, b"/proc/mounts"),
        // resolv.conf becomes a symlink keeping the file's permission bits.
        e(
            "rootfs/etc/resolv.conf",
            0o120644,
            ROOT,
            M,
            b"/run/resolvconf/resolv.conf",
        ),
        e("rootfs/home/", 0o040755, ROOT, T, b""),
        e("rootfs/home/odd/", 0o042750, (1234, 5678), u32::MAX, b""),
        e("rootfs/home/odd/file", 0o100640, (1234, 5678), 0, b"odd"),
        e("rootfs/lib/", 0o040755, ROOT, T, b""),
        e("rootfs/lib/x/", 0o040755, ROOT, T, b""),
        e("rootfs/lib/x/y/", 0o040755, ROOT, T, b""),
        e("rootfs/lib/x/y/libz.so", 0o100644, ROOT, T, b"ZZ"),
        e("rootfs/proc/", 0o040755, ROOT, M, b""),
        e("rootfs/sbin/", 0o040755, ROOT, T, b""),
        // Hard link -> symlink relative to the link's directory, setuid bit kept.
        e("rootfs/sbin/su", 0o124755, ROOT, T, b"../bin/su"),
        e("rootfs/sys/", 0o040755, ROOT, M, b""),
        e("rootfs/tmp/", 0o041777, ROOT, T, b""),
        e("rootfs/usr/", 0o040755, ROOT, T, b""),
        e("rootfs/usr/lib/", 0o040755, ROOT, T, b""),
        e(
            "rootfs/usr/lib/libz.so",
            0o120644,
            ROOT,
            T,
            b"../../lib/x/y/libz.so",
        ),
        e("rootfs/usr/share/", 0o040755, ROOT, T, b""),
        e(&format!("rootfs/{long_name}"), 0o100644, ROOT, T, b"long"),
        e("rootfs/var/", 0o040755, ROOT, T, b""),
        e("rootfs/var/fifo", 0o010600, ROOT, T, b""),
        // All nine touch paths were in the export, so nothing is created here.
    ];
    expected.extend(files_section(CMD_FILE, ENV_FILE));

    let (actual, stats, _) = convert(&export);
    assert_entries(&actual, &expected);
    assert_eq!(stats.tar_entries, 35);
    assert_eq!(stats.excluded, 3);
    assert_eq!(stats.replaced, 2);
    assert_eq!(stats.touched, 7);
    assert_eq!(stats.created, 0);
    assert_eq!(stats.hard_links, 2);
    assert_eq!(stats.cpio_entries, expected.len() as u64);
    assert_eq!(stats.file_bytes, 7 + 3 + 3 + 2 + 4);
}

/// An export without Docker's init-layer entries: linuxkit creates the nine touch paths after
/// the image tree, in sorted order, without trailing slashes.
#[test]
fn missing_touch_paths_are_created_after_the_tree() {
    let export = ExportTar::new()
        .dir("app/", 0o755, T)
        .file("app/server", 0o755, T, b"\x7fELF")
        .finish();
    let mut expected = vec![
        e("rootfs", 0o040755, ROOT, M, b""),
        e("rootfs/app/", 0o040755, ROOT, T, b""),
        e("rootfs/app/server", 0o100755, ROOT, T, b"\x7fELF"),
    ];
    expected.extend(all_touch_paths_created());
    expected.extend(files_section(CMD_FILE, ENV_FILE));
    let (actual, stats, _) = convert(&export);
    assert_entries(&actual, &expected);
    assert_eq!(stats.created, 9);
}

/// A path only matches the touch list spelled exactly as the key: `dev` without the slash is
/// an ordinary entry, and `dev/` is then created again at the end.
#[test]
fn touch_keys_match_exact_names() {
    let export = ExportTar::new()
        .add(Member {
            name: b"dev",
            typeflag: b'5',
            perm: 0o755,
            ..Member::default()
        })
        .finish();
    let mut expected = vec![
        e("rootfs", 0o040755, ROOT, M, b""),
        e("rootfs/dev", 0o040755, ROOT, T, b""),
    ];
    expected.extend(all_touch_paths_created());
    expected.extend(files_section(CMD_FILE, ENV_FILE));
    assert_entries(&convert(&export).0, &expected);
}

/// An empty export (only the end-of-archive blocks), and a zero-byte stream, which Go's and
/// this tar reader both take as an archive with no members.
#[test]
fn empty_exports() {
    let mut expected = vec![e("rootfs", 0o040755, ROOT, M, b"")];
    expected.extend(all_touch_paths_created());
    expected.extend(files_section(CMD_FILE, ENV_FILE));
    assert_entries(&convert(&ExportTar::new().finish()).0, &expected);
    assert_entries(&convert(b"").0, &expected);
}

/// Legacy `\0` type: a directory when the name ends in `/` (Go's reader), else a file.
#[test]
fn legacy_regular_type() {
    let export = ExportTar::new()
        .add(Member {
            name: b"old/",
            typeflag: b'\0',
            perm: 0o755,
            ..Member::default()
        })
        .add(Member {
            name: b"old/f",
            typeflag: b'\0',
            data: b"v7",
            ..Member::default()
        })
        .finish();
    let actual = convert(&export).0;
    assert_eq!(actual[1], e("rootfs/old/", 0o040755, ROOT, T, b""));
    assert_eq!(actual[2], e("rootfs/old/f", 0o100644, ROOT, T, b"v7"));
}

/// An ENTRYPOINT-only image with no Env: the entrypoint is the cmd file, env is empty.
#[test]
fn entrypoint_only_image() {
    let command = Command::from_config(None, Some(&["/app".to_string(), "-v".into()]), None)
        .expect("an Entrypoint is enough");
    let (bytes, _) = write_customer(&ExportTar::new().finish()[..], &command, Vec::new()).unwrap();
    let entries = read_back(&bytes);
    let n = entries.len();
    assert_eq!(entries[n - 2], e("cmd", 0o100644, ROOT, M, b"/app\n-v\n"));
    assert_eq!(entries[n - 1], e("env", 0o100644, ROOT, M, b""));
}

/// Byte level: the first header, spelled out, and the end of the archive.
#[test]
fn customer_bytes_start_and_end() {
    let (_, _, bytes) = convert(&ExportTar::new().finish());
    // rootfs: ino 721, mode 040755, 0:0, nlink 2, mtime 0x58f63f08, size 0, dev 3:1, rdev 0,
    // namesize 7, check 0; then "rootfs\0" and 1 byte of padding (110 + 7 = 117 -> 120).
    let first = concat!(
        "070701", "000002d1", "000041ed", "00000000", "00000000", "00000002", "58f63f08",
        "00000000", "00000003", "00000001", "00000000", "00000000", "00000007", "00000000",
    );
    assert_eq!(&bytes[..110], first.as_bytes());
    assert_eq!(&bytes[110..120], b"rootfs\0\0\0\0");
    let trailer_at = find(&bytes, b"TRAILER!!!") - 110;
    // 1 + 9 + 9 entries before it: inode 721 + 19 = 0x2e4.
    let trailer = concat!(
        "070701", "000002e4", "00000000", "00000000", "00000000", "00000001", "00000000",
        "00000000", "00000003", "00000001", "00000000", "00000000", "0000000b", "00000000",
    );
    assert_eq!(&bytes[trailer_at..trailer_at + 110], trailer.as_bytes());
    assert!(bytes[trailer_at + 121..].iter().all(|&b| b == 0));
    assert_eq!(bytes.len() % 512, 0);
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Bootstrap ramdisk
// ---------------------------------------------------------------------------------------------

/// One newc header with the fields linuxkit varies; the rest as gocpio writes them (uid/gid 0,
/// dev 3:1, rdev 0, check 0), then the name, NUL and padding to 4.
fn newc(ino: u32, mode: u32, nlink: u32, filesize: u32, name: &str, offset: usize) -> Vec<u8> {
    let mut v = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{M:08x}{filesize:08x}{:08x}{:08x}\
         {:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        3,
        1,
        0,
        0,
        name.len() + 1,
        0
    )
    .into_bytes();
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    while !(offset + v.len()).is_multiple_of(4) {
        v.push(0);
    }
    v
}

#[test]
fn bootstrap_is_dev_init_nsm() {
    let dir = tempfile::tempdir().unwrap();
    let init_data = b"#!init binary\x00\x01\x02".repeat(3); // 48 bytes
    let nsm_data = b"\x7fELF nsm.ko".to_vec(); // 11 bytes
    let init = dir.path().join("init");
    let nsm = dir.path().join("nsm.ko");
    std::fs::write(&init, &init_data).unwrap();
    std::fs::write(&nsm, &nsm_data).unwrap();

    let actual = write_bootstrap(Vec::new(), &init, &nsm).unwrap();

    let mut x = Vec::new();
    // dev: directory 0755, nlink 2; 110 + 4 = 114 -> padded to 116.
    x.extend(newc(721, 0o040755, 2, 0, "dev", 0));
    assert_eq!(x.len(), 116);
    // init: file 0755; 116 + 110 + 5 = 231 -> 232, then 48 data bytes -> 280.
    x.extend(newc(722, 0o100755, 1, 48, "init", x.len()));
    x.extend_from_slice(&init_data);
    assert_eq!(x.len(), 280);
    // nsm.ko: 280 + 110 + 7 = 397 -> 400, 11 data bytes -> 411, padded to 412.
    x.extend(newc(723, 0o100755, 1, 11, "nsm.ko", x.len()));
    x.extend_from_slice(&nsm_data);
    x.push(0);
    assert_eq!(x.len(), 412);
    // Trailer: inode 724, mode 0, nlink 1, mtime 0; 412 + 110 + 11 = 533 -> 536.
    let mut trailer = newc(724, 0, 1, 0, "TRAILER!!!", x.len());
    trailer[46..54].copy_from_slice(b"00000000"); // the trailer's mtime is 0
    x.extend(trailer);
    assert_eq!(x.len(), 536);
    x.resize(1024, 0);

    assert_eq!(actual, x);
    let entries = read_back(&actual);
    assert_eq!(
        entries,
        vec![
            e("dev", 0o040755, ROOT, M, b""),
            e("init", 0o100755, ROOT, M, &init_data),
            e("nsm.ko", 0o100755, ROOT, M, &nsm_data),
        ]
    );
}

#[test]
fn bootstrap_reports_unreadable_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let nsm = dir.path().join("nsm.ko");
    std::fs::write(&nsm, b"x").unwrap();
    let missing = dir.path().join("no-init");
    match write_bootstrap(Vec::new(), &missing, &nsm) {
        Err(RamdiskError::Source { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected a Source error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn convert_err(export: &[u8]) -> RamdiskError {
    match write_customer(export, &command(), Vec::new()) {
        Ok(_) => panic!("conversion should fail"),
        Err(e) => e,
    }
}

fn two_files() -> Vec<u8> {
    ExportTar::new()
        .file("a", 0o644, T, &[b'a'; 1000])
        .file("b", 0o644, T, b"b")
        .finish()
}

#[test]
fn truncated_tar_names_the_entry() {
    let tar = two_files();
    // Inside the data of entry 0.
    match convert_err(&tar[..512 + 300]) {
        RamdiskError::Tar { index: 0, source } => {
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof, "{source}")
        }
        other => panic!("{other:?}"),
    }
    // Inside the header of entry 1 (entry 0 = 512 + 1024 bytes).
    assert!(matches!(
        convert_err(&tar[..1536 + 100]),
        RamdiskError::Tar { index: 1, .. }
    ));
    // A stream that stops cleanly between members is accepted, as Go's reader accepts it.
    assert!(write_customer(&tar[..1536], &command(), Vec::new()).is_ok());
}

#[test]
fn garbage_is_a_tar_error() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 13) as u8 | 1).collect();
    assert!(matches!(
        convert_err(&garbage),
        RamdiskError::Tar { index: 0, .. }
    ));
    let mut tar = two_files();
    tar.truncate(1536);
    tar.extend_from_slice(&garbage);
    assert!(matches!(
        convert_err(&tar),
        RamdiskError::Tar { index: 1, .. }
    ));
}

#[test]
fn escaping_paths_are_refused() {
    for name in [&b"/etc/passwd"[..], b"../init", b"a/../../init", b"x/.."] {
        let tar = ExportTar::new()
            .file("ok", 0o644, T, b"")
            .add(Member {
                name,
                ..Member::default()
            })
            .finish();
        match convert_err(&tar) {
            RamdiskError::UnsafePath { index: 1, .. } => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(name)),
        }
    }
    let tar = ExportTar::new()
        .hard_link("x", "../../init", 0o755)
        .finish();
    assert!(matches!(
        convert_err(&tar),
        RamdiskError::UnsafePath { index: 0, .. }
    ));
    let tar = ExportTar::new().hard_link("x", "/bin/sh", 0o755).finish();
    assert!(matches!(
        convert_err(&tar),
        RamdiskError::UnsafePath { index: 0, .. }
    ));
    // A symlink may point anywhere: its target is data, not an archive path.
    let tar = ExportTar::new().symlink("up", "../../..", T).finish();
    assert_eq!(
        convert(&tar).0[1],
        e("rootfs/up", 0o120777, ROOT, T, b"../../..")
    );
}

#[test]
fn entry_types_cpio_cannot_hold() {
    // Contiguous file ('7'), GNU volume label ('V'), PAX global header ('g').
    for typeflag in [b'7', b'V', b'g'] {
        let tar = ExportTar::new()
            .add(Member {
                name: b"thing",
                typeflag,
                ..Member::default()
            })
            .finish();
        assert!(
            matches!(
                convert_err(&tar),
                RamdiskError::Unsupported { index: 0, .. }
            ),
            "type {}",
            char::from(typeflag)
        );
    }
    // linuxkit drops excluded names before looking at their type.
    let tar = ExportTar::new()
        .add(Member {
            name: b".dockerenv",
            typeflag: b'7',
            ..Member::default()
        })
        .finish();
    assert_eq!(convert(&tar).1.excluded, 1);
    // ...and replaces etc/resolv.conf by a symlink whatever its type was.
    let tar = ExportTar::new()
        .add(Member {
            name: b"etc/resolv.conf",
            typeflag: b'7',
            data: b"nameserver 1.1.1.1\n",
            ..Member::default()
        })
        .finish();
    assert_eq!(
        convert(&tar).0[1],
        e(
            "rootfs/etc/resolv.conf",
            0o120644,
            ROOT,
            M,
            b"/run/resolvconf/resolv.conf"
        )
    );
}

#[test]
fn headers_linuxkit_cannot_carry() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "directory with data",
            ExportTar::new()
                .add(Member {
                    name: b"d/",
                    typeflag: b'5',
                    data: b"oops",
                    ..Member::default()
                })
                .finish(),
        ),
        (
            "regular file named like a directory",
            ExportTar::new().file("f/", 0o644, T, b"x").finish(),
        ),
        (
            "etc/hosts as a symlink",
            ExportTar::new().symlink("etc/hosts", "/x", T).finish(),
        ),
        (
            "PAX sparse file",
            ExportTar::new()
                .pax(&[("GNU.sparse.major", "1")])
                .file("s", 0o644, T, b"")
                .finish(),
        ),
    ];
    for (what, tar) in cases {
        assert!(
            matches!(convert_err(&tar), RamdiskError::Unsupported { .. }),
            "{what}"
        );
    }
}

#[test]
fn numbers_that_do_not_fit_newc() {
    let huge_mtime = ExportTar::new()
        .pax(&[("mtime", "5000000000")])
        .file("late", 0o644, T, b"")
        .finish();
    assert!(matches!(
        convert_err(&huge_mtime),
        RamdiskError::OutOfRange { field: "mtime", .. }
    ));
    let negative_mtime = ExportTar::new()
        .pax(&[("mtime", "-0.5")])
        .file("early", 0o644, T, b"")
        .finish();
    assert!(matches!(
        convert_err(&negative_mtime),
        RamdiskError::OutOfRange {
            field: "mtime",
            value: -1,
            ..
        }
    ));
    let huge_uid = ExportTar::new()
        .pax(&[("uid", "4294967296")])
        .file("f", 0o644, T, b"")
        .finish();
    assert!(matches!(
        convert_err(&huge_uid),
        RamdiskError::OutOfRange { field: "uid", .. }
    ));
    let bad_pax = ExportTar::new()
        .pax(&[("mtime", "soon")])
        .file("f", 0o644, T, b"")
        .finish();
    assert!(matches!(
        convert_err(&bad_pax),
        RamdiskError::Tar { index: 0, .. }
    ));
    // A touched path gets linuxkit's mtime, so its own does not have to fit.
    let touched = ExportTar::new()
        .pax(&[("mtime", "5000000000")])
        .dir("proc/", 0o755, T)
        .finish();
    assert_eq!(
        convert(&touched).0[1],
        e("rootfs/proc/", 0o040755, ROOT, M, b"")
    );
}

/// Read errors of the input are tar errors of the entry being copied; write errors of the
/// output are cpio errors.
#[test]
fn io_errors_are_attributed() {
    struct FailAfter<R>(R, usize);
    impl<R: Read> Read for FailAfter<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let want = buf.len().min(self.1);
            let n = self.0.read(&mut buf[..want])?;
            self.1 -= n;
            Ok(n)
        }
    }
    let tar = two_files();
    match write_customer(FailAfter(&tar[..], 700), &command(), Vec::new()) {
        Err(RamdiskError::Tar { index: 0, source }) => {
            assert!(source.to_string().contains("disk on fire"), "{source}")
        }
        other => panic!("{other:?}"),
    }

    #[derive(Debug)]
    struct FullDisk(usize);
    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    match write_customer(&tar[..], &command(), FullDisk(300)) {
        Err(RamdiskError::Entry {
            source: cpio::Error::Io { source, .. },
            ..
        }) => assert_eq!(source.kind(), io::ErrorKind::StorageFull),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

const BIG: u64 = 256 << 20;

/// Deterministic file content made on the fly: a 4099-byte block repeated.
struct Pattern {
    block: Vec<u8>,
    pos: u64,
    len: u64,
}

impl Pattern {
    fn new(len: u64) -> Pattern {
        Pattern {
            block: (0..4099u32).map(|i| (i * 31 + i / 7) as u8).collect(),
            pos: 0,
            len,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.len - self.pos) as usize;
        let at = (self.pos % self.block.len() as u64) as usize;
        let n = buf.len().min(left).min(self.block.len() - at);
        buf[..n].copy_from_slice(&self.block[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// A tar with one 256 MiB file, produced lazily: header, generated data, padding, end blocks.
fn lazy_export() -> impl Read {
    let mut header = ExportTar::header(&Member {
        name: b"big",
        ..Member::default()
    });
    header.set_size(BIG);
    header.set_cksum();
    Cursor::new(header.as_bytes().to_vec())
        .chain(Pattern::new(BIG))
        .chain(io::repeat(0).take(1024))
}

/// A `Write` that only hashes and counts.
struct HashSink {
    hasher: crc32fast::Hasher,
    len: u64,
}

impl HashSink {
    fn new() -> HashSink {
        HashSink {
            hasher: crc32fast::Hasher::new(),
            len: 0,
        }
    }
    fn sum(self) -> (u64, u32) {
        (self.len, self.hasher.finalize())
    }
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn streams_a_256_mib_file_without_buffering() {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let (sink, stats) = write_customer(lazy_export(), &command(), HashSink::new()).unwrap();
    let peak = PEAK.with(Cell::get) - before;
    assert!(
        peak < 1 << 20,
        "peak heap {peak} bytes for a {BIG}-byte file"
    );
    assert_eq!(stats.file_bytes, BIG);

    // The same archive written entry by entry with the cpio writer, from the rules above.
    let mut w = Writer::new(HashSink::new(), WriterOptions::linuxkit());
    let raw = |name: &str, mode: u32, mtime: u32, filesize: u32| Header {
        mtime,
        filesize,
        ..Header::new(name, Kind::from_mode(mode), mode & 0o7777)
    };
    w.append(&raw("rootfs", 0o040755, M, 0), io::empty())
        .unwrap();
    w.append(
        &raw("rootfs/big", 0o100644, T, BIG as u32),
        Pattern::new(BIG),
    )
    .unwrap();
    for x in all_touch_paths_created()
        .into_iter()
        .chain(files_section(CMD_FILE, ENV_FILE))
    {
        w.append(
            &raw(&x.name, x.mode, x.mtime, x.data.len() as u32),
            &x.data[..],
        )
        .unwrap();
    }
    assert_eq!(sink.sum(), w.finish().unwrap().sum());
}

/// Counts the live heap bytes of each thread, so a test can show that a stream is not buffered.
struct CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}
