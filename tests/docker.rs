//! Smoke tests of `eifctl::docker` against a real daemon, and of its "no daemon" errors.
//!
//! The daemon tests need a Docker daemon: scripts/test starts one. They fail, rather than
//! skip, without one, with the one-line message that says how to start it; a skipped
//! Docker test would let CI pass without ever having built anything.
//!
//! No test here changes the environment: it is shared by every test of the process. The
//! error tests call `connect_to` with an endpoint instead of setting `DOCKER_HOST`.
//!
//! No registry is reachable here or in CI: every image is made on this machine
//! (`common::images`), and pulls go to a registry served on 127.0.0.1 by the test itself
//! (`common::registry`), or to a closed port there.

mod common;

use common::runtime;

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

use bollard::API_DEFAULT_VERSION;
use bollard::query_parameters::ListContainersOptions;
use common::images::{self, TarEntry};
use common::registry::Registry;
use eifctl::docker::{
    self, DockerError, EXPORT_LABEL, EXPORT_PLACEHOLDER_CMD, Export, ImageInfo, MIN_API_VERSION,
};
use tar::EntryType;

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

// --- images --------------------------------------------------------------------------------------

/// A port on the loopback interface that nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn base_image_loads_to_the_same_id_every_time() {
    let docker = connect_or_explain().await;
    let (first, id) = images::base_archive();
    let (second, id_again) = images::base_archive();
    assert_eq!(first, second, "the base archive is not deterministic");
    assert_eq!(id, id_again);

    images::load_archive(&docker, first).await;
    assert_eq!(images::image_id(&docker, images::BASE_TAG).await, id);
    images::load_archive(&docker, second).await;
    assert_eq!(images::image_id(&docker, images::BASE_TAG).await, id);
    assert_eq!(images::base_image(&docker).await, id);

    let info = docker::inspect_image(&docker, &id).await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.architecture, images::go_arch());
    assert_eq!(info.os, "linux");
    assert_eq!(info.cmd, None);
    assert_eq!(info.entrypoint, None);
    assert_eq!(info.env, Some(vec![images::BASE_PATH.to_owned()]));
    assert_eq!(info.working_dir, None);
    assert!(info.repo_tags.contains(&images::BASE_TAG.to_owned()));
    assert!(info.repo_digests.is_empty(), "{:?}", info.repo_digests);
}

#[tokio::test]
async fn inspect_reports_what_the_dockerfile_set() {
    let docker = connect_or_explain().await;
    let id = images::feature_image(&docker).await;

    for reference in [id.as_str(), images::FEATURE_TAG] {
        let info: ImageInfo = docker::inspect_image(&docker, reference).await.unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.architecture, images::go_arch());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(info.architecture, "amd64");
        assert_eq!(info.os, "linux");
        assert_eq!(
            info.entrypoint,
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned()])
        );
        assert_eq!(info.cmd, Some(vec!["cat /etc/hello.txt; env".to_owned()]));
        assert_eq!(
            info.env,
            Some(vec![
                images::BASE_PATH.to_owned(),
                "GREETING=hello world".to_owned(),
                "EIFCTL_TEST=1".to_owned(),
                "LANG=C.UTF-8".to_owned(),
            ])
        );
        assert_eq!(info.working_dir.as_deref(), Some("/data"));
        assert!(info.repo_tags.contains(&images::FEATURE_TAG.to_owned()));

        // The document is the daemon's own: the same as the docker CLI prints.
        assert_eq!(info.inspect["Id"], serde_json::json!(id));
        let layers = info.inspect["RootFS"]["Layers"].as_array().unwrap();
        assert!(layers.len() >= 4, "{layers:?}");
        let cli = common::sh(&format!("docker image inspect {id}"));
        let cli: Vec<serde_json::Value> = serde_json::from_str(&cli).unwrap();
        assert_eq!(cli.len(), 1);
        assert_eq!(info.inspect, cli[0]);
    }
}

