//! A stand-in for the enclave's proof server: `GET /attestation?nonce=<hex>` over HTTPS (rustls)
//! or plain HTTP, answered by a closure the test gives, with a record of every request.
//! Blocking std sockets, one thread per connection, `Connection: close`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The raw query (after `?`), empty when none.
    pub query: String,
    /// The `Host` header.
    pub host: String,
}

impl Seen {
    /// The decoded query parameters, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The `nonce` parameter's value, decoded from hex; None if absent or not hex.
    pub fn nonce(&self) -> Option<Vec<u8>> {
        let (_, v) = self.params().into_iter().find(|(k, _)| k == "nonce")?;
        hex::decode(v).ok()
    }
}

/// The answer to one request.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Extra header lines, e.g. `Location: ...`.
    pub headers: Vec<String>,
    /// Send `Content-Length` (else the body ends when the connection closes).
    pub content_length: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::bytes(status, v.to_string().into_bytes())
    }

    pub fn bytes(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body,
            headers: vec![],
            content_length: true,
            delay: Duration::ZERO,
        }
    }

    /// 200 with the proof server's JSON around `doc`.
    pub fn document(doc: &[u8]) -> Reply {
        use base64ct::{Base64, Encoding};
        Reply::json(
            200,
            serde_json::json!({ "attestation_document": Base64::encode_string(doc) }),
        )
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct ProofServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    tls: bool,
}

/// A rustls server configuration from a PEM chain and key (ring provider).
pub fn tls_config(chain_pem: &Path, key_pem: &Path) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(chain_pem)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key_pem).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    Arc::new(config)
}

impl ProofServer {
    /// Listens on 127.0.0.1 (a free port), with TLS when `tls` is given.
    pub fn start(
        tls: Option<Arc<ServerConfig>>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> ProofServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let is_tls = tls.is_some();
        {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, handler, tls) = (seen.clone(), handler.clone(), tls.clone());
                    std::thread::spawn(move || serve(conn, tls, &seen, &*handler));
                }
            });
        }
        ProofServer {
            addr,
            seen,
            stop,
            tls: is_tls,
        }
    }

    /// `https://127.0.0.1:PORT/attestation` (or `http://`).
    pub fn url(&self) -> String {
        format!(
            "{}://{}/attestation",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ProofServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    seen: &Mutex<Vec<Seen>>,
    handler: &Handler,
) {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            if exchange(&mut stream, seen, handler) {
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        }
        None => {
            let mut tcp = tcp;
            exchange(&mut tcp, seen, handler);
        }
    }
}

/// Reads one request head, records it, writes the reply. False when the peer went away (a
/// failed TLS handshake ends here).
fn exchange(s: &mut (impl Read + Write), seen: &Mutex<Vec<Seen>>, handler: &Handler) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return false;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let host = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let request = Seen {
        method,
        path: path.to_string(),
        query: query.to_string(),
        host,
    };
    seen.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    std::thread::sleep(reply.delay);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n",
        reply.status
    );
    if reply.content_length {
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for h in &reply.headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    let _ = s.write_all(&bytes);
    let _ = s.flush();
    true
}
