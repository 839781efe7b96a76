//! The Enclave Image File format (EIF).
//!
//! An EIF is a fixed 548-byte header followed by sections laid back to back, each a 12-byte
//! section header and its data. The header repeats every section's offset and size so the Nitro
//! loader can place ramdisks without walking the file; a reader must therefore check that the
//! table and the chain of section headers agree, or two tools could see two different images in
//! one file. All integers are big-endian.

mod metadata;
mod reader;
pub mod signature;
mod writer;

pub use metadata::{BuildInfo, Metadata, UNKNOWN, rfc3339_utc};
pub use reader::{EifFile, ReadError, Scan, Section, SectionDigests};
pub use reader::{MAX_METADATA, MAX_SIGNATURE, Problem, SectionReader};
pub use writer::{EifBuilder, Pcr0Signer, Producer, Source, WriteError, Written, trim_cmdline};

/// `.eif`
pub const MAGIC: [u8; 4] = *b".eif";
/// The version AWS's builder writes today: v4 added the metadata section.
pub const CURRENT_VERSION: u16 = 4;
/// Size of the file header.
pub const HEADER_LEN: usize = 548;
/// Bytes of the header the CRC covers: everything before the CRC field itself.
pub const HEADER_CRC_SPAN: usize = 544;
/// Size of one section header.
pub const SECTION_HEADER_LEN: usize = 12;
/// The section table has room for this many sections.
pub const MAX_SECTIONS: usize = 32;
/// Header flag bit 0: the image is for aarch64 (clear: x86_64).
pub const FLAG_AARCH64: u16 = 0x1;
/// What AWS's builder writes as the default enclave memory (1 GiB).
pub const DEFAULT_MEM: u64 = 1 << 30;
/// What AWS's builder writes as the default enclave CPU count.
pub const DEFAULT_CPUS: u64 = 2;

/// Target architecture of an image, carried in the header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// Name of the kernel blob nitro-cli uses for this architecture.
    pub fn kernel_blob_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture of the machine running eifctl.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unknown architecture {other:?} (expected x86_64 or aarch64)"
            )),
        }
    }
}

/// The kinds of section an EIF may hold; 0 and values above 5 are invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SectionKind {
    Kernel,
    Cmdline,
    Ramdisk,
    Signature,
    Metadata,
}

impl SectionKind {
    pub fn from_u16(v: u16) -> Option<SectionKind> {
        Some(match v {
            1 => SectionKind::Kernel,
            2 => SectionKind::Cmdline,
            3 => SectionKind::Ramdisk,
            4 => SectionKind::Signature,
            5 => SectionKind::Metadata,
            _ => return None,
        })
    }

    pub fn to_u16(self) -> u16 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Cmdline => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
            SectionKind::Metadata => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Cmdline => "cmdline",
            SectionKind::Ramdisk => "ramdisk",
            SectionKind::Signature => "signature",
            SectionKind::Metadata => "metadata",
        }
    }
}

impl std::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixed file header, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u16,
    pub flags: u16,
    pub default_mem: u64,
    pub default_cpus: u64,
    pub reserved: u16,
    pub num_sections: u16,
    pub section_offsets: [u64; MAX_SECTIONS],
    pub section_sizes: [u64; MAX_SECTIONS],
    pub unused: u32,
    pub crc32: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut section_offsets = [0u64; MAX_SECTIONS];
        let mut section_sizes = [0u64; MAX_SECTIONS];
        for i in 0..MAX_SECTIONS {
            section_offsets[i] = u64_at(0x1c + 8 * i);
            section_sizes[i] = u64_at(0x11c + 8 * i);
        }
        Header {
            magic: [b[0], b[1], b[2], b[3]],
            version: u16_at(4),
            flags: u16_at(6),
            default_mem: u64_at(8),
            default_cpus: u64_at(0x10),
            reserved: u16_at(0x18),
            num_sections: u16_at(0x1a),
            section_offsets,
            section_sizes,
            unused: u32_at(0x21c),
            crc32: u32_at(0x220),
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..6].copy_from_slice(&self.version.to_be_bytes());
        b[6..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..0x10].copy_from_slice(&self.default_mem.to_be_bytes());
        b[0x10..0x18].copy_from_slice(&self.default_cpus.to_be_bytes());
        b[0x18..0x1a].copy_from_slice(&self.reserved.to_be_bytes());
        b[0x1a..0x1c].copy_from_slice(&self.num_sections.to_be_bytes());
        for i in 0..MAX_SECTIONS {
            let o = 0x1c + 8 * i;
            b[o..o + 8].copy_from_slice(&self.section_offsets[i].to_be_bytes());
            let o = 0x11c + 8 * i;
            b[o..o + 8].copy_from_slice(&self.section_sizes[i].to_be_bytes());
        }
        b[0x21c..0x220].copy_from_slice(&self.unused.to_be_bytes());
        b[0x220..0x224].copy_from_slice(&self.crc32.to_be_bytes());
        b
    }

    /// The architecture the flags name, or `None` if flag bits other than bit 0 are set.
    pub fn arch(&self) -> Option<Arch> {
        match self.flags {
            0 => Some(Arch::X86_64),
            FLAG_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

/// A section header, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    pub kind: u16,
    pub flags: u16,
    pub size: u64,
}

impl SectionHeader {
    pub fn parse(b: &[u8; SECTION_HEADER_LEN]) -> SectionHeader {
        SectionHeader {
            kind: u16::from_be_bytes([b[0], b[1]]),
            flags: u16::from_be_bytes([b[2], b[3]]),
            size: u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")),
        }
    }

    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut b = [0u8; SECTION_HEADER_LEN];
        b[0..2].copy_from_slice(&self.kind.to_be_bytes());
        b[2..4].copy_from_slice(&self.flags.to_be_bytes());
        b[4..12].copy_from_slice(&self.size.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let mut h = Header {
            magic: MAGIC,
            version: 4,
            flags: FLAG_AARCH64,
            default_mem: DEFAULT_MEM,
            default_cpus: DEFAULT_CPUS,
            reserved: 0,
            num_sections: 3,
            section_offsets: [0; MAX_SECTIONS],
            section_sizes: [0; MAX_SECTIONS],
            unused: 0,
            crc32: 0xdead_beef,
        };
        h.section_offsets[2] = 0x0102_0304_0506_0708;
        h.section_sizes[31] = 42;
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b".eif");
        assert_eq!(&b[0x220..], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Header::parse(&b), h);
        assert_eq!(h.arch(), Some(Arch::Aarch64));
    }
}
