//! Publishing a release's measurements on GitHub, and fetching them back.
//!
//! A release is identified by its tag. [`GitHub::publish`] makes the release hold exactly the
//! files of a build output directory (`pcr-values.json`, its signature `pcr-values.json.asc`,
//! the signer's certificate `signer.asc`, optionally the EIF and the normalized image) and is
//! idempotent: it first looks at what the release already holds, refuses (before changing
//! anything) an asset that exists with different bytes unless asked to replace it, and then only
//! creates what is missing. A re-run with the same files sends no mutating request, and a re-run
//! after a failure completes a half-finished release.
//!
//! The HTTP client is octocrab's (authentication, base URI, `X-GitHub-Api-Version`), used through
//! its raw request methods: eifctl needs the response headers to honour `retry-after` on
//! secondary rate limits, streams uploads from the file instead of buffering them in memory,
//! takes the upload host from the release's `upload_url` (which is what makes GitHub Enterprise
//! work), and follows the asset download redirect itself so the token never goes to the
//! download host.
//!
//! The token is never printed: [`GitHub`]'s `Debug` leaves it out, and every message that comes
//! back from the network is scrubbed of it before it becomes an error.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use octocrab::{OctoBody, Octocrab};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, ManifestError};

/// The public GitHub API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The REST API version eifctl is written against (octocrab sends the same).
pub const API_VERSION: &str = "2022-11-28";
/// The media type of the JSON API.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.github+json";

/// The manifest and its signature: always published.
pub const MANIFEST: &str = "pcr-values.json";
pub const SIGNATURE: &str = "pcr-values.json.asc";
pub const SIGNER: &str = "signer.asc";

/// Why talking to GitHub, or reading what is to be published, failed. One line each.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("--repo {0:?}: expected owner/name")]
    BadRepo(String),
    #[error("--tag {0:?}: a tag is letters, digits and . _ + -")]
    BadTag(String),
    #[error("API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error(
        "GitHub refused the token in GITHUB_TOKEN ({status}: {message}): check that it is valid and may write releases of this repository"
    )]
    TokenRefused { status: u16, message: String },
    #[error("{what}: {status}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: GitHub answered {status} {tries} times, giving up")]
    Server {
        what: String,
        status: u16,
        tries: u32,
    },
    #[error("{what}: rate limited {tries} times, giving up: try again later")]
    RateLimited { what: String, tries: u32 },
    #[error("{what}: network error ({tries} tries): {message}")]
    Network {
        what: String,
        tries: u32,
        message: String,
    },
    #[error("{what}: unexpected response: {message}")]
    Response { what: String, message: String },
    #[error(
        "release {tag} already has an asset {name} with different contents (size {remote_size}, local {local_size}): pass --replace to replace it"
    )]
    AssetConflict {
        tag: String,
        name: String,
        remote_size: u64,
        local_size: u64,
    },
    #[error("{repo} has no release with tag {tag}")]
    NoRelease { repo: String, tag: String },
    #[error("release {tag} has no asset {name}")]
    MissingAsset { tag: String, name: String },
    #[error("asset {name}: downloaded {what} does not match the release's ({expected})")]
    Corrupt {
        name: String,
        what: String,
        expected: String,
    },
}

impl GitHubError {
    /// True when the error is about the input (arguments, files, conflicting release contents)
    /// rather than the environment (token, network, GitHub itself, the disk).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            GitHubError::BadRepo(_)
                | GitHubError::BadTag(_)
                | GitHubError::BadUrl { .. }
                | GitHubError::Read { .. }
                | GitHubError::Manifest { .. }
                | GitHubError::BadFile { .. }
                | GitHubError::AssetConflict { .. }
                | GitHubError::NoRelease { .. }
                | GitHubError::MissingAsset { .. }
        )
    }
}

/// How hard to try again on 5xx answers, connection errors and rate limits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub tries: u32,
    /// The first wait; each next wait doubles it.
    pub base: Duration,
    /// No wait is longer, whatever `retry-after` says.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            tries: 5,
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Waits of `base`, `2 base`, `4 base`… capped at `max_wait`: for tests, a base of a
    /// millisecond keeps them fast.
    pub fn with_base(base: Duration) -> RetryPolicy {
        RetryPolicy {
            base,
            max_wait: (base * 64).min(Duration::from_secs(60)),
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << (attempt.saturating_sub(1)).min(16);
        (self.base * factor).min(self.max_wait)
    }
}

/// What [`GitHub::publish`] is asked to do.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    pub draft: bool,
    pub prerelease: bool,
    /// Also publish the EIF and the normalized image (`docker-archive`).
    pub with_eif: bool,
    /// Replace assets whose bytes differ instead of refusing.
    pub replace: bool,
    /// The release body (see [`release_notes`]).
    pub notes: String,
}

