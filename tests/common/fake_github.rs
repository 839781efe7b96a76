//! A fake GitHub for the tests: the REST endpoints eifctl calls (API, upload host, download
//! host), in-memory releases and assets, scripted faults, and a record of every request.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eifctl::github::{GitHub, RetryPolicy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const TOKEN: &str = "ghp_test_SECRET_0123456789";

// ---------------------------------------------------------------------------------------------
// The fake GitHub.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Api,
    Uploads,
    Objects,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub host: Host,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: usize,
    pub body_sha256: String,
    pub json: Option<Value>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
    pub fn mutating(&self) -> bool {
        self.method != "GET"
    }
}

#[derive(Clone, Debug)]
pub struct StoredAsset {
    pub id: u64,
    pub name: String,
    pub content_type: String,
    pub state: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct StoredRelease {
    pub id: u64,
    pub tag: String,
    pub name: String,
    pub body: String,
    pub draft: bool,
    pub prerelease: bool,
    pub assets: Vec<StoredAsset>,
}

/// A scripted misbehaviour for the next `times` requests matching `method` and a path suffix.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub times: usize,
    pub kind: FaultKind,
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status, headers and JSON body, changing nothing.
    Status(u16, Vec<(&'static str, String)>, Value),
    /// Store the uploaded asset, then answer 422 `already_exists` (a concurrent upload won).
    StoreThenAlreadyExists,
    /// Read part of the upload body, leave a `starter` asset, and close the socket.
    DropMidUpload,
}

#[derive(Default)]
pub struct State {
    pub token: String,
    pub digests: bool,
    pub next_id: u64,
    pub releases: Vec<StoredRelease>,
    pub faults: Vec<Fault>,
    pub seen: Vec<Seen>,
}

pub struct FakeGitHub {
    pub rt: tokio::runtime::Runtime,
    pub api: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl FakeGitHub {
    pub fn start(digests: bool) -> FakeGitHub {
        let rt = super::runtime();
        let state = Arc::new(Mutex::new(State {
            token: TOKEN.into(),
            digests,
            next_id: 1,
            ..State::default()
        }));
        let (api, uploads, objects) = rt.block_on(async {
            let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let u = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let o = TcpListener::bind("127.0.0.1:0").await.unwrap();
            (a, u, o)
        });
        let addrs = Addrs {
            uploads: uploads.local_addr().unwrap(),
            objects: objects.local_addr().unwrap(),
        };
        let server = FakeGitHub {
            api: api.local_addr().unwrap(),
            state: state.clone(),
            rt,
        };
        for (listener, host) in [
            (api, Host::Api),
            (uploads, Host::Uploads),
            (objects, Host::Objects),
        ] {
            let state = state.clone();
            let addrs = addrs.clone();
            server.rt.spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let state = state.clone();
                    let addrs = addrs.clone();
                    tokio::spawn(async move {
                        let _ = connection(sock, host, state, addrs).await;
                    });
                }
            });
        }
        server
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api/v3", self.api)
    }

    pub fn github(&self, token: &str) -> GitHub {
        GitHub::new(&self.api_url(), token.into())
            .unwrap()
            .with_retry(RetryPolicy::with_base(Duration::from_millis(1)))
    }

    pub fn fault(&self, method: &'static str, path_contains: &str, times: usize, kind: FaultKind) {
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.into(),
            times,
            kind,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    pub fn release(&self, tag: &str) -> Option<StoredRelease> {
        let st = self.state.lock().unwrap();
        st.releases.iter().find(|r| r.tag == tag).cloned()
    }

    pub fn asset_bytes(&self, tag: &str, name: &str) -> Option<Vec<u8>> {
        self.release(tag)?
            .assets
            .into_iter()
            .find(|a| a.name == name && a.state == "uploaded")
            .map(|a| a.bytes)
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        super::runtime().block_on(f)
    }
}

#[derive(Clone)]
pub struct Addrs {
    pub uploads: SocketAddr,
    pub objects: SocketAddr,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json; charset=utf-8".into())],
        body: if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        },
    }
}