#[tokio::test]
async fn an_absent_image_is_image_not_found_and_a_plain_reference_is_not_pulled() {
    let docker = connect_or_explain().await;
    let absent = "eifctl-test/absent:never";
    match docker::inspect_image(&docker, absent).await {
        Err(DockerError::ImageNotFound { reference }) => assert_eq!(reference, absent),
        other => panic!("{other:?}"),
    }

    // A registry on a closed loopback port: a pull would fail with the daemon's error, so
    // ImageNotFound shows that none was tried.
    let absent = format!("127.0.0.1:{}/eifctl-test/absent:1", closed_port());
    let mut progress = Vec::new();
    let err = docker::ensure_image_with_progress(&docker, &absent, &mut |line| {
        progress.push(line.to_owned())
    })
    .await
    .unwrap_err();
    let DockerError::ImageNotFound { reference } = &err else {
        panic!("expected ImageNotFound, got {err:?}");
    };
    assert_eq!(reference, &absent);
    assert!(progress.is_empty(), "{progress:?}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.contains("pulls only references pinned by digest"),
        "{text}"
    );

    // An image that is here is returned as it is, by tag or by ID.
    let base = images::base_image(&docker).await;
    let info = docker::ensure_image(&docker, images::BASE_TAG)
        .await
        .unwrap();
    assert_eq!(info.id, base);
}

