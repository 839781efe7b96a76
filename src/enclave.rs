//! From a Docker image to an EIF, as `nitro-cli build-enclave` does it, without nitro-cli.
//!
//! The image's filesystem is streamed from `docker export` through the ramdisk encoder into the
//! EIF writer: it is never held in memory, nor written to disk twice. Everything that ends up in
//! the file comes from the image, the boot blobs and the caller's options, never from the clock
//! or the host, so the same image and blobs give the same bytes on any machine.

use std::path::PathBuf;

use bollard::Docker;
use serde_json::{Map, Value, json};

use crate::blobs::{BlobError, BlobSet};
use crate::docker::{self, DockerError, ImageInfo};
use crate::eif::signature::{PemSigner, SignatureError, SignatureSection};
use crate::eif::{Arch, BuildInfo, EifBuilder, Metadata, Source, WriteError};
use crate::pcr::Measurements;
use crate::ramdisk::{self, Command, RamdiskError};

/// What to build and how to label it.
pub struct BuildOptions {
    /// The image reference, as given (`name:tag`, `name@sha256:…` or an image ID).
    pub docker_uri: String,
    pub output: PathBuf,
    pub blobs: BlobSet,
    /// `ImageName` in the metadata; default as nitro-cli: the reference up to its first `:`.
    pub name: Option<String>,
    /// `ImageVersion` in the metadata; default as nitro-cli: the image ID's hex digest.
    pub version: Option<String>,
    /// `BuildTime` in the metadata, already formatted (see [`crate::eif::rfc3339_utc`]).
    pub build_time: String,
    /// Custom metadata (a JSON object or null).
    pub custom_metadata: Value,
    pub signer: Option<PemSigner>,
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    pub measurements: Measurements,
    pub image: ImageInfo,
    pub arch: Arch,
    pub size: u64,
}

/// Why an enclave image could not be built; the output path is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(
        "image {reference} is for {arch}: Nitro Enclaves run amd64 (x86_64) or arm64 (aarch64) images"
    )]
    UnsupportedArch { reference: String, arch: String },
    #[error("image {reference}: {source}")]
    Command {
        reference: String,
        #[source]
        source: RamdiskError,
    },
    #[error("bootstrap ramdisk: {0}")]
    Bootstrap(#[source] RamdiskError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the signature just written: {0}")]
    Signature(#[from] SignatureError),
}

/// The EIF architecture of a Docker platform architecture.
pub fn arch_of_image(image: &ImageInfo, reference: &str) -> Result<Arch, BuildError> {
    match image.architecture.as_str() {
        "amd64" | "x86_64" => Ok(Arch::X86_64),
        "arm64" | "aarch64" => Ok(Arch::Aarch64),
        other => Err(BuildError::UnsupportedArch {
            reference: reference.to_string(),
            arch: other.to_string(),
        }),
    }
}

/// Builds the EIF. `progress` receives one line per step (for stderr).
pub fn build(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    opts: BuildOptions,
    progress: &dyn Fn(&str),
) -> Result<Built, BuildError> {
    // Everything that can be checked without Docker is checked first.
    let cmdline = opts.blobs.cmdline()?;
    let init = opts.blobs.init()?;
    let nsm = opts.blobs.nsm()?;

    let image = rt.block_on(docker::ensure_image(docker, &opts.docker_uri))?;
    let arch = arch_of_image(&image, &opts.docker_uri)?;
    let kernel = opts.blobs.kernel(arch)?;
    let id = if image.id == opts.docker_uri {
        String::new()
    } else {
        format!(" {}", image.id)
    };
    progress(&format!(
        "Using image {}{id} ({arch}) and boot blobs from {}",
        opts.docker_uri,
        opts.blobs.dir.display()
    ));
    let command = Command::from_config(
        image.cmd.as_deref(),
        image.entrypoint.as_deref(),
        image.env.as_deref(),
    )
    .map_err(|source| BuildError::Command {
        reference: opts.docker_uri.clone(),
        source,
    })?;

    let bootstrap =
        ramdisk::write_bootstrap(Vec::new(), &init, &nsm).map_err(BuildError::Bootstrap)?;
    let metadata = metadata(&opts, &image, arch);

    let export = docker::export_image(docker, &image.id, rt.handle())?;
    let customer = Source::Generated {
        name: format!("the customer ramdisk of {}", opts.docker_uri),
        produce: Box::new(move |out| {
            ramdisk::write_customer(export, &command, out)
                .map(|_| ())
                .map_err(std::io::Error::other)
        }),
    };
    let mut builder = EifBuilder::new(arch, Source::File(kernel), cmdline, &metadata)
        .ramdisk(Source::Bytes(bootstrap))
        .ramdisk(customer);
    if let Some(signer) = opts.signer {
        builder = builder.signer(Box::new(signer));
    }
    progress("Streaming the image filesystem into the EIF");
    let written = builder.write_to(&opts.output)?;
    let mut measurements = written.measurements;
    if let Some(section) = &written.signature {
        measurements.pcr8 = Some(SignatureSection::parse(section)?.pcr8()?);
    }
    Ok(Built {
        measurements,
        image,
        arch,
        size: written.size,
    })
}

/// The metadata nitro-cli writes, minus what would make it differ between machines or runs:
/// the build time is the caller's, and `DockerInfo` keeps only what the image itself fixes.
fn metadata(opts: &BuildOptions, image: &ImageInfo, arch: Arch) -> Metadata {
    let (operating_system, kernel_version) = opts
        .blobs
        .kernel_config(arch)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| BuildInfo::os_and_kernel_from_config(&text))
        .unwrap_or_else(|| (crate::eif::UNKNOWN.into(), crate::eif::UNKNOWN.into()));
    Metadata {
        image_name: opts
            .name
            .clone()
            .unwrap_or_else(|| default_image_name(&opts.docker_uri)),
        image_version: opts.version.clone().unwrap_or_else(|| {
            image
                .id
                .strip_prefix("sha256:")
                .unwrap_or(&image.id)
                .to_string()
        }),
        build: BuildInfo {
            build_time: opts.build_time.clone(),
            build_tool: env!("CARGO_PKG_NAME").into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            operating_system,
            kernel_version,
        },
        docker_info: reproducible_docker_info(&image.inspect),
        custom: opts.custom_metadata.clone(),
    }
}