pub fn not_found() -> Reply {
    reply(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

pub fn already_exists(resource: &str, field: &str) -> Reply {
    reply(
        422,
        json!({"message": "Validation Failed",
               "errors": [{"resource": resource, "code": "already_exists", "field": field}]}),
    )
}

async fn connection(
    sock: TcpStream,
    host: Host,
    state: Arc<Mutex<State>>,
    addrs: Addrs,
) -> std::io::Result<()> {
    let mut sock = BufReader::new(sock);
    let mut line = String::new();
    sock.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut h = String::new();
        sock.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let content_length: Option<usize> = headers
        .get("content-length")
        .and_then(|v| v.first())
        .and_then(|v| v.parse().ok());

    // A scripted fault for this request?
    let fault = {
        let mut st = state.lock().unwrap();
        let found = st.faults.iter_mut().find(|f| {
            f.times > 0 && f.method == method && target.contains(f.path_contains.as_str())
        });
        found.map(|f| {
            f.times -= 1;
            f.kind.clone()
        })
    };
    if let Some(FaultKind::DropMidUpload) = fault {
        let len = content_length.unwrap_or(0);
        let mut part = vec![0u8; (len / 3).min(4096)];
        sock.read_exact(&mut part).await?;
        let mut st = state.lock().unwrap();
        record(&mut st, host, &method, &path, &query, &headers, &part);
        if let Some(rel) = release_for_upload(&mut st, &path) {
            let name = query_param(&query, "name").unwrap_or_default();
            let next = st.next_id;
            st.next_id += 1;
            let rel = st.releases.iter_mut().find(|r| r.id == rel).unwrap();
            rel.assets.push(StoredAsset {
                id: next,
                name,
                content_type: "application/octet-stream".into(),
                state: "starter",
                bytes: part,
            });
        }
        return Ok(()); // the socket is dropped with the rest of the body unread
    }

    let mut body = Vec::new();
    let reply = if headers.contains_key("transfer-encoding") && content_length.is_none() {
        reply(411, json!({"message": "Length Required"}))
    } else {
        body = vec![0u8; content_length.unwrap_or(0)];
        sock.read_exact(&mut body).await?;
        let mut st = state.lock().unwrap();
        record(&mut st, host, &method, &path, &query, &headers, &body);
        match fault {
            Some(FaultKind::Status(status, hs, b)) => {
                let mut r = reply(status, b);
                r.headers.extend(hs);
                r
            }
            _ => route(
                &mut st,
                host,
                &method,
                &path,
                &query,
                &headers,
                &body,
                &addrs,
                matches!(fault, Some(FaultKind::StoreThenAlreadyExists)),
            ),
        }
    };
    let _ = body;
    let mut out = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let sock = sock.get_mut();
    sock.write_all(out.as_bytes()).await?;
    sock.write_all(&reply.body).await?;
    sock.shutdown().await?;
    Ok(())
}

pub fn record(
    st: &mut State,
    host: Host,
    method: &str,
    path: &str,
    query: &str,
    headers: &BTreeMap<String, Vec<String>>,
    body: &[u8],
) {
    let json = serde_json::from_slice(body).ok();
    st.seen.push(Seen {
        host,
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers.clone(),
        body_len: body.len(),
        body_sha256: hex::encode(Sha256::digest(body)),
        json,
    });
}

pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// `/repos/{o}/{r}/releases/{id}/assets` on the upload host: the release id, if it exists.
pub fn release_for_upload(st: &mut State, path: &str) -> Option<u64> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.as_slice() {
        ["repos", _, _, "releases", id, "assets"] => {
            let id: u64 = id.parse().ok()?;
            st.releases.iter().any(|r| r.id == id).then_some(id)
        }
        _ => None,
    }
}

pub fn asset_json(st: &State, repo: &str, a: &StoredAsset, api: &str) -> Value {
    let mut v = json!({
        "url": format!("{api}/repos/{repo}/releases/assets/{}", a.id),
        "browser_download_url": format!("https://github.example/{repo}/releases/download/x/{}", a.name),
        "id": a.id,
        "node_id": format!("RA_{}", a.id),
        "name": a.name,
        "label": null,
        "state": a.state,
        "content_type": a.content_type,
        "size": a.bytes.len(),
        "download_count": 0,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "uploader": null,
    });
    if st.digests {
        v["digest"] = json!(format!("sha256:{}", hex::encode(Sha256::digest(&a.bytes))));
    }
    v
}

pub fn release_json(
    st: &State,
    repo: &str,
    r: &StoredRelease,
    api: &str,
    uploads: SocketAddr,
) -> Value {
    json!({
        "url": format!("{api}/repos/{repo}/releases/{}", r.id),
        "html_url": format!("https://github.example/{repo}/releases/tag/{}", r.tag),
        "assets_url": format!("{api}/repos/{repo}/releases/{}/assets", r.id),
        "upload_url": format!("http://{uploads}/repos/{repo}/releases/{}/assets{{?name,label}}", r.id),
        "tarball_url": null,
        "zipball_url": null,
        "id": r.id,
        "node_id": format!("RE_{}", r.id),
        "tag_name": r.tag,
        "target_commitish": "main",
        "name": r.name,
        "body": r.body,
        "draft": r.draft,
        "prerelease": r.prerelease,
        "created_at": "2024-01-01T00:00:00Z",
        "published_at": "2024-01-01T00:00:00Z",
        "author": null,
        "assets": r.assets.iter().map(|a| asset_json(st, repo, a, api)).collect::<Vec<_>>(),
    })
}

#[allow(clippy::too_many_arguments)]
pub fn route(
    st: &mut State,
    host: Host,
    method: &str,
    path: &str,
    query: &str,
    headers: &BTreeMap<String, Vec<String>>,
    body: &[u8],
    addrs: &Addrs,
    store_then_conflict: bool,
) -> Reply {
    let api = "http://api.invalid/api/v3";
    if host != Host::Objects {
        let auth = headers.get("authorization").and_then(|v| v.first());
        let ok = auth.is_some_and(|a| {
            *a == format!("Bearer {}", st.token) || *a == format!("token {}", st.token)
        });
        if !ok {
            return reply(
                401,
                json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
            );
        }
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (host, method, seg.as_slice()) {
        (Host::Api, "GET", ["api", "v3", "repos", o, r, "releases", "tags", tag]) => {
            let repo = format!("{o}/{r}");
            match st.releases.iter().find(|x| x.tag == *tag) {
                Some(rel) => reply(200, release_json(st, &repo, rel, api, addrs.uploads)),
                None => not_found(),
            }
        }
        (Host::Api, "POST", ["api", "v3", "repos", o, r, "releases"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return reply(400, json!({"message": "Problems parsing JSON"}));
            };
            let Some(tag) = v["tag_name"].as_str() else {
                return reply(422, json!({"message": "Validation Failed"}));
            };
            if st.releases.iter().any(|x| x.tag == tag) {
                return already_exists("Release", "tag_name");
            }
            let rel = StoredRelease {
                id: st.next_id,
                tag: tag.into(),
                name: v["name"].as_str().unwrap_or(tag).into(),
                body: v["body"].as_str().unwrap_or_default().into(),
                draft: v["draft"].as_bool().unwrap_or(false),
                prerelease: v["prerelease"].as_bool().unwrap_or(false),
                assets: Vec::new(),
            };
            st.next_id += 1;
            st.releases.push(rel.clone());
            reply(
                201,
                release_json(st, &format!("{o}/{r}"), &rel, api, addrs.uploads),
            )
        }
        (Host::Api, "PATCH", ["api", "v3", "repos", o, r, "releases", id]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return reply(400, json!({"message": "Problems parsing JSON"}));
            };
            let id: u64 = id.parse().unwrap_or(0);
            let Some(i) = st.releases.iter().position(|x| x.id == id) else {
                return not_found();
            };
            let rel = &mut st.releases[i];
            if let Some(b) = v["body"].as_str() {
                rel.body = b.into();
            }
            if let Some(n) = v["name"].as_str() {
                rel.name = n.into();
            }
            let rel = rel.clone();
            reply(
                200,
                release_json(st, &format!("{o}/{r}"), &rel, api, addrs.uploads),
            )
        }
        (Host::Api, "GET", ["api", "v3", "repos", o, r, "releases", id, "assets"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(rel) = st.releases.iter().find(|x| x.id == id) else {
                return not_found();
            };
            let per_page: usize = query_param(query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30)
                .min(100);
            let page: usize = query_param(query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let list: Vec<Value> = rel
                .assets
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|a| asset_json(st, &format!("{o}/{r}"), a, api))
                .collect();
            reply(200, Value::Array(list))
        }
        (Host::Api, "DELETE", ["api", "v3", "repos", _, _, "releases", "assets", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            for rel in &mut st.releases {
                if let Some(i) = rel.assets.iter().position(|a| a.id == id) {
                    rel.assets.remove(i);
                    return reply(204, Value::Null);
                }
            }
            not_found()
        }
        (Host::Api, "GET", ["api", "v3", "repos", o, r, "releases", "assets", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let found = st
                .releases
                .iter()
                .flat_map(|r| r.assets.iter())
                .find(|a| a.id == id)
                .cloned();
            let Some(a) = found else {
                return not_found();
            };
            let accept = headers.get("accept").and_then(|v| v.first());
            if accept.is_some_and(|a| a == "application/octet-stream") {
                Reply {
                    status: 302,
                    headers: vec![(
                        "location",
                        format!("http://{}/dl/{}?X-Amz-Signature=abc", addrs.objects, a.id),
                    )],
                    body: Vec::new(),
                }
            } else {
                reply(200, asset_json(st, &format!("{o}/{r}"), &a, api))
            }
        }
        (Host::Uploads, "POST", ["repos", o, r, "releases", id, "assets"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(name) = query_param(query, "name") else {
                return reply(422, json!({"message": "name is required"}));
            };
            if !headers.contains_key("content-length") {
                return reply(411, json!({"message": "Length Required"}));
            }
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            let next = st.next_id;
            let Some(rel) = st.releases.iter_mut().find(|x| x.id == id) else {
                return not_found();
            };
            let asset = StoredAsset {
                id: next,
                name: name.clone(),
                content_type,
                state: "uploaded",
                bytes: body.to_vec(),
            };
            if rel.assets.iter().any(|a| a.name == name) {
                return already_exists("ReleaseAsset", "name");
            }
            rel.assets.push(asset.clone());
            st.next_id += 1;
            if store_then_conflict {
                return already_exists("ReleaseAsset", "name");
            }
            reply(201, asset_json(st, &format!("{o}/{r}"), &asset, api))
        }
        (Host::Objects, "GET", ["dl", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let found = st
                .releases
                .iter()
                .flat_map(|r| r.assets.iter())
                .find(|a| a.id == id)
                .cloned();
            match found {
                Some(a) => Reply {
                    status: 200,
                    headers: vec![("content-type", "application/octet-stream".into())],
                    body: a.bytes,
                },
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}
