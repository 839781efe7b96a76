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

use std::fmt;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use thiserror::Error;

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
}
