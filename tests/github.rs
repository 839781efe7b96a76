//! `eifctl publish`, `eifctl record` and the `github` module against a fake GitHub: a small
//! HTTP/1.1 server written here on tokio that implements the documented REST contract of every
//! endpoint eifctl calls, keeps its state in memory and records every request it sees, so the
//! tests assert what eifctl sends.
//!
//! Three listeners, as on github.com: the API (served under `/api/v3`, as GitHub Enterprise
//! does), the upload host (given back in each release's `upload_url`), and the download host
//! that asset downloads are redirected to (which must never see the token).

mod common;

use common::fake_github::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use eifctl::github::{GitHubError, PublishOptions, release_notes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REPO: &str = "acme/enclaves";
const TAG: &str = "v0.1.0";

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// One signing key for the whole test process (generating one is cheap, but why repeat it).
fn signing_key() -> &'static eifctl::openpgp::GeneratedKey {
    static KEY: std::sync::OnceLock<eifctl::openpgp::GeneratedKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        eifctl::openpgp::generate_key("Release <release@example.test>", None, None).unwrap()
    })
}

/// Writes `pcr-values.json.asc`, a real detached signature over the directory's manifest.
fn sign(dir: &Path) {
    let data = std::fs::read(dir.join("pcr-values.json")).unwrap();
    let sig = eifctl::openpgp::sign_detached(signing_key().secret_armored.as_bytes(), None, &data)
        .unwrap();
    std::fs::write(dir.join("pcr-values.json.asc"), sig).unwrap();
}

/// A build output directory as `eifctl build` + `eifctl sign` leave it.
fn build_dir(root: &Path, complete: bool) -> PathBuf {
    let dir = root.join("out/hello/0.1.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pcr-values.json"),
        common::sample_manifest(complete).to_canonical(),
    )
    .unwrap();
    sign(&dir);
    std::fs::write(dir.join("signer.asc"), &signing_key().public_armored).unwrap();
    std::fs::write(dir.join("hello.eif"), common::random_bytes(7, 300_000)).unwrap();
    std::fs::write(dir.join("image.tar"), common::random_bytes(8, 20_000)).unwrap();
    dir
}

const ALL: [&str; 5] = [
    "pcr-values.json",
    "pcr-values.json.asc",
    "signer.asc",
    "hello.eif",
    "image.tar",
];

fn opts(with_eif: bool, replace: bool) -> PublishOptions {
    PublishOptions {
        with_eif,
        replace,
        notes: release_notes(&common::sample_manifest(true), REPO, TAG),
        ..PublishOptions::default()
    }
}

