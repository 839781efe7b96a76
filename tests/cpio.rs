//! Specification of the newc reader and writer: linuxkit byte-exactness, round trips, streaming,
//! malformed input, and interoperability with GNU cpio.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Cursor, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use eifctl::cpio::{
    End, Error, Format, HEADER_LEN, Header, Kind, MAX_NAME_SIZE, Part, Reader, Writer,
    WriterOptions, linuxkit_nlink,
};

const MTIME: u32 = 1_600_000_000; // 0x5f5e1000

/// The archive gocpio writes for: dir `etc`, file `etc/hello` ("hi\n"), symlink `bin` ->
/// `usr/bin`, char device `dev/console` (5,1); spelled out field by field.
#[rustfmt::skip]
fn linuxkit_expected_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        // magic   ino          mode         uid          gid          nlink        mtime
        //         filesize     devmajor     devminor     rdevmajor    rdevminor    namesize     check
        //
        // offset 0: directory, first inode 721 = 0x2d1, mode 040755, nlink 2, dev 3:1
        b"070701", b"000002d1", b"000041ed", b"00000000", b"00000000", b"00000002", b"5f5e1000",
                   b"00000000", b"00000003", b"00000001", b"00000000", b"00000000", b"00000004", b"00000000",
        b"etc\0", b"\0\0",
        // offset 116: file, mode 0100644, uid/gid 1000, nlink 1, 3 bytes, name of 10 bytes
        b"070701", b"000002d2", b"000081a4", b"000003e8", b"000003e8", b"00000001", b"5f5e1000",
                   b"00000003", b"00000003", b"00000001", b"00000000", b"00000000", b"0000000a", b"00000000",
        b"etc/hello\0", b"hi\n", b"\0",
        // offset 240: symlink, mode 0120777, data = target
        b"070701", b"000002d3", b"0000a1ff", b"00000000", b"00000000", b"00000001", b"5f5e1000",
                   b"00000007", b"00000003", b"00000001", b"00000000", b"00000000", b"00000004", b"00000000",
        b"bin\0", b"\0\0", b"usr/bin", b"\0",
        // offset 364: char device, mode 020600, rdev 5:1, mtime 0
        b"070701", b"000002d4", b"00002180", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000000", b"00000003", b"00000001", b"00000005", b"00000001", b"0000000c", b"00000000",
        b"dev/console\0", b"\0\0",
        // offset 488: trailer; the inode counter goes on, nlink 1, dev 3:1, the rest 0
        b"070701", b"000002d5", b"00000000", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000000", b"00000003", b"00000001", b"00000000", b"00000000", b"0000000b", b"00000000",
        b"TRAILER!!!\0", b"\0\0\0",
    ];
    let mut v = parts.concat();
    assert_eq!(v.len(), 612);
    // then zeros up to the next multiple of 512
    v.resize(1024, 0);
    v
}

/// Entry layout of `linuxkit_expected_bytes`: (offset, namesize, filesize).
const LINUXKIT_LAYOUT: [(u64, u64, u64); 5] = [
    (0, 4, 0),
    (116, 10, 3),
    (240, 4, 7),
    (364, 12, 0),
    (488, 11, 0),
];
const LINUXKIT_TRAILER_END: u64 = 612;

fn write_linuxkit_sample(options: WriterOptions) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), options);
    w.append_dir("etc", 0o755, 0, 0, MTIME).unwrap();
    w.append_file_bytes("etc/hello", b"hi\n", 0o644, 1000, 1000, MTIME)
        .unwrap();
    w.append_symlink("bin", "usr/bin", 0o777, 0, 0, MTIME)
        .unwrap();
    // Caller-supplied ino, nlink, dev and check are all replaced by the linuxkit rules.
    let console = Header {
        ino: 999,
        nlink: 7,
        devmajor: 8,
        devminor: 9,
        rdevmajor: 5,
        rdevminor: 1,
        check: 0xdead,
        ..Header::new("dev/console", Kind::CharDev, 0o600)
    };
    w.append(&console, io::empty()).unwrap();
    w.finish().unwrap()
}

/// Entries with their data.
type Entries = Vec<(Header, Vec<u8>)>;

/// Reads a whole archive; a data read error is unwrapped back into the reader's `Error`.
fn read_all(bytes: &[u8]) -> Result<(Entries, End), Error> {
    let mut reader = Reader::new(bytes);
    let mut entries = Vec::new();
    while let Some(mut entry) = reader.next_entry()? {
        let mut data = Vec::new();
        if let Err(e) = entry.read_to_end(&mut data) {
            let inner = e.into_inner().expect("Entry errors wrap a cpio::Error");
            return Err(*inner.downcast::<Error>().expect("a cpio::Error"));
        }
        entries.push((entry.header().clone(), data));
    }
    Ok((entries, reader.finish()?))
}

