//! Smoke tests of `eifctl::docker` against a real daemon, and of its "no daemon" errors.
//!
//! The daemon tests need a Docker daemon: scripts/test starts one. They fail, rather than
//! skip, without one, with the one-line message that says how to start it; a skipped
//! Docker test would let CI pass without ever having built anything.
//!
//! No test here changes the environment: it is shared by every test of the process. The
//! error tests call `connect_to` with an endpoint instead of setting `DOCKER_HOST`.

use bollard::API_DEFAULT_VERSION;
use eifctl::docker::{self, DockerError, MIN_API_VERSION};

async fn connect_or_explain() -> bollard::Docker {
    match docker::connect().await {
        Ok(docker) => docker,
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test]
async fn daemon_answers_ping() {
    let docker = connect_or_explain().await;
    let pong = docker.ping().await.expect("GET /_ping");
    assert_eq!(pong.trim(), "OK");
}

#[tokio::test]
async fn daemon_speaks_a_recent_enough_api_and_the_negotiated_one_is_used() {
    let docker = connect_or_explain().await;
    let info = docker::daemon_info(&docker).await.expect("daemon info");
    println!("{info}");

    assert!(
        info.api_version >= MIN_API_VERSION,
        "daemon speaks API {}, below {MIN_API_VERSION}",
        info.api_version
    );
    // Negotiation lowers bollard's version to the daemon's, never raises it.
    let expected = if info.api_version < *API_DEFAULT_VERSION {
        info.api_version
    } else {
        *API_DEFAULT_VERSION
    };
    assert_eq!(info.negotiated_api_version, expected);
    assert_eq!(docker.client_version(), expected);
    // daemon_info made its requests with that version: a daemon refuses a newer one outright.
    assert!(!info.version.is_empty());
    assert!(!info.os.is_empty());
    assert!(!info.arch.is_empty());
    assert!(!info.storage_driver.is_empty());
}

fn assert_no_daemon_at(result: Result<bollard::Docker, DockerError>, expected: &str) {
    let err = match result {
        Ok(_) => panic!("connected to {expected}, which should have no daemon"),
        Err(err) => err,
    };
    let DockerError::NoDaemon { endpoint, .. } = &err else {
        panic!("expected NoDaemon, got {err:?}");
    };
    assert_eq!(endpoint, expected);
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    assert!(
        text.starts_with(&format!("no Docker daemon answers at {expected}: ")),
        "{text}"
    );
    assert!(text.contains("dockerd"), "no hint how to start one: {text}");
}

#[tokio::test]
async fn missing_socket_is_no_daemon_naming_it() {
    let endpoint = "unix:///nonexistent.sock";
    assert_no_daemon_at(docker::connect_to(endpoint).await, endpoint);
}

#[tokio::test]
async fn stale_socket_is_no_daemon() {
    // A socket file that nobody listens on, as a crashed daemon leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let endpoint = format!("unix://{}", path.display());
    assert_no_daemon_at(docker::connect_to(&endpoint).await, &endpoint);
}

#[tokio::test]
async fn closed_tcp_port_is_no_daemon() {
    // A loopback port that was just free: connecting to it is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    assert_no_daemon_at(docker::connect_to(&endpoint).await, &endpoint);
}

#[tokio::test]
async fn unsupported_endpoints_are_refused() {
    for endpoint in [
        "ssh://builder",
        "/var/run/docker.sock",
        "unix://",
        "npipe:////./pipe/x",
    ] {
        match docker::connect_to(endpoint).await {
            Err(DockerError::UnsupportedEndpoint { endpoint: e, .. }) => assert_eq!(e, endpoint),
            Err(other) => panic!("{endpoint}: expected UnsupportedEndpoint, got {other:?}"),
            Ok(_) => panic!("{endpoint}: connected"),
        }
    }
}