/// What [`GitHub::publish`] did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PublishReport {
    pub release_url: String,
    /// The release was created by this run.
    pub created: bool,
    /// The release body was updated by this run.
    pub notes_updated: bool,
    pub uploaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub replaced: Vec<String>,
}

/// A GitHub (or GitHub Enterprise) API endpoint with a token.
pub struct GitHub {
    /// `https://api.github.com` or `https://ghe.example/api/v3`, without a trailing slash.
    api_base: String,
    token: String,
    retry: RetryPolicy,
    /// One client per origin and authentication (the API, the upload host, download hosts).
    clients: Mutex<HashMap<(String, bool), Octocrab>>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_base", &self.api_base)
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

/// The parts of a release eifctl reads.
#[derive(Clone, Debug, Deserialize)]
struct Release {
    id: u64,
    #[serde(default)]
    html_url: String,
    upload_url: String,
    #[serde(default)]
    body: Option<String>,
}

/// The parts of a release asset eifctl reads.
#[derive(Clone, Debug, Deserialize)]
struct Asset {
    id: u64,
    name: String,
    size: u64,
    /// `uploaded`, or `starter` for an upload that never finished.
    #[serde(default = "uploaded")]
    state: String,
    /// `sha256:<hex>`, where the API provides it (GitHub since 2025).
    #[serde(default)]
    digest: Option<String>,
}

fn uploaded() -> String {
    "uploaded".into()
}

/// A file to publish, hashed.
#[derive(Clone, Debug)]
struct LocalFile {
    name: String,
    path: PathBuf,
    size: u64,
    sha256: String,
}

type Response = http::Response<http_body_util::combinators::BoxBody<Bytes, octocrab::Error>>;

/// How an existing asset compares with the local file.
enum Existing {
    Same,
    Different {
        remote_size: u64,
    },
    /// An upload that never finished: not a published asset, replace it.
    Broken,
}

impl GitHub {
    /// A client for `api_url` (e.g. [`DEFAULT_API_URL`] or `https://ghe.example/api/v3`).
    pub fn new(api_url: &str, token: String) -> Result<GitHub, GitHubError> {
        let api_base = api_url.trim_end_matches('/').to_string();
        let uri: http::Uri = api_base.parse().map_err(|e| GitHubError::BadUrl {
            url: api_url.into(),
            reason: format!("{e}"),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(GitHubError::BadUrl {
                url: api_url.into(),
                reason: "not an http(s) URL".into(),
            });
        }
        if uri.query().is_some() {
            return Err(GitHubError::BadUrl {
                url: api_url.into(),
                reason: "has a query".into(),
            });
        }
        // An empty token means anonymous access: enough to download a public release.
        if !token.is_empty() && http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(GitHubError::TokenRefused {
                status: 0,
                message: "not a valid header value".into(),
            });
        }
        let gh = GitHub {
            api_base,
            token,
            retry: RetryPolicy::default(),
            clients: Mutex::new(HashMap::new()),
        };
        // The clients are made when first needed: octocrab needs a Tokio runtime to make one.
        origin_of(&gh.api_base)?;
        Ok(gh)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> GitHub {
        self.retry = retry;
        self
    }

    /// Publishes the build output directory `dir` as the release `tag` of `repo` (owner/name).
    pub async fn publish(
        &self,
        repo: &str,
        tag: &str,
        dir: &Path,
        opts: PublishOptions,
    ) -> Result<PublishReport, GitHubError> {
        self.session()
            .publish_in_session(repo, tag, dir, opts)
            .await
    }

    /// Downloads the assets `names` of release `tag` into `dest`, each written atomically.
    /// Every name is looked up before anything is downloaded.
    pub async fn download_release(
        &self,
        repo: &str,
        tag: &str,
        dest: &Path,
        names: &[&str],
    ) -> Result<Vec<PathBuf>, GitHubError> {
        self.session()
            .download_in_session(repo, tag, dest, names)
            .await
    }

    /// A copy with no clients yet: octocrab's clients run on the runtime they were made in, so
    /// each call makes its own, in the caller's runtime.
    fn session(&self) -> GitHub {
        GitHub {
            api_base: self.api_base.clone(),
            token: self.token.clone(),
            retry: self.retry.clone(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn publish_in_session(
        &self,
        repo: &str,
        tag: &str,
        dir: &Path,
        opts: PublishOptions,
    ) -> Result<PublishReport, GitHubError> {
        let (owner, name) = split_repo(repo)?;
        check_tag(tag)?;
        // Everything local first: no request is made for a directory that cannot be published.
        let manifest = read_manifest(dir)?;
        let files = local_files(dir, &manifest, opts.with_eif).await?;
        let repo_path = format!("{}/repos/{owner}/{name}", self.api_base);

        let existing = self.release_by_tag(&repo_path, tag).await?;
        let mut assets = match &existing {
            Some(r) => self.list_assets(&repo_path, r.id).await?,
            None => Vec::new(),
        };
        // Plan: compare what is there with what is to be published, and refuse a conflict
        // before anything is changed.
        let mut plan = Vec::new();
        for file in &files {
            let state = match assets.iter().find(|a| a.name == file.name) {
                Some(a) => Some((a.id, self.compare(&repo_path, a, file).await?)),
                None => None,
            };
            if let Some((_, Existing::Different { remote_size })) = &state
                && !opts.replace
            {
                return Err(GitHubError::AssetConflict {
                    tag: tag.into(),
                    name: file.name.clone(),
                    remote_size: *remote_size,
                    local_size: file.size,
                });
            }
            plan.push(state);
        }

        let (release, created, notes_updated) = match existing {
            Some(r) => {
                let updated = if r.body.as_deref().unwrap_or("") != opts.notes {
                    self.update_body(&repo_path, &r, &opts.notes).await?;
                    true
                } else {
                    false
                };
                (r, false, updated)
            }
            None => {
                let title = format!("{} {}", manifest.name, manifest.version);
                let (r, created) = self.create_release(&repo_path, tag, &title, &opts).await?;
                if !created {
                    // Someone else created it between our GET and POST: see what it holds.
                    assets = self.list_assets(&repo_path, r.id).await?;
                    plan.clear();
                    for file in &files {
                        plan.push(match assets.iter().find(|a| a.name == file.name) {
                            Some(a) => Some((a.id, self.compare(&repo_path, a, file).await?)),
                            None => None,
                        });
                    }
                }
                (r, created, false)
            }
        };
        let upload_url = upload_base(&release.upload_url)?;

        let mut report = PublishReport {
            release_url: release.html_url.clone(),
            created,
            notes_updated,
            uploaded: Vec::new(),
            unchanged: Vec::new(),
            replaced: Vec::new(),
        };
        for (file, state) in files.iter().zip(plan) {
            let mut state = state;
            // An upload refused with `already_exists` means the asset appeared meanwhile (a
            // concurrent or half-finished upload): look again, a bounded number of times.
            for round in 0.. {
                match state {
                    Some((_, Existing::Same)) => {
                        report.unchanged.push(file.name.clone());
                        break;
                    }
                    Some((_, Existing::Different { remote_size })) if !opts.replace => {
                        return Err(GitHubError::AssetConflict {
                            tag: tag.into(),
                            name: file.name.clone(),
                            remote_size,
                            local_size: file.size,
                        });
                    }
                    Some((id, ref how)) => {
                        let replaced = matches!(how, Existing::Different { .. });
                        self.delete_asset(&repo_path, id, &file.name).await?;
                        if self.upload(&upload_url, file).await? {
                            if replaced {
                                report.replaced.push(file.name.clone());
                            } else {
                                report.uploaded.push(file.name.clone());
                            }
                            break;
                        }
                    }
                    None => {
                        if self.upload(&upload_url, file).await? {
                            report.uploaded.push(file.name.clone());
                            break;
                        }
                    }
                }
                if round >= 2 {
                    return Err(GitHubError::Response {
                        what: format!("uploading {}", file.name),
                        message: "refused as already existing, but not listed on the release"
                            .into(),
                    });
                }
                assets = self.list_assets(&repo_path, release.id).await?;
                state = match assets.iter().find(|a| a.name == file.name) {
                    Some(a) => Some((a.id, self.compare(&repo_path, a, file).await?)),
                    None => None,
                };
            }
        }
        Ok(report)
    }

    async fn download_in_session(
        &self,
        repo: &str,
        tag: &str,
        dest: &Path,
        names: &[&str],
    ) -> Result<Vec<PathBuf>, GitHubError> {
        let (owner, name) = split_repo(repo)?;
        check_tag(tag)?;
        let repo_path = format!("{}/repos/{owner}/{name}", self.api_base);
        let release =
            self.release_by_tag(&repo_path, tag)
                .await?
                .ok_or_else(|| GitHubError::NoRelease {
                    repo: repo.into(),
                    tag: tag.into(),
                })?;
        let assets = self.list_assets(&repo_path, release.id).await?;
        let mut wanted = Vec::new();
        for n in names {
            check_asset_name(Path::new(n), n)?;
            let asset = assets
                .iter()
                .find(|a| a.name == *n && a.state == "uploaded")
                .ok_or_else(|| GitHubError::MissingAsset {
                    tag: tag.into(),
                    name: n.to_string(),
                })?;
            wanted.push(asset.clone());
        }
        std::fs::create_dir_all(dest).map_err(|source| GitHubError::Write {
            path: dest.into(),
            source,
        })?;
        let mut written = Vec::new();
        for asset in wanted {
            let path = dest.join(&asset.name);
            let write_err = |source| GitHubError::Write {
                path: path.clone(),
                source,
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".eifctl-")
                .suffix(".tmp")
                .tempfile_in(dest)
                .map_err(write_err)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            self.fetch_asset(&repo_path, &asset, &mut |chunk: &[u8]| {
                hasher.update(chunk);
                size += chunk.len() as u64;
                tmp.write_all(chunk)
            })
            .await
            .map_err(|e| match e {
                GitHubError::Write { source, .. } => write_err(source),
                other => other,
            })?;
            check_download(&asset, size, &hex::encode(hasher.finalize()))?;
            tmp.as_file().sync_all().map_err(write_err)?;
            tmp.persist(&path).map_err(|e| write_err(e.error))?;
            written.push(path);
        }
        Ok(written)
    }

    async fn release_by_tag(
        &self,
        repo_path: &str,
        tag: &str,
    ) -> Result<Option<Release>, GitHubError> {
        let what = format!("getting release {tag}");
        let uri = format!("{repo_path}/releases/tags/{tag}");
        let resp = self.json_request(&what, Method::GET, &uri, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = self.expect(&what, resp, &[StatusCode::OK]).await?;
        parse(&what, &body).map(Some)
    }

    /// Creates the release; `false` when it turned out to exist already (created concurrently,
    /// or by an earlier try whose answer was lost).
    async fn create_release(
        &self,
        repo_path: &str,
        tag: &str,
        title: &str,
        opts: &PublishOptions,
    ) -> Result<(Release, bool), GitHubError> {
        let what = format!("creating release {tag}");
        let body = serde_json::json!({
            "tag_name": tag,
            "name": title,
            "body": opts.notes,
            "draft": opts.draft,
            "prerelease": opts.prerelease,
        });
        let uri = format!("{repo_path}/releases");
        let resp = self
            .json_request(&what, Method::POST, &uri, Some(&body))
            .await?;
        if resp.status() == StatusCode::UNPROCESSABLE_ENTITY {
            let bytes = self.collect(&what, resp).await?;
            if already_exists(&bytes)
                && let Some(r) = self.release_by_tag(repo_path, tag).await?
            {
                return Ok((r, false));
            }
            return Err(GitHubError::Http {
                what,
                status: 422,
                message: self.message(&bytes),
            });
        }
        let bytes = self.expect(&what, resp, &[StatusCode::CREATED]).await?;
        Ok((parse(&what, &bytes)?, true))
    }

    async fn update_body(
        &self,
        repo_path: &str,
        release: &Release,
        notes: &str,
    ) -> Result<(), GitHubError> {
        let what = "updating the release notes".to_string();
        let uri = format!("{repo_path}/releases/{}", release.id);
        let body = serde_json::json!({ "body": notes });
        let resp = self
            .json_request(&what, Method::PATCH, &uri, Some(&body))
            .await?;
        self.expect(&what, resp, &[StatusCode::OK]).await?;
        Ok(())
    }

    async fn list_assets(&self, repo_path: &str, id: u64) -> Result<Vec<Asset>, GitHubError> {
        const PER_PAGE: usize = 100;
        let what = "listing the release's assets".to_string();
        let mut all = Vec::new();
        for page in 1.. {
            let uri = format!("{repo_path}/releases/{id}/assets?per_page={PER_PAGE}&page={page}");
            let resp = self.json_request(&what, Method::GET, &uri, None).await?;
            let bytes = self.expect(&what, resp, &[StatusCode::OK]).await?;
            let assets: Vec<Asset> = parse(&what, &bytes)?;
            let n = assets.len();
            all.extend(assets);
            if n < PER_PAGE || page >= 100 {
                break;
            }
        }
        Ok(all)
    }

    async fn delete_asset(&self, repo_path: &str, id: u64, name: &str) -> Result<(), GitHubError> {
        let what = format!("deleting asset {name}");
        let uri = format!("{repo_path}/releases/assets/{id}");
        let resp = self.json_request(&what, Method::DELETE, &uri, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(()); // already gone (an earlier try's answer was lost)
        }
        self.expect(&what, resp, &[StatusCode::NO_CONTENT, StatusCode::OK])
            .await?;
        Ok(())
    }

    /// Uploads `file`, streamed; `false` when GitHub says an asset of that name already exists.
    async fn upload(&self, upload_url: &str, file: &LocalFile) -> Result<bool, GitHubError> {
        let what = format!("uploading {}", file.name);
        let uri = format!("{upload_url}?name={}", file.name);
        let client = self.client(&origin_of(upload_url)?, true)?;
        let content_type = content_type(&file.name);
        let resp = self
            .send(&what, &client, async || {
                let f = tokio::fs::File::open(&file.path).await.map_err(|source| {
                    GitHubError::Read {
                        path: file.path.clone(),
                        source,
                    }
                })?;
                let meta = f.metadata().await.map_err(|source| GitHubError::Read {
                    path: file.path.clone(),
                    source,
                })?;
                if meta.len() != file.size {
                    return Err(GitHubError::BadFile {
                        path: file.path.clone(),
                        reason: "changed while being published".into(),
                    });
                }
                let stream = futures_util::StreamExt::map(
                    tokio_util::io::ReaderStream::with_capacity(
                        tokio::io::AsyncReadExt::take(f, file.size),
                        64 * 1024,
                    ),
                    |chunk| chunk.map(http_body::Frame::data),
                );
                let body = OctoBody::new(http_body_util::StreamBody::new(stream));
                http::Request::builder()
                    .method(Method::POST)
                    .uri(&uri)
                    .header(ACCEPT, JSON_MEDIA_TYPE)
                    .header("X-GitHub-Api-Version", API_VERSION)
                    .header(CONTENT_TYPE, content_type)
                    .header(CONTENT_LENGTH, file.size)
                    .body(body)
                    .map_err(|e| GitHubError::Response {
                        what: what.clone(),
                        message: e.to_string(),
                    })
            })
            .await?;
        if resp.status() == StatusCode::UNPROCESSABLE_ENTITY {
            let bytes = self.collect(&what, resp).await?;
            if already_exists(&bytes) {
                return Ok(false);
            }
            return Err(GitHubError::Http {
                what,
                status: 422,
                message: self.message(&bytes),
            });
        }
        let bytes = self
            .expect(&what, resp, &[StatusCode::CREATED, StatusCode::OK])
            .await?;
        let asset: Asset = parse(&what, &bytes)?;
        if asset.size != file.size {
            return Err(GitHubError::Response {
                what,
                message: format!("GitHub stored {} bytes of {}", asset.size, file.size),
            });
        }
        Ok(true)
    }

    /// Compares an existing asset with the local file: by size, then by the API's digest when
    /// it gives one, else by downloading it.
    async fn compare(
        &self,
        repo_path: &str,
        asset: &Asset,
        file: &LocalFile,
    ) -> Result<Existing, GitHubError> {
        if asset.state != "uploaded" {
            return Ok(Existing::Broken);
        }
        let different = Existing::Different {
            remote_size: asset.size,
        };
        if asset.size != file.size {
            return Ok(different);
        }
        if let Some(digest) = &asset.digest
            && let Some(hex) = digest.strip_prefix("sha256:")
        {
            return Ok(if hex.eq_ignore_ascii_case(&file.sha256) {
                Existing::Same
            } else {
                different
            });
        }
        let mut hasher = Sha256::new();
        self.fetch_asset(repo_path, asset, &mut |chunk: &[u8]| {
            hasher.update(chunk);
            Ok(())
        })
        .await?;
        Ok(if hex::encode(hasher.finalize()) == file.sha256 {
            Existing::Same
        } else {
            different
        })
    }

    /// Streams an asset's bytes into `sink`: the API answers with a redirect to the download
    /// host, which is followed without the token.
    async fn fetch_asset(
        &self,
        repo_path: &str,
        asset: &Asset,
        sink: &mut (dyn FnMut(&[u8]) -> io::Result<()> + Send),
    ) -> Result<(), GitHubError> {
        let what = format!("downloading asset {}", asset.name);
        let uri = format!("{repo_path}/releases/assets/{}", asset.id);
        let api = self.client(&origin_of(&self.api_base)?, true)?;
        let mut resp = self
            .send(&what, &api, async || {
                let req = http::Request::builder()
                    .method(Method::GET)
                    .uri(&uri)
                    .header(ACCEPT, "application/octet-stream");
                api.build_request(req, None::<&()>)
                    .map_err(|e| self.response_error(&what, &e))
            })
            .await?;
        for _ in 0..5 {
            if !resp.status().is_redirection() {
                break;
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| GitHubError::Response {
                    what: what.clone(),
                    message: format!("{} without a Location", resp.status()),
                })?;
            let target = resolve(&uri, location);
            let client = self.client(&origin_of(&target)?, false)?;
            resp = self
                .send(&what, &client, async || {
                    let req = http::Request::builder()
                        .method(Method::GET)
                        .uri(&target)
                        .header(ACCEPT, "application/octet-stream");
                    client
                        .build_request(req, None::<&()>)
                        .map_err(|e| self.response_error(&what, &e))
                })
                .await?;
        }
        if resp.status() != StatusCode::OK {
            self.expect(&what, resp, &[StatusCode::OK]).await?;
            return Ok(());
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| GitHubError::Network {
                what: what.clone(),
                tries: 1,
                message: self.scrub(&chain(&e)),
            })?;
            if let Ok(data) = frame.into_data() {
                sink(&data).map_err(|source| GitHubError::Write {
                    path: PathBuf::from(&asset.name),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// A JSON API request through the API client, retried.
    async fn json_request(
        &self,
        what: &str,
        method: Method,
        uri: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, GitHubError> {
        let api = self.client(&origin_of(&self.api_base)?, true)?;
        self.send(what, &api, async || {
            let req = http::Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(ACCEPT, JSON_MEDIA_TYPE);
            api.build_request(req, body)
                .map_err(|e| self.response_error(what, &e))
        })
        .await
    }

    /// Sends a request made afresh by `make` for every try, retrying with exponential backoff
    /// on connection errors, 5xx answers and rate limits. Other answers are returned as they are.
    async fn send<F>(
        &self,
        what: &str,
        client: &Octocrab,
        mut make: F,
    ) -> Result<Response, GitHubError>
    where
        F: AsyncFnMut() -> Result<http::Request<OctoBody>, GitHubError>,
    {
        let tries = self.retry.tries.max(1);
        let mut last = GitHubError::Network {
            what: what.into(),
            tries,
            message: "no attempt".into(),
        };
        for attempt in 1..=tries {
            let req = make().await?;
            let mut wait = self.retry.backoff(attempt);
            match client.execute(req).await {
                Err(e) => {
                    last = GitHubError::Network {
                        what: what.into(),
                        tries,
                        message: self.scrub(&chain(&e)),
                    };
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_server_error() {
                        last = GitHubError::Server {
                            what: what.into(),
                            status: status.as_u16(),
                            tries,
                        };
                    } else if let Some(hint) = rate_limited(&resp) {
                        if let Some(after) = hint {
                            wait = after;
                        }
                        last = GitHubError::RateLimited {
                            what: what.into(),
                            tries,
                        };
                    } else {
                        return Ok(resp);
                    }
                    // Drain the answer so the connection can be reused.
                    let _ = resp.into_body().collect().await;
                }
            }
            if attempt < tries {
                tokio::time::sleep(wait.min(self.retry.max_wait)).await;
            }
        }
        Err(last)
    }

    /// The body of an expected answer, or the error the status means.
    async fn expect(
        &self,
        what: &str,
        resp: Response,
        ok: &[StatusCode],
    ) -> Result<Bytes, GitHubError> {
        let status = resp.status();
        let bytes = self.collect(what, resp).await?;
        if ok.contains(&status) {
            return Ok(bytes);
        }
        let message = self.message(&bytes);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(GitHubError::TokenRefused {
                status: status.as_u16(),
                message,
            });
        }
        Err(GitHubError::Http {
            what: what.into(),
            status: status.as_u16(),
            message,
        })
    }

    async fn collect(&self, what: &str, resp: Response) -> Result<Bytes, GitHubError> {
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| GitHubError::Network {
                what: what.into(),
                tries: 1,
                message: self.scrub(&chain(&e)),
            })?
            .to_bytes())
    }

    /// GitHub's `message` from an error answer, short and without the token.
    fn message(&self, bytes: &[u8]) -> String {
        let text = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => match v.get("message").and_then(|m| m.as_str()) {
                Some(m) => m.to_string(),
                None => v.to_string(),
            },
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        let mut text = self.scrub(&text).replace(['\n', '\r'], " ");
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        if text.is_empty() {
            "(no message)".into()
        } else {
            text
        }
    }

    fn response_error(&self, what: &str, e: &octocrab::Error) -> GitHubError {
        GitHubError::Response {
            what: what.into(),
            message: self.scrub(&chain(e)),
        }
    }

    fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            return text.to_string();
        }
        text.replace(&self.token, "<token>")
    }

    /// The client for `origin` (scheme and authority only, so octocrab never rewrites the
    /// paths given to it), with or without the token.
    fn client(&self, origin: &str, auth: bool) -> Result<Octocrab, GitHubError> {
        let mut clients = self.clients.lock().expect("not poisoned");
        if let Some(c) = clients.get(&(origin.to_string(), auth)) {
            return Ok(c.clone());
        }
        let bad = |e: octocrab::Error| GitHubError::BadUrl {
            url: origin.into(),
            reason: self.scrub(&chain(&e)),
        };
        let mut builder = Octocrab::builder()
            .base_uri(origin)
            .map_err(bad)?
            .upload_uri(origin)
            .map_err(bad)?
            .set_connect_timeout(Some(Duration::from_secs(30)))
            .set_read_timeout(Some(Duration::from_secs(300)))
            .set_write_timeout(Some(Duration::from_secs(300)));
        if auth && !self.token.is_empty() {
            builder = builder.personal_token(self.token.clone());
        }
        let client = builder
            .build()
            .map_err(|e| GitHubError::Client(self.scrub(&chain(&e))))?;
        clients.insert((origin.to_string(), auth), client.clone());
        Ok(client)
    }
}

/// Markdown for the release body: the PCRs, the enclave configuration, and how to verify.
pub fn release_notes(manifest: &Manifest, repo: &str, tag: &str) -> String {
    let mut s = String::new();
    let m = manifest;
    s.push_str(&format!(
        "Measurements of the AWS Nitro Enclave image **{} {}** ({}), built reproducibly by eifctl {}.\n\n",
        m.name, m.version, m.arch, m.inputs.eifctl_version
    ));
    s.push_str("| PCR | SHA-384 |\n|---|---|\n");
    for idx in ["0", "1", "2", "8"] {
        if let Some(pcr) = m.pcrs.get(idx) {
            s.push_str(&format!("| PCR{idx} | `{pcr}` |\n"));
        }
    }
    s.push_str("\nEnclave configuration:\n\n");
    s.push_str(&format!(
        "- memory: {} MiB\n- vCPUs: {}\n- debug mode: {} (a debug-mode enclave reports all-zero PCRs)\n",
        m.enclave_config.memory_mib,
        m.enclave_config.cpu_count,
        if m.enclave_config.debug_mode { "on" } else { "off" }
    ));
    if let Some(it) = &m.instance_type {
        s.push_str(&format!("- recommended parent instance: {it}\n"));
    }
    s.push_str(&format!(
        "\nBuilt from `{}` at commit `{}` (tree `{}`{}), SOURCE_DATE_EPOCH {}; normalized image `{}`.\n",
        m.inputs.source.path,
        m.inputs.source.revision,
        m.inputs.source.tree,
        if m.inputs.source.dirty {
            ", with uncommitted changes"
        } else {
            ""
        },
        m.inputs.source_date_epoch,
        m.docker_image.digest,
    ));
    if let Some(eif) = &m.eif {
        s.push_str(&format!(
            "EIF `{}`: {} bytes, sha256 `{}`.\n",
            eif.file, eif.size, eif.sha256
        ));
    }
    s.push_str("\n### Verify\n\nWith eifctl (checks the signature against the trusted keys, then rebuilds and compares):\n\n```sh\n");
    s.push_str(&format!("eifctl verify --repo {repo} --tag {tag}\n"));
    s.push_str("```\n\nWith gpg alone, from this release's assets:\n\n```sh\n");
    s.push_str(&format!(
        "gpg --import {SIGNER}\ngpg --verify {SIGNATURE} {MANIFEST}\n"
    ));
    s.push_str("```\n\nand compare the PCRs above with those of the EIF:\n\n```sh\n");
    let eif = m
        .eif
        .as_ref()
        .map(|e| e.file.clone())
        .unwrap_or_else(|| format!("{}.eif", m.name));
    s.push_str(&format!("eifctl describe {eif}\n```\n"));
    s
}

/// `owner/name`, each part letters, digits, `.`, `_`, `-`.
pub fn split_repo(repo: &str) -> Result<(&str, &str), GitHubError> {
    let bad = || GitHubError::BadRepo(repo.into());
    let (owner, name) = repo.split_once('/').ok_or_else(bad)?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !part_ok(owner) || !part_ok(name) {
        return Err(bad());
    }
    Ok((owner, name))
}

fn check_tag(tag: &str) -> Result<(), GitHubError> {
    let ok = !tag.is_empty()
        && tag != "."
        && tag != ".."
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(GitHubError::BadTag(tag.into()))
    }
}

/// Reads `dir/pcr-values.json`, insisting that it is canonical and complete.
pub fn read_manifest(dir: &Path) -> Result<Manifest, GitHubError> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|source| GitHubError::Read {
        path: path.clone(),
        source,
    })?;
    let manifest = Manifest::from_canonical(&bytes).map_err(|source| GitHubError::Manifest {
        path: path.clone(),
        source,
    })?;
    manifest
        .require_complete()
        .map_err(|source| GitHubError::Manifest { path, source })?;
    Ok(manifest)
}

/// An asset name must be a plain file name (it is put in a URL query and a local path).
fn check_asset_name(path: &Path, name: &str) -> Result<(), GitHubError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(GitHubError::BadFile {
            path: path.into(),
            reason: format!("{name:?} is not a plain file name"),
        })
    }
}

/// The files to publish, in order, each sized and hashed.
async fn local_files(
    dir: &Path,
    manifest: &Manifest,
    with_eif: bool,
) -> Result<Vec<LocalFile>, GitHubError> {
    let mut names = vec![
        MANIFEST.to_string(),
        SIGNATURE.to_string(),
        SIGNER.to_string(),
    ];
    if with_eif {
        let eif = manifest
            .eif
            .as_ref()
            .map(|e| e.file.clone())
            .unwrap_or_default();
        names.push(eif);
        names.push(manifest.docker_image.archive.clone());
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        for name in names {
            let path = dir.join(&name);
            check_asset_name(&path, &name)?;
            let (size, sha256) = hash_file(&path)?;
            if size == 0 {
                return Err(GitHubError::BadFile {
                    path,
                    reason: "empty".into(),
                });
            }
            files.push(LocalFile {
                name,
                path,
                size,
                sha256,
            });
        }
        Ok(files)
    })
    .await
    .expect("hashing does not panic")
}

