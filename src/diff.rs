//! Why two EIFs measure differently.
//!
//! A PCR mismatch by itself says nothing a user can act on. The diff walks down from the
//! registers to the sections that feed them, and inside differing ramdisks to the cpio entries:
//! added, removed and changed paths with the attribute that changed (type, mode, owner, mtime,
//! size, content, link target), and the encoding details (entry order, inode numbers, padding)
//! that change the bytes without changing the files.

use std::collections::HashMap;
use std::io::{BufReader, Read};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cpio;
use crate::describe::describe_scan;
use crate::eif::{EifFile, ReadError, Section, SectionKind};
use crate::pcr::Pcr;

/// The registers side by side.
#[derive(Clone, Debug, Serialize)]
pub struct PcrPair {
    pub register: &'static str,
    pub a: Option<Pcr>,
    pub b: Option<Pcr>,
    pub equal: bool,
}

/// One section's size and digest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SectionSummary {
    pub size: u64,
    pub sha384: String,
}

/// A section role (kernel, ramdisk 1, ...) in both files.
#[derive(Clone, Debug, Serialize)]
pub struct SectionPair {
    pub section: String,
    pub a: Option<SectionSummary>,
    pub b: Option<SectionSummary>,
    pub equal: bool,
}

/// A header field that differs.
#[derive(Clone, Debug, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// What a cpio entry is, without its data.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EntrySummary {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub size: u32,
    /// SHA-256 of the data of a regular file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(skip)]
    ino: u32,
    #[serde(skip)]
    nlink: u32,
    #[serde(skip)]
    dev: (u32, u32),
    #[serde(skip)]
    rdev: (u32, u32),
}

/// An entry present in both ramdisks with different attributes.
#[derive(Clone, Debug, Serialize)]
pub struct EntryChange {
    pub path: String,
    pub changes: Vec<FieldChange>,
}

/// The entry-level difference of two ramdisks.
#[derive(Clone, Debug, Serialize, Default)]
pub struct RamdiskDiff {
    pub ramdisk: usize,
    pub added: Vec<EntrySummary>,
    pub removed: Vec<EntrySummary>,
    pub changed: Vec<EntryChange>,
    /// Same entries, different order: the bytes (and so the PCRs) differ.
    pub order_differs: bool,
    /// Encoding differences that are not about any one file (trailer, padding, header text).
    pub encoding: Vec<String>,
    /// Set when a side could not be read as a cpio archive; the other fields are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct EifDiff {
    /// True when PCR0, PCR1, PCR2 and PCR8 are all equal.
    pub same_measurements: bool,
    pub measurements: Vec<PcrPair>,
    pub header: Vec<FieldChange>,
    pub sections: Vec<SectionPair>,
    pub ramdisks: Vec<RamdiskDiff>,
}