fn err_of(bytes: &[u8]) -> Error {
    match read_all(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Deterministic PRNG (splitmix64) so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Byte-exact encoding
// ---------------------------------------------------------------------------------------------

#[test]
fn linuxkit_preset_writes_exactly_what_gocpio_writes() {
    let written = write_linuxkit_sample(WriterOptions::linuxkit());
    let expected = linuxkit_expected_bytes();
    assert_eq!(
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(&expected),
        "writer output differs from the hand-built gocpio bytes"
    );
    assert_eq!(written, expected);
}

#[test]
fn linuxkit_preset_is_inode_721_dev_3_1_nlink_by_kind_and_512_alignment() {
    assert_eq!(
        WriterOptions::linuxkit(),
        WriterOptions {
            first_inode: Some(721),
            dev: Some((3, 1)),
            linuxkit_nlink: true,
            archive_alignment: 512,
        }
    );
}

#[test]
fn writer_emits_lowercase_hex_like_gocpio() {
    let written = write_linuxkit_sample(WriterOptions::linuxkit());
    let header = &written[..HEADER_LEN];
    assert!(header.windows(8).any(|w| w == b"000041ed"));
    assert!(!header.iter().any(u8::is_ascii_uppercase));
}

#[test]
#[rustfmt::skip]
fn default_options_keep_caller_fields_and_do_not_pad_the_archive() {
    let header = Header {
        name: b"a".to_vec(),
        ino: 0x1234_abcd,
        mode: 0o100600,
        uid: 0xffff_ffff,
        gid: 7,
        nlink: 3,
        mtime: 0xdead_beef,
        filesize: 5,
        devmajor: 0xfd,
        devminor: 0,
        rdevmajor: 0,
        rdevminor: 0,
        check: 0,
    };
    let mut w = Writer::new(Vec::new(), WriterOptions::default());
    w.append(&header, &b"hello"[..]).unwrap();
    let written = w.finish().unwrap();

    let expected: &[&[u8]] = &[
        b"070701", b"1234abcd", b"00008180", b"ffffffff", b"00000007", b"00000003", b"deadbeef",
                   b"00000005", b"000000fd", b"00000000", b"00000000", b"00000000", b"00000002", b"00000000",
        b"a\0", b"hello", b"\0\0\0",
        // trailer without an inode counter or dev override: ino 0, dev 0:0, nlink 1
        b"070701", b"00000000", b"00000000", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000000", b"00000000", b"00000000", b"00000000", b"00000000", b"0000000b", b"00000000",
        b"TRAILER!!!\0", b"\0\0\0",
    ];
    assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected.concat()));
}

#[test]
fn archive_alignment_zero_or_one_means_no_padding() {
    for alignment in [0, 1] {
        let options = WriterOptions {
            archive_alignment: alignment,
            ..WriterOptions::linuxkit()
        };
        assert_eq!(write_linuxkit_sample(options).len(), 612);
    }
}

#[test]
fn archive_alignment_pads_with_zeros_to_the_next_multiple_only() {
    for (alignment, len) in [(4, 612), (512, 1024), (612, 612), (1000, 1000), (100, 700)] {
        let options = WriterOptions {
            archive_alignment: alignment,
            ..WriterOptions::linuxkit()
        };
        let written = write_linuxkit_sample(options);
        assert_eq!(written.len(), len, "alignment {alignment}");
        assert!(written[612..].iter().all(|&b| b == 0));
    }
}

#[test]
fn position_counts_every_byte_written_including_padding() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    assert_eq!(w.position(), 0);
    w.append_dir("etc", 0o755, 0, 0, MTIME).unwrap();
    assert_eq!(w.position(), 116);
    w.append_file_bytes("etc/hello", b"hi\n", 0o644, 1000, 1000, MTIME)
        .unwrap();
    assert_eq!(w.position(), 240, "data padding is written with the entry");
    assert_eq!(w.finish().unwrap().len(), 512);
}

#[test]
fn linuxkit_nlink_is_two_for_directories_and_one_otherwise() {
    assert_eq!(linuxkit_nlink(0o040755), 2);
    for mode in [
        0o100644, 0o120777, 0o020600, 0o060600, 0o010644, 0o140755, 0,
    ] {
        assert_eq!(linuxkit_nlink(mode), 1, "mode {mode:o}");
    }
}

