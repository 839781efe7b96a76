//! What an EIF is: its measurements, integrity, signature and metadata.
//!
//! The JSON form is nitro-cli's `describe-eif` output, field for field and in its order, so
//! scripts written against nitro-cli keep working; the human form adds the layout (sections,
//! offsets, sizes) that nitro-cli does not show.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::eif::signature::{CertificateInfo, SignatureSection};
use crate::eif::{EifFile, Metadata, Problem, ReadError, Scan, SectionKind};
use crate::pcr::{Measurements, NITRO_CLI_HASH_ALGORITHM};

/// The signature section, checked.
#[derive(Clone, Debug)]
pub struct SignatureReport {
    pub certificate: CertificateInfo,
    /// True when the COSE signature verifies with the certificate's key over this image's PCR0.
    pub valid: bool,
}

/// Everything `describe` reports about one file.
#[derive(Clone, Debug)]
pub struct Description {
    pub scan: Scan,
    pub measurements: Measurements,
    pub crc_ok: bool,
    pub signature: Option<SignatureReport>,
    pub metadata: Option<Metadata>,
}

/// Reads and checks `eif` completely (one pass over the data).
pub fn describe(eif: &EifFile) -> Result<Description, ReadError> {
    describe_scan(eif, false)
}

/// [`describe`], optionally keeping each section's digest (for diffs).
pub fn describe_scan(eif: &EifFile, section_digests: bool) -> Result<Description, ReadError> {
    let scan = eif.scan(section_digests)?;
    let mut measurements = scan.measurements;
    let metadata = match &scan.metadata {
        Some(bytes) => Some(Metadata::from_bytes(bytes).map_err(|e| {
            let offset = eif.section(SectionKind::Metadata).map(|s| s.offset);
            eif.error(offset, Problem::BadMetadata(e))
        })?),
        None => None,
    };
    let signature = match &scan.signature {
        Some(bytes) => {
            let offset = eif.section(SectionKind::Signature).map(|s| s.offset);
            let bad = |e: crate::eif::signature::SignatureError| {
                eif.error(offset, Problem::BadSignature(e.to_string()))
            };
            let section = SignatureSection::parse(bytes).map_err(bad)?;
            let der = section.signing_certificate_der().map_err(bad)?;
            measurements.pcr8 = Some(crate::eif::signature::pcr8(&der));
            let certificate = crate::eif::signature::certificate_info(&der).map_err(bad)?;
            let valid = section.verify_pcr0(&measurements.pcr0.0).map_err(bad)?;
            Some(SignatureReport { certificate, valid })
        }
        None => None,
    };
    let crc_ok = scan.crc_ok(eif.header());
    Ok(Description {
        scan,
        measurements,
        crc_ok,
        signature,
        metadata,
    })
}

impl Description {
    /// `nitro-cli describe-eif`'s document.
    pub fn nitro_cli_json(&self, eif: &EifFile) -> Value {
        let mut out = Map::new();
        out.insert("EifVersion".into(), json!(eif.version()));
        out.insert("Measurements".into(), measurements_json(&self.measurements));
        out.insert("IsSigned".into(), json!(self.signature.is_some()));
        if let Some(sig) = &self.signature {
            out.insert(
                "SigningCertificate".into(),
                serde_json::to_value(&sig.certificate).expect("plain data"),
            );
        }
        out.insert("CheckCRC".into(), json!(self.crc_ok));
        if let Some(sig) = &self.signature {
            out.insert("SignatureCheck".into(), json!(sig.valid));
        }
        if let Some(m) = &self.metadata {
            out.insert("ImageName".into(), json!(m.image_name));
            out.insert("ImageVersion".into(), json!(m.image_version));
            let mut meta = Map::new();
            meta.insert("BuildTime".into(), json!(m.build.build_time));
            meta.insert("BuildTool".into(), json!(m.build.build_tool));
            meta.insert("BuildToolVersion".into(), json!(m.build.build_tool_version));
            meta.insert("OperatingSystem".into(), json!(m.build.operating_system));
            meta.insert("KernelVersion".into(), json!(m.build.kernel_version));
            meta.insert("DockerInfo".into(), m.docker_info.clone());
            // nitro-cli flattens the custom metadata object into this one.
            match &m.custom {
                Value::Null => {}
                Value::Object(custom) => {
                    for (k, v) in custom {
                        meta.insert(k.clone(), v.clone());
                    }
                }
                other => {
                    meta.insert("CustomMetadata".into(), other.clone());
                }
            }
            out.insert("Metadata".into(), Value::Object(meta));
        }
        Value::Object(out)
    }