/// nitro-cli's default image name: the reference up to its first `:`.
pub fn default_image_name(reference: &str) -> String {
    reference.split(':').next().unwrap_or(reference).to_string()
}

/// The parts of `docker image inspect` that are properties of the image, not of the machine
/// it was inspected on: no tags, registry digests, local paths, sizes or timestamps of use.
pub fn reproducible_docker_info(inspect: &Value) -> Value {
    const CONFIG_KEYS: [&str; 9] = [
        "User",
        "ExposedPorts",
        "Env",
        "Cmd",
        "Entrypoint",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
    ];
    let mut out = Map::new();
    for key in ["Id", "Architecture", "Variant", "Os", "Created"] {
        if let Some(v) = inspect.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(config) = inspect.get("Config").and_then(Value::as_object) {
        let mut c = Map::new();
        for key in CONFIG_KEYS {
            if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
                c.insert(key.into(), v.clone());
            }
        }
        out.insert("Config".into(), Value::Object(c));
    }
    if let Some(rootfs) = inspect.get("RootFS") {
        out.insert("RootFS".into(), rootfs.clone());
    }
    if out.is_empty() {
        return json!(null);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_is_the_reference_before_its_first_colon() {
        assert_eq!(default_image_name("app:1.2"), "app");
        assert_eq!(default_image_name("registry:5000/app:1"), "registry");
        assert_eq!(default_image_name("app"), "app");
    }

    #[test]
    fn docker_info_keeps_image_properties_only() {
        let inspect = json!({
            "Id": "sha256:abc",
            "RepoTags": ["app:latest"],
            "RepoDigests": [],
            "Created": "2024-01-01T00:00:00Z",
            "Architecture": "amd64",
            "Os": "linux",
            "Size": 123,
            "GraphDriver": {"Data": {"MergedDir": "/var/lib/docker/overlay2/x"}},
            "Metadata": {"LastTagTime": "2026-11-21T12:00:00Z"},
            "Config": {"Hostname": "", "Env": ["A=1"], "Cmd": ["/app"], "Entrypoint": null},
            "RootFS": {"Type": "layers", "Layers": ["sha256:l1"]}
        });
        assert_eq!(
            reproducible_docker_info(&inspect),
            json!({
                "Id": "sha256:abc",
                "Architecture": "amd64",
                "Os": "linux",
                "Created": "2024-01-01T00:00:00Z",
                "Config": {"Env": ["A=1"], "Cmd": ["/app"]},
                "RootFS": {"Type": "layers", "Layers": ["sha256:l1"]}
            })
        );
    }
}
