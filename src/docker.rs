//! The one way in to the Docker daemon.
//!
//! Every build step of eifctl runs inside Docker, so when no daemon is there the user should
//! read one line that says where eifctl looked and what to do about it, not a stack of
//! transport errors. This module owns that: it chooses the endpoint the way the docker CLI
//! does (`DOCKER_HOST`, else the default socket), agrees on an API version with the daemon
//! before any other request, and turns "nobody answers" into [`DockerError::NoDaemon`].
//!
//! The API version matters for reproducibility as much as for errors: bollard speaks a newer
//! API than many daemons (Debian's docker.io 20.10 speaks 1.41), and a daemon refuses a
//! request made with a version newer than its own. Negotiating first means one binary works
//! against every daemon from [`MIN_API_VERSION`] on.
//!
//! Beyond that it has what building an enclave from a Docker image needs: what the image says
//! about itself ([`inspect_image`]), getting it when it is pinned by digest ([`ensure_image`]),
//! and its root filesystem as one tar stream ([`export_image`]), handed to synchronous code as
//! a blocking reader so that the tar-to-cpio conversion never holds the whole image in memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, CreateImageInfo};
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, CreateImageOptions, RemoveContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, BollardRequest, ClientVersion, Docker};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where the Docker daemon listens when `DOCKER_HOST` is not set, as for the docker CLI.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// The oldest Docker API that eifctl accepts: that of Docker 20.10, which is what Debian
/// bookworm ships. Older daemons lack request fields that reproducible builds rely on, and are
/// not tested.
pub const MIN_API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// How long the first request may take before the endpoint counts as dead. Short, because a
/// missing daemon should be reported at once, not after bollard's two-minute default.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// How long any later request may wait for its response to start: bollard's own default. It
/// bounds waiting for response headers only; a streamed body (build output, an export) may
/// take as long as it takes.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// What can go wrong in talking to Docker.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DockerError {
    /// Nothing answers at the endpoint: no socket there, connection refused, or no answer in
    /// time.
    #[error(
        "no Docker daemon answers at {endpoint}: start one (e.g. `dockerd &`, or run scripts/test, which starts it)"
    )]
    NoDaemon {
        /// The endpoint that was tried, e.g. `unix:///var/run/docker.sock`.
        endpoint: String,
        /// What the transport said.
        #[source]
        source: BollardError,
    },

    /// The endpoint names a transport that eifctl does not speak.
    #[error("cannot use Docker endpoint {endpoint:?}: {reason}")]
    UnsupportedEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it cannot be used, and what would do instead.
        reason: &'static str,
    },

    /// A daemon answers, but its API is older than [`MIN_API_VERSION`].
    #[error(
        "the Docker daemon at {endpoint} speaks API {found}, older than the {MIN_API_VERSION} that eifctl needs: upgrade Docker"
    )]
    ApiTooOld {
        /// The endpoint that was tried.
        endpoint: String,
        /// The newest API version the daemon speaks.
        found: ClientVersion,
    },

    /// A daemon answers, but no API version could be agreed with it.
    #[error("the Docker daemon at {endpoint} answered, but no API version could be agreed")]
    Negotiation {
        /// The endpoint that was tried.
        endpoint: String,
        /// What bollard said.
        #[source]
        source: BollardError,
    },

    /// A request to a connected daemon failed.
    #[error("Docker request failed: {what}")]
    Request {
        /// The request, e.g. `GET /version`.
        what: &'static str,
        /// What bollard or the daemon said.
        #[source]
        source: BollardError,
    },

    /// The daemon's answer lacks something eifctl needs.
    #[error("the Docker daemon's answer to {what} lacks {missing}")]
    Malformed {
        /// The request, e.g. `GET /version`.
        what: &'static str,
        /// The missing or unreadable field.
        missing: &'static str,
    },

    /// The local engine has no image by that reference, and eifctl will not pull it: only a
    /// reference pinned by digest names one exact image, so only such a reference is pulled.
    #[error(
        "image {reference} is not in the local Docker engine; eifctl pulls only references pinned by digest (NAME@sha256:<64 hex>): build or pull it first, or pin it by digest"
    )]
    ImageNotFound {
        /// The reference as given.
        reference: String,
    },

    /// The reference cannot name an image.
    #[error("{reference:?} is not an image reference: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Pulling a digest-pinned image failed; `message` is the daemon's, on one line.
    #[error("cannot pull {reference}: {message}")]
    Pull {
        /// The reference as given.
        reference: String,
        /// What the daemon (or the transport) said.
        message: String,
    },

    /// The image the engine has under a digest-pinned reference (after a pull, or found
    /// locally) does not carry that digest: a registry or engine answered for another image.
    #[error("the image Docker has for {reference} does not carry its digest: its RepoDigests are [{}]", found.join(", "))]
    DigestMismatch {
        /// The reference as given.
        reference: String,
        /// The RepoDigests the engine reports.
        found: Vec<String>,
    },

    /// The export of an image could not be set up or ended abnormally.
    #[error("exporting image {image}: {message}")]
    Export {
        /// The image ID (or reference) being exported.
        image: String,
        /// What went wrong.
        message: String,
    },

    /// A build failed: at `step` (the daemon's `Step n/m : INSTRUCTION` line, or
    /// `before the first step`), with the daemon's message, on one line.
    #[error("the build failed at {step}: {message}")]
    BuildFailed {
        /// The step that failed, e.g. `Step 3/7 : RUN false`.
        step: String,
        /// What the daemon said, e.g. `The command '/bin/sh -c false' returned a non-zero
        /// code: 1`.
        message: String,
    },

    /// Loading an image archive failed; `message` is the daemon's, on one line.
    #[error("loading an image archive failed: {message}")]
    Load {
        /// What the daemon said.
        message: String,
    },

    /// The container made for an export could not be removed, and is left behind.
    #[error(
        "could not remove container {container}, made to export an image: remove it with `docker rm -f {container}`"
    )]
    RemoveContainer {
        /// The container's ID.
        container: String,
        /// What the daemon said.
        #[source]
        source: BollardError,
    },
}