fn eifctl_in(cwd: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eifctl"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("GITHUB_TOKEN")
        .env("EIFCTL_GITHUB_BACKOFF_MS", "1");
    if let Some(t) = token {
        cmd.env("GITHUB_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn publish_args<'a>(gh: &'a str, dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "publish",
        "--repo",
        REPO,
        "--tag",
        TAG,
        "--api-url",
        gh,
        dir,
    ];
    v.extend_from_slice(extra);
    v
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn publish_creates_the_release_uploads_every_asset_and_records_the_manifest() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let api = gh.api_url();
    let o = eifctl_in(
        root.path(),
        &publish_args(
            &api,
            dir.to_str().unwrap(),
            &["--with-eif", "--json", "--prerelease"],
        ),
        Some(TOKEN),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["created"], true);
    assert_eq!(report["uploaded"], json!(ALL));
    assert_eq!(
        report["release_url"],
        json!(format!("https://github.example/{REPO}/releases/tag/{TAG}"))
    );

    let seen = gh.seen();
    let calls: Vec<(Host, &str, &str)> = seen
        .iter()
        .map(|s| (s.host, s.method.as_str(), s.path.as_str()))
        .collect();
    let rel = "/api/v3/repos/acme/enclaves/releases";
    assert_eq!(calls[0], (Host::Api, "GET", &*format!("{rel}/tags/{TAG}")));
    assert_eq!(calls[1], (Host::Api, "POST", rel));
    let id = gh.release(TAG).unwrap().id;
    let uploads = format!("/repos/acme/enclaves/releases/{id}/assets");
    assert_eq!(
        seen.iter().filter(|s| s.host == Host::Uploads).count(),
        5,
        "{calls:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "PATCH" || s.method == "DELETE")
    );

    // Every request carries the token, the JSON media type and the API version.
    for s in seen.iter() {
        assert_eq!(
            s.header("authorization"),
            Some(&*format!("Bearer {TOKEN}")),
            "{s:?}"
        );
        assert_eq!(
            s.header("x-github-api-version"),
            Some("2022-11-28"),
            "{s:?}"
        );
        assert_eq!(
            s.headers["authorization"].len(),
            1,
            "one Authorization header"
        );
        if s.host == Host::Api {
            assert_eq!(
                s.header("accept"),
                Some("application/vnd.github+json"),
                "{s:?}"
            );
        }
    }
    // The create body.
    let create = seen[1].json.as_ref().unwrap();
    assert_eq!(create["tag_name"], TAG);
    assert_eq!(create["name"], "hello 0.1.0");
    assert_eq!(create["draft"], false);
    assert_eq!(create["prerelease"], true);
    let notes = create["body"].as_str().unwrap();
    let m = common::sample_manifest(true);
    for idx in ["0", "1", "2"] {
        assert!(
            notes.contains(&format!("| PCR{idx} | `{}` |", m.pcrs[idx])),
            "{notes}"
        );
    }
    for cmd in [
        "eifctl verify --repo acme/enclaves --tag v0.1.0",
        "gpg --import signer.asc",
        "gpg --verify pcr-values.json.asc pcr-values.json",
        "eifctl describe hello.eif",
        "512 MiB",
    ] {
        assert!(notes.contains(cmd), "{cmd} not in {notes}");
    }
    // The uploads: the name, the type and length, the bytes, streamed with a Content-Length.
    let types = [
        "application/json",
        "application/pgp-signature",
        "application/pgp-keys",
        "application/octet-stream",
        "application/x-tar",
    ];
    let ups: Vec<&Seen> = seen.iter().filter(|s| s.host == Host::Uploads).collect();
    for ((s, name), ty) in ups.iter().zip(ALL).zip(types) {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(s.path, uploads);
        assert_eq!(s.query, format!("name={name}"));
        assert_eq!(s.header("content-type"), Some(ty));
        assert_eq!(s.header("content-length"), Some(&*bytes.len().to_string()));
        assert!(s.header("transfer-encoding").is_none());
        assert_eq!(s.body_len, bytes.len());
        assert_eq!(s.body_sha256, sha256(&bytes));
        assert_eq!(gh.asset_bytes(TAG, name).unwrap(), bytes);
    }
    // Recorded in the repository.
    for name in ["pcr-values.json", "pcr-values.json.asc"] {
        assert_eq!(
            std::fs::read(root.path().join("manifests/hello/0.1.0").join(name)).unwrap(),
            std::fs::read(dir.join(name)).unwrap()
        );
    }
}

#[test]
fn a_rerun_with_the_same_files_sends_no_mutating_request() {
    for digests in [true, false] {
        let gh = FakeGitHub::start(digests);
        let root = tempfile::tempdir().unwrap();
        let dir = build_dir(root.path(), true);
        let client = gh.github(TOKEN);
        gh.block_on(client.publish(REPO, TAG, &dir, opts(true, false)))
            .unwrap();
        gh.clear_seen();
        let report = gh
            .block_on(client.publish(REPO, TAG, &dir, opts(true, false)))
            .unwrap();
        assert!(!report.created);
        assert!(report.uploaded.is_empty() && report.replaced.is_empty());
        assert_eq!(report.unchanged, ALL);
        let seen = gh.seen();
        assert!(!seen.iter().any(Seen::mutating), "{seen:?}");
        let downloads = seen.iter().filter(|s| s.host == Host::Objects).count();
        if digests {
            assert_eq!(downloads, 0, "the digest field is enough");
        } else {
            assert_eq!(
                downloads, 5,
                "without digests every asset is downloaded to compare"
            );
            for s in seen.iter().filter(|s| s.host == Host::Objects) {
                assert!(
                    s.header("authorization").is_none(),
                    "token sent to the download host"
                );
            }
        }
    }
}

#[test]
fn different_notes_on_an_existing_release_are_updated_with_patch() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let client = gh.github(TOKEN);
    let mut old = opts(false, false);
    old.notes = "old notes".into();
    gh.block_on(client.publish(REPO, TAG, &dir, old)).unwrap();
    gh.clear_seen();
    let report = gh
        .block_on(client.publish(REPO, TAG, &dir, opts(false, false)))
        .unwrap();
    assert!(report.notes_updated);
    let seen = gh.seen();
    let mutating: Vec<&Seen> = seen.iter().filter(|s| s.mutating()).collect();
    assert_eq!(mutating.len(), 1, "{mutating:?}");
    assert_eq!(mutating[0].method, "PATCH");
    let id = gh.release(TAG).unwrap().id;
    assert_eq!(
        mutating[0].path,
        format!("/api/v3/repos/acme/enclaves/releases/{id}")
    );
    assert_eq!(
        mutating[0].json.as_ref().unwrap()["body"],
        json!(release_notes(&common::sample_manifest(true), REPO, TAG))
    );
}