fn hash_file(path: &Path) -> Result<(u64, String), GitHubError> {
    let err = |source| GitHubError::Read {
        path: path.into(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn check_download(asset: &Asset, size: u64, sha256: &str) -> Result<(), GitHubError> {
    if size != asset.size {
        return Err(GitHubError::Corrupt {
            name: asset.name.clone(),
            what: format!("size {size}"),
            expected: format!("{} bytes", asset.size),
        });
    }
    if let Some(hex) = asset
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("sha256:"))
        && !hex.eq_ignore_ascii_case(sha256)
    {
        return Err(GitHubError::Corrupt {
            name: asset.name.clone(),
            what: format!("sha256 {sha256}"),
            expected: format!("sha256 {hex}"),
        });
    }
    Ok(())
}

fn content_type(name: &str) -> &'static str {
    if name == SIGNER {
        "application/pgp-keys"
    } else if name.ends_with(".asc") {
        "application/pgp-signature"
    } else if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".tar") {
        "application/x-tar"
    } else {
        "application/octet-stream"
    }
}

/// The upload URL without its `{?name,label}` template.
fn upload_base(template: &str) -> Result<String, GitHubError> {
    let base = template.split('{').next().unwrap_or_default();
    origin_of(base)?;
    Ok(base.to_string())
}

