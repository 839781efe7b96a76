//! A registry on the loopback interface that serves one image, so that pulling by digest can
//! be tested where no real registry is reachable.
//!
//! It speaks just enough of the registry HTTP API v2 for Docker 20.10's puller: `GET /v2/`,
//! `GET` and `HEAD` of the manifest by its digest, `GET` of the config and layer blobs. Plain
//! HTTP, one request per connection: Docker uses plain HTTP with registries on 127.0.0.0/8
//! (after its TLS attempt fails, which this server answers by closing the connection). It
//! serves nothing but that image, and only to whoever connects on 127.0.0.1; its threads end
//! with the test process.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::images::sha256_hex;

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A running registry with one image.
pub struct Registry {
    address: String,
    repository: String,
    manifest_digest: String,
    config_digest: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// What the server answers with, by request path.
struct Content {
    media_type: &'static str,
    digest: String,
    body: Vec<u8>,
}

impl Registry {
    /// Serves `repository` with one image: `config` and `layers` (uncompressed tars; they are
    /// served gzipped, as registries do), in a schema 2 manifest.
    pub fn serve(repository: &str, config: Vec<u8>, layers: &[Vec<u8>]) -> Registry {
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let mut blobs: Vec<Content> = layers
            .iter()
            .map(|layer| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(layer).unwrap();
                let body = gz.finish().unwrap();
                Content {
                    media_type: LAYER_TYPE,
                    digest: format!("sha256:{}", sha256_hex(&body)),
                    body,
                }
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": { "mediaType": CONFIG_TYPE, "size": config.len(), "digest": config_digest },
            "layers": blobs.iter().map(|b| json!({
                "mediaType": b.media_type, "size": b.body.len(), "digest": b.digest,
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
        blobs.push(Content {
            media_type: CONFIG_TYPE,
            digest: config_digest.clone(),
            body: config,
        });

        let mut routes: HashMap<String, Content> = blobs
            .into_iter()
            .map(|b| (format!("/v2/{repository}/blobs/{}", b.digest), b))
            .collect();
        routes.insert(
            format!("/v2/{repository}/manifests/{manifest_digest}"),
            Content {
                media_type: MANIFEST_TYPE,
                digest: manifest_digest.clone(),
                body: manifest,
            },
        );
        routes.insert(
            "/v2/".to_owned(),
            Content {
                media_type: "application/json",
                digest: String::new(),
                body: b"{}".to_vec(),
            },
        );

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (routes, log) = (Arc::clone(&routes), Arc::clone(&log));
                std::thread::spawn(move || answer(stream, &routes, &log));
            }
        });
        Registry {
            address,
            repository: repository.to_owned(),
            manifest_digest,
            config_digest,
            requests,
        }
    }

    /// `127.0.0.1:PORT/REPOSITORY@sha256:<manifest digest>`.
    pub fn reference(&self) -> String {
        format!(
            "{}/{}@{}",
            self.address, self.repository, self.manifest_digest
        )
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The ID the image has once pulled: the digest of its config.
    pub fn image_id(&self) -> &str {
        &self.config_digest
    }

    /// The request lines received so far (`GET /v2/ HTTP/1.1`, ...).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request and answers it; anything that does not look like HTTP (such as a TLS
/// client hello) is answered by closing the connection.
fn answer(mut stream: TcpStream, routes: &HashMap<String, Content>, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        if !head[0].is_ascii_uppercase() || head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let path = if path == "/v2" { "/v2/" } else { path };

    let (status, content) = match routes.get(path) {
        Some(content) if method == "GET" || method == "HEAD" => ("200 OK", Some(content)),
        Some(_) => ("405 Method Not Allowed", None),
        None => ("404 Not Found", None),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n"
    );
    let body: &[u8] = match content {
        Some(c) => {
            response.push_str(&format!("Content-Type: {}\r\n", c.media_type));
            if !c.digest.is_empty() {
                response.push_str(&format!("Docker-Content-Digest: {}\r\n", c.digest));
            }
            &c.body
        }
        None => br#"{"errors":[{"code":"NOT_FOUND","message":"not served here"}]}"#,
    };
    response.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(response.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
}