/// Compares `a` and `b`: one pass over each file, plus one over each pair of differing ramdisks.
pub fn diff(a: &EifFile, b: &EifFile) -> Result<EifDiff, ReadError> {
    let desc_a = describe_scan(a, true)?;
    let desc_b = describe_scan(b, true)?;
    let (ma, mb) = (&desc_a.measurements, &desc_b.measurements);
    let da = desc_a
        .scan
        .section_digests
        .as_deref()
        .expect("asked for digests");
    let db = desc_b
        .scan
        .section_digests
        .as_deref()
        .expect("asked for digests");

    let measurements = vec![
        pcr_pair("PCR0", Some(ma.pcr0), Some(mb.pcr0)),
        pcr_pair("PCR1", Some(ma.pcr1), Some(mb.pcr1)),
        pcr_pair("PCR2", Some(ma.pcr2), Some(mb.pcr2)),
        pcr_pair("PCR8", ma.pcr8, mb.pcr8),
    ];
    let same_measurements = measurements.iter().all(|p| p.equal);

    let mut header = Vec::new();
    let mut field = |name: &str, x: String, y: String| push_change(&mut header, name, x, y);
    field("version", a.version().to_string(), b.version().to_string());
    field("arch", a.arch().to_string(), b.arch().to_string());
    let (ha, hb) = (a.header(), b.header());
    field(
        "default_mem",
        ha.default_mem.to_string(),
        hb.default_mem.to_string(),
    );
    field(
        "default_cpus",
        ha.default_cpus.to_string(),
        hb.default_cpus.to_string(),
    );
    field(
        "sections",
        a.sections().len().to_string(),
        b.sections().len().to_string(),
    );

    let roles_a = roles(a);
    let roles_b = roles(b);
    let mut names: Vec<&String> = roles_a.iter().map(|(n, _)| n).collect();
    for (n, _) in &roles_b {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let summary = |eif_roles: &[(String, &Section)], digests: &[[u8; 48]], name: &str| {
        eif_roles
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| SectionSummary {
                size: s.size,
                sha384: hex::encode(digests[s.index]),
            })
    };
    let mut sections = Vec::new();
    let mut ramdisks = Vec::new();
    for name in names {
        let x = summary(&roles_a, da, name);
        let y = summary(&roles_b, db, name);
        let equal = x == y;
        sections.push(SectionPair {
            section: name.clone(),
            a: x.clone(),
            b: y.clone(),
            equal,
        });
        if equal || x.is_none() || y.is_none() {
            continue;
        }
        if let (Some(sa), Some(sb)) = (ramdisk_role(&roles_a, name), ramdisk_role(&roles_b, name)) {
            let index = sa.ramdisk_index.expect("a ramdisk");
            ramdisks.push(diff_ramdisks(
                index,
                a.section_reader(sa),
                b.section_reader(sb),
            ));
        }
    }

    Ok(EifDiff {
        same_measurements,
        measurements,
        header,
        sections,
        ramdisks,
    })
}

fn pcr_pair(register: &'static str, a: Option<Pcr>, b: Option<Pcr>) -> PcrPair {
    PcrPair {
        register,
        a,
        b,
        equal: a == b,
    }
}

fn ramdisk_role<'a>(roles: &[(String, &'a Section)], name: &str) -> Option<&'a Section> {
    roles
        .iter()
        .find(|(n, s)| n == name && s.ramdisk_index.is_some())
        .map(|(_, s)| *s)
}

/// Names sections by role so that files with different section counts still pair up.
fn roles(eif: &EifFile) -> Vec<(String, &Section)> {
    eif.sections()
        .iter()
        .map(|s| {
            let name = match (s.kind, s.ramdisk_index) {
                (SectionKind::Ramdisk, Some(i)) => format!("ramdisk {i}"),
                (kind, _) => kind.to_string(),
            };
            (name, s)
        })
        .collect()
}

/// Reads a ramdisk's entries (gzip-compressed ramdisks are decompressed on the fly).
fn read_entries(reader: impl Read) -> Result<(Vec<EntrySummary>, cpio::End, bool), String> {
    let mut buffered = BufReader::new(reader);
    let mut magic = [0u8; 2];
    let peek = std::io::BufRead::fill_buf(&mut buffered).map_err(|e| e.to_string())?;
    let gzip = peek.len() >= 2 && {
        magic.copy_from_slice(&peek[..2]);
        magic == [0x1f, 0x8b]
    };
    let inner: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut r = cpio::Reader::new(inner);
    let mut out = Vec::new();
    let mut lowercase = true;
    while let Some(mut entry) = r.next_entry().map_err(|e| e.to_string())? {
        let h = entry.header().clone();
        lowercase &= !entry.raw_header().iter().any(|c| c.is_ascii_uppercase());
        let kind = h.kind();
        let mut sha256 = None;
        let mut link_target = None;
        match kind {
            cpio::Kind::File => {
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = entry.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                sha256 = Some(hex::encode(hasher.finalize()));
            }
            cpio::Kind::Symlink => {
                let mut target = Vec::new();
                entry
                    .by_ref()
                    .take(64 * 1024)
                    .read_to_end(&mut target)
                    .map_err(|e| e.to_string())?;
                link_target = Some(String::from_utf8_lossy(&target).into_owned());
            }
            _ => {}
        }
        out.push(EntrySummary {
            path: h.name_lossy().into_owned(),
            kind: kind_name(kind),
            mode: format!("{:o}", h.perm()),
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            size: h.filesize,
            sha256,
            link_target,
            ino: h.ino,
            nlink: h.nlink,
            dev: (h.devmajor, h.devminor),
            rdev: (h.rdevmajor, h.rdevminor),
        });
    }
    let end = r.finish().map_err(|e| e.to_string())?;
    Ok((out, end, lowercase))
}