    /// A readable report: layout, measurements, integrity, metadata.
    pub fn human(&self, eif: &EifFile) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", eif.path().display());
        let _ = writeln!(
            s,
            "  EIF version {}, {}, {} bytes, {} sections, default {} MiB / {} vCPUs",
            eif.version(),
            eif.arch(),
            eif.len(),
            eif.sections().len(),
            eif.header().default_mem >> 20,
            eif.header().default_cpus
        );
        let _ = writeln!(s, "\nSections:");
        let _ = writeln!(
            s,
            "  {:>2}  {:<10} {:>14} {:>14}",
            "#", "type", "offset", "size"
        );
        for sec in eif.sections() {
            let kind = match sec.ramdisk_index {
                Some(i) => format!("ramdisk {i}"),
                None => sec.kind.to_string(),
            };
            let _ = writeln!(
                s,
                "  {:>2}  {:<10} {:>14} {:>14}",
                sec.index, kind, sec.offset, sec.size
            );
        }
        let _ = writeln!(s, "\nMeasurements (SHA-384):");
        let m = &self.measurements;
        let _ = writeln!(s, "  PCR0  {}  (image)", m.pcr0);
        let _ = writeln!(s, "  PCR1  {}  (kernel and bootstrap)", m.pcr1);
        let _ = writeln!(s, "  PCR2  {}  (application)", m.pcr2);
        if let Some(p) = m.pcr8 {
            let _ = writeln!(s, "  PCR8  {p}  (signing certificate)");
        }
        let _ = writeln!(s, "\nIntegrity:");
        let _ = writeln!(
            s,
            "  CRC-32  {}  (header {:08x}, computed {:08x})",
            if self.crc_ok { "ok" } else { "MISMATCH" },
            eif.header().crc32,
            self.scan.crc_computed
        );
        match &self.signature {
            None => {
                let _ = writeln!(s, "  signed  no");
            }
            Some(sig) => {
                let _ = writeln!(
                    s,
                    "  signed  yes, signature {}",
                    if sig.valid {
                        "valid over PCR0"
                    } else {
                        "INVALID"
                    }
                );
                let issuer: Vec<String> = sig
                    .certificate
                    .issuer_name
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(s, "  issuer  {}", issuer.join(", "));
                let _ = writeln!(
                    s,
                    "  valid   {} to {}",
                    sig.certificate.not_before, sig.certificate.not_after
                );
            }
        }
        if let Some(md) = &self.metadata {
            let _ = writeln!(s, "\nMetadata:");
            let _ = writeln!(s, "  name      {}", md.image_name);
            let _ = writeln!(s, "  version   {}", md.image_version);
            let _ = writeln!(s, "  built     {}", md.build.build_time);
            let _ = writeln!(
                s,
                "  tool      {} {}",
                md.build.build_tool, md.build.build_tool_version
            );
            let _ = writeln!(
                s,
                "  kernel    {} {}",
                md.build.operating_system, md.build.kernel_version
            );
            if !md.custom.is_null() {
                let _ = writeln!(s, "  custom    {}", md.custom);
            }
        }
        s
    }
}

/// The `Measurements` object nitro-cli prints (a sorted map: HashAlgorithm, PCR0, PCR1, PCR2, PCR8).
pub fn measurements_json(m: &Measurements) -> Value {
    let mut out = Map::new();
    out.insert("HashAlgorithm".into(), json!(NITRO_CLI_HASH_ALGORITHM));
    out.insert("PCR0".into(), json!(m.pcr0.to_hex()));
    out.insert("PCR1".into(), json!(m.pcr1.to_hex()));
    out.insert("PCR2".into(), json!(m.pcr2.to_hex()));
    if let Some(p) = m.pcr8 {
        out.insert("PCR8".into(), json!(p.to_hex()));
    }
    Value::Object(out)
}
