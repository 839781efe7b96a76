//! The EIF core: what the writer lays out, what the reader accepts and rejects, what is measured.

mod common;

use std::path::Path;

use common::*;
use eifctl::eif::{EifFile, Problem, SectionKind};
use eifctl::pcr::Pcr;

/// Composes an EIF byte by byte, independently of the library's writer, so malformed files
/// can be made precisely.
fn raw_eif(version: u16, flags: u16, sections: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    for (kind, data) in sections {
        offsets.push((548 + body.len()) as u64);
        body.extend_from_slice(&kind.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&(data.len() as u64).to_be_bytes());
        body.extend_from_slice(data);
    }
    let mut h = Vec::new();
    h.extend_from_slice(b".eif");
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&(1u64 << 30).to_be_bytes());
    h.extend_from_slice(&2u64.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&(sections.len() as u16).to_be_bytes());
    for i in 0..32 {
        h.extend_from_slice(&offsets.get(i).copied().unwrap_or(0).to_be_bytes());
    }
    for i in 0..32 {
        let size = sections.get(i).map_or(0, |(_, d)| d.len() as u64);
        h.extend_from_slice(&size.to_be_bytes());
    }
    h.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(h.len(), 544);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h);
    crc.update(&body);
    h.extend_from_slice(&crc.finalize().to_be_bytes());
    h.extend_from_slice(&body);
    h
}

const KERNEL: u16 = 1;
const CMDLINE: u16 = 2;
const RAMDISK: u16 = 3;
const SIGNATURE: u16 = 4;
const METADATA: u16 = 5;

fn valid_sections() -> Vec<(u16, Vec<u8>)> {
    vec![
        (KERNEL, random_bytes(1, 3000)),
        (CMDLINE, b"console=ttyS0".to_vec()),
        (METADATA, metadata("raw").to_bytes()),
        (RAMDISK, random_bytes(2, 1024)),
        (RAMDISK, random_bytes(3, 1024)),
    ]
}

fn compose(version: u16, sections: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(u16, &[u8])> = sections.iter().map(|(k, d)| (*k, d.as_slice())).collect();
    raw_eif(version, 0, &refs)
}

fn open_bytes(dir: &Path, bytes: &[u8]) -> Result<EifFile, eifctl::eif::ReadError> {
    let p = dir.join("x.eif");
    std::fs::write(&p, bytes).unwrap();
    EifFile::open(&p)
}

fn problem(dir: &Path, bytes: &[u8]) -> Problem {
    open_bytes(dir, bytes)
        .expect_err("should be rejected")
        .problem
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

const OFFSETS: usize = 0x1c;
const SIZES: usize = 0x11c;

#[test]
fn pcrs_equal_sha384sum_of_the_concatenated_sections_extended() {
    let dir = tempfile::tempdir().unwrap();
    for ramdisks in [&[777][..], &[1500, 3000], &[10, 20, 30000]] {
        let parts = write_parts(dir.path(), 11, ramdisks);
        let out = dir.path().join("a.eif");
        let written = build(&parts, &out);
        let cmdline = dir.path().join("cmdline.txt");
        std::fs::write(&cmdline, &parts.cmdline).unwrap();

        let mut all: Vec<&Path> = vec![&parts.kernel, &cmdline];
        all.extend(parts.ramdisks.iter().map(|p| p.as_path()));
        let boot: Vec<&Path> = vec![&parts.kernel, &cmdline, &parts.ramdisks[0]];
        let app: Vec<&Path> = parts.ramdisks[1..].iter().map(|p| p.as_path()).collect();

        let scan = EifFile::open(&out).unwrap().scan(false).unwrap();
        for m in [written.measurements, scan.measurements] {
            assert_eq!(
                m.pcr0.to_hex(),
                pcr_by_shell(&all),
                "PCR0 with {ramdisks:?}"
            );
            assert_eq!(
                m.pcr1.to_hex(),
                pcr_by_shell(&boot),
                "PCR1 with {ramdisks:?}"
            );
            assert_eq!(
                m.pcr2.to_hex(),
                pcr_by_shell(&app),
                "PCR2 with {ramdisks:?}"
            );
        }
    }
}

#[test]
fn a_single_ramdisk_image_has_the_pcr2_of_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 3, &[100]);
    let w = build(&parts, &dir.path().join("one.eif"));
    assert_eq!(w.measurements.pcr2, Pcr::of_bytes(b""));
}