#[test]
fn header_helpers_split_mode_into_kind_and_permissions() {
    let cases = [
        (0o100644, Kind::File),
        (0o040755, Kind::Dir),
        (0o120777, Kind::Symlink),
        (0o020600, Kind::CharDev),
        (0o060600, Kind::BlockDev),
        (0o010644, Kind::Fifo),
        (0o140755, Kind::Socket),
        (0o170644, Kind::Unknown(0o170000)),
        (0o000644, Kind::Unknown(0)),
    ];
    for (mode, kind) in cases {
        let header = Header {
            mode: mode | 0o7000,
            ..Header::default()
        };
        assert_eq!(header.kind(), kind, "mode {mode:o}");
        assert_eq!(header.perm(), (mode & 0o777) | 0o7000);
        assert_eq!(
            Header::new("x", kind, mode).mode,
            mode,
            "kind and perm rebuild the mode"
        );
    }
    let header = Header::new(b"caf\xe9".to_vec(), Kind::File, 0o644);
    assert_eq!(header.name_lossy(), "caf\u{fffd}");
    assert_eq!(header.nlink, 1);
    assert_eq!(Header::new("d", Kind::Dir, 0o755).nlink, 2);
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

#[test]
fn reader_yields_headers_data_and_the_end_of_a_linuxkit_archive() {
    let (entries, end) = read_all(&linuxkit_expected_bytes()).unwrap();
    let names: Vec<_> = entries.iter().map(|(h, _)| h.name_lossy()).collect();
    assert_eq!(names, ["etc", "etc/hello", "bin", "dev/console"]);
    assert_eq!(entries[1].1, b"hi\n");
    assert_eq!(entries[2].0.kind(), Kind::Symlink);
    assert_eq!(entries[2].1, b"usr/bin");
    let console = &entries[3].0;
    assert_eq!((console.ino, console.nlink), (724, 1));
    assert_eq!((console.devmajor, console.devminor), (3, 1));
    assert_eq!(
        (console.rdevmajor, console.rdevminor, console.check),
        (5, 1, 0)
    );
    let trailer = &end.trailer;
    assert_eq!((trailer.ino, trailer.nlink, trailer.mode), (725, 1, 0));
    assert_eq!((trailer.devmajor, trailer.devminor), (3, 1));
    assert_eq!(end.trailer_offset, 488);
    assert_eq!(end.trailer_end, LINUXKIT_TRAILER_END);
    assert_eq!(end.trailing_len, 1024 - LINUXKIT_TRAILER_END);
    assert!(end.trailing_all_zero);
}

#[test]
fn entries_report_offset_format_and_raw_header_bytes() {
    let bytes = linuxkit_expected_bytes();
    let mut reader = Reader::new(&bytes[..]);
    let mut offsets = Vec::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        let offset = entry.offset() as usize;
        assert_eq!(entry.format(), Format::Newc);
        assert_eq!(&entry.raw_header()[..], &bytes[offset..offset + HEADER_LEN]);
        offsets.push(entry.offset());
    }
    let expected: Vec<u64> = LINUXKIT_LAYOUT[..4].iter().map(|l| l.0).collect();
    assert_eq!(offsets, expected);
}

#[test]
fn unread_and_partly_read_data_is_skipped_by_the_next_call() {
    let bytes = linuxkit_expected_bytes();
    let mut reader = Reader::new(&bytes[..]);
    reader.next_entry().unwrap().unwrap();
    let mut hello = reader.next_entry().unwrap().unwrap();
    let mut first = [0u8; 1];
    hello.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"h");
    let link = reader.next_entry().unwrap().unwrap();
    assert_eq!(link.header().name, b"bin");
    assert!(reader.next_entry().unwrap().is_some());
    assert!(reader.next_entry().unwrap().is_none());
    assert!(reader.next_entry().unwrap().is_none(), "stays at the end");
    assert_eq!(reader.finish().unwrap().trailing_len, 412);
}

#[test]
fn finish_skips_remaining_entries_and_reports_the_trailer() {
    let end = Reader::new(&linuxkit_expected_bytes()[..])
        .finish()
        .unwrap();
    assert_eq!(end.trailer_offset, 488);
    assert_eq!(end.trailing_len, 412);
}