fn kind_name(k: cpio::Kind) -> &'static str {
    match k {
        cpio::Kind::File => "file",
        cpio::Kind::Dir => "directory",
        cpio::Kind::Symlink => "symlink",
        cpio::Kind::CharDev => "char device",
        cpio::Kind::BlockDev => "block device",
        cpio::Kind::Fifo => "fifo",
        cpio::Kind::Socket => "socket",
        cpio::Kind::Unknown(_) => "unknown",
    }
}

/// Entry-level difference of two ramdisk streams.
pub fn diff_ramdisks(index: usize, a: impl Read, b: impl Read) -> RamdiskDiff {
    let mut out = RamdiskDiff {
        ramdisk: index,
        ..RamdiskDiff::default()
    };
    let (ea, end_a, lower_a) = match read_entries(a) {
        Ok(v) => v,
        Err(e) => {
            out.unreadable = Some(format!("first image: {e}"));
            return out;
        }
    };
    let (eb, end_b, lower_b) = match read_entries(b) {
        Ok(v) => v,
        Err(e) => {
            out.unreadable = Some(format!("second image: {e}"));
            return out;
        }
    };

    // The same path may appear twice (nitro-cli writes `rootfs` twice): key by occurrence.
    let keyed = |entries: &[EntrySummary]| {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        entries
            .iter()
            .map(|e| {
                let n = seen.entry(e.path.as_str()).or_default();
                *n += 1;
                ((e.path.clone(), *n), e.clone())
            })
            .collect::<Vec<_>>()
    };
    let ka = keyed(&ea);
    let kb = keyed(&eb);
    let map_a: HashMap<_, _> = ka.iter().cloned().collect();
    let map_b: HashMap<_, _> = kb.iter().cloned().collect();
    for (key, e) in &ka {
        match map_b.get(key) {
            None => out.removed.push(e.clone()),
            Some(other) => {
                let changes = entry_changes(e, other);
                if !changes.is_empty() {
                    out.changed.push(EntryChange {
                        path: e.path.clone(),
                        changes,
                    });
                }
            }
        }
    }
    for (key, e) in &kb {
        if !map_a.contains_key(key) {
            out.added.push(e.clone());
        }
    }
    let common_a: Vec<_> = ka
        .iter()
        .filter(|(k, _)| map_b.contains_key(k))
        .map(|(k, _)| k)
        .collect();
    let common_b: Vec<_> = kb
        .iter()
        .filter(|(k, _)| map_a.contains_key(k))
        .map(|(k, _)| k)
        .collect();
    out.order_differs = common_a != common_b;

    if lower_a != lower_b {
        out.encoding.push(format!(
            "header hex digits: {} in the first, {} in the second",
            case_name(lower_a),
            case_name(lower_b)
        ));
    }
    if end_a.trailer != end_b.trailer {
        out.encoding.push(format!(
            "trailer differs (ino {} vs {}, dev {}:{} vs {}:{})",
            end_a.trailer.ino,
            end_b.trailer.ino,
            end_a.trailer.devmajor,
            end_a.trailer.devminor,
            end_b.trailer.devmajor,
            end_b.trailer.devminor
        ));
    }
    if (end_a.trailing_len, end_a.trailing_all_zero)
        != (end_b.trailing_len, end_b.trailing_all_zero)
    {
        out.encoding.push(format!(
            "after the trailer: {} bytes{} vs {} bytes{}",
            end_a.trailing_len,
            if end_a.trailing_all_zero {
                ""
            } else {
                " (not all zero)"
            },
            end_b.trailing_len,
            if end_b.trailing_all_zero {
                ""
            } else {
                " (not all zero)"
            }
        ));
    }
    out
}

/// Records `field` as changed when its two renderings differ.
fn push_change(out: &mut Vec<FieldChange>, field: &str, a: String, b: String) {
    if a != b {
        out.push(FieldChange {
            field: field.into(),
            a,
            b,
        });
    }
}