#[test]
fn writer_lays_out_header_sections_and_crc_as_aws_does() {
    let dir = tempfile::tempdir().unwrap();
    let (out, parts) = small_eif(dir.path(), "layout.eif");
    let b = std::fs::read(&out).unwrap();
    let kernel = std::fs::read(&parts.kernel).unwrap();
    let meta = metadata("test").to_bytes();
    let r0 = std::fs::read(&parts.ramdisks[0]).unwrap();
    let r1 = std::fs::read(&parts.ramdisks[1]).unwrap();

    assert_eq!(&b[0..4], b".eif");
    assert_eq!(u16::from_be_bytes([b[4], b[5]]), 4, "version");
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), 0, "x86_64 flags");
    assert_eq!(get_u64(&b, 8), 1 << 30, "default memory");
    assert_eq!(get_u64(&b, 16), 2, "default cpus");
    assert_eq!(u16::from_be_bytes([b[0x1a], b[0x1b]]), 5, "section count");

    // AWS's order: kernel, cmdline, metadata, ramdisks; back to back from offset 548.
    let expected: Vec<(u16, &[u8])> = vec![
        (KERNEL, &kernel),
        (CMDLINE, parts.cmdline.as_bytes()),
        (METADATA, &meta),
        (RAMDISK, &r0),
        (RAMDISK, &r1),
    ];
    let mut pos = 548usize;
    for (i, (kind, data)) in expected.iter().enumerate() {
        assert_eq!(
            get_u64(&b, OFFSETS + 8 * i),
            pos as u64,
            "offset of section {i}"
        );
        assert_eq!(
            get_u64(&b, SIZES + 8 * i),
            data.len() as u64,
            "size of section {i}"
        );
        assert_eq!(
            u16::from_be_bytes([b[pos], b[pos + 1]]),
            *kind,
            "type of section {i}"
        );
        assert_eq!(&b[pos + 2..pos + 4], &[0, 0], "flags of section {i}");
        assert_eq!(get_u64(&b, pos + 4), data.len() as u64);
        assert_eq!(&b[pos + 12..pos + 12 + data.len()], *data);
        pos += 12 + data.len();
    }
    assert_eq!(pos, b.len(), "nothing after the last section");
    for i in 5..32 {
        assert_eq!(get_u64(&b, OFFSETS + 8 * i), 0);
        assert_eq!(get_u64(&b, SIZES + 8 * i), 0);
    }
    // The CRC, by Python's zlib: header up to the CRC field, then everything after the header.
    let crc = sh(&format!(
        "python3 -c \"import zlib,sys; b=open('{}','rb').read(); print(zlib.crc32(b[548:], zlib.crc32(b[:544])))\"",
        out.display()
    ));
    assert_eq!(
        u32::from_be_bytes(b[544..548].try_into().unwrap()),
        crc.parse::<u32>().unwrap()
    );
    assert_eq!(
        b,
        compose(
            4,
            &expected
                .iter()
                .map(|(k, d)| (*k, d.to_vec()))
                .collect::<Vec<_>>()
        )
    );
}

#[test]
fn identical_inputs_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 5, &[4000, 9000]);
    build(&parts, &dir.path().join("1.eif"));
    build(&parts, &dir.path().join("2.eif"));
    assert_eq!(
        std::fs::read(dir.path().join("1.eif")).unwrap(),
        std::fs::read(dir.path().join("2.eif")).unwrap()
    );
}

#[test]
fn streamed_ramdisk_of_unknown_size_is_measured_and_patched_in() {
    use eifctl::eif::{Arch, EifBuilder, Source};
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 9, &[2048, 5000]);
    let data = std::fs::read(&parts.ramdisks[1]).unwrap();
    let out = dir.path().join("streamed.eif");
    let w = EifBuilder::new(
        Arch::X86_64,
        Source::File(parts.kernel.clone()),
        parts.cmdline.clone(),
        &metadata("test"),
    )
    .ramdisk(Source::File(parts.ramdisks[0].clone()))
    .ramdisk(Source::Reader {
        name: "generated ramdisk".into(),
        reader: Box::new(std::io::Cursor::new(data)),
    })
    .write_to(&out)
    .unwrap();
    let reference = dir.path().join("reference.eif");
    build(&parts, &reference);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap()
    );
    assert_eq!(
        w.measurements,
        EifFile::open(&out)
            .unwrap()
            .scan(false)
            .unwrap()
            .measurements
    );
}