/// What the daemon says about itself: enough to tell, in a log, which Docker built an image.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonInfo {
    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// The newest API version the daemon speaks.
    pub api_version: ClientVersion,
    /// The API version this client uses with it: the lower of the daemon's and bollard's.
    pub negotiated_api_version: ClientVersion,
    /// The daemon's operating system, e.g. `linux`; empty if it did not say.
    pub os: String,
    /// The daemon's architecture, e.g. `amd64`; empty if it did not say.
    pub arch: String,
    /// The daemon's kernel, e.g. `6.1.0-18-amd64`; empty if it did not say.
    pub kernel_version: String,
    /// The storage driver for images and containers, e.g. `overlay2` or `vfs`; empty if it
    /// did not say.
    pub storage_driver: String,
}

impl fmt::Display for DaemonInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Docker {} (API {}, using {}) on {}/{}, kernel {}, storage driver {}",
            self.version,
            self.api_version,
            self.negotiated_api_version,
            self.os,
            self.arch,
            self.kernel_version,
            self.storage_driver
        )
    }
}

/// Connects to the daemon that `DOCKER_HOST` names, or to [`DEFAULT_ENDPOINT`] when it is
/// unset or empty, and agrees on an API version with it.
///
/// `DOCKER_TLS_VERIFY` is refused rather than ignored: eifctl does not speak TLS to Docker,
/// and plain HTTP to a TLS port would fail in a far less readable way.
pub async fn connect() -> Result<Docker, DockerError> {
    let endpoint = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
        return Err(DockerError::UnsupportedEndpoint {
            endpoint,
            reason: "DOCKER_TLS_VERIFY is set, but eifctl does not speak TLS to Docker",
        });
    }
    connect_to(&endpoint).await
}

/// Connects to the daemon at `endpoint` (`unix:///path/to/socket`, or `tcp://host:port`) and
/// agrees on an API version with it. Reads no environment: [`connect`] does that.
///
/// The returned client uses the negotiated version for every request, so a request that the
/// daemon's API lacks fails as such instead of being refused for its version.
pub async fn connect_to(endpoint: &str) -> Result<Docker, DockerError> {
    let no_daemon = |source| DockerError::NoDaemon {
        endpoint: endpoint.to_owned(),
        source,
    };
    let client = if let Some(path) = endpoint.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(DockerError::UnsupportedEndpoint {
                endpoint: endpoint.to_owned(),
                reason: "it names no socket: write unix:///path/to/docker.sock",
            });
        }
        // Fails only when the socket file does not exist.
        Docker::connect_with_unix(endpoint, CONNECT_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(no_daemon)?
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, CONNECT_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(no_daemon)?
    } else {
        return Err(DockerError::UnsupportedEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "eifctl speaks to Docker through unix:///path/to/socket or tcp://host:port only",
        });
    };

    let docker = match client.negotiate_version().await {
        Ok(docker) => docker,
        Err(source) if is_unreachable(&source) => return Err(no_daemon(source)),
        Err(source) => {
            return Err(DockerError::Negotiation {
                endpoint: endpoint.to_owned(),
                source,
            });
        }
    };
    // Negotiation only ever lowers the client's version, so below the minimum it is the
    // daemon's own.
    let version = docker.client_version();
    if version < MIN_API_VERSION {
        return Err(DockerError::ApiTooOld {
            endpoint: endpoint.to_owned(),
            found: version,
        });
    }
    Ok(docker.with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS)))
}

/// Asks the daemon who it is: `GET /_ping`, `GET /version` and, for the storage driver,
/// `GET /info`.
pub async fn daemon_info(docker: &Docker) -> Result<DaemonInfo, DockerError> {
    let request = |what| move |source| DockerError::Request { what, source };

    let pong = docker.ping().await.map_err(request("GET /_ping"))?;
    if pong.trim() != "OK" {
        return Err(DockerError::Malformed {
            what: "GET /_ping",
            missing: "the answer OK",
        });
    }

    let version = docker.version().await.map_err(request("GET /version"))?;
    let api_version = version
        .api_version
        .as_deref()
        .and_then(parse_api_version)
        .ok_or(DockerError::Malformed {
            what: "GET /version",
            missing: "ApiVersion",
        })?;

    let info = docker.info().await.map_err(request("GET /info"))?;

    Ok(DaemonInfo {
        version: version.version.unwrap_or_default(),
        api_version,
        negotiated_api_version: docker.client_version(),
        os: version.os.unwrap_or_default(),
        arch: version.arch.unwrap_or_default(),
        kernel_version: version.kernel_version.unwrap_or_default(),
        storage_driver: info.driver.unwrap_or_default(),
    })
}