#[test]
fn an_asset_with_different_bytes_is_refused_unless_replace() {
    for digests in [true, false] {
        let gh = FakeGitHub::start(digests);
        let root = tempfile::tempdir().unwrap();
        let dir = build_dir(root.path(), true);
        let api = gh.api_url();
        let d = dir.to_str().unwrap();
        let o = eifctl_in(root.path(), &publish_args(&api, d, &[]), Some(TOKEN));
        assert!(o.status.success(), "{}", common::stderr(&o));
        // Same size, other bytes (a new signature, made a second later): only the hash can tell.
        let before = std::fs::read(dir.join("pcr-values.json.asc")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        sign(&dir);
        let after = std::fs::read(dir.join("pcr-values.json.asc")).unwrap();
        assert_eq!(before.len(), after.len());
        assert_ne!(before, after);
        gh.clear_seen();
        let o = eifctl_in(root.path(), &publish_args(&api, d, &[]), Some(TOKEN));
        assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
        let err = common::stderr(&o);
        assert!(
            err.contains("pcr-values.json.asc") && err.contains("--replace"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !gh.seen().iter().any(Seen::mutating),
            "refused before any change"
        );

        gh.clear_seen();
        let o = eifctl_in(
            root.path(),
            &publish_args(&api, d, &["--replace", "--json"]),
            Some(TOKEN),
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["replaced"], json!(["pcr-values.json.asc"]));
        assert_eq!(
            report["unchanged"],
            json!(["pcr-values.json", "signer.asc"])
        );
        let mutating: Vec<(String, String)> = gh
            .seen()
            .iter()
            .filter(|s| s.mutating())
            .map(|s| (s.method.clone(), s.query.clone()))
            .collect();
        assert_eq!(
            mutating,
            [
                ("DELETE".to_string(), String::new()),
                ("POST".to_string(), "name=pcr-values.json.asc".to_string())
            ]
        );
        assert_eq!(
            gh.asset_bytes(TAG, "pcr-values.json.asc").unwrap(),
            std::fs::read(dir.join("pcr-values.json.asc")).unwrap()
        );
    }
}

#[test]
fn server_errors_and_rate_limits_are_retried() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    gh.fault(
        "GET",
        "/releases/tags/",
        1,
        FaultKind::Status(
            403,
            vec![("retry-after", "1".into())],
            json!({"message": "You have exceeded a secondary rate limit."}),
        ),
    );
    gh.fault(
        "POST",
        "/releases",
        1,
        FaultKind::Status(500, vec![], json!({"message": "Server Error"})),
    );
    gh.fault(
        "POST",
        "name=signer.asc",
        2,
        FaultKind::Status(502, vec![], json!({"message": "Bad Gateway"})),
    );
    gh.fault(
        "POST",
        "name=pcr-values.json.asc",
        1,
        FaultKind::Status(
            429,
            vec![("x-ratelimit-remaining", "0".into())],
            json!({"message": "rate limited"}),
        ),
    );
    let started = std::time::Instant::now();
    let report = gh
        .block_on(
            gh.github(TOKEN)
                .publish(REPO, TAG, &dir, opts(false, false)),
        )
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retry-after is capped"
    );
    assert_eq!(report.uploaded, &ALL[..3]);
    let seen = gh.seen();
    let count = |m: &str, p: &str| {
        seen.iter()
            .filter(|s| s.method == m && format!("{}?{}", s.path, s.query).contains(p))
            .count()
    };
    assert_eq!(count("GET", "/releases/tags/"), 2);
    assert_eq!(count("POST", "/releases?"), 2);
    assert_eq!(count("POST", "name=signer.asc"), 3);
    assert_eq!(count("POST", "name=pcr-values.json.asc"), 2);
    assert_eq!(gh.release(TAG).unwrap().assets.len(), 3);
}