#[test]
fn a_failed_write_leaves_no_output_and_no_temporary_file() {
    use eifctl::eif::{Arch, EifBuilder, Source, WriteError};
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 9, &[10]);
    let out = dir.path().join("never.eif");
    let err = EifBuilder::new(
        Arch::X86_64,
        Source::File(parts.kernel.clone()),
        "x",
        &metadata("t"),
    )
    .ramdisk(Source::File(dir.path().join("missing-ramdisk")))
    .write_to(&out)
    .unwrap_err();
    assert!(matches!(err, WriteError::Input { .. }), "{err}");
    assert!(err.to_string().contains("missing-ramdisk"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eif") || n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn aarch64_images_set_flag_bit_zero() {
    use eifctl::eif::{Arch, EifBuilder, Source};
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 1, &[10]);
    let out = dir.path().join("arm.eif");
    EifBuilder::new(
        Arch::Aarch64,
        Source::File(parts.kernel.clone()),
        "x",
        &metadata("t"),
    )
    .ramdisk(Source::File(parts.ramdisks[0].clone()))
    .write_to(&out)
    .unwrap();
    let b = std::fs::read(&out).unwrap();
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), 1);
    assert_eq!(EifFile::open(&out).unwrap().arch(), Arch::Aarch64);
}

#[test]
fn versions_2_and_3_without_metadata_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = valid_sections();
    s.retain(|(k, _)| *k != METADATA);
    for v in [2, 3] {
        let eif = open_bytes(dir.path(), &compose(v, &s)).unwrap();
        assert_eq!(eif.version(), v);
        assert!(eif.metadata().unwrap().is_none());
        let scan = eif.scan(false).unwrap();
        assert!(scan.crc_ok(eif.header()));
    }
}

#[test]
fn sections_are_measured_in_file_order_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = valid_sections();
    let reordered = vec![
        s[2].clone(),
        s[1].clone(),
        s[0].clone(),
        s[3].clone(),
        s[4].clone(),
    ];
    let eif = open_bytes(dir.path(), &compose(4, &reordered)).unwrap();
    let m = eif.scan(false).unwrap().measurements;
    let cat = |parts: &[&[u8]]| parts.concat();
    assert_eq!(m.pcr1, Pcr::of_bytes(&cat(&[&s[1].1, &s[0].1, &s[3].1])));
    assert_eq!(
        m.pcr0,
        Pcr::of_bytes(&cat(&[&s[1].1, &s[0].1, &s[3].1, &s[4].1]))
    );
}

#[test]
fn rejects_files_that_are_not_eifs() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(problem(dir.path(), b""), Problem::NotEif { .. }));
    assert!(matches!(
        problem(dir.path(), b".ei"),
        Problem::NotEif { .. }
    ));
    assert!(matches!(
        problem(dir.path(), &random_bytes(4, 5000)),
        Problem::NotEif { .. }
    ));
    let e = open_bytes(dir.path(), b"\x7fELF and more").unwrap_err();
    assert!(e.to_string().contains("x.eif: offset 0: not an EIF"), "{e}");
}

#[test]
fn rejects_a_file_truncated_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let full = compose(4, &valid_sections());
    for cut in (4..full.len())
        .step_by(97)
        .chain([547, 548, 559, 560, full.len() - 1])
    {
        let p = problem(dir.path(), &full[..cut]);
        assert!(
            matches!(p, Problem::Truncated { .. } | Problem::PastEnd { .. }),
            "cut at {cut}: {p}"
        );
    }
}

#[test]
fn rejects_unsupported_versions_and_unknown_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    b[5] = 5;
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::UnsupportedVersion(5)
    ));
    b[5] = 1;
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::UnsupportedVersion(1)
    ));
    let mut b = compose(4, &valid_sections());
    b[7] = 2;
    assert!(matches!(problem(dir.path(), &b), Problem::UnknownFlags(2)));
}

#[test]
fn rejects_more_than_32_sections_and_zero_sections() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    b[0x1a..0x1c].copy_from_slice(&33u16.to_be_bytes());
    assert!(matches!(problem(dir.path(), &b), Problem::SectionCount(33)));
    b[0x1a..0x1c].copy_from_slice(&0u16.to_be_bytes());
    assert!(matches!(problem(dir.path(), &b), Problem::SectionCount(0)));
}