/// Parses an API version as Docker writes it, `MAJOR.MINOR`.
pub fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Whether an error means that nothing answered, as opposed to an answer that was wrong.
fn is_unreachable(error: &BollardError) -> bool {
    match error {
        BollardError::SocketNotFoundError(_)
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => true,
        BollardError::HyperLegacyError { err } => err.is_connect(),
        _ => false,
    }
}

// --- images ------------------------------------------------------------------------------------

/// What eifctl reads from an image before building an enclave from it: the command and
/// environment that the enclave's init runs, the platform to check against the enclave's, and
/// the names and digests that say which image it was.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// The image ID, `sha256:` and the digest of the image's config: the one name of this exact
    /// image that no tag or pull can move.
    pub id: String,
    /// The image's CPU architecture in Go's terms, e.g. `amd64` or `arm64`.
    pub architecture: String,
    /// The image's operating system, e.g. `linux`.
    pub os: String,
    /// `Config.Cmd`; `None` where the image has none.
    pub cmd: Option<Vec<String>>,
    /// `Config.Entrypoint`; `None` where the image has none.
    pub entrypoint: Option<Vec<String>>,
    /// `Config.Env`, `NAME=value` each; `None` where the image has none.
    pub env: Option<Vec<String>>,
    /// `Config.WorkingDir`; `None` where it is unset or empty (Docker writes `""` for unset).
    pub working_dir: Option<String>,
    /// The tags the engine has for the image, e.g. `busybox:latest`.
    pub repo_tags: Vec<String>,
    /// The digests the image was pulled or pushed by, `NAME@sha256:...` each.
    pub repo_digests: Vec<String>,
    /// The whole inspect document as the daemon sent it, with every field, including those
    /// that bollard's models lack (older and newer APIs differ): nitro-cli records it in the
    /// EIF's metadata, and a typed round trip would silently change it.
    pub inspect: serde_json::Value,
}

/// The part of the inspect document that [`ImageInfo`] has fields for. Read from the document
/// itself rather than through bollard's `ImageInspect`, whose model follows a newer API.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectFields {
    id: String,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<InspectConfig>,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

/// The largest inspect document accepted. Real ones are kilobytes; the bound is there so that
/// a wrong answer cannot grow without limit.
const MAX_INSPECT_BYTES: usize = 16 << 20;

const INSPECT_REQUEST: &str = "GET /images/{name}/json";

/// Asks the local engine about an image: `GET /images/{reference}/json`.
///
/// `reference` is anything the engine resolves: a tag, `name@sha256:...`, an image ID or an
/// unambiguous prefix of one. Nothing is pulled.
pub async fn inspect_image(docker: &Docker, reference: &str) -> Result<ImageInfo, DockerError> {
    check_reference(reference)?;
    let document = inspect_document(docker, reference).await?;
    let inspect: serde_json::Value =
        serde_json::from_slice(&document).map_err(|_| DockerError::Malformed {
            what: INSPECT_REQUEST,
            missing: "a JSON document",
        })?;
    let fields = InspectFields::deserialize(&inspect).map_err(|_| DockerError::Malformed {
        what: INSPECT_REQUEST,
        missing: "an Id, or fields of the types of the Docker API",
    })?;
    let config = fields.config.unwrap_or(InspectConfig {
        cmd: None,
        entrypoint: None,
        env: None,
        working_dir: None,
    });
    Ok(ImageInfo {
        id: fields.id,
        architecture: fields.architecture.unwrap_or_default(),
        os: fields.os.unwrap_or_default(),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        env: config.env,
        working_dir: config.working_dir.filter(|dir| !dir.is_empty()),
        repo_tags: fields.repo_tags.unwrap_or_default(),
        repo_digests: fields.repo_digests.unwrap_or_default(),
        inspect,
    })
}

/// The inspect document's bytes, as the daemon sent them.
///
/// bollard has no call that returns an answer undecoded except the body streams, so this uses
/// one: `export_image` sends `GET {prefix}/images/{name}/get` and streams the body, and a
/// request modifier on a clone of the client turns that request into
/// `GET {prefix}/images/{name}/json` before it is sent. The clone shares the connection pool
/// and negotiated version with `docker`. The modifier runs when the request is built, which is
/// before anything is sent; should bollard ever build that request differently, nothing
/// matches, and the request is dropped unsent rather than downloading the whole image.
async fn inspect_document(docker: &Docker, reference: &str) -> Result<Vec<u8>, DockerError> {
    let rewritten = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&rewritten);
    let client = docker.clone().with_request_modifier(move |mut request| {
        if rewrite_save_to_inspect(&mut request) {
            flag.store(true, Ordering::SeqCst);
        }
        request
    });
    let mut body = client.export_image(reference);
    if !rewritten.load(Ordering::SeqCst) {
        return Err(DockerError::Malformed {
            what: INSPECT_REQUEST,
            missing: "a request of the expected shape (bollard's GET /images/{name}/get changed)",
        });
    }
    let mut document = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| match source {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::ImageNotFound {
                reference: reference.to_owned(),
            },
            source => DockerError::Request {
                what: INSPECT_REQUEST,
                source,
            },
        })?;
        if document.len() + chunk.len() > MAX_INSPECT_BYTES {
            return Err(DockerError::Malformed {
                what: INSPECT_REQUEST,
                missing: "an end within 16 MiB",
            });
        }
        document.extend_from_slice(&chunk);
    }
    Ok(document)
}