#[tokio::test]
async fn a_digest_reference_to_an_absent_image_is_pulled_and_the_daemons_error_reported() {
    let docker = connect_or_explain().await;
    let registry = format!("127.0.0.1:{}", closed_port());
    let absent = format!("{registry}/eifctl-test/absent@sha256:{HEX}");
    let err = docker::ensure_image_with_progress(&docker, &absent, &mut |_| {})
        .await
        .unwrap_err();
    let DockerError::Pull { reference, message } = &err else {
        panic!("expected Pull, got {err:?}");
    };
    assert_eq!(reference, &absent);
    // The daemon tried that registry, and said why it could not get the image.
    assert!(message.contains(&registry), "{message}");
    assert!(message.contains("refused"), "{message}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with(&format!("cannot pull {absent}: ")),
        "{text}"
    );

    // A malformed digest is refused before any request.
    match docker::ensure_image(&docker, "busybox@sha256:abc").await {
        Err(DockerError::InvalidReference { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// Removes an image reference when dropped, also when the test fails.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", &self.0])
            .output();
    }
}

#[tokio::test]
async fn a_digest_reference_is_pulled_and_its_digest_checked() {
    let docker = connect_or_explain().await;
    // An image of its own, so that pulling it changes no other test's image: the base's
    // layer, which the engine has, and one it has never seen, which it must download.
    let base = images::base_layer();
    let nonce = format!(
        "{:?} {}\n",
        std::time::SystemTime::now(),
        std::process::id()
    );
    let fresh = images::tar_of(&[
        ("etc", 0o755, images::Entry::Dir),
        ("etc/pulled", 0o644, images::Entry::File(nonce.as_bytes())),
    ]);
    let config = images::image_config(&[&base, &fresh], &[("eifctl.test", "pulled")]);
    let registry = Registry::serve("eifctl-test/pulled", config, &[base, fresh]);
    let reference = registry.reference();
    let _untag = Untag(reference.clone());

    let mut progress = Vec::new();
    let info = docker::ensure_image_with_progress(&docker, &reference, &mut |line| {
        progress.push(line.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(info.id, registry.image_id());
    assert!(
        info.repo_digests.contains(&reference),
        "{:?}",
        info.repo_digests
    );
    assert!(
        progress.iter().any(|l| l.ends_with(": Pull complete")),
        "{progress:?}"
    );
    assert!(
        !progress.iter().any(|l| l.contains("Downloading")),
        "byte counts passed on: {progress:?}"
    );
    let requests = registry.requests();
    let manifest = format!(
        "GET /v2/eifctl-test/pulled/manifests/{}",
        &reference[reference.find('@').unwrap() + 1..]
    );
    assert!(
        requests.iter().any(|r| r.starts_with(&manifest)),
        "{requests:?}"
    );

    // Now it is here: found without asking the registry again.
    let again = docker::ensure_image_with_progress(&docker, &reference, &mut |line| {
        panic!("pulled again: {line}")
    })
    .await
    .unwrap();
    assert_eq!(again.id, info.id);
    assert_eq!(registry.requests().len(), requests.len());
}

/// The IDs of the containers that exports have made and not yet removed; only those of
/// `image` (an image ID) if given.
async fn export_containers(docker: &bollard::Docker, image: Option<&str>) -> Vec<String> {
    let label = match image {
        Some(image) => format!("{EXPORT_LABEL}={image}"),
        None => EXPORT_LABEL.to_owned(),
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Starts an export, and checks that its container exists while it runs.
fn start_export(rt: &tokio::runtime::Runtime, docker: &bollard::Docker, image: &str) -> Export {
    let export = docker::export_image(docker, image, rt.handle()).unwrap();
    let listed = rt.block_on(export_containers(docker, Some(image)));
    assert!(
        listed.iter().any(|id| id == export.container_id()),
        "container {} of a running export is not listed: {listed:?}",
        export.container_id()
    );
    export
}

fn assert_removed(rt: &tokio::runtime::Runtime, docker: &bollard::Docker, container: &str) {
    let listed = rt.block_on(export_containers(docker, None));
    assert!(
        !listed.iter().any(|id| id == container),
        "container {container} is left behind"
    );
}

fn entry<'a>(map: &'a HashMap<String, TarEntry>, path: &str) -> &'a TarEntry {
    map.get(path)
        .unwrap_or_else(|| panic!("{path} is not in the export"))
}

#[test]
fn export_of_the_feature_image_has_what_the_dockerfile_made() {
    let rt = runtime();
    let docker = rt.block_on(connect_or_explain());
    let id = rt.block_on(images::feature_image(&docker));

    let export = start_export(&rt, &docker, &id);
    let container = export.container_id().to_owned();
    let list = images::list_tar(export);
    assert_removed(&rt, &docker, &container);

    let paths: Vec<&str> = list.iter().map(|(p, _)| p.as_str()).collect();
    let map = images::tar_map(list.clone());
    assert_eq!(map.len(), list.len(), "an entry appears twice");

    // Layer by layer, as the Dockerfile made them.
    assert_eq!(entry(&map, "bin/busybox").kind, EntryType::Regular);
    assert_eq!(
        entry(&map, "bin/sh").link.as_deref(),
        Some("busybox"),
        "bin/sh"
    );
    let hello = entry(&map, "etc/hello.txt");
    assert_eq!(hello.data.as_deref(), Some(images::HELLO));
    assert_eq!(hello.mode & 0o7777, 0o644);
    assert_eq!(entry(&map, "usr/local/bin/tool.sh").mode & 0o7777, 0o755);

    // The deleted file and the replaced directory's old content are gone; no whiteout shows.
    assert!(!map.contains_key("data/deleted"), "{paths:?}");
    assert!(!map.contains_key("data/opaque/old"), "{paths:?}");
    assert_eq!(
        entry(&map, "data/opaque/new").data.as_deref(),
        Some(&b"new\n"[..])
    );
    assert!(!paths.iter().any(|p| p.contains(".wh.")), "{paths:?}");

    // Symlinks keep their targets as written.
    let relative = entry(&map, "data/relative-link");
    assert_eq!(relative.kind, EntryType::Symlink);
    assert_eq!(relative.link.as_deref(), Some("../etc/hello.txt"));
    let absolute = entry(&map, "data/absolute-link");
    assert_eq!(absolute.kind, EntryType::Symlink);
    assert_eq!(absolute.link.as_deref(), Some("/etc/hello.txt"));

    // Hard links: one name holds the data, the other links to it; setuid kept.
    for (a, b, mode) in [
        ("data/keep/file", "data/keep/file-hardlink", 0o644),
        (
            "usr/local/bin/suid-tool",
            "usr/local/bin/suid-tool-hardlink",
            0o4755,
        ),
    ] {
        let (first, second) =
            if paths.iter().position(|p| *p == a) < paths.iter().position(|p| *p == b) {
                (a, b)
            } else {
                (b, a)
            };
        let data = entry(&map, first);
        assert_eq!(data.kind, EntryType::Regular, "{first}");
        assert_eq!(data.mode & 0o7777, mode, "{first}");
        let link = entry(&map, second);
        assert_eq!(link.kind, EntryType::Link, "{second}");
        assert_eq!(link.link.as_deref(), Some(first), "{second}");
    }
    assert_eq!(
        entry(&map, "usr/local/bin/suid-tool")
            .data
            .as_deref()
            .or(entry(&map, "usr/local/bin/suid-tool-hardlink")
                .data
                .as_deref()),
        Some(images::TOOL)
    );

    // The empty directory is there, and empty.
    assert_eq!(entry(&map, "empty").kind, EntryType::Directory);
    assert!(!paths.iter().any(|p| p.starts_with("empty/")), "{paths:?}");
    assert_eq!(entry(&map, "data").kind, EntryType::Directory);

    // What the engine adds to every container's filesystem.
    assert!(map.contains_key(".dockerenv"), "{paths:?}");
    // The placeholder command is given only to images without one, and is not a file anyway.
    assert!(!map.contains_key(EXPORT_PLACEHOLDER_CMD.trim_start_matches('/')));
}

#[test]
fn export_read_to_the_end_has_removed_its_container() {
    let rt = runtime();
    let docker = rt.block_on(connect_or_explain());
    // The base has neither Cmd nor Entrypoint: the export gives its container a placeholder.
    let id = rt.block_on(images::base_image(&docker));

    let mut export = start_export(&rt, &docker, &id);
    let container = export.container_id().to_owned();
    let mut tar = Vec::new();
    export.read_to_end(&mut tar).unwrap();
    // The end is reported only once the container is gone.
    assert_removed(&rt, &docker, &container);
    assert_eq!(export.read(&mut [0; 16]).unwrap(), 0);
    export.close().unwrap();

    let map = images::tar_map(images::list_tar(&tar[..]));
    let busybox = std::fs::metadata(images::BUSYBOX).unwrap().len();
    assert_eq!(entry(&map, "bin/busybox").size, busybox);
    assert!(!map.contains_key(EXPORT_PLACEHOLDER_CMD.trim_start_matches('/')));
}

#[test]
fn export_dropped_early_removes_its_container() {
    let rt = runtime();
    let docker = rt.block_on(connect_or_explain());
    // Much more than the chunks in flight, so the stream is still running at the drop.
    let id = rt.block_on(images::large_image(&docker, 32 << 20));

    let mut export = start_export(&rt, &docker, &id);
    let container = export.container_id().to_owned();
    let mut head = [0; 4096];
    export.read_exact(&mut head).unwrap();
    drop(export);
    assert_removed(&rt, &docker, &container);

    // close() says the same.
    let mut export = start_export(&rt, &docker, &id);
    let container = export.container_id().to_owned();
    export.read_exact(&mut head).unwrap();
    export.close().unwrap();
    assert_removed(&rt, &docker, &container);

    // Not read at all.
    let export = start_export(&rt, &docker, &id);
    let container = export.container_id().to_owned();
    drop(export);
    assert_removed(&rt, &docker, &container);
}

/// A TCP front for the daemon's socket that cuts each connection once it has carried `limit`
/// bytes from the daemon: a transport failing in the middle of a stream. Only for this
/// process's tests; its threads end with the process.
fn cutting_proxy(limit: usize) -> String {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| docker::DEFAULT_ENDPOINT.to_owned());
    let socket = socket
        .strip_prefix("unix://")
        .unwrap_or_else(|| panic!("this test needs the daemon on a unix socket, not {socket}"))
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(daemon) = UnixStream::connect(&socket) else {
                return;
            };
            relay(client, daemon, limit);
        }
    });
    endpoint
}

fn relay(client: TcpStream, daemon: UnixStream, limit: usize) {
    let (mut client_in, mut daemon_out) =
        (client.try_clone().unwrap(), daemon.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut daemon_out);
        let _ = daemon_out.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut daemon_in, mut client_out) = (daemon, client);
        let mut carried = 0;
        let mut buf = vec![0; 16 << 10];
        loop {
            let n = match daemon_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(limit - carried),
            };
            if std::io::Write::write_all(&mut client_out, &buf[..n]).is_err() {
                break;
            }
            carried += n;
            if carried >= limit {
                break;
            }
        }
        let _ = client_out.shutdown(Shutdown::Both);
        let _ = daemon_in.shutdown(Shutdown::Both);
    });
}