#[test]
fn reader_accepts_uppercase_hex_and_keeps_the_raw_bytes() {
    let mut bytes = linuxkit_expected_bytes();
    bytes[..HEADER_LEN].make_ascii_uppercase();
    let mut reader = Reader::new(&bytes[..]);
    let entry = reader.next_entry().unwrap().unwrap();
    assert_eq!(entry.header().mode, 0o40755);
    assert_eq!(&entry.raw_header()[6..14], b"000002D1");
}

#[test]
fn bytes_after_the_trailer_are_counted_and_nonzero_ones_flagged() {
    let mut bytes = linuxkit_expected_bytes();
    bytes.truncate(LINUXKIT_TRAILER_END as usize);
    let (_, end) = read_all(&bytes).unwrap();
    assert_eq!((end.trailing_len, end.trailing_all_zero), (0, true));

    bytes.extend_from_slice(b"\0\0garbage");
    let (entries, end) = read_all(&bytes).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!((end.trailing_len, end.trailing_all_zero), (9, false));
}

#[test]
#[rustfmt::skip]
fn crc_format_is_read_and_regular_file_checksums_verified() {
    // "hi\n" sums to 0x68 + 0x69 + 0x0a = 0xdb; GNU cpio leaves check 0 on symlinks.
    let parts: &[&[u8]] = &[
        b"070702", b"00000001", b"000081a4", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000003", b"00000000", b"00000000", b"00000000", b"00000000", b"00000002", b"000000db",
        b"f\0", b"hi\n", b"\0",
        b"070702", b"00000002", b"0000a1ff", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000001", b"00000000", b"00000000", b"00000000", b"00000000", b"00000002", b"00000000",
        b"l\0", b"f", b"\0\0\0",
        b"070702", b"00000000", b"00000000", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000000", b"00000000", b"00000000", b"00000000", b"00000000", b"0000000b", b"00000000",
        b"TRAILER!!!\0", b"\0\0\0",
    ];
    let mut bytes = parts.concat();
    let mut reader = Reader::new(&bytes[..]);
    let entry = reader.next_entry().unwrap().unwrap();
    assert_eq!(entry.format(), Format::NewcCrc);
    assert_eq!(entry.header().check, 0xdb);
    reader.finish().unwrap();

    bytes[113] = b'H'; // "hi\n" -> "hH\n": 0x68 + 0x48 + 0x0a = 0xba
    match err_of(&bytes) {
        Error::ChecksumMismatch { entry_offset: 0, expected: 0xdb, actual: 0xba } => {}
        e => panic!("{e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input: a specific error, never a panic
// ---------------------------------------------------------------------------------------------

#[test]
fn every_truncation_gives_missing_trailer_or_truncated_with_the_part_and_offset() {
    let bytes = linuxkit_expected_bytes();
    for len in 0..bytes.len() as u64 {
        let result = read_all(&bytes[..len as usize]);
        if len >= LINUXKIT_TRAILER_END {
            let end = result.unwrap().1;
            assert_eq!(end.trailing_len, len - LINUXKIT_TRAILER_END);
            continue;
        }
        let err = match result {
            Ok(_) => panic!("prefix of {len} bytes was accepted"),
            Err(e) => e,
        };
        let (start, namesize, filesize) =
            *LINUXKIT_LAYOUT.iter().rev().find(|l| l.0 <= len).unwrap();
        let name_end = start + HEADER_LEN as u64 + namesize;
        let data_start = name_end.next_multiple_of(4);
        let part = match len {
            _ if len == start => None,
            _ if len < start + HEADER_LEN as u64 => Some(Part::Header),
            _ if len < name_end => Some(Part::Name),
            _ if len < data_start => Some(Part::NamePadding),
            _ if len < data_start + filesize => Some(Part::Data),
            _ => Some(Part::DataPadding),
        };
        match (part, &err) {
            (None, Error::MissingTrailer { offset }) => assert_eq!(*offset, len),
            (
                Some(part),
                Error::Truncated {
                    part: got,
                    entry_offset,
                    offset,
                },
            ) => assert_eq!((*got, *entry_offset, *offset), (part, start, len)),
            _ => panic!("prefix of {len} bytes: expected {part:?}, got {err:?}"),
        }
    }
}

#[test]
fn every_single_byte_corruption_is_an_error_or_a_clean_read_never_a_panic() {
    let bytes = linuxkit_expected_bytes();
    for i in 0..bytes.len() {
        for value in [0u8, b'0', b'f', b'G', 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[i] = value;
            let _ = read_all(&corrupt);
        }
    }
}

#[test]
fn empty_input_has_no_trailer() {
    assert!(matches!(err_of(b""), Error::MissingTrailer { offset: 0 }));
}

#[test]
fn archive_without_trailer_is_missing_trailer_at_its_end() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    w.append_file_bytes("etc/hello", b"hi\n", 0o644, 0, 0, 0)
        .unwrap();
    let len = w.position();
    let bytes = w.finish().unwrap();
    match err_of(&bytes[..len as usize]) {
        Error::MissingTrailer { offset } => assert_eq!(offset, len),
        e => panic!("{e:?}"),
    }
}

#[test]
fn bad_magic_reports_what_was_found_and_where() {
    let mut bytes = linuxkit_expected_bytes();
    bytes[116..122].copy_from_slice(b"070707"); // the old portable (odc) format
    match err_of(&bytes) {
        Error::BadMagic { offset: 116, found } => assert_eq!(found, "070707"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn still_compressed_input_is_a_bad_magic_even_when_shorter_than_a_header() {
    let long_gzip = [&[0x1f, 0x8b, 0x08][..], &[0; 200]].concat();
    for gzip in [&b"\x1f\x8b\x08\0\0\0"[..], &long_gzip] {
        assert!(matches!(err_of(gzip), Error::BadMagic { offset: 0, .. }));
    }
}

#[test]
fn non_hex_digit_reports_the_field_and_its_offset() {
    let fields = [
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
    for (i, name) in fields.iter().enumerate() {
        for (digit, bad) in [(0, b'g'), (7, b' '), (3, b'-'), (5, 0xff)] {
            let mut bytes = linuxkit_expected_bytes();
            let at = 116 + 6 + 8 * i;
            bytes[at + digit] = bad;
            match err_of(&bytes) {
                Error::BadHex {
                    field,
                    offset,
                    found,
                } => {
                    assert_eq!((field, offset), (*name, at as u64));
                    // 0xff shows as U+FFFD, 3 bytes in UTF-8
                    assert_eq!(found.len(), if bad == 0xff { 10 } else { 8 });
                }
                e => panic!("field {name}: {e:?}"),
            }
        }
    }
}

#[test]
fn huge_namesize_is_rejected_before_anything_is_allocated() {
    for (hex, want) in [(b"ffffffff", 0xffff_ffff), (b"00010001", 0x10001)] {
        let mut bytes = linuxkit_expected_bytes();
        bytes[6 + 8 * 11..6 + 8 * 12].copy_from_slice(hex);
        match err_of(&bytes) {
            Error::NameTooLong {
                entry_offset: 0,
                size,
            } => assert_eq!(size, want),
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(MAX_NAME_SIZE, 0x10000);
}

#[test]
fn namesize_zero_is_rejected() {
    let mut bytes = linuxkit_expected_bytes();
    bytes[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00000000");
    assert!(matches!(
        err_of(&bytes),
        Error::NameSizeZero { entry_offset: 0 }
    ));
}

#[test]
fn name_without_terminating_nul_is_rejected() {
    let mut bytes = linuxkit_expected_bytes();
    bytes[113] = b'!'; // "etc\0" -> "etc!"
    assert!(matches!(
        err_of(&bytes),
        Error::NameNotTerminated { entry_offset: 0 }
    ));
}

#[test]
fn nonzero_padding_is_rejected_with_its_offset() {
    // name padding of the first entry, data padding of the second, name padding of the trailer
    for at in [114, 239, 610] {
        let mut bytes = linuxkit_expected_bytes();
        bytes[at] = 1;
        match err_of(&bytes) {
            Error::NonZeroPadding { offset } => assert_eq!(offset, at as u64),
            e => panic!("byte {at}: {e:?}"),
        }
    }
}

#[test]
fn reader_refuses_to_continue_after_an_error() {
    let mut bytes = linuxkit_expected_bytes();
    bytes[116] = b'X';
    let mut reader = Reader::new(&bytes[..]);
    assert!(reader.next_entry().unwrap().is_some());
    assert!(matches!(reader.next_entry(), Err(Error::BadMagic { .. })));
    assert!(matches!(reader.next_entry(), Err(Error::Poisoned)));
    assert!(matches!(reader.finish(), Err(Error::Poisoned)));
}

#[test]
fn reading_truncated_data_is_an_unexpected_eof() {
    let bytes = linuxkit_expected_bytes();
    let mut reader = Reader::new(&bytes[..237]); // one byte of "hi\n"
    reader.next_entry().unwrap();
    let mut entry = reader.next_entry().unwrap().unwrap();
    let mut data = Vec::new();
    let err = entry.read_to_end(&mut data).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(data, b"h");
    assert!(matches!(
        reader.next_entry(),
        Err(Error::Truncated {
            part: Part::Data,
            entry_offset: 116,
            offset: 237
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Writer errors
// ---------------------------------------------------------------------------------------------

fn file_header(name: &str, filesize: u32) -> Header {
    Header {
        filesize,
        ..Header::new(name, Kind::File, 0o644)
    }
}

#[test]
fn append_rejects_data_shorter_than_filesize_and_poisons_the_writer() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    match w.append(&file_header("f", 10), &b"short"[..]) {
        Err(Error::DataTooShort {
            name,
            expected: 10,
            got: 5,
        }) => assert_eq!(name, "f"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.append_dir("d", 0o755, 0, 0, 0),
        Err(Error::Poisoned)
    ));
    assert!(matches!(w.finish(), Err(Error::Poisoned)));
}

#[test]
fn append_rejects_data_longer_than_filesize() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    assert!(matches!(
        w.append(&file_header("f", 2), &b"abc"[..]),
        Err(Error::DataTooLong { expected: 2, .. })
    ));
}

#[test]
fn append_rejects_a_name_that_would_end_the_archive_early() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    assert!(matches!(
        w.append(&file_header("TRAILER!!!", 0), io::empty()),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn append_rejects_a_name_with_a_nul_byte() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    assert!(matches!(
        w.append_dir("a\0b", 0o755, 0, 0, 0),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn append_accepts_names_up_to_what_the_reader_accepts() {
    let long = "x".repeat(MAX_NAME_SIZE as usize);
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    assert!(matches!(
        w.append_dir(&long, 0o755, 0, 0, 0),
        Err(Error::FieldOverflow {
            field: "namesize",
            ..
        })
    ));
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    w.append_dir(&long[1..], 0o755, 0, 0, 0).unwrap();
    let bytes = w.finish().unwrap();
    let (entries, _) = read_all(&bytes).unwrap();
    assert_eq!(entries[0].0.name.len(), MAX_NAME_SIZE as usize - 1);
}

#[test]
fn inode_counter_overflow_is_an_error_not_a_wrap() {
    let options = WriterOptions {
        first_inode: Some(u32::MAX),
        ..WriterOptions::linuxkit()
    };
    let mut w = Writer::new(Vec::new(), options);
    assert!(matches!(
        w.append_dir("d", 0o755, 0, 0, 0),
        Err(Error::FieldOverflow { field: "ino", .. })
    ));
}

#[test]
fn write_errors_carry_the_offset_of_the_failed_write() {
    /// Accepts `self.0` more bytes, then reports a full disk.
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = Writer::new(Full(200), WriterOptions::linuxkit());
    w.append_dir("etc", 0o755, 0, 0, 0).unwrap();
    assert!(matches!(
        w.append_dir("etc2", 0o755, 0, 0, 0),
        Err(Error::Io { offset: 116, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Round trips and streaming
// ---------------------------------------------------------------------------------------------

fn random_entry(rng: &mut Rng) -> (Header, Vec<u8>) {
    let kinds = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::CharDev,
        Kind::BlockDev,
        Kind::Fifo,
        Kind::Socket,
    ];
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let name_len = 1 + rng.below(60) as usize;
    // Any bytes but NUL, including non-UTF-8.
    let name: Vec<u8> = rng.bytes(name_len).into_iter().map(|b| b.max(1)).collect();
    let data_len = match rng.below(4) {
        0 => 0,
        1 => rng.below(8) as usize,
        _ => rng.below(3000) as usize,
    };
    let data = rng.bytes(data_len);
    let header = Header {
        ino: rng.u32(),
        uid: rng.u32(),
        gid: rng.u32(),
        nlink: rng.u32(),
        mtime: rng.u32(),
        filesize: data_len as u32,
        devmajor: rng.u32(),
        devminor: rng.u32(),
        rdevmajor: rng.u32(),
        rdevminor: rng.u32(),
        ..Header::new(name, kind, rng.u32())
    };
    (header, data)
}

#[test]
fn random_archives_round_trip_headers_and_data_exactly() {
    let mut rng = Rng(0x5eed);
    for round in 0..50 {
        let entries: Vec<_> = (0..rng.below(40)).map(|_| random_entry(&mut rng)).collect();
        let alignment = [0, 1, 4, 512, 4096, 1000][rng.below(6) as usize];
        let options = WriterOptions {
            archive_alignment: alignment,
            ..WriterOptions::default()
        };
        let mut w = Writer::new(Vec::new(), options);
        for (header, data) in &entries {
            w.append(header, &data[..]).unwrap();
        }
        // the trailer: 110 + "TRAILER!!!\0" = 121 bytes, padded to 124
        let trailer_end = w.position() + 124;
        let bytes = w.finish().unwrap();
        let (read, end) = read_all(&bytes).unwrap();
        assert_eq!(read, entries, "round {round}");
        assert_eq!(end.trailer_end, trailer_end);
        assert_eq!(end.trailing_len, bytes.len() as u64 - trailer_end);
        assert!(end.trailing_all_zero);
        if alignment > 1 {
            assert_eq!(bytes.len() % alignment as usize, 0);
            assert!(end.trailing_len < u64::from(alignment));
        }
    }
}

#[test]
fn linuxkit_preset_round_trip_rewrites_only_ino_dev_and_nlink() {
    let mut rng = Rng(721);
    let entries: Vec<_> = (0..100).map(|_| random_entry(&mut rng)).collect();
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    for (header, data) in &entries {
        w.append(header, &data[..]).unwrap();
    }
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len() % 512, 0);
    let (read, end) = read_all(&bytes).unwrap();
    assert_eq!(read.len(), entries.len());
    for (i, ((got, got_data), (want, want_data))) in read.iter().zip(&entries).enumerate() {
        let want = Header {
            ino: 721 + i as u32,
            devmajor: 3,
            devminor: 1,
            nlink: if want.kind() == Kind::Dir { 2 } else { 1 },
            ..want.clone()
        };
        assert_eq!(got, &want);
        assert_eq!(got_data, want_data);
    }
    assert_eq!(end.trailer.ino, 721 + 100);
}

#[test]
fn copying_a_linuxkit_archive_entry_by_entry_reproduces_it_byte_for_byte() {
    let original = linuxkit_expected_bytes();
    let mut reader = Reader::new(&original[..]);
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    while let Some(mut entry) = reader.next_entry().unwrap() {
        let header = entry.header().clone();
        w.append(&header, &mut entry).unwrap();
    }
    assert_eq!(w.finish().unwrap(), original);
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
#[rustfmt::skip]
fn a_64_mib_entry_streams_through_writer_and_reader_without_being_buffered() {
    const SIZE: u64 = 64 << 20;
    let big = Header { filesize: SIZE as u32, ..Header::new("big", Kind::File, 0o644) };
    let prefix: &[&[u8]] = &[
        b"070701", b"000002d1", b"000081a4", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"04000000", b"00000003", b"00000001", b"00000000", b"00000000", b"00000004", b"00000000",
        b"big\0", b"\0\0",
    ];
    let trailer: &[&[u8]] = &[
        b"070701", b"000002d2", b"00000000", b"00000000", b"00000000", b"00000001", b"00000000",
                   b"00000000", b"00000003", b"00000001", b"00000000", b"00000000", b"0000000b", b"00000000",
        b"TRAILER!!!\0", b"\0\0\0",
    ];
    let (prefix, mut suffix) = (prefix.concat(), trailer.concat());
    let unpadded = (prefix.len() + suffix.len()) as u64 + SIZE;
    suffix.resize(suffix.len() + (unpadded.next_multiple_of(512) - unpadded) as usize, 0);
    let expected_stream = || {
        Cursor::new(prefix.clone())
            .chain(io::repeat(0x5a).take(SIZE))
            .chain(Cursor::new(suffix.clone()))
    };
    let mut expected = HashSink::new();
    io::copy(&mut expected_stream(), &mut expected).unwrap();

    let heap_before = LIVE.with(Cell::get);
    drop(std::hint::black_box(vec![1u8; 2 << 20]));
    assert!(PEAK.with(Cell::get) - heap_before >= 2 << 20, "the allocation counter works");
    PEAK.with(|peak| peak.set(heap_before));

    let mut w = Writer::new(HashSink::new(), WriterOptions::linuxkit());
    w.append(&big, io::repeat(0x5a).take(SIZE)).unwrap();
    assert_eq!(w.finish().unwrap().sum(), expected.sum());

    let mut reader = Reader::new(expected_stream());
    let mut entry = reader.next_entry().unwrap().unwrap();
    assert_eq!(entry.header(), &Header { ino: 721, devmajor: 3, devminor: 1, ..big });
    let mut data = HashSink::new();
    io::copy(&mut entry, &mut data).unwrap();
    let mut want = HashSink::new();
    io::copy(&mut io::repeat(0x5a).take(SIZE), &mut want).unwrap();
    assert_eq!(data.sum(), want.sum());
    assert!(reader.next_entry().unwrap().is_none());
    assert_eq!(reader.finish().unwrap().trailing_len, unpadded.next_multiple_of(512) - unpadded);

    let peak_growth = PEAK.with(Cell::get) - heap_before;
    assert!(peak_growth < 1 << 20, "heap grew by {peak_growth} bytes while streaming 64 MiB");
}

// ---------------------------------------------------------------------------------------------
// GNU cpio interoperability (needs the Debian package `cpio`)
// ---------------------------------------------------------------------------------------------

fn gnu_cpio(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run GNU cpio ({e}): install the Debian package `cpio`"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn gnu_cpio_lists_and_extracts_what_the_writer_wrote() {
    let mut w = Writer::new(Vec::new(), WriterOptions::linuxkit());
    w.append_dir("etc", 0o755, 0, 0, MTIME).unwrap();
    w.append_file_bytes("etc/hello", b"hi\n", 0o644, 0, 0, MTIME)
        .unwrap();
    w.append_file_bytes("etc/empty", b"", 0o600, 0, 0, MTIME)
        .unwrap();
    w.append_symlink("bin", "usr/bin", 0o777, 0, 0, MTIME)
        .unwrap();
    w.append_dir("usr", 0o755, 0, 0, MTIME).unwrap();
    w.append_dir("usr/bin", 0o755, 0, 0, MTIME).unwrap();
    w.append_file_bytes("usr/bin/init", &[0x7f; 4097], 0o755, 0, 0, MTIME)
        .unwrap();
    let archive = w.finish().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let listing = gnu_cpio(dir.path(), &["-i", "-t", "--quiet"], &archive);
    assert_eq!(
        String::from_utf8(listing).unwrap(),
        "etc\netc/hello\netc/empty\nbin\nusr\nusr/bin\nusr/bin/init\n"
    );

    let args = ["-i", "-d", "--quiet", "--no-absolute-filenames"];
    gnu_cpio(dir.path(), &args, &archive);
    let root = dir.path();
    assert_eq!(std::fs::read(root.join("etc/hello")).unwrap(), b"hi\n");
    assert_eq!(std::fs::read(root.join("etc/empty")).unwrap(), b"");
    assert_eq!(
        std::fs::read(root.join("usr/bin/init")).unwrap(),
        [0x7f; 4097]
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
}

#[test]
fn reader_reads_what_gnu_cpio_wrote_in_newc_and_crc_formats() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let perm = |name: &str| {
        let mode = std::fs::symlink_metadata(root.join(name))
            .unwrap()
            .permissions()
            .mode();
        mode & 0o7777
    };
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/hello"), b"hello\n").unwrap();
    std::fs::write(root.join("d/big"), vec![0xa5; 70_001]).unwrap();
    std::fs::set_permissions(root.join("d/big"), std::fs::Permissions::from_mode(0o751)).unwrap();
    symlink("hello", root.join("d/link")).unwrap();
    let names = "d\nd/hello\nd/big\nd/link\n";

    for (format, magic) in [("newc", Format::Newc), ("crc", Format::NewcCrc)] {
        let archive = gnu_cpio(root, &["-o", "-H", format, "--quiet"], names.as_bytes());
        assert_eq!(archive.len() % 512, 0, "GNU cpio pads to its block size");
        let mut reader = Reader::new(&archive[..]);
        let mut seen = Vec::new();
        while let Some(mut entry) = reader.next_entry().unwrap() {
            assert_eq!(entry.format(), magic);
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((
                header.name_lossy().into_owned(),
                header.kind(),
                header.perm(),
                data,
            ));
        }
        let end = reader.finish().unwrap();
        assert!(end.trailing_all_zero);
        assert_eq!(end.trailer_end + end.trailing_len, archive.len() as u64);
        assert_eq!(
            seen,
            [
                ("d".to_string(), Kind::Dir, perm("d"), vec![]),
                (
                    "d/hello".to_string(),
                    Kind::File,
                    perm("d/hello"),
                    b"hello\n".to_vec()
                ),
                ("d/big".to_string(), Kind::File, 0o751, vec![0xa5; 70_001]),
                (
                    "d/link".to_string(),
                    Kind::Symlink,
                    perm("d/link"),
                    b"hello".to_vec()
                ),
            ],
            "format {format}"
        );
    }
}
