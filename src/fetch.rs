//! One HTTPS GET, done carefully: for fetching an attestation document from a running enclave's
//! proof server (`eifctl attest verify --url`).
//!
//! hyper 1 (HTTP/1.1) over rustls with the ring provider, the stack octocrab already brings.
//! Driven by hand rather than through a pooled client so that every step (resolve, connect,
//! TLS, request, response, body) has its own error, the whole exchange one deadline, the body a
//! hard size cap, and redirects are never followed: a 3xx is returned like any other status.
//!
//! Trust: the platform's certificates (`rustls-native-certs`: the system store, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` when set) plus any extra anchors the caller adds. Plain
//! `http://` only when the caller allows it.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::{Host, Url};

/// A step of the exchange, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Resolve,
    Connect,
    Tls,
    Request,
    Response,
    Body,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Resolve => "resolving the host",
            Step::Connect => "connecting",
            Step::Tls => "TLS handshake",
            Step::Request => "sending the request",
            Step::Response => "reading the response",
            Step::Body => "reading the response body",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or the trust anchors given cannot be used (input error).
    #[error("{0}")]
    Usage(String),
    /// The network or the peer failed (environment error).
    #[error("{step}: {detail}")]
    Transport { step: Step, detail: String },
    /// The deadline passed (environment error).
    #[error("{step}: timed out after {} s", .after.as_secs_f64())]
    Timeout { step: Step, after: Duration },
    /// The server sent more than the cap (the response is not what was asked for: input error).
    #[error("the response body is more than {limit} bytes")]
    TooLarge { limit: usize },
}

fn transport(step: Step, e: impl std::fmt::Display) -> FetchError {
    FetchError::Transport {
        step,
        detail: e.to_string().replace('\n', " "),
    }
}

/// A response: the status, the headers and the whole body (at most the cap).
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    /// The whole exchange, from resolving to the body's last byte.
    pub timeout: Duration,
    /// Each connection attempt (also bounded by `timeout`).
    pub connect_timeout: Duration,
    /// The largest body accepted.
    pub max_body: usize,
    /// Whether `http://` URLs are fetched.
    pub allow_http: bool,
}

/// The default connect timeout: shorter than the total, so one dead address leaves time for
/// the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificates from PEM text (one or more `CERTIFICATE` blocks).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    Ok(certs)
}