/// Turns `GET …/images/{name}/get` into `GET …/images/{name}/json`; says whether it did.
fn rewrite_save_to_inspect(request: &mut BollardRequest) -> bool {
    let uri = request.uri();
    if request.method() != http::Method::GET || uri.query().is_some() {
        return false;
    }
    let Some(base) = uri.path().strip_suffix("/get") else {
        return false;
    };
    if !base.contains("/images/") {
        return false;
    }
    let Ok(path) = format!("{base}/json").parse() else {
        return false;
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path);
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *request.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

/// Refuses references that would make another request than meant: an empty one would ask for
/// `/images//json`, and `?` or `#` would start the URL's query or fragment.
fn check_reference(reference: &str) -> Result<(), DockerError> {
    let invalid = |reason| DockerError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.is_empty() {
        return Err(invalid("it is empty"));
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(invalid(
            "it contains whitespace, a control character, ? or #",
        ));
    }
    Ok(())
}

/// A reference pinned by digest, `NAME[:TAG]@sha256:<64 hex>`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pinned<'a> {
    /// The repository, without tag, e.g. `busybox` or `ghcr.io/org/app`.
    name: &'a str,
    /// `sha256:` and 64 lower-case hex digits.
    digest: &'a str,
}

impl Pinned<'_> {
    /// Whether a RepoDigests entry (`NAME@sha256:...`) is this reference. Names are compared
    /// after Docker's normalization: the engine writes `busybox@…` for what may have been
    /// asked as `docker.io/library/busybox@…`.
    fn matches(&self, repo_digest: &str) -> bool {
        repo_digest.rsplit_once('@').is_some_and(|(name, digest)| {
            digest == self.digest && normalize_name(name) == normalize_name(self.name)
        })
    }
}

/// The digest a reference is pinned by, if it is; an error if it has an `@` but no digest
/// eifctl accepts.
fn pinned_digest(reference: &str) -> Result<Option<Pinned<'_>>, DockerError> {
    let Some((name, digest)) = reference.rsplit_once('@') else {
        return Ok(None);
    };
    let invalid = |reason| DockerError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid("its digest is not sha256:<64 hex>"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid("its digest is not sha256:<64 lower-case hex>"));
    }
    // A tag before the digest is allowed, and ignored by the engine: the digest decides.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    if name.is_empty() {
        return Err(invalid("it has no name before the @"));
    }
    Ok(Some(Pinned { name, digest }))
}

/// A repository name as Docker normalizes it: `busybox` is `docker.io/library/busybox`,
/// `org/app` is `docker.io/org/app`, and `index.docker.io` is `docker.io`.
fn normalize_name(name: &str) -> String {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if domain == "docker.io" && !path.contains('/') {
        format!("docker.io/library/{path}")
    } else {
        format!("{domain}/{path}")
    }
}

/// Makes sure the local engine has the image, pulling it only when the reference is pinned by
/// digest; pull progress goes to stderr. See [`ensure_image_with_progress`].
pub async fn ensure_image(docker: &Docker, reference: &str) -> Result<ImageInfo, DockerError> {
    ensure_image_with_progress(docker, reference, &mut |line| eprintln!("{line}")).await
}

/// Makes sure the local engine has the image, and returns what it says about it.
///
/// A tag can point at different images from day to day, so an enclave built from a pulled tag
/// would not be reproducible: only `NAME@sha256:<64 hex>` is pulled (through the engine, with
/// its credentials and registry settings). A missing image by any other reference is
/// [`DockerError::ImageNotFound`]. After a pull, and for a pinned reference found locally,
/// the image's RepoDigests must include the digest asked for.
///
/// `progress` gets one line per change of a layer's state (`"4f4fb700ef54: Pull complete"`)
/// and the engine's status lines; byte-count updates are left out.
pub async fn ensure_image_with_progress(
    docker: &Docker,
    reference: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ImageInfo, DockerError> {
    let pinned = pinned_digest(reference)?;
    let info = match inspect_image(docker, reference).await {
        Ok(info) => info,
        Err(DockerError::ImageNotFound { .. }) => {
            if pinned.is_none() {
                return Err(DockerError::ImageNotFound {
                    reference: reference.to_owned(),
                });
            }
            pull(docker, reference, progress).await?;
            match inspect_image(docker, reference).await {
                Err(DockerError::ImageNotFound { .. }) => {
                    return Err(DockerError::Pull {
                        reference: reference.to_owned(),
                        message:
                            "the engine reported the pull done, but has no image by that reference"
                                .to_owned(),
                    });
                }
                other => other?,
            }
        }
        Err(other) => return Err(other),
    };
    if let Some(pinned) = pinned
        && !info.repo_digests.iter().any(|d| pinned.matches(d))
    {
        return Err(DockerError::DigestMismatch {
            reference: reference.to_owned(),
            found: info.repo_digests,
        });
    }
    Ok(info)
}

/// `POST /images/create?fromImage=REFERENCE`, with its progress passed on.
async fn pull(
    docker: &Docker,
    reference: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DockerError> {
    let options = CreateImageOptions {
        from_image: Some(reference.to_owned()),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = progress_line(&info) {
                    progress(&line);
                }
            }
            Err(error) => {
                let message = match error {
                    BollardError::DockerResponseServerError { message, .. } => message,
                    BollardError::DockerStreamError { error } => error,
                    other => other.to_string(),
                };
                return Err(DockerError::Pull {
                    reference: reference.to_owned(),
                    message: one_line(&message),
                });
            }
        }
    }
    Ok(())
}

