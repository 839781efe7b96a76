//! One module per subcommand, and the option handling they share.

use crate::failure::{Failure, one_line};

pub mod assemble;
pub mod attest;
pub mod blobs;
pub mod build;
pub mod build_enclave;
pub mod describe;
pub mod diff;
pub mod key;
pub mod lock;
pub mod pcr;
pub mod publish;
pub mod sign;
pub mod verify;
pub mod verify_signature;

/// Prints a JSON value the way nitro-cli does: pretty, two-space indent, trailing newline.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// The metadata build time: explicit, from SOURCE_DATE_EPOCH, or the Unix epoch; the clock only
/// when asked with `now`.
pub fn resolve_build_time(arg: Option<&str>) -> Result<String, Failure> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let t = match arg {
        Some("now") => OffsetDateTime::now_utc(),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            Failure::input(format!("--build-time {text:?}: not an RFC 3339 time: {e}"))
        })?,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => {
                let secs: i64 = v.trim().parse().map_err(|_| {
                    Failure::input(format!("SOURCE_DATE_EPOCH={v:?}: not a number of seconds"))
                })?;
                OffsetDateTime::from_unix_timestamp(secs).map_err(|e| {
                    Failure::input(format!("SOURCE_DATE_EPOCH={v:?}: {}", one_line(&e)))
                })?
            }
            Err(_) => OffsetDateTime::UNIX_EPOCH,
        },
    };
    Ok(eifctl::eif::rfc3339_utc(t))
}

pub fn custom_metadata(arg: &str) -> Result<serde_json::Value, Failure> {
    let (text, origin) = if arg.trim_start().starts_with(['{', '[']) {
        (arg.to_string(), "--metadata".to_string())
    } else {
        let meta =
            std::fs::metadata(arg).map_err(|e| Failure::input(format!("--metadata {arg}: {e}")))?;
        if meta.len() > 1 << 20 {
            return Err(Failure::input(format!(
                "--metadata {arg}: {} bytes, more than the 1 MiB nitro-cli accepts",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(arg)
            .map_err(|e| Failure::input(format!("--metadata {arg}: {e}")))?;
        (text, arg.to_string())
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::input(format!("{origin}: not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Failure::input(format!(
            "{origin}: custom metadata must be a JSON object"
        )));
    }
    Ok(value)
}

/// The local signer for `--signing-certificate` and `--private-key`, checked before any work.
pub fn signer(
    cert: Option<&std::path::PathBuf>,
    key: Option<&std::path::PathBuf>,
) -> Result<Option<eifctl::eif::signature::PemSigner>, Failure> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).map_err(|e| Failure::input(format!("reading {}: {e}", p.display())))
    };
    eifctl::eif::signature::PemSigner::new(read(cert)?, read(key)?)
        .map(Some)
        .map_err(|e| {
            Failure::input(format!(
                "--signing-certificate {} / --private-key {}: {}",
                cert.display(),
                key.display(),
                one_line(&e)
            ))
        })
}

/// The async runtime for commands that talk to Docker.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::environment(format!("starting the async runtime: {e}")))
}
