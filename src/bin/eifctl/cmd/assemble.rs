//! `eifctl assemble`: an EIF from a kernel, a command line and ramdisks (AWS's `eif_build`).

use std::path::PathBuf;

use eifctl::eif::signature::SignatureSection;
use eifctl::eif::{Arch, BuildInfo, EifBuilder, Metadata, Source, trim_cmdline};
use serde_json::json;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Assemble an EIF from its parts, deterministically, and print its measurements as
/// nitro-cli does.
///
/// The first ramdisk is the bootstrap ramdisk (init and nsm.ko: PCR1), the others are the
/// application (PCR2). Nothing is taken from the clock unless `--build-time now` asks for it:
/// the same inputs give the same bytes.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("cmdline-source").required(true).args(["cmdline", "cmdline_file"])))]
pub struct Args {
    /// Kernel image (bzImage for x86_64, Image for aarch64).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
    /// Kernel command line.
    #[arg(long, value_name = "TEXT")]
    pub cmdline: Option<String>,
    /// File holding the kernel command line (trimmed, as nitro-cli trims its cmdline blob).
    #[arg(long, value_name = "FILE")]
    pub cmdline_file: Option<PathBuf>,
    /// A ramdisk (cpio archive); repeat for several, bootstrap ramdisk first.
    #[arg(long = "ramdisk", value_name = "FILE", required = true)]
    pub ramdisks: Vec<PathBuf>,
    /// Where to write the EIF (written to a temporary file, then renamed).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Image architecture (x86_64 or aarch64), stored in the header flags.
    #[arg(long, default_value = "x86_64")]
    pub arch: Arch,
    /// Image name for the metadata (default: the kernel's file name, as eif_build does).
    #[arg(long)]
    pub name: Option<String>,
    /// Image version for the metadata.
    #[arg(long, default_value = "1.0")]
    pub version: String,
    /// Build time for the metadata: RFC 3339, or `now`. Default: SOURCE_DATE_EPOCH if set,
    /// else 1970-01-01T00:00:00+00:00.
    #[arg(long, value_name = "RFC3339")]
    pub build_time: Option<String>,
    /// Custom metadata: a JSON object, inline (starting with `{`) or in a file.
    #[arg(long, value_name = "JSON|FILE")]
    pub metadata: Option<String>,
    /// PEM certificate to sign the image with (PCR8); needs --private-key.
    #[arg(long, value_name = "FILE", requires = "private_key")]
    pub signing_certificate: Option<PathBuf>,
    /// PEM EC private key (P-256, P-384 or P-521) matching --signing-certificate.
    #[arg(long, value_name = "FILE", requires = "signing_certificate")]
    pub private_key: Option<PathBuf>,
    /// Kernel .config, to record the operating system and kernel version as nitro-cli does.
    #[arg(long, value_name = "FILE")]
    pub kernel_config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let cmdline = match (&args.cmdline, &args.cmdline_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path)
                .map_err(|e| Failure::input(format!("reading {}: {}", path.display(), e)))?;
            trim_cmdline(&raw).to_string()
        }
        (None, None) => unreachable!("clap requires one of --cmdline and --cmdline-file"),
    };
    let build_time = super::resolve_build_time(args.build_time.as_deref())?;
    let custom = match &args.metadata {
        None => serde_json::Value::Null,
        Some(m) => super::custom_metadata(m)?,
    };
    let (operating_system, kernel_version) = match &args.kernel_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::input(format!("reading {}: {}", path.display(), e)))?;
            BuildInfo::os_and_kernel_from_config(&text)
        }
        None => ("Generic Linux".to_string(), "Unknown version".to_string()),
    };
    let name = match args.name {
        Some(n) => n,
        None => args
            .kernel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Failure::input(format!("--kernel {}: not a file", args.kernel.display()))
            })?,
    };
    let metadata = Metadata {
        image_name: name,
        image_version: args.version,
        build: BuildInfo {
            build_time,
            build_tool: env!("CARGO_PKG_NAME").into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            operating_system,
            kernel_version,
        },
        docker_info: serde_json::Value::Null,
        custom,
    };
    let signer = super::signer(args.signing_certificate.as_ref(), args.private_key.as_ref())?;
    let mut builder = EifBuilder::new(
        args.arch,
        Source::File(args.kernel.clone()),
        cmdline,
        &metadata,
    );
    for rd in &args.ramdisks {
        builder = builder.ramdisk(Source::File(rd.clone()));
    }
    if let Some(signer) = signer {
        builder = builder.signer(Box::new(signer));
    }
    let written = builder.write_to(&args.output)?;
    let mut measurements = written.measurements;
    if let Some(section) = &written.signature {
        let pcr8 = SignatureSection::parse(section)
            .and_then(|s| s.pcr8())
            .map_err(|e| Failure::input(format!("the signature just written: {}", one_line(&e))))?;
        measurements.pcr8 = Some(pcr8);
    }
    eprintln!(
        "Wrote {} ({} bytes, {} sections)",
        args.output.display(),
        written.size,
        written.sections.len()
    );
    super::print_json(&json!({
        "Measurements": eifctl::describe::measurements_json(&measurements)
    }));
    Ok(Outcome::Ok)
}