#[test]
fn errors_that_outlast_the_retries_are_environment_errors_and_a_rerun_completes_the_release() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let api = gh.api_url();
    let d = dir.to_str().unwrap();
    gh.fault(
        "POST",
        "name=hello.eif",
        5,
        FaultKind::Status(503, vec![], json!({"message": "Service Unavailable"})),
    );
    let o = eifctl_in(
        root.path(),
        &publish_args(&api, d, &["--with-eif"]),
        Some(TOKEN),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(err.contains("hello.eif") && err.contains("503"), "{err}");
    assert!(
        !root.path().join("manifests").exists(),
        "recorded only once published"
    );
    let names: Vec<String> = gh
        .release(TAG)
        .unwrap()
        .assets
        .iter()
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(names, &ALL[..3], "half-finished");

    gh.clear_seen();
    let o = eifctl_in(
        root.path(),
        &publish_args(&api, d, &["--with-eif", "--json"]),
        Some(TOKEN),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["created"], false);
    assert_eq!(report["unchanged"], json!(&ALL[..3]));
    assert_eq!(report["uploaded"], json!(&ALL[3..]));
    let posts: Vec<String> = gh
        .seen()
        .iter()
        .filter(|s| s.mutating())
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(posts, ["name=hello.eif", "name=image.tar"]);
    for name in ALL {
        assert_eq!(
            gh.asset_bytes(TAG, name).unwrap(),
            std::fs::read(dir.join(name)).unwrap()
        );
    }
    assert!(
        root.path()
            .join("manifests/hello/0.1.0/pcr-values.json")
            .exists()
    );
}

#[test]
fn an_upload_refused_as_already_existing_is_compared_not_repeated() {
    let gh = FakeGitHub::start(false);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    gh.fault(
        "POST",
        "name=pcr-values.json.asc",
        1,
        FaultKind::StoreThenAlreadyExists,
    );
    let report = gh
        .block_on(
            gh.github(TOKEN)
                .publish(REPO, TAG, &dir, opts(false, false)),
        )
        .unwrap();
    assert_eq!(report.uploaded, ["pcr-values.json", "signer.asc"]);
    assert_eq!(report.unchanged, ["pcr-values.json.asc"]);
    let seen = gh.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.query == "name=pcr-values.json.asc")
            .count(),
        1
    );
    assert!(!seen.iter().any(|s| s.method == "DELETE"));
    assert_eq!(
        gh.asset_bytes(TAG, "pcr-values.json.asc").unwrap(),
        std::fs::read(dir.join("pcr-values.json.asc")).unwrap()
    );
}