/// A pull event as one line, or `None` for a byte-count update: those come many times a
/// second for each layer.
fn progress_line(info: &CreateImageInfo) -> Option<String> {
    if info
        .progress_detail
        .as_ref()
        .is_some_and(|d| d.current.is_some() || d.total.is_some())
    {
        return None;
    }
    let status = one_line(info.status.as_deref()?);
    if status.is_empty() {
        return None;
    }
    Some(match info.id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status,
    })
}

/// Text with its runs of whitespace, newlines included, made single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// --- build -------------------------------------------------------------------------------------

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// The daemon starts step `n` of `m`; `text` is the instruction, e.g. `RUN make`.
    Step { n: u32, m: u32, text: String },
    /// A line of the build's output (a RUN's output, or the daemon's ` ---> abc123`).
    Output(String),
}

/// How much of the context is read at a time to send it.
const CONTEXT_CHUNK: usize = 64 << 10;

/// Builds an image with the classic builder (`POST /build`, `version=1`) and returns its ID.
///
/// `context` is the build context as a tar (see [`crate::context`]), streamed as it is read:
/// a file, typically, never held in memory whole. `dockerfile` is the Dockerfile's path
/// inside the context. Nothing is pulled (`FROM` must name an image the engine has: pin a
/// base by passing its ID as a build arg, `ARG BASE` / `FROM ${BASE}`), RUN steps have no
/// network (`networkmode=none`), and intermediate containers are removed whether the build
/// succeeds or not. `no_cache` builds every step afresh.
///
/// `on_event` gets each step as it starts and each line of output. A failing step is
/// [`DockerError::BuildFailed`] with that step and the daemon's message. The image ID comes
/// from the daemon's `aux` message, or else from its `Successfully built` line.
pub async fn build_image<R>(
    docker: &Docker,
    context: R,
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
    tag: &str,
    no_cache: bool,
    on_event: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<String, DockerError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let options = BuildImageOptions {
        dockerfile: dockerfile.to_owned(),
        t: Some(tag.to_owned()),
        // Absent is false: the daemon pulls nothing, so FROM can name a local image.
        pull: None,
        nocache: no_cache,
        rm: true,
        forcerm: true,
        networkmode: Some("none".to_owned()),
        buildargs: Some(
            build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let body = bollard::body_try_stream(read_chunks(context));
    let mut stream = docker.build_image(options, None, Some(body));

    let mut lines = LineSplitter::default();
    let mut step: Option<String> = None;
    let mut aux_id = None;
    let mut built = None;
    let mut handle = |line: String, step: &mut Option<String>, built: &mut Option<String>| {
        if let Some(event) = parse_step(&line) {
            *step = Some(line.clone());
            on_event(event);
        } else {
            if let Some(short) = line.strip_prefix("Successfully built ") {
                *built = Some(short.trim().to_owned());
            }
            on_event(BuildEvent::Output(line));
        }
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    for line in lines.push(&text) {
                        handle(line, &mut step, &mut built);
                    }
                }
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    aux_id = Some(id);
                }
            }
            Err(error) => {
                if let Some(line) = lines.finish() {
                    handle(line, &mut step, &mut built);
                }
                let message = match error {
                    BollardError::DockerStreamError { error } => error,
                    BollardError::DockerResponseServerError { message, .. } => message,
                    source => {
                        return Err(DockerError::Request {
                            what: "POST /build",
                            source,
                        });
                    }
                };
                return Err(DockerError::BuildFailed {
                    step: step.unwrap_or_else(|| "before the first step".to_owned()),
                    message: one_line(&message),
                });
            }
        }
    }
    if let Some(line) = lines.finish() {
        handle(line, &mut step, &mut built);
    }
    if let Some(id) = aux_id {
        return Ok(id);
    }
    match built {
        Some(short) => Ok(inspect_image(docker, &short).await?.id),
        None => Err(DockerError::Malformed {
            what: "POST /build",
            missing: "the built image's ID (an aux ID or a Successfully built line)",
        }),
    }
}