fn case_name(lower: bool) -> &'static str {
    if lower { "lowercase" } else { "uppercase" }
}

fn entry_changes(a: &EntrySummary, b: &EntrySummary) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut cmp = |field: &str, x: String, y: String| push_change(&mut out, field, x, y);
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    cmp("type", a.kind.into(), b.kind.into());
    cmp("mode", a.mode.clone(), b.mode.clone());
    cmp("uid", a.uid.to_string(), b.uid.to_string());
    cmp("gid", a.gid.to_string(), b.gid.to_string());
    cmp("mtime", a.mtime.to_string(), b.mtime.to_string());
    cmp("size", a.size.to_string(), b.size.to_string());
    cmp("content sha256", opt(&a.sha256), opt(&b.sha256));
    cmp("link target", opt(&a.link_target), opt(&b.link_target));
    cmp("inode", a.ino.to_string(), b.ino.to_string());
    cmp("nlink", a.nlink.to_string(), b.nlink.to_string());
    cmp(
        "dev",
        format!("{}:{}", a.dev.0, a.dev.1),
        format!("{}:{}", b.dev.0, b.dev.1),
    );
    cmp(
        "rdev",
        format!("{}:{}", a.rdev.0, a.rdev.1),
        format!("{}:{}", b.rdev.0, b.rdev.1),
    );
    out
}

impl EifDiff {
    /// A readable report, most important first: registers, then sections, then entries.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for p in &self.measurements {
            let show = |v: &Option<Pcr>| v.map_or("(none)".to_string(), |p| p.to_hex());
            if p.equal {
                let _ = writeln!(s, "{}  same      {}", p.register, show(&p.a));
            } else {
                let _ = writeln!(s, "{}  DIFFERS", p.register);
                let _ = writeln!(s, "      a: {}", show(&p.a));
                let _ = writeln!(s, "      b: {}", show(&p.b));
            }
        }
        for f in &self.header {
            let _ = writeln!(s, "header {}: {} -> {}", f.field, f.a, f.b);
        }
        let _ = writeln!(s, "\nSections:");
        for sec in &self.sections {
            let desc = |x: &Option<SectionSummary>| {
                x.as_ref().map_or("absent".to_string(), |x| {
                    format!("{} bytes, sha384 {}", x.size, &x.sha384[..16])
                })
            };
            if sec.equal {
                let _ = writeln!(s, "  {:<10} same     {}", sec.section, desc(&sec.a));
            } else {
                let _ = writeln!(s, "  {:<10} DIFFERS  {}", sec.section, desc(&sec.a));
                let _ = writeln!(s, "  {:<10}          {}", "", desc(&sec.b));
            }
        }
        for rd in &self.ramdisks {
            let _ = writeln!(s, "\nRamdisk {} entries:", rd.ramdisk);
            if let Some(u) = &rd.unreadable {
                let _ = writeln!(s, "  not a readable cpio archive: {u}");
                continue;
            }
            for e in &rd.added {
                let _ = writeln!(
                    s,
                    "  + {}  ({}, {}, {}:{}, {} bytes)",
                    e.path, e.kind, e.mode, e.uid, e.gid, e.size
                );
            }
            for e in &rd.removed {
                let _ = writeln!(
                    s,
                    "  - {}  ({}, {}, {}:{}, {} bytes)",
                    e.path, e.kind, e.mode, e.uid, e.gid, e.size
                );
            }
            for c in &rd.changed {
                let what: Vec<String> = c
                    .changes
                    .iter()
                    .map(|f| format!("{} {} -> {}", f.field, f.a, f.b))
                    .collect();
                let _ = writeln!(s, "  ~ {}: {}", c.path, what.join(", "));
            }
            if rd.order_differs {
                let _ = writeln!(s, "  entry order differs");
            }
            for e in &rd.encoding {
                let _ = writeln!(s, "  encoding: {e}");
            }
            if rd.added.is_empty()
                && rd.removed.is_empty()
                && rd.changed.is_empty()
                && !rd.order_differs
                && rd.encoding.is_empty()
            {
                let _ = writeln!(
                    s,
                    "  entries identical; the archives differ in their bytes only"
                );
            }
        }
        s
    }
}