#[test]
fn a_connection_dropped_mid_upload_is_retried_and_the_broken_asset_replaced() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    gh.fault("POST", "name=hello.eif", 1, FaultKind::DropMidUpload);
    let report = gh
        .block_on(gh.github(TOKEN).publish(REPO, TAG, &dir, opts(true, false)))
        .unwrap();
    assert_eq!(report.uploaded, ALL);
    let seen = gh.seen();
    let eif: Vec<(&str, usize)> = seen
        .iter()
        .filter(|s| {
            s.path.ends_with("/assets") && s.query == "name=hello.eif" || s.method == "DELETE"
        })
        .map(|s| (s.method.as_str(), s.body_len))
        .collect();
    // Dropped after part of the body; the retry finds the starter asset (422), which is
    // deleted and uploaded again.
    assert_eq!(eif.len(), 4, "{eif:?}");
    assert!(eif[0].0 == "POST" && eif[0].1 < 300_000);
    assert_eq!(eif[1], ("POST", 300_000));
    assert_eq!(eif[2].0, "DELETE");
    assert_eq!(eif[3], ("POST", 300_000));
    let rel = gh.release(TAG).unwrap();
    assert_eq!(rel.assets.len(), 5);
    assert!(rel.assets.iter().all(|a| a.state == "uploaded"));
    assert_eq!(
        gh.asset_bytes(TAG, "hello.eif").unwrap(),
        std::fs::read(dir.join("hello.eif")).unwrap()
    );
}