#[test]
fn rejects_a_section_table_that_disagrees_with_the_section_headers() {
    let dir = tempfile::tempdir().unwrap();
    // The table's size for the cmdline is one byte short of what its header says.
    let mut b = compose(4, &valid_sections());
    let size = get_u64(&b, SIZES + 8);
    set_u64(&mut b, SIZES + 8, size - 1);
    let p = problem(dir.path(), &b);
    assert!(
        matches!(
            p,
            Problem::TableMismatch {
                index: 1,
                field: "size",
                ..
            }
        ),
        "{p}"
    );

    // The two equal-sized ramdisks swapped in the table: in range, no overlap, wrong order.
    let mut b = compose(4, &valid_sections());
    let (o3, o4) = (get_u64(&b, OFFSETS + 24), get_u64(&b, OFFSETS + 32));
    set_u64(&mut b, OFFSETS + 24, o4);
    set_u64(&mut b, OFFSETS + 32, o3);
    let p = problem(dir.path(), &b);
    assert!(
        matches!(
            p,
            Problem::TableMismatch {
                index: 3,
                field: "offset",
                ..
            }
        ),
        "{p}"
    );
}

#[test]
fn rejects_overlapping_sections_and_sections_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    let o3 = get_u64(&b, OFFSETS + 24);
    set_u64(&mut b, OFFSETS + 32, o3 + 12);
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::Overlap { a: 3, b: 4 }
    ));

    let mut b = compose(4, &valid_sections());
    let s4 = get_u64(&b, SIZES + 32);
    set_u64(&mut b, SIZES + 32, s4 + 1000);
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::PastEnd { index: 4, .. }
    ));

    let mut b = compose(4, &valid_sections());
    set_u64(&mut b, SIZES + 32, u64::MAX);
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::PastEnd { index: 4, .. }
    ));
}

#[test]
fn rejects_table_entries_past_the_section_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    set_u64(&mut b, OFFSETS + 8 * 31, 1);
    assert!(matches!(
        problem(dir.path(), &b),
        Problem::StaleTableEntry { index: 31, .. }
    ));
}

#[test]
fn rejects_invalid_section_types() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0u16, 6, 0xffff] {
        let mut s = valid_sections();
        s[3].0 = bad;
        let p = problem(dir.path(), &compose(4, &s));
        assert!(
            matches!(p, Problem::InvalidType { index: 3, kind } if kind == bad),
            "{p}"
        );
    }
}

#[test]
fn rejects_bytes_after_the_last_section() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    b.extend_from_slice(&[0u8; 12]);
    assert!(matches!(problem(dir.path(), &b), Problem::TrailingData(12)));
}

#[test]
fn rejects_missing_and_duplicate_required_sections() {
    let dir = tempfile::tempdir().unwrap();
    let without = |kind: u16| {
        let mut s = valid_sections();
        s.retain(|(k, _)| *k != kind);
        s
    };
    assert!(matches!(
        problem(dir.path(), &compose(4, &without(KERNEL))),
        Problem::Missing(SectionKind::Kernel)
    ));
    assert!(matches!(
        problem(dir.path(), &compose(4, &without(CMDLINE))),
        Problem::Missing(SectionKind::Cmdline)
    ));
    assert!(matches!(
        problem(dir.path(), &compose(4, &without(RAMDISK))),
        Problem::Missing(SectionKind::Ramdisk)
    ));
    assert!(matches!(
        problem(dir.path(), &compose(4, &without(METADATA))),
        Problem::Missing(SectionKind::Metadata)
    ));

    let mut s = valid_sections();
    s.push((KERNEL, b"again".to_vec()));
    assert!(matches!(
        problem(dir.path(), &compose(4, &s)),
        Problem::Duplicate(SectionKind::Kernel)
    ));
    let mut s = valid_sections();
    s.push((SIGNATURE, b"a".to_vec()));
    s.push((SIGNATURE, b"b".to_vec()));
    assert!(matches!(
        problem(dir.path(), &compose(4, &s)),
        Problem::Duplicate(SectionKind::Signature)
    ));
}

#[test]
fn rejects_sections_the_version_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let p = problem(dir.path(), &compose(3, &valid_sections()));
    assert!(
        matches!(
            p,
            Problem::NotAllowed {
                kind: SectionKind::Metadata,
                version: 3
            }
        ),
        "{p}"
    );
    let mut s = valid_sections();
    s.retain(|(k, _)| *k != METADATA);
    s.push((SIGNATURE, b"sig".to_vec()));
    let p = problem(dir.path(), &compose(2, &s));
    assert!(
        matches!(
            p,
            Problem::NotAllowed {
                kind: SectionKind::Signature,
                version: 2
            }
        ),
        "{p}"
    );
}

#[test]
fn a_corrupted_byte_is_a_crc_mismatch_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = compose(4, &valid_sections());
    let last = b.len() - 1;
    b[last] ^= 0xff;
    let eif = open_bytes(dir.path(), &b).unwrap();
    let scan = eif.scan(false).unwrap();
    assert!(!scan.crc_ok(eif.header()));
}