/// A reader as a stream of chunks of up to [`CONTEXT_CHUNK`] bytes, for a request body; the
/// stream ends after the first error, which fails the request.
fn read_chunks<R>(reader: R) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static
where
    R: AsyncRead + Send + Unpin + 'static,
{
    futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = bytes::BytesMut::with_capacity(CONTEXT_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Loads a `docker save` archive (`POST /images/load`), streamed from `archive` as it is
/// read. What it loads, and under which tags, is for the caller to check.
pub async fn load_image<R>(docker: &Docker, archive: R) -> Result<(), DockerError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let options = bollard::query_parameters::ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let body = bollard::body_try_stream(read_chunks(archive));
    let mut stream = docker.import_image(options, body, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {}
            Err(BollardError::DockerStreamError { error })
            | Err(BollardError::DockerResponseServerError { message: error, .. }) => {
                return Err(DockerError::Load {
                    message: one_line(&error),
                });
            }
            Err(source) => {
                return Err(DockerError::Request {
                    what: "POST /images/load",
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Parses the classic builder's `Step 3/7 : RUN make`.
fn parse_step(line: &str) -> Option<BuildEvent> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, text) = rest.split_once(" : ")?;
    let (n, m) = counts.split_once('/')?;
    Some(BuildEvent::Step {
        n: n.parse().ok()?,
        m: m.parse().ok()?,
        text: text.trim_end().to_owned(),
    })
}

/// Cuts the daemon's `stream` texts, which may end mid-line, into lines.
#[derive(Default)]
struct LineSplitter {
    partial: String,
}

impl LineSplitter {
    fn push(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

// --- export ------------------------------------------------------------------------------------

/// How many chunks of an export may wait between the daemon and the reader. Chunks are what
/// the daemon writes at a time (32 KiB through Go's io.Copy), so this bounds the memory an
/// export holds however slowly it is read.
const EXPORT_CHUNKS: usize = 4;

/// The command given to an export's container when the image has neither Cmd nor Entrypoint:
/// the engine refuses to create a container without a command ("No command specified"). The
/// container is never started, so the file need not exist, and the export does not include it.
pub const EXPORT_PLACEHOLDER_CMD: &str = "/eifctl-export";

/// The label on every container made for an export, its value the image ID: a container left
/// behind by a killed eifctl can be found with `docker ps -a --filter label=eifctl.export`.
pub const EXPORT_LABEL: &str = "eifctl.export";

/// An image's root filesystem as a tar stream (what `docker export` writes), read with the
/// blocking [`io::Read`].
///
/// Made by [`export_image`]: the stream comes from a container created from the image and
/// never started. A thread of its own moves the stream from the daemon into a channel of
/// [`EXPORT_CHUNKS`] chunks, so memory stays bounded, and removes the container once the
/// stream has ended, failed, or the reader is gone. A read after the end returns 0 only once
/// the container is removed; a failure of the stream, or of the removal, is an `io::Error`
/// from `read`, and every read after it fails alike. Dropping the reader early stops the
/// stream and removes the container before `drop` returns; [`Export::close`] does the same
/// and says whether the removal worked.
pub struct Export {
    image: String,
    container_id: String,
    chunks: Option<mpsc::Receiver<Chunk>>,
    current: Bytes,
    state: ReadState,
    cancel: Option<oneshot::Sender<()>>,
    producer: Option<JoinHandle<Result<(), DockerError>>>,
}

/// What the streaming thread hands the reader.
enum Chunk {
    Data(Bytes),
    /// The stream ended and the container is removed.
    End,
    /// The stream (or, after its end, the removal) failed; the message says which.
    Failed(String),
}

enum ReadState {
    Open,
    Ended,
    Failed(String),
}

impl fmt::Debug for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("image", &self.image)
            .field("container_id", &self.container_id)
            .finish_non_exhaustive()
    }
}

/// Starts exporting an image's root filesystem: creates a container from it (not started) and
/// returns the blocking reader of `GET /containers/{id}/export`.
///
/// Blocks until the container exists, so call it, and read the result, from a thread that is
/// not one of `runtime`'s workers (e.g. the thread that converts the tar, or
/// `spawn_blocking`). `runtime` runs the requests; it must be a multi-thread runtime with IO
/// and time enabled, or a current-thread one that another thread is driving with `block_on`.
///
/// The export does not depend on the container's configuration: a placeholder command
/// ([`EXPORT_PLACEHOLDER_CMD`]) is given only when the image has neither Cmd nor Entrypoint,
/// which the engine would refuse. The engine adds its usual container files (`.dockerenv`,
/// `etc/hosts`, `etc/hostname`, `etc/resolv.conf`, `dev/`, `proc/`, `sys/`, `etc/mtab`),
/// as `docker export` shows.
pub fn export_image(
    docker: &Docker,
    image_id: &str,
    runtime: &Handle,
) -> Result<Export, DockerError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (chunk_tx, chunk_rx) = mpsc::sync_channel(EXPORT_CHUNKS);
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let producer = {
        let docker = docker.clone();
        let image = image_id.to_owned();
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("eifctl-export".to_owned())
            .spawn(move || runtime.block_on(produce(docker, image, ready_tx, chunk_tx, cancel_rx)))
            .map_err(|e| DockerError::Export {
                image: image_id.to_owned(),
                message: format!("cannot start the thread that streams it: {e}"),
            })?
    };
    match ready_rx.recv() {
        Ok(Ok(container_id)) => Ok(Export {
            image: image_id.to_owned(),
            container_id,
            chunks: Some(chunk_rx),
            current: Bytes::new(),
            state: ReadState::Open,
            cancel: Some(cancel_tx),
            producer: Some(producer),
        }),
        Ok(Err(error)) => {
            // Nothing was created; the thread has ended or is about to.
            let _ = producer.join();
            Err(error)
        }
        Err(mpsc::RecvError) => {
            let _ = producer.join();
            Err(DockerError::Export {
                image: image_id.to_owned(),
                message: "the thread that streams it stopped before creating a container (is the runtime shut down?)".to_owned(),
            })
        }
    }
}

impl Export {
    /// The ID of the container the export comes from; it exists until the export ends.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// Stops the export if it is still running, removes its container, and says whether that
    /// worked. Dropping an `Export` does the same, but cannot report a failure.
    pub fn close(mut self) -> Result<(), DockerError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), DockerError> {
        if let Some(cancel) = self.cancel.take() {
            // Fails only when the thread is already done, which is as good.
            let _ = cancel.send(());
        }
        // A thread blocked on a full channel wakes up to a closed one.
        self.chunks = None;
        match self.producer.take() {
            Some(producer) => producer.join().unwrap_or_else(|_| {
                Err(DockerError::Export {
                    image: self.image.clone(),
                    message: format!(
                        "the thread that streams it panicked; container {} may be left behind",
                        self.container_id
                    ),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

impl io::Read for Export {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current.split_to(n));
                return Ok(n);
            }
            match &self.state {
                ReadState::Open => {}
                ReadState::Ended => return Ok(0),
                ReadState::Failed(message) => return Err(io::Error::other(message.clone())),
            }
            let next = match &self.chunks {
                Some(chunks) => chunks.recv().ok(),
                None => None,
            };
            match next {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.state = ReadState::Ended,
                Some(Chunk::Failed(message)) => self.state = ReadState::Failed(message),
                // The thread never ends without a last word, unless it panicked.
                None => {
                    self.state = ReadState::Failed(format!(
                        "exporting image {}: the stream stopped without an end (container {})",
                        self.image, self.container_id
                    ))
                }
            }
        }
    }
}

/// How the streaming loop ended.
enum Outcome {
    Ended,
    Failed(BollardError),
    Cancelled,
}

/// The streaming thread's work: create the container, report it, stream the export into
/// `chunks`, remove the container, then say how it ended. Returns the removal's result.
async fn produce(
    docker: Docker,
    image: String,
    ready: mpsc::SyncSender<Result<String, DockerError>>,
    chunks: mpsc::SyncSender<Chunk>,
    mut cancel: oneshot::Receiver<()>,
) -> Result<(), DockerError> {
    let container = match create_export_container(&docker, &image).await {
        Ok(container) => container,
        Err(error) => {
            let _ = ready.send(Err(error));
            return Ok(());
        }
    };
    if ready.send(Ok(container.clone())).is_err() {
        return remove_container(&docker, &container).await;
    }
    drop(ready);

    let mut stream = Box::pin(docker.export_container(&container));
    let outcome = loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancel => break Outcome::Cancelled,
            item = stream.next() => item,
        };
        match item {
            None => break Outcome::Ended,
            // Blocks this thread, which is its own, while the reader is behind.
            Some(Ok(bytes)) => {
                if chunks.send(Chunk::Data(bytes)).is_err() {
                    break Outcome::Cancelled;
                }
            }
            Some(Err(error)) => break Outcome::Failed(error),
        }
    };
    // Closes the connection, so the daemon stops writing before the container goes.
    drop(stream);
    let removed = remove_container(&docker, &container).await;
    let last = match (&outcome, &removed) {
        (Outcome::Cancelled, _) => None,
        (Outcome::Ended, Ok(())) => Some(Chunk::End),
        (Outcome::Ended, Err(error)) => Some(Chunk::Failed(format!(
            "exporting image {image}: the stream ended, but {error}"
        ))),
        (Outcome::Failed(error), removed) => Some(Chunk::Failed(format!(
            "exporting image {image}: the stream from container {container} failed: {}; {}",
            one_line(&error.to_string()),
            match removed {
                Ok(()) => "the container was removed".to_owned(),
                Err(error) => error.to_string(),
            }
        ))),
    };
    if let Some(last) = last {
        let _ = chunks.send(last);
    }
    removed
}

/// Creates the (never started) container that an export reads from, labelled
/// [`EXPORT_LABEL`].
async fn create_export_container(docker: &Docker, image: &str) -> Result<String, DockerError> {
    let info = inspect_image(docker, image).await?;
    let has_command = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    let needs_command = !has_command(&info.cmd) && !has_command(&info.entrypoint);
    let body = ContainerCreateBody {
        // The ID, not the reference: a tag moved meanwhile cannot change what is exported.
        image: Some(info.id.clone()),
        cmd: needs_command.then(|| vec![EXPORT_PLACEHOLDER_CMD.to_owned()]),
        labels: Some(HashMap::from([(EXPORT_LABEL.to_owned(), info.id.clone())])),
        network_disabled: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_container(None, body)
        .await
        .map_err(|source| DockerError::Request {
            what: "POST /containers/create",
            source,
        })?;
    Ok(created.id)
}

/// `DELETE /containers/{id}?force=true&v=true`. A container that is already gone counts as
/// removed.
async fn remove_container(docker: &Docker, container: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(container, Some(options)).await {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(DockerError::RemoveContainer {
            container: container.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_versions() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_api_version("1.53").unwrap() > v);
        assert!(parse_api_version("1").is_none());
        assert!(parse_api_version("1.x").is_none());
        assert!(parse_api_version("").is_none());
    }

    #[test]
    fn no_daemon_is_one_line_naming_the_endpoint() {
        let err = DockerError::NoDaemon {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            source: BollardError::SocketNotFoundError("/var/run/docker.sock".to_owned()),
        };
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with("no Docker daemon answers at unix:///var/run/docker.sock: start one"),
            "{text}"
        );
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_references_are_taken_apart() {
        let r = format!("busybox@sha256:{HEX}");
        let p = pinned_digest(&r).unwrap().unwrap();
        assert_eq!(p.name, "busybox");
        assert_eq!(p.digest, format!("sha256:{HEX}"));

        // A tag before the digest is dropped; a registry port is not a tag.
        let r = format!("localhost:5000/org/app:1.2@sha256:{HEX}");
        assert_eq!(
            pinned_digest(&r).unwrap().unwrap().name,
            "localhost:5000/org/app"
        );
        let r = format!("localhost:5000/app@sha256:{HEX}");
        assert_eq!(
            pinned_digest(&r).unwrap().unwrap().name,
            "localhost:5000/app"
        );

        for plain in [
            "busybox",
            "busybox:1.36",
            "localhost:5000/app",
            "sha256:abc",
        ] {
            assert_eq!(pinned_digest(plain).unwrap(), None, "{plain}");
        }
        for bad in [
            format!("busybox@sha512:{HEX}"),
            format!("busybox@sha256:{}", &HEX[1..]),
            format!("busybox@sha256:{}", HEX.to_uppercase()),
            "busybox@latest".to_owned(),
            format!("@sha256:{HEX}"),
        ] {
            match pinned_digest(&bad) {
                Err(DockerError::InvalidReference { reference, .. }) => assert_eq!(reference, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn repo_digests_match_after_normalization() {
        let digest = format!("sha256:{HEX}");
        let asked = format!("docker.io/library/busybox:1.36@{digest}");
        let p = pinned_digest(&asked).unwrap().unwrap();
        assert!(p.matches(&format!("busybox@{digest}")));
        assert!(p.matches(&format!("index.docker.io/library/busybox@{digest}")));
        assert!(!p.matches(&format!("other/busybox@{digest}")));
        assert!(!p.matches(&format!("busybox@sha256:{}", HEX.replace('0', "1"))));
        assert!(!p.matches("busybox"));

        assert_eq!(normalize_name("org/app"), "docker.io/org/app");
        assert_eq!(normalize_name("ghcr.io/org/app"), "ghcr.io/org/app");
        assert_eq!(normalize_name("localhost/app"), "localhost/app");
        assert_eq!(normalize_name("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
    }

    #[test]
    fn save_requests_become_inspect_requests_and_nothing_else_is_touched() {
        let request = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(bollard::body_full(Default::default()))
                .unwrap()
        };
        let mut r = request("GET", "unix://2f7661722f72756e:0/v1.41/images/a/b:c/get");
        assert!(rewrite_save_to_inspect(&mut r));
        assert_eq!(
            r.uri().to_string(),
            "unix://2f7661722f72756e:0/v1.41/images/a/b:c/json"
        );
        for (method, uri) in [
            ("POST", "http://h/images/a/get"),
            ("GET", "http://h/images/a/get?names=a"),
            ("GET", "http://h/containers/a/get"),
            ("GET", "http://h/images/a/json"),
        ] {
            let mut r = request(method, uri);
            assert!(!rewrite_save_to_inspect(&mut r), "{method} {uri}");
            assert_eq!(r.uri().to_string(), uri);
        }
    }

    #[test]
    fn progress_lines_leave_out_byte_counts() {
        let event = |id: Option<&str>, status: &str, current: Option<i64>| CreateImageInfo {
            id: id.map(str::to_owned),
            status: Some(status.to_owned()),
            progress_detail: Some(bollard::models::ProgressDetail {
                current,
                total: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            progress_line(&event(Some("4f4fb700ef54"), "Pull complete", None)).as_deref(),
            Some("4f4fb700ef54: Pull complete")
        );
        assert_eq!(
            progress_line(&event(None, "Digest: sha256:x\n", None)).as_deref(),
            Some("Digest: sha256:x")
        );
        assert_eq!(
            progress_line(&event(Some("a"), "Downloading", Some(1))),
            None
        );
        assert_eq!(progress_line(&event(Some("a"), "  ", None)), None);
    }

    #[test]
    fn steps_are_parsed_and_lines_split() {
        assert_eq!(
            parse_step("Step 3/7 : RUN echo a : b"),
            Some(BuildEvent::Step {
                n: 3,
                m: 7,
                text: "RUN echo a : b".into()
            })
        );
        assert_eq!(parse_step(" ---> Running in abc"), None);
        assert_eq!(parse_step("Step x/7 : RUN"), None);
        let mut s = LineSplitter::default();
        assert_eq!(s.push("a\nb"), ["a"]);
        assert_eq!(s.push("c\r\n\n"), ["bc", ""]);
        assert_eq!(s.push("d"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("d"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn an_export_can_move_to_the_thread_that_reads_it() {
        fn send<T: Send + 'static>() {}
        send::<Export>();
    }

    #[test]
    fn new_errors_are_one_line() {
        let errors = [
            DockerError::ImageNotFound {
                reference: "app:1".into(),
            },
            DockerError::Pull {
                reference: "a@sha256:x".into(),
                message: one_line("Get \"https://r/v2/\":\n dial tcp: refused"),
            },
            DockerError::DigestMismatch {
                reference: "a@sha256:x".into(),
                found: vec!["a@sha256:y".into(), "b@sha256:z".into()],
            },
            DockerError::InvalidReference {
                reference: "".into(),
                reason: "it is empty",
            },
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.contains('\n'), "{text}");
        }
        let text = DockerError::ImageNotFound {
            reference: "app:1".into(),
        }
        .to_string();
        assert!(
            text.starts_with("image app:1 is not in the local Docker engine; "),
            "{text}"
        );
        assert!(text.contains("pinned by digest"), "{text}");
    }
}