#[test]
fn a_refused_token_is_a_clear_error_that_does_not_show_it() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let api = gh.api_url();
    let wrong = "ghp_WRONG_secret_value_42";
    let o = eifctl_in(
        root.path(),
        &publish_args(&api, dir.to_str().unwrap(), &[]),
        Some(wrong),
    );
    assert_eq!(o.status.code(), Some(3));
    let err = common::stderr(&o);
    assert!(
        err.contains("refused the token") && err.contains("Bad credentials"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !common::stdout(&o).contains(wrong),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert_eq!(gh.seen().len(), 1, "not retried");

    let e = gh
        .block_on(
            gh.github(wrong)
                .publish(REPO, TAG, &dir, opts(false, false)),
        )
        .unwrap_err();
    assert!(matches!(e, GitHubError::TokenRefused { status: 401, .. }));
    assert!(!format!("{e} {e:?}").contains(wrong));
}

#[test]
fn unsigned_incomplete_or_unauthenticated_publishing_is_refused_before_any_request() {
    let gh = FakeGitHub::start(true);
    let api = gh.api_url();
    let check = |setup: &dyn Fn(&Path), token: Option<&str>, code: i32, says: &str| {
        let root = tempfile::tempdir().unwrap();
        let dir = build_dir(root.path(), true);
        setup(&dir);
        let o = eifctl_in(
            root.path(),
            &publish_args(&api, dir.to_str().unwrap(), &[]),
            token,
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "{says}: {}",
            common::stderr(&o)
        );
        let err = common::stderr(&o);
        assert!(err.contains(says), "{says}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(gh.seen().is_empty(), "{says}: the server saw a request");
        assert!(!root.path().join("manifests").exists());
    };
    let none = |_: &Path| {};
    check(
        &|d| std::fs::remove_file(d.join("signer.asc")).unwrap(),
        Some(TOKEN),
        2,
        "signer.asc",
    );
    check(
        &|d| std::fs::write(d.join("pcr-values.json.asc"), "").unwrap(),
        Some(TOKEN),
        2,
        "pcr-values.json.asc",
    );
    check(
        &|d| {
            std::fs::write(
                d.join("pcr-values.json"),
                common::sample_manifest(false).to_canonical(),
            )
            .unwrap()
        },
        Some(TOKEN),
        2,
        "incomplete",
    );
    check(
        &|d| {
            let v: Value =
                serde_json::from_slice(&common::sample_manifest(true).to_canonical()).unwrap();
            std::fs::write(d.join("pcr-values.json"), serde_json::to_vec(&v).unwrap()).unwrap()
        },
        Some(TOKEN),
        2,
        "not canonical",
    );
    check(&none, None, 3, "GITHUB_TOKEN");

    // A bad repository name and a missing EIF.
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let d = dir.to_str().unwrap();
    let o = eifctl_in(
        root.path(),
        &[
            "publish",
            "--repo",
            "acme",
            "--tag",
            TAG,
            "--api-url",
            &api,
            d,
        ],
        Some(TOKEN),
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("owner/name"));
    std::fs::remove_file(dir.join("hello.eif")).unwrap();
    let o = eifctl_in(
        root.path(),
        &publish_args(&api, d, &["--with-eif"]),
        Some(TOKEN),
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("hello.eif"));
    assert!(gh.seen().is_empty());
}

#[test]
fn download_release_fetches_the_assets_byte_for_byte() {
    let gh = FakeGitHub::start(true);
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let client = gh.github(TOKEN);
    gh.block_on(client.publish(REPO, TAG, &dir, opts(true, false)))
        .unwrap();
    gh.clear_seen();
    let dest = root.path().join("fetched");
    let got = gh
        .block_on(client.download_release(REPO, TAG, &dest, &ALL))
        .unwrap();
    assert_eq!(got, ALL.map(|n| dest.join(n)));
    for name in ALL {
        assert_eq!(
            std::fs::read(dest.join(name)).unwrap(),
            std::fs::read(dir.join(name)).unwrap(),
            "{name}"
        );
    }
    let seen = gh.seen();
    let asset_gets: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.host == Host::Api && s.path.contains("/releases/assets/"))
        .collect();
    assert_eq!(asset_gets.len(), 5);
    for s in asset_gets {
        assert_eq!(s.header("accept"), Some("application/octet-stream"));
        assert!(s.header("authorization").is_some());
    }
    let objects: Vec<&Seen> = seen.iter().filter(|s| s.host == Host::Objects).collect();
    assert_eq!(objects.len(), 5, "the redirect is followed");
    for s in objects {
        assert!(
            s.header("authorization").is_none(),
            "token sent to the download host"
        );
        assert!(s.query.contains("X-Amz-Signature"));
    }
    assert!(
        !std::fs::read_dir(&dest).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );

    // A missing asset is named, and nothing is downloaded.
    gh.clear_seen();
    let dest2 = root.path().join("fetched2");
    let e = gh
        .block_on(client.download_release(REPO, TAG, &dest2, &["pcr-values.json", "nope.txt"]))
        .unwrap_err();
    assert!(
        matches!(&e, GitHubError::MissingAsset { name, .. } if name == "nope.txt"),
        "{e}"
    );
    assert!(e.to_string().contains("nope.txt"));
    assert!(!gh.seen().iter().any(|s| s.host == Host::Objects));
    let e = gh
        .block_on(client.download_release(REPO, "v9", &dest2, &["pcr-values.json"]))
        .unwrap_err();
    assert!(matches!(e, GitHubError::NoRelease { .. }), "{e}");
}

#[test]
fn record_writes_the_manifest_and_its_signature_into_manifests() {
    let root = tempfile::tempdir().unwrap();
    let dir = build_dir(root.path(), true);
    let o = eifctl_in(root.path(), &["record", dir.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let target = root.path().join("manifests/hello/0.1.0");
    let mut names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["pcr-values.json", "pcr-values.json.asc"]);
    for name in &names {
        assert_eq!(
            std::fs::read(target.join(name)).unwrap(),
            std::fs::read(dir.join(name)).unwrap()
        );
    }
    // Again: nothing to do. A different (valid, later) signature: refused unless --replace.
    let o = eifctl_in(root.path(), &["record", dir.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", common::stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sign(&dir);
    let o = eifctl_in(root.path(), &["record", dir.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("--replace"));
    let o = eifctl_in(
        root.path(),
        &["record", "--replace", dir.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read(target.join("pcr-values.json.asc")).unwrap(),
        std::fs::read(dir.join("pcr-values.json.asc")).unwrap()
    );
    // Unsigned: refused.
    std::fs::remove_file(dir.join("signer.asc")).unwrap();
    let o = eifctl_in(root.path(), &["record", dir.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
}