#[test]
fn random_mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = compose(4, &valid_sections());
    let noise = random_bytes(99, 4000);
    for i in 0..400 {
        let mut b = base.clone();
        for j in 0..(1 + i % 4) {
            let at = (noise[(i * 4 + j) % noise.len()] as usize * 37 + i * 131) % b.len();
            b[at] = noise[(i * 7 + j) % noise.len()];
        }
        if let Ok(eif) = open_bytes(dir.path(), &b) {
            let _ = eif.scan(true);
            let _ = eif.metadata();
        }
    }
}

#[test]
fn a_generated_ramdisk_is_written_like_a_file_with_the_same_bytes() {
    use eifctl::eif::{Arch, EifBuilder, Source};
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 21, &[3000, 3 * 1024 * 1024 + 17]);
    let data = std::fs::read(&parts.ramdisks[1]).unwrap();
    let out = dir.path().join("generated.eif");
    EifBuilder::new(
        Arch::X86_64,
        Source::File(parts.kernel.clone()),
        parts.cmdline.clone(),
        &metadata("test"),
    )
    .ramdisk(Source::File(parts.ramdisks[0].clone()))
    .ramdisk(Source::Generated {
        name: "generated ramdisk".into(),
        produce: Box::new(move |w| {
            // Odd-sized writes, to cross chunk boundaries.
            for piece in data.chunks(99_991) {
                w.write_all(piece)?;
            }
            Ok(())
        }),
    })
    .write_to(&out)
    .unwrap();
    let reference = dir.path().join("reference.eif");
    build(&parts, &reference);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap()
    );
}

#[test]
fn a_failing_producer_fails_the_write_and_leaves_nothing() {
    use eifctl::eif::{Arch, EifBuilder, Source, WriteError};
    let dir = tempfile::tempdir().unwrap();
    let parts = write_parts(dir.path(), 22, &[100]);
    let out = dir.path().join("never.eif");
    let err = EifBuilder::new(
        Arch::X86_64,
        Source::File(parts.kernel.clone()),
        "x",
        &metadata("t"),
    )
    .ramdisk(Source::File(parts.ramdisks[0].clone()))
    .ramdisk(Source::Generated {
        name: "customer ramdisk".into(),
        produce: Box::new(|w| {
            w.write_all(&[0u8; 5000])?;
            Err(std::io::Error::other("the export broke off"))
        }),
    })
    .write_to(&out)
    .unwrap_err();
    assert!(matches!(err, WriteError::Input { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("customer ramdisk: the export broke off"),
        "{err}"
    );
    assert!(!out.exists());
    let left = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("tmp")
        })
        .count();
    assert_eq!(left, 0);
}

#[test]
fn a_signature_section_passed_through_still_verifies_over_the_same_pcr0() {
    use eifctl::eif::signature::PemSigner;
    use eifctl::eif::{Arch, EifBuilder, Source};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "openssl ecparam -name secp384r1 -genkey -noout -out {d}/k.pem && \
         openssl req -x509 -new -key {d}/k.pem -subj /CN=pass -days 30 -out {d}/c.pem"
    ));
    let signer = PemSigner::new(
        std::fs::read(dir.path().join("c.pem")).unwrap(),
        std::fs::read(dir.path().join("k.pem")).unwrap(),
    )
    .unwrap();
    let parts = write_parts(dir.path(), 41, &[500, 700]);
    let builder = |name: &str| {
        let mut b = EifBuilder::new(
            Arch::X86_64,
            Source::File(parts.kernel.clone()),
            parts.cmdline.clone(),
            &metadata(name),
        );
        for r in &parts.ramdisks {
            b = b.ramdisk(Source::File(r.clone()));
        }
        b
    };
    let signed = builder("signed")
        .signer(Box::new(signer))
        .write_to(&dir.path().join("s.eif"))
        .unwrap();
    let section = signed.signature.clone().unwrap();
    // Same measured sections, other metadata, the signature copied verbatim.
    let copy = dir.path().join("copy.eif");
    builder("copy")
        .signature_section(section)
        .write_to(&copy)
        .unwrap();
    let eif = EifFile::open(&copy).unwrap();
    let d = eifctl::describe::describe(&eif).unwrap();
    let sig = d.signature.expect("signed");
    assert!(sig.valid);
    assert!(d.crc_ok);
    assert_eq!(d.measurements.pcr0, signed.measurements.pcr0);
    assert!(d.measurements.pcr8.is_some());
}
