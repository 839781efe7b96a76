//! `eifctl build-enclave`: an EIF from a Docker image, a drop-in for nitro-cli's command.

use std::path::PathBuf;

use eifctl::blobs::BlobSet;
use eifctl::docker::DockerError;
use eifctl::eif::WriteError;
use eifctl::enclave::{BuildError, BuildOptions, build};
use serde_json::json;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Build an EIF from an image in the local Docker engine, with the PCRs nitro-cli 1.5.0 would
/// print for it, and print them as nitro-cli does (JSON on stdout, progress on stderr).
///
/// Unlike nitro-cli, the output is byte-identical for the same image and blobs: the metadata
/// build time comes from --build-time or SOURCE_DATE_EPOCH, and host-specific fields are left
/// out of the Docker information.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: name:tag, name@sha256:digest (pulled if absent and a registry is reachable),
    /// or an image ID.
    #[arg(long, value_name = "IMAGE")]
    pub docker_uri: String,
    /// Where to write the EIF (written to a temporary file, then renamed).
    #[arg(long, value_name = "FILE")]
    pub output_file: PathBuf,
    /// Boot blob directory (bzImage/Image, cmdline, init, nsm.ko). Default: NITRO_CLI_BLOBS,
    /// else /usr/share/nitro_enclaves/blobs.
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
    /// Image name for the metadata (default: the image reference up to its first ':').
    #[arg(long)]
    pub name: Option<String>,
    /// Image version for the metadata (default: the image ID).
    #[arg(long)]
    pub version: Option<String>,
    /// Custom metadata: a JSON object, inline or in a file.
    #[arg(long, value_name = "JSON|FILE")]
    pub metadata: Option<String>,
    /// Build time for the metadata: RFC 3339, or `now`. Default: SOURCE_DATE_EPOCH if set,
    /// else 1970-01-01T00:00:00+00:00.
    #[arg(long, value_name = "RFC3339")]
    pub build_time: Option<String>,
    /// PEM certificate to sign the image with (PCR8); needs --private-key.
    #[arg(long, value_name = "FILE", requires = "private_key")]
    pub signing_certificate: Option<PathBuf>,
    /// PEM EC private key (P-256, P-384 or P-521) matching --signing-certificate.
    #[arg(long, value_name = "FILE", requires = "signing_certificate")]
    pub private_key: Option<PathBuf>,
    /// Accepted for symmetry with other commands: the output is nitro-cli's JSON either way.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let build_time = super::resolve_build_time(args.build_time.as_deref())?;
    let custom_metadata = match &args.metadata {
        None => serde_json::Value::Null,
        Some(m) => super::custom_metadata(m)?,
    };
    let signer = super::signer(args.signing_certificate.as_ref(), args.private_key.as_ref())?;
    let rt = super::runtime()?;
    let docker = rt
        .block_on(eifctl::docker::connect())
        .map_err(docker_failure)?;

    eprintln!("Start building the Enclave Image...");
    let opts = BuildOptions {
        docker_uri: args.docker_uri,
        output: args.output_file.clone(),
        blobs: BlobSet::locate(args.blobs.as_deref()),
        name: args.name,
        version: args.version,
        build_time,
        custom_metadata,
        signer,
    };
    let built = build(&rt, &docker, opts, &|line| eprintln!("{line}")).map_err(build_failure)?;
    eprintln!(
        "Enclave Image successfully created: {} ({} bytes)",
        args.output_file.display(),
        built.size
    );
    super::print_json(&json!({
        "Measurements": eifctl::describe::measurements_json(&built.measurements)
    }));
    Ok(Outcome::Ok)
}

fn docker_failure(e: DockerError) -> Failure {
    match e {
        DockerError::ImageNotFound { .. } => Failure::input(one_line(&e)),
        other => Failure::environment(one_line(&other)),
    }
}

fn build_failure(e: BuildError) -> Failure {
    match e {
        BuildError::Docker(d) => docker_failure(d),
        BuildError::Blob(_) => Failure::environment(one_line(&e)),
        BuildError::Write(w @ WriteError::Output { .. }) => Failure::environment(one_line(&w)),
        other => Failure::input(one_line(&other)),
    }
}