/// `scheme://authority` of an absolute URL.
fn origin_of(url: &str) -> Result<String, GitHubError> {
    let bad = |reason: &str| GitHubError::BadUrl {
        url: url.into(),
        reason: reason.into(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(s @ ("http" | "https")), Some(a)) => Ok(format!("{s}://{a}")),
        _ => Err(bad("not an absolute http(s) URL")),
    }
}

/// A `Location` resolved against the URL that answered with it.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else {
        match origin_of(base) {
            Ok(origin) if location.starts_with('/') => format!("{origin}{location}"),
            _ => location.to_string(),
        }
    }
}

/// `Some(wait hint)` when the answer is a rate limit: 429, or 403 with `retry-after` or
/// `x-ratelimit-remaining: 0`.
fn rate_limited(resp: &Response) -> Option<Option<Duration>> {
    let status = resp.status();
    let h = resp.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if status != StatusCode::TOO_MANY_REQUESTS
        && !(status == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted))
    {
        return None;
    }
    if let Some(secs) = retry_after {
        return Some(Some(Duration::from_secs(secs)));
    }
    if exhausted
        && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(Some(Duration::from_secs(reset.saturating_sub(now))));
    }
    Some(None)
}

/// A 422 answer whose errors say `already_exists`.
fn already_exists(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e.get("code").and_then(|c| c.as_str()) == Some("already_exists"))
        })
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(bytes).map_err(|e| GitHubError::Response {
        what: what.into(),
        message: format!("not the expected JSON: {e}"),
    })
}

use crate::one_line as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_are_owner_slash_name() {
        assert_eq!(split_repo("acme/enclave").unwrap(), ("acme", "enclave"));
        for bad in ["acme", "acme/", "/x", "a/b/c", "a/..", "a b/c", ""] {
            assert!(split_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_upload_url_template_is_cut_and_its_origin_kept() {
        let t = "https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}";
        assert_eq!(
            upload_base(t).unwrap(),
            "https://uploads.github.com/repos/o/r/releases/1/assets"
        );
        assert_eq!(
            origin_of("https://ghe.example/api/uploads/x").unwrap(),
            "https://ghe.example"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            tries: 5,
            base: Duration::from_millis(10),
            max_wait: Duration::from_millis(50),
        };
        let waits: Vec<_> = (1..=5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let gh = GitHub::new("http://127.0.0.1:9", "ghp_secret123".into()).unwrap();
        let dbg = format!("{gh:?}");
        assert!(!dbg.contains("ghp_secret123"), "{dbg}");
        assert_eq!(gh.scrub("x ghp_secret123 y"), "x <token> y");
    }
}