#[test]
fn export_whose_stream_fails_reports_it_and_removes_its_container() {
    let rt = runtime();
    let direct = rt.block_on(connect_or_explain());
    let id = rt.block_on(images::large_image(&direct, 8 << 20));

    let cut = rt
        .block_on(docker::connect_to(&cutting_proxy(1 << 20)))
        .unwrap();
    let mut export = start_export(&rt, &cut, &id);
    let container = export.container_id().to_owned();
    let mut tar = Vec::new();
    let err = export.read_to_end(&mut tar).unwrap_err();
    assert!(tar.len() < 1 << 20, "read {} bytes", tar.len());
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with(&format!(
            "exporting image {id}: the stream from container {container} failed: "
        )),
        "{text}"
    );
    assert!(text.ends_with("the container was removed"), "{text}");
    assert_removed(&rt, &direct, &container);
    // Every later read fails alike: a failed stream never looks like a complete one.
    assert_eq!(export.read(&mut [0; 16]).unwrap_err().to_string(), text);
    export.close().unwrap();
}

#[test]
fn export_of_an_absent_image_fails_before_making_a_container() {
    let rt = runtime();
    let docker = rt.block_on(connect_or_explain());
    let absent = format!("sha256:{HEX}");
    match docker::export_image(&docker, &absent, rt.handle()) {
        Err(DockerError::ImageNotFound { reference }) => assert_eq!(reference, absent),
        other => panic!("{other:?}"),
    }
    // Export containers are labelled with their image's ID. (Other tests' exports may run
    // meanwhile, so only this image's count.)
    let made = rt.block_on(export_containers(&docker, Some(&absent)));
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn the_feature_image_has_whiteouts_in_its_layers() {
    // The export hides them, so check that the fixture really has them: the saved image's
    // layers hold a whiteout for the deleted file and an opaque marker for the replaced
    // directory.
    let rt = runtime();
    let docker = rt.block_on(connect_or_explain());
    let id = rt.block_on(images::feature_image(&docker));
    let saved: Vec<u8> = rt.block_on(async {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let mut stream = docker.export_image(&id);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    });
    let outer = images::list_tar(&saved[..]);
    let manifest = &outer.iter().find(|(p, _)| p == "manifest.json").unwrap().1;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest.data.as_deref().unwrap()).unwrap();
    let mut layer_paths = Vec::new();
    let mut archive = tar::Archive::new(&saved[..]);
    let layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if let Some(i) = layers.iter().position(|l| *l == path) {
            let listed: Vec<String> = images::list_tar(entry)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            layer_paths.push((i, listed));
        }
    }
    layer_paths.sort();
    assert!(layer_paths.len() >= 4, "{} layers", layer_paths.len());
    let has = |path: &str| layer_paths.iter().any(|(_, l)| l.iter().any(|p| p == path));
    assert!(has("data/.wh.deleted"), "{layer_paths:?}");
    assert!(has("data/opaque/.wh..wh..opq"), "{layer_paths:?}");
    assert!(has("data/deleted"));
}