impl Fetcher {
    /// A fetcher trusting the platform's roots and `extra_roots`. Platform certificates that do
    /// not load are skipped; with no root at all every TLS handshake fails (and says so).
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Fetcher, FetchError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for (i, c) in extra_roots.iter().enumerate() {
            roots.add(c.clone()).map_err(|e| {
                FetchError::Usage(format!("certificate {} is not a trust anchor: {e}", i + 1))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Usage(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher {
            tls: Arc::new(config),
            timeout: Duration::from_secs(30),
            connect_timeout: CONNECT_TIMEOUT,
            max_body: 64 * 1024,
            allow_http: false,
        })
    }

    /// Checks that `url` can be fetched by this fetcher (scheme, host, no credentials).
    pub fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(FetchError::Usage(
                    "plain http exposes the exchange; use https, or pass --allow-http".into(),
                ));
            }
            other => {
                return Err(FetchError::Usage(format!(
                    "scheme {other:?} is neither https nor http"
                )));
            }
        }
        if url.host().is_none() {
            return Err(FetchError::Usage("no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Usage(
                "credentials in the URL are not supported".into(),
            ));
        }
        Ok(())
    }

    /// GET `url`: the response whatever its status (redirects are not followed), its body read
    /// whole up to `max_body`.
    pub async fn get(&self, url: &Url) -> Result<Response, FetchError> {
        self.check_url(url)?;
        let step = Cell::new(Step::Resolve);
        match tokio::time::timeout(self.timeout, self.exchange(url, &step)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                step: step.get(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange(&self, url: &Url, step: &Cell<Step>) -> Result<Response, FetchError> {
        let host = url
            .host()
            .ok_or_else(|| FetchError::Usage("no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::Usage("no port".into()))?;
        let addrs: Vec<SocketAddr> = match &host {
            Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
            Host::Domain(d) => tokio::net::lookup_host((*d, port))
                .await
                .map_err(|e| transport(Step::Resolve, format!("{d}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(transport(Step::Resolve, "no address"));
        }
        step.set(Step::Connect);
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(transport(Step::Connect, format!("{addr}: {e}"))),
                Err(_) => {
                    last = Some(FetchError::Timeout {
                        step: Step::Connect,
                        after: self.connect_timeout,
                    })
                }
            }
        }
        let Some(tcp) = tcp else {
            return Err(last.unwrap_or_else(|| transport(Step::Connect, "no address")));
        };
        let _ = tcp.set_nodelay(true);
        if url.scheme() == "https" {
            step.set(Step::Tls);
            let name = match &host {
                Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(*ip).into()),
                Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(*ip).into()),
                Host::Domain(d) => ServerName::try_from(d.to_string())
                    .map_err(|e| FetchError::Usage(format!("host {d:?}: {e}")))?,
            };
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| transport(Step::Tls, e))?;
            self.http(tls, url, step).await
        } else {
            self.http(tcp, url, step).await
        }
    }

    async fn http<S>(&self, stream: S, url: &Url, step: &Cell<Step>) -> Result<Response, FetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        step.set(Step::Request);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(Step::Request, e))?;
        // The connection is driven beside the request; it ends when the response is read.
        let driver = tokio::spawn(conn);
        let result = self.request(&mut sender, url, step).await;
        driver.abort();
        result
    }

    async fn request(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        url: &Url,
        step: &Cell<Step>,
    ) -> Result<Response, FetchError> {
        let mut authority = url.host_str().unwrap_or_default().to_string();
        if let Some(p) = url.port() {
            authority.push_str(&format!(":{p}"));
        }
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let req = http::Request::get(target)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("eifctl/", env!("CARGO_PKG_VERSION")),
            )
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Usage(format!("request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(Step::Response, hyper_detail(&e)))?;
        step.set(Step::Body);
        let (parts, mut body) = resp.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(FetchError::TooLarge {
                limit: self.max_body,
            });
        }
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(Step::Body, hyper_detail(&e)))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > self.max_body {
                    return Err(FetchError::TooLarge {
                        limit: self.max_body,
                    });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: out,
        })
    }
}

/// A hyper error and its cause (hyper's own text is terse: "connection closed before message
/// completed").
fn hyper_detail(e: &hyper::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(c) => format!("{e}: {c}"),
        None => e.to_string(),
    }
}

/// A fresh random nonce from the operating system.
pub fn random_nonce() -> Result<[u8; 32], String> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| format!("the operating system's random generator: {e}"))?;
    Ok(n)
}

/// `base` with `nonce=<hex>` appended to its query (other parameters kept, fragment dropped).
/// Refuses a URL that already carries a `nonce` parameter.
pub fn with_nonce(base: &Url, nonce: &[u8]) -> Result<Url, FetchError> {
    if base.query_pairs().any(|(k, _)| k == "nonce") {
        return Err(FetchError::Usage(
            "the URL already has a nonce parameter; eifctl sends its own".into(),
        ));
    }
    let mut url = base.clone();
    url.set_fragment(None);
    url.query_pairs_mut()
        .append_pair("nonce", &hex::encode(nonce));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_is_appended_to_the_query_and_never_replaced() {
        let n = [0xab; 2];
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            with_nonce(&u("https://h:8443/attestation"), &n)
                .unwrap()
                .as_str(),
            "https://h:8443/attestation?nonce=abab"
        );
        assert_eq!(
            with_nonce(&u("https://h/a?x=1&y=%20#frag"), &n)
                .unwrap()
                .as_str(),
            "https://h/a?x=1&y=%20&nonce=abab"
        );
        assert!(with_nonce(&u("https://h/a?nonce=00"), &n).is_err());
    }

    #[test]
    fn only_https_unless_http_is_allowed() {
        let mut f = Fetcher::new(&[]).unwrap();
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(f.check_url(&u("https://h/a")).is_ok());
        assert!(f.check_url(&u("http://h/a")).is_err());
        assert!(f.check_url(&u("ftp://h/a")).is_err());
        assert!(f.check_url(&u("https://user:pw@h/a")).is_err());
        f.allow_http = true;
        assert!(f.check_url(&u("http://h/a")).is_ok());
    }

    #[test]
    fn nonces_are_random() {
        assert_ne!(random_nonce().unwrap(), random_nonce().unwrap());
    }
}
